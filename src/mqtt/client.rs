//! How the gateway's own MQTT clients — the event publisher and, with an external broker, the
//! command listener — reach a broker: one login, one set of client options for both versions.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{TlsConfiguration, Transport};

/// A broker and the gateway's login there.
#[derive(Clone)]
pub struct BrokerLogin {
    pub host: String,
    pub port: u16,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Every gateway client pings within this (and the broker drops it 1.5 × later).
const KEEP_ALIVE: Duration = Duration::from_secs(30);

impl BrokerLogin {
    fn transport(&self) -> Option<Transport> {
        self.tls
            .as_ref()
            .map(|tls| Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())))
    }

    /// MQTT 3.1.1 options (the publisher): a clean session, packets up to `max_packet` bytes.
    pub fn v311(&self, client_id: &str, max_packet: usize) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(client_id, &self.host, self.port);
        o.set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_max_packet_size(max_packet, max_packet);
        if let Some(user) = &self.username {
            o.set_credentials(user, self.password.clone().unwrap_or_default());
        }
        if let Some(t) = self.transport() {
            o.set_transport(t);
        }
        o
    }

    /// MQTT 5 options (external-broker commands, for response topics): the same login.
    pub fn v5(&self, client_id: &str, max_packet: usize) -> rumqttc::v5::MqttOptions {
        let mut o = rumqttc::v5::MqttOptions::new(client_id, &self.host, self.port);
        o.set_keep_alive(KEEP_ALIVE)
            .set_clean_start(true)
            .set_max_packet_size(Some(max_packet as u32));
        if let Some(user) = &self.username {
            o.set_credentials(user, self.password.clone().unwrap_or_default());
        }
        if let Some(t) = self.transport() {
            o.set_transport(t);
        }
        o
    }
}
