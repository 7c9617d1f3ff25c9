//! The one place where store errors become FTP replies (RFC 959 §4.2 codes, via libunftp's kinds).
//!
//! libunftp answers each kind with a fixed text ("Permission denied", "Exceeded storage allocation",
//! …), so the detailed message is logged here for the operator.

use storage_backend::{ErrorKind, StoreError};
use unftp_core::storage::{Error as FtpError, ErrorKind as FtpKind};

/// The FTP reply kind for a store error kind.
pub fn ftp_kind(kind: ErrorKind) -> FtpKind {
    match kind {
        // 550
        ErrorKind::NotFound | ErrorKind::AlreadyExists | ErrorKind::IsADirectory => {
            FtpKind::PermanentFileNotAvailable
        }
        ErrorKind::NotADirectory => FtpKind::PermanentDirectoryNotAvailable,
        ErrorKind::DirectoryNotEmpty => FtpKind::PermanentDirectoryNotEmpty,
        ErrorKind::PermissionDenied => FtpKind::PermissionDenied,
        // 553
        ErrorKind::InvalidPath | ErrorKind::InvalidArgument => FtpKind::FileNameNotAllowedError,
        // 552
        ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge => {
            FtpKind::ExceededStorageAllocationError
        }
        // 450: try again
        ErrorKind::Changed => FtpKind::TransientFileNotAvailable,
        // 451
        ErrorKind::Unavailable | ErrorKind::Internal => FtpKind::LocalError,
    }
}

/// Converts a store error for libunftp, logging its full message.
pub fn to_ftp(e: StoreError) -> FtpError {
    match e.kind() {
        ErrorKind::Unavailable | ErrorKind::Internal => {
            tracing::warn!(error = %e, kind = %e.kind(), "ftp: storage failure")
        }
        _ => tracing::debug!(error = %e, kind = %e.kind(), "ftp: request refused"),
    }
    FtpError::new(ftp_kind(e.kind()), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every store error kind has a deliberate FTP reply; a new kind fails here until it gets one.
    #[test]
    fn every_kind_maps_to_its_reply() {
        for kind in ErrorKind::ALL {
            let expected = match kind {
                ErrorKind::NotFound | ErrorKind::AlreadyExists | ErrorKind::IsADirectory => {
                    FtpKind::PermanentFileNotAvailable
                }
                ErrorKind::NotADirectory => FtpKind::PermanentDirectoryNotAvailable,
                ErrorKind::DirectoryNotEmpty => FtpKind::PermanentDirectoryNotEmpty,
                ErrorKind::PermissionDenied => FtpKind::PermissionDenied,
                ErrorKind::InvalidPath | ErrorKind::InvalidArgument => {
                    FtpKind::FileNameNotAllowedError
                }
                ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge => {
                    FtpKind::ExceededStorageAllocationError
                }
                ErrorKind::Changed => FtpKind::TransientFileNotAvailable,
                ErrorKind::Unavailable | ErrorKind::Internal => FtpKind::LocalError,
            };
            assert_eq!(ftp_kind(kind), expected, "{kind}");
        }
    }
}
