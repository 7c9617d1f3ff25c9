//! FTPS: the rustls configuration built once from `ftp.tls.cert` / `ftp.tls.key` (PEM) and shared by
//! every connection.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

/// TLS 1.2 only, as libunftp ships by default: lftp is known to truncate uploads over TLS 1.3 data
/// connections with libunftp (bolcom/libunftp#285). Session resumption (needed by clients that
/// require the data connection to resume the control connection's session) uses rustls's default
/// in-memory cache.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (certs, key) = crate::certs::load_pair(cert, key, "ftp.tls")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .context("TLS 1.2 is not available")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("ftp.tls.cert and ftp.tls.key do not form a usable certificate and key pair")?;
    Ok(Arc::new(config))
}
