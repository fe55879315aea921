//! The sections of the configuration as plain data with their defaults. `[backoff]`,
//! `[probe]` and `[limits]` are bounds-checked by `Config::validate`; `[calico]`, `[marathon]`
//! and `[prestart]` are checked by the modules that own them
//! (`datastore::settings`, `marathon::settings`, `prestart::settings`).

use std::time::Duration;

use serde::Deserialize;

use super::parse::{de_duration, de_targets};
use crate::policy::{policy_label, Policy};
use crate::probe::ProbeTarget;

/// Where Calico's datastore is. Empty `etcd_endpoints` and no `calicoctl_config`
/// file: no datastore, behaviour as without one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalicoConfig {
    /// etcd v2 endpoints (`http(s)://host:port`), tried in order; a dead one is failed over.
    pub etcd_endpoints: Vec<String>,
    /// PEM files for TLS to etcd; empty = none (system roots for `https://`).
    pub etcd_ca_file: String,
    pub etcd_cert_file: String,
    pub etcd_key_file: String,
    /// Calico's name for this host; empty = as calico/node: NODENAME, HOSTNAME, the host name.
    pub hostname: String,
    /// calicoctl's v1 config (`calicoApiConfig`), read when `etcd_endpoints` is empty and
    /// the file exists; empty = never.
    pub calicoctl_config: String,
    /// A full read of this host's endpoints under the watch, as a safety net.
    #[serde(deserialize_with = "de_duration")]
    pub full_read_interval: Duration,
    /// How long one watch request waits for a change before it is re-issued.
    #[serde(deserialize_with = "de_duration")]
    pub watch_timeout: Duration,
    /// Felix's liveness URL (`FELIX_HEALTHENABLED`, port 9099); empty = not asked.
    pub felix_liveness_url: String,
    /// A container on a calico network still `created` this long after Docker created
    /// it is stuck in its start (network setup: a hung plugin).
    #[serde(deserialize_with = "de_duration")]
    pub stuck_creating_after: Duration,
    /// Write a network's missing profile back as the libnetwork plugin writes it (each
    /// key only where absent): the only write calico-medic ever makes to the datastore.
    pub recreate_missing_profiles: bool,
}

impl Default for CalicoConfig {
    fn default() -> Self {
        CalicoConfig {
            etcd_endpoints: Vec::new(),
            etcd_ca_file: String::new(),
            etcd_cert_file: String::new(),
            etcd_key_file: String::new(),
            hostname: String::new(),
            calicoctl_config: "/etc/calico/calicoctl.cfg".into(),
            full_read_interval: Duration::from_secs(300),
            watch_timeout: Duration::from_secs(60),
            felix_liveness_url: "http://127.0.0.1:9099/liveness".into(),
            stuck_creating_after: Duration::from_secs(60),
            recreate_missing_profiles: false,
        }
    }
}

/// Ceilings on every read from outside the agent. `links`, `addresses`, `routes`:
/// one netlink dump of a container's namespace (a task with NET_ADMIN decides how
/// large its namespace is, so a pass reads at most this much and reports
/// `namespace_too_large` for that endpoint beyond it). The `*_bytes` keys: one
/// answer of etcd, one answer of Marathon, one record of a created container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub links: usize,
    pub addresses: usize,
    pub routes: usize,
    /// One answer of etcd (a recursive read, a watch event), in bytes.
    pub datastore_answer_bytes: u64,
    /// One answer of Marathon (an app's task list or definition), in bytes.
    pub marathon_answer_bytes: u64,
    /// Docker's record of a created container (`config.v2.json`), in bytes.
    pub docker_record_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            links: 1000,
            addresses: 1000,
            routes: 10_000,
            datastore_answer_bytes: 64 << 20,
            marathon_answer_bytes: 8 << 20,
            docker_record_bytes: 8 << 20,
        }
    }
}

/// Repair before `start` (needs `watch`): follow a new calico sandbox from the
/// moment its veth moves in, and fix the MAC once Docker has configured it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrestartConfig {
    pub enabled: bool,
    /// Where the engines keep sandbox namespace files (`<exec-root>/netns`).
    pub sandbox_dirs: Vec<std::path::PathBuf>,
    /// How long a new endpoint is followed before it is left to the post-start pass.
    #[serde(deserialize_with = "de_duration")]
    pub follow: Duration,
    /// Where the daemon listens for what `calico-medic hook prestart` repaired.
    pub hook_socket: std::path::PathBuf,
    /// The prestart hook's own deadline: it exits 0 by then, whatever it was doing.
    #[serde(deserialize_with = "de_duration")]
    pub hook_deadline: Duration,
}

impl Default for PrestartConfig {
    fn default() -> Self {
        PrestartConfig {
            enabled: true,
            sandbox_dirs: vec!["/run/docker/netns".into()],
            follow: Duration::from_secs(5),
            hook_socket: "/run/calico-medic/hook.sock".into(),
            hook_deadline: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Repairs of one container allowed within `window` before it is backed off.
    pub max_repairs: u32,
    #[serde(deserialize_with = "de_duration")]
    pub window: Duration,
    /// First backoff delay; doubles on each further break, up to `max`.
    #[serde(deserialize_with = "de_duration")]
    pub initial: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub max: Duration,
    /// While backed off, one repair is allowed once the namespace has had no change
    /// for this long (needs `watch`): a flapping endpoint is fixed when it stops.
    #[serde(deserialize_with = "de_duration")]
    pub settle: Duration,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Host → workload ICMP echo after every repair and every `interval`.
    pub enabled: bool,
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Extra probes from inside each workload's namespace: `tcp:IP:PORT`, `icmp:IP`.
    #[serde(deserialize_with = "de_targets")]
    pub targets: Vec<ProbeTarget>,
}

/// `[marathon]`: per-app policy default and escalation of unrepairable tasks to
/// Marathon (off unless `enabled`). Empty strings mean "not set".
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarathonConfig {
    /// Ask Marathon to replace tasks (with policy `escalate`) that cannot be repaired.
    pub enabled: bool,
    /// Marathon base URLs (an HA set), tried in order.
    pub urls: Vec<String>,
    /// Basic auth: user name, and the file holding the password.
    pub user: String,
    pub password_file: String,
    /// DC/OS: a file holding the token sent as `Authorization: token=…`.
    pub token_file: String,
    /// PEM bundle of the CAs that sign Marathon's certificate (only these are trusted).
    pub ca_file: String,
    /// Failed repair passes (a container-side fault still there) before a kill.
    pub escalate_after: u32,
    /// Unreachable with no structural fault for this long before a kill.
    #[serde(deserialize_with = "de_duration")]
    pub unreachable_after: Duration,
    /// Kills this host may ask for within any hour.
    pub max_kills_per_hour: u32,
    /// Tasks younger than this (Docker's start time) are never killed.
    #[serde(deserialize_with = "de_duration")]
    pub min_task_age: Duration,
    /// Decide and count kills, send nothing.
    pub dry_run: bool,
    /// Host breaker: more than this share of the host's endpoints failing at once
    /// (and at least host_breaker_min of them) means the host is broken: no kills.
    pub host_breaker_share: f64,
    pub host_breaker_min: u32,
    /// Deadline of each request to one Marathon URL.
    #[serde(deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// Policy of tasks without a valid `CALICO_MEDIC` label.
    pub default_policy: Policy,
    /// The Mesos agent's `--hostname`, when Marathon names this host otherwise than
    /// by its host name, FQDN or an address of it.
    pub agent_host: String,
    /// Where the app has Marathon health checks, Marathon must see the task failing too.
    pub require_unhealthy: bool,
    /// Kills asked (time, app, task), kept across restarts for the hourly budget.
    pub state_file: String,
    /// Containers with an error of the agent's own within a minute that hold every kill back.
    pub agent_error_breaker: u32,
}

impl Default for MarathonConfig {
    fn default() -> Self {
        MarathonConfig {
            enabled: false,
            urls: Vec::new(),
            user: String::new(),
            password_file: String::new(),
            token_file: String::new(),
            ca_file: String::new(),
            escalate_after: 3,
            unreachable_after: Duration::from_secs(300),
            max_kills_per_hour: 5,
            min_task_age: Duration::from_secs(300),
            dry_run: false,
            host_breaker_share: 0.5,
            host_breaker_min: 3,
            request_timeout: Duration::from_secs(5),
            default_policy: Policy::Repair,
            agent_host: String::new(),
            require_unhealthy: true,
            state_file: "/var/lib/calico-medic/escalations.json".into(),
            agent_error_breaker: 3,
        }
    }
}

impl Policy {
    /// A task's policy from its Docker env (`KEY=VALUE` entries) under `[marathon]`:
    /// what every path that may write (a pass, a pre-start repair) asks first.
    pub fn of_task(env: &[String], marathon: &MarathonConfig) -> (Policy, Option<String>) {
        Policy::resolve(policy_label(env).as_deref(), marathon.default_policy, marathon.enabled)
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            max_repairs: 5,
            window: Duration::from_secs(10),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            settle: Duration::from_millis(300),
        }
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            enabled: true,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
            targets: Vec::new(),
        }
    }
}

/// `[ipam]`: the cluster job `calico-medic ipam run` (one instance per cluster, e.g.
/// `unit/marathon-ipam.json`); checked by `ipam::settings`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IpamConfig {
    /// How often the job checks the cluster's IPAM.
    #[serde(deserialize_with = "de_duration")]
    pub interval: Duration,
    /// Release leaks (candidates in every report of the last `min_gap` and more); off:
    /// report only.
    pub release: bool,
    /// The first and last report a release relies on are at least this far apart.
    #[serde(deserialize_with = "de_duration")]
    pub min_gap: Duration,
    /// Addresses released per run at most.
    pub release_limit: usize,
    /// Where the job keeps its reports (one JSON file per check, the newest few kept).
    pub report_dir: std::path::PathBuf,
    /// The job's own metrics port (`/metrics`, `/healthz`).
    pub listen: std::net::SocketAddr,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            interval: Duration::from_secs(300),
            release: false,
            min_gap: Duration::from_secs(900),
            release_limit: 20,
            report_dir: "/var/lib/calico-medic/ipam".into(),
            listen: "0.0.0.0:9638".parse().unwrap(),
        }
    }
}

/// Across hosts (`crate::bgp`): BIRD's BGP sessions, routes to the other hosts'
/// blocks, and task-to-task probes to other hosts' workloads, every `probe.interval`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BgpConfig {
    /// BIRD's control socket (calico/node v2.6: `/var/run/calico/bird.ctl`); missing
    /// = no BIRD on this host (said once); `""` = never asked.
    pub bird_socket: String,
    /// Probe other hosts' workloads from inside local tasks of the same network.
    pub remote_probes: bool,
    /// Remote hosts probed per round (one workload each), rotating through them.
    pub remote_hosts_per_round: usize,
}

impl Default for BgpConfig {
    fn default() -> Self {
        BgpConfig { bird_socket: "/var/run/calico/bird.ctl".into(), remote_probes: true, remote_hosts_per_round: 16 }
    }
}
