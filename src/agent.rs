//! The daemon: Docker events, netlink watches, periodic probes and resyncs feed a
//! deduplicated per-container work queue; bounded workers run the shared pipeline
//! (`Medic::run`); containers that keep breaking are backed off. Scheduling only.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::docker::DockerClient;
use crate::error::MedicError;
use crate::medic::{ContainerOutcome, Medic, Mode};
use crate::metrics::Metrics;
use crate::repair::ActionOutcome;
use crate::watch::{watch_host, watch_netns, Watch, WatchEvent};

/// Why a container is being looked at. Event-like triggers carry their own
/// timestamp so repair latency is measured from the break, not from the pass.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Resync,
    Probe,
    Recheck,
    DockerEvent {
        unix_seconds: f64,
    },
    /// The container (re)started: nothing could be repaired before this moment.
    Started {
        unix_seconds: f64,
    },
    Watch {
        unix_seconds: f64,
    },
}

#[derive(Default)]
struct ContainerState {
    queued: bool,
    running: bool,
    rerun: bool,
    /// Earliest break/event timestamp not yet answered by a verified repair.
    pending_event: Option<f64>,
    /// Times of recent passes that wrote repairs.
    recent_repairs: VecDeque<Instant>,
    backoff_level: u32,
    backoff_until: Option<Instant>,
    recheck_scheduled: bool,
    /// While backed off: the namespace counts as settled once no change arrived until then.
    quiet_deadline: Option<Instant>,
    settle_scheduled: bool,
    /// One repair is allowed despite backoff (the namespace settled).
    allow_once: bool,
    /// When the last backed-off pass started: while backed off, changes trigger at
    /// most one (report-only) pass per second; the settle timer does the repair.
    last_backed_off_pass: Option<Instant>,
    /// (healthy, total) endpoints after the last pass; None = not checked yet.
    endpoints: Option<(usize, usize)>,
    /// Known calico container (from a network-connect event) awaiting its first pass.
    calico_hint: bool,
    /// Live subscription in the container's namespace, for one start (PID) of it.
    watch: Option<(u32, Watch)>,
    /// Host-side interface indexes of its endpoints (for the host watch).
    host_ifindexes: Vec<u32>,
    /// Fired when its namespace changes during a pass: cuts that pass's probes short.
    interrupt: Arc<Notify>,
}

impl ContainerState {
    fn backed_off(&self, now: Instant) -> bool {
        self.backoff_until.is_some_and(|t| t > now)
    }
}

pub struct Agent {
    medic: RwLock<Arc<Medic>>,
    pub metrics: Arc<Metrics>,
    states: Mutex<HashMap<String, ContainerState>>,
    /// Host `cali…` ifindex → container id.
    host_links: Mutex<HashMap<u32, String>>,
    host_watch: Mutex<Option<Watch>>,
    queue: mpsc::UnboundedSender<String>,
    queue_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    ready: AtomicBool,
    dry_run: AtomicBool,
    watches_enabled: bool,
    me: Weak<Agent>,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

impl Agent {
    pub fn new(medic: Medic, metrics: Arc<Metrics>, dry_run: bool) -> Arc<Agent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watches_enabled = medic.config.watch;
        Arc::new_cyclic(|me| Agent {
            medic: RwLock::new(Arc::new(medic)),
            metrics,
            states: Mutex::new(HashMap::new()),
            host_links: Mutex::new(HashMap::new()),
            host_watch: Mutex::new(None),
            queue: tx,
            queue_rx: Mutex::new(Some(rx)),
            ready: AtomicBool::new(false),
            dry_run: AtomicBool::new(dry_run),
            watches_enabled,
            me: me.clone(),
        })
    }

    pub fn medic(&self) -> Arc<Medic> {
        self.medic.read().unwrap().clone()
    }

    fn config(&self) -> Config {
        self.medic().config.clone()
    }

    /// Swaps in a new pipeline (SIGHUP reload); in-flight passes finish on the old one.
    pub fn replace_medic(&self, medic: Medic, dry_run: bool) {
        *self.medic.write().unwrap() = Arc::new(medic);
        self.dry_run.store(dry_run, Ordering::SeqCst);
    }

    /// Ready once Docker is connected and the first full resync is done.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.metrics.docker_up.get() == 1
    }

    /// Queues a container; one already queued is not queued twice, one running is
    /// re-run once after it finishes.
    pub fn enqueue(&self, container_id: &str, trigger: Trigger) {
        let mut states = self.states.lock().unwrap();
        let st = states.entry(container_id.to_string()).or_default();
        match trigger {
            Trigger::DockerEvent { unix_seconds } | Trigger::Watch { unix_seconds } => {
                st.pending_event = Some(st.pending_event.map_or(unix_seconds, |p| p.min(unix_seconds)));
            }
            Trigger::Started { unix_seconds } => st.pending_event = Some(unix_seconds),
            Trigger::Recheck => st.recheck_scheduled = false,
            Trigger::Resync | Trigger::Probe => {}
        }
        if st.running {
            st.rerun = true;
        } else if !st.queued {
            st.queued = true;
            let _ = self.queue.send(container_id.to_string());
        }
    }

    /// Container destroyed: forget its state, watch and metric series.
    pub fn forget(&self, container_id: &str) {
        if let Some(st) = self.states.lock().unwrap().remove(container_id) {
            self.unmap_host_links(&st.host_ifindexes);
        }
        self.metrics.forget_container(container_id);
        self.refresh_gauges();
    }

    fn unmap_host_links(&self, indexes: &[u32]) {
        let mut links = self.host_links.lock().unwrap();
        for i in indexes {
            links.remove(i);
        }
    }

    fn refresh_gauges(&self) {
        let states = self.states.lock().unwrap();
        let (mut healthy, mut total, mut unknown, mut watches) = (0, 0, 0, 0);
        for st in states.values() {
            match st.endpoints {
                Some((h, t)) => {
                    healthy += h;
                    total += t;
                }
                None if st.calico_hint => unknown += 1,
                None => {}
            }
            watches += usize::from(st.watch.is_some());
        }
        drop(states);
        watches += usize::from(self.host_watch.lock().unwrap().is_some());
        self.metrics.set_endpoint_states(healthy as i64, (total - healthy) as i64, unknown as i64);
        self.metrics.watches.set(watches as i64);
    }

    fn schedule(&self, id: &str, delay: Duration, trigger: Trigger) {
        let Some(agent) = self.me.upgrade() else { return };
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            agent.enqueue(&id, trigger);
        });
    }

    /// A netlink change in (or at the host side of) a container's endpoint.
    fn on_change(&self, id: &str, kind: &str) {
        self.metrics.watch_events.with_label_values(&[kind]).inc();
        let settle = self.medic().config.backoff.settle;
        {
            let mut states = self.states.lock().unwrap();
            let Some(st) = states.get_mut(id) else { return };
            if st.running {
                st.interrupt.notify_one();
            }
            let now = Instant::now();
            if st.backed_off(now) {
                // Still changing: push the settle point out; repair once it holds.
                st.quiet_deadline = Some(now + settle);
                if !st.settle_scheduled {
                    st.settle_scheduled = true;
                    let Some(agent) = self.me.upgrade() else { return };
                    let id = id.to_string();
                    tokio::spawn(async move { agent.settle(id).await });
                }
                if st.last_backed_off_pass.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
                    return;
                }
            }
        }
        self.enqueue(id, Trigger::Watch { unix_seconds: unix_now() });
    }

    /// Waits until a backed-off container's namespace has been quiet for `settle`,
    /// then allows one repair: a flapping endpoint is fixed as soon as it stops flapping.
    async fn settle(self: Arc<Self>, id: String) {
        loop {
            let deadline = {
                let states = self.states.lock().unwrap();
                match states.get(&id).and_then(|s| s.quiet_deadline) {
                    Some(d) => d,
                    None => return,
                }
            };
            let now = Instant::now();
            if deadline > now {
                tokio::time::sleep(deadline - now).await;
                continue;
            }
            {
                let mut states = self.states.lock().unwrap();
                let Some(st) = states.get_mut(&id) else { return };
                if st.quiet_deadline.is_some_and(|d| d > Instant::now()) {
                    continue;
                }
                st.settle_scheduled = false;
                st.quiet_deadline = None;
                st.allow_once = true;
            }
            self.enqueue(&id, Trigger::Recheck);
            return;
        }
    }

    fn on_watch_event(&self, id: &str, event: WatchEvent) {
        match event {
            WatchEvent::Changed(change) => self.on_change(id, change.kind.as_str()),
            WatchEvent::Overflow => self.on_overflow(&[id.to_string()]),
        }
    }

    /// A watch socket overflowed: changes were lost, so re-check everything it covers.
    fn on_overflow(&self, ids: &[String]) {
        self.metrics.watch_overflows.inc();
        for id in ids {
            self.enqueue(id, Trigger::Recheck);
        }
    }

    /// One host-side subscription; notifications are mapped to containers by ifindex.
    fn start_host_watch(&self) {
        if !self.watches_enabled || self.host_watch.lock().unwrap().is_some() {
            return;
        }
        let me = self.me.clone();
        let result = watch_host(move |event| {
            let Some(agent) = me.upgrade() else { return };
            match event {
                WatchEvent::Changed(change) => {
                    let owner = change.ifindex.and_then(|i| agent.host_links.lock().unwrap().get(&i).cloned());
                    if let Some(id) = owner {
                        agent.on_change(&id, change.kind.as_str());
                    }
                }
                WatchEvent::Overflow => {
                    let ids: Vec<String> = agent.host_links.lock().unwrap().values().cloned().collect();
                    agent.on_overflow(&ids);
                }
            }
        });
        match result {
            Ok(w) => *self.host_watch.lock().unwrap() = Some(w),
            Err(e) => warn!("host watch unavailable, relying on events and resyncs: {e}"),
        }
    }

    /// Runs the worker pool until `shutdown` flips; then waits for in-flight passes.
    pub async fn run_workers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut rx = self.queue_rx.lock().unwrap().take().expect("workers started once");
        let permits = Arc::new(Semaphore::new(self.config().max_concurrent_checks));
        self.start_host_watch();
        let mut inflight = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(id) = rx.recv() => {
                    let permit = permits.clone().acquire_owned().await.expect("semaphore open");
                    let agent = self.clone();
                    inflight.spawn(async move {
                        agent.process(&id).await;
                        drop(permit);
                    });
                }
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
            }
        }
        if !inflight.is_empty() {
            info!("shutting down: waiting for {} in-flight pass(es)", inflight.len());
        }
        while inflight.join_next().await.is_some() {}
        // Close every subscription (and with it every namespace reference).
        for st in self.states.lock().unwrap().values_mut() {
            st.watch = None;
        }
        *self.host_watch.lock().unwrap() = None;
    }

    async fn process(self: &Arc<Self>, id: &str) {
        // One snapshot per pass: a SIGHUP reload mid-pass cannot mix two configs.
        let medic = self.medic();
        let cfg = &medic.config;
        let (mode, interrupt) = {
            let mut states = self.states.lock().unwrap();
            let st = states.entry(id.to_string()).or_default();
            st.queued = false;
            st.running = true;
            st.interrupt = Arc::new(Notify::new());
            let mode = if self.dry_run.load(Ordering::SeqCst) {
                Mode::DryRun
            } else if st.backed_off(Instant::now()) && !std::mem::take(&mut st.allow_once) {
                st.last_backed_off_pass = Some(Instant::now());
                Mode::BackedOff
            } else {
                Mode::Repair
            };
            (mode, st.interrupt.clone())
        };
        let outcome = medic.run_interruptible(id, mode, Some(&interrupt)).await;
        let mut recheck_after = None;
        let mut new_watch_needed = None;
        {
            let mut states = self.states.lock().unwrap();
            let Some(st) = states.get_mut(id) else { return };
            st.running = false;
            match &outcome {
                Ok(out) => {
                    recheck_after = self.account(st, out, mode, cfg);
                    let pid = out.workload.pid;
                    if self.watches_enabled && st.watch.as_ref().map(|(p, _)| *p) != Some(pid) {
                        new_watch_needed = Some(pid);
                    }
                    let indexes: Vec<u32> = out.reports.iter().filter_map(|r| r.host_ifindex).collect();
                    if indexes != st.host_ifindexes {
                        self.unmap_host_links(&st.host_ifindexes);
                        let mut links = self.host_links.lock().unwrap();
                        for i in &indexes {
                            links.insert(*i, id.to_string());
                        }
                        st.host_ifindexes = indexes;
                    }
                }
                Err(e) => {
                    st.endpoints = None;
                    st.watch = None;
                    if matches!(e, MedicError::NotRunning(_)) {
                        // Connected but not started yet: latency counts from its start event.
                        st.pending_event = None;
                    }
                    match e {
                        _ if e.is_container_gone() => debug!("container {id} went away during its pass: {e}"),
                        MedicError::NotCalico { .. }
                        | MedicError::HostNetwork(_)
                        | MedicError::SharedNetwork { .. } => {
                            st.calico_hint = false;
                        }
                        _ => {
                            warn!("cannot check container {id}: {e}");
                            self.metrics.check_errors.with_label_values(&[e.code()]).inc();
                        }
                    }
                }
            }
            if st.rerun {
                st.rerun = false;
                st.queued = true;
                let _ = self.queue.send(id.to_string());
            }
        }
        match &outcome {
            Ok(out) => self.metrics.record_reports(id, &out.reports),
            Err(e) if e.is_container_gone() => self.metrics.forget_container(id),
            Err(_) => {}
        }
        if let (Some(pid), Ok(out)) = (new_watch_needed, &outcome) {
            self.attach_watch(id, pid, out);
        }
        drop(outcome); // closes the namespace handle
        self.refresh_gauges();
        if let Some(delay) = recheck_after {
            self.schedule(id, delay + Duration::from_millis(10), Trigger::Recheck);
        }
    }

    /// Opens the live subscription for this start of the container.
    fn attach_watch(&self, id: &str, pid: u32, out: &ContainerOutcome) {
        let me = self.me.clone();
        let owner = id.to_string();
        match watch_netns(&out.netns, move |event| {
            if let Some(agent) = me.upgrade() {
                agent.on_watch_event(&owner, event);
            }
        }) {
            Ok(w) => {
                if let Some(st) = self.states.lock().unwrap().get_mut(id) {
                    st.watch = Some((pid, w));
                }
            }
            Err(e) => warn!("cannot watch {}: {e}", out.workload.describe()),
        }
    }

    /// Updates a container's state after a successful pass; returns when to re-check
    /// a backed-off container that is still broken.
    fn account(&self, st: &mut ContainerState, out: &ContainerOutcome, mode: Mode, cfg: &Config) -> Option<Duration> {
        let wrote = out.reports.iter().flat_map(|r| &r.actions).any(|a| a.result == ActionOutcome::Success);
        let healthy = out.reports.iter().filter(|r| r.healthy).count();
        let all_healthy = healthy == out.reports.len();
        st.endpoints = Some((healthy, out.reports.len()));
        st.calico_hint = false;
        if all_healthy {
            if let Some(ts) = st.pending_event.take() {
                if wrote {
                    self.metrics.repair_latency.observe((unix_now() - ts).max(0.0));
                }
            }
        }
        let now = Instant::now();
        while st.recent_repairs.front().is_some_and(|t| now.duration_since(*t) > cfg.backoff.window) {
            st.recent_repairs.pop_front();
        }
        if wrote {
            st.recent_repairs.push_back(now);
            if st.recent_repairs.len() as u32 >= cfg.backoff.max_repairs {
                st.backoff_level += 1;
                let delay = backoff_delay(cfg, st.backoff_level);
                st.backoff_until = Some(now + delay);
                warn!(
                    "backing off {}: {} repairs within {:?}; repairs paused for {:?} or until it settles",
                    out.workload.describe(),
                    st.recent_repairs.len(),
                    cfg.backoff.window,
                    delay
                );
            }
        } else if st.recent_repairs.is_empty() && !st.backed_off(now) {
            st.backoff_level = 0;
            st.backoff_until = None;
        }
        if !all_healthy && mode == Mode::BackedOff && !st.recheck_scheduled {
            if let Some(until) = st.backoff_until {
                st.recheck_scheduled = true;
                return Some(until.saturating_duration_since(now));
            }
        }
        None
    }

    /// Queues every running container; forgets containers Docker no longer lists.
    pub async fn resync(&self, docker: &DockerClient) -> Result<usize, MedicError> {
        let running = docker.running_containers().await?;
        let ids: Vec<&String> = running.iter().map(|(id, _)| id).collect();
        let stale: Vec<String> = {
            let mut states = self.states.lock().unwrap();
            for (id, calico) in &running {
                let st = states.entry(id.clone()).or_default();
                st.calico_hint |= *calico && st.endpoints.is_none();
            }
            states.iter().filter(|(k, s)| !ids.contains(k) && !s.running && !s.queued).map(|(k, _)| k.clone()).collect()
        };
        for id in stale {
            self.forget(&id);
        }
        self.refresh_gauges();
        for id in &ids {
            self.enqueue(id, Trigger::Resync);
        }
        self.metrics.resyncs.inc();
        self.metrics.last_resync.set(unix_now());
        Ok(ids.len())
    }

    /// Follows Docker events forever: reconnects with backoff, resumes from the last
    /// event seen, and resyncs after every (re)connect.
    pub async fn follow_docker(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut since: Option<String> = None;
        let mut retry = Duration::from_millis(250);
        let mut connected_before = false;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let docker = self.medic().docker.clone();
            if let Err(e) = docker.ping().await {
                self.metrics.docker_up.set(0);
                warn!("{e}; retrying in {retry:?}");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = shutdown.changed() => return,
                }
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            }
            retry = Duration::from_millis(250);
            if connected_before {
                self.metrics.docker_reconnects.inc();
                info!("reconnected to Docker at {}", docker.endpoint());
            }
            connected_before = true;
            // Subscribe from a moment ago (or from the last event seen) so nothing between
            // the resync's list and the stream's start is lost; the queue absorbs duplicates.
            let start_from = since.clone().unwrap_or_else(|| format!("{:.9}", unix_now() - 1.0));
            let mut events = Box::pin(docker.events(Some(start_from)));
            self.metrics.docker_up.set(1);
            match self.resync(&docker).await {
                Ok(n) => {
                    info!("resync: {n} running container(s) queued");
                    self.ready.store(true, Ordering::SeqCst);
                }
                Err(e) => warn!("resync failed: {e}"),
            }
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    ev = events.next() => match ev {
                        Some(Ok(ev)) => {
                            if let Some(n) = ev.time_nano {
                                since = Some(format!("{}.{:09}", n / 1_000_000_000, n % 1_000_000_000));
                            }
                            self.handle_event(&ev);
                        }
                        Some(Err(e)) => {
                            warn!("docker event stream error: {e}");
                            break;
                        }
                        None => {
                            warn!("docker event stream ended (dockerd restarting?)");
                            break;
                        }
                    }
                }
            }
            self.metrics.docker_up.set(0);
        }
    }

    fn handle_event(&self, ev: &bollard::models::EventMessage) {
        let typ = ev.typ.map(|t| t.to_string()).unwrap_or_default();
        let action = ev.action.clone().unwrap_or_default();
        // Exec events carry the command in the action ("exec_start: sh -c …"): keep labels bounded.
        let action_label = action.split(':').next().unwrap_or_default().to_string();
        self.metrics.docker_events.with_label_values(&[&typ, &action_label]).inc();
        let actor = ev.actor.clone().unwrap_or_default();
        let attrs = actor.attributes.unwrap_or_default();
        let ts = ev.time_nano.map(|n| n as f64 / 1e9).or(ev.time.map(|t| t as f64)).unwrap_or_else(unix_now);
        let trigger = Trigger::DockerEvent { unix_seconds: ts };
        debug!("docker event {typ} {action_label} {:?} ({:.1} ms old)", actor.id, (unix_now() - ts) * 1000.0);
        match (typ.as_str(), action.as_str()) {
            ("container", "start" | "restart") => {
                if let Some(id) = actor.id {
                    self.enqueue(&id, Trigger::Started { unix_seconds: ts });
                }
            }
            ("container", "destroy") => {
                if let Some(id) = actor.id {
                    self.forget(&id);
                }
            }
            ("container", "die") => {
                if let Some(id) = actor.id {
                    if let Some(st) = self.states.lock().unwrap().get_mut(&id) {
                        st.endpoints = None;
                        st.pending_event = None;
                        st.watch = None;
                    }
                    self.metrics.forget_container(&id);
                    self.refresh_gauges();
                }
            }
            ("network", "connect" | "disconnect") => {
                let calico = attrs.get("type").is_some_and(|t| self.medic().config.calico_drivers.contains(t));
                if let (true, Some(id)) = (calico, attrs.get("container")) {
                    if action == "connect" {
                        self.states.lock().unwrap().entry(id.clone()).or_default().calico_hint = true;
                    }
                    self.enqueue(id, trigger);
                }
            }
            _ => {}
        }
    }

    /// Periodic full resync (the safety net under events and watches).
    pub async fn resync_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let interval = self.config().resync_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            if self.metrics.docker_up.get() == 1 {
                let docker = self.medic().docker.clone();
                if let Err(e) = self.resync(&docker).await {
                    warn!("periodic resync failed: {e}");
                }
            }
        }
    }

    /// Re-checks (and so re-probes) every known calico container every
    /// `probe.interval`, with ±10% jitter so hosts do not probe in lockstep.
    pub async fn probe_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let probe = self.config().probe;
            let wait = probe.interval.mul_f64(0.9 + 0.2 * rand::random::<f64>());
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            if !probe.enabled {
                continue;
            }
            let ids: Vec<String> = {
                let states = self.states.lock().unwrap();
                states.iter().filter(|(_, s)| s.endpoints.is_some()).map(|(k, _)| k.clone()).collect()
            };
            for id in ids {
                self.enqueue(&id, Trigger::Probe);
            }
        }
    }
}

/// initial · 2^(level-1), capped at max.
pub fn backoff_delay(cfg: &Config, level: u32) -> Duration {
    let factor = 2u32.saturating_pow(level.saturating_sub(1).min(20));
    cfg.backoff.initial.saturating_mul(factor).min(cfg.backoff.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let cfg = Config::default();
        assert_eq!(backoff_delay(&cfg, 1), cfg.backoff.initial);
        assert_eq!(backoff_delay(&cfg, 2), cfg.backoff.initial * 2);
        assert_eq!(backoff_delay(&cfg, 30), cfg.backoff.max);
    }
}
