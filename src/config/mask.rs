//! The effective configuration as TOML with its secrets masked, for `filegate check-config` and logs.

use storage_backend::mask_url_password;

use super::Config;

/// What a masked secret is shown as.
pub const MASKED: &str = "<masked>";
/// What a user's password hash is shown as.
pub const MASKED_HASH: &str = "<argon2id hash>";

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
