//! Brute-force protection shared by every protocol: failed logins per client IP within a minute;
//! at the limit the IP is banned for `limits.ban_time`, whichever protocol it tries next.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked addresses, stale entries are swept on the next failure.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Default)]
struct Entry {
    failures: VecDeque<Instant>,
    banned_until: Option<Instant>,
}

pub struct LoginLimiter {
    max_failures: u32,
    ban_time: Duration,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, ban_time: Duration) -> Self {
        LoginLimiter {
            max_failures: max_failures.max(1),
            ban_time,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` stays banned, if it is.
    pub fn banned_for(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap();
        let until = entries.get(&ip)?.banned_until?;
        (until > now).then(|| until - now)
    }

    /// Records a failed login; returns true when this failure got the IP banned.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap();
        if entries.len() > SWEEP_ABOVE {
            entries.retain(|_, e| {
                e.banned_until.is_some_and(|u| u > now)
                    || e.failures.back().is_some_and(|t| now - *t < WINDOW)
            });
        }
        let entry = entries.entry(ip).or_default();
        while entry.failures.front().is_some_and(|t| now - *t >= WINDOW) {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        if entry.failures.len() as u32 >= self.max_failures
            && entry.banned_until.is_none_or(|u| u <= now)
        {
            entry.banned_until = Some(now + self.ban_time);
            entry.failures.clear();
            return true;
        }
        false
    }

    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    pub fn ban_time(&self) -> Duration {
        self.ban_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_after_the_limit_and_only_that_ip() {
        let l = LoginLimiter::new(3, Duration::from_secs(300));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(!l.record_failure(a));
        assert!(!l.record_failure(a));
        assert!(l.banned_for(a).is_none());
        assert!(l.record_failure(a));
        assert!(l.banned_for(a).unwrap() > Duration::from_secs(290));
        assert!(l.banned_for(b).is_none());
    }

    #[test]
    fn a_ban_ends() {
        let l = LoginLimiter::new(1, Duration::ZERO);
        let a: IpAddr = "::1".parse().unwrap();
        l.record_failure(a);
        assert!(l.banned_for(a).is_none());
    }
}
