//! calico-lab: test tooling for calico-medic.
//!
//! `calico-lab plugin` runs a legacy Docker plugin daemon that stands in for Calico v2.6's
//! libnetwork plugin (NetworkDriver `calico`, IpamDriver `calico-ipam`) plus the host-side
//! part of Felix (for its own endpoints, and for those Calico's real plugin writes to the same
//! etcd directory: `felix.rs`). See tests/lab/README.md.

mod calico_ipam;
mod docker;
mod etcd;
mod felix;
mod host;
mod ipam;
mod log;
mod plugin;
mod server;
mod store;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "calico-lab", about = "Calico-on-Docker lab tooling for calico-medic tests")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the calico / calico-ipam legacy plugin sockets (runs in the foreground).
    Plugin {
        /// Directory for the plugin sockets (Docker looks in /run/docker/plugins).
        #[arg(long, default_value = "/run/docker/plugins")]
        socket_dir: PathBuf,
        /// Directory for datastore.json and state.json.
        #[arg(long, default_value = "/run/calico-lab")]
        state_dir: PathBuf,
        /// NetworkDriver name (socket `<name>.sock`).
        #[arg(long, default_value = "calico")]
        name: String,
        /// IpamDriver name (socket `<name>.sock`).
        #[arg(long, default_value = "calico-ipam")]
        ipam_name: String,
        /// Write the process id here once the sockets are bound.
        #[arg(long)]
        pidfile: Option<PathBuf>,
        /// Protocol only: no veths, no Felix host programming, no gateway sink.
        #[arg(long)]
        no_host: bool,
        /// Docker Engine socket (to look up networks missing from the plugin's state).
        #[arg(long, default_value = "/var/run/docker.sock")]
        docker_socket: PathBuf,
        /// How long the Felix stand-in waits for a new host link to get carrier (ms).
        #[arg(long, default_value_t = 10_000)]
        felix_wait_ms: u64,
        /// Store endpoints in this etcd (v2 API, `http://host:port`) at Calico's keys,
        /// instead of `datastore.json`.
        #[arg(long)]
        etcd_endpoint: Option<String>,
        /// Calico's name for this host in etcd keys (default: NODENAME, HOSTNAME, the host name).
        #[arg(long)]
        calico_hostname: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let res = rt.block_on(async {
        match cli.cmd {
            Cmd::Plugin {
                socket_dir,
                state_dir,
                name,
                ipam_name,
                pidfile,
                no_host,
                docker_socket,
                felix_wait_ms,
                etcd_endpoint,
                calico_hostname,
            } => {
                let cfg = plugin::Config {
                    host: !no_host,
                    docker_socket: (!no_host).then_some(docker_socket),
                    felix_wait: Duration::from_millis(felix_wait_ms),
                };
                let store = match etcd_endpoint {
                    Some(url) => {
                        let host = calico_hostname.unwrap_or_else(etcd::calico_hostname);
                        store::Store::with_etcd(&state_dir, etcd::Etcd::new(&url, &host)?)
                    }
                    None => store::Store::new(&state_dir),
                };
                let p = plugin::Plugin::new(cfg, store)?;
                if p.host_enabled() {
                    host::ensure_gateway_sink().await.map_err(|e| format!("setting up the 169.254.1.1 route: {e}"))?;
                    p.resync().await;
                    // The main instance (endpoints in etcd) is also Felix for other plugins'
                    // endpoints there (Calico's real plugin, network calico-lab-real).
                    if let Some(etcd) = p.etcd() {
                        felix::spawn(p.clone(), etcd);
                    }
                }
                server::serve(p, &socket_dir, &name, &ipam_name, pidfile.as_deref()).await
            }
        }
    });
    // exit without waiting for the runtime to wind down open connections
    match res {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            log!("calico-lab: error: {e}");
            std::process::exit(1);
        }
    }
}
