//! Records (see `crate::records`) in the redb file: one table of values, each prefixed with its
//! expiry, and an expiry index the maintenance pass walks.

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{db_err, EmbeddedBackend};
use crate::error::Result;
use crate::types::now_ms;

/// (table, key) -> expiry ms (8 bytes, big endian; 0 = never) followed by the value.
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
/// (expiry ms, table, key) for every record that expires.
const RECORD_EXPIRY: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("record_expiry");
const SWEEP_BATCH: usize = 1000;

fn split(stored: &[u8]) -> (u64, &[u8]) {
    let (exp, value) = stored.split_at(8.min(stored.len()));
    let mut b = [0u8; 8];
    b[..exp.len()].copy_from_slice(exp);
    (u64::from_be_bytes(b), value)
}

fn live(expires: u64, now: u64) -> bool {
    expires == 0 || expires > now
}

impl EmbeddedBackend {
    pub(crate) async fn record_write(
        &self,
        table: &str,
        key: &str,
        expected: Option<Option<&[u8]>>,
        value: &[u8],
        expires: u64,
    ) -> Result<bool> {
        let (table, key) = (table.to_owned(), key.to_owned());
        let expected = expected.map(|e| e.map(<[u8]>::to_vec));
        let mut stored = expires.to_be_bytes().to_vec();
        stored.extend_from_slice(value);
        self.blocking(move |s| {
            let mut txn = s.db.begin_write().map_err(db_err)?;
            txn.set_durability(Durability::Immediate).map_err(db_err)?;
            {
                let mut records = txn.open_table(RECORDS).map_err(db_err)?;
                let mut index = txn.open_table(RECORD_EXPIRY).map_err(db_err)?;
                let old = records
                    .get((table.as_str(), key.as_str()))
                    .map_err(db_err)?
                    .map(|v| v.value().to_vec());
                let now = now_ms();
                if let Some(expected) = &expected {
                    let current = old
                        .as_deref()
                        .map(split)
                        .filter(|(e, _)| live(*e, now))
                        .map(|(_, v)| v);
                    if current != expected.as_deref() {
                        return Ok(false);
                    }
                }
                if let Some((old_exp, _)) = old.as_deref().map(split) {
                    if old_exp != 0 {
                        index
                            .remove((old_exp, table.as_str(), key.as_str()))
                            .map_err(db_err)?;
                    }
                }
                records
                    .insert((table.as_str(), key.as_str()), stored.as_slice())
                    .map_err(db_err)?;
                if expires != 0 {
                    index
                        .insert((expires, table.as_str(), key.as_str()), ())
                        .map_err(db_err)?;
                }
            }
            txn.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    pub(crate) async fn record_get(&self, table: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let (table, key) = (table.to_owned(), key.to_owned());
        self.blocking(move |s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let records = match txn.open_table(RECORDS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(db_err(e)),
            };
            let now = now_ms();
            Ok(records
                .get((table.as_str(), key.as_str()))
                .map_err(db_err)?
                .and_then(|v| {
                    let (exp, value) = split(v.value());
                    live(exp, now).then(|| value.to_vec())
                }))
        })
        .await
    }

    pub(crate) async fn record_delete(&self, table: &str, key: &str) -> Result<bool> {
        let (table, key) = (table.to_owned(), key.to_owned());
        self.blocking(move |s| {
            let mut txn = s.db.begin_write().map_err(db_err)?;
            txn.set_durability(Durability::Immediate).map_err(db_err)?;
            let existed;
            {
                let mut records = txn.open_table(RECORDS).map_err(db_err)?;
                let mut index = txn.open_table(RECORD_EXPIRY).map_err(db_err)?;
                let old = records
                    .remove((table.as_str(), key.as_str()))
                    .map_err(db_err)?
                    .map(|v| v.value().to_vec());
                existed = match old.as_deref().map(split) {
                    Some((exp, _)) => {
                        if exp != 0 {
                            index
                                .remove((exp, table.as_str(), key.as_str()))
                                .map_err(db_err)?;
                        }
                        live(exp, now_ms())
                    }
                    None => false,
                };
            }
            txn.commit().map_err(db_err)?;
            Ok(existed)
        })
        .await
    }

    pub(crate) async fn record_list(
        &self,
        table: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        let (table, after) = (table.to_owned(), after.to_owned());
        self.blocking(move |s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let records = match txn.open_table(RECORDS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(db_err(e)),
            };
            let now = now_ms();
            let mut out = Vec::new();
            let start = (table.as_str(), after.as_str());
            for item in records.range(start..).map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let (t, key) = k.value();
                if t != table {
                    break;
                }
                if key == after {
                    continue;
                }
                let (exp, value) = split(v.value());
                if live(exp, now) {
                    out.push((key.to_owned(), value.to_vec()));
                    if out.len() >= limit {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn sweep_records(&self) -> Result<u64> {
        let mut removed = 0;
        loop {
            let n = self
                .blocking(|s| {
                    let mut txn = s.db.begin_write().map_err(db_err)?;
                    // Expired records read as absent already; losing a sweep to a crash is harmless.
                    txn.set_durability(Durability::None).map_err(db_err)?;
                    let n;
                    {
                        let mut records = txn.open_table(RECORDS).map_err(db_err)?;
                        let mut index = txn.open_table(RECORD_EXPIRY).map_err(db_err)?;
                        let now = now_ms();
                        let due: Vec<(u64, String, String)> = index
                            .range((1, "", "")..(now, "", ""))
                            .map_err(db_err)?
                            .take(SWEEP_BATCH)
                            .map(|r| {
                                r.map(|(k, _)| {
                                    let (e, t, key) = k.value();
                                    (e, t.to_owned(), key.to_owned())
                                })
                            })
                            .collect::<std::result::Result<_, _>>()
                            .map_err(db_err)?;
                        for (e, t, key) in &due {
                            index
                                .remove((*e, t.as_str(), key.as_str()))
                                .map_err(db_err)?;
                            records.remove((t.as_str(), key.as_str())).map_err(db_err)?;
                        }
                        n = due.len();
                    }
                    txn.commit().map_err(db_err)?;
                    Ok(n)
                })
                .await?;
            removed += n as u64;
            if n < SWEEP_BATCH {
                return Ok(removed);
            }
        }
    }
}
