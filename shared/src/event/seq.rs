//! The per-node event `seq`: strictly increasing, never repeated, across restarts.
//!
//! ## Reservation scheme
//!
//! Writing the counter to disk for every event would cost an fsync per event, so the node
//! reserves numbers in blocks ([`SEQ_RESERVE_BLOCK`] by default) and persists only a
//! **high-water mark** `H`: a promise that every `seq` ever issued is `< H`.
//!
//! ```text
//! let mut s = Sequencer::restore(read_high_water().unwrap_or(0));   // issues nothing yet
//! loop {
//!     while let Some(h) = s.poll_reserve() {   // at start, and when half a block is left
//!         write_and_fsync(h)?;                 // on failure: s.reserve_failed()
//!         s.reserved(h);
//!     }
//!     match s.next() { Ok(seq) => …, Err(SeqError::NotReserved) => /* wait for the write */ }
//! }
//! ```
//!
//! [`Sequencer::next`] only hands out numbers below a mark the shell has confirmed durable
//! with [`Sequencer::reserved`], so a crash at any instant can only *skip* numbers (the unused
//! rest of the block), never repeat one: after a restart, [`Sequencer::restore`] starts at the
//! persisted mark. The next reservation is requested when half a block is left, so a shell
//! that persists asynchronously never stalls while traffic is below half a block per fsync.
//!
//! ## The restart gap
//!
//! The skipped range is `[last issued + 1, H - 1]`. The shell knows the last issued `seq` from
//! its outbox store (or the CRM acknowledgement point it persists); with it,
//! [`Sequencer::restore_after`] reports the gap through [`Sequencer::restart_gap`], and the
//! shell publishes a `seq.skipped` event for it (see [`crate::event`]). `seq` starts at 1.

use core::fmt;

use crate::limits::SEQ_RESERVE_BLOCK;

/// Why [`Sequencer::next`] issued nothing.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SeqError {
    /// Every durably reserved number is used: persist the mark from
    /// [`Sequencer::poll_reserve`] and confirm it with [`Sequencer::reserved`] first.
    NotReserved,
}

impl fmt::Display for SeqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no durably reserved sequence number left")
    }
}

impl core::error::Error for SeqError {}

/// Issues per-node `seq` numbers from durably reserved blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequencer {
    /// The next number to issue.
    next: u64,
    /// Numbers `< reserved_end` are covered by a durable high-water mark.
    reserved_end: u64,
    /// A mark handed out by `poll_reserve` and not confirmed yet.
    requested: Option<u64>,
    block: u64,
    /// Where issuing restarted, and the gap before it.
    gap: Option<(u64, u64)>,
}

impl Sequencer {
    /// A sequencer after a (re)start, from the persisted high-water mark (0 when there is
    /// none): it issues numbers `>= persisted_high_water` (and `>= 1`) once the first
    /// reservation is confirmed. Blocks of [`SEQ_RESERVE_BLOCK`].
    #[must_use]
    pub fn restore(persisted_high_water: u64) -> Sequencer {
        Self::restore_after(persisted_high_water, None, SEQ_RESERVE_BLOCK)
    }

    /// Like [`Sequencer::restore`], also told the last `seq` the shell knows was issued
    /// (highest in its outbox store, or its persisted acknowledgement point), to compute the
    /// [`Sequencer::restart_gap`]; and with a block size (at least 2).
    #[must_use]
    pub fn restore_after(
        persisted_high_water: u64,
        last_issued: Option<u64>,
        block: u64,
    ) -> Sequencer {
        let after_last = last_issued.map_or(1, |l| l.saturating_add(1));
        let next = persisted_high_water.max(after_last).max(1);
        let gap = last_issued
            .map(|l| l.saturating_add(1))
            .filter(|&first_skipped| first_skipped < next)
            .map(|first_skipped| (first_skipped, next - 1));
        Sequencer {
            next,
            reserved_end: next,
            requested: None,
            block: block.max(2),
            gap,
        }
    }

    /// The next `seq`. Call once per event, before writing it to the outbox.
    ///
    /// # Errors
    /// [`SeqError::NotReserved`] when no durably reserved number is left.
    // Not an `Iterator`: running out of reserved numbers is an error to handle, not an end.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<u64, SeqError> {
        if self.next >= self.reserved_end {
            return Err(SeqError::NotReserved);
        }
        let s = self.next;
        self.next += 1;
        Ok(s)
    }

    /// A new high-water mark to persist durably, when half a block or less is left and no
    /// reservation is outstanding. Poll after [`Sequencer::restore`] and after every
    /// [`Sequencer::next`]; persist the value (write + fsync), then call
    /// [`Sequencer::reserved`].
    #[must_use]
    pub fn poll_reserve(&mut self) -> Option<u64> {
        if self.requested.is_some() || self.reserved_end - self.next > self.block / 2 {
            return None;
        }
        let mark = self.reserved_end.saturating_add(self.block);
        self.requested = Some(mark);
        Some(mark)
    }

    /// The mark from [`Sequencer::poll_reserve`] is durable: numbers below it may be issued.
    pub fn reserved(&mut self, high_water: u64) {
        self.reserved_end = self.reserved_end.max(high_water);
        if self.requested.is_some_and(|r| r <= high_water) {
            self.requested = None;
        }
    }

    /// Persisting the mark failed: the next [`Sequencer::poll_reserve`] asks again.
    pub fn reserve_failed(&mut self) {
        self.requested = None;
    }

    /// The `seq` the next [`Sequencer::next`] would return.
    #[must_use]
    pub fn peek(&self) -> u64 {
        self.next
    }

    /// Numbers still issuable without a new reservation.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.reserved_end - self.next
    }

    /// The inclusive range skipped by the restart (`None` when nothing was skipped or the
    /// last issued `seq` was not given): publish it as a `seq.skipped` event.
    #[must_use]
    pub fn restart_gap(&self) -> Option<(u64, u64)> {
        self.gap
    }
}

#[cfg(test)]
mod tests {
    // Tests may use std (house rule); the alloc-vs-std lint is about library code.
    #![allow(clippy::std_instead_of_alloc)]
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    #[test]
    fn nothing_issued_before_the_first_reservation() {
        let mut s = Sequencer::restore(0);
        assert_eq!(s.next(), Err(SeqError::NotReserved));
        assert_eq!(s.poll_reserve(), Some(1 + SEQ_RESERVE_BLOCK));
        // Outstanding: not asked twice.
        assert_eq!(s.poll_reserve(), None);
        assert_eq!(s.next(), Err(SeqError::NotReserved));
        s.reserved(1 + SEQ_RESERVE_BLOCK);
        assert_eq!(s.next(), Ok(1));
        assert_eq!(s.next(), Ok(2));
        assert_eq!(s.poll_reserve(), None);
    }

    #[test]
    fn reserves_again_at_half_a_block() {
        let mut s = Sequencer::restore_after(100, None, 10);
        let m = s.poll_reserve().unwrap();
        assert_eq!(m, 110);
        s.reserved(m);
        for expect in 100..104 {
            assert_eq!(s.next(), Ok(expect));
            assert_eq!(s.poll_reserve(), None, "at {expect}");
        }
        assert_eq!(s.next(), Ok(104)); // 5 left: half a block
        assert_eq!(s.poll_reserve(), Some(120));
        s.reserve_failed();
        assert_eq!(s.poll_reserve(), Some(120));
        s.reserved(120);
        assert_eq!(s.remaining(), 15);
    }

    #[test]
    fn restart_gap_is_reported() {
        let s = Sequencer::restore_after(2001, Some(1500), 1000);
        assert_eq!(s.peek(), 2001);
        assert_eq!(s.restart_gap(), Some((1501, 2000)));
        // The outbox knows a higher seq than the mark (should not happen): never repeat it.
        let s = Sequencer::restore_after(10, Some(20), 1000);
        assert_eq!(s.peek(), 21);
        assert_eq!(s.restart_gap(), None);
        let s = Sequencer::restore_after(21, Some(20), 1000);
        assert_eq!(s.restart_gap(), None);
        assert_eq!(Sequencer::restore(0).restart_gap(), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Next,
        /// The shell persists an outstanding mark (the write may be lost in a crash before it
        /// is confirmed).
        Persist {
            confirm: bool,
        },
        Crash,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            20 => Just(Op::Next),
            4 => proptest::bool::ANY.prop_map(|confirm| Op::Persist { confirm }),
            1 => Just(Op::Crash),
        ]
    }

    proptest! {
        /// Across simulated crashes and restores from the persisted mark, every issued seq is
        /// strictly greater than every earlier one, and the reported gap covers exactly the
        /// numbers never issued.
        #[test]
        fn seq_never_repeats_across_restarts(
            ops in proptest::collection::vec(arb_op(), 1..400),
            block in 2u64..50,
        ) {
            let mut disk: u64 = 0;
            let mut s = Sequencer::restore_after(disk, None, block);
            let mut pending: Option<u64> = None;
            let mut issued: Vec<u64> = Vec::new();
            let mut skipped: u64 = 0;
            for op in ops {
                match op {
                    Op::Next => {
                        if let Some(m) = s.poll_reserve() { pending = Some(m); }
                        if let Ok(seq) = s.next() {
                            if let Some(&last) = issued.last() {
                                prop_assert!(seq > last);
                                skipped += seq - last - 1;
                            }
                            issued.push(seq);
                        }
                    }
                    Op::Persist { confirm } => {
                        if let Some(m) = pending.take() {
                            disk = m;
                            if confirm { s.reserved(m); }
                            else { pending = Some(m); }
                        }
                    }
                    Op::Crash => {
                        s = Sequencer::restore_after(disk, issued.last().copied(), block);
                        pending = None;
                        if let Some((a, b)) = s.restart_gap() {
                            prop_assert_eq!(Some(a - 1), issued.last().copied());
                            prop_assert_eq!(b + 1, s.peek());
                        }
                    }
                }
                // The durable mark always covers everything issued.
                if let Some(&last) = issued.last() { prop_assert!(last < disk); }
            }
            // Without gaps, issuing is contiguous.
            let first = issued.first().copied().unwrap_or(1);
            let last = issued.last().copied().unwrap_or(0);
            prop_assert_eq!(u64::try_from(issued.len()).unwrap() + skipped, (last + 1).saturating_sub(first));
        }
    }
}
