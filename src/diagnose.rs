//! Pure diagnosis: (Expected, Observed) → faults. No I/O here.

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::kernel::procfs::InterfaceSettings;
use crate::netlink::RouteEntry;
use crate::observe::{ContainerSide, HostSide};
use crate::workload::{DefaultRoute, Expected};

/// Stable fault codes: operators, dashboards and alert rules key on these strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    LinkMissing,
    LinkDown,
    MacMismatch,
    AddressMissing,
    GatewayRouteMissing,
    DefaultRouteMissing,
    DefaultRouteWrong,
    HostLinkMissing,
    HostLinkDown,
    HostRouteMissing,
    HostNeighMissing,
    HostNeighMismatch,
    HostProxyArpOff,
    HostRpFilter,
    HostRouteLocalnetOff,
    HostProxyDelay,
    HostForwardingOff,
    MtuMismatch,
    WorkloadUnreachable,
    DatastoreEndpointMissing,
    DatastoreMacMismatch,
    DatastoreIpMismatch,
    DuplicateIp,
    ProfileMissing,
}

impl FaultKind {
    pub const ALL: [FaultKind; 24] = [
        FaultKind::LinkMissing,
        FaultKind::LinkDown,
        FaultKind::MacMismatch,
        FaultKind::AddressMissing,
        FaultKind::GatewayRouteMissing,
        FaultKind::DefaultRouteMissing,
        FaultKind::DefaultRouteWrong,
        FaultKind::HostLinkMissing,
        FaultKind::HostLinkDown,
        FaultKind::HostRouteMissing,
        FaultKind::HostNeighMissing,
        FaultKind::HostNeighMismatch,
        FaultKind::HostProxyArpOff,
        FaultKind::HostRpFilter,
        FaultKind::HostRouteLocalnetOff,
        FaultKind::HostProxyDelay,
        FaultKind::HostForwardingOff,
        FaultKind::MtuMismatch,
        FaultKind::WorkloadUnreachable,
        FaultKind::DatastoreEndpointMissing,
        FaultKind::DatastoreMacMismatch,
        FaultKind::DatastoreIpMismatch,
        FaultKind::DuplicateIp,
        FaultKind::ProfileMissing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::LinkMissing => "link_missing",
            FaultKind::LinkDown => "link_down",
            FaultKind::MacMismatch => "mac_mismatch",
            FaultKind::AddressMissing => "address_missing",
            FaultKind::GatewayRouteMissing => "gateway_route_missing",
            FaultKind::DefaultRouteMissing => "default_route_missing",
            FaultKind::DefaultRouteWrong => "default_route_wrong",
            FaultKind::HostLinkMissing => "host_link_missing",
            FaultKind::HostLinkDown => "host_link_down",
            FaultKind::HostRouteMissing => "host_route_missing",
            FaultKind::HostNeighMissing => "host_neigh_missing",
            FaultKind::HostNeighMismatch => "host_neigh_mismatch",
            FaultKind::HostProxyArpOff => "host_proxy_arp_off",
            FaultKind::HostRpFilter => "host_rp_filter",
            FaultKind::HostRouteLocalnetOff => "host_route_localnet_off",
            FaultKind::HostProxyDelay => "host_proxy_delay",
            FaultKind::HostForwardingOff => "host_forwarding_off",
            FaultKind::MtuMismatch => "mtu_mismatch",
            FaultKind::WorkloadUnreachable => "workload_unreachable",
            FaultKind::DatastoreEndpointMissing => "datastore_endpoint_missing",
            FaultKind::DatastoreMacMismatch => "datastore_mac_mismatch",
            FaultKind::DatastoreIpMismatch => "datastore_ip_mismatch",
            FaultKind::DuplicateIp => "duplicate_ip",
            FaultKind::ProfileMissing => "profile_missing",
        }
    }

    /// Calico's datastore disagrees with the host: Calico owns the datastore, so
    /// calico-medic only reports these.
    pub fn is_datastore(self) -> bool {
        matches!(
            self,
            FaultKind::DatastoreEndpointMissing
                | FaultKind::DatastoreMacMismatch
                | FaultKind::DatastoreIpMismatch
                | FaultKind::DuplicateIp
                | FaultKind::ProfileMissing
        )
    }

    /// Host-side faults are Felix's to fix; calico-medic only reports them. So is an
    /// MTU larger than the host's path (the plugin's and Docker's setting).
    pub fn is_host_side(self) -> bool {
        matches!(
            self,
            FaultKind::HostLinkMissing
                | FaultKind::HostLinkDown
                | FaultKind::HostRouteMissing
                | FaultKind::HostNeighMissing
                | FaultKind::HostNeighMismatch
                | FaultKind::HostProxyArpOff
                | FaultKind::HostRpFilter
                | FaultKind::HostRouteLocalnetOff
                | FaultKind::HostProxyDelay
                | FaultKind::HostForwardingOff
                | FaultKind::MtuMismatch
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fault with the evidence that led to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub detail: String,
}

impl Fault {
    pub fn new(kind: FaultKind, detail: impl Into<String>) -> Fault {
        Fault { kind, detail: detail.into() }
    }
}

fn is_gateway_route(r: &RouteEntry, gateway: Ipv4Addr, oif: u32) -> bool {
    r.prefix_len == 32 && r.destination == gateway && r.gateway.is_none() && r.oif == Some(oif)
}

/// Container side: `cali0` present, up, right MAC, its /32, and the two routes
/// the libnetwork plugin installs (`169.254.1.1 dev cali0 scope link`, and
/// `default via 169.254.1.1 dev cali0` when this network is the task's gateway).
pub fn diagnose_container(expected: &Expected, observed: &ContainerSide) -> Vec<Fault> {
    let Some(link) = &observed.link else {
        return vec![Fault::new(
            FaultKind::LinkMissing,
            format!("no interface {} in the container", expected.interface),
        )];
    };
    let mut faults = Vec::new();
    if !link.admin_up {
        faults.push(Fault::new(FaultKind::LinkDown, format!("{} is administratively down", link.name)));
    }
    if link.mac != Some(expected.mac) {
        let seen = link.mac.map(|m| m.to_string()).unwrap_or_else(|| "none".into());
        faults.push(Fault::new(
            FaultKind::MacMismatch,
            format!("{} has MAC {seen}, expected {} ({})", link.name, expected.mac, expected.mac_source.as_str()),
        ));
    }
    if let (Some(mtu), Some(limit)) = (link.mtu, expected.max_mtu) {
        if mtu > limit {
            // A larger cali0 MTU blackholes large packets while ping still works.
            let what = format!("{} MTU {mtu} is larger than the host's path ({limit})", link.name);
            faults.push(Fault::new(FaultKind::MtuMismatch, what));
        }
    }
    if !observed.addresses.iter().any(|&(ip, len)| ip == expected.ip && len == 32) {
        faults.push(Fault::new(FaultKind::AddressMissing, format!("{}/32 is not on {}", expected.ip, link.name)));
    }
    if !observed.routes.iter().any(|r| is_gateway_route(r, expected.gateway, link.index)) {
        faults.push(Fault::new(
            FaultKind::GatewayRouteMissing,
            format!("no route {} dev {} scope link", expected.gateway, link.name),
        ));
    }
    if expected.default_route != DefaultRoute::Owned {
        // Docker gave the default route to another network (not ours, present or
        // not), or has not decided yet (before start).
        return faults;
    }
    let defaults: Vec<&RouteEntry> = observed.routes.iter().filter(|r| r.prefix_len == 0).collect();
    if defaults.is_empty() {
        faults.push(Fault::new(FaultKind::DefaultRouteMissing, "no default route"));
    } else if !defaults.iter().any(|r| r.gateway == Some(expected.gateway) && r.oif == Some(link.index)) {
        faults.push(Fault::new(
            FaultKind::DefaultRouteWrong,
            format!("default route is {}, expected via {} dev {}", defaults[0], expected.gateway, link.name),
        ));
    }
    faults
}

/// Host side: what Felix should have programmed for this endpoint.
pub fn diagnose_host(expected: &Expected, observed: &HostSide) -> Vec<Fault> {
    let Some(link) = &observed.link else {
        return vec![Fault::new(FaultKind::HostLinkMissing, format!("no host interface {}", expected.host_interface))];
    };
    let mut faults = Vec::new();
    if !link.admin_up {
        faults.push(Fault::new(FaultKind::HostLinkDown, format!("{} is down", link.name)));
    }
    if !observed.route_to_workload {
        faults.push(Fault::new(
            FaultKind::HostRouteMissing,
            format!("host does not route {} via {}", expected.ip, link.name),
        ));
    }
    match &observed.neighbour {
        Some(n) if n.mac == expected.mac => {}
        Some(n) => faults.push(Fault::new(
            FaultKind::HostNeighMismatch,
            format!("host ARP entry for {} on {} says {}, expected {}", expected.ip, link.name, n.mac, expected.mac),
        )),
        None => faults.push(Fault::new(
            FaultKind::HostNeighMissing,
            format!("no permanent host ARP entry for {} on {}", expected.ip, link.name),
        )),
    }
    faults.extend(felix_settings(&link.name, &observed.settings));
    faults
}

/// True when none of Felix's per-interface settings is off (unreadable ones are not judged).
pub fn felix_settings_ok(s: &InterfaceSettings) -> bool {
    felix_settings("", s).is_empty()
}

/// Felix's per-interface settings (felix `intdataplane/endpoint_mgr.go`); a value
/// that cannot be read is not judged.
fn felix_settings(name: &str, s: &InterfaceSettings) -> Vec<Fault> {
    let mut faults = Vec::new();
    let mut bad = |kind, what: String| faults.push(Fault::new(kind, format!("{what} on {name} (Felix sets it)")));
    if s.proxy_arp == Some(false) {
        bad(FaultKind::HostProxyArpOff, "proxy_arp is off".into());
    }
    if let Some(v) = s.rp_filter.filter(|v| *v != 1) {
        bad(FaultKind::HostRpFilter, format!("rp_filter is {v}, not 1 (strict)"));
    }
    if s.route_localnet == Some(false) {
        bad(FaultKind::HostRouteLocalnetOff, "route_localnet is off".into());
    }
    if let Some(v) = s.proxy_delay.filter(|v| *v != 0) {
        bad(FaultKind::HostProxyDelay, format!("neigh proxy_delay is {v}, not 0"));
    }
    if s.forwarding == Some(false) {
        bad(FaultKind::HostForwardingOff, "forwarding is off".into());
    }
    faults
}

/// The largest MTU the host's path carries for an endpoint: its host veth's and the
/// host uplink's, the smaller; `None` when neither is known.
pub fn mtu_limit(host: &HostSide) -> Option<u32> {
    [host.link.as_ref().and_then(|l| l.mtu), host.uplink_mtu].into_iter().flatten().min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{LinkState, NeighbourEntry};
    use crate::workload::{MacSource, CALICO_MAC};

    const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
    const IP: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 7);

    fn expected() -> Expected {
        Expected {
            interface: "cali0".into(),
            host_interface: "cali1234567890a".into(),
            ip: IP,
            gateway: GW,
            mac: CALICO_MAC,
            mac_source: MacSource::HostNeighbour,
            mac_disagreements: vec![],
            peer_index: None,
            only_endpoint: true,
            default_route: DefaultRoute::Owned,
            max_mtu: None,
        }
    }

    fn healthy() -> ContainerSide {
        ContainerSide {
            link: Some(LinkState {
                index: 4,
                name: "cali0".into(),
                mac: Some(CALICO_MAC),
                admin_up: true,
                peer_index: None,
                mtu: None,
            }),
            addresses: vec![(IP, 32)],
            routes: vec![
                RouteEntry { destination: Ipv4Addr::UNSPECIFIED, prefix_len: 0, gateway: Some(GW), oif: Some(4) },
                RouteEntry { destination: GW, prefix_len: 32, gateway: None, oif: Some(4) },
            ],
        }
    }

    fn kinds(f: &[Fault]) -> Vec<FaultKind> {
        f.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn healthy_endpoint_has_no_faults() {
        assert!(diagnose_container(&expected(), &healthy()).is_empty());
    }

    #[test]
    fn each_break_maps_to_its_fault() {
        let mut o = healthy();
        o.link.as_mut().unwrap().mac = Some("5a:11:22:33:44:55".parse().unwrap());
        assert_eq!(kinds(&diagnose_container(&expected(), &o)), vec![FaultKind::MacMismatch]);

        let mut o = healthy();
        o.link.as_mut().unwrap().admin_up = false;
        o.routes.clear(); // the kernel flushes IPv4 routes of a downed link
        assert_eq!(
            kinds(&diagnose_container(&expected(), &o)),
            vec![FaultKind::LinkDown, FaultKind::GatewayRouteMissing, FaultKind::DefaultRouteMissing]
        );

        let mut o = healthy();
        o.addresses.clear();
        assert_eq!(kinds(&diagnose_container(&expected(), &o)), vec![FaultKind::AddressMissing]);

        let mut o = healthy();
        o.routes.retain(|r| r.prefix_len == 0);
        assert_eq!(kinds(&diagnose_container(&expected(), &o)), vec![FaultKind::GatewayRouteMissing]);

        let mut o = healthy();
        o.routes[0].gateway = Some(Ipv4Addr::new(10, 65, 0, 1));
        assert_eq!(kinds(&diagnose_container(&expected(), &o)), vec![FaultKind::DefaultRouteWrong]);

        let o = ContainerSide { link: None, addresses: vec![], routes: vec![] };
        assert_eq!(kinds(&diagnose_container(&expected(), &o)), vec![FaultKind::LinkMissing]);
    }

    #[test]
    fn default_route_of_another_network_is_not_ours() {
        let other = Expected { default_route: DefaultRoute::OtherNetwork("aaa-net".into()), ..expected() };
        // Docker's default via eth0 (index 2), cali0 with only its link route: healthy.
        let mut o = healthy();
        o.routes[0] = RouteEntry {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Some(Ipv4Addr::new(172, 18, 0, 1)),
            oif: Some(2),
        };
        assert!(diagnose_container(&other, &o).is_empty());
        o.routes.remove(0);
        assert!(diagnose_container(&other, &o).is_empty(), "no default at all is not ours either");
        // cali0's own faults are still found.
        o.link.as_mut().unwrap().mac = Some("5a:11:22:33:44:55".parse().unwrap());
        o.routes.clear();
        assert_eq!(
            kinds(&diagnose_container(&other, &o)),
            vec![FaultKind::MacMismatch, FaultKind::GatewayRouteMissing]
        );
    }

    #[test]
    fn gateway_route_on_another_interface_does_not_count() {
        let mut o = healthy();
        o.routes[1].oif = Some(9);
        assert_eq!(kinds(&diagnose_container(&expected(), &o)), vec![FaultKind::GatewayRouteMissing]);
    }

    fn felix_ok() -> InterfaceSettings {
        InterfaceSettings {
            proxy_arp: Some(true),
            rp_filter: Some(1),
            route_localnet: Some(true),
            proxy_delay: Some(0),
            forwarding: Some(true),
        }
    }

    #[test]
    fn felix_settings_each_have_their_finding_and_unknown_is_not_judged() {
        let link = LinkState { index: 7, name: "calia".into(), mac: None, admin_up: true, peer_index: None, mtu: None };
        let host = |settings| HostSide {
            link: Some(link.clone()),
            route_to_workload: true,
            neighbour: Some(NeighbourEntry { mac: CALICO_MAC, permanent: true }),
            settings,
            uplink_mtu: None,
        };
        let skewed = InterfaceSettings {
            proxy_arp: Some(true),
            rp_filter: Some(0),
            route_localnet: Some(false),
            proxy_delay: Some(80),
            forwarding: Some(false),
        };
        assert_eq!(
            kinds(&diagnose_host(&expected(), &host(skewed))),
            vec![
                FaultKind::HostRpFilter,
                FaultKind::HostRouteLocalnetOff,
                FaultKind::HostProxyDelay,
                FaultKind::HostForwardingOff
            ]
        );
        assert!(diagnose_host(&expected(), &host(InterfaceSettings::default())).is_empty(), "unreadable: not judged");
        let wrong = HostSide {
            neighbour: Some(NeighbourEntry { mac: "02:00:00:00:00:01".parse().unwrap(), permanent: true }),
            ..host(felix_ok())
        };
        assert_eq!(kinds(&diagnose_host(&expected(), &wrong)), vec![FaultKind::HostNeighMismatch]);
    }

    #[test]
    fn an_mtu_larger_than_the_hosts_path_is_reported() {
        let mut o = healthy();
        o.link.as_mut().unwrap().mtu = Some(9000);
        assert!(diagnose_container(&expected(), &o).is_empty(), "no limit known: not judged");
        let limited = Expected { max_mtu: Some(1500), ..expected() };
        assert_eq!(kinds(&diagnose_container(&limited, &o)), vec![FaultKind::MtuMismatch]);
        o.link.as_mut().unwrap().mtu = Some(1500);
        assert!(diagnose_container(&limited, &o).is_empty());
        let link =
            LinkState { index: 7, name: "calia".into(), mac: None, admin_up: true, peer_index: None, mtu: Some(1500) };
        let host = HostSide {
            link: Some(link),
            route_to_workload: true,
            neighbour: None,
            settings: felix_ok(),
            uplink_mtu: Some(1450),
        };
        assert_eq!(mtu_limit(&host), Some(1450));
    }

    #[test]
    fn host_side_faults() {
        let link = LinkState {
            index: 7,
            name: "cali1234567890a".into(),
            mac: None,
            admin_up: true,
            peer_index: None,
            mtu: None,
        };
        let good = HostSide {
            link: Some(link.clone()),
            route_to_workload: true,
            neighbour: Some(NeighbourEntry { mac: CALICO_MAC, permanent: true }),
            settings: felix_ok(),
            uplink_mtu: Some(1500),
        };
        assert!(diagnose_host(&expected(), &good).is_empty());
        let bad = HostSide {
            link: Some(LinkState { admin_up: false, ..link }),
            route_to_workload: false,
            neighbour: None,
            settings: InterfaceSettings { proxy_arp: Some(false), ..felix_ok() },
            uplink_mtu: None,
        };
        assert_eq!(
            kinds(&diagnose_host(&expected(), &bad)),
            vec![
                FaultKind::HostLinkDown,
                FaultKind::HostRouteMissing,
                FaultKind::HostNeighMissing,
                FaultKind::HostProxyArpOff
            ]
        );
        let gone = HostSide { link: None, ..good.clone() };
        assert_eq!(kinds(&diagnose_host(&expected(), &gone)), vec![FaultKind::HostLinkMissing]);
    }
}
