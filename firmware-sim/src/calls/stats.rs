//! Counting what arrives: a small fixed-size histogram for latencies and pacing deviations,
//! and per-stream RTP bookkeeping (packets, loss from sequence gaps, inter-arrival deviation
//! from the 20 ms packet interval), and the pacing deviation per time window (`--series-ms`).
//!
//! Arrival times are nanoseconds since the run's start ([`Nanos`]), whichever clock took them
//! (the kernel's receive timestamp or this process's own clock): the bookkeeping does not care.

use std::collections::BTreeMap;
use std::time::Duration;

/// An arrival time: nanoseconds since the run started.
pub(crate) type Nanos = u64;

/// Exact 1 µs buckets below this many microseconds.
const LINEAR_US: u64 = 1024;
/// Sub-buckets per power of two above [`LINEAR_US`] (about 3 % resolution).
const SUB: u64 = 32;
/// Powers of two above [`LINEAR_US`] covered (up to 2^37 µs, about 38 hours).
const OCTAVES: u64 = 27;
const BUCKETS: usize = (LINEAR_US + SUB * OCTAVES) as usize;

/// A histogram of microsecond values: exact below 1 ms, about 3 % wide buckets above; about
/// 15 kB whatever is recorded.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < LINEAR_US {
        return us as usize;
    }
    let octave = u64::from(63 - us.leading_zeros()) - 10; // 0 for 1024..2047
    let sub = (us >> (octave + 10 - 5)) & (SUB - 1);
    let i = LINEAR_US + octave.min(OCTAVES - 1) * SUB + sub;
    (i as usize).min(BUCKETS - 1)
}

/// The largest value a bucket holds.
fn upper_of(bucket: usize) -> u64 {
    let b = bucket as u64;
    if b < LINEAR_US {
        return b;
    }
    let octave = (b - LINEAR_US) / SUB;
    let sub = (b - LINEAR_US) % SUB;
    let width = 1u64 << (octave + 10 - 5);
    (1u64 << (octave + 10)) + (sub + 1) * width - 1
}

impl Histogram {
    /// Records one value.
    pub(crate) fn record(&mut self, us: u64) {
        if let Some(c) = self.counts.get_mut(bucket_of(us)) {
            *c += 1;
        }
        self.total += 1;
        self.max = self.max.max(us);
    }

    /// Records a duration in microseconds.
    pub(crate) fn record_duration(&mut self, d: Duration) {
        self.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds another histogram's counts.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Values recorded.
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded (exact).
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the upper end of the bucket holding it, never more
    /// than the maximum; 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_of(i).min(self.max);
            }
        }
        self.max
    }
}

/// The packet interval the agent paces at.
pub(crate) const PTIME: Duration = Duration::from_millis(20);

/// Receive bookkeeping of one RTP source (one agent call).
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    ssrc: u32,
    base_seq: u16,
    max_seq: u16,
    cycles: u64,
    last_arrival: Nanos,
    /// Packets counted (in order or late; duplicates of the newest are not).
    pub(crate) received: u64,
    /// Packets counted before an SSRC change.
    prior_expected: u64,
    prior_received: u64,
    /// Packets that arrived after a later one.
    pub(crate) reordered: u64,
    /// Repeats of the newest packet.
    pub(crate) duplicates: u64,
}

/// What one stream amounted to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StreamTotals {
    /// Packets received.
    pub(crate) received: u64,
    /// Packets the sequence numbers say were sent.
    pub(crate) expected: u64,
    /// Reordered packets.
    pub(crate) reordered: u64,
    /// Duplicates.
    pub(crate) duplicates: u64,
}

impl StreamTotals {
    /// Packets missing (expected but not received).
    pub(crate) fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

impl Stream {
    /// A stream starting with a packet of `ssrc`/`seq` that arrived `now`.
    pub(crate) fn new(now: Nanos, ssrc: u32, seq: u16) -> Stream {
        Stream {
            ssrc,
            base_seq: seq,
            max_seq: seq,
            cycles: 0,
            last_arrival: now,
            received: 1,
            prior_expected: 0,
            prior_received: 0,
            reordered: 0,
            duplicates: 0,
        }
    }

    fn expected_now(&self) -> u64 {
        (self.cycles << 16) + u64::from(self.max_seq) + 1 - u64::from(self.base_seq)
    }

    /// Counts a packet that arrived `now`; records into `pacing` how far its distance from
    /// the previous in-order packet is from `PTIME` × their sequence distance (in µs), and
    /// returns that deviation (`None` for a packet that was not in order).
    pub(crate) fn on_packet(
        &mut self,
        now: Nanos,
        ssrc: u32,
        seq: u16,
        pacing: &mut Histogram,
    ) -> Option<u64> {
        if ssrc != self.ssrc {
            // A new source on the same address: keep what was counted, start over.
            self.prior_expected += self.expected_now();
            self.prior_received += self.received;
            let (pe, pr, ro, du) = (
                self.prior_expected,
                self.prior_received,
                self.reordered,
                self.duplicates,
            );
            *self = Stream::new(now, ssrc, seq);
            self.prior_expected = pe;
            self.prior_received = pr;
            self.reordered = ro;
            self.duplicates = du;
            return None;
        }
        let ahead = seq.wrapping_sub(self.max_seq);
        if ahead == 0 {
            self.duplicates += 1;
        } else if ahead < 0x8000 {
            if seq < self.max_seq {
                self.cycles += 1;
            }
            self.max_seq = seq;
            self.received += 1;
            let gap = now.saturating_sub(self.last_arrival);
            let due = PTIME.as_nanos() as u64 * u64::from(ahead);
            let us = gap.abs_diff(due) / 1000;
            pacing.record(us);
            self.last_arrival = now;
            return Some(us);
        } else {
            self.received += 1;
            self.reordered += 1;
        }
        None
    }

    /// The stream's totals.
    pub(crate) fn totals(&self) -> StreamTotals {
        StreamTotals {
            received: self.prior_received + self.received,
            expected: self.prior_expected + self.expected_now(),
            reordered: self.reordered,
            duplicates: self.duplicates,
        }
    }
}

/// Pacing deviations per time window: window `i` holds what arrived in
/// `[i × window, (i + 1) × window)` after the run's start.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    window: Nanos,
    windows: BTreeMap<u64, Histogram>,
}

impl Series {
    /// An empty series of `window`-long windows (at least 1 ms).
    pub(crate) fn new(window: Duration) -> Series {
        Series {
            window: (window.as_nanos() as u64).max(1_000_000),
            windows: BTreeMap::new(),
        }
    }

    /// The window length.
    pub(crate) fn window(&self) -> Duration {
        Duration::from_nanos(self.window)
    }

    /// The index of the window holding time `at`.
    pub(crate) fn index_of(&self, at: Nanos) -> u64 {
        at / self.window
    }

    /// Records a deviation of `us` µs measured on a packet that arrived `at`.
    pub(crate) fn record(&mut self, at: Nanos, us: u64) {
        self.windows
            .entry(self.index_of(at))
            .or_default()
            .record(us);
    }

    /// Removes and returns the windows before the one holding `at` (those that will get no
    /// more packets once time has passed `at`), so a receive task keeps only its current one.
    pub(crate) fn take_before(&mut self, at: Nanos) -> Series {
        let newer = self.windows.split_off(&self.index_of(at));
        Series {
            window: self.window,
            windows: core::mem::replace(&mut self.windows, newer),
        }
    }

    /// Adds another series' windows (of the same length) to this one.
    pub(crate) fn merge(&mut self, other: &Series) {
        for (i, h) in &other.windows {
            self.windows.entry(*i).or_default().merge(h);
        }
    }

    /// Every window from the first to the last that has a value, empty ones included, as
    /// (index, histogram).
    pub(crate) fn windows(&self) -> Vec<(u64, Histogram)> {
        let (Some(first), Some(last)) = (
            self.windows.keys().next().copied(),
            self.windows.keys().next_back().copied(),
        ) else {
            return Vec::new();
        };
        (first..=last)
            .map(|i| (i, self.windows.get(&i).cloned().unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Any time will do as the origin of these tests' virtual arrivals.
    fn origin() -> Nanos {
        7_000_000_000
    }

    #[test]
    fn buckets_are_exact_below_a_millisecond_and_within_3_percent_above() {
        for us in [0u64, 1, 500, 1023] {
            assert_eq!(upper_of(bucket_of(us)), us);
        }
        for us in [
            1024u64,
            1500,
            2047,
            2048,
            19_999,
            20_000,
            3_000_000,
            1 << 36,
        ] {
            let up = upper_of(bucket_of(us));
            assert!(up >= us, "{us} -> {up}");
            assert!((up - us) as f64 <= us as f64 * 0.032, "{us} -> {up}");
        }
        // Buckets are monotonic.
        for b in 1..BUCKETS {
            assert!(upper_of(b) > upper_of(b - 1));
        }
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.99), 0);
        for us in 1..=1000 {
            h.record(us);
        }
        assert_eq!(h.quantile(0.5), 500);
        assert_eq!(h.quantile(0.99), 990);
        assert_eq!(h.quantile(1.0), 1000);
        assert_eq!(h.max(), 1000);
        let mut g = Histogram::default();
        g.record(5_000_000);
        h.merge(&g);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.quantile(1.0), 5_000_000);
    }

    #[test]
    fn loss_reordering_and_pacing_from_sequence_numbers() {
        let t0 = origin();
        let ms = |n: u64| t0 + n * 1_000_000;
        let mut pacing = Histogram::default();
        let mut s = Stream::new(t0, 7, 65_534);
        s.on_packet(ms(20), 7, 65_535, &mut pacing); // on time
        s.on_packet(ms(41), 7, 0, &mut pacing); // 1 ms late, wraps
        s.on_packet(ms(100), 7, 3, &mut pacing); // 2 missing, 1 ms early (due at 101)
        s.on_packet(ms(101), 7, 2, &mut pacing); // one of them arrives late
        s.on_packet(ms(102), 7, 3, &mut pacing); // duplicate
        let t = s.totals();
        assert_eq!(t.expected, 6);
        assert_eq!(t.received, 5);
        assert_eq!(t.lost(), 1);
        assert_eq!((t.reordered, t.duplicates), (1, 1));
        assert_eq!(pacing.count(), 3);
        assert_eq!(pacing.max(), 1000);
        assert_eq!(pacing.quantile(0.0), 0);
    }

    #[test]
    fn a_new_ssrc_keeps_what_was_counted() {
        let t0 = origin();
        let mut pacing = Histogram::default();
        let mut s = Stream::new(t0, 1, 10);
        let p = PTIME.as_nanos() as u64;
        s.on_packet(t0 + p, 1, 11, &mut pacing);
        s.on_packet(t0 + p * 2, 2, 5000, &mut pacing);
        s.on_packet(t0 + p * 3, 2, 5001, &mut pacing);
        let t = s.totals();
        assert_eq!((t.expected, t.received, t.lost()), (4, 4, 0));
    }

    #[test]
    fn in_order_packets_return_their_deviation_and_others_none() {
        let t0 = origin();
        let mut pacing = Histogram::default();
        let mut s = Stream::new(t0, 9, 100);
        assert_eq!(
            s.on_packet(t0 + 23_000_000, 9, 101, &mut pacing),
            Some(3000)
        );
        assert_eq!(
            s.on_packet(t0 + 24_000_000, 9, 101, &mut pacing),
            None,
            "duplicate"
        );
        assert_eq!(
            s.on_packet(t0 + 63_000_000, 9, 103, &mut pacing),
            Some(0),
            "one lost"
        );
        assert_eq!(
            s.on_packet(t0 + 64_000_000, 9, 102, &mut pacing),
            None,
            "late"
        );
        assert_eq!(
            s.on_packet(t0 + 70_000_000, 10, 1, &mut pacing),
            None,
            "new SSRC"
        );
    }

    #[test]
    fn series_buckets_by_arrival_time_and_keeps_empty_windows_in_between() {
        let sec = 1_000_000_000;
        let mut s = Series::new(Duration::from_secs(1));
        assert_eq!(s.window(), Duration::from_secs(1));
        assert!(s.windows().is_empty());
        s.record(0, 10);
        s.record(sec - 1, 30);
        s.record(sec, 500);
        s.record(3 * sec + 5, 7);
        let w = s.windows();
        assert_eq!(w.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!((w[0].1.count(), w[0].1.max()), (2, 30));
        assert_eq!((w[1].1.count(), w[1].1.max()), (1, 500));
        assert_eq!(w[2].1.count(), 0);
        assert_eq!((w[3].1.count(), w[3].1.max()), (1, 7));
        // A receive task hands over the finished windows and keeps the current one.
        let old = s.take_before(3 * sec + 10);
        assert_eq!(old.windows().len(), 2, "windows 0 and 1");
        assert_eq!(s.windows().len(), 1);
        let mut all = Series::new(Duration::from_secs(1));
        all.merge(&old);
        all.merge(&s);
        all.merge(&old);
        let w = all.windows();
        assert_eq!(w.len(), 4);
        assert_eq!(w[0].1.count(), 4, "merged twice");
        assert_eq!(w[3].1.count(), 1);
        // Windows shorter than a millisecond are not allowed.
        assert_eq!(
            Series::new(Duration::ZERO).window(),
            Duration::from_millis(1)
        );
    }
}
