//! Redis URLs: the one parser for `storage.redis.url`, `storage.redis.urls` and
//! `storage.redis.sentinel_urls`. The gateway's configuration check calls [`parse`] and so does the
//! backend when it connects, so a URL the check accepts is one the backend can use, and the other
//! way round. Exported as `storage_backend::redis_url`.

use std::fmt;

use crate::error::{ErrorKind, StoreError};
use crate::mask::mask_url_password;

/// How to write a Redis URL: the fix every URL problem names.
pub const HOW_TO_WRITE: &str =
    "write redis://HOST:PORT/DB (rediss:// for TLS), such as \"redis://127.0.0.1:6379/0\"";

/// A Redis URL that cannot be used, with the configuration key it came from. Its password is masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrlError {
    key: String,
    shown: String,
    reason: String,
}

impl RedisUrlError {
    /// The configuration key the URL came from, such as `storage.redis.urls`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What is wrong and what to write instead, without the key:
    /// `"http://b" is not a Redis URL: …; write redis://HOST:PORT/DB …`.
    pub fn problem(&self) -> String {
        format!(
            "{:?} is not a Redis URL: {}; {HOW_TO_WRITE}",
            self.shown, self.reason
        )
    }
}

impl fmt::Display for RedisUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, self.problem())
    }
}

impl std::error::Error for RedisUrlError {}

impl From<RedisUrlError> for StoreError {
    fn from(e: RedisUrlError) -> StoreError {
        StoreError::new(ErrorKind::InvalidArgument, e.to_string())
    }
}

/// Parses the Redis URL found at configuration key `key`: `redis://` or `rediss://` (TLS), a host,
/// and what the Redis client accepts after it (port, database, user and password).
pub fn parse(key: &str, url: &str) -> Result<redis::ConnectionInfo, RedisUrlError> {
    let refuse = |reason: String| RedisUrlError {
        key: key.to_owned(),
        shown: mask_url_password(url),
        reason,
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(refuse(
            "it does not start with redis:// or rediss://".into(),
        ));
    };
    if !matches!(scheme, "redis" | "rediss") {
        return Err(refuse(format!(
            "the scheme is {scheme:?}, not redis or rediss"
        )));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(refuse("it names no host".into()));
    }
    redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| refuse(e.to_string()))
}

/// [`parse`], with `password` (read from a file) in place of the URL's own.
pub(crate) fn connection_info(
    key: &str,
    url: &str,
    password: Option<&str>,
) -> crate::error::Result<redis::ConnectionInfo> {
    let info = parse(key, url)?;
    Ok(match password {
        Some(p) => info
            .clone()
            .set_redis_settings(info.redis_settings().clone().set_password(p)),
        None => info,
    })
}

/// [`parse`] for each of `urls`, all found at `key`.
pub(crate) fn connection_infos(
    key: &str,
    urls: &[String],
) -> crate::error::Result<Vec<redis::ConnectionInfo>> {
    urls.iter()
        .map(|url| connection_info(key, url, None))
        .collect()
}

/// The Redis client refused the settings taken from `key` (shown as `shown`, passwords masked).
pub(crate) fn invalid_url(key: &str, shown: &str, e: impl fmt::Display) -> StoreError {
    RedisUrlError {
        key: key.to_owned(),
        shown: shown.to_owned(),
        reason: e.to_string(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "storage.redis.url";

    #[test]
    fn redis_urls_parse() {
        let info = parse(KEY, "redis://127.0.0.1:6379/2").unwrap();
        assert_eq!(info.redis_settings().db(), 2);
        assert!(matches!(info.addr(), redis::ConnectionAddr::Tcp(h, 6379) if h == "127.0.0.1"));
        let info = parse(KEY, "rediss://app:s3cret@redis.example:6380").unwrap();
        assert!(matches!(
            info.addr(),
            redis::ConnectionAddr::TcpTls { port: 6380, .. }
        ));
        assert_eq!(info.redis_settings().username(), Some("app"));
        assert_eq!(info.redis_settings().password(), Some("s3cret"));
        assert!(parse(KEY, "redis://[::1]").is_ok());
    }

    #[test]
    fn what_is_no_redis_url_is_refused_naming_the_key() {
        for (url, why) in [
            ("", "does not start with redis://"),
            ("127.0.0.1:6379", "does not start with redis://"),
            ("http://b", "the scheme is \"http\""),
            ("unix:///run/redis.sock", "the scheme is \"unix\""),
            ("redis://", "names no host"),
            ("redis://:pw@", "names no host"),
            ("redis://:6379/0", "names no host"),
            ("redis://h/x", "database"),
            ("redis://h:99999", "did not parse"),
        ] {
            let e = parse("storage.redis.urls", url).unwrap_err();
            assert_eq!(e.key(), "storage.redis.urls");
            assert!(e.problem().contains(why), "{url:?}: {e}");
            assert!(
                e.problem().starts_with(&format!(
                    "{:?} is not a Redis URL: ",
                    mask_url_password(url)
                )),
                "{e}"
            );
            assert!(e.problem().ends_with(HOW_TO_WRITE), "{e}");
            assert!(e.to_string().starts_with("storage.redis.urls \""), "{e}");
        }
    }

    #[test]
    fn messages_mask_the_password() {
        let e = parse(KEY, "redis://:s3cret@h/notadb").unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains("redis://:****@h/notadb"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let e = StoreError::from(e);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(!e.message().contains("s3cret"));
    }

    #[test]
    fn a_password_file_replaces_the_urls_password() {
        let info = connection_info(KEY, "redis://:inurl@h:1/0", Some("fromfile")).unwrap();
        assert_eq!(info.redis_settings().password(), Some("fromfile"));
        let info = connection_info(KEY, "redis://:inurl@h:1/0", None).unwrap();
        assert_eq!(info.redis_settings().password(), Some("inurl"));
        let infos = connection_infos(KEY, &["redis://a:1".into(), "redis://b:2".into()]).unwrap();
        assert_eq!(infos.len(), 2);
        assert!(connection_infos(KEY, &["redis://a:1".into(), "nope".into()]).is_err());
    }
}
