//! Kernel-version fallbacks. The oldest supported kernel is 3.10 (CentOS 7); Ubuntu
//! 16.04 runs 4.4. A feature newer than that is tried once; when the kernel refuses
//! it (EOPNOTSUPP / EINVAL / EACCES), the fallback is used for the rest of the
//! process and that is logged once.
//!
//! `CALICO_MEDIC_EMULATE_KERNEL=3.10` makes the request layer answer as that kernel
//! would (a refusal for every newer feature), so the test command proves every
//! fallback on a new kernel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rtnetlink::packet_core::ErrorMessage;

/// A kernel facility with a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// RTM_GETNEIGH for one entry (`ip neigh get`): Linux 5.0. Fallback: dump the
    /// IPv4 neighbour table and pick the entry in user space.
    NeighbourGet,
    /// Unprivileged ICMP sockets (SOCK_DGRAM, IPPROTO_ICMP): off unless
    /// `net.ipv4.ping_group_range` allows the group (`1 0`, off, on CentOS 7 and
    /// Ubuntu 16.04). Fallback: a raw ICMP socket (CAP_NET_RAW).
    PingSocket,
}

impl Feature {
    pub const ALL: [Feature; 2] = [Feature::NeighbourGet, Feature::PingSocket];

    fn slot(self) -> &'static AtomicBool {
        static REFUSED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
        &REFUSED[self as usize]
    }

    /// The first kernel (or, for ping sockets, distribution default) that has it.
    fn since(self) -> (u32, u32) {
        match self {
            Feature::NeighbourGet => (5, 0),
            Feature::PingSocket => (5, 0),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Feature::NeighbourGet => "single-entry neighbour get (RTM_GETNEIGH, Linux 5.0)",
            Feature::PingSocket => "unprivileged ICMP socket (net.ipv4.ping_group_range)",
        }
    }

    pub fn fallback(self) -> &'static str {
        match self {
            Feature::NeighbourGet => "a neighbour table dump filtered in user space",
            Feature::PingSocket => "a raw ICMP socket",
        }
    }
}

/// False once the kernel refused the feature in this process.
pub fn available(feature: Feature) -> bool {
    !feature.slot().load(Ordering::Relaxed)
}

/// Records a refusal; logged the first time only.
pub fn unavailable(feature: Feature, reason: &str) {
    if !feature.slot().swap(true, Ordering::Relaxed) {
        // The message names the feature and its fallback (a bounded set of phrases).
        tracing::info!(
            reason = %reason,
            "kernel: {} not available; using {} from now on",
            feature.describe(),
            feature.fallback()
        );
    }
}

/// Errno values with which a kernel says "this request type or form is unknown here".
pub fn is_unsupported_errno(errno: i32) -> bool {
    matches!(errno, libc::EOPNOTSUPP | libc::EINVAL | libc::EPROTONOSUPPORT)
}

pub fn is_unsupported(e: &rtnetlink::Error) -> bool {
    crate::error::netlink_errno(e).is_some_and(is_unsupported_errno)
}

/// The kernel version being emulated (`CALICO_MEDIC_EMULATE_KERNEL`), if any.
pub fn emulated_kernel() -> Option<(u32, u32)> {
    static EMULATED: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    *EMULATED.get_or_init(|| {
        let raw = std::env::var("CALICO_MEDIC_EMULATE_KERNEL").ok().filter(|v| !v.is_empty())?;
        let parsed = parse_version(&raw);
        match parsed {
            Some(v) => tracing::info!(
                kernel = %format_args!("{}.{}", v.0, v.1),
                "emulating an older kernel: newer kernel features answer as refused"
            ),
            None => tracing::warn!(value = ?raw, "CALICO_MEDIC_EMULATE_KERNEL is not a version like 3.10; ignored"),
        }
        parsed
    })
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().ok()?;
    Some((major, minor))
}

/// True when the emulated kernel would refuse `feature`.
pub fn emulated_refusal(feature: Feature) -> bool {
    emulated_kernel().is_some_and(|k| k < feature.since())
}

/// The error an old kernel answers for a request type it has no handler for.
pub fn refused() -> rtnetlink::Error {
    let mut msg = ErrorMessage::default();
    msg.code = std::num::NonZeroI32::new(-libc::EOPNOTSUPP);
    rtnetlink::Error::NetlinkError(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_recognised() {
        assert!(is_unsupported(&refused()));
        let mut msg = ErrorMessage::default();
        msg.code = std::num::NonZeroI32::new(-libc::ENOENT);
        assert!(!is_unsupported(&rtnetlink::Error::NetlinkError(msg)), "ENOENT = no such entry, not unsupported");
        assert!(is_unsupported_errno(libc::EINVAL));
    }

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(parse_version("3.10"), Some((3, 10)));
        assert_eq!(parse_version("4.4.0-210-generic".split('-').next().unwrap()), Some((4, 4)));
        assert_eq!(parse_version("5"), Some((5, 0)));
        assert_eq!(parse_version("x"), None);
        assert!((3, 10) < Feature::NeighbourGet.since() && (4, 4) < Feature::NeighbourGet.since());
        assert!((6, 1) >= Feature::NeighbourGet.since());
    }
}
