//! filegate's storage core: a chunked virtual filesystem with atomic commits and an event outbox,
//! over Redis or an embedded redb file.
//!
//! Front-ends call [`Store`] for everything. Files are cut into chunks; a write session writes chunks
//! nobody can see yet and ends in one atomic commit that swaps the file's version and records the
//! change's event in the outbox. `docs/storage.md` describes the key layout, the commit protocol,
//! the invariants and crash recovery.

mod backend;
mod chunkmap;
pub mod config;
mod digest;
mod embedded;
mod error;
mod outbox;
mod path;
mod read;
mod records;
mod redis;
mod store;
mod types;
mod write;

pub use backend::{MaintenanceReport, StoreUsage};
pub use config::{BackendConfig, EmbeddedConfig, RedisConfig, StoreConfig};
pub use error::{ErrorKind, Result, StoreError};
pub use outbox::{Event, EventKind, EventPage, OutboxStatus};
pub use path::{StorePath, MAX_NAME_BYTES, MAX_PATH_BYTES};
pub use read::{ChunkStream, FileReader};
pub use records::{MAX_RECORD_KEY, MAX_RECORD_VALUE};
pub use store::{IntegrityReport, Store};
pub use types::{
    ChangeContext, CommitInfo, CommitOptions, DirEntry, EntryKind, ListPage, Metadata, OpenOptions,
};
pub use write::{WriteSession, MAX_HOLE_BYTES};

/// What both backends need to know beyond their own connection settings.
#[derive(Debug, Clone)]
pub(crate) struct BackendSettings {
    pub namespace: String,
    pub gc_grace: std::time::Duration,
    pub orphan_timeout: std::time::Duration,
    pub outbox_limit: u64,
    /// Bounds of the history of acknowledged events.
    pub history_max: u64,
    pub history_age: std::time::Duration,
}
