//! Passwords in URLs, masked for logs and messages: the one masking rule for every URL the
//! gateway shows (Redis, MQTT, webhooks), in the store's messages and the gateway's alike.

/// Replaces the password in a URL's user info: `redis://u:secret@h:6379/0` → `redis://u:****@h:6379/0`.
/// A URL without one (or text that is no URL) is returned unchanged.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:****@{host}{tail}"),
        None => url.to_owned(),
    }
}

/// Several URLs for one line, each masked by [`mask_url_password`], separated by `", "`.
pub fn mask_url_list<S: AsRef<str>>(urls: &[S]) -> String {
    urls.iter()
        .map(|u| mask_url_password(u.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(
            mask_url_password("redis://:s3cret@redis:6379/0"),
            "redis://:****@redis:6379/0"
        );
        assert_eq!(
            mask_url_password("rediss://app:s3cret@redis.example:6380"),
            "rediss://app:****@redis.example:6380"
        );
        assert_eq!(
            mask_url_password("mqtt://u:p@w@broker:1883/x?y"),
            "mqtt://u:****@broker:1883/x?y"
        );
        assert_eq!(
            mask_url_password("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(mask_url_password("not a url"), "not a url");
    }

    /// The storage crate's former `mask_url` cases, in the one format (`:****@`, was `:***@`).
    #[test]
    fn masks_passwords() {
        assert_eq!(
            mask_url_password("redis://:secret@h:1/0"),
            "redis://:****@h:1/0"
        );
        assert_eq!(mask_url_password("rediss://u:p@h"), "rediss://u:****@h");
        assert_eq!(mask_url_password("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn a_user_without_a_password_is_kept() {
        assert_eq!(
            mask_url_password("https://hook@ingest.example/in"),
            "https://hook@ingest.example/in"
        );
        // An '@' after the authority (in the path or query) is no user info.
        assert_eq!(
            mask_url_password("https://h.example/a:b@c"),
            "https://h.example/a:b@c"
        );
    }

    #[test]
    fn lists_are_masked_and_joined() {
        assert_eq!(
            mask_url_list(&["redis://:pw@a:1", "redis://b:2"]),
            "redis://:****@a:1, redis://b:2"
        );
        assert_eq!(mask_url_list::<String>(&[]), "");
    }
}
