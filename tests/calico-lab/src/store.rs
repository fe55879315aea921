//! Persistent plugin state.
//!
//! * the workload endpoints, keyed by Docker EndpointID: in etcd at Calico v2.6's keys
//!   (`--etcd-endpoint`, what the lab's setup runs; see `etcd.rs`), else in `datastore.json`
//!   (protocol-only and self-test instances). Tests and calico-medic read them as the
//!   "expected" state.
//! * `state.json` — the lab's own bookkeeping (networks and their options, IPAM pools).
//!
//! Files are rewritten atomically (temp file + rename) after every change; etcd gets one
//! PUT per new or changed endpoint and one DELETE per removed one. Everything is reloaded
//! on start, so the plugin survives a restart.

use crate::etcd::Etcd;
use crate::ipam::Pool;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One workload endpoint, as stored in `datastore.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub endpoint_id: String,
    pub network_id: String,
    /// `a.b.c.d/32`
    pub ip: String,
    /// lower case, `ee:ee:ee:ee:ee:ee` unless the user gave one
    pub mac: String,
    /// `cali<EndpointID[:11]>`
    pub host_interface: String,
    /// always `cali0`
    pub container_interface: String,
    /// Calico's profile: the network's name when Docker told it, else its id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub profile: String,
}

impl Endpoint {
    /// The address without its `/32`.
    pub fn addr(&self) -> &str {
        self.ip.split('/').next().unwrap_or(&self.ip)
    }
}

pub type Datastore = BTreeMap<String, Endpoint>;

/// A network created through the driver.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub network_id: String,
    /// The IPv4 pool (`--subnet`), if any.
    #[serde(default)]
    pub pool: Option<String>,
    /// Fault mode: CreateEndpoint answers no MAC (`-o calico-lab.omit-mac=true`).
    #[serde(default)]
    pub omit_mac: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LabState {
    #[serde(default)]
    pub networks: BTreeMap<String, Network>,
    /// Keyed by pool id (the CIDR, or Calico's fixed `CalicoPoolIPv4`).
    #[serde(default)]
    pub pools: BTreeMap<String, Pool>,
    /// The endpoint ids this plugin created (etcd's directory also holds other plugins'
    /// endpoints, e.g. Calico's real one). `None` in a state file from before this field:
    /// every endpoint found in etcd is then taken as ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<std::collections::BTreeSet<String>>,
}

pub struct Store {
    dir: PathBuf,
    etcd: Option<Etcd>,
    /// What etcd holds (as far as this plugin wrote it): saves send only the changes.
    synced: Mutex<Datastore>,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into(), etcd: None, synced: Mutex::new(Datastore::new()) }
    }

    /// Endpoints in etcd; `state.json` still in `dir`.
    pub fn with_etcd(dir: impl Into<PathBuf>, etcd: Etcd) -> Store {
        Store { dir: dir.into(), etcd: Some(etcd), synced: Mutex::new(Datastore::new()) }
    }

    /// The directory of `state.json` (and the IPAM fault switches).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The etcd the endpoints live in, if any.
    pub fn etcd(&self) -> Option<&Etcd> {
        self.etcd.as_ref()
    }

    /// Where the endpoints live, for logs.
    pub fn describe(&self) -> String {
        match &self.etcd {
            Some(e) => e.describe(),
            None => self.dir.display().to_string(),
        }
    }

    pub fn datastore_path(&self) -> PathBuf {
        self.dir.join("datastore.json")
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn load(&self) -> Result<(Datastore, LabState), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let st = load_json(&self.state_path())?;
        let Some(etcd) = &self.etcd else { return Ok((load_json(&self.datastore_path())?, st)) };
        let mut ds = etcd.load()?;
        // Only our own: the others' keys are neither ours to keep nor to delete.
        if let Some(own) = &st.endpoints {
            ds.retain(|id, _| own.contains(id));
        }
        *self.synced.lock().unwrap() = ds.clone();
        // A lab set up before the datastore moved to etcd: carry its endpoints over once.
        let old_file = self.datastore_path();
        if old_file.exists() {
            let old: Datastore = load_json(&old_file)?;
            for (id, ep) in old {
                ds.entry(id).or_insert(ep);
            }
            self.sync(&ds)?;
            let moved = old_file.with_extension("json.imported");
            std::fs::rename(&old_file, &moved).map_err(|e| format!("renaming {}: {e}", old_file.display()))?;
            crate::log!(
                "imported {} into {}; the file is now {}",
                old_file.display(),
                etcd.describe(),
                moved.display()
            );
        }
        Ok((ds, st))
    }

    pub fn save(&self, ds: &Datastore, st: &LabState) -> Result<(), String> {
        match &self.etcd {
            Some(_) => self.sync(ds)?,
            None => write_atomic(&self.datastore_path(), ds)?,
        }
        write_atomic(&self.state_path(), st)
    }

    /// Sends etcd what changed since the last sync.
    fn sync(&self, ds: &Datastore) -> Result<(), String> {
        let Some(etcd) = &self.etcd else { return Ok(()) };
        let mut synced = self.synced.lock().unwrap();
        for (id, ep) in ds {
            if synced.get(id) != Some(ep) {
                etcd.put(ep)?;
                synced.insert(id.clone(), ep.clone());
            }
        }
        let gone: Vec<String> = synced.keys().filter(|id| !ds.contains_key(*id)).cloned().collect();
        for id in gone {
            etcd.delete(&id)?;
            synced.remove(&id);
        }
        Ok(())
    }
}

fn load_json<T: DeserializeOwned + Default>(path: &Path) -> Result<T, String> {
    match std::fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(T::default()),
        Ok(b) => serde_json::from_slice(&b).map_err(|e| format!("parsing {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

fn write_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let mut body = serde_json::to_vec_pretty(value).map_err(|e| format!("encoding {}: {e}", path.display()))?;
    body.push(b'\n');
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("calico-lab-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn save_and_reload() {
        let dir = tmpdir("rt");
        let store = Store::new(&dir);
        let (mut ds, mut st) = store.load().unwrap();
        assert!(ds.is_empty() && st.networks.is_empty());
        ds.insert(
            "abc".into(),
            Endpoint {
                endpoint_id: "abc".into(),
                network_id: "net".into(),
                ip: "10.65.0.1/32".into(),
                mac: "ee:ee:ee:ee:ee:ee".into(),
                host_interface: "caliabc".into(),
                container_interface: "cali0".into(),
                profile: String::new(),
            },
        );
        st.networks.insert(
            "net".into(),
            Network { network_id: "net".into(), pool: Some("10.65.0.0/17".into()), omit_mac: true },
        );
        store.save(&ds, &st).unwrap();
        let (ds2, st2) = store.load().unwrap();
        assert_eq!(ds, ds2);
        assert_eq!(st, st2);
        // datastore.json is a plain map keyed by endpoint id
        let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(store.datastore_path()).unwrap()).unwrap();
        assert_eq!(raw["abc"]["ip"], "10.65.0.1/32");
        assert_eq!(ds2["abc"].addr(), "10.65.0.1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tmpdir("bad");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("datastore.json"), b"{not json").unwrap();
        assert!(Store::new(&dir).load().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
