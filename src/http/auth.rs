//! Who may call the API (`docs/http.md`, "Authentication"): one login for every `/api/v1`
//! endpoint, with HTTP Basic (scripts), an API key as `Authorization: Bearer fgk_…` (services), or
//! the session cookie `filegate_session` of a browser login (with a CSRF token for changes).
//!
//! Browser sessions and API keys are records in the store (tables `web_sessions`, `api_keys`), so
//! every replica accepts them and a logout or revocation ends them everywhere at once. Only
//! SHA-256 digests of their secrets are stored: the secrets are 256 random bits, which no
//! offline guessing can reach, so a slow password hash would add cost and no safety.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Router;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use storage_backend::{ErrorKind, StoreError};
use utoipa::{IntoParams, ToSchema};

use super::api::{plain_path, Api, Session};
use super::errors::Problem;
use crate::access::{Protocol, Refusal, UserFs};
use crate::config::Permission;

type Shared = std::sync::Arc<Api>;
type Result<T> = std::result::Result<T, Problem>;

/// The browser session cookie's name.
pub const COOKIE: &str = "filegate_session";
/// The header that carries a session's CSRF token on unsafe methods.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The prefix of every API key, so secret scanners and people recognise one.
pub const KEY_PREFIX: &str = "fgk_";
const SESSIONS: &str = "web_sessions";
const KEYS: &str = "api_keys";
/// A key's last-used time is written at most this often (a busy key would otherwise write to the
/// store on every request).
const LAST_USED_EVERY: Duration = Duration::from_secs(60);
/// The most API keys one user may have (each is a record listed in full by `GET /keys`).
pub const MAX_KEYS_PER_USER: usize = 100;
/// The largest JSON body of these endpoints.
const MAX_BODY: usize = 16 * 1024;

/// Session settings (`http.session_idle`, `http.session_max`, `Secure` cookies).
#[derive(Debug, Clone)]
pub struct Settings {
    pub session_idle: Duration,
    pub session_max: Duration,
    /// `Secure` on the cookie: set when the listener is TLS (or `http.secure_cookies`).
    pub secure_cookies: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            secure_cookies: false,
        }
    }
}

impl Settings {
    pub fn from_config(http: &crate::config::HttpConfig) -> Settings {
        Settings {
            session_idle: http.session_idle,
            session_max: http.session_max,
            secure_cookies: http.secure_cookies,
        }
    }

    /// How long a session's idle clock may go unrefreshed: a minute, or less for short timeouts,
    /// so the store is written at most once a minute per session and the timeout stays accurate.
    fn refresh_every(&self) -> Duration {
        (self.session_idle / 4).min(Duration::from_secs(60))
    }
}

/// How a request logged in.
#[derive(Debug, Clone)]
pub enum Via {
    Basic,
    /// An API key (its id); the request's `UserFs` is narrowed to the key's scope.
    Key(String),
    /// A browser session (its record key) and its CSRF token.
    Cookie {
        record: String,
        csrf: String,
    },
}

/// The login of a request: its user's file system (narrowed for an API key) and how it logged in.
pub struct Login {
    pub fs: UserFs,
    pub via: Via,
}

// --- Records ---

#[derive(Serialize, Deserialize)]
struct SessionRecord {
    user: String,
    csrf: String,
    /// Unix seconds.
    created: u64,
    last_seen: u64,
}

#[derive(Serialize, Deserialize, Clone)]
struct KeyRecord {
    id: String,
    user: String,
    name: String,
    path: String,
    access: KeyAccess,
    created: u64,
    expires_at: Option<u64>,
    last_used: Option<u64>,
    /// SHA-256 of the secret, hex.
    secret_sha256: String,
}

/// What an API key may do within its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAccess {
    /// List and download.
    Read,
    /// Everything the user may do.
    ReadWrite,
}

fn now() -> u64 {
    unix(SystemTime::now())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(at(secs)).to_string()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS random number generator works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// 16 hex digits naming a user in record keys, so one user's records are one key range (listed,
/// and deleted all at once, without scanning everyone's).
fn user_prefix(user: &str) -> String {
    sha256_hex(user.as_bytes())[..16].to_string()
}

/// Compares secrets in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn store_failed(e: StoreError) -> Problem {
    Problem::from(e)
}

fn corrupt(what: &str, e: serde_json::Error) -> Problem {
    Problem::from(StoreError::new(
        ErrorKind::Internal,
        format!("a stored {what} record cannot be read: {e}"),
    ))
}

/// The records of `table` whose keys start with `prefix`, a page at a time.
async fn records_with_prefix(
    api: &Api,
    table: &str,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let store = &api.access.records();
    let mut out = Vec::new();
    let mut after = prefix.to_string();
    loop {
        let page = store
            .record_list(table, Some(&after), 100)
            .await
            .map_err(store_failed)?;
        let full = page.len() == 100;
        for (k, v) in page {
            if !k.starts_with(prefix) {
                return Ok(out);
            }
            after = k.clone();
            out.push((k, v));
        }
        if !full {
            return Ok(out);
        }
    }
}

// --- The login of a request ---

/// The `WWW-Authenticate` challenge for a 401: Basic for scripts, but not for a page's `fetch`
/// (a Basic challenge makes the browser pop up its own login dialog over the web UI's).
fn unauthorized(headers: &HeaderMap, detail: impl Into<String>) -> Problem {
    let from_page = headers
        .get("sec-fetch-mode")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m != "navigate");
    let mut p = Problem::unauthorized(detail);
    if from_page {
        p.headers.retain(|(n, _)| n != header::WWW_AUTHENTICATE);
        p = p.with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"filegate\""),
        );
    }
    p
}

fn refusal(headers: &HeaderMap, r: Refusal) -> Problem {
    match r {
        Refusal::BadCredentials => unauthorized(headers, "wrong user name or password"),
        other => Problem::from(other),
    }
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn csrf_problem(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "csrf", detail)
}

/// Refuses a change requested by another site: `Sec-Fetch-Site: cross-site`, or an `Origin` that
/// is not this server's. Browsers send these; scripts do not, and are not affected. Defence in
/// depth beside SameSite cookies and the CSRF token, and the only one for Basic credentials a
/// browser cached.
fn same_origin(headers: &HeaderMap) -> Result<()> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site.eq_ignore_ascii_case("cross-site") {
            return Err(csrf_problem(
                "a change requested by another site is refused (Sec-Fetch-Site: cross-site)",
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|h| h.split(',').next().unwrap_or("").trim())
        };
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(origin);
        // Behind a reverse proxy the browser's host may arrive as X-Forwarded-Host.
        let matches = [host("host"), host("x-forwarded-host")]
            .into_iter()
            .flatten()
            .any(|h| origin_host.eq_ignore_ascii_case(h));
        if origin == "null" || !matches {
            let host = host("host").unwrap_or("");
            return Err(csrf_problem(format!(
                "a change requested from origin {origin} is refused: it is not this server ({host})"
            )));
        }
    }
    Ok(())
}

/// Logs a request in: `Authorization: Basic` or `Bearer fgk_…` when the header is present (and
/// nothing else then), else the session cookie. Every wrong password or key counts towards the
/// address's ban, as on FTP and SFTP.
pub async fn authenticate(parts: &Parts, api: &Api, peer: SocketAddr) -> Result<Login> {
    let headers = &parts.headers;
    if is_unsafe(&parts.method) {
        same_origin(headers)?;
    }
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("").trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, password) = basic_credentials(headers)?;
            let fs = api
                .access
                .login_password(&user, &password, peer, Protocol::Http)
                .await
                .map_err(|r| refusal(headers, r))?;
            return Ok(Login {
                fs,
                via: Via::Basic,
            });
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return key_login(api, headers, rest.trim(), peer).await;
        }
        return Err(unauthorized(
            headers,
            format!("the {scheme:?} scheme is not accepted; use Basic (user:password) or Bearer (an API key)"),
        ));
    }
    if let Some(token) = cookie(headers, COOKIE) {
        return cookie_login(api, parts, &token, peer).await;
    }
    Err(unauthorized(
        headers,
        "this API needs a login: HTTP Basic (curl -u user:password), an API key \
         (Authorization: Bearer fgk_…) or a session cookie (POST /api/v1/session)",
    ))
}

/// The user and password of an `Authorization: Basic` header.
pub(super) fn basic_credentials(headers: &HeaderMap) -> Result<(String, String)> {
    let missing = || {
        unauthorized(
            headers,
            "this API needs HTTP Basic authentication (curl -u user:password)",
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(missing());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            unauthorized(
                headers,
                "the Basic credentials are not base64 of UTF-8 user:password",
            )
        })?;
    let (user, password) = decoded.split_once(':').ok_or_else(|| {
        unauthorized(
            headers,
            "the Basic credentials have no ':' between user and password",
        )
    })?;
    Ok((user.to_string(), password.to_string()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

/// `fgk_<32 hex id>_<secret>` → (id, secret).
fn parse_key(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix(KEY_PREFIX)?;
    if rest.len() < 34 || !rest.is_char_boundary(32) {
        return None;
    }
    let (id, rest) = rest.split_at(32);
    let secret = rest.strip_prefix('_')?;
    (id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty()).then_some((id, secret))
}

async fn key_login(api: &Api, headers: &HeaderMap, text: &str, peer: SocketAddr) -> Result<Login> {
    let failed = |why: &'static str| async move {
        let r = api.access.failed("(api key)", peer, Protocol::Http).await;
        match r {
            Refusal::BadCredentials => unauthorized(headers, why),
            other => Problem::from(other),
        }
    };
    let Some((id, secret)) = parse_key(text) else {
        return Err(failed("the Bearer token is not an API key of this gateway (fgk_…)").await);
    };
    let store = &api.access.records();
    let Some(bytes) = store.record_get(KEYS, id).await.map_err(store_failed)? else {
        return Err(failed("this API key does not exist or was revoked").await);
    };
    let mut record: KeyRecord = serde_json::from_slice(&bytes).map_err(|e| corrupt("key", e))?;
    if !same(
        sha256_hex(secret.as_bytes()).as_bytes(),
        record.secret_sha256.as_bytes(),
    ) {
        return Err(failed("this API key does not exist or was revoked").await);
    }
    let now = now();
    if let Some(expires) = record.expires_at.filter(|e| *e <= now) {
        return Err(unauthorized(
            headers,
            format!("this API key expired at {}", rfc3339(expires)),
        ));
    }
    let fs = api
        .access
        .session_for(&record.user, Protocol::Http, peer)
        .await
        .map_err(|r| match r {
            Refusal::BadCredentials => {
                unauthorized(headers, "the user of this API key is no longer configured")
            }
            other => Problem::from(other),
        })?;
    let scope = plain_path(&fs, &record.path)?;
    let fs = fs.narrowed(&scope, record.access == KeyAccess::Read)?;
    if record
        .last_used
        .is_none_or(|t| now.saturating_sub(t) >= LAST_USED_EVERY.as_secs())
    {
        record.last_used = Some(now);
        let new = serde_json::to_vec(&record).expect("serialisable");
        // A swap, so a key revoked meanwhile is not written back; a failure only loses the time.
        if let Err(e) = store
            .record_swap(KEYS, id, Some(&bytes), &new, record.expires_at.map(at))
            .await
        {
            tracing::warn!(error = %e, key = id, "http: an API key's last-used time was not saved");
        }
    }
    Ok(Login {
        fs,
        via: Via::Key(record.id),
    })
}

/// The record key of a cookie value `<user prefix>.<token>`.
fn session_key(value: &str) -> Option<String> {
    let (prefix, token) = value.split_once('.')?;
    (prefix.len() == 16 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) && token.len() >= 22)
        .then(|| format!("{prefix}{}", sha256_hex(token.as_bytes())))
}

/// When a session ends unless used again: idle timeout from its last request, capped by its
/// absolute lifetime.
fn session_expiry(settings: &Settings, r: &SessionRecord) -> u64 {
    (r.last_seen + settings.session_idle.as_secs()).min(r.created + settings.session_max.as_secs())
}

async fn cookie_login(api: &Api, parts: &Parts, value: &str, peer: SocketAddr) -> Result<Login> {
    let headers = &parts.headers;
    // An unknown or expired cookie is not counted towards a ban: session tokens (256 bits)
    // cannot be guessed, and every browser returning after its session ended sends one.
    let gone = || {
        unauthorized(
            headers,
            "your session has ended (logged out, expired or revoked); log in again",
        )
    };
    let Some(key) = session_key(value) else {
        return Err(gone());
    };
    let store = &api.access.records();
    let Some(bytes) = store
        .record_get(SESSIONS, &key)
        .await
        .map_err(store_failed)?
    else {
        return Err(gone());
    };
    let mut record: SessionRecord =
        serde_json::from_slice(&bytes).map_err(|e| corrupt("session", e))?;
    let now = now();
    if session_expiry(&api.auth, &record) <= now {
        store.record_delete(SESSIONS, &key).await.ok();
        return Err(gone());
    }
    if is_unsafe(&parts.method) {
        let sent = headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if sent.is_empty() {
            return Err(csrf_problem(format!(
                "{} needs the header X-CSRF-Token with the csrf_token of your session (GET /api/v1/session)",
                parts.method
            )));
        }
        if !same(sent, record.csrf.as_bytes()) {
            return Err(csrf_problem(
                "the X-CSRF-Token header does not match your session's csrf_token",
            ));
        }
    }
    let fs = match api
        .access
        .session_for(&record.user, Protocol::Http, peer)
        .await
    {
        Ok(fs) => fs,
        Err(Refusal::BadCredentials) => {
            // The user was removed from the configuration: their sessions end with them.
            store.record_delete(SESSIONS, &key).await.ok();
            return Err(gone());
        }
        Err(other) => return Err(other.into()),
    };
    if now.saturating_sub(record.last_seen) >= api.auth.refresh_every().as_secs() {
        record.last_seen = now;
        let new = serde_json::to_vec(&record).expect("serialisable");
        let expires = at(session_expiry(&api.auth, &record));
        // A swap: a session logged out meanwhile must not be written back to life.
        if !store
            .record_swap(SESSIONS, &key, Some(&bytes), &new, Some(expires))
            .await
            .map_err(store_failed)?
        {
            return Err(gone());
        }
    }
    Ok(Login {
        fs,
        via: Via::Cookie {
            record: key,
            csrf: record.csrf,
        },
    })
}

// --- Endpoints ---

pub fn router() -> Router<Shared> {
    Router::new()
        .route(
            "/api/v1/session",
            get(whoami)
                .post(login)
                .delete(logout)
                .fallback(|m: Method| only(m, "GET, HEAD, POST, DELETE")),
        )
        .route(
            "/api/v1/me",
            get(me).fallback(|m: Method| only(m, "GET, HEAD")),
        )
        .route(
            "/api/v1/keys",
            get(list_keys)
                .post(create_key)
                .fallback(|m: Method| only(m, "GET, HEAD, POST")),
        )
        .route(
            "/api/v1/keys/:id",
            delete(revoke_key).fallback(|m: Method| only(m, "DELETE")),
        )
}

/// 405 with the methods the endpoint serves, as a problem like every other error.
pub(super) async fn only(method: Method, allow: &'static str) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{method} is not served here; use {allow}"),
    )
    .with_header(header::ALLOW, HeaderValue::from_static(allow))
}

/// Who is logged in: the same as `GET /api/v1/session`, for any login.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses(
        (status = 200, description = "The logged-in user", body = WhoAmI),
        super::openapi::Errors,
    ))]
pub async fn me(api: State<Shared>, session: Session) -> Result<Response> {
    whoami(api, session).await
}

/// The login form of the web UI.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// A user of `[[users]]`.
    pub user: String,
    pub password: String,
}

/// The logged-in user.
#[derive(Serialize, ToSchema)]
pub struct WhoAmI {
    pub user: String,
    /// How this request logged in: `basic`, `key` or `session`.
    pub via: String,
    /// What this login may do (an API key's are its user's, less writes for a read key).
    pub permissions: Vec<String>,
    /// The directory this login sees as `/` within the user's home: `/`, or an API key's path.
    pub root: String,
    /// The store path of this login's `/`: event paths (`data.path`) start with it.
    pub home: String,
    /// The CSRF token to send as `X-CSRF-Token` with changes (session logins only).
    pub csrf_token: Option<String>,
    /// When the session ends unless used again (RFC 3339; session logins only).
    pub expires: Option<String>,
    /// The user's byte quota.
    pub home_quota: QuotaInfo,
    /// The same as `home_quota`.
    pub quota: QuotaInfo,
}

#[derive(Serialize, ToSchema, Clone)]
pub struct QuotaInfo {
    /// Bytes in use (counted only when a byte quota is set).
    pub used_bytes: Option<u64>,
    /// The byte quota; null = unlimited.
    pub quota_bytes: Option<u64>,
}

fn permission_name(p: Permission) -> &'static str {
    match p {
        Permission::List => "list",
        Permission::Read => "read",
        Permission::Write => "write",
        Permission::Delete => "delete",
        Permission::Mkdir => "mkdir",
        Permission::Rename => "rename",
    }
}

fn whoami_body(fs: &UserFs, via: &Via, key_root: Option<String>, expires: Option<u64>) -> WhoAmI {
    let (used, quota) = fs.quota_bytes();
    let quota = QuotaInfo {
        used_bytes: quota.map(|_| used),
        quota_bytes: quota,
    };
    let (via_name, csrf) = match via {
        Via::Basic => ("basic", None),
        Via::Key(_) => ("key", None),
        Via::Cookie { csrf, .. } => ("session", Some(csrf.clone())),
    };
    WhoAmI {
        user: fs.user().to_string(),
        via: via_name.into(),
        permissions: fs
            .permissions()
            .into_iter()
            .map(|p| permission_name(p).to_string())
            .collect(),
        root: key_root.unwrap_or_else(|| "/".into()),
        home: fs.home().to_string(),
        csrf_token: csrf,
        expires: expires.map(rfc3339),
        home_quota: quota.clone(),
        quota,
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        serde_json::to_string(body).expect("serialisable"),
    )
        .into_response()
}

async fn json_body<T: serde::de::DeserializeOwned>(
    body: axum::body::Body,
    shape: &str,
) -> Result<T> {
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| Problem::bad_request(format!("cannot read the request body: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("the body must be JSON {shape}: {e}")))
}

/// `tls`: the request came over the HTTPS listener (`http.tls.listen`).
fn set_cookie(settings: &Settings, tls: bool, value: &str, max_age: u64) -> HeaderValue {
    let secure = if settings.secure_cookies || tls {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("cookie characters are header-safe")
}

/// The key scope of a key login, for whoami.
async fn key_root(api: &Api, via: &Via) -> Result<Option<String>> {
    let Via::Key(id) = via else { return Ok(None) };
    let bytes = api
        .access
        .records()
        .record_get(KEYS, id)
        .await
        .map_err(store_failed)?;
    Ok(bytes
        .and_then(|b| serde_json::from_slice::<KeyRecord>(&b).ok())
        .map(|r| r.path))
}

/// Who is logged in (whoami): the web UI asks at start, and shows its login form on 401.
#[utoipa::path(get, path = "/api/v1/session", tag = "auth",
    responses(
        (status = 200, description = "The logged-in user", body = WhoAmI),
        (status = 401, description = "Not logged in", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn whoami(State(api): State<Shared>, session: Session) -> Result<Response> {
    let expires = match &session.via {
        Via::Cookie { record, .. } => api
            .access
            .records()
            .record_get(SESSIONS, record)
            .await
            .map_err(store_failed)?
            .and_then(|b| serde_json::from_slice::<SessionRecord>(&b).ok())
            .map(|r| session_expiry(&api.auth, &r)),
        _ => None,
    };
    let root = key_root(&api, &session.via).await?;
    Ok(json(
        StatusCode::OK,
        &whoami_body(session.fs(), &session.via, root, expires),
    ))
}

/// Logs in with a user's password and starts a browser session: the cookie `filegate_session`
/// (HttpOnly, SameSite=Strict) and the CSRF token to send with every change.
#[utoipa::path(post, path = "/api/v1/session", tag = "auth", security(()),
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in; the cookie is set", body = WhoAmI,
            headers(("Set-Cookie" = String, description = "filegate_session=…; HttpOnly; SameSite=Strict; Path=/"))),
        (status = 400, description = "Not the JSON expected", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Wrong user name or password (counted towards the address's ban)", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Requested by another site", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 429, description = "The address is banned after too many failed logins", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn login(
    State(api): State<Shared>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    transport: Option<axum::Extension<super::Transport>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response> {
    let _admitted = super::api::admit(&api, peer)?;
    // A login form posted from another site would log the victim in as the attacker.
    same_origin(&headers)?;
    let req: LoginRequest = json_body(body, "{\"user\": name, \"password\": password}").await?;
    let fs = api
        .access
        .login_password(&req.user, &req.password, peer, Protocol::Http)
        .await
        .map_err(|r| refusal(&headers, r))?;
    let token = random_token();
    let prefix = user_prefix(fs.user());
    let key = format!("{prefix}{}", sha256_hex(token.as_bytes()));
    let now = now();
    let record = SessionRecord {
        user: fs.user().to_string(),
        csrf: random_token(),
        created: now,
        last_seen: now,
    };
    let expires = session_expiry(&api.auth, &record);
    api.access
        .records()
        .record_put(
            SESSIONS,
            &key,
            &serde_json::to_vec(&record).expect("serialisable"),
            Some(at(expires)),
        )
        .await
        .map_err(store_failed)?;
    tracing::info!(user = fs.user(), %peer, "http: browser session started");
    let via = Via::Cookie {
        record: key,
        csrf: record.csrf.clone(),
    };
    let mut response = json(StatusCode::OK, &whoami_body(&fs, &via, None, Some(expires)));
    // The cookie lives as long as the session can (its absolute lifetime); the store decides
    // earlier ends (idle, logout, revocation).
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(
            &api.auth,
            transport.is_some_and(|t| t.tls),
            &format!("{prefix}.{token}"),
            api.auth.session_max.as_secs(),
        ),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LogoutQuery {
    /// End every session of the user (on every replica), not just this one.
    pub all: Option<bool>,
}

/// Logs out: ends this browser session (`?all=true`: every session of the user, e.g. after a
/// lost laptop; with Basic too). The session record is deleted, so the cookie stops working on
/// every replica at once.
#[utoipa::path(delete, path = "/api/v1/session", tag = "auth", params(LogoutQuery),
    responses(
        (status = 204, description = "Ended; the cookie is cleared"),
        (status = 400, description = "No session to end: not logged in with a cookie and no ?all=true", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Missing or wrong X-CSRF-Token, or an API key", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn logout(
    State(api): State<Shared>,
    transport: Option<axum::Extension<super::Transport>>,
    session: Session,
    uri: axum::http::Uri,
) -> Result<Response> {
    let store = &api.access.records();
    if super::api::flag(&super::api::query(&uri)?, "all")? {
        if matches!(session.via, Via::Key(_)) {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "permission-denied",
                "an API key cannot end its user's sessions; log in with the password",
            ));
        }
        let prefix = user_prefix(session.fs().user());
        let mut ended = 0;
        for (key, bytes) in records_with_prefix(&api, SESSIONS, &prefix).await? {
            let owner = serde_json::from_slice::<SessionRecord>(&bytes).map(|r| r.user);
            if owner.is_ok_and(|o| o == session.fs().user())
                && store
                    .record_delete(SESSIONS, &key)
                    .await
                    .map_err(store_failed)?
            {
                ended += 1;
            }
        }
        tracing::info!(
            user = session.fs().user(),
            ended,
            "http: all browser sessions ended"
        );
    } else {
        let Via::Cookie { record, .. } = &session.via else {
            return Err(Problem::bad_request(
                "this request has no session cookie to end; add ?all=true to end all your sessions",
            ));
        };
        store
            .record_delete(SESSIONS, record)
            .await
            .map_err(store_failed)?;
        tracing::info!(user = session.fs().user(), "http: browser session ended");
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&api.auth, transport.is_some_and(|t| t.tls), "", 0),
    );
    Ok(response)
}

/// A new API key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// What the key is for (shown in listings), 1 to 100 characters.
    pub name: String,
    /// The directory of the home the key is jailed to (its `/`); `/` for the whole home.
    pub path: String,
    pub access: KeyAccess,
    /// When the key stops working (RFC 3339); absent = never.
    pub expires_at: Option<String>,
}

/// An API key (its secret only in the answer that created it).
#[derive(Serialize, ToSchema)]
pub struct KeyInfo {
    pub id: String,
    /// The key to send as `Authorization: Bearer …`: shown once, when created, and never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub name: String,
    pub path: String,
    pub access: KeyAccess,
    /// RFC 3339.
    pub created: String,
    pub expires_at: Option<String>,
    /// When the key was last used (to the minute), RFC 3339; null = never.
    pub last_used: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

fn key_info(r: &KeyRecord, key: Option<String>) -> KeyInfo {
    KeyInfo {
        id: r.id.clone(),
        key,
        name: r.name.clone(),
        path: r.path.clone(),
        access: r.access,
        created: rfc3339(r.created),
        expires_at: r.expires_at.map(rfc3339),
        last_used: r.last_used.map(rfc3339),
    }
}

/// Keys are managed with the user's password (Basic or a session), never with a key: a leaked
/// key must not be able to mint wider ones or keep itself alive.
fn not_with_a_key(session: &Session) -> Result<()> {
    if matches!(session.via, Via::Key(_)) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "permission-denied",
            "API keys are managed with your password (Basic or a browser session), not with a key",
        ));
    }
    Ok(())
}

/// Creates an API key scoped to a directory of the home, read or read-write, with an optional
/// expiry. The answer holds the key itself, once.
#[utoipa::path(post, path = "/api/v1/keys", tag = "auth", request_body = NewKey,
    responses(
        (status = 201, description = "Created; `key` is shown only now", body = KeyInfo),
        (status = 400, description = "Bad name, path, access or expiry", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Logged in with a key, or a missing CSRF token", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "The path does not exist", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 409, description = "The path is not a directory, or the user has too many keys", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn create_key(
    State(api): State<Shared>,
    session: Session,
    body: axum::body::Body,
) -> Result<Response> {
    not_with_a_key(&session)?;
    let fs = session.fs();
    let req: NewKey = json_body(
        body,
        "{\"name\": text, \"path\": dir, \"access\": \"read\"|\"read-write\", \"expires_at\": RFC 3339 or absent}",
    )
    .await?;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Problem::bad_request(
            "name: give the key a name of 1 to 100 characters, without control characters",
        ));
    }
    let path = plain_path(fs, &req.path)?;
    let meta = fs.stat(&path).await?;
    if !meta.is_dir() {
        return Err(Problem::from(StoreError::new(
            ErrorKind::NotADirectory,
            format!("{path} is a file; a key is scoped to a directory"),
        )));
    }
    let now = now();
    let expires_at = match req.expires_at.as_deref() {
        None => None,
        Some(text) => {
            let t = humantime::parse_rfc3339_weak(text.trim()).map_err(|e| {
                Problem::bad_request(format!(
                    "expires_at {text:?} is not an RFC 3339 time ({e}), such as \"2030-01-31T12:00:00Z\""
                ))
            })?;
            let t = unix(t);
            if t <= now {
                return Err(Problem::bad_request(format!(
                    "expires_at {text:?} is in the past"
                )));
            }
            Some(t)
        }
    };
    let prefix = user_prefix(fs.user());
    let existing = records_with_prefix(&api, KEYS, &prefix).await?;
    if existing.len() >= MAX_KEYS_PER_USER {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "too-many-keys",
            format!("you have {MAX_KEYS_PER_USER} API keys, the most allowed; revoke one first"),
        ));
    }
    let id = format!("{prefix}{}", random_hex(8));
    let secret = random_token();
    let record = KeyRecord {
        id: id.clone(),
        user: fs.user().to_string(),
        name: name.to_string(),
        path: path.as_str().to_string(),
        access: req.access,
        created: now,
        expires_at,
        last_used: None,
        secret_sha256: sha256_hex(secret.as_bytes()),
    };
    let stored = api
        .access
        .records()
        .record_swap(
            KEYS,
            &id,
            None,
            &serde_json::to_vec(&record).expect("serialisable"),
            expires_at.map(at),
        )
        .await
        .map_err(store_failed)?;
    if !stored {
        return Err(Problem::from(StoreError::new(
            ErrorKind::Internal,
            "a new API key's id is taken; try again",
        )));
    }
    tracing::info!(user = fs.user(), key = id, path = %path, access = ?record.access, "http: API key created");
    let key = format!("{KEY_PREFIX}{id}_{secret}");
    let mut response = json(StatusCode::CREATED, &key_info(&record, Some(key)));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The user's API keys (without their secrets).
#[utoipa::path(get, path = "/api/v1/keys", tag = "auth",
    responses(
        (status = 200, description = "The user's keys", body = KeyList),
        (status = 401, description = "Not logged in", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Logged in with a key", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn list_keys(State(api): State<Shared>, session: Session) -> Result<Response> {
    not_with_a_key(&session)?;
    let prefix = user_prefix(session.fs().user());
    let mut keys = Vec::new();
    for (_, bytes) in records_with_prefix(&api, KEYS, &prefix).await? {
        let r: KeyRecord = serde_json::from_slice(&bytes).map_err(|e| corrupt("key", e))?;
        if r.user == session.fs().user() {
            keys.push(key_info(&r, None));
        }
    }
    Ok(json(StatusCode::OK, &KeyList { keys }))
}

/// Revokes an API key: it stops working on every replica at once.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "auth",
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not logged in", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 403, description = "Logged in with a key, or a missing CSRF token", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 404, description = "No such key of yours", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
    ))]
pub async fn revoke_key(
    State(api): State<Shared>,
    session: Session,
    uri: axum::http::Uri,
) -> Result<Response> {
    not_with_a_key(&session)?;
    // From the URI itself (not axum's Path), so a malformed id is a problem+json 404 too.
    let raw = uri.path().rsplit('/').next().unwrap_or("");
    let id = percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .to_string();
    let store = &api.access.records();
    let not_found = || {
        Problem::from(StoreError::new(
            ErrorKind::NotFound,
            format!("you have no API key {id:?}"),
        ))
    };
    // Only the user's own key range: another user's id is "not found", not "forbidden".
    let mine = id.len() == 32 && id.starts_with(&user_prefix(session.fs().user()));
    if !mine {
        return Err(not_found());
    }
    let Some(bytes) = store.record_get(KEYS, &id).await.map_err(store_failed)? else {
        return Err(not_found());
    };
    let r: KeyRecord = serde_json::from_slice(&bytes).map_err(|e| corrupt("key", e))?;
    if r.user != session.fs().user() {
        return Err(not_found());
    }
    store.record_delete(KEYS, &id).await.map_err(store_failed)?;
    tracing::info!(
        user = session.fs().user(),
        key = id,
        "http: API key revoked"
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(n.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn basic_auth() {
        let h = headers(&[(header::AUTHORIZATION, "Basic YWxpY2U6c2U6Y3JldA==")]);
        assert_eq!(
            basic_credentials(&h).unwrap(),
            ("alice".to_string(), "se:cret".to_string())
        );
        for bad in ["Bearer x", "Basic !!!", "Basic YWxpY2U="] {
            let h = headers(&[(header::AUTHORIZATION, bad)]);
            assert_eq!(
                basic_credentials(&h).unwrap_err().status,
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(
            basic_credentials(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn keys_parse() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_key(&format!("fgk_{id}_s3cr_et-x")),
            Some((id, "s3cr_et-x"))
        );
        for bad in [
            "",
            "fgk_",
            "fgk_xyz_abc",
            &format!("fgk_{id}"),
            &format!("fgk_{id}_"),
            &format!("fgk_{id}xabc"),
        ] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
        assert_eq!(parse_key("fgk_ééééééééééééééééééééééééééééééééééé_x"), None);
    }

    #[test]
    fn cookies_and_origins() {
        let h = headers(&[
            (header::COOKIE, "a=1; filegate_session=abc.def"),
            (header::COOKIE, "b=2"),
        ]);
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc.def"));
        assert_eq!(cookie(&h, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        assert!(same_origin(&headers(&[])).is_ok());
        let ok = headers(&[
            (header::HOST, "gw:9090"),
            (header::ORIGIN, "http://gw:9090"),
            (
                header::HeaderName::from_static("sec-fetch-site"),
                "same-origin",
            ),
        ]);
        assert!(same_origin(&ok).is_ok());
        for bad in [
            headers(&[
                (header::HOST, "gw:9090"),
                (header::ORIGIN, "https://evil.example"),
            ]),
            headers(&[(header::HOST, "gw:9090"), (header::ORIGIN, "null")]),
            headers(&[(
                header::HeaderName::from_static("sec-fetch-site"),
                "cross-site",
            )]),
        ] {
            assert_eq!(same_origin(&bad).unwrap_err().name, "csrf");
        }
    }

    #[test]
    fn session_keys_and_expiry() {
        assert!(session_key("0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_some());
        assert!(session_key("short.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").is_none());
        assert!(session_key("0123456789abcdef.x").is_none());
        let s = Settings {
            session_idle: Duration::from_secs(10),
            session_max: Duration::from_secs(100),
            secure_cookies: false,
        };
        let r = |created, last_seen| SessionRecord {
            user: "a".into(),
            csrf: "c".into(),
            created,
            last_seen,
        };
        assert_eq!(session_expiry(&s, &r(1000, 1000)), 1010);
        assert_eq!(session_expiry(&s, &r(1000, 1095)), 1100);
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
        let c = set_cookie(
            &Settings {
                secure_cookies: true,
                ..s
            },
            false,
            "v",
            5,
        );
        assert_eq!(
            set_cookie(&s, true, "v", 5),
            c,
            "over the TLS listener the cookie is Secure too"
        );
        assert!(!set_cookie(&s, false, "v", 5)
            .to_str()
            .unwrap()
            .contains("Secure"));
        assert_eq!(
            c.to_str().unwrap(),
            "filegate_session=v; Max-Age=5; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
    }
}
