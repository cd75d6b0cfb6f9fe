//! Where a [`super::Node`] keeps its calls.
//!
//! The node's rules do not depend on how calls are stored, but the right storage does depend on
//! the shell: a gateway firmware keeps a few dozen calls in a fixed array
//! ([`ArrayCalls`]), the daemon keeps up to tens of thousands and must not reserve memory for
//! all of them up front ([`HeapCalls`], with the `std` feature). Both implement [`CallTable`]:
//! a keyed store of [`Slot`]s with an index by SIP Call-ID, a deadline index and a queue of
//! calls with work pending ("dirty" calls, drained by [`super::Node::poll_output`]).

use core::fmt;

use crate::time::Instant;

use super::Slot;

/// A call in the node's table: stable while the call lives, never reused by a table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CallKey(pub u64);

impl fmt::Display for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// The storage a [`super::Node`] keeps its calls in.
///
/// Contract: `insert` assigns a key never used before by this table; `set_deadline` is called
/// with the slot's previous deadline, so an index can remove the old entry; `pop_due` removes
/// the deadline it returns from the index; a key is pushed as dirty at most once until
/// popped (the node tracks that with a flag on the slot).
pub trait CallTable {
    /// Stores a new call; `Err` gives it back when the table is full.
    ///
    /// # Errors
    /// The slot, when there is no room.
    #[allow(clippy::result_large_err)]
    fn insert(&mut self, slot: Slot) -> Result<CallKey, Slot>;
    /// The call with this key.
    fn get(&self, key: CallKey) -> Option<&Slot>;
    /// The call with this key, mutably.
    fn get_mut(&mut self, key: CallKey) -> Option<&mut Slot>;
    /// Removes a call (and its deadline).
    fn remove(&mut self, key: CallKey) -> Option<Slot>;
    /// The call whose SIP Call-ID is `sip_call_id`.
    fn find(&self, sip_call_id: &[u8]) -> Option<CallKey>;
    /// Number of calls stored (ended calls that still answer retransmissions included).
    fn len(&self) -> usize;
    /// Whether no call is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Calls `f` for every call, in no particular order.
    fn for_each(&self, f: &mut dyn FnMut(CallKey, &Slot));
    /// Calls `f` for every call's key, in no particular order.
    fn for_each_key(&self, f: &mut dyn FnMut(CallKey));
    /// Calls `f` for every call; where it returns `true`, queues the call as dirty.
    fn for_each_mut(&mut self, f: &mut dyn FnMut(&mut Slot) -> bool);
    /// Moves the call's deadline from `old` to `new` in the deadline index.
    fn set_deadline(&mut self, key: CallKey, old: Option<Instant>, new: Option<Instant>);
    /// The earliest deadline of any call.
    fn earliest(&self) -> Option<Instant>;
    /// A call whose deadline is `<= now`, taken out of the deadline index.
    fn pop_due(&mut self, now: Instant) -> Option<CallKey>;
    /// Queues a call with pending work.
    fn push_dirty(&mut self, key: CallKey);
    /// The first call with pending work.
    fn peek_dirty(&self) -> Option<CallKey>;
    /// Drops the first call with pending work from the queue.
    fn pop_dirty(&mut self);
}

/// A fixed table of `N` calls with no allocation, for firmware: lookups scan the array, which
/// is the right trade for a few dozen calls.
pub struct ArrayCalls<const N: usize> {
    slots: heapless::Vec<(CallKey, Slot), N>,
    dirty: heapless::Deque<CallKey, N>,
    next: u64,
}

impl<const N: usize> ArrayCalls<N> {
    /// An empty table.
    #[must_use]
    pub const fn new() -> Self {
        ArrayCalls {
            slots: heapless::Vec::new(),
            dirty: heapless::Deque::new(),
            next: 1,
        }
    }

    fn index(&self, key: CallKey) -> Option<usize> {
        self.slots.iter().position(|(k, _)| *k == key)
    }
}

impl<const N: usize> Default for ArrayCalls<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for ArrayCalls<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayCalls")
            .field("calls", &self.slots.len())
            .field("capacity", &N)
            .finish_non_exhaustive()
    }
}

impl<const N: usize> CallTable for ArrayCalls<N> {
    fn insert(&mut self, slot: Slot) -> Result<CallKey, Slot> {
        let key = CallKey(self.next);
        match self.slots.push((key, slot)) {
            Ok(()) => {
                self.next += 1;
                Ok(key)
            }
            Err((_, slot)) => Err(slot),
        }
    }

    fn get(&self, key: CallKey) -> Option<&Slot> {
        self.slots.iter().find(|(k, _)| *k == key).map(|(_, s)| s)
    }

    fn get_mut(&mut self, key: CallKey) -> Option<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|(k, _)| *k == key)
            .map(|(_, s)| s)
    }

    fn remove(&mut self, key: CallKey) -> Option<Slot> {
        let i = self.index(key)?;
        Some(self.slots.swap_remove(i).1)
    }

    fn find(&self, sip_call_id: &[u8]) -> Option<CallKey> {
        self.slots
            .iter()
            .find(|(_, s)| s.call.sip_call_id() == sip_call_id)
            .map(|(k, _)| *k)
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn for_each(&self, f: &mut dyn FnMut(CallKey, &Slot)) {
        for (k, s) in &self.slots {
            f(*k, s);
        }
    }

    fn for_each_key(&self, f: &mut dyn FnMut(CallKey)) {
        for (k, _) in &self.slots {
            f(*k);
        }
    }

    fn for_each_mut(&mut self, f: &mut dyn FnMut(&mut Slot) -> bool) {
        for (k, s) in &mut self.slots {
            if f(s) {
                let _ = self.dirty.push_back(*k);
            }
        }
    }

    fn set_deadline(&mut self, _key: CallKey, _old: Option<Instant>, _new: Option<Instant>) {
        // The deadline lives in the slot; `earliest` and `pop_due` scan.
    }

    fn earliest(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|(_, s)| s.deadline).min()
    }

    fn pop_due(&mut self, now: Instant) -> Option<CallKey> {
        let (key, slot) = self
            .slots
            .iter_mut()
            .filter(|(_, s)| s.deadline.is_some_and(|d| d <= now))
            .min_by_key(|(_, s)| s.deadline)?;
        slot.deadline = None;
        Some(*key)
    }

    fn push_dirty(&mut self, key: CallKey) {
        // Cannot overflow: at most one entry per stored call.
        let _ = self.dirty.push_back(key);
    }

    fn peek_dirty(&self) -> Option<CallKey> {
        self.dirty.front().copied()
    }

    fn pop_dirty(&mut self) {
        let _ = self.dirty.pop_front();
    }
}

#[cfg(feature = "std")]
pub use heap::HeapCalls;

#[cfg(feature = "std")]
mod heap {
    extern crate alloc;

    use alloc::boxed::Box;
    use alloc::collections::{BTreeSet, VecDeque};
    use std::collections::HashMap;

    use super::{CallKey, CallTable, Slot};
    use crate::time::Instant;

    /// The daemon's table: calls boxed in a hash map (memory grows with the calls actually
    /// up), a hash index by SIP Call-ID and an ordered deadline index, so every operation is
    /// O(1) or O(log n) at tens of thousands of calls.
    #[derive(Default)]
    pub struct HeapCalls {
        slots: HashMap<u64, Box<Slot>>,
        by_sip: HashMap<Box<[u8]>, u64>,
        deadlines: BTreeSet<(Instant, u64)>,
        dirty: VecDeque<CallKey>,
        next: u64,
        capacity: usize,
    }

    impl HeapCalls {
        /// A table that holds at most `capacity` calls.
        #[must_use]
        pub fn with_capacity(capacity: usize) -> HeapCalls {
            HeapCalls {
                capacity,
                next: 1,
                ..HeapCalls::default()
            }
        }
    }

    impl core::fmt::Debug for HeapCalls {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.debug_struct("HeapCalls")
                .field("calls", &self.slots.len())
                .field("capacity", &self.capacity)
                .finish_non_exhaustive()
        }
    }

    impl CallTable for HeapCalls {
        fn insert(&mut self, slot: Slot) -> Result<CallKey, Slot> {
            if self.slots.len() >= self.capacity {
                return Err(slot);
            }
            let key = self.next.max(1);
            self.next = key + 1;
            self.by_sip.insert(slot.call.sip_call_id().into(), key);
            self.slots.insert(key, Box::new(slot));
            Ok(CallKey(key))
        }

        fn get(&self, key: CallKey) -> Option<&Slot> {
            self.slots.get(&key.0).map(|b| &**b)
        }

        fn get_mut(&mut self, key: CallKey) -> Option<&mut Slot> {
            self.slots.get_mut(&key.0).map(|b| &mut **b)
        }

        fn remove(&mut self, key: CallKey) -> Option<Slot> {
            let slot = self.slots.remove(&key.0)?;
            if let Some(d) = slot.deadline {
                self.deadlines.remove(&(d, key.0));
            }
            if self.by_sip.get(slot.call.sip_call_id()) == Some(&key.0) {
                self.by_sip.remove(slot.call.sip_call_id());
            }
            Some(*slot)
        }

        fn find(&self, sip_call_id: &[u8]) -> Option<CallKey> {
            self.by_sip.get(sip_call_id).map(|k| CallKey(*k))
        }

        fn len(&self) -> usize {
            self.slots.len()
        }

        fn for_each(&self, f: &mut dyn FnMut(CallKey, &Slot)) {
            for (k, s) in &self.slots {
                f(CallKey(*k), s);
            }
        }

        fn for_each_key(&self, f: &mut dyn FnMut(CallKey)) {
            for k in self.slots.keys() {
                f(CallKey(*k));
            }
        }

        fn for_each_mut(&mut self, f: &mut dyn FnMut(&mut Slot) -> bool) {
            for (k, s) in &mut self.slots {
                if f(s) {
                    self.dirty.push_back(CallKey(*k));
                }
            }
        }

        fn set_deadline(&mut self, key: CallKey, old: Option<Instant>, new: Option<Instant>) {
            if let Some(t) = old {
                self.deadlines.remove(&(t, key.0));
            }
            if let Some(t) = new {
                self.deadlines.insert((t, key.0));
            }
        }

        fn earliest(&self) -> Option<Instant> {
            self.deadlines.first().map(|(t, _)| *t)
        }

        fn pop_due(&mut self, now: Instant) -> Option<CallKey> {
            let &(t, key) = self.deadlines.first()?;
            if t > now {
                return None;
            }
            self.deadlines.pop_first();
            if let Some(s) = self.slots.get_mut(&key) {
                s.deadline = None;
            }
            Some(CallKey(key))
        }

        fn push_dirty(&mut self, key: CallKey) {
            self.dirty.push_back(key);
        }

        fn peek_dirty(&self) -> Option<CallKey> {
            self.dirty.front().copied()
        }

        fn pop_dirty(&mut self) {
            self.dirty.pop_front();
        }
    }
}
