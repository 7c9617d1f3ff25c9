//! Chunk maps: which chunk holds each `chunk_size` slice of a file version, and their text form;
//! and the arithmetic between file offsets and chunks, kept here so readers, write sessions and
//! both backends cut files at the same places.
//!
//! In memory a map is a `Vec<u64>` indexed by chunk number, where 0 is a hole (reads as zeros).
//! Stored, it is run-length encoded as `start+count` runs separated by commas (`0+n` for n holes),
//! because a session allocates ids in consecutive batches: a 10 GiB file of 1 MiB chunks written in
//! one pass takes a few hundred bytes instead of 80 KB. The Redis scripts parse the same form.

use bytes::{Bytes, BytesMut};

use crate::error::{Result, StoreError};

pub(crate) fn encode(chunks: &[u64]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < chunks.len() {
        let start = chunks[i];
        let mut n = 1;
        while i + n < chunks.len() {
            let next = chunks[i + n];
            let continues = if start == 0 {
                next == 0
            } else {
                next == start + n as u64
            };
            if !continues {
                break;
            }
            n += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&format!("{start}+{n}"));
        i += n;
    }
    out
}

pub(crate) fn decode(text: &str) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    if text.is_empty() {
        return Ok(out);
    }
    for run in text.split(',') {
        let bad = || StoreError::internal(format!("corrupt chunk map run {run:?}"));
        let (start, count) = run.split_once('+').ok_or_else(bad)?;
        let start: u64 = start.parse().map_err(|_| bad())?;
        let count: u64 = count.parse().map_err(|_| bad())?;
        if start == 0 {
            out.extend(std::iter::repeat_n(0, count as usize));
        } else {
            out.extend(start..start + count);
        }
    }
    Ok(out)
}

/// Number of chunks a file of `size` bytes spans.
pub(crate) fn chunk_count(size: u64, chunk_size: u64) -> usize {
    size.div_ceil(chunk_size) as usize
}

/// The chunk holding byte `offset`, and that byte's position within it.
pub(crate) fn locate(offset: u64, chunk_size: u64) -> (u64, u64) {
    let idx = offset / chunk_size;
    (idx, offset - chunk_start(idx, chunk_size))
}

/// The file offset where chunk `idx` begins.
pub(crate) fn chunk_start(idx: u64, chunk_size: u64) -> u64 {
    idx * chunk_size
}

/// How many of the file's bytes chunk `idx` holds: a whole chunk, fewer in the last one, none past
/// the end.
pub(crate) fn chunk_len(size: u64, chunk_size: u64, idx: u64) -> u64 {
    chunk_size.min(size.saturating_sub(chunk_start(idx, chunk_size)))
}

/// Cuts or zero-pads stored chunk bytes to the length the file has in that chunk.
pub(crate) fn fit(data: Bytes, len: usize) -> Bytes {
    match data.len().cmp(&len) {
        std::cmp::Ordering::Equal => data,
        std::cmp::Ordering::Greater => data.slice(..len),
        std::cmp::Ordering::Less => {
            let mut padded = BytesMut::with_capacity(len);
            padded.extend_from_slice(&data);
            padded.resize(len, 0);
            padded.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for map in [
            vec![],
            vec![7],
            vec![0],
            vec![1, 2, 3, 0, 0, 9, 10, 4],
            vec![5, 5, 5],
            vec![0, 0, 0, 100, 101],
        ] {
            let text = encode(&map);
            assert_eq!(decode(&text).unwrap(), map, "{text}");
        }
        assert_eq!(encode(&[1, 2, 3, 0, 0, 9]), "1+3,0+2,9+1");
        assert_eq!(encode(&(1..=10_240).collect::<Vec<_>>()), "1+10240");
    }

    #[test]
    fn refuses_garbage() {
        assert!(decode("1+").is_err());
        assert!(decode("x").is_err());
    }

    #[test]
    fn counts_chunks() {
        assert_eq!(chunk_count(0, 4), 0);
        assert_eq!(chunk_count(1, 4), 1);
        assert_eq!(chunk_count(4, 4), 1);
        assert_eq!(chunk_count(5, 4), 2);
    }

    #[test]
    fn locates_offsets_in_chunks() {
        assert_eq!(locate(0, 4), (0, 0));
        assert_eq!(locate(3, 4), (0, 3));
        assert_eq!(locate(4, 4), (1, 0));
        assert_eq!(chunk_start(3, 4), 12);
        assert_eq!(chunk_len(10, 4, 1), 4);
        assert_eq!(chunk_len(10, 4, 2), 2);
        assert_eq!(chunk_len(10, 4, 3), 0);
        assert_eq!(
            fit(Bytes::from_static(b"abc"), 2),
            Bytes::from_static(b"ab")
        );
        assert_eq!(
            fit(Bytes::from_static(b"a"), 3),
            Bytes::from_static(b"a\0\0")
        );
    }
}
