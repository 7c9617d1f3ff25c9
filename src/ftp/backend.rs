//! libunftp's storage backend for filegate: each FTP operation is one call on the user's [`UserFs`].
//!
//! | FTP (RFC 959 / 3659)        | call                                           |
//! |-----------------------------|------------------------------------------------|
//! | SIZE, MDTM, MLST, RNFR      | `stat`                                         |
//! | LIST, NLST, MLSD            | `list`, one page at a time                     |
//! | RETR (after REST: offset)   | `open_read` + `stream(offset)`                 |
//! | STOR                        | `open_write(REPLACE)`, writes, `commit`        |
//! | STOR after REST, APPE       | `open_write(UPDATE)`, `set_len(offset)`, writes, `commit` |
//! | DELE / RMD / MKD            | `delete` / `rmdir` / `mkdir`                   |
//! | RNTO                        | `rename` (replacing an existing file)          |
//! | CWD                         | `stat` (must be a directory)                   |
//!
//! libunftp hands paths over unnormalised (`/a/../b`); they are resolved in the user's jail here.

use std::fmt::Debug;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use storage_backend::{ErrorKind, OpenOptions, StoreError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use unftp_core::storage::{
    Error, ErrorKind as FtpKind, Fileinfo, ListPage, Metadata, Result, StorageBackend,
    FEATURE_RESTART,
};

use super::auth::FtpUser;
use super::errors::to_ftp;
use crate::access::UserPath;

/// Bytes read from the data connection before they go to the store in one piece.
const UPLOAD_PIECE: usize = 256 * 1024;
/// Entries fetched per listing page.
const LIST_PAGE: usize = 1000;

#[derive(Debug, Clone)]
pub struct FtpBackend {
    /// A data connection silent for this long fails the transfer.
    pub idle_timeout: Duration,
    /// Uploads run as tasks of their own: when the client vanishes, libunftp drops the transfer
    /// with the control connection, but the upload must still end properly (kept, flagged
    /// incomplete), not be cancelled halfway.
    pub tasks: tokio_util::task::TaskTracker,
    /// Fires when shutdown gives up waiting: running uploads are cut off (and kept, incomplete).
    pub abort: tokio_util::sync::CancellationToken,
    /// The session's control connection, checked when an upload's data ends: a client that is
    /// gone did not finish its file (see `probe`).
    pub control: Option<std::sync::Arc<super::probe::ControlProbe>>,
}

#[derive(Debug, Clone)]
pub struct FtpMeta {
    dir: bool,
    size: u64,
    mtime: SystemTime,
}

impl Metadata for FtpMeta {
    fn len(&self) -> u64 {
        self.size
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
    fn is_file(&self) -> bool {
        !self.dir
    }
    fn is_symlink(&self) -> bool {
        false
    }
    fn modified(&self) -> Result<SystemTime> {
        Ok(self.mtime)
    }
    fn gid(&self) -> u32 {
        0
    }
    fn uid(&self) -> u32 {
        0
    }
}

impl From<&storage_backend::Metadata> for FtpMeta {
    fn from(m: &storage_backend::Metadata) -> Self {
        FtpMeta {
            dir: m.is_dir(),
            size: m.size,
            mtime: m.mtime,
        }
    }
}

fn resolve(user: &FtpUser, path: &Path) -> std::result::Result<UserPath, Error> {
    user.fs
        .resolve(&UserPath::root(), path.as_os_str().as_bytes())
        .map_err(to_ftp)
}

#[async_trait]
impl StorageBackend<FtpUser> for FtpBackend {
    type Metadata = FtpMeta;

    fn supported_features(&self) -> u32 {
        FEATURE_RESTART
    }

    async fn metadata<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> Result<FtpMeta> {
        let p = resolve(user, path.as_ref())?;
        user.fs
            .stat(&p)
            .await
            .map(|m| FtpMeta::from(&m))
            .map_err(to_ftp)
    }

    async fn list<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        path: P,
    ) -> Result<Vec<Fileinfo<PathBuf, FtpMeta>>>
    where
        <Self as StorageBackend<FtpUser>>::Metadata: Metadata,
    {
        // Whole (libunftp still asks for it outside LIST/NLST/MLSD): every page in turn.
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list_page(user, path.as_ref(), after.take()).await?;
            out.extend(page.entries);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// One page of the store's listing, as LIST, NLST and MLSD send it (patched libunftp): a big
    /// directory is never held whole.
    async fn list_page<P>(
        &self,
        user: &FtpUser,
        path: P,
        after: Option<String>,
    ) -> Result<ListPage<FtpMeta>>
    where
        P: AsRef<Path> + Send + Debug,
    {
        let dir = resolve(user, path.as_ref())?;
        let page = user
            .fs
            .list(&dir, after.as_deref(), LIST_PAGE)
            .await
            .map_err(to_ftp)?;
        Ok(ListPage {
            entries: page
                .entries
                .iter()
                .map(|e| Fileinfo {
                    path: PathBuf::from(&e.name),
                    metadata: FtpMeta::from(&e.metadata),
                })
                .collect(),
            next: page.next,
        })
    }

    async fn get<P: AsRef<Path> + Send + Debug>(
        &self,
        _user: &FtpUser,
        _path: P,
        _start_pos: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Sync + Unpin>> {
        // Only SITE MD5 would use this and it is not offered; RETR goes through `get_into`.
        Err(Error::from(FtpKind::CommandNotImplemented))
    }

    async fn get_into<'a, P, W: ?Sized>(
        &self,
        user: &FtpUser,
        path: P,
        start_pos: u64,
        output: &'a mut W,
    ) -> Result<u64>
    where
        W: AsyncWrite + Unpin + Sync + Send,
        P: AsRef<Path> + Send + Debug,
    {
        let p = resolve(user, path.as_ref())?;
        // The audit line and counters of the transfer are the shared layer's (`UserFs`).
        async {
            let download = user.fs.open_read(&p).await.map_err(to_ftp)?;
            let mut stream = download.stream(start_pos);
            let mut sent = 0u64;
            while let Some(piece) = stream.next().await {
                let piece = piece.map_err(to_ftp)?;
                match tokio::time::timeout(self.idle_timeout, output.write_all(&piece)).await {
                    Ok(Ok(())) => sent += piece.len() as u64,
                    Ok(Err(e)) => return Err(Error::new(FtpKind::ConnectionClosed, e)),
                    Err(_) => {
                        return Err(Error::new(
                            FtpKind::ConnectionClosed,
                            "the client stopped reading",
                        ))
                    }
                }
            }
            output
                .flush()
                .await
                .map_err(|e| Error::new(FtpKind::ConnectionClosed, e))?;
            Ok(sent)
        }
        .await
    }

    async fn put<P: AsRef<Path> + Send + Debug, R: AsyncRead + Send + Sync + Unpin + 'static>(
        &self,
        user: &FtpUser,
        mut input: R,
        path: P,
        start_pos: u64,
    ) -> Result<u64> {
        let p = resolve(user, path.as_ref())?;
        // STOR replaces; REST+STOR and APPE (which libunftp turns into STOR at the file's size)
        // keep the first `start_pos` bytes and continue from there.
        let opts = if start_pos == 0 {
            OpenOptions::REPLACE
        } else {
            OpenOptions::UPDATE
        };
        let mut upload = user.fs.open_write(&p, opts).await.map_err(to_ftp)?;
        let idle = self.idle_timeout;
        let abort = self.abort.clone();
        let control = self.control.clone();
        let task_path = p.clone();
        let transfer = self.tasks.spawn(async move {
            let p = task_path;
            if start_pos > 0 {
                upload.set_len(start_pos).await.map_err(to_ftp)?;
            }
            let mut buf = vec![0u8; UPLOAD_PIECE];
            let mut received = 0u64;
            loop {
                let (n, failure) = fill(&mut input, &mut buf, idle, &abort).await;
                if n > 0 {
                    if let Err(e) = upload.append(&buf[..n]).await {
                        // Refused (quota, size limit, storage down): nothing of it is published.
                        let _ = upload.abort().await;
                        // Let the client finish sending (bounded) so that it reads the reply
                        // saying why, instead of a reset data connection.
                        drain(&mut input, &mut buf, idle).await;
                        return Err(to_ftp(e));
                    }
                    received += n as u64;
                }
                match failure {
                    None if n == 0 => break,
                    None => {}
                    Some(cut) => {
                        // The client vanished mid-transfer: keep what arrived, flagged incomplete (or
                        // drop it, as storage.partial_uploads says), never as a complete file.
                        let kept = upload.cut_off().await;
                        tracing::info!(path = %p, received, kept = ?kept.as_ref().map(|c| c.is_some()), "ftp: upload cut off: {cut}");
                        return Err(Error::new(FtpKind::ConnectionClosed, cut));
                    }
                }
            }
            // The data connection ended normally, which a dead client's does too: complete only if
            // the client is still there to hear the 226.
            if let Some(control) = &control {
                if let Some(gone) = control.client_gone().await {
                    let kept = upload.cut_off().await;
                    tracing::info!(path = %p, received, kept = ?kept.as_ref().map(|c| c.is_some()), "ftp: upload cut off: {gone}");
                    return Err(Error::new(FtpKind::ConnectionClosed, gone));
                }
            }
            upload.commit(None).await.map_err(to_ftp)?;
            Ok(received)
        });
        match transfer.await {
            Ok(r) => r,
            Err(e) => Err(Error::new(
                FtpKind::LocalError,
                format!("upload task failed: {e}"),
            )),
        }
    }

    async fn del<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        let p = resolve(user, path.as_ref())?;
        user.fs.delete(&p).await.map_err(to_ftp)
    }

    async fn mkd<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        let p = resolve(user, path.as_ref())?;
        user.fs.mkdir(&p).await.map_err(to_ftp)
    }

    async fn rename<P: AsRef<Path> + Send + Debug>(
        &self,
        user: &FtpUser,
        from: P,
        to: P,
    ) -> Result<()> {
        let (f, t) = (resolve(user, from.as_ref())?, resolve(user, to.as_ref())?);
        user.fs.rename(&f, &t, true).await.map_err(to_ftp)
    }

    async fn rmd<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        let p = resolve(user, path.as_ref())?;
        user.fs.rmdir(&p).await.map_err(to_ftp)
    }

    async fn cwd<P: AsRef<Path> + Send + Debug>(&self, user: &FtpUser, path: P) -> Result<()> {
        let p = resolve(user, path.as_ref())?;
        match user.fs.stat(&p).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(to_ftp(StoreError::new(
                ErrorKind::NotADirectory,
                format!("{p}: not a directory"),
            ))),
            Err(e) => Err(to_ftp(e)),
        }
    }
}

/// Reads until `buf` is full or the stream ends; a read error or a silence longer than `idle` means
/// the client is gone.
/// Most bytes read and thrown away after a refused upload before the data connection is closed.
const DRAIN_LIMIT: u64 = 256 << 20;

/// Reads what the client still sends of a refused upload, up to [`DRAIN_LIMIT`] bytes or until it
/// is silent for `idle`.
async fn drain<R: AsyncRead + Unpin>(input: &mut R, buf: &mut [u8], idle: Duration) {
    let mut thrown = 0u64;
    while thrown < DRAIN_LIMIT {
        match tokio::time::timeout(idle, input.read(buf)).await {
            Ok(Ok(n)) if n > 0 => thrown += n as u64,
            _ => return,
        }
    }
}

/// Reads until `buf` is full or the client is done: the bytes read (0 at the end of the upload)
/// and, if the transfer cannot go on, why. Bytes that arrived before a failure are returned with
/// it, so that a cut-off upload keeps everything it received.
async fn fill<R: AsyncRead + Unpin>(
    input: &mut R,
    buf: &mut [u8],
    idle: Duration,
    abort: &tokio_util::sync::CancellationToken,
) -> (usize, Option<String>) {
    let mut n = 0;
    while n < buf.len() {
        let read = tokio::select! {
            read = tokio::time::timeout(idle, input.read(&mut buf[n..])) => read,
            _ = abort.cancelled() => return (n, Some("the gateway is shutting down".into())),
        };
        match read {
            Ok(Ok(0)) => break,
            Ok(Ok(k)) => n += k,
            Ok(Err(e)) => return (n, Some(format!("data connection failed: {e}"))),
            Err(_) => return (n, Some(format!("no data for {idle:?}"))),
        }
    }
    (n, None)
}
