//! The invariant oracle: an independent record of what the node promised, checked as the
//! simulation runs and once more after the final drain.
//!
//! It never reads the node's internal state to decide what is right; it learns facts at the
//! moment they happen (an event emitted, a seq issued, a store reported ok, a playlist played,
//! a record removed, a message delivered to the CRM) and compares.

use alloc::collections::{BTreeMap, BTreeSet};

use shared::callback::{CallbackQueue, Entry, State};
use shared::event::{CallEvent, EndReason, EventKind};
use shared::ivr::{BookingResult, Playlist, Prompt};
use shared::time::{Duration, UnixMillis};

/// A broken invariant, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Violation(pub(crate) String);

/// The result of a check.
pub(crate) type Check = Result<(), Violation>;

macro_rules! fail {
    ($($t:tt)*) => { return Err($crate::sim::oracle::Violation(format!($($t)*))) };
}
pub(crate) use fail;

#[derive(Debug, Default, Clone)]
struct CallRec {
    /// Last `call_seq` the call emitted.
    emitted: u32,
    ended_emitted: bool,
    /// A node crash took the call (or its unissued events) away.
    cut: bool,
    /// Last `call_seq` that was given a `seq`.
    issued_upto: u32,
}

/// What became of a callback that expired.
#[derive(Debug, Default, Clone)]
struct Expiry {
    /// The node emitted its `callback.expired`.
    event: bool,
    /// The seq the event was given.
    seq: Option<u64>,
    /// A crash took the event before it was given a seq.
    lost_in_crash: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Issued {
    call: Option<u64>,
    call_seq: u32,
    kind: &'static str,
}

/// What the oracle knows.
#[derive(Debug, Default)]
pub(crate) struct Oracle {
    calls: BTreeMap<u64, CallRec>,
    max_seq: u64,
    issued: BTreeMap<u64, Issued>,
    /// Callback ids whose store reported ok.
    store_ok: BTreeSet<String>,
    /// Callback ids whose record reached the disk (reported or not).
    durable: BTreeSet<String>,
    /// The callback id each call asked for.
    booking_of: BTreeMap<u64, String>,
    /// Calls the shell answered `Booked`.
    result_booked: BTreeSet<u64>,
    /// Calls the shell answered `AlreadyBooked` for a durable entry.
    already_ok: BTreeSet<u64>,
    /// Callback ids the caller was told are booked.
    told: BTreeMap<String, u64>,
    /// Callback ids the CRM finished (completed or cancelled).
    crm_final: BTreeSet<String>,
    /// Told "booked" and not finished by the CRM: must be on disk and in the queue.
    open: BTreeSet<String>,
    /// Callback ids the CRM received, with the call that booked each.
    crm_callbacks: BTreeMap<String, u64>,
    /// `callbacks.max_age` of the run: a callback expires no earlier.
    pub(crate) max_age: Duration,
    /// The state each callback record left the disk in.
    removed_as: BTreeMap<String, State>,
    /// Callbacks that expired.
    expired: BTreeMap<String, Expiry>,
    /// Expired callbacks whose `callback.expired` has not been emitted yet.
    expiry_unannounced: BTreeSet<String>,
    /// Calls between `call.offered` and `call.ended` in the running process.
    live: BTreeSet<u64>,
    /// Calls whose current playlist is the "already booked" answer.
    answer_playing: BTreeSet<u64>,
    /// Calls that heard the "already booked" answer to its end.
    answer_heard: BTreeSet<u64>,
    /// Checks performed.
    pub(crate) checks: u64,
    /// Tolerate the documented core bugs in [`KNOWN_CORE_BUGS`] (count them instead).
    pub(crate) allow_known: bool,
    /// How often each tolerated core bug happened.
    pub(crate) known: BTreeMap<&'static str, u64>,
    /// `callback.expired` events that did not reach the CRM for an accepted reason (the
    /// outbox dropped them and reported the seqs skipped, or a crash took them before they
    /// had a seq).
    pub(crate) expired_unreported: u64,
}

/// Core bugs the simulator found that are not fixed yet, as (name, symptom); with
/// `--allow-known-bugs` they are counted instead of failing the run. None are open: the last
/// one ("callback.requested after call.ended", seed 55) was fixed in `shared::call`.
pub(crate) const KNOWN_CORE_BUGS: &[(&str, &str)] = &[];

impl Oracle {
    /// A call emitted an event.
    pub(crate) fn event_emitted(&mut self, call: u64, call_seq: u32, kind: &str) -> Check {
        self.checks += 1;
        let rec = self.calls.entry(call).or_default();
        if rec.ended_emitted {
            if let Some((name, _)) = KNOWN_CORE_BUGS.first().filter(|_| self.allow_known) {
                *self.known.entry(name).or_default() += 1;
                rec.emitted = call_seq;
                return Ok(());
            }
            fail!("call {call}: event {kind} (call_seq {call_seq}) after call.ended");
        }
        if call_seq != rec.emitted + 1 {
            fail!(
                "call {call}: call_seq {call_seq} ({kind}) follows {}: not contiguous",
                rec.emitted
            );
        }
        if call_seq == 1 && kind != "call.offered" {
            fail!("call {call}: first event is {kind}, not call.offered");
        }
        rec.emitted = call_seq;
        match kind {
            "call.offered" => {
                self.live.insert(call);
            }
            "call.ended" => {
                rec.ended_emitted = true;
                self.live.remove(&call);
            }
            _ => {}
        }
        Ok(())
    }

    /// A call emitted `call.ended` with `reason`: a caller told "already booked" must have
    /// heard that answer to its end unless they hung up (or vanished) first.
    pub(crate) fn call_ended(&mut self, call: u64, reason: EndReason) -> Check {
        self.checks += 1;
        if self.already_ok.contains(&call)
            && !self.answer_heard.contains(&call)
            && matches!(reason, EndReason::NodeHangup | EndReason::Transferred)
        {
            fail!(
                "call {call} was told its number is already booked, but the node ended the call ({}) before the answer played to its end",
                reason.as_str()
            );
        }
        self.answer_playing.remove(&call);
        Ok(())
    }

    /// The latest playlist of `call` played to its end.
    pub(crate) fn playback_finished(&mut self, call: u64) {
        if self.answer_playing.remove(&call) {
            self.answer_heard.insert(call);
        }
    }

    /// Calls between `call.offered` and `call.ended` in the running process.
    pub(crate) fn live_calls(&self) -> usize {
        self.live.len()
    }

    /// The node gave an event its `seq` and wrote it to the outbox.
    pub(crate) fn seq_issued(&mut self, ev: &CallEvent) -> Check {
        self.checks += 1;
        if ev.seq <= self.max_seq {
            fail!(
                "seq {} issued after seq {}: seq must strictly increase and never be reused",
                ev.seq,
                self.max_seq
            );
        }
        self.max_seq = ev.seq;
        if let Some(c) = ev.call_id {
            let rec = self.calls.entry(c.0).or_default();
            if ev.call_seq != rec.issued_upto + 1 {
                fail!(
                    "call {}: call_seq {} got seq {} after call_seq {}: out of order",
                    c.0,
                    ev.call_seq,
                    ev.seq,
                    rec.issued_upto
                );
            }
            rec.issued_upto = ev.call_seq;
        }
        if let EventKind::CallbackExpired { callback_id } = &ev.kind {
            if let Some(x) = self.expired.get_mut(callback_id.as_str()) {
                x.seq = Some(ev.seq);
            }
        }
        self.issued.insert(
            ev.seq,
            Issued {
                call: ev.call_id.map(|c| c.0),
                call_seq: ev.call_seq,
                kind: ev.kind.type_str(),
            },
        );
        Ok(())
    }

    /// The node crashed: these calls, and every call with emitted but unissued events, are cut.
    pub(crate) fn crash(&mut self, in_table: impl Iterator<Item = u64>) -> u64 {
        let mut n = 0;
        for c in in_table {
            let rec = self.calls.entry(c).or_default();
            if !rec.cut {
                rec.cut = true;
                n += 1;
            }
        }
        for rec in self.calls.values_mut() {
            if rec.issued_upto < rec.emitted && !rec.cut {
                rec.cut = true;
                n += 1;
            }
        }
        self.live.clear();
        self.answer_playing.clear();
        n
    }

    /// The crash took the `callback.expired` of `id` while it waited for a seq.
    pub(crate) fn expiry_lost_in_crash(&mut self, id: &str) {
        if let Some(x) = self
            .expired
            .get_mut(id)
            .filter(|x| x.event && x.seq.is_none())
        {
            x.lost_in_crash = true;
        }
    }

    /// The CRM received an event (possibly again).
    pub(crate) fn crm_event(&mut self, ev: &CallEvent) -> Check {
        self.checks += 1;
        let Some(i) = self.issued.get(&ev.seq) else {
            fail!(
                "the CRM received seq {} which the node never issued",
                ev.seq
            );
        };
        let got = Issued {
            call: ev.call_id.map(|c| c.0),
            call_seq: ev.call_seq,
            kind: ev.kind.type_str(),
        };
        if *i != got {
            fail!(
                "seq {} reused: issued as {:?}, delivered as {:?}",
                ev.seq,
                i,
                got
            );
        }
        Ok(())
    }

    /// A call asked for a callback with this id.
    pub(crate) fn booking_requested(&mut self, call: u64, id: &str) {
        self.booking_of.insert(call, id.to_string());
    }

    /// A callback record reached the disk. Checks that no other record books the same call.
    pub(crate) fn disk_written(
        &mut self,
        id: &str,
        entry: &Entry,
        disk: &BTreeMap<String, Entry>,
    ) -> Check {
        self.checks += 1;
        self.durable.insert(id.to_string());
        if let Some((other, _)) = disk
            .iter()
            .find(|(k, e)| k.as_str() != id && e.call_id == entry.call_id)
        {
            fail!(
                "duplicate booking: callback {id} and {other} both book call {}",
                entry.call_id.0
            );
        }
        Ok(())
    }

    /// The store of `id` reported `ok`.
    pub(crate) fn store_done(&mut self, id: &str, ok: bool) {
        if ok {
            self.store_ok.insert(id.to_string());
        }
    }

    /// The shell answered a call's booking.
    pub(crate) fn booking_result(
        &mut self,
        call: u64,
        r: BookingResult,
        existing: Option<&str>,
    ) -> Check {
        self.checks += 1;
        match r {
            BookingResult::Booked { .. } => {
                let Some(id) = self.booking_of.get(&call) else {
                    fail!("call {call} answered Booked without asking for a callback");
                };
                if !self.store_ok.contains(id) {
                    fail!("call {call} answered Booked but the store of {id} never reported ok");
                }
                self.result_booked.insert(call);
            }
            BookingResult::AlreadyBooked { .. } => {
                let durable = existing.is_some_and(|e| self.durable.contains(e));
                if !durable {
                    fail!(
                        "call {call} answered AlreadyBooked for {existing:?}, which is not durable"
                    );
                }
                self.already_ok.insert(call);
            }
            BookingResult::QueueFull | BookingResult::Failed => {}
        }
        Ok(())
    }

    /// The node started playing `pl` to `call`.
    pub(crate) fn played(&mut self, call: u64, pl: &Playlist) -> Check {
        self.checks += 1;
        if pl.contains(&Prompt::Booked) {
            if !self.result_booked.contains(&call) {
                fail!("call {call} is told 'booked' but no durable booking was reported to it");
            }
            if let Some(id) = self.booking_of.get(&call) {
                self.told.insert(id.clone(), call);
                if !self.crm_final.contains(id) {
                    self.open.insert(id.clone());
                }
            }
        }
        if pl.contains(&Prompt::AlreadyBooked) {
            if !self.already_ok.contains(&call) {
                fail!("call {call} is told 'already booked' without a durable booking");
            }
            // "Already booked, you are number N": the answer is whole.
            let rest = pl.iter().skip_while(|p| **p != Prompt::AlreadyBooked);
            let mut rest = rest.skip(1);
            let whole = rest.next() == Some(&Prompt::YouAreNumber)
                && matches!(rest.next(), Some(Prompt::Number(_)));
            if !whole {
                fail!("call {call}: the 'already booked' answer is cut short: {pl:?}");
            }
            self.answer_playing.insert(call);
        } else {
            self.answer_playing.remove(&call);
        }
        Ok(())
    }

    /// The callback `id` left the queue in `state`; `record` is what was on disk, `now` the
    /// wall clock. Only the CRM finishing it, or its max age, may end a booked callback.
    pub(crate) fn disk_removed(
        &mut self,
        id: &str,
        state: State,
        record: Option<&Entry>,
        now: UnixMillis,
    ) -> Check {
        self.checks += 1;
        self.removed_as.insert(id.to_string(), state);
        if state == State::Expired {
            let max_age = i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX);
            if let Some(r) = record {
                if r.requested_at.0.saturating_add(max_age) > now.0 {
                    fail!(
                        "callback {id} expired {} ms after its request, before its max age of {} s",
                        now.0 - r.requested_at.0,
                        self.max_age.as_secs()
                    );
                }
            }
            self.open.remove(id);
            self.expired.insert(id.to_string(), Expiry::default());
            self.expiry_unannounced.insert(id.to_string());
            return Ok(());
        }
        if self.told.contains_key(id) && !self.crm_final.contains(id) {
            fail!("booked callback {id} lost: its record was removed in state {state} though the CRM never finished it");
        }
        Ok(())
    }

    /// The node emitted `callback.expired` for `id`.
    pub(crate) fn expired_event(&mut self, id: &str) -> Check {
        self.checks += 1;
        let Some(x) = self.expired.get_mut(id) else {
            fail!("callback.expired for {id}, which did not expire");
        };
        if x.event {
            fail!("callback.expired for {id} emitted twice");
        }
        x.event = true;
        self.expiry_unannounced.remove(id);
        Ok(())
    }

    /// The shell drained the node's outputs: every callback that expired was reported.
    pub(crate) fn drained_outputs(&mut self) -> Check {
        if let Some(id) = self.expiry_unannounced.first() {
            fail!("callback {id} expired without a callback.expired event");
        }
        Ok(())
    }

    /// The CRM finishes `id` (completed or cancelled).
    pub(crate) fn crm_finished(&mut self, id: &str) {
        self.crm_final.insert(id.to_string());
        self.open.remove(id);
    }

    /// Every booked callback the CRM has not finished: is it on disk (and in the queue)?
    pub(crate) fn booked_present(
        &mut self,
        disk: &BTreeMap<String, Entry>,
        queue: Option<&CallbackQueue>,
    ) -> Check {
        for id in &self.open {
            self.checks += 1;
            if !disk.contains_key(id) {
                fail!("booked callback {id} lost: not on disk");
            }
            if let Some(q) = queue {
                let ok = shared::ids::CallbackId::new(id)
                    .ok()
                    .is_some_and(|cid| q.get(&cid).is_some());
                if !ok {
                    fail!("booked callback {id} lost: on disk but not in the callback queue");
                }
            }
        }
        let mut calls = BTreeMap::new();
        for (id, e) in disk {
            self.checks += 1;
            if let Some(other) = calls.insert(e.call_id.0, id) {
                fail!(
                    "duplicate booking: callback {id} and {other} both book call {}",
                    e.call_id.0
                );
            }
        }
        if let Some(q) = queue {
            let mut ids = BTreeSet::new();
            for e in q.iter() {
                self.checks += 1;
                if !ids.insert(e.id.as_str()) {
                    fail!("duplicate callback {} in the queue", e.id);
                }
            }
        }
        Ok(())
    }

    /// The CRM received a CallbackRequest.
    pub(crate) fn crm_callback(&mut self, id: &str, call: u64) -> Check {
        self.checks += 1;
        if let Some((other, _)) = self
            .crm_callbacks
            .iter()
            .find(|(k, c)| **c == call && k.as_str() != id)
        {
            fail!("duplicate booking: the CRM got callbacks {id} and {other} for call {call}");
        }
        self.crm_callbacks.insert(id.to_string(), call);
        Ok(())
    }

    /// The highest `seq` ever issued.
    pub(crate) fn max_seq(&self) -> u64 {
        self.max_seq
    }

    /// Callback ids told "booked".
    pub(crate) fn told_booked(&self) -> usize {
        self.told.len()
    }

    /// Calls a crash cut.
    pub(crate) fn cut_calls(&self) -> u64 {
        self.calls.values().filter(|c| c.cut).count() as u64
    }

    /// The final checks, after the network, broker and node were healed and everything
    /// drained: every issued seq delivered or reported skipped, every call's delivered events
    /// complete and ordered, every booked callback at the CRM.
    pub(crate) fn finish(
        &mut self,
        received: &BTreeMap<u64, CallEvent>,
        skipped: &[(u64, u64)],
    ) -> Check {
        let is_skipped = |s: u64| skipped.iter().any(|&(a, b)| a <= s && s <= b);
        for (&seq, i) in &self.issued {
            self.checks += 1;
            if !received.contains_key(&seq) && !is_skipped(seq) {
                fail!(
                    "seq {seq} ({}, call {:?}) was neither delivered nor reported skipped",
                    i.kind,
                    i.call
                );
            }
        }
        for &seq in received.keys() {
            if is_skipped(seq) {
                fail!("seq {seq} was delivered but also reported skipped");
            }
        }
        // Per call: delivered events by call_seq, each with its seq.
        let mut per_call: BTreeMap<u64, Vec<(u32, u64, bool)>> = BTreeMap::new();
        for ev in received.values() {
            if let Some(c) = ev.call_id {
                let end = matches!(ev.kind, EventKind::CallEnded { .. });
                per_call
                    .entry(c.0)
                    .or_default()
                    .push((ev.call_seq, ev.seq, end));
            }
        }
        let issued_by_call: BTreeMap<(u64, u32), u64> = self
            .issued
            .iter()
            .filter_map(|(&s, i)| i.call.map(|c| ((c, i.call_seq), s)))
            .collect();
        for (&call, rec) in &self.calls {
            self.checks += 1;
            let mut evs = per_call.remove(&call).unwrap_or_default();
            evs.sort_unstable();
            // Delivered call_seqs plus skipped ones must be exactly 1..=issued_upto.
            let mut k = 0usize;
            let mut last_seq = 0u64;
            let mut ends = 0;
            for cs in 1..=rec.issued_upto {
                match evs.get(k) {
                    Some(&(c, s, end)) if c == cs => {
                        if s <= last_seq {
                            fail!("call {call}: call_seq {cs} has seq {s}, not after {last_seq}: out of order");
                        }
                        last_seq = s;
                        ends += usize::from(end);
                        k += 1;
                    }
                    _ => {
                        let s = issued_by_call.get(&(call, cs)).copied();
                        if !s.is_some_and(is_skipped) {
                            fail!("call {call}: call_seq {cs} (seq {s:?}) missing at the CRM and not reported skipped");
                        }
                        if s.is_some_and(|s| {
                            self.issued.get(&s).is_some_and(|i| i.kind == "call.ended")
                        }) {
                            ends += 1;
                        }
                    }
                }
            }
            if k != evs.len() {
                fail!(
                    "call {call}: the CRM holds events beyond call_seq {}",
                    rec.issued_upto
                );
            }
            if !rec.cut {
                if !rec.ended_emitted {
                    fail!("call {call} ended without a crash but never emitted call.ended");
                }
                if ends != 1 {
                    fail!("call {call}: {ends} call.ended events at the CRM, expected exactly one");
                }
            } else if ends > 1 {
                fail!("call {call}: {ends} call.ended events at the CRM");
            }
        }
        for (id, call) in &self.told {
            self.checks += 1;
            if !self.crm_callbacks.contains_key(id) {
                fail!("booked callback {id} (call {call}) never reached the CRM");
            }
        }
        let mut unreported = 0;
        for (id, x) in &self.expired {
            self.checks += 1;
            match x.seq {
                Some(s) if received.contains_key(&s) => {}
                Some(s) if is_skipped(s) => unreported += 1,
                Some(s) => fail!("callback.expired for {id} (seq {s}) never reached the CRM"),
                None if x.lost_in_crash => unreported += 1,
                None => fail!("callback.expired for {id} was never given a seq"),
            }
        }
        self.expired_unreported = unreported;
        Ok(())
    }

    /// After the final drain: every durable callback ended accepted (still in the queue),
    /// completed, cancelled or expired.
    pub(crate) fn callbacks_settled(&mut self, queue: Option<&CallbackQueue>) -> Check {
        let Some(q) = queue else {
            fail!("the node is down after the final drain");
        };
        for id in &self.durable {
            self.checks += 1;
            let in_queue = shared::ids::CallbackId::new(id)
                .ok()
                .and_then(|cid| q.get(&cid).map(|e| e.state));
            match (in_queue, self.removed_as.get(id)) {
                (Some(State::Accepted | State::Assigned), _) => {}
                (None, Some(State::Completed | State::Cancelled | State::Expired)) => {}
                (Some(s), _) => {
                    fail!("booked callback {id} is still {s} (not accepted by the CRM) at the end of the run")
                }
                (None, Some(s)) => fail!("booked callback {id} ended {s}"),
                (None, None) => fail!("booked callback {id} vanished without ending"),
            }
        }
        Ok(())
    }
}
