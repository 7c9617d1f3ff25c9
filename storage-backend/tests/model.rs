//! Property test: random sequences of writes, truncations, renames, deletes and directory changes,
//! applied to each backend and to a plain in-memory model; after every step both must agree on
//! every file's bytes, every directory, every error kind and the event count.

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use storage_backend::{
    BackendConfig, CommitOptions, EntryKind, ErrorKind, OpenOptions, RedisConfig, Store,
    StoreConfig, StorePath,
};
use test_support::RedisServer;

const DIRS: [&str; 3] = ["/d0", "/d1", "/d0/d2"];
const FILES: [&str; 6] = ["/f0", "/f1", "/d0/f2", "/d1/f3", "/d0/d2/f4", "/d0/f0"];

fn any_path() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        prop::sample::select(DIRS.to_vec()),
        prop::sample::select(FILES.to_vec())
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        path: &'static str,
        truncate: bool,
        writes: Vec<(u16, u16, u8)>,
        set_len: Option<u16>,
        outcome: Outcome,
    },
    Mkdir(&'static str),
    Rmdir(&'static str),
    Delete(&'static str),
    Rename(&'static str, &'static str, bool),
    SetSize(&'static str, u16),
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Commit,
    CommitIncomplete,
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            any_path(),
            any::<bool>(),
            prop::collection::vec((0u16..400, 0u16..200, any::<u8>()), 0..5),
            prop::option::weighted(0.2, 0u16..500),
            prop_oneof![6 => Just(Outcome::Commit), 1 => Just(Outcome::CommitIncomplete), 1 => Just(Outcome::Abort)],
        )
            .prop_map(|(path, truncate, writes, set_len, outcome)| Op::Write { path, truncate, writes, set_len, outcome }),
        2 => prop::sample::select(DIRS.to_vec()).prop_map(Op::Mkdir),
        1 => any_path().prop_map(Op::Rmdir),
        1 => any_path().prop_map(Op::Delete),
        2 => (any_path(), any_path(), any::<bool>()).prop_map(|(a, b, r)| Op::Rename(a, b, r)),
        1 => (any_path(), 0u16..500).prop_map(|(p, n)| Op::SetSize(p, n)),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
}

/// The model: absolute path -> node; the root is implicit.
#[derive(Debug, Default, Clone)]
struct Model {
    nodes: BTreeMap<String, Node>,
    events: usize,
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

impl Model {
    fn get(&self, path: &str) -> Option<&Node> {
        if path == "/" {
            return Some(&Node::Dir);
        }
        self.nodes.get(path)
    }

    /// The error walking to `path`'s parent would give, if any.
    fn walk(&self, path: &str) -> Result<(), ErrorKind> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut cur = String::new();
        for seg in &segs[..segs.len().saturating_sub(1)] {
            cur.push('/');
            cur.push_str(seg);
            match self.nodes.get(&cur) {
                None => return Err(ErrorKind::NotFound),
                Some(Node::File(_)) => return Err(ErrorKind::NotADirectory),
                Some(Node::Dir) => {}
            }
        }
        Ok(())
    }

    fn children(&self, dir: &str) -> Vec<String> {
        self.nodes
            .keys()
            .filter(|k| parent_of(k) == dir && k.as_str() != dir)
            .cloned()
            .collect()
    }

    fn apply(&mut self, op: &Op) -> Result<(), ErrorKind> {
        let r = self.apply_inner(op);
        if r.is_ok()
            && !matches!(
                op,
                Op::Write {
                    outcome: Outcome::Abort,
                    ..
                }
            )
        {
            self.events += 1;
        }
        r
    }

    fn apply_inner(&mut self, op: &Op) -> Result<(), ErrorKind> {
        match op {
            Op::Mkdir(p) => {
                self.walk(p)?;
                if self.get(p).is_some() {
                    return Err(ErrorKind::AlreadyExists);
                }
                self.nodes.insert(p.to_string(), Node::Dir);
            }
            Op::Rmdir(p) => {
                self.walk(p)?;
                match self.get(p) {
                    None => return Err(ErrorKind::NotFound),
                    Some(Node::File(_)) => return Err(ErrorKind::NotADirectory),
                    Some(Node::Dir) if !self.children(p).is_empty() => {
                        return Err(ErrorKind::DirectoryNotEmpty)
                    }
                    Some(Node::Dir) => {
                        self.nodes.remove(*p);
                    }
                }
            }
            Op::Delete(p) => {
                self.walk(p)?;
                match self.get(p) {
                    None => return Err(ErrorKind::NotFound),
                    Some(Node::Dir) => return Err(ErrorKind::IsADirectory),
                    Some(Node::File(_)) => {
                        self.nodes.remove(*p);
                    }
                }
            }
            Op::Rename(from, to, replace) => {
                if to != from
                    && StorePath::parse(to)
                        .unwrap()
                        .starts_with(&StorePath::parse(from).unwrap())
                {
                    return Err(ErrorKind::InvalidArgument);
                }
                self.walk(from)?;
                let src = self.get(from).cloned().ok_or(ErrorKind::NotFound)?;
                self.walk(to)?;
                if from == to {
                    return Ok(());
                }
                if let Some(dst) = self.get(to) {
                    if !replace {
                        return Err(ErrorKind::AlreadyExists);
                    }
                    match (&src, dst) {
                        (Node::Dir, Node::File(_)) => return Err(ErrorKind::NotADirectory),
                        (Node::File(_), Node::Dir) => return Err(ErrorKind::IsADirectory),
                        (Node::Dir, Node::Dir) if !self.children(to).is_empty() => {
                            return Err(ErrorKind::DirectoryNotEmpty)
                        }
                        _ => {}
                    }
                }
                let moved: Vec<(String, Node)> = self
                    .nodes
                    .iter()
                    .filter(|(k, _)| k.as_str() == *from || k.starts_with(&format!("{from}/")))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                for (k, _) in &moved {
                    self.nodes.remove(k);
                }
                self.nodes.remove(*to);
                for (k, v) in moved {
                    self.nodes.insert(format!("{to}{}", &k[from.len()..]), v);
                }
            }
            Op::SetSize(p, n) => {
                self.walk(p)?;
                match self.nodes.get_mut(*p) {
                    None => return Err(ErrorKind::NotFound),
                    Some(Node::Dir) => return Err(ErrorKind::IsADirectory),
                    Some(Node::File(data)) => data.resize(*n as usize, 0),
                }
            }
            Op::Write {
                path,
                truncate,
                writes,
                set_len,
                outcome,
            } => {
                self.walk(path)?;
                let mut data = match self.get(path) {
                    Some(Node::Dir) => return Err(ErrorKind::IsADirectory),
                    Some(Node::File(d)) if !truncate => d.clone(),
                    _ => Vec::new(),
                };
                for &(off, len, seed) in writes {
                    let (off, len) = (off as usize, len as usize);
                    if len == 0 {
                        continue;
                    }
                    if data.len() < off + len {
                        data.resize(off + len, 0);
                    }
                    data[off..off + len].copy_from_slice(&common::content(seed, len));
                }
                if let Some(n) = set_len {
                    data.resize(*n as usize, 0);
                }
                if !matches!(outcome, Outcome::Abort) {
                    self.nodes.insert(path.to_string(), Node::File(data));
                }
            }
        }
        Ok(())
    }
}

async fn run_on_store(store: &Store, op: &Op) -> Result<(), ErrorKind> {
    let ctx = common::ctx();
    let p = |s: &str| StorePath::parse(s).unwrap();
    let r = match op {
        Op::Mkdir(x) => store.mkdir(&p(x), &ctx).await.map(drop),
        Op::Rmdir(x) => store.rmdir(&p(x), &ctx).await.map(drop),
        Op::Delete(x) => store.delete(&p(x), &ctx).await.map(drop),
        Op::Rename(a, b, r) => store.rename(&p(a), &p(b), *r, &ctx).await.map(drop),
        Op::SetSize(x, n) => store.set_size(&p(x), *n as u64, &ctx).await.map(drop),
        Op::Write {
            path,
            truncate,
            writes,
            set_len,
            outcome,
        } => {
            let opts = if *truncate {
                OpenOptions::REPLACE
            } else {
                OpenOptions::UPDATE
            };
            let mut w = store
                .open_write(&p(path), opts, &ctx)
                .await
                .map_err(|e| e.kind())?;
            for &(off, len, seed) in writes {
                w.write_at(off as u64, &common::content(seed, len as usize))
                    .await
                    .unwrap();
            }
            if let Some(n) = set_len {
                w.set_len(*n as u64).await.unwrap();
            }
            match outcome {
                Outcome::Commit => w.commit(CommitOptions::default()).await.map(drop),
                Outcome::CommitIncomplete => w
                    .commit(CommitOptions {
                        complete: false,
                        mtime: None,
                    })
                    .await
                    .map(drop),
                Outcome::Abort => w.abort().await,
            }
        }
    };
    r.map_err(|e| e.kind())
}

/// Everything in the store, walked through listings (pages of 2 to exercise paging).
async fn snapshot(store: &Store) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![StorePath::root()];
    while let Some(dir) = dirs.pop() {
        let mut after: Option<String> = None;
        loop {
            let page = store.list(&dir, after.as_deref(), 2).await.unwrap();
            for e in &page.entries {
                let path = dir.join(&e.name).unwrap();
                match e.metadata.kind {
                    EntryKind::Directory => {
                        out.insert(path.to_string(), Node::Dir);
                        dirs.push(path);
                    }
                    EntryKind::File => {
                        let data = store.read_to_vec(&path, u64::MAX).await.unwrap();
                        assert_eq!(data.len() as u64, e.metadata.size, "{path}: listed size");
                        out.insert(path.to_string(), Node::File(data));
                    }
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

async fn check_sequence(store: &Store, ops: &[Op]) {
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        let expected = model.apply(op);
        let got = run_on_store(store, op).await;
        // A write onto a directory is refused by its open, or — where the store skipped the open's
        // check for a directory it just used (`KnownDirs`) — by its commit; aborted, it is refused
        // by nothing. Either way nothing changes, which the snapshot below checks.
        let aborted_onto_dir = matches!(
            op,
            Op::Write {
                outcome: Outcome::Abort,
                ..
            }
        ) && expected == Err(ErrorKind::IsADirectory)
            && got == Ok(());
        if !aborted_onto_dir {
            assert_eq!(got, expected, "step {i}: {op:?}");
        }
        assert_eq!(
            snapshot(store).await,
            model.nodes,
            "state after step {i}: {op:?}"
        );
    }
    let events = common::all_events(store).await;
    assert_eq!(events.len(), model.events, "one event per change");
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as u64 + 1),
        "consecutive sequence numbers"
    );
    store.maintain().await.unwrap();
    // Aborted sessions end in the background; wait for them, then no chunk may be missing or leaked.
    for _ in 0..500 {
        if store.usage().await.unwrap().sessions == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    store.maintain().await.unwrap();
    assert_eq!(
        store.verify().await.unwrap(),
        Default::default(),
        "chunks missing or leaked"
    );
}

fn config(chunk_size: u64) -> StoreConfig {
    StoreConfig {
        chunk_size,
        ..common::test_config()
    }
}

fn cases() -> impl Strategy<Value = (Vec<Op>, u64)> {
    (
        prop::collection::vec(op(), 1..30),
        prop::sample::select(vec![16u64, 64, 100]),
    )
}

fn runner() -> proptest::test_runner::TestRunner {
    proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

#[test]
fn embedded_matches_the_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = runner().run(&cases(), |(ops, cs)| {
        rt.block_on(async {
            let store = Store::open(config(cs)).await.unwrap();
            check_sequence(&store, &ops).await;
            store.close().await;
        });
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn redis_matches_the_model() {
    // One server for every case (each case gets its own namespace), stopped when the test ends.
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let case = std::sync::atomic::AtomicU64::new(0);
    let result = runner().run(&cases(), |(ops, cs)| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            let mut cfg = config(cs);
            cfg.backend = BackendConfig::Redis(RedisConfig::new(server.url()));
            cfg.namespace = format!("case{case}");
            let store = Store::open(cfg).await.unwrap();
            check_sequence(&store, &ops).await;
            store.close().await;
        });
        Ok(())
    });
    drop(server);
    if let Err(e) = result {
        panic!("{e}");
    }
}
