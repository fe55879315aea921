//! Repair before start. Docker configures a new sandbox (moves the plugin's veth in,
//! renames it `cali0`, sets its MAC and /32, adds the two routes) 30–50 ms before it
//! starts the task; the task's first instruction runs only at `start`, and `docker
//! inspect` blocks until then. So this path works from the kernel alone:
//!
//! 1. its own host subscription reports a link or neighbour change on a host link
//!    that belongs to no known container (`Known`, published by the scheduler);
//! 2. a follower reads that link: a calico host veth (`cali` + 11 id characters) whose
//!    peer has left the host namespace, with Felix's PERMANENT neighbour entry (the
//!    workload IP and the MAC the host will send to);
//! 3. it finds the sandbox among the engines' namespace files (newest first; the one
//!    holding the veth's peer with the workload IP) and subscribes inside it;
//! 4. once Docker has finished (`cali0` up with its /32 and both routes) and the MAC is
//!    the only fault, it asks `may_write_before_start`, repairs the MAC through the
//!    one pipeline (`endpoint_pass_from`, with `Expected` from the shared builder) and
//!    records the result for the endpoint's host interface; the post-start pass
//!    confirms it (`Prestart::confirm`) and reports `repaired_before_start`.
//!
//! Nothing Docker writes later is written here (no link, address or route: only the
//! MAC, after Docker's last write). An endpoint whose expected MAC has no
//! endpoint-specific source yet, or whose sandbox is not complete within
//! `prestart.follow`, is left to the post-start pass. This module owns its sandbox
//! bookkeeping behind its own lock; it knows nothing of the scheduler.

mod follow;
pub mod hooks;
mod policy;
mod sandboxes;
pub mod settings;

pub use policy::{is_calico_host_veth, may_write_before_start, sandbox_state, SandboxFacts, SandboxState};

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::diagnose::FaultKind;
use crate::kernel::sched::PriorityRaise;
use crate::marathon::Policy;
use crate::medic::{ContainerOutcome, Current};
use crate::metrics::{Metrics, StartPath};
use crate::netlink::watch::{watch_host, Change, ChangeKind, WatchEvent};
use crate::netlink::Netlink;
use crate::netns::sandbox_files;
use crate::workload::Escaped;
use sandboxes::{PrestartResult, Sandboxes};

/// How long the pre-start path waits for Docker's record of a created container.
const RECORD_DEADLINE: Duration = Duration::from_millis(200);

/// What the scheduler knows that the pre-start path must respect, published by the
/// scheduler (its only writer): host links of known containers (their live watches
/// cover them) and containers already checked after start (never written before
/// start again).
#[derive(Default)]
pub struct Known {
    host_links: RwLock<HashSet<u32>>,
    checked: RwLock<HashSet<String>>,
}

impl Known {
    pub fn map_host_links(&self, removed: &[u32], added: &[u32]) {
        let mut links = self.host_links.write().unwrap_or_else(|p| p.into_inner());
        for i in removed {
            links.remove(i);
        }
        links.extend(added.iter().copied());
    }

    pub fn set_checked(&self, container: &str, checked: bool) {
        let mut set = self.checked.write().unwrap_or_else(|p| p.into_inner());
        if checked {
            if !set.contains(container) {
                set.insert(container.to_string());
            }
        } else {
            set.remove(container);
        }
    }

    fn owns_host_link(&self, ifindex: u32) -> bool {
        self.host_links.read().unwrap_or_else(|p| p.into_inner()).contains(&ifindex)
    }

    fn checked(&self, container: &str) -> bool {
        self.checked.read().unwrap_or_else(|p| p.into_inner()).contains(container)
    }
}

/// The pre-start path: cheap to clone, shared by its followers.
#[derive(Clone)]
pub struct Prestart {
    inner: Arc<Inner>,
}

struct Inner {
    current: Arc<Current>,
    metrics: Arc<Metrics>,
    known: Arc<Known>,
    sandboxes: Mutex<Sandboxes>,
}

impl Prestart {
    pub fn new(current: Arc<Current>, metrics: Arc<Metrics>, known: Arc<Known>) -> Prestart {
        let inner = Inner { current, metrics, known, sandboxes: Mutex::new(Sandboxes::default()) };
        Prestart { inner: Arc::new(inner) }
    }

    /// Starts the path when `prestart.enabled`: the followers' thread, their own host
    /// subscription, and a first listing of the sandbox files (so files created later
    /// sort newer).
    pub fn start(&self) {
        if !std::mem::replace(&mut self.inner.state().hook_listener, true) {
            self.inner.listen_for_hooks(); // whether or not the follower runs
        }
        let medic = self.inner.current.medic();
        if !medic.config.prestart.enabled {
            return;
        }
        let existing = self.inner.state().runtime.clone();
        let runtime = match existing.map_or_else(follower_runtime, Ok) {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, reason = "follower thread", "pre-start path unavailable; new tasks are repaired after start");
                return;
            }
        };
        let me = Arc::downgrade(&self.inner);
        let watch = {
            let _on_followers = runtime.enter();
            watch_host(move |event| {
                let Some(inner) = me.upgrade() else { return };
                match event {
                    WatchEvent::Changed(Change { kind, ifindex: Some(index) }) => Inner::notice(&inner, index, kind),
                    WatchEvent::Changed(_) => {}
                    // Notifications were lost: look at every host link again.
                    WatchEvent::Overflow => {
                        inner.metrics.prestart_rescan(false);
                        Inner::rescan(&inner)
                    }
                    // The subscription is gone: a new one, then the same look.
                    WatchEvent::Lost => {
                        inner.metrics.prestart_rescan(true);
                        Inner::resubscribe(&inner)
                    }
                }
            })
        };
        let files = sandbox_files(&medic.config.prestart.sandbox_dirs);
        let seen = Instant::now() - Duration::from_secs(1);
        let mut st = self.inner.state();
        match watch {
            Ok(w) => st.host_watch = Some(w),
            Err(e) => {
                warn!(error = %e, reason = "host subscription", "pre-start path unavailable; new tasks are repaired after start");
                return;
            }
        }
        st.runtime = Some(runtime);
        st.first_listing(files.iter(), seen);
    }

    /// SIGHUP: `prestart.enabled` turned on starts the path, turned off stops it
    /// (`sandbox_dirs` and `follow` are read afresh by every follower).
    pub fn reconfigure(&self) {
        let running = self.inner.state().host_watch.is_some();
        match (self.inner.current.medic().config.prestart.enabled, running) {
            (true, false) => self.start(),
            (false, true) => {
                info!("pre-start path disabled: new tasks are repaired after start");
                self.stop();
            }
            _ => {}
        }
    }

    /// Docker's die or destroy of `container`: its namespace is no longer claimed (the
    /// inode may be reused by the next sandbox at once).
    pub fn forget_container(&self, container: &str) {
        self.inner.state().forget_container(container);
    }

    /// Stops the path (shutdown, or disabled): no new follower starts.
    pub fn stop(&self) {
        self.inner.state().host_watch = None;
    }

    /// Whether Docker's data root is still to be learnt (the path is on and it is unknown).
    pub fn wants_docker_root(&self) -> bool {
        self.inner.current.medic().config.prestart.enabled && self.inner.state().docker_root.is_none()
    }

    /// Docker's data root (`/info`): where a created container's record (its
    /// environment, hence its per-app policy) can be read before start.
    pub fn set_docker_root(&self, root: Option<PathBuf>) {
        self.inner.state().docker_root = root;
    }

    /// After a post-start pass: attach what the pre-start path did to each endpoint's
    /// report, and remember the namespace as configured. A repair counts as before
    /// start when it was verified before Docker's `start` event (`started`, its
    /// timestamp); a pass that ran before the event arrived counts it as before start.
    /// Not State.StartedAt: that is taken before the task's first instruction runs
    /// (measured: repairs verified after it were still seen by the task's first act).
    pub fn confirm(&self, out: &mut ContainerOutcome, started: Option<f64>) {
        let mut st = self.inner.state();
        if let Some(ns) = &out.netns {
            st.claim(ns.identity(), &out.workload.container_id, Instant::now());
        }
        for r in &mut out.reports {
            let Some(res) = st.take_result(&r.host_interface) else { continue };
            let post_start_also_wrote = r
                .actions
                .iter()
                .any(|a| a.fault == FaultKind::MacMismatch && a.result == crate::repair::ActionOutcome::Success);
            if !res.repaired || post_start_also_wrote {
                continue; // (a MAC the post-start pass wrote is counted as after_start there)
            }
            // The hook runs before the task's first instruction by construction.
            let before = res.path == StartPath::Hook || started.is_none_or(|start| res.repaired_at < start);
            r.repaired_before_start = before;
            let path = match (res.path, before) {
                (StartPath::Hook, _) => StartPath::Hook,
                (_, true) => StartPath::BeforeStart,
                (_, false) => StartPath::AfterStart,
            };
            self.inner.metrics.repaired_at_start(path, res.latency);
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
                path = path.as_str(),
                before_start_event_ms = started.map(|start| (start - res.repaired_at) * 1000.0),
                "confirmed after start: {}",
                if before { "repaired before start" } else { "repaired in the sandbox, but after Docker's start" }
            );
        }
    }
}

/// The follower thread (and the threads it starts) runs SCHED_RR at the lowest
/// real-time priority: on a host busy starting tasks, a follower must get the CPU
/// within Docker's 30–50 ms, and it needs only a few milliseconds of it per new
/// endpoint; every wait in it is bounded (`prestart.follow`), and the kernel's RT
/// throttling caps it anyway. Without CAP_SYS_NICE: nice −10, else as it is.
fn raise_priority() {
    match crate::kernel::sched::raise_current_thread_priority() {
        PriorityRaise::RealTime => {}
        PriorityRaise::Nice { realtime } => debug!(reason = %realtime, "pre-start: follower at nice -10"),
        PriorityRaise::Unchanged { realtime, nice } => {
            debug!(error = %realtime, reason = %nice, "pre-start: follower keeps its priority");
        }
    }
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

impl Inner {
    fn state(&self) -> MutexGuard<'_, Sandboxes> {
        self.sandboxes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A host notification about a link: maybe a new calico endpoint. Starts (or
    /// wakes) its follower. Cheap: runs in the subscription's reader.
    fn notice(self: &Arc<Self>, ifindex: u32, kind: ChangeKind) {
        if !matches!(kind, ChangeKind::Link | ChangeKind::Neighbour) || self.known.owns_host_link(ifindex) {
            return; // a known container's endpoint: the live watches cover it
        }
        if !self.current.medic().config.prestart.enabled {
            return;
        }
        let (notify, runtime) = {
            let mut st = self.state();
            let Some(runtime) = st.runtime.clone() else { return };
            let Some(notify) = st.follow(ifindex, Instant::now()) else { return };
            (notify, runtime)
        };
        let inner = self.clone();
        runtime.spawn(async move {
            if let Err(e) = inner.follow(ifindex, &notify).await {
                debug!(ifindex, error = %e, "pre-start: follower stopped");
            }
            inner.state().finished(ifindex, Instant::now());
        });
    }

    /// Every calico host veth on the host, as if each had just changed (after an
    /// overflow of the followers' subscription, or a new one): known links are skipped.
    fn rescan(self: &Arc<Self>) {
        let Some(runtime) = self.state().runtime.clone() else { return };
        let inner = self.clone();
        runtime.spawn(async move {
            let Ok(host) = Netlink::host() else { return };
            let Ok(links) = host.links().await else { return };
            let prefix = inner.current.medic().config.host_interface_prefix.clone();
            for l in links.iter().filter(|l| is_calico_host_veth(&l.name, &prefix)) {
                Inner::notice(&inner, l.index, ChangeKind::Link);
            }
        });
    }

    /// The followers' subscription stopped: subscribe again (off the dying reader),
    /// then rescan for what it missed meanwhile.
    fn resubscribe(self: &Arc<Self>) {
        let Some(runtime) = self.state().runtime.clone() else { return };
        let inner = self.clone();
        runtime.spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let prestart = Prestart { inner: inner.clone() };
            prestart.stop();
            prestart.start();
            Inner::rescan(&inner);
        });
    }

    /// The per-app policy of a created, not yet started container, from Docker's record.
    /// Read off the follower's thread and under `RECORD_DEADLINE`: a slow Docker disk
    /// must not stall the followers; no answer in time = policy unknown (left to the
    /// post-start pass).
    async fn created_policy(&self, id: Option<&str>) -> Option<Policy> {
        let id = id?;
        let root = self.state().docker_root.clone()?;
        let (dir, cid) = (root.clone(), id.to_string());
        let max = self.current.medic().config.limits.docker_record_bytes;
        let read = tokio::task::spawn_blocking(move || crate::docker::created_env(&dir, &cid, max));
        let env = match tokio::time::timeout(RECORD_DEADLINE, read).await {
            Ok(Ok(Ok(env))) => env,
            Ok(Ok(Err(e))) => {
                debug!(container = id, root = %root.display(), error = %e, "pre-start: no record of the container");
                return None;
            }
            Ok(Err(_)) | Err(_) => {
                debug!(container = id, root = %root.display(), "pre-start: the container's record not read in time");
                return None;
            }
        };
        Some(Policy::of_task(&env, &self.current.medic().config.marathon).0)
    }

    fn record(&self, host_interface: &str, result: PrestartResult) {
        self.state().record(host_interface, result, Instant::now());
    }
}
