//! Connection limits shared by every protocol: `limits.max_connections` in all and
//! `limits.max_connections_per_ip` from one address. A permit is held for a connection's lifetime.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefused {
    #[error("too many connections ({0} at once); try again later")]
    Total(u32),
    #[error("too many connections from your address ({0} at once); close some and try again")]
    PerIp(u32),
}

struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

pub struct ConnectionLimiter {
    max_total: u32,
    max_per_ip: u32,
    counts: Arc<Mutex<Counts>>,
}

/// Releases its connection slot when dropped.
pub struct ConnectionPermit {
    ip: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionLimiter {
    pub fn new(max_total: u32, max_per_ip: u32) -> Self {
        ConnectionLimiter {
            max_total,
            max_per_ip,
            counts: Arc::new(Mutex::new(Counts {
                total: 0,
                per_ip: HashMap::new(),
            })),
        }
    }

    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnectionPermit, ConnectionRefused> {
        let mut c = self.counts.lock().unwrap();
        if c.total >= self.max_total {
            return Err(ConnectionRefused::Total(self.max_total));
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(ConnectionRefused::PerIp(self.max_per_ip));
        }
        *n += 1;
        c.total += 1;
        Ok(ConnectionPermit {
            ip,
            counts: self.counts.clone(),
        })
    }

    pub fn active(&self) -> u32 {
        self.counts.lock().unwrap().total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap();
        c.total -= 1;
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
        let l = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a).unwrap();
        assert_eq!(l.try_acquire(a).err(), Some(ConnectionRefused::PerIp(2)));
        let _p3 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).err(), Some(ConnectionRefused::Total(3)));
        drop(p1);
        assert!(l.try_acquire(a).is_ok());
    }
}
