//! [`UserFs`]: one logged-in user's view of the store — jailed in their home, checked against their
//! permissions, counted against their quota, paced by their bandwidth limits. Front-ends hold one
//! per session and never touch the store directly.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use storage_backend::{
    ChangeContext, ChunkStream, CommitInfo, CommitOptions, ErrorKind, FileReader, ListPage,
    Metadata, OpenOptions, Store, StoreError, StorePath, WriteSession,
};

use super::accounts::Account;
use super::jail::{self, UserPath};
use super::open_writes::{OpenWrite, OpenWrites};
use crate::config::{PartialUploads, Permission};
use crate::metrics::{Metrics, SessionCounters};

type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone)]
pub struct UserFs {
    store: Store,
    account: Arc<Account>,
    ctx: ChangeContext,
    partial_uploads: PartialUploads,
    open_writes: Arc<OpenWrites>,
    session: Arc<Session>,
    /// Set when the session is narrower than its account (an HTTP API key): a directory of the
    /// home that becomes its root, and perhaps read-only. Every path and permission check below
    /// goes through it, so no front-end has to remember the narrowing.
    scope: Option<Arc<Scope>>,
}

/// A narrowed view: `home` replaces the account's home, `read_only` keeps only List and Read.
struct Scope {
    home: StorePath,
    read_only: bool,
}

/// The logged-in session behind a [`UserFs`] and its clones: counted while it lasts, and logged
/// (the audit trail's session end line) when the last clone goes.
struct Session {
    metrics: Arc<Metrics>,
    counters: SessionCounters,
    protocol: &'static str,
    user: String,
    peer: String,
    started: Instant,
    received: AtomicU64,
    sent: AtomicU64,
    transfers: AtomicU64,
    /// Transfers running now (open uploads and downloads), and a wake-up for when none is left:
    /// at shutdown an idle session is closed at once, a busy one gets the grace period.
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

impl UserFs {
    pub(super) fn new(
        store: Store,
        account: Arc<Account>,
        ctx: ChangeContext,
        partial_uploads: PartialUploads,
        open_writes: Arc<OpenWrites>,
        metrics: Arc<Metrics>,
        protocol: &'static str,
    ) -> Self {
        tracing::info!(
            user = %ctx.user,
            protocol,
            peer = %ctx.peer,
            "session start"
        );
        let counters = metrics.session_started(protocol);
        UserFs {
            store,
            account,
            ctx: ctx.clone(),
            partial_uploads,
            open_writes,
            session: Arc::new(Session {
                metrics,
                counters,
                protocol,
                user: ctx.user.clone(),
                peer: ctx.peer.clone(),
                started: Instant::now(),
                received: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                transfers: AtomicU64::new(0),
                running: AtomicUsize::new(0),
                idle: tokio::sync::Notify::new(),
            }),
            scope: None,
        }
    }

    /// This session narrowed to `dir` (which becomes its `/`, as the home is for the account) and,
    /// with `read_only`, to listing and reading. Quota, bandwidth and audit stay the account's.
    /// Narrowing a narrowed session narrows further: it never widens.
    pub fn narrowed(&self, dir: &UserPath, read_only: bool) -> Result<UserFs> {
        let home = self.store_path(dir)?;
        let read_only = read_only || self.scope.as_ref().is_some_and(|s| s.read_only);
        Ok(UserFs {
            scope: Some(Arc::new(Scope { home, read_only })),
            ..self.clone()
        })
    }

    /// The store directory this session sees as `/`: the account's home, or the narrowed one.
    pub fn home(&self) -> &StorePath {
        match &self.scope {
            Some(scope) => &scope.home,
            None => &self.account.home,
        }
    }

    /// The permissions this session has (the account's, less what a read-only scope takes away).
    pub fn permissions(&self) -> Vec<Permission> {
        Permission::ALL
            .into_iter()
            .filter(|p| self.can(*p))
            .collect()
    }

    /// Runs a store call, timing it for the storage latency histogram and showing its error to
    /// the user in their own paths.
    async fn timed<T>(&self, op: &'static str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let start = Instant::now();
        let result = call.await;
        self.session.metrics.storage_call(op, start.elapsed());
        result.map_err(|e| self.shown(e))
    }

    fn received(&self, bytes: usize) {
        self.session.counters.received.inc_by(bytes as u64);
        self.session
            .received
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn sent(&self, bytes: usize) {
        self.session.counters.sent.inc_by(bytes as u64);
        self.session.sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// (bytes, files, byte quota, file quota) of the home. A limited quota keeps a running count
    /// (recounted every ten minutes); without one the home is walked now, page by page.
    pub async fn usage(&self) -> Result<(u64, u64, Option<u64>, Option<u64>)> {
        let quota = &self.account.quota;
        if quota.is_limited() {
            return Ok(quota.usage());
        }
        let (bytes, files) = self
            .timed(
                "usage",
                super::quota::count(&self.store, &self.account.home),
            )
            .await?;
        Ok((bytes, files, None, None))
    }

    /// Whether `storage.partial_uploads` keeps what a cut-off upload received.
    pub fn keeps_partial_uploads(&self) -> bool {
        self.partial_uploads == PartialUploads::Keep
    }

    pub fn user(&self) -> &str {
        &self.account.name
    }

    /// Returns once no transfer of this session is running (at once when none is).
    pub async fn idle(&self) {
        loop {
            let notified = self.session.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so an end between the check and the wait is not missed.
            notified.as_mut().enable();
            if self.session.running.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn context(&self) -> &ChangeContext {
        &self.ctx
    }

    pub fn can(&self, permission: Permission) -> bool {
        let read_only = self.scope.as_ref().is_some_and(|s| s.read_only);
        if read_only && !matches!(permission, Permission::List | Permission::Read) {
            return false;
        }
        self.account.can(permission)
    }

    /// (bytes used, quota) when a byte quota is set.
    pub fn quota_bytes(&self) -> (u64, Option<u64>) {
        self.account.quota.bytes()
    }

    /// Resolves a client's path (bytes as sent) against the working directory, inside the home.
    pub fn resolve(&self, cwd: &UserPath, input: &[u8]) -> Result<UserPath> {
        jail::resolve(cwd, input)
    }

    /// The path's metadata. A file open for writing in this process shows its current size and
    /// last change (as on a POSIX file system), even before its first commit; see `open_writes`.
    pub async fn stat(&self, path: &UserPath) -> Result<Metadata> {
        let sp = self.store_path(path)?;
        match self.timed("stat", self.store.stat(&sp)).await {
            Ok(meta) if meta.is_file() => Ok(match self.open_writes.get(&sp) {
                Some(open) => Metadata {
                    size: open.size,
                    mtime: open.mtime,
                    ..meta
                },
                None => meta,
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => self.open_writes.get(&sp).ok_or(e),
            other => other,
        }
    }

    pub async fn list(
        &self,
        dir: &UserPath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        self.require(Permission::List, "list directories")?;
        let sp = self.store_path(dir)?;
        let mut page = self
            .timed("list", self.store.list(&sp, after, limit))
            .await?;
        self.merge_open_writes(&sp, after, &mut page);
        if sp.is_root() {
            page.entries
                .retain(|e| !is_staging(&format!("/{}", e.name)));
        }
        Ok(page)
    }

    /// Adds the files being written in `dir` (in this process) to a listing page, as `stat` shows
    /// them: each in the page whose name range holds it, so paging neither loses nor repeats one.
    fn merge_open_writes(&self, dir: &StorePath, after: Option<&str>, page: &mut ListPage) {
        let open = self.open_writes.in_dir(dir);
        if open.is_empty() {
            return;
        }
        // This page covers names after `after` up to its last name (or all of them, if last).
        let upto = page
            .next
            .as_ref()
            .and_then(|_| page.entries.last().map(|e| e.name.clone()));
        for (name, meta) in open {
            if after.is_some_and(|a| name.as_str() <= a) || upto.as_ref().is_some_and(|u| &name > u)
            {
                continue;
            }
            match page.entries.binary_search_by(|e| e.name.cmp(&name)) {
                Ok(i) if page.entries[i].metadata.is_file() => {
                    let m = &mut page.entries[i].metadata;
                    m.size = meta.size;
                    m.mtime = meta.mtime;
                }
                Ok(_) => {}
                Err(i) => page.entries.insert(
                    i,
                    storage_backend::DirEntry {
                        name,
                        metadata: meta,
                    },
                ),
            }
        }
    }

    pub async fn mkdir(&self, path: &UserPath) -> Result<()> {
        self.require(Permission::Mkdir, "create directories")?;
        let sp = self.changeable(path)?;
        self.timed("mkdir", self.store.mkdir(&sp, &self.ctx))
            .await
            .map(drop)
    }

    /// Makes the missing directories above `path` (devices and scripts put to paths, not into
    /// prepared trees: MQTT `put`, HTTP `?parents=true`). Walks up only as far as the first one
    /// that exists; one that appears meanwhile is fine, a file in the way is not.
    pub async fn make_parents(&self, path: &UserPath) -> Result<()> {
        let mut missing = Vec::new();
        let mut dir = path.parent();
        while !dir.is_root() {
            match self.stat(&dir).await {
                Ok(m) if m.is_dir() => break,
                Ok(_) => {
                    return Err(StoreError::new(
                        ErrorKind::NotADirectory,
                        format!("{dir} is a file, not a directory"),
                    ))
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    missing.push(dir.clone());
                    dir = dir.parent();
                }
                Err(e) => return Err(e),
            }
        }
        for d in missing.into_iter().rev() {
            match self.mkdir(&d).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => match self.stat(&d).await {
                    Ok(m) if m.is_dir() => {}
                    _ => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub async fn rmdir(&self, path: &UserPath) -> Result<()> {
        self.require(Permission::Delete, "remove directories")?;
        let sp = self.changeable(path)?;
        self.timed("rmdir", self.store.rmdir(&sp, &self.ctx))
            .await
            .map(drop)
    }

    pub async fn delete(&self, path: &UserPath) -> Result<()> {
        self.require(Permission::Delete, "delete files")?;
        let sp = self.changeable(path)?;
        let size = self.size_if_counted(&sp).await;
        self.timed("delete", self.store.delete(&sp, &self.ctx))
            .await?;
        if let Some(size) = size {
            self.removed_from_quota(size).await;
        }
        Ok(())
    }

    /// A file of `size` bytes left the home: counted here at once, and in the shared usage.
    async fn removed_from_quota(&self, size: u64) {
        let quota = &self.account.quota;
        quota.settle(0, 0, -(size as i64), -1);
        quota
            .changed(&self.store, &self.account.home, -(size as i64), -1)
            .await;
    }

    /// Renames; with `replace`, an existing target file (or empty directory) is replaced.
    pub async fn rename(&self, from: &UserPath, to: &UserPath, replace: bool) -> Result<()> {
        self.require(Permission::Rename, "rename")?;
        let (f, t) = (self.changeable(from)?, self.changeable(to)?);
        let replaced = if replace {
            self.size_if_counted(&t).await
        } else {
            None
        };
        self.timed("rename", self.store.rename(&f, &t, replace, &self.ctx))
            .await?;
        if let Some(size) = replaced {
            if f != t {
                self.removed_from_quota(size).await;
            }
        }
        Ok(())
    }

    pub async fn set_mtime(&self, path: &UserPath, mtime: SystemTime) -> Result<()> {
        self.require(Permission::Write, "change files")?;
        let sp = self.changeable(path)?;
        self.timed("set_mtime", self.store.set_mtime(&sp, mtime, &self.ctx))
            .await
            .map(drop)
    }

    /// Truncates or extends a file (SFTP setstat size).
    pub async fn set_size(&self, path: &UserPath, size: u64) -> Result<()> {
        let mut upload = self.open_write(path, OpenOptions::EXISTING).await?;
        upload.set_len(size).await?;
        upload.commit(None).await.map(drop)
    }

    pub async fn open_read(&self, path: &UserPath) -> Result<Download> {
        let opened = self.open_read_checked(path).await;
        if let Err(e) = &opened {
            self.refused("download", path, e);
        }
        opened
    }

    async fn open_read_checked(&self, path: &UserPath) -> Result<Download> {
        self.require(Permission::Read, "read files")?;
        let sp = self.store_path(path)?;
        let reader = self.timed("open_read", self.store.open_read(&sp)).await?;
        let log = Arc::new(TransferLog::new(self.clone(), &sp, "download"));
        if reader.size() == 0 {
            log.reached_end.store(true, Ordering::Relaxed);
        }
        Ok(Download { reader, log })
    }

    pub async fn open_write(&self, path: &UserPath, opts: OpenOptions) -> Result<Upload> {
        let opened = async {
            self.require(Permission::Write, "upload files")?;
            let sp = self.changeable(path)?;
            self.open_write_at(sp.clone(), opts, &sp).await
        }
        .await;
        if let Err(e) = &opened {
            self.refused("upload", path, e);
        }
        opened
    }

    /// The audit line (and the failed-transfer count) of a transfer refused before it began: the
    /// same line as a transfer's end, so every protocol's refusals are in one place.
    fn refused(&self, direction: &'static str, path: &UserPath, e: &StoreError) {
        // The store path, as a transfer's own line names it (a path outside the jail has none).
        let shown = self
            .store_path(path)
            .map(|p| p.to_string())
            .unwrap_or_else(|_| path.to_string());
        let session = &self.session;
        session
            .metrics
            .transfer(session.protocol, direction, "failed");
        tracing::info!(
            user = %self.ctx.user,
            protocol = session.protocol,
            peer = %self.ctx.peer,
            path = %shown,
            direction,
            bytes = 0u64,
            duration_ms = 0u64,
            result = "refused",
            error = %e,
            "transfer"
        );
    }

    /// A write session whose content the client may also read back (SFTP's READ|WRITE open):
    /// both permissions, or a write-only account could read any existing file by opening it so.
    pub async fn open_read_write(&self, path: &UserPath, opts: OpenOptions) -> Result<Upload> {
        self.require(Permission::Read, "read files")?;
        self.open_write(path, opts).await
    }

    /// A write session on store path `sp` (a file in the home, or a staging file), counted in the
    /// quota; `shown` is the path its audit line names.
    async fn open_write_at(
        &self,
        sp: StorePath,
        opts: OpenOptions,
        shown: &StorePath,
    ) -> Result<Upload> {
        let quota = &self.account.quota;
        if quota.is_limited() {
            // Every gateway's commits count: take the shared usage before reserving.
            self.timed("quota", quota.refresh(&self.store, &self.account.home))
                .await?;
        }
        // With a quota, know what is being replaced: its bytes and file come back at commit.
        let (old_size, existed) = if quota.is_limited() {
            match self.store.stat(&sp).await {
                Ok(m) if m.is_file() => (m.size, true),
                _ => (0, false),
            }
        } else {
            (0, false)
        };
        if quota.is_limited() && !existed {
            quota.reserve(0, 1).map_err(|e| self.shown(e))?;
        }
        let session = match self
            .timed("open_write", self.store.open_write(&sp, opts, &self.ctx))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                if quota.is_limited() && !existed {
                    quota.settle(0, 1, 0, 0);
                }
                return Err(e);
            }
        };
        let open = self.open_writes.register(&sp, session.size());
        Ok(Upload {
            open,
            session: Some(session),
            log: TransferLog::new(self.clone(), shown, "upload"),
            fs: self.clone(),
            // A replacement is credited with the size of what it replaces.
            old_size,
            replaced_size: old_size,
            reserved_bytes: 0,
            reserved_file: quota.is_limited() && !existed,
        })
    }

    // --- Staging files (tus uploads) ---
    //
    // A resumable upload collects its bytes in a staging file under [`STAGING_DIR`], outside every
    // home: each request's bytes are committed there (flagged incomplete), so any gateway can go
    // on from them, while nothing appears at the target. The last request publishes the file with
    // one rename, whose event announces the target as created (the events layer treats the
    // staging directory as a temporary name, see `events::names`). Staging files count in the
    // quota of the user who writes them.

    fn staging_path(name: &str) -> Result<StorePath> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(StoreError::new(
                ErrorKind::InvalidArgument,
                format!("{name:?} is not a staging file name"),
            ));
        }
        StorePath::parse(&format!("{STAGING_DIR}/{name}"))
    }

    /// Opens staging file `name` to append to it (creating it, and the staging directory, when
    /// missing). `target` is the path the upload is for: the audit line names it.
    pub async fn open_staging(&self, name: &str, target: &UserPath) -> Result<Upload> {
        self.require(Permission::Write, "upload files")?;
        let shown = self.changeable(target)?;
        let sp = Self::staging_path(name)?;
        let dir = StorePath::parse(STAGING_DIR)?;
        match self.store.stat(&dir).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match self.timed("mkdir", self.store.mkdir(&dir, &self.ctx)).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(self.shown(e)),
        }
        self.open_write_at(sp, OpenOptions::UPDATE, &shown).await
    }

    /// The staging file's metadata (`NotFound` before its first commit).
    pub async fn stat_staging(&self, name: &str) -> Result<Metadata> {
        let sp = Self::staging_path(name)?;
        self.timed("stat", self.store.stat(&sp)).await
    }

    /// Publishes staging file `name` at `target` in one rename, replacing a file there. Its event
    /// is announced as the target's `file.created` (`file.modified` when it replaced one), or
    /// `file.incomplete` when the staging file is incomplete.
    pub async fn publish_staging(
        &self,
        name: &str,
        target: &UserPath,
        replace: bool,
    ) -> Result<()> {
        self.require(Permission::Write, "upload files")?;
        let t = self.changeable(target)?;
        let sp = Self::staging_path(name)?;
        let replaced = if replace {
            self.size_if_counted(&t).await
        } else {
            None
        };
        self.timed("rename", self.store.rename(&sp, &t, replace, &self.ctx))
            .await?;
        if let Some(size) = replaced {
            self.removed_from_quota(size).await;
        }
        Ok(())
    }

    /// Deletes staging file `name` (a terminated or expired upload); nothing is announced.
    pub async fn drop_staging(&self, name: &str) -> Result<()> {
        let sp = Self::staging_path(name)?;
        let size = self.size_if_counted(&sp).await;
        match self
            .timed("delete", self.store.delete(&sp, &self.ctx))
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        if let Some(size) = size {
            self.removed_from_quota(size).await;
        }
        Ok(())
    }

    fn require(&self, permission: Permission, what: &str) -> Result<()> {
        if self.can(permission) {
            Ok(())
        } else if self.account.can(permission) {
            Err(StoreError::new(
                ErrorKind::PermissionDenied,
                format!("permission denied: this session is read-only and may not {what}"),
            ))
        } else {
            Err(StoreError::new(
                ErrorKind::PermissionDenied,
                format!("permission denied: {} may not {what}", self.account.name),
            ))
        }
    }

    fn store_path(&self, path: &UserPath) -> Result<StorePath> {
        let sp = jail::to_store(self.home(), path)?;
        // Only a user whose home is `/` could name the staging directory; it is not theirs.
        if is_staging(sp.as_str()) {
            return Err(StoreError::new(
                ErrorKind::NotFound,
                format!("{path}: not found"),
            ));
        }
        Ok(sp)
    }

    /// The store path of something the user wants to change: never the home itself.
    fn changeable(&self, path: &UserPath) -> Result<StorePath> {
        if path.is_root() {
            return Err(StoreError::new(
                ErrorKind::PermissionDenied,
                "permission denied: your home directory itself cannot be changed",
            ));
        }
        self.store_path(path)
    }

    async fn size_if_counted(&self, sp: &StorePath) -> Option<u64> {
        if !self.account.quota.is_limited() {
            return None;
        }
        match self.store.stat(sp).await {
            Ok(m) if m.is_file() => Some(m.size),
            _ => None,
        }
    }

    /// Rewrites a store error for the user: store paths become paths in their home.
    pub(crate) fn shown(&self, e: StoreError) -> StoreError {
        let home = self.home().as_str();
        if home == "/" {
            return e;
        }
        let message = e
            .message()
            .replace(&format!("{home}/"), "/")
            .replace(&format!("{home}:"), "/:")
            .replace(&format!("\"{home}\""), "\"/\"");
        StoreError::new(e.kind(), message)
    }
}

/// One transfer's line in the audit trail (and its count in the metrics), written once, when the
/// transfer ends — however it ends.
struct TransferLog {
    fs: UserFs,
    path: String,
    direction: &'static str,
    started: Instant,
    bytes: AtomicU64,
    /// Set by the upload's end; a download's result comes from `reached_end`.
    result: std::sync::OnceLock<&'static str>,
    reached_end: AtomicBool,
}

impl TransferLog {
    fn new(fs: UserFs, path: &StorePath, direction: &'static str) -> TransferLog {
        fs.session.running.fetch_add(1, Ordering::SeqCst);
        TransferLog {
            fs,
            path: path.to_string(),
            direction,
            started: Instant::now(),
            bytes: AtomicU64::new(0),
            result: std::sync::OnceLock::new(),
            reached_end: AtomicBool::new(false),
        }
    }

    fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if self.direction == "upload" {
            self.fs.received(bytes);
        } else {
            self.fs.sent(bytes);
        }
    }

    fn end(&self, result: &'static str) {
        let _ = self.result.set(result);
    }
}

impl Drop for TransferLog {
    fn drop(&mut self) {
        let result = match self.result.get() {
            Some(r) => *r,
            None if self.direction == "download" && self.reached_end.load(Ordering::Relaxed) => {
                "ok"
            }
            None if self.direction == "download" => "incomplete",
            None => "aborted",
        };
        let session = &self.fs.session;
        session.transfers.fetch_add(1, Ordering::Relaxed);
        if session.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            session.idle.notify_waiters();
        }
        session
            .metrics
            .transfer(session.protocol, self.direction, result);
        tracing::info!(
            user = %self.fs.ctx.user,
            protocol = session.protocol,
            peer = %self.fs.ctx.peer,
            path = %self.path,
            direction = self.direction,
            bytes = self.bytes.load(Ordering::Relaxed),
            duration_ms = self.started.elapsed().as_millis() as u64,
            result,
            "transfer"
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.metrics.session_ended(self.protocol);
        tracing::info!(
            user = %self.user,
            protocol = self.protocol,
            peer = %self.peer,
            duration_ms = self.started.elapsed().as_millis() as u64,
            bytes_in = self.received.load(Ordering::Relaxed),
            bytes_out = self.sent.load(Ordering::Relaxed),
            transfers = self.transfers.load(Ordering::Relaxed),
            "session end"
        );
    }
}

/// The store directory where resumable (tus) uploads collect their bytes, outside every home.
pub const STAGING_DIR: &str = "/.filegate-uploads";

/// Whether store path `path` is the staging directory or in it.
pub fn is_staging(path: &str) -> bool {
    path.strip_prefix(STAGING_DIR)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// An upload in progress under the user's permissions, quota and bandwidth.
pub struct Upload {
    /// Shows the file to `stat` and listings while it is open.
    open: OpenWrite,
    session: Option<WriteSession>,
    log: TransferLog,
    fs: UserFs,
    /// Bytes already counted in the quota for this file (the content it replaces or continues).
    old_size: u64,
    /// Bytes of the file this upload replaces when it commits.
    replaced_size: u64,
    reserved_bytes: u64,
    reserved_file: bool,
}

impl Upload {
    fn session(&mut self) -> &mut WriteSession {
        self.session.as_mut().expect("upload used after it ended")
    }

    pub fn size(&self) -> u64 {
        self.session.as_ref().map(|s| s.size()).unwrap_or(0)
    }

    /// The file as `stat` shows it while it is open: its current size and last change.
    pub fn metadata(&self) -> Metadata {
        self.open.metadata()
    }

    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.grow_to(offset + data.len() as u64)?;
        if let Some(t) = &self.fs.account.upload {
            t.take(data.len()).await;
        }
        let session = self.session.as_mut().expect("upload used after it ended");
        self.fs
            .timed("write", session.write_at(offset, data))
            .await?;
        self.open.set_size(session.size());
        self.log.add(data.len());
        Ok(())
    }

    pub async fn append(&mut self, data: &[u8]) -> Result<()> {
        let end = self.size();
        self.write_at(end, data).await
    }

    pub async fn set_len(&mut self, len: u64) -> Result<()> {
        self.grow_to(len)?;
        let fs = self.fs.clone();
        self.session().set_len(len).await.map_err(|e| fs.shown(e))?;
        self.open.set_size(len);
        Ok(())
    }

    pub async fn read_at(&mut self, offset: u64, len: usize) -> Result<Bytes> {
        let fs = self.fs.clone();
        self.session()
            .read_at(offset, len)
            .await
            .map_err(|e| fs.shown(e))
    }

    /// Publishes the upload as a complete file.
    pub async fn commit(mut self, mtime: Option<SystemTime>) -> Result<CommitInfo> {
        let opts = CommitOptions {
            complete: true,
            mtime,
        };
        self.finish(opts, "ok").await
    }

    /// The client went away mid-transfer: keep what arrived, flagged incomplete, or drop it, as
    /// `storage.partial_uploads` says. An upload that received nothing (its connection failed at
    /// once, or a TLS handshake did) changes nothing: there is nothing to keep or resume, and the
    /// file stays as it was. Returns the commit when one was made.
    pub async fn cut_off(mut self) -> Result<Option<CommitInfo>> {
        let received = self.log.bytes.load(Ordering::Relaxed);
        match self.fs.partial_uploads {
            PartialUploads::Keep if received > 0 => {
                let opts = CommitOptions {
                    complete: false,
                    mtime: None,
                };
                self.finish(opts, "incomplete").await.map(Some)
            }
            _ => {
                self.abort().await?;
                Ok(None)
            }
        }
    }

    /// Keeps what arrived, flagged incomplete, whatever `storage.partial_uploads` says: for a
    /// staging file, which nobody sees and whose client resumes from it.
    pub async fn commit_incomplete(mut self) -> Result<CommitInfo> {
        let opts = CommitOptions {
            complete: false,
            mtime: None,
        };
        self.finish(opts, "incomplete").await
    }

    pub async fn abort(mut self) -> Result<()> {
        let session = self.session.take().expect("upload ended once");
        self.settle(0, false);
        self.log.end("aborted");
        session.abort().await.map_err(|e| self.fs.shown(e))
    }

    async fn finish(&mut self, opts: CommitOptions, result: &'static str) -> Result<CommitInfo> {
        let session = self.session.take().expect("upload ended once");
        match self.fs.timed("commit", session.commit(opts)).await {
            Ok(info) => {
                let (delta_bytes, delta_files) = self.settle(info.size, true);
                let fs = &self.fs;
                fs.account
                    .quota
                    .changed(&fs.store, &fs.account.home, delta_bytes, delta_files)
                    .await;
                self.log.end(result);
                Ok(info)
            }
            Err(e) => {
                self.settle(0, false);
                self.log.end("failed");
                Err(e)
            }
        }
    }

    /// Reserves quota for growing to `end` bytes.
    fn grow_to(&mut self, end: u64) -> Result<()> {
        let quota = &self.fs.account.quota;
        if !quota.is_limited() {
            return Ok(());
        }
        let need = end.saturating_sub(self.old_size + self.reserved_bytes);
        if need > 0 {
            quota.reserve(need, 0).map_err(|e| self.fs.shown(e))?;
            self.reserved_bytes += need;
        }
        Ok(())
    }

    /// Gives the reservations back and counts what was committed: (bytes, files) it added.
    fn settle(&mut self, committed_size: u64, committed: bool) -> (i64, i64) {
        let quota = &self.fs.account.quota;
        if !quota.is_limited() {
            return (0, 0);
        }
        let reserved_file = std::mem::take(&mut self.reserved_file);
        let (delta_bytes, delta_files) = if committed {
            (
                committed_size as i64 - self.replaced_size as i64,
                reserved_file as i64,
            )
        } else {
            (0, 0)
        };
        quota.settle(
            std::mem::take(&mut self.reserved_bytes),
            reserved_file as u64,
            delta_bytes,
            delta_files,
        );
        (delta_bytes, delta_files)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // A session dropped without commit or abort is aborted by the store; give the quota back.
        if self.session.is_some() {
            self.settle(0, false);
        }
    }
}

/// A download under the user's bandwidth limit.
pub struct Download {
    reader: FileReader,
    log: Arc<TransferLog>,
}

impl Download {
    pub fn metadata(&self) -> &Metadata {
        self.reader.metadata()
    }

    pub fn size(&self) -> u64 {
        self.reader.size()
    }

    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        let fs = &self.log.fs;
        let data = fs.timed("read", self.reader.read_at(offset, len)).await?;
        if let Some(t) = &fs.account.download {
            t.take(data.len()).await;
        }
        self.log.add(data.len());
        if offset + data.len() as u64 >= self.reader.size() {
            self.log.reached_end.store(true, Ordering::Relaxed);
        }
        Ok(data)
    }

    /// The content from `offset` on, piece by piece (a chunk at most), paced by the bandwidth limit.
    pub fn stream(&self, offset: u64) -> DownloadStream {
        DownloadStream {
            inner: self.reader.stream(offset),
            log: self.log.clone(),
        }
    }
}

pub struct DownloadStream {
    inner: ChunkStream,
    log: Arc<TransferLog>,
}

impl DownloadStream {
    pub async fn next(&mut self) -> Option<Result<Bytes>> {
        let Some(piece) = self.inner.next().await else {
            self.log.reached_end.store(true, Ordering::Relaxed);
            return None;
        };
        let fs = &self.log.fs;
        Some(match piece {
            Ok(data) => {
                if let Some(t) = &fs.account.download {
                    t.take(data.len()).await;
                }
                self.log.add(data.len());
                Ok(data)
            }
            Err(e) => Err(fs.shown(e)),
        })
    }
}
