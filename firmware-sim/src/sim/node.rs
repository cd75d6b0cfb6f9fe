//! The simulated ccedge node: the `shared` core driven exactly as the `edge` shell drives it,
//! with a durable disk that survives crashes and everything else in memory.
//!
//! * SIP: parse, route by Call-ID to the call table, else `endpoint::verdict` (stateless
//!   answers, 400 for what does not parse, 503 when the table is full).
//! * Media: a simulated engine that "plays" each playlist for its length and reports
//!   `PlaybackFinished`; the caller hears the playlist as one audio datagram.
//! * Callbacks: `CallbackQueue` + disk writes that take time and may fail, answered with
//!   `stored(id, ok)`.
//! * Events: `Sequencer` (durable high-water mark) + `Outbox` (disk store of events) +
//!   an MQTT-like connection to the broker.

use alloc::collections::{BTreeMap, VecDeque};
use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use shared::announce::{self, Announcement, AnnouncementSet};
use shared::call::{self, Call, Input, Media, Output, Setup};
use shared::callback::{self, Booking, CallbackQueue, Entry, QueueError, Request};
use shared::event::outbox::{self, Outbox};
use shared::event::{CallEvent, Codec as EvCodec, EventKind, Sequencer, SkipReason};
use shared::ids::{AnnouncementHandle, AnnouncementId, CallId, CallbackId};
use shared::ivr::{AnnouncementInfo, BookingResult, Playlist};
use shared::limits::{CALLBACK_QUEUE_CAPACITY, SIP_MAX_DATAGRAM};
use shared::number::PhoneNumber;
use shared::sip::{self, endpoint, uas, Incoming, Message};
use shared::time::{Duration, Instant};

use super::crm::{Broker, Down, Up};
use super::ctx::Ctx;
use super::media::{announcement_length, prompt_length};
use super::oracle::{fail, Check};
use super::sched::{DiskOp, Ev, Msg};

/// The node's IP address.
pub(crate) const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The node's SIP address.
pub(crate) const NODE_SIP: SocketAddr = SocketAddr::new(IpAddr::V4(NODE_IP), 5060);
/// First RTP port.
const RTP_BASE: u16 = 20_000;
/// The node's site (announcement scopes).
pub(crate) const SITE: &str = "phl";

/// Deliberate bugs, to prove the oracle catches them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inject {
    /// Write every booked callback twice, under two ids.
    DuplicateCallback,
    /// Forget the seq high-water mark at restart.
    ReuseSeq,
}

/// The node's tuning for one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeParams {
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
}

#[derive(Debug, Default, Clone, Copy)]
struct MediaPath {
    started: bool,
    send: bool,
    remote: Option<SocketAddr>,
}

#[derive(Debug)]
struct CallEntry {
    call: Call,
    sip_id: Vec<u8>,
    gw: SocketAddr,
    port: u16,
    armed: Option<Instant>,
    play_gen: u32,
    media: MediaPath,
    /// The announcements selected at the INVITE: handle → (id, version).
    anns: Vec<(AnnouncementHandle, AnnouncementId, u32)>,
    booking: Option<String>,
}

/// The in-memory part of the node (gone at a crash).
#[derive(Debug)]
struct Live {
    /// Boxed: a `Call` is about 2 KiB and the map's nodes should move pointers.
    calls: BTreeMap<u64, Box<CallEntry>>,
    by_sip: BTreeMap<Vec<u8>, u64>,
    by_port: BTreeMap<u16, u64>,
    next_call: u64,
    next_port: u16,
    next_cb: u64,
    anns: AnnouncementSet,
    ann_timer: Option<Instant>,
    queue: CallbackQueue,
    /// Callback id → the call waiting for its store.
    bookings: BTreeMap<String, u64>,
    seq: Sequencer,
    outbox: Outbox,
    pending: VecDeque<(Option<u64>, u32, EventKind)>,
    conn: Option<u64>,
    /// Disk writes in flight (applied or not at a crash).
    inflight: BTreeMap<u64, DiskOp>,
    next_write: u64,
}

/// The node.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) disk: Disk,
    pub(crate) epoch: u32,
    live: Option<Live>,
    params: NodeParams,
    cfg: &'static call::Config,
    outbox_cfg: outbox::Config,
    injected: bool,
    /// Scratch buffer for outgoing SIP (reused: no 8 KiB zeroing per call).
    buf: Vec<u8>,
}

fn sip_cfg() -> &'static uas::Config {
    static CFG: uas::Config = uas::Config::new("sip:ccedge@10.0.0.1:5060", "10.0.0.1:5060");
    &CFG
}

impl Node {
    /// A node that has never run (empty disk); call [`Node::start`].
    pub(crate) fn new(params: NodeParams) -> Node {
        let mut cfg = call::Config::new(sip_cfg());
        cfg.answer_delay = params.answer_delay;
        Node {
            disk: Disk::default(),
            epoch: 0,
            live: None,
            params,
            cfg: Box::leak(Box::new(cfg)),
            outbox_cfg: outbox::Config {
                capacity: params.outbox_capacity,
                ..outbox::Config::default()
            },
            injected: false,
            buf: vec![0; SIP_MAX_DATAGRAM],
        }
    }

    /// Whether the process runs.
    pub(crate) fn is_up(&self) -> bool {
        self.live.is_some()
    }

    /// Calls in the table.
    pub(crate) fn calls(&self) -> usize {
        self.live.as_ref().map_or(0, |l| l.calls.len())
    }

    /// The callback queue, while up.
    pub(crate) fn queue(&self) -> Option<&CallbackQueue> {
        self.live.as_ref().map(|l| &l.queue)
    }

    /// Whether the node is connected to the broker.
    pub(crate) fn connected(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.conn.is_some())
    }

    /// Whether nothing is left to do: no calls, no unpublished or unacknowledged events, no
    /// writes in flight, every booked callback published.
    pub(crate) fn drained(&self) -> bool {
        self.live.as_ref().is_some_and(|l| {
            l.calls.is_empty()
                && l.pending.is_empty()
                && l.outbox.is_empty()
                && l.inflight.is_empty()
                && l.bookings.is_empty()
                && l.queue.iter().all(|e| {
                    e.state != callback::State::Stored && e.state != callback::State::Requested
                })
        })
    }

    /// Per-step bounds: call table, queue, outbox, pending events.
    pub(crate) fn check_bounds(&self, ctx: &mut Ctx) -> Check {
        let Some(l) = self.live.as_ref() else {
            return Ok(());
        };
        ctx.oracle.checks += 4;
        if l.calls.len() > self.params.max_calls {
            fail!(
                "call table holds {} calls, above the configured {}",
                l.calls.len(),
                self.params.max_calls
            );
        }
        if l.queue.len() > CALLBACK_QUEUE_CAPACITY {
            fail!("callback queue holds {} entries", l.queue.len());
        }
        if l.outbox.depth() > self.params.outbox_capacity
            || self.disk.outbox.len() as u64 > self.params.outbox_capacity
        {
            fail!(
                "outbox holds {} events ({} on disk), above its capacity {}",
                l.outbox.depth(),
                self.disk.outbox.len(),
                self.params.outbox_capacity
            );
        }
        if l.pending.len() > self.params.pending_max {
            fail!("{} events wait for a seq number", l.pending.len());
        }
        Ok(())
    }

    /// Starts (or restarts) the process from the disk.
    pub(crate) fn start(&mut self, ctx: &mut Ctx) -> Check {
        self.epoch += 1;
        self.disk.boot += 1;
        let wall = ctx.wall();
        let mut anns = AnnouncementSet::new();
        for a in self.disk.announcements.values() {
            if let Some(sha) = a.audio {
                let _ = anns.handle_input(wall, announce::Input::AudioAvailable(sha));
            }
            let _ = anns.handle_input(wall, announce::Input::Upsert(a.clone()));
        }
        while anns.poll_output().is_some() {}
        let mut queue = CallbackQueue::new(callback::Config::default());
        let _report = queue.restore(self.disk.callbacks.values().cloned());
        let last_issued = self
            .disk
            .outbox
            .last_key_value()
            .map(|(s, _)| *s)
            .or_else(|| self.disk.deleted_below.checked_sub(1).filter(|s| *s > 0));
        let mark = if self.params.inject == Some(Inject::ReuseSeq) {
            0
        } else {
            self.disk.seq_mark
        };
        let last = if self.params.inject == Some(Inject::ReuseSeq) {
            None
        } else {
            last_issued
        };
        let seq = Sequencer::restore_after(mark, last, self.params.seq_block);
        let (oldest, next) = match (self.disk.outbox.first_key_value(), last_issued) {
            (Some((o, _)), Some(l)) => (*o, l + 1),
            (None, Some(l)) => (l + 1, l + 1),
            _ => (0, 0),
        };
        let outbox = Outbox::restore(self.outbox_cfg, oldest, next);
        let mut live = Live {
            calls: BTreeMap::new(),
            by_sip: BTreeMap::new(),
            by_port: BTreeMap::new(),
            next_call: 1,
            next_port: RTP_BASE,
            next_cb: 1,
            anns,
            ann_timer: None,
            queue,
            bookings: BTreeMap::new(),
            seq,
            outbox,
            pending: VecDeque::new(),
            conn: None,
            inflight: BTreeMap::new(),
            next_write: 1,
        };
        if let Some((a, b)) = live.seq.restart_gap() {
            live.pending.push_back((
                None,
                0,
                EventKind::SeqSkipped {
                    from: a,
                    to: b,
                    reason: SkipReason::Restart,
                },
            ));
        }
        self.live = Some(live);
        ctx.oracle
            .booked_present(&self.disk.callbacks, self.queue())?;
        self.pump(ctx)?;
        let epoch = self.epoch;
        let d = ctx.ms(100, 1_000);
        ctx.after(d, Ev::NodeConnect { epoch });
        ctx.after(Duration::from_secs(10), Ev::NodeStatusTick { epoch });
        self.rearm_ann_timer(ctx);
        Ok(())
    }

    /// The process dies: everything in memory is gone; writes in flight land or not.
    pub(crate) fn crash(&mut self, ctx: &mut Ctx, broker: &mut Broker) {
        let Some(live) = self.live.take() else {
            return;
        };
        ctx.stats.crashes += 1;
        let cut = ctx.oracle.crash(live.calls.keys().copied());
        ctx.stats.calls_cut_by_crash += cut;
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

    // ---- SIP ------------------------------------------------------------------------------

    /// A SIP datagram arrives from `from`.
    pub(crate) fn on_sip(&mut self, ctx: &mut Ctx, from: SocketAddr, data: &[u8]) -> Check {
        if self.live.is_none() {
            return Ok(());
        }
        let msg = match sip::parse(data) {
            Ok(m) => m,
            Err(_) => {
                self.salvage_400(ctx, from, data);
                return Ok(());
            }
        };
        match msg {
            Message::Request(r) => {
                let Ok(inc) = r.to_incoming() else {
                    self.salvage_400(ctx, from, data);
                    return Ok(());
                };
                let key = self
                    .live
                    .as_ref()
                    .and_then(|l| l.by_sip.get(inc.call_id.as_bytes()).copied());
                match key {
                    Some(key) => {
                        if let Some(e) = self.live.as_mut().and_then(|l| l.calls.get_mut(&key)) {
                            let _ = e.call.handle_sip_request(ctx.now, &inc);
                        }
                        self.drive(ctx, key)?;
                    }
                    None => match endpoint::verdict(&inc) {
                        endpoint::Verdict::NewDialog => self.new_call(ctx, from, &inc)?,
                        endpoint::Verdict::Respond(status) => {
                            self.respond(ctx, from, &inc, status);
                        }
                        endpoint::Verdict::Ignore => {}
                    },
                }
            }
            Message::Response(r) => {
                let Ok(resp) = r.to_incoming_response() else {
                    return Ok(());
                };
                let key = self
                    .live
                    .as_ref()
                    .and_then(|l| l.by_sip.get(resp.call_id.as_bytes()).copied());
                if let Some(key) = key {
                    if let Some(e) = self.live.as_mut().and_then(|l| l.calls.get_mut(&key)) {
                        let _ = e.call.handle_sip_response(ctx.now, &resp);
                    }
                    self.drive(ctx, key)?;
                }
            }
        }
        Ok(())
    }

    fn respond(&mut self, ctx: &mut Ctx, to: SocketAddr, inc: &Incoming<'_>, status: u16) {
        let buf = &mut self.buf;
        if let Ok(n) = endpoint::respond(inc, status, buf) {
            ctx.stats.node_stateless_replies += 1;
            ctx.send(NODE_SIP, to, Msg::Sip(buf[..n].to_vec()));
        }
    }

    fn salvage_400(&mut self, ctx: &mut Ctx, from: SocketAddr, data: &[u8]) {
        if let Some(inc) = sip::salvage(data) {
            if inc.method != sip::Method::Ack {
                self.respond(ctx, from, &inc, 400);
            }
        }
    }

    fn new_call(&mut self, ctx: &mut Ctx, from: SocketAddr, inc: &Incoming<'_>) -> Check {
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        if live.calls.len() >= self.params.max_calls {
            self.respond(ctx, from, inc, 503);
            return Ok(());
        }
        let wall = ctx.wall();
        let (caller, dialled) = call::numbers(inc);
        let handles = live
            .anns
            .select(wall, SITE, dialled.as_ref(), caller.as_ref());
        let mut infos: Vec<AnnouncementInfo> = Vec::new();
        let mut anns = Vec::new();
        for h in handles {
            if let Some(a) = live.anns.get(h) {
                infos.push(AnnouncementInfo {
                    handle: h,
                    offer_callback: a.offer_callback,
                });
                anns.push((h, a.id.clone(), a.version));
            }
        }
        let key = (u64::from(self.disk.boot) << 32) | live.next_call;
        live.next_call += 1;
        let span = u16::try_from(self.params.max_calls * 4)
            .unwrap_or(40_000)
            .min(40_000);
        let port = RTP_BASE + (live.next_port - RTP_BASE) % span;
        live.next_port = RTP_BASE + (live.next_port - RTP_BASE + 2) % span;
        let setup = Setup {
            id: CallId(key),
            local_tag: ctx.rng.next_u64(),
            local_rtp: SocketAddr::new(IpAddr::V4(NODE_IP), port),
            session_id: ctx.rng.next_u64() >> 1,
        };
        match Call::new(ctx.now, self.cfg, &setup, inc, &infos) {
            Ok(call) => {
                let sip_id = call.sip_call_id().to_vec();
                live.by_sip.insert(sip_id.clone(), key);
                if let Some(old) = live.by_port.insert(port, key) {
                    // The port wrapped onto a call still running: give it back.
                    live.by_port.insert(port, old);
                }
                live.calls.insert(
                    key,
                    Box::new(CallEntry {
                        call,
                        sip_id,
                        gw: from,
                        port,
                        armed: None,
                        play_gen: 0,
                        media: MediaPath::default(),
                        anns,
                        booking: None,
                    }),
                );
                self.drive(ctx, key)
            }
            Err(_) => {
                self.respond(ctx, from, inc, 500);
                Ok(())
            }
        }
    }

    /// Drains a call's datagrams and outputs, re-arms its timer, drops it when done.
    fn drive(&mut self, ctx: &mut Ctx, key: u64) -> Check {
        loop {
            let buf = &mut self.buf;
            let Some(live) = self.live.as_mut() else {
                return Ok(());
            };
            let Some(e) = live.calls.get_mut(&key) else {
                return Ok(());
            };
            while let Some(n) = e.call.poll_transmit(buf) {
                ctx.send(NODE_SIP, e.gw, Msg::Sip(buf[..n].to_vec()));
            }
            let mut outs = Vec::new();
            while let Some(o) = e.call.poll_output() {
                outs.push(o);
            }
            if outs.is_empty() {
                break;
            }
            for o in outs {
                self.on_output(ctx, key, o)?;
            }
        }
        self.pump(ctx)?;
        let epoch = self.epoch;
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let Some(e) = live.calls.get_mut(&key) else {
            return Ok(());
        };
        if e.call.is_done() {
            let e = live.calls.remove(&key);
            if let Some(e) = e {
                live.by_sip.remove(&e.sip_id);
                if live.by_port.get(&e.port) == Some(&key) {
                    live.by_port.remove(&e.port);
                }
            }
            return Ok(());
        }
        let t = e.call.poll_timeout();
        if t != e.armed {
            e.armed = t;
            if let Some(at) = t {
                ctx.sched
                    .at(at.max(ctx.now), Ev::CallTimer { epoch, key, at });
            }
        }
        Ok(())
    }

    fn on_output(&mut self, ctx: &mut Ctx, key: u64, out: Output) -> Check {
        let epoch = self.epoch;
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let Some(e) = live.calls.get_mut(&key) else {
            return Ok(());
        };
        match out {
            Output::Media(m) => match m {
                Media::Start { remote, send, .. } => {
                    e.media = MediaPath {
                        started: true,
                        send,
                        remote,
                    };
                }
                Media::Remote(r) => e.media.remote = Some(r),
                Media::Send(on) => e.media.send = on,
                Media::Stop => {
                    e.media.started = false;
                    e.play_gen += 1;
                }
            },
            Output::Play(pl) => {
                ctx.oracle.played(key, &pl)?;
                e.play_gen += 1;
                let anns = &e.anns;
                let len = pl.iter().fold(Duration::ZERO, |acc, p| {
                    acc + prompt_length(p, |h| {
                        anns.iter()
                            .find(|(x, _, _)| x.0 == h)
                            .map_or(Duration::from_secs(5), |(_, id, v)| {
                                announcement_length(id.as_str(), *v)
                            })
                    })
                });
                let gen = e.play_gen;
                ctx.after(len, Ev::PlaybackDone { epoch, key, gen });
                if e.media.started && e.media.send {
                    if let Some(r) = e.media.remote {
                        let from = SocketAddr::new(IpAddr::V4(NODE_IP), e.port);
                        ctx.send(from, r, Msg::Audio(pl));
                    }
                }
            }
            Output::StopPlayback => e.play_gen += 1,
            Output::BookCallback { number } => self.book(ctx, key, number)?,
            Output::Event { call_seq, event } => {
                let kind = self.event_kind(key, &event);
                ctx.oracle.event_emitted(key, call_seq, kind.type_str())?;
                if let Some(live) = self.live.as_mut() {
                    live.pending.push_back((Some(key), call_seq, kind));
                }
            }
        }
        Ok(())
    }

    fn event_kind(&self, key: u64, ev: &call::Event) -> EventKind {
        let e = self.live.as_ref().and_then(|l| l.calls.get(&key));
        let ann = |h: AnnouncementHandle| {
            e.and_then(|e| e.anns.iter().find(|(x, _, _)| *x == h))
                .map(|(_, id, v)| (id.clone(), *v))
                .unwrap_or_else(|| {
                    (
                        AnnouncementId::new("unknown").unwrap_or_else(|_| unreachable_id()),
                        0,
                    )
                })
        };
        match ev {
            call::Event::Offered { caller, dialled } => EventKind::CallOffered {
                caller: caller.clone(),
                dialled: dialled.clone(),
            },
            call::Event::Answered { codec } => EventKind::CallAnswered {
                codec: match codec {
                    EvCodec::Pcma => EvCodec::Pcma,
                    EvCodec::Pcmu => EvCodec::Pcmu,
                },
            },
            call::Event::AnnouncementStarted(h) => {
                let (announcement_id, version) = ann(*h);
                EventKind::AnnouncementStarted {
                    announcement_id,
                    version,
                }
            }
            call::Event::AnnouncementCompleted {
                handle,
                interrupted,
            } => {
                let (announcement_id, version) = ann(*handle);
                EventKind::AnnouncementCompleted {
                    announcement_id,
                    version,
                    interrupted: *interrupted,
                }
            }
            call::Event::Dtmf(d) => EventKind::Dtmf { digit: *d },
            call::Event::CallbackBooked { position, .. } => EventKind::CallbackRequested {
                callback_id: e
                    .and_then(|e| e.booking.as_deref())
                    .and_then(|b| CallbackId::new(b).ok())
                    .unwrap_or_else(|| {
                        CallbackId::new("unknown").unwrap_or_else(|_| unreachable_cb())
                    }),
                position: u32::from(*position),
            },
            call::Event::Transferred { target } => EventKind::CallTransferred {
                target: shared::event::TransferTarget::try_from(*target).unwrap_or_default(),
            },
            call::Event::Ended {
                reason,
                duration,
                answered,
            } => EventKind::CallEnded {
                reason: *reason,
                duration_ms: duration.as_millis() as u64,
                answered_ms: answered.as_millis() as u64,
            },
        }
    }

    fn book(&mut self, ctx: &mut Ctx, key: u64, number: PhoneNumber) -> Check {
        let wall = ctx.wall();
        let boot = self.disk.boot;
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        let Some(e) = live.calls.get_mut(&key) else {
            return Ok(());
        };
        let id = format!("cb-{boot}-{}", live.next_cb);
        live.next_cb += 1;
        let Ok(cid) = CallbackId::new(&id) else {
            return Ok(());
        };
        let req = Request {
            id: cid,
            call_id: CallId(key),
            callback_number: number,
            caller: e.call.caller().cloned(),
            dialled: e.call.dialled().cloned(),
            announcement: e.anns.first().map(|(_, id, _)| id.clone()),
        };
        let immediate = match live.queue.request(wall, req) {
            Ok(_ticket) => {
                e.booking = Some(id.clone());
                live.bookings.insert(id.clone(), key);
                ctx.oracle.booking_requested(key, &id);
                None
            }
            Err(QueueError::Duplicate { existing, position }) => {
                let booked = live
                    .queue
                    .get(&existing)
                    .is_some_and(|x| x.state.is_booked());
                if booked {
                    ctx.stats.callbacks_already_booked += 1;
                    let pos = u16::try_from(position.unwrap_or(1)).unwrap_or(u16::MAX);
                    Some((
                        BookingResult::AlreadyBooked { position: pos },
                        Some(existing.as_str().to_string()),
                    ))
                } else {
                    // The other booking is not durable yet: do not claim it is.
                    Some((BookingResult::Failed, None))
                }
            }
            Err(QueueError::Full) => Some((BookingResult::QueueFull, None)),
            Err(_) => Some((BookingResult::Failed, None)),
        };
        if let Some((r, existing)) = immediate {
            ctx.oracle.booking_result(key, r, existing.as_deref())?;
            if !matches!(r, BookingResult::AlreadyBooked { .. }) {
                ctx.stats.callbacks_not_booked += 1;
            }
            let _ = e.call.handle_input(ctx.now, Input::BookingResult(r));
        }
        self.pump(ctx)
    }

    // ---- timers and media ---------------------------------------------------------------------

    /// A call's timer fired.
    pub(crate) fn on_call_timer(
        &mut self,
        ctx: &mut Ctx,
        epoch: u32,
        key: u64,
        at: Instant,
    ) -> Check {
        if epoch != self.epoch {
            return Ok(());
        }
        let Some(e) = self.live.as_mut().and_then(|l| l.calls.get_mut(&key)) else {
            return Ok(());
        };
        if e.armed != Some(at) {
            return Ok(());
        }
        e.armed = None;
        e.call.handle_timeout(ctx.now);
        let again = e.call.poll_timeout();
        if again.is_some_and(|t| t <= ctx.now) {
            // The shell would spin: the deadline it was given is still due after
            // handle_timeout.
            ctx.oracle.checks += 1;
            fail!(
                "call {key}: poll_timeout() still returns {:?} (now {:?}) after handle_timeout: the shell would busy-loop; call state: {:?}",
                again,
                ctx.now,
                e.call
            );
        }
        self.drive(ctx, key)
    }

    /// A playlist played to its end.
    pub(crate) fn on_playback_done(
        &mut self,
        ctx: &mut Ctx,
        epoch: u32,
        key: u64,
        gen: u32,
    ) -> Check {
        if epoch != self.epoch {
            return Ok(());
        }
        let Some(e) = self.live.as_mut().and_then(|l| l.calls.get_mut(&key)) else {
            return Ok(());
        };
        if e.play_gen != gen || !e.media.started {
            return Ok(());
        }
        let _ = e.call.handle_input(ctx.now, Input::PlaybackFinished);
        self.drive(ctx, key)
    }

    /// An RTP datagram arrives on `port`.
    pub(crate) fn on_rtp(
        &mut self,
        ctx: &mut Ctx,
        port: u16,
        from: SocketAddr,
        data: &[u8],
    ) -> Check {
        let Some(key) = self
            .live
            .as_ref()
            .and_then(|l| l.by_port.get(&port).copied())
        else {
            return Ok(());
        };
        if let Some(e) = self.live.as_mut().and_then(|l| l.calls.get_mut(&key)) {
            if e.call.handle_rtp(ctx.now, from, data).is_err() {
                return Ok(());
            }
        }
        self.drive(ctx, key)
    }

    // ---- disk ---------------------------------------------------------------------------------

    fn write(&mut self, ctx: &mut Ctx, op: DiskOp, fail_p: f64, slow_p: f64) {
        let epoch = self.epoch;
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let id = live.next_write;
        live.next_write += 1;
        live.inflight.insert(id, op.clone());
        let ok = !ctx.rng.chance(fail_p);
        let d = if ctx.rng.chance(slow_p) {
            ctx.ms(5_500, 7_000)
        } else {
            ctx.ms(1, 30)
        };
        let _ = id;
        ctx.after(d, Ev::DiskDone { epoch, op, ok });
    }

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
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        // Writes complete in the order they were started per kind; find this one.
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
                    live.seq.reserved(m);
                } else {
                    live.seq.reserve_failed();
                }
                self.pump(ctx)
            }
            DiskOp::StoreCallback { id, entry } => {
                if ok {
                    ctx.oracle.disk_written(&id, &entry, &self.disk.callbacks)?;
                    self.disk.callbacks.insert(id.clone(), entry.clone());
                    if self.params.inject == Some(Inject::DuplicateCallback) && !self.injected {
                        self.injected = true;
                        let dup = format!("{id}-dup");
                        ctx.oracle
                            .disk_written(&dup, &entry, &self.disk.callbacks)?;
                        self.disk.callbacks.insert(dup, entry);
                    }
                } else {
                    ctx.stats.callback_store_failures += 1;
                }
                ctx.oracle.store_done(&id, ok);
                let Ok(cid) = CallbackId::new(&id) else {
                    return Ok(());
                };
                let booking = live.queue.stored(&cid, ok);
                let result = match booking {
                    Ok(Booking::Booked { position }) => BookingResult::Booked {
                        position: u16::try_from(position).unwrap_or(u16::MAX),
                    },
                    Ok(Booking::NotBooked) | Err(_) => BookingResult::Failed,
                };
                let key = live.bookings.remove(&id);
                let wall = ctx.wall();
                let mut delivered = false;
                if let Some(key) = key {
                    if let Some(e) = live.calls.get_mut(&key) {
                        ctx.oracle.booking_result(key, result, None)?;
                        delivered = e
                            .call
                            .handle_input(ctx.now, Input::BookingResult(result))
                            .is_ok();
                        if matches!(result, BookingResult::Booked { .. }) && delivered {
                            ctx.stats.callbacks_booked += 1;
                        } else if !matches!(result, BookingResult::Booked { .. }) {
                            ctx.stats.callbacks_not_booked += 1;
                        }
                    }
                }
                if ok && !delivered {
                    // The caller already heard "could not book" (booking timeout) or is gone
                    // before hearing anything: if the IVR refused the late result, the
                    // booking must not stand.
                    if key.is_some_and(|k| live.calls.contains_key(&k)) {
                        ctx.stats.late_bookings_cancelled += 1;
                        let _ = live.queue.cancel(wall, &cid);
                    }
                }
                if let Some(key) = key {
                    self.drive(ctx, key)?;
                }
                self.pump(ctx)
            }
        }
    }

    // ---- events, outbox, callback queue ----------------------------------------------------

    /// Issues seqs, persists and publishes events; runs the callback queue's outputs.
    fn pump(&mut self, ctx: &mut Ctx) -> Check {
        for _ in 0..1_000 {
            let mut progress = false;
            progress |= self.pump_queue(ctx)?;
            progress |= self.pump_events(ctx)?;
            progress |= self.pump_outbox(ctx);
            if !progress {
                break;
            }
        }
        Ok(())
    }

    fn pump_events(&mut self, ctx: &mut Ctx) -> Result<bool, super::oracle::Violation> {
        let wall = ctx.wall();
        let mut progress = false;
        let mut marks = Vec::new();
        {
            let Some(live) = self.live.as_mut() else {
                return Ok(false);
            };
            while let Some((call, call_seq, _)) = live.pending.front() {
                let (call, call_seq) = (*call, *call_seq);
                let Ok(seq) = live.seq.next() else {
                    break;
                };
                let Some((_, _, kind)) = live.pending.pop_front() else {
                    break;
                };
                let ev = CallEvent {
                    seq,
                    call_id: call.map(CallId),
                    call_seq,
                    at: wall,
                    kind,
                };
                ctx.oracle.seq_issued(&ev)?;
                ctx.stats.events_issued += 1;
                self.disk.outbox.insert(seq, ev);
                if let Err(err) = live.outbox.appended(seq) {
                    fail!("outbox refused seq {seq}: {err}");
                }
                progress = true;
                if let Some(m) = live.seq.poll_reserve() {
                    marks.push(m);
                }
            }
            if let Some(m) = live.seq.poll_reserve() {
                marks.push(m);
            }
        }
        for m in marks {
            let p = self.params.mark_fail;
            self.write(ctx, DiskOp::SeqMark(m), p, 0.0);
        }
        Ok(progress)
    }

    fn pump_outbox(&mut self, ctx: &mut Ctx) -> bool {
        let Some(live) = self.live.as_mut() else {
            return false;
        };
        let mut progress = false;
        if let Some(conn) = live.conn {
            while let Some(seq) = live.outbox.poll_publish() {
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
                    None => live.outbox.puback(ctx.now, seq),
                }
            }
        }
        while let Some(o) = live.outbox.poll_output() {
            progress = true;
            match o {
                outbox::Output::Delete { below } => {
                    let keep = self.disk.outbox.split_off(&below);
                    self.disk.outbox = keep;
                    self.disk.deleted_below = self.disk.deleted_below.max(below);
                }
                outbox::Output::Skipped { from, to, reason } => {
                    live.pending
                        .push_back((None, 0, EventKind::SeqSkipped { from, to, reason }));
                }
            }
        }
        ctx.stats.outbox_dropped = ctx.stats.outbox_dropped.max(live.outbox.dropped());
        progress
    }

    fn pump_queue(&mut self, ctx: &mut Ctx) -> Result<bool, super::oracle::Violation> {
        let mut progress = false;
        loop {
            let Some(live) = self.live.as_mut() else {
                return Ok(progress);
            };
            let Some(o) = live.queue.poll_output() else {
                return Ok(progress);
            };
            progress = true;
            match o {
                callback::Output::Store { id } => {
                    if let Some(entry) = live.queue.get(&id).cloned() {
                        let op = DiskOp::StoreCallback {
                            id: id.as_str().to_string(),
                            entry,
                        };
                        let (f, s) = (self.params.store_fail, self.params.store_slow);
                        self.write(ctx, op, f, s);
                    }
                }
                callback::Output::Publish { id, position } => {
                    if let (Some(conn), Some(entry)) = (live.conn, live.queue.get(&id)) {
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
                    if let Some(e) = self.disk.callbacks.get_mut(id.as_str()) {
                        e.state = state;
                    }
                }
                callback::Output::Remove { id, state } => {
                    ctx.oracle.disk_removed(id.as_str(), state)?;
                    self.disk.callbacks.remove(id.as_str());
                }
            }
        }
    }

    // ---- broker -------------------------------------------------------------------------------

    /// Tries to connect to the broker.
    pub(crate) fn on_connect(&mut self, ctx: &mut Ctx, epoch: u32, broker: &mut Broker) -> Check {
        if epoch != self.epoch {
            return Ok(());
        }
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        if live.conn.is_some() {
            return Ok(());
        }
        match broker.connect_node(ctx) {
            Some(conn) => {
                live.conn = Some(conn);
                live.queue.resync();
                self.publish_status(ctx);
                self.pump(ctx)
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
        live.outbox.connection_lost();
        let d = ctx.ms(500, 2_000);
        ctx.after(d, Ev::NodeConnect { epoch });
    }

    fn publish_status(&mut self, ctx: &mut Ctx) {
        let Some(live) = self.live.as_ref() else {
            return;
        };
        if let Some(conn) = live.conn {
            let last_seq = live.seq.peek().saturating_sub(1);
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
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        if live.conn != Some(conn) {
            return Ok(());
        }
        let wall = ctx.wall();
        match msg {
            Down::Puback(seq) => live.outbox.puback(ctx.now, seq),
            Down::CbPuback(id) => {
                if let Ok(cid) = CallbackId::new(&id) {
                    let _ = live.queue.synced(&cid);
                }
            }
            Down::Ack(upto) => live.outbox.crm_ack(upto),
            Down::Replay(a, b) => live.outbox.replay(a, b),
            Down::CbState(id, state) => {
                if let Ok(cid) = CallbackId::new(&id) {
                    let _ = live.queue.crm_state(&cid, state, wall);
                }
            }
            Down::Announcement(id, a) => {
                match a {
                    Some(a) => {
                        if let Some(sha) = a.audio {
                            let _ = live
                                .anns
                                .handle_input(wall, announce::Input::AudioAvailable(sha));
                        }
                        if live
                            .anns
                            .handle_input(wall, announce::Input::Upsert(a.clone()))
                            .is_ok()
                        {
                            self.disk.announcements.insert(id, a);
                        }
                    }
                    None => {
                        if let Ok(aid) = AnnouncementId::new(&id) {
                            let _ = live.anns.handle_input(wall, announce::Input::Withdraw(aid));
                        }
                        self.disk.announcements.remove(&id);
                    }
                }
                while live.anns.poll_output().is_some() {}
                self.rearm_ann_timer(ctx);
            }
        }
        self.pump(ctx)
    }

    fn rearm_ann_timer(&mut self, ctx: &mut Ctx) {
        let wall = ctx.wall();
        let epoch = self.epoch;
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let Some(deadline) = live.anns.poll_timeout() else {
            return;
        };
        let ms = u64::try_from(deadline.0.saturating_sub(wall.0)).unwrap_or(0);
        let at = ctx.now + Duration::from_millis(ms);
        if live.ann_timer.is_some_and(|t| t <= at && t > ctx.now) {
            return;
        }
        live.ann_timer = Some(at);
        ctx.sched.at(at, Ev::NodeAnnTimer { epoch });
    }

    /// The announcement set's deadline.
    pub(crate) fn on_ann_timer(&mut self, ctx: &mut Ctx, epoch: u32) {
        if epoch != self.epoch {
            return;
        }
        let wall = ctx.wall();
        if let Some(live) = self.live.as_mut() {
            live.ann_timer = None;
            live.anns.handle_timeout(wall);
            while live.anns.poll_output().is_some() {}
        }
        self.rearm_ann_timer(ctx);
    }

    /// Playlists for the demo: which announcement handles a call would get now.
    #[allow(dead_code)]
    pub(crate) fn playlist_len(pl: &Playlist) -> usize {
        pl.len()
    }
}

fn unreachable_id() -> AnnouncementId {
    // "x" is a valid id; this path is never taken for "unknown".
    AnnouncementId::new("x").unwrap_or_else(|_| unreachable_id())
}

fn unreachable_cb() -> CallbackId {
    CallbackId::new("x").unwrap_or_else(|_| unreachable_cb())
}
