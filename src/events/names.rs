//! Temporary upload names (`[events] temp_patterns`): shell-style patterns (`*`, `?`) matched
//! against a path's last segment.

#[derive(Debug, Clone, Default)]
pub struct TempNames {
    patterns: Vec<String>,
}

impl TempNames {
    pub fn new(patterns: &[String]) -> Self {
        TempNames {
            patterns: patterns.to_vec(),
        }
    }

    /// Whether the file at `path` has a temporary name. The staging directory of resumable
    /// uploads (`crate::access::STAGING_DIR`) is temporary whatever the patterns say: its files
    /// are announced only when they are published under their real name.
    pub fn matches(&self, path: &str) -> bool {
        if crate::access::is_staging(path) {
            return true;
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        self.patterns
            .iter()
            .any(|p| glob(p.as_bytes(), name.as_bytes()))
    }
}

/// `*` matches any run of characters (bytes), `?` one; everything else itself.
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = n;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            n = mark;
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_patterns_on_the_last_segment() {
        let t = TempNames::new(&[
            "*.filepart".into(),
            "*.tmp".into(),
            ".~lock.*#".into(),
            "x?y".into(),
        ]);
        assert!(t.matches("/a/report.csv.filepart"));
        assert!(t.matches("/a/b.tmp"));
        assert!(t.matches("/.~lock.doc.odt#"));
        assert!(t.matches("/xzy"));
        assert!(!t.matches("/a/report.csv"));
        assert!(!t.matches("/dir.tmp/file"));
        assert!(!t.matches("/a/b.tmpx"));
        assert!(glob(b"*", b""));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
    }

    #[test]
    fn the_defaults_catch_client_temp_names_and_spare_real_files() {
        let t = TempNames::new(&crate::config::EventsConfig::default().temp_patterns);
        for temp in [
            "report.csv.filepart",         // WinSCP
            "report.csv.a1b2c3d4.partial", // rclone 1.63+
            ".in.report.csv",              // lftp xfer:use-temp-file
            ".report.csv.Xy3Ab9",          // rsync
            ".goutputstream-4ZQ2B1",       // gedit
            ".notes.txt.swp",              // vim swap
            ".notes.txt.swo",
            "4913",        // vim write test
            "notes.txt~",  // vim/emacs backup
            "#notes.txt#", // emacs auto-save
        ] {
            assert!(
                t.matches(&format!("/d/{temp}")),
                "{temp} is a temporary name"
            );
        }
        for real in [
            "report.csv",
            ".profile",
            ".gitignore",
            ".env.local",
            ".eslintrc.json",
            "in.csv",
            "4913.csv",
            "notes.txt",
            "a#b",
            "archive.tar.gz",
            ".config",
        ] {
            assert!(!t.matches(&format!("/d/{real}")), "{real} is a final name");
        }
    }
}
