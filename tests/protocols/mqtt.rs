//! File events on MQTT: a real mosquitto (private, free port) and the embedded broker, subscribers
//! made with rumqttc, changes made through FTP and the store.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::common::mqtt::{external, ftp, subscribe};
use crate::common::{start, until, until_true, Kind, PASSWORD};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use storage_backend::{ChangeContext, StorePath};
use suppaftp::tokio::AsyncFtpStream;
use test_support::Mosquitto;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cloudevent_per_change_on_mosquitto() {
    let broker = Mosquitto::start();
    let mut sub = subscribe(broker.port(), None, "sub-1", true).await.unwrap();
    let t = start(Kind::Redis, |c| external(c, &broker)).await;
    let mut ftp = ftp(&t).await;
    ftp.mkdir("in").await.unwrap();
    let data = crate::common::content(1, 300_000);
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
    assert_eq!(d["sha256"], crate::common::sha256_hex(&data));
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
    until_true(
        "the outbox was not acknowledged",
        Duration::from_secs(10),
        || async { t.store().outbox_status().await.unwrap().backlog() == 0 },
    )
    .await;
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
    // The subscriber goes away too, and comes back only once the gateway has handed every event to
    // the restarted broker: what it missed must come from its session, kept across the restart.
    sub.lost_connection(Duration::from_secs(20)).await;
    let mut seen = sub.received();
    drop(sub);
    broker.restart();
    until(
        "the gateway did not deliver its backlog to the restarted broker",
        Duration::from_secs(60),
        || async {
            let status = store.outbox_status().await.unwrap();
            if status.acked_seq == status.last_seq {
                Ok(())
            } else {
                Err(status)
            }
        },
    )
    .await;
    let mut sub = subscribe(broker.port(), None, "durable-sub", false)
        .await
        .unwrap();
    sub.collect_into(&mut seen, 201, Duration::from_secs(60))
        .await;
    let missing: Vec<u64> = (1..=201).filter(|s| !seen.contains_key(s)).collect();
    let extra: Vec<u64> = seen.keys().copied().filter(|s| *s > 201).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "no gap in seq: missing {missing:?}, unexpected {extra:?}"
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
    let redis_config = first.config.storage.redis.clone();
    let redis = {
        let mut f = first;
        let r = (f.redis.take(), f.cluster.take(), f.sentinel.take());
        f.stop().await;
        r
    };
    // Two gateways on the same Redis, both pointed at the broker: the backlog drains, then every
    // new event is published once.
    let a = start(Kind::Embedded, |c| {
        external(c, &broker);
        c.storage.backend = filegate::config::StorageBackend::Redis;
        c.storage.redis = redis_config.clone();
    })
    .await;
    let b = start(Kind::Embedded, |c| {
        external(c, &broker);
        c.storage.backend = filegate::config::StorageBackend::Redis;
        c.storage.redis = redis_config.clone();
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
    // (The home itself was made at alice's MQTT login, maybe before her subscription.)
    loop {
        let (topic, v) = tokio::time::timeout(Duration::from_secs(20), sub.rx.recv())
            .await
            .expect("hello.txt's event")
            .unwrap();
        if topic == "filegate/events/home/alice/hello.txt" {
            assert_eq!(v["type"], "io.filegate.file.created");
            break;
        }
        assert_eq!(topic, "filegate/events/home/alice");
    }
    t.stop().await;
}

mod commands {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    /// A reply: its correlation data, user properties and payload.
    type Reply = (Option<bytes::Bytes>, Vec<(String, String)>, bytes::Bytes);

    /// An MQTT 5 requester: publishes commands with a response topic and correlation data.
    pub struct Requester {
        client: Client5,
        replies: mpsc::UnboundedReceiver<Reply>,
        task: tokio::task::JoinHandle<()>,
        next: u32,
        reply_topic: String,
    }

    impl Drop for Requester {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// `reply_topic`: where replies should go (on the embedded broker, under
    /// `filegate/replies/{user}/`).
    pub async fn requester(port: u16, login: Option<(&str, &str)>, reply_topic: &str) -> Requester {
        let mut o = Options5::new(
            format!("requester-{}", login.map(|l| l.0).unwrap_or("anon")),
            "127.0.0.1",
            port,
        );
        o.set_keep_alive(Duration::from_secs(10))
            .set_max_packet_size(Some(64 << 20));
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let (client, mut el) = Client5::new(o, 100);
        let (tx, replies) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let c = client.clone();
        // On the embedded broker a refused response topic is answered on the user's default reply
        // topic: listen to the whole reply space there.
        let subscribe_to = match reply_topic.strip_prefix("filegate/replies/") {
            Some(rest) => format!("filegate/replies/{}/#", rest.split('/').next().unwrap()),
            None => reply_topic.to_string(),
        };
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match el.poll().await {
                    Ok(Event5::Incoming(P5::ConnAck(_))) => {
                        let _ = c.try_subscribe(subscribe_to.clone(), Q5::AtLeastOnce);
                    }
                    Ok(Event5::Incoming(P5::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event5::Incoming(P5::Publish(p))) => {
                        let props = p.properties.unwrap_or_default();
                        let _ = tx.send((props.correlation_data, props.user_properties, p.payload));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .unwrap()
            .unwrap();
        Requester {
            client,
            replies,
            task,
            next: 0,
            reply_topic: reply_topic.to_string(),
        }
    }

    impl Requester {
        /// Waits until the gateway answers (its command subscription may still be on its way).
        pub async fn wait_ready(&mut self) {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                self.next += 1;
                let id = bytes::Bytes::from(format!("probe-{}", self.next));
                let props = PublishProperties {
                    response_topic: Some(self.reply_topic.clone()),
                    correlation_data: Some(id.clone()),
                    ..Default::default()
                };
                self.client
                    .publish_with_properties(
                        "filegate/commands/list",
                        Q5::AtLeastOnce,
                        false,
                        vec![],
                        props,
                    )
                    .await
                    .unwrap();
                if let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(500), self.replies.recv()).await
                {
                    // Drain late answers to earlier probes.
                    while tokio::time::timeout(Duration::from_millis(200), self.replies.recv())
                        .await
                        .is_ok()
                    {}
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the gateway never answered a command"
                );
            }
        }

        /// Sends one command; returns (status user property, payload) of its reply.
        pub async fn ask(&mut self, topic: &str, payload: Vec<u8>) -> (String, bytes::Bytes) {
            let reply_topic = self.reply_topic.clone();
            self.ask_to(topic, payload, &reply_topic).await
        }

        /// Sends one command naming `response_topic`; returns its reply (status, payload).
        pub async fn ask_to(
            &mut self,
            topic: &str,
            payload: Vec<u8>,
            response_topic: &str,
        ) -> (String, bytes::Bytes) {
            self.next += 1;
            let id = bytes::Bytes::from(format!("req-{}", self.next));
            let props = PublishProperties {
                response_topic: Some(response_topic.into()),
                correlation_data: Some(id.clone()),
                ..Default::default()
            };
            self.client
                .publish_with_properties(topic, Q5::AtLeastOnce, false, payload, props)
                .await
                .unwrap();
            loop {
                let (corr, user, body) =
                    tokio::time::timeout(Duration::from_secs(20), self.replies.recv())
                        .await
                        .unwrap_or_else(|_| panic!("no reply to {topic}"))
                        .unwrap();
                if corr.as_ref() == Some(&id) {
                    let status = user
                        .into_iter()
                        .find(|(k, _)| k == "status")
                        .map(|(_, v)| v)
                        .unwrap_or_default();
                    return (status, body);
                }
            }
        }
    }

    fn json(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap()
    }

    /// `exercise` on the embedded broker as `user`, replies on `filegate/replies/{user}/r`.
    pub async fn exercise_at(port: u16, user: &str) {
        exercise(
            port,
            Some((user, PASSWORD)),
            &format!("filegate/replies/{user}/r"),
        )
        .await;
    }

    async fn exercise(port: u16, login: Option<(&str, &str)>, reply_topic: &str) {
        let mut r = requester(port, login, reply_topic).await;
        r.wait_ready().await;
        let data = crate::common::content(4, 100_000);
        let (status, body) = r
            .ask("filegate/commands/put/docs/a%2Bb.bin", data.clone())
            .await;
        assert_eq!(status, "ok", "{}", String::from_utf8_lossy(&body));
        let reply = json(&body);
        assert_eq!(reply["ok"], true);
        assert_eq!(reply["path"], "/docs/a+b.bin");
        assert_eq!(reply["sha256"], crate::common::sha256_hex(&data));
        let (status, body) = r.ask("filegate/commands/get/docs/a%2Bb.bin", vec![]).await;
        assert_eq!(status, "ok");
        assert!(body[..] == data[..]);
        let (_, body) = r.ask("filegate/commands/list/docs", vec![]).await;
        let reply = json(&body);
        assert_eq!(reply["entries"][0]["name"], "a+b.bin");
        assert_eq!(reply["entries"][0]["size"], 100_000);
        let (status, body) = r.ask("filegate/commands/get/nope.txt", vec![]).await;
        assert_eq!(status, "error");
        assert_eq!(json(&body)["error"], "not_found");
        let (status, body) = r
            .ask("filegate/commands/get/../../../etc/passwd", vec![])
            .await;
        assert_eq!(status, "error", "{}", String::from_utf8_lossy(&body));
        // Too big for a command: a clear error, and the connection goes on.
        let (status, body) = r
            .ask(
                "filegate/commands/put/huge.bin",
                vec![0u8; filegate::events::MAX_COMMAND_BYTES + 1],
            )
            .await;
        assert_eq!(status, "error");
        assert_eq!(json(&body)["error"], "file_too_large");
        let (status, _) = r
            .ask("filegate/commands/delete/docs/a%2Bb.bin", vec![])
            .await;
        assert_eq!(status, "ok");
        let (status, body) = r.ask("filegate/commands/chmod/x", vec![]).await;
        assert_eq!(
            (status.as_str(), json(&body)["error"].as_str()),
            ("error", Some("invalid_argument"))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_over_mosquitto_with_mqtt5_replies_and_3_1_1_fallbacks() {
        let broker = Mosquitto::start();
        let mut events = subscribe(broker.port(), None, "events", true)
            .await
            .unwrap();
        let t = start(Kind::Embedded, |c| {
            external(c, &broker);
            c.mqtt.commands = true;
            c.mqtt.commands_user = "alice".into();
        })
        .await;
        exercise(broker.port(), None, "me/replies").await;
        // An MQTT 3.1.1 client has no response topic: replies go to filegate/replies/{op}/{path}.
        let mut o = MqttOptions::new("old-client", "127.0.0.1", broker.port());
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 10);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let c = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe("filegate/replies/#", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = tx.send(("subscribed".to_string(), bytes::Bytes::new()));
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.clone()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        async fn next(
            rx: &mut mpsc::UnboundedReceiver<(String, bytes::Bytes)>,
        ) -> (String, bytes::Bytes) {
            tokio::time::timeout(Duration::from_secs(20), rx.recv())
                .await
                .unwrap()
                .unwrap()
        }
        assert_eq!(next(&mut rx).await.0, "subscribed");
        client
            .publish(
                "filegate/commands/put/old.txt",
                QoS::AtLeastOnce,
                false,
                b"v1".to_vec(),
            )
            .await
            .unwrap();
        let (topic, body) = next(&mut rx).await;
        assert_eq!(topic, "filegate/replies/put/old.txt");
        assert_eq!(json(&body)["ok"], true);
        client
            .publish(
                "filegate/commands/get/old.txt",
                QoS::AtLeastOnce,
                false,
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            next(&mut rx).await,
            (
                "filegate/replies/get/old.txt".to_string(),
                bytes::Bytes::from_static(b"v1")
            )
        );
        client
            .publish(
                "filegate/commands/get/gone.txt",
                QoS::AtLeastOnce,
                false,
                vec![],
            )
            .await
            .unwrap();
        let (topic, body) = next(&mut rx).await;
        assert_eq!(topic, "filegate/replies/get-error/gone.txt");
        assert_eq!(json(&body)["ok"], false);
        task.abort();
        // What the commands did shows up as ordinary events, protocol "mqtt".
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, v) = tokio::time::timeout(left, events.rx.recv())
                .await
                .expect("the put's event")
                .unwrap();
            if v["data"]["path"] == "/home/alice/old.txt" {
                assert_eq!(
                    (v["data"]["user"].as_str(), v["data"]["protocol"].as_str()),
                    (Some("alice"), Some("mqtt"))
                );
                break;
            }
        }
        t.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_on_the_embedded_broker_act_as_their_sender() {
        let port = test_support::free_port();
        let t = start(Kind::Redis, |c| {
            c.mqtt.mode = filegate::config::MqttMode::Embedded;
            c.mqtt.listen = format!("127.0.0.1:{port}").parse().unwrap();
            c.mqtt.commands = true;
        })
        .await;
        exercise_at(port, "alice").await;
        // A read-only user's commands run with its own permissions: no put.
        let mut r = requester(
            port,
            Some(("reader", PASSWORD)),
            "filegate/replies/reader/r",
        )
        .await;
        r.wait_ready().await;
        let (status, body) = r.ask("filegate/commands/put/x.txt", b"x".to_vec()).await;
        assert_eq!(status, "error");
        assert_eq!(json(&body)["error"], "permission_denied");
        let (status, _) = r.ask("filegate/commands/list", vec![]).await;
        assert_eq!(status, "ok");
        t.stop().await;
    }
}

/// The embedded broker: one port for MQTT 3.1.1 and 5, each user sees and commands only their own
/// files, persistent sessions, bans, bounded clients — checked by what real clients receive.
mod broker {
    use super::*;
    use rumqttc::SubscribeReasonCode;

    /// An MQTT 3.1.1 client (rumqttc) that reports every packet it receives.
    struct Probe {
        client: AsyncClient,
        rx: mpsc::UnboundedReceiver<Packet>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// Connects; `Err` with the broker's answer when the login is refused.
    async fn probe(
        port: u16,
        id: &str,
        login: Option<(&str, &str)>,
        clean: bool,
    ) -> Result<Probe, String> {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(clean)
            .set_max_packet_size(16 << 20, 16 << 20);
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
                        if let Some(r) = ready.take() {
                            let _ = r.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(p)) => {
                        let _ = tx.send(p);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(Err(e.to_string()));
                        }
                        return;
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(Probe { client, rx, task }),
            Ok(Ok(Err(e))) => Err(e),
            _ => Err("no CONNACK".into()),
        }
    }

    impl Probe {
        /// Subscribes; the granted codes.
        async fn subscribe(&mut self, filter: &str) -> Vec<SubscribeReasonCode> {
            self.client
                .subscribe(filter, QoS::AtLeastOnce)
                .await
                .unwrap();
            loop {
                match self.next().await {
                    Packet::SubAck(a) => return a.return_codes,
                    Packet::Publish(_) => {}
                    other => panic!("expected a SUBACK, got {other:?}"),
                }
            }
        }

        async fn next(&mut self) -> Packet {
            tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
                .await
                .expect("nothing arrived within 20 s")
                .expect("the connection ended")
        }

        /// Publishes received until one on `topic` arrives (returned with all before it).
        async fn until(&mut self, topic: &str) -> (bytes::Bytes, Vec<String>) {
            let mut before = Vec::new();
            loop {
                if let Packet::Publish(p) = self.next().await {
                    if p.topic == topic {
                        return (p.payload, before);
                    }
                    before.push(p.topic);
                }
            }
        }

        /// Publishes received until one on each of `topics` has arrived, in whatever order:
        /// messages from different publishers (a command's reply, the outbox's event) race.
        /// Their payloads by topic, and every topic received before the last of them.
        async fn until_all(
            &mut self,
            topics: &[&str],
        ) -> (HashMap<String, bytes::Bytes>, Vec<String>) {
            let (mut found, mut before) = (HashMap::new(), Vec::new());
            while found.len() < topics.len() {
                if let Packet::Publish(p) = self.next().await {
                    if topics.contains(&p.topic.as_str()) && !found.contains_key(&p.topic) {
                        found.insert(p.topic, p.payload);
                    } else {
                        before.push(p.topic);
                    }
                }
            }
            (found, before)
        }

        async fn put(&self, path: &str, body: &[u8]) {
            self.client
                .publish(
                    format!("filegate/commands/put/{path}"),
                    QoS::AtLeastOnce,
                    false,
                    body.to_vec(),
                )
                .await
                .unwrap();
        }
    }

    fn embedded(port: u16) -> impl FnOnce(&mut filegate::Config) {
        move |c: &mut filegate::Config| {
            c.mqtt.mode = filegate::config::MqttMode::Embedded;
            c.mqtt.listen = format!("127.0.0.1:{port}").parse().unwrap();
            c.mqtt.commands = true;
            c.users.push(crate::common::user(
                "bob",
                "/home/bob",
                &filegate::config::Permission::ALL,
            ));
            c.users.push(crate::common::user(
                "writer",
                "/home/alice",
                &[filegate::config::Permission::Write],
            ));
        }
    }

    fn json(b: &[u8]) -> Value {
        serde_json::from_slice(b).unwrap_or_else(|_| panic!("not JSON: {b:?}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_versions_on_one_port_and_a_3_1_1_get_reply_does_not_break_the_broker() {
        let port = test_support::free_port();
        let t = start(Kind::Embedded, embedded(port)).await;
        // The rumqttd 0.20 crash: a 3.1.1 client's `get` reply panicked the broker for good.
        for round in 0..2 {
            let mut a = probe(
                port,
                &format!("old-{round}"),
                Some(("alice", PASSWORD)),
                true,
            )
            .await
            .unwrap();
            assert_eq!(
                a.subscribe("filegate/replies/alice/#").await,
                [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
            );
            a.put("docs/r.txt", b"v1").await;
            let (body, _) = a.until("filegate/replies/alice/put/docs/r.txt").await;
            assert_eq!(
                json(&body)["ok"],
                true,
                "{}",
                String::from_utf8_lossy(&body)
            );
            a.client
                .publish(
                    "filegate/commands/get/docs/r.txt",
                    QoS::AtLeastOnce,
                    false,
                    vec![],
                )
                .await
                .unwrap();
            let (body, _) = a.until("filegate/replies/alice/get/docs/r.txt").await;
            assert_eq!(&body[..], b"v1");
            a.client
                .publish(
                    "filegate/commands/list/docs",
                    QoS::AtMostOnce,
                    false,
                    vec![],
                )
                .await
                .unwrap();
            let (body, _) = a.until("filegate/replies/alice/list/docs").await;
            assert_eq!(json(&body)["entries"][0]["name"], "r.txt");
            a.client
                .publish(
                    "filegate/commands/delete/docs/r.txt",
                    QoS::AtLeastOnce,
                    false,
                    vec![],
                )
                .await
                .unwrap();
            let (body, _) = a.until("filegate/replies/alice/delete/docs/r.txt").await;
            assert_eq!(json(&body)["ok"], true);
        }
        // MQTT 5 on the same port: put, get, list, delete with response topics.
        commands::exercise_at(port, "alice").await;
        // Mosquitto's own clients, both versions.
        let port_s = port.to_string();
        let base = [
            "-h",
            "127.0.0.1",
            "-p",
            &port_s,
            "-u",
            "alice",
            "-P",
            PASSWORD,
        ];
        mosquitto_put_stored(&t, &base, "m.txt", "from mosquitto_pub").await;
        assert_eq!(mosquitto_rr(&base, "m.txt", "rr"), "from mosquitto_pub");
        // mosquitto_sub (3.1.1) sees alice's events: puts go on until its subscription is in and
        // it has printed one, then it exits (-C 1).
        let mut sub_args = base.to_vec();
        sub_args.extend([
            "-V",
            "mqttv311",
            "-C",
            "1",
            "-W",
            "30",
            "-t",
            "filegate/events/home/alice/sub/#",
        ]);
        let sub = std::process::Command::new(crate::common::program("mosquitto_sub"))
            .args(&sub_args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut sub = sub;
        let mut i = 0;
        while sub.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "mosquitto_sub never got an event"
            );
            mosquitto_pub(&base, &format!("sub/{i}.txt"), "x");
            i += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = sub.wait_with_output().unwrap();
        let event: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(event["data"]["user"], "alice");
        // The folder made by the first put, or a file in it.
        let path = event["data"]["path"].as_str().unwrap();
        assert!(
            path == "/home/alice/sub" || path.starts_with("/home/alice/sub/"),
            "{path}"
        );
        // And the broker still serves new connections and events.
        let mut sub = subscribe(port, Some(("alice", PASSWORD)), "after", true)
            .await
            .unwrap();
        let mut ftp = ftp(&t).await;
        ftp.put_file("after.txt", &mut &b"x"[..]).await.unwrap();
        loop {
            let (topic, v) = tokio::time::timeout(Duration::from_secs(20), sub.rx.recv())
                .await
                .unwrap()
                .unwrap();
            if topic == "filegate/events/home/alice/after.txt" {
                assert_eq!(v["type"], "io.filegate.file.created");
                break;
            }
        }
        t.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_user_sees_and_commands_only_their_own_files() {
        let port = test_support::free_port();
        let t = start(Kind::Redis, embedded(port)).await;
        let mut alice = probe(port, "alice", Some(("alice", PASSWORD)), true)
            .await
            .unwrap();
        alice.subscribe("#").await;
        let mut bob = probe(port, "bob", Some(("bob", PASSWORD)), true)
            .await
            .unwrap();
        // Wildcards are accepted and filtered; another user's reply space is refused outright.
        assert_eq!(
            bob.subscribe("#").await,
            [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        );
        assert_eq!(
            bob.subscribe("filegate/replies/alice/#").await,
            [SubscribeReasonCode::Failure]
        );
        // A read-only user and a user without `list` on alice's home.
        let mut reader = probe(port, "reader", Some(("reader", PASSWORD)), true)
            .await
            .unwrap();
        reader.subscribe("filegate/#").await;
        let mut writer = probe(port, "writer", Some(("writer", PASSWORD)), true)
            .await
            .unwrap();
        writer.subscribe("filegate/events/#").await;

        // Bob forges an event on alice's home and commands outside his home.
        bob.client
            .publish(
                "filegate/events/home/alice/forged.txt",
                QoS::AtLeastOnce,
                false,
                b"{}".to_vec(),
            )
            .await
            .unwrap();
        bob.client
            .publish(
                "filegate/commands/get/../alice/secret.txt",
                QoS::AtLeastOnce,
                false,
                vec![],
            )
            .await
            .unwrap();
        bob.put("mine.txt", b"bob's").await;
        // Reader tries to write; alice works normally.
        reader.put("nope.txt", b"x").await;
        alice.put("secret.txt", b"alice's").await;
        // An MQTT 5 client that points its reply elsewhere (to bob's events, to a free topic) gets
        // an error on its own reply topic, and nothing is published where it pointed.
        let mut r5 =
            commands::requester(port, Some(("alice", PASSWORD)), "filegate/replies/alice/r5").await;
        r5.wait_ready().await;
        for elsewhere in [
            "filegate/events/home/bob/stolen",
            "public/loot",
            "filegate/replies/bob/x",
        ] {
            let (status, body) = r5
                .ask_to("filegate/commands/get/secret.txt", vec![], elsewhere)
                .await;
            assert_eq!(status, "error", "{}", String::from_utf8_lossy(&body));
            assert!(json(&body)["message"]
                .as_str()
                .unwrap()
                .contains("filegate/replies/alice/"));
        }
        // Markers: each user's last action; everything a client got before it is checked.
        let (got, bob_saw) = bob
            .until_all(&[
                "filegate/replies/bob/put/mine.txt",
                "filegate/events/home/bob/mine.txt",
            ])
            .await;
        assert_eq!(
            json(&got["filegate/replies/bob/put/mine.txt"])["path"],
            "/mine.txt"
        );
        assert!(
            bob_saw.iter().all(|t| t == "filegate/events/home/bob"
                || t.starts_with("filegate/events/home/bob/")
                || t.starts_with("filegate/replies/bob/")),
            "bob saw: {bob_saw:?}"
        );
        // Bob's escape attempt was answered to bob, as an error, and read nothing.
        let mut b2 = probe(port, "bob2", Some(("bob", PASSWORD)), true)
            .await
            .unwrap();
        b2.subscribe("filegate/replies/bob/#").await;
        b2.client
            .publish(
                "filegate/commands/get/../alice/secret.txt",
                QoS::AtLeastOnce,
                false,
                vec![],
            )
            .await
            .unwrap();
        let (body, _) = b2
            .until("filegate/replies/bob/get-error/../alice/secret.txt")
            .await;
        assert_eq!(json(&body)["ok"], false);
        assert_eq!(t.store_bytes("/home/bob/mine.txt").await, b"bob's");

        let (_, alice_saw) = alice.until("filegate/events/home/alice/secret.txt").await;
        assert!(
            !alice_saw
                .iter()
                .any(|t| t.contains("forged") || t.contains("/bob/")),
            "alice saw: {alice_saw:?}"
        );
        // Reader's refused put and alice's put ran at the same time: either may be answered first.
        let (got, reader_saw) = reader
            .until_all(&[
                "filegate/replies/reader/put/nope.txt",
                "filegate/events/home/alice/secret.txt",
            ])
            .await;
        assert_eq!(
            json(&got["filegate/replies/reader/put/nope.txt"])["error"],
            "permission_denied"
        );
        assert!(
            reader_saw
                .iter()
                .all(|t| !t.contains("/replies/alice/") && !t.contains("forged")),
            "reader saw: {reader_saw:?}"
        );
        // The user without `list` receives no events at all: its own upload is the marker.
        writer.put("w.txt", b"w").await;
        let landed = StorePath::parse("/home/alice/w.txt").unwrap();
        until("writer's put never landed", Duration::from_secs(20), || {
            t.store().stat(&landed)
        })
        .await;
        let mut a2 = probe(port, "a2", Some(("alice", PASSWORD)), true)
            .await
            .unwrap();
        a2.subscribe("filegate/events/#").await;
        alice.put("final.txt", b"f").await;
        a2.until("filegate/events/home/alice/final.txt").await;
        while let Ok(p) = writer.rx.try_recv() {
            assert!(
                !matches!(p, Packet::Publish(_)),
                "a user without list got {p:?}"
            );
        }
        // Nothing was stored where the replies were pointed, and forged events are not events.
        assert!(t.events().await.iter().all(|e| !e.path.contains("forged")));
        t.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn anonymous_clients_see_only_the_configured_home() {
        let port = test_support::free_port();
        let t = start(Kind::Embedded, |c| {
            embedded(port)(c);
            c.mqtt.allow_anonymous = true;
        })
        .await;
        let mut anon = probe(port, "anon", None, true).await.unwrap();
        assert_eq!(anon.subscribe("#").await, [SubscribeReasonCode::Failure]);
        anon.client
            .publish(
                "filegate/commands/put/x.txt",
                QoS::AtLeastOnce,
                false,
                b"x".to_vec(),
            )
            .await
            .unwrap();
        // Alice's command after it is the marker: when hers is done, the anonymous one was seen.
        let mut alice = probe(port, "alice", Some(("alice", PASSWORD)), true)
            .await
            .unwrap();
        alice.subscribe("filegate/replies/alice/#").await;
        alice.put("marker.txt", b"m").await;
        alice.until("filegate/replies/alice/put/marker.txt").await;
        assert!(t
            .store()
            .stat(&StorePath::parse("/home/alice/x.txt").unwrap())
            .await
            .is_err());
        t.stop().await;

        let port = test_support::free_port();
        let t = start(Kind::Embedded, |c| {
            embedded(port)(c);
            c.mqtt.allow_anonymous = true;
            c.mqtt.anonymous_home = "/home/bob".into();
        })
        .await;
        let mut anon = probe(port, "anon", None, true).await.unwrap();
        anon.subscribe("filegate/events/#").await;
        let alice = probe(port, "alice", Some(("alice", PASSWORD)), true)
            .await
            .unwrap();
        alice.put("hidden.txt", b"a").await;
        let bob = probe(port, "bob", Some(("bob", PASSWORD)), true)
            .await
            .unwrap();
        bob.put("shown.txt", b"b").await;
        let (_, before) = anon.until("filegate/events/home/bob/shown.txt").await;
        assert!(
            before
                .iter()
                .all(|t| t == "filegate/events/home/bob"
                    || t.starts_with("filegate/events/home/bob/")),
            "{before:?}"
        );
        t.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retained_messages_are_never_kept() {
        let port = test_support::free_port();
        let t = start(Kind::Embedded, embedded(port)).await;
        let flood = probe(port, "flood", Some(("alice", PASSWORD)), true)
            .await
            .unwrap();
        for i in 0..40 {
            for topic in [
                format!("retained/{i}"),
                format!("filegate/events/home/alice/r{i}"),
                format!("filegate/replies/alice/r{i}"),
            ] {
                flood
                    .client
                    .publish(topic, QoS::AtLeastOnce, true, vec![b'r'; 256 * 1024])
                    .await
                    .unwrap();
            }
        }
        // A retained command is run once, like any command, and not kept either.
        flood
            .client
            .publish(
                "filegate/commands/put/kept.txt",
                QoS::AtLeastOnce,
                true,
                b"k".to_vec(),
            )
            .await
            .unwrap();
        let mut late = probe(port, "late", Some(("alice", PASSWORD)), true)
            .await
            .unwrap();
        late.subscribe("#").await;
        // The marker: alice's own next upload; nothing retained may arrive before it.
        let mut ftp = ftp(&t).await;
        ftp.put_file("marker.txt", &mut &b"m"[..]).await.unwrap();
        let (_, before) = late.until("filegate/events/home/alice/marker.txt").await;
        assert!(
            before
                .iter()
                // Alice's own reply and event for the put may arrive if the put ran after
                // this client subscribed: live messages, not retained ones.
                .all(|t| t == "filegate/events/home/alice/kept.txt"
                    || t == "filegate/replies/alice/put/kept.txt"
                    || t == "filegate/events/home/alice"),
            "retained or forged messages arrived: {before:?}"
        );
        t.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_persistent_session_receives_what_it_missed_in_order() {
        let port = test_support::free_port();
        let t = start(Kind::Embedded, embedded(port)).await;
        // MQTT 3.1.1, clean_session = false.
        let mut p = probe(port, "keeper", Some(("alice", PASSWORD)), false)
            .await
            .unwrap();
        p.subscribe("filegate/events/#").await;
        p.client.disconnect().await.unwrap();
        drop(p);
        // MQTT 5, session expiry 300 s.
        let mut o = rumqttc::v5::MqttOptions::new("keeper5", "127.0.0.1", port);
        o.set_credentials("alice", PASSWORD)
            .set_clean_start(false)
            .set_session_expiry_interval(Some(300));
        let (c5, mut el5) = rumqttc::v5::AsyncClient::new(o.clone(), 10);
        c5.subscribe(
            "filegate/events/#",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        )
        .await
        .unwrap();
        loop {
            if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(_)) =
                el5.poll().await.unwrap()
            {
                break;
            }
        }
        c5.disconnect().await.unwrap();
        while el5.poll().await.is_ok() {}
        drop(el5);
        // Files change while both are away; a client that stays connected sees what happened.
        let mut witness = probe(port, "witness", Some(("alice", PASSWORD)), true)
            .await
            .unwrap();
        witness.subscribe("filegate/events/#").await;
        let mut ftp = ftp(&t).await;
        for i in 0..20 {
            ftp.put_file(format!("missed-{i:02}.txt"), &mut &b"x"[..])
                .await
                .unwrap();
        }
        let mut want = Vec::new();
        while want.len() < 20 {
            if let Packet::Publish(m) = witness.next().await {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                if m.topic.contains("missed-") {
                    want.push(v["data"]["seq"].as_u64().unwrap());
                }
            }
        }
        // Both come back and get every missed event, in seq order.
        let mut p = probe(port, "keeper", Some(("alice", PASSWORD)), false)
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 20 {
            if let Packet::Publish(m) = p.next().await {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                if m.topic.contains("missed-") {
                    got.push(v["data"]["seq"].as_u64().unwrap());
                }
            }
        }
        assert_eq!(got, want, "3.1.1 persistent session");
        let (_c5, mut el5) = rumqttc::v5::AsyncClient::new(o, 10);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < 20 {
            assert!(Instant::now() < deadline, "MQTT 5 session got only {got:?}");
            let e = tokio::time::timeout(Duration::from_secs(20), el5.poll())
                .await
                .unwrap()
                .unwrap();
            if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(m)) = e
            {
                let v: Value = serde_json::from_slice(&m.payload).unwrap();
                if String::from_utf8_lossy(&m.topic).contains("missed-") {
                    got.push(v["data"]["seq"].as_u64().unwrap());
                }
            }
        }
        assert_eq!(got, want, "MQTT 5 session");
        t.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_mqtt_logins_ban_the_address_for_every_protocol() {
        let port = test_support::free_port();
        let t = start(Kind::Embedded, |c| {
            embedded(port)(c);
            c.limits.login_failures_per_ip = 3;
            crate::common::sftp_on(c);
        })
        .await;
        t.gw().access.set_failure_delay(Duration::ZERO);
        for i in 0..3 {
            let refused = probe(port, &format!("guess-{i}"), Some(("alice", "wrong")), true).await;
            assert!(refused.is_err(), "a wrong password was accepted");
        }
        // The right password over MQTT is refused now, and so is FTP from the same address.
        assert!(probe(port, "right", Some(("alice", PASSWORD)), true)
            .await
            .is_err());
        let ftp = AsyncFtpStream::connect(t.ftp_addr()).await;
        let refused = match ftp {
            Err(_) => true,
            Ok(mut f) => f.login("alice", PASSWORD).await.is_err(),
        };
        assert!(refused, "FTP still let the banned address in");
        assert!(
            crate::common::ssh_login(t.sftp_addr(), "alice", PASSWORD)
                .await
                .is_err(),
            "SFTP still let the banned address in"
        );
        t.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_clients_come_and_go_and_leave_nothing_behind() {
        let port = test_support::free_port();
        let t = start(Kind::Embedded, |c| {
            embedded(port)(c);
            c.limits.max_connections = 5000;
            c.limits.max_connections_per_ip = 5000;
        })
        .await;
        // The publisher's own connection is up once /readyz says so.
        crate::common::until_ready(t.gw().http_addr, 200).await;
        let idle = t.gw().access.active_connections();
        let mut clients = Vec::new();
        for i in 0..1000 {
            let mut p = probe(port, &format!("many-{i}"), Some(("alice", PASSWORD)), true)
                .await
                .unwrap();
            if i % 100 == 0 {
                p.subscribe("filegate/events/#").await;
            }
            clients.push(p);
        }
        assert_eq!(t.gw().access.active_connections(), idle + 1000);
        for p in &clients {
            p.client.disconnect().await.unwrap();
        }
        drop(clients);
        until_true(
            "connections were not released",
            Duration::from_secs(30),
            || async { t.gw().access.active_connections() <= idle },
        )
        .await;
        t.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paho_clients_of_both_versions() {
        let port = test_support::free_port();
        let t = start(Kind::Embedded, embedded(port)).await;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mqtt_paho.py");
        for version in ["3.1.1", "5"] {
            let out = crate::common::client(
                "python3",
                &[
                    script,
                    "127.0.0.1",
                    &port.to_string(),
                    "alice",
                    PASSWORD,
                    version,
                ],
            );
            let out = String::from_utf8_lossy(&out);
            assert!(out.trim_end().ends_with("ok"), "paho {version}: {out}");
        }
        t.stop().await;
    }
}

/// `filegate mqtt-acl` with a real Mosquitto: each user reads only their home's events there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mosquitto_acl_gives_each_user_only_their_home() {
    let users = |c: &mut filegate::Config| {
        c.mqtt.username = "gw".into();
        c.mqtt.password = "gw-secret".into();
        c.users.push(crate::common::user(
            "bob",
            "/home/bob",
            &filegate::config::Permission::ALL,
        ));
    };
    let mut planned = filegate::Config {
        users: vec![
            crate::common::user("alice", "/home/alice", &filegate::config::Permission::ALL),
            crate::common::user("bob", "/home/bob", &filegate::config::Permission::ALL),
        ],
        ..Default::default()
    };
    users(&mut planned);
    planned.users.truncate(2);
    let acl = filegate::mqtt::mosquitto_acl(&planned);
    assert!(
        acl.contains("user alice\ntopic read filegate/events/home/alice\n"),
        "{acl}"
    );
    let broker = Mosquitto::start_with_acl(
        &[("gw", "gw-secret"), ("alice", PASSWORD), ("bob", PASSWORD)],
        &acl,
    );
    let t = start(Kind::Embedded, |c| {
        external(c, &broker);
        users(c);
    })
    .await;
    let sub = |id: &'static str, user: &'static str, filter: &'static str| {
        let port = broker.port();
        async move {
            let mut o = MqttOptions::new(id, "127.0.0.1", port);
            o.set_credentials(user, PASSWORD);
            let (client, mut el) = AsyncClient::new(o, 10);
            client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
            loop {
                match tokio::time::timeout(Duration::from_secs(20), el.poll())
                    .await
                    .unwrap()
                    .unwrap()
                {
                    Event::Incoming(Packet::SubAck(a)) => return (client, el, a.return_codes),
                    _ => continue,
                }
            }
        }
    };
    let (_a, mut alice, _) = sub("a", "alice", "filegate/events/home/alice/#").await;
    // Mosquitto grants any subscription and filters each message by the ACL.
    let (_b, mut bob, _) = sub("b", "bob", "filegate/events/#").await;
    let mut ftp = ftp(&t).await;
    ftp.put_file("acl.txt", &mut &b"x"[..]).await.unwrap();
    loop {
        if let Event::Incoming(Packet::Publish(p)) =
            tokio::time::timeout(Duration::from_secs(20), alice.poll())
                .await
                .unwrap()
                .unwrap()
        {
            if p.topic == "filegate/events/home/alice/acl.txt" {
                break;
            }
        }
    }
    // Bob's subscription delivers nothing of alice's: his own file is the marker.
    let fs = t
        .gw()
        .access
        .session_for(
            "bob",
            filegate::access::Protocol::Ftp,
            "127.0.0.1:1".parse().unwrap(),
        )
        .await
        .unwrap();
    let p = filegate::access::UserPath::root().join("mine.txt");
    let mut up = fs
        .open_write(&p, storage_backend::OpenOptions::REPLACE)
        .await
        .unwrap();
    up.write_at(0, b"b").await.unwrap();
    up.commit(None).await.unwrap();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), bob.poll()).await;
        if let Event::Incoming(Packet::Publish(p)) = e.unwrap().unwrap() {
            assert!(
                p.topic.starts_with("filegate/events/home/bob"),
                "bob got {}",
                p.topic
            );
            if p.topic.ends_with("mine.txt") {
                break;
            }
        }
    }
    // And alice cannot publish forged events there.
    let mut o = MqttOptions::new("forger", "127.0.0.1", broker.port());
    o.set_credentials("alice", PASSWORD);
    let (forger, mut fel) = AsyncClient::new(o, 10);
    forger
        .publish(
            "filegate/events/home/alice/forged.txt",
            QoS::AtLeastOnce,
            false,
            b"{}".to_vec(),
        )
        .await
        .unwrap();
    // Mosquitto acknowledges a publish its ACL drops, or closes the connection: either ends it.
    loop {
        match tokio::time::timeout(Duration::from_secs(20), fel.poll())
            .await
            .unwrap()
        {
            Ok(Event::Incoming(Packet::PubAck(_))) | Err(_) => break,
            Ok(_) => {}
        }
    }
    ftp.put_file("after-forge.txt", &mut &b"x"[..])
        .await
        .unwrap();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), alice.poll()).await;
        if let Event::Incoming(Packet::Publish(p)) = e.unwrap().unwrap() {
            assert!(!p.topic.contains("forged"), "a forged event reached alice");
            if p.topic.ends_with("after-forge.txt") {
                break;
            }
        }
    }
    t.stop().await;
}

/// The embedded broker over TLS (mosquitto clients, both versions) and over WebSocket (MQTT.js,
/// as browsers use it, both versions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_websocket_listeners_serve_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("mqtt.crt"), dir.path().join("mqtt.key"));
    filegate::certs::gen_cert(&filegate::cli::GenCertArgs {
        hosts: vec!["localhost".into()],
        cert: cert.clone(),
        key: key.clone(),
        days: 1,
        force: false,
    })
    .unwrap();
    let (port, tls_port, ws_port) = (
        test_support::free_port(),
        test_support::free_port(),
        test_support::free_port(),
    );
    let t = start(Kind::Embedded, |c| {
        c.mqtt.mode = filegate::config::MqttMode::Embedded;
        c.mqtt.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.mqtt.commands = true;
        c.mqtt.tls.listen = Some(format!("127.0.0.1:{tls_port}").parse().unwrap());
        c.mqtt.tls.cert = cert.clone();
        c.mqtt.tls.key = key.clone();
        c.mqtt.ws_listen = Some(format!("127.0.0.1:{ws_port}").parse().unwrap());
    })
    .await;
    let tls_port_s = tls_port.to_string();
    let cafile = cert.to_str().unwrap();
    let base = [
        "-h",
        "localhost",
        "-p",
        &tls_port_s,
        "--cafile",
        cafile,
        "-u",
        "alice",
        "-P",
        PASSWORD,
    ];
    mosquitto_put_stored(&t, &base, "tls.txt", "over TLS").await;
    assert_eq!(mosquitto_rr(&base, "tls.txt", "tls"), "over TLS");
    // A plaintext client on the TLS port gets nowhere, and the port keeps serving.
    assert!(super_probe_fails(tls_port).await);
    assert_eq!(mosquitto_rr(&base, "tls.txt", "tls"), "over TLS");

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/mqttjs/ws_commands.js"
    );
    let url = format!("ws://127.0.0.1:{ws_port}/mqtt");
    for version in ["4", "5"] {
        let out = crate::common::client("node", &[script, &url, "alice", PASSWORD, version]);
        assert_eq!(
            String::from_utf8_lossy(&out).trim_end(),
            "ok",
            "MQTT.js v{version}"
        );
    }
    assert_eq!(
        t.store_bytes("/home/alice/ws5/data.bin").await,
        vec![7u8; 5000]
    );
    t.stop().await;
}

/// A plain MQTT CONNECT to a TLS port is not answered with a CONNACK.
async fn super_probe_fails(port: u16) -> bool {
    let mut o = MqttOptions::new("plain", "127.0.0.1", port);
    o.set_credentials("alice", PASSWORD);
    let (_c, mut el) = AsyncClient::new(o, 10);
    !matches!(
        tokio::time::timeout(Duration::from_secs(15), el.poll()).await,
        Ok(Ok(Event::Incoming(Packet::ConnAck(_))))
    )
}

/// `mosquitto_pub` (MQTT 3.1.1, QoS 1) puts `body` as alice's `name` with a file command.
/// `mosquitto_pub` of a put, then a wait for alice's stored file: its PUBACK says the broker has
/// the command, not that the put is done (the result goes to a reply topic it does not read).
async fn mosquitto_put_stored(
    t: &crate::common::TestGateway,
    base: &[&str],
    name: &str,
    body: &str,
) {
    mosquitto_pub(base, name, body);
    let stored = StorePath::parse(&format!("/home/alice/{name}")).unwrap();
    until(
        &format!("{name} was stored"),
        Duration::from_secs(20),
        || t.store().stat(&stored),
    )
    .await;
}

fn mosquitto_pub(base: &[&str], name: &str, body: &str) {
    let topic = format!("filegate/commands/put/{name}");
    let mut args = base.to_vec();
    args.extend(["-V", "mqttv311", "-q", "1", "-t", &topic, "-m", body]);
    crate::common::client("mosquitto_pub", &args);
}

/// `mosquitto_rr` (MQTT 5 request/response) gets alice's `name`, the reply on
/// `filegate/replies/alice/{reply}`; the content it printed.
fn mosquitto_rr(base: &[&str], name: &str, reply: &str) -> String {
    let (topic, reply) = (
        format!("filegate/commands/get/{name}"),
        format!("filegate/replies/alice/{reply}"),
    );
    let mut args = base.to_vec();
    args.extend([
        "-V", "mqttv5", "-t", &topic, "-e", &reply, "-m", "", "-W", "20",
    ]);
    let got = crate::common::client("mosquitto_rr", &args);
    String::from_utf8_lossy(&got).trim_end().to_string()
}
