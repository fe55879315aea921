//! A stand-in for Marathon's REST API (Marathon itself, a JVM service with
//! ZooKeeper and Mesos, cannot run here). It follows Marathon 1.4–1.10's documented
//! contract for what calico-medic uses (docs/docs/rest-api/public/api/v2/apps.raml):
//!
//! - `DELETE /v2/apps/{appId}/tasks/{taskId}` (the app id with its group path),
//!   query `scale`, `wipe` (and `force` from the `deployable` trait): 200 with
//!   `{"task": {…}}` when `scale=false`; 404 `{"message":"Task '…' does not exist"}`.
//! - `secured` trait: 401 `{"message":"Invalid username or password."}` with
//!   `WWW-Authenticate` when the credentials (basic, or DC/OS `token=…`) are wrong.
//! - `deployable` trait: 409 `{"message":"App is locked by one or more deployments. …",
//!   "deployments":[{"id":…}]}`.
//! - 403 `{"message":"Not Authorized to perform this action!"}` (DC/OS: authenticated, not allowed).
//! - 503 `{"message":"Could not determine the current leader"}` (no leader elected).
//! - `GET /v2/info`, `GET /ping`.
//! - `GET /v2/apps/{appId}/tasks` (`{"tasks":[{id, appId, host, slaveId, state, startedAt,
//!   stagedAt, version, ipAddresses:[{ipAddress, protocol}], healthCheckResults:[…]}]}`) and
//!   `GET /v2/apps/{appId}` (`{"app":{id, healthChecks:[…], …}}`), 404 `{"message":"App
//!   '/x' does not exist"}` for an app it never launched. Like Marathon, it knows which
//!   tasks it launched for which app (`launched`, told by the test — never read from a
//!   task's own environment); what each task is now comes from what the lab really runs
//!   (`docker inspect`: its calico IP, running or not; `host` is this machine's name), and
//!   health results are what the test tells it.
//!
//! Tests script answers for DELETEs per app (a queue, then a default; the default also
//! answers GETs, e.g. a leaderless 503) and read every request back (method, path with
//! query, Authorization header, time).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the stand-in answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// As Marathon: 200 with the killed task (or 401 when the credentials are wrong).
    Marathon,
    /// This status with Marathon's body for it (401, 404, 409, 503).
    Status(u16),
    /// Say nothing for this long, then answer.
    Delay(Duration, Box<Answer>),
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub authorization: Option<String>,
    pub at: Instant,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or_default()
    }
}

#[derive(Default)]
struct Script {
    per_app: HashMap<String, VecDeque<Answer>>,
    default: Option<Answer>,
    /// The exact Authorization header required (None: no auth).
    auth: Option<String>,
    /// App id → (task id, Docker container name) of the tasks it launched.
    launched: HashMap<String, Vec<(String, String)>>,
    /// Apps with Marathon health checks.
    health_checked: std::collections::HashSet<String>,
    /// Task id → its health results' `alive` (none: not checked yet).
    alive: HashMap<String, bool>,
}

pub struct Standin {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    script: Arc<Mutex<Script>>,
    stop: Arc<AtomicBool>,
}

/// `Basic base64(user:password)`, as RFC 7617 spells it.
pub fn basic(user: &str, password: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

impl Standin {
    /// Listens on a free loopback port; `auth` is the Authorization header it requires.
    pub fn start(auth: Option<String>) -> Standin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stand-in");
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(Script { auth, ..Script::default() }));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (requests.clone(), script.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (r, s) = (r.clone(), s.clone());
                        std::thread::spawn(move || serve(conn, &r, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Standin { url, requests, script, stop }
    }

    /// Answers for `app` (e.g. `/shop/cart`), in order; then the default.
    pub fn script(&self, app: &str, answers: &[Answer]) {
        self.script.lock().unwrap().per_app.insert(app.to_string(), answers.iter().cloned().collect());
    }

    pub fn set_default(&self, answer: Answer) {
        self.script.lock().unwrap().default = Some(answer);
    }

    /// Marathon launched `task` (a Mesos task id) of `app` as Docker container `container`.
    pub fn launched(&self, app: &str, task: &str, container: &str) {
        let mut s = self.script.lock().unwrap();
        s.launched.entry(app.to_string()).or_default().push((task.to_string(), container.to_string()));
    }

    /// `app` has Marathon health checks.
    pub fn health_checks(&self, app: &str) {
        self.script.lock().unwrap().health_checked.insert(app.to_string());
    }

    /// Marathon's health check of `task` says alive (true) or failing (false).
    pub fn set_alive(&self, task: &str, alive: bool) {
        self.script.lock().unwrap().alive.insert(task.to_string(), alive);
    }

    /// GET requests (confirmations) for `app`'s tasks.
    pub fn task_reads_of(&self, app: &str) -> Vec<Request> {
        let path = format!("/v2/apps{app}/tasks");
        self.requests().into_iter().filter(|r| r.method == "GET" && r.path() == path).collect()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// DELETE requests for tasks of `app`.
    pub fn kills_of(&self, app: &str) -> Vec<Request> {
        let prefix = format!("/v2/apps{app}/tasks/");
        self.requests().into_iter().filter(|r| r.method == "DELETE" && r.path().starts_with(&prefix)).collect()
    }

    pub fn deletes(&self) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.method == "DELETE").collect()
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(conn: TcpStream, requests: &Mutex<Vec<Request>>, script: &Mutex<Script>) {
    conn.set_nonblocking(false).ok();
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
    let (mut authorization, mut length) = (None, 0usize);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((&h, ""));
        match name.to_ascii_lowercase().as_str() {
            "authorization" => authorization = Some(value.trim().to_string()),
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    let _ = reader.read_exact(&mut body);
    let req = Request { method, target, authorization, at: Instant::now() };
    requests.lock().unwrap().push(req.clone());
    let (answer, apps) = {
        let mut s = script.lock().unwrap();
        if s.auth.is_some() && s.auth != req.authorization {
            (Answer::Status(401), None)
        } else if req.method == "GET" {
            (s.default.clone().unwrap_or(Answer::Marathon), Some(app_view(&s, req.path())))
        } else {
            let app = app_of(req.path()).unwrap_or_default();
            let answer = s
                .per_app
                .get_mut(&app)
                .and_then(VecDeque::pop_front)
                .or_else(|| s.default.clone())
                .unwrap_or(Answer::Marathon);
            (answer, None)
        }
    };
    match (answer, apps.flatten()) {
        (Answer::Marathon, Some(body)) => write_answer(conn, 200, "OK", &body, ""),
        (answer, _) => respond(conn, &req, answer),
    }
}

/// What Marathon answers to `GET /v2/apps/{app}/tasks` or `GET /v2/apps/{app}`, for
/// the apps it launched (None: not such a request; Some(None)… the app is unknown → 404 JSON).
fn app_view(s: &Script, path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/apps")?;
    let (app, tasks) = match rest.strip_suffix("/tasks") {
        Some(app) => (app, true),
        None => (rest, false),
    };
    let Some(launched) = s.launched.get(app) else {
        return Some(format!(r#"{{"__status":404,"message":"App '{app}' does not exist"}}"#));
    };
    if !tasks {
        let checks = if s.health_checked.contains(app) {
            r#"[{"protocol":"MESOS_HTTP","path":"/health","portIndex":0,"gracePeriodSeconds":300,"intervalSeconds":60,"timeoutSeconds":20,"maxConsecutiveFailures":3}]"#
        } else {
            "[]"
        };
        return Some(format!(r#"{{"app":{{"id":"{app}","instances":{},"healthChecks":{checks}}}}}"#, launched.len()));
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let tasks: Vec<String> = launched
        .iter()
        .map(|(id, container)| {
            let (ip, running) = inspect(container);
            let state = if running { "TASK_RUNNING" } else { "TASK_KILLED" };
            let ips = ip.map(|ip| format!(r#"{{"ipAddress":"{ip}","protocol":"IPv4"}}"#)).unwrap_or_default();
            let health = match s.alive.get(id) {
                Some(alive) => format!(
                    r#"{{"alive":{alive},"consecutiveFailures":{},"firstSuccess":null,"lastFailure":null,"lastSuccess":null,"lastFailureCause":null,"instanceId":"{id}"}}"#,
                    if *alive { 0 } else { 3 }
                ),
                None => String::new(),
            };
            format!(
                r#"{{"id":"{id}","appId":"{app}","host":"{host}","slaveId":"8e3a3c4f-0000-0000-0000-000000000001-S0","state":"{state}","startedAt":"2026-12-06T00:00:01.000Z","stagedAt":"2026-12-06T00:00:00.000Z","version":"2017-01-01T00:00:00.000Z","ports":[31000],"ipAddresses":[{ips}],"healthCheckResults":[{health}]}}"#
            )
        })
        .collect();
    Some(format!(r#"{{"tasks":[{}]}}"#, tasks.join(",")))
}

/// The container's first IPv4 address on a network and whether it runs, as Docker says.
fn inspect(container: &str) -> (Option<String>, bool) {
    let out = std::process::Command::new("/usr/bin/docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Running}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            container,
        ])
        .output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    let mut words = text.split_whitespace();
    let running = words.next() == Some("true");
    (words.find(|w| !w.is_empty()).map(str::to_string), running)
}

fn write_answer(mut conn: TcpStream, status: u16, reason: &str, body: &str, extra: &str) {
    let (status, body) = match body.strip_prefix(r#"{"__status":404,"#) {
        Some(rest) => (404, format!("{{{rest}")),
        None => (status, body.to_string()),
    };
    let reason = if status == 404 { "Not Found" } else { reason };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The app id of `/v2/apps/{appId}/tasks/{taskId}` (the id keeps its group path).
fn app_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/apps")?;
    let (app, _task) = rest.rsplit_once("/tasks/")?;
    Some(app.to_string())
}

fn respond(mut conn: TcpStream, req: &Request, answer: Answer) {
    let answer = match answer {
        Answer::Delay(d, then) => {
            std::thread::sleep(d);
            *then
        }
        a => a,
    };
    let path = req.path();
    let task = path.rsplit_once("/tasks/").map(|(_, t)| t.to_string()).unwrap_or_default();
    let app = app_of(path).unwrap_or_default();
    let (status, reason, body, extra) = match answer {
        Answer::Status(401) => (
            401,
            "Unauthorized",
            r#"{"message":"Invalid username or password."}"#.to_string(),
            "WWW-Authenticate: Basic realm=\"Mesosphere\"\r\n",
        ),
        Answer::Status(403) => {
            (403, "Forbidden", r#"{"message":"Not Authorized to perform this action!"}"#.to_string(), "")
        }
        Answer::Status(404) => (404, "Not Found", format!(r#"{{"message":"Task '{task}' does not exist"}}"#), ""),
        Answer::Status(409) => (
            409,
            "Conflict",
            r#"{"message":"App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.","deployments":[{"id":"97c136bf-5a28-4821-9d94-480d9fbb01c8"}]}"#.to_string(),
            "",
        ),
        Answer::Status(503) => {
            (503, "Service Unavailable", r#"{"message":"Could not determine the current leader"}"#.to_string(), "")
        }
        Answer::Status(code) => (code, "Error", r#"{"message":"scripted error"}"#.to_string(), ""),
        Answer::Marathon | Answer::Delay(..) => match (req.method.as_str(), path) {
            ("GET", "/ping") => (200, "OK", "pong".to_string(), ""),
            ("GET", "/v2/info") => (200, "OK", r#"{"name":"marathon","version":"1.10.17"}"#.to_string(), ""),
            ("DELETE", _) if !app.is_empty() && !task.is_empty() && req.query().contains("scale=true") => (
                200,
                "OK",
                r#"{"version":"2026-11-30T00:00:00.000Z","deploymentId":"5ed4c0c5-9ff8-4a6f-a0cd-f57f59a34b43"}"#
                    .to_string(),
                "",
            ),
            ("DELETE", _) if !app.is_empty() && !task.is_empty() => (
                200,
                "OK",
                format!(
                    r#"{{"task":{{"appId":"{app}","id":"{task}","host":"agent-1","ports":[31000],"servicePorts":[],"stagedAt":"2026-11-30T00:00:00.000Z","startedAt":"2026-11-30T00:00:01.000Z","state":"TASK_KILLING","version":"2017-01-01T00:00:00.000Z"}}}}"#
                ),
                "",
            ),
            _ => (404, "Not Found", r#"{"message":"Not Found"}"#.to_string(), ""),
        },
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_encoding() {
        assert_eq!(basic("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(basic("a", "b"), "Basic YTpi");
    }
}
