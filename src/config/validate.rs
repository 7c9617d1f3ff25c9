//! The second loading stage: checks values that parsed but do not make sense, alone or together.
//!
//! Every check adds a [`Problem`] and goes on, so one run of `filegate check-config` shows all of
//! them. Each message says what is wrong and what to write instead.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::de::format_size;
use super::{
    Config, FtpConfig, HttpConfig, LimitsConfig, MqttConfig, MqttMode, Problem, ServerConfig,
    SftpConfig, StorageBackend, StorageConfig, UserConfig, WebhookConfig,
};

/// Smallest `storage.max_hole_size`.
const MIN_HOLE_SIZE: u64 = 1 << 20;
/// Smallest and largest `storage.chunk_size`.
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(key, message));
    }

    fn non_zero_duration(&mut self, key: &str, value: Duration, example: &str) {
        if value.is_zero() {
            self.add(key, format!("is 0; use a duration such as \"{example}\""));
        }
    }

    fn non_zero(&mut self, key: &str, value: u64, example: u64) {
        if value == 0 {
            self.add(
                key,
                format!("is 0; use a positive number such as {example}"),
            );
        }
    }
}

/// All problems of `config`; empty when it is valid.
pub(super) fn problems(config: &Config) -> Vec<Problem> {
    let mut p = Problems::default();
    server(&config.server, &mut p);
    storage(&config.storage, &mut p);
    ftp(&config.ftp, &mut p);
    sftp(&config.sftp, &mut p);
    mqtt(&config.mqtt, &config.users, &mut p);
    for (i, pattern) in config.events.temp_patterns.iter().enumerate() {
        let key = format!("events.temp_patterns[{i}]");
        if pattern.is_empty() {
            p.add(key, "is empty; write a file name pattern such as \"*.tmp\"");
        } else if pattern.contains('/') {
            p.add(
                key,
                format!("{pattern:?} contains '/'; patterns match file names, not paths, such as \"*.tmp\""),
            );
        }
    }
    p.non_zero_duration("events.history_age", config.events.history_age, "24h");
    p.non_zero("events.max_streams", config.events.max_streams.into(), 4096);
    http(&config.http, &mut p);
    limits(&config.limits, &mut p);
    users(&config.users, &mut p);
    webhooks(&config.webhooks, &config.users, &mut p);
    listeners(config, &mut p);
    p.0
}

/// A name used in keys, URIs or topics: letters, digits, `-`, `_`, `.`.
fn check_name(p: &mut Problems, key: &str, value: &str, example: &str) {
    if value.is_empty() {
        p.add(key, format!("is empty; use a name such as \"{example}\""));
    } else if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        p.add(
            key,
            format!(
                "{value:?} may hold only letters, digits, '-', '_' and '.'; use a name such as \"{example}\""
            ),
        );
    }
}

/// Whether `url` starts with one of `schemes` followed by `://` and a host.
fn has_scheme_and_host(url: &str, schemes: &[&str]) -> bool {
    url.split_once("://").is_some_and(|(scheme, rest)| {
        schemes.contains(&scheme) && {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            !host.is_empty() && !host.starts_with(':')
        }
    })
}

fn server(s: &ServerConfig, p: &mut Problems) {
    check_name(p, "server.id", &s.id, "filegate-1");
    if s.data_dir.as_os_str().is_empty() {
        p.add(
            "server.data_dir",
            "is empty; name a directory for the embedded store and host keys, such as \"data\"",
        );
    }
}

fn storage(s: &StorageConfig, p: &mut Problems) {
    check_name(p, "storage.namespace", &s.namespace, "filegate");
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&s.chunk_size) {
        let how = if s.chunk_size < MIN_CHUNK_SIZE {
            "small"
        } else {
            "large"
        };
        p.add(
            "storage.chunk_size",
            format!(
                "\"{}\" is too {how}; use a size between 64KiB and 64MiB such as \"1MiB\"",
                format_size(s.chunk_size)
            ),
        );
    }
    if s.max_hole_size < MIN_HOLE_SIZE {
        p.add(
            "storage.max_hole_size",
            format!(
                "\"{}\" is too small: SFTP clients that send writes out of order leave gaps for a \
                 moment; use at least \"1MiB\", such as the default \"1GiB\"",
                format_size(s.max_hole_size)
            ),
        );
    }
    p.non_zero_duration("storage.orphan_timeout", s.orphan_timeout, "60s");
    p.non_zero("storage.outbox_limit", s.outbox_limit, 1_000_000);
    match s.backend {
        StorageBackend::Embedded => {
            if s.embedded.path.as_os_str().is_empty() {
                p.add(
                    "storage.embedded.path",
                    "is empty; name the store's file, such as \"data/filegate.redb\"",
                );
            }
        }
        StorageBackend::Redis => {
            let r = &s.redis;
            let sentinel = !r.sentinel_urls.is_empty() || !r.master_name.is_empty();
            // The parser the backend connects with: what passes here is what it can use.
            let redis_url = |p: &mut Problems, key: &str, url: &str| {
                if let Err(e) = storage_backend::redis_url::parse(key, url) {
                    p.add(e.key(), e.problem());
                }
            };
            if !r.cluster && !sentinel {
                redis_url(p, "storage.redis.url", &r.url);
            }
            if r.cluster {
                if r.urls.is_empty() {
                    p.add(
                        "storage.redis.urls",
                        "is empty but storage.redis.cluster = true; list some of the cluster's \
                         nodes, such as [\"redis://10.0.0.1:6379\", \"redis://10.0.0.2:6379\"]",
                    );
                }
                for url in &r.urls {
                    redis_url(p, "storage.redis.urls", url);
                }
                if sentinel {
                    p.add(
                        "storage.redis.cluster",
                        "is true while storage.redis.sentinel_urls or master_name is set; Redis \
                         Cluster and Sentinel are different setups: choose one",
                    );
                }
            } else if !r.urls.is_empty() {
                p.add(
                    "storage.redis.urls",
                    "lists cluster nodes but storage.redis.cluster = false; set cluster = true \
                     (or use storage.redis.url for one server)",
                );
            }
            if sentinel {
                if r.sentinel_urls.is_empty() {
                    p.add(
                        "storage.redis.sentinel_urls",
                        "is empty but storage.redis.master_name is set; list the sentinels, such \
                         as [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]",
                    );
                }
                for url in &r.sentinel_urls {
                    redis_url(p, "storage.redis.sentinel_urls", url);
                }
                // The master's password and database come from storage.redis.url, when set.
                if !r.cluster && !r.url.is_empty() {
                    redis_url(p, "storage.redis.url", &r.url);
                }
                if r.master_name.is_empty() {
                    p.add(
                        "storage.redis.master_name",
                        "is empty but storage.redis.sentinel_urls is set; name the master the \
                         sentinels watch (their `sentinel monitor <name>`), such as \"mymaster\"",
                    );
                }
            }
            p.non_zero_duration("storage.redis.command_timeout", r.command_timeout, "10s");
            if !(1..=64).contains(&r.data_connections) {
                p.add(
                    "storage.redis.data_connections",
                    format!("is {}; use 1 to 64, such as 4", r.data_connections),
                );
            }
        }
    }
}

/// `proxy_protocol` without `trusted_proxies` would let anyone who reaches the port name any
/// client address (dodging bans, getting others banned, forging the `peer` of events).
fn trusted_proxies(
    section: &str,
    proxy_protocol: bool,
    trusted: &[ipnet::IpNet],
    p: &mut Problems,
) {
    if proxy_protocol && trusted.is_empty() {
        p.add(
            format!("{section}.trusted_proxies"),
            format!(
                "is empty while {section}.proxy_protocol = true; list the load balancers whose \
                 PROXY headers are believed, such as [\"10.0.0.5\"] or [\"10.0.0.0/24\"] \
                 (anyone else could claim any client address)"
            ),
        );
    }
}

fn ftp(f: &FtpConfig, p: &mut Problems) {
    trusted_proxies("ftp", f.proxy_protocol, &f.trusted_proxies, p);
    let (lo, hi) = (*f.passive_ports.start(), *f.passive_ports.end());
    if lo == 0 {
        p.add(
            "ftp.passive_ports",
            format!("\"{lo}-{hi}\" includes port 0; use ports 1-65535, such as \"30000-30100\""),
        );
    } else if lo > hi {
        p.add(
            "ftp.passive_ports",
            format!(
                "\"{lo}-{hi}\" runs backwards; write the lower port first, such as \"{hi}-{lo}\""
            ),
        );
    }
    if f.passive_host.chars().any(char::is_whitespace) {
        p.add(
            "ftp.passive_host",
            format!(
                "{:?} contains whitespace; write an address such as \"203.0.113.7\", or \"\" to \
                 announce the control connection's address",
                f.passive_host
            ),
        );
    }
    p.non_zero_duration("ftp.idle_timeout", f.idle_timeout, "10m");
    let tls = &f.tls;
    if tls.enabled {
        for (key, path) in [("ftp.tls.cert", &tls.cert), ("ftp.tls.key", &tls.key)] {
            if path.as_os_str().is_empty() {
                p.add(
                    key,
                    "is empty; name a PEM file, or set ftp.tls.enabled = false",
                );
            } else if !path.is_file() {
                p.add(
                    key,
                    format!(
                        "{} is not a readable file; make one (see certs/) or set ftp.tls.enabled = false",
                        path.display()
                    ),
                );
            }
        }
    } else {
        if tls.required {
            p.add(
                "ftp.tls.required",
                "is true but ftp.tls.enabled is false; enable TLS or set required = false",
            );
        }
        if tls.implicit_listen.is_some() {
            p.add(
                "ftp.tls.implicit_listen",
                "is set but ftp.tls.enabled is false; enable TLS or set implicit_listen = \"\"",
            );
        }
    }
}

fn sftp(s: &SftpConfig, p: &mut Problems) {
    trusted_proxies("sftp", s.proxy_protocol, &s.trusted_proxies, p);
    p.non_zero_duration("sftp.idle_timeout", s.idle_timeout, "10m");
    if s.enabled && s.host_keys.is_empty() {
        p.add(
            "sftp.host_keys",
            "is empty; list at least one key file such as \"data/ssh_host_ed25519_key\" \
             (generated on first start if missing)",
        );
    }
    for (i, path) in s.host_keys.iter().enumerate() {
        if path.as_os_str().is_empty() {
            p.add(
                format!("sftp.host_keys[{i}]"),
                "is empty; name a key file such as \"data/ssh_host_ed25519_key\"",
            );
        }
    }
}

fn mqtt(m: &MqttConfig, users: &[UserConfig], p: &mut Problems) {
    if m.qos > 2 {
        p.add("mqtt.qos", format!("is {}; use 0, 1 or 2", m.qos));
    }
    if m.mode == MqttMode::External && !has_scheme_and_host(&m.url, &["mqtt", "mqtts"]) {
        p.add(
            "mqtt.url",
            format!(
                "{:?} is not an MQTT URL; write mqtt://HOST:PORT (mqtts:// for TLS), such as \
                 \"mqtt://127.0.0.1:1883\"",
                super::mask_url_password(&m.url)
            ),
        );
    }
    if !m.password.is_empty() && m.password_file.is_some() {
        p.add(
            "mqtt.password",
            "is set together with mqtt.password_file; keep one of them",
        );
    }
    let prefix = &m.topic_prefix;
    if prefix.is_empty()
        || prefix.starts_with('/')
        || prefix.ends_with('/')
        || prefix.contains(['+', '#', '\0'])
    {
        p.add(
            "mqtt.topic_prefix",
            format!(
                "{prefix:?} is not a topic prefix; use topic levels without '+', '#' or a leading \
                 or trailing '/', such as \"filegate\" or \"site1/filegate\""
            ),
        );
    }
    if m.listen_v5.is_some() {
        p.add(
            "mqtt.listen_v5",
            "is no longer used: the embedded broker serves MQTT 3.1.1 and MQTT 5 on mqtt.listen; \
             remove the key (clients of both versions connect to mqtt.listen)",
        );
    }
    if !m.anonymous_home.is_empty() {
        if let Err(e) = m.anonymous_home.path() {
            p.add(
                "mqtt.anonymous_home",
                format!("{}, or \"\" for none", e.problem("/public")),
            );
        }
    }
    if m.session_queue == 0 {
        p.add(
            "mqtt.session_queue",
            "is 0; a session must be able to hold at least one message (the default is 1000)",
        );
    }
    if m.commands {
        if m.mode == MqttMode::Off {
            p.add(
                "mqtt.commands",
                "is true but mqtt.mode is \"off\"; set mode = \"embedded\" or \"external\", or commands = false",
            );
        }
        if m.mode == MqttMode::Embedded {
            // On the embedded broker commands act as the user who sent them.
        } else if m.commands_user.is_empty() {
            p.add(
                "mqtt.commands_user",
                "is empty but mqtt.commands is true; name the [[users]] entry whose home and \
                 permissions MQTT commands use",
            );
        } else if !users.iter().any(|u| u.name == m.commands_user) {
            p.add(
                "mqtt.commands_user",
                format!(
                    "{:?} is not a configured user; name one of the [[users]] entries",
                    m.commands_user
                ),
            );
        }
    }
}

fn http(h: &HttpConfig, p: &mut Problems) {
    p.non_zero_duration("http.session_idle", h.session_idle, "30m");
    p.non_zero_duration("http.session_max", h.session_max, "12h");
    if !h.session_idle.is_zero() && h.session_idle > h.session_max {
        p.add(
            "http.session_idle",
            format!(
                "is {} but http.session_max is {}: a session could never be idle that long; make session_idle shorter, such as \"30m\"",
                super::de::format_duration(h.session_idle),
                super::de::format_duration(h.session_max)
            ),
        );
    }
}

fn limits(l: &LimitsConfig, p: &mut Problems) {
    p.non_zero("limits.max_connections", l.max_connections.into(), 1000);
    p.non_zero(
        "limits.max_connections_per_ip",
        l.max_connections_per_ip.into(),
        50,
    );
    p.non_zero(
        "limits.login_failures_per_ip",
        l.login_failures_per_ip.into(),
        5,
    );
    p.non_zero_duration("limits.ban_time", l.ban_time, "5m");
    p.non_zero(
        "limits.max_unauthenticated",
        l.max_unauthenticated.into(),
        100,
    );
    p.non_zero_duration("limits.login_timeout", l.login_timeout, "60s");
    if !(16..=128).contains(&l.ipv6_prefix) {
        p.add(
            "limits.ipv6_prefix",
            format!(
                "is {}; give a prefix length from 16 to 128, such as 64 (a customer's usual \
                 IPv6 network) or 128 (each address on its own)",
                l.ipv6_prefix
            ),
        );
    }
}

fn webhooks(hooks: &[WebhookConfig], users: &[UserConfig], p: &mut Problems) {
    use crate::events::webhook::{event_type, path_glob, signing_key, EVENT_TYPES};
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, h) in hooks.iter().enumerate() {
        let key = |field: &str| format!("webhooks[{i}].{field}");
        check_name(p, &key("name"), &h.name, "ingest");
        if let Some(first) = seen.insert(&h.name, i) {
            p.add(
                key("name"),
                format!(
                    "{:?} is also webhooks[{first}].name; hook names must be unique",
                    h.name
                ),
            );
        }
        if !has_scheme_and_host(&h.url, &["http", "https"]) || url::Url::parse(&h.url).is_err() {
            p.add(
                key("url"),
                format!(
                    "{:?} is not an http:// or https:// URL; write one such as \"https://ingest.example.com/hooks/filegate\"",
                    super::mask_url_password(&h.url)
                ),
            );
        }
        // A secret read from secret_file was checked for emptiness when it was read.
        if h.secret_file.is_none() {
            match signing_key(&h.secret) {
                Err(e) => p.add(key("secret"), e),
                Ok(k) if k.len() < 16 => p.add(
                    key("secret"),
                    "is shorter than 16 characters; receivers verify deliveries with it, so use a long random one (e.g. `openssl rand -base64 32`), or set secret_file",
                ),
                Ok(_) => {}
            }
        }
        for (j, t) in h.events.iter().enumerate() {
            if event_type(t).is_none() {
                p.add(
                    format!("webhooks[{i}].events[{j}]"),
                    format!(
                        "{t:?} is not an event type; use one of {}",
                        EVENT_TYPES
                            .map(|t| t.trim_start_matches("io.filegate."))
                            .join(", ")
                    ),
                );
            }
        }
        for (j, pattern) in h.paths.iter().enumerate() {
            if let Err(e) = path_glob(pattern) {
                p.add(format!("webhooks[{i}].paths[{j}]"), e);
            }
        }
        for (j, user) in h.users.iter().enumerate() {
            if !users.iter().any(|u| &u.name == user) {
                p.add(
                    format!("webhooks[{i}].users[{j}]"),
                    format!("{user:?} is not a configured user; name one of the [[users]] entries"),
                );
            }
        }
        p.non_zero_duration(&key("timeout"), h.timeout, "10s");
        p.non_zero_duration(&key("max_retry_interval"), h.max_retry_interval, "1m");
        p.non_zero(&key("max_backlog"), h.max_backlog, 1_000_000);
    }
}

fn users(users: &[UserConfig], p: &mut Problems) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, u) in users.iter().enumerate() {
        let key = |field: &str| format!("users[{i}].{field}");
        if u.name.is_empty() {
            p.add(
                key("name"),
                "is empty; give the user a login name such as \"alice\"",
            );
        } else if u
            .name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':')
        {
            p.add(
                key("name"),
                format!("{:?} contains whitespace, ':' or a control character; use a name such as \"alice\"", u.name),
            );
        } else if let Some(first) = seen.get(u.name.as_str()) {
            p.add(
                key("name"),
                format!(
                    "{:?} is also users[{first}].name; user names must be unique",
                    u.name
                ),
            );
        } else {
            seen.insert(&u.name, i);
        }

        if u.password_hash.is_empty() {
            if u.authorized_keys.is_empty() {
                p.add(
                    key("password_hash"),
                    format!(
                        "is empty and so is users[{i}].authorized_keys, so {:?} could never log in; \
                         make a hash with `filegate hash-password` or add an SSH public key",
                        u.name
                    ),
                );
            }
        } else if let Err(why) = crate::password::check_argon2id_hash(&u.password_hash) {
            p.add(
                key("password_hash"),
                format!("{why}; make an argon2id hash with `filegate hash-password`"),
            );
        }

        for (k, line) in u.authorized_keys.iter().enumerate() {
            let mut fields = line.split_whitespace();
            let well_formed = matches!(
                (fields.next(), fields.next()),
                (Some(kind), Some(_)) if kind.starts_with("ssh-")
                    || kind.starts_with("ecdsa-")
                    || kind.starts_with("sk-")
            );
            if !well_formed {
                p.add(
                    format!("users[{i}].authorized_keys[{k}]"),
                    "is not an OpenSSH public key line; paste a line such as \
                     \"ssh-ed25519 AAAAC3Nza... alice@laptop\" (a .pub file's content)",
                );
            }
        }

        let example = if u.name.is_empty() || u.name.contains('/') {
            "/alice".to_owned()
        } else {
            format!("/{}", u.name)
        };
        // Parsed when the file was read (`parse_home`); the accounts run on that path.
        if let Err(e) = u.home.path() {
            p.add(key("home"), e.problem(&example));
        }
    }
}

/// The shipped demo user (its password "demo" is published) only while every listener is on
/// loopback, unless `server.allow_demo_user` says the ports are reachable by trusted hosts only
/// (docker-compose.yml publishes them on the host's loopback).
fn demo_user(c: &Config, bound: &[(&str, SocketAddr)], p: &mut Problems) {
    if c.server.allow_demo_user {
        return;
    }
    let Some((key, addr)) = bound.iter().find(|(_, a)| !a.ip().is_loopback()) else {
        return;
    };
    for (i, user) in c.users.iter().enumerate() {
        if user.password_hash == super::DEMO_PASSWORD_HASH {
            p.add(
                format!("users[{i}].password_hash"),
                format!(
                    "is the published demo password (\"{}\" / \"demo\") while {key} is \
                     \"{addr}\", beyond loopback: give the user a password of your own \
                     (`filegate hash-password`), or remove the user and add your own [[users]]; \
                     only if no one but trusted hosts can reach the ports, set \
                     server.allow_demo_user = true (FILEGATE__SERVER__ALLOW_DEMO_USER=true)",
                    user.name
                ),
            );
        }
    }
}

/// Two enabled listeners on one address would fail at start; say so now.
fn listeners(c: &Config, p: &mut Problems) {
    p.non_zero_duration("http.upload_expiry", c.http.upload_expiry, "24h");
    let mut bound: Vec<(&str, SocketAddr)> = Vec::new();
    if c.ftp.enabled {
        bound.push(("ftp.listen", c.ftp.listen));
        if let (true, Some(addr)) = (c.ftp.tls.enabled, c.ftp.tls.implicit_listen) {
            bound.push(("ftp.tls.implicit_listen", addr));
        }
    }
    if c.sftp.enabled {
        bound.push(("sftp.listen", c.sftp.listen));
    }
    if c.mqtt.mode == MqttMode::Embedded {
        bound.push(("mqtt.listen", c.mqtt.listen));
    }
    bound.push(("http.listen", c.http.listen));
    if let Some(addr) = c.http.tls.listen {
        bound.push(("http.tls.listen", addr));
    }
    demo_user(c, &bound, p);
    for (n, (key, addr)) in bound.iter().enumerate() {
        if addr.port() == 0 {
            continue; // port 0: the system picks a free port for each
        }
        if let Some((other, _)) = bound[..n].iter().find(|(_, a)| a == addr) {
            p.add(
                *key,
                format!("\"{addr}\" is also {other}; give each listener its own port"),
            );
        }
    }
}
