//! The command-line client for scripts and job steps (`filegate wait|events|put|get|ls|rm`): talks
//! to a running gateway's HTTP API (`docs/integrations/cli.md`).
//!
//! Every failure ends in one of the documented exit codes ([`ExitCode`]), decided here in one
//! place from what went wrong, so a job scheduler can map them to job states.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use futures_util::TryStreamExt as _;
use http_body_util::BodyExt as _;
use hyper::{header, Method, StatusCode};
use serde_json::Value;

use crate::http_client::{full, Body, HttpClient, Reply};

/// The exit codes of the client commands. Stable: job definitions depend on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Anything else (the gateway refused the request, a local file could not be read, …).
    Failed = 1,
    /// `wait`: the time ran out.
    Timeout = 3,
    /// `wait`: the time ran out, and a matching upload was cut off meanwhile (kept incomplete).
    Incomplete = 4,
    /// The gateway refused the login (401), the login may not do this (403), or the address is
    /// banned for failed logins (429).
    Auth = 5,
    /// No connection to the gateway.
    Unreachable = 6,
    /// The remote path does not exist.
    NotFound = 7,
    /// `get`: the content received does not match its SHA-256 (ETag).
    Corrupt = 8,
}

/// A client command's failure: what to print, and the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    pub code: ExitCode,
    pub message: String,
}

fn fail(code: ExitCode, message: impl Into<String>) -> ClientError {
    ClientError {
        code,
        message: message.into(),
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// Where the gateway is and who logs in.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The gateway's HTTP listener.
    #[arg(long, env = "FILEGATE_URL", default_value = "http://127.0.0.1:9090")]
    pub url: String,
    /// The [[users]] login.
    #[arg(long, short, env = "FILEGATE_USER")]
    pub user: Option<String>,
    /// A file holding the password (the FILEGATE_PASSWORD variable works too; there is no password
    /// flag, so it never shows in the process list).
    #[arg(long, env = "FILEGATE_PASSWORD_FILE", value_name = "PATH")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// A path glob relative to the login's home: `in/*.csv`, `in/**/orders-*.xml`.
    pub pattern: String,
    /// Give up after this long (`30s`, `15m`, `2h`); without it, wait for ever.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Start after this event seq (the `seq` of the last event processed); default: the oldest
    /// event the history keeps.
    #[arg(long)]
    pub after: Option<u64>,
    /// Only events whose path matches this glob (relative to the login's home).
    #[arg(long)]
    pub path: Option<String>,
    /// Keep following new events after the history (until interrupted).
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// The local file.
    pub local: PathBuf,
    /// Where it goes, relative to the login's home (a directory ending in `/` keeps the name).
    pub remote: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The remote file, relative to the login's home.
    pub remote: String,
    /// Where to write it (`-`: standard output); default: its name in the current directory.
    pub local: Option<PathBuf>,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PathArgs {
    /// A remote path, relative to the login's home.
    #[arg(default_value = "/")]
    pub remote: String,
    #[command(flatten)]
    pub api: ApiArgs,
}

fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}; write e.g. 30s, 15m, 2h"))
}

/// Runs one client command on a runtime of its own.
pub fn run<F, Fut>(api: &ApiArgs, command: F) -> Result<()>
where
    F: FnOnce(Api) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(ExitCode::Failed, format!("cannot start the runtime: {e}")))?;
    let api = Api::new(api)?;
    runtime.block_on(command(api))
}

/// A logged-in view of the gateway's `/api/v1`.
pub struct Api {
    client: HttpClient,
    base: String,
}

impl Api {
    fn new(args: &ApiArgs) -> Result<Api> {
        let base = format!("{}/api/v1", args.url.trim_end_matches('/'));
        let mut client = HttpClient::new(&base)
            .map_err(|e| fail(ExitCode::Failed, format!("--url / FILEGATE_URL: {e}")))?;
        let password = match (&args.password_file, std::env::var("FILEGATE_PASSWORD")) {
            (Some(path), _) => Some(read_password(path)?),
            (None, Ok(p)) => Some(p),
            (None, Err(_)) => None,
        };
        match (&args.user, password) {
            (Some(user), Some(password)) => client = client.with_basic_auth(user, &password),
            (Some(_), None) => {
                return Err(fail(
                    ExitCode::Auth,
                    "no password: set FILEGATE_PASSWORD or --password-file",
                ))
            }
            (None, _) => {
                // Credentials in the URL are enough; without any, say what is missing.
                if !args.url.contains('@') {
                    return Err(fail(
                        ExitCode::Auth,
                        "no login: set --user / FILEGATE_USER and FILEGATE_PASSWORD or --password-file",
                    ));
                }
            }
        }
        Ok(Api { client, base })
    }

    fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        self.client.request(method, Some(path))
    }

    /// Sends a request and reads its (small) reply; maps failures to exit codes.
    async fn call(&mut self, request: hyper::http::request::Builder, body: Body) -> Result<Reply> {
        let request = request
            .body(body)
            .map_err(|e| fail(ExitCode::Failed, format!("bad request: {e}")))?;
        let reply = self
            .client
            .fetch(request, 16 << 20)
            .await
            .map_err(|e| self.unreachable(e))?;
        check(&reply.status, &reply.body)?;
        Ok(reply)
    }

    /// Sends a request whose reply is read as it comes (a stream, a download); an error status is
    /// mapped to its exit code.
    async fn stream(
        &mut self,
        request: hyper::http::request::Builder,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        let request = request
            .body(full(Bytes::new()))
            .map_err(|e| fail(ExitCode::Failed, format!("bad request: {e}")))?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Err(refused(&status, &body))
    }

    fn unreachable(&self, e: String) -> ClientError {
        fail(
            ExitCode::Unreachable,
            format!("the gateway at {} cannot be reached: {e}", self.base),
        )
    }

    async fn json(&mut self, path: &str) -> Result<Value> {
        let reply = self
            .call(self.request(Method::GET, path), full(Bytes::new()))
            .await?;
        serde_json::from_slice(&reply.body)
            .map_err(|e| fail(ExitCode::Failed, format!("unexpected reply to {path}: {e}")))
    }

    /// One page of a directory's listing, after `cursor` (the previous page's `next`).
    async fn listing(&mut self, dir: &str, cursor: Option<&str>) -> Result<Value> {
        let mut path = format!("files/{}?limit=10000", url_path(dir));
        if let Some(c) = cursor {
            path.push_str(&format!(
                "&cursor={}",
                percent_encoding::utf8_percent_encode(c, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
        self.json(&path).await
    }

    /// The store path of the login's `/` (event paths start with it).
    async fn home(&mut self) -> Result<String> {
        let me = self.json("me").await?;
        Ok(me["home"].as_str().unwrap_or("/").to_string())
    }

    /// Every event after `after` (None: from the oldest the history keeps) page by page, then,
    /// with `follow`, the live ones; `each` decides whether to go on.
    async fn events(
        &mut self,
        after: Option<u64>,
        follow: bool,
        mut each: impl FnMut(&Value) -> bool,
    ) -> Result<()> {
        let mut at = after;
        let after = loop {
            let path = match at {
                Some(a) => format!("events?after={a}&limit=1000"),
                None => "events?limit=1000".to_string(),
            };
            let page = self.json(&path).await?;
            for e in page["events"].as_array().into_iter().flatten() {
                if !each(e) {
                    return Ok(());
                }
            }
            // A page may show none of the events it looked at (others' paths): go by next_after.
            let next = page["next_after"].as_u64().unwrap_or(0);
            let last = page["last_seq"].as_u64().unwrap_or(next);
            if next >= last || Some(next) == at {
                break next;
            }
            at = Some(next);
        };
        let mut after = after;
        if !follow {
            return Ok(());
        }
        // Live: Server-Sent Events from `after`, resumed with Last-Event-ID when the stream ends.
        loop {
            let request = self
                .request(Method::GET, "events")
                .header(header::ACCEPT, "text/event-stream")
                .header("last-event-id", after.to_string());
            let mut body = self.stream(request).await?.into_body();
            let mut pending = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                pending.extend_from_slice(data);
                while let Some(end) = find(&pending, b"\n\n") {
                    let message: Vec<u8> = pending.drain(..end + 2).collect();
                    let text = String::from_utf8_lossy(&message);
                    let data: String = text
                        .lines()
                        .filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
                        .collect();
                    if data.is_empty() {
                        continue;
                    }
                    let Ok(json) = serde_json::from_str::<Value>(&data) else {
                        continue;
                    };
                    let seq = json["data"]["seq"].as_u64().unwrap_or(after);
                    after = after.max(seq);
                    if !each(&json) {
                        return Ok(());
                    }
                }
            }
            // The stream ended (the gateway restarts, or this reader lagged): resume.
            self.client.reset();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Maps an error status to its exit code, with the problem's `detail` as the message.
fn check(status: &StatusCode, body: &[u8]) -> Result<()> {
    if status.is_success() || *status == StatusCode::NOT_MODIFIED {
        return Ok(());
    }
    Err(refused(status, body))
}

fn refused(status: &StatusCode, body: &[u8]) -> ClientError {
    let detail = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let code = match status.as_u16() {
        401 | 403 | 429 => ExitCode::Auth,
        404 => ExitCode::NotFound,
        _ => ExitCode::Failed,
    };
    fail(code, format!("the gateway answered {status}: {detail}"))
}

fn read_password(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(
            ExitCode::Failed,
            format!("--password-file {}: {e}", path.display()),
        )
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// `pattern` (relative to the login's `/`) as a glob over store paths under `home`.
fn glob_under(home: &str, pattern: &str) -> Result<globset::GlobMatcher> {
    let absolute = format!(
        "{}/{}",
        home.trim_end_matches('/'),
        pattern.trim_start_matches('/')
    );
    crate::events::webhook::path_glob(&absolute).map_err(|e| fail(ExitCode::Failed, e))
}

/// A store path shown relative to the login's `/`.
fn relative(home: &str, path: &str) -> String {
    let rest = path
        .strip_prefix(home.trim_end_matches('/'))
        .unwrap_or(path);
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

/// Percent-encodes a remote path for the URL, segment by segment.
fn url_path(remote: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    remote
        .trim_start_matches('/')
        .split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// `filegate wait`: prints `PATH SIZE SHA256` of a complete file matching the pattern, as soon as
/// one exists.
pub async fn wait(mut api: Api, args: WaitArgs) -> Result<()> {
    let home = api.home().await?;
    let glob = glob_under(&home, &args.pattern)?;
    let work = async {
        // Where the event stream stands before looking: nothing completed after the look is missed.
        let page = api.json("events?limit=1").await?;
        let start = page["last_seq"].as_u64().unwrap_or(0);
        if let Some(found) = existing(&mut api, &home, &args.pattern, &glob).await? {
            return Ok(Some(found));
        }
        let mut found = None;
        api.events(Some(start), true, |e| {
            let d = &e["data"];
            let path = d["path"].as_str().unwrap_or("");
            let done = glob.is_match(path)
                && d["complete"] != false
                && matches!(
                    e["type"].as_str(),
                    Some("io.filegate.file.created")
                        | Some("io.filegate.file.modified")
                        | Some("io.filegate.file.renamed")
                );
            if done {
                found = Some(format!(
                    "{} {} {}",
                    relative(&home, path),
                    d["size"].as_u64().unwrap_or(0),
                    d["sha256"].as_str().unwrap_or("")
                ));
            }
            !done
        })
        .await?;
        Ok::<_, ClientError>(found)
    };
    let outcome = match args.timeout {
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(r) => r?,
            Err(_) => None,
        },
        None => work.await?,
    };
    match outcome {
        Some(line) => {
            println!("{line}");
            Ok(())
        }
        // Timed out: a matching file that is there but incomplete is an upload that was cut off.
        None => {
            let message = format!(
                "no complete file matching {:?} within {}",
                args.pattern,
                args.timeout
                    .map(crate::config::format_duration)
                    .unwrap_or_default()
            );
            match incomplete_match(&mut api, &args.pattern, &glob, &home).await {
                Some(path) => Err(fail(
                    ExitCode::Incomplete,
                    format!("{message}; {path} is an upload that was cut off (kept incomplete)"),
                )),
                None => Err(fail(ExitCode::Timeout, message)),
            }
        }
    }
}

/// The literal directory a pattern's files are in (up to its first glob character).
fn literal_dir(pattern: &str) -> (String, bool) {
    let pattern = pattern.trim_start_matches('/');
    let first_glob = pattern.find(['*', '?', '[', '{']).unwrap_or(pattern.len());
    let dir = pattern[..first_glob]
        .rsplit_once('/')
        .map(|(d, _)| d)
        .unwrap_or("");
    let nested = pattern[first_glob..].contains('/') || pattern.contains("**");
    (dir.to_string(), nested)
}

/// Every file under the pattern's literal directory (recursively when the glob spans
/// directories), with its listing entry.
async fn files_under(api: &mut Api, home: &str, pattern: &str) -> Result<Vec<(String, Value)>> {
    let (dir, nested) = literal_dir(pattern);
    let mut todo = vec![dir];
    let mut files = Vec::new();
    while let Some(dir) = todo.pop() {
        let mut cursor: Option<String> = None;
        loop {
            let page = match api.listing(&dir, cursor.as_deref()).await {
                Ok(p) => p,
                Err(e) if e.code == ExitCode::NotFound => break,
                Err(e) => return Err(e),
            };
            for entry in page["entries"].as_array().into_iter().flatten() {
                let name = entry["name"].as_str().unwrap_or("");
                let rel = if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                };
                match entry["type"].as_str() {
                    Some("file") => files.push((
                        format!("{}/{rel}", home.trim_end_matches('/')),
                        entry.clone(),
                    )),
                    Some("dir") if nested => todo.push(rel),
                    _ => {}
                }
            }
            match page["next"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => break,
            }
        }
    }
    Ok(files)
}

async fn existing(
    api: &mut Api,
    home: &str,
    pattern: &str,
    glob: &globset::GlobMatcher,
) -> Result<Option<String>> {
    for (path, entry) in files_under(api, home, pattern).await? {
        // A file under a temporary name (the gateway's `events.temp_patterns`, which the listing
        // marks) is an upload still going on, whatever the pattern says.
        if glob.is_match(&path) && entry["complete"] != false && entry["temporary"] != true {
            return Ok(Some(format!(
                "{} {} {}",
                relative(home, &path),
                entry["size"].as_u64().unwrap_or(0),
                entry["sha256"].as_str().unwrap_or("")
            )));
        }
    }
    Ok(None)
}

async fn incomplete_match(
    api: &mut Api,
    pattern: &str,
    glob: &globset::GlobMatcher,
    home: &str,
) -> Option<String> {
    let files = files_under(api, home, pattern).await.ok()?;
    files
        .into_iter()
        .find(|(path, entry)| glob.is_match(path) && entry["complete"] == false)
        .map(|(path, _)| relative(home, &path))
}

/// `filegate events`: the events as JSON lines.
pub async fn events(mut api: Api, args: EventsArgs) -> Result<()> {
    let glob = match &args.path {
        Some(p) => {
            let home = api.home().await?;
            Some(glob_under(&home, p)?)
        }
        None => None,
    };
    let stdout = std::io::stdout();
    let mut failed = None;
    api.events(args.after, args.follow, |e| {
        let path = e["data"]["path"].as_str().unwrap_or("");
        if glob.as_ref().is_none_or(|g| g.is_match(path)) {
            let mut out = stdout.lock();
            if let Err(err) = writeln!(out, "{e}").and_then(|_| out.flush()) {
                failed = Some(err);
                return false;
            }
        }
        true
    })
    .await?;
    match failed {
        // Output closed (`| head`): a normal end for a filter.
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(fail(ExitCode::Failed, format!("writing the events: {e}"))),
        None => Ok(()),
    }
}

/// `filegate put`: uploads a local file (streamed).
pub async fn put(mut api: Api, args: PutArgs) -> Result<()> {
    let file = tokio::fs::File::open(&args.local)
        .await
        .map_err(|e| fail(ExitCode::Failed, format!("{}: {e}", args.local.display())))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut remote = args.remote.clone();
    if remote.ends_with('/') {
        let name = args
            .local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        remote.push_str(&name);
    }
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
        .map_ok(hyper::body::Frame::data);
    let body = http_body_util::StreamBody::new(stream).boxed();
    let request = api
        // Missing directories are made, as job steps expect of `curl --ftp-create-dirs`.
        .request(
            Method::PUT,
            &format!("files/{}?parents=true", url_path(&remote)),
        )
        .header(header::CONTENT_LENGTH, size)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    api.call(request, body).await?;
    Ok(())
}

/// `filegate get`: downloads a file, checking it against its SHA-256 (the ETag).
pub async fn get(mut api: Api, args: GetArgs) -> Result<()> {
    use sha2::Digest as _;
    let request = api.request(Method::GET, &format!("files/{}", url_path(&args.remote)));
    let response = api.stream(request).await?;
    let etag = response
        .headers()
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim_matches('"').to_string());
    let target = match &args.local {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from(
            args.remote.rsplit('/').next().unwrap_or("download"),
        )),
    };
    // Written next to the target and renamed into place once verified: a failed download never
    // leaves a truncated file under the real name.
    let partial = target.as_ref().map(|t| {
        let mut p = t.clone().into_os_string();
        p.push(".filegate-partial");
        PathBuf::from(p)
    });
    let mut out: Box<dyn std::io::Write> = match &partial {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .map_err(|e| fail(ExitCode::Failed, format!("{}: {e}", p.display())))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut hash = sha2::Sha256::new();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| fail(ExitCode::Failed, format!("download cut off: {e}")))?;
        if let Some(data) = frame.data_ref() {
            hash.update(data);
            out.write_all(data)
                .map_err(|e| fail(ExitCode::Failed, format!("writing: {e}")))?;
        }
    }
    out.flush()
        .map_err(|e| fail(ExitCode::Failed, format!("writing: {e}")))?;
    drop(out);
    let got = format!("{:x}", hash.finalize());
    if let Some(want) = etag {
        if want != got {
            if let Some(p) = &partial {
                let _ = std::fs::remove_file(p);
            }
            return Err(fail(
                ExitCode::Corrupt,
                format!(
                    "{}: received content has SHA-256 {got}, the gateway says {want}",
                    args.remote
                ),
            ));
        }
    }
    if let (Some(partial), Some(target)) = (partial, target) {
        std::fs::rename(&partial, &target)
            .map_err(|e| fail(ExitCode::Failed, format!("{}: {e}", target.display())))?;
    }
    Ok(())
}

/// `filegate ls`: one line per entry: type, size, modification time, name.
pub async fn ls(mut api: Api, args: PathArgs) -> Result<()> {
    let mut cursor: Option<String> = None;
    loop {
        let page = api.listing(&args.remote, cursor.as_deref()).await?;
        if page.get("entries").is_none() {
            return Err(fail(
                ExitCode::Failed,
                format!("{} is a file, not a directory", args.remote),
            ));
        }
        for e in page["entries"].as_array().into_iter().flatten() {
            let kind = e["type"].as_str().unwrap_or("?");
            let size = e["size"]
                .as_u64()
                .map(|s| s.to_string())
                .unwrap_or("-".into());
            let incomplete = if e["complete"] == false {
                " (incomplete)"
            } else {
                ""
            };
            println!(
                "{kind:4} {size:>12} {} {}{incomplete}",
                e["mtime"].as_str().unwrap_or(""),
                e["name"].as_str().unwrap_or("")
            );
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(()),
        }
    }
}

/// `filegate rm`: deletes a file or an empty directory.
pub async fn rm(mut api: Api, args: PathArgs) -> Result<()> {
    let request = api.request(Method::DELETE, &format!("files/{}", url_path(&args.remote)));
    api.call(request, full(Bytes::new())).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_directories() {
        assert_eq!(literal_dir("in/*.csv"), ("in".into(), false));
        assert_eq!(literal_dir("/in/a/b*.csv"), ("in/a".into(), false));
        assert_eq!(literal_dir("in/**/x.csv"), ("in".into(), true));
        assert_eq!(literal_dir("*.csv"), ("".into(), false));
        assert_eq!(literal_dir("in/exact.csv"), ("in".into(), false));
        assert_eq!(relative("/acme", "/acme/in/a.csv"), "/in/a.csv");
        assert_eq!(relative("/", "/in/a.csv"), "/in/a.csv");
        assert_eq!(url_path("/in/a b/ü.csv"), "in/a%20b/%C3%BC.csv");
    }
}
