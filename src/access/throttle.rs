//! Bandwidth limits (bytes per second, per user and direction): a governor token bucket over bytes
//! whose burst is one second's worth.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub struct Throttle {
    limiter: DefaultDirectRateLimiter,
    burst: u32,
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Self {
        let burst = bytes_per_second.clamp(1, u32::MAX as u64) as u32;
        let rate = NonZeroU32::new(burst).expect("clamped to at least 1");
        Throttle {
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            burst,
        }
    }

    /// Waits until `bytes` may pass.
    pub async fn take(&self, mut bytes: usize) {
        while bytes > 0 {
            let n = bytes.min(self.burst as usize);
            let cells = NonZeroU32::new(n as u32).expect("n > 0");
            // n never exceeds the burst, so the capacity error cannot happen.
            let _ = self.limiter.until_n_ready(cells).await;
            bytes -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn paces_to_the_rate() {
        let t = Throttle::new(100_000);
        let start = std::time::Instant::now();
        // The first second's worth passes at once; the next 50 KB must wait about half a second.
        t.take(100_000).await;
        t.take(50_000).await;
        let took = start.elapsed();
        assert!(took >= std::time::Duration::from_millis(400), "{took:?}");
        assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    }
}
