//! Tasks on two networks, on the lab's real Docker engine (issue 10, item 4).
//!
//! Docker gives the default route to one network of a multi-network container
//! (libnetwork: endpoint priority, then network name order). When the other network
//! holds it, cali0 carries only `169.254.1.1 dev cali0 scope link` — correct, not a
//! fault: calico-medic must never take the default route over, yet still repair
//! cali0's own faults; when calico holds it, a lost default route is repaired. Each
//! endpoint is matched to its own link, never by the name cali0 alone and never to an
//! interface that merely carries a copy of its address.
//!
//! Bridge networks: `aaa-calico-medic-test` sorts before `calico-lab*` (Docker gives
//! it the default route), `zzz-calico-medic-test` after (calico keeps it). Every test
//! holds `serial()`: one of them runs a daemon, which would repair the others' tasks.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Sorts before `calico-lab` and `calico-lab-nomac`: Docker's gateway network.
const BEFORE: (&str, &str) = ("aaa-calico-medic-test", "10.199.1.0/24");
/// Sorts after them: calico stays the gateway network.
const AFTER: (&str, &str) = ("zzz-calico-medic-test", "10.199.2.0/24");
const NET: &str = "calico-lab";
const NOMAC: &str = "calico-lab-nomac";
const EE: &str = "ee:ee:ee:ee:ee:ee";

fn defaults(routes: &str) -> Vec<&str> {
    routes.lines().filter(|l| l.starts_with("default")).collect()
}

/// The report of the endpoint on `net` (one report per calico endpoint).
fn report_on<'a>(reports: &'a serde_json::Value, net: &str) -> &'a serde_json::Value {
    reports
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["network"] == net)
        .unwrap_or_else(|| panic!("no report for network {net}: {reports:#}"))
}

fn actions(report: &serde_json::Value) -> Vec<String> {
    report["actions"].as_array().unwrap().iter().map(|a| format!("{} ({})", a["command"], a["result"])).collect()
}

fn has_default_fault(faults: &[String]) -> bool {
    faults.iter().any(|f| f.starts_with("default_route"))
}

/// Docker's routes for a task on `bridge` (gateway) + one calico network: the
/// default route and the subnet route on eth0, only the link route on cali0.
fn docker_routes_bridge_gateway(bridge: &BridgeNet, eth0_ip: &str) -> String {
    format!(
        "default via {gw} dev eth0\n{subnet} dev eth0 proto kernel scope link src {eth0_ip}\n169.254.1.1 dev cali0 scope link\n",
        gw = bridge.gateway,
        subnet = bridge.subnet,
    )
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn other_network_as_gateway_check_and_repair_keep_dockers_default_route() {
    require_lab();
    let _serial = serial();
    let bridge = BridgeNet::ensure(BEFORE.0, BEFORE.1);
    let task = task_on_networks("multi-other-gw", bridge.name.as_str(), &[NOMAC]);

    // The lab fact this rests on: Docker gave the default route to the bridge network.
    let docker_routes = task.routes();
    assert_eq!(
        docker_routes,
        docker_routes_bridge_gateway(&bridge, &task.ip_on(&bridge.name)),
        "Docker's routes for a task on {} + {NOMAC}",
        bridge.name
    );
    assert_ne!(task.mac(), EE, "omit-MAC endpoint starts with a random MAC");
    assert!(!task.reachable(), "omit-MAC endpoint starts cut off");

    let (code, reports, err) = medic_json(&["check", "--container", &task.name]);
    assert_eq!(reports.as_array().unwrap().len(), 1, "one report per calico endpoint: {reports:#}");
    let r = report_on(&reports, NOMAC);
    let faults = fault_codes(r);
    assert!(!has_default_fault(&faults), "Docker's choice of default route is not a fault: {faults:?}\n{r:#}");
    assert_eq!(faults, vec!["mac_mismatch"], "{r:#}");
    assert_eq!(code, 1, "check exits 1 (mac_mismatch); stderr: {err}");
    assert_eq!(r["interface"], "cali0");
    assert_eq!(task.routes(), docker_routes, "check never writes");

    let (code, reports, err) = medic_json(&["repair", "--container", &task.name]);
    let r = report_on(&reports, NOMAC);
    assert_eq!(task.routes(), docker_routes, "repair must leave Docker's default route (via eth0) alone");
    let acts = actions(r);
    assert!(acts.iter().all(|a| !a.contains("route")), "no route writes: {acts:?}");
    assert_eq!(r["actions"].as_array().unwrap().len(), 1, "only the MAC is set: {acts:?}");
    assert_eq!(r["actions"][0]["action"], "set_mac");
    assert_eq!(r["actions"][0]["result"], "success");
    assert_eq!(code, 0, "repair exits 0; stderr: {err}\n{r:#}");
    assert_eq!(r["healthy"], true);
    assert_eq!(task.mac(), EE);
    assert!(task.reachable(), "host reaches the task after the MAC repair");

    let (code, reports, err) = medic_json(&["check", "--container", &task.name]);
    assert_eq!(fault_codes(report_on(&reports, NOMAC)), Vec::<String>::new());
    assert_eq!(code, 0, "healthy after repair; {err}");
    assert_eq!(task.routes(), docker_routes);
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn other_network_as_gateway_daemon_repairs_mac_and_leaves_default_route() {
    require_lab();
    let _serial = serial();
    let bridge = BridgeNet::ensure(BEFORE.0, BEFORE.1);
    // One task found by the start-up resync, one by events.
    let early = task_on_networks("multi-daemon", bridge.name.as_str(), &[NOMAC]);
    let early_routes = early.routes();
    let daemon = Daemon::start(&[]);
    let late = task_on_networks("multi-daemon", bridge.name.as_str(), &[NOMAC]);

    for (which, task) in [("resync", &early), ("event", &late)] {
        let want = docker_routes_bridge_gateway(&bridge, &task.ip_on(&bridge.name));
        assert!(
            task.wait_reachable(Duration::from_secs(3)).is_some(),
            "{which}: daemon did not repair the MAC; log:\n{}",
            daemon.log_text()
        );
        assert_eq!(task.mac(), EE, "{which}");
        // The daemon keeps watching: Docker's default route must stay as it is.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1500) {
            assert_eq!(task.routes(), want, "{which}: daemon touched Docker's routes; log:\n{}", daemon.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        // A later MAC break on the same task is repaired too, routes still untouched.
        task.break_it("mac");
        assert!(task.wait_reachable(Duration::from_secs(3)).is_some(), "{which}: MAC break not repaired");
        assert_eq!(task.mac(), EE, "{which}");
        assert_eq!(task.routes(), want, "{which}");
    }
    assert_eq!(early.routes(), early_routes);
    daemon.settle();
    let log = daemon.log_text();
    assert!(log.contains("fault=mac_mismatch") && log.contains("app=/multi-daemon"), "{log}");
    assert!(!log.contains("default_route"), "no default-route fault or repair on these tasks:\n{log}");
    let metrics = daemon.metrics();
    assert_eq!(metric_sum(&metrics, "calico_medic_repairs_total{fault=\"default_route"), 0.0, "{metrics}");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn calico_as_gateway_a_deleted_default_route_is_repaired() {
    require_lab();
    let _serial = serial();
    let bridge = BridgeNet::ensure(AFTER.0, AFTER.1);
    let task = task_on_networks("multi-calico-gw", NET, &[bridge.name.as_str()]);

    let docker_routes = task.routes();
    let eth0_ip = task.ip_on(&bridge.name);
    assert_eq!(
        docker_routes,
        format!(
            "default via 169.254.1.1 dev cali0\n{} dev eth0 proto kernel scope link src {eth0_ip}\n169.254.1.1 dev cali0 scope link\n",
            bridge.subnet
        ),
        "Docker keeps calico ({NET}) as the gateway network when the bridge network sorts after it"
    );
    let (code, reports, err) = medic_json(&["check", "--container", &task.name]);
    assert_eq!(fault_codes(report_on(&reports, NET)), Vec::<String>::new(), "{reports:#}");
    assert_eq!(code, 0, "{err}");

    task.break_it("default-route");
    assert!(defaults(&task.routes()).is_empty(), "the task has no default route now");
    assert!(!task.reachable());
    let (code, reports, _) = medic_json(&["check", "--container", &task.name]);
    let mut faults = fault_codes(report_on(&reports, NET));
    faults.retain(|f| f != "workload_unreachable");
    assert_eq!((code, faults), (1, vec!["default_route_missing".to_string()]));

    let (code, reports, err) = medic_json(&["repair", "--container", &task.name]);
    let r = report_on(&reports, NET);
    assert_eq!(code, 0, "{err}\n{r:#}");
    assert_eq!(r["healthy"], true);
    assert_eq!(task.routes(), docker_routes, "default via 169.254.1.1 dev cali0 back; eth0's routes untouched");
    assert!(task.reachable());
}

/// Calico v2.6 cannot put a task on two calico networks (projectcalico/calicoctl#1031):
/// each Join asks Docker for the same `169.254.1.1/32` route, and the second
/// `docker network connect` fails with "file exists" — no cali1 ever exists. Docker
/// 20.10 nevertheless keeps the failed endpoint in `docker inspect` (IP, EndpointID,
/// IPPrefixLen 32, MacAddress and Gateway empty) after the plugin has left it, deleted
/// it and released its address. That endpoint has no link: calico-medic must not take
/// cali0 (the first endpoint's link) for it, e.g. put the released address on cali0.
#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn a_second_calico_endpoint_is_never_pinned_on_cali0() {
    require_lab();
    let _serial = serial();
    let task = Task::start(&["--app", "multi-two-calico"]);
    let ip0 = task.ip_on(NET);
    let out = docker(&["network", "connect", NOMAC, &task.name]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("file exists"),
        "lab fact: a second calico network is refused: {err}"
    );
    assert!(task.ip_in(&["-o", "link"]).lines().all(|l| !l.contains("cali1")), "no cali1: {}", task.netns_snapshot());
    let stale = task.networks().into_iter().find(|(n, _)| n == NOMAC).map(|(_, ep)| ep);
    match &stale {
        Some(ep) => eprintln!("Docker kept the failed endpoint in inspect: {ep}"),
        None => eprintln!("this engine dropped the failed endpoint from inspect"),
    }
    let before = task.netns_snapshot();

    for cmd in ["check", "repair"] {
        let (code, reports, err) = medic_json(&[cmd, "--container", &task.name]);
        let r0 = report_on(&reports, NET);
        assert_eq!((r0["interface"].as_str(), r0["ip"].as_str()), (Some("cali0"), Some(ip0.as_str())), "{cmd}: {r0:#}");
        assert_eq!(fault_codes(r0), Vec::<String>::new(), "{cmd}: the first endpoint is healthy: {r0:#}");
        assert!(actions(r0).is_empty(), "{cmd}: {:?}", actions(r0));
        if let Some(r1) = reports.as_array().unwrap().iter().find(|r| r["network"] == NOMAC) {
            assert_ne!(r1["interface"], "cali0", "{cmd}: cali0 is not the second endpoint's link: {r1:#}");
            assert!(
                actions(r1).is_empty(),
                "{cmd}: nothing to write for an endpoint without a link: {:?}",
                actions(r1)
            );
            assert!(fault_codes(r1).contains(&"link_missing".to_string()), "{cmd}: {r1:#}");
        }
        assert!(code == 0 || code == 1, "{cmd}: exit {code}: {err}");
        assert_eq!(task.addrs_of("cali0"), vec![format!("{ip0}/32")], "{cmd}: cali0 keeps only its own address");
        assert_eq!(task.netns_snapshot(), before, "{cmd}: no write in the namespace");
    }

    // cali0's own faults are still repaired, on cali0 and only as its endpoint needs.
    task.break_it("mac");
    let (_, reports, err) = medic_json(&["repair", "--container", &task.name]);
    let r0 = report_on(&reports, NET);
    assert_eq!(r0["healthy"], true, "{err}\n{r0:#}");
    assert_eq!(task.mac(), EE);
    assert_eq!(task.addrs_of("cali0"), vec![format!("{ip0}/32")]);
    assert_eq!(task.netns_snapshot(), before);
    assert!(task.reachable());
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn an_address_copy_on_lo_does_not_make_lo_the_endpoint() {
    require_lab();
    let _serial = serial();
    let task = Task::start(&["--app", "multi-lo"]);
    let ip = labctl_ok(&["ip", &task.name]);
    // The application adds its service address on loopback (as for DSR or anycast).
    assert!(in_netns(&task.pid(), &["addr", "add", &format!("{ip}/32"), "dev", "lo"]));
    let before = task.netns_snapshot();

    let (code, reports, err) = medic_json(&["check", "--container", &task.name]);
    let r = report_on(&reports, NET);
    assert_eq!(r["interface"], "cali0", "{r:#}");
    assert_eq!(fault_codes(r), Vec::<String>::new(), "{r:#}");
    assert_eq!(code, 0, "{err}");
    let (code, reports, err) = medic_json(&["repair", "--container", &task.name]);
    let r = report_on(&reports, NET);
    assert!(actions(r).is_empty(), "{:?}", actions(r));
    assert_eq!(code, 0, "{err}");
    assert_eq!(task.netns_snapshot(), before, "no write anywhere");

    task.break_it("mac");
    let (code, reports, err) = medic_json(&["repair", "--container", &task.name]);
    let r = report_on(&reports, NET);
    assert_eq!(actions(r).len(), 1, "{:?}", actions(r));
    assert!(r["actions"][0]["command"].as_str().unwrap().contains("cali0"), "{:?}", actions(r));
    assert_eq!(code, 0, "{err}");
    assert_eq!(task.mac(), EE);
    assert_eq!(task.addrs_of("lo"), vec!["127.0.0.1/8".to_string(), format!("{ip}/32")], "lo as the app left it");
    assert_eq!(task.netns_snapshot(), before, "everything else as before the break");
    assert!(task.reachable());
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn an_address_copy_on_a_bridge_eth0_does_not_make_eth0_the_endpoint() {
    require_lab();
    let _serial = serial();
    let bridge = BridgeNet::ensure(BEFORE.0, BEFORE.1);
    let task = task_on_networks("multi-eth0-copy", bridge.name.as_str(), &[NOMAC]);
    let ip = task.ip_on(NOMAC);
    let eth0_mac = task.mac_of("eth0");
    assert!(in_netns(&task.pid(), &["addr", "add", &format!("{ip}/32"), "dev", "eth0"]));
    let eth0_addrs = task.addrs_of("eth0");
    let routes = task.routes();

    let (code, reports, err) = medic_json(&["check", "--container", &task.name]);
    let r = report_on(&reports, NOMAC);
    assert_eq!(r["interface"], "cali0", "{r:#}");
    assert_eq!(fault_codes(r), vec!["mac_mismatch"], "{r:#}");
    assert_eq!(code, 1, "{err}");

    let (code, reports, err) = medic_json(&["repair", "--container", &task.name]);
    let r = report_on(&reports, NOMAC);
    assert_eq!(actions(r).len(), 1, "{:?}", actions(r));
    assert!(r["actions"][0]["command"].as_str().unwrap().contains("cali0"), "{:?}", actions(r));
    assert_eq!(code, 0, "{err}");
    assert_eq!(task.mac(), EE);
    assert_eq!(task.mac_of("eth0"), eth0_mac, "eth0's MAC untouched");
    assert_eq!(task.addrs_of("eth0"), eth0_addrs, "eth0's addresses untouched");
    assert_eq!(task.routes(), routes, "routes untouched");
}

#[test]
#[ignore = "needs root, Docker and the lab (tests/lab/setup.sh); tests/run.sh runs it"]
fn healthy_two_network_tasks_are_left_byte_for_byte_unchanged() {
    require_lab();
    let _serial = serial();
    let before_net = BridgeNet::ensure(BEFORE.0, BEFORE.1);
    let after_net = BridgeNet::ensure(AFTER.0, AFTER.1);
    let other_gw = task_on_networks("multi-healthy", before_net.name.as_str(), &[NET]);
    let calico_gw = task_on_networks("multi-healthy", NET, &[after_net.name.as_str()]);
    for (which, task) in [("bridge gateway", &other_gw), ("calico gateway", &calico_gw)] {
        let before = task.netns_snapshot();
        let (code, reports, err) = medic_json(&["repair", "--container", &task.name]);
        for r in reports.as_array().unwrap() {
            assert!(actions(r).is_empty(), "{which}: {:?}\n{r:#}", actions(r));
            assert_eq!(r["reachable"], true, "{which}: {r:#}");
        }
        assert_eq!(code, 0, "{which}: {err}\n{reports:#}");
        let (code, _, err) = medic(&["check", "--container", &task.name]);
        assert_eq!(code, 0, "{which}: {err}");
        assert_eq!(task.netns_snapshot(), before, "{which}: namespace must be byte-for-byte unchanged");
    }
}
