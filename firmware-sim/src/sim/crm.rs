//! The simulated MQTT broker and CRM.
//!
//! The broker forwards the node's events and callback requests to the CRM, PUBACKs them to the
//! node as soon as it has them (a PUBACK is not durable: a broker that dies loses what it had
//! acknowledged but not yet delivered), keeps retained announcements, and forwards the CRM's
//! acknowledgements, replay requests, callback state updates and announcements to the node.
//!
//! The CRM de-duplicates events by `seq`, acknowledges the contiguous prefix it holds
//! (`upto_seq`), asks for a replay of any gap that persists, accounts `seq.skipped` ranges,
//! and moves callbacks on (accepted, then completed or cancelled; a quarter of them only
//! after 5 to 30 minutes, so some expire on the node first).

use alloc::collections::{BTreeMap, BTreeSet};

use shared::announce::Announcement;
use shared::callback::{CrmState, Entry};
use shared::event::{CallEvent, EventKind};
use shared::time::{Duration, Instant};

use super::ctx::Ctx;
use super::oracle::Check;
use super::sched::Ev;

/// Node → broker → CRM.
#[derive(Debug, Clone)]
pub(crate) enum Up {
    /// A CallEvent (QoS 1).
    Event(CallEvent),
    /// A CallbackRequest with its position (QoS 1).
    Callback { entry: Entry, position: u32 },
    /// The node's status; `last_seq` is the highest seq it issued (0: none).
    Status { last_seq: u64 },
}

/// CRM or broker → node.
// Messages are moved once through the agenda; boxing the announcement would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Down {
    /// PUBACK for an event.
    Puback(u64),
    /// PUBACK for a callback request.
    CbPuback(String),
    /// `…/events/ack`.
    Ack(u64),
    /// `…/events/replay`.
    Replay(u64, u64),
    /// `…/callbacks/{id}/state`.
    CbState(String, CrmState),
    /// A retained announcement (or its withdrawal).
    Announcement(String, Option<Announcement>),
}

/// The broker.
#[derive(Debug)]
pub(crate) struct Broker {
    pub(crate) up: bool,
    /// Incremented at every restart: messages of an older life are lost.
    pub(crate) gen: u64,
    /// The node's live connection.
    pub(crate) node_conn: Option<u64>,
    next_conn: u64,
    retained: BTreeMap<String, Option<Announcement>>,
}

impl Broker {
    pub(crate) fn new() -> Broker {
        Broker {
            up: true,
            gen: 1,
            node_conn: None,
            next_conn: 1,
            retained: BTreeMap::new(),
        }
    }

    fn hop(ctx: &mut Ctx) -> Duration {
        ctx.ms(1, 4)
    }

    /// The node connects: a new connection id, and the retained announcements follow.
    pub(crate) fn connect_node(&mut self, ctx: &mut Ctx) -> Option<u64> {
        if !self.up {
            return None;
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        self.node_conn = Some(conn);
        for (id, a) in &self.retained {
            let d = Self::hop(ctx);
            ctx.after(
                d,
                Ev::ToNode {
                    conn,
                    msg: Down::Announcement(id.clone(), a.clone()),
                },
            );
        }
        Some(conn)
    }

    /// A message from the node arrives.
    pub(crate) fn on_node_msg(&mut self, ctx: &mut Ctx, conn: u64, msg: Up) {
        if !self.up || self.node_conn != Some(conn) {
            ctx.stats.broker_messages_lost += 1;
            return;
        }
        let ack = match &msg {
            Up::Event(ev) => Some(Down::Puback(ev.seq)),
            Up::Callback { entry, .. } => Some(Down::CbPuback(entry.id.as_str().to_string())),
            Up::Status { .. } => None,
        };
        if let Some(ack) = ack {
            let d = Self::hop(ctx);
            ctx.after(d, Ev::ToNode { conn, msg: ack });
        }
        // The CRM's consumer may lag: what the broker holds for it is lost if it dies.
        let d = if ctx.rng.chance(0.2) {
            ctx.ms(5, 400)
        } else {
            Self::hop(ctx)
        };
        ctx.after(
            d,
            Ev::BrokerToCrm {
                bgen: self.gen,
                msg,
            },
        );
    }

    /// A message from the CRM arrives: keep retained ones, forward to the node.
    pub(crate) fn on_crm_msg(&mut self, ctx: &mut Ctx, bgen: u64, msg: Down) {
        if !self.up || bgen != self.gen {
            ctx.stats.broker_messages_lost += 1;
            return;
        }
        if let Down::Announcement(id, a) = &msg {
            self.retained.insert(id.clone(), a.clone());
        }
        if let Some(conn) = self.node_conn {
            let d = Self::hop(ctx);
            ctx.after(d, Ev::ToNode { conn, msg });
        }
    }

    /// The broker dies (kill -9): connections drop, undelivered messages are lost.
    pub(crate) fn down(&mut self) {
        self.up = false;
        self.gen += 1;
        self.node_conn = None;
    }
}

#[derive(Debug, Clone)]
struct CrmCallback {
    /// The latest state the CRM decided, once final.
    final_state: Option<CrmState>,
    finished_at: Option<Instant>,
}

/// The CRM.
#[derive(Debug, Default)]
pub(crate) struct Crm {
    /// The broker life the CRM is connected to (set by the world before every call).
    pub(crate) bgen: u64,
    /// Every event received, by seq (de-duplicated).
    pub(crate) received: BTreeMap<u64, CallEvent>,
    /// `seq.skipped` ranges received.
    pub(crate) skipped: Vec<(u64, u64)>,
    /// Every seq `<= contiguous` is received or skipped.
    pub(crate) contiguous: u64,
    ack_sent: u64,
    last_ack_at: Option<Instant>,
    node_last_seq: u64,
    gap_since: Option<(u64, Instant)>,
    last_replay_at: Option<Instant>,
    callbacks: BTreeMap<String, CrmCallback>,
    /// Announcement changes not yet accepted by the broker.
    pending_announcements: Vec<(String, Option<Announcement>)>,
    /// The announcements the CRM has published (id → latest, None when withdrawn).
    pub(crate) announcements: BTreeMap<String, Option<Announcement>>,
    /// Events per type, for the summary.
    pub(crate) by_type: BTreeMap<&'static str, u64>,
    /// Callback ids received.
    pub(crate) callbacks_received: BTreeSet<String>,
}

impl Crm {
    /// A message from the broker.
    pub(crate) fn receive(&mut self, ctx: &mut Ctx, msg: Up) -> Check {
        match msg {
            Up::Event(ev) => {
                ctx.oracle.crm_event(&ev)?;
                if self.received.contains_key(&ev.seq) {
                    ctx.stats.events_redelivered += 1;
                    return Ok(());
                }
                ctx.stats.events_delivered += 1;
                *self.by_type.entry(ev.kind.type_str()).or_default() += 1;
                if let EventKind::SeqSkipped { from, to, .. } = ev.kind {
                    ctx.stats.seq_skipped_events += 1;
                    ctx.stats.seq_numbers_skipped += to.saturating_sub(from) + 1;
                    self.skipped.push((from, to));
                    if let Some(s) = self.received.range(from..=to).next() {
                        return Err(super::oracle::Violation(format!(
                            "seq.skipped [{from}, {to}] covers seq {} which was delivered",
                            s.0
                        )));
                    }
                }
                self.received.insert(ev.seq, ev);
                self.advance();
            }
            Up::Callback { entry, position } => {
                let id = entry.id.as_str().to_string();
                ctx.oracle.checks += 1;
                if position == 0 {
                    return Err(super::oracle::Violation(format!(
                        "callback {id} published with position 0 (waiting entries rank from 1)"
                    )));
                }
                ctx.oracle.crm_callback(&id, entry.call_id.0)?;
                self.callbacks_received.insert(id.clone());
                match self.callbacks.get(&id) {
                    None => {
                        self.callbacks.insert(
                            id.clone(),
                            CrmCallback {
                                final_state: None,
                                finished_at: None,
                            },
                        );
                        let accept = ctx.ms(500, 5_000);
                        ctx.after(
                            accept,
                            Ev::CrmCallback {
                                id: id.clone(),
                                state: CrmState::Accepted,
                            },
                        );
                        // Most callbacks are done within minutes; a backlog leaves some
                        // waiting past the node's max age (they expire there).
                        let done = if ctx.rng.chance(0.25) {
                            ctx.ms(300_000, 1_800_000)
                        } else {
                            ctx.ms(20_000, 240_000)
                        };
                        let state = if ctx.rng.chance(0.1) {
                            CrmState::Cancelled
                        } else {
                            CrmState::Completed
                        };
                        ctx.after(done, Ev::CrmCallback { id, state });
                    }
                    Some(cb) => {
                        // Published again (resync): repeat a final state the node missed.
                        if let Some(s) = cb.final_state {
                            self.send(ctx, Down::CbState(id, s));
                        }
                    }
                }
            }
            Up::Status { last_seq } => {
                self.node_last_seq = self.node_last_seq.max(last_seq);
            }
        }
        Ok(())
    }

    fn advance(&mut self) {
        loop {
            let next = self.contiguous + 1;
            if self.received.contains_key(&next) {
                self.contiguous = next;
                continue;
            }
            if let Some(&(_, b)) = self.skipped.iter().find(|&&(a, b)| a <= next && next <= b) {
                self.contiguous = b;
                continue;
            }
            break;
        }
    }

    /// Sends to the node through the broker (lost when the broker is down).
    fn send(&mut self, ctx: &mut Ctx, msg: Down) {
        let d = ctx.ms(1, 4);
        ctx.after(
            d,
            Ev::CrmToBroker {
                bgen: self.bgen,
                msg,
            },
        );
    }

    /// The CRM's periodic work.
    pub(crate) fn tick(&mut self, ctx: &mut Ctx, broker_up: bool) {
        if !broker_up {
            return;
        }
        let now = ctx.now;
        if self.contiguous > self.ack_sent
            || self
                .last_ack_at
                .is_none_or(|t| now - t >= Duration::from_secs(5))
        {
            self.ack_sent = self.contiguous;
            self.last_ack_at = Some(now);
            self.send(ctx, Down::Ack(self.contiguous));
        }
        // A gap: something above `contiguous` is known to exist.
        let top = self
            .received
            .last_key_value()
            .map_or(0, |(s, _)| *s)
            .max(self.node_last_seq);
        let missing = self.contiguous + 1;
        if top >= missing {
            let since = match self.gap_since {
                Some((m, t)) if m == missing => t,
                _ => {
                    self.gap_since = Some((missing, now));
                    now
                }
            };
            let quiet = self
                .last_replay_at
                .is_none_or(|t| now - t >= Duration::from_secs(3));
            if now - since >= Duration::from_secs(2) && quiet {
                let upper = self
                    .received
                    .range(missing..)
                    .next()
                    .map_or(top, |(s, _)| s - 1)
                    .min(missing + 2_000);
                self.last_replay_at = Some(now);
                ctx.stats.replay_requests += 1;
                self.send(ctx, Down::Replay(missing, upper));
            }
        } else {
            self.gap_since = None;
        }
        // Announcement changes the broker has not taken yet.
        for (id, a) in core::mem::take(&mut self.pending_announcements) {
            self.send(ctx, Down::Announcement(id, a));
        }
        // Repeat recent final callback states (a lost update would leave the entry waiting).
        let recent: Vec<(String, CrmState)> = self
            .callbacks
            .iter()
            .filter_map(|(id, cb)| {
                let at = cb.finished_at?;
                let s = cb.final_state?;
                let age = now - at;
                (age >= Duration::from_secs(30)
                    && age < Duration::from_secs(600)
                    && (age.as_secs() % 60) < 1)
                    .then(|| (id.clone(), s))
            })
            .collect();
        for (id, s) in recent {
            self.send(ctx, Down::CbState(id, s));
        }
    }

    /// A scheduled callback update is due.
    pub(crate) fn callback_update(
        &mut self,
        ctx: &mut Ctx,
        id: String,
        state: CrmState,
        broker_up: bool,
    ) {
        if !broker_up {
            // Try again later.
            let d = ctx.ms(2_000, 5_000);
            ctx.after(d, Ev::CrmCallback { id, state });
            return;
        }
        if matches!(state, CrmState::Completed | CrmState::Cancelled) {
            ctx.oracle.crm_finished(&id);
            if let Some(cb) = self.callbacks.get_mut(&id) {
                if cb.final_state.is_none() {
                    ctx.stats.callbacks_completed_by_crm += 1;
                }
                cb.final_state = Some(state);
                cb.finished_at = Some(ctx.now);
            }
        }
        self.send(ctx, Down::CbState(id, state));
    }

    /// Publishes an announcement change (retained); kept for retry while the broker is down.
    pub(crate) fn publish_announcement(
        &mut self,
        ctx: &mut Ctx,
        id: String,
        a: Option<Announcement>,
        broker_up: bool,
    ) {
        ctx.stats.announcement_changes += 1;
        self.announcements.insert(id.clone(), a.clone());
        if broker_up {
            self.send(ctx, Down::Announcement(id, a));
        } else {
            self.pending_announcements.retain(|(i, _)| *i != id);
            self.pending_announcements.push((id, a));
        }
    }
}
