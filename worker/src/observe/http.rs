//! The worker's HTTP endpoint: `/metrics` (Prometheus), `/healthz` (the
//! process answers) and `/readyz` (connected to RabbitMQ and the Docker
//! Engine answers).

use super::metrics::Metrics;
use super::readiness::Readiness;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bollard::Docker;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long `/readyz` waits for the Docker Engine's answer.
const DOCKER_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoints read.
#[derive(Clone)]
struct Endpoint {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    docker: Docker,
}

/// Binds `addr` and serves until `shutdown` is cancelled. Returns the bound
/// address (useful with port 0) once listening.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    docker: Docker,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Endpoint {
            metrics,
            readiness,
            docker,
        });
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the HTTP endpoint stopped");
        }
    });
    Ok(bound)
}

async fn metrics_text(
    State(endpoint): State<Endpoint>,
) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        endpoint.metrics.render(),
    )
}

async fn ready(State(endpoint): State<Endpoint>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    if let Some(shortage) = endpoint.readiness.disk_shortage() {
        problems.push(format!("not taking jobs: {shortage}"));
    } else if !endpoint.readiness.consuming() {
        problems.push("not connected to RabbitMQ".to_owned());
    }
    match tokio::time::timeout(DOCKER_PING_TIMEOUT, endpoint.docker.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => problems.push(format!("Docker Engine: {e}")),
        Err(_) => problems.push("Docker Engine: no answer within 2 s".to_owned()),
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join("; ")),
        )
    }
}
