//! Typed configuration: defaults → TOML file → command-line flags.
//! Unknown keys and bad values are rejected with the key named.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::MedicError;
use crate::marathon::Policy;
use crate::probe::ProbeTarget;
use crate::workload::MacAddr;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/calico-medic/config.toml";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Docker endpoint; unset means `DOCKER_HOST`, else the local socket.
    pub docker_host: Option<String>,
    /// Network drivers whose containers are Calico workloads.
    pub calico_drivers: Vec<String>,
    pub container_interface: String,
    pub host_interface_prefix: String,
    pub gateway: Ipv4Addr,
    /// Overrides every other source of the expected MAC.
    #[serde(deserialize_with = "de_opt_mac")]
    pub expected_mac: Option<MacAddr>,
    /// Check (and report) Felix's host side of each endpoint.
    pub check_host_side: bool,
    pub listen: SocketAddr,
    #[serde(deserialize_with = "de_duration")]
    pub resync_interval: Duration,
    pub max_concurrent_checks: usize,
    /// Deadline of one pass over one container (Docker inspect, namespace, netlink,
    /// repairs, probes). A pass that overruns is abandoned and counted.
    #[serde(deserialize_with = "de_duration")]
    pub pass_timeout: Duration,
    /// Deadline of each Docker request and each netlink request inside a pass.
    #[serde(deserialize_with = "de_duration")]
    pub call_timeout: Duration,
    pub dry_run: bool,
    /// Subscribe to netlink changes in every calico namespace (and the host side)
    /// so breakage after start is repaired within milliseconds.
    pub watch: bool,
    pub backoff: BackoffConfig,
    pub probe: ProbeConfig,
    /// Calico's datastore (etcd v2); see `crate::datastore`.
    pub calico: CalicoConfig,
    pub marathon: MarathonConfig,
    pub prestart: PrestartConfig,
}

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
}

impl Default for PrestartConfig {
    fn default() -> Self {
        PrestartConfig { enabled: true, sandbox_dirs: vec!["/run/docker/netns".into()], follow: Duration::from_secs(5) }
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
        }
    }
}

impl MarathonConfig {
    /// The escalation core's settings; `dry_run` adds the daemon's own dry run.
    pub fn settings(&self, dry_run: bool) -> crate::marathon::Settings {
        crate::marathon::Settings {
            escalate_after: self.escalate_after,
            unreachable_after: self.unreachable_after,
            max_kills_per_hour: self.max_kills_per_hour,
            min_task_age: self.min_task_age,
            dry_run: self.dry_run || dry_run,
            host_breaker_share: self.host_breaker_share,
            host_breaker_min: self.host_breaker_min as usize,
        }
    }

    fn validate(&self) -> Result<(), String> {
        count("marathon.escalate_after", u64::from(self.escalate_after), 1, 1000)?;
        count("marathon.max_kills_per_hour", u64::from(self.max_kills_per_hour), 0, 1000)?;
        count("marathon.host_breaker_min", u64::from(self.host_breaker_min), 1, 100_000)?;
        let s = Duration::from_secs;
        within("marathon.unreachable_after", self.unreachable_after, s(1), s(86_400))?;
        within("marathon.min_task_age", self.min_task_age, Duration::ZERO, s(7 * 86_400))?;
        within("marathon.request_timeout", self.request_timeout, Duration::from_millis(100), s(60))?;
        if !(self.host_breaker_share > 0.0 && self.host_breaker_share <= 1.0) {
            return Err(format!(
                "marathon.host_breaker_share: {} is out of range (must be > 0 and <= 1)",
                self.host_breaker_share
            ));
        }
        for url in &self.urls {
            check_marathon_url(url).map_err(|why| format!("marathon.urls: {why}"))?;
        }
        if self.enabled && self.urls.is_empty() {
            return Err("marathon.enabled: escalation needs at least one URL in marathon.urls".into());
        }
        if self.user.is_empty() != self.password_file.is_empty() {
            return Err("marathon.password_file: basic auth needs both user and password_file".into());
        }
        if !self.user.is_empty() && !self.token_file.is_empty() {
            return Err("marathon.token_file: use either user/password_file or token_file, not both".into());
        }
        Ok(())
    }
}

/// An absolute http(s) URL with a host, without credentials, query or fragment
/// (credentials in a URL would end up in logs).
fn check_marathon_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err("credentials in a URL are not allowed (use user/password_file or token_file)".into());
    }
    if authority.is_empty() || url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} is not a base URL (scheme://host[:port][/path], no query)"));
    }
    Ok(())
}

impl Default for Config {
    fn default() -> Self {
        Config {
            docker_host: None,
            calico_drivers: vec!["calico".into()],
            container_interface: "cali0".into(),
            host_interface_prefix: "cali".into(),
            gateway: Ipv4Addr::new(169, 254, 1, 1),
            expected_mac: None,
            check_host_side: true,
            listen: "0.0.0.0:9637".parse().unwrap(),
            resync_interval: Duration::from_secs(60),
            max_concurrent_checks: 8,
            pass_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(2),
            dry_run: false,
            watch: true,
            backoff: BackoffConfig::default(),
            probe: ProbeConfig::default(),
            calico: CalicoConfig::default(),
            marathon: MarathonConfig::default(),
            prestart: PrestartConfig::default(),
        }
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

impl Config {
    /// Parses TOML text; errors name the offending key.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, MedicError> {
        let config: Config =
            toml::from_str(text).map_err(|e| MedicError::Config(format!("{origin}: {}", one_line(&e, text))))?;
        config.validate().map_err(|e| MedicError::Config(format!("{origin}: {}", with_line(&e, text))))?;
        Ok(config)
    }

    /// Loads a file. A missing file at the default path means defaults; a missing
    /// file that was asked for explicitly is an error.
    pub fn load(path: Option<&Path>) -> Result<Config, MedicError> {
        let (path, explicit) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Config::default()),
            Err(e) => Err(MedicError::Config(format!("reading {}: {e}", path.display()))),
        }
    }

    /// Every duration and count within its bounds. Errors start with the key
    /// (`key: …`) so `from_toml` can add the line it is on.
    pub fn validate(&self) -> Result<(), String> {
        if self.calico_drivers.is_empty() || self.calico_drivers.iter().any(|d| d.trim().is_empty()) {
            return Err("calico_drivers: must list at least one non-empty driver name".into());
        }
        if self.container_interface.is_empty() || self.container_interface.len() > 15 {
            return Err("container_interface: must be 1-15 characters".into());
        }
        if self.host_interface_prefix.is_empty() || self.host_interface_prefix.len() > 4 {
            return Err("host_interface_prefix: must be 1-4 characters (prefix + 11 id chars ≤ 15)".into());
        }
        count("max_concurrent_checks", self.max_concurrent_checks as u64, 1, 256)?;
        count("backoff.max_repairs", u64::from(self.backoff.max_repairs), 1, 10_000)?;
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        within("resync_interval", self.resync_interval, s(1), s(86_400))?;
        within("pass_timeout", self.pass_timeout, ms(100), s(300))?;
        within("call_timeout", self.call_timeout, ms(10), s(300))?;
        within("backoff.window", self.backoff.window, ms(1), s(86_400))?;
        within("backoff.initial", self.backoff.initial, ms(1), s(86_400))?;
        within("backoff.max", self.backoff.max, ms(1), s(86_400))?;
        within("backoff.settle", self.backoff.settle, ms(1), s(3_600))?;
        within("probe.interval", self.probe.interval, s(1), s(86_400))?;
        within("probe.timeout", self.probe.timeout, ms(1), s(30))?;
        within("calico.full_read_interval", self.calico.full_read_interval, s(1), s(86_400))?;
        within("calico.watch_timeout", self.calico.watch_timeout, s(1), s(3_600))?;
        for url in &self.calico.etcd_endpoints {
            crate::datastore::normalise_endpoint(url).map_err(|e| format!("calico.etcd_endpoints: {e}"))?;
        }
        if self.calico.etcd_cert_file.is_empty() != self.calico.etcd_key_file.is_empty() {
            return Err(
                "calico.etcd_cert_file: a client certificate needs etcd_key_file too (and the other way round)".into(),
            );
        }
        if self.calico.hostname.contains('/') {
            return Err("calico.hostname: must not contain '/' (it is part of an etcd key)".into());
        }
        within("prestart.follow", self.prestart.follow, ms(10), s(60))?;
        if self.prestart.sandbox_dirs.iter().any(|d| !d.is_absolute()) {
            return Err("prestart.sandbox_dirs: every directory must be an absolute path".into());
        }
        if self.backoff.max < self.backoff.initial {
            return Err("backoff.max: must be at least backoff.initial".into());
        }
        self.marathon.validate()
    }

    /// The per-call deadline in force: `call_timeout`, never longer than the pass's.
    pub fn call_deadline(&self) -> Duration {
        self.call_timeout.min(self.pass_timeout)
    }
}

/// A duration key within [min, max].
fn within(key: &str, value: Duration, min: Duration, max: Duration) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!("{key}: {value:?} is out of range (must be between {min:?} and {max:?})"));
    }
    Ok(())
}

/// A count key within [min, max].
fn count(key: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!("{key}: {value} is out of range (must be between {min} and {max})"));
    }
    Ok(())
}

/// `key: reason` → `line N: key `key`: reason` when the key is written in `text`
/// (a key left at its default has no line).
fn with_line(err: &str, text: &str) -> String {
    let Some((key, reason)) = err.split_once(": ") else { return err.to_string() };
    let (table, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if current == table && t.split('=').next().map(str::trim) == Some(name) && t.contains('=') {
            return format!("line {}: key `{key}`: {reason}", n + 1);
        }
    }
    format!("key `{key}`: {reason}")
}

/// One line naming the offending key (with its table) and the line number.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else { return msg };
    let offset = span.start.min(text.len());
    let line_no = text[..offset].matches('\n').count() + 1;
    let mut table = String::new();
    for line in text[..offset].lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    let line = text.lines().nth(line_no - 1).unwrap_or_default();
    let key = line.split('=').next().unwrap_or_default().trim();
    let key = match (table.is_empty(), key.is_empty() || key.starts_with('[')) {
        (_, true) => return format!("line {line_no}: {msg}"),
        (true, false) => key.to_string(),
        (false, false) => format!("{table}.{key}"),
    };
    format!("line {line_no}: key `{key}`: {msg}")
}

/// Parses `250ms`, `30s`, `5m`, `1h` (a bare number means seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (use e.g. 500ms, 30s, 5m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    // Never `from_secs_f64`: it panics on values a Duration cannot hold.
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is too long a duration"))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(i64),
        Float(f64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        Raw::Secs(n) if n >= 0 => Ok(Duration::from_secs(n as u64)),
        Raw::Secs(n) => Err(serde::de::Error::custom(format!("{n} is a negative duration"))),
        Raw::Float(f) if f.is_finite() && f >= 0.0 => Duration::try_from_secs_f64(f)
            .map_err(|_| serde::de::Error::custom(format!("{f:e} seconds is too long a duration"))),
        Raw::Float(f) => Err(serde::de::Error::custom(format!("{f} is not a valid duration"))),
    }
}

fn de_targets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ProbeTarget>, D::Error> {
    Vec::<String>::deserialize(d)?.iter().map(|s| s.parse().map_err(serde::de::Error::custom)).collect()
}

fn de_opt_mac<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(Config::from_toml("", "t").unwrap(), Config::default());
    }

    #[test]
    fn values_parse() {
        let c = Config::from_toml(
            "resync_interval = \"90s\"\nexpected_mac = \"EE:EE:EE:EE:EE:EE\"\n[backoff]\nwindow = \"1m\"\n[probe]\ntimeout = \"250ms\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.resync_interval, Duration::from_secs(90));
        assert_eq!(c.expected_mac, Some(crate::workload::CALICO_MAC));
        assert_eq!(c.backoff.window, Duration::from_secs(60));
        assert_eq!(c.probe.timeout, Duration::from_millis(250));
    }

    #[test]
    fn unknown_and_bad_keys_are_named() {
        let e = Config::from_toml("resync_intervall = \"60s\"\n", "cfg.toml").unwrap_err().to_string();
        assert!(e.contains("resync_intervall"), "{e}");
        let e = Config::from_toml("resync_interval = \"soon\"\n", "cfg.toml").unwrap_err().to_string();
        assert!(e.contains("resync_interval"), "{e}");
        let e = Config::from_toml("expected_mac = \"nope\"\n", "cfg.toml").unwrap_err().to_string();
        assert!(e.contains("expected_mac"), "{e}");
        let e = Config::from_toml("max_concurrent_checks = 0\n", "cfg.toml").unwrap_err().to_string();
        assert!(e.contains("max_concurrent_checks"), "{e}");
        let e = Config::from_toml("[probe]\nbogus = 1\n", "cfg.toml").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn out_of_range_values_name_key_and_line_and_never_panic() {
        for (text, key) in [
            ("pass_timeout = \"99999999999999999999999h\"\n", "pass_timeout"),
            ("pass_timeout = \"0s\"\n", "pass_timeout"),
            ("pass_timeout = -5\n", "pass_timeout"),
            ("pass_timeout = \"-5s\"\n", "pass_timeout"),
            ("pass_timeout = 1e300\n", "pass_timeout"),
            ("call_timeout = \"10m\"\n", "call_timeout"),
            ("resync_interval = \"1000000000000000000000s\"\n", "resync_interval"),
            ("# comment\n[backoff]\nwindow = \"0ms\"\n", "backoff.window"),
            ("[backoff]\nmax_repairs = 4294967296\n", "backoff.max_repairs"),
            ("[backoff]\nmax_repairs = 1000000\n", "backoff.max_repairs"),
            ("max_concurrent_checks = 100000000000\n", "max_concurrent_checks"),
            ("[probe]\ninterval = \"100000d\"\n", "probe.interval"),
            ("[probe]\ninterval = \"2562047788015216h\"\n", "probe.interval"),
        ] {
            let e = Config::from_toml(text, "cfg.toml").unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{text:?} → {e}");
            assert!(e.contains("line "), "{text:?} → {e}");
        }
        let e = Config::from_toml("\n\n[backoff]\nmax_repairs = 0\n", "cfg.toml").unwrap_err().to_string();
        assert!(e.contains("line 4: key `backoff.max_repairs`"), "{e}");
        let c = Config::from_toml("pass_timeout = \"1s\"\n", "cfg.toml").unwrap();
        assert_eq!(c.call_deadline(), Duration::from_secs(1), "a call never outlives its pass");
    }

    #[test]
    fn marathon_section_is_checked() {
        let c = Config::from_toml(
            "[marathon]\nenabled = true\nurls = [\"http://m1:8080\", \"https://master/marathon/\"]\nuser = \"ops\"\npassword_file = \"/etc/pw\"\nmin_task_age = \"0s\"\ndefault_policy = \"escalate\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.marathon.urls.len(), 2);
        assert_eq!(c.marathon.default_policy, Policy::Escalate);
        for (text, key) in [
            ("[marathon]\nenabled = true\n", "marathon.enabled"),
            ("[marathon]\nurls = [\"http://ops:hunter2@m1:8080\"]\n", "marathon.urls"),
            ("[marathon]\nurls = [\"m1:8080\"]\n", "marathon.urls"),
            ("[marathon]\nurls = [\"http://m1/?x=1\"]\n", "marathon.urls"),
            ("[marathon]\nuser = \"ops\"\n", "marathon.password_file"),
            ("[marathon]\nuser = \"o\"\npassword_file = \"p\"\ntoken_file = \"t\"\n", "marathon.token_file"),
            ("[marathon]\nhost_breaker_share = 0.0\n", "marathon.host_breaker_share"),
            ("[marathon]\nhost_breaker_share = 1.5\n", "marathon.host_breaker_share"),
            ("[marathon]\nescalate_after = 0\n", "marathon.escalate_after"),
            ("[marathon]\nrequest_timeout = \"10m\"\n", "marathon.request_timeout"),
            ("[marathon]\ndefault_policy = \"kill\"\n", "marathon.default_policy"),
        ] {
            let e = Config::from_toml(text, "cfg.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} → {e}");
            assert!(!e.contains("hunter2"), "no credentials in errors: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5 parsecs").is_err());
    }
    /// unit/config.toml (shipped as /etc/calico-medic/config.toml) documents every
    /// key, and every value it shows is the default.
    #[test]
    fn shipped_example_documents_every_key_with_its_default() {
        let text = include_str!("../unit/config.toml");
        assert_eq!(Config::from_toml(text, "unit/config.toml").unwrap(), Config::default());
        // Uncomment every `#key = value` line: still exactly the defaults.
        let uncommented = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut parsed = Config::from_toml(&uncommented, "unit/config.toml, uncommented").unwrap();
        // docker_host has no default to write down (unset: $DOCKER_HOST, else the local socket).
        assert_eq!(parsed.docker_host.take().as_deref(), Some("unix:///var/run/docker.sock"));
        assert_eq!(parsed, Config::default());
        // Every key the parser accepts (it lists them for an unknown key) is in the example.
        for header in ["", "[backoff]\n", "[probe]\n", "[calico]\n", "[marathon]\n", "[prestart]\n"] {
            let err = Config::from_toml(&format!("{header}zz_unknown = 1\n"), "t").unwrap_err().to_string();
            let known = err.rsplit_once("zz_unknown`").map(|(_, rest)| rest).unwrap_or_default();
            let keys: Vec<&str> = known.split('`').skip(1).step_by(2).collect();
            assert!(!keys.is_empty(), "no key list in: {err}");
            for key in keys.into_iter().filter(|k| !["backoff", "probe", "calico", "marathon", "prestart"].contains(k))
            {
                assert!(
                    uncommented.lines().any(|l| l.starts_with(&format!("{key} = "))),
                    "unit/config.toml does not document {header:?} {key}"
                );
            }
        }
    }
}
