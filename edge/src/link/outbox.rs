//! Call events out: `seq` numbering, the CallEvent envelope, the durable outbox.
//!
//! The rules are the core's [`Journal`] (`shared::event::journal`), the same one the
//! simulator drives; this module does its store work and renders the envelopes. The chain for
//! every event (docs/ARCHITECTURE.md, "Durability rules"):
//!
//! 1. `seq` from the journal's sequencer, whose high-water mark is the store counter
//!    [`HIGH_WATER_KEY`], written (SQLite `synchronous=FULL`) before any number below it is
//!    issued. After a restart the last issued `seq` is the highest of: the newest event in
//!    the store outbox, the persisted CRM acknowledgement ([`ACKED_KEY`]) and the persisted
//!    floor below which events were deleted ([`FLOOR_KEY`]); the gap up to the mark is
//!    announced with a `seq.skipped` event. A graceful stop lowers the mark to the next
//!    unissued `seq`, so a clean restart has no gap.
//! 2. Each run of numbered events ([`Output::Append`]) is rendered (the CallEvent envelope of
//!    `deploy/asyncapi.yaml`) and appended to the store outbox in one transaction.
//! 3. Publishing follows [`Journal::poll_publish`]; the payloads come from the store (or from
//!    memory, for events whose append failed: they keep flowing with
//!    [`Events::store_errors`] counting, so a full disk is reported, not fatal).
//! 4. The CRM's `…/events/ack` deletes (after persisting the acknowledged point); its
//!    `…/events/replay` re-yields; both and retention go through the journal's outbox.
//!
//! `event_id` is `{node}-{store id}-{seq}`: the store id is a random number drawn when the
//! state directory's database first runs the link ([`STORE_ID_KEY`]), so a node whose state
//! was wiped (and whose `seq` starts again at 1) never repeats an `event_id` the CRM has
//! already de-duplicated.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;
use shared::event::journal::{Output, Restored};
use shared::event::outbox;
use shared::event::{EventKind, Journal};
use shared::limits::SEQ_RESERVE_BLOCK;
use shared::time::{Instant, UnixMillis};

use crate::store::{StoreError, StoreHandle};
use shared::node::NodeEvent;

/// Store counter: the `seq` high-water mark (every issued `seq` is below it).
pub(crate) const HIGH_WATER_KEY: &str = "link.seq_high_water";
/// Store counter: the highest `seq` the CRM acknowledged.
pub(crate) const ACKED_KEY: &str = "link.acked_seq";
/// Store counter: every event below it left the outbox (acknowledged or dropped).
pub(crate) const FLOOR_KEY: &str = "link.outbox_floor";
/// Store counter: this database's random id, part of every `event_id`.
pub(crate) const STORE_ID_KEY: &str = "link.store_id";
/// Events held while no `seq` can be issued (the store is failing); beyond, the oldest drop.
pub(crate) const MAX_WAITING: usize = 10_000;
/// Marks kept for the oldest held event's age ([`Events::oldest_at`]): one per second of
/// events at most; beyond, newer events share the last mark (their age is over-stated).
const MAX_AGE_MARKS: usize = 65_536;

/// The CallEvent envelope (`deploy/asyncapi.yaml`).
#[derive(Serialize)]
struct Envelope<'a> {
    event_id: &'a str,
    node: &'a str,
    site: &'a str,
    seq: u64,
    call_id: Option<String>,
    call_seq: u32,
    at: String,
    language: Option<&'a str>,
    #[serde(flatten)]
    kind: &'a EventKind,
}

/// RFC 3339 with milliseconds.
pub(crate) fn rfc3339(t: UnixMillis) -> String {
    let mut s = String::with_capacity(24);
    let _ = t.write_rfc3339(&mut s);
    s
}

/// Renders one event's JSON.
pub(crate) fn render(node: &str, site: &str, store_id: u64, seq: u64, ev: &NodeEvent) -> String {
    let event_id = format!("{node}-{store_id:016x}-{seq}");
    let env = Envelope {
        event_id: &event_id,
        node,
        site,
        seq,
        call_id: ev.call_id.map(|c| c.to_string()),
        call_seq: ev.call_seq,
        at: rfc3339(ev.at),
        language: ev.language.as_ref().map(|l| l.as_str()),
        kind: &ev.kind,
    };
    let v = match serde_json::to_value(&env) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, seq, "event not serializable");
            serde_json::Value::Null
        }
    };
    // Serializing plain data to a String cannot fail; keep a valid document if it ever did.
    serde_json::to_string(&v).ok().filter(|_| !v.is_null()).unwrap_or_else(|| {
        format!(r#"{{"event_id":"{event_id}","node":"{node}","site":"{site}","seq":{seq},"call_id":null,"call_seq":0,"at":"{}","language":null,"type":"{}","data":{{}}}}"#, rfc3339(ev.at), ev.kind.type_str())
    })
}

/// The event pipeline's state (see the module docs): the core's [`Journal`] decides, this
/// does its store work and renders the envelopes.
pub(crate) struct Events {
    store: StoreHandle,
    node: String,
    site: String,
    journal: Journal<VecDeque<NodeEvent>>,
    /// This database's id (see the module docs); `None` until the counters were read.
    store_id: Option<u64>,
    /// Payloads whose store append failed.
    mem: BTreeMap<u64, Arc<str>>,
    /// Store operations that failed (a loud metric).
    pub(crate) store_errors: u64,
    /// The last store error.
    pub(crate) last_store_error: Option<String>,
    /// `(seq, at)` of the first event sequenced in each second, oldest first: the oldest held
    /// event's time to within a second, without reading the store.
    marks: VecDeque<(u64, i64)>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("last_seq", &self.last_seq())
            .field("depth", &self.depth())
            .finish_non_exhaustive()
    }
}

impl Events {
    /// A pipeline over `store` (nothing is read until [`Events::load`]).
    pub(crate) fn new(
        store: StoreHandle,
        node: &str,
        site: &str,
        config: outbox::Config,
    ) -> Events {
        Events {
            store,
            node: node.to_owned(),
            site: site.to_owned(),
            journal: Journal::new(config, SEQ_RESERVE_BLOCK, VecDeque::new(), MAX_WAITING),
            store_id: None,
            mem: BTreeMap::new(),
            store_errors: 0,
            last_store_error: None,
            marks: VecDeque::new(),
        }
    }

    fn store_failed(&mut self, what: &str, e: &StoreError) {
        self.store_errors = self.store_errors.saturating_add(1);
        self.last_store_error = Some(format!("{what}: {e}"));
        tracing::error!(error = %e, what, "event store operation failed");
    }

    /// Reads the counters and the stored outbox range (once; retried while it fails).
    /// Returns whether the pipeline is ready.
    pub(crate) async fn load(&mut self) -> bool {
        if self.store_id.is_some() {
            return true;
        }
        let fresh_id = random_u64() & (i64::MAX as u64);
        let r = self
            .store
            .run(move |s| -> Result<_, StoreError> {
                let hw = s.get_counter(HIGH_WATER_KEY)?;
                let acked = s.get_counter(ACKED_KEY)?;
                let floor = s.get_counter(FLOOR_KEY)?;
                let id = match s.get_counter(STORE_ID_KEY)? {
                    Some(id) => id,
                    None => {
                        s.set_counter(STORE_ID_KEY, fresh_id)?;
                        fresh_id
                    }
                };
                let bounds = s.outbox_bounds()?;
                Ok((hw, acked, floor, id, bounds))
            })
            .await
            .and_then(|r| r);
        let (hw, acked, floor, store_id, bounds) = match r {
            Ok(v) => v,
            Err(e) => {
                self.store_failed("reading the event counters", &e);
                return false;
            }
        };
        let last_issued = Restored::last_issued(bounds.map(|(_, hi)| hi), acked, floor);
        if let Some((lo, hi)) = bounds {
            // The oldest held event's time, for its age: read once from its JSON.
            let at = match self.store.outbox_range(lo, hi, 1).await {
                Ok(rows) => rows.into_iter().next().and_then(|(s, json)| {
                    let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
                    let at = UnixMillis::parse_rfc3339(v.get("at")?.as_str()?).ok()?;
                    Some((s.min(lo), at.0))
                }),
                Err(_) => None,
            };
            // Unreadable: the start of this process bounds it from below.
            self.marks
                .push_back(at.unwrap_or((lo, crate::clock::wall_now().0)));
        }
        let high_water = hw.unwrap_or(0);
        if last_issued.is_some_and(|l| l.saturating_add(1) < high_water) {
            tracing::info!(
                from = last_issued.unwrap_or(0) + 1,
                to = high_water - 1,
                "seq numbers skipped by the restart"
            );
        }
        self.journal.restore(
            crate::clock::wall_now(),
            Restored {
                high_water,
                last_issued,
                held: bounds,
                acked: acked.unwrap_or(0),
            },
        );
        tracing::info!(
            last_seq = last_issued.unwrap_or(0),
            held = bounds.map_or(0, |(lo, hi)| hi - lo + 1),
            "event outbox restored"
        );
        self.store_id = Some(store_id);
        true
    }

    /// Takes new events from the engine and runs the chain up to "appended" (see the module
    /// docs). Returns the JSON of every event newly written, in `seq` order.
    pub(crate) async fn submit(&mut self, batch: Vec<NodeEvent>) -> Vec<Arc<str>> {
        for ev in batch {
            self.journal.push(ev);
        }
        self.process().await
    }

    /// Whether events wait for a `seq` (the store is failing): call [`Events::process`]
    /// again later.
    pub(crate) fn has_waiting(&self) -> bool {
        self.journal.unnumbered() > 0
    }

    /// Does the journal's work: reserves, numbers, renders and appends what waits (one
    /// store transaction per run of appends), deletes what left, persists the CRM's
    /// acknowledgement point. Returns the JSON of every event newly written, in `seq` order.
    pub(crate) async fn process(&mut self) -> Vec<Arc<str>> {
        let mut out = Vec::new();
        if !self.load().await {
            return out;
        }
        let store_id = self.store_id.unwrap_or(0);
        // A reservation that failed before is tried again now (this runs on the retry timer).
        self.journal.retry();
        let mut rows: Vec<(u64, Arc<str>)> = Vec::new();
        while let Some(o) = self.journal.poll_output() {
            match o {
                Output::Reserve(mark) => {
                    match self.store.set_counter(HIGH_WATER_KEY.into(), mark).await {
                        Ok(()) => self.journal.reserved(mark),
                        Err(e) => {
                            self.journal.reserve_failed();
                            self.store_failed("reserving seq numbers", &e);
                        }
                    }
                }
                Output::Append { seq, event } => {
                    let json: Arc<str> =
                        render(&self.node, &self.site, store_id, seq, &event).into();
                    let new_second = self
                        .marks
                        .back()
                        .is_none_or(|&(_, at)| event.at.0 >= at + 1000);
                    if new_second && self.marks.len() < MAX_AGE_MARKS {
                        self.marks.push_back((seq, event.at.0));
                    }
                    rows.push((seq, json));
                }
                Output::Delete { below } => {
                    self.append(&mut rows, &mut out).await;
                    self.delete_below(below).await;
                }
                Output::Acked(n) => {
                    if let Err(e) = self.store.set_counter(ACKED_KEY.into(), n).await {
                        self.store_failed("storing the acknowledged seq", &e);
                    }
                }
            }
        }
        self.append(&mut rows, &mut out).await;
        out
    }

    /// Appends numbered events to the store outbox in one transaction; when that fails they
    /// keep flowing from memory (counted in `store_errors`).
    async fn append(&mut self, rows: &mut Vec<(u64, Arc<str>)>, out: &mut Vec<Arc<str>>) {
        if rows.is_empty() {
            return;
        }
        let bytes: Vec<(u64, Vec<u8>)> = rows
            .iter()
            .map(|(s, j)| (*s, j.as_bytes().to_vec()))
            .collect();
        if let Err(e) = self.store.outbox_append(bytes).await {
            self.store_failed("appending events to the outbox", &e);
            for (s, j) in rows.iter() {
                self.mem.insert(*s, Arc::clone(j));
            }
        }
        out.extend(rows.drain(..).map(|(_, j)| j));
    }

    async fn delete_below(&mut self, below: u64) {
        self.mem = self.mem.split_off(&below);
        let r = self
            .store
            .run(move |s| -> Result<usize, StoreError> {
                s.set_counter(FLOOR_KEY, below)?;
                s.outbox_delete_below(below)
            })
            .await
            .and_then(|r| r);
        if let Err(e) = r {
            self.store_failed("deleting acknowledged events", &e);
        }
    }

    /// The CRM holds everything up to `upto` (`…/events/ack`). Returns the JSON of any event
    /// this let through (events waiting for a `seq` go on).
    pub(crate) async fn crm_ack(&mut self, upto: u64) -> Vec<Arc<str>> {
        self.journal.crm_ack(upto);
        self.process().await
    }

    /// The CRM asks for `[from, to]` again (`…/events/replay`). Returns the JSON of any
    /// `seq.skipped` event this created.
    pub(crate) async fn replay(&mut self, from: u64, to: u64) -> Vec<Arc<str>> {
        self.journal.replay(crate::clock::wall_now(), from, to);
        self.process().await
    }

    /// The broker PUBACKed event `seq`.
    pub(crate) fn puback(&mut self, now: Instant, seq: u64) {
        self.journal.puback(now, seq);
    }

    /// The broker connection is gone: everything without a PUBACK is unpublished again.
    pub(crate) fn connection_lost(&mut self) {
        self.journal.connection_lost();
    }

    /// When retention next has work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.journal.poll_timeout()
    }

    /// Applies retention. Returns the JSON of any event this let through.
    pub(crate) async fn handle_timeout(&mut self, now: Instant) -> Vec<Arc<str>> {
        self.journal.handle_timeout(now);
        self.process().await
    }

    /// Up to `max` events to publish now, in order, with their JSON. Events the store does
    /// not hold (the restart gap) are passed over.
    ///
    /// # Errors
    /// A store read failed: everything unpublished stays so (try again later).
    pub(crate) async fn next_publishable(
        &mut self,
        max: usize,
        now: Instant,
    ) -> Result<Vec<(u64, Arc<str>)>, StoreError> {
        let mut out: Vec<(u64, Arc<str>)> = Vec::new();
        loop {
            let mut seqs = Vec::new();
            while out.len() + seqs.len() < max {
                match self.journal.poll_publish() {
                    Some(s) => seqs.push(s),
                    None => break,
                }
            }
            if seqs.is_empty() {
                break;
            }
            let mut stored: HashMap<u64, Vec<u8>> = HashMap::new();
            let missing: Vec<u64> = seqs
                .iter()
                .copied()
                .filter(|s| !self.mem.contains_key(s))
                .collect();
            for (lo, hi) in runs(&missing) {
                let len = usize::try_from(hi - lo + 1).unwrap_or(usize::MAX);
                match self.store.outbox_range(lo, hi, len).await {
                    Ok(rows) => stored.extend(rows),
                    Err(e) => {
                        self.store_failed("reading events to publish", &e);
                        self.connection_lost();
                        return Err(e);
                    }
                }
            }
            for s in seqs {
                let json = match self.mem.get(&s) {
                    Some(j) => Some(Arc::clone(j)),
                    None => stored
                        .remove(&s)
                        .and_then(|b| String::from_utf8(b).ok())
                        .map(Arc::from),
                };
                match json {
                    Some(j) => out.push((s, j)),
                    // A hole (the restart gap) or an unreadable row: nothing to send.
                    None => self.puback(now, s),
                }
            }
        }
        Ok(out)
    }

    /// Before a graceful stop: lower the high-water mark to the next unissued `seq`, so the
    /// next start has no gap.
    pub(crate) async fn close(&mut self) {
        let Some(next) = self.journal.next_unissued() else {
            return;
        };
        if let Err(e) = self.store.set_counter(HIGH_WATER_KEY.into(), next).await {
            self.store_failed("storing the final seq mark", &e);
        }
    }

    /// Events held (not acknowledged by the CRM), plus those waiting for a `seq`.
    pub(crate) fn depth(&self) -> u64 {
        self.journal.depth()
    }

    /// When the oldest event not yet acknowledged by the CRM happened (Unix ms, to within a
    /// second, never later than it), or `None` when nothing is held.
    pub(crate) fn oldest_at(&mut self) -> Option<i64> {
        let waiting = self.journal.oldest_unnumbered_at().map(|t| t.0);
        let held = match self.journal.outbox() {
            Some(o) if !o.is_empty() => {
                let oldest = o.oldest();
                while self.marks.get(1).is_some_and(|&(s, _)| s <= oldest) {
                    self.marks.pop_front();
                }
                self.marks.front().map(|&(_, at)| at)
            }
            _ => {
                self.marks.clear();
                None
            }
        };
        match (held, waiting) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether everything held was published and PUBACKed since the last (re)connect.
    pub(crate) fn flushed(&self) -> bool {
        self.journal.flushed()
    }

    /// Events dropped unacknowledged (full outbox, retention, or no `seq` for too long).
    pub(crate) fn dropped(&self) -> u64 {
        self.journal.dropped()
    }

    /// The last `seq` issued.
    pub(crate) fn last_seq(&self) -> u64 {
        self.journal.last_seq()
    }

    /// The highest `seq` the CRM acknowledged.
    pub(crate) fn acked_seq(&self) -> u64 {
        self.journal.acked_seq()
    }
}

/// Consecutive runs `[lo, hi]` of an increasing list.
fn runs(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &s in seqs {
        match out.last_mut() {
            Some((_, hi)) if hi.checked_add(1) == Some(s) => *hi = s,
            _ => out.push((s, s)),
        }
    }
    out
}

/// A random number from the standard library's per-process hash keys and the time (no
/// cryptographic use).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(crate::clock::wall_now().0);
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::ids::CallId;

    #[test]
    fn envelope_has_exactly_the_contract_fields() {
        let ev = NodeEvent {
            call: None,
            language: Some(shared::announce::Language::try_from("es").unwrap()),
            call_id: Some(CallId(0xab)),
            call_seq: 4,
            at: UnixMillis(1_795_413_662_345),
            kind: EventKind::SeqSkipped {
                from: 3,
                to: 9,
                reason: shared::event::SkipReason::Restart,
            },
        };
        let j = render("pi-001", "phl", 0x1234, 18234, &ev);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "at", "call_id", "call_seq", "data", "event_id", "language", "node", "seq", "site",
                "type"
            ]
        );
        assert_eq!(v["event_id"], "pi-001-0000000000001234-18234");
        assert_eq!(v["call_id"], "00000000000000ab");
        assert_eq!(v["call_seq"], 4);
        assert_eq!(v["language"], "es");
        assert_eq!(v["seq"], 18234);
        assert_eq!(v["at"], "2026-11-23T06:01:02.345Z");
        assert_eq!(v["type"], "seq.skipped");
        assert_eq!(
            v["data"],
            serde_json::json!({"from":3,"to":9,"reason":"restart"})
        );
        let none = NodeEvent {
            language: None,
            call_id: None,
            ..ev
        };
        let v: serde_json::Value = serde_json::from_str(&render("n", "s", 1, 1, &none)).unwrap();
        assert!(v["call_id"].is_null());
        assert!(v["language"].is_null());
    }

    #[tokio::test]
    async fn the_oldest_held_event_is_dated_to_within_a_second() {
        let dir = std::env::temp_dir().join(format!(
            "ccedge-oldest-{}-{}",
            std::process::id(),
            random_u64()
        ));
        let store = StoreHandle::open(&dir).unwrap();
        let ev = |at: i64| NodeEvent {
            call: None,
            language: None,
            call_id: Some(CallId(1)),
            call_seq: 1,
            at: UnixMillis(at),
            kind: EventKind::Dtmf {
                digit: shared::dtmf::Digit::D5,
            },
        };
        let t0 = 1_795_413_662_000;
        let mut events = Events::new(store.clone(), "n", "s", outbox::Config::default());
        assert_eq!(events.oldest_at(), None);
        // seq 1..=3 in the first second, 4 and 5 two and five seconds later.
        let batch = vec![
            ev(t0),
            ev(t0 + 300),
            ev(t0 + 900),
            ev(t0 + 2_000),
            ev(t0 + 5_000),
        ];
        assert_eq!(events.submit(batch).await.len(), 5);
        assert_eq!(events.oldest_at(), Some(t0));
        events.crm_ack(2).await;
        // seq 3 is held: dated by its second's first event.
        assert_eq!(events.oldest_at(), Some(t0));
        events.crm_ack(3).await;
        assert_eq!(events.oldest_at(), Some(t0 + 2_000));
        // A restart reads the oldest held event's time from the store.
        let mut again = Events::new(store.clone(), "n", "s", outbox::Config::default());
        assert!(again.load().await);
        assert_eq!(again.oldest_at(), Some(t0 + 2_000));
        events.crm_ack(5).await;
        assert_eq!(events.oldest_at(), None);
        drop((events, again, store));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn runs_split_on_gaps() {
        assert_eq!(runs(&[]), []);
        assert_eq!(runs(&[1, 2, 3, 7, 8, 10]), [(1, 3), (7, 8), (10, 10)]);
    }
}
