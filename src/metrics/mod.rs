//! Prometheus metrics, owned by one struct with its own registry (no globals).
//! Per-container series are tracked so they can be removed when the container goes.
//!
//! One file per group of series, each registering itself: `endpoint` (per-endpoint
//! health, faults, repairs, probes), `agent` (Docker, resyncs, netlink watches),
//! `escalation`, `start` (repairs at start, pre-start outcomes) and `datastore`;
//! `registry` holds the registry and the helpers, `labels` the label values.

use std::sync::OnceLock;

use prometheus::{Encoder, TextEncoder};

use crate::datastore::follow::ReadReason;
use crate::error::MedicError;
use crate::marathon::{Policy, Reason};
use crate::netlink::watch::ChangeKind;
use crate::report::EndpointReport;

mod agent;
mod bgp;
mod datastore;
mod endpoint;
mod escalation;
mod ipam;
mod labels;
mod node;
mod registry;
mod start;

pub use labels::{
    cap_label, DockerEventAction, DockerEventType, EscalationResult, PrestartOutcome, StartPath, LABEL_CAP,
};

use agent::AgentMetrics;
pub use bgp::BgpMetrics;
use datastore::DatastoreMetrics;
use endpoint::EndpointMetrics;
use escalation::EscalationMetrics;
pub use ipam::IpamMetrics;
use registry::{gauge_vec, Registry};
use start::StartMetrics;

pub struct Metrics {
    registry: Registry,
    endpoint: EndpointMetrics,
    agent: AgentMetrics,
    escalation: EscalationMetrics,
    start: StartMetrics,
    node: node::NodeMetrics,
    /// Registered only when a datastore is configured (no `datastore_up 0` without one).
    datastore: OnceLock<DatastoreMetrics>,
    /// Registered only by the cluster IPAM job (`calico-medic ipam run`).
    ipam: OnceLock<IpamMetrics>,
    /// Registered once the agent looks across hosts (`sources::bgp`).
    bgp: OnceLock<BgpMetrics>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let endpoint = EndpointMetrics::register(&r);
        let agent = AgentMetrics::register(&r);
        let escalation = EscalationMetrics::register(&r);
        let build_info = gauge_vec(&r, "build_info", "Build information.", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).expect("unique metric");
        let start = StartMetrics::register(&r);
        let node = node::NodeMetrics::register(&r);
        Metrics {
            registry: r,
            endpoint,
            agent,
            escalation,
            start,
            node,
            datastore: OnceLock::new(),
            ipam: OnceLock::new(),
            bgp: OnceLock::new(),
        }
    }

    /// Registers the datastore series (once; `read_reasons` pre-creates the counters).
    pub fn enable_datastore(&self, read_reasons: &[ReadReason]) {
        self.datastore.get_or_init(|| DatastoreMetrics::register(&self.registry, read_reasons));
    }

    /// The cluster IPAM job's metrics: build information, the process and the
    /// `ipam_*` series only (the agent's series would read as a host without Docker).
    pub fn ipam_job() -> Metrics {
        let mut m = Metrics::new();
        let r = Registry::new();
        let build_info = gauge_vec(&r, "build_info", "Build information.", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).expect("unique metric");
        // The agent's groups stay in the struct (its intent methods need them), unexported.
        m.registry = r;
        m.enable_ipam();
        m
    }

    /// Registers the cluster IPAM job's series (once) and returns them.
    pub fn enable_bgp(&self) -> &BgpMetrics {
        self.bgp.get_or_init(|| BgpMetrics::register(&self.registry))
    }

    pub fn enable_ipam(&self) -> &IpamMetrics {
        self.ipam.get_or_init(|| IpamMetrics::register(&self.registry))
    }

    pub fn datastore_up(&self, up: bool) {
        if let Some(d) = self.datastore.get() {
            d.set_up(up);
        }
    }

    pub fn datastore_read(&self, reason: ReadReason, endpoints: usize, seconds: f64) {
        if let Some(d) = self.datastore.get() {
            d.read(reason, endpoints, seconds);
        }
    }

    pub fn datastore_watched(&self, endpoints: usize) {
        if let Some(d) = self.datastore.get() {
            d.watched(endpoints);
        }
    }

    pub fn datastore_orphans(&self, count: usize) {
        if let Some(d) = self.datastore.get() {
            d.set_orphans(count);
        }
    }

    /// Every family registered so far, as (name, label names), sorted; the process
    /// collector's `process_*` families are left out. The datastore families are in
    /// it once `enable_datastore` ran.
    pub fn families(&self) -> Vec<(String, Vec<String>)> {
        self.registry.families()
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
        self.endpoint.record(container_id, reports);
        // An endpoint that could not be observed is a check error of its own.
        for code in reports.iter().filter_map(|r| r.error_code) {
            self.agent.check_errors.with_label_values(&[code]).inc();
        }
    }

    /// Drops every per-container series (container destroyed).
    pub fn forget_container(&self, container_id: &str) {
        self.endpoint.forget(container_id);
    }

    /// The Docker event stream connected (true) or ended (false).
    pub fn docker_connected(&self, up: bool) {
        self.agent.docker_up.set(i64::from(up));
    }

    pub fn docker_reconnected(&self) {
        self.agent.docker_reconnects.inc();
    }

    /// One Docker event of a type and action the agent subscribes to.
    pub fn docker_event(&self, typ: DockerEventType, action: DockerEventAction) {
        self.agent.docker_events.with_label_values(&[typ.as_str(), action.as_str()]).inc();
    }

    pub fn probe_only_pass(&self) {
        self.agent.probe_only_passes.inc();
    }

    pub fn resync_done(&self, unix_seconds: f64) {
        self.agent.resyncs.inc();
        self.agent.last_resync.set(unix_seconds);
    }

    pub fn check_error(&self, error: &MedicError) {
        self.agent.check_errors.with_label_values(&[error.code()]).inc();
    }

    /// From the break (or the start event) to the verified repair.
    pub fn repaired_after(&self, seconds: f64) {
        self.endpoint.repair_latency.observe(seconds.max(0.0));
    }

    pub fn watch_event(&self, kind: ChangeKind) {
        self.agent.watch_events.with_label_values(&[kind.as_str()]).inc();
    }

    pub fn watch_overflowed(&self) {
        self.agent.watch_overflows.inc();
    }

    pub fn set_watches(&self, open: usize) {
        self.agent.watches.set(open as i64);
    }

    /// One escalation result: `killed`, `dry_run`, `suppressed` or `failed`.
    pub fn escalation(&self, result: EscalationResult) {
        self.escalation.escalations.with_label_values(&[result.as_str()]).inc();
    }

    pub fn set_escalation_suppressed(&self, counts: &[(Reason, usize)]) {
        for (reason, n) in counts {
            self.escalation.escalation_suppressed.with_label_values(&[reason.as_str()]).set(*n as i64);
        }
    }

    pub fn set_policy_counts(&self, counts: &[(Policy, usize)]) {
        for (policy, n) in counts {
            self.escalation.policy_containers.with_label_values(&[policy.as_str()]).set(*n as i64);
        }
    }

    pub fn set_endpoint_states(&self, healthy: i64, unhealthy: i64, unknown: i64) {
        self.endpoint.endpoints.with_label_values(&["healthy"]).set(healthy);
        self.endpoint.endpoints.with_label_values(&["unhealthy"]).set(unhealthy);
        self.endpoint.endpoints.with_label_values(&["unknown"]).set(unknown);
    }

    /// A new endpoint's MAC was repaired (and verified) by `path`, `seconds` after its trigger.
    pub fn repaired_at_start(&self, path: StartPath, seconds: f64) {
        self.start.repaired(path, seconds);
    }

    /// Repair actions taken outside a container pass (the pre-start path), counted in
    /// `repairs_total` like every other repair.
    pub fn count_actions(&self, actions: &[crate::repair::ActionResult]) {
        for a in actions {
            self.endpoint.repairs.with_label_values(&[a.fault.as_str(), a.result.as_str()]).inc();
        }
    }

    /// One new endpoint's pre-start outcome.
    pub fn prestart_outcome(&self, outcome: PrestartOutcome) {
        self.start.outcome(outcome);
    }

    /// Containers on a calico network stuck in `created`.
    pub fn stuck_creating(&self, n: usize) {
        self.node.stuck_creating(n);
    }

    /// Felix's liveness endpoint answered (true) or not (false).
    pub fn felix(&self, up: bool) {
        self.node.felix(&self.registry, up);
    }

    /// The profiles this host's endpoints name (true: missing).
    pub fn profiles(&self, states: &[(String, bool)]) {
        self.node.profiles(states);
    }

    /// Keys of a missing profile written back.
    pub fn profile_recreated(&self, id: &str, keys: usize) {
        self.node.profile_recreated(id, keys);
    }

    /// A Docker plugin's answer to Plugin.Activate (`None`: it did not answer, or wrongly).
    pub fn plugin(&self, name: &str, answered_in: Option<f64>) {
        self.node.plugin(name, answered_in);
    }

    /// The pre-start path's host subscription overflowed or was lost: every host link
    /// is looked at again.
    pub fn prestart_rescan(&self, lost: bool) {
        self.start.rescan(if lost { "lost" } else { "overflow" });
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
    fn the_ipam_job_exports_only_its_own_series() {
        let m = Metrics::ipam_job();
        m.enable_ipam().set_pools(&[("10.68.0.0/16".into(), 65536, [9, 6, 2, 1, 0])], 1.0);
        m.docker_connected(false);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(
            text.contains("calico_medic_ipam_addresses{pool=\"10.68.0.0/16\",state=\"leak_candidate\"} 2"),
            "{text}"
        );
        assert!(text.contains("calico_medic_ipam_pool_addresses{pool=\"10.68.0.0/16\"} 65536"), "{text}");
        assert!(text.contains("calico_medic_build_info"), "{text}");
        assert!(!text.contains("docker_up") && !text.contains("calico_medic_endpoint_"), "{text}");
    }

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
