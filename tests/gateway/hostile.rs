//! Hostile input. The fuzz entry points (`filegate::fuzz`, also the cargo-fuzz targets in `fuzz/`)
//! run here on stable Rust for a bounded time each (`HOSTILE_SECONDS`, default 5): every file of
//! their corpus in `fuzz/corpus/<target>/`, then random mutations of it. Then malformed protocol
//! input against a running gateway: over-long, binary and CR/LF-injected FTP lines, SCP garbage,
//! MQTT packets over the size limit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::{start, until_true, Kind, PASSWORD};
use rand::{Rng, SeedableRng};

fn budget() -> Duration {
    Duration::from_secs(
        std::env::var("HOSTILE_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5),
    )
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "{} is empty", dir.display());
    seeds
}

/// Pieces that tend to break path, topic and config handling.
const TOKENS: &[&[u8]] = &[
    b"..",
    b"/",
    b"\\",
    b"%2e",
    b"%2F",
    b"%00",
    b"\0",
    b"\r\n",
    b"+",
    b"#",
    b"%",
    b"%25",
    b"//",
    b"./",
    b"../",
    b"=",
    b"[",
    b"]",
    b"\"",
    b"'",
    b"\xff",
    b"\xc3\xa9",
    b"~",
    b" ",
    b"*",
    b"?",
    b"[server]\n",
    b"[[users]]\n",
    b"chunk_size = \"",
    b"\"1e99\"",
    b"-1",
];

fn mutate(rng: &mut rand::rngs::StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.random_range(0..seeds.len())].clone();
    for _ in 0..rng.random_range(1..6) {
        let at = rng.random_range(0..=data.len());
        match rng.random_range(0..6) {
            0 if !data.is_empty() => {
                let i = rng.random_range(0..data.len());
                data[i] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                data.splice(at..at, t.iter().copied());
            }
            2 if !data.is_empty() => {
                let end = rng.random_range(at..=data.len());
                data.drain(at..end);
            }
            3 => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                data.splice(at..at, other.iter().copied());
            }
            4 => {
                let n = rng.random_range(1..600);
                let b: u8 = rng.random();
                data.splice(at..at, std::iter::repeat_n(b, n));
            }
            _ => data.insert(at, rng.random()),
        }
    }
    data
}

/// Every corpus file, then mutations until the budget is spent; returns how many inputs ran.
fn exercise(target: &str, f: impl Fn(&[u8])) -> usize {
    let seeds = corpus(target);
    for s in &seeds {
        f(s);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed ^ target.len() as u64);
    let started = Instant::now();
    let mut n = seeds.len();
    while started.elapsed() < budget() {
        f(&mutate(&mut rng, &seeds));
        n += 1;
    }
    eprintln!("{target}: {n} inputs");
    n
}

#[test]
fn paths() {
    assert!(exercise("path", filegate::fuzz::path) > 100);
}

#[test]
fn configs() {
    assert!(exercise("config", filegate::fuzz::config) > 10);
}

#[test]
fn topics() {
    assert!(exercise("topic", filegate::fuzz::topic) > 100);
}

#[test]
fn command_topics() {
    assert!(exercise("command_topic", filegate::fuzz::command_topic) > 100);
}

#[test]
fn mqtt_packets() {
    assert!(exercise("mqtt_packets", filegate::fuzz::mqtt_packets) > 100);
}

#[test]
fn exec_commands() {
    assert!(exercise("exec_command", filegate::fuzz::exec_command) > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_uploads() {
    let t = start(Kind::Embedded, |_| {}).await;
    let fs = alice_session(&t).await;
    let seeds = corpus("scp_upload");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let started = Instant::now();
    let mut n = 0;
    for s in &seeds {
        filegate::fuzz::scp_upload(&fs, true, s).await;
        n += 1;
    }
    while started.elapsed() < budget() {
        let input = mutate(&mut rng, &seeds);
        let run = filegate::fuzz::scp_upload(&fs, rng.random(), &input);
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the scp sink must end when its input does");
        n += 1;
    }
    eprintln!("scp_upload: {n} inputs");
    // Whatever arrived, nothing landed outside alice's home.
    assert_eq!(names_in(&t, "/").await, ["home"]);
    assert_eq!(names_in(&t, "/home").await, ["alice"]);
    t.stop().await;
}

/// SCP time lines far in the future (or past what a time can hold) neither panic nor leave a time
/// that breaks other users' listings: the store keeps at most 9999-12-31 (issue 18, item 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_future_scp_times_do_not_break_listings() {
    let t = start(Kind::Embedded, |_| {}).await;
    let fs = alice_session(&t).await;
    for (name, secs) in [
        ("far.txt", "999999999999999"),
        ("beyond.txt", "18446744073709551615"),
    ] {
        let input = format!("T{secs} 0 {secs} 0\nC0644 5 {name}\nhello\0");
        filegate::fuzz::scp_upload(&fs, false, input.as_bytes()).await;
    }
    let far = fs
        .stat(
            &fs.resolve(&filegate::access::UserPath::root(), b"far.txt")
                .unwrap(),
        )
        .await
        .expect("far.txt was stored");
    let year_10000 = std::time::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
    assert!(far.mtime < year_10000, "{:?}", far.mtime);
    // Everyone's listings still work, over FTP (LIST, MLSD) and the HTTP API.
    let mut ftp = suppaftp::tokio::AsyncFtpStream::connect(t.ftp_addr())
        .await
        .unwrap();
    ftp.login("alice", PASSWORD).await.unwrap();
    let list = ftp.list(None).await.unwrap();
    assert!(list.iter().any(|l| l.ends_with("far.txt")), "{list:?}");
    let mlsd = ftp.mlsd(None).await.unwrap();
    assert!(
        mlsd.iter()
            .any(|l| l.contains("modify=9999") && l.ends_with("far.txt")),
        "{mlsd:?}"
    );
    let _ = ftp.quit().await;
    t.stop().await;
}

/// With active mode on, `PORT` connects only back to the client and never to a privileged port
/// (RFC 2577: no "FTP bounce" probing of other hosts); curl's active mode still works (issue 18,
/// item 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_only_reaches_back_to_the_client() {
    let t = start(Kind::Embedded, |c| c.ftp.active_mode = true).await;
    let addr = t.ftp_addr();
    let local = t.temp_path("active.txt");
    std::fs::write(&local, b"sent in active mode").unwrap();
    tokio::task::spawn_blocking(move || {
        let mut f = Ftp::login(addr);
        for target in ["PORT 10,255,255,1,200,10\r\n", "PORT 127,0,0,1,0,22\r\n"] {
            let r = f.send(target.as_bytes());
            assert!(r.starts_with("504"), "{target:?}: {r:?}");
        }
        let out = std::process::Command::new(crate::common::program("curl"))
            .args(["-sS", "--ftp-port", "127.0.0.1", "-T"])
            .arg(&local)
            .arg(format!("ftp://alice:{PASSWORD}@{addr}/active.txt"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = std::process::Command::new(crate::common::program("curl"))
            .args(["-sS", "--ftp-port", "127.0.0.1"])
            .arg(format!("ftp://alice:{PASSWORD}@{addr}/active.txt"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"sent in active mode");
    })
    .await
    .unwrap();
    t.stop().await;
}

/// A passive port waits for its own client: a connection from another address is closed and the
/// port keeps listening; and a session that sends PASV in a loop holds one port, not the range
/// (issue 18, item 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ports_wait_for_their_client_and_are_not_hoarded() {
    let t = start(Kind::Embedded, |c| {
        let first = *c.ftp.passive_ports.start();
        c.ftp.passive_ports = first..=first + 3;
    })
    .await;
    let addr = t.ftp_addr();
    tokio::task::spawn_blocking(move || {
        let mut f = Ftp::login(addr);
        // 30 PASVs on a range of 4 ports: each supersedes the one before.
        let mut port = 0;
        for i in 0..30 {
            let r = f.send(b"PASV\r\n");
            assert!(r.starts_with("227"), "PASV {i}: {r:?}");
            port = pasv_port(&r);
        }
        // Another session of the same client still gets a port.
        let mut other = Ftp::login(addr);
        assert!(other.send(b"PASV\r\n").starts_with("227"));
        // A scanner from another address reaches the port first: it is closed on it...
        let scanner =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        scanner
            .bind(
                &"127.0.0.2:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        scanner
            .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
            .unwrap();
        let mut scanner: TcpStream = scanner.into();
        scanner
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut got = Vec::new();
        let _ = scanner.read_to_end(&mut got);
        assert!(got.is_empty(), "{got:?}");
        // ...and the client's own transfer still works on it.
        let mut data = TcpStream::connect(("127.0.0.1", port)).unwrap();
        data.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let r = f.send(b"NLST\r\n");
        assert!(r.starts_with("150"), "{r:?}");
        let mut listing = Vec::new();
        data.read_to_end(&mut listing).unwrap();
        let r = f.reply();
        assert!(r.starts_with("226"), "{r:?}");
    })
    .await
    .unwrap();
    t.stop().await;
}

/// The port of a `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)` reply.
fn pasv_port(reply: &str) -> u16 {
    let inner = &reply[reply.find('(').unwrap() + 1..reply.find(')').unwrap()];
    let n: Vec<u16> = inner
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    n[4] * 256 + n[5]
}

/// While events cannot be delivered (no broker here), one user's changes fill at most half of
/// `storage.outbox_limit`: then that user is refused, and everyone else can still work until the
/// outbox is full (issue 18, item 9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_cannot_fill_the_outbox_for_everyone() {
    use filegate::config::Permission;
    let t = start(Kind::Embedded, |c| {
        c.storage.outbox_limit = 20;
        c.users
            .push(crate::common::user("bob", "/home/bob", &Permission::ALL));
    })
    .await;
    let addr = t.ftp_addr();
    tokio::task::spawn_blocking(move || {
        let mut alice = Ftp::login(addr);
        let mut made = 0;
        let refusal = loop {
            let r = alice.send(format!("MKD flood{made}\r\n").as_bytes());
            if !r.starts_with("257") {
                break r;
            }
            made += 1;
            assert!(made <= 20, "alice filled the whole outbox");
        };
        // Half of 20, less what the gateway's start recorded for her home.
        assert!((8..=10).contains(&made), "{made}: {refusal:?}");
        // (libunftp answers 451 with its fixed text; the reason is in the log, and SFTP and
        // HTTP clients get it in their reply.)
        assert!(refusal.starts_with("451"), "{refusal:?}");
        // bob's work goes on (his login makes his home: one event of his own, too).
        let mut bob = Ftp::login_as(addr, "bob");
        for i in 0..3 {
            let r = bob.send(format!("MKD work{i}\r\n").as_bytes());
            assert!(r.starts_with("257"), "bob: {r:?}");
        }
    })
    .await
    .unwrap();
    t.stop().await;
}

/// alice's view of the store, as an SFTP session has it.
async fn alice_session(t: &crate::common::TestGateway) -> filegate::access::UserFs {
    t.gw()
        .access
        .session_for(
            "alice",
            filegate::access::Protocol::Sftp,
            "127.0.0.1:9".parse().unwrap(),
        )
        .await
        .unwrap()
}

/// The names in a store directory (first 100).
async fn names_in(t: &crate::common::TestGateway, dir: &str) -> Vec<String> {
    let page = t
        .store()
        .list(&storage_backend::StorePath::parse(dir).unwrap(), None, 100)
        .await
        .unwrap();
    page.entries.into_iter().map(|e| e.name).collect()
}

/// An FTP control connection, logged in, with its replies read line by line.
struct Ftp {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Ftp {
    fn login(addr: std::net::SocketAddr) -> Ftp {
        Ftp::login_as(addr, "alice")
    }

    fn login_as(addr: std::net::SocketAddr, user: &str) -> Ftp {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut f = Ftp {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        f.reply();
        f.send(format!("USER {user}\r\n").as_bytes());
        f.send(format!("PASS {PASSWORD}\r\n").as_bytes());
        f
    }

    fn send(&mut self, line: &[u8]) -> String {
        self.w.write_all(line).unwrap();
        self.reply()
    }

    /// One whole reply (multi-line ones included).
    fn reply(&mut self) -> String {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap_or(0) == 0 {
                return text;
            }
            text.push_str(&line);
            let b = line.as_bytes();
            if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
                return text;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ftp_lines() {
    let t = start(Kind::Embedded, |_| {}).await;
    let addr = t.ftp_addr();
    tokio::task::spawn_blocking(move || {
        // Each hostile line on a fresh connection: libunftp answers a malformed line (bare CR,
        // invalid UTF-8) with 501 and closes that connection, which is fine; what must never
        // happen is an injected reply line, a directory with a control character, or a crash.
        for line in [
            &b"MKD evil\r226 fake\r\n"[..],
            b"MKD evil\n226 fake\r\n",
            b"MKD a\x00b\r\n",
            b"MKD a\x1bb\r\n",
            b"\xff\xfe\xfd\x00\x01 \x80\r\n",
            b"RNFR x\r\nRNTO \r\n",
        ] {
            let mut f = Ftp::login(addr);
            let r = f.send(line);
            assert!(!r.contains("226 fake"), "{line:?}: {r:?}");
            assert!(r.is_empty() || r.starts_with('5'), "{line:?}: {r:?}");
        }
        // Nothing with a control character was created, and the server still serves.
        let mut f = Ftp::login(addr);
        let r = f.send(b"STAT .\r\n");
        assert!(r.starts_with('2'), "{r:?}");
        assert!(
            !r.chars().any(|c| c.is_control() && c != '\r' && c != '\n'),
            "{r:?}"
        );
        assert!(f.send(b"PWD\r\n").starts_with("257"));
        // An over-long line (1 MiB without an end): refused or the connection closed, and the
        // gateway serves the next client.
        let mut g = Ftp::login(addr);
        let huge = vec![b'A'; 1 << 20];
        let _ = g.w.write_all(&huge);
        let _ = g.w.write_all(b"\r\n");
        let mut rest = Vec::new();
        let _ =
            g.r.get_mut()
                .set_read_timeout(Some(Duration::from_secs(10)));
        let _ = g.r.read_to_end(&mut rest);
        let mut h = Ftp::login(addr);
        assert!(h.send(b"NOOP\r\n").starts_with("200"));
    })
    .await
    .unwrap();
    t.stop().await;
}

/// Before logging in, a command line that never ends is cut off at 8 KiB with a 500 and the
/// connection closed (issue 18, item 1): the gateway does not buffer it until memory runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_ftp_line_before_login_is_refused_at_8_kib() {
    let t = start(Kind::Embedded, |_| {}).await;
    let addr = t.ftp_addr();
    tokio::task::spawn_blocking(move || {
        let streams: Vec<_> = (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut greeting = [0u8; 512];
                let n = s.read(&mut greeting).unwrap();
                assert!(greeting[..n].starts_with(b"220"), "{:?}", &greeting[..n]);
                s
            })
            .collect();
        for mut s in streams {
            // 8 KiB without a newline: refused as soon as the limit is reached. (Exactly that
            // much, so the gateway has read all of it and its close is clean, not a reset that
            // could swallow the reply.)
            s.write_all(&[b'A'; 8192]).unwrap();
            let mut reply = Vec::new();
            let _ = s.read_to_end(&mut reply);
            let reply = String::from_utf8_lossy(&reply);
            assert!(reply.starts_with("500 Command line too long"), "{reply:?}");
        }
        // A client that keeps streaming is cut off: its writes fail long before 64 MiB (socket
        // buffers hold a few MiB at most).
        let mut s = TcpStream::connect(addr).unwrap();
        let piece = vec![b'A'; 64 * 1024];
        let mut sent = 0usize;
        while sent < 64 << 20 {
            match s.write(&piece) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        assert!(sent < 64 << 20, "the gateway kept reading an endless line");
        // Everyone else is served as before.
        let mut h = Ftp::login(addr);
        assert!(h.send(b"NOOP\r\n").starts_with("200"));
    })
    .await
    .unwrap();
    t.stop().await;
}

/// FTP and SSH connections that do not log in within `limits.login_timeout` are closed, however
/// busy they keep it (NOOPs, a finished SSH handshake); and no more than
/// `limits.max_unauthenticated` wait to log in at once (issue 18, item 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_do_not_log_in_are_bounded_in_time_and_number() {
    let t = start(Kind::Embedded, |c| {
        crate::common::sftp_on(c);
        c.limits.login_timeout = Duration::from_secs(2);
        c.limits.max_unauthenticated = 2;
    })
    .await;
    let ftp = t.ftp_addr();
    let sftp = t.sftp_addr();
    // SSH: handshake done, no authentication.
    let config = std::sync::Arc::new(russh::client::Config::default());
    let ssh = russh::client::connect(config, sftp, crate::common::Client)
        .await
        .unwrap();
    let started = Instant::now();
    let (lingerer, refused) = tokio::task::spawn_blocking(move || {
        // FTP: a client that keeps sending NOOP and never logs in.
        let mut s = TcpStream::connect(ftp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("220"), "{line:?}");
        // Two connections wait to log in (the SSH one and this): a third is refused.
        let mut third = TcpStream::connect(ftp).unwrap();
        third
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut refused = String::new();
        let _ = third.read_to_string(&mut refused);
        let mut closed_after = None;
        for _ in 0..100 {
            if s.write_all(b"NOOP\r\n").is_err() {
                closed_after = Some(started.elapsed());
                break;
            }
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    closed_after = Some(started.elapsed());
                    break;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        (closed_after, refused)
    })
    .await
    .unwrap();
    assert!(
        refused.starts_with("421 too many connections are logging in"),
        "{refused:?}"
    );
    let lingered = lingerer.expect("the FTP connection that never logged in was not closed");
    assert!(
        lingered >= Duration::from_secs(2) && lingered < Duration::from_secs(10),
        "{lingered:?}"
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        while !ssh.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the SSH connection that never logged in was not closed");
    // A client that logs in in time stays as long as it likes, and frees its waiting slot.
    let mut a = suppaftp::tokio::AsyncFtpStream::connect(ftp).await.unwrap();
    a.login("alice", PASSWORD).await.unwrap();
    let mut b = suppaftp::tokio::AsyncFtpStream::connect(ftp).await.unwrap();
    b.login("alice", PASSWORD).await.unwrap();
    let mut c = suppaftp::tokio::AsyncFtpStream::connect(ftp).await.unwrap();
    c.login("alice", PASSWORD).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // past the login deadline, on purpose
    a.noop()
        .await
        .expect("a logged-in session outlives the login deadline");
    t.stop().await;
}

/// MQTT connections that have not sent their CONNECT count towards `limits.max_unauthenticated`
/// with FTP's and SSH's (issue 18, item 2); an accepted CONNECT frees the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_connections_without_connect_count_as_not_logged_in() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = test_support::free_port();
    let t = start(Kind::Embedded, |c| {
        c.mqtt.mode = filegate::config::MqttMode::Embedded;
        c.mqtt.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.limits.max_unauthenticated = 2;
    })
    .await;
    crate::common::until_ready(t.gw().http_addr, 200).await;
    let access = t.gw().access.clone();
    let waiting = |n: u32| {
        let access = access.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                while access.waiting_to_log_in() != n {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("never {n} connections waiting to log in"));
        }
    };
    let mut first = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let _second = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    waiting(2).await;
    let ftp = t.ftp_addr();
    let greeting = move || {
        let s = TcpStream::connect(ftp).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    };
    let refused = tokio::task::spawn_blocking(greeting).await.unwrap();
    assert!(
        refused.starts_with("421 too many connections are logging in"),
        "{refused:?}"
    );
    // alice's CONNECT (MQTT 3.1.1) on the first: accepted, and its slot is free again.
    let mut connect = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 60];
    for field in [&b"slots"[..], b"alice", PASSWORD.as_bytes()] {
        connect.extend_from_slice(&(field.len() as u16).to_be_bytes());
        connect.extend_from_slice(field);
    }
    let mut packet = vec![0x10, connect.len() as u8];
    packet.extend_from_slice(&connect);
    first.write_all(&packet).await.unwrap();
    let mut connack = [0u8; 4];
    first.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    waiting(1).await;
    let greeted = tokio::task::spawn_blocking(greeting).await.unwrap();
    assert!(greeted.starts_with("220"), "{greeted:?}");
    t.stop().await;
}

/// 30 FTP connections sending a wrong password at once: no more passwords are checked than
/// `limits.login_failures_per_ip` allows before the ban (issue 18, item 7).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_ftp_guesses_are_checked_no_more_than_the_ban_allows() {
    let t = start(Kind::Embedded, |c| c.limits.login_failures_per_ip = 5).await;
    let addr = t.ftp_addr();
    let guesses: Vec<_> = (0..30)
        .map(|i| {
            tokio::spawn(async move {
                let Ok(mut ftp) = suppaftp::tokio::AsyncFtpStream::connect(addr).await else {
                    return; // already banned: refused at connect
                };
                assert!(ftp.login("alice", &format!("guess{i}")).await.is_err());
            })
        })
        .collect();
    for g in guesses {
        g.await.unwrap();
    }
    let (_, metrics) = crate::common::http_get(t.gw().http_addr, "/metrics").await;
    let checked: u64 = metrics
        .lines()
        .find(|l| l.starts_with("filegate_failed_logins_total{protocol=\"ftp\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no FTP failed logins in {metrics}"));
    assert!(
        (1..=5).contains(&checked),
        "{checked} passwords were checked"
    );
    assert!(t.gw().access.banned_for(addr.ip()).is_some());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_packets_over_the_limit_are_refused_without_harm() {
    let broker_port = test_support::free_port();
    let t = start(Kind::Embedded, |c| {
        c.mqtt.mode = filegate::config::MqttMode::Embedded;
        c.mqtt.listen = format!("127.0.0.1:{broker_port}").parse().unwrap();
    })
    .await;
    // A CONNECT as alice, then a PUBLISH announcing 64 MiB (over the 16 MiB limit).
    let mut s = TcpStream::connect(("127.0.0.1", broker_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut connect = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xC2, 0x00, 0x3c];
    for field in [&b"big"[..], b"alice", PASSWORD.as_bytes()] {
        connect.extend_from_slice(&(field.len() as u16).to_be_bytes());
        connect.extend_from_slice(field);
    }
    let mut packet = vec![0x10, connect.len() as u8];
    packet.extend_from_slice(&connect);
    s.write_all(&packet).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "alice logs in");
    // Remaining length 64 MiB as a variable-length integer.
    let mut len = 64u32 << 20;
    let mut header = vec![0x30];
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        header.push(b);
        if len == 0 {
            break;
        }
    }
    header.extend_from_slice(&[0x00, 0x01, b't']);
    let _ = s.write_all(&header);
    let _ = s.write_all(&vec![0u8; 1 << 20]);
    // The broker drops that client…
    let mut rest = Vec::new();
    if let Err(e) = s.read_to_end(&mut rest) {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the broker kept a client announcing a 64 MiB packet: {e}"
        );
    }
    // …and goes on serving others.
    let mut o = rumqttc::MqttOptions::new("after", "127.0.0.1", broker_port);
    o.set_credentials("alice", PASSWORD);
    let (_client, mut el) = rumqttc::AsyncClient::new(o, 10);
    let ack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) = el.poll().await {
                return a;
            }
        }
    })
    .await
    .expect("the broker still accepts clients");
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
    t.stop().await;
}

/// The MQTT corpus and its mutations on a live broker, one connection each: every connection
/// ends, none is left behind, and the broker keeps serving (the panic rumqttd had is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_packets_on_a_live_broker() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = test_support::free_port();
    let t = start(Kind::Embedded, |c| {
        c.mqtt.mode = filegate::config::MqttMode::Embedded;
        c.mqtt.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.mqtt.commands = true;
        // Mutated passwords are wrong passwords: no ban, or the rest would test the ban.
        c.limits.login_failures_per_ip = u32::MAX;
    })
    .await;
    t.gw().access.set_failure_delay(Duration::ZERO);
    crate::common::until_ready(t.gw().http_addr, 200).await;
    let idle = t.gw().access.active_connections();
    let seeds = corpus("mqtt_packets");
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let started = Instant::now();
    let mut n = 0;
    while n < seeds.len() || started.elapsed() < budget() {
        let input = if n < seeds.len() {
            seeds[n].clone()
        } else {
            mutate(&mut rng, &seeds)
        };
        n += 1;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let _ = s.write_all(&input).await;
        let _ = s.shutdown().await;
        // The broker answers what it can and closes once our side is closed.
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut sink)).await;
        assert!(
            closed.is_ok(),
            "the broker kept a connection open after {input:02x?}"
        );
    }
    eprintln!("mqtt on a live broker: {n} connections");
    until_true(
        "connections were left behind",
        Duration::from_secs(20),
        || async { t.gw().access.active_connections() <= idle },
    )
    .await;
    let mut o = rumqttc::MqttOptions::new("after-fuzz", "127.0.0.1", port);
    o.set_credentials("alice", PASSWORD);
    let (_client, mut el) = rumqttc::AsyncClient::new(o, 10);
    let ack = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))) = el.poll().await {
                return a;
            }
        }
    })
    .await
    .expect("the broker still accepts clients");
    assert_eq!(ack.code, rumqttc::ConnectReturnCode::Success);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_packets() {
    let t = start(Kind::Embedded, |_| {}).await;
    let fs = alice_session(&t).await;
    let seeds = corpus("sftp_packets");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let started = Instant::now();
    let mut n = 0;
    let seeds_then_mutations = seeds.iter().cloned().chain(std::iter::from_fn(|| {
        (started.elapsed() < budget()).then(|| mutate(&mut rng, &seeds))
    }));
    for input in seeds_then_mutations {
        tokio::time::timeout(
            Duration::from_secs(10),
            filegate::fuzz::sftp_packets(&fs, &input),
        )
        .await
        .expect("an SFTP session must end when its input does");
        n += 1;
    }
    eprintln!("sftp_packets: {n} inputs");
    assert_eq!(names_in(&t, "/").await, ["home"]);
    t.stop().await;
}
