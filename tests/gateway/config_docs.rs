//! docs/configuration.md documents every configuration key the code knows, with its default and its
//! environment variable, so the two cannot drift apart.

use filegate::config::{Config, UserConfig, WebhookConfig};

/// Every leaf key under `value` with its default, dotted (`ftp.tls.enabled`).
fn leaves(prefix: &str, value: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&key, v, out);
            }
        }
        v => out.push((prefix.to_string(), v.clone())),
    }
}

fn documented_keys() -> Vec<(String, toml::Value)> {
    let mut config = toml::Value::try_from(Config::default()).unwrap();
    config.as_table_mut().unwrap().remove("users");
    config.as_table_mut().unwrap().remove("webhooks");
    let mut keys = Vec::new();
    leaves("", &config, &mut keys);
    let user = toml::Value::try_from(UserConfig::default()).unwrap();
    leaves("users[]", &user, &mut keys);
    let hook = toml::Value::try_from(WebhookConfig::default()).unwrap();
    leaves("webhooks[]", &hook, &mut keys);
    keys
}

fn env_var(key: &str) -> String {
    format!("FILEGATE__{}", key.replace('.', "__").to_ascii_uppercase())
}

#[test]
fn every_key_is_documented_with_its_default_and_variable() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
    let mut missing = Vec::new();
    for (key, default) in documented_keys() {
        let default = default.to_string();
        let env = if key.starts_with("users[]") || key.starts_with("webhooks[]") {
            "—".to_string()
        } else {
            format!("`{}`", env_var(&key))
        };
        let want = format!("| `{key}` | `{default}` | {env} |");
        if !rows.iter().any(|r| r.starts_with(&want)) {
            missing.push(want);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks (or has a wrong default or variable for) these rows:\n{}",
        missing.join("\n")
    );
    // And documents nothing the code does not know.
    let known: Vec<String> = documented_keys().into_iter().map(|(k, _)| k).collect();
    for row in rows {
        let key = row.trim_start_matches("| `").split('`').next().unwrap();
        assert!(
            known.iter().any(|k| k == key),
            "docs/configuration.md documents unknown key {key}"
        );
    }
}
