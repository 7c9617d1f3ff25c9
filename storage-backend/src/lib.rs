//! filegate's storage core: a chunked virtual filesystem with atomic commits and an event outbox,
//! over Redis or an embedded redb file.
//!
//! Front-ends call [`Store`] for everything. Files are cut into chunks; a write session writes chunks
//! nobody can see yet and ends in one atomic commit that swaps the file's version and records the
//! change's event in the outbox. `docs/storage.md` describes the key layout, the commit protocol,
//! the invariants and crash recovery.

// Layers, each importing only those below it: `store` and `records` (the API) → `read`, `write` →
// `inner` → `backends` (the one place naming both backends) → `embedded`, `redis` → `seam`,
// `chunkmap`, `outbox`, `path`, `types`, `error`.
mod backends;
mod chunkmap;
pub mod config;
mod digest;
mod embedded;
mod error;
mod inner;
mod mask;
mod outbox;
mod path;
mod read;
mod records;
mod redis;
mod seam;
mod store;
mod types;
mod write;

/// The one parser of Redis URLs, for the gateway's configuration check and the backend alike.
pub use crate::redis::url as redis_url;
pub use config::{BackendConfig, EmbeddedConfig, RedisConfig, StoreConfig, MAX_HOLE_BYTES};
pub use error::{ErrorKind, Reason, Result, StoreError};
pub use mask::{mask_url_list, mask_url_password};
pub use outbox::{Event, EventKind, EventPage, OutboxStatus};
pub use path::{StorePath, MAX_NAME_BYTES, MAX_PATH_BYTES};
pub use read::{ChunkStream, FileReader};
pub use records::{MAX_RECORD_KEY, MAX_RECORD_VALUE};
pub use seam::{MaintenanceReport, StoreUsage};
pub use store::{IntegrityReport, Store};
pub use types::{
    ChangeContext, CommitInfo, CommitOptions, DirEntry, EntryKind, ListPage, Metadata, OpenOptions,
};
pub use write::WriteSession;
