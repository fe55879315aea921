//! `calico-medic run` against the lab's real Docker engine: broken tasks become
//! reachable with no other command, within a second of starting.
//!
//! Runs on the stand-in plugin (omit-MAC tasks) and, with `CALICO_LAB_NET=calico-lab-real`, on
//! Calico's real plugin (tasks whose MAC is broken right after the start and after the restart).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn daemon_repairs_new_and_restarted_tasks_within_a_second() {
    require_lab();
    let _serial = serial();
    let mut daemon = Daemon::start(&[]);
    let mut latencies = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let task = Task::start_wrong_mac(&["--app", "daemon-e2e"]);
        let after = task.wait_reachable(Duration::from_secs(3));
        let total = started.elapsed();
        assert!(after.is_some(), "task {i} never became reachable; log:\n{}", daemon.log_text());
        // `labctl task` returns after `docker run`; the whole start→reachable must fit in 1 s.
        assert!(total < Duration::from_millis(1500), "start→reachable took {total:?}");
        assert!(after.unwrap() < Duration::from_secs(1), "run-returned→reachable took {:?}", after.unwrap());
        latencies.push(after.unwrap());
        if i == 0 {
            task.assert_on_lab_plugin();
        }

        let restarted = Instant::now();
        let out = Command::new("/usr/bin/docker").args(["restart", "-t", "0", &task.name]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        task.wrong_mac_again();
        let back = task.wait_reachable(Duration::from_secs(3));
        assert!(back.is_some(), "restarted task never became reachable; log:\n{}", daemon.log_text());
        assert!(back.unwrap() < Duration::from_secs(1), "restart→reachable took {:?}", restarted.elapsed());
        assert_eq!(task.mac(), task.datastore_mac(), "repaired to the datastore record's MAC");
    }
    eprintln!("docker run returned → reachable: {latencies:?}");
    let log = daemon.log_text();
    assert!(log.contains("fault=mac_mismatch") && log.contains("app=/daemon-e2e"), "{log}");
    let status = daemon.stop().expect("daemon exits on SIGTERM within 6 s");
    assert!(status.success(), "clean exit: {status:?}");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn dry_run_daemon_reports_but_never_writes() {
    require_lab();
    let _serial = serial();
    let daemon = Daemon::start(&["--dry-run"]);
    let task = Task::start_wrong_mac(&["--app", "dry"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!task.reachable(), "dry run must not repair");
    assert_ne!(task.mac(), "ee:ee:ee:ee:ee:ee");
    let log = daemon.log_text();
    assert!(log.contains("(dry run)"), "{log}");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn daemon_logs_the_api_version_in_use() {
    require_lab();
    let _serial = serial();
    let daemon = Daemon::start(&[]);
    let log = daemon.log_text();
    assert!(log.contains(&expected_api_log()), "want {:?} in:\n{log}", expected_api_log());
    assert_eq!(log.matches("Engine API").count(), 1, "logged once: {log}");
}
