//! Transfers over the REST API with real clients, on both backends: tus resumable uploads with the
//! reference Python client (`tuspy`) through a proxy that cuts the connection twice, termination,
//! checksums, expiry and size limits; ZIP downloads checked by Python's `zipfile`; browser-style
//! multipart uploads with `requests`; digest-checked PUT; sorted listings; search; batch delete;
//! usage.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{content, program, sha256_hex, start, until, Kind, TestGateway, PASSWORD};
use filegate::events::{announce, TempNames};
use storage_backend::{Event, StorePath};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

on_both_backends!(
    tuspy_resumes_200_mib_through_two_cut_connections,
    tus_protocol_edges,
    tus_expiry_ends_an_abandoned_upload_like_ftp,
    zip_multipart_digest_sort_search_delete_usage,
);

/// The events subscribers are told about (the `[events]` rules applied), as (type, path).
async fn announced(t: &TestGateway) -> Vec<(String, String)> {
    let temp = TempNames::new(&t.config.events.temp_patterns);
    t.events()
        .await
        .iter()
        .filter_map(|e: &Event| announce(e, &temp))
        .map(|a| (a.kind.to_string(), a.path))
        .collect()
}

fn python(script: &str, envs: &[(&str, String)]) -> (bool, String) {
    let out = std::process::Command::new(program("python3"))
        .args(["-c", script])
        .envs(envs.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn python_async(script: &'static str, envs: Vec<(&'static str, String)>) -> String {
    let (ok, out) = tokio::task::spawn_blocking(move || python(script, &envs))
        .await
        .unwrap();
    assert!(ok && out.contains("ok"), "python: {out}");
    out
}

/// A TCP proxy in front of the gateway that cuts the connection carrying the client's bytes when
/// the total sent through it passes each of `cuts` (once each).
struct CuttingProxy {
    addr: SocketAddr,
    cuts_done: Arc<AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
}

impl CuttingProxy {
    async fn start(upstream: SocketAddr, cuts: Vec<u64>) -> CuttingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let total = Arc::new(AtomicU64::new(0));
        let cuts_done = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(cuts);
        let stop = tokio_util::sync::CancellationToken::new();
        let (done, s) = (cuts_done.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    c = listener.accept() => c.unwrap(),
                    _ = s.cancelled() => return,
                };
                let (total, done, cuts) = (total.clone(), done.clone(), cuts.clone());
                tokio::spawn(async move {
                    let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let back = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let before = total.fetch_add(n as u64, Ordering::SeqCst);
                        let i = done.load(Ordering::SeqCst);
                        if let Some(&cut) = cuts.get(i) {
                            if before + n as u64 >= cut
                                && done
                                    .compare_exchange(i, i + 1, Ordering::SeqCst, Ordering::SeqCst)
                                    .is_ok()
                            {
                                // Half of this piece goes through, then both sides are dropped.
                                let _ = sw.write_all(&buf[..n / 2]).await;
                                back.abort();
                                return;
                            }
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                    let _ = back.await;
                });
            }
        });
        CuttingProxy {
            addr,
            cuts_done,
            stop,
        }
    }
}

const TUSPY_UPLOAD: &str = r#"
import os, sys, time
from tusclient import client
c = client.TusClient(os.environ["URL"], headers={"Authorization": "Basic " + os.environ["AUTH"]})
up = c.uploader(file_path=os.environ["FILE"], chunk_size=int(os.environ["CHUNK"]),
                metadata={"path": os.environ["TARGET"]}, retries=5, retry_delay=0,
                upload_checksum=os.environ.get("CHECKSUM") == "1")
up.upload()
print(up.url)
print("ok")
"#;

fn basic(user: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{PASSWORD}"))
}

/// The headline test: tuspy sends 200 MiB through a proxy that cuts the connection twice; it
/// resumes (its retries ask HEAD for the offset); the file arrives whole, announced once, and
/// nothing shows at the target before the end. A plain PUT of the same bytes is timed beside it.
async fn tuspy_resumes_200_mib_through_two_cut_connections(kind: Kind) {
    let t = start(kind, |c| c.storage.chunk_size = 1 << 20).await;
    let size = 200usize << 20;
    let data = content(7, size);
    let local = t.temp_path("big.bin");
    std::fs::write(&local, &data).unwrap();
    let want = sha256_hex(&data);
    drop(data);
    let mkdir = std::process::Command::new(program("curl"))
        .args([
            "-sS",
            "-f",
            "-u",
            &format!("alice:{PASSWORD}"),
            "-X",
            "POST",
        ])
        .arg(format!("http://{}/api/v1/dirs/big", t.gw().http_addr))
        .output()
        .unwrap();
    assert!(mkdir.status.success());

    // Watches the target while the upload runs: until it appears it must not exist at all (not
    // even as an incomplete file), and when it appears it is the whole file.
    let target = StorePath::parse("/home/alice/big/tus.bin").unwrap();
    let finished = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (store, target, finished) = (t.store().clone(), target.clone(), finished.clone());
        let want = want.clone();
        tokio::spawn(async move {
            let mut looks = 0u32;
            while !finished.load(Ordering::SeqCst) {
                if let Ok(m) = store.stat(&target).await {
                    assert!(
                        m.complete && m.size == size as u64 && m.sha256.as_deref() == Some(&want),
                        "the target showed before the upload ended: {m:?}"
                    );
                    break;
                }
                looks += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            looks
        })
    };
    let proxy = CuttingProxy::start(t.gw().http_addr, vec![60 << 20, 130 << 20]).await;
    let started = Instant::now();
    let out = python_async(
        TUSPY_UPLOAD,
        vec![
            ("URL", format!("http://{}/api/v1/uploads", proxy.addr)),
            ("AUTH", basic("alice")),
            ("FILE", local.display().to_string()),
            ("CHUNK", (32usize << 20).to_string()),
            ("TARGET", "big/tus.bin".into()),
        ],
    )
    .await;
    let tus_secs = started.elapsed().as_secs_f64();
    finished.store(true, Ordering::SeqCst);
    let looks = watcher.await.unwrap();
    assert!(looks > 0);
    assert_eq!(
        proxy.cuts_done.load(Ordering::SeqCst),
        2,
        "both cuts happened"
    );
    proxy.stop.cancel();
    assert!(out.contains("/api/v1/uploads/"), "{out}");

    let meta = t.store().stat(&target).await.unwrap();
    assert!(meta.complete);
    assert_eq!(meta.size, size as u64);
    assert_eq!(meta.sha256.as_deref(), Some(want.as_str()));
    let ann: Vec<_> = announced(&t)
        .await
        .into_iter()
        .filter(|(_, p)| p.starts_with("/home/alice/big/"))
        .collect();
    assert_eq!(
        ann,
        [(
            "io.filegate.file.created".to_string(),
            "/home/alice/big/tus.bin".to_string()
        )],
        "exactly one announcement for the target"
    );
    // Nothing of the upload is left in the staging area.
    let staging = t
        .store()
        .list(&StorePath::parse("/.filegate-uploads").unwrap(), None, 10)
        .await
        .unwrap();
    assert!(staging.entries.is_empty(), "{:?}", staging.entries);

    // The same bytes with a plain PUT, for the time beside tus's.
    let started = Instant::now();
    let put = std::process::Command::new(program("curl"))
        .args([
            "-sS",
            "-f",
            "-o",
            "/dev/null",
            "-u",
            &format!("alice:{PASSWORD}"),
            "-T",
        ])
        .arg(&local)
        .arg(format!(
            "http://{}/api/v1/files/big/put.bin",
            t.gw().http_addr
        ))
        .output()
        .unwrap();
    assert!(put.status.success());
    let put_secs = started.elapsed().as_secs_f64();
    println!("tus 200 MiB with two cuts: {tus_secs:.2} s; plain PUT: {put_secs:.2} s ({kind:?})");
    crate::common::summary(
        "http",
        &format!("tus upload 200 MiB, 2 cuts ({kind:?})"),
        "s",
        tus_secs,
        "plain PUT",
        put_secs,
    );
    t.stop().await;
}

const TUS_EDGES: &str = r#"
import os, base64, hashlib, requests
base = os.environ["BASE"]
s = requests.Session()
s.auth = ("alice", os.environ["PASSWORD"])
V = {"Tus-Resumable": "1.0.0"}
def meta(**kv):
    return ",".join(k + " " + base64.b64encode(v.encode()).decode() for k, v in kv.items())

r = s.options(base + "/uploads")
assert r.status_code == 204, r.status_code
assert r.headers["Tus-Version"] == "1.0.0"
for ext in ["creation", "termination", "checksum", "expiration"]:
    assert ext in r.headers["Tus-Extension"], r.headers
assert "sha1" in r.headers["Tus-Checksum-Algorithm"]
assert r.headers["Tus-Max-Size"] == "1000000"

# Too large for storage.max_file_size: 413 at creation, nothing created.
r = s.post(base + "/uploads", headers={**V, "Upload-Length": "1000001", "Upload-Metadata": meta(filename="big.bin")})
assert r.status_code == 413, (r.status_code, r.text)
assert r.headers["Content-Type"] == "application/problem+json"
# No version header: 412. No target: 400.
r = s.post(base + "/uploads", headers={"Upload-Length": "10", "Upload-Metadata": meta(filename="a")})
assert r.status_code == 412, r.status_code
r = s.post(base + "/uploads", headers={**V, "Upload-Length": "10"})
assert r.status_code == 400, r.status_code
# A target that climbs out: 400; a missing directory: 404.
r = s.post(base + "/uploads", headers={**V, "Upload-Length": "10", "Upload-Metadata": meta(path="../x")})
assert r.status_code == 400, r.status_code
r = s.post(base + "/uploads", headers={**V, "Upload-Length": "10", "Upload-Metadata": meta(path="no/dir/x")})
assert r.status_code == 404, r.status_code

# Creation, then a PATCH at the wrong offset (409), a checksum mismatch (460, bytes dropped),
# a good PATCH with sha256, the rest with sha1.
body = os.urandom(300000)
r = s.post(base + "/uploads", headers={**V, "Upload-Length": str(len(body)), "Upload-Metadata": meta(filename="t.bin")})
assert r.status_code == 201, (r.status_code, r.text)
url = requests.compat.urljoin(base + "/", r.headers["Location"])
assert "Upload-Expires" in r.headers
P = {**V, "Content-Type": "application/offset+octet-stream"}
r = s.patch(url, data=body[:1000], headers={**P, "Upload-Offset": "5"})
assert r.status_code == 409, r.status_code
bad = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
r = s.patch(url, data=body[:1000], headers={**P, "Upload-Offset": "0", "Upload-Checksum": "sha1 " + bad})
assert r.status_code == 460, r.status_code
r = s.head(url, headers=V)
assert r.status_code == 200 and r.headers["Upload-Offset"] == "0", r.headers
assert r.headers["Upload-Length"] == str(len(body))
assert r.headers["Cache-Control"] == "no-store"
good = base64.b64encode(hashlib.sha256(body[:100000]).digest()).decode()
r = s.patch(url, data=body[:100000], headers={**P, "Upload-Offset": "0", "Upload-Checksum": "sha256 " + good})
assert r.status_code == 204 and r.headers["Upload-Offset"] == "100000", (r.status_code, r.text)
# Not there yet, not even listed.
assert s.get(base + "/files/t.bin").status_code == 404
assert "t.bin" not in [e["name"] for e in s.get(base + "/files/").json()["entries"]]
# Wrong content type: 415. Past the length: 413.
r = s.patch(url, data=b"x", headers={**V, "Content-Type": "text/plain", "Upload-Offset": "100000"})
assert r.status_code == 415, r.status_code
r = s.patch(url, data=body[100000:] + b"extra", headers={**P, "Upload-Offset": "100000"})
assert r.status_code == 413, r.status_code
rest = body[100000:]
good = base64.b64encode(hashlib.sha1(rest).digest()).decode()
r = s.patch(url, data=rest, headers={**P, "Upload-Offset": "100000", "Upload-Checksum": "sha1 " + good})
assert r.status_code == 204 and r.headers["Upload-Offset"] == str(len(body)), (r.status_code, r.text)
r = s.get(base + "/files/t.bin")
assert r.status_code == 200 and r.content == body
# The finished upload still answers HEAD with its full offset.
r = s.head(url, headers=V)
assert r.headers["Upload-Offset"] == str(len(body)), r.headers

# Termination: the bytes go, the URL is gone, nothing was published.
r = s.post(base + "/uploads", headers={**V, "Upload-Length": "5000", "Upload-Metadata": meta(path="gone.bin")})
url2 = requests.compat.urljoin(base + "/", r.headers["Location"])
r = s.patch(url2, data=b"y" * 2000, headers={**P, "Upload-Offset": "0"})
assert r.status_code == 204
r = s.delete(url2, headers=V)
assert r.status_code == 204, r.status_code
assert s.head(url2, headers=V).status_code == 404
assert s.patch(url2, data=b"y", headers={**P, "Upload-Offset": "2000"}).status_code == 404
assert s.get(base + "/files/gone.bin").status_code == 404

# Another user cannot see alice's upload; creation-with-upload; an empty upload.
r = s.post(base + "/uploads", headers={**V, "Upload-Length": "3", "Upload-Metadata": meta(path="small.txt")})
url3 = requests.compat.urljoin(base + "/", r.headers["Location"])
other = requests.head(url3, headers=V, auth=("nodelete", os.environ["PASSWORD"]))
assert other.status_code == 404, other.status_code
r = s.post(base + "/uploads", data=b"abc", headers={**P, "Upload-Length": "3", "Upload-Metadata": meta(path="inline.txt")})
assert r.status_code == 201 and r.headers["Upload-Offset"] == "3", (r.status_code, r.headers)
assert s.get(base + "/files/inline.txt").content == b"abc"
r = s.post(base + "/uploads", headers={**V, "Upload-Length": "0", "Upload-Metadata": meta(path="empty.txt")})
assert r.status_code == 201
r = s.get(base + "/files/empty.txt")
assert r.status_code == 200 and r.content == b""
# A user who may not write is refused at creation.
r = requests.post(base + "/uploads", headers={**V, "Upload-Length": "3", "Upload-Metadata": meta(path="r.txt")}, auth=("reader", os.environ["PASSWORD"]))
assert r.status_code == 403, r.status_code
# A plain PUT past storage.max_file_size, sent whole without waiting for 100 Continue (as requests
# does): the 413 arrives (the refused body is read and dropped, not left to reset the connection),
# and nothing is created.
for _ in range(5):
    r = s.put(base + "/files/too-big.bin", data=b"z" * 1500000)
    assert r.status_code == 413, r.status_code
assert s.get(base + "/files/too-big.bin").status_code == 404
print("ok")
"#;

/// The protocol's refusals and extensions with `requests`: sizes, versions, offsets, checksums,
/// content types, termination, users, creation-with-upload, empty uploads.
async fn tus_protocol_edges(kind: Kind) {
    let t = start(kind, |c| c.storage.max_file_size = 1_000_000).await;
    python_async(
        TUS_EDGES,
        vec![
            ("BASE", format!("http://{}/api/v1", t.gw().http_addr)),
            ("PASSWORD", PASSWORD.into()),
        ],
    )
    .await;
    let ann = announced(&t).await;
    let created: Vec<_> = ann
        .iter()
        .filter(|(k, _)| k == "io.filegate.file.created")
        .map(|(_, p)| p.as_str())
        .collect();
    assert_eq!(
        created,
        [
            "/home/alice/t.bin",
            "/home/alice/inline.txt",
            "/home/alice/empty.txt"
        ],
        "{ann:?}"
    );
    assert!(
        !ann.iter()
            .any(|(_, p)| p.contains("gone.bin") || p.contains(".filegate")),
        "{ann:?}"
    );
    t.stop().await;
}

const TUS_HALF: &str = r#"
import os, base64, requests
base = os.environ["BASE"]
s = requests.Session()
s.auth = ("alice", os.environ["PASSWORD"])
V = {"Tus-Resumable": "1.0.0"}
m = "path " + base64.b64encode(b"half.bin").decode()
r = s.post(base + "/uploads", headers={**V, "Upload-Length": "100000", "Upload-Metadata": m})
assert r.status_code == 201
url = requests.compat.urljoin(base + "/", r.headers["Location"])
r = s.patch(url, data=b"h" * 40000, headers={**V, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
assert r.status_code == 204
print(url)
print("ok")
"#;

/// An upload left alone past `http.upload_expiry` ends like a cut-off FTP upload: with
/// `partial_uploads = "keep"` its bytes appear at the target flagged incomplete, announced as
/// `file.incomplete`; its URL is gone.
async fn tus_expiry_ends_an_abandoned_upload_like_ftp(kind: Kind) {
    let t = start(kind, |c| c.http.upload_expiry = Duration::from_secs(2)).await;
    let out = python_async(
        TUS_HALF,
        vec![
            ("BASE", format!("http://{}/api/v1", t.gw().http_addr)),
            ("PASSWORD", PASSWORD.into()),
        ],
    )
    .await;
    let target = StorePath::parse("/home/alice/half.bin").unwrap();
    let meta = until(
        "the expired upload never ended",
        Duration::from_secs(30),
        || t.store().stat(&target),
    )
    .await;
    assert!(!meta.complete);
    assert_eq!(meta.size, 40_000);
    let files: Vec<_> = announced(&t)
        .await
        .into_iter()
        .filter(|(k, _)| k.starts_with("io.filegate.file."))
        .collect();
    assert_eq!(
        files,
        [(
            "io.filegate.file.incomplete".to_string(),
            "/home/alice/half.bin".to_string()
        )]
    );
    let url = out.lines().next().unwrap().to_string();
    let head = std::process::Command::new(program("curl"))
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-I",
            "-H",
            "Tus-Resumable: 1.0.0",
        ])
        .args(["-u", &format!("alice:{PASSWORD}"), &url])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&head.stdout), "404");
    t.stop().await;
}

const REST: &str = r#"
import os, io, json, zipfile, hashlib, base64, subprocess, requests
base = os.environ["BASE"]
s = requests.Session()
s.auth = ("alice", os.environ["PASSWORD"])
assert s.post(base + "/dirs/docs/sub/deeper?parents=true").status_code == 201
assert s.post(base + "/dirs/docs/empty").status_code == 201

# multipart: two files and a plain field; names with UTF-8.
files = [("f", ("a.txt", b"alpha" * 1000)), ("f", ("Grüße ü.bin", os.urandom(200000))), ("f", ("zz.txt", b"z"))]
r = s.post(base + "/files/docs", files=files, data={"note": "ignored"})
assert r.status_code == 201, (r.status_code, r.text)
stored = r.json()
assert [x["path"] for x in stored] == ["/docs/a.txt", "/docs/Grüße ü.bin", "/docs/zz.txt"], stored
assert stored[0]["sha256"] == hashlib.sha256(b"alpha" * 1000).hexdigest()
assert s.get(base + "/files/docs/Grüße ü.bin").content == files[1][1][1]
r = s.post(base + "/files/docs/sub", files=[("f", ("deep.txt", b"deep"))])
assert r.status_code == 201
r = s.post(base + "/files/docs/sub/deeper", files=[("f", ("deepest.txt", b"deepest"))])
assert r.status_code == 201
# Not a form: 415.
r = s.post(base + "/files/docs", data=b"raw", headers={"Content-Type": "application/octet-stream"})
assert r.status_code == 415, r.status_code
# A form over the file size limit: 413, nothing stored.
r = s.post(base + "/files/docs", files=[("f", ("huge.bin", b"x" * 2100000))])
assert r.status_code == 413, (r.status_code, r.text)
assert s.get(base + "/files/docs/huge.bin").status_code == 404

# zip of a folder with curl, checked by zipfile and unzip -t.
out = os.environ["TMP"] + "/docs.zip"
cp = subprocess.run(["curl", "-sS", "-f", "-u", "alice:" + os.environ["PASSWORD"], "-D", "-", "-o", out, base + "/files/docs?download=zip"], capture_output=True, text=True)
assert cp.returncode == 0, cp.stderr
assert "application/zip" in cp.stdout and 'filename="docs.zip"' in cp.stdout, cp.stdout
z = zipfile.ZipFile(out)
assert z.testzip() is None
names = sorted(z.namelist())
assert names == sorted(["a.txt", "Grüße ü.bin", "zz.txt", "sub/", "sub/deep.txt", "sub/deeper/", "sub/deeper/deepest.txt", "empty/"]), names
assert z.read("Grüße ü.bin") == files[1][1][1]
assert z.getinfo("Grüße ü.bin").flag_bits & 0x800
assert z.read("sub/deeper/deepest.txt") == b"deepest"
cp = subprocess.run(["unzip", "-t", out], capture_output=True, text=True)
assert cp.returncode == 0 and "No errors" in cp.stdout, cp.stdout + cp.stderr

# zip of a selection.
r = s.post(base + "/zip", json={"paths": ["docs/a.txt", "docs/sub"], "name": "pick.zip"})
assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip", r.status_code
assert 'filename="pick.zip"' in r.headers["Content-Disposition"]
z = zipfile.ZipFile(io.BytesIO(r.content))
assert sorted(z.namelist()) == ["a.txt", "sub/", "sub/deep.txt", "sub/deeper/", "sub/deeper/deepest.txt"], z.namelist()
assert s.post(base + "/zip", json={"paths": ["nope"]}).status_code == 404

# PUT with a digest: right (201), wrong (400, nothing stored), only an unknown algorithm (400).
body = os.urandom(70000)
d = base64.b64encode(hashlib.sha256(body).digest()).decode()
r = s.put(base + "/files/dg.bin", data=body, headers={"Content-Digest": "sha-256=:" + d + ":"})
assert r.status_code == 201, (r.status_code, r.text)
wrong = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
r = s.put(base + "/files/dg2.bin", data=body, headers={"Repr-Digest": "sha-256=:" + wrong + ":"})
assert r.status_code == 400 and r.json()["type"].endswith("digest-mismatch"), r.text
assert s.get(base + "/files/dg2.bin").status_code == 404
r = s.put(base + "/files/dg2.bin", data=body, headers={"Content-Digest": "md5=:AAAA:"})
assert r.status_code == 400

# Sorted listings.
j = s.get(base + "/files/docs?sort=size&order=desc").json()
assert [e["name"] for e in j["entries"]][:3] == ["Grüße ü.bin", "a.txt", "zz.txt"], j
j = s.get(base + "/files/docs?sort=name&order=desc&limit=2").json()
assert [e["name"] for e in j["entries"]] == ["zz.txt", "sub"], j
j2 = s.get(base + "/files/docs?sort=name&order=desc&limit=2&cursor=" + j["next"]).json()
assert [e["name"] for e in j2["entries"]] == ["empty", "a.txt"], j2
j = s.get(base + "/files/docs?sort=mtime").json()
assert len(j["entries"]) == 5
assert s.get(base + "/files/docs?sort=owner").status_code == 400

# Search, paged by cursor.
found, cursor = [], None
while True:
    params = {"q": "DEEP", "limit": 1}
    if cursor:
        params["cursor"] = cursor
    j = s.get(base + "/search", params=params).json()
    found += [e["path"] for e in j["entries"]]
    cursor = j["next_cursor"]
    if cursor is None:
        break
assert found == ["/docs/sub/deep.txt", "/docs/sub/deeper", "/docs/sub/deeper/deepest.txt"], found
j = s.get(base + "/search", params={"q": ".txt", "path": "docs/sub"}).json()
assert [e["path"] for e in j["entries"]] == ["/docs/sub/deep.txt", "/docs/sub/deeper/deepest.txt"], j
assert j["entries"][0]["kind"] == "file" and j["entries"][0]["size"] == 4
assert s.get(base + "/search").status_code == 400

# Usage.
u = s.get(base + "/usage").json()
assert u["quota_bytes"] == 5000000 and u["quota_files"] is None, u
assert u["files"] == 6, u

# Batch delete: a file, a non-empty folder without and with recursive, a missing path.
r = s.post(base + "/delete", json={"paths": ["docs/zz.txt", "docs/sub", "nope.txt"]})
res = r.json()["results"]
assert [x["status"] for x in res] == [204, 409, 404], res
assert res[1]["problem"]["type"].endswith("directory-not-empty")
r = s.post(base + "/delete", json={"paths": ["docs/sub", "docs/empty"], "recursive": True})
assert [x["status"] for x in r.json()["results"]] == [204, 204], r.text
assert s.get(base + "/files/docs/sub").status_code == 404
u2 = s.get(base + "/usage").json()
assert u2["files"] == 3, u2
print("ok")
"#;

/// zip (folder and selection), multipart, digest-checked PUT, sorting, search, batch delete and
/// usage, with curl, `requests`, Python's `zipfile` and Info-ZIP's `unzip -t`.
async fn zip_multipart_digest_sort_search_delete_usage(kind: Kind) {
    let t = start(kind, |c| {
        c.storage.max_file_size = 2_000_000;
        c.users[0].quota_bytes = Some(5_000_000);
    })
    .await;
    let tmp = t.temp_path("");
    python_async(
        REST,
        vec![
            ("BASE", format!("http://{}/api/v1", t.gw().http_addr)),
            ("PASSWORD", PASSWORD.into()),
            ("TMP", tmp.display().to_string()),
        ],
    )
    .await;
    t.stop().await;
}
