//! Netlink subscriptions as sources: one in every calico container's namespace
//! (opened by a pass, for one start of the container) and one on the host for the
//! `cali…` side. Each notification becomes a notice; the scheduler decides.

use crate::error::MedicError;
use crate::netlink::watch::{watch_host, watch_netns, Watch, WatchEvent};
use crate::netns::TargetNetns;

use super::{Notice, Notices};

/// Subscribes in container `id`'s namespace.
pub fn watch_container(ns: &TargetNetns, id: &str, notices: Notices) -> Result<Watch, MedicError> {
    let id = id.to_string();
    watch_netns(ns, move |event| {
        let notice = match event {
            WatchEvent::Changed(change) => Notice::Changed { id: id.clone(), kind: change.kind },
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
