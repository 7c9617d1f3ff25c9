//! Upkeep shared by the gateways of a namespace: this gateway's heartbeat, reclaiming what dead
//! gateways left (sessions, pins, unreferenced chunks found by owner number), deleting due garbage,
//! leases, and the counts the integrity check reads.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::keys::{parse_chunk_key, parse_u64};
use super::RedisBackend;
use crate::error::{Result, StoreError};
use crate::seam::{MaintenanceReport, StoreUsage};

/// Chunks deleted per garbage-collection round trip.
const GC_BATCH: usize = 512;

impl RedisBackend {
    pub(super) async fn heartbeat(&self) -> Result<()> {
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
                r.map_err(|e| {
                    StoreError::internal(format!("deleting a chunk failed: {e}")).with_source(e)
                })?
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
