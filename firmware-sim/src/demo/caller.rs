//! The demo's gateway: one caller per call over real UDP, using the text-based SIP user agent
//! of [`crate::gateway::uac`], receiving the agent's RTP and pressing keys as RFC 4733 events.
//!
//! Each call has its own SIP and RTP sockets on 127.0.0.1. The caller follows the received
//! audio against the announcement's own frames ([`Expected`]): a 20 ms packet counts as heard
//! when it is byte for byte the next frame of the announcement (the agent plays 8 kHz audio
//! without changing it, so every frame must arrive exactly). Once the whole announcement was
//! heard (or it did not come) the caller follows its [`Script`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::dtmf::Digit;
use shared::g711::Law;
use shared::rtp::{PayloadType, RtpHeader, RtpPacket, Ssrc, TelephoneEvent};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::gateway::uac::{Offer, UacCall, UacState};

/// G.711 frame: 20 ms at 8 kHz.
const FRAME: usize = 160;
/// Payload type the gateway offers for telephone-event.
const EVENT_PT: u8 = 101;

/// The announcement as the caller should hear it: its 20 ms frames in both laws.
#[derive(Debug)]
pub(crate) struct Expected {
    ulaw: Vec<[u8; FRAME]>,
    alaw: Vec<[u8; FRAME]>,
}

impl Expected {
    /// Encodes 8 kHz samples (a whole number of frames) with each law.
    pub(crate) fn new(pcm: &[i16]) -> Expected {
        let enc = |law: Law| {
            pcm.chunks_exact(FRAME)
                .map(|c| {
                    let mut f = [0u8; FRAME];
                    for (o, &s) in f.iter_mut().zip(c) {
                        *o = law.encode_sample(s);
                    }
                    f
                })
                .collect()
        };
        Expected {
            ulaw: enc(Law::Ulaw),
            alaw: enc(Law::Alaw),
        }
    }

    fn frames(&self, law: Law) -> &[[u8; FRAME]] {
        match law {
            Law::Ulaw => &self.ulaw,
            Law::Alaw => &self.alaw,
        }
    }

    /// Frames in the announcement.
    pub(crate) fn len(&self) -> usize {
        self.ulaw.len()
    }

    /// Playing time.
    pub(crate) fn duration(&self) -> Duration {
        Duration::from_millis(20 * self.len() as u64)
    }
}

/// What a caller does once the announcement was heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Script {
    /// Hang up.
    Listen,
    /// "1" (call me back), "1" (confirm the caller ID), "1" (as soon as possible); the agent
    /// books and hangs up.
    BookConfirm,
    /// "1", "1", then "2": the second time offered (a later part of a day).
    BookLater,
    /// "1", then "2" (another number) unless anonymous, then the number and "#", then "1" (as
    /// soon as possible).
    BookKeyed(String),
}

impl Script {
    /// Short name for the report.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Script::Listen => "listen",
            Script::BookConfirm => "book",
            Script::BookLater => "book for later",
            Script::BookKeyed(_) => "book (keyed number)",
        }
    }

    /// Whether the caller asks for a callback.
    pub(crate) fn books(&self) -> bool {
        !matches!(self, Script::Listen)
    }
}

/// One call to place.
#[derive(Debug, Clone)]
pub(crate) struct CallPlan {
    /// Call number (unique Call-ID and tags).
    pub(crate) n: u64,
    /// Caller number without `+` (`None`: anonymous).
    pub(crate) caller: Option<String>,
    /// Dialled number without `+`.
    pub(crate) dialled: String,
    /// SDP offer.
    pub(crate) offer: Offer,
    /// What the caller does.
    pub(crate) script: Script,
    /// The caller presses 9 for Spanish as soon as the greeting starts, then follows its
    /// script in Spanish (the expected audio is then the Spanish announcement's).
    pub(crate) spanish: bool,
}

/// How a call went.
#[derive(Debug, Clone)]
pub(crate) struct CallResult {
    /// The plan.
    pub(crate) plan: CallPlan,
    /// 200 OK received.
    pub(crate) answered: bool,
    /// Final status of the INVITE (200, 486, …), when any.
    pub(crate) status: Option<u16>,
    /// INVITE to 200 OK.
    pub(crate) setup: Option<Duration>,
    /// The negotiated law.
    pub(crate) law: Option<Law>,
    /// Audio packets received.
    pub(crate) packets: usize,
    /// Announcement frames heard, bit-exact and in order.
    pub(crate) heard: usize,
    /// Frames in the announcement.
    pub(crate) expected: usize,
    /// The agent sent the BYE (else the caller did).
    pub(crate) agent_hung_up: bool,
    /// Keys pressed.
    pub(crate) keys: String,
    /// What went wrong, when something did.
    pub(crate) error: Option<String>,
    /// How long the call lasted (INVITE to end).
    pub(crate) duration: Duration,
}

impl CallResult {
    /// The announcement was heard: at least 95 % of its frames arrived bit-exact and in
    /// order (a loaded machine may make the agent's pacer skip a frame or two).
    pub(crate) fn heard_it(&self) -> bool {
        self.expected > 0 && self.heard * 100 >= self.expected * 95
    }
}

/// Progress of the media side, shared with the call's control loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Media {
    packets: usize,
    heard: usize,
    /// The agent's RTP source address was learnt.
    from: Option<SocketAddr>,
}

/// Follows received audio against the announcement: a packet counts when it equals one of the
/// next few expected frames (so one lost packet does not stop the count).
fn advance(expected: &[[u8; FRAME]], pos: &mut usize, payload: &[u8]) -> bool {
    let end = (*pos + 4).min(expected.len());
    let Some(k) = expected
        .get(*pos..end)
        .and_then(|w| w.iter().position(|f| f.as_slice() == payload))
    else {
        return false;
    };
    *pos += k + 1;
    true
}

async fn receive_rtp(
    sock: Arc<UdpSocket>,
    expected: Arc<Expected>,
    law: Law,
    progress: watch::Sender<Media>,
) {
    let frames = expected.frames(law);
    let mut buf = [0u8; 2048];
    let mut pos = 0usize;
    let mut m = Media::default();
    while let Ok((n, from)) = sock.recv_from(&mut buf).await {
        let Some(data) = buf.get(..n) else { continue };
        let Ok(pkt) = RtpPacket::parse(data) else {
            continue;
        };
        if pkt.payload_type().get() != law.payload_type() {
            continue;
        }
        m.packets += 1;
        m.from.get_or_insert(from);
        if advance(frames, &mut pos, pkt.payload()) {
            m.heard += 1;
        }
        let _ = progress.send(m);
    }
}

/// The caller's own RTP stream: silence to open it, then key presses.
struct Sender {
    sock: Arc<UdpSocket>,
    to: SocketAddr,
    law: Law,
    seq: u16,
    ts: u32,
    ssrc: Ssrc,
}

impl Sender {
    async fn send(&mut self, pt: u8, marker: bool, payload: &[u8]) -> std::io::Result<()> {
        let Some(payload_type) = PayloadType::new(pt) else {
            return Ok(());
        };
        let h = RtpHeader {
            marker,
            payload_type,
            sequence: self.seq,
            timestamp: self.ts,
            ssrc: self.ssrc,
        };
        self.seq = self.seq.wrapping_add(1);
        let mut buf = [0u8; 256];
        if let Ok(n) = h.emit(payload, &mut buf) {
            self.sock.send_to(&buf[..n], self.to).await?;
        }
        Ok(())
    }

    async fn silence(&mut self, frames: u32) -> std::io::Result<()> {
        let payload = [self.law.silence(); FRAME];
        for _ in 0..frames {
            self.send(self.law.payload_type(), false, &payload).await?;
            self.ts = self.ts.wrapping_add(FRAME as u32);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// One key press: three updates and three end packets, 20 ms apart (RFC 4733).
    async fn key(&mut self, digit: Digit) -> std::io::Result<()> {
        for (i, (end, dur)) in [
            (false, 160u16),
            (false, 320),
            (false, 480),
            (true, 640),
            (true, 640),
            (true, 640),
        ]
        .into_iter()
        .enumerate()
        {
            let mut payload = [0u8; 4];
            if let Some(ev) = TelephoneEvent::for_digit(digit, end, 10, dur) {
                let _ = ev.emit(&mut payload);
            }
            self.send(EVENT_PT, i == 0, &payload).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.ts = self.ts.wrapping_add(800);
        Ok(())
    }
}

/// Sends `data` on the SIP socket.
async fn send_sip(sock: &UdpSocket, to: SocketAddr, data: &[u8]) -> Result<(), String> {
    sock.send_to(data, to)
        .await
        .map(|_| ())
        .map_err(|e| format!("SIP send: {e}"))
}

/// Feeds SIP datagrams to the UAC until `until` holds or `deadline`; retransmits `retx`
/// every 500 ms meanwhile. Returns whether `until` held.
async fn sip_until(
    sock: &UdpSocket,
    agent: SocketAddr,
    uac: &mut UacCall,
    retx: Option<&[u8]>,
    deadline: Instant,
    until: impl Fn(&UacCall) -> bool,
) -> Result<bool, String> {
    let mut buf = vec![0u8; 65_536];
    let mut next_retx = Instant::now() + Duration::from_millis(500);
    while !until(uac) {
        let wake = if retx.is_some() {
            next_retx.min(deadline)
        } else {
            deadline
        };
        match tokio::time::timeout_at(wake, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                for out in uac.on_datagram(buf.get(..n).unwrap_or_default()) {
                    send_sip(sock, agent, &out).await?;
                }
            }
            Ok(Err(e)) => return Err(format!("SIP receive: {e}")),
            Err(_) => {
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                if let Some(r) = retx {
                    send_sip(sock, agent, r).await?;
                    next_retx = Instant::now() + Duration::from_millis(500);
                }
            }
        }
    }
    Ok(true)
}

/// Places one call to `agent` and follows its script; never panics, reports what failed.
pub(crate) async fn place(
    plan: CallPlan,
    agent: SocketAddr,
    expected: Arc<Expected>,
) -> CallResult {
    let started = Instant::now();
    let mut r = CallResult {
        plan: plan.clone(),
        answered: false,
        status: None,
        setup: None,
        law: None,
        packets: 0,
        heard: 0,
        expected: expected.len(),
        agent_hung_up: false,
        keys: String::new(),
        error: None,
        duration: Duration::ZERO,
    };
    if let Err(e) = run(&plan, agent, expected, &mut r, started).await {
        r.error = Some(e);
    }
    r.duration = started.elapsed();
    r
}

async fn run(
    plan: &CallPlan,
    agent: SocketAddr,
    expected: Arc<Expected>,
    r: &mut CallResult,
    started: Instant,
) -> Result<(), String> {
    let bind = |what: &'static str| async move {
        UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("{what} socket: {e}"))
    };
    let sip = bind("SIP").await?;
    let rtp = Arc::new(bind("RTP").await?);
    let local_sip = sip.local_addr().map_err(|e| e.to_string())?;
    let rtp_port = rtp.local_addr().map_err(|e| e.to_string())?.port();
    let mut uac = UacCall::new(
        plan.n,
        &local_sip.to_string(),
        &agent.to_string(),
        rtp_port,
        plan.caller.as_deref(),
        &plan.dialled,
        plan.offer,
    );

    // INVITE, retransmitted until a final answer.
    let invite = uac.invite();
    send_sip(&sip, agent, &invite).await?;
    let answered = sip_until(
        &sip,
        agent,
        &mut uac,
        Some(&invite),
        started + Duration::from_secs(8),
        |u| u.state != UacState::Calling,
    )
    .await?;
    r.status = uac.statuses.iter().rev().copied().find(|s| *s >= 200);
    if !answered || uac.state != UacState::Confirmed {
        return Err(match uac.state {
            UacState::Rejected(s) => format!("refused with {s}"),
            _ => "no answer to the INVITE".to_owned(),
        });
    }
    r.answered = true;
    r.setup = Some(started.elapsed());
    let Some((pt, agent_rtp_port)) = uac.answer else {
        return Err("200 OK without an SDP answer".to_owned());
    };
    let law = match pt {
        0 => Law::Ulaw,
        8 => Law::Alaw,
        other => return Err(format!("agent chose payload type {other}")),
    };
    r.law = Some(law);

    // Media: follow the announcement.
    let (progress_tx, mut progress) = watch::channel(Media::default());
    let rx_task = tokio::spawn(receive_rtp(
        Arc::clone(&rtp),
        Arc::clone(&expected),
        law,
        progress_tx,
    ));
    let result = script(
        plan,
        agent,
        &sip,
        &mut uac,
        &rtp,
        SocketAddr::new(agent.ip(), agent_rtp_port),
        law,
        &expected,
        &mut progress,
        r,
    )
    .await;
    // A little longer for the last packets, then stop listening.
    tokio::time::sleep(Duration::from_millis(60)).await;
    rx_task.abort();
    let m = *progress.borrow();
    r.packets = m.packets;
    r.heard = m.heard;
    result
}

#[allow(clippy::too_many_arguments)]
async fn script(
    plan: &CallPlan,
    agent: SocketAddr,
    sip: &UdpSocket,
    uac: &mut UacCall,
    rtp: &Arc<UdpSocket>,
    agent_rtp: SocketAddr,
    law: Law,
    expected: &Expected,
    progress: &mut watch::Receiver<Media>,
    r: &mut CallResult,
) -> Result<(), String> {
    let mut tx = Sender {
        sock: Arc::clone(rtp),
        to: agent_rtp,
        law,
        seq: 1000,
        ts: 80_000,
        ssrc: Ssrc(0x6a7e_0000 | (plan.n as u32 & 0xffff)),
    };
    let io = |e: std::io::Error| format!("RTP send: {e}");
    if plan.spanish {
        // "Para español, oprima nueve" opens the greeting: 9 as soon as the audio starts.
        let first = Instant::now() + Duration::from_secs(3);
        let _ = tokio::time::timeout_at(first, progress.wait_for(|m| m.packets > 0)).await;
        tx.to = progress.borrow().from.unwrap_or(agent_rtp);
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.silence(3).await.map_err(io)?;
        tx.key(Digit::D9).await.map_err(io)?;
        r.keys.push('9');
    }
    // Listen until the last frame of the announcement arrived (or it clearly is not coming);
    // the language offer plays before it.
    let total = expected.len();
    let limit = Instant::now() + expected.duration() + Duration::from_secs(6);
    let _ = tokio::time::timeout_at(limit, progress.wait_for(|m| m.heard >= total)).await;
    tx.to = progress.borrow().from.unwrap_or(agent_rtp);
    let keys: Vec<(Digit, u64)> = match &plan.script {
        Script::Listen => Vec::new(),
        // "1" barges into the menu, "1" into the confirmation, then into the times offered.
        Script::BookConfirm => vec![(Digit::D1, 300), (Digit::D1, 700), (Digit::D1, 900)],
        Script::BookLater => vec![(Digit::D1, 300), (Digit::D1, 700), (Digit::D2, 900)],
        Script::BookKeyed(number) => {
            let mut k = vec![(Digit::D1, 300)];
            if plan.caller.is_some() {
                k.push((Digit::D2, 700));
            }
            let mut gap = 700;
            for c in number.chars().chain(core::iter::once('#')) {
                if let Some(d) = Digit::from_char(c) {
                    k.push((d, gap));
                    gap = 80;
                }
            }
            k.push((Digit::D1, 900));
            k
        }
    };
    if !keys.is_empty() {
        tx.silence(3).await.map_err(io)?;
    }
    for (d, pause) in keys {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        tx.key(d).await.map_err(io)?;
        r.keys.push(d.as_char());
    }
    if plan.script.books() {
        // The agent says "booked, you are number N, goodbye" and hangs up.
        let ended = sip_until(
            sip,
            agent,
            uac,
            None,
            Instant::now() + Duration::from_secs(25),
            |u| u.state == UacState::Terminated,
        )
        .await?;
        if !ended {
            return Err("the agent did not hang up after the booking".to_owned());
        }
        r.agent_hung_up = true;
        return Ok(());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bye = uac.bye();
    send_sip(sip, agent, &bye).await?;
    let ok = sip_until(
        sip,
        agent,
        uac,
        Some(&bye),
        Instant::now() + Duration::from_secs(4),
        |u| {
            u.last_response
                .as_ref()
                .is_some_and(|(s, _, m)| *s >= 200 && m == "BYE")
        },
    )
    .await?;
    if !ok {
        return Err("no answer to the BYE".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_follower_counts_exact_frames_in_order_and_skips_one_lost() {
        let pcm: Vec<i16> = (0..FRAME * 5).map(|i| (i as i16) * 7).collect();
        let e = Expected::new(&pcm);
        let f = e.frames(Law::Ulaw);
        let mut pos = 0;
        assert!(advance(f, &mut pos, &f[0]));
        assert!(
            !advance(f, &mut pos, &[0u8; FRAME]),
            "silence is not the announcement"
        );
        assert!(advance(f, &mut pos, &f[2]), "frame 1 lost");
        assert!(!advance(f, &mut pos, &f[0]), "not again from the start");
        assert!(advance(f, &mut pos, &f[3]));
        assert!(advance(f, &mut pos, &f[4]));
        assert_eq!(pos, 5);
        assert!(!advance(f, &mut pos, &f[4]));
        assert_eq!(e.len(), 5);
        assert_eq!(e.duration(), Duration::from_millis(100));
    }
}
