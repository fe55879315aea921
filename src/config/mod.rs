//! Typed configuration: defaults → TOML file → command-line flags, as plain data.
//! This module parses and checks bounds; unknown keys and bad values are rejected
//! with the key (and its line) named. The `[calico]`, `[marathon]` and `[prestart]`
//! sections are checked by the modules that own them, handed in as `SectionCheck`s
//! (`cli::load_config` loads through all of them), so `config` imports none of them.

mod parse;
mod sections;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::MedicError;
use crate::workload::MacAddr;
pub use parse::{count, parse_duration, within};
use parse::{de_duration, de_opt_mac, one_line, with_line};
pub use sections::{
    BackoffConfig, BgpConfig, CalicoConfig, IpamConfig, LimitsConfig, MarathonConfig, PrestartConfig, ProbeConfig,
};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/calico-medic/config.toml";

/// A check of one section by the module that owns it. Errors start with the key
/// (`key: …`), as `Config::validate`'s do, so the loader can add the line it is on.
pub type SectionCheck = fn(&Config) -> Result<(), String>;

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
    pub limits: LimitsConfig,
    /// The cluster IPAM job (`calico-medic ipam`); see `crate::ipam`.
    pub ipam: IpamConfig,
    /// Across hosts: BGP, routes to remote blocks, remote probes; see `crate::bgp`.
    pub bgp: BgpConfig,
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
            limits: LimitsConfig::default(),
            ipam: IpamConfig::default(),
            bgp: BgpConfig::default(),
        }
    }
}

impl Config {
    /// Parses TOML text and checks the bounds `validate` knows; errors name the
    /// offending key. The sections other modules own are not checked here: see
    /// `from_toml_checked`.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, MedicError> {
        Config::from_toml_checked(text, origin, &[])
    }

    /// `from_toml`, then each of `sections` in order; the first error wins.
    pub fn from_toml_checked(text: &str, origin: &str, sections: &[SectionCheck]) -> Result<Config, MedicError> {
        let config: Config = toml::from_str(text).map_err(|e| MedicError::ConfigSyntax {
            origin: origin.to_string(),
            detail: one_line(&e, text),
            source: Box::new(e),
        })?;
        config
            .validate()
            .and_then(|()| sections.iter().try_for_each(|check| check(&config)))
            .map_err(|e| MedicError::Config(format!("{origin}: {}", with_line(&e, text))))?;
        Ok(config)
    }

    /// Loads a file (bounds only, as `from_toml`). A missing file at the default
    /// path means defaults; a missing file that was asked for explicitly is an error.
    pub fn load(path: Option<&Path>) -> Result<Config, MedicError> {
        Config::load_checked(path, &[])
    }

    /// `load`, with each of `sections` checked as in `from_toml_checked`.
    pub fn load_checked(path: Option<&Path>, sections: &[SectionCheck]) -> Result<Config, MedicError> {
        let (path, explicit) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml_checked(&text, &path.display().to_string(), sections),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Config::default()),
            Err(e) => Err(MedicError::ConfigIo { context: format!("reading {}", path.display()), source: e }),
        }
    }

    /// The top-level keys, `[backoff]`, `[probe]` and `[limits]`: every duration and count within
    /// its bounds. Errors start with the key (`key: …`) so the loader can add the
    /// line it is on.
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
        count("limits.links", self.limits.links as u64, 10, 10_000_000)?;
        count("limits.addresses", self.limits.addresses as u64, 10, 10_000_000)?;
        count("limits.routes", self.limits.routes as u64, 10, 10_000_000)?;
        let (kib64, gib4) = (64 << 10, 4 << 30);
        count("limits.datastore_answer_bytes", self.limits.datastore_answer_bytes, kib64, gib4)?;
        count("limits.marathon_answer_bytes", self.limits.marathon_answer_bytes, kib64, gib4)?;
        count("limits.docker_record_bytes", self.limits.docker_record_bytes, kib64, gib4)?;
        count("bgp.remote_hosts_per_round", self.bgp.remote_hosts_per_round as u64, 1, 1_000)?;
        if self.backoff.max < self.backoff.initial {
            return Err("backoff.max: must be at least backoff.initial".into());
        }
        Ok(())
    }

    /// The ceilings of one dump of a container's namespace (`[limits]`).
    pub fn dump_limits(&self) -> crate::netlink::DumpLimits {
        let l = &self.limits;
        crate::netlink::DumpLimits { links: l.links, addresses: l.addresses, routes: l.routes }
    }

    /// The per-call deadline in force: `call_timeout`, never longer than the pass's.
    pub fn call_deadline(&self) -> Duration {
        self.call_timeout.min(self.pass_timeout)
    }
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
            ("[limits]\nroutes = 5\n", "limits.routes"),
            ("[limits]\ndatastore_answer_bytes = 65535\n", "limits.datastore_answer_bytes"),
            ("[limits]\ndatastore_answer_bytes = 4294967297\n", "limits.datastore_answer_bytes"),
            ("[limits]\nmarathon_answer_bytes = 0\n", "limits.marathon_answer_bytes"),
            ("[limits]\nmarathon_answer_bytes = 8589934592\n", "limits.marathon_answer_bytes"),
            ("[limits]\ndocker_record_bytes = 1024\n", "limits.docker_record_bytes"),
            ("[limits]\ndocker_record_bytes = -1\n", "limits.docker_record_bytes"),
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
        let text = include_str!("../../unit/config.toml");
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
        for header in [
            "",
            "[backoff]\n",
            "[probe]\n",
            "[calico]\n",
            "[marathon]\n",
            "[prestart]\n",
            "[limits]\n",
            "[ipam]\n",
            "[bgp]\n",
        ] {
            let err = Config::from_toml(&format!("{header}zz_unknown = 1\n"), "t").unwrap_err().to_string();
            let known = err.rsplit_once("zz_unknown`").map(|(_, rest)| rest).unwrap_or_default();
            let keys: Vec<&str> = known.split('`').skip(1).step_by(2).collect();
            assert!(!keys.is_empty(), "no key list in: {err}");
            let sections = ["backoff", "probe", "calico", "marathon", "prestart", "limits", "ipam", "bgp"];
            for key in keys.into_iter().filter(|k| !sections.contains(k)) {
                assert!(
                    uncommented.lines().any(|l| l.starts_with(&format!("{key} = "))),
                    "unit/config.toml does not document {header:?} {key}"
                );
            }
        }
    }
}
