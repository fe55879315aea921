//! Timers as sources: a probe tick every `probe.interval` (±10% jitter, so hosts do
//! not probe in lockstep) and the periodic full resync (the safety net under
//! events and watches).

use tokio::sync::watch;
use tracing::warn;

use super::docker::resync;
use super::{Notice, SourceCtx};

/// Sends a probe tick every `probe.interval` while probes are enabled.
pub async fn probe_ticks(ctx: SourceCtx, mut shutdown: watch::Receiver<bool>) {
    loop {
        let probe = ctx.current.medic().config.probe.clone();
        let wait = probe.interval.mul_f64(0.9 + 0.2 * rand::random::<f64>());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if probe.enabled && !ctx.send(Notice::ProbeTick) {
            return;
        }
    }
}

/// Lists Docker's running containers every `resync_interval` (once ready).
pub async fn periodic_resync(ctx: SourceCtx, mut shutdown: watch::Receiver<bool>) {
    loop {
        let interval = ctx.current.medic().config.resync_interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if ctx.health.is_ready() {
            if let Err(e) = resync(&ctx).await {
                warn!(error = %e, "periodic resync failed");
            }
        }
    }
}
