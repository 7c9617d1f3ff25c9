//! File commands over MQTT (`mqtt.commands = true`): put, get, list and delete through the shared
//! user layer (jail, permissions, quota, size limits), and `events`: a page of the event history
//! for a device that saw a gap in `seq` and speaks only MQTT (`docs/events.md`).
//!
//! Requests: `{prefix}/commands/{op}/{path}` — the path relative to the user's home, one topic
//! level per segment, encoded as in event topics; `put` carries the content as payload.
//!
//! - On the embedded broker a command runs as the user who sent it ([`run_for_user`]). Replies go
//!   to `{prefix}/replies/{user}/{op}/{path}` (`get` failures to `…/{user}/get-error/{path}`,
//!   since a successful `get` reply is the raw content), which only that user may receive; an
//!   MQTT 5 response topic is used when it starts with `{prefix}/replies/{user}/`, and any other
//!   gets an error reply on the default topic.
//! - With an external broker the gateway cannot tell who published, so commands run as
//!   `mqtt.commands_user` ([`run_external`]) and replies go to the response topic, or to
//!   `{prefix}/replies/{op}/{path}`; the broker's ACL decides who may command (`filegate
//!   mqtt-acl`).
//!
//! Every reply but a successful `get` is JSON: `{"ok":true,…}` or
//! `{"ok":false,"error":"not_found","message":"…"}`; MQTT 5 replies also carry a `status` user
//! property (`ok` / `error`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event};
use serde_json::json;
use storage_backend::{ErrorKind, OpenOptions, StoreError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{UserFs, UserPath};
use crate::events::{EventHub, StreamRefused};

/// Largest `put` accepted (and largest `get` answered); larger ones get an error reply.
pub const MAX_COMMAND_BYTES: usize = 8 << 20;
/// Commands handled at once.
const CONCURRENCY: usize = 16;

#[derive(Clone)]
pub struct CommandSettings {
    pub broker: super::client::BrokerLogin,
    pub client_id: String,
    pub topic_prefix: String,
    pub events: Arc<crate::events::EventHub>,
}

pub async fn run_external(
    settings: CommandSettings,
    fs: UserFs,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    // Bigger than any command we accept, so an oversized put reaches us and gets a reply.
    let o = settings
        .broker
        .v5(&settings.client_id, MAX_COMMAND_BYTES * 2);
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let filter = format!("{}/commands/#", settings.topic_prefix);
    let busy = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut backoff = Duration::from_millis(200);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            e = eventloop.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                // A clean session forgets subscriptions: subscribe on every connection.
                if client
                    .try_subscribe(filter.clone(), QoS::AtLeastOnce)
                    .is_err()
                {
                    tracing::warn!("mqtt commands: cannot subscribe");
                }
                tracing::info!(topic = %filter, user = fs.user(), "mqtt commands: listening");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Ok(permit) = busy.clone().try_acquire_owned() else {
                    tracing::warn!("mqtt commands: too many at once; one dropped");
                    continue;
                };
                let (client, fs, prefix, events) = (
                    client.clone(),
                    fs.clone(),
                    settings.topic_prefix.clone(),
                    settings.events.clone(),
                );
                tasks.spawn(async move {
                    let _permit = permit;
                    let topic = String::from_utf8_lossy(&p.topic).to_string();
                    let reply = handle(&fs, &events, &prefix, &topic, &p.payload).await;
                    let fallback = reply.topic_below(&format!("{prefix}/replies"));
                    let props = p.properties.unwrap_or_default();
                    let (reply_topic, correlation) = match props.response_topic {
                        Some(t) => (t, props.correlation_data),
                        None => (fallback, None),
                    };
                    let properties = PublishProperties {
                        correlation_data: correlation,
                        content_type: Some(reply.content_type.into()),
                        user_properties: vec![(
                            "status".into(),
                            if reply.ok { "ok" } else { "error" }.into(),
                        )],
                        ..Default::default()
                    };
                    if let Err(e) = client
                        .publish_with_properties(
                            reply_topic,
                            QoS::AtLeastOnce,
                            false,
                            reply.body,
                            properties,
                        )
                        .await
                    {
                        tracing::warn!(error = %e, "mqtt commands: cannot send a reply");
                    }
                });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "mqtt commands: connection lost; reconnecting");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    let _ = client.try_disconnect();
}

struct Reply {
    ok: bool,
    body: Bytes,
    content_type: &'static str,
    /// `get`, `get-error`, `put`, …: the reply topic's level after the prefix.
    kind: String,
    path_text: String,
}

impl Reply {
    /// `{base}/{kind}/{path…}`, the path encoded as in event topics.
    fn topic_below(&self, base: &str) -> String {
        format!(
            "{base}/{}{}",
            self.kind,
            crate::events::topic("", &self.path_text)
                .strip_prefix("/events")
                .unwrap_or_default()
        )
    }
}

/// Runs a command published on the embedded broker as the user who sent it, and routes the reply
/// to that user only.
pub(super) async fn run_for_user(
    broker: &super::Broker,
    fs: &UserFs,
    user: &str,
    p: super::codec::PublishIn,
) {
    let rules = broker.router.rules();
    let reply_base = rules.reply_prefix(user);
    let mut reply = handle(fs, &broker.events, rules.prefix(), &p.topic, &p.payload).await;
    let default_topic = reply.topic_below(reply_base.trim_end_matches('/'));
    let topic = match p.response_topic {
        Some(t) if t.starts_with(&reply_base) && rumqttc::mqttbytes::valid_topic(&t) => t,
        Some(t) => {
            // Never publish where the client points unless it is its own reply space: the reply
            // would carry file bytes to anyone subscribed there.
            let body = json!({"ok": false, "op": reply.kind, "error": "invalid_argument",
                "message": format!("the response topic {t:?} is not allowed: it must start with {reply_base}")});
            reply = Reply {
                ok: false,
                body: Bytes::from(serde_json::to_vec(&body).expect("json")),
                content_type: "application/json",
                kind: reply.kind,
                path_text: reply.path_text,
            };
            default_topic
        }
        None => default_topic,
    };
    broker.router.publish(super::router::Message {
        topic,
        payload: reply.body,
        qos: 1,
        content_type: Some(reply.content_type.into()),
        correlation_data: p.correlation_data,
        user_properties: vec![(
            "status".into(),
            if reply.ok { "ok" } else { "error" }.into(),
        )],
    });
}

/// Undoes the topic encoding of a path segment (`%2B` → `+`, …).
fn decode_segment(seg: &str) -> String {
    seg.replace("%2B", "+")
        .replace("%23", "#")
        .replace("%25", "%")
}

/// A request topic `{prefix}/commands/{op}/{path}` → (op, path with a leading `/`, decoded).
/// Anything else yields an empty op, which is answered as an unknown command.
pub fn parse_request<'t>(prefix: &str, topic: &'t str) -> (&'t str, String) {
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix("/commands/"))
        .unwrap_or("");
    let (op, raw_path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = format!(
        "/{}",
        raw_path
            .split('/')
            .map(decode_segment)
            .collect::<Vec<_>>()
            .join("/")
    );
    (op, path)
}

async fn handle(
    fs: &UserFs,
    events: &EventHub,
    prefix: &str,
    topic: &str,
    payload: &[u8],
) -> Reply {
    let (op, path_text) = parse_request(prefix, topic);
    let result = run_command(fs, events, op, &path_text, payload).await;
    match result {
        Ok(Outcome::Refused(v)) => Reply {
            ok: false,
            body: Bytes::from(serde_json::to_vec(&v).expect("json")),
            content_type: "application/json",
            kind: op.into(),
            path_text,
        },
        Ok(Outcome::Content(data)) => Reply {
            ok: true,
            body: data,
            content_type: "application/octet-stream",
            kind: "get".into(),
            path_text,
        },
        Ok(Outcome::Json(v)) => Reply {
            ok: true,
            body: Bytes::from(serde_json::to_vec(&v).expect("json")),
            content_type: "application/json",
            kind: op.into(),
            path_text,
        },
        Err(e) => {
            let body = json!({"ok": false, "op": op, "path": path_text, "error": e.kind().as_str(), "message": e.message()});
            Reply {
                ok: false,
                body: Bytes::from(serde_json::to_vec(&body).expect("json")),
                content_type: "application/json",
                kind: if op == "get" { "get-error" } else { op }.into(),
                path_text,
            }
        }
    }
}

enum Outcome {
    Content(Bytes),
    Json(serde_json::Value),
    /// A refusal with more to say than an error kind (`events`: `oldest_seq`).
    Refused(serde_json::Value),
}

/// The `events` command's payload (all optional): as `GET /api/v1/events?after=&limit=`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EventsRequest {
    after: Option<u64>,
    limit: Option<usize>,
}

/// `events`: one page of the history the user may see, or why not (`gone` with `oldest_seq`).
async fn events_page(fs: &UserFs, hub: &EventHub, payload: &[u8]) -> Result<Outcome, StoreError> {
    let req: EventsRequest = if payload.iter().all(u8::is_ascii_whitespace) {
        EventsRequest::default()
    } else {
        serde_json::from_slice(payload).map_err(|e| {
            StoreError::new(
                ErrorKind::InvalidArgument,
                format!("events takes {{\"after\": SEQ, \"limit\": N}} (both optional): {e}"),
            )
        })?
    };
    let limit = req.limit.unwrap_or(100).clamp(1, 1000);
    let viewer = crate::mqtt::Principal::user(fs);
    let after = match req.after {
        Some(a) => a,
        None => hub.oldest().await?.saturating_sub(1),
    };
    match hub.page(&viewer, after, limit).await {
        Ok((shown, next_after, last_seq)) => {
            let docs: Vec<serde_json::Value> = shown
                .iter()
                .map(|r| serde_json::from_slice(&r.json).expect("CloudEvents documents are JSON"))
                .collect();
            Ok(Outcome::Json(
                json!({"ok": true, "op": "events", "events": docs,
                "next_after": next_after, "last_seq": last_seq}),
            ))
        }
        Err(refused @ StreamRefused::Gone { oldest_seq, .. }) => Ok(Outcome::Refused(
            json!({"ok": false, "op": "events", "error": "gone", "message": refused.to_string(),
                "oldest_seq": oldest_seq}),
        )),
        Err(refused @ StreamRefused::Future { last_seq, .. }) => Ok(Outcome::Refused(
            json!({"ok": false, "op": "events", "error": "invalid_argument",
                "message": refused.to_string(), "last_seq": last_seq}),
        )),
        Err(StreamRefused::Store(e)) => Err(e),
        Err(other) => Err(StoreError::new(ErrorKind::Unavailable, other.to_string())),
    }
}

async fn run_command(
    fs: &UserFs,
    events: &EventHub,
    op: &str,
    path: &str,
    payload: &[u8],
) -> Result<Outcome, StoreError> {
    let p = fs.resolve(&UserPath::root(), path.as_bytes())?;
    match op {
        "events" => events_page(fs, events, payload).await,
        "put" => {
            if payload.len() > MAX_COMMAND_BYTES {
                return Err(StoreError::new(
                    ErrorKind::FileTooLarge,
                    format!("{} bytes is more than a put over MQTT may carry ({MAX_COMMAND_BYTES}); use FTP or SFTP", payload.len()),
                ));
            }
            // Devices put to paths, not into prepared trees: missing directories are made (as the
            // commands user, so with its mkdir permission).
            fs.make_parents(&p).await?;
            let mut upload = fs.open_write(&p, OpenOptions::REPLACE).await?;
            upload.write_at(0, payload).await?;
            let info = upload.commit(None).await?;
            Ok(Outcome::Json(
                json!({"ok": true, "op": "put", "path": p.as_str(), "size": info.size, "sha256": info.sha256, "version": info.version}),
            ))
        }
        "get" => {
            let download = fs.open_read(&p).await?;
            if download.size() > MAX_COMMAND_BYTES as u64 {
                return Err(StoreError::new(
                    ErrorKind::FileTooLarge,
                    format!("{p} is {} bytes, more than a get over MQTT returns ({MAX_COMMAND_BYTES}); use FTP or SFTP", download.size()),
                ));
            }
            Ok(Outcome::Content(
                download.read_at(0, download.size() as usize).await?,
            ))
        }
        "list" => {
            let mut entries = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = fs.list(&p, after.as_deref(), 1000).await?;
                for e in &page.entries {
                    // humantime panics before 1970 and past 9999: such times are shown as null.
                    let mtime = e
                        .metadata
                        .mtime
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .filter(|d| d.as_secs() < 253_402_300_800)
                        .map(|_| humantime::format_rfc3339_seconds(e.metadata.mtime).to_string());
                    entries.push(json!({
                        "name": e.name,
                        "type": if e.metadata.is_dir() { "dir" } else { "file" },
                        "size": e.metadata.size,
                        "mtime": mtime,
                    }));
                    if entries.len() >= 10_000 {
                        break;
                    }
                }
                match page.next {
                    Some(n) if entries.len() < 10_000 => after = Some(n),
                    _ => break,
                }
            }
            Ok(Outcome::Json(
                json!({"ok": true, "op": "list", "path": p.as_str(), "entries": entries}),
            ))
        }
        "delete" => {
            fs.delete(&p).await?;
            Ok(Outcome::Json(
                json!({"ok": true, "op": "delete", "path": p.as_str()}),
            ))
        }
        other => Err(StoreError::new(
            ErrorKind::InvalidArgument,
            format!("unknown command {other:?}: use put, get, list, delete or events"),
        )),
    }
}
