//! What the scheduler knows per container: plain data, owned by the scheduler
//! alone (no lock), changed only by `decide::begin` and `decide::account` and by
//! the scheduler's notice handlers.

use std::sync::Arc;

use tokio::sync::Notify;

use super::backoff::Backoff;
use super::queue::Slot;
use crate::marathon::Policy;
use crate::report::EndpointReport;

/// Why a container is being looked at. Event-like triggers carry their own
/// timestamp so repair latency is measured from the break, not from the pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    Resync,
    Probe,
    Recheck,
    DockerEvent {
        unix_seconds: f64,
    },
    /// The container (re)started: nothing could be repaired before this moment.
    Started {
        unix_seconds: f64,
    },
    Watch {
        unix_seconds: f64,
    },
}

#[derive(Debug, Default)]
pub struct ContainerState {
    pub slot: Slot,
    pub backoff: Backoff,
    /// Earliest break/event timestamp not yet answered by a verified repair.
    pub pending_event: Option<f64>,
    /// (healthy, total) endpoints after the last pass; None = not checked yet.
    pub endpoints: Option<(usize, usize)>,
    /// Known calico container (from a network-connect event) awaiting its first pass.
    pub calico_hint: bool,
    /// The start (PID) of it whose namespace is watched; the scheduler holds the watch.
    pub watched_pid: Option<u32>,
    /// Host-side interface indexes of its endpoints (for the host watch).
    pub host_ifindexes: Vec<u32>,
    /// Fired when its namespace changes during a pass: cuts that pass's probes short.
    pub interrupt: Arc<Notify>,
    /// Docker endpoint ids of its calico endpoints (datastore changes find it by these).
    pub endpoint_ids: Vec<String>,
    /// Their IPv4 addresses (a datastore record of another endpoint holding one of them
    /// makes it a duplicate), and whether its last pass found one shared.
    pub endpoint_ips: Vec<std::net::Ipv4Addr>,
    pub ip_shared: bool,
    /// Its policy as of its last pass (the per-policy gauge).
    pub policy: Option<Policy>,
    /// Docker's timestamp of its last start event (unix seconds).
    pub started_at: Option<f64>,
    /// The reports of its last pass when every endpoint was healthy and reachable,
    /// for the PID they were made for: a probe tick only re-probes these.
    pub last_healthy: Option<(u32, Vec<EndpointReport>)>,
    /// A trigger other than a probe tick arrived since its last pass began.
    pub full_pass_wanted: bool,
    /// The endpoint errors of its last pass (logged when they change, not every pass).
    pub endpoint_errors: Vec<(String, &'static str)>,
}

impl ContainerState {
    /// Records why it is wanted; true when it must be sent to the queue now.
    pub fn want(&mut self, trigger: Trigger) -> bool {
        match trigger {
            Trigger::DockerEvent { unix_seconds } | Trigger::Watch { unix_seconds } => {
                self.pending_event = Some(self.pending_event.map_or(unix_seconds, |p| p.min(unix_seconds)));
            }
            Trigger::Started { unix_seconds } => {
                self.pending_event = Some(unix_seconds);
                self.started_at = Some(unix_seconds);
            }
            Trigger::Recheck => self.backoff.recheck_fired(),
            Trigger::Resync | Trigger::Probe => {}
        }
        self.full_pass_wanted |= !matches!(trigger, Trigger::Probe);
        self.slot.enqueue()
    }

    /// It died: its namespace is gone; a pass already running must not publish what it saw.
    pub fn died(&mut self) {
        self.slot.invalidate();
        self.endpoints = None;
        self.pending_event = None;
        self.watched_pid = None;
    }
}

/// (healthy, unhealthy, unknown) endpoints over all containers.
pub fn endpoint_gauges<'a>(states: impl Iterator<Item = &'a ContainerState>) -> (usize, usize, usize) {
    let (mut healthy, mut total, mut unknown) = (0, 0, 0);
    for st in states {
        match st.endpoints {
            Some((h, t)) => {
                healthy += h;
                total += t;
            }
            None if st.calico_hint => unknown += 1,
            None => {}
        }
    }
    (healthy, total - healthy, unknown)
}
