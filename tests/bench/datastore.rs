//! Benchmark of issue 14 ("must show" 5), not a test: what a full read of Calico's
//! datastore and the diff against the host cost, with N endpoints (default 500) in a
//! real etcd (Debian's etcd-server 3.4, v2 API) that this program starts on free
//! loopback ports with its own data directory.
//!
//!   cargo bench -p calico-medic --bench datastore -- [N] [ROUNDS]
//!
//! Prints, over ROUNDS (default 30) rounds: the full read (GET of the host's endpoint
//! directory, parse into records) wall time and the agent's CPU time for it, the
//! answer's size, and the diff (every endpoint's datastore findings + the host's
//! orphans) time; median, p90, min and max. No root needed.

#[path = "synthetic_etcd.rs"]
mod synthetic_etcd;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Instant;

use calico_medic::config::Config;
use calico_medic::datastore::{endpoint_dir, endpoint_findings, orphans, Datastore, Settings};
use calico_medic::workload::{MacSource, CALICO_MAC};

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn stats(label: &str, unit: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pick = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    println!(
        "{label:<44} median {:>8.3} {unit}  p90 {:>8.3}  min {:>8.3}  max {:>8.3}  (n={})",
        pick(0.5),
        pick(0.9),
        v[0],
        v[v.len() - 1],
        v.len()
    );
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(500);
    let rounds = args.get(1).copied().unwrap_or(30).max(1);
    let data = tempfile::tempdir().unwrap();
    let (mut etcd, url) = synthetic_etcd::start_etcd(&data.path().join("data"));
    // The bench's own writer is a reqwest client too: one crypto provider for both.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let result = rt.block_on(async {
        let http = reqwest::Client::new();
        let host = "bench-host";
        let dir = endpoint_dir(host);
        let docker_ids = write_endpoints(&http, &url, &dir, n).await;
        let answer =
            http.get(format!("{url}/v2/keys{dir}?recursive=true")).send().await.unwrap().bytes().await.unwrap();
        println!("answer of one full read: {} bytes ({} per endpoint)", answer.len(), answer.len() / n.max(1));

        let mut config = Config::default();
        config.calico.etcd_endpoints = vec![url.clone()];
        config.calico.hostname = host.into();
        config.calico.calicoctl_config = String::new();
        let ds = Datastore::new(Settings::resolve(&config).unwrap().unwrap()).unwrap();
        ds.full_read().await.unwrap(); // warm the connection
        let (mut wall, mut cpu, mut diff) = (Vec::new(), Vec::new(), Vec::new());
        let mut faults = 0;
        let mut orphan_count = 0;
        for _ in 0..rounds {
            let (c0, t0) = (cpu_seconds(), Instant::now());
            let read = ds.full_read().await.unwrap();
            wall.push(t0.elapsed().as_secs_f64() * 1e3);
            cpu.push((cpu_seconds() - c0) * 1e3);
            assert_eq!(read.endpoints, n);
            let t1 = Instant::now();
            let view = ds.view();
            faults = 0;
            for (i, (id, rec)) in view.endpoints.iter().enumerate() {
                let ip = rec.ipv4[0].0;
                let sources = [(MacSource::HostNeighbour, Some(CALICO_MAC)), (MacSource::DockerInspect, None)];
                let key = format!("{dir}/{id}");
                faults += endpoint_findings(&ds.lookup(id), &key, ip, &sources).len();
                std::hint::black_box(i);
            }
            orphan_count = orphans(&view.endpoints, &docker_ids).len();
            diff.push(t1.elapsed().as_secs_f64() * 1e3);
        }
        assert_eq!((faults, orphan_count), (0, 1), "the bench's data has exactly one orphan and no findings");
        println!("{n} endpoints, {rounds} rounds (debug builds are ~10x slower: use cargo bench):");
        stats("full read (GET + parse), wall", "ms", wall);
        stats("full read, agent CPU (user+sys)", "ms", cpu);
        stats("diff (findings per endpoint + orphans)", "ms", diff);
        Ok::<(), String>(())
    });
    let _ = etcd.kill();
    let _ = etcd.wait();
    result.unwrap();
}

/// Starts etcd (v2 API) on free loopback ports with its data in `data`; its client URL.
/// Writes `n` endpoints under `dir` (once etcd answers); the ids of those that have a
/// container (every one but the last).
async fn write_endpoints(http: &reqwest::Client, url: &str, dir: &str, n: usize) -> HashSet<String> {
    let kv: Vec<(String, String)> = (0..n)
        .map(|i| {
            let id = format!("{i:064x}");
            let ip = Ipv4Addr::from(0x0a41_0000 + i as u32 + 1);
            let value = format!(
                r#"{{"state":"active","name":"cali{}","active_instance_id":"","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["calico-lab"],"ipv4_nets":["{ip}/32"],"ipv6_nets":[]}}"#,
                &id[..11]
            );
            (format!("{dir}/{id}"), value)
        })
        .collect();
    let took = synthetic_etcd::load(http, url, &kv).await;
    println!("wrote {n} endpoints to {url} in {took:.2?}");
    // Every endpoint but the last has a container.
    kv.iter().take(n.saturating_sub(1)).map(|(k, _)| k.rsplit('/').next().unwrap().to_string()).collect()
}
