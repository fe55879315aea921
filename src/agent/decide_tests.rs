//! `decide` and `account` over plain state, with times passed in: no tokio, no root.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::agent::escalation::task_view;
use crate::agent::state::Trigger;
use crate::marathon::escalate::HostView;
use crate::marathon::{Decision, Escalator, Settings};
use crate::repair::ActionResult;
use crate::workload::Workload;

const PID: u32 = 4242;

fn backoff_cfg() -> BackoffConfig {
    BackoffConfig {
        max_repairs: 3,
        window: Duration::from_secs(10),
        initial: Duration::from_secs(1),
        max: Duration::from_secs(8),
        settle: Duration::from_millis(300),
    }
}

fn ctx(cfg: &BackoffConfig) -> AccountCtx<'_> {
    AccountCtx { backoff: cfg, watches_enabled: true, escalation: true, unix_now: 1_000.0 }
}

const DECIDE: DecideCtx = DecideCtx { dry_run: false, watches_enabled: true, in_namespace_probes: false };

fn workload() -> Workload {
    Workload {
        container_id: "c1".into(),
        container_name: "mesos-0f1e2d3c-aaaa-bbbb-cccc-000000000001".into(),
        marathon_app_id: Some("/shop".into()),
        mesos_task_id: Some("shop.0f1e2d3c-aaaa-bbbb-cccc-000000000002".into()),
        policy_label: None,
        pid: PID,
        started_at: "2026-12-06T00:00:00Z".into(),
        endpoints: Vec::new(),
    }
}

/// One endpoint: healthy and reachable, or with `left` faults after `wrote` a MAC repair.
fn outcome(left: &[FaultKind], wrote: bool, policy: Policy) -> ContainerOutcome {
    let w = workload();
    let mut r = EndpointReport::new(&w, "calico", "ep1", Ipv4Addr::new(10, 65, 0, 2));
    r.host_ifindex = Some(17);
    r.remaining_faults = left.to_vec();
    r.healthy = left.is_empty();
    r.reachable = Some(left.is_empty());
    if wrote {
        r.actions.push(ActionResult {
            action: "set_mac".into(),
            command: String::new(),
            fault: FaultKind::MacMismatch,
            result: ActionOutcome::Success,
            error: None,
            agent_error: false,
        });
    }
    ContainerOutcome { workload: w, reports: vec![r], netns: None, policy }
}

/// Runs one whole pass at `now`: decide, begin, account.
fn pass(st: &mut ContainerState, out: &ContainerOutcome, now: Instant) -> (PassPlan, Vec<Effect>) {
    let cfg = backoff_cfg();
    st.want(Trigger::Resync);
    let plan = decide(st, &DECIDE, now);
    let ticket = begin(st, now);
    let effects = account(st, ticket, &plan, &Outcome::Pass(out), &ctx(&cfg), now);
    (plan, effects)
}

#[test]
fn a_probe_tick_of_a_healthy_watched_container_only_re_probes() {
    let t0 = Instant::now();
    let mut st = ContainerState::default();
    let healthy = outcome(&[], false, Policy::Repair);
    let (plan, effects) = pass(&mut st, &healthy, t0);
    assert!(plan.probe_only.is_none(), "the first pass is a full pass");
    assert!(effects.contains(&Effect::KeepWatch), "its namespace gets watched: {effects:?}");
    assert!(effects.contains(&Effect::HostLinks { removed: vec![], added: vec![17] }));
    assert_eq!(st.watched_pid, Some(PID));

    assert!(st.want(Trigger::Probe));
    let plan = decide(&st, &DECIDE, t0 + Duration::from_secs(10));
    assert_eq!(plan.probe_only.as_ref().map(Vec::len), Some(1), "a tick only re-sends the echo");
    let ticket = begin(&mut st, t0);
    let probed = plan.probe_only.clone().unwrap();
    let cfg = backoff_cfg();
    let effects = account(&mut st, ticket, &plan, &Outcome::ProbeOnly(&probed), &ctx(&cfg), t0);
    assert_eq!(effects, vec![Effect::ProbeOnly]);

    // Anything but a tick (a resync, an event) wants the full pass again.
    st.want(Trigger::Probe);
    st.want(Trigger::Resync);
    assert!(decide(&st, &DECIDE, t0).probe_only.is_none());
    // Without watches, a quiet break would go unseen between ticks: full passes.
    let mut fresh = ContainerState::default();
    pass(&mut fresh, &healthy, t0);
    fresh.want(Trigger::Probe);
    let unwatched = DecideCtx { watches_enabled: false, ..DECIDE };
    assert!(decide(&fresh, &unwatched, t0).probe_only.is_none());
}

#[test]
fn a_change_during_a_pass_runs_it_once_more() {
    let t0 = Instant::now();
    let mut st = ContainerState::default();
    assert!(st.want(Trigger::Resync), "sent to the queue");
    let plan = decide(&st, &DECIDE, t0);
    let ticket = begin(&mut st, t0);
    assert!(!st.want(Trigger::Watch { unix_seconds: 999.0 }), "running: not sent twice");
    assert!(!st.want(Trigger::Watch { unix_seconds: 999.5 }));
    let cfg = backoff_cfg();
    let out = outcome(&[], true, Policy::Repair);
    let effects = account(&mut st, ticket, &plan, &Outcome::Pass(&out), &ctx(&cfg), t0);
    assert_eq!(effects.first(), Some(&Effect::Requeue), "exactly one rerun: {effects:?}");
    assert_eq!(effects.iter().filter(|e| **e == Effect::Requeue).count(), 1);
    // The change came after the pass started: its latency is still pending for the rerun,
    // measured from the earliest break.
    assert!(effects.contains(&Effect::RepairedAfter(1.0)), "{effects:?}");
    assert!(st.full_pass_wanted, "the rerun is a full pass");
}

#[test]
fn a_death_during_a_pass_discards_its_result() {
    let t0 = Instant::now();
    let mut st = ContainerState::default();
    st.want(Trigger::Started { unix_seconds: 990.0 });
    let plan = decide(&st, &DECIDE, t0);
    let ticket = begin(&mut st, t0);
    st.died();
    let cfg = backoff_cfg();
    let out = outcome(&[], true, Policy::Repair);
    let effects = account(&mut st, ticket, &plan, &Outcome::Pass(&out), &ctx(&cfg), t0);
    assert_eq!(effects, vec![Effect::Stale], "nothing published of a dead namespace");
    assert_eq!(st.endpoints, None);
    assert_eq!(st.watched_pid, None);
    // The next start's pass is current again.
    let (_, effects) = pass(&mut st, &out, t0);
    assert!(effects.contains(&Effect::Record));
}

#[test]
fn a_flapping_container_is_backed_off_then_repaired_once_it_settles() {
    let t0 = Instant::now();
    let cfg = backoff_cfg();
    let mut st = ContainerState::default();
    let repaired = outcome(&[], true, Policy::Repair);
    let mut t = t0;
    let mut backed = None;
    for _ in 0..3 {
        let (plan, effects) = pass(&mut st, &repaired, t);
        assert_eq!(plan.mode, Mode::Repair);
        backed = effects.into_iter().find(|e| matches!(e, Effect::BackedOff { .. }));
        t += Duration::from_millis(100);
    }
    assert_eq!(backed, Some(Effect::BackedOff { repairs: 3, delay: Duration::from_secs(1) }));
    // Backed off: the next pass only reports, and a still-broken one is re-checked later.
    let broken = outcome(&[FaultKind::MacMismatch], false, Policy::Repair);
    let (plan, effects) = pass(&mut st, &broken, t);
    assert_eq!((plan.mode, plan.kind), (Mode::BackedOff, PassKind::BackedOff));
    assert!(effects.iter().any(|e| matches!(e, Effect::Recheck(d) if *d <= Duration::from_secs(1))), "{effects:?}");
    // It keeps changing, then goes quiet for `settle`: one repair is allowed.
    let change = st.backoff.on_change(t, &cfg);
    assert!(change.start_settle_timer);
    assert!(matches!(st.backoff.settle_check(t), crate::agent::Settle::WaitUntil(_)));
    let quiet = t + cfg.settle + Duration::from_millis(1);
    assert_eq!(st.backoff.settle_check(quiet), crate::agent::Settle::AllowRepair);
    assert_eq!(decide(&st, &DECIDE, quiet).mode, Mode::Repair, "settled: repaired despite the backoff");
    let dry = DecideCtx { dry_run: true, ..DECIDE };
    assert_eq!(decide(&st, &dry, quiet).mode, Mode::DryRun);
}

#[test]
fn an_unrepairable_task_becomes_an_escalation_candidate_after_n_failed_passes() {
    let t0 = Instant::now();
    let settings = Settings {
        escalate_after: 3,
        unreachable_after: Duration::from_secs(60),
        max_kills_per_hour: 5,
        min_task_age: Duration::ZERO,
        dry_run: false,
        host_breaker_share: 0.5,
        host_breaker_min: 3,
        agent_error_breaker: 3,
    };
    let mut escalator = Escalator::default();
    let mut st = ContainerState::default();
    // cali0 deleted: nothing can be planned; the policy asks for escalation.
    let gone = outcome(&[FaultKind::LinkMissing], false, Policy::Escalate);
    let mut decisions = Vec::new();
    for i in 0..3u32 {
        let now = t0 + Duration::from_secs(u64::from(i) * 2);
        let (plan, effects) = pass(&mut st, &gone, now);
        assert!(effects.contains(&Effect::Escalate), "{effects:?}");
        let unix = 2_000_000_000.0 + f64::from(i) * 2.0;
        let host = HostView { docker_up: true, known: true };
        decisions.push(escalator.after_pass(unix, &task_view("c1", &gone, plan.mode), host, &settings));
    }
    assert!(matches!(decisions[0], Decision::Wait(_)), "{decisions:?}");
    assert!(matches!(decisions[1], Decision::Wait(_)), "{decisions:?}");
    assert!(matches!(&decisions[2], Decision::Kill { task, dry_run: false, .. } if task.starts_with("shop.")));
    // A pass in check mode is never a candidate.
    let cfg = backoff_cfg();
    st.want(Trigger::Resync);
    let mut plan = decide(&st, &DECIDE, t0);
    plan.mode = Mode::Check;
    let ticket = begin(&mut st, t0);
    let effects = account(&mut st, ticket, &plan, &Outcome::Pass(&gone), &ctx(&cfg), t0);
    assert!(!effects.contains(&Effect::Escalate));
}

#[test]
fn a_failed_pass_forgets_what_it_knew() {
    let t0 = Instant::now();
    let mut st = ContainerState::default();
    pass(&mut st, &outcome(&[], false, Policy::Repair), t0);
    st.want(Trigger::Resync);
    let plan = decide(&st, &DECIDE, t0);
    let ticket = begin(&mut st, t0);
    let cfg = backoff_cfg();
    let e = MedicError::timeout("pass over c1", Duration::from_secs(5));
    let effects = account(&mut st, ticket, &plan, &Outcome::Failed(&e), &ctx(&cfg), t0);
    assert_eq!(effects, vec![Effect::DropWatch, Effect::CheckError, Effect::Gauges]);
    assert_eq!((st.endpoints, st.watched_pid), (None, None));
    assert!(st.last_healthy.is_none());
}

#[test]
fn a_namespace_over_its_limits_loses_its_watch_until_it_shrinks() {
    let t0 = Instant::now();
    let mut st = ContainerState::default();
    let (_, effects) = pass(&mut st, &outcome(&[], false, Policy::Repair), t0);
    assert!(effects.contains(&Effect::KeepWatch), "{effects:?}");
    let mut flooded = outcome(&[], false, Policy::Repair);
    flooded.reports[0].healthy = false;
    flooded.reports[0].error_code = Some("namespace_too_large");
    let (_, effects) = pass(&mut st, &flooded, t0 + Duration::from_secs(1));
    assert!(effects.contains(&Effect::DropWatch), "{effects:?}");
    assert!(!effects.contains(&Effect::KeepWatch), "{effects:?}");
    assert_eq!(st.watched_pid, None);
    // Still too large on the periodic resync: still not watched.
    let (_, effects) = pass(&mut st, &flooded, t0 + Duration::from_secs(60));
    assert!(!effects.contains(&Effect::KeepWatch) && !effects.contains(&Effect::DropWatch), "{effects:?}");
    // Back under its limits: watched again.
    let (_, effects) = pass(&mut st, &outcome(&[], false, Policy::Repair), t0 + Duration::from_secs(120));
    assert!(effects.contains(&Effect::KeepWatch), "{effects:?}");
}
