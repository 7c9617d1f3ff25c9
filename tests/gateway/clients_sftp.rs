//! The SFTP/SCP client matrix: the clients people run, against the real gateway, on both backends.
//! Each uploads, lists, renames, downloads and compares bytes; then the events are checked as a
//! subscriber would see them (after the `[events]` temp-name rules): every completed file was
//! announced exactly once, complete, with its content's SHA-256, and no temporary name was.
//!
//! Clients: sshfs (with git, tar, rsync, sqlite3 and editor-style saves on the mount), paramiko,
//! OpenSSH sftp and scp (SFTP and legacy), curl's sftp://, Node's ssh2-sftp-client and rclone's
//! SFTP backend; and lftp's temporary names over FTP. `scripts/test` installs them all; a missing one fails its test.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{
    client_key, content, program, sftp_on, sftp_session, sha256_hex, ssh_login, start, until,
    until_true, Kind, TestGateway, PASSWORD,
};
use filegate::events::{announce, TempNames};
use russh_sftp::protocol::{OpenFlags, StatusCode};
use storage_backend::StorePath;
use tokio::io::AsyncWriteExt;

on_both_backends!(
    sshfs_workloads,
    paramiko,
    openssh_sftp_and_scp,
    curl_sftp,
    node_ssh2_sftp_client,
    rclone_sftp_sync,
    names_in_every_protocol,
    open_upload_is_visible_to_stat,
    a_late_close_is_like_sshfs_sends_it,
    lftp_temp_file_names,
);

/// A gateway with SFTP on and a key login for alice.
async fn gateway(kind: Kind) -> (TestGateway, PathBuf, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = client_key(keys.path(), "alice_key");
    let t = start(kind, |c| {
        sftp_on(c);
        c.users[0].authorized_keys = vec![public];
    })
    .await;
    (t, key, keys)
}

/// Runs `program` with `args` (in `dir` when given); it must succeed. Its standard output.
fn run(program_name: &str, args: &[&str], dir: Option<&Path>) -> String {
    let mut cmd = Command::new(program(program_name));
    cmd.args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{program_name}: {e}"));
    assert!(
        out.status.success(),
        "{program_name} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tree of small files of varied sizes under `root`: (relative path, content).
fn make_tree(root: &Path, files: usize) -> BTreeMap<String, Vec<u8>> {
    let mut tree = BTreeMap::new();
    for i in 0..files {
        let rel = format!("d{}/s{}/file{i}.txt", i % 5, i % 3);
        let data = content((i % 250) as u8, 100 + (i * 37) % 5000);
        let p = root.join(&rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, &data).unwrap();
        tree.insert(rel, data);
    }
    tree
}

/// What subscribers are told: the announcements of every event so far, under the default
/// temp-name rules. (path, kind, sha256, complete).
async fn announced(t: &TestGateway) -> Vec<(String, &'static str, Option<String>, Option<bool>)> {
    let temp = TempNames::new(&filegate::Config::default().events.temp_patterns);
    t.events()
        .await
        .iter()
        .filter_map(|e| {
            let a = announce(e, &temp)?;
            Some((a.path, a.kind, e.sha256.clone(), e.complete))
        })
        .collect()
}

/// Every file in `expected` (store path → content) was announced exactly once, as created or
/// modified, complete, with its content's SHA-256; and nothing that looks like one of the
/// clients' temporary names was announced at all. Polls: a client's last close may still be
/// committing when it exits (sshfs releases files after unmount returns).
async fn assert_announced_once(t: &TestGateway, expected: &BTreeMap<String, Vec<u8>>) {
    until("announcements right", Duration::from_secs(30), || async {
        let all = announced(t).await;
        let mut problems = Vec::new();
        for (path, data) in expected {
            let mine: Vec<_> = all
                .iter()
                .filter(|(p, kind, ..)| p == path && kind.starts_with("io.filegate.file."))
                .collect();
            let complete = mine
                .iter()
                .filter(|(_, kind, sha, complete)| {
                    matches!(
                        *kind,
                        "io.filegate.file.created" | "io.filegate.file.modified"
                    ) && *complete == Some(true)
                        && sha.as_deref() == Some(sha256_hex(data).as_str())
                })
                .count();
            if complete != 1 || mine.len() != 1 {
                problems.push(format!("{path}: {mine:?}"));
            }
        }
        for (path, kind, ..) in &all {
            let name = path.rsplit('/').next().unwrap();
            if looks_temporary(name) {
                problems.push(format!("a temporary name was announced: {kind} {path}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("{}\nall: {all:#?}", problems.join("\n")))
        }
    })
    .await
}

/// The temporary names the clients of this file produce (checked independently of the patterns).
fn looks_temporary(name: &str) -> bool {
    let rsync = name.starts_with('.')
        && name.rsplit_once('.').is_some_and(|(head, tail)| {
            head.len() > 1 && tail.len() == 6 && tail.chars().all(|c| c.is_ascii_alphanumeric())
        });
    rsync
        || name.starts_with(".goutputstream-")
        || name.ends_with(".swp")
        || name == "4913"
        || name.ends_with('~')
        || name.ends_with(".partial")
        || name.ends_with(".filepart")
        || name.starts_with(".in.")
}

fn under(prefix: &str, tree: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    tree.iter()
        .map(|(rel, data)| (format!("{prefix}/{rel}"), data.clone()))
        .collect()
}

// --- sshfs ---

/// An sshfs mount of alice's home, unmounted when dropped.
struct Sshfs {
    dir: PathBuf,
}

impl Sshfs {
    fn mount(t: &TestGateway, key: &Path) -> Sshfs {
        let dir = t.temp_path("mnt");
        std::fs::create_dir_all(&dir).unwrap();
        let port = t.sftp_addr().port().to_string();
        let options = format!(
            "IdentityFile={},IdentitiesOnly=yes,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR",
            key.display()
        );
        let mnt = dir.display().to_string();
        run(
            "sshfs",
            &["-p", &port, "-o", &options, "alice@127.0.0.1:/", &mnt],
            None,
        );
        // sshfs returns once mounted (it daemonises after connecting); make sure.
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        assert!(mounts.contains(&mnt), "sshfs did not mount {mnt}: {mounts}");
        Sshfs { dir }
    }

    fn unmount(&self) {
        let mnt = self.dir.display().to_string();
        if std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains(&mnt)
        {
            run("fusermount3", &["-u", &mnt], None);
        }
    }
}

impl Drop for Sshfs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .args(["-uz"])
            .arg(&self.dir)
            .output();
    }
}

fn sh(script: &str, dir: &Path, env: &[(&str, &Path)]) -> String {
    let mut cmd = Command::new(program("sh"));
    cmd.args(["-exc", script]).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "sh -ec {script:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn sshfs_workloads(kind: Kind) {
    let (t, key, _keys) = gateway(kind).await;
    let local = t.temp_path("local");
    std::fs::create_dir_all(&local).unwrap();
    let src = local.join("src");
    let tree = make_tree(&src, 60);
    let big = content(9, 1_500_000);
    std::fs::write(local.join("big.bin"), &big).unwrap();
    let mount = Sshfs::mount(&t, &key);
    let m = mount.dir.clone();
    let home = t.temp_path("home");
    std::fs::create_dir_all(&home).unwrap();
    let env = [
        ("HOME", home.as_path()),
        ("MNT", m.as_path()),
        ("LOCAL", local.as_path()),
    ];

    // Redirection and cp create files through open(O_CREAT), then stat them.
    sh(
        r#"mkdir "$MNT/w"
echo hello > "$MNT/w/echo.txt"
test "$(cat "$MNT/w/echo.txt")" = hello
cp "$LOCAL/big.bin" "$MNT/w/big.bin"
cmp "$LOCAL/big.bin" "$MNT/w/big.bin"
ls -l "$MNT/w" >/dev/null"#,
        &local,
        &env,
    );

    // git: lock files created with O_EXCL, written, renamed; objects written and read back.
    sh(
        r#"export GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.org GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.org
git init -q "$MNT/w/repo"
cd "$MNT/w/repo"
git config core.fileMode false
echo one > a.txt
mkdir sub && echo two > sub/b.txt
git add -A
git commit -q -m first
echo three >> a.txt
git commit -q -am second
test "$(git log --oneline | wc -l)" = 2
git fsck --no-progress
test -z "$(git status --porcelain)""#,
        &local,
        &env,
    );

    // tar x of a source tree, then compared.
    sh(
        r#"tar cf "$LOCAL/tree.tar" -C "$LOCAL/src" .
mkdir "$MNT/w/tar"
tar xf "$LOCAL/tree.tar" -C "$MNT/w/tar"
diff -r "$LOCAL/src" "$MNT/w/tar""#,
        &local,
        &env,
    );

    // rsync -a in (temporary names .name.XXXXXX, renamed) and out again.
    sh(
        r#"rsync -a "$LOCAL/src/" "$MNT/w/rsync/"
rsync -a "$MNT/w/rsync/" "$LOCAL/rsync-back/"
diff -r "$LOCAL/src" "$LOCAL/rsync-back""#,
        &local,
        &env,
    );

    // sqlite3: random-access writes, reads of what was just written, a journal created and removed.
    let out = sh(
        r#"sqlite3 "$MNT/w/db.sqlite" "create table t(x integer); insert into t values (1), (2);"
sqlite3 "$MNT/w/db.sqlite" "insert into t values (39);"
sqlite3 "$MNT/w/db.sqlite" "select sum(x) from t;""#,
        &local,
        &env,
    );
    assert_eq!(out.trim(), "42");

    // Editors. gedit (GIO's g_file_replace) writes .goutputstream-XXXXXX and renames it over the
    // file, emacs keeps #name# while editing: both done here as they do it (neither runs
    // headless). vim runs for real: a swap file .name.swp, the 4913 write test, and a name~
    // backup while it writes (renamed or copied, as its backupcopy=auto decides).
    sh(
        r#"printf 'draft\n' > "$MNT/w/.goutputstream-AB12CD"
mv "$MNT/w/.goutputstream-AB12CD" "$MNT/w/notes.txt"
printf 'autosave' > "$MNT/w/#notes.txt#" && rm "$MNT/w/#notes.txt#"
vim -N -u NONE -i NONE -Es -c 'set backup' -c 'call setline(1, "vim text")' -c 'wq' "$MNT/w/vim.txt"
vim -N -u NONE -i NONE -Es -c 'set backup' -c 'call setline(1, "vim edited")' -c 'wq' "$MNT/w/vim.txt"
test "$(cat "$MNT/w/vim.txt")" = "vim edited""#,
        &local,
        &env,
    );
    mount.unmount();

    let mut expected = under("/home/alice/w/tar", &tree);
    expected.extend(under("/home/alice/w/rsync", &tree));
    expected.insert("/home/alice/w/echo.txt".into(), b"hello\n".to_vec());
    expected.insert("/home/alice/w/big.bin".into(), big.clone());
    expected.insert("/home/alice/w/notes.txt".into(), b"draft\n".to_vec());
    assert_announced_once(&t, &expected).await;
    // vim's file: created once, then replaced by the edit (modified in place, or deleted and
    // created again when vim renamed the original to its backup name); never a temporary name.
    let vim: Vec<_> = announced(&t)
        .await
        .into_iter()
        .filter(|(p, ..)| p == "/home/alice/w/vim.txt")
        .collect();
    let last = vim.last().expect("vim.txt announced");
    assert!(
        matches!(
            last.1,
            "io.filegate.file.created" | "io.filegate.file.modified"
        ) && last.2.as_deref() == Some(sha256_hex(b"vim edited\n").as_str()),
        "{vim:?}"
    );
    assert_eq!(
        vim[0].2.as_deref(),
        Some(sha256_hex(b"vim text\n").as_str())
    );
    assert!(vim.len() <= 3, "{vim:?}");
    assert_eq!(t.store_bytes("/home/alice/w/notes.txt").await, b"draft\n");
    // Nothing was left behind as an empty or incomplete file.
    for e in t.events().await {
        assert!(
            e.complete != Some(false),
            "an incomplete file was recorded: {e:?}"
        );
    }
    drop(mount);
    t.stop().await;
}

// --- paramiko ---

const PARAMIKO: &str = r#"
import errno, os, sys
import paramiko

port, key, local = sys.argv[1], sys.argv[2], sys.argv[3]
t = paramiko.Transport(("127.0.0.1", int(port)))
t.connect(username="alice", pkey=paramiko.Ed25519Key.from_private_key_file(key))
s = paramiko.SFTPClient.from_transport(t)
data = open(local, "rb").read()
s.mkdir("/py")
s.put(local, "/py/up.bin")
assert s.stat("/py/up.bin").st_size == len(data)
assert "up.bin" in s.listdir("/py"), s.listdir("/py")
s.posix_rename("/py/up.bin", "/py/moved.bin")
s.rename("/py/moved.bin", "/py/final.bin")
s.get("/py/final.bin", local + ".back")
assert open(local + ".back", "rb").read() == data

# Lock files: open(path, "x") is CREAT|EXCL without WRITE, "wx" the same with WRITE|TRUNC;
# the first creates the file, the second must fail.
s.open("/py/app.lock", "x").close()
with s.open("/py/app2.lock", "wx") as f:
    f.write(b"pid 1")
for path, mode in [("/py/app.lock", "x"), ("/py/app2.lock", "x"), ("/py/app2.lock", "wx")]:
    try:
        s.open(path, mode)
        print("EXCLUSIVE CREATE SUCCEEDED ON AN EXISTING FILE", path, mode)
        sys.exit(3)
    except IOError as e:
        # SSH_FX_FAILURE: paramiko gives no errno (ENOENT/EACCES are the other codes).
        assert e.errno is None, repr(e)
        assert "exists" in str(e), repr(e)
assert s.open("/py/app2.lock").read() == b"pid 1"
assert s.stat("/py/app.lock").st_size == 0

# A file being written is there for stat from its open on, with its current size.
f = s.open("/py/growing.bin", "w")
f.write(b"x" * 1000)
f.flush()
assert s.stat("/py/growing.bin").st_size == 1000, s.stat("/py/growing.bin")
assert f.stat().st_size == 1000
f.close()
print("paramiko ok")
"#;

fn python(script: &str, args: &[&str]) -> std::process::Output {
    Command::new(program("python3"))
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap()
}

async fn paramiko(kind: Kind) {
    let (t, key, _keys) = gateway(kind).await;
    let local = t.temp_path("py.bin");
    let data = content(4, 3_000_000);
    std::fs::write(&local, &data).unwrap();
    let port = t.sftp_addr().port().to_string();
    let out = python(
        PARAMIKO,
        &[
            &port,
            &key.display().to_string(),
            &local.display().to_string(),
        ],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("paramiko ok"),
        "{text}"
    );
    let mut expected = BTreeMap::new();
    // Announced when created; the two renames are announced as renames.
    expected.insert("/home/alice/py/up.bin".to_string(), data);
    expected.insert("/home/alice/py/app.lock".to_string(), Vec::new());
    expected.insert("/home/alice/py/app2.lock".to_string(), b"pid 1".to_vec());
    expected.insert("/home/alice/py/growing.bin".to_string(), vec![b'x'; 1000]);
    assert_announced_once(&t, &expected).await;
    t.stop().await;
}

// --- OpenSSH sftp and scp ---

fn scp<S: AsRef<std::ffi::OsStr>>(
    t: &TestGateway,
    key: &Path,
    legacy: bool,
    args: &[S],
) -> (bool, String) {
    let mut cmd = Command::new(program("scp"));
    if legacy {
        cmd.arg("-O");
    }
    let out = cmd
        .args(["-P", &t.sftp_addr().port().to_string()])
        .args(t.ssh_options(key))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn openssh_sftp_and_scp(kind: Kind) {
    let (t, key, _keys) = gateway(kind).await;
    let local = t.temp_path("local");
    let tree = make_tree(&local.join("tree"), 30);
    let one = content(5, 2_000_000);
    std::fs::write(local.join("one.bin"), &one).unwrap();
    let back = t.temp_path("back");
    std::fs::create_dir_all(&back).unwrap();
    let (ok, out) = t.sftp_batch(
        "alice",
        &key,
        &format!(
            "mkdir s\nput {} s/a.bin\nls -l s\nrename s/a.bin s/b.bin\nget s/b.bin {}\nput -r {} s/tree\n",
            local.join("one.bin").display(),
            back.join("b.bin").display(),
            local.join("tree").display()
        ),
    );
    assert!(ok, "{out}");
    assert!(out.contains("a.bin") && out.contains("2000000"), "{out}");
    assert!(std::fs::read(back.join("b.bin")).unwrap() == one);
    for legacy in [false, true] {
        let name = if legacy { "legacy" } else { "modern" };
        let (ok, out) = scp(
            &t,
            &key,
            legacy,
            &[
                "-r".into(),
                local.join("tree").display().to_string(),
                format!("alice@127.0.0.1:/{name}"),
            ],
        );
        assert!(ok, "scp {name} up: {out}");
        let (ok, out) = scp(
            &t,
            &key,
            legacy,
            &[
                "-r".into(),
                format!("alice@127.0.0.1:/{name}"),
                back.join(name).display().to_string(),
            ],
        );
        assert!(ok, "scp {name} down: {out}");
        for (rel, data) in &tree {
            assert!(
                &std::fs::read(back.join(name).join(rel)).unwrap() == data,
                "{name}/{rel}"
            );
        }
    }
    let mut expected = BTreeMap::new();
    expected.insert("/home/alice/s/b.bin".to_string(), one);
    expected.extend(under("/home/alice/s/tree", &tree));
    expected.extend(under("/home/alice/modern", &tree));
    expected.extend(under("/home/alice/legacy", &tree));
    // The rename is announced as a rename, not as a second file.
    let renamed: Vec<_> = announced(&t)
        .await
        .into_iter()
        .filter(|(p, kind, ..)| p == "/home/alice/s/b.bin" && *kind == "io.filegate.file.renamed")
        .collect();
    assert_eq!(renamed.len(), 1, "{renamed:?}");
    // b.bin was announced when created (as a.bin) and renamed; check the rest.
    let a_bin = expected.remove("/home/alice/s/b.bin").unwrap();
    expected.insert("/home/alice/s/a.bin".to_string(), a_bin);
    assert_announced_once(&t, &expected).await;
    t.stop().await;
}

// --- curl ---

async fn curl_sftp(kind: Kind) {
    let (t, _key, _keys) = gateway(kind).await;
    let port = t.sftp_addr().port();
    let base = format!("sftp://127.0.0.1:{port}");
    let user = format!("alice:{PASSWORD}");
    let local = t.temp_path("c.bin");
    let data = content(6, 1_200_000);
    std::fs::write(&local, &data).unwrap();
    let curl = |extra: &[&str]| {
        let mut args = vec!["-sS", "--fail", "--insecure", "-u", user.as_str()];
        args.extend_from_slice(extra);
        run("curl", &args, None)
    };
    curl(&[
        "--ftp-create-dirs",
        "-T",
        &local.display().to_string(),
        &format!("{base}/c/d/up.bin"),
    ]);
    let listing = curl(&["-l", &format!("{base}/c/d/")]);
    assert!(listing.lines().any(|l| l == "up.bin"), "{listing}");
    curl(&[
        "-Q",
        "rename /c/d/up.bin /c/d/done.bin",
        &format!("{base}/c/d/"),
    ]);
    let back = t.temp_path("c.back");
    curl(&[
        "-o",
        &back.display().to_string(),
        &format!("{base}/c/d/done.bin"),
    ]);
    assert!(std::fs::read(&back).unwrap() == data);
    // A range, as resuming downloads do.
    let part = t.temp_path("c.part");
    curl(&[
        "-r",
        "1000-1999",
        "-o",
        &part.display().to_string(),
        &format!("{base}/c/d/done.bin"),
    ]);
    assert!(std::fs::read(&part).unwrap() == data[1000..2000]);
    let mut expected = BTreeMap::new();
    expected.insert("/home/alice/c/d/up.bin".to_string(), data);
    assert_announced_once(&t, &expected).await;
    t.stop().await;
}

// --- Node ssh2-sftp-client ---

fn node_client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/node-sftp")
}

async fn node_ssh2_sftp_client(kind: Kind) {
    let (t, key, _keys) = gateway(kind).await;
    let dir = node_client_dir();
    assert!(
        dir.join("node_modules/ssh2-sftp-client").is_dir(),
        "{}: run scripts/test, which installs it (npm ci)",
        dir.display()
    );
    let work = t.temp_path("node");
    std::fs::create_dir_all(&work).unwrap();
    let data = content(7, 2_500_000);
    std::fs::write(work.join("node.bin"), &data).unwrap();
    let out = run(
        "node",
        &[
            &dir.join("run.js").display().to_string(),
            &t.sftp_addr().port().to_string(),
            "alice",
            &key.display().to_string(),
            &work.display().to_string(),
        ],
        Some(&dir),
    );
    assert!(out.contains("node-sftp ok"), "{out}");
    let mut expected = BTreeMap::new();
    expected.insert("/home/alice/node/deep/up.bin".to_string(), data.clone());
    expected.insert("/home/alice/node/fast.bin".to_string(), data);
    expected.insert(
        "/home/alice/node/small.txt".to_string(),
        b"small from a buffer".to_vec(),
    );
    assert_announced_once(&t, &expected).await;
    t.stop().await;
}

// --- rclone ---

async fn rclone_sftp_sync(kind: Kind) {
    let (t, key, _keys) = gateway(kind).await;
    let local = t.temp_path("rc-src");
    let tree = make_tree(&local, 300);
    // Debian's rclone into rc/, the current release into rc-current/.
    let mut expected = BTreeMap::new();
    for (version, binary) in crate::common::rclones() {
        let dir = if version == "current" {
            "rc-current"
        } else {
            "rc"
        };
        let remote = format!(
            ":sftp,host=127.0.0.1,port={},user=alice,key_file={}:{dir}",
            t.sftp_addr().port(),
            key.display()
        );
        let config = t.temp_path("rclone.conf");
        std::fs::write(&config, "").unwrap();
        let config = config.display().to_string();
        let rclone = |args: &[&str]| {
            let mut all = vec!["--config", config.as_str(), "-q"];
            all.extend_from_slice(args);
            run(binary.to_str().unwrap(), &all, None)
        };
        rclone(&["sync", &local.display().to_string(), &remote]);
        // --download compares the bytes (the server runs no md5sum for rclone's hash check).
        rclone(&["check", "--download", &local.display().to_string(), &remote]);
        let listing = rclone(&["lsf", "-R", "--files-only", &remote]);
        assert_eq!(listing.lines().count(), tree.len(), "{listing}");
        rclone(&[
            "moveto",
            &format!("{remote}/d0/s0/file0.txt"),
            &format!("{remote}/d0/s0/renamed.txt"),
        ]);
        let back = t.temp_path(&format!("{dir}-back"));
        rclone(&["sync", &remote, &back.display().to_string()]);
        let mut moved = tree.clone();
        let first = moved.remove("d0/s0/file0.txt").unwrap();
        moved.insert("d0/s0/renamed.txt".into(), first);
        for (rel, data) in &moved {
            assert!(&std::fs::read(back.join(rel)).unwrap() == data, "{rel}");
        }
        expected.extend(under(&format!("/home/alice/{dir}"), &tree));
    }
    assert_announced_once(&t, &expected).await;
    t.stop().await;
}

// --- Names: the same rules for FTP, SFTP and SCP ---

const PARAMIKO_NAMES: &str = r#"
import sys
import paramiko

port, key = sys.argv[1], sys.argv[2]
t = paramiko.Transport(("127.0.0.1", int(port)))
t.connect(username="alice", pkey=paramiko.Ed25519Key.from_private_key_file(key))
s = paramiko.SFTPClient.from_transport(t)
bad = [
    b"/bad\xffname.txt",                 # not UTF-8
    ("/" + "n" * 256).encode(),          # a name over 255 bytes
    ("/" + "n" * 5000).encode(),
    ("/" + ("d" * 200 + "/") * 21 + "f").encode(),  # a path over 4096 bytes
]
for path in bad:
    for what, call in [("open", lambda p: s.open(p, "w")), ("mkdir", lambda p: s.mkdir(p))]:
        try:
            call(path)
            print("ACCEPTED", what, path[:40])
            sys.exit(3)
        except IOError as e:
            assert e.errno is None, (what, path[:40], repr(e))
            assert "UTF-8" in str(e) or "limit" in str(e), (what, path[:40], repr(e))
# 255 bytes is still fine.
with s.open("/" + "n" * 255, "w") as f:
    f.write(b"ok")
print(sorted(s.listdir("/")))
print("names ok")
"#;

/// One reply (its last line) on a raw FTP control connection.
async fn ftp_reply(r: &mut tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
    use tokio::io::AsyncBufReadExt;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert!(!line.is_empty(), "the server closed the connection");
        // A multi-line reply ends with "ddd " on its last line.
        if line.len() > 3 && line.as_bytes()[3] == b' ' {
            return line.trim_end().to_string();
        }
    }
}

/// One FTP command (bytes as given) on a logged-in raw control connection: the reply.
async fn ftp_raw(t: &TestGateway, command: &[u8]) -> String {
    let stream = tokio::net::TcpStream::connect(t.ftp_addr()).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r);
    ftp_reply(&mut r).await;
    for login in [
        b"USER alice\r\n".to_vec(),
        format!("PASS {PASSWORD}\r\n").into_bytes(),
    ] {
        w.write_all(&login).await.unwrap();
        ftp_reply(&mut r).await;
    }
    w.write_all(command).await.unwrap();
    w.write_all(b"\r\n").await.unwrap();
    ftp_reply(&mut r).await
}

async fn names_in_every_protocol(kind: Kind) {
    let (t, key, _keys) = gateway(kind).await;
    // SFTP (paramiko).
    let port = t.sftp_addr().port().to_string();
    let out = python(PARAMIKO_NAMES, &[&port, &key.display().to_string()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("names ok"), "{text}");
    // FTP: a 5,000-character STOR, a MKD with invalid UTF-8 and one with an over-long name.
    let mut ftp = suppaftp::tokio::AsyncFtpStream::connect(t.ftp_addr())
        .await
        .unwrap();
    ftp.login("alice", PASSWORD).await.unwrap();
    ftp.transfer_type(suppaftp::types::FileType::Binary)
        .await
        .unwrap();
    let long = "f".repeat(5000);
    let err = ftp
        .put_file(&long, &mut &b"data"[..])
        .await
        .expect_err("a 5,000-character STOR was accepted");
    assert!(err.to_string().contains("553"), "{err}");
    assert!(ftp.nlst(None).await.is_ok(), "the session survives");
    ftp.quit().await.ok();
    for command in [
        b"MKD bad\xffdir".to_vec(),
        format!("MKD {}", "m".repeat(300)).into_bytes(),
        format!("MKD {}", "m/".repeat(2100)).into_bytes(),
    ] {
        let reply = ftp_raw(&t, &command).await;
        assert!(
            reply.starts_with("553") || reply.starts_with("550"),
            "{}: {reply}",
            String::from_utf8_lossy(&command[..20])
        );
    }
    // SCP, both protocols: an over-long target name is refused with the reason; a good copy
    // still works.
    let dir = t.temp_path("scp-names");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("good.txt"), b"good").unwrap();
    for legacy in [false, true] {
        let (ok, out) = scp(
            &t,
            &key,
            legacy,
            &[
                dir.join("good.txt").display().to_string(),
                format!("alice@127.0.0.1:/{}", "n".repeat(300)),
            ],
        );
        assert!(
            !ok,
            "scp (legacy: {legacy}) of an over-long name succeeded: {out}"
        );
        // Modern scp (SFTP) prints only "Failure"; the legacy protocol carries the message.
        assert!(!legacy || out.contains("limit is 255"), "{out}");
    }
    let (ok, out) = scp(
        &t,
        &key,
        true,
        &[
            "-r".into(),
            dir.display().to_string(),
            "alice@127.0.0.1:/".into(),
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(
        t.store_bytes("/home/alice/scp-names/good.txt").await,
        b"good"
    );
    // Modern scp (SFTP) with a name that is not UTF-8: the target is named after the local
    // file's bytes.
    use std::os::unix::ffi::OsStrExt;
    let bad_dir = t.temp_path("scp-bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let bad = bad_dir.join(std::ffi::OsStr::from_bytes(b"bad\xff.txt"));
    std::fs::write(&bad, b"bad").unwrap();
    for legacy in [false, true] {
        let (ok, out) = scp(
            &t,
            &key,
            legacy,
            &[bad.as_os_str(), std::ffi::OsStr::new("alice@127.0.0.1:/")],
        );
        assert!(
            !ok,
            "scp (legacy: {legacy}) of a name that is not UTF-8: {out}"
        );
    }
    // Nothing with a refused name reached the store.
    let mut names = Vec::new();
    let mut page = t
        .store()
        .list(&StorePath::parse("/home/alice").unwrap(), None, 1000)
        .await
        .unwrap();
    names.append(&mut page.entries);
    let names: Vec<String> = names.into_iter().map(|e| e.name).collect();
    assert!(
        names
            .iter()
            .all(|n| n.len() <= 255 && !n.contains('\u{fffd}')),
        "{names:?}"
    );
    t.stop().await;
}

// --- An open upload is visible to stat; readers and subscribers wait for the close ---

async fn open_upload_is_visible_to_stat(kind: Kind) {
    let t = start(kind, sftp_on).await;
    let ssh = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let sftp = sftp_session(&ssh).await;
    // Another client, reading while this one writes.
    let other_ssh = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let other = sftp_session(&other_ssh).await;
    sftp.create_dir("v").await.unwrap();
    let mut old = sftp.create("v/old.txt").await.unwrap();
    old.write_all(b"committed").await.unwrap();
    old.shutdown().await.unwrap();
    let before = t.events().await.len();

    let mut f = sftp
        .open_with_flags(
            "v/new.bin",
            OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
        )
        .await
        .unwrap();
    // Right after the open: there, empty.
    assert_eq!(sftp.metadata("v/new.bin").await.unwrap().size, Some(0));
    f.write_all(&[7u8; 70_000]).await.unwrap();
    f.flush().await.unwrap();
    assert_eq!(sftp.metadata("v/new.bin").await.unwrap().size, Some(70_000));
    assert_eq!(
        sftp.symlink_metadata("v/new.bin").await.unwrap().size,
        Some(70_000)
    );
    assert_eq!(f.metadata().await.unwrap().size, Some(70_000));
    let names: HashMap<String, Option<u64>> = sftp
        .read_dir("v")
        .await
        .unwrap()
        .map(|e| (e.file_name(), e.metadata().size))
        .collect();
    assert_eq!(names.get("new.bin"), Some(&Some(70_000)), "{names:?}");
    assert_eq!(names.get("old.txt"), Some(&Some(9)), "{names:?}");
    // Other readers see no file yet; nothing is announced.
    let e = other.read("v/new.bin").await.unwrap_err();
    match e {
        russh_sftp::client::error::Error::Status(s) => {
            assert_eq!(s.status_code, StatusCode::NoSuchFile)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t.events().await.len(), before);
    // Rewriting a committed file: stat shows the new size, readers the committed content.
    let mut again = sftp
        .open_with_flags(
            "v/old.txt",
            OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE,
        )
        .await
        .unwrap();
    again.write_all(b"new").await.unwrap();
    again.flush().await.unwrap();
    assert_eq!(sftp.metadata("v/old.txt").await.unwrap().size, Some(3));
    assert_eq!(other.read("v/old.txt").await.unwrap(), b"committed");
    // setstat by path on the open file (what sshfs sends) changes the open upload.
    sftp.set_metadata(
        "v/new.bin",
        russh_sftp::protocol::FileAttributes {
            size: Some(50_000),
            mtime: Some(1_000_000_000),
            atime: Some(1_000_000_000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(sftp.metadata("v/new.bin").await.unwrap().size, Some(50_000));
    f.shutdown().await.unwrap();
    again.shutdown().await.unwrap();
    let meta = sftp.metadata("v/new.bin").await.unwrap();
    assert_eq!(meta.size, Some(50_000));
    assert_eq!(meta.mtime, Some(1_000_000_000));
    assert_eq!(sftp.read("v/old.txt").await.unwrap(), b"new");
    let mut expected = BTreeMap::new();
    expected.insert("/home/alice/v/new.bin".to_string(), vec![7u8; 50_000]);
    assert_announced_once(&t, &expected).await;
    t.stop().await;
}

// --- Shutdown: idle sessions end at once, running transfers get the grace period ---

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_idle_sessions_at_once() {
    let t = start(Kind::Embedded, |c| {
        sftp_on(c);
        // Far beyond any slowness of the machine: ending before it is the gateway's doing.
        c.server.shutdown_grace = Duration::from_secs(600);
    })
    .await;
    let idle1 = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let idle_sftp = sftp_session(&idle1).await;
    idle_sftp.metadata("/").await.unwrap();
    let idle2 = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let busy = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let busy_sftp = sftp_session(&busy).await;
    let mut upload = busy_sftp.create("running.bin").await.unwrap();
    upload.write_all(&[1u8; 100_000]).await.unwrap();
    upload.flush().await.unwrap();
    busy_sftp.metadata("/").await.unwrap();

    let stopping = tokio::spawn(t.stop());
    // The idle sessions are disconnected at once.
    until_true(
        "idle sessions still open during shutdown",
        Duration::from_secs(10),
        || async { idle1.is_closed() && idle2.is_closed() },
    )
    .await;
    // The running upload goes on and completes; then the gateway stops, long before the grace
    // period is over.
    upload.write_all(&[2u8; 100_000]).await.unwrap();
    let size = upload.metadata().await.unwrap().size;
    assert_eq!(size, Some(200_000));
    // The close is the commit: its success means the file is stored, complete.
    upload.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(120), stopping)
        .await
        .expect("the gateway waited for the grace period")
        .unwrap();
}

// --- lftp's temporary names (xfer:use-temp-file), over FTP ---

async fn lftp_temp_file_names(kind: Kind) {
    let t = start(kind, |_| {}).await;
    let local = t.temp_path("lftp-src");
    let tree = make_tree(&local, 20);
    let one = content(3, 300_000);
    std::fs::write(t.temp_path("one.bin"), &one).unwrap();
    let a = t.ftp_addr();
    let script = format!(
        "set xfer:use-temp-file yes; set net:max-retries 1; set ftp:passive-mode yes; \
         put {} -o one.bin; mirror -R {} tree; bye",
        t.temp_path("one.bin").display(),
        local.display()
    );
    run(
        "lftp",
        &[
            "-u",
            &format!("alice,{PASSWORD}"),
            "-p",
            &a.port().to_string(),
            "-e",
            &script,
            &a.ip().to_string(),
        ],
        None,
    );
    // lftp really used its temporary names (.in.NAME), renamed when done.
    let events = t.events().await;
    assert!(
        events
            .iter()
            .any(|e| e.old_path.as_deref() == Some("/home/alice/.in.one.bin")),
        "{events:#?}"
    );
    let mut expected = under("/home/alice/tree", &tree);
    expected.insert("/home/alice/one.bin".into(), one);
    assert_announced_once(&t, &expected).await;
    t.stop().await;
}

// --- One audit line per transfer (the shared layer's), none from the SFTP subsystem ---

#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// The capture is this test binary's global subscriber (a thread-local one misses callsites other
// tests' threads registered first); other tests' lines land there too, so only this test's file
// name is looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_audit_line_per_sftp_transfer() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter("filegate=info")
        .finish();
    tracing::subscriber::set_global_default(subscriber)
        .expect("no other logger in this test binary (unset TEST_LOG)");
    let t = start(Kind::Embedded, sftp_on).await;
    let ssh = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let sftp = sftp_session(&ssh).await;
    let mut f = sftp.create("audited.bin").await.unwrap();
    f.write_all(&content(1, 200_000)).await.unwrap();
    f.shutdown().await.unwrap();
    assert_eq!(sftp.read("audited.bin").await.unwrap().len(), 200_000);
    drop(sftp);
    ssh.disconnect(russh::Disconnect::ByApplication, "bye", "")
        .await
        .ok();
    t.stop().await;
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("audited.bin")).collect();
    assert_eq!(
        lines.len(),
        2,
        "one line per transfer:\n{}",
        lines.join("\n")
    );
    assert!(
        lines[0].contains("direction=\"upload\"") && lines[0].contains("result=\"ok\""),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("direction=\"download\"") && lines[1].contains("bytes=200000"),
        "{}",
        lines[1]
    );
}

// --- sshfs's late CLOSE: the next request on the path comes first ---

/// sshfs sends CLOSE when the kernel releases the file, after the program's close(2) returned;
/// the program's next step on the path can arrive first. It must see the data, as on POSIX.
async fn a_late_close_is_like_sshfs_sends_it(kind: Kind) {
    let t = start(kind, sftp_on).await;
    let ssh = ssh_login(t.sftp_addr(), "alice", PASSWORD).await.unwrap();
    let channel = ssh.channel_open_session().await.unwrap();
    channel.request_subsystem(true, "sftp").await.unwrap();
    let raw = russh_sftp::client::RawSftpSession::new(channel.into_stream());
    raw.init().await.unwrap();
    let create = OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE;
    let attrs = russh_sftp::protocol::FileAttributes::default;
    // rsync: write a temporary file, rename it before its CLOSE arrives.
    let tmp = raw.open(".data.csv.Ab12Cd", create, attrs()).await.unwrap();
    raw.write(tmp.handle.clone(), 0, b"a,b\n1,2\n".to_vec())
        .await
        .unwrap();
    raw.rename(".data.csv.Ab12Cd", "data.csv").await.unwrap();
    // A reader (a second open of the same path) sees what was written.
    let log = raw.open("log.txt", create, attrs()).await.unwrap();
    raw.write(log.handle.clone(), 0, b"first".to_vec())
        .await
        .unwrap();
    let reader = raw.open("log.txt", OpenFlags::READ, attrs()).await.unwrap();
    assert_eq!(
        raw.read(reader.handle.clone(), 0, 100).await.unwrap().data,
        b"first"
    );
    // vim writing the file twice: the second version must win, whatever order the CLOSEs take.
    let second = raw.open("log.txt", create, attrs()).await.unwrap();
    raw.write(second.handle.clone(), 0, b"second".to_vec())
        .await
        .unwrap();
    raw.close(second.handle).await.unwrap();
    // sqlite: the journal removed before its CLOSE arrives.
    let journal = raw.open("db-journal", create, attrs()).await.unwrap();
    raw.write(journal.handle.clone(), 0, b"journal".to_vec())
        .await
        .unwrap();
    raw.remove("db-journal").await.unwrap();
    // The late CLOSEs: nothing left to do, no error.
    for h in [tmp.handle, log.handle, reader.handle, journal.handle] {
        raw.close(h).await.unwrap();
    }
    assert_eq!(t.store_bytes("/home/alice/data.csv").await, b"a,b\n1,2\n");
    assert_eq!(t.store_bytes("/home/alice/log.txt").await, b"second");
    let mut expected = BTreeMap::new();
    expected.insert("/home/alice/data.csv".to_string(), b"a,b\n1,2\n".to_vec());
    assert_announced_once(&t, &expected).await;
    let log_events: Vec<_> = announced(&t)
        .await
        .into_iter()
        .filter(|(p, ..)| p == "/home/alice/log.txt")
        .collect();
    assert_eq!(log_events.len(), 2, "{log_events:?}");
    assert_eq!(
        log_events[1].2.as_deref(),
        Some(sha256_hex(b"second").as_str())
    );
    t.stop().await;
}
