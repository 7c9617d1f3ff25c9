//! Bounded memory: a write session and a reader hold a few chunks at most, whatever the file's
//! size. One test in its own binary, so no other test disturbs the process's RSS.

use std::time::Duration;

use storage_backend::{
    BackendConfig, ChangeContext, CommitOptions, OpenOptions, RedisConfig, Store, StoreConfig,
    StorePath,
};

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_moves_through_a_small_process() {
    let redis = test_support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let total = 512 * MIB;
    for (name, backend) in [
        ("redis", BackendConfig::Redis(RedisConfig::new(redis.url()))),
        (
            "embedded",
            BackendConfig::Embedded(storage_backend::EmbeddedConfig {
                path: Some(dir.path().join("m.redb")),
            }),
        ),
    ] {
        let store = Store::open(StoreConfig {
            backend,
            chunk_size: MIB,
            gc_grace: Duration::ZERO,
            ..StoreConfig::default()
        })
        .await
        .unwrap();
        let ctx = ChangeContext::new("m", "test", "local");
        let path = StorePath::parse("/big").unwrap();
        let piece = vec![7u8; 256 * 1024];
        // Warm up allocator and connections so the baseline is the steady state.
        store
            .write_file(&StorePath::parse("/warm").unwrap(), &piece, &ctx)
            .await
            .unwrap();
        let base = rss();
        let mut peak = base;
        let mut w = store
            .open_write(&path, OpenOptions::REPLACE, &ctx)
            .await
            .unwrap();
        let mut written = 0;
        while written < total {
            w.append(&piece).await.unwrap();
            written += piece.len() as u64;
            peak = peak.max(rss());
        }
        w.commit(CommitOptions::default()).await.unwrap();
        let write_growth = peak - base;

        let base = rss();
        let mut peak = base;
        let reader = store.open_read(&path).await.unwrap();
        let mut stream = reader.stream(0);
        let mut read = 0;
        while let Some(p) = stream.next().await {
            read += p.unwrap().len() as u64;
            peak = peak.max(rss());
        }
        assert_eq!(read, total);
        let read_growth = peak - base;
        println!(
            "{name}: {} MiB written with RSS growth {:.1} MiB, read with {:.1} MiB",
            total / MIB,
            write_growth as f64 / MIB as f64,
            read_growth as f64 / MIB as f64
        );
        assert!(
            write_growth < 64 * MIB,
            "writing grew the process by {} MiB",
            write_growth / MIB
        );
        assert!(
            read_growth < 64 * MIB,
            "reading grew the process by {} MiB",
            read_growth / MIB
        );
        store.close().await;
    }
}
