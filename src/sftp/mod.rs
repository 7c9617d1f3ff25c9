//! The SFTP and legacy SCP front-end: a russh SSH server (RFC 4251–4254) whose session channels
//! carry the `sftp` subsystem (russh-sftp) or `scp -t`/`scp -f`, over the shared user layer.

mod errors;
mod keys;
mod listing;
pub(crate) mod scp;
mod ssh;
pub(crate) mod subsystem;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::config::SftpConfig;

pub use errors::status_code;
pub use ssh::MAX_CHANNELS;

/// Messages (of at most 32 KiB) one SSH channel may queue: 2 MiB.
pub const CHANNEL_QUEUE: usize = 64;
pub use subsystem::MAX_HANDLES;

/// The algorithms offered: russh's defaults without `ssh-rsa` (RSA signatures with SHA-1) unless
/// `sftp.allow_ssh_rsa_sha1`, and compression only after authentication (`zlib@openssh.com`):
/// plain `zlib` would run the decompressor on what a client sends before it has logged in.
fn preferred(allow_ssh_rsa_sha1: bool) -> russh::Preferred {
    use russh::keys::{Algorithm, HashAlg};
    let key: Vec<Algorithm> = russh::Preferred::DEFAULT
        .key
        .iter()
        .filter(|a| allow_ssh_rsa_sha1 || !matches!(a, Algorithm::Rsa { hash: None }))
        .cloned()
        .collect();
    debug_assert!(key.contains(&Algorithm::Rsa {
        hash: Some(HashAlg::Sha256)
    }));
    russh::Preferred {
        key: key.into(),
        compression: (&[russh::compression::NONE, russh::compression::ZLIB_LEGACY][..]).into(),
        ..russh::Preferred::DEFAULT
    }
}

pub struct SftpFrontend {
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    access: Arc<Access>,
    /// `sftp.trusted_proxies` when `sftp.proxy_protocol` is on.
    proxies: Option<Vec<ipnet::IpNet>>,
}

impl SftpFrontend {
    /// Loads (or generates) the host keys and binds `sftp.listen`.
    pub async fn bind(config: &SftpConfig, access: Arc<Access>) -> anyhow::Result<Self> {
        let host_keys = keys::load_or_generate(&config.host_keys)?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("sftp.listen: cannot listen on {}", config.listen))?;
        let ssh = russh::server::Config {
            server_id: russh::SshId::Standard(
                format!("SSH-2.0-filegate_{}", env!("CARGO_PKG_VERSION")).into(),
            ),
            methods: ssh::methods(),
            keys: host_keys,
            auth_rejection_time: Duration::from_secs(1),
            auth_rejection_time_initial: Some(Duration::ZERO),
            inactivity_timeout: Some(config.idle_timeout),
            keepalive_interval: Some(Duration::from_secs(30)),
            // What one channel may queue before the session stops reading the connection:
            // russh grants window as packets arrive, not as the handler takes them, so this
            // (messages of at most 32 KiB) is the bound: 2 MiB, plus the 4 MiB pipe of `pumped`.
            // Downloads do not need more: the pipe keeps the session reading window adjustments.
            channel_buffer_size: CHANNEL_QUEUE,
            event_buffer_size: 64,
            window_size: 16 << 20,
            preferred: preferred(config.allow_ssh_rsa_sha1),
            ..Default::default()
        };
        Ok(SftpFrontend {
            listener,
            config: Arc::new(ssh),
            access,
            proxies: config
                .proxy_protocol
                .then(|| config.trusted_proxies.clone()),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Accepts connections until `shutdown`; sessions are tracked by `tasks` and cut when `abort` fires.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        abort: CancellationToken,
        tasks: TaskTracker,
    ) {
        let mut incoming = crate::proxy_protocol::Incoming::new(
            &self.listener,
            self.proxies.clone(),
            &tasks,
            "sftp",
        );
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = incoming.next() => next,
            };
            let permit = match self.access.admit_before_login(peer.ip()) {
                Ok(p) => p,
                Err(refusal) => {
                    tracing::info!(%peer, "sftp: connection refused: {refusal}");
                    drop(stream);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let config = self.config.clone();
            let login = Arc::new(std::sync::OnceLock::new());
            let permit = Arc::new(permit);
            let login_timeout = self.access.login_timeout();
            let login_by = tokio::time::Instant::now() + login_timeout;
            let handler = ssh::SshConnection::new(
                self.access.clone(),
                peer,
                tasks.clone(),
                login.clone(),
                permit.clone(),
            );
            let abort = abort.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                // A duplicate of the socket, to cut a session whose loop no longer listens.
                let killer = stream.into_std().and_then(|s| Ok((s.try_clone()?, s)));
                let Ok((killer, std_stream)) = killer else { return };
                let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) else { return };
                let started = tokio::time::timeout_at(login_by, russh::server::run_stream(config, stream, handler)).await;
                let Ok(Ok(mut session)) = started else {
                    tracing::debug!(%peer, "ssh: handshake failed or timed out");
                    return;
                };
                tracing::debug!(%peer, "ssh: session start");
                let handle = session.handle();
                // At shutdown a session is ended as soon as it has no transfer running: an idle
                // one at once, a busy one when its transfers end (or when the grace period does).
                let idle_at_shutdown = async {
                    shutdown.cancelled().await;
                    if let Some(fs) = login.get() {
                        crate::access::UserFs::idle(fs).await;
                    }
                };
                // Why the gateway ends the session, and how long it then waits for it to end.
                let ending = tokio::select! {
                    r = &mut session => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "ssh: session ended with an error");
                        }
                        None
                    }
                    _ = async { tokio::select! { _ = abort.cancelled() => {}, _ = idle_at_shutdown => {} } } => {
                        Some(("the server is shutting down", Duration::from_secs(5)))
                    }
                    // Authentication attempts (or any packets) do not keep a connection that never
                    // logs in: russh's inactivity timer restarts with every packet.
                    _ = crate::access::login_deadline(&permit, login_by) => {
                        tracing::info!(%peer, "ssh: not logged in within limits.login_timeout ({login_timeout:?}); closed");
                        Some(("not logged in in time", Duration::from_secs(2)))
                    }
                };
                if let Some((why, wait)) = ending {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        handle.disconnect(russh::Disconnect::ByApplication, why.into(), String::new()),
                    )
                    .await;
                    // A session whose loop no longer listens is cut at the socket.
                    if tokio::time::timeout(wait, &mut session).await.is_err() {
                        let _ = killer.shutdown(std::net::Shutdown::Both);
                    }
                }
                tracing::debug!(%peer, "ssh: session end");
            });
        }
    }
}
