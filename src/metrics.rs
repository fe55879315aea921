//! Prometheus metrics, owned by one struct with its own registry (no globals).
//! Per-container series are tracked so they can be removed when the container goes.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    TextEncoder,
};

use crate::datastore::follow::ReadReason;
use crate::diagnose::FaultKind;
use crate::error::MedicError;
use crate::marathon::{Policy, Reason};
use crate::netlink::watch::ChangeKind;
use crate::report::EndpointReport;

const NS: &str = "calico_medic";

/// A `prometheus::Registry` that also keeps the name and label names of every
/// family registered through it (`Metrics::families`: docs/metrics.md is checked
/// against them). Same `register` and `gather` as the prometheus one.
struct Registry {
    inner: prometheus::Registry,
    families: Mutex<Vec<(String, Vec<String>)>>,
}

impl Registry {
    fn new() -> Registry {
        Registry { inner: prometheus::Registry::new(), families: Mutex::new(Vec::new()) }
    }

    fn register(&self, c: Box<dyn Collector>) -> prometheus::Result<()> {
        let descs: Vec<_> = c.desc().iter().map(|d| (d.fq_name.clone(), d.variable_labels.clone())).collect();
        self.inner.register(c)?;
        self.families.lock().unwrap().extend(descs);
        Ok(())
    }

    fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.inner.gather()
    }
}

pub struct Metrics {
    registry: Registry,
    endpoint_healthy: IntGaugeVec,
    endpoint_fault: IntGaugeVec,
    endpoints: IntGaugeVec,
    faults_detected: IntCounterVec,
    repairs: IntCounterVec,
    repair_latency: Histogram,
    check_duration: Histogram,
    probe_success: IntGaugeVec,
    probe_rtt: HistogramVec,
    docker_up: IntGauge,
    docker_reconnects: IntCounter,
    docker_events: IntCounterVec,
    resyncs: IntCounter,
    probe_only_passes: IntCounter,
    last_resync: Gauge,
    check_errors: IntCounterVec,
    watches: IntGauge,
    watch_events: IntCounterVec,
    watch_overflows: IntCounter,
    escalations: IntCounterVec,
    escalation_suppressed: IntGaugeVec,
    policy_containers: IntGaugeVec,
    start: StartMetrics,
    /// container_id → label sets of its per-container series.
    series: Mutex<HashMap<String, ContainerSeries>>,
    /// Registered only when a datastore is configured (no `datastore_up 0` without one).
    datastore: OnceLock<DatastoreMetrics>,
}

struct DatastoreMetrics {
    up: IntGauge,
    orphans: IntGauge,
    endpoints: IntGauge,
    full_reads: IntCounterVec,
    last_full_read: Gauge,
    watch_events: IntCounter,
}

#[derive(Default)]
struct ContainerSeries {
    /// Faults seen by the last pass (before repair): a fault is "detected" once per appearance.
    detected: Vec<String>,
    healthy: Vec<Vec<String>>,
    faults: Vec<String>,
    probes: Vec<String>,
}

/// Longest tenant-text label value (container name, network, Marathon app and task
/// id), in characters: longer values are cut to `LABEL_CAP - 1` characters plus `…`,
/// so a tenant cannot make the scrape arbitrarily large.
pub const LABEL_CAP: usize = 128;

/// Caps tenant text for a label value (on a character boundary).
pub fn cap_label(value: &str) -> String {
    if value.chars().count() <= LABEL_CAP {
        return value.to_string();
    }
    let mut out: String = value.chars().take(LABEL_CAP - 1).collect();
    out.push('…');
    out
}

/// Remembers a probe label of a container so its series can be removed later.
fn series_probe(entry: &mut ContainerSeries, probe: &str) {
    if !entry.probes.iter().any(|p| p == probe) {
        entry.probes.push(probe.to_string());
    }
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help).namespace(NS), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help).namespace(NS), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help).namespace(NS)).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).namespace(NS).buckets(buckets)).expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let endpoint_healthy = gauge_vec(
            &r,
            "endpoint_healthy",
            "1 when the Calico endpoint passed its last check (no faults), 0 otherwise.",
            &["container_id", "container_name", "network", "ip", "marathon_app_id", "mesos_task_id"],
        );
        let endpoint_fault = gauge_vec(
            &r,
            "endpoint_fault",
            "1 while the fault is present on the container's endpoint.",
            &["container_id", "fault"],
        );
        let endpoints = gauge_vec(&r, "endpoints", "Calico endpoints on this host by state.", &["state"]);
        for s in ["healthy", "unhealthy", "unknown"] {
            endpoints.with_label_values(&[s]).set(0);
        }
        let faults_detected = counter_vec(
            &r,
            "faults_detected_total",
            "Faults newly found on an endpoint (counted once per appearance), by fault code.",
            &["fault"],
        );
        let repairs = counter_vec(
            &r,
            "repairs_total",
            "Repair actions by the fault they address and result (skipped = dry run or backed off).",
            &["fault", "result"],
        );
        let report_only = |f: &FaultKind| f.is_host_side() || f.is_datastore() || *f == FaultKind::WorkloadUnreachable;
        for f in FaultKind::ALL.iter().filter(|f| !report_only(f)) {
            for res in ["success", "failure", "skipped"] {
                repairs.with_label_values(&[f.as_str(), res]);
            }
        }
        for f in FaultKind::ALL {
            faults_detected.with_label_values(&[f.as_str()]);
        }
        let repair_latency = histogram(
            &r,
            "repair_latency_seconds",
            "From the container start event (Docker's own timestamp) or the netlink notification of a break to the verified repair.",
            LATENCY_BUCKETS.to_vec(),
        );
        let check_duration = histogram(
            &r,
            "check_duration_seconds",
            "Time to observe and diagnose one endpoint.",
            vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0],
        );
        let probe_success = gauge_vec(
            &r,
            "probe_success",
            "1 when the last reachability probe of the endpoint succeeded.",
            &["container_id", "probe"],
        );
        let probe_rtt = HistogramVec::new(
            HistogramOpts::new("probe_rtt_seconds", "Round-trip time of successful probes.")
                .namespace(NS)
                .buckets(vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0]),
            &["probe"],
        )
        .expect("valid metric");
        r.register(Box::new(probe_rtt.clone())).expect("unique metric");
        let docker_up =
            IntGauge::with_opts(Opts::new("docker_up", "1 while the Docker event stream is connected.").namespace(NS))
                .expect("valid metric");
        r.register(Box::new(docker_up.clone())).expect("unique metric");
        let docker_reconnects =
            counter(&r, "docker_reconnects_total", "Reconnections to Docker after the event stream ended.");
        let docker_events =
            counter_vec(&r, "docker_events_total", "Docker events received, by type and action.", &["type", "action"]);
        let resyncs = counter(&r, "resyncs_total", "Full resyncs of all containers.");
        let probe_only_passes = counter(
            &r,
            "probe_only_passes_total",
            "Probe ticks answered by the host's echo alone (healthy, watched containers).",
        );
        let last_resync = Gauge::with_opts(
            Opts::new("last_resync_timestamp_seconds", "Unix time of the last completed full resync.").namespace(NS),
        )
        .expect("valid metric");
        r.register(Box::new(last_resync.clone())).expect("unique metric");
        let check_errors =
            counter_vec(&r, "check_errors_total", "Container passes that could not complete, by reason.", &["reason"]);
        for reason in MedicError::CODES {
            check_errors.with_label_values(&[reason]);
        }
        let watches = IntGauge::with_opts(
            Opts::new("watches", "Netlink subscriptions currently open (container namespaces + host).").namespace(NS),
        )
        .expect("valid metric");
        r.register(Box::new(watches.clone())).expect("unique metric");
        let watch_events = counter_vec(
            &r,
            "watch_events_total",
            "Netlink notifications received from watched namespaces, by kind.",
            &["kind"],
        );
        for kind in ChangeKind::ALL {
            watch_events.with_label_values(&[kind.as_str()]);
        }
        let watch_overflows =
            counter(&r, "watch_overflows_total", "Netlink socket overflows (ENOBUFS) that forced a re-check.");
        let escalations = counter_vec(
            &r,
            "escalations_total",
            "Requests to Marathon to replace an unrepairable task, by result (killed includes already gone; suppressed counts each time a task is newly held back).",
            &["result"],
        );
        for result in EscalationResult::ALL {
            escalations.with_label_values(&[result.as_str()]);
        }
        let escalation_suppressed = gauge_vec(
            &r,
            "escalation_suppressed",
            "Tasks that qualify for a kill but are held back now, by reason (host_breaker, rate_limit, ...).",
            &["reason"],
        );
        for reason in Reason::ALL {
            escalation_suppressed.with_label_values(&[reason.as_str()]).set(0);
        }
        let policy_containers = gauge_vec(
            &r,
            "policy_containers",
            "Calico containers by policy (the app's CALICO_MEDIC label, or the default).",
            &["policy"],
        );
        for p in Policy::ALL {
            policy_containers.with_label_values(&[p.as_str()]).set(0);
        }
        let build_info = gauge_vec(&r, "build_info", "Build information.", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).expect("unique metric");
        let start = StartMetrics::register(&r);
        Metrics {
            registry: r,
            endpoint_healthy,
            endpoint_fault,
            endpoints,
            faults_detected,
            repairs,
            repair_latency,
            check_duration,
            probe_success,
            probe_rtt,
            docker_up,
            docker_reconnects,
            docker_events,
            resyncs,
            probe_only_passes,
            last_resync,
            check_errors,
            watches,
            watch_events,
            watch_overflows,
            escalations,
            escalation_suppressed,
            policy_containers,
            start,
            series: Mutex::new(HashMap::new()),
            datastore: OnceLock::new(),
        }
    }

    /// Registers the datastore series (once; `read_reasons` pre-creates the counters).
    pub fn enable_datastore(&self, read_reasons: &[ReadReason]) {
        self.datastore.get_or_init(|| {
            let r = &self.registry;
            let gauge = |name: &str, help: &str| {
                let g = IntGauge::with_opts(Opts::new(name, help).namespace(NS)).expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            };
            let full_reads = counter_vec(
                r,
                "datastore_full_reads_total",
                "Full reads of this host's endpoints from Calico's datastore, by reason.",
                &["reason"],
            );
            for reason in read_reasons {
                full_reads.with_label_values(&[reason.as_str()]);
            }
            let last_full_read = Gauge::with_opts(
                Opts::new("datastore_full_read_seconds", "Duration of the last full read of the datastore.")
                    .namespace(NS),
            )
            .expect("valid metric");
            r.register(Box::new(last_full_read.clone())).expect("unique metric");
            DatastoreMetrics {
                up: gauge("datastore_up", "1 while Calico's datastore (etcd) answers, 0 during an outage."),
                orphans: gauge(
                    "datastore_orphans",
                    "Endpoints of this host in Calico's datastore that no container holds.",
                ),
                endpoints: gauge("datastore_endpoints", "Endpoints of this host in Calico's datastore."),
                full_reads,
                last_full_read,
                watch_events: counter(r, "datastore_watch_events_total", "Changes received through the etcd watch."),
            }
        });
    }

    pub fn datastore_up(&self, up: bool) {
        if let Some(d) = self.datastore.get() {
            d.up.set(i64::from(up));
        }
    }

    pub fn datastore_read(&self, reason: ReadReason, endpoints: usize, seconds: f64) {
        if let Some(d) = self.datastore.get() {
            d.full_reads.with_label_values(&[reason.as_str()]).inc();
            d.endpoints.set(endpoints as i64);
            d.last_full_read.set(seconds);
        }
    }

    pub fn datastore_watched(&self, endpoints: usize) {
        if let Some(d) = self.datastore.get() {
            d.watch_events.inc();
            d.endpoints.set(endpoints as i64);
        }
    }

    pub fn datastore_orphans(&self, count: usize) {
        if let Some(d) = self.datastore.get() {
            d.orphans.set(count as i64);
        }
    }

    /// Every family registered so far, as (name, label names), sorted; the process
    /// collector's `process_*` families are left out. The datastore families are in
    /// it once `enable_datastore` ran.
    pub fn families(&self) -> Vec<(String, Vec<String>)> {
        let families = self.registry.families.lock().unwrap();
        let mut out: Vec<_> = families.iter().filter(|(name, _)| !name.starts_with("process_")).cloned().collect();
        out.sort();
        out.dedup();
        out
    }

    /// Text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("encoding metrics");
        buf
    }

    /// Records one finished pass over a container's endpoints, replacing its
    /// per-container series with the current state.
    pub fn record_reports(&self, container_id: &str, reports: &[EndpointReport]) {
        let mut series = self.series.lock().unwrap();
        let entry = series.entry(container_id.to_string()).or_default();
        let mut present_faults: Vec<String> = Vec::new();
        let mut healthy_labels = Vec::new();
        let mut detected: Vec<String> = Vec::new();
        for r in reports {
            for f in &r.faults {
                if !entry.detected.iter().any(|d| d == f.as_str()) && !detected.iter().any(|d| d == f.as_str()) {
                    self.faults_detected.with_label_values(&[f.as_str()]).inc();
                }
                detected.push(f.as_str().to_string());
            }
            for a in &r.actions {
                self.repairs.with_label_values(&[a.fault.as_str(), a.result.as_str()]).inc();
            }
            if r.error.is_none() {
                self.check_duration.observe(r.check_seconds);
            }
            let labels = vec![
                r.container_id.clone(),
                cap_label(&r.container_name),
                cap_label(&r.network),
                r.ip.to_string(),
                cap_label(r.marathon_app_id.as_deref().unwrap_or_default()),
                cap_label(r.mesos_task_id.as_deref().unwrap_or_default()),
            ];
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            self.endpoint_healthy.with_label_values(&refs).set(i64::from(r.healthy));
            healthy_labels.push(labels);
            for p in &r.probes {
                series_probe(entry, &p.probe);
                self.probe_success.with_label_values(&[&r.container_id, &p.probe]).set(i64::from(p.success));
                if let Some(rtt) = p.rtt_seconds {
                    self.probe_rtt.with_label_values(&[&p.probe]).observe(rtt);
                }
            }
            for f in &r.remaining_faults {
                if !present_faults.iter().any(|p| p == f.as_str()) {
                    present_faults.push(f.as_str().to_string());
                }
            }
        }
        for old in &entry.healthy {
            if !healthy_labels.contains(old) {
                let refs: Vec<&str> = old.iter().map(String::as_str).collect();
                let _ = self.endpoint_healthy.remove_label_values(&refs);
            }
        }
        for old in &entry.faults {
            if !present_faults.contains(old) {
                let _ = self.endpoint_fault.remove_label_values(&[container_id, old]);
            }
        }
        for f in &present_faults {
            self.endpoint_fault.with_label_values(&[container_id, f]).set(1);
        }
        entry.healthy = healthy_labels;
        entry.faults = present_faults;
        entry.detected = detected;
    }

    /// Drops every per-container series (container destroyed).
    pub fn forget_container(&self, container_id: &str) {
        let Some(entry) = self.series.lock().unwrap().remove(container_id) else {
            return;
        };
        for labels in &entry.healthy {
            let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
            let _ = self.endpoint_healthy.remove_label_values(&refs);
        }
        for f in &entry.faults {
            let _ = self.endpoint_fault.remove_label_values(&[container_id, f]);
        }
        for p in &entry.probes {
            let _ = self.probe_success.remove_label_values(&[container_id, p]);
        }
    }

    /// The Docker event stream connected (true) or ended (false).
    pub fn docker_connected(&self, up: bool) {
        self.docker_up.set(i64::from(up));
    }

    pub fn docker_reconnected(&self) {
        self.docker_reconnects.inc();
    }

    /// One Docker event of a type and action the agent subscribes to.
    pub fn docker_event(&self, typ: DockerEventType, action: DockerEventAction) {
        self.docker_events.with_label_values(&[typ.as_str(), action.as_str()]).inc();
    }

    pub fn probe_only_pass(&self) {
        self.probe_only_passes.inc();
    }

    pub fn resync_done(&self, unix_seconds: f64) {
        self.resyncs.inc();
        self.last_resync.set(unix_seconds);
    }

    pub fn check_error(&self, error: &MedicError) {
        self.check_errors.with_label_values(&[error.code()]).inc();
    }

    /// From the break (or the start event) to the verified repair.
    pub fn repaired_after(&self, seconds: f64) {
        self.repair_latency.observe(seconds.max(0.0));
    }

    pub fn watch_event(&self, kind: ChangeKind) {
        self.watch_events.with_label_values(&[kind.as_str()]).inc();
    }

    pub fn watch_overflowed(&self) {
        self.watch_overflows.inc();
    }

    pub fn set_watches(&self, open: usize) {
        self.watches.set(open as i64);
    }

    /// One escalation result: `killed`, `dry_run`, `suppressed` or `failed`.
    pub fn escalation(&self, result: EscalationResult) {
        self.escalations.with_label_values(&[result.as_str()]).inc();
    }

    pub fn set_escalation_suppressed(&self, counts: &[(Reason, usize)]) {
        for (reason, n) in counts {
            self.escalation_suppressed.with_label_values(&[reason.as_str()]).set(*n as i64);
        }
    }

    pub fn set_policy_counts(&self, counts: &[(Policy, usize)]) {
        for (policy, n) in counts {
            self.policy_containers.with_label_values(&[policy.as_str()]).set(*n as i64);
        }
    }

    pub fn set_endpoint_states(&self, healthy: i64, unhealthy: i64, unknown: i64) {
        self.endpoints.with_label_values(&["healthy"]).set(healthy);
        self.endpoints.with_label_values(&["unhealthy"]).set(unhealthy);
        self.endpoints.with_label_values(&["unknown"]).set(unknown);
    }
}

/// Which path put a new endpoint right: before `start` (pre-start path) or after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPath {
    BeforeStart,
    AfterStart,
}

impl StartPath {
    pub fn as_str(self) -> &'static str {
        match self {
            StartPath::BeforeStart => "before_start",
            StartPath::AfterStart => "after_start",
        }
    }
}

/// What the pre-start path did with one new endpoint (bounded label set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrestartOutcome {
    Repaired,
    Healthy,
    LeftToPostStart,
    NotAllowed,
    Failed,
}

impl PrestartOutcome {
    pub const ALL: [PrestartOutcome; 5] = [
        PrestartOutcome::Repaired,
        PrestartOutcome::Healthy,
        PrestartOutcome::LeftToPostStart,
        PrestartOutcome::NotAllowed,
        PrestartOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PrestartOutcome::Repaired => "repaired",
            PrestartOutcome::Healthy => "healthy",
            PrestartOutcome::LeftToPostStart => "left_to_post_start",
            PrestartOutcome::NotAllowed => "not_allowed",
            PrestartOutcome::Failed => "failed",
        }
    }
}

impl std::fmt::Display for PrestartOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of one escalation (`escalations_total{result}`): `killed` includes a task
/// Marathon says is already gone; `suppressed` counts each time a task is newly held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalationResult {
    Killed,
    DryRun,
    Suppressed,
    Failed,
}

impl EscalationResult {
    pub const ALL: [EscalationResult; 4] =
        [EscalationResult::Killed, EscalationResult::DryRun, EscalationResult::Suppressed, EscalationResult::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            EscalationResult::Killed => "killed",
            EscalationResult::DryRun => "dry_run",
            EscalationResult::Suppressed => "suppressed",
            EscalationResult::Failed => "failed",
        }
    }
}

impl std::fmt::Display for EscalationResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Docker event types the agent subscribes to (`docker_events_total{type}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerEventType {
    Container,
    Network,
}

impl DockerEventType {
    pub const ALL: [DockerEventType; 2] = [DockerEventType::Container, DockerEventType::Network];

    pub fn as_str(self) -> &'static str {
        match self {
            DockerEventType::Container => "container",
            DockerEventType::Network => "network",
        }
    }

    /// Docker's spelling; `None` for a type the agent does not subscribe to.
    pub fn parse(typ: &str) -> Option<DockerEventType> {
        DockerEventType::ALL.into_iter().find(|t| t.as_str() == typ)
    }
}

/// The Docker event actions the agent subscribes to (`docker_events_total{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerEventAction {
    Start,
    Restart,
    Die,
    Destroy,
    Connect,
    Disconnect,
}

impl DockerEventAction {
    pub const ALL: [DockerEventAction; 6] = [
        DockerEventAction::Start,
        DockerEventAction::Restart,
        DockerEventAction::Die,
        DockerEventAction::Destroy,
        DockerEventAction::Connect,
        DockerEventAction::Disconnect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DockerEventAction::Start => "start",
            DockerEventAction::Restart => "restart",
            DockerEventAction::Die => "die",
            DockerEventAction::Destroy => "destroy",
            DockerEventAction::Connect => "connect",
            DockerEventAction::Disconnect => "disconnect",
        }
    }

    /// Docker's spelling (the part before any `:`); `None` for an action the agent does
    /// not subscribe to.
    pub fn parse(action: &str) -> Option<DockerEventAction> {
        DockerEventAction::ALL.into_iter().find(|a| a.as_str() == action)
    }
}

/// New endpoints repaired at start, by path, and the pre-start path's outcomes.
struct StartMetrics {
    repairs: IntCounterVec,
    latency: HistogramVec,
    outcomes: IntCounterVec,
}

impl StartMetrics {
    fn register(r: &Registry) -> StartMetrics {
        let repairs = counter_vec(
            r,
            "start_repairs_total",
            "New endpoints whose MAC was repaired at start, by path: before_start (before the task's first instruction) or after_start.",
            &["path"],
        );
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "start_repair_latency_seconds",
                "New endpoints: from the trigger (before_start: the veth moved into the sandbox; after_start: Docker's start event) to the verified repair.",
            )
            .namespace(NS)
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ]),
            &["path"],
        )
        .expect("valid metric");
        r.register(Box::new(latency.clone())).expect("unique metric");
        let outcomes = counter_vec(
            r,
            "prestart_outcomes_total",
            "New calico endpoints followed before start, by what the pre-start path did.",
            &["outcome"],
        );
        for path in [StartPath::BeforeStart, StartPath::AfterStart] {
            repairs.with_label_values(&[path.as_str()]);
        }
        for o in PrestartOutcome::ALL {
            outcomes.with_label_values(&[o.as_str()]);
        }
        StartMetrics { repairs, latency, outcomes }
    }
}

impl Metrics {
    /// A new endpoint's MAC was repaired (and verified) by `path`, `seconds` after its trigger.
    pub fn repaired_at_start(&self, path: StartPath, seconds: f64) {
        self.start.repairs.with_label_values(&[path.as_str()]).inc();
        self.start.latency.with_label_values(&[path.as_str()]).observe(seconds.max(0.0));
    }

    /// Repair actions taken outside a container pass (the pre-start path), counted in
    /// `repairs_total` like every other repair.
    pub fn count_actions(&self, actions: &[crate::repair::ActionResult]) {
        for a in actions {
            self.repairs.with_label_values(&[a.fault.as_str(), a.result.as_str()]).inc();
        }
    }

    /// One new endpoint's pre-start outcome.
    pub fn prestart_outcome(&self, outcome: PrestartOutcome) {
        self.start.outcomes.with_label_values(&[outcome.as_str()]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_labels_are_capped_on_a_character_boundary() {
        assert_eq!(cap_label("/web"), "/web");
        let long = "é".repeat(1000);
        let capped = cap_label(&long);
        assert_eq!(capped.chars().count(), LABEL_CAP);
        assert!(capped.ends_with('…'));
        assert_eq!(cap_label(&"a".repeat(LABEL_CAP)), "a".repeat(LABEL_CAP), "exactly the cap is kept");
    }

    #[test]
    fn enum_labels_keep_their_values() {
        let names = |v: Vec<&'static str>| v.join(",");
        assert_eq!(
            names(PrestartOutcome::ALL.iter().map(|o| o.as_str()).collect()),
            "repaired,healthy,left_to_post_start,not_allowed,failed"
        );
        assert_eq!(
            names(EscalationResult::ALL.iter().map(|r| r.as_str()).collect()),
            "killed,dry_run,suppressed,failed"
        );
        assert_eq!(DockerEventType::parse("container"), Some(DockerEventType::Container));
        assert_eq!(DockerEventAction::parse("disconnect"), Some(DockerEventAction::Disconnect));
        assert_eq!(DockerEventAction::parse("exec_start"), None);
        let m = Metrics::new();
        m.enable_datastore(&ReadReason::ALL);
        m.escalation(EscalationResult::DryRun);
        m.prestart_outcome(PrestartOutcome::LeftToPostStart);
        m.datastore_read(ReadReason::IndexCleared, 3, 0.1);
        m.docker_event(DockerEventType::Container, DockerEventAction::Start);
        let text = String::from_utf8(m.render()).unwrap();
        for line in [
            "calico_medic_escalations_total{result=\"dry_run\"} 1",
            "calico_medic_escalations_total{result=\"suppressed\"} 0",
            "calico_medic_prestart_outcomes_total{outcome=\"left_to_post_start\"} 1",
            "calico_medic_prestart_outcomes_total{outcome=\"not_allowed\"} 0",
            "calico_medic_datastore_full_reads_total{reason=\"index_cleared\"} 1",
            "calico_medic_datastore_full_reads_total{reason=\"periodic\"} 0",
            "calico_medic_docker_events_total{action=\"start\",type=\"container\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
