//! The SFTP subsystem (protocol version 3, draft-ietf-secsh-filexfer-02, plus OpenSSH's extensions)
//! over the user's [`UserFs`]. One handler per channel; russh-sftp calls it one request at a time.
//!
//! | SFTP request                     | call                                                  |
//! |----------------------------------|-------------------------------------------------------|
//! | REALPATH                         | jail resolution only                                  |
//! | STAT, LSTAT, FSTAT               | `stat` (or the open handle's own size)                |
//! | OPEN with WRITE/APPEND/CREAT     | `open_write` (CREAT → create, EXCL → create_new, TRUNC → truncate) |
//! | OPEN read-only                   | `open_read`                                           |
//! | READ / WRITE                     | `read_at` / `write_at` (APPEND: at the end)           |
//! | CLOSE of a written file          | `commit` — a failure is reported here, never dropped  |
//! | SETSTAT, FSETSTAT                | `set_size`, `set_mtime` (on an open upload: `set_len`, mtime at commit) |
//! | OPENDIR, READDIR                 | `list`, one page per READDIR                          |
//! | REMOVE, MKDIR, RMDIR             | `delete`, `mkdir`, `rmdir`                            |
//! | RENAME (v3: target must not exist) | `rename(replace = false)`                           |
//! | posix-rename@openssh.com         | `rename(replace = true)`                              |
//! | statvfs@openssh.com              | the user's quota                                      |
//! | fsync@openssh.com, limits@openssh.com | accepted; limits announce 255 KiB reads/writes   |
//!
//! An upload is visible to STAT and listings from its OPEN on (the shared layer's open-upload
//! registry); OPEN, RENAME and REMOVE of a path the session still has open for writing commit it
//! first (`settle`: sshfs's CLOSE comes late).
//!
//! A session that ends with uploads still open (the client vanished) keeps what arrived, flagged
//! incomplete, as `storage.partial_uploads` says, so `reput` can resume it.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use russh_sftp::extensions::{
    FsyncExtension, HardlinkExtension, LimitsExtension, Statvfs, StatvfsExtension,
};
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use storage_backend::OpenOptions;
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

use super::errors::reply;
use super::listing;
use crate::access::{Download, Upload, UserFs, UserPath};

/// Handles one session may hold at once.
pub const MAX_HANDLES: usize = 256;
/// Reads and writes announced through limits@openssh.com: OpenSSH's own value, 8 times fewer
/// requests than the 32 KiB clients use otherwise.
pub const MAX_IO_LEN: u64 = 255 * 1024;
/// Largest packet accepted from a client: one maximal write plus its header.
pub const MAX_PACKET: u32 = 256 * 1024 + 1024;
/// Entries per READDIR reply.
const DIR_PAGE: usize = 256;

enum Open {
    Read {
        download: Download,
        path: UserPath,
    },
    Write {
        /// `None` once a checkpoint committed it (see `settle`); opened again, continuing the
        /// committed file, if the handle is used again.
        upload: Option<Box<Upload>>,
        path: UserPath,
        append: bool,
        readable: bool,
        mtime: Option<SystemTime>,
        /// Written to (or truncated) since the open or the last checkpoint.
        dirty: bool,
        /// A checkpoint committed this handle's content already.
        checkpointed: bool,
    },
    Dir {
        path: UserPath,
        after: Option<String>,
        done: bool,
    },
}

pub struct SftpHandler {
    fs: UserFs,
    handles: HashMap<String, Open>,
    next: u64,
    tasks: TaskTracker,
    /// Keeps the gateway's task tracker waiting for this session at shutdown.
    _running: TaskTrackerToken,
}

impl SftpHandler {
    pub fn new(fs: UserFs, tasks: TaskTracker) -> Self {
        SftpHandler {
            fs,
            handles: HashMap::new(),
            next: 0,
            _running: tasks.token(),
            tasks,
        }
    }

    fn path(&self, raw: &str) -> Result<UserPath, StatusReply> {
        self.fs
            .resolve(&UserPath::root(), raw.as_bytes())
            .map_err(reply)
    }

    fn add(&mut self, open: Open) -> Result<String, StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure.with_message(format!(
                "too many open files and directories ({MAX_HANDLES}) in this session; close some"
            )));
        }
        self.next += 1;
        let h = format!("{}", self.next);
        self.handles.insert(h.clone(), open);
        Ok(h)
    }

    fn get(&mut self, handle: &str) -> Result<&mut Open, StatusReply> {
        self.handles
            .get_mut(handle)
            .ok_or_else(|| StatusCode::Failure.with_message(format!("no open handle {handle:?}")))
    }

    /// The upload behind a write handle, opened again (continuing the committed file) after a
    /// checkpoint committed it.
    async fn upload_of(&mut self, handle: &str) -> Result<&mut Upload, StatusReply> {
        let fs = self.fs.clone();
        match self.get(handle)? {
            Open::Write { upload, path, .. } => {
                if upload.is_none() {
                    let again = fs
                        .open_write(path, OpenOptions::EXISTING)
                        .await
                        .map_err(reply)?;
                    *upload = Some(Box::new(again));
                }
                Ok(upload.as_mut().expect("opened above"))
            }
            _ => {
                Err(StatusCode::PermissionDenied
                    .with_message("the file was not opened for writing"))
            }
        }
    }

    fn touched(&mut self, handle: &str) {
        if let Some(Open::Write { dirty, .. }) = self.handles.get_mut(handle) {
            *dirty = true;
        }
    }

    /// Commits this session's open uploads of `p` before another request on that path.
    ///
    /// sshfs sends CLOSE when the kernel releases the file, after the program's close(2) has
    /// returned: the program's next step on the same path (open it again, rename it, remove it:
    /// `git`, `rsync`, `sqlite3`, editors) can reach us before that CLOSE. On a POSIX file system
    /// the data is in the file by then, so here the open upload is committed first (a
    /// checkpoint), and the late CLOSE has nothing left to do. Other sessions are not affected:
    /// they see committed content only, as always.
    async fn settle(&mut self, p: &UserPath) -> Result<(), StatusReply> {
        let open: Vec<String> = self
            .handles
            .iter()
            .filter_map(|(h, o)| match o {
                Open::Write {
                    path,
                    upload: Some(_),
                    ..
                } if path == p => Some(h.clone()),
                _ => None,
            })
            .collect();
        for h in open {
            let Some(Open::Write {
                upload,
                mtime,
                dirty,
                checkpointed,
                ..
            }) = self.handles.get_mut(&h)
            else {
                continue;
            };
            let Some(u) = upload.take() else { continue };
            let result = if *checkpointed && !*dirty {
                // Opened again after a checkpoint but not changed: nothing new to commit.
                u.abort().await.map(drop)
            } else {
                u.commit(*mtime).await.map(drop)
            };
            match result {
                Ok(()) => {
                    *dirty = false;
                    *checkpointed = true;
                }
                Err(e) => {
                    // The handle is gone: its CLOSE will fail too, so the client hears of it.
                    self.handles.remove(&h);
                    return Err(reply(e));
                }
            }
        }
        Ok(())
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

fn time(secs: u32) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
}

fn bad_message(_: impl std::fmt::Debug) -> StatusReply {
    StatusCode::BadMessage.with_message("malformed extension request")
}

impl russh_sftp::server::Handler for SftpHandler {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.with_message("not supported by this server")
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        let mut v = Version::new();
        for (name, version) in [
            ("posix-rename@openssh.com", "1"),
            ("statvfs@openssh.com", "2"),
            ("fsync@openssh.com", "1"),
            ("limits@openssh.com", "1"),
        ] {
            v.extensions.insert(name.into(), version.into());
        }
        Ok(v)
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let p = self.path(&path)?;
        Ok(Name {
            id,
            files: vec![File::dummy(p.as_str())],
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let p = self.path(&path)?;
        let meta = self.fs.stat(&p).await.map_err(reply)?;
        Ok(Attrs {
            id,
            attrs: listing::attrs(&meta),
        })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let path = match self.get(&handle)? {
            Open::Read { download, .. } => {
                return Ok(Attrs {
                    id,
                    attrs: listing::attrs(download.metadata()),
                })
            }
            Open::Write {
                upload: Some(upload),
                ..
            } => {
                return Ok(Attrs {
                    id,
                    attrs: listing::attrs(&upload.metadata()),
                })
            }
            Open::Write { path, .. } | Open::Dir { path, .. } => path.clone(),
        };
        let meta = self.fs.stat(&path).await.map_err(reply)?;
        Ok(Attrs {
            id,
            attrs: listing::attrs(&meta),
        })
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let p = self.path(&filename)?;
        self.settle(&p).await?;
        // CREAT alone writes too: paramiko's open(path, "x") sends CREAT|EXCL without WRITE, and
        // must create the file, or fail when it exists (lock files), not open it for reading.
        let writes = pflags.intersects(
            OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::TRUNCATE | OpenFlags::CREATE,
        );
        let open = if writes {
            let opts = OpenOptions {
                create: pflags.contains(OpenFlags::CREATE),
                create_new: pflags.contains(OpenFlags::CREATE)
                    && pflags.contains(OpenFlags::EXCLUDE),
                truncate: pflags.contains(OpenFlags::TRUNCATE),
            };
            let upload = if pflags.contains(OpenFlags::READ) {
                self.fs.open_read_write(&p, opts).await
            } else {
                self.fs.open_write(&p, opts).await
            }
            .map_err(reply)?;
            Open::Write {
                upload: Some(Box::new(upload)),
                path: p,
                append: pflags.contains(OpenFlags::APPEND),
                readable: pflags.contains(OpenFlags::READ),
                mtime: None,
                dirty: false,
                checkpointed: false,
            }
        } else {
            let download = self.fs.open_read(&p).await.map_err(reply)?;
            Open::Read { download, path: p }
        };
        Ok(Handle {
            id,
            handle: self.add(open)?,
        })
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let len = (len as u64).min(MAX_IO_LEN) as usize;
        let data: Bytes = match self.get(&handle)? {
            Open::Read { download, .. } => download.read_at(offset, len).await.map_err(reply)?,
            Open::Write { readable: true, .. } => self
                .upload_of(&handle)
                .await?
                .read_at(offset, len)
                .await
                .map_err(reply)?,
            Open::Write { .. } => {
                return Err(StatusCode::PermissionDenied
                    .with_message("the file was not opened for reading"))
            }
            Open::Dir { .. } => {
                return Err(StatusCode::Failure.with_message("that handle is a directory"))
            }
        };
        if data.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        Ok(Data {
            id,
            data: data.to_vec(),
        })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let append = matches!(self.get(&handle)?, Open::Write { append: true, .. });
        let upload = self.upload_of(&handle).await?;
        let r = if append {
            upload.append(&data).await
        } else {
            upload.write_at(offset, &data).await
        };
        r.map_err(reply)?;
        self.touched(&handle);
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        let open = self.handles.remove(&handle).ok_or_else(|| {
            StatusCode::Failure.with_message(format!("no open handle {handle:?}"))
        })?;
        match open {
            // The transfer's audit line is written by the shared layer (one per transfer).
            Open::Write {
                upload,
                mtime,
                dirty,
                checkpointed,
                ..
            } => {
                let result = match upload {
                    // A checkpoint committed everything already.
                    None => Ok(()),
                    Some(u) if checkpointed && !dirty => u.abort().await,
                    Some(u) => u.commit(mtime).await.map(drop),
                };
                result.map(|_| ok(id)).map_err(reply)
            }
            Open::Read { .. } | Open::Dir { .. } => Ok(ok(id)),
        }
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let p = self.path(&path)?;
        // A file this session has open for writing (sshfs sets times and sizes by path, on a
        // file it has just created and not closed yet) changes through its open upload: the
        // store has no committed version to change yet, and the close would overwrite one.
        let open = self.handles.iter().find_map(|(h, o)| match o {
            Open::Write { path, .. } if *path == p => Some(h.clone()),
            _ => None,
        });
        if let Some(handle) = open {
            return self.fsetstat(id, handle, attrs).await;
        }
        if let Some(size) = attrs.size {
            self.fs.set_size(&p, size).await.map_err(reply)?;
        }
        if let Some(mtime) = attrs.mtime {
            self.fs.set_mtime(&p, time(mtime)).await.map_err(reply)?;
        }
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = match self.get(&handle)? {
            Open::Write {
                upload: None, path, ..
            } if attrs.size.is_none() => path.clone(),
            Open::Write { .. } => {
                if let Some(size) = attrs.size {
                    self.upload_of(&handle)
                        .await?
                        .set_len(size)
                        .await
                        .map_err(reply)?;
                    self.touched(&handle);
                }
                if let (Some(t), Some(Open::Write { mtime, .. })) =
                    (attrs.mtime, self.handles.get_mut(&handle))
                {
                    // Applied by the commit at close, together with the content.
                    *mtime = Some(time(t));
                }
                return Ok(ok(id));
            }
            Open::Read { path, .. } | Open::Dir { path, .. } => path.clone(),
        };
        if let Some(t) = attrs.mtime {
            self.fs.set_mtime(&path, time(t)).await.map_err(reply)?;
        }
        if attrs.size.is_some() {
            return Err(
                StatusCode::PermissionDenied.with_message("the file was not opened for writing")
            );
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let p = self.path(&path)?;
        // Checks permission and that it is a directory now, not at the first READDIR.
        self.fs.list(&p, None, 1).await.map_err(reply)?;
        let handle = self.add(Open::Dir {
            path: p,
            after: None,
            done: false,
        })?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let fs = self.fs.clone();
        let (path, after) = match self.get(&handle)? {
            Open::Dir { done: true, .. } => return Err(StatusCode::Eof.into()),
            Open::Dir { path, after, .. } => (path.clone(), after.clone()),
            _ => return Err(StatusCode::Failure.with_message("that handle is not a directory")),
        };
        let page = fs
            .list(&path, after.as_deref(), DIR_PAGE)
            .await
            .map_err(reply)?;
        if let Some(Open::Dir { after, done, .. }) = self.handles.get_mut(&handle) {
            *done = page.next.is_none();
            *after = page.next.clone();
        }
        if page.entries.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        let owner = fs.user().to_string();
        Ok(Name {
            id,
            files: page
                .entries
                .iter()
                .map(|e| listing::entry(&e.name, &e.metadata, &owner))
                .collect(),
        })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let p = self.path(&filename)?;
        self.settle(&p).await?;
        self.fs.delete(&p).await.map_err(reply)?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let p = self.path(&path)?;
        self.fs.mkdir(&p).await.map_err(reply)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        let p = self.path(&path)?;
        self.fs.rmdir(&p).await.map_err(reply)?;
        Ok(ok(id))
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let (from, to) = (self.path(&oldpath)?, self.path(&newpath)?);
        self.settle(&from).await?;
        self.settle(&to).await?;
        self.fs.rename(&from, &to, false).await.map_err(reply)?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, _id: u32, _path: String) -> Result<Name, Self::Error> {
        Err(StatusCode::OpUnsupported.with_message("there are no symbolic links here"))
    }

    async fn symlink(
        &mut self,
        _id: u32,
        _linkpath: String,
        _targetpath: String,
    ) -> Result<Status, Self::Error> {
        Err(StatusCode::OpUnsupported.with_message("symbolic links are not supported"))
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, Self::Error> {
        let mut bytes = Bytes::from(data);
        match request.as_str() {
            "posix-rename@openssh.com" => {
                let r: HardlinkExtension =
                    russh_sftp::de::from_bytes(&mut bytes).map_err(bad_message)?;
                let (from, to) = (self.path(&r.oldpath)?, self.path(&r.newpath)?);
                self.settle(&from).await?;
                self.settle(&to).await?;
                self.fs.rename(&from, &to, true).await.map_err(reply)?;
                Ok(ok(id).into())
            }
            "statvfs@openssh.com" => {
                let r: StatvfsExtension =
                    russh_sftp::de::from_bytes(&mut bytes).map_err(bad_message)?;
                self.fs.stat(&self.path(&r.path)?).await.map_err(reply)?;
                let (used, limit) = self.fs.quota_bytes();
                let block = 4096u64;
                let total = limit.unwrap_or(1 << 50) / block;
                let free = total.saturating_sub(used.div_ceil(block));
                let stats = Statvfs {
                    block_size: block,
                    fragment_size: block,
                    blocks: total,
                    blocks_free: free,
                    blocks_avail: free,
                    inodes: 1 << 32,
                    inodes_free: 1 << 32,
                    inodes_avail: 1 << 32,
                    fs_id: 0,
                    flags: 0,
                    name_max: storage_backend::MAX_NAME_BYTES as u64,
                };
                extended_reply(id, &stats)
            }
            "fsync@openssh.com" => {
                let r: FsyncExtension =
                    russh_sftp::de::from_bytes(&mut bytes).map_err(bad_message)?;
                // Written data becomes durable, and visible, at CLOSE (the commit); until then
                // there is nothing more to flush.
                self.get(&r.handle)?;
                Ok(ok(id).into())
            }
            "limits@openssh.com" => extended_reply(
                id,
                &LimitsExtension {
                    max_packet_len: MAX_PACKET as u64,
                    max_read_len: MAX_IO_LEN,
                    max_write_len: MAX_IO_LEN,
                    max_open_handles: MAX_HANDLES as u64,
                },
            ),
            _ => Err(self.unimplemented()),
        }
    }
}

fn extended_reply<T: serde::Serialize>(id: u32, value: &T) -> Result<Packet, StatusReply> {
    let data = russh_sftp::ser::to_bytes(value)
        .map_err(|_| StatusCode::Failure.with_message("cannot encode the reply"))?
        .to_vec();
    Ok(Packet::ExtendedReply(ExtendedReply { id, data }))
}

impl Drop for SftpHandler {
    fn drop(&mut self) {
        // The session ended with uploads still open: the client vanished (or never closed them).
        // The shared layer logs each as a transfer ("incomplete" or "aborted").
        for (_, open) in self.handles.drain() {
            if let Open::Write {
                upload: Some(upload),
                path,
                ..
            } = open
            {
                let ctx = self.fs.context().clone();
                self.tasks.spawn(async move {
                    if let Err(e) = (*upload).cut_off().await {
                        tracing::warn!(
                            user = %ctx.user, peer = %ctx.peer, path = %path, error = %e,
                            "sftp: an upload cut off could not be kept"
                        );
                    }
                });
            }
        }
    }
}
