//! Settings the store is opened with. The gateway maps its `[storage]` section onto these.

use std::path::PathBuf;
use std::time::Duration;

/// Default for the most bytes of a file that may be holes (ranges skipped over, never written),
/// which commit hashes as zeros: 1 GiB, a second or two of CPU
/// ([`StoreConfig::max_hole_size`](StoreConfig::max_hole_size)).
pub const MAX_HOLE_BYTES: u64 = 1 << 30;

/// Everything needed to open a [`crate::Store`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: BackendConfig,
    /// Key prefix: several gateways or tenants can share one Redis under different namespaces.
    pub namespace: String,
    /// Size of the chunks new files are cut into. Existing files keep the size they were written with.
    pub chunk_size: u64,
    /// Largest file a write session may produce; 0 = unlimited.
    pub max_file_size: u64,
    /// Most bytes of a file that may be zeros nobody wrote ([`MAX_HOLE_BYTES`](MAX_HOLE_BYTES)
    /// by default): gaps past the end, and the rest of a chunk before a byte written after it.
    pub max_hole_size: u64,
    /// How long a gateway that stopped heart-beating keeps its write sessions and read pins before
    /// another gateway (or this one after a restart) reclaims the chunks they left behind.
    pub orphan_timeout: Duration,
    /// How long chunks of a replaced or deleted version stay readable for readers that already
    /// started, before they are deleted.
    pub gc_grace: Duration,
    /// Most unacknowledged events the outbox holds; at the limit, changes are refused (never dropped).
    pub outbox_limit: u64,
    /// Delivered events kept as history for replay (`events_page`), at most this many; 0 drops
    /// every event as soon as it is acknowledged.
    pub history_max: u64,
    /// Delivered events older than this are dropped from the history.
    pub history_age: Duration,
}

impl StoreConfig {
    /// An in-memory embedded store with test-friendly timings; used by tests and benchmarks.
    pub fn in_memory() -> Self {
        StoreConfig {
            backend: BackendConfig::Embedded(EmbeddedConfig { path: None }),
            ..StoreConfig::default()
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: BackendConfig::Embedded(EmbeddedConfig {
                path: Some(PathBuf::from("data/filegate.redb")),
            }),
            namespace: "filegate".into(),
            chunk_size: 512 * 1024,
            max_file_size: 0,
            max_hole_size: MAX_HOLE_BYTES,
            orphan_timeout: Duration::from_secs(60),
            gc_grace: Duration::from_secs(60),
            outbox_limit: 1_000_000,
            history_max: 100_000,
            history_age: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone)]
pub enum BackendConfig {
    Embedded(EmbeddedConfig),
    Redis(RedisConfig),
}

#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// The redb file; `None` keeps everything in memory (tests).
    pub path: Option<PathBuf>,
}

/// Every URL here is read by [`crate::redis_url::parse`] when the store opens, the parser the
/// gateway's configuration check uses too.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL of a standalone server (its password and database also apply
    /// to the master Sentinel names).
    pub url: String,
    /// Redis Cluster: URLs of some of its nodes (any; the rest are discovered). Non-empty = cluster.
    pub cluster_urls: Vec<String>,
    /// Redis Sentinel: URLs of the sentinels, and the name of the master they watch.
    pub sentinel_urls: Vec<String>,
    pub master_name: String,
    /// Password read from a file (overrides one in the URL).
    pub password: Option<String>,
    /// How long one Redis command may take before the operation fails with a clear error.
    pub command_timeout: Duration,
    /// How many connections carry chunk traffic (metadata has its own, so small commands never
    /// queue behind megabyte values).
    pub data_connections: usize,
}

impl RedisConfig {
    /// A Redis Cluster reached through some of its nodes.
    pub fn cluster(urls: Vec<String>) -> Self {
        RedisConfig {
            cluster_urls: urls,
            ..RedisConfig::new("")
        }
    }

    /// The master that the sentinels at `urls` know as `master_name`.
    pub fn sentinel(urls: Vec<String>, master_name: impl Into<String>) -> Self {
        RedisConfig {
            sentinel_urls: urls,
            master_name: master_name.into(),
            ..RedisConfig::new("")
        }
    }

    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            cluster_urls: Vec::new(),
            sentinel_urls: Vec::new(),
            master_name: String::new(),
            password: None,
            command_timeout: Duration::from_secs(10),
            data_connections: 4,
        }
    }
}
