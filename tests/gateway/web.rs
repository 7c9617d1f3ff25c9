//! The web interface (issue 17, docs/web.md): served at `/` with its headers (CSP, gzip, ETag),
//! and driven in Debian's headless Chromium through Selenium by tests/clients/web_ui.py against a
//! real gateway, with FTP beside it for live updates. The script's checks and axe-core's WCAG 2.2
//! AA run print one line each; screenshots land in docs/web/, measurements in the summary lines.
//! Chromium, chromedriver, Selenium or axe-core missing is a failure (scripts/test installs them).

use std::path::PathBuf;
use std::time::Instant;

use crate::common::{program, start, summary, Kind, TestGateway};
use filegate::config::Permission;
use storage_backend::{ChangeContext, StorePath};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_with_a_strict_policy_and_compressed() {
    let t = start(Kind::Embedded, |_| {}).await;
    let base = format!("http://{}", t.gw().http_addr);
    let head = |args: &[&str]| {
        let mut all = vec!["-sS", "-o", "/dev/null", "-D", "-"];
        all.extend_from_slice(args);
        String::from_utf8(crate::common::client("curl", &all))
            .unwrap()
            .to_ascii_lowercase()
    };
    let page = head(&["-H", "Accept-Encoding: gzip", &format!("{base}/")]);
    assert!(page.starts_with("http/1.1 200"), "{page}");
    assert!(page.contains("content-encoding: gzip"), "{page}");
    assert!(page.contains("content-type: text/html"), "{page}");
    let csp = page
        .lines()
        .find(|l| l.starts_with("content-security-policy:"))
        .unwrap_or_else(|| panic!("no CSP: {page}"));
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(page.contains("x-content-type-options: nosniff"));
    let etag = page
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    let again = head(&["-H", &format!("If-None-Match: {etag}"), &format!("{base}/")]);
    assert!(again.starts_with("http/1.1 304"), "{again}");
    let js = head(&[&format!("{base}/assets/app.js")]);
    assert!(js.contains("content-type: text/javascript"), "{js}");
    assert!(
        !js.contains("content-encoding"),
        "gzip only when accepted: {js}"
    );
    assert!(head(&[&format!("{base}/assets/nope.js")]).starts_with("http/1.1 404"));
    // The API is still the API's (problem+json for unknown endpoints), not the interface.
    let api = head(&[&format!("{base}/api/v1/nope")]);
    assert!(api.contains("application/problem+json"), "{api}");
    let (raw, gz): (usize, usize) = filegate::http::web::sizes()
        .iter()
        .fold((0, 0), |(r, g), (_, a, b)| (r + a, g + b));
    summary(
        "web",
        "first page gzipped",
        "bytes",
        gz as f64,
        "uncompressed",
        raw as f64,
    );
    t.stop().await;
}

/// Alice and a read-only user share a home; "slow" uploads at 4 MiB/s so a reload lands mid-upload.
fn users(c: &mut filegate::config::Config) {
    let mut slow = crate::common::user("slow", "/home/alice", &Permission::ALL);
    slow.bandwidth_up = Some(4 * 1024 * 1024);
    c.users.push(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_headless_chromium_embedded() {
    in_headless_chromium(Kind::Embedded).await
}

async fn in_headless_chromium(kind: Kind) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let axe = root.join("tests/clients/web/node_modules/axe-core/axe.min.js");
    assert!(
        axe.exists(),
        "{} missing: run scripts/test (npm ci in tests/clients/web)",
        axe.display()
    );
    // Found now, so a missing browser is named plainly rather than as a Selenium traceback.
    program("chromium");
    program("chromedriver");
    let python = program("python3");

    let t = start(kind, users).await;
    seed_big_folder(&t).await;
    let work = t.temp_path("web");
    std::fs::create_dir_all(&work).unwrap();
    let results = work.join("results.json");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(root.join("tests/clients/web_ui.py"))
        .env("FILEGATE_WEB", format!("http://{}", t.gw().http_addr))
        .env("FILEGATE_FTP", t.ftp_addr().to_string())
        .env("FILEGATE_WORK", &work)
        .env("FILEGATE_AXE", &axe)
        .env("FILEGATE_RESULTS", &results)
        .env("FILEGATE_SHOTS", root.join("docs/web"));
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the browser checks failed after {:?} (lines FAIL above)",
        started.elapsed()
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    for (metric, unit, target) in [
        ("first_page_bytes_on_wire", "bytes", 150_000.0),
        ("big_folder_first_listing_in_app_ms", "ms", 500.0),
        ("big_folder_first_listing_page_load_ms", "ms", 500.0),
        ("ftp_226_to_visible_ms", "ms", 1000.0),
    ] {
        if let Some(v) = r[metric].as_f64() {
            summary("web", metric, unit, v, "target", target);
        }
    }
    // FILEGATE_BENCH_MIB=1024: a browser (tus) upload of that size next to curl's PUT.
    if let (Some(browser), Some(curl)) = (
        r["browser_upload_MiB_s"].as_f64(),
        r["curl_put_MiB_s"].as_f64(),
    ) {
        summary(
            "web",
            "browser upload (tus)",
            "MiB/s",
            browser,
            "curl PUT",
            curl,
        );
        if let Some(put) = r["browser_put_MiB_s"].as_f64() {
            summary(
                "web",
                "browser upload (tus)",
                "MiB/s",
                browser,
                "the same browser's plain PUT",
                put,
            );
        }
    }
    t.stop().await;
}

/// `/big` with 10,000 files (entry-00000 … entry-09999), written straight into the store.
async fn seed_big_folder(t: &TestGateway) {
    let ctx = ChangeContext::new("alice", "test", "127.0.0.1:1");
    let store = t.store().clone();
    for dir in ["/home", "/home/alice"] {
        // The home may exist already (the gateway makes it at a first login).
        store
            .mkdir(&StorePath::parse(dir).unwrap(), &ctx)
            .await
            .ok();
    }
    store
        .mkdir(&StorePath::parse("/home/alice/big").unwrap(), &ctx)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                for i in (w..10_000).step_by(8) {
                    let p = StorePath::parse(&format!("/home/alice/big/entry-{i:05}")).unwrap();
                    store
                        .write_file(&p, format!("{i}\n").as_bytes(), &ctx)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}
