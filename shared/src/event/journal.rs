//! The event journal: numbering, durable reservation, the outbox and `seq.skipped`, as one
//! sans-IO machine that every shell drives the same way.
//!
//! A [`Journal`] joins a [`Sequencer`] and an [`Outbox`] with the rules between them that a
//! shell would otherwise write itself (and the daemon and the simulator once wrote twice):
//!
//! * events wait in a queue until a durably reserved `seq` is free for them; the queue has a
//!   bound, beyond which its oldest event is dropped and counted;
//! * a reservation is asked for ([`Output::Reserve`]) when the sequencer needs one, and at most
//!   one is outstanding;
//! * each numbered event is handed out once ([`Output::Append`]) and counted in the outbox at
//!   that moment: the shell writes it (and keeps publishing it from memory if the write fails);
//! * the restart gap and replays of events no longer held become `seq.skipped` events, queued
//!   like any other;
//! * the CRM's acknowledgement point is handed out to be persisted ([`Output::Acked`]) before
//!   the deletions it causes ([`Output::Delete`]).
//!
//! ## Driving it
//!
//! ```text
//! let mut j = Journal::new(config, block, queue, max_waiting);   // events may be pushed now
//! j.restore(wall, Restored { … });          // once the store's counters are read
//! j.push(event);                             // from the node, in order
//! loop match j.poll_output() {
//!     Reserve(mark)      => persist it; j.reserved(mark) or j.reserve_failed() (then retry later)
//!     Append { seq, e }  => render and write it (batching consecutive appends is fine)
//!     Delete { below }   => write pending appends first; delete below, persist the floor
//!     Acked(n)           => persist n
//!     None               => break
//! }
//! while let Some(seq) = j.poll_publish() { publish it; on PUBACK j.puback(now, seq) }
//! ```
//!
//! The outbox's own rules (in-flight window, replays, retention, capacity) are unchanged; see
//! [`super::outbox`].

use super::outbox::{self, Outbox};
use super::seq::Sequencer;
use super::SkipReason;
use crate::time::{Instant, UnixMillis};

/// A FIFO of events waiting for a `seq`: a heapless `Deque` on firmware, a `VecDeque` with
/// `std`.
pub trait Waiting {
    /// An event.
    type Item;
    /// Appends; gives the event back when there is no room.
    ///
    /// # Errors
    /// The event, when the queue is full.
    fn push_back(&mut self, item: Self::Item) -> Result<(), Self::Item>;
    /// Takes the oldest.
    fn pop_front(&mut self) -> Option<Self::Item>;
    /// The oldest.
    fn front(&self) -> Option<&Self::Item>;
    /// How many wait.
    fn len(&self) -> usize;
    /// Whether none waits.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Visits every waiting event, oldest first.
    fn for_each(&self, f: &mut dyn FnMut(&Self::Item));
}

impl<T, const N: usize> Waiting for heapless::Deque<T, N> {
    type Item = T;
    fn push_back(&mut self, item: T) -> Result<(), T> {
        heapless::Deque::push_back(self, item)
    }
    fn pop_front(&mut self) -> Option<T> {
        heapless::Deque::pop_front(self)
    }
    fn front(&self) -> Option<&T> {
        heapless::Deque::front(self)
    }
    fn len(&self) -> usize {
        heapless::Deque::len(self)
    }
    fn for_each(&self, f: &mut dyn FnMut(&T)) {
        self.iter().for_each(f);
    }
}

#[cfg(feature = "std")]
mod vecdeque {
    extern crate alloc;
    use alloc::collections::VecDeque;

    impl<T> super::Waiting for VecDeque<T> {
        type Item = T;
        fn push_back(&mut self, item: T) -> Result<(), T> {
            VecDeque::push_back(self, item);
            Ok(())
        }
        fn pop_front(&mut self) -> Option<T> {
            VecDeque::pop_front(self)
        }
        fn front(&self) -> Option<&T> {
            VecDeque::front(self)
        }
        fn len(&self) -> usize {
            VecDeque::len(self)
        }
        fn for_each(&self, f: &mut dyn FnMut(&T)) {
            self.iter().for_each(f);
        }
    }
}

/// An event before it has a `seq`, as the shell queues it.
pub trait Unnumbered: Sized {
    /// The `seq.skipped` event for `[from, to]`, at `at`.
    fn seq_skipped(at: UnixMillis, from: u64, to: u64, reason: SkipReason) -> Self;
    /// When it happened.
    fn at(&self) -> UnixMillis;
}

/// What the shell read from its store at start-up.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// The persisted `seq` high-water mark (every issued `seq` is below it).
    pub high_water: u64,
    /// The last `seq` known to have been issued: see [`Restored::last_issued`]. `None` when
    /// nothing is known (a fresh store).
    pub last_issued: Option<u64>,
    /// The lowest and highest `seq` the store's outbox holds, when it holds any.
    pub held: Option<(u64, u64)>,
    /// The persisted CRM acknowledgement point.
    pub acked: u64,
}

impl Restored {
    /// The last `seq` issued before the restart, from what a store keeps: the newest event
    /// it holds, the CRM's acknowledgement point, and the floor below which it deleted
    /// everything (`floor - 1`).
    #[must_use]
    pub fn last_issued(
        held_newest: Option<u64>,
        acked: Option<u64>,
        floor: Option<u64>,
    ) -> Option<u64> {
        [held_newest, acked, floor.and_then(|f| f.checked_sub(1))]
            .into_iter()
            .flatten()
            .filter(|&s| s > 0)
            .max()
    }
}

/// Work for the shell; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<E> {
    /// Persist this high-water mark durably, then call [`Journal::reserved`] (or
    /// [`Journal::reserve_failed`], and poll again later: it asks again at once).
    Reserve(u64),
    /// `event` is `seq`: write it to the outbox store (the journal already holds it).
    Append {
        /// Its number.
        seq: u64,
        /// The event.
        event: E,
    },
    /// Delete every stored event below `below` and persist `below` as the floor.
    Delete {
        /// Exclusive bound.
        below: u64,
    },
    /// Persist the CRM's acknowledgement point.
    Acked(u64),
}

#[derive(Debug)]
struct Live {
    seq: Sequencer,
    outbox: Outbox,
}

/// The event journal; see the module docs.
#[derive(Debug)]
pub struct Journal<Q: Waiting> {
    config: outbox::Config,
    block: u64,
    live: Option<Live>,
    /// The restart gap's `seq.skipped` event, numbered before anything waiting.
    gap: Option<Q::Item>,
    waiting: Q,
    max_waiting: usize,
    waiting_dropped: u64,
    wall: UnixMillis,
    last_seq: u64,
    acked: u64,
    acked_unsaved: Option<u64>,
    /// A reservation failed: no new one is asked for until [`Journal::retry`].
    reserve_paused: bool,
}

impl<Q: Waiting> Journal<Q>
where
    Q::Item: Unnumbered,
{
    /// A journal not restored yet: events may be pushed; nothing is numbered until
    /// [`Journal::restore`]. `block` is the reservation block; at most `max_waiting` events
    /// wait for a `seq` (beyond, the oldest is dropped and counted in [`Journal::dropped`]).
    pub fn new(config: outbox::Config, block: u64, waiting: Q, max_waiting: usize) -> Self {
        Journal {
            config,
            block,
            live: None,
            gap: None,
            waiting,
            max_waiting: max_waiting.max(1),
            waiting_dropped: 0,
            wall: UnixMillis(0),
            last_seq: 0,
            acked: 0,
            acked_unsaved: None,
            reserve_paused: false,
        }
    }

    /// Starts numbering after what the store holds. A restart gap (numbers reserved before a
    /// crash and never issued) becomes a `seq.skipped` event ahead of the events waiting.
    pub fn restore(&mut self, wall: UnixMillis, r: Restored) {
        self.wall = wall;
        let seq = Sequencer::restore_after(r.high_water, r.last_issued, self.block);
        let outbox = match r.held {
            Some((lo, hi)) => Outbox::restore(self.config, lo, hi.saturating_add(1)),
            None => Outbox::new(self.config),
        };
        self.last_seq = r.last_issued.unwrap_or(0);
        self.acked = r.acked;
        // Numbered ahead of whatever was pushed before the restore.
        self.gap = seq
            .restart_gap()
            .map(|(from, to)| Q::Item::seq_skipped(wall, from, to, SkipReason::Restart));
        self.live = Some(Live { seq, outbox });
    }

    /// Whether [`Journal::restore`] was called.
    #[must_use]
    pub fn is_restored(&self) -> bool {
        self.live.is_some()
    }

    /// An event from the node, in order.
    pub fn push(&mut self, event: Q::Item) {
        self.wall = self.wall.max(event.at());
        self.enqueue(event);
    }

    fn enqueue(&mut self, event: Q::Item) {
        enqueue(
            &mut self.waiting,
            self.max_waiting,
            &mut self.waiting_dropped,
            event,
        );
    }

    /// The next piece of work; call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output<Q::Item>> {
        let live = self.live.as_mut()?;
        if let Some(n) = self.acked_unsaved.take() {
            return Some(Output::Acked(n));
        }
        while let Some(o) = live.outbox.poll_output() {
            match o {
                outbox::Output::Delete { below } => return Some(Output::Delete { below }),
                outbox::Output::Skipped { from, to, reason } => {
                    let ev = Q::Item::seq_skipped(self.wall, from, to, reason);
                    enqueue(
                        &mut self.waiting,
                        self.max_waiting,
                        &mut self.waiting_dropped,
                        ev,
                    );
                }
            }
        }
        if !self.reserve_paused {
            if let Some(mark) = live.seq.poll_reserve() {
                return Some(Output::Reserve(mark));
            }
        }
        if self.gap.is_none() && self.waiting.is_empty() {
            return None;
        }
        let seq = live.seq.next().ok()?;
        let event = match self.gap.take() {
            Some(e) => e,
            None => self.waiting.pop_front()?,
        };
        // Cannot fail: the sequencer only hands out increasing numbers above the restore.
        let _ = live.outbox.appended(seq);
        self.last_seq = self.last_seq.max(seq);
        Some(Output::Append { seq, event })
    }

    /// The mark from [`Output::Reserve`] is durable.
    pub fn reserved(&mut self, mark: u64) {
        if let Some(l) = self.live.as_mut() {
            l.seq.reserved(mark);
        }
    }

    /// Persisting the mark failed: no reservation is asked for again until
    /// [`Journal::retry`] (the shell's retry timer).
    pub fn reserve_failed(&mut self) {
        if let Some(l) = self.live.as_mut() {
            l.seq.reserve_failed();
        }
        self.reserve_paused = true;
    }

    /// Asks for a failed reservation again on the next [`Journal::poll_output`].
    pub fn retry(&mut self) {
        self.reserve_paused = false;
    }

    /// The next `seq` to publish; see [`Outbox::poll_publish`].
    pub fn poll_publish(&mut self) -> Option<u64> {
        self.live.as_mut()?.outbox.poll_publish()
    }

    /// The broker PUBACKed `seq`.
    pub fn puback(&mut self, now: Instant, seq: u64) {
        if let Some(l) = self.live.as_mut() {
            l.outbox.puback(now, seq);
        }
    }

    /// The broker connection is gone: everything without a PUBACK is unpublished again.
    pub fn connection_lost(&mut self) {
        if let Some(l) = self.live.as_mut() {
            l.outbox.connection_lost();
        }
    }

    /// The CRM holds everything up to `upto`.
    pub fn crm_ack(&mut self, upto: u64) {
        let Some(l) = self.live.as_mut() else {
            return;
        };
        l.outbox.crm_ack(upto);
        let acked = upto.min(self.last_seq);
        if acked > self.acked {
            self.acked = acked;
            self.acked_unsaved = Some(acked);
        }
    }

    /// The CRM asks for `[from, to]` again; what is no longer held becomes `seq.skipped`.
    pub fn replay(&mut self, wall: UnixMillis, from: u64, to: u64) {
        self.wall = self.wall.max(wall);
        if let Some(l) = self.live.as_mut() {
            l.outbox.replay(from, to);
        }
    }

    /// Applies retention (see [`Outbox::handle_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(l) = self.live.as_mut() {
            l.outbox.handle_timeout(now);
        }
    }

    /// When retention next has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.live.as_ref()?.outbox.poll_timeout()
    }

    /// The outbox (depth, in flight, oldest …), once restored.
    #[must_use]
    pub fn outbox(&self) -> Option<&Outbox> {
        self.live.as_ref().map(|l| &l.outbox)
    }

    /// The `seq` the next event would get: the high-water mark to leave on a graceful stop.
    #[must_use]
    pub fn next_unissued(&self) -> Option<u64> {
        self.live.as_ref().map(|l| l.seq.peek())
    }

    /// Events held (not acknowledged by the CRM), plus those waiting for a `seq`.
    #[must_use]
    pub fn depth(&self) -> u64 {
        self.outbox().map_or(0, Outbox::depth) + self.unnumbered() as u64
    }

    /// Events waiting for a `seq` (the restart gap's `seq.skipped` included).
    #[must_use]
    pub fn unnumbered(&self) -> usize {
        self.waiting.len() + usize::from(self.gap.is_some())
    }

    /// Visits every event waiting for a `seq`, in the order they will be numbered (what a
    /// crash loses).
    pub fn for_each_unnumbered(&self, mut f: impl FnMut(&Q::Item)) {
        if let Some(g) = &self.gap {
            f(g);
        }
        self.waiting.for_each(&mut f);
    }

    /// When the oldest event waiting for a `seq` happened.
    #[must_use]
    pub fn oldest_unnumbered_at(&self) -> Option<UnixMillis> {
        self.gap
            .as_ref()
            .or_else(|| self.waiting.front())
            .map(Unnumbered::at)
    }

    /// Events dropped unacknowledged: by the outbox (full, retention) or while waiting.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.outbox().map_or(0, Outbox::dropped) + self.waiting_dropped
    }

    /// The last `seq` issued.
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The highest `seq` the CRM acknowledged.
    #[must_use]
    pub fn acked_seq(&self) -> u64 {
        self.acked
    }

    /// Nothing waits, and everything held was published and PUBACKed.
    #[must_use]
    pub fn flushed(&self) -> bool {
        self.unnumbered() == 0
            && self
                .outbox()
                .is_none_or(|o| o.unpublished() == 0 && o.in_flight() == 0)
    }
}

/// Puts `event` at the back of the waiting queue. At the bound (`max_waiting`, or the queue's
/// own capacity when that is smaller) the oldest waiting event makes room and is counted in
/// `dropped`: nothing leaves the queue uncounted.
fn enqueue<Q: Waiting>(waiting: &mut Q, max_waiting: usize, dropped: &mut u64, event: Q::Item) {
    if waiting.len() >= max_waiting {
        let _ = waiting.pop_front();
        *dropped = dropped.saturating_add(1);
    }
    if let Err(e) = waiting.push_back(event) {
        let _ = waiting.pop_front();
        *dropped = dropped.saturating_add(1);
        let _ = waiting.push_back(e);
    }
}

#[cfg(test)]
mod tests;
