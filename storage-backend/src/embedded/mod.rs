//! The embedded backend: one redb file (or memory, for tests) holding the same model as Redis.
//!
//! Every metadata operation is one redb write transaction, committed durably together with its event.
//! Chunk values are written in non-durable transactions: redb makes them durable with the next durable
//! commit, and a crash before that loses the chunks together with the record of the session that
//! wrote them, so nothing dangles. redb is blocking, so every call runs on tokio's blocking pool.
//! Only this process can have the file open, so whatever sessions the file holds when it is opened were
//! left by a crash and are reclaimed at once; read pins live in memory.
//!
//! Opening, transactions and recovery are here; the tables and their records in `tables`, and the
//! operations by what they touch: `namespace`, `files` (versions, sessions, chunks, commits,
//! reads), `outbox`, `maintenance`, `records`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use crate::error::{Result, StoreError};
use crate::seam::BackendSettings;
use crate::types::now_ms;

use tables::{Inode, Tables};

mod files;
mod maintenance;
mod namespace;
mod outbox;
mod records;
mod tables;

const ROOT: u64 = 1;
/// redb's page cache (its default is 1 GiB): big enough for metadata, small enough that the
/// process stays small while gigabytes of chunks stream through it.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// State shared with blocking closures.
struct Shared {
    db: Database,
    settings: BackendSettings,
    /// Read pins: version id -> number of open readers.
    pins: Mutex<HashMap<u64, u64>>,
    /// Versions whose chunks wait for their last pin to go.
    zombies: Mutex<HashSet<u64>>,
    next_chunk: AtomicU64,
}

pub(crate) struct EmbeddedBackend {
    shared: Arc<Shared>,
    location: Option<PathBuf>,
}

fn db_err(e: impl Into<redb::Error>) -> StoreError {
    let e = e.into();
    let error = match &e {
        redb::Error::Io(io) => StoreError::unavailable(format!("the embedded store cannot read or write its file: {io}")),
        redb::Error::DatabaseAlreadyOpen => StoreError::unavailable(
            "the embedded store's file is already open in another filegate process; stop it or set storage.embedded.path to another file",
        ),
        other => StoreError::internal(format!("embedded store: {other}")),
    };
    error.with_source(e)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::internal(format!("embedded store is corrupt: {what}"))
}

fn not_found(path: &str) -> StoreError {
    StoreError::not_found(path)
}

fn shown(segs: &[&str], n: usize) -> String {
    format!("/{}", segs[..n].join("/"))
}

impl EmbeddedBackend {
    pub async fn open(path: Option<PathBuf>, settings: BackendSettings) -> Result<Self> {
        let location = path.clone();
        let shared = tokio::task::spawn_blocking(move || -> Result<Shared> {
            let db = match &path {
                Some(p) => {
                    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::os::unix::fs::DirBuilderExt::mode(
                            std::fs::DirBuilder::new().recursive(true),
                            0o700,
                        )
                        .create(dir)
                        .map_err(|e| {
                            StoreError::unavailable(format!(
                                "cannot create directory {} for the embedded store: {e}",
                                dir.display()
                            ))
                            .with_source(e)
                        })?;
                    }
                    // A new store file is the gateway user's alone (redb would create it 0644):
                    // it holds every user's files. redb initialises an empty file as a new store.
                    match std::os::unix::fs::OpenOptionsExt::mode(
                        std::fs::OpenOptions::new().write(true).create_new(true),
                        0o600,
                    )
                    .open(p)
                    {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => {
                            return Err(StoreError::unavailable(format!(
                                "cannot create the embedded store {}: {e}",
                                p.display()
                            ))
                            .with_source(e))
                        }
                    }
                    Database::builder()
                        .set_cache_size(CACHE_BYTES)
                        .create(p)
                        .map_err(|e| match e {
                            redb::DatabaseError::DatabaseAlreadyOpen => {
                                db_err(redb::Error::DatabaseAlreadyOpen)
                            }
                            other => StoreError::unavailable(format!(
                                "cannot open the embedded store {}: {other}",
                                p.display()
                            ))
                            .with_source(other),
                        })?
                }
                None => Database::builder()
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .map_err(|e| {
                        StoreError::internal(format!("in-memory store: {e}")).with_source(e)
                    })?,
            };
            let shared = Shared {
                db,
                settings,
                pins: Mutex::new(HashMap::new()),
                zombies: Mutex::new(HashSet::new()),
                next_chunk: AtomicU64::new(0),
            };
            recover(&shared)?;
            Ok(shared)
        })
        .await
        .map_err(|e| {
            StoreError::internal(format!("opening the embedded store panicked: {e}")).with_source(e)
        })??;
        Ok(EmbeddedBackend {
            shared: Arc::new(shared),
            location,
        })
    }

    /// redb keeps a value in a power-of-two run of pages, so a value of exactly 1 MiB (plus its few bytes
    /// of overhead) would take 2 MiB. Chunks of the embedded store are kept 4 KiB under the configured size.
    pub fn chunk_size(configured: u64) -> u64 {
        if configured >= 64 * 1024 {
            configured - 4096
        } else {
            configured
        }
    }

    pub fn describe(&self) -> String {
        match &self.location {
            Some(p) => format!("embedded at {}", p.display()),
            None => "embedded in memory".to_string(),
        }
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(|e| {
                StoreError::internal(format!("embedded store task failed: {e}")).with_source(e)
            })?
    }

    /// Runs `f` in one write transaction and commits it with the given durability.
    async fn write<R: Send + 'static>(
        &self,
        durability: Durability,
        f: impl FnOnce(&Shared, &mut Tables<'_>) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.blocking(move |shared| write_txn(shared, durability, f))
            .await
    }

    pub async fn ping(&self) -> Result<()> {
        self.blocking(|s| s.db.begin_read().map(|_| ()).map_err(db_err))
            .await
    }
}

/// Runs `f` in one write transaction. Unless `durability` is `None` (chunk data and garbage
/// collection, which never release versions), the read-pin lock is held through the commit.
fn write_txn<R>(
    shared: &Shared,
    durability: Durability,
    f: impl FnOnce(&Shared, &mut Tables<'_>) -> Result<R>,
) -> Result<R> {
    let mut txn = shared.db.begin_write().map_err(db_err)?;
    txn.set_durability(durability)
        .map_err(|e| StoreError::internal(format!("embedded store: {e}")).with_source(e))?;
    let guard = matches!(durability, Durability::Immediate).then(|| shared.pins.lock().unwrap());
    let mut tables = Tables::open(&txn, guard.as_deref())?;
    let result = f(shared, &mut tables);
    drop(tables);
    let outcome = match result {
        Ok(r) => txn.commit().map_err(db_err).map(|_| r),
        Err(e) => txn.abort().map_err(db_err).and(Err(e)),
    };
    drop(guard);
    outcome
}

/// Brings a freshly opened file to a clean state: creates the root, and ends every session and pin a
/// previous run left behind (only this process can have the file open, so they are all dead).
fn recover(shared: &Shared) -> Result<()> {
    write_txn(shared, Durability::Immediate, |s, t| {
        let now = now_ms();
        if t.inode(ROOT)?.is_none() {
            t.put_inode(
                ROOT,
                &Inode {
                    dir: true,
                    mtime: now,
                    parent: ROOT,
                    vid: 0,
                    size: 0,
                    sha: None,
                    complete: true,
                },
            )?;
            t.counters.insert("ino", ROOT).map_err(db_err)?;
        }
        let sids: Vec<u64> = t
            .sessions
            .iter()
            .map_err(db_err)?
            .map(|r| r.map(|(k, _)| k.value()).map_err(db_err))
            .collect::<Result<_>>()?;
        if !sids.is_empty() {
            tracing::info!(
                sessions = sids.len(),
                "reclaiming uploads left unfinished by the previous run"
            );
        }
        for sid in sids {
            t.end_session(s, sid, &HashSet::new(), now)?;
        }
        let zombies: Vec<u64> = t
            .zombies
            .iter()
            .map_err(db_err)?
            .map(|r| r.map(|(k, _)| k.value()).map_err(db_err))
            .collect::<Result<_>>()?;
        for vid in zombies {
            if let Some(rec) = t.version(vid)? {
                t.free_version(vid, &rec, now)?;
            }
        }
        let max_chunk = t
            .chunks
            .last()
            .map_err(db_err)?
            .map(|(k, _)| k.value())
            .unwrap_or(0);
        s.next_chunk
            .store(max_chunk.max(t.counter("cid")?), Ordering::Relaxed);
        Ok(())
    })
}
