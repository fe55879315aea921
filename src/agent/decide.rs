//! The scheduler's two pure policies, tested with times passed in: `decide` what a
//! pass that starts now must do (and `begin` it), and `account` for a finished
//! pass — the new state, and the effects the executor applies (metrics, watches,
//! host links, re-checks, escalation).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::backoff::PassKind;
use super::queue::PassTicket;
use super::state::ContainerState;
use crate::config::BackoffConfig;
use crate::diagnose::FaultKind;
use crate::error::MedicError;
use crate::marathon::Policy;
use crate::medic::{ContainerOutcome, Mode};
use crate::repair::ActionOutcome;
use crate::report::EndpointReport;

/// What `decide` needs to know beyond the container.
#[derive(Debug, Clone, Copy)]
pub struct DecideCtx {
    pub dry_run: bool,
    pub watches_enabled: bool,
    /// Probes configured from inside the namespace (a probe tick then needs the full pass).
    pub in_namespace_probes: bool,
}

/// What a pass that starts now must do.
#[derive(Debug, Clone)]
pub struct PassPlan {
    pub mode: Mode,
    pub kind: PassKind,
    /// Only probe ticks since the last pass, which found everything healthy, and the
    /// namespace it saw is still watched: re-probing these is all there is to do.
    pub probe_only: Option<Vec<EndpointReport>>,
    /// The start (PID) whose namespace is watched now; the pass opens a watch for
    /// another start when `watch` is on.
    pub watched_pid: Option<u32>,
    pub watch: bool,
}

pub fn decide(st: &ContainerState, ctx: &DecideCtx, now: Instant) -> PassPlan {
    let kind = st.backoff.kind_at(now);
    let mode = match kind {
        _ if ctx.dry_run => Mode::DryRun,
        PassKind::BackedOff => Mode::BackedOff,
        PassKind::Repair => Mode::Repair,
    };
    let probe_only = match (&st.last_healthy, st.watched_pid) {
        (Some((pid, reports)), Some(watched))
            if !st.full_pass_wanted
                && *pid == watched
                && kind == PassKind::Repair
                && !ctx.in_namespace_probes
                && ctx.watches_enabled =>
        {
            Some(reports.clone())
        }
        _ => None,
    };
    PassPlan { mode, kind, probe_only, watched_pid: st.watched_pid, watch: ctx.watches_enabled }
}

/// Commits a decided pass: the slot runs, a settle allowance is consumed, later
/// changes interrupt this pass only.
pub fn begin(st: &mut ContainerState, now: Instant) -> PassTicket {
    let ticket = st.slot.start();
    st.interrupt = Arc::new(Notify::new());
    st.backoff.begin_pass(now);
    st.full_pass_wanted = false;
    ticket
}

/// How a pass ended.
pub enum Outcome<'a> {
    /// The echo answered for every endpoint (the probe-only shortcut).
    ProbeOnly(&'a [EndpointReport]),
    Pass(&'a ContainerOutcome),
    Failed(&'a MedicError),
}

/// What `account` needs to know beyond the container and the outcome.
#[derive(Debug, Clone, Copy)]
pub struct AccountCtx<'a> {
    pub backoff: &'a BackoffConfig,
    pub watches_enabled: bool,
    /// Escalation to Marathon is configured.
    pub escalation: bool,
    pub unix_now: f64,
}

/// What the executor does after accounting, in this order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The container was asked for again while its pass ran: queue it now.
    Requeue,
    /// It died (or was destroyed) during the pass: nothing of it is published.
    Stale,
    /// The probe-only shortcut answered: count it and publish its reports.
    ProbeOnly,
    /// Publish the pass's reports.
    Record,
    /// Drop its per-container series (policy off, or gone).
    ForgetSeries,
    /// The pass failed for a reason worth a warning and a count.
    CheckError,
    /// The pass failed because the container went away (expected during churn).
    Gone,
    /// Seconds from the break (or start event) to a verified repair.
    RepairedAfter(f64),
    /// One endpoint's MAC was fixed by the first pass after its start, this long after it.
    RepairedAtStart(f64),
    BackedOff {
        repairs: usize,
        delay: Duration,
    },
    /// Its endpoints' host interfaces changed.
    HostLinks {
        removed: Vec<u32>,
        added: Vec<u32>,
    },
    /// Keep the watch the pass opened for this start of it.
    KeepWatch,
    /// Close its watch (the pass was abandoned: look again with no stale state).
    DropWatch,
    /// Hand the pass to the escalation policy.
    Escalate,
    /// Re-check a backed-off, still-broken container after this long.
    Recheck(Duration),
    /// Refresh the host-wide gauges.
    Gauges,
}

/// Accounts a finished pass (`ticket` from its `begin`) in `mode`/`kind`.
pub fn account(
    st: &mut ContainerState,
    ticket: PassTicket,
    plan: &PassPlan,
    outcome: &Outcome,
    ctx: &AccountCtx,
    now: Instant,
) -> Vec<Effect> {
    let mut effects = Vec::new();
    let (current, again) = st.slot.finish(ticket);
    if again {
        effects.push(Effect::Requeue);
    }
    if !current {
        effects.push(Effect::Stale);
        return effects;
    }
    match outcome {
        Outcome::ProbeOnly(_) => effects.push(Effect::ProbeOnly),
        Outcome::Failed(e) => account_error(st, e, &mut effects),
        Outcome::Pass(out) => account_pass(st, out, plan, ctx, now, &mut effects),
    }
    effects
}

fn account_error(st: &mut ContainerState, e: &MedicError, effects: &mut Vec<Effect>) {
    // A pass abandoned mid-way may have left a write half done: look again on the
    // next trigger with no stale state (endpoints unknown, no watch).
    st.endpoints = None;
    st.watched_pid = None;
    st.last_healthy = None;
    effects.push(Effect::DropWatch);
    if matches!(e, MedicError::NotRunning(_)) {
        // Connected but not started yet: latency counts from its start event.
        st.pending_event = None;
    }
    if e.is_container_gone() {
        effects.extend([Effect::Gone, Effect::ForgetSeries]);
    } else if e.is_not_ours() {
        st.calico_hint = false;
    } else {
        effects.push(Effect::CheckError);
    }
    effects.push(Effect::Gauges);
}

fn account_pass(
    st: &mut ContainerState,
    out: &ContainerOutcome,
    plan: &PassPlan,
    ctx: &AccountCtx,
    now: Instant,
    effects: &mut Vec<Effect>,
) {
    st.policy = Some(out.policy);
    let recheck = account_health(st, out, plan, ctx, now, effects);
    let pid = out.workload.pid;
    // A namespace over its `[limits]` is not watched: a task that floods it would
    // turn every change into a pass. The periodic resync re-checks it.
    let too_large = out.reports.iter().any(|r| r.error_code == Some("namespace_too_large"));
    if too_large && st.watched_pid.take().is_some() {
        effects.push(Effect::DropWatch);
    }
    // Policy off: the namespace was never opened, and is not watched.
    let new_watch = ctx.watches_enabled && st.watched_pid != Some(pid) && out.policy != Policy::Off && !too_large;
    // (from Docker's record, not the reports: a task with policy `off` has none)
    st.endpoint_ids = out.workload.endpoints.iter().map(|e| e.endpoint_id.clone()).collect();
    st.endpoint_ips = out.workload.endpoints.iter().map(|e| e.ip).collect();
    st.ip_shared = out.reports.iter().any(|r| r.remaining_faults.contains(&crate::diagnose::FaultKind::DuplicateIp));
    let all_well = !out.reports.is_empty()
        && out.reports.iter().all(|r| r.healthy && r.reachable == Some(true) && r.error.is_none());
    st.last_healthy = (all_well && out.policy != Policy::Off).then(|| (pid, out.reports.clone()));
    let indexes: Vec<u32> = out.reports.iter().filter_map(|r| r.host_ifindex).collect();
    if indexes != st.host_ifindexes {
        let removed = std::mem::replace(&mut st.host_ifindexes, indexes.clone());
        effects.push(Effect::HostLinks { removed, added: indexes });
    }
    // Policy off: not checked, so in no per-container series.
    effects.push(if out.policy == Policy::Off { Effect::ForgetSeries } else { Effect::Record });
    if new_watch {
        st.watched_pid = Some(pid);
        effects.push(Effect::KeepWatch);
    }
    if ctx.escalation && plan.mode != Mode::Check {
        effects.push(Effect::Escalate);
    }
    effects.push(Effect::Gauges);
    if let Some(delay) = recheck {
        effects.push(Effect::Recheck(delay));
    }
}

/// Endpoint counts, latency from the pending break, backoff; returns when to
/// re-check a backed-off container that is still broken.
fn account_health(
    st: &mut ContainerState,
    out: &ContainerOutcome,
    plan: &PassPlan,
    ctx: &AccountCtx,
    now: Instant,
    effects: &mut Vec<Effect>,
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
            let latency = ctx.unix_now - ts;
            if wrote {
                effects.push(Effect::RepairedAfter(latency));
            }
            if first_after_start {
                let mac_fixed = |r: &&EndpointReport| {
                    r.actions.iter().any(|a| a.fault == FaultKind::MacMismatch && a.result == ActionOutcome::Success)
                };
                effects.extend(out.reports.iter().filter(mac_fixed).map(|_| Effect::RepairedAtStart(latency)));
            }
        }
    }
    let kind = if plan.mode == Mode::DryRun { PassKind::Repair } else { plan.kind };
    let after = st.backoff.after_pass(now, wrote, all_healthy, kind, ctx.backoff);
    if let Some((repairs, delay)) = after.backed_off {
        effects.push(Effect::BackedOff { repairs, delay });
    }
    after.recheck_in
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
