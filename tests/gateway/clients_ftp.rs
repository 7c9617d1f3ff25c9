//! The FTP client matrix (issue 15): the clients users run, driving the gateway on both storage
//! backends. Each uploads, lists, renames, downloads and compares bytes (the scripts under
//! tests/clients/ check their own side); the test checks that every completed upload produced
//! exactly one complete event and no other name was announced. Also: uploads cut off by a killed
//! client, SIGTERM with idle sessions, and the log an operator reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{client, content, program, start, until, user, Kind, TestGateway, PASSWORD};
use filegate::config::Permission;
use storage_backend::EventKind;

/// Every client gets a user of its own, so that the runs of one gateway do not meet.
const CLIENTS: &[&str] = &[
    "py_plain",
    "py_explicit",
    "py_implicit",
    "node_plain",
    "node_tls",
    "java_plain",
    "java_tls",
    "lftp",
    "curl",
    "rclone",
];

/// A gateway with explicit FTPS available (not required) and an implicit-FTPS listener.
async fn gateway(kind: Kind, certs: &Path) -> TestGateway {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(certs.join("ftp.crt"), made.cert.pem()).unwrap();
    std::fs::write(certs.join("ftp.key"), made.signing_key.serialize_pem()).unwrap();
    start(kind, |c| {
        c.ftp.tls.enabled = true;
        c.ftp.tls.cert = certs.join("ftp.crt");
        c.ftp.tls.key = certs.join("ftp.key");
        c.ftp.tls.implicit_listen = Some("127.0.0.1:0".parse().unwrap());
        for name in CLIENTS {
            c.users
                .push(user(name, &format!("/home/{name}"), &Permission::ALL));
        }
    })
    .await
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn host_port(t: &TestGateway) -> (String, String) {
    let a = t.ftp_addr();
    (a.ip().to_string(), a.port().to_string())
}

/// Checks the events of `home`: each of `uploads` (paths under the home) was announced complete
/// exactly once, and no other file was announced created, modified or incomplete (no temporary
/// name, no cut-off).
async fn check_events(t: &TestGateway, home: &str, uploads: &[&str]) {
    // What subscribers are told: the announcements under the default temp-name rules (a client
    // that uploads under a temporary name and renames, like a current rclone, is announced once,
    // under the final name).
    let temp = filegate::events::TempNames::new(&filegate::Config::default().events.temp_patterns);
    let events = t.events().await;
    let announced: Vec<_> = events
        .iter()
        .filter_map(|e| Some((filegate::events::announce(e, &temp)?, e)))
        .filter(|(a, _)| a.path.starts_with(&format!("{home}/")))
        .filter(|(a, _)| {
            matches!(
                a.kind,
                "io.filegate.file.created"
                    | "io.filegate.file.modified"
                    | "io.filegate.file.incomplete"
            )
        })
        .collect();
    for name in uploads {
        let path = format!("{home}/{name}");
        let complete: Vec<_> = announced
            .iter()
            .filter(|(a, e)| a.path == path && e.complete == Some(true))
            .collect();
        // One upload, one announcement. A client may upload the same file again on its own (rclone
        // 1.60 retried one of 300 uploads once under a fully loaded machine): each repeat is then a
        // complete, identical version of its own, never a half file.
        assert!(
            !complete.is_empty()
                && complete
                    .iter()
                    .all(|(_, e)| e.sha256 == complete[0].1.sha256),
            "{path}: {} complete announcements: {announced:#?}",
            complete.len()
        );
        if complete.len() > 1 {
            eprintln!("{path}: the client uploaded it {} times", complete.len());
        }
    }
    for (a, e) in &announced {
        let name = a.path.strip_prefix(&format!("{home}/")).unwrap();
        assert!(
            uploads.contains(&name) && e.complete == Some(true),
            "{home}: unexpected announcement {a:?} of {e:#?}"
        );
    }
}

on_both_backends!(
    python_ftplib,
    node_basic_ftp,
    commons_net,
    lftp_mirror_pget_resume,
    curl_ranges_and_create_dirs,
    rclone_sync_into_a_new_folder,
    killed_clients_leave_incomplete_files,
);

/// ftplib over FTP, explicit FTPS (`prot_p`, whose uploads failed with `SSLEOFError`) and implicit
/// FTPS; `OPTS MLST` and a rejected `MODE Z` keep the session; MKD/PWD/listing replies; MFMT and
/// SITE UTIME; a read-only user's RNFR is refused at once.
async fn python_ftplib(kind: Kind) {
    let certs = tempfile::tempdir().unwrap();
    let t = gateway(kind, certs.path()).await;
    let (host, port) = host_port(&t);
    let implicit = t.gw().ftps_implicit_addr.unwrap().port().to_string();
    let script = clients_dir().join("ftplib_client.py");
    for (mode, name, port) in [
        ("plain", "py_plain", &port),
        ("explicit", "py_explicit", &port),
        ("implicit", "py_implicit", &implicit),
    ] {
        client(
            "python3",
            &[script.to_str().unwrap(), mode, &host, port, name, PASSWORD],
        );
        check_events(
            &t,
            &format!("/home/{name}"),
            &["py/data.bin", "py/empty.bin"],
        )
        .await;
    }
    // "reader" shares alice's home and may list and read only.
    let mut ftp = suppaftp::tokio::AsyncFtpStream::connect(t.ftp_addr())
        .await
        .unwrap();
    ftp.login("alice", PASSWORD).await.unwrap();
    ftp.put_file("keep.txt", &mut &b"keep"[..]).await.unwrap();
    ftp.quit().await.unwrap();
    client(
        "python3",
        &[
            clients_dir().join("ftplib_readonly.py").to_str().unwrap(),
            &host,
            &port,
            "reader",
            PASSWORD,
            "keep.txt",
        ],
    );
    // ABOR after a Telnet Synch sent as urgent data, as lftp sends it (its `pget` waited for the
    // reply until its own timeout).
    client(
        "python3",
        &[
            clients_dir().join("abor_urgent.py").to_str().unwrap(),
            &host,
            &port,
            "alice",
            PASSWORD,
        ],
    );
    t.stop().await;
}

/// The node modules of tests/clients/node (scripts/test runs `npm ci` there).
fn node_script() -> PathBuf {
    let dir = clients_dir().join("node");
    assert!(
        dir.join("node_modules/basic-ftp").is_dir(),
        "basic-ftp is not installed: run scripts/test (npm ci in tests/clients/node)"
    );
    dir.join("basic_ftp_client.js")
}

/// basic-ftp sends `OPTS MLST` on connect (every session died of it) and, over FTPS, sends an
/// empty file without a TLS handshake or close_notify (refused with 426 before).
async fn node_basic_ftp(kind: Kind) {
    let certs = tempfile::tempdir().unwrap();
    let t = gateway(kind, certs.path()).await;
    let (host, port) = host_port(&t);
    let script = node_script();
    for (mode, name) in [("plain", "node_plain"), ("explicit", "node_tls")] {
        client(
            "node",
            &[script.to_str().unwrap(), mode, &host, &port, name, PASSWORD],
        );
        check_events(
            &t,
            &format!("/home/{name}"),
            &["node/data.bin", "node/empty.bin"],
        )
        .await;
        let stored = t
            .store()
            .stat(
                &storage_backend::StorePath::parse(&format!("/home/{name}/node/empty.bin"))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(stored.complete && stored.size == 0);
    }
    t.stop().await;
}

/// Apache Commons Net's FTPClient and FTPSClient (Debian's libcommons-net-java), compiled here.
async fn commons_net(kind: Kind) {
    let certs = tempfile::tempdir().unwrap();
    let t = gateway(kind, certs.path()).await;
    let (host, port) = host_port(&t);
    let classes = t.temp_path("java");
    std::fs::create_dir_all(&classes).unwrap();
    let jar = "/usr/share/java/commons-net.jar";
    assert!(
        Path::new(jar).is_file(),
        "{jar} missing: run scripts/test (apt-get install libcommons-net-java)"
    );
    client(
        "javac",
        &[
            "-cp",
            jar,
            "-d",
            classes.to_str().unwrap(),
            clients_dir()
                .join("CommonsNetClient.java")
                .to_str()
                .unwrap(),
        ],
    );
    let cp = format!("{}:{jar}", classes.display());
    for (mode, name) in [("plain", "java_plain"), ("explicit", "java_tls")] {
        client(
            "java",
            &[
                "-cp",
                &cp,
                "CommonsNetClient",
                mode,
                &host,
                &port,
                name,
                PASSWORD,
            ],
        );
        check_events(&t, &format!("/home/{name}"), &["java/data.bin"]).await;
    }
    t.stop().await;
}

/// Runs lftp with `commands`; any command that fails (after one try: a reply that never comes
/// fails it after 10 s) fails the test.
fn lftp(t: &TestGateway, name: &str, commands: &str) -> Vec<u8> {
    let a = t.ftp_addr();
    client(
        "lftp",
        &[
            "-u",
            &format!("{name},{PASSWORD}"),
            "-e",
            &format!(
                "set ftp:ssl-allow no; set net:timeout 10; set net:max-retries 1; set cmd:fail-exit yes; {commands}; bye"
            ),
            &format!("ftp://{}:{}", a.ip(), a.port()),
        ],
    )
}

/// lftp: `mirror -R` of a tree, `pget -n 4` (four ranged downloads at once), `put -c` (resume).
async fn lftp_mirror_pget_resume(kind: Kind) {
    let certs = tempfile::tempdir().unwrap();
    let t = gateway(kind, certs.path()).await;
    let local = t.temp_path("tree");
    std::fs::create_dir_all(local.join("sub")).unwrap();
    let files = [
        ("a.txt", 1_000),
        ("b.bin", 70_000),
        ("sub/c.bin", 16_000_000),
    ];
    for (i, (name, len)) in files.iter().enumerate() {
        std::fs::write(local.join(name), content(i as u8 + 1, *len)).unwrap();
    }
    lftp(&t, "lftp", &format!("mirror -R {} up", local.display()));
    let back = t.temp_path("back");
    std::fs::create_dir_all(&back).unwrap();
    lftp(
        &t,
        "lftp",
        &format!(
            "mv up/b.bin up/renamed.bin; pget -n 4 -O {} up/sub/c.bin; mirror up {}/mirror",
            back.display(),
            back.display()
        ),
    );
    assert!(std::fs::read(back.join("c.bin")).unwrap() == content(3, 16_000_000));
    assert!(std::fs::read(back.join("mirror/renamed.bin")).unwrap() == content(2, 70_000));
    let a = std::fs::read(back.join("mirror/a.txt")).unwrap();
    assert!(
        a == content(1, 1_000),
        "a.txt: {} bytes {:?}",
        a.len(),
        &a[..a.len().min(40)]
    );
    // put -c: the first half is there (a complete upload of its own), lftp sends the rest.
    let whole = content(9, 2_000_000);
    std::fs::write(t.temp_path("half"), &whole[..1_000_000]).unwrap();
    std::fs::write(t.temp_path("whole"), &whole).unwrap();
    lftp(
        &t,
        "lftp",
        &format!("put {} -o resumed.bin", t.temp_path("half").display()),
    );
    lftp(
        &t,
        "lftp",
        &format!("put -c {} -o resumed.bin", t.temp_path("whole").display()),
    );
    assert!(t.store_bytes("/home/lftp/resumed.bin").await == whole);
    let events = t.events().await;
    let resumed: Vec<_> = events
        .iter()
        .filter(|e| e.path == "/home/lftp/resumed.bin" && e.kind != EventKind::FileAttributes)
        .map(|e| (e.kind, e.complete, e.size))
        .collect();
    assert_eq!(
        resumed,
        [
            (EventKind::FileCreated, Some(true), Some(1_000_000)),
            (EventKind::FileModified, Some(true), Some(2_000_000))
        ]
    );
    let mirrored = events
        .iter()
        .filter(|e| e.path.starts_with("/home/lftp/up/"))
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::FileCreated | EventKind::FileModified | EventKind::FileIncomplete
            )
        })
        .map(|e| (e.path.as_str(), e.complete))
        .collect::<Vec<_>>();
    assert_eq!(mirrored.len(), 3, "{mirrored:?}");
    check_events(&t, "/home/lftp/up", &["a.txt", "b.bin", "sub/c.bin"]).await;
    t.stop().await;
}

/// curl: `--ftp-create-dirs` into a new tree, ranged downloads, rename by quote commands.
async fn curl_ranges_and_create_dirs(kind: Kind) {
    let certs = tempfile::tempdir().unwrap();
    let t = gateway(kind, certs.path()).await;
    let data = content(4, 500_000);
    let file = t.temp_path("up.bin");
    std::fs::write(&file, &data).unwrap();
    client(
        "curl",
        &[
            "-sS",
            "--ftp-create-dirs",
            "-T",
            file.to_str().unwrap(),
            &t.ftp_url("curl", "x/y/z/up.bin"),
        ],
    );
    let range = client(
        "curl",
        &["-sS", "-r", "1000-1999", &t.ftp_url("curl", "x/y/z/up.bin")],
    );
    assert!(range == data[1000..2000]);
    let tail = client(
        "curl",
        &["-sS", "-r", "499000-", &t.ftp_url("curl", "x/y/z/up.bin")],
    );
    assert!(tail == data[499_000..]);
    client(
        "curl",
        &[
            "-sS",
            "-Q",
            "RNFR x/y/z/up.bin",
            "-Q",
            "RNTO x/done.bin",
            &t.ftp_url("curl", ""),
        ],
    );
    let listing = String::from_utf8(client("curl", &["-sS", &t.ftp_url("curl", "x/")])).unwrap();
    assert!(listing.contains("done.bin"), "{listing}");
    assert!(client("curl", &["-sS", &t.ftp_url("curl", "x/done.bin")]) == data);
    check_events(&t, "/home/curl", &["x/y/z/up.bin"]).await;
    t.stop().await;
}

/// rclone's FTP back-end (Debian's 1.60 and a current release): `sync` of a few hundred small files into a folder that
/// does not exist yet (it lists it first: a 150 before the 550 failed every such sync), then
/// `check`, then a second sync that has nothing to do.
async fn rclone_sync_into_a_new_folder(kind: Kind) {
    let certs = tempfile::tempdir().unwrap();
    let t = gateway(kind, certs.path()).await;
    let local = t.temp_path("many");
    let mut names = Vec::new();
    for i in 0..300 {
        let name = format!("d{}/f{i:03}.dat", i % 5);
        std::fs::create_dir_all(local.join(format!("d{}", i % 5))).unwrap();
        std::fs::write(local.join(&name), content(i as u8, 100 + i * 7)).unwrap();
        names.push(format!("new/folder/{name}"));
    }
    let obscured = String::from_utf8(client("rclone", &["obscure", PASSWORD])).unwrap();
    let a = t.ftp_addr();
    // Debian's rclone syncs into new/folder, the current release into new/current.
    for (version, binary) in crate::common::rclones() {
        let into = if version == "current" {
            "new/current"
        } else {
            "new/folder"
        };
        let remote = format!(
            ":ftp,host={},port={},user=rclone,pass={}:{into}",
            a.ip(),
            a.port(),
            obscured.trim()
        );
        let config = t.temp_path("rclone.conf");
        std::fs::write(&config, "").unwrap();
        let rclone = |args: &[&str]| {
            let out = Command::new(&binary)
                .args(["--config", config.to_str().unwrap(), "-q"])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "rclone ({version}) {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        rclone(&["sync", local.to_str().unwrap(), &remote]);
        rclone(&["check", local.to_str().unwrap(), &remote]);
        rclone(&["sync", local.to_str().unwrap(), &remote]);
    }
    let names: Vec<String> = names
        .iter()
        .flat_map(|n| [n.clone(), n.replace("new/folder/", "new/current/")])
        .collect();
    let uploads: Vec<&str> = names.iter().map(String::as_str).collect();
    check_events(&t, "/home/rclone", &uploads).await;
    t.stop().await;
}

/// Starts `program` with `args`, writes `bytes` of `data` into its standard input (the upload it
/// sends), and kills it (SIGKILL, or SIGTERM as `timeout` does) while its transfer is running.
fn killed_mid_upload(program_name: &str, args: &[String], data: &[u8], signal: &str) {
    let mut child = Command::new(program(program_name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The pipe holds 64 KiB: once this write returns, the client has read (and sent on) all but
    // that much of it, so the gateway is in the middle of the upload.
    std::io::Write::write_all(&mut stdin, data).unwrap();
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let _ = child.wait();
    drop(stdin);
}

/// A client killed mid-upload closes both its connections with a FIN, which on the data
/// connection looks like the end of the file. The upload must be kept as incomplete
/// (`file.incomplete`), never announced complete. curl and lftp, killed by SIGKILL and SIGTERM.
async fn killed_clients_leave_incomplete_files(kind: Kind) {
    let certs = tempfile::tempdir().unwrap();
    let t = gateway(kind, certs.path()).await;
    let data = content(8, 6 << 20);
    let a = t.ftp_addr();
    let fifo_dir = t.temp_path("fifo");
    std::fs::create_dir_all(&fifo_dir).unwrap();
    let mut cases = Vec::new();
    for signal in ["KILL", "TERM"] {
        let name = format!("curl-{signal}.bin");
        killed_mid_upload(
            "curl",
            &[
                "-sS".into(),
                "-T".into(),
                "-".into(),
                t.ftp_url("curl", &name),
            ],
            &data,
            signal,
        );
        cases.push(format!("/home/curl/{name}"));
        let name = format!("lftp-{signal}.bin");
        killed_mid_upload(
            "lftp",
            &[
                "-u".into(),
                format!("lftp,{PASSWORD}"),
                "-e".into(),
                format!("set ftp:ssl-allow no; put /dev/stdin -o {name}; bye"),
                format!("ftp://{}:{}", a.ip(), a.port()),
            ],
            &data,
            signal,
        );
        cases.push(format!("/home/lftp/{name}"));
    }
    for path in &cases {
        let p = storage_backend::StorePath::parse(path).unwrap();
        let kept = format!("{path}: the cut-off upload was not kept");
        let meta = until(&kept, Duration::from_secs(30), || t.store().stat(&p)).await;
        assert!(!meta.complete, "{path} was stored as complete: {meta:?}");
        // The client may have sent everything it read before it was killed; it never ended the
        // upload either way.
        assert!(
            meta.size > 0 && meta.size <= data.len() as u64,
            "{path}: {}",
            meta.size
        );
        let stored = t.store_bytes(path).await;
        assert!(
            stored == data[..stored.len()],
            "{path}: stored bytes differ"
        );
        let events: Vec<_> = t
            .events()
            .await
            .into_iter()
            .filter(|e| &e.path == path)
            .map(|e| (e.kind, e.complete))
            .collect();
        assert_eq!(events, [(EventKind::FileIncomplete, Some(false))], "{path}");
    }
    t.stop().await;
}

// --- The gateway binary: shutdown and logs. ---

/// Reads one reply (all its lines) from a raw control connection.
fn reply(reader: &mut impl std::io::BufRead) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            return all;
        }
        all.push_str(&line);
        if line.len() >= 4 && line.as_bytes()[3] == b' ' {
            return all;
        }
    }
}

/// SIGTERM with two idle logged-in sessions: both are closed at once with 421 and the gateway
/// exits 0 well within `server.shutdown_grace` (30 s), instead of waiting all of it.
#[test]
fn sigterm_closes_idle_sessions_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gw = crate::common::binary::Binary::start(dir.path(), "", None);
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let stream = std::net::TcpStream::connect(gw.ftp).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        assert!(reply(&mut reader).starts_with("220"));
        for (command, code) in [
            ("USER ops".to_string(), "331"),
            (format!("PASS {}", crate::common::binary::SECRET), "230"),
        ] {
            std::io::Write::write_all(&mut writer, format!("{command}\r\n").as_bytes()).unwrap();
            let r = reply(&mut reader);
            assert!(r.starts_with(code), "{command}: {r}");
        }
        sessions.push((reader, writer));
    }
    let signalled = Instant::now();
    gw.signal("TERM");
    for (reader, _) in &mut sessions {
        let r = reply(reader);
        assert!(
            r.starts_with("421"),
            "an idle session got {r:?} at shutdown"
        );
    }
    // The bound only stops a hung test; what is asserted is that the grace period did not run out.
    let (code, log) = gw.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");
    assert!(
        !log.contains("the shutdown grace period is over"),
        "shutdown waited for the grace period ({:?}): {log}",
        signalled.elapsed()
    );
}

/// The log of an FTP and an FTPS session as an operator reads it from a file: no struct dumps of
/// libunftp's internals (they came with `RUST_LOG=info`), no warning about the IP address a client
/// sends as its TLS server name (default filter), no colour codes.
#[test]
fn ftp_sessions_log_plain_lines() {
    for rust_log in ["", "RUST_LOG=info"] {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("ftp.crt"), made.cert.pem()).unwrap();
        std::fs::write(dir.path().join("ftp.key"), made.signing_key.serialize_pem()).unwrap();
        let env = format!(
            "FILEGATE__FTP__TLS__ENABLED=true FILEGATE__FTP__TLS__CERT={0}/ftp.crt \
             FILEGATE__FTP__TLS__KEY={0}/ftp.key {rust_log}",
            dir.path().display()
        );
        let gw = crate::common::binary::start_with_env(dir.path(), "logs", &env);
        let (host, port) = (gw.ftp.ip().to_string(), gw.ftp.port().to_string());
        let script = clients_dir().join("ftplib_client.py");
        client(
            "python3",
            &[
                script.to_str().unwrap(),
                "explicit",
                &host,
                &port,
                "ops",
                crate::common::binary::SECRET,
            ],
        );
        gw.signal("TERM");
        let (code, log) = gw.wait(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{log}");
        assert!(log.contains("transfer"), "no transfer logged: {log}");
        let mut unwanted = vec!["PrimaryEventHandler", "Mutex {", "session: ", "\u{1b}["];
        if rust_log.is_empty() {
            unwanted.push("SNI");
        }
        for bad in unwanted {
            assert!(
                !log.contains(bad),
                "{rust_log:?}: the log contains {bad:?}:\n{log}"
            );
        }
    }
}
