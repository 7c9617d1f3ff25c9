//! Per-user quotas (bytes and files in the home), shared by all of the user's sessions.
//!
//! Usage is counted once by walking the home, then kept up to date by every change made through
//! this gateway. Uploads reserve bytes before they write them, so parallel uploads together can
//! never pass the limit. Changes made by other gateways on the same Redis are picked up by the next
//! recount (every `RECOUNT_AFTER`); until then each gateway enforces the limit on its own view.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use storage_backend::{ErrorKind, Store, StoreError, StorePath};

const RECOUNT_AFTER: Duration = Duration::from_secs(600);

#[derive(Default)]
struct Usage {
    bytes: u64,
    files: u64,
    reserved_bytes: u64,
    reserved_files: u64,
    counted_at: Option<Instant>,
}

pub struct Quota {
    max_bytes: Option<u64>,
    max_files: Option<u64>,
    usage: Mutex<Usage>,
    recount: tokio::sync::Mutex<()>,
}

impl Quota {
    pub fn new(max_bytes: Option<u64>, max_files: Option<u64>) -> Self {
        Quota {
            max_bytes,
            max_files,
            usage: Mutex::new(Usage::default()),
            recount: tokio::sync::Mutex::new(()),
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

    /// Counts the home's usage when it was never counted or the count is old.
    pub async fn refresh(&self, store: &Store, home: &StorePath) -> Result<(), StoreError> {
        if !self.is_limited() {
            return Ok(());
        }
        let _one_at_a_time = self.recount.lock().await;
        let fresh = self
            .usage
            .lock()
            .unwrap()
            .counted_at
            .is_some_and(|t| t.elapsed() < RECOUNT_AFTER);
        if fresh {
            return Ok(());
        }
        let (bytes, files) = count(store, home).await?;
        let mut u = self.usage.lock().unwrap();
        u.bytes = bytes;
        u.files = files;
        u.counted_at = Some(Instant::now());
        Ok(())
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

    /// Gives reservations back and applies what was actually committed (deltas may be negative).
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
