//! Across hosts (`crate::bgp`): BGP sessions, routes to other hosts' blocks, and
//! task-to-task probes to other hosts. Per-peer and per-host series only for what is
//! failing (a full mesh of 1,000 hosts would otherwise be ~10⁶ series).

use prometheus::{Histogram, IntGauge, IntGaugeVec};

use super::registry::{gauge_vec, histogram, int_gauge, Registry};

/// BGP states as BIRD names them (lower case): every one is exported, 0 when none.
pub const BGP_STATES: [&str; 6] = ["established", "idle", "connect", "active", "opensent", "openconfirm"];

pub struct BgpMetrics {
    peers: IntGaugeVec,
    peer_up: IntGaugeVec,
    unrouted: IntGauge,
    hosts: IntGaugeVec,
    unreachable: IntGaugeVec,
    rtt: Histogram,
}

impl BgpMetrics {
    pub fn register(r: &Registry) -> BgpMetrics {
        let hosts = gauge_vec(
            r,
            "remote_hosts",
            "Other hosts by the last task-to-task probe to one of their workloads (from inside a local task of the same network).",
            &["state"],
        );
        for s in ["reachable", "unreachable"] {
            hosts.with_label_values(&[s]).set(0);
        }
        BgpMetrics {
            peers: gauge_vec(r, "bgp_peers", "BIRD's BGP peers on this host by BGP state (BIRD's control socket).", &["state"]),
            peer_up: gauge_vec(
                r,
                "bgp_peer_up",
                "0 for each BGP peer that is not Established (only those have a series).",
                &["peer"],
            ),
            unrouted: int_gauge(
                r,
                "remote_blocks_unrouted",
                "Other hosts' blocks (the datastore's affinities) with no route on this host: via the host's BGP address, or out of tunl0 for IPIP pools.",
            ),
            hosts,
            unreachable: gauge_vec(
                r,
                "remote_host_unreachable",
                "1 for each other host whose workload did not answer the last task-to-task probe (only those have a series).",
                &["host"],
            ),
            rtt: histogram(
                r,
                "remote_probe_rtt_seconds",
                "Round trip of task-to-task probes to other hosts' workloads.",
                vec![0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
            ),
        }
    }

    /// BIRD's peers: (name, BGP state lower case, established).
    pub fn peers(&self, peers: &[(String, String, bool)]) {
        self.peers.reset();
        for s in BGP_STATES {
            let n = peers.iter().filter(|(_, st, _)| st == s).count();
            self.peers.with_label_values(&[s]).set(n as i64);
        }
        self.peer_up.reset();
        for (name, _, established) in peers.iter().filter(|(_, _, e)| !e) {
            self.peer_up.with_label_values(&[name.as_str()]).set(i64::from(*established));
        }
    }

    pub fn unrouted(&self, n: usize) {
        self.unrouted.set(n as i64);
    }

    /// Counts by last probe, the failing hosts, and this round's round trips.
    pub fn remote(&self, reachable: usize, failing: &[&str], rtts: &[f64]) {
        self.hosts.with_label_values(&["reachable"]).set(reachable as i64);
        self.hosts.with_label_values(&["unreachable"]).set(failing.len() as i64);
        self.unreachable.reset();
        for h in failing {
            self.unreachable.with_label_values(&[h]).set(1);
        }
        for r in rtts {
            self.rtt.observe(*r);
        }
    }
}
