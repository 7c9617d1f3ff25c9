//! Webhooks against a real receiver (Python's `http.server`, verifying signatures as
//! docs/webhooks.md shows) and real gateway processes:
//! - the receiver answers 500 at random, is down for a while and comes back, and the gateway is
//!   restarted in the middle: every matching event arrives, in commit order, validly signed,
//!   none lost, none that does not match the hook;
//! - two gateways on one Redis deliver each event once, and when the delivering one is killed the
//!   other takes over from the stored cursor.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::binary::{curl_put, Binary};
use crate::common::{metrics, program, until_blocking};
use test_support::{free_port, RedisServer};

const HOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A running `tests/webhooks/receiver.py`.
struct Receiver {
    child: Child,
    out: PathBuf,
}

impl Receiver {
    fn start(port: u16, out: &Path, fail_rate: f64) -> Receiver {
        Receiver::start_tls(port, out, fail_rate, &[])
    }

    /// `tls`: the certificate and key files, to serve HTTPS; empty for HTTP.
    fn start_tls(port: u16, out: &Path, fail_rate: f64, tls: &[&Path]) -> Receiver {
        Receiver::launch(port, out, fail_rate, tls, 0)
    }

    /// `reply_bytes`: the size of a successful answer's body (0: `204 No Content`).
    fn launch(
        port: u16,
        out: &Path,
        fail_rate: f64,
        tls: &[&Path],
        reply_bytes: usize,
    ) -> Receiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhooks/receiver.py");
        let mut child = Command::new(program("python3"))
            .arg(script)
            .arg(port.to_string())
            .arg(HOOK_SECRET)
            .arg(out)
            .arg(fail_rate.to_string())
            .args(tls)
            .env("REPLY_BYTES", reply_bytes.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the receiver");
        // It prints once it is about to serve; the socket is bound by then.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "listening");
        Receiver {
            child,
            out: out.to_path_buf(),
        }
    }

    fn stop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// Every delivery recorded so far, in arrival order.
    fn deliveries(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits (bounded) until `n` distinct events have arrived.
    fn until_distinct(&self, n: usize, limit: Duration) -> Vec<serde_json::Value> {
        until_blocking(&format!("{n} events arrived"), limit, || {
            let got = self.deliveries();
            let distinct: BTreeSet<&str> = got.iter().map(|d| d["id"].as_str().unwrap()).collect();
            if distinct.len() >= n {
                Ok(got)
            } else {
                Err(format!("only {}: {got:#?}", distinct.len()))
            }
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn hook_toml(port: u16) -> String {
    hook_toml_at(&format!(
        "http://127.0.0.1:{port}/hooks/filegate?source=test"
    ))
}

fn hook_toml_at(url: &str) -> String {
    format!(
        r#"
[[webhooks]]
name = "ingest"
url = "{url}"
secret = "{HOOK_SECRET}"
events = ["file.created", "io.filegate.file.modified"]
paths = ["/ops/in/**"]
users = ["ops"]
max_retry_interval = "1s"
timeout = "5s"
"#
    )
}

fn gateway(dir: &Path, id: &str, env: &str, hook_port: u16) -> Binary {
    gateway_with(dir, id, env, &hook_toml(hook_port))
}

fn gateway_with(dir: &Path, id: &str, env: &str, hooks: &str) -> Binary {
    Binary::start_wrapped(
        dir,
        &format!("id = \"{id}\"\n{hooks}"),
        None,
        Some(&format!("export FILEGATE__STORAGE__CHUNK_SIZE=64KiB {env}")),
    )
}

/// A second hook whose receiver never answers (nothing listens on port 1): it must hold back
/// nothing but itself.
const DEAD_HOOK: &str = r#"
[[webhooks]]
name = "dead"
url = "http://127.0.0.1:1/"
secret = "another-secret-0123456789"
max_retry_interval = "1s"
"#;

fn put(gw: &Binary, dir: &Path, path: &str, body: &str) {
    let file = dir.join("upload");
    std::fs::write(&file, body).unwrap();
    assert!(curl_put(gw.ftp, path, &file), "upload of {path}");
}

/// Each delivery is signed validly and carries the CloudEvent whose id the header names; the first
/// arrival of each event is in commit order.
fn check_deliveries(got: &[serde_json::Value]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut last_seq = 0;
    let mut paths = Vec::new();
    for d in got {
        assert_eq!(d["valid"], true, "a signature does not verify: {d}");
        assert_eq!(d["id"], d["ce_id"], "webhook-id is the CloudEvent id: {d}");
        assert_eq!(
            d["content_type"],
            "application/cloudevents+json; charset=utf-8"
        );
        if seen.insert(d["id"].as_str().unwrap().to_string()) {
            let seq = d["seq"].as_u64().unwrap();
            assert!(
                seq > last_seq,
                "out of order: {seq} after {last_seq}: {got:#?}"
            );
            last_seq = seq;
            paths.push(d["path"].as_str().unwrap().to_string());
        }
    }
    paths
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_arrives_in_order_through_errors_outages_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = dir.path().join("deliveries.jsonl");
    let mut receiver = Receiver::start(port, &out, 0.3);
    let hooks = format!("{}{DEAD_HOOK}", hook_toml(port));
    let mut gw = gateway_with(dir.path(), "gw-a", "", &hooks);
    let mut want = Vec::new();
    for i in 0..10 {
        let path = format!("/in/a{i}.csv");
        put(&gw, dir.path(), &path, &format!("first {i}"));
        want.push(format!("/ops{path}"));
    }
    // Not for this hook: another folder, a temporary name, a delete.
    put(&gw, dir.path(), "/other/x.csv", "x");
    put(&gw, dir.path(), "/in/upload.part", "partial");
    receiver.until_distinct(10, Duration::from_secs(60));

    // The receiver goes away; changes go on, and the gateway restarts meanwhile.
    receiver.stop();
    for i in 0..5 {
        let path = format!("/in/b{i}.csv");
        put(&gw, dir.path(), &path, "while down");
        want.push(format!("/ops{path}"));
    }
    gw.signal("TERM");
    let (code, log) = gw.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("webhook delivery failed"),
        "failures are logged: {log}"
    );
    gw = gateway_with(dir.path(), "gw-a", "", &hooks);
    for i in 0..5 {
        // Overwriting is io.filegate.file.modified, which the hook asks for too.
        let path = format!("/in/a{i}.csv");
        put(&gw, dir.path(), &path, "second");
        want.push(format!("/ops{path}"));
    }
    let m = metrics(gw.http).await;
    assert!(
        m["filegate_webhook_backlog_events{hook=\"ingest\"}"] >= 1.0,
        "the backlog shows while the receiver is down: {m:?}"
    );
    receiver = Receiver::start(port, &out, 0.3);
    let got = receiver.until_distinct(want.len(), Duration::from_secs(90));
    assert_eq!(check_deliveries(&got), want);
    let types: HashMap<&str, usize> = got.iter().fold(HashMap::new(), |mut m, d| {
        *m.entry(d["type"].as_str().unwrap()).or_default() += 1;
        m
    });
    assert!(types.keys().all(|t| t.starts_with("io.filegate.file.")));

    let m = crate::common::until_metrics(gw.http, "the backlog drained", |m| {
        m.get("filegate_webhook_backlog_events{hook=\"ingest\"}") == Some(&0.0)
    })
    .await;
    assert!(m["filegate_webhook_delivered_total{hook=\"ingest\"}"] >= 5.0);
    assert!(m["filegate_webhook_failures_total{hook=\"ingest\"}"] >= 1.0);
    assert_eq!(m["filegate_webhook_skipped_total{hook=\"ingest\"}"], 0.0);
    // The dead hook failed all along, and says so.
    assert!(
        m["filegate_webhook_failures_total{hook=\"dead\"}"] >= 1.0,
        "{m:?}"
    );
    assert!(
        m["filegate_webhook_backlog_events{hook=\"dead\"}"] >= 1.0,
        "{m:?}"
    );
    assert_eq!(m["filegate_webhook_last_status{hook=\"dead\"}"], 0.0);
    assert_eq!(m["filegate_webhook_delivered_total{hook=\"dead\"}"], 0.0);
    drop(receiver);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_receivers_are_verified_against_the_trusted_roots() {
    let dir = tempfile::tempdir().unwrap();
    // A private CA's certificate for 127.0.0.1, trusted through SSL_CERT_FILE.
    let (cert, key) = (dir.path().join("hook.crt"), dir.path().join("hook.key"));
    let made = Command::new(crate::common::binary::BIN)
        .args(["gen-cert", "--host", "127.0.0.1", "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = free_port();
    let out = dir.path().join("deliveries.jsonl");
    let receiver = Receiver::start_tls(port, &out, 0.0, &[&cert, &key]);
    let hooks = hook_toml_at(&format!("https://127.0.0.1:{port}/in"));
    let gw = gateway_with(
        dir.path(),
        "gw-tls",
        &format!("SSL_CERT_FILE={}", cert.display()),
        &hooks,
    );
    put(&gw, dir.path(), "/in/secure.csv", "over TLS");
    let got = receiver.until_distinct(1, Duration::from_secs(30));
    assert_eq!(
        check_deliveries(&got),
        vec!["/ops/in/secure.csv".to_string()]
    );

    // Without trusting that certificate, nothing is delivered, and the log says why.
    let dir2 = tempfile::tempdir().unwrap();
    let gw2 = gateway_with(dir2.path(), "gw-untrusting", "", &hooks);
    put(&gw2, dir2.path(), "/in/other.csv", "x");
    let m = crate::common::until_metrics(gw2.http, "a failed TLS attempt", |m| {
        m.get("filegate_webhook_failures_total{hook=\"ingest\"}")
            .is_some_and(|f| *f >= 1.0)
    })
    .await;
    assert_eq!(m["filegate_webhook_delivered_total{hook=\"ingest\"}"], 0.0);
    gw2.signal("TERM");
    let (_, log) = gw2.wait(Duration::from_secs(30));
    assert!(log.contains("TLS with 127.0.0.1"), "{log}");
    assert_eq!(receiver.deliveries().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_on_one_redis_deliver_each_event_once() {
    let redis = RedisServer::start();
    let env = format!(
        "FILEGATE__STORAGE__BACKEND=redis FILEGATE__STORAGE__REDIS__URL={}",
        redis.url()
    );
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let port = free_port();
    let out = dir_a.path().join("deliveries.jsonl");
    // Its confirmations carry a 100 KB page: an answer longer than the gateway reads is still an
    // answer (delivered once, not retried).
    let receiver = Receiver::launch(port, &out, 0.0, &[], 100_000);
    let a = gateway(dir_a.path(), "gw-a", &env, port);
    let b = gateway(dir_b.path(), "gw-b", &env, port);
    let mut want = Vec::new();
    for i in 0..20 {
        let (gw, dir) = if i % 2 == 0 {
            (&a, dir_a.path())
        } else {
            (&b, dir_b.path())
        };
        let path = format!("/in/f{i:02}");
        put(gw, dir, &path, &format!("file {i}"));
        want.push(format!("/ops{path}"));
    }
    let got = receiver.until_distinct(want.len(), Duration::from_secs(60));
    assert_eq!(check_deliveries(&got), want);
    assert_eq!(got.len(), want.len(), "each event once: {got:#?}");

    // The gateway that delivers dies without a word; the other goes on from the cursor.
    let lease = redis.cli(&["--scan", "--pattern", "*lease:webhook:ingest"]);
    let holder = redis.cli(&["GET", lease.trim()]);
    let (mut survivor, survivor_dir, mut dead) = if holder.starts_with("gw-a/") {
        (b, dir_b.path(), a)
    } else {
        assert!(
            holder.starts_with("gw-b/"),
            "lease {lease:?} held by {holder:?}"
        );
        (a, dir_a.path(), b)
    };
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    for i in 20..30 {
        let path = format!("/in/f{i:02}");
        put(&survivor, survivor_dir, &path, &format!("file {i}"));
        want.push(format!("/ops{path}"));
    }
    let got = receiver.until_distinct(want.len(), Duration::from_secs(60));
    assert_eq!(check_deliveries(&got), want);
    survivor.child.kill().ok();
    let _ = &mut survivor;
}
