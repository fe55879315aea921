//! The cluster IPAM job's series (`calico-medic ipam run`), registered only there.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGaugeVec};

use super::registry::{counter, counter_vec, gauge, gauge_vec, Registry};

/// The `state` label values of `ipam_addresses`.
pub const STATES: [&str; 5] = ["allocated", "in_use", "leak_candidate", "unallocated_in_use", "double"];

pub struct IpamMetrics {
    addresses: IntGaugeVec,
    pool_size: IntGaugeVec,
    checks: IntCounterVec,
    last_check: Gauge,
    released: IntCounter,
    conflicts: IntCounter,
}

impl IpamMetrics {
    pub fn register(r: &Registry) -> IpamMetrics {
        let checks = counter_vec(r, "ipam_checks_total", "Checks of the cluster's IPAM, by result.", &["result"]);
        for result in ["ok", "error"] {
            checks.with_label_values(&[result]);
        }
        IpamMetrics {
            addresses: gauge_vec(
                r,
                "ipam_addresses",
                "Addresses of each IP pool by state at the last check (leak_candidate: allocated, handle-less, held by no endpoint of any host, not a tunnel address; double: held twice or in broken block bookkeeping).",
                &["pool", "state"],
            ),
            pool_size: gauge_vec(r, "ipam_pool_addresses", "Addresses in each IP pool.", &["pool"]),
            checks,
            last_check: gauge(
                r,
                "ipam_last_check_timestamp_seconds",
                "Unix time of the last successful check of the cluster's IPAM.",
            ),
            released: counter(r, "ipam_released_total", "Leaked addresses released (compare-and-swap written)."),
            conflicts: counter(
                r,
                "ipam_release_conflicts_total",
                "Releases refused by etcd because the block changed since it was read (read again, decided again).",
            ),
        }
    }

    /// Replaces every pool's series with `counts`: (pool, size, [count per `STATES`]).
    pub fn set_pools(&self, counts: &[(String, u64, [usize; 5])], unix_seconds: f64) {
        self.addresses.reset();
        self.pool_size.reset();
        for (pool, size, by_state) in counts {
            self.pool_size.with_label_values(&[pool]).set(*size as i64);
            for (state, n) in STATES.iter().zip(by_state) {
                self.addresses.with_label_values(&[pool.as_str(), state]).set(*n as i64);
            }
        }
        self.checks.with_label_values(&["ok"]).inc();
        self.last_check.set(unix_seconds);
    }

    pub fn check_failed(&self) {
        self.checks.with_label_values(&["error"]).inc();
    }

    pub fn released(&self, addresses: usize, conflicts: usize) {
        self.released.inc_by(addresses as u64);
        self.conflicts.inc_by(conflicts as u64);
    }
}
