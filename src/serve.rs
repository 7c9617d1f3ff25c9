//! The gateway runner: opens the store, starts the front-ends, and shuts all down on one token.

use std::io::Write as _;
use std::path::Path;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::config::{Config, MqttMode, StorageBackend};
use crate::ftp::FtpFrontend;
use crate::http::{HttpServer, Probes};
use crate::sftp::SftpFrontend;

/// A running gateway: the store, the shared user layer and every enabled front-end.
pub struct Gateway {
    pub store: storage_backend::Store,
    pub access: Arc<Access>,
    /// The FTP listener's address (with the real port when `ftp.listen` asked for port 0).
    pub ftp_addr: Option<SocketAddr>,
    /// The implicit-FTPS listener's address (`ftp.tls.implicit_listen`).
    pub ftps_implicit_addr: Option<SocketAddr>,
    /// The SSH (SFTP/SCP) listener's address.
    pub sftp_addr: Option<SocketAddr>,
    /// `/healthz`, `/readyz`, `/metrics` and the file API under `/api/v1`.
    pub http_addr: SocketAddr,
    /// `http.tls.listen`, when set.
    pub https_addr: Option<SocketAddr>,
    probes: Arc<Probes>,
    /// The HTTP endpoint stays up until everything else has stopped.
    stop_http: CancellationToken,
    http_tasks: TaskTracker,
    storage: String,
    grace: Duration,
    /// Stops the accept loops.
    stop_accepting: CancellationToken,
    /// Ends the sessions still running when the grace period is over.
    abort_sessions: CancellationToken,
    tasks: TaskTracker,
    /// The event publisher runs until the sessions are done, so their last changes go out too.
    stop_events: CancellationToken,
    event_tasks: TaskTracker,
    mqtt_banner: Vec<String>,
}

impl Gateway {
    /// Opens the store and starts every enabled front-end on its listener.
    pub async fn start(config: &Config) -> anyhow::Result<Gateway> {
        prepare_directories(config)?;
        let storage = config.describe_storage();
        let store = storage_backend::Store::open(config.to_store_config())
            .await
            .with_context(|| format!("cannot open the {storage}"))?;
        tracing::info!(
            chunk_size = %crate::config::format_size(config.storage.chunk_size),
            "store opened: {storage}"
        );
        let access = Access::new(config, store.clone()).map_err(|e| anyhow::anyhow!(e))?;
        let http = HttpServer::bind(&config.http).await?;
        let http_addr = http.local_addr();
        let https_addr = http.tls_addr();
        let probes = Arc::new(Probes {
            store: store.clone(),
            metrics: access.metrics().clone(),
            mqtt_required: config.mqtt.mode != MqttMode::Off,
            draining: Default::default(),
        });
        let stop_http = CancellationToken::new();
        let http_tasks = TaskTracker::new();
        let stop_accepting = CancellationToken::new();
        let abort_sessions = CancellationToken::new();
        let tasks = TaskTracker::new();
        let stop_events = CancellationToken::new();
        let event_tasks = TaskTracker::new();
        // Live events for /api/v1/events; its streams end when shutdown begins (stop_accepting).
        let hub = crate::events::open_hub(config, store.clone()).await?;
        event_tasks.spawn(hub.clone().run(stop_events.clone()));
        // API requests are sessions like FTP's: refused once shutdown begins, waited for within
        // the grace period, then ended (the listener itself stays up for the probes).
        let api = Arc::new(crate::http::api::Api {
            access: access.clone(),
            max_file_size: config.storage.max_file_size,
            stop_accepting: stop_accepting.clone(),
            abort_sessions: abort_sessions.clone(),
            sessions: tasks.clone(),
            events: hub.clone(),
            upload_expiry: config.http.upload_expiry,
            // `Secure` cookies also when the listener is TLS (http.tls, when it lands).
            auth: crate::http::auth::Settings::from_config(&config.http),
        });
        // Unfinished tus uploads past their expiry are ended by every gateway (each claims an
        // upload through its record first); the pass stops with the HTTP endpoint.
        http_tasks.spawn(crate::http::uploads::expire_loop(
            api.clone(),
            stop_http.clone(),
        ));
        http_tasks.spawn(http.run(probes.clone(), api, stop_http.clone()));
        let (mut ftp_addr, mut ftps_implicit_addr) = (None, None);
        if config.ftp.enabled {
            let ftp = FtpFrontend::bind(&config.ftp, access.clone()).await?;
            ftp_addr = Some(ftp.local_addr());
            ftps_implicit_addr = ftp.implicit_addr();
            tasks.spawn(ftp.run(
                stop_accepting.clone(),
                abort_sessions.clone(),
                tasks.clone(),
            ));
        }
        let mut sftp_addr = None;
        if config.sftp.enabled {
            let sftp = SftpFrontend::bind(&config.sftp, access.clone()).await?;
            sftp_addr = Some(sftp.local_addr());
            tasks.spawn(sftp.run(
                stop_accepting.clone(),
                abort_sessions.clone(),
                tasks.clone(),
            ));
        }
        crate::events::start_webhooks(
            config,
            store.clone(),
            access.metrics().clone(),
            stop_events.clone(),
            &event_tasks,
        );
        let mqtt = crate::events::start(
            config,
            store.clone(),
            access.clone(),
            hub,
            stop_events.clone(),
            &event_tasks,
        )
        .await?;
        Ok(Gateway {
            stop_events,
            event_tasks,
            mqtt_banner: mqtt.banner,
            store,
            access,
            ftp_addr,
            ftps_implicit_addr,
            sftp_addr,
            http_addr,
            https_addr,
            probes,
            stop_http,
            http_tasks,
            storage,
            grace: config.server.shutdown_grace,
            stop_accepting,
            abort_sessions,
            tasks,
        })
    }

    /// One line per listener, then the storage line (printed last: it means "ready").
    pub fn banner(&self, config: &Config) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(addr) = self.ftp_addr {
            let tls = if config.ftp.tls.enabled {
                if config.ftp.tls.required {
                    " (FTPS required: AUTH TLS)"
                } else {
                    " (FTPS available: AUTH TLS)"
                }
            } else {
                ""
            };
            lines.push(format!("filegate: ftp listening on {addr}{tls}"));
        }
        if let Some(addr) = self.ftps_implicit_addr {
            lines.push(format!(
                "filegate: ftps listening on {addr} (implicit FTPS: TLS from the first byte)"
            ));
        }
        if let Some(addr) = self.sftp_addr {
            lines.push(format!("filegate: sftp listening on {addr} (SFTP and scp)"));
        }
        lines.extend(self.mqtt_banner.iter().cloned());
        lines.push(format!(
            "filegate: http listening on {} (/api/v1, /healthz, /readyz, /metrics)",
            self.http_addr
        ));
        if let Some(addr) = self.https_addr {
            lines.push(format!(
                "filegate: https listening on {addr} (the same over TLS)"
            ));
        }
        lines.push(format!("filegate: {}; ready", self.storage));
        lines
    }

    /// Stops accepting, lets running sessions finish within `server.shutdown_grace` (or until
    /// `force` is cancelled), ends the rest, lets the publisher flush, then closes the store.
    pub async fn shutdown(self, force: CancellationToken) {
        self.probes.start_draining();
        self.stop_accepting.cancel();
        self.tasks.close();
        let running = self.access.active_connections();
        if running > 0 {
            tracing::info!(
                connections = running,
                grace = ?self.grace,
                "waiting for running sessions to finish (a second SIGTERM or SIGINT ends them now)"
            );
        }
        let ended_early = tokio::select! {
            _ = self.tasks.wait() => None,
            _ = tokio::time::sleep(self.grace) => Some("the shutdown grace period is over"),
            _ = force.cancelled() => Some("second signal"),
        };
        if let Some(why) = ended_early {
            tracing::warn!(
                connections = self.access.active_connections(),
                "{why}: aborting the sessions still running (uploads cut off are kept as incomplete)"
            );
            self.abort_sessions.cancel();
            self.tasks.wait().await;
        }
        self.stop_events.cancel();
        self.event_tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.event_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "the event publisher did not stop in time; undelivered events stay in the outbox"
            );
        }
        self.stop_http.cancel();
        self.http_tasks.close();
        self.http_tasks.wait().await;
        self.store.close().await;
        tracing::info!("store closed; bye");
    }
}

/// Runs the gateway until `shutdown` is cancelled (SIGINT/SIGTERM in the binary). Prints one line
/// per listener to standard output, then `filegate: storage … ` once the gateway is ready, so
/// scripts and tests can wait for it.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    force: CancellationToken,
) -> anyhow::Result<()> {
    let gateway = Gateway::start(&config).await?;
    // Not println!: a closed standard output (a daemon, `| head`) must not stop the gateway.
    let mut out = std::io::stdout().lock();
    for line in gateway.banner(&config) {
        writeln!(out, "{line}").ok();
    }
    out.flush().ok();
    drop(out);

    shutdown.cancelled().await;
    tracing::info!("shutting down: no new connections");
    gateway.shutdown(force).await;
    Ok(())
}

/// Creates `server.data_dir` and the embedded store's directory if they are missing.
fn prepare_directories(config: &Config) -> anyhow::Result<()> {
    let mut dirs: Vec<&Path> = vec![&config.server.data_dir];
    if config.storage.backend == StorageBackend::Embedded {
        if let Some(parent) = config.storage.embedded.path.parent() {
            if !parent.as_os_str().is_empty() {
                dirs.push(parent);
            }
        }
    }
    for dir in dirs {
        // Only the gateway's user may look in: the store holds every user's files, the data dir
        // the SSH host keys. (A directory that exists keeps the mode its owner gave it.)
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .with_context(|| {
                format!(
                    "cannot create the directory {}; create it or point server.data_dir / \
                 storage.embedded.path somewhere writable",
                    dir.display()
                )
            })?;
    }
    Ok(())
}
