//! Time as an input.
//!
//! The core never reads a clock. Shells pass `now` into every `handle_*` call and read the next
//! deadline back from `poll_timeout`. Two kinds of time exist:
//!
//! * [`Instant`]: a monotonic point, microseconds since an arbitrary origin chosen by the shell
//!   (tokio's start instant in `edge`, zero in `firmware-sim`). Timers and pacing use it.
//! * [`UnixMillis`]: wall-clock time, milliseconds since 1970-01-01T00:00:00Z, used only where a
//!   value leaves the node or comes from the CRM (event timestamps, announcement validity).
//!
//! Durations are `core::time::Duration`.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};
pub use core::time::Duration;

/// A monotonic instant in microseconds since an origin chosen by the shell.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Instant(u64);

impl Instant {
    /// The origin.
    pub const ZERO: Instant = Instant(0);
    /// The latest representable instant; used as "never".
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `micros` microseconds after the origin.
    #[must_use]
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// An instant `millis` milliseconds after the origin (saturating).
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000))
    }

    /// Microseconds since the origin.
    #[must_use]
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Milliseconds since the origin (truncated).
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000
    }

    /// `self + d`, or `None` on overflow.
    #[must_use]
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        let us = u64::try_from(d.as_micros()).ok()?;
        self.0.checked_add(us).map(Instant)
    }

    /// `self + d`, clamped to [`Instant::MAX`].
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Instant {
        self.checked_add(d).unwrap_or(Instant::MAX)
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturating: adding to `Instant::MAX` stays at `MAX` (never panics).
    fn add(self, rhs: Duration) -> Instant {
        self.saturating_add(rhs)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = self.saturating_add(rhs);
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: an earlier `self` gives zero (never panics).
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// Wall-clock time: milliseconds since the Unix epoch (UTC).
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// `self + d` (saturating).
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> UnixMillis {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        UnixMillis(self.0.saturating_add(ms))
    }

    /// Writes the instant as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T06:01:02.345Z`.
    ///
    /// # Errors
    /// Propagates the writer's error.
    pub fn write_rfc3339<W: fmt::Write>(self, w: &mut W) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            w,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            y,
            m,
            d,
            sod / 3600,
            (sod / 60) % 60,
            sod % 60,
            ms
        )
    }

    /// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fff…](Z|±HH:MM)`).
    ///
    /// # Errors
    /// [`BadTimestamp`] when the text is not such a timestamp.
    pub fn parse_rfc3339(s: &str) -> Result<UnixMillis, BadTimestamp> {
        let b = s.as_bytes();
        if b.len() < 20 {
            return Err(BadTimestamp);
        }
        let num = |r: core::ops::Range<usize>| -> Result<i64, BadTimestamp> {
            let part = b.get(r).ok_or(BadTimestamp)?;
            let mut v: i64 = 0;
            for &c in part {
                if !c.is_ascii_digit() {
                    return Err(BadTimestamp);
                }
                v = v * 10 + i64::from(c - b'0');
            }
            Ok(v)
        };
        let sep = |i: usize, c: &[u8]| -> Result<(), BadTimestamp> {
            if b.get(i).is_some_and(|x| c.contains(x)) {
                Ok(())
            } else {
                Err(BadTimestamp)
            }
        };
        let y = num(0..4)?;
        sep(4, b"-")?;
        let mo = num(5..7)?;
        sep(7, b"-")?;
        let d = num(8..10)?;
        sep(10, b"Tt ")?;
        let h = num(11..13)?;
        sep(13, b":")?;
        let mi = num(14..16)?;
        sep(16, b":")?;
        let se = num(17..19)?;
        if !(1..=12).contains(&mo)
            || d < 1
            || d > days_in_month(y, mo)
            || h > 23
            || mi > 59
            || se > 60
        {
            return Err(BadTimestamp);
        }
        let mut i = 19;
        let mut ms: i64 = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            let mut scale = 100;
            while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                ms += i64::from(c - b'0') * scale;
                scale /= 10;
                i += 1;
            }
            if i == start {
                return Err(BadTimestamp);
            }
        }
        let offset_min = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(sign @ (b'+' | b'-')) if i + 6 == b.len() => {
                let oh = num(i + 1..i + 3)?;
                sep(i + 3, b":")?;
                let om = num(i + 4..i + 6)?;
                if oh > 23 || om > 59 {
                    return Err(BadTimestamp);
                }
                let o = oh * 60 + om;
                if *sign == b'-' {
                    -o
                } else {
                    o
                }
            }
            _ => return Err(BadTimestamp),
        };
        let days = days_from_civil(y, mo, d);
        let secs = days * 86_400 + h * 3600 + mi * 60 + se.min(59) - offset_min * 60;
        Ok(UnixMillis(secs * 1000 + ms))
    }
}

/// A timestamp that is not RFC 3339.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BadTimestamp;

impl fmt::Display for BadTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an RFC 3339 timestamp")
    }
}

impl core::error::Error for BadTimestamp {}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub(crate) fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's days-from-civil algorithm (public-domain arithmetic).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use heapless::String;

    #[test]
    fn instant_arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!((t + Duration::from_millis(3)).as_millis(), 8);
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(t - Instant::ZERO, Duration::from_millis(5));
    }

    #[test]
    fn rfc3339_round_trip() {
        let t = UnixMillis::parse_rfc3339("2026-11-23T06:01:02.345Z").unwrap();
        let mut s: String<32> = String::new();
        t.write_rfc3339(&mut s).unwrap();
        assert_eq!(s.as_str(), "2026-11-23T06:01:02.345Z");
        assert_eq!(
            UnixMillis::parse_rfc3339("1970-01-01T00:00:00Z").unwrap(),
            UnixMillis(0)
        );
        assert_eq!(
            UnixMillis::parse_rfc3339("1970-01-01T01:00:00+01:00").unwrap(),
            UnixMillis(0)
        );
        // 2026-11-23T06:00:00Z is 1795413600 s after the epoch.
        assert_eq!(
            UnixMillis::parse_rfc3339("2026-11-23T06:00:00Z").unwrap(),
            UnixMillis(1_795_413_600_000)
        );
    }

    #[test]
    fn rfc3339_rejects_garbage() {
        for bad in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T06:00:00",
            "2026-11-23T06:00:00.Z",
            "2026-11-23T06:00:00Zjunk",
            "２026-11-23T06:00:00Z",
        ] {
            assert_eq!(UnixMillis::parse_rfc3339(bad), Err(BadTimestamp), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_write_parse(ms in -30_000_000_000_000i64..30_000_000_000_000i64) {
            let mut s: String<40> = String::new();
            UnixMillis(ms).write_rfc3339(&mut s).unwrap();
            proptest::prop_assert_eq!(UnixMillis::parse_rfc3339(&s), Ok(UnixMillis(ms)));
        }

        #[test]
        fn rfc3339_never_panics(s in ".{0,40}") {
            let _ = UnixMillis::parse_rfc3339(&s);
        }
    }
}
