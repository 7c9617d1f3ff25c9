//! Resumable uploads with the tus 1.0 protocol (<https://tus.io/protocols/resumable-upload>) at
//! `/api/v1/uploads`: core, creation (and creation-with-upload), termination, checksum (sha1,
//! sha256) and expiration. `docs/http.md` "Resumable uploads (tus)" for the client's view.
//!
//! Where things live, so that any gateway replica can carry an upload on:
//! - the upload's description (user, target, length, metadata, expiry, lock) is a record in the
//!   store's `tus` table, changed only by compare-and-set ([`Store::record_swap`]);
//! - its bytes are a staging file in the store (`UserFs::open_staging`), outside every home: each
//!   PATCH appends to it and commits what arrived (flagged incomplete), so the offset is simply
//!   the staging file's committed size, and nothing shows at the target;
//! - the PATCH that brings the offset to `Upload-Length` commits the staging file complete and
//!   renames it onto the target: the target appears in one step, with one event
//!   (`file.created`, or `file.modified` when it replaced a file).
//!
//! One request at a time writes an upload: a PATCH holds a lease in the record (renewed while the
//! body streams), another waits briefly for it and is then refused with 423. A client that lost
//! its connection usually asks `HEAD` at once, before the gateway has noticed the loss: `HEAD`
//! therefore waits for a running PATCH to end, so it reports the offset that PATCH reached.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::Router;
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use sha1::Digest as _;
use storage_backend::{ErrorKind, StoreError};
use tokio_util::sync::CancellationToken;

use super::api::{httpdate, plain_path, too_large, value, Result, Session, Shared};
use super::errors::Problem;
use crate::access::{Protocol, Records, Upload, UserFs, UserPath};
use crate::config::Permission;

/// The protocol version spoken (and the only one).
pub const TUS_VERSION: &str = "1.0.0";
/// The extensions served, as `Tus-Extension` lists them.
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
/// Store records table of uploads.
const TABLE: &str = "tus";
/// A PATCH's hold on its upload; renewed while the body streams, so a gateway that died lets go.
const LEASE: Duration = Duration::from_secs(30);
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How long a request waits for another one writing the same upload before it is refused (423).
const LOCK_WAIT: Duration = Duration::from_secs(15);
/// Records outlive their upload's expiry by this much, so the expiry pass finds the staging file
/// even when every gateway was down at the time.
const RECORD_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The largest `Upload-Metadata` header kept.
const MAX_METADATA: usize = 4096;

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
const OFFSET_STREAM: &str = "application/offset+octet-stream";

pub fn router() -> Router<Shared> {
    let fallback = || MethodRouter::new().fallback(not_allowed);
    Router::new()
        .route(
            "/api/v1/uploads",
            post(create).options(options).merge(fallback()),
        )
        .route(
            "/api/v1/uploads/:id",
            axum::routing::head(head_upload)
                .patch(patch_upload)
                .delete(terminate)
                .options(options)
                .merge(fallback()),
        )
}

async fn not_allowed(method: axum::http::Method, uri: Uri) -> Problem {
    let allow = if uri.path().trim_end_matches('/') == "/api/v1/uploads" {
        "OPTIONS, POST"
    } else {
        "OPTIONS, HEAD, PATCH, DELETE"
    };
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        format!("{method} is not served on {}; use {allow}", uri.path()),
    )
    .with_header(header::ALLOW, HeaderValue::from_static(allow))
}

/// One upload, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TusUpload {
    user: String,
    /// The target, a path in the user's home.
    target: String,
    length: u64,
    /// `Upload-Metadata` as the client sent it (HEAD gives it back).
    metadata: String,
    expires_ms: u64,
    state: UploadState,
    /// The request writing the upload now, and until when its hold lasts.
    lock: Option<Lock>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum UploadState {
    /// Bytes are coming in.
    Open,
    /// Every byte is there; the rename onto the target is (or was) under way.
    Publishing,
    /// The target has the file.
    Done,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Lock {
    holder: String,
    until_ms: u64,
}

/// An upload's record as read: its exact bytes are what a compare-and-set expects.
struct Record {
    raw: Vec<u8>,
    up: TusUpload,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn record_expiry(up: &TusUpload) -> Option<SystemTime> {
    Some(from_ms(up.expires_ms) + RECORD_GRACE)
}

async fn load(store: &Records, id: &str) -> Result<Option<Record>> {
    let Some(raw) = store.record_get(TABLE, id).await? else {
        return Ok(None);
    };
    let up = serde_json::from_slice(&raw).map_err(|e| {
        Problem::from(StoreError::new(
            ErrorKind::Internal,
            format!("upload {id}: its record cannot be read: {e}"),
        ))
    })?;
    Ok(Some(Record { raw, up }))
}

/// Replaces `old` by `new` if nobody changed it meanwhile; the new record when it did.
async fn swap(store: &Records, id: &str, old: &Record, new: TusUpload) -> Result<Option<Record>> {
    let raw = serde_json::to_vec(&new).expect("a record serialises");
    if store
        .record_swap(TABLE, id, Some(&old.raw), &raw, record_expiry(&new))
        .await?
    {
        Ok(Some(Record { raw, up: new }))
    } else {
        Ok(None)
    }
}

fn gone(id: &str) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "no-such-upload",
        format!("there is no upload {id}: it never existed, was terminated, or expired long ago; start a new one with POST /api/v1/uploads"),
    )
}

/// The upload `id` of the logged-in user; another user's upload is not found, an expired one gone.
async fn lookup(fs: &UserFs, store: &Records, id: &str) -> Result<Record> {
    if !valid_id(id) {
        return Err(gone(id));
    }
    let rec = load(store, id).await?.ok_or_else(|| gone(id))?;
    if rec.up.user != fs.user() {
        return Err(gone(id));
    }
    if rec.up.state != UploadState::Done && rec.up.expires_ms <= now_ms() {
        return Err(Problem::new(
            StatusCode::GONE,
            "upload-expired",
            format!(
                "upload {id} expired (http.upload_expiry) before it was finished; start a new one"
            ),
        ));
    }
    Ok(rec)
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Takes the upload's write lease, waiting up to `LOCK_WAIT` for a request that holds it.
async fn acquire(fs: &UserFs, store: &Records, id: &str, holder: &str) -> Result<Record> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let rec = lookup(fs, store, id).await?;
        let now = now_ms();
        if rec.up.lock.as_ref().is_none_or(|l| l.until_ms <= now) {
            let mut up = rec.up.clone();
            up.lock = Some(Lock {
                holder: holder.to_string(),
                until_ms: now + LEASE.as_millis() as u64,
            });
            if let Some(rec) = swap(store, id, &rec, up).await? {
                return Ok(rec);
            }
            continue;
        }
        if Instant::now() >= deadline {
            return Err(locked(id));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn locked(id: &str) -> Problem {
    Problem::new(
        StatusCode::LOCKED,
        "upload-locked",
        format!("another request is writing upload {id}; ask HEAD for the offset and try again"),
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from(1u64))
}

/// Waits (up to `LOCK_WAIT`) until no request writes the upload, for an offset that holds.
async fn settled(fs: &UserFs, store: &Records, id: &str) -> Result<Record> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let rec = lookup(fs, store, id).await?;
        if rec.up.lock.as_ref().is_none_or(|l| l.until_ms <= now_ms()) || Instant::now() >= deadline
        {
            return Ok(rec);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Changes the record while `holder` holds it (`None` as holder: whoever does); retried on races.
async fn update(
    store: &Records,
    id: &str,
    holder: &str,
    change: impl Fn(&mut TusUpload),
) -> Result<TusUpload> {
    loop {
        let rec = load(store, id).await?.ok_or_else(|| gone(id))?;
        if rec.up.lock.as_ref().map(|l| l.holder.as_str()) != Some(holder) {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "upload-lock-lost",
                format!("upload {id} was taken over by another request while this one ran"),
            ));
        }
        let mut up = rec.up.clone();
        change(&mut up);
        if let Some(rec) = swap(store, id, &rec, up).await? {
            return Ok(rec.up);
        }
    }
}

/// Lets go of the lease (best effort: it runs out by itself).
async fn release(store: &Records, id: &str, holder: &str) {
    if let Err(e) = update(store, id, holder, |up| up.lock = None).await {
        tracing::debug!(upload = id, error = %e.detail, "tus: lease not released");
    }
}

/// The bytes committed so far: the staging file's size.
async fn offset(fs: &UserFs, id: &str, up: &TusUpload) -> Result<u64> {
    if up.state == UploadState::Done {
        return Ok(up.length);
    }
    match fs.stat_staging(id).await {
        Ok(m) => Ok(m.size),
        // Published (the rename happened, the record had not been told yet) or never written.
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(match up.state {
            UploadState::Publishing => up.length,
            _ => 0,
        }),
        Err(e) => Err(e.into()),
    }
}

fn tus_headers(response: &mut Response) {
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
}

/// Every request but OPTIONS names the protocol version it speaks.
fn check_version(headers: &HeaderMap) -> Result<()> {
    match headers.get(&TUS_RESUMABLE).and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        other => Err(Problem::new(
            StatusCode::PRECONDITION_FAILED,
            "tus-version",
            format!(
                "this endpoint speaks tus {TUS_VERSION}: send Tus-Resumable: {TUS_VERSION} (got {})",
                other.unwrap_or("none")
            ),
        )
        .with_header(HeaderName::from_static("tus-version"), HeaderValue::from_static(TUS_VERSION))),
    }
}

fn number(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Some)
            .ok_or_else(|| {
                Problem::bad_request(format!("{name} must be a non-negative whole number"))
            }),
    }
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (the value may be absent).
fn parse_metadata(text: &str) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, encoded) = match pair.split_once(' ') {
            Some((k, v)) => (k, Some(v.trim())),
            None => (pair, None),
        };
        let decoded = match encoded {
            None => None,
            Some(v) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        Problem::bad_request(format!(
                            "Upload-Metadata: the value of {key:?} is not base64 of UTF-8 text"
                        ))
                    })?,
            ),
        };
        out.push((key.to_string(), decoded));
    }
    Ok(out)
}

/// The target named by the metadata: `path` (relative to the home), else `filename` in the home.
fn target_of(fs: &UserFs, metadata: &[(String, Option<String>)]) -> Result<UserPath> {
    let get = |k: &str| {
        metadata
            .iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.as_deref())
            .filter(|v| !v.is_empty())
    };
    if let Some(path) = get("path") {
        return plain_path(fs, path);
    }
    if let Some(name) = get("filename") {
        // A bare name, even if a browser sent a Windows path or the client a relative one.
        let name = name.rsplit(['/', '\\']).next().unwrap_or(name);
        return plain_path(fs, name);
    }
    Err(Problem::bad_request(
        "Upload-Metadata must name the target: `path` (relative to your home) or `filename`",
    ))
}

/// `OPTIONS /api/v1/uploads`: what this server speaks.
#[utoipa::path(options, path = "/api/v1/uploads", tag = "uploads",
    // tus discovery: a client asks what the server speaks before it logs anything in.
    security(()),
    responses((status = 204, description = "tus capabilities in Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm")))]
pub async fn options(State(api): State<Shared>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    h.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    h.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static("sha1,sha256"),
    );
    if api.max_file_size > 0 {
        h.insert("tus-max-size", HeaderValue::from(api.max_file_size));
    }
    tus_headers(&mut response);
    response
}

/// `POST /api/v1/uploads`: creates an upload of `Upload-Length` bytes for the target the
/// metadata names; with a body (`Content-Type: application/offset+octet-stream`) the body is its
/// first bytes.
#[utoipa::path(post, path = "/api/v1/uploads", tag = "uploads",
    responses((status = 201, description = "created; Location is the upload's URL"),
              (status = 409, description = "the target's state forbids it", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 412, description = "no or another Tus-Resumable (the answer names 1.0.0)", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 413, description = "larger than storage.max_file_size or the quota", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 415, description = "a body that is not application/offset+octet-stream", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 423, description = "the upload is being written", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 507, description = "the quota is used up", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              super::openapi::Errors))]
pub async fn create(
    State(api): State<Shared>,
    session: Session,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let fs = &session.fs;
    check_version(&headers)?;
    if headers.contains_key("upload-defer-length") {
        return Err(Problem::bad_request(
            "Upload-Defer-Length is not supported: send Upload-Length",
        ));
    }
    let length = number(&headers, &UPLOAD_LENGTH)?.ok_or_else(|| {
        Problem::bad_request("Upload-Length is missing: say how many bytes the upload has")
    })?;
    let metadata_text = headers
        .get(&UPLOAD_METADATA)
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| Problem::bad_request("Upload-Metadata is not ASCII"))
        })
        .transpose()?
        .unwrap_or_default();
    if metadata_text.len() > MAX_METADATA {
        return Err(Problem::bad_request(format!(
            "Upload-Metadata is longer than {MAX_METADATA} bytes"
        )));
    }
    let target = target_of(fs, &parse_metadata(&metadata_text)?)?;
    if !fs.can(Permission::Write) {
        return Err(StoreError::new(
            ErrorKind::PermissionDenied,
            format!("permission denied: {} may not upload files", fs.user()),
        )
        .into());
    }
    // Refused before any byte: too large, no directory to put it in, a directory in the way.
    too_large(fs, &target, api.max_file_size, length).await?;
    match fs.stat(&target.parent()).await {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(StoreError::new(
                ErrorKind::NotADirectory,
                format!("{} is a file, not a directory", target.parent()),
            )
            .into())
        }
        Err(e) => return Err(e.into()),
    }
    if let Ok(m) = fs.stat(&target).await {
        if m.is_dir() {
            return Err(StoreError::new(
                ErrorKind::IsADirectory,
                format!("{target} is a directory"),
            )
            .into());
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let expires_ms = now_ms() + api.upload_expiry.as_millis() as u64;
    let up = TusUpload {
        user: fs.user().to_string(),
        target: target.as_str().to_string(),
        length,
        metadata: metadata_text,
        expires_ms,
        state: UploadState::Open,
        lock: None,
    };
    let raw = serde_json::to_vec(&up).expect("a record serialises");
    let store = &api.access.records();
    if !store
        .record_swap(TABLE, &id, None, &raw, record_expiry(&up))
        .await?
    {
        return Err(StoreError::new(ErrorKind::Internal, "a fresh upload id was taken").into());
    }
    tracing::info!(user = fs.user(), upload = %id, target = %target, length, "tus: upload created");
    let with_body = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(OFFSET_STREAM.as_bytes()));
    let mut offset_now = None;
    if length == 0 {
        // Nothing to wait for: the (empty) file is published at once.
        fs.open_staging(&id, &target).await?.commit(None).await?;
        offset_now = Some(locked_write(&api, fs, &id, 0, &headers, Body::empty()).await?);
    } else if with_body {
        offset_now = Some(locked_write(&api, fs, &id, 0, &headers, body).await?);
    }
    let mut response = StatusCode::CREATED.into_response();
    let h = response.headers_mut();
    h.insert(header::LOCATION, value(&format!("/api/v1/uploads/{id}")));
    h.insert(UPLOAD_EXPIRES, value(&httpdate(from_ms(expires_ms))));
    if let Some(o) = offset_now {
        h.insert(UPLOAD_OFFSET, HeaderValue::from(o));
    }
    tus_headers(&mut response);
    Ok(response)
}

/// `HEAD /api/v1/uploads/{id}`: how many bytes the upload has.
#[utoipa::path(head, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(("id" = String, Path, description = "upload id")),
    responses((status = 200, description = "Upload-Offset and Upload-Length"),
              (status = 410, description = "expired", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 412, description = "no or another Tus-Resumable (the answer names 1.0.0)", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 423, description = "the upload is being written", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              super::openapi::Errors))]
pub async fn head_upload(
    State(api): State<Shared>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let fs = &session.fs;
    check_version(&headers)?;
    let store = &api.access.records();
    let rec = settled(fs, store, &id).await?;
    let offset = offset(fs, &id, &rec.up).await?;
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    h.insert(UPLOAD_LENGTH, HeaderValue::from(rec.up.length));
    if !rec.up.metadata.is_empty() {
        h.insert(UPLOAD_METADATA, value(&rec.up.metadata));
    }
    if rec.up.state != UploadState::Done {
        h.insert(UPLOAD_EXPIRES, value(&httpdate(from_ms(rec.up.expires_ms))));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    tus_headers(&mut response);
    Ok(response)
}

/// `PATCH /api/v1/uploads/{id}`: the bytes from `Upload-Offset` on.
#[utoipa::path(patch, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(("id" = String, Path, description = "upload id")),
    request_body(content = Vec<u8>, content_type = "application/offset+octet-stream"),
    responses((status = 204, description = "stored; Upload-Offset is the new offset"),
              (status = 409, description = "Upload-Offset is not the upload's offset"),
              (status = 415, description = "not application/offset+octet-stream"),
              (status = 460, description = "Upload-Checksum does not match; the bytes were dropped", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 410, description = "expired", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 412, description = "no or another Tus-Resumable (the answer names 1.0.0)", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 413, description = "past Upload-Length", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 423, description = "the upload is being written", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 507, description = "the quota is used up", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              super::openapi::Errors))]
pub async fn patch_upload(
    State(api): State<Shared>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let fs = &session.fs;
    check_version(&headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with(OFFSET_STREAM) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("a PATCH carries Content-Type: {OFFSET_STREAM} (got {content_type:?})"),
        ));
    }
    let client_offset = number(&headers, &UPLOAD_OFFSET)?
        .ok_or_else(|| Problem::bad_request("Upload-Offset is missing"))?;
    // A checksum that cannot be checked is refused before the lock is even taken.
    checksum(&headers)?;
    let offset = locked_write(&api, fs, &id, client_offset, &headers, body).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(UPLOAD_OFFSET, HeaderValue::from(offset));
    tus_headers(&mut response);
    Ok(response)
}

/// `DELETE /api/v1/uploads/{id}`: gives the upload up; its bytes are dropped.
#[utoipa::path(delete, path = "/api/v1/uploads/{id}", tag = "uploads",
    params(("id" = String, Path, description = "upload id")),
    responses((status = 204, description = "terminated"),
              (status = 410, description = "expired", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 412, description = "no or another Tus-Resumable (the answer names 1.0.0)", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 423, description = "the upload is being written", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              super::openapi::Errors))]
pub async fn terminate(
    State(api): State<Shared>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let fs = &session.fs;
    check_version(&headers)?;
    let store = &api.access.records();
    let holder = uuid::Uuid::new_v4().to_string();
    let rec = acquire(fs, store, &id, &holder).await?;
    if rec.up.state == UploadState::Open {
        fs.drop_staging(&id).await?;
    }
    store.record_delete(TABLE, &id).await?;
    tracing::info!(user = fs.user(), upload = %id, "tus: upload terminated");
    let mut response = StatusCode::NO_CONTENT.into_response();
    tus_headers(&mut response);
    Ok(response)
}

/// A checksum to check a PATCH's bytes against.
enum Checksum {
    Sha1(sha1::Sha1, Vec<u8>),
    Sha256(sha2::Sha256, Vec<u8>),
}

impl Checksum {
    fn update(&mut self, data: &[u8]) {
        match self {
            Checksum::Sha1(h, _) => h.update(data),
            Checksum::Sha256(h, _) => sha2::Digest::update(h, data),
        }
    }

    fn matches(self) -> bool {
        match self {
            Checksum::Sha1(h, want) => h.finalize().as_slice() == want.as_slice(),
            Checksum::Sha256(h, want) => sha2::Digest::finalize(h).as_slice() == want.as_slice(),
        }
    }
}

/// `Upload-Checksum: <algorithm> <base64 digest>`.
fn checksum(headers: &HeaderMap) -> Result<Option<Checksum>> {
    let Some(v) = headers.get(&UPLOAD_CHECKSUM) else {
        return Ok(None);
    };
    let bad = || {
        Problem::bad_request(
            "Upload-Checksum must be `sha1 <base64 digest>` or `sha256 <base64 digest>`",
        )
    };
    let text = v.to_str().map_err(|_| bad())?;
    let (alg, encoded) = text.trim().split_once(' ').ok_or_else(bad)?;
    let digest = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    match alg.to_ascii_lowercase().as_str() {
        "sha1" if digest.len() == 20 => Ok(Some(Checksum::Sha1(sha1::Sha1::new(), digest))),
        "sha256" if digest.len() == 32 => Ok(Some(Checksum::Sha256(
            <sha2::Sha256 as sha2::Digest>::new(),
            digest,
        ))),
        "sha1" | "sha256" => Err(bad()),
        other => Err(Problem::bad_request(format!(
            "Upload-Checksum algorithm {other:?} is not supported; use sha1 or sha256"
        ))),
    }
}

/// Takes the upload's lease, writes the body, lets go. In a task of its own: when the client
/// vanishes hyper may drop the handler, but what arrived must still be committed, the file
/// published if it is whole, and the lease given back (else the resuming client would wait for
/// the lease to run out).
async fn locked_write(
    api: &Shared,
    fs: &UserFs,
    id: &str,
    client_offset: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<u64> {
    let (api, fs, id, headers) = (api.clone(), fs.clone(), id.to_string(), headers.clone());
    let task = tokio::spawn(async move {
        let store = api.access.records();
        let holder = uuid::Uuid::new_v4().to_string();
        let rec = acquire(&fs, &store, &id, &holder).await?;
        let result = write(
            &api,
            &fs,
            &store,
            &id,
            &holder,
            rec,
            client_offset,
            &headers,
            body,
        )
        .await;
        release(&store, &id, &holder).await;
        result
    });
    task.await.map_err(|e| {
        Problem::from(StoreError::new(
            ErrorKind::Internal,
            format!("the upload task failed: {e}"),
        ))
    })?
}

/// Appends the body at `client_offset` (the lease held), publishes the file when it is whole,
/// and returns the new offset.
#[allow(clippy::too_many_arguments)]
async fn write(
    api: &Shared,
    fs: &UserFs,
    store: &Records,
    id: &str,
    holder: &str,
    rec: Record,
    client_offset: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<u64> {
    let up = rec.up;
    let target = plain_path(fs, &up.target)?;
    let current = offset(fs, id, &up).await?;
    if client_offset != current {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "offset-mismatch",
            format!("Upload-Offset is {client_offset} but the upload has {current} bytes; ask HEAD and send from there"),
        )
        .with_header(UPLOAD_OFFSET, HeaderValue::from(current)));
    }
    let room = up.length - current;
    if super::api::content_length(headers).is_some_and(|n| n > room) {
        super::api::discard(headers, body).await;
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload-too-long",
            format!("the body would pass Upload-Length: {room} bytes are left to send"),
        ));
    }
    if current == up.length {
        // Whole already: finish what an earlier request may have left half done.
        if up.state != UploadState::Done {
            publish(fs, store, id, holder, &target).await?;
        }
        return Ok(current);
    }
    let sum = checksum(headers)?;
    let upload = fs.open_staging(id, &target).await?;
    let received = receive(
        upload,
        body,
        room,
        sum,
        store.clone(),
        id.to_string(),
        holder.to_string(),
        api.abort_sessions.clone(),
    )
    .await?;
    let now = current + received;
    if now == up.length {
        publish(fs, store, id, holder, &target).await?;
    } else if received > 0 {
        // An upload that moves is not abandoned: its expiry starts again.
        let expires = now_ms() + api.upload_expiry.as_millis() as u64;
        update(store, id, holder, |up| up.expires_ms = expires).await?;
    }
    Ok(now)
}

/// Streams a PATCH body onto the staging file: at most `room` bytes. Committed (flagged
/// incomplete, or complete when it reaches the end) when it ends or breaks off; dropped when its
/// checksum does not match or cannot be checked.
#[allow(clippy::too_many_arguments)]
async fn receive(
    mut upload: Upload,
    body: Body,
    room: u64,
    mut sum: Option<Checksum>,
    store: Records,
    id: String,
    holder: String,
    abort: CancellationToken,
) -> Result<u64> {
    let mut data = body.into_data_stream();
    let mut received = 0u64;
    let mut renew =
        tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
    let broke = loop {
        let piece = tokio::select! {
            piece = data.next() => piece,
            _ = renew.tick() => {
                let until = now_ms() + LEASE.as_millis() as u64;
                if let Err(e) = update(&store, &id, &holder, |up| {
                    if let Some(l) = &mut up.lock { l.until_ms = until }
                }).await {
                    upload.abort().await.ok();
                    return Err(e);
                }
                continue;
            }
            _ = abort.cancelled() => Some(Err(axum::Error::new("the gateway is shutting down"))),
        };
        match piece {
            None => break None,
            Some(Ok(bytes)) => {
                if received + bytes.len() as u64 > room {
                    upload.abort().await.ok();
                    return Err(Problem::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "upload-too-long",
                        format!("the body passes Upload-Length: only {room} more bytes were expected; nothing of it was kept"),
                    ));
                }
                if let Some(s) = &mut sum {
                    s.update(&bytes);
                }
                if let Err(e) = upload.append(&bytes).await {
                    upload.abort().await.ok();
                    return Err(e.into());
                }
                received += bytes.len() as u64;
            }
            Some(Err(e)) => break Some(e),
        }
    };
    let checked = sum.is_some();
    let matches = broke.is_none() && sum.is_none_or(Checksum::matches);
    match broke {
        None if !matches => {
            upload.abort().await?;
            Err(Problem::new(
                StatusCode::from_u16(460).expect("460 is a valid status"),
                "checksum-mismatch",
                "the body does not match Upload-Checksum; its bytes were dropped, send them again",
            ))
        }
        None => {
            if received > 0 {
                if received == room {
                    upload.commit(None).await?;
                } else {
                    upload.commit_incomplete().await?;
                }
            } else {
                upload.abort().await?;
            }
            Ok(received)
        }
        Some(e) => {
            // What arrived is kept for the client to resume from, unless it was to be checked.
            if received > 0 && !checked {
                tracing::info!(upload = %id, received, error = %e, "tus: PATCH cut off; the bytes that arrived are kept");
                upload.commit_incomplete().await?;
            } else {
                upload.abort().await?;
            }
            Err(Problem::bad_request(format!(
                "the request body broke off ({e}); ask HEAD for the offset and resume"
            )))
        }
    }
}

/// Renames the whole staging file onto the target: the one visible change, with its one event.
async fn publish(
    fs: &UserFs,
    store: &Records,
    id: &str,
    holder: &str,
    target: &UserPath,
) -> Result<()> {
    update(store, id, holder, |up| up.state = UploadState::Publishing).await?;
    match fs.stat_staging(id).await {
        Ok(m) if !m.complete => {
            // Whole but committed as incomplete (its last bytes came in a request that broke
            // off right at the end): commit it complete first.
            let upload = fs.open_staging(id, target).await?;
            upload.commit(None).await?;
        }
        Ok(_) => {}
        // Already renamed by an earlier request that did not get to record it.
        Err(e) if e.kind() == ErrorKind::NotFound => {
            update(store, id, holder, |up| up.state = UploadState::Done).await?;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    fs.publish_staging(id, target, true).await?;
    update(store, id, holder, |up| up.state = UploadState::Done).await?;
    tracing::info!(user = fs.user(), upload = id, target = %target, "tus: upload complete");
    Ok(())
}

/// The expiry pass: uploads left unfinished past `http.upload_expiry` are given up, in the same
/// way as an FTP upload that was cut off. With `storage.partial_uploads = "keep"` the bytes that
/// arrived appear at the target flagged incomplete and are announced as `file.incomplete`
/// (unless a file is there: it is not replaced by a fragment); with `"discard"` they are dropped.
/// Runs until `stop`; any gateway may do it (each upload is claimed through its record first).
pub async fn expire_loop(api: Shared, stop: CancellationToken) {
    let period = (api.upload_expiry / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if let Err(e) = expire_once(&api, &stop).await {
            tracing::warn!(error = %e.detail, "tus: the expiry pass failed; it runs again later");
        }
    }
}

/// One pass over the uploads; returns how many were given up.
pub async fn expire_once(api: &Shared, stop: &CancellationToken) -> Result<usize> {
    let store = &api.access.records();
    let mut after: Option<String> = None;
    let mut ended = 0;
    loop {
        let page = store.record_list(TABLE, after.as_deref(), 100).await?;
        let Some((last, _)) = page.last() else {
            return Ok(ended);
        };
        after = Some(last.clone());
        for (id, raw) in page {
            if stop.is_cancelled() {
                return Ok(ended);
            }
            let Ok(up) = serde_json::from_slice::<TusUpload>(&raw) else {
                continue;
            };
            let now = now_ms();
            if up.expires_ms > now || up.lock.as_ref().is_some_and(|l| l.until_ms > now) {
                continue;
            }
            let rec = Record { raw, up };
            if rec.up.state == UploadState::Done {
                store.record_delete(TABLE, &id).await?;
                continue;
            }
            // Claimed by the lease, so no request and no other gateway works on it meanwhile.
            let holder = format!("expiry-{}", uuid::Uuid::new_v4());
            let mut claimed = rec.up.clone();
            claimed.lock = Some(Lock {
                holder: holder.clone(),
                until_ms: now + LEASE.as_millis() as u64,
            });
            let Some(rec) = swap(store, &id, &rec, claimed).await? else {
                continue;
            };
            if let Err(e) = give_up(api, store, &id, &holder, &rec.up).await {
                tracing::warn!(upload = %id, error = %e.detail, "tus: an expired upload could not be ended; tried again later");
                release(store, &id, &holder).await;
                continue;
            }
            ended += 1;
        }
    }
}

async fn give_up(
    api: &Shared,
    store: &Records,
    id: &str,
    holder: &str,
    up: &TusUpload,
) -> Result<()> {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let fs = api
        .access
        .session_for(&up.user, Protocol::Http, peer)
        .await?;
    let target = plain_path(&fs, &up.target)?;
    if up.state == UploadState::Publishing {
        // Every byte had come; only the rename was left.
        publish(&fs, store, id, holder, &target).await?;
    } else {
        let staged = match fs.stat_staging(id).await {
            Ok(m) => m.size,
            Err(e) if e.kind() == ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        let placed = staged > 0
            && fs.keeps_partial_uploads()
            && match fs.publish_staging(id, &target, false).await {
                Ok(()) => true,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::AlreadyExists | ErrorKind::NotFound | ErrorKind::NotADirectory
                    ) =>
                {
                    false
                }
                Err(e) => return Err(e.into()),
            };
        if !placed {
            fs.drop_staging(id).await?;
        }
        tracing::info!(user = %up.user, upload = id, target = %up.target, received = staged, kept = placed, "tus: unfinished upload expired");
    }
    store.record_delete(TABLE, id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs() {
        let m = parse_metadata(
            "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential, path YS9iLmJpbg==",
        )
        .unwrap();
        assert_eq!(
            m,
            [
                ("filename".into(), Some("world_domination_plan.pdf".into())),
                ("is_confidential".into(), None),
                ("path".into(), Some("a/b.bin".into())),
            ]
        );
        assert!(parse_metadata("filename !!!").is_err());
        assert!(parse_metadata("").unwrap().is_empty());
    }

    #[test]
    fn checksums() {
        let mut h = HeaderMap::new();
        // sha1("abc")
        h.insert(
            UPLOAD_CHECKSUM,
            HeaderValue::from_static("sha1 qZk+NkcGgWq6PiVxeFDCbJzQ2J0="),
        );
        let mut c = checksum(&h).unwrap().unwrap();
        c.update(b"abc");
        assert!(c.matches());
        let mut c = checksum(&h).unwrap().unwrap();
        c.update(b"abd");
        assert!(!c.matches());
        h.insert(
            UPLOAD_CHECKSUM,
            HeaderValue::from_static("md5 kAFQmDzST7DWlj99KOF/cg=="),
        );
        assert!(matches!(checksum(&h), Err(p) if p.status == StatusCode::BAD_REQUEST));
        h.insert(
            UPLOAD_CHECKSUM,
            HeaderValue::from_static("sha256 qZk+NkcGgWq6PiVxeFDCbJzQ2J0="),
        );
        assert!(checksum(&h).is_err());
    }

    #[test]
    fn ids() {
        assert!(valid_id(&uuid::Uuid::new_v4().simple().to_string()));
        assert!(!valid_id("../../etc"));
        assert!(!valid_id(""));
    }
}
