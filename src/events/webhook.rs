//! Webhooks (`[[webhooks]]`): every matching event POSTed as a CloudEvent to a URL, signed, at
//! least once and in commit order per hook.
//!
//! Each hook reads the event history from its own cursor in the store: the cursor says which
//! events the receiver has confirmed (2xx), and the store keeps every event after a cursor, so a
//! receiver that is down, a gateway restart or a Redis failover skips nothing. Only the age of
//! the backlog is bounded (`max_backlog`), so a receiver gone for good cannot fill the store. A
//! hook never holds back the MQTT publisher or another hook: each runs on its own cursor and
//! task. With several gateways on one Redis namespace, a lease per hook makes one of them its
//! deliverer; another takes over within `LEASE_TTL`, from the stored cursor.
//!
//! The signature follows Standard Webhooks (<https://www.standardwebhooks.com>): headers
//! `webhook-id` (the event id: receivers deduplicate by it), `webhook-timestamp` (Unix seconds)
//! and `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use storage_backend::{Event, EventPage, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cloudevent::{announce, payload, Announcement};
use super::names::TempNames;
use super::publisher::LEASE_TTL;
use crate::config::WebhookConfig;
use crate::http_client::HttpClient;
use crate::metrics::{since_commit, Metrics};

/// Events read from the history per round trip.
const BATCH: usize = 256;
/// The cursor is written to the store at most this often (or every `BATCH` events): after a
/// crash, at most this much is delivered again.
const SAVE_EVERY: Duration = Duration::from_millis(200);
/// How often to look for events recorded by other gateways (local ones wake the hook at once).
const POLL: Duration = Duration::from_millis(250);
/// The first retry waits this long; each next one twice as long, up to `max_retry_interval`.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// A receiver's answer is read up to this much (and then dropped).
const MAX_REPLY: usize = 64 * 1024;
/// How deliveries say what they carry.
const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

/// The CloudEvents types a hook can ask for.
pub const EVENT_TYPES: [&str; 8] = [
    "io.filegate.file.created",
    "io.filegate.file.modified",
    "io.filegate.file.incomplete",
    "io.filegate.file.deleted",
    "io.filegate.file.renamed",
    "io.filegate.dir.created",
    "io.filegate.dir.deleted",
    "io.filegate.dir.renamed",
];

/// `file.created` or `io.filegate.file.created` → the full type.
pub fn event_type(name: &str) -> Option<&'static str> {
    let full = if name.starts_with("io.filegate.") {
        name.to_string()
    } else {
        format!("io.filegate.{name}")
    };
    EVENT_TYPES.iter().copied().find(|t| *t == full)
}

/// A path glob: `*` and `?` stay within a segment, `**` spans segments, `{a,b}` alternates.
pub fn path_glob(pattern: &str) -> Result<globset::GlobMatcher, String> {
    if !pattern.starts_with('/') {
        return Err(format!(
            "{pattern:?} is not an absolute store path; write one such as \"/alice/in/**\""
        ));
    }
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("{pattern:?} is not a valid glob: {}", e.kind()))
}

/// What the gateway gives every hook.
#[derive(Clone)]
pub struct Common {
    /// CloudEvents `source`.
    pub source: String,
    pub temp: TempNames,
    /// This gateway's name in the hooks' leases.
    pub holder: String,
    pub metrics: Arc<Metrics>,
}

/// Runs every configured hook until `shutdown`, after dropping the cursors of hooks that are no
/// longer configured (so they stop holding history).
pub async fn run(
    store: Store,
    hooks: Vec<WebhookConfig>,
    common: Common,
    shutdown: CancellationToken,
) {
    let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
    match store.retain_cursors(&names).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            dropped = n,
            "webhooks no longer configured: their cursors are dropped"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot drop the cursors of removed webhooks"),
    }
    let tasks = TaskTracker::new();
    for config in hooks {
        match Hook::new(&config) {
            Ok(hook) => {
                tracing::info!(hook = %hook.name, url = %hook.client.shown(), "webhook configured");
                common.metrics.webhook_configured(&hook.name);
                let deliverer = Deliverer {
                    store: store.clone(),
                    common: common.clone(),
                    hook,
                };
                tasks.spawn(deliverer.run(shutdown.clone()));
            }
            // Config validation refuses these before start; reaching here is a bug.
            Err(e) => tracing::error!(hook = %config.name, error = %e, "webhook not started"),
        }
    }
    tasks.close();
    tasks.wait().await;
}

/// One hook, ready to deliver.
struct Hook {
    name: String,
    lease: String,
    types: Vec<&'static str>,
    paths: Vec<globset::GlobMatcher>,
    users: Vec<String>,
    key: Vec<u8>,
    timeout: Duration,
    max_retry: Duration,
    max_backlog: u64,
    client: HttpClient,
}

impl Hook {
    fn new(c: &WebhookConfig) -> Result<Hook, String> {
        let types = c
            .events
            .iter()
            .map(|t| event_type(t).ok_or_else(|| format!("unknown event type {t:?}")))
            .collect::<Result<_, _>>()?;
        let paths = c
            .paths
            .iter()
            .map(|p| path_glob(p))
            .collect::<Result<_, _>>()?;
        Ok(Hook {
            name: c.name.clone(),
            lease: format!("webhook:{}", c.name),
            types,
            paths,
            users: c.users.clone(),
            key: signing_key(c.effective_secret())?,
            timeout: c.timeout,
            max_retry: c.max_retry_interval.max(FIRST_RETRY),
            max_backlog: c.max_backlog.max(1),
            client: HttpClient::new(&c.url)?,
        })
    }

    fn wants(&self, a: &Announcement, event: &Event) -> bool {
        (self.types.is_empty() || self.types.contains(&a.kind))
            && (self.users.is_empty() || self.users.contains(&event.user))
            && (self.paths.is_empty()
                || self.paths.iter().any(|g| {
                    g.is_match(&a.path) || a.old_path.as_deref().is_some_and(|p| g.is_match(p))
                }))
    }

    /// The Standard Webhooks headers for one delivery.
    fn signed_headers(&self, id: &str, body: &[u8]) -> [(&'static str, String); 3] {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let signature =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        [
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", format!("v1,{signature}")),
        ]
    }
}

/// Standard Webhooks keys are `whsec_` and base64; any other secret is used as its UTF-8 bytes.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "starts with whsec_ but the rest is not base64".to_string()),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

struct Deliverer {
    store: Store,
    common: Common,
    hook: Hook,
}

/// How delivering one event ended.
enum Outcome {
    Delivered,
    /// Shutdown, or the lease went to another gateway: the event goes out again from the cursor.
    Stopped,
}

impl Deliverer {
    async fn run(mut self, shutdown: CancellationToken) {
        let holder = self.common.holder.clone();
        let mut standby_logged = false;
        while !shutdown.is_cancelled() {
            match self.store.lease(&self.hook.lease, &holder, LEASE_TTL).await {
                Ok(true) => {
                    standby_logged = false;
                    self.deliver_while_leased(&shutdown).await;
                }
                Ok(false) if !standby_logged => {
                    tracing::info!(hook = %self.hook.name, "another gateway delivers this webhook; standing by");
                    standby_logged = true;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(hook = %self.hook.name, error = %e, "cannot take the webhook lease; retrying")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(LEASE_TTL / 3) => {}
            }
        }
        let _ = self.store.release_lease(&self.hook.lease, &holder).await;
    }

    /// Renews the lease when a third of it has passed; false once another gateway has it.
    async fn keep_lease(&self, renewed: &mut Instant) -> bool {
        if renewed.elapsed() < LEASE_TTL / 3 {
            return true;
        }
        match self
            .store
            .lease(&self.hook.lease, &self.common.holder, LEASE_TTL)
            .await
        {
            Ok(true) => {
                *renewed = Instant::now();
                true
            }
            Ok(false) => {
                tracing::warn!(hook = %self.hook.name, "the webhook lease passed to another gateway; standing by");
                false
            }
            Err(e) => {
                tracing::warn!(hook = %self.hook.name, error = %e, "cannot renew the webhook lease");
                renewed.elapsed() < LEASE_TTL
            }
        }
    }

    async fn deliver_while_leased(&mut self, shutdown: &CancellationToken) {
        let name = self.hook.name.clone();
        let metrics = self.common.metrics.clone();
        let mut cursor = match self.store.cursor(&name).await {
            Ok(seq) => seq,
            Err(e) => {
                tracing::warn!(hook = %name, error = %e, "cannot read the webhook's cursor; retrying");
                return;
            }
        };
        let mut saved = Saved {
            seq: cursor,
            at: Instant::now(),
        };
        let mut renewed = Instant::now();
        let mut local = self.store.watch_events();
        'leased: while !shutdown.is_cancelled() && self.keep_lease(&mut renewed).await {
            let page = match self.store.events_page(cursor, BATCH).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(hook = %name, error = %e, "cannot read the event history; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(POLL) => continue,
                    }
                }
            };
            let events = match page {
                EventPage::Gone { oldest_seq, .. } => {
                    // Only when the cursor was dropped meanwhile (the hook was removed from
                    // another gateway's configuration): say so, go on from what is there.
                    let lost = oldest_seq - 1 - cursor;
                    tracing::error!(hook = %name, lost, "events left the history before this webhook delivered them");
                    metrics.webhook_skipped(&name, lost);
                    cursor = oldest_seq - 1;
                    continue;
                }
                EventPage::Events { events, last_seq } => {
                    let backlog = last_seq - cursor;
                    if backlog > self.hook.max_backlog {
                        let skip = backlog - self.hook.max_backlog;
                        tracing::error!(hook = %name, skipped = skip, backlog, "the receiver is too far behind (webhooks.max_backlog); the oldest events are skipped");
                        metrics.webhook_skipped(&name, skip);
                        cursor += skip;
                        continue;
                    }
                    metrics.webhook_backlog(&name, backlog, events.first().map(|e| e.time_ms));
                    events
                }
            };
            if events.is_empty() {
                self.save(cursor, &mut saved, true).await;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = local.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            for event in events {
                let message = announce(&event, &self.common.temp)
                    .filter(|a| self.hook.wants(a, &event))
                    .map(|a| payload(&event, &a, &self.common.source));
                if let Some(body) = message {
                    match self
                        .deliver(&event, Bytes::from(body), shutdown, &mut renewed)
                        .await
                    {
                        Outcome::Delivered => {}
                        Outcome::Stopped => break 'leased,
                    }
                }
                cursor = event.seq;
                self.save(cursor, &mut saved, false).await;
            }
        }
        self.save(cursor, &mut saved, true).await;
    }

    /// POSTs one event until the receiver confirms it, backing off between attempts.
    async fn deliver(
        &mut self,
        event: &Event,
        body: Bytes,
        shutdown: &CancellationToken,
        renewed: &mut Instant,
    ) -> Outcome {
        let mut wait = FIRST_RETRY;
        let mut attempt = 1u32;
        loop {
            let headers = self.hook.signed_headers(&event.id, &body);
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Outcome::Stopped,
                r = tokio::time::timeout(self.hook.timeout, self.hook.client.post(CONTENT_TYPE, &headers, body.clone(), MAX_REPLY)) => r,
            };
            let failure = match result {
                Ok(Ok(status)) if status.is_success() => {
                    self.common
                        .metrics
                        .webhook_delivered(&self.hook.name, since_commit(event.time_ms));
                    return Outcome::Delivered;
                }
                Ok(Ok(status)) => {
                    self.common
                        .metrics
                        .webhook_failed(&self.hook.name, status.as_u16());
                    format!("the receiver answered {status}")
                }
                Ok(Err(e)) => {
                    self.hook.client.reset();
                    self.common.metrics.webhook_failed(&self.hook.name, 0);
                    e
                }
                Err(_) => {
                    self.hook.client.reset();
                    self.common.metrics.webhook_failed(&self.hook.name, 0);
                    format!(
                        "no answer within {} (webhooks.timeout)",
                        crate::config::format_duration(self.hook.timeout)
                    )
                }
            };
            tracing::warn!(
                hook = %self.hook.name,
                seq = event.seq,
                attempt,
                retry_in = %crate::config::format_duration(wait),
                error = %failure,
                "webhook delivery failed"
            );
            tokio::select! {
                _ = shutdown.cancelled() => return Outcome::Stopped,
                _ = tokio::time::sleep(wait) => {}
            }
            if !self.keep_lease(renewed).await {
                return Outcome::Stopped;
            }
            wait = (wait * 2).min(self.hook.max_retry);
            attempt += 1;
        }
    }

    /// Records the cursor in the store when due (or `now`).
    async fn save(&self, cursor: u64, saved: &mut Saved, now: bool) {
        let due = now || cursor >= saved.seq + BATCH as u64 || saved.at.elapsed() >= SAVE_EVERY;
        if cursor > saved.seq && due {
            match self.store.set_cursor(&self.hook.name, cursor).await {
                Ok(_) => {
                    saved.seq = cursor;
                    saved.at = Instant::now();
                }
                Err(e) => {
                    tracing::warn!(hook = %self.hook.name, error = %e, "cannot record the webhook's cursor; retrying")
                }
            }
        }
    }
}

/// The cursor as last written to the store.
struct Saved {
    seq: u64,
    at: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_and_globs() {
        assert_eq!(event_type("file.created"), Some("io.filegate.file.created"));
        assert_eq!(
            event_type("io.filegate.dir.deleted"),
            Some("io.filegate.dir.deleted")
        );
        assert_eq!(event_type("file.attributes"), None);
        let g = path_glob("/alice/in/**/*.csv").unwrap();
        assert!(g.is_match("/alice/in/a.csv"));
        assert!(g.is_match("/alice/in/x/y/a.csv"));
        assert!(!g.is_match("/alice/out/a.csv"));
        let g = path_glob("/alice/in/*").unwrap();
        assert!(!g.is_match("/alice/in/x/a.csv"), "* stays within a segment");
        assert!(path_glob("in/*").is_err());
        assert!(path_glob("/a/[").is_err());
    }

    #[test]
    fn signature_follows_standard_webhooks() {
        // The example of the Standard Webhooks specification's reference libraries.
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}");
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(sig, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(signing_key("whsec_***").is_err());
        assert_eq!(signing_key("plain secret").unwrap(), b"plain secret");
    }
}
