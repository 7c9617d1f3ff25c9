//! The embedded MQTT broker (rumqttd, MQTT 3.1.1) on `mqtt.listen`, so a fresh gateway gives
//! subscribers a broker at once. Subscribers log in as `[[users]]` (argon2 passwords) unless
//! `mqtt.allow_anonymous` says otherwise; the publisher logs in with credentials made up at start.
//!
//! rumqttd's `start()` blocks for ever and has no shutdown: it runs on a thread of its own, which
//! simply ends with the process (SIGTERM still exits at once). Limits of rumqttd to know (docs):
//! no per-topic permissions (any user who can log in may also publish), no client address in its
//! login hook (so broker logins do not count towards the per-IP ban), and with anonymous access
//! on, credentials are not checked at all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::access::Access;
use crate::config::MqttConfig;

pub struct EmbeddedBroker {
    pub addr: SocketAddr,
    /// The MQTT 5 listener.
    pub addr_v5: SocketAddr,
    pub user: String,
    pub password: String,
}

pub fn start(config: &MqttConfig, access: Arc<Access>) -> anyhow::Result<EmbeddedBroker> {
    let addr = pick(config.listen, "mqtt.listen")?;
    let addr_v5 = pick(config.listen_v5, "mqtt.listen_v5")?;
    let user = format!("filegate-publisher-{}", uuid::Uuid::new_v4().simple());
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut server = ServerSettings {
        name: "filegate-mqtt".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            // Room for MQTT commands: a put up to MAX_COMMAND_BYTES, and a clear error above.
            max_payload_size: super::commands::MAX_COMMAND_BYTES * 2,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    if !config.allow_anonymous {
        let (internal_user, internal_password) = (user.clone(), password.clone());
        server.set_auth_handler(move |_client: String, name: String, pass: String| {
            let access = access.clone();
            let internal = name == internal_user && pass == internal_password;
            async move { internal || access.check_password(&name, &pass).await }
        });
    }
    let router = RouterConfig {
        max_connections: 10_000,
        max_outgoing_packet_count: 200,
        // Every topic keeps a log of its own; events go to one topic per file, so keep them small.
        max_segment_size: 64 * 1024,
        max_segment_count: 1,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    let mut server_v5 = server.clone();
    server_v5.name = "filegate-mqtt5".into();
    server_v5.listen = addr_v5;
    let mut broker = Broker::new(Config {
        id: 0,
        router,
        v4: Some([("filegate".to_string(), server)].into_iter().collect()),
        v5: Some([("filegate".to_string(), server_v5)].into_iter().collect()),
        ..Default::default()
    });
    std::thread::Builder::new()
        .name("filegate-mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = ?e, "the embedded MQTT broker stopped");
            }
        })
        .context("starting the embedded MQTT broker")?;
    // Ready once both listeners answer an MQTT login.
    for _ in 0..500 {
        if answers(&addr, 4, &user, &password) && answers(&addr_v5, 5, &user, &password) {
            return Ok(EmbeddedBroker {
                addr,
                addr_v5,
                user,
                password,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    anyhow::bail!(
        "mqtt.listen: the embedded broker did not start listening on {addr} and {addr_v5}"
    )
}

/// Whether the broker at `addr` answers a CONNECT (MQTT `level` 4 or 5) with a CONNACK; the probe
/// then says DISCONNECT. A bare TCP connect would do as a probe, but rumqttd logs every connection
/// that closes before its CONNECT as an error.
fn answers(addr: &SocketAddr, level: u8, user: &str, password: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(addr, Duration::from_millis(100))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let Some(connect) = connect_packet(level, user, password) else {
        return false;
    };
    let mut connack = [0u8; 2];
    let answered = stream
        .write_all(&connect)
        .and_then(|()| stream.read_exact(&mut connack))
        .is_ok()
        && connack[0] == 0x20;
    let mut rest = vec![0u8; usize::from(connack[1])];
    if answered && stream.read_exact(&mut rest).is_ok() {
        let _ = stream.write_all(&[0xE0, 0x00]); // DISCONNECT
    }
    answered
}

/// A CONNECT with a user name and password and a clean session, written by rumqttc.
fn connect_packet(level: u8, user: &str, password: &str) -> Option<bytes::BytesMut> {
    let id = format!("filegate-readiness-{level}");
    let mut packet = bytes::BytesMut::new();
    let written = if level == 5 {
        use rumqttc::v5::mqttbytes::v5::{Connect, Login};
        let connect = Connect {
            keep_alive: 30,
            client_id: id,
            clean_start: true,
            properties: None,
        };
        connect
            .write(&None, &Some(Login::new(user, password)), &mut packet)
            .is_ok()
    } else {
        let mut connect = rumqttc::Connect::new(id);
        connect.set_login(user, password);
        connect.write(&mut packet).is_ok()
    };
    written.then_some(packet)
}

/// Binds `wanted` once to check it is free (rumqttd only logs a failed bind) and to learn the
/// port when it is 0 (rumqttd cannot tell).
fn pick(wanted: SocketAddr, key: &str) -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind(wanted).with_context(|| {
        format!("{key}: cannot listen on {wanted} (another broker running there?)")
    })?;
    Ok(probe.local_addr()?)
}
