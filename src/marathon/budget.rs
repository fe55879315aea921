//! The kill budget, pure: every kill asked of Marathon (time, app, task), the
//! hourly count, and the tasks never to be asked again. It is restored from the
//! state file at start (`ledger`) so a restarting agent keeps its budget, and it is
//! written before every kill is sent. Times are seconds on the escalator's clock:
//! monotonic within a run, anchored at the wall clock when the run began; times
//! restored from an earlier run are clamped to now (a clock stepped back cannot
//! make a past kill look older than it is).

use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Serialize};

/// The budget's window.
pub const HOUR: f64 = 3600.0;
/// Kills remembered (the oldest are dropped first): bounds the state file.
pub const KEPT: usize = 4096;

/// One kill asked of Marathon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kill {
    /// Unix seconds.
    pub at: f64,
    pub app: String,
    pub task: String,
    /// A dry run's decision: counted within the run, never written to the state file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

#[derive(Debug, Default)]
pub struct Budget {
    kills: VecDeque<Kill>,
    /// Tasks Marathon has confirmed killed (or gone), and every task an earlier run
    /// asked for: never asked again.
    done: HashSet<String>,
    /// No kills before this time (the state file could not be read).
    blocked_until: Option<f64>,
}

impl Budget {
    /// The budget an earlier run left, read at `now`.
    pub fn restore(kills: Vec<Kill>, now: f64) -> Budget {
        let mut b = Budget::default();
        for mut k in kills.into_iter().filter(|k| !k.dry_run && k.at.is_finite()) {
            k.at = k.at.min(now);
            b.done.insert(k.task.clone());
            b.kills.push_back(k);
        }
        b.trim();
        b
    }

    /// The state file was unreadable: no kills for an hour.
    pub fn blocked(now: f64) -> Budget {
        Budget { blocked_until: Some(now + HOUR), ..Budget::default() }
    }

    /// Until when kills are blocked, if they are now.
    pub fn blocked_until(&self, now: f64) -> Option<f64> {
        self.blocked_until.filter(|until| now < *until)
    }

    pub fn asked(&self, task: &str) -> bool {
        self.done.contains(task)
    }

    /// Kills within the last hour.
    pub fn used(&self, now: f64) -> usize {
        self.kills.iter().filter(|k| now - k.at < HOUR).count()
    }

    /// When the oldest kill of the last hour leaves the window.
    pub fn free_at(&self, now: f64) -> f64 {
        self.kills
            .iter()
            .filter(|k| now - k.at < HOUR)
            .map(|k| k.at + HOUR)
            .fold(f64::INFINITY, f64::min)
            .min(now + HOUR)
    }

    /// A kill is being asked (counted now, whatever Marathon answers).
    pub fn record(&mut self, now: f64, app: &str, task: &str, dry_run: bool) {
        self.kills.push_back(Kill { at: now, app: app.to_string(), task: task.to_string(), dry_run });
        if dry_run {
            // Never repeated, as a real kill would not be.
            self.done.insert(task.to_string());
        }
        self.trim();
    }

    /// Records a kill about to be sent unless one is recorded for `task` already (a
    /// SIGHUP re-read of the state file between decision and sending drops it).
    pub fn ensure(&mut self, now: f64, app: &str, task: &str) {
        if !self.kills.iter().any(|k| k.task == task && !k.dry_run) {
            self.record(now, app, task, false);
        }
    }

    /// The last kill recorded for `task` was never sent (not confirmed, or the state
    /// file could not be written): it does not count.
    pub fn refund(&mut self, task: &str) {
        if let Some(i) = self.kills.iter().rposition(|k| k.task == task) {
            self.kills.remove(i);
        }
    }

    /// Marathon killed the task (or it was already gone).
    pub fn done(&mut self, task: &str) {
        self.done.insert(task.to_string());
    }

    /// What the state file holds: the real kills.
    pub fn persisted(&self) -> Vec<Kill> {
        self.kills.iter().filter(|k| !k.dry_run).cloned().collect()
    }

    fn trim(&mut self) {
        while self.kills.len() > KEPT {
            self.kills.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(at: f64, task: &str) -> Kill {
        Kill { at, app: "/shop".into(), task: task.into(), dry_run: false }
    }

    #[test]
    fn an_earlier_runs_kills_count_and_are_never_asked_again() {
        let now = 10_000.0;
        let b = Budget::restore(vec![kill(now - 4000.0, "shop.a"), kill(now - 10.0, "shop.b")], now);
        assert_eq!(b.used(now), 1, "only the last hour counts");
        assert!(b.asked("shop.a") && b.asked("shop.b"));
        assert_eq!(b.free_at(now), now - 10.0 + HOUR);
        assert_eq!(b.persisted().len(), 2);
    }

    #[test]
    fn a_kill_from_the_future_is_clamped_to_now() {
        // The wall clock was stepped back between runs: the kill still counts a full hour.
        let now = 10_000.0;
        let b = Budget::restore(vec![kill(now + 86_400.0, "shop.a")], now);
        assert_eq!(b.used(now + HOUR - 1.0), 1);
        assert_eq!(b.used(now + HOUR), 0);
    }

    #[test]
    fn refunds_and_dry_runs() {
        let mut b = Budget::default();
        b.record(0.0, "/shop", "shop.a", false);
        b.record(1.0, "/shop", "shop.b", true);
        assert_eq!(b.used(2.0), 2);
        assert!(b.asked("shop.b") && !b.asked("shop.a"), "a real kill counts as asked once Marathon answers");
        assert_eq!(b.persisted(), vec![kill(0.0, "shop.a")], "dry runs are never written");
        b.refund("shop.a");
        assert_eq!(b.used(2.0), 1);
        b.done("shop.c");
        assert!(b.asked("shop.c"));
        b.ensure(3.0, "/shop", "shop.d");
        b.ensure(4.0, "/shop", "shop.d");
        assert_eq!(b.used(5.0), 2, "ensured once");
    }

    #[test]
    fn an_unreadable_state_blocks_kills_for_an_hour_and_the_file_stays_bounded() {
        let b = Budget::blocked(100.0);
        assert_eq!(b.blocked_until(100.0), Some(100.0 + HOUR));
        assert_eq!(b.blocked_until(100.0 + HOUR), None);
        let mut b = Budget::default();
        for i in 0..(KEPT + 10) {
            b.record(i as f64, "/shop", &format!("shop.{i}"), false);
        }
        assert_eq!(b.persisted().len(), KEPT);
    }
}
