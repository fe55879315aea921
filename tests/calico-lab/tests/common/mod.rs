//! Helpers shared by the lab's test files: the lab itself (set up once per test process),
//! processes, labctl tasks, etcd.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const DOCKER: &str = "/usr/bin/docker";
pub const FIXED_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// Calico's real libnetwork plugin (v1.1.3, tests/lab/calico-real/), driver `calico-real`.
pub const REAL_NET: &str = "calico-lab-real";
/// The lab's etcd (v2 keys API).
pub const ETCD: &str = "http://127.0.0.1:2379/v2/keys";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub fn labctl_path() -> PathBuf {
    repo().join("tests/lab/labctl")
}

// ------------------------------------------------------------------ lab availability

/// `Some(())` when the lab is usable; otherwise prints why and returns `None` (skip), or
/// panics when `CI` is set.
pub fn lab() -> Option<()> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        if !Path::new("/var/run/docker.sock").exists() && !Path::new("/usr/sbin/dockerd").exists() {
            return Err("no Docker engine (no /var/run/docker.sock, no dockerd)".into());
        }
        // setup.sh is idempotent and fast when the lab is up; it never builds here: the
        // binary cargo built for this test run is the plugin.
        let out = Command::new(repo().join("tests/lab/setup.sh"))
            .arg("--selftest")
            .env("CALICO_LAB_BIN", env!("CARGO_BIN_EXE_calico-lab"))
            .output()
            .map_err(|e| format!("running setup.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!("tests/lab/setup.sh failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(())
    });
    match ready {
        Ok(()) => Some(()),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("calico lab unavailable and CI is set: {why} (run tests/lab/setup.sh as root)")
        }
        Err(why) => {
            eprintln!("SKIP: calico lab unavailable: {why} (run as root after tests/lab/setup.sh)");
            None
        }
    }
}

// ------------------------------------------------------------------ process helpers

pub fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("running {cmd}: {e}"))
}

/// Run and require success; returns trimmed stdout.
pub fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn labctl(args: &[&str]) -> Output {
    run(labctl_path().to_str().unwrap(), args)
}

pub fn labctl_ok(args: &[&str]) -> String {
    ok(labctl_path().to_str().unwrap(), args)
}

/// `ip …` inside the container's network namespace.
pub fn ns(pid: &str, args: &[&str]) -> Output {
    let mut a = vec!["-t", pid, "-n", "ip"];
    a.extend_from_slice(args);
    run("nsenter", &a)
}

pub fn ns_ok(pid: &str, args: &[&str]) -> String {
    let mut a = vec!["-t", pid, "-n", "ip"];
    a.extend_from_slice(args);
    ok("nsenter", &a)
}

pub fn inspect(name: &str) -> Value {
    let v: Value = serde_json::from_str(&ok(DOCKER, &["inspect", name])).unwrap();
    v[0].clone()
}

/// A lab container, removed on drop.
pub struct Task {
    pub name: String,
}

impl Task {
    pub fn start(args: &[&str]) -> Task {
        let mut a = vec!["task"];
        a.extend_from_slice(args);
        let name = labctl_ok(&a);
        assert!(!name.contains('\n'), "labctl task printed more than a name: {name:?}");
        Task { name }
    }
    pub fn plain(args: &[&str]) -> Task {
        let mut a = vec!["run-plain"];
        a.extend_from_slice(args);
        Task { name: labctl_ok(&a) }
    }
    pub fn pid(&self) -> String {
        labctl_ok(&["pid", &self.name])
    }
    pub fn ip(&self) -> String {
        labctl_ok(&["ip", &self.name])
    }
    pub fn mac(&self) -> String {
        labctl_ok(&["mac", &self.name])
    }
    pub fn reachable(&self) -> bool {
        labctl(&["ping", &self.name]).status.success()
    }
    pub fn endpoint(&self) -> Value {
        serde_json::from_str(&labctl_ok(&["endpoint", &self.name])).unwrap()
    }
    pub fn brk(&self, kind: &str) {
        labctl_ok(&["break", &self.name, kind]);
    }
    pub fn routes(&self) -> Vec<String> {
        ns_ok(&self.pid(), &["-4", "route", "show"])
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        let _ =
            Command::new(DOCKER).args(["rm", "-f", &self.name]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

pub fn read_sysctl(path: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .unwrap_or_else(|e| panic!("/proc/sys/{path}: {e}"))
        .trim()
        .to_string()
}

/// The raw value of an etcd key (`None`: no such key).
pub fn etcd_value(key: &str) -> Option<String> {
    let out = run("curl", &["-s", &format!("{ETCD}{key}")]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("etcd GET {key}: {e}"));
    v["node"]["value"].as_str().map(str::to_string)
}

pub fn calico_hostname() -> String {
    std::fs::read_to_string("/run/calico-lab/calico-hostname").unwrap().trim().to_string()
}

/// The host side a Felix programs for an endpoint (what the stand-in's Felix does for the real
/// plugin's endpoints too).
pub fn assert_felix_programmed(host_if: &str, ip: &str, mac: &str) {
    for (k, want) in [
        ("conf/{}/proxy_arp", "1"),
        ("neigh/{}/proxy_delay", "0"),
        ("conf/{}/rp_filter", "1"),
        ("conf/{}/forwarding", "1"),
    ] {
        assert_eq!(read_sysctl(&format!("net/ipv4/{}", k.replace("{}", host_if))), want, "{k}");
    }
    let route = ok("ip", &["-d", "-4", "route", "show", &format!("{ip}/32")]);
    assert!(route.contains(&format!("dev {host_if}")) && route.contains("scope link"), "{route}");
    let neigh = ok("ip", &["neigh", "show", ip, "dev", host_if]);
    assert!(neigh.contains(&format!("lladdr {mac}")) && neigh.contains("PERMANENT"), "{neigh}");
}
