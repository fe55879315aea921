//! What the scheduler learns the world from. Each source runs on its own and sends
//! typed notices over one channel; none holds the scheduler or its state:
//!
//! - `docker`: the event stream (resumed after reconnects) and the running list
//!   (at start, after every reconnect, and every `resync_interval`: `timers`);
//! - `watches`: netlink subscriptions in each container's namespace and on the host;
//! - `timers`: probe ticks and periodic resyncs;
//! - `datastore`: Calico's etcd (the follower's changes; the orphan count);
//! - `plugins`: whether Calico's Docker plugins answer (metrics and log only).

pub mod bgp;
pub mod datastore;
pub mod docker;
pub mod plugins;
pub mod timers;
pub mod watches;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use crate::http::Health;
use crate::medic::Current;
use crate::metrics::Metrics;
use crate::netlink::watch::ChangeKind;

/// Something the scheduler should know.
#[derive(Debug)]
pub enum Notice {
    /// Docker: the container (re)started at Docker's timestamp.
    Started { id: String, unix_seconds: f64 },
    /// Docker: connected to (or disconnected from) a calico network.
    CalicoNetwork { id: String, connect: bool, unix_seconds: f64 },
    /// Docker: it died; its namespace is gone.
    Died { id: String },
    /// Docker: it was removed.
    Destroyed { id: String },
    /// Docker's running containers (id, on a calico network): the full resync.
    Listed { running: Vec<(String, bool)> },
    /// Netlink changes in a container's namespace (at least one; `pending` is set
    /// while this notice waits, so a flood of changes is one notice at a time).
    Changed { id: String, kind: ChangeKind, pending: std::sync::Arc<std::sync::atomic::AtomicBool> },
    /// A netlink change on the host (the scheduler maps the interface to its container).
    HostChanged { ifindex: u32, kind: ChangeKind },
    /// A subscription overflowed: changes were lost (`None`: the host's).
    Overflow { id: Option<String> },
    /// A subscription's reader stopped (`None`: the host's).
    Lost { id: Option<String> },
    /// The datastore answers again, or stopped answering.
    DatastoreUp(bool),
    /// These datastore endpoints (Docker endpoint ids) changed.
    DatastoreChanged { endpoints: Vec<String> },
    /// Look at these containers again (something about them outside their namespace
    /// changed, e.g. an address another container of this host holds too).
    Recheck { containers: Vec<String> },
    /// Time to re-probe every checked container.
    ProbeTick,
}

pub type Notices = mpsc::UnboundedSender<Notice>;

/// What every source may use: the configuration in force, metrics, liveness, and
/// the channel to the scheduler.
#[derive(Clone)]
pub struct SourceCtx {
    pub current: Arc<Current>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub notices: Notices,
    /// The calico endpoints of the containers the scheduler has checked.
    pub held: Arc<Held>,
}

/// The Docker endpoint ids of every calico container the scheduler has checked,
/// published by the scheduler (its only writer) for the orphan count: the agent's
/// own list, not a `docker ps` per count.
#[derive(Default)]
pub struct Held {
    by_container: RwLock<HashMap<String, Vec<String>>>,
    /// Every calico container Docker listed has had a pass (the list is the host's).
    complete: AtomicBool,
}

impl Held {
    pub fn set(&self, container: &str, endpoints: &[String]) {
        let mut map = self.by_container.write().unwrap_or_else(|p| p.into_inner());
        if endpoints.is_empty() {
            map.remove(container);
        } else if map.get(container).is_none_or(|e| e.as_slice() != endpoints) {
            map.insert(container.to_string(), endpoints.to_vec());
        }
    }

    pub fn set_complete(&self, complete: bool) {
        self.complete.store(complete, Ordering::Relaxed);
    }

    /// Every endpoint id held on this host; `None` until the host is known whole.
    pub fn endpoints(&self) -> Option<HashSet<String>> {
        if !self.complete.load(Ordering::Relaxed) {
            return None;
        }
        let map = self.by_container.read().unwrap_or_else(|p| p.into_inner());
        Some(map.values().flatten().cloned().collect())
    }
}

impl SourceCtx {
    /// Sends a notice; false once the scheduler is gone (shutting down).
    pub fn send(&self, notice: Notice) -> bool {
        self.notices.send(notice).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_endpoints_are_counted_only_once_the_host_is_known_whole() {
        let held = Held::default();
        held.set("c1", &["e1".into(), "e2".into()]);
        assert_eq!(held.endpoints(), None, "not before every calico container had a pass");
        held.set_complete(true);
        assert_eq!(held.endpoints().unwrap().len(), 2);
        held.set("c1", &[]);
        held.set("c2", &["e3".into()]);
        assert_eq!(held.endpoints().unwrap(), HashSet::from(["e3".to_string()]));
    }
}
