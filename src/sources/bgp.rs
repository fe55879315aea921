//! Across hosts, every `probe.interval`: BIRD's BGP peers (`bgp_peers`, and
//! `bgp_peer_up` 0 for each peer not Established), routes to the other hosts' blocks
//! (`remote_blocks_unrouted`, one warning per block that loses its route), and a round
//! of task-to-task probes to other hosts' workloads (`remote_hosts`, and
//! `remote_host_unreachable` for failing hosts). Metrics and log only: no local repair
//! is ever attempted for a remote fault.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use super::SourceCtx;
use crate::bgp::{self, HostResult, RemoteState};
use crate::datastore::Datastore;
use crate::medic::Medic;

/// What the previous round saw, for logging changes only.
#[derive(Default)]
struct Seen {
    bird: Option<bool>,
    down_peers: BTreeSet<String>,
    unrouted: BTreeSet<String>,
    failing: BTreeSet<String>,
    /// Local tasks that got no answer where another local task did (logged once each).
    silent_sources: BTreeSet<String>,
}

/// At most this many silent sources are remembered; past it the set starts again.
const SILENT_SOURCES_KEPT: usize = 1024;

pub async fn watch_bgp(ctx: SourceCtx, mut shutdown: watch::Receiver<bool>) {
    let m = ctx.metrics.enable_bgp();
    let (mut seen, mut remote) = (Seen::default(), RemoteState::default());
    loop {
        let medic = ctx.current.medic();
        bird_round(&medic, m, &mut seen).await;
        if let Some(ds) = medic.datastore().filter(|ds| ds.is_up()).cloned() {
            routes_round(&medic, &ds, m, &mut seen, &mut remote).await;
        }
        // Until the datastore's first read, look again soon rather than a whole interval later.
        let waiting = medic.datastore().is_some_and(|ds| !ds.is_loaded());
        let wait = if waiting { std::time::Duration::from_millis(250) } else { medic.config.probe.interval };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn bird_round(medic: &Medic, m: &crate::metrics::BgpMetrics, seen: &mut Seen) {
    let socket = &medic.config.bgp.bird_socket;
    if socket.is_empty() {
        return;
    }
    match bgp::show_protocols(socket.as_ref(), medic.config.call_deadline(), 1 << 20).await {
        Ok(None) => {
            if seen.bird != Some(false) {
                info!(socket = socket.as_str(), "bgp: no BIRD here (no control socket): BGP not watched");
            }
            seen.bird = Some(false);
        }
        Ok(Some(rows)) => {
            seen.bird = Some(true);
            let peers = bgp::peers(&rows);
            let rows: Vec<(String, String, bool)> =
                peers.iter().map(|p| (p.name.clone(), p.bgp_state.clone(), p.established())).collect();
            m.peers(&rows);
            let down: BTreeSet<String> = peers.iter().filter(|p| !p.established()).map(|p| p.name.clone()).collect();
            for p in peers.iter().filter(|p| !p.established() && !seen.down_peers.contains(&p.name)) {
                warn!(peer = p.name.as_str(), address = ?p.address, state = p.bgp_state.as_str(), reason = "bgp_peer_down", "bgp: peer not established");
            }
            for name in seen.down_peers.difference(&down) {
                info!(peer = name.as_str(), "bgp: peer established again");
            }
            seen.down_peers = down;
        }
        Err(e) => warn!(error = %e, "bgp: BIRD's control socket did not answer"),
    }
}

async fn routes_round(
    medic: &Medic,
    ds: &Arc<Datastore>,
    m: &crate::metrics::BgpMetrics,
    seen: &mut Seen,
    remote: &mut RemoteState,
) {
    let topo = match bgp::read_topology(&ds.client).await {
        Ok(t) => t,
        Err(e) => return warn!(error = %e, "bgp: the datastore's blocks not read"),
    };
    let this = ds.settings.hostname.as_str();
    match bgp::host_routes(medic.config.call_deadline()).await {
        Ok((routes, links)) => {
            let found = bgp::unrouted(this, &topo, &routes, &links);
            m.unrouted(found.len());
            let now: BTreeSet<String> = found.iter().map(|u| format!("{} {}", u.host, u.block)).collect();
            for u in found.iter().filter(|u| !seen.unrouted.contains(&format!("{} {}", u.host, u.block))) {
                warn!(host = u.host.as_str(), block = %u.block, detail = u.why.as_str(), reason = "remote_block_unrouted", "bgp: another host's block has no route here");
            }
            for gone in seen.unrouted.difference(&now) {
                info!(block = gone.as_str(), "bgp: another host's block is routed again");
            }
            seen.unrouted = now;
        }
        Err(e) => warn!(error = %e, "bgp: the host's routes not read"),
    }
    if medic.config.bgp.remote_probes {
        probe_round(medic, ds, &topo, m, seen, remote).await;
    }
}

async fn probe_round(
    medic: &Medic,
    ds: &Datastore,
    topo: &bgp::Topology,
    m: &crate::metrics::BgpMetrics,
    seen: &mut Seen,
    remote: &mut RemoteState,
) {
    let hosts: Vec<String> = topo.remote_hosts(&ds.settings.hostname).cloned().collect();
    remote.retain(&hosts);
    let (chosen, cursor) = bgp::remote::pick(&hosts, remote.cursor, medic.config.bgp.remote_hosts_per_round);
    remote.cursor = cursor;
    let mut rtts = Vec::new();
    // Running local tasks per network, listed once per round: the hosts of a round
    // mostly share a network.
    let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for host in chosen {
        let Ok(endpoints) = bgp::remote_endpoints(&ds.client, &host).await else { continue };
        if endpoints.is_empty() {
            continue;
        }
        let ep = &endpoints[remote.next_endpoint(&host, endpoints.len())];
        let (Some(network), Some((target, _))) = (ep.profile_ids.first(), ep.ipv4.first()) else { continue };
        let Some(candidates) = local_sources(medic, network, &mut listed).await else { continue };
        // None: no local task on that network could probe.
        if let Some(result) = probe_host(medic, remote, network, candidates, *target, seen).await {
            rtts.extend(result.rtt);
            remote.record(&host, result);
        }
    }
    let (reachable, _) = remote.counts();
    let failing = remote.failing();
    m.remote(reachable, &failing, &rtts);
    let now: BTreeSet<String> = failing.iter().map(|h| h.to_string()).collect();
    for h in now.difference(&seen.failing) {
        let last = remote.last.get(h);
        let (target, sources) = (last.map(|r| r.target), last.map(|r| r.silent_sources.join(",")));
        warn!(host = h.as_str(), target = ?target, sources = sources.as_deref().unwrap_or(""), reason = "remote_host_unreachable", "bgp: another host's workload does not answer a local task");
    }
    for h in seen.failing.difference(&now) {
        info!(host = h.as_str(), "bgp: another host's workload answers again");
    }
    seen.failing = now;
}

/// The candidate sources for a probe on `network` (the profile's name): its running
/// local tasks, from Docker once per round (`listed`). `None`: not listed (said at
/// debug level; the next host on that network asks again).
async fn local_sources<'a>(
    medic: &Medic,
    network: &str,
    listed: &'a mut BTreeMap<String, Vec<String>>,
) -> Option<&'a [String]> {
    if !listed.contains_key(network) {
        match medic.docker.running_on_network(network).await {
            Ok(c) => {
                listed.insert(network.to_string(), c);
            }
            Err(e) => {
                tracing::debug!(network, error = %e, "bgp: local tasks not listed");
                return None;
            }
        }
    }
    listed.get(network).map(Vec::as_slice)
}

/// One probe of another host's workload: from the network's first local source, and
/// on no answer from a second one (`RemoteState::sources`), so that one task dropping
/// its own traffic cannot make that host look unreachable. `None`: no source probed.
async fn probe_host(
    medic: &Medic,
    remote: &mut RemoteState,
    network: &str,
    candidates: &[String],
    target: std::net::Ipv4Addr,
    seen: &mut Seen,
) -> Option<HostResult> {
    let mut result = HostResult { target, rtt: None, silent_sources: Vec::new() };
    let mut probed = false;
    for id in remote.sources(network, candidates) {
        let short: String = id.chars().take(12).collect();
        let answer = match bgp::probe_from(medic, &id, target, medic.config.probe.timeout).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(container = short.as_str(), error = %e, "bgp: remote probe not run from this task");
                continue;
            }
        };
        probed = true;
        if let Some(rtt) = answer {
            result.rtt = Some(rtt.as_secs_f64());
            seen.silent_sources.remove(&short);
            break;
        }
        result.silent_sources.push(short);
    }
    if result.rtt.is_some() {
        note_silent_sources(&result, seen);
    }
    probed.then_some(result)
}

/// Logs, once each, local tasks that got no answer from a workload that another local
/// task reached: their own namespace drops the traffic, not the far host.
fn note_silent_sources(result: &HostResult, seen: &mut Seen) {
    if seen.silent_sources.len() >= SILENT_SOURCES_KEPT {
        seen.silent_sources.clear();
    }
    for s in &result.silent_sources {
        if seen.silent_sources.insert(s.clone()) {
            info!(container = s.as_str(), target = %result.target, reason = "remote_probe_source_silent", "bgp: a local task got no answer where another local task did: not counted against the far host");
        }
    }
}
