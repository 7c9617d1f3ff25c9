//! Scale-out benchmark: upload throughput of one gateway on a standalone Redis, one gateway on a
//! 3-master Redis Cluster, and two gateways sharing that cluster, in the same run, with the same
//! clients (16 concurrent curl uploaders, 1 MiB files over FTP). Release gateway binaries.
//! `cargo bench --bench scale` (or `scripts/bench`). `BENCH_FILES` sets files per client (default 24).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use common::binary::{cluster_env, curl_put, start_with_env, Binary};
use common::{content, summary};
use storage_backend::{BackendConfig, ChangeContext, RedisConfig, Store, StoreConfig, StorePath};
use test_support::{RedisCluster, RedisServer};

const CLIENTS: usize = 16;
const FILE_BYTES: usize = 1 << 20;

fn files_per_client() -> usize {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a quick smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    std::env::var("BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 24 } else { 2 })
}

fn start(dir: &Path, id: &str, storage: &str) -> Binary {
    start_with_env(dir, id, &format!("{storage} FILEGATE__MQTT__MODE=off"))
}

/// Uploads `files_per_client` files from each of `CLIENTS` threads, client `i` to `targets[i % n]`;
/// returns MiB/s over the whole run.
fn load(targets: &[SocketAddr], source: &Path, tag: &str) -> f64 {
    let n = files_per_client();
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let target = targets[c % targets.len()];
            let source = source.to_path_buf();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                for f in 0..n {
                    let path = format!("/{tag}/c{c}/f{f}");
                    assert!(curl_put(target, &path, &source), "upload {path} failed");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mib = (CLIENTS * n * FILE_BYTES) as f64 / (1 << 20) as f64;
    mib / started.elapsed().as_secs_f64()
}

/// Small-file commits per second in one namespace, through the store API (no protocol): 64
/// concurrent writers of 100-byte files for 3 s. Each commit is one Lua script on the master that
/// holds the namespace's metadata slot, so this is that slot's ceiling.
fn commits_per_second(redis: RedisConfig) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Store::open(StoreConfig {
            backend: BackendConfig::Redis(redis),
            namespace: "commits".into(),
            ..StoreConfig::default()
        })
        .await
        .unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(3);
        let started = Instant::now();
        let mut writers = tokio::task::JoinSet::new();
        for w in 0..64 {
            let store = store.clone();
            writers.spawn(async move {
                let ctx = ChangeContext::new("bench", "bench", "127.0.0.1:1");
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let p = StorePath::parse(&format!("/w{w}-{n}")).unwrap();
                    store.write_file(&p, &[7u8; 100], &ctx).await.unwrap();
                    n += 1;
                }
                n
            });
        }
        let mut total = 0;
        while let Some(n) = writers.join_next().await {
            total += n.unwrap();
        }
        let rate = total as f64 / started.elapsed().as_secs_f64();
        store.close().await;
        rate
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("one.bin");
    std::fs::write(&source, content(3, FILE_BYTES)).unwrap();

    let redis = RedisServer::start();
    let d0 = tempfile::tempdir().unwrap();
    let single = start(
        d0.path(),
        "gw-0",
        &format!(
            "FILEGATE__STORAGE__BACKEND=redis FILEGATE__STORAGE__REDIS__URL={}",
            redis.url()
        ),
    );
    let standalone = load(&[single.ftp], &source, "standalone");
    drop(single);
    let commits_standalone = commits_per_second(RedisConfig::new(redis.url()));
    drop(redis);

    let cluster = RedisCluster::start(3, 0);
    let env = cluster_env(&cluster.urls());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(da.path(), "gw-a", &env);
    let one = load(&[a.ftp], &source, "one");
    let b = start(db.path(), "gw-b", &env);
    let two = load(&[a.ftp, b.ftp], &source, "two");
    let keys = cluster.key_counts();
    drop((a, b));
    let commits_cluster = commits_per_second(RedisConfig::cluster(cluster.urls()));

    println!(
        "scale: {CLIENTS} curl clients × {} × 1 MiB uploads over FTP",
        files_per_client()
    );
    println!("| setup | MiB/s |\n|---|---|");
    println!("| 1 gateway, standalone Redis | {standalone:.1} |");
    println!("| 1 gateway, 3-master cluster | {one:.1} |");
    println!("| 2 gateways, same cluster | {two:.1} |");
    println!("keys per master after the run: {keys:?}");
    println!(
        "small-file commits in one namespace (64 writers, store API): standalone \
         {commits_standalone:.0}/s, cluster {commits_cluster:.0}/s"
    );
    summary(
        "scale-out",
        "1 gateway on a 3-master cluster, 16 clients",
        "MiB/s",
        one,
        "1 gateway on standalone Redis",
        standalone,
    );
    summary(
        "scale-out",
        "small-file commits, one namespace, cluster",
        "/s",
        commits_cluster,
        "the same on standalone Redis",
        commits_standalone,
    );
    summary(
        "scale-out",
        "2 gateways on the cluster, 16 clients",
        "MiB/s",
        two,
        "1 gateway on the same cluster",
        one,
    );
}
