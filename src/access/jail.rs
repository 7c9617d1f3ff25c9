//! Path canonicalisation inside a user's home: whatever a client sends, the result is a path in
//! the home or a clear refusal.
//!
//! Client paths are resolved against the session's working directory like a chroot: `.` and empty
//! segments vanish, `..` climbs but never above the home's root, backslashes count as separators
//! (Windows clients send them). Nothing is percent-decoded: `%2e%2e` is a name, not `..`.
//!
//! Every protocol's names pass here, so the name rules live here: UTF-8 only, no control
//! characters, at most [`MAX_NAME_BYTES`] per name and [`MAX_PATH_BYTES`] per path (POSIX's
//! `NAME_MAX` and `PATH_MAX`), as `docs/security.md` documents.

use storage_backend::{ErrorKind, StoreError, StorePath, MAX_NAME_BYTES, MAX_PATH_BYTES};

/// A path as the user sees it: absolute within their home (`/` is the home itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserPath(String);

impl UserPath {
    pub fn root() -> Self {
        UserPath("/".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    pub fn file_name(&self) -> Option<&str> {
        (!self.is_root()).then(|| self.0.rsplit('/').next().unwrap_or(""))
    }

    pub fn parent(&self) -> UserPath {
        match self.0.rfind('/') {
            Some(0) | None => UserPath::root(),
            Some(i) => UserPath(self.0[..i].to_string()),
        }
    }

    /// `name` inside this directory, when it is an acceptable name (the rules of [`check_name`]);
    /// for names that arrive on their own, as in SCP's headers.
    pub fn child(&self, name: &str) -> Result<UserPath, StoreError> {
        check_name(name)?;
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
            return Err(refuse(format!("{name:?} is not a file name")));
        }
        let child = self.join(name);
        if child.0.len() > MAX_PATH_BYTES {
            return Err(refuse(format!(
                "the path is {} bytes long; the limit is {MAX_PATH_BYTES}",
                child.0.len()
            )));
        }
        Ok(child)
    }

    pub fn join(&self, name: &str) -> UserPath {
        if self.is_root() {
            UserPath(format!("/{name}"))
        } else {
            UserPath(format!("{}/{name}", self.0))
        }
    }
}

impl std::fmt::Display for UserPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Resolves `input` (bytes as the client sent them) against `cwd` into a path in the home.
pub fn resolve(cwd: &UserPath, input: &[u8]) -> Result<UserPath, StoreError> {
    let text = std::str::from_utf8(input).map_err(|_| not_utf8())?;
    resolve_str(cwd, text)
}

fn not_utf8() -> StoreError {
    refuse("the path is not valid UTF-8; file names must be UTF-8".into())
}

/// The characters a path or name may hold.
fn check_chars(text: &str) -> Result<(), StoreError> {
    // The protocol libraries decode names lossily (russh-sftp and libunftp turn invalid bytes
    // into U+FFFD before we see them): a replacement character means the client sent bytes that
    // are not UTF-8, and storing the mangled name would lose the real one.
    if text.contains(char::REPLACEMENT_CHARACTER) {
        return Err(not_utf8());
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        let what = if c == '\0' {
            "a NUL byte".to_string()
        } else {
            format!("the control character {c:?}")
        };
        return Err(refuse(format!("file names may not contain {what}")));
    }
    Ok(())
}

/// The rules for one name (a path segment): its characters and its length.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    check_chars(name)?;
    if name.len() > MAX_NAME_BYTES {
        return Err(refuse(format!(
            "a name is {} bytes long; the limit is {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    Ok(())
}

pub fn resolve_str(cwd: &UserPath, text: &str) -> Result<UserPath, StoreError> {
    check_chars(text)?;
    if text.len() > MAX_PATH_BYTES {
        return Err(refuse(format!(
            "the path is {} bytes long; the limit is {MAX_PATH_BYTES}",
            text.len()
        )));
    }
    let text = text.replace('\\', "/");
    let mut segments: Vec<&str> = if text.starts_with('/') {
        Vec::new()
    } else {
        cwd.0.split('/').filter(|s| !s.is_empty()).collect()
    };
    for seg in text.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            name => {
                check_name(name)?;
                segments.push(name)
            }
        }
    }
    Ok(UserPath(format!("/{}", segments.join("/"))))
}

/// The store path of `path` in `home`.
pub fn to_store(home: &StorePath, path: &UserPath) -> Result<StorePath, StoreError> {
    let mut out = home.clone();
    for seg in path.0.split('/').filter(|s| !s.is_empty()) {
        out = out.join(seg)?;
    }
    Ok(out)
}

fn refuse(message: String) -> StoreError {
    StoreError::new(ErrorKind::InvalidPath, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cwd: &str, input: &str) -> String {
        resolve_str(&UserPath(cwd.into()), input).unwrap().0
    }

    #[test]
    fn never_leaves_home() {
        for (cwd, input, want) in [
            ("/", "..", "/"),
            ("/", "../../etc/passwd", "/etc/passwd"),
            ("/a/b", "../../..", "/"),
            ("/a", "/../x", "/x"),
            ("/a", "b/../../../c", "/c"),
            ("/", "..\\..\\windows", "/windows"),
            ("/", "//x//y/", "/x/y"),
            ("/", "./x/./y", "/x/y"),
            ("/a", "%2e%2e/x", "/a/%2e%2e/x"),
            ("/a", "", "/a"),
            ("/a", "c", "/a/c"),
        ] {
            assert_eq!(r(cwd, input), want, "{cwd} + {input}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        let root = UserPath::root();
        for bad in ["a\0b", "a\nb", "x\r\nDELE y"] {
            assert_eq!(
                resolve_str(&root, bad).unwrap_err().kind(),
                ErrorKind::InvalidPath
            );
        }
        assert_eq!(
            resolve(&root, b"\xff\xfe").unwrap_err().kind(),
            ErrorKind::InvalidPath
        );
        // What a lossy decoder made of invalid bytes.
        let lossy = String::from_utf8_lossy(b"bad\xffname").to_string();
        assert_eq!(
            resolve_str(&root, &lossy).unwrap_err().kind(),
            ErrorKind::InvalidPath
        );
        let long = "n".repeat(256);
        assert_eq!(
            resolve_str(&root, &long).unwrap_err().kind(),
            ErrorKind::InvalidPath
        );
        assert_eq!(
            resolve_str(&root, &"a/".repeat(2100)).unwrap_err().kind(),
            ErrorKind::InvalidPath
        );
    }

    #[test]
    fn maps_into_the_home() {
        let home = StorePath::parse("/demo").unwrap();
        let p = resolve_str(&UserPath::root(), "../../x/y").unwrap();
        assert_eq!(to_store(&home, &p).unwrap().as_str(), "/demo/x/y");
        assert_eq!(
            to_store(&home, &UserPath::root()).unwrap().as_str(),
            "/demo"
        );
        let root_home = StorePath::root();
        assert_eq!(to_store(&root_home, &p).unwrap().as_str(), "/x/y");
    }
}
