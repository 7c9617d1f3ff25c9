//! FTPS: the rustls configuration built once from `ftp.tls.cert` / `ftp.tls.key` (PEM) and shared by
//! every connection.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// TLS 1.2 only, as libunftp ships by default: lftp is known to truncate uploads over TLS 1.3 data
/// connections with libunftp (bolcom/libunftp#285). Session resumption (needed by clients that
/// require the data connection to resume the control connection's session) uses rustls's default
/// in-memory cache.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("ftp.tls.cert: cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "ftp.tls.cert: {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "ftp.tls.cert: {} holds no certificate; `filegate gen-cert` can make one",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("ftp.tls.key: {} holds no PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .context("TLS 1.2 is not available")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("ftp.tls.cert and ftp.tls.key do not form a usable certificate and key pair")?;
    Ok(Arc::new(config))
}
