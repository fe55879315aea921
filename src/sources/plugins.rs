//! The host's Calico as a source: every `probe.interval` each calico network driver
//! and its IPAM twin is asked `Plugin.Activate` on the socket Docker uses, and Felix its
//! liveness endpoint, under the call deadline; the answers go to `plugin_up` and
//! `felix_up`, and a change is logged. The same tick lists the containers stuck in
//! `created` and the addresses two running calico containers share (`duplicate_ip`).

use std::collections::HashMap;

use tokio::sync::watch;
use tracing::{info, warn};

use super::SourceCtx;
use crate::plugin::{activate, plugin_names, Answer};

pub async fn watch_plugins(ctx: SourceCtx, mut shutdown: watch::Receiver<bool>) {
    let mut last: HashMap<String, bool> = HashMap::new();
    let mut felix_seen: Option<bool> = None;
    let mut stuck: std::collections::HashSet<String> = std::collections::HashSet::new();
    // One crypto provider for the process (ring), as for the other HTTP clients.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().no_proxy().build().ok();
    loop {
        let medic = ctx.current.medic();
        let (names, deadline) = (plugin_names(&medic.config.calico_drivers), medic.config.call_deadline());
        let asks = names.iter().map(|n| activate(n, deadline));
        let answers = tokio::select! {
            a = futures::future::join_all(asks) => a,
            _ = shutdown.changed() => return,
        };
        for (name, answer) in names.iter().zip(answers) {
            let up = match &answer {
                Answer::Absent => continue,
                Answer::Up(took) => {
                    ctx.metrics.plugin(name, Some(took.as_secs_f64()));
                    true
                }
                Answer::Down(_) => {
                    ctx.metrics.plugin(name, None);
                    false
                }
            };
            match (last.insert(name.clone(), up), &answer) {
                (Some(true) | None, Answer::Down(why)) => {
                    warn!(
                        plugin = name.as_str(),
                        reason = why.as_str(),
                        "plugin does not answer: docker run on its networks hangs or fails"
                    )
                }
                (Some(false), Answer::Up(_)) => info!(plugin = name.as_str(), "plugin answers again"),
                _ => {}
            }
        }
        stuck_creating(&ctx, &medic, &mut stuck).await;
        match medic.refresh_local_ips().await {
            Ok(changed) if !changed.is_empty() => {
                warn_shared_ips(&medic);
                ctx.send(super::Notice::Recheck { containers: changed });
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "addresses of calico containers not listed"),
        }
        if let Some(client) = &client {
            felix(&ctx, client, &medic.config.calico.felix_liveness_url, deadline, &mut felix_seen).await;
        }
        let wait = medic.config.probe.interval;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The host's picture of shared addresses changed: a warning while any is shared (the
/// containers concerned are looked at again: their `duplicate_ip` comes or goes).
fn warn_shared_ips(medic: &crate::medic::Medic) {
    match medic.shared_ips() {
        0 => info!("no address is held by two calico containers of this host any more"),
        n => warn!(addresses = n, reason = "duplicate_ip", "an address is held by two calico containers of this host"),
    }
}

/// Felix's liveness (`FELIX_HEALTHENABLED`): reported from its first answer on.
async fn felix(
    ctx: &SourceCtx,
    client: &reqwest::Client,
    url: &str,
    deadline: std::time::Duration,
    seen: &mut Option<bool>,
) {
    if url.is_empty() {
        return;
    }
    let up = client.get(url).timeout(deadline).send().await.is_ok_and(|r| r.status().is_success());
    if seen.is_none() && !up {
        return; // health off, or no Felix here: nothing to say
    }
    ctx.metrics.felix(up);
    match (seen.replace(up), up) {
        (Some(true), false) => warn!(url, "Felix's liveness endpoint does not answer"),
        (Some(false), true) => info!(url, "Felix's liveness endpoint answers again"),
        _ => {}
    }
}

/// Containers on a calico network still `created` past `[calico] stuck_creating_after`:
/// their `docker run` hangs in network setup. Warned once per container.
async fn stuck_creating(ctx: &SourceCtx, medic: &crate::medic::Medic, warned: &mut std::collections::HashSet<String>) {
    let Ok(created) = medic.docker.created_on_calico().await else { return };
    let after = medic.config.calico.stuck_creating_after.as_secs_f64();
    let now = crate::report::unix_now();
    let stuck: Vec<&(String, String, i64)> = created.iter().filter(|(_, _, at)| now - *at as f64 >= after).collect();
    ctx.metrics.stuck_creating(stuck.len());
    for (id, name, at) in &stuck {
        if warned.insert(id.clone()) {
            let waited = now - *at as f64;
            warn!(container = %crate::workload::Escaped(name), container_id = id.as_str(), waited_s = waited, reason = "container_stuck_creating", "container on a calico network still not started: its docker run hangs in network setup (the plugin?)");
        }
    }
    warned.retain(|id| stuck.iter().any(|(s, _, _)| s == id));
}
