//! Proofs that the lab behaves like Calico v2.6 on Docker, and that its faults are real.
//!
//! Two kinds of tests:
//! * `protocol_*` start their own plugin instance (`--no-host`, sockets in a temp dir) and
//!   need neither root nor Docker;
//! * the others use the real lab (`tests/lab/setup.sh`, run once per test process if needed):
//!   they need root and a Docker engine. Without them they are skipped with a message, or fail
//!   when the environment variable `CI` is set. Tests that break containers on purpose (and
//!   the omit-MAC proof) use the self-test networks `calico-selftest` / `calico-selftest-nomac`
//!   (`setup.sh --selftest`): the same plugin binary under another driver name, so that a
//!   calico-medic daemon running on the host does not repair them while they are checked.
//!
//! Every lab test creates its own containers (removed by a guard, also on panic), so the
//! tests are independent and run concurrently. Calico's real plugin beside the stand-in:
//! `real.rs`; shared helpers: `common/mod.rs`.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const NET_SOCK: &str = "/run/docker/plugins/calico.sock";
const IPAM_SOCK: &str = "/run/docker/plugins/calico-ipam.sock";
/// The self-test instance of the plugin (driver `calico-selftest`, same code as `calico`):
/// tests that break containers use it so that a calico-medic daemon running on the host
/// (which selects containers by driver `calico`) neither repairs them nor sees them.
const ST_NET: &str = "calico-selftest";
const ST_NOMAC: &str = "calico-selftest-nomac";

// ------------------------------------------------------------------ plugin socket client

/// One HTTP/1.1 request over a unix socket with a hand-written client: (status, body).
fn raw_http(sock: &Path, request: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

fn post(sock: &Path, path: &str, body: &str) -> (u16, Value) {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = raw_http(sock, req.as_bytes());
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("answer to {path} is not JSON ({e}): {body:?}"));
    (status, v)
}

fn assert_err_form(status: u16, v: &Value, what: &str) {
    assert_ne!(status, 200, "{what}: expected an HTTP error, got 200 {v}");
    let err = v.get("Err").and_then(Value::as_str).unwrap_or_else(|| panic!("{what}: no Err string in {v}"));
    assert!(!err.is_empty(), "{what}: empty Err");
    assert_eq!(v.as_object().unwrap().len(), 1, "{what}: Docker's error form is just {{\"Err\": ...}}: {v}");
}

/// A private plugin instance (no host changes) on sockets in a temp dir.
struct PrivatePlugin {
    dir: PathBuf,
    child: std::process::Child,
}

impl PrivatePlugin {
    fn start(dir: PathBuf) -> PrivatePlugin {
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_calico-lab"))
            .args(["plugin", "--no-host", "--socket-dir"])
            .arg(&dir)
            .arg("--state-dir")
            .arg(&dir)
            .stderr(std::fs::File::create(dir.join("plugin.log")).unwrap())
            .spawn()
            .expect("start plugin");
        let p = PrivatePlugin { dir, child };
        let start = Instant::now();
        while !(p.net().exists() && UnixStream::connect(p.ipam()).is_ok()) {
            assert!(start.elapsed() < Duration::from_secs(10), "private plugin did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    }
    fn net(&self) -> PathBuf {
        self.dir.join("calico.sock")
    }
    fn ipam(&self) -> PathBuf {
        self.dir.join("calico-ipam.sock")
    }
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
    fn stop(mut self) -> PathBuf {
        // SIGTERM: the plugin removes its sockets
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let dir = self.dir.clone();
        std::mem::forget(self);
        dir
    }
}

impl Drop for PrivatePlugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calico-lab-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

// ================================================================== protocol (no root)

#[test]
fn protocol_calico_answers_and_restart_keeps_state() {
    let p = PrivatePlugin::start(temp_dir("proto"));
    let (s, v) = post(&p.net(), "/Plugin.Activate", "");
    assert_eq!((s, v), (200, json!({"Implements": ["NetworkDriver"]})));
    let (s, v) = post(&p.ipam(), "/Plugin.Activate", "");
    assert_eq!((s, v), (200, json!({"Implements": ["IpamDriver"]})));
    let (_, v) = post(&p.net(), "/NetworkDriver.GetCapabilities", "");
    assert_eq!(v["Scope"], "local");
    let (_, v) = post(&p.ipam(), "/IpamDriver.GetDefaultAddressSpaces", "");
    assert_eq!(v["GlobalDefaultAddressSpace"], "CalicoGlobalAddressSpace");

    let (s, v) = post(
        &p.ipam(),
        "/IpamDriver.RequestPool",
        r#"{"AddressSpace":"CalicoLocalAddressSpace","Pool":"10.99.0.0/24","SubPool":"","Options":{},"V6":false}"#,
    );
    assert_eq!(s, 200);
    assert_eq!(v["PoolID"], "10.99.0.0/24");
    assert_eq!(v["Data"]["com.docker.network.gateway"], "0.0.0.0/0", "Calico's dummy gateway");
    let (s, v) = post(
        &p.ipam(),
        "/IpamDriver.RequestAddress",
        r#"{"PoolID":"10.99.0.0/24","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
    );
    assert_err_form(s, &v, "gateway request");
    assert!(v["Err"].as_str().unwrap().contains("gateway"));

    let (s, _) = post(
        &p.net(),
        "/NetworkDriver.CreateNetwork",
        r#"{"NetworkID":"n1","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{}},"IPv4Data":[{"AddressSpace":"CalicoLocalAddressSpace","Gateway":"0.0.0.0/0","Pool":"10.99.0.0/24"}],"IPv6Data":[]}"#,
    );
    assert_eq!(s, 200);
    let (s, v) = post(
        &p.net(),
        "/NetworkDriver.CreateNetwork",
        r#"{"NetworkID":"n2","Options":{"com.docker.network.internal":true},"IPv4Data":[{"Gateway":"0.0.0.0/0","Pool":"10.99.0.0/24"}]}"#,
    );
    assert_err_form(s, &v, "--internal network");

    let (_, v) =
        post(&p.ipam(), "/IpamDriver.RequestAddress", r#"{"PoolID":"10.99.0.0/24","Address":"","Options":null}"#);
    assert_eq!(v["Address"], "10.99.0.1/32");
    let (_, v) = post(
        &p.net(),
        "/NetworkDriver.CreateEndpoint",
        r#"{"NetworkID":"n1","EndpointID":"0123456789abcdef","Interface":{"Address":"10.99.0.1/32","AddressIPv6":"","MacAddress":""},"Options":{}}"#,
    );
    assert_eq!(v, json!({"Interface": {"MacAddress": "EE:EE:EE:EE:EE:EE"}}));
    let (_, v) = post(
        &p.net(),
        "/NetworkDriver.Join",
        r#"{"NetworkID":"n1","EndpointID":"0123456789abcdef","SandboxKey":"/x","Options":{}}"#,
    );
    assert_eq!(v["InterfaceName"], json!({"SrcName": "temp0123456789a", "DstPrefix": "cali"}));
    assert_eq!(v["Gateway"], "169.254.1.1");
    assert_eq!(v["StaticRoutes"], json!([{"Destination": "169.254.1.1/32", "RouteType": 1, "NextHop": ""}]));
    assert!(v.get("GatewayIPv6").is_none(), "no IPv6 gateway: {v}");

    // restart: the endpoint and the allocation survive
    let dir = p.stop();
    assert!(!dir.join("calico.sock").exists(), "sockets are removed on SIGTERM");
    let p = PrivatePlugin::start(dir);
    let ds: Value = serde_json::from_slice(&std::fs::read(p.dir.join("datastore.json")).unwrap()).unwrap();
    assert_eq!(
        ds["0123456789abcdef"],
        json!({"endpoint_id": "0123456789abcdef", "network_id": "n1", "ip": "10.99.0.1/32",
               "mac": "ee:ee:ee:ee:ee:ee", "host_interface": "cali0123456789a", "container_interface": "cali0"})
    );
    let (_, v) = post(&p.ipam(), "/IpamDriver.RequestAddress", r#"{"PoolID":"10.99.0.0/24","Address":""}"#);
    assert_eq!(v["Address"], "10.99.0.2/32", "10.99.0.1 is still allocated after the restart");
    let (s, _) =
        post(&p.net(), "/NetworkDriver.DeleteEndpoint", r#"{"NetworkID":"n1","EndpointID":"0123456789abcdef"}"#);
    assert_eq!(s, 200);
    let ds: Value = serde_json::from_slice(&std::fs::read(p.dir.join("datastore.json")).unwrap()).unwrap();
    assert_eq!(ds, json!({}));
    let dir = p.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn protocol_bad_input_answers_err_and_plugin_survives() {
    let mut p = PrivatePlugin::start(temp_dir("bad"));
    check_bad_input(&p.net(), &p.ipam());
    assert!(p.alive(), "plugin died on bad input");
    let (s, _) = post(&p.net(), "/Plugin.Activate", "");
    assert_eq!(s, 200);
    let dir = p.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

fn check_bad_input(net: &Path, ipam: &Path) {
    // unknown endpoints
    let (s, v) = post(net, "/NetworkDriver.Frobnicate", "{}");
    assert_err_form(s, &v, "unknown NetworkDriver method");
    let (s, v) = post(net, "/IpamDriver.RequestPool", "{}");
    assert_err_form(s, &v, "IPAM call on the network socket");
    let (s, v) = post(ipam, "/", "");
    assert_err_form(s, &v, "root path");
    let (s, body) = raw_http(net, b"GET /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nConnection: close\r\n\r\n");
    assert_err_form(s, &serde_json::from_str(&body).unwrap(), "GET");
    // malformed JSON
    for body in ["{not json", "[1,2,3]", "\"string\"", "{\"EndpointID\": 5}", "\u{0}\u{1}\u{2}"] {
        let (s, v) = post(net, "/NetworkDriver.Join", body);
        assert_err_form(s, &v, &format!("Join with body {body:?}"));
        let (s, v) = post(ipam, "/IpamDriver.RequestAddress", body);
        assert_err_form(s, &v, &format!("RequestAddress with body {body:?}"));
    }
    // a request that is not HTTP at all, and one cut short
    let _ = raw_http(net, b"\x16\x03\x01garbage that is not HTTP\r\n\r\n");
    let mut s = UnixStream::connect(net).unwrap();
    s.write_all(b"POST /NetworkDriver.Join HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"Endp").unwrap();
    drop(s);
    let (s, _) = post(net, "/Plugin.Activate", "");
    assert_eq!(s, 200, "plugin still answers after bad input");
}

// ================================================================== the lab (root + Docker)

#[test]
fn lab_plugin_bad_input_answers_err_and_plugin_survives() {
    let Some(()) = lab() else { return };
    let pid_before = std::fs::read_to_string("/run/calico-lab/plugin.pid").unwrap();
    check_bad_input(Path::new(NET_SOCK), Path::new(IPAM_SOCK));
    let pid_after = std::fs::read_to_string("/run/calico-lab/plugin.pid").unwrap();
    assert_eq!(pid_before, pid_after);
    assert!(Path::new(&format!("/proc/{}", pid_after.trim())).exists(), "plugin process is gone");
}

#[test]
fn lab_normal_task_is_calico_shaped_and_reachable() {
    let Some(()) = lab() else { return };
    let t = Task::start(&["--app", "shape"]);
    let pid = t.pid();
    let ip = t.ip();

    // cali0: fixed MAC, up, exactly one /32
    assert_eq!(t.mac(), FIXED_MAC);
    let link = ns_ok(&pid, &["-o", "link", "show", "cali0"]);
    assert!(link.contains("UP,LOWER_UP"), "{link}");
    let addrs = ns_ok(&pid, &["-o", "-4", "addr", "show", "dev", "cali0"]);
    let inets: Vec<&str> =
        addrs.lines().filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1)).collect();
    assert_eq!(inets, vec![format!("{ip}/32").as_str()], "exactly one address, a /32: {addrs}");
    // routes: exactly Calico's two
    assert_eq!(t.routes(), vec!["default via 169.254.1.1 dev cali0", "169.254.1.1 dev cali0 scope link"]);
    // docker inspect
    let i = inspect(&t.name);
    let n = &i["NetworkSettings"]["Networks"]["calico-lab"];
    assert_eq!(n["MacAddress"], FIXED_MAC);
    assert_eq!(n["IPAddress"], ip.as_str());
    assert_eq!(n["IPPrefixLen"], 32);
    assert_eq!(n["Gateway"], "169.254.1.1");
    // datastore: Calico v2.6's endpoint JSON in etcd (libnetwork-plugin's tests assert this shape)
    let ep = t.endpoint();
    let endpoint_id = n["EndpointID"].as_str().unwrap().to_string();
    let host_if = format!("cali{}", &endpoint_id[..11]);
    assert_eq!(
        ep,
        serde_json::json!({"state": "active", "name": host_if, "active_instance_id": "", "mac": FIXED_MAC,
                           "profile_ids": ["calico-lab"], "ipv4_nets": [format!("{ip}/32")], "ipv6_nets": []})
    );
    // byte for byte: libcalico-go's field order, as Calico's real plugin writes it
    let key = format!("/calico/v1/host/{}/workload/libnetwork/libnetwork/endpoint/{endpoint_id}", calico_hostname());
    assert_eq!(
        etcd_value(&key).unwrap(),
        format!(
            r#"{{"state":"active","name":"{host_if}","active_instance_id":"","mac":"{FIXED_MAC}","profile_ids":["calico-lab"],"ipv4_nets":["{ip}/32"],"ipv6_nets":[]}}"#
        )
    );
    // and the network's profile, as Calico's CreateEndpoint creates it (once)
    assert_eq!(etcd_value("/calico/v1/policy/profile/calico-lab/tags").as_deref(), Some(r#"["calico-lab"]"#));
    assert_eq!(etcd_value("/calico/v1/policy/profile/calico-lab/labels").as_deref(), Some("{}"));
    assert!(etcd_value("/calico/v1/policy/profile/calico-lab/rules").unwrap().contains(r#""src_tag":"calico-lab""#));
    // Felix's host side
    for (k, want) in [
        ("conf/{}/proxy_arp", "1"),
        ("neigh/{}/proxy_delay", "0"),
        ("conf/{}/rp_filter", "1"),
        ("conf/{}/forwarding", "1"),
    ] {
        assert_eq!(read_sysctl(&format!("net/ipv4/{}", k.replace("{}", &host_if))), want, "{k}");
    }
    let route = ok("ip", &["-d", "-4", "route", "show", &format!("{ip}/32")]);
    assert!(
        route.contains(&format!("dev {host_if}")) && route.contains("scope link") && route.contains("proto boot"),
        "{route}"
    );
    let neigh = ok("ip", &["neigh", "show", &ip, "dev", &host_if]);
    assert!(neigh.contains(&format!("lladdr {FIXED_MAC}")) && neigh.contains("PERMANENT"), "{neigh}");

    assert!(t.reachable(), "host cannot ping a normal task");

    // removal cleans the datastore and the host side
    drop(t);
    let ds: Value = serde_json::from_str(&labctl_ok(&["datastore"])).unwrap();
    assert!(ds.get(&endpoint_id).is_none(), "endpoint left in the datastore");
    assert!(!Path::new("/sys/class/net").join(&host_if).exists(), "host veth left behind");
}

#[test]
fn lab_omit_mac_task_reproduces_the_seed_failure() {
    let Some(()) = lab() else { return };
    let t = Task::start(&["--network", ST_NOMAC, "--app", "seed"]);
    let pid = t.pid();
    let ip = t.ip();
    let mac = t.mac();
    assert_ne!(mac, FIXED_MAC, "Docker should have left a random MAC on cali0");
    let i = inspect(&t.name);
    let n = &i["NetworkSettings"]["Networks"][ST_NOMAC];
    assert_eq!(n["MacAddress"], "", "docker inspect MacAddress must be empty");
    assert_eq!(n["IPAddress"], ip.as_str());
    // the host (Felix) still expects ee:ee:ee:ee:ee:ee
    let ep = t.endpoint();
    assert_eq!(ep["mac"], FIXED_MAC);
    let neigh = ok("ip", &["neigh", "show", &ip]);
    assert!(neigh.contains(&format!("lladdr {FIXED_MAC}")) && neigh.contains("PERMANENT"), "{neigh}");
    // routes and address are right: only the MAC is wrong
    assert_eq!(t.routes(), vec!["default via 169.254.1.1 dev cali0", "169.254.1.1 dev cali0 scope link"]);
    assert!(!t.reachable(), "omit-MAC task must not be reachable from the host");

    // the MAC is the cause: set it by hand from the host, in the container's netns
    let out = ns(&pid, &["link", "set", "dev", "cali0", "address", FIXED_MAC]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(t.mac(), FIXED_MAC);
    assert!(t.reachable(), "after fixing the MAC the host must reach the task");
}

/// The real `calico-lab-nomac` network (driver `calico`) omits the MAC too. Only what a
/// running calico-medic would not change is checked here; the full proof (random MAC, no
/// ping, ping after the fix) is `lab_omit_mac_task_reproduces_the_seed_failure`.
#[test]
fn lab_real_nomac_network_omits_the_mac() {
    let Some(()) = lab() else { return };
    let t = Task::start(&["--nomac"]);
    let n = &inspect(&t.name)["NetworkSettings"]["Networks"]["calico-lab-nomac"];
    assert_eq!(n["MacAddress"], "", "docker inspect MacAddress must be empty");
    assert_eq!(n["Gateway"], "169.254.1.1");
    assert_eq!(t.endpoint()["mac"], FIXED_MAC, "the datastore still expects the fixed MAC");
    let neigh = ok("ip", &["neigh", "show", &t.ip()]);
    assert!(neigh.contains(&format!("lladdr {FIXED_MAC}")) && neigh.contains("PERMANENT"), "{neigh}");
}

#[test]
fn lab_user_mac_is_kept_and_stored() {
    let Some(()) = lab() else { return };
    let t = Task::start(&["--mac", "02:AA:bb:00:11:22"]);
    assert_eq!(t.mac(), "02:aa:bb:00:11:22");
    assert_eq!(t.endpoint()["mac"], "02:aa:bb:00:11:22");
    let n = &inspect(&t.name)["NetworkSettings"]["Networks"]["calico-lab"];
    assert_eq!(n["MacAddress"], "02:aa:bb:00:11:22");
    assert!(t.reachable());
}

#[test]
fn lab_task_has_marathon_identity() {
    let Some(()) = lab() else { return };
    let t = Task::start(&["--app", "ident"]);
    let uuid = t.name.strip_prefix("mesos-").expect("name mesos-<uuid>");
    assert_eq!(uuid.len(), 36, "{uuid}");
    let i = inspect(&t.name);
    let env: Vec<String> = serde_json::from_value(i["Config"]["Env"].clone()).unwrap();
    let task_id = format!("ident.{uuid}");
    for want in [
        format!("MESOS_TASK_ID={task_id}"),
        "MARATHON_APP_ID=/ident".to_string(),
        format!("MESOS_CONTAINER_NAME={}", t.name),
        "MESOS_SANDBOX=/mnt/mesos/sandbox".to_string(),
        "PORT0=31000".to_string(),
    ] {
        assert!(env.contains(&want), "missing env {want} in {env:?}");
    }
    assert!(env.iter().any(|e| e.starts_with("HOST=")));
    assert_eq!(i["Config"]["Labels"]["MESOS_TASK_ID"], task_id.as_str());
    assert_eq!(i["Config"]["Labels"]["calico-lab"], "1");
    assert_eq!(i["State"]["Running"], true);
}

#[test]
fn lab_run_plain_is_not_calico() {
    let Some(()) = lab() else { return };
    for net in ["none", "bridge"] {
        let t = Task::plain(&["--network", net]);
        let i = inspect(&t.name);
        assert_eq!(i["Config"]["Labels"]["calico-lab"], "1");
        let nets = i["NetworkSettings"]["Networks"].as_object().unwrap();
        assert_eq!(nets.keys().collect::<Vec<_>>(), vec![net]);
        let links = ns_ok(&t.pid(), &["-o", "link"]);
        assert!(!links.contains("cali0"), "{links}");
    }
}

#[test]
fn lab_gateway_answers_arp_but_not_ping() {
    let Some(()) = lab() else { return };
    let t = Task::start(&[]);
    let pid = t.pid();
    let host_if = t.endpoint()["name"].as_str().unwrap().to_string();
    let _ = ns(&pid, &["neigh", "flush", "dev", "cali0"]);
    let ping = run("nsenter", &["-t", &pid, "-n", "ping", "-n", "-c1", "-W1", "169.254.1.1"]);
    assert!(!ping.status.success(), "169.254.1.1 must not answer ping");
    // but it answered ARP (proxy_arp on the host side): the neighbour is the host veth's MAC
    let host_mac = std::fs::read_to_string(format!("/sys/class/net/{host_if}/address")).unwrap();
    let neigh = ns_ok(&pid, &["neigh", "show", "169.254.1.1", "dev", "cali0"]);
    assert!(neigh.contains(&format!("lladdr {}", host_mac.trim())), "gateway neighbour: {neigh:?}");
    assert!(!neigh.contains("FAILED") && !neigh.contains("INCOMPLETE"), "{neigh}");
}

// ------------------------------------------------------------------ breaks

/// Start a task, check it is reachable, break it, and return it.
fn broken(kind: &str) -> Task {
    let t = Task::start(&["--network", ST_NET, "--app", &format!("break-{kind}")]);
    assert!(t.reachable(), "fresh task must be reachable before `break {kind}`");
    t.brk(kind);
    t
}

#[test]
fn lab_break_mac() {
    let Some(()) = lab() else { return };
    let t = broken("mac");
    let mac = t.mac();
    assert_ne!(mac, FIXED_MAC);
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(first & 0b11, 0b10, "locally administered unicast: {mac}");
    assert!(!t.reachable());
}

#[test]
fn lab_break_down() {
    let Some(()) = lab() else { return };
    let t = broken("down");
    let link = ns_ok(&t.pid(), &["-o", "link", "show", "cali0"]);
    assert!(!link.contains(",UP"), "{link}");
    assert!(t.routes().is_empty(), "the kernel drops cali0's routes with the link: {:?}", t.routes());
    assert!(!t.reachable());
}

#[test]
fn lab_break_default_route() {
    let Some(()) = lab() else { return };
    let t = broken("default-route");
    assert_eq!(t.routes(), vec!["169.254.1.1 dev cali0 scope link"]);
    assert!(!t.reachable(), "no route back to the host");
}

/// Removing only the `169.254.1.1 dev cali0` link route does NOT break host→container
/// traffic: the kernel keeps the default route `via 169.254.1.1 dev cali0` (it was validated
/// when it was added and is not re-checked), and the gateway still resolves through the
/// host's proxy ARP — even with the container's neighbour cache flushed. The damage is
/// latent: the default route cannot be re-added until the link route is back ("Nexthop has
/// invalid gateway"), which is why a repair must add 169.254.1.1 first.
#[test]
fn lab_break_gateway_route_alone_keeps_reachability() {
    let Some(()) = lab() else { return };
    let t = broken("gateway-route");
    let pid = t.pid();
    assert_eq!(t.routes(), vec!["default via 169.254.1.1 dev cali0"]);
    assert!(t.reachable(), "gateway-route alone does not break host→container ping");
    let _ = ns(&pid, &["neigh", "flush", "dev", "cali0"]);
    assert!(t.reachable(), "still reachable with the container's neighbour cache flushed");
    // latent damage: the default route cannot be put back before the gateway route
    ns_ok(&pid, &["route", "del", "default"]);
    let out = ns(&pid, &["route", "add", "default", "via", "169.254.1.1", "dev", "cali0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Nexthop has invalid gateway"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!t.reachable(), "without any route the task is unreachable");
    // the repair order that works
    ns_ok(&pid, &["route", "add", "169.254.1.1", "dev", "cali0", "scope", "link"]);
    ns_ok(&pid, &["route", "add", "default", "via", "169.254.1.1", "dev", "cali0"]);
    assert!(t.reachable());
}

#[test]
fn lab_break_routes() {
    let Some(()) = lab() else { return };
    let t = broken("routes");
    assert!(t.routes().is_empty(), "{:?}", t.routes());
    assert!(!t.reachable());
}

#[test]
fn lab_break_delete_link() {
    let Some(()) = lab() else { return };
    let t = Task::start(&["--network", ST_NET, "--app", "break-delete-link"]);
    // the self-test plugin instance keeps its endpoints in datastore.json
    let host_if = t.endpoint()["host_interface"].as_str().unwrap().to_string();
    assert!(t.reachable());
    t.brk("delete-link");
    let out = ns(&t.pid(), &["link", "show", "cali0"]);
    assert!(!out.status.success(), "cali0 still exists");
    assert!(
        !Path::new("/sys/class/net").join(&host_if).exists(),
        "deleting one end of a veth deletes the host end too"
    );
    assert!(!t.reachable());
}

#[test]
fn lab_break_address() {
    let Some(()) = lab() else { return };
    let t = broken("address");
    let addrs = ns_ok(&t.pid(), &["-o", "-4", "addr", "show", "dev", "cali0"]);
    assert!(addrs.is_empty(), "{addrs}");
    assert!(!t.reachable());
}

#[test]
fn lab_break_rejects_unknown_kind_and_container() {
    let Some(()) = lab() else { return };
    let t = Task::start(&["--network", ST_NET]);
    let out = labctl(&["break", &t.name, "teleport"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown kind"));
    let out = labctl(&["ping", "no-such-container-calico-lab"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such container"));
    assert!(t.reachable(), "a refused break changes nothing");
}

// ------------------------------------------------------------------ setup

#[test]
fn lab_setup_is_idempotent() {
    let Some(()) = lab() else { return };
    let net_ids = || ok(DOCKER, &["network", "inspect", "-f", "{{.Id}}", "calico-lab", "calico-lab-nomac", REAL_NET]);
    let pids = || {
        (
            std::fs::read_to_string("/run/calico-lab/plugin.pid").unwrap(),
            std::fs::read_to_string("/run/calico-lab/selftest/plugin.pid").unwrap(),
            std::fs::read_to_string("/run/calico-lab/real/plugin.pid").unwrap(),
        )
    };
    let before = (net_ids(), pids());
    let out = Command::new(repo().join("tests/lab/setup.sh"))
        .arg("--selftest")
        .env("CALICO_LAB_BIN", env!("CARGO_BIN_EXE_calico-lab"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "second setup.sh failed: {log}");
    for want in [
        "already running",
        "calico-lab exists",
        "calico-lab-nomac exists",
        "present",
        "calico-real already running",
        "calico-lab-real exists",
        "Calico IP pool 10.68.0.0/16 present",
    ] {
        assert!(log.contains(want), "second run should report {want:?}: {log}");
    }
    let after = (net_ids(), pids());
    assert_eq!(before, after, "networks and plugin must be the same after a second setup.sh");
    // and the lab still works
    let t = Task::start(&[]);
    assert!(t.reachable());
    let t = Task::start(&["--network", REAL_NET]);
    assert!(t.reachable());
}
