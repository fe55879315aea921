//! Calico's datastore (etcd v2, as Calico v2.6 uses it): the intended state of every
//! workload endpoint of this host, read — never written: Calico owns it.
//!
//! The libnetwork plugin writes one key per endpoint,
//! `/calico/v1/host/<hostname>/workload/libnetwork/libnetwork/endpoint/<EndpointID>`, with
//! `{"state","name","active_instance_id","mac","profile_ids","ipv4_nets","ipv6_nets"}`.
//! `settings` says where etcd is (`[calico]`, checked there, or calicoctl's config, read
//! by `calicoctl`; `endpoint` normalises an endpoint for both), `etcd` talks to it,
//! `follow` keeps a `View` current (watch + periodic full read), and `findings` is
//! the pure diff of one endpoint (or the whole host) against it.

pub mod calicoctl;
pub mod endpoint;
pub mod etcd;
pub mod findings;
pub mod follow;
pub mod profiles;
pub mod settings;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::MedicError;
use crate::workload::MacAddr;

pub use endpoint::normalise_endpoint;
pub use etcd::EtcdClient;
pub use findings::{endpoint_findings, orphans, Lookup};
pub use profiles::ProfileState;
pub use settings::Settings;

/// The etcd directory of this host's libnetwork endpoints.
pub fn endpoint_dir(hostname: &str) -> String {
    format!("/calico/v1/host/{hostname}/workload/libnetwork/libnetwork/endpoint")
}

/// One workload endpoint as Calico's datastore describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    pub endpoint_id: String,
    /// Host-side interface (`cali<EndpointID[:11]>`).
    pub name: String,
    pub state: String,
    pub mac: Option<MacAddr>,
    /// `ipv4_nets`: address and prefix length.
    pub ipv4: Vec<(Ipv4Addr, u8)>,
    /// `profile_ids`: the libnetwork plugin's is the network's name.
    pub profile_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawEndpoint {
    #[serde(default)]
    state: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    ipv4_nets: Vec<String>,
    #[serde(default)]
    profile_ids: Vec<String>,
}

impl EndpointRecord {
    /// Parses the JSON value of an endpoint key. An unparsable MAC or address is an
    /// error: a record that cannot be read must not become "expected" state.
    pub fn parse(endpoint_id: &str, value: &str) -> Result<EndpointRecord, String> {
        let raw: RawEndpoint = serde_json::from_str(value).map_err(|e| format!("endpoint {endpoint_id}: {e}"))?;
        let mac = match raw.mac.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(m) => Some(m.parse().map_err(|e| format!("endpoint {endpoint_id}: mac: {e}"))?),
        };
        let mut ipv4 = Vec::with_capacity(raw.ipv4_nets.len());
        for net in &raw.ipv4_nets {
            let (addr, len) = net.split_once('/').unwrap_or((net, "32"));
            let ip = addr.parse().map_err(|_| format!("endpoint {endpoint_id}: ipv4_nets: {net:?} is not IPv4"))?;
            let len = len
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= 32)
                .ok_or_else(|| format!("endpoint {endpoint_id}: ipv4_nets: {net:?} has a bad prefix length"))?;
            ipv4.push((ip, len));
        }
        Ok(EndpointRecord {
            endpoint_id: endpoint_id.to_string(),
            name: raw.name,
            state: raw.state,
            mac,
            ipv4,
            profile_ids: raw.profile_ids,
        })
    }
}

/// What this agent last read from the datastore.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// The last request to etcd succeeded.
    pub up: bool,
    /// A full read has succeeded at least once: `endpoints` is meaningful.
    pub loaded: bool,
    pub endpoints: BTreeMap<String, EndpointRecord>,
    /// etcd index the view is current to (the next watch starts after it).
    pub index: u64,
    /// Keys under the directory that could not be parsed (reported, not used).
    pub unreadable: Vec<String>,
}

/// A datastore: its settings, a client, and the current view (shared between the
/// follower that writes it and the passes that read it).
pub struct Datastore {
    pub settings: Settings,
    pub client: EtcdClient,
    pub dir: String,
    view: RwLock<View>,
    /// The profiles this host's endpoints name, as last read (`profiles`).
    profiles: RwLock<BTreeMap<String, ProfileState>>,
}

/// What one full read found and cost.
#[derive(Debug, Clone)]
pub struct FullRead {
    pub endpoints: usize,
    pub index: u64,
    pub took: Duration,
    /// Endpoint ids whose record appeared, changed or vanished compared to the previous view.
    pub changed: Vec<String>,
}

impl Datastore {
    pub fn new(settings: Settings) -> Result<Arc<Datastore>, MedicError> {
        let client = EtcdClient::new(&settings)?;
        let dir = endpoint_dir(&settings.hostname);
        let (view, profiles) = (RwLock::new(View::default()), RwLock::new(BTreeMap::new()));
        Ok(Arc::new(Datastore { settings, client, dir, view, profiles }))
    }

    /// A copy of the current view.
    pub fn view(&self) -> View {
        self.view.read().unwrap().clone()
    }

    /// A full read has succeeded at least once.
    pub fn is_loaded(&self) -> bool {
        self.view.read().unwrap().loaded
    }

    pub fn is_up(&self) -> bool {
        self.view.read().unwrap().up
    }

    pub fn set_up(&self, up: bool) {
        self.view.write().unwrap().up = up;
    }

    /// What the datastore says about one endpoint, as far as this agent knows.
    pub fn lookup(&self, endpoint_id: &str) -> Lookup {
        let v = self.view.read().unwrap();
        if !v.loaded || !v.up {
            return Lookup::Unknown;
        }
        match v.endpoints.get(endpoint_id) {
            Some(r) => Lookup::Found(r.clone()),
            None if v.unreadable.iter().any(|k| k == endpoint_id) => Lookup::Unknown,
            None => Lookup::Missing,
        }
    }

    /// `f` over this host's endpoint records, without copying them; `None` while the
    /// view is not loaded or the datastore does not answer.
    pub fn with_endpoints<T>(&self, f: impl FnOnce(&BTreeMap<String, EndpointRecord>) -> T) -> Option<T> {
        let v = self.view.read().unwrap();
        (v.loaded && v.up).then(|| f(&v.endpoints))
    }

    /// The MAC the datastore gives the endpoint whose host interface is `name`
    /// (before start only the interface, `cali<EndpointID[:11]>`, is known).
    pub fn mac_of_interface(&self, name: &str) -> Option<MacAddr> {
        let v = self.view.read().unwrap();
        if !v.loaded || !v.up {
            return None;
        }
        let mut found = v.endpoints.values().filter(|r| r.name == name);
        match (found.next(), found.next()) {
            (Some(r), None) => r.mac,
            _ => None, // none, or ambiguous
        }
    }

    /// Reads every endpoint of this host and replaces the view.
    pub async fn full_read(&self) -> Result<FullRead, MedicError> {
        let started = Instant::now();
        let dir = self.client.get_dir(&self.dir).await?;
        let (endpoints, unreadable) = parse_nodes(&self.dir, &dir.nodes);
        for (key, why) in &unreadable {
            tracing::warn!(key = %key, reason = %why, "datastore: unreadable endpoint ignored");
        }
        let mut v = self.view.write().unwrap();
        let changed = diff_ids(&v.endpoints, &endpoints);
        let count = endpoints.len();
        *v = View {
            up: true,
            loaded: true,
            endpoints,
            index: dir.index,
            unreadable: unreadable.into_iter().map(|(k, _)| k).collect(),
        };
        Ok(FullRead { endpoints: count, index: dir.index, took: started.elapsed(), changed })
    }

    /// Applies one watch event; returns the endpoint ids it touched.
    pub fn apply(&self, event: &etcd::Event) -> Vec<String> {
        let mut v = self.view.write().unwrap();
        v.index = v.index.max(event.modified_index);
        v.up = true;
        let prefix = format!("{}/", self.dir);
        let Some(id) = event.key.strip_prefix(&prefix) else {
            // The directory itself (or a parent) was deleted: every endpoint went.
            if event.is_removal() && self.dir.starts_with(event.key.trim_end_matches('/')) {
                let gone: Vec<String> = v.endpoints.keys().cloned().collect();
                v.endpoints.clear();
                return gone;
            }
            return Vec::new();
        };
        if id.is_empty() || id.contains('/') {
            return Vec::new();
        }
        v.unreadable.retain(|k| k != id);
        if event.is_removal() {
            v.endpoints.remove(id);
        } else {
            match event.value.as_deref().map(|val| EndpointRecord::parse(id, val)) {
                Some(Ok(rec)) => {
                    v.endpoints.insert(id.to_string(), rec);
                }
                Some(Err(why)) => {
                    tracing::warn!(key = %event.key, reason = %why, "datastore: unreadable endpoint ignored");
                    v.endpoints.remove(id);
                    v.unreadable.push(id.to_string());
                }
                None => {}
            }
        }
        vec![id.to_string()]
    }
}

type Parsed = (BTreeMap<String, EndpointRecord>, Vec<(String, String)>);

/// Endpoint records from a directory listing (direct children of `dir` only).
pub fn parse_nodes(dir: &str, nodes: &[etcd::Node]) -> Parsed {
    let prefix = format!("{dir}/");
    let mut out = BTreeMap::new();
    let mut bad = Vec::new();
    for n in nodes {
        let Some(id) = n.key.strip_prefix(&prefix).filter(|id| !id.is_empty() && !id.contains('/')) else { continue };
        let Some(value) = &n.value else { continue };
        match EndpointRecord::parse(id, value) {
            Ok(r) => {
                out.insert(id.to_string(), r);
            }
            Err(why) => bad.push((id.to_string(), why)),
        }
    }
    (out, bad)
}

/// Ids present in only one map, or with different records.
fn diff_ids(old: &BTreeMap<String, EndpointRecord>, new: &BTreeMap<String, EndpointRecord>) -> Vec<String> {
    let mut out: Vec<String> = new.iter().filter(|(k, r)| old.get(*k) != Some(*r)).map(|(k, _)| k.clone()).collect();
    out.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALICO_JSON: &str = r#"{"state":"active","name":"cali0123456789a","active_instance_id":"","mac":"EE:EE:EE:EE:EE:EE","profile_ids":["calico-lab"],"ipv4_nets":["10.65.0.7/32"],"ipv6_nets":[]}"#;

    #[test]
    fn calico_endpoint_json_parses() {
        let r = EndpointRecord::parse("0123456789abcdef", CALICO_JSON).unwrap();
        assert_eq!(r.mac, Some(crate::workload::CALICO_MAC));
        assert_eq!(r.ipv4, vec![(Ipv4Addr::new(10, 65, 0, 7), 32)]);
        assert_eq!(r.name, "cali0123456789a");
        assert_eq!(r.state, "active");
        assert_eq!(r.profile_ids, vec!["calico-lab".to_string()]);
        assert!(EndpointRecord::parse("x", r#"{"mac":"nope"}"#).unwrap_err().contains("mac"));
        assert!(EndpointRecord::parse("x", r#"{"ipv4_nets":["10.0.0.1/33"]}"#).is_err());
        assert!(EndpointRecord::parse("x", "not json").is_err());
        assert_eq!(EndpointRecord::parse("x", r#"{"mac":""}"#).unwrap().mac, None);
    }

    #[test]
    fn listing_keeps_direct_children_and_names_bad_ones() {
        let dir = endpoint_dir("h");
        let node = |k: &str, v: Option<&str>| etcd::Node { key: k.to_string(), value: v.map(str::to_string) };
        let nodes = vec![
            node(&format!("{dir}/a"), Some(CALICO_JSON)),
            node(&format!("{dir}/b"), Some("{")),
            node(&format!("{dir}/c/deeper"), Some(CALICO_JSON)),
            node("/elsewhere/d", Some(CALICO_JSON)),
        ];
        let (eps, bad) = parse_nodes(&dir, &nodes);
        assert_eq!(eps.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, "b");
    }
}
