//! Pure findings over one `Snapshot`: the report `ipam check` prints and writes, and
//! the release reads back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::block::Holder;
use super::snapshot::{Holding, Snapshot};
use super::Cidr;

/// The report format's version (`ipam release` refuses others).
pub const REPORT_VERSION: u32 = 1;

/// Counts of one pool (`none`: blocks outside every configured pool).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolCounts {
    pub pool: String,
    /// Addresses in the pool (0 for `none`).
    pub size: u64,
    pub blocks: usize,
    pub allocated: usize,
    pub in_use: usize,
    pub leak_candidate: usize,
    pub unallocated_in_use: usize,
    pub double: usize,
    /// Allocations with a handle (other orchestrators): never touched.
    pub handled: usize,
}

/// An allocated, handle-less address no endpoint of any host holds and no node uses
/// as its tunnel address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Candidate {
    pub ip: Ipv4Addr,
    pub block: Cidr,
    pub ordinal: usize,
    /// The block's host affinity.
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder2 {
    pub host: String,
    pub endpoint: String,
}

/// An address several endpoints hold (`hosts` > 1: on two hosts, the cluster-wide duplicate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shared {
    pub ip: Ipv4Addr,
    pub hosts: usize,
    pub holders: Vec<Holder2>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unallocated {
    pub ip: Ipv4Addr,
    pub host: String,
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inconsistent {
    pub block: Cidr,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handled {
    pub ip: Ipv4Addr,
    pub handle: String,
}

/// What one check found, and when (`taken_at`, Unix seconds) and at which etcd index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub taken_at: f64,
    pub etcd_index: u64,
    pub pools: Vec<PoolCounts>,
    pub leak_candidates: Vec<Candidate>,
    pub unallocated_in_use: Vec<Unallocated>,
    /// One address held by several endpoints (same host or two hosts).
    pub shared: Vec<Shared>,
    pub inconsistent_blocks: Vec<Inconsistent>,
    pub handled: Vec<Handled>,
    pub unreadable: Vec<String>,
}

impl Report {
    /// Anything an operator must look at (leaks, addresses in use without an
    /// allocation, doubles, broken blocks, unreadable keys).
    pub fn has_findings(&self) -> bool {
        !(self.leak_candidates.is_empty()
            && self.unallocated_in_use.is_empty()
            && self.shared.is_empty()
            && self.inconsistent_blocks.is_empty()
            && self.unreadable.is_empty())
    }
}

/// Who holds each address: endpoints, then tunnel addresses (as `tunnel` endpoints).
fn holders(s: &Snapshot) -> HashMap<Ipv4Addr, Vec<&Holding>> {
    let mut by_ip: HashMap<Ipv4Addr, Vec<&Holding>> = HashMap::with_capacity(s.endpoints.len());
    for h in &s.endpoints {
        by_ip.entry(h.ip).or_default().push(h);
    }
    by_ip
}

fn pool_label(s: &Snapshot, cidr: &Cidr) -> (String, u64) {
    match s.pool_of(cidr) {
        Some(p) => (p.to_string(), p.size()),
        None => ("none".to_string(), 0),
    }
}

/// The findings of one snapshot taken at `taken_at` (Unix seconds).
pub fn analyse(s: &Snapshot, taken_at: f64) -> Report {
    let by_ip = holders(s);
    let tunnels: BTreeSet<Ipv4Addr> = s.tunnels.iter().map(|(_, ip)| *ip).collect();
    let mut pools: BTreeMap<String, PoolCounts> = BTreeMap::new();
    for p in &s.pools {
        pools.insert(p.to_string(), PoolCounts { pool: p.to_string(), size: p.size(), ..Default::default() });
    }
    let mut r = Report {
        version: REPORT_VERSION,
        taken_at,
        etcd_index: s.index,
        pools: Vec::new(),
        leak_candidates: Vec::new(),
        unallocated_in_use: Vec::new(),
        shared: Vec::new(),
        inconsistent_blocks: Vec::new(),
        handled: Vec::new(),
        unreadable: s.unreadable.iter().map(|(k, why)| format!("{k}: {why}")).collect(),
    };
    let mut allocated_ips = BTreeSet::new();
    for b in &s.blocks {
        let (label, size) = pool_label(s, &b.cidr);
        let c = pools.entry(label.clone()).or_insert_with(|| PoolCounts { pool: label, size, ..Default::default() });
        c.blocks += 1;
        let (problems, bad) = b.problems();
        c.double += bad.len();
        if !problems.is_empty() {
            r.inconsistent_blocks.push(Inconsistent { block: b.cidr, problems });
        }
        for o in b.allocated() {
            let ip = b.ip(o);
            allocated_ips.insert(ip);
            c.allocated += 1;
            let used = by_ip.contains_key(&ip) || tunnels.contains(&ip);
            if used {
                c.in_use += 1;
            }
            match b.holder(o) {
                Some(Holder::Handle(h)) => {
                    c.handled += 1;
                    r.handled.push(Handled { ip, handle: h.to_string() });
                }
                Some(Holder::HandleLess) if !used && !bad.contains(&o) => {
                    c.leak_candidate += 1;
                    r.leak_candidates.push(Candidate { ip, block: b.cidr, ordinal: o, host: b.host.clone() });
                }
                _ => {}
            }
        }
    }
    in_use_findings(s, &by_ip, &allocated_ips, &mut pools, &mut r);
    r.pools = pools.into_values().collect();
    r
}

/// Addresses held without an allocation, and addresses several endpoints hold.
fn in_use_findings(
    s: &Snapshot,
    by_ip: &HashMap<Ipv4Addr, Vec<&Holding>>,
    allocated: &BTreeSet<Ipv4Addr>,
    pools: &mut BTreeMap<String, PoolCounts>,
    r: &mut Report,
) {
    let mut ips: Vec<&Ipv4Addr> = by_ip.keys().collect();
    ips.sort();
    let tunnel_holders = s.tunnels.iter().map(|(h, ip)| (*ip, h.as_str()));
    let tunnel_ips: Vec<(Ipv4Addr, &str)> = tunnel_holders.collect();
    for ip in ips.into_iter().copied().chain(tunnel_ips.iter().map(|(ip, _)| *ip).filter(|ip| !by_ip.contains_key(ip)))
    {
        let as_net = Cidr { addr: ip, len: 32 };
        // Only addresses Calico's IPAM manages: inside a pool or an existing block.
        let managed = s.pool_of(&as_net).is_some() || s.blocks.iter().any(|b| b.cidr.contains(ip));
        let mut holders: Vec<Holder2> = by_ip
            .get(&ip)
            .map(|v| v.iter().map(|h| Holder2 { host: h.host.clone(), endpoint: h.endpoint.clone() }).collect())
            .unwrap_or_default();
        holders.extend(
            tunnel_ips
                .iter()
                .filter(|(t, _)| *t == ip)
                .map(|(_, h)| Holder2 { host: h.to_string(), endpoint: "tunnel".into() }),
        );
        let label = || {
            let block = s.blocks.iter().find(|b| b.cidr.contains(ip)).map(|b| b.cidr).unwrap_or(as_net);
            pool_label(s, &block).0
        };
        if managed && !allocated.contains(&ip) {
            if let Some(c) = pools.get_mut(&label()) {
                c.unallocated_in_use += 1;
            }
            for h in &holders {
                r.unallocated_in_use.push(Unallocated { ip, host: h.host.clone(), endpoint: h.endpoint.clone() });
            }
        }
        if holders.len() > 1 {
            if let Some(c) = pools.get_mut(&label()) {
                c.double += 1;
            }
            let hosts = holders.iter().map(|h| h.host.as_str()).collect::<BTreeSet<_>>().len();
            r.shared.push(Shared { ip, hosts, holders });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::block::tests::block_json;
    use super::super::snapshot::Leaf;
    use super::*;

    fn leaf(key: &str, value: &str) -> Leaf {
        Leaf { key: key.into(), value: value.into(), modified_index: 1 }
    }

    fn ep(host: &str, id: &str, ip: &str) -> Leaf {
        leaf(
            &format!("/calico/v1/host/{host}/workload/libnetwork/libnetwork/endpoint/{id}"),
            &format!(r#"{{"ipv4_nets":["{ip}/32"]}}"#),
        )
    }

    /// Pool 10.68.0.0/16; block .0/26 of host a: 0–3 held by endpoints, 4 tunnel of
    /// host c, 5–6 leaked, 7 handled (k8s), 8 allocated both ways; 10.68.0.70 in use
    /// without a block; 10.68.0.1 also on host b.
    pub(crate) fn snapshot() -> Snapshot {
        let mut v: serde_json::Value =
            serde_json::from_str(&block_json("10.68.0.0/26", "a", &[0, 1, 2, 3, 4, 5, 6, 7, 8])).unwrap();
        v["attributes"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"handle_id": "k8s-pod-network.x", "secondary": null}));
        v["allocations"][7] = 1.into();
        v["unallocated"].as_array_mut().unwrap().push(8.into());
        let mut s = Snapshot { index: 42, ..Default::default() };
        s.add_pools(&[leaf("/calico/v1/ipam/v4/pool/10.68.0.0-16", r#"{"cidr":"10.68.0.0/16"}"#)]);
        s.add_blocks(&[leaf("/calico/ipam/v2/assignment/ipv4/block/10.68.0.0-26", &v.to_string())]);
        s.add_hosts(&[
            ep("a", "e0", "10.68.0.0"),
            ep("a", "e1", "10.68.0.1"),
            ep("b", "x1", "10.68.0.1"),
            ep("a", "e2", "10.68.0.2"),
            ep("a", "e3", "10.68.0.3"),
            ep("a", "e8", "10.68.0.8"),
            ep("b", "e70", "10.68.0.70"),
            ep("b", "elsewhere", "192.168.9.9"),
            leaf("/calico/v1/host/c/config/IpInIpTunnelAddr", "10.68.0.4"),
        ]);
        s
    }

    #[test]
    fn leaks_doubles_and_strays_are_found() {
        let r = analyse(&snapshot(), 1000.0);
        let leaks: Vec<String> = r.leak_candidates.iter().map(|c| c.ip.to_string()).collect();
        assert_eq!(leaks, vec!["10.68.0.5", "10.68.0.6"], "no running task's, tunnel, handled or broken one");
        assert_eq!(r.leak_candidates[0].host.as_deref(), Some("a"));
        assert_eq!(
            r.unallocated_in_use,
            vec![Unallocated {
                ip: "10.68.0.70".parse().unwrap(),
                host: "b".into(),
                endpoint: "libnetwork/libnetwork/e70".into()
            }]
        );
        assert_eq!(r.shared.len(), 1);
        assert_eq!((r.shared[0].ip.to_string(), r.shared[0].hosts), ("10.68.0.1".to_string(), 2));
        assert_eq!(r.inconsistent_blocks.len(), 1);
        assert_eq!(r.handled, vec![Handled { ip: "10.68.0.7".parse().unwrap(), handle: "k8s-pod-network.x".into() }]);
        let p = &r.pools[0];
        assert_eq!((p.pool.as_str(), p.size, p.blocks), ("10.68.0.0/16", 65536, 1));
        assert_eq!(
            (p.allocated, p.in_use, p.leak_candidate, p.unallocated_in_use, p.double, p.handled),
            (9, 6, 2, 1, 2, 1)
        );
        assert_eq!(r.etcd_index, 42);
        assert!(r.has_findings());
    }

    #[test]
    fn a_clean_cluster_has_no_findings() {
        let mut s = Snapshot::default();
        s.add_blocks(&[leaf(
            "/calico/ipam/v2/assignment/ipv4/block/10.9.0.0-26",
            &block_json("10.9.0.0/26", "a", &[0]),
        )]);
        s.add_hosts(&[ep("a", "e0", "10.9.0.0")]);
        let r = analyse(&s, 1.0);
        assert!(!r.has_findings(), "{r:?}");
        assert_eq!(r.pools[0].pool, "none");
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
