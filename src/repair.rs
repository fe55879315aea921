//! Repair: a pure plan (faults → ordered actions) and its application via rtnetlink.

use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::diagnose::{Fault, FaultKind};
use crate::error::MedicError;
use crate::netlink::Netlink;
use crate::workload::{Expected, MacAddr};

/// One netlink write inside the container namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SetMac { interface: String, mac: MacAddr },
    SetLinkUp { interface: String },
    AddAddress { interface: String, ip: Ipv4Addr },
    AddGatewayRoute { interface: String, gateway: Ipv4Addr },
    AddDefaultRoute { interface: String, gateway: Ipv4Addr },
    ReplaceDefaultRoute { interface: String, gateway: Ipv4Addr },
}

impl Action {
    /// Stable action code for JSON and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Action::SetMac { .. } => "set_mac",
            Action::SetLinkUp { .. } => "set_link_up",
            Action::AddAddress { .. } => "add_address",
            Action::AddGatewayRoute { .. } => "add_gateway_route",
            Action::AddDefaultRoute { .. } => "add_default_route",
            Action::ReplaceDefaultRoute { .. } => "replace_default_route",
        }
    }
}

/// Reads like the `ip` command an operator would have typed.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::SetMac { interface, mac } => write!(f, "ip link set {interface} address {mac}"),
            Action::SetLinkUp { interface } => write!(f, "ip link set {interface} up"),
            Action::AddAddress { interface, ip } => write!(f, "ip addr add {ip}/32 dev {interface}"),
            Action::AddGatewayRoute { interface, gateway } => {
                write!(f, "ip route add {gateway} dev {interface} scope link")
            }
            Action::AddDefaultRoute { interface, gateway } => {
                write!(f, "ip route add default via {gateway} dev {interface}")
            }
            Action::ReplaceDefaultRoute { interface, gateway } => {
                write!(f, "ip route replace default via {gateway} dev {interface}")
            }
        }
    }
}

/// An action and the fault it addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedAction {
    pub action: Action,
    pub fault: FaultKind,
}

/// Outcome of one action, as reported in JSON (`{action, fault, result}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionResult {
    pub action: String,
    pub command: String,
    pub fault: FaultKind,
    pub result: ActionOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The write failed for a reason of the agent's own (`MedicError::is_agent_fault`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub agent_error: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    Success,
    Failure,
    /// Dry run, or the endpoint is backed off.
    Skipped,
}

impl ActionOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionOutcome::Success => "success",
            ActionOutcome::Failure => "failure",
            ActionOutcome::Skipped => "skipped",
        }
    }
}

/// Orders the fixes so each one can succeed: the MAC first (a veth accepts it while
/// up or down), then the link up (routes need an up link), the address, the
/// gateway's link route, and only then the default route via that gateway
/// (otherwise the kernel answers "Nexthop has invalid gateway").
/// `link_missing` and host-side faults have no container-side fix.
pub fn plan(faults: &[Fault], expected: &Expected, interface: &str) -> Vec<PlannedAction> {
    let has = |k: FaultKind| faults.iter().any(|f| f.kind == k);
    if has(FaultKind::LinkMissing) {
        return Vec::new();
    }
    let iface = || interface.to_string();
    let gateway = expected.gateway;
    let mut out = Vec::new();
    let mut push = |fault: FaultKind, action: Action| out.push(PlannedAction { action, fault });
    if has(FaultKind::MacMismatch) {
        push(FaultKind::MacMismatch, Action::SetMac { interface: iface(), mac: expected.mac });
    }
    if has(FaultKind::LinkDown) {
        push(FaultKind::LinkDown, Action::SetLinkUp { interface: iface() });
    }
    if has(FaultKind::AddressMissing) {
        push(FaultKind::AddressMissing, Action::AddAddress { interface: iface(), ip: expected.ip });
    }
    if has(FaultKind::GatewayRouteMissing) {
        push(FaultKind::GatewayRouteMissing, Action::AddGatewayRoute { interface: iface(), gateway });
    }
    if has(FaultKind::DefaultRouteMissing) {
        push(FaultKind::DefaultRouteMissing, Action::AddDefaultRoute { interface: iface(), gateway });
    } else if has(FaultKind::DefaultRouteWrong) {
        push(FaultKind::DefaultRouteWrong, Action::ReplaceDefaultRoute { interface: iface(), gateway });
    }
    out
}

/// Applies one action on link `index` through a netlink connection bound to the
/// container's namespace; the action's `ip` form is the error's context.
pub async fn apply(nl: &Netlink, index: u32, action: &Action) -> Result<(), MedicError> {
    let context = action.to_string();
    match action {
        Action::SetMac { mac, .. } => nl.set_mac(index, *mac, &context).await,
        Action::SetLinkUp { .. } => nl.set_up(index, &context).await,
        Action::AddAddress { ip, .. } => nl.add_address(index, *ip, 32, &context).await,
        Action::AddGatewayRoute { gateway, .. } => nl.add_link_route(index, *gateway, &context).await,
        Action::AddDefaultRoute { gateway, .. } => nl.set_default_route(index, *gateway, false, &context).await,
        Action::ReplaceDefaultRoute { gateway, .. } => nl.set_default_route(index, *gateway, true, &context).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{mac_candidates, CALICO_MAC};

    fn expected() -> Expected {
        let e = Expected::resolve(
            "cali0",
            "calix".into(),
            Ipv4Addr::new(10, 65, 0, 9),
            Ipv4Addr::new(169, 254, 1, 1),
            &mac_candidates(None, None, None),
        );
        assert_eq!(e.mac, CALICO_MAC);
        e
    }

    fn faults(kinds: &[FaultKind]) -> Vec<Fault> {
        kinds.iter().map(|&kind| Fault { kind, detail: String::new() }).collect()
    }

    fn codes(p: &[PlannedAction]) -> Vec<&'static str> {
        p.iter().map(|a| a.action.code()).collect()
    }

    #[test]
    fn no_faults_no_writes() {
        assert!(plan(&[], &expected(), "cali0").is_empty());
    }

    #[test]
    fn order_is_mac_up_address_gateway_default() {
        let f = faults(&[
            FaultKind::DefaultRouteMissing,
            FaultKind::GatewayRouteMissing,
            FaultKind::AddressMissing,
            FaultKind::LinkDown,
            FaultKind::MacMismatch,
        ]);
        assert_eq!(
            codes(&plan(&f, &expected(), "cali0")),
            vec!["set_mac", "set_link_up", "add_address", "add_gateway_route", "add_default_route"]
        );
    }

    #[test]
    fn wrong_default_is_replaced_missing_link_is_unrepairable_host_faults_reported_only() {
        assert_eq!(
            codes(&plan(&faults(&[FaultKind::DefaultRouteWrong]), &expected(), "cali0")),
            vec!["replace_default_route"]
        );
        assert!(plan(&faults(&[FaultKind::LinkMissing, FaultKind::MacMismatch]), &expected(), "cali0").is_empty());
        assert!(plan(
            &faults(&[FaultKind::HostNeighMismatch, FaultKind::HostProxyArpOff, FaultKind::WorkloadUnreachable]),
            &expected(),
            "cali0"
        )
        .is_empty());
    }

    #[test]
    fn actions_read_like_ip_commands() {
        let p = plan(&faults(&[FaultKind::MacMismatch, FaultKind::DefaultRouteMissing]), &expected(), "cali0");
        assert_eq!(p[0].action.to_string(), "ip link set cali0 address ee:ee:ee:ee:ee:ee");
        assert_eq!(p[1].action.to_string(), "ip route add default via 169.254.1.1 dev cali0");
    }
}
