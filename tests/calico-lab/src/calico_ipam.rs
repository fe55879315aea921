//! The main instance's IPAM in etcd, as libcalico-go v1.x (the libnetwork plugin's
//! `AutoAssign(Num4: 1, Hostname, IPv4Pools)` / `ReleaseIPs`) does it:
//!
//! * host-affine /26 blocks `/calico/ipam/v2/assignment/ipv4/block/<a.b.c.d-26>` =
//!   `{"cidr","affinity":"host:<node>","strictAffinity":false,"allocations":[64],"unallocated":[…],
//!   "attributes":[{"handle_id":null,"secondary":null}]}` (no handle, no attributes: one shared
//!   entry), the affinity key `/calico/ipam/v2/host/<node>/ipv4/block/<a.b.c.d-26>` = `{}`;
//! * an address comes from the host's affine blocks first (`unallocated[0]`; the first is the
//!   block's ordinal 0), then a newly claimed block (the pool's /26s in order), then — affinity
//!   is not strict — any other block of the pool with room;
//! * a release nulls the allocation, appends the ordinal to `unallocated` and drops
//!   attributes no longer used; every block write is a compare-and-swap on `prevIndex`
//!   (a new block: `prevExist=false`), retried on a conflict;
//! * the pool is written as calicoctl v1.6 writes it (`/calico/v1/ipam/v4/pool/<a.b.c.d-n>`).
//!
//! Fault switches, for the IPAM suite (`tests/lab_ipam.rs`), read from `<state dir>/ipam-faults`
//! before every call (one per line, `#` comments; `labctl ipam-fault` writes it):
//! `miss-release <cidr>` (ReleaseAddress answers success and frees nothing: the leak),
//! `double <cidr>` (an allocation leaves its ordinal in `unallocated`: the next one hands the same
//! address out again, libcalico-go#989), `delay-endpoint <cidr> <ms>` (CreateEndpoint waits before
//! writing the endpoint: the race between allocate and CreateEndpoint).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::etcd::{form_encode, Etcd, TIMEOUT};
use crate::ipam::Cidr;

const BLOCK_DIR: &str = "/calico/ipam/v2/assignment/ipv4/block";
const BLOCK_PREFIX: u8 = 26;
const BLOCK_SIZE: usize = 64;
/// Compare-and-swap conflicts tolerated in one call before it fails.
const ATTEMPTS: usize = 20;

/// The fault switches in force (see the module's comment).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Faults {
    pub miss_release: Vec<Cidr>,
    pub double: Vec<Cidr>,
    pub delay_endpoint: Vec<(Cidr, u64)>,
}

impl Faults {
    pub fn parse(text: &str) -> Faults {
        let mut f = Faults::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let w: Vec<&str> = line.split_whitespace().collect();
            let cidr = w.get(1).and_then(|c| Cidr::parse(c).ok());
            match (w[0], cidr) {
                ("miss-release", Some(c)) => f.miss_release.push(c),
                ("double", Some(c)) => f.double.push(c),
                ("delay-endpoint", Some(c)) => {
                    f.delay_endpoint.push((c, w.get(2).and_then(|ms| ms.parse().ok()).unwrap_or(0)));
                }
                _ => crate::log!("ipam-faults: {line:?} not understood (ignored)"),
            }
        }
        f
    }

    fn hit(list: &[Cidr], ip: Ipv4Addr) -> bool {
        list.iter().any(|c| c.contains_ip(ip))
    }

    /// How long CreateEndpoint waits before writing an endpoint with `ip`.
    pub fn endpoint_delay(&self, ip: Ipv4Addr) -> u64 {
        self.delay_endpoint.iter().find(|(c, _)| c.contains_ip(ip)).map(|(_, ms)| *ms).unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct CalicoIpam {
    etcd: Etcd,
    faults: PathBuf,
}

fn key_part(c: Cidr) -> String {
    c.to_string().replace('/', "-")
}

fn block_of(ip: Ipv4Addr) -> Cidr {
    Cidr::parse(&format!("{ip}/{BLOCK_PREFIX}")).expect("a /26 of an address")
}

/// A block's JSON with its etcd `modifiedIndex`.
struct Read {
    value: Value,
    index: u64,
}

/// Frees `ordinal` in a block (libcalico-go's `releaseOrdinals`): null, appended, attributes collected.
pub fn release_ordinal(b: &mut Value, ordinal: usize) -> bool {
    if b["allocations"][ordinal].is_null() {
        return false;
    }
    b["allocations"][ordinal] = Value::Null;
    b["unallocated"].as_array_mut().expect("unallocated").push(ordinal.into());
    let used: BTreeSet<u64> = b["allocations"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    let attrs = b["attributes"].as_array().cloned().unwrap_or_default();
    let mut renumber = vec![None; attrs.len()];
    let mut kept = Vec::new();
    for (i, a) in attrs.into_iter().enumerate() {
        if used.contains(&(i as u64)) {
            renumber[i] = Some(kept.len());
            kept.push(a);
        }
    }
    for a in b["allocations"].as_array_mut().expect("allocations") {
        if let Some(i) = a.as_u64() {
            *a = renumber[i as usize].map(Value::from).unwrap_or(Value::Null);
        }
    }
    b["attributes"] = kept.into();
    true
}

/// Takes `ordinal` for the handle-less attribute (found or added), like `findOrAddAttribute`.
pub fn allocate_ordinal(b: &mut Value, ordinal: usize, leave_unallocated: bool) {
    let attrs = b["attributes"].as_array_mut().expect("attributes");
    let idx = match attrs.iter().position(|a| a["handle_id"].is_null() && a["secondary"].is_null()) {
        Some(i) => i,
        None => {
            attrs.push(json!({"handle_id": null, "secondary": null}));
            attrs.len() - 1
        }
    };
    b["allocations"][ordinal] = idx.into();
    if !leave_unallocated {
        b["unallocated"].as_array_mut().expect("unallocated").retain(|o| o.as_u64() != Some(ordinal as u64));
    }
}

impl CalicoIpam {
    pub fn new(etcd: Etcd, state_dir: &std::path::Path) -> CalicoIpam {
        CalicoIpam { etcd, faults: state_dir.join("ipam-faults") }
    }

    pub fn faults(&self) -> Faults {
        std::fs::read_to_string(&self.faults).map(|t| Faults::parse(&t)).unwrap_or_default()
    }

    /// The pool as calicoctl v1.6 writes it (created only if absent).
    pub fn ensure_pool(&self, pool: Cidr) -> Result<(), String> {
        let v = json!({"cidr": pool.to_string(), "ipip": "", "ipip_mode": "", "masquerade": false, "ipam": true, "disabled": false});
        let key = format!("/calico/v1/ipam/v4/pool/{}", key_part(pool));
        let body = format!("value={}", form_encode(&v.to_string()));
        let a = self.etcd.request("PUT", &format!("{key}?prevExist=false"), Some(&body), TIMEOUT)?;
        match a.status {
            201 | 412 => Ok(()),
            s => Err(format!("etcd PUT {key} answered {s}: {}", a.body.trim())),
        }
    }

    fn read(&self, block: Cidr) -> Result<Option<Read>, String> {
        let a = self.etcd.request("GET", &format!("{BLOCK_DIR}/{}", key_part(block)), None, TIMEOUT)?;
        if a.status == 404 {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(&a.body).map_err(|e| format!("etcd answer: {e}"))?;
        let node = &v["node"];
        let value = serde_json::from_str(node["value"].as_str().unwrap_or("{}")).map_err(|e| format!("block: {e}"))?;
        Ok(Some(Read { value, index: node["modifiedIndex"].as_u64().unwrap_or(0) }))
    }

    /// Compare-and-swap (`prev` = `prevIndex`; `None`: the key must not exist). `Ok(false)`: lost the race.
    fn write(&self, block: Cidr, value: &Value, prev: Option<u64>) -> Result<bool, String> {
        let cond = match prev {
            Some(i) => format!("prevIndex={i}"),
            None => "prevExist=false".into(),
        };
        let path = format!("{BLOCK_DIR}/{}?{cond}", key_part(block));
        let a =
            self.etcd.request("PUT", &path, Some(&format!("value={}", form_encode(&value.to_string()))), TIMEOUT)?;
        match a.status {
            200 | 201 => Ok(true),
            412 | 404 => Ok(false),
            s => Err(format!("etcd PUT {path} answered {s}: {}", a.body.trim())),
        }
    }

    /// Every existing block's CIDR, and this host's affine ones.
    fn blocks(&self) -> Result<(Vec<Cidr>, Vec<Cidr>), String> {
        let list = |dir: &str| -> Result<Vec<Cidr>, String> {
            let a = self.etcd.request("GET", dir, None, TIMEOUT)?;
            if a.status == 404 {
                return Ok(Vec::new());
            }
            let v: Value = serde_json::from_str(&a.body).map_err(|e| format!("etcd answer: {e}"))?;
            let nodes = v["node"]["nodes"].as_array().cloned().unwrap_or_default();
            Ok(nodes
                .iter()
                .filter_map(|n| n["key"].as_str()?.rsplit('/').next().map(|k| k.replacen('-', "/", 1)))
                .filter_map(|c| Cidr::parse(&c).ok())
                .collect())
        };
        let host_dir = format!("/calico/ipam/v2/host/{}/ipv4/block", self.etcd.hostname());
        Ok((list(BLOCK_DIR)?, list(&host_dir)?))
    }

    /// Takes the first free ordinal of `block`. `Ok(None)`: full (or gone); `Err` on a
    /// lost race too (the caller starts over).
    fn take_from(&self, block: Cidr, double: bool) -> Result<Option<Ipv4Addr>, Option<String>> {
        let Some(mut r) = self.read(block).map_err(Some)? else { return Ok(None) };
        let Some(ord) = r.value["unallocated"].as_array().and_then(|u| u.first()).and_then(Value::as_u64) else {
            return Ok(None);
        };
        allocate_ordinal(&mut r.value, ord as usize, double);
        match self.write(block, &r.value, Some(r.index)).map_err(Some)? {
            true => Ok(Some(block.nth(ord as u32))),
            false => Err(None),
        }
    }

    /// Claims the pool's first /26 without a block for this host (affinity key, then the
    /// block with `prevExist=false`). `Ok(false)`: none left.
    fn claim(&self, pool: Cidr, existing: &[Cidr]) -> Result<bool, String> {
        let Some(free) = pool.subnets(BLOCK_PREFIX).find(|b| !existing.contains(b)) else { return Ok(false) };
        let host = self.etcd.hostname();
        let aff = format!("/calico/ipam/v2/host/{host}/ipv4/block/{}", key_part(free));
        self.etcd.request("PUT", &aff, Some("value=%7B%7D"), TIMEOUT)?;
        let block = json!({"cidr": free.to_string(), "affinity": format!("host:{host}"), "strictAffinity": false,
            "allocations": vec![Value::Null; BLOCK_SIZE], "unallocated": (0..BLOCK_SIZE).collect::<Vec<_>>(),
            "attributes": []});
        self.write(free, &block, None)?;
        Ok(true)
    }

    /// Tries `blocks` in turn. `Ok(Some)`: an address; `Ok(None)`: all full; `Err(None)`: a
    /// lost race (start over).
    fn take_any(&self, blocks: &[Cidr], double: bool) -> Result<Option<Ipv4Addr>, Option<String>> {
        for b in blocks {
            if let Some(ip) = self.take_from(*b, double)? {
                return Ok(Some(ip));
            }
        }
        Ok(None)
    }

    /// One address from `pool` for this host (libcalico-go's AutoAssign, handle-less):
    /// its affine blocks, else a newly claimed block, else another host's block.
    pub fn auto_assign(&self, pool: Cidr) -> Result<Ipv4Addr, String> {
        let double = Faults::hit(&self.faults().double, pool.nth(0));
        for _ in 0..ATTEMPTS {
            let (all, affine) = self.blocks()?;
            let mine: Vec<Cidr> = affine.iter().filter(|b| pool.contains_ip(b.nth(0))).copied().collect();
            let others: Vec<Cidr> =
                all.iter().filter(|b| pool.contains_ip(b.nth(0)) && !mine.contains(b)).copied().collect();
            match self.take_any(&mine, double) {
                Ok(Some(ip)) => return Ok(ip),
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
                Ok(None) => {}
            }
            if self.claim(pool, &all)? {
                continue;
            }
            match self.take_any(&others, double) {
                Ok(Some(ip)) => return Ok(ip),
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
                Ok(None) => return Err(format!("IP assignment error: no free address in pool {pool}")),
            }
        }
        Err(format!("IP assignment error: pool {pool}: too many concurrent changes"))
    }

    /// A specific address (`--ip`, and the addresses of endpoints stored before the
    /// allocator moved to etcd). `Ok(false)`: already allocated.
    pub fn assign_ip(&self, ip: Ipv4Addr) -> Result<bool, String> {
        let block = block_of(ip);
        for _ in 0..ATTEMPTS {
            let (all, _) = self.blocks()?;
            if !all.contains(&block) {
                let pool = Cidr::parse(&format!("{ip}/{BLOCK_PREFIX}")).expect("cidr");
                self.claim(pool, &all)?;
                continue;
            }
            let Some(mut r) = self.read(block)? else { continue };
            let ord = (u32::from(ip) - block.base) as usize;
            if !r.value["allocations"][ord].is_null() {
                return Ok(false);
            }
            allocate_ordinal(&mut r.value, ord, false);
            if self.write(block, &r.value, Some(r.index))? {
                return Ok(true);
            }
        }
        Err(format!("IP assignment error: {ip}: too many concurrent changes"))
    }

    /// ReleaseAddress (unless `miss-release` covers it).
    pub fn release(&self, ip: Ipv4Addr) -> Result<(), String> {
        if Faults::hit(&self.faults().miss_release, ip) {
            crate::log!("ReleaseAddress {ip}: missed on purpose (ipam-faults miss-release)");
            return Ok(());
        }
        let block = block_of(ip);
        for _ in 0..ATTEMPTS {
            let Some(mut r) = self.read(block)? else { return Ok(()) };
            if !release_ordinal(&mut r.value, (u32::from(ip) - block.base) as usize) {
                return Ok(());
            }
            if self.write(block, &r.value, Some(r.index))? {
                return Ok(());
            }
        }
        Err(format!("IP releasing error: {ip}: too many concurrent changes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        let f = Faults::parse(
            "# x\nmiss-release 10.69.0.0/26\ndouble 10.69.0.0/26\ndelay-endpoint 10.69.0.0/26 2500\nbogus\n",
        );
        assert_eq!(f.miss_release.len(), 1);
        assert_eq!(f.endpoint_delay("10.69.0.5".parse().unwrap()), 2500);
        assert_eq!(f.endpoint_delay("10.70.0.5".parse().unwrap()), 0);
    }

    #[test]
    fn allocate_and_release_like_libcalico_go() {
        let mut b = json!({"cidr": "10.0.0.0/26", "affinity": "host:h", "strictAffinity": false,
            "allocations": vec![Value::Null; 64], "unallocated": (0..64).collect::<Vec<_>>(), "attributes": []});
        allocate_ordinal(&mut b, 0, false);
        allocate_ordinal(&mut b, 1, false);
        assert_eq!(b["attributes"], json!([{"handle_id": null, "secondary": null}]));
        assert_eq!(b["allocations"][1], 0);
        assert_eq!(b["unallocated"][0], 2);
        assert!(release_ordinal(&mut b, 0));
        assert!(!release_ordinal(&mut b, 0));
        assert_eq!(b["unallocated"].as_array().unwrap().last().unwrap(), 0, "released ordinals go to the end");
        assert!(release_ordinal(&mut b, 1));
        assert_eq!(b["attributes"], json!([]), "unused attributes are dropped");
        allocate_ordinal(&mut b, 2, true);
        assert_eq!(b["unallocated"][0], 2, "double: left in unallocated, handed out again");
    }
}
