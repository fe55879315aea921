//! Calico's real libnetwork plugin in the lab (v1.1.3, tests/lab/calico-real/, network
//! `calico-lab-real`): its tasks, the records it writes, and Calico's real Felix 2.6.8
//! programming them (setup.sh runs both as their own Calico node, host veths `calr*`). Needs root and Docker, like the lab tests of lab.rs (skipped, or failing under `CI`,
//! without them). Nothing here breaks a task: the real plugin's driver is `calico-real`, which
//! a calico-medic daemon with default settings does not select anyway.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// A task of Calico's real plugin: shaped like the stand-in's (cali0, MAC, /32, routes, inspect),
/// its record byte for byte the stand-in's format, real Felix programs its host side from that
/// record, and the host reaches it. What else Calico writes is there: the network's profile and
/// a host-affine /26 IPAM block. Deleting its key makes Felix deprogram it (route and ARP entry),
/// and putting it back program it again; `docker rm` deletes the key and the veth, the
/// block keeps its affinity (the allocation freed) and the profile stays.
#[test]
fn lab_real_plugin_task_is_calico_shaped_programmed_and_reachable() {
    let Some(()) = lab() else { return };
    let t = Task::start(&["--network", REAL_NET, "--app", "real-shape"]);
    let (pid, ip) = (t.pid(), t.ip());
    assert_eq!(t.mac(), FIXED_MAC);
    let addrs = ns_ok(&pid, &["-o", "-4", "addr", "show", "dev", "cali0"]);
    assert!(addrs.contains(&format!("inet {ip}/32 ")), "{addrs}");
    assert_eq!(t.routes(), vec!["default via 169.254.1.1 dev cali0", "169.254.1.1 dev cali0 scope link"]);
    let n = &inspect(&t.name)["NetworkSettings"]["Networks"][REAL_NET];
    assert_eq!(
        (&n["MacAddress"], &n["IPPrefixLen"], &n["Gateway"]),
        (&json!(FIXED_MAC), &json!(32), &json!("169.254.1.1"))
    );
    assert_eq!(n["IPv6Gateway"], "", "no IPv6 gateway (CALICO_LIBNETWORK_IPV6_GATEWAY=false)");
    let id = n["EndpointID"].as_str().unwrap().to_string();
    // The real stack is its own Calico node with host veths calr* (setup.sh; docs/testing.md).
    let host = std::fs::read_to_string("/run/calico-lab/real-hostname").expect("setup.sh's real node name");
    let host = host.trim();
    let key = format!("/calico/v1/host/{host}/workload/libnetwork/libnetwork/endpoint/{id}");
    let host_if = format!("calr{}", &id[..11]);
    let record = etcd_value(&key).expect("the real plugin's endpoint key");
    assert_eq!(
        record,
        format!(
            r#"{{"state":"active","name":"{host_if}","active_instance_id":"","mac":"{FIXED_MAC}","profile_ids":["{REAL_NET}"],"ipv4_nets":["{ip}/32"],"ipv6_nets":[]}}"#
        )
    );
    assert_felix_programmed(&host_if, &ip, FIXED_MAC);
    assert!(t.reachable(), "the host reaches the real plugin's task");

    // the profile, as libcalico-go creates it
    let profile = format!("/calico/v1/policy/profile/{REAL_NET}");
    assert_eq!(etcd_value(&format!("{profile}/tags")).unwrap(), format!(r#"["{REAL_NET}"]"#));
    assert_eq!(etcd_value(&format!("{profile}/labels")).unwrap(), "{}");
    assert_eq!(
        etcd_value(&format!("{profile}/rules")).unwrap(),
        format!(
            r#"{{"inbound_rules":[{{"action":"allow","src_tag":"{REAL_NET}"}}],"outbound_rules":[{{"action":"allow"}}]}}"#
        )
    );
    // the host-affine /26 block holding the address, its affinity key, handle-less attributes
    let addr: std::net::Ipv4Addr = ip.parse().unwrap();
    let base = std::net::Ipv4Addr::from(u32::from(addr) & !63);
    let ordinal = (u32::from(addr) - u32::from(base)) as usize;
    let block_key = format!("/calico/ipam/v2/assignment/ipv4/block/{base}-26");
    let affinity_key = format!("/calico/ipam/v2/host/{host}/ipv4/block/{base}-26");
    let block: Value = serde_json::from_str(&etcd_value(&block_key).expect("the IPAM block")).unwrap();
    assert_eq!(block["cidr"], format!("{base}/26"));
    assert_eq!(block["affinity"], format!("host:{host}"));
    assert_eq!(block["strictAffinity"], false);
    assert_eq!(block["allocations"].as_array().unwrap().len(), 64);
    let attr = block["allocations"][ordinal].as_u64().expect("the address is allocated") as usize;
    assert_eq!(block["attributes"][attr], json!({"handle_id": null, "secondary": null}), "{block}");
    assert!(!block["unallocated"].as_array().unwrap().contains(&json!(ordinal)));
    assert_eq!(etcd_value(&affinity_key).as_deref(), Some("{}"));
    assert!(etcd_value(&format!("/calico/ipam/v2/handle/{id}")).is_none(), "no IPAM handle keys");

    // the record deleted by hand: real Felix drops the endpoint's policy chain at once (its
    // route only after a 10 s grace for new interfaces), and programs it again when it is back
    ok("curl", &["-sf", "-X", "DELETE", &format!("{ETCD}{key}")]);
    let chain = || run("iptables", &["-S", &format!("cali-tw-{host_if}")]).status.success();
    assert!(wait(Duration::from_secs(3), || !chain()), "Felix removes a deleted endpoint's chain");
    ok("curl", &["-sf", "-X", "PUT", "--data-urlencode", &format!("value={record}"), &format!("{ETCD}{key}")]);
    assert!(wait(Duration::from_secs(3), chain), "and programs it again when it is back");
    assert_felix_programmed(&host_if, &ip, FIXED_MAC);

    drop(t);
    assert!(etcd_value(&key).is_none(), "docker rm deletes the endpoint key");
    assert!(!Path::new("/sys/class/net").join(&host_if).exists(), "host veth left behind");
    let block: Value = serde_json::from_str(&etcd_value(&block_key).expect("the block stays")).unwrap();
    assert_eq!(block["allocations"][ordinal], Value::Null, "the address is released");
    assert_eq!(block["affinity"], format!("host:{host}"));
    assert_eq!(etcd_value(&affinity_key).as_deref(), Some("{}"), "the affinity stays");
    assert!(etcd_value(&format!("{profile}/tags")).is_some(), "the profile stays");
}

/// `--mac-address` on Calico's real plugin: kept on cali0 and in `docker inspect`, stored lower
/// case in the record, programmed by real Felix; the task is reachable.
#[test]
fn lab_real_plugin_keeps_a_user_mac() {
    let Some(()) = lab() else { return };
    let t = Task::start(&["--network", REAL_NET, "--mac", "02:AB:cd:00:11:23"]);
    assert_eq!(t.mac(), "02:ab:cd:00:11:23");
    assert_eq!(t.endpoint()["mac"], "02:ab:cd:00:11:23");
    let n = &inspect(&t.name)["NetworkSettings"]["Networks"][REAL_NET];
    assert_eq!(n["MacAddress"], "02:ab:cd:00:11:23");
    assert_felix_programmed(t.endpoint()["name"].as_str().unwrap(), &t.ip(), "02:ab:cd:00:11:23");
    assert!(t.reachable());
}

/// Polls `cond` every 50 ms for up to `within`.
fn wait(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < within {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}
