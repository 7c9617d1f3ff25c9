//! The users of `[[users]]`: their homes, permissions, quotas and bandwidth, and how they log in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use storage_backend::StorePath;

use super::quota::Quota;
use super::throttle::Throttle;
use crate::config::{Permission, UserConfig};
use crate::password;

pub struct Account {
    pub name: String,
    pub home: StorePath,
    permissions: HashSet<Permission>,
    password_hash: Option<String>,
    authorized_keys: Vec<String>,
    pub quota: Quota,
    pub upload: Option<Throttle>,
    pub download: Option<Throttle>,
    /// Set once the quota's usage was counted (at the first login).
    pub(super) home_ready: tokio::sync::OnceCell<()>,
}

impl Account {
    pub fn from_config(user: &UserConfig) -> Result<Account, String> {
        // Parsed (and checked) when the configuration was read: no second rule here.
        let home = user
            .home
            .path()
            .map_err(|e| format!("users.home of {:?}: {e}", user.name))?
            .clone();
        Ok(Account {
            name: user.name.clone(),
            home,
            permissions: user.permissions.iter().copied().collect(),
            password_hash: (!user.password_hash.is_empty()).then(|| user.password_hash.clone()),
            authorized_keys: user.authorized_keys.clone(),
            quota: Quota::new(user.quota_bytes, user.quota_files),
            upload: user.bandwidth_up.map(Throttle::new),
            download: user.bandwidth_down.map(Throttle::new),
            home_ready: tokio::sync::OnceCell::new(),
        })
    }

    pub fn can(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// The OpenSSH public key lines this user may log in with.
    pub fn authorized_keys(&self) -> &[String] {
        &self.authorized_keys
    }
}

pub struct Accounts {
    by_name: HashMap<String, Arc<Account>>,
    verifier: Verifier,
    recent: RecentLogins,
    /// Checked for unknown users too, so a failed login takes as long whether the name exists or not.
    decoy_hash: String,
}

impl Accounts {
    pub fn new(users: &[UserConfig]) -> Result<Accounts, String> {
        let mut by_name = HashMap::new();
        for user in users {
            by_name.insert(user.name.clone(), Arc::new(Account::from_config(user)?));
        }
        // The decoy costs what the users' hashes cost (the parameters most of them use): a login
        // for a name that does not exist must not answer faster than one for a name that does.
        let mut costs: HashMap<String, (usize, &str)> = HashMap::new();
        for hash in users
            .iter()
            .map(|u| u.password_hash.as_str())
            .filter(|h| !h.is_empty())
        {
            let params = hash.rsplitn(3, '$').nth(2).unwrap_or_default().to_string();
            costs.entry(params).or_insert((0, hash)).0 += 1;
        }
        let like = costs
            .values()
            .max_by_key(|(n, _)| *n)
            .map_or("", |(_, hash)| *hash);
        let decoy_hash = password::hash_like("decoy password that matches nothing", like)
            .map_err(|e| e.to_string())?;
        Ok(Accounts {
            by_name,
            decoy_hash,
            verifier: Verifier::start(),
            recent: RecentLogins::new(),
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        self.by_name.get(name).cloned()
    }

    /// Whether this name and password logged in successfully a moment ago (the recent-logins
    /// cache): such a login needs no argon2 check, and is no guess to be throttled.
    pub fn recently_verified(&self, name: &str, password: &str) -> bool {
        let Some(hash) = self.get(name).and_then(|a| a.password_hash.clone()) else {
            return false;
        };
        self.recent
            .contains(&self.recent.proof(name, &hash, password))
    }

    /// Verifies a password on the verifier threads (argon2 takes tens of milliseconds of CPU).
    /// `Err(Saturated)`: too many checks are waiting already; the caller refuses the login as
    /// "busy" at once instead of queueing it (a flood must not stall every protocol's logins).
    pub async fn verify_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<Arc<Account>>, Saturated> {
        let account = self.get(name);
        let hash = account
            .as_ref()
            .and_then(|a| a.password_hash.clone())
            .unwrap_or_else(|| self.decoy_hash.clone());
        let proof = self.recent.proof(name, &hash, password);
        let ok = self.recent.contains(&proof) || {
            let ok = self.verifier.verify(hash, password.to_string()).await?;
            if ok {
                self.recent.insert(proof);
            }
            ok
        };
        Ok(match account {
            Some(a) if ok && a.password_hash.is_some() => Some(a),
            _ => None,
        })
    }
}

/// The password verifier has more checks waiting than [`VERIFY_QUEUE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saturated;

/// Password checks waiting for a verifier thread at most; one more is refused as "busy".
pub const VERIFY_QUEUE: usize = 64;

impl Accounts {}

/// A few dedicated threads that verify argon2 hashes, one at a time each.
///
/// A verification holds its memory cost (19 MiB with the default parameters) for tens of
/// milliseconds, and the allocator keeps that memory in the arena of the thread that used it. On
/// tokio's blocking pool, 50 clients logging in together would spread it over 50 threads (a
/// gigabyte, measured); here it stays with as many threads as there are cores, which also keeps
/// logins from starving transfers of CPU.
struct Verifier {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

type Job = (String, String, tokio::sync::oneshot::Sender<bool>);

impl Verifier {
    fn start() -> Verifier {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(VERIFY_QUEUE);
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..cores {
            let queue = queue.clone();
            // The threads end when the sender goes (the gateway shuts down): recv fails.
            std::thread::Builder::new()
                .name(format!("filegate-argon2-{i}"))
                .spawn(move || {
                    let mut verifier = password::Verifier::default();
                    loop {
                        let job = queue.lock().unwrap().recv();
                        let Ok((hash, password, reply)) = job else {
                            return;
                        };
                        let _ = reply.send(verifier.verify(&hash, &password));
                    }
                })
                .expect("spawning a password verification thread");
        }
        Verifier { jobs }
    }

    async fn verify(&self, hash: String, password: String) -> Result<bool, Saturated> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        // A full queue (a flood of logins) is refused at once, never waited on.
        match self.jobs.try_send((hash, password, reply)) {
            Ok(()) => Ok(answer.await.unwrap_or(false)),
            Err(std::sync::mpsc::TrySendError::Full(_)) => Err(Saturated),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Ok(false),
        }
    }
}

/// Successful password logins of the last few minutes, so a client that logs in again and again
/// (a scheduler every minute, 50 parallel sessions of one job) pays argon2's cost once, not every
/// time. Only a keyed digest of user, stored hash and password is kept — the key is random per
/// process — and only for `RECENT_FOR`; failures are never remembered. (SFTPGo's password
/// caching makes the same trade.)
struct RecentLogins {
    key: [u8; 32],
    entries: std::sync::Mutex<HashMap<[u8; 32], std::time::Instant>>,
}

const RECENT_FOR: std::time::Duration = std::time::Duration::from_secs(600);
const RECENT_MAX: usize = 10_000;

impl RecentLogins {
    fn new() -> Self {
        use argon2::password_hash::rand_core::{OsRng, RngCore};
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        RecentLogins {
            key,
            entries: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn proof(&self, user: &str, hash: &str, password: &str) -> [u8; 32] {
        use sha2::Digest;
        let mut d = sha2::Sha256::new();
        for part in [
            &self.key[..],
            user.as_bytes(),
            hash.as_bytes(),
            password.as_bytes(),
        ] {
            d.update((part.len() as u64).to_le_bytes());
            d.update(part);
        }
        d.finalize().into()
    }

    fn contains(&self, proof: &[u8; 32]) -> bool {
        let entries = self.entries.lock().unwrap();
        entries
            .get(proof)
            .is_some_and(|until| *until > std::time::Instant::now())
    }

    fn insert(&self, proof: [u8; 32]) {
        let now = std::time::Instant::now();
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= RECENT_MAX {
            entries.retain(|_, until| *until > now);
            if entries.len() >= RECENT_MAX {
                entries.clear();
            }
        }
        entries.insert(proof, now + RECENT_FOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoy checked for unknown names costs what the users' hashes cost, so a login does not
    /// answer faster for a name that does not exist (issue 18, item 11).
    #[test]
    fn the_decoy_has_the_users_argon2_parameters() {
        let salt = argon2::password_hash::SaltString::generate(
            &mut argon2::password_hash::rand_core::OsRng,
        );
        let costly = argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(32 * 1024, 3, 1, None).unwrap(),
        );
        let hash = argon2::password_hash::PasswordHasher::hash_password(&costly, b"pw", &salt)
            .unwrap()
            .to_string();
        let users: Vec<UserConfig> = ["a", "b"]
            .iter()
            .map(|name| UserConfig {
                name: name.to_string(),
                password_hash: hash.clone(),
                home: format!("/{name}").into(),
                ..UserConfig::default()
            })
            .collect();
        let accounts = Accounts::new(&users).unwrap();
        let params = |h: &str| h.rsplitn(3, '$').nth(2).unwrap().to_string();
        assert_eq!(
            params(&accounts.decoy_hash),
            "$argon2id$v=19$m=32768,t=3,p=1"
        );
        assert_eq!(params(&accounts.decoy_hash), params(&hash));
    }
}
