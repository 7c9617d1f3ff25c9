//! Live events over HTTP on both backends, with real clients (tests/clients/events_client.py:
//! Python `requests` reading Server-Sent Events, `websockets` for the WebSocket): files written
//! over FTP (curl), SFTP (OpenSSH sftp), MQTT (mosquitto_pub to the `put` command) and HTTP reach
//! their owner's streams and nobody else's, incomplete uploads flagged; resuming after a
//! disconnect loses and repeats nothing; JSON replay pages; 410 once the history is trimmed.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{
    client, client_key, program, sftp_on, start, until, until_true, user, Kind, TestGateway,
    PASSWORD,
};
use filegate::config::{MqttMode, Permission};
use serde_json::Value;

on_both_backends!(
    every_protocol_reaches_its_owners_streams_only,
    resume_loses_and_repeats_nothing,
    trimmed_history_is_gone_with_410,
);

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/events_client.py"
);

fn base(t: &TestGateway) -> String {
    format!("http://{}/api/v1", t.gw().http_addr)
}

/// A client process whose output lines arrive on a channel as it prints them.
struct Stream {
    child: Child,
    lines: mpsc::Receiver<String>,
    name: String,
}

impl Stream {
    /// Starts `events_client.py {args}` and waits for its READY line (the stream is open).
    fn start(name: &str, args: &[&str]) -> Stream {
        let mut child = Command::new(program("python3"))
            .arg(SCRIPT)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut s = Stream {
            child,
            lines,
            name: name.to_string(),
        };
        let ready = s.line(Duration::from_secs(30));
        assert_eq!(ready.as_deref(), Some("READY"), "{name} did not start");
        s
    }

    fn line(&mut self, wait: Duration) -> Option<String> {
        self.lines.recv_timeout(wait).ok()
    }

    /// Every event the client printed until it saw its stop subject and exited.
    fn finish(mut self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut events = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => events.push(serde_json::from_str(&line).unwrap()),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("{} never saw its last event; got {events:?}", self.name);
                }
            }
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{} failed: {events:?}", self.name);
        events
    }
}

/// Runs `events_client.py {args}` to its end (killed after two minutes: a stream that waits for
/// an event that never comes would otherwise wait forever, its keep-alives resetting timeouts).
fn python(args: &[&str]) -> String {
    let mut child = Command::new(program("python3"))
        .arg(SCRIPT)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    crate::common::binary::wait_exit(&mut child, Duration::from_secs(120));
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "events_client.py {args:?}: {text}");
    text
}

fn subjects(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["subject"].as_str().unwrap().to_string())
        .collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn every_protocol_reaches_its_owners_streams_only(kind: Kind) {
    let mqtt_port = test_support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = client_key(dir.path(), "alice_key");
    let t = start(kind, |c| {
        sftp_on(c);
        c.users[0].authorized_keys = vec![public];
        c.users.push(user("bob", "/home/bob", &Permission::ALL));
        c.mqtt.mode = MqttMode::Embedded;
        c.mqtt.listen = format!("127.0.0.1:{mqtt_port}").parse().unwrap();
        c.mqtt.commands = true;
    })
    .await;
    let b = base(&t);
    let alice_sse = Stream::start("alice's SSE", &["sse", &b, "alice", "-", "/done.txt"]);
    let alice_ws = Stream::start("alice's WebSocket", &["ws", &b, "alice", "-", "/done.txt"]);
    let bob_sse = Stream::start("bob's SSE", &["sse", &b, "bob", "-", "/done.txt"]);

    // FTP (curl)
    let local = dir.path().join("ftp.txt");
    std::fs::write(&local, b"over ftp").unwrap();
    let url = t.ftp_url("alice", "ftp.txt");
    let l = local.display().to_string();
    blocking(move || client("curl", &["-sS", "--fail", "-T", &l, &url])).await;
    // SFTP (OpenSSH sftp)
    let sftp_local = dir.path().join("sftp.txt");
    std::fs::write(&sftp_local, b"over sftp").unwrap();
    let (ok, text) = t.sftp_batch(
        "alice",
        &key,
        &format!("put {} sftp.txt\n", sftp_local.display()),
    );
    assert!(ok, "sftp: {text}");
    // MQTT (the put command, mosquitto_pub)
    let port = mqtt_port.to_string();
    blocking(move || {
        client(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "alice",
                "-P",
                PASSWORD,
                "-V",
                "mqttv311",
                "-q",
                "1",
                "-t",
                "filegate/commands/put/mqtt.txt",
                "-m",
                "over mqtt",
            ],
        )
    })
    .await;
    // HTTP: bob's file, an upload cut off half-way, a complete one.
    let b2 = b.clone();
    blocking(move || {
        client(
            "curl",
            &[
                "-sS",
                "--fail",
                "-u",
                &format!("bob:{PASSWORD}"),
                "-T",
                "-",
                &format!("{b2}/files/bobs.txt"),
            ],
        )
    })
    .await;
    let b2 = b.clone();
    blocking(move || python(&["cut", &b2, "alice", "cut.bin"])).await;
    // The cut upload ends when the gateway notices the closed connection: wait for its event.
    until_true(
        "the cut upload never ended",
        Duration::from_secs(30),
        || async {
            t.events()
                .await
                .iter()
                .any(|e| e.path == "/home/alice/cut.bin")
        },
    )
    .await;
    for (who, name) in [
        ("alice", "http.txt"),
        ("alice", "done.txt"),
        ("bob", "done.txt"),
    ] {
        let url = format!("{b}/files/{name}");
        blocking(move || {
            client(
                "curl",
                &[
                    "-sS",
                    "--fail",
                    "-u",
                    &format!("{who}:{PASSWORD}"),
                    "-X",
                    "PUT",
                    "--data-binary",
                    "over http",
                    &url,
                ],
            )
        })
        .await;
    }

    // The homes made at the first logins (protocol "system") may or may not be in the streams,
    // depending on whether the login that made them came before the stream joined.
    let files = |events: Vec<Value>| -> Vec<Value> {
        events
            .into_iter()
            .filter(|e| e["protocol"] != "system")
            .collect()
    };
    let alice = files(blocking(move || alice_sse.finish()).await);
    let alice_ws = files(blocking(move || alice_ws.finish()).await);
    let bob = files(blocking(move || bob_sse.finish()).await);
    let want = [
        ("/home/alice/ftp.txt", "ftp"),
        ("/home/alice/sftp.txt", "sftp"),
        ("/home/alice/mqtt.txt", "mqtt"),
        ("/home/alice/cut.bin", "http"),
        ("/home/alice/http.txt", "http"),
        ("/home/alice/done.txt", "http"),
    ];
    assert_eq!(
        subjects(&alice),
        want.map(|(p, _)| p.to_string()),
        "alice's SSE: {alice:?}"
    );
    for (e, (_, protocol)) in alice.iter().zip(want) {
        assert_eq!(e["protocol"], protocol, "{e}");
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], e["seq"], "the SSE id is the event's seq");
    }
    let cut = &alice[3];
    assert_eq!(cut["type"], "io.filegate.file.incomplete", "{cut}");
    assert_eq!(cut["complete"], false);
    assert_eq!(alice[0]["type"], "io.filegate.file.created");
    assert_eq!(alice[0]["complete"], true);
    assert_eq!(alice_ws, alice, "the WebSocket carries the same events");
    assert_eq!(
        subjects(&bob),
        ["/home/bob/bobs.txt", "/home/bob/done.txt"],
        "bob sees his own events only"
    );
    // A device that speaks only MQTT recovers a gap with the `events` command (MQTT 5
    // request/response): the same documents, only alice's.
    let port = mqtt_port.to_string();
    let reply = blocking(move || {
        client(
            "mosquitto_rr",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "alice",
                "-P",
                PASSWORD,
                "-V",
                "mqttv5",
                "-t",
                "filegate/commands/events",
                "-e",
                "filegate/replies/alice/gap",
                "-m",
                r#"{"after": 0, "limit": 1000}"#,
                "-W",
                "20",
            ],
        )
    })
    .await;
    let page: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(page["ok"], true, "{page}");
    let replayed: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["protocol"] != "system")
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(replayed, want.map(|(p, _)| p), "{page}");
    assert_eq!(page["next_after"], page["last_seq"]);
    // The documents are MQTT's: the CloudEvent a store event renders to, byte for byte.
    let store_events = t.events().await;
    let ftp_event = store_events
        .iter()
        .find(|e| e.path == "/home/alice/ftp.txt")
        .unwrap();
    assert_eq!(alice[0]["seq"], ftp_event.seq);
    t.stop().await;
}

async fn resume_loses_and_repeats_nothing(kind: Kind) {
    let t = start(kind, |c| c.mqtt.mode = MqttMode::Off).await;
    let b = base(&t);
    let out = blocking(move || python(&["resume", &b])).await;
    assert!(
        out.contains("sse ok 40") && out.contains("ws ok 40"),
        "{out}"
    );
    t.stop().await;
}

async fn trimmed_history_is_gone_with_410(kind: Kind) {
    let t = start(kind, |c| {
        c.mqtt.mode = MqttMode::Off;
        c.events.history_max = 5;
    })
    .await;
    let b = base(&t);
    for i in 0..20 {
        let url = format!("{b}/files/f{i}.txt");
        blocking(move || {
            client(
                "curl",
                &[
                    "-sS",
                    "--fail",
                    "-u",
                    &format!("alice:{PASSWORD}"),
                    "-X",
                    "PUT",
                    "--data-binary",
                    "x",
                    &url,
                ],
            )
        })
        .await;
    }
    // mqtt.mode = "off" acknowledges events as they come; then the history keeps the last 5.
    until(
        "events never acknowledged",
        Duration::from_secs(30),
        || async {
            let s = t.store().outbox_status().await.unwrap();
            if s.acked_seq == s.last_seq && s.last_seq >= 20 {
                Ok(())
            } else {
                Err(s)
            }
        },
    )
    .await;
    let b = base(&t);
    let out = blocking(move || python(&["gone", &b])).await;
    assert!(out.contains("ok"), "{out}");
    t.stop().await;
}
