//! The one pipeline every command runs for one container:
//! Workload → open netns → observe → diagnose → plan → apply (or not) → observe
//! again → report. `check`, `repair` and the daemon differ only in the Mode.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;
use tracing::{info, warn, Instrument};

use crate::config::Config;
use crate::datastore::{Datastore, Lookup};
use crate::diagnose::{diagnose_container, diagnose_host, Fault, FaultKind};
use crate::docker::DockerClient;
use crate::error::MedicError;
use crate::marathon::MarathonClient;
use crate::netlink::Netlink;
use crate::netns::{NsIdentity, TargetNetns};
use crate::observe::{observe_container, observe_host, ContainerSide};
use crate::policy::Policy;
use crate::probe;
use crate::repair::{apply, plan, ActionOutcome, ActionResult};
use crate::report::{EndpointPass, EndpointReport, ProbeResult};
use crate::workload::{Endpoint, EndpointFacts, Escaped, Expected, Identity, MacEvidence, Workload};

/// What a pass may do (defined beside `Policy`, which limits it).
pub use crate::policy::Mode;

/// The result of one pass over one container.
pub struct ContainerOutcome {
    pub workload: Workload,
    pub reports: Vec<EndpointReport>,
    /// The namespace handle, for callers that subscribe to it (the daemon's watches);
    /// none when the task's policy is `off` (its namespace is never opened).
    /// Drop it promptly: an open handle keeps the namespace alive.
    pub netns: Option<TargetNetns>,
    /// The task's policy (from its app's label, or the default).
    pub policy: Policy,
}

/// The pipeline in force and whether writes are off, swapped whole on SIGHUP: what
/// the scheduler, the sources and the pre-start path read the configuration from.
pub struct Current {
    inner: std::sync::RwLock<(Arc<Medic>, bool)>,
}

impl Current {
    pub fn new(medic: Medic, dry_run: bool) -> Arc<Current> {
        Arc::new(Current { inner: std::sync::RwLock::new((Arc::new(medic), dry_run)) })
    }

    pub fn medic(&self) -> Arc<Medic> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    pub fn dry_run(&self) -> bool {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).1
    }

    pub fn replace(&self, medic: Medic, dry_run: bool) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(medic), dry_run);
    }
}

pub struct Medic {
    pub docker: Arc<DockerClient>,
    pub config: Config,
    /// Marathon's REST API, when escalation is enabled.
    pub marathon: Option<Arc<MarathonClient>>,
    host_ns: NsIdentity,
    host: Netlink,
    /// Calico's datastore, when configured: first MAC source after `expected_mac`,
    /// and the reference for the `datastore_*` findings.
    datastore: Option<Arc<Datastore>>,
    /// Addresses two containers of this host hold (Docker's view; `refresh_local_ips`).
    local_ips: Arc<crate::local_ips::LocalIps>,
}

impl Medic {
    /// Must be created on a thread in the host namespace (the agent's own).
    pub fn new(docker: Arc<DockerClient>, config: Config) -> Result<Medic, MedicError> {
        let host_ns = NsIdentity::current_thread().map_err(|e| MedicError::netns_io("reading own namespace", e))?;
        let host = Netlink::host()?.with_timeout(config.call_deadline());
        let marathon =
            MarathonClient::from_config(&config.marathon, config.limits.marathon_answer_bytes)?.map(Arc::new);
        let local_ips = Arc::default();
        Ok(Medic { docker, config, marathon, host_ns, host, datastore: None, local_ips })
    }

    /// Lists the addresses running calico containers hold (Docker's view) and keeps
    /// the ones two containers share; returns the containers whose sharing changed.
    pub async fn refresh_local_ips(&self) -> Result<Vec<String>, MedicError> {
        let held = self.docker.calico_addresses().await?;
        Ok(self.local_ips.set(crate::local_ips::shared(&held)))
    }

    /// The agent's own (host) network namespace.
    pub fn host_ns(&self) -> NsIdentity {
        self.host_ns
    }

    /// Addresses two or more running containers of this host hold.
    pub fn shared_ips(&self) -> usize {
        self.local_ips.count()
    }

    pub fn with_datastore(mut self, datastore: Option<Arc<Datastore>>) -> Medic {
        self.datastore = datastore;
        self
    }

    pub fn datastore(&self) -> Option<&Arc<Datastore>> {
        self.datastore.as_ref()
    }

    /// Runs the pipeline for one container (by id or name).
    pub async fn run(&self, target: &str, mode: Mode) -> Result<ContainerOutcome, MedicError> {
        self.run_interruptible(target, mode, None).await
    }

    /// As `run`, within `pass_timeout` (the one-off commands; the daemon runs each
    /// pass in its own task under the same deadline).
    pub async fn run_with_deadline(&self, target: &str, mode: Mode) -> Result<ContainerOutcome, MedicError> {
        crate::error::within(self.config.pass_timeout, || format!("pass over {target}"), self.run(target, mode)).await
    }

    /// As `run`; `interrupt` (the namespace changed again) cuts probes short, so a
    /// probe waiting out its timeout never delays the re-check of a fresh break.
    /// Interrupted probes are reported as not run (`reachable` absent).
    pub async fn run_interruptible(
        &self,
        target: &str,
        mode: Mode,
        interrupt: Option<&Notify>,
    ) -> Result<ContainerOutcome, MedicError> {
        let span = tracing::info_span!("pass", mode = mode.as_str());
        self.pass(target, mode, interrupt).instrument(span).await
    }

    async fn pass(&self, target: &str, mode: Mode, interrupt: Option<&Notify>) -> Result<ContainerOutcome, MedicError> {
        let workload = self.docker.workload(target).await?;
        let m = &self.config.marathon;
        let (policy, policy_note) = Policy::resolve(workload.policy_label.as_deref(), m.default_policy, m.enabled);
        let stamp = |mut r: EndpointReport| {
            r.policy = policy;
            r.policy_note.clone_from(&policy_note);
            r
        };
        let Some(mode) = policy.limit(mode) else {
            // Policy off: the namespace is not even opened; reported as not checked.
            let reports = workload
                .endpoints
                .iter()
                .map(|e| {
                    let mut r = EndpointReport::new(&workload, &e.network, &e.endpoint_id, e.ip);
                    r.healthy = true;
                    stamp(r)
                })
                .collect();
            return Ok(ContainerOutcome { workload, reports, netns: None, policy });
        };
        let ns = match TargetNetns::open_pid(workload.pid, self.host_ns) {
            Ok(ns) => ns,
            Err(e) => {
                // Its init is gone: the container stopped or restarted since Docker answered.
                self.docker.confirm_same_start(&workload).await?;
                return Err(e);
            }
        };
        // The fd is open: if the container still has the same PID and start time,
        // the namespace we hold is this container's and not a reused PID's.
        self.docker.confirm_same_start(&workload).await?;
        let session =
            Netlink::in_netns(&ns)?.with_timeout(self.config.call_deadline()).with_limits(self.config.dump_limits());
        let mut reports = Vec::with_capacity(workload.endpoints.len());
        for endpoint in &workload.endpoints {
            let mut report = self.endpoint(&workload, endpoint, &session, mode).await;
            // A backed-off endpoint is known to keep breaking: probing it tells nothing new.
            if self.config.probe.enabled && report.error.is_none() && mode != Mode::BackedOff {
                let probe = self.probe(&ns, &mut report);
                match interrupt {
                    Some(stop) => {
                        tokio::select! {
                            _ = probe => {}
                            _ = stop.notified() => {}
                        }
                    }
                    None => probe.await,
                }
            }
            reports.push(stamp(report));
        }
        Ok(ContainerOutcome { workload, reports, netns: Some(ns), policy })
    }

    /// A probe tick for a container whose last pass found every endpoint healthy and
    /// whose namespace is watched (a break there wakes a full pass at once): only the
    /// host → workload echo and the host veth's Felix settings, none of the pass's Docker
    /// and netlink reads — at 500 endpoints the full pass per tick was most of the
    /// agent's idle CPU. `None` when an echo fails or cannot run, or one of Felix's
    /// settings of the host veth is off: the caller runs the full pass to find out why.
    pub async fn probe_healthy(&self, last: &[EndpointReport]) -> Option<Vec<EndpointReport>> {
        let timeout = self.config.probe.timeout;
        let mut fresh = Vec::with_capacity(last.len());
        for r in last {
            let started = std::time::Instant::now();
            // Felix's per-interface settings change without a netlink event: five
            // /proc/sys reads, so a skewed one is found at this tick, not the next resync.
            if self.config.check_host_side && !r.host_interface.is_empty() {
                let settings = crate::kernel::procfs::interface_settings(&r.host_interface);
                if !crate::diagnose::felix_settings_ok(&settings) {
                    return None;
                }
            }
            let rtt = probe::host_icmp(r.ip, timeout).await.ok()??;
            let mut r = r.clone();
            r.actions.clear();
            r.repaired_before_start = false;
            r.reachable = Some(true);
            r.probes = vec![ProbeResult::new("icmp", Some(rtt))];
            r.check_seconds = started.elapsed().as_secs_f64();
            fresh.push(r);
        }
        Some(fresh)
    }

    /// Host → workload ICMP, plus configured probes from inside the namespace. A
    /// failing host probe with no structural fault is `workload_unreachable`.
    async fn probe(&self, ns: &TargetNetns, report: &mut EndpointReport) {
        let timeout = self.config.probe.timeout;
        // Only probe through the endpoint's own host route: without it the echo would
        // leave the host by its default route, towards an address that is not there.
        let host_path_missing = [FaultKind::HostLinkMissing, FaultKind::HostLinkDown, FaultKind::HostRouteMissing]
            .iter()
            .any(|f| report.remaining_faults.contains(f));
        if host_path_missing || report.host_ifindex.is_none() {
            return;
        }
        // Right after a repair the kernel may still be bringing the link's queues up
        // (link events are batched up to a second apart): one more echo before the
        // endpoint is called unreachable.
        let attempts = if report.actions.iter().any(|a| a.result == ActionOutcome::Success) { 2 } else { 1 };
        let mut host = None;
        for _ in 0..attempts {
            host = match probe::host_icmp(report.ip, timeout).await {
                Ok(rtt) => rtt,
                Err(e) => {
                    warn!(
                        container = %Escaped(&report.container_name),
                        ip = %report.ip,
                        probe = %"icmp",
                        error = %e,
                        "probe failed to run"
                    );
                    return;
                }
            };
            if host.is_some() {
                break;
            }
        }
        // Results are recorded only once every probe finished (an interrupted pass reports none).
        let mut results = vec![ProbeResult::new("icmp", host)];
        for target in &self.config.probe.targets {
            match probe::from_netns(ns, target, timeout).await {
                Ok(rtt) => results.push(ProbeResult::new(&target.label(), rtt)),
                Err(e) => {
                    warn!(
                        container = %Escaped(&report.container_name),
                        probe = %target.label(),
                        error = %e,
                        "probe failed to run"
                    )
                }
            }
        }
        report.reachable = Some(host.is_some());
        report.probes = results;
        if host.is_none() && report.remaining_faults.is_empty() {
            report.remaining_faults.push(FaultKind::WorkloadUnreachable);
            report
                .fault_details
                .push(format!("workload_unreachable: no ICMP echo reply from {} within {timeout:?}", report.ip));
            if !report.faults.contains(&FaultKind::WorkloadUnreachable) {
                report.faults.push(FaultKind::WorkloadUnreachable);
            }
            report.healthy = false;
        }
    }

    async fn endpoint(
        &self,
        workload: &Workload,
        endpoint: &Endpoint,
        session: &Netlink,
        mode: Mode,
    ) -> EndpointReport {
        let mut report = EndpointReport::new(workload, &endpoint.network, &endpoint.endpoint_id, endpoint.ip);
        let started = Instant::now();
        let cfg = &self.config;
        let host_interface = endpoint.host_interface(&cfg.host_interface_prefix);
        report.host_interface = host_interface.clone();
        // Until the link is found: the plugin's name for a task's only endpoint; for a
        // second endpoint no name can be assumed (it is never "cali0" by default).
        if workload.endpoints.len() == 1 {
            report.interface = cfg.container_interface.clone();
        }

        let who = workload.identity();
        // A host side that cannot be read must not stop the container-side repair:
        // its facts become unknown and the expected MAC comes from the next source.
        let host = match observe_host(&self.host, &host_interface, endpoint.ip).await {
            Ok(h) => Some(h),
            Err(e) => {
                warn!(
                    container = %Escaped(&who.container),
                    app = who.app.as_deref().map(Escaped).map(tracing::field::display),
                    task = who.task.as_deref().map(Escaped).map(tracing::field::display),
                    ip = %endpoint.ip,
                    error = %e,
                    "host side unknown"
                );
                report.host_error = Some(e.to_string());
                None
            }
        };
        let host_link = host.as_ref().and_then(|h| h.link.as_ref());
        report.host_ifindex = host_link.map(|l| l.index);
        let host_mac = host.as_ref().and_then(|h| h.neighbour.as_ref()).map(|n| n.mac);
        // Unknown while the datastore is down or unread: the host's view decides.
        let lookup = self.datastore.as_ref().map_or(Lookup::Unknown, |d| d.lookup(&endpoint.endpoint_id));
        let evidence = MacEvidence {
            config: cfg.expected_mac,
            datastore: lookup.mac(),
            host_neighbour: host_mac,
            docker_inspect: endpoint.docker_mac,
        };
        let facts = EndpointFacts {
            host_interface,
            ip: endpoint.ip,
            peer_index: host_link.and_then(|l| l.peer_index),
            only_endpoint: workload.endpoints.len() == 1,
            default_route: endpoint.default_route.clone(),
        };
        let mut expected = Expected::build(&cfg.container_interface, cfg.gateway, facts, &evidence);
        expected.max_mtu = host.as_ref().filter(|_| cfg.check_host_side).and_then(crate::diagnose::mtu_limit);
        report.expected_mac = Some(expected.mac);
        report.expected_mac_source = Some(expected.mac_source);
        report.mac_disagreements = expected.mac_disagreements.clone();
        if !expected.mac_disagreements.is_empty() {
            info!(
                container = %Escaped(&who.container),
                app = who.app.as_deref().map(Escaped).map(tracing::field::display),
                task = who.task.as_deref().map(Escaped).map(tracing::field::display),
                mac = %expected.mac,
                mac_source = %expected.mac_source.as_str(),
                disagreements = %expected.mac_disagreements.join(", "),
                "mac sources disagree"
            );
        }

        let mut host_faults = match &host {
            Some(h) if cfg.check_host_side => diagnose_host(&expected, h),
            _ => Vec::new(),
        };
        // Reported, never repaired: Calico owns the datastore.
        if let Some(ds) = &self.datastore {
            host_faults.extend(crate::datastore::findings::endpoint_faults(ds, &lookup, endpoint, &evidence.sources()));
        }
        if !host_faults.iter().any(|f| f.kind == FaultKind::DuplicateIp) {
            host_faults.extend(self.local_ips.findings(endpoint.ip, &workload.container_id));
        }
        match endpoint_pass(session, &expected, &host_faults, mode, &who).await {
            Ok(pass) => {
                report.check_seconds = started.elapsed().as_secs_f64() - pass.repair_seconds;
                pass.fill(&mut report);
                report
            }
            Err(e) => report.failed(e),
        }
    }
}

/// Observe → diagnose → plan → apply (per mode) → observe again, for one endpoint,
/// given a netlink connection bound to its namespace. Needs no Docker, so audits and
/// tests can run it over bare namespaces. `host_faults` (read-only) join the report.
pub async fn endpoint_pass(
    nl: &Netlink,
    expected: &Expected,
    host_faults: &[Fault],
    mode: Mode,
    who: &Identity,
) -> Result<EndpointPass, MedicError> {
    let (before, faults) = observe_endpoint(nl, expected, host_faults).await?;
    endpoint_pass_from(nl, expected, host_faults, mode, who, before, faults).await
}

/// One look at the endpoint: what the container side shows and every fault, the
/// host side's (read-only) included.
async fn observe_endpoint(
    nl: &Netlink,
    expected: &Expected,
    host_faults: &[Fault],
) -> Result<(ContainerSide, Vec<Fault>), MedicError> {
    let side = observe_container(nl, expected).await?;
    let mut faults = diagnose_container(expected, &side);
    faults.extend(host_faults.iter().cloned());
    Ok((side, faults))
}

/// `endpoint_pass` from an observation just made (the pre-start path has one in hand
/// when Docker's last write lands: no second look before the write).
pub async fn endpoint_pass_from(
    nl: &Netlink,
    expected: &Expected,
    host_faults: &[Fault],
    mode: Mode,
    who: &Identity,
    before: ContainerSide,
    faults: Vec<Fault>,
) -> Result<EndpointPass, MedicError> {
    let observe = || observe_endpoint(nl, expected, host_faults);
    let interface = before.link.as_ref().map(|l| l.name.clone()).unwrap_or_else(|| expected.interface.clone());
    let link_index = before.link.as_ref().map(|l| l.index);
    let planned = plan(&faults, expected, &interface);
    if mode == Mode::Check || planned.is_empty() {
        return Ok(EndpointPass {
            remaining: faults.clone(),
            before,
            faults,
            actions: Vec::new(),
            after: None,
            repair_seconds: 0.0,
        });
    }
    let started = Instant::now();
    let why = match mode {
        Mode::DryRun => " (dry run)",
        Mode::BackedOff => " (backed off)",
        _ => "",
    };
    let mut actions = Vec::with_capacity(planned.len());
    for step in &planned {
        let (result, error, agent_error) = match (mode, link_index) {
            (Mode::Repair, Some(index)) => match apply(nl, index, &step.action).await {
                Ok(()) => (ActionOutcome::Success, None, false),
                Err(e) => (ActionOutcome::Failure, Some(e.to_string()), e.is_agent_fault()),
            },
            _ => (ActionOutcome::Skipped, None, false),
        };
        // One line per action, with fields (the JSON format carries them as such).
        let command = step.action.to_string();
        let (container, app, task) =
            (Escaped(&who.container), who.app.as_deref().map(Escaped), who.task.as_deref().map(Escaped));
        macro_rules! repair_line {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    container = %container,
                    app = app.as_ref().map(tracing::field::display),
                    task = task.as_ref().map(tracing::field::display),
                    fault = %step.fault,
                    action = command.as_str(),
                    result = %result.as_str(),
                    error = error.as_deref(),
                    "repair{why}"
                )
            };
        }
        if error.is_none() {
            repair_line!(tracing::Level::INFO);
        } else {
            repair_line!(tracing::Level::WARN);
        }
        actions.push(ActionResult {
            action: step.action.code().to_string(),
            command: step.action.to_string(),
            fault: step.fault,
            result,
            error,
            agent_error,
        });
    }
    let (after, remaining) = if mode == Mode::Repair {
        let (after, remaining) = observe().await?;
        (Some(after), remaining)
    } else {
        (None, faults.clone())
    };
    Ok(EndpointPass { before, faults, actions, after, remaining, repair_seconds: started.elapsed().as_secs_f64() })
}
