//! The pure release plan: which leak candidates may be released now. Only addresses
//! that are candidates in every report, the reports spanning at least `min_gap`,
//! and still candidates in the live snapshot read just before the write; never in a
//! block whose bookkeeping is broken, never while any key could not be read; at
//! most `limit` per run.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use super::block::Holder;
use super::check::{analyse, Candidate, Report, REPORT_VERSION};
use super::{Cidr, Snapshot};

/// The ordinals to release in one block, with the block as read (its JSON is
/// rewritten from it and its `modifiedIndex` is the compare-and-swap's `prevIndex`).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRelease {
    pub block: Cidr,
    pub key: String,
    pub prev_index: u64,
    pub ordinals: BTreeSet<usize>,
    pub ips: Vec<Ipv4Addr>,
    pub value: serde_json::Value,
}

/// A candidate of the reports that is not released, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kept {
    pub ip: Ipv4Addr,
    pub why: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub blocks: Vec<BlockRelease>,
    pub kept: Vec<Kept>,
}

/// Checks the reports themselves: at least two, this format, spanning `min_gap`.
/// Returns the candidates present in every report.
pub fn common_candidates(reports: &[Report], min_gap: Duration) -> Result<Vec<Candidate>, String> {
    if reports.len() < 2 {
        return Err(format!("a release needs at least two reports (got {})", reports.len()));
    }
    if let Some(r) = reports.iter().find(|r| r.version != REPORT_VERSION) {
        return Err(format!("a report has version {}, this calico-medic reads {REPORT_VERSION}", r.version));
    }
    let first = reports.iter().map(|r| r.taken_at).fold(f64::INFINITY, f64::min);
    let last = reports.iter().map(|r| r.taken_at).fold(f64::NEG_INFINITY, f64::max);
    if last - first < min_gap.as_secs_f64() {
        return Err(format!(
            "the reports were taken {:.1} s apart, less than --min-gap {:?}: take another one later",
            last - first,
            min_gap
        ));
    }
    let mut common: BTreeSet<&Candidate> = reports[0].leak_candidates.iter().collect();
    for r in &reports[1..] {
        let these: BTreeSet<&Candidate> = r.leak_candidates.iter().collect();
        common.retain(|c| these.contains(c));
    }
    Ok(common.into_iter().cloned().collect())
}

/// Why `c` is no longer a candidate in the live snapshot.
fn why_not(live: &Snapshot, c: &Candidate) -> String {
    let Some(b) = live.blocks.iter().find(|b| b.cidr == c.block) else {
        return format!("block {} is gone", c.block);
    };
    if !b.problems().0.is_empty() {
        return format!("block {} is inconsistent: never written", c.block);
    }
    match b.holder(c.ordinal) {
        None => return "no longer allocated (released by someone else)".into(),
        Some(Holder::Handle(h)) => return format!("allocated again, with handle {h}"),
        _ => {}
    }
    if let Some(h) = live.endpoints.iter().find(|h| h.ip == c.ip) {
        return format!("now held by endpoint {} on host {}", h.endpoint, h.host);
    }
    if let Some((host, _)) = live.tunnels.iter().find(|(_, ip)| *ip == c.ip) {
        return format!("now the tunnel address of {host}");
    }
    "no longer a candidate".into()
}

/// The plan against the live snapshot: `candidates` (from `common_candidates`) that
/// are still leak candidates now, at most `limit`, grouped by block.
pub fn plan(candidates: &[Candidate], live: &Snapshot, limit: usize) -> Plan {
    let mut out = Plan::default();
    if !live.unreadable.is_empty() {
        out.kept = candidates
            .iter()
            .map(|c| Kept {
                ip: c.ip,
                why: format!("{} key(s) unreadable: nothing is released", live.unreadable.len()),
            })
            .collect();
        return out;
    }
    let now: BTreeSet<Candidate> = analyse(live, 0.0).leak_candidates.into_iter().collect();
    let broken: BTreeSet<Cidr> = live.blocks.iter().filter(|b| !b.problems().0.is_empty()).map(|b| b.cidr).collect();
    let mut chosen: BTreeMap<Cidr, BTreeSet<usize>> = BTreeMap::new();
    let mut taken = 0;
    for c in candidates {
        if !now.contains(c) || broken.contains(&c.block) {
            out.kept.push(Kept { ip: c.ip, why: why_not(live, c) });
        } else if taken >= limit {
            out.kept.push(Kept { ip: c.ip, why: format!("over the limit of {limit} per run") });
        } else {
            chosen.entry(c.block).or_default().insert(c.ordinal);
            taken += 1;
        }
    }
    for (cidr, ordinals) in chosen {
        let b = live.blocks.iter().find(|b| b.cidr == cidr).expect("a live candidate's block is live");
        out.blocks.push(BlockRelease {
            block: cidr,
            key: b.key.clone(),
            prev_index: b.modified_index,
            ips: ordinals.iter().map(|o| b.ip(*o)).collect(),
            value: b.released(&ordinals),
            ordinals,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::block::tests::block_json;
    use super::super::snapshot::Leaf;
    use super::*;

    fn report(at: f64, s: &Snapshot) -> Report {
        analyse(s, at)
    }

    fn live(allocated: &[usize], held: &[usize]) -> Snapshot {
        let mut s = Snapshot::default();
        let key = "/calico/ipam/v2/assignment/ipv4/block/10.9.0.0-26";
        s.add_blocks(&[Leaf { key: key.into(), value: block_json("10.9.0.0/26", "a", allocated), modified_index: 9 }]);
        let eps: Vec<Leaf> = held
            .iter()
            .map(|o| Leaf {
                key: format!("/calico/v1/host/a/workload/libnetwork/libnetwork/endpoint/e{o}"),
                value: format!(r#"{{"ipv4_nets":["10.9.0.{o}/32"]}}"#),
                modified_index: 1,
            })
            .collect();
        s.add_hosts(&eps);
        s
    }

    #[test]
    fn only_candidates_of_every_report_still_leaked_now_are_released() {
        // Report A: 1, 2, 3 leaked. Report B (later): 2's endpoint was written
        // meanwhile (the delayed CreateEndpoint). Live: 3 was released by its owner.
        let a = report(100.0, &live(&[0, 1, 2, 3], &[0]));
        let b = report(102.0, &live(&[0, 1, 2, 3], &[0, 2]));
        assert!(common_candidates(&[a.clone(), b.clone()], Duration::from_secs(3)).unwrap_err().contains("--min-gap"));
        let common = common_candidates(&[a, b], Duration::from_secs(1)).unwrap();
        assert_eq!(common.iter().map(|c| c.ordinal).collect::<Vec<_>>(), vec![1, 3]);
        let now = live(&[0, 1, 2], &[0, 2]);
        let p = plan(&common, &now, 10);
        assert_eq!(p.blocks.len(), 1);
        assert_eq!(p.blocks[0].ordinals, BTreeSet::from([1]));
        assert_eq!(p.blocks[0].prev_index, 9);
        assert_eq!(p.blocks[0].ips, vec![Ipv4Addr::new(10, 9, 0, 1)]);
        assert_eq!(p.blocks[0].value["allocations"][1], serde_json::Value::Null);
        assert_eq!(
            p.kept,
            vec![Kept { ip: Ipv4Addr::new(10, 9, 0, 3), why: "no longer allocated (released by someone else)".into() }]
        );
    }

    #[test]
    fn limits_unreadable_keys_and_broken_blocks_hold_releases_back() {
        let s = live(&[0, 1, 2, 3], &[]);
        let common = common_candidates(&[report(1.0, &s), report(5.0, &s)], Duration::from_secs(1)).unwrap();
        let p = plan(&common, &s, 2);
        assert_eq!(p.blocks[0].ordinals.len(), 2);
        assert_eq!(p.kept.len(), 2);
        assert!(p.kept[0].why.contains("limit of 2"));
        let mut unreadable = s.clone();
        unreadable.unreadable.push(("/k".into(), "bad".into()));
        let p = plan(&common, &unreadable, 10);
        assert!(p.blocks.is_empty() && p.kept.len() == 4 && p.kept[0].why.contains("unreadable"));
        let mut broken = s.clone();
        broken.blocks[0].unallocated.push(1);
        let p = plan(&common, &broken, 10);
        assert!(p.blocks.is_empty(), "{p:?}");
        assert!(p.kept.iter().all(|k| k.why.contains("inconsistent")), "{:?}", p.kept);
        assert!(common_candidates(&[report(1.0, &s)], Duration::ZERO).is_err());
    }
}
