//! Transfers beside single files: folders and selections as one streamed ZIP, browser uploads
//! (`multipart/form-data`), sorted listings, search by name, batch delete and usage.
//! `docs/http.md` has the client's view.

use std::cmp::Ordering as CmpOrdering;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::json;
use storage_backend::{DirEntry, ErrorKind, OpenOptions, StoreError};
use tokio_util::sync::CancellationToken;

use super::api::{
    checked_name, content_length, json_response, param, plain_path, query, remove_tree, target,
    value, Result, Session, Shared, ATTR, MAX_JSON_BODY,
};
use super::errors::Problem;
use crate::access::{UserFs, UserPath};
use crate::config::Permission;

/// Entries a listing sorted by anything but name (ascending) may have: it is sorted in memory.
pub const MAX_SORTED: usize = 10_000;
/// Entries one ZIP may hold: its central directory stays in memory until the end (~100 bytes
/// plus the name per entry).
pub const MAX_ZIP_ENTRIES: usize = 100_000;
/// Entries a search page looks at before it answers (with a cursor to go on from).
pub const SEARCH_BUDGET: usize = 20_000;
/// Paths in one batch delete or ZIP selection.
pub const MAX_BATCH: usize = 1000;
/// The ZIP's pipe between the writer and the response: the most one download holds in memory
/// besides a chunk of the file being read.
const ZIP_PIPE: usize = 256 * 1024;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/api/v1/zip", post(zip_selection))
        .route("/api/v1/search", get(search))
        .route("/api/v1/delete", post(batch_delete))
        .route("/api/v1/usage", get(usage))
}

async fn json_body<T: serde::de::DeserializeOwned>(body: Body, shape: &str) -> Result<T> {
    let bytes = axum::body::to_bytes(body, MAX_JSON_BODY)
        .await
        .map_err(|e| Problem::bad_request(format!("cannot read the request body: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Problem::bad_request(format!("the body must be JSON {shape}: {e}")))
}

fn entry_json(path: &UserPath, e: &DirEntry) -> serde_json::Value {
    let m = &e.metadata;
    let mut v = json!({
        "path": path.as_str(),
        "name": e.name,
        "kind": if m.is_dir() { "dir" } else { "file" },
        "mtime": humantime::format_rfc3339_millis(m.mtime).to_string(),
    });
    if m.is_file() {
        v["size"] = json!(m.size);
    }
    v
}

// --- Sorted listings ---

/// `GET /api/v1/files/{dir}?sort=size|mtime|name&order=asc|desc`. Name order ascending pages
/// through the store's cursor (any size of directory); every other order sorts in memory, so it
/// is refused (400 `too-many-to-sort`) for a directory of more than [`MAX_SORTED`] entries. Its
/// cursor is the position in the sorted list.
pub async fn list_sorted(
    fs: &UserFs,
    dir: &UserPath,
    q: &[(String, String)],
    temp: &crate::events::TempNames,
) -> Result<Option<Response>> {
    let sort = param(q, "sort").unwrap_or("name");
    let desc = match param(q, "order").unwrap_or("asc") {
        "asc" => false,
        "desc" => true,
        other => {
            return Err(Problem::bad_request(format!(
                "?order={other}: use asc or desc"
            )))
        }
    };
    if !matches!(sort, "name" | "size" | "mtime") {
        return Err(Problem::bad_request(format!(
            "?sort={sort}: use name, size or mtime"
        )));
    }
    if sort == "name" && !desc {
        return Ok(None);
    }
    let limit = super::api::page_limit(q)?;
    let start: usize = match param(q, "cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => c.parse().map_err(|_| {
            Problem::bad_request(format!(
                "?cursor={c}: a sorted listing's cursor is a number it gave"
            ))
        })?,
    };
    let page = fs.list(dir, None, MAX_SORTED).await?;
    if page.next.is_some() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "too-many-to-sort",
            format!("{dir} has more than {MAX_SORTED} entries: it can be listed in name order only (drop ?sort and ?order, and page with ?cursor)"),
        ));
    }
    let mut entries = page.entries;
    let key = |a: &DirEntry, b: &DirEntry| -> CmpOrdering {
        let (ma, mb) = (&a.metadata, &b.metadata);
        let primary = match sort {
            "size" => ma.size.cmp(&mb.size),
            "mtime" => ma.mtime.cmp(&mb.mtime),
            _ => CmpOrdering::Equal,
        };
        // Ties in name order, so pages are stable.
        primary.then_with(|| a.name.cmp(&b.name))
    };
    entries.sort_by(|a, b| if desc { key(b, a) } else { key(a, b) });
    let end = (start + limit).min(entries.len());
    let next = (end < entries.len()).then(|| end.to_string());
    let shown: Vec<_> = entries
        .get(start.min(entries.len())..end)
        .unwrap_or_default()
        .iter()
        .map(|e| super::api::listing_entry(e, temp))
        .collect();
    Ok(Some(json_response(
        StatusCode::OK,
        json!({ "path": dir.as_str(), "entries": shown, "next": next }),
    )))
}

// --- Search ---

/// `GET /api/v1/search?q=TEXT&path=DIR&cursor=…&limit=N`: entries whose name contains TEXT
/// (case-insensitive), depth-first in name order under DIR. One page looks at no more than
/// [`SEARCH_BUDGET`] entries: it may hold fewer than `limit` matches (even none) and still have a
/// `next_cursor`; `next_cursor` is null once the whole tree was searched.
#[utoipa::path(get, path = "/api/v1/search", tag = "files",
    params(("q" = String, Query, description = "text the name contains"),
           ("path" = Option<String>, Query, description = "directory to search (default: home)"),
           ("cursor" = Option<String>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "{entries:[{path,name,kind,size,mtime}], next_cursor}"),
              (status = 409, description = "`path` is a file, not a directory", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              super::openapi::Errors))]
pub async fn search(State(_api): State<Shared>, session: Session, uri: Uri) -> Result<Response> {
    let fs = &session.fs;
    let q = query(&uri)?;
    let text = param(&q, "q").unwrap_or("").to_lowercase();
    if text.is_empty() {
        return Err(Problem::bad_request(
            "?q= is missing: give the text to look for in names",
        ));
    }
    let root = plain_path(fs, param(&q, "path").unwrap_or("/"))?;
    let limit = match param(&q, "limit") {
        None => 100,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(Problem::bad_request(format!(
                    "?limit={v}: give a number from 1 to 1000"
                )))
            }
        },
    };
    if !fs.stat(&root).await?.is_dir() {
        return Err(StoreError::new(
            ErrorKind::NotADirectory,
            format!("{root} is not a directory"),
        )
        .into());
    }
    // The walk's position: a stack of (directory, last name done in it).
    let mut stack: Vec<(UserPath, Option<String>)> =
        match param(&q, "cursor").filter(|c| !c.is_empty()) {
            None => vec![(root.clone(), None)],
            Some(c) => resume(&root, c)?,
        };
    let mut found = Vec::new();
    let mut budget = SEARCH_BUDGET;
    let mut last: Option<(UserPath, bool)> = None;
    while let Some((dir, after)) = stack.last().cloned() {
        if budget == 0 || found.len() >= limit {
            break;
        }
        let page = match fs.list(&dir, after.as_deref(), budget.min(1000)).await {
            Ok(p) => p,
            // Gone since the last page: nothing left in it.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                stack.pop();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let total = page.entries.len();
        let mut used = 0;
        let mut descend = None;
        for e in page.entries {
            used += 1;
            budget -= 1;
            let path = dir.join(&e.name);
            if e.name.to_lowercase().contains(&text) {
                found.push(entry_json(&path, &e));
            }
            let is_dir = e.metadata.is_dir();
            stack.last_mut().expect("a frame").1 = Some(e.name.clone());
            last = Some((path.clone(), is_dir));
            if is_dir {
                descend = Some(path);
                break;
            }
            if found.len() >= limit || budget == 0 {
                break;
            }
        }
        match descend {
            Some(child) => stack.push((child, None)),
            None if used == total && page.next.is_none() => {
                stack.pop();
            }
            None => {}
        }
    }
    let next_cursor = match (stack.is_empty(), last) {
        (true, _) => None,
        (false, Some((path, is_dir))) => Some(cursor_of(&root, &path, is_dir)),
        // Nothing was looked at (a budget of 0 cannot happen): start over from the same place.
        (false, None) => param(&q, "cursor").map(str::to_string),
    };
    Ok(json_response(
        StatusCode::OK,
        json!({ "entries": found, "next_cursor": next_cursor }),
    ))
}

/// A search cursor: the last entry looked at (relative to the search's root) and whether it is a
/// directory still to be entered.
fn cursor_of(root: &UserPath, path: &UserPath, is_dir: bool) -> String {
    let rel = path
        .as_str()
        .strip_prefix(root.as_str())
        .unwrap_or(path.as_str())
        .trim_start_matches('/');
    let raw = format!("{}{rel}", if is_dir { 'd' } else { 'f' });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn resume(root: &UserPath, cursor: &str) -> Result<Vec<(UserPath, Option<String>)>> {
    let bad = || Problem::bad_request("?cursor= is not a cursor this search gave");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (kind, rel) = raw.split_at_checked(1).ok_or_else(bad)?;
    let names: Vec<String> = rel
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| checked_name(s.to_string()))
        .collect::<Result<_>>()?;
    if names.is_empty() {
        return Err(bad());
    }
    let mut stack = Vec::new();
    let mut dir = root.clone();
    for name in &names {
        stack.push((dir.clone(), Some(name.clone())));
        dir = dir.join(name);
    }
    match kind {
        "d" => stack.push((dir, None)),
        "f" => {}
        _ => return Err(bad()),
    }
    Ok(stack)
}

// --- Batch delete and usage ---

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    paths: Vec<String>,
    #[serde(default)]
    recursive: bool,
}

/// `POST /api/v1/delete {"paths": [...], "recursive": false}`: deletes each path on its own (one
/// change and one event each) and says per path how it went: `status` 204, or the status and
/// problem a single DELETE would have had. Directories need `recursive`.
#[utoipa::path(post, path = "/api/v1/delete", tag = "files", request_body = DeleteRequest,
    responses((status = 200, description = "{results:[{path,status,problem?}]}"), super::openapi::Errors))]
pub async fn batch_delete(
    State(_api): State<Shared>,
    session: Session,
    body: Body,
) -> Result<Response> {
    let fs = &session.fs;
    let req: DeleteRequest =
        json_body(body, r#"{"paths": [path, ...], "recursive": bool}"#).await?;
    if req.paths.len() > MAX_BATCH {
        return Err(Problem::bad_request(format!(
            "{} paths: one batch deletes at most {MAX_BATCH}",
            req.paths.len()
        )));
    }
    let mut results = Vec::with_capacity(req.paths.len());
    for text in &req.paths {
        let outcome = match plain_path(fs, text) {
            Ok(path) => delete_one(fs, &path, req.recursive).await,
            Err(p) => Err(p),
        };
        results.push(match outcome {
            Ok(()) => json!({ "path": text, "status": 204 }),
            Err(p) => json!({ "path": text, "status": p.status.as_u16(), "problem": p.body() }),
        });
    }
    Ok(json_response(StatusCode::OK, json!({ "results": results })))
}

async fn delete_one(fs: &UserFs, path: &UserPath, recursive: bool) -> Result<()> {
    let meta = fs.stat(path).await?;
    if meta.is_file() {
        fs.delete(path).await?;
    } else if recursive {
        remove_tree(fs, path).await?;
    } else {
        fs.rmdir(path).await.map_err(|e| {
            if e.kind() == ErrorKind::DirectoryNotEmpty {
                Problem::from(StoreError::new(
                    ErrorKind::DirectoryNotEmpty,
                    format!("{path} is not empty; send \"recursive\": true to delete it with everything in it"),
                ))
            } else {
                e.into()
            }
        })?;
    }
    Ok(())
}

/// `GET /api/v1/usage`: `{"bytes", "files", "quota_bytes", "quota_files"}` (null = unlimited).
#[utoipa::path(get, path = "/api/v1/usage", tag = "files",
    responses((status = 200, description = "{bytes, files, quota_bytes, quota_files}"), super::openapi::Errors))]
pub async fn usage(State(_api): State<Shared>, session: Session) -> Result<Response> {
    let (bytes, files, quota_bytes, quota_files) = session.fs.usage().await?;
    Ok(json_response(
        StatusCode::OK,
        json!({ "bytes": bytes, "files": files, "quota_bytes": quota_bytes, "quota_files": quota_files }),
    ))
}

// --- Multipart uploads ---

/// `POST /api/v1/files/{dir}` with `multipart/form-data`: every part with a file name becomes
/// `{dir}/{filename}`, streamed into the store as it arrives and committed at its end (replacing
/// a file of that name). Answers 201 with a JSON array of what was stored. A part that breaks off
/// is cut off as a PUT is (`storage.partial_uploads`); the parts before it stay.
#[utoipa::path(post, path = "/api/v1/files/{path}", tag = "files",
    params(("path" = String, Path, description = "directory, relative to the home")),
    request_body(content_type = "multipart/form-data"),
    responses((status = 201, description = "[{path,size,sha256,version,created}]"),
              (status = 409, description = "a name is taken by a directory, or the parent is a file", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 413, description = "larger than storage.max_file_size or the quota", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 415, description = "not multipart/form-data", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              (status = 507, description = "the quota is used up", body = super::openapi::ProblemBody, content_type = "application/problem+json"),
              super::openapi::Errors))]
pub async fn upload_form(
    State(api): State<Shared>,
    session: Session,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let fs = session.fs.clone();
    let dir = target(&fs, &uri, "/api/v1/files")?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "POST on a directory takes multipart/form-data (a browser form with file fields); use PUT for a raw body",
        )
    })?;
    if !fs.stat(&dir).await?.is_dir() {
        return Err(StoreError::new(
            ErrorKind::NotADirectory,
            format!("{dir} is not a directory"),
        )
        .into());
    }
    if !fs.can(Permission::Write) {
        return Err(StoreError::new(
            ErrorKind::PermissionDenied,
            format!("permission denied: {} may not upload files", fs.user()),
        )
        .into());
    }
    // The whole request cannot fit in the quota: refused before its body.
    if let (Some(len), (used, Some(quota))) = (content_length(&headers), fs.quota_bytes()) {
        if used.saturating_add(len) > quota {
            return Err(Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "quota-exceeded",
                format!(
                    "the body has {len} bytes; your quota has {} of {quota} bytes left",
                    quota.saturating_sub(used)
                ),
            ));
        }
    }
    let form = multer::Multipart::new(body.into_data_stream(), boundary);
    // In a task of its own, like a PUT: a client that vanishes still gets its upload ended properly.
    let task = tokio::spawn(receive_form(fs, dir, form, api.abort_sessions.clone()));
    let stored = task.await.map_err(|e| {
        Problem::from(StoreError::new(
            ErrorKind::Internal,
            format!("the upload task failed: {e}"),
        ))
    })??;
    Ok(json_response(
        StatusCode::CREATED,
        serde_json::Value::Array(stored),
    ))
}

async fn receive_form(
    fs: UserFs,
    dir: UserPath,
    mut form: multer::Multipart<'static>,
    abort: CancellationToken,
) -> Result<Vec<serde_json::Value>> {
    let broke =
        |e: multer::Error| Problem::bad_request(format!("the form is malformed or broke off: {e}"));
    let mut stored = Vec::new();
    while let Some(mut field) = form.next_field().await.map_err(broke)? {
        let Some(file_name) = field.file_name().map(str::to_string) else {
            // A plain form value, not a file.
            continue;
        };
        // Browsers send the bare name; old ones a whole Windows path.
        let name = file_name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            // An empty file input: the browser sends a part with no name and no bytes.
            continue;
        }
        let path = dir.join(&checked_name(name)?);
        let mut upload = fs.open_write(&path, OpenOptions::REPLACE).await?;
        loop {
            let piece = tokio::select! {
                piece = field.chunk() => piece,
                _ = abort.cancelled() => {
                    upload.cut_off().await?;
                    return Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting-down",
                        "the gateway shut down during the upload; it is not complete"));
                }
            };
            match piece {
                Ok(Some(bytes)) => {
                    if let Err(e) = upload.append(&bytes).await {
                        upload.abort().await.ok();
                        return Err(e.into());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(user = fs.user(), path = %path, error = %e, "http: form upload cut off");
                    upload.cut_off().await?;
                    return Err(broke(e));
                }
            }
        }
        let info = upload.commit(None).await?;
        stored.push(json!({
            "path": path.as_str(),
            "size": info.size,
            "sha256": info.sha256,
            "version": info.version,
            "created": info.created,
        }));
    }
    Ok(stored)
}

// --- ZIP downloads ---

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ZipRequest {
    paths: Vec<String>,
    /// The download's file name (default `download.zip`).
    #[serde(default)]
    name: Option<String>,
}

/// `POST /api/v1/zip {"paths": [...], "name": "x.zip"}`: the files and folders named, as one ZIP.
#[utoipa::path(post, path = "/api/v1/zip", tag = "files", request_body = ZipRequest,
    responses((status = 200, description = "application/zip, streamed", content_type = "application/zip"), super::openapi::Errors))]
pub async fn zip_selection(
    State(_api): State<Shared>,
    session: Session,
    body: Body,
) -> Result<Response> {
    let req: ZipRequest = json_body(body, r#"{"paths": [path, ...], "name": "x.zip"}"#).await?;
    if req.paths.is_empty() || req.paths.len() > MAX_BATCH {
        return Err(Problem::bad_request(format!("name 1 to {MAX_BATCH} paths")));
    }
    let fs = &session.fs;
    let mut roots = Vec::new();
    for p in &req.paths {
        let path = plain_path(fs, p)?;
        let meta = fs.stat(&path).await?;
        let name = path.file_name().unwrap_or("home").to_string();
        roots.push((path, name, meta.is_dir()));
    }
    let name = req.name.unwrap_or_else(|| "download.zip".into());
    Ok(zip_response(session, roots, &name))
}

/// `GET /api/v1/files/{dir}?download=zip`: the folder as one ZIP (entries relative to it).
pub async fn zip_dir(session: Session, dir: UserPath) -> Result<Response> {
    let name = format!("{}.zip", dir.file_name().unwrap_or("home"));
    let roots = vec![(dir, String::new(), true)];
    Ok(zip_response(session, roots, &name))
}

/// Streams the ZIP of `roots` (path, name in the archive, is a directory): written by a task into
/// a small pipe the response reads from, so memory stays bounded whatever the size. Entries are
/// stored (not compressed), with data descriptors and ZIP64 fields, UTF-8 names flagged. A
/// failure midway ends the response with an error (the client sees a broken transfer, never a
/// short archive that looks whole).
fn zip_response(session: Session, roots: Vec<(UserPath, String, bool)>, name: &str) -> Response {
    let (writer, reader) = tokio::io::duplex(ZIP_PIPE);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<std::result::Result<(), String>>();
    tokio::spawn(async move {
        // The session (and its connection slot) lasts as long as the download.
        let fs = session.fs.clone();
        let result = write_zip(&fs, roots, writer).await;
        if let Err(e) = &result {
            tracing::info!(user = fs.user(), error = %e, "http: zip download ended early");
        }
        let _ = done_tx.send(result);
        drop(session);
    });
    let tail = futures_util::stream::once(async move {
        match done_rx.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Err(std::io::Error::other(e))),
            Err(_) => Some(Err(std::io::Error::other("the zip writer stopped"))),
        }
    })
    .filter_map(|x| async move { x });
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader).chain(tail));
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
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
            percent_encoding::utf8_percent_encode(name, ATTR)
        )),
    );
    response
}

fn zip_date(t: std::time::SystemTime) -> async_zip::ZipDateTime {
    let d = time::OffsetDateTime::from(t);
    async_zip::ZipDateTimeBuilder::new()
        .year(d.year())
        .month(u8::from(d.month()) as u32)
        .day(d.day() as u32)
        .hour(d.hour() as u32)
        .minute(d.minute() as u32)
        .second(d.second() as u32)
        .build()
}

async fn write_zip(
    fs: &UserFs,
    roots: Vec<(UserPath, String, bool)>,
    writer: tokio::io::DuplexStream,
) -> std::result::Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut zip = async_zip::tokio::write::ZipFileWriter::with_tokio(writer);
    let mut count = 0usize;
    for (root, name, is_dir) in roots {
        if !is_dir {
            count += 1;
            zip_file(fs, &mut zip, &root, &name).await?;
            continue;
        }
        // Depth-first, a page at a time: (directory, its name in the archive, cursor).
        let mut stack = vec![(root, name, None::<String>)];
        while let Some((dir, prefix, after)) = stack.pop() {
            if after.is_none() && !prefix.is_empty() {
                count += 1;
                let entry = async_zip::ZipEntryBuilder::new(
                    format!("{prefix}/").into(),
                    async_zip::Compression::Stored,
                )
                .unix_permissions(0o755);
                zip.write_entry_whole(entry, &[])
                    .await
                    .map_err(|e| err(&e))?;
            }
            let page = fs
                .list(&dir, after.as_deref(), super::api::DEFAULT_PAGE)
                .await
                .map_err(|e| err(&e))?;
            if let Some(next) = page.next.clone() {
                stack.push((dir.clone(), prefix.clone(), Some(next)));
            }
            let mut subdirs = Vec::new();
            for e in page.entries {
                count += 1;
                if count > MAX_ZIP_ENTRIES {
                    return Err(format!(
                        "more than {MAX_ZIP_ENTRIES} entries: download the folder in parts"
                    ));
                }
                let child = dir.join(&e.name);
                let inner = if prefix.is_empty() {
                    e.name.clone()
                } else {
                    format!("{prefix}/{}", e.name)
                };
                if e.metadata.is_dir() {
                    subdirs.push((child, inner, None));
                } else {
                    zip_file(fs, &mut zip, &child, &inner).await?;
                }
            }
            // Popped in name order after this page's files.
            stack.extend(subdirs.into_iter().rev());
        }
    }
    let mut w = zip.close().await.map_err(|e| err(&e))?;
    tokio::io::AsyncWriteExt::shutdown(w.get_mut())
        .await
        .map_err(|e| err(&e))?;
    Ok(())
}

type ZipWriter = async_zip::tokio::write::ZipFileWriter<tokio::io::DuplexStream>;

/// One file into the archive, streamed from the store piece by piece.
async fn zip_file(
    fs: &UserFs,
    zip: &mut ZipWriter,
    path: &UserPath,
    name: &str,
) -> std::result::Result<(), String> {
    use futures_util::AsyncWriteExt as _;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let download = fs.open_read(path).await.map_err(|e| err(&e))?;
    let entry =
        async_zip::ZipEntryBuilder::new(name.to_string().into(), async_zip::Compression::Stored)
            .last_modification_date(zip_date(download.metadata().mtime))
            .unix_permissions(0o644);
    let mut out = zip.write_entry_stream(entry).await.map_err(|e| err(&e))?;
    let mut pieces = download.stream(0);
    while let Some(piece) = pieces.next().await {
        let piece = piece.map_err(|e| err(&e))?;
        out.write_all(&piece).await.map_err(|e| err(&e))?;
    }
    out.close().await.map_err(|e| err(&e))?;
    Ok(())
}
