//! The worker's HTTP listener: `/metrics` (Prometheus text), `/healthz` (the process is
//! alive) and `/readyz` (it can reach its queue and is not shutting down).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use shoal_common::metrics::Metrics;
use tokio_util::sync::CancellationToken;

/// What `/readyz` reports, kept up to date by the pollers and shutdown.
#[derive(Debug, Default)]
pub struct Health {
    /// The last receive from the job queue succeeded.
    pub queue_reachable: AtomicBool,
    pub shutting_down: AtomicBool,
}

impl Health {
    pub fn is_ready(&self) -> bool {
        self.queue_reachable.load(Ordering::Relaxed) && !self.shutting_down.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health });
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "metrics listener failed");
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if state.health.shutting_down.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot reach the job queue\n",
        )
    }
}
