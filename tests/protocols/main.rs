//! The FTP, SFTP and MQTT suites and the operations suite: `scripts/test` runs this binary once
//! more on a Redis Cluster and on a Sentinel-watched master (`FILEGATE_TEST_REDIS`).

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod ftp;
mod mqtt;
mod ops;
mod sftp;
