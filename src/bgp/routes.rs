//! Routes to other hosts' blocks. Calico v2.6 (libcalico-go v1) records which host
//! holds which /26 in the block affinities (`/calico/ipam/v2/host/<host>/ipv4/block/
//! <a.b.c.d-26>`) and each host's BGP address (`/calico/bgp/v1/host/<host>/ip_addr_v4`;
//! Felix's copy `/calico/v1/host/<host>/bird_ip`). BIRD then installs on every host a
//! route to each other host's block: via that host's address with plain BGP, or through
//! `tunl0` when the block's pool has IPIP on. A block without such a route is
//! unreachable from this host: `remote_block_unrouted`. Pure: no I/O here.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use crate::datastore::etcd::Node;
use crate::netlink::RouteEntry;

/// An IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Cidr {
    /// `a.b.c.d-len` (etcd key form) or `a.b.c.d/len`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, l) = s.split_once('-').or_else(|| s.split_once('/'))?;
        let len: u8 = l.parse().ok().filter(|l| *l <= 32)?;
        Some(Cidr { addr: a.parse().ok()?, len })
    }

    pub fn contains(&self, other: &Cidr) -> bool {
        let mask = if self.len == 0 { 0 } else { u32::MAX << (32 - self.len) };
        other.len >= self.len && (u32::from(other.addr) & mask) == (u32::from(self.addr) & mask)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What the datastore says about the cluster's hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Host → its blocks (affinities).
    pub blocks: BTreeMap<String, Vec<Cidr>>,
    /// Host → its BGP address.
    pub addresses: BTreeMap<String, Ipv4Addr>,
    /// Pools with IPIP on (`"ipip":"tunl0"`, any mode but off).
    pub ipip_pools: Vec<Cidr>,
}

impl Topology {
    /// From the recursive reads of `/calico/ipam/v2/host`, `/calico/bgp/v1/host` and
    /// `/calico/v1/ipam/v4/pool`.
    pub fn from_nodes(affinities: &[Node], bgp: &[Node], pools: &[Node]) -> Topology {
        let mut t = Topology::default();
        for n in affinities {
            let parts: Vec<&str> = n.key.trim_start_matches('/').split('/').collect();
            // calico / ipam / v2 / host / <host> / ipv4 / block / <cidr>
            if let ["calico", "ipam", "v2", "host", host, "ipv4", "block", cidr] = parts.as_slice() {
                if let Some(c) = Cidr::parse(cidr) {
                    t.blocks.entry(host.to_string()).or_default().push(c);
                }
            }
        }
        for n in bgp {
            let parts: Vec<&str> = n.key.trim_start_matches('/').split('/').collect();
            if let ["calico", "bgp", "v1", "host", host, "ip_addr_v4"] = parts.as_slice() {
                if let Some(ip) = n.value.as_deref().and_then(|v| v.trim().parse().ok()) {
                    t.addresses.insert(host.to_string(), ip);
                }
            }
        }
        for n in pools {
            let Some(v) = n.value.as_deref().and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok()) else {
                continue;
            };
            let ipip = v["ipip"].as_str().is_some_and(|s| !s.is_empty()) && v["ipip_mode"].as_str() != Some("off");
            if let (true, Some(c)) = (ipip, v["cidr"].as_str().and_then(Cidr::parse)) {
                t.ipip_pools.push(c);
            }
        }
        t
    }

    /// Every host but `this` with blocks and a BGP address. A node with no BGP address
    /// takes no part in BGP (calico/node without BIRD, or a node name that is not a
    /// machine): where its blocks should be routed is not known, so they are not judged.
    pub fn remote_hosts<'a>(&'a self, this: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.blocks.keys().filter(move |h| h.as_str() != this && self.addresses.contains_key(*h))
    }
}

/// A remote block with no usable route on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrouted {
    pub host: String,
    pub block: Cidr,
    pub why: String,
}

/// The other hosts' blocks that have no route here: an exact route to the block, via
/// the host's address (plain BGP) or out of `tunl0` (IPIP). `links`: ifindex → name.
pub fn unrouted(this: &str, topo: &Topology, routes: &[RouteEntry], links: &HashMap<u32, String>) -> Vec<Unrouted> {
    let mut out = Vec::new();
    for host in topo.remote_hosts(this) {
        let via = topo.addresses.get(host).copied();
        for block in &topo.blocks[host] {
            let ipip = topo.ipip_pools.iter().any(|p| p.contains(block));
            let exact = routes.iter().find(|r| r.destination == block.addr && r.prefix_len == block.len);
            let why = match exact {
                None => Some("no route".to_string()),
                Some(r) if ipip => {
                    let dev = r.oif.and_then(|i| links.get(&i)).map(String::as_str);
                    (dev != Some("tunl0")).then(|| format!("IPIP pool, but the route leaves by {}", dev.unwrap_or("?")))
                }
                Some(r) => match (r.gateway, via) {
                    (Some(g), Some(v)) if g == v => None,
                    (g, Some(v)) => Some(format!("route via {}, not the host's address {v}", fmt_gw(g))),
                    (_, None) => None, // the host's address is unknown: any route is taken as its
                },
            };
            if let Some(why) = why {
                out.push(Unrouted { host: host.clone(), block: *block, why });
            }
        }
    }
    out
}

fn fmt_gw(g: Option<Ipv4Addr>) -> String {
    g.map_or_else(|| "no gateway".into(), |g| g.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(k: &str, v: &str) -> Node {
        Node { key: k.into(), value: Some(v.into()) }
    }

    fn topo(ipip: bool) -> Topology {
        let pool = if ipip {
            r#"{"cidr":"10.70.0.0/16","ipip":"tunl0","ipip_mode":"always","masquerade":false,"ipam":true,"disabled":false}"#
        } else {
            r#"{"cidr":"10.70.0.0/16","ipip":"","ipip_mode":"","masquerade":false,"ipam":true,"disabled":false}"#
        };
        Topology::from_nodes(
            &[
                node("/calico/ipam/v2/host/h1/ipv4/block/10.70.0.0-26", "{}"),
                node("/calico/ipam/v2/host/h2/ipv4/block/10.70.1.0-26", "{}"),
                node("/calico/ipam/v2/host/h2/ipv4/block/10.70.1.64-26", "{}"),
                node("/calico/ipam/v2/host/h3/ipv6/block/fd00::-122", "{}"),
                node("/calico/ipam/v2/host/h4/ipv4/block/10.70.2.0-26", "{}"),
            ],
            &[
                node("/calico/bgp/v1/host/h1/ip_addr_v4", "10.0.0.1"),
                node("/calico/bgp/v1/host/h2/ip_addr_v4", "10.0.0.2"),
            ],
            &[node("/calico/v1/ipam/v4/pool/10.70.0.0-16", pool)],
        )
    }

    fn route(dst: [u8; 4], len: u8, gw: Option<[u8; 4]>, oif: u32) -> RouteEntry {
        RouteEntry { destination: dst.into(), prefix_len: len, gateway: gw.map(Into::into), oif: Some(oif) }
    }

    #[test]
    fn the_datastore_names_blocks_addresses_and_ipip_pools() {
        let t = topo(true);
        assert_eq!(t.blocks["h2"].len(), 2);
        assert!(!t.blocks.contains_key("h3"), "IPv4 blocks only");
        assert_eq!(t.addresses["h2"], Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(t.ipip_pools, vec![Cidr::parse("10.70.0.0/16").unwrap()]);
        assert!(topo(false).ipip_pools.is_empty());
        assert_eq!(t.remote_hosts("h1").collect::<Vec<_>>(), vec!["h2"], "h4 has no BGP address: not judged");
    }

    #[test]
    fn plain_bgp_wants_each_remote_block_via_its_host() {
        let links = HashMap::from([(2, "eth0".to_string()), (9, "tunl0".to_string())]);
        let good =
            [route([10, 70, 1, 0], 26, Some([10, 0, 0, 2]), 2), route([10, 70, 1, 64], 26, Some([10, 0, 0, 2]), 2)];
        assert!(unrouted("h1", &topo(false), &good, &links).is_empty());
        let missing = unrouted("h1", &topo(false), &good[..1], &links);
        assert_eq!(missing.len(), 1);
        assert_eq!((missing[0].host.as_str(), missing[0].block.to_string()), ("h2", "10.70.1.64/26".into()));
        let wrong = [good[0].clone(), route([10, 70, 1, 64], 26, Some([10, 0, 0, 9]), 2)];
        assert!(unrouted("h1", &topo(false), &wrong, &links)[0].why.contains("via 10.0.0.9"));
        // a covering route is not the block's route
        assert_eq!(unrouted("h1", &topo(false), &[route([10, 70, 0, 0], 16, Some([10, 0, 0, 2]), 2)], &links).len(), 2);
        // this host's own blocks need no route
        assert!(unrouted("h2", &topo(false), &[], &links).iter().all(|u| u.host == "h1"));
    }

    #[test]
    fn ipip_wants_each_remote_block_out_of_tunl0() {
        let links = HashMap::from([(2, "eth0".to_string()), (9, "tunl0".to_string())]);
        let tunl =
            [route([10, 70, 1, 0], 26, Some([10, 0, 0, 2]), 9), route([10, 70, 1, 64], 26, Some([10, 0, 0, 2]), 9)];
        assert!(unrouted("h1", &topo(true), &tunl, &links).is_empty());
        let plain = [route([10, 70, 1, 0], 26, Some([10, 0, 0, 2]), 2), tunl[1].clone()];
        let u = unrouted("h1", &topo(true), &plain, &links);
        assert_eq!(u.len(), 1);
        assert!(u[0].why.contains("leaves by eth0"), "{}", u[0].why);
    }
}
