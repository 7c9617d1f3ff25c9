//! One client connection of the embedded broker, from CONNECT to goodbye: the table from MQTT
//! packet to what the broker does (MQTT 3.1.1 §3, MQTT 5.0 §3).
//!
//! | packet      | what happens                                                                |
//! |-------------|-----------------------------------------------------------------------------|
//! | CONNECT     | login through the shared user layer (bans, argon2, connection limits); the  |
//! |             | session is attached (resumed, or new); CONNACK                              |
//! | SUBSCRIBE   | each filter checked by the ACL (`acl.rs`); granted at QoS 0 or 1; SUBACK    |
//! | UNSUBSCRIBE | UNSUBACK                                                                    |
//! | PUBLISH     | the ACL decides; a command runs as the user (`commands.rs`); PUBACK/PUBREC  |
//! | PUBACK      | the delivered QoS 1 message is done                                         |
//! | PUBREL      | PUBCOMP (QoS 2 publishes are handled when they arrive)                      |
//! | PINGREQ     | PINGRESP                                                                    |
//! | DISCONNECT  | the session stays (persistent) or ends                                      |
//!
//! Everything a client sends is bounded: the CONNECT must arrive within [`LOGIN_DEADLINE`] and be
//! small; later packets are at most [`super::MAX_PACKET`] bytes; a client that stops reading is
//! dropped after [`WRITE_TIMEOUT`]; its queue is bounded by the router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;

use super::acl::Principal;
use super::codec::{self, ConnectCode, ConnectIn, Goodbye, Incoming, Outgoing, Version, Writer};
use super::router::{Message, SessionKey};
use super::Broker;
use crate::access::{ConnectionPermit, Protocol, Refusal, UserFs};

/// A connection must have sent its CONNECT within this time.
pub const LOGIN_DEADLINE: Duration = Duration::from_secs(10);
/// Largest CONNECT accepted (before the client is known).
const MAX_CONNECT: usize = 64 * 1024;
/// A client that does not take our bytes for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// QoS 1 messages in flight to one client at most (MQTT 5 clients may ask for fewer).
const INFLIGHT: usize = 100;
/// Commands of one connection running at once; more wait (the connection is not read meanwhile).
const COMMANDS_PER_CONNECTION: usize = 4;
/// Bytes written in one go before the socket is read again.
const WRITE_BATCH: usize = 1 << 20;

/// Serves one connection until it ends, the session is taken over, or the broker stops.
///
/// `permit` is the connection's slot; it is told when the CONNECT is accepted.
pub async fn serve<S>(
    broker: Arc<Broker>,
    stream: S,
    peer: SocketAddr,
    permit: Arc<ConnectionPermit>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut inbuf = BytesMut::with_capacity(4096);
    let connect = tokio::select! {
        _ = broker.shutdown.cancelled() => return,
        c = tokio::time::timeout(LOGIN_DEADLINE, read_connect(&mut rd, &mut inbuf)) => c,
    };
    let connect = match connect {
        Ok(Ok(c)) => c,
        Ok(Err(ConnectFailure::Version(level))) => {
            // RFC-style answer for old clients (MQTT 3.1, level 3): "unacceptable protocol
            // version", in the 3.1.1 format they read.
            tracing::info!(%peer, level, "mqtt: unsupported protocol version refused");
            let mut out = BytesMut::new();
            Writer {
                version: Version::V311,
            }
            .connack(&mut out, ConnectCode::UnsupportedVersion, false, None, None);
            let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await;
            return;
        }
        Ok(Err(ConnectFailure::Other(why))) => {
            tracing::info!(%peer, "mqtt: connection closed before login: {why}");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "mqtt: no CONNECT within the login deadline; closed");
            return;
        }
    };
    let writer = Writer {
        version: connect.version,
    };
    let mut out = BytesMut::new();
    let (principal, fs) = match login(&broker, &connect, peer).await {
        Ok(p) => {
            permit.logged_in();
            p
        }
        Err(code) => {
            writer.connack(&mut out, code, false, None, Some(refusal_text(code)));
            let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await;
            return;
        }
    };
    let mut assigned = None;
    let client_id = if connect.client_id.is_empty() {
        if !connect.clean && connect.version == Version::V311 {
            writer.connack(&mut out, ConnectCode::BadClientId, false, None, None);
            let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await;
            return;
        }
        let id = format!("auto-{}", uuid::Uuid::new_v4().simple());
        assigned = Some(id.clone());
        id
    } else {
        connect.client_id.clone()
    };
    let max_expiry = broker.router.max_expiry();
    let expiry = match (connect.version, connect.session_expiry) {
        // Anonymous clients get no persistent session: nothing of theirs is kept once they go.
        _ if matches!(principal, Principal::Anonymous { .. }) => Duration::ZERO,
        (Version::V311, _) if connect.clean => Duration::ZERO,
        (Version::V311, _) => max_expiry,
        (Version::V5, e) => Duration::from_secs(u64::from(e.unwrap_or(0))).min(max_expiry),
    };
    let key = SessionKey {
        user: principal.name().to_string(),
        client_id: client_id.clone(),
    };
    let Some(attached) = broker
        .router
        .attach(key, principal.clone(), connect.clean, expiry)
    else {
        tracing::warn!(%peer, "mqtt: too many sessions; connection refused (mqtt.max_sessions)");
        writer.connack(&mut out, ConnectCode::QuotaExceeded, false, None, None);
        let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await;
        return;
    };
    tracing::debug!(
        %peer,
        user = principal.name(),
        client = client_id,
        version = connect.version.as_str(),
        resumed = attached.present,
        "mqtt: connected"
    );
    writer.connack(
        &mut out,
        ConnectCode::Accepted,
        attached.present,
        assigned.filter(|_| connect.version == Version::V5),
        None,
    );
    let session = attached.session.clone();
    // However the connection ends (a panic included), its session is let go.
    let _detach = Detach {
        router: &broker.router,
        session: session.clone(),
        conn: attached.conn,
    };
    // Messages sent before a reconnect and never acknowledged go again, marked DUP.
    for (pkid, q) in session.unacked() {
        write_message(&writer, &mut out, &q.message, q.qos, pkid, true, &connect);
    }
    let window = usize::from(connect.receive_maximum.unwrap_or(u16::MAX)).clamp(1, INFLIGHT);
    let max_packet = connect.max_packet_size.map(|m| m as usize);
    let keepalive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let commands = Arc::new(Semaphore::new(COMMANDS_PER_CONNECTION));
    let mut last_heard = Instant::now();
    // Packets that came in the same read as the CONNECT (clients may send SUBSCRIBE or PUBLISH
    // without waiting for the CONNACK) are handled before anything else is read.
    let mut early = None;
    if !inbuf.is_empty() {
        if let Flow::Stop(g) = handle_input(
            &broker,
            &writer,
            &mut out,
            &mut inbuf,
            &connect,
            &principal,
            fs.as_ref(),
            &session,
            attached.conn,
            &commands,
            peer,
        )
        .await
        {
            early = Some(g);
        }
    }
    let goodbye: Option<Goodbye> = loop {
        if let Some(g) = early.take() {
            break g;
        }
        if !session.owned_by(attached.conn) {
            break Some(Goodbye::TakenOver);
        }
        let mut more = false;
        while let Some((q, pkid)) =
            session.next_to_send(attached.conn, window, max_packet, &broker.router)
        {
            write_message(&writer, &mut out, &q.message, q.qos, pkid, false, &connect);
            if out.len() >= WRITE_BATCH {
                more = true;
                break;
            }
        }
        if !out.is_empty() {
            match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)).await {
                Ok(Ok(())) => out.clear(),
                Ok(Err(_)) => break None,
                Err(_) => {
                    tracing::info!(%peer, user = principal.name(), "mqtt: the client stopped reading; disconnected");
                    break None;
                }
            }
        }
        if more {
            continue;
        }
        let deadline = keepalive.map(|k| tokio::time::Instant::from_std(last_heard + k));
        if inbuf.capacity() - inbuf.len() < 4096 {
            inbuf.reserve(16 * 1024);
        }
        tokio::select! {
            _ = broker.shutdown.cancelled() => break Some(Goodbye::ShuttingDown),
            _ = attached.notify.notified() => {}
            _ = sleep_until(deadline) => {
                tracing::info!(%peer, user = principal.name(), "mqtt: keep-alive expired; disconnected");
                break Some(Goodbye::KeepAlive);
            }
            read = rd.read_buf(&mut inbuf) => {
                match read {
                    Ok(0) | Err(_) => break None,
                    Ok(_) => last_heard = Instant::now(),
                }
                match handle_input(&broker, &writer, &mut out, &mut inbuf, &connect, &principal, fs.as_ref(), &session, attached.conn, &commands, peer).await {
                    Flow::Go => {}
                    Flow::Stop(g) => break g,
                }
                // A large packet (a put) grew the buffer: give the memory back once it is done.
                if inbuf.is_empty() && inbuf.capacity() > 64 * 1024 {
                    inbuf = BytesMut::with_capacity(4096);
                }
            }
        }
    };
    if let Some(g) = goodbye {
        writer.disconnect(&mut out, g);
    }
    if !out.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&out)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    tracing::debug!(%peer, user = principal.name(), client = client_id, "mqtt: disconnected");
}

struct Detach<'a> {
    router: &'a super::router::Router,
    session: Arc<super::router::Session>,
    conn: u64,
}

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        self.router.detach(&self.session, self.conn);
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

enum ConnectFailure {
    Version(u8),
    Other(String),
}

async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> Result<ConnectIn, ConnectFailure> {
    loop {
        match codec::read_connect(buf, MAX_CONNECT) {
            Ok(Some(c)) => return Ok(c),
            Ok(None) => {}
            Err(codec::DecodeError::UnsupportedVersion(l)) => {
                return Err(ConnectFailure::Version(l))
            }
            Err(e) => return Err(ConnectFailure::Other(e.to_string())),
        }
        buf.reserve(1024);
        match rd.read_buf(buf).await {
            Ok(0) => return Err(ConnectFailure::Other("closed".into())),
            Ok(_) => {}
            Err(e) => return Err(ConnectFailure::Other(e.to_string())),
        }
    }
}

/// Who the client is: the gateway's publisher, a `[[users]]` login (through the shared user
/// layer, so failures count towards the per-IP ban), or anonymous where allowed.
async fn login(
    broker: &Broker,
    c: &ConnectIn,
    peer: SocketAddr,
) -> Result<(Principal, Option<UserFs>), ConnectCode> {
    if broker.access.banned_for(peer.ip()).is_some() {
        return Err(ConnectCode::Banned);
    }
    match &c.login {
        Some((user, password)) => {
            if same(user, &broker.gateway_login.0) && same(password, &broker.gateway_login.1) {
                return Ok((Principal::Gateway, None));
            }
            match broker
                .access
                .login_password(user, password, peer, Protocol::Mqtt)
                .await
            {
                Ok(fs) => Ok((Principal::user(&fs), Some(fs))),
                Err(Refusal::Banned(_)) => Err(ConnectCode::Banned),
                Err(Refusal::Busy) => Err(ConnectCode::ServerBusy),
                Err(Refusal::BadCredentials) => Err(ConnectCode::BadCredentials),
                Err(Refusal::Limit(_)) | Err(Refusal::Home(_)) => Err(ConnectCode::ServerBusy),
            }
        }
        None => match &broker.anonymous {
            Some(home) => Ok((Principal::Anonymous { home: home.clone() }, None)),
            None => Err(ConnectCode::NotAuthorized),
        },
    }
}

fn refusal_text(code: ConnectCode) -> String {
    match code {
        ConnectCode::BadCredentials => "login incorrect".into(),
        ConnectCode::NotAuthorized => "log in with a user name and password".into(),
        ConnectCode::Banned => "too many failed logins from your address; try again later".into(),
        ConnectCode::ServerBusy => "the server is busy; try again in a moment".into(),
        _ => String::new(),
    }
}

/// Compares without stopping at the first difference (the gateway's own credentials).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn write_message(
    writer: &Writer,
    out: &mut BytesMut,
    m: &Message,
    qos: u8,
    pkid: u16,
    dup: bool,
    c: &ConnectIn,
) {
    // MQTT 5 §3.1.2.11.4: a message larger than the client's maximum is not sent to it (the
    // router drops those before they get a packet id; this catches a resent one).
    if c.max_packet_size.is_some_and(|max| m.cost() > max as usize) {
        return;
    }
    writer.publish(
        out,
        &Outgoing {
            topic: &m.topic,
            payload: &m.payload,
            qos,
            pkid,
            dup,
            content_type: m.content_type.as_deref(),
            correlation_data: m.correlation_data.as_ref(),
            user_properties: &m.user_properties,
        },
    );
}

enum Flow {
    Go,
    Stop(Option<Goodbye>),
}

/// Handles every whole packet in `inbuf`.
#[allow(clippy::too_many_arguments)]
async fn handle_input(
    broker: &Arc<Broker>,
    writer: &Writer,
    out: &mut BytesMut,
    inbuf: &mut BytesMut,
    connect: &ConnectIn,
    principal: &Principal,
    fs: Option<&UserFs>,
    session: &Arc<super::router::Session>,
    conn: u64,
    commands: &Arc<Semaphore>,
    peer: SocketAddr,
) -> Flow {
    loop {
        let packet = match codec::read(connect.version, inbuf, super::MAX_PACKET) {
            Ok(Some(p)) => p,
            Ok(None) => return Flow::Go,
            Err(codec::DecodeError::TooLarge(n)) => {
                tracing::info!(%peer, user = principal.name(), bytes = n, max = super::MAX_PACKET, "mqtt: packet too large; disconnected");
                return Flow::Stop(Some(Goodbye::TooLarge));
            }
            Err(e) => {
                tracing::info!(%peer, user = principal.name(), "mqtt: {e}; disconnected");
                return Flow::Stop(Some(Goodbye::Malformed));
            }
        };
        match packet {
            Incoming::Publish(p) => {
                if p.topic_alias.is_some() {
                    return Flow::Stop(Some(Goodbye::TopicAlias));
                }
                let rules = broker.router.rules();
                let qos_pkid = (p.qos, p.pkid);
                match rules.may_publish(principal, &p.topic) {
                    Ok(()) => {
                        if principal == &Principal::Gateway {
                            broker.router.publish(Message {
                                topic: p.topic,
                                payload: p.payload,
                                qos: p.qos.min(1),
                                content_type: None,
                                correlation_data: None,
                                user_properties: Vec::new(),
                            });
                        } else if let Some(fs) = fs {
                            // Wait for a slot of this connection and one of the gateway's: the
                            // connection is not read meanwhile, so no client can pile up
                            // commands (or their payloads) in memory.
                            let slots = async {
                                let mine = commands.clone().acquire_owned().await.ok()?;
                                let global = broker.commands.clone().acquire_owned().await.ok()?;
                                Some((mine, global))
                            };
                            let permits = tokio::select! {
                                _ = broker.shutdown.cancelled() => None,
                                p = slots => p,
                            };
                            let Some(permits) = permits else {
                                return Flow::Stop(Some(Goodbye::ShuttingDown));
                            };
                            let (broker, fs) = (broker.clone(), fs.clone());
                            let user = principal.name().to_string();
                            broker.clone().tasks.spawn(async move {
                                let _permits = permits;
                                super::commands::run_for_user(&broker, &fs, &user, p).await;
                            });
                        }
                        ack(writer, out, qos_pkid, None);
                    }
                    Err((why, text)) => {
                        tracing::info!(%peer, user = principal.name(), topic = %p.topic, "mqtt: publish refused: {text}");
                        ack(writer, out, qos_pkid, Some((why, &text)));
                    }
                }
            }
            Incoming::PubAck(pkid) => session.acked(pkid, &broker.router),
            Incoming::PubRel(pkid) => writer.pubcomp(out, pkid),
            Incoming::PubRec(_) | Incoming::PubComp(_) => {}
            Incoming::Subscribe { pkid, filters } => {
                let rules = broker.router.rules();
                let granted: Vec<_> = filters
                    .iter()
                    .map(|(filter, qos)| {
                        rules.may_subscribe(principal, filter).and_then(|()| {
                            let q = (*qos).min(1);
                            if session.subscribe(conn, filter, q) {
                                Ok(q)
                            } else {
                                Err(codec::Refused::QuotaExceeded)
                            }
                        })
                    })
                    .collect();
                for ((filter, _), g) in filters.iter().zip(&granted) {
                    if g.is_err() {
                        tracing::info!(%peer, user = principal.name(), filter, "mqtt: subscription refused");
                    }
                }
                writer.suback(out, pkid, &granted);
            }
            Incoming::Unsubscribe { pkid, filters } => {
                for f in &filters {
                    session.unsubscribe(conn, f);
                }
                writer.unsuback(out, pkid, filters.len());
            }
            Incoming::PingReq => writer.pingresp(out),
            Incoming::Disconnect { session_expiry } => {
                if let Some(e) = session_expiry {
                    session.set_expiry(
                        conn,
                        Duration::from_secs(u64::from(e)).min(broker.router.max_expiry()),
                    );
                }
                return Flow::Stop(None);
            }
            Incoming::Unexpected(_) => {
                tracing::info!(%peer, user = principal.name(), "mqtt: protocol error; disconnected");
                return Flow::Stop(Some(Goodbye::Protocol));
            }
        }
    }
}

/// Acknowledges a client's publish at its QoS.
fn ack(
    writer: &Writer,
    out: &mut BytesMut,
    (qos, pkid): (u8, u16),
    refused: Option<(codec::Refused, &str)>,
) {
    match qos {
        1 => writer.puback(out, pkid, refused),
        2 => writer.pubrec(out, pkid),
        _ => {}
    }
}
