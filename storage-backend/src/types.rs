//! The values the store API hands out and takes in: metadata, listings, open options, who changed what.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    File,
    Directory,
}

/// What `stat` and listings report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub kind: EntryKind,
    /// Bytes; 0 for directories.
    pub size: u64,
    pub mtime: SystemTime,
    /// The committed version of a file's content: unique in the namespace and increasing with every
    /// commit. 0 for directories.
    pub version: u64,
    /// Lower-case hex SHA-256 of the content, when known (see `docs/storage.md`).
    pub sha256: Option<String>,
    /// False for an upload that was cut off and kept so it can be resumed.
    pub complete: bool,
}

impl Metadata {
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Directory
    }

    pub fn is_file(&self) -> bool {
        self.kind == EntryKind::File
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub metadata: Metadata,
}

/// One page of a directory listing, in byte order of the names.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub entries: Vec<DirEntry>,
    /// Pass this as `after` to get the next page; `None` when this was the last page.
    pub next: Option<String>,
}

/// Who is making a change; recorded in the change's event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeContext {
    pub user: String,
    /// `ftp`, `ftps`, `sftp`, `mqtt`, …
    pub protocol: String,
    /// The client's address.
    pub peer: String,
}

impl ChangeContext {
    pub fn new(
        user: impl Into<String>,
        protocol: impl Into<String>,
        peer: impl Into<String>,
    ) -> Self {
        ChangeContext {
            user: user.into(),
            protocol: protocol.into(),
            peer: peer.into(),
        }
    }
}

/// How a write session opens its file, as in `std::fs::OpenOptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Create the file when it does not exist.
    pub create: bool,
    /// Fail with `AlreadyExists` when it exists (implies `create`).
    pub create_new: bool,
    /// Start from empty content instead of the current content.
    pub truncate: bool,
}

impl OpenOptions {
    /// Create or replace: the usual upload (FTP `STOR`, `sftp put`).
    pub const REPLACE: OpenOptions = OpenOptions {
        create: true,
        create_new: false,
        truncate: true,
    };
    /// Keep the current content and change it (FTP `APPE`, `REST`+`STOR`, SFTP writes without
    /// `TRUNC`); creates the file when missing.
    pub const UPDATE: OpenOptions = OpenOptions {
        create: true,
        create_new: false,
        truncate: false,
    };
    /// Only create; fail when the file exists (SFTP `CREAT|EXCL`).
    pub const CREATE_NEW: OpenOptions = OpenOptions {
        create: true,
        create_new: true,
        truncate: true,
    };
    /// Change an existing file only.
    pub const EXISTING: OpenOptions = OpenOptions {
        create: false,
        create_new: false,
        truncate: false,
    };
}

/// How a write session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitOptions {
    /// False for an upload that was cut off: it is kept, flagged incomplete and announced as
    /// `file.incomplete`.
    pub complete: bool,
    /// The modification time to record; `None` means now.
    pub mtime: Option<SystemTime>,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            complete: true,
            mtime: None,
        }
    }
}

/// What a commit produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub version: u64,
    pub size: u64,
    pub sha256: Option<String>,
    /// The sequence number of the commit's event.
    pub seq: u64,
    /// True when the file did not exist before this commit.
    pub created: bool,
}

pub(crate) fn now_ms() -> u64 {
    to_ms(SystemTime::now())
}

/// The latest modification time kept: 9999-12-31T23:59:59Z. Later times (an SCP `T` line, a
/// setstat) are stored as this one: every listing format (RFC 3339, MLSD, `ls -l`) can show it,
/// where a far-future time made formatting fail for everyone listing that directory.
pub const MAX_MTIME_MS: u64 = 253_402_300_799_000;

/// A time as stored: milliseconds since the epoch, from 0 (earlier times) to [`MAX_MTIME_MS`].
pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
        .min(MAX_MTIME_MS)
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.min(MAX_MTIME_MS))
}
