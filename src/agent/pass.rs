//! One pass, in its own task: the probe-only shortcut, or the one pipeline under
//! its deadline (a panic or an overrun becomes an error), then a watch for a start
//! not watched yet. It reports back to the scheduler; it never holds it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tracing::warn;

use super::decide::PassPlan;
use super::queue::PassTicket;
use crate::error::MedicError;
use crate::medic::{ContainerOutcome, Medic};
use crate::netlink::watch::Watch;
use crate::report::EndpointReport;
use crate::sources::watches::watch_container;
use crate::sources::SourceCtx;
use crate::workload::Escaped;

/// What a pass produced.
pub(crate) enum PassResult {
    ProbeOnly(Vec<EndpointReport>),
    Full(Box<Result<ContainerOutcome, MedicError>>),
}

/// A finished pass, as reported to the scheduler.
pub(crate) struct PassDone {
    pub id: String,
    pub ticket: PassTicket,
    pub plan: PassPlan,
    pub result: PassResult,
    /// A subscription in the namespace it saw, when that start was not watched yet.
    pub watch: Option<Watch>,
    /// It completed (neither timed out nor panicked): a sign of progress.
    pub progress: bool,
}

/// One pass over container `id`. Whatever happens (result, error, timeout,
/// panic), it ends and reports.
pub(crate) async fn run_pass(
    medic: Arc<Medic>,
    id: String,
    plan: PassPlan,
    ticket: PassTicket,
    interrupt: Arc<Notify>,
    sources: SourceCtx,
) -> PassDone {
    let deadline = medic.config.pass_timeout;
    if let Some(last) = plan.probe_only.clone() {
        let probe = {
            let medic = medic.clone();
            async move { Ok::<_, MedicError>(medic.probe_healthy(&last).await) }
        };
        if let Ok(Some(reports)) = run_guarded(probe, deadline, &id).await {
            let result = PassResult::ProbeOnly(reports);
            return PassDone { id, ticket, plan, result, watch: None, progress: true };
        }
        // An echo failed: the full pass finds out why (and repairs).
    }
    let pass = {
        let (medic, target, mode) = (medic.clone(), id.clone(), plan.mode);
        async move { medic.run_interruptible(&target, mode, Some(&interrupt)).await }
    };
    let outcome = run_guarded(pass, deadline, &id).await;
    // A pass that ran out of time or panicked is no sign of progress.
    let progress = !matches!(outcome, Err(MedicError::Timeout { .. } | MedicError::Panic(..)));
    let watch = match &outcome {
        Ok(out) if plan.watch && plan.watched_pid != Some(out.workload.pid) => {
            out.netns.as_ref().and_then(|ns| match watch_container(ns, &id, sources.notices, sources.metrics) {
                Ok(w) => Some(w),
                Err(e) => {
                    warn!(container = %Escaped(&out.workload.container_name), error = %e, "cannot watch");
                    None
                }
            })
        }
        _ => None,
    };
    PassDone { id, ticket, plan, result: PassResult::Full(Box::new(outcome)), watch, progress }
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
