//! Live endpoint watch on the lab: breakage after start is repaired within
//! milliseconds, without polling, without touching bystanders, without leaking
//! sockets or namespaces, and with backoff for endpoints that keep changing.

// Each test owns its runtime; the serial guard deliberately spans the whole test.
#![allow(clippy::await_holding_lock)]

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use calico_medic::netlink::Netlink;
use calico_medic::netns::{NsIdentity, TargetNetns};
use calico_medic::repair::{apply, Action};
use calico_medic::workload::MacAddr;
use common::*;
use rtnetlink::packet_route::route::RouteProtocol;
use rtnetlink::RouteMessageBuilder;

const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// A netlink session inside a task's namespace, for breaking it and watching it heal
/// at netlink speed (no process spawns in the timed path).
struct Probe {
    session: Netlink,
}

impl Probe {
    fn attach(task: &Task) -> Probe {
        let pid: u32 = task.pid().parse().unwrap();
        let ns = TargetNetns::open_pid(pid, NsIdentity::current_thread().unwrap()).unwrap();
        Probe { session: Netlink::in_netns(&ns).unwrap() }
    }

    async fn index(&self) -> u32 {
        self.session.link_by_name("cali0").await.unwrap().unwrap().index
    }

    async fn break_it(&self, kind: &str) {
        let h = self.session.handle();
        let index = self.index().await;
        match kind {
            "mac" => {
                let mac: MacAddr = random_mac().parse().unwrap();
                apply(&self.session, index, &Action::SetMac { interface: "cali0".into(), mac }).await.unwrap();
            }
            "down" => {
                let msg = rtnetlink::LinkUnspec::new_with_index(index).down().build();
                h.link().set(msg).execute().await.unwrap();
            }
            "default-route" => {
                let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(GW)
                    .output_interface(index)
                    .protocol(RouteProtocol::Boot)
                    .build();
                let _ = h.route().del(msg).execute().await;
            }
            other => panic!("unknown break {other}"),
        }
    }

    async fn healthy(&self) -> bool {
        let Ok(Some(link)) = self.session.link_by_name("cali0").await else { return false };
        let routes = self.session.ipv4_main_routes().await.unwrap_or_default();
        link.admin_up
            && link.mac == Some(calico_medic::workload::CALICO_MAC)
            && routes.iter().any(|r| r.prefix_len == 0 && r.gateway == Some(GW))
            && routes.iter().any(|r| r.prefix_len == 32 && r.destination == GW)
    }

    /// Time from now until the endpoint is healthy again (polling netlink every 0.5 ms).
    async fn time_to_heal(&self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.healthy().await {
                return Some(start.elapsed());
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        None
    }
}

fn lenient_backoff_config() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    // Latency is measured here, not backoff: allow many repairs per task.
    std::fs::write(f.path(), "[backoff]\nmax_repairs = 1000\n").unwrap();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
async fn breaks_after_start_are_repaired_within_100ms() {
    require_lab();
    let _serial = serial();
    let cfg = lenient_backoff_config();
    let daemon = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    let task = Task::start(&["--app", "watch-latency"]);
    let probe = Probe::attach(&task);
    assert!(probe.time_to_heal(Duration::from_secs(2)).await.is_some(), "task healthy at start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut all = Vec::new();
    for kind in ["mac", "default-route", "down"] {
        let mut lat = Vec::new();
        for _ in 0..10 {
            probe.break_it(kind).await;
            let t = probe.time_to_heal(Duration::from_secs(2)).await;
            let t = t.unwrap_or_else(|| panic!("{kind} never repaired; log:\n{}", daemon.log_text()));
            lat.push(t);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        lat.sort();
        eprintln!("{kind}: median {:?} max {:?}", percentile(&lat, 0.5), lat[lat.len() - 1]);
        assert!(lat[lat.len() - 1] < Duration::from_millis(100), "{kind}: slowest repair {:?}", lat[lat.len() - 1]);
        all.extend(lat);
    }
    all.sort();
    eprintln!(
        "break→repair over {} breaks: median {:?}, p99 {:?}",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    assert!(task.reachable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
async fn random_breaks_over_twenty_tasks_heal_and_bystanders_are_untouched() {
    require_lab();
    let _serial = serial();
    let daemon = Daemon::start(&[]);
    let pid = daemon.child.id();
    let watches_before = daemon.settle();
    let baseline = fd_census(pid);
    let tasks: Vec<Task> = (0..20).map(|i| Task::start(&["--app", &format!("storm-{}", i % 4)])).collect();
    let bystanders: Vec<Task> = ["bridge", "none", "host"].iter().map(|n| Task::plain(n)).collect();
    for t in &tasks {
        assert!(t.wait_reachable(Duration::from_secs(5)).is_some(), "{} reachable at start", t.name);
    }
    let before: Vec<String> = bystanders.iter().map(bystander_snapshot).collect();
    let watches_with_tasks = daemon.settle();
    let with_tasks = fd_census(pid);
    assert_eq!(with_tasks.1, 0, "no namespace fds are held between passes");
    eprintln!("fds baseline {baseline:?}, with 20 watched tasks {with_tasks:?}");

    let probes: Vec<Probe> = tasks.iter().map(Probe::attach).collect();
    let kinds = ["mac", "down", "default-route"];
    let start = Instant::now();
    for i in 0..300 {
        let target = rand::random::<u32>() as usize % probes.len();
        probes[target].break_it(kinds[rand::random::<u32>() as usize % kinds.len()]).await;
        let due = start + Duration::from_millis(100 * (i + 1));
        tokio::time::sleep_until(due.into()).await;
    }
    for (t, p) in tasks.iter().zip(&probes) {
        assert!(
            p.time_to_heal(Duration::from_secs(5)).await.is_some(),
            "{} not healthy at the end; log tail:\n{}",
            t.name,
            tail(&daemon.log_text())
        );
        assert!(t.reachable(), "{} reachable at the end", t.name);
    }
    for (b, snap) in bystanders.iter().zip(&before) {
        let now = bystander_snapshot(b);
        assert!(&now == snap, "{} must be unchanged:\n{}", b.name, line_diff(snap, &now));
    }
    drop(probes);
    drop(tasks);
    // Docker client connections come and go (pooling), so "back to baseline" means no
    // more sockets than before the tasks, no namespace fd, and no watch left open.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = fd_census(pid);
    while (now.0 > baseline.0 || now.1 != 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        now = fd_census(pid);
    }
    eprintln!("fds after the tasks are removed {now:?}");
    assert_eq!(watches_with_tasks, watches_before + 20.0, "one watch per task");
    assert!(with_tasks.0 >= baseline.0 + 19, "a socket per watch: {baseline:?} → {with_tasks:?}");
    assert!(now.0 <= baseline.0 && now.1 == 0, "sockets/netns fds return to baseline: {baseline:?} → {now:?}");
    assert_eq!(daemon.settle(), watches_before, "watches back to what they were before the tasks");
}

/// Links (flags, MAC, state; no volatile timers), addresses and routes of a
/// bystander's namespace, one line per object.
/// For the host-network container that namespace is the host's own: lines about the
/// watched tasks' `cali…` veths (their carrier follows the breaks inside the tasks)
/// and the kernel's lazily assigned `link-netnsid` numbers are left out.
fn bystander_snapshot(t: &Task) -> String {
    let pid = t.pid();
    let mut out = String::new();
    for args in [&["-o", "link"][..], &["-o", "addr"][..], &["route"][..]] {
        let o = std::process::Command::new("nsenter").args(["-t", &pid, "-n", "ip"]).args(args).output().unwrap();
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            if line.contains(" cali") || line.contains("dev cali") {
                continue;
            }
            let kept: Vec<&str> = line.split_whitespace().collect();
            let mut cleaned = Vec::new();
            let mut skip = false;
            for w in kept {
                if skip {
                    skip = false;
                    continue;
                }
                if w == "link-netnsid" {
                    skip = true;
                    continue;
                }
                // The kernel's duplicate address detection of a fresh link-local
                // address ends by itself ("tentative" then gone): not a change anyone made.
                if w == "tentative" {
                    continue;
                }
                cleaned.push(w);
            }
            out.push_str(&cleaned.join(" "));
            out.push('\n');
        }
    }
    out
}

/// Lines only in one of two snapshots, for a readable failure.
fn line_diff(before: &str, after: &str) -> String {
    let b: Vec<&str> = before.lines().collect();
    let a: Vec<&str> = after.lines().collect();
    let mut out = String::new();
    for l in &b {
        if !a.contains(l) {
            out.push_str(&format!("- {l}\n"));
        }
    }
    for l in &a {
        if !b.contains(l) {
            out.push_str(&format!("+ {l}\n"));
        }
    }
    out
}

fn tail(s: &str) -> String {
    s.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
async fn flapping_task_is_backed_off_and_healed_once_it_stops() {
    require_lab();
    let _serial = serial();
    let daemon = Daemon::start(&[]);
    let task = Task::start(&["--app", "flapper"]);
    let probe = Probe::attach(&task);
    assert!(probe.time_to_heal(Duration::from_secs(2)).await.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m0 = daemon.metrics();
    let cpu0 = cpu_seconds(daemon.child.id());
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(10) {
        probe.break_it("mac").await;
        n += 1;
        tokio::time::sleep_until((start + Duration::from_millis(50 * u64::from(n))).into()).await;
    }
    let flapping = start.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(daemon.child.id()) - cpu0) / flapping;
    let healed = probe.time_to_heal(Duration::from_secs(3)).await;
    let m1 = daemon.metrics();
    let repairs = mac_repairs(&m1, "success") - mac_repairs(&m0, "success");
    let skips = mac_repairs(&m1, "skipped") - mac_repairs(&m0, "skipped");
    eprintln!(
        "{n} breaks in {flapping:.1}s: {repairs} repairs, {skips} skipped, daemon CPU {:.1}%, healed after {healed:?}",
        cpu * 100.0
    );
    assert!(repairs <= 30.0, "repairs must be bounded: {repairs} for {n} breaks");
    assert!(skips >= 1.0, "backed-off repairs are reported as skipped");
    assert!(cpu < 0.10, "daemon CPU {:.1}% of one core while flapping", cpu * 100.0);
    let healed = healed.expect("healthy after the breaking stops");
    assert!(healed < Duration::from_secs(1), "healed {healed:?} after the breaking stopped");
    assert!(task.reachable());
}
