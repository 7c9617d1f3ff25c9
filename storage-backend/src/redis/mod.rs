//! The Redis backend: metadata in one hash slot per namespace, changed only by Lua scripts (each one
//! atomic step, events included); chunk values spread over the cluster, on connections of their own.
//!
//! Key layout (namespace `N`; `docs/storage.md` has the full table):
//! - `{N}:ctr` counters (ino, vid, cid, sid, seq, acked); `{N}:i:<ino>` inodes; `{N}:d:<ino>` and
//!   `{N}:l:<ino>` directory entries (name → inode, and names in order for paging);
//!   `{N}:v:<vid>` versions with their chunk maps and reference counts; `{N}:cr` chunk reference
//!   counts; `{N}:gc` chunks due for deletion; `{N}:s:<sid>`, `{N}:os:<owner>`, `{N}:owners` write
//!   sessions and read pins per gateway, with the gateways' leases; `{N}:ev` the event outbox;
//!   `{N}:cur` consumer cursors (webhooks: delivered up to which event).
//! - `N:c:{<owner>:<n>}` chunk values: each its own hash tag, so Redis Cluster spreads them over
//!   masters. Chunk ids are `owner << 32 | n`: every gateway process takes an owner number when it
//!   starts and numbers its chunks itself, so storing a chunk needs no trip to allocate it, and the
//!   chunks a dead gateway left can be found by its owner number.
//!
//! Connecting (one server, a cluster, or the master Sentinel names) is here; calling the Lua
//! scripts in `scripts`, turning Redis errors into store errors in `errors`, encodings in `keys`,
//! and the operations by what they touch: `namespace`, `files` (sessions, chunks, commits, reads),
//! `outbox`, `maintenance`, `records`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use keys::{chunk_id, chunk_key};
use link::{Link, SentinelLink};
use scripts::Scripts;

use crate::config::RedisConfig;
use crate::error::{Result, StoreError};
use crate::seam::BackendSettings;

mod errors;
mod files;
mod keys;
mod link;
mod maintenance;
mod namespace;
mod outbox;
mod records;
mod scripts;
pub mod url;

use url::{connection_info, connection_infos, invalid_url};

pub(crate) struct RedisBackend {
    settings: BackendSettings,
    url_shown: String,
    meta: Link,
    data: Vec<Link>,
    next_data: AtomicUsize,
    scripts: Scripts,
    /// `{N}:` — every metadata key starts with it.
    prefix: String,
    ctr_key: String,
    timeout: Duration,
    lease_known: AtomicBool,
    /// This process's owner number (as text, the form the scripts use).
    owner: String,
    next_chunk: AtomicU64,
}

/// Owner numbers stay below 2^21 so that chunk ids (`owner << 32 | n`) stay below 2^53, the largest
/// integer Lua's numbers hold exactly.
const MAX_OWNER: u64 = 1 << 21;

impl RedisBackend {
    pub async fn open(config: &RedisConfig, settings: BackendSettings) -> Result<Self> {
        let (url_shown, meta, data) = if !config.cluster_urls.is_empty() {
            connect_cluster(config).await?
        } else if !config.sentinel_urls.is_empty() {
            connect_sentinel(config).await?
        } else {
            connect_direct(config).await?
        };
        let prefix = format!("{{{}}}:", settings.namespace);
        let backend = RedisBackend {
            ctr_key: format!("{prefix}ctr"),
            prefix,
            url_shown,
            meta,
            data,
            next_data: AtomicUsize::new(0),
            scripts: Scripts::load(),
            timeout: config.command_timeout,
            lease_known: AtomicBool::new(false),
            owner: String::new(),
            next_chunk: AtomicU64::new(0),
            settings,
        };
        let mut backend = backend;
        let _: i64 = backend.run(&mut backend.script("init", None)).await?;
        let owner: u64 = backend.run(&mut backend.script("new_owner", None)).await?;
        if owner >= MAX_OWNER {
            return Err(StoreError::unavailable(format!(
                "namespace {} has used up its {MAX_OWNER} gateway start numbers; move to a new storage.namespace",
                backend.settings.namespace
            )));
        }
        backend.owner = owner.to_string();
        backend.next_chunk = AtomicU64::new(chunk_id(owner, 0));
        backend.heartbeat().await?;
        Ok(backend)
    }

    pub fn describe(&self) -> String {
        format!(
            "redis at {} (namespace {})",
            self.url_shown, self.settings.namespace
        )
    }

    fn chunk_key(&self, id: u64) -> String {
        chunk_key(&self.settings.namespace, id)
    }

    fn data_conn(&self) -> Link {
        let i = self.next_data.fetch_add(1, Ordering::Relaxed) % self.data.len();
        self.data[i].clone()
    }

    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.meta.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }
}

type Links = (String, Link, Vec<Link>);

/// One server: a metadata connection and `data_connections` for chunks, each a connection manager.
async fn connect_direct(config: &RedisConfig) -> Result<Links> {
    let shown = crate::mask::mask_url_password(&config.url);
    let info = connection_info("storage.redis.url", &config.url, config.password.as_deref())?;
    let client =
        redis::Client::open(info).map_err(|e| invalid_url("storage.redis.url", &shown, e))?;
    let manager_config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(config.command_timeout))
        .set_connection_timeout(Some(config.command_timeout.min(Duration::from_secs(5))))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    let connect = || async {
        client
            .get_connection_manager_with_config(manager_config.clone())
            .await
            .map(Link::Direct)
            .map_err(|e| {
                StoreError::unavailable(format!("cannot connect to Redis at {shown}: {e}"))
                    .with_source(e)
            })
    };
    let meta = connect().await?;
    let mut data = Vec::new();
    for _ in 0..config.data_connections.max(1) {
        data.push(connect().await?);
    }
    Ok((shown.clone(), meta, data))
}

/// A Redis Cluster: the cluster connection keeps one connection per node and routes each command
/// by its key's slot, so one handle serves metadata and another (own connections) serves chunks.
async fn connect_cluster(config: &RedisConfig) -> Result<Links> {
    let shown = format!(
        "cluster {}",
        crate::mask::mask_url_list(&config.cluster_urls)
    );
    let nodes = connection_infos("storage.redis.urls", &config.cluster_urls)?;
    let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
        .response_timeout(config.command_timeout)
        .connection_timeout(config.command_timeout.min(Duration::from_secs(5)))
        .retries(4);
    if let Some(p) = &config.password {
        builder = builder.password(p);
    }
    let client = builder
        .build()
        .map_err(|e| invalid_url("storage.redis.urls", &shown, e))?;
    let connect = || async {
        client
            .get_async_connection()
            .await
            .map(Link::Cluster)
            .map_err(|e| {
                StoreError::unavailable(format!("cannot connect to Redis {shown}: {e}"))
                    .with_source(e)
            })
    };
    let meta = connect().await?;
    // Each cluster connection multiplexes every node already; two spread large values further.
    let mut data = Vec::new();
    for _ in 0..config.data_connections.clamp(1, 2) {
        data.push(connect().await?);
    }
    Ok((shown.clone(), meta, data))
}

/// The master the sentinels name; asked again after it fails or turns out to be a replica.
async fn connect_sentinel(config: &RedisConfig) -> Result<Links> {
    let shown = format!(
        "master {:?} of sentinels {}",
        config.master_name,
        crate::mask::mask_url_list(&config.sentinel_urls)
    );
    let sentinels = connection_infos("storage.redis.sentinel_urls", &config.sentinel_urls)?;
    // The master's password and database: from storage.redis.url's, or the password file.
    let mut node = redis::RedisConnectionInfo::default();
    if !config.url.is_empty() {
        node = connection_info("storage.redis.url", &config.url, config.password.as_deref())?
            .redis_settings()
            .clone();
    } else if let Some(p) = &config.password {
        node = node.set_password(p);
    }
    let mut node_info =
        redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
    // TLS to the master when the sentinels (or storage.redis.url) are reached over TLS.
    if std::iter::once(&config.url)
        .chain(&config.sentinel_urls)
        .any(|u| u.starts_with("rediss://"))
    {
        node_info = node_info.set_tls_mode(redis::TlsMode::Secure);
    }
    let link_config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(config.command_timeout))
        .set_connection_timeout(Some(config.command_timeout.min(Duration::from_secs(5))));
    let connect = || async {
        let client = redis::sentinel::SentinelClient::build(
            sentinels.clone(),
            config.master_name.clone(),
            Some(node_info.clone()),
            redis::sentinel::SentinelServerType::Master,
        )
        .map_err(|e| invalid_url("storage.redis.sentinel_urls", &shown, e))?;
        SentinelLink::connect(client, link_config.clone())
            .await
            .map(Link::Sentinel)
            .map_err(|e| {
                StoreError::unavailable(format!("cannot reach the Redis {shown}: {e}"))
                    .with_source(e)
            })
    };
    let meta = connect().await?;
    let mut data = Vec::new();
    for _ in 0..config.data_connections.max(1) {
        data.push(connect().await?);
    }
    Ok((shown.clone(), meta, data))
}
