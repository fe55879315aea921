//! The series of new endpoints repaired at start, by path, and the pre-start path's
//! outcomes.

use prometheus::{HistogramVec, IntCounterVec};

use super::labels::{PrestartOutcome, StartPath};
use super::registry::{counter_vec, histogram_vec, Registry};

/// New endpoints repaired at start, by path, and the pre-start path's outcomes.
pub struct StartMetrics {
    repairs: IntCounterVec,
    latency: HistogramVec,
    outcomes: IntCounterVec,
    rescans: IntCounterVec,
}

/// Why the pre-start path looked at every host link again.
pub const RESCAN_REASONS: [&str; 2] = ["overflow", "lost"];

impl StartMetrics {
    pub fn register(r: &Registry) -> StartMetrics {
        let repairs = counter_vec(
            r,
            "start_repairs_total",
            "New endpoints whose MAC was repaired at start, by path: hook (by the runtime's prestart hook), before_start (by the follower, before the task's first instruction) or after_start.",
            &["path"],
        );
        let latency = histogram_vec(
            r,
            "start_repair_latency_seconds",
            "New endpoints: from the trigger (hook: the hook started; before_start: the veth moved into the sandbox; after_start: Docker's start event) to the verified repair.",
            vec![
                0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5,
                1.0, 2.5, 5.0,
            ],
            &["path"],
        );
        let outcomes = counter_vec(
            r,
            "prestart_outcomes_total",
            "New calico endpoints followed before start, by what the pre-start path did.",
            &["outcome"],
        );
        let rescans = counter_vec(
            r,
            "prestart_rescans_total",
            "Times the pre-start path looked at every host link again: its subscription overflowed (notifications lost) or was lost (subscribed anew).",
            &["reason"],
        );
        for reason in RESCAN_REASONS {
            rescans.with_label_values(&[reason]);
        }
        for path in [StartPath::Hook, StartPath::BeforeStart, StartPath::AfterStart] {
            repairs.with_label_values(&[path.as_str()]);
        }
        for o in PrestartOutcome::ALL {
            outcomes.with_label_values(&[o.as_str()]);
        }
        StartMetrics { repairs, latency, outcomes, rescans }
    }

    /// A new endpoint's MAC was repaired (and verified) by `path`, `seconds` after its trigger.
    pub fn repaired(&self, path: StartPath, seconds: f64) {
        self.repairs.with_label_values(&[path.as_str()]).inc();
        self.latency.with_label_values(&[path.as_str()]).observe(seconds.max(0.0));
    }

    /// One new endpoint's pre-start outcome.
    pub fn outcome(&self, outcome: PrestartOutcome) {
        self.outcomes.with_label_values(&[outcome.as_str()]).inc();
    }

    /// The pre-start path rescanned the host's links (`reason`: one of `RESCAN_REASONS`).
    pub fn rescan(&self, reason: &'static str) {
        self.rescans.with_label_values(&[reason]).inc();
    }
}
