//! A small HTTP/1.1 client on hyper for the two places filegate calls HTTP: webhook receivers, and
//! the command line talking to a running gateway's API. One keep-alive connection, one request at
//! a time (both callers are sequential by design), TLS with the system's roots.

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What requests carry: a buffer, or a stream (an upload from a file).
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A body of bytes at hand.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A client for one base URL (`http://` or `https://`; `user:password@` becomes HTTP Basic).
pub struct HttpClient {
    https: bool,
    host: String,
    port: u16,
    /// `Host` header.
    authority: String,
    /// The URL's path and query: what `post` sends to, and what `path` arguments are joined to.
    path: String,
    /// The URL without credentials, for logs.
    shown: String,
    basic_auth: Option<String>,
    tls: Option<tokio_rustls::TlsConnector>,
    conn: Option<SendRequest<Body>>,
}

/// A whole (small) reply.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl HttpClient {
    pub fn new(url: &str) -> Result<HttpClient, String> {
        let masked = crate::config::mask_url_password(url);
        let parsed = url::Url::parse(url).map_err(|e| format!("{masked:?} is not a URL: {e}"))?;
        let https = match parsed.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(format!("scheme {other:?} is not http or https")),
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| format!("{masked:?} has no host"))?
            .to_string();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let authority = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let mut path = parsed.path().to_string();
        if let Some(q) = parsed.query() {
            path = format!("{path}?{q}");
        }
        let basic_auth = (!parsed.username().is_empty()).then(|| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            basic(
                &decode(parsed.username()),
                &decode(parsed.password().unwrap_or("")),
            )
        });
        let tls = if https {
            let config = crate::events::tls_client_config().map_err(|e| e.to_string())?;
            Some(tokio_rustls::TlsConnector::from(config))
        } else {
            None
        };
        Ok(HttpClient {
            https,
            shown: format!(
                "{}://{authority}{}",
                if https { "https" } else { "http" },
                parsed.path()
            ),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            authority,
            path,
            basic_auth,
            tls,
            conn: None,
        })
    }

    /// Logs in with HTTP Basic (instead of credentials in the URL).
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> HttpClient {
        self.basic_auth = Some(basic(user, password));
        self
    }

    /// The URL without credentials, for logs and messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Forgets the connection (after an error or a timeout, it may be half-way through a reply).
    pub fn reset(&mut self) {
        self.conn = None;
    }

    /// A request to `path` (joined to the base URL's path; `None`: the base URL itself), with
    /// `Host`, `User-Agent` and the login set.
    pub fn request(&self, method: Method, path: Option<&str>) -> hyper::http::request::Builder {
        let target = match path {
            None => self.path.clone(),
            Some(p) => format!(
                "{}/{}",
                self.path.trim_end_matches('/'),
                p.trim_start_matches('/')
            ),
        };
        let mut b = Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, &self.authority)
            .header(
                header::USER_AGENT,
                concat!("filegate/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(auth) = &self.basic_auth {
            b = b.header(header::AUTHORIZATION, auth);
        }
        b
    }

    /// Sends `request`; the caller reads the body (a stream, a download). The connection is not
    /// reused afterwards.
    pub async fn send(&mut self, request: Request<Body>) -> Result<Response<Incoming>, String> {
        let mut sender = self.ready().await?;
        self.exchange(&mut sender, request).await
    }

    /// The kept connection if it is still open, else a new one; ready for a request.
    async fn ready(&mut self) -> Result<SendRequest<Body>, String> {
        let mut sender = match self.conn.take() {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        sender
            .ready()
            .await
            .map_err(|e| format!("connection to {} lost: {e}", self.authority))?;
        Ok(sender)
    }

    async fn exchange(
        &self,
        sender: &mut SendRequest<Body>,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, String> {
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("request to {} failed: {e}", self.authority))
    }

    /// Sends `request` and reads the reply, up to `limit` bytes of body (a longer one is an error);
    /// the connection is kept for the next request.
    pub async fn fetch(&mut self, request: Request<Body>, limit: usize) -> Result<Reply, String> {
        let mut sender = self.ready().await?;
        let response = self.exchange(&mut sender, request).await?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| format!("reading the reply from {}: {e}", self.authority))?
            .to_bytes();
        self.conn = Some(sender);
        Ok(Reply {
            status: parts.status,
            body,
        })
    }

    /// POSTs `body` to the base URL; the status. The reply's body is read up to `limit` and
    /// dropped: a longer one does not change the answer, it only costs the connection.
    pub async fn post(
        &mut self,
        content_type: &str,
        headers: &[(&'static str, String)],
        body: Bytes,
        limit: usize,
    ) -> Result<StatusCode, String> {
        let mut request = self
            .request(Method::POST, None)
            .header(header::CONTENT_TYPE, content_type);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(full(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let mut sender = self.ready().await?;
        let response = self.exchange(&mut sender, request).await?;
        let status = response.status();
        if Limited::new(response.into_body(), limit)
            .collect()
            .await
            .is_ok()
        {
            self.conn = Some(sender);
        }
        Ok(status)
    }

    async fn connect(&self) -> Result<SendRequest<Body>, String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.authority))?;
        let _ = tcp.set_nodelay(true);
        let handshake = |e: hyper::Error| format!("HTTP handshake with {}: {e}", self.authority);
        // The connection task ends when its `SendRequest` is dropped (or the peer closes).
        if let (true, Some(tls)) = (self.https, &self.tls) {
            let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| format!("{:?} is not a valid TLS server name: {e}", self.host))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {}: {e}", self.authority))?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(handshake)?;
            tokio::spawn(conn);
            Ok(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(handshake)?;
            tokio::spawn(conn);
            Ok(sender)
        }
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
