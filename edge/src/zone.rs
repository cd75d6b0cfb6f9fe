//! The callback time zone (`callbacks.timezone`) for the core and the contract.
//!
//! The core computes callback offers in local time from a [`Zone`]: the zone's UTC offsets
//! from a day ago to [`TABLE_DAYS`] days ahead, built here from the time-zone database (the
//! system's, else the copy built into the binary) and refreshed by the agent every hour.
//! Windows go to the CRM as RFC 3339 with the zone's offset at each instant.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use shared::callback::window::{Window, Zone, MAX_ZONE_OFFSETS};
use shared::time::UnixMillis;

use crate::link::WindowJson;

/// How far ahead the table reaches (offers look a week ahead).
pub const TABLE_DAYS: i64 = 40;

/// The core's view of `tz` around `now`.
#[must_use]
pub fn table(tz: &TimeZone, now: UnixMillis) -> Zone {
    let start_ms = now.0.saturating_sub(86_400_000);
    let end_ms = now.0.saturating_add(TABLE_DAYS * 86_400_000);
    let Ok(start) = Timestamp::from_millisecond(start_ms) else {
        return Zone::utc();
    };
    let minutes = |secs: i32| i16::try_from(secs / 60).unwrap_or(0);
    let mut pairs = vec![(UnixMillis(start_ms), minutes(tz.to_offset(start).seconds()))];
    for t in tz.following(start) {
        let at = t.timestamp().as_millisecond();
        if at > end_ms || pairs.len() >= MAX_ZONE_OFFSETS {
            break;
        }
        pairs.push((UnixMillis(at), minutes(t.offset().seconds())));
    }
    Zone::from_offsets(&pairs)
}

/// `t` as RFC 3339 in `tz`, e.g. `2026-12-05T08:00:00-05:00`.
#[must_use]
pub fn rfc3339(tz: &TimeZone, t: UnixMillis) -> String {
    match Timestamp::from_millisecond(t.0) {
        Ok(ts) => {
            let z = ts.to_zoned_datetime(tz.clone());
            z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
        }
        Err(_) => {
            let mut s = String::new();
            let _ = t.write_rfc3339(&mut s);
            s
        }
    }
}

/// A window as published.
#[must_use]
pub fn window_json(tz: &TimeZone, w: Window) -> WindowJson {
    WindowJson {
        not_before: rfc3339(tz, w.not_before),
        not_after: rfc3339(tz, w.not_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::callback::window::{parse_date, Clock};

    fn at(s: &str) -> UnixMillis {
        UnixMillis::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn new_york_across_the_march_change() {
        let tz = TimeZone::get("America/New_York").unwrap();
        let z = table(&tz, at("2027-03-10T12:00:00Z"));
        // 2027-03-14 02:00 EST → 03:00 EDT.
        assert_eq!(z.offset_at(at("2027-03-14T06:59:00Z")), -300);
        assert_eq!(z.offset_at(at("2027-03-14T07:00:00Z")), -240);
        let day = parse_date("2027-03-15").unwrap();
        assert_eq!(z.instant(day, Clock(8 * 60)), at("2027-03-15T12:00:00Z"));
        assert_eq!(
            rfc3339(&tz, at("2027-03-15T12:00:00Z")),
            "2027-03-15T08:00:00-04:00"
        );
        assert_eq!(
            rfc3339(&tz, at("2026-12-05T13:00:00Z")),
            "2026-12-05T08:00:00-05:00"
        );
        assert_eq!(
            rfc3339(&TimeZone::UTC, at("2026-12-05T13:00:00Z")),
            "2026-12-05T13:00:00+00:00"
        );
    }
}
