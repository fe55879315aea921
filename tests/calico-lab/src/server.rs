//! HTTP over the two legacy plugin sockets (`calico.sock`, `calico-ipam.sock`).
//!
//! Every request is answered with JSON (`application/vnd.docker.plugins.v1.2+json`); errors,
//! unknown paths and malformed bodies get Docker's `{"Err": "..."}` form, and one log line
//! per request goes to stderr.

use crate::log;
use crate::plugin::{Kind, Plugin};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

#[derive(Clone)]
struct Ctx {
    plugin: Arc<Plugin>,
    kind: Kind,
    sock: &'static str,
}

fn reply(status: StatusCode, body: &serde_json::Value) -> Response {
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

fn summary(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    // keep one request = one printable line, whatever the client sent
    let mut line = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    let s = line;
    if s.chars().count() > 400 {
        format!("{}…", s.chars().take(400).collect::<String>())
    } else {
        s
    }
}

async fn handle(State(ctx): State<Ctx>, method: Method, uri: Uri, body: Bytes) -> Response {
    let start = Instant::now();
    let call = uri.path().trim_start_matches('/').to_string();
    let (status, answer) = if method != Method::POST {
        (StatusCode::METHOD_NOT_ALLOWED, json!({"Err": format!("{method} not allowed, plugin calls are POST")}))
    } else {
        match ctx.plugin.handle(ctx.kind, &call, &body).await {
            Ok(v) => (StatusCode::OK, v),
            Err(e) => {
                (StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), json!({"Err": e.msg}))
            }
        }
    };
    log!(
        "{} {method} /{call} -> {} in {:.1} ms req={} resp={}",
        ctx.sock,
        status.as_u16(),
        start.elapsed().as_secs_f64() * 1000.0,
        summary(&body),
        answer
    );
    reply(status, &answer)
}

/// Bind a plugin socket, refusing to steal it from a live plugin.
fn bind(path: &Path) -> Result<tokio::net::UnixListener, String> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{} is being served by another process (is the plugin already running?)",
                path.display()
            ));
        }
        std::fs::remove_file(path).map_err(|e| format!("removing stale {}: {e}", path.display()))?;
    }
    tokio::net::UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))
}

pub struct Sockets {
    pub paths: Vec<PathBuf>,
}

/// Serve both drivers until SIGTERM/SIGINT, then remove the sockets.
pub async fn serve(
    plugin: Arc<Plugin>,
    dir: &Path,
    net_name: &str,
    ipam_name: &str,
    pidfile: Option<&Path>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let specs = [(Kind::Network, format!("{net_name}.sock")), (Kind::Ipam, format!("{ipam_name}.sock"))];
    let mut listeners = Vec::new();
    let mut sockets = Sockets { paths: Vec::new() };
    for (kind, file) in specs {
        let path = dir.join(&file);
        let l = bind(&path)?;
        sockets.paths.push(path.clone());
        let sock: &'static str = Box::leak(file.into_boxed_str());
        listeners.push((kind, sock, l));
    }
    if let Some(p) = pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| format!("writing pidfile {}: {e}", p.display()))?;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (kind, sock, l) in listeners {
        let app = Router::new().fallback(handle).with_state(Ctx { plugin: plugin.clone(), kind, sock });
        log!("serving {} on {}", kind.implements(), dir.join(sock).display());
        tasks.spawn(async move { axum::serve(l, app).await });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("installing SIGTERM handler: {e}"))?;
    let result = tokio::select! {
        _ = term.recv() => { log!("SIGTERM: shutting down"); Ok(()) }
        _ = tokio::signal::ctrl_c() => { log!("SIGINT: shutting down"); Ok(()) }
        r = tasks.join_next() => Err(format!("a plugin server stopped: {r:?}")),
    };
    for p in &sockets.paths {
        let _ = std::fs::remove_file(p);
    }
    if let Some(p) = pidfile {
        if std::fs::read_to_string(p).map(|s| s.trim() == std::process::id().to_string()).unwrap_or(false) {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}
