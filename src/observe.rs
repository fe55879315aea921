//! Reading the observed state of an endpoint: the container side (inside its
//! namespace) and the host side (Felix's `cali…` veth, route, ARP entry), through
//! the netlink layer.

use std::net::Ipv4Addr;

use crate::error::MedicError;
use crate::kernel;
use crate::kernel::compat;
pub use crate::netlink::{LinkState, NeighbourEntry, Netlink, RouteEntry};
use crate::workload::Expected;

/// What the container's namespace holds for one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSide {
    pub link: Option<LinkState>,
    /// IPv4 addresses on `link`.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// IPv4 main-table routes of the namespace.
    pub routes: Vec<RouteEntry>,
}

/// What the host holds for one endpoint (programmed by Felix).
#[derive(Debug, Clone, PartialEq)]
pub struct HostSide {
    pub link: Option<LinkState>,
    /// The host resolves the workload IP out of the endpoint's `cali…` link.
    pub route_to_workload: bool,
    /// The permanent ARP entry for the workload IP on that link.
    pub neighbour: Option<NeighbourEntry>,
    /// Felix's per-interface settings of that link.
    pub settings: kernel::procfs::InterfaceSettings,
    /// MTU of the host's uplink (the interface of its route to the outside).
    pub uplink_mtu: Option<u32>,
}

/// The name stem Docker numbers the plugin's interfaces with (`cali0`, `cali1`, …).
fn interface_stem(interface: &str) -> &str {
    interface.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// Finds the endpoint's link by the endpoint's facts, most certain first: the peer
/// of its host-side veth; a `cali…` link holding its address; and, only for a
/// container with a single calico endpoint, the plain name. An address the task put
/// on some other interface never makes that interface the endpoint.
pub fn find_endpoint_link(
    links: &[LinkState],
    addrs: &[(u32, Ipv4Addr, u8)],
    expected: &Expected,
) -> Option<LinkState> {
    if let Some(peer) = expected.peer_index {
        if let Some(l) = links.iter().find(|l| l.index == peer) {
            return Some(l.clone());
        }
    }
    let stem = interface_stem(&expected.interface);
    let holds_ip = |l: &&LinkState| addrs.iter().any(|&(i, a, _)| i == l.index && a == expected.ip);
    if let Some(l) = links.iter().filter(|l| l.name.starts_with(stem)).find(holds_ip) {
        return Some(l.clone());
    }
    if expected.only_endpoint {
        return links.iter().find(|l| l.name == expected.interface).cloned();
    }
    None
}

/// The container side of an endpoint.
pub async fn observe_container(nl: &Netlink, expected: &Expected) -> Result<ContainerSide, MedicError> {
    let links = nl.links().await?;
    let addrs = nl.ipv4_addresses().await?;
    let link = find_endpoint_link(&links, &addrs, expected);
    let routes = nl.ipv4_main_routes().await?;
    let addresses = match &link {
        Some(l) => addrs.iter().filter(|(i, _, _)| *i == l.index).map(|&(_, a, p)| (a, p)).collect(),
        None => Vec::new(),
    };
    Ok(ContainerSide { link, addresses, routes })
}

/// An address no host routes locally (TEST-NET-3): the host's route to it is its way out.
const UPLINK_PROBE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

/// The host side of an endpoint, read from the host namespace.
pub async fn observe_host(nl: &Netlink, host_interface: &str, ip: Ipv4Addr) -> Result<HostSide, MedicError> {
    let Some(mut link) = nl.link_by_name(host_interface).await? else {
        return Ok(HostSide {
            link: None,
            route_to_workload: false,
            neighbour: None,
            settings: Default::default(),
            uplink_mtu: None,
        });
    };
    if compat::emulated_kernel().is_some() {
        // Old kernels may not report a veth's peer: prove the address-based match.
        link.peer_index = None;
    }
    let route_to_workload = nl.route_oif(ip).await? == Some(link.index);
    let neighbour = nl.neighbour(link.index, ip).await?.filter(|n| n.permanent);
    let settings = kernel::procfs::interface_settings(host_interface);
    let uplink_mtu = match nl.route_oif(UPLINK_PROBE).await? {
        Some(oif) if oif != link.index => nl.link_by_index(oif).await?.and_then(|l| l.mtu),
        _ => None,
    };
    Ok(HostSide { link: Some(link), route_to_workload, neighbour, settings, uplink_mtu })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{DefaultRoute, MacSource, CALICO_MAC};

    fn link(index: u32, name: &str) -> LinkState {
        LinkState { index, name: name.into(), mac: None, admin_up: true, peer_index: None, mtu: None }
    }

    fn expected(ip: [u8; 4], peer: Option<u32>, only: bool) -> Expected {
        Expected {
            interface: "cali0".into(),
            host_interface: "calix".into(),
            ip: Ipv4Addr::from(ip),
            gateway: Ipv4Addr::new(169, 254, 1, 1),
            mac: CALICO_MAC,
            mac_source: MacSource::CalicoDefault,
            mac_disagreements: vec![],
            peer_index: peer,
            only_endpoint: only,
            default_route: DefaultRoute::Owned,
            max_mtu: None,
        }
    }

    #[test]
    fn endpoint_link_by_peer_then_address_then_name() {
        let links = [link(1, "lo"), link(5, "eth0"), link(7, "cali0"), link(9, "cali1")];
        let addrs = [
            (1, Ipv4Addr::new(10, 65, 0, 2), 32),
            (9, Ipv4Addr::new(10, 65, 0, 2), 32),
            (7, Ipv4Addr::new(10, 66, 0, 3), 32),
        ];
        assert_eq!(find_endpoint_link(&links, &addrs, &expected([10, 65, 0, 2], Some(9), false)).unwrap().index, 9);
        // No peer known: the cali link holding the address, not `lo` which also holds it.
        assert_eq!(find_endpoint_link(&links, &addrs, &expected([10, 65, 0, 2], None, false)).unwrap().index, 9);
        // Address gone from the second endpoint: no guess by name when there are two.
        assert_eq!(find_endpoint_link(&links, &addrs, &expected([10, 65, 0, 9], None, false)), None);
        // A single endpoint whose address was removed is still found by name.
        assert_eq!(find_endpoint_link(&links, &addrs, &expected([10, 65, 0, 9], None, true)).unwrap().index, 7);
        // An address the application put on eth0 does not make eth0 the endpoint.
        let addrs = [(5, Ipv4Addr::new(10, 65, 0, 4), 32)];
        assert_eq!(find_endpoint_link(&links, &addrs, &expected([10, 65, 0, 4], None, false)), None);
    }
}
