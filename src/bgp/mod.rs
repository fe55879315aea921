//! Across hosts: whether this host can reach the others' tasks. `bird` reads BIRD's
//! BGP sessions from its control socket; `routes` checks that every other host's block
//! (from the datastore) has a route here; `remote` plans task-to-task probes to other
//! hosts' workloads. This file does the reads: the datastore's topology, the host's
//! routes, a remote host's endpoints, and one probe from inside a local task.
//! Nothing here repairs anything: a remote fault is reported, never fixed locally.

pub mod bird;
pub mod remote;
pub mod routes;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

pub use bird::{peers, show_protocols, Peer};
pub use remote::{HostResult, RemoteState};
pub use routes::{unrouted, Cidr, Topology, Unrouted};

use crate::datastore::{endpoint_dir, parse_nodes, EndpointRecord, EtcdClient};
use crate::error::MedicError;
use crate::medic::Medic;
use crate::netlink::{Netlink, RouteEntry};
use crate::netns::TargetNetns;
use crate::probe::{from_netns, ProbeTarget};

/// The cluster's blocks, BGP addresses and IPIP pools from the datastore.
pub async fn read_topology(client: &EtcdClient) -> Result<Topology, MedicError> {
    let affinities = client.get_dir("/calico/ipam/v2/host").await?;
    let bgp = client.get_dir("/calico/bgp/v1/host").await?;
    let pools = client.get_dir("/calico/v1/ipam/v4/pool").await?;
    Ok(Topology::from_nodes(&affinities.nodes, &bgp.nodes, &pools.nodes))
}

/// The host's main IPv4 routes and its links' names by index.
pub async fn host_routes(deadline: Duration) -> Result<(Vec<RouteEntry>, HashMap<u32, String>), MedicError> {
    let host = Netlink::host()?.with_timeout(deadline);
    let routes = host.ipv4_main_routes().await?;
    let links = host.links().await?.into_iter().map(|l| (l.index, l.name)).collect();
    Ok((routes, links))
}

/// The endpoints another host holds, by its libnetwork records (sorted by id).
pub async fn remote_endpoints(client: &EtcdClient, host: &str) -> Result<Vec<EndpointRecord>, MedicError> {
    let dir = endpoint_dir(host);
    let read = client.get_dir(&dir).await?;
    let (records, _) = parse_nodes(&dir, &read.nodes);
    Ok(records.into_values().filter(|r| !r.ipv4.is_empty()).collect())
}

/// One ICMP echo to `target` from inside the running local task `id`, which must be a
/// calico workload (`Docker::workload` says why not otherwise).
pub async fn probe_from(
    medic: &Medic,
    id: &str,
    target: Ipv4Addr,
    timeout: Duration,
) -> Result<Option<Duration>, MedicError> {
    let workload = medic.docker.workload(id).await?;
    let ns = TargetNetns::open_pid(workload.pid, medic.host_ns())?;
    from_netns(&ns, &ProbeTarget::Icmp(target), timeout).await
}
