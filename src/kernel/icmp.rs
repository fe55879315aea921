//! ICMP sockets (IPv4) through nix's socket wrappers: an unprivileged ping socket
//! where the kernel allows it, a raw socket otherwise. The echo itself (packet,
//! matching, timeout) is the probe's business (`probe.rs`).

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::compat::{self, Feature};

/// An ICMP socket in the namespace of the thread that opened it, not yet registered
/// with the runtime: it may be opened on a namespace thread that has no runtime.
#[derive(Debug)]
pub struct IcmpFd {
    fd: OwnedFd,
    raw: bool,
}

/// Non-blocking, close-on-exec ICMP socket of `ty` in the calling thread's namespace.
fn icmp_socket(ty: SockType) -> io::Result<OwnedFd> {
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    socket::socket(AddressFamily::Inet, ty, flags, SockProtocol::Icmp).map_err(io::Error::from)
}

impl IcmpFd {
    /// An ICMP socket in the calling thread's namespace: an unprivileged ping socket
    /// where `net.ipv4.ping_group_range` allows it, a raw socket (CAP_NET_RAW)
    /// otherwise. The first refusal decides for the rest of the process (old
    /// distributions leave ping sockets off); `CALICO_MEDIC_EMULATE_KERNEL` refuses them.
    pub fn open() -> io::Result<IcmpFd> {
        if compat::available(Feature::PingSocket) {
            let attempt = if compat::emulated_refusal(Feature::PingSocket) {
                Err(io::Error::from_raw_os_error(libc::EACCES))
            } else {
                icmp_socket(SockType::Datagram)
            };
            match attempt {
                Ok(fd) => return Ok(IcmpFd { fd, raw: false }),
                Err(e) => compat::unavailable(Feature::PingSocket, &e.to_string()),
            }
        }
        icmp_socket(SockType::Raw).map(|fd| IcmpFd { fd, raw: true })
    }

    /// A raw socket (sees every ICMP message, IP header included), not a ping socket.
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// Registers the socket with the current tokio runtime (must be called on one).
    pub fn register(self) -> io::Result<IcmpSocket> {
        // SAFETY: the OwnedFd moves into the AsyncFd, which keeps it open and
        // unchanged until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(self.fd, Interest::READABLE) }?;
        Ok(IcmpSocket { fd, raw: self.raw })
    }
}

/// What one receive brought.
#[derive(Debug)]
pub enum Received<'b> {
    /// An ICMP message (a raw socket's IP header stripped) and its sender.
    Message { from: Ipv4Addr, icmp: &'b [u8] },
    /// An error pending on the socket, e.g. an ICMP error such as host unreachable.
    SocketError(io::Error),
}

/// An ICMP socket registered with the runtime.
#[derive(Debug)]
pub struct IcmpSocket {
    fd: AsyncFd<OwnedFd>,
    raw: bool,
}

impl IcmpSocket {
    /// See [`IcmpFd::is_raw`]. A ping socket rewrites the echo id to its own port.
    pub fn is_raw(&self) -> bool {
        self.raw
    }

    /// Sends one ICMP message (type, code, checksum, rest) to `target`.
    pub fn send_to(&self, message: &[u8], target: Ipv4Addr) -> io::Result<usize> {
        let addr = SockaddrIn::from(SocketAddrV4::new(target, 0));
        socket::sendto(self.fd.get_ref().as_raw_fd(), message, &addr, MsgFlags::empty()).map_err(io::Error::from)
    }

    /// Waits for the next ICMP message. `Err` only when waiting itself fails.
    pub async fn recv<'b>(&self, buf: &'b mut [u8]) -> io::Result<Received<'b>> {
        let (from, start, end) = loop {
            let mut guard = self.fd.readable().await?;
            match socket::recvfrom::<SockaddrIn>(self.fd.get_ref().as_raw_fd(), buf) {
                Err(Errno::EAGAIN) => guard.clear_ready(),
                Err(e) => return Ok(Received::SocketError(e.into())),
                Ok((n, from)) => {
                    let start =
                        if self.raw { usize::from(buf[..n].first().copied().unwrap_or(0) & 0x0f) * 4 } else { 0 };
                    if start <= n {
                        break (from.map_or(Ipv4Addr::UNSPECIFIED, |a| a.ip()), start, n);
                    }
                }
            }
        };
        Ok(Received::Message { from, icmp: &buf[start..end] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `net.ipv4.ping_group_range` of this namespace admits the effective group.
    fn ping_sockets_allowed() -> bool {
        let range = crate::kernel::procfs::sysctl("net/ipv4/ping_group_range").unwrap_or_default();
        let bounds: Vec<u32> = range.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        let gid = nix::unistd::getegid().as_raw();
        matches!(bounds[..], [low, high] if low <= gid && gid <= high)
    }

    #[test]
    fn ping_socket_where_allowed_else_raw() {
        let expect_raw = !ping_sockets_allowed() || compat::emulated_refusal(Feature::PingSocket);
        match IcmpFd::open() {
            Ok(fd) => assert_eq!(fd.is_raw(), expect_raw),
            Err(e) => eprintln!("SKIP: no ICMP socket available here: {e}"),
        }
    }
}
