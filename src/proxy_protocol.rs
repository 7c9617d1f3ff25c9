//! The PROXY protocol (v1 text and v2 binary, as HAProxy, nginx and cloud load balancers send it):
//! the real client address of a connection that arrives through a proxy, read before FTP or SSH
//! starts, so that bans, connection limits, logs and events name the client, not the proxy.
//!
//! Only the header is consumed, byte by byte, so that not one byte of the protocol after it is taken
//! from the socket that libunftp or russh then reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

/// How long a proxy may take to send the header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header (RFC: 107 bytes with CRLF).
const V1_MAX: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("no PROXY protocol header within {HEADER_TIMEOUT:?}")]
    Timeout,
    #[error("the connection does not start with a PROXY protocol header (is it coming through the proxy?)")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Connections still sending their PROXY header, per listener; more are closed at once, so
/// connections that never send one cannot pile up (each is also bounded by `HEADER_TIMEOUT`).
pub const MAX_PENDING_HEADERS: usize = 128;

/// A listener's connections, each with its client's address: the peer's, or behind a proxy
/// (`proxies` given: `*.proxy_protocol` with its `*.trusted_proxies`) the one its PROXY header
/// names. Headers are read in tasks of their own, so a slow proxy connection never holds up the
/// others.
pub struct Incoming<'a> {
    listener: &'a TcpListener,
    proxies: Option<Vec<ipnet::IpNet>>,
    pending: Arc<Semaphore>,
    tasks: TaskTracker,
    protocol: &'static str,
    unwrapped: mpsc::Sender<(TcpStream, SocketAddr)>,
    ready: mpsc::Receiver<(TcpStream, SocketAddr)>,
}

impl<'a> Incoming<'a> {
    /// `proxies`: `None` without the PROXY protocol; else the ranges whose headers are believed.
    pub fn new(
        listener: &'a TcpListener,
        proxies: Option<Vec<ipnet::IpNet>>,
        tasks: &TaskTracker,
        protocol: &'static str,
    ) -> Self {
        let (unwrapped, ready) = mpsc::channel(64);
        Incoming {
            listener,
            proxies,
            pending: Arc::new(Semaphore::new(MAX_PENDING_HEADERS)),
            tasks: tasks.clone(),
            protocol,
            unwrapped,
            ready,
        }
    }

    /// The next connection and its client. Cancel-safe (for `select!` with a shutdown signal).
    pub async fn next(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            tokio::select! {
                Some(ready) = self.ready.recv() => return ready,
                accepted = self.listener.accept() => match (accepted, &self.proxies) {
                    (Ok((stream, peer)), Some(trusted)) => {
                        let ip = peer.ip().to_canonical();
                        if !trusted.iter().any(|net| net.contains(&ip)) {
                            // Whoever reaches the port directly could name any client.
                            tracing::info!(%peer, "{}: connection refused: not from a trusted proxy ({}.trusted_proxies)", self.protocol, self.protocol);
                            continue;
                        }
                        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
                            tracing::warn!(%peer, "{}: connection refused: {MAX_PENDING_HEADERS} connections are still sending their PROXY header", self.protocol);
                            continue;
                        };
                        unwrap_in_task(
                            &self.tasks, stream, peer, self.unwrapped.clone(), self.protocol, permit,
                        )
                    }
                    (Ok(connection), None) => return connection,
                    (Err(e), _) => {
                        // Out of file descriptors, say: retrying at once would only spin.
                        tracing::warn!(error = %e, "{}: accept failed", self.protocol);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
}

/// Reads the header of a connection that came through the proxy in a task tracked by `tasks`, then
/// hands the connection, with the client's address, to `ready` (the accept loop). A connection
/// without a valid header is closed and logged.
fn unwrap_in_task(
    tasks: &TaskTracker,
    mut stream: TcpStream,
    proxy: SocketAddr,
    ready: mpsc::Sender<(TcpStream, SocketAddr)>,
    protocol: &'static str,
    permit: OwnedSemaphorePermit,
) {
    tasks.spawn(async move {
        let header = read_client_addr(&mut stream, proxy).await;
        drop(permit);
        match header {
            Ok(client) => {
                tracing::debug!(%proxy, %client, "{protocol}: connection through a proxy");
                let _ = ready.send((stream, client)).await;
            }
            Err(e) => tracing::info!(%proxy, "{protocol}: connection refused: {e}"),
        }
    });
}

/// Reads the PROXY header at the start of `stream` and returns the client address it names. A
/// `LOCAL` header (the proxy's own health check) or an unknown address family gives `proxy`, the
/// address the connection really comes from.
pub async fn read_client_addr(
    stream: &mut TcpStream,
    proxy: SocketAddr,
) -> Result<SocketAddr, ProxyHeaderError> {
    match tokio::time::timeout(HEADER_TIMEOUT, read_header(stream)).await {
        Ok(header) => Ok(client_addr(&header?)?.unwrap_or(proxy)),
        Err(_) => Err(ProxyHeaderError::Timeout),
    }
}

async fn read_header(stream: &mut TcpStream) -> Result<Vec<u8>, ProxyHeaderError> {
    let mut head = Vec::with_capacity(V1_MAX);
    loop {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).await?;
        head.push(byte[0]);
        let v2 = V2_SIGNATURE.starts_with(&head[..head.len().min(12)]);
        let v1 = b"PROXY ".starts_with(&head[..head.len().min(6)]);
        if !v1 && !v2 {
            return Err(ProxyHeaderError::Missing);
        }
        if v2 && head.len() == 16 {
            let len = u16::from_be_bytes([head[14], head[15]]) as usize;
            let mut rest = vec![0u8; len];
            stream.read_exact(&mut rest).await?;
            head.extend_from_slice(&rest);
            return Ok(head);
        }
        if v1 && head.ends_with(b"\r\n") {
            return Ok(head);
        }
        if v1 && head.len() >= V1_MAX {
            return Err(ProxyHeaderError::Malformed(
                "a v1 header longer than 107 bytes".into(),
            ));
        }
    }
}

/// The source address in a complete header; `None` for `LOCAL`/`UNKNOWN`.
fn client_addr(header: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    if header.starts_with(V2_SIGNATURE) {
        let h = ppp::v2::Header::try_from(header)
            .map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
        if h.command == ppp::v2::Command::Local {
            return Ok(None);
        }
        return Ok(match h.addresses {
            ppp::v2::Addresses::IPv4(a) => Some((a.source_address, a.source_port).into()),
            ppp::v2::Addresses::IPv6(a) => Some((a.source_address, a.source_port).into()),
            _ => None,
        });
    }
    let h = ppp::v1::Header::try_from(header)
        .map_err(|e| ProxyHeaderError::Malformed(e.to_string()))?;
    Ok(match h.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
        ppp::v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
        ppp::v1::Addresses::Unknown => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn through(bytes: &[u8]) -> (Result<SocketAddr, ProxyHeaderError>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = bytes.to_vec();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            s.shutdown().await.unwrap();
        });
        let (mut s, peer) = listener.accept().await.unwrap();
        let r = read_client_addr(&mut s, peer).await;
        let mut rest = Vec::new();
        if r.is_ok() {
            s.read_to_end(&mut rest).await.unwrap();
        }
        client.await.unwrap();
        (r, rest)
    }

    #[tokio::test]
    async fn v1_names_the_client_and_leaves_the_protocol_untouched() {
        let (r, rest) = through(b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 21\r\nUSER a\r\n").await;
        assert_eq!(r.unwrap(), "203.0.113.7:5555".parse().unwrap());
        assert_eq!(rest, b"USER a\r\n");
        let (r, _) = through(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 22\r\n").await;
        assert_eq!(r.unwrap(), "[2001:db8::1]:4000".parse().unwrap());
        let (r, rest) = through(b"PROXY UNKNOWN\r\nSSH-2.0-x\r\n").await;
        assert_eq!(r.unwrap().ip().to_string(), "127.0.0.1");
        assert_eq!(rest, b"SSH-2.0-x\r\n");
    }

    #[tokio::test]
    async fn v2_names_the_client() {
        let header = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (
                "198.51.100.9:4242".parse::<SocketAddr>().unwrap(),
                "10.0.0.1:22".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"SSH-2.0-x\r\n");
        let (r, rest) = through(&bytes).await;
        assert_eq!(r.unwrap(), "198.51.100.9:4242".parse().unwrap());
        assert_eq!(rest, b"SSH-2.0-x\r\n");
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        assert!(matches!(
            through(b"USER anonymous\r\n").await.0,
            Err(ProxyHeaderError::Missing)
        ));
        assert!(matches!(
            through(b"SSH-2.0-OpenSSH\r\n").await.0,
            Err(ProxyHeaderError::Missing)
        ));
        assert!(matches!(
            through(b"PROXY TCP4 nonsense\r\n").await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        assert!(matches!(
            through(long.as_bytes()).await.0,
            Err(ProxyHeaderError::Malformed(_))
        ));
        // Cut short: the client closes before the header ends.
        assert!(matches!(
            through(b"PROXY TCP4 1.2.3.4").await.0,
            Err(ProxyHeaderError::Io(_))
        ));
    }
}
