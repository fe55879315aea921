//! One follower per new host link: the host side (a calico veth whose peer moved,
//! with Felix's neighbour entry), then the sandbox holding its peer, then — once
//! Docker's last write is done — the MAC, through the one pipeline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::time::Instant as Deadline;
use tracing::{debug, info, warn};

use super::policy::{is_calico_host_veth, may_write_before_start, sandbox_state, SandboxFacts, SandboxState};
use super::sandboxes::PrestartResult;
use super::Inner;
use crate::diagnose::{diagnose_container, FaultKind};
use crate::error::MedicError;
use crate::medic::{endpoint_pass_from, Medic, Mode};
use crate::metrics::{PrestartOutcome, StartPath};
use crate::netlink::watch::watch_netns;
use crate::netlink::Netlink;
use crate::netns::{container_in_netns, sandbox_files, NsIdentity, SandboxFile, TargetNetns};
use crate::observe::{observe_container, ContainerSide};
use crate::workload::{DefaultRoute, EndpointFacts, Expected, Identity, MacAddr, MacEvidence};

/// Observations of one sandbox before it is left to the post-start pass (Docker's
/// configuration takes a handful; a task that keeps changing its namespace more).
const MAX_OBSERVATIONS: usize = 32;
/// Newest PIDs looked at to name the container of a sandbox.
const MAX_PIDS_SCANNED: usize = 512;
/// After the veth moved, how often the follower looks for the sandbox file when no
/// notification comes (the file can be mounted a moment after the move).
const LOCATE_RETRY: Duration = Duration::from_millis(10);

/// The host side of a new endpoint, once Docker moved its peer into the sandbox.
#[derive(Debug, Clone)]
struct HostFacts {
    index: u32,
    name: String,
    peer_index: Option<u32>,
    /// The host's id for the namespace the peer moved to (4.0+).
    peer_nsid: Option<i32>,
    ip: std::net::Ipv4Addr,
    neighbour_mac: MacAddr,
}

enum HostStep {
    /// Not a calico host veth, or gone: nothing to follow.
    Ignore,
    /// Not ready yet (peer still on the host, or no neighbour entry yet).
    Wait,
    Ready(HostFacts),
}

/// What one follower works with.
struct Follow {
    medic: Arc<Medic>,
    ifindex: u32,
    deadline: Deadline,
    host: Netlink,
    host_ns: NsIdentity,
    /// The link turned out to be a calico veth: its end is counted in the outcomes.
    counted: bool,
}

/// The sandbox a moved veth went to.
struct Located {
    facts: HostFacts,
    moved_at: Instant,
    ns: TargetNetns,
    file: SandboxFile,
}

impl Inner {
    /// Follows one host link until its sandbox is configured (or it turns out not to
    /// be a calico endpoint, or `prestart.follow` runs out).
    pub(super) async fn follow(self: &Arc<Self>, ifindex: u32, notify: &Notify) -> Result<(), MedicError> {
        let medic = self.current.medic();
        let deadline = Deadline::now() + medic.config.prestart.follow;
        let host = Netlink::host()?.with_timeout(medic.config.call_deadline());
        let host_ns = NsIdentity::current_thread().map_err(|e| MedicError::netns_io("reading own namespace", e))?;
        let mut f = Follow { medic, ifindex, deadline, host, host_ns, counted: false };
        // The sandbox is not claimed here: a second calico endpoint of the same
        // sandbox has a follower of its own, which must find it too.
        let Some(located) = self.host_side(&mut f, notify).await? else { return Ok(()) };
        self.in_sandbox(&f, located).await
    }

    fn left(&self, f: &Follow, why: &str) {
        if f.counted {
            self.metrics.prestart_outcome(PrestartOutcome::LeftToPostStart);
            let result = PrestartOutcome::LeftToPostStart;
            debug!(ifindex = f.ifindex, result = %result, reason = why, "pre-start: host link left to the post-start pass");
        }
    }

    /// 1. The host side: a calico veth whose peer moved, with Felix's neighbour entry,
    ///    and the sandbox holding that peer.
    async fn host_side(&self, f: &mut Follow, notify: &Notify) -> Result<Option<Located>, MedicError> {
        let cfg = &f.medic.config;
        loop {
            match host_step(&f.host, f.ifindex, &cfg.host_interface_prefix).await? {
                HostStep::Ignore => {
                    self.left(f, "host link gone");
                    return Ok(None);
                }
                HostStep::Wait => f.counted = true,
                HostStep::Ready(facts) => {
                    f.counted = true;
                    let moved_at = Instant::now();
                    if let Some((ns, file)) = self.locate(&f.host, &facts, f.host_ns, &cfg.prestart.sandbox_dirs).await
                    {
                        return Ok(Some(Located { facts, moved_at, ns, file }));
                    }
                    // Known moved (the kernel reports the peer): the file may be mounted a
                    // moment later, look again shortly. Otherwise (3.10: no peer index) the
                    // move itself is not visible: the next host notification (carrier) brings it.
                    if facts.peer_index.is_some() {
                        if Deadline::now() + LOCATE_RETRY >= f.deadline {
                            self.left(f, "no sandbox file holds its peer (prestart.sandbox_dirs?)");
                            return Ok(None);
                        }
                        tokio::time::sleep(LOCATE_RETRY).await;
                        continue;
                    }
                }
            }
            if tokio::time::timeout_at(f.deadline, notify.notified()).await.is_err() {
                self.left(f, "host side not ready in time");
                return Ok(None);
            }
        }
    }

    /// 2. Inside the sandbox: wait for Docker's last write, then fix the MAC.
    async fn in_sandbox(&self, f: &Follow, at: Located) -> Result<(), MedicError> {
        let cfg = &f.medic.config;
        let located = at.moved_at.elapsed();
        // Name the container (its `runc init` is in the sandbox) while Docker finishes.
        let naming = {
            let ns = at.ns.identity();
            tokio::task::spawn_blocking(move || container_in_netns(ns, MAX_PIDS_SCANNED))
        };
        let stem = cfg.container_interface.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
        let evidence = MacEvidence {
            config: cfg.expected_mac,
            datastore: f.medic.datastore().and_then(|d| d.mac_of_interface(&at.facts.name)),
            host_neighbour: Some(at.facts.neighbour_mac),
            docker_inspect: None, // `docker inspect` blocks until start
        };
        let facts = EndpointFacts {
            host_interface: at.facts.name.clone(),
            ip: at.facts.ip,
            peer_index: at.facts.peer_index,
            only_endpoint: false,
            default_route: DefaultRoute::Undecided,
        };
        let expected = Expected::build(&cfg.container_interface, cfg.gateway, facts, &evidence);
        let changed = Arc::new(Notify::new());
        let _watch = {
            let changed = changed.clone();
            watch_netns(&at.ns, move |_| changed.notify_one())?
        };
        let nl = Netlink::in_netns(&at.ns)?.with_timeout(cfg.call_deadline()).with_limits(cfg.dump_limits());
        let Some((side, faults)) = self.configured(f, &at, &nl, &expected, &stem, &changed).await? else {
            return Ok(());
        };
        let configured = at.moved_at.elapsed();
        // A sandbox whose processes cannot be listed in time is named by its file.
        let container = tokio::time::timeout_at(f.deadline, naming).await.ok().and_then(Result::ok).flatten();
        let named = at.moved_at.elapsed();
        let facts = SandboxFacts {
            container: container.as_deref(),
            host_interface: &at.facts.name,
            mac_source: expected.mac_source,
            policy: self.created_policy(container.as_deref()).await,
            checked_after_start: container.as_deref().is_some_and(|id| self.known.checked(id)),
        };
        let (dry_run, enabled) = (self.current.dry_run(), self.current.medic().config.prestart.enabled);
        if let Err(why) = may_write_before_start(&facts, dry_run, enabled) {
            self.metrics.prestart_outcome(PrestartOutcome::NotAllowed);
            info!(
                container = facts.container.map(tracing::field::display),
                host_interface = facts.host_interface,
                result = %PrestartOutcome::NotAllowed,
                reason = why,
                "pre-start: not repairing before start"
            );
            return Ok(());
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        debug!(
            host_interface = at.facts.name.as_str(),
            located_ms = ms(located),
            configured_ms = ms(configured),
            named_ms = ms(named),
            "pre-start: timings after the move"
        );
        self.repair(&nl, &expected, &at, container, (side, faults)).await
    }

    /// Observes the sandbox at every change until Docker is done with it: the MAC the
    /// only fault left (`Some`), or healthy, or not done in time, or changing more
    /// than `MAX_OBSERVATIONS` times (a task that keeps changing its namespace is
    /// left to the post-start pass: `None`).
    async fn configured(
        &self,
        f: &Follow,
        at: &Located,
        nl: &Netlink,
        expected: &Expected,
        stem: &str,
        changed: &Notify,
    ) -> Result<Option<(ContainerSide, Vec<crate::diagnose::Fault>)>, MedicError> {
        for _ in 0..MAX_OBSERVATIONS {
            let side = observe_container(nl, expected).await?;
            let faults = diagnose_container(expected, &side);
            let kinds: Vec<FaultKind> = faults.iter().map(|f| f.kind).collect();
            match sandbox_state(side.link.as_ref().map(|l| l.name.as_str()), stem, &kinds) {
                SandboxState::Configuring => {}
                SandboxState::Healthy => {
                    self.metrics.prestart_outcome(PrestartOutcome::Healthy);
                    let none = PrestartResult {
                        repaired: false,
                        container: None,
                        repaired_at: 0.0,
                        latency: 0.0,
                        path: StartPath::BeforeStart,
                    };
                    self.record(&at.facts.name, none);
                    debug!(host_interface = at.facts.name.as_str(), sandbox = %at.file.path.display(), "pre-start: healthy before start");
                    return Ok(None);
                }
                SandboxState::MacOnly => return Ok(Some((side, faults))),
            }
            if tokio::time::timeout_at(f.deadline, changed.notified()).await.is_err() {
                self.left(f, "sandbox not configured in time");
                return Ok(None);
            }
        }
        self.left(f, "the sandbox keeps changing");
        Ok(None)
    }

    /// 3. The MAC, through the one pipeline; recorded for the post-start pass.
    async fn repair(
        &self,
        nl: &Netlink,
        expected: &Expected,
        at: &Located,
        container: Option<String>,
        (side, faults): (ContainerSide, Vec<crate::diagnose::Fault>),
    ) -> Result<(), MedicError> {
        let who = Identity::named(&container.clone().unwrap_or_else(|| format!("sandbox {}", at.file.path.display())));
        let pass = endpoint_pass_from(nl, expected, &[], Mode::Repair, &who, side, faults).await?;
        self.metrics.count_actions(&pass.actions);
        let seconds = at.moved_at.elapsed().as_secs_f64();
        if !pass.remaining.is_empty() {
            self.metrics.prestart_outcome(PrestartOutcome::Failed);
            warn!(
                container = %who.container,
                host_interface = at.facts.name.as_str(),
                result = %PrestartOutcome::Failed,
                "pre-start: still faulty after repair; the post-start pass takes over"
            );
            return Ok(());
        }
        self.metrics.prestart_outcome(PrestartOutcome::Repaired);
        // From the netlink notification (the veth's move) to the verified repair.
        self.metrics.repaired_after(seconds);
        let result = PrestartResult {
            repaired: true,
            container,
            repaired_at: crate::report::unix_now(),
            latency: seconds,
            path: StartPath::BeforeStart,
        };
        self.record(&at.facts.name, result);
        let commands: Vec<&str> = pass.actions.iter().map(|a| a.command.as_str()).collect();
        info!(
            container = %who.container,
            host_interface = at.facts.name.as_str(),
            ip = %at.facts.ip,
            mac = %expected.mac,
            mac_source = expected.mac_source.as_str(),
            fault = %FaultKind::MacMismatch,
            action = commands.join("; ").as_str(),
            result = %PrestartOutcome::Repaired,
            latency_ms = seconds * 1000.0,
            sandbox = %at.file.path.display(),
            "repaired in the sandbox"
        );
        Ok(())
    }

    /// The sandbox holding the veth's peer: the newest namespace files first, skipping
    /// namespaces that already hold a configured endpoint.
    async fn locate(
        &self,
        host: &Netlink,
        facts: &HostFacts,
        host_ns: NsIdentity,
        dirs: &[std::path::PathBuf],
    ) -> Option<(TargetNetns, SandboxFile)> {
        let t0 = Instant::now();
        let files = sandbox_files(dirs);
        let listed = files.len();
        let candidates = self.state().candidates(files, Instant::now());
        let mut asked = 0;
        for (tried, file) in candidates.into_iter().enumerate() {
            // Where the kernel names the peer's namespace, only that namespace is opened.
            if let Some(want) = facts.peer_nsid {
                asked += 1;
                if self.nsid(host, &file).await != Some(want) {
                    continue;
                }
            }
            let Ok(ns) = TargetNetns::open(&file.path, host_ns) else { continue };
            let limits = self.current.medic().config.dump_limits();
            let Ok(nl) = Netlink::in_netns(&ns).map(|nl| nl.with_limits(limits)) else { continue };
            let (Ok(links), Ok(addrs)) = (nl.links().await, nl.ipv4_addresses().await) else { continue };
            let holds_peer = links.iter().any(|l| {
                let by_index = facts.peer_index == Some(l.index) && l.peer_index == Some(facts.index);
                let by_address =
                    l.name.starts_with("cali") && addrs.iter().any(|&(i, a, _)| i == l.index && a == facts.ip);
                by_index || by_address
            });
            if holds_peer {
                let took = t0.elapsed();
                let took_ms = took.as_secs_f64() * 1000.0;
                debug!(sandbox = %file.path.display(), tried, asked, files = listed, took_ms, "pre-start: sandbox located");
                return Some((ns, file));
            }
        }
        None
    }

    /// The host's id for a sandbox's namespace (cached once assigned: it is fixed for
    /// the namespace's life). Asked over the host socket: no thread enters the sandbox.
    async fn nsid(&self, host: &Netlink, file: &SandboxFile) -> Option<i32> {
        let key = (file.path.clone(), file.identity);
        if let Some(id) = self.state().nsids.get(&key) {
            return Some(*id);
        }
        let f = std::fs::File::open(&file.path).ok()?;
        if NsIdentity::of_file(&f).ok()? != file.identity {
            return None; // replaced since it was listed
        }
        let id = host.nsid_of(std::os::fd::AsFd::as_fd(&f)).await.ok().flatten()?;
        self.state().nsids.insert(key, id);
        Some(id)
    }
}

/// Reads a host link: a calico veth whose peer left the host, with one PERMANENT
/// neighbour entry (Felix's)?
async fn host_step(host: &Netlink, ifindex: u32, prefix: &str) -> Result<HostStep, MedicError> {
    let Some((mut link, mut peer_nsid)) = host.link_and_peer_netnsid(ifindex).await? else {
        return Ok(HostStep::Ignore);
    };
    if crate::kernel::compat::emulated_kernel().is_some_and(|v| v < (4, 1)) {
        // As on 3.10: no namespace ids (4.0), no veth peer index (4.1): found by address.
        peer_nsid = None;
        link.peer_index = None;
    }
    if !is_calico_host_veth(&link.name, prefix) {
        return Ok(HostStep::Ignore);
    }
    if let Some(peer) = link.peer_index {
        if let Some(p) = host.link_by_index(peer).await? {
            if p.peer_index == Some(ifindex) {
                return Ok(HostStep::Wait); // Docker has not moved it yet
            }
        }
    }
    let permanent: Vec<_> = host.neighbours_on(ifindex).await?.into_iter().filter(|(_, n)| n.permanent).collect();
    let [(ip, n)] = permanent.as_slice() else { return Ok(HostStep::Wait) };
    Ok(HostStep::Ready(HostFacts {
        index: ifindex,
        name: link.name,
        peer_index: link.peer_index,
        peer_nsid,
        ip: *ip,
        neighbour_mac: n.mac,
    }))
}
