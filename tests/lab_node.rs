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
    let cases = [
        (format!("net/ipv4/conf/{host_if}/rp_filter"), "0", "host_rp_filter"),
        (format!("net/ipv4/conf/{host_if}/route_localnet"), "0", "host_route_localnet_off"),
        (format!("net/ipv4/neigh/{host_if}/proxy_delay"), "80", "host_proxy_delay"),
        (format!("net/ipv4/conf/{host_if}/forwarding"), "0", "host_forwarding_off"),
        (format!("net/ipv4/conf/{host_if}/proxy_arp"), "0", "host_proxy_arp_off"),
    ];
    for (key, skewed, code) in cases {
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
    // A cali0 MTU above the host veth's (1500): large packets would be dropped.
    assert!(in_netns(&task.pid(), &["link", "set", "cali0", "mtu", "9000"]));
    let large = faults_of(&task);
    assert!(in_netns(&task.pid(), &["link", "set", "cali0", "mtu", "1500"]));
    eprintln!("cali0 MTU 9000: {large:?}");
    assert_eq!(large, (1, vec!["mtu_mismatch".to_string()]));
    assert_eq!(faults_of(&task), (0, vec![]));
}
