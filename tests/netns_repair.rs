//! Root-only: builds a Calico-like endpoint between two fresh namespaces ("host" and
//! "container", neither the real host's), breaks it each way, runs the repair pass
//! and checks the container is back in exactly the libnetwork plugin's state and
//! reachable from the host side again.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use calico_medic::medic::{endpoint_pass, Mode};
use calico_medic::netlink::{DumpLimits, Netlink};
use calico_medic::netns::{NsIdentity, TargetNetns};
use calico_medic::repair::ActionOutcome;
use calico_medic::workload::{DefaultRoute, Expected, Identity, MacSource, CALICO_MAC};

/// (name, `ip` commands that break it, expected faults, whether it cuts host→container ping)
type Break<'a> = (&'a str, Vec<Vec<&'a str>>, &'a [&'a str], bool);

static NEXT: AtomicU32 = AtomicU32::new(0);
const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
const CALICO_ROUTES: &str = "default via 169.254.1.1 dev cali0\n169.254.1.1 dev cali0 scope link\n";

/// Fails the test unless it runs as root with iproute2 (the tests are `#[ignore]`d:
/// `cargo test` lists them as skipped; `tests/run.sh` runs them with `--include-ignored`).
fn require_root() {
    let has_ip = Command::new("ip").arg("-V").output().is_ok();
    assert!(nix::unistd::geteuid().is_root() && has_ip, "namespace tests need root and iproute2");
}

fn run_ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn sh_ok(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(cmd).status().map(|s| s.success()).unwrap_or(false)
}

/// Two namespaces joined like a Calico endpoint; removed on drop.
struct Lab {
    host: String,
    ctr: String,
    host_if: String,
    ip: Ipv4Addr,
}

impl Lab {
    fn new() -> Lab {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let host = format!("cmh{tag}");
        let ctr = format!("cmc{tag}");
        let host_if = format!("cali{:0>11}", tag);
        let ip = Ipv4Addr::new(10, 251, (n / 200) as u8, (n % 200 + 2) as u8);
        netns_rs::NetNs::new(&host).expect("create host netns");
        netns_rs::NetNs::new(&ctr).expect("create container netns");
        let lab = Lab { host, ctr, host_if, ip };
        let (h, c, hi) = (&lab.host, &lab.ctr, &lab.host_if);
        // An uplink so proxy_arp on the cali link has somewhere else to route 169.254.1.1.
        // Felix also sets forwarding=1 on the cali link: without it (a fresh namespace on a
        // host where nothing enabled ip_forward) proxy ARP does not answer.
        run_ip(&["-n", h, "link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
        run_ip(&["-n", h, "link", "set", "up0", "up"]);
        run_ip(&["-n", h, "link", "set", "up1", "up"]);
        run_ip(&["-n", h, "addr", "add", "10.250.0.1/24", "dev", "up0"]);
        run_ip(&["-n", h, "route", "add", "default", "dev", "up0"]);
        run_ip(&["-n", h, "link", "add", hi, "type", "veth", "peer", "name", "cali0", "netns", c]);
        run_ip(&["-n", h, "link", "set", hi, "up"]);
        assert!(sh_ok(&format!(
            "ip netns exec {h} sh -c 'echo 1 > /proc/sys/net/ipv4/conf/{hi}/proxy_arp; echo 0 > /proc/sys/net/ipv4/neigh/{hi}/proxy_delay; echo 1 > /proc/sys/net/ipv4/conf/{hi}/forwarding'"
        )));
        run_ip(&["-n", h, "route", "add", &format!("{}/32", lab.ip), "dev", hi, "scope", "link", "proto", "boot"]);
        run_ip(&[
            "-n",
            h,
            "neigh",
            "replace",
            &lab.ip.to_string(),
            "lladdr",
            "ee:ee:ee:ee:ee:ee",
            "dev",
            hi,
            "nud",
            "permanent",
        ]);
        run_ip(&["-n", c, "link", "set", "lo", "up"]);
        run_ip(&["-n", c, "link", "set", "cali0", "address", "ee:ee:ee:ee:ee:ee"]);
        run_ip(&["-n", c, "addr", "add", &format!("{}/32", lab.ip), "dev", "cali0"]);
        run_ip(&["-n", c, "link", "set", "cali0", "up"]);
        run_ip(&["-n", c, "route", "add", "169.254.1.1", "dev", "cali0", "scope", "link", "proto", "boot"]);
        run_ip(&["-n", c, "route", "add", "default", "via", "169.254.1.1", "dev", "cali0", "proto", "boot"]);
        lab
    }

    fn expected(&self) -> Expected {
        Expected {
            interface: "cali0".into(),
            host_interface: self.host_if.clone(),
            ip: self.ip,
            gateway: GW,
            mac: CALICO_MAC,
            mac_source: MacSource::HostNeighbour,
            mac_disagreements: vec![],
            peer_index: None,
            only_endpoint: true,
            default_route: DefaultRoute::Owned,
            max_mtu: None,
        }
    }

    fn routes(&self) -> String {
        run_ip(&["-n", &self.ctr, "route"]).lines().map(|l| format!("{}\n", l.trim_end())).collect()
    }

    fn mac(&self) -> String {
        let out = run_ip(&["-n", &self.ctr, "-o", "link", "show", "cali0"]);
        out.split("link/ether ").nth(1).unwrap_or("").split(' ').next().unwrap_or("").to_string()
    }

    fn host_can_ping(&self) -> bool {
        sh_ok(&format!("ip netns exec {} ping -c1 -W1 {} >/dev/null 2>&1", self.host, self.ip))
    }

    async fn pass(&self, mode: Mode) -> calico_medic::report::EndpointPass {
        let host = NsIdentity::current_thread().unwrap();
        let ns = TargetNetns::open(Path::new(&format!("/run/netns/{}", self.ctr)), host).expect("open netns");
        let session = Netlink::in_netns(&ns).expect("netlink in netns");
        endpoint_pass(&session, &self.expected(), &[], mode, &Identity::named("test")).await.expect("pass")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ctr]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.host]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and iproute2; tests/run.sh runs it"]
async fn healthy_endpoint_is_left_alone() {
    require_root();
    let lab = Lab::new();
    assert_eq!(lab.routes(), CALICO_ROUTES);
    assert!(lab.host_can_ping(), "freshly built endpoint should be reachable");
    let pass = lab.pass(Mode::Repair).await;
    assert!(pass.faults.is_empty(), "{:?}", pass.faults);
    assert!(pass.actions.is_empty(), "healthy endpoint must get zero writes");
    assert_eq!(lab.routes(), CALICO_ROUTES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and iproute2; tests/run.sh runs it"]
async fn every_break_is_repaired_to_the_calico_state() {
    require_root();
    let lab = Lab::new();
    let c = lab.ctr.clone();
    let ipcidr = format!("{}/32", lab.ip);
    let breaks: Vec<Break> = vec![
        ("mac", vec![vec!["-n", &c, "link", "set", "cali0", "address", "5a:6b:7c:00:11:22"]], &["mac_mismatch"], true),
        (
            "down",
            vec![vec!["-n", &c, "link", "set", "cali0", "down"]],
            &["link_down", "gateway_route_missing", "default_route_missing"],
            true,
        ),
        ("default-route", vec![vec!["-n", &c, "route", "del", "default"]], &["default_route_missing"], true),
        (
            "gateway-route",
            vec![vec!["-n", &c, "route", "del", "169.254.1.1", "dev", "cali0"]],
            &["gateway_route_missing"],
            false,
        ),
        (
            "routes",
            vec![
                vec!["-n", &c, "route", "del", "default"],
                vec!["-n", &c, "route", "del", "169.254.1.1", "dev", "cali0"],
            ],
            &["gateway_route_missing", "default_route_missing"],
            true,
        ),
        // Removing the last IPv4 address makes the kernel flush the link's routes too.
        (
            "address",
            vec![vec!["-n", &c, "addr", "del", &ipcidr, "dev", "cali0"]],
            &["address_missing", "gateway_route_missing", "default_route_missing"],
            true,
        ),
        (
            "mac+down",
            vec![
                vec!["-n", &c, "link", "set", "cali0", "down"],
                vec!["-n", &c, "link", "set", "cali0", "address", "5a:6b:7c:00:11:23"],
            ],
            &["link_down", "mac_mismatch", "gateway_route_missing", "default_route_missing"],
            true,
        ),
    ];
    for (name, cmds, want, breaks_ping) in breaks {
        for cmd in &cmds {
            run_ip(cmd);
        }
        // Routes via a gateway need a fresh ARP resolution to fail: flush the cache.
        let _ = Command::new("ip").args(["-n", &c, "neigh", "flush", "all"]).status();
        if breaks_ping {
            assert!(!lab.host_can_ping(), "{name}: break should cut host→container reachability");
        }
        let dry = lab.pass(Mode::DryRun).await;
        let mut found: Vec<&str> = dry.faults.iter().map(|f| f.kind.as_str()).collect();
        found.sort();
        let mut want_sorted = want.to_vec();
        want_sorted.sort();
        assert_eq!(found, want_sorted, "{name}: faults");
        assert!(dry.actions.iter().all(|a| a.result == ActionOutcome::Skipped), "{name}: dry run writes nothing");

        let pass = lab.pass(Mode::Repair).await;
        assert!(pass.actions.iter().all(|a| a.result == ActionOutcome::Success), "{name}: {:?}", pass.actions);
        assert!(pass.remaining.is_empty(), "{name}: remaining {:?}", pass.remaining);
        assert_eq!(lab.routes(), CALICO_ROUTES, "{name}: routes restored exactly");
        assert_eq!(lab.mac(), "ee:ee:ee:ee:ee:ee", "{name}: MAC restored");
        assert!(lab.host_can_ping(), "{name}: host reaches the container after repair");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and iproute2; tests/run.sh runs it"]
async fn missing_link_is_reported_not_repaired() {
    require_root();
    let lab = Lab::new();
    run_ip(&["-n", &lab.ctr, "link", "del", "cali0"]);
    let pass = lab.pass(Mode::Repair).await;
    let kinds: Vec<&str> = pass.faults.iter().map(|f| f.kind.as_str()).collect();
    assert_eq!(kinds, vec!["link_missing"]);
    assert!(pass.actions.is_empty());
    assert!(!pass.remaining.is_empty());
}

/// Issue 22: a task with NET_ADMIN decides how large its namespace is. Past the
/// `[limits]` ceiling a pass stops reading, reports `namespace_too_large`, and
/// writes nothing; within it, the same namespace is checked and repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and iproute2; tests/run.sh runs it"]
async fn a_namespace_past_its_ceiling_is_reported_and_never_written() {
    require_root();
    let lab = Lab::new();
    let batch: String =
        (0..3000).map(|i| format!("route add 10.{}.{}.0/24 dev cali0\n", 100 + i / 256, i % 256)).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), batch).unwrap();
    run_ip(&["-n", &lab.ctr, "-batch", file.path().to_str().unwrap()]);
    run_ip(&["-n", &lab.ctr, "link", "set", "cali0", "address", "02:00:00:aa:bb:cc"]);
    let host = NsIdentity::current_thread().unwrap();
    let ns = TargetNetns::open(Path::new(&format!("/run/netns/{}", lab.ctr)), host).expect("open netns");
    let capped = DumpLimits { links: 1000, addresses: 1000, routes: 1000 };
    let session = Netlink::in_netns(&ns).expect("netlink").with_limits(capped);
    let err = endpoint_pass(&session, &lab.expected(), &[], Mode::Repair, &Identity::named("t")).await.err();
    let err = err.expect("past the ceiling: no pass");
    assert_eq!(err.code(), "namespace_too_large", "{err}");
    assert_eq!(lab.mac(), "02:00:00:aa:bb:cc", "nothing written");
    let roomy = DumpLimits { links: 1000, addresses: 1000, routes: 10_000 };
    let session = Netlink::in_netns(&ns).expect("netlink").with_limits(roomy);
    let pass = endpoint_pass(&session, &lab.expected(), &[], Mode::Repair, &Identity::named("t")).await.expect("pass");
    assert!(pass.remaining.is_empty(), "{:?}", pass.remaining);
    assert_eq!(lab.mac(), "ee:ee:ee:ee:ee:ee", "repaired within the ceiling");
}
