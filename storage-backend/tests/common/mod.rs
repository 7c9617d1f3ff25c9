//! Fixtures shared by the storage tests: a store on each backend, with test-friendly settings.
#![allow(dead_code)]

use std::time::Duration;

use storage_backend::{
    BackendConfig, ChangeContext, EmbeddedConfig, Event, RedisConfig, Store, StoreConfig, StorePath,
};
use test_support::RedisServer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Redis,
}

/// A store plus whatever keeps its backend alive.
pub struct Fixture {
    pub store: Store,
    pub config: StoreConfig,
    pub redis: Option<RedisServer>,
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
            None
        }
        Kind::Redis => {
            let server = RedisServer::start();
            config.backend = BackendConfig::Redis(RedisConfig::new(server.url()));
            Some(server)
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
macro_rules! on_both_backends {
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
    };
}
