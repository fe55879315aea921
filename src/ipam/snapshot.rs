//! The cluster's IPAM state as plain data, from etcd's keys: pools, blocks, every
//! host's workload endpoints (any orchestrator) and tunnel addresses.

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::{Block, Cidr, BLOCK_DIR, HOST_DIR, POOL_DIR};

pub use crate::datastore::etcd::Leaf;

/// An IPv4 address held by a workload endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub host: String,
    /// `<orchestrator>/<workload>/<endpoint id>`
    pub endpoint: String,
    pub ip: Ipv4Addr,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// etcd's index at the read (the oldest of the reads it was made of).
    pub index: u64,
    pub pools: Vec<Cidr>,
    pub blocks: Vec<Block>,
    pub endpoints: Vec<Holding>,
    /// A node's IPIP tunnel address (`/calico/v1/host/<node>/config/IpInIpTunnelAddr`).
    pub tunnels: Vec<(String, Ipv4Addr)>,
    /// Keys that could not be read, with why: an endpoint among them could hold any
    /// address, so nothing is released while there are any.
    pub unreadable: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct RawPool {
    cidr: String,
}

#[derive(Deserialize)]
struct RawEndpoint {
    #[serde(default)]
    ipv4_nets: Vec<String>,
}

impl Snapshot {
    /// Pools from `/calico/v1/ipam/v4/pool`.
    pub fn add_pools(&mut self, leaves: &[Leaf]) {
        for l in leaves.iter().filter(|l| l.key.starts_with(POOL_DIR)) {
            let parsed = serde_json::from_str::<RawPool>(&l.value).map_err(|e| e.to_string());
            match parsed.and_then(|p| p.cidr.parse::<Cidr>()) {
                Ok(c) => self.pools.push(c),
                Err(why) => self.unreadable.push((l.key.clone(), why)),
            }
        }
        self.pools.sort();
        self.pools.dedup();
    }

    /// IPv4 blocks from `/calico/ipam/v2/assignment/ipv4/block`.
    pub fn add_blocks(&mut self, leaves: &[Leaf]) {
        for l in leaves.iter().filter(|l| l.key.starts_with(BLOCK_DIR)) {
            match Block::parse(&l.key, &l.value, l.modified_index) {
                Ok(b) => self.blocks.push(b),
                Err(why) => self.unreadable.push((l.key.clone(), why)),
            }
        }
        self.blocks.sort_by_key(|b| b.cidr);
    }

    /// Workload endpoints and tunnel addresses from `/calico/v1/host`.
    pub fn add_hosts(&mut self, leaves: &[Leaf]) {
        for l in leaves {
            let Some(rest) = l.key.strip_prefix(HOST_DIR).and_then(|r| r.strip_prefix('/')) else { continue };
            let parts: Vec<&str> = rest.split('/').collect();
            match parts.as_slice() {
                [host, "workload", orch, workload, "endpoint", id] => {
                    let endpoint = format!("{orch}/{workload}/{id}");
                    match parse_nets(&l.value) {
                        Ok(ips) => self.endpoints.extend(ips.into_iter().map(|ip| Holding {
                            host: host.to_string(),
                            endpoint: endpoint.clone(),
                            ip,
                        })),
                        Err(why) => self.unreadable.push((l.key.clone(), why)),
                    }
                }
                [host, "config", "IpInIpTunnelAddr"] => match l.value.trim().parse() {
                    Ok(ip) => self.tunnels.push((host.to_string(), ip)),
                    Err(_) if l.value.trim().is_empty() => {}
                    Err(_) => self.unreadable.push((l.key.clone(), format!("{:?} is not IPv4", l.value))),
                },
                _ => {}
            }
        }
    }

    /// The configured pool that holds `cidr`, if any.
    pub fn pool_of(&self, cidr: &Cidr) -> Option<Cidr> {
        self.pools.iter().filter(|p| cidr.within(p)).max_by_key(|p| p.len).copied()
    }
}

fn parse_nets(value: &str) -> Result<Vec<Ipv4Addr>, String> {
    let raw: RawEndpoint = serde_json::from_str(value).map_err(|e| e.to_string())?;
    raw.ipv4_nets
        .iter()
        .map(|n| n.split('/').next().unwrap_or_default().parse().map_err(|_| format!("ipv4_nets: {n:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(key: &str, value: &str) -> Leaf {
        Leaf { key: key.into(), value: value.into(), modified_index: 3 }
    }

    #[test]
    fn hosts_pools_and_blocks_are_read() {
        let mut s = Snapshot::default();
        s.add_pools(&[
            leaf("/calico/v1/ipam/v4/pool/10.68.0.0-16", r#"{"cidr":"10.68.0.0/16","ipip":"","disabled":false}"#),
            leaf("/calico/v1/ipam/v4/pool/bad", "{"),
        ]);
        s.add_hosts(&[
            leaf(
                "/calico/v1/host/a/workload/libnetwork/libnetwork/endpoint/e1",
                r#"{"state":"active","ipv4_nets":["10.68.0.1/32"]}"#,
            ),
            leaf("/calico/v1/host/b/workload/k8s/default.pod/endpoint/eth0", r#"{"ipv4_nets":["10.68.0.2/32"]}"#),
            leaf("/calico/v1/host/b/workload/k8s/default.pod/endpoint/bad", r#"{"ipv4_nets":["x"]}"#),
            leaf("/calico/v1/host/c/config/IpInIpTunnelAddr", "10.68.0.3"),
            leaf("/calico/v1/host/c/bird_ip", "192.168.0.1"),
        ]);
        s.add_blocks(&[leaf(
            "/calico/ipam/v2/assignment/ipv4/block/10.68.0.0-26",
            &super::super::block::tests::block_json("10.68.0.0/26", "a", &[1]),
        )]);
        assert_eq!(s.pools.len(), 1);
        assert_eq!(s.endpoints.len(), 2);
        assert_eq!(s.endpoints[1].endpoint, "k8s/default.pod/eth0");
        assert_eq!(s.tunnels, vec![("c".to_string(), Ipv4Addr::new(10, 68, 0, 3))]);
        assert_eq!(s.unreadable.len(), 2);
        assert_eq!(s.blocks[0].modified_index, 3);
        assert_eq!(s.pool_of(&s.blocks[0].cidr), Some("10.68.0.0/16".parse().unwrap()));
    }
}
