//! The cluster IPAM job as a Marathon app, run for real (issue 25): the image
//! unit/marathon-image.sh builds, started on the lab's Docker with the `docker run`
//! flags derived from unit/marathon-ipam.json (as Mesos' Docker containerizer derives
//! them; tests/marathon_app.rs does the same for the host agent), reading the lab's
//! etcd: its health check answers, its metrics carry the pools, it writes its
//! reports, and it stops cleanly on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::*;

const APP_JSON: &str = include_str!("../unit/marathon-ipam.json");

/// `docker run` arguments for the app definition; `config_dir` and `state_dir` replace
/// the host's /etc/calico-medic and /var/lib/calico-medic.
fn docker_run_args(app: &serde_json::Value, name: &str, config_dir: &str, state_dir: &str) -> Vec<String> {
    let mut args: Vec<String> =
        vec!["run".into(), "-d".into(), format!("--name={name}"), "--label=calico-lab=1".into()];
    let docker = &app["container"]["docker"];
    assert_eq!(app["container"]["type"], "DOCKER");
    assert_eq!(docker["privileged"], false);
    for p in docker["parameters"].as_array().expect("parameters") {
        args.push(format!("--{}={}", p["key"].as_str().unwrap(), p["value"].as_str().unwrap()));
    }
    for v in app["container"]["volumes"].as_array().expect("volumes") {
        let host = match v["hostPath"].as_str().unwrap() {
            "/etc/calico-medic" => config_dir,
            "/var/lib/calico-medic" => state_dir,
            other => panic!("unexpected volume {other}"),
        };
        let mode = v["mode"].as_str().unwrap().to_ascii_lowercase();
        args.push(format!("-v={host}:{}:{mode}", v["containerPath"].as_str().unwrap()));
    }
    assert_eq!(app["networks"][0]["mode"], "host");
    args.push("--network=host".into());
    args.push(format!("--cpu-shares={}", (app["cpus"].as_f64().unwrap() * 1024.0) as u64));
    args.push(format!("--memory={}m", app["mem"].as_u64().unwrap()));
    let id = app["id"].as_str().unwrap();
    args.push(format!("-e=MARATHON_APP_ID={id}"));
    args.push(format!("-e=MESOS_TASK_ID={}.{name}", id.trim_start_matches('/').replace('/', "_")));
    args.push(docker["image"].as_str().unwrap().to_string());
    args.extend(app["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()));
    args
}

struct AppContainer(String);

impl Drop for AppContainer {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn the_ipam_job_runs_as_its_marathon_json_says() {
    require_lab();
    let app: serde_json::Value = serde_json::from_str(APP_JSON).expect("unit/marathon-ipam.json parses");
    assert_eq!(app["instances"], 1, "one job for the whole cluster");
    assert_eq!(app["upgradeStrategy"]["maximumOverCapacity"], 0, "never two at once, even during a deployment");
    let health = &app["healthChecks"][0];
    let addr = format!("127.0.0.1:{}", health["port"].as_u64().unwrap());
    assert!(std::net::TcpStream::connect(&addr).is_err(), "{addr} is taken on this host");
    let image = app["container"]["docker"]["image"].as_str().unwrap();
    let out = std::process::Command::new(repo().join("unit/marathon-image.sh"))
        .args([medic_bin().to_str().unwrap(), image])
        .output()
        .expect("unit/marathon-image.sh");
    assert!(out.status.success(), "image build: {}", String::from_utf8_lossy(&out.stderr));

    let config = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        config.path().join("config.toml"),
        "[calico]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\ncalicoctl_config = \"\"\n[ipam]\ninterval = \"1s\"\n",
    )
    .unwrap();
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap().trim().to_string();
    let name = format!("mesos-{uuid}");
    let args = docker_run_args(&app, &name, config.path().to_str().unwrap(), state.path().to_str().unwrap());
    let started = Instant::now();
    let out = docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let job = AppContainer(name.clone());
    assert!(out.status.success(), "docker run: {}", String::from_utf8_lossy(&out.stderr));
    let logs = || {
        let o = docker(&["logs", &job.0]);
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    let path = health["path"].as_str().unwrap();
    let mut ready = None;
    while started.elapsed() < Duration::from_secs(20) {
        if let (Some((200, _)), Some((200, metrics))) = (http_get(&addr, path), http_get(&addr, "/metrics")) {
            if metrics.contains("calico_medic_ipam_addresses{pool=\"10.68.0.0/16\",state=\"allocated\"}") {
                ready = Some((started.elapsed(), metrics));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (after, metrics) = ready.unwrap_or_else(|| panic!("no healthy job with pool metrics; log:\n{}", logs()));
    assert!(metrics.contains("calico_medic_ipam_pool_addresses{pool=\"10.68.0.0/16\"} 65536"), "{metrics}");
    assert!(metrics.contains("calico_medic_ipam_checks_total{result=\"ok\"}"), "{metrics}");
    std::thread::sleep(Duration::from_millis(1500));
    let reports: Vec<_> = std::fs::read_dir(state.path().join("ipam")).expect("report dir").flatten().collect();
    assert!(!reports.is_empty(), "no report written; log:\n{}", logs());
    let stop = Instant::now();
    docker_ok(&["stop", "-t", "10", &name]);
    assert!(stop.elapsed() < Duration::from_secs(8), "stop took {:?}", stop.elapsed());
    assert_eq!(docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &name]), "0", "log:\n{}", logs());
    let log = logs();
    assert!(log.contains("ipam job started") && log.contains("ipam: checked"), "{log}");
    assert!(!log.contains("ERROR") && !log.contains("panicked"), "{log}");
    eprintln!("ipam job: healthy with pool metrics after {after:?}; {} report file(s) kept", reports.len());
}
