//! The Engine API version on the wire: calico-medic's requests carry `/vX.Y` — the version
//! pinned by `DOCKER_API_VERSION`, else the negotiated one — so an engine answers in that
//! version's shapes. A fake Docker socket records the request paths; no root, no Docker.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// Serves a minimal Engine API (API 1.41, no containers) on a socket in a temp dir and
/// records every request line's path.
struct FakeDocker {
    dir: tempfile::TempDir,
    paths: Arc<Mutex<Vec<String>>>,
}

impl FakeDocker {
    fn start() -> FakeDocker {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("docker.sock")).unwrap();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    let mut out = conn;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                                break;
                            }
                        }
                        seen.lock().unwrap().push(path.clone());
                        let route = path.split('?').next().unwrap_or_default().to_string();
                        let (status, body) = if route.ends_with("/version") {
                            ("200 OK", r#"{"ApiVersion":"1.41","MinAPIVersion":"1.12","Version":"20.10.24"}"#)
                        } else if route.ends_with("/_ping") {
                            ("200 OK", "OK")
                        } else if route.ends_with("/containers/json") || route.ends_with("/networks") {
                            ("200 OK", "[]")
                        } else {
                            ("404 Not Found", r#"{"message":"page not found"}"#)
                        };
                        let reply = format!(
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if out.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeDocker { dir, paths }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    /// `calico-medic check` (every container: the fake has none) with DOCKER_API_VERSION.
    fn check(&self, api_version: Option<&str>) -> (Option<i32>, String, Vec<String>) {
        self.paths.lock().unwrap().clear();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_calico-medic"));
        cmd.args(["check", "--docker-host", &self.host(), "--json"]).env("CALICO_MEDIC_LOG", "calico_medic=debug");
        match api_version {
            Some(v) => cmd.env("DOCKER_API_VERSION", v),
            None => cmd.env_remove("DOCKER_API_VERSION"),
        };
        let out = cmd.output().unwrap();
        let paths = self.paths.lock().unwrap().clone();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string(), paths)
    }
}

#[test]
fn pinned_api_version_is_on_every_request() {
    let fake = FakeDocker::start();
    let (code, err, paths) = fake.check(Some("1.25"));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("Engine API 1.25 (pinned by DOCKER_API_VERSION)"), "{err}");
    assert!(paths.iter().any(|p| p.starts_with("/v1.25/containers/json")), "{paths:?}");
    assert!(paths.iter().all(|p| p.starts_with("/v1.25/")), "every request pinned: {paths:?}");
}

#[test]
fn negotiated_api_version_is_on_every_request_after_negotiation() {
    let fake = FakeDocker::start();
    let (code, err, paths) = fake.check(None);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("Engine API 1.41 (negotiated)"), "{err}");
    // The negotiation itself asks /version unversioned; everything after carries 1.41.
    assert_eq!(paths.first().map(String::as_str), Some("/version"), "{paths:?}");
    assert!(paths.len() >= 2 && paths[1..].iter().all(|p| p.starts_with("/v1.41/")), "{paths:?}");
}
