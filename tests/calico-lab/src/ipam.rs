//! Address pools: `/32` allocation from the pool given with `docker network create --subnet`.
//!
//! Like Calico's IPAM the answer is always a `/32`. Unlike Calico there are no per-host
//! blocks: a pool hands out its host addresses round robin (a cursor), which keeps a freshly
//! released address from being reused at once by a concurrent test.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Calico's fixed pool id for `docker network create` without `--subnet`.
pub const POOL_ID_V4: &str = "CalicoPoolIPv4";
/// Calico's default IPv4 pool (used when the network has no `--subnet`).
pub const DEFAULT_POOL_V4: &str = "192.168.0.0/16";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: u32,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| format!("Invalid CIDR {s:?}"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("Invalid CIDR {s:?}"))?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("Invalid CIDR {s:?}"))?;
        let mask = self::mask(prefix);
        Ok(Cidr { base: u32::from(addr) & mask, prefix })
    }

    /// First and last assignable host address (network and broadcast addresses are skipped
    /// for prefixes shorter than /31).
    fn host_range(&self) -> (u32, u32) {
        let size = 1u64 << (32 - self.prefix as u32);
        let last = (self.base as u64 + size - 1) as u32;
        if self.prefix >= 31 {
            (self.base, last)
        } else {
            (self.base + 1, last - 1)
        }
    }
}

impl Cidr {
    /// Is `ip` inside this network?
    pub fn contains_ip(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == self.base
    }

    /// The `n`th address of the network.
    pub fn nth(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base.wrapping_add(n))
    }

    /// The `/prefix` networks inside this one, in order (none if `prefix` is shorter).
    pub fn subnets(&self, prefix: u8) -> impl Iterator<Item = Cidr> + '_ {
        let count = if prefix < self.prefix || prefix > 32 { 0 } else { 1u64 << (prefix - self.prefix) };
        let step = 1u64 << (32 - u32::from(prefix));
        (0..count).map(move |i| Cidr { base: (u64::from(self.base) + i * step) as u32, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

/// One pool's allocations, persisted in the lab state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Pool {
    pub cidr: String,
    pub allocated: BTreeSet<Ipv4Addr>,
    /// Next address to try (round robin).
    #[serde(default)]
    pub next: Option<Ipv4Addr>,
}

impl Pool {
    pub fn new(cidr: &str) -> Result<Pool, String> {
        let c = Cidr::parse(cidr)?;
        Ok(Pool { cidr: c.to_string(), allocated: BTreeSet::new(), next: None })
    }

    fn range(&self) -> (u32, u32) {
        Cidr::parse(&self.cidr).map(|c| c.host_range()).unwrap_or((1, 0))
    }

    /// Allocate the next free address, or `None` when the pool is exhausted.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let (first, last) = self.range();
        if first > last {
            return None;
        }
        let span = (last - first) as u64 + 1;
        let start = self.next.map(u32::from).filter(|n| (first..=last).contains(n)).unwrap_or(first);
        for i in 0..span {
            let cand = first + (((start - first) as u64 + i) % span) as u32;
            let ip = Ipv4Addr::from(cand);
            if !self.allocated.contains(&ip) {
                self.allocated.insert(ip);
                self.next = Some(Ipv4Addr::from(if cand == last { first } else { cand + 1 }));
                return Some(ip);
            }
        }
        None
    }

    /// Is `ip` inside this pool's CIDR?
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        Cidr::parse(&self.cidr).map(|c| u32::from(ip) & mask(c.prefix) == c.base).unwrap_or(false)
    }

    /// Reserve a specific address (`docker run --ip`).
    pub fn reserve(&mut self, ip: Ipv4Addr) -> Result<(), String> {
        let (first, last) = self.range();
        if !(first..=last).contains(&u32::from(ip)) {
            return Err(format!("{ip} is not an assignable address of pool {}", self.cidr));
        }
        if !self.allocated.insert(ip) {
            return Err(format!("{ip} is already allocated in pool {}", self.cidr));
        }
        Ok(())
    }

    pub fn release(&mut self, ip: Ipv4Addr) -> bool {
        self.allocated.remove(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let c = Cidr::parse("10.65.1.7/17").unwrap();
        assert_eq!(c.to_string(), "10.65.0.0/17");
        assert_eq!(c.host_range(), (0x0a41_0001, 0x0a41_7ffe));
        let p = Pool::new("10.65.1.7/17").unwrap();
        assert!(p.contains("10.65.127.255".parse().unwrap()));
        assert!(!p.contains("10.65.128.0".parse().unwrap()));
        assert!(Cidr::parse("10.65.0.0").is_err());
        assert!(Cidr::parse("10.65.0.0/33").is_err());
        assert!(Cidr::parse("nonsense/8").is_err());
    }

    #[test]
    fn allocates_round_robin_and_skips_network_and_broadcast() {
        let mut p = Pool::new("10.0.0.0/30").unwrap();
        assert_eq!(p.allocate(), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(p.allocate(), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(p.allocate(), None);
        assert!(p.release("10.0.0.1".parse().unwrap()));
        assert_eq!(p.allocate(), Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn released_address_is_not_reused_immediately() {
        let mut p = Pool::new("10.0.0.0/24").unwrap();
        let a = p.allocate().unwrap();
        p.release(a);
        let b = p.allocate().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn reserve_checks_range_and_duplicates() {
        let mut p = Pool::new("10.0.0.0/24").unwrap();
        p.reserve("10.0.0.9".parse().unwrap()).unwrap();
        assert!(p.reserve("10.0.0.9".parse().unwrap()).is_err());
        assert!(p.reserve("10.0.1.9".parse().unwrap()).is_err());
        assert!(p.reserve("10.0.0.0".parse().unwrap()).is_err());
    }

    #[test]
    fn serde_round_trip() {
        let mut p = Pool::new("10.0.0.0/24").unwrap();
        p.allocate();
        let s = serde_json::to_string(&p).unwrap();
        let q: Pool = serde_json::from_str(&s).unwrap();
        assert_eq!(p, q);
    }
}
