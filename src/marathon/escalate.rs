//! Pure escalation policy: when an endpoint that cannot be repaired from the host
//! qualifies for Marathon to replace its task, and when the host itself looks too
//! broken for any kill. No I/O; time is an argument (unix seconds).

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::budget::Budget;
use crate::policy::Policy;

/// The escalation settings in force (from `[marathon]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Failed repair passes (a structural fault left after the pass), counted at
    /// most one per `RECHECK`, before a kill.
    pub escalate_after: u32,
    /// Unreachable with no structural fault for this long before a kill.
    pub unreachable_after: Duration,
    pub max_kills_per_hour: u32,
    pub min_task_age: Duration,
    pub dry_run: bool,
    /// More than this share of the host's checked endpoints failing at once (and at
    /// least `host_breaker_min` of them) means the host is broken: no kills.
    pub host_breaker_share: f64,
    pub host_breaker_min: usize,
    /// This many containers with an error of the agent's own (a refused write, a
    /// timeout) within `AGENT_ERROR_WINDOW` trip the breaker too.
    pub agent_error_breaker: usize,
}

/// What escalation knows of the host as a whole when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostView {
    /// The Docker event stream is connected.
    pub docker_up: bool,
    /// The first full resync is done and every calico container has had a pass.
    pub known: bool,
}

/// Why a qualifying task was not killed. Stable label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Too many of this host's endpoints fail at once.
    HostBreaker,
    /// The Docker event stream is disconnected.
    DockerDown,
    /// No endpoint on this host has its host side (`cali…` veth).
    HostSideMissing,
    /// `max_kills_per_hour` reached.
    RateLimit,
    /// Younger than `min_task_age`.
    TaskTooYoung,
    /// No (valid) Marathon app and task id: not started by Marathon.
    NotMarathon,
    /// Marathon did not confirm the task (id, host, IP, state, health).
    NotConfirmed,
    /// The agent does not know the whole host yet (first resync, first passes).
    HostUnknown,
    /// The agent's own writes keep failing (capabilities, seccomp, timeouts).
    AgentErrors,
    /// The escalation state file cannot be read or written.
    StateFile,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::HostBreaker,
        Reason::DockerDown,
        Reason::HostSideMissing,
        Reason::RateLimit,
        Reason::TaskTooYoung,
        Reason::NotMarathon,
        Reason::NotConfirmed,
        Reason::HostUnknown,
        Reason::AgentErrors,
        Reason::StateFile,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HostBreaker => "host_breaker",
            Reason::DockerDown => "docker_down",
            Reason::HostSideMissing => "host_side_missing",
            Reason::RateLimit => "rate_limit",
            Reason::TaskTooYoung => "task_too_young",
            Reason::NotMarathon => "not_marathon",
            Reason::NotConfirmed => "not_confirmed",
            Reason::HostUnknown => "host_unknown",
            Reason::AgentErrors => "agent_errors",
            Reason::StateFile => "state_file",
        }
    }
}

/// The state of one container's endpoints after a pass, as escalation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    Healthy,
    /// A container-side fault is left after the repair pass (cali0 gone, …).
    Unrepaired,
    /// No fault but unreachable.
    Unreachable,
    /// Only host-side faults (Felix's to fix) or nothing decidable.
    Other,
    /// A repair failed for a reason of the agent's own (a refused write, a timeout):
    /// never the task's fault.
    AgentError,
}

/// One container after a pass.
#[derive(Debug, Clone)]
pub struct TaskView<'a> {
    pub container_id: &'a str,
    pub container_name: &'a str,
    pub app: Option<&'a str>,
    pub task: Option<&'a str>,
    pub policy: Policy,
    pub started_unix: Option<f64>,
    pub state: EndpointState,
    /// Endpoints checked, failing (any fault left), and with no host side.
    pub endpoints: usize,
    pub failing: usize,
    pub host_side_missing: usize,
}

/// What to do about one container.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Nothing,
    /// Not (yet) qualified: look again after this long.
    Wait(Duration),
    /// Qualified but held back; `newly` when the reason changed with this pass.
    Suppressed {
        reason: Reason,
        newly: bool,
        again_in: Duration,
    },
    /// Send the kill (or, in dry run, only say so).
    Kill {
        app: String,
        task: String,
        dry_run: bool,
    },
}

/// The answer to a kill, as escalation counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillOutcome {
    /// Marathon killed it, or it was already gone (404).
    Done,
    /// Not killed: try again later (with backoff).
    Failed,
}

/// Containers with an agent error within this window count for the breaker.
pub const AGENT_ERROR_WINDOW: f64 = 60.0;
/// How often a task Marathon did not confirm (or whose kill could not be recorded)
/// is asked about again.
pub const NOT_SENT_RECHECK: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct TaskState {
    failed_passes: u32,
    /// When the last failed pass was counted.
    last_failed: f64,
    unreachable_since: Option<f64>,
    suppressed: Option<Reason>,
    /// Why its last decided kill was not sent (kept across the retries, so that a
    /// Marathon that keeps saying no is logged once).
    not_sent: Option<Reason>,
    in_flight: bool,
    attempts: u32,
    next_attempt: f64,
    /// First seen by this agent (when Docker's start time is unknown).
    first_seen: f64,
    task: Option<String>,
}

impl TaskState {
    fn suppress(&mut self, reason: Reason, again_in: Duration) -> Decision {
        let newly = self.suppressed != Some(reason);
        self.suppressed = Some(reason);
        Decision::Suppressed { reason, newly, again_in }
    }

    /// Counts one pass that ended in `state`; false when the endpoint is fine
    /// (nothing to escalate).
    fn count_pass(&mut self, state: EndpointState, now: f64) -> bool {
        match state {
            EndpointState::Healthy | EndpointState::Other | EndpointState::AgentError => {
                self.failed_passes = 0;
                self.unreachable_since = None;
                self.suppressed = None;
                self.not_sent = None;
                return false;
            }
            EndpointState::Unrepaired => {
                // One break sets off a burst of passes (container and host watches):
                // failed passes count only when about RECHECK apart.
                if self.failed_passes == 0 || now - self.last_failed >= RECHECK.as_secs_f64() * 0.9 {
                    self.failed_passes = self.failed_passes.saturating_add(1);
                    self.last_failed = now;
                }
                self.unreachable_since = None;
            }
            EndpointState::Unreachable => {
                self.failed_passes = 0;
                self.unreachable_since.get_or_insert(now);
            }
        }
        true
    }
}

/// First retry of a failed kill after this long, doubling up to `RETRY_MAX`.
pub const RETRY_INITIAL: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// How often a qualifying-but-not-yet task is looked at again.
pub const RECHECK: Duration = Duration::from_secs(1);
/// How often a task held back because the host looks broken is looked at again
/// (a broken host may hold back many tasks: not a pass per task per second).
pub const HOST_RECHECK: Duration = Duration::from_secs(10);

/// Escalation state of the whole host.
#[derive(Debug, Default)]
pub struct Escalator {
    by_container: HashMap<String, TaskState>,
    /// Per container: (endpoints, failing, host side missing) after its last pass.
    host: HashMap<String, (usize, usize, usize)>,
    /// Kills asked (and dry-run kills): the hourly budget, persisted across runs.
    budget: Budget,
    /// When a container last had an error of the agent's own.
    agent_errors: HashMap<String, f64>,
}

impl Escalator {
    /// Escalation with the budget an earlier run left (`budget::Budget::restore`).
    pub fn with_budget(budget: Budget) -> Escalator {
        Escalator { budget, ..Escalator::default() }
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// A confirmed kill is about to be written and sent: it is in the budget.
    pub fn confirmed(&mut self, now: f64, app: &str, task: &str) {
        self.budget.ensure(now, app, task);
    }

    /// The budget as the state file now holds it (SIGHUP).
    pub fn replace_budget(&mut self, budget: Budget) {
        self.budget = budget;
    }

    /// Accounts one pass over a container; decides what to do about it.
    pub fn after_pass(&mut self, now: f64, v: &TaskView, host: HostView, s: &Settings) -> Decision {
        if v.policy == Policy::Off {
            self.by_container.remove(v.container_id);
            self.host.remove(v.container_id);
            return Decision::Nothing;
        }
        self.host.insert(v.container_id.to_string(), (v.endpoints, v.failing, v.host_side_missing));
        if v.state == EndpointState::AgentError {
            self.agent_errors.insert(v.container_id.to_string(), now);
        }
        if v.policy != Policy::Escalate {
            self.by_container.remove(v.container_id);
            return Decision::Nothing;
        }
        let totals = self.host_totals();
        let agent_errors = self.agent_errors.values().filter(|at| now - **at < AGENT_ERROR_WINDOW).count();
        let st = self
            .by_container
            .entry(v.container_id.to_string())
            .or_insert_with(|| TaskState { first_seen: now, ..TaskState::default() });
        st.task = v.task.map(str::to_string);
        if !st.count_pass(v.state, now) {
            return Decision::Nothing;
        }
        if st.in_flight || v.task.is_some_and(|t| self.budget.asked(t)) {
            return Decision::Nothing;
        }
        let qualified_in = match v.state {
            EndpointState::Unrepaired if st.failed_passes >= s.escalate_after => Duration::ZERO,
            EndpointState::Unrepaired => RECHECK,
            _ => {
                let since = now - st.unreachable_since.unwrap_or(now);
                s.unreachable_after.saturating_sub(secs(since))
            }
        };
        if !qualified_in.is_zero() {
            return Decision::Wait(qualified_in.max(Duration::from_millis(100)));
        }
        let (Some(app), Some(task)) = (v.app, v.task) else {
            return st.suppress(Reason::NotMarathon, RETRY_MAX);
        };
        if !marathon_ids_valid(v.container_name, app, task) {
            return st.suppress(Reason::NotMarathon, RETRY_MAX);
        }
        let started = v.started_unix.unwrap_or(st.first_seen);
        let age = secs(now - started);
        if age < s.min_task_age {
            return st.suppress(Reason::TaskTooYoung, s.min_task_age - age);
        }
        if let Some((reason, again_in)) = host_holds_back(host, totals, agent_errors, s) {
            return st.suppress(reason, again_in);
        }
        if let Some(until) = self.budget.blocked_until(now) {
            return st.suppress(Reason::StateFile, secs(until - now).max(RECHECK));
        }
        if now < st.next_attempt {
            return Decision::Wait(secs(st.next_attempt - now));
        }
        if self.budget.used(now) >= s.max_kills_per_hour as usize {
            let free_at = self.budget.free_at(now);
            return st.suppress(Reason::RateLimit, secs(free_at - now).max(RECHECK));
        }
        self.budget.record(now, app, task, s.dry_run);
        st.suppressed = None;
        st.in_flight = !s.dry_run;
        Decision::Kill { app: app.to_string(), task: task.to_string(), dry_run: s.dry_run }
    }

    /// The answer to a kill sent for `container_id`'s task `task`; returns when to
    /// try again after a failure.
    pub fn kill_finished(
        &mut self,
        now: f64,
        container_id: &str,
        task: &str,
        outcome: KillOutcome,
    ) -> Option<Duration> {
        let st = self.by_container.get_mut(container_id);
        match outcome {
            KillOutcome::Done => {
                self.budget.done(task);
                if let Some(st) = st {
                    st.in_flight = false;
                }
                None
            }
            KillOutcome::Failed => {
                let st = st?;
                st.in_flight = false;
                st.attempts = st.attempts.saturating_add(1);
                let delay = retry_delay(st.attempts);
                st.next_attempt = now + delay.as_secs_f64();
                Some(delay)
            }
        }
    }

    /// A decided kill was never sent (`reason`: Marathon did not confirm the task, or
    /// the state file could not be written): it does not count against the budget,
    /// the task is held back, and asked about again after `NOT_SENT_RECHECK`.
    /// True when the reason is new for this task (log and count it once).
    pub fn not_sent(&mut self, now: f64, container_id: &str, task: &str, reason: Reason) -> bool {
        self.budget.refund(task);
        let Some(st) = self.by_container.get_mut(container_id) else { return false };
        st.in_flight = false;
        st.suppressed = Some(reason);
        st.next_attempt = now + NOT_SENT_RECHECK.as_secs_f64();
        st.not_sent.replace(reason) != Some(reason)
    }

    /// The container stopped: its endpoints no longer count for the host (a killed
    /// task's container may stay until Mesos removes it, hours later). What was
    /// decided about its task stays.
    pub fn stopped(&mut self, container_id: &str) {
        self.host.remove(container_id);
        if let Some(st) = self.by_container.get_mut(container_id) {
            st.suppressed = None;
        }
    }

    /// The container was destroyed: its task id is never seen again.
    pub fn forget(&mut self, container_id: &str) {
        self.by_container.remove(container_id);
        self.host.remove(container_id);
        self.agent_errors.remove(container_id);
    }

    /// Tasks held back now, by reason (the `escalation_suppressed` gauge).
    pub fn suppressed_counts(&self) -> Vec<(Reason, usize)> {
        Reason::ALL
            .iter()
            .map(|r| (*r, self.by_container.values().filter(|s| s.suppressed == Some(*r)).count()))
            .collect()
    }

    fn host_totals(&self) -> (usize, usize, usize) {
        self.host.values().fold((0, 0, 0), |a, h| (a.0 + h.0, a.1 + h.1, a.2 + h.2))
    }
}

/// Backoff between failed kills of one task: 1 s, 2 s, 4 s, … up to 5 min.
pub fn retry_delay(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    (RETRY_INITIAL * 2u32.pow(exp)).min(RETRY_MAX)
}

/// Whether the host as a whole holds every kill back, and for how long: not known
/// yet, Docker down, no host side at all, too many endpoints failing at once, or the
/// agent's own writes failing.
fn host_holds_back(
    host: HostView,
    (endpoints, failing, host_missing): (usize, usize, usize),
    agent_errors: usize,
    s: &Settings,
) -> Option<(Reason, Duration)> {
    let reason = if !host.known {
        Reason::HostUnknown
    } else if !host.docker_up {
        Reason::DockerDown
    } else if endpoints >= 2 && host_missing == endpoints {
        Reason::HostSideMissing
    } else if failing >= s.host_breaker_min && failing as f64 > s.host_breaker_share * endpoints as f64 {
        Reason::HostBreaker
    } else if agent_errors >= s.agent_error_breaker.max(1) {
        Reason::AgentErrors
    } else {
        return None;
    };
    Some((reason, HOST_RECHECK))
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

/// A Marathon task of a Docker containerizer: the container is `mesos-…`, the app
/// id is an absolute path of Marathon id segments (`[a-z0-9.-]`, not `.`/`..`),
/// and the task id is the app id (slashes as `_`) + `.` + the instance part, so a
/// task can only name its own app.
pub fn marathon_ids_valid(container_name: &str, app: &str, task: &str) -> bool {
    let Some(path) = app.strip_prefix('/') else { return false };
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    };
    if !path.split('/').all(segment_ok) {
        return false;
    }
    let prefix = format!("{}.", path.replace('/', "_"));
    let task_ok = task.len() > prefix.len()
        && task.starts_with(&prefix)
        && task.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    task_ok && container_name.starts_with("mesos-")
}

/// Docker's `StartedAt` (RFC 3339, UTC `Z`, fractional seconds optional) → unix seconds.
pub fn parse_docker_time(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || y < 1970 {
        return None;
    }
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) as f64 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: HostView = HostView { docker_up: true, known: true };
    const DOCKER_DOWN: HostView = HostView { docker_up: false, known: true };

    fn settings() -> Settings {
        Settings {
            escalate_after: 3,
            unreachable_after: Duration::from_secs(60),
            max_kills_per_hour: 2,
            min_task_age: Duration::from_secs(300),
            dry_run: false,
            host_breaker_share: 0.5,
            host_breaker_min: 3,
            agent_error_breaker: 3,
        }
    }

    const T0: f64 = 1_800_000_000.0;

    fn view<'a>(id: &'a str, task: &'a str, state: EndpointState) -> TaskView<'a> {
        TaskView {
            container_id: id,
            container_name: "mesos-1",
            app: Some("/shop/cart"),
            task: Some(task),
            policy: Policy::Escalate,
            started_unix: Some(T0 - 3600.0),
            state,
            endpoints: 1,
            failing: usize::from(state != EndpointState::Healthy),
            host_side_missing: 0,
        }
    }

    fn is_kill(d: &Decision) -> bool {
        matches!(d, Decision::Kill { .. })
    }

    #[test]
    fn unrepaired_task_is_killed_once_after_escalate_after_passes() {
        let (mut e, s) = (Escalator::default(), settings());
        let v = view("c1", "shop_cart.a1", EndpointState::Unrepaired);
        assert_eq!(e.after_pass(T0, &v, UP, &s), Decision::Wait(RECHECK));
        assert_eq!(e.after_pass(T0 + 1.0, &v, UP, &s), Decision::Wait(RECHECK));
        let d = e.after_pass(T0 + 2.0, &v, UP, &s);
        assert_eq!(d, Decision::Kill { app: "/shop/cart".into(), task: "shop_cart.a1".into(), dry_run: false });
        // In flight, then done: never asked again.
        assert_eq!(e.after_pass(T0 + 3.0, &v, UP, &s), Decision::Nothing);
        assert_eq!(e.kill_finished(T0 + 3.5, "c1", "shop_cart.a1", KillOutcome::Done), None);
        for i in 0..10 {
            assert_eq!(e.after_pass(T0 + 4.0 + f64::from(i), &v, UP, &s), Decision::Nothing);
        }
    }

    #[test]
    fn a_burst_of_passes_counts_once() {
        let (mut e, s) = (Escalator::default(), settings());
        let v = view("c1", "shop_cart.a1", EndpointState::Unrepaired);
        for i in 0..20 {
            assert!(!is_kill(&e.after_pass(T0 + f64::from(i) * 0.05, &v, UP, &s)), "pass {i}");
        }
        assert!(!is_kill(&e.after_pass(T0 + 1.0, &v, UP, &s)));
        assert!(is_kill(&e.after_pass(T0 + 2.0, &v, UP, &s)));
    }

    #[test]
    fn a_repair_in_between_resets_the_count() {
        let (mut e, s) = (Escalator::default(), settings());
        let bad = view("c1", "shop_cart.a1", EndpointState::Unrepaired);
        let good = view("c1", "shop_cart.a1", EndpointState::Healthy);
        for i in 0..10 {
            let t = T0 + f64::from(i);
            assert!(!is_kill(&e.after_pass(t, &bad, UP, &s)));
            assert!(!is_kill(&e.after_pass(t + 0.5, &bad, UP, &s)));
            assert_eq!(e.after_pass(t + 0.7, &good, UP, &s), Decision::Nothing);
        }
    }

    #[test]
    fn unreachable_qualifies_after_a_time() {
        let (mut e, s) = (Escalator::default(), settings());
        let v = view("c1", "shop_cart.a1", EndpointState::Unreachable);
        assert_eq!(e.after_pass(T0, &v, UP, &s), Decision::Wait(Duration::from_secs(60)));
        assert_eq!(e.after_pass(T0 + 50.0, &v, UP, &s), Decision::Wait(Duration::from_secs(10)));
        assert!(is_kill(&e.after_pass(T0 + 60.0, &v, UP, &s)));
    }

    #[test]
    fn only_escalate_policy_and_marathon_tasks() {
        let (mut e, s) = (Escalator::default(), settings());
        for policy in [Policy::Off, Policy::Report, Policy::Repair] {
            let v = TaskView { policy, ..view("c1", "shop_cart.a1", EndpointState::Unrepaired) };
            for i in 0..5 {
                assert_eq!(e.after_pass(T0 + f64::from(i), &v, UP, &s), Decision::Nothing);
            }
        }
        let no_app = TaskView { app: None, ..view("c2", "shop_cart.a2", EndpointState::Unrepaired) };
        let forged = TaskView { app: Some("/billing"), ..view("c3", "shop_cart.a3", EndpointState::Unrepaired) };
        let not_mesos = TaskView { container_name: "web", ..view("c4", "shop_cart.a4", EndpointState::Unrepaired) };
        for v in [no_app, forged, not_mesos] {
            let mut last = Decision::Nothing;
            for i in 0..5 {
                last = e.after_pass(T0 + f64::from(i), &v, UP, &s);
                assert!(!is_kill(&last), "{v:?}");
            }
            assert!(matches!(last, Decision::Suppressed { reason: Reason::NotMarathon, newly: false, .. }));
        }
    }

    #[test]
    fn young_tasks_wait_for_min_task_age() {
        let (mut e, s) = (Escalator::default(), settings());
        let v = TaskView { started_unix: Some(T0 - 102.0), ..view("c1", "shop_cart.a1", EndpointState::Unrepaired) };
        e.after_pass(T0, &v, UP, &s);
        e.after_pass(T0 + 1.0, &v, UP, &s);
        let d = e.after_pass(T0 + 2.0, &v, UP, &s);
        assert_eq!(
            d,
            Decision::Suppressed { reason: Reason::TaskTooYoung, newly: true, again_in: Duration::from_secs(196) }
        );
        assert_eq!(e.suppressed_counts().iter().find(|(r, _)| *r == Reason::TaskTooYoung).unwrap().1, 1);
        assert!(is_kill(&e.after_pass(T0 + 200.0, &v, UP, &s)));
        // Unknown start time: counted from the first time this agent saw it.
        let v = TaskView { started_unix: None, ..view("c2", "shop_cart.a2", EndpointState::Unrepaired) };
        for i in 0..5 {
            assert!(!is_kill(&e.after_pass(T0 + f64::from(i), &v, UP, &s)));
        }
        assert!(is_kill(&e.after_pass(T0 + 300.0, &v, UP, &s)));
    }

    #[test]
    fn kills_per_hour_are_capped() {
        let (mut e, s) = (Escalator::default(), Settings { host_breaker_share: 1.0, ..settings() });
        let ids: Vec<(String, String)> = (0..10).map(|i| (format!("c{i}"), format!("shop_cart.t{i}"))).collect();
        let mut kills = 0;
        for round in 0..4 {
            for (c, t) in &ids {
                let d = e.after_pass(T0 + f64::from(round), &view(c, t, EndpointState::Unrepaired), UP, &s);
                if let Decision::Kill { task, .. } = d {
                    kills += 1;
                    e.kill_finished(T0, c, &task, KillOutcome::Done);
                }
            }
        }
        assert_eq!(kills, 2);
        let limited = e.suppressed_counts().into_iter().find(|(r, _)| *r == Reason::RateLimit).unwrap().1;
        assert_eq!(limited, 8);
        // An hour after the first kills, the budget is back.
        let d = e.after_pass(T0 + 3603.0, &view("c9", "shop_cart.t9", EndpointState::Unrepaired), UP, &s);
        assert!(is_kill(&d), "{d:?}");
    }

    #[test]
    fn a_broken_host_gets_no_kills() {
        let s = settings();
        // 3 of 4 endpoints failing at once: host breaker.
        let mut e = Escalator::default();
        let healthy = view("ok", "shop_cart.ok", EndpointState::Healthy);
        e.after_pass(T0, &healthy, UP, &s);
        let mut last = Decision::Nothing;
        for round in 0..4 {
            for i in 0..3 {
                let (c, t) = (format!("c{i}"), format!("shop_cart.t{i}"));
                last = e.after_pass(T0 + f64::from(round), &view(&c, &t, EndpointState::Unrepaired), UP, &s);
                assert!(!is_kill(&last));
            }
        }
        assert!(matches!(last, Decision::Suppressed { reason: Reason::HostBreaker, .. }), "{last:?}");
        // Docker disconnected.
        let mut e = Escalator::default();
        let v = view("c1", "shop_cart.a1", EndpointState::Unrepaired);
        for i in 0..3 {
            last = e.after_pass(T0 + f64::from(i), &v, DOCKER_DOWN, &s);
        }
        assert!(matches!(last, Decision::Suppressed { reason: Reason::DockerDown, newly: true, .. }));
        // Every endpoint's host side missing (two endpoints, both without).
        let mut e = Escalator::default();
        let v1 = TaskView { host_side_missing: 1, ..view("c1", "shop_cart.a1", EndpointState::Unrepaired) };
        let v2 = TaskView { host_side_missing: 1, failing: 0, ..view("c2", "shop_cart.a2", EndpointState::Other) };
        e.after_pass(T0, &v2, UP, &s);
        for i in 0..3 {
            last = e.after_pass(T0 + f64::from(i), &v1, UP, &s);
        }
        assert!(matches!(last, Decision::Suppressed { reason: Reason::HostSideMissing, .. }), "{last:?}");
        // A single broken task among healthy ones (its host side gone with its cali0) is killed.
        let mut e = Escalator::default();
        e.after_pass(T0, &healthy, UP, &s);
        let v = TaskView { host_side_missing: 1, ..view("c1", "shop_cart.a1", EndpointState::Unrepaired) };
        for i in 0..2 {
            e.after_pass(T0 + f64::from(i), &v, UP, &s);
        }
        assert!(is_kill(&e.after_pass(T0 + 2.0, &v, UP, &s)));
    }

    #[test]
    fn failed_kills_back_off_and_never_overlap() {
        let (mut e, s) = (Escalator::default(), Settings { max_kills_per_hour: 100, ..settings() });
        let v = view("c1", "shop_cart.a1", EndpointState::Unrepaired);
        for i in 0..2 {
            e.after_pass(T0 - 2.0 + f64::from(i), &v, UP, &s);
        }
        assert!(is_kill(&e.after_pass(T0, &v, UP, &s)));
        assert_eq!(e.after_pass(T0 + 0.1, &v, UP, &s), Decision::Nothing, "one request at a time");
        assert_eq!(e.kill_finished(T0 + 0.2, "c1", "shop_cart.a1", KillOutcome::Failed), Some(Duration::from_secs(1)));
        assert!(matches!(e.after_pass(T0 + 0.5, &v, UP, &s), Decision::Wait(_)));
        assert!(is_kill(&e.after_pass(T0 + 1.3, &v, UP, &s)));
        assert_eq!(e.kill_finished(T0 + 1.4, "c1", "shop_cart.a1", KillOutcome::Failed), Some(Duration::from_secs(2)));
        assert!(!is_kill(&e.after_pass(T0 + 3.0, &v, UP, &s)));
        assert!(is_kill(&e.after_pass(T0 + 3.5, &v, UP, &s)));
        assert_eq!(e.kill_finished(T0 + 3.6, "c1", "shop_cart.a1", KillOutcome::Done), None);
        for i in 0..20 {
            assert_eq!(e.after_pass(T0 + 4.0 + f64::from(i) * 100.0, &v, UP, &s), Decision::Nothing);
        }
        assert_eq!(retry_delay(30), RETRY_MAX);
    }

    #[test]
    fn stopped_containers_leave_the_host_view() {
        let s = settings();
        let mut e = Escalator::default();
        e.after_pass(T0, &view("ok", "shop_cart.ok", EndpointState::Healthy), UP, &s);
        // Three killed tasks whose containers stopped but are not removed yet.
        for i in 0..3 {
            let (c, t) = (format!("old{i}"), format!("shop_cart.old{i}"));
            e.after_pass(T0, &view(&c, &t, EndpointState::Unrepaired), UP, &s);
            e.stopped(&c);
        }
        let v = view("c1", "shop_cart.a1", EndpointState::Unrepaired);
        for i in 0..2 {
            e.after_pass(T0 + f64::from(i), &v, UP, &s);
        }
        assert!(is_kill(&e.after_pass(T0 + 2.0, &v, UP, &s)), "no breaker from stopped containers");
    }

    #[test]
    fn dry_run_decides_but_is_never_repeated() {
        let (mut e, s) = (Escalator::default(), Settings { dry_run: true, ..settings() });
        let v = view("c1", "shop_cart.a1", EndpointState::Unrepaired);
        let kills: Vec<Decision> = (0..10).map(|i| e.after_pass(T0 + f64::from(i), &v, UP, &s)).collect();
        assert_eq!(kills.iter().filter(|d| matches!(d, Decision::Kill { dry_run: true, .. })).count(), 1);
    }

    #[test]
    fn ids_must_be_marathon_shaped() {
        assert!(marathon_ids_valid("mesos-x", "/web", "web.1f0e"));
        assert!(marathon_ids_valid("mesos-x", "/shop/cart", "shop_cart.marathon-1f0e"));
        assert!(!marathon_ids_valid("mesos-x", "web", "web.1"), "relative");
        assert!(!marathon_ids_valid("mesos-x", "/shop/../admin", "shop_.._admin.1"));
        assert!(!marathon_ids_valid("mesos-x", "/web", "other.1"));
        assert!(!marathon_ids_valid("mesos-x", "/web", "web."));
        assert!(!marathon_ids_valid("mesos-x", "/web", "web.1/../x"));
        assert!(!marathon_ids_valid("mesos-x", "/web?x=1", "web?x=1.1"));
        assert!(!marathon_ids_valid("web", "/web", "web.1"));
    }

    #[test]
    fn docker_times_parse() {
        assert_eq!(parse_docker_time("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_docker_time("2026-11-30T00:06:03.5Z"), Some(1_795_997_163.5));
        assert_eq!(parse_docker_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_docker_time("garbage"), None);
    }

    /// Passes over `c` until its decision is not a Wait (escalate_after = 3).
    fn qualify(e: &mut Escalator, c: &str, t: &str, host: HostView, s: &Settings) -> Decision {
        let mut d = Decision::Nothing;
        for i in 0..3 {
            d = e.after_pass(T0 + f64::from(i) * 2.0, &view(c, t, EndpointState::Unrepaired), host, s);
        }
        d
    }

    #[test]
    fn no_kill_before_the_host_is_known() {
        let (mut e, s) = (Escalator::default(), settings());
        let unknown = HostView { docker_up: true, known: false };
        let d = qualify(&mut e, "c1", "shop_cart.t1", unknown, &s);
        assert!(matches!(d, Decision::Suppressed { reason: Reason::HostUnknown, .. }), "{d:?}");
        let d = e.after_pass(T0 + 10.0, &view("c1", "shop_cart.t1", EndpointState::Unrepaired), UP, &s);
        assert!(is_kill(&d), "once known: {d:?}");
    }

    #[test]
    fn the_agents_own_errors_never_kill_and_many_hold_every_kill_back() {
        let (mut e, s) = (Escalator::default(), Settings { host_breaker_share: 1.0, ..settings() });
        for c in ["a0", "a1", "a2"] {
            for i in 0..4 {
                let v = view(c, "shop_cart.a", EndpointState::AgentError);
                let d = e.after_pass(T0 + f64::from(i) * 2.0, &v, UP, &s);
                assert_eq!(d, Decision::Nothing, "an agent error is never the task's: {d:?}");
            }
        }
        let d = qualify(&mut e, "c1", "shop_cart.t1", UP, &s);
        assert!(matches!(d, Decision::Suppressed { reason: Reason::AgentErrors, .. }), "{d:?}");
        // A minute later the breaker has let go.
        let d = e.after_pass(T0 + 70.0, &view("c1", "shop_cart.t1", EndpointState::Unrepaired), UP, &s);
        assert!(is_kill(&d), "{d:?}");
    }

    #[test]
    fn a_kill_never_sent_does_not_count_and_the_task_is_held_back() {
        let (mut e, s) = (Escalator::default(), Settings { max_kills_per_hour: 1, ..settings() });
        assert!(is_kill(&qualify(&mut e, "c1", "shop_cart.t1", UP, &s)));
        assert_eq!(e.budget().used(T0 + 5.0), 1);
        assert!(e.not_sent(T0 + 5.0, "c1", "shop_cart.t1", Reason::NotConfirmed), "new reason");
        let again = NOT_SENT_RECHECK;
        assert_eq!(e.budget().used(T0 + 5.0), 0, "refunded");
        let held = e.suppressed_counts().into_iter().find(|(r, _)| *r == Reason::NotConfirmed).unwrap().1;
        assert_eq!(held, 1);
        let v = view("c1", "shop_cart.t1", EndpointState::Unrepaired);
        assert!(matches!(e.after_pass(T0 + 6.0, &v, UP, &s), Decision::Wait(_)));
        assert!(is_kill(&e.after_pass(T0 + 5.0 + again.as_secs_f64(), &v, UP, &s)), "asked again later");
        assert!(!e.not_sent(T0 + 16.0, "c1", "shop_cart.t1", Reason::NotConfirmed), "the same answer again: not new");
    }

    #[test]
    fn a_restored_budget_counts_and_its_tasks_are_never_asked_again() {
        use super::super::budget::Kill;
        let kill = |task: &str| Kill { at: T0 - 60.0, app: "/shop/cart".into(), task: task.into(), dry_run: false };
        let budget = Budget::restore(vec![kill("shop_cart.t1"), kill("shop_cart.t2")], T0);
        let (mut e, s) = (Escalator::with_budget(budget), Settings { max_kills_per_hour: 2, ..settings() });
        assert_eq!(qualify(&mut e, "c1", "shop_cart.t1", UP, &s), Decision::Nothing, "asked by an earlier run");
        let d = qualify(&mut e, "c3", "shop_cart.t3", UP, &s);
        assert!(matches!(d, Decision::Suppressed { reason: Reason::RateLimit, .. }), "the budget is spent: {d:?}");
        let mut blocked = Escalator::with_budget(Budget::blocked(T0));
        let d = qualify(&mut blocked, "c3", "shop_cart.t3", UP, &s);
        assert!(matches!(d, Decision::Suppressed { reason: Reason::StateFile, .. }), "{d:?}");
    }
}
