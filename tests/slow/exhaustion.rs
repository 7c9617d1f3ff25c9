//! Exhaustion: idle and slow clients are closed by the idle timeouts, a thousand idle connections
//! cost little memory, a client that never reads its download does not pin the gateway, a session
//! cannot open handles without bound, and a directory of 100,000 entries lists in bounded memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::binary::{Binary, SECRET};
use crate::common::{content, program, start, Kind};
use storage_backend::{ChangeContext, StorePath};

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Lets this test process hold a few thousand sockets.
fn raise_fd_limit() {
    let ok = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            "--nofile=8192:8192",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "cannot raise the open-file limit to 8192 (prlimit, util-linux)"
    );
}

/// Reads until the peer closes (or `limit` passes); returns what arrived and when it closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => {
                return (
                    String::from_utf8_lossy(&got).into(),
                    Some(started.elapsed()),
                )
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                return (
                    String::from_utf8_lossy(&got).into(),
                    Some(started.elapsed()),
                )
            }
        }
    }
    (String::from_utf8_lossy(&got).into(), None)
}

/// The gateway binary with 3 s idle timeouts and room for thousands of connections.
fn idle_binary(dir: &std::path::Path) -> Binary {
    Binary::start_wrapped(
        dir,
        "",
        None,
        Some(
            "ulimit -n 8192; export FILEGATE__FTP__IDLE_TIMEOUT=3s FILEGATE__SFTP__IDLE_TIMEOUT=3s \
             FILEGATE__LIMITS__MAX_CONNECTIONS=3000 FILEGATE__LIMITS__MAX_CONNECTIONS_PER_IP=3000 \
             FILEGATE__LIMITS__MAX_UNAUTHENTICATED=3000",
        ),
    )
}

#[test]
fn a_thousand_idle_connections_are_cheap_and_closed_by_the_idle_timeout() {
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let b = idle_binary(dir.path());
    let pid = b.child.id();
    let before = rss_of(pid);
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(b.ftp).unwrap();
        let mut greeting = [0u8; 3];
        s.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"220");
        conns.push(s);
    }
    let after = rss_of(pid);
    let per_conn = after.saturating_sub(before) / 1000;
    eprintln!(
        "1,000 idle FTP connections: RSS {} → {} KiB, {} KiB each",
        before / 1024,
        after / 1024,
        per_conn / 1024
    );
    assert!(
        per_conn < 64 * 1024,
        "{} KiB per idle connection",
        per_conn / 1024
    );
    // All of them are closed after the idle timeout (3 s), none kept for ever.
    let started = Instant::now();
    for s in &mut conns {
        let left = Duration::from_secs(20).saturating_sub(started.elapsed());
        let (_, closed) = read_until_closed(s, left);
        assert!(
            closed.is_some(),
            "an idle connection was still open after 20 s"
        );
    }
    drop(conns);
    b.signal("TERM");
    let (code, log) = b.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn slow_and_silent_clients_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let b = idle_binary(dir.path());

    // FTP: half a command, then nothing.
    let mut ftp = TcpStream::connect(b.ftp).unwrap();
    ftp.write_all(b"US").unwrap();
    let (_, closed) = read_until_closed(&mut ftp, Duration::from_secs(15));
    assert!(
        closed.is_some(),
        "a silent FTP control connection stayed open"
    );

    // FTP: logged in, a passive data port asked for and never used.
    let mut ftp = TcpStream::connect(b.ftp).unwrap();
    ftp.write_all(format!("USER ops\r\nPASS {SECRET}\r\n").as_bytes())
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while !seen.contains("230") {
        let n = ftp.read(&mut buf).unwrap();
        assert!(n > 0, "closed before login: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    ftp.write_all(b"EPSV\r\n").unwrap();
    let (seen, closed) = read_until_closed(&mut ftp, Duration::from_secs(15));
    assert!(seen.contains("229"), "{seen}");
    assert!(
        closed.is_some(),
        "an FTP session waiting on an unused data port stayed open"
    );

    // SSH: a banner, then nothing (no key exchange).
    let mut ssh = TcpStream::connect(b.sftp.unwrap()).unwrap();
    ssh.write_all(b"SSH-2.0-slowloris\r\n").unwrap();
    let (seen, closed) = read_until_closed(&mut ssh, Duration::from_secs(15));
    assert!(seen.starts_with("SSH-2.0-"), "{seen}");
    assert!(closed.is_some(), "a silent SSH connection stayed open");

    // SSH: garbage after the banner ends that connection only.
    let mut ssh = TcpStream::connect(b.sftp.unwrap()).unwrap();
    ssh.write_all(b"SSH-2.0-x\r\n").unwrap();
    ssh.write_all(&[0xffu8; 70_000]).unwrap_or(());
    let (_, closed) = read_until_closed(&mut ssh, Duration::from_secs(15));
    assert!(closed.is_some());
    let mut again = TcpStream::connect(b.sftp.unwrap()).unwrap();
    let mut banner = [0u8; 8];
    again.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"SSH-2.0-");

    b.signal("TERM");
    let (code, log) = b.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn a_client_that_never_reads_its_download() {
    let dir = tempfile::tempdir().unwrap();
    let b = idle_binary(dir.path());
    let big = dir.path().join("big.bin");
    std::fs::write(&big, content(8, 48 << 20)).unwrap();
    let up = std::process::Command::new(program("curl"))
        .args(["-sS", "-T"])
        .arg(&big)
        .arg(format!("ftp://ops:{SECRET}@{}/big.bin", b.ftp))
        .status()
        .unwrap();
    assert!(up.success());
    let pid = b.child.id();
    let before = rss_of(pid);

    let mut ctl = TcpStream::connect(b.ftp).unwrap();
    ctl.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = std::io::BufReader::new(ctl.try_clone().unwrap());
    let mut line = String::new();
    let mut expect = |want: &str| {
        line.clear();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        assert!(line.starts_with(want), "expected {want}, got {line:?}");
        line.clone()
    };
    expect("220");
    ctl.write_all(b"USER ops\r\n").unwrap();
    expect("331");
    ctl.write_all(format!("PASS {SECRET}\r\n").as_bytes())
        .unwrap();
    expect("230");
    ctl.write_all(b"TYPE I\r\nEPSV\r\n").unwrap();
    expect("200");
    let epsv = expect("229");
    let port: u16 = epsv
        .split("|||")
        .nth(1)
        .and_then(|r| r.split('|').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let data = TcpStream::connect((b.ftp.ip(), port)).unwrap();
    ctl.write_all(b"RETR big.bin\r\n").unwrap();
    expect("150");
    // Never read `data`. The gateway gives up after the idle timeout (3 s) with an error reply.
    let started = Instant::now();
    let reply = expect("4");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert!(
        reply.starts_with("426") || reply.starts_with("451"),
        "{reply}"
    );
    let grown = rss_of(pid).saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "RSS grew {} MiB holding a stuck download",
        grown >> 20
    );
    drop(data);
    b.signal("TERM");
    let (code, log) = b.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_100000_entries_lists_in_bounded_memory() {
    const N: usize = 100_000;
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = crate::common::client_key(keys.path(), "alice_key");
    let t = start(Kind::Redis, |c| {
        crate::common::sftp_on(c);
        c.users[0].authorized_keys = vec![public];
    })
    .await;
    let ctx = ChangeContext::new("alice", "ftp", "127.0.0.1:1");
    for dir in ["/home", "/home/alice", "/home/alice/big"] {
        t.store()
            .mkdir(&StorePath::parse(dir).unwrap(), &ctx)
            .await
            .unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let store = t.store().clone();
        let ctx = ctx.clone();
        tasks.spawn(async move {
            for i in (w..N).step_by(8) {
                let p = StorePath::parse(&format!("/home/alice/big/f{i:06}")).unwrap();
                store.write_file(&p, b"x", &ctx).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let pid = std::process::id();
    let before = rss_of(pid);
    // FTP NLST through curl.
    let out = tokio::task::spawn_blocking({
        let url = format!("{}/", t.ftp_url("alice", "big"));
        move || {
            std::process::Command::new(program("curl"))
                .args(["-sS", "-l", &url])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let names = String::from_utf8(out.stdout).unwrap();
    assert_eq!(names.lines().count(), N);
    assert!(names.lines().any(|l| l.trim() == "f099999"));
    // FTP LIST is sent page by page: its first line leaves long before the last page is read
    // (the whole directory used to be read and formatted before the first byte).
    let ftp = t.ftp_addr();
    let (first, whole, lines) = tokio::task::spawn_blocking(move || timed_list(ftp, "big"))
        .await
        .unwrap();
    assert_eq!(lines, N);
    eprintln!("LIST of {N} entries: first byte after {first:?}, all of it after {whole:?}");
    assert!(
        first * 4 < whole,
        "the first line came after {first:?} of {whole:?}: the listing was not streamed"
    );
    // SFTP readdir, through OpenSSH's client (another process: only the gateway's memory counts).
    let (ok, out) = tokio::task::block_in_place(|| t.sftp_batch("alice", &key, "ls -1 big\n"));
    assert!(ok, "{}", &out[..out.len().min(2000)]);
    let listed = out.lines().filter(|l| l.starts_with("big/f")).count();
    assert_eq!(listed, N);
    let grown = rss_of(pid).saturating_sub(before);
    eprintln!(
        "listing {N} entries twice grew the process by {} MiB",
        grown >> 20
    );
    assert!(grown < 64 << 20, "listing grew RSS by {} MiB", grown >> 20);
    t.stop().await;
}

/// `LIST dir` as alice over a raw FTP session: (time to the listing's first byte, time to its
/// end, lines), both counted from the `LIST` command.
fn timed_list(addr: std::net::SocketAddr, dir: &str) -> (Duration, Duration, usize) {
    use std::io::{BufRead, BufReader};
    let control = TcpStream::connect(addr).unwrap();
    control
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut replies = BufReader::new(control.try_clone().unwrap());
    let mut w = control;
    let mut reply = |w: &mut TcpStream, line: &str| {
        if !line.is_empty() {
            w.write_all(line.as_bytes()).unwrap();
        }
        let mut text = String::new();
        replies.read_line(&mut text).unwrap();
        text
    };
    assert!(reply(&mut w, "").starts_with("220"));
    reply(&mut w, "USER alice\r\n");
    let r = reply(&mut w, &format!("PASS {}\r\n", crate::common::PASSWORD));
    assert!(r.starts_with("230"), "{r:?}");
    let r = reply(&mut w, "EPSV\r\n");
    let port: u16 = r
        .split("|||")
        .nth(1)
        .and_then(|p| p.split('|').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{r:?}"));
    let mut data = TcpStream::connect((addr.ip(), port)).unwrap();
    data.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    let r = reply(&mut w, &format!("LIST {dir}\r\n"));
    assert!(r.starts_with("150"), "{r:?}");
    let mut first = [0u8; 1];
    data.read_exact(&mut first).unwrap();
    let first_after = started.elapsed();
    let mut rest = Vec::new();
    data.read_to_end(&mut rest).unwrap();
    let whole = started.elapsed();
    let r = reply(&mut w, "");
    assert!(r.starts_with("226"), "{r:?}");
    let lines = rest
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    (first_after, whole, lines)
}
