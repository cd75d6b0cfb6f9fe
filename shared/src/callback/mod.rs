//! The node's local callback queue.
//!
//! A caller who asks to be called back gets an entry here. The queue decides when the caller
//! may be told "booked", what the shell writes to disk, what it publishes to the CRM
//! (`P/nodes/{site}/{node}/callbacks`, a CallbackRequest) and how the CRM's state updates
//! (`…/callbacks/{callback_id}/state`) move an entry on.
//!
//! ## States
//!
//! ```text
//! Requested ──stored(ok)──▶ Stored ──synced──▶ Synced ──crm accepted──▶ Accepted ──crm assigned──▶ Assigned
//!     │                       │                  │                        │                          │
//!     └─stored(fail): removed └──────────────────┴─ crm completed / cancelled, technician cancel, max age ─▶ Completed | Cancelled | Expired (removed)
//! ```
//!
//! * [`State::Requested`]: the IVR asked; the shell is writing the entry. **Not booked.**
//! * [`State::Stored`]: the shell reported the entry durably on disk. From here on the
//!   callback is **booked** and the caller may be told so (docs/ARCHITECTURE.md, "Durability
//!   delivery").
//! * [`State::Synced`]: the CallbackRequest was published and PUBACKed.
//! * [`State::Accepted`] / [`State::Assigned`]: the CRM's state updates.
//! * [`State::Completed`] / [`State::Cancelled`] / [`State::Expired`]: final; the entry leaves
//!   the queue (and the disk).
//!
//! CRM updates only move an entry forward (an `accepted` after `assigned` is refused); an
//! `accepted` may skip `Synced` (the PUBACK can be lost while the message arrived).
//!
//! **Waiting** entries are the Stored, Synced and Accepted ones; [`CallbackQueue::position`] is
//! the 1-based rank among them in request order, so positions are always `1..=n`.
//!
//! ## What the shell does ([`Output`])
//!
//! Outputs name an entry by id; the record to write or publish is [`CallbackQueue::get`] at the
//! moment the output is polled. Pending work is kept as per-entry flags, so repeated changes
//! coalesce and the output backlog never exceeds the queue.
//!
//! | output | shell action | answer |
//! |---|---|---|
//! | [`Output::Store`] | write the record durably (fsync) | [`CallbackQueue::stored`]`(id, ok)`; tell the caller "booked, position N" only on `Booked` |
//! | [`Output::Publish`] | publish a CallbackRequest with the given position | [`CallbackQueue::synced`] on PUBACK |
//! | [`Output::Update`] | rewrite the record's state (best effort) | – |
//! | [`Output::Remove`] | delete the record (final state given) | – |
//!
//! A record on disk in state `Requested` was written but its confirmation may not have been
//! processed before a crash: [`CallbackQueue::restore`] treats it as Stored (it *is* durable).
//! Restored entries not yet accepted by the CRM are published again, and so are they after
//! [`CallbackQueue::resync`] (call it on every broker (re)connect, since a broker's PUBACK is
//! not durable); the CRM de-duplicates by `callback_id`.
//!
//! ## De-duplication
//!
//! A request for a callback number that already has a live entry requested less than
//! [`Config::dedup_window`] ago is refused with [`QueueError::Duplicate`], naming the existing
//! entry and its position, so the IVR can say "you are already booked".
//!
//! ## Memory
//!
//! One [`Entry`] is 272 bytes on x86_64 (the two 64-byte heapless ids dominate); the queue
//! with [`CALLBACK_QUEUE_CAPACITY`] entries plus their pending-output flags is 71,720 bytes.
//! A test asserts <= 384 bytes and < 96 KiB. Pending outputs are per-entry flags, so the
//! output backlog costs nothing extra and never overflows.

use core::fmt;

use heapless::Vec;

use crate::announce::Language;
use crate::ids::{AnnouncementId, CallId, CallbackId};
use crate::limits::CALLBACK_QUEUE_CAPACITY;
use crate::number::PhoneNumber;
use crate::time::{Duration, UnixMillis};

/// Where one callback stands; see the module docs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum State {
    /// The IVR asked; not yet durable.
    Requested,
    /// Durably on disk: booked.
    Stored,
    /// Published and PUBACKed.
    Synced,
    /// The CRM accepted it.
    Accepted,
    /// The CRM assigned it to an agent.
    Assigned,
    /// The CRM reports the call-back done.
    Completed,
    /// The CRM or a technician cancelled it.
    Cancelled,
    /// It waited longer than [`Config::max_age`].
    Expired,
}

impl State {
    /// Every state, in the order a callback moves through them.
    pub const ALL: [State; 8] = [
        State::Requested,
        State::Stored,
        State::Synced,
        State::Accepted,
        State::Assigned,
        State::Completed,
        State::Cancelled,
        State::Expired,
    ];

    /// The state [`State::as_str`] names, `None` for any other text.
    #[must_use]
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Lower-case name for the CLI and the status message.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            State::Requested => "requested",
            State::Stored => "stored",
            State::Synced => "synced",
            State::Accepted => "accepted",
            State::Assigned => "assigned",
            State::Completed => "completed",
            State::Cancelled => "cancelled",
            State::Expired => "expired",
        }
    }

    /// Stored or later: the caller may be (or was) told "booked".
    #[must_use]
    pub fn is_booked(self) -> bool {
        self != State::Requested
    }

    /// Counted in queue positions: Stored, Synced or Accepted.
    #[must_use]
    pub fn is_waiting(self) -> bool {
        matches!(self, State::Stored | State::Synced | State::Accepted)
    }

    /// Completed, Cancelled or Expired.
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, State::Completed | State::Cancelled | State::Expired)
    }

    fn rank(self) -> u8 {
        match self {
            State::Requested => 0,
            State::Stored => 1,
            State::Synced => 2,
            State::Accepted => 3,
            State::Assigned => 4,
            State::Completed | State::Cancelled | State::Expired => 5,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state the CRM reports on `…/callbacks/{callback_id}/state` (contract strings).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum CrmState {
    /// `"accepted"`
    Accepted,
    /// `"assigned"`
    Assigned,
    /// `"completed"`
    Completed,
    /// `"cancelled"`
    Cancelled,
}

impl CrmState {
    /// Parses the contract string.
    #[must_use]
    pub fn parse(s: &str) -> Option<CrmState> {
        Some(match s {
            "accepted" => CrmState::Accepted,
            "assigned" => CrmState::Assigned,
            "completed" => CrmState::Completed,
            "cancelled" => CrmState::Cancelled,
            _ => return None,
        })
    }

    /// The queue state it moves an entry to.
    #[must_use]
    pub fn state(self) -> State {
        match self {
            CrmState::Accepted => State::Accepted,
            CrmState::Assigned => State::Assigned,
            CrmState::Completed => State::Completed,
            CrmState::Cancelled => State::Cancelled,
        }
    }
}

/// One callback: everything the shell writes to disk and publishes as a CallbackRequest
/// (plus the node and site, which the shell adds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Generated on the node.
    pub id: CallbackId,
    /// The call that asked.
    pub call_id: CallId,
    /// The number to call back (keyed or confirmed by the caller).
    pub callback_number: PhoneNumber,
    /// The caller's number, when presented.
    pub caller: Option<PhoneNumber>,
    /// The number the caller dialled.
    pub dialled: Option<PhoneNumber>,
    /// The announcement after which the callback was offered.
    pub announcement: Option<AnnouncementId>,
    /// The caller's language tag (empty when not known: a record from before languages).
    pub language: Language,
    /// When the IVR asked (wall clock).
    pub requested_at: UnixMillis,
    /// When the caller may be called back.
    pub window: Window,
    /// Current state.
    pub state: State,
    /// When the current state was reached (the CRM's `at` for its updates).
    pub state_at: UnixMillis,
}

/// What the IVR hands to [`CallbackQueue::request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// A fresh id generated by the shell.
    pub id: CallbackId,
    /// The call asking.
    pub call_id: CallId,
    /// The number to call back.
    pub callback_number: PhoneNumber,
    /// The caller's number, when presented.
    pub caller: Option<PhoneNumber>,
    /// The number dialled.
    pub dialled: Option<PhoneNumber>,
    /// The announcement that offered the callback.
    pub announcement: Option<AnnouncementId>,
    /// The window the caller chose.
    pub window: Window,
    /// The caller's language tag.
    pub language: Language,
}

/// An accepted request: the entry is Requested, and will have `position` once stored (unless
/// entries ahead of it leave first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The entry's id.
    pub id: CallbackId,
    /// The position it will have when stored.
    pub position: u32,
}

/// The answer to [`CallbackQueue::stored`]: what the IVR tells the caller.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Booking {
    /// Durable: "you are number `position` in the queue".
    Booked {
        /// 1-based position among waiting entries.
        position: u32,
    },
    /// The write failed and the entry is gone: "we could not book your callback".
    NotBooked,
}

/// Queue tuning.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// A second request for the same callback number within this time of a live entry's
    /// request is a [`QueueError::Duplicate`]. Default 24 h.
    pub dedup_window: Duration,
    /// Booked entries still open this long after their request expire locally. Default 24 h.
    pub max_age: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dedup_window: Duration::from_secs(24 * 3600),
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a queue operation was refused. Not `Copy`: [`QueueError::Duplicate`] names the
/// existing entry's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueError {
    /// [`CALLBACK_QUEUE_CAPACITY`] entries are held: the IVR plays "queue full".
    Full,
    /// The callback number already has a live entry within the de-dup window.
    Duplicate {
        /// The existing entry.
        existing: CallbackId,
        /// Its position when it is waiting (`None` while Requested or once Assigned).
        position: Option<u32>,
    },
    /// An entry with this id already exists (the shell generated an id twice).
    IdInUse,
    /// No live entry has this id.
    UnknownId,
    /// The entry cannot move from `from` to `to` (e.g. a CRM update that goes backwards).
    InvalidTransition {
        /// Current state.
        from: State,
        /// Refused state.
        to: State,
    },
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Full => f.write_str("callback queue full"),
            QueueError::Duplicate { existing, .. } => {
                write!(f, "callback number already queued as {existing}")
            }
            QueueError::IdInUse => f.write_str("callback id already in use"),
            QueueError::UnknownId => f.write_str("no such callback"),
            QueueError::InvalidTransition { from, to } => {
                write!(f, "callback cannot go from {from} to {to}")
            }
        }
    }
}

impl core::error::Error for QueueError {}

/// Work for the shell; see the table in the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Write the record ([`CallbackQueue::get`]) durably, then call
    /// [`CallbackQueue::stored`].
    Store {
        /// The entry.
        id: CallbackId,
    },
    /// Publish a CallbackRequest for the record with this position; call
    /// [`CallbackQueue::synced`] on PUBACK.
    Publish {
        /// The entry.
        id: CallbackId,
        /// Its position now.
        position: u32,
    },
    /// The record's state changed: rewrite it.
    Update {
        /// The entry.
        id: CallbackId,
        /// Its new state.
        state: State,
    },
    /// The entry left the queue: delete its record.
    Remove {
        /// The entry.
        id: CallbackId,
        /// Its final state (`Requested` when it was never booked).
        state: State,
    },
}

/// What [`CallbackQueue::restore`] did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Entries loaded.
    pub restored: u32,
    /// Records whose id was already loaded (skipped).
    pub duplicates: u32,
    /// Records in a final state (queued for [`Output::Remove`]).
    pub finished: u32,
    /// Records that did not fit (left on disk, not loaded).
    pub overflow: u32,
}

const STORE: u8 = 1;
const PUBLISH: u8 = 2;
const UPDATE: u8 = 4;
const REMOVE: u8 = 8;

#[derive(Clone, Debug)]
struct Slot {
    entry: Entry,
    /// Pending outputs (flags above). An entry flagged REMOVE is gone for every query and
    /// waits only for its `Output::Remove` to be polled.
    pending: u8,
}

impl Slot {
    fn live(&self) -> bool {
        self.pending & REMOVE == 0
    }
}

/// The callback queue: entries in request order, capacity [`CALLBACK_QUEUE_CAPACITY`].
#[derive(Debug)]
pub struct CallbackQueue {
    config: Config,
    slots: Vec<Slot, CALLBACK_QUEUE_CAPACITY>,
}

impl Default for CallbackQueue {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl CallbackQueue {
    /// An empty queue. After a restart, follow with [`Self::restore`].
    #[must_use]
    pub fn new(config: Config) -> CallbackQueue {
        CallbackQueue {
            config,
            slots: Vec::new(),
        }
    }

    /// Adds a Requested entry for the IVR and queues [`Output::Store`]. Call when a caller
    /// confirms their callback number; the caller hears "booked" only after
    /// [`Self::stored`] returns [`Booking::Booked`].
    ///
    /// # Errors
    /// [`QueueError::Duplicate`] when the number is already queued within the de-dup window,
    /// [`QueueError::IdInUse`], [`QueueError::Full`].
    pub fn request(&mut self, now_wall: UnixMillis, req: Request) -> Result<Ticket, QueueError> {
        if self.find(&req.id).is_some() {
            return Err(QueueError::IdInUse);
        }
        let window_start = UnixMillis(now_wall.0.saturating_sub(
            i64::try_from(self.config.dedup_window.as_millis()).unwrap_or(i64::MAX),
        ));
        if let Some(dup) = self.live().find(|s| {
            s.entry.callback_number == req.callback_number && s.entry.requested_at > window_start
        }) {
            let existing = dup.entry.id.clone();
            let position = self.position(&existing);
            return Err(QueueError::Duplicate { existing, position });
        }
        if self.slots.is_full() {
            return Err(QueueError::Full);
        }
        let position = u32::try_from(
            self.live()
                .filter(|s| {
                    s.entry.state.is_waiting() && s.entry.window.not_before <= req.window.not_before
                })
                .count(),
        )
        .unwrap_or(u32::MAX)
        .saturating_add(1);
        let entry = Entry {
            id: req.id.clone(),
            call_id: req.call_id,
            callback_number: req.callback_number,
            caller: req.caller,
            dialled: req.dialled,
            announcement: req.announcement,
            language: req.language,
            requested_at: now_wall,
            window: req.window,
            state: State::Requested,
            state_at: now_wall,
        };
        self.slots
            .push(Slot {
                entry,
                pending: STORE,
            })
            .map_err(|_| QueueError::Full)?;
        Ok(Ticket {
            id: req.id,
            position,
        })
    }

    /// The shell's answer to [`Output::Store`]: `ok` once the record is durable (after
    /// fsync), `false` when writing failed (disk full, fsync error). On `false` the entry is
    /// removed ([`Output::Remove`] with state Requested) and the caller must hear that the
    /// callback could not be booked.
    ///
    /// # Errors
    /// [`QueueError::UnknownId`]; [`QueueError::InvalidTransition`] when it is not Requested.
    pub fn stored(&mut self, id: &CallbackId, ok: bool) -> Result<Booking, QueueError> {
        let i = self.find(id).ok_or(QueueError::UnknownId)?;
        let slot = &mut self.slots[i];
        if slot.entry.state != State::Requested {
            return Err(QueueError::InvalidTransition {
                from: slot.entry.state,
                to: State::Stored,
            });
        }
        if !ok {
            slot.pending = REMOVE;
            return Ok(Booking::NotBooked);
        }
        slot.entry.state = State::Stored;
        slot.pending |= PUBLISH;
        let position = self.position(id).unwrap_or(0);
        Ok(Booking::Booked { position })
    }

    /// The shell's answer to [`Output::Publish`]: the broker PUBACKed the CallbackRequest.
    /// A no-op once the CRM has moved the entry further.
    ///
    /// # Errors
    /// [`QueueError::UnknownId`]; [`QueueError::InvalidTransition`] while Requested.
    pub fn synced(&mut self, id: &CallbackId) -> Result<(), QueueError> {
        let i = self.find(id).ok_or(QueueError::UnknownId)?;
        let slot = &mut self.slots[i];
        match slot.entry.state {
            State::Requested => Err(QueueError::InvalidTransition {
                from: State::Requested,
                to: State::Synced,
            }),
            State::Stored => {
                slot.entry.state = State::Synced;
                slot.pending |= UPDATE;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A CRM state update for `id`, reported at `at`. Call for every decoded
    /// `…/callbacks/{id}/state` message. Repeating the current state is a no-op.
    ///
    /// # Errors
    /// [`QueueError::UnknownId`] (already finished, or never here);
    /// [`QueueError::InvalidTransition`] for an update that goes backwards or arrives while
    /// the entry is not yet booked.
    pub fn crm_state(
        &mut self,
        id: &CallbackId,
        state: CrmState,
        at: UnixMillis,
    ) -> Result<(), QueueError> {
        let i = self.find(id).ok_or(QueueError::UnknownId)?;
        let to = state.state();
        let slot = &mut self.slots[i];
        let from = slot.entry.state;
        if from == to {
            return Ok(());
        }
        if !from.is_booked() || to.rank() <= from.rank() {
            return Err(QueueError::InvalidTransition { from, to });
        }
        Self::move_to(slot, to, at);
        Ok(())
    }

    /// A technician cancels `id` (`ccedge callbacks cancel ID`).
    ///
    /// # Errors
    /// [`QueueError::UnknownId`].
    pub fn cancel(&mut self, now_wall: UnixMillis, id: &CallbackId) -> Result<(), QueueError> {
        let i = self.find(id).ok_or(QueueError::UnknownId)?;
        Self::move_to(&mut self.slots[i], State::Cancelled, now_wall);
        Ok(())
    }

    /// The CRM moved the window of `id` (a state update with a `window`): positions are
    /// counted with the new window from now on, and the record is rewritten
    /// ([`Output::Update`]).
    ///
    /// # Errors
    /// [`QueueError::UnknownId`].
    pub fn move_window(&mut self, id: &CallbackId, window: Window) -> Result<(), QueueError> {
        let i = self.find(id).ok_or(QueueError::UnknownId)?;
        let slot = &mut self.slots[i];
        if slot.entry.window != window {
            slot.entry.window = window;
            slot.pending |= UPDATE;
        }
        Ok(())
    }

    /// Expires booked entries requested [`Config::max_age`] or longer ago whose window has
    /// also passed (a callback booked for next week waits for its window). Call when the
    /// deadline from [`Self::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now_wall: UnixMillis) {
        let max_age = self.config.max_age;
        for slot in self.slots.iter_mut().filter(|s| s.live()) {
            if slot.entry.state.is_booked() && expires_at(&slot.entry, max_age) <= now_wall {
                Self::move_to(slot, State::Expired, now_wall);
            }
        }
    }

    /// When the oldest booked entry expires (wall clock; the shell converts it to its timer).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        self.live()
            .filter(|s| s.entry.state.is_booked())
            .map(|s| expires_at(&s.entry, self.config.max_age))
            .min()
    }

    /// The next piece of work for the shell (see [`Output`]). Drain after every call that
    /// changes the queue; entries are served in request order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        let i = self.slots.iter().position(|s| s.pending != 0)?;
        let pending = self.slots[i].pending;
        if pending & REMOVE != 0 {
            let slot = self.slots.remove(i);
            return Some(Output::Remove {
                id: slot.entry.id,
                state: slot.entry.state,
            });
        }
        let id = self.slots[i].entry.id.clone();
        let (bit, out) = if pending & STORE != 0 {
            (STORE, Output::Store { id })
        } else if pending & PUBLISH != 0 {
            let position = self.position(&id).unwrap_or(0);
            (PUBLISH, Output::Publish { id, position })
        } else {
            let state = self.slots[i].entry.state;
            (UPDATE, Output::Update { id, state })
        };
        self.slots[i].pending &= !bit;
        Some(out)
    }

    /// Publishes again every booked entry the CRM has not accepted yet (Stored and Synced).
    /// Call after every broker (re)connect: a PUBACK does not prove the CRM got it.
    pub fn resync(&mut self) {
        for slot in self.slots.iter_mut().filter(|s| s.live()) {
            if matches!(slot.entry.state, State::Stored | State::Synced) {
                slot.pending |= PUBLISH;
            }
        }
    }

    /// Rebuilds the queue from the records on disk after a restart. Records are ordered by
    /// request time (then id); an id already loaded is skipped, so restoring twice creates no
    /// duplicate; a `Requested` record counts as Stored (it is durable); final records are
    /// queued for [`Output::Remove`]; Stored and Synced entries are queued for publishing.
    pub fn restore<I: IntoIterator<Item = Entry>>(&mut self, records: I) -> RestoreReport {
        let mut report = RestoreReport::default();
        for mut entry in records {
            if self.slots.iter().any(|s| s.entry.id == entry.id) {
                report.duplicates += 1;
                continue;
            }
            if self.slots.is_full() {
                report.overflow += 1;
                continue;
            }
            let pending = if entry.state.is_final() {
                report.finished += 1;
                REMOVE
            } else {
                report.restored += 1;
                if entry.state == State::Requested {
                    entry.state = State::Stored;
                }
                if matches!(entry.state, State::Stored | State::Synced) {
                    PUBLISH
                } else {
                    0
                }
            };
            let key = (entry.requested_at, entry.id.clone());
            let at = self
                .slots
                .iter()
                .position(|s| (s.entry.requested_at, &s.entry.id) > (key.0, &key.1))
                .unwrap_or(self.slots.len());
            // Cannot fail: checked `is_full` above.
            let _ = self.slots.insert(at, Slot { entry, pending });
        }
        report
    }

    /// 1-based position of a waiting entry (Stored, Synced, Accepted) among the waiting
    /// entries whose window starts no later than its own (same start: request order);
    /// `None` for other states and unknown ids.
    #[must_use]
    pub fn position(&self, id: &CallbackId) -> Option<u32> {
        let i = self.find(id)?;
        let me = &self.slots[i].entry;
        if !me.state.is_waiting() {
            return None;
        }
        let ahead = self
            .slots
            .iter()
            .enumerate()
            .filter(|(j, s)| {
                s.live()
                    && s.entry.state.is_waiting()
                    && (s.entry.window.not_before < me.window.not_before
                        || (s.entry.window.not_before == me.window.not_before && *j < i))
            })
            .count();
        Some(u32::try_from(ahead).unwrap_or(u32::MAX).saturating_add(1))
    }

    /// The live entry with this id.
    #[must_use]
    pub fn get(&self, id: &CallbackId) -> Option<&Entry> {
        self.find(id).map(|i| &self.slots[i].entry)
    }

    /// Live entries in request order (`ccedge callbacks`).
    pub fn iter(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.live().map(|s| &s.entry)
    }

    /// Number of live entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live().count()
    }

    /// Whether no entry is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of waiting entries (`callbacks_waiting` in the status message).
    #[must_use]
    pub fn waiting(&self) -> u32 {
        let n = self.live().filter(|s| s.entry.state.is_waiting()).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    fn live(&self) -> impl Iterator<Item = &Slot> + '_ {
        self.slots.iter().filter(|s| s.live())
    }

    fn find(&self, id: &CallbackId) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.live() && &s.entry.id == id)
    }

    fn move_to(slot: &mut Slot, to: State, at: UnixMillis) {
        slot.entry.state = to;
        slot.entry.state_at = at;
        if to.is_final() {
            slot.pending = REMOVE;
        } else {
            if to.rank() >= State::Accepted.rank() {
                slot.pending &= !PUBLISH;
            }
            slot.pending |= UPDATE;
        }
    }
}

#[cfg(test)]
mod tests;
pub mod window;

pub use window::Window;

/// When a booked entry expires: `max_age` after its request, but not before its window ends.
fn expires_at(e: &Entry, max_age: Duration) -> UnixMillis {
    e.requested_at
        .saturating_add(max_age)
        .max(e.window.not_after)
}
