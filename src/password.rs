//! argon2id password hashes (PHC strings): made by `filegate hash-password`, checked at config load
//! and at login.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params};

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is empty; type a password")]
    Empty,
    #[error("hashing the password failed: {0}")]
    Hash(argon2::password_hash::Error),
}

/// Hashes `password` with argon2id and the argon2 crate's default parameters and a random salt,
/// returning the PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(PasswordError::Hash)
}

/// A hash of `password` made with the same argon2 parameters as `like` (a PHC string), so checking
/// against it costs what checking against `like` costs; the defaults when `like` does not parse.
pub fn hash_like(password: &str, like: &str) -> Result<String, PasswordError> {
    let params = PasswordHash::new(like)
        .ok()
        .and_then(|parsed| Params::try_from(&parsed).ok());
    let Some(params) = params else {
        return hash_password(password);
    };
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(PasswordError::Hash)
}

/// Whether `password` matches the PHC string `hash` (false for an unparsable hash too). The
/// parameters are taken from the hash, so hashes made with other costs keep working.
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Verifies passwords like [`verify_password`], but reuses one memory area for every check
/// instead of allocating the hash's memory cost (19 MiB by default) each time: allocators keep
/// such blocks around, and a burst of logins would otherwise grow the process by hundreds of MiB.
#[derive(Default)]
pub struct Verifier {
    blocks: Vec<argon2::Block>,
}

impl Verifier {
    pub fn verify(&mut self, hash: &str, password: &str) -> bool {
        self.check(hash, password).unwrap_or(false)
    }

    fn check(&mut self, hash: &str, password: &str) -> Option<bool> {
        let parsed = PasswordHash::new(hash).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => argon2::Version::try_from(v).ok()?,
            None => argon2::Version::default(),
        };
        let params = Params::try_from(&parsed).ok()?;
        let expected = parsed.hash?;
        let mut salt = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
        let needed = params.block_count();
        if self.blocks.len() < needed {
            self.blocks.resize(needed, argon2::Block::default());
        }
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                &mut self.blocks[..needed],
            )
            .ok()?;
        // Output's equality is constant-time.
        Some(argon2::password_hash::Output::new(&out).ok()? == expected)
    }
}

/// Checks that `hash` is an argon2id PHC string with valid parameters; the error says what is wrong
/// (never repeating the hash).
pub fn check_argon2id_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|e| format!("is not a PHC string ({e})"))?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!(
            "uses the algorithm {:?}, not argon2id",
            parsed.algorithm.as_str()
        ));
    }
    Params::try_from(&parsed).map_err(|e| format!("has invalid argon2 parameters ({e})"))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("lacks its salt or hash part".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reusing_verifier_agrees_with_the_crate() {
        let hash = hash_password("correct horse").unwrap();
        let mut v = Verifier::default();
        assert!(v.verify(&hash, "correct horse"));
        assert!(!v.verify(&hash, "correct horsE"));
        assert!(!v.verify("not a hash", "x"));
        assert!(
            v.verify(&hash, "correct horse"),
            "works again with its memory reused"
        );
        let weaker = Argon2::new(
            Algorithm::Argon2id,
            argon2::Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(v.verify(&weaker, "pw"));
        assert!(verify_password(&weaker, "pw"));
    }

    #[test]
    fn hash_verifies_and_is_argon2id() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(check_argon2id_hash(&hash).is_ok());
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct hors"));
        // A random salt: the same password hashes differently each time.
        assert_ne!(hash, hash_password("correct horse").unwrap());
    }

    #[test]
    fn empty_password_is_refused() {
        assert!(matches!(hash_password(""), Err(PasswordError::Empty)));
    }

    #[test]
    fn other_hashes_are_rejected() {
        assert!(check_argon2id_hash("").is_err());
        assert!(check_argon2id_hash("secret").is_err());
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$6RtaShEhD1xKmJ6AP5rQ4g";
        assert!(check_argon2id_hash(argon2i)
            .unwrap_err()
            .contains("not argon2id"));
        assert!(!verify_password("not a hash", "x"));
    }
}
