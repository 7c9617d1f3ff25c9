//! The storage contract, run against every backend: each test body runs on the embedded store, on a
//! private redis-server, on a private 3-master Redis Cluster and on a Sentinel-watched master.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{all_events, content, ctx, fixture, fixture_with, p, sha256_hex, Kind};
use storage_backend::{
    CommitOptions, EntryKind, ErrorKind, EventKind, EventPage, OpenOptions, StorePath,
    MAX_HOLE_BYTES,
};

on_every_backend!(
    round_trips_files_of_every_size,
    directories_and_paged_listing,
    renames_files_and_directories,
    rename_follows_posix_rules,
    deletes,
    readers_never_see_torn_files,
    concurrent_readers_and_writers_see_whole_versions,
    cut_off_uploads_are_kept_incomplete_and_resume,
    abandoned_sessions_change_nothing,
    sparse_writes_truncate_and_extend,
    zeros_nobody_wrote_inside_chunks_are_holes,
    random_order_writes,
    last_commit_wins,
    outbox_sequences_are_consecutive_and_ack_trims,
    acknowledged_events_stay_as_bounded_history,
    consumer_cursors_hold_history,
    history_ages_out_and_says_what_is_gone,
    full_outbox_refuses_changes_loudly,
    bad_input_gets_distinct_errors,
    replaced_content_is_reclaimed,
    dead_gateways_sessions_are_reclaimed,
    set_mtime_and_set_size,
    leases_and_event_watch,
    records_are_shared_expire_and_swap,
    known_directories_move_no_error_past_the_commit,
);

/// One upload as a front-end makes it (open, write, commit); the error from whichever step
/// refused it. The open checks the path unless this process used the directory a moment ago
/// (`KnownDirs`); the commit always does.
async fn write_once(
    s: &storage_backend::Store,
    path: &StorePath,
    data: &[u8],
) -> storage_backend::Result<()> {
    let mut w = s.open_write(path, OpenOptions::REPLACE, &ctx()).await?;
    w.write_at(0, data).await?;
    w.commit(CommitOptions::default()).await.map(|_| ())
}

/// Uploads into a directory this store just used skip the open's path check: whatever
/// changed meanwhile, the commit refuses what the open would have, nothing lands anywhere else
/// and nothing is left behind; and a directory this store removed or renamed is checked again at
/// the very next open.
async fn known_directories_move_no_error_past_the_commit(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    let open_err = |path: &'static str| async move {
        s.open_write(&p(path), OpenOptions::REPLACE, &ctx())
            .await
            .err()
            .map(|e| e.kind())
    };
    // Removed here: the next open says so itself.
    s.mkdir(&p("/d"), &ctx()).await.unwrap();
    write_once(s, &p("/d/a"), b"a").await.unwrap();
    s.delete(&p("/d/a"), &ctx()).await.unwrap();
    s.rmdir(&p("/d"), &ctx()).await.unwrap();
    assert_eq!(open_err("/d/b").await, Some(ErrorKind::NotFound));
    // Renamed here (with a subdirectory in use): neither old path is taken for known.
    s.mkdir(&p("/e"), &ctx()).await.unwrap();
    s.mkdir(&p("/e/sub"), &ctx()).await.unwrap();
    write_once(s, &p("/e/sub/a"), b"a").await.unwrap();
    write_once(s, &p("/e/a"), b"a").await.unwrap();
    s.rename(&p("/e"), &p("/f"), false, &ctx()).await.unwrap();
    assert_eq!(open_err("/e/b").await, Some(ErrorKind::NotFound));
    assert_eq!(open_err("/e/sub/b").await, Some(ErrorKind::NotFound));
    write_once(s, &p("/f/sub/b"), b"b").await.unwrap();
    // A directory where the file was meant to go: refused, the directory stays as it was.
    s.mkdir(&p("/f/taken"), &ctx()).await.unwrap();
    // The point of it all: no round trip (no transaction) for the open in a directory just used.
    assert_eq!(open_err("/f/taken").await, None);
    let e = write_once(s, &p("/f/taken"), b"x").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::IsADirectory, "{e}");
    assert!(e.message().contains("/f/taken: is a directory"), "{e}");
    assert!(s.stat(&p("/f/taken")).await.unwrap().is_dir());
    let before = all_events(s).await.len();
    if kind.is_shared() {
        // Another gateway removes a directory this one just used: the upload is refused at the
        // commit at the latest, with the same error, and leaves nothing behind.
        s.mkdir(&p("/g"), &ctx()).await.unwrap();
        write_once(s, &p("/g/a"), b"a").await.unwrap();
        let other = f.reopen(|_| {}).await;
        other.delete(&p("/g/a"), &ctx()).await.unwrap();
        other.rmdir(&p("/g"), &ctx()).await.unwrap();
        let e = write_once(s, &p("/g/b"), &content(5, 300))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert_eq!(
            s.stat(&p("/g")).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        other.close().await;
    }
    let after: Vec<_> = all_events(s).await.into_iter().skip(before).collect();
    assert!(
        after
            .iter()
            .all(|e| !e.path.contains("/g/b") && !e.path.contains("taken")),
        "a refused upload was announced: {after:?}"
    );
    // The refused uploads' chunks go away once their cleanup has run.
    assert!(
        reclaimed(s).await,
        "chunks left behind: {:?}",
        s.verify().await.unwrap()
    );
}

/// Whether the store's integrity check comes out clean (no chunk left behind, none missing) once
/// background cleanups and maintenance have run, within about 2 s.
async fn reclaimed(s: &storage_backend::Store) -> bool {
    for _ in 0..400 {
        s.maintain().await.unwrap();
        if s.verify().await.unwrap() == Default::default() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

async fn records_are_shared_expire_and_swap(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    let before = all_events(s).await.len();
    assert_eq!(s.record_get("web_sessions", "h1").await.unwrap(), None);
    s.record_put("web_sessions", "h1", b"alice", None)
        .await
        .unwrap();
    assert_eq!(
        s.record_get("web_sessions", "h1").await.unwrap().as_deref(),
        Some(&b"alice"[..])
    );
    // Compare-and-set: only the writer that saw the current value wins.
    assert!(!s
        .record_swap("web_sessions", "h1", Some(b"bob"), b"x", None)
        .await
        .unwrap());
    assert!(s
        .record_swap("web_sessions", "h1", Some(b"alice"), b"alice2", None)
        .await
        .unwrap());
    assert!(!s
        .record_swap("web_sessions", "h1", None, b"y", None)
        .await
        .unwrap());
    assert!(s
        .record_swap("web_sessions", "h2", None, b"new", None)
        .await
        .unwrap());
    // Listing: key order, paging after a key, other tables apart, binary values intact.
    s.record_put("keys:alice", "b", &[0, 255, 10], None)
        .await
        .unwrap();
    s.record_put("keys:alice", "a", b"1", None).await.unwrap();
    s.record_put("keys:alicex", "a", b"other", None)
        .await
        .unwrap();
    let all = s.record_list("keys:alice", None, 10).await.unwrap();
    assert_eq!(
        all,
        vec![
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), vec![0, 255, 10])
        ]
    );
    let rest = s.record_list("keys:alice", Some("a"), 10).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(s.record_list("keys:alice", None, 1).await.unwrap().len(), 1);
    // Expiry: an expired record reads as absent, is not listed, and can be taken by a swap.
    let soon = SystemTime::now() + Duration::from_millis(150);
    s.record_put("tus", "u1", b"upload", Some(soon))
        .await
        .unwrap();
    s.record_put(
        "tus",
        "u2",
        b"keeps",
        Some(SystemTime::now() + Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    assert!(s.record_get("tus", "u1").await.unwrap().is_some());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s.record_get("tus", "u1").await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "record never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = s.record_list("tus", None, 10).await.unwrap();
    assert_eq!(listed, vec![("u2".to_string(), b"keeps".to_vec())]);
    s.maintain().await.unwrap();
    assert_eq!(s.record_list("tus", None, 10).await.unwrap().len(), 1);
    // Deleting ends a record for every gateway on the store.
    if kind.is_shared() {
        let other = f.reopen(|_| {}).await;
        assert!(other
            .record_get("web_sessions", "h1")
            .await
            .unwrap()
            .is_some());
        assert!(other.record_delete("web_sessions", "h1").await.unwrap());
    } else {
        assert!(s.record_delete("web_sessions", "h1").await.unwrap());
    }
    assert_eq!(s.record_get("web_sessions", "h1").await.unwrap(), None);
    assert!(!s.record_delete("web_sessions", "h1").await.unwrap());
    // Bad names are refused, not stored.
    for (table, key) in [("Upper", "k"), ("", "k"), ("t", "")] {
        assert_eq!(
            s.record_put(table, key, b"v", None)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
    }
    assert_eq!(
        s.record_put("t", "k", &vec![0; 70 * 1024], None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    // Records are not files: no events.
    assert_eq!(all_events(s).await.len(), before);
}

async fn leases_and_event_watch(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    let ttl = Duration::from_secs(30);
    assert!(s.lease("publisher", "gw-a", ttl).await.unwrap());
    assert!(
        s.lease("publisher", "gw-a", ttl).await.unwrap(),
        "the holder renews"
    );
    if kind.is_shared() {
        let other = f.reopen(|_| {}).await;
        assert!(
            !other.lease("publisher", "gw-b", ttl).await.unwrap(),
            "one holder at a time"
        );
        s.release_lease("publisher", "gw-a").await.unwrap();
        assert!(other.lease("publisher", "gw-b", ttl).await.unwrap());
        // A lease that is not renewed passes on by itself.
        assert!(other
            .lease("short", "gw-b", Duration::from_millis(50))
            .await
            .unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !s.lease("short", "gw-a", ttl).await.unwrap() {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut watch = s.watch_events();
    s.mkdir(&p("/w"), &ctx()).await.unwrap();
    watch.changed().await.unwrap();
    let info = s.write_file(&p("/w/x"), b"x", &ctx()).await.unwrap();
    watch.changed().await.unwrap();
    assert_eq!(*watch.borrow(), info.seq);
}

async fn round_trips_files_of_every_size(kind: Kind) {
    let f = fixture(kind).await;
    let cs = f.store.chunk_size() as usize;
    for (i, len) in [0, 1, cs - 1, cs, cs + 1, 3 * cs + 7, 40 * cs]
        .into_iter()
        .enumerate()
    {
        let data = content(i as u8, len);
        let path = p(&format!("/f{len}"));
        let info = f.store.write_file(&path, &data, &ctx()).await.unwrap();
        assert_eq!(info.size, len as u64);
        assert_eq!(info.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
        assert!(info.created);
        let meta = f.store.stat(&path).await.unwrap();
        assert_eq!(meta.kind, EntryKind::File);
        assert_eq!(meta.size, len as u64);
        assert_eq!(meta.sha256, info.sha256);
        assert!(meta.complete);
        assert_eq!(meta.version, info.version);
        assert_eq!(
            f.store.read_to_vec(&path, u64::MAX).await.unwrap(),
            data,
            "len {len}"
        );
        // Ranged reads across chunk boundaries.
        let reader = f.store.open_read(&path).await.unwrap();
        for (off, n) in [
            (0, 5),
            (cs as u64 - 2, 5),
            (len as u64 / 2, cs * 2),
            (len as u64, 10),
        ] {
            let got = reader.read_at(off, n).await.unwrap();
            let lo = (off as usize).min(len);
            let hi = (off as usize + n).min(len);
            assert_eq!(&got[..], &data[lo..hi], "read_at({off}, {n}) of {len}");
        }
        // Streaming from an offset.
        let mut stream = reader.stream(3.min(len as u64));
        let mut got = Vec::new();
        while let Some(piece) = stream.next().await {
            got.extend_from_slice(&piece.unwrap());
        }
        assert_eq!(got, data[3.min(len)..]);
    }
    let events = all_events(&f.store).await;
    assert_eq!(events.len(), 7);
    assert!(events
        .iter()
        .all(|e| e.kind == EventKind::FileCreated && e.user == "alice" && e.protocol == "sftp"));
    assert_eq!(events[3].size, Some(cs as u64));
    assert_eq!(events[3].path, format!("/f{cs}"));
}

async fn directories_and_paged_listing(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    s.mkdir(&p("/a"), &ctx()).await.unwrap();
    s.mkdir(&p("/a/b"), &ctx()).await.unwrap();
    for name in ["e", "c", "d", "ä", "B"] {
        s.write_file(&p(&format!("/a/{name}")), name.as_bytes(), &ctx())
            .await
            .unwrap();
    }
    // Pages of two, in byte order of the names, never more than asked.
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.list(&p("/a"), after.as_deref(), 2).await.unwrap();
        assert!(page.entries.len() <= 2);
        names.extend(page.entries.iter().map(|e| e.name.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(names, ["B", "b", "c", "d", "e", "ä"]);
    let page = s.list(&p("/a"), None, 100).await.unwrap();
    let b = page.entries.iter().find(|e| e.name == "b").unwrap();
    assert_eq!(b.metadata.kind, EntryKind::Directory);
    let e = page.entries.iter().find(|e| e.name == "e").unwrap();
    assert_eq!((e.metadata.kind, e.metadata.size), (EntryKind::File, 1));
    assert_eq!(s.list(&p("/"), None, 10).await.unwrap().entries.len(), 1);
    assert!(s.stat(&StorePath::root()).await.unwrap().is_dir());

    let err = s.rmdir(&p("/a"), &ctx()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DirectoryNotEmpty);
    assert_eq!(
        s.mkdir(&p("/a/e"), &ctx()).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        s.mkdir(&p("/a/b"), &ctx()).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        s.mkdir(&p("/x/y"), &ctx()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.mkdir(&p("/a/e/y"), &ctx()).await.unwrap_err().kind(),
        ErrorKind::NotADirectory
    );
    assert_eq!(
        s.list(&p("/a/e"), None, 10).await.unwrap_err().kind(),
        ErrorKind::NotADirectory
    );
    assert_eq!(
        s.list(&p("/nope"), None, 10).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    s.rmdir(&p("/a/b"), &ctx()).await.unwrap();
    assert_eq!(
        s.stat(&p("/a/b")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.rmdir(&p("/a/e"), &ctx()).await.unwrap_err().kind(),
        ErrorKind::NotADirectory
    );

    let kinds: Vec<EventKind> = all_events(s).await.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventKind::DirCreated)
            .count(),
        2
    );
    assert_eq!(kinds.last(), Some(&EventKind::DirDeleted));
}

async fn renames_files_and_directories(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    s.mkdir(&p("/in"), &ctx()).await.unwrap();
    s.mkdir(&p("/in/deep"), &ctx()).await.unwrap();
    let data = content(1, 500);
    let info = s
        .write_file(&p("/in/deep/file"), &data, &ctx())
        .await
        .unwrap();
    s.mkdir(&p("/out"), &ctx()).await.unwrap();

    // A whole directory moves in one metadata step: the file keeps its version (no copy).
    s.rename(&p("/in"), &p("/out/moved"), false, &ctx())
        .await
        .unwrap();
    assert_eq!(
        s.stat(&p("/in")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let meta = s.stat(&p("/out/moved/deep/file")).await.unwrap();
    assert_eq!(meta.version, info.version);
    assert_eq!(
        s.read_to_vec(&p("/out/moved/deep/file"), u64::MAX)
            .await
            .unwrap(),
        data
    );

    s.rename(&p("/out/moved/deep/file"), &p("/top"), false, &ctx())
        .await
        .unwrap();
    assert_eq!(s.read_to_vec(&p("/top"), u64::MAX).await.unwrap(), data);

    let events = all_events(s).await;
    let dir_move = events
        .iter()
        .find(|e| e.kind == EventKind::DirRenamed)
        .unwrap();
    assert_eq!(
        (dir_move.path.as_str(), dir_move.old_path.as_deref()),
        ("/out/moved", Some("/in"))
    );
    let file_move = events
        .iter()
        .find(|e| e.kind == EventKind::FileRenamed)
        .unwrap();
    assert_eq!(file_move.old_path.as_deref(), Some("/out/moved/deep/file"));
    assert_eq!(file_move.path, "/top");
    assert_eq!(file_move.size, Some(500));
    assert_eq!(
        file_move.sha256.as_deref(),
        Some(sha256_hex(&data).as_str())
    );
    assert!(!file_move.replaced);

    // Into its own subtree, or renaming the root: refused, nothing changes.
    let err = s
        .rename(&p("/out"), &p("/out/moved/x"), false, &ctx())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        s.rename(&StorePath::root(), &p("/r"), false, &ctx())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert!(s.stat(&p("/out/moved/deep")).await.unwrap().is_dir());
    // Onto itself: nothing changes.
    s.rename(&p("/top"), &p("/top"), false, &ctx())
        .await
        .unwrap();
    assert_eq!(s.read_to_vec(&p("/top"), u64::MAX).await.unwrap(), data);
    // Missing source or target parent.
    assert_eq!(
        s.rename(&p("/nope"), &p("/x"), false, &ctx())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.rename(&p("/top"), &p("/nope/x"), false, &ctx())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

async fn rename_follows_posix_rules(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    s.write_file(&p("/a"), b"aaa", &ctx()).await.unwrap();
    s.write_file(&p("/b"), b"bbbb", &ctx()).await.unwrap();
    s.mkdir(&p("/d"), &ctx()).await.unwrap();
    s.mkdir(&p("/e"), &ctx()).await.unwrap();
    s.mkdir(&p("/full"), &ctx()).await.unwrap();
    s.write_file(&p("/full/x"), b"x", &ctx()).await.unwrap();

    assert_eq!(
        s.rename(&p("/a"), &p("/b"), false, &ctx())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        s.rename(&p("/a"), &p("/d"), true, &ctx())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        s.rename(&p("/d"), &p("/a"), true, &ctx())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotADirectory
    );
    assert_eq!(
        s.rename(&p("/d"), &p("/full"), true, &ctx())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::DirectoryNotEmpty
    );
    // Nothing changed by the refusals.
    assert_eq!(s.read_to_vec(&p("/a"), 10).await.unwrap(), b"aaa");

    s.rename(&p("/a"), &p("/b"), true, &ctx()).await.unwrap();
    assert_eq!(s.read_to_vec(&p("/b"), 10).await.unwrap(), b"aaa");
    assert_eq!(
        s.stat(&p("/a")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    s.rename(&p("/d"), &p("/e"), true, &ctx()).await.unwrap();
    assert!(s.stat(&p("/e")).await.unwrap().is_dir());
    let last = all_events(s).await;
    let replaced: Vec<_> = last.iter().filter(|e| e.replaced).collect();
    assert_eq!(replaced.len(), 2);
    // The replaced file's content is garbage now and goes away.
    s.maintain().await.unwrap();
    assert_eq!(s.verify().await.unwrap(), Default::default());
}

async fn deletes(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    let data = content(3, 200);
    let info = s.write_file(&p("/gone"), &data, &ctx()).await.unwrap();
    s.mkdir(&p("/dir"), &ctx()).await.unwrap();
    assert_eq!(
        s.delete(&p("/dir"), &ctx()).await.unwrap_err().kind(),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        s.delete(&p("/nope"), &ctx()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    s.delete(&p("/gone"), &ctx()).await.unwrap();
    assert_eq!(
        s.stat(&p("/gone")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let ev = all_events(s).await.pop().unwrap();
    assert_eq!(ev.kind, EventKind::FileDeleted);
    assert_eq!((ev.size, ev.version), (Some(200), Some(info.version)));
    assert_eq!(ev.sha256, info.sha256);
    s.maintain().await.unwrap();
    let usage = s.usage().await.unwrap();
    assert_eq!((usage.stored_chunks, usage.referenced_chunks), (0, 0));
}

async fn readers_never_see_torn_files(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    let old = content(1, 64 * 20);
    let new = content(2, 64 * 15 + 3);
    s.write_file(&p("/doc"), &old, &ctx()).await.unwrap();

    // A reader that started before an overwrite keeps reading the old version, complete, even after
    // garbage collection has run.
    let reader = s.open_read(&p("/doc")).await.unwrap();
    let first = reader.read_at(0, 64).await.unwrap();
    // While an overwrite is being uploaded, readers see the old content.
    let mut upload = s
        .open_write(&p("/doc"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    upload.write_at(0, &new[..500]).await.unwrap();
    assert_eq!(s.read_to_vec(&p("/doc"), u64::MAX).await.unwrap(), old);
    upload.write_at(500, &new[500..]).await.unwrap();
    upload.commit(CommitOptions::default()).await.unwrap();
    s.maintain().await.unwrap();
    let mut stream = reader.stream(64);
    let mut rest = first.to_vec();
    while let Some(piece) = stream.next().await {
        rest.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(rest, old);
    assert_eq!(s.read_to_vec(&p("/doc"), u64::MAX).await.unwrap(), new);
    drop(stream);
    drop(reader);
    // Once the old reader is gone its chunks are reclaimed.
    assert!(
        reclaimed(s).await,
        "old version's chunks were not reclaimed after the reader went away"
    );
}

async fn concurrent_readers_and_writers_see_whole_versions(kind: Kind) {
    let f = fixture(kind).await;
    let s = f.store.clone();
    let versions: Vec<Vec<u8>> = (0..6u8)
        .map(|i| content(i, 64 * 9 + i as usize * 13))
        .collect();
    s.write_file(&p("/hot"), &versions[0], &ctx())
        .await
        .unwrap();
    let writer = {
        let s = s.clone();
        let versions = versions.clone();
        tokio::spawn(async move {
            for round in 0..30 {
                let v = &versions[1 + round % 5];
                let mut w = s
                    .open_write(&p("/hot"), OpenOptions::REPLACE, &ctx())
                    .await
                    .unwrap();
                for piece in v.chunks(50) {
                    w.append(piece).await.unwrap();
                }
                w.commit(CommitOptions::default()).await.unwrap();
                s.maintain().await.unwrap();
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() || reads < 10 {
        let got = s.read_to_vec(&p("/hot"), u64::MAX).await.unwrap();
        assert!(
            versions.contains(&got),
            "a read returned bytes that are no committed version"
        );
        reads += 1;
    }
    writer.await.unwrap();
}

async fn cut_off_uploads_are_kept_incomplete_and_resume(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    let full = content(9, 64 * 10 + 17);
    // The client vanished after 300 bytes: the front-end commits what arrived, flagged incomplete.
    let mut w = s
        .open_write(&p("/big.iso"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    w.write_at(0, &full[..300]).await.unwrap();
    let info = w
        .commit(CommitOptions {
            complete: false,
            mtime: None,
        })
        .await
        .unwrap();
    assert_eq!(info.size, 300);
    let meta = s.stat(&p("/big.iso")).await.unwrap();
    assert!(!meta.complete);
    assert_eq!(meta.size, 300);
    let ev = all_events(s).await.pop().unwrap();
    assert_eq!(ev.kind, EventKind::FileIncomplete);
    assert_eq!(ev.complete, Some(false));

    // Resume with an append (FTP APPE / REST+STOR): the finished file is complete, with its checksum.
    let mut w = s
        .open_write(&p("/big.iso"), OpenOptions::UPDATE, &ctx())
        .await
        .unwrap();
    assert_eq!(w.size(), 300);
    w.append(&full[300..]).await.unwrap();
    let info = w.commit(CommitOptions::default()).await.unwrap();
    assert_eq!(info.sha256.as_deref(), Some(sha256_hex(&full).as_str()));
    let meta = s.stat(&p("/big.iso")).await.unwrap();
    assert!(meta.complete);
    assert_eq!(meta.sha256, info.sha256);
    assert_eq!(s.read_to_vec(&p("/big.iso"), u64::MAX).await.unwrap(), full);
    let ev = all_events(s).await.pop().unwrap();
    assert_eq!(
        (ev.kind, ev.complete, ev.replaced),
        (EventKind::FileModified, Some(true), true)
    );

    // Resume by writing at an offset (SFTP reput): same result.
    let mut w = s
        .open_write(&p("/second"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    w.write_at(0, &full[..100]).await.unwrap();
    w.commit(CommitOptions {
        complete: false,
        mtime: None,
    })
    .await
    .unwrap();
    let mut w = s
        .open_write(&p("/second"), OpenOptions::UPDATE, &ctx())
        .await
        .unwrap();
    w.write_at(100, &full[100..]).await.unwrap();
    w.commit(CommitOptions::default()).await.unwrap();
    assert_eq!(s.read_to_vec(&p("/second"), u64::MAX).await.unwrap(), full);
    s.maintain().await.unwrap();
    assert_eq!(s.verify().await.unwrap(), Default::default());
}

async fn abandoned_sessions_change_nothing(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    let old = content(1, 300);
    s.write_file(&p("/keep"), &old, &ctx()).await.unwrap();
    let before = all_events(s).await.len();
    // Aborted explicitly.
    let mut w = s
        .open_write(&p("/keep"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    w.write_at(0, &content(2, 1000)).await.unwrap();
    w.abort().await.unwrap();
    // Dropped without a word (the connection died and the front-end discards partial uploads).
    let mut w = s
        .open_write(&p("/keep"), OpenOptions::UPDATE, &ctx())
        .await
        .unwrap();
    w.write_at(10, &content(3, 1000)).await.unwrap();
    drop(w);
    let mut w = s
        .open_write(&p("/never"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    w.write_at(0, &content(4, 1000)).await.unwrap();
    drop(w);
    assert_eq!(s.read_to_vec(&p("/keep"), u64::MAX).await.unwrap(), old);
    assert_eq!(
        s.stat(&p("/never")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        all_events(s).await.len(),
        before,
        "an aborted upload recorded an event"
    );
    // The dropped sessions' chunks go away once their cleanup has run.
    let mut clean = false;
    for _ in 0..400 {
        s.maintain().await.unwrap();
        let usage = s.usage().await.unwrap();
        if usage.sessions == 0 && s.verify().await.unwrap() == Default::default() {
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        clean,
        "chunks of abandoned sessions were not reclaimed: {:?}",
        s.verify().await.unwrap()
    );
}

/// Writing one byte at the end of each chunk stores whole chunks of zeros nobody sent: they count
/// towards `max_hole_size` like holes; bytes later written into them give the room back.
async fn zeros_nobody_wrote_inside_chunks_are_holes(kind: Kind) {
    let f = fixture_with(kind, |c| c.max_hole_size = 64 * 20).await;
    let s = &f.store;
    let mut w = s
        .open_write(&p("/z"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    let refused = loop_until_refused(&mut w).await;
    assert!((19..=21).contains(&refused), "refused at chunk {refused}");
    w.abort().await.unwrap();
    // Filled afterwards (out of order), the same chunks are no holes.
    let data = content(8, 64 * 60);
    let mut w = s
        .open_write(&p("/z"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    for k in 0..60 {
        w.write_at(k * 64 + 63, &data[k as usize * 64 + 63..][..1])
            .await
            .unwrap();
        w.write_at(k * 64, &data[k as usize * 64..][..63])
            .await
            .unwrap();
    }
    w.commit(CommitOptions::default()).await.unwrap();
    assert_eq!(s.read_to_vec(&p("/z"), u64::MAX).await.unwrap(), data);
}

/// Writes one byte at the end of chunk 0, 1, 2, … and says at which chunk it was refused.
async fn loop_until_refused(w: &mut storage_backend::WriteSession) -> u64 {
    for k in 0..1000 {
        if let Err(e) = w.write_at(k * 64 + 63, b"x").await {
            assert_eq!(e.kind(), ErrorKind::FileTooLarge, "{e}");
            assert!(e.to_string().contains("never written"), "{e}");
            return k;
        }
    }
    panic!("1000 one-byte writes stored 1000 chunks of zeros");
}

async fn sparse_writes_truncate_and_extend(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    // A write far past the end leaves a hole that reads as zeros.
    let mut w = s
        .open_write(&p("/sparse"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    w.write_at(64 * 5 + 10, b"tail").await.unwrap();
    w.write_at(3, b"head").await.unwrap();
    w.commit(CommitOptions::default()).await.unwrap();
    let mut expect = vec![0u8; 64 * 5 + 14];
    expect[3..7].copy_from_slice(b"head");
    expect[64 * 5 + 10..].copy_from_slice(b"tail");
    assert_eq!(
        s.read_to_vec(&p("/sparse"), u64::MAX).await.unwrap(),
        expect
    );
    assert_eq!(
        s.stat(&p("/sparse")).await.unwrap().sha256.as_deref(),
        Some(sha256_hex(&expect).as_str())
    );

    // Truncate inside a chunk, then extend: the cut-off bytes must not come back.
    let data = content(5, 64 * 3);
    s.write_file(&p("/t"), &data, &ctx()).await.unwrap();
    let mut w = s
        .open_write(&p("/t"), OpenOptions::EXISTING, &ctx())
        .await
        .unwrap();
    w.set_len(70).await.unwrap();
    w.set_len(64 * 4).await.unwrap();
    w.write_at(64 * 4 - 2, b"zz").await.unwrap();
    w.commit(CommitOptions::default()).await.unwrap();
    let mut expect = data[..70].to_vec();
    expect.resize(64 * 4 - 2, 0);
    expect.extend_from_slice(b"zz");
    assert_eq!(s.read_to_vec(&p("/t"), u64::MAX).await.unwrap(), expect);

    // Truncation as a store call of its own.
    s.set_size(&p("/t"), 5, &ctx()).await.unwrap();
    assert_eq!(s.read_to_vec(&p("/t"), u64::MAX).await.unwrap(), data[..5]);
    s.set_size(&p("/t"), 0, &ctx()).await.unwrap();
    assert_eq!(s.stat(&p("/t")).await.unwrap().size, 0);
    s.set_size(&p("/t"), 100, &ctx()).await.unwrap();
    assert_eq!(
        s.read_to_vec(&p("/t"), u64::MAX).await.unwrap(),
        vec![0u8; 100]
    );
    // Holes are bounded: they are hashed at commit, so a tiny request must not cost hours of CPU
    // or a chunk map of billions of entries. Refused cleanly; the file stays as it was.
    for size in [MAX_HOLE_BYTES + 101, u64::MAX / 2] {
        let err = s.set_size(&p("/t"), size, &ctx()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FileTooLarge, "{err}");
        assert!(err.to_string().contains("never written"), "{err}");
    }
    let mut w = s
        .open_write(&p("/t"), OpenOptions::EXISTING, &ctx())
        .await
        .unwrap();
    let err = w.write_at(MAX_HOLE_BYTES + 200, b"x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FileTooLarge, "{err}");
    w.abort().await.unwrap();
    assert_eq!(s.stat(&p("/t")).await.unwrap().size, 100);
    s.maintain().await.unwrap();
    assert_eq!(s.verify().await.unwrap(), Default::default());
}

async fn random_order_writes(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    let data = content(7, 64 * 12 + 5);
    let mut w = s
        .open_write(&p("/shuffled"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    // Pieces of 40 bytes (not chunk-aligned), written back to front.
    let pieces: Vec<(usize, &[u8])> = data
        .chunks(40)
        .enumerate()
        .map(|(i, c)| (i * 40, c))
        .collect();
    for (off, piece) in pieces.iter().rev() {
        w.write_at(*off as u64, piece).await.unwrap();
    }
    assert_eq!(w.read_at(100, 50).await.unwrap(), data[100..150]);
    let info = w.commit(CommitOptions::default()).await.unwrap();
    assert_eq!(
        info.sha256.as_deref(),
        Some(sha256_hex(&data).as_str()),
        "checksum computed at commit"
    );
    assert_eq!(
        s.read_to_vec(&p("/shuffled"), u64::MAX).await.unwrap(),
        data
    );
    // Overwrite a span in the middle of an existing file.
    let mut w = s
        .open_write(&p("/shuffled"), OpenOptions::EXISTING, &ctx())
        .await
        .unwrap();
    w.write_at(60, &[0xAB; 200]).await.unwrap();
    w.commit(CommitOptions::default()).await.unwrap();
    let mut expect = data.clone();
    expect[60..260].fill(0xAB);
    assert_eq!(
        s.read_to_vec(&p("/shuffled"), u64::MAX).await.unwrap(),
        expect
    );
    assert_eq!(
        s.stat(&p("/shuffled")).await.unwrap().sha256.as_deref(),
        Some(sha256_hex(&expect).as_str())
    );
}

async fn last_commit_wins(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    s.write_file(&p("/race"), b"original", &ctx())
        .await
        .unwrap();
    let mut a = s
        .open_write(&p("/race"), OpenOptions::UPDATE, &ctx())
        .await
        .unwrap();
    let mut b = s
        .open_write(&p("/race"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    a.write_at(0, b"AAAA").await.unwrap();
    b.write_at(0, &content(1, 300)).await.unwrap();
    let info_b = b.commit(CommitOptions::default()).await.unwrap();
    let info_a = a.commit(CommitOptions::default()).await.unwrap();
    assert!(info_a.version > info_b.version);
    assert_eq!(s.read_to_vec(&p("/race"), 100).await.unwrap(), b"AAAAinal");
    let events = all_events(s).await;
    let seqs: Vec<u64> = events.iter().rev().take(2).map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        [info_a.seq, info_b.seq],
        "both commits recorded, in commit order"
    );
    s.maintain().await.unwrap();
    assert_eq!(s.verify().await.unwrap(), Default::default());
}

async fn outbox_sequences_are_consecutive_and_ack_trims(kind: Kind) {
    // Without a history, acknowledged events go at once (as before the history existed).
    let f = fixture_with(kind, |c| c.history_max = 0).await;
    let s = &f.store;
    for i in 0..25 {
        s.write_file(&p(&format!("/e{i}")), b"x", &ctx())
            .await
            .unwrap();
    }
    let events = all_events(s).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 25, "event ids are unique");
    assert!(events.iter().all(|e| e.time_ms > 1_600_000_000_000));
    assert_eq!(s.events_after(20, 100).await.unwrap().len(), 5);
    assert_eq!(s.events_after(0, 7).await.unwrap().len(), 7);
    s.ack_events(10).await.unwrap();
    let status = s.outbox_status().await.unwrap();
    assert_eq!(
        (status.last_seq, status.acked_seq, status.backlog()),
        (25, 10, 15)
    );
    assert_eq!(
        s.events_after(0, 100).await.unwrap().first().map(|e| e.seq),
        Some(11)
    );
    // Acknowledging backwards changes nothing; beyond the newest is an error.
    assert_eq!(s.ack_events(5).await.unwrap(), 10);
    assert_eq!(
        s.ack_events(99).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

async fn full_outbox_refuses_changes_loudly(kind: Kind) {
    let f = fixture_with(kind, |c| {
        c.outbox_limit = 4;
        c.history_max = 0;
    })
    .await;
    let s = &f.store;
    let by = |user: &str| storage_backend::ChangeContext::new(user, "ftp", "127.0.0.1:50000");
    // One user may fill half of the outbox, not more: the rest stays for everyone else.
    for i in 0..2 {
        s.mkdir(&p(&format!("/a{i}")), &by("alice")).await.unwrap();
    }
    let err = s
        .write_file(&p("/a-refused"), b"x", &by("alice"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("of this user"), "{err}");
    assert_eq!(
        err.reason(),
        None,
        "one user's share is not the whole outbox"
    );
    for i in 0..2 {
        s.mkdir(&p(&format!("/b{i}")), &by("bob")).await.unwrap();
    }
    // Full: refused for everyone.
    let err = s
        .write_file(&p("/refused"), b"x", &by("carol"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.message().contains("outbox is full"), "{err}");
    assert_eq!(err.reason(), Some(storage_backend::Reason::OutboxFull));
    assert_eq!(
        s.mkdir(&p("/d9"), &by("carol")).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    for refused in ["/refused", "/a-refused"] {
        assert_eq!(
            s.stat(&p(refused)).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
    // Nothing was dropped: all four events are still there; once alice's are delivered, her
    // changes go on (and bob's two still count against him).
    assert_eq!(all_events(s).await.len(), 4);
    s.ack_events(2).await.unwrap();
    s.write_file(&p("/accepted"), b"x", &by("alice"))
        .await
        .unwrap();
    assert_eq!(all_events(s).await.first().map(|e| e.seq), Some(3));
    let err = s.mkdir(&p("/b9"), &by("bob")).await.unwrap_err();
    assert!(err.message().contains("of this user"), "{err}");
    s.ack_events(5).await.unwrap();
    s.mkdir(&p("/b9"), &by("bob")).await.unwrap();
}

async fn acknowledged_events_stay_as_bounded_history(kind: Kind) {
    let f = fixture_with(kind, |c| {
        c.history_max = 10;
        c.outbox_limit = 40;
    })
    .await;
    let s = &f.store;
    for i in 0..15 {
        s.mkdir(&p(&format!("/h{i}")), &ctx()).await.unwrap();
    }
    // Nothing acknowledged: nothing is dropped, whatever history_max says.
    let seqs = |page: EventPage| match page {
        EventPage::Events { events, last_seq } => {
            (events.iter().map(|e| e.seq).collect(), last_seq)
        }
        gone => panic!("expected events, got {gone:?}"),
    };
    let (got, last): (Vec<u64>, u64) = seqs(s.events_page(0, 100).await.unwrap());
    assert_eq!((got, last), ((1..=15).collect(), 15));
    // Acknowledged events stay as history up to history_max behind the newest...
    s.ack_events(12).await.unwrap();
    assert_eq!(
        s.events_page(0, 100).await.unwrap(),
        EventPage::Gone {
            oldest_seq: 6,
            last_seq: 15
        }
    );
    assert_eq!(
        s.events_page(4, 3).await.unwrap(),
        EventPage::Gone {
            oldest_seq: 6,
            last_seq: 15
        },
        "event 5 is gone: a consumer that saw 4 is told, not silently moved on"
    );
    let (got, _) = seqs(s.events_page(5, 3).await.unwrap());
    assert_eq!(got, vec![6, 7, 8], "paging from the oldest kept event");
    let (got, last) = seqs(s.events_page(15, 3).await.unwrap());
    assert_eq!((got, last), (vec![], 15), "nothing newer yet");
    // ...and the outbox limit still counts only unacknowledged events: 3 of 20.
    for i in 0..10 {
        s.mkdir(&p(&format!("/more{i}")), &ctx()).await.unwrap();
    }
    assert_eq!(s.outbox_status().await.unwrap().backlog(), 13);
    // Acknowledging everything keeps the last 10; the unacknowledged never go.
    s.ack_events(25).await.unwrap();
    let (got, _) = seqs(s.events_page(15, 100).await.unwrap());
    assert_eq!(got, (16..=25).collect::<Vec<_>>());
    // Another gateway on the same namespace sees the same history.
    if kind.is_shared() {
        let other = f.reopen(|c| c.history_max = 10).await;
        let (got, _) = seqs(other.events_page(20, 100).await.unwrap());
        assert_eq!(got, (21..=25).collect::<Vec<_>>());
    }
}

async fn consumer_cursors_hold_history(kind: Kind) {
    let f = fixture_with(kind, |c| {
        c.history_max = 2;
        c.history_age = Duration::from_millis(200);
    })
    .await;
    let s = &f.store;
    for i in 0..3 {
        s.mkdir(&p(&format!("/c{i}")), &ctx()).await.unwrap();
    }
    // A new consumer starts at the newest event; asking again does not move it.
    assert_eq!(s.cursor("hook-a").await.unwrap(), 3);
    assert_eq!(s.cursor("hook-a").await.unwrap(), 3);
    for i in 3..10 {
        s.mkdir(&p(&format!("/c{i}")), &ctx()).await.unwrap();
    }
    // The publisher acknowledged everything and the events are older than history_age, yet the
    // events after the consumer's cursor stay.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.ack_events(10).await.unwrap();
    s.maintain().await.unwrap();
    let seqs = |page: EventPage| match page {
        EventPage::Events { events, .. } => events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        gone => panic!("expected events, got {gone:?}"),
    };
    assert_eq!(
        seqs(s.events_page(3, 100).await.unwrap()),
        (4..=10).collect::<Vec<_>>()
    );
    assert!(matches!(
        s.events_page(2, 100).await.unwrap(),
        EventPage::Gone { oldest_seq: 4, .. }
    ));
    // Moving the cursor lets the history go up to it.
    assert_eq!(s.set_cursor("hook-a", 7).await.unwrap(), 7);
    assert_eq!(s.cursor("hook-a").await.unwrap(), 7);
    assert!(matches!(
        s.events_page(3, 100).await.unwrap(),
        EventPage::Gone { oldest_seq: 8, .. }
    ));
    let err = s.set_cursor("hook-a", 11).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    // Another gateway on the same namespace sees the same cursor.
    if kind.is_shared() {
        let other = f.reopen(|_| {}).await;
        assert_eq!(other.cursor("hook-a").await.unwrap(), 7);
    }
    // Dropping the consumer releases what it held.
    assert_eq!(s.retain_cursors(&["hook-b"]).await.unwrap(), 1);
    s.maintain().await.unwrap();
    assert!(matches!(
        s.events_page(7, 100).await.unwrap(),
        EventPage::Gone { oldest_seq: 11, .. }
    ));
    assert_eq!(
        s.cursor("hook-a").await.unwrap(),
        10,
        "a new consumer again"
    );
}

async fn history_ages_out_and_says_what_is_gone(kind: Kind) {
    let f = fixture_with(kind, |c| c.history_age = Duration::from_millis(300)).await;
    let s = &f.store;
    for i in 0..5 {
        s.mkdir(&p(&format!("/a{i}")), &ctx()).await.unwrap();
    }
    s.ack_events(4).await.unwrap();
    assert!(matches!(
        s.events_page(0, 10).await.unwrap(),
        EventPage::Events { ref events, .. } if events.len() == 5
    ));
    // Past the age, the maintenance pass drops the acknowledged ones, oldest first (they age one
    // after the other), never the fifth, unacknowledged one.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut oldest_seen = 1;
    loop {
        s.maintain().await.unwrap();
        match s.events_page(0, 10).await.unwrap() {
            EventPage::Gone {
                oldest_seq,
                last_seq,
            } => {
                assert_eq!(last_seq, 5);
                assert!(
                    (oldest_seen..=5).contains(&oldest_seq),
                    "the history only shrinks from its old end, never past the unacknowledged: {oldest_seq}"
                );
                oldest_seen = oldest_seq;
                if oldest_seq == 5 {
                    break;
                }
            }
            EventPage::Events { .. } => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events never aged out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.ack_events(5).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        s.maintain().await.unwrap();
        if let EventPage::Gone { oldest_seq, .. } = s.events_page(0, 10).await.unwrap() {
            if oldest_seq == 6 {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "event 5 never aged out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        s.events_page(5, 10).await.unwrap(),
        EventPage::Events {
            events: vec![],
            last_seq: 5
        },
        "an empty history is fine for a consumer that saw everything"
    );
}

async fn bad_input_gets_distinct_errors(kind: Kind) {
    let f = fixture_with(kind, |c| c.max_file_size = 1000).await;
    let s = &f.store;
    s.write_file(&p("/file"), b"x", &ctx()).await.unwrap();
    s.mkdir(&p("/dir"), &ctx()).await.unwrap();
    let err = s
        .write_file(&p("/huge"), &content(1, 1001), &ctx())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FileTooLarge);
    assert!(err.message().contains("max_file_size"));
    let mut w = s
        .open_write(&p("/grow"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    assert_eq!(
        w.set_len(1001).await.unwrap_err().kind(),
        ErrorKind::FileTooLarge
    );
    assert_eq!(
        w.write_at(999, b"xy").await.unwrap_err().kind(),
        ErrorKind::FileTooLarge
    );
    w.write_at(0, b"fine").await.unwrap();
    w.commit(CommitOptions::default()).await.unwrap();
    assert_eq!(
        s.stat(&p("/huge")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    assert_eq!(
        write_once(s, &p("/dir"), b"x").await.unwrap_err().kind(),
        ErrorKind::IsADirectory
    );
    assert!(s.stat(&p("/dir")).await.unwrap().is_dir());
    assert_eq!(
        s.open_write(&StorePath::root(), OpenOptions::REPLACE, &ctx())
            .await
            .err()
            .unwrap()
            .kind(),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        s.open_write(&p("/file"), OpenOptions::CREATE_NEW, &ctx())
            .await
            .err()
            .unwrap()
            .kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        s.open_write(&p("/missing"), OpenOptions::EXISTING, &ctx())
            .await
            .err()
            .unwrap()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.open_write(&p("/no/parent"), OpenOptions::REPLACE, &ctx())
            .await
            .err()
            .unwrap()
            .kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.open_write(&p("/file/child"), OpenOptions::REPLACE, &ctx())
            .await
            .err()
            .unwrap()
            .kind(),
        ErrorKind::NotADirectory
    );
    assert_eq!(
        s.open_read(&p("/dir")).await.err().unwrap().kind(),
        ErrorKind::IsADirectory
    );
    assert_eq!(
        s.mkdir(&StorePath::root(), &ctx())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        s.rmdir(&StorePath::root(), &ctx())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        s.read_to_vec(&p("/grow"), 2).await.unwrap_err().kind(),
        ErrorKind::FileTooLarge
    );
    // Paths the store never accepts.
    for bad in [
        "relative",
        "/..",
        "/a/../../b",
        "/nul\0byte",
        "/line\nbreak",
    ] {
        assert_eq!(
            StorePath::parse(bad).unwrap_err().kind(),
            ErrorKind::InvalidPath,
            "{bad:?}"
        );
    }
    assert_eq!(
        StorePath::from_bytes(b"/\xff").unwrap_err().kind(),
        ErrorKind::InvalidPath
    );
    assert_eq!(
        StorePath::parse(&format!("/{}", "n".repeat(256)))
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidPath
    );
    // A directory created where a session's file was meant to go wins over the session's commit.
    let mut w = s
        .open_write(&p("/later"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    w.write_at(0, b"data").await.unwrap();
    s.mkdir(&p("/later"), &ctx()).await.unwrap();
    let e = w.commit(CommitOptions::default()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::IsADirectory, "{e}");
    assert!(!e.message().contains("script"), "{e}");
    assert!(s.stat(&p("/later")).await.unwrap().is_dir());
}

async fn replaced_content_is_reclaimed(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    for round in 0..5u8 {
        s.write_file(&p("/over"), &content(round, 64 * 7), &ctx())
            .await
            .unwrap();
    }
    s.maintain().await.unwrap();
    let usage = s.usage().await.unwrap();
    assert_eq!(usage.referenced_chunks, 7);
    assert_eq!(usage.stored_chunks, 7);
    assert_eq!(s.verify().await.unwrap(), Default::default());
    // Appending shares the unchanged chunks with the previous version instead of copying them.
    let mut w = s
        .open_write(&p("/over"), OpenOptions::UPDATE, &ctx())
        .await
        .unwrap();
    w.append(b"more").await.unwrap();
    w.commit(CommitOptions::default()).await.unwrap();
    s.maintain().await.unwrap();
    assert_eq!(s.usage().await.unwrap().stored_chunks, 8);
    assert_eq!(s.verify().await.unwrap(), Default::default());
}

async fn dead_gateways_sessions_are_reclaimed(kind: Kind) {
    let f = fixture_with(kind, |c| c.orphan_timeout = Duration::from_millis(300)).await;
    let common::Fixture {
        store: s,
        config,
        redis: _redis,
        dir: _dir,
    } = f;
    s.write_file(&p("/stable"), &content(1, 64 * 4), &ctx())
        .await
        .unwrap();
    // A gateway that dies mid-upload and mid-read: its session and pin are never ended.
    let mut w = s
        .open_write(&p("/stable"), OpenOptions::UPDATE, &ctx())
        .await
        .unwrap();
    w.write_at(64 * 4, &content(2, 64 * 6)).await.unwrap();
    w.write_at(0, &content(3, 64 * 2)).await.unwrap();
    let reader = s.open_read(&p("/stable")).await.unwrap();
    // Let the session's chunk writes land, as they would have before a crash.
    assert_eq!(w.read_at(0, 10).await.unwrap()[..], content(3, 10)[..]);
    s.simulate_crash().await;
    drop((w, reader, s));
    // Another gateway on the same Redis, or the same gateway restarted on the embedded file (only
    // one process can hold it), reclaims them once the dead one's lease has run out.
    // (The dead store's aborted background tasks release the embedded file as they unwind.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let survivor = loop {
        match storage_backend::Store::open(config.clone()).await {
            Ok(store) => break store,
            Err(e)
                if std::time::Instant::now() < deadline && e.message().contains("already open") =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("reopen: {e}"),
        }
    };
    loop {
        survivor.maintain().await.unwrap();
        let usage = survivor.usage().await.unwrap();
        if usage.sessions == 0 && survivor.verify().await.unwrap() == Default::default() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not reclaimed: {usage:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        survivor.read_to_vec(&p("/stable"), u64::MAX).await.unwrap(),
        content(1, 64 * 4)
    );
    assert_eq!(
        all_events(&survivor).await.len(),
        1,
        "the dead session recorded nothing"
    );
}

async fn set_mtime_and_set_size(kind: Kind) {
    let f = fixture(kind).await;
    let s = &f.store;
    s.write_file(&p("/m"), b"hello", &ctx()).await.unwrap();
    s.mkdir(&p("/dm"), &ctx()).await.unwrap();
    let when = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    s.set_mtime(&p("/m"), when, &ctx()).await.unwrap();
    s.set_mtime(&p("/dm"), when, &ctx()).await.unwrap();
    assert_eq!(s.stat(&p("/m")).await.unwrap().mtime, when);
    assert_eq!(s.stat(&p("/dm")).await.unwrap().mtime, when);
    let ev = all_events(s).await;
    assert_eq!(ev[ev.len() - 2].kind, EventKind::FileAttributes);
    // Commit with an explicit mtime (scp -p, sftp -p).
    let mut w = s
        .open_write(&p("/m"), OpenOptions::REPLACE, &ctx())
        .await
        .unwrap();
    w.write_at(0, b"x").await.unwrap();
    w.commit(CommitOptions {
        complete: true,
        mtime: Some(when),
    })
    .await
    .unwrap();
    assert_eq!(s.stat(&p("/m")).await.unwrap().mtime, when);
    let recent = SystemTime::now() - Duration::from_secs(60);
    s.set_size(&p("/m"), 3, &ctx()).await.unwrap();
    assert!(s.stat(&p("/m")).await.unwrap().mtime > recent);
    assert_eq!(
        s.set_size(&p("/nope"), 3, &ctx()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        s.set_mtime(&p("/nope"), when, &ctx())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}
