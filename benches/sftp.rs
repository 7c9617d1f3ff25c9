//! SFTP benchmark: filegate (Redis backend) next to OpenSSH's sshd with internal-sftp on tmpfs, in
//! the same run, both driven by the OpenSSH `sftp` client (and curl for single streams).
//! `cargo bench --bench sftp` (or `scripts/bench`); `BENCH_MIB` sets the big file's size.

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
    /// Where uploads go, relative to the login directory.
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

fn sftp_batch(p: &Peer, key: &Path, work: &Path, script: &str) {
    let batch = work.join(format!("batch-{}", p.addr.port()));
    std::fs::write(&batch, format!("cd {}\n{script}", p.dir)).unwrap();
    let out = Command::new("sftp")
        .arg("-b")
        .arg(&batch)
        .args(["-P", &p.addr.port().to_string()])
        .args(common::ssh_options(key))
        .arg(format!("{}@{}", p.user, p.addr.ip()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: sftp: {}{}",
        p.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sshd(root: &Path, work: &Path, public: &str) -> Option<Peer> {
    let bin = PathBuf::from("/usr/sbin/sshd");
    if !bin.exists() {
        return None;
    }
    let port = test_support::free_port();
    let host_key = work.join("sshd_host_key");
    if !host_key.exists() {
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .status()
            .ok()?;
    }
    let keys = work.join("sshd_authorized_keys");
    std::fs::write(&keys, format!("{public}\n")).unwrap();
    let conf = work.join("sshd_config");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin yes\nPidFile {}\n\
             Subsystem sftp internal-sftp\nForceCommand internal-sftp -d {}\nMaxStartups 200\nMaxSessions 200\n",
            host_key.display(),
            keys.display(),
            work.join("sshd.pid").display(),
            root.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").ok();
    let child = Command::new(bin)
        .args(["-D", "-e", "-f"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..300 {
        if std::net::TcpStream::connect(addr).is_ok() {
            let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
            return Some(Peer {
                name: "OpenSSH sshd internal-sftp (tmpfs)",
                addr,
                user,
                dir: ".".into(),
                _child: Some(child),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The big file up and down with `curl sftp://` (libssh2), in MiB/s.
fn curl_single_stream(p: &Peer, key: &Path, big: &Path, big_bytes: u64, out: &Path) -> (f64, f64) {
    let url = format!("sftp://{}:{}/~/curl-big.bin", p.addr.ip(), p.addr.port());
    let pubkey = key.with_extension("pub");
    let curl = |args: &[&std::ffi::OsStr]| {
        let out = Command::new("curl")
            .args(["-sS", "-k", "--key"])
            .arg(key)
            .arg("--pubkey")
            .arg(&pubkey)
            .args(["-u", &format!("{}:", p.user)])
            .args(args)
            .output()
            .expect("curl (apt-get install curl)");
        assert!(
            out.status.success(),
            "{}: curl: {}",
            p.name,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let t = Instant::now();
    curl(&["-T".as_ref(), big.as_os_str(), url.as_ref()]);
    let up = big_bytes as f64 / t.elapsed().as_secs_f64() / 1048576.0;
    let t = Instant::now();
    curl(&[url.as_ref(), "-o".as_ref(), out.as_os_str()]);
    let down = big_bytes as f64 / t.elapsed().as_secs_f64() / 1048576.0;
    assert_eq!(std::fs::metadata(out).unwrap().len(), big_bytes);
    std::fs::remove_file(out).ok();
    (up, down)
}

/// The files every server gets: one big, many small ones, and the per-client set.
struct Load {
    key: PathBuf,
    big: PathBuf,
    big_bytes: u64,
    small_dir: PathBuf,
    many_dir: PathBuf,
    work: PathBuf,
    clients: usize,
}

struct Row {
    name: &'static str,
    up: f64,
    down: f64,
    curl_up: f64,
    curl_down: f64,
    small: f64,
    many: f64,
}

fn measure(p: &Peer, load: &Load) -> Row {
    let Load {
        key,
        big,
        big_bytes,
        small_dir,
        many_dir,
        work,
        clients,
    } = load;
    let (key, big, big_bytes, small_dir, many_dir, work, clients) = (
        key.as_path(),
        big.as_path(),
        *big_bytes,
        small_dir.as_path(),
        many_dir.as_path(),
        work.as_path(),
        *clients,
    );
    let t = Instant::now();
    sftp_batch(p, key, work, &format!("put {} big.bin\n", big.display()));
    let up = big_bytes as f64 / t.elapsed().as_secs_f64() / 1048576.0;
    let out = work.join(format!("down-{}", p.addr.port()));
    let t = Instant::now();
    sftp_batch(p, key, work, &format!("get big.bin {}\n", out.display()));
    let down = big_bytes as f64 / t.elapsed().as_secs_f64() / 1048576.0;
    assert_eq!(std::fs::metadata(&out).unwrap().len(), big_bytes);
    std::fs::remove_file(&out).ok();
    let (curl_up, curl_down) = curl_single_stream(p, key, big, big_bytes, &out);

    let n_small = std::fs::read_dir(small_dir).unwrap().count();
    let t = Instant::now();
    sftp_batch(
        p,
        key,
        work,
        &format!(
            "-mkdir small\ncd small\nlcd {}\nput *\n",
            small_dir.display()
        ),
    );
    let small = n_small as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let children: Vec<_> = (0..clients)
        .map(|i| {
            let batch = work.join(format!("many-{}-{i}", p.addr.port()));
            std::fs::write(
                &batch,
                format!(
                    "cd {}\n-mkdir c{i}\ncd c{i}\nlcd {}\nput *\n",
                    p.dir,
                    many_dir.display()
                ),
            )
            .unwrap();
            Command::new("sftp")
                .arg("-b")
                .arg(&batch)
                .args(["-P", &p.addr.port().to_string()])
                .args(common::ssh_options(key))
                .arg(format!("{}@{}", p.user, p.addr.ip()))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
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
        curl_up,
        curl_down,
        small,
        many,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mib: u64 = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1024 } else { 8 });
    let big_bytes = mib << 20;
    let (n_small, clients) = if full { (2000, 50) } else { (40, 4) };
    let shm = tempfile::Builder::new()
        .prefix("fg-sftp-bench")
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
    for i in 0..n_small {
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
    let (key, public) = common::client_key(&work, "bench_key");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gw = rt.block_on(common::start(common::Kind::Redis, |c| {
        common::sftp_on(c);
        c.users[0].authorized_keys = vec![public.clone()];
        c.storage.chunk_size = 512 << 10;
        c.limits.max_connections_per_ip = 200;
    }));
    let idle = rss();
    let ours = Peer {
        name: "filegate (Redis)",
        addr: gw.sftp_addr(),
        user: "alice".into(),
        dir: ".".into(),
        _child: None,
    };
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
    let load = Load {
        key: key.clone(),
        big: big.clone(),
        big_bytes,
        small_dir: small_dir.clone(),
        many_dir: many_dir.clone(),
        work: work.clone(),
        clients,
    };
    let mut rows = vec![measure(&ours, &load)];
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);

    if full {
        let root = work.join("sshd-root");
        std::fs::create_dir_all(&root).unwrap();
        match sshd(&root, &work, &public) {
            Some(p) => rows.push(measure(&p, &load)),
            None => eprintln!("sshd not installed: `apt-get install openssh-server` to compare"),
        }
    }

    println!("# SFTP benchmark: {mib} MiB single stream, {n_small} × 4 KiB in one session, {clients} clients × 20 × 64 KiB (OpenSSH sftp client)");
    println!();
    println!(
        "| server | upload MiB/s | download MiB/s | curl upload MiB/s | curl download MiB/s | small files/s | {clients} clients files/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            r.name, r.up, r.down, r.curl_up, r.curl_down, r.small, r.many
        );
    }
    let f = &rows[0];
    for r in rows.iter().skip(1) {
        println!(
            "| filegate ÷ {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.name,
            f.up / r.up,
            f.down / r.down,
            f.curl_up / r.curl_up,
            f.curl_down / r.curl_down,
            f.small / r.small,
            f.many / r.many
        );
    }
    for r in rows.iter().skip(1) {
        for (metric, unit, ours, theirs) in [
            ("upload 1 stream", "MiB/s", f.up, r.up),
            ("download 1 stream", "MiB/s", f.down, r.down),
            ("curl upload 1 stream", "MiB/s", f.curl_up, r.curl_up),
            ("curl download 1 stream", "MiB/s", f.curl_down, r.curl_down),
            ("small files, 1 session", "files/s", f.small, r.small),
            ("many clients", "files/s", f.many, r.many),
        ] {
            common::summary("SFTP", metric, unit, ours, r.name, theirs);
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
