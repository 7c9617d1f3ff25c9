//! Server-Sent Events benchmark (issue 16): `BENCH_SSE_CLIENTS` (default 1000) concurrent SSE
//! clients on one gateway process (the release binary, embedded store): the gateway's extra RSS
//! with every stream open, and the delay from an HTTP `PUT` being sent to each client reading the
//! file's event (p50/p99 over every client and event). Targets: < 64 MiB, p99 < 50 ms.
//!
//! `cargo bench --bench sse`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn auth() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("ops:{}", common::binary::SECRET))
}

/// Opens one SSE stream; returns the reader once the response headers are in (subscribed).
async fn open_stream(addr: std::net::SocketAddr) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "GET /api/v1/events HTTP/1.1\r\nHost: b\r\nAuthorization: Basic {}\r\n\
             Accept: text/event-stream\r\n\r\n",
            auth()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "stream refused: {line}");
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        if line == "\r\n" {
            break;
        }
    }
    r
}

/// Reads events until `count` of the benchmark's files were seen; the arrival time of each.
async fn collect(mut r: BufReader<TcpStream>, count: usize) -> Vec<(usize, Instant)> {
    let mut got = Vec::with_capacity(count);
    let mut line = String::new();
    while got.len() < count {
        line.clear();
        if r.read_line(&mut line).await.unwrap() == 0 {
            panic!("stream closed after {} events", got.len());
        }
        // Chunked framing lines and SSE fields come through as lines; only `data:` matters.
        if let Some(i) = line.find("\"subject\":\"/ops/bench/e") {
            let rest = &line[i + "\"subject\":\"/ops/bench/e".len()..];
            let n: usize = rest[..rest.find('"').unwrap()].parse().unwrap();
            got.push((n, Instant::now()));
        }
    }
    got
}

async fn put(addr: std::net::SocketAddr, path: &str) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "PUT /api/v1/files/{path} HTTP/1.1\r\nHost: b\r\nAuthorization: Basic {}\r\n\
             Content-Length: 5\r\nConnection: close\r\n\r\nhello",
            auth()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.1 201") || reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n: usize = std::env::var("BENCH_SSE_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let events: usize = 100;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let gw = common::binary::Binary::start_wrapped(
            dir.path(),
            "",
            None,
            Some("ulimit -n 65536; export FILEGATE__EVENTS__MAX_STREAMS=10000"),
        );
        common::until_ready(gw.http, 200).await;
        let pid = gw.child.id();
        let addr = gw.http;
        put(addr, "bench/warm").await;
        // One stream first: the first login sizes argon2's memory, the first stream the hub's ring.
        let warm = open_stream(addr).await;
        let before = rss_kib(pid);
        let opened = Instant::now();
        let mut readers = Vec::with_capacity(n);
        // Logins in small batches: limits.max_connections_per_ip counts logins in progress.
        for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
            let mut batch = tokio::task::JoinSet::new();
            for _ in chunk {
                batch.spawn(open_stream(addr));
            }
            while let Some(r) = batch.join_next().await {
                readers.push(r.unwrap());
            }
        }
        let open_time = opened.elapsed();
        let after = rss_kib(pid);
        let mut clients = tokio::task::JoinSet::new();
        for r in readers {
            clients.spawn(collect(r, events));
        }
        let mut sent = Vec::with_capacity(events);
        for i in 0..events {
            sent.push(Instant::now());
            put(addr, &format!("bench/e{i}")).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let peak = rss_kib(pid);
        let mut lat = Vec::with_capacity(n * events);
        while let Some(got) = clients.join_next().await {
            for (i, at) in got.unwrap() {
                lat.push(at.saturating_duration_since(sent[i]));
            }
        }
        drop(warm);
        lat.sort();
        let extra = (after.saturating_sub(before)) as f64 / 1024.0;
        let extra_peak = (peak.saturating_sub(before)) as f64 / 1024.0;
        println!("# SSE benchmark (release gateway binary, embedded store, clients in this process over loopback)");
        println!();
        println!(
            "{n} SSE clients opened in {:.1} s. Gateway RSS {:.1} MiB → {:.1} MiB with every stream open (+{extra:.1} MiB), {:.1} MiB after {events} events (+{extra_peak:.1} MiB); target < 64 MiB.",
            open_time.as_secs_f64(),
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            peak as f64 / 1024.0,
        );
        println!(
            "Event delivery (PUT sent → event read by each client), {} samples: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; target p99 < 50 ms.",
            lat.len(),
            percentile(&lat, 0.5).as_secs_f64() * 1000.0,
            percentile(&lat, 0.99).as_secs_f64() * 1000.0,
            lat.last().unwrap().as_secs_f64() * 1000.0,
        );
        common::summary("SSE", &format!("RSS growth, {n} streams"), "MiB", extra_peak, "target", 64.0);
        common::summary("SSE", &format!("event p99, {n} streams"), "ms", percentile(&lat, 0.99).as_secs_f64() * 1000.0, "target", 50.0);
        drop(gw);
    });
}
