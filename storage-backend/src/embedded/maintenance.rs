//! Upkeep: deleting chunks whose grace period is over, aging the history, and the counts the
//! integrity check and metrics read.

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::tables::{CHUNKS, CHUNK_REFS, GC, SESSIONS};
use super::{db_err, EmbeddedBackend};
use crate::error::Result;
use crate::seam::{MaintenanceReport, StoreUsage};
use crate::types::now_ms;

const GC_BATCH: usize = 256;

impl EmbeddedBackend {
    pub async fn maintain(&self) -> Result<MaintenanceReport> {
        // Events age out of the history even when no new event is acknowledged.
        self.write(Durability::None, |s, t| {
            t.trim_history(&s.settings, now_ms())
        })
        .await?;
        let mut report = MaintenanceReport::default();
        loop {
            let deleted = self
                .write(Durability::None, |_, t| {
                    let now = now_ms();
                    let due: Vec<(u64, u64)> =
                        t.gc.range((0, 0)..=(now, u64::MAX))
                            .map_err(db_err)?
                            .take(GC_BATCH)
                            .map(|r| r.map(|(k, _)| k.value()))
                            .collect::<std::result::Result<_, _>>()
                            .map_err(db_err)?;
                    for &(when, id) in &due {
                        t.chunks.remove(id).map_err(db_err)?;
                        t.gc.remove((when, id)).map_err(db_err)?;
                    }
                    Ok(due.len())
                })
                .await?;
            report.chunks_deleted += deleted as u64;
            if deleted < GC_BATCH {
                return Ok(report);
            }
        }
    }

    pub async fn release_owner(&self) -> Result<()> {
        // Make whatever non-durable work is left durable, so a clean shutdown loses nothing.
        self.write(Durability::Immediate, |_, _| Ok(())).await
    }

    pub async fn usage(&self) -> Result<StoreUsage> {
        self.blocking(|s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let len = |def: TableDefinition<u64, &[u8]>| -> Result<u64> {
                txn.open_table(def).map_err(db_err)?.len().map_err(db_err)
            };
            let stored_chunks = len(CHUNKS)?;
            let referenced_chunks = txn
                .open_table(CHUNK_REFS)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?;
            let garbage_chunks = txn.open_table(GC).map_err(db_err)?.len().map_err(db_err)?;
            let sessions = txn
                .open_table(SESSIONS)
                .map_err(db_err)?
                .len()
                .map_err(db_err)?
                + s.pins.lock().unwrap().values().sum::<u64>();
            Ok(StoreUsage {
                referenced_chunks,
                garbage_chunks,
                sessions,
                stored_chunks,
            })
        })
        .await
    }

    pub async fn chunk_inventory(&self) -> Result<(Vec<u64>, Vec<u64>)> {
        self.blocking(|s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let keys = |t: redb::ReadOnlyTable<u64, &[u8]>| -> Result<Vec<u64>> {
                t.iter()
                    .map_err(db_err)?
                    .map(|r| r.map(|(k, _)| k.value()).map_err(db_err))
                    .collect()
            };
            let referenced: Vec<u64> = txn
                .open_table(CHUNK_REFS)
                .map_err(db_err)?
                .iter()
                .map_err(db_err)?
                .map(|r| r.map(|(k, _)| k.value()).map_err(db_err))
                .collect::<Result<_>>()?;
            Ok((referenced, keys(txn.open_table(CHUNKS).map_err(db_err)?)?))
        })
        .await
    }
}
