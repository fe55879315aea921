//! One IPv4 address held by two containers of this host (Docker's view, no datastore
//! needed): an IPAM handing an address out twice (libcalico-go#989) or a stale
//! allocation reused. Both get `duplicate_ip`: the host's /32 route leads to only one.
//! `LocalIps` is the host's current picture, refreshed every `[probe] interval` (and
//! once before a one-off `check`); the comparison is pure.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::RwLock;

use crate::diagnose::{Fault, FaultKind};

/// (container id, container name) of each address held by more than one container.
pub type Shared = BTreeMap<Ipv4Addr, Vec<(String, String)>>;

/// The addresses among `held` (container id, name, address) that two or more
/// distinct containers hold.
pub fn shared(held: &[(String, String, Ipv4Addr)]) -> Shared {
    let mut by_ip: Shared = BTreeMap::new();
    for (id, name, ip) in held {
        let holders = by_ip.entry(*ip).or_default();
        if !holders.iter().any(|(i, _)| i == id) {
            holders.push((id.clone(), name.clone()));
        }
    }
    by_ip.retain(|_, holders| holders.len() > 1);
    by_ip.values_mut().for_each(|h| h.sort());
    by_ip
}

/// `duplicate_ip` for `ip` held by `container_id` when other containers of this host
/// hold it too.
pub fn findings(shared: &Shared, ip: Ipv4Addr, container_id: &str) -> Vec<Fault> {
    let Some(holders) = shared.get(&ip) else { return Vec::new() };
    let others: Vec<&str> = holders.iter().filter(|(id, _)| id != container_id).map(|(_, n)| n.as_str()).collect();
    if others.is_empty() || others.len() == holders.len() {
        return Vec::new();
    }
    vec![Fault::new(
        FaultKind::DuplicateIp,
        format!(
            "{ip} is also held by container {} on this host (Docker's view): its traffic reaches only one",
            others.join(", ")
        ),
    )]
}

/// The host's shared addresses as last listed.
#[derive(Default)]
pub struct LocalIps {
    shared: RwLock<Shared>,
}

impl LocalIps {
    /// Replaces the picture; returns the containers whose sharing changed (they hold
    /// a shared address now and did not, or the other way round, or with others).
    pub fn set(&self, now: Shared) -> Vec<String> {
        let mut cur = self.shared.write().unwrap_or_else(|p| p.into_inner());
        let holders = |m: &Shared| -> std::collections::BTreeSet<(Ipv4Addr, String)> {
            m.iter().flat_map(|(ip, h)| h.iter().map(move |(id, _)| (*ip, id.clone()))).collect()
        };
        let (before, after) = (holders(&cur), holders(&now));
        let mut changed: Vec<String> = before.symmetric_difference(&after).map(|(_, id)| id.clone()).collect();
        changed.sort();
        changed.dedup();
        *cur = now;
        changed
    }

    pub fn findings(&self, ip: Ipv4Addr, container_id: &str) -> Vec<Fault> {
        findings(&self.shared.read().unwrap_or_else(|p| p.into_inner()), ip, container_id)
    }

    /// How many addresses two or more containers hold.
    pub fn count(&self) -> usize {
        self.shared.read().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(list: &[(&str, [u8; 4])]) -> Vec<(String, String, Ipv4Addr)> {
        list.iter().map(|(id, ip)| (id.to_string(), format!("n-{id}"), Ipv4Addr::from(*ip))).collect()
    }

    #[test]
    fn an_address_of_two_containers_is_a_duplicate_on_each_and_only_there() {
        let s = shared(&held(&[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 1]), ("c", [10, 0, 0, 2])]));
        assert_eq!(s.len(), 1);
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        let fa = findings(&s, ip, "a");
        assert_eq!(fa.len(), 1);
        assert_eq!(fa[0].kind, FaultKind::DuplicateIp);
        assert!(fa[0].detail.contains("container n-b"), "{}", fa[0].detail);
        assert!(findings(&s, ip, "b")[0].detail.contains("n-a"));
        assert!(findings(&s, Ipv4Addr::new(10, 0, 0, 2), "c").is_empty());
        assert!(findings(&s, ip, "z").is_empty(), "not this container's address");
    }

    #[test]
    fn one_container_on_two_networks_with_one_address_is_not_a_duplicate() {
        assert!(shared(&held(&[("a", [10, 0, 0, 1]), ("a", [10, 0, 0, 1])])).is_empty());
    }

    #[test]
    fn the_picture_names_the_containers_whose_sharing_changed() {
        let l = LocalIps::default();
        assert!(l.set(Shared::new()).is_empty());
        assert_eq!(l.set(shared(&held(&[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 1])]))), vec!["a", "b"]);
        assert_eq!(l.count(), 1);
        assert!(
            l.set(shared(&held(&[("b", [10, 0, 0, 1]), ("a", [10, 0, 0, 1])]))).is_empty(),
            "same holders, other order"
        );
        let three = held(&[("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 1]), ("c", [10, 0, 0, 1])]);
        assert_eq!(l.set(shared(&three)), vec!["c"]);
        assert_eq!(l.set(Shared::new()), vec!["a", "b", "c"]);
    }
}
