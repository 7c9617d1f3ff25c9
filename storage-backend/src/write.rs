//! Write sessions: bytes go into chunks nobody can see until one atomic commit publishes them.
//!
//! A session starts from nothing (create/truncate) or from the file's current version (append,
//! resume, random access), which it pins. Writes land in chunk-sized buffers; a buffer that fills up,
//! or the oldest one when too many are open, is stored as a new chunk in the background while the
//! client keeps sending. Memory per session is therefore at most (`MAX_DIRTY` + `MAX_IN_FLIGHT`) chunks,
//! whatever the file's size. Chunks are immutable: rewriting part of a chunk stores a new one, so a
//! reader of the committed version never sees a mix.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

use crate::chunkmap::{self, chunk_count, fit};
use crate::digest::ChunkHasher;
use crate::error::{ErrorKind, Result, StoreError};
use crate::inner::{origin, Inner};
use crate::path::StorePath;
use crate::seam::{CommitRequest, SessionStart, Version};
use crate::types::{to_ms, ChangeContext, CommitInfo, CommitOptions, OpenOptions};

/// Chunk buffers a session keeps open for writing.
const MAX_DIRTY: usize = 4;
/// Chunks being stored in the background at once, per session.
const MAX_IN_FLIGHT: usize = 4;
/// Largest batch of chunk ids reserved in one trip.
const MAX_ID_BATCH: u64 = 256;

/// An upload in progress. End it with [`commit`](Self::commit) or [`abort`](Self::abort); dropping it
/// aborts it in the background.
pub struct WriteSession {
    inner: Arc<Inner>,
    path: StorePath,
    ctx: ChangeContext,
    sid: u64,
    chunk_size: u64,
    size: u64,
    /// Chunk id per chunk index for everything not in `dirty`; 0 is a hole.
    chunks: Vec<u64>,
    /// Chunk index -> the chunk's bytes so far (may be shorter than the chunk; the rest is zeros).
    dirty: BTreeMap<u64, Vec<u8>>,
    /// Chunk index -> bytes of its dirty buffer that the client sent or that were stored before
    /// (the rest of the buffer is zeros nobody wrote).
    sent: HashMap<u64, u64>,
    /// Chunk index -> bytes of a chunk this session stored that nobody wrote (zeros filling the
    /// chunk up to a byte written after them). Counted with the holes, so writing one byte at the
    /// end of each chunk cannot store a chunk of zeros per byte sent.
    unsent: HashMap<u64, u64>,
    in_flight: JoinSet<Result<u64>>,
    /// Bytes of chunks being stored, so a write that comes back to them need not wait.
    in_flight_data: HashMap<u64, Bytes>,
    ids: Range<u64>,
    next_batch: u64,
    /// Every chunk this session stored, to hand back whatever the final map does not use.
    written: Vec<u64>,
    /// Set by `commit`: no more writes can come, so a short last chunk is complete.
    committing: bool,
    /// SHA-256 of the chunks as they are stored, while the content is written in one sequential
    /// pass from offset 0; `sequential_end` is how far that pass got.
    hasher: ChunkHasher,
    sequential_end: u64,
    finished: bool,
}

impl WriteSession {
    pub(crate) async fn open(
        inner: Arc<Inner>,
        path: &StorePath,
        opts: OpenOptions,
        ctx: ChangeContext,
        check_first: bool,
    ) -> Result<Self> {
        // A new file's content (create or replace) needs nothing from the open but its path check,
        // which the commit repeats in its atomic step (a store that tracks sessions gets one at the
        // first chunk stored, `flush`). Whole-file writes (`Store::write_file`) leave the check to
        // the commit; interactive uploads check up front, so that a client hears of a missing
        // directory before it sends the file — unless this process saw the directory a moment ago
        // (`KnownDirs`): the open was a fifth of a small file's cost, and such a file's error can
        // only come from a race.
        let parent = path.parent();
        let fresh_start = opts.truncate && opts.create && !opts.create_new;
        let skip = fresh_start
            && (!check_first
                || parent
                    .as_ref()
                    .is_some_and(|dir| inner.known_dirs.fresh(dir)));
        let start = if skip {
            SessionStart { sid: 0, base: None }
        } else {
            let epoch = inner.known_dirs.epoch();
            let start = inner.backend.open_session(path, opts).await?;
            if let Some(dir) = &parent {
                inner.known_dirs.saw(dir, epoch);
            }
            start
        };
        let (chunk_size, size, chunks, hasher) = match start.base {
            Some(Version {
                chunk_size,
                size,
                chunks,
                ..
            }) => (chunk_size, size, chunks, ChunkHasher::Off),
            None => (inner.chunk_size, 0, Vec::new(), ChunkHasher::new()),
        };
        Ok(WriteSession {
            inner,
            path: path.clone(),
            ctx,
            sid: start.sid,
            chunk_size,
            size,
            chunks,
            dirty: BTreeMap::new(),
            sent: HashMap::new(),
            unsent: HashMap::new(),
            in_flight: JoinSet::new(),
            in_flight_data: HashMap::new(),
            ids: 0..0,
            next_batch: 4,
            written: Vec::new(),
            committing: false,
            hasher,
            sequential_end: 0,
            finished: false,
        })
    }

    pub fn path(&self) -> &StorePath {
        &self.path
    }

    /// The file's size as this session sees it (the end for appends).
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Writes `data` at `offset`; writing past the end extends the file, leaving a hole of zeros.
    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| {
            StoreError::new(ErrorKind::FileTooLarge, "write offset is out of range")
        })?;
        self.check_size(end)?;
        self.check_hole(offset)?;
        if offset == self.sequential_end {
            self.sequential_end = end;
        } else {
            self.hasher.off();
        }
        let cs = self.chunk_size;
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (idx, within) = chunkmap::locate(pos, cs);
            let within = within as usize;
            let n = rest.len().min(cs as usize - within);
            let whole = within == 0 && n as u64 == cs;
            let buf = self.buffer(idx, whole).await?;
            // One copy of each byte: overwrite what the buffer has, append the rest (no zeroing
            // first, except for a gap).
            let piece = &rest[..n];
            if within >= buf.len() {
                buf.resize(within, 0);
                buf.extend_from_slice(piece);
            } else {
                let overlap = (buf.len() - within).min(n);
                buf[within..within + overlap].copy_from_slice(&piece[..overlap]);
                buf.extend_from_slice(&piece[overlap..]);
            }
            let full = buf.len() as u64 == cs;
            *self.sent.entry(idx).or_default() += n as u64;
            self.size = self.size.max(pos + n as u64);
            if full {
                self.flush(idx).await?;
            }
            pos += n as u64;
            rest = &rest[n..];
        }
        let needed = chunk_count(self.size, cs);
        if self.chunks.len() < needed {
            self.chunks.resize(needed, 0);
        }
        while self.dirty.len() > MAX_DIRTY {
            let oldest = *self.dirty.keys().next().expect("non-empty");
            self.flush(oldest).await?;
        }
        Ok(())
    }

    /// Appends at the current end.
    pub async fn append(&mut self, data: &[u8]) -> Result<()> {
        self.write_at(self.size, data).await
    }

    /// Truncates or extends (with zeros) to `len` bytes.
    pub async fn set_len(&mut self, len: u64) -> Result<()> {
        self.check_size(len)?;
        self.check_hole(len)?;
        let cs = self.chunk_size;
        if len < self.size {
            let keep = chunk_count(len, cs);
            self.dirty.retain(|&idx, _| idx < keep as u64);
            self.sent.retain(|&idx, _| idx < keep as u64);
            self.unsent.retain(|&idx, _| idx < keep as u64);
            let (idx, tail) = chunkmap::locate(len, cs);
            if tail != 0 {
                let has_bytes = self.dirty.contains_key(&idx)
                    || self.chunks.get(idx as usize).is_some_and(|&id| id != 0);
                if has_bytes {
                    let buf = self.buffer(idx, false).await?;
                    buf.truncate(tail as usize);
                    if let Some(sent) = self.sent.get_mut(&idx) {
                        *sent = (*sent).min(tail);
                    }
                }
            }
            self.chunks.truncate(keep);
        }
        self.chunks.resize(chunk_count(len, cs), 0);
        self.size = len;
        if len != self.sequential_end {
            self.hasher.off();
        }
        Ok(())
    }

    /// Reads back what this session holds (for SFTP handles opened read-write).
    pub async fn read_at(&mut self, offset: u64, len: usize) -> Result<Bytes> {
        if offset >= self.size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = self.size.min(offset + len as u64);
        let cs = self.chunk_size;
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let (idx, from) = chunkmap::locate(pos, cs);
            let chunk = self.content(idx).await?;
            let begins = chunkmap::chunk_start(idx, cs);
            let to = ((end - begins) as usize).min(chunk.len());
            out.extend_from_slice(&chunk[from as usize..to]);
            pos = begins + to as u64;
        }
        Ok(out.into())
    }

    /// Publishes everything written, atomically, and records the change's event.
    pub async fn commit(mut self, opts: CommitOptions) -> Result<CommitInfo> {
        // A file that fits in one chunk still only in memory: store and commit it in one step.
        let single = self.written.is_empty()
            && self.in_flight.is_empty()
            && self.chunks.len() <= 1
            && self.dirty.len() == 1;
        self.committing = true;
        if !single {
            let indexes: Vec<u64> = self.dirty.keys().copied().collect();
            for idx in indexes {
                self.flush(idx).await?;
            }
            self.drain().await?;
        }
        // The digest first, while a single chunk is still in memory: hashing the stored content
        // must not look for a chunk that is not stored yet.
        let hasher = std::mem::replace(&mut self.hasher, ChunkHasher::Off);
        let chunks = chunk_count(self.size, self.chunk_size) as u64;
        let streamed = match (self.sequential_end == self.size, single) {
            (false, _) => None,
            (true, true) => {
                let (&idx, buf) = self.dirty.first_key_value().expect("one dirty chunk");
                hasher.finish_with(idx, buf, chunks)
            }
            (true, false) => hasher.finish(chunks).await,
        };
        let sha256 = match streamed {
            Some(h) => Some(h),
            None if opts.complete => Some(self.hash_stored().await?),
            None => None,
        };
        let single_chunk = match single {
            true => {
                let (idx, buf) = self.dirty.pop_first().expect("one dirty chunk");
                let id = self.next_id().await?;
                if self.chunks.len() <= idx as usize {
                    self.chunks.resize(idx as usize + 1, 0);
                }
                self.chunks[idx as usize] = id;
                self.written.push(id);
                Some((id, Bytes::from(buf)))
            }
            false => None,
        };
        let mtime_ms = to_ms(opts.mtime.unwrap_or_else(SystemTime::now));
        let used: std::collections::HashSet<u64> = self.chunks.iter().copied().collect();
        let superseded: Vec<u64> = self
            .written
            .iter()
            .copied()
            .filter(|id| !used.contains(id))
            .collect();
        let request = CommitRequest {
            sid: self.sid,
            path: &self.path,
            size: self.size,
            chunk_size: self.chunk_size,
            chunks: &self.chunks,
            sha256: sha256.clone(),
            complete: opts.complete,
            mtime_ms,
            origin: origin(&self.ctx),
            superseded: &superseded,
        };
        let epoch = self.inner.known_dirs.epoch();
        let outcome = match single_chunk {
            Some((id, data)) => self.inner.backend.put_and_commit(request, id, data).await,
            None => self.inner.backend.commit(request).await,
        };
        let outcome = self.inner.note(outcome)?;
        self.inner.recorded(outcome.seq);
        if let Some(dir) = self.path.parent() {
            self.inner.known_dirs.saw(&dir, epoch);
        }
        self.finished = true;
        Ok(CommitInfo {
            version: outcome.vid,
            size: self.size,
            sha256,
            seq: outcome.seq,
            created: outcome.created,
        })
    }

    /// Drops everything written; the file stays as it was.
    pub async fn abort(mut self) -> Result<()> {
        self.finished = true;
        let mut in_flight = std::mem::take(&mut self.in_flight);
        while in_flight.join_next().await.is_some() {}
        self.inner
            .backend
            .end_session(self.sid, &self.written)
            .await
    }

    fn check_size(&self, size: u64) -> Result<()> {
        let max = self.inner.config.max_file_size;
        if max > 0 && size > max {
            return Err(StoreError::new(
                ErrorKind::FileTooLarge,
                format!(
                    "{} would grow to {size} bytes; the limit (storage.max_file_size) is {max}",
                    self.path
                ),
            ));
        }
        Ok(())
    }

    /// Growing the file to `new_end` leaves the bytes between its end and there never written: they
    /// cost nothing to store, but they are hashed at commit. Without a bound, one 30-byte SFTP
    /// setstat could make the gateway hash terabytes of zeros.
    fn check_hole(&self, new_end: u64) -> Result<()> {
        let gap = new_end.saturating_sub(self.size);
        if gap == 0 {
            return Ok(());
        }
        let holes = self
            .chunks
            .iter()
            .enumerate()
            .filter(|&(i, &id)| id == 0 && !self.dirty.contains_key(&(i as u64)))
            .count() as u64;
        let unwritten_in_chunks = self.unsent.values().sum::<u64>()
            + self
                .dirty
                .iter()
                .map(|(idx, buf)| unwritten(buf, self.sent.get(idx)))
                .sum::<u64>();
        let total = holes
            .saturating_mul(self.chunk_size)
            .saturating_add(unwritten_in_chunks)
            .saturating_add(gap);
        let max = self.inner.config.max_hole_size;
        if total > max {
            return Err(StoreError::new(
                ErrorKind::FileTooLarge,
                format!(
                    "{} would have {total} bytes that were never written (a hole of zeros); \
                     at most {max} are allowed (storage.max_hole_size): send the bytes in between instead of a gap",
                    self.path
                ),
            ));
        }
        Ok(())
    }

    /// The open buffer of chunk `idx`, loading the chunk's current bytes unless `whole` says they are
    /// about to be overwritten entirely.
    async fn buffer(&mut self, idx: u64, whole: bool) -> Result<&mut Vec<u8>> {
        if !self.dirty.contains_key(&idx) {
            let beyond_end = chunkmap::chunk_start(idx, self.chunk_size) >= self.size;
            // A buffer that will likely fill up gets the whole chunk at once: growing it by
            // doubling copied each chunk's bytes again (a 256 KiB FTP piece into a 512 KiB chunk:
            // half of them). A file's first chunk starts small, so small files stay cheap.
            let capacity = if idx == 0 { 0 } else { self.chunk_size };
            let mut current = Vec::with_capacity(capacity as usize);
            if !(whole || beyond_end) {
                current.extend_from_slice(&self.stored(idx).await?);
            }
            let never_written = self.unsent.remove(&idx).unwrap_or(0);
            self.sent
                .insert(idx, (current.len() as u64).saturating_sub(never_written));
            self.dirty.insert(idx, current);
        }
        Ok(self.dirty.get_mut(&idx).expect("just inserted"))
    }

    /// The bytes the session holds for chunk `idx` (dirty, being stored, or stored), sized to the file.
    async fn content(&mut self, idx: u64) -> Result<Bytes> {
        let len = chunkmap::chunk_len(self.size, self.chunk_size, idx) as usize;
        if let Some(buf) = self.dirty.get(&idx) {
            return Ok(fit(Bytes::copy_from_slice(buf), len));
        }
        Ok(fit(self.stored(idx).await?, len))
    }

    /// The stored (not dirty) bytes of chunk `idx`, as they are.
    async fn stored(&mut self, idx: u64) -> Result<Bytes> {
        let id = self.chunks.get(idx as usize).copied().unwrap_or(0);
        if id == 0 {
            return Ok(Bytes::new());
        }
        if let Some(data) = self.in_flight_data.get(&id) {
            return Ok(data.clone());
        }
        self.inner.backend.get_chunk(id).await?.ok_or_else(|| {
            StoreError::internal(format!(
                "{}: chunk {id} of the version being changed is missing",
                self.path
            ))
        })
    }

    /// Stores the buffer of chunk `idx` as a new chunk, in the background.
    async fn flush(&mut self, idx: u64) -> Result<()> {
        let Some(buf) = self.dirty.remove(&idx) else {
            return Ok(());
        };
        match unwritten(&buf, self.sent.remove(&idx).as_ref()) {
            0 => self.unsent.remove(&idx),
            n => self.unsent.insert(idx, n),
        };
        let id = self.next_id().await?;
        let slot = idx as usize;
        if self.chunks.len() <= slot {
            self.chunks.resize(slot + 1, 0);
        }
        self.chunks[slot] = id;
        self.written.push(id);
        let data = Bytes::from(buf);
        if self.hasher.is_on() {
            // Whole: a full chunk, or the file's last chunk once nothing more can be written.
            let whole = data.len() as u64 == self.chunk_size
                || (self.committing
                    && chunkmap::chunk_start(idx + 1, self.chunk_size) >= self.size);
            self.hasher.feed(idx, &data, whole).await;
        }
        self.in_flight_data.insert(id, data.clone());
        if self.sid == 0 && self.inner.backend.tracks_sessions() {
            // Opened without a session: register one before the first chunk can land.
            self.sid = self.inner.backend.register_session().await?;
        }
        let inner = self.inner.clone();
        let sid = self.sid;
        self.in_flight
            .spawn(async move { inner.backend.put_chunk(sid, id, data).await.map(|_| id) });
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.reap_one().await?;
        }
        Ok(())
    }

    async fn reap_one(&mut self) -> Result<()> {
        match self.in_flight.join_next().await {
            Some(Ok(Ok(id))) => {
                self.in_flight_data.remove(&id);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => {
                Err(StoreError::internal(format!("storing a chunk failed: {e}")).with_source(e))
            }
            None => Ok(()),
        }
    }

    async fn drain(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.reap_one().await?;
        }
        Ok(())
    }

    async fn next_id(&mut self) -> Result<u64> {
        if self.ids.is_empty() {
            let n = self.next_batch;
            let first = self.inner.backend.alloc_ids(self.sid, n).await?;
            self.ids = first..first + n;
            self.next_batch = (n * 4).min(MAX_ID_BATCH);
        }
        Ok(self.ids.next().expect("non-empty"))
    }

    /// SHA-256 of the content when it was not written in one pass: read back chunk by chunk.
    async fn hash_stored(&mut self) -> Result<String> {
        let mut hasher = Sha256::new();
        for idx in 0..chunk_count(self.size, self.chunk_size) as u64 {
            hasher.update(self.content(idx).await?);
            // Holes come from memory without a pause: let other sessions run between chunks.
            tokio::task::yield_now().await;
        }
        Ok(hex::encode(hasher.finalize()))
    }
}

/// Bytes of a dirty buffer nobody wrote, given how many were sent into it.
fn unwritten(buf: &[u8], sent: Option<&u64>) -> u64 {
    (buf.len() as u64).saturating_sub(sent.copied().unwrap_or(0))
}

impl Drop for WriteSession {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut in_flight = std::mem::take(&mut self.in_flight);
        let inner = self.inner.clone();
        let sid = self.sid;
        let path = self.path.clone();
        let written = std::mem::take(&mut self.written);
        self.inner.spawn_cleanup(async move {
            // Wait for chunk writes to land first, or they could arrive after their cleanup.
            while in_flight.join_next().await.is_some() {}
            if let Err(e) = inner.backend.end_session(sid, &written).await {
                tracing::warn!(%path, error = %e, "could not drop an abandoned upload; it will be reclaimed later");
            }
        });
    }
}
