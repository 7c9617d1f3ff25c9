//! SHA-256 of content written in one sequential pass, computed chunk by chunk as chunks are stored.
//!
//! Small files are hashed inline. From the first full chunk on, hashing moves to a blocking thread
//! fed through a bounded queue, so on a machine with cores to spare it runs beside the network
//! work instead of in series with it. Anything but whole chunks in order (a rewrite, a hole, an
//! early partial flush) turns it off; the commit then hashes the stored content instead.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Chunks queued for the hashing thread.
const QUEUE: usize = 4;

pub(crate) enum ChunkHasher {
    Inline {
        state: Sha256,
        next: u64,
    },
    Piped {
        queue: mpsc::Sender<Bytes>,
        task: JoinHandle<Sha256>,
        next: u64,
    },
    Off,
}

impl ChunkHasher {
    pub fn new() -> Self {
        ChunkHasher::Inline {
            state: Sha256::new(),
            next: 0,
        }
    }

    pub fn is_on(&self) -> bool {
        !matches!(self, ChunkHasher::Off)
    }

    pub fn off(&mut self) {
        if let ChunkHasher::Piped { task, .. } = std::mem::replace(self, ChunkHasher::Off) {
            task.abort();
        }
    }

    /// Feeds chunk `idx`; `whole` says it holds all its bytes (a full chunk, or the last one).
    pub async fn feed(&mut self, idx: u64, data: &Bytes, whole: bool) {
        let expected = match self {
            ChunkHasher::Inline { next, .. } | ChunkHasher::Piped { next, .. } => *next,
            ChunkHasher::Off => return,
        };
        if idx != expected || !whole {
            self.off();
            return;
        }
        if let ChunkHasher::Inline { state, next } = self {
            if *next > 0 || data.len() < 64 * 1024 {
                // Keep small files (and tiny chunk sizes) inline: a thread would cost more.
                state.update(data);
                *next += 1;
                return;
            }
            let state = std::mem::take(state);
            let (queue, mut rx) = mpsc::channel::<Bytes>(QUEUE);
            let task = tokio::task::spawn_blocking(move || {
                let mut state = state;
                while let Some(piece) = rx.blocking_recv() {
                    state.update(&piece);
                }
                state
            });
            *self = ChunkHasher::Piped {
                queue,
                task,
                next: expected,
            };
        }
        if let ChunkHasher::Piped { queue, next, .. } = self {
            if queue.send(data.clone()).await.is_err() {
                self.off();
                return;
            }
            *next += 1;
        }
    }

    /// The digest of a file whose last chunk (`idx`) never left memory: small files.
    pub fn finish_with(self, idx: u64, last: &[u8], chunks: u64) -> Option<String> {
        match self {
            ChunkHasher::Inline { mut state, next } if next == idx && idx + 1 == chunks => {
                state.update(last);
                Some(hex::encode(state.finalize()))
            }
            ChunkHasher::Piped { task, .. } => {
                task.abort();
                None
            }
            _ => None,
        }
    }

    /// The digest, if every chunk up to `chunks` went through in order.
    pub async fn finish(self, chunks: u64) -> Option<String> {
        let state = match self {
            ChunkHasher::Inline { state, next } if next == chunks => state,
            ChunkHasher::Piped { queue, task, next } if next == chunks => {
                drop(queue);
                task.await.ok()?
            }
            ChunkHasher::Piped { task, .. } => {
                task.abort();
                return None;
            }
            _ => return None,
        };
        Some(hex::encode(state.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn piped_and_inline_agree_with_a_plain_hash() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        for cs in [64usize, 100_000] {
            let mut h = ChunkHasher::new();
            let pieces: Vec<&[u8]> = data.chunks(cs).collect();
            for (i, p) in pieces.iter().enumerate() {
                h.feed(i as u64, &Bytes::copy_from_slice(p), true).await;
            }
            assert!(matches!(h, ChunkHasher::Piped { .. }) == (cs >= 64 * 1024));
            assert_eq!(
                h.finish(pieces.len() as u64).await,
                Some(hex_of(&data)),
                "chunk size {cs}"
            );
        }
    }

    #[tokio::test]
    async fn anything_out_of_order_turns_it_off() {
        let mut h = ChunkHasher::new();
        h.feed(1, &Bytes::from_static(b"x"), true).await;
        assert!(!h.is_on());
        let mut h = ChunkHasher::new();
        h.feed(0, &Bytes::from_static(b"x"), false).await;
        assert_eq!(h.finish(1).await, None);
        let h = ChunkHasher::new();
        assert_eq!(h.finish_with(0, b"abc", 1), Some(hex_of(b"abc")));
    }
}
