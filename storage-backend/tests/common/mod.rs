//! Fixtures shared by the storage tests: a store on each backend, with test-friendly settings.
#![allow(dead_code)]

use std::time::Duration;

use storage_backend::{
    BackendConfig, ChangeContext, EmbeddedConfig, Event, RedisConfig, Store, StoreConfig, StorePath,
};
use test_support::{RedisCluster, RedisSentinel, RedisServer, SENTINEL_MASTER_NAME};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Redis,
    /// A 3-master Redis Cluster.
    RedisCluster,
    /// A master and a replica watched by three sentinels.
    RedisSentinel,
}

impl Kind {
    /// Whether several stores (gateways) can share the backend at once.
    pub fn is_shared(self) -> bool {
        self != Kind::Embedded
    }
}

/// The servers a fixture started, kept alive with it.
pub enum Servers {
    None,
    Redis(RedisServer),
    Cluster(RedisCluster),
    Sentinel(RedisSentinel),
}

/// A store plus whatever keeps its backend alive.
pub struct Fixture {
    pub store: Store,
    pub config: StoreConfig,
    pub redis: Servers,
    pub dir: tempfile::TempDir,
}

/// Small chunks so that every test crosses chunk boundaries; no grace so garbage goes at once.
pub fn test_config() -> StoreConfig {
    StoreConfig {
        chunk_size: 64,
        gc_grace: Duration::ZERO,
        orphan_timeout: Duration::from_secs(30),
        ..StoreConfig::in_memory()
    }
}

pub async fn fixture(kind: Kind) -> Fixture {
    fixture_with(kind, |_| {}).await
}

pub async fn fixture_with(kind: Kind, tweak: impl FnOnce(&mut StoreConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config();
    let redis = match kind {
        Kind::Embedded => {
            config.backend = BackendConfig::Embedded(EmbeddedConfig {
                path: Some(dir.path().join("store.redb")),
            });
            Servers::None
        }
        Kind::Redis => {
            let server = RedisServer::start();
            config.backend = BackendConfig::Redis(RedisConfig::new(server.url()));
            Servers::Redis(server)
        }
        Kind::RedisCluster => {
            let cluster = RedisCluster::start(3, 0);
            config.backend = BackendConfig::Redis(RedisConfig::cluster(cluster.urls()));
            Servers::Cluster(cluster)
        }
        Kind::RedisSentinel => {
            let setup = RedisSentinel::start();
            config.backend =
                BackendConfig::Redis(RedisConfig::sentinel(setup.urls(), SENTINEL_MASTER_NAME));
            Servers::Sentinel(setup)
        }
    };
    tweak(&mut config);
    let store = Store::open(config.clone()).await.expect("open store");
    Fixture {
        store,
        config,
        redis,
        dir,
    }
}

impl Fixture {
    /// Opens a second store on the same backend (another gateway on the same Redis, or the embedded
    /// file after this one is closed).
    pub async fn reopen(&self, tweak: impl FnOnce(&mut StoreConfig)) -> Store {
        let mut config = self.config.clone();
        tweak(&mut config);
        Store::open(config).await.expect("reopen store")
    }
}

pub fn p(s: &str) -> StorePath {
    StorePath::parse(s).unwrap()
}

pub fn ctx() -> ChangeContext {
    ChangeContext::new("alice", "sftp", "127.0.0.1:50000")
}

pub async fn all_events(store: &Store) -> Vec<Event> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events_after(after, 100).await.unwrap();
        let Some(last) = page.last() else { return out };
        after = last.seq;
        out.extend(page);
    }
}

/// Deterministic test content: `len` bytes that differ per `seed` and per position.
pub fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed as u32 * 97) as u8
                ^ seed
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Runs one async test body once per backend.
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Kind::Embedded).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Kind::Redis).await
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Kind::RedisCluster).await
                }
            )*
        }
        mod redis_sentinel {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Kind::RedisSentinel).await
                }
            )*
        }
    };
}
