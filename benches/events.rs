//! Event benchmark, with the broker's own throughput and latency in the same run as baselines:
//! - draining a backlog of events from the outbox to mosquitto (QoS 1), next to
//!   a plain rumqttc client publishing as many messages at QoS 1 to the same kind of subscriber;
//! - latency from commit to delivery at a subscriber, next to a raw publish → deliver round trip.
//!
//! `cargo bench --bench events`; `BENCH_EVENTS` sets the backlog (default 100,000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use storage_backend::{ChangeContext, StorePath};
use test_support::Mosquitto;

/// A subscriber that counts `count` messages on `filter`; returns once its subscription is
/// acknowledged, so nothing published afterwards can be missed. The receiver fires at the last one.
async fn counter(port: u16, filter: &str, count: usize) -> tokio::sync::oneshot::Receiver<Instant> {
    let mut rx = listener(port, filter).await;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        for _ in 1..count {
            rx.recv().await.expect("subscriber connection lost");
        }
        let (_, at) = rx.recv().await.expect("subscriber connection lost");
        let _ = done_tx.send(at);
    });
    done_rx
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn listener(port: u16, filter: &str) -> tokio::sync::mpsc::Receiver<(String, Instant)> {
    let mut o = MqttOptions::new(format!("lat-{}", uuid_like()), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 100);
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
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
                    if tx.send((p.topic.clone(), Instant::now())).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    ready_rx.await.unwrap();
    rx
}

fn uuid_like() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 2_000 });
    let samples = if full { 1000 } else { 50 };
    let broker = Mosquitto::start();
    let port = broker.port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Raw broker throughput: a plain rumqttc client publishing as many messages of an event's
        // size at QoS 1, with the same in-flight window as the gateway's publisher.
        let raw_done = counter(port, "bench/raw", n).await;
        let mut o = MqttOptions::new("raw-bulk", "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(256);
        let (bulk, mut bulk_el) = AsyncClient::new(o, 512);
        tokio::spawn(async move { while bulk_el.poll().await.is_ok() {} });
        let start = Instant::now();
        for _ in 0..n {
            bulk.publish("bench/raw", QoS::AtLeastOnce, false, vec![b'x'; 400])
                .await
                .unwrap();
        }
        let raw_rate = n as f64 / (raw_done.await.unwrap() - start).as_secs_f64();

        let mosquitto_pub_rate = mosquitto_clients_rate(port, n).await;

        // A backlog in the outbox (no broker reachable while it is made), then a gateway drains it.
        let t = common::start(common::Kind::Redis, |_| {}).await;
        let ctx = ChangeContext::new("bench", "ftp", "127.0.0.1:1");
        let store = t.store().clone();
        let made = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..8 {
            let store = store.clone();
            let ctx = ctx.clone();
            tasks.spawn(async move {
                for i in (w..n).step_by(8) {
                    let p = StorePath::parse(&format!("/f{i}")).unwrap();
                    store.write_file(&p, b"x", &ctx).await.unwrap();
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        eprintln!("backlog of {n} events made in {:.1}s", made.elapsed().as_secs_f64());
        let redis_url = t.config.storage.redis.url.clone();
        let redis = {
            let mut t = t;
            let r = t.redis.take();
            t.stop().await;
            r
        };
        let drained = counter(port, "filegate/events/#", n).await;
        let start = Instant::now();
        let g = common::start(common::Kind::Embedded, |c| {
            c.mqtt.mode = filegate::config::MqttMode::External;
            c.mqtt.url = broker.url();
            c.storage.backend = filegate::config::StorageBackend::Redis;
            c.storage.redis.url = redis_url.clone();
        })
        .await;
        let drain_rate = n as f64 / (drained.await.unwrap() - start).as_secs_f64();

        // Latency: commit → delivery, one upload at a time.
        let mut rx = listener(port, "filegate/events/lat/#").await;
        g.store().mkdir(&StorePath::parse("/lat").unwrap(), &ctx).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        let mut ours = Vec::new();
        for i in 0..samples {
            let p = StorePath::parse(&format!("/lat/s{i}")).unwrap();
            let t0 = Instant::now();
            g.store().write_file(&p, b"x", &ctx).await.unwrap();
            let (_, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
            ours.push(at - t0);
        }
        // Raw: publish → delivery through the same broker.
        let mut raw_rx = listener(port, "bench/lat").await;
        let mut o = MqttOptions::new("raw-pub", "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 100);
        tokio::spawn(async move { while el.poll().await.is_ok() {} });
        let mut raw = Vec::new();
        for _ in 0..samples {
            let t0 = Instant::now();
            client.publish("bench/lat", QoS::AtLeastOnce, false, vec![b'x'; 400]).await.unwrap();
            let (_, at) = tokio::time::timeout(Duration::from_secs(10), raw_rx.recv()).await.unwrap().unwrap();
            raw.push(at - t0);
        }
        ours.sort();
        raw.sort();
        println!("# Event benchmark: {n} events drained from the outbox, {samples} latency samples (mosquitto, QoS 1)");
        println!();
        println!("| | events/s |");
        println!("|---|---|");
        println!("| raw rumqttc publish → subscriber | {raw_rate:.0} |");
        if let Some(m) = mosquitto_pub_rate {
            println!("| raw mosquitto_pub -l → mosquitto_sub | {m:.0} |");
        }
        println!(
            "| filegate draining its outbox | {drain_rate:.0} ({:.2}× rumqttc{}) |",
            drain_rate / raw_rate,
            mosquitto_pub_rate
                .map(|m| format!(", {:.2}× mosquitto_pub", drain_rate / m))
                .unwrap_or_default()
        );
        println!();
        println!("| latency | p50 | p99 |");
        println!("|---|---|---|");
        println!("| raw publish → deliver | {:.2} ms | {:.2} ms |", ms(percentile(&raw, 0.5)), ms(percentile(&raw, 0.99)));
        println!("| filegate commit → deliver | {:.2} ms | {:.2} ms |", ms(percentile(&ours, 0.5)), ms(percentile(&ours, 0.99)));
        common::summary("MQTT events", "drain outbox backlog", "events/s", drain_rate, "raw rumqttc publish, QoS 1", raw_rate);
        if let Some(m) = mosquitto_pub_rate {
            common::summary("MQTT events", "drain outbox backlog", "events/s", drain_rate, "raw mosquitto_pub -l → mosquitto_sub, QoS 1", m);
        }
        common::summary("MQTT events", "commit → deliver p50", "ms", ms(percentile(&ours, 0.5)), "raw publish → deliver p50", ms(percentile(&raw, 0.5)));
        common::summary("MQTT events", "commit → deliver p99", "ms", ms(percentile(&ours, 0.99)), "raw publish → deliver p99", ms(percentile(&raw, 0.99)));
        g.stop().await;
        drop(redis);
    });
}

/// `mosquitto_pub -l` → `mosquitto_sub` at QoS 1: messages per second from the first publish to
/// the last arrival, or None when the clients are missing or messages went missing.
async fn mosquitto_clients_rate(port: u16, n: usize) -> Option<f64> {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let port_s = port.to_string();
    let mut sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port_s,
            "-q",
            "1",
            "-t",
            "bench/clients",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| eprintln!("mosquitto_sub: {e} (apt-get install mosquitto-clients)"))
        .ok()?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<(bool, Instant)>(4096);
    let out = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send((line == "probe", Instant::now())).is_err() {
                return;
            }
        }
    });
    // mosquitto_sub says nothing when it has subscribed: probe until one comes through.
    let mut o = MqttOptions::new("probe", "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (probe, mut probe_el) = AsyncClient::new(o, 10);
    let driver = tokio::spawn(async move { while probe_el.poll().await.is_ok() {} });
    let subscribed = tokio::task::spawn_blocking({
        let probe = probe.clone();
        move || {
            for _ in 0..100 {
                let _ = probe.try_publish("bench/clients", QoS::AtLeastOnce, false, "probe");
                if let Ok((true, _)) = rx.recv_timeout(Duration::from_millis(100)) {
                    return Some(rx);
                }
            }
            None
        }
    })
    .await
    .unwrap();
    driver.abort();
    let rx = subscribed?;
    let start = Instant::now();
    let mut publisher = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port_s,
            "-q",
            "1",
            "-t",
            "bench/clients",
            "-l",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = publisher.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let line = format!("{}\n", "x".repeat(400));
        for _ in 0..n {
            if stdin.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    });
    let last = tokio::task::spawn_blocking(move || {
        let mut got = 0;
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(120);
        while got < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((false, at)) => {
                    got += 1;
                    last = Some(at);
                }
                Ok((true, _)) => {}
                Err(_) => {
                    eprintln!("mosquitto_sub received {got} of {n} messages: no baseline");
                    return None;
                }
            }
        }
        last
    })
    .await
    .unwrap();
    feeder.join().unwrap();
    let _ = publisher.wait();
    let _ = sub.kill();
    let _ = sub.wait();
    Some(n as f64 / (last? - start).as_secs_f64())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
