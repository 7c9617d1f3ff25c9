//! The FTP/FTPS front-end driven by real clients: an FTP client crate (suppaftp) for the command
//! matrix, curl and lftp for passive transfers and resume, on both storage backends.

use std::time::Duration;

use crate::common::{client, content, sha256_hex, start, until, Kind, PASSWORD};
use filegate::config::FtpType;
use storage_backend::EventKind;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn connect(addr: std::net::SocketAddr, user: &str) -> AsyncFtpStream {
    let mut ftp = AsyncFtpStream::connect(addr).await.expect("connect");
    ftp.login(user, PASSWORD).await.expect("login");
    ftp.transfer_type(FileType::Binary).await.unwrap();
    ftp.set_mode(Mode::ExtendedPassive);
    ftp
}

/// The reply code of a refused command.
fn code<T: std::fmt::Debug>(r: Result<T, FtpError>) -> u32 {
    refusal(r).0
}

/// A refusal's reply code and text.
fn refusal<T: std::fmt::Debug>(r: Result<T, FtpError>) -> (u32, String) {
    match r {
        Err(FtpError::UnexpectedResponse(resp)) => (
            resp.status.code(),
            String::from_utf8_lossy(&resp.body).trim_end().to_string(),
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The reply code of a refused download. libunftp opens the data connection (150) before it asks
/// the store, so the refusal may come only at the end of the transfer.
async fn retr_code(ftp: &mut AsyncFtpStream, name: &str) -> u32 {
    match ftp.retr_as_stream(name).await {
        Err(e) => code::<()>(Err(e)),
        Ok(mut stream) => {
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink).await;
            assert!(sink.is_empty(), "RETR {name} sent {} bytes", sink.len());
            code(stream.finish().await)
        }
    }
}

async fn put(ftp: &mut AsyncFtpStream, name: &str, data: &[u8]) {
    ftp.put_file(name, &mut &data[..])
        .await
        .unwrap_or_else(|e| panic!("STOR {name}: {e}"));
}

async fn get(ftp: &mut AsyncFtpStream, name: &str) -> Vec<u8> {
    let mut stream = ftp
        .retr_as_stream(name)
        .await
        .unwrap_or_else(|e| panic!("RETR {name}: {e}"));
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    stream.finish().await.unwrap();
    out
}

on_both_backends!(
    command_matrix,
    round_trips_are_byte_exact,
    cut_off_upload_is_kept_and_resumed,
    scheduler_job_with_temp_name
);

async fn command_matrix(kind: Kind) {
    let t = start(kind, |_| {}).await;
    let mut ftp = connect(t.ftp_addr(), "alice").await;
    assert_eq!(ftp.pwd().await.unwrap(), "/");
    ftp.mkdir("in").await.unwrap();
    ftp.cwd("in").await.unwrap();
    assert_eq!(ftp.pwd().await.unwrap(), "/in");
    let data = content(1, 200_000);
    put(&mut ftp, "a.bin", &data).await;
    assert_eq!(ftp.size("a.bin").await.unwrap(), 200_000);
    let mdtm = ftp.mdtm("a.bin").await.unwrap();
    assert!(mdtm.and_utc().timestamp() > 1_600_000_000);
    assert!(ftp
        .list(None)
        .await
        .unwrap()
        .iter()
        .any(|l| l.ends_with(" a.bin") && l.contains("200000")));
    assert_eq!(ftp.nlst(None).await.unwrap(), ["a.bin"]);
    let mlsd = ftp.mlsd(None).await.unwrap();
    assert!(
        mlsd.iter()
            .any(|l| l.contains("type=file") && l.contains("size=200000") && l.ends_with("a.bin")),
        "{mlsd:?}"
    );
    assert_eq!(get(&mut ftp, "a.bin").await, data);
    // RETR after REST starts at the offset.
    ftp.resume_transfer(150_000).await.unwrap();
    assert_eq!(get(&mut ftp, "a.bin").await, data[150_000..]);
    // APPE appends.
    ftp.append_file("a.bin", &mut &b"tail"[..]).await.unwrap();
    assert_eq!(ftp.size("a.bin").await.unwrap(), 200_004);
    // RNFR/RNTO, into another directory too.
    ftp.rename("a.bin", "b.bin").await.unwrap();
    ftp.cdup().await.unwrap();
    assert_eq!(ftp.pwd().await.unwrap(), "/");
    ftp.rename("in/b.bin", "top.bin").await.unwrap();
    assert_eq!(get(&mut ftp, "/top.bin").await.len(), 200_004);
    // Failures get the proper codes.
    assert_eq!(code(ftp.size("nope").await), 550);
    assert_eq!(code(ftp.cwd("nope").await), 550);
    assert_eq!(code(ftp.cwd("top.bin").await), 550);
    assert_eq!(retr_code(&mut ftp, "nope").await, 550);
    assert_eq!(code(ftp.mkdir("in").await), 550);
    put(&mut ftp, "in/keep", b"x").await;
    assert_eq!(code(ftp.rmdir("in").await), 550);
    assert_eq!(code(ftp.rm("in").await), 550);
    ftp.rm("in/keep").await.unwrap();
    ftp.rmdir("in").await.unwrap();
    ftp.rm("top.bin").await.unwrap();
    assert!(ftp.nlst(None).await.unwrap().is_empty());
    let feat = ftp.feat().await.unwrap();
    for f in ["SIZE", "MDTM", "MLST", "EPSV", "UTF8", "REST"] {
        assert!(
            feat.keys().any(|k| k.starts_with(f)),
            "FEAT lacks {f}: {feat:?}"
        );
    }
    ftp.noop().await.unwrap();
    ftp.transfer_type(FileType::Ascii(suppaftp::types::FormatControl::NonPrint))
        .await
        .unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    ftp.quit().await.unwrap();

    let events = t.events().await;
    let kinds: Vec<(EventKind, &str)> = events.iter().map(|e| (e.kind, e.path.as_str())).collect();
    assert!(
        kinds.contains(&(EventKind::DirCreated, "/home/alice/in")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(EventKind::FileCreated, "/home/alice/in/a.bin")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(EventKind::FileModified, "/home/alice/in/a.bin")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(EventKind::FileDeleted, "/home/alice/top.bin")),
        "{kinds:?}"
    );
    assert!(events
        .iter()
        .all(|e| e.user != "alice" || e.protocol == "ftp"));
    let created = events
        .iter()
        .find(|e| e.kind == EventKind::FileCreated)
        .unwrap();
    assert_eq!(created.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    t.stop().await;
}

async fn round_trips_are_byte_exact(kind: Kind) {
    let t = start(kind, |_| {}).await;
    let cs = t.config.storage.chunk_size as usize;
    let mut ftp = connect(t.ftp_addr(), "alice").await;
    for (i, len) in [0, 1, cs - 1, cs, cs + 1, 100 << 20]
        .into_iter()
        .enumerate()
    {
        let data = content(i as u8, len);
        let name = format!("f{len}");
        put(&mut ftp, &name, &data).await;
        let back = get(&mut ftp, &name).await;
        assert!(back == data, "{name}: {} bytes came back", back.len());
        let meta = t
            .store()
            .stat(&storage_backend::StorePath::parse(&format!("/home/alice/{name}")).unwrap())
            .await
            .unwrap();
        assert_eq!(meta.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
        assert!(meta.complete);
    }
    t.stop().await;
}

async fn cut_off_upload_is_kept_and_resumed(kind: Kind) {
    let t = start(kind, |_| {}).await;
    let data = content(5, 32 << 20);
    {
        let mut ftp = connect(t.ftp_addr(), "alice").await;
        let mut stream = ftp.put_with_stream("big.iso").await.unwrap();
        // More than the kernel's socket buffers hold on both sides: this write can only complete once
        // the gateway is reading the upload.
        stream.write_all(&data[..16 << 20]).await.unwrap();
        stream.flush().await.unwrap();
        // The client dies: its connections are reset, so the transfer has no proper end. (A clean
        // close would be the end of the file: FTP's stream mode has no other end-of-file mark.)
        stream.get_ref().get_ref().set_zero_linger().unwrap();
        drop(stream);
        drop(ftp);
    }
    // The upload is kept, flagged incomplete, announced as such, never as a complete file.
    let path = storage_backend::StorePath::parse("/home/alice/big.iso").unwrap();
    let meta = until(
        "the cut-off upload was not kept",
        Duration::from_secs(20),
        || t.store().stat(&path),
    )
    .await;
    assert!(!meta.complete);
    assert!(meta.size > 0 && meta.size <= 16 << 20, "{}", meta.size);
    assert!(t.store_bytes("/home/alice/big.iso").await == data[..meta.size as usize]);
    let events = t.events().await;
    assert!(events
        .iter()
        .any(|e| e.kind == EventKind::FileIncomplete && e.path == path.as_str()));
    assert!(!events
        .iter()
        .any(|e| e.kind == EventKind::FileCreated && e.path == path.as_str()));
    // Resume: SIZE, then REST + STOR of the rest.
    let mut ftp = connect(t.ftp_addr(), "alice").await;
    let have = ftp.size("big.iso").await.unwrap();
    assert_eq!(have as u64, meta.size);
    ftp.resume_transfer(have).await.unwrap();
    ftp.put_file("big.iso", &mut &data[have..]).await.unwrap();
    assert!(get(&mut ftp, "big.iso").await == data);
    let meta = t.store().stat(&path).await.unwrap();
    assert!(meta.complete);
    assert_eq!(meta.sha256.as_deref(), Some(sha256_hex(&data).as_str()));
    t.stop().await;
}

async fn scheduler_job_with_temp_name(kind: Kind) {
    let t = start(kind, |_| {}).await;
    let mut ftp = AsyncFtpStream::connect(t.ftp_addr()).await.unwrap();
    ftp.login("alice", PASSWORD).await.unwrap();
    // Old clients send TYPE A N first (ASCII mode, see ascii_mode_converts_line_endings), then TYPE I.
    ftp.custom_command("TYPE A N", &[suppaftp::Status::CommandOk])
        .await
        .unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    put(&mut ftp, "report.csv.tmp", b"a;b\r\n1;2\r\n").await;
    ftp.rename("report.csv.tmp", "report.csv").await.unwrap();
    ftp.quit().await.unwrap();
    assert_eq!(
        t.store_bytes("/home/alice/report.csv").await,
        b"a;b\r\n1;2\r\n"
    );
    let events = t.events().await;
    let renamed = events
        .iter()
        .find(|e| e.kind == EventKind::FileRenamed)
        .unwrap();
    assert_eq!(
        renamed.old_path.as_deref(),
        Some("/home/alice/report.csv.tmp")
    );
    assert_eq!(renamed.path, "/home/alice/report.csv");
    assert_eq!(renamed.size, Some(10));
    t.stop().await;
}

/// A home that disappeared while the gateway runs (removed by an operator, or lost with the last
/// writes of a Redis master that failed over) is made again at the next login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_home_is_made_again_at_login() {
    let t = start(Kind::Redis, |_| {}).await;
    let mut ftp = connect(t.ftp_addr(), "alice").await;
    put(&mut ftp, "before.txt", b"x").await;
    ftp.quit().await.unwrap();
    let system = storage_backend::ChangeContext::new("operator", "system", "");
    let path = |p: &str| storage_backend::StorePath::parse(p).unwrap();
    t.store()
        .delete(&path("/home/alice/before.txt"), &system)
        .await
        .unwrap();
    t.store()
        .rmdir(&path("/home/alice"), &system)
        .await
        .unwrap();
    let mut ftp = connect(t.ftp_addr(), "alice").await;
    put(&mut ftp, "after.txt", b"y").await;
    assert_eq!(t.store_bytes("/home/alice/after.txt").await, b"y");
    ftp.quit().await.unwrap();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_checked_and_brute_force_is_banned() {
    let t = start(Kind::Embedded, |c| c.limits.login_failures_per_ip = 3).await;
    let mut ftp = AsyncFtpStream::connect(t.ftp_addr()).await.unwrap();
    assert_eq!(code(ftp.login("alice", "wrong").await), 530);
    assert_eq!(code(ftp.login("nobody", "x").await), 530);
    // A second connection from the same address: its failure starts the ban.
    let mut other = AsyncFtpStream::connect(t.ftp_addr()).await.unwrap();
    assert_eq!(code(other.login("alice", "wrong again").await), 530);
    // Even the right password is refused now, and new connections are turned away at once.
    assert_eq!(code(other.login("alice", PASSWORD).await), 530);
    let mut raw = tokio::net::TcpStream::connect(t.ftp_addr()).await.unwrap();
    let mut greeting = String::new();
    raw.read_to_string(&mut greeting).await.unwrap();
    assert!(greeting.starts_with("421 "), "{greeting}");
    assert!(greeting.contains("failed logins"), "{greeting}");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jail_permissions_quota_and_size_limits() {
    let t = start(Kind::Embedded, |c| {
        c.storage.max_file_size = 300_000;
        c.users.push(crate::common::user(
            "bob",
            "/home/bob",
            &filegate::config::Permission::ALL,
        ));
        let mut small =
            crate::common::user("small", "/home/small", &filegate::config::Permission::ALL);
        small.quota_bytes = Some(100_000);
        c.users.push(small);
    })
    .await;
    let mut bob = connect(t.ftp_addr(), "bob").await;
    put(&mut bob, "secret", b"bob only").await;
    let mut alice = connect(t.ftp_addr(), "alice").await;
    for attempt in [
        "../bob/secret",
        "/../../home/bob/secret",
        "..\\bob\\secret",
        "/home/bob/secret",
    ] {
        assert_eq!(retr_code(&mut alice, attempt).await, 550, "{attempt}");
    }
    alice.cwd("../../..").await.unwrap();
    assert!(
        alice.nlst(None).await.unwrap().is_empty(),
        "CWD above the home shows the home"
    );
    // Read-only and no-delete users.
    put(&mut alice, "/shared.txt", b"hello").await;
    let mut reader = connect(t.ftp_addr(), "reader").await;
    assert_eq!(get(&mut reader, "shared.txt").await, b"hello");
    assert_eq!(code(reader.put_file("x", &mut &b"x"[..]).await), 550);
    assert_eq!(code(reader.mkdir("d").await), 550);
    assert_eq!(code(reader.rename("shared.txt", "y").await), 550);
    let mut nodelete = connect(t.ftp_addr(), "nodelete").await;
    put(&mut nodelete, "mine.txt", b"ok").await;
    assert_eq!(code(nodelete.rm("mine.txt").await), 550);
    // max_file_size and quota: 552, and nothing is published. Each refusal says why, in the
    // user's own paths.
    let (status, why) = refusal(alice.put_file("huge", &mut &content(1, 300_001)[..]).await);
    assert_eq!(status, 552, "{why}");
    assert!(why.contains("storage.max_file_size"), "{why}");
    let (status, why) = refusal(alice.size("huge").await);
    assert_eq!(status, 550, "{why}");
    assert!(
        why.contains("/huge") && !why.contains("/home/alice"),
        "{why}"
    );
    alice.mkdir("folder").await.unwrap();
    let (status, why) = refusal(alice.put_file("folder", &mut &b"x"[..]).await);
    assert_eq!(status, 550, "{why}");
    assert!(why.contains("/folder: is a directory"), "{why}");
    let mut small = connect(t.ftp_addr(), "small").await;
    put(&mut small, "a", &content(2, 60_000)).await;
    let (status, why) = refusal(small.put_file("b", &mut &content(3, 60_000)[..]).await);
    assert_eq!(status, 552, "{why}");
    assert!(why.contains("quota"), "{why}");
    assert_eq!(small.nlst(None).await.unwrap(), ["a"]);
    // Names the store never accepts: 553.
    assert_eq!(code(alice.mkdir(&"n".repeat(300)).await), 553);
    t.stop().await;
}

/// Two gateways on one Redis count one quota: what a user stored through one is counted by the
/// other, even in a session the other opened before (issue 18, item 10: each used to count on
/// its own, so N gateways allowed N times the quota).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_on_one_redis_share_the_quota() {
    fn small(c: &mut filegate::config::Config) {
        let mut small =
            crate::common::user("small", "/home/small", &filegate::config::Permission::ALL);
        small.quota_bytes = Some(100_000);
        c.users.push(small);
    }
    let a = start(Kind::Redis, small).await;
    // A's Redis, whichever topology this run uses.
    let redis = a.config.storage.redis.clone();
    let b = start(Kind::Embedded, |c| {
        small(c);
        c.storage.backend = filegate::config::StorageBackend::Redis;
        c.storage.redis = redis;
    })
    .await;
    let mut on_b = connect(b.ftp_addr(), "small").await;
    let mut on_a = connect(a.ftp_addr(), "small").await;
    put(&mut on_a, "a", &content(2, 60_000)).await;
    assert_eq!(
        code(on_b.put_file("b", &mut &content(3, 60_000)[..]).await),
        552
    );
    assert_eq!(code(on_b.size("b").await), 550);
    // Room made through one gateway is room on the other.
    on_a.rm("a").await.unwrap();
    put(&mut on_b, "b", &content(3, 60_000)).await;
    assert_eq!(
        code(on_a.put_file("c", &mut &content(4, 60_000)[..]).await),
        552
    );
    b.stop().await;
    a.stop().await;
}

/// An FTP session from the local address `ip` (control and data connections), like a client on
/// another machine: any 127.x.y.z is this host.
async fn connect_from(addr: std::net::SocketAddr, ip: [u8; 4], mode: Mode) -> AsyncFtpStream {
    let source = std::net::SocketAddr::from((ip, 0));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(source).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut ftp = AsyncFtpStream::connect_with_stream(stream)
        .await
        .unwrap()
        .passive_stream_builder(move |to| {
            Box::pin(async move {
                let socket = tokio::net::TcpSocket::new_v4().map_err(FtpError::ConnectionError)?;
                socket.bind(source).map_err(FtpError::ConnectionError)?;
                socket.connect(to).await.map_err(FtpError::ConnectionError)
            })
        });
    ftp.login("alice", PASSWORD).await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    ftp.set_mode(mode);
    ftp
}

/// `ftp.shared_passive_ports`: a range of one port serves clients of different addresses at the
/// same time (PASV and EPSV); two sessions of one address waiting for a data connection at once
/// need two ports, and the second is told so (425).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shared_passive_port_serves_clients_of_different_addresses() {
    let port = test_support::free_port();
    let t = start(Kind::Redis, |c| {
        c.ftp.passive_ports = port..=port;
        c.ftp.shared_passive_ports = true;
    })
    .await;
    let data = content(6, 3_000_000);
    let mut first = connect_from(t.ftp_addr(), [127, 0, 0, 2], Mode::Passive).await;
    put(&mut first, "shared.bin", &data).await;
    // The first client's download keeps its data connection to the one port open...
    let mut held = first.retr_as_stream("shared.bin").await.unwrap();
    let mut head = vec![0u8; 64 * 1024];
    held.read_exact(&mut head).await.unwrap();
    // ...a client of another address has the port reserved (PASV sent, not yet connected)...
    let mut waiting = connect_from(t.ftp_addr(), [127, 0, 0, 3], Mode::Passive).await;
    waiting
        .custom_command("PASV", &[suppaftp::Status::PassiveMode])
        .await
        .unwrap();
    // ...and a third one uploads and downloads through the same port meanwhile (EPSV).
    let mut third = connect_from(t.ftp_addr(), [127, 0, 0, 4], Mode::ExtendedPassive).await;
    put(&mut third, "from-4.bin", &data[..200_000]).await;
    assert!(get(&mut third, "from-4.bin").await == data[..200_000]);
    third.quit().await.unwrap();
    // The waiting client asks again (PASV once more) and transfers too.
    put(&mut waiting, "from-3.bin", &data[..300_000]).await;
    assert!(get(&mut waiting, "from-3.bin").await == data[..300_000]);
    waiting.quit().await.unwrap();
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).await.unwrap();
    held.finish().await.unwrap();
    assert!(head.len() + rest.len() == data.len() && [head, rest].concat() == data);

    // Two sessions of one address: the port one of them already used is free for the other,
    // and nothing the first does afterwards (PASV again, QUIT) takes the other's reservation.
    let mut used = connect_from(t.ftp_addr(), [127, 0, 0, 6], Mode::Passive).await;
    put(&mut used, "used.bin", &data[..1000]).await;
    let mut next = connect_from(t.ftp_addr(), [127, 0, 0, 6], Mode::Passive).await;
    let reserved = next
        .custom_command("PASV", &[suppaftp::Status::PassiveMode])
        .await
        .unwrap()
        .as_string()
        .unwrap();
    let numbers: Vec<u16> = reserved
        .rsplit_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(n, _)| n.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default();
    assert_eq!(numbers.len(), 6, "{reserved}");
    assert_eq!(numbers[4] * 256 + numbers[5], port);
    assert_eq!(
        code(
            used.custom_command("PASV", &[suppaftp::Status::PassiveMode])
                .await
        ),
        425
    );
    used.quit().await.unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 6], 0)))
        .unwrap();
    let mut data_connection = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    next.custom_command("STOR next.bin", &[suppaftp::Status::AboutToSend])
        .await
        .unwrap();
    data_connection.write_all(&data[..5000]).await.unwrap();
    drop(data_connection);
    next.read_response(suppaftp::Status::ClosingDataConnection)
        .await
        .unwrap();
    assert!(t.store_bytes("/home/alice/next.bin").await == data[..5000]);
    next.quit().await.unwrap();

    // Two sessions of one address, both between PASV and their data connection: the second
    // finds the port taken until the first session is gone.
    let mut a = connect_from(t.ftp_addr(), [127, 0, 0, 5], Mode::Passive).await;
    let mut b = connect_from(t.ftp_addr(), [127, 0, 0, 5], Mode::Passive).await;
    a.custom_command("PASV", &[suppaftp::Status::PassiveMode])
        .await
        .unwrap();
    let refused = b
        .custom_command("PASV", &[suppaftp::Status::PassiveMode])
        .await;
    assert_eq!(code(refused), 425);
    a.quit().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b
        .custom_command("PASV", &[suppaftp::Status::PassiveMode])
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the port stayed reserved after its session ended"
        );
        tokio::task::yield_now().await;
    }
    t.stop().await;
}

/// TYPE A converts line endings as RFC 959 says (CRLF on the wire, LF stored), with a client
/// crate, curl (`-B`) and lftp (`put -a`, `get -a`); sessions start in ASCII mode unless
/// `ftp.default_type = "binary"`; TYPE I moves bytes as they are; SIZE is the stored size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ascii_mode_converts_line_endings() {
    let t = start(Kind::Redis, |_| {}).await;
    let wire: &[u8] = b"a;b\r\n1;2\r\nlone\rcr\r\n";
    let stored: &[u8] = b"a;b\n1;2\nlone\rcr\n";

    let mut ftp = connect(t.ftp_addr(), "alice").await;
    ftp.transfer_type(FileType::Ascii(suppaftp::types::FormatControl::NonPrint))
        .await
        .unwrap();
    put(&mut ftp, "report.csv", wire).await;
    assert_eq!(t.store_bytes("/home/alice/report.csv").await, stored);
    assert_eq!(get(&mut ftp, "report.csv").await, wire);
    assert_eq!(ftp.size("report.csv").await.unwrap(), stored.len());
    // Offsets count stored bytes: resuming is for binary mode only.
    assert_eq!(
        code(
            ftp.custom_command("REST 5", &[suppaftp::Status::RequestFilePending])
                .await
        ),
        504
    );
    ftp.transfer_type(FileType::Binary).await.unwrap();
    assert_eq!(get(&mut ftp, "report.csv").await, stored);
    assert_eq!(
        code(
            ftp.custom_command("TYPE E", &[suppaftp::Status::CommandOk])
                .await
        ),
        504
    );
    // A session that never sends TYPE is in ASCII mode, as RFC 959 says.
    let mut raw = AsyncFtpStream::connect(t.ftp_addr()).await.unwrap();
    raw.login("alice", PASSWORD).await.unwrap();
    put(&mut raw, "untyped.csv", wire).await;
    assert_eq!(t.store_bytes("/home/alice/untyped.csv").await, stored);
    let events = t.events().await;
    let created = events
        .iter()
        .find(|e| e.path == "/home/alice/report.csv")
        .unwrap();
    assert_eq!(created.size, Some(stored.len() as u64));
    ftp.quit().await.unwrap();
    raw.quit().await.unwrap();

    // curl: -B asks for ASCII; curl sends the local LF file with CRLF line endings and turns them
    // back into LF when it downloads.
    let local = t.temp_path("unix.txt");
    std::fs::write(&local, b"one\ntwo\n").unwrap();
    let url = t.ftp_url("alice", "curl.txt");
    client(
        "curl",
        &["-sS", "--fail", "-B", "-T", local.to_str().unwrap(), &url],
    );
    assert_eq!(t.store_bytes("/home/alice/curl.txt").await, b"one\ntwo\n");
    assert_eq!(
        client("curl", &["-sS", "--fail", "-B", &url]),
        b"one\ntwo\n"
    );
    assert_eq!(client("curl", &["-sS", "--fail", &url]), b"one\ntwo\n");

    // lftp's ASCII mode (-a) relies on the session starting in ASCII (it sends no TYPE): a local
    // LF file goes up with CRLF, is stored with LF, and comes back with LF.
    let back = t.temp_path("back.txt");
    let a = t.ftp_addr();
    let script = format!(
        "set net:max-retries 1; set net:timeout 10; set ftp:passive-mode true; \
         open -u alice,{PASSWORD} ftp://{}:{}; put -a {} -o lftp.txt; get -a lftp.txt -o {}; \
         get lftp.txt -o {}.bin; bye",
        a.ip(),
        a.port(),
        local.display(),
        back.display(),
        back.display()
    );
    client("lftp", &["-c", &script]);
    assert_eq!(t.store_bytes("/home/alice/lftp.txt").await, b"one\ntwo\n");
    assert_eq!(std::fs::read(&back).unwrap(), b"one\ntwo\n");
    // Without -a lftp sends TYPE I: the stored bytes as they are.
    assert_eq!(
        std::fs::read(format!("{}.bin", back.display())).unwrap(),
        b"one\ntwo\n"
    );
    t.stop().await;

    // ftp.default_type = "binary": bytes as they are until the client asks for TYPE A.
    let t = start(Kind::Embedded, |c| c.ftp.default_type = FtpType::Binary).await;
    let mut raw = AsyncFtpStream::connect(t.ftp_addr()).await.unwrap();
    raw.login("alice", PASSWORD).await.unwrap();
    put(&mut raw, "untyped.csv", wire).await;
    assert_eq!(t.store_bytes("/home/alice/untyped.csv").await, wire);
    raw.transfer_type(FileType::Ascii(suppaftp::types::FormatControl::NonPrint))
        .await
        .unwrap();
    put(&mut raw, "typed.csv", wire).await;
    assert_eq!(t.store_bytes("/home/alice/typed.csv").await, stored);
    raw.quit().await.unwrap();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_downloads_and_resumes() {
    let t = start(Kind::Redis, |_| {}).await;
    let file = t.temp_path("up.bin");
    let data = content(9, 3_000_000);
    std::fs::write(&file, &data).unwrap();
    let run = |args: Vec<String>| {
        client(
            "curl",
            &[&["-sS".to_string(), "--fail".to_string()], &args[..]].concat(),
        )
    };
    run(vec![
        "-T".into(),
        file.to_str().unwrap().into(),
        "--ftp-create-dirs".into(),
        t.ftp_url("alice", "dir/up.bin"),
    ]);
    assert_eq!(run(vec![t.ftp_url("alice", "dir/up.bin")]), data);
    // Resume a partial download with -C -.
    let partial = t.temp_path("down.bin");
    std::fs::write(&partial, &data[..1_000_000]).unwrap();
    run(vec![
        "-C".into(),
        "-".into(),
        "-o".into(),
        partial.to_str().unwrap().into(),
        t.ftp_url("alice", "dir/up.bin"),
    ]);
    assert!(std::fs::read(&partial).unwrap() == data);
    // Resume a partial upload with -C - (SIZE, then APPE).
    let mut ftp = connect(t.ftp_addr(), "alice").await;
    put(&mut ftp, "dir/resumed.bin", &data[..1_234_567]).await;
    run(vec![
        "-C".into(),
        "-".into(),
        "-T".into(),
        file.to_str().unwrap().into(),
        t.ftp_url("alice", "dir/resumed.bin"),
    ]);
    assert!(get(&mut ftp, "dir/resumed.bin").await == data);
    // Listing.
    let listing =
        String::from_utf8(run(vec!["--list-only".into(), t.ftp_url("alice", "dir/")])).unwrap();
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        ["resumed.bin", "up.bin"]
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lftp_mirror_and_resume() {
    let t = start(Kind::Embedded, |_| {}).await;
    let local = t.temp_path("local");
    std::fs::create_dir_all(local.join("sub")).unwrap();
    let big = content(4, 2_500_000);
    std::fs::write(local.join("big.bin"), &big).unwrap();
    std::fs::write(local.join("sub/small.txt"), b"small").unwrap();
    let a = t.ftp_addr();
    let script = format!(
        "set net:max-retries 1; set net:timeout 10; set ftp:passive-mode true; set ssl:verify-certificate no; \
         open -u alice,{PASSWORD} ftp://{}:{}; mirror -R {} up; \
         put -c {} -o up/resumed.bin; bye",
        a.ip(),
        a.port(),
        local.display(),
        local.join("big.bin").display()
    );
    // Leave a partial upload first so `put -c` has something to continue.
    let mut ftp = connect(t.ftp_addr(), "alice").await;
    ftp.mkdir("up").await.unwrap();
    put(&mut ftp, "up/resumed.bin", &big[..700_000]).await;
    client("lftp", &["-c", &script]);
    assert!(t.store_bytes("/home/alice/up/big.bin").await == big);
    assert_eq!(
        t.store_bytes("/home/alice/up/sub/small.txt").await,
        b"small"
    );
    assert!(t.store_bytes("/home/alice/up/resumed.bin").await == big);
    t.stop().await;
}
