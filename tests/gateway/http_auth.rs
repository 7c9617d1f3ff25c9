//! Who may call the HTTP API, with real clients on both backends: browser sessions with curl's
//! cookie jar and Python `requests.Session` (login, whoami, CSRF refused and accepted, logout,
//! logout everywhere, idle end, a second gateway on the same Redis), API keys with curl's Bearer
//! (scope, read-only, revocation, expiry, last use), and failed logins of every scheme counting
//! towards the ban FTP shares.

use std::time::Duration;

use crate::common::{program, start, Kind, TestGateway};
use storage_backend::StorePath;

on_both_backends!(
    browser_session_with_curl_cookie_jar,
    browser_session_with_python_requests,
    idle_sessions_end,
    api_keys_are_scoped_and_revocable,
    failed_logins_of_every_scheme_ban_the_address,
);

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

    fn ok(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        if self.body.is_empty() {
            serde_json::Value::Null
        } else {
            self.json()
        }
    }

    /// A problem body with this status and `type` name.
    fn problem(&self, status: u16, name: &str) -> serde_json::Value {
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
        assert_eq!(p["type"], format!("urn:filegate:problem:{name}"), "{p}");
        p
    }
}

async fn curl(t: &TestGateway, args: &[&str]) -> Reply {
    let body_file = t.temp_path(&format!("body-{}", rand::random::<u64>()));
    let mut full: Vec<String> = vec!["-sS".into(), "-D".into(), "-".into()];
    full.extend(["-o".into(), body_file.display().to_string()]);
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
    format!("http://{}/api/v1/{path}", t.gw().http_addr)
}

const ALICE: &str = "alice:secret";
const JSON: &str = "Content-Type: application/json";

async fn store_has(t: &TestGateway, path: &str) -> bool {
    t.store()
        .stat(&StorePath::parse(path).unwrap())
        .await
        .is_ok()
}

/// Logs in with curl into the cookie jar `jar`; the login answer.
async fn login(t: &TestGateway, jar: &str, user: &str) -> Reply {
    let body = format!(r#"{{"user":"{user}","password":"secret"}}"#);
    curl(t, &["-c", jar, "-H", JSON, "-d", &body, &url(t, "session")]).await
}

async fn browser_session_with_curl_cookie_jar(kind: Kind) {
    let t = start(kind, |_| {}).await;
    let jar = t.temp_path("jar").display().to_string();
    let other_jar = t.temp_path("jar2").display().to_string();

    // Not logged in: 401, and a page's fetch gets no Basic challenge (no browser dialog).
    let r = curl(&t, &["-H", "Sec-Fetch-Mode: cors", &url(&t, "session")]).await;
    r.problem(401, "unauthorized");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"filegate\"")
    );

    let r = login(&t, &jar, "alice").await;
    let who = r.ok(200);
    assert_eq!(who["user"], "alice");
    assert_eq!(who["via"], "session");
    assert_eq!(who["permissions"].as_array().unwrap().len(), 6, "{who}");
    let csrf = who["csrf_token"].as_str().unwrap().to_string();
    assert!(csrf.len() >= 22, "{csrf}");
    let cookie = r.header("set-cookie").unwrap();
    for part in [
        "filegate_session=",
        "HttpOnly",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain listener: {cookie}");
    // The store keeps a digest of the token, never the token.
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("filegate_session=")
        .to_string();
    let secret = token.split_once('.').unwrap().1;
    assert!(secret.len() >= 43, "256 bits: {token}");

    // whoami with the cookie alone.
    let who = curl(&t, &["-b", &jar, &url(&t, "session")]).await.ok(200);
    assert_eq!(
        (who["user"].as_str(), who["csrf_token"].as_str()),
        (Some("alice"), Some(csrf.as_str()))
    );
    curl(&t, &["-b", &jar, &url(&t, "me")]).await.ok(200);
    curl(&t, &["-b", &jar, &url(&t, "files/")]).await.ok(200);

    // A change without the CSRF token: 403 csrf, nothing written.
    let r = curl(
        &t,
        &[
            "-b",
            &jar,
            "-X",
            "PUT",
            "--data-binary",
            "x",
            &url(&t, "files/nocsrf.txt"),
        ],
    )
    .await;
    r.problem(403, "csrf");
    let r = curl(
        &t,
        &[
            "-b",
            &jar,
            "-H",
            "X-CSRF-Token: wrong",
            "-X",
            "POST",
            &url(&t, "dirs/nocsrf"),
        ],
    )
    .await;
    r.problem(403, "csrf");
    assert!(!store_has(&t, "/home/alice/nocsrf.txt").await);
    assert!(!store_has(&t, "/home/alice/nocsrf").await);
    // The right token, but from another site: refused too.
    let h = format!("X-CSRF-Token: {csrf}");
    let r = curl(
        &t,
        &[
            "-b",
            &jar,
            "-H",
            &h,
            "-H",
            "Origin: https://evil.example",
            "-X",
            "PUT",
            "--data-binary",
            "x",
            &url(&t, "files/evil.txt"),
        ],
    )
    .await;
    r.problem(403, "csrf");
    assert!(!store_has(&t, "/home/alice/evil.txt").await);
    // The right token from this page: done.
    let origin = format!("Origin: http://{}", t.gw().http_addr);
    let r = curl(
        &t,
        &[
            "-b",
            &jar,
            "-H",
            &h,
            "-H",
            &origin,
            "-H",
            "Sec-Fetch-Site: same-origin",
            "-X",
            "PUT",
            "--data-binary",
            "hello",
            &url(&t, "files/csrf.txt"),
        ],
    )
    .await;
    r.ok(201);
    assert_eq!(t.store_bytes("/home/alice/csrf.txt").await, b"hello");

    // A second session of alice; logout ends only the first.
    login(&t, &other_jar, "alice").await.ok(200);
    let r = curl(
        &t,
        &[
            "-b",
            &jar,
            "-c",
            &jar,
            "-H",
            &h,
            "-X",
            "DELETE",
            &url(&t, "session"),
        ],
    )
    .await;
    r.ok(204);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    // The old cookie, replayed (as a thief would), no longer works.
    let stolen = format!("Cookie: filegate_session={token}");
    curl(&t, &["-H", &stolen, &url(&t, "session")])
        .await
        .problem(401, "unauthorized");
    curl(&t, &["-b", &jar, &url(&t, "files/")])
        .await
        .problem(401, "unauthorized");
    curl(&t, &["-b", &other_jar, &url(&t, "files/")])
        .await
        .ok(200);
    // DELETE without a cookie and without ?all is a mistake, not a no-op.
    curl(&t, &["-u", ALICE, "-X", "DELETE", &url(&t, "session")])
        .await
        .problem(400, "bad-request");
    // ?all=true with Basic ends every session of alice, not bob's... (reader's).
    let reader_jar = t.temp_path("jar3").display().to_string();
    login(&t, &reader_jar, "reader").await.ok(200);
    curl(
        &t,
        &["-u", ALICE, "-X", "DELETE", &url(&t, "session?all=true")],
    )
    .await
    .ok(204);
    curl(&t, &["-b", &other_jar, &url(&t, "files/")])
        .await
        .problem(401, "unauthorized");
    curl(&t, &["-b", &reader_jar, &url(&t, "files/")])
        .await
        .ok(200);

    // A wrong password: 401, no cookie.
    let r = curl(
        &t,
        &[
            "-H",
            JSON,
            "-d",
            r#"{"user":"alice","password":"nope"}"#,
            &url(&t, "session"),
        ],
    )
    .await;
    r.problem(401, "unauthorized");
    assert!(r.header("set-cookie").is_none());
    // A login posted from another site (login CSRF) is refused.
    curl(
        &t,
        &[
            "-H",
            JSON,
            "-H",
            "Sec-Fetch-Site: cross-site",
            "-d",
            r#"{"user":"alice","password":"secret"}"#,
            &url(&t, "session"),
        ],
    )
    .await
    .problem(403, "csrf");

    if kind == Kind::Redis {
        second_gateway_shares_sessions(&t).await;
    }
    t.stop().await;
}

/// A second gateway on the same Redis accepts the first one's session, and a logout on it ends
/// the session on the first; a user missing from its configuration has no session there.
async fn second_gateway_shares_sessions(t: &TestGateway) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = t.config.clone();
    config.server.data_dir = dir.path().join("data");
    config.ftp.enabled = false;
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.users.retain(|u| u.name != "reader");
    let second = filegate::serve::Gateway::start(&config).await.unwrap();
    let other = |path: &str| format!("http://{}/api/v1/{path}", second.http_addr);

    let jar = t.temp_path("shared-jar").display().to_string();
    let who = login(t, &jar, "alice").await.ok(200);
    let h = format!("X-CSRF-Token: {}", who["csrf_token"].as_str().unwrap());
    curl(t, &["-b", &jar, &other("session")]).await.ok(200);
    curl(
        t,
        &["-b", &jar, "-H", &h, "-X", "DELETE", &other("session")],
    )
    .await
    .ok(204);
    curl(t, &["-b", &jar, &url(t, "session")])
        .await
        .problem(401, "unauthorized");
    // reader exists on the first gateway only: its session is refused by the second.
    let reader_jar = t.temp_path("shared-jar2").display().to_string();
    login(t, &reader_jar, "reader").await.ok(200);
    curl(t, &["-b", &reader_jar, &other("session")])
        .await
        .problem(401, "unauthorized");
    second
        .shutdown(tokio_util::sync::CancellationToken::new())
        .await;
}

const PYTHON_SESSION: &str = r#"
import os, requests
base = os.environ["BASE"]
s = requests.Session()
r = s.post(base + "/session", json={"user": "alice", "password": "secret"})
assert r.status_code == 200, (r.status_code, r.text)
csrf = r.json()["csrf_token"]
assert "filegate_session" in s.cookies, s.cookies
r = s.get(base + "/session")
assert r.status_code == 200 and r.json()["user"] == "alice", r.text
r = s.put(base + "/files/py.txt", data=b"no token")
assert r.status_code == 403 and r.json()["type"] == "urn:filegate:problem:csrf", r.text
r = s.put(base + "/files/py.txt", data=b"with token", headers={"X-CSRF-Token": csrf})
assert r.status_code == 201, r.text
assert s.get(base + "/files/py.txt").content == b"with token"
r = s.delete(base + "/session", headers={"X-CSRF-Token": csrf})
assert r.status_code == 204, r.text
assert "filegate_session" not in s.cookies, s.cookies
r = s.get(base + "/files/py.txt")
assert r.status_code == 401, r.text
print("ok")
"#;

async fn browser_session_with_python_requests(kind: Kind) {
    let t = start(kind, |_| {}).await;
    let base = format!("http://{}/api/v1", t.gw().http_addr);
    let python = program("python3");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", PYTHON_SESSION])
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
    assert_eq!(t.store_bytes("/home/alice/py.txt").await, b"with token");
    t.stop().await;
}

/// A session unused for `http.session_idle` ends; one in use lives until `http.session_max`.
async fn idle_sessions_end(kind: Kind) {
    let t = start(kind, |c| {
        c.http.session_idle = Duration::from_secs(2);
        c.http.session_max = Duration::from_secs(4);
    })
    .await;
    let jar = t.temp_path("jar").display().to_string();
    let r = login(&t, &jar, "alice").await;
    r.ok(200);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=4"));
    curl(&t, &["-b", &jar, &url(&t, "files/")]).await.ok(200);
    // Time passing is what is tested here: nothing to poll for.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    curl(&t, &["-b", &jar, &url(&t, "files/")])
        .await
        .problem(401, "unauthorized");

    // Used every second it outlives the idle timeout, but not session_max.
    login(&t, &jar, "alice").await.ok(200);
    let started = std::time::Instant::now();
    let mut ended = None;
    while started.elapsed() < Duration::from_secs(8) {
        let r = curl(&t, &["-b", &jar, &url(&t, "files/")]).await;
        if r.status == 401 {
            ended = Some(started.elapsed());
            break;
        }
        r.ok(200);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let ended = ended.expect("the session outlived http.session_max");
    assert!(
        ended >= Duration::from_millis(2500),
        "ended after {ended:?}: before session_max (4 s, to the second)"
    );
    t.stop().await;
}

async fn api_keys_are_scoped_and_revocable(kind: Kind) {
    let t = start(kind, |_| {}).await;
    let jar = t.temp_path("jar").display().to_string();
    for (path, data) in [("in/a.txt", "in-a"), ("secret.txt", "top")] {
        let target = format!("{}?parents=true", url(&t, &format!("files/{path}")));
        curl(
            &t,
            &["-u", ALICE, "-X", "PUT", "--data-binary", data, &target],
        )
        .await
        .ok(201);
    }

    // Made with Basic: read-write on /in, and read on /in.
    let make = |body: String| {
        let t = &t;
        async move { curl(t, &["-u", ALICE, "-H", JSON, "-d", &body, &url(t, "keys")]).await }
    };
    let rw = make(r#"{"name":"scanner","path":"/in","access":"read-write"}"#.into())
        .await
        .ok(201);
    let rw_key = rw["key"].as_str().unwrap().to_string();
    assert!(
        rw_key.starts_with(&format!("fgk_{}_", rw["id"].as_str().unwrap())),
        "{rw}"
    );
    assert_eq!(rw["last_used"], serde_json::Value::Null);
    let ro = make(r#"{"name":"reader","path":"in","access":"read"}"#.into())
        .await
        .ok(201);
    let ro_key = ro["key"].as_str().unwrap().to_string();
    let bearer = |k: &str| format!("Authorization: Bearer {k}");
    let (rw_h, ro_h) = (bearer(&rw_key), bearer(&ro_key));

    // Bad requests: a file, a missing directory, a past expiry, an unknown access.
    make(r#"{"name":"x","path":"/in/a.txt","access":"read"}"#.into())
        .await
        .problem(409, "not-a-directory");
    make(r#"{"name":"x","path":"/nope","access":"read"}"#.into())
        .await
        .problem(404, "not-found");
    make(r#"{"name":"x","path":"/","access":"read","expires_at":"2001-01-01T00:00:00Z"}"#.into())
        .await
        .problem(400, "bad-request");
    make(r#"{"name":"x","path":"/","access":"all"}"#.into())
        .await
        .problem(400, "bad-request");

    // The read-write key: its path is its root.
    let who = curl(&t, &["-H", &rw_h, &url(&t, "me")]).await.ok(200);
    assert_eq!(
        (who["via"].as_str(), who["root"].as_str()),
        (Some("key"), Some("/in"))
    );
    let r = curl(&t, &["-H", &rw_h, &url(&t, "files/a.txt")]).await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"in-a".as_slice()));
    curl(
        &t,
        &[
            "-H",
            &rw_h,
            "-X",
            "PUT",
            "--data-binary",
            "new",
            &url(&t, "files/b.txt"),
        ],
    )
    .await
    .ok(201);
    assert_eq!(t.store_bytes("/home/alice/in/b.txt").await, b"new");
    // Outside its path: not reachable (the home's secret.txt is not /in/secret.txt), no climbing.
    curl(&t, &["-H", &rw_h, &url(&t, "files/secret.txt")])
        .await
        .problem(404, "not-found");
    curl(
        &t,
        &["-H", &rw_h, "--path-as-is", &url(&t, "files/../secret.txt")],
    )
    .await
    .problem(400, "invalid-path");
    curl(&t, &["-H", &rw_h, &url(&t, "files/%2e%2e/secret.txt")])
        .await
        .problem(400, "invalid-path");
    curl(
        &t,
        &[
            "-H",
            &rw_h,
            "-H",
            JSON,
            "-d",
            r#"{"from":"b.txt","to":"../b.txt"}"#,
            &url(&t, "move"),
        ],
    )
    .await
    .problem(400, "invalid-path");
    // Its root cannot be deleted.
    curl(&t, &["-H", &rw_h, "-X", "DELETE", &url(&t, "files/")])
        .await
        .problem(403, "permission-denied");
    // Keys do not manage keys or sessions.
    curl(&t, &["-H", &rw_h, &url(&t, "keys")])
        .await
        .problem(403, "permission-denied");
    curl(
        &t,
        &[
            "-H",
            &rw_h,
            "-H",
            JSON,
            "-d",
            r#"{"name":"x","path":"/","access":"read"}"#,
            &url(&t, "keys"),
        ],
    )
    .await
    .problem(403, "permission-denied");
    curl(
        &t,
        &["-H", &rw_h, "-X", "DELETE", &url(&t, "session?all=true")],
    )
    .await
    .problem(403, "permission-denied");

    // The read key: reads, lists, nothing else, and nothing changes.
    let who = curl(&t, &["-H", &ro_h, &url(&t, "me")]).await.ok(200);
    assert_eq!(who["permissions"], serde_json::json!(["list", "read"]));
    curl(&t, &["-H", &ro_h, &url(&t, "files/")]).await.ok(200);
    let p = curl(
        &t,
        &[
            "-H",
            &ro_h,
            "-X",
            "PUT",
            "--data-binary",
            "x",
            &url(&t, "files/c.txt"),
        ],
    )
    .await
    .problem(403, "permission-denied");
    assert!(p["detail"].as_str().unwrap().contains("read-only"), "{p}");
    curl(&t, &["-H", &ro_h, "-X", "DELETE", &url(&t, "files/a.txt")])
        .await
        .problem(403, "permission-denied");
    curl(&t, &["-H", &ro_h, "-X", "POST", &url(&t, "dirs/d")])
        .await
        .problem(403, "permission-denied");
    assert!(!store_has(&t, "/home/alice/in/c.txt").await);
    assert!(!store_has(&t, "/home/alice/in/d").await);
    assert!(store_has(&t, "/home/alice/in/a.txt").await);

    // Listed without secrets, with when they were used.
    let list = curl(&t, &["-u", ALICE, &url(&t, "keys")]).await.ok(200);
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{list}");
    for k in keys {
        assert!(k.get("key").is_none(), "a secret in the listing: {k}");
        assert!(k["last_used"].is_string(), "last_used not recorded: {k}");
    }
    // Another user sees none of them and cannot revoke them.
    let other = curl(&t, &["-u", "reader:secret", &url(&t, "keys")])
        .await
        .ok(200);
    assert_eq!(other["keys"], serde_json::json!([]));
    let rw_id = rw["id"].as_str().unwrap();
    curl(
        &t,
        &[
            "-u",
            "reader:secret",
            "-X",
            "DELETE",
            &url(&t, &format!("keys/{rw_id}")),
        ],
    )
    .await
    .problem(404, "not-found");

    // Revoked with a browser session (CSRF token and all): 401 at once.
    let who = login(&t, &jar, "alice").await.ok(200);
    let h = format!("X-CSRF-Token: {}", who["csrf_token"].as_str().unwrap());
    curl(
        &t,
        &[
            "-b",
            &jar,
            "-H",
            &h,
            "-X",
            "DELETE",
            &url(&t, &format!("keys/{rw_id}")),
        ],
    )
    .await
    .ok(204);
    curl(&t, &["-H", &rw_h, &url(&t, "files/")])
        .await
        .problem(401, "unauthorized");
    curl(
        &t,
        &[
            "-b",
            &jar,
            "-H",
            &h,
            "-X",
            "DELETE",
            &url(&t, &format!("keys/{rw_id}")),
        ],
    )
    .await
    .problem(404, "not-found");
    // A made-up secret for a real id is refused.
    let ro_id = ro["id"].as_str().unwrap();
    let forged = bearer(&format!(
        "fgk_{ro_id}_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    ));
    curl(&t, &["-H", &forged, &url(&t, "files/")])
        .await
        .problem(401, "unauthorized");

    // An expiring key works until its time, then is 401.
    let soon =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(2))
            .to_string();
    let exp = make(format!(
        r#"{{"name":"brief","path":"/","access":"read","expires_at":"{soon}"}}"#
    ))
    .await
    .ok(201);
    assert_eq!(exp["expires_at"], soon.as_str());
    let exp_h = bearer(exp["key"].as_str().unwrap());
    curl(&t, &["-H", &exp_h, &url(&t, "files/")]).await.ok(200);
    // Time passing is what is tested here.
    tokio::time::sleep(Duration::from_secs(3)).await;
    curl(&t, &["-H", &exp_h, &url(&t, "files/")])
        .await
        .problem(401, "unauthorized");
    t.stop().await;
}

/// Wrong passwords and keys over HTTP (session login, Basic, Bearer) and FTP count towards one
/// ban of the address, which then refuses every login, the right ones too.
async fn failed_logins_of_every_scheme_ban_the_address(kind: Kind) {
    let t = start(kind, |c| c.limits.login_failures_per_ip = 4).await;
    curl(
        &t,
        &[
            "-H",
            JSON,
            "-d",
            r#"{"user":"alice","password":"nope"}"#,
            &url(&t, "session"),
        ],
    )
    .await
    .problem(401, "unauthorized");
    curl(&t, &["-u", "alice:nope", &url(&t, "files/")])
        .await
        .problem(401, "unauthorized");
    curl(
        &t,
        &[
            "-H",
            "Authorization: Bearer fgk_00000000000000000000000000000000_nope",
            &url(&t, "files/"),
        ],
    )
    .await
    .problem(401, "unauthorized");
    // The fourth failure, over FTP, starts the ban.
    let u = format!("ftp://alice:nope@{}/", t.ftp_addr());
    let curl_bin = program("curl");
    let ftp_ok = tokio::task::spawn_blocking(move || {
        std::process::Command::new(curl_bin)
            .args(["-sS", "--max-time", "20", &u])
            .output()
            .unwrap()
            .status
            .success()
    })
    .await
    .unwrap();
    assert!(!ftp_ok);
    // Now the right password is refused on HTTP too, with every scheme.
    curl(&t, &["-u", ALICE, &url(&t, "files/")])
        .await
        .problem(429, "banned");
    curl(
        &t,
        &[
            "-H",
            JSON,
            "-d",
            r#"{"user":"alice","password":"secret"}"#,
            &url(&t, "session"),
        ],
    )
    .await
    .problem(429, "banned");
    t.stop().await;
}
