//! Where Calico's datastore is: the `[calico]` section, else calicoctl's own config
//! file (`/etc/calico/calicoctl.cfg`) when it exists, else nowhere (no datastore).
//! `[calico]` validates itself here (`validate`), not in `config`.

use std::path::Path;
use std::time::Duration;

use super::calicoctl;
use super::endpoint::normalise_endpoint;
use crate::config::{within, CalicoConfig, Config};
use crate::error::MedicError;

/// A password: its `Debug` never shows it, so no log line can.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A resolved datastore configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `scheme://host:port`, no trailing slash.
    pub endpoints: Vec<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub hostname: String,
    /// Where the endpoints came from (for logs): `[calico] etcd_endpoints` or a file.
    pub origin: String,
    pub call_timeout: Duration,
    pub full_read_interval: Duration,
    pub watch_timeout: Duration,
    /// The ceiling of one answer of etcd (`[limits] datastore_answer_bytes`).
    pub max_answer_bytes: u64,
}

/// Calico's name for this host, as calico/node determines it: `NODENAME`, then
/// `HOSTNAME`, then the kernel's host name.
pub fn default_hostname() -> String {
    for var in ["NODENAME", "HOSTNAME"] {
        if let Ok(v) = std::env::var(var) {
            if !v.trim().is_empty() {
                return v.trim().to_string();
            }
        }
    }
    crate::kernel::procfs::kernel_hostname().map(|s| s.trim().to_string()).unwrap_or_default()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.trim().is_empty()).then(|| s.trim().to_string())
}

impl Settings {
    /// The datastore the configuration asks for, or `None`.
    pub fn resolve(config: &Config) -> Result<Option<Settings>, MedicError> {
        let c = &config.calico;
        let hostname = non_empty(&c.hostname).unwrap_or_else(default_hostname);
        let mut s = Settings {
            endpoints: Vec::new(),
            ca_file: non_empty(&c.etcd_ca_file),
            cert_file: non_empty(&c.etcd_cert_file),
            key_file: non_empty(&c.etcd_key_file),
            username: None,
            password: None,
            hostname,
            origin: "[calico] etcd_endpoints".into(),
            call_timeout: config.call_deadline(),
            full_read_interval: c.full_read_interval,
            watch_timeout: c.watch_timeout,
            max_answer_bytes: config.limits.datastore_answer_bytes,
        };
        if !c.etcd_endpoints.is_empty() {
            s.endpoints = c
                .etcd_endpoints
                .iter()
                .map(|e| normalise_endpoint(e))
                .collect::<Result<_, _>>()
                .map_err(|e| MedicError::Config(format!("calico.etcd_endpoints: {e}")))?;
        } else if let Some(path) = non_empty(&c.calicoctl_config).filter(|p| Path::new(p).exists()) {
            let text = std::fs::read_to_string(&path).map_err(|e| MedicError::ConfigIo {
                context: format!("calico.calicoctl_config: reading {path}"),
                source: e,
            })?;
            let Some(api) = calicoctl::parse(&text).map_err(|e| MedicError::Config(format!("{path}: {e}")))? else {
                tracing::info!(path = %path, "calicoctl config: datastoreType is not etcdv2; no datastore is read");
                return Ok(None);
            };
            s.endpoints = api.endpoints;
            // The file's TLS settings apply unless [calico] names its own.
            s.ca_file = s.ca_file.or(api.ca_file);
            if s.cert_file.is_none() {
                s.cert_file = api.cert_file;
                s.key_file = api.key_file;
            }
            s.username = api.username;
            s.password = api.password.map(Secret);
            s.origin = path;
        } else {
            return Ok(None);
        }
        if s.hostname.is_empty() || s.hostname.contains('/') {
            return Err(MedicError::Config(format!(
                "calico.hostname: {:?} cannot name this host in etcd (set [calico] hostname)",
                s.hostname
            )));
        }
        if s.cert_file.is_some() != s.key_file.is_some() {
            return Err(MedicError::Config(format!("{}: a client certificate needs a key file too", s.origin)));
        }
        Ok(Some(s))
    }
}

/// Checks `[calico]` (a `config::SectionCheck` through `check_section`): bounds, the
/// endpoints' shape, certificate and key given together, a host name fit for an etcd
/// key. Errors start with the key.
pub fn validate(c: &CalicoConfig) -> Result<(), String> {
    let s = Duration::from_secs;
    within("calico.full_read_interval", c.full_read_interval, s(1), s(86_400))?;
    within("calico.watch_timeout", c.watch_timeout, s(1), s(3_600))?;
    within("calico.stuck_creating_after", c.stuck_creating_after, s(1), s(86_400))?;
    for url in &c.etcd_endpoints {
        normalise_endpoint(url).map_err(|e| format!("calico.etcd_endpoints: {e}"))?;
    }
    if c.etcd_cert_file.is_empty() != c.etcd_key_file.is_empty() {
        return Err(
            "calico.etcd_cert_file: a client certificate needs etcd_key_file too (and the other way round)".into()
        );
    }
    if c.hostname.contains('/') {
        return Err("calico.hostname: must not contain '/' (it is part of an etcd key)".into());
    }
    Ok(())
}

/// `validate` over the whole configuration: the `config::SectionCheck` of `[calico]`.
pub fn check_section(config: &Config) -> Result<(), String> {
    validate(&config.calico)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calico_section_is_checked() {
        for (text, key) in [
            ("[calico]\netcd_endpoints = [\"etcd://x:1\"]\n", "line 2: key `calico.etcd_endpoints`"),
            ("[calico]\netcd_cert_file = \"/c.pem\"\n", "line 2: key `calico.etcd_cert_file`"),
            ("[calico]\nhostname = \"a/b\"\n", "line 2: key `calico.hostname`"),
            ("[calico]\nwatch_timeout = \"0s\"\n", "line 2: key `calico.watch_timeout`"),
            ("[calico]\nfull_read_interval = \"100000d\"\n", "line 2: key `calico.full_read_interval`"),
        ] {
            let e = Config::from_toml_checked(text, "cfg.toml", &[check_section]).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} → {e}");
        }
        let c = Config::from_toml_checked("[calico]\netcd_endpoints = [\"e:2379\"]\n", "t", &[check_section]);
        assert_eq!(c.unwrap().calico.etcd_endpoints, vec!["e:2379"]);
    }

    #[test]
    fn no_endpoints_and_no_calicoctl_file_is_no_datastore() {
        let mut c = Config::default();
        c.calico.calicoctl_config = "/nonexistent/calicoctl.cfg".into();
        assert_eq!(Settings::resolve(&c).unwrap(), None);
    }

    #[test]
    fn config_wins_over_calicoctl_file_and_the_file_is_read_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calicoctl.cfg");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: calicoApiConfig\nmetadata:\nspec:\n  datastoreType: \"etcdv2\"\n  etcdEndpoints: \"http://192.168.56.101:2379,192.168.56.103:2379\"\n  etcdCACertFile: /etc/calico/ca.pem\n",
        )
        .unwrap();
        let mut c = Config::default();
        c.calico.calicoctl_config = path.display().to_string();
        c.calico.hostname = "node-1".into();
        let s = Settings::resolve(&c).unwrap().unwrap();
        assert_eq!(s.endpoints, vec!["http://192.168.56.101:2379", "http://192.168.56.103:2379"]);
        assert_eq!(s.ca_file.as_deref(), Some("/etc/calico/ca.pem"));
        assert_eq!(s.origin, path.display().to_string());
        assert_eq!(s.hostname, "node-1");
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "Secret(***)");
        c.calico.etcd_endpoints = vec!["http://127.0.0.1:2379".into()];
        let s = Settings::resolve(&c).unwrap().unwrap();
        assert_eq!(s.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(s.ca_file, None, "the file is not read when [calico] names endpoints");
        c.calico.etcd_endpoints.clear();
        c.calico.calicoctl_config = String::new();
        assert_eq!(Settings::resolve(&c).unwrap(), None, "calicoctl_config = \"\" turns the file off");
    }
}
