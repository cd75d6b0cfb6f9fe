//! Callback windows: when the contact centre may call a caller back.
//!
//! A callback carries a [`Window`] (`not_before`, `not_after`, UTC instants). The caller picks
//! it from the [`Offer`]s the IVR speaks after the number is confirmed; [`Hours::offers`]
//! computes them from the centre's opening [`Hours`] (weekly spans and holidays) in the
//! centre's time zone.
//!
//! The core makes no clock or time-zone calls: the shell hands it a [`Zone`], a short table
//! of the zone's UTC offsets and the instants they start (built from the system's time-zone
//! database and refreshed by the shell), and every input carries the wall clock.
//!
//! ## Offers
//!
//! * **First offer**: "as soon as possible" when the centre is open now (window: now to the
//!   end of the current opening span); out of hours, "when we open, tomorrow at 8" (window:
//!   that opening span). With no opening in the next [`OFFER_DAYS`] days, or with no hours
//!   configured (always open), it is as soon as possible until now + the queue's `max_age`.
//! * **Up to three more**: the next day parts inside the hours, each an opening span cut at
//!   noon and at 17:00 (morning, afternoon, evening), starting after the first offer's
//!   window does and within [`OFFER_DAYS`] days, so a weekday name is never ambiguous.
//!
//! ## Hours syntax
//!
//! A span is `DAYS HH:MM-HH:MM`: `DAYS` is one day (`Sat`), a range (`Mon-Fri`, wrapping is
//! allowed: `Fri-Mon`) or a comma list of those (`Mon,Wed,Fri-Sat`); the times are local,
//! the end after the start, `24:00` for midnight at the end. A holiday is `YYYY-MM-DD`:
//! closed the whole day.

use core::fmt;

use heapless::Vec;

use crate::time::{civil_from_days, days_from_civil, days_in_month, Duration, UnixMillis};

/// Most spans in [`Hours`].
pub const MAX_SPANS: usize = 16;
/// Most holidays in [`Hours`].
pub const MAX_HOLIDAYS: usize = 64;
/// Most offsets a [`Zone`] holds.
pub const MAX_ZONE_OFFSETS: usize = 8;
/// Most offers the IVR speaks.
pub const MAX_OFFERS: usize = 4;
/// Offers lie within this many days of today (today included).
pub const OFFER_DAYS: i64 = 7;

const MINUTE_MS: i64 = 60_000;
const DAY_MIN: i64 = 1440;
const NOON: u16 = 12 * 60;
const EVENING: u16 = 17 * 60;

/// When a callback may be made: UTC instants, `not_before <= not_after`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Window {
    /// Not before this instant.
    pub not_before: UnixMillis,
    /// Not after this instant.
    pub not_after: UnixMillis,
}

impl Window {
    /// The window, `None` when `not_after` is before `not_before`.
    #[must_use]
    pub fn new(not_before: UnixMillis, not_after: UnixMillis) -> Option<Window> {
        (not_before <= not_after).then_some(Window {
            not_before,
            not_after,
        })
    }

    /// "As soon as possible": from `now` for `max_age`.
    #[must_use]
    pub fn asap(now: UnixMillis, max_age: Duration) -> Window {
        Window {
            not_before: now,
            not_after: now.saturating_add(max_age),
        }
    }
}

/// A day of the week.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Weekday {
    /// Monday
    Mon,
    /// Tuesday
    Tue,
    /// Wednesday
    Wed,
    /// Thursday
    Thu,
    /// Friday
    Fri,
    /// Saturday
    Sat,
    /// Sunday
    Sun,
}

impl Weekday {
    /// Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    /// The weekday of a day counted from 1970-01-01 (a Thursday).
    #[must_use]
    pub fn of_day(day: i64) -> Weekday {
        // rem_euclid(7) is 0..=6, so the index is in range.
        Weekday::ALL[usize::try_from((day + 3).rem_euclid(7)).unwrap_or(0)]
    }

    /// Three-letter English name (the configuration's spelling).
    #[must_use]
    pub fn name(self) -> &'static str {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][self as usize]
    }

    fn parse(s: &str) -> Option<Weekday> {
        Weekday::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Which day an offer is on, as the caller hears it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DayRef {
    /// "today" / "this morning"
    Today,
    /// "tomorrow"
    Tomorrow,
    /// "Monday" (within the coming week)
    On(Weekday),
}

/// Part of a day: before noon, noon to 17:00, from 17:00.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum DayPart {
    /// Before noon.
    Morning,
    /// Noon to 17:00.
    Afternoon,
    /// From 17:00.
    Evening,
}

/// A local time of day, minutes since midnight (0..=1440).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Clock(pub u16);

impl Clock {
    /// Hours 0..=24.
    #[must_use]
    pub fn hour(self) -> u8 {
        u8::try_from(self.0 / 60).unwrap_or(24)
    }

    /// Minutes 0..=59.
    #[must_use]
    pub fn minute(self) -> u8 {
        u8::try_from(self.0 % 60).unwrap_or(0)
    }
}

/// One choice the IVR speaks, with the window it books.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Offer {
    /// "As soon as possible."
    Asap(Window),
    /// "When we open, `day` at `at`."
    WhenOpen {
        /// The opening day.
        day: DayRef,
        /// The opening time.
        at: Clock,
        /// The opening span.
        window: Window,
    },
    /// "`day` `part`, between `from` and `to`."
    Slot {
        /// The day.
        day: DayRef,
        /// Its part.
        part: DayPart,
        /// Local start.
        from: Clock,
        /// Local end.
        to: Clock,
        /// The same, as instants.
        window: Window,
    },
}

impl Offer {
    /// The window this offer books.
    #[must_use]
    pub fn window(&self) -> Window {
        match *self {
            Offer::Asap(w) | Offer::WhenOpen { window: w, .. } | Offer::Slot { window: w, .. } => w,
        }
    }
}

/// The offers for one caller, the first being the default.
pub type Offers = Vec<Offer, MAX_OFFERS>;

/// A time zone as the core needs it: UTC offsets (minutes east) and the instants they take
/// effect, ascending. The first offset also applies before its instant, the last after.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Zone {
    offsets: Vec<(UnixMillis, i16), MAX_ZONE_OFFSETS>,
}

impl Zone {
    /// UTC.
    #[must_use]
    pub fn utc() -> Zone {
        Zone::fixed(0)
    }

    /// A zone without transitions, `offset_min` minutes east of UTC.
    #[must_use]
    pub fn fixed(offset_min: i16) -> Zone {
        let mut offsets = Vec::new();
        let _ = offsets.push((UnixMillis(i64::MIN), offset_min));
        Zone { offsets }
    }

    /// A zone from `(from, offset)` pairs; they are sorted here. Pairs beyond
    /// [`MAX_ZONE_OFFSETS`] are dropped (the shell builds the table for a few weeks ahead).
    #[must_use]
    pub fn from_offsets(pairs: &[(UnixMillis, i16)]) -> Zone {
        let mut offsets: Vec<(UnixMillis, i16), MAX_ZONE_OFFSETS> = Vec::new();
        for &p in pairs.iter().take(MAX_ZONE_OFFSETS) {
            let _ = offsets.push(p);
        }
        offsets.sort_unstable_by_key(|p| p.0);
        if offsets.is_empty() {
            return Zone::utc();
        }
        Zone { offsets }
    }

    /// The offset in effect at `t`, minutes east of UTC.
    #[must_use]
    pub fn offset_at(&self, t: UnixMillis) -> i16 {
        let mut off = self.offsets.first().map_or(0, |p| p.1);
        for &(from, o) in &self.offsets {
            if from <= t {
                off = o;
            } else {
                break;
            }
        }
        off
    }

    /// The local day (counted from 1970-01-01) and time of day at `t`.
    #[must_use]
    pub fn local(&self, t: UnixMillis) -> (i64, Clock) {
        let local_min = t.0.div_euclid(MINUTE_MS) + i64::from(self.offset_at(t));
        let day = local_min.div_euclid(DAY_MIN);
        let min = u16::try_from(local_min.rem_euclid(DAY_MIN)).unwrap_or(0);
        (day, Clock(min))
    }

    /// The instant of local `day` at `at`. A local time that occurs twice (clocks go back)
    /// gives the earlier instant; one that does not occur (clocks go forward) is read with
    /// the offset before the change, so it lands after the gap.
    #[must_use]
    pub fn instant(&self, day: i64, at: Clock) -> UnixMillis {
        let local_ms = (day * DAY_MIN + i64::from(at.0)) * MINUTE_MS;
        let mut best: Option<UnixMillis> = None;
        let mut fallback = UnixMillis(i64::MIN);
        for &(_, off) in &self.offsets {
            let u = UnixMillis(local_ms - i64::from(off) * MINUTE_MS);
            if self.offset_at(u) == off {
                best = Some(best.map_or(u, |b| b.min(u)));
            }
            fallback = fallback.max(u);
        }
        best.unwrap_or(fallback)
    }
}

/// One weekly opening span.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// Bit `n` set: open on `Weekday::ALL[n]`.
    pub days: u8,
    /// Local opening time.
    pub from: Clock,
    /// Local closing time, after `from`; 1440 is midnight at the end of the day.
    pub to: Clock,
}

/// A span or holiday that does not parse.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HoursError {
    /// Not `DAYS HH:MM-HH:MM`.
    Syntax,
    /// A day name that is not Mon…Sun.
    Day,
    /// A time that is not `HH:MM` (00:00 to 24:00).
    Time,
    /// The closing time is not after the opening time.
    Empty,
    /// Not `YYYY-MM-DD`, or no such date.
    Date,
    /// More than [`MAX_SPANS`] spans or [`MAX_HOLIDAYS`] holidays.
    TooMany,
}

impl fmt::Display for HoursError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HoursError::Syntax => "expected `DAYS HH:MM-HH:MM`, e.g. `Mon-Fri 08:00-20:00`",
            HoursError::Day => "days are Mon, Tue, Wed, Thu, Fri, Sat, Sun (ranges `Mon-Fri`)",
            HoursError::Time => "times are HH:MM from 00:00 to 24:00",
            HoursError::Empty => "the closing time must be after the opening time",
            HoursError::Date => "expected a date `YYYY-MM-DD`",
            HoursError::TooMany => "too many entries (16 spans, 64 holidays at most)",
        })
    }
}

impl core::error::Error for HoursError {}

impl Span {
    /// Parses `DAYS HH:MM-HH:MM` (see the module docs).
    ///
    /// # Errors
    /// [`HoursError`] naming what is wrong.
    pub fn parse(s: &str) -> Result<Span, HoursError> {
        let mut parts = s.split_whitespace();
        let (Some(days_s), Some(times), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(HoursError::Syntax);
        };
        let mut days = 0u8;
        for item in days_s.split(',') {
            match item.split_once('-') {
                Some((a, b)) => {
                    let a = Weekday::parse(a).ok_or(HoursError::Day)? as u8;
                    let b = Weekday::parse(b).ok_or(HoursError::Day)? as u8;
                    let mut d = a;
                    loop {
                        days |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => days |= Weekday::parse(item).ok_or(HoursError::Day)?.bit(),
            }
        }
        let (from, to) = times.split_once('-').ok_or(HoursError::Syntax)?;
        let (from, to) = (parse_clock(from)?, parse_clock(to)?);
        if to <= from {
            return Err(HoursError::Empty);
        }
        Ok(Span { days, from, to })
    }
}

fn parse_clock(s: &str) -> Result<Clock, HoursError> {
    let b = s.as_bytes();
    if b.len() != 5
        || b[2] != b':'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
    {
        return Err(HoursError::Time);
    }
    let h = u16::from(b[0] - b'0') * 10 + u16::from(b[1] - b'0');
    let m = u16::from(b[3] - b'0') * 10 + u16::from(b[4] - b'0');
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(HoursError::Time);
    }
    Ok(Clock(h * 60 + m))
}

/// Parses a holiday `YYYY-MM-DD` into a day counted from 1970-01-01.
///
/// # Errors
/// [`HoursError::Date`].
pub fn parse_date(s: &str) -> Result<i64, HoursError> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(HoursError::Date);
    }
    let num = |r: core::ops::Range<usize>| -> Result<i64, HoursError> {
        let mut v = 0i64;
        for &c in b.get(r).ok_or(HoursError::Date)? {
            if !c.is_ascii_digit() {
                return Err(HoursError::Date);
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Ok(v)
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(HoursError::Date);
    }
    Ok(days_from_civil(y, m, d))
}

/// Writes a day counted from 1970-01-01 as `YYYY-MM-DD`.
///
/// # Errors
/// Propagates the writer's error.
pub fn write_date<W: fmt::Write>(w: &mut W, day: i64) -> fmt::Result {
    let (y, m, d) = civil_from_days(day);
    write!(w, "{y:04}-{m:02}-{d:02}")
}

/// The centre's opening hours: weekly spans and holiday dates. No spans: always open.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Hours {
    spans: Vec<Span, MAX_SPANS>,
    holidays: Vec<i64, MAX_HOLIDAYS>,
}

impl Hours {
    /// Always open, no holidays (the default).
    #[must_use]
    pub fn always() -> Hours {
        Hours::default()
    }

    /// No spans configured: always open (holidays then do not apply either).
    #[must_use]
    pub fn is_always(&self) -> bool {
        self.spans.is_empty()
    }

    /// Adds a weekly span.
    ///
    /// # Errors
    /// [`HoursError::TooMany`].
    pub fn add_span(&mut self, span: Span) -> Result<(), HoursError> {
        self.spans.push(span).map_err(|_| HoursError::TooMany)
    }

    /// Adds a holiday (a day counted from 1970-01-01, see [`parse_date`]).
    ///
    /// # Errors
    /// [`HoursError::TooMany`].
    pub fn add_holiday(&mut self, day: i64) -> Result<(), HoursError> {
        self.holidays.push(day).map_err(|_| HoursError::TooMany)
    }

    /// The merged opening spans of local `day`, in order.
    fn open_on(&self, day: i64) -> Vec<(Clock, Clock), MAX_SPANS> {
        let mut out: Vec<(Clock, Clock), MAX_SPANS> = Vec::new();
        if self.holidays.contains(&day) {
            return out;
        }
        let bit = Weekday::of_day(day).bit();
        for s in self.spans.iter().filter(|s| s.days & bit != 0) {
            let _ = out.push((s.from, s.to));
        }
        out.sort_unstable();
        let mut merged: Vec<(Clock, Clock), MAX_SPANS> = Vec::new();
        for (f, t) in out {
            match merged.last_mut() {
                Some(last) if f <= last.1 => last.1 = last.1.max(t),
                _ => {
                    let _ = merged.push((f, t));
                }
            }
        }
        merged
    }

    /// Whether the centre is open at `t`.
    #[must_use]
    pub fn is_open(&self, zone: &Zone, t: UnixMillis) -> bool {
        if self.is_always() {
            return true;
        }
        let (day, now) = zone.local(t);
        self.open_on(day)
            .iter()
            .any(|&(f, to)| f <= now && now < to)
    }

    /// The offers to speak at `now` (see the module docs); never empty.
    #[must_use]
    pub fn offers(&self, zone: &Zone, now: UnixMillis, max_age: Duration) -> Offers {
        let mut offers = Offers::new();
        let asap = Offer::Asap(Window::asap(now, max_age));
        if self.is_always() {
            let _ = offers.push(asap);
            return offers;
        }
        let (today, clock) = zone.local(now);
        let day_ref = |d: i64| match d - today {
            0 => DayRef::Today,
            1 => DayRef::Tomorrow,
            _ => DayRef::On(Weekday::of_day(d)),
        };
        let current = self
            .open_on(today)
            .into_iter()
            .find(|&(f, t)| f <= clock && clock < t);
        let first = match current {
            Some((_, t)) => Offer::Asap(Window {
                not_before: now,
                not_after: zone.instant(today, t).max(now),
            }),
            None => (today..today + OFFER_DAYS)
                .flat_map(|d| self.open_on(d).into_iter().map(move |s| (d, s)))
                .find(|&(d, (f, _))| d > today || f > clock)
                .map_or(asap, |(d, (f, t))| Offer::WhenOpen {
                    day: day_ref(d),
                    at: f,
                    window: Window {
                        not_before: zone.instant(d, f),
                        not_after: zone.instant(d, t),
                    },
                }),
        };
        let _ = offers.push(first);
        let after = first.window().not_before;
        'days: for d in today..today + OFFER_DAYS {
            for (f, t) in self.open_on(d) {
                for (part, ps, pe) in [
                    (DayPart::Morning, Clock(0), Clock(NOON)),
                    (DayPart::Afternoon, Clock(NOON), Clock(EVENING)),
                    (DayPart::Evening, Clock(EVENING), Clock(1440)),
                ] {
                    let (from, to) = (f.max(ps), t.min(pe));
                    if from >= to {
                        continue;
                    }
                    let window = Window {
                        not_before: zone.instant(d, from),
                        not_after: zone.instant(d, to),
                    };
                    if window.not_before <= after {
                        continue;
                    }
                    if offers
                        .push(Offer::Slot {
                            day: day_ref(d),
                            part,
                            from,
                            to,
                            window,
                        })
                        .is_err()
                    {
                        break 'days;
                    }
                }
            }
        }
        offers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> UnixMillis {
        UnixMillis::parse_rfc3339(s).unwrap()
    }

    fn weekdays_8_to_20() -> Hours {
        let mut h = Hours::always();
        h.add_span(Span::parse("Mon-Fri 08:00-20:00").unwrap())
            .unwrap();
        h.add_span(Span::parse("Sat 09:00-13:00").unwrap()).unwrap();
        h
    }

    #[test]
    fn spans_parse_and_refuse() {
        let s = Span::parse("Mon-Fri 08:00-20:00").unwrap();
        assert_eq!(s.days, 0b001_1111);
        assert_eq!((s.from, s.to), (Clock(480), Clock(1200)));
        assert_eq!(Span::parse("Fri-Mon 10:00-24:00").unwrap().days, 0b111_0001);
        assert_eq!(
            Span::parse("mon,Wed,Sat-Sun 00:00-01:30").unwrap().days,
            0b110_0101
        );
        assert_eq!(Span::parse("Mon 08:00"), Err(HoursError::Syntax));
        assert_eq!(Span::parse("Mon-Fry 08:00-09:00"), Err(HoursError::Day));
        assert_eq!(Span::parse("Mon 8:00-09:00"), Err(HoursError::Time));
        assert_eq!(Span::parse("Mon 24:01-24:00"), Err(HoursError::Time));
        assert_eq!(Span::parse("Mon 09:00-09:00"), Err(HoursError::Empty));
        assert_eq!(Span::parse("Mon 22:00-06:00"), Err(HoursError::Empty));
        assert_eq!(parse_date("2026-12-25").unwrap(), 20_812);
        assert_eq!(parse_date("2026-02-29"), Err(HoursError::Date));
        let mut s = heapless::String::<16>::new();
        write_date(&mut s, 20_812).unwrap();
        assert_eq!(s, "2026-12-25");
    }

    #[test]
    fn weekday_of_day() {
        assert_eq!(Weekday::of_day(0), Weekday::Thu);
        assert_eq!(
            Weekday::of_day(parse_date("2026-12-04").unwrap()),
            Weekday::Fri
        );
    }

    #[test]
    fn open_now_offers_asap_then_the_next_day_parts() {
        let h = weekdays_8_to_20();
        // Friday 2026-12-04 10:30 UTC.
        let now = at("2026-12-04T10:30:00Z");
        let o = h.offers(&Zone::utc(), now, Duration::from_secs(86_400));
        assert_eq!(o.len(), 4);
        assert_eq!(
            o[0],
            Offer::Asap(Window {
                not_before: now,
                not_after: at("2026-12-04T20:00:00Z")
            })
        );
        assert!(matches!(
            o[1],
            Offer::Slot {
                day: DayRef::Today,
                part: DayPart::Afternoon,
                from: Clock(720),
                to: Clock(1020),
                ..
            }
        ));
        assert!(matches!(
            o[2],
            Offer::Slot {
                day: DayRef::Today,
                part: DayPart::Evening,
                from: Clock(1020),
                to: Clock(1200),
                ..
            }
        ));
        // Saturday: 09:00-13:00 gives a morning 9-12 ...
        assert_eq!(
            o[3],
            Offer::Slot {
                day: DayRef::Tomorrow,
                part: DayPart::Morning,
                from: Clock(540),
                to: Clock(720),
                window: Window {
                    not_before: at("2026-12-05T09:00:00Z"),
                    not_after: at("2026-12-05T12:00:00Z")
                }
            }
        );
    }

    #[test]
    fn closed_names_the_opening_and_skips_holidays() {
        let mut h = weekdays_8_to_20();
        h.add_holiday(parse_date("2026-12-07").unwrap()).unwrap(); // Monday
                                                                   // Saturday 2026-12-05 at 14:00 in New York (UTC-5): closed until Tuesday 08:00.
        let ny = Zone::fixed(-300);
        let now = at("2026-12-05T19:00:00Z");
        assert!(!h.is_open(&ny, now));
        let o = h.offers(&ny, now, Duration::from_secs(86_400));
        assert_eq!(
            o[0],
            Offer::WhenOpen {
                day: DayRef::On(Weekday::Tue),
                at: Clock(480),
                window: Window {
                    not_before: at("2026-12-08T13:00:00Z"),
                    not_after: at("2026-12-09T01:00:00Z")
                }
            }
        );
        // Tuesday morning starts with the first offer: the next ones are later parts.
        assert!(matches!(
            o[1],
            Offer::Slot {
                day: DayRef::On(Weekday::Tue),
                part: DayPart::Afternoon,
                ..
            }
        ));
        assert!(matches!(
            o[2],
            Offer::Slot {
                day: DayRef::On(Weekday::Tue),
                part: DayPart::Evening,
                ..
            }
        ));
        assert!(matches!(
            o[3],
            Offer::Slot {
                day: DayRef::On(Weekday::Wed),
                part: DayPart::Morning,
                ..
            }
        ));
    }

    #[test]
    fn always_open_is_asap_for_max_age() {
        let now = at("2026-12-04T03:00:00Z");
        let o = Hours::always().offers(&Zone::utc(), now, Duration::from_secs(3600));
        assert_eq!(
            o.as_slice(),
            &[Offer::Asap(Window {
                not_before: now,
                not_after: at("2026-12-04T04:00:00Z")
            })]
        );
    }

    #[test]
    fn zone_transitions_map_local_times() {
        // Europe/Berlin around the 2027-03-28 change: +60 until 01:00 UTC, then +120.
        let z = Zone::from_offsets(&[
            (at("2026-10-25T01:00:00Z"), 60),
            (at("2027-03-28T01:00:00Z"), 120),
        ]);
        let day = parse_date("2027-03-28").unwrap();
        assert_eq!(z.instant(day, Clock(60)), at("2027-03-28T00:00:00Z"));
        // 02:30 does not exist that night: read with +60, it lands at 03:30 local.
        assert_eq!(z.instant(day, Clock(150)), at("2027-03-28T01:30:00Z"));
        assert_eq!(z.instant(day, Clock(240)), at("2027-03-28T02:00:00Z"));
        assert_eq!(z.local(at("2027-03-28T02:00:00Z")), (day, Clock(240)));
        // Before the first entry its offset applies.
        assert_eq!(z.offset_at(at("2000-01-01T00:00:00Z")), 60);
    }
}
