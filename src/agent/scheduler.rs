//! The scheduler: one task that owns every container's state, turns notices into
//! queued passes, starts passes within the concurrency limit, and accounts them
//! when they report back. Its timers report back the same way (`Internal`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::budget::{restore_budget, restore_escalator, Clock, Pending};
use super::decide::{begin, decide, DecideCtx, PassPlan};
use super::pass::{run_pass, PassDone};
use super::state::{ContainerState, Trigger};
use crate::marathon::confirm::NotConfirmed;
use crate::marathon::{Escalator, KillOutcome, MarathonClient};
use crate::netlink::watch::Watch;
use crate::prestart::{Known, Prestart};
use crate::report::unix_now;
use crate::sources::watches::watch_host_links;
use crate::sources::{Notice, SourceCtx};

/// What the scheduler's own tasks (passes, timers, kills) and the daemon report.
pub(crate) enum Internal {
    PassDone(Box<PassDone>),
    /// A timer it set fired: queue the container.
    Due {
        id: String,
        trigger: Trigger,
    },
    /// A backed-off container's settle timer fired.
    SettleDue {
        id: String,
    },
    /// Marathon answered whether a kill's task is what the container claims.
    Confirmed {
        pending: Pending,
        result: Result<(), NotConfirmed>,
        client: Arc<MarathonClient>,
    },
    /// Marathon answered a kill.
    KillFinished {
        id: String,
        task: String,
        outcome: KillOutcome,
    },
    /// The configuration was reloaded.
    Reloaded,
}

pub(crate) struct Scheduler {
    pub(super) ctx: SourceCtx,
    pub(super) internal: mpsc::UnboundedSender<Internal>,
    pub(super) containers: HashMap<String, ContainerState>,
    /// Live subscriptions in containers' namespaces (one start each).
    pub(super) watches: HashMap<String, Watch>,
    /// Host `cali…` ifindex → container id.
    pub(super) host_links: HashMap<u32, String>,
    pub(super) host_watch: Option<Watch>,
    ready: VecDeque<String>,
    inflight: usize,
    limit: usize,
    watches_enabled: bool,
    pub(super) escalator: Escalator,
    /// The escalation core's clock (monotonic within the run).
    pub(super) clock: Clock,
    /// Docker's running list arrived at least once (the host can be known).
    pub(super) listed_once: bool,
    pub(super) known: Arc<Known>,
    pub(super) prestart: Prestart,
}

impl Scheduler {
    pub(crate) fn new(ctx: SourceCtx, internal: mpsc::UnboundedSender<Internal>) -> Scheduler {
        let medic = ctx.current.medic();
        let known = Arc::new(Known::default());
        let clock = Clock::start();
        let prestart = Prestart::new(ctx.current.clone(), ctx.metrics.clone(), known.clone());
        Scheduler {
            internal,
            containers: HashMap::new(),
            watches: HashMap::new(),
            host_links: HashMap::new(),
            host_watch: None,
            ready: VecDeque::new(),
            inflight: 0,
            limit: medic.config.max_concurrent_checks,
            watches_enabled: medic.config.watch,
            escalator: restore_escalator(&medic.config.marathon, clock.now()),
            clock,
            listed_once: false,
            known,
            prestart,
            ctx,
        }
    }

    /// Runs until `shutdown` flips; then waits for in-flight passes and closes every
    /// subscription (and with it every namespace reference).
    pub(crate) async fn run(
        mut self,
        mut notices: mpsc::UnboundedReceiver<Notice>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.start_host_watch();
        self.prestart.start();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                Some(n) = notices.recv() => self.on_notice(n),
                Some(i) = internal.recv() => self.on_internal(i),
            }
            self.dispatch();
        }
        if self.inflight > 0 {
            info!(passes = self.inflight, "shutting down: waiting for in-flight passes");
        }
        self.prestart.stop();
        while self.inflight > 0 {
            match internal.recv().await {
                Some(Internal::PassDone(_)) | None => self.inflight = self.inflight.saturating_sub(1),
                Some(_) => {}
            }
        }
        self.watches.clear();
        self.host_watch = None;
    }

    fn on_notice(&mut self, notice: Notice) {
        match notice {
            Notice::Started { id, unix_seconds } => self.enqueue(&id, Trigger::Started { unix_seconds }),
            Notice::CalicoNetwork { id, connect, unix_seconds } => {
                if connect {
                    self.containers.entry(id.clone()).or_default().calico_hint = true;
                }
                self.enqueue(&id, Trigger::DockerEvent { unix_seconds });
            }
            Notice::Died { id } => self.died(&id),
            Notice::Destroyed { id } => self.forget(&id),
            Notice::Listed { running } => self.listed(&running),
            Notice::Changed { id, pending, .. } => {
                pending.store(false, std::sync::atomic::Ordering::SeqCst);
                self.on_change(&id);
            }
            Notice::HostChanged { ifindex, kind } => {
                if let Some(id) = self.host_links.get(&ifindex).cloned() {
                    self.ctx.metrics.watch_event(kind);
                    self.on_change(&id);
                }
            }
            Notice::Overflow { id } => {
                self.ctx.metrics.watch_overflowed();
                let ids: Vec<String> = match id {
                    Some(id) => vec![id],
                    None => self.host_links.values().cloned().collect(),
                };
                self.enqueue_all(ids, Trigger::Recheck);
            }
            Notice::Lost { id: Some(id) } => {
                // The next pass sees no watch for this start and attaches a new one.
                self.watches.remove(&id);
                if let Some(st) = self.containers.get_mut(&id) {
                    st.watched_pid = None;
                    self.enqueue(&id, Trigger::Recheck);
                }
            }
            Notice::Lost { id: None } => {
                self.host_watch = None;
                self.start_host_watch();
            }
            Notice::DatastoreUp(_) => {
                let ids = self.ids_where(|st| st.endpoints.is_some() || st.calico_hint);
                self.enqueue_all(ids, Trigger::Resync);
            }
            Notice::DatastoreChanged { endpoints } => self.recheck_endpoints(&endpoints),
            Notice::Recheck { containers } => {
                let known = self.ids_where(|_| true);
                let ids = containers.into_iter().filter(|c| known.contains(c)).collect();
                self.enqueue_all(ids, Trigger::Recheck);
            }
            Notice::ProbeTick => {
                let ids = self.ids_where(|st| st.endpoints.is_some());
                self.enqueue_all(ids, Trigger::Probe);
            }
        }
    }

    fn on_internal(&mut self, event: Internal) {
        match event {
            Internal::PassDone(done) => {
                self.inflight = self.inflight.saturating_sub(1);
                self.finish_pass(*done);
            }
            Internal::Due { id, trigger } => {
                if self.containers.contains_key(&id) {
                    self.enqueue(&id, trigger);
                }
            }
            Internal::SettleDue { id } => self.settle(&id),
            Internal::Confirmed { pending, result, client } => self.confirmed(pending, result, client),
            Internal::KillFinished { id, task, outcome } => self.kill_finished(&id, &task, outcome),
            Internal::Reloaded => self.reloaded(),
        }
    }

    fn ids_where(&self, keep: impl Fn(&ContainerState) -> bool) -> Vec<String> {
        self.containers.iter().filter(|(_, st)| keep(st)).map(|(id, _)| id.clone()).collect()
    }

    /// Queues a container; one already queued is not queued twice, one running is
    /// re-run once after it finishes. Queued work counts for liveness until it ends.
    pub(super) fn enqueue(&mut self, id: &str, trigger: Trigger) {
        if self.containers.entry(id.to_string()).or_default().want(trigger) {
            self.ctx.health.work_added();
            self.ready.push_back(id.to_string());
        }
    }

    pub(super) fn requeue(&mut self, id: &str) {
        self.ctx.health.work_added();
        self.ready.push_back(id.to_string());
    }

    fn enqueue_all(&mut self, ids: Vec<String>, trigger: Trigger) {
        for id in ids {
            self.enqueue(&id, trigger);
        }
    }

    /// Starts queued passes up to `max_concurrent_checks` (a shrink takes effect as
    /// passes finish).
    fn dispatch(&mut self) {
        while self.inflight < self.limit {
            let Some(id) = self.ready.pop_front() else { return };
            let Some((plan, ticket)) = self.begin_pass(&id) else {
                self.ctx.health.work_done(false); // forgotten while queued
                continue;
            };
            let interrupt = self.containers[&id].interrupt.clone();
            let job = run_pass(self.ctx.current.medic(), id, plan, ticket, interrupt, self.ctx.clone());
            let internal = self.internal.clone();
            self.inflight += 1;
            tokio::spawn(async move {
                let done = job.await;
                let _ = internal.send(Internal::PassDone(Box::new(done)));
            });
        }
    }

    fn begin_pass(&mut self, id: &str) -> Option<(PassPlan, super::PassTicket)> {
        let medic = self.ctx.current.medic();
        let ctx = DecideCtx {
            dry_run: self.ctx.current.dry_run(),
            watches_enabled: self.watches_enabled,
            in_namespace_probes: !medic.config.probe.targets.is_empty(),
        };
        let st = self.containers.get_mut(id)?;
        let now = Instant::now();
        let plan = decide(st, &ctx, now);
        let ticket = begin(st, now);
        Some((plan, ticket))
    }

    /// Reports `internal` after `delay` (the scheduler never sleeps itself).
    pub(super) fn after(&self, delay: Duration, event: Internal) {
        let internal = self.internal.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = internal.send(event);
        });
    }

    /// Container died: its namespace is gone; a pass already running must not
    /// publish what it saw.
    fn died(&mut self, id: &str) {
        self.escalator.stopped(id);
        if let Some(st) = self.containers.get_mut(id) {
            st.died();
        }
        self.watches.remove(id);
        self.known.set_checked(id, false);
        self.prestart.forget_container(id);
        // A dead task holds no endpoint (Docker leaves its networks): one the
        // datastore keeps is an orphan.
        self.ctx.held.set(id, &[]);
        self.ctx.metrics.forget_container(id);
        self.refresh_gauges();
    }

    /// Container destroyed: forget its state, watch and metric series.
    fn forget(&mut self, id: &str) {
        if let Some(st) = self.containers.remove(id) {
            self.map_host_links(id, &st.host_ifindexes, &[]);
        }
        self.watches.remove(id);
        self.known.set_checked(id, false);
        self.prestart.forget_container(id);
        self.publish_held(id);
        self.escalator.forget(id);
        self.ctx.metrics.forget_container(id);
        self.refresh_gauges();
    }

    /// Docker's running list: forget containers it no longer lists; every running
    /// container gets a full pass (the safety net under events and watches).
    fn listed(&mut self, running: &[(String, bool)]) {
        self.listed_once = true;
        for (id, calico) in running {
            let st = self.containers.entry(id.clone()).or_default();
            st.calico_hint |= *calico && st.endpoints.is_none();
        }
        let stale = self.ids_where(|st| st.slot.is_idle());
        for id in stale.iter().filter(|id| !running.iter().any(|(r, _)| r == *id)) {
            self.forget(id);
        }
        self.ctx.held.set_complete(self.host_known());
        self.refresh_gauges();
        for (id, _) in running {
            self.enqueue(id, Trigger::Resync);
        }
        if self.prestart.wants_docker_root() {
            // The pre-start path reads each new container's policy from Docker's record.
            let (docker, prestart) = (self.ctx.current.medic().docker.clone(), self.prestart.clone());
            tokio::spawn(async move {
                match docker.root_dir().await {
                    Ok(root) => prestart.set_docker_root(root),
                    Err(e) => {
                        debug!(error = %e, "pre-start: Docker's data root unknown; policies before start unknown")
                    }
                }
            });
        }
    }

    /// Queues the containers holding these datastore endpoints, and those in their
    /// first pass (their endpoints are not known yet; a queued pass re-runs once it
    /// finishes), so a pass that read the datastore just before the change is not the
    /// last word.
    fn recheck_endpoints(&mut self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        // A changed record may hold another container's address (a duplicate, or one
        // no longer): those containers, and any found sharing one, are looked at too.
        let ips: Vec<std::net::Ipv4Addr> = match self.ctx.current.medic().datastore() {
            Some(ds) => ids.iter().flat_map(|id| ds.lookup(id).ipv4()).collect(),
            None => Vec::new(),
        };
        let containers = self.ids_where(|st| {
            st.endpoint_ids.iter().any(|e| ids.contains(e))
                || (st.endpoint_ids.is_empty() && !st.slot.is_idle())
                || st.ip_shared
                || st.endpoint_ips.iter().any(|ip| ips.contains(ip))
        });
        debug!(endpoints = ids.len(), containers = containers.len(), "datastore: endpoints changed; re-checking");
        self.enqueue_all(containers, Trigger::Resync);
    }

    /// A netlink change in (or at the host side of) a container's endpoint.
    fn on_change(&mut self, id: &str) {
        let settle = self.ctx.current.medic().config.backoff.clone();
        let Some(st) = self.containers.get_mut(id) else { return };
        if st.slot.is_running() {
            st.interrupt.notify_one();
        }
        let decision = st.backoff.on_change(Instant::now(), &settle);
        if decision.start_settle_timer {
            self.settle(id);
        }
        if decision.pass_now {
            self.enqueue(id, Trigger::Watch { unix_seconds: unix_now() });
        }
    }

    /// A backed-off container's namespace: once it has been quiet for `settle`, one
    /// repair is allowed, so a flapping endpoint is fixed as soon as it stops flapping.
    fn settle(&mut self, id: &str) {
        let Some(st) = self.containers.get_mut(id) else { return };
        match st.backoff.settle_check(Instant::now()) {
            super::Settle::WaitUntil(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                self.after(wait, Internal::SettleDue { id: id.to_string() });
            }
            super::Settle::AllowRepair => self.enqueue(id, Trigger::Recheck),
            super::Settle::Done => {}
        }
    }

    /// Records which host links belong to `id` (for the host watch and pre-start).
    pub(super) fn map_host_links(&mut self, id: &str, removed: &[u32], added: &[u32]) {
        for i in removed {
            if self.host_links.get(i).is_some_and(|owner| owner == id) {
                self.host_links.remove(i);
            }
        }
        for i in added {
            self.host_links.insert(*i, id.to_string());
        }
        self.known.map_host_links(removed, added);
    }

    /// One host-side subscription; notifications are mapped to containers by ifindex.
    fn start_host_watch(&mut self) {
        if !self.watches_enabled || self.host_watch.is_some() {
            return;
        }
        match watch_host_links(self.ctx.notices.clone()) {
            Ok(w) => self.host_watch = Some(w),
            Err(e) => warn!(error = %e, "host watch unavailable, relying on events and resyncs"),
        }
    }

    /// SIGHUP: applies every setting the scheduler holds itself.
    fn reloaded(&mut self) {
        let medic = self.ctx.current.medic();
        let limit = medic.config.max_concurrent_checks;
        if limit != self.limit {
            info!(old = self.limit, new = limit, "max_concurrent_checks: {} → {limit}", self.limit);
            self.limit = limit;
        }
        self.set_watches_enabled(medic.config.watch);
        self.prestart.reconfigure();
        self.escalator.replace_budget(restore_budget(&medic.config.marathon, self.clock.now()));
    }

    fn set_watches_enabled(&mut self, enabled: bool) {
        if std::mem::replace(&mut self.watches_enabled, enabled) == enabled {
            return;
        }
        if enabled {
            info!("watch: enabled; subscribing as containers are next checked");
            self.start_host_watch();
            let ids: Vec<String> = self.containers.keys().cloned().collect();
            self.enqueue_all(ids, Trigger::Resync);
        } else {
            info!("watch: disabled; closing every subscription");
            self.host_watch = None;
            self.watches.clear();
            for st in self.containers.values_mut() {
                st.watched_pid = None;
            }
        }
        self.refresh_gauges();
    }
}
