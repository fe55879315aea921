//! The host's Calico, not only its tasks (issue 24, part): Felix's per-interface
//! settings, its static ARP entry and the MTU, each skewed by hand on a real lab task
//! and each reported by `calico-medic check` (exit 1, its own fault code) until undone.
//!
//! Needs root, Docker and the lab; `tests/run.sh` runs it with `--include-ignored`.

mod common;

use std::process::Command;

use common::*;

fn sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path}: {e}"));
}

fn read_sysctl(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap().trim().to_string()
}

/// Felix's five per-interface settings of the host veth `host_if`: each key, a value
/// that skews it, and the finding that skew makes.
fn felix_skews(host_if: &str) -> [(String, &'static str, &'static str); 5] {
    [
        (format!("net/ipv4/conf/{host_if}/rp_filter"), "0", "host_rp_filter"),
        (format!("net/ipv4/conf/{host_if}/route_localnet"), "0", "host_route_localnet_off"),
        (format!("net/ipv4/neigh/{host_if}/proxy_delay"), "80", "host_proxy_delay"),
        (format!("net/ipv4/conf/{host_if}/forwarding"), "0", "host_forwarding_off"),
        (format!("net/ipv4/conf/{host_if}/proxy_arp"), "0", "host_proxy_arp_off"),
    ]
}

/// `check --json` of one task: exit code and its remaining faults.
fn faults_of(task: &Task) -> (i32, Vec<String>) {
    faults_with(task, &[])
}

fn faults_with(task: &Task, extra: &[&str]) -> (i32, Vec<String>) {
    let (code, reports, err) = medic_json(&[&["check", "--container", &task.name][..], extra].concat());
    assert_ne!(code, 2, "{err}");
    (code, fault_codes(&reports[0]))
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn each_felix_setting_skewed_by_hand_is_its_own_finding_until_undone() {
    require_lab();
    let _serial = serial();
    let task = Task::start(&["--app", "node-felix-settings"]);
    assert_eq!(faults_of(&task), (0, vec![]), "the Felix stand-in sets all five");
    let (_, reports, _) = medic_json(&["check", "--container", &task.name]);
    let host_if = reports[0]["host_interface"].as_str().unwrap().to_string();
    for (key, skewed, code) in felix_skews(&host_if) {
        let good = read_sysctl(&key);
        sysctl(&key, skewed);
        let seen = faults_of(&task);
        sysctl(&key, &good);
        eprintln!("{key} = {skewed}: check says {seen:?}");
        // (a skewed setting may also cost the probe its echo: that is reported beside it)
        assert_eq!(seen.0, 1, "{key} = {skewed}");
        assert!(seen.1.contains(&code.to_string()), "{key} = {skewed}: {seen:?}");
        assert!(seen.1.iter().all(|f| f == code || f == "workload_unreachable"), "{key} = {skewed}: {seen:?}");
        assert_eq!(faults_of(&task), (0, vec![]), "{key} back to {good}: clear");
    }
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn a_missing_static_arp_entry_and_a_large_mtu_are_reported_apart() {
    require_lab();
    let _serial = serial();
    let task = Task::start(&["--app", "node-neigh-mtu"]);
    let (_, reports, _) = medic_json(&["check", "--container", &task.name]);
    let host_if = reports[0]["host_interface"].as_str().unwrap().to_string();
    let ip = labctl_ok(&["ip", &task.name]);
    let mac = reports[0]["expected_mac"].as_str().unwrap().to_string();
    let run = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
    run(&["neigh", "del", &ip, "dev", &host_if]);
    let missing = faults_of(&task);
    // Another MAC: judged against a source trusted above the neighbour entry itself
    // (here `expected_mac`; in production the datastore's record).
    run(&["neigh", "replace", &ip, "lladdr", "02:00:00:00:00:01", "dev", &host_if, "nud", "permanent"]);
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), format!("expected_mac = \"{mac}\"\n")).unwrap();
    let mismatch = faults_with(&task, &["--config", cfg.path().to_str().unwrap()]);
    run(&["neigh", "replace", &ip, "lladdr", &mac, "dev", &host_if, "nud", "permanent"]);
    eprintln!("static ARP entry deleted: {missing:?}; another MAC: {mismatch:?}");
    assert_eq!(missing, (1, vec!["host_neigh_missing".to_string()]));
    assert_eq!(mismatch, (1, vec!["host_neigh_mismatch".to_string()]));
    assert_eq!(faults_of(&task), (0, vec![]));
    // A cali0 MTU above the host veth's: large packets would be dropped.
    let args = ["-t", &task.pid(), "-n", "ip", "-o", "link", "show", "cali0"].map(str::to_string);
    let out = Command::new("nsenter").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let original = text.split_whitespace().skip_while(|w| *w != "mtu").nth(1).unwrap().to_string();
    assert!(in_netns(&task.pid(), &["link", "set", "cali0", "mtu", "9000"]));
    let large = faults_of(&task);
    assert!(in_netns(&task.pid(), &["link", "set", "cali0", "mtu", &original]));
    eprintln!("cali0 MTU 9000: {large:?}");
    assert_eq!(large, (1, vec!["mtu_mismatch".to_string()]));
    assert_eq!(faults_of(&task), (0, vec![]));
}

/// The lab's self-test plugin instance, stopped (SIGSTOP: its socket accepts and never
/// answers, as a hung plugin does) until dropped. Only the self-test networks use it.
struct Hung(nix::unistd::Pid);

impl Hung {
    fn selftest_plugin() -> Hung {
        let pid: i32 = std::fs::read_to_string("/run/calico-lab/selftest/plugin.pid").unwrap().trim().parse().unwrap();
        let pid = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        Hung(pid)
    }
}

impl Drop for Hung {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn a_hung_plugin_is_reported_by_check_and_by_the_daemon_within_two_probe_intervals() {
    require_lab();
    let _serial = serial();
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "calico_drivers = [\"calico\", \"calico-selftest\"]\n[probe]\ninterval = \"1s\"\n")
        .unwrap();
    let cfg = cfg.path().to_str().unwrap();
    let d = Daemon::start(&["--config", cfg]);
    let up = |name: &str| d.metric(&format!("calico_medic_plugin_up{{plugin=\"{name}\"}}"));
    let wait = |want: f64| {
        let t0 = std::time::Instant::now();
        while up("calico-selftest") != Some(want) && t0.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (up("calico-selftest"), t0.elapsed())
    };
    assert_eq!(wait(1.0).0, Some(1.0), "answers while it runs");
    let hung = Hung::selftest_plugin();
    let (seen, after) = wait(0.0);
    let t0 = std::time::Instant::now();
    let out = Command::new(medic_bin()).args(["check", "--config", cfg]).output().unwrap();
    let took = t0.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    drop(hung);
    let (back, _) = wait(1.0);
    eprintln!(
        "hung plugin: plugin_up 0 after {after:?}; check exit {:?} in {took:?}: {}",
        out.status.code(),
        text.lines().filter(|l| l.starts_with("plugin")).collect::<Vec<_>>().join(" | ")
    );
    assert_eq!(seen, Some(0.0), "plugin_up 0 within 2 probe intervals (+ the call deadline)");
    assert!(after < std::time::Duration::from_secs(2) + std::time::Duration::from_secs(2), "{after:?}");
    assert_eq!(up("calico"), Some(1.0), "the other plugin is not affected");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("plugin calico-selftest: DOWN") && text.contains("plugin calico: up"), "{text}");
    assert!(took < std::time::Duration::from_secs(15), "check answered within its deadlines: {took:?}");
    assert_eq!(back, Some(1.0), "up again once it answers");
    assert!(d.log_text().contains("plugin does not answer"), "{}", d.log_text());
}

/// Answers `GET /liveness` with 204 (as Felix 2.6 does with FELIX_HEALTHENABLED) until stopped.
fn liveness_server(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> (String, std::thread::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/liveness", l.local_addr().unwrap());
    l.set_nonblocking(true).unwrap();
    let t = std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let mut buf = [0u8; 1024];
                    let _ = std::io::Read::read(&mut s, &mut buf);
                    let _ = std::io::Write::write_all(&mut s, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    });
    (url, t)
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn felix_up_follows_its_liveness_endpoint_once_it_answered() {
    require_lab();
    let _serial = serial();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (url, server) = liveness_server(stop.clone());
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), format!("[probe]\ninterval = \"1s\"\n[calico]\nfelix_liveness_url = \"{url}\"\n"))
        .unwrap();
    let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    let felix = || d.metric("calico_medic_felix_up");
    let wait = |want: f64| {
        let t0 = std::time::Instant::now();
        while felix() != Some(want) && t0.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        felix()
    };
    assert_eq!(wait(1.0), Some(1.0), "answers 204: up");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
    assert_eq!(wait(0.0), Some(0.0), "stopped answering: 0");
    // A Felix with health off (nothing listens) is not reported at all.
    let cfg2 = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg2.path(),
        "[probe]\ninterval = \"1s\"\n[calico]\nfelix_liveness_url = \"http://127.0.0.1:1/liveness\"\n",
    )
    .unwrap();
    let quiet = Daemon::start(&["--config", cfg2.path().to_str().unwrap()]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!quiet.metrics().contains("calico_medic_felix_up"), "no series without a Felix health endpoint");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn a_docker_run_hanging_on_a_hung_plugin_is_a_container_stuck_creating() {
    require_lab();
    let _serial = serial();
    let cfg = tempfile::NamedTempFile::new().unwrap();
    let text = "calico_drivers = [\"calico\", \"calico-selftest\"]\n[probe]\ninterval = \"1s\"\n[calico]\nstuck_creating_after = \"2s\"\n";
    std::fs::write(cfg.path(), text).unwrap();
    let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    let stuck = || d.metric("calico_medic_containers_stuck_creating").unwrap_or(-1.0);
    let wait = |want: f64| {
        let t0 = std::time::Instant::now();
        while stuck() != want && t0.elapsed() < std::time::Duration::from_secs(15) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        (stuck(), t0.elapsed())
    };
    assert_eq!(wait(0.0).0, 0.0, "none before");
    let name = unique_name("stuck");
    let hung = Hung::selftest_plugin();
    let args = ["run", "-d", "--name", name.as_str(), "--network", "calico-selftest-nomac", "--label", "calico-lab=1"];
    let mut child = Command::new("/usr/bin/docker")
        .args(args)
        .args(["calico-lab/busybox:latest", "sleep", "100000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (seen, after) = wait(1.0);
    let log = d.log_text();
    drop(hung);
    let _ = child.wait();
    let (cleared, _) = wait(0.0);
    let _ = docker(&["rm", "-f", &name]);
    eprintln!("stuck creating: gauge {seen} after {after:?} (bound 2 s), {cleared} once the plugin answers");
    assert_eq!(seen, 1.0, "counted; log:\n{log}");
    assert!(log.contains("container_stuck_creating") && log.contains(&name), "{log}");
    assert_eq!(cleared, 0.0, "cleared once its start went through");
}

/// A network of the self-test plugin instance over the stand-in's own subnet (its own
/// IPAM, so it hands out addresses the stand-in already gave): removed on drop.
struct OverlappingNet(&'static str);

impl OverlappingNet {
    /// Its subnet's (10.65.0.0/17) first and last address: not assignable with --ip.
    const FIRST: &'static str = "10.65.0.0";
    const LAST: &'static str = "10.65.127.255";

    fn create() -> OverlappingNet {
        let name = "calico-node-dup";
        let _ = docker(&["network", "rm", name]);
        docker_ok(&[
            "network",
            "create",
            "--driver",
            "calico-selftest",
            "--ipam-driver",
            "calico-selftest-ipam",
            "--subnet",
            "10.65.0.0/17",
            name,
        ]);
        OverlappingNet(name)
    }
}

impl Drop for OverlappingNet {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", self.0]);
    }
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn two_containers_of_this_host_holding_one_address_are_each_a_duplicate_ip_without_a_datastore() {
    require_lab();
    let _serial = serial();
    // Calico's IPAM (and the stand-in's, since issue 25) hands out any address of a
    // block, 10.65.0.0 included; the self-test IPAM, like Docker's, refuses its subnet's
    // first and last address for --ip. A task holding one of those is kept (so the next
    // task gets another address) and the next one is used.
    let mut held = Vec::new();
    let (a, ip) = loop {
        let t = Task::start(&["--network", "calico-lab", "--app", "node-dup-a"]);
        let ip = labctl_ok(&["ip", &t.name]);
        if ip != OverlappingNet::FIRST && ip != OverlappingNet::LAST {
            break (t, ip);
        }
        assert!(held.len() < 2, "the stand-in keeps handing out {ip}");
        held.push(t);
    };
    let net = OverlappingNet::create();
    let b_name = unique_name("mesos-node-dup");
    let run = ["run", "-d", "--name", &b_name, "--network", net.0, "--ip", &ip, "--label", "calico-lab=1"];
    docker_ok(&[&run[..], &["calico-lab/busybox:latest", "sleep", "100000"]].concat());
    let b = Task { name: b_name.clone() };
    let cfg = tempfile::NamedTempFile::new().unwrap();
    // no datastore: Docker's view alone
    let text = "calico_drivers = [\"calico\", \"calico-selftest\"]\n[probe]\ninterval = \"1s\"\n[calico]\ncalicoctl_config = \"\"\n";
    std::fs::write(cfg.path(), text).unwrap();
    for t in [&a, &b] {
        let faults = faults_with(t, &["--config", cfg.path().to_str().unwrap()]);
        assert_eq!(faults.0, 1, "{}: {faults:?}", t.name);
        assert!(faults.1.contains(&"duplicate_ip".to_string()), "{}: {faults:?}", t.name);
    }
    let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    let id_of = |t: &Task| docker_ok(&["inspect", "-f", "{{.Id}}", &t.name]);
    let series =
        |t: &Task| format!("calico_medic_endpoint_fault{{container_id=\"{}\",fault=\"duplicate_ip\"}}", id_of(t));
    let (sa, sb) = (series(&a), series(&b));
    let wait = |s: &str, want: Option<f64>| {
        let t0 = std::time::Instant::now();
        while d.metric(s) != want && t0.elapsed() < std::time::Duration::from_secs(2) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        (d.metric(s), t0.elapsed())
    };
    let (seen_a, after) = wait(&sa, Some(1.0));
    assert_eq!(
        (seen_a, wait(&sb, Some(1.0)).0),
        (Some(1.0), Some(1.0)),
        "both, within 2 probe intervals: {}",
        d.metrics()
    );
    eprintln!("duplicate_ip in the daemon's metrics after {after:?}");
    let _ = docker(&["rm", "-f", &b_name]);
    std::mem::forget(b);
    let (cleared, after) = wait(&sa, None);
    eprintln!("duplicate_ip cleared {after:?} after the second holder went");
    assert_eq!(cleared, None, "cleared once one holder is left: {}", d.metrics());
    let (_, faults) = faults_with(&a, &["--config", cfg.path().to_str().unwrap()]);
    assert!(!faults.contains(&"duplicate_ip".to_string()), "{faults:?}");
}

/// The daemon sees each host-side fault of a healthy, watched task within 2 probe
/// intervals and clears it as fast: the five Felix settings (no netlink event: read at
/// each probe tick), the static ARP entry (a host neighbour event) and a larger `cali0`
/// MTU (a link event in the task's namespace).
#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn each_host_side_fault_is_in_the_daemons_metrics_within_two_probe_intervals() {
    require_lab();
    let _serial = serial();
    let task = Task::start(&["--app", "node-daemon-faults"]);
    let (_, reports, _) = medic_json(&["check", "--container", &task.name]);
    let host_if = reports[0]["host_interface"].as_str().unwrap().to_string();
    let ip = labctl_ok(&["ip", &task.name]);
    let cid = docker_ok(&["inspect", "-f", "{{.Id}}", &task.name]);
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(cfg.path(), "[probe]\ninterval = \"1s\"\n").unwrap();
    let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    let fault =
        |code: &str| d.metric(&format!("calico_medic_endpoint_fault{{container_id=\"{cid}\",fault=\"{code}\"}}"));
    let healthy = || {
        d.metrics()
            .lines()
            .any(|l| l.starts_with("calico_medic_endpoint_healthy{") && l.contains(&cid) && l.ends_with(" 1"))
    };
    let within = |cond: &dyn Fn() -> bool| {
        let t0 = std::time::Instant::now();
        while !cond() && t0.elapsed() < std::time::Duration::from_secs(2) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        cond().then(|| t0.elapsed())
    };
    assert!(within(&healthy).is_some() || within(&healthy).is_some(), "healthy first: {}", d.metrics());
    let mut seen = Vec::new();
    for (key, skewed, code) in felix_skews(&host_if) {
        let good = read_sysctl(&key);
        sysctl(&key, skewed);
        let on = within(&|| fault(code) == Some(1.0));
        sysctl(&key, &good);
        let off = within(&|| fault(code).is_none() && healthy());
        seen.push(format!("{code}: {on:?} / cleared {off:?}"));
        assert!(on.is_some() && off.is_some(), "{code}: {on:?} {off:?}\n{}", d.metrics());
    }
    let run = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
    run(&["neigh", "del", &ip, "dev", &host_if]);
    let on = within(&|| fault("host_neigh_missing") == Some(1.0));
    run(&["neigh", "replace", &ip, "lladdr", "ee:ee:ee:ee:ee:ee", "dev", &host_if, "nud", "permanent"]);
    let off = within(&|| fault("host_neigh_missing").is_none() && healthy());
    seen.push(format!("host_neigh_missing: {on:?} / cleared {off:?}"));
    assert!(on.is_some() && off.is_some(), "host_neigh_missing: {on:?} {off:?}\n{}", d.metrics());
    let args = ["-t", &task.pid(), "-n", "ip", "-o", "link", "show", "cali0"].map(str::to_string);
    let out = Command::new("nsenter").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let original = text.split_whitespace().skip_while(|w| *w != "mtu").nth(1).unwrap().to_string();
    assert!(in_netns(&task.pid(), &["link", "set", "cali0", "mtu", "9000"]));
    let on = within(&|| fault("mtu_mismatch") == Some(1.0));
    assert!(in_netns(&task.pid(), &["link", "set", "cali0", "mtu", &original]));
    let off = within(&|| fault("mtu_mismatch").is_none() && healthy());
    seen.push(format!("mtu_mismatch: {on:?} / cleared {off:?}"));
    eprintln!("daemon, probe interval 1 s: {}", seen.join("; "));
    assert!(on.is_some() && off.is_some(), "mtu_mismatch: {on:?} {off:?}\n{}", d.metrics());
}
