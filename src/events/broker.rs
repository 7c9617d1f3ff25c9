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
    pub user: String,
    pub password: String,
}

pub fn start(config: &MqttConfig, access: Arc<Access>) -> anyhow::Result<EmbeddedBroker> {
    // rumqttd only logs a failed bind, and cannot tell which port it got for port 0: bind here
    // first, to fail with the key to fix and to pick the port.
    let probe = std::net::TcpListener::bind(config.listen).with_context(|| {
        format!(
            "mqtt.listen: cannot listen on {} (another broker running there?)",
            config.listen
        )
    })?;
    let addr = probe.local_addr()?;
    drop(probe);
    let user = format!("filegate-publisher-{}", uuid::Uuid::new_v4().simple());
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut server = ServerSettings {
        name: "filegate-mqtt".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 1 << 20,
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
    let mut broker = Broker::new(Config {
        id: 0,
        router,
        v4: Some([("filegate".to_string(), server)].into_iter().collect()),
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
    // Ready once it accepts connections.
    for _ in 0..500 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(EmbeddedBroker {
                addr,
                user,
                password,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    anyhow::bail!("mqtt.listen: the embedded broker did not start listening on {addr}")
}
