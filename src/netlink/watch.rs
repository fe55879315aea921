//! Live watches: netlink multicast subscriptions that hear every link, address and
//! route change in a container's namespace (and link/neighbour/route changes on
//! the host's `cali…` side) the moment the kernel makes it. A watch only reports
//! "something changed"; the agent schedules the usual check/repair pass.
//! Dropping a Watch closes its socket, so no watch keeps a namespace alive.

use std::os::fd::{AsRawFd, OwnedFd};

use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_LINK, RTMGRP_NEIGH};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::route::RouteAttribute;
use rtnetlink::packet_route::RouteNetlinkMessage;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::error::MedicError;
use crate::netns::{new_socket, TargetNetns};

/// What kind of change a notification announced (bounded label set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Link,
    Address,
    Route,
    Neighbour,
    Other,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 5] =
        [ChangeKind::Link, ChangeKind::Address, ChangeKind::Route, ChangeKind::Neighbour, ChangeKind::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Link => "link",
            ChangeKind::Address => "address",
            ChangeKind::Route => "route",
            ChangeKind::Neighbour => "neighbour",
            ChangeKind::Other => "other",
        }
    }
}

/// One notification: its kind and, where the message names one, the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub ifindex: Option<u32>,
}

/// What a watch tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Changed(Change),
    /// The socket overflowed (ENOBUFS): changes were lost, re-check everything it covers.
    Overflow,
    /// The reader stopped on a socket error: the watch is gone and must be re-attached.
    Lost,
}

/// A running subscription; dropping it stops the reader and closes the socket.
pub struct Watch {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const CONTAINER_GROUPS: u32 = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE;
const HOST_GROUPS: u32 = RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE;

fn bind_groups(fd: &OwnedFd, groups: u32) -> std::io::Result<()> {
    // SAFETY: sockaddr_nl is plain data; zeroed is a valid initial value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = groups;
    // SAFETY: valid socket and address for the call's duration.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // A larger buffer makes overflow under bursts rarer (FORCE needs CAP_NET_ADMIN; best effort).
    let size: libc::c_int = 1 << 20;
    // SAFETY: setsockopt with a valid int option value.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
    Ok(())
}

fn classify(msg: &RouteNetlinkMessage) -> Change {
    use RouteNetlinkMessage as M;
    match msg {
        M::NewLink(l) | M::DelLink(l) => Change { kind: ChangeKind::Link, ifindex: Some(l.header.index) },
        M::NewAddress(a) | M::DelAddress(a) => Change { kind: ChangeKind::Address, ifindex: Some(a.header.index) },
        M::NewRoute(r) | M::DelRoute(r) => Change {
            kind: ChangeKind::Route,
            ifindex: r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            }),
        },
        M::NewNeighbour(n) | M::DelNeighbour(n) => {
            Change { kind: ChangeKind::Neighbour, ifindex: Some(n.header.ifindex) }
        }
        _ => Change { kind: ChangeKind::Other, ifindex: None },
    }
}

/// Splits one datagram into notifications. Any byte sequence is safe: a malformed
/// or truncated message ends the parse (the rest of the datagram is dropped).
pub fn parse_datagram(mut buf: &[u8]) -> Vec<Change> {
    const HEADER: usize = 16;
    let mut out = Vec::new();
    while buf.len() >= HEADER {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < HEADER || len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len]) {
            if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                out.push(classify(&inner));
            }
        }
        // Messages are 4-byte aligned; the last one may end without padding.
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    out
}

fn spawn_reader<F>(fd: OwnedFd, what: String, on_event: F) -> Result<Watch, MedicError>
where
    F: Fn(WatchEvent) + Send + Sync + 'static,
{
    // SAFETY: OwnedFd keeps the descriptor open and unchanged while the AsyncFd owns it.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
        .map_err(|e| MedicError::netns_io(format!("watching {what}"), e.into()))?;
    let task = tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable().await else {
                on_event(WatchEvent::Lost);
                return;
            };
            // Held only while reading: hundreds of idle watches hold no buffer (RSS).
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                // SAFETY: sockaddr_nl is plain data; zeroed is a valid initial value.
                let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
                let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
                // SAFETY: buf and from are valid for the lengths passed.
                let n = unsafe {
                    libc::recvfrom(
                        fd.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_nl).cast(),
                        &mut from_len,
                    )
                };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) => {
                            guard.clear_ready();
                            break;
                        }
                        Some(libc::ENOBUFS) => on_event(WatchEvent::Overflow),
                        Some(libc::EINTR) => {}
                        _ => {
                            tracing::warn!(netns = %what, error = %e, "netlink watch stopped");
                            on_event(WatchEvent::Lost);
                            return;
                        }
                    }
                    continue;
                }
                // Only the kernel (port 0) speaks for the namespace: a process in a task
                // with CAP_NET_ADMIN can send to the group too; its datagrams are dropped.
                if from.nl_pid != 0 {
                    continue;
                }
                for change in parse_datagram(&buf[..n as usize]) {
                    on_event(WatchEvent::Changed(change));
                }
            }
        }
    });
    Ok(Watch { task })
}

const NETLINK_WATCH: (i32, i32, i32) = (libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_NONBLOCK, libc::NETLINK_ROUTE);

/// Subscribes to link, IPv4 address and IPv4 route changes inside a container's namespace.
pub fn watch_netns<F>(ns: &TargetNetns, on_event: F) -> Result<Watch, MedicError>
where
    F: Fn(WatchEvent) + Send + Sync + 'static,
{
    let (domain, ty, protocol) = NETLINK_WATCH;
    let fd = ns.socket(domain, ty, protocol)?;
    bind_groups(&fd, CONTAINER_GROUPS)
        .map_err(|e| MedicError::netns_io(format!("subscribing in {}", ns.identity()), e))?;
    spawn_reader(fd, ns.identity().to_string(), on_event)
}

/// Subscribes to link, neighbour and IPv4 route changes in the agent's own (host) namespace.
pub fn watch_host<F>(on_event: F) -> Result<Watch, MedicError>
where
    F: Fn(WatchEvent) + Send + Sync + 'static,
{
    let (domain, ty, protocol) = NETLINK_WATCH;
    let fd = new_socket(domain, ty, protocol).map_err(|e| MedicError::netns_io("host watch socket", e))?;
    bind_groups(&fd, HOST_GROUPS).map_err(|e| MedicError::netns_io("subscribing on the host", e))?;
    spawn_reader(fd, "host".into(), on_event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::NetlinkHeader;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};

    #[test]
    fn parses_a_link_notification() {
        let mut link = LinkMessage::default();
        link.header.index = 7;
        link.attributes.push(LinkAttribute::IfName("cali0".into()));
        let mut msg = NetlinkMessage::new(NetlinkHeader::default(), RouteNetlinkMessage::NewLink(link).into());
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        let two = [buf.clone(), buf].concat();
        let changes = parse_datagram(&two);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0], Change { kind: ChangeKind::Link, ifindex: Some(7) });
        assert!(parse_datagram(&[1, 2, 3]).is_empty());
    }

    /// Whatever a peer sends (random bytes, truncated or misaligned messages), the
    /// parser returns and never panics.
    #[test]
    fn random_and_truncated_datagrams_never_panic() {
        let mut link = LinkMessage::default();
        link.header.index = 3;
        let mut msg = NetlinkMessage::new(NetlinkHeader::default(), RouteNetlinkMessage::NewLink(link).into());
        msg.finalize();
        let mut good = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut good);
        for cut in 0..good.len() {
            parse_datagram(&good[..cut]);
        }
        // A header claiming a non-aligned length at the end of the buffer.
        let mut odd = good.clone();
        odd[0..4].copy_from_slice(&(good.len() as u32 - 1).to_ne_bytes());
        parse_datagram(&odd[..good.len() - 1]);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 4 && next() % 2 == 0 {
                // Plausible lengths reach deeper into the message parser.
                let claimed = (next() % (len as u64 + 8)) as u32;
                buf[0..4].copy_from_slice(&claimed.to_ne_bytes());
            }
            if len >= 6 && next() % 2 == 0 {
                buf[4..6].copy_from_slice(&[16, 0]); // RTM_NEWLINK
            }
            parse_datagram(&buf);
        }
    }
}
