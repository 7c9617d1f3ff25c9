//! Smoke tests of the built `filegate` binary: check-config, hash-password, and serve until SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_filegate");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn shipped_config() -> PathBuf {
    repo().join("config/filegate.toml")
}

/// The binary, run from the repository root, without any `FILEGATE__…` variable of the caller's.
fn filegate(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(repo());
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("FILEGATE__")
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("filegate runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[test]
fn check_config_accepts_the_shipped_config_and_masks_secrets() {
    let config = shipped_config();
    let (out, stdout, stderr) = run(&mut filegate(&[
        "check-config",
        "--config",
        config.to_str().unwrap(),
    ]));
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stdout.contains("[storage]"), "{stdout}");
    assert!(stdout.contains("chunk_size = \"512KiB\""), "{stdout}");
    assert!(stdout.contains("name = \"demo\""), "{stdout}");
    assert!(stdout.contains("<argon2id hash>"), "{stdout}");
    assert!(!stdout.contains("$argon2id$"), "a hash is shown:\n{stdout}");

    // The default path is config/filegate.toml in the working directory.
    let (out, _, stderr) = run(&mut filegate(&["check-config"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
}

#[test]
fn check_config_rejects_a_bad_config_with_exit_2_naming_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[storage]\nchunk_size = \"0\"\n[mqtt]\nqos = 7\n").unwrap();
    let (out, _, stderr) = run(&mut filegate(&[
        "check-config",
        "--config",
        path.to_str().unwrap(),
    ]));
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("storage.chunk_size"), "{stderr}");
    assert!(stderr.contains("64KiB and 64MiB"), "{stderr}");
    assert!(stderr.contains("mqtt.qos"), "{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");

    // An unknown key from the environment names the variable.
    let (out, _, stderr) =
        run(filegate(&["check-config"]).env("FILEGATE__STORAGE__CHUNKSIZE", "1MiB"));
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("FILEGATE__STORAGE__CHUNKSIZE"), "{stderr}");
    assert!(stderr.contains("unknown key"), "{stderr}");

    // A missing file names its path.
    let (out, _, stderr) = run(&mut filegate(&["check-config", "-c", "/no/such.toml"]));
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("/no/such.toml"), "{stderr}");
}

#[test]
fn hash_password_round_trip() {
    let mut child = filegate(&["hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"round trip pw\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout).unwrap();
    let hash = hash.trim_end();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(filegate::password::verify_password(hash, "round trip pw"));
    assert!(!filegate::password::verify_password(
        hash,
        "round trip pw\n"
    ));

    // An empty line is refused.
    let mut child = filegate(&["hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

/// Waits for `child` to exit, at most `limit`.
fn wait_with_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    crate::common::binary::wait_exit(child, limit)
        .unwrap_or_else(|| panic!("filegate did not exit within {limit:?} of SIGTERM"))
}

#[test]
fn serve_starts_prints_its_line_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = data.join("store/filegate.redb");
    let host_key = data.join("ssh_host_ed25519_key");
    let mut child = filegate(&["serve", "--config", shipped_config().to_str().unwrap()])
        .env("FILEGATE__SERVER__DATA_DIR", &data)
        .env("FILEGATE__STORAGE__EMBEDDED__PATH", &store)
        .env(
            "FILEGATE__SFTP__HOST_KEYS",
            format!("[{:?}]", host_key.to_str().unwrap()),
        )
        // Free ports, so the test never clashes with a running gateway once front-ends listen.
        .env("FILEGATE__FTP__LISTEN", "127.0.0.1:0")
        .env("FILEGATE__SFTP__LISTEN", "127.0.0.1:0")
        .env("FILEGATE__MQTT__LISTEN", "127.0.0.1:0")
        .env("FILEGATE__HTTP__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Read standard output on a thread so the wait for the startup line has a deadline.
    let (lines_tx, lines_rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).ok();
        text
    });

    let expected = format!("filegate: storage embedded at {}", store.display());
    let mut mqtt = None;
    let line = loop {
        match lines_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.starts_with("filegate: storage") => break line,
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("filegate: mqtt broker listening on ") {
                    mqtt = rest.split_whitespace().next().map(str::to_string);
                }
                continue;
            }
            Err(e) => {
                child.kill().ok();
                let stderr = stderr_reader.join().unwrap();
                panic!("no startup line from filegate ({e}); stderr:\n{stderr}");
            }
        }
    };
    assert!(line.starts_with(&expected), "{line}");
    assert!(line.contains("(namespace filegate)"), "{line}");
    assert!(store.exists(), "the store file was not created");
    // Nobody but the gateway's user can look into what it created (issue 18, item 11).
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [
        (&data, 0o700),
        (&data.join("store"), 0o700),
        (&store, 0o600),
        (&host_key, 0o600),
    ] {
        let got = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "{} is {got:o}", path.display());
    }

    // An idle MQTT 5 subscriber (the shipped demo user) does not hold the shutdown up.
    let mqtt: std::net::SocketAddr = mqtt.expect("a broker line").parse().unwrap();
    let mut sub = idle_mqtt5_subscriber(mqtt);

    let asked = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("the kill command runs");
    assert!(kill.success());
    let status = wait_with_deadline(&mut child, Duration::from_secs(30));
    let took = asked.elapsed();
    let stderr = stderr_reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("SIGTERM"), "stderr:\n{stderr}");
    // Nothing was transferring: no waiting for the 30 s shutdown grace.
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
    eprintln!("shutdown with an idle MQTT subscriber took {took:?}");
    // The subscriber was told (MQTT 5 DISCONNECT, reason 0x8B "server shutting down").
    let mut rest = Vec::new();
    sub.read_to_end(&mut rest).unwrap();
    let mut packets = bytes::BytesMut::from(&rest[..]);
    let mut told = false;
    while let Ok(p) = rumqttc::v5::mqttbytes::v5::Packet::read(&mut packets, None) {
        if let rumqttc::v5::mqttbytes::v5::Packet::Disconnect(d) = p {
            told = d.reason_code
                == rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::ServerShuttingDown;
        }
    }
    assert!(told, "the subscriber got {rest:02x?}");
}

/// Logs in over MQTT 5 as the shipped demo user and subscribes to every event; returns the socket
/// once the SUBACK is in (packets written by rumqttc's codec, read by hand).
fn idle_mqtt5_subscriber(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use rumqttc::v5::mqttbytes::v5::{Connect, Filter, Login, Packet, Subscribe};
    use rumqttc::v5::mqttbytes::QoS;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = bytes::BytesMut::new();
    let connect = Connect {
        keep_alive: 60,
        client_id: "idle".into(),
        clean_start: true,
        properties: None,
    };
    Packet::Connect(connect, None, Some(Login::new("demo", "demo")))
        .write(&mut out, None)
        .unwrap();
    Packet::Subscribe(Subscribe::new(
        Filter::new("filegate/events/#", QoS::AtLeastOnce),
        None,
    ))
    .write(&mut out, None)
    .unwrap();
    s.write_all(&out).unwrap();
    let mut inbuf = bytes::BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        match Packet::read(&mut inbuf, None) {
            Ok(Packet::ConnAck(a)) => assert_eq!(
                a.code,
                rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
            ),
            Ok(Packet::SubAck(_)) => return s,
            Ok(_) => {}
            Err(_) => {
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "the broker closed the connection");
                inbuf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}
