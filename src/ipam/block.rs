//! One IPAM allocation block as libcalico-go v1.x stores it (etcd v2,
//! `/calico/ipam/v2/assignment/ipv4/block/<a.b.c.d-26>`): its consistency, and the
//! pure release of ordinals (what libcalico-go's `releaseOrdinals` writes).
//!
//! `{"cidr":"10.68.141.64/26","affinity":"host:<node>","strictAffinity":false,
//!   "allocations":[0,null,…],"unallocated":[1,2,…],"attributes":[{"handle_id":null,"secondary":null}]}`

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::Deserialize;
use serde_json::Value;

use super::Cidr;

/// One attribute entry (`allocations` point at these by index).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Attribute {
    #[serde(default)]
    pub handle_id: Option<String>,
    #[serde(default)]
    pub secondary: Option<Value>,
}

/// A parsed block. `raw` is the stored JSON, kept so a release rewrites only what it
/// changes (fields this version does not know survive).
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub key: String,
    pub cidr: Cidr,
    /// `host:<node>` without the prefix; `None` for a block without affinity.
    pub host: Option<String>,
    pub allocations: Vec<Option<usize>>,
    pub unallocated: Vec<usize>,
    pub attributes: Vec<Attribute>,
    /// etcd's `modifiedIndex` of the key when read (the compare-and-swap's `prevIndex`).
    pub modified_index: u64,
    raw: Value,
}

#[derive(Deserialize)]
struct RawBlock {
    cidr: String,
    #[serde(default)]
    affinity: Option<String>,
    #[serde(default)]
    allocations: Vec<Option<usize>>,
    #[serde(default)]
    unallocated: Vec<usize>,
    #[serde(default)]
    attributes: Vec<Attribute>,
}

/// How an allocated ordinal is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder<'a> {
    /// No handle: the libnetwork plugin's way (and the tunnel address's).
    HandleLess,
    /// Another orchestrator's allocation: never touched.
    Handle(&'a str),
    /// The index points past `attributes` (a broken block).
    Dangling,
}

impl Block {
    pub fn parse(key: &str, value: &str, modified_index: u64) -> Result<Block, String> {
        let raw: Value = serde_json::from_str(value).map_err(|e| format!("block {key}: {e}"))?;
        let b: RawBlock = serde_json::from_value(raw.clone()).map_err(|e| format!("block {key}: {e}"))?;
        let cidr: Cidr = b.cidr.parse().map_err(|e| format!("block {key}: cidr: {e}"))?;
        if cidr.size() != b.allocations.len() as u64 {
            return Err(format!("block {key}: {} allocations for a {cidr}", b.allocations.len()));
        }
        let host = b.affinity.as_deref().and_then(|a| a.strip_prefix("host:")).map(str::to_string);
        Ok(Block {
            key: key.to_string(),
            cidr,
            host,
            allocations: b.allocations,
            unallocated: b.unallocated,
            attributes: b.attributes,
            modified_index,
            raw,
        })
    }

    pub fn ip(&self, ordinal: usize) -> Ipv4Addr {
        self.cidr.nth(ordinal as u64)
    }

    /// The ordinal of `ip` in this block, if it is inside.
    pub fn ordinal(&self, ip: Ipv4Addr) -> Option<usize> {
        self.cidr.contains(ip).then(|| (u32::from(ip) - u32::from(self.cidr.addr)) as usize)
    }

    pub fn holder(&self, ordinal: usize) -> Option<Holder<'_>> {
        let idx = (*self.allocations.get(ordinal)?)?;
        Some(match self.attributes.get(idx) {
            None => Holder::Dangling,
            Some(Attribute { handle_id: Some(h), .. }) => Holder::Handle(h),
            Some(_) => Holder::HandleLess,
        })
    }

    /// Allocated ordinals, in order.
    pub fn allocated(&self) -> impl Iterator<Item = usize> + '_ {
        self.allocations.iter().enumerate().filter_map(|(o, a)| a.map(|_| o))
    }

    /// What is wrong with the block's bookkeeping (libcalico-go#989): an ordinal twice
    /// in `unallocated`, both allocated and unallocated, out of range, or allocated +
    /// unallocated ≠ the block's size. Empty: consistent. Also the ordinals involved.
    pub fn problems(&self) -> (Vec<String>, BTreeSet<usize>) {
        let mut why = Vec::new();
        let mut bad = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for &o in &self.unallocated {
            if o >= self.allocations.len() {
                why.push(format!("ordinal {o} in unallocated is outside the block"));
            } else if !seen.insert(o) {
                why.push(format!("ordinal {o} ({}) twice in unallocated", self.ip(o)));
                bad.insert(o);
            } else if self.allocations[o].is_some() {
                why.push(format!("ordinal {o} ({}) both allocated and unallocated", self.ip(o)));
                bad.insert(o);
            }
        }
        for o in self.allocated() {
            if self.holder(o) == Some(Holder::Dangling) {
                why.push(format!("ordinal {o} ({}) points at a missing attribute", self.ip(o)));
                bad.insert(o);
            }
        }
        let total = self.allocated().count() + self.unallocated.len();
        if total != self.allocations.len() {
            why.push(format!("allocated + unallocated = {total}, not {}", self.allocations.len()));
        }
        (why, bad)
    }

    /// The block's JSON with `ordinals` released as libcalico-go releases them:
    /// `allocations[o] = null`, `o` appended to `unallocated`, attributes no longer
    /// referenced dropped and the remaining indexes renumbered. Ordinals not
    /// allocated are left alone.
    pub fn released(&self, ordinals: &BTreeSet<usize>) -> Value {
        let mut allocations = self.allocations.clone();
        let mut unallocated = self.unallocated.clone();
        for &o in ordinals {
            if let Some(slot @ Some(_)) = allocations.get_mut(o) {
                *slot = None;
                unallocated.push(o);
            }
        }
        // Attribute garbage collection: keep referenced entries, renumber.
        let used: BTreeSet<usize> = allocations.iter().flatten().copied().collect();
        let raw_attrs = self.raw.get("attributes").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut new_index = vec![None; raw_attrs.len()];
        let mut attributes = Vec::new();
        for (i, a) in raw_attrs.into_iter().enumerate() {
            if used.contains(&i) {
                new_index[i] = Some(attributes.len());
                attributes.push(a);
            }
        }
        let allocations: Vec<Value> = allocations
            .iter()
            .map(|a| match a.and_then(|i| new_index.get(i).copied().flatten()) {
                Some(i) => Value::from(i),
                None => Value::Null,
            })
            .collect();
        let mut out = self.raw.clone();
        out["allocations"] = Value::from(allocations);
        out["unallocated"] = Value::from(unallocated);
        out["attributes"] = Value::from(attributes);
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A /26 block as the real plugin wrote it in the lab, with `allocated` handle-less.
    pub fn block_json(cidr: &str, host: &str, allocated: &[usize]) -> String {
        let mut allocations = vec![Value::Null; 64];
        for &o in allocated {
            allocations[o] = Value::from(0);
        }
        let unallocated: Vec<usize> = (0..64).filter(|o| !allocated.contains(o)).collect();
        serde_json::json!({"cidr": cidr, "affinity": format!("host:{host}"), "strictAffinity": false,
            "allocations": allocations, "unallocated": unallocated,
            "attributes": [{"handle_id": null, "secondary": null}]})
        .to_string()
    }

    #[test]
    fn real_plugin_block_parses_and_is_consistent() {
        let b = Block::parse("/k", &block_json("10.68.141.64/26", "node-a", &[0, 1]), 7).unwrap();
        assert_eq!(b.host.as_deref(), Some("node-a"));
        assert_eq!(b.ip(0), Ipv4Addr::new(10, 68, 141, 64));
        assert_eq!(b.ordinal(Ipv4Addr::new(10, 68, 141, 65)), Some(1));
        assert_eq!(b.ordinal(Ipv4Addr::new(10, 68, 141, 128)), None);
        assert_eq!(b.holder(0), Some(Holder::HandleLess));
        assert_eq!(b.holder(2), None);
        assert!(b.problems().0.is_empty());
        assert!(Block::parse("/k", r#"{"cidr":"10.0.0.0/26","allocations":[null]}"#, 1).is_err());
    }

    #[test]
    fn inconsistencies_of_libcalico_go_989_are_named() {
        let mut v: Value = serde_json::from_str(&block_json("10.0.0.0/26", "h", &[0, 1])).unwrap();
        v["unallocated"].as_array_mut().unwrap().extend([Value::from(1), Value::from(5)]);
        let b = Block::parse("/k", &v.to_string(), 1).unwrap();
        let (why, bad) = b.problems();
        assert!(why.iter().any(|w| w.contains("ordinal 1 (10.0.0.1) both allocated and unallocated")), "{why:?}");
        assert!(why.iter().any(|w| w.contains("ordinal 5 (10.0.0.5) twice in unallocated")), "{why:?}");
        assert!(why.iter().any(|w| w.contains("not 64")), "{why:?}");
        assert_eq!(bad, BTreeSet::from([1, 5]));
    }

    #[test]
    fn release_nulls_appends_and_collects_attributes() {
        let mut v: Value = serde_json::from_str(&block_json("10.0.0.0/26", "h", &[0, 1, 2])).unwrap();
        v["attributes"] =
            serde_json::json!([{"handle_id": "k8s-pod", "secondary": null}, {"handle_id": null, "secondary": null}]);
        v["allocations"][1] = Value::from(1);
        v["allocations"][2] = Value::from(1);
        v["futureField"] = Value::from("kept");
        let b = Block::parse("/k", &v.to_string(), 1).unwrap();
        assert_eq!(b.holder(0), Some(Holder::Handle("k8s-pod")));
        // Releasing the handled one drops attribute 0 and renumbers the handle-less one to 0.
        let out = b.released(&BTreeSet::from([0, 1, 40]));
        let again = Block::parse("/k", &out.to_string(), 2).unwrap();
        assert_eq!(again.allocated().collect::<Vec<_>>(), vec![2]);
        assert_eq!(again.holder(2), Some(Holder::HandleLess));
        assert_eq!(again.attributes.len(), 1);
        assert_eq!(&again.unallocated[again.unallocated.len() - 2..], &[0, 1]);
        assert!(again.problems().0.is_empty());
        assert_eq!(out["futureField"], "kept");
    }
}
