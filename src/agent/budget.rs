//! The escalation clock and the budget the state file holds, for the scheduler:
//! read at start and on SIGHUP (`marathon::ledger`), kept by the escalation core.

use std::path::Path;
use std::time::Instant;

use tracing::{info, warn};

use crate::config::MarathonConfig;
use crate::marathon::budget::Budget;
use crate::marathon::ledger::{self, Loaded};
use crate::marathon::Escalator;
use crate::report::unix_now;

/// Seconds on the escalation clock: monotonic, anchored at the wall clock at start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    wall: f64,
    mono: Instant,
}

impl Clock {
    pub(crate) fn start() -> Clock {
        Clock { wall: unix_now(), mono: Instant::now() }
    }

    pub(crate) fn now(&self) -> f64 {
        self.wall + self.mono.elapsed().as_secs_f64()
    }
}

/// A kill Marathon is being asked to confirm.
#[derive(Debug)]
pub(crate) struct Pending {
    pub id: String,
    pub container: String,
    pub app: String,
    pub task: String,
}

/// The escalation core with the budget the state file holds (escalation off: empty).
pub(crate) fn restore_escalator(marathon: &MarathonConfig, now: f64) -> Escalator {
    Escalator::with_budget(restore_budget(marathon, now))
}

/// The budget the state file holds: read at start and again on SIGHUP (after
/// `calico-medic escalations --reset`, or a repaired file).
pub(crate) fn restore_budget(marathon: &MarathonConfig, now: f64) -> Budget {
    if !marathon.enabled {
        return Budget::default();
    }
    let path = Path::new(&marathon.state_file);
    match ledger::load(path) {
        Loaded::Missing => Budget::default(),
        Loaded::Kills(kills) => {
            info!(path = %path.display(), kills = kills.len(), "escalation: state restored");
            Budget::restore(kills, now)
        }
        Loaded::Unreadable(why) => {
            warn!(path = %path.display(), reason = %why, "escalation: state file unreadable; no kills for an hour");
            Budget::blocked(now)
        }
    }
}
