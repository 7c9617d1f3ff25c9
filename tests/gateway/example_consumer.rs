//! `examples/index_consumer.py`, the example consumer, against a real gateway: 100 text files
//! uploaded over FTP (curl) and SFTP (OpenSSH's sftp) are each indexed exactly once, although the
//! consumer is killed (SIGKILL) half-way and started again.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::binary::{curl_put, Binary, BIN, SECRET};
use crate::common::{client_key, program, sha256_hex, ssh_options, until_blocking};

const HOOK_SECRET: &str = "indexer-secret-0123456789";

/// The consumer's process, killed when dropped (a failing test must not leave it running).
struct Consumer(Child);

impl Drop for Consumer {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn consumer(port: u16, gw: &Binary, dir: &Path) -> Consumer {
    let mut child = Command::new(program("python3"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/index_consumer.py"
        ))
        .env("FILEGATE_URL", format!("http://{}", gw.http))
        .env("FILEGATE_USER", "ops")
        .env("FILEGATE_PASSWORD", SECRET)
        .env("INDEXER_SECRET", HOOK_SECRET)
        .env("INDEXER_PORT", port.to_string())
        .env("INDEXER_STATE", dir.join("indexer.state"))
        .env("INDEXER_JOURNAL", dir.join("journal"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("indexer listening"), "{line}");
    Consumer(child)
}

fn cli(gw: &Binary, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("FILEGATE_URL", format!("http://{}", gw.http))
        .env("FILEGATE_USER", "ops")
        .env("FILEGATE_PASSWORD", SECRET)
        .output()
        .unwrap()
}

fn journal(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("journal"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn results(gw: &Binary) -> usize {
    let out = cli(gw, &["ls", "out"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.ends_with(".index.json"))
        .count()
}

fn text(i: usize) -> String {
    format!("order {i}\nwidget widget widget gadget\nline three of file {i}\n")
}

#[test]
fn the_example_consumer_indexes_each_file_exactly_once_across_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = client_key(dir.path(), "client");
    let port = test_support::free_port();
    let hook = format!(
        r#"
[[webhooks]]
name = "indexer"
url = "http://127.0.0.1:{port}/"
secret = "{HOOK_SECRET}"
events = ["file.created", "file.modified"]
paths = ["/ops/in/**/*.txt"]
max_retry_interval = "1s"
"#
    );
    let gw = Binary::start(dir.path(), &hook, Some(&public));
    let indexer = consumer(port, &gw, dir.path());

    // 50 files over FTP.
    let local = dir.path().join("upload.txt");
    for i in 0..50 {
        std::fs::write(&local, text(i)).unwrap();
        assert!(curl_put(gw.ftp, &format!("/in/ftp/f{i:02}.txt"), &local));
    }
    // The consumer dies half-way through, without a word.
    until_blocking(
        "the consumer does not progress",
        Duration::from_secs(60),
        || {
            let done = journal(dir.path()).len();
            if done >= 20 {
                Ok(())
            } else {
                Err(done)
            }
        },
    );
    drop(indexer);

    // 50 more over SFTP while it is down, then it comes back.
    let batch = dir.path().join("batch");
    let mut commands = String::from("-mkdir in/sftp\n");
    for i in 50..100 {
        let file = dir.path().join(format!("s{i}.txt"));
        std::fs::write(&file, text(i)).unwrap();
        commands.push_str(&format!("put {} in/sftp/s{i}.txt\n", file.display()));
    }
    std::fs::write(&batch, commands).unwrap();
    let sftp = gw.sftp.expect("sftp is on");
    let out = Command::new(program("sftp"))
        .args(ssh_options(&key))
        .args(["-P", &sftp.port().to_string(), "-b"])
        .arg(&batch)
        .arg("ops@127.0.0.1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _indexer = consumer(port, &gw, dir.path());

    until_blocking("100 files indexed", Duration::from_secs(120), || {
        let indexed = results(&gw);
        if indexed >= 100 {
            Ok(())
        } else {
            Err(format!("only {indexed} of 100 files indexed"))
        }
    });
    // Exactly once: no file processed twice, every result right.
    let processed = journal(dir.path());
    let distinct: BTreeSet<&String> = processed.iter().collect();
    assert_eq!(
        distinct.len(),
        processed.len(),
        "processed twice: {processed:#?}"
    );
    for i in [0usize, 49, 50, 99] {
        let name = if i < 50 {
            format!("f{i:02}.txt")
        } else {
            format!("s{i}.txt")
        };
        let out = cli(&gw, &["get", &format!("out/{name}.index.json"), "-"]);
        assert!(out.status.success());
        let index: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(index["sha256"], sha256_hex(text(i).as_bytes()));
        assert_eq!(index["lines"], 3);
        assert_eq!(index["words"], 11);
        assert_eq!(index["top"][0], serde_json::json!(["widget", 3]));
    }
}
