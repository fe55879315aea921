//! The daemon's life: start (signals first, bind, wait for Docker, spawn the agent's
//! tasks), serve until SIGTERM/SIGINT, reload on SIGHUP (apply every key or name
//! the ones that need a restart; a bad file keeps the running config), shutdown
//! (drain in-flight repairs, bounded).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::agent::Agent;
use crate::config::Config;
use crate::datastore::{Datastore, Settings};
use crate::docker::{resolve_host, DockerClient};
use crate::error::MedicError;
use crate::http::{Health, HttpState};
use crate::medic::Medic;
use crate::metrics::Metrics;

/// How long shutdown waits for in-flight passes (systemd's stop timeout is longer).
const DRAIN: Duration = Duration::from_secs(4);

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys that changed but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Keys whose change a running daemon cannot apply.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.listen != new.listen {
        keys.push("listen");
    }
    if old.calico != new.calico {
        keys.push("calico");
    }
    // The datastore's client is built once, with its answer ceiling.
    if old.limits.datastore_answer_bytes != new.limits.datastore_answer_bytes {
        keys.push("limits.datastore_answer_bytes");
    }
    keys
}

/// Connects to Docker (negotiated API version, within `pass_timeout`) and builds
/// the pipeline with the configured per-call deadline.
pub async fn build_medic(config: Config) -> Result<Medic, MedicError> {
    let endpoint = resolve_host(config.docker_host.as_deref());
    let connect = DockerClient::connect(&endpoint, config.calico_drivers.clone());
    let docker = tokio::time::timeout(config.pass_timeout, connect)
        .await
        .map_err(|_| MedicError::timeout(format!("connecting to Docker at {endpoint}"), config.pass_timeout))??;
    let docker = Arc::new(docker.with_call_timeout(config.call_deadline()));
    Medic::new(docker, config)
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Result<Signals, MedicError> {
        let install = |kind| signal(kind).map_err(|e| MedicError::netns_io("installing signal handlers", e));
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
        })
    }
}

/// The datastore the configuration names (not read yet), or `None`.
pub fn configured_datastore(config: &Config) -> Result<Option<Arc<Datastore>>, MedicError> {
    Settings::resolve(config)?.map(Datastore::new).transpose()
}

pub struct Daemon {
    agent: Agent,
    /// Followed for the daemon's whole life (a `[calico]` change takes a restart).
    datastore: Option<Arc<Datastore>>,
    config: Config,
    /// `--dry-run` on the command line (the config file's `dry_run` adds to it).
    dry_run_flag: bool,
    signals: Signals,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Starts everything; waits for Docker if it is not up yet (`None`: stopped by a
    /// signal while waiting). Signal handlers come first, so no signal kills it early.
    pub async fn start(config: Config, dry_run_flag: bool, listen: SocketAddr) -> Result<Option<Daemon>, MedicError> {
        let mut signals = Signals::install()?;
        let listener = crate::http::bind(listen).await?;
        let datastore = configured_datastore(&config)?;
        // Docker may be down at boot: wait for it rather than exiting.
        let medic = loop {
            match build_medic(config.clone()).await {
                Ok(m) => break m,
                Err(e @ (MedicError::DockerUnreachable { .. } | MedicError::Timeout { .. })) => {
                    warn!(error = %e, retry_ms = 2000, "docker: not reachable yet; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = signals.term.recv() => return Ok(None),
                        _ = signals.int.recv() => return Ok(None),
                        _ = signals.hup.recv() => info!("SIGHUP while waiting for Docker: the configuration is re-read once it is up"),
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let medic = medic.with_datastore(datastore.clone());
        let dry_run = dry_run_flag || config.dry_run;
        if let Some(ds) = &datastore {
            let s = &ds.settings;
            info!(
                url = %s.endpoints.join(","),
                origin = %s.origin,
                host = ?s.hostname,
                key = %ds.dir,
                "datastore: etcd configured"
            );
        }
        info!(
            version = env!("CARGO_PKG_VERSION"),
            docker = %medic.docker.endpoint(),
            listen = %listen,
            dry_run,
            "calico-medic starting"
        );
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::default());
        let (stop, stop_rx) = watch::channel(false);
        let (agent, mut tasks) =
            Agent::start(medic, metrics.clone(), health.clone(), dry_run, datastore.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(crate::http::serve(listener, HttpState { metrics, health }, stop_rx)));
        Ok(Some(Daemon { agent, datastore, config, dry_run_flag, signals, stop, tasks }))
    }

    /// Applies a new configuration: a new Docker client and pipeline, and every key
    /// the agent holds (dry_run, watch, max_concurrent_checks); names the keys that
    /// need a restart. On error the running configuration stays.
    pub async fn reload(&mut self, new: Config) -> Result<Reloaded, MedicError> {
        let needs_restart = restart_only_changes(&self.config, &new);
        let mut applied = new.clone();
        // Keys that need a restart keep their running value.
        applied.listen = self.config.listen;
        applied.calico = self.config.calico.clone();
        applied.limits.datastore_answer_bytes = self.config.limits.datastore_answer_bytes;
        let medic = build_medic(applied.clone()).await?.with_datastore(self.datastore.clone());
        self.agent.reload(medic, self.dry_run_flag || applied.dry_run);
        self.config = applied;
        Ok(Reloaded { needs_restart })
    }

    /// Serves until SIGTERM/SIGINT; SIGHUP re-reads the configuration with `load`.
    pub async fn run(&mut self, load: impl Fn() -> Result<Config, MedicError>) {
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut tick =
            tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)).max(Duration::from_millis(100)));
        let mut notified_ready = false;
        let mut unhealthy = false;
        let mut ready_poll = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = self.signals.term.recv() => { info!("SIGTERM: finishing in-flight repairs"); break; }
                _ = self.signals.int.recv() => { info!("SIGINT: finishing in-flight repairs"); break; }
                _ = self.signals.hup.recv() => match load() {
                    Ok(new) => match self.reload(new).await {
                        Ok(r) => {
                            for key in &r.needs_restart {
                                warn!(
                                    key = %key,
                                    "SIGHUP: setting changed; that takes a restart, keeping the running value"
                                );
                            }
                            info!("SIGHUP: configuration reloaded");
                        }
                        Err(e) => error!(error = %e, "SIGHUP: keeping the old configuration"),
                    },
                    Err(e) => error!(error = %e, "SIGHUP: keeping the old configuration"),
                },
                _ = tick.tick(), if watchdog.is_some() => {
                    // Fed only while work makes progress: a wedged agent gets restarted.
                    match self.agent.liveness() {
                        Ok(()) => {
                            if std::mem::take(&mut unhealthy) {
                                info!("liveness: making progress again; feeding the watchdog");
                            }
                            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                        }
                        Err(why) => {
                            if !std::mem::replace(&mut unhealthy, true) {
                                error!(reason = %why, "liveness: no longer feeding the systemd watchdog");
                            }
                        }
                    }
                }
                _ = ready_poll.tick(), if !notified_ready => {
                    if self.agent.is_ready() {
                        notified_ready = true;
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                        info!("ready: Docker connected and first resync done");
                    }
                }
            }
        }
    }

    /// Stops taking work, waits (bounded) for in-flight passes, closes every socket.
    pub async fn shutdown(self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        let _ = self.stop.send(true);
        let drain = futures::future::join_all(self.tasks);
        if tokio::time::timeout(DRAIN, drain).await.is_err() {
            warn!(
                drain_ms = DRAIN.as_millis() as u64,
                "shutdown: in-flight work did not finish in time; exiting anyway"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listen_and_the_datastore_need_a_restart() {
        let old = Config::default();
        let mut new = old.clone();
        new.watch = false;
        new.max_concurrent_checks = 2;
        new.dry_run = true;
        new.resync_interval = Duration::from_secs(5);
        new.limits.marathon_answer_bytes = 1 << 20;
        new.limits.docker_record_bytes = 1 << 20;
        assert!(restart_only_changes(&old, &new).is_empty());
        new.listen = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(restart_only_changes(&old, &new), vec!["listen"]);
        new.calico.etcd_endpoints = vec!["http://127.0.0.1:2379".into()];
        assert_eq!(restart_only_changes(&old, &new), vec!["listen", "calico"]);
        new.limits.datastore_answer_bytes = 1 << 20;
        assert_eq!(restart_only_changes(&old, &new), vec!["listen", "calico", "limits.datastore_answer_bytes"]);
    }
}
