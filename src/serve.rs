//! The gateway runner: opens the store, starts the front-ends, and shuts all down on one token.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, StorageBackend};

/// What the startup line says about the protocols until the front-ends exist.
const PROTOCOLS_PENDING: &str = "protocols: none yet (FTP, SFTP and MQTT are being built)";

/// Runs the gateway until `shutdown` is cancelled (SIGINT/SIGTERM in the binary), then closes the
/// store. Prints one line to standard output once the gateway is ready, so scripts and tests can
/// wait for it:
/// `filegate: storage embedded at data/filegate.redb (namespace filegate); protocols: …`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    prepare_directories(&config)?;

    let storage = config.describe_storage();
    let store = storage_backend::Store::open(config.to_store_config())
        .await
        .with_context(|| format!("cannot open the {storage}"))?;
    tracing::info!(
        chunk_size = %crate::config::format_size(config.storage.chunk_size),
        "store opened: {storage}"
    );

    // Not println!: a closed standard output (a daemon, `| head`) must not stop the gateway.
    let mut out = std::io::stdout().lock();
    writeln!(out, "filegate: {storage}; {PROTOCOLS_PENDING}")
        .and_then(|()| out.flush())
        .ok();
    drop(out);

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    store.close().await;
    tracing::info!("store closed; bye");
    Ok(())
}

/// Creates `server.data_dir` and the embedded store's directory if they are missing.
fn prepare_directories(config: &Config) -> anyhow::Result<()> {
    let mut dirs: Vec<&Path> = vec![&config.server.data_dir];
    if config.storage.backend == StorageBackend::Embedded {
        if let Some(parent) = config.storage.embedded.path.parent() {
            if !parent.as_os_str().is_empty() {
                dirs.push(parent);
            }
        }
    }
    for dir in dirs {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "cannot create the directory {}; create it or point server.data_dir / \
                 storage.embedded.path somewhere writable",
                dir.display()
            )
        })?;
    }
    Ok(())
}
