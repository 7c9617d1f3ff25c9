//! The embedded broker's listeners: plain TCP (`mqtt.listen`), TLS (`mqtt.tls.listen`) and
//! MQTT over WebSocket (`mqtt.ws_listen`, path `/mqtt`, subprotocol `mqtt`, as MQTT.js and the
//! Paho JavaScript client speak it). Every connection is admitted by the shared user layer first
//! (bans, connection limits), exactly like FTP and SFTP connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::task::TaskTracker;

use super::connection::{serve, LOGIN_DEADLINE};
use super::Broker;
use crate::access::ConnectionPermit;
use crate::config::MqttConfig;

pub struct Bound {
    pub tcp: TcpListener,
    pub tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    pub ws: Option<TcpListener>,
}

/// Binds every configured listener (so a taken port fails the start, naming its key).
pub async fn bind(config: &MqttConfig) -> anyhow::Result<Bound> {
    let tcp = listen(config.listen, "mqtt.listen").await?;
    let tls = match config.tls.listen {
        Some(addr) => {
            let server =
                crate::certs::server_config(&config.tls.cert, &config.tls.key, "mqtt.tls", &[])?;
            let acceptor = tokio_rustls::TlsAcceptor::from(server);
            Some((listen(addr, "mqtt.tls.listen").await?, acceptor))
        }
        None => None,
    };
    let ws = match config.ws_listen {
        Some(addr) => Some(listen(addr, "mqtt.ws_listen").await?),
        None => None,
    };
    Ok(Bound { tcp, tls, ws })
}

async fn listen(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("{key}: cannot listen on {addr} (another broker running there? pick another port)")
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Tcp,
    Tls,
    Ws,
}

pub fn spawn(bound: Bound, broker: Arc<Broker>, tasks: &TaskTracker) {
    tasks.spawn(accept_loop(bound.tcp, Kind::Tcp, None, broker.clone()));
    if let Some((l, acceptor)) = bound.tls {
        tasks.spawn(accept_loop(l, Kind::Tls, Some(acceptor), broker.clone()));
    }
    if let Some(l) = bound.ws {
        tasks.spawn(accept_loop(l, Kind::Ws, None, broker));
    }
}

async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    tls: Option<tokio_rustls::TlsAcceptor>,
    broker: Arc<Broker>,
) {
    loop {
        let accepted = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "mqtt: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Until its CONNECT is accepted, a connection holds one of `limits.max_unauthenticated`
        // slots, like an FTP or SSH connection that has not logged in.
        let permit = match broker.access.admit_before_login(peer.ip()) {
            Ok(p) => Arc::new(p),
            Err(why) => {
                tracing::info!(%peer, "mqtt: connection refused: {why}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (broker, tls) = (broker.clone(), tls.clone());
        let tasks = broker.tasks.clone();
        tasks.spawn(async move {
            // A panic in one connection must not pass silently: it is caught here, logged at
            // ERROR with its cause, and ends only that connection.
            let handle = tokio::spawn(async move {
                connection(kind, stream, peer, tls, broker, permit).await;
            });
            if let Err(e) = handle.await {
                if e.is_panic() {
                    tracing::error!(%peer, cause = ?e, "mqtt: a connection handler panicked; that connection was closed");
                }
            }
        });
    }
}

async fn connection(
    kind: Kind,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    broker: Arc<Broker>,
    permit: Arc<ConnectionPermit>,
) {
    match kind {
        Kind::Tcp => serve(broker, stream, peer, permit).await,
        Kind::Tls => {
            let Some(acceptor) = tls else { return };
            match tokio::time::timeout(LOGIN_DEADLINE, acceptor.accept(stream)).await {
                Ok(Ok(s)) => serve(broker, s, peer, permit).await,
                Ok(Err(e)) => tracing::info!(%peer, "mqtt: TLS handshake failed: {e}"),
                Err(_) => tracing::info!(%peer, "mqtt: TLS handshake timed out"),
            }
        }
        Kind::Ws => websocket(stream, peer, broker, permit).await,
    }
}

/// Bytes a WebSocket client may have on their way to the broker, and back, at once.
const WS_PIPE: usize = 256 * 1024;

/// MQTT over WebSocket: every binary message carries MQTT bytes (a packet may span messages);
/// the broker reads them through an in-memory pipe as from any other stream.
async fn websocket(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    permit: Arc<ConnectionPermit>,
) {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(super::MAX_PACKET + 1024))
        .max_frame_size(Some(super::MAX_PACKET + 1024));
    // The callback's error type is tungstenite's (a whole HTTP response); it never fails here.
    #[allow(clippy::result_large_err)]
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |req: &Request, mut resp: Response| {
            // MQTT.js asks for the `mqtt` subprotocol and insists on getting it back.
            let wants_mqtt = req
                .headers()
                .get_all("Sec-WebSocket-Protocol")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|p| p.trim().eq_ignore_ascii_case("mqtt"));
            if wants_mqtt {
                resp.headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
            }
            Ok(resp)
        },
        Some(config),
    );
    let ws = match tokio::time::timeout(LOGIN_DEADLINE, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::info!(%peer, "mqtt: WebSocket handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let (ours, theirs) = tokio::io::duplex(WS_PIPE);
    let session = tokio::spawn(serve(broker.clone(), theirs, peer, permit));
    let (mut sink, mut source) = ws.split();
    let (mut from_broker, mut to_broker) = tokio::io::split(ours);
    // The two directions run independently: a client sending a large put while the broker writes
    // it a large reply must not wait on itself.
    let inbound = async move {
        while let Some(msg) = source.next().await {
            match msg {
                Ok(WsMessage::Binary(data)) => {
                    if to_broker.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_)) => {}
                // MQTT over WebSocket is binary only (MQTT 5 §6).
                Ok(WsMessage::Text(_) | WsMessage::Close(_)) | Err(_) => break,
            }
        }
        let _ = to_broker.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from_broker.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let sent = tokio::time::timeout(
                        Duration::from_secs(30),
                        sink.send(WsMessage::Binary(buf[..n].to_vec().into())),
                    )
                    .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break;
                    }
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    };
    // The client going away ends the inbound side, which closes the broker's input; the broker
    // then ends, which ends the outbound side.
    // Once one side is done the other gets a moment to finish, no more: a client that never
    // answers our Close does not keep the connection.
    tokio::pin!(inbound, outbound);
    tokio::select! {
        _ = &mut inbound => { let _ = tokio::time::timeout(Duration::from_secs(5), outbound).await; }
        _ = &mut outbound => { let _ = tokio::time::timeout(Duration::from_secs(5), inbound).await; }
    }
    match session.await {
        Err(e) if e.is_panic() => {
            tracing::error!(%peer, cause = ?e, "mqtt: a WebSocket connection handler panicked; that connection was closed");
        }
        _ => {}
    }
}
