//! [`Store`]: the one API every front-end calls, and the background work that keeps the store tidy.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backends::Backend;
use crate::config::StoreConfig;
use crate::error::{ErrorKind, Result, StoreError};
use crate::inner::{origin, Inner};
use crate::outbox::{Event, EventPage, OutboxStatus};
use crate::path::StorePath;
use crate::read::FileReader;
use crate::seam::{MaintenanceReport, StoreUsage};
use crate::types::{
    to_ms, ChangeContext, CommitInfo, CommitOptions, ListPage, Metadata, OpenOptions,
};
use crate::write::WriteSession;

/// Largest page a listing returns, whatever the caller asks for.
pub const MAX_LIST_PAGE: usize = 10_000;

/// The chunked store. Cheap to clone; all clones share one backend connection set.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

/// What the integrity check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Chunks a version refers to that are not stored: data loss. Must always be empty.
    pub missing: Vec<u64>,
    /// Stored chunks no version refers to: waiting for garbage collection, written by an open session,
    /// or leaked. Empty once sessions are finished and garbage collection has run.
    pub unreferenced: Vec<u64>,
}

impl Store {
    /// Opens (creating if needed) the configured backend and starts its maintenance task.
    pub async fn open(config: StoreConfig) -> Result<Store> {
        if config.chunk_size == 0 {
            return Err(StoreError::new(
                ErrorKind::InvalidArgument,
                "storage.chunk_size must be greater than 0",
            ));
        }
        let (backend, chunk_size) = Backend::open(&config).await?;
        let inner = Arc::new(Inner {
            backend,
            config,
            chunk_size,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            crashed: AtomicBool::new(false),
            last_seq: tokio::sync::watch::Sender::new(0),
            known_dirs: Default::default(),
        });
        let store = Store { inner };
        store
            .inner
            .tasks
            .spawn(maintenance_loop(store.inner.clone()));
        Ok(store)
    }

    /// One line saying which backend this is, for logs and the startup banner.
    pub fn describe(&self) -> String {
        self.inner.backend.describe()
    }

    /// The chunk size new files are written with.
    pub fn chunk_size(&self) -> u64 {
        self.inner.chunk_size
    }

    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Stops background work, waits for it, and hands back whatever this process still holds
    /// (unfinished uploads are dropped, as after a crash).
    pub async fn close(&self) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        if let Err(e) = self.inner.backend.release_owner().await {
            tracing::warn!(error = %e, "could not release this gateway's sessions; another gateway will reclaim them");
        }
    }

    /// For tests: stops this store's background work (its heartbeat) and every cleanup it would do,
    /// leaving its sessions and pins behind exactly as a killed process would.
    #[doc(hidden)]
    pub async fn simulate_crash(&self) {
        self.inner.crashed.store(true, Ordering::SeqCst);
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Fails when the backend cannot be reached.
    pub async fn ping(&self) -> Result<()> {
        self.inner.backend.ping().await
    }

    pub async fn stat(&self, path: &StorePath) -> Result<Metadata> {
        self.inner.backend.stat(path).await
    }

    /// One page of a directory's entries in byte order of their names, starting after `after`.
    pub async fn list(
        &self,
        dir: &StorePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        self.inner
            .backend
            .list(dir, after, limit.clamp(1, MAX_LIST_PAGE))
            .await
    }

    /// Creates a directory; its parent must exist. Returns the event's sequence number.
    pub async fn mkdir(&self, path: &StorePath, ctx: &ChangeContext) -> Result<u64> {
        let epoch = self.inner.known_dirs.epoch();
        let seq = self
            .inner
            .note_seq(self.inner.backend.mkdir(path, origin(ctx)).await)?;
        // Both exist now: the new directory and the one it was made in.
        self.inner.known_dirs.saw(path, epoch);
        if let Some(parent) = path.parent() {
            self.inner.known_dirs.saw(&parent, epoch);
        }
        Ok(seq)
    }

    /// Removes an empty directory.
    pub async fn rmdir(&self, path: &StorePath, ctx: &ChangeContext) -> Result<u64> {
        self.inner.known_dirs.forget_under(path);
        self.inner
            .note_seq(self.inner.backend.rmdir(path, origin(ctx)).await)
    }

    /// Deletes a file (a directory is refused: `rmdir`, so no known directory goes with it).
    pub async fn delete(&self, path: &StorePath, ctx: &ChangeContext) -> Result<u64> {
        self.inner
            .note_seq(self.inner.backend.delete(path, origin(ctx)).await)
    }

    /// Renames a file or a whole directory in one metadata step. With `replace`, an existing target is
    /// replaced as POSIX `rename` does (a file by a file, an empty directory by a directory);
    /// without, an existing target is an error (SFTP v3 and FTP `RNTO` semantics differ here).
    pub async fn rename(
        &self,
        from: &StorePath,
        to: &StorePath,
        replace: bool,
        ctx: &ChangeContext,
    ) -> Result<u64> {
        if from.is_root() || to.is_root() {
            return Err(StoreError::new(
                ErrorKind::InvalidArgument,
                "the root directory cannot be renamed or replaced",
            ));
        }
        if to != from && to.starts_with(from) {
            return Err(StoreError::new(
                ErrorKind::InvalidArgument,
                format!("cannot move {from} into its own subdirectory {to}"),
            ));
        }
        // A directory renamed away, or an empty one replaced by the target, is gone from there.
        self.inner.known_dirs.forget_under(from);
        self.inner.known_dirs.forget_under(to);
        self.inner.note_seq(
            self.inner
                .backend
                .rename(from, to, replace, origin(ctx))
                .await,
        )
    }

    /// Sets the modification time of a file or directory.
    pub async fn set_mtime(
        &self,
        path: &StorePath,
        mtime: SystemTime,
        ctx: &ChangeContext,
    ) -> Result<u64> {
        self.inner.note_seq(
            self.inner
                .backend
                .set_mtime(path, to_ms(mtime), origin(ctx))
                .await,
        )
    }

    /// Truncates or extends (with zeros) an existing file, as a commit of its own.
    pub async fn set_size(
        &self,
        path: &StorePath,
        size: u64,
        ctx: &ChangeContext,
    ) -> Result<CommitInfo> {
        let mut session = self.open_write(path, OpenOptions::EXISTING, ctx).await?;
        let mtime = None;
        session.set_len(size).await?;
        session
            .commit(CommitOptions {
                complete: true,
                mtime,
            })
            .await
    }

    /// Opens the current version of a file for reading. The reader keeps seeing that version, complete,
    /// even if the file is overwritten meanwhile.
    pub async fn open_read(&self, path: &StorePath) -> Result<FileReader> {
        FileReader::open(self.inner.clone(), path).await
    }

    /// Reads a whole file into memory, refusing files larger than `max` bytes.
    pub async fn read_to_vec(&self, path: &StorePath, max: u64) -> Result<Vec<u8>> {
        let reader = self.open_read(path).await?;
        if reader.size() > max {
            return Err(StoreError::new(
                ErrorKind::FileTooLarge,
                format!(
                    "{path} is {} bytes; at most {max} can be read in one piece",
                    reader.size()
                ),
            ));
        }
        let mut out = Vec::with_capacity(reader.size() as usize);
        let mut stream = reader.stream(0);
        while let Some(piece) = stream.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    /// Starts a write session. Nothing it writes is visible until [`WriteSession::commit`].
    pub async fn open_write(
        &self,
        path: &StorePath,
        opts: OpenOptions,
        ctx: &ChangeContext,
    ) -> Result<WriteSession> {
        WriteSession::open(self.inner.clone(), path, opts, ctx.clone(), true).await
    }

    /// Creates or replaces a file with `data` in one call.
    pub async fn write_file(
        &self,
        path: &StorePath,
        data: &[u8],
        ctx: &ChangeContext,
    ) -> Result<CommitInfo> {
        let mut session = WriteSession::open(
            self.inner.clone(),
            path,
            OpenOptions::REPLACE,
            ctx.clone(),
            false,
        )
        .await?;
        session.write_at(0, data).await?;
        session.commit(CommitOptions::default()).await
    }

    /// Events recorded after sequence number `after`, oldest first, at most `limit`.
    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        self.inner.backend.events_after(after, limit).await
    }

    /// Up to `limit` events after `after`, oldest first, from the outbox and the history of
    /// delivered events — or [`EventPage::Gone`] when some event after `after` was already dropped
    /// from the history (bounded by `history_max` and `history_age`), so a consumer resuming from
    /// `after` learns that it missed events instead of never hearing of them.
    pub async fn events_page(&self, after: u64, limit: usize) -> Result<EventPage> {
        self.inner.backend.events_page(after, limit.max(1)).await
    }

    /// Changes whenever this process records an event, so a publisher can wait for work instead of
    /// polling. Gateways sharing a Redis namespace do not see each other's events here.
    pub fn watch_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.last_seq.subscribe()
    }

    /// Takes or renews the lease `name` for `holder` for `ttl`; false while someone else holds it.
    /// Leases let one gateway of several do a job alone (publishing events), and pass it on within
    /// `ttl` when that gateway dies.
    pub async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        self.inner.backend.lease(name, holder, ttl).await
    }

    /// Gives a lease up at once (on a clean shutdown), if `holder` has it.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.inner.backend.release_lease(name, holder).await
    }

    /// The event a consumer (a webhook) has delivered up to. A consumer seen for the first time
    /// starts at the newest event. The history keeps every event after a consumer's cursor,
    /// whatever `history_max` and `history_age` say, until the cursor moves on or is dropped, so a
    /// consumer that is down for a while misses nothing.
    pub async fn cursor(&self, name: &str) -> Result<u64> {
        self.inner.backend.cursor(name, None).await
    }

    /// Records that consumer `name` has delivered every event up to `seq`.
    pub async fn set_cursor(&self, name: &str, seq: u64) -> Result<u64> {
        self.inner.backend.cursor(name, Some(seq)).await
    }

    /// Drops the cursors of consumers not in `keep` (webhooks removed from the configuration), so
    /// they no longer hold history; returns how many were dropped.
    pub async fn retain_cursors(&self, keep: &[&str]) -> Result<u64> {
        self.inner.backend.retain_cursors(keep).await
    }

    /// Marks every event up to `seq` as delivered: they stay as history (within `history_max` and
    /// `history_age`) but no longer count against `outbox_limit`.
    pub async fn ack_events(&self, seq: u64) -> Result<u64> {
        self.inner.backend.ack(seq).await
    }

    pub async fn outbox_status(&self) -> Result<OutboxStatus> {
        self.inner.backend.outbox_status().await
    }

    /// Runs one maintenance pass now (heartbeat, reclaiming dead sessions, deleting due garbage).
    /// It also runs by itself in the background.
    pub async fn maintain(&self) -> Result<MaintenanceReport> {
        self.inner.backend.maintain().await
    }

    pub async fn usage(&self) -> Result<StoreUsage> {
        self.inner.backend.usage().await
    }

    /// Compares the chunks versions refer to with the chunks stored. Scans everything: for tests and
    /// for operators, not for hot paths.
    pub async fn verify(&self) -> Result<IntegrityReport> {
        let (referenced, stored) = self.inner.backend.chunk_inventory().await?;
        let stored_set: HashSet<u64> = stored.iter().copied().collect();
        let referenced_set: HashSet<u64> = referenced.iter().copied().collect();
        let mut missing: Vec<u64> = referenced
            .into_iter()
            .filter(|id| !stored_set.contains(id))
            .collect();
        let mut unreferenced: Vec<u64> = stored
            .into_iter()
            .filter(|id| !referenced_set.contains(id))
            .collect();
        missing.sort_unstable();
        unreferenced.sort_unstable();
        Ok(IntegrityReport {
            missing,
            unreferenced,
        })
    }
}

async fn maintenance_loop(inner: Arc<Inner>) {
    let cfg = &inner.config;
    let period = (cfg.orphan_timeout / 4)
        .min(cfg.gc_grace / 2)
        .clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match inner.backend.maintain().await {
            Ok(r) if r != MaintenanceReport::default() => {
                tracing::debug!(
                    reclaimed = r.sessions_reclaimed,
                    deleted = r.chunks_deleted,
                    "storage maintenance"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "storage maintenance failed; retrying"),
        }
    }
}
