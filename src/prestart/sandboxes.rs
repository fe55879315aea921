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
    /// Who repaired it: the follower (`BeforeStart`) or the runtime's hook (`Hook`).
    pub path: crate::metrics::StartPath,
}

/// One sandbox file: its path and the namespace it held when listed.
pub type SandboxKey = (PathBuf, NsIdentity);

fn key(f: &SandboxFile) -> SandboxKey {
    (f.path.clone(), f.identity)
}

#[derive(Default)]
pub struct Sandboxes {
    /// Host ifindex → its follower (woken by every host notification for that link).
    followed: HashMap<u32, (Followed, Instant)>,
    /// Host interface name → what the pre-start path did, until the post-start pass reads it.
    results: HashMap<String, (PrestartResult, Instant)>,
    /// Namespaces the post-start pass found configured (by which container, when):
    /// not searched again. Namespace inodes are reused lowest-free-first, so a claim
    /// covers only files this agent first saw before the claim was made (a new
    /// sandbox on a reused inode is a new file, seen after), and is dropped when its
    /// container dies.
    claimed: HashMap<NsIdentity, (String, Instant)>,
    /// When this agent first listed each sandbox file (its creation order, near enough):
    /// keyed by path and inode, so a reused inode under a new sandbox path is new.
    first_seen: HashMap<SandboxKey, Instant>,
    /// The host's id of each sandbox namespace, once the kernel assigned one.
    pub nsids: HashMap<SandboxKey, i32>,
    /// The followers' own runtime thread.
    pub runtime: Option<tokio::runtime::Handle>,
    /// The followers' own host subscription (read on their runtime).
    pub host_watch: Option<Watch>,
    /// Docker's data root, where a created container's record can be read.
    pub docker_root: Option<PathBuf>,
    /// The hook reports' socket is bound (once per process).
    pub hook_listener: bool,
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

    /// A namespace the post-start pass opened for `container`: it holds configured endpoints.
    pub fn claim(&mut self, ns: NsIdentity, container: &str, now: Instant) {
        self.claimed.insert(ns, (container.to_string(), now));
    }

    /// Docker's die or destroy: the container's namespace is going, and its inode
    /// may be handed to the next sandbox at once.
    pub fn forget_container(&mut self, container: &str) {
        self.claimed.retain(|_, (c, _)| c != container);
    }

    fn is_claimed(&self, file: &SandboxFile, first_seen: Instant) -> bool {
        self.claimed.get(&file.identity).is_some_and(|(_, at)| *at >= first_seen)
    }

    pub fn record(&mut self, host_interface: &str, result: PrestartResult, now: Instant) {
        // The hook and the follower may both look at one endpoint: a repair is kept
        // over a later "nothing to do" (the other one's look after it).
        if !result.repaired && self.results.get(host_interface).is_some_and(|(r, _)| r.repaired) {
            return;
        }
        self.results.insert(host_interface.to_string(), (result, now));
    }

    /// The pre-start result for a host interface, consumed by the post-start pass.
    pub fn take_result(&mut self, host_interface: &str) -> Option<PrestartResult> {
        self.results.remove(host_interface).map(|(r, _)| r)
    }

    /// The files listed when the path starts: all older than any sandbox to come.
    pub fn first_listing<'a>(&mut self, files: impl Iterator<Item = &'a SandboxFile>, seen: Instant) {
        for f in files {
            self.first_seen.entry(key(f)).or_insert(seen);
        }
    }

    /// Forgets namespaces that are gone, notes new ones, and returns the unclaimed
    /// files newest first (by when this agent first saw each: an nsfs file's own
    /// times are its inode's, which the kernel may re-create at any open).
    pub fn candidates(&mut self, files: Vec<SandboxFile>, now: Instant) -> Vec<SandboxFile> {
        let present: HashSet<SandboxKey> = files.iter().map(key).collect();
        let inodes: HashSet<NsIdentity> = files.iter().map(|f| f.identity).collect();
        self.claimed.retain(|i, _| inodes.contains(i));
        self.first_seen.retain(|k, _| present.contains(k));
        self.nsids.retain(|k, _| present.contains(k));
        for f in &files {
            self.first_seen.entry(key(f)).or_insert(now);
        }
        let mut fresh: Vec<(Instant, SandboxFile)> = files
            .into_iter()
            .map(|f| (self.first_seen[&key(&f)], f))
            .filter(|(seen, f)| !self.is_claimed(f, *seen))
            .collect();
        fresh.sort_by_key(|(seen, _)| std::cmp::Reverse(*seen));
        fresh.into_iter().take(MAX_SANDBOX_TRIES).map(|(_, f)| f).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, ino: u64) -> SandboxFile {
        SandboxFile { path: path.into(), identity: NsIdentity { dev: 4, ino } }
    }

    #[test]
    fn a_reused_inode_under_a_new_sandbox_path_is_a_new_sandbox() {
        let t0 = Instant::now();
        let mut s = Sandboxes::default();
        let old = file("/run/docker/netns/aaaaaaaaaaaa", 4026532900);
        assert_eq!(s.candidates(vec![old.clone()], t0).len(), 1);
        s.claim(old.identity, "c1", t0 + Duration::from_millis(10));
        assert!(s.candidates(vec![old.clone()], t0 + Duration::from_millis(20)).is_empty(), "claimed");
        // c1 replaced at once: its inode goes to the next sandbox before any listing
        // without it, and before Docker's die event arrives.
        let new = file("/run/docker/netns/bbbbbbbbbbbb", 4026532900);
        let got = s.candidates(vec![new.clone()], t0 + Duration::from_millis(30));
        assert_eq!(got.len(), 1, "the new sandbox is searched");
        assert_eq!(got[0].path, new.path);
    }

    #[test]
    fn a_repair_is_kept_over_a_later_nothing_to_do() {
        let t0 = Instant::now();
        let mut s = Sandboxes::default();
        let r = |repaired| PrestartResult {
            repaired,
            container: None,
            repaired_at: 1.0,
            latency: 0.001,
            path: crate::metrics::StartPath::Hook,
        };
        s.record("calia", r(true), t0);
        s.record("calia", r(false), t0);
        assert!(s.take_result("calia").unwrap().repaired, "the hook's repair survives the follower's look after it");
        s.record("calia", r(false), t0);
        s.record("calia", r(true), t0);
        assert!(s.take_result("calia").unwrap().repaired);
    }

    #[test]
    fn a_claim_is_dropped_when_its_container_dies() {
        let t0 = Instant::now();
        let mut s = Sandboxes::default();
        let f = file("/run/docker/netns/aaaaaaaaaaaa", 7);
        s.candidates(vec![f.clone()], t0);
        s.claim(f.identity, "c1", t0 + Duration::from_millis(1));
        s.forget_container("c2");
        assert!(s.candidates(vec![f.clone()], t0 + Duration::from_millis(2)).is_empty());
        s.forget_container("c1");
        assert_eq!(s.candidates(vec![f], t0 + Duration::from_millis(3)).len(), 1);
    }
}
