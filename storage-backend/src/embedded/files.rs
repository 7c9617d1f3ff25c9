//! File content: versions and the chunk references they hold, write sessions, chunk values, the
//! commit that swaps a file's version, and read pins that keep an old version's chunks alive.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use redb::{Durability, ReadableDatabase, ReadableTable};

use super::outbox::file_facts;
use super::tables::{
    get_inode, get_version, lookup, Inode, VersionRec, CHUNKS, DIRENTS, INODES, VERSIONS,
};
use super::{corrupt, db_err, not_found, EmbeddedBackend, Shared, Tables};
use crate::chunkmap;
use crate::error::{ErrorKind, Result, StoreError};
use crate::outbox::EventKind;
use crate::path::StorePath;
use crate::seam::{CommitOutcome, CommitRequest, OpenedRead, SessionStart, Version};
use crate::types::{now_ms, OpenOptions};

impl<'t> Tables<'t> {
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
    pub(super) fn release_version(&mut self, shared: &Shared, vid: u64, now: u64) -> Result<()> {
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

    pub(super) fn free_version(&mut self, vid: u64, rec: &VersionRec, due: u64) -> Result<()> {
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

    /// Registers a write session pinning version `base` (0: none); its id.
    fn new_session(&mut self, base: u64) -> Result<u64> {
        let sid = self.next("sid")?;
        self.sessions.insert(sid, base).map_err(db_err)?;
        Ok(sid)
    }

    /// Ends a write session: chunks it wrote that `keep` does not list are deleted at once (nobody
    /// ever saw them); its base version is released.
    pub(super) fn end_session(
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
}

impl EmbeddedBackend {
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
            let sid = t.new_session(base.as_ref().map_or(0, |b| b.vid))?;
            Ok(SessionStart { sid, base })
        })
        .await
    }

    /// A session for an upload whose open registered none (it skipped the path check: `KnownDirs`
    /// in `inner.rs`), taken before its first chunk is stored so that a crash reclaims its chunks.
    pub async fn register_session(&self) -> Result<u64> {
        self.write(Durability::None, |_, t| t.new_session(0)).await
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
        self.commit_with(req, None).await
    }

    /// A file's only chunk and its commit in one durable transaction: a small file costs one
    /// transaction (and one fsync), and a failed commit leaves no chunk behind.
    pub async fn put_and_commit(
        &self,
        req: CommitRequest<'_>,
        id: u64,
        data: Bytes,
    ) -> Result<CommitOutcome> {
        self.commit_with(req, Some((id, data))).await
    }

    async fn commit_with(
        &self,
        req: CommitRequest<'_>,
        chunk: Option<(u64, Bytes)>,
    ) -> Result<CommitOutcome> {
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
            // Session 0: none was needed (a file that fits in one chunk, written here).
            if sid != 0 && t.sessions.get(sid).map_err(db_err)?.is_none() {
                return Err(StoreError::unavailable(
                    "the write session has ended; upload again",
                ));
            }
            if let Some((id, data)) = &chunk {
                t.chunks.insert(*id, data.as_ref()).map_err(db_err)?;
                if t.counter("cid")? < *id {
                    t.counters.insert("cid", *id).map_err(db_err)?;
                }
            }
            let (child, parent) = t.lookup(&segs)?;
            let existing = match child {
                Some(ino) => Some((ino, t.inode(ino)?.ok_or_else(|| corrupt("dangling entry"))?)),
                None => None,
            };
            if existing.as_ref().is_some_and(|(_, n)| n.dir) {
                return Err(StoreError::new(
                    ErrorKind::IsADirectory,
                    format!("{path}: is a directory"),
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
        if sid == 0 {
            return Ok(()); // never registered: it stored no chunk
        }
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
}
