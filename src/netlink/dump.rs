//! Dumps read on a socket of their own, one message at a time, under a ceiling.
//!
//! A container's namespace is its task's to fill: a task with NET_ADMIN can hold a
//! million routes. rtnetlink's connection reads a dump as fast as the kernel makes it
//! and queues every decoded message for the caller, so a dump stopped at its ceiling
//! still costs the whole table in memory and CPU. Here the kernel makes the next
//! part of a dump only when this reader asks for it (one 64 KiB datagram at a time);
//! over the ceiling the socket is closed and the kernel drops the rest. The cost of
//! one dump is bounded by its ceiling, whatever the namespace holds.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use rtnetlink::packet_route::RouteNetlinkMessage;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::error::MedicError;

/// How many messages one dump may hold before the read stops with
/// `MedicError::NamespaceTooLarge`. The host's own namespace is not capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpLimits {
    pub links: usize,
    pub addresses: usize,
    pub routes: usize,
}

impl DumpLimits {
    pub const NONE: DumpLimits = DumpLimits { links: usize::MAX, addresses: usize::MAX, routes: usize::MAX };
}

/// One datagram of a dump: the kernel fills at most this much per read.
const DATAGRAM: usize = 64 * 1024;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HEADER: usize = 16;

/// The dump socket of one connection. A dump that does not finish (its ceiling, a
/// deadline, an error) takes the socket with it: the next dump on this connection
/// fails rather than read the rest of an old one.
pub(super) struct DumpSocket {
    socket: tokio::sync::Mutex<Option<AsyncFd<OwnedFd>>>,
    sequence: AtomicU32,
}

/// Where one dump stands after a datagram.
enum Step {
    More,
    Done,
}

impl DumpSocket {
    /// `fd`: a NETLINK_ROUTE socket in the namespace to read (made non-blocking here).
    pub(super) fn new(fd: OwnedFd) -> Result<DumpSocket, MedicError> {
        set_non_blocking(&fd).map_err(|e| MedicError::netns_io("netlink dump socket", e))?;
        // SAFETY: OwnedFd keeps the descriptor open and unchanged while the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| MedicError::netns_io("netlink dump socket", e.into()))?;
        Ok(DumpSocket { socket: tokio::sync::Mutex::new(Some(fd)), sequence: AtomicU32::new(1) })
    }

    /// Sends `request` as a dump and hands each answer to `keep` as it is parsed; more
    /// than `cap` answers stop the read with `NamespaceTooLarge`.
    pub(super) async fn dump<T>(
        &self,
        request: RouteNetlinkMessage,
        cap: usize,
        what: &str,
        mut keep: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>, MedicError> {
        let mut slot = self.socket.lock().await;
        // Taken out for the dump: dropped (closed) unless the dump finishes.
        let Some(fd) = slot.take() else {
            return Err(MedicError::netns(what, "an earlier dump on this connection did not finish"));
        };
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        send(&fd, request, sequence).map_err(|e| MedicError::netns_io(format!("{what}: sending the request"), e))?;
        let mut buf = vec![0u8; DATAGRAM];
        let (mut out, mut read) = (Vec::new(), 0usize);
        loop {
            let mut guard = fd.readable().await.map_err(|e| MedicError::netns_io(what.to_string(), e))?;
            let n = match recv(fd.get_ref(), &mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(MedicError::netns_io(format!("{what}: reading the dump"), e)),
            };
            let step = parse(&buf[..n], sequence, what, &mut |msg| {
                read += 1;
                if read > cap {
                    return Err(MedicError::NamespaceTooLarge { what: what.to_string(), cap });
                }
                out.extend(keep(msg));
                Ok(())
            })?;
            if let Step::Done = step {
                *slot = Some(fd);
                return Ok(out);
            }
        }
    }
}

/// Walks one datagram: answers of this dump go to `each`; `NLMSG_DONE` ends it; an
/// error message is the request's error. Messages of other sequences are skipped.
fn parse(
    mut buf: &[u8],
    sequence: u32,
    what: &str,
    each: &mut dyn FnMut(RouteNetlinkMessage) -> Result<(), MedicError>,
) -> Result<Step, MedicError> {
    while buf.len() >= HEADER {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < HEADER || len > buf.len() {
            return Err(MedicError::netns(what, "a malformed dump message from the kernel"));
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let message = &buf[..len];
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
        if seq != sequence {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(Step::Done),
            NLMSG_ERROR => {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(message)
                    .map_err(|e| MedicError::netns(what, &format!("an unreadable error answer: {e}")))?;
                if let NetlinkPayload::Error(err) = msg.payload {
                    if err.code.is_some() {
                        return Err(MedicError::netlink(what.to_string(), rtnetlink::Error::NetlinkError(err)));
                    }
                }
                return Ok(Step::Done);
            }
            _ => {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(message)
                    .map_err(|e| MedicError::netns(what, &format!("an unreadable answer: {e}")))?;
                if let NetlinkPayload::InnerMessage(inner) = msg.payload {
                    each(inner)?;
                }
            }
        }
    }
    Ok(Step::More)
}

fn send(fd: &AsyncFd<OwnedFd>, request: RouteNetlinkMessage, sequence: u32) -> std::io::Result<()> {
    let mut msg = NetlinkMessage::from(request);
    msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    msg.header.sequence_number = sequence;
    msg.finalize();
    let mut bytes = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut bytes);
    // SAFETY: sockaddr_nl is plain data; zeroed (port 0) addresses the kernel.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: bytes and kernel are valid for the lengths passed. A request to the
    // kernel is handled within the call: it never blocks on a netlink socket.
    let n = unsafe {
        libc::sendto(
            fd.get_ref().as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One datagram, from the kernel only (port 0): anything else is dropped.
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: sockaddr_nl is plain data; zeroed is a valid initial value.
        let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_nl).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if from.nl_pid == 0 {
            return Ok(n as usize);
        }
    }
}

fn set_non_blocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a valid descriptor we own.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above, setting O_NONBLOCK on the same descriptor.
    if flags < 0 || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(seq: u32) -> Vec<u8> {
        let mut b = vec![0u8; 20];
        b[..4].copy_from_slice(&20u32.to_ne_bytes());
        b[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        b[8..12].copy_from_slice(&seq.to_ne_bytes());
        b
    }

    #[test]
    fn done_of_another_dump_is_skipped_and_garbage_is_an_error() {
        let mut none = |_m: RouteNetlinkMessage| -> Result<(), MedicError> { panic!("no answers here") };
        assert!(matches!(parse(&done(7), 8, "x", &mut none), Ok(Step::More)));
        assert!(matches!(parse(&done(8), 8, "x", &mut none), Ok(Step::Done)));
        let mut lying = done(8);
        lying[..4].copy_from_slice(&4000u32.to_ne_bytes());
        assert!(parse(&lying, 8, "x", &mut none).is_err());
    }
}
