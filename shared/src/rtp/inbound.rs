//! Per-call receive-side bookkeeping: SSRC lock, sequence statistics, jitter.

use super::{RtpHeader, Ssrc};
use crate::time::{Duration, Instant};

/// Receive-side settings, shared by all calls (kept by the shell, passed by reference so the
/// per-call [`InboundStream`] stays small).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// After this long without a packet from the locked SSRC, a packet from another SSRC takes
    /// over the lock.
    pub relock_after: Duration,
    /// A forward jump in sequence numbers smaller than this is loss; a bigger one is treated as
    /// a restart that needs two consecutive packets to be believed (RFC 3550 A.1 `MAX_DROPOUT`).
    pub max_dropout: u16,
    /// A sequence number this far behind the highest is a late packet; further behind is a
    /// jump (RFC 3550 A.1 `MAX_MISORDER`).
    pub max_misorder: u16,
    /// The media clock rate in Hz (8000 for G.711).
    pub clock_rate: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            relock_after: Duration::from_millis(500),
            max_dropout: 3000,
            max_misorder: 100,
            clock_rate: 8000,
        }
    }
}

/// What [`InboundStream::on_packet`] made of one packet. Only [`Received::InOrder`],
/// [`Received::Late`], [`Received::Resynced`] and [`Received::Locked`] packets should be played
/// or fed to DTMF detection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Received {
    /// The first packet of a (new) source: the stream is now locked to it.
    Locked,
    /// The newest packet so far; `lost` sequence numbers were skipped before it.
    InOrder {
        /// Gap since the previous highest sequence number (0 when contiguous).
        lost: u16,
    },
    /// Older than the newest packet but not seen before.
    Late,
    /// A sequence number already received (within the last 32).
    Duplicate,
    /// A big sequence jump, not yet believed; dropped.
    Jump,
    /// Second packet after a jump, consecutive with it: the sequence state restarted here.
    Resynced,
    /// From another SSRC while the lock holds; dropped.
    OtherSsrc,
}

/// A snapshot of receive statistics.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct InboundStats {
    /// The locked SSRC, if any.
    pub ssrc: Option<Ssrc>,
    /// Distinct packets counted since the last (re)start of sequence state.
    pub received: u32,
    /// Packets expected but not received (never negative).
    pub lost: u32,
    /// Duplicate packets dropped (since lock).
    pub duplicates: u32,
    /// Late (reordered) packets (since lock).
    pub reordered: u32,
    /// The extended highest sequence number (cycles in the high 16 bits).
    pub extended_max_sequence: u32,
    /// Interarrival jitter in timestamp units (RFC 3550 A.8).
    pub jitter: u32,
}

const LOCKED: u8 = 1;
const HAVE_TRANSIT: u8 = 2;
const NO_BAD_SEQ: u32 = 1 << 16;

/// Receive-side state of one call: 48 bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct InboundStream {
    last_arrival: Instant,
    ssrc: u32,
    received: u32,
    duplicates: u32,
    reordered: u32,
    /// Bit `i` set: sequence number `max_seq - i` was received.
    window: u32,
    transit: u32,
    /// Jitter scaled by 16 (RFC 3550 A.8).
    jitter_q4: u32,
    bad_seq: u32,
    max_seq: u16,
    cycles: u16,
    base_seq: u16,
    flags: u8,
}

impl Default for InboundStream {
    fn default() -> InboundStream {
        InboundStream::new()
    }
}

impl InboundStream {
    /// A stream not yet locked to any source.
    #[must_use]
    pub const fn new() -> InboundStream {
        InboundStream {
            last_arrival: Instant::ZERO,
            ssrc: 0,
            received: 0,
            duplicates: 0,
            reordered: 0,
            window: 0,
            transit: 0,
            jitter_q4: 0,
            bad_seq: NO_BAD_SEQ,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            flags: 0,
        }
    }

    /// Forgets the current source: the next packet, from any SSRC, locks the stream again.
    /// Call after a re-INVITE changed the remote media (new gateway leg, transfer).
    pub fn relock(&mut self) {
        *self = InboundStream::new();
    }

    fn lock(&mut self, now: Instant, header: &RtpHeader, cfg: &Config) {
        *self = InboundStream::new();
        self.ssrc = header.ssrc.0;
        self.flags = LOCKED;
        self.restart_sequence(header.sequence);
        self.update_jitter(now, header.timestamp, cfg);
    }

    fn restart_sequence(&mut self, seq: u16) {
        self.base_seq = seq;
        self.max_seq = seq;
        self.cycles = 0;
        self.bad_seq = NO_BAD_SEQ;
        self.received = 1;
        self.window = 1;
    }

    /// Call for every RTP packet that parsed, with its arrival time. Updates the statistics and
    /// says whether the packet is new, late, a duplicate or to be ignored.
    pub fn on_packet(&mut self, now: Instant, header: &RtpHeader, cfg: &Config) -> Received {
        if self.flags & LOCKED == 0 {
            self.lock(now, header, cfg);
            self.last_arrival = now;
            return Received::Locked;
        }
        if header.ssrc.0 != self.ssrc {
            if now.saturating_duration_since(self.last_arrival) >= cfg.relock_after {
                self.lock(now, header, cfg);
                self.last_arrival = now;
                return Received::Locked;
            }
            return Received::OtherSsrc;
        }
        self.last_arrival = now;
        let seq = header.sequence;
        let ahead = seq.wrapping_sub(self.max_seq);
        let behind = self.max_seq.wrapping_sub(seq);
        let verdict = if ahead == 0 {
            Received::Duplicate
        } else if ahead < cfg.max_dropout {
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1);
            }
            self.window = if ahead >= 32 { 0 } else { self.window << ahead } | 1;
            self.max_seq = seq;
            self.received = self.received.wrapping_add(1);
            Received::InOrder { lost: ahead - 1 }
        } else if behind <= cfg.max_misorder {
            let bit = if behind < 32 { 1u32 << behind } else { 0 };
            if self.window & bit != 0 {
                Received::Duplicate
            } else {
                self.window |= bit;
                self.received = self.received.wrapping_add(1);
                Received::Late
            }
        } else if u32::from(seq) == self.bad_seq {
            self.restart_sequence(seq);
            Received::Resynced
        } else {
            self.bad_seq = u32::from(seq.wrapping_add(1));
            return Received::Jump;
        };
        match verdict {
            Received::Duplicate => self.duplicates = self.duplicates.wrapping_add(1),
            Received::Late => {
                self.reordered = self.reordered.wrapping_add(1);
                self.update_jitter(now, header.timestamp, cfg);
            }
            _ => self.update_jitter(now, header.timestamp, cfg),
        }
        verdict
    }

    /// RFC 3550 A.8: `J += (|D| - J) / 16`, kept scaled by 16.
    fn update_jitter(&mut self, now: Instant, rtp_ts: u32, cfg: &Config) {
        let us = now.as_micros();
        let rate = u64::from(cfg.clock_rate);
        // Arrival time in timestamp units, modulo 2^32 (only differences matter).
        let arrival = (us / 1_000_000)
            .wrapping_mul(rate)
            .wrapping_add((us % 1_000_000) * rate / 1_000_000) as u32;
        let transit = arrival.wrapping_sub(rtp_ts);
        if self.flags & HAVE_TRANSIT != 0 {
            let d = transit.wrapping_sub(self.transit) as i32;
            let d = d.unsigned_abs();
            let j = i64::from(self.jitter_q4);
            let next = j + i64::from(d) - ((j + 8) >> 4);
            self.jitter_q4 = u32::try_from(next.max(0)).unwrap_or(u32::MAX);
        }
        self.transit = transit;
        self.flags |= HAVE_TRANSIT;
    }

    /// The locked SSRC, if any.
    #[must_use]
    pub fn ssrc(&self) -> Option<Ssrc> {
        (self.flags & LOCKED != 0).then_some(Ssrc(self.ssrc))
    }

    /// When the last packet of the locked source arrived (`None` before the first). The call
    /// uses it for its RTP inactivity timeout.
    #[must_use]
    pub fn last_arrival(&self) -> Option<Instant> {
        (self.flags & LOCKED != 0).then_some(self.last_arrival)
    }

    /// The current statistics.
    #[must_use]
    pub fn stats(&self) -> InboundStats {
        if self.flags & LOCKED == 0 {
            return InboundStats::default();
        }
        let extended_max = (u32::from(self.cycles) << 16) | u32::from(self.max_seq);
        let expected = extended_max
            .wrapping_sub(u32::from(self.base_seq))
            .wrapping_add(1);
        InboundStats {
            ssrc: self.ssrc(),
            received: self.received,
            lost: expected.saturating_sub(self.received),
            duplicates: self.duplicates,
            reordered: self.reordered,
            extended_max_sequence: extended_max,
            jitter: self.jitter_q4 >> 4,
        }
    }
}
