//! The event outbox in Redis: the `{N}:ev` stream the scripts append to, acknowledgements and the
//! history they trim, and consumer cursors.

use redis::FromRedisValue;

use super::keys::parse_u64;
use super::RedisBackend;
use crate::error::{Result, StoreError};
use crate::outbox::{assemble, Event, EventFacts, EventKind, EventOrigin, EventPage, OutboxStatus};

impl RedisBackend {
    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let mut conn = self.meta.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("{}ev", self.prefix))
            .arg(format!("{}-0", after + 1))
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        reply
            .ids
            .into_iter()
            .map(|entry| event_from(&entry))
            .collect()
    }

    pub async fn events_page(&self, after: u64, limit: usize) -> Result<EventPage> {
        // The newest seq first, then the events: see `EventPage::decide` for why this order makes
        // the two plain reads safe without a transaction.
        let mut conn = self.meta.clone();
        let last: Option<u64> = redis::cmd("HGET")
            .arg(&self.ctr_key)
            .arg("seq")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let events = self.events_after(after, limit).await?;
        Ok(EventPage::decide(after, last.unwrap_or(0), events))
    }

    pub async fn ack(&self, upto: u64) -> Result<u64> {
        self.run(
            self.script("ack", None)
                .arg(upto)
                .arg(self.settings.history_max)
                .arg(self.settings.history_age.as_millis() as u64),
        )
        .await
    }

    pub async fn outbox_status(&self) -> Result<OutboxStatus> {
        let (last_seq, acked_seq): (u64, u64) =
            self.run(&mut self.script("outbox_status", None)).await?;
        Ok(OutboxStatus {
            last_seq,
            acked_seq,
        })
    }

    pub async fn cursor(&self, name: &str, seq: Option<u64>) -> Result<u64> {
        let mut inv = self.script("cursor", None);
        inv.arg(name)
            .arg(seq.map(|s| s.to_string()).unwrap_or_default())
            .arg(self.settings.history_max)
            .arg(self.settings.history_age.as_millis() as u64);
        self.run(&mut inv).await
    }

    pub async fn retain_cursors(&self, keep: &[&str]) -> Result<u64> {
        let mut inv = self.script("retain_cursors", None);
        inv.arg(self.settings.history_max)
            .arg(self.settings.history_age.as_millis() as u64);
        for name in keep {
            inv.arg(*name);
        }
        self.run(&mut inv).await
    }
}

fn event_from(entry: &redis::streams::StreamId) -> Result<Event> {
    let field = |name: &str| -> Result<String> {
        match entry.map.get(name) {
            Some(v) => String::from_redis_value_ref(v).map_err(|e| {
                StoreError::internal(format!("event {} field {name}: {e}", entry.id)).with_source(e)
            }),
            None => Ok(String::new()),
        }
    };
    let seq = parse_u64(entry.id.split('-').next().unwrap_or(""))?;
    let kind = EventKind::parse(&field("t")?)
        .ok_or_else(|| StoreError::internal(format!("event {seq} has an unknown type")))?;
    let origin: EventOrigin = serde_json::from_str(&field("x")?).map_err(|e| {
        StoreError::internal(format!("event {seq} has a corrupt origin: {e}")).with_source(e)
    })?;
    let opt = |s: String| (!s.is_empty()).then_some(s);
    let size = opt(field("s")?).map(|s| parse_u64(&s)).transpose()?;
    let version = opt(field("v")?).map(|s| parse_u64(&s)).transpose()?;
    let facts = EventFacts {
        old_path: opt(field("o")?),
        size,
        sha256: opt(field("h")?),
        complete: opt(field("c")?).map(|c| c != "0"),
        version,
        replaced: field("r")? == "1",
    };
    Ok(assemble(seq, kind, field("p")?, origin, facts))
}
