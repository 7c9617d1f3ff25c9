//! The tables of the redb file and their records: the same model as the Redis keys (inodes,
//! directory entries, versions with their chunk maps, counters), and the lookups every operation
//! starts with.

use std::collections::HashMap;
use std::ops::Bound;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{corrupt, db_err, not_found, shown, ROOT};
use crate::error::{ErrorKind, Result, StoreError};
use crate::types::{from_ms, EntryKind, Metadata};

pub(super) const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
pub(super) const DIRENTS: TableDefinition<(u64, &str), u64> = TableDefinition::new("dirents");
pub(super) const VERSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("versions");
pub(super) const CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("chunks");
pub(super) const CHUNK_REFS: TableDefinition<u64, u64> = TableDefinition::new("chunk_refs");
/// (due time in ms, chunk id)
pub(super) const GC: TableDefinition<(u64, u64), ()> = TableDefinition::new("gc");
/// session id -> base version id (0 = none)
pub(super) const SESSIONS: TableDefinition<u64, u64> = TableDefinition::new("sessions");
/// (session id, chunk id) for every chunk a session wrote and no commit took over yet
pub(super) const SESSION_CHUNKS: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("session_chunks");
/// versions no file refers to any more, kept only while an in-memory read pin holds them
pub(super) const ZOMBIES: TableDefinition<u64, ()> = TableDefinition::new("zombies");
pub(super) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
pub(super) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Consumer cursors live among the counters under this prefix (`;` sorts right after `:`).
pub(super) const CURSOR_PREFIX: &str = "cursor:";
pub(super) const CURSOR_END: &str = "cursor;";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Inode {
    pub(super) dir: bool,
    pub(super) mtime: u64,
    pub(super) parent: u64,
    #[serde(default)]
    pub(super) vid: u64,
    #[serde(default)]
    pub(super) size: u64,
    #[serde(default)]
    pub(super) sha: Option<String>,
    #[serde(default = "yes")]
    pub(super) complete: bool,
}

fn yes() -> bool {
    true
}

impl Inode {
    pub(super) fn metadata(&self) -> Metadata {
        Metadata {
            kind: if self.dir {
                EntryKind::Directory
            } else {
                EntryKind::File
            },
            size: self.size,
            mtime: from_ms(self.mtime),
            version: self.vid,
            sha256: self.sha.clone(),
            complete: self.complete,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct VersionRec {
    pub(super) size: u64,
    pub(super) chunk_size: u64,
    pub(super) map: String,
    pub(super) refs: u64,
}

pub(super) struct Tables<'t> {
    pub(super) inodes: Table<'t, u64, &'static [u8]>,
    pub(super) dirents: Table<'t, (u64, &'static str), u64>,
    pub(super) versions: Table<'t, u64, &'static [u8]>,
    pub(super) chunks: Table<'t, u64, &'static [u8]>,
    pub(super) chunk_refs: Table<'t, u64, u64>,
    pub(super) gc: Table<'t, (u64, u64), ()>,
    pub(super) sessions: Table<'t, u64, u64>,
    pub(super) session_chunks: Table<'t, (u64, u64), ()>,
    pub(super) zombies: Table<'t, u64, ()>,
    pub(super) events: Table<'t, u64, &'static [u8]>,
    pub(super) counters: Table<'t, &'static str, u64>,
    /// The read pins, locked from before the transaction looks at them until after it commits, so a
    /// reader can neither pin a version this transaction frees nor miss its commit.
    pub(super) pins: Option<&'t HashMap<u64, u64>>,
}

impl<'t> Tables<'t> {
    pub(super) fn open(
        txn: &'t WriteTransaction,
        pins: Option<&'t HashMap<u64, u64>>,
    ) -> Result<Self> {
        Ok(Tables {
            pins,
            inodes: txn.open_table(INODES).map_err(db_err)?,
            dirents: txn.open_table(DIRENTS).map_err(db_err)?,
            versions: txn.open_table(VERSIONS).map_err(db_err)?,
            chunks: txn.open_table(CHUNKS).map_err(db_err)?,
            chunk_refs: txn.open_table(CHUNK_REFS).map_err(db_err)?,
            gc: txn.open_table(GC).map_err(db_err)?,
            sessions: txn.open_table(SESSIONS).map_err(db_err)?,
            session_chunks: txn.open_table(SESSION_CHUNKS).map_err(db_err)?,
            zombies: txn.open_table(ZOMBIES).map_err(db_err)?,
            events: txn.open_table(EVENTS).map_err(db_err)?,
            counters: txn.open_table(COUNTERS).map_err(db_err)?,
        })
    }

    pub(super) fn counter(&self, name: &str) -> Result<u64> {
        Ok(self
            .counters
            .get(name)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    pub(super) fn next(&mut self, name: &str) -> Result<u64> {
        let v = self.counter(name)? + 1;
        self.counters.insert(name, v).map_err(db_err)?;
        Ok(v)
    }

    pub(super) fn inode(&self, ino: u64) -> Result<Option<Inode>> {
        get_inode(&self.inodes, ino)
    }

    pub(super) fn put_inode(&mut self, ino: u64, inode: &Inode) -> Result<()> {
        let bytes = serde_json::to_vec(inode).expect("inode serialises");
        self.inodes.insert(ino, bytes.as_slice()).map_err(db_err)?;
        Ok(())
    }

    pub(super) fn lookup(&self, segs: &[&str]) -> Result<(Option<u64>, u64)> {
        lookup(&self.inodes, &self.dirents, segs)
    }

    fn touch_dir(&mut self, dir: u64, now: u64) -> Result<()> {
        let mut node = self
            .inode(dir)?
            .ok_or_else(|| corrupt("missing directory"))?;
        node.mtime = now;
        self.put_inode(dir, &node)
    }

    pub(super) fn link(&mut self, parent: u64, name: &str, ino: u64, now: u64) -> Result<()> {
        self.dirents.insert((parent, name), ino).map_err(db_err)?;
        self.touch_dir(parent, now)
    }

    pub(super) fn unlink(&mut self, parent: u64, name: &str, now: u64) -> Result<()> {
        self.dirents.remove((parent, name)).map_err(db_err)?;
        self.touch_dir(parent, now)
    }

    pub(super) fn is_empty_dir(&self, dir: u64) -> Result<bool> {
        let mut range = self
            .dirents
            .range::<(u64, &str)>((Bound::Included((dir, "")), Bound::Excluded((dir + 1, ""))))
            .map_err(db_err)?;
        Ok(range.next().is_none())
    }

    pub(super) fn version(&self, vid: u64) -> Result<Option<VersionRec>> {
        get_version(&self.versions, vid)
    }

    pub(super) fn put_version(&mut self, vid: u64, rec: &VersionRec) -> Result<()> {
        let bytes = serde_json::to_vec(rec).expect("version serialises");
        self.versions
            .insert(vid, bytes.as_slice())
            .map_err(db_err)?;
        Ok(())
    }
}

pub(super) fn get_inode(
    inodes: &impl ReadableTable<u64, &'static [u8]>,
    ino: u64,
) -> Result<Option<Inode>> {
    match inodes.get(ino).map_err(db_err)? {
        Some(v) => Ok(Some(
            serde_json::from_slice(v.value())
                .map_err(|e| corrupt("inode record").with_source(e))?,
        )),
        None => Ok(None),
    }
}

fn get_child(
    dirents: &impl ReadableTable<(u64, &'static str), u64>,
    dir: u64,
    name: &str,
) -> Result<Option<u64>> {
    Ok(dirents.get((dir, name)).map_err(db_err)?.map(|v| v.value()))
}

/// (inode of the entry or None, parent inode); for the root: (Some(ROOT), ROOT). Fails when a
/// parent is missing or is a file.
pub(super) fn lookup(
    inodes: &impl ReadableTable<u64, &'static [u8]>,
    dirents: &impl ReadableTable<(u64, &'static str), u64>,
    segs: &[&str],
) -> Result<(Option<u64>, u64)> {
    let Some((last, parents)) = segs.split_last() else {
        return Ok((Some(ROOT), ROOT));
    };
    let mut ino = ROOT;
    for (i, seg) in parents.iter().enumerate() {
        let child = get_child(dirents, ino, seg)?.ok_or_else(|| not_found(&shown(segs, i + 1)))?;
        let node = get_inode(inodes, child)?.ok_or_else(|| corrupt("dangling directory entry"))?;
        if !node.dir {
            return Err(StoreError::new(
                ErrorKind::NotADirectory,
                format!("{}: not a directory", shown(segs, i + 1)),
            ));
        }
        ino = child;
    }
    Ok((get_child(dirents, ino, last)?, ino))
}

pub(super) fn get_version(
    versions: &impl ReadableTable<u64, &'static [u8]>,
    vid: u64,
) -> Result<Option<VersionRec>> {
    match versions.get(vid).map_err(db_err)? {
        Some(v) => Ok(Some(
            serde_json::from_slice(v.value())
                .map_err(|e| corrupt("version record").with_source(e))?,
        )),
        None => Ok(None),
    }
}
