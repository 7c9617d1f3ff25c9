//! Homes (`users[].home`, `mqtt.anonymous_home`): parsed once, when the configuration is read, into
//! the [`StorePath`] the gateway runs on. Validation reports the parse's error; the accounts and the
//! broker take the parsed path. [`parse_home`] is the one rule for a home.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use storage_backend::StorePath;

/// The one rule for a home: a store path as [`StorePath::parse`] reads it, written plainly —
/// absolute, without `.`, `..`, `//`, `\` or NUL — so the directory used is the one written.
/// A trailing `/` is allowed (`/acme/` is `/acme`).
pub fn parse_home(raw: &str) -> Result<StorePath, HomeError> {
    if raw.is_empty() {
        return Err(HomeError::Empty);
    }
    if !raw.starts_with('/') {
        return Err(HomeError::NotAbsolute(raw.to_owned()));
    }
    if raw.contains(['\\', '\0']) {
        return Err(HomeError::NotPlain(raw.to_owned()));
    }
    let path = StorePath::parse(raw).map_err(|e| HomeError::Invalid(e.message().to_owned()))?;
    // The parse resolves `.`, `..` and `//`; a plain home is one it left as written.
    let as_written =
        path.as_str() == raw || (!path.is_root() && raw.strip_suffix('/') == Some(path.as_str()));
    if !as_written {
        return Err(HomeError::NotPlain(raw.to_owned()));
    }
    Ok(path)
}

/// Why a text is no home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HomeError {
    Empty,
    /// Does not start with `/` (the text).
    NotAbsolute(String),
    /// Has `.`, `..`, `//`, `\` or NUL (the text).
    NotPlain(String),
    /// The store refuses the path (a control character, a name or the path too long): its reason,
    /// which names the path.
    Invalid(String),
}

impl HomeError {
    /// What is wrong and what to write instead, such as `example` (`"/alice"`), for a
    /// configuration problem.
    pub fn problem(&self, example: &str) -> String {
        match self {
            HomeError::Empty => {
                format!("is empty; give the user's directory in the store, such as \"{example}\"")
            }
            HomeError::NotAbsolute(raw) => format!(
                "{raw:?} is not absolute; write it from the store's root, such as \"/{raw}\""
            ),
            HomeError::NotPlain(raw) => format!(
                "{raw:?} is not a plain path; leave out \".\", \"..\", \"//\", '\\' and NUL, such as \"{example}\""
            ),
            HomeError::Invalid(why) => {
                format!("{why}; write a plain absolute path such as \"{example}\"")
            }
        }
    }
}

impl fmt::Display for HomeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HomeError::Empty => f.write_str("is empty"),
            HomeError::NotAbsolute(raw) => write!(f, "{raw:?} is not absolute"),
            HomeError::NotPlain(raw) => write!(
                f,
                "{raw:?} is not a plain path (it has \".\", \"..\", \"//\", '\\' or NUL)"
            ),
            HomeError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for HomeError {}

/// A home as the configuration writes it, parsed by [`parse_home`] when it is made: TOML and
/// `filegate check-config` show the text, the gateway runs on [`Home::path`].
#[derive(Clone, PartialEq, Eq)]
pub struct Home {
    raw: String,
    parsed: Result<StorePath, HomeError>,
}

impl Home {
    pub fn new(raw: impl Into<String>) -> Home {
        let raw = raw.into();
        let parsed = parse_home(&raw);
        Home { raw, parsed }
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The store path, or why the text is none.
    pub fn path(&self) -> Result<&StorePath, &HomeError> {
        self.parsed.as_ref()
    }
}

impl Default for Home {
    fn default() -> Home {
        Home::new("")
    }
}

impl From<&str> for Home {
    fn from(raw: &str) -> Home {
        Home::new(raw)
    }
}

impl From<String> for Home {
    fn from(raw: String) -> Home {
        Home::new(raw)
    }
}

impl PartialEq<str> for Home {
    fn eq(&self, other: &str) -> bool {
        self.raw == other
    }
}

impl PartialEq<&str> for Home {
    fn eq(&self, other: &&str) -> bool {
        self.raw == *other
    }
}

impl fmt::Debug for Home {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.raw, f)
    }
}

impl fmt::Display for Home {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for Home {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for Home {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Home, D::Error> {
        String::deserialize(d).map(Home::new)
    }
}

/// For `deserialize_with`: a home given as free text ([`super::de::text`]: a number or a boolean
/// from an environment variable keeps its text).
pub fn deserialize_text<'de, D: Deserializer<'de>>(d: D) -> Result<Home, D::Error> {
    super::de::text::deserialize(d).map(Home::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        parse_home(raw).unwrap().as_str().to_owned()
    }

    #[test]
    fn plain_absolute_paths_are_homes() {
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/acme"), "/acme");
        assert_eq!(ok("/acme/"), "/acme");
        assert_eq!(ok("/home/alice"), "/home/alice");
        assert_eq!(ok("/a b/c-d_e.f"), "/a b/c-d_e.f");
    }

    #[test]
    fn other_texts_are_refused_with_the_reason() {
        assert_eq!(parse_home(""), Err(HomeError::Empty));
        assert_eq!(
            parse_home("acme"),
            Err(HomeError::NotAbsolute("acme".into()))
        );
        for raw in [
            "//", "/./", "/a//b", "/a//", "/a/./b", "/a/.", "/b/../c", "/a\\b", "/a\0b",
        ] {
            assert_eq!(
                parse_home(raw),
                Err(HomeError::NotPlain(raw.into())),
                "{raw:?}"
            );
        }
        for raw in ["/..", "/a\nb", &format!("/{}", "x".repeat(256))] {
            assert!(
                matches!(parse_home(raw), Err(HomeError::Invalid(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn problems_name_the_fix() {
        assert_eq!(
            HomeError::NotAbsolute("relative".into()).problem("/bob"),
            "\"relative\" is not absolute; write it from the store's root, such as \"/relative\""
        );
        let e = parse_home("/a\nb").unwrap_err();
        assert!(e.problem("/bob").contains("control character"), "{e}");
        assert!(e.problem("/bob").ends_with("such as \"/bob\""), "{e}");
    }

    #[test]
    fn a_home_keeps_its_text_and_its_path() {
        let home = Home::from("/acme/");
        assert_eq!(home, "/acme/");
        assert_eq!(home.path().unwrap().as_str(), "/acme");
        assert_eq!(format!("{home:?}"), "\"/acme/\"");
        assert!(Home::default().is_empty());
        assert_eq!(Home::default().path(), Err(&HomeError::Empty));
        let toml = toml::to_string(&std::collections::BTreeMap::from([("home", &home)])).unwrap();
        assert_eq!(toml, "home = \"/acme/\"\n");
    }
}
