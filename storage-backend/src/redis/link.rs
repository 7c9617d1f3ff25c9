//! One way to reach Redis whatever its topology: a standalone server (a connection manager that
//! reconnects by itself), a Redis Cluster (redis-rs's cluster connection, which follows `MOVED`,
//! `ASK` and failovers), or the master that Sentinel names (asked again whenever the server we
//! talk to stops answering as the master).

use std::sync::{Arc, Mutex};

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, RedisResult, Value};

#[derive(Clone)]
pub(crate) enum Link {
    Direct(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelLink),
}

impl Link {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Link::Cluster(_))
    }

    /// The addresses (`host`, `port`) of the servers whose keys together are every key: the
    /// masters of a cluster, or `None` for the one server otherwise.
    pub async fn masters(&self) -> RedisResult<Option<Vec<(String, u16)>>> {
        let Link::Cluster(conn) = self else {
            return Ok(None);
        };
        let mut conn = conn.clone();
        let nodes = conn
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
            )
            .await?;
        let text: String = redis::FromRedisValue::from_redis_value(nodes)?;
        Ok(Some(cluster_masters(&text)))
    }

    /// Sends `cmd` to the server at `node` (from [`Link::masters`]), or to the one server.
    pub async fn query_on<T: redis::FromRedisValue>(
        &self,
        node: Option<&(String, u16)>,
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match (self, node) {
            (Link::Cluster(conn), Some((host, port))) => {
                let mut conn = conn.clone();
                let value = conn
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        }),
                    )
                    .await?;
                Ok(T::from_redis_value(value)?)
            }
            _ => cmd.query_async(&mut self.clone()).await,
        }
    }
}

/// Masters that serve slots, from `CLUSTER NODES`
/// (`<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`).
fn cluster_masters(nodes: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 {
            continue; // no slots: nothing of ours lives there
        }
        let flags = fields[2];
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            continue;
        }
        let addr = fields[1].split(['@', ',']).next().unwrap_or("");
        if let Some((host, port)) = addr.rsplit_once(':') {
            if let Ok(port) = port.parse() {
                out.push((host.trim_matches(['[', ']']).to_string(), port));
            }
        }
    }
    out
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Direct(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
            Link::Sentinel(s) => Box::pin(s.command(cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Sentinel(s) => Box::pin(s.commands(pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Direct(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
            Link::Sentinel(_) => 0,
        }
    }
}

/// The master Sentinel names, on one multiplexed connection shared by clones. A connection that
/// fails (the master died) or refuses a write (`READONLY`: it was demoted) is dropped, so the next
/// command asks the sentinels again and reaches the promoted replica.
#[derive(Clone)]
pub(crate) struct SentinelLink {
    shared: Arc<SentinelShared>,
}

struct SentinelShared {
    client: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

impl SentinelLink {
    pub async fn connect(
        client: SentinelClient,
        config: AsyncConnectionConfig,
    ) -> RedisResult<SentinelLink> {
        let link = SentinelLink {
            shared: Arc::new(SentinelShared {
                client: tokio::sync::Mutex::new(client),
                current: Mutex::new(None),
                config,
            }),
        };
        link.connection().await?;
        Ok(link)
    }

    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let mut client = self.shared.client.lock().await;
        // Another command may have reconnected while this one waited for the client.
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let conn = client
            .get_async_connection_with_config(&self.shared.config)
            .await?;
        *self.shared.current.lock().expect("sentinel link lock") = Some(conn.clone());
        Ok(conn)
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.shared
            .current
            .lock()
            .expect("sentinel link lock")
            .clone()
    }

    fn check<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result {
            if master_lost(e) {
                self.shared
                    .current
                    .lock()
                    .expect("sentinel link lock")
                    .take();
            }
        }
        result
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let mut conn = self.connection().await?;
        let result = conn.req_packed_command(cmd).await;
        self.check(result)
    }

    async fn commands(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let mut conn = self.connection().await?;
        let result = conn.req_packed_commands(pipeline, offset, count).await;
        self.check(result)
    }
}

/// Whether an error says the server we talk to is no longer the master.
pub(crate) fn master_lost(e: &redis::RedisError) -> bool {
    e.is_connection_dropped()
        || e.is_io_error()
        || e.is_connection_refusal()
        || e.is_timeout()
        || read_only(e)
}

/// A write refused by a replica (a master demoted during a failover): it never ran.
pub(crate) fn read_only(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        || e.code() == Some("READONLY")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_with_slots_are_found() {
        let nodes = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,host2 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
aaaa 127.0.0.1:30005@40005 master,fail - 0 0 1 disconnected 0-5460
bbbb 127.0.0.1:30006@40006 master - 0 0 1 connected
";
        assert_eq!(
            cluster_masters(nodes),
            [
                ("127.0.0.1".to_string(), 30002),
                ("127.0.0.1".to_string(), 30003),
                ("127.0.0.1".to_string(), 30001),
            ]
        );
    }
}
