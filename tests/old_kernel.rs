//! The kernel fallbacks, on this (new) kernel: `CALICO_MEDIC_EMULATE_KERNEL=3.10`
//! makes every request newer than 3.10 answer as that kernel does (EOPNOTSUPP for
//! a single-entry neighbour get, no unprivileged ping socket, no veth peer index),
//! and the product must take each fallback, say so once, and still repair.
//! (tests/run.sh also runs the whole one-off and daemon suites this way.)

mod common;

use std::process::Command;

use common::*;

fn medic_env(env: &[(&str, &str)], args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(medic_bin())
        .args(args)
        .arg("--json")
        .env("CALICO_MEDIC_LOG", "calico_medic=info")
        .envs(env.iter().copied())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}\nstderr: {stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

const OLD: [(&str, &str); 1] = [("CALICO_MEDIC_EMULATE_KERNEL", "3.10")];

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn on_a_3_10_kernel_every_fallback_is_taken_once_and_the_task_is_repaired() {
    require_lab();
    let task = Task::start(&["--nomac", "--app", "centos7"]);
    let (code, reports, stderr) = medic_env(&OLD, &["check", "--container", &task.name]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(fault_codes(&reports[0]), vec!["mac_mismatch"]);
    // The host's PERMANENT entry was found through the dump: the MAC's source is the host.
    assert_eq!(reports[0]["expected_mac_source"], "host_neighbour", "{stderr}");
    assert_eq!(reports[0]["reachable"], false, "the raw-socket probe ran and saw the cut-off task");
    let neigh = "kernel: single-entry neighbour get (RTM_GETNEIGH, Linux 5.0) not available";
    let ping = "kernel: unprivileged ICMP socket (net.ipv4.ping_group_range) not available";
    assert_eq!(stderr.matches(neigh).count(), 1, "decided and logged once: {stderr}");
    assert!(stderr.contains("using a neighbour table dump filtered in user space"), "{stderr}");
    assert_eq!(stderr.matches(ping).count(), 1, "{stderr}");

    let (code, reports, stderr) = medic_env(&OLD, &["repair", "--container", &task.name]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reports[0]["actions"][0]["action"], "set_mac");
    assert_eq!(reports[0]["interface"], "cali0", "found by its address, without the veth peer index");
    assert_eq!(reports[0]["reachable"], true);
    assert!(task.reachable());
    assert_eq!(task.mac(), "ee:ee:ee:ee:ee:ee");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn on_this_kernel_no_fallback_is_taken() {
    require_lab();
    let task = Task::start(&["--app", "modern"]);
    let (code, reports, stderr) = medic_env(&[], &["check", "--container", &task.name]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reports[0]["expected_mac_source"], "host_neighbour");
    // (Ping sockets depend on net.ipv4.ping_group_range, which is off on this machine too.)
    assert!(!stderr.contains("neighbour get"), "a 6.x kernel answers the single-entry get: {stderr}");
}
