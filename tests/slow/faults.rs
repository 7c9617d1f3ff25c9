//! Faults under real clients: Redis restarted mid-transfer, Redis stalled, the embedded store's
//! disk filling up. Each ends with a clean error for the client, no torn file, and a gateway that
//! goes on serving without a restart.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{content, program, start, until, until_metrics, Kind, PASSWORD};
use test_support::RedisServer;

/// Redis with every write fsynced to its append-only file, so a restart loses nothing acknowledged.
fn durable_redis() -> RedisServer {
    RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--enable-debug-command",
        "local",
    ])
}

async fn gateway_on(
    redis: &RedisServer,
    tweak: impl FnOnce(&mut filegate::Config),
) -> crate::common::TestGateway {
    let url = redis.url();
    start(Kind::Embedded, move |c| {
        c.storage.backend = filegate::config::StorageBackend::Redis;
        c.storage.redis.url = url;
        tweak(c);
    })
    .await
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new(program("curl"))
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .unwrap()
}

fn spawn_curl(args: &[&str]) -> Child {
    Command::new(program("curl"))
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

async fn wait_child(child: Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_upload_and_mid_download() {
    let mut redis = durable_redis();
    let t = gateway_on(&redis, |c| {
        c.storage.redis.command_timeout = Duration::from_secs(3)
    })
    .await;
    let http = t.gw().http_addr;
    let v1 = content(1, 1 << 20);
    let v2 = content(2, 3 << 20);
    let (f1, f2) = (t.temp_path("v1"), t.temp_path("v2"));
    write(&f1, &v1);
    write(&f2, &v2);
    let url = t.ftp_url("alice", "f.bin");
    assert!(curl(&["-T", f1.to_str().unwrap(), &url]).status.success());

    // An upload replacing it, slowed down so Redis dies in its middle.
    let upload = spawn_curl(&["--limit-rate", "1M", "-T", f2.to_str().unwrap(), &url]);
    until_metrics(http, "the upload started", |m| {
        m.get("filegate_received_bytes_total{protocol=\"ftp\"}")
            .is_some_and(|v| *v > v1.len() as f64)
    })
    .await;
    redis.restart();
    let out = wait_child(upload).await;
    // Either the upload failed cleanly, or it got through whole after the reconnection; the file
    // is one version or the other, never a mixture.
    let now = t.store_bytes("/home/alice/f.bin").await;
    if out.status.success() {
        assert!(
            now == v2,
            "curl succeeded, the file must be the new content"
        );
    } else {
        assert!(
            now == v1 || now == v2,
            "torn file after a failed upload: {} bytes",
            now.len()
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("451")
                || err.contains("550")
                || err.contains("426")
                || err.contains("Failed")
                || err.contains("failed"),
            "{err}"
        );
    }

    // A download cut by a restart: the client never gets wrong bytes reported as success.
    let current = t.store_bytes("/home/alice/f.bin").await;
    let local = t.temp_path("down");
    let download = spawn_curl(&["--limit-rate", "512K", &url, "-o", local.to_str().unwrap()]);
    until_metrics(http, "the download started", |m| {
        m.get("filegate_sent_bytes_total{protocol=\"ftp\"}")
            .is_some_and(|v| *v > 0.0)
    })
    .await;
    redis.restart();
    let out = wait_child(download).await;
    if out.status.success() {
        assert!(std::fs::read(&local).unwrap() == current);
    }

    // The gateway goes on without a restart: a new upload and download work.
    let v3 = content(3, 700_000);
    let f3 = t.temp_path("v3");
    write(&f3, &v3);
    let out = curl(&["-T", f3.to_str().unwrap(), &t.ftp_url("alice", "g.bin")]);
    assert!(out.status.success(), "{out:?}");
    let out = curl(&[&t.ftp_url("alice", "g.bin")]);
    assert!(out.status.success() && out.stdout == v3, "{:?}", out.status);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_gives_timeouts_not_stuck_sessions() {
    let redis = durable_redis();
    let t = gateway_on(&redis, |c| {
        c.storage.redis.command_timeout = Duration::from_secs(1)
    })
    .await;
    let data = content(4, 200_000);
    let f = t.temp_path("up");
    write(&f, &data);
    assert!(
        curl(&["-T", f.to_str().unwrap(), &t.ftp_url("alice", "a.bin")])
            .status
            .success()
    );

    for stall in [["DEBUG", "SLEEP", "4"], ["CLIENT", "PAUSE", "4000"]] {
        // Stall Redis from another connection, for four seconds.
        let port = redis.port().to_string();
        let mut staller = Command::new(program("redis-cli"))
            .args(["-p", &port])
            .args(stall)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the stall is in effect: a PING from another client goes unanswered.
        let probe_started = Instant::now();
        loop {
            let ping = Command::new("timeout")
                .args([
                    "0.3",
                    program("redis-cli").to_str().unwrap(),
                    "-p",
                    &port,
                    "PING",
                ])
                .output()
                .unwrap();
            if !ping.status.success() || probe_started.elapsed() > Duration::from_secs(3) {
                break;
            }
        }
        let began = Instant::now();
        // CLIENT PAUSE (ALL) holds every command, DEBUG SLEEP blocks the server: either way the
        // request fails within the command timeout (plus the client's own round trips).
        let out = curl(&[&t.ftp_url("alice", "a.bin"), "-o", "/dev/null"]);
        let took = began.elapsed();
        assert!(
            !out.status.success(),
            "{stall:?}: a download cannot succeed while Redis is stalled"
        );
        assert!(
            took < Duration::from_secs(4),
            "{stall:?}: the client waited {took:?}"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.is_empty());
        staller.wait().unwrap();
        // And after the stall, the same request works.
        until(
            "still failing after the stall",
            Duration::from_secs(10),
            || async {
                let out = curl(&[&t.ftp_url("alice", "a.bin")]);
                if out.status.success() {
                    assert!(out.stdout == data);
                    Ok(())
                } else {
                    Err(out)
                }
            },
        )
        .await;
    }
    let _ = PASSWORD;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_running_out_of_space() {
    use crate::common::binary::{read_store, Binary, SECRET};
    let dir = tempfile::tempdir().unwrap();
    // The store file may not grow past 24 MiB: writes beyond fail as on a full disk (EFBIG; the
    // signal that would otherwise kill the process is ignored, as a server must).
    let b = Binary::start_wrapped(dir.path(), "", None, Some("trap '' XFSZ; ulimit -f 24576"));
    let url = |name: &str| format!("ftp://ops:{SECRET}@{}/{name}", b.ftp);
    let kept = content(6, 4 << 20);
    let f = dir.path().join("kept");
    write(&f, &kept);
    let out = curl(&["-T", f.to_str().unwrap(), &url("kept.bin")]);
    assert!(out.status.success(), "{out:?}");

    // Far more than fits: refused with an error, not a crash.
    let big = dir.path().join("big");
    write(&big, &content(7, 40 << 20));
    let out = curl(&["-T", big.to_str().unwrap(), &url("big.bin")]);
    assert!(
        !out.status.success(),
        "a 40 MiB upload cannot fit in 24 MiB"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("451") || err.contains("552") || err.contains("426"),
        "{err}"
    );

    // The gateway still serves what was committed, and says it is alive.
    let out = curl(&[&url("kept.bin")]);
    assert!(
        out.status.success() && out.stdout == kept,
        "{:?}",
        out.status
    );
    assert_eq!(crate::common::http_get(b.http, "/healthz").await.0, 200);
    b.signal("TERM");
    let (code, log) = b.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");

    // Reopened without the limit: everything committed is there, and the store is consistent.
    assert!(read_store(dir.path(), "/ops/kept.bin").await == kept);
    let config = filegate::cli::load_config(&dir.path().join("filegate.toml")).unwrap();
    let store = storage_backend::Store::open(config.to_store_config())
        .await
        .unwrap();
    let report = store.verify().await.unwrap();
    assert!(report.missing.is_empty(), "chunks lost: {report:?}");
    store.close().await;
}
