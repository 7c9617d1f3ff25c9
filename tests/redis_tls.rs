//! Redis over TLS (`rediss://`): a private redis-server serving TLS only, with a certificate from
//! `filegate gen-cert`, trusted by the gateway through `SSL_CERT_FILE` (the system roots otherwise).
//! A file goes up and comes back through the gateway binary; a password comes from password_file.

mod common;

use std::process::Command;

use common::binary::{Binary, BIN, SECRET};
use common::{content, program};
use test_support::{free_port, RedisServer};

#[test]
fn the_gateway_talks_to_redis_over_tls_with_a_password() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (
        certs.path().join("redis.crt"),
        certs.path().join("redis.key"),
    );
    let made = Command::new(BIN)
        .args(["gen-cert", "--host", "localhost", "--host", "127.0.0.1"])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let tls_port = free_port().to_string();
    let redis = RedisServer::start_with(&[
        "--port",
        "0",
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-ca-cert-file",
        cert.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "redis-pass",
    ]);
    let password_file = certs.path().join("redis-password");
    std::fs::write(&password_file, "redis-pass\n").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let gw = Binary::start_wrapped(
        dir.path(),
        "",
        None,
        Some(&format!(
            "export SSL_CERT_FILE={} FILEGATE__STORAGE__BACKEND=redis \
             FILEGATE__STORAGE__REDIS__URL=rediss://localhost:{tls_port}/0 \
             FILEGATE__STORAGE__REDIS__PASSWORD_FILE={} FILEGATE__MQTT__MODE=off",
            cert.display(),
            password_file.display()
        )),
    );
    let data = content(9, 700_000);
    let up = dir.path().join("up.bin");
    std::fs::write(&up, &data).unwrap();
    let url = format!("ftp://ops:{SECRET}@{}/tls.bin", gw.ftp);
    let put = Command::new(program("curl"))
        .args(["-sS", "-T"])
        .arg(&up)
        .arg(&url)
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}");
    let get = Command::new(program("curl"))
        .args(["-sS"])
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        get.status.success() && get.stdout == data,
        "{:?}",
        get.status
    );
    drop(gw);
    drop(redis);
}
