//! The gateway's own RTP towards the agent (`--rtp-back`): 50 packets/s of 160-byte G.711
//! silence per answered call, as a real gateway sends, with the call's key presses (RFC 4733
//! events) in the same stream.
//!
//! * **One stream per call.** Each call has its own SSRC, sequence numbers and timestamps
//!   ([`BackCall`]); a key press replaces the audio packets of its ticks by event packets on
//!   the same SSRC and sequence space (timestamp of the tick the key started on, as RFC 4733
//!   §2.5 wants), so the agent, which tracks one inbound stream per call, hears both.
//! * **Symmetric RTP.** Packets leave from the shared receive socket whose port the call's
//!   offer named ([`Lane`]), so the agent latches onto the address it sends to.
//! * **Cheap.** One std thread ([`run_sender`]) sleeps to absolute 20 ms deadlines
//!   (`clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`) and on each tick sends every lane's
//!   packets with one `sendmmsg` per lane: 10,000 calls over 200 lanes are 200 system calls
//!   per tick.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
use nix::sys::time::TimeSpec;
use nix::time::{clock_nanosleep, ClockId, ClockNanosleepFlags};
use serde::Serialize;
use shared::dtmf::Digit;
use shared::rtp::{PayloadType, RtpHeader, Ssrc, TelephoneEvent};
use std::io::IoSlice;

/// Audio bytes per packet (20 ms of G.711).
pub(crate) const FRAME: usize = 160;
/// A whole back-RTP datagram: header and one frame (event packets are shorter).
pub(crate) const PACKET_LEN: usize = 12 + FRAME;
/// Packets per key press: three updates, then three copies of the end packet.
pub(crate) const EVENT_PACKETS: u8 = 6;
/// The tick: one packet per call.
const TICK_NS: u64 = 20_000_000;
/// Most datagrams one `sendmmsg` takes (the kernel's `UIO_MAXIOV`).
const MAX_BATCH: usize = 1024;
/// A sender this many ticks behind its deadlines skips them instead of bursting to catch up.
const MAX_BEHIND_TICKS: u64 = 5;

/// A key press being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Event {
    digit: Digit,
    /// RTP timestamp of the tick the event started on.
    ts: u32,
    /// Packets of it already sent.
    sent: u8,
}

/// Where a call's stream starts: its SSRC, first sequence number and first timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The call's own SSRC.
    pub(crate) ssrc: u32,
    /// The first packet's sequence number.
    pub(crate) seq: u16,
    /// The first packet's timestamp.
    pub(crate) ts: u32,
}

/// One call's RTP towards the agent: where to, in which payload types, and its own
/// SSRC/sequence/timestamp space.
#[derive(Debug, Clone)]
pub(crate) struct BackCall {
    /// The call's index.
    pub(crate) n: u32,
    /// The agent's RTP address from its SDP answer.
    pub(crate) to: SocketAddr,
    audio_pt: PayloadType,
    event_pt: Option<PayloadType>,
    silence: u8,
    ssrc: u32,
    seq: u16,
    ts_base: u32,
    /// The sender's tick of this call's first packet.
    first_tick: Option<u64>,
    /// Keys pressed and not yet started.
    keys: Vec<Digit>,
    event: Option<Event>,
}

impl BackCall {
    /// A call's stream towards `to`: audio in `audio_pt` (silence byte `silence`), key
    /// presses in `event_pt`, starting at `origin`.
    pub(crate) fn new(
        n: u32,
        to: SocketAddr,
        (audio_pt, silence): (PayloadType, u8),
        event_pt: Option<PayloadType>,
        origin: Origin,
    ) -> BackCall {
        BackCall {
            n,
            to,
            audio_pt,
            event_pt,
            silence,
            ssrc: origin.ssrc,
            seq: origin.seq,
            ts_base: origin.ts,
            first_tick: None,
            keys: Vec::new(),
            event: None,
        }
    }

    /// Queues a key press; it starts on the next tick with no other key in progress.
    /// `false` (nothing queued) when the agent negotiated no telephone-event.
    pub(crate) fn press(&mut self, digit: Digit) -> bool {
        if self.event_pt.is_none() {
            return false;
        }
        self.keys.push(digit);
        true
    }

    /// Whether a key is queued or being sent.
    #[cfg(test)]
    pub(crate) fn pressing(&self) -> bool {
        self.event.is_some() || !self.keys.is_empty()
    }

    /// Writes this call's packet for sender tick `tick` into `buf` (at least
    /// [`PACKET_LEN`] bytes) and returns its length: an event packet while a key is being
    /// sent, else a frame of silence. Every packet takes the next sequence number; the
    /// timestamp advances 160 per tick since the call's first packet, skipped ticks included.
    pub(crate) fn packet(&mut self, tick: u64, buf: &mut [u8]) -> Option<usize> {
        let first = *self.first_tick.get_or_insert(tick);
        let elapsed = u32::try_from(tick.saturating_sub(first) % (1 << 32)).unwrap_or(0);
        let ts = self
            .ts_base
            .wrapping_add(elapsed.wrapping_mul(FRAME as u32));
        if self.event.is_none() && !self.keys.is_empty() {
            let digit = self.keys.remove(0);
            self.event = Some(Event { digit, ts, sent: 0 });
        }
        let len = match (self.event, self.event_pt) {
            (Some(ev), Some(pt)) => {
                let end = ev.sent >= 3;
                let duration = FRAME as u16 * u16::from(ev.sent.min(3) + 1);
                let mut payload = [0u8; 4];
                TelephoneEvent::for_digit(ev.digit, end, 10, duration)?
                    .emit(&mut payload)
                    .ok()?;
                let header = RtpHeader {
                    marker: ev.sent == 0,
                    payload_type: pt,
                    sequence: self.seq,
                    timestamp: ev.ts,
                    ssrc: Ssrc(self.ssrc),
                };
                let next = ev.sent + 1;
                self.event = (next < EVENT_PACKETS).then_some(Event { sent: next, ..ev });
                header.emit(&payload, buf).ok()?
            }
            _ => {
                self.event = None;
                let header = RtpHeader {
                    marker: tick == first,
                    payload_type: self.audio_pt,
                    sequence: self.seq,
                    timestamp: ts,
                    ssrc: Ssrc(self.ssrc),
                };
                header.emit(&[self.silence; FRAME], buf).ok()?
            }
        };
        self.seq = self.seq.wrapping_add(1);
        Some(len)
    }
}

/// One shared RTP socket's sending side: the socket (the one the calls' offers named) and
/// the calls sending from it.
#[derive(Debug)]
pub(crate) struct Lane {
    socket: UdpSocket,
    /// The answered calls of this socket that send RTP back.
    pub(crate) calls: Mutex<Vec<BackCall>>,
}

impl Lane {
    /// A lane sending from `socket` (a clone of the receive socket).
    pub(crate) fn new(socket: UdpSocket) -> Lane {
        Lane {
            socket,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Starts sending for `call`.
    pub(crate) fn add(&self, call: BackCall) {
        if let Ok(mut c) = self.calls.lock() {
            c.push(call);
        }
    }

    /// Stops sending for call `n`.
    pub(crate) fn remove(&self, n: u32) {
        if let Ok(mut c) = self.calls.lock() {
            if let Some(i) = c.iter().position(|b| b.n == n) {
                c.swap_remove(i);
            }
        }
    }

    /// Queues a key press on call `n`'s stream; `false` when it is not sending (or has no
    /// telephone-event).
    pub(crate) fn press(&self, n: u32, digit: Digit) -> bool {
        self.calls.lock().is_ok_and(|mut c| {
            c.iter_mut()
                .find(|b| b.n == n)
                .is_some_and(|b| b.press(digit))
        })
    }
}

/// What the sender did, counted as it goes.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    packets: AtomicU64,
    unsent: AtomicU64,
    errors: AtomicU64,
    syscalls: AtomicU64,
    ticks: AtomicU64,
    late_ticks: AtomicU64,
}

/// The back-RTP figures of a run (`rtp_back` in the JSON).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct BackSummary {
    /// Whether the gateway sent RTP back (`--rtp-back`).
    pub enabled: bool,
    /// Datagrams sent (audio and key-press packets).
    pub packets: u64,
    /// Datagrams the socket's send buffer refused (`EAGAIN`): not sent.
    pub unsent: u64,
    /// Datagrams refused with another error.
    pub errors: u64,
    /// `sendmmsg` calls made.
    pub sendmmsg_calls: u64,
    /// 20 ms ticks run.
    pub ticks: u64,
    /// Ticks skipped because the sender was more than 5 ticks late.
    pub late_ticks: u64,
}

impl Counters {
    /// The figures so far.
    pub(crate) fn summary(&self, enabled: bool) -> BackSummary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BackSummary {
            enabled,
            packets: g(&self.packets),
            unsent: g(&self.unsent),
            errors: g(&self.errors),
            sendmmsg_calls: g(&self.syscalls),
            ticks: g(&self.ticks),
            late_ticks: g(&self.late_ticks),
        }
    }
}

pub(crate) fn ns_of(t: TimeSpec) -> u64 {
    let s = u64::try_from(t.tv_sec()).unwrap_or(0);
    let ns = u64::try_from(t.tv_nsec()).unwrap_or(0);
    s.saturating_mul(1_000_000_000).saturating_add(ns)
}

fn timespec_of(ns: u64) -> TimeSpec {
    let s = i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX);
    let sub = i64::try_from(ns % 1_000_000_000).unwrap_or(0);
    #[allow(clippy::useless_conversion)] // time_t and c_long differ by target
    TimeSpec::new(s.into(), sub.into())
}

/// The sender thread's loop: on every 20 ms deadline, one packet per call of every lane,
/// one `sendmmsg` per lane (more only beyond 1,024 calls on a lane or after a partial send),
/// until `stop` is set.
pub(crate) fn run_sender(lanes: &[Arc<Lane>], stop: &AtomicBool, counters: &Counters) {
    let Ok(start) = ClockId::CLOCK_MONOTONIC.now() else {
        return;
    };
    let start = ns_of(start);
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(MAX_BATCH, None);
    let mut bufs = vec![[0u8; PACKET_LEN]; MAX_BATCH];
    let mut lens = vec![0usize; MAX_BATCH];
    let mut addrs: Vec<Option<SockaddrStorage>> = Vec::with_capacity(MAX_BATCH);
    let mut tick: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let deadline = start + tick * TICK_NS;
        while let Err(Errno::EINTR) = clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::TIMER_ABSTIME,
            &timespec_of(deadline),
        ) {}
        let now = ClockId::CLOCK_MONOTONIC.now().map_or(deadline, ns_of);
        let behind = now.saturating_sub(deadline) / TICK_NS;
        if behind > MAX_BEHIND_TICKS {
            counters.late_ticks.fetch_add(behind, Ordering::Relaxed);
            tick += behind;
        }
        for lane in lanes {
            let mut done = 0;
            loop {
                // Build this lane's packets (at most MAX_BATCH at a time) under its lock,
                // send them without it.
                addrs.clear();
                let more = {
                    let Ok(mut calls) = lane.calls.lock() else {
                        break;
                    };
                    let batch = calls.iter_mut().skip(done).take(MAX_BATCH);
                    for (call, (buf, len)) in batch.zip(bufs.iter_mut().zip(lens.iter_mut())) {
                        if let Some(l) = call.packet(tick, buf) {
                            *len = l;
                            addrs.push(Some(SockaddrStorage::from(call.to)));
                        } else {
                            *len = 0;
                            addrs.push(None);
                        }
                    }
                    done += addrs.len();
                    done < calls.len()
                };
                send_batch(lane, &mut headers, &bufs, &lens, &addrs, counters);
                if !more {
                    break;
                }
            }
        }
        counters.ticks.fetch_add(1, Ordering::Relaxed);
        tick += 1;
    }
}

/// Sends `bufs[i][..lens[i]]` to `addrs[i]` for every `i` with an address, with as few
/// `sendmmsg` calls as the socket allows.
fn send_batch(
    lane: &Lane,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bufs: &[[u8; PACKET_LEN]],
    lens: &[usize],
    addrs: &[Option<SockaddrStorage>],
    counters: &Counters,
) {
    // Skip calls whose packet could not be built (a None address would send nowhere).
    let keep: Vec<usize> = (0..addrs.len())
        .filter(|&i| addrs.get(i).is_some_and(Option::is_some))
        .collect();
    let iovs: Vec<[IoSlice<'_>; 1]> = keep
        .iter()
        .map(|&i| {
            let data = bufs
                .get(i)
                .and_then(|b| b.get(..lens.get(i).copied().unwrap_or(0)))
                .unwrap_or(&[]);
            [IoSlice::new(data)]
        })
        .collect();
    let to: Vec<Option<SockaddrStorage>> = keep
        .iter()
        .map(|&i| addrs.get(i).copied().flatten())
        .collect();
    let fd = lane.socket.as_raw_fd();
    let mut off = 0;
    while off < iovs.len() {
        let (Some(slices), Some(dest)) = (iovs.get(off..), to.get(off..)) else {
            break;
        };
        counters.syscalls.fetch_add(1, Ordering::Relaxed);
        let no_cmsgs: [ControlMessage<'_>; 0] = [];
        match sendmmsg(fd, headers, slices, dest, no_cmsgs, MsgFlags::MSG_DONTWAIT) {
            Ok(r) => {
                let sent = r.count();
                counters.packets.fetch_add(sent as u64, Ordering::Relaxed);
                if sent == 0 {
                    break;
                }
                off += sent;
            }
            Err(Errno::EAGAIN) => break,
            Err(Errno::EINTR) => {}
            Err(_) => {
                // The first datagram was refused (an ICMP error reported on the socket, an
                // address the kernel will not send to): skip it, send the rest.
                counters.errors.fetch_add(1, Ordering::Relaxed);
                off += 1;
            }
        }
    }
    counters
        .unsent
        .fetch_add((iovs.len() - off.min(iovs.len())) as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::rtp::RtpPacket;

    fn call() -> BackCall {
        BackCall::new(
            3,
            "127.0.0.1:31000".parse().unwrap(),
            (PayloadType::new(0).unwrap(), 0xFF),
            PayloadType::new(101),
            Origin {
                ssrc: 0xABCD_0001,
                seq: 65_534,
                ts: 1000,
            },
        )
    }

    /// (marker, pt, seq, ts, ssrc, payload) of the call's packet on `tick`.
    fn next(c: &mut BackCall, tick: u64) -> (bool, u8, u16, u32, u32, Vec<u8>) {
        let mut buf = [0u8; PACKET_LEN];
        let len = c.packet(tick, &mut buf).unwrap();
        let p = RtpPacket::parse(&buf[..len]).unwrap();
        (
            p.header().marker,
            p.payload_type().get(),
            p.sequence(),
            p.timestamp(),
            p.ssrc().0,
            p.payload().to_vec(),
        )
    }

    #[test]
    fn audio_packets_follow_one_sequence_and_timestamp_space() {
        let mut c = call();
        let a = next(&mut c, 100);
        assert_eq!(
            (a.0, a.1, a.2, a.3, a.4),
            (true, 0, 65_534, 1000, 0xABCD_0001)
        );
        assert_eq!(a.5, vec![0xFF; FRAME]);
        let b = next(&mut c, 101);
        assert_eq!((b.0, b.2, b.3), (false, 65_535, 1160));
        // A skipped tick: the sequence goes on by one, the timestamp by the time elapsed.
        let d = next(&mut c, 103);
        assert_eq!((d.2, d.3, d.4), (0, 1480, 0xABCD_0001));
    }

    #[test]
    fn a_key_press_takes_six_packets_of_the_same_stream_then_audio_resumes() {
        let mut c = call();
        assert!(!c.pressing());
        next(&mut c, 0);
        assert!(c.press(Digit::D1));
        assert!(c.pressing());
        let mut seqs = vec![];
        let mut events = vec![];
        for tick in 1..=6 {
            let p = next(&mut c, tick);
            assert_eq!(p.1, 101, "event payload type on tick {tick}");
            assert_eq!(p.4, 0xABCD_0001, "same SSRC");
            assert_eq!(p.0, tick == 1, "marker on the first event packet only");
            assert_eq!(p.3, 1160, "the timestamp of the tick the key started on");
            let ev = TelephoneEvent::parse(&p.5).unwrap();
            events.push((ev.event(), ev.is_end(), ev.duration()));
            seqs.push(p.2);
        }
        assert_eq!(
            events,
            [
                (1, false, 160),
                (1, false, 320),
                (1, false, 480),
                (1, true, 640),
                (1, true, 640),
                (1, true, 640)
            ]
        );
        assert!(!c.pressing());
        let audio = next(&mut c, 7);
        seqs.push(audio.2);
        assert_eq!((audio.1, audio.3), (0, 1000 + 7 * 160));
        assert_eq!(
            seqs,
            [65_535, 0, 1, 2, 3, 4, 5],
            "one sequence space, no gap"
        );
    }

    #[test]
    fn keys_queue_one_after_the_other_and_need_telephone_event() {
        let mut c = call();
        assert!(c.press(Digit::D1));
        assert!(c.press(Digit::D0));
        let digits: Vec<u8> = (0..12)
            .map(|t| TelephoneEvent::parse(&next(&mut c, t).5).unwrap().event())
            .collect();
        assert_eq!(digits, [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(next(&mut c, 12).1, 0);
        let mut no_events = BackCall::new(
            1,
            "127.0.0.1:1".parse().unwrap(),
            (PayloadType::new(8).unwrap(), 0xD5),
            None,
            Origin {
                ssrc: 1,
                seq: 1,
                ts: 1,
            },
        );
        assert!(!no_events.press(Digit::D1));
        assert_eq!(next(&mut no_events, 0).5, vec![0xD5; FRAME]);
    }

    #[test]
    fn lanes_add_press_and_remove_calls_by_index() {
        let lane = Lane::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        lane.add(call());
        let mut other = call();
        other.n = 4;
        lane.add(other);
        assert!(lane.press(4, Digit::D5));
        assert!(!lane.press(9, Digit::D5), "no such call");
        lane.remove(3);
        let calls = lane.calls.lock().unwrap();
        assert_eq!(calls.len(), 1);
        assert!(calls[0].pressing());
    }

    #[test]
    fn deadlines_convert_both_ways() {
        let ns = 12_345_678_901_234;
        assert_eq!(ns_of(timespec_of(ns)), ns);
    }
}
