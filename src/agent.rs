//! The daemon: Docker events + periodic resync feed a deduplicated per-container
//! work queue; bounded workers run the shared pipeline; endpoints that keep breaking
//! are backed off. Scheduling only — the check/repair path is `Medic::run`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::docker::DockerClient;
use crate::error::MedicError;
use crate::medic::{Medic, Mode};
use crate::metrics::Metrics;
use crate::repair::ActionOutcome;

/// Why a container is being looked at; carries the trigger's own timestamp so
/// repair latency is measured from the event, not from when we got to it.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    Resync,
    DockerEvent { unix_seconds: f64 },
    Recheck,
}

#[derive(Default)]
struct ContainerState {
    queued: bool,
    running: bool,
    rerun: bool,
    /// Earliest event timestamp not yet answered by a verified repair.
    pending_event: Option<f64>,
    /// Times of recent passes that wrote repairs.
    recent_repairs: VecDeque<Instant>,
    backoff_level: u32,
    backoff_until: Option<Instant>,
    recheck_scheduled: bool,
    /// (healthy, total) endpoints after the last pass; None = not checked yet.
    endpoints: Option<(usize, usize)>,
    /// Known calico container (from a network-connect event) awaiting its first pass.
    calico_hint: bool,
}

pub struct Agent {
    medic: RwLock<Arc<Medic>>,
    pub metrics: Arc<Metrics>,
    states: Mutex<HashMap<String, ContainerState>>,
    queue: mpsc::UnboundedSender<String>,
    queue_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    ready: AtomicBool,
    dry_run: AtomicBool,
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

impl Agent {
    pub fn new(medic: Medic, metrics: Arc<Metrics>, dry_run: bool) -> Arc<Agent> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Agent {
            medic: RwLock::new(Arc::new(medic)),
            metrics,
            states: Mutex::new(HashMap::new()),
            queue: tx,
            queue_rx: Mutex::new(Some(rx)),
            ready: AtomicBool::new(false),
            dry_run: AtomicBool::new(dry_run),
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

    /// Queues a container; a container already queued or running is not queued twice
    /// (a running one is re-run once after it finishes).
    pub fn enqueue(&self, container_id: &str, trigger: Trigger) {
        let mut states = self.states.lock().unwrap();
        let st = states.entry(container_id.to_string()).or_default();
        if let Trigger::DockerEvent { unix_seconds } = trigger {
            st.pending_event = Some(st.pending_event.map_or(unix_seconds, |p| p.min(unix_seconds)));
        }
        if matches!(trigger, Trigger::Recheck) {
            st.recheck_scheduled = false;
        }
        if st.running {
            st.rerun = true;
            return;
        }
        if st.queued {
            return;
        }
        st.queued = true;
        let _ = self.queue.send(container_id.to_string());
    }

    /// Container destroyed: forget its state and metric series.
    pub fn forget(&self, container_id: &str) {
        self.states.lock().unwrap().remove(container_id);
        self.metrics.forget_container(container_id);
        self.update_endpoint_gauge();
    }

    fn update_endpoint_gauge(&self) {
        let states = self.states.lock().unwrap();
        let (mut healthy, mut total, mut unknown) = (0, 0, 0);
        for st in states.values() {
            match st.endpoints {
                Some((h, t)) => {
                    healthy += h;
                    total += t;
                }
                None if st.calico_hint => unknown += 1,
                None => {}
            }
        }
        self.metrics.set_endpoint_states(healthy as i64, (total - healthy) as i64, unknown as i64);
    }

    /// Runs the worker pool until `shutdown` flips; then waits for in-flight passes.
    pub async fn run_workers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut rx = self.queue_rx.lock().unwrap().take().expect("workers started once");
        let permits = Arc::new(Semaphore::new(self.config().max_concurrent_checks));
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
            info!("shutting down: waiting for {} in-flight repair(s)", inflight.len());
        }
        while inflight.join_next().await.is_some() {}
    }

    async fn process(self: &Arc<Self>, id: &str) {
        let cfg = self.config();
        let mode = {
            let mut states = self.states.lock().unwrap();
            let st = states.entry(id.to_string()).or_default();
            st.queued = false;
            st.running = true;
            if self.dry_run.load(Ordering::SeqCst) {
                Mode::DryRun
            } else if st.backoff_until.is_some_and(|t| t > Instant::now()) {
                Mode::BackedOff
            } else {
                Mode::Repair
            }
        };
        let medic = self.medic();
        let outcome = medic.run(id, mode).await;
        let mut recheck_after = None;
        {
            let mut states = self.states.lock().unwrap();
            let Some(st) = states.get_mut(id) else { return };
            st.running = false;
            match &outcome {
                Ok(out) => {
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
                            let delay = backoff_delay(&cfg, st.backoff_level);
                            st.backoff_until = Some(now + delay);
                            warn!(
                                "backing off {}: {} repairs within {:?}; next repair in {:?}",
                                out.workload.describe(),
                                st.recent_repairs.len(),
                                cfg.backoff.window,
                                delay
                            );
                        }
                    } else if st.recent_repairs.is_empty() && st.backoff_until.is_none_or(|t| t <= now) {
                        st.backoff_level = 0;
                        st.backoff_until = None;
                    }
                    if !all_healthy && mode == Mode::BackedOff && !st.recheck_scheduled {
                        if let Some(until) = st.backoff_until {
                            st.recheck_scheduled = true;
                            recheck_after = Some(until.saturating_duration_since(now));
                        }
                    }
                }
                Err(e) if e.is_container_gone() => {
                    debug!("container {id} went away during its check: {e}");
                    st.endpoints = None;
                }
                Err(MedicError::NotCalico { .. } | MedicError::HostNetwork(_) | MedicError::SharedNetwork { .. }) => {
                    st.endpoints = None;
                    st.calico_hint = false;
                }
                Err(e) => {
                    warn!("cannot check container {id}: {e}");
                    self.metrics.check_errors.with_label_values(&[e.code()]).inc();
                    st.endpoints = None;
                }
            }
            if st.rerun {
                st.rerun = false;
                st.queued = true;
                let _ = self.queue.send(id.to_string());
            }
        }
        if let Ok(out) = &outcome {
            self.metrics.record_reports(id, &out.reports);
        }
        self.update_endpoint_gauge();
        if let Some(delay) = recheck_after {
            let agent = self.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(delay + Duration::from_millis(10)).await;
                agent.enqueue(&id, Trigger::Recheck);
            });
        }
    }

    /// Queues every running container; forgets containers Docker no longer lists.
    pub async fn resync(&self, docker: &DockerClient) -> Result<usize, MedicError> {
        let ids = docker.running_container_ids().await?;
        let stale: Vec<String> = {
            let states = self.states.lock().unwrap();
            states.keys().filter(|k| !ids.contains(k)).cloned().collect()
        };
        for id in stale {
            let running = self.states.lock().unwrap().get(&id).is_some_and(|s| s.running || s.queued);
            if !running {
                self.forget(&id);
            }
        }
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
            let medic = self.medic();
            let docker = medic.docker.clone();
            if let Err(e) = docker.ping().await {
                self.metrics.docker_up.set(0);
                warn!("{e}; retrying in {retry:?}");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = shutdown.changed() => return,
                }
                retry = (retry * 2).min(Duration::from_secs(10));
                continue;
            }
            retry = Duration::from_millis(250);
            if connected_before {
                self.metrics.docker_reconnects.inc();
                info!("reconnected to Docker at {}", docker.endpoint());
            }
            connected_before = true;
            // Subscribe from a moment ago so nothing between the resync's list and
            // the stream's start is lost; duplicates are absorbed by the queue.
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
        self.metrics.docker_events.with_label_values(&[&typ, &action]).inc();
        let actor = ev.actor.clone().unwrap_or_default();
        let attrs = actor.attributes.unwrap_or_default();
        let ts = ev.time_nano.map(|n| n as f64 / 1e9).or(ev.time.map(|t| t as f64)).unwrap_or_else(unix_now);
        let trigger = Trigger::DockerEvent { unix_seconds: ts };
        match (typ.as_str(), action.as_str()) {
            ("container", "start" | "restart") => {
                if let Some(id) = actor.id {
                    self.enqueue(&id, trigger);
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
                    }
                    self.metrics.forget_container(&id);
                    self.update_endpoint_gauge();
                }
            }
            ("network", "connect" | "disconnect") => {
                let is_calico =
                    attrs.get("type").is_some_and(|t| self.medic().config.calico_drivers.iter().any(|d| d == t));
                if let (true, Some(id)) = (is_calico, attrs.get("container")) {
                    if action == "connect" {
                        self.states.lock().unwrap().entry(id.clone()).or_default().calico_hint = true;
                    }
                    self.enqueue(id, trigger);
                }
            }
            _ => {}
        }
    }

    /// Periodic full resync (the safety net under events).
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
        assert_eq!(backoff_delay(&cfg, 1), Duration::from_secs(2));
        assert_eq!(backoff_delay(&cfg, 2), Duration::from_secs(4));
        assert_eq!(backoff_delay(&cfg, 30), cfg.backoff.max);
    }
}
