//! Keeps a `Datastore`'s view current: a full read, then etcd's v2 watch from the
//! index after it, event by event. A cleared index (etcd keeps the last 1000 events)
//! means a full read; so does `full_read_interval` passing (the safety net). etcd
//! unreachable: the view is marked down (passes fall back to the host's view), one
//! warning per outage, and the watch resumes from the last index once etcd answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::etcd::Watched;
use super::{Datastore, FullRead};
use crate::error::MedicError;

/// How long to wait before asking an unreachable etcd again.
pub const RETRY: Duration = Duration::from_secs(1);
/// After a long-poll cut while etcd still answers (an idle-timeout proxy in front of
/// it): the first re-watch waits this long, doubling up to `RETRY`.
pub const CUT_RETRY: Duration = Duration::from_millis(50);
/// A full read whose index is already cleared again (more than etcd's 1000 events
/// between the read and the watch): the next full read waits this long, doubling up
/// to `CLEARED_BACKOFF_MAX`, instead of reading everything in a loop.
pub const CLEARED_BACKOFF: Duration = Duration::from_secs(1);
pub const CLEARED_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a full read happened (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadReason {
    Start,
    IndexCleared,
    Periodic,
}

impl ReadReason {
    pub const ALL: [ReadReason; 3] = [ReadReason::Start, ReadReason::IndexCleared, ReadReason::Periodic];

    pub fn as_str(self) -> &'static str {
        match self {
            ReadReason::Start => "start",
            ReadReason::IndexCleared => "index_cleared",
            ReadReason::Periodic => "periodic",
        }
    }
}

/// What the follower tells the agent.
#[derive(Debug, Clone)]
pub enum Change {
    /// etcd answers (true) or not (false); sent on every transition.
    Up(bool),
    /// A full read replaced the view.
    FullRead(ReadReason, FullRead),
    /// A watch event changed these endpoints.
    Watched(Vec<String>),
}

/// Follows the datastore until `shutdown` flips.
pub async fn follow(ds: Arc<Datastore>, tx: mpsc::UnboundedSender<Change>, mut shutdown: watch::Receiver<bool>) {
    let settings = ds.settings.clone();
    let mut pending_read = Some(ReadReason::Start);
    let mut down_since: Option<Instant> = None;
    let mut next_full = Instant::now() + settings.full_read_interval;
    let mut cut_retry = CUT_RETRY;
    // Consecutive full reads for a cleared index, with no watch answer in between.
    let mut cleared_in_a_row = 0u32;
    // Marks an outage once, then waits the retry delay and goes round again (returns
    // when shutting down).
    macro_rules! outage {
        ($e:expr) => {{
            went_down(&ds, &tx, &mut down_since, &$e);
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }};
    }
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Some(reason) = pending_read {
            if let Some(wait) = cleared_wait(reason, cleared_in_a_row) {
                debug!(wait_ms = wait.as_millis() as u64, "datastore: index cleared again; the next full read waits");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
            }
            cleared_in_a_row = if reason == ReadReason::IndexCleared { cleared_in_a_row + 1 } else { 0 };
            let read = tokio::select! {
                r = ds.full_read() => r,
                _ = shutdown.changed() => return,
            };
            match read {
                Ok(read) => {
                    read_done(&ds, &tx, down_since.take(), reason, read);
                    pending_read = None;
                    next_full = Instant::now() + settings.full_read_interval;
                }
                Err(e) => outage!(e),
            }
        }
        let now = Instant::now();
        if now >= next_full {
            pending_read = Some(ReadReason::Periodic);
            continue;
        }
        let wait = settings.watch_timeout.min(next_full - now);
        let index = ds.view().index + 1;
        let answered = |endpoint: &str| watch_answered(&ds, &tx, &mut down_since, endpoint, index);
        let watched = tokio::select! {
            w = ds.client.watch(&ds.dir, index, wait, answered) => w,
            _ = shutdown.changed() => return,
        };
        match watched {
            Ok(w) => {
                cut_retry = CUT_RETRY;
                match on_watched(&ds, &tx, w, index) {
                    Some(reason) => pending_read = Some(reason),
                    None => cleared_in_a_row = 0, // a usable answer: the history holds again
                }
            }
            // An event past the answer ceiling would come again on every watch from
            // this index: read everything instead (etcd's index then is past it); a
            // directory past the ceiling too is an outage whose warning names it.
            Err(e @ MedicError::DatastoreTooLarge { .. }) => pending_read = Some(past_ceiling(&ds, &e)),
            // The long-poll's body was cut after etcd answered: a watch retry, not an
            // outage, as long as a plain read still works.
            Err(e @ MedicError::DatastoreRequest { .. }) => match ds.client.alive(&ds.dir).await {
                Ok(()) => {
                    debug!(url = %ds.client.current(), error = %e, retry_ms = cut_retry.as_millis() as u64, "datastore: long-poll cut; watching again");
                    tokio::select! {
                        _ = tokio::time::sleep(cut_retry) => {}
                        _ = shutdown.changed() => return,
                    }
                    cut_retry = (cut_retry * 2).min(RETRY);
                }
                Err(e) => outage!(e),
            },
            Err(e) => outage!(e),
        }
    }
}

/// A watch answer past `[limits] datastore_answer_bytes`: warns, and the full read
/// that replaces it (backed off like one for a cleared index when it repeats).
fn past_ceiling(ds: &Datastore, e: &MedicError) -> ReadReason {
    warn!(url = %ds.client.current(), error = %e, "datastore: watch answer past its ceiling; reading everything again");
    ReadReason::IndexCleared
}

/// etcd did not answer: the first failure of an outage warns and marks the view
/// down; later ones only log at debug.
fn went_down(ds: &Datastore, tx: &mpsc::UnboundedSender<Change>, down_since: &mut Option<Instant>, e: &MedicError) {
    if down_since.is_none() {
        warn!(
            url = %ds.client.current(),
            error = %e,
            retry_ms = RETRY.as_millis() as u64,
            "datastore: etcd unreachable; using the host's view until it answers"
        );
        *down_since = Some(Instant::now());
        ds.set_up(false);
        let _ = tx.send(Change::Up(false));
    } else {
        debug!(url = %ds.client.current(), error = %e, "datastore: still unreachable");
    }
}

/// A full read succeeded (`down_since`: the outage it ends, if any).
fn read_done(
    ds: &Datastore,
    tx: &mpsc::UnboundedSender<Change>,
    down_since: Option<Instant>,
    reason: ReadReason,
    read: FullRead,
) {
    if let Some(since) = down_since {
        info!(
            url = %ds.client.current(),
            down_ms = since.elapsed().as_millis() as u64,
            "datastore: etcd answers again"
        );
        let _ = tx.send(Change::Up(true));
    } else if reason == ReadReason::Start {
        let _ = tx.send(Change::Up(true));
    }
    info!(
        endpoints = read.endpoints,
        host = %ds.settings.hostname,
        url = %ds.client.current(),
        index = read.index,
        took_ms = read.took.as_secs_f64() * 1000.0,
        reason = %reason.as_str(),
        "datastore: full read"
    );
    let _ = tx.send(Change::FullRead(reason, read));
}

/// etcd answered the watch (at `endpoint`): an outage, if one was on, is over.
fn watch_answered(
    ds: &Datastore,
    tx: &mpsc::UnboundedSender<Change>,
    down_since: &mut Option<Instant>,
    endpoint: &str,
    index: u64,
) {
    if let Some(since) = down_since.take() {
        info!(
            url = %endpoint,
            down_ms = since.elapsed().as_millis() as u64,
            index,
            "datastore: etcd answers again; resuming the watch"
        );
        ds.set_up(true);
        let _ = tx.send(Change::Up(true));
    }
}

/// What the watch from `index` brought; `Some` when a full read is needed.
/// The wait before a full read after `in_a_row` cleared-index reads with no event between.
fn cleared_wait(reason: ReadReason, in_a_row: u32) -> Option<Duration> {
    (reason == ReadReason::IndexCleared && in_a_row > 0)
        .then(|| CLEARED_BACKOFF.saturating_mul(2u32.saturating_pow(in_a_row - 1)).min(CLEARED_BACKOFF_MAX))
}

fn on_watched(ds: &Datastore, tx: &mpsc::UnboundedSender<Change>, watched: Watched, index: u64) -> Option<ReadReason> {
    match watched {
        // An event that does not move the index on would be served again and again:
        // it is no event; read everything once instead.
        Watched::Event(ev) if ev.modified_index < index => {
            warn!(key = %ev.key, index = ev.modified_index, want = index, "datastore: watch event without a usable index; reading everything again");
            Some(ReadReason::IndexCleared)
        }
        Watched::Event(ev) => {
            let ids = ds.apply(&ev);
            debug!(etcd_action = %ev.action, key = %ev.key, index = ev.modified_index, "datastore: watch event");
            if !ids.is_empty() {
                let _ = tx.send(Change::Watched(ids));
            }
            None
        }
        Watched::Cleared(current) if current < index => {
            info!(index = index - 1, current, "datastore: etcd's index went back; reading everything again");
            Some(ReadReason::IndexCleared)
        }
        Watched::Cleared(current) => {
            info!(
                index = index - 1,
                current = %current,
                "datastore: etcd no longer has the events after index; reading everything again"
            );
            Some(ReadReason::IndexCleared)
        }
        Watched::Quiet => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::datastore::etcd::Event;
    use crate::datastore::Settings;

    #[test]
    fn cleared_reads_in_a_row_back_off_and_an_event_without_an_index_is_a_full_read() {
        assert_eq!(cleared_wait(ReadReason::IndexCleared, 0), None, "the first one reads at once");
        assert_eq!(cleared_wait(ReadReason::IndexCleared, 1), Some(CLEARED_BACKOFF));
        assert_eq!(cleared_wait(ReadReason::IndexCleared, 3), Some(CLEARED_BACKOFF * 4));
        assert_eq!(cleared_wait(ReadReason::IndexCleared, 40), Some(CLEARED_BACKOFF_MAX));
        assert_eq!(cleared_wait(ReadReason::Periodic, 5), None);

        let mut c = Config::default();
        c.calico.etcd_endpoints = vec!["http://127.0.0.1:1".into()];
        c.calico.hostname = "h1".into();
        c.calico.calicoctl_config = String::new();
        let ds = Datastore::new(Settings::resolve(&c).unwrap().unwrap()).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let key = format!("{}/e1", ds.dir);
        let ev = |modified_index| Event { action: "set".into(), key: key.clone(), value: None, modified_index };
        assert_eq!(on_watched(&ds, &tx, Watched::Event(ev(0)), 7), Some(ReadReason::IndexCleared));
        assert!(rx.try_recv().is_err(), "nothing applied");
        assert_eq!(ds.view().index, 0);
        assert_eq!(on_watched(&ds, &tx, Watched::Event(ev(7)), 7), None);
        assert_eq!(ds.view().index, 7, "a usable event moves the index on");
    }
}
