//! The gateway's configuration: one TOML file overridden by `FILEGATE__SECTION__KEY` environment variables.
//!
//! Loading has two stages, as DESIGN.md's "Configuration" asks: serde parses the merged sources into
//! the structs below (an unknown key or a value of the wrong shape stops there, naming the key and the
//! file or variable it came from), then [`Config::validate`] checks the values together and returns
//! every problem at once. Defaults live in the `Default` impls and equal DESIGN.md's values; the
//! shipped `config/filegate.toml` is parsed by a unit test so the two cannot drift.

mod de;
mod error;
mod home;
mod mask;
mod sources;
mod validate;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use de::{format_duration, format_size, parse_size};
pub use error::{ConfigError, Problem};
pub use home::{parse_home, Home, HomeError};
/// The one masking rule for URLs (the storage crate's, so its messages show URLs the same way).
pub use storage_backend::{mask_url_list, mask_url_password};

/// Where `filegate` looks for its configuration when no `--config` is given (relative to the
/// working directory). A missing file is an error, also at this default path: the repository ships
/// it, and silently running on built-in defaults would hide a wrong working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/filegate.toml";

/// Prefix of the environment variables that override config keys: `FILEGATE__STORAGE__BACKEND`
/// sets `storage.backend`; `__` separates the levels.
pub const ENV_PREFIX: &str = "FILEGATE__";

/// The whole configuration, one field per TOML section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub ftp: FtpConfig,
    pub sftp: SftpConfig,
    pub mqtt: MqttConfig,
    pub events: EventsConfig,
    pub http: HttpConfig,
    pub limits: LimitsConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookConfig>,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// This gateway's name; events carry `source = "filegate://{id}"`.
    #[serde(deserialize_with = "de::text::deserialize")]
    pub id: String,
    /// Embedded store and generated host keys.
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// How long running transfers may finish after SIGTERM.
    #[serde(with = "de::duration")]
    pub shutdown_grace: Duration,
    /// Start with the shipped demo user although a listener is beyond loopback.
    pub allow_demo_user: bool,
}

/// The hash of the shipped demo user's published password, "demo" (config/filegate.toml,
/// config/docker.toml): refused beyond loopback unless `server.allow_demo_user`.
pub const DEMO_PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$bYQECSIWkr9WqigrBXvx5Q$27Erm9thj+GmiTDrJncZ8M/PNzYAsL+0U05A9yMXv8s";

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            id: "filegate-1".into(),
            data_dir: "data".into(),
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(30),
            allow_demo_user: false,
        }
    }
}

/// `server.log_format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// Key prefix: several gateways or tenants can share one Redis.
    #[serde(deserialize_with = "de::text::deserialize")]
    pub namespace: String,
    /// Size new files are cut into, 64KiB..=64MiB.
    #[serde(with = "de::size")]
    pub chunk_size: u64,
    /// Largest file; 0 = unlimited.
    #[serde(with = "de::size")]
    pub max_file_size: u64,
    /// Most bytes of one file that may be zeros nobody wrote (gaps left by writes past the end
    /// or inside a chunk): they are stored and hashed, but cost the client nothing to send.
    #[serde(with = "de::size")]
    pub max_hole_size: u64,
    pub partial_uploads: PartialUploads,
    /// How long a stopped gateway's unfinished work is kept before its chunks are reclaimed.
    #[serde(with = "de::duration")]
    pub orphan_timeout: Duration,
    /// How long chunks of a replaced or deleted version stay readable for readers already started.
    #[serde(with = "de::duration")]
    pub gc_grace: Duration,
    /// Most unpublished events the outbox holds; at the limit changes are refused, never dropped.
    pub outbox_limit: u64,
    pub redis: StorageRedisConfig,
    pub embedded: StorageEmbeddedConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Embedded,
            namespace: "filegate".into(),
            chunk_size: 512 << 10,
            max_file_size: 0,
            max_hole_size: storage_backend::MAX_HOLE_BYTES,
            partial_uploads: PartialUploads::Keep,
            orphan_timeout: Duration::from_secs(60),
            gc_grace: Duration::from_secs(60),
            outbox_limit: 1_000_000,
            redis: StorageRedisConfig::default(),
            embedded: StorageEmbeddedConfig::default(),
        }
    }
}

/// `storage.backend`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// A redb file under `storage.embedded.path`; no server needed.
    Embedded,
    /// A Redis server at `storage.redis.url`.
    Redis,
}

/// `storage.partial_uploads`: what becomes of an upload cut off midway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartialUploads {
    /// Commit the bytes that arrived, flagged incomplete, so the client can resume.
    Keep,
    /// Drop them; the previous version stays.
    Discard,
}

/// `[storage.redis]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageRedisConfig {
    /// `redis://` or `rediss://` (TLS) URL of a standalone server. With Sentinel, its password and
    /// database apply to the master.
    pub url: String,
    /// Redis Cluster: `urls` lists some of its nodes.
    pub cluster: bool,
    /// Redis Cluster seed nodes (any of them; the rest are discovered).
    pub urls: Vec<String>,
    /// Redis Sentinel: the sentinels' URLs.
    pub sentinel_urls: Vec<String>,
    /// Redis Sentinel: the name of the master the sentinels watch.
    #[serde(deserialize_with = "de::text::deserialize")]
    pub master_name: String,
    /// A file holding the password, instead of one in the URL; `""` = none.
    #[serde(with = "de::opt_path")]
    pub password_file: Option<PathBuf>,
    /// How long one Redis command may take before the operation fails.
    #[serde(with = "de::duration")]
    pub command_timeout: Duration,
    /// Connections that carry chunk traffic.
    pub data_connections: usize,
    /// The content of `password_file`, read by [`Config::load`] (trailing newline removed).
    #[serde(skip)]
    pub password_from_file: Option<String>,
}

impl Default for StorageRedisConfig {
    fn default() -> Self {
        StorageRedisConfig {
            url: "redis://127.0.0.1:6379/0".into(),
            cluster: false,
            urls: Vec::new(),
            sentinel_urls: Vec::new(),
            master_name: String::new(),
            password_file: None,
            command_timeout: Duration::from_secs(10),
            data_connections: 4,
            password_from_file: None,
        }
    }
}

/// `[storage.embedded]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageEmbeddedConfig {
    /// The redb file, relative to the working directory unless absolute.
    pub path: PathBuf,
}

impl Default for StorageEmbeddedConfig {
    fn default() -> Self {
        StorageEmbeddedConfig {
            path: "data/filegate.redb".into(),
        }
    }
}

/// `[ftp]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FtpConfig {
    pub enabled: bool,
    #[serde(with = "de::addr")]
    pub listen: SocketAddr,
    /// Ports for passive data connections, both ends included.
    #[serde(with = "de::port_range")]
    pub passive_ports: RangeInclusive<u16>,
    /// Bind every passive port at startup and share each among clients of different addresses.
    pub shared_passive_ports: bool,
    /// Address announced in PASV replies; empty = the control connection's local address.
    #[serde(deserialize_with = "de::text::deserialize")]
    pub passive_host: String,
    #[serde(with = "de::duration")]
    pub idle_timeout: Duration,
    /// Allow PORT/EPRT.
    pub active_mode: bool,
    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the real client.
    pub proxy_protocol: bool,
    /// Whose PROXY headers are believed: connections from anywhere else are closed.
    #[serde(with = "de::cidrs")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The type a session is in until the client sends `TYPE`.
    pub default_type: FtpType,
    pub tls: FtpTlsConfig,
}

/// `ftp.default_type`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FtpType {
    /// RFC 959's default: line endings are converted (CRLF on the wire, LF stored).
    Ascii,
    /// Bytes move as they are until the client sends `TYPE A` (vsftpd-like for clients that
    /// never send `TYPE I`).
    Binary,
}

impl Default for FtpConfig {
    fn default() -> Self {
        FtpConfig {
            enabled: true,
            listen: loopback(2121),
            passive_ports: 30000..=30100,
            passive_host: String::new(),
            shared_passive_ports: false,
            idle_timeout: Duration::from_secs(600),
            active_mode: false,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            default_type: FtpType::Ascii,
            tls: FtpTlsConfig::default(),
        }
    }
}

/// `[ftp.tls]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FtpTlsConfig {
    /// Offer explicit TLS (`AUTH TLS`).
    pub enabled: bool,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Refuse login before `AUTH TLS`.
    pub required: bool,
    /// Implicit TLS listener (TLS from the first byte); `None` (`""`) = off.
    #[serde(with = "de::opt_addr")]
    pub implicit_listen: Option<SocketAddr>,
}

impl Default for FtpTlsConfig {
    fn default() -> Self {
        FtpTlsConfig {
            enabled: false,
            cert: "certs/ftp.crt".into(),
            key: "certs/ftp.key".into(),
            required: false,
            implicit_listen: None,
        }
    }
}

/// `[sftp]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SftpConfig {
    pub enabled: bool,
    #[serde(with = "de::addr")]
    pub listen: SocketAddr,
    /// Host key files, generated on first start if missing.
    pub host_keys: Vec<PathBuf>,
    /// An SSH connection with no traffic for this long is closed.
    #[serde(with = "de::duration")]
    pub idle_timeout: Duration,
    /// Every connection starts with a PROXY protocol header (v1 or v2) naming the real client.
    pub proxy_protocol: bool,
    /// Whose PROXY headers are believed: connections from anywhere else are closed.
    #[serde(with = "de::cidrs")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Also offer `ssh-rsa` (RSA signatures with SHA-1), for clients too old for rsa-sha2.
    pub allow_ssh_rsa_sha1: bool,
}

impl Default for SftpConfig {
    fn default() -> Self {
        SftpConfig {
            enabled: true,
            listen: loopback(2222),
            host_keys: vec![
                "data/ssh_host_ed25519_key".into(),
                "data/ssh_host_rsa_key".into(),
            ],
            idle_timeout: Duration::from_secs(600),
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            allow_ssh_rsa_sha1: false,
        }
    }
}

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    pub mode: MqttMode,
    /// The embedded broker's listener (MQTT 3.1.1 and 5).
    #[serde(with = "de::addr")]
    pub listen: SocketAddr,
    /// Gone: both versions are served on `listen`. Kept only to say so when an old file has it.
    #[serde(with = "de::opt_addr", skip_serializing)]
    pub listen_v5: Option<SocketAddr>,
    /// The embedded broker over MQTT-over-WebSocket (path `/mqtt`); `None` (`""`) = off.
    #[serde(with = "de::opt_addr")]
    pub ws_listen: Option<SocketAddr>,
    /// The embedded broker over TLS (`mqtts`).
    pub tls: MqttTlsConfig,
    /// Embedded broker, `allow_anonymous = true`: the store path whose events anonymous clients
    /// see (`""`: none). Parsed when read, by the rule of `[[users]].home`.
    #[serde(deserialize_with = "home::deserialize_text")]
    pub anonymous_home: Home,
    /// Embedded broker: how long a persistent session outlives its connection at most.
    #[serde(with = "de::duration")]
    pub session_expiry: Duration,
    /// Embedded broker: messages kept for one session (connected and slow, or away) at most.
    pub session_queue: usize,
    /// Embedded broker: sessions (connected or kept for a client that is away) at most.
    pub max_sessions: usize,
    /// The external broker: `mqtt://` or `mqtts://` (TLS).
    pub url: String,
    #[serde(deserialize_with = "de::text::deserialize")]
    pub username: String,
    #[serde(deserialize_with = "de::text::deserialize")]
    pub password: String,
    /// A file holding the password instead of `password`; `""` = none.
    #[serde(with = "de::opt_path")]
    pub password_file: Option<PathBuf>,
    /// Embedded broker: let subscribers in without logging in as a `[[users]]` entry.
    pub allow_anonymous: bool,
    #[serde(deserialize_with = "de::text::deserialize")]
    pub topic_prefix: String,
    /// QoS of published events, 0..=2.
    pub qos: u8,
    /// Allow file operations over MQTT.
    pub commands: bool,
    /// The user whose home and permissions MQTT commands use.
    #[serde(deserialize_with = "de::text::deserialize")]
    pub commands_user: String,
    /// The content of `password_file`, read by [`Config::load`] (trailing newline removed).
    #[serde(skip)]
    pub password_from_file: Option<String>,
}

impl MqttConfig {
    /// The password to log in to the external broker with: `password_file`'s content, else
    /// `password`, else none.
    pub fn effective_password(&self) -> Option<&str> {
        self.password_from_file
            .as_deref()
            .or((!self.password.is_empty()).then_some(self.password.as_str()))
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            mode: MqttMode::Embedded,
            listen: loopback(1883),
            listen_v5: None,
            ws_listen: None,
            tls: MqttTlsConfig::default(),
            anonymous_home: Home::default(),
            session_expiry: Duration::from_secs(3600),
            session_queue: 1000,
            max_sessions: 10_000,
            url: "mqtt://127.0.0.1:1883".into(),
            username: String::new(),
            password: String::new(),
            password_file: None,
            allow_anonymous: false,
            topic_prefix: "filegate".into(),
            qos: 1,
            commands: false,
            commands_user: String::new(),
            password_from_file: None,
        }
    }
}

/// `[mqtt.tls]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// The embedded broker's TLS listener; `None` (`""`) = off.
    #[serde(with = "de::opt_addr")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl Default for MqttTlsConfig {
    fn default() -> Self {
        MqttTlsConfig {
            listen: None,
            cert: "certs/mqtt.crt".into(),
            key: "certs/mqtt.key".into(),
        }
    }
}

/// `mqtt.mode`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MqttMode {
    /// An in-process broker on `mqtt.listen`.
    Embedded,
    /// Publish to the broker at `mqtt.url`.
    External,
    /// No MQTT at all (events stay in the outbox up to `storage.outbox_limit`).
    Off,
}

/// The temporary names of common clients (each checked against the client's source or manual;
/// `docs/events.md` lists them). None matches an ordinary final name such as `report.csv`,
/// `.profile` or `.gitignore`.
pub const DEFAULT_TEMP_PATTERNS: [&str; 11] = [
    // WinSCP (its "transfer to temporary filename" option).
    "*.filepart",
    // Browsers, wget/curl scripts, rclone 1.63+ (`name.XXXXXXXX.partial`, --partial-suffix).
    "*.part",
    "*.partial",
    "*.tmp",
    // lftp with xfer:use-temp-file (xfer:temp-file-name, default `.in.*`).
    ".in.*",
    // rsync: `.name.XXXXXX` (mkstemp's six characters) beside the final name.
    ".*.??????",
    // gedit and other GIO programs (g_file_replace): `.goutputstream-XXXXXX`.
    ".goutputstream-*",
    // vim: swap files `.name.swp` (`.swo`, `.swn`, …), the `4913` write test, `name~` backups
    // (emacs too).
    ".*.sw?",
    "4913",
    "*~",
    // emacs auto-save files.
    "#*#",
];

/// `[events]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Glob patterns of temporary upload names that are not announced until renamed.
    pub temp_patterns: Vec<String>,
    /// Delivered events kept for replay (`GET /api/v1/events?after=`, SSE resume), at most this
    /// many; 0 keeps none.
    pub history_max: u64,
    /// Delivered events older than this leave the history.
    #[serde(with = "de::duration")]
    pub history_age: Duration,
    /// Live event streams (SSE and WebSocket) one gateway serves at once.
    pub max_streams: u32,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            temp_patterns: DEFAULT_TEMP_PATTERNS.map(String::from).to_vec(),
            history_max: 100_000,
            history_age: Duration::from_secs(24 * 3600),
            max_streams: 4096,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Plain HTTP: the probes (`/healthz`, `/readyz`, `/metrics`), the file API and the web UI.
    #[serde(with = "de::addr")]
    pub listen: SocketAddr,
    /// A resumable (tus) upload nobody has written to for this long is given up.
    #[serde(with = "de::duration")]
    pub upload_expiry: Duration,
    pub tls: HttpTlsConfig,
    /// A browser session (cookie) ends after this long without a request.
    #[serde(with = "de::duration")]
    pub session_idle: Duration,
    /// A browser session ends this long after its login, however busy.
    #[serde(with = "de::duration")]
    pub session_max: Duration,
    /// Session cookies get `Secure` (sent over HTTPS only) even on a plain listener: for a
    /// gateway behind a TLS-terminating proxy. A TLS listener always sets it.
    pub secure_cookies: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: loopback(9090),
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            upload_expiry: Duration::from_secs(24 * 3600),
            tls: HttpTlsConfig::default(),
        }
    }
}

/// `[http.tls]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpTlsConfig {
    /// HTTPS listener serving everything `http.listen` serves; `None` (`""`) = off.
    #[serde(with = "de::opt_addr")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl Default for HttpTlsConfig {
    fn default() -> Self {
        HttpTlsConfig {
            listen: None,
            cert: "certs/http.crt".into(),
            key: "certs/http.key".into(),
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    /// Failed logins per client IP and minute, across all protocols, before a ban.
    pub login_failures_per_ip: u32,
    #[serde(with = "de::duration")]
    pub ban_time: Duration,
    /// IPv6 clients are counted (bans, per-address limits) by their network of this many bits.
    pub ipv6_prefix: u8,
    /// FTP and SSH connections not logged in yet, at once.
    pub max_unauthenticated: u32,
    /// How long an FTP or SSH connection may take from connecting to a successful login.
    #[serde(with = "de::duration")]
    pub login_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 1000,
            max_connections_per_ip: 50,
            login_failures_per_ip: 5,
            ban_time: Duration::from_secs(300),
            ipv6_prefix: 64,
            max_unauthenticated: 100,
            login_timeout: Duration::from_secs(60),
        }
    }
}

/// One `[[users]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    #[serde(deserialize_with = "de::text::deserialize")]
    pub name: String,
    /// argon2id PHC string (`filegate hash-password` makes one); empty = no password login.
    pub password_hash: String,
    /// OpenSSH public key lines for SFTP.
    pub authorized_keys: Vec<String>,
    /// The user's root in the store, an absolute store path such as `/demo`; parsed when read
    /// ([`parse_home`]), and the gateway runs on the parsed [`Home::path`].
    pub home: Home,
    pub permissions: Vec<Permission>,
    /// Most bytes the user's home may hold; `None` (`"0"` or absent) = no limit.
    #[serde(with = "de::opt_size")]
    pub quota_bytes: Option<u64>,
    /// Most files the user's home may hold; `None` (`0` or absent) = no limit.
    #[serde(with = "de::opt_count")]
    pub quota_files: Option<u64>,
    /// Upload bandwidth in bytes per second; `None` = no limit.
    #[serde(with = "de::opt_size")]
    pub bandwidth_up: Option<u64>,
    /// Download bandwidth in bytes per second; `None` = no limit.
    #[serde(with = "de::opt_size")]
    pub bandwidth_down: Option<u64>,
}

/// One `[[webhooks]]` entry: matching events are POSTed to `url` as CloudEvents, signed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the hook in logs, metrics and its delivery cursor in the store; renaming a hook
    /// makes it a new one (it starts at the newest event).
    #[serde(deserialize_with = "de::text::deserialize")]
    pub name: String,
    /// `http://` or `https://` (certificates checked against the system's roots).
    pub url: String,
    /// The shared secret deliveries are signed with (HMAC-SHA256, Standard Webhooks); at least 16
    /// characters, or `whsec_` and base64.
    pub secret: String,
    /// Read the secret from this file instead; `""` = none.
    #[serde(with = "de::opt_path")]
    pub secret_file: Option<PathBuf>,
    /// Event types to deliver (`file.created` or `io.filegate.file.created`); empty = all.
    pub events: Vec<String>,
    /// Path globs (`/in/**/*.csv`; `*` stays within a segment, `**` spans them); empty = all.
    pub paths: Vec<String>,
    /// Only events caused by these users; empty = all.
    pub users: Vec<String>,
    /// One delivery attempt's limit.
    #[serde(with = "de::duration")]
    pub timeout: Duration,
    /// Retries back off exponentially from 1 s up to this.
    #[serde(with = "de::duration")]
    pub max_retry_interval: Duration,
    /// When the receiver falls this many events behind, the oldest are skipped (logged as an
    /// error and counted) so the store does not grow without bound.
    pub max_backlog: u64,
    /// The content of `secret_file`, read by [`Config::load`] (trailing newline removed).
    #[serde(skip)]
    pub secret_from_file: Option<String>,
}

impl WebhookConfig {
    /// `secret_file`'s content, else `secret`.
    pub fn effective_secret(&self) -> &str {
        self.secret_from_file.as_deref().unwrap_or(&self.secret)
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            name: String::new(),
            url: String::new(),
            secret: String::new(),
            secret_file: None,
            events: Vec::new(),
            paths: Vec::new(),
            users: Vec::new(),
            timeout: Duration::from_secs(10),
            max_retry_interval: Duration::from_secs(60),
            max_backlog: 1_000_000,
            secret_from_file: None,
        }
    }
}

impl UserConfig {
    pub fn can(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }
}

/// One entry of `users.permissions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    List,
    Read,
    Write,
    Delete,
    Mkdir,
    Rename,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Permission::List,
        Permission::Read,
        Permission::Write,
        Permission::Delete,
        Permission::Mkdir,
        Permission::Rename,
    ];
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

impl Config {
    /// Reads the TOML file at `path`, applies the `FILEGATE__…` variables found in `env` (pass
    /// [`process_env`]`()` in the binary, a literal list in tests), validates the result and reads
    /// the password files it names.
    pub fn load<I, K, V>(path: &Path, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        sources::load(&text, &path.display().to_string(), env)
    }

    /// Like [`Config::load`] with the file's text given directly; `origin` names it in messages.
    pub fn load_str<I, K, V>(text: &str, origin: &str, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        sources::load(text, origin, env)
    }

    /// The second loading stage: checks every value and returns all problems at once, each naming
    /// its key and the fix. Reads no file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let problems = validate::problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    /// The effective configuration as TOML, secrets masked, for `filegate check-config`.
    pub fn to_masked_toml(&self) -> String {
        mask::to_masked_toml(self)
    }

    /// The `[storage]` section in the storage crate's terms. The Redis password is the one
    /// [`Config::load`] read from `storage.redis.password_file`.
    pub fn to_store_config(&self) -> storage_backend::StoreConfig {
        let s = &self.storage;
        let backend = match s.backend {
            StorageBackend::Embedded => {
                storage_backend::BackendConfig::Embedded(storage_backend::EmbeddedConfig {
                    path: Some(s.embedded.path.clone()),
                })
            }
            StorageBackend::Redis => {
                let mut redis = storage_backend::RedisConfig::new(s.redis.url.clone());
                if s.redis.cluster {
                    redis.cluster_urls = s.redis.urls.clone();
                } else if !s.redis.sentinel_urls.is_empty() {
                    redis.sentinel_urls = s.redis.sentinel_urls.clone();
                    redis.master_name = s.redis.master_name.clone();
                }
                redis.password = s.redis.password_from_file.clone();
                redis.command_timeout = s.redis.command_timeout;
                redis.data_connections = s.redis.data_connections;
                storage_backend::BackendConfig::Redis(redis)
            }
        };
        storage_backend::StoreConfig {
            backend,
            namespace: s.namespace.clone(),
            chunk_size: s.chunk_size,
            max_file_size: s.max_file_size,
            max_hole_size: s.max_hole_size,
            orphan_timeout: s.orphan_timeout,
            gc_grace: s.gc_grace,
            outbox_limit: s.outbox_limit,
            history_max: self.events.history_max,
            history_age: self.events.history_age,
        }
    }

    /// One line saying where the files are, for the startup message, such as
    /// `storage embedded at data/filegate.redb (namespace filegate)`. Secrets are masked.
    pub fn describe_storage(&self) -> String {
        let s = &self.storage;
        match s.backend {
            StorageBackend::Embedded => format!(
                "storage embedded at {} (namespace {})",
                s.embedded.path.display(),
                s.namespace
            ),
            StorageBackend::Redis if s.redis.cluster => format!(
                "storage redis cluster at {} (namespace {})",
                mask_url_list(&s.redis.urls),
                s.namespace
            ),
            StorageBackend::Redis if !s.redis.sentinel_urls.is_empty() => format!(
                "storage redis master {:?} of sentinels {} (namespace {})",
                s.redis.master_name,
                mask_url_list(&s.redis.sentinel_urls),
                s.namespace
            ),
            StorageBackend::Redis => format!(
                "storage redis at {} (namespace {})",
                mask_url_password(&s.redis.url),
                s.namespace
            ),
        }
    }
}

/// The process's `FILEGATE__…` environment variables, for [`Config::load`]. Names and values that
/// are not UTF-8 are converted lossily (and then fail to match a key or a value, with a message).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .filter(|(k, _)| sources::is_config_var(k))
        .collect()
}

#[cfg(test)]
mod tests;
