//! Webhook benchmark, against a receiver in this process (axum, answering 204 at once), with a
//! plain keep-alive HTTP client POSTing the same bodies to it as the baseline:
//! - latency from commit to the receiver at 1 event/s and at 500 events/s;
//! - the drain rate of the backlog left by a receiver outage (connection refused meanwhile).
//!
//! `cargo bench --bench webhooks`; `BENCH_OUTAGE` sets the outage in seconds (default 300, as the
//! issue asks: the gateway's back-off is at its 1-minute ceiling by then), `BENCH_RATE_EVENTS` how
//! many events the 500/s phase writes (default 5,000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use storage_backend::{ChangeContext, StorePath};
use tokio::sync::mpsc;

/// Arrivals at the receiver: the event's path (or the raw request's number) and when it came.
type Arrivals = mpsc::Receiver<(String, Instant)>;

async fn receiver(listener: tokio::net::TcpListener) -> Arrivals {
    let (tx, rx) = mpsc::channel(1 << 16);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let at = Instant::now();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let key = v["data"]["path"].as_str().unwrap_or("raw").to_string();
                let _ = tx.send((key, at)).await;
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    rx
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Writes `n` files at `rate` per second; returns when each write returned, by path.
async fn write_paced(
    store: &storage_backend::Store,
    prefix: &str,
    n: usize,
    rate: f64,
) -> Arc<Mutex<HashMap<String, Instant>>> {
    let ctx = ChangeContext::new("bench", "ftp", "127.0.0.1:1");
    let committed = Arc::new(Mutex::new(HashMap::new()));
    store
        .mkdir(&StorePath::parse(prefix).unwrap(), &ctx)
        .await
        .unwrap();
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let path = format!("{prefix}/e{i}");
        store
            .write_file(&StorePath::parse(&path).unwrap(), b"x", &ctx)
            .await
            .unwrap();
        committed.lock().unwrap().insert(path, Instant::now());
    }
    committed
}

async fn latencies(
    rx: &mut Arrivals,
    committed: &Mutex<HashMap<String, Instant>>,
    n: usize,
) -> Vec<Duration> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let (path, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("the receiver hears every event")
            .unwrap();
        // Arrival can beat the writer's own clock read after the commit: count that as 0.
        let t0 = committed.lock().unwrap().get(&path).copied().unwrap_or(at);
        got.push(at.saturating_duration_since(t0));
    }
    got.sort();
    got
}

/// The baseline: `n` POSTs of `body`, one after another on one keep-alive connection.
async fn raw_posts(port: u16, rx: &mut Arrivals, body: &[u8], n: usize) -> (f64, Vec<Duration>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut lat = Vec::new();
    let start = Instant::now();
    for _ in 0..n {
        sender.ready().await.unwrap();
        let req = hyper::Request::post("/hook")
            .header("host", "127.0.0.1")
            .header("content-type", "application/cloudevents+json")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        let t0 = Instant::now();
        let resp = sender.send_request(req).await.unwrap();
        let _ = resp.into_body().collect().await;
        let (_, at) = rx.recv().await.unwrap();
        lat.push(at - t0);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    (rate, lat)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let outage: u64 = std::env::var("BENCH_OUTAGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 300 } else { 2 });
    let rate_events: usize = std::env::var("BENCH_RATE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 5_000 } else { 200 });
    let slow_samples = if full { 60 } else { 3 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let port = test_support::free_port();
        let g = common::start(common::Kind::Redis, |c| {
            c.webhooks = vec![filegate::config::WebhookConfig {
                name: "bench".into(),
                url: format!("http://127.0.0.1:{port}/hook"),
                secret: "bench-secret-0123456789".into(),
                events: vec!["file.created".into()],
                ..Default::default()
            }];
        })
        .await;
        let store = g.store().clone();

        // Outage first: nothing listens on the port while the backlog builds up.
        let outage_rate = 100.0;
        let backlog = (outage as f64 * outage_rate) as usize;
        eprintln!("receiver down for {outage}s while {backlog} events are written");
        write_paced(&store, "/down", backlog, outage_rate).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let up = Instant::now();
        let mut rx = receiver(listener).await;
        let (_, first) = rx.recv().await.unwrap();
        let mut last = first;
        for _ in 1..backlog {
            let (_, at) = tokio::time::timeout(Duration::from_secs(120), rx.recv())
                .await
                .expect("the backlog drains")
                .unwrap();
            last = at;
        }
        let resumed_after = first - up;
        let drain_rate = (backlog - 1) as f64 / (last - first).as_secs_f64().max(1e-9);

        // 1 event/s.
        let committed = write_paced(&store, "/slow", slow_samples, 1.0).await;
        let slow = latencies(&mut rx, &committed, slow_samples).await;
        // 500 events/s.
        let writer = {
            let store = store.clone();
            tokio::spawn(async move { write_paced(&store, "/fast", rate_events, 500.0).await })
        };
        // Arrivals are matched to commit times once the writer is done (the map fills as it goes).
        let mut arrivals = Vec::with_capacity(rate_events);
        for _ in 0..rate_events {
            let a = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("every event arrives")
                .unwrap();
            arrivals.push(a);
        }
        let committed = writer.await.unwrap();
        let mut fast: Vec<Duration> = {
            let c = committed.lock().unwrap();
            arrivals
                .iter()
                .map(|(p, at)| at.saturating_duration_since(c[p]))
                .collect()
        };
        fast.sort();

        // The baseline: the same body POSTed by a plain client.
        let body = serde_json::to_vec(&serde_json::json!({
            "specversion": "1.0", "id": "0f6c9a8e-0000-4000-8000-000000000000",
            "source": "filegate://bench", "type": "io.filegate.file.created",
            "data": {"path": "raw", "size": 1, "sha256": "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881", "seq": 1}
        }))
        .unwrap();
        let (raw_rate, raw) = raw_posts(port, &mut rx, &body, rate_events).await;

        println!("# Webhook benchmark (Redis backend; receiver: axum in this process, 204 at once)");
        println!();
        println!("| latency commit → receiver | p50 | p99 |");
        println!("|---|---|---|");
        println!("| baseline: plain client POST → receiver | {:.2} ms | {:.2} ms |", ms(percentile(&raw, 0.5)), ms(percentile(&raw, 0.99)));
        println!("| filegate at 1 event/s ({slow_samples} events) | {:.2} ms | {:.2} ms |", ms(percentile(&slow, 0.5)), ms(percentile(&slow, 0.99)));
        println!("| filegate at 500 events/s ({rate_events} events) | {:.2} ms | {:.2} ms |", ms(percentile(&fast, 0.5)), ms(percentile(&fast, 0.99)));
        println!();
        println!("| after a {outage} s outage ({backlog} events behind) | |");
        println!("|---|---|");
        println!("| first delivery after the receiver came back | {:.1} s |", resumed_after.as_secs_f64());
        println!("| drain rate | {drain_rate:.0} events/s |");
        println!("| baseline: plain client sequential POSTs | {raw_rate:.0} requests/s |");
        common::summary("Webhooks", "commit → receiver p50 at 500/s", "ms", ms(percentile(&fast, 0.5)), "plain POST → receiver p50", ms(percentile(&raw, 0.5)));
        common::summary("Webhooks", "commit → receiver p99 at 500/s", "ms", ms(percentile(&fast, 0.99)), "plain POST → receiver p99", ms(percentile(&raw, 0.99)));
        common::summary("Webhooks", "backlog drain after outage", "events/s", drain_rate, "plain client sequential POSTs", raw_rate);
        g.stop().await;
    });
}
