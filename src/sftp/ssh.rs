//! One SSH connection (RFC 4252 authentication, RFC 4254 channels): logins through the shared
//! user layer; session channels carry the `sftp` subsystem or a legacy `scp -t`/`scp -f`; shells,
//! commands, port and agent forwarding are refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use russh::keys::PublicKey;
use russh::server::{
    Auth, ChannelOpenHandle, Handle, Msg, PublicKeyOffer, Session, VerifiedPublicKey,
};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::scp;
use super::subsystem::{SftpHandler, MAX_PACKET};
use crate::access::{Access, ConnectionPermit, Protocol, Refusal, UserFs};

/// Session channels one connection may have open at once, whether they run a subsystem, an exec
/// or nothing yet.
pub const MAX_CHANNELS: usize = 8;

pub struct SshConnection {
    access: Arc<Access>,
    peer: SocketAddr,
    fs: Option<UserFs>,
    /// Channels opened that carry nothing yet (taken out by the subsystem or exec they start).
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// Every channel open on this connection, until the client closes it: what `MAX_CHANNELS`
    /// counts (counting only `channels` let a client run any number of SFTP sessions at once).
    open: std::collections::HashSet<ChannelId>,
    tasks: TaskTracker,
    /// The logged-in session, for the connection's task: at shutdown it waits for the session's
    /// running transfers, then disconnects.
    login: Arc<OnceLock<UserFs>>,
    /// The connection's slot, told when it logs in.
    permit: Arc<ConnectionPermit>,
    /// Cancelled when russh drops this handler, i.e. when the connection's session is over: its
    /// SFTP streams then read as ended (see `pumped`).
    ended: CancellationToken,
}

impl Drop for SshConnection {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

impl SshConnection {
    pub fn new(
        access: Arc<Access>,
        peer: SocketAddr,
        tasks: TaskTracker,
        login: Arc<OnceLock<UserFs>>,
        permit: Arc<ConnectionPermit>,
    ) -> Self {
        SshConnection {
            access,
            peer,
            fs: None,
            channels: HashMap::new(),
            open: Default::default(),
            tasks,
            login,
            permit,
            ended: CancellationToken::new(),
        }
    }

    fn logged_in(&mut self, fs: UserFs) {
        self.permit.logged_in();
        let _ = self.login.set(fs.clone());
        self.fs = Some(fs);
    }

    fn reject() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(methods()),
            partial_success: false,
        }
    }
}

pub fn methods() -> MethodSet {
    MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..])
}

/// Whether an `authorized_keys` line names this key (options and comments do not matter).
fn key_matches(line: &str, key: &PublicKey) -> bool {
    let line = line.trim();
    // A line may start with options (`from="…" ssh-ed25519 AAAA…`): try from each field that
    // looks like a key type.
    line.split_whitespace().enumerate().any(|(i, field)| {
        (field.starts_with("ssh-") || field.starts_with("ecdsa-") || field.starts_with("sk-"))
            && PublicKey::from_openssh(
                &line
                    .split_whitespace()
                    .skip(i)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
            .map(|k| k.key_data() == key.key_data())
            .unwrap_or(false)
    })
}

impl russh::server::Handler for SshConnection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Self::reject())
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        match self
            .access
            .login_password(user, password, self.peer, Protocol::Sftp)
            .await
        {
            Ok(fs) => {
                self.logged_in(fs);
                Ok(Auth::Accept)
            }
            Err(Refusal::Banned(left)) => {
                tracing::info!(peer = %self.peer, "sftp: banned address refused for another {left:?}");
                Ok(Self::reject())
            }
            Err(_) => Ok(Self::reject()),
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Only a probe: the client asks whether this key would do; it proves it holds the key next.
        if self.access.banned_for(self.peer.ip()).is_some() {
            return Ok(Self::reject());
        }
        let known = self.access.account(user).is_some_and(|a| {
            a.authorized_keys()
                .iter()
                .any(|l| key_matches(l, offer.public_key))
        });
        Ok(if known { Auth::Accept } else { Self::reject() })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let public = key.public_key.clone();
        match self
            .access
            .login_key(
                user,
                |line| key_matches(line, &public),
                self.peer,
                Protocol::Sftp,
            )
            .await
        {
            Ok(fs) => {
                self.logged_in(fs);
                Ok(Auth::Accept)
            }
            Err(_) => Ok(Self::reject()),
        }
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        Ok(Self::reject())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.open.len() >= MAX_CHANNELS {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.open.insert(channel.id());
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(fs), true) = (self.fs.clone(), name == "sftp") else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        let Some(ch) = self.channels.remove(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        tracing::debug!(peer = %self.peer, user = fs.user(), "sftp: subsystem start");
        let stream = pumped(ch, &self.tasks, session.handle(), self.ended.clone());
        let handler = SftpHandler::new(fs, self.tasks.clone());
        let config = russh_sftp::server::Config {
            max_client_packet_len: MAX_PACKET,
        };
        russh_sftp::server::run_with_config(stream, handler, config).await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).to_string();
        let parsed = scp::Command::parse(&command);
        let (Some(fs), Ok(cmd), Some(ch)) = (
            self.fs.clone(),
            parsed.as_ref(),
            self.channels.remove(&channel),
        ) else {
            // Debug-quoted: the client chose these bytes, and a newline in them must not make a
            // line of its own in the log.
            tracing::info!(peer = %self.peer, command = ?command, "ssh: command refused (only scp is served)");
            let msg = match &parsed {
                Err(why) => format!("filegate: {why}\r\n"),
                Ok(_) => "filegate: no such session\r\n".to_string(),
            };
            session.extended_data(channel, 1, msg.into_bytes())?;
            session.exit_status_request(channel, 1)?;
            session.eof(channel)?;
            session.close(channel)?;
            return Ok(());
        };
        session.channel_success(channel)?;
        let cmd = cmd.clone();
        let handle = session.handle();
        self.tasks.spawn(async move {
            let mut stream = ch.into_stream();
            let status = scp::run(&mut stream, &cmd, &fs).await;
            let _ = stream.flush().await;
            let _ = handle.exit_status_request(channel, status).await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        session.extended_data(
            channel,
            1,
            b"filegate: no shell here; use sftp (or scp) to transfer files\r\n".to_vec(),
        )?;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        self.open.remove(&channel);
        Ok(())
    }
}

/// The channel as a byte stream whose incoming side is drained into a 4 MiB pipe, so russh's
/// session loop does not block on a busy SFTP handler (the download deadlock of russh #549: the
/// loop would stop reading the client's window adjustments). When the pipe and the channel's
/// queue (`CHANNEL_QUEUE`) are full, the loop does wait: that is what bounds a channel's memory.
///
/// The stream counts as a task of `tasks` (russh-sftp runs its loop in a task of its own), and
/// reads as ended once `ended` is cancelled, so a session cut off at shutdown does not go on
/// serving what was queued.
fn pumped(
    channel: Channel<Msg>,
    tasks: &TaskTracker,
    handle: Handle,
    ended: CancellationToken,
) -> EndsWithStatus {
    let id = channel.id();
    let (mut rd, wr) = tokio::io::split(channel.into_stream());
    let (prd, mut pwr) = tokio::io::simplex(4 << 20);
    let pump_ended = ended.clone();
    tasks.spawn(async move {
        tokio::select! {
            _ = tokio::io::copy(&mut rd, &mut pwr) => {}
            _ = pump_ended.cancelled() => {}
        }
        let _ = pwr.shutdown().await;
    });
    EndsWithStatus {
        inner: Some(tokio::io::join(prd, wr)),
        handle,
        id,
        tasks: tasks.clone(),
        gone: false,
        ended,
        _tracked: tasks.token(),
    }
}

type Pumped = tokio::io::Join<
    tokio::io::ReadHalf<tokio::io::SimplexStream>,
    tokio::io::WriteHalf<russh::ChannelStream<Msg>>,
>;

/// The SFTP stream, ending its channel as OpenSSH's sftp-server does when the session is over:
/// exit status 0, then end of file, then close (`scp` in SFTP mode fails without the status).
/// Dropping the channel's stream alone would close it first.
///
/// Once a reply cannot be sent (the connection is gone), it reads as ended: russh-sftp's loop
/// only logs failed writes and would go on serving every request still queued for nobody.
struct EndsWithStatus {
    inner: Option<Pumped>,
    handle: Handle,
    id: ChannelId,
    tasks: TaskTracker,
    gone: bool,
    ended: CancellationToken,
    _tracked: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl EndsWithStatus {
    fn inner(&mut self) -> Pin<&mut Pumped> {
        Pin::new(self.inner.as_mut().expect("used before drop"))
    }
}

impl AsyncRead for EndsWithStatus {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.gone || self.ended.is_cancelled() {
            return Poll::Ready(Ok(()));
        }
        self.inner().poll_read(cx, buf)
    }
}

impl AsyncWrite for EndsWithStatus {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = self.inner().poll_write(cx, buf);
        self.gone |= matches!(r, Poll::Ready(Err(_)));
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = self.inner().poll_flush(cx);
        self.gone |= matches!(r, Poll::Ready(Err(_)));
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner().poll_shutdown(cx)
    }
}

impl Drop for EndsWithStatus {
    fn drop(&mut self) {
        let (Some(stream), handle, id) = (self.inner.take(), self.handle.clone(), self.id) else {
            return;
        };
        // The status and EOF go into the session's queue before the close that dropping the
        // stream sends, and russh keeps that order.
        self.tasks.spawn(async move {
            let _ = handle.exit_status_request(id, 0).await;
            let _ = handle.eof(id).await;
            drop(stream);
        });
    }
}
