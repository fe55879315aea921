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
mod decide;
mod escalation;
mod executor;
mod queue;
mod scheduler;
mod state;

pub use backoff::{backoff_delay, AfterPass, Backoff, ChangeDecision, PassKind, Settle};
pub use decide::{account, begin, decide, AccountCtx, DecideCtx, Effect, Outcome, PassPlan};
pub use escalation::task_view;
pub use queue::{PassTicket, Slot};
pub use state::{ContainerState, Trigger};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::datastore::Datastore;
use crate::error::MedicError;
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
        let ctx = SourceCtx { current: current.clone(), metrics, health: health.clone(), notices };
        let scheduler = Scheduler::new(ctx.clone(), internal.clone());
        let mut tasks = vec![
            tokio::spawn(scheduler.run(notices_rx, internal_rx, shutdown.clone())),
            tokio::spawn(sources::docker::follow_docker(ctx.clone(), shutdown.clone())),
            tokio::spawn(sources::timers::periodic_resync(ctx.clone(), shutdown.clone())),
            tokio::spawn(sources::timers::probe_ticks(ctx.clone(), shutdown.clone())),
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

/// Runs one pass in its own task under `deadline`: a pass that overruns is aborted
/// (`Timeout`), one that panics is caught through its JoinError (`Panic`); either
/// way the caller gets an error and goes on.
pub async fn run_guarded<T: Send + 'static>(
    pass: impl std::future::Future<Output = Result<T, MedicError>> + Send + 'static,
    deadline: Duration,
    who: &str,
) -> Result<T, MedicError> {
    let task = tokio::spawn(pass);
    let abort = task.abort_handle();
    match tokio::time::timeout(deadline, task).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(join)) => {
            let why = match join.try_into_panic() {
                Ok(payload) => payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-text panic".into()),
                Err(join) => join.to_string(),
            };
            Err(MedicError::Panic(who.to_string(), why))
        }
        Err(_) => {
            abort.abort();
            Err(MedicError::timeout(format!("pass over {who}"), deadline))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

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
