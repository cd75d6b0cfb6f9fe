//! The simulated host of one ccedge node: `shared::node::Node`, the same type the `edge`
//! daemon drives, with simulated I/O around it.
//!
//! Everything a call, a booking, an announcement or an event *means* is decided by the node.
//! This shell only does what the daemon's shell does, on the simulator's clock:
//!
//! * **SIP**: datagrams for the node's SIP address go to [`Node::handle_sip`]; the setup
//!   closure hands out an RTP port and draws the call's randomness from the run's stream.
//!   [`Output::Transmit`] goes back on the simulated network.
//! * **RTP**: a port → call map built from [`Output::CallCreated`] / [`Output::Released`].
//! * **Media**: each call's sending side is the daemon's own [`Playout`] (the playlist, hold
//!   and talk-spurt rules), ticked by one 20 ms pacer tick for all calls, as in the daemon,
//!   while any playlist plays; a
//!   prompt is a segment of as many frames as its length (see [`super::media`]). The caller
//!   hears the playlist as one audio datagram; the tick on which the playout plays its last
//!   frame is reported with [`Node::handle_playback_finished`]. A newer playlist, a stop or
//!   the end of the media replaces it, with no end reported, as in the daemon's pacer.
//! * **Disk**: a [`Disk`] that survives crashes: callback records, the seq high-water mark,
//!   the outbox, the announcements and their audio files. Writes take time and may fail; a
//!   callback store is answered with [`Node::handle_stored`].
//! * **Events**: [`Output::Event`] goes into the daemon's own [`Journal`] (numbering, durable
//!   reservation, the outbox, `seq.skipped`), is written to the disk outbox and published to
//!   the broker.
//! * **Timer**: one timer, re-armed from [`Node::poll_timeout`] after every input.
//! * **Crash / restart**: the process loses everything but the disk; [`Host::start`] builds
//!   a new node from it.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use shared::announce::{self, Announcement, Sha256};
use shared::call::{self, Media, Setup};
use shared::callback::{self, Entry, State};
use shared::event::journal::{Output as JournalOutput, Restored};
use shared::event::outbox::{self, Outbox};
use shared::event::{CallEvent, EventKind, Journal};
use shared::ids::{AnnouncementId, CallId, CallbackId};
use shared::ivr::Playlist;
use shared::limits::{
    ANNOUNCE_RETIRED, CALLBACK_QUEUE_CAPACITY, MAX_ANNOUNCEMENTS, SIP_MAX_DATAGRAM,
};
use shared::node::{self, CallKey, CallTable, CrmInput, HeapCalls, Node, NodeEvent, Now, Output};
use shared::rtp::playout::Playout;
use shared::rtp::{OutboundStream, Ssrc};
use shared::sip::uas;
use shared::time::{Duration, Instant, UnixMillis};

use super::crm::{Broker, Down, Up};
use super::ctx::Ctx;
use super::media::{announcement_length, prompt_length};
use super::oracle::{fail, Check};
use super::sched::{DiskOp, Ev, Msg};
use crate::gateway::uac::call_id_of;

/// The node's IP address.
pub(crate) const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The node's SIP address.
pub(crate) const NODE_SIP: SocketAddr = SocketAddr::new(IpAddr::V4(NODE_IP), 5060);
/// First RTP port.
const RTP_BASE: u16 = 20_000;
/// The node's site (announcement scopes).
pub(crate) const SITE: &str = "phl";
/// How late the shell may act on a deadline and still be on time: one media tick.
pub(crate) const TICK: Duration = Duration::from_millis(20);
/// Most audio files the cache may hold: one per stored announcement plus the retired
/// versions calls may still be playing.
pub(crate) const AUDIO_CACHE_MAX: usize = MAX_ANNOUNCEMENTS + ANNOUNCE_RETIRED;

/// Deliberate bugs, to prove the oracle catches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inject {
    /// Write the first booked callback twice, under two ids.
    DuplicateCallback,
    /// Forget the seq high-water mark at restart.
    ReuseSeq,
}

/// The host's tuning for one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostParams {
    pub(crate) max_calls: usize,
    pub(crate) answer_delay: Duration,
    pub(crate) outbox_capacity: u64,
    pub(crate) seq_block: u64,
    /// Probability that a callback store fails.
    pub(crate) store_fail: f64,
    /// Probability that a callback store takes longer than the IVR's booking timeout.
    pub(crate) store_slow: f64,
    /// Probability that persisting a seq mark fails.
    pub(crate) mark_fail: f64,
    /// Most events waiting for a seq.
    pub(crate) pending_max: usize,
    /// `callbacks.max_age`: booked callbacks older than this expire.
    pub(crate) callback_max_age: Duration,
    pub(crate) inject: Option<Inject>,
}

/// What survives a crash.
#[derive(Debug, Default)]
pub(crate) struct Disk {
    pub(crate) boot: u32,
    pub(crate) callbacks: BTreeMap<String, Entry>,
    pub(crate) seq_mark: u64,
    pub(crate) outbox: BTreeMap<u64, CallEvent>,
    /// Every event below this was acknowledged or dropped (and deleted).
    pub(crate) deleted_below: u64,
    pub(crate) announcements: BTreeMap<String, Announcement>,
    /// The audio cache: files by hash.
    pub(crate) audio: BTreeSet<Sha256>,
    /// Cached files no stored announcement names, oldest first (kept a while for calls
    /// still playing a replaced version).
    audio_retired: VecDeque<Sha256>,
    /// The injected bug already fired (it fires once per run).
    injected: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct MediaPath {
    started: bool,
    send: bool,
    remote: Option<SocketAddr>,
}

/// The shell's side of one call: what the node does not keep for it.
#[derive(Debug)]
struct CallIo {
    id: CallId,
    port: u16,
    media: MediaPath,
    /// The call's sending side from the media start to its stop; a segment is a prompt's
    /// length in frames.
    playout: Option<Playout<VecDeque<u32>>>,
}

/// One RTP frame: the playout's tick.
const FRAME: Duration = Duration::from_millis(20);

/// The running process (gone at a crash).
#[derive(Debug)]
struct Live {
    node: Node<HeapCalls>,
    calls: BTreeMap<CallKey, CallIo>,
    /// RTP ports handed out (`None`: given to a setup, the call not created yet).
    ports: BTreeMap<u16, Option<CallKey>>,
    next_port: u16,
    next_call: u64,
    /// The deadline the one timer is armed for.
    timer: Option<Instant>,
    /// The pacer's tick is armed (while any playlist plays).
    tick_armed: bool,
    /// The daemon's event journal (numbering, reservation, outbox, `seq.skipped`).
    journal: Journal<VecDeque<NodeEvent>>,
    conn: Option<u64>,
    /// Disk writes in flight (applied or not at a crash).
    inflight: BTreeMap<u64, DiskOp>,
    next_write: u64,
    started_at: Instant,
    /// Scratch buffer for outgoing SIP.
    buf: Vec<u8>,
}

/// The host.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) disk: Disk,
    pub(crate) epoch: u32,
    live: Option<Live>,
    params: HostParams,
    cfg: node::Config,
    outbox_cfg: outbox::Config,
    /// Counters of the nodes of earlier boots.
    past: node::Stats,
    /// Since when the node's active-call count has disagreed with the oracle's.
    active_mismatch_since: Option<Instant>,
}

fn sip_cfg() -> &'static uas::Config {
    static CFG: uas::Config = uas::Config::new("sip:ccedge@10.0.0.1:5060", "10.0.0.1:5060");
    &CFG
}

fn now_of(ctx: &Ctx) -> Now {
    Now {
        at: ctx.now,
        wall: ctx.wall(),
    }
}

impl Host {
    /// A host that has never run (empty disk); call [`Host::start`].
    pub(crate) fn new(params: HostParams) -> Host {
        let mut call_cfg = call::Config::new(sip_cfg());
        call_cfg.answer_delay = params.answer_delay;
        let cfg = node::Config {
            call: Box::leak(Box::new(call_cfg)),
            site: announce::Site::try_from(SITE).unwrap_or_default(),
            callbacks: callback::Config {
                max_age: params.callback_max_age,
                ..callback::Config::default()
            },
            max_calls: params.max_calls,
            hours: Box::leak(Box::new(callback::window::Hours::always())),
            // One language: the simulated callers do not choose one.
            languages: node::Languages::default(),
        };
        Host {
            disk: Disk::default(),
            epoch: 0,
            live: None,
            params,
            cfg,
            outbox_cfg: outbox::Config {
                capacity: params.outbox_capacity,
                ..outbox::Config::default()
            },
            past: node::Stats::default(),
            active_mismatch_since: None,
        }
    }

    /// Whether the process runs.
    pub(crate) fn is_up(&self) -> bool {
        self.live.is_some()
    }

    /// Calls in the node's table.
    pub(crate) fn calls(&self) -> usize {
        self.live.as_ref().map_or(0, |l| l.node.calls().len())
    }

    /// The callback queue, while up.
    pub(crate) fn queue(&self) -> Option<&callback::CallbackQueue> {
        self.live.as_ref().map(|l| l.node.queue())
    }

    /// Whether the node is connected to the broker.
    pub(crate) fn connected(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.conn.is_some())
    }

    /// The node's counters, summed over every boot.
    pub(crate) fn node_stats(&self) -> node::Stats {
        let now = self
            .live
            .as_ref()
            .map(|l| l.node.stats())
            .unwrap_or_default();
        add_stats(self.past, now)
    }

    /// Whether nothing is left to do: no calls, no unpublished or unacknowledged events, no
    /// writes in flight, and every callback the CRM has not finished accepted by it.
    pub(crate) fn drained(&self) -> bool {
        self.live.as_ref().is_some_and(|l| {
            l.node.calls().is_empty()
                && l.node.active_calls() == 0
                && l.journal.unnumbered() == 0
                && l.journal.outbox().is_none_or(Outbox::is_empty)
                && l.inflight.is_empty()
                && l.node
                    .queue()
                    .iter()
                    .all(|e| matches!(e.state, State::Accepted | State::Assigned))
        })
    }

    /// Per-step bounds and timeliness: call table and active calls, callback queue and
    /// expiry, outbox, pending events, announcements and the shell's own bookkeeping.
    pub(crate) fn check_bounds(&mut self, ctx: &mut Ctx) -> Check {
        let Some(l) = self.live.as_ref() else {
            self.active_mismatch_since = None;
            return Ok(());
        };
        ctx.oracle.checks += 9;
        let p = &self.params;
        let table = l.node.calls().len();
        let active = l.node.active_calls();
        if table > p.max_calls * 2 {
            fail!(
                "call table holds {table} calls, above twice the configured {}",
                p.max_calls
            );
        }
        if active > p.max_calls {
            fail!(
                "{active} calls active, above the configured {}",
                p.max_calls
            );
        }
        if active > table {
            fail!("{active} calls counted active, but the table holds only {table}");
        }
        // The active count must agree with the calls between call.offered and call.ended
        // (give or take one tick: a timer due at this instant may not have run yet).
        let live = ctx.oracle.live_calls();
        if active == live {
            self.active_mismatch_since = None;
        } else {
            let since = *self.active_mismatch_since.get_or_insert(ctx.now);
            if ctx.now - since > TICK {
                fail!(
                    "the node counts {active} active calls but {live} calls are between call.offered and call.ended (since t = {:.3} s)",
                    since.as_micros() as f64 / 1e6
                );
            }
        }
        let q = l.node.queue();
        if q.len() > CALLBACK_QUEUE_CAPACITY {
            fail!("callback queue holds {} entries", q.len());
        }
        // A booked callback past its max age (by the run's setting, not the queue's own
        // deadline) must have expired; a node that restarted at `started_at` had its first
        // chance then.
        let max_age = i64::try_from(p.callback_max_age.as_millis()).unwrap_or(i64::MAX);
        let tick = i64::try_from(TICK.as_millis()).unwrap_or(i64::MAX);
        let oldest = q
            .iter()
            .filter(|e| e.state.is_booked())
            .min_by_key(|e| e.requested_at);
        if let Some(e) = oldest {
            let due = e
                .requested_at
                .0
                .saturating_add(max_age)
                .max(wall_of(l.started_at).0);
            let late_ms = ctx.wall().0 - due;
            if late_ms > tick {
                fail!(
                    "callback {} ({}) is past its max age of {} s by {late_ms} ms and has not expired",
                    e.id,
                    e.state,
                    p.callback_max_age.as_secs()
                );
            }
        }
        let held = l.journal.outbox().map_or(0, Outbox::depth);
        if held > p.outbox_capacity || self.disk.outbox.len() as u64 > p.outbox_capacity {
            fail!(
                "outbox holds {} events ({} on disk), above its capacity {}",
                held,
                self.disk.outbox.len(),
                p.outbox_capacity
            );
        }
        if l.journal.unnumbered() > p.pending_max {
            fail!("{} events wait for a seq number", l.journal.unnumbered());
        }
        let anns = l.node.announcements().len();
        if anns > MAX_ANNOUNCEMENTS || self.disk.announcements.len() > MAX_ANNOUNCEMENTS {
            fail!(
                "{anns} announcements in the node's set, {} on disk: above {MAX_ANNOUNCEMENTS}",
                self.disk.announcements.len()
            );
        }
        if self.disk.audio.len() > AUDIO_CACHE_MAX {
            fail!(
                "the audio cache holds {} files for {} stored announcements (at most {AUDIO_CACHE_MAX})",
                self.disk.audio.len(),
                anns
            );
        }
        if l.calls.len() > table || l.ports.len() > table + 1 {
            fail!(
                "the shell tracks {} calls and {} RTP ports for {table} calls in the table",
                l.calls.len(),
                l.ports.len()
            );
        }
        Ok(())
    }

    /// Starts (or restarts) the process from the disk.
    pub(crate) fn start(&mut self, ctx: &mut Ctx) -> Check {
        self.epoch += 1;
        self.disk.boot += 1;
        let now = now_of(ctx);
        let calls = HeapCalls::with_capacity(self.params.max_calls * 2);
        let mut node = Node::new(self.cfg.clone(), calls, now);
        let _report = node.restore_callbacks(now, self.disk.callbacks.values().cloned());
        for a in self.disk.announcements.values() {
            if let Some(sha) = a.audio.filter(|s| self.disk.audio.contains(s)) {
                let input = announce::Input::AudioAvailable(sha);
                let _ = node.handle_crm(now, CrmInput::Announcement(input));
            }
            let input = announce::Input::Upsert(a.clone());
            let _ = node.handle_crm(now, CrmInput::Announcement(input));
        }
        let held = self
            .disk
            .outbox
            .first_key_value()
            .zip(self.disk.outbox.last_key_value())
            .map(|((lo, _), (hi, _))| (*lo, *hi));
        let last_issued =
            Restored::last_issued(held.map(|(_, hi)| hi), None, Some(self.disk.deleted_below));
        let reuse = self.params.inject == Some(Inject::ReuseSeq);
        let mut journal = Journal::new(
            self.outbox_cfg,
            self.params.seq_block,
            VecDeque::new(),
            // One more than the bound `check_bounds` holds it to, so a queue that runs away
            // (a reservation that never comes back) is a violation, not a silent drop.
            self.params.pending_max.saturating_add(1),
        );
        journal.restore(
            ctx.wall(),
            Restored {
                high_water: if reuse { 0 } else { self.disk.seq_mark },
                last_issued: if reuse { None } else { last_issued },
                held,
                acked: 0,
            },
        );
        let live = Live {
            node,
            calls: BTreeMap::new(),
            ports: BTreeMap::new(),
            next_port: RTP_BASE,
            next_call: 1,
            timer: None,
            tick_armed: false,
            journal,
            conn: None,
            inflight: BTreeMap::new(),
            next_write: 1,
            started_at: ctx.now,
            buf: vec![0; SIP_MAX_DATAGRAM + 512],
        };
        self.live = Some(live);
        ctx.oracle
            .booked_present(&self.disk.callbacks, self.queue())?;
        self.drain(ctx)?;
        let epoch = self.epoch;
        let d = ctx.ms(100, 1_000);
        ctx.after(d, Ev::NodeConnect { epoch });
        ctx.after(Duration::from_secs(10), Ev::NodeStatusTick { epoch });
        Ok(())
    }

    /// The process dies: everything in memory is gone; writes in flight land or not.
    pub(crate) fn crash(&mut self, ctx: &mut Ctx, broker: &mut Broker) {
        let Some(live) = self.live.take() else {
            return;
        };
        ctx.stats.crashes += 1;
        self.past = add_stats(self.past, live.node.stats());
        let cut = ctx.oracle.crash(live.calls.values().map(|c| c.id.0));
        ctx.stats.calls_cut_by_crash += cut;
        live.journal.for_each_unnumbered(|ev| {
            if let EventKind::CallbackExpired { callback_id } = &ev.kind {
                ctx.oracle.expiry_lost_in_crash(callback_id.as_str());
            }
        });
        for op in live.inflight.into_values() {
            if ctx.rng.chance(0.5) {
                match op {
                    DiskOp::StoreCallback { id, entry } => {
                        // Durable, but the confirmation never ran (restored as Stored).
                        let _ = ctx.oracle.disk_written(&id, &entry, &self.disk.callbacks);
                        self.disk.callbacks.insert(id, entry);
                    }
                    DiskOp::SeqMark(m) => self.disk.seq_mark = self.disk.seq_mark.max(m),
                }
            }
        }
        if broker.node_conn == live.conn {
            broker.node_conn = None;
        }
        self.epoch += 1;
    }

    // ---- inputs -----------------------------------------------------------------------------

    /// A SIP datagram arrives from `from`.
    pub(crate) fn on_sip(&mut self, ctx: &mut Ctx, from: SocketAddr, data: &[u8]) -> Check {
        let boot = u64::from(self.disk.boot);
        let span = port_span(self.params.max_calls);
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let now = now_of(ctx);
        let Live {
            node,
            ports,
            next_port,
            next_call,
            ..
        } = live;
        let rng = &mut ctx.rng;
        node.handle_sip(now, from, data, || {
            let port = take_port(ports, next_port, span)?;
            let n = *next_call;
            *next_call += 1;
            Some(Setup {
                id: CallId((boot << 32) | n),
                local_tag: rng.next_u64(),
                local_rtp: SocketAddr::new(IpAddr::V4(NODE_IP), port),
                session_id: rng.next_u64() >> 1,
            })
        });
        self.drain(ctx)
    }

    /// An RTP datagram arrives on `port`.
    pub(crate) fn on_rtp(
        &mut self,
        ctx: &mut Ctx,
        port: u16,
        from: SocketAddr,
        data: &[u8],
    ) -> Check {
        let now = now_of(ctx);
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let Some(Some(key)) = live.ports.get(&port).copied() else {
            return Ok(());
        };
        // A refused packet is counted by the node.
        // The simulated gateway sends media from the address its SDP names; nothing is
        // vouched for, so every seed runs the strict source rule.
        let _ = live.node.handle_rtp(now, key, from, false, data);
        self.drain(ctx)
    }

    /// The pacer's 20 ms tick, for every call at once as in the daemon: each playing
    /// [`Playout`] moves on one frame; the calls whose playlist played its last frame are
    /// reported to the node, in call order. Armed while any playlist plays.
    pub(crate) fn on_play_tick(&mut self, ctx: &mut Ctx, epoch: u32) -> Check {
        if epoch != self.epoch {
            return Ok(());
        }
        let now = now_of(ctx);
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        live.tick_armed = false;
        let mut ended = Vec::new();
        let mut playing = false;
        for (key, io) in &mut live.calls {
            let Some(p) = io.playout.as_mut().filter(|p| p.is_playing()) else {
                continue;
            };
            if p.tick(|f| *f as usize, |_, _| {}) {
                ended.push((*key, io.id.0));
            }
            playing |= p.is_playing();
        }
        if playing {
            live.tick_armed = true;
            ctx.after(FRAME, Ev::PlayTick { epoch });
        }
        for (key, id) in ended {
            if live.node.handle_playback_finished(now, key).is_ok() {
                ctx.oracle.playback_finished(id);
            }
        }
        self.drain(ctx)
    }

    /// The node's timer fired.
    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx, epoch: u32, at: Instant) -> Check {
        if epoch != self.epoch {
            return Ok(());
        }
        let now = now_of(ctx);
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        if live.timer != Some(at) {
            return Ok(());
        }
        live.timer = None;
        live.node.handle_timeout(now);
        self.drain(ctx)?;
        let Some(live) = self.live.as_ref() else {
            return Ok(());
        };
        ctx.oracle.checks += 1;
        if let Some(again) = live.node.poll_timeout().filter(|t| *t <= ctx.now) {
            // The deadline is still due after handle_timeout: a shell would spin.
            fail!(
                "poll_timeout() still returns {again:?} (now {:?}) after handle_timeout: the shell would busy-loop; node: {:?}",
                ctx.now,
                live.node
            );
        }
        Ok(())
    }

    // ---- outputs ----------------------------------------------------------------------------

    /// Drains the node's outputs, then the event pipeline, then re-arms the timer.
    fn drain(&mut self, ctx: &mut Ctx) -> Check {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        while let Some(out) = live.node.poll_output(&mut live.buf) {
            live.output(&mut self.disk, &self.params, self.epoch, ctx, out)?;
        }
        ctx.oracle.drained_outputs()?;
        self.pump(ctx)?;
        let epoch = self.epoch;
        if let Some(live) = self.live.as_mut() {
            let t = live.node.poll_timeout();
            if t != live.timer {
                live.timer = t;
                if let Some(at) = t {
                    ctx.sched.at(at.max(ctx.now), Ev::NodeTimer { epoch, at });
                }
            }
        }
        Ok(())
    }

    // ---- disk ---------------------------------------------------------------------------------

    /// A write finished.
    pub(crate) fn on_disk_done(
        &mut self,
        ctx: &mut Ctx,
        epoch: u32,
        op: DiskOp,
        ok: bool,
    ) -> Check {
        if epoch != self.epoch {
            return Ok(());
        }
        let now = now_of(ctx);
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let found = live.inflight.iter().find_map(|(k, v)| match (v, &op) {
            (DiskOp::StoreCallback { id: a, .. }, DiskOp::StoreCallback { id: b, .. })
                if a == b =>
            {
                Some(*k)
            }
            (DiskOp::SeqMark(a), DiskOp::SeqMark(b)) if a == b => Some(*k),
            _ => None,
        });
        if let Some(k) = found {
            live.inflight.remove(&k);
        }
        match op {
            DiskOp::SeqMark(m) => {
                if ok {
                    self.disk.seq_mark = self.disk.seq_mark.max(m);
                    live.journal.reserved(m);
                } else {
                    // Asked again at once: the simulated disk answers later anyway.
                    live.journal.reserve_failed();
                    live.journal.retry();
                }
                self.pump(ctx)
            }
            DiskOp::StoreCallback { id, entry } => {
                if ok {
                    ctx.oracle.disk_written(&id, &entry, &self.disk.callbacks)?;
                    self.disk.callbacks.insert(id.clone(), entry.clone());
                    if self.params.inject == Some(Inject::DuplicateCallback) && !self.disk.injected
                    {
                        self.disk.injected = true;
                        let dup = format!("{id}-dup");
                        ctx.oracle
                            .disk_written(&dup, &entry, &self.disk.callbacks)?;
                        self.disk.callbacks.insert(dup, entry);
                    }
                } else {
                    ctx.stats.callback_store_failures += 1;
                }
                ctx.oracle.store_done(&id, ok);
                if let Ok(cid) = CallbackId::new(&id) {
                    // Refused only when the entry is gone, which the node logs.
                    let _ = live.node.handle_stored(now, &cid, ok);
                }
                self.drain(ctx)
            }
        }
    }

    // ---- events and outbox --------------------------------------------------------------------

    /// Issues seqs, persists and publishes events: the journal's work, as the daemon's link
    /// does it.
    fn pump(&mut self, ctx: &mut Ctx) -> Check {
        let mut marks = Vec::new();
        {
            let Some(live) = self.live.as_mut() else {
                return Ok(());
            };
            while let Some(o) = live.journal.poll_output() {
                match o {
                    JournalOutput::Reserve(m) => marks.push(m),
                    JournalOutput::Append { seq, event } => {
                        let ev = CallEvent {
                            seq,
                            call_id: event.call_id,
                            call_seq: event.call_seq,
                            at: event.at,
                            kind: event.kind,
                        };
                        ctx.oracle.seq_issued(&ev)?;
                        ctx.stats.events_issued += 1;
                        self.disk.outbox.insert(seq, ev);
                    }
                    JournalOutput::Delete { below } => {
                        let keep = self.disk.outbox.split_off(&below);
                        self.disk.outbox = keep;
                        self.disk.deleted_below = self.disk.deleted_below.max(below);
                    }
                    // The simulated store keeps no acknowledgement point: the floor and the
                    // newest held event bound the restart (the daemon persists it too).
                    JournalOutput::Acked(_) => {}
                }
            }
            if let Some(conn) = live.conn {
                while let Some(seq) = live.journal.poll_publish() {
                    match self.disk.outbox.get(&seq) {
                        Some(ev) => {
                            let d = ctx.ms(1, 3);
                            ctx.after(
                                d,
                                Ev::ToBroker {
                                    conn,
                                    msg: Up::Event(ev.clone()),
                                },
                            );
                        }
                        // A hole (restart gap): nothing to send.
                        None => live.journal.puback(ctx.now, seq),
                    }
                }
            }
            ctx.stats.outbox_dropped = ctx.stats.outbox_dropped.max(live.journal.dropped());
        }
        for m in marks {
            let p = self.params.mark_fail;
            self.write(ctx, DiskOp::SeqMark(m), p, 0.0);
        }
        Ok(())
    }

    fn write(&mut self, ctx: &mut Ctx, op: DiskOp, fail_p: f64, slow_p: f64) {
        let epoch = self.epoch;
        if let Some(live) = self.live.as_mut() {
            live.write(ctx, epoch, op, fail_p, slow_p);
        }
    }

    // ---- broker -------------------------------------------------------------------------------

    /// Tries to connect to the broker.
    pub(crate) fn on_connect(&mut self, ctx: &mut Ctx, epoch: u32, broker: &mut Broker) -> Check {
        if epoch != self.epoch {
            return Ok(());
        }
        let now = now_of(ctx);
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        if live.conn.is_some() {
            return Ok(());
        }
        match broker.connect_node(ctx) {
            Some(conn) => {
                live.conn = Some(conn);
                let _ = live.node.handle_crm(now, CrmInput::Connected);
                self.publish_status(ctx);
                self.drain(ctx)
            }
            None => {
                let d = ctx.ms(1_000, 3_000);
                ctx.after(d, Ev::NodeConnect { epoch });
                Ok(())
            }
        }
    }

    /// The node notices its broker connection is gone.
    pub(crate) fn on_conn_lost(&mut self, ctx: &mut Ctx, epoch: u32, conn: u64) {
        if epoch != self.epoch {
            return;
        }
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if live.conn != Some(conn) {
            return;
        }
        live.conn = None;
        live.journal.connection_lost();
        let d = ctx.ms(500, 2_000);
        ctx.after(d, Ev::NodeConnect { epoch });
    }

    fn publish_status(&mut self, ctx: &mut Ctx) {
        let Some(live) = self.live.as_ref() else {
            return;
        };
        if let Some(conn) = live.conn {
            let last_seq = live
                .journal
                .next_unissued()
                .map_or(0, |n| n.saturating_sub(1));
            let d = ctx.ms(1, 3);
            ctx.after(
                d,
                Ev::ToBroker {
                    conn,
                    msg: Up::Status { last_seq },
                },
            );
        }
    }

    /// The periodic status message.
    pub(crate) fn on_status_tick(&mut self, ctx: &mut Ctx, epoch: u32) {
        if epoch != self.epoch || self.live.is_none() {
            return;
        }
        self.publish_status(ctx);
        ctx.after(Duration::from_secs(10), Ev::NodeStatusTick { epoch });
    }

    /// A message from the broker.
    pub(crate) fn on_broker(&mut self, ctx: &mut Ctx, conn: u64, msg: Down) -> Check {
        let now = now_of(ctx);
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        if live.conn != Some(conn) {
            return Ok(());
        }
        // What the node refuses (an unknown or finished callback, an older announcement
        // version) it keeps what it had; the daemon logs it.
        match msg {
            Down::Puback(seq) => live.journal.puback(ctx.now, seq),
            Down::CbPuback(id) => {
                if let Ok(cid) = CallbackId::new(&id) {
                    let _ = live.node.handle_crm(now, CrmInput::CallbackSynced(cid));
                }
            }
            Down::Ack(upto) => live.journal.crm_ack(upto),
            Down::Replay(a, b) => live.journal.replay(ctx.wall(), a, b),
            Down::CbState(id, state) => {
                if let Ok(cid) = CallbackId::new(&id) {
                    let input = CrmInput::CallbackState {
                        id: cid,
                        state,
                        at: now.wall,
                        window: None,
                    };
                    let _ = live.node.handle_crm(now, input);
                }
            }
            Down::Announcement(_, Some(a)) => {
                if let Some(sha) = a.audio {
                    // The audio arrives with the announcement (fetched and verified).
                    self.disk.audio.insert(sha);
                    let input = announce::Input::AudioAvailable(sha);
                    let _ = live.node.handle_crm(now, CrmInput::Announcement(input));
                }
                // The node applies the version rule and asks for the cache write
                // (`Output::StoreAnnouncement`), as the daemon's does.
                let input = announce::Input::Upsert(a);
                let _ = live.node.handle_crm(now, CrmInput::Announcement(input));
                live.sweep_audio(&mut self.disk, now);
            }
            Down::Announcement(id, None) => {
                // Deleted from the cache on the node's `Withdrawn` event.
                if let Ok(aid) = AnnouncementId::new(&id) {
                    let input = announce::Input::Withdraw(aid);
                    let _ = live.node.handle_crm(now, CrmInput::Announcement(input));
                }
                live.sweep_audio(&mut self.disk, now);
            }
        }
        self.drain(ctx)
    }
}

impl Live {
    /// Acts on one output of the node.
    fn output(
        &mut self,
        disk: &mut Disk,
        params: &HostParams,
        epoch: u32,
        ctx: &mut Ctx,
        out: Output,
    ) -> Check {
        match out {
            Output::Transmit { to, len, .. } => {
                let data = &self.buf[..len];
                if data.starts_with(b"SIP/2.0 ")
                    && call_id_of(data)
                        .is_none_or(|c| self.node.calls().find(c.as_bytes()).is_none())
                {
                    ctx.stats.node_stateless_replies += 1;
                }
                ctx.send(NODE_SIP, to, Msg::Sip(data.to_vec()));
            }
            Output::CallCreated { call, local_rtp } => {
                let id = self.node.call(call).map_or(CallId(0), |s| s.call().id());
                self.ports.insert(local_rtp.port(), Some(call));
                self.calls.insert(
                    call,
                    CallIo {
                        id,
                        port: local_rtp.port(),
                        media: MediaPath::default(),
                        playout: None,
                    },
                );
            }
            Output::Released { call, local_rtp } => {
                let port = local_rtp.port();
                if self
                    .ports
                    .get(&port)
                    .is_some_and(|k| *k == call || k.is_none())
                {
                    self.ports.remove(&port);
                }
                if let Some(key) = call {
                    self.calls.remove(&key);
                }
            }
            Output::Media { call, media } => {
                if let Some(io) = self.calls.get_mut(&call) {
                    match media {
                        Media::Start {
                            remote,
                            send,
                            payload_type,
                            ..
                        } => {
                            io.media = MediaPath {
                                started: true,
                                send,
                                remote,
                            };
                            // The sim looks at no RTP header: the stream's start is fixed.
                            let stream =
                                OutboundStream::new(Ssrc(io.id.0 as u32), 0, 0, payload_type);
                            let mut p = Playout::new(stream, VecDeque::new());
                            p.set_sending(send);
                            p.set_target(remote.is_some());
                            io.playout = Some(p);
                        }
                        Media::Remote(r) => {
                            io.media.remote = Some(r);
                            if let Some(p) = io.playout.as_mut() {
                                p.set_target(true);
                            }
                        }
                        Media::Send(on) => {
                            io.media.send = on;
                            if let Some(p) = io.playout.as_mut() {
                                p.set_sending(on);
                            }
                        }
                        Media::Stop => {
                            io.media.started = false;
                            io.playout = None;
                        }
                    }
                }
            }
            Output::Play { call, playlist, .. } => self.play(ctx, epoch, call, playlist)?,
            Output::StopPlayback { call } => {
                if let Some(io) = self.calls.get_mut(&call) {
                    if let Some(p) = io.playout.as_mut() {
                        p.stop_playback();
                    }
                }
            }
            Output::Booking {
                call,
                callback,
                result,
            } => {
                let id = self.calls.get(&call).map_or(0, |io| io.id.0);
                match result {
                    shared::ivr::BookingResult::Booked { .. } => ctx.stats.callbacks_booked += 1,
                    shared::ivr::BookingResult::AlreadyBooked { .. } => {
                        ctx.stats.callbacks_already_booked += 1;
                    }
                    _ => ctx.stats.callbacks_not_booked += 1,
                }
                ctx.oracle
                    .booking_result(id, result, callback.as_ref().map(CallbackId::as_str))?;
            }
            Output::Callback(o) => self.callback(disk, params, epoch, ctx, o)?,
            Output::Event(ev) => {
                if let Some(call) = ev.call_id {
                    ctx.oracle
                        .event_emitted(call.0, ev.call_seq, ev.kind.type_str())?;
                    if let EventKind::CallEnded { reason, .. } = ev.kind {
                        ctx.oracle.call_ended(call.0, reason)?;
                    }
                } else if let EventKind::CallbackExpired { callback_id } = &ev.kind {
                    ctx.oracle.expired_event(callback_id.as_str())?;
                }
                self.journal.push(ev);
            }
            Output::Announcement(ev) => {
                if let announce::Event::Pruned { id, version }
                | announce::Event::Withdrawn { id, version } = ev
                {
                    // Withdrawn by the CRM, or dropped when expired to make room: so is the
                    // cached copy of that version.
                    let stored = disk.announcements.get(id.as_str());
                    if stored.is_some_and(|a| a.version == version) {
                        disk.announcements.remove(id.as_str());
                    }
                    self.sweep_audio(disk, now_of(ctx));
                }
            }
            Output::StoreAnnouncement { id, version } => {
                let anns = self.node.announcements();
                if let Some(a) = anns.current(&id).and_then(|h| anns.get(h)) {
                    if a.version == version {
                        disk.announcements.insert(id.as_str().to_owned(), a.clone());
                    }
                }
            }
        }
        Ok(())
    }

    fn play(&mut self, ctx: &mut Ctx, epoch: u32, key: CallKey, pl: Playlist) -> Check {
        let anns = self.node.announcements();
        let Some(io) = self.calls.get_mut(&key) else {
            return Ok(());
        };
        ctx.oracle.played(io.id.0, &pl)?;
        // Like the daemon's pacer, a call whose media has not started plays nothing.
        let Some(playout) = io.playout.as_mut() else {
            return Ok(());
        };
        let frames = pl.iter().map(|p| {
            let len = prompt_length(p, |h| {
                anns.get(shared::ids::AnnouncementHandle(h))
                    .map_or(Duration::from_secs(5), |a| {
                        announcement_length(a.id.as_str(), a.version)
                    })
            });
            u32::try_from(len.as_micros().div_ceil(FRAME.as_micros())).unwrap_or(u32::MAX)
        });
        playout.play(frames, |f| *f as usize);
        if !self.tick_armed {
            self.tick_armed = true;
            ctx.after(FRAME, Ev::PlayTick { epoch });
        }
        if io.media.started && io.media.send {
            if let Some(r) = io.media.remote {
                let from = SocketAddr::new(IpAddr::V4(NODE_IP), io.port);
                ctx.send(from, r, Msg::Audio(pl));
            }
        }
        Ok(())
    }

    fn callback(
        &mut self,
        disk: &mut Disk,
        params: &HostParams,
        epoch: u32,
        ctx: &mut Ctx,
        o: callback::Output,
    ) -> Check {
        match o {
            callback::Output::Store { id } => {
                if let Some(entry) = self.node.queue().get(&id).cloned() {
                    ctx.oracle.booking_requested(entry.call_id.0, id.as_str());
                    let op = DiskOp::StoreCallback {
                        id: id.as_str().to_string(),
                        entry,
                    };
                    self.write(ctx, epoch, op, params.store_fail, params.store_slow);
                }
            }
            callback::Output::Publish { id, position } => {
                if let (Some(conn), Some(entry)) = (self.conn, self.node.queue().get(&id)) {
                    let d = ctx.ms(1, 3);
                    ctx.after(
                        d,
                        Ev::ToBroker {
                            conn,
                            msg: Up::Callback {
                                entry: entry.clone(),
                                position,
                            },
                        },
                    );
                }
            }
            callback::Output::Update { id, state } => {
                if let Some(e) = disk.callbacks.get_mut(id.as_str()) {
                    e.state = state;
                }
            }
            callback::Output::Remove { id, state } => {
                let entry = disk.callbacks.remove(id.as_str());
                ctx.oracle
                    .disk_removed(id.as_str(), state, entry.as_ref(), ctx.wall())?;
                if state == State::Expired {
                    ctx.stats.callbacks_expired += 1;
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, ctx: &mut Ctx, epoch: u32, op: DiskOp, fail_p: f64, slow_p: f64) {
        let id = self.next_write;
        self.next_write += 1;
        self.inflight.insert(id, op.clone());
        let ok = !ctx.rng.chance(fail_p);
        let d = if ctx.rng.chance(slow_p) {
            ctx.ms(5_500, 7_000)
        } else {
            ctx.ms(1, 30)
        };
        ctx.after(d, Ev::DiskDone { epoch, op, ok });
    }

    /// Retires cached audio that no stored announcement names any more; the last
    /// [`ANNOUNCE_RETIRED`] retired files stay (calls may still play a replaced version),
    /// older ones are deleted and the node is told.
    fn sweep_audio(&mut self, disk: &mut Disk, now: Now) {
        let used: BTreeSet<Sha256> = disk
            .announcements
            .values()
            .filter_map(|a| a.audio)
            .chain(
                self.node
                    .announcements()
                    .iter()
                    .filter_map(|(_, a, _)| a.audio),
            )
            .collect();
        disk.audio_retired.retain(|s| !used.contains(s));
        let newly: Vec<Sha256> = disk
            .audio
            .difference(&used)
            .filter(|s| !disk.audio_retired.contains(s))
            .copied()
            .collect();
        disk.audio_retired.extend(newly);
        while disk.audio_retired.len() > ANNOUNCE_RETIRED {
            let Some(sha) = disk.audio_retired.pop_front() else {
                break;
            };
            disk.audio.remove(&sha);
            let input = announce::Input::AudioRemoved(sha);
            let _ = self.node.handle_crm(now, CrmInput::Announcement(input));
        }
    }
}

/// The wall clock at virtual instant `t`.
fn wall_of(t: Instant) -> UnixMillis {
    UnixMillis(super::ctx::WALL_ORIGIN_MS + i64::try_from(t.as_millis()).unwrap_or(i64::MAX / 2))
}

/// RTP ports cycle through a span of four even ports per call the table holds.
fn port_span(max_calls: usize) -> u16 {
    u16::try_from(max_calls * 8).unwrap_or(40_000).min(40_000)
}

/// The next free RTP port, reserved until the call is created or released.
fn take_port(ports: &mut BTreeMap<u16, Option<CallKey>>, next: &mut u16, span: u16) -> Option<u16> {
    for _ in 0..span / 2 {
        let port = *next;
        *next = RTP_BASE + (*next - RTP_BASE + 2) % span;
        if let alloc::collections::btree_map::Entry::Vacant(v) = ports.entry(port) {
            v.insert(None);
            return Some(port);
        }
    }
    None
}

fn add_stats(a: node::Stats, b: node::Stats) -> node::Stats {
    node::Stats {
        calls_total: a.calls_total + b.calls_total,
        calls_refused: a.calls_refused + b.calls_refused,
        sip_malformed: a.sip_malformed + b.sip_malformed,
        rtp_dropped: a.rtp_dropped + b.rtp_dropped,
        rtp_foreign: a.rtp_foreign + b.rtp_foreign,
        callbacks_booked: a.callbacks_booked + b.callbacks_booked,
        callbacks_failed: a.callbacks_failed + b.callbacks_failed,
        callbacks_already_booked: a.callbacks_already_booked + b.callbacks_already_booked,
        callbacks_expired: a.callbacks_expired + b.callbacks_expired,
        late_bookings_cancelled: a.late_bookings_cancelled + b.late_bookings_cancelled,
    }
}
