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
    /// Set once the home directory is known to exist.
    pub(super) home_ready: tokio::sync::OnceCell<()>,
}

impl Account {
    pub fn from_config(user: &UserConfig) -> Result<Account, String> {
        let home = StorePath::parse(&user.home)
            .map_err(|e| format!("users.home of {:?}: {e}", user.name))?;
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
    /// Checked for unknown users too, so a failed login takes as long whether the name exists or not.
    decoy_hash: String,
}

impl Accounts {
    pub fn new(users: &[UserConfig]) -> Result<Accounts, String> {
        let mut by_name = HashMap::new();
        for user in users {
            by_name.insert(user.name.clone(), Arc::new(Account::from_config(user)?));
        }
        let decoy_hash = password::hash_password("decoy password that matches nothing")
            .map_err(|e| e.to_string())?;
        Ok(Accounts {
            by_name,
            decoy_hash,
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        self.by_name.get(name).cloned()
    }

    /// Verifies a password on the blocking pool (argon2 takes tens of milliseconds of CPU).
    pub async fn verify_password(&self, name: &str, password: &str) -> Option<Arc<Account>> {
        let account = self.get(name);
        let hash = account
            .as_ref()
            .and_then(|a| a.password_hash.clone())
            .unwrap_or_else(|| self.decoy_hash.clone());
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || password::verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        match account {
            Some(a) if ok && a.password_hash.is_some() => Some(a),
            _ => None,
        }
    }
}
