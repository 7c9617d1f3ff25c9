//! The event outbox: every change the store commits records its event in the same atomic step.
//!
//! Events carry facts, not presentation: the MQTT publisher turns them into CloudEvents and applies
//! the `[events]` rules (temporary names, attribute-only changes). Sequence numbers are consecutive
//! per namespace because they are taken inside the commit itself.

use serde::{Deserialize, Serialize};

use crate::types::ChangeContext;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A complete file was committed where none existed.
    FileCreated,
    /// A complete file was committed over an existing one (or its size was set).
    FileModified,
    /// An upload was cut off and kept with the bytes that arrived.
    FileIncomplete,
    FileDeleted,
    FileRenamed,
    /// Only attributes (the modification time) changed.
    FileAttributes,
    DirCreated,
    DirDeleted,
    DirRenamed,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::FileCreated => "file.created",
            EventKind::FileModified => "file.modified",
            EventKind::FileIncomplete => "file.incomplete",
            EventKind::FileDeleted => "file.deleted",
            EventKind::FileRenamed => "file.renamed",
            EventKind::FileAttributes => "file.attributes",
            EventKind::DirCreated => "dir.created",
            EventKind::DirDeleted => "dir.deleted",
            EventKind::DirRenamed => "dir.renamed",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        use EventKind::*;
        [
            FileCreated,
            FileModified,
            FileIncomplete,
            FileDeleted,
            FileRenamed,
            FileAttributes,
            DirCreated,
            DirDeleted,
            DirRenamed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Consecutive per namespace, starting at 1.
    pub seq: u64,
    /// Unique id (UUID v4), stable across redelivery.
    pub id: String,
    pub kind: EventKind,
    /// Milliseconds since the Unix epoch, when the change was committed.
    pub time_ms: u64,
    pub path: String,
    /// The previous path, for renames.
    pub old_path: Option<String>,
    /// For files: the size, checksum, completeness and version of the content concerned (for a
    /// delete, of the content that was deleted).
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub complete: Option<bool>,
    pub version: Option<u64>,
    /// Something already existed at `path` and was replaced.
    pub replaced: bool,
    pub user: String,
    pub protocol: String,
    pub peer: String,
}

/// What [`crate::Store::events_page`] found after a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPage {
    /// The events right after the one asked for (consecutive, starting at `after + 1`; empty when
    /// there is nothing newer yet).
    Events {
        events: Vec<Event>,
        /// The newest event recorded when the page was read.
        last_seq: u64,
    },
    /// Some events after the one asked for were already dropped from the history: the oldest
    /// event still kept is `oldest_seq` (`last_seq + 1` when none is kept).
    Gone { oldest_seq: u64, last_seq: u64 },
}

impl EventPage {
    /// Decides from what a backend read, in this order: the newest seq (`last`, read first), then
    /// the events after `after`. Sequence numbers are consecutive and the history loses events only
    /// at its old end, so a page that does not start at `after + 1` although `after < last` means
    /// the events in between were trimmed. Reading `last` first makes this safe against commits
    /// that land between the two reads. With no event after `after` left although `after < last`,
    /// the whole history is gone (it loses events at its old end only).
    pub(crate) fn decide(after: u64, last: u64, events: Vec<Event>) -> EventPage {
        let starts_right = events.first().is_some_and(|e| e.seq == after + 1);
        if starts_right || (events.is_empty() && after >= last) {
            let last_seq = events.last().map_or(last, |e| e.seq.max(last));
            return EventPage::Events { events, last_seq };
        }
        let last_seq = events.last().map_or(last, |e| e.seq.max(last));
        let oldest_seq = events.first().map_or(last_seq + 1, |e| e.seq);
        EventPage::Gone {
            oldest_seq,
            last_seq,
        }
    }
}

/// Where the publisher stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStatus {
    /// The newest event's sequence number (0 when none was ever recorded).
    pub last_seq: u64,
    /// Everything up to here has been delivered and acknowledged.
    pub acked_seq: u64,
}

impl OutboxStatus {
    pub fn backlog(&self) -> u64 {
        self.last_seq.saturating_sub(self.acked_seq)
    }
}

/// The parts of an event known before the commit runs; the commit adds kind, seq and content facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EventOrigin {
    pub id: String,
    pub time_ms: u64,
    pub user: String,
    pub protocol: String,
    pub peer: String,
}

impl EventOrigin {
    pub fn new(ctx: &ChangeContext, time_ms: u64) -> Self {
        EventOrigin {
            id: uuid::Uuid::new_v4().to_string(),
            time_ms,
            user: ctx.user.clone(),
            protocol: ctx.protocol.clone(),
            peer: ctx.peer.clone(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain struct serialises")
    }
}

/// Content facts of an event, filled in by the backend inside the commit.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct EventFacts {
    pub old_path: Option<String>,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub complete: Option<bool>,
    pub version: Option<u64>,
    pub replaced: bool,
}

pub(crate) fn assemble(
    seq: u64,
    kind: EventKind,
    path: String,
    origin: EventOrigin,
    facts: EventFacts,
) -> Event {
    Event {
        seq,
        id: origin.id,
        kind,
        time_ms: origin.time_ms,
        path,
        old_path: facts.old_path,
        size: facts.size,
        sha256: facts.sha256,
        complete: facts.complete,
        version: facts.version,
        replaced: facts.replaced,
        user: origin.user,
        protocol: origin.protocol,
        peer: origin.peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in [
            EventKind::FileCreated,
            EventKind::FileModified,
            EventKind::FileIncomplete,
            EventKind::FileDeleted,
            EventKind::FileRenamed,
            EventKind::FileAttributes,
            EventKind::DirCreated,
            EventKind::DirDeleted,
            EventKind::DirRenamed,
        ] {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }
}
