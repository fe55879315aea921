//! Docker access through bollard: connect with a negotiated API version (or the one
//! pinned by `DOCKER_API_VERSION`), turn `docker inspect` into a Workload, list
//! containers for resync, stream events.

mod list;

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, EventMessage};
use bollard::query_parameters::{EventsOptionsBuilder, ListNetworksOptions};
use bollard::{ClientVersion, Docker};
use futures::Stream;
use tracing::{debug, info};

use crate::error::MedicError;
use crate::workload::{marathon_identity, DefaultRoute, Endpoint, MacAddr, Workload};

pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Resolves the endpoint to use: flag, then `DOCKER_HOST`, then the local socket.
pub fn resolve_host(flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string())
}

pub struct DockerClient {
    docker: Docker,
    endpoint: String,
    calico_drivers: Vec<String>,
    /// network id → driver. Networks change rarely; a miss triggers a refresh.
    network_drivers: Mutex<HashMap<String, String>>,
    /// Deadline of each request, body included (bollard's own timeout covers only
    /// the response headers: a daemon that stalls mid-body would hang the pass).
    call_timeout: Duration,
    /// The API version was pinned by `DOCKER_API_VERSION` (else negotiated).
    api_pinned: bool,
    /// The API version in use has been logged (once, at the first successful ping).
    api_logged: AtomicBool,
}

/// Per-request deadline until `with_call_timeout` sets the configured one.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);

fn unreachable(endpoint: &str, source: BollardError) -> MedicError {
    MedicError::DockerUnreachable { endpoint: endpoint.to_string(), source }
}

/// The environment variable that pins the Engine API version (the Docker CLI's convention).
pub const API_VERSION_ENV: &str = "DOCKER_API_VERSION";

/// The oldest Engine API calico-medic speaks: Docker 1.12's. Older APIs have other
/// event and inspect shapes.
pub const MIN_API_VERSION: ClientVersion = ClientVersion { major_version: 1, minor_version: 24 };

/// Parses a pinned API version (`DOCKER_API_VERSION`'s value): `1.N` with N ≥ 24.
/// Unset or empty means "negotiate" (`Ok(None)`), as for the Docker CLI.
pub fn parse_api_version(value: Option<&str>) -> Result<Option<ClientVersion>, MedicError> {
    let Some(raw) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let bad = |why: &str| MedicError::Config(format!("{API_VERSION_ENV}={raw:?}: {why}"));
    let number = |part: &str| -> Option<usize> {
        // Digits only: no sign, no spaces, no "v" prefix; at most 4 digits.
        (!part.is_empty() && part.len() <= 4 && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let (major, minor) =
        raw.split_once('.').ok_or_else(|| bad("not an API version (expected MAJOR.MINOR, e.g. 1.25)"))?;
    let (Some(major_version), Some(minor_version)) = (number(major), number(minor)) else {
        return Err(bad("not an API version (expected MAJOR.MINOR, e.g. 1.25)"));
    };
    let version = ClientVersion { major_version, minor_version };
    if major_version != 1 || version < MIN_API_VERSION {
        return Err(bad(&format!("unsupported API version (calico-medic speaks {MIN_API_VERSION} and newer 1.x)")));
    }
    Ok(Some(version))
}

/// `/containers/json` → `/v1.25/containers/json` (scheme, authority and query kept); a path
/// that already carries a version is left alone.
pub fn versioned_uri(uri: &str, version: &ClientVersion) -> String {
    let (head, path) = match uri.find("://") {
        Some(i) => match uri[i + 3..].find('/') {
            Some(j) => uri.split_at(i + 3 + j),
            None => (uri, "/"),
        },
        None => ("", uri),
    };
    let already = path
        .strip_prefix("/v")
        .and_then(|rest| rest.split(['/', '?']).next())
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && (a.bytes().chain(b.bytes())).all(|c| c.is_ascii_digit())
        });
    if already {
        return uri.to_string();
    }
    format!("{head}/v{version}{path}")
}

fn with_version_prefix(mut req: bollard::BollardRequest, version: &ClientVersion) -> bollard::BollardRequest {
    let versioned = versioned_uri(&req.uri().to_string(), version);
    match versioned.parse() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => debug!(uri = %req.uri(), error = %e, "docker: cannot add the API version to the request"),
    }
    req
}

/// `DOCKER_API_VERSION` from the environment, validated.
fn pinned_api_version() -> Result<Option<ClientVersion>, MedicError> {
    match std::env::var(API_VERSION_ENV) {
        Ok(v) => parse_api_version(Some(&v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(MedicError::Config(format!("{API_VERSION_ENV}: not valid UTF-8")))
        }
    }
}

impl DockerClient {
    /// Connects with the API version pinned by `DOCKER_API_VERSION`, else negotiates
    /// it (the daemon's version, capped at bollard's), so old daemons work.
    /// A pinned version is checked against the daemon at once: a daemon that refuses
    /// it is a configuration error, not an unreachable daemon.
    pub async fn connect(endpoint: &str, calico_drivers: Vec<String>) -> Result<DockerClient, MedicError> {
        let pinned = pinned_api_version()?;
        let version = pinned.as_ref().unwrap_or(bollard::API_DEFAULT_VERSION);
        let docker = if let Some(path) = endpoint.strip_prefix("unix://") {
            Docker::connect_with_socket(path, 30, version)
        } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            connect_tcp(endpoint, tls_from_env().as_deref(), version)
        } else if endpoint.starts_with('/') {
            Docker::connect_with_socket(endpoint, 30, version)
        } else {
            return Err(MedicError::Config(format!(
                "docker host {endpoint:?}: use unix:///path/to/docker.sock or tcp://host:port"
            )));
        }
        .map_err(|e| unreachable(endpoint, e))?;
        // bollard 0.21 builds every request path without the `/vX.Y` prefix (fixed upstream
        // after 0.21.1, fussybeaver/bollard#737), so the daemon would answer in its own newest
        // API whatever version was negotiated or pinned. Put the prefix back on every request.
        let docker = match &pinned {
            None => {
                let docker = docker.negotiate_version().await.map_err(|e| unreachable(endpoint, e))?;
                let version = docker.client_version();
                docker.with_request_modifier(move |req| with_version_prefix(req, &version))
            }
            Some(v) => {
                let version = *v;
                let docker = docker.with_request_modifier(move |req| with_version_prefix(req, &version));
                // Docker answers 400 "client version … is too new/old" to a version it does not serve.
                match docker.version().await {
                    Ok(_) => docker,
                    Err(BollardError::DockerResponseServerError { status_code, message }) => {
                        return Err(MedicError::Config(format!(
                            "{API_VERSION_ENV}={v}: the Docker daemon at {endpoint} refuses it ({status_code} {message})"
                        )));
                    }
                    Err(e) => return Err(unreachable(endpoint, e)),
                }
            }
        };
        let client = DockerClient {
            docker,
            endpoint: endpoint.to_string(),
            calico_drivers,
            network_drivers: Mutex::new(HashMap::new()),
            call_timeout: DEFAULT_CALL_TIMEOUT,
            api_pinned: pinned.is_some(),
            api_logged: AtomicBool::new(false),
        };
        debug!(endpoint = %client.endpoint, api = %client.api_description(), "docker: client ready");
        Ok(client)
    }

    /// The Engine API version in use (negotiated or pinned), e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    /// "Engine API 1.41 (negotiated)" — the log's `api` field.
    pub fn api_description(&self) -> String {
        let how = if self.api_pinned { "pinned by DOCKER_API_VERSION" } else { "negotiated" };
        format!("Engine API {} ({how})", self.api_version())
    }

    /// Sets the per-request deadline (`call_timeout`).
    pub fn with_call_timeout(mut self, timeout: Duration) -> DockerClient {
        self.call_timeout = timeout;
        self
    }

    /// Runs one request under the deadline; a timeout names it (`docker: inspect x`).
    async fn within<T>(
        &self,
        what: impl FnOnce() -> String,
        request: impl Future<Output = Result<T, MedicError>>,
    ) -> Result<T, MedicError> {
        crate::error::within(self.call_timeout, || format!("docker: {}", what()), request).await
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn map_err(&self, e: BollardError, what: &str) -> MedicError {
        match e {
            BollardError::DockerResponseServerError { status_code: 404, .. } => {
                MedicError::ContainerNotFound(what.to_string())
            }
            e @ BollardError::DockerResponseServerError { .. } => {
                MedicError::Docker { context: what.to_string(), source: e }
            }
            other => unreachable(&self.endpoint, other),
        }
    }

    /// Pings the daemon. The first successful ping logs the API version in use (the
    /// daemon pings before it follows events; one-off commands never ping, so their
    /// stderr stays one line).
    pub async fn ping(&self) -> Result<(), MedicError> {
        let ping = async { self.docker.ping().await.map(|_| ()).map_err(|e| unreachable(&self.endpoint, e)) };
        self.within(|| "ping".into(), ping).await?;
        if !self.api_logged.swap(true, Ordering::Relaxed) {
            info!(endpoint = %self.endpoint, api = %self.api_description(), "docker: API version in use");
        }
        Ok(())
    }

    pub async fn inspect(&self, id_or_name: &str) -> Result<ContainerInspectResponse, MedicError> {
        let inspect =
            async { self.docker.inspect_container(id_or_name, None).await.map_err(|e| self.map_err(e, id_or_name)) };
        self.within(|| format!("inspect {id_or_name}"), inspect).await
    }

    /// Docker's data root (`DockerRootDir` of `/info`): where it keeps each container's record.
    pub async fn root_dir(&self) -> Result<Option<std::path::PathBuf>, MedicError> {
        let info = async { self.docker.info().await.map_err(|e| self.map_err(e, "info")) };
        let info = self.within(|| "info".into(), info).await?;
        Ok(info.docker_root_dir.filter(|d| d.starts_with('/')).map(Into::into))
    }

    async fn refresh_networks(&self) -> Result<(), MedicError> {
        let list = async {
            self.docker
                .list_networks(None::<ListNetworksOptions>)
                .await
                .map_err(|e| self.map_err(e, "listing networks"))
        };
        let nets = self.within(|| "listing networks".into(), list).await?;
        let mut map = self.network_drivers.lock().unwrap();
        map.clear();
        for n in nets {
            // By id, and by name: a created container's listing names its networks only.
            if let (Some(id), Some(driver)) = (n.id, n.driver) {
                if let Some(name) = n.name {
                    map.insert(name, driver.clone());
                }
                map.insert(id, driver);
            }
        }
        Ok(())
    }

    /// The ids of the calico networks (Docker's list, read now).
    pub async fn calico_network_ids(&self) -> Result<Vec<String>, MedicError> {
        self.refresh_networks().await?;
        let map = self.network_drivers.lock().unwrap();
        let is_id = |k: &str| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit());
        Ok(map.iter().filter(|(k, d)| is_id(k) && self.calico_drivers.contains(d)).map(|(k, _)| k.clone()).collect())
    }

    /// True when the network's driver is one of the configured calico drivers.
    pub async fn is_calico_network(&self, network_id: &str) -> Result<bool, MedicError> {
        let cached = self.network_drivers.lock().unwrap().get(network_id).cloned();
        let driver = match cached {
            Some(d) => Some(d),
            None => {
                self.refresh_networks().await?;
                self.network_drivers.lock().unwrap().get(network_id).cloned()
            }
        };
        Ok(driver.is_some_and(|d| self.calico_drivers.contains(&d)))
    }

    /// Inspects a container and returns it as a Workload, or says why it is not one.
    pub async fn workload(&self, id_or_name: &str) -> Result<Workload, MedicError> {
        let inspect = self.inspect(id_or_name).await?;
        let mut calico = Vec::new();
        for (_, settings) in inspect.network_settings.iter().flat_map(|s| s.networks.iter().flatten()) {
            if let Some(id) = &settings.network_id {
                if self.is_calico_network(id).await? {
                    calico.push(id.clone());
                }
            }
        }
        workload_from_inspect(&inspect, &|id: &str| calico.iter().any(|c| c == id))
    }

    /// Confirms the container still runs with the same init PID and start time,
    /// so a namespace opened from that PID belongs to this start of the container.
    pub async fn confirm_same_start(&self, workload: &Workload) -> Result<(), MedicError> {
        let now = self.inspect(&workload.container_id).await?;
        let state = now.state.unwrap_or_default();
        let same = state.running == Some(true)
            && state.pid == Some(workload.pid as i64)
            && state.started_at.as_deref() == Some(workload.started_at.as_str());
        if same {
            Ok(())
        } else {
            Err(MedicError::Stale(workload.container_name.clone()))
        }
    }

    /// Container and network events since `since` (Docker's `secs.nanos` form).
    pub fn events(&self, since: Option<String>) -> impl Stream<Item = Result<EventMessage, BollardError>> {
        let mut filters = HashMap::new();
        filters.insert("type", vec!["container", "network"]);
        filters.insert("event", vec!["start", "restart", "die", "destroy", "connect", "disconnect"]);
        let mut b = EventsOptionsBuilder::default().filters(&filters);
        if let Some(s) = since {
            b = b.since(&s);
        }
        self.docker.events(Some(b.build()))
    }
}

/// Where the TLS files are when `DOCKER_TLS_VERIFY` asks for TLS, as the Docker CLI
/// reads them: `DOCKER_TLS_VERIFY` set and non-empty turns TLS on; the files are
/// `ca.pem`, `cert.pem`, `key.pem` in `DOCKER_CERT_PATH`, default `~/.docker`.
pub fn tls_from_env() -> Option<std::path::PathBuf> {
    std::env::var_os("DOCKER_TLS_VERIFY").filter(|v| !v.is_empty())?;
    let dir = std::env::var_os("DOCKER_CERT_PATH").filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    Some(dir.unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| "/root".into());
        home.join(".docker")
    }))
}

/// `tcp://host:port`: plain HTTP, or with `cert_dir` TLS with a client certificate
/// and the daemon verified against `ca.pem` (bollard's rustls transport, ring
/// provider; note that bollard also trusts the system's roots besides `ca.pem`).
pub fn connect_tcp(
    endpoint: &str,
    cert_dir: Option<&std::path::Path>,
    version: &ClientVersion,
) -> Result<Docker, BollardError> {
    match cert_dir {
        None => Docker::connect_with_http(&endpoint.replacen("tcp://", "http://", 1), 30, version),
        Some(dir) => {
            // One crypto provider for the process (ring; no aws-lc). Already set: fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let addr = endpoint.replacen("http://", "tcp://", 1);
            Docker::connect_with_ssl(
                &addr,
                &dir.join("key.pem"),
                &dir.join("cert.pem"),
                &dir.join("ca.pem"),
                30,
                version,
            )
        }
    }
}

/// Pure: a `docker inspect` answer → Workload. `is_calico(network_id)` says which
/// networks are calico. Rejects host-network and `container:<id>` modes outright.
pub fn workload_from_inspect(
    inspect: &ContainerInspectResponse,
    is_calico: &dyn Fn(&str) -> bool,
) -> Result<Workload, MedicError> {
    let id = inspect.id.clone().unwrap_or_default();
    let name = inspect.name.as_deref().unwrap_or(&id).trim_start_matches('/').to_string();
    let mode = inspect.host_config.as_ref().and_then(|h| h.network_mode.clone()).unwrap_or_default();
    if mode == "host" {
        return Err(MedicError::HostNetwork(name));
    }
    if mode.starts_with("container:") {
        return Err(MedicError::SharedNetwork { container: name, mode });
    }
    let networks = inspect.network_settings.as_ref().and_then(|s| s.networks.clone()).unwrap_or_default();
    let mut endpoints = Vec::new();
    let mut names: Vec<&str> = networks.keys().map(String::as_str).collect();
    names.sort();
    // Docker's gateway network: the first by name among those that give a gateway
    // (priorities are not in inspect; `docker network connect` leaves them equal).
    let gateway_network =
        names.iter().find(|n| networks[**n].gateway.as_deref().is_some_and(|g| !g.is_empty())).map(|n| n.to_string());
    for net in &names {
        let s = &networks[*net];
        let network_id = s.network_id.clone().unwrap_or_default();
        if !is_calico(&network_id) {
            continue;
        }
        let ip: Option<Ipv4Addr> = s.ip_address.as_deref().and_then(|a| a.parse().ok());
        let (Some(ip), Some(endpoint_id)) = (ip, s.endpoint_id.clone().filter(|e| !e.is_empty())) else {
            continue; // attached but not yet (or no longer) plumbed
        };
        let default_route = match &gateway_network {
            Some(g) if g != net => DefaultRoute::OtherNetwork(g.clone()),
            _ => DefaultRoute::Owned,
        };
        endpoints.push(Endpoint {
            network: net.to_string(),
            endpoint_id,
            ip,
            prefix_len: s.ip_prefix_len.unwrap_or(32) as u8,
            docker_mac: s.mac_address.as_deref().and_then(|m| m.parse::<MacAddr>().ok()),
            default_route,
        });
    }
    if endpoints.is_empty() {
        let list = if names.is_empty() { "none".to_string() } else { names.join(", ") };
        return Err(MedicError::NotCalico { container: name, networks: list });
    }
    let state = inspect.state.clone().unwrap_or_default();
    if state.running != Some(true) || state.pid.unwrap_or(0) <= 0 {
        return Err(MedicError::NotRunning(name));
    }
    let env = inspect.config.as_ref().and_then(|c| c.env.clone()).unwrap_or_default();
    let labels = inspect.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
    let (marathon_app_id, mesos_task_id) = marathon_identity(&env, &labels);
    Ok(Workload {
        container_id: id,
        container_name: name,
        marathon_app_id,
        mesos_task_id,
        policy_label: crate::policy::policy_label(&env),
        pid: state.pid.unwrap_or(0) as u32,
        started_at: state.started_at.unwrap_or_default(),
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_with_tls_needs_the_cli_cert_files() {
        let dir = std::env::temp_dir().join(format!("calico-medic-no-certs-{}", std::process::id()));
        let v = bollard::API_DEFAULT_VERSION;
        let e = connect_tcp("tcp://127.0.0.1:2376", Some(&dir), v).expect_err("no ca.pem: refused");
        assert!(e.to_string().contains("ca.pem"), "names the missing file: {e}");
        assert!(connect_tcp("tcp://127.0.0.1:2375", None, v).is_ok(), "plain TCP needs no files");
    }

    fn v(major_version: usize, minor_version: usize) -> Option<ClientVersion> {
        Some(ClientVersion { major_version, minor_version })
    }

    #[test]
    fn api_version_unset_or_empty_means_negotiate() {
        assert_eq!(parse_api_version(None).unwrap(), None);
        assert_eq!(parse_api_version(Some("")).unwrap(), None);
        assert_eq!(parse_api_version(Some("  ")).unwrap(), None);
    }

    #[test]
    fn api_version_pins_major_minor() {
        assert_eq!(parse_api_version(Some("1.25")).unwrap(), v(1, 25));
        assert_eq!(parse_api_version(Some("1.24")).unwrap(), v(1, 24));
        assert_eq!(parse_api_version(Some("1.45")).unwrap(), v(1, 45));
        assert_eq!(parse_api_version(Some(" 1.41\n")).unwrap(), v(1, 41));
        assert_eq!(parse_api_version(Some("1.053")).unwrap(), v(1, 53));
    }

    #[test]
    fn api_version_garbage_is_a_config_error_naming_the_variable() {
        for bad in ["abc", "1", "1.", ".25", "1.25.0", "v1.25", "1,25", "1.-5", "+1.25", "1. 25", "1.99999", "1.2x"] {
            let e = parse_api_version(Some(bad)).unwrap_err();
            assert_eq!(e.code(), "config", "{bad}");
            let msg = e.to_string();
            assert!(msg.starts_with("config: DOCKER_API_VERSION="), "{bad}: {msg}");
            assert!(msg.contains("MAJOR.MINOR"), "{bad}: {msg}");
            assert_eq!(msg.lines().count(), 1, "{bad}: {msg}");
        }
    }

    #[test]
    fn requests_carry_the_api_version() {
        let v = ClientVersion { major_version: 1, minor_version: 25 };
        let unix = "unix://2f7661722f72756e2f646f636b65722e736f636b";
        assert_eq!(versioned_uri(&format!("{unix}/_ping"), &v), format!("{unix}/v1.25/_ping"));
        assert_eq!(
            versioned_uri(&format!("{unix}/containers/json?filters=%7B%7D"), &v),
            format!("{unix}/v1.25/containers/json?filters=%7B%7D")
        );
        assert_eq!(versioned_uri("http://host:2375/events?since=1.5", &v), "http://host:2375/v1.25/events?since=1.5");
        assert_eq!(versioned_uri("http://host:2375", &v), "http://host:2375/v1.25/");
        // Already versioned (a future bollard): unchanged, never doubled.
        assert_eq!(versioned_uri(&format!("{unix}/v1.41/version"), &v), format!("{unix}/v1.41/version"));
        // "/volumes" is not a version.
        assert_eq!(versioned_uri("http://h/volumes/x", &v), "http://h/v1.25/volumes/x");
    }

    #[test]
    fn api_version_below_floor_or_not_1x_is_refused() {
        for old in ["1.23", "1.12", "0.25", "2.0"] {
            let msg = parse_api_version(Some(old)).unwrap_err().to_string();
            assert!(msg.contains("DOCKER_API_VERSION") && msg.contains("1.24 and newer"), "{old}: {msg}");
        }
    }
}

/// The environment a created container will run with, from Docker's own record of it
/// (`<root>/containers/<id>/config.v2.json`, written at create, the same shape from
/// Docker 1.10 to 26). Before `start` this is the only way to learn it: `inspect`
/// waits behind start's lock on the container until the task runs. The record is
/// read up to `max_bytes` (`[limits] docker_record_bytes`): its environment is the
/// task's to fill (Docker itself refuses a request body over a few MiB for `create`).
pub fn created_env(root: &std::path::Path, id: &str, max_bytes: u64) -> std::io::Result<Vec<String>> {
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a container id"));
    }
    let file = std::fs::File::open(root.join("containers").join(id).join("config.v2.json"))?;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, max_bytes.saturating_add(1)), &mut raw)?;
    if raw.len() as u64 > max_bytes {
        let why = format!("config.v2.json of {id} is larger than [limits] docker_record_bytes = {max_bytes} bytes");
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
    }
    env_of_config_v2(&raw).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// `Config.Env` of a `config.v2.json` (absent = no environment).
fn env_of_config_v2(raw: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    #[derive(serde::Deserialize)]
    struct Record {
        #[serde(rename = "Config")]
        config: Option<RecordConfig>,
    }
    #[derive(serde::Deserialize)]
    struct RecordConfig {
        #[serde(rename = "Env")]
        env: Option<Vec<String>>,
    }
    let record: Record = serde_json::from_slice(raw)?;
    Ok(record.config.and_then(|c| c.env).unwrap_or_default())
}

#[cfg(test)]
mod created_env_tests {
    use super::{created_env, env_of_config_v2};

    const MAX: u64 = 64 << 10;

    #[test]
    fn reads_config_env_and_refuses_non_ids() {
        let raw = br#"{"ID":"x","Config":{"Hostname":"h","Env":["MARATHON_APP_LABELS=CALICO_MEDIC","MARATHON_APP_LABEL_CALICO_MEDIC=off"]},"State":{}}"#;
        assert_eq!(env_of_config_v2(raw).unwrap()[1], "MARATHON_APP_LABEL_CALICO_MEDIC=off");
        assert!(env_of_config_v2(br#"{"Config":{}}"#).unwrap().is_empty());
        assert!(created_env(std::path::Path::new("/var/lib/docker"), "../../etc/passwd", MAX).is_err());
    }

    #[test]
    fn a_record_past_its_ceiling_is_refused_unread() {
        let root = tempfile::tempdir().unwrap();
        let id = "a".repeat(64);
        let dir = root.path().join("containers").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let huge = format!(r#"{{"Config":{{"Env":["X={}"]}}}}"#, "x".repeat(MAX as usize));
        std::fs::write(dir.join("config.v2.json"), &huge).unwrap();
        let e = created_env(root.path(), &id, MAX).unwrap_err();
        assert!(e.to_string().contains("larger than [limits] docker_record_bytes = 65536 bytes"), "{e}");
        // The same record under a higher ceiling is read.
        let env = created_env(root.path(), &id, 2 * MAX).unwrap();
        assert_eq!(env[0].len(), 2 + MAX as usize);
        std::fs::write(dir.join("config.v2.json"), r#"{"Config":{"Env":["A=1"]}}"#).unwrap();
        assert_eq!(created_env(root.path(), &id, MAX).unwrap(), ["A=1"]);
    }
}
