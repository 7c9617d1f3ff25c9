//! The one place where store errors become SFTP status codes (draft-ietf-secsh-filexfer-02 §7).
//! SFTP carries a message with every status, so the user sees the store's own sentence.

use russh_sftp::protocol::StatusCode;
use russh_sftp::server::StatusReply;
use storage_backend::{ErrorKind, StoreError};

/// The SFTP v3 status code for a store error kind (v3 has only these few codes).
pub fn status_code(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NoSuchFile,
        ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        ErrorKind::AlreadyExists
        | ErrorKind::NotADirectory
        | ErrorKind::IsADirectory
        | ErrorKind::DirectoryNotEmpty
        | ErrorKind::InvalidPath
        | ErrorKind::InvalidArgument
        | ErrorKind::QuotaExceeded
        | ErrorKind::FileTooLarge
        | ErrorKind::Changed
        | ErrorKind::Unavailable
        | ErrorKind::Internal => StatusCode::Failure,
    }
}

pub fn reply(e: StoreError) -> StatusReply {
    if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Internal) {
        tracing::warn!(error = %e, kind = %e.kind(), "sftp: storage failure");
    }
    status_code(e.kind()).with_message(e.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_a_status() {
        for kind in ErrorKind::ALL {
            let expected = match kind {
                ErrorKind::NotFound => StatusCode::NoSuchFile,
                ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
                _ => StatusCode::Failure,
            };
            assert_eq!(status_code(kind), expected, "{kind}");
        }
        let r = reply(StoreError::new(
            ErrorKind::QuotaExceeded,
            "quota exceeded: 5 of 4 bytes",
        ));
        assert_eq!(
            r.error_message.as_deref(),
            Some("quota exceeded: 5 of 4 bytes")
        );
    }
}
