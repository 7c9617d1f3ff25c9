//! The HTTP listener (`http.listen`): the operations endpoints `/healthz`, `/readyz`, `/metrics`,
//! the file API under `/api/v1` ([`api`], `docs/http.md`) and the web interface at `/` ([`web`],
//! `docs/web.md`).

pub mod api;
pub mod auth;
pub mod errors;
pub mod events;
pub mod openapi;
pub mod transfer;
pub mod uploads;
pub mod web;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use storage_backend::Store;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How long a probe waits for the store before calling it unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Probes {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Whether events need a broker (false with `mqtt.mode = "off"`).
    pub mqtt_required: bool,
    /// Set once shutdown begins: load balancers should stop sending clients.
    pub draining: AtomicBool,
}

impl Probes {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

pub struct HttpServer {
    listener: tokio::net::TcpListener,
}

impl HttpServer {
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<HttpServer> {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen for HTTP on {addr}; change http.listen or stop what uses it")
        })?;
        Ok(HttpServer { listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    pub async fn run(self, probes: Arc<Probes>, api: Arc<api::Api>, stop: CancellationToken) {
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(probes)
            .merge(web::router())
            .merge(api::router(api));
        // The peer's address reaches the API's logins (bans are per address).
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(self.listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "the HTTP endpoint failed");
        }
    }
}

async fn readyz(State(p): State<Arc<Probes>>) -> impl IntoResponse {
    let mut problems = Vec::new();
    if p.draining.load(Ordering::Relaxed) {
        problems.push("shutting down".to_string());
    }
    match tokio::time::timeout(PROBE_TIMEOUT, p.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("storage unreachable: {e}")),
        Err(_) => problems.push(format!(
            "storage unreachable: no answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
    if p.mqtt_required && !p.metrics.events_ready() {
        problems.push(
            "MQTT broker unreachable: events wait in the outbox until it is back".to_string(),
        );
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", problems.join("\n")),
        )
    }
}

async fn metrics(State(p): State<Arc<Probes>>) -> impl IntoResponse {
    if let Ok(Ok(status)) = tokio::time::timeout(PROBE_TIMEOUT, p.store.outbox_status()).await {
        p.metrics.outbox_backlog.set(status.backlog() as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        p.metrics.render(),
    )
}
