//! Calico's IPAM across the cluster (issue 25), for real: the lab's stand-in allocates
//! in the lab's etcd as libcalico-go does (host-affine /26 blocks, handle-less
//! attributes) and is made to miss releases, hand an address out twice and delay its
//! endpoint write (`labctl ipam-fault`). On its own network `calico-lab-ipam`
//! (10.69.0.0/26: one block) `ipam check` finds exactly the leaked addresses, a full
//! pool refuses a new task until `ipam release` frees them, an address whose endpoint
//! came late is kept, doubles and an address on two hosts are reported and never
//! released. The compare-and-swap test runs on an etcd of its own, behind a proxy that
//! writes the block just before the release's write.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const LAB_ETCD: &str = "http://127.0.0.1:2379";
const NET: &str = "calico-lab-ipam";
const POOL: &str = "10.69.0.0/26";
const BLOCK_KEY: &str = "/calico/ipam/v2/assignment/ipv4/block/10.69.0.0-26";
const OTHER_HOST: &str = "lab-ipam-other-host";
const TUNNEL_HOST: &str = "lab-ipam-tunnel-node";
const HANDLE: &str = "k8s-pod-network.lab-ipam";

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(["-s", "--max-time", "5"]).args(args).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A key's value and modifiedIndex (None: absent).
fn get(base: &str, key: &str) -> Option<(String, u64)> {
    let v: Value = serde_json::from_str(&curl(&[&format!("{base}/v2/keys{key}")])).ok()?;
    Some((v["node"]["value"].as_str()?.to_string(), v["node"]["modifiedIndex"].as_u64()?))
}

fn put(base: &str, key: &str, value: &str, prev: Option<u64>) -> bool {
    let q = prev.map(|i| format!("?prevIndex={i}")).unwrap_or_default();
    let body = curl(&["-X", "PUT", "--data-urlencode", &format!("value={value}"), &format!("{base}/v2/keys{key}{q}")]);
    body.contains("\"action\":\"")
}

fn delete(base: &str, key: &str) {
    curl(&["-X", "DELETE", &format!("{base}/v2/keys{key}?recursive=true")]);
}

fn block(base: &str, key: &str) -> (Value, u64) {
    let (v, i) = get(base, key).unwrap_or_else(|| panic!("no block {key}"));
    (serde_json::from_str(&v).unwrap(), i)
}

fn allocated(b: &Value) -> BTreeSet<usize> {
    b["allocations"].as_array().unwrap().iter().enumerate().filter(|(_, a)| !a.is_null()).map(|(o, _)| o).collect()
}

/// Allocates `ordinals` in the block by compare-and-swap, with `handle` or handle-less.
fn allocate(base: &str, key: &str, ordinals: &[usize], handle: Option<&str>) {
    loop {
        let (mut b, idx) = block(base, key);
        let attrs = b["attributes"].as_array_mut().unwrap();
        attrs.push(json!({"handle_id": handle, "secondary": null}));
        let a = attrs.len() - 1;
        for &o in ordinals {
            b["allocations"][o] = a.into();
        }
        b["unallocated"].as_array_mut().unwrap().retain(|o| !ordinals.contains(&(o.as_u64().unwrap() as usize)));
        if put(base, key, &b.to_string(), Some(idx)) {
            return;
        }
    }
}

fn ip_of(ordinal: usize) -> String {
    format!("10.69.0.{ordinal}")
}

struct Faults;

impl Faults {
    fn set(line: &str) {
        let args: Vec<&str> = ["ipam-fault", "set"].into_iter().chain(line.split_whitespace()).collect();
        labctl_ok(&args);
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        let _ = labctl(&["ipam-fault", "clear", POOL]);
    }
}

/// calico-medic ipam … with a config naming `etcd`; (exit code, stdout, stderr).
fn ipam(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(medic_bin())
        .arg("ipam")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run calico-medic ipam");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

fn config_for(dir: &Path, etcd: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!("[calico]\netcd_endpoints = [\"{etcd}\"]\ncalicoctl_config = \"\"\nhostname = \"x\"\n"),
    )
    .unwrap();
    path
}

/// `ipam check --json --output FILE`: (exit code, report).
fn check(config: &Path, file: &Path) -> (i32, Value) {
    let (code, out, err) = ipam(config, &["check", "--json", "--output", file.to_str().unwrap()]);
    assert!(code == 0 || code == 1, "ipam check exit {code}: {err}");
    (code, serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}")))
}

/// Leak candidates of the report inside 10.69.0.0/26.
fn leaks_in_pool(report: &Value) -> BTreeSet<String> {
    report["leak_candidates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["block"] == "10.69.0.0/26")
        .map(|c| c["ip"].as_str().unwrap().to_string())
        .collect()
}

/// A fresh `calico-lab-ipam` network with an empty pool; removed (and its keys) on drop.
struct IpamNet;

impl IpamNet {
    fn fresh() -> IpamNet {
        let _ = docker(&["network", "rm", NET]);
        let host = std::fs::read_to_string("/run/calico-lab/calico-hostname").unwrap().trim().to_string();
        for key in [BLOCK_KEY.to_string(), format!("/calico/ipam/v2/host/{host}/ipv4/block/10.69.0.0-26")] {
            delete(LAB_ETCD, &key);
        }
        delete(LAB_ETCD, &format!("/calico/v1/host/{OTHER_HOST}"));
        delete(LAB_ETCD, &format!("/calico/v1/host/{TUNNEL_HOST}"));
        let _ = labctl(&["ipam-fault", "clear", POOL]);
        docker_ok(&[
            "network",
            "create",
            "--driver",
            "calico",
            "--ipam-driver",
            "calico-ipam",
            "--subnet",
            POOL,
            "--label",
            "calico-lab=1",
            NET,
        ]);
        IpamNet
    }
}

impl Drop for IpamNet {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", NET]);
        delete(LAB_ETCD, BLOCK_KEY);
        delete(LAB_ETCD, &format!("/calico/v1/host/{OTHER_HOST}"));
        delete(LAB_ETCD, &format!("/calico/v1/host/{TUNNEL_HOST}"));
    }
}

fn task_ip(t: &Task) -> String {
    t.ip_on(NET)
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn leaks_are_found_and_released_with_proof_doubles_never() {
    require_lab();
    let _serial = serial();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path(), LAB_ETCD);
    // Tasks are declared after the network: dropped first.
    let _net = IpamNet::fresh();
    let running: Vec<Task> = (0..3).map(|_| Task::start(&["--network", NET])).collect();
    let running_ips: BTreeSet<String> = running.iter().map(task_ip).collect();
    let (b, _) = block(LAB_ETCD, BLOCK_KEY);
    assert_eq!(b["attributes"], json!([{"handle_id": null, "secondary": null}]), "handle-less, as libcalico-go: {b}");
    assert_eq!(
        b["affinity"],
        format!("host:{}", std::fs::read_to_string("/run/calico-lab/calico-hostname").unwrap().trim())
    );

    // The leak: 5 tasks removed while the plugin misses ReleaseAddress.
    let leaked: BTreeSet<String> = {
        let doomed: Vec<Task> = (0..5).map(|_| Task::start(&["--network", NET])).collect();
        let ips = doomed.iter().map(task_ip).collect();
        let _f = Faults;
        Faults::set(&format!("miss-release {POOL}"));
        drop(doomed);
        ips
    };
    let (b, _) = block(LAB_ETCD, BLOCK_KEY);
    assert_eq!(allocated(&b).len(), 8, "the 5 removed tasks' addresses stay allocated: {b}");

    // A node's tunnel address and another orchestrator's (handled) allocation.
    let free: Vec<usize> = (0..64).filter(|o| !allocated(&b).contains(o)).collect();
    let (tunnel, handled) = (free[0], free[1]);
    allocate(LAB_ETCD, BLOCK_KEY, &[tunnel], None);
    assert!(put(LAB_ETCD, &format!("/calico/v1/host/{TUNNEL_HOST}/config/IpInIpTunnelAddr"), &ip_of(tunnel), None));
    allocate(LAB_ETCD, BLOCK_KEY, &[handled], Some(HANDLE));

    // The delayed CreateEndpoint: report A sees its address allocated with no endpoint yet.
    let late = report_a_with_a_late_endpoint(&config, dir.path(), &leaked, &running_ips, [tunnel, handled]);
    std::thread::sleep(Duration::from_millis(2100));
    let (_, b_report) = check(&config, &dir.path().join("b.json"));
    assert_eq!(leaks_in_pool(&b_report), leaked, "report B, 2 s later: the late endpoint's address is in use");

    // Fill the pool (another orchestrator): a new task cannot start.
    let (b, _) = block(LAB_ETCD, BLOCK_KEY);
    let rest: Vec<usize> = (0..64).filter(|o| !allocated(&b).contains(o)).collect();
    allocate(LAB_ETCD, BLOCK_KEY, &rest, Some(HANDLE));
    let refused_name = unique_name("lab-ipam-refused");
    let refused = docker(&[
        "run",
        "-d",
        "--name",
        &refused_name,
        "--label",
        "calico-lab=1",
        "--network",
        NET,
        "calico-lab/busybox:latest",
    ]);
    let _ = docker(&["rm", "-f", &refused_name]);
    assert!(!refused.status.success(), "a task started on a full pool");
    let why = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(why.contains("no free address"), "{why}");

    release_and_restart(&config, dir.path(), &leaked, &running_ips, [ip_of(tunnel), ip_of(handled), task_ip(&late)]);
    let restarted = Task::start(&["--network", NET]);
    assert!(leaked.contains(&task_ip(&restarted)), "the new task took a released address: {}", task_ip(&restarted));
    assert!(restarted.wait_reachable(Duration::from_secs(3)).is_some());

    doubles_are_reported_never_released(&config, dir.path(), running[0].ip_on(NET));
    eprintln!("lab_ipam: {:?}", started.elapsed());
}

/// Report A while a task's endpoint write is delayed: its address is a candidate too.
fn report_a_with_a_late_endpoint(
    config: &Path,
    dir: &Path,
    leaked: &BTreeSet<String>,
    running_ips: &BTreeSet<String>,
    [tunnel, handled]: [usize; 2],
) -> Task {
    let before = allocated(&block(LAB_ETCD, BLOCK_KEY).0);
    let _f = Faults;
    Faults::set(&format!("delay-endpoint {POOL} 4000"));
    let starting = std::thread::spawn(|| Task::start(&["--network", NET]));
    let t0 = Instant::now();
    let late_ordinal = loop {
        let now = allocated(&block(LAB_ETCD, BLOCK_KEY).0);
        if let Some(o) = now.difference(&before).next() {
            break *o;
        }
        assert!(t0.elapsed() < Duration::from_secs(3), "the delayed task's address was never allocated");
        std::thread::sleep(Duration::from_millis(20));
    };
    let (code, a) = check(config, &dir.join("a.json"));
    assert_eq!(code, 1, "leaks are findings");
    let mut want = leaked.clone();
    want.insert(ip_of(late_ordinal));
    assert_eq!(leaks_in_pool(&a), want, "report A: the 5 leaked and the not-yet-written endpoint's");
    for not in running_ips.iter().chain([&ip_of(tunnel), &ip_of(handled)]) {
        assert!(!leaks_in_pool(&a).contains(not), "{not} is no leak");
    }
    assert!(a["handled"].as_array().unwrap().iter().any(|h| h["ip"] == ip_of(handled) && h["handle"] == HANDLE));
    let pool = a["pools"].as_array().unwrap().iter().find(|p| p["pool"] == POOL).expect("the pool's counts").clone();
    assert_eq!((pool["size"].as_u64(), pool["leak_candidate"].as_u64()), (Some(64), Some(6)), "{pool}");
    let late = starting.join().unwrap();
    assert_eq!(task_ip(&late), ip_of(late_ordinal));
    late
}

/// Dry run, then the release: exactly the 5 freed, everything else kept.
fn release_and_restart(
    config: &Path,
    dir: &Path,
    leaked: &BTreeSet<String>,
    running: &BTreeSet<String>,
    kept: [String; 3],
) {
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    let base = ["release", "--from-report", a.to_str().unwrap(), "--from-report", b.to_str().unwrap(), "--pool", POOL];
    let (code, out, err) = ipam(config, &[&base[..], &["--min-gap", "60s"]].concat());
    assert_eq!(code, 2, "reports seconds apart are refused with --min-gap 60s: {out}{err}");
    assert!(err.contains("--min-gap"), "{err}");
    let before = block(LAB_ETCD, BLOCK_KEY);
    let (code, out, err) = ipam(config, &[&base[..], &["--min-gap", "1s", "--json"]].concat());
    assert_eq!(code, 0, "{err}");
    let dry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["released"].as_array().unwrap().len(), 5, "{dry}");
    assert_eq!(block(LAB_ETCD, BLOCK_KEY), before, "a dry run writes nothing");
    let (code, out, err) = ipam(config, &[&base[..], &["--min-gap", "1s", "--json", "--yes"]].concat());
    assert_eq!(code, 0, "{err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    let released: BTreeSet<String> =
        done["released"].as_array().unwrap().iter().map(|r| r["ip"].as_str().unwrap().to_string()).collect();
    assert_eq!(&released, leaked, "{done}");
    assert_eq!(err.matches("ipam: released a leaked address").count(), 5, "one log line per address: {err}");
    let (after, _) = block(LAB_ETCD, BLOCK_KEY);
    let now = allocated(&after);
    for ip in leaked {
        assert!(!now.contains(&ip.rsplit('.').next().unwrap().parse().unwrap()), "{ip} still allocated");
    }
    for ip in running.iter().chain(kept.iter()) {
        assert!(now.contains(&ip.rsplit('.').next().unwrap().parse().unwrap()), "{ip} was released");
    }
}

/// Two tasks handed the same address (libcalico-go#989) and a running task's address
/// also held on another host: reported, and a release writes nothing.
fn doubles_are_reported_never_released(config: &Path, dir: &Path, running_ip: String) {
    let twins: Vec<Task> = {
        let _f = Faults;
        Faults::set(&format!("double {POOL}"));
        (0..2).map(|_| Task::start(&["--network", NET])).collect()
    };
    let twin_ip = task_ip(&twins[0]);
    assert_eq!(twin_ip, task_ip(&twins[1]), "the double switch hands the same address out twice");
    let other = format!("/calico/v1/host/{OTHER_HOST}/workload/libnetwork/libnetwork/endpoint/feedface");
    let value = json!({"state": "active", "name": "califeedface", "mac": "ee:ee:ee:ee:ee:ee", "ipv4_nets": [format!("{running_ip}/32")]});
    assert!(put(LAB_ETCD, &other, &value.to_string(), None));
    let (code, r) = check(config, &dir.join("c.json"));
    assert_eq!(code, 1);
    let shared = r["shared"].as_array().unwrap();
    let find =
        |ip: &str| shared.iter().find(|s| s["ip"] == ip).unwrap_or_else(|| panic!("{ip} not shared: {r}")).clone();
    assert_eq!(find(&twin_ip)["hosts"], 1, "held twice on this host");
    assert_eq!(find(&running_ip)["hosts"], 2, "held on two hosts");
    let broken = r["inconsistent_blocks"].as_array().unwrap();
    assert!(
        broken
            .iter()
            .any(|b| b["block"] == "10.69.0.0/26"
                && b["problems"].to_string().contains("both allocated and unallocated")),
        "{r}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let _ = check(config, &dir.join("d.json"));
    let before = block(LAB_ETCD, BLOCK_KEY);
    let (c, d) = (dir.join("c.json"), dir.join("d.json"));
    let (code, out, err) = ipam(
        config,
        &[
            "release",
            "--from-report",
            c.to_str().unwrap(),
            "--from-report",
            d.to_str().unwrap(),
            "--min-gap",
            "1s",
            "--pool",
            POOL,
            "--yes",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let done: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done["released"], json!([]), "{done}");
    assert_eq!(block(LAB_ETCD, BLOCK_KEY), before, "the inconsistent block is never written");
    drop(twins);
}

/// A test-owned etcd (v2 API) on free loopback ports; killed on drop.
struct OwnEtcd {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl OwnEtcd {
    fn start() -> OwnEtcd {
        let dir = tempfile::tempdir().unwrap();
        let (url, peer) = (format!("http://127.0.0.1:{}", free_port()), format!("http://127.0.0.1:{}", free_port()));
        let child = Command::new("etcd")
            .args(["--name", "t", "--enable-v2", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd (Debian's etcd-server) is needed");
        let e = OwnEtcd { child, url, _dir: dir };
        let t0 = Instant::now();
        while !curl(&[&format!("{}/v2/keys/", e.url)]).contains("\"action\"") {
            assert!(t0.elapsed() < Duration::from_secs(20), "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        e
    }
}

impl Drop for OwnEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request from `client` (head and Content-Length body).
fn read_request(client: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    client.read_exact(&mut body).ok()?;
    Some((head, body))
}

/// A proxy in front of `etcd` that, on the first compare-and-swap of a block, first
/// writes that block itself: the owner's late release of `freed` and a new allocation
/// of `taken` (handle-less). Then the release's write goes through (and fails).
fn racing_proxy(etcd: String, block_key: &'static str, freed: usize, taken: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let authority = etcd.trim_start_matches("http://").to_string();
    std::thread::spawn(move || {
        let mut raced = false;
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            let Some((head, body)) = read_request(&mut client) else { continue };
            let first = head.lines().next().unwrap_or_default().to_string();
            if !raced && first.starts_with("PUT ") && first.contains(block_key) && first.contains("prevIndex=") {
                raced = true;
                let (mut b, idx) = block(&etcd, block_key);
                b["allocations"][freed] = Value::Null;
                b["unallocated"].as_array_mut().unwrap().push(freed.into());
                b["allocations"][taken] = 0.into();
                b["unallocated"].as_array_mut().unwrap().retain(|o| o.as_u64() != Some(taken as u64));
                assert!(put(&etcd, block_key, &b.to_string(), Some(idx)), "the proxy's own write");
            }
            let head: String = head
                .split("\r\n")
                .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
                .map(|l| format!("{l}\r\n"))
                .collect();
            let mut upstream = TcpStream::connect(&authority).unwrap();
            upstream.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes()).unwrap();
            upstream.write_all(&body).unwrap();
            let mut answer = Vec::new();
            let _ = upstream.read_to_end(&mut answer);
            let _ = client.write_all(&answer);
        }
    });
    format!("http://{addr}")
}

#[test]
#[ignore = "needs Debian's etcd-server (starts its own etcd); tests/run.sh runs it"]
fn a_block_changed_just_before_the_write_is_read_again_and_decided_again() {
    const KEY: &str = "/calico/ipam/v2/assignment/ipv4/block/10.70.0.0-26";
    let etcd = OwnEtcd::start();
    let dir = tempfile::tempdir().unwrap();
    assert!(put(
        &etcd.url,
        "/calico/v1/ipam/v4/pool/10.70.0.0-16",
        r#"{"cidr":"10.70.0.0/16","disabled":false}"#,
        None
    ));
    let mut allocations = vec![Value::Null; 64];
    for a in allocations.iter_mut().take(6) {
        *a = 0.into();
    }
    let b = json!({"cidr": "10.70.0.0/26", "affinity": "host:h1", "strictAffinity": false, "allocations": allocations,
        "unallocated": (6..64).collect::<Vec<_>>(), "attributes": [{"handle_id": null, "secondary": null}]});
    assert!(put(&etcd.url, KEY, &b.to_string(), None));
    for o in [0, 1] {
        let key = format!("/calico/v1/host/h1/workload/libnetwork/libnetwork/endpoint/e{o}");
        assert!(put(&etcd.url, &key, &format!(r#"{{"ipv4_nets":["10.70.0.{o}/32"]}}"#), None));
    }
    let direct = config_for(dir.path(), &etcd.url);
    let (a, b_file) = (dir.path().join("a.json"), dir.path().join("b.json"));
    let (_, ra) = check(&direct, &a);
    std::thread::sleep(Duration::from_millis(1100));
    let (_, rb) = check(&direct, &b_file);
    let want: BTreeSet<String> = (2..6).map(|o| format!("10.70.0.{o}")).collect();
    for r in [&ra, &rb] {
        let got: BTreeSet<String> =
            r["leak_candidates"].as_array().unwrap().iter().map(|c| c["ip"].as_str().unwrap().to_string()).collect();
        assert_eq!(got, want);
    }
    let proxied_dir = tempfile::tempdir().unwrap();
    let proxied = config_for(proxied_dir.path(), &racing_proxy(etcd.url.clone(), KEY, 2, 10));
    let (code, out, err) = ipam(
        &proxied,
        &[
            "release",
            "--from-report",
            a.to_str().unwrap(),
            "--from-report",
            b_file.to_str().unwrap(),
            "--min-gap",
            "1s",
            "--yes",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let done: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(done["conflicts"], 1, "the compare-and-swap on the old prevIndex failed once: {done}");
    assert!(err.contains("block changed since it was read"), "{err}");
    let released: Vec<&str> = done["released"].as_array().unwrap().iter().map(|r| r["ip"].as_str().unwrap()).collect();
    assert_eq!(released, ["10.70.0.3", "10.70.0.4", "10.70.0.5"], "decided again: 2 was freed by its owner meanwhile");
    assert!(
        done["kept"].to_string().contains("10.70.0.2") && done["kept"].to_string().contains("released by someone else"),
        "{done}"
    );
    let (after, _) = block(&etcd.url, KEY);
    assert_eq!(
        allocated(&after),
        BTreeSet::from([0, 1, 10]),
        "the concurrent allocation of .10 was not overwritten: {after}"
    );
    let unallocated = after["unallocated"].as_array().unwrap();
    assert_eq!(unallocated.len(), 61, "{after}");
}
