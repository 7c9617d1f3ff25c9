//! Brute-force protection shared by every protocol: failed logins per client within a minute; at
//! the limit the client is banned for `limits.ban_time`, whichever protocol it tries next.
//!
//! A client is an address as `Access::client_key` sees it (an IPv6 client by its network). Password
//! checks take time (argon2), so failures are known late: each check in progress holds one of the
//! client's remaining tries (`begin`), and checks past them wait for one to end. Without that, a
//! client sending 50 guesses at once had all 50 checked before the first failure counted.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

const WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked addresses, stale entries are swept on the next failure.
const SWEEP_ABOVE: usize = 10_000;
/// How long a login waits for one of its client's tries to come free before it is told to retry.
const WAIT_FOR_A_TRY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Entry {
    failures: VecDeque<Instant>,
    banned_until: Option<Instant>,
    /// Checks in progress, each holding one try.
    pending: u32,
}

impl Entry {
    fn forget_old(&mut self, now: Instant) {
        while self.failures.front().is_some_and(|t| now - *t >= WINDOW) {
            self.failures.pop_front();
        }
    }

    fn banned(&self, now: Instant) -> Option<Duration> {
        self.banned_until
            .filter(|u| *u > now)
            .map(|until| until - now)
    }

    fn idle(&self, now: Instant) -> bool {
        self.pending == 0
            && self.banned(now).is_none()
            && self.failures.back().is_none_or(|t| now - *t >= WINDOW)
    }
}

/// Why a login may not be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoTry {
    /// The client is banned for this long.
    Banned(Duration),
    /// Its tries stayed taken by checks in progress for `WAIT_FOR_A_TRY`.
    Busy,
}

pub struct LoginLimiter {
    max_failures: u32,
    ban_time: Duration,
    entries: Mutex<HashMap<IpAddr, Entry>>,
    /// Signalled whenever a try comes free.
    freed: Notify,
}

/// A login check in progress: one of its client's tries. Dropped without `failed`, the try comes
/// back (the login succeeded, or the check was abandoned).
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    client: IpAddr,
    open: bool,
}

impl Attempt<'_> {
    /// The check failed: it counts as a failure. Returns true when it got the client banned.
    pub fn failed(mut self) -> bool {
        self.open = false;
        self.limiter.finish(self.client, true)
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.open {
            self.limiter.finish(self.client, false);
        }
    }
}

impl LoginLimiter {
    pub fn new(max_failures: u32, ban_time: Duration) -> Self {
        LoginLimiter {
            max_failures: max_failures.max(1),
            ban_time,
            entries: Mutex::new(HashMap::new()),
            freed: Notify::new(),
        }
    }

    /// How long `client` stays banned, if it is.
    pub fn banned_for(&self, client: IpAddr) -> Option<Duration> {
        let entries = self.entries.lock().unwrap();
        entries.get(&client)?.banned(Instant::now())
    }

    /// Takes one of `client`'s tries for a login check, waiting (up to `WAIT_FOR_A_TRY`) while all
    /// its remaining tries are held by checks in progress.
    pub async fn begin(&self, client: IpAddr) -> Result<Attempt<'_>, NoTry> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_A_TRY;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let now = Instant::now();
                let mut entries = self.entries.lock().unwrap();
                let entry = entries.entry(client).or_default();
                if let Some(left) = entry.banned(now) {
                    return Err(NoTry::Banned(left));
                }
                entry.forget_old(now);
                if (entry.failures.len() as u32) + entry.pending < self.max_failures {
                    entry.pending += 1;
                    return Ok(Attempt {
                        limiter: self,
                        client,
                        open: true,
                    });
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(NoTry::Busy);
            }
        }
    }

    fn finish(&self, client: IpAddr, failed: bool) -> bool {
        let banned = {
            let mut entries = self.entries.lock().unwrap();
            let entry = entries.entry(client).or_default();
            entry.pending = entry.pending.saturating_sub(1);
            if !failed && entry.idle(Instant::now()) {
                // Nothing to remember of a client that only logged in: every address that ever
                // connected would otherwise stay in the map.
                entries.remove(&client);
                false
            } else {
                failed && self.count_failure(&mut entries, client)
            }
        };
        self.freed.notify_waiters();
        banned
    }

    /// Records a failed login that held no try (a refused key, an unknown API key); returns true
    /// when this failure got the client banned.
    pub fn record_failure(&self, client: IpAddr) -> bool {
        let banned = {
            let mut entries = self.entries.lock().unwrap();
            self.count_failure(&mut entries, client)
        };
        self.freed.notify_waiters();
        banned
    }

    fn count_failure(&self, entries: &mut HashMap<IpAddr, Entry>, client: IpAddr) -> bool {
        let now = Instant::now();
        if entries.len() > SWEEP_ABOVE {
            entries.retain(|_, e| !e.idle(now));
        }
        let entry = entries.entry(client).or_default();
        entry.forget_old(now);
        entry.failures.push_back(now);
        if entry.failures.len() as u32 >= self.max_failures && entry.banned(now).is_none() {
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

    #[tokio::test]
    async fn checks_in_progress_hold_the_remaining_tries() {
        use futures_util::FutureExt;
        let l = LoginLimiter::new(3, Duration::from_secs(300));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let first = l.begin(a).await.unwrap();
        let second = l.begin(a).await.unwrap();
        let third = l.begin(a).await.unwrap();
        // A fourth check waits for a try: it gets one when a check succeeds …
        let fourth = l.begin(a);
        tokio::pin!(fourth);
        assert!(fourth.as_mut().now_or_never().is_none());
        drop(first);
        let fourth = fourth.await.unwrap();
        // … and is refused when the others fail and ban the address.
        let fifth = l.begin(a);
        tokio::pin!(fifth);
        assert!(fifth.as_mut().now_or_never().is_none());
        assert!(!second.failed());
        assert!(!third.failed());
        assert!(fourth.failed());
        assert!(matches!(fifth.await, Err(NoTry::Banned(_))));
        // Another address is not affected, and one that only logs in is not remembered.
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        drop(l.begin(b).await.unwrap());
        assert!(!l.entries.lock().unwrap().contains_key(&b));
    }
}
