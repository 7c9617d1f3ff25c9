//! Per-user quotas (bytes and files in the home), shared by all of the user's sessions on every
//! gateway of the store.
//!
//! The usage lives in the store (record table `quota`, one record per home), so every replica sees
//! the same figures: each change this gateway commits adds its difference there (compare-and-swap),
//! and each upload reads the record before it starts. The first gateway that finds no record
//! counts the home once by walking it; the count is made again every `RECOUNT_AFTER`, so that a
//! difference lost to a crash between a commit and its update does not stay.
//!
//! Uploads reserve bytes before they write them, so parallel uploads through one gateway together
//! can never pass the limit. Reservations stay in the gateway that holds them: uploads running at
//! the same moment on *other* gateways are counted when they commit, so several replicas uploading
//! for one user at once can together pass the limit by at most what they are uploading then.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use storage_backend::{ErrorKind, Store, StoreError, StorePath};

const RECOUNT_AFTER: Duration = Duration::from_secs(600);
/// Record table of the shared usage.
const TABLE: &str = "quota";
/// Attempts of one compare-and-swap update before it gives up (others kept changing it).
const SWAP_TRIES: usize = 16;

#[derive(Default)]
struct Usage {
    bytes: u64,
    files: u64,
    reserved_bytes: u64,
    reserved_files: u64,
}

/// The shared record of a home's usage.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Debug)]
struct Shared {
    bytes: u64,
    files: u64,
    /// When the home was last walked (ms since the epoch).
    counted_ms: u64,
}

pub struct Quota {
    max_bytes: Option<u64>,
    max_files: Option<u64>,
    usage: Mutex<Usage>,
    recount: tokio::sync::Mutex<()>,
    /// The shared record as this gateway last read or wrote it: a commit's update swaps against
    /// it first, so it costs one trip to the store unless another gateway changed it meanwhile.
    seen: Mutex<Option<Vec<u8>>>,
}

impl Quota {
    pub fn new(max_bytes: Option<u64>, max_files: Option<u64>) -> Self {
        Quota {
            max_bytes,
            max_files,
            usage: Mutex::new(Usage::default()),
            recount: tokio::sync::Mutex::new(()),
            seen: Mutex::new(None),
        }
    }

    pub fn is_limited(&self) -> bool {
        self.max_bytes.is_some() || self.max_files.is_some()
    }

    /// (bytes used, bytes limit) for statvfs-like replies.
    pub fn bytes(&self) -> (u64, Option<u64>) {
        (self.usage.lock().unwrap().bytes, self.max_bytes)
    }

    /// (bytes, files, byte limit, file limit): the running count of a limited quota.
    pub fn usage(&self) -> (u64, u64, Option<u64>, Option<u64>) {
        let u = self.usage.lock().unwrap();
        (u.bytes, u.files, self.max_bytes, self.max_files)
    }

    /// Takes the usage every gateway shares from the store (counting the home when nobody has yet,
    /// or when the last count is old). Called at login and before each upload.
    pub async fn refresh(&self, store: &Store, home: &StorePath) -> Result<(), StoreError> {
        if !self.is_limited() {
            return Ok(());
        }
        let key = record_key(home);
        let (shared, raw) = match read(store, &key).await? {
            Some((s, raw)) if !is_old(&s) => (s, raw),
            _ => self.recount(store, home, &key).await?,
        };
        self.take(shared, raw);
        Ok(())
    }

    /// Walks the home and stores the count, unless another gateway changed the record meanwhile
    /// (then its figures are taken: they are as good, and the next recount comes soon).
    async fn recount(
        &self,
        store: &Store,
        home: &StorePath,
        key: &str,
    ) -> Result<(Shared, Vec<u8>), StoreError> {
        let _one_at_a_time = self.recount.lock().await;
        let before = read(store, key).await?;
        if let Some((s, raw)) = &before {
            if !is_old(s) {
                return Ok((*s, raw.clone()));
            }
        }
        let (bytes, files) = count(store, home).await?;
        let counted = Shared {
            bytes,
            files,
            counted_ms: now_ms(),
        };
        let expected = before.as_ref().map(|(_, raw)| raw.as_slice());
        let raw = encode(&counted);
        if store.record_swap(TABLE, key, expected, &raw, None).await? {
            return Ok((counted, raw));
        }
        Ok(read(store, key).await?.unwrap_or((counted, raw)))
    }

    /// Adds what a committed change did to the shared usage (and takes the result, which includes
    /// what other gateways did meanwhile). Failing, it keeps the local figures and says so in
    /// the log: the next recount puts the shared record right.
    pub async fn changed(
        &self,
        store: &Store,
        home: &StorePath,
        delta_bytes: i64,
        delta_files: i64,
    ) {
        if !self.is_limited() || (delta_bytes == 0 && delta_files == 0) {
            return;
        }
        let key = record_key(home);
        let mut last_seen = self.seen.lock().unwrap().clone().and_then(decode);
        for _ in 0..SWAP_TRIES {
            let current = match last_seen.take() {
                Some(c) => Ok(Some(c)),
                None => read(store, &key).await,
            };
            let current = match current {
                Ok(Some(c)) => c,
                // Nobody counted yet: the first refresh will.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(%home, error = %e, "quota: could not update the shared usage; recounted later");
                    return;
                }
            };
            let (old, raw) = current;
            let new = Shared {
                bytes: old.bytes.saturating_add_signed(delta_bytes),
                files: old.files.saturating_add_signed(delta_files),
                counted_ms: old.counted_ms,
            };
            let new_raw = encode(&new);
            match store
                .record_swap(TABLE, &key, Some(&raw), &new_raw, None)
                .await
            {
                Ok(true) => {
                    self.take(new, new_raw);
                    return;
                }
                // Changed since: read it and try again.
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(%home, error = %e, "quota: could not update the shared usage; recounted later");
                    return;
                }
            }
        }
        tracing::warn!(%home, "quota: the shared usage kept changing under this update; recounted later");
    }

    fn take(&self, shared: Shared, raw: Vec<u8>) {
        let mut u = self.usage.lock().unwrap();
        u.bytes = shared.bytes;
        u.files = shared.files;
        *self.seen.lock().unwrap() = Some(raw);
    }

    /// Reserves room for `bytes` more bytes and `files` more files, or says why not.
    pub fn reserve(&self, bytes: u64, files: u64) -> Result<(), StoreError> {
        let mut u = self.usage.lock().unwrap();
        if let Some(max) = self.max_bytes {
            if bytes > 0 && u.bytes + u.reserved_bytes + bytes > max {
                return Err(StoreError::new(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "quota exceeded: {} of {max} bytes in use",
                        u.bytes + u.reserved_bytes
                    ),
                ));
            }
        }
        if let Some(max) = self.max_files {
            if files > 0 && u.files + u.reserved_files + files > max {
                return Err(StoreError::new(
                    ErrorKind::QuotaExceeded,
                    format!(
                        "quota exceeded: {} of {max} files in use",
                        u.files + u.reserved_files
                    ),
                ));
            }
        }
        u.reserved_bytes += bytes;
        u.reserved_files += files;
        Ok(())
    }

    /// Gives reservations back and applies what was actually committed (deltas may be negative)
    /// to this gateway's figures at once; [`changed`](Self::changed) then shares it.
    pub fn settle(
        &self,
        reserved_bytes: u64,
        reserved_files: u64,
        delta_bytes: i64,
        delta_files: i64,
    ) {
        let mut u = self.usage.lock().unwrap();
        u.reserved_bytes = u.reserved_bytes.saturating_sub(reserved_bytes);
        u.reserved_files = u.reserved_files.saturating_sub(reserved_files);
        u.bytes = u.bytes.saturating_add_signed(delta_bytes);
        u.files = u.files.saturating_add_signed(delta_files);
    }
}

/// The record of `home`: its path, or a digest of it when too long to be a record key.
fn record_key(home: &StorePath) -> String {
    let path = home.to_string();
    if path.len() <= 512 {
        return path;
    }
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(path.as_bytes()))
}

async fn read(store: &Store, key: &str) -> Result<Option<(Shared, Vec<u8>)>, StoreError> {
    Ok(store.record_get(TABLE, key).await?.and_then(decode))
}

/// The record's figures, with its bytes (to swap against); `None` for a record this version
/// cannot read, which is then counted again.
fn decode(raw: Vec<u8>) -> Option<(Shared, Vec<u8>)> {
    serde_json::from_slice(&raw).ok().map(|s| (s, raw))
}

/// Whether the home was last walked longer than `RECOUNT_AFTER` ago.
fn is_old(s: &Shared) -> bool {
    now_ms().saturating_sub(s.counted_ms) > RECOUNT_AFTER.as_millis() as u64
}

fn encode(s: &Shared) -> Vec<u8> {
    serde_json::to_vec(s).expect("plain struct serialises")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Bytes and files under `home`, walked page by page (never one whole directory in memory).
pub(super) async fn count(store: &Store, home: &StorePath) -> Result<(u64, u64), StoreError> {
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut dirs = vec![home.clone()];
    while let Some(dir) = dirs.pop() {
        let mut after: Option<String> = None;
        loop {
            let page = match store.list(&dir, after.as_deref(), 1000).await {
                Ok(page) => page,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            for entry in &page.entries {
                if entry.metadata.is_dir() {
                    dirs.push(dir.join(&entry.name)?);
                } else {
                    bytes += entry.metadata.size;
                    files += 1;
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    Ok((bytes, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_pass_the_limit() {
        let q = Quota::new(Some(100), Some(2));
        q.reserve(60, 1).unwrap();
        assert_eq!(
            q.reserve(41, 0).unwrap_err().kind(),
            ErrorKind::QuotaExceeded
        );
        q.reserve(40, 1).unwrap();
        assert!(q.reserve(0, 1).is_err());
        // The first upload ends up 10 bytes smaller than it reserved.
        q.settle(60, 1, 50, 1);
        q.reserve(10, 0).unwrap();
        assert!(q.reserve(1, 0).is_err());
    }
}
