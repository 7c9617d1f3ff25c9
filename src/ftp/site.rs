//! Commands served through libunftp's SITE handlers: `MFMT` and `SITE UTIME` (keeping a file's
//! modification time, as FileZilla and WinSCP do after an upload), and the permission check at
//! `RNFR` (`options::RENAME_CHECK`).

use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use libunftp::options::{Reply, ReplyCode, SiteCommandContext, SiteCommandHandler};

use super::auth::FtpUser;
use super::backend::FtpBackend;
use crate::access::UserPath;
use crate::config::Permission;

type Context = SiteCommandContext<FtpBackend, FtpUser>;

fn user(ctx: &Context) -> Option<&FtpUser> {
    ctx.user.as_ref().as_ref()
}

/// `RNFR` by a user without the rename permission is refused at once (550), as vsftpd does.
#[derive(Debug)]
pub struct RenameCheck;

#[async_trait]
impl SiteCommandHandler<FtpBackend, FtpUser> for RenameCheck {
    async fn handle(&self, ctx: &Context) -> Reply {
        match user(ctx) {
            Some(u) if u.fs.can(Permission::Rename) => {
                Reply::new(ReplyCode::FileActionPending, "rename allowed")
            }
            _ => Reply::new(ReplyCode::FileError, "Permission denied"),
        }
    }
}

/// `MFMT YYYYMMDDHHMMSS path` (draft-somers-ftp-mfxx): sets the modification time, answers
/// `213 Modify=YYYYMMDDHHMMSS; path`.
#[derive(Debug)]
pub struct Mfmt;

#[async_trait]
impl SiteCommandHandler<FtpBackend, FtpUser> for Mfmt {
    async fn handle(&self, ctx: &Context) -> Reply {
        let Some((stamp, path)) = ctx.arguments.split_once(' ') else {
            return Reply::new(
                ReplyCode::ParameterSyntaxError,
                "Usage: MFMT YYYYMMDDHHMMSS path",
            );
        };
        let Some(mtime) = parse_time(stamp) else {
            return Reply::new(
                ReplyCode::ParameterSyntaxError,
                "Bad time: use YYYYMMDDHHMMSS (UTC)",
            );
        };
        match set_mtime(ctx, path, mtime).await {
            Ok(()) => {
                Reply::new_with_string(ReplyCode::FileStatus, format!("Modify={stamp}; {path}"))
            }
            Err(reply) => reply,
        }
    }
}

/// `SITE UTIME`, both forms in use: `SITE UTIME YYYYMMDDhhmmss path` and ProFTPD's
/// `SITE UTIME path atime mtime ctime UTC` (times as `YYYYMMDDhhmmss`); only the modification
/// time is kept (the store has no access or change time).
#[derive(Debug)]
pub struct Utime;

#[async_trait]
impl SiteCommandHandler<FtpBackend, FtpUser> for Utime {
    async fn handle(&self, ctx: &Context) -> Reply {
        let args = ctx.arguments.trim();
        let (mtime, path) = match parse_utime(args) {
            Some(parsed) => parsed,
            None => return Reply::new(
                ReplyCode::ParameterSyntaxError,
                "Usage: SITE UTIME YYYYMMDDhhmmss path, or SITE UTIME path atime mtime ctime UTC",
            ),
        };
        match set_mtime(ctx, &path, mtime).await {
            Ok(()) => Reply::new(ReplyCode::CommandOkay, "Modification time set"),
            Err(reply) => reply,
        }
    }
}

/// (modification time, path) of a `SITE UTIME` argument.
fn parse_utime(args: &str) -> Option<(SystemTime, String)> {
    // ProFTPD's five-argument form: the path comes first and may contain spaces.
    let words: Vec<&str> = args.rsplitn(5, ' ').collect();
    if words.len() == 5 && words[0].eq_ignore_ascii_case("UTC") {
        let (mtime, path) = (words[2], words[4]);
        if let (Some(t), Some(_), Some(_)) = (
            parse_time(mtime),
            parse_time(words[1]),
            parse_time(words[3]),
        ) {
            return Some((t, path.to_string()));
        }
    }
    let (stamp, path) = args.split_once(' ')?;
    Some((parse_time(stamp)?, path.to_string()))
}

async fn set_mtime(ctx: &Context, path: &str, mtime: SystemTime) -> Result<(), Reply> {
    let Some(u) = user(ctx) else {
        return Err(Reply::new(ReplyCode::NotLoggedIn, "Not logged in"));
    };
    let cwd = UserPath::root();
    // Refused as every other storage refusal is: the one error mapping (`errors.rs`), answered
    // with the reason in the user's words (vendor/libunftp patch 0014).
    let refused = |e: storage_backend::StoreError| Reply::from(&super::errors::to_ftp(e));
    let joined = ctx.cwd.join(path);
    let p =
        u.fs.resolve(&cwd, joined.as_os_str().as_bytes())
            .map_err(refused)?;
    u.fs.set_mtime(&p, mtime).await.map_err(refused)
}

/// `YYYYMMDDHHMMSS` (optionally `.sss`), in UTC.
fn parse_time(stamp: &str) -> Option<SystemTime> {
    let digits = stamp.split('.').next()?;
    if digits.len() != 14 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| digits[r].parse::<u32>().ok();
    let (y, mo, d) = (n(0..4)? as i64, n(4..6)?, n(6..8)?);
    let (h, mi, s) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s);
    if secs >= 0 {
        Some(UNIX_EPOCH + Duration::from_secs(secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc() {
        let t = parse_time("20200102030405").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_577_934_245
        );
        assert_eq!(parse_time("19700101000000"), Some(UNIX_EPOCH));
        assert!(parse_time("2020010203040").is_none());
        assert!(parse_time("20201302030405").is_none());
    }

    #[test]
    fn both_utime_forms_parse() {
        let (t, p) = parse_utime("20200102030405 dir/a b.txt").unwrap();
        assert_eq!(
            (t, p.as_str()),
            (parse_time("20200102030405").unwrap(), "dir/a b.txt")
        );
        let (t, p) =
            parse_utime("a b.txt 20210101000000 20200102030405 20210101000000 UTC").unwrap();
        assert_eq!(
            (t, p.as_str()),
            (parse_time("20200102030405").unwrap(), "a b.txt")
        );
        assert!(parse_utime("nonsense").is_none());
    }
}
