//! Test harness shared by every crate's tests: real servers started privately on free ports.
//!
//! A test that needs a server **fails** when it cannot start one; nothing here ever skips. Run
//! `scripts/test`, which installs the servers, or install them yourself (`apt-get install redis-server`).

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A free TCP port on 127.0.0.1 for a server (free when asked; servers retry if another process
/// takes it first).
///
/// It is chosen above Linux's ephemeral range, never by the kernel: a server that a test stops and
/// starts again on the same port (a broker or Redis outage) would otherwise find its port taken by
/// another test's outgoing connection or `bind(0)` listener in the meantime, and its clients would
/// talk to that stranger instead (tests' FTP passive ranges lie below 32768, see tests/common).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let (low, high) = above_ephemeral_range();
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(DRAWS.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        let port = low + (h.finish() % u64::from(high - low + 1)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..={high} after 1000 tries");
}

/// The ports above the kernel's ephemeral range (`net.ipv4.ip_local_port_range`, 32768–60999 by
/// default), or the top 2,000 ports when that range reaches too high to leave room.
fn above_ephemeral_range() -> (u16, u16) {
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u16>().ok())
        .unwrap_or(60999);
    if high < 63535 {
        (high + 1, 65535)
    } else {
        (63536, 65535)
    }
}

/// A private `redis-server` on a free loopback port with its own data directory, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    tls: Option<RedisTls>,
}

/// TLS and a password for private Redis servers: the certificate (PEM, also the CA clients
/// trust) and key the servers present, and the password they require of clients and of each other.
#[derive(Clone, Debug)]
pub struct RedisTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub password: String,
}

impl RedisTls {
    /// `redis-server` arguments: TLS only (no plain port), clients need no certificate,
    /// replication over TLS, the password required and used towards a master.
    fn server_args(&self, tls_port: u16) -> Vec<String> {
        let mut args: Vec<String> = vec!["--port".into(), "0".into()];
        args.extend(self.listener_args(tls_port));
        args.extend([
            "--requirepass".into(),
            self.password.clone(),
            "--masterauth".into(),
            self.password.clone(),
        ]);
        args
    }

    fn listener_args(&self, tls_port: u16) -> Vec<String> {
        vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            self.cert.display().to_string(),
            "--tls-key-file".into(),
            self.key.display().to_string(),
            "--tls-ca-cert-file".into(),
            self.cert.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
            "--tls-replication".into(),
            "yes".into(),
        ]
    }

    /// `redis-cli` arguments to reach a server started with these settings.
    fn cli_args(&self) -> Vec<String> {
        vec![
            "--tls".into(),
            "--cacert".into(),
            self.cert.display().to_string(),
            "-a".into(),
            self.password.clone(),
            "--no-auth-warning".into(),
        ]
    }
}

impl RedisServer {
    /// Starts a server without persistence.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `["--appendonly", "yes"]`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        Self::start_tls(None, extra)
    }

    /// Starts a server that speaks TLS only and requires a password when `tls` is given.
    pub fn start_tls(tls: Option<&RedisTls>, extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for redis");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls: tls.cloned(),
        };
        server.launch(None);
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://` (or `rediss://` for TLS) on 127.0.0.1, database 0, without the password.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL) without waiting for anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        self.launch(Some(port));
    }

    /// Runs `redis-cli` against this server and returns its output (for tests that poke at keys).
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, self.tls.as_ref(), args)
    }

    fn launch(&mut self, fixed_port: Option<u16>) {
        let binary = which("redis-server").unwrap_or_else(|| {
            panic!("redis-server not found on PATH: run scripts/test (it installs it) or `apt-get install redis-server`")
        });
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = fixed_port.unwrap_or_else(free_port);
            let listener = match &self.tls {
                Some(tls) => tls.server_args(port),
                None => vec!["--port".into(), port.to_string()],
            };
            let mut child = Command::new(&binary)
                .args(&listener)
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--protected-mode",
                    "no",
                ])
                .arg("--dir")
                .arg(self.dir.path())
                .args(["--logfile", ""])
                .args(&self.extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            match wait_for_line(&mut child, "Ready to accept connections") {
                Ok(()) => {
                    self.child = Some(child);
                    self.port = port;
                    return;
                }
                Err(log) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = log;
                }
            }
        }
        panic!("redis-server did not start; its last output:\n{last_error}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p <port> <args…>`'s output.
fn redis_cli(port: u16, tls: Option<&RedisTls>, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(tls.map(RedisTls::cli_args).unwrap_or_default())
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli not found on PATH: run scripts/test, which installs redis-tools");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A master that loses nothing it confirmed when it is killed (every write fsynced), and whose
/// replicas sync at once (the default waits 5 s for more replicas to share one transfer).
const DURABLE_MASTER: [&str; 6] = [
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--repl-diskless-sync-delay",
    "0",
];

/// A private Redis Cluster: `masters` masters (and `replicas` replicas of each) on free loopback
/// ports, joined with `redis-cli --cluster create`; every node is killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        Self::start_tls(masters, replicas, None)
    }

    /// A cluster whose nodes speak TLS only (clients, replication and the cluster bus) and
    /// require a password, when `tls` is given.
    pub fn start_tls(masters: usize, replicas: usize, tls: Option<&RedisTls>) -> RedisCluster {
        let mut nodes = Vec::new();
        let tls_cluster = if tls.is_some() { "yes" } else { "no" };
        for _ in 0..masters * (1 + replicas) {
            // The cluster bus port is set explicitly: port + 10000 may not exist.
            let bus = free_port().to_string();
            let mut args = vec![
                "--tls-cluster",
                tls_cluster,
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus,
                "--cluster-node-timeout",
                "1500",
            ];
            args.extend(DURABLE_MASTER);
            nodes.push(RedisServer::start_tls(tls, &args));
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let out = Command::new("redis-cli")
            .args(tls.map(RedisTls::cli_args).unwrap_or_default())
            .args(&args)
            .output()
            .expect("redis-cli not found on PATH: run scripts/test, which installs redis-tools");
        let cluster = RedisCluster { nodes };
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_until_ok();
        cluster
    }

    /// Waits until every live node says the cluster is ok and knows `expected` masters with slots.
    pub fn wait_until_ok(&self) {
        let deadline = std::time::Instant::now() + START_TIMEOUT * 3;
        loop {
            let ok = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && n.cli(&["CLUSTER", "INFO"])
                        .contains("cluster_slots_ok:16384")
            });
            if ok {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the Redis Cluster did not become ok: {}",
                self.nodes[0].cli(&["CLUSTER", "INFO"])
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// Indexes of the nodes that are masters now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].is_running()
                    && self.nodes[i].cli(&["ROLE"]).lines().next() == Some("master")
            })
            .collect()
    }

    /// Master `master`'s replica has every write the master acknowledged so far (killing the
    /// master now loses nothing), waiting up to `limit`.
    pub fn wait_replica_caught_up(&self, master: usize, limit: Duration) -> bool {
        let node = &self.nodes[master];
        let info = node.cli(&["INFO", "replication"]);
        let Some(target) = info.lines().find_map(|l| {
            l.strip_prefix("master_repl_offset:")?
                .trim()
                .parse::<u64>()
                .ok()
        }) else {
            return false;
        };
        let deadline = std::time::Instant::now() + limit;
        loop {
            let replica = node
                .cli(&["INFO", "replication"])
                .lines()
                .find(|l| l.starts_with("slave0:"))
                .and_then(|l| {
                    l.split(',')
                        .find_map(|kv| kv.strip_prefix("offset=")?.parse::<u64>().ok())
                });
            if replica.is_some_and(|o| o >= target) {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Keys stored on each running node (`DBSIZE`).
    pub fn key_counts(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.cli(&["DBSIZE"]).trim().parse().unwrap_or(0))
            .collect()
    }
}

/// A private Redis Sentinel setup: one master, one replica and three sentinels watching them as
/// `mymaster`, on free loopback ports; all killed on drop.
pub struct RedisSentinel {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<Sentinel>,
}

pub const SENTINEL_MASTER_NAME: &str = "mymaster";

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        Self::start_tls(None)
    }

    /// A setup where every server and sentinel speaks TLS only and the data servers require a
    /// password, when `tls` is given. A setup whose replica does not come up or does not receive
    /// the master's writes (seen now and then on this 2-core machine: the replica loses its master
    /// link right after the first sync) is started again.
    pub fn start_tls(tls: Option<&RedisTls>) -> RedisSentinel {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::launch(tls).and_then(|setup| setup.replicating().map(|()| setup)) {
                Ok(setup) => return setup,
                Err(why) => {
                    eprintln!("test-support: the Sentinel setup does not replicate; starting it again: {why}");
                    last = why;
                }
            }
        }
        panic!("the Sentinel setup never replicated: {last}");
    }

    /// Whether a write on the master reaches the replica, and the sentinels still name the
    /// master they were started with.
    fn replicating(&self) -> Result<(), String> {
        let nonce = format!("{:?}", std::time::Instant::now());
        self.master
            .cli(&["SET", "test-support:replication-probe", &nonce]);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self
            .replica
            .cli(&["GET", "test-support:replication-probe"])
            .trim()
            != nonce
        {
            if std::time::Instant::now() > deadline {
                return Err(self.replica.cli(&["INFO", "replication"]));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.master.cli(&["DEL", "test-support:replication-probe"]);
        match self.master_port() {
            Some(p) if p == self.master.port() => Ok(()),
            other => Err(format!("the sentinels name {other:?} as master already")),
        }
    }

    /// The replica has every write the master has acknowledged so far (a failover now loses
    /// nothing), waiting up to `limit`.
    pub fn wait_replica_caught_up(&self, limit: Duration) -> bool {
        let offset = |server: &RedisServer, field: &str| -> Option<u64> {
            server
                .cli(&["INFO", "replication"])
                .lines()
                .find_map(|l| l.strip_prefix(field)?.trim().parse().ok())
        };
        let Some(target) = offset(&self.master, "master_repl_offset:") else {
            return false;
        };
        let deadline = std::time::Instant::now() + limit;
        while offset(&self.replica, "slave_repl_offset:").unwrap_or(0) < target {
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    fn launch(tls: Option<&RedisTls>) -> Result<RedisSentinel, String> {
        let master = RedisServer::start_tls(tls, &DURABLE_MASTER);
        let mport = master.port().to_string();
        let replica = RedisServer::start_tls(
            tls,
            &["--replicaof", "127.0.0.1", &mport, "--appendonly", "yes"],
        );
        let sentinels = (0..3)
            .map(|_| Sentinel::start(master.port(), tls))
            .collect();
        let setup = RedisSentinel {
            master,
            replica,
            sentinels,
        };
        // Ready when the replica has the master's data and every sentinel knows the replica (so
        // it can fail over to it).
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while !setup
            .replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
            || !setup.sentinels.iter().all(|s| {
                s.cli(&["SENTINEL", "REPLICAS", SENTINEL_MASTER_NAME])
                    .contains(&setup.replica.port().to_string())
            })
        {
            if std::time::Instant::now() > deadline {
                return Err(format!(
                    "the replica's link or the sentinels' view of it did not come up: {}",
                    setup.replica.cli(&["INFO", "replication"])
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(setup)
    }

    pub fn urls(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| s.url()).collect()
    }

    /// The master's port as the sentinels report it now.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let out = s.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME]);
            out.lines().nth(1).and_then(|p| p.trim().parse().ok())
        })
    }
}

/// One `redis-server --sentinel` process, killed on drop.
pub struct Sentinel {
    child: Option<Child>,
    port: u16,
    tls: Option<RedisTls>,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(master_port: u16, tls: Option<&RedisTls>) -> Sentinel {
        let binary = which("redis-server").unwrap_or_else(|| {
            panic!("redis-server not found on PATH: run scripts/test (it installs it) or `apt-get install redis-server`")
        });
        let dir = tempfile::tempdir().expect("temp dir for sentinel");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            // Sentinel reads the same options from its file as redis-server from its arguments.
            let listener = match tls {
                Some(tls) => {
                    let mut lines = vec!["port 0".to_string()];
                    let args = tls.listener_args(port);
                    lines.extend(
                        args.chunks(2)
                            .map(|kv| format!("{} {}", kv[0].trim_start_matches("--"), kv[1])),
                    );
                    lines.push(format!(
                        "sentinel auth-pass {SENTINEL_MASTER_NAME} {}",
                        tls.password
                    ));
                    lines.join("\n")
                }
                None => format!("port {port}"),
            };
            std::fs::write(
                &conf,
                format!(
                    "bind 127.0.0.1\nprotected-mode no\ndir {}\n\
                     sentinel monitor {SENTINEL_MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER_NAME} 1000\n\
                     sentinel failover-timeout {SENTINEL_MASTER_NAME} 5000\n{listener}\n",
                    dir.path().display()
                ),
            )
            .unwrap();
            let mut child = Command::new(&binary)
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            match wait_for_port(&mut child, port) {
                Ok(()) => {
                    return Sentinel {
                        child: Some(child),
                        port,
                        tls: tls.cloned(),
                        _dir: dir,
                    }
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = why;
                }
            }
        }
        panic!("redis sentinel did not start: {last_error}");
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, self.tls.as_ref(), args)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A private `mosquitto` broker on a free loopback port, killed on drop. Anonymous access unless
/// started with users.
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    users: Vec<(String, String)>,
    persistent: bool,
    acl: Option<String>,
}

impl Mosquitto {
    /// Starts a broker that requires one of these logins and enforces `acl` (a Mosquitto
    /// `acl_file`'s text).
    pub fn start_with_acl(users: &[(&str, &str)], acl: &str) -> Mosquitto {
        let mut m = Mosquitto {
            child: None,
            port: 0,
            dir: tempfile::tempdir().expect("temp dir for mosquitto"),
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            persistent: false,
            acl: Some(acl.to_string()),
        };
        m.launch(None);
        m
    }

    pub fn start() -> Mosquitto {
        Self::start_with_users(&[])
    }

    /// Starts a broker that requires one of these (user, password) logins.
    pub fn start_with_users(users: &[(&str, &str)]) -> Mosquitto {
        let mut m = Mosquitto {
            child: None,
            port: 0,
            dir: tempfile::tempdir().expect("temp dir for mosquitto"),
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            persistent: false,
            acl: None,
        };
        m.launch(None);
        m
    }

    /// A broker that keeps sessions and queued messages across a graceful restart
    /// ([`Mosquitto::stop_gracefully`] then [`Mosquitto::restart`]).
    pub fn start_persistent() -> Mosquitto {
        let mut m = Mosquitto {
            child: None,
            port: 0,
            dir: tempfile::tempdir().expect("temp dir for mosquitto"),
            users: Vec::new(),
            persistent: true,
            acl: None,
        };
        m.launch(None);
        m
    }

    /// Stops it with SIGTERM, so a persistent broker saves its sessions, and waits for it.
    /// Panics when a persistent broker did not save them: a test of an outage would otherwise only
    /// pass when its subscriber happens to subscribe again before the publisher sends.
    pub fn stop_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            if self.persistent {
                let db = self.persistence_dir().join("mosquitto.db");
                assert!(
                    db.exists(),
                    "mosquitto did not save its sessions to {}",
                    db.display()
                );
            }
        }
    }

    /// Where a persistent broker keeps its sessions: writable by the `mosquitto` user, which the
    /// broker switches to when started as root (the temp dir itself is private to root).
    fn persistence_dir(&self) -> PathBuf {
        self.dir.path().join("sessions")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's process id (for resource measurements).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (kills it first if it still runs).
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        self.launch(Some(port));
    }

    fn launch(&mut self, fixed_port: Option<u16>) {
        let binary = which("mosquitto")
            .or_else(|| Some(PathBuf::from("/usr/sbin/mosquitto")).filter(|p| p.exists()))
            .unwrap_or_else(|| panic!("mosquitto not found: run scripts/test (it installs it) or `apt-get install mosquitto`"));
        let mut auth = "allow_anonymous true\n".to_string();
        if !self.users.is_empty() {
            let passwords = self.dir.path().join("passwords");
            std::fs::write(&passwords, "").unwrap();
            for (user, password) in &self.users {
                let tool = which("mosquitto_passwd")
                    .expect("mosquitto_passwd not found: apt-get install mosquitto");
                let ok = Command::new(tool)
                    .arg("-b")
                    .arg(&passwords)
                    .arg(user)
                    .arg(password)
                    .status()
                    .unwrap();
                assert!(ok.success(), "mosquitto_passwd failed");
            }
            auth = format!(
                "allow_anonymous false\npassword_file {}\n",
                passwords.display()
            );
        }
        if let Some(acl) = &self.acl {
            let file = self.dir.path().join("acl");
            std::fs::write(&file, acl).unwrap();
            auth.push_str(&format!("acl_file {}\n", file.display()));
        }
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = fixed_port.unwrap_or_else(free_port);
            let conf = self.dir.path().join("mosquitto.conf");
            let persistence = if self.persistent {
                let sessions = self.persistence_dir();
                std::fs::create_dir_all(&sessions).expect("mosquitto's session dir");
                // The temp dir is root's alone; the broker (as `mosquitto`) must reach into it.
                for dir in [self.dir.path(), sessions.as_path()] {
                    std::fs::set_permissions(
                        dir,
                        std::os::unix::fs::PermissionsExt::from_mode(0o777),
                    )
                    .expect("open mosquitto's session dir");
                }
                format!(
                    "persistence true\npersistence_location {}/\nautosave_interval 0\n",
                    sessions.display()
                )
            } else {
                "persistence false\n".to_string()
            };
            std::fs::write(
                &conf,
                format!("listener {port} 127.0.0.1\n{auth}{persistence}max_queued_messages 0\nlog_dest stdout\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"),
            )
            .unwrap();
            let mut child = Command::new(&binary)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            // mosquitto buffers its log when it goes to a pipe: wait for the port instead.
            match wait_for_port(&mut child, port) {
                Ok(()) => {
                    self.child = Some(child);
                    self.port = port;
                    return;
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = why;
                }
            }
        }
        panic!("mosquitto did not start; its last output:\n{last_error}");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until something accepts connections on `port`, or the child exits.
fn wait_for_port(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(format!("exited with {status}: {err}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!(
        "nothing listens on port {port} after {START_TIMEOUT:?}"
    ))
}

/// Reads the child's stdout until a line contains `needle`, then keeps draining it in a thread so
/// the child never blocks on a full pipe. Returns the output seen when the child exits or times out.
fn wait_for_line(child: &mut Child, needle: &str) -> Result<(), String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let wanted = needle.to_string();
    std::thread::spawn(move || {
        let mut seen = String::new();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let mut ready = false;
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if !ready {
                seen.push_str(&line);
                if line.contains(&wanted) {
                    ready = true;
                    let _ = tx.send(Ok(()));
                }
            }
            line.clear();
        }
        if !ready {
            let _ = tx.send(Err(seen));
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(r) => r,
        Err(_) => Err(format!("no {needle:?} within {START_TIMEOUT:?}")),
    }
}

/// The full path of a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
