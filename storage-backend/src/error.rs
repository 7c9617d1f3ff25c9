//! Store errors: a `Copy` kind that alone decides every protocol's reply, plus a message for people.

use std::fmt;
use std::sync::Arc;

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

/// A condition within a kind that the store's callers act on beyond the reply. Protocols never see
/// it: the kind alone decides every reply, so a reason can be added without touching a front-end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Every change is refused until the publisher delivers events (kind `Unavailable`): nothing is
    /// being delivered, which an operator must hear about.
    OutboxFull,
}

impl Reason {
    /// The kind every error with this reason has.
    pub fn kind(self) -> ErrorKind {
        match self {
            Reason::OutboxFull => ErrorKind::Unavailable,
        }
    }

    /// Stable short name; also the code the Redis scripts raise (`FG:<code>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::OutboxFull => "outbox_full",
        }
    }

    pub(crate) fn from_code(code: &str) -> Option<Reason> {
        [Reason::OutboxFull]
            .into_iter()
            .find(|r| r.as_str() == code)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from the store: its kind, a sentence a person understands, and the library error
/// behind it, if any.
#[derive(Debug, Clone)]
pub struct StoreError {
    kind: ErrorKind,
    reason: Option<Reason>,
    message: String,
    /// Shared rather than boxed so the error stays `Clone`.
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            reason: None,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `reason`'s kind that carries the reason.
    pub(crate) fn with_reason(reason: Reason, message: impl Into<String>) -> Self {
        StoreError {
            reason: Some(reason),
            ..Self::new(reason.kind(), message)
        }
    }

    /// Keeps the library error this one was made from, for [`std::error::Error::source`]; the
    /// message stays as it is.
    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn reason(&self) -> Option<Reason> {
        self.reason
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

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// By hand: thiserror's `#[source]` would hand out the `Arc` itself, which callers cannot downcast
// to the library's error type.
impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_library_error_stays_reachable_and_the_message_unchanged() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = StoreError::unavailable("cannot create the store: denied").with_source(io);
        assert_eq!(e.to_string(), "cannot create the store: denied");
        let source = e.source().expect("a source");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert!(e.clone().source().is_some());
        assert!(StoreError::internal("x").source().is_none());
    }

    #[test]
    fn a_reason_implies_its_kind() {
        let e = StoreError::with_reason(Reason::OutboxFull, "event outbox is full");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(e.reason(), Some(Reason::OutboxFull));
        assert_eq!(Reason::from_code("outbox_full"), Some(Reason::OutboxFull));
        // A reason's code must not shadow a kind's: the scripts' codes name one or the other.
        assert!(ErrorKind::from_code(Reason::OutboxFull.as_str()).is_none());
        assert_eq!(StoreError::unavailable("down").reason(), None);
    }
}
