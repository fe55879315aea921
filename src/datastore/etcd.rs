//! etcd's v2 keys API over HTTP(S) with reqwest: a recursive read of one directory
//! and the long-poll watch (`?wait=true&recursive=true&waitIndex=N`). Several
//! endpoints: a request goes to the last one that answered and fails over to the
//! others in order. Every request has a deadline (`call_timeout` for reads, the
//! watch timeout for watches), and every answer a ceiling (`[limits]
//! datastore_answer_bytes`): a body is read chunk by chunk and dropped past it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

use super::Settings;
use crate::error::MedicError;

mod keys;
pub use keys::{Leaf, Swapped};

/// One key of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub key: String,
    pub value: Option<String>,
}

/// A recursive read: every leaf under the directory and etcd's index at the read.
#[derive(Debug, Clone)]
pub struct DirRead {
    pub nodes: Vec<Node>,
    pub index: u64,
}

/// One change under a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub action: String,
    pub key: String,
    pub value: Option<String>,
    pub modified_index: u64,
}

impl Event {
    pub fn is_removal(&self) -> bool {
        matches!(self.action.as_str(), "delete" | "expire" | "compareAndDelete")
    }
}

/// What a watch request came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watched {
    Event(Event),
    /// etcd no longer has the events from the requested index (it keeps the last
    /// 1000): the watcher must read everything again. Carries etcd's current index.
    Cleared(u64),
    /// No change within the watch timeout: watch again from the same index.
    Quiet,
}

/// etcd's error body (`{"errorCode":401,"message":"The event in requested index is outdated and cleared",…}`).
pub const INDEX_CLEARED: u64 = 401;
const KEY_NOT_FOUND: u64 = 100;
pub(super) const NODE_EXISTS: u64 = 105;
pub(super) const COMPARE_FAILED: u64 = 101;

#[derive(Deserialize, Default)]
struct Answer {
    #[serde(default, rename = "errorCode")]
    error_code: Option<u64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    node: Option<RawNode>,
}

#[derive(Deserialize, Default)]
struct RawNode {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    dir: bool,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default, rename = "modifiedIndex")]
    modified_index: u64,
}

fn flatten(node: RawNode, out: &mut Vec<Node>) {
    if node.dir {
        for child in node.nodes {
            flatten(child, out);
        }
    } else {
        out.push(Node { key: node.key, value: node.value });
    }
}

pub struct EtcdClient {
    endpoints: Vec<String>,
    http: reqwest::Client,
    call_timeout: Duration,
    /// The ceiling of one answer's body, in bytes.
    max_answer_bytes: u64,
    auth: Option<(String, String)>,
    /// Index into `endpoints` of the one that answered last.
    preferred: AtomicUsize,
}

/// rustls needs a process-wide crypto provider; calico-medic uses ring everywhere.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn read_file(what: &str, path: &str) -> Result<Vec<u8>, MedicError> {
    std::fs::read(path)
        .map_err(|e| MedicError::ConfigIo { context: format!("datastore: reading {what} {path}"), source: e })
}

impl EtcdClient {
    pub fn new(s: &Settings) -> Result<EtcdClient, MedicError> {
        install_crypto_provider();
        let mut b = reqwest::Client::builder()
            .connect_timeout(s.call_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tls_backend_rustls();
        if let Some(ca) = &s.ca_file {
            let pem = read_file("etcd CA file", ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| MedicError::ConfigTls { context: format!("datastore: etcd CA file {ca}"), source: e })?;
            if certs.is_empty() {
                return Err(MedicError::Config(format!("datastore: etcd CA file {ca} holds no certificate")));
            }
            b = b.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (&s.cert_file, &s.key_file) {
            let mut pem = read_file("etcd client certificate", cert)?;
            pem.push(b'\n');
            pem.extend(read_file("etcd client key", key)?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| MedicError::ConfigTls {
                context: format!("datastore: etcd client certificate {cert} / key {key}"),
                source: e,
            })?;
            b = b.identity(id);
        }
        let http = b
            .build()
            .map_err(|e| MedicError::ConfigTls { context: "datastore: building the etcd client".into(), source: e })?;
        Ok(EtcdClient {
            endpoints: s.endpoints.clone(),
            http,
            call_timeout: s.call_timeout,
            max_answer_bytes: s.max_answer_bytes,
            auth: s.username.clone().map(|u| (u, s.password.as_ref().map(|p| p.0.clone()).unwrap_or_default())),
            preferred: AtomicUsize::new(0),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The endpoint requests go to first.
    pub fn current(&self) -> &str {
        &self.endpoints[self.preferred.load(Ordering::Relaxed) % self.endpoints.len()]
    }

    /// Every leaf under `dir` (recursive). A missing directory is empty, not an error.
    pub async fn get_dir(&self, dir: &str) -> Result<DirRead, MedicError> {
        let path = format!("/v2/keys{dir}?recursive=true&quorum=false");
        let (status, header_index, answer) = self.request(reqwest::Method::GET, &path, None).await?;
        let index = header_index.or(answer.index).unwrap_or(0);
        match (status, answer.error_code) {
            (StatusCode::OK, None) => {
                let mut nodes = Vec::new();
                if let Some(n) = answer.node {
                    flatten(n, &mut nodes);
                }
                Ok(DirRead { nodes, index })
            }
            (_, Some(KEY_NOT_FOUND)) => Ok(DirRead { nodes: Vec::new(), index }),
            (status, code) => Err(MedicError::Datastore(format!(
                "reading {dir} from {}: {status} {}",
                self.current(),
                describe_code(code, answer.message.as_deref())
            ))),
        }
    }

    /// A plain read of `dir` itself (not recursive, not waiting): etcd answers or not.
    pub async fn alive(&self, dir: &str) -> Result<(), MedicError> {
        self.request(reqwest::Method::GET, &format!("/v2/keys{dir}?quorum=false"), None).await.map(|_| ())
    }

    /// Waits up to `timeout` for the first change under `dir` at or after `wait_index`.
    /// etcd answers a watch's headers at once: `answered` runs then (the endpoint is
    /// up), before the wait for a change. A dead endpoint is failed over; a quiet one
    /// (no change within `timeout`) is `Quiet`.
    pub async fn watch(
        &self,
        dir: &str,
        wait_index: u64,
        timeout: Duration,
        answered: impl FnOnce(&str),
    ) -> Result<Watched, MedicError> {
        let path = format!("/v2/keys{dir}?wait=true&recursive=true&waitIndex={wait_index}");
        let first = self.preferred.load(Ordering::Relaxed);
        let mut tried = Tried::default();
        let mut answered = Some(answered);
        for n in 0..self.endpoints.len() {
            let i = (first + n) % self.endpoints.len();
            let base = &self.endpoints[i];
            let mut req = self.http.get(format!("{base}{path}"));
            if let Some((user, pass)) = &self.auth {
                req = req.basic_auth(user, Some(pass));
            }
            let res = match tokio::time::timeout(self.call_timeout, req.send()).await {
                Err(_) => {
                    tried.note(format!("{base}: no answer within {:?}", self.call_timeout));
                    continue;
                }
                Ok(Err(e)) => {
                    tried.failed(base, "", e, self.call_timeout);
                    continue;
                }
                Ok(Ok(r)) if r.status().is_server_error() => {
                    tried.note(format!("{base}: {}", r.status()));
                    continue;
                }
                Ok(Ok(r)) => r,
            };
            self.preferred.store(i, Ordering::Relaxed);
            if let Some(f) = answered.take() {
                f(base);
            }
            let status = res.status();
            let header_index: Option<u64> =
                res.headers().get("X-Etcd-Index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            // etcd's index went back (a new or restored cluster): the view is from another history.
            if let Some(current) = header_index.filter(|c| c + 1 < wait_index) {
                return Ok(Watched::Cleared(current));
            }
            // An answer past the ceiling is an error, never an event or a quiet watch.
            let body = match tokio::time::timeout(timeout, read_body(res, self.max_answer_bytes)).await {
                Err(_) => return Ok(Watched::Quiet),
                Ok(Err(BodyError::TooLarge)) => return Err(self.too_large(base, "watching", &path)),
                Ok(Err(BodyError::Request(e))) => {
                    return Err(MedicError::DatastoreRequest {
                        context: format!("watching {dir} on {base}"),
                        detail: describe(&e, timeout),
                        source: e,
                    })
                }
                Ok(Ok(b)) => b,
            };
            let answer: Answer = serde_json::from_slice(&body).map_err(|e| not_etcd(base, status, e))?;
            return match (status, answer.error_code) {
                (_, Some(INDEX_CLEARED)) => Ok(Watched::Cleared(answer.index.or(header_index).unwrap_or(0))),
                (StatusCode::OK, None) => {
                    let node = answer.node.unwrap_or_default();
                    Ok(Watched::Event(Event {
                        action: answer.action.unwrap_or_default(),
                        key: node.key,
                        value: node.value,
                        modified_index: node.modified_index,
                    }))
                }
                (status, code) => Err(MedicError::Datastore(format!(
                    "watching {dir} on {base}: {status} {}",
                    describe_code(code, answer.message.as_deref())
                ))),
            };
        }
        Err(tried.into_error())
    }

    /// Asks the endpoints in turn (the last one that answered first) until one
    /// answers with a status below 500. Returns the status, `X-Etcd-Index` and the body.
    /// `form`: a form-encoded body (writes).
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        form: Option<String>,
    ) -> Result<(StatusCode, Option<u64>, Answer), MedicError> {
        let timeout = self.call_timeout;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut tried = Tried::default();
        for n in 0..self.endpoints.len() {
            let i = (first + n) % self.endpoints.len();
            let base = &self.endpoints[i];
            let mut req = self.http.request(method.clone(), format!("{base}{path}")).timeout(timeout);
            if let Some(body) = &form {
                req = req.header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body.clone());
            }
            if let Some((user, pass)) = &self.auth {
                req = req.basic_auth(user, Some(pass));
            }
            let res = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    tried.failed(base, "", e, timeout);
                    continue;
                }
            };
            let status = res.status();
            let index = res.headers().get("X-Etcd-Index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            if status.is_server_error() {
                tried.note(format!("{base}: {status}"));
                continue;
            }
            let body = match read_body(res, self.max_answer_bytes).await {
                Ok(b) => b,
                Err(BodyError::TooLarge) => return Err(self.too_large(base, "reading", path)),
                Err(BodyError::Request(e)) => {
                    tried.failed(base, "reading the answer: ", e, timeout);
                    continue;
                }
            };
            let answer = if body.is_empty() {
                Answer::default()
            } else {
                serde_json::from_slice(&body).map_err(|e| not_etcd(base, status, e))?
            };
            if status == StatusCode::UNAUTHORIZED {
                return Err(MedicError::Datastore(format!("{base}: authentication refused ({status})")));
            }
            self.preferred.store(i, Ordering::Relaxed);
            return Ok((status, index, answer));
        }
        Err(tried.into_error())
    }

    /// An answer of `base` to `doing` `path` went past `max_answer_bytes`.
    fn too_large(&self, base: &str, doing: &str, path: &str) -> MedicError {
        let key = path.split('?').next().unwrap_or(path);
        MedicError::DatastoreTooLarge { context: format!("{base}: {doing} {key}"), cap: self.max_answer_bytes }
    }
}

/// Why a body was not read whole.
enum BodyError {
    /// The connection failed (or timed out) while reading it.
    Request(reqwest::Error),
    /// It holds more than the ceiling: the rest is not read.
    TooLarge,
}

/// The body of `res`, chunk by chunk, never more than `max` bytes (a declared
/// `Content-Length` over it is refused before any byte is read).
async fn read_body(mut res: reqwest::Response, max: u64) -> Result<Vec<u8>, BodyError> {
    let declared = res.content_length().unwrap_or(0);
    if declared > max {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = res.chunk().await.map_err(BodyError::Request)? {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A body that does not parse as etcd's JSON.
fn not_etcd(base: &str, status: StatusCode, source: serde_json::Error) -> MedicError {
    MedicError::DatastoreAnswer { context: format!("{base}: not an etcd v2 answer ({status})"), source }
}

/// What each endpoint did, and the last request error (kept as the source).
#[derive(Default)]
struct Tried {
    what: Vec<String>,
    last: Option<reqwest::Error>,
}

impl Tried {
    fn note(&mut self, what: String) {
        self.what.push(what);
    }

    fn failed(&mut self, base: &str, doing: &str, e: reqwest::Error, timeout: Duration) {
        self.what.push(format!("{base}: {doing}{}", describe(&e, timeout)));
        self.last = Some(e);
    }

    fn into_error(self) -> MedicError {
        MedicError::DatastoreUnreachable { tried: self.what.join("; "), source: self.last }
    }
}

fn describe_code(code: Option<u64>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!("(etcd error {c}: {m})"),
        (Some(c), None) => format!("(etcd error {c})"),
        (None, _) => String::new(),
    }
}

/// A request error in a few words, with the TLS cause when there is one (reqwest's
/// own text only says "error sending request").
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {timeout:?}");
    }
    let mut parts = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    // Drop the URL reqwest puts in its own line; the caller names the endpoint.
    parts
        .into_iter()
        .map(|p| match p.find(" for url (") {
            Some(i) => p[..i].to_string(),
            None => p,
        })
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_listing_flattens_to_leaves() {
        let a: Answer = serde_json::from_str(
            r#"{"action":"get","node":{"key":"/d","dir":true,"nodes":[
                {"key":"/d/a","value":"1","modifiedIndex":5},
                {"key":"/d/sub","dir":true,"nodes":[{"key":"/d/sub/b","value":"2"}]}]}}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        flatten(a.node.unwrap(), &mut out);
        assert_eq!(out.iter().map(|n| n.key.as_str()).collect::<Vec<_>>(), vec!["/d/a", "/d/sub/b"]);
        let cleared: Answer = serde_json::from_str(
            r#"{"errorCode":401,"message":"The event in requested index is outdated and cleared","cause":"the requested history has been cleared [1008/3]","index":2007}"#,
        )
        .unwrap();
        assert_eq!(cleared.error_code, Some(INDEX_CLEARED));
        assert_eq!(cleared.index, Some(2007));
    }
}
