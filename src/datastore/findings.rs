//! Pure comparisons against the datastore: one endpoint (`endpoint_findings`) and
//! the whole host (`orphans`). No I/O here.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use super::EndpointRecord;
use crate::diagnose::{Fault, FaultKind};
use crate::workload::{MacAddr, MacSource};

/// What the datastore says about one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No datastore view yet (never read, or the key is unreadable): no findings.
    Unknown,
    Missing,
    Found(EndpointRecord),
}

impl Lookup {
    pub fn mac(&self) -> Option<MacAddr> {
        match self {
            Lookup::Found(r) => r.mac,
            _ => None,
        }
    }

    /// The IPv4 addresses of the record (none when it is not found).
    pub fn ipv4(&self) -> Vec<Ipv4Addr> {
        match self {
            Lookup::Found(r) => r.ipv4.iter().map(|(a, _)| *a).collect(),
            _ => Vec::new(),
        }
    }
}

/// Datastore findings for one endpoint: its key is missing, its IP is not the one
/// Docker gave the container, or its MAC disagrees with another explicit source
/// (configuration, the host's ARP entry, `docker inspect`). Reported only.
pub fn endpoint_findings(
    lookup: &Lookup,
    key: &str,
    ip: Ipv4Addr,
    other_macs: &[(MacSource, Option<MacAddr>)],
) -> Vec<Fault> {
    let rec = match lookup {
        Lookup::Unknown => return Vec::new(),
        Lookup::Missing => {
            return vec![Fault::new(
                FaultKind::DatastoreEndpointMissing,
                format!("no endpoint at {key} in Calico's datastore: Felix will not route to {ip}"),
            )]
        }
        Lookup::Found(r) => r,
    };
    let mut out = Vec::new();
    if !rec.ipv4.iter().any(|(a, _)| *a == ip) {
        let nets: Vec<String> = rec.ipv4.iter().map(|(a, l)| format!("{a}/{l}")).collect();
        out.push(Fault::new(
            FaultKind::DatastoreIpMismatch,
            format!("datastore ipv4_nets [{}], but Docker gave the container {ip}", nets.join(", ")),
        ));
    }
    if let Some(mac) = rec.mac {
        let others: Vec<String> = other_macs
            .iter()
            .filter(|(src, _)| !matches!(src, MacSource::Datastore | MacSource::CalicoDefault))
            .filter_map(|(src, m)| m.filter(|m| *m != mac).map(|m| format!("{}={m}", src.as_str())))
            .collect();
        if !others.is_empty() {
            out.push(Fault::new(
                FaultKind::DatastoreMacMismatch,
                format!("datastore mac {mac}, but {}", others.join(", ")),
            ));
        }
    }
    out
}

/// Other records of this host (not `endpoint_id`) whose `ipv4_nets` hold `ip`: their
/// ids and interface names.
pub fn others_holding(
    endpoints: &BTreeMap<String, EndpointRecord>,
    endpoint_id: &str,
    ip: Ipv4Addr,
) -> Vec<(String, String)> {
    endpoints
        .iter()
        .filter(|(id, r)| id.as_str() != endpoint_id && r.ipv4.iter().any(|(a, _)| *a == ip))
        .map(|(id, r)| (id.clone(), r.name.clone()))
        .collect()
}

/// One IPv4 held by this endpoint and another of this host: both lose traffic to the
/// other (calicoctl#896, libcalico-go#989). Reported on each.
pub fn duplicate_ip(dir: &str, ip: Ipv4Addr, others: &[(String, String)]) -> Option<Fault> {
    let named: Vec<String> = others.iter().map(|(id, name)| format!("{dir}/{id} ({name})")).collect();
    (!named.is_empty())
        .then(|| Fault::new(FaultKind::DuplicateIp, format!("{ip} is also held by {} on this host", named.join(", "))))
}

/// Datastore endpoints of this host that no container holds (a crash leaked them;
/// Felix keeps routing to them), sorted.
pub fn orphans(datastore: &BTreeMap<String, EndpointRecord>, docker_endpoint_ids: &HashSet<String>) -> Vec<String> {
    datastore.keys().filter(|id| !docker_endpoint_ids.contains(*id)).cloned().collect()
}

/// One line about an orphan endpoint: its key, address and interface.
pub fn describe_orphan(dir: &str, id: &str, endpoints: &BTreeMap<String, EndpointRecord>) -> String {
    let (ips, name) = endpoints
        .get(id)
        .map(|r| (r.ipv4.iter().map(|(a, l)| format!("{a}/{l}")).collect::<Vec<_>>().join(","), r.name.clone()))
        .unwrap_or_default();
    format!(
        "orphan endpoint {dir}/{id} ({ips} on {name}): no container on this host holds it; Felix still routes to it"
    )
}

/// The datastore's findings for one endpoint: its record, another record holding its
/// IPv4, its profiles.
pub fn endpoint_faults(
    ds: &super::Datastore,
    lookup: &Lookup,
    endpoint: &crate::workload::Endpoint,
    macs: &[(crate::workload::MacSource, Option<crate::workload::MacAddr>)],
) -> Vec<Fault> {
    let key = format!("{}/{}", ds.dir, endpoint.endpoint_id);
    let mut out = endpoint_findings(lookup, &key, endpoint.ip, macs);
    let others = ds.with_endpoints(|e| others_holding(e, &endpoint.endpoint_id, endpoint.ip)).unwrap_or_default();
    out.extend(duplicate_ip(&ds.dir, endpoint.ip, &others));
    if let Lookup::Found(rec) = lookup {
        out.extend(super::profiles::findings(&rec.profile_ids, |id| ds.profile_state(id)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::CALICO_MAC;

    fn rec(mac: Option<&str>, ip: &str) -> EndpointRecord {
        EndpointRecord {
            endpoint_id: "e".into(),
            name: "calie".into(),
            state: "active".into(),
            mac: mac.map(|m| m.parse().unwrap()),
            ipv4: vec![(ip.parse().unwrap(), 32)],
            profile_ids: vec![],
        }
    }

    const IP: Ipv4Addr = Ipv4Addr::new(10, 65, 0, 5);

    #[test]
    fn missing_unknown_and_agreeing() {
        assert!(endpoint_findings(&Lookup::Unknown, "k", IP, &[]).is_empty());
        let f = endpoint_findings(&Lookup::Missing, "/calico/v1/host/h/…/e", IP, &[]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FaultKind::DatastoreEndpointMissing);
        assert!(f[0].detail.contains("/calico/v1/host/h/…/e"), "{}", f[0].detail);
        let ok = Lookup::Found(rec(Some("ee:ee:ee:ee:ee:ee"), "10.65.0.5"));
        // Docker reports no MAC (the seed failure): nothing disagrees.
        assert!(endpoint_findings(
            &ok,
            "k",
            IP,
            &[(MacSource::HostNeighbour, Some(CALICO_MAC)), (MacSource::DockerInspect, None)]
        )
        .is_empty());
    }

    #[test]
    fn ip_and_mac_drift() {
        let l = Lookup::Found(rec(Some("02:aa:bb:00:11:22"), "10.65.0.9"));
        let f = endpoint_findings(
            &l,
            "k",
            IP,
            &[(MacSource::HostNeighbour, Some(CALICO_MAC)), (MacSource::CalicoDefault, Some(CALICO_MAC))],
        );
        let kinds: Vec<FaultKind> = f.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, vec![FaultKind::DatastoreIpMismatch, FaultKind::DatastoreMacMismatch]);
        assert!(f[0].detail.contains("10.65.0.9/32") && f[0].detail.contains("10.65.0.5"), "{}", f[0].detail);
        assert_eq!(f[1].detail, "datastore mac 02:aa:bb:00:11:22, but host_neighbour=ee:ee:ee:ee:ee:ee");
    }

    #[test]
    fn one_ip_in_two_records_of_this_host_is_a_duplicate_on_each() {
        let rec = |id: &str, ip: [u8; 4]| EndpointRecord {
            endpoint_id: id.into(),
            name: format!("cali{}", &id[..1]),
            state: "active".into(),
            mac: None,
            ipv4: vec![(Ipv4Addr::from(ip), 32)],
            profile_ids: vec![],
        };
        let ds: BTreeMap<String, EndpointRecord> = [("a", [10, 0, 0, 1]), ("b", [10, 0, 0, 1]), ("c", [10, 0, 0, 2])]
            .map(|(id, ip)| (id.to_string(), rec(id, ip)))
            .into();
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(others_holding(&ds, "a", ip), vec![("b".to_string(), "calib".to_string())]);
        assert_eq!(others_holding(&ds, "b", ip), vec![("a".to_string(), "calia".to_string())]);
        assert!(others_holding(&ds, "c", Ipv4Addr::new(10, 0, 0, 2)).is_empty());
        let f = duplicate_ip(
            "/calico/v1/host/h/workload/libnetwork/libnetwork/endpoint",
            ip,
            &others_holding(&ds, "a", ip),
        )
        .unwrap();
        assert_eq!(f.kind, FaultKind::DuplicateIp);
        assert!(f.detail.contains("/b (calib)"), "{}", f.detail);
        assert!(duplicate_ip("d", ip, &[]).is_none());
    }

    #[test]
    fn orphans_are_datastore_keys_without_a_docker_endpoint() {
        let mut ds = BTreeMap::new();
        ds.insert("a".to_string(), rec(None, "10.0.0.1"));
        ds.insert("b".to_string(), rec(None, "10.0.0.2"));
        let docker: HashSet<String> = ["a".to_string(), "z".to_string()].into();
        assert_eq!(orphans(&ds, &docker), vec!["b".to_string()]);
    }
}
