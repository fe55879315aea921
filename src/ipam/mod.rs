//! Calico's IPAM (libcalico-go v1.x on etcd v2, as the libnetwork plugin uses it),
//! cluster-wide: which addresses are leaked (allocated, handle-less, held by no
//! endpoint of any host, not a tunnel address), in use without an allocation, held
//! twice, or in a block whose bookkeeping is broken — and the release of leaks, only
//! with proof (in every one of several reports taken apart, re-checked live, written
//! with a compare-and-swap on the block's `modifiedIndex`).
//!
//! `snapshot` turns etcd's keys into plain data, `block` is one allocation block,
//! `check` the pure findings (the report), `release` the pure plan, `store` the etcd
//! I/O (the datastore's client, its deadlines and answer ceiling), `settings` the
//! `[ipam]` section.

pub mod block;
pub mod check;
pub mod release;
pub mod settings;
pub mod snapshot;
pub mod store;

use std::net::Ipv4Addr;

pub use block::Block;
pub use check::{analyse, Report};
pub use snapshot::Snapshot;

/// Where libcalico-go v1.x keeps IPv4 blocks, affinities, pools and host config.
pub const BLOCK_DIR: &str = "/calico/ipam/v2/assignment/ipv4/block";
pub const POOL_DIR: &str = "/calico/v1/ipam/v4/pool";
pub const HOST_DIR: &str = "/calico/v1/host";

/// An IPv4 network (`a.b.c.d/n`, host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Cidr {
    fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// This network lies wholly inside `other`.
    pub fn within(&self, other: &Cidr) -> bool {
        self.len >= other.len && other.contains(self.addr)
    }

    pub fn nth(&self, n: u64) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n as u32))
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, l) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a.b.c.d/n"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{s:?} is not a.b.c.d/n"))?;
        let len: u8 = l.parse().ok().filter(|l| *l <= 32).ok_or_else(|| format!("{s:?}: bad prefix length"))?;
        let c = Cidr { addr, len };
        if u32::from(addr) & c.mask() != u32::from(addr) {
            return Err(format!("{s:?} has host bits set"));
        }
        Ok(c)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_contains() {
        let c: Cidr = "10.68.141.64/26".parse().unwrap();
        assert_eq!(c.size(), 64);
        assert!(c.contains(Ipv4Addr::new(10, 68, 141, 127)));
        assert!(!c.contains(Ipv4Addr::new(10, 68, 141, 128)));
        assert_eq!(c.nth(1), Ipv4Addr::new(10, 68, 141, 65));
        assert!(c.within(&"10.68.0.0/16".parse().unwrap()));
        assert!(!"10.0.0.0/8".parse::<Cidr>().unwrap().within(&c));
        assert!("10.68.141.65/26".parse::<Cidr>().is_err());
        assert!("10.68.141.64".parse::<Cidr>().is_err());
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.68.141.64/26\"");
    }
}
