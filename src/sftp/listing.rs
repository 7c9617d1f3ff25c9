//! File attributes and `ls -l` long names as OpenSSH's sftp-server writes them.

use std::time::{SystemTime, UNIX_EPOCH};

use russh_sftp::protocol::{File, FileAttributes};
use storage_backend::Metadata;

pub fn attrs(meta: &Metadata) -> FileAttributes {
    let mtime = secs(meta.mtime);
    FileAttributes {
        size: Some(meta.size),
        uid: Some(0),
        user: None,
        gid: Some(0),
        group: None,
        permissions: Some(if meta.is_dir() { 0o040755 } else { 0o100644 }),
        atime: Some(mtime),
        mtime: Some(mtime),
    }
}

/// One directory entry with its `ls -l` line (`-rw-r--r--    1 alice    alice      1234 Nov 23 14:05 name`).
pub fn entry(name: &str, meta: &Metadata, owner: &str) -> File {
    let mode = if meta.is_dir() {
        "drwxr-xr-x"
    } else {
        "-rw-r--r--"
    };
    let longname = format!(
        "{mode} {:>4} {owner:<8} {owner:<8} {:>8} {} {name}",
        if meta.is_dir() { 2 } else { 1 },
        meta.size,
        ls_time(meta.mtime, SystemTime::now())
    );
    File {
        filename: name.to_string(),
        longname,
        attrs: attrs(meta),
    }
}

fn secs(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().min(u32::MAX as u64) as u32)
        .unwrap_or(0)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `ls`'s time column in UTC: `Nov 23 14:05` within six months, `Nov 23  2025` otherwise.
fn ls_time(t: SystemTime, now: SystemTime) -> String {
    let s = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil(s.div_euclid(86_400));
    let recent = now
        .duration_since(t)
        .map(|d| d.as_secs() < 182 * 86_400)
        .unwrap_or(true);
    if recent {
        let secs_of_day = s.rem_euclid(86_400);
        format!(
            "{} {d:>2} {:02}:{:02}",
            MONTHS[m - 1],
            secs_of_day / 3600,
            secs_of_day / 60 % 60
        )
    } else {
        format!("{} {d:>2}  {y}", MONTHS[m - 1])
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, usize, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m as usize, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_like_ls() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(19_000), (2022, 1, 8));
        assert_eq!(civil(-1), (1969, 12, 31));
        let t = UNIX_EPOCH + Duration::from_secs(1_763_906_700); // 2025-11-23 14:05 UTC
        assert_eq!(ls_time(t, t + Duration::from_secs(60)), "Nov 23 14:05");
        assert_eq!(
            ls_time(t, t + Duration::from_secs(400 * 86_400)),
            "Nov 23  2025"
        );
    }
}
