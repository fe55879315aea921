//! Netlink subscriptions: one in every calico container's namespace (attached after
//! its first pass, per start of the container) and one on the host for the `cali…`
//! side. A notification schedules a pass through the backoff policy; an overflow
//! re-checks everything the socket covers; a lost reader is re-attached by the
//! next pass.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::time::sleep_until;
use tracing::{info, warn};

use super::{unix_now, Agent, Settle, Trigger};
use crate::medic::ContainerOutcome;
use crate::netlink::watch::{watch_host, watch_netns, ChangeKind, WatchEvent};

impl Agent {
    /// SIGHUP turned watches on or off.
    pub(super) fn set_watches_enabled(&self, enabled: bool) {
        if self.watches_enabled.swap(enabled, Ordering::SeqCst) == enabled {
            return;
        }
        if enabled {
            info!("watch: enabled; subscribing as containers are next checked");
            self.start_host_watch();
            let ids: Vec<String> = self.containers().by_id.keys().cloned().collect();
            for id in ids {
                self.enqueue(&id, Trigger::Resync);
            }
        } else {
            info!("watch: disabled; closing every subscription");
            let mut c = self.containers();
            c.host_watch = None;
            for st in c.by_id.values_mut() {
                st.watch = None;
            }
        }
        self.refresh_gauges();
    }

    /// One host-side subscription; notifications are mapped to containers by ifindex.
    pub(super) fn start_host_watch(&self) {
        if !self.watches_enabled.load(Ordering::SeqCst) || self.containers().host_watch.is_some() {
            return;
        }
        let me = self.me.clone();
        let result = watch_host(move |event| {
            let Some(agent) = me.upgrade() else { return };
            match event {
                WatchEvent::Changed(change) => {
                    let owner = change.ifindex.and_then(|i| agent.containers().host_links.get(&i).cloned());
                    if let Some(id) = owner {
                        agent.on_change(&id, change.kind);
                    }
                }
                WatchEvent::Overflow => {
                    let ids: Vec<String> = agent.containers().host_links.values().cloned().collect();
                    agent.on_overflow(&ids);
                }
                WatchEvent::Lost => {
                    agent.containers().host_watch = None;
                    agent.start_host_watch();
                }
            }
        });
        match result {
            Ok(w) => self.containers().host_watch = Some(w),
            Err(e) => warn!(error = %e, "host watch unavailable, relying on events and resyncs"),
        }
    }

    /// Opens the live subscription for this start of the container.
    pub(super) fn attach_watch(&self, id: &str, pid: u32, out: &ContainerOutcome) {
        // Policy off: the namespace was never opened, and is not watched.
        let Some(netns) = &out.netns else { return };
        let me = self.me.clone();
        let owner = id.to_string();
        match watch_netns(netns, move |event| {
            if let Some(agent) = me.upgrade() {
                agent.on_watch_event(&owner, event);
            }
        }) {
            Ok(w) => {
                if let Some(st) = self.containers().by_id.get_mut(id) {
                    st.watch = Some((pid, w));
                }
            }
            Err(e) => {
                let who = out.workload.identity();
                warn!(
                    container = %crate::workload::Escaped(&who.container),
                    app = who.app.as_deref().map(crate::workload::Escaped).map(tracing::field::display),
                    task = who.task.as_deref().map(crate::workload::Escaped).map(tracing::field::display),
                    error = %e,
                    "cannot watch container"
                );
            }
        }
    }

    fn on_watch_event(&self, id: &str, event: WatchEvent) {
        match event {
            WatchEvent::Changed(change) => self.on_change(id, change.kind),
            WatchEvent::Overflow => self.on_overflow(&[id.to_string()]),
            WatchEvent::Lost => {
                // The next pass sees no watch for this start and attaches a new one.
                if let Some(st) = self.containers().by_id.get_mut(id) {
                    st.watch = None;
                }
                self.enqueue(id, Trigger::Recheck);
            }
        }
    }

    /// A netlink change in (or at the host side of) a container's endpoint.
    fn on_change(&self, id: &str, kind: ChangeKind) {
        self.metrics.watch_event(kind);
        let settle = self.medic().config.backoff.clone();
        let decision = {
            let mut c = self.containers();
            let Some(st) = c.by_id.get_mut(id) else { return };
            if st.slot.is_running() {
                st.interrupt.notify_one();
            }
            st.backoff.on_change(Instant::now(), &settle)
        };
        if decision.start_settle_timer {
            if let Some(agent) = self.me.upgrade() {
                let id = id.to_string();
                tokio::spawn(async move { agent.settle(id).await });
            }
        }
        if decision.pass_now {
            self.enqueue(id, Trigger::Watch { unix_seconds: unix_now() });
        }
    }

    /// Waits until a backed-off container's namespace has been quiet for `settle`,
    /// then allows one repair: a flapping endpoint is fixed as soon as it stops flapping.
    async fn settle(self: Arc<Self>, id: String) {
        loop {
            let check = match self.containers().by_id.get_mut(&id) {
                Some(st) => st.backoff.settle_check(Instant::now()),
                None => return,
            };
            match check {
                Settle::WaitUntil(deadline) => sleep_until(deadline.into()).await,
                Settle::AllowRepair => {
                    self.enqueue(&id, Trigger::Recheck);
                    return;
                }
                Settle::Done => return,
            }
        }
    }

    /// A watch socket overflowed: changes were lost, so re-check everything it covers.
    fn on_overflow(&self, ids: &[String]) {
        self.metrics.watch_overflowed();
        for id in ids {
            self.enqueue(id, Trigger::Recheck);
        }
    }
}
