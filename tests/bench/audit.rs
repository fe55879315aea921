//! Benchmark (a) of issue 15: audit throughput without Docker. Prints figures, asserts nothing.
//!
//!     cargo bench -p calico-medic --bench audit -- [N...] [--reps R] [--concurrency C]
//!
//! Root only. For each N (default 100 and 500) it builds N calico-like endpoints exactly as
//! `tests/netns_repair.rs` does (cali0 ee:ee:ee:ee:ee:ee with its /32, `169.254.1.1 dev cali0
//! scope link`, `default via 169.254.1.1 dev cali0` in a container namespace; the `cali…` veth
//! with proxy_arp, forwarding, the /32 route and the PERMANENT neighbour on the host side), all
//! host-side veths in ONE shared "host" namespace. Setup is not measured. Then, R times
//! (after one unmeasured warm-up round of each), interleaved:
//! - calico-medic's audit path over all N: `TargetNetns::open` → `Netlink::in_netns` →
//!   `endpoint_pass(.., Mode::Check, ..)`, one tokio task per endpoint bounded by a semaphore
//!   (C permits, default 8 = the daemon's `max_concurrent_checks`) on a multi-thread runtime;
//! - the operator's loop, sequential: `ip -n NS link show cali0; ip -n NS addr show cali0;
//!   ip -n NS route` per namespace (the three `ip` processes are spawned directly, output read
//!   and discarded: no `sh` in between, which slightly favours the loop).
//!
//! Every namespace it creates is named `cmbench<pid>…` and removed again: by a Drop guard (also on
//! panic) and by a SIGINT/SIGTERM handler.
//!
//! A `[[bench]]` target with `harness = false` (not an example or a test): `cargo bench` builds it
//! with the optimised profile the product ships with, it is not run by `cargo test`, and it is
//! still compiled and linted by `--all-targets`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calico_medic::medic::{endpoint_pass, Mode};
use calico_medic::netlink::Netlink;
use calico_medic::netns::{NsIdentity, TargetNetns};
use calico_medic::workload::{mac_candidates, Expected, Identity, CALICO_MAC};

const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// Every namespace created and not yet removed: the signal handler removes these.
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Set by the signal handler before it removes the namespaces under the main thread's feet.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// A setup step failed: panic (the Drop guard cleans up), unless an interrupt is removing the
/// namespaces anyway — then wait for its exit instead of reporting that as a failure.
fn fail(msg: String) -> ! {
    if INTERRUPTED.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
    panic!("{msg}");
}

fn usage() -> ! {
    eprintln!("usage: cargo bench -p calico-medic --bench audit -- [N...] [--reps R] [--concurrency C]");
    eprintln!("       N endpoints per round (default: 100 500), R measured repetitions (default 7, at least 5),");
    eprintln!("       C concurrent audits (default 8, as the daemon's max_concurrent_checks)");
    std::process::exit(2);
}

struct Args {
    sizes: Vec<usize>,
    reps: usize,
    concurrency: usize,
}

fn parse_args() -> Args {
    let mut args = Args { sizes: Vec::new(), reps: 7, concurrency: 8 };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> usize {
            it.next().and_then(|v| v.parse().ok()).filter(|&v| v > 0).unwrap_or_else(|| {
                eprintln!("audit: {name} needs a positive number");
                usage()
            })
        };
        match a.as_str() {
            // `cargo bench` passes --bench to every bench binary.
            "--bench" => {}
            "--reps" => args.reps = value("--reps").max(5),
            "--concurrency" => args.concurrency = value("--concurrency"),
            "-h" | "--help" => usage(),
            n => match n.parse::<usize>() {
                Ok(n) if (1..=5000).contains(&n) => args.sizes.push(n),
                _ => {
                    eprintln!("audit: unknown argument {n:?}");
                    usage()
                }
            },
        }
    }
    if args.sizes.is_empty() {
        args.sizes = vec![100, 500];
    }
    args
}

fn ip_batch(ns: Option<&str>, script: &str) {
    use std::io::Write;
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ip -batch");
    child.stdin.take().unwrap().write_all(script.as_bytes()).expect("write ip batch");
    let out = child.wait_with_output().expect("wait for ip -batch");
    if !out.status.success() {
        fail(format!("ip {ns:?} -batch failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().expect("run sh");
    if !st.success() {
        fail(format!("sh -c {cmd:?} failed"));
    }
}

fn remove_namespaces(names: &[String]) {
    if names.is_empty() {
        return;
    }
    let script: String = names.iter().map(|n| format!("netns del {n}\n")).collect();
    // -force: keep going past a namespace that is already gone.
    let _ = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait()
        });
}

/// One shared host namespace and N container namespaces; removed on drop.
struct Endpoints {
    host: String,
    ctrs: Vec<String>,
    host_ifs: Vec<String>,
    ips: Vec<Ipv4Addr>,
}

impl Endpoints {
    fn build(n: usize) -> Endpoints {
        let tag = format!("cmbench{}n{n}", std::process::id());
        let host = format!("{tag}h");
        let ctrs: Vec<String> = (0..n).map(|i| format!("{tag}c{i}")).collect();
        let host_ifs: Vec<String> = (0..n).map(|i| format!("cali{i:011}")).collect();
        let ips: Vec<Ipv4Addr> = (0..n).map(|i| Ipv4Addr::new(10, 252, (i / 250) as u8, (i % 250 + 2) as u8)).collect();
        let all: Vec<String> = std::iter::once(host.clone()).chain(ctrs.iter().cloned()).collect();
        {
            // Registered before they exist, so an interrupt during creation removes them too.
            let mut created = CREATED.lock().unwrap();
            created.extend(all.iter().cloned());
            let script: String = all.iter().map(|n| format!("netns add {n}\n")).collect();
            ip_batch(None, &script);
        }
        let eps = Endpoints { host, ctrs, host_ifs, ips };
        let h = &eps.host;
        // Host side, as tests/netns_repair.rs: an uplink (so proxy ARP has somewhere else to
        // route 169.254.1.1), then per endpoint the veth, /32 route and PERMANENT neighbour.
        let mut host_script = String::from(
            "link add up0 type veth peer name up1\nlink set up0 up\nlink set up1 up\n\
             addr add 10.250.0.1/24 dev up0\nroute add default dev up0\n",
        );
        for ((hi, c), ip) in eps.host_ifs.iter().zip(&eps.ctrs).zip(&eps.ips) {
            host_script.push_str(&format!(
                "link add {hi} type veth peer name cali0 netns {c}\nlink set {hi} up\n\
                 route add {ip}/32 dev {hi} scope link proto boot\n\
                 neigh replace {ip} lladdr ee:ee:ee:ee:ee:ee dev {hi} nud permanent\n"
            ));
        }
        ip_batch(Some(h), &host_script);
        sh(&format!(
            "ip netns exec {h} sh -c 'for i in /proc/sys/net/ipv4/conf/cali*; do i=${{i##*/}}; \
             echo 1 > /proc/sys/net/ipv4/conf/$i/proxy_arp; echo 0 > /proc/sys/net/ipv4/neigh/$i/proxy_delay; \
             echo 1 > /proc/sys/net/ipv4/conf/$i/forwarding; done'"
        ));
        for (c, ip) in eps.ctrs.iter().zip(&eps.ips) {
            ip_batch(
                Some(c),
                &format!(
                    "link set lo up\nlink set cali0 address ee:ee:ee:ee:ee:ee\naddr add {ip}/32 dev cali0\n\
                     link set cali0 up\nroute add 169.254.1.1 dev cali0 scope link proto boot\n\
                     route add default via 169.254.1.1 dev cali0 proto boot\n"
                ),
            );
        }
        eps
    }

    fn expected(&self, i: usize) -> Expected {
        // The host's PERMANENT entry says ee:ee:…, as Felix programs it.
        let candidates = mac_candidates(None, Some(CALICO_MAC), None);
        Expected::resolve("cali0", self.host_ifs[i].clone(), self.ips[i], GW, &candidates)
    }
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        let mut all = self.ctrs.clone();
        all.push(self.host.clone());
        remove_namespaces(&all);
        CREATED.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| !all.contains(n));
    }
}

/// One round of calico-medic's audit path over every endpoint. Returns (wall time,
/// per-endpoint latencies, endpoints that did not come back healthy).
async fn medic_round(
    jobs: &Arc<Vec<(PathBuf, Expected)>>,
    host: NsIdentity,
    concurrency: usize,
) -> (Duration, Vec<Duration>, usize) {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(jobs.len());
    for i in 0..jobs.len() {
        let (jobs, permits) = (jobs.clone(), permits.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            let (path, expected) = &jobs[i];
            let t = Instant::now();
            let ns = TargetNetns::open(path, host).unwrap_or_else(|e| fail(format!("open {}: {e}", path.display())));
            let nl = Netlink::in_netns(&ns).unwrap_or_else(|e| fail(format!("netlink in {}: {e}", path.display())));
            let pass = endpoint_pass(&nl, expected, &[], Mode::Check, &Identity::named("bench"))
                .await
                .unwrap_or_else(|e| fail(format!("check pass in {}: {e}", path.display())));
            (t.elapsed(), pass.faults.is_empty())
        }));
    }
    let mut lat = Vec::with_capacity(jobs.len());
    let mut unhealthy = 0;
    for t in tasks {
        let (d, healthy) = t.await.expect("audit task");
        lat.push(d);
        unhealthy += usize::from(!healthy);
    }
    (start.elapsed(), lat, unhealthy)
}

/// One round of the operator's loop, sequential. Returns (wall time, per-namespace times, failures).
fn shell_round(ctrs: &[String]) -> (Duration, Vec<Duration>, usize) {
    let start = Instant::now();
    let mut lat = Vec::with_capacity(ctrs.len());
    let mut failed = 0;
    for ns in ctrs {
        let t = Instant::now();
        for args in [&["link", "show", "cali0"][..], &["addr", "show", "cali0"], &["route"]] {
            let out = Command::new("ip").arg("-n").arg(ns).args(args).output().expect("run ip");
            failed += usize::from(!out.status.success() || out.stdout.is_empty());
        }
        lat.push(t.elapsed());
    }
    (start.elapsed(), lat, failed)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Stats {
    /// Wall time of each measured round.
    walls: Vec<Duration>,
    /// Every endpoint's own time, all rounds pooled.
    lat: Vec<Duration>,
    bad: usize,
}

impl Stats {
    fn new() -> Stats {
        Stats { walls: Vec::new(), lat: Vec::new(), bad: 0 }
    }
    fn add(&mut self, (wall, lat, bad): (Duration, Vec<Duration>, usize)) {
        self.walls.push(wall);
        self.lat.extend(lat);
        self.bad += bad;
    }
    /// (median, min, max) wall time in ms.
    fn wall_ms(&self) -> (f64, f64, f64) {
        let mut w: Vec<f64> = self.walls.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        let m = median(&mut w);
        (m, w[0], w[w.len() - 1])
    }
    fn per_endpoint_us(&self, n: usize) -> f64 {
        self.wall_ms().0 * 1e3 / n as f64
    }
    fn lat_us(&mut self) -> (f64, f64, f64) {
        self.lat.sort();
        let mean = self.lat.iter().map(|d| d.as_secs_f64()).sum::<f64>() / self.lat.len() as f64;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        (mean * 1e6, us(percentile(&self.lat, 50.0)), us(percentile(&self.lat, 99.0)))
    }
}

struct Row {
    n: usize,
    medic: Stats,
    shell: Stats,
}

fn install_signal_cleanup(rt: &tokio::runtime::Runtime) {
    rt.spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        INTERRUPTED.store(true, Ordering::SeqCst);
        eprintln!("\naudit: interrupted, removing the namespaces it created");
        // Holding the lock until exit keeps the main thread from creating more.
        let created = CREATED.lock().unwrap_or_else(|e| e.into_inner());
        remove_namespaces(&created);
        std::process::exit(130);
    });
}

fn main() {
    let args = parse_args();
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "audit: needs root (it creates network namespaces and enters them); run it as root, e.g.\n  \
             sudo -E cargo bench -p calico-medic --bench audit"
        );
        std::process::exit(2);
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("audit: needs iproute2's `ip` on PATH to build the namespaces and run the shell loop");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    install_signal_cleanup(&rt);
    let host = NsIdentity::current_thread().expect("host namespace identity");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "audit benchmark: N = {:?}, {} measured rounds each (+1 warm-up), concurrency {}, {} tokio workers; loadavg {}",
        args.sizes,
        args.reps,
        args.concurrency,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load.trim()
    );
    let mut rows = Vec::new();
    for &n in &args.sizes {
        let t = Instant::now();
        let eps = Endpoints::build(n);
        println!("N={n}: built {n} endpoints (+1 host namespace) in {:.1} s (not measured)", t.elapsed().as_secs_f64());
        let jobs: Arc<Vec<(PathBuf, Expected)>> =
            Arc::new((0..n).map(|i| (PathBuf::from(format!("/run/netns/{}", eps.ctrs[i])), eps.expected(i))).collect());
        let (mut medic, mut shell) = (Stats::new(), Stats::new());
        // Warm-up round of each: one-time work (kernel feature probes, page cache for `ip`).
        let warm = rt.block_on(medic_round(&jobs, host, args.concurrency));
        assert_eq!(warm.2, 0, "N={n}: a freshly built endpoint is not healthy: the setup is wrong");
        shell_round(&eps.ctrs);
        for r in 0..args.reps {
            medic.add(rt.block_on(medic_round(&jobs, host, args.concurrency)));
            shell.add(shell_round(&eps.ctrs));
            println!(
                "  round {}: calico-medic {:8.2} ms   shell {:9.1} ms",
                r + 1,
                medic.walls[r].as_secs_f64() * 1e3,
                shell.walls[r].as_secs_f64() * 1e3
            );
        }
        if medic.bad + shell.bad > 0 {
            println!("  WARNING: {} unhealthy audits, {} failed ip commands", medic.bad, shell.bad);
        }
        drop(eps);
        rows.push(Row { n, medic, shell });
    }
    print_table(&mut rows, args.concurrency);
    println!("loadavg at the end: {}", std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim());
}

fn print_table(rows: &mut [Row], concurrency: usize) {
    println!();
    println!("wall = one round over all N endpoints: median [min–max] over the rounds; /ep = median wall / N;");
    println!("p50/p99 = each endpoint's own time (calico-medic: up to {concurrency} in flight), all rounds pooled");
    println!();
    println!(
        "{:>5} | {:>26} {:>8} {:>8} {:>8} | {:>28} {:>8} {:>8} {:>8} | {:>8}",
        "N",
        "calico-medic wall ms",
        "/ep µs",
        "p50 µs",
        "p99 µs",
        "shell loop wall ms",
        "/ep µs",
        "p50 µs",
        "p99 µs",
        "speed-up"
    );
    for row in rows.iter_mut() {
        let (mm, mlo, mhi) = row.medic.wall_ms();
        let (sm, slo, shi) = row.shell.wall_ms();
        let (_, mp50, mp99) = row.medic.lat_us();
        let (_, sp50, sp99) = row.shell.lat_us();
        println!(
            "{:>5} | {:>26} {:>8.1} {:>8.0} {:>8.0} | {:>28} {:>8.0} {:>8.0} {:>8.0} | {:>7.0}×",
            row.n,
            format!("{mm:.2} [{mlo:.2}–{mhi:.2}]"),
            row.medic.per_endpoint_us(row.n),
            mp50,
            mp99,
            format!("{sm:.1} [{slo:.1}–{shi:.1}]"),
            row.shell.per_endpoint_us(row.n),
            sp50,
            sp99,
            sm / mm
        );
    }
    println!();
    println!("targets (issue 15, benchmark a):");
    for row in rows.iter() {
        let speedup = row.shell.wall_ms().0 / row.medic.wall_ms().0;
        let per = row.medic.per_endpoint_us(row.n);
        println!(
            "  N={:<4} ≥ 50× faster: {} ({speedup:.0}×)   ≤ 100 µs per endpoint: {} ({per:.1} µs)",
            row.n,
            yes(speedup >= 50.0),
            yes(per <= 100.0)
        );
    }
    let small = rows.iter().min_by_key(|r| r.n);
    let large = rows.iter().max_by_key(|r| r.n);
    match (small, large) {
        (Some(s), Some(l)) if l.n > s.n => {
            let ratio = l.medic.per_endpoint_us(l.n) / s.medic.per_endpoint_us(s.n);
            println!(
                "  linear in N (per endpoint at N={} within 1.5× of N={}): {} ({ratio:.2}×)",
                l.n,
                s.n,
                yes(ratio <= 1.5)
            );
        }
        _ => println!("  linear in N: n/a (needs two sizes)"),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}
