//! The event publisher: reads the outbox in commit order and publishes every announcement at the
//! configured QoS, acknowledging outbox entries only once the broker has (PUBACK for QoS 1).
//!
//! Delivery is at least once and in commit order. rumqttc forgets in-flight publishes when a
//! connection drops (a clean session is used on purpose), so after every reconnect the publisher
//! starts again from the last entry the broker confirmed: the outbox, not the client, is what
//! makes delivery safe. Up to `WINDOW` publishes are in flight at once. When several gateways share
//! a Redis namespace, a lease in the store makes exactly one of them the publisher; another takes
//! over within `LEASE_TTL` when it dies.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use storage_backend::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::cloudevent::{announce, payload, topic};
use super::names::TempNames;
use crate::metrics::Metrics;

/// Publishes in flight (sent, not yet acknowledged) at once.
const WINDOW: usize = 256;
/// Events read from the outbox per round trip.
const BATCH: usize = 256;
/// How long the publisher lease lasts without renewal: the takeover time when a gateway dies.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often to look for events recorded by other gateways (local ones wake the publisher at once).
const POLL: Duration = Duration::from_millis(250);
/// Acknowledgements are written to the outbox at most this often (or every `BATCH` events).
const ACK_EVERY: Duration = Duration::from_millis(20);
const LEASE_NAME: &str = "publisher";
/// At shutdown, how long the publisher keeps sending what the outbox still holds.
const FLUSH_TIME: Duration = Duration::from_secs(5);

/// Where and how to publish.
#[derive(Clone)]
pub struct PublisherSettings {
    pub broker: crate::mqtt::client::BrokerLogin,
    pub client_id: String,
    pub topic_prefix: String,
    pub qos: QoS,
    /// CloudEvents `source`: `filegate://{server.id}`.
    pub source: String,
    pub temp: TempNames,
    /// This gateway's name in the publisher lease.
    pub holder: String,
    pub metrics: Arc<Metrics>,
}

pub struct EventPublisher {
    store: Store,
    settings: PublisherSettings,
}

/// Publishing state shared by the publisher and the connection task. Both change it under the lock
/// only, and never across an await: a publish is queued only while connected, and a lost
/// connection clears what the client still queues in the same step, so a stale publish can never
/// be taken for a new one.
struct Window {
    connected: bool,
    /// The last event handed to the client or skipped.
    cursor: u64,
    /// Sent events whose packet id is not known yet, in send order.
    unassigned: VecDeque<u64>,
    by_pkid: HashMap<u16, u64>,
    /// Published, not yet acknowledged: seq → commit time (ms since the epoch).
    outstanding: BTreeMap<u64, u64>,
}

impl Window {
    /// Everything up to here is delivered (or needs no delivery).
    fn frontier(&self) -> u64 {
        match self.outstanding.first_key_value() {
            Some((first, _)) => first - 1,
            None => self.cursor,
        }
    }
}

type Shared = Arc<std::sync::Mutex<Window>>;

impl EventPublisher {
    pub fn new(store: Store, settings: PublisherSettings) -> Self {
        EventPublisher { store, settings }
    }

    /// Publishes until `shutdown`, holding the publisher lease whenever it can get it.
    pub async fn run(self, shutdown: CancellationToken) {
        let holder = self.settings.holder.clone();
        let mut waiting_logged = false;
        while !shutdown.is_cancelled() {
            match self.store.lease(LEASE_NAME, &holder, LEASE_TTL).await {
                Ok(true) => {
                    waiting_logged = false;
                    self.settings.metrics.set_publisher_standby(false);
                    tracing::info!(holder = %holder, "event publisher active");
                    self.publish_while_leased(&shutdown).await;
                    self.settings.metrics.set_mqtt_connected(false);
                }
                Ok(false) => {
                    self.settings.metrics.set_publisher_standby(true);
                    if !waiting_logged {
                        tracing::info!(
                            "another gateway publishes this namespace's events; standing by"
                        );
                        waiting_logged = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot take the publisher lease; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(LEASE_TTL / 3) => {}
            }
        }
        let _ = self.store.release_lease(LEASE_NAME, &holder).await;
    }

    fn options(&self) -> MqttOptions {
        let s = &self.settings;
        let mut o = s.broker.v311(&s.client_id, 1 << 20);
        o.set_inflight(WINDOW as u16);
        o
    }

    /// Runs one connection for as long as the lease holds (or until shutdown).
    async fn publish_while_leased(&self, shutdown: &CancellationToken) {
        let acked = match self.store.outbox_status().await {
            Ok(status) => status.acked_seq,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox; retrying");
                return;
            }
        };
        let window: Shared = Arc::new(std::sync::Mutex::new(Window {
            connected: false,
            cursor: acked,
            unassigned: VecDeque::new(),
            by_pkid: HashMap::new(),
            outstanding: BTreeMap::new(),
        }));
        let (client, eventloop) = AsyncClient::new(self.options(), WINDOW + 16);
        let progress = Arc::new(Notify::new());
        let stop_driver = CancellationToken::new();
        let driver = tokio::spawn(drive(
            eventloop,
            window.clone(),
            progress.clone(),
            stop_driver.clone(),
            self.settings.qos,
            self.settings.metrics.clone(),
        ));
        let mut persisted = Persisted {
            seq: acked,
            at: Instant::now(),
        };
        let mut local = self.store.watch_events();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed = Instant::now();
        let mut last = Fill::Stalled;
        let mut drained_at = None;
        let mut only_acked = false;
        loop {
            // A broker acknowledgement frees room in the window; it brings nothing new to read
            // when the outbox was drained and the connection went on meanwhile (that read cost
            // Redis a command per event delivered). A reconnect moves the cursor back or drops
            // the connection: then the outbox is read again.
            let still_drained = only_acked
                && drained_at.is_some_and(|at| {
                    let w = window.lock().unwrap();
                    w.connected && w.cursor == at
                });
            if !still_drained {
                last = self.fill(&client, &window).await;
                drained_at = (last == Fill::Drained).then(|| window.lock().unwrap().cursor);
            }
            only_acked = false;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = progress.notified() => only_acked = true,
                _ = local.changed(), if last.caught_up() => {}
                _ = poll.tick() => {}
            }
            self.persist(&window, &mut persisted, false).await;
            if renewed.elapsed() >= LEASE_TTL / 3 {
                match self
                    .store
                    .lease(LEASE_NAME, &self.settings.holder, LEASE_TTL)
                    .await
                {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(
                            "the publisher lease passed to another gateway; standing by"
                        );
                        break;
                    }
                    Err(e) if renewed.elapsed() < LEASE_TTL => {
                        tracing::warn!(error = %e, "cannot renew the publisher lease")
                    }
                    Err(_) => break,
                }
            }
        }
        // Flush: while the broker is there, publish what the outbox still holds and wait for its
        // confirmation (bounded), then record how far delivery got. The rest waits in the outbox.
        let deadline = Instant::now() + FLUSH_TIME;
        while Instant::now() < deadline {
            let caught_up = self.fill(&client, &window).await.caught_up();
            let pending = {
                let w = window.lock().unwrap();
                w.connected && !(caught_up && w.outstanding.is_empty())
            };
            if !pending {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), progress.notified()).await;
            self.persist(&window, &mut persisted, false).await;
        }
        self.persist(&window, &mut persisted, true).await;
        stop_driver.cancel();
        let _ = client.try_disconnect();
        let _ = driver.await;
    }

    /// Publishes outbox events while the window has room, and says how far it got.
    async fn fill(&self, client: &AsyncClient, window: &Shared) -> Fill {
        loop {
            let (cursor, room) = {
                let w = window.lock().unwrap();
                if !w.connected {
                    return Fill::Stalled;
                }
                (w.cursor, WINDOW.saturating_sub(w.outstanding.len()))
            };
            if room == 0 {
                return Fill::Waiting;
            }
            let want = room.min(BATCH);
            let events = match self.store.events_after(cursor, want).await {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the event outbox; retrying");
                    return Fill::Stalled;
                }
            };
            let drained = events.len() < want;
            for event in events {
                let message = announce(&event, &self.settings.temp).map(|a| {
                    (
                        topic(&self.settings.topic_prefix, &a.path),
                        payload(&event, &a, &self.settings.source),
                    )
                });
                let mut w = window.lock().unwrap();
                // Sequence numbers are consecutive: anything else means the connection dropped while
                // these were being read, and delivery starts again from where it got.
                if !w.connected || event.seq != w.cursor + 1 {
                    return Fill::Waiting;
                }
                let Some((t, body)) = message else {
                    w.cursor = event.seq;
                    continue;
                };
                w.unassigned.push_back(event.seq);
                if client
                    .try_publish(t, self.settings.qos, false, body)
                    .is_err()
                {
                    // The client's queue is full: try again once it has drained.
                    w.unassigned.pop_back();
                    return Fill::Waiting;
                }
                w.outstanding.insert(event.seq, event.time_ms);
                w.cursor = event.seq;
            }
            if drained {
                return Fill::Drained;
            }
        }
    }

    async fn persist(&self, window: &Shared, persisted: &mut Persisted, force: bool) {
        let frontier = window.lock().unwrap().frontier();
        let due = force
            || frontier >= persisted.seq + BATCH as u64
            || (frontier > persisted.seq && persisted.at.elapsed() >= ACK_EVERY);
        if frontier > persisted.seq && due {
            match self.store.ack_events(frontier).await {
                Ok(_) => {
                    persisted.seq = frontier;
                    persisted.at = Instant::now();
                }
                Err(e) => tracing::warn!(error = %e, "cannot record delivered events; retrying"),
            }
        }
    }
}

/// How far one [`EventPublisher::fill`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Everything in the outbox was handed to the broker: only a new event brings more.
    Drained,
    /// The window or the client's queue is full, or delivery restarts: a broker acknowledgement
    /// (progress) lets it go on.
    Waiting,
    /// Nothing can be sent now (no connection, or the outbox cannot be read): tried again on the
    /// next event, acknowledgement or poll.
    Stalled,
}

impl Fill {
    /// Whether a new local event is worth waking for (nothing is queued behind the window).
    fn caught_up(self) -> bool {
        self != Fill::Waiting
    }
}

/// The last event recorded as delivered in the outbox.
struct Persisted {
    seq: u64,
    at: Instant,
}

/// Owns the MQTT event loop (rumqttc's `poll` must be driven alone, and is not cancel-safe) and
/// keeps the shared window up to date; reconnects with back-off.
async fn drive(
    mut eventloop: EventLoop,
    window: Shared,
    progress: Arc<Notify>,
    stop: CancellationToken,
    qos: QoS,
    metrics: Arc<Metrics>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                window.lock().unwrap().connected = true;
                metrics.set_mqtt_connected(true);
                tracing::info!("mqtt: connected; publishing events");
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                let mut w = window.lock().unwrap();
                if let Some(seq) = w.unassigned.pop_front() {
                    if pkid == 0 {
                        // QoS 0 has no acknowledgement: sent is done.
                        w.outstanding.remove(&seq);
                    } else {
                        w.by_pkid.insert(pkid, seq);
                    }
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) if qos == QoS::AtLeastOnce => {
                acknowledge(&window, ack.pkid, &metrics)
            }
            Ok(Event::Incoming(Packet::PubComp(comp))) if qos == QoS::ExactlyOnce => {
                acknowledge(&window, comp.pkid, &metrics)
            }
            Ok(_) => continue,
            Err(e) => {
                {
                    let mut w = window.lock().unwrap();
                    if w.connected {
                        tracing::warn!(error = %e, "mqtt: connection lost; unconfirmed events will be published again");
                    } else {
                        tracing::debug!(error = %e, "mqtt: cannot connect");
                    }
                    // Whatever was not confirmed goes out again on the next connection, in order.
                    w.connected = false;
                    metrics.set_mqtt_connected(false);
                    w.cursor = w.frontier();
                    w.unassigned.clear();
                    w.by_pkid.clear();
                    w.outstanding.clear();
                    // Drop what the client still queues (rumqttc would send it after reconnecting).
                    eventloop.clean();
                    eventloop.pending.clear();
                    // rumqttc#1056: a stashed publish would block the client for good.
                    eventloop.state.collision = None;
                }
                progress.notify_one();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        }
        progress.notify_one();
    }
}

fn acknowledge(window: &Shared, pkid: u16, metrics: &Metrics) {
    let mut w = window.lock().unwrap();
    if let Some(seq) = w.by_pkid.remove(&pkid) {
        if let Some(committed_ms) = w.outstanding.remove(&seq) {
            metrics.event_published(crate::metrics::since_commit(committed_ms));
        }
    }
}

/// Acknowledges every event as soon as it is recorded, without publishing: `mqtt.mode = "off"`.
/// Without it the outbox would fill up and changes would be refused.
pub async fn discard_events(store: Store, shutdown: CancellationToken) {
    tracing::info!("mqtt.mode = \"off\": file events are recorded but not published");
    let mut local = store.watch_events();
    loop {
        if let Ok(status) = store.outbox_status().await {
            if status.last_seq > status.acked_seq {
                let _ = store.ack_events(status.last_seq).await;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = local.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
