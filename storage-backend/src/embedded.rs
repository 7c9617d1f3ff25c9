//! The embedded backend: one redb file (or memory, for tests) holding the same model as Redis.
//!
//! Every metadata operation is one redb write transaction, committed durably together with its event.
//! Chunk values are written in non-durable transactions: redb makes them durable with the next durable
//! commit, and a crash before that loses the chunks together with the record of the session that
//! wrote them, so nothing dangles. redb is blocking, so every call runs on tokio's blocking pool.
//! Only this process can have the file open, so whatever sessions the file holds when it is opened were
//! left by a crash and are reclaimed at once; read pins live in memory.

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::backend::{
    CommitOutcome, CommitRequest, MaintenanceReport, OpenedRead, SessionStart, StoreUsage, Version,
};
use crate::chunkmap;
use crate::error::{ErrorKind, Result, StoreError};
use crate::outbox::{assemble, Event, EventFacts, EventKind, EventOrigin, EventPage, OutboxStatus};
use crate::path::StorePath;
use crate::types::{from_ms, now_ms, DirEntry, EntryKind, ListPage, Metadata, OpenOptions};
use crate::BackendSettings;

mod records;

const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
const DIRENTS: TableDefinition<(u64, &str), u64> = TableDefinition::new("dirents");
const VERSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("versions");
const CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("chunks");
const CHUNK_REFS: TableDefinition<u64, u64> = TableDefinition::new("chunk_refs");
/// (due time in ms, chunk id)
const GC: TableDefinition<(u64, u64), ()> = TableDefinition::new("gc");
/// session id -> base version id (0 = none)
const SESSIONS: TableDefinition<u64, u64> = TableDefinition::new("sessions");
/// (session id, chunk id) for every chunk a session wrote and no commit took over yet
const SESSION_CHUNKS: TableDefinition<(u64, u64), ()> = TableDefinition::new("session_chunks");
/// versions no file refers to any more, kept only while an in-memory read pin holds them
const ZOMBIES: TableDefinition<u64, ()> = TableDefinition::new("zombies");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Consumer cursors live among the counters under this prefix (`;` sorts right after `:`).
const CURSOR_PREFIX: &str = "cursor:";
const CURSOR_END: &str = "cursor;";

const ROOT: u64 = 1;
/// redb's page cache (its default is 1 GiB): big enough for metadata, small enough that the
/// process stays small while gigabytes of chunks stream through it.
const CACHE_BYTES: usize = 16 * 1024 * 1024;
const GC_BATCH: usize = 256;
/// Most events one trimming step looks at for their age (the rest wait for the next step).
const TRIM_BATCH: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Inode {
    dir: bool,
    mtime: u64,
    parent: u64,
    #[serde(default)]
    vid: u64,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    sha: Option<String>,
    #[serde(default = "yes")]
    complete: bool,
}

fn yes() -> bool {
    true
}

impl Inode {
    fn metadata(&self) -> Metadata {
        Metadata {
            kind: if self.dir {
                EntryKind::Directory
            } else {
                EntryKind::File
            },
            size: self.size,
            mtime: from_ms(self.mtime),
            version: self.vid,
            sha256: self.sha.clone(),
            complete: self.complete,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionRec {
    size: u64,
    chunk_size: u64,
    map: String,
    refs: u64,
}

struct Tables<'t> {
    inodes: Table<'t, u64, &'static [u8]>,
    dirents: Table<'t, (u64, &'static str), u64>,
    versions: Table<'t, u64, &'static [u8]>,
    chunks: Table<'t, u64, &'static [u8]>,
    chunk_refs: Table<'t, u64, u64>,
    gc: Table<'t, (u64, u64), ()>,
    sessions: Table<'t, u64, u64>,
    session_chunks: Table<'t, (u64, u64), ()>,
    zombies: Table<'t, u64, ()>,
    events: Table<'t, u64, &'static [u8]>,
    counters: Table<'t, &'static str, u64>,
    /// The read pins, locked from before the transaction looks at them until after it commits, so a
    /// reader can neither pin a version this transaction frees nor miss its commit.
    pins: Option<&'t HashMap<u64, u64>>,
}

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
    match e.into() {
        redb::Error::Io(io) => StoreError::unavailable(format!("the embedded store cannot read or write its file: {io}")),
        redb::Error::DatabaseAlreadyOpen => StoreError::unavailable(
            "the embedded store's file is already open in another filegate process; stop it or set storage.embedded.path to another file",
        ),
        other => StoreError::internal(format!("embedded store: {other}")),
    }
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

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction, pins: Option<&'t HashMap<u64, u64>>) -> Result<Self> {
        Ok(Tables {
            pins,
            inodes: txn.open_table(INODES).map_err(db_err)?,
            dirents: txn.open_table(DIRENTS).map_err(db_err)?,
            versions: txn.open_table(VERSIONS).map_err(db_err)?,
            chunks: txn.open_table(CHUNKS).map_err(db_err)?,
            chunk_refs: txn.open_table(CHUNK_REFS).map_err(db_err)?,
            gc: txn.open_table(GC).map_err(db_err)?,
            sessions: txn.open_table(SESSIONS).map_err(db_err)?,
            session_chunks: txn.open_table(SESSION_CHUNKS).map_err(db_err)?,
            zombies: txn.open_table(ZOMBIES).map_err(db_err)?,
            events: txn.open_table(EVENTS).map_err(db_err)?,
            counters: txn.open_table(COUNTERS).map_err(db_err)?,
        })
    }

    fn counter(&self, name: &str) -> Result<u64> {
        Ok(self
            .counters
            .get(name)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

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

    fn next(&mut self, name: &str) -> Result<u64> {
        let v = self.counter(name)? + 1;
        self.counters.insert(name, v).map_err(db_err)?;
        Ok(v)
    }

    fn inode(&self, ino: u64) -> Result<Option<Inode>> {
        get_inode(&self.inodes, ino)
    }

    fn put_inode(&mut self, ino: u64, inode: &Inode) -> Result<()> {
        let bytes = serde_json::to_vec(inode).expect("inode serialises");
        self.inodes.insert(ino, bytes.as_slice()).map_err(db_err)?;
        Ok(())
    }

    fn lookup(&self, segs: &[&str]) -> Result<(Option<u64>, u64)> {
        lookup(&self.inodes, &self.dirents, segs)
    }

    fn touch_dir(&mut self, dir: u64, now: u64) -> Result<()> {
        let mut node = self
            .inode(dir)?
            .ok_or_else(|| corrupt("missing directory"))?;
        node.mtime = now;
        self.put_inode(dir, &node)
    }

    fn link(&mut self, parent: u64, name: &str, ino: u64, now: u64) -> Result<()> {
        self.dirents.insert((parent, name), ino).map_err(db_err)?;
        self.touch_dir(parent, now)
    }

    fn unlink(&mut self, parent: u64, name: &str, now: u64) -> Result<()> {
        self.dirents.remove((parent, name)).map_err(db_err)?;
        self.touch_dir(parent, now)
    }

    fn is_empty_dir(&self, dir: u64) -> Result<bool> {
        let mut range = self
            .dirents
            .range::<(u64, &str)>((Bound::Included((dir, "")), Bound::Excluded((dir + 1, ""))))
            .map_err(db_err)?;
        Ok(range.next().is_none())
    }

    fn version(&self, vid: u64) -> Result<Option<VersionRec>> {
        get_version(&self.versions, vid)
    }

    fn put_version(&mut self, vid: u64, rec: &VersionRec) -> Result<()> {
        let bytes = serde_json::to_vec(rec).expect("version serialises");
        self.versions
            .insert(vid, bytes.as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    fn new_version(&mut self, size: u64, chunk_size: u64, chunks: &[u64]) -> Result<u64> {
        let vid = self.next("vid")?;
        for &id in chunks.iter().filter(|&&id| id != 0) {
            let refs = self
                .chunk_refs
                .get(id)
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(0);
            self.chunk_refs.insert(id, refs + 1).map_err(db_err)?;
        }
        let map = chunkmap::encode(chunks);
        self.put_version(
            vid,
            &VersionRec {
                size,
                chunk_size,
                map,
                refs: 1,
            },
        )?;
        Ok(vid)
    }

    fn version_info(&self, vid: u64, inode: &Inode) -> Result<Version> {
        let rec = self
            .version(vid)?
            .ok_or_else(|| corrupt("missing version"))?;
        Ok(Version {
            vid,
            size: rec.size,
            chunk_size: rec.chunk_size,
            chunks: chunkmap::decode(&rec.map)?,
            sha256: inode.sha.clone(),
            complete: inode.complete,
            mtime_ms: inode.mtime,
        })
    }

    /// Drops one reference; at zero the version's chunks are released, unless a reader pins it.
    fn release_version(&mut self, shared: &Shared, vid: u64, now: u64) -> Result<()> {
        if vid == 0 {
            return Ok(());
        }
        let Some(mut rec) = self.version(vid)? else {
            return Ok(());
        };
        rec.refs = rec.refs.saturating_sub(1);
        if rec.refs > 0 {
            return self.put_version(vid, &rec);
        }
        let pinned = self
            .pins
            .expect("version released without the pin lock")
            .contains_key(&vid);
        if pinned {
            self.put_version(vid, &rec)?;
            self.zombies.insert(vid, ()).map_err(db_err)?;
            shared.zombies.lock().unwrap().insert(vid);
            return Ok(());
        }
        self.free_version(vid, &rec, now + shared.settings.gc_grace.as_millis() as u64)
    }

    fn free_version(&mut self, vid: u64, rec: &VersionRec, due: u64) -> Result<()> {
        for id in chunkmap::decode(&rec.map)?
            .into_iter()
            .filter(|&id| id != 0)
        {
            let refs = self
                .chunk_refs
                .get(id)
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(0);
            if refs <= 1 {
                self.chunk_refs.remove(id).map_err(db_err)?;
                self.gc.insert((due, id), ()).map_err(db_err)?;
            } else {
                self.chunk_refs.insert(id, refs - 1).map_err(db_err)?;
            }
        }
        self.versions.remove(vid).map_err(db_err)?;
        self.zombies.remove(vid).map_err(db_err)?;
        Ok(())
    }

    /// Ends a write session: chunks it wrote that `keep` does not list are deleted at once (nobody
    /// ever saw them); its base version is released.
    fn end_session(
        &mut self,
        shared: &Shared,
        sid: u64,
        keep: &HashSet<u64>,
        now: u64,
    ) -> Result<bool> {
        let Some(base) = self
            .sessions
            .remove(sid)
            .map_err(db_err)?
            .map(|v| v.value())
        else {
            return Ok(false);
        };
        let written: Vec<u64> = self
            .session_chunks
            .extract_from_if((sid, 0)..=(sid, u64::MAX), |_, _| true)
            .map_err(db_err)?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<std::result::Result<_, _>>()
            .map_err(db_err)?;
        for id in written.into_iter().filter(|id| !keep.contains(id)) {
            self.chunks.remove(id).map_err(db_err)?;
        }
        self.release_version(shared, base, now)?;
        Ok(true)
    }

    fn emit(
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
    fn trim_history(&mut self, settings: &BackendSettings, now: u64) -> Result<()> {
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
                let event: Event =
                    serde_json::from_slice(v.value()).map_err(|_| corrupt("event record"))?;
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
    fn check_outbox(&self, limit: u64, user: &str) -> Result<()> {
        if limit == 0 {
            return Ok(());
        }
        let backlog = self.counter("seq")?.saturating_sub(self.counter("acked")?);
        if backlog >= limit {
            return Err(StoreError::unavailable(format!(
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

fn get_inode(inodes: &impl ReadableTable<u64, &'static [u8]>, ino: u64) -> Result<Option<Inode>> {
    match inodes.get(ino).map_err(db_err)? {
        Some(v) => Ok(Some(
            serde_json::from_slice(v.value()).map_err(|_| corrupt("inode record"))?,
        )),
        None => Ok(None),
    }
}

fn get_child(
    dirents: &impl ReadableTable<(u64, &'static str), u64>,
    dir: u64,
    name: &str,
) -> Result<Option<u64>> {
    Ok(dirents.get((dir, name)).map_err(db_err)?.map(|v| v.value()))
}

/// (inode of the entry or None, parent inode); for the root: (Some(ROOT), ROOT). Fails when a
/// parent is missing or is a file.
fn lookup(
    inodes: &impl ReadableTable<u64, &'static [u8]>,
    dirents: &impl ReadableTable<(u64, &'static str), u64>,
    segs: &[&str],
) -> Result<(Option<u64>, u64)> {
    let Some((last, parents)) = segs.split_last() else {
        return Ok((Some(ROOT), ROOT));
    };
    let mut ino = ROOT;
    for (i, seg) in parents.iter().enumerate() {
        let child = get_child(dirents, ino, seg)?.ok_or_else(|| not_found(&shown(segs, i + 1)))?;
        let node = get_inode(inodes, child)?.ok_or_else(|| corrupt("dangling directory entry"))?;
        if !node.dir {
            return Err(StoreError::new(
                ErrorKind::NotADirectory,
                format!("{}: not a directory", shown(segs, i + 1)),
            ));
        }
        ino = child;
    }
    Ok((get_child(dirents, ino, last)?, ino))
}

fn get_version(
    versions: &impl ReadableTable<u64, &'static [u8]>,
    vid: u64,
) -> Result<Option<VersionRec>> {
    match versions.get(vid).map_err(db_err)? {
        Some(v) => Ok(Some(
            serde_json::from_slice(v.value()).map_err(|_| corrupt("version record"))?,
        )),
        None => Ok(None),
    }
}

fn file_facts(inode: &Inode) -> EventFacts {
    EventFacts {
        size: Some(inode.size),
        sha256: inode.sha.clone(),
        complete: Some(inode.complete),
        version: Some(inode.vid),
        ..EventFacts::default()
    }
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
                            )))
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
                            )),
                        })?
                }
                None => Database::builder()
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .map_err(|e| StoreError::internal(format!("in-memory store: {e}")))?,
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
        .map_err(|e| StoreError::internal(format!("opening the embedded store panicked: {e}")))??;
        Ok(EmbeddedBackend {
            shared: Arc::new(shared),
            location,
        })
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
            .map_err(|e| StoreError::internal(format!("embedded store task failed: {e}")))?
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

    pub async fn stat(&self, path: &StorePath) -> Result<Metadata> {
        let path = path.clone();
        self.blocking(move |s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let inodes = txn.open_table(INODES).map_err(db_err)?;
            let dirents = txn.open_table(DIRENTS).map_err(db_err)?;
            let segs: Vec<&str> = path.segments().collect();
            let ino = lookup(&inodes, &dirents, &segs)?
                .0
                .ok_or_else(|| not_found(path.as_str()))?;
            Ok(get_inode(&inodes, ino)?
                .ok_or_else(|| corrupt("dangling entry"))?
                .metadata())
        })
        .await
    }

    pub async fn list(
        &self,
        dir: &StorePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        let dir = dir.clone();
        let after = after.map(str::to_string);
        let limit = limit.max(1);
        self.blocking(move |s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let inodes = txn.open_table(INODES).map_err(db_err)?;
            let dirents = txn.open_table(DIRENTS).map_err(db_err)?;
            let segs: Vec<&str> = dir.segments().collect();
            let ino = lookup(&inodes, &dirents, &segs)?
                .0
                .ok_or_else(|| not_found(dir.as_str()))?;
            if !get_inode(&inodes, ino)?
                .ok_or_else(|| corrupt("dangling entry"))?
                .dir
            {
                return Err(StoreError::new(
                    ErrorKind::NotADirectory,
                    format!("{dir}: not a directory"),
                ));
            }
            let start = match &after {
                Some(a) => Bound::Excluded((ino, a.as_str())),
                None => Bound::Included((ino, "")),
            };
            let mut entries = Vec::new();
            let mut more = false;
            for item in dirents
                .range::<(u64, &str)>((start, Bound::Excluded((ino + 1, ""))))
                .map_err(db_err)?
            {
                let (k, v) = item.map_err(db_err)?;
                if entries.len() == limit {
                    more = true;
                    break;
                }
                let node =
                    get_inode(&inodes, v.value())?.ok_or_else(|| corrupt("dangling entry"))?;
                entries.push(DirEntry {
                    name: k.value().1.to_string(),
                    metadata: node.metadata(),
                });
            }
            let next = if more {
                entries.last().map(|e| e.name.clone())
            } else {
                None
            };
            Ok(ListPage { entries, next })
        })
        .await
    }

    pub async fn mkdir(&self, path: &StorePath, origin: EventOrigin) -> Result<u64> {
        let path = path.clone();
        self.write(Durability::Immediate, move |s, t| {
            let segs: Vec<&str> = path.segments().collect();
            if segs.is_empty() {
                return Err(StoreError::new(
                    ErrorKind::AlreadyExists,
                    "/: the root directory always exists",
                ));
            }
            t.check_outbox(s.settings.outbox_limit, &origin.user)?;
            let (child, parent) = t.lookup(&segs)?;
            if let Some(child) = child {
                let what = if t.inode(child)?.is_some_and(|n| n.dir) {
                    "directory"
                } else {
                    "file"
                };
                return Err(StoreError::new(
                    ErrorKind::AlreadyExists,
                    format!("{path}: a {what} with that name exists"),
                ));
            }
            let now = now_ms();
            let ino = t.next("ino")?;
            t.put_inode(
                ino,
                &Inode {
                    dir: true,
                    mtime: now,
                    parent,
                    vid: 0,
                    size: 0,
                    sha: None,
                    complete: true,
                },
            )?;
            t.link(parent, segs[segs.len() - 1], ino, now)?;
            t.emit(
                EventKind::DirCreated,
                path.to_string(),
                origin,
                EventFacts::default(),
            )
        })
        .await
    }

    pub async fn rmdir(&self, path: &StorePath, origin: EventOrigin) -> Result<u64> {
        let path = path.clone();
        self.write(Durability::Immediate, move |s, t| {
            let segs: Vec<&str> = path.segments().collect();
            if segs.is_empty() {
                return Err(StoreError::new(
                    ErrorKind::InvalidArgument,
                    "/: the root directory cannot be removed",
                ));
            }
            t.check_outbox(s.settings.outbox_limit, &origin.user)?;
            let (child, parent) = t.lookup(&segs)?;
            let child = child.ok_or_else(|| not_found(path.as_str()))?;
            if !t
                .inode(child)?
                .ok_or_else(|| corrupt("dangling entry"))?
                .dir
            {
                return Err(StoreError::new(
                    ErrorKind::NotADirectory,
                    format!("{path}: not a directory (delete files with delete)"),
                ));
            }
            if !t.is_empty_dir(child)? {
                return Err(StoreError::new(
                    ErrorKind::DirectoryNotEmpty,
                    format!("{path}: directory not empty"),
                ));
            }
            t.unlink(parent, segs[segs.len() - 1], now_ms())?;
            t.inodes.remove(child).map_err(db_err)?;
            t.emit(
                EventKind::DirDeleted,
                path.to_string(),
                origin,
                EventFacts::default(),
            )
        })
        .await
    }

    pub async fn delete(&self, path: &StorePath, origin: EventOrigin) -> Result<u64> {
        let path = path.clone();
        self.write(Durability::Immediate, move |s, t| {
            let segs: Vec<&str> = path.segments().collect();
            if segs.is_empty() {
                return Err(StoreError::new(
                    ErrorKind::IsADirectory,
                    "/: is a directory",
                ));
            }
            t.check_outbox(s.settings.outbox_limit, &origin.user)?;
            let (child, parent) = t.lookup(&segs)?;
            let child = child.ok_or_else(|| not_found(path.as_str()))?;
            let node = t.inode(child)?.ok_or_else(|| corrupt("dangling entry"))?;
            if node.dir {
                return Err(StoreError::new(
                    ErrorKind::IsADirectory,
                    format!("{path}: is a directory (remove it with rmdir)"),
                ));
            }
            let now = now_ms();
            t.unlink(parent, segs[segs.len() - 1], now)?;
            t.release_version(s, node.vid, now)?;
            t.inodes.remove(child).map_err(db_err)?;
            t.emit(
                EventKind::FileDeleted,
                path.to_string(),
                origin,
                file_facts(&node),
            )
        })
        .await
    }

    pub async fn rename(
        &self,
        from: &StorePath,
        to: &StorePath,
        replace: bool,
        origin: EventOrigin,
    ) -> Result<u64> {
        let (from, to) = (from.clone(), to.clone());
        self.write(Durability::Immediate, move |s, t| {
            let fsegs: Vec<&str> = from.segments().collect();
            let tsegs: Vec<&str> = to.segments().collect();
            t.check_outbox(s.settings.outbox_limit, &origin.user)?;
            let (src, src_parent) = t.lookup(&fsegs)?;
            let src = src.ok_or_else(|| not_found(from.as_str()))?;
            let node = t.inode(src)?.ok_or_else(|| corrupt("dangling entry"))?;
            let kind = if node.dir {
                EventKind::DirRenamed
            } else {
                EventKind::FileRenamed
            };
            let mut facts = if node.dir {
                EventFacts::default()
            } else {
                file_facts(&node)
            };
            facts.old_path = Some(from.to_string());
            let (dst, dst_parent) = t.lookup(&tsegs)?;
            let now = now_ms();
            if let Some(dst) = dst {
                if dst == src {
                    return t.emit(kind, to.to_string(), origin, facts);
                }
                if !replace {
                    return Err(StoreError::new(
                        ErrorKind::AlreadyExists,
                        format!("{to}: already exists"),
                    ));
                }
                let dnode = t.inode(dst)?.ok_or_else(|| corrupt("dangling entry"))?;
                match (node.dir, dnode.dir) {
                    (true, false) => {
                        return Err(StoreError::new(
                            ErrorKind::NotADirectory,
                            format!("{to}: is a file; cannot replace it with a directory"),
                        ))
                    }
                    (false, true) => {
                        return Err(StoreError::new(
                            ErrorKind::IsADirectory,
                            format!("{to}: is a directory; cannot replace it with a file"),
                        ))
                    }
                    (true, true) if !t.is_empty_dir(dst)? => {
                        return Err(StoreError::new(
                            ErrorKind::DirectoryNotEmpty,
                            format!("{to}: directory not empty"),
                        ))
                    }
                    _ => {}
                }
                t.release_version(s, dnode.vid, now)?;
                t.inodes.remove(dst).map_err(db_err)?;
                t.unlink(dst_parent, tsegs[tsegs.len() - 1], now)?;
                facts.replaced = true;
            }
            t.unlink(src_parent, fsegs[fsegs.len() - 1], now)?;
            t.link(dst_parent, tsegs[tsegs.len() - 1], src, now)?;
            let mut node = node;
            node.parent = dst_parent;
            t.put_inode(src, &node)?;
            t.emit(kind, to.to_string(), origin, facts)
        })
        .await
    }

    pub async fn set_mtime(
        &self,
        path: &StorePath,
        mtime_ms: u64,
        origin: EventOrigin,
    ) -> Result<u64> {
        let path = path.clone();
        self.write(Durability::Immediate, move |s, t| {
            let segs: Vec<&str> = path.segments().collect();
            t.check_outbox(s.settings.outbox_limit, &origin.user)?;
            let ino = t.lookup(&segs)?.0.ok_or_else(|| not_found(path.as_str()))?;
            let mut node = t.inode(ino)?.ok_or_else(|| corrupt("dangling entry"))?;
            node.mtime = mtime_ms;
            t.put_inode(ino, &node)?;
            let facts = if node.dir {
                EventFacts::default()
            } else {
                file_facts(&node)
            };
            t.emit(EventKind::FileAttributes, path.to_string(), origin, facts)
        })
        .await
    }

    pub async fn open_session(&self, path: &StorePath, opts: OpenOptions) -> Result<SessionStart> {
        let path = path.clone();
        self.write(Durability::None, move |_, t| {
            let segs: Vec<&str> = path.segments().collect();
            if segs.is_empty() {
                return Err(StoreError::new(
                    ErrorKind::IsADirectory,
                    "/: is a directory",
                ));
            }
            let (child, _) = t.lookup(&segs)?;
            let mut base = None;
            match child {
                Some(ino) => {
                    let node = t.inode(ino)?.ok_or_else(|| corrupt("dangling entry"))?;
                    if node.dir {
                        return Err(StoreError::new(
                            ErrorKind::IsADirectory,
                            format!("{path}: is a directory"),
                        ));
                    }
                    if opts.create_new {
                        return Err(StoreError::new(
                            ErrorKind::AlreadyExists,
                            format!("{path}: already exists"),
                        ));
                    }
                    if !opts.truncate {
                        let version = t.version_info(node.vid, &node)?;
                        let mut rec = t
                            .version(node.vid)?
                            .ok_or_else(|| corrupt("missing version"))?;
                        rec.refs += 1;
                        t.put_version(node.vid, &rec)?;
                        base = Some(version);
                    }
                }
                None if !(opts.create || opts.create_new) => {
                    return Err(StoreError::new(
                        ErrorKind::NotFound,
                        format!("{path}: no such file"),
                    ));
                }
                None => {}
            }
            let sid = t.next("sid")?;
            t.sessions
                .insert(sid, base.as_ref().map(|b| b.vid).unwrap_or(0))
                .map_err(db_err)?;
            Ok(SessionStart { sid, base })
        })
        .await
    }

    pub async fn alloc_ids(&self, _sid: u64, n: u64) -> Result<u64> {
        Ok(self.shared.next_chunk.fetch_add(n, Ordering::Relaxed) + 1)
    }

    pub async fn put_chunk(&self, sid: u64, id: u64, data: Bytes) -> Result<()> {
        self.write(Durability::None, move |_, t| {
            if t.sessions.get(sid).map_err(db_err)?.is_none() {
                return Err(StoreError::unavailable(
                    "the write session has ended; upload again",
                ));
            }
            t.chunks.insert(id, data.as_ref()).map_err(db_err)?;
            t.session_chunks.insert((sid, id), ()).map_err(db_err)?;
            if t.counter("cid")? < id {
                t.counters.insert("cid", id).map_err(db_err)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn get_chunk(&self, id: u64) -> Result<Option<Bytes>> {
        self.blocking(move |s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let table = txn.open_table(CHUNKS).map_err(db_err)?;
            Ok(table
                .get(id)
                .map_err(db_err)?
                .map(|v| Bytes::copy_from_slice(v.value())))
        })
        .await
    }

    pub async fn commit(&self, req: CommitRequest<'_>) -> Result<CommitOutcome> {
        let path = req.path.clone();
        let chunks = req.chunks.to_vec();
        let CommitRequest {
            sid,
            size,
            chunk_size,
            sha256,
            complete,
            mtime_ms,
            origin,
            ..
        } = req;
        self.write(Durability::Immediate, move |s, t| {
            let segs: Vec<&str> = path.segments().collect();
            if segs.is_empty() {
                return Err(StoreError::new(
                    ErrorKind::IsADirectory,
                    "/: is a directory",
                ));
            }
            t.check_outbox(s.settings.outbox_limit, &origin.user)?;
            if t.sessions.get(sid).map_err(db_err)?.is_none() {
                return Err(StoreError::unavailable(
                    "the write session has ended; upload again",
                ));
            }
            let (child, parent) = t.lookup(&segs)?;
            let existing = match child {
                Some(ino) => Some((ino, t.inode(ino)?.ok_or_else(|| corrupt("dangling entry"))?)),
                None => None,
            };
            if existing.as_ref().is_some_and(|(_, n)| n.dir) {
                return Err(StoreError::new(
                    ErrorKind::IsADirectory,
                    format!("{path}: a directory was created at this path meanwhile"),
                ));
            }
            let now = now_ms();
            let vid = t.new_version(size, chunk_size, &chunks)?;
            let keep: HashSet<u64> = chunks.iter().copied().filter(|&id| id != 0).collect();
            t.end_session(s, sid, &keep, now)?;
            let created = existing.is_none();
            let ino = match existing {
                Some((ino, node)) => {
                    t.release_version(s, node.vid, now)?;
                    ino
                }
                None => {
                    let ino = t.next("ino")?;
                    t.link(parent, segs[segs.len() - 1], ino, now)?;
                    ino
                }
            };
            let node = Inode {
                dir: false,
                mtime: mtime_ms,
                parent,
                vid,
                size,
                sha: sha256,
                complete,
            };
            t.put_inode(ino, &node)?;
            let kind = match (complete, created) {
                (false, _) => EventKind::FileIncomplete,
                (true, true) => EventKind::FileCreated,
                (true, false) => EventKind::FileModified,
            };
            let mut facts = file_facts(&node);
            facts.replaced = !created;
            let seq = t.emit(kind, path.to_string(), origin, facts)?;
            Ok(CommitOutcome { seq, vid, created })
        })
        .await
    }

    /// The embedded store tracks the chunks a session wrote itself (`session_chunks`).
    pub async fn end_session(&self, sid: u64, _written: &[u64]) -> Result<()> {
        self.write(Durability::Immediate, move |s, t| {
            t.end_session(s, sid, &HashSet::new(), now_ms()).map(|_| ())
        })
        .await
    }

    pub async fn open_read(&self, path: &StorePath, pin: bool) -> Result<OpenedRead> {
        let path = path.clone();
        self.blocking(move |s| {
            // The pin lock is held across the lookup so that no commit can free the version between
            // reading it and pinning it.
            let mut pins = s.pins.lock().unwrap();
            let txn = s.db.begin_read().map_err(db_err)?;
            let inodes = txn.open_table(INODES).map_err(db_err)?;
            let dirents = txn.open_table(DIRENTS).map_err(db_err)?;
            let versions = txn.open_table(VERSIONS).map_err(db_err)?;
            let segs: Vec<&str> = path.segments().collect();
            let ino = lookup(&inodes, &dirents, &segs)?
                .0
                .ok_or_else(|| not_found(path.as_str()))?;
            let node = get_inode(&inodes, ino)?.ok_or_else(|| corrupt("dangling entry"))?;
            if node.dir {
                return Err(StoreError::new(
                    ErrorKind::IsADirectory,
                    format!("{path}: is a directory"),
                ));
            }
            let rec =
                get_version(&versions, node.vid)?.ok_or_else(|| corrupt("missing version"))?;
            if pin {
                *pins.entry(node.vid).or_insert(0) += 1;
            }
            Ok(OpenedRead {
                version: Version {
                    vid: node.vid,
                    size: rec.size,
                    chunk_size: rec.chunk_size,
                    chunks: chunkmap::decode(&rec.map)?,
                    sha256: node.sha.clone(),
                    complete: node.complete,
                    mtime_ms: node.mtime,
                },
                pin: pin.then_some(node.vid),
            })
        })
        .await
    }

    pub async fn unpin(&self, vid: u64) -> Result<()> {
        let last = {
            let mut pins = self.shared.pins.lock().unwrap();
            match pins.get_mut(&vid) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    pins.remove(&vid);
                    true
                }
                None => false,
            }
        };
        if last && self.shared.zombies.lock().unwrap().remove(&vid) {
            self.write(Durability::None, move |s, t| {
                // Pinned again meanwhile: it stays a zombie until that reader is done too.
                if s.pins.lock().unwrap().contains_key(&vid) {
                    s.zombies.lock().unwrap().insert(vid);
                    return Ok(());
                }
                if let Some(rec) = t.version(vid)? {
                    t.free_version(vid, &rec, now_ms() + s.settings.gc_grace.as_millis() as u64)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

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
                out.push(serde_json::from_slice(v.value()).map_err(|_| corrupt("event record"))?);
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
                events
                    .push(serde_json::from_slice(v.value()).map_err(|_| corrupt("event record"))?);
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
                let event: UserOf =
                    serde_json::from_slice(v.value()).map_err(|_| corrupt("event record"))?;
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

    pub async fn maintain(&self) -> Result<MaintenanceReport> {
        // Events age out of the history even when no new event is acknowledged.
        self.write(Durability::None, |s, t| {
            t.trim_history(&s.settings, now_ms())
        })
        .await?;
        let mut report = MaintenanceReport::default();
        loop {
            let deleted = self
                .write(Durability::None, |_, t| {
                    let now = now_ms();
                    let due: Vec<(u64, u64)> =
                        t.gc.range((0, 0)..=(now, u64::MAX))
                            .map_err(db_err)?
                            .take(GC_BATCH)
                            .map(|r| r.map(|(k, _)| k.value()))
                            .collect::<std::result::Result<_, _>>()
                            .map_err(db_err)?;
                    for &(when, id) in &due {
                        t.chunks.remove(id).map_err(db_err)?;
                        t.gc.remove((when, id)).map_err(db_err)?;
                    }
                    Ok(due.len())
                })
                .await?;
            report.chunks_deleted += deleted as u64;
            if deleted < GC_BATCH {
                return Ok(report);
            }
        }
    }

    pub async fn release_owner(&self) -> Result<()> {
        // Make whatever non-durable work is left durable, so a clean shutdown loses nothing.
        self.write(Durability::Immediate, |_, _| Ok(())).await
    }

    pub async fn usage(&self) -> Result<StoreUsage> {
        self.blocking(|s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let len = |def: TableDefinition<u64, &[u8]>| -> Result<u64> {
                txn.open_table(def).map_err(db_err)?.len().map_err(db_err)
            };
            let stored_chunks = len(CHUNKS)?;
            let referenced_chunks = txn
                .open_table(CHUNK_REFS)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?;
            let garbage_chunks = txn.open_table(GC).map_err(db_err)?.len().map_err(db_err)?;
            let sessions = txn
                .open_table(SESSIONS)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?
                + s.pins.lock().unwrap().values().sum::<u64>();
            Ok(StoreUsage {
                referenced_chunks,
                garbage_chunks,
                sessions,
                stored_chunks,
            })
        })
        .await
    }

    pub async fn chunk_inventory(&self) -> Result<(Vec<u64>, Vec<u64>)> {
        self.blocking(|s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let keys = |t: redb::ReadOnlyTable<u64, &[u8]>| -> Result<Vec<u64>> {
                t.iter()
                    .map_err(db_err)?
                    .map(|r| r.map(|(k, _)| k.value()).map_err(db_err))
                    .collect()
            };
            let referenced: Vec<u64> = txn
                .open_table(CHUNK_REFS)
                .map_err(db_err)?
                .iter()
                .map_err(db_err)?
                .map(|r| r.map(|(k, _)| k.value()).map_err(db_err))
                .collect::<Result<_>>()?;
            Ok((referenced, keys(txn.open_table(CHUNKS).map_err(db_err)?)?))
        })
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
        .map_err(|e| StoreError::internal(format!("embedded store: {e}")))?;
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
