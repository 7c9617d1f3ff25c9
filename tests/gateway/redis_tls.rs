//! Redis over TLS (`rediss://`) with a password, on every topology: a standalone TLS-only
//! redis-server, a Redis Cluster whose clients, replication and cluster bus speak TLS only, and a
//! Sentinel setup whose sentinels, master and replica speak TLS only. Certificates come from
//! `filegate gen-cert` and are trusted by the gateway through `SSL_CERT_FILE`; the password comes
//! from `storage.redis.password_file`. Files go up and come back through the gateway binary, and on
//! the cluster and Sentinel the gateway goes on working after the master is killed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::binary::{cluster_env, curl_get, curl_put, list_env, Binary, BIN};
use crate::common::content;
use test_support::{RedisCluster, RedisSentinel, RedisServer, RedisTls, SENTINEL_MASTER_NAME};

const PASSWORD: &str = "redis-pass";

/// A certificate for localhost/127.0.0.1 made by the gateway binary, and the password file.
fn tls_files(dir: &Path) -> RedisTls {
    let (cert, key) = (dir.join("redis.crt"), dir.join("redis.key"));
    let made = Command::new(BIN)
        .args(["gen-cert", "--host", "localhost", "--host", "127.0.0.1"])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    std::fs::write(dir.join("redis-password"), format!("{PASSWORD}\n")).unwrap();
    RedisTls {
        cert,
        key,
        password: PASSWORD.into(),
    }
}

/// A gateway binary whose storage settings are `storage` (`FILEGATE__…` assignments), trusting
/// the test certificate and reading the Redis password from its file.
fn gateway(dir: &Path, tls: &RedisTls, storage: &str) -> Binary {
    Binary::start_wrapped(
        dir,
        "",
        None,
        Some(&format!(
            "export SSL_CERT_FILE={} FILEGATE__STORAGE__REDIS__PASSWORD_FILE={} \
             FILEGATE__MQTT__MODE=off {storage}",
            tls.cert.display(),
            tls.cert.with_file_name("redis-password").display(),
        )),
    )
}

fn put(ftp: SocketAddr, path: &str, data: &[u8], scratch: &Path) -> bool {
    std::fs::write(scratch, data).unwrap();
    curl_put(ftp, path, scratch)
}

/// Uploads files of several chunks and checks each comes back byte for byte.
fn round_trips(ftp: SocketAddr, scratch: &Path, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = (0..4u8)
        .map(|i| {
            let path = format!("/{prefix}-{i}.bin");
            (path, content(i, 700_000 + i as usize * 1_100_000))
        })
        .collect();
    for (path, data) in &files {
        assert!(put(ftp, path, data, scratch), "upload of {path} failed");
    }
    for (path, data) in &files {
        assert!(
            curl_get(ftp, path).as_deref() == Some(data.as_slice()),
            "{path} did not come back intact"
        );
    }
    files
}

/// After the master was killed: uploads through the same gateway succeed again within a minute,
/// and every file uploaded before comes back intact.
fn serves_again(ftp: SocketAddr, scratch: &Path, before: &[(String, Vec<u8>)]) -> Duration {
    let started = Instant::now();
    let data = content(77, 1_500_000);
    let mut attempt = 0;
    while !put(ftp, &format!("/after-{attempt}.bin"), &data, scratch) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no upload succeeded within a minute of the master's death"
        );
        attempt += 1;
    }
    assert_eq!(
        curl_get(ftp, &format!("/after-{attempt}.bin")).as_deref(),
        Some(data.as_slice())
    );
    for (path, data) in before {
        assert!(
            curl_get(ftp, path).as_deref() == Some(data.as_slice()),
            "{path} was damaged by the failover"
        );
    }
    started.elapsed()
}

#[test]
fn the_gateway_talks_to_redis_over_tls_with_a_password() {
    let certs = tempfile::tempdir().unwrap();
    let tls = tls_files(certs.path());
    let redis = RedisServer::start_tls(Some(&tls), &[]);
    // The certificate names localhost too: a host name is verified as well as an address.
    let url = redis.url().replace("127.0.0.1", "localhost");
    assert!(url.starts_with("rediss://localhost:"), "{url}");

    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        dir.path(),
        &tls,
        &format!("FILEGATE__STORAGE__BACKEND=redis FILEGATE__STORAGE__REDIS__URL={url}"),
    );
    round_trips(gw.ftp, &dir.path().join("scratch"), "tls");
    drop(gw);
    drop(redis);
}

#[test]
fn the_gateway_runs_on_a_redis_cluster_over_tls_and_survives_a_master_failover() {
    let certs = tempfile::tempdir().unwrap();
    let tls = tls_files(certs.path());
    let mut cluster = RedisCluster::start_tls(3, 1, Some(&tls));
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &tls, &cluster_env(&cluster.urls()));
    let scratch = dir.path().join("scratch");
    let before = round_trips(gw.ftp, &scratch, "cluster");
    // Chunks spread over the masters: every master holds keys of ours.
    let masters = cluster.masters();
    for &m in &masters {
        let keys: u64 = cluster.nodes[m].cli(&["DBSIZE"]).trim().parse().unwrap();
        assert!(
            keys > 0,
            "master {m} holds no key: {:?}",
            cluster.key_counts()
        );
    }

    // Redis replicates asynchronously: what a master acknowledged survives its death only once its
    // replica has it (docs/scaling.md, "Persistence and failover"). This test is about the gateway
    // across a failover, so it kills the master once the replica has caught up.
    assert!(
        cluster.wait_replica_caught_up(masters[0], Duration::from_secs(20)),
        "the replica of master {} did not catch up",
        masters[0]
    );
    cluster.nodes[masters[0]].kill();
    let recovered = serves_again(gw.ftp, &scratch, &before);
    eprintln!("cluster over TLS: uploads succeed again {recovered:?} after a master was killed");
    drop(gw);
}

#[test]
fn the_gateway_follows_sentinel_over_tls_through_a_failover() {
    let certs = tempfile::tempdir().unwrap();
    let tls = tls_files(certs.path());
    let mut setup = RedisSentinel::start_tls(Some(&tls));
    assert!(setup.urls().iter().all(|u| u.starts_with("rediss://")));
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        dir.path(),
        &tls,
        &format!(
            "FILEGATE__STORAGE__BACKEND=redis FILEGATE__STORAGE__REDIS__SENTINEL_URLS={} \
             FILEGATE__STORAGE__REDIS__MASTER_NAME={SENTINEL_MASTER_NAME}",
            list_env(&setup.urls())
        ),
    );
    let scratch = dir.path().join("scratch");
    let before = round_trips(gw.ftp, &scratch, "sentinel");

    setup.master.kill();
    let recovered = serves_again(gw.ftp, &scratch, &before);
    assert_eq!(setup.master_port(), Some(setup.replica.port()));
    eprintln!("sentinel over TLS: uploads succeed again {recovered:?} after the master was killed");
    drop(gw);
}
