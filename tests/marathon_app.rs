//! The Marathon app variant, run for real (issue 13, "must show" 6): the image
//! unit/marathon-image.sh builds (the binary and the libraries it links, no
//! registry) started on the lab's Docker exactly as unit/marathon-app.json asks —
//! every `docker run` flag is derived from the JSON here, the way Mesos' Docker
//! containerizer turns an app definition into a `docker run` — then it must answer
//! its health check (/healthz on 9637) and repair new omit-MAC tasks within 1 s.

mod common;

use std::time::{Duration, Instant};

use common::*;

const APP_JSON: &str = include_str!("../unit/marathon-app.json");

/// `docker run` arguments for the app definition, as Mesos' Docker containerizer
/// builds them (Marathon 1.5+ `networks`, `container.docker.parameters` passed as
/// `--key=value`, `container.volumes` as `-v`, `cpus`/`mem` as CPU shares and a
/// memory limit, `args` after the image). `config_dir` replaces the host's
/// /etc/calico-medic (the test must not write the host's /etc).
fn docker_run_args(app: &serde_json::Value, name: &str, config_dir: &str) -> Vec<String> {
    let mut args: Vec<String> = vec!["run".into(), "-d".into(), format!("--name={name}")];
    args.push("--label=calico-lab=1".into()); // lab cleanup finds it
    let docker = &app["container"]["docker"];
    assert_eq!(app["container"]["type"], "DOCKER");
    assert_eq!(docker["privileged"], false, "the app must not ask for --privileged");
    for p in docker["parameters"].as_array().expect("parameters") {
        args.push(format!("--{}={}", p["key"].as_str().unwrap(), p["value"].as_str().unwrap()));
    }
    for v in app["container"]["volumes"].as_array().expect("volumes") {
        let host = v["hostPath"].as_str().unwrap();
        let host = if host == "/etc/calico-medic" { config_dir } else { host };
        let mode = v["mode"].as_str().unwrap().to_ascii_lowercase();
        args.push(format!("-v={host}:{}:{mode}", v["containerPath"].as_str().unwrap()));
    }
    let networks = app["networks"].as_array().expect("networks");
    assert_eq!(networks.len(), 1);
    assert_eq!(networks[0]["mode"], "host");
    args.push("--network=host".into());
    args.push(format!("--cpu-shares={}", (app["cpus"].as_f64().unwrap() * 1024.0) as u64));
    args.push(format!("--memory={}m", app["mem"].as_u64().unwrap()));
    // What Marathon and Mesos put into every task's environment.
    let id = app["id"].as_str().unwrap();
    args.push(format!("-e=MARATHON_APP_ID={id}"));
    args.push(format!("-e=MESOS_TASK_ID={}.{}", id.trim_start_matches('/').replace('/', "_"), name));
    if let Some(env) = app["env"].as_object() {
        for (k, v) in env {
            args.push(format!("-e={k}={}", v.as_str().unwrap()));
        }
    }
    args.push(docker["image"].as_str().unwrap().to_string());
    for a in app["args"].as_array().map(Vec::as_slice).unwrap_or_default() {
        args.push(a.as_str().unwrap().to_string());
    }
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
fn the_marathon_app_runs_as_its_json_says_and_repairs_new_tasks() {
    require_lab();
    let _serial = serial();
    let app: serde_json::Value = serde_json::from_str(APP_JSON).expect("unit/marathon-app.json parses");
    let health = &app["healthChecks"][0];
    let port = health["port"].as_u64().unwrap();
    let path = health["path"].as_str().unwrap();
    let addr = format!("127.0.0.1:{port}");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "port {port} is taken on this host: the app (host network) cannot listen there"
    );
    build_image(&app);

    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("config.toml"), "# defaults\n").unwrap();
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap().trim().to_string();
    let name = format!("mesos-{uuid}");
    let args = docker_run_args(&app, &name, config.path().to_str().unwrap());
    eprintln!("docker {}", args.join(" "));
    let started = Instant::now();
    let out = docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let agent = AppContainer(name.clone());
    assert!(out.status.success(), "docker run: {}", String::from_utf8_lossy(&out.stderr));
    let logs = || {
        let o = docker(&["logs", &agent.0]);
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };

    check_host_config(&name);

    // Its health check, as Mesos would run it.
    let mut healthy = None;
    while started.elapsed() < Duration::from_secs(20) {
        if let Some((200, _)) = http_get(&addr, path) {
            healthy = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let healthy = healthy.unwrap_or_else(|| panic!("{path} on {port} never answered 200; agent log:\n{}", logs()));
    assert!(
        std::iter::repeat_with(|| http_get(&addr, "/readyz")).take(100).any(|r| {
            std::thread::sleep(Duration::from_millis(50));
            matches!(r, Some((200, _)))
        }),
        "never ready; log:\n{}",
        logs()
    );

    let latencies = repair_new_tasks(&logs);
    eprintln!(
        "app container: /healthz 200 after {healthy:?}; omit-MAC task docker run returned → reachable: {latencies:?}"
    );
    let log = logs();
    assert!(log.contains("fault=mac_mismatch") && log.contains("app=/marathon-app-e2e"), "{log}");
    assert!(!log.contains("ERROR") && !log.contains("panicked"), "{log}");
    eprintln!("agent log:\n{log}");
    // Stops within the app's grace period on SIGTERM (what Mesos sends first).
    let stop = Instant::now();
    docker_ok(&["stop", "-t", "10", &name]);
    assert!(stop.elapsed() < Duration::from_secs(8), "stop took {:?}", stop.elapsed());
    let code = docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &name]);
    assert_eq!(code, "0", "clean exit; log:\n{}", logs());
}

/// The image, built without any registry.
fn build_image(app: &serde_json::Value) {
    let image = app["container"]["docker"]["image"].as_str().unwrap();
    let out = std::process::Command::new(repo().join("unit/marathon-image.sh"))
        .args([medic_bin().to_str().unwrap(), image])
        .output()
        .expect("unit/marathon-image.sh");
    assert!(out.status.success(), "image build: {}", String::from_utf8_lossy(&out.stderr));
}

/// What Docker made of it: the JSON's settings, and no more.
fn check_host_config(name: &str) {
    let hc: serde_json::Value =
        serde_json::from_str(&docker_ok(&["inspect", "-f", "{{json .HostConfig}}", name])).unwrap();
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["NetworkMode"], "host");
    assert_eq!(hc["PidMode"], "host");
    assert_eq!(hc["ReadonlyRootfs"], true);
    let mut caps: Vec<&str> = hc["CapAdd"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    caps.sort();
    let caps: Vec<String> = caps.iter().map(|c| c.trim_start_matches("CAP_").to_string()).collect();
    assert_eq!(caps, ["NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE"]);
    assert_eq!(hc["CapDrop"][0].as_str().map(|c| c.trim_start_matches("CAP_")), Some("ALL"));
    assert!(hc["Binds"].as_array().unwrap().iter().any(|b| b == "/var/run/docker.sock:/var/run/docker.sock:rw"));
}

/// New omit-MAC tasks are repaired within a second of `docker run` returning.
fn repair_new_tasks(logs: &dyn Fn() -> String) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for i in 0..3 {
        let task = Task::start(&["--nomac", "--app", "marathon-app-e2e"]);
        let after = task.wait_reachable(Duration::from_secs(3));
        assert!(after.is_some(), "task {i} never became reachable; agent log:\n{}", logs());
        assert!(after.unwrap() < Duration::from_secs(1), "run returned → reachable took {:?}", after.unwrap());
        assert_eq!(task.mac(), "ee:ee:ee:ee:ee:ee");
        latencies.push(after.unwrap());
    }
    latencies
}
