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
use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use storage_backend::Store;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::config::HttpConfig;
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

/// How a request reached the gateway; handlers read it as an extension (e.g. a session cookie is
/// marked `Secure` only over TLS).
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    pub tls: bool,
}

/// How long a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct HttpServer {
    listener: tokio::net::TcpListener,
    /// `http.tls.listen`: the same service over TLS.
    tls: Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
}

impl HttpServer {
    pub async fn bind(config: &HttpConfig) -> anyhow::Result<HttpServer> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen for HTTP on {}; change http.listen or stop what uses it",
                    config.listen
                )
            })?;
        let tls = match config.tls.listen {
            Some(addr) => {
                let server = crate::certs::server_config(
                    &config.tls.cert,
                    &config.tls.key,
                    "http.tls",
                    &[b"http/1.1"],
                )?;
                let l = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!(
                        "cannot listen for HTTPS on {addr}; change http.tls.listen or stop what uses it"
                    )
                })?;
                Some((l, tokio_rustls::TlsAcceptor::from(server)))
            }
            None => None,
        };
        Ok(HttpServer { listener, tls })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
            .as_ref()
            .map(|(l, _)| l.local_addr().expect("bound listener"))
    }

    pub async fn run(self, probes: Arc<Probes>, api: Arc<api::Api>, stop: CancellationToken) {
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(probes)
            .merge(web::router())
            .merge(api::router(api));
        let connections = TaskTracker::new();
        let plain = accept_loop(self.listener, None, app.clone(), &connections, stop.clone());
        match self.tls {
            Some((listener, acceptor)) => {
                let tls = accept_loop(listener, Some(acceptor), app, &connections, stop);
                tokio::join!(plain, tls);
            }
            None => plain.await,
        }
        // Idle keep-alive connections close now; requests in flight finish (the API's own
        // shutdown handling has already ended its transfers by the time this runs).
        connections.close();
        connections.wait().await;
    }
}

/// Accepts connections until `stop`, serving each with hyper (HTTP/1.1, upgrades for WebSocket).
/// The peer's address reaches the handlers as `ConnectInfo` (bans are per address).
async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    connections: &TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "HTTP: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let transport = Transport { tls: tls.is_some() };
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(transport);
                app.clone().oneshot(req.map(axum::body::Body::new))
            });
        let tls = tls.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let io = match tls {
                None => Either::Left(tcp),
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => Either::Right(stream),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "HTTPS: TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
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
