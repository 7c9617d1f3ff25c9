//! The seam between the store's chunk logic and the two backends: the operations both implement.
//!
//! Each metadata operation here is one atomic step in the backend (a Lua script in Redis, a write
//! transaction in redb), and every one that changes the namespace records its event in that step.
//! Chunk data moves separately (`put_chunk`/`get_chunk`) and becomes visible only through a commit.

use bytes::Bytes;

use crate::embedded::EmbeddedBackend;
use crate::error::Result;
use crate::outbox::{Event, EventOrigin, EventPage, OutboxStatus};
use crate::path::StorePath;
use crate::redis::RedisBackend;
use crate::types::{ListPage, Metadata, OpenOptions};

/// One committed version of a file's content.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub vid: u64,
    pub size: u64,
    pub chunk_size: u64,
    /// Chunk id per chunk index; 0 is a hole.
    pub chunks: Vec<u64>,
    pub sha256: Option<String>,
    pub complete: bool,
    pub mtime_ms: u64,
}

/// A write session as the backend opened it.
#[derive(Debug)]
pub(crate) struct SessionStart {
    /// The backend's record of the session (0 when it keeps none: Redis registers a session only to
    /// pin a base version).
    pub sid: u64,
    /// The version the session starts from (pinned until the session ends), unless truncating.
    pub base: Option<Version>,
}

#[derive(Debug)]
pub(crate) struct CommitRequest<'a> {
    pub sid: u64,
    pub path: &'a StorePath,
    pub size: u64,
    pub chunk_size: u64,
    pub chunks: &'a [u64],
    pub sha256: Option<String>,
    pub complete: bool,
    pub mtime_ms: u64,
    pub origin: EventOrigin,
    /// Chunks the session wrote that the final map does not use.
    pub superseded: &'a [u64],
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct CommitOutcome {
    pub seq: u64,
    pub vid: u64,
    pub created: bool,
}

/// A version opened for reading and, when the read may take a while, pinned so its chunks outlive
/// an overwrite.
#[derive(Debug)]
pub(crate) struct OpenedRead {
    pub version: Version,
    pub pin: Option<u64>,
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Sessions and read pins of dead gateways that were ended.
    pub sessions_reclaimed: u64,
    /// Chunks deleted because nothing refers to them any more.
    pub chunks_deleted: u64,
}

/// Counts for tests, metrics and the integrity check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Chunks referenced by at least one version.
    pub referenced_chunks: u64,
    /// Chunks waiting for deletion.
    pub garbage_chunks: u64,
    /// Open write sessions and read pins.
    pub sessions: u64,
    /// Chunk values actually present in the backend.
    pub stored_chunks: u64,
}

pub(crate) enum Backend {
    Redis(Box<RedisBackend>),
    Embedded(EmbeddedBackend),
}

macro_rules! dispatch {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            Backend::Redis($b) => $call,
            Backend::Embedded($b) => $call,
        }
    };
}

impl Backend {
    pub fn describe(&self) -> String {
        dispatch!(self, b => b.describe())
    }

    /// Whether every write session must be registered with the backend (the embedded store records
    /// the chunks each session writes; Redis finds a dead gateway's chunks by their owner number).
    pub fn tracks_sessions(&self) -> bool {
        matches!(self, Backend::Embedded(_))
    }

    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, b => b.ping().await)
    }

    pub async fn stat(&self, path: &StorePath) -> Result<Metadata> {
        dispatch!(self, b => b.stat(path).await)
    }

    pub async fn list(
        &self,
        dir: &StorePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        dispatch!(self, b => b.list(dir, after, limit).await)
    }

    pub async fn mkdir(&self, path: &StorePath, origin: EventOrigin) -> Result<u64> {
        dispatch!(self, b => b.mkdir(path, origin).await)
    }

    pub async fn rmdir(&self, path: &StorePath, origin: EventOrigin) -> Result<u64> {
        dispatch!(self, b => b.rmdir(path, origin).await)
    }

    pub async fn delete(&self, path: &StorePath, origin: EventOrigin) -> Result<u64> {
        dispatch!(self, b => b.delete(path, origin).await)
    }

    pub async fn rename(
        &self,
        from: &StorePath,
        to: &StorePath,
        replace: bool,
        origin: EventOrigin,
    ) -> Result<u64> {
        dispatch!(self, b => b.rename(from, to, replace, origin).await)
    }

    pub async fn set_mtime(
        &self,
        path: &StorePath,
        mtime_ms: u64,
        origin: EventOrigin,
    ) -> Result<u64> {
        dispatch!(self, b => b.set_mtime(path, mtime_ms, origin).await)
    }

    pub async fn open_session(&self, path: &StorePath, opts: OpenOptions) -> Result<SessionStart> {
        dispatch!(self, b => b.open_session(path, opts).await)
    }

    pub async fn alloc_ids(&self, sid: u64, n: u64) -> Result<u64> {
        dispatch!(self, b => b.alloc_ids(sid, n).await)
    }

    pub async fn put_chunk(&self, sid: u64, id: u64, data: Bytes) -> Result<()> {
        dispatch!(self, b => b.put_chunk(sid, id, data).await)
    }

    pub async fn get_chunk(&self, id: u64) -> Result<Option<Bytes>> {
        dispatch!(self, b => b.get_chunk(id).await)
    }

    pub async fn commit(&self, req: CommitRequest<'_>) -> Result<CommitOutcome> {
        dispatch!(self, b => b.commit(req).await)
    }

    /// Ends a session without committing; `written` lists the chunks it stored.
    /// Stores the only chunk of a file and commits it; one round trip where the backend can.
    pub async fn put_and_commit(
        &self,
        req: CommitRequest<'_>,
        id: u64,
        data: Bytes,
    ) -> Result<CommitOutcome> {
        match self {
            Backend::Redis(b) => b.put_and_commit(req, id, data).await,
            Backend::Embedded(b) => {
                b.put_chunk(req.sid, id, data).await?;
                b.commit(req).await
            }
        }
    }

    pub async fn end_session(&self, sid: u64, written: &[u64]) -> Result<()> {
        dispatch!(self, b => b.end_session(sid, written).await)
    }

    pub async fn open_read(&self, path: &StorePath, pin: bool) -> Result<OpenedRead> {
        dispatch!(self, b => b.open_read(path, pin).await)
    }

    pub async fn unpin(&self, pin: u64) -> Result<()> {
        dispatch!(self, b => b.unpin(pin).await)
    }

    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        dispatch!(self, b => b.events_after(after, limit).await)
    }

    pub async fn events_page(&self, after: u64, limit: usize) -> Result<EventPage> {
        dispatch!(self, b => b.events_page(after, limit).await)
    }

    pub async fn ack(&self, upto: u64) -> Result<u64> {
        dispatch!(self, b => b.ack(upto).await)
    }

    pub async fn outbox_status(&self) -> Result<OutboxStatus> {
        dispatch!(self, b => b.outbox_status().await)
    }

    pub async fn maintain(&self) -> Result<MaintenanceReport> {
        let report = dispatch!(self, b => b.maintain().await)?;
        self.sweep_records().await?;
        Ok(report)
    }

    pub async fn release_owner(&self) -> Result<()> {
        dispatch!(self, b => b.release_owner().await)
    }

    pub async fn lease(&self, name: &str, holder: &str, ttl: std::time::Duration) -> Result<bool> {
        match self {
            Backend::Redis(b) => b.lease(name, holder, ttl).await,
            // Only one process can hold the file: every lease is this process's.
            Backend::Embedded(_) => Ok(true),
        }
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        match self {
            Backend::Redis(b) => b.release_lease(name, holder).await,
            Backend::Embedded(_) => Ok(()),
        }
    }

    pub async fn cursor(&self, name: &str, seq: Option<u64>) -> Result<u64> {
        dispatch!(self, b => b.cursor(name, seq).await)
    }

    pub async fn retain_cursors(&self, keep: &[&str]) -> Result<u64> {
        dispatch!(self, b => b.retain_cursors(keep).await)
    }

    pub async fn usage(&self) -> Result<StoreUsage> {
        dispatch!(self, b => b.usage().await)
    }

    /// Every chunk id referenced by a version, and every chunk id stored (for the integrity check).
    pub async fn chunk_inventory(&self) -> Result<(Vec<u64>, Vec<u64>)> {
        dispatch!(self, b => b.chunk_inventory().await)
    }
}
