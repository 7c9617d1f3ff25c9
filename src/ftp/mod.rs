//! The FTP/FTPS front-end (RFC 959, 2228, 3659, 2428) on libunftp over the shared user layer.
//!
//! We run our own accept loop and hand each connection to its own libunftp `Server` (`service`):
//! that is how the shared connection limits, the per-IP ban at connect time, `TCP_NODELAY` and a
//! listener bound to port 0 get in, none of which libunftp's `listen` offers.

mod auth;
mod backend;
mod errors;
mod probe;
mod site;
mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use libunftp::options::{ActivePassiveMode, FtpsRequired, PassiveHost};
use libunftp::{PassivePool, ServerBuilder};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::config::{FtpConfig, FtpType};
use crate::proxy_protocol::Incoming;
use auth::ConnectionAuth;
use backend::FtpBackend;

pub use errors::ftp_kind;

const GREETING: &str = "filegate FTP server ready";

/// The bound FTP listeners (plain/explicit FTPS, and implicit FTPS when configured), ready to serve.
pub struct FtpFrontend {
    listener: TcpListener,
    implicit: Option<TcpListener>,
    /// `ftp.shared_passive_ports`: the whole range, bound at startup. Its tasks end when this and
    /// every session that used it are gone.
    pool: Option<PassivePool<FtpBackend, auth::FtpUser>>,
    config: FtpConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    access: Arc<Access>,
}

impl FtpFrontend {
    /// Binds `ftp.listen` and checks the passive port range and TLS files, failing with an error
    /// that names the key to fix.
    pub async fn bind(config: &FtpConfig, access: Arc<Access>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("ftp.listen: cannot listen on {}", config.listen))?;
        let ip = listener.local_addr()?.ip();
        let pool = if config.shared_passive_ports {
            Some(shared_pool(config, ip)?)
        } else {
            check_passive_ports(config, ip)?;
            None
        };
        let tls = if config.tls.enabled {
            Some(tls::server_config(&config.tls.cert, &config.tls.key)?)
        } else {
            None
        };
        let implicit = match (config.tls.implicit_listen, &tls) {
            (Some(addr), Some(_)) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("ftp.tls.implicit_listen: cannot listen on {addr}"))?,
            ),
            (Some(addr), None) => anyhow::bail!(
                "ftp.tls.implicit_listen = {addr} needs ftp.tls.enabled = true and a certificate"
            ),
            (None, _) => None,
        };
        Ok(FtpFrontend {
            listener,
            implicit,
            pool,
            config: config.clone(),
            tls,
            access,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// The implicit-FTPS listener's address, when `ftp.tls.implicit_listen` is set.
    pub fn implicit_addr(&self) -> Option<SocketAddr> {
        self.implicit
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener"))
    }

    /// Accepts connections until `shutdown`; sessions are tracked by `tasks` and end when `abort` fires.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        abort: CancellationToken,
        tasks: TaskTracker,
    ) {
        let this = Arc::new(self);
        let implicit = {
            let (this, shutdown, abort, tasks) =
                (this.clone(), shutdown.clone(), abort.clone(), tasks.clone());
            async move {
                if let Some(listener) = &this.implicit {
                    this.accept_loop(listener, true, shutdown, abort, tasks)
                        .await
                }
            }
        };
        tokio::join!(
            this.accept_loop(&this.listener, false, shutdown, abort, tasks),
            implicit
        );
    }

    /// One listener's accept loop; `implicit`: its connections start with a TLS handshake.
    async fn accept_loop(
        &self,
        listener: &TcpListener,
        implicit: bool,
        shutdown: CancellationToken,
        abort: CancellationToken,
        tasks: TaskTracker,
    ) {
        let proxies = self
            .config
            .proxy_protocol
            .then(|| self.config.trusted_proxies.clone());
        let mut incoming = Incoming::new(listener, proxies, &tasks, "ftp");
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = incoming.next() => next,
            };
            let mut stream = stream;
            let permit = match self.access.admit_before_login(peer.ip()) {
                Ok(p) => p,
                Err(refusal) => {
                    tracing::info!(%peer, "ftp: connection refused: {refusal}");
                    tasks.spawn(async move {
                        let _ = stream
                            .write_all(format!("421 {refusal}\r\n").as_bytes())
                            .await;
                        let _ = stream.shutdown().await;
                    });
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            // Clients send ABOR after a Telnet Synch whose last byte goes out of band (TCP urgent
            // data, RFC 959 4.1.3). Without this, the read of the control connection stopped at
            // the urgent mark and the ABOR line was never seen; inline, the byte is dropped with
            // the other Telnet bytes before the command (as vsftpd does).
            let _ = socket2::SockRef::from(&stream).set_out_of_band_inline(true);
            // Without a probe an upload's end cannot be checked; that is logged, not fatal.
            let control = match probe::ControlProbe::new(&stream) {
                Ok(p) => Some(Arc::new(p)),
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "ftp: cannot watch the control connection");
                    None
                }
            };
            let permit = Arc::new(permit);
            let server =
                match self.server_for(peer, implicit, control.clone(), &tasks, &abort, &permit) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "ftp: cannot set up a session");
                        continue;
                    }
                };
            let abort = abort.clone();
            // Shutdown closes an idle session at once (421); a running transfer gets the grace
            // period, then `abort`.
            let stop = shutdown.clone().cancelled_owned();
            let login_timeout = self.access.login_timeout();
            let login_by = tokio::time::Instant::now() + login_timeout;
            tasks.spawn(async move {
                tracing::debug!(%peer, "ftp: session start");
                tokio::select! {
                    _ = server.service_until(stream, peer, stop) => {}
                    _ = abort.cancelled() => tracing::info!(%peer, "ftp: session cut by shutdown"),
                    // NOOPs and a TLS handshake that never ends do not keep a connection that
                    // never logs in.
                    _ = crate::access::login_deadline(&permit, login_by) => {
                        tracing::info!(%peer, "ftp: not logged in within limits.login_timeout ({login_timeout:?}); closed");
                    }
                }
                // The session is over: an upload still finishing has lost its client.
                if let Some(control) = control {
                    control.close();
                }
                tracing::debug!(%peer, "ftp: session end");
            });
        }
    }

    fn server_for(
        &self,
        peer: SocketAddr,
        implicit: bool,
        control: Option<Arc<probe::ControlProbe>>,
        tasks: &TaskTracker,
        abort: &CancellationToken,
        permit: &Arc<crate::access::ConnectionPermit>,
    ) -> anyhow::Result<libunftp::Server<FtpBackend, auth::FtpUser>> {
        let auth = Arc::new(ConnectionAuth::new(
            self.access.clone(),
            peer,
            permit.clone(),
        ));
        let backend = FtpBackend {
            idle_timeout: self.config.idle_timeout,
            tasks: tasks.clone(),
            abort: abort.clone(),
            control,
        };
        let mut builder = ServerBuilder::with_user_detail_provider(
            Box::new(move || backend.clone()),
            auth.clone(),
        )
        .authenticator(auth)
        .greeting(GREETING)
        .passive_ports(self.config.passive_ports.clone())
        .passive_host(passive_host(&self.config.passive_host))
        .idle_session_timeout(self.config.idle_timeout.as_secs().max(1))
        .ascii_by_default(self.config.default_type == FtpType::Ascii)
        .site_command(libunftp::options::RENAME_CHECK, site::RenameCheck)
        .site_command(libunftp::options::MFMT, site::Mfmt)
        .site_command("UTIME", site::Utime)
        .active_passive_mode(if self.config.active_mode {
            ActivePassiveMode::ActiveAndPassive
        } else {
            ActivePassiveMode::PassiveOnly
        });
        if let Some(pool) = &self.pool {
            builder = builder.passive_pool(pool.clone());
        }
        if let Some(tls) = &self.tls {
            builder = builder
                .ftps_manual::<PathBuf>(tls.clone())
                .implicit_tls(implicit);
            if self.config.tls.required {
                builder = builder.ftps_required(FtpsRequired::All, FtpsRequired::All);
            }
        }
        builder.build().map_err(|e| anyhow::anyhow!("{e}"))
    }
}

fn passive_host(setting: &str) -> PassiveHost {
    if setting.is_empty() {
        PassiveHost::FromConnection
    } else {
        PassiveHost::from(setting)
    }
}

/// `ftp.shared_passive_ports`: binds the whole range on `ip` and serves it.
fn shared_pool(
    config: &FtpConfig,
    ip: IpAddr,
) -> anyhow::Result<PassivePool<FtpBackend, auth::FtpUser>> {
    let range = config.passive_ports.clone();
    if let Some(implicit) = config.tls.implicit_listen {
        if implicit.ip() != ip {
            anyhow::bail!(
                "ftp.shared_passive_ports = true needs ftp.tls.implicit_listen ({implicit}) on the \
                 address of ftp.listen ({ip}): the shared ports are bound on that one address"
            );
        }
    }
    let listeners = PassivePool::<FtpBackend, auth::FtpUser>::bind_ports(ip, range.clone())
        .with_context(|| {
            format!(
                "ftp.passive_ports = \"{}-{}\" with ftp.shared_passive_ports = true: every port of \
                 the range must be free on {ip}; choose a range of free ports above 1024",
                range.start(),
                range.end()
            )
        })?;
    // Stopped by dropping: when the front-end and its sessions are gone.
    Ok(PassivePool::start(
        listeners,
        range,
        None,
        CancellationToken::new(),
    )?)
}

/// Fails at startup when no port of `ftp.passive_ports` can be bound, instead of at the first PASV.
fn check_passive_ports(config: &FtpConfig, ip: IpAddr) -> anyhow::Result<()> {
    let range = &config.passive_ports;
    let mut last_error = None;
    for port in range.clone().take(64) {
        match std::net::TcpListener::bind((ip, port)) {
            Ok(_) => return Ok(()),
            Err(e) => last_error = Some(e),
        }
    }
    anyhow::bail!(
        "ftp.passive_ports = \"{}-{}\": none of the first ports of the range can be bound on {ip} ({}); \
         choose a range of free ports above 1024",
        range.start(),
        range.end(),
        last_error.map(|e| e.to_string()).unwrap_or_default()
    )
}
