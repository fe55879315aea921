//! Entering network namespaces safely from async code.
//!
//! `setns` switches only the calling thread, so every switch happens on a short-lived
//! dedicated OS thread (never a tokio worker), inside a guard that switches back on
//! every path and aborts the process if it cannot. Only socket creation runs while
//! switched: a socket stays bound to the namespace it was created in, so all later
//! I/O on it runs on ordinary runtime threads.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::error::MedicError;

/// Kernel identity of a namespace: (st_dev, st_ino) of its nsfs inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NsIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl NsIdentity {
    pub fn of_file(file: &File) -> io::Result<NsIdentity> {
        let meta = file.metadata()?;
        Ok(NsIdentity { dev: meta.dev(), ino: meta.ino() })
    }

    pub fn of_path(path: &Path) -> io::Result<NsIdentity> {
        let meta = std::fs::metadata(path)?;
        Ok(NsIdentity { dev: meta.dev(), ino: meta.ino() })
    }

    /// The calling thread's namespace (`/proc/self` would name the main thread's).
    pub fn current_thread() -> io::Result<NsIdentity> {
        NsIdentity::of_path(&current_thread_ns_path())
    }
}

impl std::fmt::Display for NsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

/// An open handle on a network namespace that is not the host's.
/// Dropping it closes the fd, so it never keeps a dead container's namespace alive.
pub struct TargetNetns {
    ns: netns_rs::NetNs,
    identity: NsIdentity,
}

impl TargetNetns {
    /// Opens a namespace by path, refusing the host's own namespace.
    pub fn open(path: &Path, host: NsIdentity) -> Result<TargetNetns, MedicError> {
        let ns = netns_rs::get_from_path(path)
            .map_err(|e| MedicError::netns_io(format!("opening {}", path.display()), io::Error::other(e)))?;
        let identity =
            NsIdentity::of_file(ns.file()).map_err(|e| MedicError::netns_io(format!("stat {}", path.display()), e))?;
        if identity == host {
            return Err(MedicError::HostNamespace(path.display().to_string()));
        }
        Ok(TargetNetns { ns, identity })
    }

    /// The network namespace of a process (a container's init).
    pub fn open_pid(pid: u32, host: NsIdentity) -> Result<TargetNetns, MedicError> {
        if pid == 0 {
            return Err(MedicError::netns("opening the container's namespace", "it has no PID (not running)"));
        }
        TargetNetns::open(Path::new(&format!("/proc/{pid}/ns/net")), host)
    }

    pub fn identity(&self) -> NsIdentity {
        self.identity
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ns.file().as_fd()
    }

    /// Creates a socket inside this namespace. Nothing else runs while switched.
    pub fn socket(&self, domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd, MedicError> {
        self.run(|| new_socket(domain, ty, protocol))
    }

    /// A route-netlink socket bound to this namespace.
    /// Two NETLINK_ROUTE sockets in this namespace (one thread switch for both): one
    /// for requests, one for dumps (`netlink::dump`).
    pub fn netlink_sockets(&self) -> Result<(rtnetlink::sys::Socket, OwnedFd), MedicError> {
        let route = || new_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
        let (requests, dumps) = self.run(|| Ok((route()?, route()?)))?;
        // SAFETY: requests is a netlink socket we own; ownership moves into Socket.
        Ok((unsafe { rtnetlink::sys::Socket::from_raw_fd(requests.into_raw_fd()) }, dumps))
    }

    pub fn netlink_socket(&self) -> Result<rtnetlink::sys::Socket, MedicError> {
        let fd = self.socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
        // SAFETY: fd is a netlink socket we own; ownership moves into Socket.
        Ok(unsafe { rtnetlink::sys::Socket::from_raw_fd(fd.into_raw_fd()) })
    }

    /// Runs `work` on a dedicated OS thread switched into this namespace.
    /// `work` must be short and blocking-free: it exists to create sockets.
    pub fn run<T, F>(&self, work: F) -> Result<T, MedicError>
    where
        T: Send,
        F: FnOnce() -> io::Result<T> + Send,
    {
        let target = self.fd();
        let identity = self.identity;
        std::thread::scope(|scope| {
            scope
                .spawn(move || -> Result<T, MedicError> {
                    let _guard = NetnsGuard::enter(target)
                        .map_err(|e| MedicError::netns_io(format!("entering {identity}"), e))?;
                    work().map_err(|e| MedicError::netns_io(format!("inside {identity}"), e))
                })
                .join()
                .unwrap_or_else(|_| Err(MedicError::netns(format!("inside {identity}"), "worker thread panicked")))
        })
    }
}

/// A sandbox namespace file (Docker's `SandboxKey`, e.g. `/run/docker/netns/1a2b3c4d5e6f`).
#[derive(Debug, Clone)]
pub struct SandboxFile {
    pub path: PathBuf,
    pub identity: NsIdentity,
}

/// The namespace files in `dirs` (in no particular order: an nsfs file's times are
/// its inode's, which the kernel may re-create at any open). A file whose namespace is not
/// mounted yet (an empty placeholder on tmpfs, not nsfs) is left out; so is a
/// missing directory (an engine that is not installed).
pub fn sandbox_files(dirs: &[PathBuf]) -> Vec<SandboxFile> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "default") {
                continue; // Docker's handle on the host namespace
            }
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if !is_nsfs(&path) {
                continue;
            }
            out.push(SandboxFile { path, identity: NsIdentity { dev: meta.dev(), ino: meta.ino() } });
        }
    }
    out
}

/// True when `path` is a namespace file (nsfs; a bind mount of `/proc/<pid>/ns/net`).
fn is_nsfs(path: &Path) -> bool {
    const NSFS_MAGIC: libc::c_long = 0x6e73_6673;
    // Before 3.19 (CentOS 7's 3.10) namespace files live on procfs.
    const PROC_SUPER_MAGIC: libc::c_long = 0x9fa0;
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: statfs(2) on a valid C string into a zeroed plain-data struct.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut buf) } == 0)
        && matches!(buf.f_type as libc::c_long, NSFS_MAGIC | PROC_SUPER_MAGIC)
}

/// The Docker container whose processes live in namespace `ns`, read from the
/// cgroup of such a process (`…/docker/<64 hex>` or `…/docker-<64 hex>.scope`).
/// Before `start`, the one process there is the container's `runc init`, among the
/// PIDs handed out last. PIDs grow until `pid_max`, then wrap to low values: the
/// scan goes back from the last PID handed out (`ns_last_pid`, 3.3+) and on
/// round from the top, so after a wrap the newest PIDs still come first. It stops
/// after `max_pids`.
pub fn container_in_netns(ns: NsIdentity, max_pids: usize) -> Option<String> {
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    let want = format!("net:[{}]", ns.ino);
    for pid in newest_first(pids, crate::kernel::procfs::last_pid()).into_iter().take(max_pids) {
        let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else { continue };
        if link.as_os_str() != want.as_str() {
            continue;
        }
        let cgroup = crate::kernel::procfs::cgroup_of(pid).unwrap_or_default();
        if let Some(id) = container_id_in_cgroup(&cgroup) {
            return Some(id);
        }
    }
    None
}

/// PIDs in the order they were most likely handed out, newest first: down from
/// `last` (the last PID handed out), then down from the top (those are older: the
/// counter wrapped since). Without `last`, simply highest first.
pub fn newest_first(mut pids: Vec<u32>, last: Option<u32>) -> Vec<u32> {
    pids.sort_unstable_by(|a, b| b.cmp(a));
    if let Some(last) = last {
        let split = pids.partition_point(|&p| p > last);
        pids.rotate_left(split);
    }
    pids
}

/// The 64-hex container id in a `/proc/<pid>/cgroup` text, if any.
pub fn container_id_in_cgroup(text: &str) -> Option<String> {
    text.split(['/', '-', '.', ':', '\n'])
        .find(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_string)
}

/// The calling thread's namespace file. `/proc/self/task/<tid>` works on every
/// kernel; `/proc/thread-self` needs 3.17, and CentOS 7 runs 3.10.
pub fn current_thread_ns_path() -> PathBuf {
    PathBuf::from(format!("/proc/self/task/{}/ns/net", nix::unistd::gettid()))
}

/// socket(2) in the calling thread's namespace, close-on-exec, owned.
pub fn new_socket(domain: i32, ty: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the returned fd is owned immediately below.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Switches the current thread into a namespace; switches back on drop (also on
/// panic and early return). A thread that cannot get back aborts the process:
/// a thread stuck in a container's namespace is worse than a crash.
pub struct NetnsGuard {
    saved: File,
}

impl NetnsGuard {
    pub fn enter(target: BorrowedFd<'_>) -> io::Result<NetnsGuard> {
        let saved = File::open(current_thread_ns_path())?;
        setns(target, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        Ok(NetnsGuard { saved })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.saved.as_fd(), CloneFlags::CLONE_NEWNET) {
            eprintln!("calico-medic: FATAL: cannot restore network namespace: {e}");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_pids_first_across_a_wrap_of_the_counter() {
        // The counter reached pid_max and wrapped: 310 and 305 are the newest.
        let pids = vec![1, 305, 310, 90_000, 4_100_000, 4_194_000];
        assert_eq!(newest_first(pids.clone(), Some(312)), vec![310, 305, 1, 4_194_000, 4_100_000, 90_000]);
        assert_eq!(newest_first(pids.clone(), None), vec![4_194_000, 4_100_000, 90_000, 310, 305, 1]);
        assert_eq!(newest_first(pids, Some(5_000_000)), vec![4_194_000, 4_100_000, 90_000, 310, 305, 1]);
    }

    #[test]
    fn container_id_from_cgroupfs_and_systemd_layouts() {
        let id = "4f1c0e9a".repeat(8);
        let v1 = format!("12:pids:/docker/{id}\n1:name=systemd:/docker/{id}\n");
        assert_eq!(container_id_in_cgroup(&v1), Some(id.clone()));
        let systemd = format!("0::/system.slice/docker-{id}.scope\n");
        assert_eq!(container_id_in_cgroup(&systemd), Some(id));
        assert_eq!(container_id_in_cgroup("0::/user.slice/session-3.scope\n"), None);
    }

    #[test]
    fn refuses_host_namespace() {
        let host = NsIdentity::current_thread().unwrap();
        match TargetNetns::open(&current_thread_ns_path(), host) {
            Err(MedicError::HostNamespace(_)) => {}
            Err(e @ MedicError::Netns { .. }) if e.to_string().contains("Permission denied") => {}
            other => panic!("expected HostNamespace refusal, got {:?}", other.err()),
        }
    }
}
