//! The one rtnetlink layer: every read and write the product makes, each with its
//! context (kernel-version fallbacks: `kernel::compat`). Observe and repair call
//! these methods; nothing else builds netlink requests. Watches live in `watch`.

mod dump;
mod requests;
pub mod watch;

pub use dump::DumpLimits;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::nsid::{NsidAttribute, NsidMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use serde::Serialize;

use crate::error::{netlink_errno, MedicError};
use crate::kernel::compat::{self, Feature};
use crate::netns::{new_socket, TargetNetns};
use crate::workload::MacAddr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub admin_up: bool,
    /// IFLA_LINK: for a veth, its peer's index (in the peer's namespace). Absent
    /// where the kernel does not report it.
    #[serde(skip)]
    pub peer_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

impl fmt::Display for RouteEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix_len == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}/{}", self.destination, self.prefix_len)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " oif {oif}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourEntry {
    pub mac: MacAddr,
    pub permanent: bool,
}

/// A netlink connection in one namespace. Its I/O task ends when it is dropped, so
/// no socket (and no namespace reference) outlives its use.
pub struct Netlink {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
    /// Deadline of each request (a reply that never comes fails the call, not the agent).
    timeout: Duration,
    /// Ceilings of one dump (a container's namespace is its task's to fill).
    limits: DumpLimits,
    /// Links, addresses, routes and neighbours are dumped on a socket of their own.
    dumps: dump::DumpSocket,
    /// Set when a dump went over its ceiling: the connection was closed then (the
    /// kernel drops the rest of the dump), and every later request fails at once.
    too_large: std::sync::OnceLock<(String, usize)>,
}

/// Per-request deadline until `with_timeout` sets the configured one.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn link_state(msg: &LinkMessage) -> LinkState {
    let mut state = LinkState {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        peer_index: None,
        mtu: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => state.name = n.clone(),
            LinkAttribute::Address(a) => state.mac = MacAddr::from_slice(a),
            LinkAttribute::Link(i) if *i != 0 && *i != msg.header.index => state.peer_index = Some(*i),
            LinkAttribute::Mtu(m) => state.mtu = Some(*m),
            _ => {}
        }
    }
    state
}

fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(msg.header.table as u32)
}

fn route_entry(msg: &RouteMessage) -> RouteEntry {
    let mut entry = RouteEntry {
        destination: Ipv4Addr::UNSPECIFIED,
        prefix_len: msg.header.destination_prefix_length,
        gateway: None,
        oif: None,
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => entry.destination = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => entry.gateway = Some(*ip),
            RouteAttribute::Oif(i) => entry.oif = Some(*i),
            _ => {}
        }
    }
    entry
}

/// A route query with the builder's proto/type/table defaults cleared, so kernel and
/// boot routes are not filtered out where the kernel filters dumps.
fn route_query(builder: RouteMessageBuilder<Ipv4Addr>) -> RouteMessage {
    let mut req = builder.build();
    req.header.protocol = Default::default();
    req.header.kind = Default::default();
    req.header.table = RouteHeader::RT_TABLE_UNSPEC;
    req
}

fn neighbour_entry(n: &NeighbourMessage) -> Option<(u32, Ipv4Addr, NeighbourEntry)> {
    let mut dst = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => dst = Some(*ip),
            NeighbourAttribute::LinkLayerAddress(b) => mac = MacAddr::from_slice(b),
            _ => {}
        }
    }
    let permanent = n.header.state == NeighbourState::Permanent;
    Some((n.header.ifindex, dst?, NeighbourEntry { mac: mac?, permanent }))
}

impl Netlink {
    /// A connection in the calling process's own (host) namespace.
    pub fn host() -> Result<Netlink, MedicError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| MedicError::netns_io("opening the host's netlink socket", e))?;
        let fd = new_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)
            .map_err(|e| MedicError::netns_io("opening the host's netlink socket", e))?;
        Ok(Netlink::assemble(handle, tokio::spawn(conn), dump::DumpSocket::new(fd)?))
    }

    fn assemble(handle: Handle, task: tokio::task::JoinHandle<()>, dumps: dump::DumpSocket) -> Netlink {
        let (timeout, limits, too_large) = (DEFAULT_CALL_TIMEOUT, DumpLimits::NONE, Default::default());
        Netlink { handle, task, timeout, limits, dumps, too_large }
    }

    /// A connection bound to a container's namespace (must be called within a runtime).
    pub fn in_netns(ns: &TargetNetns) -> Result<Netlink, MedicError> {
        let (socket, dumps) = ns.netlink_sockets()?;
        socket
            .set_non_blocking(true)
            .map_err(|e| MedicError::netns_io(format!("netlink socket in {}", ns.identity()), e))?;
        // SAFETY: the fd comes from a Socket we own; ownership moves to TokioSocket.
        let socket = unsafe { rtnetlink::sys::TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(socket);
        Ok(Netlink::assemble(handle, tokio::spawn(conn), dump::DumpSocket::new(dumps)?))
    }

    /// Sets the ceilings of every dump on this connection (`[limits]`).
    pub fn with_limits(mut self, limits: DumpLimits) -> Netlink {
        self.limits = limits;
        self
    }

    /// The raw handle, for tests that must break what the product only repairs.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// A link by name (RTM_GETLINK with IFLA_IFNAME); `None` when it does not exist.
    async fn link_by_name_raw(&self, name: &str) -> Result<Option<LinkState>, MedicError> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_state(&msg))),
            Ok(None) => Ok(None),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(MedicError::netlink(format!("reading link {name}"), e)),
        }
    }

    /// All links of the namespace (a dump: works on every kernel).
    async fn links_raw(&self) -> Result<Vec<LinkState>, MedicError> {
        let request = RouteNetlinkMessage::GetLink(LinkMessage::default());
        self.dumps
            .dump(request, self.limits.links, "listing links", |m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_state(&l)),
                _ => None,
            })
            .await
    }

    /// IPv4 addresses with the index of the link holding each. Always a full dump
    /// filtered here: single-address gets need 5.3, kernel-side filters 4.20.
    async fn ipv4_addresses_raw(&self) -> Result<Vec<(u32, Ipv4Addr, u8)>, MedicError> {
        let request = RouteNetlinkMessage::GetAddress(AddressMessage::default());
        self.dumps
            .dump(request, self.limits.addresses, "listing addresses", |m| {
                let RouteNetlinkMessage::NewAddress(msg) = m else { return None };
                let pick = |want_local: bool| {
                    msg.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Local(IpAddr::V4(ip)) if want_local => Some(*ip),
                        AddressAttribute::Address(IpAddr::V4(ip)) if !want_local => Some(*ip),
                        _ => None,
                    })
                };
                pick(true).or_else(|| pick(false)).map(|ip| (msg.header.index, ip, msg.header.prefix_len))
            })
            .await
    }

    /// IPv4 main-table routes (a dump; the table is filtered here, as old kernels
    /// and non-strict sockets ignore the request's filters).
    async fn ipv4_main_routes_raw(&self) -> Result<Vec<RouteEntry>, MedicError> {
        let request = RouteNetlinkMessage::GetRoute(route_query(RouteMessageBuilder::<Ipv4Addr>::new()));
        self.dumps
            .dump(request, self.limits.routes, "listing routes", |m| match m {
                RouteNetlinkMessage::NewRoute(r) if route_table(&r) == RouteHeader::RT_TABLE_MAIN as u32 => {
                    Some(route_entry(&r))
                }
                _ => None,
            })
            .await
    }

    /// Where this namespace would send packets for `ip` (`ip route get`): the output link.
    async fn route_oif_raw(&self, ip: Ipv4Addr) -> Result<Option<u32>, MedicError> {
        let req = route_query(RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(ip, 32));
        let mut answer = self.handle.route().get(req).execute();
        match answer.try_next().await {
            Ok(Some(msg)) => Ok(route_entry(&msg).oif),
            Ok(None) => Ok(None),
            Err(e) if matches!(netlink_errno(&e), Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH)) => Ok(None),
            Err(e) => Err(MedicError::netlink(format!("resolving route to {ip}"), e)),
        }
    }

    /// The neighbour entry for `ip` on link `index`. Asks for that one entry where the
    /// kernel can answer it (`ip neigh get`, 5.0+); otherwise dumps the IPv4 table and
    /// picks the entry here. The choice is made once per process.
    async fn neighbour_raw(&self, index: u32, ip: Ipv4Addr) -> Result<Option<NeighbourEntry>, MedicError> {
        if compat::available(Feature::NeighbourGet) {
            let answer = if compat::emulated_refusal(Feature::NeighbourGet) {
                Err(MedicError::netlink(format!("asking neighbour {ip}"), compat::refused()))
            } else {
                self.neighbour_get(index, ip).await
            };
            match answer {
                Err(MedicError::Netlink { source, .. }) if compat::is_unsupported(&source) => {
                    compat::unavailable(Feature::NeighbourGet, &source.to_string());
                }
                other => return other,
            }
        }
        self.neighbour_from_dump(index, ip).await
    }

    async fn neighbour_get(&self, index: u32, ip: Ipv4Addr) -> Result<Option<NeighbourEntry>, MedicError> {
        let context = || format!("asking neighbour {ip}");
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(msg));
        req.header.flags = NLM_F_REQUEST;
        let mut handle = self.handle.clone();
        let mut responses = handle.request(req).map_err(|e| MedicError::netlink(context(), e))?;
        while let Some(resp) = responses.next().await {
            match resp.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                    return Ok(neighbour_entry(&n).map(|(_, _, e)| e));
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    let errno = e.code.map(|c| -c.get());
                    if errno == Some(libc::ENOENT) || errno == Some(libc::ENODEV) {
                        return Ok(None);
                    }
                    return Err(MedicError::netlink(context(), rtnetlink::Error::NetlinkError(e)));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    async fn neighbour_from_dump(&self, index: u32, ip: Ipv4Addr) -> Result<Option<NeighbourEntry>, MedicError> {
        let on_link = self.neighbours_on_raw(index).await?;
        Ok(on_link.into_iter().find(|(dst, _)| *dst == ip).map(|(_, entry)| entry))
    }

    /// A link by index, with the id (in this namespace) of the namespace its veth peer
    /// lives in (IFLA_LINK_NETNSID, 4.0+); `None` when the link does not exist (any more).
    async fn link_by_index_raw(&self, index: u32) -> Result<Option<(LinkState, Option<i32>)>, MedicError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(Some(msg)) => {
                let nsid = msg.attributes.iter().find_map(|a| match a {
                    LinkAttribute::LinkNetNsId(id) if *id >= 0 => Some(*id),
                    _ => None,
                });
                Ok(Some((link_state(&msg), nsid)))
            }
            Ok(None) => Ok(None),
            Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(MedicError::netlink(format!("reading link #{index}"), e)),
        }
    }

    /// The id this namespace gives the namespace behind `fd` (RTM_GETNSID with
    /// NETNSA_FD, 4.0+); `None` when none is assigned or the kernel cannot say.
    async fn nsid_of_raw(&self, fd: i32) -> Result<Option<i32>, MedicError> {
        let mut msg = NsidMessage::default();
        msg.header.family = AddressFamily::Unspec;
        msg.attributes.push(NsidAttribute::Fd(fd as u32));
        let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNsId(msg));
        req.header.flags = NLM_F_REQUEST;
        let mut handle = self.handle.clone();
        let mut responses = handle.request(req).map_err(|e| MedicError::netlink("asking a namespace's id", e))?;
        while let Some(resp) = responses.next().await {
            match resp.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNsId(m)) => {
                    return Ok(m.attributes.iter().find_map(|a| match a {
                        NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                        _ => None,
                    }));
                }
                NetlinkPayload::Error(e) if e.code.is_some() => return Ok(None),
                _ => {}
            }
        }
        Ok(None)
    }

    /// Every IPv4 neighbour entry on link `index` (a dump filtered here: works on every kernel).
    async fn neighbours_on_raw(&self, index: u32) -> Result<Vec<(Ipv4Addr, NeighbourEntry)>, MedicError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        let what = format!("listing neighbours on link #{index}");
        self.dumps
            .dump(RouteNetlinkMessage::GetNeighbour(msg), usize::MAX, &what, |m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => {
                    neighbour_entry(&n).filter(|(i, _, _)| *i == index).map(|(_, dst, entry)| (dst, entry))
                }
                _ => None,
            })
            .await
    }

    /// `ip link set <index> address <mac>`.
    async fn set_mac_raw(&self, index: u32, mac: MacAddr, context: &str) -> Result<(), MedicError> {
        let msg = LinkUnspec::new_with_index(index).address(mac.0.to_vec()).build();
        self.handle.link().set(msg).execute().await.map_err(|e| MedicError::netlink(context, e))
    }

    /// `ip link set <index> up`.
    async fn set_up_raw(&self, index: u32, context: &str) -> Result<(), MedicError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle.link().set(msg).execute().await.map_err(|e| MedicError::netlink(context, e))
    }

    /// `ip addr add <ip>/<len> dev <index>`.
    async fn add_address_raw(&self, index: u32, ip: Ipv4Addr, prefix_len: u8, context: &str) -> Result<(), MedicError> {
        self.handle
            .address()
            .add(index, ip.into(), prefix_len)
            .execute()
            .await
            .map_err(|e| MedicError::netlink(context, e))
    }

    /// `ip route add <dst>/32 dev <index> scope link proto boot` (proto boot, as Docker
    /// installs it, so `ip route` reads exactly like the plugin's original state).
    async fn add_link_route_raw(&self, index: u32, destination: Ipv4Addr, context: &str) -> Result<(), MedicError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(destination, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Boot)
            .build();
        self.handle.route().add(route).execute().await.map_err(|e| MedicError::netlink(context, e))
    }

    /// `ip route add|replace default via <gateway> dev <index> proto boot`.
    async fn set_default_route_raw(
        &self,
        index: u32,
        gateway: Ipv4Addr,
        replace: bool,
        context: &str,
    ) -> Result<(), MedicError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(index)
            .protocol(RouteProtocol::Boot)
            .build();
        let req = self.handle.route().add(route);
        let req = if replace { req.replace() } else { req };
        req.execute().await.map_err(|e| MedicError::netlink(context, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_peer_index_is_read_and_self_links_ignored() {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.attributes.push(LinkAttribute::IfName("cali0".into()));
        msg.attributes.push(LinkAttribute::Link(12));
        assert_eq!(link_state(&msg).peer_index, Some(12));
        msg.attributes.pop();
        msg.attributes.push(LinkAttribute::Link(7));
        assert_eq!(link_state(&msg).peer_index, None, "IFLA_LINK == own index means no peer");
    }

    #[test]
    fn neighbour_entries_need_an_address_and_a_mac() {
        let mut n = NeighbourMessage::default();
        n.header.ifindex = 3;
        n.header.state = NeighbourState::Permanent;
        n.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(Ipv4Addr::new(10, 0, 0, 1))));
        assert!(neighbour_entry(&n).is_none(), "no lladdr (an incomplete entry)");
        n.attributes.push(NeighbourAttribute::LinkLayerAddress(vec![0xee; 6]));
        let (i, ip, e) = neighbour_entry(&n).unwrap();
        assert_eq!((i, ip, e.permanent, e.mac), (3, Ipv4Addr::new(10, 0, 0, 1), true, crate::workload::CALICO_MAC));
    }
}
