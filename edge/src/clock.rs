//! The one place where tokio's clock meets the core's [`shared::Instant`].

use std::time::SystemTime;

use shared::time::{Instant, UnixMillis};

/// Converts between `tokio::time::Instant` and the core's microsecond [`Instant`], whose
/// origin is the moment the clock was created.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    /// A clock whose origin is now.
    #[must_use]
    pub fn new() -> Clock {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }

    /// The core's `now`.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.to_core(tokio::time::Instant::now())
    }

    /// Converts a tokio instant (saturating at the origin).
    #[must_use]
    pub fn to_core(&self, t: tokio::time::Instant) -> Instant {
        let us = t.saturating_duration_since(self.origin).as_micros();
        Instant::from_micros(u64::try_from(us).unwrap_or(u64::MAX))
    }

    /// Converts a core instant back to tokio's clock (for `sleep_until`).
    #[must_use]
    pub fn to_tokio(&self, t: Instant) -> tokio::time::Instant {
        self.origin + std::time::Duration::from_micros(t.as_micros().min(u64::MAX / 4))
    }

    /// Wall-clock time for event timestamps.
    #[must_use]
    pub fn wall(&self) -> UnixMillis {
        wall_now()
    }
}

/// Wall-clock time now (the one wall-clock read of the agent).
#[must_use]
pub fn wall_now() -> UnixMillis {
    #[allow(clippy::disallowed_methods)] // the one wall-clock read of the agent
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    UnixMillis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn round_trips_on_paused_time() {
        let c = Clock::new();
        tokio::time::advance(std::time::Duration::from_millis(1500)).await;
        let now = c.now();
        assert_eq!(now.as_millis(), 1500);
        assert_eq!(c.to_core(c.to_tokio(now)), now);
        assert!(c.wall().0 > 1_700_000_000_000);
    }
}
