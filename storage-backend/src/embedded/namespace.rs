//! The namespace: looking paths up, listing, and the changes that move or remove entries, each one
//! write transaction together with its event.

use std::ops::Bound;

use redb::{Durability, ReadableDatabase};

use super::outbox::file_facts;
use super::tables::{get_inode, lookup, Inode, DIRENTS, INODES};
use super::{corrupt, db_err, not_found, EmbeddedBackend};
use crate::error::{ErrorKind, Result, StoreError};
use crate::outbox::{EventFacts, EventKind, EventOrigin};
use crate::path::StorePath;
use crate::types::{now_ms, DirEntry, ListPage, Metadata};

impl EmbeddedBackend {
    pub async fn stat(&self, path: &StorePath) -> Result<Metadata> {
        let path = path.clone();
        self.blocking(move |s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let inodes = txn.open_table(INODES).map_err(db_err)?;
            let dirents = txn.open_table(DIRENTS).map_err(db_err)?;
            let segs: Vec<&str> = path.segments().collect();
            let ino = lookup(&inodes, &dirents, &segs)?
                .0
                .ok_or_else(|| not_found(path.as_str()))?;
            Ok(get_inode(&inodes, ino)?
                .ok_or_else(|| corrupt("dangling entry"))?
                .metadata())
        })
        .await
    }

    pub async fn list(
        &self,
        dir: &StorePath,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage> {
        let dir = dir.clone();
        let after = after.map(str::to_string);
        let limit = limit.max(1);
        self.blocking(move |s| {
            let txn = s.db.begin_read().map_err(db_err)?;
            let inodes = txn.open_table(INODES).map_err(db_err)?;
            let dirents = txn.open_table(DIRENTS).map_err(db_err)?;
            let segs: Vec<&str> = dir.segments().collect();
            let ino = lookup(&inodes, &dirents, &segs)?
                .0
                .ok_or_else(|| not_found(dir.as_str()))?;
            if !get_inode(&inodes, ino)?
                .ok_or_else(|| corrupt("dangling entry"))?
                .dir
            {
                return Err(StoreError::new(
                    ErrorKind::NotADirectory,
                    format!("{dir}: not a directory"),
                ));
            }
            let start = match &after {
                Some(a) => Bound::Excluded((ino, a.as_str())),
                None => Bound::Included((ino, "")),
            };
            let mut entries = Vec::new();
            let mut more = false;
            for item in dirents
                .range::<(u64, &str)>((start, Bound::Excluded((ino + 1, ""))))
                .map_err(db_err)?
            {
                let (k, v) = item.map_err(db_err)?;
                if entries.len() == limit {
                    more = true;
                    break;
                }
                let node =
                    get_inode(&inodes, v.value())?.ok_or_else(|| corrupt("dangling entry"))?;
                entries.push(DirEntry {
                    name: k.value().1.to_string(),
                    metadata: node.metadata(),
                });
            }
            let next = if more {
                entries.last().map(|e| e.name.clone())
            } else {
                None
            };
            Ok(ListPage { entries, next })
        })
        .await
    }

    pub async fn mkdir(&self, path: &StorePath, origin: EventOrigin) -> Result<u64> {
        let path = path.clone();
        self.write(Durability::Immediate, move |s, t| {
            let segs: Vec<&str> = path.segments().collect();
            if segs.is_empty() {
                return Err(StoreError::new(
                    ErrorKind::AlreadyExists,
                    "/: the root directory always exists",
                ));
            }
            t.check_outbox(s.settings.outbox_limit, &origin.user)?;
            let (child, parent) = t.lookup(&segs)?;
            if let Some(child) = child {
                let what = if t.inode(child)?.is_some_and(|n| n.dir) {
                    "directory"
                } else {
                    "file"
                };
                return Err(StoreError::new(
                    ErrorKind::AlreadyExists,
                    format!("{path}: a {what} with that name exists"),
                ));
            }
            let now = now_ms();
            let ino = t.next("ino")?;
            t.put_inode(
                ino,
                &Inode {
                    dir: true,
                    mtime: now,
                    parent,
                    vid: 0,
                    size: 0,
                    sha: None,
                    complete: true,
                },
            )?;
            t.link(parent, segs[segs.len() - 1], ino, now)?;
            t.emit(
                EventKind::DirCreated,
                path.to_string(),
                origin,
                EventFacts::default(),
            )
        })
        .await
    }

    pub async fn rmdir(&self, path: &StorePath, origin: EventOrigin) -> Result<u64> {
        let path = path.clone();
        self.write(Durability::Immediate, move |s, t| {
            let segs: Vec<&str> = path.segments().collect();
            if segs.is_empty() {
                return Err(StoreError::new(
                    ErrorKind::InvalidArgument,
                    "/: the root directory cannot be removed",
                ));
            }
            t.check_outbox(s.settings.outbox_limit, &origin.user)?;
            let (child, parent) = t.lookup(&segs)?;
            let child = child.ok_or_else(|| not_found(path.as_str()))?;
            if !t
                .inode(child)?
                .ok_or_else(|| corrupt("dangling entry"))?
                .dir
            {
                return Err(StoreError::new(
                    ErrorKind::NotADirectory,
                    format!("{path}: not a directory (delete files with delete)"),
                ));
            }
            if !t.is_empty_dir(child)? {
                return Err(StoreError::new(
                    ErrorKind::DirectoryNotEmpty,
                    format!("{path}: directory not empty"),
                ));
            }
            t.unlink(parent, segs[segs.len() - 1], now_ms())?;
            t.inodes.remove(child).map_err(db_err)?;
            t.emit(
                EventKind::DirDeleted,
                path.to_string(),
                origin,
                EventFacts::default(),
            )
        })
        .await
    }

    pub async fn delete(&self, path: &StorePath, origin: EventOrigin) -> Result<u64> {
        let path = path.clone();
        self.write(Durability::Immediate, move |s, t| {
            let segs: Vec<&str> = path.segments().collect();
            if segs.is_empty() {
                return Err(StoreError::new(
                    ErrorKind::IsADirectory,
                    "/: is a directory",
                ));
            }
            t.check_outbox(s.settings.outbox_limit, &origin.user)?;
            let (child, parent) = t.lookup(&segs)?;
            let child = child.ok_or_else(|| not_found(path.as_str()))?;
            let node = t.inode(child)?.ok_or_else(|| corrupt("dangling entry"))?;
            if node.dir {
                return Err(StoreError::new(
                    ErrorKind::IsADirectory,
                    format!("{path}: is a directory (remove it with rmdir)"),
                ));
            }
            let now = now_ms();
            t.unlink(parent, segs[segs.len() - 1], now)?;
            t.release_version(s, node.vid, now)?;
            t.inodes.remove(child).map_err(db_err)?;
            t.emit(
                EventKind::FileDeleted,
                path.to_string(),
                origin,
                file_facts(&node),
            )
        })
        .await
    }

    pub async fn rename(
        &self,
        from: &StorePath,
        to: &StorePath,
        replace: bool,
        origin: EventOrigin,
    ) -> Result<u64> {
        let (from, to) = (from.clone(), to.clone());
        self.write(Durability::Immediate, move |s, t| {
            let fsegs: Vec<&str> = from.segments().collect();
            let tsegs: Vec<&str> = to.segments().collect();
            t.check_outbox(s.settings.outbox_limit, &origin.user)?;
            let (src, src_parent) = t.lookup(&fsegs)?;
            let src = src.ok_or_else(|| not_found(from.as_str()))?;
            let node = t.inode(src)?.ok_or_else(|| corrupt("dangling entry"))?;
            let kind = if node.dir {
                EventKind::DirRenamed
            } else {
                EventKind::FileRenamed
            };
            let mut facts = if node.dir {
                EventFacts::default()
            } else {
                file_facts(&node)
            };
            facts.old_path = Some(from.to_string());
            let (dst, dst_parent) = t.lookup(&tsegs)?;
            let now = now_ms();
            if let Some(dst) = dst {
                if dst == src {
                    return t.emit(kind, to.to_string(), origin, facts);
                }
                if !replace {
                    return Err(StoreError::new(
                        ErrorKind::AlreadyExists,
                        format!("{to}: already exists"),
                    ));
                }
                let dnode = t.inode(dst)?.ok_or_else(|| corrupt("dangling entry"))?;
                match (node.dir, dnode.dir) {
                    (true, false) => {
                        return Err(StoreError::new(
                            ErrorKind::NotADirectory,
                            format!("{to}: is a file; cannot replace it with a directory"),
                        ))
                    }
                    (false, true) => {
                        return Err(StoreError::new(
                            ErrorKind::IsADirectory,
                            format!("{to}: is a directory; cannot replace it with a file"),
                        ))
                    }
                    (true, true) if !t.is_empty_dir(dst)? => {
                        return Err(StoreError::new(
                            ErrorKind::DirectoryNotEmpty,
                            format!("{to}: directory not empty"),
                        ))
                    }
                    _ => {}
                }
                t.release_version(s, dnode.vid, now)?;
                t.inodes.remove(dst).map_err(db_err)?;
                t.unlink(dst_parent, tsegs[tsegs.len() - 1], now)?;
                facts.replaced = true;
            }
            t.unlink(src_parent, fsegs[fsegs.len() - 1], now)?;
            t.link(dst_parent, tsegs[tsegs.len() - 1], src, now)?;
            let mut node = node;
            node.parent = dst_parent;
            t.put_inode(src, &node)?;
            t.emit(kind, to.to_string(), origin, facts)
        })
        .await
    }

    pub async fn set_mtime(
        &self,
        path: &StorePath,
        mtime_ms: u64,
        origin: EventOrigin,
    ) -> Result<u64> {
        let path = path.clone();
        self.write(Durability::Immediate, move |s, t| {
            let segs: Vec<&str> = path.segments().collect();
            t.check_outbox(s.settings.outbox_limit, &origin.user)?;
            let ino = t.lookup(&segs)?.0.ok_or_else(|| not_found(path.as_str()))?;
            let mut node = t.inode(ino)?.ok_or_else(|| corrupt("dangling entry"))?;
            node.mtime = mtime_ms;
            t.put_inode(ino, &node)?;
            let facts = if node.dir {
                EventFacts::default()
            } else {
                file_facts(&node)
            };
            t.emit(EventKind::FileAttributes, path.to_string(), origin, facts)
        })
        .await
    }
}
