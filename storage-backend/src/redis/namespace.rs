//! The namespace: lookups, listings, and the changes to directories and names, each one script.

use super::keys::metadata_from;
use super::RedisBackend;
use crate::error::Result;
use crate::outbox::EventOrigin;
use crate::path::StorePath;
use crate::types::{DirEntry, ListPage, Metadata};

impl RedisBackend {
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
}
