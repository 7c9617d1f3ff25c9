//! File events on MQTT: the publisher that delivers the store's outbox (DESIGN.md "Events on
//! MQTT") and the `[events]` presentation rules. The broker and file commands are the MQTT
//! front-end's (`crate::mqtt`); this module starts them with the publisher.

mod cloudevent;
mod hub;
mod names;
mod publisher;
pub mod webhook;

use std::sync::Arc;

use anyhow::Context as _;
use rumqttc::QoS;
use storage_backend::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::config::{Config, MqttMode};
pub use crate::mqtt::{parse_request, MAX_COMMAND_BYTES};
pub use cloudevent::{announce, payload, topic, Announcement};
pub use hub::{Ended, EventHub, Refused as StreamRefused, Rendered, Subscription};
pub use names::TempNames;
pub use publisher::{EventPublisher, PublisherSettings, LEASE_TTL};

/// What the MQTT side runs as: its listeners (for the banner) and the tasks it started.
pub struct MqttSide {
    pub banner: Vec<String>,
}

/// Starts the broker (embedded mode) and the publisher, or the outbox drain (`mode = "off"`).
pub async fn start(
    config: &Config,
    store: Store,
    access: Arc<Access>,
    hub: Arc<EventHub>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<MqttSide> {
    let m = &config.mqtt;
    let mut banner = Vec::new();
    let settings = match m.mode {
        MqttMode::Off => {
            tasks.spawn(publisher::discard_events(store, shutdown));
            return Ok(MqttSide { banner });
        }
        MqttMode::External => {
            let target = BrokerUrl::parse(&m.url).with_context(|| {
                format!("mqtt.url {:?}", crate::config::mask_url_password(&m.url))
            })?;
            let username = (!m.username.is_empty()).then(|| m.username.clone());
            let password = m.effective_password().map(str::to_string);
            banner.push(format!(
                "filegate: events published to {} (external broker)",
                target.shown()
            ));
            target.settings(config, username, password, access.metrics().clone())?
        }
        MqttMode::Embedded => {
            // The broker outlives the publisher: it stops once the publisher has flushed.
            let broker_stop = CancellationToken::new();
            let embedded =
                crate::mqtt::start_embedded(m, access.clone(), hub, broker_stop.clone(), tasks)
                    .await?;
            banner.extend(crate::mqtt::banner(&embedded));
            let host = if embedded.addr.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                embedded.addr.ip().to_string()
            };
            let target = BrokerUrl {
                host,
                port: embedded.addr.port(),
                tls: false,
            };
            let settings = target.settings(
                config,
                Some(embedded.user),
                Some(embedded.password),
                access.metrics().clone(),
            )?;
            if m.commands {
                banner.push(format!(
                    "filegate: mqtt commands on {}/commands/# (as the user who sends them)",
                    m.topic_prefix
                ));
            }
            let stop = shutdown.clone();
            tasks.spawn(async move {
                EventPublisher::new(store, settings).run(stop).await;
                broker_stop.cancel();
            });
            return Ok(MqttSide { banner });
        }
    };
    if m.commands {
        let peer = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        let fs = access
            .session_for(&m.commands_user, crate::access::Protocol::Mqtt, peer)
            .await
            .map_err(|e| anyhow::anyhow!("mqtt.commands_user {:?}: {e}", m.commands_user))?;
        let command_settings = crate::mqtt::commands::CommandSettings {
            broker: settings.broker.clone(),
            client_id: format!(
                "{}-commands-{}",
                config.server.id,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            topic_prefix: m.topic_prefix.clone(),
            events: hub,
        };
        banner.push(format!(
            "filegate: mqtt commands on {}/commands/# as {}",
            m.topic_prefix, m.commands_user
        ));
        tasks.spawn(crate::mqtt::commands::run_external(
            command_settings,
            fs,
            tasks.clone(),
            shutdown.clone(),
        ));
    }
    tasks.spawn(EventPublisher::new(store, settings).run(shutdown));
    Ok(MqttSide { banner })
}

/// Starts the `[[webhooks]]` deliverers (each on its own cursor; none when none is configured, which
/// also drops the cursors of hooks removed from the configuration).
pub fn start_webhooks(
    config: &Config,
    store: Store,
    metrics: Arc<crate::metrics::Metrics>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) {
    let common = webhook::Common {
        source: source(config),
        temp: TempNames::new(&config.events.temp_patterns),
        holder: format!("{}/{}", config.server.id, uuid::Uuid::new_v4()),
        metrics,
    };
    tasks.spawn(webhook::run(
        store,
        config.webhooks.clone(),
        common,
        shutdown,
    ));
}

/// The CloudEvents `source` of this gateway's events (MQTT and HTTP alike).
pub fn source(config: &Config) -> String {
    format!("filegate://{}", config.server.id)
}

/// The hub behind `/api/v1/events`, with the same `[events]` rules as the MQTT publisher.
pub async fn open_hub(config: &Config, store: Store) -> anyhow::Result<Arc<EventHub>> {
    EventHub::open(
        store,
        TempNames::new(&config.events.temp_patterns),
        source(config),
        config.events.max_streams,
    )
    .await
    .context("cannot read the event outbox")
}

/// `mqtt://host:port` or `mqtts://host:port` (credentials come from their own keys).
struct BrokerUrl {
    host: String,
    port: u16,
    tls: bool,
}

impl BrokerUrl {
    fn parse(url: &str) -> anyhow::Result<BrokerUrl> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            anyhow::bail!("must start with mqtt:// or mqtts://");
        };
        let rest = rest.trim_end_matches('/');
        let rest = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .context("an IPv6 address needs its closing ]")?;
            let port = after
                .strip_prefix(':')
                .map(str::parse)
                .transpose()
                .context("the port is not a number")?;
            (h.to_string(), port.unwrap_or(default_port))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().context("the port is not a number")?,
                ),
                None => (rest.to_string(), default_port),
            }
        };
        if host.is_empty() {
            anyhow::bail!("names no host");
        }
        Ok(BrokerUrl { host, port, tls })
    }

    fn shown(&self) -> String {
        format!(
            "{}://{}:{}",
            if self.tls { "mqtts" } else { "mqtt" },
            self.host,
            self.port
        )
    }

    fn settings(
        &self,
        config: &Config,
        username: Option<String>,
        password: Option<String>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<PublisherSettings> {
        let tls = if self.tls {
            Some(tls_client_config()?)
        } else {
            None
        };
        let qos = match config.mqtt.qos {
            0 => QoS::AtMostOnce,
            2 => QoS::ExactlyOnce,
            _ => QoS::AtLeastOnce,
        };
        Ok(PublisherSettings {
            broker: crate::mqtt::client::BrokerLogin {
                host: self.host.clone(),
                port: self.port,
                tls,
                username,
                password,
            },
            client_id: format!(
                "{}-events-{}",
                config.server.id,
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            topic_prefix: config.mqtt.topic_prefix.clone(),
            qos,
            source: source(config),
            temp: TempNames::new(&config.events.temp_patterns),
            holder: format!("{}/{}", config.server.id, uuid::Uuid::new_v4()),
            metrics,
        })
    }
}

/// TLS to an external broker or a webhook receiver: the platform's root certificates (or the PEM
/// file named by `SSL_CERT_FILE`), ring as the provider.
pub(crate) fn tls_client_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        anyhow::bail!("no trusted root certificates were found on this system for TLS (install ca-certificates, or name a PEM file in SSL_CERT_FILE)");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS setup")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u = BrokerUrl::parse("mqtt://127.0.0.1:1999").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("127.0.0.1", 1999, false));
        let u = BrokerUrl::parse("mqtts://broker.example.com").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.tls),
            ("broker.example.com", 8883, true)
        );
        let u = BrokerUrl::parse("mqtt://user:pw@[::1]:1884/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1884));
        assert!(BrokerUrl::parse("http://x").is_err());
        assert!(BrokerUrl::parse("mqtt://x:y").is_err());
    }
}
