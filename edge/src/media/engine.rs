//! The RTP pacer's per-tick work for every call (the media plane's thread drives it every
//! 20 ms: [`super::plane`]).
//!
//! Each answered call has a [`Session`]: its RTP socket, where to send, the G.711 law and
//! payload type, a [`shared::rtp::OutboundStream`] (SSRC, sequence, timestamp) and a queue of
//! audio segments to play. On every tick the engine sends exactly one 160-byte frame per
//! sending session — the current prompt frame, or silence when nothing plays — so the caller
//! hears an unbroken 50 packets/s stream with a steady timestamp. The tick is scheduled on
//! absolute deadlines (`start + n × 20 ms`); when the task wakes late it sends the frames it
//! owes, so timestamps never drift from wall time.
//!
//! Frames are pre-encoded and shared by all calls (`Arc`), so a send is a 12-byte header
//! write plus a 160-byte copy into one reused buffer: no allocation per packet.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use shared::g711::Law;
use shared::rtp::playout::{Frame, Playout};
use shared::rtp::{rtcp, OutboundStream, PayloadType, Ssrc};

/// A call's RTP socket, shared with the media plane's receive side: one descriptor per call
/// (10,000 calls stay under a 20,000 descriptor limit). The engine sends through it with a
/// plain `sendto` (`socket2::SockRef`) on a non-blocking socket.
pub type SendSocket = Arc<std::net::UdpSocket>;

/// Bytes of one 20 ms G.711 frame.
pub const FRAME: usize = 160;
/// The pacing interval.
pub const PTIME: std::time::Duration = std::time::Duration::from_millis(20);

/// Pre-encoded audio the engine can play: 160-byte frames per law.
pub trait Audio: Send + Sync + std::fmt::Debug {
    /// The frames for `law`.
    fn frames(&self, law: Law) -> &[[u8; FRAME]];
}

/// The queue of what a call plays.
type Queue = VecDeque<Arc<dyn Audio>>;

/// One call's sending side: its socket and address around the core's
/// [`shared::rtp::playout::Playout`] (the playlist, hold and talk-spurt rules).
#[derive(Debug)]
pub struct Session {
    socket: SendSocket,
    remote: Option<SocketAddr>,
    /// `remote` in the form `sendto` takes, converted once.
    remote_raw: Option<socket2::SockAddr>,
    law: Law,
    playout: Playout<Queue>,
    /// Packets the socket took.
    sent: u64,
    send_errors: u64,
    /// `sent`, for readers on other threads (updated once per tick).
    shared_sent: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl Session {
    /// A session sending `law` with `payload_type` from `socket`.
    #[must_use]
    pub fn new(
        socket: SendSocket,
        law: Law,
        payload_type: PayloadType,
        ssrc: u32,
        initial_seq: u16,
        initial_ts: u32,
    ) -> Session {
        Session {
            socket,
            remote: None,
            remote_raw: None,
            law,
            playout: Playout::new(
                OutboundStream::new(Ssrc(ssrc), initial_seq, initial_ts, payload_type),
                Queue::new(),
            ),
            sent: 0,
            send_errors: 0,
            shared_sent: None,
        }
    }

    /// Publishes the count of packets sent in `counter` after every tick.
    #[must_use]
    pub fn with_counter(mut self, counter: Arc<std::sync::atomic::AtomicU64>) -> Session {
        self.shared_sent = Some(counter);
        self
    }

    /// Packets sent so far.
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Sends that failed (full socket buffer, unreachable peer).
    #[must_use]
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }
}

/// The pacer over all sessions, keyed by the agent's call key.
#[derive(Debug, Default)]
pub struct MediaEngine {
    sessions: std::collections::HashMap<u64, Session>,
    buf: Vec<u8>,
}

impl MediaEngine {
    /// An engine with no sessions.
    #[must_use]
    pub fn new() -> MediaEngine {
        MediaEngine {
            sessions: std::collections::HashMap::new(),
            buf: vec![0u8; 12 + FRAME],
        }
    }

    /// Number of sessions.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there are no sessions.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Adds (or replaces) the session of call `key`.
    pub fn start(
        &mut self,
        key: u64,
        mut session: Session,
        remote: Option<SocketAddr>,
        send: bool,
    ) {
        session.remote = remote;
        session.remote_raw = remote.map(socket2::SockAddr::from);
        session.playout.set_target(remote.is_some());
        session.playout.set_sending(send);
        self.sessions.insert(key, session);
    }

    /// Sends to `remote` from now on.
    pub fn set_remote(&mut self, key: u64, remote: SocketAddr) {
        if let Some(s) = self.sessions.get_mut(&key) {
            s.remote = Some(remote);
            s.remote_raw = Some(socket2::SockAddr::from(remote));
            s.playout.set_target(true);
        }
    }

    /// Holds (`false`) or resumes (`true`) sending.
    pub fn set_sending(&mut self, key: u64, on: bool) {
        if let Some(s) = self.sessions.get_mut(&key) {
            s.playout.set_sending(on);
        }
    }

    /// Replaces what plays with `segments` (empty: silence).
    pub fn play(&mut self, key: u64, segments: Vec<Arc<dyn Audio>>) {
        if let Some(s) = self.sessions.get_mut(&key) {
            let law = s.law;
            s.playout.play(segments, |seg| seg.frames(law).len());
        }
    }

    /// Stops what plays (silence follows); no "finished" is reported for it.
    pub fn stop_playback(&mut self, key: u64) {
        if let Some(s) = self.sessions.get_mut(&key) {
            s.playout.stop_playback();
        }
    }

    /// Removes the session of call `key`, returning it (for its counters).
    pub fn stop(&mut self, key: u64) -> Option<Session> {
        self.sessions.remove(&key)
    }

    /// The session of call `key`.
    #[must_use]
    pub fn session(&self, key: u64) -> Option<&Session> {
        self.sessions.get(&key)
    }

    /// Sends call `key`'s RTCP sender report (RFC 3550 §6.4.1: what the session sent, the
    /// wall-clock `ntp` and the matching RTP timestamp, `block` about the peer's stream) with
    /// an SDES CNAME, from the call's RTP socket to `to`. Returns whether it was sent.
    pub fn send_rtcp_report(
        &mut self,
        key: u64,
        to: SocketAddr,
        block: Option<&rtcp::ReportBlock>,
        ntp: u64,
    ) -> bool {
        let Some(s) = self.sessions.get(&key) else {
            return false;
        };
        let info = rtcp::SenderInfo {
            ntp,
            rtp_timestamp: s.playout.stream().timestamp(),
            // RFC 3550 §6.4.1: both counts wrap.
            packet_count: s.sent as u32,
            octet_count: s.sent.wrapping_mul(FRAME as u64) as u32,
        };
        let ssrc = s.playout.stream().ssrc();
        // RFC 7022: a CNAME unique to this session, not naming the host.
        let cname = format!("{:08x}@ccedge", ssrc.0);
        let mut buf = [0u8; 128];
        let Ok(n) = rtcp::build_report(&mut buf, ssrc, &info, block, cname.as_bytes()) else {
            return false;
        };
        socket2::SockRef::from(&*s.socket)
            .send_to(&buf[..n], &socket2::SockAddr::from(to))
            .is_ok()
    }

    /// Sends call `key`'s RTCP BYE (RFC 3550 §6.6) to `to`: the stream ends.
    pub fn send_rtcp_bye(&mut self, key: u64, to: SocketAddr) {
        let Some(s) = self.sessions.get(&key) else {
            return;
        };
        let mut buf = [0u8; 16];
        if let Ok(n) = rtcp::build_bye(&mut buf, s.playout.stream().ssrc()) {
            let _ =
                socket2::SockRef::from(&*s.socket).send_to(&buf[..n], &socket2::SockAddr::from(to));
        }
    }

    /// One 20 ms tick: sends one frame per sending session and appends to `finished` the keys
    /// whose playlist played to its end during this tick.
    pub fn tick(&mut self, finished: &mut Vec<u64>) {
        let buf = &mut self.buf;
        for (key, s) in &mut self.sessions {
            let law = s.law;
            let silence = [law.silence(); FRAME];
            let (socket, remote) = (&s.socket, &s.remote_raw);
            let (sent, errors) = (&mut s.sent, &mut s.send_errors);
            let ended = s.playout.tick(
                |seg| seg.frames(law).len(),
                |header, frame| {
                    let payload = match frame {
                        Frame::Audio { segment, index } => {
                            segment.frames(law).get(index).unwrap_or(&silence)
                        }
                        Frame::Silence => &silence,
                    };
                    let Some(remote) = remote else {
                        return;
                    };
                    if let Ok(n) = header.emit(payload, buf) {
                        match socket2::SockRef::from(&**socket).send_to(&buf[..n], remote) {
                            Ok(_) => *sent += 1,
                            Err(_) => *errors += 1,
                        }
                    }
                },
            );
            if ended {
                finished.push(*key);
            }
            if let Some(c) = &s.shared_sent {
                c.store(s.sent, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// Audio for tests: the given frames, whatever the law.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Tone(pub(crate) Vec<[u8; FRAME]>);

#[cfg(test)]
impl Audio for Tone {
    fn frames(&self, _law: Law) -> &[[u8; FRAME]] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (SendSocket, tokio::net::UdpSocket) {
        let a = Arc::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn plays_segments_then_silence_and_reports_finished() {
        let (tx, rx) = pair().await;
        let mut e = MediaEngine::new();
        let s = Session::new(tx, Law::Ulaw, PayloadType::PCMU, 7, 100, 1000);
        e.start(1, s, Some(rx.local_addr().unwrap()), true);
        let a: Arc<dyn Audio> = Arc::new(Tone(vec![[1; FRAME], [2; FRAME]]));
        let b: Arc<dyn Audio> = Arc::new(Tone(vec![[3; FRAME]]));
        e.play(1, vec![a, Arc::new(Tone(vec![])), b]);
        let mut done = Vec::new();
        let mut got = Vec::new();
        for _ in 0..5 {
            e.tick(&mut done);
            let mut buf = [0u8; 400];
            let n = rx.recv(&mut buf).await.unwrap();
            let p = shared::rtp::RtpPacket::parse(&buf[..n]).unwrap();
            got.push((p.sequence(), p.timestamp(), p.marker(), p.payload()[0]));
        }
        assert_eq!(
            got,
            [
                (100, 1000, true, 1),
                (101, 1160, false, 2),
                (102, 1320, false, 3),
                (103, 1480, false, 0xFF),
                (104, 1640, false, 0xFF),
            ]
        );
        assert_eq!(done, [1], "finished once, on the tick of the last frame");
    }

    #[tokio::test]
    async fn hold_skips_time_and_resume_marks_a_talkspurt() {
        let (tx, rx) = pair().await;
        let mut e = MediaEngine::new();
        let s = Session::new(tx, Law::Alaw, PayloadType::PCMA, 7, 0, 0);
        e.start(9, s, Some(rx.local_addr().unwrap()), true);
        let mut done = Vec::new();
        e.tick(&mut done);
        e.set_sending(9, false);
        e.tick(&mut done);
        e.tick(&mut done);
        e.set_sending(9, true);
        e.tick(&mut done);
        let mut buf = [0u8; 400];
        let n = rx.recv(&mut buf).await.unwrap();
        let first = shared::rtp::RtpPacket::parse(&buf[..n]).unwrap().header();
        let n = rx.recv(&mut buf).await.unwrap();
        let p = shared::rtp::RtpPacket::parse(&buf[..n]).unwrap();
        assert_eq!(first.sequence, 0);
        assert_eq!(p.sequence(), 1, "no sequence gap over hold");
        assert_eq!(p.timestamp(), 480, "timestamp advanced through hold");
        assert!(p.marker());
        assert_eq!(p.payload()[0], 0xD5, "A-law silence");
    }

    #[tokio::test]
    async fn stop_playback_reports_nothing() {
        let (tx, rx) = pair().await;
        let mut e = MediaEngine::new();
        e.start(
            3,
            Session::new(tx, Law::Ulaw, PayloadType::PCMU, 1, 0, 0),
            Some(rx.local_addr().unwrap()),
            true,
        );
        e.play(3, vec![Arc::new(Tone(vec![[5; FRAME]; 3]))]);
        let mut done = Vec::new();
        e.tick(&mut done);
        e.stop_playback(3);
        e.tick(&mut done);
        e.tick(&mut done);
        assert!(done.is_empty());
        assert_eq!(e.session(3).unwrap().sent(), 3);
        assert!(e.stop(3).is_some());
        assert!(e.is_empty());
    }
}
