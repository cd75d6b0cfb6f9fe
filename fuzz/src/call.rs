//! Whole calls: `shared::call::Call` built from a fixed, valid INVITE, then driven by an
//! arbitrary sequence of operations the way the shell drives it (SIP requests and responses,
//! RTP, timers, playback and booking results), draining every output after each one.
//!
//! Checked after every operation:
//! * at most [`MAX_OUTPUTS_PER_OP`] outputs and [`MAX_DATAGRAMS_PER_OP`] datagrams;
//! * every datagram the call sends parses with our own parser (requests through
//!   `to_incoming`, responses through `to_incoming_response`) and carries the call's Call-ID;
//! * events: `call.offered` first with `call_seq` 1, `call_seq` contiguous, `call.ended` once
//!   and last; no media command after `Media::Stop`;
//! * time never has to go backwards (deadlines are honoured as given).
//!
//! At the end the shell shuts the call down and only fires timers: the call must be
//! `is_done()` within [`FINALE_MAX_STEPS`] timer firings and [`FINALE_MAX_TIME`] of virtual
//! time, with `call.ended` emitted.

use std::net::SocketAddr;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use shared::call::{self, Call, Event, Input, Media, Output, Setup};
use shared::dtmf::Digit;
use shared::g711::Law;
use shared::ids::CallId;
use shared::ivr::{AnnouncementInfo, BookingResult};
use shared::limits::{IVR_MAX_ANNOUNCEMENTS_PER_CALL, SIP_MAX_DATAGRAM};
use shared::rtp::{PayloadType, RtpHeader, Ssrc, TelephoneEvent};
use shared::sdp::Codec;
use shared::sip::{self, uas, Message};
use shared::time::{Duration, Instant};

/// Most outputs one operation may cause.
pub const MAX_OUTPUTS_PER_OP: usize = 32;
/// Most datagrams one operation may cause.
pub const MAX_DATAGRAMS_PER_OP: usize = 8;
/// Most timer firings after the shutdown before the call must be done.
pub const FINALE_MAX_STEPS: usize = 100;
/// Most virtual time after the shutdown before the call must be done.
pub const FINALE_MAX_TIME: Duration = Duration::from_secs(300);

const GW: &str = "192.0.2.1:5060";
const CALL_ID: &str = "call-1@192.0.2.1";
const FROM_TAG: &str = "gw1";
const LOCAL_TAG: u64 = 0xfeed;

fn sip_cfg() -> &'static uas::Config {
    static CFG: uas::Config = uas::Config::new("sip:ccedge@192.0.2.10:5060", "192.0.2.10:5060");
    &CFG
}

/// Eight node configurations: transfer on/off × in-band DTMF on/off × ring delay 0/2 s.
fn configs() -> &'static [call::Config; 8] {
    static CONFIGS: OnceLock<[call::Config; 8]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        std::array::from_fn(|i| {
            let mut c = call::Config::new(sip_cfg());
            c.transfer_uri = (i & 1 != 0).then_some("sip:agents@192.0.2.20");
            c.inband_dtmf = i & 2 != 0;
            c.answer_delay = if i & 4 != 0 {
                Duration::from_secs(2)
            } else {
                Duration::ZERO
            };
            c
        })
    })
}

fn setup() -> Setup {
    Setup {
        id: CallId(7),
        local_tag: LOCAL_TAG,
        local_rtp: SocketAddr::from(([192, 0, 2, 10], 30_000)),
        session_id: 42,
    }
}

fn gw_rtp() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 40_000))
}

fn other_rtp() -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 7], 41_000))
}

/// SDP bodies the gateway may send (as an offer, or as the answer in an ACK).
#[derive(Arbitrary, Debug, Copy, Clone)]
pub enum Sdp {
    /// PCMU, PCMA, telephone-event 101.
    Standard,
    /// PCMA and telephone-event only.
    Pcma,
    /// PCMU without telephone-event (in-band DTMF).
    NoTelephoneEvent,
    /// `a=sendonly` (hold).
    Hold,
    /// `c=0.0.0.0` (old-style hold).
    ZeroAddress,
    /// `a=inactive`.
    Inactive,
    /// G.729 only (no common codec).
    G729,
    /// A new port (media moved).
    Moved(u16),
    /// Audio plus a video line.
    WithVideo,
}

impl Sdp {
    fn text(self) -> String {
        let (port, fmts, maps, extra, addr) = match self {
            Sdp::Standard => (40_000, "0 8 101", STD_MAPS, "", "192.0.2.1"),
            Sdp::Pcma => (40_000, "8 101", PCMA_MAPS, "", "192.0.2.1"),
            Sdp::NoTelephoneEvent => (40_000, "0", "a=rtpmap:0 PCMU/8000\r\n", "", "192.0.2.1"),
            Sdp::Hold => (40_000, "0 8 101", STD_MAPS, "a=sendonly\r\n", "192.0.2.1"),
            Sdp::ZeroAddress => (40_000, "0 8 101", STD_MAPS, "", "0.0.0.0"),
            Sdp::Inactive => (40_000, "0 8 101", STD_MAPS, "a=inactive\r\n", "192.0.2.1"),
            Sdp::G729 => (40_000, "18", "a=rtpmap:18 G729/8000\r\n", "", "192.0.2.1"),
            Sdp::Moved(p) => (p.max(1), "0 8 101", STD_MAPS, "", "192.0.2.2"),
            Sdp::WithVideo => (
                40_000,
                "0 101",
                STD_MAPS,
                "m=video 40002 RTP/AVP 31\r\n",
                "192.0.2.1",
            ),
        };
        format!(
            "v=0\r\no=gw 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {fmts}\r\n{maps}a=ptime:20\r\n{extra}"
        )
    }
}

const STD_MAPS: &str = "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
                        a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";
const PCMA_MAPS: &str = "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

/// The body of the fixed INVITE.
#[derive(Arbitrary, Debug, Copy, Clone)]
pub enum InviteBody {
    /// An SDP offer.
    Offer(Sdp),
    /// No body: we offer, the ACK answers.
    None,
    /// A body that is not SDP (415).
    TextPlain,
}

/// The request methods the gateway may send in the dialog.
#[derive(Arbitrary, Debug, Copy, Clone, PartialEq, Eq)]
pub enum Method {
    /// ACK (for the latest INVITE).
    Ack,
    /// BYE.
    Bye,
    /// CANCEL (of the latest INVITE).
    Cancel,
    /// The initial INVITE again (a retransmission).
    InviteRetransmission,
    /// A re-INVITE.
    ReInvite,
    /// OPTIONS.
    Options,
    /// INFO.
    Info,
    /// NOTIFY (`Event: refer`).
    Notify,
    /// UPDATE.
    Update,
    /// PRACK.
    Prack,
    /// An unknown method.
    Unknown,
}

impl Method {
    fn token(self) -> &'static str {
        match self {
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::InviteRetransmission | Method::ReInvite => "INVITE",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Notify => "NOTIFY",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Unknown => "FROBNICATE",
        }
    }
}

/// Which CSeq number the request carries.
#[derive(Arbitrary, Debug, Copy, Clone)]
pub enum CSeq {
    /// The next number (the usual case).
    Next,
    /// The gateway's current number again.
    Same,
    /// The latest INVITE's number (ACK, CANCEL).
    OfInvite,
    /// Any number.
    Value(u32),
}

/// Which Via branch the request carries.
#[derive(Arbitrary, Debug, Copy, Clone)]
pub enum Branch {
    /// A new branch.
    Fresh,
    /// The latest INVITE's branch (CANCEL, non-2xx ACK).
    OfInvite,
    /// The previous request's branch.
    Previous,
}

/// The request body.
#[derive(Arbitrary, Debug, Clone)]
pub enum Body {
    /// None.
    Empty,
    /// SDP.
    Sdp(Sdp),
    /// A `message/sipfrag` status line (NOTIFY about our REFER).
    Sipfrag(u16),
    /// Arbitrary bytes labelled `application/sdp`.
    Garbage(Vec<u8>),
}

/// What kind of RTP packet to send.
#[derive(Arbitrary, Debug, Copy, Clone)]
pub enum RtpKind {
    /// One 20 ms G.711 frame of silence.
    Silence,
    /// One 20 ms G.711 frame of a DTMF tone.
    Tone(Digit),
    /// One 20 ms G.711 frame of a constant byte.
    Noise(u8),
    /// A telephone-event block.
    Event {
        /// The event code (0–15 DTMF, others ignored).
        code: u8,
        /// The E bit.
        end: bool,
        /// The duration.
        duration: u16,
    },
    /// A payload type nobody negotiated.
    Foreign,
}

/// One operation of the script.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    /// A well-formed in-dialog request from the gateway.
    Request {
        /// The method.
        method: Method,
        /// Its CSeq.
        cseq: CSeq,
        /// Carry our To tag (otherwise none).
        to_tag: bool,
        /// Carry the gateway's From tag (otherwise another).
        from_tag: bool,
        /// Its branch.
        branch: Branch,
        /// Its body.
        body: Body,
    },
    /// Arbitrary bytes as a SIP datagram from the gateway.
    RawSip(Vec<u8>),
    /// A response from the gateway to the call's latest request (BYE, REFER).
    Respond {
        /// The status (mapped into 100–699).
        status: u16,
    },
    /// An RTP packet from the gateway.
    Rtp {
        /// The payload.
        kind: RtpKind,
        /// Step of the sequence number (1 = in order).
        seq_step: i16,
        /// Step of the timestamp in frames (1 = next 20 ms).
        ts_step: i8,
        /// From another SSRC.
        other_ssrc: bool,
        /// From another address (symmetric RTP latching).
        other_source: bool,
    },
    /// Arbitrary bytes as an RTP datagram.
    RawRtp(Vec<u8>),
    /// Let this many milliseconds pass, firing a timer that expires meanwhile.
    Advance(u16),
    /// Jump to the call's next deadline and fire it.
    FireTimer,
    /// The latest playlist played to its end.
    PlaybackFinished,
    /// The outcome of the latest booking.
    Booking(BookingResult),
    /// The node shuts down.
    Shutdown,
}

/// A whole fuzzed call.
#[derive(Arbitrary, Debug, Clone)]
pub struct Script {
    /// Index of the node configuration (taken modulo 8).
    pub config: u8,
    /// The INVITE's body.
    pub invite: InviteBody,
    /// The announcements selected for the caller (at most four are used).
    pub announcements: Vec<AnnouncementInfo>,
    /// What happens next.
    pub ops: Vec<Op>,
}

/// Byte-level entry of the `call_sequence` target.
pub fn check_bytes(data: &[u8]) {
    if let Ok(script) = Script::arbitrary_take_rest(Unstructured::new(data)) {
        check(&script);
    }
}

/// What the driver remembers of the latest request the call sent.
#[derive(Debug, Clone)]
struct SentRequest {
    via: String,
    from: String,
    to: String,
    cseq: String,
}

struct Driver {
    call: Call,
    trace: bool,
    now: Instant,
    gw_cseq: u32,
    invite_cseq: u32,
    invite_branch: String,
    previous_branch: String,
    branches: u32,
    last_sent: Option<SentRequest>,
    rtp_seq: u16,
    rtp_ts: u32,
    samples: u64,
    next_seq: u32,
    ended: bool,
    media_stopped: bool,
    outputs: Vec<Output>,
}

/// A request from the gateway; `headers` are extra header lines (each ending in CRLF), e.g.
/// Content-Type.
fn request_text(
    method: &str,
    cseq: u32,
    to_tag: Option<&str>,
    from_tag: &str,
    branch: &str,
    headers: &str,
    body: &[u8],
) -> Vec<u8> {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let mut v = format!(
        "{method} sip:+18005550100@192.0.2.10 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {GW};branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+12155550123@192.0.2.1>;tag={from_tag}\r\n\
         To: <sip:+18005550100@192.0.2.10>{to_tag}\r\n\
         Call-ID: {CALL_ID}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:gw@{GW}>\r\n\
         {headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

fn content_type(ct: Option<&str>) -> String {
    ct.map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default()
}

/// Samples of a DTMF key's two tones at about -10 dBm0 each.
fn tone(digit: Digit, start: u64, out: &mut [i16]) {
    const ROWS: [f64; 4] = [697.0, 770.0, 852.0, 941.0];
    const COLS: [f64; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
    let (r, c) = match digit {
        Digit::D1 => (0, 0),
        Digit::D2 => (0, 1),
        Digit::D3 => (0, 2),
        Digit::A => (0, 3),
        Digit::D4 => (1, 0),
        Digit::D5 => (1, 1),
        Digit::D6 => (1, 2),
        Digit::B => (1, 3),
        Digit::D7 => (2, 0),
        Digit::D8 => (2, 1),
        Digit::D9 => (2, 2),
        Digit::C => (2, 3),
        Digit::Star => (3, 0),
        Digit::D0 => (3, 1),
        Digit::Hash => (3, 2),
        Digit::D => (3, 3),
    };
    let amp = 22_700.0 * 10f64.powf(-10.0 / 20.0);
    for (i, s) in out.iter_mut().enumerate() {
        let t = (start + i as u64) as f64 / 8000.0;
        let x = amp * (2.0 * std::f64::consts::PI * ROWS[r] * t).sin()
            + amp * (2.0 * std::f64::consts::PI * COLS[c] * t).sin();
        *s = x as i16;
    }
}

impl Driver {
    fn new(script: &Script) -> Driver {
        let cfg = &configs()[usize::from(script.config) % 8];
        let (ct, body) = match script.invite {
            InviteBody::Offer(sdp) => (Some("application/sdp"), sdp.text().into_bytes()),
            InviteBody::None => (None, Vec::new()),
            InviteBody::TextPlain => (Some("text/plain"), b"hello".to_vec()),
        };
        let invite = request_text(
            "INVITE",
            1,
            None,
            FROM_TAG,
            "inv1",
            &content_type(ct),
            &body,
        );
        let anns = &script.announcements[..script
            .announcements
            .len()
            .min(IVR_MAX_ANNOUNCEMENTS_PER_CALL)];
        let call = {
            let Ok(Message::Request(r)) = sip::parse(&invite) else {
                panic!("the fixed INVITE parses")
            };
            let inc = r.to_incoming().expect("the fixed INVITE is well formed");
            Call::new(Instant::ZERO, cfg, &setup(), &inc, anns).expect("the call is created")
        };
        assert_eq!(call.sip_call_id(), CALL_ID.as_bytes());
        let mut d = Driver {
            call,
            trace: std::env::var_os("CCEDGE_FUZZ_TRACE").is_some(),
            now: Instant::ZERO,
            gw_cseq: 1,
            invite_cseq: 1,
            invite_branch: "inv1".into(),
            previous_branch: "inv1".into(),
            branches: 0,
            last_sent: None,
            rtp_seq: 1000,
            rtp_ts: 160_000,
            samples: 0,
            next_seq: 1,
            ended: false,
            media_stopped: false,
            outputs: Vec::new(),
        };
        d.drain("Call::new");
        d
    }

    /// Drains datagrams and outputs after one operation and checks them.
    fn drain(&mut self, what: &str) {
        let mut buf = vec![0u8; SIP_MAX_DATAGRAM];
        let mut datagrams = 0;
        while let Some(n) = self.call.poll_transmit(&mut buf) {
            datagrams += 1;
            assert!(
                datagrams <= MAX_DATAGRAMS_PER_OP,
                "more than {MAX_DATAGRAMS_PER_OP} datagrams after {what}"
            );
            if self.trace {
                let text = String::from_utf8_lossy(&buf[..n]);
                eprintln!("  sent: {}", text.lines().next().unwrap_or_default());
            }
            self.check_sent(&buf[..n]);
        }
        let mut outputs = 0;
        while let Some(out) = self.call.poll_output() {
            outputs += 1;
            assert!(
                outputs <= MAX_OUTPUTS_PER_OP,
                "more than {MAX_OUTPUTS_PER_OP} outputs after {what}: {:?}",
                self.outputs
            );
            if self.trace {
                eprintln!("  out: {out:?}");
            }
            self.check_output(&out, what);
            self.outputs.push(out);
        }
        self.trace_state(what);
    }

    fn trace_state(&self, what: &str) {
        if self.trace {
            eprintln!(
                "{:?} {what}: phase {:?}, next deadline {:?}, done {}",
                self.now,
                self.call.phase(),
                self.call.poll_timeout(),
                self.call.is_done()
            );
        }
    }

    fn check_sent(&mut self, dgram: &[u8]) {
        let text = String::from_utf8_lossy(dgram);
        match sip::parse(dgram) {
            Ok(Message::Request(r)) => {
                let inc = r
                    .to_incoming()
                    .unwrap_or_else(|e| panic!("our request does not parse: {e:?}\n{text}"));
                assert_eq!(inc.call_id, CALL_ID, "{text}");
                self.last_sent = Some(SentRequest {
                    via: r.header("Via").unwrap_or_default().to_owned(),
                    from: r.header("From").unwrap_or_default().to_owned(),
                    to: r.header("To").unwrap_or_default().to_owned(),
                    cseq: r.header("CSeq").unwrap_or_default().to_owned(),
                });
            }
            Ok(Message::Response(r)) => {
                let inc = r
                    .to_incoming_response()
                    .unwrap_or_else(|e| panic!("our response does not parse: {e:?}\n{text}"));
                assert_eq!(inc.call_id, CALL_ID, "{text}");
            }
            Err(e) => panic!("our datagram does not parse: {e:?}\n{text}"),
        }
    }

    fn check_output(&mut self, out: &Output, what: &str) {
        match out {
            Output::Event { call_seq, event } => {
                assert!(!self.ended, "event {event:?} after call.ended ({what})");
                assert_eq!(
                    *call_seq, self.next_seq,
                    "call_seq not contiguous at {event:?} ({what}): {:?}",
                    self.outputs
                );
                if *call_seq == 1 {
                    assert!(
                        matches!(event, Event::Offered { .. }),
                        "first event {event:?}"
                    );
                }
                self.next_seq += 1;
                if matches!(event, Event::Ended { .. }) {
                    self.ended = true;
                }
            }
            Output::Media(m) => {
                assert!(
                    !self.media_stopped,
                    "media command {m:?} after Media::Stop ({what})"
                );
                if *m == Media::Stop {
                    self.media_stopped = true;
                }
            }
            Output::Play(_) | Output::BookCallback { .. } | Output::OfferWindows => {
                assert!(!self.media_stopped, "{out:?} after Media::Stop ({what})");
            }
            // The node answers a language choice; the harness has one language.
            Output::StopPlayback | Output::Language(_) => {}
        }
    }

    fn fire_due(&mut self) {
        if self.call.poll_timeout().is_some_and(|t| t <= self.now) {
            self.timeout();
        }
    }

    /// Fires the call's timer at `now`; its next deadline must then lie in the future, or a
    /// shell re-arming from `poll_timeout` would spin.
    fn timeout(&mut self) {
        self.call.handle_timeout(self.now);
        if let Some(t) = self.call.poll_timeout() {
            assert!(
                t > self.now,
                "deadline {t:?} not after {:?} right after handle_timeout (phase {:?}): the timer would spin",
                self.now,
                self.call.phase()
            );
        }
    }

    fn fresh_branch(&mut self) -> String {
        self.branches += 1;
        format!("f{}", self.branches)
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Request {
                method,
                cseq,
                to_tag,
                from_tag,
                branch,
                body,
            } => self.request(*method, *cseq, *to_tag, *from_tag, *branch, body),
            Op::RawSip(bytes) => match sip::parse(bytes) {
                Ok(Message::Request(r)) => {
                    if let Ok(inc) = r.to_incoming() {
                        let _ = self.call.handle_sip_request(self.now, &inc);
                    }
                }
                Ok(Message::Response(r)) => {
                    if let Ok(inc) = r.to_incoming_response() {
                        let _ = self.call.handle_sip_response(self.now, &inc);
                    }
                }
                Err(_) => {}
            },
            Op::Respond { status } => self.respond(100 + status % 600),
            Op::Rtp {
                kind,
                seq_step,
                ts_step,
                other_ssrc,
                other_source,
            } => self.rtp(*kind, *seq_step, *ts_step, *other_ssrc, *other_source),
            Op::RawRtp(bytes) => {
                let _ = self.call.handle_rtp(self.now, gw_rtp(), false, bytes);
            }
            Op::Advance(ms) => {
                self.now += Duration::from_millis(u64::from(*ms));
                self.fire_due();
            }
            Op::FireTimer => {
                if let Some(t) = self.call.poll_timeout() {
                    self.now = self.now.max(t);
                    self.timeout();
                }
            }
            Op::PlaybackFinished => {
                let _ = self.call.handle_input(self.now, Input::PlaybackFinished);
            }
            Op::Booking(r) => {
                let _ = self.call.handle_input(self.now, Input::BookingResult(*r));
            }
            Op::Shutdown => {
                let _ = self.call.handle_input(self.now, Input::Shutdown);
            }
        }
    }

    fn request(
        &mut self,
        method: Method,
        cseq: CSeq,
        to_tag: bool,
        from_tag: bool,
        branch: Branch,
        body: &Body,
    ) {
        let number = match (method, cseq) {
            (Method::InviteRetransmission, _) => 1,
            (_, CSeq::Next) => {
                self.gw_cseq = self.gw_cseq.saturating_add(1);
                self.gw_cseq
            }
            (_, CSeq::Same) => self.gw_cseq,
            (_, CSeq::OfInvite) => self.invite_cseq,
            (_, CSeq::Value(v)) => v,
        };
        let branch = match (method, branch) {
            (Method::InviteRetransmission, _) => "inv1".to_owned(),
            (_, Branch::Fresh) => self.fresh_branch(),
            (_, Branch::OfInvite) => self.invite_branch.clone(),
            (_, Branch::Previous) => self.previous_branch.clone(),
        };
        let tag = format!("{LOCAL_TAG:x}");
        let to_tag = (to_tag && method != Method::InviteRetransmission).then_some(tag.as_str());
        let from_tag = if from_tag { FROM_TAG } else { "stranger" };
        let (ct, bytes) = match body {
            Body::Empty => (None, Vec::new()),
            Body::Sdp(s) => (Some("application/sdp"), s.text().into_bytes()),
            Body::Sipfrag(status) => (
                Some("message/sipfrag"),
                format!("SIP/2.0 {} Whatever\r\n", 100 + status % 600).into_bytes(),
            ),
            Body::Garbage(g) => (Some("application/sdp"), g.clone()),
        };
        let extra = if method == Method::Notify {
            "Event: refer\r\nSubscription-State: active\r\n"
        } else {
            ""
        };
        let text = request_text(
            method.token(),
            number,
            to_tag,
            from_tag,
            &branch,
            &format!("{extra}{}", content_type(ct)),
            &bytes,
        );
        if method == Method::ReInvite {
            self.invite_cseq = number;
            self.invite_branch.clone_from(&branch);
        }
        self.previous_branch = branch;
        let Ok(Message::Request(r)) = sip::parse(&text) else {
            panic!(
                "a well-formed request does not parse:\n{}",
                String::from_utf8_lossy(&text)
            )
        };
        let inc = r.to_incoming().unwrap_or_else(|e| {
            panic!(
                "a well-formed request is refused: {e:?}\n{}",
                String::from_utf8_lossy(&text)
            )
        });
        let _ = self.call.handle_sip_request(self.now, &inc);
    }

    fn respond(&mut self, status: u16) {
        let Some(sent) = self.last_sent.clone() else {
            return;
        };
        let to = if sent.to.contains(";tag=") {
            sent.to.clone()
        } else {
            format!("{};tag={FROM_TAG}", sent.to)
        };
        let text = format!(
            "SIP/2.0 {status} Whatever\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\n\
             Call-ID: {CALL_ID}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
            sent.via, sent.from, sent.cseq
        )
        .into_bytes();
        let Ok(Message::Response(r)) = sip::parse(&text) else {
            panic!(
                "a well-formed response does not parse:\n{}",
                String::from_utf8_lossy(&text)
            )
        };
        let inc = r.to_incoming_response().unwrap_or_else(|e| {
            panic!(
                "a well-formed response is refused: {e:?}\n{}",
                String::from_utf8_lossy(&text)
            )
        });
        let _ = self.call.handle_sip_response(self.now, &inc);
    }

    fn rtp(&mut self, kind: RtpKind, seq_step: i16, ts_step: i8, other_ssrc: bool, other: bool) {
        self.rtp_seq = self.rtp_seq.wrapping_add_signed(seq_step);
        self.rtp_ts = self
            .rtp_ts
            .wrapping_add_signed(i32::from(ts_step).wrapping_mul(160));
        let law = match self.call.codec() {
            Some(Codec::Pcma) => Law::Alaw,
            _ => Law::Ulaw,
        };
        let audio_pt = PayloadType::new(law.payload_type()).expect("static PT");
        let mut payload = [0u8; 160];
        let (pt, len) = match kind {
            RtpKind::Silence => {
                payload.fill(law.silence());
                (audio_pt, 160)
            }
            RtpKind::Noise(b) => {
                payload.fill(b);
                (audio_pt, 160)
            }
            RtpKind::Tone(d) => {
                let mut pcm = [0i16; 160];
                tone(d, self.samples, &mut pcm);
                self.samples += 160;
                law.encode(&pcm, &mut payload).expect("160 fit");
                (audio_pt, 160)
            }
            RtpKind::Event {
                code,
                end,
                duration,
            } => {
                let ev = TelephoneEvent::new(code, end, 10, duration).expect("volume fits");
                ev.emit(&mut payload).expect("4 fit");
                (PayloadType::TELEPHONE_EVENT_DEFAULT, 4)
            }
            RtpKind::Foreign => (PayloadType::new(99).expect("valid"), 160),
        };
        let header = RtpHeader {
            marker: false,
            payload_type: pt,
            sequence: self.rtp_seq,
            timestamp: self.rtp_ts,
            ssrc: Ssrc(if other_ssrc { 0x5678 } else { 0x1234 }),
        };
        let mut buf = [0u8; 172];
        let n = header.emit(&payload[..len], &mut buf).expect("fits");
        let from = if other { other_rtp() } else { gw_rtp() };
        // The other source is vouched for on every other packet, so both the latch and the
        // refusal of a foreign source are exercised.
        let trusted = other && self.rtp_seq % 2 == 0;
        let _ = self.call.handle_rtp(self.now, from, trusted, &buf[..n]);
    }

    /// Shuts down and fires timers only: the call must finish.
    fn finale(&mut self) {
        if self.call.is_done() {
            return;
        }
        let _ = self.call.handle_input(self.now, Input::Shutdown);
        self.drain("the final shutdown");
        let start = self.now;
        for _ in 0..FINALE_MAX_STEPS {
            if self.call.is_done() {
                break;
            }
            let Some(t) = self.call.poll_timeout() else {
                panic!(
                    "call stuck after shutdown: phase {:?}, not done, no deadline; outputs {:?}",
                    self.call.phase(),
                    self.outputs
                );
            };
            self.now = self.now.max(t);
            self.timeout();
            self.drain("a timer after shutdown");
        }
        assert!(
            self.call.is_done(),
            "call not done {FINALE_MAX_STEPS} timer firings after shutdown: phase {:?}",
            self.call.phase()
        );
        assert!(
            self.now - start <= FINALE_MAX_TIME,
            "call took {:?} to finish after shutdown",
            self.now - start
        );
        assert!(self.ended, "call done without call.ended");
        assert!(self.call.poll_output().is_none());
    }
}

/// Runs one script.
pub fn check(script: &Script) {
    let mut d = Driver::new(script);
    for (i, op) in script.ops.iter().enumerate() {
        if d.call.is_done() {
            break;
        }
        d.apply(op);
        d.drain(&format!("op {i} {op:?}"));
    }
    d.finale();
}
