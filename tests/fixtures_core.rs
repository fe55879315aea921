//! The pure core over `docker inspect` output captured from the lab's real Docker
//! 20.10 engine (tests/fixtures/*.json): inspect → Workload → Expected → faults →
//! plan. No root, no Docker.

use std::net::Ipv4Addr;

use bollard::models::ContainerInspectResponse;
use calico_medic::diagnose::{diagnose_container, FaultKind};
use calico_medic::docker::workload_from_inspect;
use calico_medic::error::MedicError;
use calico_medic::observe::{ContainerSide, LinkState, RouteEntry};
use calico_medic::repair::plan;
use calico_medic::workload::{mac_candidates, Expected, MacSource, Workload, CALICO_MAC};

fn fixture(name: &str) -> ContainerInspectResponse {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Network ids whose driver is `calico`, from the captured `docker network inspect`.
fn is_calico(id: &str) -> bool {
    let path = format!("{}/tests/fixtures/networks.json", env!("CARGO_MANIFEST_DIR"));
    let nets: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    nets.as_array().unwrap().iter().any(|n| n["Id"] == id && n["Driver"] == "calico")
}

fn workload(name: &str) -> Result<Workload, MedicError> {
    workload_from_inspect(&fixture(name), &is_calico)
}

const GW: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

fn observed(mac: &str, ip: Ipv4Addr) -> ContainerSide {
    ContainerSide {
        link: Some(LinkState {
            index: 3,
            name: "cali0".into(),
            mac: mac.parse().ok(),
            admin_up: true,
            peer_index: None,
            mtu: None,
        }),
        addresses: vec![(ip, 32)],
        routes: vec![
            RouteEntry { destination: Ipv4Addr::UNSPECIFIED, prefix_len: 0, gateway: Some(GW), oif: Some(3) },
            RouteEntry { destination: GW, prefix_len: 32, gateway: None, oif: Some(3) },
        ],
    }
}

#[test]
fn calico_task_becomes_a_workload_with_marathon_identity() {
    let w = workload("inspect-calico.json").unwrap();
    assert!(w.container_name.starts_with("mesos-"));
    assert_eq!(w.marathon_app_id.as_deref(), Some("/web"));
    assert!(w.mesos_task_id.as_deref().unwrap().starts_with("web."));
    assert!(w.pid > 0 && !w.started_at.is_empty());
    assert_eq!(w.endpoints.len(), 1);
    let ep = &w.endpoints[0];
    assert_eq!(ep.network, "calico-lab");
    assert_eq!(ep.prefix_len, 32);
    assert_eq!(ep.docker_mac, Some(CALICO_MAC), "a healthy Docker reports the plugin's MAC");
    assert_eq!(ep.host_interface("cali"), format!("cali{}", &ep.endpoint_id[..11]));
}

#[test]
fn omit_mac_task_expects_the_host_neighbour_mac_and_plans_one_write() {
    let w = workload("inspect-calico-nomac.json").unwrap();
    let ep = &w.endpoints[0];
    assert_eq!(ep.docker_mac, None, "Docker dropped the MAC: inspect shows MacAddress \"\"");
    let host_if = ep.host_interface("cali");
    let e =
        Expected::resolve("cali0", host_if.clone(), ep.ip, GW, &mac_candidates(None, Some(CALICO_MAC), ep.docker_mac));
    assert_eq!((e.mac, e.mac_source), (CALICO_MAC, MacSource::HostNeighbour));
    let faults = diagnose_container(&e, &observed("5a:3c:11:22:33:44", ep.ip));
    assert_eq!(faults.iter().map(|f| f.kind).collect::<Vec<_>>(), vec![FaultKind::MacMismatch]);
    let steps = plan(&faults, &e, "cali0");
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].action.to_string(), "ip link set cali0 address ee:ee:ee:ee:ee:ee");
    // Without any evidence the Calico default is used.
    let e = Expected::resolve("cali0", host_if, ep.ip, GW, &mac_candidates(None, None, ep.docker_mac));
    assert_eq!(e.mac_source, MacSource::CalicoDefault);
    assert!(diagnose_container(&e, &observed("ee:ee:ee:ee:ee:ee", ep.ip)).is_empty());
}

#[test]
fn non_calico_host_shared_and_stopped_containers_are_refused() {
    match workload("inspect-bridge.json") {
        Err(MedicError::NotCalico { networks, .. }) => assert_eq!(networks, "bridge"),
        other => panic!("bridge container: {:?}", other.map(|w| w.container_name)),
    }
    assert!(matches!(workload("inspect-host.json"), Err(MedicError::HostNetwork(_))));

    let mut shared = fixture("inspect-calico.json");
    shared.host_config.as_mut().unwrap().network_mode = Some("container:0123abcd".into());
    assert!(matches!(workload_from_inspect(&shared, &is_calico), Err(MedicError::SharedNetwork { .. })));

    let mut stopped = fixture("inspect-calico.json");
    let state = stopped.state.as_mut().unwrap();
    state.running = Some(false);
    state.pid = Some(0);
    assert!(matches!(workload_from_inspect(&stopped, &is_calico), Err(MedicError::NotRunning(_))));
}

/// A task on the omit-MAC calico network plus a bridge network: Docker gives the
/// default route to the first network by name that has a gateway.
#[test]
fn two_network_task_knows_which_network_holds_the_default_route() {
    use calico_medic::workload::DefaultRoute;
    let with_bridge = |bridge: &str| {
        let mut inspect = fixture("inspect-calico-nomac.json");
        let nets = inspect.network_settings.as_mut().unwrap().networks.as_mut().unwrap();
        let mut other = nets["calico-lab-nomac"].clone();
        other.network_id = Some("b".repeat(64));
        other.endpoint_id = Some("c".repeat(64));
        other.gateway = Some("172.18.0.1".into());
        other.ip_address = Some("172.18.0.2".into());
        other.ip_prefix_len = Some(16);
        nets.insert(bridge.to_string(), other);
        workload_from_inspect(&inspect, &is_calico).unwrap()
    };
    let w = with_bridge("aaa-net");
    assert_eq!(w.endpoints.len(), 1, "the bridge network is not a calico endpoint");
    assert_eq!(w.endpoints[0].default_route, DefaultRoute::OtherNetwork("aaa-net".into()));
    let w = with_bridge("zzz-net");
    assert_eq!(w.endpoints[0].default_route, DefaultRoute::Owned, "calico sorts first: it is the gateway");
    // The plugin's own answer is what the workload keeps as its single endpoint otherwise.
    assert_eq!(workload("inspect-calico-nomac.json").unwrap().endpoints[0].default_route, DefaultRoute::Owned);
}
