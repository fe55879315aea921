//! Calico's real Felix 2.6.8 in the lab (tests/lab/calico-real/build-felix.sh): the host
//! side of real-plugin tasks (`calico-lab-real`) is Felix's own work, and calico-medic's
//! host-side checks, profile checks and probe are judged against it. The real stack runs
//! as its own Calico node with host interfaces `calr*` (docs/testing.md says why), so
//! calico-medic is configured with `host_interface_prefix = "calr"` and that node name.
//!
//! Needs root, Docker and the lab; `tests/run.sh` runs it with `--include-ignored`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const NET: &str = "calico-lab-real";
const ETCD: &str = "http://127.0.0.1:2379";
/// The lab runs Felix with FELIX_ROUTEREFRESHINTERVAL=5 (tests/lab/lib.sh).
const FELIX_ROUTE_REFRESH: Duration = Duration::from_secs(5);

fn real_node() -> String {
    std::fs::read_to_string("/run/calico-lab/real-hostname").expect("the lab's real node name").trim().to_string()
}

/// A calico-medic config for the real stack, plus `extra` (keys of `[calico]` first).
fn config(extra_calico: &str, extra: &str) -> tempfile::NamedTempFile {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    let text = format!(
        "calico_drivers = [\"calico-real\"]\nhost_interface_prefix = \"calr\"\n{extra}[calico]\netcd_endpoints = [\"{ETCD}\"]\nhostname = \"{}\"\ncalicoctl_config = \"\"\n{extra_calico}",
        real_node()
    );
    std::fs::write(cfg.path(), text).unwrap();
    cfg
}

fn real_task(app: &str) -> Task {
    Task::start(&["--network", NET, "--app", app])
}

/// `check --json` of one task: exit code, faults, reachable.
fn check(cfg: &tempfile::NamedTempFile, task: &Task) -> (i32, Vec<String>, bool) {
    let (code, reports, err) =
        medic_json(&["check", "--config", cfg.path().to_str().unwrap(), "--container", &task.name]);
    assert_ne!(code, 2, "{err}");
    (code, fault_codes(&reports[0]), reports[0]["reachable"].as_bool().unwrap_or(false))
}

fn host_interface(cfg: &tempfile::NamedTempFile, task: &Task) -> String {
    let (_, reports, _) = medic_json(&["check", "--config", cfg.path().to_str().unwrap(), "--container", &task.name]);
    reports[0]["host_interface"].as_str().unwrap().to_string()
}

/// One ping from inside `from`'s namespace to `ip` (workload to workload, through Felix's rules).
fn ping_from(from: &Task, ip: &str) -> bool {
    let args = ["-t", &from.pid(), "-n", "ping", "-c", "1", "-W", "1", ip];
    Command::new("nsenter").args(args).output().map(|o| o.status.success()).unwrap_or(false)
}

fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if cond() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sysctl(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{key}")).unwrap().trim().to_string()
}

fn set_sysctl(key: &str, v: &str) {
    std::fs::write(format!("/proc/sys/{key}"), v).unwrap();
}

fn neigh_permanent(ip: &str, dev: &str) -> bool {
    let out = Command::new("ip").args(["neigh", "show", ip, "dev", dev]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("ee:ee:ee:ee:ee:ee") && text.contains("PERMANENT")
}

fn felix_liveness() -> Option<u16> {
    http_get("127.0.0.1:9099", "/liveness").map(|(code, _)| code)
}

/// Leaves real Felix running whatever the test did.
struct FelixRunning;

impl Drop for FelixRunning {
    fn drop(&mut self) {
        let _ = labctl(&["felix", "start"]);
    }
}

fn etcd(method: &str, key: &str, value: Option<&str>) -> String {
    let mut args = vec!["-sf", "--max-time", "3", "-X", method];
    let form;
    if let Some(v) = value {
        form = format!("value={v}");
        args.extend(["--data-urlencode", &form]);
    }
    let url = format!("{ETCD}/v2/keys{key}");
    args.push(&url);
    let out = Command::new("curl").args(&args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn etcd_value(key: &str) -> Option<String> {
    let body = etcd("GET", key, None);
    serde_json::from_str::<serde_json::Value>(&body).ok()?["node"]["value"].as_str().map(str::to_string)
}

/// The profile as Calico's real plugin wrote it (`rules`, `tags`, `labels`).
fn plugin_profile() -> Vec<(String, String)> {
    ["rules", "tags", "labels"]
        .iter()
        .map(|leaf| {
            let key = format!("/calico/v1/policy/profile/{NET}/{leaf}");
            let v = etcd_value(&key).unwrap_or_else(|| panic!("{key}: the real plugin writes it"));
            (key, v)
        })
        .collect()
}

/// Puts the plugin's profile back whatever the test did.
struct ProfileBack(Vec<(String, String)>);

impl Drop for ProfileBack {
    fn drop(&mut self) {
        for (k, v) in &self.0 {
            etcd("PUT", k, Some(v));
        }
    }
}

fn delete_profile() {
    etcd("DELETE", &format!("/calico/v1/policy/profile/{NET}?recursive=true"), None);
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn real_felix_programs_a_real_task_and_calico_medic_finds_it_healthy_and_reachable() {
    require_lab();
    let _serial = serial();
    assert_eq!(felix_liveness(), Some(204), "the lab runs real Felix with its health endpoint");
    let cfg = config("", "");
    let task = real_task("felix-healthy");
    let ip = labctl_ok(&["ip", &task.name]);
    let dev = host_interface(&cfg, &task);
    assert!(dev.starts_with("calr"), "{dev}: the real plugin names host veths calr* in the lab");
    // Felix's work, seen directly: the /32 route, the PERMANENT entry, its five settings.
    let route = Command::new("ip").args(["-4", "route", "show", &format!("{ip}/32")]).output().unwrap();
    assert!(String::from_utf8_lossy(&route.stdout).contains(&dev), "Felix's route to {ip} via {dev}");
    assert!(neigh_permanent(&ip, &dev), "Felix's static ARP entry");
    for (key, want) in [("rp_filter", "1"), ("route_localnet", "1"), ("proxy_arp", "1"), ("forwarding", "1")] {
        assert_eq!(sysctl(&format!("net/ipv4/conf/{dev}/{key}")), want, "{key}");
    }
    assert_eq!(sysctl(&format!("net/ipv4/neigh/{dev}/proxy_delay")), "0");
    // Felix 2.6 does not police the host's own traffic to a local workload: cali-OUTPUT
    // returns for every packet out of a workload interface, and the reply is accepted as
    // ESTABLISHED by the workload's cali-fw chain. The probe's "reachable" is honest.
    let out = Command::new("iptables").args(["-S", "cali-OUTPUT"]).output().unwrap();
    let chain = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(chain.lines().any(|l| l.contains("-o calr+") && l.ends_with("-j RETURN")), "{chain}");
    assert_eq!(check(&cfg, &task), (0, vec![], true), "no fault, and the host's probe passes Felix's rules");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn felix_work_undone_by_hand_is_reported_at_once_and_clears_once_felix_puts_it_back() {
    require_lab();
    let _serial = serial();
    let _felix = FelixRunning;
    let cfg = config("", "");
    let task = real_task("felix-undone");
    let ip = labctl_ok(&["ip", &task.name]);
    let dev = host_interface(&cfg, &task);
    let rp = format!("net/ipv4/conf/{dev}/rp_filter");

    // With Felix stopped nothing else writes: calico-medic's check and even its repair
    // leave the host side as they found it.
    labctl_ok(&["felix", "stop"]);
    assert!(Command::new("ip").args(["neigh", "del", &ip, "dev", &dev]).status().unwrap().success());
    set_sysctl(&rp, "0");
    let (code, faults, _) = check(&cfg, &task);
    assert_eq!(code, 1);
    for f in ["host_neigh_missing", "host_rp_filter"] {
        assert!(faults.contains(&f.to_string()), "{f} reported at once: {faults:?}");
    }
    let (code, _, err) = medic(&["repair", "--config", cfg.path().to_str().unwrap(), "--container", &task.name]);
    assert_ne!(code, 2, "{err}");
    assert!(!neigh_permanent(&ip, &dev) && sysctl(&rp) == "0", "calico-medic never writes the host side");

    // Felix, started, programs the interface again (its start applies everything).
    labctl_ok(&["felix", "start"]);
    let took = wait_until(Duration::from_secs(10), || check(&cfg, &task).1.is_empty());
    eprintln!("Felix started: findings clear after {took:?}");
    assert!(took.is_some(), "findings clear once Felix has put its work back: {:?}", check(&cfg, &task));

    // While Felix runs: its route refresh puts a deleted static ARP entry back on its own.
    // /proc/sys it re-applies only when the interface comes up or its endpoint changes
    // (not on its periodic resync): rp_filter=0 stays, and stays reported, until then.
    assert!(Command::new("ip").args(["neigh", "del", &ip, "dev", &dev]).status().unwrap().success());
    set_sysctl(&rp, "0");
    assert!(check(&cfg, &task).1.contains(&"host_neigh_missing".to_string()));
    let back = wait_until(3 * FELIX_ROUTE_REFRESH, || neigh_permanent(&ip, &dev));
    eprintln!("Felix's route refresh put the ARP entry back after {back:?}");
    assert!(back.is_some(), "Felix's own resync restores the static ARP entry");
    assert_eq!(sysctl(&rp), "0", "Felix 2.6 does not re-apply /proc/sys on its resync");
    assert_eq!(check(&cfg, &task).1, vec!["host_rp_filter".to_string()], "only what is still wrong");
    labctl_ok(&["felix", "restart"]);
    assert!(wait_until(Duration::from_secs(10), || sysctl(&rp) == "1").is_some(), "Felix's restart re-applies it");
    assert_eq!(check(&cfg, &task), (0, vec![], true));
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn a_deleted_profile_cuts_the_networks_tasks_off_each_other_and_is_reported_until_written_back() {
    require_lab();
    let _serial = serial();
    let cfg = config("", "[probe]\ninterval = \"1s\"\n");
    let (a, b) = (real_task("felix-profile-a"), real_task("felix-profile-b"));
    let _back = ProfileBack(plugin_profile());
    let ip_b = labctl_ok(&["ip", &b.name]);
    assert!(ping_from(&a, &ip_b), "same network: the profile admits its own tag");
    let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    let series = format!("calico_medic_profile_missing{{profile=\"{NET}\"}}");
    assert!(wait_until(Duration::from_secs(5), || d.metric(&series) == Some(0.0)).is_some(), "{}", d.metrics());

    delete_profile();
    let cut = wait_until(Duration::from_secs(5), || !ping_from(&a, &ip_b));
    assert!(cut.is_some(), "real Felix drops the network's traffic once its profile is gone");
    let (code, faults, reachable) = check(&cfg, &a);
    assert_eq!((code, faults.clone()), (1, vec!["profile_missing".to_string()]), "{faults:?}");
    assert!(reachable, "the host's own probe still passes: only the profile check tells");
    // The daemon: within 2 probe intervals, on the metric and on each endpoint.
    let seen = wait_until(Duration::from_secs(2), || d.metric(&series) == Some(1.0));
    eprintln!("daemon: profile_missing after {seen:?}");
    assert!(seen.is_some(), "{}", d.metrics());

    // Written back as the real plugin writes it: traffic flows, the findings clear.
    drop(_back);
    assert!(wait_until(Duration::from_secs(5), || ping_from(&a, &ip_b)).is_some(), "traffic flows again");
    assert_eq!(check(&cfg, &a), (0, vec![], true));
    assert!(wait_until(Duration::from_secs(2), || d.metric(&series) == Some(0.0)).is_some(), "{}", d.metrics());
    assert_eq!(d.metric(&format!("calico_medic_profiles_recreated_total{{profile=\"{NET}\"}}")), None, "opt-in only");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn recreate_missing_profiles_writes_the_plugins_profile_back_and_never_overwrites() {
    require_lab();
    let _serial = serial();
    let cfg = config("recreate_missing_profiles = true\n", "[probe]\ninterval = \"1s\"\n");
    let (a, b) = (real_task("felix-recreate-a"), real_task("felix-recreate-b"));
    let original = plugin_profile();
    let _back = ProfileBack(original.clone());
    let ip_b = labctl_ok(&["ip", &b.name]);
    let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    let recreated = format!("calico_medic_profiles_recreated_total{{profile=\"{NET}\"}}");

    delete_profile();
    let t = wait_until(Duration::from_secs(5), || d.metric(&recreated) == Some(3.0));
    eprintln!("profile written back by the daemon after {t:?}");
    assert!(t.is_some(), "{}", d.metrics());
    assert_eq!(plugin_profile(), original, "byte for byte what the real plugin wrote");
    assert!(wait_until(Duration::from_secs(5), || ping_from(&a, &ip_b)).is_some(), "traffic flows again");

    // Someone's own rules with the tags gone: only the absent key is written.
    let rules = format!("/calico/v1/policy/profile/{NET}/rules");
    let custom = r#"{"inbound_rules":[{"action":"allow"}],"outbound_rules":[{"action":"allow"}]}"#;
    etcd("PUT", &rules, Some(custom));
    etcd("DELETE", &format!("/calico/v1/policy/profile/{NET}/tags"), None);
    assert!(wait_until(Duration::from_secs(5), || d.metric(&recreated) == Some(4.0)).is_some(), "{}", d.metrics());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(etcd_value(&rules).as_deref(), Some(custom), "never overwritten");
    assert_eq!(d.metric(&recreated), Some(4.0), "nothing more written");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn felix_can_be_stopped_and_started_and_felix_up_follows() {
    require_lab();
    let _serial = serial();
    let _felix = FelixRunning;
    let cfg = config("", "[probe]\ninterval = \"1s\"\n");
    let d = Daemon::start(&["--config", cfg.path().to_str().unwrap()]);
    let up = |want: f64| wait_until(Duration::from_secs(3), || d.metric("calico_medic_felix_up") == Some(want));
    assert!(up(1.0).is_some(), "{}", d.metrics());
    assert_eq!(felix_liveness(), Some(204));
    labctl_ok(&["felix", "stop"]);
    assert_eq!(labctl_ok(&["felix", "status"]), "stopped");
    assert_eq!(felix_liveness(), None, "nothing answers on :9099");
    assert!(up(0.0).is_some(), "felix_up 0 within 2 probe intervals: {}", d.metrics());
    labctl_ok(&["felix", "start"]);
    assert!(labctl_ok(&["felix", "status"]).starts_with("running "));
    assert_eq!(felix_liveness(), Some(204));
    assert!(up(1.0).is_some(), "{}", d.metrics());
}
