//! The datastore series, registered only when a datastore is configured (no
//! `datastore_up 0` without one).

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge};

use super::registry::{counter, counter_vec, gauge, int_gauge, Registry};
use crate::datastore::follow::ReadReason;

pub struct DatastoreMetrics {
    up: IntGauge,
    orphans: IntGauge,
    endpoints: IntGauge,
    full_reads: IntCounterVec,
    last_full_read: Gauge,
    watch_events: IntCounter,
}

impl DatastoreMetrics {
    /// Registers the datastore series; `read_reasons` pre-creates the counters.
    pub fn register(r: &Registry, read_reasons: &[ReadReason]) -> DatastoreMetrics {
        let full_reads = counter_vec(
            r,
            "datastore_full_reads_total",
            "Full reads of this host's endpoints from Calico's datastore, by reason.",
            &["reason"],
        );
        for reason in read_reasons {
            full_reads.with_label_values(&[reason.as_str()]);
        }
        let last_full_read =
            gauge(r, "datastore_full_read_seconds", "Duration of the last full read of the datastore.");
        DatastoreMetrics {
            up: int_gauge(r, "datastore_up", "1 while Calico's datastore (etcd) answers, 0 during an outage."),
            orphans: int_gauge(
                r,
                "datastore_orphans",
                "Endpoints of this host in Calico's datastore that no container holds.",
            ),
            endpoints: int_gauge(r, "datastore_endpoints", "Endpoints of this host in Calico's datastore."),
            full_reads,
            last_full_read,
            watch_events: counter(r, "datastore_watch_events_total", "Changes received through the etcd watch."),
        }
    }

    pub fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    pub fn read(&self, reason: ReadReason, endpoints: usize, seconds: f64) {
        self.full_reads.with_label_values(&[reason.as_str()]).inc();
        self.endpoints.set(endpoints as i64);
        self.last_full_read.set(seconds);
    }

    pub fn watched(&self, endpoints: usize) {
        self.watch_events.inc();
        self.endpoints.set(endpoints as i64);
    }

    pub fn set_orphans(&self, count: usize) {
        self.orphans.set(count as i64);
    }
}
