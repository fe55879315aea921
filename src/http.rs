//! `/metrics`, `/healthz`, `/readyz`. Anything else: 404; wrong method: 405.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::agent::Agent;
use crate::error::MedicError;

async fn metrics(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], agent.metrics.render())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(agent): State<Arc<Agent>>) -> (StatusCode, &'static str) {
    if agent.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: waiting for Docker and the first resync\n")
    }
}

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(agent)
}

/// Binds first (so a bad address fails the start), then serves until shutdown.
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, MedicError> {
    tokio::net::TcpListener::bind(listen).await.map_err(|e| MedicError::Config(format!("listen = {listen}: {e}")))
}

pub async fn serve(listener: tokio::net::TcpListener, agent: Arc<Agent>, mut shutdown: watch::Receiver<bool>) {
    let app = router(agent);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!("http server: {e}");
    }
}
