//! The seam between the store's chunk logic and the two backends: what crosses it, both ways.
//!
//! Each metadata operation is one atomic step in the backend (a Lua script in Redis, a write
//! transaction in redb), and every one that changes the namespace records its event in that step.
//! Chunk data moves separately (`put_chunk`/`get_chunk`) and becomes visible only through a commit.
//! Nothing here knows either backend, so each backend builds on it without seeing the other;
//! `backends.rs` is the one place that names both.

use std::time::Duration;

use crate::outbox::EventOrigin;
use crate::path::StorePath;

/// What both backends need to know beyond their own connection settings.
#[derive(Debug, Clone)]
pub(crate) struct BackendSettings {
    pub namespace: String,
    pub gc_grace: Duration,
    pub orphan_timeout: Duration,
    pub outbox_limit: u64,
    /// Bounds of the history of acknowledged events.
    pub history_max: u64,
    pub history_age: Duration,
}

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
