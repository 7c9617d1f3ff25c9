//! The backend a store runs on, as one value: every call goes to whichever backend it is.
//!
//! The only module that names both backends; everything above it (`inner`, `read`, `write`,
//! `store`) sees a `Backend`, and the backends see only the seam.

use bytes::Bytes;

use crate::config::{BackendConfig, StoreConfig};
use crate::embedded::EmbeddedBackend;
use crate::error::Result;
use crate::outbox::{Event, EventOrigin, EventPage, OutboxStatus};
use crate::path::StorePath;
use crate::redis::RedisBackend;
use crate::seam::{
    BackendSettings, CommitOutcome, CommitRequest, MaintenanceReport, OpenedRead, SessionStart,
    StoreUsage,
};
use crate::types::{ListPage, Metadata, OpenOptions};

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
    /// Opens (creating if needed) the configured backend; also the chunk size new files get there.
    pub async fn open(config: &StoreConfig) -> Result<(Backend, u64)> {
        let settings = BackendSettings {
            namespace: config.namespace.clone(),
            gc_grace: config.gc_grace,
            orphan_timeout: config.orphan_timeout,
            outbox_limit: config.outbox_limit,
            history_max: config.history_max,
            history_age: config.history_age,
        };
        Ok(match &config.backend {
            BackendConfig::Embedded(e) => (
                Backend::Embedded(EmbeddedBackend::open(e.path.clone(), settings).await?),
                EmbeddedBackend::chunk_size(config.chunk_size),
            ),
            BackendConfig::Redis(r) => (
                Backend::Redis(Box::new(RedisBackend::open(r, settings).await?)),
                config.chunk_size,
            ),
        })
    }

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

    /// Stores the only chunk of a file and commits it; one round trip where the backend can.
    pub async fn put_and_commit(
        &self,
        req: CommitRequest<'_>,
        id: u64,
        data: Bytes,
    ) -> Result<CommitOutcome> {
        match self {
            Backend::Redis(b) => b.put_and_commit(req, id, data).await,
            Backend::Embedded(b) => b.put_and_commit(req, id, data).await,
        }
    }

    /// Registers a session for an upload that opened without one, before its first chunk (only
    /// stores that track sessions need it; Redis finds a dead gateway's chunks by their ids).
    pub async fn register_session(&self) -> Result<u64> {
        match self {
            Backend::Redis(_) => Ok(0),
            Backend::Embedded(b) => b.register_session().await,
        }
    }

    /// Ends a session without committing; `written` lists the chunks it stored.
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

    // Records (`records.rs`): small values beside the file tree.

    /// `expected`: None = write unconditionally; Some(None) = only if absent; Some(Some(v)) = only if
    /// the current value is `v`.
    pub(crate) async fn record_write(
        &self,
        table: &str,
        key: &str,
        expected: Option<Option<&[u8]>>,
        value: &[u8],
        expires_ms: u64,
    ) -> Result<bool> {
        match self {
            Backend::Redis(b) => {
                b.record_write(table, key, expected, value, expires_ms)
                    .await
            }
            Backend::Embedded(b) => {
                b.record_write(table, key, expected, value, expires_ms)
                    .await
            }
        }
    }

    pub(crate) async fn record_get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Backend::Redis(b) => b.record_get(table, key).await,
            Backend::Embedded(b) => b.record_get(table, key).await,
        }
    }

    pub(crate) async fn record_delete(&self, table: &str, key: &str) -> Result<bool> {
        match self {
            Backend::Redis(b) => b.record_delete(table, key).await,
            Backend::Embedded(b) => b.record_delete(table, key).await,
        }
    }

    pub(crate) async fn record_list(
        &self,
        table: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        match self {
            Backend::Redis(b) => b.record_list(table, after, limit).await,
            Backend::Embedded(b) => b.record_list(table, after, limit).await,
        }
    }

    /// Removes expired records (part of the maintenance pass).
    pub(crate) async fn sweep_records(&self) -> Result<u64> {
        match self {
            Backend::Redis(b) => b.sweep_records().await,
            Backend::Embedded(b) => b.sweep_records().await,
        }
    }
}
