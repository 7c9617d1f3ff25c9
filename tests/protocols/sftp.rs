//! The SFTP and legacy SCP front-end, driven by OpenSSH's own `sftp`, `scp` and curl, and by the
//! russh-sftp client for what the batch client cannot do (offset writes, sparse files, setstat,
//! open flags, a connection that vanishes).

use russh_sftp::client::SftpSession;

use crate::common::{
    client_key, content, program, sftp_on, sftp_session, sha256_hex, ssh_login, start, until, Kind,
    PASSWORD,
};
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use storage_backend::{EventKind, StorePath};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

fn status(e: russh_sftp::client::error::Error) -> StatusCode {
    match e {
        russh_sftp::client::error::Error::Status(s) => s.status_code,
        other => panic!("expected a status, got {other:?}"),
    }
}

on_both_backends!(
    openssh_sftp_batch,
    random_access_and_open_flags,
    vanished_client_then_reput
);

async fn openssh_sftp_batch(kind: Kind) {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "alice_key");
    let t = start(kind, |c| {
        sftp_on(c);
        c.users[0].authorized_keys = vec![public];
    })
    .await;
    let local = t.temp_path("up.bin");
    let data = content(7, 5_000_000);
    std::fs::write(&local, &data).unwrap();
    let back = t.temp_path("back.bin");
    let (ok, out) = t.sftp_batch(
        "alice",
        &key,
        &format!(
            "pwd\nmkdir in\ncd in\nput {} a.bin\nls -l\nrename a.bin b.bin\nget b.bin {}\n-rename nope x\nrm b.bin\ncd ..\nrmdir in\nls\n",
            local.display(),
            back.display()
        ),
    );
    assert!(ok, "{out}");
    assert!(out.contains("Remote working directory: /"), "{out}");
    assert!(
        out.contains("-rw-r--r--") && out.contains("5000000") && out.contains("a.bin"),
        "ls -l: {out}"
    );
    assert!(std::fs::read(&back).unwrap() == data);
    let events = t.events().await;
    let created = events
        .iter()
        .find(|e| e.kind == EventKind::FileCreated)
        .unwrap();
    assert_eq!(created.path, "/home/alice/in/a.bin");
    assert_eq!(created.protocol, "sftp");
    assert_eq!(created.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    assert!(events
        .iter()
        .any(|e| e.kind == EventKind::FileRenamed && e.path == "/home/alice/in/b.bin"));
    // A refused command fails the batch with the server's message.
    let (ok, out) = t.sftp_batch("alice", &key, "get /nope/x.bin /dev/null\n");
    assert!(!ok, "{out}");
    assert!(
        out.contains("No such file") || out.contains("not found") || out.contains("no such file"),
        "{out}"
    );
    t.stop().await;
}

async fn random_access_and_open_flags(kind: Kind) {
    let t = start(kind, sftp_on).await;
    let ssh = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let sftp = sftp_session(&ssh).await;
    assert_eq!(sftp.canonicalize(".").await.unwrap(), "/");
    // Out-of-order writes and a hole.
    let mut f = sftp.create("sparse.bin").await.unwrap();
    f.seek(std::io::SeekFrom::Start(200_000)).await.unwrap();
    f.write_all(b"tail").await.unwrap();
    f.seek(std::io::SeekFrom::Start(10)).await.unwrap();
    f.write_all(b"head").await.unwrap();
    f.shutdown().await.unwrap();
    let got = sftp.read("sparse.bin").await.unwrap();
    let mut want = vec![0u8; 200_004];
    want[10..14].copy_from_slice(b"head");
    want[200_000..].copy_from_slice(b"tail");
    assert!(got == want);
    // setstat: truncate and extend; mtime.
    let attrs = FileAttributes {
        size: Some(12),
        ..Default::default()
    };
    sftp.set_metadata("sparse.bin", attrs).await.unwrap();
    assert_eq!(sftp.read("sparse.bin").await.unwrap(), &want[..12]);
    let attrs = FileAttributes {
        mtime: Some(1_000_000_000),
        atime: Some(1_000_000_000),
        ..Default::default()
    };
    sftp.set_metadata("sparse.bin", attrs).await.unwrap();
    assert_eq!(
        sftp.metadata("sparse.bin").await.unwrap().mtime,
        Some(1_000_000_000)
    );
    // CREAT|EXCL on an existing file fails; APPEND appends; WRITE without CREAT needs the file.
    let e = sftp
        .open_with_flags(
            "sparse.bin",
            OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
        )
        .await
        .err()
        .unwrap();
    assert_eq!(status(e), StatusCode::Failure);
    let mut f = sftp
        .open_with_flags("sparse.bin", OpenFlags::WRITE | OpenFlags::APPEND)
        .await
        .unwrap();
    f.write_all(b"+more").await.unwrap();
    f.shutdown().await.unwrap();
    assert_eq!(&sftp.read("sparse.bin").await.unwrap()[12..], b"+more");
    let e = sftp
        .open_with_flags("missing.bin", OpenFlags::WRITE)
        .await
        .err()
        .unwrap();
    assert_eq!(status(e), StatusCode::NoSuchFile);
    // Rename: v3 refuses an existing target; posix-rename replaces it.
    sftp.write_all_new("other.bin", b"other").await;
    let e = sftp.rename("sparse.bin", "other.bin").await.unwrap_err();
    assert_eq!(status(e), StatusCode::Failure);
    // Errors carry the store's message; paths never leave the home.
    let e = sftp.read("../../etc/passwd").await.unwrap_err();
    assert_eq!(status(e), StatusCode::NoSuchFile);
    let e = sftp.remove_dir("nope").await.unwrap_err();
    assert_eq!(status(e), StatusCode::NoSuchFile);
    let names: Vec<String> = sftp
        .read_dir("/")
        .await
        .unwrap()
        .map(|e| e.file_name())
        .collect();
    assert!(
        names.contains(&"sparse.bin".to_string()) && names.contains(&"other.bin".to_string()),
        "{names:?}"
    );
    let stats = sftp.fs_info("/").await.unwrap();
    assert!(stats.is_some());
    t.stop().await;
}

trait WriteNew {
    async fn write_all_new(&self, path: &str, data: &[u8]);
}

impl WriteNew for SftpSession {
    async fn write_all_new(&self, path: &str, data: &[u8]) {
        let mut f = self.create(path).await.unwrap();
        f.write_all(data).await.unwrap();
        f.shutdown().await.unwrap();
    }
}

async fn vanished_client_then_reput(kind: Kind) {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "alice_key");
    let t = start(kind, |c| {
        sftp_on(c);
        c.users[0].authorized_keys = vec![public];
    })
    .await;
    let data = content(3, 3_000_000);
    {
        let ssh = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
        let sftp = sftp_session(&ssh).await;
        let mut f = sftp.create("big.iso").await.unwrap();
        f.write_all(&data[..1_000_000]).await.unwrap();
        f.flush().await.unwrap();
        // The server answers one request at a time, in order: once this answer is back, the
        // writes before it have been handled.
        sftp.metadata("/").await.unwrap();
        // Vanish: never close the handle (the client's File would send CLOSE when dropped).
        std::mem::forget(f);
        drop(sftp);
        ssh.disconnect(russh::Disconnect::ByApplication, "bye", "")
            .await
            .ok();
    }
    let path = StorePath::parse("/home/alice/big.iso").unwrap();
    let meta = until(
        "the cut-off upload was not kept",
        std::time::Duration::from_secs(20),
        || t.store().stat(&path),
    )
    .await;
    assert!(!meta.complete);
    assert!(t
        .events()
        .await
        .iter()
        .any(|e| e.kind == EventKind::FileIncomplete));
    // OpenSSH's reput continues from the size on the server.
    let local = t.temp_path("big.iso");
    std::fs::write(&local, &data).unwrap();
    let (ok, out) = t.sftp_batch(
        "alice",
        &key,
        &format!("reput {} big.iso\n", local.display()),
    );
    assert!(ok, "{out}");
    assert!(t.store_bytes("/home/alice/big.iso").await == data);
    let meta = t.store().stat(&path).await.unwrap();
    assert!(meta.complete);
    assert_eq!(meta.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_keys_and_bans() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "alice_key");
    let (other_key, _) = client_key(keys.path(), "stranger_key");
    let t = start(Kind::Embedded, |c| {
        sftp_on(c);
        c.users[0].authorized_keys = vec![format!("from=\"127.0.0.1\" {public}")];
        c.limits.login_failures_per_ip = 3;
    })
    .await;
    let (ok, out) = t.sftp_batch("alice", &key, "pwd\n");
    assert!(ok, "{out}");
    let (ok, _) = t.sftp_batch("alice", &other_key, "pwd\n");
    assert!(!ok, "a key not in authorized_keys logged in");
    assert!(ssh_login(t.sftp_addr(), "alice", PASSWORD).await.is_ok());
    // Password failures count towards the ban, across protocols; then even the right password fails.
    for _ in 0..3 {
        assert!(ssh_login(t.sftp_addr(), "alice", "wrong").await.is_err());
    }
    assert!(ssh_login(t.sftp_addr(), "alice", PASSWORD).await.is_err());
    assert!(
        suppaftp::tokio::AsyncFtpStream::connect(t.gw().ftp_addr.unwrap())
            .await
            .is_err()
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shells_and_commands_are_refused() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "alice_key");
    let t = start(Kind::Embedded, |c| {
        sftp_on(c);
        c.users[0].authorized_keys = vec![public];
    })
    .await;
    let out = std::process::Command::new(program("ssh"))
        .args(["-p", &t.sftp_addr().port().to_string()])
        .args(t.ssh_options(&key))
        .args(["alice@127.0.0.1", "cat /etc/passwd"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("root:"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use sftp"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(program("ssh"))
        .args(["-p", &t.sftp_addr().port().to_string()])
        .args(t.ssh_options(&key))
        .args([
            "-N",
            "-L",
            "0:127.0.0.1:22",
            "-o",
            "ExitOnForwardFailure=yes",
            "alice@127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "port forwarding was allowed");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_scp_recursive_with_times() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "alice_key");
    let t = start(Kind::Redis, |c| {
        sftp_on(c);
        c.users[0].authorized_keys = vec![public];
    })
    .await;
    let tree = t.temp_path("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let big = content(2, 1_500_000);
    std::fs::write(tree.join("big.bin"), &big).unwrap();
    std::fs::write(tree.join("sub/small.txt"), b"small").unwrap();
    let scp = |args: Vec<String>| {
        let out = std::process::Command::new(program("scp"))
            .args(["-O", "-P", &t.sftp_addr().port().to_string()])
            .args(t.ssh_options(&key))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, err) = scp(vec![
        "-r".into(),
        "-p".into(),
        tree.display().to_string(),
        "alice@127.0.0.1:/".into(),
    ]);
    assert!(ok, "scp -O -r -p upload: {err}");
    assert!(t.store_bytes("/home/alice/tree/big.bin").await == big);
    assert_eq!(
        t.store_bytes("/home/alice/tree/sub/small.txt").await,
        b"small"
    );
    let down = t.temp_path("down");
    let (ok, err) = scp(vec![
        "-r".into(),
        "-p".into(),
        "alice@127.0.0.1:/tree".into(),
        down.display().to_string(),
    ]);
    assert!(ok, "scp -O -r -p download: {err}");
    assert!(std::fs::read(down.join("big.bin")).unwrap() == big);
    assert_eq!(std::fs::read(down.join("sub/small.txt")).unwrap(), b"small");
    let (ok, err) = scp(vec![
        "alice@127.0.0.1:/nope.txt".into(),
        down.display().to_string(),
    ]);
    assert!(!ok);
    assert!(err.contains("nope.txt"), "{err}");
    // Modern scp speaks SFTP.
    let (ok, err) = {
        let out = std::process::Command::new(program("scp"))
            .args(["-P", &t.sftp_addr().port().to_string()])
            .args(t.ssh_options(&key))
            .arg(tree.join("big.bin"))
            .arg("alice@127.0.0.1:/copy.bin")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(ok, "scp (SFTP mode): {err}");
    assert!(t.store_bytes("/home/alice/copy.bin").await == big);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_protocol_and_curl() {
    let t = start(Kind::Redis, sftp_on).await;
    // Written by FTP, read by SFTP; renamed by SFTP, seen by FTP.
    let mut ftp = suppaftp::tokio::AsyncFtpStream::connect(t.ftp_addr())
        .await
        .unwrap();
    ftp.login("alice", PASSWORD).await.unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .await
        .unwrap();
    let data = content(8, 700_000);
    ftp.put_file("from-ftp.bin", &mut &data[..]).await.unwrap();
    let ssh = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let sftp = sftp_session(&ssh).await;
    assert!(sftp.read("from-ftp.bin").await.unwrap() == data);
    sftp.rename("from-ftp.bin", "renamed.bin").await.unwrap();
    assert_eq!(ftp.nlst(None).await.unwrap(), ["renamed.bin"]);
    // curl's sftp:// (libssh2), password login.
    let a = t.sftp_addr();
    let out = std::process::Command::new(program("curl"))
        .args([
            "-sS",
            "--fail",
            "--insecure",
            "-u",
            &format!("alice:{PASSWORD}"),
        ])
        .arg(format!("sftp://127.0.0.1:{}/renamed.bin", a.port()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl sftp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data);
    let mut read_back = Vec::new();
    sftp.open("renamed.bin")
        .await
        .unwrap()
        .read_to_end(&mut read_back)
        .await
        .unwrap();
    assert!(read_back == data);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_download_does_not_stall() {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "alice_key");
    let t = start(Kind::Redis, |c| {
        sftp_on(c);
        c.users[0].authorized_keys = vec![public];
        c.storage.chunk_size = 512 << 10;
    })
    .await;
    // 1 GiB written straight into the store (the upload path is tested elsewhere).
    let ctx = storage_backend::ChangeContext::new("t", "test", "local");
    for dir in ["/home", "/home/alice"] {
        t.store()
            .mkdir(&StorePath::parse(dir).unwrap(), &ctx)
            .await
            .unwrap();
    }
    let path = StorePath::parse("/home/alice/huge.bin").unwrap();
    let mut w = t
        .store()
        .open_write(&path, storage_backend::OpenOptions::REPLACE, &ctx)
        .await
        .unwrap();
    let piece = content(1, 1 << 20);
    for _ in 0..1024 {
        w.append(&piece).await.unwrap();
    }
    let info = w
        .commit(storage_backend::CommitOptions::default())
        .await
        .unwrap();
    let local = t.temp_path("huge.bin");
    let (ok, out) = t.sftp_batch(
        "alice",
        &key,
        &format!("get huge.bin {}\n", local.display()),
    );
    assert!(ok, "{out}");
    assert_eq!(std::fs::metadata(&local).unwrap().len(), 1 << 30);
    let mut f = tokio::fs::File::open(&local).await.unwrap();
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        sha2::Digest::update(&mut hasher, &buf[..n]);
    }
    assert_eq!(
        Some(hex::encode(sha2::Digest::finalize(hasher))),
        info.sha256
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_handles_are_capped_per_session() {
    let t = start(Kind::Embedded, sftp_on).await;
    let ssh = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let sftp = sftp_session(&ssh).await;
    let mut f = sftp.create("f.txt").await.unwrap();
    f.write_all(b"hello").await.unwrap();
    f.shutdown().await.unwrap();
    // A raw session ignores the advertised limits@openssh.com (as a hostile client would), so the
    // server's own cap is what stops it.
    let channel = ssh.channel_open_session().await.unwrap();
    channel.request_subsystem(true, "sftp").await.unwrap();
    let raw = russh_sftp::client::RawSftpSession::new(channel.into_stream());
    raw.init().await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..filegate::sftp::MAX_HANDLES {
        let h = raw
            .open("f.txt", OpenFlags::READ, FileAttributes::default())
            .await
            .unwrap();
        handles.push(h.handle);
    }
    match raw
        .open("f.txt", OpenFlags::READ, FileAttributes::default())
        .await
    {
        Err(russh_sftp::client::error::Error::Status(s)) => {
            assert_eq!(s.status_code, StatusCode::Failure);
            assert!(
                s.error_message.contains("too many open files"),
                "{}",
                s.error_message
            );
        }
        other => panic!("one handle too many: {other:?}"),
    }
    // Closing handles makes room again; the session itself was never in danger.
    for h in handles.drain(..10) {
        raw.close(h).await.unwrap();
    }
    let h = raw
        .open("f.txt", OpenFlags::READ, FileAttributes::default())
        .await
        .unwrap();
    let data = raw.read(h.handle, 0, 100).await.unwrap();
    assert_eq!(data.data, b"hello");
    t.stop().await;
}

/// A write-only account (a drop box) cannot read an existing file by opening it READ|WRITE and
/// reading through the write handle (issue 18, item 4); it can still write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_only_user_cannot_read_through_a_read_write_open() {
    use filegate::config::Permission;
    let t = start(Kind::Embedded, |c| {
        sftp_on(c);
        c.users.push(crate::common::user(
            "dropbox",
            "/home/alice",
            &[Permission::List, Permission::Write],
        ));
    })
    .await;
    let alice = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let sftp = sftp_session(&alice).await;
    let mut f = sftp.create("secret.txt").await.unwrap();
    f.write_all(b"payroll").await.unwrap();
    f.shutdown().await.unwrap();

    let ssh = ssh_login(t.sftp_addr(), "dropbox", PASSWORD).await.unwrap();
    let channel = ssh.channel_open_session().await.unwrap();
    channel.request_subsystem(true, "sftp").await.unwrap();
    let raw = russh_sftp::client::RawSftpSession::new(channel.into_stream());
    raw.init().await.unwrap();
    for flags in [
        OpenFlags::READ | OpenFlags::WRITE,
        OpenFlags::READ | OpenFlags::APPEND,
        OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
    ] {
        match raw
            .open("secret.txt", flags, FileAttributes::default())
            .await
        {
            Err(russh_sftp::client::error::Error::Status(s)) => {
                assert_eq!(s.status_code, StatusCode::PermissionDenied, "{flags:?}");
                assert!(s.error_message.contains("read"), "{}", s.error_message);
            }
            Ok(h) => {
                let got = raw.read(h.handle, 0, 100).await;
                panic!("{flags:?} opened for a write-only user; read gave {got:?}");
            }
            Err(other) => panic!("{flags:?}: {other:?}"),
        }
    }
    // Writing alone is what the account is for.
    let h = raw
        .open(
            "drop.txt",
            OpenFlags::WRITE | OpenFlags::CREATE,
            FileAttributes::default(),
        )
        .await
        .unwrap();
    raw.write(h.handle.clone(), 0, b"in".to_vec())
        .await
        .unwrap();
    raw.close(h.handle).await.unwrap();
    assert_eq!(sftp.read("drop.txt").await.unwrap(), b"in");
    assert_eq!(sftp.read("secret.txt").await.unwrap(), b"payroll");
    t.stop().await;
}

/// One byte written at the end of each chunk would store a chunk of zeros per byte sent: those
/// never-written bytes count towards `storage.max_hole_size` like any hole (issue 18, item 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_per_chunk_cannot_store_chunks_of_zeros() {
    let t = start(Kind::Embedded, |c| {
        sftp_on(c);
        c.storage.max_hole_size = 1 << 20;
    })
    .await;
    let cs = t.store().chunk_size();
    let ssh = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let channel = ssh.channel_open_session().await.unwrap();
    channel.request_subsystem(true, "sftp").await.unwrap();
    let raw = russh_sftp::client::RawSftpSession::new(channel.into_stream());
    raw.init().await.unwrap();
    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
    let h = raw
        .open("zeros.bin", flags, FileAttributes::default())
        .await
        .unwrap();
    let mut refused_at = None;
    for k in 0..200u64 {
        match raw
            .write(h.handle.clone(), k * cs + cs - 1, b"x".to_vec())
            .await
        {
            Ok(_) => {}
            Err(russh_sftp::client::error::Error::Status(s)) => {
                assert_eq!(s.status_code, StatusCode::Failure);
                assert!(
                    s.error_message.contains("never written"),
                    "{}",
                    s.error_message
                );
                refused_at = Some(k);
                break;
            }
            Err(other) => panic!("write {k}: {other:?}"),
        }
    }
    let k = refused_at.expect("200 one-byte writes stored 200 chunks of zeros");
    // 1 MiB of never-written bytes are allowed, not more.
    assert!(k * cs <= (1 << 20) + cs, "refused only at chunk {k}");
    raw.close(h.handle).await.unwrap();

    // A client that fills every chunk, even out of order, is not limited by it.
    let h = raw
        .open("full.bin", flags, FileAttributes::default())
        .await
        .unwrap();
    let data = content(3, (40 * cs) as usize);
    for k in 0..40u64 {
        let piece = |from: u64, to: u64| data[from as usize..to as usize].to_vec();
        raw.write(
            h.handle.clone(),
            k * cs + cs - 1,
            piece(k * cs + cs - 1, k * cs + cs),
        )
        .await
        .unwrap();
        raw.write(h.handle.clone(), k * cs, piece(k * cs, k * cs + cs - 1))
            .await
            .unwrap();
    }
    raw.close(h.handle).await.unwrap();
    let sftp = sftp_session(&ssh).await;
    assert!(sftp.read("full.bin").await.unwrap() == data);
    t.stop().await;
}

/// A client that keeps sending while its SFTP channel is busy (here: a user throttled to 6 KiB/s)
/// gets a few MiB queued in the gateway, then waits on TCP; it cannot make the gateway hold its
/// stream in memory (issue 18, item 5: ~132 MiB per channel before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_channel_queues_a_bounded_amount() {
    let t = start(Kind::Embedded, |c| {
        sftp_on(c);
        let alice = c.users.iter_mut().find(|u| u.name == "alice").unwrap();
        alice.bandwidth_up = Some(6 << 10);
    })
    .await;
    let ssh = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let mut channel = ssh.channel_open_session().await.unwrap();
    channel.request_subsystem(true, "sftp").await.unwrap();
    fn packet(body: &[u8]) -> Vec<u8> {
        let mut p = (body.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(body);
        p
    }
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s);
    }
    async fn reply(channel: &mut russh::Channel<russh::client::Msg>) -> Vec<u8> {
        loop {
            match channel.wait().await {
                Some(russh::ChannelMsg::Data { data }) => return data.to_vec(),
                Some(russh::ChannelMsg::Success) => continue,
                other => panic!("{other:?}"),
            }
        }
    }
    // SSH_FXP_INIT, then SSH_FXP_OPEN (WRITE|CREAT|TRUNC) for the handle.
    channel.data(&packet(&[1, 0, 0, 0, 3])[..]).await.unwrap();
    assert_eq!(reply(&mut channel).await[4], 2, "VERSION");
    let mut open = vec![3, 0, 0, 0, 1];
    string(&mut open, b"flood.bin");
    open.extend_from_slice(&0x1au32.to_be_bytes());
    open.extend_from_slice(&0u32.to_be_bytes());
    channel.data(&packet(&open)[..]).await.unwrap();
    let handle_reply = reply(&mut channel).await;
    assert_eq!(handle_reply[4], 102, "HANDLE: {handle_reply:?}");
    let len = u32::from_be_bytes(handle_reply[9..13].try_into().unwrap()) as usize;
    let handle = handle_reply[13..13 + len].to_vec();
    // SSH_FXP_WRITEs that fill one SSH packet (32 KiB) each, never waiting for their replies,
    // until a send has waited 3 s (the gateway stopped reading) or 96 MiB went out.
    let piece = vec![7u8; (32 << 10) - 25 - handle.len()];
    let mut sent = 0u64;
    for id in 2u32.. {
        let mut write = vec![6];
        write.extend_from_slice(&id.to_be_bytes());
        string(&mut write, &handle);
        write.extend_from_slice(&sent.to_be_bytes());
        string(&mut write, &piece);
        let bytes = packet(&write);
        let send = channel.data(&bytes[..]);
        match tokio::time::timeout(std::time::Duration::from_secs(3), send).await {
            Ok(r) => r.unwrap(),
            Err(_) => break,
        }
        sent += piece.len() as u64;
        if sent >= 96 << 20 {
            break;
        }
    }
    // What the gateway holds (2 MiB queued, a 4 MiB pipe) plus the sockets' buffers and the
    // client's own queue: 8-17 MiB measured here; 34-42 MiB with russh's queue of 4,096 messages
    // before (the rest of its 128 MiB was cut short by the window adjustments the blocked loop
    // no longer sent).
    eprintln!("a busy channel took {} MiB", sent >> 20);
    assert!(
        sent < 28 << 20,
        "the gateway took {} MiB of a busy channel",
        sent >> 20
    );
    drop(channel);
    // The throttled session would take hours to work through what it holds.
    t.stop_now().await;
}

/// The algorithms the server offers, from its KEXINIT as a raw client sees it: host key algorithms
/// and client-to-server compression.
async fn offered(addr: std::net::SocketAddr) -> (Vec<String>, Vec<String>) {
    use tokio::io::AsyncBufReadExt;
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut s = tokio::io::BufReader::new(s);
    s.get_mut()
        .write_all(b"SSH-2.0-probe_1.0\r\n")
        .await
        .unwrap();
    let mut version = String::new();
    s.read_line(&mut version).await.unwrap();
    assert!(version.starts_with("SSH-2.0-"), "{version:?}");
    let len = s.read_u32().await.unwrap() as usize;
    let mut packet = vec![0u8; len];
    s.read_exact(&mut packet).await.unwrap();
    assert_eq!(packet[1], 20, "SSH_MSG_KEXINIT");
    let mut at = 2 + 16; // padding length, message number, cookie
    let mut lists = Vec::new();
    for _ in 0..8 {
        let n = u32::from_be_bytes(packet[at..at + 4].try_into().unwrap()) as usize;
        let text = String::from_utf8(packet[at + 4..at + 4 + n].to_vec()).unwrap();
        lists.push(text.split(',').map(str::to_string).collect::<Vec<_>>());
        at += 4 + n;
    }
    (lists[1].clone(), lists[6].clone())
}

/// No `ssh-rsa` (SHA-1 signatures) and no pre-authentication `zlib` by default; `ssh-rsa` when
/// `sftp.allow_ssh_rsa_sha1` asks for it (issue 18, item 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha1_rsa_and_preauth_zlib_are_not_offered_by_default() {
    let t = start(Kind::Embedded, |c| {
        sftp_on(c);
        c.sftp
            .host_keys
            .push(c.server.data_dir.join("ssh_host_rsa_key"));
    })
    .await;
    let (keys, compression) = offered(t.sftp_addr()).await;
    assert!(keys.iter().any(|k| k == "rsa-sha2-512"), "{keys:?}");
    assert!(!keys.iter().any(|k| k == "ssh-rsa"), "{keys:?}");
    assert!(!compression.iter().any(|c| c == "zlib"), "{compression:?}");
    assert!(compression.iter().any(|c| c == "none"), "{compression:?}");
    t.stop().await;
    let t = start(Kind::Embedded, |c| {
        sftp_on(c);
        c.sftp
            .host_keys
            .push(c.server.data_dir.join("ssh_host_rsa_key"));
        c.sftp.allow_ssh_rsa_sha1 = true;
    })
    .await;
    let (keys, _) = offered(t.sftp_addr()).await;
    assert!(keys.iter().any(|k| k == "ssh-rsa"), "{keys:?}");
    t.stop().await;
}

/// One connection runs at most `MAX_CHANNELS` channels at once, SFTP sessions included: a channel
/// that started the subsystem still counts until it is closed (issue 18, item 5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_sessions_count_towards_the_channel_cap() {
    let t = start(Kind::Embedded, sftp_on).await;
    let ssh = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let mut sessions = Vec::new();
    for _ in 0..filegate::sftp::MAX_CHANNELS - 1 {
        sessions.push(sftp_session(&ssh).await);
    }
    let idle = ssh.channel_open_session().await.unwrap();
    // One more channel is refused; the sessions that run are unharmed.
    assert!(
        ssh.channel_open_session().await.is_err(),
        "a channel past the cap was opened"
    );
    sessions[0].create("ok.txt").await.unwrap();
    // Closing one makes room for another.
    idle.close().await.unwrap();
    let again = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match ssh.channel_open_session().await {
                Ok(ch) => return ch,
                // The close may still be on its way to the server.
                Err(_) => tokio::task::yield_now().await,
            }
        }
    })
    .await
    .expect("a channel once one was closed");
    drop(again);
    t.stop().await;
}
