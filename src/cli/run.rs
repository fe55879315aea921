use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{build_medic, fail_status, load_config, ConfigArg, Status};
use crate::agent::Agent;
use crate::metrics::Metrics;

#[derive(Debug, Args)]
pub struct RunCmd {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Report what would be repaired without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Override `listen` (address:port for /metrics, /healthz, /readyz).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

impl RunCmd {
    pub async fn exec(self, docker_host: Option<&str>) -> Status {
        let load = || {
            let mut c = load_config(self.config.config.as_deref(), docker_host)?;
            if let Some(l) = self.listen {
                c.listen = l;
            }
            Ok::<_, crate::error::MedicError>(c)
        };
        let config = match load() {
            Ok(c) => c,
            Err(e) => return fail_status(&e.to_string()),
        };
        let dry_run = self.dry_run || config.dry_run;
        let listener = match crate::http::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => return fail_status(&e.to_string()),
        };
        // Docker may be down at boot: wait for it rather than exiting.
        let medic = loop {
            match build_medic(config.clone()).await {
                Ok(m) => break m,
                Err(crate::error::MedicError::DockerUnreachable { endpoint, reason }) => {
                    warn!("cannot reach Docker at {endpoint}: {reason}; retrying in 2s");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => return fail_status(&e.to_string()),
            }
        };
        info!(
            "calico-medic {} starting: docker={} listen={} dry_run={dry_run}",
            env!("CARGO_PKG_VERSION"),
            medic.docker.endpoint(),
            config.listen
        );
        let metrics = Arc::new(Metrics::new());
        let agent = Agent::new(medic, metrics, dry_run);
        let (stop_tx, stop_rx) = watch::channel(false);

        let workers = tokio::spawn(agent.clone().run_workers(stop_rx.clone()));
        let follower = tokio::spawn(agent.clone().follow_docker(stop_rx.clone()));
        let resync = tokio::spawn(agent.clone().resync_loop(stop_rx.clone()));
        let probes = tokio::spawn(agent.clone().probe_loop(stop_rx.clone()));
        let http = tokio::spawn(crate::http::serve(listener, agent.clone(), stop_rx.clone()));

        let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
        else {
            return fail_status("cannot install signal handlers");
        };
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut tick =
            tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)).max(Duration::from_millis(100)));
        let mut notified_ready = false;
        let mut ready_poll = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM: finishing in-flight repairs"); break; }
                _ = int.recv() => { info!("SIGINT: finishing in-flight repairs"); break; }
                _ = hup.recv() => {
                    match load() {
                        Ok(new) if new.listen != config.listen => {
                            warn!("SIGHUP: listen changed to {}; that takes a restart, keeping {}", new.listen, config.listen);
                        }
                        Ok(new) => match build_medic(new.clone()).await {
                            Ok(m) => {
                                agent.replace_medic(m, self.dry_run || new.dry_run);
                                info!("SIGHUP: configuration reloaded");
                            }
                            Err(e) => error!("SIGHUP: keeping the old configuration: {e}"),
                        },
                        Err(e) => error!("SIGHUP: keeping the old configuration: {e}"),
                    }
                }
                _ = tick.tick(), if watchdog.is_some() => {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                _ = ready_poll.tick(), if !notified_ready => {
                    if agent.is_ready() {
                        notified_ready = true;
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                        info!("ready: Docker connected and first resync done");
                    }
                }
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        let _ = stop_tx.send(true);
        let drain = async {
            let _ = workers.await;
            let _ = follower.await;
            let _ = resync.await;
            let _ = probes.await;
            let _ = http.await;
        };
        if tokio::time::timeout(Duration::from_secs(4), drain).await.is_err() {
            warn!("shutdown: in-flight work did not finish within 4s; exiting anyway");
        }
        Status::Healthy
    }
}
