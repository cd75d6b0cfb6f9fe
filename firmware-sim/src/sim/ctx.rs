//! What every part of the simulated world shares: the clock, the agenda, the random stream,
//! the network's fault model, the invariant oracle and the counters.

use core::net::SocketAddr;

use serde::Serialize;
use shared::time::{Duration, Instant, UnixMillis};

use super::oracle::Oracle;
use super::rng::Rng;
use super::sched::{Ev, Msg, Packet, Sched};

/// The wall clock at virtual time zero (2026-11-23T06:00:00Z).
pub(crate) const WALL_ORIGIN_MS: i64 = 1_795_413_600_000;

/// How the network treats datagrams.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct NetFaults {
    /// Probability that a SIP datagram is lost.
    pub(crate) sip_loss: f64,
    /// Probability that an RTP datagram is lost.
    pub(crate) rtp_loss: f64,
    /// Probability that a datagram arrives twice.
    pub(crate) duplicate: f64,
    /// Fixed one-way delay, ms.
    pub(crate) base_delay_ms: u64,
    /// Extra random delay of 0..jitter ms; above the packet spacing it reorders packets.
    pub(crate) jitter_ms: u64,
}

/// Counters reported in the summary (all deterministic).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Stats {
    pub(crate) sip_sent: u64,
    pub(crate) rtp_sent: u64,
    pub(crate) dropped: u64,
    pub(crate) duplicated: u64,
    pub(crate) junk_sent: u64,
    pub(crate) node_stateless_replies: u64,
    pub(crate) options_sent: u64,
    pub(crate) options_answered: u64,
    pub(crate) calls_placed: u64,
    pub(crate) calls_answered: u64,
    pub(crate) calls_busy_503: u64,
    pub(crate) calls_cancelled: u64,
    pub(crate) calls_rejected_other: u64,
    pub(crate) calls_no_answer: u64,
    pub(crate) caller_hangups: u64,
    pub(crate) node_hangups: u64,
    pub(crate) holds: u64,
    pub(crate) dead_gateways: u64,
    pub(crate) keys_pressed: u64,
    pub(crate) callbacks_booked: u64,
    pub(crate) callbacks_already_booked: u64,
    pub(crate) callbacks_not_booked: u64,
    pub(crate) callback_store_failures: u64,
    pub(crate) late_bookings_cancelled: u64,
    pub(crate) callbacks_completed_by_crm: u64,
    pub(crate) callbacks_expired: u64,
    /// Expiries whose `callback.expired` the outbox dropped or a crash took before its seq.
    pub(crate) expiry_events_unreported: u64,
    pub(crate) events_issued: u64,
    pub(crate) events_delivered: u64,
    pub(crate) events_redelivered: u64,
    pub(crate) seq_skipped_events: u64,
    pub(crate) seq_numbers_skipped: u64,
    pub(crate) outbox_dropped: u64,
    pub(crate) replay_requests: u64,
    pub(crate) crashes: u64,
    pub(crate) broker_outages: u64,
    pub(crate) broker_messages_lost: u64,
    pub(crate) announcement_changes: u64,
    pub(crate) calls_cut_by_crash: u64,
    pub(crate) invariant_checks: u64,
}

/// The shared context every handler gets.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// Virtual now.
    pub(crate) now: Instant,
    /// Steps run so far.
    pub(crate) step: u64,
    /// The agenda.
    pub(crate) sched: Sched,
    /// The random stream.
    pub(crate) rng: Rng,
    /// The network's current fault model.
    pub(crate) net: NetFaults,
    /// The invariant checker.
    pub(crate) oracle: Oracle,
    /// Counters.
    pub(crate) stats: Stats,
    /// Running trace hash (FNV-1a over every step).
    pub(crate) trace: u64,
    /// Print every step.
    pub(crate) verbose: bool,
}

impl Ctx {
    /// The wall clock now.
    pub(crate) fn wall(&self) -> UnixMillis {
        UnixMillis(WALL_ORIGIN_MS + i64::try_from(self.now.as_millis()).unwrap_or(i64::MAX / 2))
    }

    /// Sends a datagram now.
    pub(crate) fn send(&mut self, from: SocketAddr, to: SocketAddr, msg: Msg) {
        self.send_at(self.now, from, to, msg);
    }

    /// Sends a datagram at `t` (>= now): it may be lost, duplicated and delayed.
    pub(crate) fn send_at(&mut self, t: Instant, from: SocketAddr, to: SocketAddr, msg: Msg) {
        let loss = match &msg {
            Msg::Sip(_) => {
                self.stats.sip_sent += 1;
                self.net.sip_loss
            }
            Msg::Rtp(_) => {
                self.stats.rtp_sent += 1;
                self.net.rtp_loss
            }
            Msg::Audio(_) => 0.0,
        };
        if self.rng.chance(loss) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if !matches!(msg, Msg::Audio(_)) && self.rng.chance(self.net.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay =
                self.net.base_delay_ms * 1000 + self.rng.below(self.net.jitter_ms * 1000 + 1);
            let at = t + Duration::from_micros(delay);
            let p = Packet {
                from,
                to,
                msg: msg.clone(),
            };
            self.sched.at(at, Ev::Packet(p));
        }
    }

    /// Schedules `ev` after `d`.
    pub(crate) fn after(&mut self, d: Duration, ev: Ev) {
        self.sched.after(self.now, d, ev);
    }

    /// A random duration in `[lo_ms, hi_ms]` milliseconds.
    pub(crate) fn ms(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.rng.range(lo_ms, hi_ms))
    }
}
