//! The built `filegate` binary on free ports with an embedded store in a temporary directory, for
//! tests of what only a process shows: signals, exit codes, logs, resource limits.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_filegate");

/// A gateway binary running on free ports with an embedded store in a temporary directory.
pub struct Binary {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    pub ftp: SocketAddr,
    pub sftp: Option<SocketAddr>,
    pub http: SocketAddr,
}

pub const SECRET: &str = "Tr1cky-s3cret-passphrase";

fn write_config(dir: &Path, extra: &str, hash: &str, key: Option<&str>) -> PathBuf {
    let path = dir.join("filegate.toml");
    let keys = key.map(|k| format!("[{k:?}]")).unwrap_or("[]".into());
    std::fs::write(
        &path,
        format!(
            r#"
[server]
data_dir = "{data}"
shutdown_grace = "30s"
{extra}

[storage.embedded]
path = "{data}/store.redb"

[ftp]
listen = "127.0.0.1:0"

[sftp]
listen = "127.0.0.1:0"
host_keys = ["{data}/ssh_host_ed25519_key"]

[mqtt]
mode = "off"

[http]
listen = "127.0.0.1:0"

[[users]]
name = "ops"
password_hash = "{hash}"
authorized_keys = {keys}
home = "/ops"
permissions = ["list", "read", "write", "delete", "mkdir", "rename"]
"#,
            data = dir.join("data").display(),
        ),
    )
    .unwrap();
    path
}

fn addr_after(line: &str, prefix: &str) -> Option<SocketAddr> {
    line.strip_prefix(prefix)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Binary {
    pub fn start(dir: &Path, extra: &str, key: Option<&str>) -> Binary {
        Binary::start_wrapped(dir, extra, key, None)
    }

    /// As `start`, run through `bash -c "<wrap>; exec filegate …"` (e.g. to set a ulimit).
    pub fn start_wrapped(dir: &Path, extra: &str, key: Option<&str>, wrap: Option<&str>) -> Binary {
        static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let hash = HASH.get_or_init(|| filegate::password::hash_password(SECRET).unwrap());
        let config = write_config(dir, extra, hash, key);
        let mut command = match wrap {
            None => {
                let mut c = Command::new(BIN);
                c.args(["serve", "--config", config.to_str().unwrap()]);
                c
            }
            Some(wrap) => {
                let mut c = Command::new("bash");
                c.arg("-c")
                    .arg(format!("{wrap}; exec \"$0\" serve --config \"$1\""));
                c.arg(BIN).arg(&config);
                c
            }
        };
        let mut child = command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut err, &mut s).ok();
            s
        });
        let (mut ftp, mut sftp, mut http) = (None, None, None);
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the gateway prints its listeners");
            ftp = ftp.or(addr_after(&line, "filegate: ftp listening on "));
            sftp = sftp.or(addr_after(&line, "filegate: sftp listening on "));
            http = http.or(addr_after(&line, "filegate: http listening on "));
            if line.starts_with("filegate: storage") {
                break;
            }
        }
        Binary {
            child,
            lines,
            stderr: Some(stderr),
            ftp: ftp.unwrap(),
            sftp,
            http: http.unwrap(),
        }
    }

    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits for the exit (bounded); returns the exit code and everything logged.
    pub fn wait(mut self, limit: Duration) -> (Option<i32>, String) {
        let Some(status) = wait_exit(&mut self.child, limit) else {
            let log = self.stderr.take().unwrap().join().unwrap();
            panic!("the gateway did not exit within {limit:?}; log:\n{log}");
        };
        let _ = &self.lines;
        (status.code(), self.stderr.take().unwrap().join().unwrap())
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.child.kill().ok();
    }
}

/// A list as a `FILEGATE__…` variable's value (`'["a","b"]'`, quoted for the shell).
pub fn list_env(values: &[String]) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
    format!("'[{}]'", items.join(","))
}

/// The settings that put a gateway on the Redis Cluster reached through `urls`.
pub fn cluster_env(urls: &[String]) -> String {
    format!(
        "FILEGATE__STORAGE__BACKEND=redis FILEGATE__STORAGE__REDIS__CLUSTER=true \
         FILEGATE__STORAGE__REDIS__URLS={}",
        list_env(urls)
    )
}

/// A gateway binary with `server.id = id` and `env` (`FILEGATE__…=…` settings) exported.
pub fn start_with_env(dir: &Path, id: &str, env: &str) -> Binary {
    Binary::start_wrapped(
        dir,
        &format!("id = \"{id}\""),
        None,
        Some(&format!("export {env}")),
    )
}

/// Reads a file from the store a stopped gateway binary used (its config in `dir`).
pub async fn read_store(dir: &Path, file: &str) -> Vec<u8> {
    let config = filegate::cli::load_config(&dir.join("filegate.toml")).unwrap();
    let store = storage_backend::Store::open(config.to_store_config())
        .await
        .unwrap();
    let data = store
        .read_to_vec(&storage_backend::StorePath::parse(file).unwrap(), u64::MAX)
        .await
        .unwrap();
    store.close().await;
    data
}

/// Uploads `file` to `path` as the binary gateway's `ops` user with curl (directories made as
/// needed); whether it was confirmed.
pub fn curl_put(ftp: SocketAddr, path: &str, file: &Path) -> bool {
    Command::new(super::program("curl"))
        .args(["-sS", "--max-time", "30", "--ftp-create-dirs", "-T"])
        .arg(file)
        .arg(format!("ftp://ops:{SECRET}@{ftp}{path}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Downloads `path` (or lists it, for a directory) as `ops` with curl.
pub fn curl_get(ftp: SocketAddr, path: &str) -> Option<Vec<u8>> {
    let out = Command::new(super::program("curl"))
        .args(["-sS", "--max-time", "30"])
        .arg(format!("ftp://ops:{SECRET}@{ftp}{path}"))
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// Waits (bounded) for `child` to exit. A child still running after `limit` is killed and `None`
/// returned, so a hung process fails its test instead of outliving it.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
