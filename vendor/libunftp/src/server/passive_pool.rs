//! filegate patch: passive ports shared by every session of a listener, for servers whose sessions
//! are started one by one with [`Server::service`](crate::Server::service).
//!
//! Upstream's pooled mode lives inside its own accept loop (`Server::listen`). Here the pool is a
//! value of its own: it binds every port of the range once, and a data connection is matched to
//! the session that asked for it by the client's IP and the port, so one port serves one
//! transfer per client address at a time, and a small range serves many clients. Each request is
//! handled in a task of its own, so a session that is busy (its lock held by a running transfer)
//! never holds up the others.

use crate::server::chancomms::{PortAllocationError, SwitchboardMessage, SwitchboardReceiver, SwitchboardSender};
use crate::server::datachan::spawn_processing;
use crate::server::switchboard::{SocketAddrPair, Switchboard};
use crate::{auth::UserDetail, storage::StorageBackend};
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::channel;
use tokio_util::sync::CancellationToken;

/// Every port of a passive range, bound once and shared by the sessions given this pool through
/// [`ServerBuilder::passive_pool`](crate::ServerBuilder::passive_pool). Its tasks stop when `stop`
/// is cancelled, or when the pool and every session that had it are gone.
pub struct PassivePool<S, U>
where
    S: StorageBackend<U>,
    U: UserDetail,
{
    pub(crate) requests: SwitchboardSender<S, U>,
}

impl<S, U> Clone for PassivePool<S, U>
where
    S: StorageBackend<U>,
    U: UserDetail,
{
    fn clone(&self) -> Self {
        PassivePool {
            requests: self.requests.clone(),
        }
    }
}

impl<S, U> std::fmt::Debug for PassivePool<S, U>
where
    S: StorageBackend<U>,
    U: UserDetail,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassivePool").finish()
    }
}

impl<S, U> PassivePool<S, U>
where
    S: StorageBackend<U> + 'static,
    S::Metadata: crate::storage::Metadata,
    U: UserDetail + 'static,
{
    /// Binds every port of `ports` on `ip` (before the runtime serves, so that a port in use is
    /// found at startup); fails naming the first port that cannot be bound.
    pub fn bind_ports(ip: IpAddr, ports: RangeInclusive<u16>) -> std::io::Result<Vec<std::net::TcpListener>> {
        ports
            .map(|port| {
                let listener =
                    std::net::TcpListener::bind(SocketAddr::new(ip, port)).map_err(|e| std::io::Error::new(e.kind(), format!("port {port}: {e}")))?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .collect()
    }

    /// Serves data connections on `listeners` (from [`bind_ports`](Self::bind_ports)), the
    /// ports `ports`. Must be called within a tokio runtime.
    pub fn start(
        listeners: Vec<std::net::TcpListener>,
        ports: RangeInclusive<u16>,
        logger: Option<slog::Logger>,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        let logger = logger.unwrap_or_else(|| slog::Logger::root(slog::Discard, slog::o!()));
        let listeners = listeners.into_iter().map(TcpListener::from_std).collect::<std::io::Result<Vec<_>>>()?;
        let stop = stop.child_token();
        let board = Switchboard::new(logger.clone(), ports);
        let (requests, inbox) = channel(64);
        for listener in listeners {
            tokio::spawn(accept_data(listener, board.clone(), logger.clone(), stop.clone()));
        }
        tokio::spawn(serve_requests(inbox, board.clone(), logger.clone(), stop.clone()));
        tokio::spawn(scavenge(board, stop));
        Ok(PassivePool { requests })
    }
}

/// Hands each data connection to the session that reserved its (client IP, port).
async fn accept_data<S, U>(listener: TcpListener, mut board: Switchboard<S, U>, logger: slog::Logger, stop: CancellationToken)
where
    S: StorageBackend<U> + 'static,
    S::Metadata: crate::storage::Metadata,
    U: UserDetail + 'static,
{
    let Ok(destination) = listener.local_addr() else { return };
    loop {
        let (stream, source): (TcpStream, SocketAddr) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    slog::warn!(logger, "Could not accept a data connection: {}", e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let pair = SocketAddrPair { source, destination };
        match board.get_session_by_connection_pair(&pair).await {
            Some(session) => {
                board.unregister_if_owned(&(&pair).into(), &session);
                tokio::spawn(spawn_processing(logger.clone(), session, stream));
            }
            // Nobody of that address reserved this port: refused by closing it.
            None => slog::warn!(logger, "Unexpected data connection {:?}", pair),
        }
    }
}

async fn serve_requests<S, U>(mut inbox: SwitchboardReceiver<S, U>, board: Switchboard<S, U>, logger: slog::Logger, stop: CancellationToken)
where
    S: StorageBackend<U> + 'static,
    U: UserDetail + 'static,
{
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => return,
            request = inbox.recv() => match request {
                Some(r) => r,
                // The pool and every session that had it are gone: so are the listeners.
                None => {
                    stop.cancel();
                    return;
                }
            },
        };
        let mut board = board.clone();
        let logger = logger.clone();
        tokio::spawn(async move {
            match request {
                SwitchboardMessage::AssignDataPortCommand(session, reply) => {
                    let port = board.reserve(session).await.map_err(|_| PortAllocationError);
                    if port.is_err() {
                        slog::warn!(logger, "Every shared passive port is taken for this client address");
                    }
                    let _ = reply.send(port);
                }
                SwitchboardMessage::CloseDataPortCommand(session) => {
                    let key = session.lock().await.switchboard_active_datachan.take();
                    if let Some(key) = key {
                        board.unregister_if_owned(&key, &session);
                    }
                }
            }
        });
    }
}

/// Drops reservations of sessions that ended without saying so.
async fn scavenge<S, U>(board: Switchboard<S, U>, stop: CancellationToken)
where
    S: StorageBackend<U> + 'static,
    U: UserDetail + 'static,
{
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => board.retain_live(),
        }
    }
}
