//! Calico's datastore as a source: the follower (`datastore::follow`) reports
//! changes; an outage or a recovery asks the scheduler to re-check every calico
//! container (their findings depend on whether the datastore answers), a changed
//! endpoint the container that holds it; every change re-counts the host's orphans
//! against the endpoints the scheduler knows its checked containers hold (`Held`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, info, warn};

use super::{Notice, SourceCtx};
use crate::datastore::findings::describe_orphan;
use crate::datastore::follow::{follow, Change, ReadReason};
use crate::datastore::profiles::ProfileState;
use crate::datastore::{orphans, Datastore};

/// An endpoint must lack a container for this long before it is an orphan: Docker
/// lists a new endpoint only after the plugin has written it to the datastore.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// Follows the datastore until `shutdown` flips.
pub async fn follow_datastore(ctx: SourceCtx, ds: Arc<Datastore>, shutdown: watch::Receiver<bool>) {
    ctx.metrics.enable_datastore(&ReadReason::ALL);
    ctx.metrics.datastore_up(false);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let recount = Arc::new(Notify::new());
    let follower = tokio::spawn(follow(ds.clone(), tx, shutdown.clone()));
    let counter = tokio::spawn(count_orphans(ctx.clone(), ds.clone(), recount.clone(), shutdown.clone()));
    let profiles = tokio::spawn(watch_profiles(ctx.clone(), ds.clone(), shutdown.clone()));
    while let Some(change) = rx.recv().await {
        let notice = match change {
            Change::Up(up) => {
                ctx.metrics.datastore_up(up);
                Notice::DatastoreUp(up)
            }
            Change::FullRead(reason, read) => {
                ctx.metrics.datastore_read(reason, read.endpoints, read.took.as_secs_f64());
                Notice::DatastoreChanged { endpoints: read.changed }
            }
            Change::Watched(ids) => {
                ctx.metrics.datastore_watched(ds.view().endpoints.len());
                Notice::DatastoreChanged { endpoints: ids }
            }
        };
        ctx.send(notice);
        recount.notify_one();
    }
    let _ = follower.await;
    counter.abort();
    profiles.abort();
}

/// Every `[probe] interval`: reads the profiles this host's endpoints name. A change
/// is logged and re-checks the endpoints of that profile (their `profile_missing`);
/// with `[calico] recreate_missing_profiles` a missing one is written back where absent.
async fn watch_profiles(ctx: SourceCtx, ds: Arc<Datastore>, mut shutdown: watch::Receiver<bool>) {
    // The first read once this host's endpoints are known (the follower's first full read).
    while !ds.is_loaded() {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            _ = shutdown.changed() => return,
        }
    }
    loop {
        let config = ctx.current.medic().config.clone();
        match ds.refresh_profiles().await {
            Ok(changed) => {
                for (id, state) in &changed {
                    profile_changed(&ctx, &ds, id, state, config.calico.recreate_missing_profiles).await;
                }
                ctx.metrics.profiles(&ds.profile_states());
            }
            Err(e) => debug!(error = %e, "datastore: profiles not read"),
        }
        tokio::select! {
            _ = tokio::time::sleep(config.probe.interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn profile_changed(ctx: &SourceCtx, ds: &Datastore, id: &str, state: &ProfileState, recreate: bool) {
    match state {
        ProfileState::Present => info!(profile = id, "datastore: profile present"),
        ProfileState::Missing(why) => {
            warn!(
                profile = id,
                reason = "profile_missing",
                detail = why.as_str(),
                "datastore: profile missing: Felix drops the traffic of its endpoints"
            );
            if recreate {
                match ds.recreate_profile(id).await {
                    Ok(keys) => {
                        ctx.metrics.profile_recreated(id, keys.len());
                        warn!(profile = id, keys = %keys.join(","), "datastore: wrote the missing profile back as the libnetwork plugin writes it");
                    }
                    Err(e) => warn!(profile = id, error = %e, "datastore: writing the missing profile back failed"),
                }
            }
        }
    }
    let endpoints = ds
        .with_endpoints(|e| {
            e.values().filter(|r| r.profile_ids.iter().any(|p| p == id)).map(|r| r.endpoint_id.clone()).collect()
        })
        .unwrap_or_default();
    ctx.send(Notice::DatastoreChanged { endpoints });
}

/// Re-counts orphans whenever the datastore changes (and once more after the grace
/// period while there are suspects); warns once per new orphan.
async fn count_orphans(ctx: SourceCtx, ds: Arc<Datastore>, recount: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let mut reported: Vec<String> = Vec::new();
    // Endpoint id → when it was first seen without a container.
    let mut suspects: HashMap<String, Instant> = HashMap::new();
    loop {
        // Only a suspect still in its grace period needs another look by the clock;
        // confirmed orphans are looked at again when the datastore changes.
        let now = Instant::now();
        let wait = suspects
            .values()
            .map(|since| (*since + ORPHAN_GRACE).saturating_duration_since(now))
            .filter(|left| !left.is_zero())
            .min()
            .map_or(Duration::from_secs(3600), |left| left + Duration::from_millis(10));
        tokio::select! {
            _ = recount.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let view = ds.view();
        if !view.up || !view.loaded {
            continue;
        }
        // The scheduler's own list: complete once every calico container Docker
        // listed has had a pass (until then nothing is counted).
        let Some(held) = ctx.held.endpoints() else {
            debug!("datastore: orphans not counted until every calico container has been checked");
            continue;
        };
        let candidates = orphans(&view.endpoints, &held);
        let now = Instant::now();
        suspects.retain(|id, _| candidates.contains(id));
        for id in &candidates {
            suspects.entry(id.clone()).or_insert(now);
        }
        let mut confirmed: Vec<String> = suspects
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= ORPHAN_GRACE)
            .map(|(id, _)| id.clone())
            .collect();
        confirmed.sort();
        ctx.metrics.datastore_orphans(confirmed.len());
        for id in confirmed.iter().filter(|id| !reported.contains(id)) {
            // (`detail` keeps the one-line description the check command prints)
            let detail = describe_orphan(&ds.dir, id, &view.endpoints);
            warn!(endpoint = %id, detail = %detail, "datastore: orphan endpoint");
        }
        reported = confirmed;
    }
}
