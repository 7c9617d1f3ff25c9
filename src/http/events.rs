//! File events over HTTP (`docs/http.md` "Events"): `GET /api/v1/events` as Server-Sent Events
//! (`Accept: text/event-stream`) or as JSON pages of the history, and `GET /api/v1/events/ws` as a
//! WebSocket. The messages are the CloudEvents documents MQTT carries, only those under the
//! caller's home (the MQTT rule, `Principal::sees_event`).
//!
//! A stream is long-lived, so it does not keep the login's `limits.max_connections` slot (browser
//! tabs would lock FTP and SFTP clients out): it holds an `events.max_streams` slot instead, and it
//! is not one of the sessions shutdown waits for — it ends as soon as shutdown begins.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use super::api::{param, query, Api, Session};
use super::errors::Problem;
use crate::events::{Ended, StreamRefused, Subscription};
use crate::mqtt::Principal;

/// Page size of `GET /api/v1/events` without `?limit=`, and the most one page may hold.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;
/// A comment line this often keeps proxies and browsers from closing an idle SSE stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

type Shared = Arc<Api>;
type Result<T> = std::result::Result<T, Problem>;

/// The event routes, merged into the API's router.
pub fn router() -> Router<Shared> {
    Router::new()
        .route("/api/v1/events", get(events))
        .route("/api/v1/events/ws", get(events_ws))
}

/// One page of replay (written by hand in [`events`]: the documents are already JSON).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EventsPage {
    /// CloudEvents documents, oldest first, as published on MQTT.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
    /// Ask `?after=` this next (the last event looked at, shown or not).
    pub next_after: u64,
    /// The newest event recorded.
    pub last_seq: u64,
}

impl From<StreamRefused> for Problem {
    fn from(r: StreamRefused) -> Problem {
        match r {
            StreamRefused::Busy(_) => {
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "busy", r.to_string())
                    .with_header(header::RETRY_AFTER, HeaderValue::from(5u64))
            }
            StreamRefused::Gone { oldest_seq, .. } => {
                Problem::new(StatusCode::GONE, "events-gone", r.to_string())
                    .with_member("oldest_seq", oldest_seq)
            }
            StreamRefused::Future { last_seq, .. } => {
                Problem::bad_request(r.to_string()).with_member("last_seq", last_seq)
            }
            StreamRefused::Store(e) => e.into(),
        }
    }
}

/// The resume point: `Last-Event-ID` (what a browser's EventSource sends) or `?after=`.
fn resume_point(headers: &HeaderMap, q: &[(String, String)]) -> Result<Option<u64>> {
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?").trim().to_string());
    let text = match header {
        Some(h) if !h.is_empty() => h,
        _ => match param(q, "after") {
            Some(a) => a.to_string(),
            None => return Ok(None),
        },
    };
    text.parse().map(Some).map_err(|_| {
        Problem::bad_request(format!(
            "{text:?} is not an event seq; Last-Event-ID and ?after= take the number of an event (its `id:`)"
        ))
    })
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// Live events as Server-Sent Events (with `Accept: text/event-stream`), else a JSON page of the
/// history.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    params(
        ("after" = Option<u64>, Query, description = "Events after this seq (SSE: like Last-Event-ID)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "JSON: events looked at per page (default 100, at most 1000)"),
        // A string as browsers send it; it must hold a seq, else 400.
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "SSE: resume after this seq (the `id:` of the last event received)"),
    ),
    responses(
        (status = 200, description = "JSON page, or an SSE stream (`text/event-stream`)", body = EventsPage),
        (status = 400, description = "after/limit malformed, or after is newer than the newest event"),
        (status = 401, description = "no or wrong credentials"),
        (status = 410, description = "the history no longer reaches back to `after`; the problem has `oldest_seq`"),
        (status = 503, description = "events.max_streams streams are open"),
        (status = 403, description = "the login may not see events", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many failed logins from this address", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    State(api): State<Shared>,
    session: Session,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    let q = query(&uri)?;
    let after = resume_point(&headers, &q)?;
    let fs = session.into_fs();
    let viewer = Principal::user(&fs);
    if wants_sse(&headers) {
        let sub = api.events.subscribe(viewer, after).await?;
        return Ok(sse_response(sub, api.stop_accepting.clone()));
    }
    let limit = match param(&q, "limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                Problem::bad_request(format!("?limit={l}: use a number from 1 to {MAX_LIMIT}"))
            })?,
    };
    // Without ?after= the page starts at the oldest event kept.
    let after = match after {
        Some(a) => a,
        None => api.events.oldest().await?.saturating_sub(1),
    };
    let (shown, next_after, last_seq) = api.events.page(&viewer, after, limit).await?;
    let mut body = String::from("{\"events\":[");
    for (i, r) in shown.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&String::from_utf8_lossy(&r.json));
    }
    body.push_str(&format!(
        "],\"next_after\":{next_after},\"last_seq\":{last_seq}}}"
    ));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The SSE body: a comment to start with, then one message per event, keep-alive comments when
/// idle; ends (with a comment saying why) when the stream lags or the history is gone, and at
/// shutdown. Memory per stream: the subscription (at most one replay page) and hyper's buffer.
fn sse_response(sub: Subscription, stop: CancellationToken) -> Response {
    struct State {
        sub: Subscription,
        stop: CancellationToken,
        keep_alive: tokio::time::Interval,
        ended: bool,
    }
    let keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    let state = State {
        sub,
        stop,
        keep_alive,
        ended: false,
    };
    let first = futures_util::stream::once(async {
        Ok::<Bytes, Infallible>(Bytes::from_static(b": filegate events\n\n"))
    });
    let rest = futures_util::stream::unfold(state, |mut st| async move {
        if st.ended {
            return None;
        }
        let chunk = tokio::select! {
            _ = st.stop.cancelled() => return None,
            next = st.sub.next() => match next {
                Ok(event) => event.sse.clone(),
                Err(end) => {
                    st.ended = true;
                    if !matches!(end, Ended::Lagged) {
                        tracing::debug!(error = %end, "http: event stream ended");
                    }
                    Bytes::from(format!(": {end}\n\n"))
                }
            },
            _ = st.keep_alive.tick() => Bytes::from_static(b": keep-alive\n\n"),
        };
        Some((Ok::<Bytes, Infallible>(chunk), st))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        // nginx and similar proxies would otherwise hold messages back.
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(first.chain(rest)))
        .expect("valid response")
}

/// The same events over a WebSocket: one text frame per CloudEvents document; `?after=` resumes.
#[utoipa::path(
    get,
    path = "/api/v1/events/ws",
    params(
        ("after" = Option<u64>, Query, description = "Resume after this seq"),
    ),
    responses(
        (status = 101, description = "WebSocket: one text frame per CloudEvents JSON document"),
        (status = 400, description = "not a WebSocket upgrade, or after malformed"),
        (status = 401, description = "no or wrong credentials"),
        (status = 410, description = "the history no longer reaches back to `after`; the problem has `oldest_seq`"),
        (status = 503, description = "events.max_streams streams are open"),
        (status = 403, description = "the login may not see events", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "too many failed logins from this address", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
    )
)]
pub async fn events_ws(
    State(api): State<Shared>,
    session: Session,
    mut request: Request,
) -> Result<Response> {
    let headers = request.headers();
    let token = |name: header::HeaderName, want: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    if !token(header::UPGRADE, "websocket") || !token(header::CONNECTION, "upgrade") {
        return Err(Problem::bad_request(
            "this endpoint is a WebSocket: send Connection: Upgrade and Upgrade: websocket (or use GET /api/v1/events for SSE)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(
            Problem::bad_request("Sec-WebSocket-Version must be 13").with_header(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            ),
        );
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(Problem::bad_request("Sec-WebSocket-Key is missing"));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let q = query(request.uri())?;
    let after = resume_point(&HeaderMap::new(), &q)?;
    let fs = session.into_fs();
    let sub = api.events.subscribe(Principal::user(&fs), after).await?;
    let upgrade = hyper::upgrade::on(&mut request);
    let stop = api.stop_accepting.clone();
    // Tracked with the sessions, so shutdown knows about it; it ends as soon as shutdown begins.
    api.sessions.spawn(async move {
        match upgrade.await {
            Ok(upgraded) => ws_session(upgraded, sub, stop).await,
            Err(e) => tracing::debug!(error = %e, "http: WebSocket upgrade failed"),
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .expect("valid response"))
}

async fn ws_session(
    upgraded: hyper::upgrade::Upgraded,
    mut sub: Subscription,
    stop: CancellationToken,
) {
    // Clients only send control frames (and maybe a close): small incoming messages suffice.
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 10))
        .max_frame_size(Some(64 << 10));
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        Role::Server,
        Some(config),
    )
    .await;
    let (mut sink, mut incoming) = ws.split();
    let mut keep_alive =
        tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    let reason = loop {
        tokio::select! {
            _ = stop.cancelled() => break "the gateway is shutting down".to_string(),
            next = sub.next() => match next {
                Ok(event) => {
                    let text = String::from_utf8_lossy(&event.json).into_owned();
                    if sink.send(WsMessage::text(text)).await.is_err() {
                        return;
                    }
                }
                Err(end) => break end.to_string(),
            },
            frame = incoming.next() => match frame {
                // tungstenite answers pings by itself (on the next write).
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = keep_alive.tick() => {
                if sink.send(WsMessage::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    };
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let _ = sink
        .send(WsMessage::Close(Some(CloseFrame {
            code: CloseCode::Again,
            reason: reason.chars().take(120).collect::<String>().into(),
        })))
        .await;
}
