//! The pre-start path under churn and odd hosts (issue 22), on the lab's real engine:
//! - 200 start/remove cycles of omit-MAC tasks: every one repaired, namespace inodes
//!   reused along the way, no fd or memory growth;
//! - a PID counter that wrapped (a low `ns_last_pid` behind 600 higher PIDs): the
//!   container is still named, and repaired before start;
//! - its host subscription overflowed while the agent was stopped: it rescans, and the
//!   next task is still repaired before start;
//!
//! Needs root, Docker and the lab; `tests/run.sh` runs it with `--include-ignored`.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::prestart::*;
use common::*;

const CALICO_MAC: &str = "ee:ee:ee:ee:ee:ee";

fn repaired_at_start(d: &Daemon) -> f64 {
    metric_sum(&d.metrics(), "calico_medic_start_repairs_total")
}

fn before_start(d: &Daemon) -> f64 {
    d.metric("calico_medic_start_repairs_total{path=\"before_start\"}").unwrap_or(0.0)
}

fn wait_until(within: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ok()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// The inode of a container's sandbox namespace (Docker's `SandboxKey`).
fn sandbox_inode(id: &str) -> u64 {
    let key = docker_ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", id]);
    std::fs::metadata(key.trim()).map(|m| m.ino()).unwrap_or(0)
}

/// Must show 2: 200 cycles; every omit-MAC start repaired (before or after start),
/// an inode reused, fds flat, RSS within 1.2× its value after the first 20 cycles.
#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn two_hundred_start_remove_cycles_repair_every_task_and_leak_nothing() {
    require_lab();
    let _serial = serial();
    let cfg = config();
    let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    let pid = d.child.id();
    d.settle();
    let fds0 = open_fds(pid);
    let (mut rss20, mut rss_max) = (0u64, 0u64);
    let mut inodes: Vec<u64> = Vec::new();
    let (mut saw_calico_mac, mut unrepaired) = (0, Vec::new());
    for cycle in 0..200 {
        let before = repaired_at_start(&d);
        let (id, _) = run_task(NOMAC, &[], FIRST_ACT).expect("docker run");
        let _gone = Started(vec![id.clone()]);
        inodes.push(sandbox_inode(&id));
        if first_line_of_logs(&id) == CALICO_MAC {
            saw_calico_mac += 1;
        }
        // Repaired (and confirmed by the post-start pass) before it is removed.
        if !wait_until(Duration::from_secs(10), || repaired_at_start(&d) > before) {
            unrepaired.push(cycle);
        }
        drop(_gone);
        if cycle == 19 {
            d.settle();
            rss20 = rss_kib(pid);
        }
        rss_max = rss_max.max(rss_kib(pid));
    }
    d.settle();
    let (fds, rss) = (open_fds(pid), rss_kib(pid));
    let mut sorted = inodes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let reused = inodes.len() - sorted.len();
    let m = d.metrics();
    let (b, a) = (
        metric_sum(&m, "calico_medic_start_repairs_total{path=\"before_start\"}"),
        metric_sum(&m, "calico_medic_start_repairs_total{path=\"after_start\"}"),
    );
    eprintln!(
        "churn: 200 omit-MAC cycles: repaired before start {b}, after start {a}; {saw_calico_mac} first reads saw \
         {CALICO_MAC}; {reused} starts got a namespace inode used before ({} distinct); fds {fds0} → {fds}; \
         RSS after 20 cycles {rss20} KiB, at the end {rss} KiB, max {rss_max} KiB",
        sorted.len()
    );
    assert!(unrepaired.is_empty(), "cycles not repaired: {unrepaired:?}; log:\n{}", d.log_text());
    assert_eq!(b + a, 200.0, "every omit-MAC start repaired once");
    // Each task gets its predecessor's namespace inode: bookkeeping keyed by the inode
    // alone skipped it as already configured (measured: 1 of 200 before start).
    assert!(b >= 180.0, "only {b} of 200 repaired before start");
    assert!(reused > 0, "no namespace inode was reused: reuse was not exercised");
    assert!(fds <= fds0 + 5, "fds {fds0} → {fds}");
    assert!(rss as f64 <= rss20 as f64 * 1.2, "RSS {rss20} KiB after 20 cycles → {rss} KiB");
}

/// Processes that hold PIDs above the ones the next task gets; killed on drop.
struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Issue 22: after the PID counter wrapped, `runc init` has a low PID behind many
/// higher ones. Stand-in for a wrap: 600 processes placed in the middle of the PID
/// space, then a low `ns_last_pid` just before `docker run` (lowering `pid_max` would
/// disturb other suites). The counter is placed both times: wherever it happens to
/// be (CI found it just past a real wrap, at 300), the sleepers end up above the task.
#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn a_wrapped_pid_counter_still_names_the_container_before_start() {
    require_lab();
    let _serial = serial();
    let cfg = config();
    let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    d.settle();
    let set_last_pid =
        |pid: u32| std::fs::write("/proc/sys/kernel/ns_last_pid", pid.to_string()).expect("write ns_last_pid");
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    assert!(pid_max >= 8192, "pid_max {pid_max} leaves no room for the stand-in wrap");
    set_last_pid(pid_max / 2);
    let spawn = || Command::new("sleep").arg("120").stdout(Stdio::null()).spawn().unwrap();
    let sleepers = Sleepers((0..600).map(|_| spawn()).collect());
    let lowest = sleepers.0.iter().map(Child::id).min().unwrap();
    let low = 1000;
    set_last_pid(low);
    let before = before_start(&d);
    let (id, _) = run_task(NOMAC, &[], FIRST_ACT).expect("docker run");
    let _gone = Started(vec![id.clone()]);
    let init: u32 = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &id]).trim().parse().unwrap();
    let first = first_line_of_logs(&id);
    let counted = wait_until(Duration::from_secs(10), || before_start(&d) > before);
    let higher = sleepers.0.iter().filter(|c| c.id() > init).count();
    eprintln!(
        "pid wrap: ns_last_pid set to {low}; the task's PID {init}, {higher} processes above it; first read {first}"
    );
    assert!(init < lowest, "the task got a PID ({init}) below the 600 processes (lowest {lowest})");
    assert_eq!(first, CALICO_MAC, "repaired before the task's first act; log:\n{}", d.log_text());
    assert!(counted, "counted as repaired before start; log:\n{}", d.log_text());
}

/// A host veth pair with many routes on one end (TEST-NET-2, 198.18.0.0/15):
/// notifications only, no traffic; removed (with its routes) on drop.
struct HostFlood;

impl HostFlood {
    fn run(routes: u32) -> HostFlood {
        let ip = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
        let _ = Command::new("ip").args(["link", "del", "cmflood0"]).stderr(Stdio::null()).status();
        ip(&["link", "add", "cmflood0", "type", "veth", "peer", "name", "cmflood1"]);
        ip(&["link", "set", "cmflood1", "up"]);
        ip(&["link", "set", "cmflood0", "up"]);
        let mut batch = tempfile::NamedTempFile::new().unwrap();
        let text: String = (0..routes)
            .map(|i| format!("route add {}/32 dev cmflood0\n", std::net::Ipv4Addr::from(0xc612_0000u32 + i)))
            .collect();
        std::io::Write::write_all(batch.as_file_mut(), text.as_bytes()).unwrap();
        ip(&["-batch", batch.path().to_str().unwrap()]);
        HostFlood
    }
}

impl Drop for HostFlood {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", "cmflood0"]).status();
    }
}

/// Issue 22: the pre-start path's host subscription overflows (the agent stopped
/// while 30,000 host route notifications arrive): it rescans, and stays working.
#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn an_overflow_of_the_prestart_subscription_rescans_and_it_keeps_working() {
    require_lab();
    let _serial = serial();
    let cfg = config();
    let mut d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    d.settle();
    let overflows = |d: &Daemon| d.metric("calico_medic_prestart_rescans_total{reason=\"overflow\"}").unwrap_or(0.0);
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let flood = HostFlood::run(30_000);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || overflows(&d) >= 1.0),
        "no overflow counted; log:\n{}",
        d.log_text()
    );
    drop(flood);
    let before = before_start(&d);
    let (id, _) = run_task(NOMAC, &[], FIRST_ACT).expect("docker run");
    let _gone = Started(vec![id.clone()]);
    let first = first_line_of_logs(&id);
    eprintln!("overflow: {} overflow rescans; the next task's first read {first}", overflows(&d));
    assert_eq!(first, CALICO_MAC, "still repaired before start; log:\n{}", d.log_text());
    assert!(wait_until(Duration::from_secs(10), || before_start(&d) > before), "counted before start");
    assert!(d.child.try_wait().unwrap().is_none(), "the agent still runs");
}
