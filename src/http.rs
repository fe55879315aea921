//! `/metrics`, `/healthz`, `/readyz` over a small state (metrics + health), not the
//! agent. Anything else: 404; a method other than GET/HEAD: 405; a request body: 413.
//!
//! The port is open to the network, so what a peer can hold is bounded: connections
//! are served by hyper directly (axum::serve cannot set hyper's header timeout) with
//! a header-read timeout, a header-size limit, an idle and a total lifetime per
//! connection, and at most `MAX_CONNECTIONS` at once. At the limit, the oldest
//! connection that is not in the middle of a request is closed to make room, so a
//! flood of idle connections cannot lock a scraper out and cannot use up the fds
//! the agent needs for namespaces and netlink sockets.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Method, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{debug, warn};

use crate::error::MedicError;
use crate::metrics::Metrics;

/// Connections served at once (the unit's fd limit is far above this plus the
/// agent's own sockets).
pub const MAX_CONNECTIONS: usize = 256;
/// A client must send its whole request head within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with no request in progress is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// No connection lives longer than this (a keep-alive scraper reconnects).
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// Largest request head accepted (hyper answers 431 above it).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Idle connections closed at once when the limit is reached.
const EVICT_BATCH: usize = 16;

/// Stuck-work threshold in units of `pass_timeout`.
pub const STUCK_AFTER_PASSES: u32 = 3;

/// What `/readyz` and `/healthz` answer from: flags and heartbeats set by the
/// agent, not metric values.
#[derive(Debug)]
pub struct Health {
    docker_connected: AtomicBool,
    resynced: AtomicBool,
    epoch: Instant,
    /// Last heartbeat of the Docker event follower (ms since `epoch`).
    follower_beat: AtomicU64,
    /// Passes queued or running.
    pending: AtomicUsize,
    /// Last sign of progress (ms since `epoch`): a pass that completed, or work
    /// arriving when there was none.
    progress: AtomicU64,
    /// `STUCK_AFTER_PASSES` × pass_timeout, in ms.
    stuck_after: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            docker_connected: AtomicBool::new(false),
            resynced: AtomicBool::new(false),
            epoch: Instant::now(),
            follower_beat: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            stuck_after: AtomicU64::new(15_000),
        }
    }
}

impl Health {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn set_docker_connected(&self, up: bool) {
        self.docker_connected.store(up, Ordering::SeqCst);
    }

    /// The first full resync after start is done.
    /// The Docker event stream is connected.
    pub fn docker_connected(&self) -> bool {
        self.docker_connected.load(Ordering::SeqCst)
    }

    pub fn set_resynced(&self) {
        self.resynced.store(true, Ordering::SeqCst);
    }

    /// Ready once Docker is connected and the first full resync is done.
    pub fn is_ready(&self) -> bool {
        self.resynced.load(Ordering::SeqCst) && self.docker_connected.load(Ordering::SeqCst)
    }

    /// Work is stuck after `STUCK_AFTER_PASSES` × this with no pass completing.
    pub fn set_pass_timeout(&self, pass_timeout: Duration) {
        let ms = (pass_timeout * STUCK_AFTER_PASSES).as_millis() as u64;
        self.stuck_after.store(ms, Ordering::SeqCst);
    }

    pub fn stuck_after(&self) -> Duration {
        Duration::from_millis(self.stuck_after.load(Ordering::SeqCst))
    }

    /// The event follower is alive (it beats at least every second while waiting).
    pub fn follower_beat(&self) {
        self.follower_beat.store(self.now_ms(), Ordering::SeqCst);
    }

    /// A pass was queued.
    pub fn work_added(&self) {
        if self.pending.fetch_add(1, Ordering::SeqCst) == 0 {
            // The stuck clock starts when work appears, not at the last pass an hour ago.
            self.progress.store(self.now_ms(), Ordering::SeqCst);
        }
    }

    /// A pass ended; `progress` when it completed (not timed out, not panicked).
    pub fn work_done(&self, progress: bool) {
        if progress {
            self.progress.store(self.now_ms(), Ordering::SeqCst);
        }
        let _ = self.pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| p.checked_sub(1));
    }

    /// Ok while the agent makes progress; otherwise why not. Stuck: work is queued or
    /// running and no pass has completed for `stuck_after`; or the event follower
    /// has not beaten for `stuck_after`.
    pub fn liveness(&self) -> Result<(), String> {
        let now = self.now_ms();
        let limit = self.stuck_after.load(Ordering::SeqCst);
        let pending = self.pending.load(Ordering::SeqCst);
        let since_progress = now.saturating_sub(self.progress.load(Ordering::SeqCst));
        if pending > 0 && since_progress > limit {
            return Err(format!(
                "stuck: {pending} pass(es) queued or running and none completed for {:.1}s",
                since_progress as f64 / 1000.0
            ));
        }
        let since_beat = now.saturating_sub(self.follower_beat.load(Ordering::SeqCst));
        if since_beat > limit {
            return Err(format!("the Docker event follower has not reported for {:.1}s", since_beat as f64 / 1000.0));
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render())
}

async fn healthz(State(state): State<HttpState>) -> (StatusCode, String) {
    match state.health.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {why}\n")),
    }
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: waiting for Docker and the first resync\n")
    }
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Binds first (so a bad address fails the start), then serves until shutdown.
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, MedicError> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| MedicError::ConfigIo { context: format!("listen = {listen}"), source: e })
}

/// One open connection, as the accept loop sees it.
struct ConnEntry {
    id: u64,
    /// Requests in progress (0: idle, may be closed to make room).
    busy: Arc<AtomicUsize>,
    close: Arc<Notify>,
}

/// Open connections, oldest first.
#[derive(Default)]
struct Connections {
    open: Mutex<VecDeque<ConnEntry>>,
}

impl Connections {
    /// Closes up to `EVICT_BATCH` of the oldest connections with no request in
    /// progress (a batch, so a flood does not cost one round trip per accept);
    /// false if none is idle.
    fn evict_idle(&self) -> bool {
        let mut open = self.open.lock().unwrap();
        let mut evicted = 0;
        open.retain(|c| {
            if evicted < EVICT_BATCH && c.busy.load(Ordering::SeqCst) == 0 {
                c.close.notify_one();
                evicted += 1;
                false
            } else {
                true
            }
        });
        evicted > 0
    }

    fn remove(&self, id: u64) {
        self.open.lock().unwrap().retain(|c| c.id != id);
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r
}

/// Only GET/HEAD without a body reach the router.
fn refuse(req: &Request<Incoming>) -> Option<Response<Body>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Some(r);
    }
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.to_str().ok().and_then(|v| v.parse::<u64>().ok()) != Some(0));
    if has_body {
        return Some(plain(StatusCode::PAYLOAD_TOO_LARGE, "requests carry no body here\n"));
    }
    None
}

pub async fn serve(listener: tokio::net::TcpListener, state: HttpState, mut shutdown: watch::Receiver<bool>) {
    let router = router(state);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let conns = Arc::new(Connections::default());
    let mut next_id = 0u64;
    let mut warned_full = false;
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !warned_full {
                    warn!(
                        connections = MAX_CONNECTIONS,
                        "http: connection limit reached; closing the oldest idle ones to make room"
                    );
                    warned_full = true;
                }
                if !conns.evict_idle() {
                    debug!(peer = %peer, "http: every connection is busy; refusing a new one");
                    continue; // drop(stream) closes it
                }
                match tokio::time::timeout(Duration::from_millis(200), slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => continue,
                }
            }
        };
        next_id += 1;
        let id = next_id;
        let busy = Arc::new(AtomicUsize::new(0));
        let close = Arc::new(Notify::new());
        conns.open.lock().unwrap().push_back(ConnEntry { id, busy: busy.clone(), close: close.clone() });
        let router = router.clone();
        let conns = conns.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, router, busy, close, &mut shutdown).await;
            conns.remove(id);
        });
    }
}

/// Serves one connection until it closes, overruns a timeout, is evicted, or the
/// daemon stops.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    busy: Arc<AtomicUsize>,
    close: Arc<Notify>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let opened = Instant::now();
    // ms since `opened` of the last request start/end; u64::MAX: none yet.
    let last_activity = Arc::new(AtomicU64::new(u64::MAX));
    let service = {
        let (busy, last_activity) = (busy.clone(), last_activity.clone());
        hyper::service::service_fn(move |req: Request<Incoming>| {
            let mut router = router.clone();
            let (busy, last_activity) = (busy.clone(), last_activity.clone());
            async move {
                busy.fetch_add(1, Ordering::SeqCst);
                last_activity.store(opened.elapsed().as_millis() as u64, Ordering::SeqCst);
                let response = match refuse(&req) {
                    Some(r) => r,
                    None => match tower_service::Service::call(&mut router, req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    },
                };
                last_activity.store(opened.elapsed().as_millis() as u64, Ordering::SeqCst);
                busy.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_HEADER_BYTES.max(8192))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // Closes a connection that idles: no request head within HEADER_READ_TIMEOUT of
    // opening (hyper's own timer starts only with the first byte), or no request for
    // IDLE_TIMEOUT after the last one.
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let idle = || {
        if busy.load(Ordering::SeqCst) > 0 {
            return false;
        }
        match last_activity.load(Ordering::SeqCst) {
            u64::MAX => opened.elapsed() > HEADER_READ_TIMEOUT,
            at => opened.elapsed().saturating_sub(Duration::from_millis(at)) > IDLE_TIMEOUT,
        }
    };
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "http: connection ended with an error");
                }
                return;
            }
            _ = close.notified() => return,
            _ = shutdown.changed() => return,
            _ = tick.tick() => {
                if idle() || opened.elapsed() > MAX_CONNECTION_AGE {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_work_and_a_silent_follower_fail_liveness() {
        let h = Health::default();
        h.set_pass_timeout(Duration::from_millis(10));
        h.follower_beat();
        assert!(h.liveness().is_ok());
        h.work_added();
        std::thread::sleep(Duration::from_millis(20));
        h.follower_beat();
        assert!(h.liveness().is_ok(), "within 3 × pass_timeout of the work arriving");
        std::thread::sleep(Duration::from_millis(25));
        h.follower_beat();
        assert!(h.liveness().unwrap_err().contains("stuck: 1 pass"), "{:?}", h.liveness());
        h.work_done(false);
        assert!(h.liveness().is_ok(), "no work: nothing is stuck");
        h.work_added();
        h.work_added();
        h.work_done(true);
        assert!(h.liveness().is_ok(), "a completed pass is progress");
        h.work_done(true);
        std::thread::sleep(Duration::from_millis(40));
        assert!(h.liveness().unwrap_err().contains("follower"), "{:?}", h.liveness());
        h.work_done(true);
        h.follower_beat();
        assert!(h.liveness().is_ok(), "the count never goes below zero");
    }
}
