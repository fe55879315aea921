//! Netlink subscriptions as sources: one in every calico container's namespace
//! (opened by a pass, for one start of the container) and one on the host for the
//! `cali…` side. Each notification becomes a notice; the scheduler decides.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::MedicError;
use crate::metrics::Metrics;
use crate::netlink::watch::{watch_host, watch_netns, Watch, WatchEvent};
use crate::netns::TargetNetns;

use super::{Notice, Notices};

/// Subscribes in container `id`'s namespace. Every notification is counted; a
/// notice is sent only when none of this watch is still waiting for the scheduler:
/// a task that floods its namespace with changes (a million routes) costs one queued
/// notice, not a million.
pub fn watch_container(
    ns: &TargetNetns,
    id: &str,
    notices: Notices,
    metrics: Arc<Metrics>,
) -> Result<Watch, MedicError> {
    let id = id.to_string();
    let pending = Arc::new(AtomicBool::new(false));
    watch_netns(ns, move |event| {
        let notice = match event {
            WatchEvent::Changed(change) => {
                metrics.watch_event(change.kind);
                if pending.swap(true, Ordering::SeqCst) {
                    return;
                }
                Notice::Changed { id: id.clone(), kind: change.kind, pending: pending.clone() }
            }
            WatchEvent::Overflow => Notice::Overflow { id: Some(id.clone()) },
            WatchEvent::Lost => Notice::Lost { id: Some(id.clone()) },
        };
        let _ = notices.send(notice);
    })
}

/// Subscribes on the host; changes name the interface (the scheduler maps it).
pub fn watch_host_links(notices: Notices) -> Result<Watch, MedicError> {
    watch_host(move |event| {
        let notice = match event {
            WatchEvent::Changed(change) => match change.ifindex {
                Some(ifindex) => Notice::HostChanged { ifindex, kind: change.kind },
                None => return,
            },
            WatchEvent::Overflow => Notice::Overflow { id: None },
            WatchEvent::Lost => Notice::Lost { id: None },
        };
        let _ = notices.send(notice);
    })
}
