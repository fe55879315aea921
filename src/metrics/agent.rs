//! The agent's own series: the Docker event stream, resyncs, check errors and the
//! netlink watches.

use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge};

use super::registry::{counter, counter_vec, gauge, int_gauge, Registry};
use crate::error::MedicError;
use crate::netlink::watch::ChangeKind;

pub struct AgentMetrics {
    pub(super) docker_up: IntGauge,
    pub(super) docker_reconnects: IntCounter,
    pub(super) docker_events: IntCounterVec,
    pub(super) resyncs: IntCounter,
    pub(super) probe_only_passes: IntCounter,
    pub(super) last_resync: Gauge,
    pub(super) check_errors: IntCounterVec,
    pub(super) watches: IntGauge,
    pub(super) watch_events: IntCounterVec,
    pub(super) watch_overflows: IntCounter,
}

impl AgentMetrics {
    pub fn register(r: &Registry) -> AgentMetrics {
        let docker_up = int_gauge(r, "docker_up", "1 while the Docker event stream is connected.");
        let docker_reconnects =
            counter(r, "docker_reconnects_total", "Reconnections to Docker after the event stream ended.");
        let docker_events =
            counter_vec(r, "docker_events_total", "Docker events received, by type and action.", &["type", "action"]);
        let resyncs = counter(r, "resyncs_total", "Full resyncs of all containers.");
        let probe_only_passes = counter(
            r,
            "probe_only_passes_total",
            "Probe ticks answered by the host's echo alone (healthy, watched containers).",
        );
        let last_resync = gauge(r, "last_resync_timestamp_seconds", "Unix time of the last completed full resync.");
        let check_errors = counter_vec(
            r,
            "check_errors_total",
            "Container passes, or endpoints in a pass, that could not be checked, by reason.",
            &["reason"],
        );
        for reason in MedicError::CODES {
            check_errors.with_label_values(&[reason]);
        }
        let watches = int_gauge(r, "watches", "Netlink subscriptions currently open (container namespaces + host).");
        let watch_events = counter_vec(
            r,
            "watch_events_total",
            "Netlink notifications received from watched namespaces, by kind.",
            &["kind"],
        );
        for kind in ChangeKind::ALL {
            watch_events.with_label_values(&[kind.as_str()]);
        }
        let watch_overflows =
            counter(r, "watch_overflows_total", "Netlink socket overflows (ENOBUFS) that forced a re-check.");
        AgentMetrics {
            docker_up,
            docker_reconnects,
            docker_events,
            resyncs,
            probe_only_passes,
            last_resync,
            check_errors,
            watches,
            watch_events,
            watch_overflows,
        }
    }
}
