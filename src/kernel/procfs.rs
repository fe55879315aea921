//! Bounded reads of `/proc` and `/sys`: every read has a size cap, so a file that is
//! not what it should be (or a very long cgroup path list) cannot make the agent
//! read without end.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Cap for a single sysctl value (`/proc/sys/...`): one short line.
pub const SYSCTL_CAP: u64 = 4096;
/// Cap for a `/proc/<pid>/cgroup` text: one line per hierarchy.
pub const CGROUP_CAP: u64 = 64 * 1024;

/// Reads a small `/proc` or `/sys` file as text: at most `cap` bytes; a file longer
/// than that is an error (`InvalidData`), not a silently truncated value.
pub fn read_small(path: impl AsRef<Path>, cap: u64) -> io::Result<String> {
    let path = path.as_ref();
    let mut text = String::new();
    File::open(path)?.take(cap.saturating_add(1)).read_to_string(&mut text)?;
    if text.len() as u64 > cap {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: longer than {cap} bytes", path.display())));
    }
    Ok(text)
}

/// A sysctl value (`/proc/sys/<key>`, key with `/` separators), trimmed.
pub fn sysctl(key: &str) -> io::Result<String> {
    if key.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a sysctl key: {key:?}")));
    }
    read_small(format!("/proc/sys/{key}"), SYSCTL_CAP).map(|s| s.trim().to_string())
}

/// The kernel's host name (`/proc/sys/kernel/hostname`), trimmed.
pub fn kernel_hostname() -> io::Result<String> {
    sysctl("kernel/hostname")
}

fn valid_interface(interface: &str) -> io::Result<()> {
    if interface.is_empty() || interface.contains('/') || interface == "." || interface == ".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not an interface name: {interface:?}")));
    }
    Ok(())
}

/// What Felix sets on each workload's host interface (felix `intdataplane/endpoint_mgr.go`):
/// `rp_filter=1`, `route_localnet=1`, `proxy_arp=1`, `neigh/<if>/proxy_delay=0`,
/// `forwarding=1`. `None`: not readable (an old kernel without the key, a gone link).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterfaceSettings {
    pub proxy_arp: Option<bool>,
    pub rp_filter: Option<u32>,
    pub route_localnet: Option<bool>,
    pub proxy_delay: Option<u32>,
    pub forwarding: Option<bool>,
}

/// Reads Felix's five per-interface settings of a host interface.
pub fn interface_settings(interface: &str) -> InterfaceSettings {
    if valid_interface(interface).is_err() {
        return InterfaceSettings::default();
    }
    let conf = |key: &str| sysctl(&format!("net/ipv4/conf/{interface}/{key}")).ok();
    let number = |v: Option<String>| v.and_then(|v| v.parse().ok());
    InterfaceSettings {
        proxy_arp: conf("proxy_arp").map(|v| v == "1"),
        rp_filter: number(conf("rp_filter")),
        route_localnet: conf("route_localnet").map(|v| v == "1"),
        proxy_delay: number(sysctl(&format!("net/ipv4/neigh/{interface}/proxy_delay")).ok()),
        forwarding: conf("forwarding").map(|v| v == "1"),
    }
}

/// The cgroup membership text of a process (`/proc/<pid>/cgroup`).
pub fn cgroup_of(pid: u32) -> io::Result<String> {
    read_small(format!("/proc/{pid}/cgroup"), CGROUP_CAP)
}

/// The last PID the kernel handed out in this PID namespace
/// (`/proc/sys/kernel/ns_last_pid`, 3.3+); `None` where it cannot be read.
pub fn last_pid() -> Option<u32> {
    read_small("/proc/sys/kernel/ns_last_pid", 32).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("value");
        std::fs::write(&path, "12345\n").unwrap();
        assert_eq!(read_small(&path, 6).unwrap(), "12345\n");
        let e = read_small(&path, 5).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert_eq!(read_small(dir.path().join("missing"), 5).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn proc_values_read() {
        assert!(!kernel_hostname().unwrap().is_empty());
        if Path::new("/proc/sys/net/ipv4/conf/lo/proxy_arp").exists() {
            assert_eq!(interface_settings("lo").proxy_arp, Some(false), "lo answers no ARP for others");
        }
        assert!(cgroup_of(std::process::id()).unwrap().contains(':'));
    }

    #[test]
    fn names_cannot_leave_proc_sys() {
        for bad in ["", "..", ".", "a/b"] {
            assert_eq!(valid_interface(bad).unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            assert_eq!(interface_settings(bad), InterfaceSettings::default(), "{bad:?}: nothing read");
        }
        assert_eq!(sysctl("kernel/../../etc/passwd").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(sysctl("/kernel/hostname").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
