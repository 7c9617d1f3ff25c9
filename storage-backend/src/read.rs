//! Reading: a [`FileReader`] holds one committed version; [`ChunkStream`] streams it with read-ahead.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::chunkmap::{self, fit};
use crate::error::{ErrorKind, Result, StoreError};
use crate::inner::Inner;
use crate::path::StorePath;
use crate::seam::Version;
use crate::types::{from_ms, EntryKind, Metadata};

/// Chunks fetched ahead of the consumer while it is busy with the current one.
const READ_AHEAD: usize = 4;

/// An open file: one committed version, which stays readable even if the file is overwritten.
pub struct FileReader {
    inner: Arc<Inner>,
    path: StorePath,
    version: Arc<Version>,
    metadata: Metadata,
    _pin: Option<Arc<PinGuard>>,
    cache: std::sync::Mutex<ReadCache>,
}

/// The chunk [`FileReader::read_at`] fetched last, and a fetch of the one after it already under
/// way: a client reading in pieces smaller than a chunk (libssh2, WinSCP: 30–32 KiB at a time)
/// then costs one fetch per chunk instead of one per piece, and the next chunk arrives while it
/// reads this one.
#[derive(Default)]
struct ReadCache {
    last: Option<(u64, Bytes)>,
    ahead: Option<(u64, tokio::task::JoinHandle<Result<Bytes>>)>,
}

impl Drop for ReadCache {
    fn drop(&mut self) {
        if let Some((_, fetch)) = self.ahead.take() {
            fetch.abort();
        }
    }
}

/// Keeps a version's chunks alive while a reader needs them; unpins in the background when dropped.
pub(crate) struct PinGuard {
    inner: Arc<Inner>,
    pin: u64,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let inner = self.inner.clone();
        let pin = self.pin;
        self.inner.spawn_cleanup(async move {
            if let Err(e) = inner.backend.unpin(pin).await {
                tracing::debug!(error = %e, pin, "unpinning a read failed; the lease will expire instead");
            }
        });
    }
}

impl FileReader {
    pub(crate) async fn open(inner: Arc<Inner>, path: &StorePath) -> Result<FileReader> {
        let opened = inner.backend.open_read(path, true).await?;
        let v = opened.version;
        let metadata = Metadata {
            kind: EntryKind::File,
            size: v.size,
            mtime: from_ms(v.mtime_ms),
            version: v.vid,
            sha256: v.sha256.clone(),
            complete: v.complete,
        };
        let pin = opened.pin.map(|pin| {
            Arc::new(PinGuard {
                inner: inner.clone(),
                pin,
            })
        });
        Ok(FileReader {
            inner,
            path: path.clone(),
            version: Arc::new(v),
            metadata,
            _pin: pin,
            cache: Default::default(),
        })
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn size(&self) -> u64 {
        self.version.size
    }

    pub fn path(&self) -> &StorePath {
        &self.path
    }

    /// Up to `len` bytes from `offset`; fewer at the end of the file, none at or past it.
    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        let v = &self.version;
        if offset >= v.size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = v.size.min(offset + len as u64);
        let cs = v.chunk_size;
        let (first, within) = chunkmap::locate(offset, cs);
        let (last, _) = chunkmap::locate(end - 1, cs);
        if first == last {
            let chunk = self.chunk(first).await?;
            let start = within as usize;
            return Ok(chunk.slice(start..start + (end - offset) as usize));
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for idx in first..=last {
            let chunk = self.chunk(idx).await?;
            let begins = chunkmap::chunk_start(idx, cs);
            let from = offset.saturating_sub(begins) as usize;
            let to = ((end - begins) as usize).min(chunk.len());
            out.extend_from_slice(&chunk[from..to]);
        }
        Ok(out.freeze())
    }

    /// Chunk `idx` of this version, from the cache when it is the last one read or the one being
    /// fetched ahead; starts fetching the next one.
    async fn chunk(&self, idx: u64) -> Result<Bytes> {
        let ahead = {
            let mut cache = self.cache.lock().expect("read cache lock");
            if let Some((i, data)) = &cache.last {
                if *i == idx {
                    return Ok(data.clone());
                }
            }
            match cache.ahead.take() {
                Some((i, fetch)) if i == idx => Some(fetch),
                Some((_, fetch)) => {
                    fetch.abort();
                    None
                }
                None => None,
            }
        };
        let data = match ahead {
            Some(fetch) => match fetch.await {
                Ok(result) => result?,
                // Aborted or panicked: fetch it here instead.
                Err(_) => {
                    chunk_content(&self.inner, &self.path, &self.version, idx as usize).await?
                }
            },
            None => chunk_content(&self.inner, &self.path, &self.version, idx as usize).await?,
        };
        let next = idx + 1;
        let mut cache = self.cache.lock().expect("read cache lock");
        cache.last = Some((idx, data.clone()));
        if next < self.version.chunks.len() as u64 && cache.ahead.is_none() {
            let (inner, path, version) =
                (self.inner.clone(), self.path.clone(), self.version.clone());
            let fetch = self
                .inner
                .tasks
                .spawn(async move { chunk_content(&inner, &path, &version, next as usize).await });
            cache.ahead = Some((next, fetch));
        }
        Ok(data)
    }

    /// Streams the file from `offset` to its end, one chunk-sized piece at a time, fetching ahead.
    pub fn stream(&self, offset: u64) -> ChunkStream {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let inner = self.inner.clone();
        let path = self.path.clone();
        let version = self.version.clone();
        self.inner.tasks.spawn(async move {
            let v = &version;
            if offset >= v.size {
                return;
            }
            let (first, within) = chunkmap::locate(offset, v.chunk_size);
            // Fetches run as tasks this producer owns: it aborts them when the consumer goes away.
            let mut pending = std::collections::VecDeque::new();
            let mut next = first as usize;
            let mut skip = within as usize;
            loop {
                while pending.len() < READ_AHEAD && next < v.chunks.len() {
                    let (inner, path, version) = (inner.clone(), path.clone(), version.clone());
                    let idx = next;
                    pending.push_back(tokio::spawn(async move {
                        chunk_content(&inner, &path, &version, idx).await
                    }));
                    next += 1;
                }
                let Some(handle) = pending.pop_front() else {
                    return;
                };
                let piece = match handle.await {
                    Ok(Ok(data)) => {
                        let cut = skip.min(data.len());
                        skip = 0;
                        Ok(data.slice(cut..))
                    }
                    Ok(Err(e)) => Err(e),
                    Err(e) => {
                        Err(StoreError::internal(format!("chunk fetch failed: {e}")).with_source(e))
                    }
                };
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    for h in pending {
                        h.abort();
                    }
                    return;
                }
            }
        });
        ChunkStream {
            rx,
            _pin: self._pin.clone(),
        }
    }
}

/// A file's bytes as a stream of pieces (at most one chunk each).
pub struct ChunkStream {
    rx: mpsc::Receiver<Result<Bytes>>,
    _pin: Option<Arc<PinGuard>>,
}

impl ChunkStream {
    pub async fn next(&mut self) -> Option<Result<Bytes>> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for ChunkStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// The bytes of chunk `idx` of a version, exactly as long as the file has bytes in that chunk (holes
/// and short chunks read as zeros).
pub(crate) async fn chunk_content(
    inner: &Inner,
    path: &StorePath,
    v: &Version,
    idx: usize,
) -> Result<Bytes> {
    let len = chunkmap::chunk_len(v.size, v.chunk_size, idx as u64) as usize;
    let id = v.chunks.get(idx).copied().unwrap_or(0);
    if id == 0 {
        return Ok(Bytes::from(vec![0u8; len]));
    }
    let data = inner.backend.get_chunk(id).await?.ok_or_else(|| {
        StoreError::new(
            ErrorKind::Changed,
            format!("{path} was replaced while it was being read and the old content is gone; read it again"),
        )
    })?;
    Ok(fit(data, len))
}
