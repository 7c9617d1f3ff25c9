//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' `#[utoipa::path]`
//! annotations and the bodies' `ToSchema` derives (never written by hand), served at
//! `/api/v1/openapi.json`, printed by `filegate openapi`, committed as `docs/openapi.json` (a test
//! compares the two), and shown by the interactive page `/api/v1/docs` (Swagger UI, vendored in
//! `src/http/swagger-ui/` and compiled into the binary: no CDN, works offline).
//!
//! A new endpoint is one line in `paths(...)` below (and its bodies' schemas are found through it).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

type Shared = std::sync::Arc<super::api::Api>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "filegate",
        description = "The file API of filegate: files and directories in the user's home, with \
            the same users, jail, permissions, quotas, bans and events as FTP, SFTP and MQTT. \
            Log in with HTTP Basic, an API key (`Authorization: Bearer fgk_…`) or the browser \
            session cookie (changes then need `X-CSRF-Token`). See docs/http.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::api::get_file,
        super::api::head_file,
        super::api::put_file,
        super::api::delete_file,
        super::api::make_dir,
        super::api::move_entry,
        super::auth::login,
        super::auth::whoami,
        super::auth::logout,
        super::auth::me,
        super::auth::create_key,
        super::auth::list_keys,
        super::auth::revoke_key,
        super::events::events,
        super::events::events_ws,
        super::uploads::options,
        super::uploads::create,
        super::uploads::head_upload,
        super::uploads::patch_upload,
        super::uploads::terminate,
        super::transfer::search,
        super::transfer::batch_delete,
        super::transfer::usage,
        super::transfer::upload_form,
        super::transfer::zip_selection,
        spec,
    ),
    components(schemas(ProblemBody)),
    modifiers(&SecuritySchemes),
    security(("basic" = []), ("bearer" = []), ("cookie" = [])),
    tags(
        (name = "files", description = "Files and directories in the home"),
        (name = "auth", description = "Browser sessions, API keys, who is logged in"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// An RFC 9457 problem: the body of every error answer (`application/problem+json`).
#[derive(Serialize, ToSchema)]
pub struct ProblemBody {
    /// `urn:filegate:problem:<name>`, a stable name to match on (`not-found`, `csrf`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The status's reason phrase.
    pub title: String,
    pub status: u16,
    /// What went wrong, in words, and what to do.
    pub detail: String,
}

/// The errors every endpoint that logs in may answer.
#[derive(utoipa::IntoResponses)]
pub enum Errors {
    /// A malformed request: a bad path (`..`, `%2f`, NUL, not UTF-8, too long), parameter or body.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(#[to_schema] ProblemBody),
    /// No login, or a wrong password, API key or session (`WWW-Authenticate` says which schemes).
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(#[to_schema] ProblemBody),
    /// The user (or API key) may not do this here, or a browser session's change lacks `X-CSRF-Token` (`csrf`).
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(#[to_schema] ProblemBody),
    /// No such file or directory (or a path outside an API key's scope).
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(#[to_schema] ProblemBody),
    /// Too many failed logins from this address (`Retry-After`).
    #[response(status = 429, content_type = "application/problem+json")]
    Banned(#[to_schema] ProblemBody),
    /// Shutting down, too busy, or the store is unreachable (`Retry-After`).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(#[to_schema] ProblemBody),
}

/// Raw bytes: a file's content.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(#[allow(dead_code)] Vec<u8>);

/// One page of a directory listing.
#[derive(Serialize, ToSchema)]
pub struct Listing {
    /// The directory, from the home (or API key scope) as `/`.
    pub path: String,
    /// Entries in name order.
    pub entries: Vec<ListEntry>,
    /// The `cursor` of the next page; null on the last.
    pub next: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ListEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// RFC 3339 with milliseconds.
    pub mtime: String,
    /// Files only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Files only: changes with every new content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Files only: the content's SHA-256 (hex), null while unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Option<String>>,
    /// Files only: false for an upload that was cut off and kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// Files only: true when the name is one of the gateway's temporary upload names
    /// (`events.temp_patterns`, such as `*.part`): an upload still going on under the name it will
    /// be renamed from. No event announces such a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporary: Option<bool>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    File,
    Dir,
}

/// A stored upload.
#[derive(Serialize, ToSchema)]
pub struct PutResult {
    pub path: String,
    pub size: u64,
    /// SHA-256 of the content (hex); also the `ETag`.
    pub sha256: Option<String>,
    pub version: u64,
}

/// A created directory.
#[derive(Serialize, ToSchema)]
pub struct DirCreated {
    pub path: String,
}

/// A done move.
#[derive(Serialize, ToSchema)]
pub struct MoveResult {
    pub from: String,
    pub to: String,
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                utoipa::openapi::security::HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("fgk_<id>_<secret> (POST /api/v1/keys)")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::auth::COOKIE,
                "The browser session of POST /api/v1/session; changes also need the header \
                 X-CSRF-Token with the session's csrf_token",
            ))),
        );
    }
}

/// The document as JSON, pretty-printed with a final newline (as committed in docs/openapi.json).
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    text.push('\n');
    text
}

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/api/v1/openapi.json", get(spec).fallback(get_only))
        .route("/api/v1/docs", get(docs_page).fallback(get_only))
        .route("/api/v1/docs/", get(docs_page).fallback(get_only))
        .route(
            "/api/v1/docs/swagger-ui-bundle.js",
            get(ui_js).fallback(get_only),
        )
        .route(
            "/api/v1/docs/swagger-ui.css",
            get(ui_css).fallback(get_only),
        )
}

async fn get_only(method: axum::http::Method) -> super::errors::Problem {
    super::auth::only(method, "GET, HEAD").await
}

/// This OpenAPI document (no login needed).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json")))]
pub async fn spec() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOC.get_or_init(document).clone(),
    )
        .into_response()
}

const UI_JS: &[u8] = include_bytes!("swagger-ui/swagger-ui-bundle.js");
const UI_CSS: &[u8] = include_bytes!("swagger-ui/swagger-ui.css");

/// The page loads only these files, from this server: a strict CSP says so to the browser too.
const CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' \
    'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self' data:";

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>filegate API</title>
<link rel="stylesheet" href="/api/v1/docs/swagger-ui.css">
</head>
<body>
<div id="ui"></div>
<script src="/api/v1/docs/swagger-ui-bundle.js"></script>
<script>
// Changes made with a browser session need the session's CSRF token: ask for it once the page
// is loaded (401 = not logged in: use Authorize with Basic or an API key instead).
let csrf = null;
fetch("/api/v1/session", { credentials: "same-origin" })
  .then((r) => (r.ok ? r.json() : null))
  .then((who) => { csrf = who && who.csrf_token; })
  .catch(() => {});
window.ui = SwaggerUIBundle({
  url: "/api/v1/openapi.json",
  dom_id: "#ui",
  deepLinking: true,
  validatorUrl: null,
  persistAuthorization: false,
  requestInterceptor: (req) => {
    if (csrf && !["GET", "HEAD", "OPTIONS"].includes(req.method)) req.headers["X-CSRF-Token"] = csrf;
    return req;
  },
});
</script>
</body>
</html>
"##;

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /api/v1/docs`: the interactive documentation (Swagger UI) of this API.
async fn docs_page() -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        PAGE,
    )
        .into_response()
}

async fn ui_js() -> Response {
    asset("text/javascript; charset=utf-8", UI_JS)
}

async fn ui_css() -> Response {
    asset("text/css; charset=utf-8", UI_CSS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/openapi.json is the document the code generates: a changed handler, body or
    /// annotation fails here until the file is regenerated.
    #[test]
    fn committed_spec_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let generated = document();
        assert!(
            committed == generated,
            "docs/openapi.json differs from the API the code serves; regenerate it with:\n    \
             cargo run -q -- openapi > docs/openapi.json"
        );
    }

    #[test]
    fn document_is_openapi_3_1_with_every_scheme() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let schemes = &doc["components"]["securitySchemes"];
        for s in ["basic", "bearer", "cookie"] {
            assert!(schemes[s].is_object(), "{s}");
        }
        assert!(doc["paths"]["/api/v1/files/{path}"]["put"].is_object());
        assert!(doc["paths"]["/api/v1/keys"]["post"].is_object());
    }
}
