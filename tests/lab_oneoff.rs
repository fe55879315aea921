//! One-off `check` / `repair` on the lab's real Docker engine. No daemon runs here.
//!
//! Runs on the stand-in plugin (`calico-lab`) and, with `CALICO_LAB_NET=calico-lab-real`, on
//! Calico's real libnetwork plugin: there a wrong-MAC task is broken after its start (the real
//! plugin never omits the MAC), every other test is the same.

mod common;

use common::*;

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn omit_mac_task_is_found_and_repaired() {
    require_lab();
    let task = Task::start_wrong_mac(&["--app", "shop"]);
    assert!(!task.reachable(), "a wrong-MAC task is cut off (the seed failure)");
    assert_ne!(task.mac(), "ee:ee:ee:ee:ee:ee");

    let (code, reports, _) = medic_json(&["check", "--container", &task.name]);
    assert_eq!(code, 1, "check exits 1 when faults remain");
    let r = &reports[0];
    assert_eq!(fault_codes(r), vec!["mac_mismatch"]);
    assert_eq!(r["marathon_app_id"], "/shop");
    assert!(r["mesos_task_id"].as_str().unwrap().starts_with("shop."));
    assert_eq!(r["expected_mac"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(r["expected_mac_source"], "host_neighbour");
    assert_eq!(r["reachable"], false);
    assert!(!task.reachable(), "check must not repair");

    let (code, reports, stderr) = medic_json(&["repair", "--container", &task.name]);
    assert_eq!(code, 0, "repair exits 0 once healthy; stderr: {stderr}");
    let r = &reports[0];
    assert_eq!(r["actions"][0]["action"], "set_mac");
    assert_eq!(r["actions"][0]["fault"], "mac_mismatch");
    assert_eq!(r["actions"][0]["result"], "success");
    assert_eq!(r["healthy"], true);
    assert!(stderr.contains("fault=mac_mismatch") && stderr.contains("app=/shop"), "one log line per action: {stderr}");
    assert!(task.reachable(), "host reaches the task after repair");
    assert_eq!(task.mac(), "ee:ee:ee:ee:ee:ee");
    assert_eq!(task.mac(), task.datastore_mac(), "the MAC of the task's datastore record");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn every_repairable_break_is_repaired() {
    require_lab();
    let task = Task::start(&["--app", "breaks"]);
    assert!(task.reachable());
    assert_eq!(task.routes(), CALICO_ROUTES, "the routes Docker set from the plugin's Join answer");
    let cases: [(&str, &[&str], bool); 6] = [
        ("mac", &["mac_mismatch"], true),
        ("down", &["default_route_missing", "gateway_route_missing", "link_down"], true),
        ("default-route", &["default_route_missing"], true),
        // Alone it leaves host→container traffic working (the default route still resolves).
        ("gateway-route", &["gateway_route_missing"], false),
        ("routes", &["default_route_missing", "gateway_route_missing"], true),
        ("address", &["address_missing", "default_route_missing", "gateway_route_missing"], true),
    ];
    for (kind, want, cuts) in cases {
        task.break_it(kind);
        if cuts {
            assert!(!task.reachable(), "{kind}: should cut reachability");
        }
        let (code, reports, _) = medic_json(&["check", "--container", &task.name]);
        let mut got = fault_codes(&reports[0]);
        got.retain(|f| f != "workload_unreachable");
        got.sort();
        assert_eq!((code, got), (1, want.iter().map(|s| s.to_string()).collect::<Vec<_>>()), "{kind}");
        let (code, reports, err) = medic_json(&["repair", "--container", &task.name]);
        assert_eq!(code, 0, "{kind}: repair exit; {err}");
        assert_eq!(reports[0]["healthy"], true, "{kind}");
        assert!(task.reachable(), "{kind}: reachable after repair");
        assert_eq!(task.routes(), CALICO_ROUTES, "{kind}: routes exactly as the plugin made them");
        assert_eq!(task.mac(), "ee:ee:ee:ee:ee:ee", "{kind}");
        assert_eq!(task.mac(), task.datastore_mac(), "{kind}: the datastore record's MAC");
    }
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn deleted_link_is_reported_unrepairable() {
    require_lab();
    let task = Task::start(&[]);
    task.break_it("delete-link");
    let (code, reports, _) = medic_json(&["repair", "--container", &task.name]);
    assert_eq!(code, 1, "faults remain");
    let faults = fault_codes(&reports[0]);
    assert!(faults.contains(&"link_missing".to_string()), "{faults:?}");
    assert!(reports[0]["actions"].as_array().unwrap().is_empty());
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn healthy_task_gets_no_writes() {
    require_lab();
    let task = Task::start(&["--app", "steady"]);
    let before = task.netns_snapshot();
    let (code, reports, _) = medic_json(&["repair", "--container", &task.name]);
    assert_eq!(code, 0);
    assert!(reports[0]["actions"].as_array().unwrap().is_empty());
    assert_eq!(reports[0]["reachable"], true);
    let (code, _, _) = medic(&["check", "--container", &task.name]);
    assert_eq!(code, 0);
    assert_eq!(task.netns_snapshot(), before, "healthy namespace must be byte-for-byte unchanged");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn non_calico_and_unknown_containers_are_refused_untouched() {
    require_lab();
    for net in ["bridge", "none"] {
        let c = Task::plain(net);
        let before = c.netns_snapshot();
        let (code, out, err) = medic(&["repair", "--container", &c.name]);
        assert_eq!(code, 2, "{net}: exit 2; {out}{err}");
        assert!(err.contains("not on a calico network"), "{net}: {err}");
        assert_eq!(err.lines().count(), 1, "one-line reason: {err}");
        assert_eq!(c.netns_snapshot(), before, "{net}: namespace unchanged");
    }
    let host = Task::plain("host");
    let (code, _, err) = medic(&["repair", "--container", &host.name]);
    assert_eq!(code, 2);
    assert!(err.contains("host network"), "{err}");

    let (code, _, err) = medic(&["repair", "--container", "no-such-container-xyz"]);
    assert_eq!(code, 2);
    assert!(err.contains("no such container"), "{err}");
    let (code, _, err) = medic(&["check", "--container", "no-such-container-xyz"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn docker_unreachable_and_bad_config_exit_2() {
    require_lab();
    let (code, _, err) = medic(&["check", "--docker-host", "unix:///nonexistent/docker.sock"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach Docker"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "resync_interval = \"60s\"\ngatewy = \"169.254.1.1\"\n").unwrap();
    let (code, _, err) = medic(&["check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("gatewy"), "names the key: {err}");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn check_all_lists_calico_tasks_only() {
    require_lab();
    let good = Task::start(&["--app", "all-a"]);
    let plain = Task::plain("bridge");
    let (code, reports, err) = medic_json(&["check"]);
    assert!(code == 0 || code == 1, "{err}");
    let names: Vec<&str> = reports.as_array().unwrap().iter().map(|r| r["container_name"].as_str().unwrap()).collect();
    assert!(names.contains(&good.name.as_str()));
    assert!(!names.contains(&plain.name.as_str()));
}

/// A TCP listener on an ephemeral port inside the network namespace of process `pid` (the
/// socket stays in that namespace; the thread that made it is gone).
fn listener_in_netns(pid: &str) -> std::net::TcpListener {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the task");
        std::net::TcpListener::bind("0.0.0.0:0").unwrap()
    })
    .join()
    .unwrap()
}

/// The host's primary IPv4 address (a route lookup; sends nothing).
fn host_address() -> String {
    let out = std::process::Command::new("ip").args(["-4", "-o", "route", "get", "192.0.2.1"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace().skip_while(|w| *w != "src").nth(1).unwrap_or_default().to_string()
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn configured_probes_run_from_inside_the_task() {
    require_lab();
    // The target: a port on the host; on the real plugin a port in another task of the network,
    // since real Felix drops workload → host traffic (Felix's DefaultEndpointToHostAction DROP).
    let peer_task = on_real_plugin().then(|| Task::start(&["--app", "probes-peer"]));
    let (host, listener) = match &peer_task {
        Some(t) => (labctl_ok(&["ip", &t.name]), listener_in_netns(&t.pid())),
        None => (host_address(), std::net::TcpListener::bind("0.0.0.0:0").unwrap()),
    };
    assert!(!host.is_empty(), "host has an IPv4 source address");
    let open = listener.local_addr().unwrap().port();
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("probes.toml");
    let targets = format!("[probe]\ntargets = [\"tcp:{host}:{open}\", \"tcp:{host}:{closed}\"]\n");
    std::fs::write(&cfg, format!("{}{targets}", lab_config_prefix())).unwrap();
    let task = Task::start(&["--app", "probes"]);
    let (code, reports, err) = medic_json(&["check", "--container", &task.name, "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let probes = reports[0]["probes"].as_array().unwrap();
    let result = |label: String| probes.iter().find(|p| p["probe"] == label.as_str()).map(|p| p["success"].clone());
    assert_eq!(result("icmp".into()), Some(serde_json::Value::Bool(true)));
    assert_eq!(result(format!("tcp:{host}:{open}")), Some(serde_json::Value::Bool(true)), "{probes:?}");
    assert_eq!(result(format!("tcp:{host}:{closed}")), Some(serde_json::Value::Bool(false)), "{probes:?}");
    // The connection came from inside the task: its source is the task's calico IP.
    listener.set_nonblocking(true).unwrap();
    let (_, peer) = listener.accept().expect("the probe's connection is queued");
    assert_eq!(peer.ip().to_string(), labctl_ok(&["ip", &task.name]));
}

/// `--log-format json`: each repair is one JSON line whose fields (not message text)
/// carry the container, Marathon identity, fault, action and result.
#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn json_log_lines_carry_repair_fields() {
    require_lab();
    let task = Task::start_wrong_mac(&["--app", "jsonlog"]);
    let (code, _, stderr) = medic(&["--log-format", "json", "repair", "--container", &task.name]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let repair =
        lines.iter().find(|l| l["message"] == "repair").unwrap_or_else(|| panic!("no repair line in {stderr}"));
    assert_eq!(repair["container"], task.name.as_str());
    assert_eq!(repair["app"], "/jsonlog");
    assert!(repair["task"].as_str().unwrap().starts_with("jsonlog."), "{repair}");
    assert_eq!(repair["fault"], "mac_mismatch");
    assert_eq!(repair["action"], "ip link set cali0 address ee:ee:ee:ee:ee:ee");
    assert_eq!(repair["result"], "success");
    assert_eq!(repair["level"], "INFO");
    assert!(task.reachable());
}

/// Guards the engine matrix of tests/run.sh: with `CALICO_LAB_ENGINE` set (e.g. `26.1`),
/// the suite really talks to that engine, its tasks run on `CALICO_LAB_NET`'s network (and
/// plugin), and calico-medic uses the API version it should (`$DOCKER_API_VERSION` when set,
/// else the negotiated one).
#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn runs_against_the_engine_and_api_version_asked_for() {
    require_lab();
    let server = docker_version("{{.Server.Version}}");
    if let Some(want) = std::env::var("CALICO_LAB_ENGINE").ok().filter(|v| !v.is_empty()) {
        assert!(server.starts_with(&want), "CALICO_LAB_ENGINE={want}, but the engine is Docker {server}");
    }
    let task = Task::start(&["--app", "api-version"]);
    task.assert_on_lab_plugin();
    let out = std::process::Command::new(medic_bin())
        .args(with_lab_config(&["check", "--container", &task.name]))
        .env("CALICO_MEDIC_LOG", "calico_medic=debug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&expected_api_log()), "Docker {server}: want {:?} in:\n{err}", expected_api_log());
    eprintln!("Docker {server}: calico-medic used {}", expected_api_log());
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn bad_or_refused_docker_api_version_exits_2_naming_the_variable() {
    require_lab();
    let run = |value: &str| {
        let out = std::process::Command::new(medic_bin())
            .args(["check"])
            .env("DOCKER_API_VERSION", value)
            .env("CALICO_MEDIC_LOG", "calico_medic=info")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    for garbage in ["abc", "1", "1.25.0", "v1.25"] {
        let (code, err) = run(garbage);
        assert_eq!(code, Some(2), "{garbage}: {err}");
        assert!(err.contains(&format!("DOCKER_API_VERSION=\"{garbage}\"")), "{garbage}: {err}");
        assert_eq!(err.lines().count(), 1, "one-line reason: {err}");
    }
    let (code, err) = run("1.23");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("1.24 and newer"), "{err}");
    // Well-formed, but newer than any engine here: the daemon refuses it.
    let (code, err) = run("1.99");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("DOCKER_API_VERSION=1.99") && err.contains("refuses"), "{err}");
    assert_eq!(err.lines().count(), 1, "one-line reason: {err}");
}

fn shown(reports: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = reports
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| r["container_name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn sorted(tasks: &[&Task]) -> Vec<String> {
    let mut names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    names.sort();
    names
}

/// `check --unhealthy` and `check --app` (issue 16) on tasks of two apps and a group, healthy and
/// broken: only what matches is shown, the JSON shape is unchanged, and the exit status is about what
/// was shown. App names are this test's own: other tests run tasks at the same time.
#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn check_filters_unhealthy_and_app() {
    require_lab();
    let shop_ok = Task::start(&["--app", "filt-shop"]);
    let shop_bad = Task::start_wrong_mac(&["--app", "filt-shop"]);
    let shopping = Task::start(&["--app", "filt-shopping"]);
    let cart_ok = Task::start(&["--app", "filt-grp/cart"]);
    let pay_bad = Task::start_wrong_mac(&["--app", "filt-grp/pay"]);
    let c = |t: &Task| ["--container".to_string(), t.name.clone()];
    let named: Vec<String> = [&shop_ok, &shop_bad, &shopping, &cart_ok, &pay_bad].iter().flat_map(|t| c(t)).collect();
    let named: Vec<&str> = named.iter().map(String::as_str).collect();

    // Unfiltered, for the JSON shape.
    let (code, all, err) = medic_json(&[&["check"][..], &named].concat());
    assert_eq!(code, 1, "{err}");
    assert_eq!(shown(&all), sorted(&[&shop_ok, &shop_bad, &shopping, &cart_ok, &pay_bad]));
    let keys = |r: &serde_json::Value| r.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let full_keys = keys(&all[0]);

    // --unhealthy: only the two wrong-MAC tasks, same report shape; exit 1 (faults in what is shown).
    let (code, bad, err) = medic_json(&[&["check", "--unhealthy"][..], &named].concat());
    assert_eq!(code, 1, "{err}");
    assert_eq!(shown(&bad), sorted(&[&shop_bad, &pay_bad]));
    for r in bad.as_array().unwrap() {
        assert_eq!(fault_codes(r), vec!["mac_mismatch"]);
        assert_eq!(r["healthy"], false);
        assert_eq!(keys(r), full_keys, "--unhealthy keeps the report shape");
    }

    // --unhealthy over healthy tasks only: nothing shown, exit 0, a note on stderr.
    let (code, none, err) =
        medic_json(&["check", "--unhealthy", "--container", &shop_ok.name, "--container", &cart_ok.name]);
    assert_eq!((code, none.clone()), (0, serde_json::json!([])), "{err}");
    assert!(err.contains("none of 2 endpoints matches --unhealthy"), "{err}");

    // --app exact, over every container on the host: /filt-shop, not /filt-shopping; exit 1 (shop_bad).
    let (code, shop, err) = medic_json(&["check", "--app", "/filt-shop"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(shown(&shop), sorted(&[&shop_ok, &shop_bad]));
    assert!(shop.as_array().unwrap().iter().all(|r| r["marathon_app_id"] == "/filt-shop" && keys(r) == full_keys));
    // Combined with --unhealthy.
    let (code, shop, err) = medic_json(&["check", "--unhealthy", "--app", "/filt-shop"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(shown(&shop), sorted(&[&shop_bad]));

    // --app with a trailing slash: every app of the group; a relative id reads as absolute.
    for group in ["/filt-grp/", "filt-grp/"] {
        let (code, grp, err) = medic_json(&["check", "--app", group]);
        assert_eq!(code, 1, "{group}: {err}");
        assert_eq!(shown(&grp), sorted(&[&cart_ok, &pay_bad]), "{group}");
    }
    let (_, grp, _) = medic_json(&["check", "--app", "/filt-grp/pay"]);
    assert!(grp[0]["mesos_task_id"].as_str().unwrap().starts_with("filt-grp_pay."), "{grp}");
    // The status is about what is shown: the group has a broken task, its healthy app exits 0.
    let (code, cart, err) = medic_json(&["check", "--app", "/filt-grp/cart"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(shown(&cart), sorted(&[&cart_ok]));
    // An exact id is not a group prefix.
    let (code, grp, err) = medic_json(&["check", "--app", "/filt-grp"]);
    assert_eq!((code, grp), (0, serde_json::json!([])), "{err}");

    // --app with --container: the filter applies to the named containers.
    let (code, out, err) = medic_json(&["check", "--app", "/filt-grp/", "--container", &shop_bad.name]);
    assert_eq!((code, out), (0, serde_json::json!([])), "{err}");
    assert!(err.contains("none of 1 endpoints matches --app /filt-grp/"), "{err}");

    // Text mode: the same rows.
    let (code, table, err) = medic(&["check", "--unhealthy", "--app", "/filt-grp/"]);
    assert_eq!(code, 1, "{err}");
    assert!(table.contains(&pay_bad.name) && !table.contains(&cart_ok.name), "{table}");
    assert!(table.lines().count() == 2, "header and one row: {table}");

    assert!(!shop_bad.reachable() && !pay_bad.reachable(), "check with filters must not repair");
}
