//! Certificates: `filegate gen-cert` (a self-signed certificate and key for trying FTPS and MQTT
//! over TLS without openssl), and reading a configured PEM pair.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::cli::GenCertArgs;

/// Reads a PEM certificate chain and private key; errors name `{section}.cert` / `{section}.key`.
pub fn load_pair(
    cert: &Path,
    key: &Path,
    section: &str,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("{section}.cert: cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "{section}.cert: {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "{section}.cert: {} holds no certificate; `filegate gen-cert` can make one",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{section}.key: {} holds no PEM private key", key.display()))?;
    Ok((certs, key))
}

/// A TLS server configuration with rustls's safe defaults (TLS 1.2 and 1.3) from a PEM pair, offering
/// the given ALPN protocols; errors name `{section}.cert` / `{section}.key`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    section: &str,
    alpn: &[&[u8]],
) -> anyhow::Result<std::sync::Arc<rustls::ServerConfig>> {
    let (certs, key) = load_pair(cert, key, section)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "{section}.cert and {section}.key do not form a usable certificate and key pair"
            )
        })?;
    server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(std::sync::Arc::new(server))
}

pub fn gen_cert(args: &GenCertArgs) -> anyhow::Result<()> {
    for path in [&args.cert, &args.key] {
        if path.exists() && !args.force {
            anyhow::bail!(
                "{} exists; pass --force to replace it, or --cert/--key to write elsewhere",
                path.display()
            );
        }
    }
    let mut params =
        rcgen::CertificateParams::new(args.hosts.clone()).context("invalid --host name")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, args.hosts[0].clone());
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "filegate (self-signed)");
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clients whose clock is behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(args.days.max(1)));
    let key = rcgen::KeyPair::generate().context("cannot generate a key")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the certificate")?;
    write_file(&args.key, key.serialize_pem().as_bytes(), true)?;
    write_file(&args.cert, cert.pem().as_bytes(), false)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "wrote {} and {} (valid {} days for {}).\n\
         Use them with: [ftp.tls] enabled = true, cert = \"{}\", key = \"{}\".\n\
         Clients will warn that the certificate is self-signed: trust it explicitly \
         (e.g. lftp `set ssl:ca-file {}`), or use a real certificate (certs/README.md).",
        args.cert.display(),
        args.key.display(),
        args.days,
        args.hosts.join(", "),
        args.cert.display(),
        args.key.display(),
        args.cert.display(),
    )
    .ok();
    Ok(())
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let _ = private;
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    if private {
        // A key that already existed keeps its old mode through `open`: tighten it too.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot make {} private", path.display()))?;
    }
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
