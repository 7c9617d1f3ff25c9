//! FTP benchmark: filegate (Redis backend) next to the peers a user would pick instead, in the same
//! run, driven by the same clients (curl, lftp): vsftpd on tmpfs and unFTP on tmpfs when installed.
//! `cargo bench --bench ftp` (or `scripts/bench`). `BENCH_MIB` sets the big file's size (default 1024).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Peer {
    name: &'static str,
    addr: SocketAddr,
    user: String,
    password: String,
    /// Directory (relative to the login root) uploads go to.
    dir: String,
    _child: Option<Child>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(c) = &mut self._child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn url(p: &Peer, name: &str) -> String {
    format!(
        "ftp://{}:{}@{}:{}/{}/{}",
        p.user,
        p.password,
        p.addr.ip(),
        p.addr.port(),
        p.dir,
        name
    )
}

fn curl(args: &[&str]) {
    let out = Command::new("curl")
        .args(["-sS", "--fail"])
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn lftp(p: &Peer, script: &str) {
    let open = format!(
        "set net:max-retries 2; set ftp:passive-mode true; set cmd:fail-exit true; open -u {},{} ftp://{}:{}; cd {}; {script}; bye",
        p.user,
        p.password,
        p.addr.ip(),
        p.addr.port(),
        p.dir
    );
    let out = Command::new("lftp")
        .args(["-c", &open])
        .output()
        .expect("lftp");
    assert!(
        out.status.success(),
        "lftp {script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vsftpd(root: &Path) -> Option<Peer> {
    let bin = test_support::which("vsftpd")
        .or_else(|| Some(PathBuf::from("/usr/sbin/vsftpd")).filter(|p| p.exists()))?;
    let port = test_support::free_port();
    let pub_dir = root.join("pub");
    std::fs::create_dir_all(&pub_dir).unwrap();
    let _ = Command::new("chmod")
        .args(["755", root.to_str().unwrap()])
        .status();
    let _ = Command::new("chown")
        .args(["ftp:ftp", pub_dir.to_str().unwrap()])
        .status();
    let conf = root.parent().unwrap().join("vsftpd.conf");
    std::fs::write(
        &conf,
        format!(
            "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\n\
             anonymous_enable=YES\nanon_root={}\nno_anon_password=YES\nwrite_enable=YES\nanon_upload_enable=YES\n\
             anon_mkdir_write_enable=YES\nanon_other_write_enable=YES\nanon_umask=022\nlocal_enable=NO\n\
             pasv_enable=YES\npasv_min_port=29000\npasv_max_port=29500\nseccomp_sandbox=NO\nuse_sendfile=YES\n\
             max_clients=200\nmax_per_ip=200\nsecure_chroot_dir={}\nxferlog_enable=NO\n",
            root.display(),
            root.parent().unwrap().display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Some(Peer {
                name: "vsftpd (tmpfs)",
                addr,
                user: "anonymous".into(),
                password: "x".into(),
                dir: "pub".into(),
                _child: Some(child),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn unftp(root: &Path) -> Option<Peer> {
    let bin = test_support::which("unftp").or_else(|| {
        let p = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo/bin/unftp");
        p.exists().then_some(p)
    })?;
    let port = test_support::free_port();
    std::fs::create_dir_all(root.join("up")).unwrap();
    let child = Command::new(bin)
        .args([
            &format!("--bind-address=127.0.0.1:{port}"),
            &format!("--root-dir={}", root.display()),
            "--passive-ports=29600-29999",
            "--auth-type=anonymous",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..300 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Some(Peer {
                name: "unFTP (tmpfs)",
                addr,
                user: "anonymous".into(),
                password: "x".into(),
                dir: "up".into(),
                _child: Some(child),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

struct Row {
    name: &'static str,
    up: f64,
    down: f64,
    small: f64,
    many: f64,
}

fn measure(p: &Peer, big: &Path, big_bytes: u64, small_dir: &Path, work: &Path) -> Row {
    let t = Instant::now();
    curl(&["-T", big.to_str().unwrap(), &url(p, "big.bin")]);
    let up = big_bytes as f64 / t.elapsed().as_secs_f64() / 1048576.0;
    let out = work.join(format!("down-{}", p.addr.port()));
    let t = Instant::now();
    curl(&["-o", out.to_str().unwrap(), &url(p, "big.bin")]);
    let down = big_bytes as f64 / t.elapsed().as_secs_f64() / 1048576.0;
    assert_eq!(std::fs::metadata(&out).unwrap().len(), big_bytes);
    std::fs::remove_file(&out).ok();

    let t = Instant::now();
    lftp(
        p,
        &format!(
            "mkdir -p small; cd small; lcd {}; mput *",
            small_dir.display()
        ),
    );
    let small = std::fs::read_dir(small_dir).unwrap().count() as f64 / t.elapsed().as_secs_f64();

    // 50 clients at once, each uploading 20 × 64 KiB in its own session.
    let t = Instant::now();
    let many_dir = work.join("many");
    let clients = if std::env::args().any(|a| a == "--bench") {
        50
    } else {
        4
    };
    let children: Vec<_> = (0..clients)
        .map(|i| {
            let script = format!(
                "set net:max-retries 2; set ftp:passive-mode true; set cmd:fail-exit true; open -u {},{} ftp://{}:{}; cd {}; mkdir -p c{i}; cd c{i}; lcd {}; mput *; bye",
                p.user, p.password, p.addr.ip(), p.addr.port(), p.dir, many_dir.display()
            );
            Command::new("lftp").args(["-c", &script]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            p.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let many = (clients * 20) as f64 / t.elapsed().as_secs_f64();
    Row {
        name: p.name,
        up,
        down,
        small,
        many,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a quick smoke test.
    let full = std::env::args().any(|a| a == "--bench");
    let mib: u64 = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1024 } else { 8 });
    let big_bytes = mib << 20;
    let shm = tempfile::Builder::new()
        .prefix("fg-bench")
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
    let small_dir = work.join("small");
    std::fs::create_dir_all(&small_dir).unwrap();
    for i in 0..2000 {
        std::fs::write(
            small_dir.join(format!("s{i:04}.dat")),
            common::content(i as u8, 4096),
        )
        .unwrap();
    }
    let many_dir = work.join("many");
    std::fs::create_dir_all(&many_dir).unwrap();
    for i in 0..20 {
        std::fs::write(
            many_dir.join(format!("m{i:02}.dat")),
            common::content(i as u8, 65536),
        )
        .unwrap();
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let idle_before = rss();
    let gw = rt.block_on(common::start(common::Kind::Redis, |c| {
        c.storage.chunk_size = 512 << 10;
        c.ftp.passive_ports = 28000..=28999;
        c.limits.max_connections_per_ip = 200;
        c.ftp.idle_timeout = Duration::from_secs(60);
    }));
    let _ = idle_before;
    let idle = rss();
    let ours = Peer {
        name: "filegate (Redis)",
        addr: gw.ftp_addr(),
        user: "alice".into(),
        password: common::PASSWORD.into(),
        dir: ".".into(),
        _child: None,
    };
    // Peak RSS while filegate moves the big file and serves 50 clients.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut rows = vec![measure(&ours, &big, big_bytes, &small_dir, &work)];
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);

    let vs_root = work.join("vsftpd-root");
    std::fs::create_dir_all(&vs_root).unwrap();
    // The peers are compared in a full run only (`cargo bench`).
    let vs = if full { vsftpd(&vs_root) } else { None };
    match vs {
        Some(p) => rows.push(measure(&p, &big, big_bytes, &small_dir, &work)),
        None => eprintln!("vsftpd not installed: `apt-get install vsftpd` to compare"),
    }
    let un_root = work.join("unftp-root");
    std::fs::create_dir_all(&un_root).unwrap();
    let un = if full { unftp(&un_root) } else { None };
    match un {
        Some(p) => rows.push(measure(&p, &big, big_bytes, &small_dir, &work)),
        None => eprintln!("unftp not installed: `cargo install unftp` to compare"),
    }

    println!("# FTP benchmark: {mib} MiB single stream (curl), 2,000 × 4 KiB in one lftp session, 50 lftp clients × 20 × 64 KiB");
    println!();
    println!("| server | upload MiB/s | download MiB/s | small files/s | 50 clients files/s |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.name, r.up, r.down, r.small, r.many
        );
    }
    let f = &rows[0];
    for r in rows.iter().skip(1) {
        println!(
            "| filegate ÷ {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.name,
            f.up / r.up,
            f.down / r.down,
            f.small / r.small,
            f.many / r.many
        );
    }
    for r in rows.iter().skip(1) {
        for (metric, unit, ours, theirs) in [
            ("upload 1 stream", "MiB/s", f.up, r.up),
            ("download 1 stream", "MiB/s", f.down, r.down),
            ("small files, 1 session", "files/s", f.small, r.small),
            ("many clients", "files/s", f.many, r.many),
        ] {
            common::summary("FTP", metric, unit, ours, r.name, theirs);
        }
    }
    println!();
    println!(
        "filegate RSS: idle {:.1} MiB, peak during the run {:.1} MiB (growth {:.1} MiB)",
        idle as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        (peak - idle) as f64 / 1048576.0
    );
    rt.block_on(gw.stop());
}
