//! The gateway binary killed with SIGKILL at random moments under concurrent FTP + SFTP + MQTT load,
//! 20 rounds (`CRASH_ROUNDS`), on Redis. After each kill, checked on the store directly: every
//! upload a client was told succeeded is there byte-exact; every complete file's content matches
//! its recorded SHA-256; no version lacks a chunk; the outbox's sequence has no gap. At the end a
//! restarted gateway publishes the whole backlog.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::binary::{Binary, SECRET};
use crate::common::{content, program, sha256_hex, until_metrics, until_true};
use rand::{Rng, SeedableRng};
use storage_backend::{Store, StorePath};
use test_support::{Mosquitto, RedisServer};

fn rounds() -> usize {
    std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn start(dir: &std::path::Path, redis: &RedisServer, broker: &Mosquitto, key: &str) -> Binary {
    Binary::start_wrapped(
        dir,
        "",
        Some(key),
        Some(&format!(
            "export FILEGATE__STORAGE__BACKEND=redis FILEGATE__STORAGE__REDIS__URL={} \
             FILEGATE__STORAGE__CHUNK_SIZE=64KiB FILEGATE__MQTT__MODE=external \
             FILEGATE__MQTT__URL={} FILEGATE__MQTT__COMMANDS=true FILEGATE__MQTT__COMMANDS_USER=ops",
            redis.url(),
            broker.url()
        )),
    )
}

/// Every file under `dir`, recursively: (path, content, metadata).
async fn files(store: &Store, dir: &str) -> Vec<(String, storage_backend::Metadata)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_string()];
    while let Some(d) = dirs.pop() {
        let mut after = None;
        loop {
            let page = store
                .list(&StorePath::parse(&d).unwrap(), after.as_deref(), 500)
                .await
                .unwrap();
            for e in &page.entries {
                let p = format!("{d}/{}", e.name);
                if e.metadata.is_dir() {
                    dirs.push(p);
                } else {
                    out.push((p, e.metadata.clone()));
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_mixed_load_loses_nothing_committed() {
    let redis = RedisServer::start();
    let broker = Mosquitto::start();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = crate::common::client_key(keys.path(), "ops_key");
    let dir = tempfile::tempdir().unwrap();
    let confirmed: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Default::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let store_config = || storage_backend::StoreConfig {
        backend: storage_backend::BackendConfig::Redis(storage_backend::RedisConfig::new(
            redis.url(),
        )),
        namespace: "filegate".into(),
        chunk_size: 64 * 1024,
        ..storage_backend::StoreConfig::default()
    };
    for round in 0..rounds() {
        let b = start(dir.path(), &redis, &broker, &public);
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        // Two FTP uploaders and one SFTP uploader, each file under a new name, sizes from one
        // chunk to many; MQTT put commands alongside.
        for w in 0..3 {
            let (stop, confirmed, ftp, sftp) =
                (stop.clone(), confirmed.clone(), b.ftp, b.sftp.unwrap());
            let key = key.clone();
            let work = dir.path().join(format!("w{w}"));
            std::fs::create_dir_all(&work).unwrap();
            let seed = rng.random::<u64>();
            workers.push(std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let name = format!("r{round}-w{w}-{i}.bin");
                    let data = content(rng.random(), rng.random_range(1..600_000));
                    let local = work.join(&name);
                    std::fs::write(&local, &data).unwrap();
                    let ok = if w < 2 {
                        Command::new(program("curl"))
                            .args(["-sS", "--max-time", "20", "-T"])
                            .arg(&local)
                            .arg(format!("ftp://ops:{SECRET}@{ftp}/{name}"))
                            .stderr(Stdio::null())
                            .status()
                            .is_ok_and(|s| s.success())
                    } else {
                        let batch = work.join("batch");
                        std::fs::write(&batch, format!("put {} {name}\n", local.display()))
                            .unwrap();
                        Command::new(program("sftp"))
                            .arg("-b")
                            .arg(&batch)
                            .args(["-P", &sftp.port().to_string()])
                            .args(crate::common::ssh_options(&key))
                            .arg("ops@127.0.0.1")
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .is_ok_and(|s| s.success())
                    };
                    if ok {
                        confirmed
                            .lock()
                            .unwrap()
                            .insert(format!("/ops/{name}"), data);
                    }
                }
            }));
        }
        {
            let (stop, port) = (stop.clone(), broker.port());
            workers.push(std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let _ = Command::new(program("mosquitto_pub"))
                        .args(["-p", &port.to_string(), "-q", "1", "-t"])
                        .arg(format!("filegate/commands/put/mqtt/r{round}-{i}.txt"))
                        .args(["-m", &"m".repeat(i % 5000 + 1)])
                        .status();
                }
            }));
        }
        // Kill at a random moment once the load is under way.
        let before = confirmed.lock().unwrap().len();
        let through = format!("round {round}: no upload went through");
        until_true(&through, Duration::from_secs(30), || async {
            confirmed.lock().unwrap().len() > before
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
        b.signal("KILL");
        let _ = b.wait(Duration::from_secs(10));
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }

        // The invariants, on the store itself.
        let store = Store::open(store_config()).await.unwrap();
        let expected = confirmed.lock().unwrap().clone();
        for (path, data) in &expected {
            let got = store
                .read_to_vec(&StorePath::parse(path).unwrap(), u64::MAX)
                .await
                .unwrap_or_else(|e| {
                    panic!("round {round}: {path}, confirmed to its client, is gone: {e}")
                });
            assert!(
                &got == data,
                "round {round}: {path} differs from what its client sent"
            );
        }
        for (path, meta) in files(&store, "/ops").await {
            if meta.complete {
                let got = store
                    .read_to_vec(&StorePath::parse(&path).unwrap(), u64::MAX)
                    .await
                    .unwrap();
                assert_eq!(got.len() as u64, meta.size, "round {round}: {path}");
                if let Some(sum) = &meta.sha256 {
                    assert_eq!(&sha256_hex(&got), sum, "round {round}: {path} is torn");
                }
            }
        }
        let report = store.verify().await.unwrap();
        assert!(
            report.missing.is_empty(),
            "round {round}: chunks missing: {report:?}"
        );
        let status = store.outbox_status().await.unwrap();
        let events = store
            .events_after(status.acked_seq, 1_000_000)
            .await
            .unwrap();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.seq,
                status.acked_seq + 1 + i as u64,
                "round {round}: a gap in the outbox"
            );
        }
        assert_eq!(
            events.last().map_or(status.acked_seq, |e| e.seq),
            status.last_seq
        );
        store.close().await;
    }

    // A gateway started once more publishes everything still in the outbox.
    let b = start(dir.path(), &redis, &broker, &public);
    until_metrics(b.http, "the backlog drained", |m| {
        m.get("filegate_outbox_backlog_events") == Some(&0.0)
    })
    .await;
    b.signal("TERM");
    let (code, log) = b.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
    eprintln!(
        "{} rounds, {} uploads confirmed to their clients, all intact",
        rounds(),
        confirmed.lock().unwrap().len()
    );
}
