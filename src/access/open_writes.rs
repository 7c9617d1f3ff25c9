//! Uploads open in this gateway process, by store path: what `stat` and directory listings show
//! for a file that is being written.
//!
//! The store makes a write visible only at its commit (the close), so readers never see half a
//! file and events wait for the end. But a POSIX client (sshfs above all) expects a file it has just
//! opened with `O_CREAT` to exist for `stat`/`fstat`/`lstat` at once, with its current size: without
//! that, `echo > f`, `cp`, `git`, `rsync` and `sqlite3` on an sshfs mount fail with "No such file or
//! directory". So every open upload registers here; `stat` and `list` in [`super::UserFs`] consult
//! it. Readers still open the last committed content (or nothing), and nothing is announced until
//! the commit.
//!
//! The registry is per process: with several gateways on one Redis, a file being written through
//! gateway A is visible to `stat` on gateway A only (sshfs and every other client do their whole
//! job over one connection, so it sees its own files); gateway B sees it once it is committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use storage_backend::{EntryKind, Metadata, StorePath};

#[derive(Default)]
pub(crate) struct OpenWrites {
    open: Mutex<HashMap<StorePath, Vec<Arc<Progress>>>>,
}

/// How far one open upload has got.
struct Progress {
    size: AtomicU64,
    /// Milliseconds since the epoch of the last change: the file's mtime while it is open.
    changed_ms: AtomicU64,
}

impl Progress {
    fn metadata(&self) -> Metadata {
        Metadata {
            kind: EntryKind::File,
            size: self.size.load(Ordering::Relaxed),
            mtime: UNIX_EPOCH + Duration::from_millis(self.changed_ms.load(Ordering::Relaxed)),
            version: 0,
            sha256: None,
            complete: false,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl OpenWrites {
    /// Registers an upload of `path` that has `size` bytes now; it stays visible until the
    /// returned guard is dropped.
    pub(crate) fn register(self: &Arc<Self>, path: &StorePath, size: u64) -> OpenWrite {
        let progress = Arc::new(Progress {
            size: AtomicU64::new(size),
            changed_ms: AtomicU64::new(now_ms()),
        });
        self.lock()
            .entry(path.clone())
            .or_default()
            .push(progress.clone());
        OpenWrite {
            registry: self.clone(),
            path: path.clone(),
            progress,
        }
    }

    /// What an open upload of `path` looks like, when there is one (the most recently changed
    /// one, when several sessions write the same path).
    pub(crate) fn get(&self, path: &StorePath) -> Option<Metadata> {
        let open = self.lock();
        let latest = open
            .get(path)?
            .iter()
            .max_by_key(|p| p.changed_ms.load(Ordering::Relaxed))?;
        Some(latest.metadata())
    }

    /// The open uploads directly in `dir`: (name, metadata), in byte order of the names.
    pub(crate) fn in_dir(&self, dir: &StorePath) -> Vec<(String, Metadata)> {
        let paths: Vec<StorePath> = self
            .lock()
            .keys()
            .filter(|p| p.parent().as_ref() == Some(dir))
            .cloned()
            .collect();
        let mut found: Vec<(String, Metadata)> = paths
            .iter()
            .filter_map(|p| Some((p.file_name()?.to_string(), self.get(p)?)))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StorePath, Vec<Arc<Progress>>>> {
        // A panic while holding the lock cannot leave the map half-changed: every change is one call.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One upload's entry in [`OpenWrites`]; removed when dropped (at commit, abort, or cut-off).
pub(crate) struct OpenWrite {
    registry: Arc<OpenWrites>,
    path: StorePath,
    progress: Arc<Progress>,
}

impl OpenWrite {
    pub(crate) fn set_size(&self, size: u64) {
        self.progress.size.store(size, Ordering::Relaxed);
        self.progress.changed_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn metadata(&self) -> Metadata {
        self.progress.metadata()
    }
}

impl Drop for OpenWrite {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        if let Some(list) = open.get_mut(&self.path) {
            list.retain(|p| !Arc::ptr_eq(p, &self.progress));
            if list.is_empty() {
                open.remove(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_while_open() {
        let reg = Arc::new(OpenWrites::default());
        let dir = StorePath::parse("/d").unwrap();
        let a = dir.join("a").unwrap();
        assert!(reg.get(&a).is_none());
        let w = reg.register(&a, 0);
        w.set_size(5);
        assert_eq!(reg.get(&a).unwrap().size, 5);
        let other = reg.register(&StorePath::parse("/e/b").unwrap(), 1);
        let listed = reg.in_dir(&dir);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].0, "a");
        drop(w);
        assert!(reg.get(&a).is_none());
        assert!(reg.in_dir(&dir).is_empty());
        drop(other);
        assert!(reg.lock().is_empty());
    }
}
