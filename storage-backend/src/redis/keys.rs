//! How the store's values are written in Redis: chunk keys (one hash tag each), id lists and
//! numbers as the scripts take and return them, and inode fields.

use crate::error::{Result, StoreError};
use crate::types::{from_ms, EntryKind, Metadata};

/// A chunk id: the owner number of the gateway process that stored it, then that process's own
/// count, so ids never collide between gateways and need no round trip to allocate.
pub(super) fn chunk_id(owner: u64, n: u64) -> u64 {
    owner << 32 | n
}

/// The owner number in a chunk id.
pub(super) fn chunk_owner(id: u64) -> u64 {
    id >> 32
}

pub(super) fn chunk_key(namespace: &str, id: u64) -> String {
    format!("{namespace}:c:{{{}:{}}}", chunk_owner(id), id & 0xFFFF_FFFF)
}

/// The chunk id in a key `N:c:{<owner>:<n>}`.
pub(super) fn parse_chunk_key(key: &str) -> Result<u64> {
    let inner = key
        .rsplit('{')
        .next()
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or("");
    let (owner, n) = inner
        .split_once(':')
        .ok_or_else(|| StoreError::internal(format!("unexpected chunk key {key:?}")))?;
    Ok(chunk_id(parse_u64(owner)?, parse_u64(n)?))
}

/// Chunk ids as the scripts take them: decimal, comma-separated.
pub(super) fn id_list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

pub(super) fn parse_u64(s: &str) -> Result<u64> {
    if s.is_empty() {
        return Ok(0);
    }
    s.parse().map_err(|_| {
        StoreError::internal(format!("Redis returned {s:?} where a number was expected"))
    })
}

/// Builds metadata from the script's `{k, m, s, v, h, c}`.
pub(super) fn metadata_from(f: &[Option<String>]) -> Result<Metadata> {
    let get = |i: usize| f.get(i).and_then(|v| v.as_deref()).unwrap_or("");
    let kind = match get(0) {
        "d" => EntryKind::Directory,
        "f" => EntryKind::File,
        other => {
            return Err(StoreError::internal(format!(
                "inode of unknown kind {other:?}"
            )))
        }
    };
    Ok(Metadata {
        kind,
        mtime: from_ms(parse_u64(get(1))?),
        size: parse_u64(get(2))?,
        version: parse_u64(get(3))?,
        sha256: Some(get(4)).filter(|s| !s.is_empty()).map(str::to_string),
        complete: get(5) != "0",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_keys_round_trip() {
        let id = (7u64 << 32) | 123;
        assert_eq!(chunk_key("fg", id), "fg:c:{7:123}");
        assert_eq!(parse_chunk_key("fg:c:{7:123}").unwrap(), id);
        assert_eq!(id_list(&[1, 2]), "1,2");
    }
}
