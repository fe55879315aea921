//! `calico-medic ipam run`: the cluster job (one instance per cluster, e.g. the
//! Marathon app `unit/marathon-ipam.json`). Every `[ipam] interval` it checks, sets
//! `calico_medic_ipam_*`, writes the report to `[ipam] report_dir`, and with
//! `[ipam] release = true` releases the candidates present in every report of the
//! last `min_gap` (and the newest one before it), re-checked live. Serves
//! /metrics, /healthz and /readyz on `[ipam] listen`; SIGTERM or SIGINT stop it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{load_config, Status};
use crate::config::{Config, IpamConfig};
use crate::datastore::{EtcdClient, Settings};
use crate::error::MedicError;
use crate::http::{Health, HttpState};
use crate::ipam::release::common_candidates;
use crate::ipam::{store, Report};
use crate::metrics::{IpamMetrics, Metrics};

/// Report files kept in `report_dir` besides those the release window needs.
const SPARE_REPORTS: usize = 2;

pub async fn run(config_path: Option<&Path>, listen: Option<SocketAddr>) -> Result<Status, MedicError> {
    let (config, client) = connect(config_path)?;
    let ipam = config.ipam.clone();
    let listen = listen.unwrap_or(ipam.listen);
    let install = |kind| signal(kind).map_err(|e| MedicError::netns_io("installing signal handlers", e));
    let (mut term, mut int) = (install(SignalKind::terminate())?, install(SignalKind::interrupt())?);
    let metrics = Arc::new(Metrics::ipam_job());
    let health = Arc::new(Health::default());
    health.set_pass_timeout(config.call_deadline() * 10);
    health.follower_beat();
    let listener = crate::http::bind(listen).await?;
    let (stop, stop_rx) = watch::channel(false);
    let server = tokio::spawn(crate::http::serve(
        listener,
        HttpState { metrics: metrics.clone(), health: health.clone() },
        stop_rx,
    ));
    if let Err(e) = std::fs::create_dir_all(&ipam.report_dir) {
        warn!(dir = %ipam.report_dir.display(), error = %e, "ipam: the report directory cannot be created; reports are kept in memory only");
    }
    info!(listen = %listen, interval = ?ipam.interval, release = ipam.release, min_gap = ?ipam.min_gap, etcd = %client.current(), "ipam job started");
    let mut reports: VecDeque<Report> = VecDeque::new();
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => health.follower_beat(),
            _ = tokio::time::sleep_until(next) => {
                next += ipam.interval;
                health.work_added();
                round(&client, &ipam, metrics.enable_ipam(), &mut reports).await;
                health.work_done(true);
                health.set_docker_connected(true);
                health.set_resynced();
            }
        }
    }
    info!("ipam job stopping");
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    Ok(Status::Healthy)
}

/// The config and a client for the datastore it names (an error without one).
pub(crate) fn connect(path: Option<&Path>) -> Result<(Config, EtcdClient), MedicError> {
    let config = load_config(path, None)?;
    let settings = Settings::resolve(&config)?.ok_or_else(|| {
        MedicError::Config(
            "ipam: no datastore configured ([calico] etcd_endpoints, or calicoctl's config with etcdv2)".into(),
        )
    })?;
    Ok((config, EtcdClient::new(&settings)?))
}

/// One check (and, when configured, one release).
async fn round(client: &EtcdClient, ipam: &IpamConfig, m: &IpamMetrics, reports: &mut VecDeque<Report>) {
    let report = match store::check(client).await {
        Ok(r) => r,
        Err(e) => {
            m.check_failed();
            warn!(error = %e, "ipam: check failed");
            return;
        }
    };
    let counts: Vec<(String, u64, [usize; 5])> = report
        .pools
        .iter()
        .map(|p| (p.pool.clone(), p.size, [p.allocated, p.in_use, p.leak_candidate, p.unallocated_in_use, p.double]))
        .collect();
    m.set_pools(&counts, report.taken_at);
    info!(
        etcd_index = report.etcd_index,
        leak_candidates = report.leak_candidates.len(),
        unallocated_in_use = report.unallocated_in_use.len(),
        shared = report.shared.len(),
        inconsistent_blocks = report.inconsistent_blocks.len(),
        "ipam: checked"
    );
    let file = ipam.report_dir.join(format!("ipam-{:.0}.json", report.taken_at * 1000.0));
    if let Err(e) = store::save_report(&file, &report) {
        warn!(error = %e, "ipam: report not written");
    }
    reports.push_back(report);
    let window = window(reports, ipam.min_gap);
    while reports.len() > window + SPARE_REPORTS {
        reports.pop_front();
    }
    prune(&ipam.report_dir, reports.len());
    if !ipam.release || window < 2 {
        return;
    }
    let used: Vec<Report> = reports.iter().skip(reports.len() - window).cloned().collect();
    let Ok(candidates) = common_candidates(&used, ipam.min_gap) else { return };
    match store::release(client, &candidates, ipam.release_limit, false).await {
        Ok(out) => m.released(out.released.len(), out.conflicts),
        Err(e) => warn!(error = %e, "ipam: release failed"),
    }
}

/// How many of the newest reports a release uses: those of the last `min_gap` and the
/// newest one older than that (0 while no report is that old).
fn window(reports: &VecDeque<Report>, min_gap: Duration) -> usize {
    let Some(newest) = reports.back().map(|r| r.taken_at) else { return 0 };
    match reports.iter().rposition(|r| newest - r.taken_at >= min_gap.as_secs_f64()) {
        Some(i) => reports.len() - i,
        None => 0,
    }
}

/// Keeps the newest `keep` report files of the job in `dir`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("ipam-") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    for old in files.iter().take(files.len().saturating_sub(keep)) {
        let _ = std::fs::remove_file(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64) -> Report {
        Report {
            version: 1,
            taken_at: t,
            etcd_index: 1,
            pools: vec![],
            leak_candidates: vec![],
            unallocated_in_use: vec![],
            shared: vec![],
            inconsistent_blocks: vec![],
            handled: vec![],
            unreadable: vec![],
        }
    }

    #[test]
    fn the_release_window_reaches_back_min_gap() {
        let r: VecDeque<Report> = [0.0, 300.0, 600.0, 900.0, 1200.0].into_iter().map(at).collect();
        assert_eq!(window(&r, Duration::from_secs(900)), 4, "900 s back from 1200: from 300 on");
        assert_eq!(window(&r, Duration::from_secs(1201)), 0, "no report is old enough yet");
        assert_eq!(window(&r, Duration::from_secs(1)), 2);
    }
}
