//! The MQTT front-end: the embedded broker (MQTT 3.1.1 and 5 on one listener, optionally over TLS
//! and WebSocket), its authorisation, and file commands — a front-end like `ftp/` and `sftp/`,
//! started from `[mqtt]`, the shared user layer and the shutdown token. The outbox publisher
//! (`events/`) is one of its clients.
//!
//! Our own broker, on rumqttc's packet codecs: the routing is small (events fan out to the users
//! who may see them, commands run as their sender, replies go back to that user), and owning it
//! gives what an embedded library could not: the login hook sees the client's address (bans),
//! every SUBSCRIBE and PUBLISH passes our ACL, each message is filtered per subscriber, memory is
//! bounded per client and overall, and it stops with the gateway. docs/events.md says why in full.
//!
//! | file            | holds                                                            |
//! |-----------------|------------------------------------------------------------------|
//! | `codec.rs`      | packets of both versions in and out (rumqttc's `mqttbytes`)      |
//! | `connection.rs` | one client: login, the packet table, keep-alive, flow control    |
//! | `acl.rs`        | who may publish, subscribe and receive what                      |
//! | `router.rs`     | sessions (persistent ones too), queues, fan-out                  |
//! | `commands.rs`   | put/get/list/delete over MQTT                                    |
//! | `listeners.rs`  | TCP, TLS and WebSocket accept loops                              |
//! | `client.rs`     | the options of the gateway's own clients (publisher, commands)   |

mod acl;
pub mod client;
mod codec;
pub mod commands;
mod connection;
mod listeners;
mod router;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::config::MqttConfig;

pub use acl::{mosquitto_acl, Principal};
pub use commands::{parse_request, MAX_COMMAND_BYTES};

/// Largest packet a logged-in client may send: a `put` of [`MAX_COMMAND_BYTES`] and its topic.
pub const MAX_PACKET: usize = MAX_COMMAND_BYTES + 64 * 1024;
/// Commands running at once over all connections.
const COMMANDS_AT_ONCE: usize = 16;

/// What every connection of the embedded broker shares.
pub struct Broker {
    router: router::Router,
    access: Arc<Access>,
    /// The publisher's credentials, made up at start.
    gateway_login: (String, String),
    /// `Some(home)` when anonymous clients may connect (`home`: the events they see).
    anonymous: Option<Option<String>>,
    commands: Arc<Semaphore>,
    /// The history the `events` command pages through.
    events: Arc<crate::events::EventHub>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// The running embedded broker: where it listens, and the publisher's login.
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub ws_addr: Option<SocketAddr>,
    pub user: String,
    pub password: String,
}

/// Binds the embedded broker's listeners and starts serving; stops when `shutdown` is cancelled.
/// Every task it starts is on `tasks`.
pub async fn start_embedded(
    config: &MqttConfig,
    access: Arc<Access>,
    events: Arc<crate::events::EventHub>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<EmbeddedBroker> {
    let user = format!("filegate-publisher-{}", uuid::Uuid::new_v4().simple());
    let password = uuid::Uuid::new_v4().simple().to_string();
    // The home parsed when the configuration was read (`/` or `/public`, no trailing slash).
    let anonymous = match (config.allow_anonymous, config.anonymous_home.is_empty()) {
        (false, _) => None,
        (true, true) => Some(None),
        (true, false) => Some(Some(
            config
                .anonymous_home
                .path()
                .map_err(|e| anyhow::anyhow!("mqtt.anonymous_home: {e}"))?
                .to_string(),
        )),
    };
    let broker = Arc::new(Broker {
        router: router::Router::new(
            acl::Rules::new(&config.topic_prefix, config.commands),
            config.session_queue,
            config.session_expiry,
            config.max_sessions,
        ),
        access,
        gateway_login: (user.clone(), password.clone()),
        anonymous,
        commands: Arc::new(Semaphore::new(COMMANDS_AT_ONCE)),
        events,
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
    });
    let bound = listeners::bind(config).await?;
    let started = EmbeddedBroker {
        addr: bound.tcp.local_addr()?,
        tls_addr: bound
            .tls
            .as_ref()
            .map(|(l, _)| l.local_addr())
            .transpose()?,
        ws_addr: bound.ws.as_ref().map(|l| l.local_addr()).transpose()?,
        user,
        password,
    };
    listeners::spawn(bound, broker.clone(), tasks);
    // Sessions of clients that stayed away past their expiry end here.
    let sweeper = broker.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = sweeper.shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    sweeper.router.expire();
                    let (sessions, queued, dropped) = sweeper.router.stats();
                    tracing::debug!(sessions, queued_bytes = queued, dropped, "mqtt broker");
                }
            }
        }
    });
    Ok(started)
}

/// What the banner says about the embedded broker.
pub fn banner(b: &EmbeddedBroker) -> Vec<String> {
    let mut lines = vec![format!(
        "filegate: mqtt broker listening on {} (MQTT 3.1.1 and 5)",
        b.addr
    )];
    if let Some(a) = b.tls_addr {
        lines.push(format!(
            "filegate: mqtts listening on {a} (MQTT 3.1.1 and 5 over TLS)"
        ));
    }
    if let Some(a) = b.ws_addr {
        lines.push(format!(
            "filegate: mqtt over websocket listening on ws://{a}/mqtt"
        ));
    }
    lines
}

/// The fuzz entry point: raw bytes as a client would send them, after an accepted login (both
/// versions), through the same decoder and packet table as a real connection.
#[doc(hidden)]
pub fn fuzz_packets(data: &[u8]) {
    use bytes::BytesMut;
    let mut buf = BytesMut::from(data);
    let first = codec::read_connect(&mut buf, 64 * 1024);
    let version = match first {
        Ok(Some(c)) => c.version,
        _ => {
            if data.first().is_some_and(|b| b & 1 == 1) {
                codec::Version::V5
            } else {
                codec::Version::V311
            }
        }
    };
    let rules = acl::Rules::new("filegate", true);
    let who = acl::Principal::User {
        name: "alice".into(),
        home: "/home/alice".into(),
        can_list: true,
    };
    let mut out = BytesMut::new();
    let writer = codec::Writer { version };
    for _ in 0..64 {
        match codec::read(version, &mut buf, MAX_PACKET) {
            Ok(Some(codec::Incoming::Publish(p))) => {
                let _ = rules.may_publish(&who, &p.topic);
                let _ = rules.may_receive(&who, &p.topic);
                let _ = commands::parse_request("filegate", &p.topic);
                writer.puback(&mut out, p.pkid, None);
            }
            Ok(Some(codec::Incoming::Subscribe { pkid, filters })) => {
                let granted: Vec<_> = filters
                    .iter()
                    .map(|(f, q)| rules.may_subscribe(&who, f).map(|()| (*q).min(1)))
                    .collect();
                for (f, _) in &filters {
                    let _ = acl::filter_matches("filegate/events/home/alice/x", f);
                }
                writer.suback(&mut out, pkid, &granted);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}
