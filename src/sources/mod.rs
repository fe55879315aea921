//! What the scheduler learns the world from. Each source runs on its own and sends
//! typed notices over one channel; none holds the scheduler or its state:
//!
//! - `docker`: the event stream (resumed after reconnects) and the running list
//!   (at start, after every reconnect, and every `resync_interval`: `timers`);
//! - `watches`: netlink subscriptions in each container's namespace and on the host;
//! - `timers`: probe ticks and periodic resyncs;
//! - `datastore`: Calico's etcd (the follower's changes; the orphan count).

pub mod datastore;
pub mod docker;
pub mod timers;
pub mod watches;

use std::sync::Arc;

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
}

impl SourceCtx {
    /// Sends a notice; false once the scheduler is gone (shutting down).
    pub fn send(&self, notice: Notice) -> bool {
        self.notices.send(notice).is_ok()
    }
}
