//! The Redis backend: metadata in one hash slot per namespace, changed only by Lua scripts (each one
//! atomic step, events included); chunk values spread over the cluster, on connections of their own.
//!
//! Key layout (namespace `N`; `docs/storage.md` has the full table):
//! - `{N}:ctr` counters (ino, vid, cid, sid, seq, acked); `{N}:i:<ino>` inodes; `{N}:d:<ino>` and
//!   `{N}:l:<ino>` directory entries (name → inode, and names in order for paging);
//!   `{N}:v:<vid>` versions with their chunk maps and reference counts; `{N}:cr` chunk reference
//!   counts; `{N}:gc` chunks due for deletion; `{N}:s:<sid>`, `{N}:os:<owner>`, `{N}:owners` write
//!   sessions and read pins per gateway, with the gateways' leases; `{N}:ev` the event outbox;
//!   `{N}:cur` consumer cursors (webhooks: delivered up to which event).
//! - `N:c:{<owner>:<n>}` chunk values: each its own hash tag, so Redis Cluster spreads them over
//!   masters. Chunk ids are `owner << 32 | n`: every gateway process takes an owner number when it
//!   starts and numbers its chunks itself, so storing a chunk needs no trip to allocate it, and the
//!   chunks a dead gateway left can be found by its owner number.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redis::{FromRedisValue, Script, ScriptInvocation};

use link::{read_only, Link, SentinelLink};

use crate::backend::{
    CommitOutcome, CommitRequest, MaintenanceReport, OpenedRead, SessionStart, StoreUsage, Version,
};
use crate::chunkmap;
use crate::config::RedisConfig;
use crate::error::{ErrorKind, Result, StoreError};
use crate::outbox::{assemble, Event, EventFacts, EventKind, EventOrigin, EventPage, OutboxStatus};
use crate::path::StorePath;
use crate::types::{from_ms, now_ms, DirEntry, EntryKind, ListPage, Metadata, OpenOptions};
use crate::BackendSettings;

mod link;
mod records;

const PRELUDE: &str = include_str!("prelude.lua");
const SCRIPTS: &str = include_str!("scripts.lua");
/// Chunks deleted per garbage-collection round trip.
const GC_BATCH: usize = 512;

struct Scripts(HashMap<&'static str, Script>);

impl Scripts {
    fn load() -> Scripts {
        let mut map = HashMap::new();
        for part in SCRIPTS.split("--@ ").skip(1) {
            let (name, body) = part.split_once('\n').expect("script header line");
            map.insert(name.trim(), Script::new(&format!("{PRELUDE}\n{body}")));
        }
        Scripts(map)
    }

    fn get(&self, name: &str) -> &Script {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("no Lua script named {name}"))
    }
}

pub(crate) struct RedisBackend {
    settings: BackendSettings,
    url_shown: String,
    meta: Link,
    data: Vec<Link>,
    next_data: AtomicUsize,
    scripts: Scripts,
    /// `{N}:` — every metadata key starts with it.
    prefix: String,
    ctr_key: String,
    timeout: Duration,
    lease_known: AtomicBool,
    /// This process's owner number (as text, the form the scripts use).
    owner: String,
    next_chunk: AtomicU64,
}

/// Owner numbers stay below 2^21 so that chunk ids (`owner << 32 | n`) stay below 2^53, the largest
/// integer Lua's numbers hold exactly.
const MAX_OWNER: u64 = 1 << 21;

impl RedisBackend {
    pub async fn open(config: &RedisConfig, settings: BackendSettings) -> Result<Self> {
        let (url_shown, meta, data) = if !config.cluster_urls.is_empty() {
            connect_cluster(config).await?
        } else if !config.sentinel_urls.is_empty() {
            connect_sentinel(config).await?
        } else {
            connect_direct(config).await?
        };
        let prefix = format!("{{{}}}:", settings.namespace);
        let backend = RedisBackend {
            ctr_key: format!("{prefix}ctr"),
            prefix,
            url_shown,
            meta,
            data,
            next_data: AtomicUsize::new(0),
            scripts: Scripts::load(),
            timeout: config.command_timeout,
            lease_known: AtomicBool::new(false),
            owner: String::new(),
            next_chunk: AtomicU64::new(0),
            settings,
        };
        let mut backend = backend;
        let _: i64 = backend.run(&mut backend.script("init", None)).await?;
        let owner: u64 = backend.run(&mut backend.script("new_owner", None)).await?;
        if owner >= MAX_OWNER {
            return Err(StoreError::unavailable(format!(
                "namespace {} has used up its {MAX_OWNER} gateway start numbers; move to a new storage.namespace",
                backend.settings.namespace
            )));
        }
        backend.owner = owner.to_string();
        backend.next_chunk = AtomicU64::new(owner << 32);
        backend.heartbeat().await?;
        Ok(backend)
    }

    pub fn describe(&self) -> String {
        format!(
            "redis at {} (namespace {})",
            self.url_shown, self.settings.namespace
        )
    }

    fn chunk_key(&self, id: u64) -> String {
        chunk_key(&self.settings.namespace, id)
    }

    fn data_conn(&self) -> Link {
        let i = self.next_data.fetch_add(1, Ordering::Relaxed) % self.data.len();
        self.data[i].clone()
    }

    /// An invocation of a named script with the common leading arguments filled in.
    fn script(&self, name: &str, origin: Option<&EventOrigin>) -> ScriptInvocation<'_> {
        let mut inv = self.scripts.get(name).key(&self.ctr_key);
        inv.arg(&self.prefix)
            .arg(now_ms())
            .arg(self.settings.gc_grace.as_millis() as u64)
            .arg(self.settings.outbox_limit)
            .arg(origin.map(EventOrigin::to_json).unwrap_or_default());
        inv
    }

    async fn run<T: FromRedisValue>(&self, inv: &mut ScriptInvocation<'_>) -> Result<T> {
        let mut attempt = 0;
        loop {
            let mut conn = self.meta.clone();
            match inv.invoke_async(&mut conn).await {
                // The connection had died (Redis restarted): the script never ran, so it may run
                // on the connection the manager makes next, instead of failing the operation.
                Err(e) if (unsent(&e) || read_only(&e)) && attempt < RESENDS => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "redis: connection lost; sending again");
                    tokio::time::sleep(RESEND_PAUSE * attempt).await;
                }
                r => return r.map_err(|e| self.error(e)),
            }
        }
    }

    fn error(&self, e: redis::RedisError) -> StoreError {
        if let Some(code) = e.code() {
            if let Some(kind) = code.strip_prefix("FG:").and_then(ErrorKind::from_code) {
                return StoreError::new(kind, script_message(e.detail().unwrap_or(code)));
            }
        }
        // A script's refusal inside a pipeline (put_and_commit).
        if let Some(items) = e.clone().into_server_errors() {
            for (_, item) in items.iter() {
                if let Some(kind) = item
                    .code()
                    .strip_prefix("FG:")
                    .and_then(ErrorKind::from_code)
                {
                    return StoreError::new(kind, script_message(item.details().unwrap_or("")));
                }
            }
        }
        if e.is_timeout() {
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
        }
    }

    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.meta.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    pub async fn stat(&self, path: &StorePath) -> Result<Metadata> {
        let f: Vec<Option<String>> = self
            .run(self.script("stat", None).arg(path.relative()))
            .await?;
        metadata_from(&f)
    }

    pub async fn list(
        &self,
        dir: &StorePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        let limit = limit.max(1);
        let out: Vec<String> = self
            .run(
                self.script("list", None)
                    .arg(dir.relative())
                    .arg(after.unwrap_or(""))
                    .arg(limit),
            )
            .await?;
        let more = out.first().map(|s| s == "1").unwrap_or(false);
        let mut entries = Vec::new();
        for rec in out[1..].chunks(7) {
            let fields: Vec<Option<String>> = rec[1..]
                .iter()
                .map(|s| (!s.is_empty()).then(|| s.clone()))
                .collect();
            entries.push(DirEntry {
                name: rec[0].clone(),
                metadata: metadata_from(&fields)?,
            });
        }
        let next = if more {
            entries.last().map(|e| e.name.clone())
        } else {
            None
        };
        Ok(ListPage { entries, next })
    }

    pub async fn mkdir(&self, path: &StorePath, origin: EventOrigin) -> Result<u64> {
        self.run(self.script("mkdir", Some(&origin)).arg(path.relative()))
            .await
    }

    pub async fn rmdir(&self, path: &StorePath, origin: EventOrigin) -> Result<u64> {
        self.run(self.script("rmdir", Some(&origin)).arg(path.relative()))
            .await
    }

    pub async fn delete(&self, path: &StorePath, origin: EventOrigin) -> Result<u64> {
        self.run(self.script("delete", Some(&origin)).arg(path.relative()))
            .await
    }

    pub async fn rename(
        &self,
        from: &StorePath,
        to: &StorePath,
        replace: bool,
        origin: EventOrigin,
    ) -> Result<u64> {
        self.run(
            self.script("rename", Some(&origin))
                .arg(from.relative())
                .arg(to.relative())
                .arg(if replace { "1" } else { "0" }),
        )
        .await
    }

    pub async fn set_mtime(
        &self,
        path: &StorePath,
        mtime_ms: u64,
        origin: EventOrigin,
    ) -> Result<u64> {
        self.run(
            self.script("set_mtime", Some(&origin))
                .arg(path.relative())
                .arg(mtime_ms),
        )
        .await
    }

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
        if (first + n) >> 32 != first >> 32 {
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

    pub async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let mut conn = self.meta.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("{}ev", self.prefix))
            .arg(format!("{}-0", after + 1))
            .arg("+")
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        reply
            .ids
            .into_iter()
            .map(|entry| event_from(&entry))
            .collect()
    }

    pub async fn events_page(&self, after: u64, limit: usize) -> Result<EventPage> {
        // The newest seq first, then the events: see `EventPage::decide` for why this order makes
        // the two plain reads safe without a transaction.
        let mut conn = self.meta.clone();
        let last: Option<u64> = redis::cmd("HGET")
            .arg(&self.ctr_key)
            .arg("seq")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        let events = self.events_after(after, limit).await?;
        Ok(EventPage::decide(after, last.unwrap_or(0), events))
    }

    pub async fn ack(&self, upto: u64) -> Result<u64> {
        self.run(
            self.script("ack", None)
                .arg(upto)
                .arg(self.settings.history_max)
                .arg(self.settings.history_age.as_millis() as u64),
        )
        .await
    }

    pub async fn outbox_status(&self) -> Result<OutboxStatus> {
        let (last_seq, acked_seq): (u64, u64) =
            self.run(&mut self.script("outbox_status", None)).await?;
        Ok(OutboxStatus {
            last_seq,
            acked_seq,
        })
    }

    async fn heartbeat(&self) -> Result<()> {
        let lease = self.settings.orphan_timeout.as_millis() as u64;
        let state: u8 = self
            .run(self.script("heartbeat", None).arg(&self.owner).arg(lease))
            .await?;
        if state == 0 && self.lease_known.load(Ordering::Relaxed) {
            tracing::warn!(
                owner = %self.owner,
                "this gateway lost its storage lease (no heartbeat for longer than storage.orphan_timeout); \
                 its unfinished uploads were reclaimed and will fail"
            );
        }
        self.lease_known.store(true, Ordering::Relaxed);
        Ok(())
    }

    pub async fn maintain(&self) -> Result<MaintenanceReport> {
        self.heartbeat().await?;
        // Events age out of the history even when no new event is acknowledged.
        let _: u64 = self
            .run(
                self.script("trim_history", None)
                    .arg(self.settings.history_max)
                    .arg(self.settings.history_age.as_millis() as u64),
            )
            .await?;
        let mut report = MaintenanceReport::default();
        loop {
            let ended: u64 = self.run(self.script("reclaim", None).arg("")).await?;
            report.sessions_reclaimed += ended;
            if ended == 0 {
                break;
            }
        }
        let dead: Vec<u64> = self.run(&mut self.script("dead_owners", None)).await?;
        for owner in dead {
            self.queue_orphans_of(owner).await?;
        }
        loop {
            let due: Vec<String> = self.run(self.script("gc_due", None).arg(GC_BATCH)).await?;
            if due.is_empty() {
                break;
            }
            let mut keys = Vec::with_capacity(due.len());
            for id in &due {
                keys.push(self.chunk_key(parse_u64(id)?));
            }
            self.unlink(keys).await?;
            let mut forget = self.script("gc_forget", None);
            for id in &due {
                forget.arg(id);
            }
            let _: u64 = self.run(&mut forget).await?;
            report.chunks_deleted += due.len() as u64;
            if due.len() < GC_BATCH {
                break;
            }
        }
        Ok(report)
    }

    pub async fn release_owner(&self) -> Result<()> {
        let _: u64 = self
            .run(self.script("reclaim", None).arg(&self.owner))
            .await?;
        let owner = parse_u64(&self.owner)?;
        self.queue_orphans_of(owner).await
    }

    /// Finds the chunks a dead gateway stored (by its owner number) and queues for deletion those no
    /// version refers to. The owner is forgotten only once the whole scan went through, so a scan
    /// cut short by a crash is simply done again.
    async fn queue_orphans_of(&self, owner: u64) -> Result<()> {
        let pattern = format!("{}:c:{{{owner}:*}}", self.settings.namespace);
        let ids = self.scan_chunk_ids(&pattern).await?;
        let mut batches = ids.chunks(1000).peekable();
        if batches.peek().is_none() {
            let _: u8 = self
                .run(self.script("orphans", None).arg(owner).arg("1"))
                .await?;
            return Ok(());
        }
        while let Some(batch) = batches.next() {
            let mut call = self.script("orphans", None);
            call.arg(owner)
                .arg(if batches.peek().is_none() { "1" } else { "0" });
            for id in batch {
                call.arg(id);
            }
            let _: u8 = self.run(&mut call).await?;
        }
        Ok(())
    }

    /// Chunk ids of the stored chunk keys matching `pattern`, on every master of a cluster.
    async fn scan_chunk_ids(&self, pattern: &str) -> Result<Vec<u64>> {
        let masters = self.meta.masters().await.map_err(|e| self.error(e))?;
        let nodes: Vec<Option<&(String, u16)>> = match &masters {
            Some(list) => list.iter().map(Some).collect(),
            None => vec![None],
        };
        let mut ids = Vec::new();
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = self
                    .meta
                    .query_on(
                        node,
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000),
                    )
                    .await
                    .map_err(|e| self.error(e))?;
                for key in keys {
                    ids.push(parse_chunk_key(&key)?);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(ids)
    }

    /// Deletes chunk values: one pipeline on a single server; on a cluster, where each key has its
    /// own slot, commands sent together on the cluster connection, which routes each to its master.
    async fn unlink(&self, keys: Vec<String>) -> Result<()> {
        let conn = self.data_conn();
        if conn.is_cluster() {
            let mut sent = tokio::task::JoinSet::new();
            for key in keys {
                let mut conn = conn.clone();
                sent.spawn(async move {
                    redis::cmd("UNLINK")
                        .arg(key)
                        .query_async::<u64>(&mut conn)
                        .await
                });
            }
            while let Some(r) = sent.join_next().await {
                r.map_err(|e| StoreError::internal(format!("deleting a chunk failed: {e}")))?
                    .map_err(|e| self.error(e))?;
            }
            return Ok(());
        }
        let mut unlink = redis::pipe();
        for key in keys {
            unlink.cmd("UNLINK").arg(key).ignore();
        }
        let mut conn = conn;
        unlink
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.error(e))
    }

    pub async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let held: u8 = self
            .run(
                self.script("lease", None)
                    .arg(name)
                    .arg(holder)
                    .arg(ttl.as_millis() as u64),
            )
            .await?;
        Ok(held == 1)
    }

    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let _: u8 = self
            .run(self.script("lease", None).arg(name).arg(holder).arg(0))
            .await?;
        Ok(())
    }

    pub async fn cursor(&self, name: &str, seq: Option<u64>) -> Result<u64> {
        let mut inv = self.script("cursor", None);
        inv.arg(name)
            .arg(seq.map(|s| s.to_string()).unwrap_or_default())
            .arg(self.settings.history_max)
            .arg(self.settings.history_age.as_millis() as u64);
        self.run(&mut inv).await
    }

    pub async fn retain_cursors(&self, keep: &[&str]) -> Result<u64> {
        let mut inv = self.script("retain_cursors", None);
        inv.arg(self.settings.history_max)
            .arg(self.settings.history_age.as_millis() as u64);
        for name in keep {
            inv.arg(*name);
        }
        self.run(&mut inv).await
    }

    pub async fn usage(&self) -> Result<StoreUsage> {
        let (referenced_chunks, garbage_chunks, sessions): (u64, u64, u64) =
            self.run(&mut self.script("usage", None)).await?;
        let stored_chunks = self.stored_chunk_ids().await?.len() as u64;
        Ok(StoreUsage {
            referenced_chunks,
            garbage_chunks,
            sessions,
            stored_chunks,
        })
    }

    async fn stored_chunk_ids(&self) -> Result<Vec<u64>> {
        let pattern = format!("{}:c:*", self.settings.namespace);
        self.scan_chunk_ids(&pattern).await
    }

    pub async fn chunk_inventory(&self) -> Result<(Vec<u64>, Vec<u64>)> {
        let referenced: Vec<u64> = self.run(&mut self.script("referenced", None)).await?;
        Ok((referenced, self.stored_chunk_ids().await?))
    }
}

type Links = (String, Link, Vec<Link>);

fn invalid_url(key: &str, shown: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::new(
        ErrorKind::InvalidArgument,
        format!("{key} {shown:?} is not a valid Redis URL: {e}"),
    )
}

fn connection_info(key: &str, url: &str, password: Option<&str>) -> Result<redis::ConnectionInfo> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| invalid_url(key, &mask_url(url), e))?;
    Ok(match password {
        Some(p) => info
            .clone()
            .set_redis_settings(info.redis_settings().clone().set_password(p)),
        None => info,
    })
}

fn connection_infos(key: &str, urls: &[String]) -> Result<Vec<redis::ConnectionInfo>> {
    urls.iter()
        .map(|url| connection_info(key, url, None))
        .collect()
}

/// URLs for messages, passwords masked.
fn mask_urls(urls: &[String]) -> String {
    urls.iter()
        .map(|u| mask_url(u))
        .collect::<Vec<_>>()
        .join(",")
}

/// One server: a metadata connection and `data_connections` for chunks, each a connection manager.
async fn connect_direct(config: &RedisConfig) -> Result<Links> {
    let shown = mask_url(&config.url);
    let info = connection_info("storage.redis.url", &config.url, config.password.as_deref())?;
    let client =
        redis::Client::open(info).map_err(|e| invalid_url("storage.redis.url", &shown, e))?;
    let manager_config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(config.command_timeout))
        .set_connection_timeout(Some(config.command_timeout.min(Duration::from_secs(5))))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let connect = || async {
        client
            .get_connection_manager_with_config(manager_config.clone())
            .await
            .map(Link::Direct)
            .map_err(|e| {
                StoreError::unavailable(format!("cannot connect to Redis at {shown}: {e}"))
            })
    };
    let meta = connect().await?;
    let mut data = Vec::new();
    for _ in 0..config.data_connections.max(1) {
        data.push(connect().await?);
    }
    Ok((shown.clone(), meta, data))
}

/// A Redis Cluster: the cluster connection keeps one connection per node and routes each command
/// by its key's slot, so one handle serves metadata and another (own connections) serves chunks.
async fn connect_cluster(config: &RedisConfig) -> Result<Links> {
    let shown = format!("cluster {}", mask_urls(&config.cluster_urls));
    let nodes = connection_infos("storage.redis.urls", &config.cluster_urls)?;
    let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
        .response_timeout(config.command_timeout)
        .connection_timeout(config.command_timeout.min(Duration::from_secs(5)))
        .retries(4);
    if let Some(p) = &config.password {
        builder = builder.password(p);
    }
    let client = builder
        .build()
        .map_err(|e| invalid_url("storage.redis.urls", &shown, e))?;
    let connect = || async {
        client
            .get_async_connection()
            .await
            .map(Link::Cluster)
            .map_err(|e| StoreError::unavailable(format!("cannot connect to Redis {shown}: {e}")))
    };
    let meta = connect().await?;
    // Each cluster connection multiplexes every node already; two spread large values further.
    let mut data = Vec::new();
    for _ in 0..config.data_connections.clamp(1, 2) {
        data.push(connect().await?);
    }
    Ok((shown.clone(), meta, data))
}

/// The master the sentinels name; asked again after it fails or turns out to be a replica.
async fn connect_sentinel(config: &RedisConfig) -> Result<Links> {
    let shown = format!(
        "master {:?} of sentinels {}",
        config.master_name,
        mask_urls(&config.sentinel_urls)
    );
    let sentinels = connection_infos("storage.redis.sentinel_urls", &config.sentinel_urls)?;
    // The master's password and database: from storage.redis.url's, or the password file.
    let mut node = redis::RedisConnectionInfo::default();
    if !config.url.is_empty() {
        node = connection_info("storage.redis.url", &config.url, config.password.as_deref())?
            .redis_settings()
            .clone();
    } else if let Some(p) = &config.password {
        node = node.set_password(p);
    }
    let mut node_info =
        redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
    // TLS to the master when the sentinels (or storage.redis.url) are reached over TLS.
    if std::iter::once(&config.url)
        .chain(&config.sentinel_urls)
        .any(|u| u.starts_with("rediss://"))
    {
        node_info = node_info.set_tls_mode(redis::TlsMode::Secure);
    }
    let link_config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(config.command_timeout))
        .set_connection_timeout(Some(config.command_timeout.min(Duration::from_secs(5))));
    let connect = || async {
        let client = redis::sentinel::SentinelClient::build(
            sentinels.clone(),
            config.master_name.clone(),
            Some(node_info.clone()),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|e| invalid_url("storage.redis.sentinel_urls", &shown, e))?;
        SentinelLink::connect(client, link_config.clone())
            .await
            .map(Link::Sentinel)
            .map_err(|e| StoreError::unavailable(format!("cannot reach the Redis {shown}: {e}")))
    };
    let meta = connect().await?;
    let mut data = Vec::new();
    for _ in 0..config.data_connections.max(1) {
        data.push(connect().await?);
    }
    Ok((shown.clone(), meta, data))
}

/// A script's error message without the location Redis 7 appends (" script: <sha>, on @user_script:13.").
/// How often a command that never reached Redis is sent again, and the pause before each time
/// (times the attempt), while a connection manager replaces a dropped connection.
const RESENDS: u32 = 3;
const RESEND_PAUSE: Duration = Duration::from_millis(50);

/// Whether a command failed before it could reach Redis (writing to a connection that had already
/// died), so that sending it again cannot run it twice. redis-rs keeps the I/O error private, so
/// its text tells: a broken pipe happens on the write side only.
fn unsent(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() && e.to_string().to_ascii_lowercase().contains("broken pipe")
}

fn script_message(detail: &str) -> String {
    detail
        .split(" script: ")
        .next()
        .unwrap_or(detail)
        .trim()
        .to_string()
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

fn chunk_key(namespace: &str, id: u64) -> String {
    format!("{namespace}:c:{{{}:{}}}", id >> 32, id & 0xFFFF_FFFF)
}

/// The chunk id in a key `N:c:{<owner>:<n>}`.
fn parse_chunk_key(key: &str) -> Result<u64> {
    let inner = key
        .rsplit('{')
        .next()
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or("");
    let (owner, n) = inner
        .split_once(':')
        .ok_or_else(|| StoreError::internal(format!("unexpected chunk key {key:?}")))?;
    Ok(parse_u64(owner)? << 32 | parse_u64(n)?)
}

/// Chunk ids as the scripts take them: decimal, comma-separated.
fn id_list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn parse_u64(s: &str) -> Result<u64> {
    if s.is_empty() {
        return Ok(0);
    }
    s.parse().map_err(|_| {
        StoreError::internal(format!("Redis returned {s:?} where a number was expected"))
    })
}

/// Builds metadata from the script's `{k, m, s, v, h, c}`.
fn metadata_from(f: &[Option<String>]) -> Result<Metadata> {
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

fn event_from(entry: &redis::streams::StreamId) -> Result<Event> {
    let field = |name: &str| -> Result<String> {
        match entry.map.get(name) {
            Some(v) => String::from_redis_value_ref(v)
                .map_err(|e| StoreError::internal(format!("event {} field {name}: {e}", entry.id))),
            None => Ok(String::new()),
        }
    };
    let seq = parse_u64(entry.id.split('-').next().unwrap_or(""))?;
    let kind = EventKind::parse(&field("t")?)
        .ok_or_else(|| StoreError::internal(format!("event {seq} has an unknown type")))?;
    let origin: EventOrigin = serde_json::from_str(&field("x")?)
        .map_err(|e| StoreError::internal(format!("event {seq} has a corrupt origin: {e}")))?;
    let opt = |s: String| (!s.is_empty()).then_some(s);
    let size = opt(field("s")?).map(|s| parse_u64(&s)).transpose()?;
    let version = opt(field("v")?).map(|s| parse_u64(&s)).transpose()?;
    let facts = EventFacts {
        old_path: opt(field("o")?),
        size,
        sha256: opt(field("h")?),
        complete: opt(field("c")?).map(|c| c != "0"),
        version,
        replaced: field("r")? == "1",
    };
    Ok(assemble(seq, kind, field("p")?, origin, facts))
}

/// The URL with any password replaced, for logs and messages.
fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        assert_eq!(mask_url("redis://:secret@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(mask_url("rediss://u:p@h"), "rediss://u:***@h");
        assert_eq!(mask_url("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn script_locations_are_cut_from_messages() {
        assert_eq!(
            script_message("/later: a directory was created script: 2a66, on @user_script:13."),
            "/later: a directory was created"
        );
        assert_eq!(script_message("plain"), "plain");
    }

    #[test]
    fn chunk_keys_round_trip() {
        let id = (7u64 << 32) | 123;
        assert_eq!(chunk_key("fg", id), "fg:c:{7:123}");
        assert_eq!(parse_chunk_key("fg:c:{7:123}").unwrap(), id);
        assert_eq!(id_list(&[1, 2]), "1,2");
    }

    #[test]
    fn every_script_parses_into_a_name() {
        let s = Scripts::load();
        for name in [
            "init",
            "stat",
            "list",
            "mkdir",
            "rmdir",
            "delete",
            "rename",
            "set_mtime",
            "open_session",
            "new_owner",
            "dead_owners",
            "orphans",
            "commit",
            "end_session",
            "open_read",
            "ack",
            "trim_history",
            "outbox_status",
            "heartbeat",
            "reclaim",
            "gc_due",
            "gc_forget",
            "lease",
            "cursor",
            "retain_cursors",
            "usage",
            "referenced",
        ] {
            s.get(name);
        }
    }
}
