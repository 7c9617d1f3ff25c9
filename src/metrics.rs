//! The gateway's Prometheus metrics. One [`Metrics`] per gateway (not a process-wide recorder), so
//! several gateways in one process — as in the tests — each report only their own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

type Labels1 = [(&'static str, &'static str); 1];
type Labels3 = [(&'static str, &'static str); 3];
/// Per webhook: its configured name.
type HookLabel = [(&'static str, String); 1];

#[derive(Clone)]
struct Buckets(fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

/// 1 ms … ~65 s: from commit to the broker's or receiver's acknowledgement, outages included.
fn delivery_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// 100 µs … ~26 s: storage calls range from a cached stat to a large commit.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

pub struct Metrics {
    registry: Registry,
    sessions: Family<Labels1, Gauge>,
    sessions_started: Family<Labels1, Counter>,
    bytes_received: Family<Labels1, Counter>,
    bytes_sent: Family<Labels1, Counter>,
    transfers: Family<Labels3, Counter>,
    failed_logins: Family<Labels1, Counter>,
    bans: Counter,
    connections_refused: Family<Labels1, Counter>,
    storage_latency: Family<Labels1, Histogram, Buckets>,
    events_published: Counter,
    publish_latency: Histogram,
    /// Set at every scrape from the store.
    pub outbox_backlog: Gauge,
    mqtt_connected: Gauge,
    mqtt_connected_flag: AtomicBool,
    /// Another gateway holds the publisher lease for this namespace.
    publisher_standby: AtomicBool,
    webhook_delivered: Family<HookLabel, Counter>,
    webhook_latency: Family<HookLabel, Histogram, Buckets>,
    webhook_failures: Family<HookLabel, Counter>,
    webhook_last_status: Family<HookLabel, Gauge>,
    webhook_skipped: Family<HookLabel, Counter>,
    webhook_backlog: Family<HookLabel, Gauge>,
    webhook_lag: Family<HookLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("filegate");
        let m = Metrics {
            sessions: Family::default(),
            sessions_started: Family::default(),
            bytes_received: Family::default(),
            bytes_sent: Family::default(),
            transfers: Family::default(),
            failed_logins: Family::default(),
            bans: Counter::default(),
            connections_refused: Family::default(),
            storage_latency: Family::new_with_constructor(Buckets(latency_histogram)),
            events_published: Counter::default(),
            publish_latency: delivery_histogram(),
            outbox_backlog: Gauge::default(),
            mqtt_connected: Gauge::default(),
            mqtt_connected_flag: AtomicBool::new(false),
            publisher_standby: AtomicBool::new(false),
            webhook_delivered: Family::default(),
            webhook_latency: Family::new_with_constructor(Buckets(delivery_histogram)),
            webhook_failures: Family::default(),
            webhook_last_status: Family::default(),
            webhook_skipped: Family::default(),
            webhook_backlog: Family::default(),
            webhook_lag: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sessions",
            "Logged-in sessions now, by protocol",
            m.sessions.clone(),
        );
        registry.register(
            "sessions_started",
            "Logged-in sessions since start, by protocol",
            m.sessions_started.clone(),
        );
        registry.register_with_unit(
            "received",
            "File content received from clients, by protocol",
            Unit::Bytes,
            m.bytes_received.clone(),
        );
        registry.register_with_unit(
            "sent",
            "File content sent to clients, by protocol",
            Unit::Bytes,
            m.bytes_sent.clone(),
        );
        registry.register(
            "transfers",
            "Finished transfers by protocol, direction (upload, download) and result (ok, incomplete, aborted, failed)",
            m.transfers.clone(),
        );
        registry.register(
            "failed_logins",
            "Failed logins by protocol",
            m.failed_logins.clone(),
        );
        registry.register(
            "bans",
            "Client addresses banned after too many failed logins",
            m.bans.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused, by reason (banned, limit)",
            m.connections_refused.clone(),
        );
        registry.register_with_unit(
            "storage_operation_duration",
            "Time taken by storage operations, by operation",
            Unit::Seconds,
            m.storage_latency.clone(),
        );
        registry.register(
            "events_published",
            "Events acknowledged by the MQTT broker",
            m.events_published.clone(),
        );
        registry.register_with_unit(
            "event_publish_latency",
            "Time from a change's commit to the broker's acknowledgement of its event",
            Unit::Seconds,
            m.publish_latency.clone(),
        );
        registry.register(
            "outbox_backlog_events",
            "Events recorded but not yet acknowledged by the broker",
            m.outbox_backlog.clone(),
        );
        registry.register(
            "mqtt_connected",
            "1 while the event publisher is connected to its broker",
            m.mqtt_connected.clone(),
        );
        registry.register(
            "webhook_delivered",
            "Events a webhook's receiver confirmed (2xx), by hook",
            m.webhook_delivered.clone(),
        );
        registry.register_with_unit(
            "webhook_delivery_latency",
            "Time from a change's commit to its webhook receiver's confirmation, by hook",
            Unit::Seconds,
            m.webhook_latency.clone(),
        );
        registry.register(
            "webhook_failures",
            "Failed webhook delivery attempts (error status, no connection, timeout), by hook",
            m.webhook_failures.clone(),
        );
        registry.register(
            "webhook_last_status",
            "HTTP status of a hook's last attempt (0: no answer)",
            m.webhook_last_status.clone(),
        );
        registry.register(
            "webhook_skipped",
            "Events a hook skipped because its receiver fell more than max_backlog behind",
            m.webhook_skipped.clone(),
        );
        registry.register(
            "webhook_backlog_events",
            "Events recorded but not yet confirmed by a hook's receiver (before filtering), by hook",
            m.webhook_backlog.clone(),
        );
        registry.register_with_unit(
            "webhook_lag",
            "Age of the oldest event a hook has not delivered yet (0 when caught up), by hook",
            Unit::Seconds,
            m.webhook_lag.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition (which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn session_started(&self, protocol: &'static str) -> SessionCounters {
        self.sessions.get_or_create(&[("protocol", protocol)]).inc();
        self.sessions_started
            .get_or_create(&[("protocol", protocol)])
            .inc();
        SessionCounters {
            received: self
                .bytes_received
                .get_or_create(&[("protocol", protocol)])
                .clone(),
            sent: self
                .bytes_sent
                .get_or_create(&[("protocol", protocol)])
                .clone(),
        }
    }

    pub fn session_ended(&self, protocol: &'static str) {
        self.sessions.get_or_create(&[("protocol", protocol)]).dec();
    }

    pub fn transfer(&self, protocol: &'static str, direction: &'static str, result: &'static str) {
        self.transfers
            .get_or_create(&[
                ("protocol", protocol),
                ("direction", direction),
                ("result", result),
            ])
            .inc();
    }

    pub fn failed_login(&self, protocol: &'static str) {
        self.failed_logins
            .get_or_create(&[("protocol", protocol)])
            .inc();
    }

    pub fn banned(&self) {
        self.bans.inc();
    }

    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub fn storage_call(&self, op: &'static str, took: Duration) {
        self.storage_latency
            .get_or_create(&[("op", op)])
            .observe(took.as_secs_f64());
    }

    pub fn event_published(&self, since_commit: Duration) {
        self.events_published.inc();
        self.publish_latency.observe(since_commit.as_secs_f64());
    }

    pub fn set_mqtt_connected(&self, connected: bool) {
        self.mqtt_connected_flag.store(connected, Ordering::Relaxed);
        self.mqtt_connected.set(connected as i64);
    }

    pub fn set_publisher_standby(&self, standby: bool) {
        self.publisher_standby.store(standby, Ordering::Relaxed);
    }

    /// Makes a hook's series exist from the start (at 0), so alerts on them see it at once.
    pub fn webhook_configured(&self, hook: &str) {
        let label = [("hook", hook.to_string())];
        let _ = self.webhook_delivered.get_or_create(&label);
        let _ = self.webhook_latency.get_or_create(&label);
        let _ = self.webhook_failures.get_or_create(&label);
        let _ = self.webhook_last_status.get_or_create(&label);
        let _ = self.webhook_skipped.get_or_create(&label);
        let _ = self.webhook_backlog.get_or_create(&label);
        let _ = self.webhook_lag.get_or_create(&label);
    }

    pub fn webhook_delivered(&self, hook: &str, since_commit: Duration) {
        let label = [("hook", hook.to_string())];
        self.webhook_delivered.get_or_create(&label).inc();
        self.webhook_latency
            .get_or_create(&label)
            .observe(since_commit.as_secs_f64());
        self.webhook_last_status.get_or_create(&label).set(200);
    }

    /// `status` 0: no answer (connection refused or lost, timeout).
    pub fn webhook_failed(&self, hook: &str, status: u16) {
        let label = [("hook", hook.to_string())];
        self.webhook_failures.get_or_create(&label).inc();
        self.webhook_last_status
            .get_or_create(&label)
            .set(status.into());
    }

    pub fn webhook_skipped(&self, hook: &str, events: u64) {
        self.webhook_skipped
            .get_or_create(&[("hook", hook.to_string())])
            .inc_by(events);
    }

    /// The hook's backlog, and the commit time of its oldest undelivered event (none: caught up).
    pub fn webhook_backlog(&self, hook: &str, events: u64, oldest_ms: Option<u64>) {
        let label = [("hook", hook.to_string())];
        self.webhook_backlog
            .get_or_create(&label)
            .set(events.try_into().unwrap_or(i64::MAX));
        let lag = oldest_ms.map_or(0.0, |ms| since_commit(ms).as_secs_f64());
        self.webhook_lag.get_or_create(&label).set(lag);
    }

    /// Events are flowing: this gateway is connected to its broker, or another gateway publishes.
    pub fn events_ready(&self) -> bool {
        self.mqtt_connected_flag.load(Ordering::Relaxed)
            || self.publisher_standby.load(Ordering::Relaxed)
    }
}

/// How long ago an event committed at `time_ms` (ms since the epoch) was: what the delivery
/// latencies and lags measure.
pub fn since_commit(time_ms: u64) -> Duration {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    Duration::from_millis(now_ms.saturating_sub(time_ms))
}

/// A session's byte counters, looked up once so transfers only add to atomics.
#[derive(Clone)]
pub struct SessionCounters {
    pub received: Counter,
    pub sent: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        m.session_started("ftp").received.inc_by(5);
        m.transfer("ftp", "upload", "ok");
        m.storage_call("stat", Duration::from_millis(2));
        m.failed_login("sftp");
        let text = m.render();
        for line in [
            "filegate_sessions{protocol=\"ftp\"} 1",
            "filegate_sessions_started_total{protocol=\"ftp\"} 1",
            "filegate_received_bytes_total{protocol=\"ftp\"} 5",
            "filegate_transfers_total{protocol=\"ftp\",direction=\"upload\",result=\"ok\"} 1",
            "filegate_failed_logins_total{protocol=\"sftp\"} 1",
            "filegate_storage_operation_duration_seconds_count{op=\"stat\"} 1",
            "filegate_bans_total 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
