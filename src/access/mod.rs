//! The shared user layer: every front-end admits connections, logs users in and reaches the store
//! through here, so the protocols cannot disagree on jails, permissions, quotas, bandwidth, bans or
//! connection limits.

mod accounts;
mod connections;
pub mod jail;
mod logins;
mod open_writes;
mod quota;
mod throttle;
mod userfs;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use storage_backend::{ChangeContext, ErrorKind, Store};

pub use accounts::Account;
pub use connections::{ConnectionPermit, ConnectionRefused};
pub use jail::UserPath;
pub use userfs::{is_staging, Download, DownloadStream, Upload, UserFs, STAGING_DIR};

use crate::config::{Config, PartialUploads};
use crate::metrics::Metrics;
use accounts::Accounts;
use connections::ConnectionLimiter;
use logins::{LoginLimiter, NoTry};

/// Which front-end a session came through; recorded in events and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Ftp,
    Ftps,
    Sftp,
    Mqtt,
    Http,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ftp => "ftp",
            Protocol::Ftps => "ftps",
            Protocol::Sftp => "sftp",
            Protocol::Mqtt => "mqtt",
            Protocol::Http => "http",
        }
    }
}

/// Why a connection or a login was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many failed logins from your address; try again in {} s", .0.as_secs().max(1))]
    Banned(Duration),
    #[error(transparent)]
    Limit(#[from] ConnectionRefused),
    #[error("login incorrect")]
    BadCredentials,
    #[error("your home directory cannot be prepared: {0}")]
    Home(String),
    #[error("too many logins are being checked at once; try again in a moment")]
    Busy,
}

/// Resolves at `deadline` when `permit`'s connection has not logged in by then; never once it has.
pub async fn login_deadline(permit: &ConnectionPermit, deadline: tokio::time::Instant) {
    tokio::time::sleep_until(deadline).await;
    if permit.is_logged_in() {
        std::future::pending::<()>().await;
    }
}

pub struct Access {
    store: Store,
    accounts: Accounts,
    logins: LoginLimiter,
    /// `limits.ipv6_prefix`: IPv6 clients are told apart by their network of this many bits.
    ipv6_prefix: u8,
    connections: ConnectionLimiter,
    /// `limits.login_timeout`: how long an FTP or SSH connection may take to log in.
    login_timeout: Duration,
    partial_uploads: PartialUploads,
    /// Uploads open in this process, which `stat` and listings show before their commit.
    open_writes: Arc<open_writes::OpenWrites>,
    /// How long a failed login waits before it is answered, in ms (slows guessing down).
    failure_delay_ms: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Access {
    pub fn new(config: &Config, store: Store) -> Result<Arc<Access>, String> {
        Ok(Arc::new(Access {
            store,
            accounts: Accounts::new(&config.users)?,
            logins: LoginLimiter::new(config.limits.login_failures_per_ip, config.limits.ban_time),
            ipv6_prefix: config.limits.ipv6_prefix,
            connections: ConnectionLimiter::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
                config.limits.max_unauthenticated,
            ),
            login_timeout: config.limits.login_timeout,
            partial_uploads: config.storage.partial_uploads,
            open_writes: Default::default(),
            failure_delay_ms: AtomicU64::new(500),
            metrics: Arc::new(Metrics::new()),
        }))
    }

    /// The gateway's metrics (every front-end reports through the user layer).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// How long a failed login waits before it is answered (slows guessing down; tests set 0).
    pub fn set_failure_delay(&self, delay: Duration) {
        self.failure_delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// The account of a user name, if configured.
    pub fn account(&self, user: &str) -> Option<Arc<Account>> {
        self.accounts.get(user)
    }

    /// The shared records kept beside the files (browser sessions, API keys, resumable uploads).
    pub fn records(&self) -> Records {
        Records(self.store.clone())
    }

    /// Who a client is for bans and per-address limits: an IPv4-mapped IPv6 address is the IPv4
    /// address, and an IPv6 address stands for its network of `limits.ipv6_prefix` bits (one host
    /// commonly holds a whole /64, and could rotate through it to dodge a ban).
    pub fn client_key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => ipnet::Ipv6Net::new(v6, self.ipv6_prefix)
                .map(|net| IpAddr::V6(net.network()))
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        }
    }

    /// Admits a new connection: refused while its address is banned or past the connection limits.
    pub fn admit(&self, peer: IpAddr) -> Result<ConnectionPermit, Refusal> {
        self.admit_connection(peer, false)
    }

    /// Admits a connection that logs in after it is made (FTP, SSH): it also holds one of
    /// `limits.max_unauthenticated` slots until its permit is marked `logged_in`, and is to be
    /// closed when that has not happened within [`Access::login_timeout`].
    pub fn admit_before_login(&self, peer: IpAddr) -> Result<ConnectionPermit, Refusal> {
        self.admit_connection(peer, true)
    }

    /// `limits.login_timeout`.
    pub fn login_timeout(&self) -> Duration {
        self.login_timeout
    }

    fn admit_connection(
        &self,
        peer: IpAddr,
        before_login: bool,
    ) -> Result<ConnectionPermit, Refusal> {
        let client = self.client_key(peer);
        if let Some(left) = self.logins.banned_for(client) {
            self.metrics.connection_refused("banned");
            return Err(Refusal::Banned(left));
        }
        self.connections
            .try_acquire(client, before_login)
            .map_err(|e| {
                self.metrics.connection_refused("limit");
                Refusal::Limit(e)
            })
    }

    /// The address's ban, if any (front-ends check it again at login: a ban may start mid-session).
    pub fn banned_for(&self, peer: IpAddr) -> Option<Duration> {
        self.logins.banned_for(self.client_key(peer))
    }

    pub fn active_connections(&self) -> u32 {
        self.connections.active()
    }

    /// Connections (of every protocol) that are open and have not logged in yet.
    pub fn waiting_to_log_in(&self) -> u32 {
        self.connections.unauthenticated()
    }

    /// Password login. Every failure counts towards the address's ban, whatever the protocol.
    pub async fn login_password(
        &self,
        user: &str,
        password: &str,
        peer: SocketAddr,
        protocol: Protocol,
    ) -> Result<UserFs, Refusal> {
        // A check holds one of the client's tries until its outcome is known, so parallel guesses
        // cannot outrun the ban. Credentials that logged in a moment ago are no guess: scheduler
        // jobs starting together from one host are not made to queue.
        let attempt = if self.accounts.recently_verified(user, password) {
            if let Some(left) = self.banned_for(peer.ip()) {
                return Err(Refusal::Banned(left));
            }
            None
        } else {
            match self.logins.begin(self.client_key(peer.ip())).await {
                Ok(attempt) => Some(attempt),
                Err(NoTry::Banned(left)) => return Err(Refusal::Banned(left)),
                Err(NoTry::Busy) => {
                    self.metrics.connection_refused("busy");
                    return Err(Refusal::Busy);
                }
            }
        };
        match self.accounts.verify_password(user, password).await {
            Ok(Some(account)) => {
                drop(attempt);
                self.open_home(account, peer, protocol).await
            }
            Ok(None) => Err(self.fail(attempt, user, peer, protocol).await),
            Err(accounts::Saturated) => {
                self.metrics.connection_refused("busy");
                tracing::warn!(%peer, user, protocol = protocol.as_str(), "login refused: the password verifier is saturated");
                Err(Refusal::Busy)
            }
        }
    }

    /// A session for `user` without a login, for work the gateway does on a user's behalf (MQTT
    /// commands through an external broker act as `mqtt.commands_user`).
    pub async fn session_for(
        &self,
        user: &str,
        protocol: Protocol,
        peer: SocketAddr,
    ) -> Result<UserFs, Refusal> {
        let account = self.accounts.get(user).ok_or(Refusal::BadCredentials)?;
        self.open_home(account, peer, protocol).await
    }

    /// Public-key login: `accepts` says whether one of the account's authorized key lines matches.
    pub async fn login_key(
        &self,
        user: &str,
        accepts: impl Fn(&str) -> bool,
        peer: SocketAddr,
        protocol: Protocol,
    ) -> Result<UserFs, Refusal> {
        if let Some(left) = self.banned_for(peer.ip()) {
            return Err(Refusal::Banned(left));
        }
        match self.accounts.get(user) {
            Some(account) if account.authorized_keys().iter().any(|k| accepts(k)) => {
                self.open_home(account, peer, protocol).await
            }
            _ => Err(self.failed(user, peer, protocol).await),
        }
    }

    /// Records a failed login (logging a ban when it starts one), waits the failure delay, and
    /// returns the refusal to give.
    pub async fn failed(&self, user: &str, peer: SocketAddr, protocol: Protocol) -> Refusal {
        self.fail(None, user, peer, protocol).await
    }

    /// `failed`, for a check that held one of the client's tries (`attempt`) or none.
    async fn fail(
        &self,
        attempt: Option<logins::Attempt<'_>>,
        user: &str,
        peer: SocketAddr,
        protocol: Protocol,
    ) -> Refusal {
        let ip = self.client_key(peer.ip());
        tracing::info!(%peer, user, protocol = protocol.as_str(), "login failed");
        self.metrics.failed_login(protocol.as_str());
        let banned = match attempt {
            Some(attempt) => attempt.failed(),
            None => self.logins.record_failure(ip),
        };
        if banned {
            self.metrics.banned();
            tracing::warn!(
                %ip,
                protocol = protocol.as_str(),
                failures = self.logins.max_failures(),
                ban = ?self.logins.ban_time(),
                "address banned after too many failed logins"
            );
        }
        let delay = self.failure_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        match self.logins.banned_for(ip) {
            Some(left) => Refusal::Banned(left),
            None => Refusal::BadCredentials,
        }
    }

    async fn open_home(
        &self,
        account: Arc<Account>,
        peer: SocketAddr,
        protocol: Protocol,
    ) -> Result<UserFs, Refusal> {
        let ctx = ChangeContext::new(account.name.clone(), protocol.as_str(), peer.to_string());
        // The home is made at the first login, and again at any login that finds it gone (removed
        // by an operator, or lost with the last writes of a Redis master that failed over): a
        // session must never start in a home that does not exist.
        match self.store.stat(&account.home).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => ensure_dir(&self.store, &account.home)
                .await
                .map_err(|e| Refusal::Home(e.to_string()))?,
            Err(e) => return Err(Refusal::Home(e.to_string())),
        }
        account
            .home_ready
            .get_or_try_init(|| account.quota.refresh(&self.store, &account.home))
            .await
            .map_err(|e| Refusal::Home(e.to_string()))?;
        Ok(UserFs::new(
            self.store.clone(),
            account,
            ctx,
            self.partial_uploads,
            self.open_writes.clone(),
            self.metrics.clone(),
            protocol.as_str(),
        ))
    }
}

/// Creates `dir` and its parents as the system (homes appear on first login).
async fn ensure_dir(
    store: &Store,
    dir: &storage_backend::StorePath,
) -> Result<(), storage_backend::StoreError> {
    let ctx = ChangeContext::new("filegate", "system", "");
    let mut path = storage_backend::StorePath::root();
    for seg in dir.segments() {
        path = path.join(seg)?;
        match store.mkdir(&path, &ctx).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    match store.stat(dir).await {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(storage_backend::StoreError::new(
            ErrorKind::NotADirectory,
            format!("{dir} is a file, not a directory"),
        )),
        Err(e) => Err(e),
    }
}

/// The small shared records the HTTP front-end keeps beside files (browser sessions, API keys, the
/// bookkeeping of resumable uploads), with their expiry, seen alike by every gateway of the store.
/// Only records: files are reached through [`UserFs`], and this handle cannot touch them.
#[derive(Clone)]
pub struct Records(Store);

impl Records {
    pub async fn record_put(
        &self,
        table: &str,
        key: &str,
        value: &[u8],
        expires: Option<std::time::SystemTime>,
    ) -> storage_backend::Result<()> {
        self.0.record_put(table, key, value, expires).await
    }

    pub async fn record_get(
        &self,
        table: &str,
        key: &str,
    ) -> storage_backend::Result<Option<Vec<u8>>> {
        self.0.record_get(table, key).await
    }

    pub async fn record_delete(&self, table: &str, key: &str) -> storage_backend::Result<bool> {
        self.0.record_delete(table, key).await
    }

    pub async fn record_swap(
        &self,
        table: &str,
        key: &str,
        expected: Option<&[u8]>,
        value: &[u8],
        expires: Option<std::time::SystemTime>,
    ) -> storage_backend::Result<bool> {
        self.0
            .record_swap(table, key, expected, value, expires)
            .await
    }

    pub async fn record_list(
        &self,
        table: &str,
        after: Option<&str>,
        limit: usize,
    ) -> storage_backend::Result<Vec<(String, Vec<u8>)>> {
        self.0.record_list(table, after, limit).await
    }
}
