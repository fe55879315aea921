//! The plugin's etcd v2 client: what Calico v2.6's libnetwork plugin writes for each
//! workload endpoint, at the same key and in the same JSON (libcalico-go's etcd v2
//! backend, asserted by projectcalico/libnetwork-plugin's tests):
//!
//! `/calico/v1/host/<hostname>/workload/libnetwork/libnetwork/endpoint/<EndpointID>` →
//! `{"state":"active","name":"cali<id[:11]>","active_instance_id":"","mac":"…",
//!   "profile_ids":["<network>"],"ipv4_nets":["a.b.c.d/32"],"ipv6_nets":[]}`
//!
//! Plain HTTP/1.1 on loopback (the lab's etcd), blocking with short timeouts: a
//! stand-in's client, not a general one.

use crate::store::Endpoint;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

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
fn form_encode(s: &str) -> String {
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

    /// Calico's JSON for one endpoint.
    pub fn value(ep: &Endpoint) -> Value {
        json!({
            "state": "active",
            "name": ep.host_interface,
            "active_instance_id": "",
            "mac": ep.mac,
            "profile_ids": [if ep.profile.is_empty() { &ep.network_id } else { &ep.profile }],
            "ipv4_nets": [ep.ip],
            "ipv6_nets": [],
        })
    }

    pub fn put(&self, ep: &Endpoint) -> Result<(), String> {
        let body = format!("value={}", form_encode(&Etcd::value(ep).to_string()));
        let (status, text) = self.request("PUT", &self.key(&ep.endpoint_id), Some(&body))?;
        if status != 200 && status != 201 {
            return Err(format!("etcd PUT {} answered {status}: {}", self.key(&ep.endpoint_id), text.trim()));
        }
        Ok(())
    }

    pub fn delete(&self, endpoint_id: &str) -> Result<(), String> {
        let (status, text) = self.request("DELETE", &self.key(endpoint_id), None)?;
        // 404: already gone (errorCode 100, key not found).
        if status != 200 && status != 404 {
            return Err(format!("etcd DELETE {} answered {status}: {}", self.key(endpoint_id), text.trim()));
        }
        Ok(())
    }

    /// Every endpoint stored for this host. The network id comes back as the first
    /// profile id (what the plugin stores there).
    pub fn load(&self) -> Result<BTreeMap<String, Endpoint>, String> {
        let (status, text) = self.request("GET", &format!("{}?recursive=true", self.dir()), None)?;
        let mut out = BTreeMap::new();
        if status == 404 {
            return Ok(out);
        }
        if status != 200 {
            return Err(format!("etcd GET {} answered {status}: {}", self.dir(), text.trim()));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("parsing etcd's answer: {e}"))?;
        for node in v["node"]["nodes"].as_array().into_iter().flatten() {
            let (Some(key), Some(raw)) = (node["key"].as_str(), node["value"].as_str()) else { continue };
            let id = key.rsplit('/').next().unwrap_or_default().to_string();
            let Ok(ep) = serde_json::from_str::<Value>(raw) else {
                crate::log!("etcd: {key} is not JSON; ignored");
                continue;
            };
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

    /// One HTTP/1.1 request (`Connection: close`); returns the status and the body.
    fn request(&self, method: &str, path: &str, form: Option<&str>) -> Result<(u16, String), String> {
        let fail = |e: std::io::Error| format!("etcd at {}: {method} {path}: {e}", self.authority);
        let addr = self
            .authority
            .to_socket_addrs()
            .map_err(fail)?
            .next()
            .ok_or_else(|| format!("etcd at {}: no address", self.authority))?;
        let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(fail)?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(fail)?;
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
        let body = if chunked { dechunk(body) } else { body.to_string() };
        Ok((status, body))
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
        assert_eq!(
            Etcd::value(&ep),
            json!({"state":"active","name":"cali0123456789a","active_instance_id":"","mac":"ee:ee:ee:ee:ee:ee",
                   "profile_ids":["calico-lab"],"ipv4_nets":["10.65.0.1/32"],"ipv6_nets":[]})
        );
        assert_eq!(form_encode("{\"a\":\"b c\"}"), "%7B%22a%22%3A%22b%20c%22%7D");
        assert!(Etcd::new("https://x:1", "h").is_err());
        assert!(Etcd::new("http://x:1", "a/b").is_err());
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }
}
