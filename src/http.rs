//! `/metrics`, `/healthz`, `/readyz` over a small state (metrics + health), not the
//! agent. Anything else: 404; wrong method: 405.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::error::MedicError;
use crate::metrics::Metrics;

/// What `/readyz` answers from: flags set by the agent, not metric values.
#[derive(Debug, Default)]
pub struct Health {
    docker_connected: AtomicBool,
    resynced: AtomicBool,
}

impl Health {
    pub fn set_docker_connected(&self, up: bool) {
        self.docker_connected.store(up, Ordering::SeqCst);
    }

    /// The first full resync after start is done.
    pub fn set_resynced(&self) {
        self.resynced.store(true, Ordering::SeqCst);
    }

    /// Ready once Docker is connected and the first full resync is done.
    pub fn is_ready(&self) -> bool {
        self.resynced.load(Ordering::SeqCst) && self.docker_connected.load(Ordering::SeqCst)
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

async fn healthz() -> &'static str {
    "ok\n"
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
    tokio::net::TcpListener::bind(listen).await.map_err(|e| MedicError::Config(format!("listen = {listen}: {e}")))
}

pub async fn serve(listener: tokio::net::TcpListener, state: HttpState, mut shutdown: watch::Receiver<bool>) {
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!("http server: {e}");
    }
}
