//! Per-source request rate limiting for the SIP socket (a token bucket per address).
//!
//! Checked before parsing, so a flood from one address costs a hash lookup per datagram.
//! The table is bounded: when it holds too many sources, idle ones are forgotten.

use std::collections::HashMap;
use std::net::IpAddr;

use shared::time::Instant;

const MAX_SOURCES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by source address.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    /// `per_second` requests per second per source, bursts of twice that (0 = unlimited).
    pub(crate) fn new(per_second: u32) -> RateLimiter {
        let rate = f64::from(per_second);
        RateLimiter {
            rate,
            burst: (rate * 2.0).max(1.0),
            buckets: HashMap::new(),
        }
    }

    /// Whether one more request from `ip` at `now` is allowed.
    pub(crate) fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&ip) {
            let horizon = shared::time::Duration::from_secs(10);
            self.buckets.retain(|_, b| now - b.last < horizon);
            if self.buckets.len() >= MAX_SOURCES {
                self.buckets.clear();
            }
        }
        let b = self.buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = (now - b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_limits_then_refills() {
        let mut r = RateLimiter::new(10);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        let t0 = Instant::from_millis(1000);
        let allowed = (0..100).filter(|_| r.allow(ip, t0)).count();
        assert_eq!(allowed, 20, "burst of twice the rate");
        assert!(r.allow(other, t0), "other sources are unaffected");
        assert!(!r.allow(ip, t0));
        assert!(
            r.allow(ip, Instant::from_millis(1100)),
            "one token after 100 ms at 10/s"
        );
        assert!(!r.allow(ip, Instant::from_millis(1100)));
    }

    #[test]
    fn zero_means_unlimited_and_table_stays_bounded() {
        let mut r = RateLimiter::new(0);
        assert!((0..1000).all(|_| r.allow("::1".parse().unwrap(), Instant::ZERO)));
        let mut r = RateLimiter::new(5);
        for i in 0..10_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            r.allow(ip, Instant::from_millis(u64::from(i)));
        }
        assert!(r.buckets.len() <= MAX_SOURCES);
    }
}
