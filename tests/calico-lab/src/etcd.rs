//! The plugin's etcd v2 client: what Calico v2.6's libnetwork plugin writes for each
//! workload endpoint, at the same key and in the same JSON (libcalico-go's etcd v2
//! backend, asserted by projectcalico/libnetwork-plugin's tests):
//!
//! `/calico/v1/host/<hostname>/workload/libnetwork/libnetwork/endpoint/<EndpointID>` →
//! `{"state":"active","name":"cali<id[:11]>","active_instance_id":"","mac":"…",
//!   "profile_ids":["<network>"],"ipv4_nets":["a.b.c.d/32"],"ipv6_nets":[]}`
//!
//! and, like libcalico-go's `Profiles().Create`, the network's profile once
//! (`/calico/v1/policy/profile/<network>/tags`, `labels`, `rules`, each created only if absent).
//!
//! It also lists and long-polls (`?wait=true`) the endpoint directory for the Felix stand-in
//! (`felix.rs`). Plain HTTP/1.1 on loopback (the lab's etcd), blocking with short timeouts: a
//! stand-in's client, not a general one.

use crate::store::Endpoint;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

pub(crate) const TIMEOUT: Duration = Duration::from_secs(3);

/// Calico's endpoint JSON, fields in libcalico-go's order (`model.WorkloadEndpoint`).
#[derive(Serialize)]
struct CalicoEndpoint<'a> {
    state: &'a str,
    name: &'a str,
    active_instance_id: &'a str,
    mac: &'a str,
    profile_ids: [&'a str; 1],
    ipv4_nets: [&'a str; 1],
    ipv6_nets: [&'a str; 0],
}

/// One answer: HTTP status, etcd's `X-Etcd-Index` (when sent) and the body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) index: Option<u64>,
    pub(crate) body: String,
}

#[derive(Debug, Clone)]
pub struct Etcd {
    /// `host:port`
    authority: String,
    hostname: String,
}

/// Calico's host name for this machine, as calico/node determines it: `NODENAME`,
/// then `HOSTNAME`, then the kernel's host name.
pub fn calico_hostname() -> String {
    for var in ["NODENAME", "HOSTNAME"] {
        if let Ok(v) = std::env::var(var) {
            if !v.trim().is_empty() {
                return v.trim().to_string();
            }
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Percent-encodes a form value (`application/x-www-form-urlencoded`).
pub(crate) fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Etcd {
    /// `url` is `http://host:port` (no TLS: the lab's etcd listens on loopback only).
    pub fn new(url: &str, hostname: &str) -> Result<Etcd, String> {
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("etcd endpoint {url:?}: only http:// is supported by the lab plugin"))?
            .trim_end_matches('/')
            .to_string();
        if hostname.is_empty() || hostname.contains('/') {
            return Err(format!("calico host name {hostname:?} is not usable in an etcd key"));
        }
        Ok(Etcd { authority, hostname: hostname.to_string() })
    }

    /// Calico's name for this host (its IPAM affinities and endpoint keys).
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn describe(&self) -> String {
        format!("etcd http://{}{}", self.authority, self.dir())
    }

    /// The directory of this host's libnetwork endpoints.
    pub fn dir(&self) -> String {
        format!("/calico/v1/host/{}/workload/libnetwork/libnetwork/endpoint", self.hostname)
    }

    fn key(&self, endpoint_id: &str) -> String {
        format!("{}/{endpoint_id}", self.dir())
    }

    /// Calico's JSON for one endpoint, as libcalico-go writes it (same fields, same order).
    pub fn value(ep: &Endpoint) -> String {
        let profile = if ep.profile.is_empty() { &ep.network_id } else { &ep.profile };
        serde_json::to_string(&CalicoEndpoint {
            state: "active",
            name: &ep.host_interface,
            active_instance_id: "",
            mac: &ep.mac,
            profile_ids: [profile],
            ipv4_nets: [&ep.ip],
            ipv6_nets: [],
        })
        .expect("plain strings serialise")
    }

    pub fn put(&self, ep: &Endpoint) -> Result<(), String> {
        let body = format!("value={}", form_encode(&Etcd::value(ep)));
        let a = self.request("PUT", &self.key(&ep.endpoint_id), Some(&body), TIMEOUT)?;
        if a.status != 200 && a.status != 201 {
            return Err(format!("etcd PUT {} answered {}: {}", self.key(&ep.endpoint_id), a.status, a.body.trim()));
        }
        Ok(())
    }

    pub fn delete(&self, endpoint_id: &str) -> Result<(), String> {
        let a = self.request("DELETE", &self.key(endpoint_id), None, TIMEOUT)?;
        // 404: already gone (errorCode 100, key not found).
        if a.status != 200 && a.status != 404 {
            return Err(format!("etcd DELETE {} answered {}: {}", self.key(endpoint_id), a.status, a.body.trim()));
        }
        // Like libcalico-go: the endpoint's parent directories go too once empty (a directory
        // that is not empty answers 403, errorCode 108, and stays).
        let workload = self.dir().trim_end_matches("/endpoint").to_string();
        for dir in [self.dir(), workload] {
            let _ = self.request("DELETE", &format!("{dir}?dir=true"), None, TIMEOUT);
        }
        Ok(())
    }

    /// Calico's profile for a network, as libnetwork-plugin's CreateEndpoint creates it
    /// through libcalico-go (tags, labels, rules; each only if absent: an existing profile,
    /// maybe edited by an operator, is left alone).
    pub fn ensure_profile(&self, name: &str) -> Result<(), String> {
        if name.is_empty() || name.contains('/') {
            return Err(format!("profile name {name:?} is not usable in an etcd key"));
        }
        let rules = json!({"inbound_rules": [{"action": "allow", "src_tag": name}],
                           "outbound_rules": [{"action": "allow"}]});
        let parts = [("tags", json!([name]).to_string()), ("labels", "{}".to_string()), ("rules", rules.to_string())];
        for (part, value) in parts {
            let key = format!("/calico/v1/policy/profile/{name}/{part}");
            let body = format!("value={}", form_encode(&value));
            let a = self.request("PUT", &format!("{key}?prevExist=false"), Some(&body), TIMEOUT)?;
            // 412: errorCode 105, the key exists
            if a.status != 201 && a.status != 412 {
                return Err(format!("etcd PUT {key} answered {}: {}", a.status, a.body.trim()));
            }
        }
        Ok(())
    }

    /// Every endpoint record of this host as raw JSON, keyed by endpoint id, with etcd's
    /// index (to wait for the next change from).
    pub fn list(&self) -> Result<(u64, BTreeMap<String, Value>), String> {
        let a = self.request("GET", &format!("{}?recursive=true", self.dir()), None, TIMEOUT)?;
        let mut out = BTreeMap::new();
        let index = a.index.unwrap_or(0);
        if a.status == 404 {
            return Ok((index, out));
        }
        if a.status != 200 {
            return Err(format!("etcd GET {} answered {}: {}", self.dir(), a.status, a.body.trim()));
        }
        let v: Value = serde_json::from_str(&a.body).map_err(|e| format!("parsing etcd's answer: {e}"))?;
        for node in v["node"]["nodes"].as_array().into_iter().flatten() {
            let (Some(key), Some(raw)) = (node["key"].as_str(), node["value"].as_str()) else { continue };
            let id = key.rsplit('/').next().unwrap_or_default().to_string();
            match serde_json::from_str::<Value>(raw) {
                Ok(ep) => {
                    out.insert(id, ep);
                }
                Err(_) => crate::log!("etcd: {key} is not JSON; ignored"),
            }
        }
        Ok((index, out))
    }

    /// Long-polls the endpoint directory for a change after `index`, for up to `timeout`.
    /// `Ok(true)`: something changed (or etcd no longer has that index): list again;
    /// `Ok(false)`: nothing within `timeout`.
    pub fn wait_change(&self, index: u64, timeout: Duration) -> Result<bool, String> {
        let path = format!("{}?wait=true&recursive=true&waitIndex={}", self.dir(), index + 1);
        match self.request("GET", &path, None, timeout) {
            // 400 with errorCode 401: the index was cleared
            Ok(a) if a.status == 200 || a.status == 400 => Ok(true),
            Ok(a) => Err(format!("etcd watch {} answered {}: {}", self.dir(), a.status, a.body.trim())),
            Err(e) if e.contains("timed out") || e.contains("would block") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every endpoint stored for this host. The network id comes back as the first
    /// profile id (what the plugin stores there).
    pub fn load(&self) -> Result<BTreeMap<String, Endpoint>, String> {
        let mut out = BTreeMap::new();
        for (id, ep) in self.list()?.1 {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            out.insert(
                id.clone(),
                Endpoint {
                    endpoint_id: id,
                    network_id: s(&ep["profile_ids"][0]),
                    profile: s(&ep["profile_ids"][0]),
                    ip: s(&ep["ipv4_nets"][0]),
                    mac: s(&ep["mac"]).to_ascii_lowercase(),
                    host_interface: s(&ep["name"]),
                    container_interface: "cali0".into(),
                },
            );
        }
        Ok(out)
    }

    /// One HTTP/1.1 request (`Connection: close`); `timeout` bounds connecting, writing and
    /// each read.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        form: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let fail = |e: std::io::Error| {
            let e = match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut => "timed out".to_string(),
                _ => e.to_string(),
            };
            format!("etcd at {}: {method} {path}: {e}", self.authority)
        };
        let addr = self
            .authority
            .to_socket_addrs()
            .map_err(fail)?
            .next()
            .ok_or_else(|| format!("etcd at {}: no address", self.authority))?;
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(fail)?;
        s.set_read_timeout(Some(timeout)).map_err(fail)?;
        s.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
        let mut req = format!("{method} /v2/keys{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.authority);
        if let Some(body) = form {
            req.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        } else {
            req.push_str("\r\n");
        }
        s.write_all(req.as_bytes()).map_err(fail)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).map_err(fail)?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) =
            text.split_once("\r\n\r\n").ok_or_else(|| format!("etcd at {}: malformed answer", self.authority))?;
        let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        let index = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("x-etcd-index").then(|| v.trim().parse().ok())?
        });
        let body = if chunked { dechunk(body) } else { body.to_string() };
        Ok(Answer { status, index, body })
    }
}

/// Decodes a chunked body (etcd streams large directory answers this way).
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].strip_prefix("\r\n").unwrap_or(&tail[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calico_json_and_key() {
        let e = Etcd::new("http://127.0.0.1:2379", "host-1").unwrap();
        let ep = Endpoint {
            endpoint_id: "0123456789abcdef".into(),
            network_id: "calico-lab".into(),
            ip: "10.65.0.1/32".into(),
            mac: "ee:ee:ee:ee:ee:ee".into(),
            host_interface: "cali0123456789a".into(),
            container_interface: "cali0".into(),
            profile: String::new(),
        };
        assert_eq!(
            e.key(&ep.endpoint_id),
            "/calico/v1/host/host-1/workload/libnetwork/libnetwork/endpoint/0123456789abcdef"
        );
        // byte for byte what libnetwork-plugin v1.1.3 writes (its fields, in its order)
        assert_eq!(
            Etcd::value(&ep),
            r#"{"state":"active","name":"cali0123456789a","active_instance_id":"","mac":"ee:ee:ee:ee:ee:ee","profile_ids":["calico-lab"],"ipv4_nets":["10.65.0.1/32"],"ipv6_nets":[]}"#
        );
        assert_eq!(form_encode("{\"a\":\"b c\"}"), "%7B%22a%22%3A%22b%20c%22%7D");
        assert!(Etcd::new("https://x:1", "h").is_err());
        assert!(Etcd::new("http://x:1", "a/b").is_err());
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }

    /// A throw-away etcd (Debian's etcd-server, v2 API) on free loopback ports; killed on drop.
    struct TestEtcd {
        child: std::process::Child,
        dir: std::path::PathBuf,
        url: String,
    }

    impl TestEtcd {
        fn start() -> Option<TestEtcd> {
            let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let (client, peer) = (format!("http://127.0.0.1:{}", port()), format!("http://127.0.0.1:{}", port()));
            let dir = std::env::temp_dir().join(format!("calico-lab-etcd-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let spawned = std::process::Command::new("etcd")
                .args(["--name", "t", "--enable-v2", "--data-dir"])
                .arg(&dir)
                .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("t={peer}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            let child = match spawned {
                Ok(c) => c,
                Err(e) if std::env::var_os("CI").is_none() => {
                    eprintln!("SKIP: no etcd binary (Debian's etcd-server): {e}");
                    return None;
                }
                Err(e) => panic!("CI is set and etcd does not start: {e}"),
            };
            let t = TestEtcd { child, dir, url: client };
            let probe = Etcd::new(&t.url, "probe").unwrap();
            for _ in 0..200 {
                if probe.list().is_ok() {
                    return Some(t);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("the test etcd did not answer on {}", t.url);
        }
    }

    impl Drop for TestEtcd {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn list_wait_and_profile_against_a_real_etcd() {
        let Some(t) = TestEtcd::start() else { return };
        let e = Etcd::new(&t.url, "host-1").unwrap();
        let (i0, recs) = e.list().unwrap();
        assert!(recs.is_empty() && i0 > 0, "no directory yet: empty, with etcd's index {i0}");
        let started = std::time::Instant::now();
        assert_eq!(e.wait_change(i0, Duration::from_millis(300)), Ok(false), "quiet: the long-poll times out");
        assert!(started.elapsed() >= Duration::from_millis(300));

        let ep = Endpoint {
            endpoint_id: "e1".into(),
            network_id: "calico-lab".into(),
            ip: "10.68.0.1/32".into(),
            mac: "ee:ee:ee:ee:ee:ee".into(),
            host_interface: "calie1".into(),
            container_interface: "cali0".into(),
            profile: "calico-lab".into(),
        };
        let writer = {
            let (e, ep) = (e.clone(), ep.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                e.put(&ep).unwrap();
            })
        };
        assert_eq!(e.wait_change(i0, Duration::from_secs(5)), Ok(true), "a write in the directory wakes it");
        writer.join().unwrap();
        let (i1, recs) = e.list().unwrap();
        assert!(i1 > i0);
        assert_eq!(recs["e1"]["name"], "calie1");
        assert_eq!(e.load().unwrap()["e1"], ep);
        // deleting the last endpoint removes the empty directories above it, as libcalico-go does
        e.put(&Endpoint { endpoint_id: "e2".into(), ..ep.clone() }).unwrap();
        e.delete("e1").unwrap();
        assert_eq!(e.list().unwrap().1.keys().collect::<Vec<_>>(), vec!["e2"], "a directory in use stays");
        e.delete("e2").unwrap();
        let gone = e.request("GET", "/calico/v1/host/host-1/workload/libnetwork/libnetwork", None, TIMEOUT).unwrap();
        assert_eq!(gone.status, 404, "{}", gone.body);
        let kept = e.request("GET", "/calico/v1/host/host-1/workload/libnetwork", None, TIMEOUT).unwrap();
        assert_eq!(kept.status, 200, "only the endpoint and workload directories go: {}", kept.body);
        e.put(&ep).unwrap();
        let (i1, _) = e.list().unwrap();
        // a write elsewhere does not
        let other = Etcd::new(&t.url, "host-2").unwrap();
        let writer = std::thread::spawn(move || other.put(&Endpoint { endpoint_id: "x".into(), ..ep }).unwrap());
        assert_eq!(e.wait_change(i1, Duration::from_millis(500)), Ok(false), "another host's directory");
        writer.join().unwrap();

        // the profile: libcalico-go's three keys, created once; an operator's edit is kept
        e.ensure_profile("calico-lab").unwrap();
        let get = |part: &str| {
            let a = e.request("GET", &format!("/calico/v1/policy/profile/calico-lab/{part}"), None, TIMEOUT).unwrap();
            serde_json::from_str::<Value>(&a.body).unwrap()["node"]["value"].as_str().unwrap().to_string()
        };
        assert_eq!(get("tags"), r#"["calico-lab"]"#);
        assert_eq!(get("labels"), "{}");
        assert_eq!(
            get("rules"),
            r#"{"inbound_rules":[{"action":"allow","src_tag":"calico-lab"}],"outbound_rules":[{"action":"allow"}]}"#
        );
        let body = format!("value={}", form_encode(r#"["edited"]"#));
        e.request("PUT", "/calico/v1/policy/profile/calico-lab/tags", Some(&body), TIMEOUT).unwrap();
        e.ensure_profile("calico-lab").unwrap();
        assert_eq!(get("tags"), r#"["edited"]"#);
        assert!(e.ensure_profile("a/b").is_err());
    }
}
