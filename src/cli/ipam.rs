//! `calico-medic ipam check|release|run`: Calico's IPAM across the cluster (one
//! process for the whole cluster, not one per host).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::ipam_job::connect;
use super::{ConfigArg, Status};
use crate::config::parse_duration;
use crate::error::MedicError;
use crate::ipam::release::common_candidates;
use crate::ipam::{store, Report};

#[derive(Debug, Subcommand)]
pub enum IpamCmd {
    /// Leaked, doubly used and stray addresses of every IP pool, from Calico's etcd.
    ///
    /// Exit status: 0 nothing to report, 1 findings (leak candidates, addresses in use without an
    /// allocation, an address held twice or on two hosts, a broken block, unreadable keys), 2 could not
    /// check (etcd unreachable, no datastore configured, bad config).
    Check(CheckArgs),
    /// Release leak candidates present in every report given, re-checked live just before each write.
    ///
    /// Exit status: 0 done (or, without --yes, the dry run shown), 1 a block kept changing and was
    /// left alone, 2 could not release (reports too close together or unreadable, etcd unreachable).
    Release(ReleaseArgs),
    /// The cluster job: check every `[ipam] interval`, keep the reports, release where
    /// `[ipam] release = true`, serve metrics on `[ipam] listen`.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report (JSON, with the etcd index it was taken at) to this file.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// A report of `ipam check --output` (or --json); give two or more.
    #[arg(long = "from-report", value_name = "FILE", required = true)]
    pub reports: Vec<PathBuf>,
    /// The first and last report must be at least this far apart (as kube-controllers' LeakGracePeriod).
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub min_gap: Duration,
    /// Write the releases (without it: a dry run that only shows them).
    #[arg(long)]
    pub yes: bool,
    /// Release at most this many addresses (default: `[ipam] release_limit`).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only candidates in this pool (or any network, a.b.c.d/n).
    #[arg(long, value_name = "CIDR")]
    pub pool: Option<crate::ipam::Cidr>,
    /// Print the outcome as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Override `[ipam] listen` (address:port for /metrics, /healthz, /readyz).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub config: ConfigArg,
}

impl IpamCmd {
    pub async fn exec(self) -> Result<Status, MedicError> {
        match self {
            IpamCmd::Check(a) => a.exec().await,
            IpamCmd::Release(a) => a.exec().await,
            IpamCmd::Run(a) => super::ipam_job::run(a.config.config.as_deref(), a.listen).await,
        }
    }
}

/// The report as text: one line per pool, then one per finding.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    for p in &r.pools {
        out.push_str(&format!(
            "pool {}: {} addresses, {} blocks, {} allocated, {} in use, {} leak candidates, {} in use unallocated, {} double, {} with a handle\n",
            p.pool, p.size, p.blocks, p.allocated, p.in_use, p.leak_candidate, p.unallocated_in_use, p.double, p.handled
        ));
    }
    for c in &r.leak_candidates {
        let host = c.host.as_deref().unwrap_or("-");
        out.push_str(&format!("leak candidate {} (block {}, ordinal {}, affinity {host})\n", c.ip, c.block, c.ordinal));
    }
    for u in &r.unallocated_in_use {
        out.push_str(&format!("in use, not allocated {} (host {}, endpoint {})\n", u.ip, u.host, u.endpoint));
    }
    for s in &r.shared {
        let who: Vec<String> = s.holders.iter().map(|h| format!("{}:{}", h.host, h.endpoint)).collect();
        let what = if s.hosts > 1 { "held on two hosts" } else { "held twice" };
        out.push_str(&format!("{what} {} ({})\n", s.ip, who.join(", ")));
    }
    for b in &r.inconsistent_blocks {
        out.push_str(&format!("block inconsistent {}: {}\n", b.block, b.problems.join("; ")));
    }
    for k in &r.unreadable {
        out.push_str(&format!("unreadable {k}\n"));
    }
    out.push_str(&format!("etcd index {}\n", r.etcd_index));
    out
}

impl CheckArgs {
    async fn exec(self) -> Result<Status, MedicError> {
        let (_, client) = connect(self.config.config.as_deref())?;
        let report = store::check(&client).await?;
        if let Some(path) = &self.output {
            store::save_report(path, &report)?;
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report).expect("reports serialize"));
        } else {
            print!("{}", render(&report));
        }
        Ok(if report.has_findings() { Status::Faulty } else { Status::Healthy })
    }
}

impl ReleaseArgs {
    async fn exec(self) -> Result<Status, MedicError> {
        let (config, client) = connect(self.config.config.as_deref())?;
        let reports = self.reports.iter().map(|p| store::load_report(p)).collect::<Result<Vec<_>, _>>()?;
        let candidates =
            common_candidates(&reports, self.min_gap).map_err(|e| MedicError::Config(format!("ipam release: {e}")))?;
        let mut candidates = candidates;
        if let Some(pool) = self.pool {
            candidates.retain(|c| c.block.within(&pool));
        }
        let limit = self.limit.unwrap_or(config.ipam.release_limit);
        let out = store::release(&client, &candidates, limit, !self.yes).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&out).expect("outcomes serialize"));
        } else {
            let verb = if out.dry_run { "would release" } else { "released" };
            for r in &out.released {
                println!("{verb} {} (block {})", r.ip, r.block);
            }
            for k in &out.kept {
                println!("kept {}: {}", k.ip, k.why);
            }
            println!(
                "{} candidate(s) in every report; {} {verb}, {} kept, {} conflict(s){}",
                candidates.len(),
                out.released.len(),
                out.kept.len(),
                out.conflicts,
                if out.dry_run { "; dry run: --yes writes" } else { "" }
            );
        }
        Ok(if out.gave_up.is_empty() { Status::Healthy } else { Status::Faulty })
    }
}
