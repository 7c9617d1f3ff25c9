//! The command-line client (`filegate wait|events|put|get|ls|rm`) against a real gateway process,
//! run the way a job step runs it: from a shell script, reading its exit code.
//! - `wait` returns as soon as an FTP upload completes — not for a temporary `.part` name, not for
//!   an upload cut off — and at once for a file already there; it times out with exit 3, or 4 when
//!   a matching upload was cut off;
//! - a wrong password is exit 5, an unreachable gateway exit 6, a missing file exit 7;
//! - `events` prints the events as JSON lines; `put`/`get`/`ls`/`rm` round-trip a file.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::binary::{curl_put, Binary, BIN, SECRET};

fn cli(gw: &Binary, password: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("FILEGATE_URL", format!("http://{}", gw.http))
        .env("FILEGATE_USER", "ops")
        .env("FILEGATE_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An FTP upload that dies half-way: the client sends part of the file and drops both connections.
fn cut_off_upload(ftp: SocketAddr, path: &str) {
    let control = TcpStream::connect(ftp).unwrap();
    let mut reader = BufReader::new(control.try_clone().unwrap());
    let mut w = control.try_clone().unwrap();
    let mut reply = |expect: &str| -> String {
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.len() >= 4 && line.as_bytes()[3] == b' ' {
                assert!(line.starts_with(expect), "wanted {expect}, got {line}");
                return line;
            }
        }
    };
    reply("220");
    write!(w, "USER ops\r\n").unwrap();
    reply("331");
    write!(w, "PASS {SECRET}\r\n").unwrap();
    reply("230");
    write!(w, "TYPE I\r\n").unwrap();
    reply("200");
    write!(w, "PASV\r\n").unwrap();
    let pasv = reply("227");
    let nums: Vec<u16> = pasv[pasv.find('(').unwrap() + 1..pasv.find(')').unwrap()]
        .split(',')
        .map(|n| n.trim().parse().unwrap())
        .collect();
    let mut data = TcpStream::connect((ftp.ip(), nums[4] * 256 + nums[5])).unwrap();
    write!(w, "STOR {path}\r\n").unwrap();
    reply("150");
    data.write_all(&vec![b'x'; 100_000]).unwrap();
    data.flush().unwrap();
    // The client dies: both connections close at once, without ABOR or a goodbye.
    drop(data);
    drop(w);
    drop(reader);
    drop(control);
}

fn put_ftp(gw: &Binary, dir: &Path, path: &str, body: &[u8]) {
    let file = dir.join("upload");
    std::fs::write(&file, body).unwrap();
    assert!(curl_put(gw.ftp, path, &file), "upload of {path}");
}

#[test]
fn wait_in_a_job_script_returns_for_complete_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Binary::start(dir.path(), "", None);
    put_ftp(&gw, dir.path(), "/in/readme.txt", b"not a csv");

    // Nothing matches yet: exit 3 after the timeout.
    let out = cli(&gw, SECRET, &["wait", "in/*.csv", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no complete file matching"));

    // A job step waiting in a shell script, the way a scheduler runs it.
    let script = dir.path().join("job.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n\"$FILEGATE\" wait 'in/*.csv' --timeout 60s > \"$OUT\"\necho $? > \"$OUT.code\"\n",
    )
    .unwrap();
    let out_file = dir.path().join("job.out");
    let mut job = Command::new("sh")
        .arg(&script)
        .env("FILEGATE", BIN)
        .env("OUT", &out_file)
        .env("FILEGATE_URL", format!("http://{}", gw.http))
        .env("FILEGATE_USER", "ops")
        .env("FILEGATE_PASSWORD", SECRET)
        .spawn()
        .unwrap();
    // Neither a temporary name nor an upload cut off satisfies it...
    put_ftp(&gw, dir.path(), "/in/orders.csv.part", b"still uploading");
    cut_off_upload(gw.ftp, "/in/half.csv");
    // ...a complete upload does.
    let body = b"id;qty\n1;5\n";
    put_ftp(&gw, dir.path(), "/in/orders.csv", body);
    let status = job.wait().unwrap();
    assert!(status.success());
    let code = std::fs::read_to_string(dir.path().join("job.out.code")).unwrap();
    let line = std::fs::read_to_string(&out_file).unwrap();
    assert_eq!(code.trim(), "0", "{line}");
    let sha = crate::common::sha256_hex(body);
    assert_eq!(line.trim(), format!("/in/orders.csv {} {sha}", body.len()));

    // Already there: at once.
    let out = cli(&gw, SECRET, &["wait", "/in/orders.*", "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("/in/orders.csv "));
    // Only an upload that was cut off matches: exit 4, naming it.
    let out = cli(&gw, SECRET, &["wait", "in/half*", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/in/half.csv"));

    // Wrong password: 5. No gateway: 6.
    let out = cli(&gw, "wrong", &["wait", "in/*.csv", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let out = Command::new(BIN)
        .args([
            "wait",
            "in/*.csv",
            "--url",
            "http://127.0.0.1:1",
            "--user",
            "ops",
        ])
        .env("FILEGATE_PASSWORD", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
}

/// The temporary names `wait` skips are the gateway's own (`events.temp_patterns`, marked in the
/// listing), not the client's defaults: a site that uploads under `*.uploading` is served too.
#[test]
fn wait_skips_the_gateways_own_temporary_names() {
    let dir = tempfile::tempdir().unwrap();
    let events = "\n[events]\ntemp_patterns = [\"*.uploading\"]\n";
    let gw = Binary::start(dir.path(), events, None);
    put_ftp(&gw, dir.path(), "/in/orders.uploading", b"still uploading");
    let listing = Command::new(crate::common::program("curl"))
        .args(["-sf", "-u", &format!("ops:{SECRET}")])
        .arg(format!("http://{}/api/v1/files/in/", gw.http))
        .output()
        .unwrap();
    let listing: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let entry = &listing["entries"][0];
    assert_eq!(
        (entry["name"].as_str(), entry["temporary"].as_bool()),
        (Some("orders.uploading"), Some(true)),
        "{listing}"
    );
    let out = cli(&gw, SECRET, &["wait", "in/orders*", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    put_ftp(&gw, dir.path(), "/in/orders.csv", b"id;qty\n");
    let out = cli(&gw, SECRET, &["wait", "in/orders*", "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("/in/orders.csv "));
}

#[test]
fn events_and_file_commands() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Binary::start(dir.path(), "", None);
    put_ftp(&gw, dir.path(), "/in/a.csv", b"a");
    put_ftp(&gw, dir.path(), "/out/b.csv", b"b");

    let out = cli(&gw, SECRET, &["events", "--after", "0", "--path", "in/**"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["type"], "io.filegate.file.created");
    assert_eq!(lines[0]["data"]["path"], "/ops/in/a.csv");
    let all = cli(&gw, SECRET, &["events"]);
    let seqs: Vec<u64> = String::from_utf8_lossy(&all.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(
        seqs.len() >= 4 && seqs.windows(2).all(|w| w[0] < w[1]),
        "{seqs:?}"
    );
    // Resuming after the last one prints nothing new.
    let last = seqs.last().unwrap().to_string();
    let out = cli(&gw, SECRET, &["events", "--after", &last]);
    assert_eq!(out.stdout, b"", "{}", text(&out));

    // put / ls / get / rm.
    let local = dir.path().join("report 1.bin");
    let content = crate::common::content(7, 300_000);
    std::fs::write(&local, &content).unwrap();
    let out = cli(&gw, SECRET, &["put", local.to_str().unwrap(), "docs/"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = cli(&gw, SECRET, &["ls", "docs"]);
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing.contains("300000") && listing.contains("report 1.bin"),
        "{listing}"
    );
    let back = dir.path().join("back.bin");
    let out = cli(
        &gw,
        SECRET,
        &["get", "docs/report 1.bin", back.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read(&back).unwrap(), content);
    let out = cli(&gw, SECRET, &["rm", "docs/report 1.bin"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = cli(&gw, SECRET, &["get", "docs/report 1.bin", "-"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let out = cli(&gw, SECRET, &["put", "/nonexistent/file", "x"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn events_from_the_start_skip_what_the_login_may_not_see() {
    let dir = tempfile::tempdir().unwrap();
    let hash = filegate::password::hash_password("other-secret").unwrap();
    let other = format!(
        "\n[[users]]\nname = \"other\"\npassword_hash = \"{hash}\"\nhome = \"/other\"\n\
         permissions = [\"list\", \"read\", \"write\", \"mkdir\"]\n"
    );
    let gw = Binary::start(dir.path(), &other, None);
    // The oldest events are another user's: ops may not see them.
    let file = dir.path().join("o.txt");
    std::fs::write(&file, b"theirs").unwrap();
    let theirs = Command::new(crate::common::program("curl"))
        .args(["-sS", "--ftp-create-dirs", "-T"])
        .arg(&file)
        .arg(format!("ftp://other:other-secret@{}/x/o.txt", gw.ftp))
        .status()
        .unwrap();
    assert!(theirs.success());
    put_ftp(&gw, dir.path(), "/in/mine.csv", b"mine");
    let out = cli(&gw, SECRET, &["events"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let paths: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["path"].to_string())
        .collect();
    assert!(
        paths.iter().any(|p| p.contains("/ops/in/mine.csv")),
        "{paths:?}"
    );
    assert!(paths.iter().all(|p| !p.contains("/other/")), "{paths:?}");
}
