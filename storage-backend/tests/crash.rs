//! Crash safety: a worker process makes random changes and is killed with SIGKILL at a random
//! moment; the store is reopened and must hold, for every file, either the state before the change
//! that was in flight or the state after it — byte-exact — with exactly the matching events, and the
//! chunks the dead worker left behind must be reclaimed within a bounded time. Many rounds, both
//! backends; each round continues from the state the previous one left.
//!
//! This binary is its own worker: `crash --crash-worker <backend args>` runs the change loop.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use storage_backend::{
    BackendConfig, CommitOptions, EmbeddedConfig, EntryKind, OpenOptions, RedisConfig, Store,
    StoreConfig, StorePath,
};

const ROUNDS: u64 = 15;
const CHUNK: u64 = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File { data: Vec<u8>, complete: bool },
}

type Tree = BTreeMap<String, Node>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--crash-worker") {
        worker(&args[2..]);
        return;
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    let mut failed = false;
    for (name, backend) in [("crash_embedded", "embedded"), ("crash_redis", "redis")] {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| crash_rounds(backend));
        match result {
            Ok(summary) => println!(
                "test {name} ... ok ({summary}; {:.1}s)",
                started.elapsed().as_secs_f64()
            ),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}

fn config(backend: &[String]) -> StoreConfig {
    let mut cfg = StoreConfig {
        chunk_size: CHUNK,
        gc_grace: Duration::ZERO,
        orphan_timeout: Duration::from_millis(500),
        ..StoreConfig::in_memory()
    };
    cfg.backend = match backend[0].as_str() {
        "embedded" => BackendConfig::Embedded(EmbeddedConfig {
            path: Some(backend[1].clone().into()),
        }),
        _ => BackendConfig::Redis(RedisConfig::new(backend[1].clone())),
    };
    cfg
}

/// Runs the rounds for one backend; panics on the first violation.
fn crash_rounds(backend: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let redis = (backend == "redis").then(test_support::RedisServer::start);
    let spec: Vec<String> = match &redis {
        Some(r) => vec!["redis".into(), r.url()],
        None => vec![
            "embedded".into(),
            dir.path().join("crash.redb").to_string_lossy().into_owned(),
        ],
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xF11E_6A7E);
    let mut tree = Tree::new();
    let mut events = 0usize;
    let (mut in_flight_applied, mut in_flight_lost) = (0, 0);
    for round in 0..ROUNDS {
        let kill_after = rng.random_range(1..30);
        let extra_delay = Duration::from_micros(rng.random_range(0..3000));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--crash-worker")
            .args(&spec)
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = Vec::new();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut done = 0;
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 {
            let l = line.trim_end().to_string();
            line.clear();
            if l.starts_with("DONE") {
                done += 1;
            }
            lines.push(l);
            if done == kill_after {
                // The delay only randomises the moment of death within the next change.
                std::thread::sleep(extra_delay);
                child.kill().unwrap();
                break;
            }
        }
        child.wait().unwrap();
        while reader.read_line(&mut line).unwrap() > 0 {
            lines.push(line.trim_end().to_string());
            line.clear();
        }
        assert!(
            lines.first().is_some_and(|l| l == "READY"),
            "worker did not start: {lines:?}"
        );

        // Replay what the worker reported: finished changes, and the one in flight, if any.
        let mut pending: Option<String> = None;
        for l in &lines[1..] {
            if let Some(op) = l.strip_prefix("BEGIN ") {
                pending = Some(op.to_string());
            } else if l == "DONE" {
                let op = pending.take().expect("DONE without BEGIN");
                events += apply(&mut tree, &op);
            }
        }
        let before = (tree.clone(), events);
        let after = pending.as_ref().map(|op| {
            let mut t = tree.clone();
            let e = apply(&mut t, op);
            (t, events + e)
        });

        let (actual, actual_events) = rt.block_on(async {
            let store = open_after_crash(config(&spec)).await;
            let snap = snapshot(&store).await;
            let evs = common::all_events(&store).await;
            assert!(
                evs.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1),
                "round {round}: gap in event sequence"
            );
            // Whatever the dead worker left behind is reclaimed within a bounded time.
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                store.maintain().await.unwrap();
                let usage = store.usage().await.unwrap();
                let report = store.verify().await.unwrap();
                assert!(
                    report.missing.is_empty(),
                    "round {round}: chunks missing: {report:?}"
                );
                if usage.sessions == 0 && report.unreferenced.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: not reclaimed: {usage:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            store.close().await;
            (snap, evs.len())
        });
        let state = (actual, actual_events);
        if state == before {
            if pending.is_some() {
                in_flight_lost += 1;
            }
        } else if after.as_ref() == Some(&state) {
            in_flight_applied += 1;
        } else {
            panic!(
                "round {round}: the store is neither the state before nor after the change in flight ({pending:?})\n\
                 actual: {:?}\nbefore: {:?}",
                summarize(&state.0),
                summarize(&before.0)
            );
        }
        (tree, events) = state;
    }
    format!("{ROUNDS} kills; change in flight applied {in_flight_applied}×, rolled back {in_flight_lost}×")
}

async fn open_after_crash(config: StoreConfig) -> Store {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Store::open(config.clone()).await {
            Ok(s) => return s,
            // The killed process's file lock can take a moment to go.
            Err(e) if Instant::now() < deadline && e.message().contains("already open") => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("reopen after crash: {e}"),
        }
    }
}

fn summarize(tree: &Tree) -> Vec<String> {
    tree.iter()
        .map(|(k, v)| match v {
            Node::Dir => format!("{k}/"),
            Node::File { data, complete } => format!(
                "{k} {} {}",
                data.len(),
                if *complete { "" } else { "(incomplete)" }
            ),
        })
        .collect()
}

/// Applies one reported change to a tree; returns the number of events it records.
fn apply(tree: &mut Tree, op: &str) -> usize {
    let w: Vec<&str> = op.split(' ').collect();
    let num = |i: usize| w[i].parse::<usize>().unwrap();
    match w[0] {
        "put" => {
            let data = common::content(num(3) as u8, num(2));
            tree.insert(
                w[1].into(),
                Node::File {
                    data,
                    complete: w[4] == "1",
                },
            );
            1
        }
        "append" | "patch" => {
            let (off, len, seed) = if w[0] == "append" {
                let Some(Node::File { data, .. }) = tree.get(w[1]) else {
                    panic!("append to missing {}", w[1])
                };
                (data.len(), num(2), num(3))
            } else {
                (num(2), num(3), num(4))
            };
            let Some(Node::File { data, complete }) = tree.get_mut(w[1]) else {
                panic!("{op}: no file")
            };
            if data.len() < off + len {
                data.resize(off + len, 0);
            }
            data[off..off + len].copy_from_slice(&common::content(seed as u8, len));
            *complete = true;
            1
        }
        "truncate" => {
            let Some(Node::File { data, complete }) = tree.get_mut(w[1]) else {
                panic!("{op}: no file")
            };
            data.resize(num(2), 0);
            *complete = true;
            1
        }
        "rename" => {
            let (from, to) = (w[1].to_string(), w[2].to_string());
            let moved: Vec<(String, Node)> = tree
                .iter()
                .filter(|(k, _)| **k == from || k.starts_with(&format!("{from}/")))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (k, _) in &moved {
                tree.remove(k);
            }
            tree.remove(&to);
            for (k, v) in moved {
                tree.insert(format!("{to}{}", &k[from.len()..]), v);
            }
            1
        }
        "delete" | "rmdir" => {
            tree.remove(w[1]);
            1
        }
        "mkdir" => {
            tree.insert(w[1].into(), Node::Dir);
            1
        }
        "abort" => 0,
        other => panic!("unknown op {other}"),
    }
}

async fn snapshot(store: &Store) -> Tree {
    let mut out = Tree::new();
    let mut dirs = vec![StorePath::root()];
    while let Some(dir) = dirs.pop() {
        let page = store.list(&dir, None, 10_000).await.unwrap();
        for e in page.entries {
            let path = dir.join(&e.name).unwrap();
            if e.metadata.kind == EntryKind::Directory {
                out.insert(path.to_string(), Node::Dir);
                dirs.push(path);
            } else {
                let data = store.read_to_vec(&path, u64::MAX).await.unwrap();
                if e.metadata.complete {
                    assert_eq!(
                        e.metadata.sha256.as_deref(),
                        Some(common::sha256_hex(&data).as_str()),
                        "{path}: checksum"
                    );
                }
                out.insert(
                    path.to_string(),
                    Node::File {
                        data,
                        complete: e.metadata.complete,
                    },
                );
            }
        }
    }
    out
}

/// The worker: random changes until killed, reporting each before (`BEGIN op`) and after (`DONE`).
fn worker(args: &[String]) {
    let seed: u64 = args[2].parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Store::open(config(args)).await.unwrap();
        let mut tree = snapshot(&store).await;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let out = std::io::stdout();
        let say = |s: String| {
            let mut o = out.lock();
            writeln!(o, "{s}").unwrap();
            o.flush().unwrap();
        };
        say("READY".into());
        let ctx = common::ctx();
        let p = |s: &str| StorePath::parse(s).unwrap();
        loop {
            let files: Vec<String> = tree
                .iter()
                .filter(|(_, n)| matches!(n, Node::File { .. }))
                .map(|(k, _)| k.clone())
                .collect();
            let dirs: Vec<String> = tree
                .iter()
                .filter(|(_, n)| **n == Node::Dir)
                .map(|(k, _)| k.clone())
                .collect();
            let mut spots: Vec<String> = (0..6).map(|i| format!("/c{i}")).collect();
            spots.extend(dirs.iter().map(|d| format!("{d}/c9")));
            let free_spot = |rng: &mut rand::rngs::StdRng| {
                let candidates: Vec<&String> = spots
                    .iter()
                    .filter(|s| !matches!(tree.get(*s), Some(Node::Dir)))
                    .collect();
                candidates[rng.random_range(0..candidates.len())].clone()
            };
            let len = if rng.random_bool(0.2) {
                rng.random_range(0..300_000)
            } else {
                rng.random_range(0..5000)
            };
            let s8: u8 = rng.random();
            let op = match rng.random_range(0..10) {
                0..=2 => format!(
                    "put {} {len} {s8} {}",
                    free_spot(&mut rng),
                    if rng.random_bool(0.15) { 0 } else { 1 }
                ),
                3 if !files.is_empty() => format!(
                    "append {} {len} {s8}",
                    files[rng.random_range(0..files.len())]
                ),
                4 if !files.is_empty() => {
                    let f = &files[rng.random_range(0..files.len())];
                    format!(
                        "patch {f} {} {} {s8}",
                        rng.random_range(0..10_000),
                        rng.random_range(1..5000)
                    )
                }
                5 if !files.is_empty() => {
                    let f = &files[rng.random_range(0..files.len())];
                    format!("truncate {f} {}", rng.random_range(0..20_000))
                }
                6 if !files.is_empty() => {
                    let f = files[rng.random_range(0..files.len())].clone();
                    let to = free_spot(&mut rng);
                    if to == f || to.starts_with(&format!("{f}/")) {
                        continue;
                    } else {
                        format!("rename {f} {to}")
                    }
                }
                7 if !files.is_empty() => {
                    format!("delete {}", files[rng.random_range(0..files.len())])
                }
                8 => {
                    let d = format!("/d{}", rng.random_range(0..2));
                    match tree.get(&d) {
                        None => format!("mkdir {d}"),
                        Some(Node::Dir)
                            if !tree.keys().any(|k| k.starts_with(&format!("{d}/"))) =>
                        {
                            format!("rmdir {d}")
                        }
                        Some(Node::Dir) if rng.random_bool(0.5) => {
                            let to = format!("/d{}", 2 + rng.random_range(0..2));
                            if tree.contains_key(&to) {
                                continue;
                            } else {
                                format!("rename {d} {to}")
                            }
                        }
                        _ => continue,
                    }
                }
                _ => format!("abort {} {len} {s8}", free_spot(&mut rng)),
            };
            say(format!("BEGIN {op}"));
            let w: Vec<&str> = op.split(' ').collect();
            let num = |i: usize| w[i].parse::<u64>().unwrap();
            match w[0] {
                "put" | "abort" => {
                    let mut s = store
                        .open_write(&p(w[1]), OpenOptions::REPLACE, &ctx)
                        .await
                        .unwrap();
                    let data = common::content(num(3) as u8, num(2) as usize);
                    for piece in data.chunks(7000) {
                        s.append(piece).await.unwrap();
                    }
                    if w[0] == "abort" {
                        s.abort().await.unwrap();
                    } else {
                        s.commit(CommitOptions {
                            complete: w[4] == "1",
                            mtime: None,
                        })
                        .await
                        .unwrap();
                    }
                }
                "append" | "patch" => {
                    let mut s = store
                        .open_write(&p(w[1]), OpenOptions::EXISTING, &ctx)
                        .await
                        .unwrap();
                    let (off, len, seed) = if w[0] == "append" {
                        (s.size(), num(2), num(3))
                    } else {
                        (num(2), num(3), num(4))
                    };
                    s.write_at(off, &common::content(seed as u8, len as usize))
                        .await
                        .unwrap();
                    s.commit(CommitOptions::default()).await.unwrap();
                }
                "truncate" => {
                    store.set_size(&p(w[1]), num(2), &ctx).await.unwrap();
                }
                "rename" => {
                    store.rename(&p(w[1]), &p(w[2]), true, &ctx).await.unwrap();
                }
                "delete" => {
                    store.delete(&p(w[1]), &ctx).await.unwrap();
                }
                "mkdir" => {
                    store.mkdir(&p(w[1]), &ctx).await.unwrap();
                }
                "rmdir" => {
                    store.rmdir(&p(w[1]), &ctx).await.unwrap();
                }
                _ => unreachable!(),
            }
            apply(&mut tree, &op);
            say("DONE".into());
        }
    });
}
