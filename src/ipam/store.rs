//! The etcd side: one consistent-enough read of the cluster's IPAM (blocks first,
//! then pools and hosts: an address allocated and held between the reads shows as
//! held, never as leaked), and the release as compare-and-swaps on each block's
//! `modifiedIndex` — a block changed by someone else is read again and the decision
//! made again, never overwritten. Through the datastore's client: its deadlines,
//! failover and answer ceiling (`[limits] datastore_answer_bytes`).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;
use tracing::{info, warn};

use super::check::{analyse, Candidate, Report};
use super::release::{plan, Kept};
use super::{Cidr, Snapshot, BLOCK_DIR, HOST_DIR, POOL_DIR};
use crate::datastore::etcd::Swapped;
use crate::datastore::EtcdClient;
use crate::error::MedicError;

/// Rounds of read → decide → write before a block that keeps changing is left alone.
pub const MAX_ROUNDS: usize = 5;

/// Reads blocks, pools and every host's endpoints and tunnel addresses.
pub async fn read(client: &EtcdClient) -> Result<Snapshot, MedicError> {
    let (blocks, index) = client.get_leaves(BLOCK_DIR).await?;
    let (pools, _) = client.get_leaves(POOL_DIR).await?;
    let (hosts, _) = client.get_leaves(HOST_DIR).await?;
    let mut s = Snapshot { index, ..Default::default() };
    s.add_pools(&pools);
    s.add_blocks(&blocks);
    s.add_hosts(&hosts);
    Ok(s)
}

/// One check now: read, analyse (stamped with the time of the read).
pub async fn check(client: &EtcdClient) -> Result<Report, MedicError> {
    let taken_at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let snapshot = read(client).await?;
    Ok(analyse(&snapshot, taken_at))
}

/// Writes a report (JSON) atomically.
pub fn save_report(path: &Path, report: &Report) -> Result<(), MedicError> {
    let text = serde_json::to_string_pretty(report).expect("reports serialize");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text + "\n").and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| MedicError::ConfigIo {
        context: format!("ipam: writing the report {}", path.display()),
        source: e,
    })
}

/// Reads a report `save_report` (or `ipam check --json`) wrote.
pub fn load_report(path: &Path) -> Result<Report, MedicError> {
    let text = std::fs::read_to_string(path).map_err(|e| MedicError::ConfigIo {
        context: format!("ipam: reading the report {}", path.display()),
        source: e,
    })?;
    serde_json::from_str(&text)
        .map_err(|e| MedicError::Config(format!("ipam: {} is not a report of ipam check: {e}", path.display())))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Released {
    pub ip: Ipv4Addr,
    pub block: Cidr,
}

/// What a release run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcome {
    pub dry_run: bool,
    /// Released (or, in a dry run, would be).
    pub released: Vec<Released>,
    pub kept: Vec<Kept>,
    /// Compare-and-swaps refused because the block had changed since it was read.
    pub conflicts: usize,
    /// Blocks still changing after `MAX_ROUNDS` rounds, left alone.
    pub gave_up: Vec<Cidr>,
}

/// Releases `candidates` (present in every report) that are still leaked now, at most
/// `limit`; `dry_run`: decides and reports, writes nothing.
pub async fn release(
    client: &EtcdClient,
    candidates: &[Candidate],
    limit: usize,
    dry_run: bool,
) -> Result<Outcome, MedicError> {
    let mut out = Outcome { dry_run, ..Default::default() };
    let mut pending: Vec<Candidate> = candidates.to_vec();
    for round in 1..=MAX_ROUNDS {
        let live = read(client).await?;
        let p = plan(&pending, &live, limit.saturating_sub(out.released.len()));
        out.kept.retain(|k| !pending.iter().any(|c| c.ip == k.ip));
        out.kept.extend(p.kept);
        let mut changed = Vec::new();
        for b in p.blocks {
            if dry_run {
                out.released.extend(b.ips.iter().map(|ip| Released { ip: *ip, block: b.block }));
                continue;
            }
            match client.compare_and_swap(&b.key, &b.value.to_string(), b.prev_index).await? {
                Swapped::Done(index) => {
                    for ip in &b.ips {
                        info!(ip = %ip, block = %b.block, prev_index = b.prev_index, index, "ipam: released a leaked address");
                        out.released.push(Released { ip: *ip, block: b.block });
                    }
                }
                Swapped::Changed => {
                    warn!(block = %b.block, prev_index = b.prev_index, round, "ipam: block changed since it was read; reading it again");
                    out.conflicts += 1;
                    changed.push(b.block);
                }
            }
        }
        if changed.is_empty() {
            return Ok(out);
        }
        // Decide again for the changed blocks only; what was released stays released.
        pending.retain(|c| changed.contains(&c.block));
        if round == MAX_ROUNDS {
            out.kept.extend(pending.iter().map(|c| Kept { ip: c.ip, why: "its block kept changing".into() }));
            out.gave_up = changed;
        }
    }
    Ok(out)
}
