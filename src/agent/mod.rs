//! The daemon's scheduler. Sources (`crate::sources`: Docker events and lists,
//! netlink watches, timers, the datastore) send typed notices; the scheduler
//! (`scheduler`) alone owns every container's state and turns notices into passes
//! through a deduplicated queue (`queue`) with bounded concurrency. What a pass
//! must do is decided by the pure `decide::decide`; its result is accounted by the
//! pure `decide::account`, whose effects a thin executor (`executor`) applies:
//! metrics, watches, host links, re-checks, escalation. Containers that keep
//! breaking are backed off (`backoff`). Passes run in their own tasks on the one
//! pipeline (`Medic::run_interruptible`) and report back; nothing holds a lock
//! across an `.await`, and no source or pass holds the scheduler.

mod backoff;
mod budget;
mod decide;
mod escalation;
mod executor;
mod kills;
mod pass;
mod queue;
mod scheduler;
mod state;

pub use backoff::{backoff_delay, AfterPass, Backoff, ChangeDecision, PassKind, Settle};
pub use decide::{account, begin, decide, AccountCtx, DecideCtx, Effect, Outcome, PassPlan};
pub use escalation::task_view;
pub use pass::run_guarded;
pub use queue::{PassTicket, Slot};
pub use state::{ContainerState, Trigger};

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::datastore::Datastore;
use crate::http::Health;
use crate::medic::{Current, Medic};
use crate::metrics::Metrics;
use crate::sources::{self, SourceCtx};
use scheduler::{Internal, Scheduler};

/// The running agent, as the daemon sees it: reload, readiness, liveness.
pub struct Agent {
    current: Arc<Current>,
    health: Arc<Health>,
    internal: mpsc::UnboundedSender<Internal>,
}

impl Agent {
    /// Starts the scheduler and every source; they stop when `shutdown` flips (the
    /// scheduler after its in-flight passes end).
    pub fn start(
        medic: Medic,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        dry_run: bool,
        datastore: Option<Arc<Datastore>>,
        shutdown: watch::Receiver<bool>,
    ) -> (Agent, Vec<JoinHandle<()>>) {
        health.set_pass_timeout(medic.config.pass_timeout);
        let current = Current::new(medic, dry_run);
        let (notices, notices_rx) = mpsc::unbounded_channel();
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let held = Arc::default();
        let ctx = SourceCtx { current: current.clone(), metrics, health: health.clone(), notices, held };
        let scheduler = Scheduler::new(ctx.clone(), internal.clone());
        let mut tasks = vec![
            tokio::spawn(scheduler.run(notices_rx, internal_rx, shutdown.clone())),
            tokio::spawn(sources::docker::follow_docker(ctx.clone(), shutdown.clone())),
            tokio::spawn(sources::timers::periodic_resync(ctx.clone(), shutdown.clone())),
            tokio::spawn(sources::timers::probe_ticks(ctx.clone(), shutdown.clone())),
            tokio::spawn(sources::plugins::watch_plugins(ctx.clone(), shutdown.clone())),
            tokio::spawn(sources::bgp::watch_bgp(ctx.clone(), shutdown.clone())),
        ];
        if let Some(ds) = datastore {
            tasks.push(tokio::spawn(sources::datastore::follow_datastore(ctx, ds, shutdown)));
        }
        (Agent { current, health, internal }, tasks)
    }

    /// Swaps in a new pipeline (SIGHUP reload); the scheduler applies every setting
    /// it holds itself. In-flight passes finish on the old pipeline.
    pub fn reload(&self, medic: Medic, dry_run: bool) {
        self.health.set_pass_timeout(medic.config.pass_timeout);
        self.current.replace(medic, dry_run);
        let _ = self.internal.send(Internal::Reloaded);
    }

    pub fn is_ready(&self) -> bool {
        self.health.is_ready()
    }

    /// Progress-based liveness (what `/healthz` answers).
    pub fn liveness(&self) -> Result<(), String> {
        self.health.liveness()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::MedicError;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_pass_that_overruns_or_panics_becomes_an_error() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<u32, MedicError>(1)
        };
        let started = Instant::now();
        let e = run_guarded(slow, Duration::from_millis(50), "abc").await.unwrap_err();
        assert_eq!(e.code(), "timeout");
        assert!(e.to_string().contains("pass over abc timed out after 50ms"), "{e}");
        assert!(started.elapsed() < Duration::from_millis(500));

        let boom = async {
            if std::hint::black_box(true) {
                panic!("index out of bounds");
            }
            Ok::<u32, MedicError>(1)
        };
        let e = run_guarded(boom, Duration::from_secs(5), "abc").await.unwrap_err();
        assert_eq!(e.code(), "panic");
        assert!(e.to_string().contains("index out of bounds"), "{e}");

        let ok = async { Ok::<u32, MedicError>(7) };
        assert_eq!(run_guarded(ok, Duration::from_secs(5), "abc").await.unwrap(), 7);
    }
}
