//! Store paths: absolute, normalised, and checked once so that no backend ever sees a bad name.

use std::fmt;

use crate::error::{ErrorKind, Result, StoreError};

/// Longest name of one path segment, in bytes (as in POSIX `NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;
/// Longest whole path, in bytes (as in POSIX `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// An absolute path in the store: `/` or `/a/b`, with no empty, `.` or `..` segments left.
///
/// Parsing resolves `.` and `..` lexically and collapses `//`, but refuses anything that would climb
/// above the root, so a `StorePath` can always be trusted.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath(String);

impl StorePath {
    pub fn root() -> Self {
        StorePath("/".into())
    }

    /// Parses an absolute path given as bytes (SFTP and FTP hand over bytes; invalid UTF-8 is refused).
    pub fn from_bytes(raw: &[u8]) -> Result<Self> {
        let s = std::str::from_utf8(raw).map_err(|_| {
            StoreError::new(
                ErrorKind::InvalidPath,
                "path is not valid UTF-8; file names must be UTF-8",
            )
        })?;
        Self::parse(s)
    }

    /// Parses an absolute path.
    pub fn parse(raw: &str) -> Result<Self> {
        if !raw.starts_with('/') {
            return Err(invalid(raw, "must be absolute (start with '/')"));
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(StoreError::new(
                ErrorKind::InvalidPath,
                format!(
                    "path is {} bytes long; the limit is {MAX_PATH_BYTES}",
                    raw.len()
                ),
            ));
        }
        let mut segments: Vec<&str> = Vec::new();
        for seg in raw.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    if segments.pop().is_none() {
                        return Err(invalid(raw, "'..' would leave the root directory"));
                    }
                }
                name => {
                    check_name(name)?;
                    segments.push(name);
                }
            }
        }
        let mut out = String::with_capacity(raw.len());
        for seg in &segments {
            out.push('/');
            out.push_str(seg);
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok(StorePath(out))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The path without its leading slash (`""` for the root): the form the backends use.
    pub(crate) fn relative(&self) -> &str {
        &self.0[1..]
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.relative().split('/').filter(|s| !s.is_empty())
    }

    pub fn depth(&self) -> usize {
        self.segments().count()
    }

    pub fn parent(&self) -> Option<StorePath> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.rfind('/').unwrap_or(0);
        Some(if cut == 0 {
            StorePath::root()
        } else {
            StorePath(self.0[..cut].to_string())
        })
    }

    /// The last segment; `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            None
        } else {
            self.0.rsplit('/').next()
        }
    }

    /// Appends one validated name (no slashes, no `.`/`..`).
    pub fn join(&self, name: &str) -> Result<StorePath> {
        if name == "." || name == ".." || name.contains('/') {
            return Err(invalid(name, "a name may not be '.', '..' or contain '/'"));
        }
        check_name(name)?;
        let joined = if self.is_root() {
            format!("/{name}")
        } else {
            format!("{}/{name}", self.0)
        };
        if joined.len() > MAX_PATH_BYTES {
            return Err(StoreError::new(
                ErrorKind::InvalidPath,
                format!(
                    "path would be {} bytes long; the limit is {MAX_PATH_BYTES}",
                    joined.len()
                ),
            ));
        }
        Ok(StorePath(joined))
    }

    /// True when `self` is `other` or lies below it (segment-wise: `/ab` is not below `/a`).
    pub fn starts_with(&self, other: &StorePath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.len() > MAX_NAME_BYTES {
        return Err(StoreError::new(
            ErrorKind::InvalidPath,
            format!(
                "name {:?}... is {} bytes long; the limit is {MAX_NAME_BYTES}",
                name.chars().take(32).collect::<String>(),
                name.len()
            ),
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        let what = if c == '\0' {
            "a NUL byte".to_string()
        } else {
            format!("the control character {c:?}")
        };
        return Err(invalid(name, &format!("names may not contain {what}")));
    }
    Ok(())
}

fn invalid(path: &str, why: &str) -> StoreError {
    StoreError::new(
        ErrorKind::InvalidPath,
        format!("invalid path {path:?}: {why}"),
    )
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        StorePath::parse(s).unwrap().as_str().to_string()
    }

    fn kind(s: &str) -> ErrorKind {
        StorePath::parse(s).unwrap_err().kind()
    }

    #[test]
    fn normalises() {
        assert_eq!(p("/"), "/");
        assert_eq!(p("//"), "/");
        assert_eq!(p("/a//b/"), "/a/b");
        assert_eq!(p("/a/./b"), "/a/b");
        assert_eq!(p("/a/../b"), "/b");
        assert_eq!(p("/a/b/.."), "/a");
        assert_eq!(p("/a/.."), "/");
        assert_eq!(p("/a\\b"), "/a\\b");
    }

    #[test]
    fn refuses_bad_paths() {
        assert_eq!(kind(""), ErrorKind::InvalidPath);
        assert_eq!(kind("a/b"), ErrorKind::InvalidPath);
        assert_eq!(kind("/.."), ErrorKind::InvalidPath);
        assert_eq!(kind("/a/../.."), ErrorKind::InvalidPath);
        assert_eq!(kind("/a\0b"), ErrorKind::InvalidPath);
        assert_eq!(kind("/a\nb"), ErrorKind::InvalidPath);
        assert_eq!(kind("/a\rb"), ErrorKind::InvalidPath);
        assert_eq!(
            kind(&format!("/{}", "x".repeat(256))),
            ErrorKind::InvalidPath
        );
        assert!(StorePath::parse(&format!("/{}", "x".repeat(255))).is_ok());
        let long = "/abcdefgh".repeat(500);
        assert_eq!(kind(&long), ErrorKind::InvalidPath);
        let err = StorePath::from_bytes(b"/a\xffb").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidPath);
        assert!(err.message().contains("UTF-8"));
    }

    #[test]
    fn parent_name_join() {
        let a = StorePath::parse("/x/y/z").unwrap();
        assert_eq!(a.parent().unwrap().as_str(), "/x/y");
        assert_eq!(a.file_name(), Some("z"));
        assert_eq!(
            StorePath::parse("/x").unwrap().parent().unwrap().as_str(),
            "/"
        );
        assert!(StorePath::root().parent().is_none());
        assert_eq!(StorePath::root().join("q").unwrap().as_str(), "/q");
        assert_eq!(a.join("q").unwrap().as_str(), "/x/y/z/q");
        assert!(a.join("..").is_err());
        assert!(a.join("a/b").is_err());
        assert_eq!(a.segments().collect::<Vec<_>>(), ["x", "y", "z"]);
        assert_eq!(StorePath::root().segments().count(), 0);
    }

    #[test]
    fn starts_with_is_segment_wise() {
        let ab = StorePath::parse("/ab").unwrap();
        let a = StorePath::parse("/a").unwrap();
        let a_b = StorePath::parse("/a/b").unwrap();
        assert!(!ab.starts_with(&a));
        assert!(a_b.starts_with(&a));
        assert!(a.starts_with(&a));
        assert!(a.starts_with(&StorePath::root()));
    }
}
