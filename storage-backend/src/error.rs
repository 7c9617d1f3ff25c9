//! Store errors: a `Copy` kind that alone decides every protocol's reply, plus a message for people.

use std::fmt;

/// What went wrong, in terms every front-end maps to its own protocol's codes.
///
/// Adding a kind forces a decision in each front-end's mapping (their tests walk [`ErrorKind::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The path (or a parent of it) does not exist.
    NotFound,
    /// Something already exists where the operation would create something.
    AlreadyExists,
    /// A path component that must be a directory is a file.
    NotADirectory,
    /// The operation needs a file but the path names a directory.
    IsADirectory,
    /// rmdir of a directory that still has entries.
    DirectoryNotEmpty,
    /// The path itself is unacceptable: NUL, control characters, escaping the root, too long,
    /// invalid UTF-8.
    InvalidPath,
    /// A well-formed request that cannot be carried out as asked (e.g. moving a directory into
    /// its own subtree).
    InvalidArgument,
    /// Refused by policy (permissions, the user's jail). The store itself never returns it; the
    /// user layer above it does.
    PermissionDenied,
    /// A user's quota would be exceeded (user layer).
    QuotaExceeded,
    /// The file would grow past `storage.max_file_size`.
    FileTooLarge,
    /// The file was replaced while it was being read and the old content is gone; retry.
    Changed,
    /// The backend is unreachable, too slow, or refusing changes for now (e.g. the event outbox is
    /// full); the operation may succeed later.
    Unavailable,
    /// Corruption or a bug: something that should never happen.
    Internal,
}

impl ErrorKind {
    /// Every kind, for exhaustive mapping tests in the front-ends.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::NotADirectory,
        ErrorKind::IsADirectory,
        ErrorKind::DirectoryNotEmpty,
        ErrorKind::InvalidPath,
        ErrorKind::InvalidArgument,
        ErrorKind::PermissionDenied,
        ErrorKind::QuotaExceeded,
        ErrorKind::FileTooLarge,
        ErrorKind::Changed,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];

    /// Stable short name, used in logs and in replies over MQTT.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::NotADirectory => "not_a_directory",
            ErrorKind::IsADirectory => "is_a_directory",
            ErrorKind::DirectoryNotEmpty => "directory_not_empty",
            ErrorKind::InvalidPath => "invalid_path",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::FileTooLarge => "file_too_large",
            ErrorKind::Changed => "changed",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    /// Parses the codes the Redis scripts raise (`FG:<code>`).
    pub(crate) fn from_code(code: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == code)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from the store: its kind and a sentence a person understands.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    kind: ErrorKind,
    message: String,
}

impl StoreError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn not_found(path: impl fmt::Display) -> Self {
        Self::new(
            ErrorKind::NotFound,
            format!("{path}: no such file or directory"),
        )
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
