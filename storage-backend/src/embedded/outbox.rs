//! The event outbox in the redb file: events recorded inside each change's transaction, the
//! outbox bound and each user's share of it, the history of delivered events and consumer cursors.

use std::collections::HashMap;

use redb::{Durability, ReadableDatabase, ReadableTable};

use super::tables::{Inode, COUNTERS, CURSOR_END, CURSOR_PREFIX, EVENTS};
use super::{corrupt, db_err, EmbeddedBackend, Tables};
use crate::error::{ErrorKind, Reason, Result, StoreError};
use crate::outbox::{assemble, Event, EventFacts, EventKind, EventOrigin, EventPage, OutboxStatus};
use crate::seam::BackendSettings;
use crate::types::now_ms;

/// Most events one trimming step looks at for their age (the rest wait for the next step).
const TRIM_BATCH: usize = 1024;

impl<'t> Tables<'t> {
    /// Consumer cursors, kept among the counters as `cursor:<name>`.
    fn cursors(&self) -> Result<Vec<(String, u64)>> {
        let mut found = Vec::new();
        for item in self
            .counters
            .range(CURSOR_PREFIX..CURSOR_END)
            .map_err(db_err)?
        {
            let (k, v) = item.map_err(db_err)?;
            found.push((k.value()[CURSOR_PREFIX.len()..].to_string(), v.value()));
        }
        Ok(found)
    }

    pub(super) fn emit(
        &mut self,
        kind: EventKind,
        path: String,
        origin: EventOrigin,
        facts: EventFacts,
    ) -> Result<u64> {
        let seq = self.next("seq")?;
        self.count_pending(&origin.user, 1)?;
        let event = assemble(seq, kind, path, origin, facts);
        let bytes = serde_json::to_vec(&event).expect("event serialises");
        self.events.insert(seq, bytes.as_slice()).map_err(db_err)?;
        Ok(seq)
    }

    /// Drops acknowledged events beyond the history's bounds: more than `history_max` behind the
    /// newest, or older than `history_age`. Unacknowledged events, and events a consumer cursor has
    /// not passed, are never dropped. Events go only
    /// from the old end, so the first one left says exactly what is gone.
    pub(super) fn trim_history(&mut self, settings: &BackendSettings, now: u64) -> Result<()> {
        // A consumer with a cursor (a webhook) still needs every event after it.
        let acked = self
            .cursors()?
            .into_iter()
            .fold(self.counter("acked")?, |acked, (_, seq)| acked.min(seq));
        let last = self.counter("seq")?;
        let mut upto = acked.min(last.saturating_sub(settings.history_max));
        let cutoff = now.saturating_sub(settings.history_age.as_millis() as u64);
        if upto < acked {
            let mut newest_old = upto;
            for item in self
                .events
                .range(upto + 1..=acked)
                .map_err(db_err)?
                .take(TRIM_BATCH)
            {
                let (k, v) = item.map_err(db_err)?;
                let event: Event = serde_json::from_slice(v.value())
                    .map_err(|e| corrupt("event record").with_source(e))?;
                if event.time_ms >= cutoff {
                    break;
                }
                newest_old = k.value();
            }
            upto = newest_old;
        }
        if upto > 0 {
            self.events
                .retain_in(..=upto, |_, _| false)
                .map_err(db_err)?;
        }
        Ok(())
    }

    /// Refuses a change while the outbox is full, or while `user` alone has half of it waiting:
    /// one user cannot fill the outbox for everyone (e.g. while the broker is down).
    pub(super) fn check_outbox(&self, limit: u64, user: &str) -> Result<()> {
        if limit == 0 {
            return Ok(());
        }
        let backlog = self.counter("seq")?.saturating_sub(self.counter("acked")?);
        if backlog >= limit {
            return Err(StoreError::with_reason(Reason::OutboxFull, format!(
                "event outbox is full: {backlog} events are waiting for delivery; changes are refused until the publisher catches up"
            )));
        }
        let mine = self.counter(&pending_key(user))?;
        if mine >= (limit / 2).max(1) {
            return Err(StoreError::unavailable(format!(
                "event outbox: {mine} events of this user are waiting for delivery, half of \
                 storage.outbox_limit; this user's changes are refused until the publisher catches up"
            )));
        }
        Ok(())
    }

    /// Adds `n` (which may be negative) to `user`'s count of undelivered events.
    fn count_pending(&mut self, user: &str, n: i64) -> Result<()> {
        let key = pending_key(user);
        match self.counter(&key)?.saturating_add_signed(n) {
            0 => self.counters.remove(key.as_str()).map_err(db_err).map(drop),
            v => self
                .counters
                .insert(key.as_str(), v)
                .map_err(db_err)
                .map(drop),
        }
    }
}

/// The counter of `user`'s undelivered events.
fn pending_key(user: &str) -> String {
    format!("pending:{user}")
}

pub(super) fn file_facts(inode: &Inode) -> EventFacts {
    EventFacts {
        size: Some(inode.size),
        sha256: inode.sha.clone(),
        complete: Some(inode.complete),
        version: Some(inode.vid),
        ..EventFacts::default()
    }
}

impl EmbeddedBackend {
    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.blocking(move |s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let events = txn.open_table(EVENTS).map_err(db_err)?;
            let mut out = Vec::new();
            for item in events
                .range(after + 1..)
                .map_err(db_err)?
                .take(limit.max(1))
            {
                let (_, v) = item.map_err(db_err)?;
                out.push(
                    serde_json::from_slice(v.value())
                        .map_err(|e| corrupt("event record").with_source(e))?,
                );
            }
            Ok(out)
        })
        .await
    }

    pub async fn events_page(&self, after: u64, limit: usize) -> Result<EventPage> {
        self.blocking(move |s| {
            // One read transaction: the newest seq and the events are one snapshot.
            let txn = s.db.begin_read().map_err(db_err)?;
            let counters = txn.open_table(COUNTERS).map_err(db_err)?;
            let last = counters
                .get("seq")
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(0);
            let table = txn.open_table(EVENTS).map_err(db_err)?;
            let mut events = Vec::new();
            for item in table.range(after + 1..).map_err(db_err)?.take(limit) {
                let (_, v) = item.map_err(db_err)?;
                events.push(
                    serde_json::from_slice(v.value())
                        .map_err(|e| corrupt("event record").with_source(e))?,
                );
            }
            Ok(EventPage::decide(after, last, events))
        })
        .await
    }

    pub async fn ack(&self, upto: u64) -> Result<u64> {
        self.write(Durability::Immediate, move |s, t| {
            let last = t.counter("seq")?;
            if upto > last {
                return Err(StoreError::new(
                    ErrorKind::InvalidArgument,
                    format!("cannot acknowledge event {upto}: the newest is {last}"),
                ));
            }
            let acked = t.counter("acked")?;
            if upto <= acked {
                return Ok(acked);
            }
            // Each delivered event leaves its user's count of waiting events (only the user is
            // decoded: this runs for every acknowledgement).
            #[derive(serde::Deserialize)]
            struct UserOf {
                user: String,
            }
            let mut per_user: HashMap<String, i64> = HashMap::new();
            for item in t.events.range(acked + 1..=upto).map_err(db_err)? {
                let (_, v) = item.map_err(db_err)?;
                let event: UserOf = serde_json::from_slice(v.value())
                    .map_err(|e| corrupt("event record").with_source(e))?;
                *per_user.entry(event.user).or_default() += 1;
            }
            for (user, n) in per_user {
                t.count_pending(&user, -n)?;
            }
            t.counters.insert("acked", upto).map_err(db_err)?;
            t.trim_history(&s.settings, now_ms())?;
            Ok(upto)
        })
        .await
    }

    pub async fn cursor(&self, name: &str, seq: Option<u64>) -> Result<u64> {
        let key = format!("{CURSOR_PREFIX}{name}");
        let name = name.to_string();
        self.write(Durability::Immediate, move |s, t| {
            let last = t.counter("seq")?;
            let Some(seq) = seq else {
                if let Some(current) = t.counters.get(key.as_str()).map_err(db_err)? {
                    return Ok(current.value());
                }
                t.counters.insert(key.as_str(), last).map_err(db_err)?;
                return Ok(last);
            };
            if seq > last {
                return Err(StoreError::new(
                    ErrorKind::InvalidArgument,
                    format!("cannot move cursor {name} to event {seq}: the newest is {last}"),
                ));
            }
            t.counters.insert(key.as_str(), seq).map_err(db_err)?;
            t.trim_history(&s.settings, now_ms())?;
            Ok(seq)
        })
        .await
    }

    pub async fn retain_cursors(&self, keep: &[&str]) -> Result<u64> {
        let keep: Vec<String> = keep.iter().map(|k| k.to_string()).collect();
        self.write(Durability::Immediate, move |s, t| {
            let mut dropped = 0;
            for (name, _) in t.cursors()? {
                if !keep.contains(&name) {
                    t.counters
                        .remove(format!("{CURSOR_PREFIX}{name}").as_str())
                        .map_err(db_err)?;
                    dropped += 1;
                }
            }
            if dropped > 0 {
                t.trim_history(&s.settings, now_ms())?;
            }
            Ok(dropped)
        })
        .await
    }

    pub async fn outbox_status(&self) -> Result<OutboxStatus> {
        self.blocking(|s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let counters = txn.open_table(COUNTERS).map_err(db_err)?;
            let get = |k: &str| -> Result<u64> {
                Ok(counters
                    .get(k)
                    .map_err(db_err)?
                    .map(|v| v.value())
                    .unwrap_or(0))
            };
            Ok(OutboxStatus {
                last_seq: get("seq")?,
                acked_seq: get("acked")?,
            })
        })
        .await
    }
}
