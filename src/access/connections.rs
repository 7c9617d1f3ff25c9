//! Connection limits shared by every protocol: `limits.max_connections` in all,
//! `limits.max_connections_per_ip` from one address (client), and `limits.max_unauthenticated`
//! not logged in yet (FTP and SSH, whose connections exist before a login). A permit is held for a
//! connection's lifetime.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefused {
    #[error("too many connections ({0} at once); try again later")]
    Total(u32),
    #[error("too many connections from your address ({0} at once); close some and try again")]
    PerIp(u32),
    #[error("too many connections are logging in ({0} at once); try again in a moment")]
    Unauthenticated(u32),
}

struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
    unauthenticated: u32,
}

pub struct ConnectionLimiter {
    max_total: u32,
    max_per_ip: u32,
    max_unauthenticated: u32,
    counts: Arc<Mutex<Counts>>,
}

/// Releases its connection slot when dropped (and its not-logged-in slot, if it still holds one).
pub struct ConnectionPermit {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
    before_login: AtomicBool,
}

impl ConnectionLimiter {
    pub fn new(max_total: u32, max_per_ip: u32, max_unauthenticated: u32) -> Self {
        ConnectionLimiter {
            max_total,
            max_per_ip,
            max_unauthenticated,
            counts: Arc::new(Mutex::new(Counts {
                total: 0,
                per_ip: HashMap::new(),
                unauthenticated: 0,
            })),
        }
    }

    /// A slot for a connection of client `ip`; `before_login`: it also holds one of the slots for
    /// connections not logged in yet, until [`ConnectionPermit::logged_in`].
    pub fn try_acquire(
        &self,
        ip: IpAddr,
        before_login: bool,
    ) -> Result<ConnectionPermit, ConnectionRefused> {
        let mut c = self.counts.lock().unwrap();
        if c.total >= self.max_total {
            return Err(ConnectionRefused::Total(self.max_total));
        }
        if before_login && c.unauthenticated >= self.max_unauthenticated {
            return Err(ConnectionRefused::Unauthenticated(self.max_unauthenticated));
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(ConnectionRefused::PerIp(self.max_per_ip));
        }
        *n += 1;
        c.total += 1;
        if before_login {
            c.unauthenticated += 1;
        }
        Ok(ConnectionPermit {
            ip,
            counts: self.counts.clone(),
            before_login: AtomicBool::new(before_login),
        })
    }

    /// Connections admitted that have not logged in yet.
    pub fn unauthenticated(&self) -> u32 {
        self.counts.lock().unwrap().unauthenticated
    }

    pub fn active(&self) -> u32 {
        self.counts.lock().unwrap().total
    }
}

impl ConnectionPermit {
    /// The connection has logged in: its not-logged-in slot comes free.
    pub fn logged_in(&self) {
        if self.before_login.swap(false, Ordering::AcqRel) {
            self.counts.lock().unwrap().unauthenticated -= 1;
        }
    }

    pub fn is_logged_in(&self) -> bool {
        !self.before_login.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap();
        c.total -= 1;
        if *self.before_login.get_mut() {
            c.unauthenticated -= 1;
        }
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_ip() {
        let l = ConnectionLimiter::new(3, 2, 10);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.try_acquire(a, false).unwrap();
        let _p2 = l.try_acquire(a, false).unwrap();
        assert_eq!(
            l.try_acquire(a, false).err(),
            Some(ConnectionRefused::PerIp(2))
        );
        let _p3 = l.try_acquire(b, false).unwrap();
        assert_eq!(
            l.try_acquire(b, false).err(),
            Some(ConnectionRefused::Total(3))
        );
        drop(p1);
        assert!(l.try_acquire(a, false).is_ok());
    }

    #[test]
    fn connections_not_logged_in_have_their_own_cap() {
        let l = ConnectionLimiter::new(10, 10, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let p1 = l.try_acquire(a, true).unwrap();
        let p2 = l.try_acquire(a, true).unwrap();
        assert_eq!(
            l.try_acquire(a, true).err(),
            Some(ConnectionRefused::Unauthenticated(2))
        );
        // Logged-in connections and those that never need a login are not held back.
        assert!(l.try_acquire(a, false).is_ok());
        p1.logged_in();
        assert!(p1.is_logged_in() && !p2.is_logged_in());
        let p3 = l.try_acquire(a, true).unwrap();
        drop(p2);
        drop(p3);
        assert!(l.try_acquire(a, true).is_ok());
    }
}
