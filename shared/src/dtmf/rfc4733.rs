//! RFC 4733 telephone-event packets → key presses, each exactly once.
//!
//! A sender reports one key press as one *event*: a run of RTP packets that share the RTP
//! timestamp of the event's start, carry a growing duration, and end with the E (end) bit set,
//! that last packet usually sent three times. Packets are lost, duplicated and reordered on the
//! way. [`EventDetector`] reduces that to one [`Digit`] per event:
//!
//! * **Report on the first packet seen** of an event, not on its end, so the IVR can stop a
//!   prompt (barge-in) while the key is still down.
//! * **The RTP timestamp is the event's identity.** Further packets with the same timestamp
//!   (updates, the retransmitted end packets, duplicates) are absorbed. A packet whose
//!   timestamp is *older* than the current event (compared modulo 2³², so the wrap from
//!   `0xFFFF_FFFF` to `0` is handled) is a late packet of an event already reported and is
//!   dropped. A *newer* timestamp is a new key press, even for the same key.
//! * **Lost start packets**: if the first packet seen already has the E bit, the event is still
//!   reported, once.
//! * **Long events** (RFC 4733 §2.5.1.3): a key held past the 16-bit duration (65,535
//!   timestamp units, 8.2 s at 8 kHz) continues in a new segment with a new timestamp. A new
//!   timestamp with the same key, following an unfinished event whose duration reached
//!   [`LONG_EVENT_MIN_DURATION`], and no further away than one segment plus
//!   [`SEGMENT_SLACK`] units, is taken as that continuation, not as a new press.
//! * **Events 16 and up** (flash, tones, …) are ignored and leave the state untouched.
//! * **Silence**: when no packet arrived for [`EVENT_TIMEOUT`] the remembered event is
//!   forgotten, so a sender whose end packets were all lost, or that restarted its timestamps
//!   (new SSRC after a re-INVITE), is followed again. The check is made lazily on the next
//!   packet with the `now` it brings, so the detector needs no timer.
//!
//! The RTP sequence number and the volume are carried in [`EventPacket`] for logging but
//! do not decide anything: RFC 4733 identifies an event by its timestamp, and a packet with
//! the same timestamp but another event code (a broken sender) is treated as part of the
//! event already reported.
//!
//! The state is 16 bytes (asserted by a test).

use super::Digit;
use crate::time::{Duration, Instant};
use core::fmt;

/// After this long without a telephone-event packet, the remembered event is forgotten and the
/// next packet, whatever its timestamp, starts a new key press. A held key refreshes it every
/// packet (senders repeat about every 50 ms), so only a dead sender or a finished event age out.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(1);

/// Duration (timestamp units) from which an unfinished event counts as having reached the end
/// of a 16-bit segment. A sender sends exactly `0xFFFF`; some round down to their packet step.
pub const LONG_EVENT_MIN_DURATION: u16 = 0xFF00;

/// How far (timestamp units) past one full segment (`0xFFFF`) the next segment's timestamp may
/// be and still continue a long event: one second at 8 kHz.
pub const SEGMENT_SLACK: u32 = 8_000;

/// One received RFC 4733 telephone-event payload with the RTP header fields that matter.
///
/// The RTP layer parses the packet and the four-byte payload; this is what it hands over.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct EventPacket {
    /// RTP timestamp: the start of the event (its identity).
    pub rtp_timestamp: u32,
    /// RTP sequence number (informational).
    pub seq: u16,
    /// Event code: 0–15 are the DTMF keys, others are ignored.
    pub event_code: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Volume in −dBm0, 0–63 (informational).
    pub volume: u8,
    /// Duration so far, in RTP timestamp units.
    pub duration: u16,
}

/// Why [`EventDetector::handle_event`] refused a packet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// A digit is waiting in [`EventDetector::poll_output`]. The packet was **not** consumed:
    /// drain the output and hand the same packet in again.
    OutputPending,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OutputPending => f.write_str("a detected DTMF digit was not polled yet"),
        }
    }
}

impl core::error::Error for Error {}

/// Where the remembered event stands.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Phase {
    /// No event remembered: the next DTMF packet is a new key press.
    Idle,
    /// The event was reported and no end packet has been seen. `segment_full` is set when its
    /// duration reached [`LONG_EVENT_MIN_DURATION`] (a long-event segment may follow).
    Active { segment_full: bool },
    /// The event was reported and an end packet was seen; retransmissions follow.
    Ended,
}

/// Turns received telephone-event packets into key presses, exactly once each.
///
/// Call [`handle_event`](Self::handle_event) for every telephone-event packet of the stream
/// (after the RTP layer checked SSRC and payload type), then drain
/// [`poll_output`](Self::poll_output). No timer is needed.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EventDetector {
    /// When the last accepted packet arrived (for [`EVENT_TIMEOUT`]).
    last_seen: Instant,
    /// RTP timestamp of the remembered event.
    timestamp: u32,
    /// Phase of the remembered event.
    phase: Phase,
    /// Key of the remembered event.
    digit: Digit,
    /// A detected key not yet polled.
    pending: Option<Digit>,
}

impl Default for EventDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl EventDetector {
    /// A detector that remembers no event.
    #[must_use]
    pub const fn new() -> Self {
        EventDetector {
            last_seen: Instant::ZERO,
            timestamp: 0,
            phase: Phase::Idle,
            digit: Digit::D0,
            pending: None,
        }
    }

    /// Feeds one received telephone-event packet; call it for every such packet as it arrives,
    /// then drain [`poll_output`](Self::poll_output).
    ///
    /// # Errors
    /// [`Error::OutputPending`] if the previous digit was not polled; the packet is not
    /// consumed then and may be handed in again.
    pub fn handle_event(&mut self, now: Instant, event: EventPacket) -> Result<(), Error> {
        if self.pending.is_some() {
            return Err(Error::OutputPending);
        }
        let Some(digit) = Digit::from_event_code(event.event_code) else {
            return Ok(()); // not DTMF
        };
        if self.phase != Phase::Idle
            && now.saturating_duration_since(self.last_seen) >= EVENT_TIMEOUT
        {
            self.phase = Phase::Idle;
        }
        let reached_full = event.duration >= LONG_EVENT_MIN_DURATION;
        match self.phase {
            Phase::Idle => self.start(now, digit, event),
            Phase::Active { .. } | Phase::Ended => {
                // Signed distance modulo 2^32: positive = newer, negative = older.
                let ahead = event.rtp_timestamp.wrapping_sub(self.timestamp);
                if ahead == 0 {
                    // The same event: an update, an end packet or a duplicate.
                    self.last_seen = now;
                    self.phase = match self.phase {
                        Phase::Active { segment_full } if !event.end => Phase::Active {
                            segment_full: segment_full || reached_full,
                        },
                        _ => Phase::Ended,
                    };
                } else if ahead > i32::MAX as u32 {
                    // Older than the current event: late packet of one already reported.
                } else if self.phase == (Phase::Active { segment_full: true })
                    && digit == self.digit
                    && ahead <= u32::from(u16::MAX) + SEGMENT_SLACK
                {
                    // The next segment of a long event: same key press.
                    self.last_seen = now;
                    self.timestamp = event.rtp_timestamp;
                    self.phase = if event.end {
                        Phase::Ended
                    } else {
                        Phase::Active {
                            segment_full: reached_full,
                        }
                    };
                } else {
                    self.start(now, digit, event);
                }
            }
        }
        Ok(())
    }

    /// Remembers a new event and reports its key.
    fn start(&mut self, now: Instant, digit: Digit, event: EventPacket) {
        self.last_seen = now;
        self.timestamp = event.rtp_timestamp;
        self.digit = digit;
        self.phase = if event.end {
            Phase::Ended
        } else {
            Phase::Active {
                segment_full: event.duration >= LONG_EVENT_MIN_DURATION,
            }
        };
        self.pending = Some(digit);
    }

    /// The key press detected by the last [`handle_event`](Self::handle_event), once; call it
    /// after every `handle_event` until it returns `None`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Digit> {
        self.pending.take()
    }

    /// The key currently held down according to the packets (an event reported and not yet
    /// ended or timed out at `now`), for an IVR that wants to wait for the release.
    #[must_use]
    pub fn held(&self, now: Instant) -> Option<Digit> {
        match self.phase {
            Phase::Active { .. }
                if now.saturating_duration_since(self.last_seen) < EVENT_TIMEOUT =>
            {
                Some(self.digit)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    extern crate std;
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn ev(ts: u32, seq: u16, code: u8, end: bool, duration: u16) -> EventPacket {
        EventPacket {
            rtp_timestamp: ts,
            seq,
            event_code: code,
            end,
            volume: 10,
            duration,
        }
    }

    fn ms(m: u64) -> Instant {
        Instant::from_millis(m)
    }

    /// Feeds packets (arrival time in ms, packet) and returns what came out, in order, with
    /// the index of the packet that produced it.
    fn run(det: &mut EventDetector, packets: &[(u64, EventPacket)]) -> Vec<(usize, Digit)> {
        let mut out = Vec::new();
        for (i, (t, p)) in packets.iter().enumerate() {
            det.handle_event(ms(*t), *p).unwrap();
            while let Some(d) = det.poll_output() {
                out.push((i, d));
            }
        }
        out
    }

    /// A complete event as a sender emits it: start, updates every 50 ms, three end packets.
    fn key_press(ts: u32, seq0: u16, code: u8, t0: u64, updates: u16) -> Vec<(u64, EventPacket)> {
        let mut v = Vec::new();
        let mut seq = seq0;
        for i in 0..=updates {
            v.push((t0 + u64::from(i) * 50, ev(ts, seq, code, false, i * 400)));
            seq = seq.wrapping_add(1);
        }
        let end_t = t0 + u64::from(updates + 1) * 50;
        for k in 0..3 {
            v.push((end_t + k * 20, ev(ts, seq, code, true, (updates + 1) * 400)));
            seq = seq.wrapping_add(1);
        }
        v
    }

    #[test]
    fn one_press_reported_once_on_its_first_packet() {
        let mut det = EventDetector::new();
        let out = run(&mut det, &key_press(1000, 1, 5, 0, 4));
        assert_eq!(out, [(0, Digit::D5)]);
    }

    #[test]
    fn same_key_twice_is_two_presses() {
        let mut det = EventDetector::new();
        let mut pkts = key_press(1000, 1, 1, 0, 3);
        pkts.extend(key_press(4000, 10, 1, 400, 3));
        let out = run(&mut det, &pkts);
        assert_eq!(out, [(0, Digit::D1), (7, Digit::D1)]);
    }

    #[test]
    fn transcript_of_a_pin_entry() {
        let mut det = EventDetector::new();
        let mut pkts = Vec::new();
        for (i, code) in [1u8, 2, 3, 11].iter().enumerate() {
            let i32_ = i as u32;
            pkts.extend(key_press(
                160 * 100 * i32_,
                (i * 10) as u16,
                *code,
                i as u64 * 300,
                2,
            ));
        }
        let digits: Vec<Digit> = run(&mut det, &pkts).into_iter().map(|(_, d)| d).collect();
        assert_eq!(digits, [Digit::D1, Digit::D2, Digit::D3, Digit::Hash]);
    }

    #[test]
    fn lost_start_end_packet_first_still_reported_once() {
        let mut det = EventDetector::new();
        let pkts = [
            (0, ev(500, 7, 9, true, 800)),
            (20, ev(500, 8, 9, true, 800)),
            (40, ev(500, 9, 9, true, 800)),
        ];
        assert_eq!(run(&mut det, &pkts), [(0, Digit::D9)]);
    }

    #[test]
    fn late_and_duplicate_packets_of_a_reported_event_are_dropped() {
        let mut det = EventDetector::new();
        let pkts = [
            (0, ev(1000, 1, 4, false, 0)),
            (50, ev(1000, 2, 4, true, 400)),
            (60, ev(2000, 3, 6, false, 0)),  // next key
            (70, ev(1000, 2, 4, true, 400)), // late end of the previous one
            (80, ev(1000, 1, 4, false, 0)),  // very late start of the previous one
            (90, ev(2000, 3, 6, false, 0)),  // duplicate
            (100, ev(2000, 4, 6, true, 400)),
            (110, ev(2000, 4, 6, true, 400)),
        ];
        assert_eq!(run(&mut det, &pkts), [(0, Digit::D4), (2, Digit::D6)]);
    }

    #[test]
    fn timestamp_wrap() {
        let mut det = EventDetector::new();
        let before = u32::MAX - 100;
        let after = 300u32; // 401 units later, across the wrap
        let pkts = [
            (0, ev(before, 1, 2, false, 0)),
            (50, ev(before, 2, 2, true, 400)),
            (100, ev(after, 3, 3, false, 0)),
            (110, ev(before, 2, 2, true, 400)), // late, older across the wrap
            (150, ev(after, 4, 3, true, 400)),
        ];
        assert_eq!(run(&mut det, &pkts), [(0, Digit::D2), (2, Digit::D3)]);
    }

    #[test]
    fn non_dtmf_events_are_ignored_and_do_not_disturb() {
        let mut det = EventDetector::new();
        let pkts = [
            (0, ev(1000, 1, 16, false, 0)), // flash
            (10, ev(1000, 2, 7, false, 0)),
            (20, ev(2000, 3, 32, false, 0)), // a tone event, newer
            (30, ev(1000, 4, 7, true, 400)), // still the 7: not a new press
            (40, ev(3000, 5, 255, true, 0)),
        ];
        assert_eq!(run(&mut det, &pkts), [(1, Digit::D7)]);
    }

    #[test]
    fn event_without_end_times_out() {
        let mut det = EventDetector::new();
        // The 8 never ends (all end packets lost).
        let pkts = [
            (0, ev(1000, 1, 8, false, 0)),
            (50, ev(1000, 2, 8, false, 400)),
        ];
        assert_eq!(run(&mut det, &pkts), [(0, Digit::D8)]);
        assert_eq!(det.held(ms(100)), Some(Digit::D8));
        assert_eq!(det.held(ms(1050)), None);
        // A newer timestamp is a new press at once, timeout or not.
        assert_eq!(
            run(&mut det, &[(200, ev(2000, 3, 8, false, 0))]),
            [(0, Digit::D8)]
        );
        // After the timeout even an old timestamp (a sender that restarted) is accepted.
        assert_eq!(
            run(&mut det, &[(1300, ev(10, 4, 0, false, 0))]),
            [(0, Digit::D0)]
        );
        // But before it, an older timestamp is a late packet.
        assert_eq!(run(&mut det, &[(1400, ev(5, 5, 1, false, 0))]), []);
    }

    #[test]
    fn long_press_reported_once_including_the_next_segment() {
        let mut det = EventDetector::new();
        let mut pkts = Vec::new();
        // 10 s held: the first segment runs to 0xFFFF without the E bit …
        let mut t = 0u64;
        let mut d = 0u32;
        let mut seq = 0u16;
        while d < 0xFFFF {
            pkts.push((t, ev(50_000, seq, 12, false, d as u16)));
            t += 50;
            d = (d + 400).min(0xFFFF);
            seq += 1;
        }
        pkts.push((t, ev(50_000, seq, 12, false, 0xFFFF)));
        // … then a new segment starting where that one ended.
        let ts2 = 50_000 + 0xFFFF;
        for k in 0..20u16 {
            t += 50;
            seq += 1;
            pkts.push((t, ev(ts2, seq, 12, false, k * 400)));
        }
        for _ in 0..3 {
            t += 20;
            seq += 1;
            pkts.push((t, ev(ts2, seq, 12, true, 8000)));
        }
        assert_eq!(run(&mut det, &pkts), [(0, Digit::A)]);
        // A later A with a new timestamp is a new press again.
        assert_eq!(
            run(
                &mut det,
                &[(t + 300, ev(ts2 + 20_000, seq + 1, 12, false, 0))]
            ),
            [(0, Digit::A)]
        );
    }

    #[test]
    fn a_new_timestamp_after_a_short_unfinished_event_is_a_new_press() {
        // Without a full segment, the same key with a new timestamp is a new press.
        let mut det = EventDetector::new();
        let pkts = [
            (0, ev(1000, 1, 3, false, 400)),
            (60, ev(1400, 2, 3, false, 0)),
        ];
        assert_eq!(run(&mut det, &pkts), [(0, Digit::D3), (1, Digit::D3)]);
    }

    #[test]
    fn undrained_output_refuses_without_consuming() {
        let mut det = EventDetector::new();
        det.handle_event(ms(0), ev(1000, 1, 1, false, 0)).unwrap();
        assert_eq!(
            det.handle_event(ms(10), ev(2000, 2, 2, false, 0)),
            Err(Error::OutputPending)
        );
        assert_eq!(det.poll_output(), Some(Digit::D1));
        det.handle_event(ms(10), ev(2000, 2, 2, false, 0)).unwrap();
        assert_eq!(det.poll_output(), Some(Digit::D2));
        assert_eq!(det.poll_output(), None);
        assert!(Error::OutputPending.to_string().contains("polled"));
    }

    #[test]
    fn state_is_tiny() {
        assert!(core::mem::size_of::<EventDetector>() <= 16);
    }

    proptest! {
        /// Whatever loss, duplication and reordering, a key press is reported at most once, and
        /// exactly when its first surviving packet arrives before any packet of a later press.
        #[test]
        fn each_event_at_most_once_under_reordering(
            keys in proptest::collection::vec(0u8..16, 1..8),
            ops in proptest::collection::vec((any::<u8>(), 0usize..4), 0..64),
        ) {
            // Events 7000 timestamp units apart across the 2^32 wrap, each 4 packets (3 updates
            // + end); then some packets duplicated, dropped or swapped with their neighbour.
            let mut sent = Vec::new();
            for (i, k) in keys.iter().enumerate() {
                let ts = 7_000u32.wrapping_mul(i as u32).wrapping_add(u32::MAX - 5_000);
                for p in 0..4u16 {
                    sent.push((i, ev(ts, 0, *k, p == 3, p * 160)));
                }
            }
            for (pos, op) in &ops {
                let j = usize::from(*pos) % sent.len();
                match op {
                    0 => { let x = sent[j]; sent.insert(j, x); }
                    1 if sent.len() > 1 => { sent.remove(j); }
                    2 if j + 1 < sent.len() => sent.swap(j, j + 1),
                    _ => {}
                }
            }
            let mut det = EventDetector::new();
            let mut got = Vec::new();
            for (n, (i, p)) in sent.iter().enumerate() {
                det.handle_event(ms(n as u64 * 20), *p).unwrap();
                if let Some(d) = det.poll_output() {
                    got.push((*i, d));
                }
            }
            let mut expected = Vec::new();
            let mut newest: Option<usize> = None;
            for (i, p) in &sent {
                if newest.is_none_or(|n| *i > n) {
                    newest = Some(*i);
                    expected.push((*i, Digit::from_event_code(p.event_code).unwrap()));
                }
            }
            prop_assert_eq!(got, expected);
        }
    }
}
