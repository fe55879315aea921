//! Benchmark of issue 26, not a test: the agent's across-hosts rounds on a simulated
//! 1,000-host cluster in a real etcd (Debian's etcd-server, v2 API) that this program
//! starts on free loopback ports: H hosts (default 1,000) with one /26 block each, a BGP
//! address each, E endpoints (default 50,000) spread over them. One agent ("host-0")
//! then runs ROUNDS rounds as `sources::bgp` does: the datastore's topology (three
//! recursive reads), the check of every other host's block against a route table that
//! routes all but 10 of them (built here: the machine's own table is not touched), and
//! one probe round's reads (`remote_hosts_per_round` hosts' endpoint records; the echoes
//! themselves are one packet per host, counted, not sent).
//!
//!   cargo bench -p calico-medic --bench bgp -- [HOSTS] [ENDPOINTS] [ROUNDS] [PER_ROUND]
//!
//! Prints per round: wall time and CPU seconds; the process's resident set before and during the rounds;
//! and the echoes per second at a 10 s `probe.interval`. No root, no Docker.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use calico_medic::bgp;
use calico_medic::datastore::{EtcdClient, Settings};
use calico_medic::netlink::RouteEntry;

#[path = "synthetic_etcd.rs"]
mod synthetic_etcd;
use synthetic_etcd::{load, start_etcd};

fn block(h: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + (h as u32) * 64)
}

fn host_ip(h: usize) -> Ipv4Addr {
    Ipv4Addr::from(0xac10_0000 + h as u32 + 1)
}

fn cluster(hosts: usize, endpoints: usize) -> Vec<(String, String)> {
    let mut kv = vec![(
        "/calico/v1/ipam/v4/pool/10.0.0.0-16".to_string(),
        r#"{"cidr":"10.0.0.0/16","ipip":"","ipip_mode":"","masquerade":false,"ipam":true,"disabled":false}"#.into(),
    )];
    let per_host = endpoints.div_ceil(hosts).min(62);
    for h in 0..hosts {
        kv.push((format!("/calico/ipam/v2/host/host-{h}/ipv4/block/{}-26", block(h)), "{}".into()));
        kv.push((format!("/calico/bgp/v1/host/host-{h}/ip_addr_v4"), host_ip(h).to_string()));
        for o in 0..per_host {
            let id = format!("{h:08x}{o:056x}");
            let ip = Ipv4Addr::from(u32::from(block(h)) + o as u32 + 1);
            kv.push((
                format!("/calico/v1/host/host-{h}/workload/libnetwork/libnetwork/endpoint/{id}"),
                format!(
                    r#"{{"state":"active","name":"cali{}","active_instance_id":"","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["net"],"ipv4_nets":["{ip}/32"],"ipv6_nets":[]}}"#,
                    &id[..11]
                ),
            ));
        }
    }
    kv
}

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The process's resident set now (VmRSS), MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kib.unwrap_or(0.0) / 1024.0
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let get = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let (hosts, endpoints, rounds, per_round) = (get(0, 1000), get(1, 50_000), get(2, 5), get(3, 16));
    let dir = tempfile::tempdir().unwrap();
    let (mut etcd, url) = start_etcd(&dir.path().join("data"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let kv = cluster(hosts, endpoints);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let took = rt.block_on(load(&http, &url, &kv));
    println!("loaded {} keys ({hosts} hosts, {endpoints} endpoints) in {took:.1?}", kv.len());
    drop(kv);
    let settings = Settings {
        endpoints: vec![url.clone()],
        ca_file: None,
        cert_file: None,
        key_file: None,
        username: None,
        password: None,
        hostname: "host-0".into(),
        origin: "bench".into(),
        call_timeout: Duration::from_secs(10),
        full_read_interval: Duration::from_secs(300),
        watch_timeout: Duration::from_secs(60),
        max_answer_bytes: 64 << 20,
    };
    let client = EtcdClient::new(&settings).unwrap();
    // This host's table: a route to every other host's block via its address, but 10.
    let routes: Vec<RouteEntry> = (11..hosts)
        .map(|h| RouteEntry { destination: block(h), prefix_len: 26, gateway: Some(host_ip(h)), oif: Some(2) })
        .collect();
    let links = HashMap::from([(2, "eth0".to_string())]);
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    let rss_before = rss_mib();
    let mut rss_max = rss_before;
    let mut state = bgp::RemoteState::default();
    for i in 0..rounds.max(1) {
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let (unrouted, probed) = rt.block_on(async {
            let topo = bgp::read_topology(&client).await.unwrap();
            let unrouted = bgp::unrouted("host-0", &topo, &routes, &links).len();
            let remote: Vec<String> = topo.remote_hosts("host-0").cloned().collect();
            let (chosen, cursor) = bgp::remote::pick(&remote, state.cursor, per_round);
            state.cursor = cursor;
            let mut probed = 0;
            for h in &chosen {
                let eps = bgp::remote_endpoints(&client, h).await.unwrap();
                let _ = &eps[state.next_endpoint(h, eps.len())];
                probed += 1;
            }
            (unrouted, probed)
        });
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        println!(
            "round {i}: {wall:.3} s wall, {cpu:.3} s CPU, {unrouted} blocks unrouted (want 10), {probed} hosts probed"
        );
        walls.push(wall);
        cpus.push(cpu);
        rss_max = rss_max.max(rss_mib());
    }
    walls.sort_by(|a, b| a.partial_cmp(b).unwrap());
    cpus.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pps = bgp::remote::probes_per_second(per_round, hosts - 1, 10.0);
    println!(
        "across hosts on {hosts} hosts / {endpoints} endpoints: round median {:.3} s wall, {:.3} s CPU; RSS {rss_before:.1} MiB before the rounds, {rss_max:.1} MiB at most during them; {pps:.1} echoes/s at a 10 s interval ({per_round} hosts per round, each host every {:.1} min)",
        walls[walls.len() / 2],
        cpus[cpus.len() / 2],
        10.0 * (hosts - 1) as f64 / per_round as f64 / 60.0
    );
    let _ = etcd.kill();
    let _ = etcd.wait();
}
