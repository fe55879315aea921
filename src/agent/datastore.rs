//! The agent's side of Calico's datastore: the follower (`datastore::follow`) reports
//! changes; a changed endpoint re-checks the container that holds it (so
//! `datastore_endpoint_missing` appears within the watch's latency), an outage or
//! a recovery re-checks every calico container (their findings depend on whether
//! the datastore answers), and every change re-counts the host's orphans.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, warn};

use super::{Agent, Trigger};
use crate::datastore::findings::describe_orphan;
use crate::datastore::follow::{follow, Change, ReadReason};
use crate::datastore::{orphans, Datastore};

/// An endpoint must lack a container for this long before it is an orphan: Docker
/// lists a new endpoint only after the plugin has written it to the datastore.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct DatastoreState {
    /// Endpoint id → when it was first seen without a container.
    suspects: Mutex<HashMap<String, Instant>>,
    /// Wakes the orphan counter.
    recount: Notify,
}

impl Agent {
    /// Follows the datastore and acts on its changes until `shutdown` flips.
    pub async fn follow_datastore(self: Arc<Self>, ds: Arc<Datastore>, shutdown: watch::Receiver<bool>) {
        self.metrics.enable_datastore(&ReadReason::ALL);
        self.metrics.datastore_up(false);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let follower = tokio::spawn(follow(ds.clone(), tx, shutdown.clone()));
        let counter = tokio::spawn(self.clone().count_orphans(ds.clone(), shutdown.clone()));
        while let Some(change) = rx.recv().await {
            match change {
                Change::Up(up) => {
                    self.metrics.datastore_up(up);
                    self.recheck_all_calico();
                }
                Change::FullRead(reason, read) => {
                    self.metrics.datastore_read(reason, read.endpoints, read.took.as_secs_f64());
                    self.recheck_endpoints(&read.changed);
                }
                Change::Watched(ids) => {
                    self.metrics.datastore_watched(ds.view().endpoints.len());
                    self.recheck_endpoints(&ids);
                }
            }
            self.datastore.recount.notify_one();
        }
        let _ = follower.await;
        counter.abort();
    }

    /// Queues the containers holding these endpoints, and those in their first pass
    /// (their endpoints are not known yet; a queued pass re-runs once it finishes),
    /// so a pass that read the datastore just before the change is not the last word.
    fn recheck_endpoints(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let containers: Vec<String> = {
            let c = self.containers();
            c.by_id
                .iter()
                .filter(|(_, st)| {
                    st.endpoint_ids.iter().any(|e| ids.contains(e))
                        || (st.endpoint_ids.is_empty() && !st.slot.is_idle())
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        debug!(
            endpoints = ids.len(),
            containers = containers.len(),
            "datastore: endpoints changed; re-checking their containers"
        );
        for id in containers {
            self.enqueue(&id, Trigger::Resync);
        }
    }

    /// Queues every container known to be (or hinted as) on a calico network.
    fn recheck_all_calico(&self) {
        let ids: Vec<String> = {
            let c = self.containers();
            c.by_id
                .iter()
                .filter(|(_, st)| st.endpoints.is_some() || st.calico_hint)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in ids {
            self.enqueue(&id, Trigger::Resync);
        }
    }

    /// Re-counts orphans whenever the datastore changes (and once more after the
    /// grace period while there are suspects); warns once per new orphan.
    async fn count_orphans(self: Arc<Self>, ds: Arc<Datastore>, mut shutdown: watch::Receiver<bool>) {
        let mut reported: Vec<String> = Vec::new();
        loop {
            let wait = if self.datastore.suspects.lock().unwrap().is_empty() { None } else { Some(ORPHAN_GRACE) };
            tokio::select! {
                _ = self.datastore.recount.notified() => {}
                _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))), if wait.is_some() => {}
                _ = shutdown.changed() => return,
            }
            let view = ds.view();
            if !view.up || !view.loaded {
                continue;
            }
            let docker = self.medic().docker.clone();
            let held = match docker.calico_endpoint_ids().await {
                Ok(ids) => ids,
                Err(e) => {
                    debug!(error = %e, "datastore: cannot count orphans");
                    continue;
                }
            };
            let candidates = orphans(&view.endpoints, &held);
            let now = Instant::now();
            let confirmed: Vec<String> = {
                let mut suspects = self.datastore.suspects.lock().unwrap();
                suspects.retain(|id, _| candidates.contains(id));
                for id in &candidates {
                    suspects.entry(id.clone()).or_insert(now);
                }
                let mut c: Vec<String> = suspects
                    .iter()
                    .filter(|(_, since)| now.duration_since(**since) >= ORPHAN_GRACE)
                    .map(|(id, _)| id.clone())
                    .collect();
                c.sort();
                c
            };
            self.metrics.datastore_orphans(confirmed.len());
            for id in confirmed.iter().filter(|id| !reported.contains(id)) {
                // (`detail` keeps the one-line description the check command prints)
                warn!(
                    endpoint = %id,
                    detail = %describe_orphan(&ds.dir, id, &view.endpoints),
                    "datastore: orphan endpoint"
                );
            }
            reported = confirmed;
        }
    }
}
