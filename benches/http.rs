//! HTTP benchmark (issue 16's "Measure"): a big file uploaded and downloaded over the REST API with
//! curl on loopback, next to nginx on tmpfs (WebDAV `PUT`, static `GET`) and next to filegate's own
//! FTP upload, all in the same run; then a 100,000-entry directory listed over the API (first page
//! latency, whole walk). `cargo bench --bench http` (or `scripts/bench`); `BENCH_MIB` sets the big
//! file's size (default 1024), `BENCH_ENTRIES` the directory's (default 100000).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use storage_backend::{ChangeContext, StorePath};

/// curl's timing of one transfer, in seconds.
fn curl_time(args: &[&str]) -> f64 {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "-o", "/dev/null", "-w", "%{time_total}"])
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx serving `root` (tmpfs) on `port`, accepting WebDAV PUT; None when nginx is not installed.
fn nginx(work: &Path, port: u16) -> Option<Nginx> {
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let prefix = work.join("nginx");
    for d in ["root", "tmp", "logs"] {
        std::fs::create_dir_all(prefix.join(d)).unwrap();
    }
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\nmaster_process off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  client_max_body_size 0;\n  client_body_temp_path {p}/tmp;\n\
               server {{\n    listen 127.0.0.1:{port};\n    root {p}/root;\n    dav_methods PUT;\n    create_full_put_path on;\n  }}\n}}\n",
            p = prefix.display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .args([
            "-c",
            conf.to_str().unwrap(),
            "-p",
            prefix.to_str().unwrap(),
            "-g",
            "daemon off; user root;",
        ])
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Nginx(child))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a quick smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let mib = env("BENCH_MIB", if full { 1024 } else { 8 });
    let entries = env("BENCH_ENTRIES", if full { 100_000 } else { 2_000 });
    let shm = tempfile::Builder::new()
        .prefix("fg-bench-http")
        .tempdir_in("/dev/shm")
        .expect("tmpfs at /dev/shm");
    let work = shm.path().to_path_buf();
    let big = work.join("big.bin");
    {
        let piece: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
        let mut f = std::fs::File::create(&big).unwrap();
        for _ in 0..mib {
            std::io::Write::write_all(&mut f, &piece).unwrap();
        }
    }
    let big_s = big.to_str().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let user = format!("alice:{}", common::PASSWORD);
    let mut rows: Vec<(&str, f64, f64, f64)> = Vec::new(); // name, up, down, ftp up (MiB/s)
    for (name, kind) in [
        ("filegate (Redis)", common::Kind::Redis),
        ("filegate (embedded)", common::Kind::Embedded),
    ] {
        let gw = rt.block_on(common::start(kind, |c| {
            c.storage.chunk_size = 512 << 10;
            c.ftp.passive_ports = 28000..=28999;
        }));
        let api = format!("http://{}/api/v1/files/big.bin", gw.gw().http_addr);
        let up = curl_time(&["-u", &user, "-T", big_s, &api]);
        let down = curl_time(&["-u", &user, &api]);
        let ftp = format!(
            "ftp://alice:{}@{}/big-ftp.bin",
            common::PASSWORD,
            gw.ftp_addr()
        );
        let ftp_up = curl_time(&["-T", big_s, &ftp]);
        let m = mib as f64;
        rows.push((name, m / up, m / down, m / ftp_up));
        rt.block_on(gw.stop());
    }
    let port = free_port();
    let nginx_row = if full { nginx(&work, port) } else { None };
    let mut ng = None;
    match &nginx_row {
        Some(_) => {
            let u = format!("http://127.0.0.1:{port}/big.bin");
            let up = curl_time(&["-T", big_s, &u]);
            let down = curl_time(&[&u]);
            ng = Some((mib as f64 / up, mib as f64 / down));
        }
        None if full => eprintln!("nginx not installed: `apt-get install nginx-light` to compare"),
        None => {}
    }
    drop(nginx_row);

    println!("# HTTP benchmark: {mib} MiB single stream (curl, loopback, file on tmpfs)");
    println!();
    println!(
        "| server | HTTP upload MiB/s | HTTP download MiB/s | FTP upload MiB/s (same gateway) |"
    );
    println!("|---|---|---|---|");
    for (name, up, down, ftp) in &rows {
        println!("| {name} | {up:.0} | {down:.0} | {ftp:.0} |");
    }
    if let Some((up, down)) = ng {
        println!("| nginx 1.22 (tmpfs, WebDAV PUT) | {up:.0} | {down:.0} | – |");
        let (_, fup, fdown, _) = rows[0];
        println!(
            "| filegate (Redis) ÷ nginx | {:.2} | {:.2} | |",
            fup / up,
            fdown / down
        );
        common::summary("HTTP", "upload 1 stream", "MiB/s", fup, "nginx", up);
        common::summary("HTTP", "download 1 stream", "MiB/s", fdown, "nginx", down);
    }
    for (name, up, _, ftp) in &rows {
        common::summary(
            "HTTP",
            &format!("upload vs own FTP, {name}"),
            "MiB/s",
            *up,
            "filegate FTP",
            *ftp,
        );
    }
    println!();

    // The big directory, on the production backend.
    let gw = rt.block_on(common::start(common::Kind::Redis, |_| {}));
    let store = gw.store().clone();
    let t = Instant::now();
    rt.block_on(async {
        let ctx = ChangeContext::new("alice", "bench", "127.0.0.1:1");
        for dir in ["/home", "/home/alice", "/home/alice/big"] {
            // The home may exist already (made at the first login).
            let _ = store.mkdir(&StorePath::parse(dir).unwrap(), &ctx).await;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..16u64 {
            let (store, ctx) = (store.clone(), ctx.clone());
            tasks.spawn(async move {
                for i in (w..entries).step_by(16) {
                    let p = StorePath::parse(&format!("/home/alice/big/f{i:07}.dat")).unwrap();
                    store.write_file(&p, b"x", &ctx).await.unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
    eprintln!("made {entries} files in {:.1} s", t.elapsed().as_secs_f64());
    let base = format!("http://{}/api/v1/files/big", gw.gw().http_addr);
    let first: Vec<f64> = (0..7)
        .map(|_| curl_time(&["-u", &user, &format!("{base}?limit=1000")]) * 1000.0)
        .collect();
    let first = median(first);
    let t = Instant::now();
    let mut cursor: Option<String> = None;
    let mut seen = 0u64;
    loop {
        let mut u = format!("{base}?limit=1000");
        if let Some(c) = &cursor {
            u.push_str(&format!("&cursor={c}"));
        }
        let out = Command::new("curl")
            .args(["-sS", "--fail", "-u", &user, &u])
            .output()
            .unwrap();
        assert!(out.status.success());
        let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        seen += page["entries"].as_array().unwrap().len() as u64;
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    let walk = t.elapsed().as_secs_f64();
    assert_eq!(seen, entries);
    println!(
        "# Listing a {entries}-entry directory over HTTP (Redis backend, pages of 1,000, curl)"
    );
    println!();
    println!("| figure | value | target |");
    println!("|---|---|---|");
    println!("| first page (median of 7) | {first:.1} ms | < 50 ms |");
    println!(
        "| whole walk ({} pages) | {walk:.2} s | |",
        entries.div_ceil(1000)
    );
    rt.block_on(gw.stop());
}
