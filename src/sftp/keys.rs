//! SSH host keys: loaded from `sftp.host_keys`; each missing one is generated on first start (the
//! key type follows the file name: `rsa` in it means RSA 3072, else ed25519), written with mode
//! 0600, and its fingerprint logged. No private key is ever committed: they live in `data/`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;
use russh::keys::ssh_key::private::{Ed25519Keypair, RsaKeypair};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{HashAlg, PrivateKey};

pub fn load_or_generate(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<PrivateKey>> {
    let mut keys = Vec::new();
    for path in paths {
        let key = if path.exists() {
            russh::keys::load_secret_key(path, None).with_context(|| {
                format!(
                    "sftp.host_keys: {} is not a readable OpenSSH private key",
                    path.display()
                )
            })?
        } else {
            generate(path)?
        };
        tracing::info!(
            path = %path.display(),
            algorithm = %key.algorithm().as_str(),
            fingerprint = %key.fingerprint(HashAlg::Sha256),
            "sftp host key"
        );
        keys.push(key);
    }
    if keys.is_empty() {
        anyhow::bail!(
            "sftp.host_keys is empty: name at least one key file (it is generated if missing)"
        );
    }
    Ok(keys)
}

fn generate(path: &Path) -> anyhow::Result<PrivateKey> {
    let mut rng = russh::keys::key::safe_rng();
    let rsa = path
        .file_name()
        .map(|n| n.to_string_lossy().contains("rsa"))
        .unwrap_or(false);
    let key = if rsa {
        PrivateKey::from(RsaKeypair::random(&mut rng, 3072).context("generating an RSA host key")?)
    } else {
        PrivateKey::from(Ed25519Keypair::random(&mut rng))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("sftp.host_keys: cannot create {}", dir.display()))?;
    }
    let text = key
        .to_openssh(LineEnding::LF)
        .context("encoding the host key")?;
    // create_new: never overwrite a key another process wrote meanwhile; 0600 from the start.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("sftp.host_keys: cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    tracing::info!(path = %path.display(), "generated a new SSH host key");
    Ok(key)
}
