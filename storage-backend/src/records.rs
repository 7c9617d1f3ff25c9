//! Small records beside the file tree: web sessions, API keys, resumable uploads. They carry no
//! events and are not files; any gateway sharing the store sees them at once, so a browser session
//! or a tus upload started on one replica continues on another, and deleting a record ends it
//! everywhere. Values are opaque bytes (callers keep them small: a few KiB); a record may expire,
//! after which it reads as absent and the maintenance pass removes it.

use std::time::SystemTime;

use crate::error::{ErrorKind, Result, StoreError};
use crate::store::Store;
use crate::types::to_ms;

/// The longest key: a hash, an id, or a user name and an id.
pub const MAX_RECORD_KEY: usize = 1024;
/// The largest value: records are metadata, not content.
pub const MAX_RECORD_VALUE: usize = 64 * 1024;

fn check(table: &str, key: &str) -> Result<()> {
    let table_ok = !table.is_empty()
        && table.len() <= 64
        && table
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b));
    if !table_ok {
        return Err(StoreError::new(
            ErrorKind::InvalidArgument,
            format!("record table name {table:?} must be 1 to 64 of a-z 0-9 _ . : -"),
        ));
    }
    if key.is_empty() || key.len() > MAX_RECORD_KEY {
        return Err(StoreError::new(
            ErrorKind::InvalidArgument,
            format!("record key must be 1 to {MAX_RECORD_KEY} bytes"),
        ));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_RECORD_VALUE {
        return Err(StoreError::new(
            ErrorKind::InvalidArgument,
            format!(
                "a record holds at most {MAX_RECORD_VALUE} bytes, not {}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Expiry in ms since the epoch; 0 means never.
fn expiry_ms(expires: Option<SystemTime>) -> u64 {
    expires.map(|t| to_ms(t).max(1)).unwrap_or(0)
}

impl Store {
    /// Writes (or replaces) the record `key` of `table`, to expire at `expires` (None: never).
    pub async fn record_put(
        &self,
        table: &str,
        key: &str,
        value: &[u8],
        expires: Option<SystemTime>,
    ) -> Result<()> {
        check(table, key)?;
        check_value(value)?;
        let ok = self
            .inner
            .backend
            .record_write(table, key, None, value, expiry_ms(expires))
            .await?;
        debug_assert!(ok);
        Ok(())
    }

    /// The record's value; None when it is absent or has expired.
    pub async fn record_get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>> {
        check(table, key)?;
        self.inner.backend.record_get(table, key).await
    }

    /// Deletes the record; whether it existed (and had not expired).
    pub async fn record_delete(&self, table: &str, key: &str) -> Result<bool> {
        check(table, key)?;
        self.inner.backend.record_delete(table, key).await
    }

    /// Compare-and-set: writes `value` only if the record's current value is `expected` (None:
    /// absent or expired). Whether it wrote. Two gateways racing on one record: exactly one wins.
    pub async fn record_swap(
        &self,
        table: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        expires: Option<SystemTime>,
    ) -> Result<bool> {
        check(table, key)?;
        check_value(value)?;
        self.inner
            .backend
            .record_write(table, key, Some(expected), value, expiry_ms(expires))
            .await
    }

    /// The unexpired records of a table in key order, at most `limit`, with keys after `after`.
    /// Meant for small tables (one user's API keys): the Redis backend reads the table's index whole.
    pub async fn record_list(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        check(table, "-")?;
        self.inner
            .backend
            .record_list(table, after.unwrap_or(""), limit)
            .await
    }
}
