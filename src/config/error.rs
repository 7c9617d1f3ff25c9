//! Configuration errors: a file that cannot be read, or a list of problems each naming its key.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration cannot be used. Both kinds mean exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read (missing, unreadable, not UTF-8).
    #[error(
        "cannot read the config file {}; run filegate from the directory that holds config/, \
         or pass --config PATH",
        path.display()
    )]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Keys with unknown names or invalid values; never empty.
    #[error("{}", ProblemList(problems))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    /// The problems found, empty for [`ConfigError::ReadFile`].
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::ReadFile { .. } => &[],
            ConfigError::Invalid { problems } => problems,
        }
    }
}

/// One thing wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key as written in TOML: `storage.chunk_size`, `users[1].name`; empty for the file as a whole.
    pub key: String,
    /// Where the value came from: the config file's path or `FILEGATE__…` variable name; `None`
    /// when the value is a built-in default.
    pub origin: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            origin: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.origin, self.key.is_empty()) {
            (Some(origin), true) => write!(f, "{origin}: {}", self.message),
            (Some(origin), false) if origin.starts_with(super::ENV_PREFIX) => {
                write!(f, "{} (set by {origin}): {}", self.key, self.message)
            }
            (Some(origin), false) => write!(f, "{} (in {origin}): {}", self.key, self.message),
            (None, _) => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration, {} problems:", many.len())?;
                for problem in many {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}
