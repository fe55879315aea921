//! The daemon's scheduling: Docker events (`events`), netlink watches (`watches`),
//! periodic probes and resyncs feed a deduplicated per-container queue (`queue`);
//! bounded workers run the one pipeline (`Medic::run_interruptible`) and account
//! its result; containers that keep breaking are backed off (`backoff`).
//!
//! All per-container state, the host-link map and the host watch live in one
//! `Containers` value behind one lock, so there is no lock order to get wrong.
//! No lock is held across an `.await`.

mod backoff;
mod datastore;
mod escalation;
mod events;
mod prestart;
mod queue;
mod watches;

pub use backoff::{backoff_delay, AfterPass, Backoff, ChangeDecision, PassKind, Settle};
pub use queue::{PassTicket, Slot};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::MedicError;
use crate::http::Health;
use crate::marathon::{Escalator, Policy};
use crate::medic::{ContainerOutcome, Medic, Mode};
use crate::metrics::Metrics;
use crate::netlink::watch::Watch;
use crate::repair::ActionOutcome;

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
    slot: Slot,
    backoff: Backoff,
    /// Earliest break/event timestamp not yet answered by a verified repair.
    pending_event: Option<f64>,
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
    /// Docker endpoint ids of its calico endpoints (datastore changes find it by these).
    endpoint_ids: Vec<String>,
    /// Its policy as of its last pass (the per-policy gauge).
    policy: Option<Policy>,
    /// Docker's timestamp of its last start event (unix seconds).
    started_at: Option<f64>,
    /// The reports of its last pass when every endpoint was healthy and reachable,
    /// for the PID they were made for: a probe tick only re-probes these.
    last_healthy: Option<(u32, Vec<crate::report::EndpointReport>)>,
    /// A trigger other than a probe tick arrived since its last pass began.
    full_pass_wanted: bool,
}

/// Everything the agent knows per container, plus the host side's shared pieces.
#[derive(Default)]
struct Containers {
    by_id: HashMap<String, ContainerState>,
    /// Host `cali…` ifindex → container id.
    host_links: HashMap<u32, String>,
    host_watch: Option<Watch>,
    /// New endpoints followed before their task starts.
    sandboxes: prestart::Sandboxes,
}

impl Containers {
    fn unmap_host_links(&mut self, indexes: &[u32]) {
        for i in indexes {
            self.host_links.remove(i);
        }
    }

    /// (healthy, unhealthy, unknown endpoints, open watches).
    fn gauges(&self) -> (usize, usize, usize, usize) {
        let (mut healthy, mut total, mut unknown) = (0, 0, 0);
        let mut watches = usize::from(self.host_watch.is_some());
        for st in self.by_id.values() {
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
        (healthy, total - healthy, unknown, watches)
    }
}

pub struct Agent {
    medic: RwLock<Arc<Medic>>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    containers: Mutex<Containers>,
    /// Datastore bookkeeping (orphan suspects); unused without a datastore.
    datastore: datastore::DatastoreState,
    queue: mpsc::UnboundedSender<String>,
    queue_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    dry_run: AtomicBool,
    watches_enabled: AtomicBool,
    /// Passes allowed at once; `max_concurrent_checks`, resizable on reload.
    permits: Arc<Semaphore>,
    permit_limit: AtomicUsize,
    /// Escalation of unrepairable tasks to Marathon (its own lock; never held
    /// together with `containers`).
    escalator: Mutex<Escalator>,
    me: Weak<Agent>,
}

/// Ends a pass's liveness accounting on every path out of `process`.
struct WorkDone<'a> {
    health: &'a Health,
    progress: bool,
}

impl Drop for WorkDone<'_> {
    fn drop(&mut self) {
        self.health.work_done(self.progress);
    }
}

/// Runs one pass in its own task under `deadline`: a pass that overruns is aborted
/// (`Timeout`), one that panics is caught through its JoinError (`Panic`); either
/// way the caller gets an error and goes on.
pub async fn run_guarded<T: Send + 'static>(
    pass: impl std::future::Future<Output = Result<T, MedicError>> + Send + 'static,
    deadline: Duration,
    who: &str,
) -> Result<T, MedicError> {
    let task = tokio::spawn(pass);
    let abort = task.abort_handle();
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(join)) => {
            let why = match join.try_into_panic() {
                Ok(payload) => payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-text panic".into()),
                Err(join) => join.to_string(),
            };
            Err(MedicError::Panic(who.to_string(), why))
        }
        Err(_) => {
            abort.abort();
            Err(MedicError::timeout(format!("pass over {who}"), deadline))
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

impl Agent {
    pub fn new(medic: Medic, metrics: Arc<Metrics>, health: Arc<Health>, dry_run: bool) -> Arc<Agent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watches_enabled = medic.config.watch;
        let limit = medic.config.max_concurrent_checks;
        health.set_pass_timeout(medic.config.pass_timeout);
        Arc::new_cyclic(|me| Agent {
            medic: RwLock::new(Arc::new(medic)),
            metrics,
            health,
            containers: Mutex::new(Containers::default()),
            datastore: datastore::DatastoreState::default(),
            queue: tx,
            queue_rx: Mutex::new(Some(rx)),
            dry_run: AtomicBool::new(dry_run),
            watches_enabled: AtomicBool::new(watches_enabled),
            permits: Arc::new(Semaphore::new(limit)),
            permit_limit: AtomicUsize::new(limit),
            escalator: Mutex::new(Escalator::default()),
            me: me.clone(),
        })
    }

    pub fn medic(&self) -> Arc<Medic> {
        self.medic.read().unwrap().clone()
    }

    fn config(&self) -> Config {
        self.medic().config.clone()
    }

    fn containers(&self) -> MutexGuard<'_, Containers> {
        self.containers.lock().unwrap()
    }

    /// Swaps in a new pipeline (SIGHUP reload) and applies every setting the agent
    /// holds itself; in-flight passes finish on the old pipeline.
    pub fn replace_medic(&self, medic: Medic, dry_run: bool) {
        let watch = medic.config.watch;
        let limit = medic.config.max_concurrent_checks;
        self.health.set_pass_timeout(medic.config.pass_timeout);
        *self.medic.write().unwrap() = Arc::new(medic);
        self.dry_run.store(dry_run, Ordering::SeqCst);
        self.set_concurrency(limit);
        self.set_watches_enabled(watch);
        self.reconfigure_prestart();
    }

    /// Grows or shrinks the worker limit; a shrink takes effect as passes finish.
    fn set_concurrency(&self, limit: usize) {
        let old = self.permit_limit.swap(limit, Ordering::SeqCst);
        if limit > old {
            self.permits.add_permits(limit - old);
        } else if limit < old {
            let permits = self.permits.clone();
            let shrink = (old - limit) as u32;
            tokio::spawn(async move {
                if let Ok(p) = permits.acquire_many_owned(shrink).await {
                    p.forget();
                }
            });
        }
        if limit != old {
            // (the message keeps "max_concurrent_checks: 8 → 2": daemon_ops matches it)
            info!(setting = %"max_concurrent_checks", old, new = limit, "max_concurrent_checks: {old} → {limit}");
        }
    }

    pub fn is_ready(&self) -> bool {
        self.health.is_ready()
    }

    /// Progress-based liveness (what `/healthz` answers).
    pub fn liveness(&self) -> Result<(), String> {
        self.health.liveness()
    }

    /// Queues a container; one already queued is not queued twice, one running is
    /// re-run once after it finishes.
    pub fn enqueue(&self, container_id: &str, trigger: Trigger) {
        let send = {
            let mut c = self.containers();
            let st = c.by_id.entry(container_id.to_string()).or_default();
            match trigger {
                Trigger::DockerEvent { unix_seconds } | Trigger::Watch { unix_seconds } => {
                    st.pending_event = Some(st.pending_event.map_or(unix_seconds, |p| p.min(unix_seconds)));
                }
                Trigger::Started { unix_seconds } => {
                    st.pending_event = Some(unix_seconds);
                    st.started_at = Some(unix_seconds);
                }
                Trigger::Recheck => st.backoff.recheck_fired(),
                Trigger::Resync | Trigger::Probe => {}
            }
            st.full_pass_wanted |= !matches!(trigger, Trigger::Probe);
            st.slot.enqueue()
        };
        if send {
            self.send(container_id);
        }
    }

    /// Hands a container to the workers; it counts as pending work (liveness) until
    /// its pass ends.
    fn send(&self, container_id: &str) {
        self.health.work_added();
        if self.queue.send(container_id.to_string()).is_err() {
            self.health.work_done(false);
        }
    }

    /// Container destroyed: forget its state, watch and metric series.
    pub fn forget(&self, container_id: &str) {
        {
            let mut c = self.containers();
            if let Some(st) = c.by_id.remove(container_id) {
                c.unmap_host_links(&st.host_ifindexes);
            }
        }
        self.escalator.lock().unwrap().forget(container_id);
        self.metrics.forget_container(container_id);
        self.refresh_gauges();
    }

    /// Container died: its namespace is gone; a pass already running must not
    /// publish what it saw.
    pub fn died(&self, container_id: &str) {
        self.escalator.lock().unwrap().stopped(container_id);
        if let Some(st) = self.containers().by_id.get_mut(container_id) {
            st.slot.invalidate();
            st.endpoints = None;
            st.pending_event = None;
            st.watch = None;
        }
        self.metrics.forget_container(container_id);
        self.refresh_gauges();
    }

    fn refresh_gauges(&self) {
        let (healthy, unhealthy, unknown, watches) = self.containers().gauges();
        self.metrics.set_endpoint_states(healthy as i64, unhealthy as i64, unknown as i64);
        self.metrics.set_watches(watches);
        self.refresh_policy_gauges();
    }

    fn schedule(&self, id: &str, delay: Duration, trigger: Trigger) {
        let Some(agent) = self.me.upgrade() else { return };
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            agent.enqueue(&id, trigger);
        });
    }

    /// Runs the worker pool until `shutdown` flips; then waits for in-flight passes.
    pub async fn run_workers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut rx = self.queue_rx.lock().unwrap().take().expect("workers started once");
        self.start_host_watch();
        self.start_prestart();
        let mut inflight = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(id) = rx.recv() => {
                    let permit = self.permits.clone().acquire_owned().await.expect("semaphore open");
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
            info!(passes = inflight.len(), "shutting down: waiting for in-flight passes");
        }
        self.stop_prestart();
        while inflight.join_next().await.is_some() {}
        // Close every subscription (and with it every namespace reference).
        let mut c = self.containers();
        for st in c.by_id.values_mut() {
            st.watch = None;
        }
        c.host_watch = None;
    }

    /// One pass over one container: decide the mode, run the pipeline, account.
    /// Whatever happens (result, error, timeout, panic), the container is released
    /// and the pass leaves the liveness count.
    async fn process(self: &Arc<Self>, id: &str) {
        let mut done = WorkDone { health: &self.health, progress: false };
        // One snapshot per pass: a SIGHUP reload mid-pass cannot mix two configs.
        let medic = self.medic();
        let (mode, kind, ticket, interrupt, probe_only) = {
            let mut c = self.containers();
            let st = c.by_id.entry(id.to_string()).or_default();
            let ticket = st.slot.start();
            st.interrupt = Arc::new(Notify::new());
            let kind = st.backoff.begin_pass(Instant::now());
            let mode = match kind {
                _ if self.dry_run.load(Ordering::SeqCst) => Mode::DryRun,
                PassKind::BackedOff => Mode::BackedOff,
                PassKind::Repair => Mode::Repair,
            };
            let full_wanted = std::mem::take(&mut st.full_pass_wanted);
            // Only probe ticks since the last pass, which found everything healthy, and
            // the namespace it saw is still watched: re-probing is all there is to do.
            let probe_only = match (&st.last_healthy, &st.watch) {
                (Some((pid, reports)), Some((watched, _)))
                    if !full_wanted
                        && pid == watched
                        && kind == PassKind::Repair
                        && medic.config.probe.targets.is_empty()
                        && self.watches_enabled.load(Ordering::SeqCst) =>
                {
                    Some(reports.clone())
                }
                _ => None,
            };
            (mode, kind, ticket, st.interrupt.clone(), probe_only)
        };
        let deadline = medic.config.pass_timeout;
        if let Some(last) = probe_only {
            let probe = {
                let medic = medic.clone();
                async move { Ok::<_, MedicError>(medic.probe_healthy(&last).await) }
            };
            if let Ok(Some(reports)) = run_guarded(probe, deadline, id).await {
                done.progress = true;
                let current = {
                    let mut c = self.containers();
                    let Some(st) = c.by_id.get_mut(id) else { return };
                    let (current, again) = st.slot.finish(ticket);
                    if again {
                        self.send(id);
                    }
                    current
                };
                if current {
                    self.metrics.probe_only_pass();
                    self.metrics.record_reports(id, &reports);
                }
                return;
            }
            // An echo failed: the full pass finds out why (and repairs).
        }
        let pass = {
            let (medic, target) = (medic.clone(), id.to_string());
            async move { medic.run_interruptible(&target, mode, Some(&interrupt)).await }
        };
        let mut outcome = run_guarded(pass, deadline, id).await;
        if let Ok(out) = &mut outcome {
            self.note_prestart(out);
        }
        // A pass that ran out of time or panicked is no sign of progress.
        done.progress = !matches!(outcome, Err(MedicError::Timeout { .. } | MedicError::Panic(..)));
        let mut recheck_after = None;
        let mut new_watch_needed = None;
        let current = {
            let mut guard = self.containers();
            let c = &mut *guard;
            let Some(st) = c.by_id.get_mut(id) else { return };
            let (current, again) = st.slot.finish(ticket);
            if again {
                self.send(id);
            }
            if current {
                match &outcome {
                    Ok(out) => {
                        st.policy = Some(out.policy);
                        recheck_after = self.account(st, out, mode, kind, &medic.config);
                        let pid = out.workload.pid;
                        if self.watches_enabled.load(Ordering::SeqCst)
                            && st.watch.as_ref().map(|(p, _)| *p) != Some(pid)
                        {
                            new_watch_needed = Some(pid);
                        }
                        st.endpoint_ids = out.reports.iter().map(|r| r.endpoint_id.clone()).collect();
                        let all_well = !out.reports.is_empty()
                            && out.reports.iter().all(|r| r.healthy && r.reachable == Some(true) && r.error.is_none());
                        st.last_healthy =
                            (all_well && out.policy != Policy::Off).then(|| (out.workload.pid, out.reports.clone()));
                        let indexes: Vec<u32> = out.reports.iter().filter_map(|r| r.host_ifindex).collect();
                        if indexes != st.host_ifindexes {
                            let old = std::mem::replace(&mut st.host_ifindexes, indexes.clone());
                            c.unmap_host_links(&old);
                            for i in indexes {
                                c.host_links.insert(i, id.to_string());
                            }
                        }
                    }
                    Err(e) => self.account_error(st, id, e),
                }
            }
            current
        };
        if !current {
            debug!(container = %id, "container died during its pass; result discarded");
            return;
        }
        match &outcome {
            // Policy off: not checked, so in no per-container series.
            Ok(out) if out.policy == Policy::Off => self.metrics.forget_container(id),
            Ok(out) => self.metrics.record_reports(id, &out.reports),
            Err(e) if e.is_container_gone() => self.metrics.forget_container(id),
            Err(_) => {}
        }
        if let (Some(pid), Ok(out)) = (new_watch_needed, &outcome) {
            self.attach_watch(id, pid, out);
        }
        if let Ok(out) = &outcome {
            self.escalate_after_pass(id, out, mode, &medic);
        }
        drop(outcome); // closes the namespace handle
        self.refresh_gauges();
        if let Some(delay) = recheck_after {
            self.schedule(id, delay + Duration::from_millis(10), Trigger::Recheck);
        }
    }

    fn account_error(&self, st: &mut ContainerState, id: &str, e: &MedicError) {
        // A pass abandoned mid-way may have left a write half done: look again on the
        // next trigger with no stale state (endpoints unknown, no watch).
        st.endpoints = None;
        st.watch = None;
        st.last_healthy = None;
        if matches!(e, MedicError::NotRunning(_)) {
            // Connected but not started yet: latency counts from its start event.
            st.pending_event = None;
        }
        if e.is_container_gone() {
            debug!(container = %id, error = %e, "container went away during its pass");
        } else if e.is_not_ours() {
            st.calico_hint = false;
        } else {
            warn!(container = %id, error = %e, "cannot check container");
            self.metrics.check_error(e);
        }
    }

    /// Updates a container's state after a successful pass; returns when to re-check
    /// a backed-off container that is still broken.
    fn account(
        &self,
        st: &mut ContainerState,
        out: &ContainerOutcome,
        mode: Mode,
        kind: PassKind,
        cfg: &Config,
    ) -> Option<Duration> {
        if out.policy == Policy::Off {
            // Not checked: counted only by policy.
            st.endpoints = Some((0, 0));
            st.calico_hint = false;
            st.pending_event = None;
            return None;
        }
        let wrote = out.reports.iter().flat_map(|r| &r.actions).any(|a| a.result == ActionOutcome::Success);
        let healthy = out.reports.iter().filter(|r| r.healthy).count();
        let all_healthy = healthy == out.reports.len();
        let first_after_start = st.endpoints.is_none();
        st.endpoints = Some((healthy, out.reports.len()));
        st.calico_hint = false;
        if all_healthy {
            if let Some(ts) = st.pending_event.take() {
                if wrote {
                    self.metrics.repaired_after(unix_now() - ts);
                }
                let mac_fixed = |r: &crate::report::EndpointReport| {
                    r.actions.iter().any(|a| {
                        a.fault == crate::diagnose::FaultKind::MacMismatch && a.result == ActionOutcome::Success
                    })
                };
                if first_after_start {
                    for _ in out.reports.iter().filter(|r| mac_fixed(r)) {
                        let latency = unix_now() - ts;
                        self.metrics.repaired_at_start(crate::metrics::StartPath::AfterStart, latency);
                        let who = out.workload.identity();
                        debug!(
                            container = %crate::workload::Escaped(&who.container),
                            app = who.app.as_deref().map(crate::workload::Escaped).map(tracing::field::display),
                            task = who.task.as_deref().map(crate::workload::Escaped).map(tracing::field::display),
                            latency_ms = latency * 1000.0,
                            "repaired after start"
                        );
                    }
                }
            }
        }
        let kind = if mode == Mode::DryRun { PassKind::Repair } else { kind };
        let after = st.backoff.after_pass(Instant::now(), wrote, all_healthy, kind, &cfg.backoff);
        if let Some((repairs, delay)) = after.backed_off {
            let who = out.workload.identity();
            warn!(
                container = %crate::workload::Escaped(&who.container),
                app = who.app.as_deref().map(crate::workload::Escaped).map(tracing::field::display),
                task = who.task.as_deref().map(crate::workload::Escaped).map(tracing::field::display),
                repairs,
                window_ms = cfg.backoff.window.as_millis() as u64,
                delay_ms = delay.as_millis() as u64,
                "backing off: repairs paused for the delay or until it settles"
            );
        }
        after.recheck_in
    }

    /// Queues every running container; forgets containers Docker no longer lists.
    /// Every container gets a full pass (the safety net under events and watches);
    /// only probe ticks can be answered by the echo alone.
    pub async fn resync(&self) -> Result<usize, MedicError> {
        let docker = self.medic().docker.clone();
        let running = docker.running_containers().await?;
        if self.medic().config.prestart.enabled && self.containers().sandboxes.docker_root.is_none() {
            // The pre-start path reads each new container's policy from Docker's record.
            match docker.root_dir().await {
                Ok(root) => self.containers().sandboxes.docker_root = root,
                Err(e) => debug!(error = %e, "pre-start: Docker's data root unknown; policies before start unknown"),
            }
        }
        let stale: Vec<String> = {
            let mut c = self.containers();
            for (id, calico) in &running {
                let st = c.by_id.entry(id.clone()).or_default();
                st.calico_hint |= *calico && st.endpoints.is_none();
            }
            c.by_id
                .iter()
                .filter(|(k, s)| s.slot.is_idle() && !running.iter().any(|(id, _)| id == *k))
                .map(|(k, _)| k.clone())
                .collect()
        };
        for id in stale {
            self.forget(&id);
        }
        self.refresh_gauges();
        for (id, _) in &running {
            self.enqueue(id, Trigger::Resync);
        }
        self.metrics.resync_done(unix_now());
        Ok(running.len())
    }

    /// Periodic full resync (the safety net under events and watches).
    pub async fn resync_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let interval = self.config().resync_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            if self.health.is_ready() {
                if let Err(e) = self.resync().await {
                    warn!(error = %e, "periodic resync failed");
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
            let ids: Vec<String> =
                self.containers().by_id.iter().filter(|(_, s)| s.endpoints.is_some()).map(|(k, _)| k.clone()).collect();
            for id in ids {
                self.enqueue(&id, Trigger::Probe);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pass_that_overruns_or_panics_becomes_an_error() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<u32, MedicError>(1)
        };
        let started = Instant::now();
        let e = run_guarded(slow, Duration::from_millis(50), "abc").await.unwrap_err();
        assert_eq!(e.code(), "timeout");
        assert!(e.to_string().contains("pass over abc timed out after 50ms"), "{e}");
        assert!(started.elapsed() < Duration::from_millis(500));

        let boom = async {
            if std::hint::black_box(true) {
                panic!("index out of bounds");
            }
            Ok::<u32, MedicError>(1)
        };
        let e = run_guarded(boom, Duration::from_secs(5), "abc").await.unwrap_err();
        assert_eq!(e.code(), "panic");
        assert!(e.to_string().contains("index out of bounds"), "{e}");

        let ok = async { Ok::<u32, MedicError>(7) };
        assert_eq!(run_guarded(ok, Duration::from_secs(5), "abc").await.unwrap(), 7);
    }
}
