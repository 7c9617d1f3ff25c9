//! Legacy SCP (`scp -O`, the rcp protocol over `exec scp -t` / `scp -f`), served natively over the
//! user's [`UserFs`] — never by running a shell or a program. Modern `scp` speaks SFTP instead.
//!
//! Wire protocol (OpenSSH scp.c): control lines `C<mode> <size> <name>` (a file follows),
//! `D<mode> 0 <name>` / `E` (enter / leave a directory, with `-r`), `T<mtime> 0 <atime> 0` (times,
//! with `-p`); every line and every file is acknowledged with `\0`, or refused with
//! `\1scp: <message>\n` (that file is skipped) or `\2…` (fatal).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use storage_backend::{ErrorKind, OpenOptions};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::access::{UserFs, UserPath};

const PIECE: usize = 256 * 1024;
const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// `-t`: the client sends files to us; otherwise (`-f`) we send.
    pub sink: bool,
    pub recursive: bool,
    pub preserve: bool,
    /// `-d`: the target must be a directory.
    pub target_dir: bool,
    pub paths: Vec<String>,
}

impl Command {
    /// Parses the command line of an exec request; anything but scp is refused with the reason.
    pub fn parse(line: &str) -> Result<Command, String> {
        let words =
            shlex::split(line).ok_or_else(|| "the command has unbalanced quotes".to_string())?;
        let mut words = words.into_iter();
        if words.next().as_deref() != Some("scp") {
            return Err("only file transfers are served here: use sftp (or scp)".into());
        }
        let mut cmd = Command {
            sink: false,
            recursive: false,
            preserve: false,
            target_dir: false,
            paths: Vec::new(),
        };
        let (mut to, mut from) = (false, false);
        let mut options_done = false;
        for w in words {
            if options_done || !w.starts_with('-') || w == "-" {
                cmd.paths.push(w);
                continue;
            }
            if w == "--" {
                options_done = true;
                continue;
            }
            for c in w.chars().skip(1) {
                match c {
                    't' => to = true,
                    'f' => from = true,
                    'r' => cmd.recursive = true,
                    'p' => cmd.preserve = true,
                    'd' => cmd.target_dir = true,
                    'v' | 'q' | 'B' | 'C' => {}
                    other => return Err(format!("scp: unsupported option -{other}")),
                }
            }
        }
        if to == from {
            return Err("scp: exactly one of -t (upload) and -f (download) is needed".into());
        }
        cmd.sink = to;
        if cmd.paths.is_empty() || (to && cmd.paths.len() > 1) {
            return Err("scp: give one target path".into());
        }
        Ok(cmd)
    }
}

/// Runs the transfer; returns the exit status (0: every file went through).
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    cmd: &Command,
    fs: &UserFs,
) -> u32 {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let result = if cmd.sink {
        sink(&mut r, &mut w, cmd, fs).await
    } else {
        source(&mut r, &mut w, cmd, fs).await
    };
    match result {
        Ok(0) => 0,
        Ok(_) => 1,
        Err(fatal) => {
            tracing::info!(user = fs.user(), "scp: {fatal}");
            let _ = w.write_all(format!("\x02scp: {fatal}\n").as_bytes()).await;
            1
        }
    }
}

async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, message: &str) -> Result<(), String> {
    w.write_all(format!("\x01scp: {message}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())
}

async fn ack<W: AsyncWrite + Unpin>(w: &mut W) -> Result<(), String> {
    w.write_all(b"\0").await.map_err(|e| e.to_string())?;
    w.flush().await.map_err(|e| e.to_string())
}

/// Reads one control line (without its newline); `None` at the end of the stream.
async fn line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Result<Option<String>, String> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err("protocol error: control line too long or cut off".into());
    }
    buf.pop();
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| "protocol error: a control line is not UTF-8".into())
}

/// Reads the peer's answer to what we sent: `\0` is fine, `\1`/`\2` carry its complaint.
async fn answer<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Result<(), String> {
    let code = r
        .read_u8()
        .await
        .map_err(|e| format!("connection lost: {e}"))?;
    if code == 0 {
        return Ok(());
    }
    let message = line(r).await?.unwrap_or_default();
    Err(format!("the client refused: {message}"))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// An SCP time; beyond what `SystemTime` holds it is `None` (the store keeps at most year 9999).
fn to_time(secs: u64) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// `-t`: receive files. Returns how many files failed.
async fn sink<R, W>(r: &mut R, w: &mut W, cmd: &Command, fs: &UserFs) -> Result<u32, String>
where
    R: AsyncBufReadExt + Unpin,
    W: AsyncWrite + Unpin,
{
    let target = fs
        .resolve(&UserPath::root(), cmd.paths[0].as_bytes())
        .map_err(|e| e.to_string())?;
    let target_is_dir = fs.stat(&target).await.map(|m| m.is_dir()).unwrap_or(false);
    if cmd.target_dir && !target_is_dir {
        return Err(format!("{target}: not a directory"));
    }
    ack(w).await?;
    let mut dirs: Vec<UserPath> = Vec::new();
    let mut times: Option<SystemTime> = None;
    let mut failures = 0;
    while let Some(l) = line(r).await? {
        let (kind, rest) = l.split_at(l.chars().next().map(char::len_utf8).unwrap_or(0));
        match kind {
            "T" => {
                let mtime = rest
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .and_then(to_time);
                let Some(mtime) = mtime else {
                    return Err(format!("protocol error: bad time line {l:?}"));
                };
                times = Some(mtime);
                ack(w).await?;
            }
            "C" | "D" => {
                let mut parts = rest.splitn(3, ' ');
                let (_mode, size, name) = (parts.next(), parts.next(), parts.next());
                let (Some(size), Some(name)) = (size.and_then(|s| s.parse::<u64>().ok()), name)
                else {
                    return Err(format!("protocol error: bad line {l:?}"));
                };
                if !valid_name(name) {
                    return Err(format!("protocol error: unacceptable file name {name:?}"));
                }
                // The name rules of every protocol (UTF-8, length, characters): a refused name
                // skips that file or directory, and the rest of the copy goes on.
                let dest = match dirs.last() {
                    Some(d) => d.child(name),
                    None if target_is_dir => target.child(name),
                    None => Ok(target.clone()),
                };
                let dest = match dest {
                    Ok(d) => d,
                    Err(e) => {
                        let shown: String = name.chars().take(60).collect();
                        let more = if shown.len() < name.len() { "…" } else { "" };
                        refuse(w, &format!("{shown}{more}: {}", e.message())).await?;
                        failures += 1;
                        continue;
                    }
                };
                if kind == "D" {
                    if !cmd.recursive {
                        return Err("protocol error: a directory was sent without -r".into());
                    }
                    match fs.mkdir(&dest).await {
                        Ok(()) => {}
                        Err(e)
                            if e.kind() == ErrorKind::AlreadyExists
                                && fs.stat(&dest).await.is_ok_and(|m| m.is_dir()) => {}
                        Err(e) => return Err(format!("{dest}: {e}")),
                    }
                    dirs.push(dest);
                    times = None;
                    ack(w).await?;
                    continue;
                }
                if receive_file(r, w, fs, &dest, size, times.take()).await? {
                    ack(w).await?;
                } else {
                    failures += 1;
                }
            }
            "E" => {
                dirs.pop();
                ack(w).await?;
            }
            "\u{1}" => {
                tracing::info!(user = fs.user(), "scp: the client reported: {rest}");
                failures += 1;
            }
            "\u{2}" => return Err(format!("the client gave up: {rest}")),
            _ => return Err(format!("protocol error: unexpected line {l:?}")),
        }
    }
    Ok(failures)
}

/// Receives one file's bytes into `dest`. Ok(true) when stored; Ok(false) when refused (the
/// refusal was sent and the stream is still in step); Err when the stream cannot go on.
async fn receive_file<R, W>(
    r: &mut R,
    w: &mut W,
    fs: &UserFs,
    dest: &UserPath,
    size: u64,
    mtime: Option<SystemTime>,
) -> Result<bool, String>
where
    R: AsyncBufReadExt + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut upload = match fs.open_write(dest, OpenOptions::REPLACE).await {
        Ok(u) => u,
        Err(e) => {
            // The sender skips a file whose C line was refused: nothing follows.
            refuse(w, &format!("{dest}: {}", e.message())).await?;
            return Ok(false);
        }
    };
    ack(w).await?;
    let mut left = size;
    let mut buf = vec![0u8; PIECE.min(size.max(1) as usize)];
    let mut failed: Option<String> = None;
    while left > 0 {
        let want = (left as usize).min(buf.len());
        if let Err(e) = r.read_exact(&mut buf[..want]).await {
            let _ = upload.cut_off().await;
            return Err(format!("{dest}: connection lost mid-file: {e}"));
        }
        left -= want as u64;
        if failed.is_none() {
            if let Err(e) = upload.append(&buf[..want]).await {
                // Keep reading so the stream stays in step; refuse the file at its end.
                failed = Some(e.message().to_string());
            }
        }
    }
    if let Err(e) = answer(r).await {
        let _ = upload.cut_off().await;
        return Err(format!("{dest}: {e}"));
    }
    if let Some(why) = failed {
        let _ = upload.abort().await;
        refuse(w, &format!("{dest}: {why}")).await?;
        return Ok(false);
    }
    match upload.commit(mtime).await {
        Ok(_) => Ok(true),
        Err(e) => {
            refuse(w, &format!("{dest}: {}", e.message())).await?;
            Ok(false)
        }
    }
}

/// `-f`: send files. Returns how many could not be sent.
async fn source<R, W>(r: &mut R, w: &mut W, cmd: &Command, fs: &UserFs) -> Result<u32, String>
where
    R: AsyncBufReadExt + Unpin,
    W: AsyncWrite + Unpin,
{
    answer(r).await?;
    let mut failures = 0;
    for raw in &cmd.paths {
        let p = match fs.resolve(&UserPath::root(), raw.as_bytes()) {
            Ok(p) => p,
            Err(e) => {
                refuse(w, &format!("{raw}: {}", e.message())).await?;
                failures += 1;
                continue;
            }
        };
        failures += send(r, w, cmd, fs, &p).await?;
    }
    Ok(failures)
}

async fn send<R, W>(
    r: &mut R,
    w: &mut W,
    cmd: &Command,
    fs: &UserFs,
    p: &UserPath,
) -> Result<u32, String>
where
    R: AsyncBufReadExt + Unpin,
    W: AsyncWrite + Unpin,
{
    let name = p.file_name().unwrap_or("home").to_string();
    let meta = match fs.stat(p).await {
        Ok(m) => m,
        Err(e) => {
            refuse(w, &format!("{p}: {}", e.message())).await?;
            return Ok(1);
        }
    };
    let mtime = meta
        .mtime
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if meta.is_dir() {
        if !cmd.recursive {
            refuse(w, &format!("{p}: not a regular file")).await?;
            return Ok(1);
        }
        if cmd.preserve {
            w.write_all(format!("T{mtime} 0 {mtime} 0\n").as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            answer(r).await?;
        }
        w.write_all(format!("D0755 0 {name}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        answer(r).await?;
        let mut failures = 0;
        let mut after: Option<String> = None;
        loop {
            let page = match fs.list(p, after.as_deref(), 256).await {
                Ok(page) => page,
                Err(e) => {
                    refuse(w, &format!("{p}: {}", e.message())).await?;
                    failures += 1;
                    break;
                }
            };
            for entry in &page.entries {
                failures += Box::pin(send(r, w, cmd, fs, &p.join(&entry.name))).await?;
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        w.write_all(b"E\n").await.map_err(|e| e.to_string())?;
        answer(r).await?;
        return Ok(failures);
    }
    let download = match fs.open_read(p).await {
        Ok(d) => d,
        Err(e) => {
            refuse(w, &format!("{p}: {}", e.message())).await?;
            return Ok(1);
        }
    };
    if cmd.preserve {
        w.write_all(format!("T{mtime} 0 {mtime} 0\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        answer(r).await?;
    }
    w.write_all(format!("C0644 {} {name}\n", download.size()).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    answer(r).await?;
    let mut stream = download.stream(0);
    let mut sent = 0u64;
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(data) => {
                w.write_all(&data).await.map_err(|e| e.to_string())?;
                sent += data.len() as u64;
            }
            Err(e) => return Err(format!("{p}: {} (after {sent} bytes)", e.message())),
        }
    }
    ack(w).await?;
    answer(r).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_openssh_sends() {
        let c = Command::parse("scp -t /in").unwrap();
        assert!(c.sink && !c.recursive && c.paths == ["/in"]);
        let c = Command::parse("scp -r -p -t -- -odd").unwrap();
        assert!(c.sink && c.recursive && c.preserve && c.paths == ["-odd"]);
        assert!(Command::parse("scp -t a b").is_err());
        let c = Command::parse("scp -v -f 'a file.txt'").unwrap();
        assert!(!c.sink && c.paths == ["a file.txt"]);
        let c = Command::parse("scp -d -t dir").unwrap();
        assert!(c.target_dir);
        assert!(Command::parse("ls -la").is_err());
        assert!(Command::parse("scp -t").is_err());
        assert!(Command::parse("scp -t -f x").is_err());
        assert!(Command::parse("scp -x -t y").is_err());
    }

    #[test]
    fn refuses_names_that_climb() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_name("ok.txt"));
    }
}
