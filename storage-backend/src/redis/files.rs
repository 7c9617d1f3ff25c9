//! File content: write sessions, chunk values on the data connections, the commit script (with a
//! file's only chunk in the same round trip where it can be), and reads with their pins.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use redis::FromRedisValue;

use super::errors::{unsent, RESENDS, RESEND_PAUSE};
use super::keys::{chunk_owner, id_list, parse_u64};
use super::link::read_only;
use super::RedisBackend;
use crate::chunkmap;
use crate::error::{Result, StoreError};
use crate::path::StorePath;
use crate::seam::{CommitOutcome, CommitRequest, OpenedRead, SessionStart, Version};
use crate::types::{now_ms, OpenOptions};

impl RedisBackend {
    pub async fn open_session(&self, path: &StorePath, opts: OpenOptions) -> Result<SessionStart> {
        let flag = |b: bool| if b { "1" } else { "0" };
        let r: Vec<String> = self
            .run(
                self.script("open_session", None)
                    .arg(path.relative())
                    .arg(&self.owner)
                    .arg(flag(opts.create || opts.create_new))
                    .arg(flag(opts.create_new))
                    .arg(flag(opts.truncate)),
            )
            .await?;
        let sid = parse_u64(&r[0])?;
        let base_vid = parse_u64(&r[1])?;
        let base = if base_vid == 0 {
            None
        } else {
            Some(Version {
                vid: base_vid,
                size: parse_u64(&r[2])?,
                chunk_size: parse_u64(&r[3])?,
                chunks: chunkmap::decode(&r[4])?,
                sha256: (!r[5].is_empty()).then(|| r[5].clone()),
                complete: r[6] != "0",
                mtime_ms: parse_u64(&r[7])?,
            })
        };
        Ok(SessionStart { sid, base })
    }

    /// Chunk ids are numbered locally (see the module docs): no round trip.
    pub async fn alloc_ids(&self, _sid: u64, n: u64) -> Result<u64> {
        let first = self.next_chunk.fetch_add(n, Ordering::Relaxed) + 1;
        if chunk_owner(first + n) != chunk_owner(first) {
            return Err(StoreError::unavailable(
                "this gateway process has numbered 2^32 chunks; restart it to get a new owner number",
            ));
        }
        Ok(first)
    }

    pub async fn put_chunk(&self, _sid: u64, id: u64, data: Bytes) -> Result<()> {
        let mut set = redis::cmd("SET");
        set.arg(self.chunk_key(id)).arg(data.as_ref());
        self.data_query(&set).await
    }

    pub async fn get_chunk(&self, id: u64) -> Result<Option<Bytes>> {
        self.data_query(redis::cmd("GET").arg(self.chunk_key(id)))
            .await
    }

    /// A chunk command (idempotent: a SET of the same bytes, or a GET), sent again when its
    /// connection had dropped, on the next connections, which the managers reconnect meanwhile.
    async fn data_query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut attempt = 0;
        loop {
            let mut conn = self.data_conn();
            match cmd.query_async(&mut conn).await {
                Err(e)
                    if (e.is_connection_dropped() || read_only(&e))
                        && attempt < RESENDS + self.data.len() as u32 =>
                {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "redis: data connection lost; sending again");
                    tokio::time::sleep(RESEND_PAUSE).await;
                }
                r => return r.map_err(|e| self.error(e)),
            }
        }
    }

    pub async fn commit(&self, req: CommitRequest<'_>) -> Result<CommitOutcome> {
        let args = commit_args(&req, &self.owner, "");
        let mut inv = self.script("commit", Some(&req.origin));
        for a in &args {
            inv.arg(a);
        }
        let (seq, vid, created): (u64, u64, u8) = self.run(&mut inv).await?;
        Ok(CommitOutcome {
            seq,
            vid,
            created: created == 1,
        })
    }

    /// Stores a file's only chunk and commits it in one round trip: both commands are pipelined on
    /// the metadata connection, where Redis runs them in order, and the commit script checks that
    /// the chunk landed before it publishes anything. On Redis Cluster the chunk's key lives in
    /// another slot than the metadata, so there it takes two trips: the chunk, then the commit.
    pub async fn put_and_commit(
        &self,
        req: CommitRequest<'_>,
        id: u64,
        data: Bytes,
    ) -> Result<CommitOutcome> {
        if self.meta.is_cluster() {
            self.put_chunk(req.sid, id, data).await?;
            return self.commit(req).await;
        }
        let key = self.chunk_key(id);
        let args = commit_args(&req, &self.owner, &key);
        let script = self.scripts.get("commit");
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(script.get_hash()).arg(1).arg(&self.ctr_key);
        eval.arg(&self.prefix)
            .arg(now_ms())
            .arg(self.settings.gc_grace.as_millis() as u64)
            .arg(self.settings.outbox_limit)
            .arg(req.origin.to_json());
        for a in &args {
            eval.arg(a);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&key).arg(data.as_ref()).ignore();
        pipe.add_command(eval);
        let mut conn = self.meta.clone();
        let mut reply: redis::RedisResult<((u64, u64, u8),)> = pipe.query_async(&mut conn).await;
        let mut attempt = 0;
        while reply.as_ref().is_err_and(unsent) && attempt < RESENDS {
            attempt += 1;
            tokio::time::sleep(RESEND_PAUSE * attempt).await;
            let mut conn = self.meta.clone();
            reply = pipe.query_async(&mut conn).await;
        }
        let (seq, vid, created) = match reply {
            Ok((r,)) => r,
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Redis lost its script cache (a restart): the chunk is stored; commit the usual way.
                let mut inv = self.script("commit", Some(&req.origin));
                for a in &args {
                    inv.arg(a);
                }
                self.run(&mut inv).await?
            }
            Err(e) => return Err(self.error(e)),
        };
        Ok(CommitOutcome {
            seq,
            vid,
            created: created == 1,
        })
    }

    pub async fn end_session(&self, sid: u64, written: &[u64]) -> Result<()> {
        let _: u8 = self
            .run(
                self.script("end_session", None)
                    .arg(sid)
                    .arg(id_list(written)),
            )
            .await?;
        Ok(())
    }

    pub async fn open_read(&self, path: &StorePath, pin: bool) -> Result<OpenedRead> {
        let owner = if pin { self.owner.as_str() } else { "" };
        let r: Vec<String> = self
            .run(
                self.script("open_read", None)
                    .arg(path.relative())
                    .arg(owner),
            )
            .await?;
        let pin = parse_u64(&r[7])?;
        Ok(OpenedRead {
            version: Version {
                vid: parse_u64(&r[0])?,
                size: parse_u64(&r[1])?,
                chunk_size: parse_u64(&r[2])?,
                chunks: chunkmap::decode(&r[3])?,
                sha256: (!r[4].is_empty()).then(|| r[4].clone()),
                complete: r[5] != "0",
                mtime_ms: parse_u64(&r[6])?,
            },
            pin: (pin != 0).then_some(pin),
        })
    }

    pub async fn unpin(&self, pin: u64) -> Result<()> {
        self.end_session(pin, &[]).await
    }
}

/// The commit script's own arguments (ARGV[6] on), `must_exist` being a chunk key to check first.
fn commit_args(req: &CommitRequest<'_>, owner: &str, must_exist: &str) -> Vec<String> {
    vec![
        req.path.relative().to_string(),
        req.sid.to_string(),
        req.size.to_string(),
        req.chunk_size.to_string(),
        chunkmap::encode(req.chunks),
        req.sha256.clone().unwrap_or_default(),
        if req.complete { "1" } else { "0" }.to_string(),
        req.mtime_ms.to_string(),
        owner.to_string(),
        id_list(req.superseded),
        must_exist.to_string(),
    ]
}
