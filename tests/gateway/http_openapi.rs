//! The served OpenAPI document against the live API: Schemathesis (PyPI, pinned, installed by
//! `scripts/test` under `target/test-tools/schemathesis`) generates requests from
//! `/api/v1/openapi.json`, logged in as a user, and checks every answer with `--checks all`: no
//! 5xx, status codes, content types, headers and bodies as the document says. Also: the document
//! needs no login and the docs page and its files come from the gateway itself.

use std::path::PathBuf;

use crate::common::{http_get, start, Kind};

fn schemathesis() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tools/schemathesis/bin/schemathesis");
    assert!(
        bin.exists(),
        "{} not found: run scripts/test, which installs Schemathesis (pip schemathesis)",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_spec_and_offline_docs_page() {
    let t = start(Kind::Embedded, |_| {}).await;
    let addr = t.gw().http_addr;
    let (status, body) = http_get(addr, "/api/v1/openapi.json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, filegate::http::openapi::document());
    let (status, page) = http_get(addr, "/api/v1/docs").await;
    assert_eq!(status, 200);
    // Everything the page loads comes from this server: no CDN.
    for src in [
        "/api/v1/docs/swagger-ui-bundle.js",
        "/api/v1/docs/swagger-ui.css",
        "/api/v1/openapi.json",
    ] {
        assert!(page.contains(src), "{src} not in the page");
    }
    assert!(
        !page.contains("https://") && !page.contains("http://"),
        "{page}"
    );
    for file in [
        "/api/v1/docs/swagger-ui-bundle.js",
        "/api/v1/docs/swagger-ui.css",
    ] {
        let (status, body) = http_get(addr, file).await;
        assert_eq!(status, 200, "{file}");
        assert!(body.len() > 100_000, "{file}");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing() {
    let bin = schemathesis();
    // Generated logins are wrong passwords: they must not ban the address for the rest of the run.
    let t = start(Kind::Embedded, |c| {
        c.limits.login_failures_per_ip = 1_000_000
    })
    .await;
    let addr = t.gw().http_addr;
    let report = t.temp_path("junit.xml");
    let clients = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let args: Vec<String> = vec![
        "--config-file".into(),
        clients.join("schemathesis.toml").display().to_string(),
        "run".into(),
        format!("http://{addr}/api/v1/openapi.json"),
        "--url".into(),
        format!("http://{addr}"),
        "--auth".into(),
        "alice:secret".into(),
        "--checks".into(),
        "all".into(),
        // Every check but one: "schema-valid requests are accepted" cannot hold for a file API,
        // where a valid but random path names nothing (404) or a file where a directory must be
        // (409). Those answers are still checked against the document by the other checks.
        "--exclude-checks".into(),
        "positive_data_acceptance".into(),
        // A modest run: a few minutes at most on a small machine.
        "--max-examples".into(),
        "15".into(),
        "--workers".into(),
        "1".into(),
        "--request-timeout".into(),
        "20".into(),
        "--seed".into(),
        "1".into(),
        "--report".into(),
        "junit".into(),
        "--report-junit-path".into(),
        report.display().to_string(),
    ];
    let clients_dir = clients.clone();
    let out = tokio::task::spawn_blocking(move || {
        let clients = clients_dir;
        std::process::Command::new(bin)
            .args(&args)
            .env("NO_COLOR", "1")
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .env("PYTHONPATH", &clients)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    t.stop().await;
}
