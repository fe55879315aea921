//! The pre-start path's own bookkeeping: which host links are followed, what was
//! done per host interface (until the post-start pass reads it), and which sandbox
//! namespaces are known, in the order this agent first saw them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::netlink::watch::Watch;
use crate::netns::{NsIdentity, SandboxFile};

/// Finished entries kept this long (an ifindex is not reused sooner in practice).
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Followed links kept before finished ones are pruned.
const PRUNE_ABOVE: usize = 1024;
/// Namespace files tried per attempt to find a sandbox (newest first).
pub const MAX_SANDBOX_TRIES: usize = 64;

pub enum Followed {
    Active(Arc<Notify>),
    Finished,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrestartResult {
    pub repaired: bool,
    pub container: Option<String>,
    /// When the repair was verified (unix seconds) and how long after the veth moved.
    pub repaired_at: f64,
    pub latency: f64,
}

#[derive(Default)]
pub struct Sandboxes {
    /// Host ifindex → its follower (woken by every host notification for that link).
    followed: HashMap<u32, (Followed, Instant)>,
    /// Host interface name → what the pre-start path did, until the post-start pass reads it.
    results: HashMap<String, (PrestartResult, Instant)>,
    /// Namespaces known to hold a configured endpoint: never searched again.
    claimed: HashSet<NsIdentity>,
    /// When this agent first listed each sandbox file (its creation order, near enough).
    first_seen: HashMap<NsIdentity, Instant>,
    /// The host's id of each sandbox namespace, once the kernel assigned one.
    pub nsids: HashMap<NsIdentity, i32>,
    /// The followers' own runtime thread.
    pub runtime: Option<tokio::runtime::Handle>,
    /// The followers' own host subscription (read on their runtime).
    pub host_watch: Option<Watch>,
    /// Docker's data root, where a created container's record can be read.
    pub docker_root: Option<PathBuf>,
}

impl Sandboxes {
    fn prune(&mut self, now: Instant) {
        self.followed.retain(|_, (f, at)| matches!(f, Followed::Active(_)) || now.duration_since(*at) < FORGET_AFTER);
        self.results.retain(|_, (_, at)| now.duration_since(*at) < FORGET_AFTER);
    }

    /// A notification for a host link: the new follower's wake-up handle, or `None`
    /// when one is already following it (woken here) or has finished with it.
    pub fn follow(&mut self, ifindex: u32, now: Instant) -> Option<Arc<Notify>> {
        if self.followed.len() > PRUNE_ABOVE {
            self.prune(now);
        }
        match self.followed.get(&ifindex) {
            Some((Followed::Active(n), _)) => {
                n.notify_one();
                None
            }
            Some((Followed::Finished, _)) => None,
            None => {
                let n = Arc::new(Notify::new());
                self.followed.insert(ifindex, (Followed::Active(n.clone()), now));
                Some(n)
            }
        }
    }

    pub fn finished(&mut self, ifindex: u32, now: Instant) {
        if let Some((f, at)) = self.followed.get_mut(&ifindex) {
            *f = Followed::Finished;
            *at = now;
        }
    }

    /// A namespace the post-start pass opened: it holds a configured endpoint.
    pub fn claim(&mut self, ns: NsIdentity) {
        self.claimed.insert(ns);
    }

    pub fn record(&mut self, host_interface: &str, result: PrestartResult, now: Instant) {
        self.results.insert(host_interface.to_string(), (result, now));
    }

    /// The pre-start result for a host interface, consumed by the post-start pass.
    pub fn take_result(&mut self, host_interface: &str) -> Option<PrestartResult> {
        self.results.remove(host_interface).map(|(r, _)| r)
    }

    /// The files listed when the path starts: all older than any sandbox to come.
    pub fn first_listing(&mut self, files: impl Iterator<Item = NsIdentity>, seen: Instant) {
        for f in files {
            self.first_seen.entry(f).or_insert(seen);
        }
    }

    /// Forgets namespaces that are gone, notes new ones, and returns the unclaimed
    /// files newest first (by when this agent first saw each: an nsfs file's own
    /// times are its inode's, which the kernel may re-create at any open).
    pub fn candidates(&mut self, files: Vec<SandboxFile>, now: Instant) -> Vec<SandboxFile> {
        let present: HashSet<NsIdentity> = files.iter().map(|f| f.identity).collect();
        self.claimed.retain(|i| present.contains(i));
        self.first_seen.retain(|i, _| present.contains(i));
        self.nsids.retain(|i, _| present.contains(i));
        for f in &files {
            self.first_seen.entry(f.identity).or_insert(now);
        }
        let mut fresh: Vec<(Instant, SandboxFile)> = files
            .into_iter()
            .filter(|f| !self.claimed.contains(&f.identity))
            .map(|f| (self.first_seen[&f.identity], f))
            .collect();
        fresh.sort_by_key(|(seen, _)| std::cmp::Reverse(*seen));
        fresh.into_iter().take(MAX_SANDBOX_TRIES).map(|(_, f)| f).collect()
    }
}
