//! The REST API under `/api/v1` (see `docs/http.md`). Every request logs in with HTTP Basic and
//! reaches the store only through the user's [`UserFs`], so jail, permissions, quota, bandwidth,
//! bans, events and audit lines are those of FTP and SFTP.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use futures_util::StreamExt as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::json;
use storage_backend::{ErrorKind, Metadata, OpenOptions, StoreError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::{TaskTracker, TaskTrackerToken};

use super::errors::Problem;
use crate::access::{Access, ConnectionPermit, UserFs, UserPath};
use crate::config::Permission;
use crate::events::TempNames;

/// Listing page size when `?limit=` is absent, and the most one page may hold.
pub const DEFAULT_PAGE: usize = 1000;
pub const MAX_PAGE: usize = 10_000;
/// The largest JSON request body (`/move`): a few paths.
pub(crate) const MAX_JSON_BODY: usize = 64 * 1024;

/// What the API needs from the gateway.
pub struct Api {
    pub access: Arc<Access>,
    /// `storage.max_file_size` (0 = unlimited), to refuse a too-large upload before its body.
    pub max_file_size: u64,
    /// Cancelled when shutdown begins: new requests are refused with 503.
    pub stop_accepting: CancellationToken,
    /// Cancelled when the grace period is over: running transfers end (uploads cut off).
    pub abort_sessions: CancellationToken,
    /// The gateway's sessions, which shutdown waits for; each request is one while it runs.
    pub sessions: TaskTracker,
    /// Live events for `/api/v1/events` (SSE, WebSocket) and its replay.
    pub events: Arc<crate::events::EventHub>,
    /// `http.upload_expiry`: a resumable upload left alone this long is given up.
    pub upload_expiry: std::time::Duration,
    /// Browser sessions and cookies (`http.session_*`).
    pub auth: super::auth::Settings,
}

pub(crate) type Shared = Arc<Api>;
pub(crate) type Result<T> = std::result::Result<T, Problem>;

/// Every route of the API beside the handler that serves it.
pub fn router(api: Shared) -> Router {
    // `/files` and `/files/` are the home itself; `*path` needs at least one character.
    let files = || {
        get(get_file)
            .head(head_file)
            .put(put_file)
            .post(super::transfer::upload_form)
            .delete(delete_file)
            .fallback(method_not_allowed)
    };
    Router::new()
        .route("/api/v1/files", files())
        .route("/api/v1/files/", files())
        .route("/api/v1/files/*path", files())
        .route(
            "/api/v1/dirs/*path",
            post(make_dir).fallback(method_not_allowed),
        )
        .route(
            "/api/v1/move",
            post(move_entry).fallback(method_not_allowed),
        )
        .merge(super::events::router())
        .merge(super::uploads::router())
        .merge(super::transfer::router())
        .merge(super::auth::router())
        .merge(super::openapi::router())
        .fallback(unknown_route)
        .with_state(api)
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> Problem {
    let allow = if uri.path().starts_with("/api/v1/files") {
        "GET, HEAD, PUT, POST, DELETE"
    } else {
        "POST"
    };
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{method} is not served on {}; use {allow}", uri.path()),
    )
    .with_header(header::ALLOW, HeaderValue::from_static(allow))
}

async fn unknown_route(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-such-endpoint",
        format!(
            "{} is not an endpoint of this API (see docs/http.md)",
            uri.path()
        ),
    )
}

// --- Login ---

/// A logged-in request: its user's file system, and the connection slot it holds while it runs.
/// How it logged in (Basic, API key, browser session) is [`super::auth`]'s business.
pub struct Session {
    pub(crate) fs: UserFs,
    pub(super) via: super::auth::Via,
    _permit: ConnectionPermit,
    /// Shutdown waits (within its grace period) until this is dropped.
    _running: TaskTrackerToken,
}

impl Session {
    /// The user's file system (for an API key: narrowed to its path and access).
    pub fn fs(&self) -> &UserFs {
        &self.fs
    }
}

/// Admits a request before its login: refused while shutting down, while its address is banned
/// (before its credentials are even looked at) or past the connection limits.
pub(super) fn admit(api: &Api, peer: SocketAddr) -> Result<(ConnectionPermit, TaskTrackerToken)> {
    if api.stop_accepting.is_cancelled() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting-down",
            "the gateway is shutting down; try again in a moment (or another gateway)",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(1u64)));
    }
    let permit = api.access.admit(peer.ip())?;
    Ok((permit, api.sessions.token()))
}

#[axum::async_trait]
impl FromRequestParts<Shared> for Session {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, api: &Shared) -> Result<Session> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .ok_or_else(|| {
                Problem::from(StoreError::new(ErrorKind::Internal, "no peer address"))
            })?;
        let (permit, running) = admit(api, peer)?;
        let login = super::auth::authenticate(parts, api, peer).await?;
        Ok(Session {
            fs: login.fs,
            via: login.via,
            _permit: permit,
            _running: running,
        })
    }
}

impl Session {
    /// The user's file system for a long-lived event stream, giving back the connection slot and
    /// the shutdown wait: a stream holds an `events.max_streams` slot instead, and ends by itself
    /// when shutdown begins (`src/http/events.rs`).
    pub fn into_fs(self) -> UserFs {
        self.fs
    }
}

// --- Paths and parameters ---

/// The path after `prefix` in the request's (still percent-encoded) URI, decoded segment by
/// segment and resolved in the user's home. Segments are decoded one by one, so an encoded `/`
/// (`%2f`) cannot smuggle in a separator; `.`, `..` (also encoded), backslashes, NUL, control
/// characters, over-long names and invalid UTF-8 are refused with 400.
pub(crate) fn target(fs: &UserFs, uri: &Uri, prefix: &str) -> Result<UserPath> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or("");
    let mut names = Vec::new();
    for seg in raw.split('/').filter(|s| !s.is_empty()) {
        let bytes: Vec<u8> = percent_decode_str(seg).collect();
        let name = String::from_utf8(bytes).map_err(|_| {
            Problem::from(StoreError::new(
                ErrorKind::InvalidPath,
                "the path is not valid UTF-8 once percent-decoded; file names must be UTF-8",
            ))
        })?;
        names.push(checked_name(name)?);
    }
    Ok(fs.resolve(&UserPath::root(), names.join("/").as_bytes())?)
}

/// A path sent in a JSON body (not percent-encoded), relative to the home, with the same rules.
pub(crate) fn plain_path(fs: &UserFs, text: &str) -> Result<UserPath> {
    let mut names = Vec::new();
    for seg in text.split('/').filter(|s| !s.is_empty()) {
        names.push(checked_name(seg.to_string())?);
    }
    Ok(fs.resolve(&UserPath::root(), names.join("/").as_bytes())?)
}

/// One path segment: never a separator or a step up. The jail would keep `..` inside the home,
/// but a URL that tries to climb is a mistake or an attack, so it is refused rather than clamped.
pub(crate) fn checked_name(name: String) -> Result<String> {
    let invalid = |why: String| Problem::from(StoreError::new(ErrorKind::InvalidPath, why));
    if name == "." || name == ".." {
        return Err(invalid(format!("{name:?} is not allowed in a path")));
    }
    if name.contains(['/', '\\']) {
        return Err(invalid(format!(
            "{name:?}: a name may not contain a slash or a backslash"
        )));
    }
    Ok(name)
}

/// The query string's parameters, percent-decoded.
pub(crate) fn query(uri: &Uri) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            String::from_utf8(percent_decode_str(&s.replace('+', " ")).collect())
                .map_err(|_| Problem::bad_request("a query parameter is not UTF-8"))
        };
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

pub(crate) fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A boolean flag: absent = false; `true`/`1`/empty = true; `false`/`0` = false.
pub(crate) fn flag(q: &[(String, String)], name: &str) -> Result<bool> {
    match param(q, name) {
        // Only the two words the OpenAPI document promises (a boolean), so `?all=` or `?all=0`
        // is a mistake the caller hears about rather than a guess.
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(Problem::bad_request(format!(
            "?{name}={other}: use true or false"
        ))),
    }
}

// --- Files ---

/// `GET /api/v1/files/{path}`: a file's content (ranges, ETag) or a directory's listing page.
#[utoipa::path(get, path = "/api/v1/files/{path}", tag = "files",
    params(
        ("path" = String, Path, description = "A file or directory relative to the home (`/api/v1/files` or `/api/v1/files/` is the home), each segment percent-encoded"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 10000, description = "Listing: entries per page (default 1000)"),
        ("cursor" = Option<String>, Query, description = "Listing: the `next` of the previous page"),
        ("Range" = Option<String>, Header, nullable = false, description = "File: one byte range, `bytes=START-END`, `bytes=START-` or `bytes=-LAST`"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "File: 304 when the ETag matches"),
        ("If-Range" = Option<String>, Header, nullable = false, description = "File: the range only while the ETag still matches"),
    ),
    responses(
        (status = 200, description = "A file's content, or a page of a directory's listing", content(
            (super::openapi::Binary = "application/octet-stream"),
            (super::openapi::Listing = "application/json"),
        )),
        (status = 206, description = "The requested range of the file", content_type = "application/octet-stream", body = super::openapi::Binary),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 409, description = "The file changed while it was read", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 416, description = "The range is outside the file", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        super::openapi::Errors,
    ))]
pub(super) async fn get_file(
    State(api): State<Shared>,
    session: Session,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    let fs = &session.fs;
    let path = target(fs, &uri, "/api/v1/files")?;
    let q = query(&uri)?;
    // Checked whatever the path turns out to be: a bad value is the client's mistake either way.
    page_limit(&q)?;
    let meta = fs.stat(&path).await?;
    if meta.is_dir() {
        match param(&q, "download") {
            None => {}
            Some("zip") => {
                require(fs, Permission::Read, "read files")?;
                return super::transfer::zip_dir(session, path).await;
            }
            Some(other) => {
                return Err(Problem::bad_request(format!(
                    "?download={other}: a folder downloads as ?download=zip"
                )))
            }
        }
        let temp = api.events.temp_names();
        if let Some(sorted) = super::transfer::list_sorted(fs, &path, &q, temp).await? {
            return Ok(sorted);
        }
        return list_dir(fs, &path, &q, temp).await;
    }
    // A client that has this version already gets 304 without the content being opened.
    if not_modified(&headers, etag(&meta).as_ref()) {
        require(fs, Permission::Read, "read files")?;
        let mut response = file_headers(&path, &meta, meta.size, etag(&meta).as_ref());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response.headers_mut().remove(header::CONTENT_LENGTH);
        return Ok(response);
    }
    let download = fs.open_read(&path).await?;
    let meta = download.metadata().clone();
    let size = download.size();
    let etag = etag(&meta);
    let mut response = file_headers(&path, &meta, size, etag.as_ref());
    let (start, len) = match range(&headers, size, etag.as_ref())? {
        Some((start, end)) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_RANGE,
                value(&format!("bytes {start}-{end}/{size}")),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
            (start, end - start + 1)
        }
        None => (0, size),
    };
    // The content goes out piece by piece as the store yields it, never whole in memory; the
    // download (and its audit line) lives as long as the body stream.
    let pieces = download.stream(start);
    // Whether the body runs to the end of the file: then the stream's end is read too, so the
    // audit line says the download completed.
    let to_end = start + len == size;
    let abort = api.abort_sessions.clone();
    let body = futures_util::stream::unfold(
        (pieces, len, download, session),
        move |(mut pieces, left, download, session)| {
            let abort = abort.clone();
            async move {
                if left == 0 {
                    if to_end {
                        while pieces.next().await.is_some() {}
                    }
                    return None;
                }
                let piece = tokio::select! {
                    piece = pieces.next() => piece?,
                    // Shutdown's grace period is over: the download ends unfinished (an error, so
                    // the client cannot take it for the whole file).
                    _ = abort.cancelled() => {
                        return Some((
                            Err(std::io::Error::other("the gateway is shutting down")),
                            (pieces, 0, download, session),
                        ));
                    }
                };
                match piece {
                    Ok(mut data) => {
                        if data.len() as u64 > left {
                            data.truncate(left as usize);
                        }
                        let left = left - data.len() as u64;
                        Some((Ok(data), (pieces, left, download, session)))
                    }
                    Err(e) => Some((
                        Err(std::io::Error::other(e.to_string())),
                        (pieces, 0, download, session),
                    )),
                }
            }
        },
    );
    *response.body_mut() = Body::from_stream(body);
    Ok(response)
}

/// `HEAD /api/v1/files/{path}`: the headers a GET would give, without opening the content.
#[utoipa::path(head, path = "/api/v1/files/{path}", tag = "files",
    params(
        ("path" = String, Path, description = "A file or directory relative to the home, each segment percent-encoded"),
        ("Range" = Option<String>, Header, nullable = false, description = "One byte range"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "304 when the ETag matches"),
    ),
    responses(
        (status = 200, description = "The headers a GET would give (size, ETag, Last-Modified)"),
        (status = 206, description = "The headers of the requested range"),
        (status = 304, description = "Not modified"),
        (status = 416, description = "The range is outside the file"),
        super::openapi::Errors,
    ))]
pub(super) async fn head_file(
    State(_api): State<Shared>,
    session: Session,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    let fs = &session.fs;
    let path = target(fs, &uri, "/api/v1/files")?;
    let meta = fs.stat(&path).await?;
    if meta.is_dir() {
        require(fs, Permission::List, "list directories")?;
        return Ok((
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
        )
            .into_response());
    }
    require(fs, Permission::Read, "read files")?;
    let etag = etag(&meta);
    let mut response = file_headers(&path, &meta, meta.size, etag.as_ref());
    if not_modified(&headers, etag.as_ref()) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response.headers_mut().remove(header::CONTENT_LENGTH);
    } else if let Some((start, end)) = range(&headers, meta.size, etag.as_ref())? {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {start}-{end}/{}", meta.size)),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start + 1));
    }
    Ok(response)
}

/// The refusal the user layer gives, for answers that do not reach it (HEAD, 304).
pub(crate) fn require(fs: &UserFs, permission: Permission, what: &str) -> Result<()> {
    if fs.can(permission) {
        Ok(())
    } else {
        Err(Problem::from(StoreError::new(
            ErrorKind::PermissionDenied,
            format!("permission denied: {} may not {what}", fs.user()),
        )))
    }
}

/// The strong ETag of a file: its SHA-256, or its version when the digest is not known.
pub(crate) fn etag(meta: &Metadata) -> Option<HeaderValue> {
    let tag = match &meta.sha256 {
        Some(sha) => format!("\"{sha}\""),
        None => format!("\"v{}\"", meta.version),
    };
    HeaderValue::from_str(&tag).ok()
}

pub(crate) fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("header value from our own ASCII text")
}

/// Characters kept as they are in `filename*` (RFC 8187 attr-char).
pub(crate) const ATTR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// A 200 answer for a file, without its body yet.
pub(crate) fn file_headers(
    path: &UserPath,
    meta: &Metadata,
    size: u64,
    etag: Option<&HeaderValue>,
) -> Response {
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(etag) = etag {
        h.insert(header::ETAG, etag.clone());
    }
    h.insert(header::LAST_MODIFIED, value(&httpdate(meta.mtime)));
    let name = path.file_name().unwrap_or("download");
    // A plain ASCII fallback for old clients, the exact UTF-8 name in `filename*` (RFC 6266).
    let fallback: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    h.insert(
        header::CONTENT_DISPOSITION,
        value(&format!(
            "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
            utf8_percent_encode(name, ATTR)
        )),
    );
    if !meta.complete {
        // An upload that was cut off and kept for resuming: its content is not the whole file.
        h.insert("x-filegate-complete", HeaderValue::from_static("false"));
    }
    response
}

/// An HTTP date (RFC 9110 IMF-fixdate).
pub(crate) fn httpdate(t: std::time::SystemTime) -> String {
    // humantime gives RFC 3339; IMF-fixdate is built from its parts.
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {h:02}:{m:02}:{s:02} GMT",
        months[(month - 1) as usize]
    )
}

/// Whether `If-None-Match` names the file's current ETag (or `*`).
fn not_modified(headers: &HeaderMap, etag: Option<&HeaderValue>) -> bool {
    let (Some(inm), Some(etag)) = (headers.get(header::IF_NONE_MATCH), etag) else {
        return false;
    };
    let (Ok(inm), Ok(etag)) = (inm.to_str(), etag.to_str()) else {
        return false;
    };
    inm.split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

/// The single byte range a request asks for, as (first, last) byte, inclusive. `None` serves the
/// whole file: no `Range`, a `Range` this server does not do (several ranges, other units), or an
/// `If-Range` that no longer matches. An unsatisfiable range is 416.
fn range(headers: &HeaderMap, size: u64, etag: Option<&HeaderValue>) -> Result<Option<(u64, u64)>> {
    let Some(spec) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        if Some(if_range) != etag {
            return Ok(None);
        }
    }
    let Some(spec) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let unsatisfiable = || {
        Problem::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "range-not-satisfiable",
            format!("the file has {size} bytes; the range bytes={spec} is outside it"),
        )
        .with_header(header::CONTENT_RANGE, value(&format!("bytes */{size}")))
    };
    let (a, b) = spec.split_once('-').ok_or_else(unsatisfiable)?;
    let (a, b) = (a.trim(), b.trim());
    let parsed = |s: &str| s.parse::<u64>().map_err(|_| unsatisfiable());
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        // The last n bytes.
        (true, false) => {
            let n = parsed(b)?;
            if n == 0 || size == 0 {
                return Err(unsatisfiable());
            }
            (size.saturating_sub(n), size - 1)
        }
        (false, true) => (parsed(a)?, size.saturating_sub(1)),
        (false, false) => (parsed(a)?, parsed(b)?.min(size.saturating_sub(1))),
        (true, true) => return Err(unsatisfiable()),
    };
    if start >= size || start > end {
        return Err(unsatisfiable());
    }
    Ok(Some((start, end)))
}

/// One page of a directory listing; `next` is the cursor of the page after it.
pub(crate) async fn list_dir(
    fs: &UserFs,
    dir: &UserPath,
    q: &[(String, String)],
    temp: &TempNames,
) -> Result<Response> {
    let limit = page_limit(q)?;
    let cursor = param(q, "cursor").filter(|c| !c.is_empty());
    let page = fs.list(dir, cursor, limit).await?;
    let entries: Vec<_> = page
        .entries
        .iter()
        .map(|e| listing_entry(e, temp))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        json!({ "path": dir.as_str(), "entries": entries, "next": page.next }),
    ))
}

/// `?limit=` of a listing page.
pub(crate) fn page_limit(q: &[(String, String)]) -> Result<usize> {
    Ok(match param(q, "limit") {
        None => DEFAULT_PAGE,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(Problem::bad_request(format!(
                    "?limit={v}: give a number from 1 to {MAX_PAGE}"
                )))
            }
        },
    })
}

/// One entry of a listing page. `temporary` says a file's name is one of `events.temp_patterns`:
/// an upload still going on under the name it will be renamed from, which no event announces.
pub(crate) fn listing_entry(e: &storage_backend::DirEntry, temp: &TempNames) -> serde_json::Value {
    let m = &e.metadata;
    let mut entry = json!({
        "name": e.name,
        "type": if m.is_dir() { "dir" } else { "file" },
        "mtime": humantime::format_rfc3339_millis(m.mtime).to_string(),
    });
    if m.is_file() {
        entry["size"] = json!(m.size);
        entry["version"] = json!(m.version);
        entry["sha256"] = json!(m.sha256);
        entry["complete"] = json!(m.complete);
        entry["temporary"] = json!(temp.matches(&e.name));
    }
    entry
}

pub(crate) fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// `PUT /api/v1/files/{path}`: the request body becomes the file, streamed into the store as it
/// arrives (no temporary copy) and published in one commit at its end.
#[utoipa::path(put, path = "/api/v1/files/{path}", tag = "files",
    params(
        ("path" = String, Path, description = "The file relative to the home, each segment percent-encoded"),
        ("parents" = Option<bool>, Query, description = "Make missing directories above the file"),
    ),
    request_body(content = super::openapi::Binary, content_type = "application/octet-stream", description = "The file's content, streamed"),
    responses(
        (status = 200, description = "Replaced an existing file", body = super::openapi::PutResult),
        (status = 201, description = "Created a new file", body = super::openapi::PutResult),
        (status = 409, description = "A directory is in the way, or a parent is missing or a file", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 413, description = "Larger than the file size limit or the quota allows", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 507, description = "The quota is exhausted", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        super::openapi::Errors,
    ))]
pub(super) async fn put_file(
    State(api): State<Shared>,
    session: Session,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let fs = &session.fs;
    let checked = async {
        let path = target(fs, &uri, "/api/v1/files")?;
        let q = query(&uri)?;
        // A body that cannot fit is refused before a byte of it is read (curl waits for this
        // answer after `Expect: 100-continue`).
        if let Some(len) = content_length(&headers) {
            too_large(fs, &path, api.max_file_size, len).await?;
        }
        if flag(&q, "parents")? {
            fs.make_parents(&path).await?;
        }
        Ok::<_, Problem>((path, wanted_digest(&headers)?))
    };
    let (path, digest) = match checked.await {
        Ok(checked) => checked,
        Err(refused) => {
            discard(&headers, body).await;
            return Err(refused);
        }
    };
    // The upload runs in its own task: when the client vanishes, hyper may drop this handler,
    // but the upload must still end properly (cut off, kept or dropped), not just disappear.
    let task = tokio::spawn(receive(
        fs.clone(),
        path.clone(),
        body,
        content_length(&headers),
        digest,
        api.abort_sessions.clone(),
    ));
    let info = task.await.map_err(|e| {
        Problem::from(StoreError::new(
            ErrorKind::Internal,
            format!("the upload task failed: {e}"),
        ))
    })??;
    let status = if info.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = json_response(
        status,
        json!({
            "path": path.as_str(),
            "size": info.size,
            "sha256": info.sha256,
            "version": info.version,
        }),
    );
    if let Some(sha) = &info.sha256 {
        response
            .headers_mut()
            .insert(header::ETAG, value(&format!("\"{sha}\"")));
    }
    if info.created {
        response
            .headers_mut()
            .insert(header::LOCATION, location("/api/v1/files", &path));
    }
    Ok(response)
}

/// The URL path of `path` under `prefix`, each segment percent-encoded.
pub(crate) fn location(prefix: &str, path: &UserPath) -> HeaderValue {
    let mut out = prefix.to_string();
    for seg in path.as_str().split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.extend(utf8_percent_encode(seg, ATTR));
    }
    value(&out)
}

pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Streams a request body into `path` and commits it as one complete file; a body that breaks
/// off (or ends before its `Content-Length`) is cut off instead: kept flagged incomplete, or
/// dropped, as `storage.partial_uploads` says — never a complete file.
async fn receive(
    fs: UserFs,
    path: UserPath,
    body: Body,
    expected: Option<u64>,
    digest: Option<[u8; 32]>,
    abort: CancellationToken,
) -> Result<storage_backend::CommitInfo> {
    use sha2::Digest as _;
    let mut upload = fs.open_write(&path, OpenOptions::REPLACE).await?;
    let mut data = body.into_data_stream();
    let mut received = 0u64;
    // The store hashes too, but only when it commits, and then the file is published: a digest
    // to check is computed here, before.
    let mut hasher = digest.map(|_| sha2::Sha256::new());
    loop {
        let piece = tokio::select! {
            piece = data.next() => match piece {
                Some(piece) => piece,
                None => break,
            },
            // Shutdown's grace period is over: the upload is cut off like a vanished client's.
            _ = abort.cancelled() => {
                upload.cut_off().await?;
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting-down",
                    "the gateway shut down during the upload; it is not complete",
                ));
            }
        };
        match piece {
            Ok(bytes) => {
                if let Some(h) = &mut hasher {
                    h.update(&bytes);
                }
                if let Err(e) = upload.append(&bytes).await {
                    upload.abort().await.ok();
                    return Err(e.into());
                }
                received += bytes.len() as u64;
            }
            Err(e) => {
                tracing::info!(user = fs.user(), path = %path, error = %e, "http: upload cut off");
                upload.cut_off().await?;
                return Err(Problem::bad_request(format!(
                    "the request body broke off ({e}); the upload is not complete"
                )));
            }
        }
    }
    if expected.is_some_and(|n| n != received) {
        tracing::info!(user = fs.user(), path = %path, received, "http: upload cut off");
        upload.cut_off().await?;
        return Err(Problem::bad_request(format!(
            "the request body ended after {received} of {} bytes; the upload is not complete",
            expected.unwrap_or_default()
        )));
    }
    if let (Some(want), Some(h)) = (digest, hasher) {
        let got: [u8; 32] = h.finalize().into();
        if got != want {
            upload.abort().await?;
            let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "digest-mismatch",
                format!(
                    "the body's sha-256 is :{}: but Content-Digest says :{}:; nothing was stored",
                    b64(&got),
                    b64(&want)
                ),
            ));
        }
    }
    Ok(upload.commit(None).await?)
}

/// The SHA-256 a PUT's body must have, from RFC 9530 `Content-Digest` or `Repr-Digest`
/// (`sha-256=:<base64>:`; for a whole-file PUT the two are the same bytes). Other algorithms in
/// the header are ignored; a header with only unsupported ones is refused, so that a client that
/// asked for a check never goes unchecked.
pub(crate) fn wanted_digest(headers: &HeaderMap) -> Result<Option<[u8; 32]>> {
    let mut seen = false;
    for name in ["content-digest", "repr-digest"] {
        for v in headers.get_all(name) {
            seen = true;
            let text = v
                .to_str()
                .map_err(|_| Problem::bad_request(format!("{name} is not ASCII")))?;
            for member in text.split(',') {
                let Some((alg, val)) = member.trim().split_once('=') else {
                    continue;
                };
                if !alg.trim().eq_ignore_ascii_case("sha-256") {
                    continue;
                }
                let bad = || {
                    Problem::bad_request(format!(
                        "{name}: sha-256 must be :<base64 of 32 bytes>: (RFC 9530)"
                    ))
                };
                let b64 = val
                    .trim()
                    .strip_prefix(':')
                    .and_then(|v| v.strip_suffix(':'));
                let bytes = b64
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .ok_or_else(bad)?;
                return Ok(Some(bytes.try_into().map_err(|_| bad())?));
            }
        }
    }
    if seen {
        return Err(Problem::bad_request(
            "Content-Digest / Repr-Digest: only sha-256 is supported (sha-256=:<base64>:)",
        ));
    }
    Ok(None)
}

/// Most bytes of a refused request's body read and dropped before the reply.
const DISCARD_LIMIT: u64 = 4 << 20;
/// Longest time spent on that.
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops what a client sends of a body that is refused before it is read, up to
/// [`DISCARD_LIMIT`] bytes or [`DISCARD_TIME`]. A reply sent while the client is still sending is
/// otherwise lost: the connection is closed with the client's bytes unread, which resets it, and a
/// client that does not wait for `100 Continue` (Python `requests`) sees "connection aborted"
/// instead of the 413. A client that asked for `100 Continue` has sent nothing: nothing to read.
pub(crate) async fn discard(headers: &HeaderMap, body: Body) {
    use futures_util::StreamExt;
    let expects = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects {
        return;
    }
    let mut stream = body.into_data_stream();
    let mut left = DISCARD_LIMIT;
    let _ = tokio::time::timeout(DISCARD_TIME, async {
        while let Some(Ok(piece)) = stream.next().await {
            match left.checked_sub(piece.len() as u64) {
                Some(rest) if rest > 0 => left = rest,
                _ => break,
            }
        }
    })
    .await;
}

/// Refuses an upload of `len` bytes that the store's file size limit or the user's quota cannot take.
pub(crate) async fn too_large(
    fs: &UserFs,
    path: &UserPath,
    max_file_size: u64,
    len: u64,
) -> Result<()> {
    if max_file_size > 0 && len > max_file_size {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "file-too-large",
            format!("the body has {len} bytes; the largest file this gateway stores has {max_file_size}"),
        ));
    }
    if let (used, Some(quota)) = fs.quota_bytes() {
        // A replacement gives back the bytes of the file it replaces.
        let replaced = match fs.stat(path).await {
            Ok(m) if m.is_file() => m.size,
            _ => 0,
        };
        if used.saturating_sub(replaced).saturating_add(len) > quota {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "quota-exceeded",
                format!(
                    "the body has {len} bytes; your quota has {} of {quota} bytes left",
                    quota.saturating_sub(used.saturating_sub(replaced))
                ),
            ));
        }
    }
    Ok(())
}

/// mkdir that accepts an existing directory (but not a file in the way).
async fn mkdir_exists_ok(fs: &UserFs, dir: &UserPath) -> Result<()> {
    match fs.mkdir(dir).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => match fs.stat(dir).await {
            Ok(m) if m.is_dir() => Ok(()),
            _ => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /api/v1/files/{path}`: a file, or a directory: empty, or with `?recursive=true` its
/// whole tree, depth-first (one change and one event per entry).
#[utoipa::path(delete, path = "/api/v1/files/{path}", tag = "files",
    params(
        ("path" = String, Path, description = "A file or directory relative to the home, each segment percent-encoded"),
        ("recursive" = Option<bool>, Query, description = "Delete a directory with everything in it"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "The directory is not empty (add ?recursive=true)", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        super::openapi::Errors,
    ))]
pub(super) async fn delete_file(
    State(_api): State<Shared>,
    session: Session,
    uri: Uri,
) -> Result<Response> {
    let fs = &session.fs;
    let path = target(fs, &uri, "/api/v1/files")?;
    // Checked first, whatever the path is: `?recursive=4.8e307` on a file was ignored and the
    // file deleted (Schemathesis).
    let recursive = flag(&query(&uri)?, "recursive")?;
    if path.is_root() {
        // Refused before anything goes: a recursive delete would otherwise empty the home and only
        // then fail on the home itself.
        return Err(Problem::from(StoreError::new(
            ErrorKind::PermissionDenied,
            "the home itself cannot be deleted; delete what is in it by name",
        )));
    }
    let meta = fs.stat(&path).await?;
    if meta.is_file() {
        fs.delete(&path).await?;
    } else if recursive {
        remove_tree(fs, &path).await?;
    } else {
        fs.rmdir(&path).await.map_err(|e| {
            if e.kind() == ErrorKind::DirectoryNotEmpty {
                Problem::from(StoreError::new(
                    ErrorKind::DirectoryNotEmpty,
                    format!("{path} is not empty; add ?recursive=true to delete it with everything in it"),
                ))
            } else {
                e.into()
            }
        })?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes a directory tree bottom-up, a page of entries at a time (never a whole directory in
/// memory): files as they come, each subdirectory entered before its parent is removed.
pub(crate) async fn remove_tree(fs: &UserFs, root: &UserPath) -> Result<()> {
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.last().cloned() {
        let page = fs.list(&dir, None, DEFAULT_PAGE).await?;
        if page.entries.is_empty() {
            fs.rmdir(&dir).await?;
            stack.pop();
            continue;
        }
        for entry in page.entries {
            let child = dir.join(&entry.name);
            if entry.metadata.is_dir() {
                stack.push(child);
                break;
            }
            fs.delete(&child).await?;
        }
    }
    Ok(())
}

/// `POST /api/v1/dirs/{path}`: makes a directory (`?parents=true`: and the missing ones above it,
/// and an existing directory is fine, like `mkdir -p`).
#[utoipa::path(post, path = "/api/v1/dirs/{path}", tag = "files",
    params(
        ("path" = String, Path, description = "The new directory relative to the home, each segment percent-encoded"),
        ("parents" = Option<bool>, Query, description = "Also make the missing directories above it; an existing directory is fine (mkdir -p)"),
    ),
    responses(
        (status = 201, description = "Created", body = super::openapi::DirCreated),
        (status = 409, description = "It exists already, or a parent is missing or a file", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        (status = 507, description = "The quota is exhausted", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        super::openapi::Errors,
    ))]
pub(super) async fn make_dir(
    State(_api): State<Shared>,
    session: Session,
    uri: Uri,
) -> Result<Response> {
    let fs = &session.fs;
    let path = target(fs, &uri, "/api/v1/dirs")?;
    if flag(&query(&uri)?, "parents")? {
        fs.make_parents(&path).await?;
        mkdir_exists_ok(fs, &path).await?;
    } else {
        fs.mkdir(&path).await?;
    }
    let mut response = json_response(StatusCode::CREATED, json!({ "path": path.as_str() }));
    response
        .headers_mut()
        .insert(header::LOCATION, location("/api/v1/files", &path));
    Ok(response)
}

/// A rename or move, paths relative to the home.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MoveRequest {
    from: String,
    to: String,
    /// Replace an existing target file (or empty directory).
    #[serde(default)]
    replace: bool,
}

/// `POST /api/v1/move` with `{"from": …, "to": …, "replace": false}`: renames or moves a file or
/// a directory in one atomic step.
#[utoipa::path(post, path = "/api/v1/move", tag = "files",
    request_body = MoveRequest,
    responses(
        (status = 200, description = "Moved", body = super::openapi::MoveResult),
        (status = 409, description = "The target exists (add replace) or a parent is missing", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
        super::openapi::Errors,
    ))]
pub(super) async fn move_entry(
    State(_api): State<Shared>,
    session: Session,
    body: Body,
) -> Result<Response> {
    let fs = &session.fs;
    let bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
        .await
        .map_err(|e| Problem::bad_request(format!("cannot read the request body: {e}")))?;
    let req: MoveRequest = serde_json::from_slice(&bytes).map_err(|e| {
        Problem::bad_request(format!(
            "the body must be JSON {{\"from\": path, \"to\": path, \"replace\": bool}}: {e}"
        ))
    })?;
    let from = plain_path(fs, &req.from)?;
    let to = plain_path(fs, &req.to)?;
    fs.rename(&from, &to, req.replace).await?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "from": from.as_str(), "to": to.as_str() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.insert(n.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn ranges() {
        let r = |spec: &str, size| range(&headers(&[(header::RANGE, spec)]), size, None);
        assert_eq!(r("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(r("bytes=90-", 100).unwrap(), Some((90, 99)));
        assert_eq!(r("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(r("bytes=-1000", 100).unwrap(), Some((0, 99)));
        assert_eq!(r("bytes=50-1000", 100).unwrap(), Some((50, 99)));
        assert_eq!(r("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(r("items=0-1", 100).unwrap(), None);
        for bad in [
            "bytes=100-",
            "bytes=5-4",
            "bytes=-0",
            "bytes=x-y",
            "bytes=-",
        ] {
            let p = r(bad, 100).unwrap_err();
            assert_eq!(p.status, StatusCode::RANGE_NOT_SATISFIABLE, "{bad}");
        }
        assert!(r("bytes=0-", 0).is_err());
        assert_eq!(range(&HeaderMap::new(), 100, None).unwrap(), None);
        // An If-Range that no longer matches gets the whole (new) file.
        let etag = HeaderValue::from_static("\"abc\"");
        let h = headers(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, "\"old\"")]);
        assert_eq!(range(&h, 100, Some(&etag)).unwrap(), None);
        let h = headers(&[(header::RANGE, "bytes=0-1"), (header::IF_RANGE, "\"abc\"")]);
        assert_eq!(range(&h, 100, Some(&etag)).unwrap(), Some((0, 1)));
    }

    #[test]
    fn etag_matching() {
        let etag = HeaderValue::from_static("\"abc\"");
        let inm = |v: &str| not_modified(&headers(&[(header::IF_NONE_MATCH, v)]), Some(&etag));
        assert!(inm("\"abc\""));
        assert!(inm("\"x\", W/\"abc\""));
        assert!(inm("*"));
        assert!(!inm("\"abd\""));
    }

    #[test]
    fn http_dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
        assert_eq!(httpdate(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_709_251_200);
        assert_eq!(httpdate(t), "Fri, 01 Mar 2024 00:00:00 GMT");
    }

    #[test]
    fn names_that_climb_or_split_are_refused() {
        for bad in [".", "..", "a/b", "a\\b"] {
            assert!(checked_name(bad.into()).is_err(), "{bad}");
        }
        assert_eq!(checked_name("%2e%2e".into()).unwrap(), "%2e%2e");
    }
}
