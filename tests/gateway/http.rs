//! The REST API under `/api/v1`, driven by curl and Python `requests` (and a raw socket for a
//! body cut off mid-way), on both backends: uploads, downloads with ranges and resume, listings,
//! mkdir, move, delete, problem bodies, the jail, permissions, bans and one event per change.

use std::time::{Duration, Instant};

use crate::common::{
    content, program, sha256_hex, start, until, until_true, Kind, TestGateway, PASSWORD,
};
use storage_backend::{Event, EventKind, StorePath};

on_both_backends!(
    curl_files_ranges_and_events,
    jail_matrix_is_refused_and_creates_nothing,
    python_requests_client,
    a_body_cut_off_is_not_a_complete_file,
    quota_limits_and_wrong_methods,
);

/// `http.tls.listen`: curl verifies the certificate, and the API, the probes and the upload path are
/// the same over TLS; a plain-text request to the TLS port gets no HTTP answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_serves_the_same_api() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("http.crt"), certs.path().join("http.key"));
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
    let t = start(Kind::Embedded, |c| {
        c.http.tls.listen = Some("127.0.0.1:0".parse().unwrap());
        c.http.tls.cert = cert.clone();
        c.http.tls.key = key.clone();
    })
    .await;
    let port = t.gw().https_addr.expect("https listener").port();
    let base = format!("https://localhost:{port}");
    let tls = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--cacert".into(),
            cert.display().to_string(),
            "--resolve".into(),
            format!("localhost:{port}:127.0.0.1"),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let local = t.temp_path("tls-upload.bin");
    let data = content(7, 300_000);
    std::fs::write(&local, &data).unwrap();
    let put_url = format!("{base}/api/v1/files/tls.bin");
    let args = tls(&["-u", ALICE, "-T", local.to_str().unwrap(), &put_url]);
    let r = curl(&t, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let args = tls(&["-u", ALICE, &put_url]);
    let r = curl(&t, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(r.status, 200);
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    // The probes too (readyz would say 503 here: these tests run without a broker).
    let health = format!("{base}/healthz");
    let args = tls(&[&health]);
    let r = curl(&t, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
    // Without credentials: the same 401 as on the plain listener.
    let args = tls(&[&put_url]);
    let r = curl(&t, &args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    r.problem(401);
    // Plain HTTP sent to the TLS port is not answered as HTTP.
    let plain = std::process::Command::new(program("curl"))
        .args([
            "-sS",
            "-m",
            "10",
            &format!("http://127.0.0.1:{port}/healthz"),
        ])
        .output()
        .unwrap();
    assert!(!plain.status.success() || !String::from_utf8_lossy(&plain.stdout).contains("ok"));
    assert_eq!(http_events(&t).await.len(), 1, "one upload, one event");
}

/// What curl got: the status, the final header block (lower-case names) and the body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: {} (status {})",
                String::from_utf8_lossy(&self.body),
                self.status
            )
        })
    }

    /// An RFC 9457 problem body with the expected status, its content type and every member.
    fn problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let p = self.json();
        assert_eq!(p["status"], status);
        for member in ["type", "title", "detail"] {
            assert!(
                p[member].as_str().is_some_and(|s| !s.is_empty()),
                "{member} missing: {p}"
            );
        }
        p
    }
}

/// Runs curl (off the runtime's workers) with `args`; the reply whatever its status.
async fn curl(t: &TestGateway, args: &[&str]) -> Reply {
    let body_file = t.temp_path(&format!("body-{}", rand::random::<u64>()));
    let mut full: Vec<String> = vec!["-sS".into(), "--path-as-is".into(), "-D".into(), "-".into()];
    // The body goes to a file, unless the test names its own (`-o` pairs with the URL).
    if !args.contains(&"-o") {
        full.extend(["-o".into(), body_file.display().to_string()]);
    }
    full.extend(args.iter().map(|s| s.to_string()));
    let curl = program("curl");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(curl)
            .args(&full)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // After `100 Continue` comes the final answer: keep the last header block.
    let block = text
        .split("\r\n\r\n")
        .filter(|b| b.starts_with("HTTP/"))
        .last()
        .unwrap_or_else(|| panic!("no answer: {text}"));
    let mut lines = block.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = std::fs::read(&body_file).unwrap_or_default();
    let _ = std::fs::remove_file(&body_file);
    Reply {
        status: status.parse().unwrap(),
        headers,
        body,
    }
}

fn url(t: &TestGateway, path: &str) -> String {
    format!("http://{}/api/v1/{}", t.gw().http_addr, path)
}

const ALICE: &str = "alice:secret";

async fn http_events(t: &TestGateway) -> Vec<Event> {
    t.events()
        .await
        .into_iter()
        .filter(|e| e.protocol == "http")
        .collect()
}

async fn store_has(t: &TestGateway, path: &str) -> bool {
    t.store()
        .stat(&StorePath::parse(path).unwrap())
        .await
        .is_ok()
}

async fn curl_files_ranges_and_events(kind: Kind) {
    let t = start(kind, |_| {}).await;
    assert_eq!(PASSWORD, "secret");
    let data = content(1, 300_000);
    let local = t.temp_path("up.bin");
    std::fs::write(&local, &data).unwrap();
    let local = local.display().to_string();

    // No credentials, or wrong ones: 401 asking for Basic.
    let r = curl(&t, &[&url(&t, "files/a.bin")]).await;
    r.problem(401);
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Basic realm=\"filegate\"")));
    curl(&t, &["-u", "alice:wrong", &url(&t, "files/")])
        .await
        .problem(401);

    // Upload: 201 new, 200 replaced, with the digest of what arrived.
    let r = curl(&t, &["-u", ALICE, "-T", &local, &url(&t, "files/a.bin")]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    assert_eq!(j["path"], "/a.bin");
    assert_eq!(j["size"], data.len());
    assert_eq!(j["sha256"], sha256_hex(&data));
    assert!(j["version"].as_u64().unwrap() > 0);
    assert_eq!(t.store_bytes("/home/alice/a.bin").await, data);
    let r = curl(&t, &["-u", ALICE, "-T", &local, &url(&t, "files/a.bin")]).await;
    assert_eq!(r.status, 200);
    let etag = format!("\"{}\"", sha256_hex(&data));

    // Download: the bytes, the ETag, ranges, the file name.
    let r = curl(&t, &["-u", ALICE, &url(&t, "files/a.bin")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r
        .header("content-disposition")
        .is_some_and(|v| v.contains("filename=\"a.bin\"")));
    let r = curl(
        &t,
        &["-u", ALICE, "-r", "1000-70999", &url(&t, "files/a.bin")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[1000..71000]);
    assert_eq!(r.header("content-range"), Some("bytes 1000-70999/300000"));
    let r = curl(&t, &["-u", ALICE, "-r", "-10", &url(&t, "files/a.bin")]).await;
    assert_eq!((r.status, &r.body[..]), (206, &data[data.len() - 10..]));
    let r = curl(&t, &["-u", ALICE, "-r", "300000-", &url(&t, "files/a.bin")]).await;
    r.problem(416);
    assert_eq!(r.header("content-range"), Some("bytes */300000"));

    // curl's resume of a broken download: it asks for the rest and appends it.
    let partial = t.temp_path("down.bin");
    std::fs::write(&partial, &data[..123_456]).unwrap();
    let partial_s = partial.display().to_string();
    let r = curl(
        &t,
        &[
            "-u",
            ALICE,
            "-C",
            "-",
            "-o",
            &partial_s,
            &url(&t, "files/a.bin"),
        ],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(std::fs::read(&partial).unwrap(), data);

    // HEAD: the same headers, no body; If-None-Match: 304.
    let r = curl(&t, &["-u", ALICE, "-I", &url(&t, "files/a.bin")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("300000"));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    // With -I curl's output is the header block alone: no byte of content came.
    assert!(r.body.starts_with(b"HTTP/1.1 200") && r.body.len() < 1000);
    let inm = format!("If-None-Match: {etag}");
    let r = curl(&t, &["-u", ALICE, "-H", &inm, &url(&t, "files/a.bin")]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());

    // Not found: a problem body that says what.
    let p = curl(&t, &["-u", ALICE, &url(&t, "files/nope.txt")])
        .await
        .problem(404);
    assert_eq!(p["type"], "urn:filegate:problem:not-found");
    assert!(p["detail"].as_str().unwrap().contains("nope.txt"), "{p}");

    // Directories: mkdir -p, an upload with parents, paged listing, move, delete.
    let r = curl(
        &t,
        &["-u", ALICE, "-X", "POST", &url(&t, "dirs/d/e?parents=true")],
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    curl(&t, &["-u", ALICE, "-X", "POST", &url(&t, "dirs/d")])
        .await
        .problem(409);
    curl(
        &t,
        &["-u", ALICE, "-T", &local, &url(&t, "files/x/y/z.bin")],
    )
    .await
    .problem(404);
    let r = curl(
        &t,
        &[
            "-u",
            ALICE,
            "-T",
            &local,
            &url(&t, "files/x/y/z%20%C3%A4.bin?parents=true"),
        ],
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["path"], "/x/y/z ä.bin");
    assert_eq!(
        r.header("location"),
        Some("/api/v1/files/x/y/z%20%C3%A4.bin")
    );
    let r = curl(
        &t,
        &["-u", ALICE, "-I", &url(&t, "files/x/y/z%20%C3%A4.bin")],
    )
    .await;
    assert!(r
        .header("content-disposition")
        .is_some_and(|v| v.contains("filename*=UTF-8''z%20%C3%A4.bin")));
    for name in ["d/f1", "d/f2", "d/f3"] {
        let r = curl(
            &t,
            &[
                "-u",
                ALICE,
                "-T",
                &local,
                &url(&t, &format!("files/{name}")),
            ],
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let mut names = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let page_url = match &next {
            None => url(&t, "files/d?limit=2"),
            Some(c) => url(&t, &format!("files/d?limit=2&cursor={c}")),
        };
        let j = curl(&t, &["-u", ALICE, &page_url]).await.json();
        let entries = j["entries"].as_array().unwrap();
        assert!(entries.len() <= 2);
        for e in entries {
            names.push(format!(
                "{}:{}",
                e["name"].as_str().unwrap(),
                e["type"].as_str().unwrap()
            ));
            if e["type"] == "file" {
                assert_eq!(e["size"], data.len());
                assert_eq!(e["sha256"], sha256_hex(&data));
            }
        }
        match j["next"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["e:dir", "f1:file", "f2:file", "f3:file"]);
    curl(&t, &["-u", ALICE, &url(&t, "files/?limit=0")])
        .await
        .problem(400);
    let r = curl(
        &t,
        &[
            "-u",
            ALICE,
            "-H",
            "Content-Type: application/json",
            "--data",
            r#"{"from": "d/f3", "to": "x/moved"}"#,
            &url(&t, "move"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(t.store_bytes("/home/alice/x/moved").await, data);
    assert!(!store_has(&t, "/home/alice/d/f3").await);
    curl(
        &t,
        &[
            "-u",
            ALICE,
            "--data",
            r#"{"from": "d/f1", "to": "x/moved"}"#,
            &url(&t, "move"),
        ],
    )
    .await
    .problem(409);
    let r = curl(&t, &["-u", ALICE, "-X", "DELETE", &url(&t, "files/a.bin")]).await;
    assert_eq!(r.status, 204);
    assert!(!store_has(&t, "/home/alice/a.bin").await);
    let p = curl(&t, &["-u", ALICE, "-X", "DELETE", &url(&t, "files/d")])
        .await
        .problem(409);
    assert!(p["detail"].as_str().unwrap().contains("recursive"), "{p}");
    let r = curl(
        &t,
        &[
            "-u",
            ALICE,
            "-X",
            "DELETE",
            &url(&t, "files/d?recursive=true"),
        ],
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(!store_has(&t, "/home/alice/d").await);
    curl(&t, &["-u", ALICE, "-X", "DELETE", &url(&t, "files/")])
        .await
        .problem(403);
    // Recursively neither: refused before anything in the home goes.
    curl(
        &t,
        &[
            "-u",
            ALICE,
            "-X",
            "DELETE",
            &url(&t, "files/?recursive=true"),
        ],
    )
    .await
    .problem(403);
    assert!(store_has(&t, "/home/alice/x/moved").await);

    // The read-only user reads but may not change anything.
    let r = curl(&t, &["-u", "reader:secret", &url(&t, "files/x/moved")]).await;
    assert_eq!((r.status, r.body.len()), (200, data.len()));
    curl(
        &t,
        &["-u", "reader:secret", "-T", &local, &url(&t, "files/r.bin")],
    )
    .await
    .problem(403);
    curl(
        &t,
        &[
            "-u",
            "reader:secret",
            "-X",
            "DELETE",
            &url(&t, "files/x/moved"),
        ],
    )
    .await
    .problem(403);
    assert!(!store_has(&t, "/home/alice/r.bin").await);
    assert!(store_has(&t, "/home/alice/x/moved").await);

    // Every change was one event, over HTTP, in order.
    let kinds: Vec<(EventKind, String)> = http_events(&t)
        .await
        .into_iter()
        .map(|e| (e.kind, e.path))
        .collect();
    let p = |s: &str| format!("/home/alice/{s}");
    let expected = vec![
        (EventKind::FileCreated, p("a.bin")),
        (EventKind::FileModified, p("a.bin")),
        (EventKind::DirCreated, p("d")),
        (EventKind::DirCreated, p("d/e")),
        (EventKind::DirCreated, p("x")),
        (EventKind::DirCreated, p("x/y")),
        (EventKind::FileCreated, p("x/y/z ä.bin")),
        (EventKind::FileCreated, p("d/f1")),
        (EventKind::FileCreated, p("d/f2")),
        (EventKind::FileCreated, p("d/f3")),
        (EventKind::FileRenamed, p("x/moved")),
        (EventKind::FileDeleted, p("a.bin")),
        (EventKind::DirDeleted, p("d/e")),
        (EventKind::FileDeleted, p("d/f1")),
        (EventKind::FileDeleted, p("d/f2")),
        (EventKind::DirDeleted, p("d")),
    ];
    assert_eq!(kinds, expected);
    t.stop().await;
}

async fn jail_matrix_is_refused_and_creates_nothing(kind: Kind) {
    let t = start(kind, |c| c.storage.max_file_size = 100_000).await;
    let long = "n".repeat(300);
    let bad = [
        "..",
        "../escape",
        "a/../../escape",
        "%2e%2e/escape",
        "%2E%2E",
        ".",
        "a%2fb",
        "%2f..%2fescape",
        "a%5cb",
        "..%5c..%5cescape",
        "a%00b",
        "a%0ab",
        long.as_str(),
        "%ff%fe",
        "ok/%c3%28",
    ];
    for path in bad {
        for (method, endpoint) in [
            ("PUT", format!("files/{path}?parents=true")),
            ("POST", format!("dirs/{path}?parents=true")),
            ("GET", format!("files/{path}")),
            ("DELETE", format!("files/{path}?recursive=true")),
        ] {
            let mut args = vec!["-u", ALICE, "-X", method];
            // `--data-binary`, not `-T`: curl's -T rewrites a URL that ends in `..`.
            if method == "PUT" {
                args.extend(["--data-binary", "payload"]);
            }
            let u = url(&t, &endpoint);
            args.push(&u);
            let p = curl(&t, &args).await.problem(400);
            assert_eq!(
                p["type"], "urn:filegate:problem:invalid-path",
                "{method} {path}: {p}"
            );
        }
    }
    let p = curl(
        &t,
        &[
            "-u",
            ALICE,
            "--data",
            r#"{"from": "../../etc", "to": "x"}"#,
            &url(&t, "move"),
        ],
    )
    .await
    .problem(400);
    assert_eq!(p["type"], "urn:filegate:problem:invalid-path");

    // Too large for storage.max_file_size: refused before the body, nothing created.
    let big = t.temp_path("big");
    std::fs::write(&big, content(2, 200_000)).unwrap();
    let p = curl(
        &t,
        &[
            "-u",
            ALICE,
            "-T",
            &big.display().to_string(),
            &url(&t, "files/big?parents=true"),
        ],
    )
    .await
    .problem(413);
    assert!(p["detail"].as_str().unwrap().contains("100000"), "{p}");

    // Nothing was created anywhere: the home is empty and no change was made over HTTP.
    let home = t
        .store()
        .list(&StorePath::parse("/home/alice").unwrap(), None, 100)
        .await
        .unwrap();
    assert!(home.entries.is_empty(), "{:?}", home.entries);
    assert!(!store_has(&t, "/escape").await && !store_has(&t, "/home/escape").await);
    assert!(http_events(&t).await.is_empty());
    t.stop().await;
}

const PYTHON_CLIENT: &str = r#"
import hashlib, os, sys, requests

base = os.environ["BASE"]
auth = ("alice", "secret")
s = requests.Session()
s.auth = auth
data = os.urandom(1_500_000)

r = s.put(base + "/files/py/data.bin", params={"parents": "true"}, data=data)
assert r.status_code == 201, (r.status_code, r.text)
assert r.json()["sha256"] == hashlib.sha256(data).hexdigest(), r.text

# A streamed upload of unknown length (chunked) replaces it.
def chunks():
    for i in range(0, len(data), 100_000):
        yield data[i:i + 100_000]
r = s.put(base + "/files/py/data.bin", data=chunks())
assert r.status_code == 200, (r.status_code, r.text)

r = s.get(base + "/files/py/data.bin", stream=True)
assert r.status_code == 200
got = b"".join(r.iter_content(65536))
assert got == data
etag = r.headers["ETag"]
assert s.get(base + "/files/py/data.bin", headers={"If-None-Match": etag}).status_code == 304
r = s.get(base + "/files/py/data.bin", headers={"Range": "bytes=10-19"})
assert r.status_code == 206 and r.content == data[10:20], r.status_code

r = s.get(base + "/files/py")
assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
assert [e["name"] for e in r.json()["entries"]] == ["data.bin"], r.text

r = requests.get(base + "/files/py/data.bin", auth=("alice", "nope"))
assert r.status_code == 401 and r.headers["Content-Type"] == "application/problem+json"

r = s.post(base + "/move", json={"from": "py/data.bin", "to": "py/renamed.bin"})
assert r.status_code == 200, r.text

# Names with a space, a plus and a non-ASCII letter, paged one by one through the cursor.
for name in ["a b+c.txt", "ä.txt", "z.txt"]:
    r = s.put(base + "/files/py/" + requests.utils.quote(name), data=b"x")
    assert r.status_code == 201, (name, r.text)
names, cursor = [], None
while True:
    params = {"limit": 1}
    if cursor is not None:
        params["cursor"] = cursor
    j = s.get(base + "/files/py", params=params).json()
    assert len(j["entries"]) <= 1, j
    names += [e["name"] for e in j["entries"]]
    cursor = j["next"]
    if cursor is None:
        break
want = sorted(["a b+c.txt", "renamed.bin", "ä.txt", "z.txt"], key=lambda n: n.encode())
assert names == want, names
r = s.delete(base + "/files/py", params={"recursive": "true"})
assert r.status_code == 204, r.text
r = s.get(base + "/files/py")
assert r.status_code == 404 and r.json()["status"] == 404
print("ok")
"#;

async fn python_requests_client(kind: Kind) {
    let t = start(kind, |_| {}).await;
    let base = format!("http://{}/api/v1", t.gw().http_addr);
    let python = program("python3");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", PYTHON_CLIENT])
            .env("BASE", base)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success() && out.stdout.starts_with(b"ok"),
        "python requests: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let kinds: Vec<EventKind> = http_events(&t).await.into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::DirCreated,
            EventKind::FileCreated,
            EventKind::FileModified,
            EventKind::FileRenamed,
            EventKind::FileCreated,
            EventKind::FileCreated,
            EventKind::FileCreated,
            EventKind::FileDeleted,
            EventKind::FileDeleted,
            EventKind::FileDeleted,
            EventKind::FileDeleted,
            EventKind::DirDeleted,
        ]
    );
    t.stop().await;
}

/// A client that promises 200,000 bytes and vanishes after 100,000: the file is kept flagged
/// incomplete (`storage.partial_uploads = "keep"`) and announced so, never as a complete file.
async fn a_body_cut_off_is_not_a_complete_file(kind: Kind) {
    use base64::Engine as _;
    use tokio::io::AsyncWriteExt;
    let t = start(kind, |_| {}).await;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}"));
    let mut s = tokio::net::TcpStream::connect(t.gw().http_addr)
        .await
        .unwrap();
    s.write_all(
        format!(
            "PUT /api/v1/files/cut.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Basic {auth}\r\n\
             Content-Length: 200000\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s.write_all(&content(3, 100_000)).await.unwrap();
    s.flush().await.unwrap();
    drop(s);
    let event = until(
        "the cut-off upload never ended",
        Duration::from_secs(30),
        || async { http_events(&t).await.into_iter().next().ok_or("no event") },
    )
    .await;
    assert_eq!(event.kind, EventKind::FileIncomplete);
    assert_eq!(event.complete, Some(false));
    let meta = t
        .store()
        .stat(&StorePath::parse("/home/alice/cut.bin").unwrap())
        .await
        .unwrap();
    assert!(!meta.complete);
    let r = curl(&t, &["-u", ALICE, "-I", &url(&t, "files/cut.bin")]).await;
    assert_eq!(r.header("x-filegate-complete"), Some("false"));
    assert_eq!(http_events(&t).await.len(), 1);
    t.stop().await;
}

/// Wrong passwords over HTTP ban the address for every protocol; the ban is answered 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_ban_the_address_for_ftp_too() {
    let t = start(Kind::Embedded, |c| c.limits.login_failures_per_ip = 3).await;
    // A good login first: logins that succeed do not count.
    let r = curl(&t, &["-u", ALICE, &url(&t, "files/")]).await;
    assert_eq!(r.status, 200);
    for _ in 0..2 {
        curl(&t, &["-u", "alice:wrong", &url(&t, "files/")])
            .await
            .problem(401);
    }
    // The third failure starts the ban, and says so.
    curl(&t, &["-u", "alice:wrong", &url(&t, "files/")])
        .await
        .problem(429);
    let r = curl(&t, &["-u", ALICE, &url(&t, "files/")]).await;
    let p = r.problem(429);
    assert!(
        p["detail"].as_str().unwrap().contains("failed logins"),
        "{p}"
    );
    assert!(r
        .header("retry-after")
        .is_some_and(|v| v.parse::<u64>().unwrap() > 0));
    let ftp = curl_ftp_list(&t).await;
    assert!(!ftp, "FTP still let the banned address in");
    t.stop().await;
}

/// Whether curl can list the FTP home with the right password.
async fn curl_ftp_list(t: &TestGateway) -> bool {
    let u = t.ftp_url("alice", "/");
    let curl = program("curl");
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(curl)
            .args(["-sS", "--max-time", "20", &u])
            .output()
            .unwrap()
            .status
            .success()
    })
    .await
    .unwrap()
}

/// The probes still answer beside the API, and an unknown API path is a problem, not a bare 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_unknown_endpoints() {
    let t = start(Kind::Embedded, |_| {}).await;
    let (status, body) = crate::common::http_get(t.gw().http_addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    curl(&t, &["-u", ALICE, &url(&t, "nothing-here")])
        .await
        .problem(404);
    t.stop().await;
}

/// The quota: a `Content-Length` that cannot fit is 413 before the body (a replacement is credited
/// with what it replaces), a chunked body that outgrows it is 507; neither leaves anything behind.
async fn quota_limits_and_wrong_methods(kind: Kind) {
    let t = start(kind, |c| c.users[0].quota_bytes = Some(100_000)).await;
    let file = |name: &str, len: usize| {
        let p = t.temp_path(name);
        std::fs::write(&p, content(4, len)).unwrap();
        p.display().to_string()
    };
    let (small, bigger, rest) = (
        file("60k", 60_000),
        file("90k", 90_000),
        file("50k", 50_000),
    );
    let r = curl(&t, &["-u", ALICE, "-T", &small, &url(&t, "files/q.bin")]).await;
    assert_eq!(r.status, 201);
    let r = curl(&t, &["-u", ALICE, "-T", &bigger, &url(&t, "files/q.bin")]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let p = curl(&t, &["-u", ALICE, "-T", &rest, &url(&t, "files/more.bin")])
        .await
        .problem(413);
    assert_eq!(p["type"], "urn:filegate:problem:quota-exceeded");
    let data = format!("@{rest}");
    let p = curl(
        &t,
        &[
            "-u",
            ALICE,
            "-X",
            "PUT",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &data,
            &url(&t, "files/more.bin"),
        ],
    )
    .await
    .problem(507);
    assert_eq!(p["type"], "urn:filegate:problem:quota-exceeded");
    assert!(!store_has(&t, "/home/alice/more.bin").await);
    assert_eq!(t.store_bytes("/home/alice/q.bin").await, content(4, 90_000));
    assert_eq!(http_events(&t).await.len(), 2);

    let r = curl(&t, &["-u", ALICE, "-X", "PATCH", &url(&t, "files/q.bin")]).await;
    r.problem(405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, POST, DELETE"));
    t.stop().await;
}

/// Shutdown does not wait forever for a slow download: after `server.shutdown_grace` the transfer
/// ends (the client sees it unfinished, never as the whole file) and the gateway stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_slow_download_after_the_grace_period() {
    let t = start(Kind::Embedded, |c| {
        c.users[0].bandwidth_down = Some(100_000);
        c.server.shutdown_grace = Duration::from_secs(1);
    })
    .await;
    let data = content(5, 2_000_000);
    let local = t.temp_path("slow.bin");
    std::fs::write(&local, &data).unwrap();
    let r = curl(
        &t,
        &[
            "-u",
            ALICE,
            "-T",
            &local.display().to_string(),
            &url(&t, "files/slow.bin"),
        ],
    )
    .await;
    assert_eq!(r.status, 201);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("slow.bin");
    let (u, o, curl_bin) = (url(&t, "files/slow.bin"), out.clone(), program("curl"));
    let download = tokio::task::spawn_blocking(move || {
        std::process::Command::new(curl_bin)
            .args(["-sS", "--max-time", "60", "-u", ALICE, "-o"])
            .arg(&o)
            .arg(&u)
            .output()
            .unwrap()
    });
    until_true(
        "the download never started",
        Duration::from_secs(30),
        || async { std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) > 0 },
    )
    .await;
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), t.stop())
        .await
        .expect("the gateway stops despite the running download");
    assert!(
        stopping.elapsed() >= Duration::from_millis(900),
        "the grace period was not given"
    );
    let result = download.await.unwrap();
    assert!(
        !result.status.success(),
        "curl took the cut download for complete"
    );
    assert!(std::fs::metadata(&out).unwrap().len() < data.len() as u64);
}

/// A query parameter with a value outside its schema is refused (400) whether the path names a
/// file or a directory, before anything happens (Schemathesis: `DELETE …?recursive=4.8e307` on a
/// file deleted it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_values_are_refused_for_files_too() {
    let t = start(Kind::Embedded, |_| {}).await;
    let base = format!("http://{}/api/v1/files", t.gw().http_addr);
    let auth = format!("alice:{PASSWORD}");
    let curl = |args: &[&str]| {
        let out = std::process::Command::new(crate::common::program("curl"))
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", &auth])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(curl(&["-T", "/dev/null", &format!("{base}/f.txt")]), "201");
    assert_eq!(
        curl(&["-X", "DELETE", &format!("{base}/f.txt?recursive=4.8e307")]),
        "400"
    );
    assert_eq!(curl(&[&format!("{base}/f.txt?limit=0")]), "400");
    // The file is still there, and well-formed requests work.
    assert_eq!(curl(&[&format!("{base}/f.txt")]), "200");
    assert_eq!(
        curl(&["-X", "DELETE", &format!("{base}/f.txt?recursive=false")]),
        "204"
    );
    t.stop().await;
}
