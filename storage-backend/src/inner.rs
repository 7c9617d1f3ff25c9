//! What a store, its readers and its write sessions share: the backend, the configuration and the
//! background tasks. Its own module so that `read` and `write` depend on it and not on `store`,
//! which depends on them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::Backend;
use crate::config::StoreConfig;
use crate::error::{Reason, Result};
use crate::outbox::EventOrigin;
use crate::path::StorePath;
use crate::types::{now_ms, ChangeContext};

pub(crate) struct Inner {
    pub backend: Backend,
    pub config: StoreConfig,
    /// Chunk size for new files (the embedded backend trims it to fit redb's pages).
    pub chunk_size: u64,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    /// Set by [`Store::simulate_crash`](crate::Store::simulate_crash): nothing is cleaned up any more, as after `kill -9`.
    pub crashed: AtomicBool,
    /// The newest event recorded through this process (events of other gateways do not show here).
    pub last_seq: tokio::sync::watch::Sender<u64>,
    pub known_dirs: KnownDirs,
}

/// How long a directory seen by this process counts as still there without asking the store.
const KNOWN_DIRS_TTL: Duration = Duration::from_secs(2);
/// Directories remembered at most (past it the memory starts afresh).
const KNOWN_DIRS_MAX: usize = 4096;

/// Directories this process saw exist a moment ago, so that an upload into one of them can skip
/// the open's path check, a round trip to Redis that was a fifth of a small file's cost. The
/// commit checks the path again in the same atomic step that publishes the file, so a stale entry
/// can never land a file anywhere wrong: it only moves an error (directory gone, or a directory at
/// the file's own name) from the open to the commit. Entries are dropped at once when this process
/// removes or renames a directory, and live [`KNOWN_DIRS_TTL`] otherwise (another gateway on the
/// same Redis removing one); an open that raced a removal does not put its directory back (`epoch`).
#[derive(Default)]
pub(crate) struct KnownDirs {
    inner: Mutex<KnownInner>,
}

#[derive(Default)]
struct KnownInner {
    seen: HashMap<StorePath, Instant>,
    /// Counts removals, so that a directory seen before one is not recorded after it.
    epoch: u64,
}

impl KnownDirs {
    fn lock(&self) -> std::sync::MutexGuard<'_, KnownInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `dir` was seen within the last [`KNOWN_DIRS_TTL`].
    pub fn fresh(&self, dir: &StorePath) -> bool {
        self.lock()
            .seen
            .get(dir)
            .is_some_and(|at| at.elapsed() < KNOWN_DIRS_TTL)
    }

    /// The removal count now: pass it to [`Self::saw`] after asking the store.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// The store said `dir` is a directory, in an answer asked for at `epoch`.
    pub fn saw(&self, dir: &StorePath, epoch: u64) {
        let mut k = self.lock();
        if k.epoch != epoch {
            return;
        }
        if k.seen.len() >= KNOWN_DIRS_MAX && !k.seen.contains_key(dir) {
            k.seen.clear();
        }
        k.seen.insert(dir.clone(), Instant::now());
    }

    /// `path` and everything below it may be gone (removed, renamed, replaced).
    pub fn forget_under(&self, path: &StorePath) {
        let mut k = self.lock();
        k.epoch += 1;
        k.seen.retain(|dir, _| !dir.starts_with(path));
    }
}

impl Inner {
    /// Like `note`, and tells anyone watching for new events (the publisher) about the change.
    pub fn note_seq(&self, result: Result<u64>) -> Result<u64> {
        let result = self.note(result);
        if let Ok(seq) = &result {
            self.recorded(*seq);
        }
        result
    }

    pub fn recorded(&self, seq: u64) {
        self.last_seq.send_if_modified(|last| {
            let newer = seq > *last;
            if newer {
                *last = seq;
            }
            newer
        });
    }

    /// Makes a full outbox loud: it means events are not being delivered and changes are refused.
    pub fn note<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if e.reason() == Some(Reason::OutboxFull) {
                tracing::error!(error = %e, limit = self.config.outbox_limit, "refusing a change: the event outbox is full");
            }
        }
        result
    }

    /// Runs `fut` in the background, owned by the store's task tracker, if a runtime is still there.
    pub fn spawn_cleanup(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        if self.crashed.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            self.tasks.spawn_on(fut, &handle);
        }
    }
}

pub(crate) fn origin(ctx: &ChangeContext) -> EventOrigin {
    EventOrigin::new(ctx, now_ms())
}
