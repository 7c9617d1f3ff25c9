//! MQTT subscribers for the event tests: rumqttc clients that keep reconnecting and collect the
//! gateway's CloudEvents by `seq`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use test_support::Mosquitto;
use tokio::sync::mpsc;

use super::PASSWORD;

/// A subscriber to `filegate/events/#` that keeps reconnecting; received events come out of `rx`.
pub struct Subscriber {
    pub rx: mpsc::UnboundedReceiver<(String, Value)>,
    task: tokio::task::JoinHandle<()>,
    /// The last connection error, shown when events do not arrive.
    last_error: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn subscribe(
    port: u16,
    login: Option<(&str, &str)>,
    id: &str,
    clean: bool,
) -> Result<Subscriber, String> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5))
        .set_clean_session(clean)
        .set_max_packet_size(1 << 20, 1 << 20);
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (client, mut el) = AsyncClient::new(o, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let last_error = std::sync::Arc::new(std::sync::Mutex::new(None));
    let noted = last_error.clone();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match el.poll().await {
                // A resumed session keeps its subscription: subscribing again would hide a broker
                // that lost it (and the events sent before the subscription came back).
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if !ack.session_present {
                        let _ = client.try_subscribe("filegate/events/#", QoS::AtLeastOnce);
                    } else if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v: Value = serde_json::from_slice(&p.payload).expect("a JSON payload");
                    let _ = tx.send((p.topic.clone(), v));
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e.to_string()));
                        return;
                    }
                    *noted.lock().unwrap() = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
        Ok(Ok(Ok(()))) => Ok(Subscriber {
            rx,
            task,
            last_error,
        }),
        Ok(Ok(Err(e))) => Err(e),
        _ => Err("no SubAck".into()),
    }
}

impl Subscriber {
    /// Receives until `want` distinct sequence numbers arrived (duplicates are allowed: delivery is
    /// at least once), failing after `limit`.
    pub async fn collect(
        &mut self,
        want: usize,
        limit: Duration,
    ) -> BTreeMap<u64, (String, Value)> {
        let mut got = BTreeMap::new();
        self.collect_into(&mut got, want, limit).await;
        got
    }

    /// Adds to `got` until it holds `want` distinct sequence numbers.
    pub async fn collect_into(
        &mut self,
        got: &mut BTreeMap<u64, (String, Value)>,
        want: usize,
        limit: Duration,
    ) {
        let deadline = Instant::now() + limit;
        while got.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some((topic, v))) => {
                    got.insert(v["data"]["seq"].as_u64().unwrap(), (topic, v));
                }
                _ => panic!(
                    "only {} of {want} events arrived: {:?} (the subscriber's last connection error: {:?})",
                    got.len(),
                    got.keys().collect::<Vec<_>>(),
                    self.last_error.lock().unwrap()
                ),
            }
        }
    }

    /// Waits until the subscriber's connection has failed: by then it has passed on everything it
    /// read (and acknowledged) before.
    pub async fn lost_connection(&self, limit: Duration) {
        super::until_true("the subscriber is still connected", limit, || async {
            self.last_error.lock().unwrap().is_some()
        })
        .await
    }

    /// What has arrived so far, without waiting.
    pub fn received(&mut self) -> BTreeMap<u64, (String, Value)> {
        let mut got = BTreeMap::new();
        while let Ok((topic, v)) = self.rx.try_recv() {
            got.insert(v["data"]["seq"].as_u64().unwrap(), (topic, v));
        }
        got
    }

    /// Nothing more arrives within `quiet`.
    pub async fn silent(&mut self, quiet: Duration) -> Option<(String, Value)> {
        tokio::time::timeout(quiet, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

pub async fn ftp(t: &crate::common::TestGateway) -> AsyncFtpStream {
    let mut ftp = AsyncFtpStream::connect(t.ftp_addr()).await.unwrap();
    ftp.login("alice", PASSWORD).await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    ftp
}

pub fn external(c: &mut filegate::Config, broker: &Mosquitto) {
    c.mqtt.mode = filegate::config::MqttMode::External;
    c.mqtt.url = broker.url();
}
