//! The NetworkDriver (`calico`) and IpamDriver (`calico-ipam`) handlers, after
//! projectcalico/libnetwork-plugin v2.6 (`driver/network_driver.go`, `driver/ipam_driver.go`).
//!
//! Deliberate differences from Calico (Docker 20.10 and lab needs):
//! * capability scope `local` (Calico says `global`, which Docker 20.10 refuses without a
//!   cluster store);
//! * no IPv6 gateway in the Join answer;
//! * endpoints (and, like Calico, each network's profile) go to etcd at Calico's keys when
//!   `--etcd-endpoint` is given (the lab's setup does), else to `datastore.json`; pools need no
//!   pre-configuration; with etcd, addresses are allocated there as libcalico-go does
//!   (`calico_ipam.rs`), else round robin in `state.json` (tests/lab/README.md compares them);
//! * generic network options `calico-lab.*` are accepted (`calico-lab.omit-mac=true` is the
//!   seed fault mode); any other option is refused like Calico does;
//! * DeleteEndpoint/Leave of an unknown endpoint succeed (logged), so teardown never wedges.

use crate::calico_ipam::CalicoIpam;
use crate::host;
use crate::ipam::{self, Pool};
use crate::log;
use crate::store::{Datastore, Endpoint, LabState, Network, Store};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const FIXED_MAC: &str = "EE:EE:EE:EE:EE:EE";
pub const IF_PREFIX: &str = "cali";
pub const OMIT_MAC_OPTION: &str = "calico-lab.omit-mac";
const GENERIC_OPTION: &str = "com.docker.network.generic";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Network,
    Ipam,
}

impl Kind {
    pub fn implements(self) -> &'static str {
        match self {
            Kind::Network => "NetworkDriver",
            Kind::Ipam => "IpamDriver",
        }
    }
}

/// An error answered as `{"Err": "..."}` with an HTTP status.
#[derive(Debug)]
pub struct PluginError {
    pub status: u16,
    pub msg: String,
}

impl PluginError {
    fn bad_request(msg: impl Into<String>) -> Self {
        PluginError { status: 400, msg: msg.into() }
    }
    fn not_found(msg: impl Into<String>) -> Self {
        PluginError { status: 404, msg: msg.into() }
    }
    fn failed(msg: impl Into<String>) -> Self {
        PluginError { status: 500, msg: msg.into() }
    }
}

type Res = Result<Value, PluginError>;

pub struct Config {
    /// Do the host-side kernel work (veths, Felix stand-in). Off for protocol-only tests.
    pub host: bool,
    /// Docker's socket, to look up networks the plugin has no record of (None: don't).
    pub docker_socket: Option<std::path::PathBuf>,
    /// How long Felix waits for a new host link to get carrier.
    pub felix_wait: Duration,
}

struct Inner {
    ds: Datastore,
    st: LabState,
}

pub struct Plugin {
    cfg: Config,
    store: Store,
    inner: Mutex<Inner>,
    /// The main instance (endpoints in etcd) allocates in etcd as libcalico-go does.
    calico_ipam: Option<CalicoIpam>,
    /// Pools whose stored endpoints' addresses were entered in etcd's blocks (once per process).
    seeded: Mutex<std::collections::BTreeSet<String>>,
}

/// Mark the addresses of stored endpoints that fall in `pool` as allocated.
fn seed_pool(pool: &mut Pool, ds: &Datastore) {
    for ep in ds.values() {
        if let Ok(ip) = ep.addr().parse::<Ipv4Addr>() {
            if pool.contains(ip) {
                pool.allocated.insert(ip);
            }
        }
    }
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, PluginError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { &b"{}"[..] } else { body };
    serde_json::from_slice(body).map_err(|e| PluginError::bad_request(format!("malformed request: {e}")))
}

fn short(id: &str) -> &str {
    match id.char_indices().nth(11) {
        Some((i, _)) => &id[..i],
        None => id,
    }
}

pub fn host_interface(endpoint_id: &str) -> String {
    format!("{IF_PREFIX}{}", short(endpoint_id))
}

pub fn temp_interface(endpoint_id: &str) -> String {
    format!("temp{}", short(endpoint_id))
}

/// Parse a MAC in any case into lower-case colon form.
fn normalise_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2 || u8::from_str_radix(p, 16).is_err()) {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IpData {
    address_space: String,
    pool: String,
    gateway: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateNetworkReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    options: Option<Map<String, Value>>,
    #[serde(rename = "IPv4Data")]
    ipv4_data: Option<Vec<IpData>>,
    #[serde(rename = "IPv6Data")]
    ipv6_data: Option<Vec<IpData>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IdsReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Iface {
    address: String,
    #[serde(rename = "AddressIPv6")]
    address_ipv6: String,
    mac_address: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateEndpointReq {
    #[serde(rename = "NetworkID")]
    network_id: String,
    #[serde(rename = "EndpointID")]
    endpoint_id: String,
    interface: Option<Iface>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RequestPoolReq {
    pool: String,
    sub_pool: String,
    options: Option<Map<String, Value>>,
    #[serde(rename = "V6")]
    v6: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RequestAddressReq {
    #[serde(rename = "PoolID")]
    pool_id: String,
    address: String,
    options: Option<Map<String, Value>>,
}

impl Plugin {
    pub fn new(cfg: Config, store: Store) -> Result<Arc<Plugin>, String> {
        let (ds, mut st) = store.load()?;
        // Addresses in use by stored endpoints stay allocated even if state.json was lost.
        for pool in st.pools.values_mut() {
            seed_pool(pool, &ds);
        }
        log!(
            "loaded {} endpoint(s), {} network(s), {} pool(s) from {}",
            ds.len(),
            st.networks.len(),
            st.pools.len(),
            store.describe()
        );
        let calico_ipam = store.etcd().map(|e| CalicoIpam::new(e.clone(), store.dir()));
        Ok(Arc::new(Plugin { cfg, store, inner: Mutex::new(Inner { ds, st }), calico_ipam, seeded: Mutex::default() }))
    }

    pub fn host_enabled(&self) -> bool {
        self.cfg.host
    }

    /// The etcd this instance keeps its endpoints in (the main instance), if any.
    pub fn etcd(&self) -> Option<crate::etcd::Etcd> {
        self.store.etcd().cloned()
    }

    /// Whether this plugin created the endpoint (the etcd directory holds others' too).
    pub fn owns(&self, endpoint_id: &str) -> bool {
        self.inner.lock().unwrap().ds.contains_key(endpoint_id)
    }

    /// Felix resync on start: re-program the host side of stored endpoints whose host
    /// link still exists.
    pub async fn resync(self: &Arc<Self>) {
        if !self.cfg.host {
            return;
        }
        let eps: Vec<Endpoint> = self.inner.lock().unwrap().ds.values().cloned().collect();
        for ep in eps {
            if host::link_exists(&ep.host_interface) {
                if let Err(e) = host::felix_program(&ep.host_interface, ep.addr(), &ep.mac, Duration::ZERO).await {
                    log!("felix resync of {}: {e}", ep.endpoint_id);
                }
            }
        }
    }

    /// Mutate the state under the lock and persist it.
    fn update<T>(&self, f: impl FnOnce(&mut Inner) -> Result<T, PluginError>) -> Result<T, PluginError> {
        let mut g = self.inner.lock().unwrap();
        let out = f(&mut g)?;
        g.st.endpoints = Some(g.ds.keys().cloned().collect());
        self.store.save(&g.ds, &g.st).map_err(PluginError::failed)?;
        Ok(out)
    }

    pub async fn handle(self: &Arc<Self>, kind: Kind, method: &str, body: &[u8]) -> Res {
        match (kind, method) {
            (_, "Plugin.Activate") => Ok(json!({ "Implements": [kind.implements()] })),
            (Kind::Network, "NetworkDriver.GetCapabilities") => {
                Ok(json!({"Scope": "local", "ConnectivityScope": "local"}))
            }
            (Kind::Network, "NetworkDriver.CreateNetwork") => self.create_network(parse(body)?),
            (Kind::Network, "NetworkDriver.DeleteNetwork") => {
                let req: IdsReq = parse(body)?;
                self.update(|i| {
                    i.st.networks.remove(&req.network_id);
                    Ok(json!({}))
                })
            }
            (Kind::Network, "NetworkDriver.CreateEndpoint") => self.create_endpoint(parse(body)?).await,
            (Kind::Network, "NetworkDriver.EndpointOperInfo") => {
                let _: IdsReq = parse(body)?;
                Ok(json!({"Value": {}}))
            }
            (Kind::Network, "NetworkDriver.DeleteEndpoint") => self.delete_endpoint(parse(body)?).await,
            (Kind::Network, "NetworkDriver.Join") => self.join(parse(body)?).await,
            (Kind::Network, "NetworkDriver.Leave") => self.leave(parse(body)?).await,
            (Kind::Network, "NetworkDriver.AllocateNetwork") => {
                let _: Value = parse(body)?;
                Ok(json!({"Options": null}))
            }
            (
                Kind::Network,
                "NetworkDriver.DiscoverNew"
                | "NetworkDriver.DiscoverDelete"
                | "NetworkDriver.ProgramExternalConnectivity"
                | "NetworkDriver.RevokeExternalConnectivity"
                | "NetworkDriver.FreeNetwork",
            ) => {
                let _: Value = parse(body)?;
                Ok(json!({}))
            }
            (Kind::Ipam, "IpamDriver.GetCapabilities") => {
                Ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}))
            }
            (Kind::Ipam, "IpamDriver.GetDefaultAddressSpaces") => Ok(json!({
                "LocalDefaultAddressSpace": "CalicoLocalAddressSpace",
                "GlobalDefaultAddressSpace": "CalicoGlobalAddressSpace",
            })),
            (Kind::Ipam, "IpamDriver.RequestPool") => self.request_pool(parse(body)?),
            (Kind::Ipam, "IpamDriver.ReleasePool") => {
                let _: Value = parse(body)?;
                Ok(json!({}))
            }
            (Kind::Ipam, "IpamDriver.RequestAddress") => self.request_address(parse(body)?),
            (Kind::Ipam, "IpamDriver.ReleaseAddress") => self.release_address(parse(body)?),
            _ => Err(PluginError::not_found(format!("{} does not implement {method:?}", kind.implements()))),
        }
    }

    fn create_network(&self, req: CreateNetworkReq) -> Res {
        if req.network_id.is_empty() {
            return Err(PluginError::bad_request("NetworkID is missing"));
        }
        let mut omit_mac = false;
        // Like Calico: refuse every option (--internal, -o …) except enable_ipv6, plus the
        // lab's own generic options.
        for (k, v) in req.options.unwrap_or_default() {
            if k == "com.docker.network.enable_ipv6" {
                continue;
            }
            if k == GENERIC_OPTION {
                if let Value::Object(m) = &v {
                    let mut unknown: Vec<&String> = Vec::new();
                    for (gk, gv) in m {
                        if gk == OMIT_MAC_OPTION {
                            omit_mac = match gv.as_str().map(str::to_ascii_lowercase).as_deref() {
                                Some("true" | "1" | "yes") => true,
                                Some("false" | "0" | "no" | "") => false,
                                _ => {
                                    return Err(PluginError::failed(format!(
                                        "{OMIT_MAC_OPTION} must be true or false, got {gv}"
                                    )))
                                }
                            };
                        } else if !gk.starts_with("calico-lab.") {
                            unknown.push(gk);
                        }
                    }
                    if !unknown.is_empty() {
                        unknown.sort();
                        let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
                        let f = if names.len() > 1 { "flags" } else { "flag" };
                        return Err(PluginError::failed(format!(
                            "Calico driver does not support the {f} {}.",
                            names.join(", ")
                        )));
                    }
                    continue;
                }
            }
            let set = match &v {
                Value::Bool(b) => *b,
                Value::Object(m) => !m.is_empty(),
                _ => true,
            };
            if set {
                let name = match v {
                    Value::Bool(_) => format!("--{}", k.trim_start_matches("com.docker.network.")),
                    _ => k.clone(),
                };
                return Err(PluginError::failed(format!("Calico driver does not support the flag {name}.")));
            }
        }
        let mut pool = None;
        for d in req.ipv4_data.unwrap_or_default() {
            if d.gateway != "0.0.0.0/0" {
                return Err(PluginError::failed(
                    "Non-Calico IPAM driver is used. Note: Docker before 1.12.3 is unsupported",
                ));
            }
            if pool.is_none() && !d.pool.is_empty() && d.pool != "0.0.0.0/0" {
                pool = Some(d.pool.clone());
            }
            let _ = d.address_space;
        }
        if let Some(d) = req.ipv6_data.unwrap_or_default().first() {
            if d.address_space != "CalicoGlobalAddressSpace" {
                return Err(PluginError::failed("Non-Calico IPAM driver is used"));
            }
        }
        let net = Network { network_id: req.network_id.clone(), pool, omit_mac };
        self.update(|i| {
            i.st.networks.insert(req.network_id.clone(), net);
            Ok(json!({}))
        })
    }

    /// A network this plugin has no record of: read its options from Docker (as Calico's
    /// CreateEndpoint inspects the network) and remember it.
    async fn learn_network(&self, network_id: &str) {
        let Some(sock) = &self.cfg.docker_socket else { return };
        if network_id.is_empty() || self.inner.lock().unwrap().st.networks.contains_key(network_id) {
            return;
        }
        match crate::docker::network_options(sock, network_id).await {
            Ok(opts) => {
                let omit_mac = opts
                    .get(OMIT_MAC_OPTION)
                    .and_then(Value::as_str)
                    .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes"));
                log!("learnt network {network_id} from dockerd (omit_mac={omit_mac})");
                let net = Network { network_id: network_id.to_string(), pool: None, omit_mac };
                let _ = self.update(|i| {
                    i.st.networks.entry(network_id.to_string()).or_insert(net);
                    Ok(())
                });
            }
            Err(e) => log!("network {network_id} is unknown and dockerd could not tell: {e}"),
        }
    }

    async fn create_endpoint(&self, req: CreateEndpointReq) -> Res {
        if req.endpoint_id.is_empty() {
            return Err(PluginError::bad_request("EndpointID is missing"));
        }
        self.learn_network(&req.network_id).await;
        let iface = req.interface.unwrap_or_default();
        if iface.address.is_empty() && iface.address_ipv6.is_empty() {
            return Err(PluginError::failed("No address assigned for endpoint"));
        }
        if iface.address.is_empty() {
            return Err(PluginError::failed("calico-lab supports IPv4 endpoints only"));
        }
        // Ignore the prefix length: Calico always uses /32.
        let addr: Ipv4Addr = iface
            .address
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| PluginError::failed(format!("Parsing {} as CIDR failed", iface.address)))?;
        let user_mac = !iface.mac_address.is_empty();
        let mac = if user_mac {
            normalise_mac(&iface.mac_address)
                .ok_or_else(|| PluginError::failed(format!("Error parsing MAC address {:?}", iface.mac_address)))?
        } else {
            FIXED_MAC.to_ascii_lowercase()
        };
        // Like Calico: the endpoint's profile is the network's name (Docker knows it).
        let profile = match &self.cfg.docker_socket {
            Some(sock) => crate::docker::network_name(sock, &req.network_id).await.unwrap_or_else(|e| {
                log!("CreateEndpoint: network {} name unknown ({e}); profile = its id", req.network_id);
                String::new()
            }),
            None => String::new(),
        };
        // Like Calico (libcalico-go's Profiles().Create): the network's profile, once.
        if let (false, Some(etcd)) = (profile.is_empty(), self.store.etcd()) {
            if let Err(e) = etcd.ensure_profile(&profile) {
                log!("CreateEndpoint: profile {profile}: {e} (endpoint created anyway)");
            }
        }
        if let Some(ms) = self.calico_ipam.as_ref().map(|ci| ci.faults().endpoint_delay(addr)).filter(|ms| *ms > 0) {
            log!("CreateEndpoint {}: endpoint write delayed {ms} ms (ipam-faults delay-endpoint)", req.endpoint_id);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let ep = Endpoint {
            endpoint_id: req.endpoint_id.clone(),
            network_id: req.network_id.clone(),
            ip: format!("{addr}/32"),
            mac,
            host_interface: host_interface(&req.endpoint_id),
            container_interface: format!("{IF_PREFIX}0"),
            profile,
        };
        self.update(|i| {
            let omit = i.st.networks.get(&req.network_id).map(|n| n.omit_mac).unwrap_or(false);
            i.ds.insert(req.endpoint_id.clone(), ep);
            Ok(if user_mac {
                // user MAC: an empty string tells Docker to keep the user's MAC (Calico's answer)
                json!({"Interface": {"MacAddress": ""}})
            } else if omit {
                // omit-MAC fault mode: no MAC at all, Docker leaves a random one.
                json!({"Interface": {}})
            } else {
                json!({"Interface": {"MacAddress": FIXED_MAC}})
            })
        })
    }

    async fn delete_endpoint(&self, req: IdsReq) -> Res {
        let removed = self.update(|i| Ok(i.ds.remove(&req.endpoint_id)))?;
        if removed.is_none() {
            log!("DeleteEndpoint: endpoint {} not in the datastore (ignored)", req.endpoint_id);
        }
        if self.cfg.host {
            host::delete_link(&host_interface(&req.endpoint_id)).await.map_err(PluginError::failed)?;
        }
        Ok(json!({}))
    }

    async fn join(self: &Arc<Self>, req: IdsReq) -> Res {
        if req.endpoint_id.is_empty() {
            return Err(PluginError::bad_request("EndpointID is missing"));
        }
        let host_if = host_interface(&req.endpoint_id);
        let temp_if = temp_interface(&req.endpoint_id);
        if self.cfg.host {
            host::create_veth(&host_if, &temp_if).await.map_err(|e| {
                PluginError::failed(format!(
                    "Veth creation error, hostInterfaceName={host_if}, tempInterfaceName={temp_if}: {e}"
                ))
            })?;
            let ep = self.inner.lock().unwrap().ds.get(&req.endpoint_id).cloned();
            match ep {
                Some(ep) => {
                    let wait = self.cfg.felix_wait;
                    tokio::spawn(async move {
                        if let Err(e) = host::felix_program(&ep.host_interface, ep.addr(), &ep.mac, wait).await {
                            log!("felix: endpoint {}: {e}", ep.endpoint_id);
                        }
                    });
                }
                None => log!("Join: endpoint {} not in the datastore; Felix has nothing to program", req.endpoint_id),
            }
        }
        Ok(json!({
            "InterfaceName": {"SrcName": temp_if, "DstPrefix": IF_PREFIX},
            "Gateway": host::GATEWAY,
            "StaticRoutes": [{"Destination": format!("{}/32", host::GATEWAY), "RouteType": 1, "NextHop": ""}],
            "DisableGatewayService": false,
        }))
    }

    async fn leave(&self, req: IdsReq) -> Res {
        if self.cfg.host {
            host::delete_link(&host_interface(&req.endpoint_id)).await.map_err(PluginError::failed)?;
        }
        Ok(json!({}))
    }

    fn request_pool(&self, req: RequestPoolReq) -> Res {
        if !req.sub_pool.is_empty() {
            return Err(PluginError::failed(
                "Calico IPAM does not support sub pool configuration on 'docker create network'. \
                 Calico IP Pools should be configured first and IP assignment is from those pre-configured pools.",
            ));
        }
        if !req.options.unwrap_or_default().is_empty() {
            return Err(PluginError::failed("Arbitrary options are not supported"));
        }
        if req.v6 {
            return Err(PluginError::failed("calico-lab supports IPv4 pools only"));
        }
        let (pool_id, pool, cidr) = if req.pool.is_empty() {
            (ipam::POOL_ID_V4.to_string(), "0.0.0.0/0".to_string(), ipam::DEFAULT_POOL_V4.to_string())
        } else {
            let c = ipam::Cidr::parse(&req.pool).map_err(|_| PluginError::failed("Invalid CIDR"))?;
            (c.to_string(), c.to_string(), c.to_string())
        };
        if let Some(ci) = &self.calico_ipam {
            ci.ensure_pool(ipam::Cidr::parse(&cidr).map_err(PluginError::failed)?).map_err(PluginError::failed)?;
        }
        self.update(|i| {
            if !i.st.pools.contains_key(&pool_id) {
                let mut p = Pool::new(&cidr).map_err(PluginError::failed)?;
                seed_pool(&mut p, &i.ds);
                i.st.pools.insert(pool_id.clone(), p);
            }
            Ok(json!({
                "PoolID": pool_id,
                "Pool": pool,
                "Data": {"com.docker.network.gateway": "0.0.0.0/0"},
            }))
        })
    }

    fn pool_mut<'a>(i: &'a mut Inner, pool_id: &str) -> Result<&'a mut Pool, PluginError> {
        if !i.st.pools.contains_key(pool_id) {
            let cidr = if pool_id == ipam::POOL_ID_V4 { ipam::DEFAULT_POOL_V4 } else { pool_id };
            let mut p = Pool::new(cidr).map_err(|e| PluginError::failed(format!("Invalid CIDR - {pool_id}: {e}")))?;
            seed_pool(&mut p, &i.ds);
            i.st.pools.insert(pool_id.to_string(), p);
        }
        Ok(i.st.pools.get_mut(pool_id).expect("inserted above"))
    }

    fn request_address(&self, req: RequestAddressReq) -> Res {
        let opts = req.options.clone().unwrap_or_default();
        if opts.get("RequestAddressType").and_then(Value::as_str) == Some("com.docker.network.gateway") {
            return Err(PluginError::failed("Calico IPAM does not support specifying a gateway."));
        }
        if let Some(ci) = &self.calico_ipam {
            return self.request_calico_address(ci, &req);
        }
        self.update(|i| {
            let pool = Self::pool_mut(i, &req.pool_id)?;
            let ip = if req.address.is_empty() {
                pool.allocate().ok_or_else(|| {
                    PluginError::failed(format!("IP assignment error: pool {} is exhausted", pool.cidr))
                })?
            } else {
                let ip: Ipv4Addr = req
                    .address
                    .parse()
                    .map_err(|_| PluginError::failed(format!("invalid address {:?}", req.address)))?;
                pool.reserve(ip).map_err(|e| PluginError::failed(format!("IP assignment error: {e}")))?;
                ip
            };
            Ok(json!({"Address": format!("{ip}/32"), "Data": {}}))
        })
    }

    fn release_address(&self, req: RequestAddressReq) -> Res {
        let ip: Ipv4Addr = req
            .address
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| PluginError::failed(format!("IP releasing error, ip: {:?}", req.address)))?;
        if let Some(ci) = &self.calico_ipam {
            ci.release(ip).map_err(PluginError::failed)?;
            return Ok(json!({}));
        }
        self.update(|i| {
            if let Some(p) = i.st.pools.get_mut(&req.pool_id) {
                p.release(ip);
            }
            Ok(json!({}))
        })
    }

    /// RequestAddress through etcd (the main instance): AutoAssign, or the asked address.
    fn request_calico_address(&self, ci: &CalicoIpam, req: &RequestAddressReq) -> Res {
        let cidr = self.update(|i| Ok(Self::pool_mut(i, &req.pool_id)?.cidr.clone()))?;
        let pool = ipam::Cidr::parse(&cidr).map_err(PluginError::failed)?;
        self.seed_calico(ci, &cidr, pool);
        let ip = if req.address.is_empty() {
            ci.auto_assign(pool).map_err(PluginError::failed)?
        } else {
            let ip: Ipv4Addr =
                req.address.parse().map_err(|_| PluginError::failed(format!("invalid address {:?}", req.address)))?;
            if !ci.assign_ip(ip).map_err(PluginError::failed)? {
                return Err(PluginError::failed(format!("IP assignment error: {ip} is already allocated")));
            }
            ip
        };
        Ok(json!({"Address": format!("{ip}/32"), "Data": {}}))
    }

    /// Once per pool and process: the addresses of endpoints stored before (a lab set up
    /// with the file-based allocator) are entered in etcd's blocks.
    fn seed_calico(&self, ci: &CalicoIpam, cidr: &str, pool: ipam::Cidr) {
        if !self.seeded.lock().unwrap().insert(cidr.to_string()) {
            return;
        }
        let ips: Vec<Ipv4Addr> = self.inner.lock().unwrap().ds.values().filter_map(|e| e.addr().parse().ok()).collect();
        for ip in ips.into_iter().filter(|ip| pool.contains_ip(*ip)) {
            if let Ok(true) = ci.assign_ip(ip) {
                log!("IPAM: {ip} of a stored endpoint entered in etcd's block");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(name: &str) -> (Arc<Plugin>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("calico-lab-plugin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let p = Plugin::new(Config { host: false, docker_socket: None, felix_wait: Duration::ZERO }, Store::new(&dir))
            .unwrap();
        (p, dir)
    }

    async fn call(p: &Arc<Plugin>, kind: Kind, m: &str, body: Value) -> Res {
        p.handle(kind, m, body.to_string().as_bytes()).await
    }

    #[test]
    fn names() {
        assert_eq!(host_interface("0123456789abcdef"), "cali0123456789a");
        assert_eq!(temp_interface("0123456789abcdef"), "temp0123456789a");
        assert_eq!(host_interface("abc"), "caliabc");
        assert_eq!(normalise_mac("02:AB:cd:00:11:22").as_deref(), Some("02:ab:cd:00:11:22"));
        assert_eq!(normalise_mac("02:AB:cd:00:11"), None);
        assert_eq!(normalise_mac("zz:AB:cd:00:11:22"), None);
    }

    /// The pool, the gateway request, two networks (normal, omit-MAC) and two refused.
    async fn create_networks(p: &Arc<Plugin>) {
        let pool = call(p, Kind::Ipam, "IpamDriver.RequestPool", json!({"AddressSpace": "CalicoGlobalAddressSpace", "Pool": "10.65.0.0/17", "SubPool": "", "Options": {}, "V6": false})).await.unwrap();
        assert_eq!(pool["PoolID"], "10.65.0.0/17");
        assert_eq!(pool["Data"]["com.docker.network.gateway"], "0.0.0.0/0");
        let gw = call(p, Kind::Ipam, "IpamDriver.RequestAddress", json!({"PoolID": "10.65.0.0/17", "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}})).await;
        assert!(gw.is_err());
        call(p, Kind::Network, "NetworkDriver.CreateNetwork", json!({"NetworkID": "n1", "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {}}, "IPv4Data": [{"AddressSpace": "CalicoGlobalAddressSpace", "Pool": "10.65.0.0/17", "Gateway": "0.0.0.0/0"}], "IPv6Data": []})).await.unwrap();
        call(p, Kind::Network, "NetworkDriver.CreateNetwork", json!({"NetworkID": "n2", "Options": {"com.docker.network.generic": {"calico-lab.omit-mac": "true"}}, "IPv4Data": [{"Pool": "10.65.128.0/17", "Gateway": "0.0.0.0/0"}]})).await.unwrap();
        let bad = call(
            p,
            Kind::Network,
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n3", "Options": {"com.docker.network.generic": {"foo": "bar"}}, "IPv4Data": []}),
        )
        .await
        .unwrap_err();
        assert!(bad.msg.contains("does not support the flag foo"), "{}", bad.msg);
        let bad = call(
            p,
            Kind::Network,
            "NetworkDriver.CreateNetwork",
            json!({"NetworkID": "n3", "Options": {}, "IPv4Data": [{"Pool": "10.0.0.0/8", "Gateway": "10.0.0.1/8"}]}),
        )
        .await
        .unwrap_err();
        assert!(bad.msg.contains("Non-Calico IPAM"));
    }

    /// Three endpoints (fixed MAC, omit-MAC, the caller's MAC) and a join.
    async fn create_endpoints_and_join(p: &Arc<Plugin>) {
        let a = call(p, Kind::Ipam, "IpamDriver.RequestAddress", json!({"PoolID": "10.65.0.0/17", "Address": ""}))
            .await
            .unwrap();
        assert_eq!(a["Address"], "10.65.0.1/32");
        let r = call(p, Kind::Network, "NetworkDriver.CreateEndpoint", json!({"NetworkID": "n1", "EndpointID": "e1e1e1e1e1e1e1e1", "Interface": {"Address": "10.65.0.1/32", "AddressIPv6": "", "MacAddress": ""}})).await.unwrap();
        assert_eq!(r, json!({"Interface": {"MacAddress": "EE:EE:EE:EE:EE:EE"}}));
        let r = call(
            p,
            Kind::Network,
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": "n2", "EndpointID": "e2", "Interface": {"Address": "10.65.128.1/32"}}),
        )
        .await
        .unwrap();
        assert_eq!(r, json!({"Interface": {}}));
        let r = call(p, Kind::Network, "NetworkDriver.CreateEndpoint", json!({"NetworkID": "n1", "EndpointID": "e3", "Interface": {"Address": "10.65.0.2/32", "MacAddress": "02:42:AC:11:00:02"}})).await.unwrap();
        assert_eq!(r, json!({"Interface": {"MacAddress": ""}}));
        let j = call(
            p,
            Kind::Network,
            "NetworkDriver.Join",
            json!({"NetworkID": "n1", "EndpointID": "e1e1e1e1e1e1e1e1", "SandboxKey": "/x", "Options": {}}),
        )
        .await
        .unwrap();
        assert_eq!(j["InterfaceName"], json!({"SrcName": "tempe1e1e1e1e1e", "DstPrefix": "cali"}));
        assert_eq!(j["Gateway"], "169.254.1.1");
        assert_eq!(j["StaticRoutes"], json!([{"Destination": "169.254.1.1/32", "RouteType": 1, "NextHop": ""}]));
        assert!(j.get("GatewayIPv6").is_none());
    }

    #[tokio::test]
    async fn full_flow_normal_and_omit_mac() {
        let (p, dir) = plugin("flow");
        create_networks(&p).await;

        create_endpoints_and_join(&p).await;

        let ds: Value = serde_json::from_slice(&std::fs::read(dir.join("datastore.json")).unwrap()).unwrap();
        assert_eq!(ds["e1e1e1e1e1e1e1e1"]["mac"], "ee:ee:ee:ee:ee:ee");
        assert_eq!(ds["e1e1e1e1e1e1e1e1"]["host_interface"], "calie1e1e1e1e1e");
        assert_eq!(ds["e1e1e1e1e1e1e1e1"]["container_interface"], "cali0");
        assert_eq!(ds["e2"]["mac"], "ee:ee:ee:ee:ee:ee", "omit-MAC mode still stores the fixed MAC");
        assert_eq!(ds["e3"]["mac"], "02:42:ac:11:00:02");

        // restart: state reloads, allocations survive, and addresses of stored endpoints
        // (e3's 10.65.0.2 never went through IPAM here) count as allocated
        drop(p);
        let p = Plugin::new(Config { host: false, docker_socket: None, felix_wait: Duration::ZERO }, Store::new(&dir))
            .unwrap();
        let a = call(&p, Kind::Ipam, "IpamDriver.RequestAddress", json!({"PoolID": "10.65.0.0/17", "Address": ""}))
            .await
            .unwrap();
        assert_eq!(a["Address"], "10.65.0.3/32");
        let dup = call(
            &p,
            Kind::Ipam,
            "IpamDriver.RequestAddress",
            json!({"PoolID": "10.65.0.0/17", "Address": "10.65.0.1"}),
        )
        .await;
        assert!(dup.is_err());
        // state.json lost: the pool is rebuilt lazily and still avoids the stored endpoints
        drop(p);
        std::fs::remove_file(dir.join("state.json")).unwrap();
        let p = Plugin::new(Config { host: false, docker_socket: None, felix_wait: Duration::ZERO }, Store::new(&dir))
            .unwrap();
        let a = call(&p, Kind::Ipam, "IpamDriver.RequestAddress", json!({"PoolID": "10.65.0.0/17", "Address": ""}))
            .await
            .unwrap();
        assert_eq!(a["Address"], "10.65.0.3/32", "10.65.0.1 and .2 belong to stored endpoints");
        call(
            &p,
            Kind::Network,
            "NetworkDriver.DeleteEndpoint",
            json!({"NetworkID": "n1", "EndpointID": "e1e1e1e1e1e1e1e1"}),
        )
        .await
        .unwrap();
        call(&p, Kind::Ipam, "IpamDriver.ReleaseAddress", json!({"PoolID": "10.65.0.0/17", "Address": "10.65.0.1"}))
            .await
            .unwrap();
        let ds: Value = serde_json::from_slice(&std::fs::read(dir.join("datastore.json")).unwrap()).unwrap();
        assert!(ds.get("e1e1e1e1e1e1e1e1").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn errors() {
        let (p, dir) = plugin("err");
        let e = p.handle(Kind::Network, "NetworkDriver.Join", b"{not json").await.unwrap_err();
        assert_eq!(e.status, 400);
        let e = p.handle(Kind::Network, "IpamDriver.RequestPool", b"{}").await.unwrap_err();
        assert_eq!(e.status, 404);
        let e = p.handle(Kind::Ipam, "Nope.Nothing", b"").await.unwrap_err();
        assert_eq!(e.status, 404);
        let ok = p.handle(Kind::Ipam, "Plugin.Activate", b"").await.unwrap();
        assert_eq!(ok, json!({"Implements": ["IpamDriver"]}));
        let caps = p.handle(Kind::Network, "NetworkDriver.GetCapabilities", b"").await.unwrap();
        assert_eq!(caps["Scope"], "local");
        let v6 = call(&p, Kind::Ipam, "IpamDriver.RequestPool", json!({"V6": true})).await;
        assert!(v6.is_err());
        let opts = call(&p, Kind::Ipam, "IpamDriver.RequestPool", json!({"Options": {"a": "b"}})).await;
        assert!(opts.is_err());
        let dflt = call(&p, Kind::Ipam, "IpamDriver.RequestPool", json!({})).await.unwrap();
        assert_eq!(dflt["PoolID"], "CalicoPoolIPv4");
        assert_eq!(dflt["Pool"], "0.0.0.0/0");
        let a = call(&p, Kind::Ipam, "IpamDriver.RequestAddress", json!({"PoolID": "CalicoPoolIPv4"})).await.unwrap();
        assert_eq!(a["Address"], "192.168.0.1/32");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
