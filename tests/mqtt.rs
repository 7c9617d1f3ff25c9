//! File events on MQTT: a real mosquitto (private, free port) and the embedded broker, subscribers
//! made with rumqttc, changes made through FTP and the store.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{start, Kind, PASSWORD};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use storage_backend::{ChangeContext, StorePath};
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use test_support::Mosquitto;
use tokio::sync::mpsc;

/// A subscriber to `filegate/events/#` that keeps reconnecting; received events come out of `rx`.
struct Subscriber {
    rx: mpsc::UnboundedReceiver<(String, Value)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn subscribe(
    port: u16,
    login: Option<(&str, &str)>,
    id: &str,
    clean: bool,
) -> Result<Subscriber, String> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5))
        .set_clean_session(clean)
        .set_max_packet_size(1 << 20, 1 << 20);
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (client, mut el) = AsyncClient::new(o, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe("filegate/events/#", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v: Value = serde_json::from_slice(&p.payload).expect("a JSON payload");
                    let _ = tx.send((p.topic.clone(), v));
                }
                Ok(_) => {}
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e.to_string()));
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
        Ok(Ok(Ok(()))) => Ok(Subscriber { rx, task }),
        Ok(Ok(Err(e))) => Err(e),
        _ => Err("no SubAck".into()),
    }
}

impl Subscriber {
    /// Receives until `want` distinct sequence numbers arrived (duplicates are allowed: delivery is
    /// at least once), failing after `limit`.
    async fn collect(&mut self, want: usize, limit: Duration) -> BTreeMap<u64, (String, Value)> {
        let mut got = BTreeMap::new();
        let deadline = Instant::now() + limit;
        while got.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some((topic, v))) => {
                    got.insert(v["data"]["seq"].as_u64().unwrap(), (topic, v));
                }
                _ => panic!(
                    "only {} of {want} events arrived: {:?}",
                    got.len(),
                    got.keys().collect::<Vec<_>>()
                ),
            }
        }
        got
    }

    /// Nothing more arrives within `quiet`.
    async fn silent(&mut self, quiet: Duration) -> Option<(String, Value)> {
        tokio::time::timeout(quiet, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

async fn ftp(t: &common::TestGateway) -> AsyncFtpStream {
    let mut ftp = AsyncFtpStream::connect(t.ftp_addr()).await.unwrap();
    ftp.login("alice", PASSWORD).await.unwrap();
    ftp.transfer_type(FileType::Binary).await.unwrap();
    ftp
}

fn external(c: &mut filegate::Config, broker: &Mosquitto) {
    c.mqtt.mode = filegate::config::MqttMode::External;
    c.mqtt.url = broker.url();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cloudevent_per_change_on_mosquitto() {
    let broker = Mosquitto::start();
    let mut sub = subscribe(broker.port(), None, "sub-1", true).await.unwrap();
    let t = start(Kind::Redis, |c| external(c, &broker)).await;
    let mut ftp = ftp(&t).await;
    ftp.mkdir("in").await.unwrap();
    let data = common::content(1, 300_000);
    ftp.put_file("in/a+b #1.bin", &mut &data[..]).await.unwrap();
    ftp.rename("in/a+b #1.bin", "in/final.bin").await.unwrap();
    ftp.rm("in/final.bin").await.unwrap();
    // home creation (2 dirs), mkdir, upload, rename, delete
    let events = sub.collect(6, Duration::from_secs(20)).await;
    let seqs: Vec<u64> = events.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=6).collect::<Vec<_>>(),
        "consecutive sequence numbers"
    );
    let by_type = |ty: &str| {
        events
            .values()
            .find(|(_, v)| v["type"] == ty)
            .unwrap_or_else(|| panic!("no {ty}"))
            .clone()
    };
    let (topic, created) = by_type("io.filegate.file.created");
    assert_eq!(topic, "filegate/events/home/alice/in/a%2Bb %231.bin");
    assert_eq!(created["specversion"], "1.0");
    assert_eq!(created["source"], "filegate://filegate-1");
    assert_eq!(created["subject"], "/home/alice/in/a+b #1.bin");
    assert_eq!(created["datacontenttype"], "application/json");
    assert!(created["time"].as_str().unwrap().ends_with('Z'));
    let d = &created["data"];
    assert_eq!(d["size"], 300_000);
    assert_eq!(d["sha256"], common::sha256_hex(&data));
    assert_eq!(d["complete"], true);
    assert_eq!(
        (d["user"].as_str(), d["protocol"].as_str()),
        (Some("alice"), Some("ftp"))
    );
    assert!(d["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(d["version"].as_u64().unwrap() > 0);
    let (_, renamed) = by_type("io.filegate.file.renamed");
    assert_eq!(renamed["data"]["old_path"], "/home/alice/in/a+b #1.bin");
    assert_eq!(renamed["data"]["path"], "/home/alice/in/final.bin");
    let (_, deleted) = by_type("io.filegate.file.deleted");
    assert_eq!(deleted["data"]["path"], "/home/alice/in/final.bin");
    assert_eq!(
        by_type("io.filegate.dir.created").1["data"]["size"],
        Value::Null
    );
    let ids: std::collections::HashSet<_> = events
        .values()
        .map(|(_, v)| v["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 6, "unique ids");
    // Delivered events leave the outbox.
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.store().outbox_status().await.unwrap().backlog() > 0 {
        assert!(Instant::now() < deadline, "the outbox was not acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temp_names_and_cut_off_uploads() {
    let broker = Mosquitto::start();
    let mut sub = subscribe(broker.port(), None, "sub-2", true).await.unwrap();
    let t = start(Kind::Embedded, |c| external(c, &broker)).await;
    let mut ftp = ftp(&t).await;
    ftp.put_file("report.csv.filepart", &mut &b"a;b\n"[..])
        .await
        .unwrap();
    ftp.rename("report.csv.filepart", "report.csv")
        .await
        .unwrap();
    // home dirs (2) + the upload + the rename: three announcements, the temporary upload is silent.
    let events = sub.collect(3, Duration::from_secs(20)).await;
    let files: Vec<&Value> = events
        .values()
        .map(|(_, v)| v)
        .filter(|v| v["type"].as_str().unwrap().contains(".file."))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0]["type"], "io.filegate.file.created");
    assert_eq!(files[0]["data"]["path"], "/home/alice/report.csv");
    assert_eq!(
        files[0]["data"]["old_path"],
        "/home/alice/report.csv.filepart"
    );
    assert_eq!(files[0]["data"]["size"], 4);
    // A cut-off upload is announced as incomplete, never as created; its completion as complete.
    let store = t.store();
    let ctx = ChangeContext::new("alice", "sftp", "x");
    let p = StorePath::parse("/home/alice/big.iso").unwrap();
    let mut w = store
        .open_write(&p, storage_backend::OpenOptions::REPLACE, &ctx)
        .await
        .unwrap();
    w.write_at(0, b"half").await.unwrap();
    w.commit(storage_backend::CommitOptions {
        complete: false,
        mtime: None,
    })
    .await
    .unwrap();
    let mut w = store
        .open_write(&p, storage_backend::OpenOptions::UPDATE, &ctx)
        .await
        .unwrap();
    w.append(b" and the rest").await.unwrap();
    w.commit(storage_backend::CommitOptions::default())
        .await
        .unwrap();
    let more = sub.collect(2, Duration::from_secs(20)).await;
    let types: Vec<&str> = more
        .values()
        .map(|(_, v)| v["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["io.filegate.file.incomplete", "io.filegate.file.modified"]
    );
    assert_eq!(more.values().next().unwrap().1["data"]["complete"], false);
    assert!(sub.silent(Duration::from_millis(300)).await.is_none());
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_no_event() {
    let mut broker = Mosquitto::start_persistent();
    // A persistent session: the broker keeps what arrives for it while it is away.
    let mut sub = subscribe(broker.port(), None, "durable-sub", false)
        .await
        .unwrap();
    let t = start(Kind::Redis, |c| external(c, &broker)).await;
    let store = t.store().clone();
    let ctx = ChangeContext::new("alice", "ftp", "x");
    store
        .mkdir(&StorePath::parse("/burst").unwrap(), &ctx)
        .await
        .unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                let p = StorePath::parse(&format!("/burst/f{i}")).unwrap();
                store
                    .write_file(&p, format!("file {i}").as_bytes(), &ctx)
                    .await
                    .unwrap();
            }
        })
    };
    // Take the broker away in the middle of the burst, then bring it back.
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.outbox_status().await.unwrap().last_seq < 60 {
        assert!(Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    broker.stop_gracefully();
    writer.await.unwrap();
    let backlog = store.outbox_status().await.unwrap();
    assert!(
        backlog.backlog() > 0,
        "events wait in the outbox while the broker is down"
    );
    broker.restart();
    // The same subscriber reconnects by itself and gets what its session kept.
    let seen = sub.collect(201, Duration::from_secs(60)).await;
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=201).collect::<Vec<_>>(),
        "no gap in seq"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_after_a_gateway_restart_and_two_gateways_publish_once() {
    let broker = Mosquitto::start();
    let mut sub = subscribe(broker.port(), None, "sub-3", true).await.unwrap();
    // First gateway: no broker reachable, so events pile up in the outbox.
    let first = start(Kind::Redis, |_| {}).await;
    let ctx = ChangeContext::new("alice", "ftp", "x");
    for i in 0..30 {
        let p = StorePath::parse(&format!("/pile{i}")).unwrap();
        first.store().write_file(&p, b"x", &ctx).await.unwrap();
    }
    assert_eq!(first.store().outbox_status().await.unwrap().backlog(), 30);
    let redis_url = first.config.storage.redis.url.clone();
    let redis = {
        let mut f = first;
        let r = f.redis.take();
        f.stop().await;
        r
    };
    // Two gateways on the same Redis, both pointed at the broker: the backlog drains, then every
    // new event is published once.
    let a = start(Kind::Embedded, |c| {
        external(c, &broker);
        c.storage.backend = filegate::config::StorageBackend::Redis;
        c.storage.redis.url = redis_url.clone();
    })
    .await;
    let b = start(Kind::Embedded, |c| {
        external(c, &broker);
        c.storage.backend = filegate::config::StorageBackend::Redis;
        c.storage.redis.url = redis_url.clone();
    })
    .await;
    for (i, g) in [&a, &b].iter().enumerate() {
        for j in 0..10 {
            let p = StorePath::parse(&format!("/both{i}-{j}")).unwrap();
            g.store().write_file(&p, b"y", &ctx).await.unwrap();
        }
    }
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counts.len() < 50 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, v) = tokio::time::timeout(left, sub.rx.recv())
            .await
            .expect("all 50 events")
            .unwrap();
        *counts
            .entry(v["data"]["seq"].as_u64().unwrap())
            .or_default() += 1;
    }
    while let Some((_, v)) = sub.silent(Duration::from_millis(500)).await {
        *counts
            .entry(v["data"]["seq"].as_u64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    assert!(
        counts.values().all(|&n| n == 1),
        "an event went out twice: {counts:?}"
    );
    a.stop().await;
    b.stop().await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_broker_serves_logged_in_subscribers() {
    let port = test_support::free_port();
    let t = start(Kind::Embedded, |c| {
        c.mqtt.mode = filegate::config::MqttMode::Embedded;
        c.mqtt.listen = format!("127.0.0.1:{port}").parse().unwrap();
    })
    .await;
    assert!(
        subscribe(port, None, "anon", true).await.is_err(),
        "anonymous subscribers are refused"
    );
    assert!(subscribe(port, Some(("alice", "wrong")), "bad", true)
        .await
        .is_err());
    let mut sub = subscribe(port, Some(("alice", PASSWORD)), "alice-sub", true)
        .await
        .unwrap();
    let mut ftp = ftp(&t).await;
    ftp.put_file("hello.txt", &mut &b"hello"[..]).await.unwrap();
    let events = sub.collect(3, Duration::from_secs(20)).await;
    let last = events.values().last().unwrap();
    assert_eq!(last.0, "filegate/events/home/alice/hello.txt");
    assert_eq!(last.1["type"], "io.filegate.file.created");
    t.stop().await;
}
