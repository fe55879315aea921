//! Reading the observed state of an endpoint through rtnetlink: the container side
//! (inside its namespace) and the host side (Felix's `cali…` veth, route, ARP entry).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{FromRawFd, IntoRawFd};

use futures::TryStreamExt;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, RouteMessageBuilder};
use serde::Serialize;

use crate::error::{netlink_errno, MedicError};
use crate::netns::TargetNetns;
use crate::workload::MacAddr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub admin_up: bool,
    pub oper_up: bool,
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

/// What the container's namespace holds for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSide {
    pub link: Option<LinkState>,
    /// IPv4 addresses on `link`.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// IPv4 main-table routes of the namespace.
    pub routes: Vec<RouteEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourEntry {
    pub mac: MacAddr,
    pub permanent: bool,
}

/// What the host holds for one endpoint (programmed by Felix).
#[derive(Debug, Clone, PartialEq)]
pub struct HostSide {
    pub link: Option<LinkState>,
    /// The host resolves the workload IP out of the endpoint's `cali…` link.
    pub route_to_workload: bool,
    /// The permanent ARP entry for the workload IP on that link.
    pub neighbour: Option<NeighbourEntry>,
    pub proxy_arp: Option<bool>,
}

/// A netlink connection whose I/O task ends when the session is dropped, so no
/// socket (and no namespace reference) outlives its use.
pub struct NetlinkSession {
    pub handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

impl NetlinkSession {
    /// A session in the calling process's own (host) namespace.
    pub fn host() -> Result<NetlinkSession, MedicError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| MedicError::Netns(format!("opening host netlink socket: {e}")))?;
        Ok(NetlinkSession { handle, task: tokio::spawn(conn) })
    }

    /// A session bound to a container's namespace (must be called within a runtime).
    pub fn in_netns(ns: &TargetNetns) -> Result<NetlinkSession, MedicError> {
        let socket = ns.netlink_socket()?;
        socket.set_non_blocking(true).map_err(|e| MedicError::Netns(format!("netlink socket: {e}")))?;
        // SAFETY: the fd comes from a Socket we own; ownership moves to TokioSocket.
        let socket = unsafe { rtnetlink::sys::TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(socket);
        Ok(NetlinkSession { handle, task: tokio::spawn(conn) })
    }
}

impl Drop for NetlinkSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn link_state(msg: &LinkMessage) -> LinkState {
    let mut name = String::new();
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Address(a) => mac = MacAddr::from_slice(a),
            _ => {}
        }
    }
    LinkState {
        index: msg.header.index,
        name,
        mac,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        oper_up: msg.header.flags.contains(LinkFlags::LowerUp),
    }
}

/// Looks a link up by name; `None` when it does not exist.
pub async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkState>, MedicError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Some(link_state(&msg))),
        Ok(None) => Ok(None),
        Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(MedicError::netlink(format!("reading link {name}"), e)),
    }
}

/// All links of the namespace.
pub async fn links(handle: &Handle) -> Result<Vec<LinkState>, MedicError> {
    let msgs: Vec<LinkMessage> =
        handle.link().get().execute().try_collect().await.map_err(|e| MedicError::netlink("listing links", e))?;
    Ok(msgs.iter().map(link_state).collect())
}

/// IPv4 addresses, with the index of the link holding each.
pub async fn ipv4_addresses(handle: &Handle) -> Result<Vec<(u32, Ipv4Addr, u8)>, MedicError> {
    let msgs: Vec<_> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| MedicError::netlink("listing addresses", e))?;
    let mut out = Vec::new();
    for msg in msgs {
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let addr = local.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })
        });
        if let Some(ip) = addr {
            out.push((msg.header.index, ip, msg.header.prefix_len));
        }
    }
    Ok(out)
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

/// A route query. The builder's proto/type/table defaults are cleared so kernel and
/// boot routes are not filtered out on strict sockets.
fn route_query(builder: RouteMessageBuilder<Ipv4Addr>) -> RouteMessage {
    let mut req = builder.build();
    req.header.protocol = Default::default();
    req.header.kind = Default::default();
    req.header.table = RouteHeader::RT_TABLE_UNSPEC;
    req
}

/// IPv4 main-table routes.
pub async fn ipv4_main_routes(handle: &Handle) -> Result<Vec<RouteEntry>, MedicError> {
    let req = route_query(RouteMessageBuilder::<Ipv4Addr>::new());
    let msgs: Vec<RouteMessage> =
        handle.route().get(req).execute().try_collect().await.map_err(|e| MedicError::netlink("listing routes", e))?;
    Ok(msgs.iter().filter(|m| route_table(m) == RouteHeader::RT_TABLE_MAIN as u32).map(route_entry).collect())
}

/// The container side of an endpoint. The interface is found by name; with several
/// calico networks the one holding the endpoint's IP wins.
pub async fn observe_container(handle: &Handle, interface: &str, ip: Ipv4Addr) -> Result<ContainerSide, MedicError> {
    let addrs = ipv4_addresses(handle).await?;
    let mut link = link_by_name(handle, interface).await?;
    if let Some(&(index, _, _)) = addrs.iter().find(|(_, a, _)| *a == ip) {
        if link.as_ref().map(|l| l.index) != Some(index) {
            if let Some(other) = links(handle).await?.into_iter().find(|l| l.index == index) {
                link = Some(other);
            }
        }
    }
    let routes = ipv4_main_routes(handle).await?;
    let addresses = match &link {
        Some(l) => addrs.iter().filter(|(i, _, _)| *i == l.index).map(|&(_, a, p)| (a, p)).collect(),
        None => Vec::new(),
    };
    Ok(ContainerSide { link, addresses, routes })
}

/// Where the host would send packets for `ip` (`ip route get`): the output link index.
async fn host_route_oif(handle: &Handle, ip: Ipv4Addr) -> Result<Option<u32>, MedicError> {
    let req = route_query(RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(ip, 32));
    let mut answer = handle.route().get(req).execute();
    match answer.try_next().await {
        Ok(Some(msg)) => Ok(route_entry(&msg).oif),
        Ok(None) => Ok(None),
        Err(e) if matches!(netlink_errno(&e), Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH)) => Ok(None),
        Err(e) => Err(MedicError::netlink(format!("resolving route to {ip}"), e)),
    }
}

/// The neighbour entry for `ip` on link `index` (`ip neigh get`), without dumping the table.
async fn neighbour(handle: &Handle, index: u32, ip: Ipv4Addr) -> Result<Option<NeighbourEntry>, MedicError> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetNeighbour(msg));
    req.header.flags = NLM_F_REQUEST;
    let mut handle = handle.clone();
    let mut responses = handle.request(req).map_err(|e| MedicError::netlink(format!("asking neighbour {ip}"), e))?;
    use futures::StreamExt;
    while let Some(resp) = responses.next().await {
        match resp.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                let mac = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(b) => MacAddr::from_slice(b),
                    _ => None,
                });
                return Ok(
                    mac.map(|mac| NeighbourEntry { mac, permanent: n.header.state == NeighbourState::Permanent })
                );
            }
            NetlinkPayload::Error(e) if e.code.is_some() => {
                let errno = e.code.map(|c| -c.get());
                if errno == Some(libc::ENOENT) || errno == Some(libc::ENODEV) {
                    return Ok(None);
                }
                return Err(MedicError::netlink(format!("asking neighbour {ip}"), rtnetlink::Error::NetlinkError(e)));
            }
            _ => {}
        }
    }
    Ok(None)
}

fn read_proxy_arp(interface: &str) -> Option<bool> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{interface}/proxy_arp")).ok().map(|v| v.trim() == "1")
}

/// The host side of an endpoint, read from the host namespace.
pub async fn observe_host(handle: &Handle, host_interface: &str, ip: Ipv4Addr) -> Result<HostSide, MedicError> {
    let Some(link) = link_by_name(handle, host_interface).await? else {
        return Ok(HostSide { link: None, route_to_workload: false, neighbour: None, proxy_arp: None });
    };
    let route_to_workload = host_route_oif(handle, ip).await? == Some(link.index);
    let neighbour = neighbour(handle, link.index, ip).await?.filter(|n| n.permanent);
    let proxy_arp = read_proxy_arp(host_interface);
    Ok(HostSide { link: Some(link), route_to_workload, neighbour, proxy_arp })
}
