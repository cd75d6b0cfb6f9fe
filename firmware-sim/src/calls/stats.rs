//! Counting what arrives: a small fixed-size histogram for latencies and pacing deviations,
//! and per-stream RTP bookkeeping (packets, loss from sequence gaps, inter-arrival deviation
//! from the 20 ms packet interval).

use std::time::{Duration, Instant};

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
    last_arrival: Instant,
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
    pub(crate) fn new(now: Instant, ssrc: u32, seq: u16) -> Stream {
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
    /// the previous in-order packet is from `PTIME` × their sequence distance.
    pub(crate) fn on_packet(&mut self, now: Instant, ssrc: u32, seq: u16, pacing: &mut Histogram) {
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
            return;
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
            let gap = now.saturating_duration_since(self.last_arrival);
            let due = PTIME * u32::from(ahead);
            pacing.record_duration(gap.abs_diff(due));
            self.last_arrival = now;
        } else {
            self.received += 1;
            self.reordered += 1;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    // Any instant will do as the origin of these tests' virtual arrivals.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
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
        let ms = |n: u64| t0 + Duration::from_millis(n);
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
        s.on_packet(t0 + PTIME, 1, 11, &mut pacing);
        s.on_packet(t0 + PTIME * 2, 2, 5000, &mut pacing);
        s.on_packet(t0 + PTIME * 3, 2, 5001, &mut pacing);
        let t = s.totals();
        assert_eq!((t.expected, t.received, t.lost()), (4, 4, 0));
    }
}
