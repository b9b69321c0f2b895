//! The dashboard's HTTP side: one page (assets embedded in the binary),
//! its JSON, and a Server-Sent Events stream of updates. Every response
//! carries a strict Content-Security-Policy (scripts from this origin
//! only, no inline script, no framing) and `nosniff`; log text reaches
//! the page as JSON and is rendered as text (`textContent`), never HTML.

use super::Shared;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use buildbot_protocol::Secret;
use futures_util::Stream;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Who may open the dashboard.
#[derive(Clone)]
pub(crate) enum Access {
    /// Anyone who reaches the address: only for a loopback bind.
    Open,
    /// HTTP basic auth with this user and password.
    Basic { user: String, password: Secret },
}

#[derive(Clone)]
struct App {
    shared: Shared,
    access: Access,
}

/// Binds `addr` and serves until `shutdown`; returns the bound address.
pub(super) async fn serve(
    addr: SocketAddr,
    access: Access,
    shared: Shared,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = App { shared, access };
    let router = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/api/jobs", get(jobs))
        .route("/api/jobs/{job_id}", get(job))
        .route("/api/stream", get(stream))
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(middleware::from_fn(security_headers))
        .with_state(app);
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the dashboard's HTTP server stopped");
        }
    });
    Ok(bound)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn authorize(State(app): State<App>, request: Request, next: Next) -> Response {
    let Access::Basic { user, password } = &app.access else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
    let expected = format!("{user}:{}", password.expose());
    match given {
        Some(given) if same_bytes(&given, expected.as_bytes()) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"buildbot\", charset=\"UTF-8\"",
            )],
            "authentication required\n",
        )
            .into_response(),
    }
}

/// Equality that takes as long whatever the first differing byte. Written
/// by hand: a few lines, not worth a crate.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn jobs(State(app): State<App>) -> Json<serde_json::Value> {
    let depths = app.shared.depths();
    let jobs = app.shared.jobs();
    Json(json!({
        "connected": app.shared.is_connected(),
        "evicted": jobs.evicted,
        "queue": depths,
        "jobs": jobs.summaries(),
    }))
}

async fn job(State(app): State<App>, Path(job_id): Path<String>) -> Response {
    match app.shared.jobs().get(&job_id) {
        Some(view) => Json(view.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no such job in this dashboard's memory\n",
        )
            .into_response(),
    }
}

async fn stream(State(app): State<App>) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let updates = app.shared.subscribe();
    let events = futures_util::stream::unfold(updates, |mut updates| async move {
        let event = match updates.recv().await {
            Ok(update) => SseEvent::default()
                .event("update")
                .json_data(&*update)
                .unwrap_or_else(|_| SseEvent::default().event("reload").data("unreadable")),
            // Too far behind to catch up: the page reloads its state.
            Err(RecvError::Lagged(_)) => SseEvent::default().event("reload").data("lagged"),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), updates))
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_compare_whole() {
        assert!(same_bytes(b"ops:pw", b"ops:pw"));
        assert!(!same_bytes(b"ops:pw", b"ops:pX"));
        assert!(!same_bytes(b"ops:p", b"ops:pw"));
    }
}
