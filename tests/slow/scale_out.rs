//! Scale-out on real Redis topologies, with real gateway processes:
//! - two gateways on one Redis Cluster: a file uploaded through one is read through the other at
//!   once; one publishes events; when it is killed (SIGKILL) the other takes over within the
//!   documented time, and the subscriber gets every event (duplicates only across the takeover);
//! - a Redis Cluster master killed during uploads: its replica is promoted and the gateway goes on
//!   serving without a restart; every upload it confirmed is there, byte-exact.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::binary::{cluster_env, curl_get, curl_put, list_env, start_with_env, Binary};
use crate::common::{content, metrics, sha256_hex, summary, until, until_true};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use storage_backend::{BackendConfig, RedisConfig, Store, StoreConfig, StorePath};
use test_support::{Mosquitto, RedisCluster, RedisSentinel, SENTINEL_MASTER_NAME};

fn gateway(dir: &Path, id: &str, cluster: &RedisCluster, broker: Option<&Mosquitto>) -> Binary {
    gateway_on(dir, id, &cluster_env(&cluster.urls()), broker)
}

/// A gateway binary on Redis as `storage` says, publishing to `broker` when there is one.
fn gateway_on(dir: &Path, id: &str, storage: &str, broker: Option<&Mosquitto>) -> Binary {
    let mqtt = match broker {
        Some(b) => format!(
            "FILEGATE__MQTT__MODE=external FILEGATE__MQTT__URL={}",
            b.url()
        ),
        None => "FILEGATE__MQTT__MODE=off".into(),
    };
    start_with_env(
        dir,
        id,
        &format!(
            "{storage} FILEGATE__STORAGE__CHUNK_SIZE=64KiB \
             FILEGATE__STORAGE__REDIS__COMMAND_TIMEOUT=5s {mqtt}"
        ),
    )
}

/// These tests run one at a time: each starts several Redis processes and gateways, and on two
/// shared cores three of them at once can starve a master of CPU for longer than the failure
/// detection allows (1 s for the sentinels, 1.5 s for the cluster), so a failover starts before
/// the test kills anything and Redis's asynchronous replication drops writes it had confirmed.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A store of our own on the cluster, to look at the outbox and the files as they are.
async fn observer(cluster: &RedisCluster) -> Store {
    Store::open(StoreConfig {
        backend: BackendConfig::Redis(RedisConfig::cluster(cluster.urls())),
        ..StoreConfig::default()
    })
    .await
    .unwrap()
}

/// Every event's `seq` a QoS 1 subscription to `filegate/events/#` receives, with arrival times.
struct Subscriber {
    seen: Arc<Mutex<BTreeMap<u64, (usize, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn start(broker: &Mosquitto) -> Subscriber {
        let mut o = MqttOptions::new("scale-sub", "127.0.0.1", broker.port());
        o.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(false)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 100);
        let seen: Arc<Mutex<BTreeMap<u64, (usize, Instant)>>> = Arc::default();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let store = seen.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe("filegate/events/#", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                        let seq = v["data"]["seq"].as_u64().expect("seq");
                        let mut seen = store.lock().unwrap();
                        let e = seen.entry(seq).or_insert((0, Instant::now()));
                        e.0 += 1;
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("subscribed")
            .unwrap();
        Subscriber { seen, task }
    }

    fn count_above(&self, seq: u64) -> Option<Instant> {
        let seen = self.seen.lock().unwrap();
        seen.range(seq + 1..).map(|(_, (_, at))| *at).min()
    }

    /// Waits until every seq in 1..=last arrived; returns how many arrived more than once.
    async fn until_complete(&self, last: u64, limit: Duration) -> usize {
        until(&format!("all {last} events arrived"), limit, || async {
            let seen = self.seen.lock().unwrap();
            let missing: Vec<u64> = (1..=last).filter(|s| !seen.contains_key(s)).collect();
            if missing.is_empty() {
                Ok(seen.values().filter(|(n, _)| *n > 1).count())
            } else {
                Err(format!(
                    "{} never arrived: {:?}",
                    missing.len(),
                    &missing[..missing.len().min(20)]
                ))
            }
        })
        .await
    }
}

/// A confirmed upload: its path under the user's home, and its content.
type Upload = (String, Vec<u8>);

/// Uploaders, one thread each, putting small files through FTP one after another until
/// [`Load::finish`]; an upload counts once curl says it succeeded.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    workers: Vec<std::thread::JoinHandle<Vec<Upload>>>,
}

impl Load {
    fn start(ftp: SocketAddr, dir: &Path, prefixes: &[&'static str]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let workers = prefixes
            .iter()
            .map(|&prefix| {
                let (stop, done) = (stop.clone(), done.clone());
                let scratch = dir.join(format!("{prefix}.bin"));
                std::thread::spawn(move || {
                    let mut confirmed = Vec::new();
                    let mut i = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let data = content((i % 250) as u8, 1000 + (i as usize * 7919) % 150_000);
                        std::fs::write(&scratch, &data).unwrap();
                        let path = format!("/{prefix}/f{i:05}");
                        if curl_put(ftp, &path, &scratch) {
                            confirmed.push((path, data));
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        i += 1;
                    }
                    confirmed
                })
            })
            .collect();
        Load {
            stop,
            done,
            workers,
        }
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until `n` uploads succeeded in all, failing after a minute.
    async fn until(&self, n: u64) {
        until("uploads stalled", Duration::from_secs(60), || async {
            let done = self.done();
            if done >= n {
                Ok(())
            } else {
                Err(done)
            }
        })
        .await
    }

    /// Stops the uploaders; returns every confirmed upload (path under the user's home, content).
    fn finish(self) -> Vec<Upload> {
        self.stop.store(true, Ordering::Relaxed);
        self.workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    }
}

/// Every confirmed upload of user `ops` is in `store`, byte-exact, and no version lacks a chunk.
async fn assert_intact(store: &Store, confirmed: &[Upload]) {
    let mut lost = Vec::new();
    for (path, data) in confirmed {
        match store
            .read_to_vec(&StorePath::parse(&format!("/ops{path}")).unwrap(), u64::MAX)
            .await
        {
            Ok(d) if d == *data => {}
            other => lost.push((path.clone(), other.map(|d| d.len()))),
        }
    }
    assert!(lost.is_empty(), "confirmed uploads lost: {lost:?}");
    let report = store.verify().await.unwrap();
    assert!(
        report.missing.is_empty(),
        "versions refer to chunks that are gone: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_cluster_and_hand_over_publishing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let cluster = RedisCluster::start(3, 0);
    let broker = Mosquitto::start();
    let sub = Subscriber::start(&broker).await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = gateway(dirs[0].path(), "gw-a", &cluster, Some(&broker));
    let b = gateway(dirs[1].path(), "gw-b", &cluster, Some(&broker));

    // Written through one, listed and read through the other at once.
    let file = dirs[0].path().join("hello.bin");
    let data = content(7, 300_000);
    std::fs::write(&file, &data).unwrap();
    assert!(curl_put(a.ftp, "/shared/hello.bin", &file));
    assert_eq!(
        curl_get(b.ftp, "/shared/hello.bin").as_deref(),
        Some(&data[..])
    );
    let listing = curl_get(b.ftp, "/shared/").unwrap();
    assert!(String::from_utf8_lossy(&listing).contains("hello.bin"));

    // Exactly one of them publishes.
    let active = until("no gateway publishes", Duration::from_secs(30), || async {
        let connected = |m: &std::collections::HashMap<String, f64>| {
            m.get("filegate_mqtt_connected").copied() == Some(1.0)
        };
        let (ma, mb) = (metrics(a.http).await, metrics(b.http).await);
        match (connected(&ma), connected(&mb)) {
            (true, false) => Ok(0),
            (false, true) => Ok(1),
            (true, true) => panic!("both gateways publish"),
            _ => Err("neither"),
        }
    })
    .await;
    let mut gateways = [Some(a), Some(b)];
    let survivor = gateways[1 - active].as_ref().unwrap().ftp;

    // Uploads keep going through the survivor while the publisher is killed.
    let load = Load::start(survivor, dirs[1].path(), &["load"]);
    let store = observer(&cluster).await;
    load.until(20).await;
    let mut killed = gateways[active].take().unwrap();
    killed.child.kill().unwrap();
    let killed_at = Instant::now();
    killed.child.wait().unwrap();
    let before = store.outbox_status().await.unwrap().last_seq;

    // The survivor takes the lease over and publishes what was committed after the kill.
    let takeover = until(
        "nobody took over publishing",
        Duration::from_secs(60),
        || async {
            sub.count_above(before)
                .map(|at| at.saturating_duration_since(killed_at))
                .ok_or("no event after the kill")
        },
    )
    .await;
    load.until(load.done() + 10).await;
    let confirmed = load.finish();
    let last = store.outbox_status().await.unwrap().last_seq;
    let duplicates = sub.until_complete(last, Duration::from_secs(60)).await;

    // Every confirmed upload is there, through the survivor.
    for (path, data) in confirmed.iter().step_by(7) {
        assert_eq!(
            curl_get(survivor, path).map(|d| sha256_hex(&d)),
            Some(sha256_hex(data)),
            "{path}"
        );
    }
    // Chunks spread over every master.
    let counts = cluster.key_counts();
    assert!(counts.iter().all(|&n| n > 0), "keys per master: {counts:?}");
    // The lease runs out after LEASE_TTL (10 s); the standby polls every LEASE_TTL / 3.
    let bound = filegate::events::LEASE_TTL * 4 / 3 + Duration::from_secs(3);
    assert!(
        takeover <= bound,
        "takeover took {takeover:?}, more than {bound:?}"
    );
    summary(
        "scale-out",
        "publisher takeover after kill -9",
        "s",
        takeover.as_secs_f64(),
        "bound (lease 10 s + poll 3.3 s + 3 s)",
        bound.as_secs_f64(),
    );
    eprintln!(
        "scale-out: {} uploads confirmed, {last} events, {duplicates} delivered twice across the \
         takeover, keys per master {counts:?}",
        confirmed.len()
    );
    sub.task.abort();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_fails_over_during_uploads() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Three masters, each with a replica.
    let mut cluster = RedisCluster::start(3, 1);
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), "gw-f", &cluster, None);
    let store = observer(&cluster).await;

    let load = Load::start(gw.ftp, dir.path(), &["w1", "w2"]);
    load.until(30).await;

    // Kill the master that holds the metadata slot: the hardest case.
    let meta_port = {
        let slot = cluster.nodes[0].cli(&["CLUSTER", "KEYSLOT", "{filegate}:ctr"]);
        let slot: u16 = slot.trim().parse().unwrap();
        let nodes = cluster.nodes[0].cli(&["CLUSTER", "NODES"]);
        master_for_slot(&nodes, slot)
    };
    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.port() == meta_port)
        .unwrap();
    cluster.nodes[victim].kill();
    let killed_at = Instant::now();
    let at_kill = load.done();
    // Promoted when three masters are running again and the cluster is whole.
    until_true(
        "no replica was promoted",
        Duration::from_secs(60),
        || async { cluster.masters().len() >= 3 },
    )
    .await;
    cluster.wait_until_ok();
    let promoted = killed_at.elapsed();
    // Uploads succeed again without restarting the gateway.
    load.until(at_kill + 20).await;
    let recovered = killed_at.elapsed();
    let confirmed = load.finish();

    // Nothing a client was told succeeded is lost or torn.
    assert_intact(&store, &confirmed).await;
    summary(
        "scale-out",
        "cluster failover: master killed → cluster ok",
        "s",
        promoted.as_secs_f64(),
        "uploads succeeding again",
        recovered.as_secs_f64(),
    );
    eprintln!(
        "failover: {} uploads confirmed, all intact; promoted after {promoted:?}, uploads \
         flowing again after {recovered:?}",
        confirmed.len()
    );
    drop(gw);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_during_uploads() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut setup = RedisSentinel::start();
    let dir = tempfile::tempdir().unwrap();
    let storage = format!(
        "FILEGATE__STORAGE__BACKEND=redis FILEGATE__STORAGE__REDIS__SENTINEL_URLS={} \
         FILEGATE__STORAGE__REDIS__MASTER_NAME={SENTINEL_MASTER_NAME}",
        list_env(&setup.urls())
    );
    let gw = gateway_on(dir.path(), "gw-s", &storage, None);
    let store = Store::open(StoreConfig {
        backend: BackendConfig::Redis(RedisConfig::sentinel(setup.urls(), SENTINEL_MASTER_NAME)),
        ..StoreConfig::default()
    })
    .await
    .unwrap();

    let load = Load::start(gw.ftp, dir.path(), &["s1", "s2"]);
    load.until(30).await;
    let old_master = setup.master.port();
    // Redis replicates asynchronously: what the replica has not received dies with the master.
    // The test is about a healthy setup (docs/scaling.md), so the replica must be keeping up.
    assert!(
        setup.wait_replica_caught_up(Duration::from_secs(10)),
        "the replica did not keep up with the master"
    );
    setup.master.kill();
    let killed_at = Instant::now();
    let at_kill = load.done();
    until_true(
        "the sentinels did not fail over",
        Duration::from_secs(60),
        || async { setup.master_port() == Some(setup.replica.port()) },
    )
    .await;
    let promoted = killed_at.elapsed();
    load.until(at_kill + 20).await;
    let recovered = killed_at.elapsed();
    let confirmed = load.finish();
    assert_intact(&store, &confirmed).await;
    summary(
        "scale-out",
        "sentinel failover: master killed → replica named master",
        "s",
        promoted.as_secs_f64(),
        "uploads succeeding again",
        recovered.as_secs_f64(),
    );
    eprintln!(
        "sentinel failover (old master :{old_master}): {} uploads confirmed, all intact; \
         promoted after {promoted:?}, uploads flowing again after {recovered:?}",
        confirmed.len()
    );
    drop(gw);
    store.close().await;
}

/// The port of the master serving `slot`, from `CLUSTER NODES`.
fn master_for_slot(nodes: &str, slot: u16) -> u16 {
    for line in nodes.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 9 || !f[2].contains("master") {
            continue;
        }
        for range in &f[8..] {
            let (lo, hi) = match range.split_once('-') {
                Some((lo, hi)) => (lo.parse().unwrap_or(1), hi.parse().unwrap_or(0)),
                None => (range.parse().unwrap_or(1), range.parse().unwrap_or(0)),
            };
            if (lo..=hi).contains(&slot) {
                let addr = f[1].split('@').next().unwrap();
                return addr.rsplit_once(':').unwrap().1.parse().unwrap();
            }
        }
    }
    panic!("no master serves slot {slot}:\n{nodes}");
}
