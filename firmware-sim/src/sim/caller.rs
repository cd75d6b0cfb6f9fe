//! The simulated gateways and their callers.
//!
//! Each call is a [`UacCall`] (text SIP, independent of the core's SIP code) plus a caller
//! who reacts to what they hear: barges in, presses keys (RFC 4733 events as real RTP packets
//! built with `shared::rtp`), books callbacks, keys another number, hangs up, cancels while
//! ringing, puts the call on hold, or whose gateway dies mid-call. The gateway retransmits its
//! requests like an RFC 3261 UAC over UDP (timers A/B and E/F) and answers OPTIONS-free.

use alloc::collections::{BTreeMap, VecDeque};
use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use shared::dtmf::Digit;
use shared::ivr::{Playlist, Prompt};
use shared::rtp::{PayloadType, RtpHeader, Ssrc, TelephoneEvent};
use shared::time::{Duration, Instant};

use super::ctx::Ctx;
use super::host::NODE_SIP;
use super::sched::{Ev, GwTimer, Msg};
use crate::gateway::uac::{call_id_of, Offer, UacCall, UacState};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const TX_TIMEOUT: Duration = Duration::from_secs(32);

/// What the caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    /// Listen; never press anything.
    Listen,
    /// Book a callback: confirm the caller ID (`true`) or key another number.
    Callback { confirm: bool },
    /// Hear the announcements again once, then listen.
    HearAgain,
    /// Press a key that is not a menu option, then listen.
    Invalid,
}

/// One caller's plan.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Caller number (E.164 digits without `+`), `None` for anonymous.
    pub(crate) caller: Option<String>,
    pub(crate) dialled: String,
    pub(crate) offer: Offer,
    pub(crate) intent: Intent,
    /// Press during the announcement instead of waiting for the menu.
    pub(crate) barge_in: bool,
    /// The number to key when asked (digits, international form).
    pub(crate) keyed: String,
    /// Key an invalid number first.
    pub(crate) bad_number_first: bool,
    /// Hang up this long after the answer.
    pub(crate) patience: Option<Duration>,
    /// Cancel this long after the INVITE, if still ringing.
    pub(crate) cancel_after: Option<Duration>,
    /// Put on hold at `.0` after the answer, for `.1`.
    pub(crate) hold: Option<(Duration, Duration)>,
    /// The gateway dies this long after the answer.
    pub(crate) die_after: Option<Duration>,
}

/// What one call did, for reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallLog {
    pub(crate) caller: Option<String>,
    /// Short notes in order: "heard announcement", "pressed 1", …
    pub(crate) notes: Vec<String>,
    pub(crate) answered: bool,
    pub(crate) final_status: Option<u16>,
    pub(crate) booked_position: Option<u16>,
    pub(crate) already_booked: bool,
    pub(crate) ended_by: &'static str,
    /// Keys of a number are being logged into the last note.
    keying: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxKind {
    Invite,
    Cancel,
    Bye,
    ReInvite,
}

#[derive(Debug)]
struct Tx {
    id: u32,
    kind: TxKind,
    bytes: Vec<u8>,
    interval: Duration,
    started: Instant,
    /// A provisional response stopped INVITE retransmissions.
    quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Calling,
    Answered,
    Done,
}

#[derive(Debug)]
struct GwCall {
    gw: usize,
    uac: UacCall,
    plan: Plan,
    phase: Phase,
    txs: Vec<Tx>,
    next_tx: u32,
    answered_at: Option<Instant>,
    node_rtp: Option<SocketAddr>,
    audio_pt: u8,
    ssrc: u32,
    rtp_seq: u16,
    ts_base: u32,
    act_gen: u32,
    silence_gen: u32,
    keys: VecDeque<Digit>,
    on_hold: bool,
    dead: bool,
    heard_again: bool,
    invalid_done: bool,
    bad_done: bool,
    log: CallLog,
    /// Audio that arrived before the 200 OK (heard once the call is answered).
    early: Option<Playlist>,
    /// When the call stops being tracked.
    forget_at: Option<Instant>,
}

/// All gateways and their calls.
#[derive(Debug, Default)]
pub(crate) struct Gateways {
    calls: BTreeMap<u64, GwCall>,
    by_sip: BTreeMap<String, u64>,
    by_rtp: BTreeMap<SocketAddr, u64>,
    pub(crate) next_idx: u64,
    options_seq: u64,
    /// Logs of finished calls (kept only when `keep_logs`).
    pub(crate) logs: BTreeMap<u64, CallLog>,
    pub(crate) keep_logs: bool,
}

/// A gateway's SIP address.
pub(crate) fn gw_sip(gw: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 1, (gw % 250) as u8 + 1)),
        5060,
    )
}

fn gw_rtp(gw: usize, idx: u64) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 1, (gw % 250) as u8 + 1)),
        (30_000 + (idx % 30_000)) as u16,
    )
}

impl Gateways {
    /// Calls still tracked (in progress or absorbing retransmissions).
    pub(crate) fn active(&self) -> usize {
        self.calls.len()
    }

    /// Places a new call with `plan` from gateway `gw`.
    pub(crate) fn place(&mut self, ctx: &mut Ctx, gw: usize, plan: Plan) {
        let idx = self.next_idx;
        self.next_idx += 1;
        ctx.stats.calls_placed += 1;
        let local = gw_sip(gw);
        let rtp = gw_rtp(gw, idx);
        let mut uac = UacCall::new(
            idx,
            &local.to_string(),
            &NODE_SIP.to_string(),
            rtp.port(),
            plan.caller.as_deref(),
            &plan.dialled,
            plan.offer,
        );
        let invite = uac.invite();
        let log = CallLog {
            caller: plan.caller.clone(),
            ..CallLog::default()
        };
        let mut c = GwCall {
            gw,
            uac,
            plan,
            phase: Phase::Calling,
            txs: Vec::new(),
            next_tx: 1,
            answered_at: None,
            node_rtp: None,
            audio_pt: 0,
            ssrc: (ctx.rng.next_u64() >> 32) as u32,
            rtp_seq: ctx.rng.below(60_000) as u16,
            ts_base: (ctx.rng.next_u64() >> 40) as u32,
            act_gen: 0,
            silence_gen: 0,
            keys: VecDeque::new(),
            on_hold: false,
            dead: false,
            heard_again: false,
            invalid_done: false,
            bad_done: false,
            log,
            early: None,
            forget_at: None,
        };
        self.by_sip.insert(c.uac.call_id.clone(), idx);
        self.by_rtp.insert(rtp, idx);
        Self::start_tx(ctx, idx, &mut c, TxKind::Invite, invite);
        if let Some(d) = c.plan.cancel_after {
            ctx.after(
                d,
                Ev::Gw {
                    call: idx,
                    timer: GwTimer::Cancel,
                },
            );
        }
        // Timer C-like limit on ringing.
        ctx.after(
            Duration::from_secs(90),
            Ev::Gw {
                call: idx,
                timer: GwTimer::Silence { gen: u32::MAX },
            },
        );
        self.calls.insert(idx, c);
    }

    fn start_tx(ctx: &mut Ctx, idx: u64, c: &mut GwCall, kind: TxKind, bytes: Vec<u8>) {
        let id = c.next_tx;
        c.next_tx += 1;
        ctx.send(gw_sip(c.gw), NODE_SIP, Msg::Sip(bytes.clone()));
        c.txs.push(Tx {
            id,
            kind,
            bytes,
            interval: T1,
            started: ctx.now,
            quiet: false,
        });
        ctx.after(
            T1,
            Ev::Gw {
                call: idx,
                timer: GwTimer::Retransmit { tx: id },
            },
        );
    }

    /// A datagram arrives at a gateway.
    pub(crate) fn on_packet(&mut self, ctx: &mut Ctx, to: SocketAddr, msg: Msg) {
        match msg {
            Msg::Sip(data) => {
                let Some(cid) = call_id_of(&data) else {
                    return;
                };
                if cid.starts_with("opt-") {
                    if data.starts_with(b"SIP/2.0 200") {
                        ctx.stats.options_answered += 1;
                    }
                    return;
                }
                let Some(&idx) = self.by_sip.get(cid) else {
                    return;
                };
                self.on_sip(ctx, idx, &data);
                let early = self.calls.get_mut(&idx).and_then(|c| {
                    if c.phase == Phase::Answered {
                        c.early.take()
                    } else {
                        None
                    }
                });
                if let Some(pl) = early {
                    self.on_heard(ctx, idx, &pl);
                }
            }
            Msg::Audio(pl) => {
                if let Some(&idx) = self.by_rtp.get(&to) {
                    self.on_heard(ctx, idx, &pl);
                }
            }
            Msg::Rtp(_) => {}
        }
    }

    fn on_sip(&mut self, ctx: &mut Ctx, idx: u64, data: &[u8]) {
        let Some(c) = self.calls.get_mut(&idx) else {
            return;
        };
        if c.dead {
            return;
        }
        let before = c.uac.state;
        let replies = c.uac.on_datagram(data);
        for r in replies {
            ctx.send(gw_sip(c.gw), NODE_SIP, Msg::Sip(r));
        }
        let is_request = !data.starts_with(b"SIP/2.0 ");
        if is_request {
            if data.starts_with(b"BYE ") && c.phase != Phase::Done {
                ctx.stats.node_hangups += 1;
                c.log.ended_by = "node";
                Self::finish(ctx, idx, c);
            }
            return;
        }
        let Some((status, cseq, method)) = c.uac.last_response.clone() else {
            return;
        };
        let kind = match (method.as_str(), cseq) {
            ("INVITE", 1) => TxKind::Invite,
            ("INVITE", _) => TxKind::ReInvite,
            ("BYE", _) => TxKind::Bye,
            ("CANCEL", _) => TxKind::Cancel,
            _ => return,
        };
        if status >= 200 {
            c.txs.retain(|t| t.kind != kind);
        } else if let Some(t) = c.txs.iter_mut().find(|t| t.kind == kind) {
            t.quiet = true;
        }
        match kind {
            TxKind::Invite if status >= 200 => {
                c.txs.retain(|t| t.kind != TxKind::Cancel || status < 300);
                if (200..300).contains(&status) && before == UacState::Calling {
                    Self::answered(ctx, idx, c);
                } else if status >= 300 && c.phase == Phase::Calling {
                    c.log.final_status = Some(status);
                    match status {
                        503 => ctx.stats.calls_busy_503 += 1,
                        487 => ctx.stats.calls_cancelled += 1,
                        _ => ctx.stats.calls_rejected_other += 1,
                    }
                    c.log.ended_by = "rejected";
                    Self::finish(ctx, idx, c);
                }
            }
            TxKind::Bye if c.phase != Phase::Done => {
                Self::finish(ctx, idx, c);
            }
            _ => {}
        }
    }

    fn answered(ctx: &mut Ctx, idx: u64, c: &mut GwCall) {
        ctx.stats.calls_answered += 1;
        c.log.answered = true;
        c.log.final_status = Some(200);
        if c.plan.cancel_after.is_some() && c.phase == Phase::Calling {
            // Too late to cancel: the caller hangs up at once instead.
            let cancelling = c.txs.iter().any(|t| t.kind == TxKind::Cancel);
            c.txs.retain(|t| t.kind != TxKind::Cancel);
            if cancelling {
                c.phase = Phase::Answered;
                c.answered_at = Some(ctx.now);
                Self::hang_up(ctx, idx, c);
                return;
            }
        }
        c.phase = Phase::Answered;
        c.answered_at = Some(ctx.now);
        if let Some((pt, port)) = c.uac.answer {
            c.audio_pt = pt;
            c.node_rtp = Some(SocketAddr::new(NODE_SIP.ip(), port));
        }
        let d = ctx.ms(20, 200);
        ctx.after(
            d,
            Ev::Gw {
                call: idx,
                timer: GwTimer::Audio,
            },
        );
        if let Some(p) = c.plan.patience {
            ctx.after(
                p,
                Ev::Gw {
                    call: idx,
                    timer: GwTimer::HangUp,
                },
            );
        }
        if let Some((at, _)) = c.plan.hold {
            ctx.after(
                at,
                Ev::Gw {
                    call: idx,
                    timer: GwTimer::Hold(true),
                },
            );
        }
        if let Some(d) = c.plan.die_after {
            ctx.after(
                d,
                Ev::Gw {
                    call: idx,
                    timer: GwTimer::Die,
                },
            );
        }
        Self::arm_silence(ctx, idx, c);
    }

    fn arm_silence(ctx: &mut Ctx, idx: u64, c: &mut GwCall) {
        c.silence_gen += 1;
        ctx.after(
            Duration::from_secs(45),
            Ev::Gw {
                call: idx,
                timer: GwTimer::Silence { gen: c.silence_gen },
            },
        );
    }

    fn finish(ctx: &mut Ctx, idx: u64, c: &mut GwCall) {
        c.phase = Phase::Done;
        c.act_gen += 1;
        // Keep answering retransmissions for a while, then forget the call.
        let at = ctx.now + Duration::from_secs(40);
        c.forget_at = Some(at);
        ctx.sched.at(
            at,
            Ev::Gw {
                call: idx,
                timer: GwTimer::Silence { gen: u32::MAX - 1 },
            },
        );
    }

    fn hang_up(ctx: &mut Ctx, idx: u64, c: &mut GwCall) {
        match c.phase {
            Phase::Answered => {
                ctx.stats.caller_hangups += 1;
                c.log.ended_by = "caller";
                let bye = c.uac.bye();
                c.act_gen += 1;
                c.keys.clear();
                Self::start_tx(ctx, idx, c, TxKind::Bye, bye);
                c.phase = Phase::Done;
                let at = ctx.now + TX_TIMEOUT + Duration::from_secs(8);
                c.forget_at = Some(at);
                ctx.sched.at(
                    at,
                    Ev::Gw {
                        call: idx,
                        timer: GwTimer::Silence { gen: u32::MAX - 1 },
                    },
                );
            }
            Phase::Calling => {
                if c.txs.iter().any(|t| t.kind == TxKind::Cancel) {
                    return;
                }
                c.log.notes.push("cancelled while ringing".into());
                let cancel = c.uac.cancel();
                Self::start_tx(ctx, idx, c, TxKind::Cancel, cancel);
            }
            Phase::Done => {}
        }
    }

    /// A gateway call's timer.
    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx, idx: u64, timer: GwTimer) {
        let Some(c) = self.calls.get_mut(&idx) else {
            return;
        };
        match timer {
            GwTimer::Retransmit { tx } => {
                if c.dead {
                    return;
                }
                let Some(t) = c.txs.iter_mut().find(|t| t.id == tx) else {
                    return;
                };
                if ctx.now - t.started >= TX_TIMEOUT {
                    let kind = t.kind;
                    c.txs.retain(|t| t.id != tx);
                    if kind == TxKind::Invite && c.phase == Phase::Calling {
                        ctx.stats.calls_no_answer += 1;
                        c.log.ended_by = "no answer";
                        Self::finish(ctx, idx, c);
                    }
                    return;
                }
                if !t.quiet {
                    let bytes = t.bytes.clone();
                    ctx.send(gw_sip(c.gw), NODE_SIP, Msg::Sip(bytes));
                }
                let cap = if t.kind == TxKind::Invite || t.kind == TxKind::ReInvite {
                    Duration::from_secs(64)
                } else {
                    T2
                };
                t.interval = (t.interval * 2).min(cap);
                let next = t.interval;
                ctx.after(
                    next,
                    Ev::Gw {
                        call: idx,
                        timer: GwTimer::Retransmit { tx },
                    },
                );
            }
            GwTimer::Act { gen } => {
                if gen != c.act_gen || c.phase != Phase::Answered || c.dead {
                    return;
                }
                if let Some(d) = c.keys.pop_front() {
                    Self::send_key(ctx, c, d);
                    if !c.keys.is_empty() {
                        let gap = ctx.ms(250, 700);
                        ctx.after(
                            gap,
                            Ev::Gw {
                                call: idx,
                                timer: GwTimer::Act { gen },
                            },
                        );
                    }
                }
            }
            GwTimer::Audio => {
                if c.phase != Phase::Answered || c.dead {
                    return;
                }
                Self::send_audio(ctx, c);
                let d = ctx.ms(1_500, 2_500);
                ctx.after(
                    d,
                    Ev::Gw {
                        call: idx,
                        timer: GwTimer::Audio,
                    },
                );
            }
            GwTimer::HangUp => {
                if !c.dead {
                    Self::hang_up(ctx, idx, c);
                }
            }
            GwTimer::Cancel => {
                if c.phase == Phase::Calling && !c.dead {
                    Self::hang_up(ctx, idx, c);
                }
            }
            GwTimer::Hold(on) => {
                if c.phase != Phase::Answered || c.dead {
                    return;
                }
                if on {
                    ctx.stats.holds += 1;
                    c.log.notes.push("hold".into());
                }
                c.on_hold = on;
                let re = c.uac.reinvite(on);
                c.txs.retain(|t| t.kind != TxKind::ReInvite);
                Self::start_tx(ctx, idx, c, TxKind::ReInvite, re);
                if on {
                    let back = c.plan.hold.map_or(Duration::from_secs(5), |h| h.1);
                    ctx.after(
                        back,
                        Ev::Gw {
                            call: idx,
                            timer: GwTimer::Hold(false),
                        },
                    );
                } else {
                    Self::arm_silence(ctx, idx, c);
                }
            }
            GwTimer::Die => {
                if c.phase == Phase::Answered && !c.dead {
                    ctx.stats.dead_gateways += 1;
                    c.dead = true;
                    c.log.notes.push("gateway died".into());
                    c.log.ended_by = "gateway died";
                    c.phase = Phase::Done;
                    let at = ctx.now + Duration::from_secs(150);
                    c.forget_at = Some(at);
                    ctx.sched.at(
                        at,
                        Ev::Gw {
                            call: idx,
                            timer: GwTimer::Silence { gen: u32::MAX - 1 },
                        },
                    );
                }
            }
            GwTimer::Silence { gen } => {
                if gen == u32::MAX - 1 {
                    if c.forget_at.is_some_and(|t| t <= ctx.now) {
                        self.forget(idx);
                    }
                    return;
                }
                if gen == u32::MAX {
                    // Ringing too long: give up.
                    if c.phase == Phase::Calling && !c.dead {
                        Self::hang_up(ctx, idx, c);
                    }
                    return;
                }
                if gen == c.silence_gen && c.phase == Phase::Answered && !c.on_hold && !c.dead {
                    c.log.notes.push("heard nothing for 45 s".into());
                    Self::hang_up(ctx, idx, c);
                }
            }
        }
    }

    fn forget(&mut self, idx: u64) {
        if let Some(c) = self.calls.remove(&idx) {
            self.by_sip.remove(&c.uac.call_id);
            self.by_rtp.remove(&gw_rtp(c.gw, idx));
            if self.keep_logs {
                self.logs.insert(idx, c.log);
            }
        }
    }

    fn media_ts(c: &GwCall, now: Instant) -> u32 {
        let since = c.answered_at.map_or(Duration::ZERO, |a| now - a);
        c.ts_base.wrapping_add((since.as_micros() / 125) as u32)
    }

    fn send_audio(ctx: &mut Ctx, c: &mut GwCall) {
        let (Some(to), Some(pt)) = (c.node_rtp, PayloadType::new(c.audio_pt)) else {
            return;
        };
        let h = RtpHeader {
            marker: false,
            payload_type: pt,
            sequence: c.rtp_seq,
            timestamp: Self::media_ts(c, ctx.now),
            ssrc: Ssrc(c.ssrc),
        };
        c.rtp_seq = c.rtp_seq.wrapping_add(1);
        let mut buf = [0u8; 200];
        if let Ok(n) = h.emit(&[0xFF; 160], &mut buf) {
            ctx.send(rtp_from(c), to, Msg::Rtp(buf[..n].to_vec()));
        }
    }

    fn send_key(ctx: &mut Ctx, c: &mut GwCall, d: Digit) {
        let Some(to) = c.node_rtp else {
            return;
        };
        ctx.stats.keys_pressed += 1;
        if c.log.keying {
            if let Some(last) = c.log.notes.last_mut() {
                last.push(d.as_char());
            }
        } else {
            c.log.notes.push(format!("pressed {}", d.as_char()));
        }
        let Some(pt) = PayloadType::new(101) else {
            return;
        };
        let ts = Self::media_ts(c, ctx.now);
        let steps: [(u64, bool, u16); 5] = [
            (0, false, 160),
            (20, false, 320),
            (40, true, 480),
            (50, true, 480),
            (60, true, 480),
        ];
        let from = rtp_from(c);
        for (i, (off, end, dur)) in steps.into_iter().enumerate() {
            let h = RtpHeader {
                marker: i == 0,
                payload_type: pt,
                sequence: c.rtp_seq,
                timestamp: ts,
                ssrc: Ssrc(c.ssrc),
            };
            c.rtp_seq = c.rtp_seq.wrapping_add(1);
            let Some(ev) = TelephoneEvent::for_digit(d, end, 10, dur) else {
                continue;
            };
            let mut payload = [0u8; 4];
            if ev.emit(&mut payload).is_err() {
                continue;
            }
            let mut buf = [0u8; 64];
            if let Ok(n) = h.emit(&payload, &mut buf) {
                let at = ctx.now + Duration::from_millis(off);
                ctx.send_at(at, from, to, Msg::Rtp(buf[..n].to_vec()));
            }
        }
    }

    fn on_heard(&mut self, ctx: &mut Ctx, idx: u64, pl: &Playlist) {
        let Some(c) = self.calls.get_mut(&idx) else {
            return;
        };
        if c.phase == Phase::Calling && !c.dead {
            c.early = Some(pl.clone());
            return;
        }
        if c.phase != Phase::Answered || c.dead {
            return;
        }
        Self::arm_silence(ctx, idx, c);
        c.act_gen += 1;
        c.keys.clear();
        let gen = c.act_gen;
        let first = pl.first().copied();
        let has = |p: Prompt| pl.contains(&p);
        let len_ms: u64 = pl.len() as u64 * 1_500;
        // Notes for the log.
        if let Some(Prompt::Announcement(_)) = first {
            c.log.notes.push("announcement".into());
        } else if first == Some(Prompt::Greeting) {
            c.log.notes.push("greeting".into());
        }
        if has(Prompt::Booked) {
            let pos = pl.iter().find_map(|p| match p {
                Prompt::Number(n) => Some(*n),
                _ => None,
            });
            c.log.booked_position = pos;
            c.log
                .notes
                .push(format!("BOOKED, position {}", pos.unwrap_or(0)));
        }
        if has(Prompt::AlreadyBooked) {
            c.log.already_booked = true;
            c.log.notes.push("ALREADY BOOKED".into());
        }
        if has(Prompt::CouldNotBook) || has(Prompt::QueueFull) {
            c.log.notes.push("could not book".into());
        }
        if has(Prompt::InvalidNumber) {
            c.log.notes.push("invalid number".into());
        }
        if has(Prompt::InvalidChoice) {
            c.log.notes.push("invalid choice".into());
        }
        if pl.iter().any(|p| matches!(p, Prompt::Menu { .. })) && !has(Prompt::NoInput) {
            c.log.notes.push("menu".into());
        }
        if has(Prompt::NoInput) {
            c.log.notes.push("no key".into());
        }
        if has(Prompt::CallbackConfirmChoices) {
            c.log.notes.push("number read back".into());
        }
        let mut plan_keys: Option<(Duration, Vec<Digit>)> = None;
        let menu = pl.iter().find_map(|p| match p {
            Prompt::Menu { callback, .. } => Some(*callback),
            _ => None,
        });
        if has(Prompt::Goodbye) || has(Prompt::PleaseWait) {
            // Nothing to answer.
        } else if has(Prompt::EnterNumber) {
            let keys: Vec<Digit> = if c.plan.bad_number_first && !c.bad_done {
                c.bad_done = true;
                "123#".chars().filter_map(Digit::from_char).collect()
            } else {
                c.plan
                    .keyed
                    .chars()
                    .chain(core::iter::once('#'))
                    .filter_map(Digit::from_char)
                    .collect()
            };
            let d = ctx.ms(800, 2_500);
            plan_keys = Some((d, keys));
        } else if has(Prompt::CallbackConfirmChoices) {
            let k = match c.plan.intent {
                Intent::Callback { confirm: false } => Digit::D2,
                _ => Digit::D1,
            };
            let d = ctx.ms(1_000, len_ms + 2_000);
            plan_keys = Some((d, vec![k]));
        } else if let Some(cb) = menu {
            if let Some(k) = Self::menu_key(c, cb) {
                let d = ctx.ms(800, len_ms + 3_000);
                plan_keys = Some((d, vec![k]));
            }
        } else if matches!(first, Some(Prompt::Announcement(_) | Prompt::Greeting))
            && c.plan.barge_in
        {
            if let Some(k) = Self::menu_key(c, true) {
                let d = ctx.ms(500, 4_000);
                plan_keys = Some((d, vec![k]));
            }
        }
        if let Some((d, keys)) = plan_keys {
            c.log.keying = keys.len() > 1;
            if c.log.keying {
                c.log.notes.push("keyed ".into());
            }
            c.keys = keys.into();
            ctx.after(
                d,
                Ev::Gw {
                    call: idx,
                    timer: GwTimer::Act { gen },
                },
            );
        }
    }

    fn menu_key(c: &mut GwCall, callback_offered: bool) -> Option<Digit> {
        match c.plan.intent {
            Intent::Listen => None,
            Intent::Callback { .. } => callback_offered.then_some(Digit::D1),
            Intent::HearAgain => {
                if c.heard_again {
                    None
                } else {
                    c.heard_again = true;
                    Some(Digit::D2)
                }
            }
            Intent::Invalid => {
                if c.invalid_done {
                    None
                } else {
                    c.invalid_done = true;
                    Some(Digit::D7)
                }
            }
        }
    }

    /// A gateway's OPTIONS keepalive.
    pub(crate) fn options(&mut self, ctx: &mut Ctx, gw: usize) {
        self.options_seq += 1;
        let n = self.options_seq;
        let local = gw_sip(gw);
        let text = format!(
            "OPTIONS sip:ccedge@{NODE_SIP} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKopt{n}\r\nMax-Forwards: 70\r\nFrom: <sip:gw@{local}>;tag=o{n}\r\nTo: <sip:ccedge@{NODE_SIP}>\r\nCall-ID: opt-{gw}-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        ctx.stats.options_sent += 1;
        ctx.send(local, NODE_SIP, Msg::Sip(text.into_bytes()));
    }
}

/// The source address of a call's RTP (its own port on its gateway).
fn rtp_from(c: &GwCall) -> SocketAddr {
    SocketAddr::new(gw_sip(c.gw).ip(), c.uac.rtp_port)
}
