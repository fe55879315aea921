//! Felix's host side for endpoints another plugin wrote to this host's etcd directory:
//! Calico's real libnetwork plugin (`calico-real`, tests/lab/calico-real/) runs beside the
//! stand-in and writes its endpoints there, but nothing would program the host for them (the
//! stand-in programs its own in `Join`). Like Felix, this follows
//! `/calico/v1/host/<host>/workload/libnetwork/libnetwork/endpoint/` (a list, then etcd
//! long-polls) and, once an endpoint's host veth (the record's `name`) has carrier, programs
//! it from the record: the per-interface sysctls, the `/32` route and a PERMANENT neighbour
//! with the record's `mac` (`host::felix_program`, the same as for the stand-in's own).
//!
//! Each endpoint is programmed once per host veth (again only when its veth is replaced, or
//! after this plugin restarts): a later change of the record, or an entry removed by hand (a
//! test making Felix look "behind"), is left as it is. Nothing is ever removed: the route and
//! neighbour go with the veth when the other plugin deletes it.

use crate::etcd::Etcd;
use crate::host;
use crate::log;
use crate::plugin::Plugin;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long one etcd long-poll waits before listing again.
const WAIT: Duration = Duration::from_secs(20);
/// While an endpoint waits for its veth: how often the links are looked at.
const PENDING_TICK: Duration = Duration::from_millis(10);
const IDLE_TICK: Duration = Duration::from_secs(1);

/// What Felix needs from Calico's endpoint JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The host veth, `cali<11 hex>`.
    pub name: String,
    /// The IPv4 address, without its `/32`.
    pub addr: String,
    /// Lower case.
    pub mac: String,
}

/// Calico's endpoint JSON → a `Record`; `None` when it lacks a usable name, IPv4 address or MAC.
pub fn record(v: &Value) -> Option<Record> {
    let name = v["name"].as_str().filter(|n| n.starts_with("cali") && n.len() <= 15 && !n.contains('/'))?;
    let net = v["ipv4_nets"].as_array()?.first()?.as_str()?;
    let addr: Ipv4Addr = net.split('/').next()?.parse().ok()?;
    let mac = v["mac"].as_str().filter(|m| m.len() == 17 && m.split(':').count() == 6)?;
    Some(Record { name: name.to_string(), addr: addr.to_string(), mac: mac.to_ascii_lowercase() })
}

/// What has been programmed: endpoint id → (host veth, its ifindex then).
pub type Programmed = BTreeMap<String, (String, u32)>;

/// Pure: the other plugins' endpoints to program now, with the ifindex of their veth.
/// `own` says whether the stand-in created an endpoint; `ready` gives a host veth's ifindex
/// when it exists with carrier.
pub fn due(
    records: &BTreeMap<String, Value>,
    own: impl Fn(&str) -> bool,
    programmed: &Programmed,
    ready: impl Fn(&str) -> Option<u32>,
) -> Vec<(String, Record, u32)> {
    let mut out = Vec::new();
    for (id, v) in records {
        if own(id) {
            continue;
        }
        let Some(rec) = record(v) else { continue };
        let Some(index) = ready(&rec.name) else { continue };
        if programmed.get(id).is_some_and(|(name, i)| *name == rec.name && *i == index) {
            continue;
        }
        out.push((id.clone(), rec, index));
    }
    out
}

/// Pure: forgets endpoints whose veth is gone or replaced (`link` gives an ifindex when the
/// link exists).
pub fn prune(programmed: &mut Programmed, link: impl Fn(&str) -> Option<u32>) {
    programmed.retain(|_, (name, index)| link(name) == Some(*index));
}

/// Whether some other plugin's endpoint still waits for its veth.
fn waiting(records: &BTreeMap<String, Value>, own: impl Fn(&str) -> bool, programmed: &Programmed) -> bool {
    records.keys().any(|id| !own(id) && !programmed.contains_key(id))
}

/// Starts the follower (a thread: blocking etcd calls) and the programmer (a task).
pub fn spawn(plugin: Arc<Plugin>, etcd: Etcd) {
    log!("felix: also programming other plugins' endpoints found in {}", etcd.describe());
    let (tx, rx) = watch::channel(Arc::new(BTreeMap::new()));
    std::thread::Builder::new()
        .name("felix-etcd".into())
        .spawn(move || follow(&etcd, &tx))
        .expect("spawn the etcd follower thread");
    tokio::spawn(program_loop(plugin, rx));
}

/// Lists the directory, hands the records on, waits for a change; again and again.
fn follow(etcd: &Etcd, tx: &watch::Sender<Arc<BTreeMap<String, Value>>>) {
    let mut down = false;
    while !tx.is_closed() {
        let outcome = etcd.list().and_then(|(index, records)| {
            tx.send_if_modified(|cur| {
                let changed = **cur != records;
                if changed {
                    *cur = Arc::new(records);
                }
                changed
            });
            etcd.wait_change(index, WAIT)
        });
        match outcome {
            Ok(_) if down => {
                log!("felix: etcd answers again");
                down = false;
            }
            Ok(_) => {}
            Err(e) => {
                if !down {
                    log!("felix: {e}; retrying every second");
                    down = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

async fn program_loop(plugin: Arc<Plugin>, mut rx: watch::Receiver<Arc<BTreeMap<String, Value>>>) {
    let mut programmed = Programmed::new();
    loop {
        let records = rx.borrow_and_update().clone();
        for (id, rec, index) in due(&records, |id| plugin.owns(id), &programmed, host::ready_ifindex) {
            match host::felix_program(&rec.name, &rec.addr, &rec.mac, Duration::ZERO).await {
                Ok(()) => log!("felix: endpoint {id} (another plugin's) programmed from etcd"),
                Err(e) => log!("felix: endpoint {id} (another plugin's): {e}"),
            }
            programmed.insert(id, (rec.name, index));
        }
        prune(&mut programmed, host::ifindex);
        let tick = if waiting(&records, |id| plugin.owns(id), &programmed) { PENDING_TICK } else { IDLE_TICK };
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(tick) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(name: &str, ip: &str, mac: &str) -> Value {
        json!({"state": "active", "name": name, "active_instance_id": "", "mac": mac,
               "profile_ids": ["calico-lab-real"], "ipv4_nets": [ip], "ipv6_nets": []})
    }

    #[test]
    fn records_are_read_like_felix() {
        assert_eq!(
            record(&rec("cali0123456789a", "10.68.0.1/32", "EE:EE:EE:EE:EE:EE")),
            Some(Record { name: "cali0123456789a".into(), addr: "10.68.0.1".into(), mac: "ee:ee:ee:ee:ee:ee".into() })
        );
        assert_eq!(record(&rec("eth0", "10.68.0.1/32", "ee:ee:ee:ee:ee:ee")), None, "not a calico veth");
        assert_eq!(record(&rec("cali0123456789abc", "10.68.0.1/32", "ee:ee:ee:ee:ee:ee")), None, "too long");
        assert_eq!(record(&rec("cali01", "fd00::1/128", "ee:ee:ee:ee:ee:ee")), None, "IPv4 only");
        assert_eq!(record(&rec("cali01", "10.68.0.1/32", "ee:ee")), None);
        assert_eq!(record(&json!({"name": "cali01"})), None);
    }

    #[test]
    fn only_others_endpoints_with_a_ready_veth_are_programmed_once_per_veth() {
        let records: BTreeMap<String, Value> = [
            ("mine".to_string(), rec("calimine", "10.65.0.1/32", "ee:ee:ee:ee:ee:ee")),
            ("real".to_string(), rec("calireal", "10.68.0.1/32", "ee:ee:ee:ee:ee:ee")),
            ("nolink".to_string(), rec("calinolink", "10.68.0.2/32", "ee:ee:ee:ee:ee:ee")),
            ("junk".to_string(), json!("not an endpoint")),
        ]
        .into_iter()
        .collect();
        let own = |id: &str| id == "mine";
        let mut links: BTreeMap<&str, u32> = [("calimine", 7), ("calireal", 8)].into_iter().collect();
        let mut programmed = Programmed::new();
        let todo = due(&records, own, &programmed, |n| links.get(n).copied());
        assert_eq!(todo.len(), 1, "{todo:?}");
        assert_eq!((todo[0].0.as_str(), todo[0].1.name.as_str(), todo[0].2), ("real", "calireal", 8));
        programmed.insert("real".into(), ("calireal".into(), 8));
        assert!(waiting(&records, own, &programmed), "nolink still waits for its veth");
        assert!(due(&records, own, &programmed, |n| links.get(n).copied()).is_empty(), "once");

        // a changed record on the same veth: left alone (Felix "behind" stays behind)
        let mut changed = records.clone();
        changed.insert("real".into(), rec("calireal", "10.68.0.1/32", "02:aa:bb:00:00:01"));
        assert!(due(&changed, own, &programmed, |n| links.get(n).copied()).is_empty());

        // the veth replaced (same name, new ifindex): programmed again; gone: forgotten
        links.insert("calireal", 9);
        let todo = due(&records, own, &programmed, |n| links.get(n).copied());
        assert_eq!(todo.iter().map(|t| t.2).collect::<Vec<_>>(), vec![9]);
        prune(&mut programmed, |n| links.get(n).copied());
        assert!(programmed.is_empty(), "ifindex 8 is gone");
        programmed.insert("real".into(), ("calireal".into(), 9));
        links.remove("calireal");
        prune(&mut programmed, |n| links.get(n).copied());
        assert!(programmed.is_empty());
    }
}
