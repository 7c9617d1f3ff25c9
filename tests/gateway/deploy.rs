//! The deployment files (there is no Docker engine here to run them): docker-compose.yml, the
//! Dockerfile and the configuration they use must agree with each other and with the code.

use std::path::Path;

use serde_yaml::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Container ports a service publishes: "127.0.0.1:2121:2121" → 2121; ranges expanded.
fn published(service: &Value) -> Vec<u16> {
    let mut ports = Vec::new();
    for spec in strings(&service["ports"]) {
        let parts: Vec<&str> = spec.split(':').collect();
        assert_eq!(
            parts.len(),
            3,
            "{spec}: publish on an explicit host address (loopback by default)"
        );
        assert_eq!(parts[0], "127.0.0.1", "{spec}: loopback by default");
        let (host, container) = (parts[1], parts[2]);
        assert_eq!(host, container, "{spec}: same port inside and out");
        match container.split_once('-') {
            Some((a, b)) => ports.extend(a.parse::<u16>().unwrap()..=b.parse::<u16>().unwrap()),
            None => ports.push(container.parse().unwrap()),
        }
    }
    ports
}

#[test]
fn compose_ports_volumes_and_config_agree() {
    let compose: Value = serde_yaml::from_str(&read("docker-compose.yml")).unwrap();
    let services = &compose["services"];
    let gateway = &services["filegate"];
    let redis = &services["redis"];
    let mosquitto = &services["mosquitto"];
    for (name, s) in [
        ("filegate", gateway),
        ("redis", redis),
        ("mosquitto", mosquitto),
    ] {
        assert!(s.is_mapping(), "service {name} missing");
    }

    // Every bind-mounted file exists in the repository.
    for s in [gateway, redis, mosquitto] {
        for volume in strings(&s["volumes"]) {
            if let Some(rel) = volume.strip_prefix("./") {
                let host = rel.split(':').next().unwrap();
                assert!(
                    repo().join(host).exists(),
                    "{volume}: {host} does not exist"
                );
            }
        }
    }
    let mounted_config = strings(&gateway["volumes"])
        .into_iter()
        .find(|v| v.starts_with("./config/docker.toml:"))
        .expect("the gateway's config is mounted");
    let config_in_container = mounted_config.split(':').nth(1).unwrap();

    // The configuration the container runs loads, with the secret file compose provides.
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "pw\n").unwrap();
    let env_secret = gateway["environment"]["FILEGATE__MQTT__PASSWORD_FILE"]
        .as_str()
        .expect("the MQTT password comes from a file");
    assert!(env_secret.starts_with("/run/secrets/"));
    let secret_name = env_secret.trim_start_matches("/run/secrets/");
    assert!(strings(&gateway["secrets"]).contains(&secret_name.to_string()));
    assert!(compose["secrets"][secret_name]["file"].is_string());
    let secret_env = (
        "FILEGATE__MQTT__PASSWORD_FILE".to_string(),
        secret.path().display().to_string(),
    );
    // Without compose's word that the ports are on the host's loopback only (a plain
    // `docker run -p`), the demo user on 0.0.0.0 is refused, naming how to add a user.
    let refused =
        filegate::config::Config::load(&repo().join("config/docker.toml"), [secret_env.clone()])
            .expect_err("the demo user on 0.0.0.0 without server.allow_demo_user");
    let text = refused.to_string();
    assert!(
        text.contains("users[0].password_hash") && text.contains("filegate hash-password"),
        "{text}"
    );
    let allow = gateway["environment"]["FILEGATE__SERVER__ALLOW_DEMO_USER"]
        .as_str()
        .expect("compose allows the demo user (its ports are on loopback)");
    assert_eq!(allow, "true");
    let config = filegate::config::Config::load(
        &repo().join("config/docker.toml"),
        [
            secret_env,
            (
                "FILEGATE__SERVER__ALLOW_DEMO_USER".to_string(),
                allow.to_string(),
            ),
        ],
    )
    .unwrap_or_else(|e| panic!("config/docker.toml: {e}"));
    for port in strings(&gateway["ports"]) {
        assert!(
            port.starts_with("127.0.0.1:"),
            "{port}: published beyond the host's loopback while the demo user is allowed"
        );
    }

    // What the gateway listens on is what compose publishes, and nothing else.
    let mut wanted: Vec<u16> = vec![
        config.ftp.listen.port(),
        config.sftp.listen.port(),
        config.http.listen.port(),
    ];
    wanted.extend(config.ftp.passive_ports.clone());
    wanted.sort_unstable();
    let mut ports = published(gateway);
    ports.sort_unstable();
    assert_eq!(ports, wanted);
    for addr in [config.ftp.listen, config.sftp.listen, config.http.listen] {
        assert!(
            addr.ip().is_unspecified(),
            "{addr}: inside a container the gateway must listen on all interfaces"
        );
    }
    assert_eq!(config.ftp.passive_host, "127.0.0.1");

    // Storage and broker are the compose services, with persistence.
    assert_eq!(
        config.storage.backend,
        filegate::config::StorageBackend::Redis
    );
    assert_eq!(config.storage.redis.url, "redis://redis:6379/0");
    let redis_command = strings(&redis["command"]).join(" ");
    assert!(
        redis_command.contains("--appendonly yes"),
        "{redis_command}"
    );
    assert_eq!(config.mqtt.mode, filegate::config::MqttMode::External);
    assert_eq!(config.mqtt.url, "mqtt://mosquitto:1883");
    assert_eq!(published(mosquitto), vec![1883]);
    let mosquitto_conf = read("config/mosquitto.conf");
    assert!(mosquitto_conf.contains("listener 1883"));
    assert!(mosquitto_conf.contains("allow_anonymous false"));
    assert!(mosquitto_conf.contains("persistence true"));
    assert!(
        published(redis).is_empty(),
        "Redis stays on the compose network"
    );

    // The image runs that config as a non-root user and exposes the same ports.
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains(&format!("\"--config\", \"{config_in_container}\"")),
        "the Dockerfile's CMD uses {config_in_container}"
    );
    assert!(dockerfile.contains("COPY config/docker.toml"));
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image sets a USER");
    assert_ne!(user.trim(), "root");
    let expose = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap();
    for port in ["2121", "2222", "9090", "30000-30009"] {
        assert!(
            expose.split_whitespace().any(|p| p == port),
            "EXPOSE lacks {port}"
        );
    }
    // The image stops on SIGTERM, and compose gives it longer than the shutdown grace.
    let grace = gateway["stop_grace_period"].as_str().unwrap();
    let grace = humantime::parse_duration(grace).unwrap();
    assert!(grace > config.server.shutdown_grace);
    assert!(read(".gitignore").lines().any(|l| l == "secrets/"));
}
