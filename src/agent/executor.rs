//! The executor: applies what `decide::account` says a finished pass means —
//! metrics, watches, host links, re-checks, escalation (the kill in its own task).

use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::decide::{account, AccountCtx, Effect, Outcome};
use super::pass::{PassDone, PassResult};
use super::scheduler::{Internal, Scheduler};
use super::state::{endpoint_gauges, Trigger};
use crate::marathon::Policy;
use crate::metrics::StartPath;
use crate::netlink::watch::Watch;
use crate::report::{unix_now, EndpointReport};
use crate::workload::Escaped;

impl Scheduler {
    /// Accounts a finished pass and applies its effects; it leaves the liveness
    /// count last (after a re-queue, so pending work never reads zero in between).
    pub(super) fn finish_pass(&mut self, mut done: PassDone) {
        let progress = done.progress;
        let medic = self.ctx.current.medic();
        let Some(st) = self.containers.get_mut(&done.id) else {
            self.ctx.health.work_done(progress); // forgotten during its pass
            return;
        };
        if let PassResult::Full(full) = &mut done.result {
            if let Ok(out) = full.as_mut() {
                self.prestart.confirm(out, st.started_at);
            }
        }
        let outcome = match &done.result {
            PassResult::ProbeOnly(reports) => Outcome::ProbeOnly(reports),
            PassResult::Full(full) => match full.as_ref() {
                Ok(out) => Outcome::Pass(out),
                Err(e) => Outcome::Failed(e),
            },
        };
        let ctx = AccountCtx {
            backoff: &medic.config.backoff,
            watches_enabled: done.plan.watch,
            escalation: medic.marathon.is_some(),
            unix_now: unix_now(),
        };
        let effects = account(st, done.ticket, &done.plan, &outcome, &ctx, Instant::now());
        let mut watch = done.watch.take();
        for effect in effects {
            self.apply(&done, effect, &mut watch);
        }
        let checked = self.containers.get(&done.id).is_some_and(|st| st.endpoints.is_some());
        self.known.set_checked(&done.id, checked);
        self.publish_held(&done.id);
        self.ctx.health.work_done(progress);
    }

    fn apply(&mut self, done: &PassDone, effect: Effect, watch: &mut Option<Watch>) {
        let id = done.id.as_str();
        let metrics = self.ctx.metrics.clone();
        let (reports, out, error) = match &done.result {
            PassResult::ProbeOnly(r) => (r.as_slice(), None, None),
            PassResult::Full(full) => match full.as_ref() {
                Ok(out) => (out.reports.as_slice(), Some(out), None),
                Err(e) => (&[][..], None, Some(e)),
            },
        };
        match effect {
            Effect::Requeue => self.requeue(id),
            Effect::Stale => debug!(container = id, "died during its pass; result discarded"),
            Effect::ProbeOnly => {
                metrics.probe_only_pass();
                metrics.record_reports(id, reports);
            }
            Effect::Record => {
                metrics.record_reports(id, reports);
                self.log_endpoint_errors(id, reports);
            }
            Effect::ForgetSeries => metrics.forget_container(id),
            Effect::CheckError => {
                if let Some(e) = error {
                    warn!(container = id, error = %e, "cannot check container");
                    metrics.check_error(e);
                }
            }
            Effect::Gone => {
                debug!(container = id, error = error.map(tracing::field::display), "went away during its pass");
            }
            Effect::RepairedAfter(seconds) => metrics.repaired_after(seconds),
            Effect::RepairedAtStart(seconds) => {
                metrics.repaired_at_start(StartPath::AfterStart, seconds);
                debug!(container = id, latency_ms = seconds * 1000.0, "repaired after start");
            }
            Effect::BackedOff { repairs, delay } => {
                let window = self.ctx.current.medic().config.backoff.window;
                let (window_ms, delay_ms) = (window.as_millis() as u64, delay.as_millis() as u64);
                warn!(container = id, repairs, window_ms, delay_ms, "backing off: repairs paused until it settles");
            }
            Effect::HostLinks { removed, added } => self.map_host_links(id, &removed, &added),
            Effect::KeepWatch => match watch.take() {
                Some(w) => {
                    self.watches.insert(id.to_string(), w);
                }
                None => {
                    if let Some(st) = self.containers.get_mut(id) {
                        st.watched_pid = None;
                    }
                }
            },
            Effect::DropWatch => {
                self.watches.remove(id);
            }
            Effect::Escalate => {
                if let Some(out) = out {
                    self.escalate(id, out, done.plan.mode);
                }
            }
            Effect::Recheck(delay) => {
                let due = Internal::Due { id: id.to_string(), trigger: Trigger::Recheck };
                self.after(delay + Duration::from_millis(10), due);
            }
            Effect::Gauges => self.refresh_gauges(),
        }
    }

    pub(super) fn refresh_gauges(&self) {
        let (healthy, unhealthy, unknown) = endpoint_gauges(self.containers.values());
        self.ctx.metrics.set_endpoint_states(healthy as i64, unhealthy as i64, unknown as i64);
        self.ctx.metrics.set_watches(self.watches.len() + usize::from(self.host_watch.is_some()));
        self.refresh_policy_gauges();
    }

    /// The per-policy and per-suppression-reason gauges.
    fn refresh_policy_gauges(&self) {
        let known: Vec<Policy> =
            self.containers.values().filter(|s| s.endpoints.is_some()).filter_map(|s| s.policy).collect();
        let counts: Vec<(Policy, usize)> =
            Policy::ALL.iter().map(|p| (*p, known.iter().filter(|k| *k == p).count())).collect();
        self.ctx.metrics.set_policy_counts(&counts);
        self.ctx.metrics.set_escalation_suppressed(&self.escalator.suppressed_counts());
    }

    /// An endpoint that cannot be observed (a namespace over its `[limits]`, a
    /// refused read) is logged when its error changes: a task that keeps churning
    /// its namespace gets one line, not one per pass.
    fn log_endpoint_errors(&mut self, id: &str, reports: &[EndpointReport]) {
        let errors: Vec<(String, &'static str)> =
            reports.iter().filter_map(|r| r.error_code.map(|c| (r.host_interface.clone(), c))).collect();
        let Some(st) = self.containers.get_mut(id) else { return };
        if st.endpoint_errors == errors {
            return;
        }
        for r in reports.iter().filter(|r| {
            r.error_code.is_some()
                && !st.endpoint_errors.iter().any(|(h, c)| *h == r.host_interface && Some(*c) == r.error_code)
        }) {
            let (app, task) = (r.marathon_app_id.as_deref().map(Escaped), r.mesos_task_id.as_deref().map(Escaped));
            warn!(
                container = %Escaped(&r.container_name),
                app = app.as_ref().map(tracing::field::display),
                task = task.as_ref().map(tracing::field::display),
                host_interface = r.host_interface.as_str(),
                reason = r.error_code.unwrap_or_default(),
                error = r.error.as_deref().unwrap_or_default(),
                "cannot check endpoint: reported, not repaired"
            );
        }
        st.endpoint_errors = errors;
    }

    /// The container's calico endpoints as the orphan count sees them (none once it
    /// is forgotten), and whether the host is known whole.
    pub(super) fn publish_held(&self, id: &str) {
        let ids = self.containers.get(id).map(|st| st.endpoint_ids.as_slice()).unwrap_or_default();
        self.ctx.held.set(id, ids);
        self.ctx.held.set_complete(self.host_known());
    }
}
