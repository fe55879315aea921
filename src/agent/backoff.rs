//! Backoff for endpoints that keep breaking: a pure policy over `Instant`s passed
//! in, so every rule (flapping, settle, allow-once, doubling and cap) is unit-tested
//! without a clock, root or Docker.
//!
//! Rules: a container repaired `max_repairs` times within `window` is backed off
//! for `initial · 2^(level-1)` (capped at `max`); while backed off, passes only
//! report, changes trigger at most one such pass a second, and once the namespace
//! has been quiet for `settle` one repair is allowed, so a flapping endpoint is
//! fixed as soon as it stops flapping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::BackoffConfig;

/// While backed off, changes trigger at most one report-only pass per this period.
pub const BACKED_OFF_PASS_INTERVAL: Duration = Duration::from_secs(1);

/// What the next pass of a container may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKind {
    Repair,
    /// Backed off: report, write nothing.
    BackedOff,
}

/// What to do about a netlink change in a container's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeDecision {
    /// Queue a pass now.
    pub pass_now: bool,
    /// Start the settle timer (none is running yet).
    pub start_settle_timer: bool,
}

/// The settle timer's view when it wakes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Changes kept coming: sleep until then and look again.
    WaitUntil(Instant),
    /// Quiet long enough: one repair is allowed; queue a pass.
    AllowRepair,
    /// Nothing to wait for any more.
    Done,
}

/// What the scheduler should do after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AfterPass {
    /// The container just got backed off: (repairs within the window, delay).
    pub backed_off: Option<(usize, Duration)>,
    /// Re-check a still-broken, backed-off container after this long.
    pub recheck_in: Option<Duration>,
}

/// Per-container backoff state.
#[derive(Debug, Default)]
pub struct Backoff {
    /// Times of recent passes that wrote repairs.
    recent_repairs: VecDeque<Instant>,
    level: u32,
    until: Option<Instant>,
    /// While backed off: the namespace counts as settled once no change arrived until then.
    quiet_deadline: Option<Instant>,
    settle_timer_running: bool,
    /// One repair is allowed despite backoff (the namespace settled).
    allow_once: bool,
    last_backed_off_pass: Option<Instant>,
    recheck_scheduled: bool,
}

/// initial · 2^(level-1), capped at max.
pub fn backoff_delay(cfg: &BackoffConfig, level: u32) -> Duration {
    let factor = 2u32.saturating_pow(level.saturating_sub(1).min(20));
    cfg.initial.saturating_mul(factor).min(cfg.max)
}

impl Backoff {
    pub fn backed_off(&self, now: Instant) -> bool {
        self.until.is_some_and(|t| t > now)
    }

    /// The kind a pass starting now would be (pure: `begin_pass` commits it).
    pub fn kind_at(&self, now: Instant) -> PassKind {
        if self.backed_off(now) && !self.allow_once {
            PassKind::BackedOff
        } else {
            PassKind::Repair
        }
    }

    /// Decides the kind of a pass that starts now (consumes a settle allowance).
    pub fn begin_pass(&mut self, now: Instant) -> PassKind {
        if self.backed_off(now) && !std::mem::take(&mut self.allow_once) {
            self.last_backed_off_pass = Some(now);
            PassKind::BackedOff
        } else {
            PassKind::Repair
        }
    }

    /// A change in the namespace at `now`.
    pub fn on_change(&mut self, now: Instant, cfg: &BackoffConfig) -> ChangeDecision {
        if !self.backed_off(now) {
            return ChangeDecision { pass_now: true, start_settle_timer: false };
        }
        // Still changing: push the settle point out; repair once it holds.
        self.quiet_deadline = Some(now + cfg.settle);
        let start_settle_timer = !std::mem::replace(&mut self.settle_timer_running, true);
        let recent_pass = self.last_backed_off_pass.is_some_and(|t| now.duration_since(t) < BACKED_OFF_PASS_INTERVAL);
        ChangeDecision { pass_now: !recent_pass, start_settle_timer }
    }

    /// The settle timer woke up at `now`.
    pub fn settle_check(&mut self, now: Instant) -> Settle {
        match self.quiet_deadline {
            None => {
                self.settle_timer_running = false;
                Settle::Done
            }
            Some(d) if d > now => Settle::WaitUntil(d),
            Some(_) => {
                self.settle_timer_running = false;
                self.quiet_deadline = None;
                self.allow_once = true;
                Settle::AllowRepair
            }
        }
    }

    /// A scheduled re-check fired (another may be scheduled again).
    pub fn recheck_fired(&mut self) {
        self.recheck_scheduled = false;
    }

    /// Accounts a finished pass: `wrote` = at least one repair succeeded.
    pub fn after_pass(
        &mut self,
        now: Instant,
        wrote: bool,
        all_healthy: bool,
        kind: PassKind,
        cfg: &BackoffConfig,
    ) -> AfterPass {
        let mut out = AfterPass::default();
        while self.recent_repairs.front().is_some_and(|t| now.duration_since(*t) > cfg.window) {
            self.recent_repairs.pop_front();
        }
        if wrote {
            self.recent_repairs.push_back(now);
            if self.recent_repairs.len() as u32 >= cfg.max_repairs {
                self.level += 1;
                let delay = backoff_delay(cfg, self.level);
                self.until = Some(now + delay);
                out.backed_off = Some((self.recent_repairs.len(), delay));
            }
        } else if self.recent_repairs.is_empty() && !self.backed_off(now) {
            self.level = 0;
            self.until = None;
        }
        if !all_healthy && kind == PassKind::BackedOff && !self.recheck_scheduled {
            if let Some(until) = self.until {
                self.recheck_scheduled = true;
                out.recheck_in = Some(until.saturating_duration_since(now));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BackoffConfig {
        BackoffConfig {
            max_repairs: 3,
            window: Duration::from_secs(10),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            settle: Duration::from_millis(300),
        }
    }

    const MS: Duration = Duration::from_millis(1);

    /// Repairs `n` times, `gap` apart, starting at `t`; returns the time after the last.
    fn repair_n(b: &mut Backoff, mut t: Instant, n: u32, gap: Duration) -> (Instant, AfterPass) {
        let mut last = AfterPass::default();
        for _ in 0..n {
            assert_eq!(b.begin_pass(t), PassKind::Repair);
            last = b.after_pass(t, true, true, PassKind::Repair, &cfg());
            t += gap;
        }
        (t, last)
    }

    #[test]
    fn delay_doubles_and_caps() {
        let c = cfg();
        assert_eq!(backoff_delay(&c, 1), Duration::from_secs(1));
        assert_eq!(backoff_delay(&c, 2), Duration::from_secs(2));
        assert_eq!(backoff_delay(&c, 3), Duration::from_secs(4));
        assert_eq!(backoff_delay(&c, 4), Duration::from_secs(8));
        assert_eq!(backoff_delay(&c, 40), Duration::from_secs(8));
    }

    #[test]
    fn flapping_endpoint_is_backed_off_after_max_repairs_in_window() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let (_, last) = repair_n(&mut b, t0, 2, 50 * MS);
        assert_eq!(last.backed_off, None);
        let t = t0 + 100 * MS;
        assert_eq!(b.begin_pass(t), PassKind::Repair);
        let out = b.after_pass(t, true, true, PassKind::Repair, &cfg());
        assert_eq!(out.backed_off, Some((3, Duration::from_secs(1))));
        assert!(b.backed_off(t + 999 * MS));
        assert_eq!(b.begin_pass(t + 10 * MS), PassKind::BackedOff);
        assert!(!b.backed_off(t + Duration::from_secs(1)));
    }

    #[test]
    fn repairs_spread_beyond_the_window_never_back_off() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let (t, last) = repair_n(&mut b, t0, 10, Duration::from_secs(6));
        assert_eq!(last.backed_off, None);
        assert_eq!(b.begin_pass(t), PassKind::Repair);
    }

    #[test]
    fn each_further_backoff_doubles_until_the_cap() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let mut t = t0;
        let mut delays = Vec::new();
        for _ in 0..5 {
            // Keep breaking: every pass that is allowed repairs.
            loop {
                let kind = b.begin_pass(t);
                let out = b.after_pass(t, kind == PassKind::Repair, true, kind, &cfg());
                if let Some((_, d)) = out.backed_off {
                    delays.push(d);
                    t += d; // wait out this backoff
                    break;
                }
                t += 10 * MS;
            }
        }
        let secs: Vec<u64> = delays.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 8]);
    }

    #[test]
    fn level_resets_once_quiet_and_not_backed_off() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let (t, last) = repair_n(&mut b, t0, 3, 10 * MS);
        assert!(last.backed_off.is_some());
        // Long after: a pass with nothing to write (window emptied) resets the level.
        let later = t + Duration::from_secs(30);
        b.after_pass(later, false, true, PassKind::Repair, &cfg());
        let (_, again) = repair_n(&mut b, later, 3, 10 * MS);
        assert_eq!(again.backed_off.map(|(_, d)| d), Some(Duration::from_secs(1)), "back to the initial delay");
    }

    #[test]
    fn changes_while_backed_off_run_at_most_one_report_pass_per_second_and_arm_settle_once() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let (mut t, _) = repair_n(&mut b, t0, 3, 10 * MS);
        let first = b.on_change(t, &cfg());
        assert_eq!(first, ChangeDecision { pass_now: true, start_settle_timer: true });
        assert_eq!(b.begin_pass(t), PassKind::BackedOff);
        t += 50 * MS;
        let second = b.on_change(t, &cfg());
        assert_eq!(
            second,
            ChangeDecision { pass_now: false, start_settle_timer: false },
            "within 1 s of the last pass"
        );
        t += Duration::from_millis(960);
        assert!(b.on_change(t, &cfg()).pass_now, "a second later another report-only pass may run");
    }

    #[test]
    fn settle_allows_exactly_one_repair_once_quiet() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let (t, _) = repair_n(&mut b, t0, 3, 10 * MS);
        b.on_change(t, &cfg());
        // Another change 100 ms later pushes the settle point out.
        b.on_change(t + 100 * MS, &cfg());
        assert_eq!(b.settle_check(t + 300 * MS), Settle::WaitUntil(t + 400 * MS));
        assert_eq!(b.settle_check(t + 400 * MS), Settle::AllowRepair);
        assert!(b.backed_off(t + 400 * MS));
        assert_eq!(b.begin_pass(t + 401 * MS), PassKind::Repair, "the allowance");
        assert_eq!(b.begin_pass(t + 402 * MS), PassKind::BackedOff, "only once");
        assert_eq!(b.settle_check(t + 500 * MS), Settle::Done);
        // The timer can be armed again by the next change.
        assert!(b.on_change(t + 600 * MS, &cfg()).start_settle_timer);
    }

    #[test]
    fn still_broken_backed_off_container_is_rechecked_when_backoff_ends_once() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let (t, last) = repair_n(&mut b, t0, 3, 10 * MS);
        let until = last.backed_off.unwrap().1;
        let kind = b.begin_pass(t);
        assert_eq!(kind, PassKind::BackedOff);
        let out = b.after_pass(t, false, false, kind, &cfg());
        let recheck = out.recheck_in.expect("a recheck at the end of the backoff");
        assert!(recheck <= until && recheck > until - 100 * MS, "{recheck:?}");
        assert_eq!(b.after_pass(t, false, false, PassKind::BackedOff, &cfg()).recheck_in, None, "not twice");
        b.recheck_fired();
        assert!(b.after_pass(t, false, false, PassKind::BackedOff, &cfg()).recheck_in.is_some());
        // A healthy backed-off container needs no recheck.
        let mut h = Backoff::default();
        repair_n(&mut h, t0, 3, 10 * MS);
        assert_eq!(h.after_pass(t, false, true, PassKind::BackedOff, &cfg()).recheck_in, None);
    }
}
