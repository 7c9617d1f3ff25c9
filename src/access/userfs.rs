//! [`UserFs`]: one logged-in user's view of the store — jailed in their home, checked against their
//! permissions, counted against their quota, paced by their bandwidth limits. Front-ends hold one
//! per session and never touch the store directly.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use storage_backend::{
    ChangeContext, ChunkStream, CommitInfo, CommitOptions, ErrorKind, FileReader, ListPage,
    Metadata, OpenOptions, Store, StoreError, StorePath, WriteSession,
};

use super::accounts::Account;
use super::jail::{self, UserPath};
use crate::config::{PartialUploads, Permission};

type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone)]
pub struct UserFs {
    store: Store,
    account: Arc<Account>,
    ctx: ChangeContext,
    partial_uploads: PartialUploads,
}

impl UserFs {
    pub(super) fn new(
        store: Store,
        account: Arc<Account>,
        ctx: ChangeContext,
        partial_uploads: PartialUploads,
    ) -> Self {
        UserFs {
            store,
            account,
            ctx,
            partial_uploads,
        }
    }

    pub fn user(&self) -> &str {
        &self.account.name
    }

    pub fn context(&self) -> &ChangeContext {
        &self.ctx
    }

    pub fn can(&self, permission: Permission) -> bool {
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

    pub async fn stat(&self, path: &UserPath) -> Result<Metadata> {
        let sp = self.store_path(path)?;
        self.store.stat(&sp).await.map_err(|e| self.shown(e))
    }

    pub async fn list(
        &self,
        dir: &UserPath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        self.require(Permission::List, "list directories")?;
        let sp = self.store_path(dir)?;
        self.store
            .list(&sp, after, limit)
            .await
            .map_err(|e| self.shown(e))
    }

    pub async fn mkdir(&self, path: &UserPath) -> Result<()> {
        self.require(Permission::Mkdir, "create directories")?;
        let sp = self.changeable(path)?;
        self.store
            .mkdir(&sp, &self.ctx)
            .await
            .map(drop)
            .map_err(|e| self.shown(e))
    }

    pub async fn rmdir(&self, path: &UserPath) -> Result<()> {
        self.require(Permission::Delete, "remove directories")?;
        let sp = self.changeable(path)?;
        self.store
            .rmdir(&sp, &self.ctx)
            .await
            .map(drop)
            .map_err(|e| self.shown(e))
    }

    pub async fn delete(&self, path: &UserPath) -> Result<()> {
        self.require(Permission::Delete, "delete files")?;
        let sp = self.changeable(path)?;
        let size = self.size_if_counted(&sp).await;
        self.store
            .delete(&sp, &self.ctx)
            .await
            .map_err(|e| self.shown(e))?;
        if let Some(size) = size {
            self.account.quota.settle(0, 0, -(size as i64), -1);
        }
        Ok(())
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
        self.store
            .rename(&f, &t, replace, &self.ctx)
            .await
            .map_err(|e| self.shown(e))?;
        if let Some(size) = replaced {
            if f != t {
                self.account.quota.settle(0, 0, -(size as i64), -1);
            }
        }
        Ok(())
    }

    pub async fn set_mtime(&self, path: &UserPath, mtime: SystemTime) -> Result<()> {
        self.require(Permission::Write, "change files")?;
        let sp = self.changeable(path)?;
        self.store
            .set_mtime(&sp, mtime, &self.ctx)
            .await
            .map(drop)
            .map_err(|e| self.shown(e))
    }

    /// Truncates or extends a file (SFTP setstat size).
    pub async fn set_size(&self, path: &UserPath, size: u64) -> Result<()> {
        let mut upload = self.open_write(path, OpenOptions::EXISTING).await?;
        upload.set_len(size).await?;
        upload.commit(None).await.map(drop)
    }

    pub async fn open_read(&self, path: &UserPath) -> Result<Download> {
        self.require(Permission::Read, "read files")?;
        let sp = self.store_path(path)?;
        let reader = self.store.open_read(&sp).await.map_err(|e| self.shown(e))?;
        Ok(Download {
            reader,
            fs: self.clone(),
        })
    }

    pub async fn open_write(&self, path: &UserPath, opts: OpenOptions) -> Result<Upload> {
        self.require(Permission::Write, "upload files")?;
        let sp = self.changeable(path)?;
        let quota = &self.account.quota;
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
        let session = match self.store.open_write(&sp, opts, &self.ctx).await {
            Ok(s) => s,
            Err(e) => {
                if quota.is_limited() && !existed {
                    quota.settle(0, 1, 0, 0);
                }
                return Err(self.shown(e));
            }
        };
        Ok(Upload {
            session: Some(session),
            fs: self.clone(),
            // A replacement is credited with the size of what it replaces.
            old_size,
            replaced_size: old_size,
            reserved_bytes: 0,
            reserved_file: quota.is_limited() && !existed,
        })
    }

    fn require(&self, permission: Permission, what: &str) -> Result<()> {
        if self.account.can(permission) {
            Ok(())
        } else {
            Err(StoreError::new(
                ErrorKind::PermissionDenied,
                format!("permission denied: {} may not {what}", self.account.name),
            ))
        }
    }

    fn store_path(&self, path: &UserPath) -> Result<StorePath> {
        jail::to_store(&self.account.home, path)
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
        let home = self.account.home.as_str();
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

/// An upload in progress under the user's permissions, quota and bandwidth.
pub struct Upload {
    session: Option<WriteSession>,
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

    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.grow_to(offset + data.len() as u64)?;
        if let Some(t) = &self.fs.account.upload {
            t.take(data.len()).await;
        }
        let fs = self.fs.clone();
        self.session()
            .write_at(offset, data)
            .await
            .map_err(|e| fs.shown(e))
    }

    pub async fn append(&mut self, data: &[u8]) -> Result<()> {
        let end = self.size();
        self.write_at(end, data).await
    }

    pub async fn set_len(&mut self, len: u64) -> Result<()> {
        self.grow_to(len)?;
        let fs = self.fs.clone();
        self.session().set_len(len).await.map_err(|e| fs.shown(e))
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
        self.finish(CommitOptions {
            complete: true,
            mtime,
        })
        .await
    }

    /// The client went away mid-transfer: keep what arrived, flagged incomplete, or drop it, as
    /// `storage.partial_uploads` says. Returns the commit when one was made.
    pub async fn cut_off(mut self) -> Result<Option<CommitInfo>> {
        match self.fs.partial_uploads {
            PartialUploads::Keep => self
                .finish(CommitOptions {
                    complete: false,
                    mtime: None,
                })
                .await
                .map(Some),
            PartialUploads::Discard => {
                self.abort().await?;
                Ok(None)
            }
        }
    }

    pub async fn abort(mut self) -> Result<()> {
        let session = self.session.take().expect("upload ended once");
        self.settle(0, false);
        session.abort().await.map_err(|e| self.fs.shown(e))
    }

    async fn finish(&mut self, opts: CommitOptions) -> Result<CommitInfo> {
        let session = self.session.take().expect("upload ended once");
        match session.commit(opts).await {
            Ok(info) => {
                self.settle(info.size, true);
                Ok(info)
            }
            Err(e) => {
                self.settle(0, false);
                Err(self.fs.shown(e))
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

    fn settle(&mut self, committed_size: u64, committed: bool) {
        let quota = &self.fs.account.quota;
        if !quota.is_limited() {
            return;
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
    fs: UserFs,
}

impl Download {
    pub fn metadata(&self) -> &Metadata {
        self.reader.metadata()
    }

    pub fn size(&self) -> u64 {
        self.reader.size()
    }

    pub async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        let data = self
            .reader
            .read_at(offset, len)
            .await
            .map_err(|e| self.fs.shown(e))?;
        if let Some(t) = &self.fs.account.download {
            t.take(data.len()).await;
        }
        Ok(data)
    }

    /// The content from `offset` on, piece by piece (a chunk at most), paced by the bandwidth limit.
    pub fn stream(&self, offset: u64) -> DownloadStream {
        DownloadStream {
            inner: self.reader.stream(offset),
            fs: self.fs.clone(),
        }
    }
}

pub struct DownloadStream {
    inner: ChunkStream,
    fs: UserFs,
}

impl DownloadStream {
    pub async fn next(&mut self) -> Option<Result<Bytes>> {
        let piece = self.inner.next().await?;
        Some(match piece {
            Ok(data) => {
                if let Some(t) = &self.fs.account.download {
                    t.take(data.len()).await;
                }
                Ok(data)
            }
            Err(e) => Err(self.fs.shown(e)),
        })
    }
}
