//! Reachability probes: ICMP echo from the host to a workload (the direction the
//! MAC failure breaks), and optional TCP/ICMP probes from inside a workload's
//! namespace. In-namespace sockets are created by `TargetNetns::socket` (no await
//! while switched) and then used from ordinary runtime threads.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::error::MedicError;
use crate::netlink::compat::{self, Feature};
use crate::netns::{new_socket, TargetNetns};

static SEQUENCE: AtomicU16 = AtomicU16::new(1);

/// A probe target from configuration: `tcp:ADDR:PORT` or `icmp:ADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    Tcp(SocketAddrV4),
    Icmp(Ipv4Addr),
}

impl ProbeTarget {
    /// Label value for metrics (bounded by configuration).
    pub fn label(&self) -> String {
        match self {
            ProbeTarget::Tcp(a) => format!("tcp:{a}"),
            ProbeTarget::Icmp(ip) => format!("icmp:{ip}"),
        }
    }
}

impl std::str::FromStr for ProbeTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("tcp:") {
            rest.parse().map(ProbeTarget::Tcp).map_err(|_| format!("{s:?}: want tcp:IPv4:PORT"))
        } else if let Some(rest) = s.strip_prefix("icmp:") {
            rest.parse().map(ProbeTarget::Icmp).map_err(|_| format!("{s:?}: want icmp:IPv4"))
        } else {
            Err(format!("{s:?}: want tcp:IPv4:PORT or icmp:IPv4"))
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from(chunk[0]) << 8 };
        sum = sum.wrapping_add(u32::from(word));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP socket in the calling thread's namespace: unprivileged ping socket where
/// `net.ipv4.ping_group_range` allows it, raw socket otherwise (decided once per
/// process; old distributions leave ping sockets off). `true` = raw.
fn icmp_socket() -> std::io::Result<(OwnedFd, bool)> {
    let icmp = |ty| new_socket(libc::AF_INET, ty | libc::SOCK_NONBLOCK, libc::IPPROTO_ICMP);
    if compat::available(Feature::PingSocket) {
        let attempt = if compat::emulated_refusal(Feature::PingSocket) {
            Err(std::io::Error::from_raw_os_error(libc::EACCES))
        } else {
            icmp(libc::SOCK_DGRAM)
        };
        match attempt {
            Ok(fd) => return Ok((fd, false)),
            Err(e) => compat::unavailable(Feature::PingSocket, &e.to_string()),
        }
    }
    icmp(libc::SOCK_RAW).map(|fd| (fd, true))
}

/// Sends one echo request on `fd` and waits for the matching reply.
async fn echo(fd: OwnedFd, raw: bool, target: Ipv4Addr, timeout: Duration) -> Result<Option<Duration>, MedicError> {
    let io = |e: std::io::Error| MedicError::netns_io(format!("icmp probe to {target}"), e);
    // SAFETY: OwnedFd keeps the descriptor open and unchanged while the AsyncFd owns it.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| io(e.into()))?;
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let ident = (std::process::id() as u16) ^ seq.rotate_left(7);
    let mut packet = vec![8u8, 0, 0, 0];
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(b"calico-medic-probe");
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(target).to_be() },
        sin_zero: [0; 8],
    };
    let started = Instant::now();
    // SAFETY: packet and addr are valid for the duration of the call.
    let sent = unsafe {
        libc::sendto(
            fd.get_ref().as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if sent < 0 {
        let e = std::io::Error::last_os_error();
        // No route / host unreachable are probe failures, not errors.
        return match e.raw_os_error() {
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EINVAL) => Ok(None),
            _ => Err(io(e)),
        };
    }
    let wait = async {
        let mut buf = [0u8; 1500];
        loop {
            let mut guard = fd.readable().await.map_err(io)?;
            let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_in>() as u32;
            // SAFETY: buffers are valid and sized as passed.
            let n = unsafe {
                libc::recvfrom(
                    fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_in).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                // An ICMP error (e.g. host unreachable) arrives as a socket error.
                return Ok(None);
            }
            let data = &buf[..n as usize];
            let icmp =
                if raw { data.get(usize::from(data.first().copied().unwrap_or(0) & 0x0f) * 4..) } else { Some(data) };
            let Some(icmp) = icmp.filter(|p| p.len() >= 8) else { continue };
            let from_ip = Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr));
            let reply_seq = u16::from_be_bytes([icmp[6], icmp[7]]);
            let reply_id = u16::from_be_bytes([icmp[4], icmp[5]]);
            // Ping sockets rewrite the id to the socket's port; raw sockets see every reply.
            if icmp[0] == 0 && from_ip == target && reply_seq == seq && (!raw || reply_id == ident) {
                return Ok(Some(started.elapsed()));
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r,
        Err(_) => Ok(None),
    }
}

/// ICMP echo from the calling process's namespace (the host). `Ok(None)`: no reply.
pub async fn host_icmp(target: Ipv4Addr, timeout: Duration) -> Result<Option<Duration>, MedicError> {
    let (fd, raw) = icmp_socket().map_err(|e| MedicError::netns_io("opening an ICMP socket", e))?;
    echo(fd, raw, target, timeout).await
}

/// A probe from inside a workload's namespace.
pub async fn from_netns(
    ns: &TargetNetns,
    target: &ProbeTarget,
    timeout: Duration,
) -> Result<Option<Duration>, MedicError> {
    match target {
        ProbeTarget::Icmp(ip) => {
            let (fd, raw) = ns.run(icmp_socket)?;
            echo(fd, raw, *ip, timeout).await
        }
        ProbeTarget::Tcp(addr) => {
            let fd = ns.socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)?;
            // SAFETY: a fresh non-blocking TCP socket we own.
            let std_stream = unsafe { std::net::TcpStream::from_raw_fd(fd.into_raw_fd()) };
            let socket = tokio::net::TcpSocket::from_std_stream(std_stream);
            let started = Instant::now();
            match tokio::time::timeout(timeout, socket.connect(SocketAddr::V4(*addr))).await {
                Ok(Ok(_stream)) => Ok(Some(started.elapsed())),
                _ => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_echo_header() {
        // Echo request, id 1, seq 1, no payload: checksum 0xf7fd.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }

    #[test]
    fn targets_parse() {
        assert_eq!("tcp:10.0.0.1:80".parse::<ProbeTarget>().unwrap().label(), "tcp:10.0.0.1:80");
        assert_eq!("icmp:10.0.0.1".parse::<ProbeTarget>().unwrap(), ProbeTarget::Icmp(Ipv4Addr::new(10, 0, 0, 1)));
        assert!("udp:1.2.3.4:5".parse::<ProbeTarget>().is_err());
    }

    #[tokio::test]
    async fn loopback_answers() {
        match host_icmp(Ipv4Addr::LOCALHOST, Duration::from_secs(1)).await {
            Ok(rtt) => assert!(rtt.is_some(), "127.0.0.1 should answer ping"),
            Err(e) => eprintln!("SKIP: no ICMP socket available here: {e}"),
        }
    }
}
