//! Operations: the HTTP probes and metrics, the audit trail in the logs (and no secrets in them),
//! graceful shutdown of the built binary under a running transfer, and `gen-cert`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::binary::{read_store, Binary, BIN, SECRET};
use crate::common::{
    content, http_get, program, start, until, until_metrics, until_ready, Kind, PASSWORD,
};
use test_support::Mosquitto;

fn curl(args: &[&str]) -> std::process::Output {
    Command::new(program("curl"))
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_report_what_happened() {
    let broker = Mosquitto::start();
    let mut t = start(Kind::Redis, |c| c.mqtt.url = broker.url()).await;
    let http = t.gw().http_addr;
    assert_eq!(http_get(http, "/healthz").await, (200, "ok\n".into()));
    until_ready(http, 200).await;

    let local = t.temp_path("up.bin");
    let data = content(3, 300_000);
    std::fs::write(&local, &data).unwrap();
    let out = curl(&["-T", local.to_str().unwrap(), &t.ftp_url("alice", "up.bin")]);
    assert!(out.status.success(), "{out:?}");
    let out = curl(&[&t.ftp_url("alice", "up.bin"), "-o", "/dev/null"]);
    assert!(out.status.success(), "{out:?}");
    let a = t.ftp_addr();
    let out = curl(&[&format!("ftp://alice:wrong@{a}/"), "-l"]);
    assert!(!out.status.success());

    // Sessions end (and their transfers are counted) when the clients have gone; events are out
    // when the broker has acknowledged them.
    let m = until_metrics(http, "sessions ended and events published", |m| {
        m.get("filegate_sessions{protocol=\"ftp\"}") == Some(&0.0)
            && m.get("filegate_outbox_backlog_events") == Some(&0.0)
            && m.get("filegate_events_published_total").copied() >= Some(2.0)
    })
    .await;
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("{k} missing: {m:#?}"))
    };
    assert_eq!(
        get("filegate_sessions_started_total{protocol=\"ftp\"}"),
        2.0
    );
    assert_eq!(
        get("filegate_received_bytes_total{protocol=\"ftp\"}"),
        data.len() as f64
    );
    assert_eq!(
        get("filegate_sent_bytes_total{protocol=\"ftp\"}"),
        data.len() as f64
    );
    assert_eq!(
        get("filegate_transfers_total{protocol=\"ftp\",direction=\"upload\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(
        get("filegate_transfers_total{protocol=\"ftp\",direction=\"download\",result=\"ok\"}"),
        1.0
    );
    assert_eq!(get("filegate_failed_logins_total{protocol=\"ftp\"}"), 1.0);
    assert_eq!(get("filegate_bans_total"), 0.0);
    assert_eq!(get("filegate_mqtt_connected"), 1.0);
    assert!(get("filegate_storage_operation_duration_seconds_count{op=\"commit\"}") >= 1.0);
    assert!(get("filegate_event_publish_latency_seconds_count") >= 2.0);

    // The broker goes away: not ready, and says why.
    drop(broker);
    let body = until_ready(http, 503).await;
    assert!(body.contains("MQTT broker unreachable"), "{body}");
    // Then the store.
    drop((t.redis.take(), t.cluster.take(), t.sentinel.take()));
    until(
        "/readyz never named the store",
        Duration::from_secs(30),
        || async {
            let (status, body) = http_get(http, "/readyz").await;
            assert_eq!(status, 503);
            if body.contains("storage unreachable") {
                Ok(())
            } else {
                Err(body)
            }
        },
    )
    .await;
    // Liveness does not depend on either.
    assert_eq!(http_get(http, "/healthz").await.0, 200);
    t.stop().await;
}

/// Starts a rate-limited curl upload and returns once the gateway has received some of it.
async fn slow_upload(b: &Binary, local: &Path, rate: &str) -> Child {
    let child = Command::new(program("curl"))
        .args(["-sS", "--limit-rate", rate, "-T"])
        .arg(local)
        .arg(format!("ftp://ops:{SECRET}@{}/big.bin", b.ftp))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    until_metrics(b.http, "the upload started", |m| {
        m.get("filegate_received_bytes_total{protocol=\"ftp\"}")
            .is_some_and(|v| *v > 0.0)
    })
    .await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_upload_finish() {
    let dir = tempfile::tempdir().unwrap();
    let b = Binary::start(dir.path(), "", None);
    let local = dir.path().join("big.bin");
    let data = content(9, 3 << 20);
    std::fs::write(&local, &data).unwrap();
    // About three seconds at 1 MiB/s.
    let curl = slow_upload(&b, &local, "1M").await;
    b.signal("TERM");
    let curl_status = tokio::task::spawn_blocking(move || curl.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(curl_status.status.success(), "{curl_status:?}");
    let (code, log) = b.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("waiting for running sessions to finish"),
        "{log}"
    );
    assert!(!log.contains("aborting"), "{log}");
    assert!(read_store(dir.path(), "/ops/big.bin").await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_ends_running_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let b = Binary::start(dir.path(), "", None);
    let local = dir.path().join("big.bin");
    std::fs::write(&local, content(5, 8 << 20)).unwrap();
    // Would take about a minute.
    let curl = slow_upload(&b, &local, "128K").await;
    b.signal("TERM");
    // The first signal is being handled (not ready any more) before the second comes.
    until_ready(b.http, 503).await;
    b.signal("TERM");
    // The log below says the second signal, not the grace period (30 s), ended the transfer.
    let (code, log) = b.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.contains("second signal: aborting the sessions still running"),
        "{log}"
    );
    let out = tokio::task::spawn_blocking(move || curl.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "the cut-off upload cannot have succeeded"
    );
}

/// The fields of every JSON log line with the given message.
fn json_lines(log: &str, message: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == message)
        .map(|v| v["fields"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_an_audit_trail_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = crate::common::client_key(keys.path(), "ops_key");
    let b = Binary::start(dir.path(), "log_format = \"json\"", Some(&public));
    let local = dir.path().join("up.bin");
    std::fs::write(&local, content(1, 100_000)).unwrap();
    // FTP with the password, a wrong password, and SFTP with the key.
    let out = curl(&[
        "-T",
        local.to_str().unwrap(),
        &format!("ftp://ops:{SECRET}@{}/up.bin", b.ftp),
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = curl(&[&format!("ftp://ops:Wr0ng-Guess-4711@{}/", b.ftp), "-l"]);
    assert!(!out.status.success());
    let batch = dir.path().join("batch");
    std::fs::write(&batch, "get up.bin /dev/null\n").unwrap();
    let sftp = Command::new(program("sftp"))
        .arg("-b")
        .arg(&batch)
        .args(["-P", &b.sftp.unwrap().port().to_string()])
        .args(crate::common::ssh_options(&key))
        .args(["ops@127.0.0.1"])
        .output()
        .unwrap();
    assert!(sftp.status.success(), "{sftp:?}");
    // The sessions have ended once nothing is open any more.
    until_metrics(b.http, "sessions ended", |m| {
        m.get("filegate_sessions{protocol=\"ftp\"}") == Some(&0.0)
            && m.get("filegate_sessions{protocol=\"sftp\"}") == Some(&0.0)
    })
    .await;
    b.signal("TERM");
    let (code, log) = b.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");

    let transfers = json_lines(&log, "transfer");
    let upload = transfers
        .iter()
        .find(|t| t["direction"] == "upload")
        .unwrap_or_else(|| panic!("no upload line in:\n{log}"));
    assert_eq!(upload["user"], "ops");
    assert_eq!(upload["protocol"], "ftp");
    assert_eq!(upload["path"], "/ops/up.bin");
    assert_eq!(upload["bytes"], 100_000);
    assert_eq!(upload["result"], "ok");
    assert!(upload["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(upload["duration_ms"].is_u64());
    let download = transfers
        .iter()
        .find(|t| t["direction"] == "download" && t["protocol"] == "sftp")
        .unwrap_or_else(|| panic!("no sftp download line in:\n{log}"));
    assert_eq!(download["bytes"], 100_000);
    assert_eq!(download["result"], "ok");
    let starts = json_lines(&log, "session start");
    let ends = json_lines(&log, "session end");
    assert_eq!(starts.len(), 2, "{log}");
    assert_eq!(ends.len(), 2, "{log}");
    assert!(ends
        .iter()
        .any(|e| e["protocol"] == "sftp" && e["bytes_out"] == 100_000));
    assert_eq!(json_lines(&log, "login failed").len(), 1, "{log}");

    // No secret, hash or key material, in any form.
    let hash = filegate::password::hash_password(SECRET).unwrap();
    let salt_and_hash = hash.rsplit('$').take(2).collect::<Vec<_>>();
    let private = std::fs::read_to_string(&key).unwrap();
    let key_body = public.split_whitespace().nth(1).unwrap();
    for secret in [SECRET, "Wr0ng-Guess-4711", key_body, "$argon2id$"]
        .into_iter()
        .chain(private.lines().filter(|l| l.len() > 20))
    {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
    let configured = std::fs::read_to_string(dir.path().join("filegate.toml")).unwrap();
    let configured_hash = configured
        .lines()
        .find_map(|l| l.strip_prefix("password_hash = \""))
        .unwrap()
        .trim_end_matches('"');
    for part in configured_hash.rsplit('$').take(2).chain(salt_and_hash) {
        assert!(
            !log.contains(part),
            "the log contains hash material {part:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_cert_makes_a_certificate_ftps_clients_accept() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("certs/ftp.crt");
    let key = dir.path().join("certs/ftp.key");
    let gen = |extra: &[&str]| {
        Command::new(BIN)
            .args([
                "gen-cert",
                "--host",
                "localhost",
                "--host",
                "127.0.0.1",
                "--cert",
            ])
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = gen(&[]);
    assert!(out.status.success(), "{out:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key must be private");
    }
    // Never overwritten by accident.
    let out = gen(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--force"),
        "{out:?}"
    );
    assert!(gen(&["--force"]).status.success());

    let t = start(Kind::Embedded, |c| {
        c.ftp.tls.enabled = true;
        c.ftp.tls.required = true;
        c.ftp.tls.cert = cert.clone();
        c.ftp.tls.key = key.clone();
    })
    .await;
    let port = t.ftp_addr().port();
    // curl verifies the chain and the name against the generated certificate.
    for host in ["localhost", "127.0.0.1"] {
        let out = curl(&[
            "--ssl-reqd",
            "--cacert",
            cert.to_str().unwrap(),
            "-u",
            &format!("alice:{PASSWORD}"),
            "-l",
            &format!("ftp://{host}:{port}/"),
        ]);
        assert!(out.status.success(), "{host}: {out:?}");
    }
    t.stop().await;
}

/// A command line sent with `ssh exec` cannot write a line of its own into the text log: the
/// refusal logs it quoted (issue 18, item 11).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_strings_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = crate::common::client_key(keys.path(), "ops_key");
    let b = Binary::start(dir.path(), "log_format = \"text\"", Some(&public));
    let forged = "2030-01-01T00:00:00.000000Z  WARN filegate: FORGED-LINE";
    let out = Command::new(program("ssh"))
        .args(["-p", &b.sftp.unwrap().port().to_string()])
        .args(crate::common::ssh_options(&key))
        .args(["ops@127.0.0.1", &format!("ls\n{forged}\n")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    b.signal("TERM");
    let (code, log) = b.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("command refused"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with(forged)),
        "a forged line in the log:\n{log}"
    );
}
