//! Benchmark of issue 25, not a test: `calico-medic ipam check` on a synthetic cluster
//! in a real etcd (Debian's etcd-server 3.4, v2 API) that this program starts on free
//! loopback ports: H hosts (default 1,000), one host-affine /26 block each (64,000
//! addresses), E endpoints (default 50,000) spread over them, 2 leaked addresses per
//! block and the rest free.
//!
//!   cargo bench -p calico-medic --bench ipam -- [HOSTS] [ENDPOINTS] [ROUNDS]
//!
//! Prints the load time, the size of etcd's answers, and over ROUNDS (default 5) runs
//! of the release build's `ipam check --json` (a process each): wall time and peak RSS
//! (the child's `ru_maxrss`); median, min, max. No root, no Docker.

use std::process::{Command, Stdio};
use std::time::Instant;

#[path = "synthetic_etcd.rs"]
mod synthetic_etcd;
use synthetic_etcd::{load, start_etcd};

/// (key, value) of the synthetic cluster.
fn cluster(hosts: usize, endpoints: usize) -> Vec<(String, String)> {
    let mut kv = vec![(
        "/calico/v1/ipam/v4/pool/10.0.0.0-16".to_string(),
        r#"{"cidr":"10.0.0.0/16","ipip":"","ipip_mode":"","masquerade":false,"ipam":true,"disabled":false}"#
            .to_string(),
    )];
    let per_host = endpoints.div_ceil(hosts);
    let mut left = endpoints;
    for h in 0..hosts {
        let base = (h * 64) as u32;
        let ip = |o: u32| std::net::Ipv4Addr::from(0x0a00_0000 + base + o);
        let held = per_host.min(left).min(62);
        left -= held;
        let allocated = held + 2; // two leaked
        let allocations: Vec<String> =
            (0..64).map(|o| if o < allocated { "0".into() } else { "null".into() }).collect();
        let unallocated: Vec<String> = (allocated..64).map(|o| o.to_string()).collect();
        let cidr = format!("{}/26", ip(0));
        kv.push((
            format!("/calico/ipam/v2/assignment/ipv4/block/{}-26", ip(0)),
            format!(
                r#"{{"cidr":"{cidr}","affinity":"host:host-{h}","strictAffinity":false,"allocations":[{}],"unallocated":[{}],"attributes":[{{"handle_id":null,"secondary":null}}]}}"#,
                allocations.join(","),
                unallocated.join(",")
            ),
        ));
        kv.push((format!("/calico/ipam/v2/host/host-{h}/ipv4/block/{}-26", ip(0)), "{}".into()));
        for o in 0..held {
            let id = format!("{h:08x}{o:056x}");
            kv.push((
                format!("/calico/v1/host/host-{h}/workload/libnetwork/libnetwork/endpoint/{id}"),
                format!(
                    r#"{{"state":"active","name":"cali{}","active_instance_id":"","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["net"],"ipv4_nets":["{}/32"],"ipv6_nets":[]}}"#,
                    &id[..11],
                    ip(o as u32)
                ),
            ));
        }
    }
    kv
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// One `ipam check` as a child process: (wall seconds, peak RSS KiB, exit code, leak candidates).
fn run_check(bin: &str, config: &std::path::Path) -> (f64, i64, i32, usize) {
    let t0 = Instant::now();
    let child = Command::new(bin)
        .args(["ipam", "check", "--json", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let leaks = report["leak_candidates"].as_array().map(Vec::len).unwrap_or(0);
    (wall, u.ru_maxrss, out.status.code().unwrap_or(-1), leaks)
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (hosts, endpoints, rounds) = (
        args.first().copied().unwrap_or(1000),
        args.get(1).copied().unwrap_or(50_000),
        args.get(2).copied().unwrap_or(5),
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut etcd, url) = start_etcd(&dir.path().join("data"));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let kv = cluster(hosts, endpoints);
    let load = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let took = load(&http, &url, &kv).await;
        for dir in ["/calico/ipam/v2/assignment/ipv4/block", "/calico/v1/host"] {
            let body =
                http.get(format!("{url}/v2/keys{dir}?recursive=true")).send().await.unwrap().bytes().await.unwrap();
            println!("etcd answer for {dir}: {:.1} MiB", body.len() as f64 / 1048576.0);
        }
        took
    });
    println!(
        "loaded {} keys ({hosts} hosts, {hosts} blocks = {} addresses, {endpoints} endpoints) in {load:.1?}",
        kv.len(),
        hosts * 64
    );
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[calico]\netcd_endpoints = [\"{url}\"]\ncalicoctl_config = \"\"\nhostname = \"bench\"\n"),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_calico-medic");
    let mut walls = Vec::new();
    let mut peak = 0;
    for i in 0..rounds.max(1) {
        let (wall, rss, code, leaks) = run_check(bin, &config);
        println!("round {i}: ipam check {wall:.3} s, exit {code}, {leaks} leak candidates (want {})", 2 * hosts);
        walls.push(wall);
        peak = peak.max(rss);
    }
    let (m, lo, hi) = median(walls);
    println!("ipam check on {hosts} hosts / {hosts} blocks / {endpoints} endpoints: median {m:.3} s [{lo:.3}–{hi:.3}], peak RSS {:.1} MiB", peak as f64 / 1024.0);
    let _ = etcd.kill();
    let _ = etcd.wait();
}
