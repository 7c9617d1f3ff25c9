//! The embedded MQTT broker, next to a raw Mosquitto measured in the same run:
//! - event delivery, commit → subscriber, p50/p99 at a steady 1 event/s and 1,000 events/s, beside
//!   Mosquitto's own publish → deliver round trip at the same rates;
//! - fan-out of one event stream to 100 subscribers, each a user seeing only their home;
//! - resident memory of the gateway process with 1,000 idle clients, beside Mosquitto's.
//!
//! `cargo bench --bench broker` (a short smoke run under `cargo test`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use storage_backend::{ChangeContext, StorePath};
use test_support::Mosquitto;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A subscriber on `filter`; arrivals (topic, when) come out of the receiver.
async fn listener(
    port: u16,
    id: &str,
    login: Option<(&str, &str)>,
    filter: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, Instant)> {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20)
        .set_keep_alive(Duration::from_secs(60));
    if let Some((u, p)) = login {
        o.set_credentials(u, p);
    }
    let (client, mut el) = AsyncClient::new(o, 100);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let filter = filter.to_string();
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send((p.topic.clone(), Instant::now())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // The broker went away (the end of the run): a missing event is caught by the reader.
                Err(_) => return,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(20), ready_rx)
        .await
        .unwrap()
        .unwrap();
    rx
}

/// Sends `n` items at `rate` per second (`send(i)` at its slot); returns each send's instant.
async fn paced<F, Fut>(n: usize, rate: f64, mut send: F) -> Vec<Instant>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = tokio::time::Instant::now();
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        sent.push(Instant::now());
        send(i).await;
    }
    sent
}

/// Latencies of `n` messages whose topic ends in `/{i}`, sent at `sent[i]`.
async fn arrivals(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    sent: &[Instant],
) -> Vec<Duration> {
    let mut lat = vec![None; sent.len()];
    let mut got = 0;
    while got < sent.len() {
        let (topic, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("an event went missing")
            .unwrap();
        let Some(i) = topic
            .rsplit('/')
            .next()
            .and_then(|s| s.strip_prefix('m'))
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        if i < lat.len() && lat[i].is_none() {
            lat[i] = Some(at - sent[i]);
            got += 1;
        }
    }
    let mut lat: Vec<Duration> = lat.into_iter().map(Option::unwrap).collect();
    lat.sort();
    lat
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Opens `n` MQTT 3.1.1 connections that log in, subscribe to `filter` and then stay idle.
fn idle_clients(
    port: u16,
    n: usize,
    user: &str,
    password: &str,
    filter: &str,
) -> Vec<std::net::TcpStream> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = bytes::BytesMut::new();
        let mut c = rumqttc::Connect::new(format!("idle-{i}"));
        c.keep_alive = 600;
        c.set_login(user, password);
        c.write(&mut b).unwrap();
        let mut sub = rumqttc::Subscribe::new(filter, QoS::AtLeastOnce);
        sub.pkid = 1;
        sub.write(&mut b).unwrap();
        s.write_all(&b).unwrap();
        // CONNACK (4 bytes) and SUBACK (5 bytes).
        let mut ack = [0u8; 9];
        if let Err(e) = s.read_exact(&mut ack) {
            panic!("idle client {i} on port {port}: {e}; got {ack:02x?}");
        }
        assert_eq!(ack[3], 0, "client {i} refused");
        out.push(s);
    }
    out
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // A steady 1 event/s (10/s in the smoke run) and 1,000/s.
    let (slow_n, slow_rate) = if full { (30, 1.0) } else { (10, 10.0) };
    let fast_n = if full { 5000 } else { 500 };
    let idle_n = if full { 1000 } else { 100 };
    let mosquitto = Mosquitto::start();
    let mport = mosquitto.port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let port = test_support::free_port();
        let t = common::start(common::Kind::Redis, |c| {
            c.mqtt.mode = filegate::config::MqttMode::Embedded;
            c.mqtt.listen = format!("127.0.0.1:{port}").parse().unwrap();
            c.limits.max_connections = 10_000;
            c.limits.max_connections_per_ip = 10_000;
            c.mqtt.session_queue = 10_000;
            for i in 0..100 {
                c.users.push(common::user(
                    &format!("u{i}"),
                    &format!("/u{i}"),
                    &filegate::config::Permission::ALL,
                ));
            }
        })
        .await;
        common::until_ready(t.gw().http_addr, 200).await;
        let ctx = ChangeContext::new("bench", "ftp", "127.0.0.1:1");
        let store = t.store().clone();
        store.mkdir(&StorePath::parse("/home").unwrap(), &ctx).await.ok();
        store.mkdir(&StorePath::parse("/home/alice").unwrap(), &ctx).await.ok();

        // Raw Mosquitto publisher.
        let mut o = MqttOptions::new("raw-pub", "127.0.0.1", mport);
        o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(1000);
        let (raw_pub, mut raw_el) = AsyncClient::new(o, 10_000);
        tokio::spawn(async move { while raw_el.poll().await.is_ok() {} });

        let mut rows = Vec::new();
        for (label, n, rate) in [("1 event/s", slow_n, slow_rate), ("1,000 events/s", fast_n, 1000.0)] {
            let dir = format!("/home/alice/r{}", rate as u64);
            store.mkdir(&StorePath::parse(&dir).unwrap(), &ctx).await.unwrap();
            let mut rx = listener(port, &format!("lat-{rate}"), Some(("alice", common::PASSWORD)), &format!("filegate/events{dir}/#")).await;
            let sent = paced(n, rate, |i| {
                let (store, ctx, dir) = (store.clone(), ctx.clone(), dir.clone());
                async move {
                    let p = StorePath::parse(&format!("{dir}/m{i}")).unwrap();
                    if rate > 100.0 {
                        // Commits overlap at high rates, as from many clients.
                        tokio::spawn(async move { store.write_file(&p, b"x", &ctx).await.unwrap() });
                    } else {
                        store.write_file(&p, b"x", &ctx).await.unwrap();
                    }
                }
            })
            .await;
            let ours = arrivals(&mut rx, &sent).await;
            let topic = format!("raw/r{}", rate as u64);
            let mut raw_rx = listener(mport, &format!("raw-lat-{rate}"), None, &format!("{topic}/#")).await;
            let sent = paced(n, rate, |i| {
                let (c, topic) = (raw_pub.clone(), topic.clone());
                async move {
                    c.publish(format!("{topic}/m{i}"), QoS::AtLeastOnce, false, vec![b'x'; 400]).await.unwrap();
                }
            })
            .await;
            let raw = arrivals(&mut raw_rx, &sent).await;
            rows.push((label, n, ours, raw));
        }

        // Fan-out: 100 users, each subscribed to every event, each receiving only its home's.
        let per_home = if full { 20 } else { 5 };
        let mut subs = Vec::new();
        for i in 0..100 {
            subs.push(listener(port, &format!("fan-{i}"), Some((&format!("u{i}"), common::PASSWORD)), "filegate/events/#").await);
        }
        let started = Instant::now();
        let mut sent = HashMap::new();
        let mut writers = tokio::task::JoinSet::new();
        for k in 0..per_home {
            for i in 0..100 {
                let p = format!("/u{i}/m{k}");
                sent.insert(format!("filegate/events{p}"), Instant::now());
                let (store, ctx) = (store.clone(), ctx.clone());
                writers.spawn(async move {
                    store.write_file(&StorePath::parse(&p).unwrap(), b"x", &ctx).await.unwrap();
                });
            }
        }
        while writers.join_next().await.is_some() {}
        let mut fan = Vec::new();
        for (i, rx) in subs.iter_mut().enumerate() {
            let mut mine = 0;
            while mine < per_home {
                let (topic, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.expect("fan-out event missing").unwrap();
                assert!(topic.starts_with(&format!("filegate/events/u{i}")), "u{i} got {topic}");
                if let Some(t0) = sent.get(&topic) {
                    fan.push(at - *t0);
                    mine += 1;
                }
            }
        }
        let fan_all = started.elapsed();
        fan.sort();
        drop(subs);

        // Idle clients: RSS of a gateway process and of Mosquitto, before and after.
        let dir = tempfile::tempdir().unwrap();
        let bport = test_support::free_port();
        let wrap = format!(
            "export FILEGATE__MQTT__MODE=embedded FILEGATE__MQTT__LISTEN=127.0.0.1:{bport} \
             FILEGATE__LIMITS__MAX_CONNECTIONS=10000 FILEGATE__LIMITS__MAX_CONNECTIONS_PER_IP=10000"
        );
        let gw = common::binary::Binary::start_wrapped(dir.path(), "", None, Some(&wrap));
        common::until_ready(gw.http, 200).await;
        let pid = gw.child.id();
        // One login first: the first password check sizes argon2's memory (once per process).
        let warm = idle_clients(bport, 1, "ops", common::binary::SECRET, "filegate/events/#");
        let before = rss_kib(pid);
        let clients = idle_clients(bport, idle_n, "ops", common::binary::SECRET, "filegate/events/#");
        let after = rss_kib(pid);
        drop(clients);
        drop(warm);
        let m_before = rss_kib(mosquitto.pid());
        let m_clients = idle_clients(mport, idle_n, "x", "x", "idle/#");
        let m_after = rss_kib(mosquitto.pid());
        drop(m_clients);
        drop(gw);

        println!("# Embedded broker benchmark (Redis store; Mosquitto measured in the same run)");
        println!();
        println!("| delivery | samples | filegate commit → subscriber p50 / p99 | Mosquitto publish → subscriber p50 / p99 |");
        println!("|---|---|---|---|");
        for (label, n, ours, raw) in &rows {
            println!(
                "| {label} | {n} | {:.2} / {:.2} ms | {:.2} / {:.2} ms |",
                ms(percentile(ours, 0.5)), ms(percentile(ours, 0.99)),
                ms(percentile(raw, 0.5)), ms(percentile(raw, 0.99))
            );
            common::summary("MQTT broker", &format!("commit → deliver p99, {label}"), "ms", ms(percentile(ours, 0.99)), "Mosquitto publish → deliver p99", ms(percentile(raw, 0.99)));
        }
        println!();
        println!(
            "Fan-out: {} events over 100 homes to 100 subscribers (each got only its own {per_home}): all delivered in {:.0} ms, commit → deliver p50 {:.2} ms, p99 {:.2} ms.",
            100 * per_home, ms(fan_all), ms(percentile(&fan, 0.5)), ms(percentile(&fan, 0.99))
        );
        println!();
        println!(
            "Idle clients: {idle_n} logged-in subscribers. Gateway process RSS {:.1} → {:.1} MiB (+{:.1} MiB); Mosquitto {:.1} → {:.1} MiB (+{:.1} MiB).",
            before as f64 / 1024.0, after as f64 / 1024.0, (after - before) as f64 / 1024.0,
            m_before as f64 / 1024.0, m_after as f64 / 1024.0, (m_after.saturating_sub(m_before)) as f64 / 1024.0
        );
        common::summary("MQTT broker", &format!("RSS growth, {idle_n} idle clients"), "MiB", (after - before) as f64 / 1024.0, "Mosquitto RSS growth", (m_after.saturating_sub(m_before)) as f64 / 1024.0);
        t.stop().await;
    });
}
