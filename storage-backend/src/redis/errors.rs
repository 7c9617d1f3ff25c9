//! Redis errors as store errors: a script's refusal keeps its kind (`FG:<code>`), anything else
//! is the server being unavailable; and which failures are safe to send again.

use std::time::Duration;

use super::RedisBackend;
use crate::error::{ErrorKind, Reason, StoreError};

impl RedisBackend {
    /// The store error for a failed command. A script's refusal is the store's own answer and
    /// carries no source; a failure of Redis itself keeps the client's error as the source.
    pub(super) fn error(&self, e: redis::RedisError) -> StoreError {
        if let Some(code) = e.code() {
            if let Some(refusal) = script_refusal(code, e.detail().unwrap_or(code)) {
                return refusal;
            }
        }
        // A script's refusal inside a pipeline (put_and_commit).
        if let Some(items) = e.clone().into_server_errors() {
            for (_, item) in items.iter() {
                if let Some(refusal) = script_refusal(item.code(), item.details().unwrap_or("")) {
                    return refusal;
                }
            }
        }
        let error = if e.is_timeout() {
            StoreError::unavailable(format!(
                "Redis at {} did not answer within {:?} (storage.redis.command_timeout)",
                self.url_shown, self.timeout
            ))
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
            StoreError::unavailable(format!("Redis at {} is unreachable: {e}", self.url_shown))
        } else {
            StoreError::new(
                ErrorKind::Unavailable,
                format!("Redis at {} failed: {e}", self.url_shown),
            )
        };
        error.with_source(e)
    }
}

/// A script's refusal (`FG:<code> <message>`, raised by `fail` in `prelude.lua`): the code names
/// a reason (which implies its kind) or a kind.
fn script_refusal(code: &str, detail: &str) -> Option<StoreError> {
    let code = code.strip_prefix("FG:")?;
    let message = script_message(detail);
    if let Some(reason) = Reason::from_code(code) {
        return Some(StoreError::with_reason(reason, message));
    }
    ErrorKind::from_code(code).map(|kind| StoreError::new(kind, message))
}

/// How often a command that never reached Redis is sent again, and the pause before each time
/// (times the attempt), while a connection manager replaces a dropped connection.
pub(super) const RESENDS: u32 = 3;
pub(super) const RESEND_PAUSE: Duration = Duration::from_millis(50);

/// Whether a command failed before it could reach Redis (writing to a connection that had already
/// died), so that sending it again cannot run it twice. redis-rs keeps the I/O error private, so
/// its text tells: a broken pipe happens on the write side only.
pub(super) fn unsent(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() && e.to_string().to_ascii_lowercase().contains("broken pipe")
}

/// A script's error message without the location Redis 7 appends (" script: <sha>, on @user_script:13.").
fn script_message(detail: &str) -> String {
    detail
        .split(" script: ")
        .next()
        .unwrap_or(detail)
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_locations_are_cut_from_messages() {
        assert_eq!(
            script_message("/later: a directory was created script: 2a66, on @user_script:13."),
            "/later: a directory was created"
        );
        assert_eq!(script_message("plain"), "plain");
    }

    #[test]
    fn script_codes_become_kinds_and_reasons() {
        let full = script_refusal("FG:outbox_full", "event outbox is full: 4 events").unwrap();
        assert_eq!(full.kind(), ErrorKind::Unavailable);
        assert_eq!(full.reason(), Some(Reason::OutboxFull));
        assert_eq!(full.message(), "event outbox is full: 4 events");
        let gone = script_refusal("FG:not_found", "/a: no such file").unwrap();
        assert_eq!((gone.kind(), gone.reason()), (ErrorKind::NotFound, None));
        assert!(script_refusal("ERR", "unknown command").is_none());
        assert!(script_refusal("FG:nonsense", "x").is_none());
    }
}
