//! Repair before start. Docker configures a new sandbox (moves the plugin's veth in,
//! renames it `cali0`, sets its MAC and /32, adds the two routes) 30–50 ms before it
//! starts the task; the task's first instruction runs only at `start`, and `docker
//! inspect` blocks until then. So this path works from the kernel alone:
//!
//! 1. the host watch reports a link or neighbour change on an unknown host link;
//! 2. a follower reads that link: a calico host veth (`cali` + 11 id characters) whose
//!    peer has left the host namespace, with Felix's PERMANENT neighbour entry (the
//!    workload IP and the MAC the host will send to);
//! 3. it finds the sandbox among the engines' namespace files (newest first; the one
//!    holding the veth's peer with the workload IP) and subscribes inside it;
//! 4. once Docker has finished (`cali0` up with its /32 and both routes) and the MAC is
//!    the only fault, it asks `may_write_before_start`, repairs the MAC through the
//!    one pipeline (`endpoint_pass`) and records the result for the endpoint's host
//!    interface; the post-start pass confirms it and reports `repaired_before_start`.
//!
//! Nothing Docker writes later is written here (no link, address or route: only the
//! MAC, after Docker's last write). An endpoint whose expected MAC has no
//! endpoint-specific source yet, or whose sandbox is not complete within
//! `prestart.follow`, is left to the post-start pass.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::{unix_now, Agent};
use crate::diagnose::{diagnose_container, FaultKind};
use crate::error::MedicError;
use crate::marathon::Policy;
use crate::medic::{endpoint_pass_from, Mode};
use crate::metrics::{PrestartOutcome, StartPath};
use crate::netlink::watch::{watch_host, watch_netns, Change, ChangeKind, WatchEvent};
use crate::netlink::Netlink;
use crate::netns::{container_in_netns, sandbox_files, NsIdentity, SandboxFile, TargetNetns};
use crate::observe::observe_container;
use crate::workload::{ordered_candidates, Escaped, Expected, Identity, MacAddr, MacSource};

/// Finished entries kept this long (an ifindex is not reused sooner in practice).
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Namespace files tried per attempt to find a sandbox (newest first).
const MAX_SANDBOX_TRIES: usize = 64;
/// Newest PIDs looked at to name the container of a sandbox.
const MAX_PIDS_SCANNED: usize = 512;
/// After the veth moved, how often the follower looks for the sandbox file when no
/// notification comes (the file can be mounted a moment after the move).
const LOCATE_RETRY: Duration = Duration::from_millis(10);

/// What the pre-start path knows (one field of the agent's `Containers`).
#[derive(Default)]
pub(super) struct Sandboxes {
    /// Host ifindex → its follower (woken by every host notification for that link).
    followed: HashMap<u32, (Followed, Instant)>,
    /// Host interface name → what the pre-start path did, until the post-start pass reads it.
    results: HashMap<String, (PrestartResult, Instant)>,
    /// Namespaces known to hold a configured endpoint: never searched again.
    claimed: HashSet<NsIdentity>,
    /// When this agent first listed each sandbox file (its creation order, near enough).
    first_seen: HashMap<NsIdentity, Instant>,
    /// The host's id of each sandbox namespace, once the kernel assigned one.
    nsids: HashMap<NsIdentity, i32>,
    /// The followers' own runtime thread (see `follower_runtime`).
    runtime: Option<tokio::runtime::Handle>,
    /// The followers' own host subscription (read on their runtime).
    host_watch: Option<crate::netlink::watch::Watch>,
    /// Docker's data root (`/info`), where a created container's record (its
    /// environment, hence its per-app policy) can be read before start.
    pub(super) docker_root: Option<std::path::PathBuf>,
}

/// Followers race Docker's last 30–50 ms before `start`: they run on their own
/// thread and runtime, so a burst of post-start passes, probes and Docker events on
/// the main runtime never queues in front of them.
fn follower_runtime() -> std::io::Result<tokio::runtime::Handle> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new().name("prestart".into()).spawn(move || {
        raise_priority();
        rt.block_on(std::future::pending::<()>());
    })?;
    Ok(handle)
}

enum Followed {
    Active(Arc<Notify>),
    Finished,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct PrestartResult {
    pub repaired: bool,
    pub container: Option<String>,
    /// When the repair was verified (unix seconds) and how long after the veth moved.
    pub repaired_at: f64,
    pub latency: f64,
}

impl Sandboxes {
    fn prune(&mut self, now: Instant) {
        self.followed.retain(|_, (f, at)| matches!(f, Followed::Active(_)) || now.duration_since(*at) < FORGET_AFTER);
        self.results.retain(|_, (_, at)| now.duration_since(*at) < FORGET_AFTER);
    }

    /// A namespace the post-start pass opened: it holds a configured endpoint.
    pub(super) fn claim(&mut self, ns: NsIdentity) {
        self.claimed.insert(ns);
    }

    /// The pre-start result for a host interface, consumed by the post-start pass.
    pub(super) fn take_result(&mut self, host_interface: &str) -> Option<PrestartResult> {
        self.results.remove(host_interface).map(|(r, _)| r)
    }
}

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

/// The follower thread (and the threads it starts) runs SCHED_RR at the lowest
/// real-time priority: on a host busy starting tasks, a follower must get the CPU
/// within Docker's 30–50 ms, and it needs only a few milliseconds of it per new
/// endpoint; every wait in it is bounded (`prestart.follow`), and the kernel's RT
/// throttling caps it anyway. Without CAP_SYS_NICE: nice −10, else as it is.
const FOLLOWER_RT_PRIORITY: libc::c_int = 1;
const FOLLOWER_NICE: libc::c_int = -10;

fn raise_priority() {
    let param = libc::sched_param { sched_priority: FOLLOWER_RT_PRIORITY };
    // SAFETY: sched_setscheduler(2) with pid 0 = the calling thread only.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) } == 0 {
        return;
    }
    let rt_error = std::io::Error::last_os_error();
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // SAFETY: setpriority(2) on this thread only; failure (no CAP_SYS_NICE) is harmless.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, FOLLOWER_NICE) } != 0 {
        debug!(
            rt_error = %rt_error,
            error = %std::io::Error::last_os_error(),
            "pre-start: follower keeps its priority"
        );
    }
}

/// `cali` + the first 11 characters of the endpoint id, as the libnetwork plugin names it.
pub fn is_calico_host_veth(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|id| id.len() == 11 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Pure: what the sandbox's state means for the pre-start path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxState {
    /// Docker is still configuring it (link not renamed yet, no address, a route missing…).
    Configuring,
    /// Configured and healthy: nothing to do.
    Healthy,
    /// Configured; the MAC is the only fault.
    MacOnly,
}

/// Configured means: the link carries the plugin's name and every fault Docker would
/// still fix itself is gone. Only then is the MAC the last word, and ours to fix.
pub fn sandbox_state(link_name: Option<&str>, stem: &str, faults: &[FaultKind]) -> SandboxState {
    let named = link_name.is_some_and(|n| n.starts_with(stem));
    if !named || faults.iter().any(|f| *f != FaultKind::MacMismatch) {
        SandboxState::Configuring
    } else if faults.is_empty() {
        SandboxState::Healthy
    } else {
        SandboxState::MacOnly
    }
}

/// What `may_write_before_start` is asked about.
#[derive(Debug, Clone)]
pub struct SandboxFacts<'a> {
    /// The container, when its `runc init` could be found in the sandbox.
    pub container: Option<&'a str>,
    pub host_interface: &'a str,
    pub mac_source: MacSource,
    /// Its per-app policy (Marathon label), when Docker's record of it could be read.
    pub policy: Option<Policy>,
}

impl Agent {
    /// A host notification about a link that belongs to no known container: maybe a
    /// new calico endpoint. Starts (or wakes) its follower. Cheap: runs in the reader.
    pub(super) fn prestart_notice(&self, ifindex: u32, kind: ChangeKind) {
        if !matches!(kind, ChangeKind::Link | ChangeKind::Neighbour) || !self.medic().config.prestart.enabled {
            return;
        }
        let now = Instant::now();
        let (notify, runtime) = {
            let mut c = self.containers();
            let Some(runtime) = c.sandboxes.runtime.clone() else { return };
            if c.host_links.contains_key(&ifindex) {
                return; // a known container's endpoint: the live watches cover it
            }
            if c.sandboxes.followed.len() > 1024 {
                c.sandboxes.prune(now);
            }
            match c.sandboxes.followed.get(&ifindex) {
                Some((Followed::Active(n), _)) => {
                    n.notify_one();
                    return;
                }
                Some((Followed::Finished, _)) => return,
                None => {
                    let n = Arc::new(Notify::new());
                    c.sandboxes.followed.insert(ifindex, (Followed::Active(n.clone()), now));
                    (n, runtime)
                }
            }
        };
        let Some(agent) = self.me.upgrade() else { return };
        runtime.spawn(async move {
            let outcome = agent.follow(ifindex, &notify).await;
            if let Err(e) = &outcome {
                debug!(ifindex, error = %e, "pre-start: following the host link failed");
            }
            if let Some((f, at)) = agent.containers().sandboxes.followed.get_mut(&ifindex) {
                *f = Followed::Finished;
                *at = Instant::now();
            }
        });
    }

    /// Starts the pre-start path: the followers' thread, their own host subscription,
    /// and a first listing of the sandbox files (so files created later sort newer).
    pub(super) fn start_prestart(&self) {
        if !self.medic().config.prestart.enabled {
            return;
        }
        let existing = self.containers().sandboxes.runtime.clone();
        let runtime = match existing.map_or_else(follower_runtime, Ok) {
            Ok(h) => h,
            Err(e) => {
                warn!(
                    error = %e,
                    "pre-start path unavailable (no follower thread); new tasks are repaired after start"
                );
                return;
            }
        };
        let me = self.me.clone();
        let watch = {
            let _on_followers = runtime.enter();
            watch_host(move |event| {
                let Some(agent) = me.upgrade() else { return };
                if let WatchEvent::Changed(Change { kind, ifindex: Some(index) }) = event {
                    agent.prestart_notice(index, kind);
                }
            })
        };
        let files = sandbox_files(&self.medic().config.prestart.sandbox_dirs);
        let now = Instant::now() - Duration::from_secs(1);
        let mut c = self.containers();
        match watch {
            Ok(w) => c.sandboxes.host_watch = Some(w),
            Err(e) => {
                warn!(
                    error = %e,
                    "pre-start path unavailable (no host subscription); new tasks are repaired after start"
                );
                return;
            }
        }
        c.sandboxes.runtime = Some(runtime);
        for f in files {
            c.sandboxes.first_seen.entry(f.identity).or_insert(now);
        }
    }

    /// SIGHUP: `prestart.enabled` turned on starts the path, turned off stops it
    /// (`sandbox_dirs` and `follow` are read afresh by every follower).
    pub(super) fn reconfigure_prestart(&self) {
        let running = self.containers().sandboxes.host_watch.is_some();
        match (self.medic().config.prestart.enabled, running) {
            (true, false) => self.start_prestart(),
            (false, true) => {
                info!("pre-start path disabled: new tasks are repaired after start");
                self.stop_prestart();
            }
            _ => {}
        }
    }

    /// Stops the pre-start path (shutdown): no new follower starts.
    pub(super) fn stop_prestart(&self) {
        self.containers().sandboxes.host_watch = None;
    }

    /// The per-app policy of a created, not yet started container, from Docker's record.
    fn created_policy(&self, id: &str) -> Option<Policy> {
        let root = self.containers().sandboxes.docker_root.clone()?;
        match crate::docker::created_env(&root, id) {
            Ok(env) => Some(Policy::of_task(&env, &self.medic().config.marathon).0),
            Err(e) => {
                debug!(container = %id, dir = %root.display(), error = %e, "pre-start: no record of the container");
                None
            }
        }
    }

    /// THE decision whether the agent may write into a sandbox before its task starts.
    /// Every pre-start write goes through here (per-app policy plugs in here too).
    pub(super) fn may_write_before_start(&self, facts: &SandboxFacts) -> Result<(), &'static str> {
        if self.dry_run.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("dry run");
        }
        if !self.medic().config.prestart.enabled {
            return Err("prestart.enabled is off");
        }
        // Only a source that speaks for this endpoint: a user's --mac-address is what
        // Felix programs (and what the datastore holds); the Calico default is a guess.
        if !matches!(facts.mac_source, MacSource::Config | MacSource::Datastore | MacSource::HostNeighbour) {
            return Err("no endpoint-specific source for the expected MAC");
        }
        // An app labelled `off` or `report` is never written; without its record the
        // label is unknown, so the task is left to the post-start pass.
        match facts.policy {
            None => return Err("its per-app policy is unknown before start (no record of the container)"),
            Some(p) if p.limit(Mode::Repair) != Some(Mode::Repair) => return Err("its per-app policy is not repair"),
            Some(_) => {}
        }
        if let Some(id) = facts.container {
            if self.containers().by_id.get(id).is_some_and(|st| st.endpoints.is_some()) {
                return Err("already checked after start");
            }
        }
        Ok(())
    }

    /// Follows one host link until its sandbox is configured (or it turns out not to
    /// be a calico endpoint, or `prestart.follow` runs out).
    async fn follow(&self, ifindex: u32, notify: &Notify) -> Result<(), MedicError> {
        let medic = self.medic();
        let cfg = &medic.config;
        let deadline = tokio::time::Instant::now() + cfg.prestart.follow;
        let host = Netlink::host()?.with_timeout(cfg.call_deadline());
        let host_ns = NsIdentity::current_thread().map_err(|e| MedicError::netns_io("reading own namespace", e))?;
        let mut counted = false;
        let left = |agent: &Agent, counted: bool, why: &str| {
            if counted {
                agent.metrics.prestart_outcome(PrestartOutcome::LeftToPostStart);
                debug!(
                    ifindex,
                    result = %PrestartOutcome::LeftToPostStart,
                    reason = %why,
                    "pre-start: host link left to the post-start pass"
                );
            }
        };
        // 1. The host side: a calico veth whose peer moved, with Felix's neighbour entry.
        let (facts, moved_at, ns, file) = loop {
            match host_step(&host, ifindex, &cfg.host_interface_prefix).await? {
                HostStep::Ignore => {
                    left(self, counted, "host link gone");
                    return Ok(());
                }
                HostStep::Wait => counted = true,
                HostStep::Ready(facts) => {
                    counted = true;
                    let moved_at = Instant::now();
                    if let Some((ns, file)) = self.locate(&host, &facts, host_ns, &cfg.prestart.sandbox_dirs).await {
                        break (facts, moved_at, ns, file);
                    }
                    // Known moved (the kernel reports the peer): the file may be mounted a
                    // moment later, look again shortly. Otherwise (3.10: no peer index) the
                    // move itself is not visible: the next host notification (carrier) brings it.
                    if facts.peer_index.is_some() {
                        if tokio::time::Instant::now() + LOCATE_RETRY >= deadline {
                            left(self, counted, "no sandbox file holds its peer (prestart.sandbox_dirs?)");
                            return Ok(());
                        }
                        tokio::time::sleep(LOCATE_RETRY).await;
                        continue;
                    }
                }
            }
            if tokio::time::timeout_at(deadline, notify.notified()).await.is_err() {
                left(self, counted, "host side not ready in time");
                return Ok(());
            }
        };
        self.containers().sandboxes.claim(ns.identity());
        let located = moved_at.elapsed();
        // Name the container (its `runc init` is in the sandbox) while Docker finishes.
        let naming = {
            let ns = ns.identity();
            tokio::task::spawn_blocking(move || container_in_netns(ns, MAX_PIDS_SCANNED))
        };
        // 2. Inside the sandbox: wait for Docker's last write, then fix the MAC.
        let stem = cfg.container_interface.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
        let datastore_mac = medic.datastore().and_then(|d| d.mac_of_interface(&facts.name));
        let candidates = ordered_candidates(&[
            (MacSource::Config, cfg.expected_mac),
            (MacSource::Datastore, datastore_mac),
            (MacSource::HostNeighbour, Some(facts.neighbour_mac)),
        ]);
        let mut expected =
            Expected::resolve(&cfg.container_interface, facts.name.clone(), facts.ip, cfg.gateway, &candidates);
        expected.peer_index = facts.peer_index;
        expected.only_endpoint = false;
        let changed = Arc::new(Notify::new());
        let _watch = {
            let changed = changed.clone();
            watch_netns(&ns, move |_| changed.notify_one())?
        };
        let nl = Netlink::in_netns(&ns)?.with_timeout(cfg.call_deadline());
        let (side, faults) = loop {
            let side = observe_container(&nl, &expected).await?;
            let faults = diagnose_container(&expected, &side);
            let kinds: Vec<FaultKind> = faults.iter().map(|f| f.kind).collect();
            match sandbox_state(side.link.as_ref().map(|l| l.name.as_str()), &stem, &kinds) {
                SandboxState::Configuring => {}
                SandboxState::Healthy => {
                    self.metrics.prestart_outcome(PrestartOutcome::Healthy);
                    self.record(
                        &facts.name,
                        PrestartResult { repaired: false, container: None, repaired_at: 0.0, latency: 0.0 },
                    );
                    debug!(
                        host_interface = %facts.name,
                        sandbox = %file.path.display(),
                        result = %PrestartOutcome::Healthy,
                        "pre-start: healthy before start"
                    );
                    return Ok(());
                }
                SandboxState::MacOnly => break (side, faults),
            }
            if tokio::time::timeout_at(deadline, changed.notified()).await.is_err() {
                left(self, true, "sandbox not configured in time");
                return Ok(());
            }
        };
        let configured = moved_at.elapsed();
        let container = naming.await.ok().flatten();
        let named = moved_at.elapsed();
        let facts_for_policy = SandboxFacts {
            container: container.as_deref(),
            host_interface: &facts.name,
            mac_source: expected.mac_source,
            policy: container.as_deref().and_then(|id| self.created_policy(id)),
        };
        if let Err(why) = self.may_write_before_start(&facts_for_policy) {
            self.metrics.prestart_outcome(PrestartOutcome::NotAllowed);
            info!(
                container = facts_for_policy.container.map(tracing::field::display),
                host_interface = %facts_for_policy.host_interface,
                result = %PrestartOutcome::NotAllowed,
                reason = %why,
                "pre-start: not repairing before start"
            );
            return Ok(());
        }
        let who = Identity::named(&container.clone().unwrap_or_else(|| format!("sandbox {}", file.path.display())));
        let pass = endpoint_pass_from(&nl, &expected, &[], Mode::Repair, &who, side, faults).await?;
        self.metrics.count_actions(&pass.actions);
        let verified = pass.remaining.is_empty();
        debug!(
            container = %who.container,
            located_ms = located.as_secs_f64() * 1000.0,
            configured_ms = configured.as_secs_f64() * 1000.0,
            named_ms = named.as_secs_f64() * 1000.0,
            repaired_ms = moved_at.elapsed().as_secs_f64() * 1000.0,
            "pre-start: timings after the move"
        );
        let seconds = moved_at.elapsed().as_secs_f64();
        if verified {
            self.metrics.prestart_outcome(PrestartOutcome::Repaired);
            // From the netlink notification (the veth's move) to the verified repair.
            self.metrics.repaired_after(seconds);
            self.record(
                &facts.name,
                PrestartResult {
                    repaired: true,
                    container: container.clone(),
                    repaired_at: unix_now(),
                    latency: seconds,
                },
            );
            let commands: Vec<&str> = pass.actions.iter().map(|a| a.command.as_str()).collect();
            info!(
                container = %who.container,
                fault = %FaultKind::MacMismatch,
                action = commands.join("; ").as_str(),
                result = %PrestartOutcome::Repaired,
                host_interface = facts.name.as_str(),
                ip = %facts.ip,
                mac = %expected.mac,
                mac_source = expected.mac_source.as_str(),
                sandbox = %file.path.display(),
                latency_ms = seconds * 1000.0,
                "repaired in the sandbox"
            );
        } else {
            self.metrics.prestart_outcome(PrestartOutcome::Failed);
            warn!(
                container = %who.container,
                host_interface = %facts.name,
                result = %PrestartOutcome::Failed,
                "pre-start: still faulty after repair; the post-start pass takes over"
            );
        }
        Ok(())
    }

    fn record(&self, host_interface: &str, result: PrestartResult) {
        self.containers().sandboxes.results.insert(host_interface.to_string(), (result, Instant::now()));
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
        let listed = (files.len(), t0.elapsed());
        let candidates: Vec<SandboxFile> = {
            let mut c = self.containers();
            let sb = &mut c.sandboxes;
            let now = Instant::now();
            let present: HashSet<NsIdentity> = files.iter().map(|f| f.identity).collect();
            sb.claimed.retain(|i| present.contains(i));
            sb.first_seen.retain(|i, _| present.contains(i));
            sb.nsids.retain(|i, _| present.contains(i));
            for f in &files {
                sb.first_seen.entry(f.identity).or_insert(now);
            }
            // Newest first by when this agent first saw each file (an nsfs file's own
            // times are its inode's, which the kernel may re-create at any open).
            let mut fresh: Vec<(Instant, SandboxFile)> = files
                .into_iter()
                .filter(|f| !sb.claimed.contains(&f.identity))
                .map(|f| (sb.first_seen[&f.identity], f))
                .collect();
            fresh.sort_by_key(|(seen, _)| std::cmp::Reverse(*seen));
            fresh.into_iter().take(MAX_SANDBOX_TRIES).map(|(_, f)| f).collect()
        };
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
            let Ok(nl) = Netlink::in_netns(&ns) else { continue };
            let (Ok(links), Ok(addrs)) = (nl.links().await, nl.ipv4_addresses().await) else { continue };
            let holds_peer = links.iter().any(|l| {
                let by_index = facts.peer_index == Some(l.index) && l.peer_index == Some(facts.index);
                let by_address =
                    l.name.starts_with("cali") && addrs.iter().any(|&(i, a, _)| i == l.index && a == facts.ip);
                by_index || by_address
            });
            if holds_peer {
                debug!(
                    sandbox = %file.path.display(),
                    tried,
                    asked,
                    files = listed.0,
                    list_ms = listed.1.as_secs_f64() * 1000.0,
                    took_ms = t0.elapsed().as_secs_f64() * 1000.0,
                    "pre-start: sandbox located"
                );
                return Some((ns, file));
            }
        }
        None
    }

    /// The host's id for a sandbox's namespace (cached once assigned: it is fixed for
    /// the namespace's life). Asked over the host socket: no thread enters the sandbox.
    async fn nsid(&self, host: &Netlink, file: &SandboxFile) -> Option<i32> {
        if let Some(id) = self.containers().sandboxes.nsids.get(&file.identity) {
            return Some(*id);
        }
        let f = std::fs::File::open(&file.path).ok()?;
        if NsIdentity::of_file(&f).ok()? != file.identity {
            return None; // replaced since it was listed
        }
        let id = host.nsid_of(std::os::fd::AsFd::as_fd(&f)).await.ok().flatten()?;
        self.containers().sandboxes.nsids.insert(file.identity, id);
        Some(id)
    }

    /// After a post-start pass: attach what the pre-start path did to each endpoint's
    /// report, and remember the namespace as configured. A repair counts as before
    /// start when it was verified before Docker's `start` event (its timestamp); a pass
    /// that ran before the event arrived counts it as before start.
    pub(super) fn note_prestart(&self, out: &mut crate::medic::ContainerOutcome) {
        let mut c = self.containers();
        // Docker's start event (its own timestamp). Not State.StartedAt: that is taken
        // before the task's first instruction runs (measured: repairs verified after it
        // were still seen by the task's first act).
        let started = c.by_id.get(&out.workload.container_id).and_then(|st| st.started_at);
        if let Some(ns) = &out.netns {
            c.sandboxes.claim(ns.identity());
        }
        for r in &mut out.reports {
            let Some(res) = c.sandboxes.take_result(&r.host_interface) else { continue };
            let post_start_also_wrote = r
                .actions
                .iter()
                .any(|a| a.fault == FaultKind::MacMismatch && a.result == crate::repair::ActionOutcome::Success);
            if !res.repaired || post_start_also_wrote {
                continue; // (a MAC the post-start pass wrote is counted as after_start there)
            }
            let before = started.is_none_or(|start| res.repaired_at < start);
            r.repaired_before_start = before;
            let path = if before { StartPath::BeforeStart } else { StartPath::AfterStart };
            self.metrics.repaired_at_start(path, res.latency);
            let who = out.workload.identity();
            let (app, task) = (who.app.as_deref().map(Escaped), who.task.as_deref().map(Escaped));
            info!(
                container = %Escaped(&who.container),
                app = app.as_ref().map(tracing::field::display),
                task = task.as_ref().map(tracing::field::display),
                container_id = r.container_id.as_str(),
                fault = %FaultKind::MacMismatch,
                host_interface = r.host_interface.as_str(),
                healthy = r.healthy,
                repaired_before_start = before,
                before_start_event_ms = started.map(|start| (start - res.repaired_at) * 1000.0),
                "confirmed after start: {}",
                if before { "repaired before start" } else { "repaired in the sandbox, but after Docker's start" }
            );
        }
    }
}

/// Reads a host link: a calico veth whose peer left the host, with one PERMANENT
/// neighbour entry (Felix's)?
async fn host_step(host: &Netlink, ifindex: u32, prefix: &str) -> Result<HostStep, MedicError> {
    let Some((mut link, mut peer_nsid)) = host.link_and_peer_netnsid(ifindex).await? else {
        return Ok(HostStep::Ignore);
    };
    if crate::netlink::compat::emulated_kernel().is_some_and(|v| v < (4, 1)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use FaultKind::*;

    #[test]
    fn only_the_plugins_host_veths_are_followed() {
        assert!(is_calico_host_veth("cali0c7897dea75", "cali"));
        assert!(!is_calico_host_veth("cali0", "cali"), "a container-side name");
        assert!(!is_calico_host_veth("veth1a2b3c4", "cali"), "a bridge task's veth");
        assert!(!is_calico_host_veth("cali0c7897dea75x", "cali"));
        assert!(!is_calico_host_veth("calico-lab0", "cali"));
    }

    /// The MAC is written only after Docker's last write: while any other fault is
    /// left (Docker still renaming, addressing, routing), the sandbox is Configuring.
    #[test]
    fn the_mac_is_ours_only_once_docker_is_done() {
        let s = |name: Option<&str>, f: &[FaultKind]| sandbox_state(name, "cali", f);
        assert_eq!(s(Some("temp0c7897dea75"), &[MacMismatch, AddressMissing]), SandboxState::Configuring);
        assert_eq!(s(Some("temp0c7897dea75"), &[MacMismatch]), SandboxState::Configuring, "not renamed yet");
        assert_eq!(
            s(Some("cali0"), &[MacMismatch, GatewayRouteMissing, DefaultRouteMissing]),
            SandboxState::Configuring
        );
        assert_eq!(s(Some("cali0"), &[MacMismatch, DefaultRouteMissing]), SandboxState::Configuring);
        assert_eq!(s(Some("cali0"), &[MacMismatch, LinkDown]), SandboxState::Configuring);
        assert_eq!(s(None, &[LinkMissing]), SandboxState::Configuring);
        assert_eq!(s(Some("cali0"), &[MacMismatch]), SandboxState::MacOnly);
        assert_eq!(s(Some("cali0"), &[]), SandboxState::Healthy);
    }
}
