//! Outbox bookkeeping: which held events still need publishing, a PUBACK, or the CRM's
//! acknowledgement.
//!
//! The shell writes every event (by `seq`) to its disk store before publishing it; this
//! machine holds only `seq` numbers and tells the shell what to publish next and what to
//! delete. Events enter in `seq` order and leave from the old end (the CRM acknowledges
//! "everything up to N"; drops take the oldest), so the held set is one contiguous range and a
//! few cursors describe every event's state.
//!
//! ## Invariants
//!
//! ```text
//!   oldest  <=  puback_base  <=  publish_next  <=  next_seq
//!   |── PUBACKed, awaiting ──|── published, ──|── not yet ───|
//!   |   the CRM's ack        |  awaiting      |  published   |
//!                            |  PUBACK        |              |
//! ```
//!
//! * `[oldest, next_seq)` is the held set; `next_seq - oldest <= capacity`.
//! * `publish_next - puback_base <= max_in_flight <= 64`; PUBACKs for that window may arrive
//!   in any order and are kept in a 64-bit map until `puback_base` can advance over them.
//! * A pending replay is a sub-range of `[oldest, publish_next)`, served before new events.
//! * Retention marks `(end, at)` say "everything below `end` was PUBACKed no later than `at`";
//!   their `end`s increase and lie in `(oldest, puback_base]`. One mark spans at most
//!   `retention / 8` of PUBACK time ([`OUTBOX_RETENTION_MARKS`] / 2 per period), so an event is
//!   dropped by retention no earlier than due and at most `retention / 8` late; when the marks
//!   run out (the shell never calls `handle_timeout`), the two oldest merge, which only delays.
//!
//! ## Delivery rules
//!
//! * [`Outbox::poll_publish`] yields replayed `seq`s first (in order), then new ones in order,
//!   at most `max_in_flight` new ones awaiting PUBACK (replays are not windowed: the MQTT
//!   client's own in-flight limit applies to them).
//! * [`Outbox::connection_lost`]: every event without a PUBACK is unpublished again, in order.
//! * [`Outbox::crm_ack`]`(n)`: everything `<= n` leaves ([`Output::Delete`]); nothing `<= n` is
//!   ever yielded again.
//! * [`Outbox::replay`]`(a, b)`: the held, already published events in `[a, b]` are yielded
//!   again in order; the part below the held range gets [`Output::Skipped`] (the shell
//!   publishes a `seq.skipped` event); the part not yet published is published anyway; `a` = 0
//!   counts as 1 (`seq` starts at 1, so no range is ever reported that holds no `seq`); bogus
//!   ranges (`a > b`, beyond `next_seq`) are ignored. Overlapping replay requests merge.
//! * Full: appending beyond `capacity` drops the oldest events; retention: an event PUBACKed at
//!   least `retention` ago and never acknowledged by the CRM may be dropped by
//!   [`Outbox::handle_timeout`]. Both count in [`Outbox::dropped`] and emit
//!   [`Output::Delete`].
//!
//! ## Restarts and holes
//!
//! [`Outbox::restore`] rebuilds from the store's range (all unpublished: a PUBACK is not
//! durable anyway). [`Outbox::appended`] accepts a `seq` beyond `next_seq` (the restart gap of
//! the [`super::Sequencer`]); when the outbox is empty it simply starts there, otherwise the
//! missing numbers stay in the held range with no payload: when [`Outbox::poll_publish`]
//! yields a `seq` its store does not hold, the shell calls [`Outbox::puback`] for it at once.
//! The `seq.skipped` event for the gap tells the CRM.
//!
//! Retention time is a monotonic [`Instant`] input.

use core::fmt;

use heapless::Deque;

use super::SkipReason;
use crate::limits::{
    OUTBOX_CAPACITY, OUTBOX_MAX_IN_FLIGHT, OUTBOX_RETENTION_MARKS, OUTBOX_SKIP_QUEUE,
};
use crate::time::{Duration, Instant};

/// Outbox tuning.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Most events held (default [`OUTBOX_CAPACITY`]).
    pub capacity: u64,
    /// Most new events published and awaiting PUBACK (1..=64, default
    /// [`OUTBOX_MAX_IN_FLIGHT`]).
    pub max_in_flight: u32,
    /// PUBACKed events the CRM has not acknowledged after this long may be dropped; `None`
    /// keeps them until the CRM acknowledges them or the outbox is full. Default 72 h.
    pub retention: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: OUTBOX_CAPACITY,
            max_in_flight: OUTBOX_MAX_IN_FLIGHT,
            retention: Some(Duration::from_secs(72 * 3600)),
        }
    }
}

/// Why an `appended` was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The `seq` is not above every `seq` appended before.
    NotIncreasing {
        /// The lowest acceptable `seq`.
        expected_at_least: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotIncreasing { expected_at_least } => {
                write!(f, "seq not increasing (expected >= {expected_at_least})")
            }
        }
    }
}

impl core::error::Error for Error {}

/// Work for the shell's disk store.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Delete every stored event with `seq < below` (acknowledged or dropped).
    Delete {
        /// Exclusive bound.
        below: u64,
    },
    /// The CRM asked for `[from, to]`, which is no longer held: append a `seq.skipped` event.
    Skipped {
        /// First `seq`.
        from: u64,
        /// Last `seq` (inclusive).
        to: u64,
        /// Why.
        reason: SkipReason,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Mark {
    end: u64,
    first: Instant,
    last: Instant,
}

/// The outbox's delivery state (see the module docs for the invariants).
#[derive(Debug)]
pub struct Outbox {
    config: Config,
    oldest: u64,
    next_seq: u64,
    publish_next: u64,
    puback_base: u64,
    /// Bit `i`: `puback_base + i` was PUBACKed (out of order). Bit 0 is always clear.
    acked_bits: u64,
    /// Pending replay `[start, end)`.
    replay: Option<(u64, u64)>,
    marks: Deque<Mark, OUTBOX_RETENTION_MARKS>,
    delete_below: Option<u64>,
    skips: Deque<Output, OUTBOX_SKIP_QUEUE>,
    skips_lost: u32,
    dropped: u64,
}

impl Outbox {
    /// An empty outbox; its first appended `seq` sets where it starts.
    #[must_use]
    pub fn new(config: Config) -> Outbox {
        Self::restore(config, 0, 0)
    }

    /// Rebuilds from the disk store after a restart: it holds `[oldest, next_seq)`, all of it
    /// to be published (again).
    #[must_use]
    pub fn restore(config: Config, oldest: u64, next_seq: u64) -> Outbox {
        let config = Config {
            capacity: config.capacity.max(1),
            max_in_flight: config.max_in_flight.clamp(1, 64),
            retention: config.retention,
        };
        let oldest = oldest.min(next_seq);
        let mut o = Outbox {
            config,
            oldest,
            next_seq,
            publish_next: oldest,
            puback_base: oldest,
            acked_bits: 0,
            replay: None,
            marks: Deque::new(),
            delete_below: None,
            skips: Deque::new(),
            skips_lost: 0,
            dropped: 0,
        };
        o.enforce_capacity();
        o
    }

    /// Records that the event `seq` is in the disk store. Call after writing it, for every
    /// event, in `seq` order; then publish what [`Outbox::poll_publish`] yields and drain
    /// [`Outbox::poll_output`] (a full outbox drops its oldest event).
    ///
    /// # Errors
    /// [`Error::NotIncreasing`] when `seq` is not above the last appended one.
    pub fn appended(&mut self, seq: u64) -> Result<(), Error> {
        if seq < self.next_seq {
            return Err(Error::NotIncreasing {
                expected_at_least: self.next_seq,
            });
        }
        if self.is_empty() {
            self.replay = None;
            self.oldest = seq;
            self.publish_next = seq;
            self.puback_base = seq;
            self.acked_bits = 0;
            self.marks.clear();
        }
        self.next_seq = seq.saturating_add(1);
        self.enforce_capacity();
        Ok(())
    }

    /// The next `seq` to publish (QoS 1), or `None` (nothing to send, or the in-flight window
    /// is full). Call until `None` after every input; answer each with [`Outbox::puback`].
    #[must_use]
    pub fn poll_publish(&mut self) -> Option<u64> {
        if let Some((start, end)) = self.replay {
            let start = start.max(self.oldest);
            let end = end.min(self.publish_next);
            if start < end {
                self.replay = (start + 1 < end).then_some((start + 1, end));
                return Some(start);
            }
            self.replay = None;
        }
        if self.publish_next < self.next_seq
            && self.publish_next - self.puback_base < u64::from(self.config.max_in_flight)
        {
            let s = self.publish_next;
            self.publish_next += 1;
            return Some(s);
        }
        None
    }

    /// The broker PUBACKed `seq` at `now`. PUBACKs for replays and stale ones are ignored.
    pub fn puback(&mut self, now: Instant, seq: u64) {
        if seq < self.puback_base || seq >= self.publish_next {
            return;
        }
        let bit = seq - self.puback_base; // < max_in_flight <= 64
        self.acked_bits |= 1u64 << bit;
        let before = self.puback_base;
        self.settle();
        if self.puback_base > before {
            self.mark(now);
        }
    }

    /// The broker connection dropped: every event without a PUBACK is unpublished again and
    /// will be yielded again, in order. Call when the MQTT client reports the loss.
    pub fn connection_lost(&mut self) {
        self.publish_next = self.puback_base;
        self.acked_bits = 0;
    }

    /// The CRM holds every event `<= upto_seq` (`…/events/ack`): they leave the outbox and are
    /// never yielded again. Older acknowledgements are ignored.
    pub fn crm_ack(&mut self, upto_seq: u64) {
        let new_oldest = upto_seq.saturating_add(1).min(self.next_seq);
        if new_oldest > self.oldest {
            self.advance_oldest(new_oldest, false);
        }
    }

    /// The CRM asks for `[from_seq, to_seq]` again (`…/events/replay`); see the module docs.
    pub fn replay(&mut self, from_seq: u64, to_seq: u64) {
        // `seq` starts at 1: there is no event 0 to replay or to report skipped.
        let from_seq = from_seq.max(1);
        if from_seq > to_seq || from_seq >= self.next_seq {
            return;
        }
        if from_seq < self.oldest {
            let to = to_seq.min(self.oldest - 1);
            self.push_skip(Output::Skipped {
                from: from_seq,
                to,
                reason: SkipReason::Unavailable,
            });
        }
        let start = from_seq.max(self.oldest);
        let end = to_seq.saturating_add(1).min(self.publish_next);
        if start < end {
            self.replay = Some(match self.replay {
                Some((a, b)) => (a.min(start), b.max(end)),
                None => (start, end),
            });
        }
    }

    /// Drops PUBACKed events whose retention has passed. Call when the deadline from
    /// [`Outbox::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(retention) = self.config.retention else {
            return;
        };
        while let Some(m) = self.marks.front().copied() {
            if now.saturating_duration_since(m.last) < retention {
                break;
            }
            let _ = self.marks.pop_front();
            let end = m.end.min(self.puback_base);
            if end > self.oldest {
                self.advance_oldest(end, true);
            }
        }
    }

    /// When the oldest PUBACKed, unacknowledged events reach their retention.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retention = self.config.retention?;
        self.marks.front().map(|m| m.last + retention)
    }

    /// The next store operation. Drain after every input.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(below) = self.delete_below.take() {
            return Some(Output::Delete { below });
        }
        self.skips.pop_front()
    }

    /// Events held (`outbox_depth` in the status message).
    #[must_use]
    pub fn depth(&self) -> u64 {
        self.next_seq - self.oldest
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.depth() == 0
    }

    /// Held events not published since the last (re)connect.
    #[must_use]
    pub fn unpublished(&self) -> u64 {
        self.next_seq - self.publish_next
    }

    /// Events published and awaiting PUBACK (counting out-of-order PUBACKs as still waiting).
    #[must_use]
    pub fn in_flight(&self) -> u64 {
        self.publish_next - self.puback_base
    }

    /// Events PUBACKed and awaiting the CRM's acknowledgement.
    #[must_use]
    pub fn awaiting_crm(&self) -> u64 {
        self.puback_base - self.oldest
    }

    /// The oldest held `seq` (equal to [`Outbox::next_seq`] when empty).
    #[must_use]
    pub fn oldest(&self) -> u64 {
        self.oldest
    }

    /// One past the newest appended `seq`.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Events dropped without the CRM's acknowledgement (full, or retention): a metric.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// `seq.skipped` reports lost because [`Outbox::poll_output`] was not drained.
    #[must_use]
    pub fn skips_lost(&self) -> u32 {
        self.skips_lost
    }

    fn enforce_capacity(&mut self) {
        if self.depth() > self.config.capacity {
            let new_oldest = self.next_seq - self.config.capacity;
            self.advance_oldest(new_oldest, true);
        }
    }

    /// Moves the old end to `new_oldest` (> `oldest`), keeping every invariant.
    fn advance_oldest(&mut self, new_oldest: u64, dropped: bool) {
        let count = new_oldest - self.oldest;
        if dropped {
            self.dropped = self.dropped.saturating_add(count);
        }
        self.oldest = new_oldest;
        if self.publish_next < new_oldest {
            self.publish_next = new_oldest;
        }
        if self.puback_base < new_oldest {
            let shift = new_oldest - self.puback_base;
            self.acked_bits = if shift >= 64 {
                0
            } else {
                self.acked_bits >> shift
            };
            self.puback_base = new_oldest;
            self.settle();
        }
        while self.marks.front().is_some_and(|m| m.end <= new_oldest) {
            let _ = self.marks.pop_front();
        }
        if let Some((start, end)) = self.replay {
            self.replay = (end > new_oldest).then_some((start.max(new_oldest), end));
        }
        self.delete_below = Some(new_oldest);
    }

    /// Advances `puback_base` over PUBACKed events at the front of the window.
    fn settle(&mut self) {
        while self.acked_bits & 1 == 1 {
            self.acked_bits >>= 1;
            self.puback_base += 1;
        }
    }

    fn mark(&mut self, now: Instant) {
        let Some(retention) = self.config.retention else {
            return;
        };
        // Half the marks cover one retention period, so marks are dropped (by
        // `handle_timeout`) before they need merging; a drop is at most `span` late.
        let span = retention / (OUTBOX_RETENTION_MARKS as u32 / 2).max(1);
        if let Some(last) = self.marks.back_mut() {
            if now.saturating_duration_since(last.first) < span {
                last.end = self.puback_base;
                last.last = now;
                return;
            }
        }
        if self.marks.is_full() {
            // Merge the two oldest: later time, larger end (drops no earlier than due).
            if let (Some(a), Some(b)) = (self.marks.pop_front(), self.marks.pop_front()) {
                let _ = self.marks.push_front(Mark {
                    end: b.end,
                    first: a.first,
                    last: b.last,
                });
            }
        }
        let _ = self.marks.push_back(Mark {
            end: self.puback_base,
            first: now,
            last: now,
        });
    }

    fn push_skip(&mut self, skip: Output) {
        if self.skips.push_back(skip).is_err() {
            self.skips_lost = self.skips_lost.saturating_add(1);
        }
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        assert!(self.oldest <= self.puback_base);
        assert!(self.puback_base <= self.publish_next);
        assert!(self.publish_next <= self.next_seq);
        assert!(self.depth() <= self.config.capacity);
        assert!(self.in_flight() <= u64::from(self.config.max_in_flight));
        assert_eq!(self.acked_bits & 1, 0);
        if self.in_flight() < 64 {
            assert_eq!(self.acked_bits >> self.in_flight(), 0);
        }
        if let Some((a, b)) = self.replay {
            assert!(self.oldest <= a && a < b, "{a} {b}");
        }
        let mut prev = self.oldest;
        for m in &self.marks {
            assert!(m.end > prev && m.end <= self.puback_base);
            prev = m.end;
        }
    }
}

#[cfg(test)]
mod tests;
