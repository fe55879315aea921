//! Benchmarks (b), (c) and (d) of issue 15, on the lab's real engine (follows `DOCKER_HOST`).
//! Prints figures, asserts nothing. Root and the lab (`tests/lab/setup.sh`) needed.
//!
//!     cargo bench -p calico-medic --bench start -- storm     [--tasks 100] [--clients 8] [--runs 3]
//!     cargo bench -p calico-medic --bench start -- footprint [--tasks 500] [--idle 60] [--runs 3] [--probe-interval 30s[,1h…]]
//!     cargo bench -p calico-medic --bench start -- latency   [--tasks 40] [--runs 3]
//!     cargo bench -p calico-medic --bench start -- runtime   [--tasks 30] [--runs 3]
//!
//! - storm (b): N omit-MAC tasks (`calico-lab-nomac`) started by C docker clients at once, as
//!   fast as Docker takes them, with the daemon running. Each task's first act prints its
//!   cali0 MAC (ground truth for "repaired before its start"); after the last `docker run`
//!   returns, every task's cali0 is read over netlink until all carry ee:ee:ee:ee:ee:ee.
//! - footprint (c): N healthy calico tasks (`calico-lab`), the daemon started once they run,
//!   left to settle (first resync, every watch attached); then CPU (utime+stime of the
//!   process) over `--idle` seconds, RSS, and 20 `/metrics` scrapes (median, max).
//! - latency (d): N omit-MAC tasks one after another, first with the pre-start path (samples:
//!   veth moved → verified repair, and how far before Docker's `start` event it landed), then
//!   with `prestart.enabled = false` (samples: Docker's `start` event → verified repair).
//!   Samples come from the daemon's own log fields (`latency_ms`, `before_start_event_ms`).
//! - runtime (issue 23): `docker run -d` of an omit-MAC task with `--runtime calico-medic` (the
//!   runc wrapper and its prestart hook, as tests/lab/lib.sh registers them; this build linked
//!   in) and without, N of each interleaved; the ratio of the medians, against a target of 1.10.
//!
//! Every run prints its figures; the last line gives median and [min–max] over the runs.
//! Containers are labelled `calico-lab=1` and removed at the end of each run (also on panic).

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use calico_medic::netlink::Netlink;
use calico_medic::netns::{NsIdentity, TargetNetns};
use common::{docker, docker_ok, metric_sum, Daemon};

const IMAGE: &str = "calico-lab/busybox:latest";
const FIRST_ACT: &str = "cat /sys/class/net/cali0/address; exec sleep 1000000";
const CALICO_MAC: &str = "ee:ee:ee:ee:ee:ee";

struct Args {
    mode: String,
    tasks: Option<usize>,
    clients: usize,
    runs: usize,
    idle: u64,
    probe_interval: String,
}

fn usage() -> ! {
    eprintln!("usage: cargo bench -p calico-medic --bench start -- storm|footprint|latency|runtime [--tasks N] [--clients C] [--runs R] [--idle S] [--probe-interval D]");
    std::process::exit(2);
}

fn args() -> Args {
    let mut a = Args { mode: String::new(), tasks: None, clients: 8, runs: 3, idle: 60, probe_interval: "30s".into() };
    let mut it = std::env::args().skip(1).filter(|s| s != "--bench");
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--tasks" => a.tasks = Some(value().parse().unwrap_or_else(|_| usage())),
            "--clients" => a.clients = value().parse().unwrap_or_else(|_| usage()),
            "--runs" => a.runs = value().parse().unwrap_or_else(|_| usage()),
            "--idle" => a.idle = value().parse().unwrap_or_else(|_| usage()),
            "--probe-interval" => a.probe_interval = value(),
            m @ ("storm" | "footprint" | "latency" | "runtime") if a.mode.is_empty() => a.mode = m.to_string(),
            _ => usage(),
        }
    }
    if a.mode.is_empty() || a.runs == 0 || a.clients == 0 {
        usage();
    }
    a
}

/// The lab's sandbox directories (20.10's exec root and engine 2's), plus `extra` TOML.
fn config(extra: &str) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    let text = format!(
        "{extra}\n[prestart]\nsandbox_dirs = [\"/run/docker/netns\", \"/run/calico-lab/docker26/exec/netns\"]\n"
    );
    std::fs::write(f.path(), text).unwrap();
    f
}

fn prestart_off() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "[prestart]\nenabled = false\n").unwrap();
    f
}

/// Containers of one run, removed on drop.
struct Started(Vec<String>);

impl Drop for Started {
    fn drop(&mut self) {
        for chunk in self.0.chunks(100) {
            let mut args = vec!["rm", "-f"];
            args.extend(chunk.iter().map(String::as_str));
            let _ = docker(&args);
        }
    }
}

/// Starts `n` tasks from `clients` docker clients at once; returns when each `docker run` returned.
fn start_many(n: usize, clients: usize, network: &str, command: &str, started: &mut Started) -> Vec<Instant> {
    let per = n.div_ceil(clients);
    let results: Vec<(String, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let count = per.min(n.saturating_sub(c * per));
                s.spawn(move || {
                    (0..count)
                        .map(|_| {
                            let id = docker_ok(&[
                                "run",
                                "-d",
                                "--network",
                                network,
                                "--label",
                                "calico-lab=1",
                                IMAGE,
                                "sh",
                                "-c",
                                command,
                            ]);
                            (id, Instant::now())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("docker client thread")).collect()
    });
    results
        .into_iter()
        .map(|(id, at)| {
            started.0.push(id);
            at
        })
        .collect()
}

fn first_line_of_logs(id: &str) -> String {
    let out = docker(&["logs", id]);
    String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().trim().to_string()
}

fn pids(ids: &[String]) -> Vec<u32> {
    let mut args = vec!["inspect", "-f", "{{.State.Pid}}"];
    args.extend(ids.iter().map(String::as_str));
    docker_ok(&args).lines().map(|l| l.trim().parse().expect("pid")).collect()
}

async fn cali0_mac(pid: u32, host: NsIdentity) -> Option<String> {
    let ns = TargetNetns::open_pid(pid, host).ok()?;
    let nl = Netlink::in_netns(&ns).ok()?;
    nl.link_by_name("cali0").await.ok()??.mac.map(|m| m.to_string())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// "median [min–max]" of per-run figures.
fn spread(values: &[f64], unit: &str) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    format!("{:.2}{unit} [{:.2}–{:.2}]", percentile(&v, 0.5), v[0], v[v.len() - 1])
}

fn engine() -> String {
    docker_ok(&["version", "-f", "{{.Server.Version}}"])
}

fn storm(a: &Args) {
    let n = a.tasks.unwrap_or(100);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let host = NsIdentity::current_thread().unwrap();
    let (mut first_right, mut all_after, mut walls, mut before_counted) = (vec![], vec![], vec![], vec![]);
    for run in 1..=a.runs {
        let cfg = config("");
        let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
        let mut started = Started(Vec::new());
        let t0 = Instant::now();
        let returned = start_many(n, a.clients, "calico-lab-nomac", FIRST_ACT, &mut started);
        let last_start = returned.iter().max().copied().unwrap();
        let wall = last_start.duration_since(t0);
        // Every task's cali0, read over netlink, until all carry the calico MAC.
        let pids = pids(&started.0);
        let mut pending: Vec<u32> = pids.clone();
        let all_right_at = rt.block_on(async {
            let give_up = Instant::now() + Duration::from_secs(10);
            while !pending.is_empty() && Instant::now() < give_up {
                let mut still = Vec::new();
                for pid in pending {
                    if cali0_mac(pid, host).await.as_deref() != Some(CALICO_MAC) {
                        still.push(pid);
                    }
                }
                pending = still;
            }
            (pending.is_empty()).then(Instant::now)
        });
        let after = all_right_at.map(|t| t.duration_since(last_start).as_secs_f64() * 1000.0).unwrap_or(f64::NAN);
        let right = started.0.iter().filter(|id| first_line_of_logs(id) == CALICO_MAC).count();
        let m = d.metrics();
        let before = metric_sum(&m, "calico_medic_start_repairs_total{path=\"before_start\"}");
        let after_path = metric_sum(&m, "calico_medic_start_repairs_total{path=\"after_start\"}");
        println!(
            "storm run {run} (Docker {}): {n} omit-MAC tasks by {} clients in {:.1} s; {right}/{n} saw \
             ee:ee:ee:ee:ee:ee as their first act (repaired before their start); all {n} right {after:.1} ms \
             after the last `docker run` returned{}; daemon: {before} before Docker's start event, {after_path} after",
            engine(),
            a.clients,
            wall.as_secs_f64(),
            if all_right_at.is_none() { " (NOT all right within 10 s)" } else { "" },
        );
        first_right.push(right as f64);
        all_after.push(after);
        walls.push(wall.as_secs_f64());
        before_counted.push(before);
    }
    println!(
        "storm over {} runs: first act saw the calico MAC {} of {n}; all right {} after the last start; \
         {n} starts took {}; daemon's before_start count {}",
        a.runs,
        spread(&first_right, ""),
        spread(&all_after, " ms"),
        spread(&walls, " s"),
        spread(&before_counted, "")
    );
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap()
}

fn footprint(a: &Args) {
    let n = a.tasks.unwrap_or(500);
    let mut started = Started(Vec::new());
    let t0 = Instant::now();
    start_many(n, a.clients, "calico-lab", "exec sleep 1000000", &mut started);
    println!("footprint: {n} calico tasks started in {:.0} s (Docker {})", t0.elapsed().as_secs_f64(), engine());
    for interval in a.probe_interval.split(',') {
        let (mut cpus, mut rsss, mut scrapes_p50, mut scrapes_max) = (vec![], vec![], vec![], vec![]);
        for run in 1..=a.runs {
            let (cpu, rss, p50, max) = footprint_run(n, interval, a.idle, run);
            cpus.push(cpu);
            rsss.push(rss);
            scrapes_p50.push(p50);
            scrapes_max.push(max);
        }
        println!(
            "footprint over {} runs ({n} endpoints, probe interval {interval}): idle CPU {}, RSS {}, scrape median {} (max {})",
            a.runs,
            spread(&cpus, "%"),
            spread(&rsss, " MiB"),
            spread(&scrapes_p50, " ms"),
            spread(&scrapes_max, " ms"),
        );
    }
}

/// One daemon over `n` running tasks: (CPU % of a core, RSS MiB, scrape median ms, scrape max ms).
fn footprint_run(n: usize, interval: &str, idle: u64, run: usize) -> (f64, f64, f64, f64) {
    let hz = 100.0; // USER_HZ
    let cfg = config(&format!("[probe]\ninterval = \"{interval}\"\n"));
    let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    let pid = d.child.id();
    // Settled: every task checked once and watched (the first resync queues all of them).
    let settle_from = Instant::now();
    while d.metric("calico_medic_endpoints{state=\"healthy\"}").unwrap_or(0.0) < n as f64
        && settle_from.elapsed() < Duration::from_secs(300)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let settled = settle_from.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(idle));
    let c1 = cpu_ticks(pid);
    let cpu = (c1 - c0) as f64 / hz / idle as f64 * 100.0;
    let rss = rss_kib(pid) as f64 / 1024.0;
    let mut scrapes: Vec<f64> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let body = d.metrics();
            assert!(body.contains("calico_medic_endpoints"), "scrape failed");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    scrapes.sort_by(f64::total_cmp);
    let watches = d.metric("calico_medic_watches ").unwrap_or(f64::NAN);
    let (p50, max) = (percentile(&scrapes, 0.5), scrapes[scrapes.len() - 1]);
    println!(
        "footprint run {run}: {n} watched endpoints ({watches} watches; settled in {:.1} s), probe interval {interval}: \
         idle CPU {cpu:.2}% of one core over {idle} s, RSS {rss:.1} MiB, /metrics scrape median {p50:.2} ms max {max:.2} ms (20 scrapes)",
        settled.as_secs_f64(),
    );
    (cpu, rss, p50, max)
}

/// Values of `field=` in the daemon's log lines that contain `marker`.
fn log_field(log: &str, marker: &str, field: &str) -> Vec<f64> {
    let mut v: Vec<f64> = log
        .lines()
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let rest = l.split(&format!("{field}=")).nth(1)?;
            rest.split([' ', '"']).next()?.parse().ok()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The daemon's log while `n` omit-MAC tasks start one after another (tasks removed after).
fn daemon_log_over_tasks(cfg: &tempfile::NamedTempFile, n: usize) -> String {
    let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    let mut started = Started(Vec::new());
    start_many(n, 1, "calico-lab-nomac", FIRST_ACT, &mut started);
    std::thread::sleep(Duration::from_secs(1));
    let log = d.log_text();
    drop(d);
    log
}

fn latency(a: &Args) {
    let n = a.tasks.unwrap_or(40);
    // SAFETY (edition 2021: safe): set before any thread reads the environment.
    std::env::set_var("CALICO_MEDIC_LOG", "calico_medic=info,calico_medic::agent=debug,calico_medic::prestart=debug");
    let (mut pre50, mut pre99, mut margin50, mut post50, mut post99) = (vec![], vec![], vec![], vec![], vec![]);
    for run in 1..=a.runs {
        let log = daemon_log_over_tasks(&config(""), n);
        let pre = log_field(&log, "repaired in the sandbox", "latency_ms");
        let margin = log_field(&log, "confirmed after start", "before_start_event_ms");

        let log = daemon_log_over_tasks(&prestart_off(), n);
        let post = log_field(&log, "repaired after start", "latency_ms");
        println!(
            "latency run {run} (Docker {}): pre-start, veth moved → verified repair: p50 {:.2} ms p99 {:.2} ms ({} samples), \
             landing p50 {:.1} ms before Docker's start event (min {:.1}); post-start, start event → verified repair: \
             p50 {:.2} ms p99 {:.2} ms ({} samples)",
            engine(),
            percentile(&pre, 0.5),
            percentile(&pre, 0.99),
            pre.len(),
            percentile(&margin, 0.5),
            margin.first().copied().unwrap_or(f64::NAN),
            percentile(&post, 0.5),
            percentile(&post, 0.99),
            post.len(),
        );
        pre50.push(percentile(&pre, 0.5));
        pre99.push(percentile(&pre, 0.99));
        margin50.push(percentile(&margin, 0.5));
        post50.push(percentile(&post, 0.5));
        post99.push(percentile(&post, 0.99));
    }
    println!(
        "latency over {} runs ({n} tasks each): pre-start p50 {} p99 {} (p50 {} before the start event); post-start p50 {} p99 {}",
        a.runs,
        spread(&pre50, " ms"),
        spread(&pre99, " ms"),
        spread(&margin50, " ms"),
        spread(&post50, " ms"),
        spread(&post99, " ms"),
    );
}

fn main() {
    let a = args();
    if !nix::unistd::geteuid().is_root() || !common::lab_ready() {
        eprintln!("needs root and the lab (tests/lab/setup.sh)");
        std::process::exit(1);
    }
    match a.mode.as_str() {
        "storm" => storm(&a),
        "footprint" => footprint(&a),
        "latency" => latency(&a),
        "runtime" => runtime(&a),
        _ => usage(),
    }
}

/// `docker run -d` with the calico-medic runtime vs without, interleaved.
fn runtime(a: &Args) {
    let dir = std::path::Path::new("/run/calico-lab/runtime");
    for name in ["calico-medic-runtime", "calico-medic"] {
        let _ = std::fs::remove_file(dir.join(name));
        std::os::unix::fs::symlink(common::medic_bin(), dir.join(name)).expect("the lab's runtime directory");
    }
    std::fs::write(dir.join("config.toml"), "").unwrap();
    let n = a.tasks.unwrap_or(30);
    let mut ratios = Vec::new();
    for run in 1..=a.runs {
        let mut started = Started(Vec::new());
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for i in 0..2 * n {
            let hooked = i % 2 == 0;
            let mut args = vec!["run", "-d", "--network", "calico-lab-nomac", "--label", "calico-lab=1"];
            if hooked {
                args.extend(["--runtime", "calico-medic"]);
            }
            args.extend([IMAGE, "sh", "-c", FIRST_ACT]);
            let t = Instant::now();
            started.0.push(docker_ok(&args).trim().to_string());
            if hooked { &mut with } else { &mut without }.push(t.elapsed());
        }
        with.sort();
        without.sort();
        let ratio = with[n / 2].as_secs_f64() / without[n / 2].as_secs_f64();
        println!(
            "run {run}: docker run -d median {:.1?} with the runtime, {:.1?} without ({n} each): ratio {ratio:.3} (target ≤ 1.10)",
            with[n / 2],
            without[n / 2]
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "runtime: ratio median {:.3} [{:.3}–{:.3}] over {} runs (target ≤ 1.10)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        ratios.len()
    );
}
