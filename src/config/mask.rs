//! The effective configuration as TOML with its secrets masked, for `filegate check-config` and logs.

use super::Config;

/// What a masked secret is shown as.
pub const MASKED: &str = "<masked>";
/// What a user's password hash is shown as.
pub const MASKED_HASH: &str = "<argon2id hash>";

/// Replaces the password in a URL's user info: `redis://u:secret@h:6379/0` → `redis://u:****@h:6379/0`.
/// A URL without one is returned unchanged.
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

pub(super) fn to_masked_toml(config: &Config) -> String {
    let mut c = config.clone();
    let redis = &mut c.storage.redis;
    redis.url = mask_url_password(&redis.url);
    for url in redis.urls.iter_mut().chain(redis.sentinel_urls.iter_mut()) {
        *url = mask_url_password(url);
    }
    redis.password_from_file = None;
    c.mqtt.url = mask_url_password(&c.mqtt.url);
    if !c.mqtt.password.is_empty() {
        c.mqtt.password = MASKED.into();
    }
    c.mqtt.password_from_file = None;
    for hook in &mut c.webhooks {
        hook.url = mask_url_password(&hook.url);
        if !hook.secret.is_empty() {
            hook.secret = MASKED.into();
        }
        hook.secret_from_file = None;
    }
    for user in &mut c.users {
        if !user.password_hash.is_empty() {
            user.password_hash = MASKED_HASH.into();
        }
    }
    toml::to_string(&c).expect("the configuration serializes to TOML")
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
}
