//! One call: the SIP dialog, the SDP offer/answer, inbound RTP (DTMF) and the IVR, as the one
//! unit the shell drives.
//!
//! Where things happen, in one hop each:
//!
//! * **a SIP INVITE becomes a `Call`**: the shell parses the datagram
//!   ([`crate::sip::parse`]), asks [`crate::sip::endpoint::verdict`], and for
//!   `NewDialog` calls [`Call::new`] with the announcements selected for the caller;
//! * **a `Call` asks for audio**: [`Output::Play`] carries the IVR's playlist of
//!   [`Prompt`]s (greeting, announcements, menu, digits …);
//! * **audio becomes RTP**: the shell's media engine, told where and how to send by
//!   [`Output::Media`], paces the prompt's G.711 frames at 20 ms with an
//!   [`crate::rtp::OutboundStream`], and reports [`Input::PlaybackFinished`].
//!
//! ## Run loop
//!
//! ```text
//! call.handle_sip_request(now, &incoming)?   // or handle_sip_response / handle_rtp / handle_input
//! call.handle_timeout(now)                   // when poll_timeout's deadline passed
//! while let Some(n) = call.poll_transmit(&mut buf) { send buf[..n] to the gateway }
//! while let Some(out) = call.poll_output() { media / play / book / event }
//! re-arm the call's timer from call.poll_timeout()
//! drop the call once call.is_done()
//! ```
//!
//! ## DTMF
//!
//! RFC 4733 telephone-events are used whenever they were negotiated. Only when they were
//! not does the call run the in-band Goertzel detector over the decoded audio: that costs
//! about 1,300 multiply-adds per 20 ms packet, which is fine as a fallback but not worth
//! paying on every call of a 10,000-call node whose gateway sends telephone-events anyway.
//!
//! ## Events
//!
//! Every [`Output::Event`] carries the call's `call_seq` (1, 2, 3 …, assigned when the event
//! is polled, so they are ordered exactly as the shell sees them). `call.offered` is always the
//! first and `call.ended` always the last event of a call.

use core::net::SocketAddr;

use heapless::Deque;

use crate::dtmf::goertzel::InbandDetector;
use crate::dtmf::rfc4733::{EventDetector, EventPacket};
use crate::dtmf::Digit;
use crate::event::{CallSeq, Codec as EventCodec, EndReason};
use crate::g711::Law;
use crate::ids::{AnnouncementHandle, CallId};
use crate::ivr::{self, AnnouncementInfo, BookingResult, Ivr, Playlist};
use crate::limits::{CALL_MAX_PENDING, G711_FRAME_BYTES};
use crate::number::PhoneNumber;
use crate::rtp::{
    self, rtcp, InboundStream, PayloadType, Received, RtpPacket, Ssrc, TelephoneEvent,
};
use crate::sdp::{self, Answer, Codec, Offer};
use crate::sip::uas::{self, BodylessDialog, TerminationReason};
use crate::sip::{Incoming, IncomingResponse, Method};
use crate::time::{Duration, Instant};

pub use crate::ivr::Prompt;

#[cfg(test)]
pub(crate) mod tests;

/// Largest SDP body the call writes (our answer or offer is about 250 bytes).
const SDP_BUF: usize = 768;

/// Node-wide settings every call shares (the shell builds one at start-up and leaks it).
#[derive(Copy, Clone, Debug)]
pub struct Config {
    /// SIP timers, Contact, Via.
    pub sip: &'static uas::Config,
    /// Codecs accepted and preferred.
    pub sdp: sdp::Config,
    /// The caller-facing flow.
    pub ivr: ivr::Config,
    /// Inbound RTP bookkeeping.
    pub rtp: rtp::Config,
    /// Where "0 for an agent" transfers to (`ivr.transfer_uri`); `None` disables the option.
    pub transfer_uri: Option<&'static str>,
    /// Hang up when no RTP arrived for this long on an answered call that is not on hold and
    /// that did send RTP before (a dead gateway). `None` disables it.
    pub media_timeout: Option<Duration>,
    /// After a transfer was accepted (202), wait this long for the gateway's NOTIFY 200 or BYE
    /// before the node sends BYE itself.
    pub transfer_linger: Duration,
    /// Run the in-band (Goertzel) detector when telephone-event was not negotiated.
    pub inband_dtmf: bool,
    /// Ring (180) this long before answering; zero answers at once.
    pub answer_delay: Duration,
}

impl Config {
    /// Defaults around the given SIP settings.
    #[must_use]
    pub fn new(sip: &'static uas::Config) -> Config {
        Config {
            sip,
            sdp: sdp::Config::default(),
            ivr: ivr::Config::default(),
            rtp: rtp::Config::default(),
            transfer_uri: None,
            media_timeout: Some(Duration::from_secs(60)),
            transfer_linger: Duration::from_secs(8),
            inband_dtmf: true,
            answer_delay: Duration::ZERO,
        }
    }
}

/// What the shell chose for a new call (randomness and local resources are inputs).
#[derive(Copy, Clone, Debug)]
pub struct Setup {
    /// The node-local call id.
    pub id: CallId,
    /// Our SIP To tag (random).
    pub local_tag: u64,
    /// The local RTP address given to this call (in the SDP).
    pub local_rtp: SocketAddr,
    /// SDP `o=` session id (random or clock-derived).
    pub session_id: u64,
}

/// An input to a call other than SIP and RTP.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// The latest [`Output::Play`] played to its end.
    PlaybackFinished,
    /// The outcome of the latest [`Output::BookCallback`].
    BookingResult(BookingResult),
    /// The node is shutting down: hang up now.
    Shutdown,
}

/// What the shell's media engine should do for this call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Media {
    /// Open the media path: send `codec` with `payload_type` to `remote` (when `send`), receive
    /// on the call's local RTP address.
    Start {
        /// Where to send RTP (`None`: not yet known, e.g. old-style hold).
        remote: Option<SocketAddr>,
        /// The G.711 law.
        codec: Codec,
        /// The RTP payload type for the audio.
        payload_type: PayloadType,
        /// The telephone-event payload type, when negotiated.
        telephone_event: Option<PayloadType>,
        /// Whether to send at all (false on hold).
        send: bool,
    },
    /// Send to this address from now on (symmetric RTP latched onto where the caller's RTP
    /// really comes from, or a re-INVITE moved it).
    Remote(SocketAddr),
    /// Hold (`false`) or resume (`true`) sending.
    Send(bool),
    /// Close the media path.
    Stop,
}

/// What happened on the call, for the CRM; the shell turns it into a CallEvent
/// (`event::EventKind`), resolving announcement handles to id and version and adding the
/// callback id it booked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `call.offered`.
    Offered {
        /// Caller number, when the From URI held one.
        caller: Option<PhoneNumber>,
        /// Dialled number, when the To/Request-URI held one.
        dialled: Option<PhoneNumber>,
    },
    /// `call.answered`.
    Answered {
        /// The codec.
        codec: EventCodec,
    },
    /// `announcement.started`.
    AnnouncementStarted(AnnouncementHandle),
    /// `announcement.completed`.
    AnnouncementCompleted {
        /// Which.
        handle: AnnouncementHandle,
        /// Cut short by a key or a hang-up.
        interrupted: bool,
    },
    /// `dtmf`.
    Dtmf(Digit),
    /// `callback.requested`: the booking was confirmed durable by the shell.
    CallbackBooked {
        /// The number the node will call back.
        number: PhoneNumber,
        /// Position in the queue.
        position: u16,
    },
    /// `call.transferred`.
    Transferred {
        /// The REFER target.
        target: &'static str,
    },
    /// `call.ended`: always the last event of a call.
    Ended {
        /// Why.
        reason: EndReason,
        /// From the INVITE to the end.
        duration: Duration,
        /// From the answer to the end (zero when never answered).
        answered: Duration,
    },
}

/// An output of the call (datagrams come out of [`Call::poll_transmit`] instead).
///
/// Transient like the IVR's outputs: polled and consumed at once, never stored per call, so
/// the playlist inline is fine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// Start, redirect, hold or stop the media path.
    Media(Media),
    /// Stop what plays and play this playlist; report [`Input::PlaybackFinished`] when it
    /// played to its end.
    Play(Playlist),
    /// Stop playing (barge-in with nothing new to play yet).
    StopPlayback,
    /// Compute the callback offers now and hand them to [`Call::offer_windows`].
    OfferWindows,
    /// Book a callback durably, then report [`Input::BookingResult`].
    BookCallback {
        /// The number to call back.
        number: PhoneNumber,
        /// The window the caller chose; `None`: as soon as possible.
        window: Option<crate::callback::Window>,
    },
    /// The caller chose language `l` (an index into the node's languages): select the
    /// call's announcements for it and hand them over with [`Call::set_announcements`].
    Language(u8),
    /// An event for the CRM, with the call's `call_seq`.
    Event {
        /// Order within the call (1, 2, …).
        call_seq: u32,
        /// What happened.
        event: Event,
    },
}

/// What the peer's RTCP receiver reports said about the stream the node sends (RFC 3550
/// §6.4.1), for `ccedge calls`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PeerReport {
    /// RTCP compound packets read from the peer.
    pub packets: u32,
    /// Fraction of our packets the peer lost in its last interval, in 1/256.
    pub fraction_lost: u8,
    /// Our packets the peer lost in all.
    pub cumulative_lost: i32,
    /// Interarrival jitter the peer measured, in milliseconds (8 kHz clock).
    pub jitter_ms: u32,
    /// Round trip from the peer's LSR/DLSR, in milliseconds; `None` before the peer has
    /// answered one of our SRs.
    pub rtt_ms: Option<u32>,
    /// The peer said BYE on RTCP.
    pub bye: bool,
}

impl PeerReport {
    /// Nothing heard yet.
    pub const NONE: PeerReport = PeerReport {
        packets: 0,
        fraction_lost: 0,
        cumulative_lost: 0,
        jitter_ms: 0,
        rtt_ms: None,
        bye: false,
    };
}

/// Why the shell's input was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The SIP layer refused the message or command.
    Sip(uas::Error),
    /// The IVR refused the input (e.g. a booking result when none is pending).
    Ivr(ivr::Error),
    /// Too many outputs are waiting: drain [`Call::poll_output`] first.
    Backlog,
    /// An RTP packet that is not RTP or not for this call's media.
    Rtp,
    /// An RTP packet from a source this call does not take media from (see
    /// [`Call::handle_rtp`]).
    RtpSource,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Sip(e) => write!(f, "sip: {e}"),
            Error::Ivr(e) => write!(f, "ivr: {e}"),
            Error::Backlog => f.write_str("call outputs not drained"),
            Error::Rtp => f.write_str("not an RTP packet for this call"),
            Error::RtpSource => f.write_str("RTP from a source this call does not take media from"),
        }
    }
}

impl core::error::Error for Error {}

impl From<uas::Error> for Error {
    fn from(e: uas::Error) -> Self {
        Error::Sip(e)
    }
}

/// Where the call is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Phase {
    /// 2xx with our offer sent (offer-less INVITE), waiting for the ACK with the answer.
    AwaitingAnswer,
    /// Answered: media flows and the IVR runs.
    Answered,
    /// Refused with a final non-2xx (488, 415 …).
    Rejected,
    /// The dialog ended; the SIP layer may still absorb retransmissions.
    Ended,
}

/// Compact queued items (the rich [`Output`] is built when polled).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Pending {
    MediaStart,
    MediaRemote,
    MediaSend(bool),
    MediaStop,
    StopPlayback,
    Offered,
    Answered,
    Dtmf(Digit),
    Ended(EndReason),
}

/// The negotiated media of an answered call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct MediaState {
    law: Law,
    payload_type: PayloadType,
    telephone_event: Option<PayloadType>,
    /// Where we send (SDP, then latched to the real source).
    remote: Option<SocketAddr>,
    sending: bool,
    latched: bool,
    /// RTCP shares the RTP port (RFC 5761, the offer had `a=rtcp-mux`).
    rtcp_mux: bool,
    /// The peer's `a=rtcp` port (RFC 3605), when it named one.
    rtcp_port: Option<u16>,
}

/// A 200 OK prepared but not sent yet (ringing first).
#[derive(Copy, Clone, Debug)]
enum Deferred {
    Answer(MediaState),
    Offer,
}

/// Two socket addresses are the same endpoint (an IPv4 peer may show up IPv4-mapped on a
/// dual-stack socket).
fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

impl MediaState {
    const CLOSED: MediaState = MediaState {
        law: Law::Ulaw,
        payload_type: PayloadType::PCMU,
        telephone_event: None,
        remote: None,
        sending: false,
        latched: false,
        rtcp_mux: false,
        rtcp_port: None,
    };

    fn from_negotiated(n: &sdp::Negotiated) -> MediaState {
        MediaState {
            law: match n.codec {
                Codec::Pcmu => Law::Ulaw,
                Codec::Pcma => Law::Alaw,
            },
            payload_type: n.payload_type,
            telephone_event: n.telephone_event.map(|t| t.payload_type),
            remote: n.remote,
            sending: n.sends(),
            latched: false,
            rtcp_mux: n.rtcp_mux,
            rtcp_port: n.remote_rtcp_port,
        }
    }

    /// Whether media from `from` is heard (the rule of [`Call::handle_rtp`]).
    fn accepts(&self, from: SocketAddr, trusted: bool) -> bool {
        match self.remote {
            Some(r) if self.latched => same_addr(r, from),
            // Any port of the SDP's address (the SDP's own port included).
            Some(r) => trusted || r.ip().to_canonical() == from.ip().to_canonical(),
            None => trusted,
        }
    }

    fn codec(&self) -> Codec {
        match self.law {
            Law::Ulaw => Codec::Pcmu,
            Law::Alaw => Codec::Pcma,
        }
    }
}

/// Our side of the SDP exchange, kept for re-INVITEs and offer-less INVITEs.
#[derive(Copy, Clone, Debug)]
enum LocalSdp {
    Answer(Answer),
    Offer(Offer),
}

/// One call. See the module docs for the run loop; `size_of::<Call>()` is asserted in tests.
#[derive(Debug)]
pub struct Call {
    cfg: &'static Config,
    id: CallId,
    dialog: BodylessDialog,
    ivr: Ivr,
    local_sdp: LocalSdp,
    local_rtp: SocketAddr,
    media: Option<MediaState>,
    inbound: InboundStream,
    /// Receiver-report bookkeeping for the RTCP the shell sends (RFC 3550 A.3).
    rtcp: rtcp::ReportState,
    /// What the peer's RTCP said about the stream the node sends.
    peer_report: PeerReport,
    rfc4733: EventDetector,
    inband: InbandDetector,
    caller: Option<PhoneNumber>,
    dialled: Option<PhoneNumber>,
    booking: Option<PhoneNumber>,
    pending: Deque<Pending, CALL_MAX_PENDING>,
    call_seq: CallSeq,
    phase: Phase,
    ivr_started: bool,
    end_reason: Option<EndReason>,
    ended_emitted: bool,
    /// The ACK for our 2xx arrived. Until then no RTP is sent: an unconfirmed call (a flood
    /// that never ACKs, a forged INVITE naming someone else's media address) costs the node
    /// a dialog and a port, never a media stream towards the address it named.
    acked: bool,
    started_at: Instant,
    answered_at: Option<Instant>,
    ended_at: Option<Instant>,
    last_rtp: Option<Instant>,
    hangup_at: Option<Instant>,
    hanging_up: bool,
    deferred: Option<Deferred>,
    answer_at: Option<Instant>,
    /// Set while a booking is with the shell: `call.ended` waits for its outcome (so
    /// `callback.requested` never follows `call.ended`), at most until this deadline.
    booking_deadline: Option<Instant>,
    now: Instant,
}

impl Call {
    /// Creates the call for a new INVITE (one that [`crate::sip::endpoint::verdict`] said may
    /// create a dialog) and answers it (at once, or after ringing for
    /// [`Config::answer_delay`]): 200 OK with our SDP answer when the INVITE
    /// carried an offer we can meet, 488 when it offered no codec we speak, 415 for a body
    /// that is not SDP, 200 OK with our offer for an offer-less INVITE.
    ///
    /// `announcements` are the ones selected for this caller, by priority
    /// ([`crate::announce::AnnouncementSet::select`]); use [`numbers`] to get the caller and
    /// dialled numbers for that selection.
    ///
    /// # Errors
    /// [`Error::Sip`] when no dialog can be built from the INVITE (the shell answers it
    /// statelessly through [`crate::sip::endpoint::respond`] with 400 or 500).
    pub fn new(
        now: Instant,
        cfg: &'static Config,
        setup: &Setup,
        invite: &Incoming<'_>,
        announcements: &[AnnouncementInfo],
    ) -> Result<Call, Error> {
        Call::new_in(now, cfg, setup, invite, announcements, 0)
    }

    /// [`Call::new`] for a caller whose IVR starts in `language` (an index into the node's
    /// languages, 0 = the default; see [`crate::ivr`], "Languages").
    ///
    /// # Errors
    /// As [`Call::new`].
    pub fn new_in(
        now: Instant,
        cfg: &'static Config,
        setup: &Setup,
        invite: &Incoming<'_>,
        announcements: &[AnnouncementInfo],
        language: u8,
    ) -> Result<Call, Error> {
        let dialog = BodylessDialog::new_bodyless(now, invite, cfg.sip, setup.local_tag)?;
        let (caller, dialled) = numbers(invite);
        let mut ivr_cfg = cfg.ivr;
        ivr_cfg.transfer_available = cfg.transfer_uri.is_some();
        let mut ivr = Ivr::new(&ivr_cfg, caller.clone(), announcements);
        ivr.set_language(language);
        // A placeholder until the offer/answer below replaces it.
        let placeholder =
            Offer::new(&cfg.sdp, setup.local_rtp, setup.session_id, 1).map_err(|_| Error::Rtp)?;
        let mut call = Call {
            cfg,
            id: setup.id,
            dialog,
            ivr,
            local_sdp: LocalSdp::Offer(placeholder),
            local_rtp: setup.local_rtp,
            media: None,
            inbound: InboundStream::new(),
            rtcp: rtcp::ReportState::new(),
            peer_report: PeerReport::NONE,
            rfc4733: EventDetector::new(),
            inband: InbandDetector::new(),
            caller,
            dialled,
            booking: None,
            pending: Deque::new(),
            call_seq: CallSeq::new(),
            phase: Phase::AwaitingAnswer,
            ivr_started: false,
            end_reason: None,
            ended_emitted: false,
            acked: false,
            started_at: now,
            answered_at: None,
            ended_at: None,
            last_rtp: None,
            hangup_at: None,
            hanging_up: false,
            deferred: None,
            answer_at: None,
            booking_deadline: None,
            now,
        };
        call.push(Pending::Offered);
        call.answer_initial(now, invite, setup.session_id)?;
        Ok(call)
    }

    fn answer_initial(
        &mut self,
        now: Instant,
        invite: &Incoming<'_>,
        session_id: u64,
    ) -> Result<(), Error> {
        if invite.body.is_empty() {
            // Offer-less INVITE: we offer in the 200 OK, the ACK carries the answer.
            self.deferred = Some(Deferred::Offer);
        } else if !is_sdp(invite.content_type) {
            return self.reject(now, 415);
        } else {
            let parsed = sdp::parse(invite.body);
            let negotiated = match parsed.and_then(|o| sdp::negotiate(&o, &self.cfg.sdp)) {
                Ok(n) => n,
                Err(_) => return self.reject(now, 488),
            };
            self.local_sdp = LocalSdp::Answer(negotiated.answer(self.local_rtp, session_id, 1));
            self.deferred = Some(Deferred::Answer(MediaState::from_negotiated(&negotiated)));
        }
        if self.cfg.answer_delay.is_zero() {
            self.complete_answer(now)
        } else {
            self.dialog.ring(now)?;
            self.answer_at = Some(now + self.cfg.answer_delay);
            Ok(())
        }
    }

    /// Sends the 200 OK prepared by `answer_initial` (at once, or after the ringing delay).
    fn complete_answer(&mut self, now: Instant) -> Result<(), Error> {
        self.answer_at = None;
        let Some(deferred) = self.deferred.take() else {
            return Ok(());
        };
        if self.dialog.state() != uas::DialogState::Early {
            return Ok(()); // cancelled while ringing
        }
        // The body is rendered from `local_sdp` whenever the 2xx is (re)transmitted.
        self.dialog.answer(now, &[])?;
        match deferred {
            Deferred::Answer(media) => self.start_media(now, media),
            Deferred::Offer => self.answered_at = Some(now),
        }
        Ok(())
    }

    fn reject(&mut self, now: Instant, status: u16) -> Result<(), Error> {
        self.dialog.reject(now, status)?;
        self.phase = Phase::Rejected;
        self.end_reason = Some(EndReason::Rejected);
        Ok(())
    }

    fn start_media(&mut self, now: Instant, media: MediaState) {
        self.media = Some(media);
        self.phase = Phase::Answered;
        if self.answered_at.is_none() {
            self.answered_at = Some(now);
        }
        // `rtp.media_timeout` counts from the answer: a peer that never sends RTP is as dead
        // as one that stopped.
        self.last_rtp.get_or_insert(now);
        self.push(Pending::Answered);
        self.push(Pending::MediaStart);
        self.start_ivr(now);
    }

    /// Starts the IVR once the call has media and the caller's ACK came: no RTP goes out
    /// before the ACK, and a playlist started earlier would play its first second unheard
    /// (the pacer's clock runs on while it holds).
    fn start_ivr(&mut self, now: Instant) {
        if !self.ivr_started && self.acked && self.media.is_some() && !self.hanging_up {
            self.ivr_started = true;
            let _ = self.ivr.handle_input(now, ivr::Input::Start);
        }
    }

    // ---- accessors -------------------------------------------------------------------------

    /// The node-local call id.
    #[must_use]
    pub fn id(&self) -> CallId {
        self.id
    }

    /// The caller number, when presented.
    #[must_use]
    pub fn caller(&self) -> Option<&PhoneNumber> {
        self.caller.as_ref()
    }

    /// The dialled number, when known.
    #[must_use]
    pub fn dialled(&self) -> Option<&PhoneNumber> {
        self.dialled.as_ref()
    }

    /// The SIP Call-ID (bytes as the gateway sent them), for routing datagrams to this call.
    #[must_use]
    pub fn sip_call_id(&self) -> &[u8] {
        self.dialog.call_id()
    }

    /// Where the call is.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The negotiated codec, once answered.
    #[must_use]
    pub fn codec(&self) -> Option<Codec> {
        self.media.map(|m| m.codec())
    }

    /// Receive statistics of the caller's RTP.
    #[must_use]
    pub fn rtp_stats(&self) -> rtp::InboundStats {
        self.inbound.stats()
    }

    /// What the peer's RTCP said about the stream the node sends.
    #[must_use]
    pub fn peer_report(&self) -> PeerReport {
        self.peer_report
    }

    /// Where the node's RTCP for this call goes: the media address itself with rtcp-mux, the
    /// peer's `a=rtcp` port (RFC 3605), otherwise the port above the media port (RFC 3550
    /// §11). `None` while the call has no media peer.
    #[must_use]
    pub fn rtcp_target(&self) -> Option<SocketAddr> {
        let m = self.media?;
        if self.phase != Phase::Answered || self.hanging_up {
            return None;
        }
        let mut r = m.remote?;
        if !m.rtcp_mux {
            r.set_port(match m.rtcp_port {
                Some(p) => p,
                None => r.port().checked_add(1)?,
            });
        }
        Some(r)
    }

    /// The report block about the peer's stream for an RTCP report the shell sends `now`
    /// (moves the loss interval on); `None` before the peer's first RTP packet.
    pub fn rtcp_block(&mut self, now: Instant) -> Option<rtcp::ReportBlock> {
        self.now = now;
        self.rtcp.block(&self.inbound.stats(), now)
    }

    /// Feeds one RTCP compound packet from `from` (on the RTP port with rtcp-mux, or wherever
    /// the shell receives RTCP). `ours` is the SSRC of the stream the shell sends; `arrival` is
    /// the NTP time it arrived (for the round trip). RTCP is heard only from the media peer's
    /// address (any port: RTCP comes from the port above RTP) or a `trusted` source.
    ///
    /// # Errors
    /// [`Error::Rtp`] when it does not parse or the call has no media; [`Error::RtpSource`]
    /// when it comes from elsewhere.
    pub fn handle_rtcp(
        &mut self,
        now: Instant,
        arrival: u64,
        from: SocketAddr,
        trusted: bool,
        datagram: &[u8],
        ours: Ssrc,
    ) -> Result<(), Error> {
        self.now = now;
        let Some(media) = self.media else {
            return Err(Error::Rtp);
        };
        if self.phase != Phase::Answered || self.hanging_up {
            return Err(Error::Rtp);
        }
        let peer_ip = media.remote.map(|r| r.ip().to_canonical());
        if !trusted && peer_ip != Some(from.ip().to_canonical()) {
            return Err(Error::RtpSource);
        }
        let parsed = rtcp::parse(datagram, ours).map_err(|_| Error::Rtp)?;
        let r = &mut self.peer_report;
        r.packets = r.packets.saturating_add(1);
        r.bye |= parsed.bye;
        if let Some(ntp) = parsed.sender_ntp {
            self.rtcp.on_sender_report(ntp, now);
        }
        if let Some(b) = parsed.about_us {
            r.fraction_lost = b.fraction_lost;
            r.cumulative_lost = b.cumulative_lost;
            r.jitter_ms = b.jitter / 8;
            if let Some(rtt) = b.round_trip(rtcp::ntp_middle(arrival)) {
                r.rtt_ms = Some(rtcp::units_to_ms(rtt));
            }
        }
        Ok(())
    }

    /// When the INVITE arrived.
    #[must_use]
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// Whether everything is over: the dialog absorbed its last retransmission and every
    /// output was drained. The shell drops the call then.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.dialog.is_done() && self.ended_emitted && self.pending.is_empty()
    }

    // ---- inputs ----------------------------------------------------------------------------

    /// Feeds a SIP request whose Call-ID is this call's (INVITE retransmission, ACK, BYE,
    /// CANCEL, re-INVITE, OPTIONS, INFO …). Call it for every such request, then drain.
    ///
    /// # Errors
    /// [`Error::Sip`] when the dialog refused it (it has already queued any error response).
    pub fn handle_sip_request(&mut self, now: Instant, req: &Incoming<'_>) -> Result<(), Error> {
        self.now = now;
        let r = self.dialog.handle_request(now, req);
        if req.method == Method::Ack && self.phase == Phase::AwaitingAnswer {
            self.on_ack_with_answer(now, req);
        }
        self.pump_dialog(now, Some(req));
        r.map_err(Error::Sip)
    }

    /// Feeds a SIP response whose Call-ID is this call's (to our BYE or REFER).
    ///
    /// # Errors
    /// [`Error::Sip`] when it matches no transaction of ours.
    pub fn handle_sip_response(
        &mut self,
        now: Instant,
        resp: &IncomingResponse<'_>,
    ) -> Result<(), Error> {
        self.now = now;
        let r = self.dialog.handle_response(now, resp);
        self.pump_dialog(now, None);
        r.map_err(Error::Sip)
    }

    /// Feeds one datagram that arrived on the call's RTP port from `from`. Garbage and packets
    /// from a foreign SSRC are ignored (counted in the inbound stats); telephone-events and,
    /// without them, in-band tones become key presses.
    ///
    /// Media is taken from one source only. Until the first packet is accepted, that is the
    /// address the SDP gave, any port of its IP address (a NAT that moved the port), or a
    /// source the shell calls `trusted` (one of its signalling peers: symmetric RTP from a
    /// gateway whose SDP names another address). The first accepted packet latches the call
    /// onto its source, and from then on only that exact address is heard, whatever SSRC it
    /// sends: a packet from anywhere else is refused before it can touch the stream's state,
    /// so nobody on the path can inject key presses or steal the call's audio. Only a new SDP
    /// (re-INVITE) moves the media somewhere else.
    ///
    /// # Errors
    /// [`Error::Rtp`] when the datagram is not RTP or the call has no media;
    /// [`Error::RtpSource`] when it comes from a source the call does not take media from.
    pub fn handle_rtp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        trusted: bool,
        datagram: &[u8],
    ) -> Result<(), Error> {
        self.now = now;
        let Some(media) = self.media else {
            return Err(Error::Rtp);
        };
        if self.phase != Phase::Answered || self.hanging_up {
            return Err(Error::Rtp);
        }
        if !media.accepts(from, trusted) {
            return Err(Error::RtpSource);
        }
        let packet = RtpPacket::parse(datagram).map_err(|_| Error::Rtp)?;
        let pt = packet.payload_type();
        if pt != media.payload_type && Some(pt) != media.telephone_event {
            return Err(Error::Rtp);
        }
        match self.inbound.on_packet(now, &packet.header(), &self.cfg.rtp) {
            Received::Duplicate | Received::Jump | Received::OtherSsrc => return Ok(()),
            // A new SSRC (first packet, or a relock after silence) from the one source the
            // call takes media from: the stream restarted there, the address stays.
            Received::Locked | Received::InOrder { .. } | Received::Late | Received::Resynced => {}
        }
        self.last_rtp = Some(now);
        self.latch(from);
        if Some(pt) == media.telephone_event {
            if let Ok(ev) = TelephoneEvent::parse(packet.payload()) {
                let _ = self.rfc4733.handle_event(
                    now,
                    EventPacket {
                        rtp_timestamp: packet.timestamp(),
                        seq: packet.sequence(),
                        event_code: ev.event(),
                        end: ev.is_end(),
                        volume: ev.volume(),
                        duration: ev.duration(),
                    },
                );
            }
            while let Some(d) = self.rfc4733.poll_output() {
                self.on_digit(now, d);
            }
        } else if media.telephone_event.is_none() && self.cfg.inband_dtmf {
            let mut pcm = [0i16; G711_FRAME_BYTES];
            for chunk in packet.payload().chunks(G711_FRAME_BYTES) {
                let n = media.law.decode(chunk, &mut pcm).unwrap_or(0);
                let _ = self.inband.handle_samples(pcm.get(..n).unwrap_or(&[]));
                while let Some(d) = self.inband.poll_digit() {
                    self.on_digit(now, d);
                }
            }
        }
        Ok(())
    }

    /// Feeds a shell input (playback finished, booking outcome, shutdown).
    ///
    /// # Errors
    /// [`Error::Ivr`] when the IVR did not expect it (e.g. a booking result with no booking
    /// pending); nothing changes then.
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), Error> {
        self.now = now;
        match input {
            Input::PlaybackFinished => self
                .ivr
                .handle_input(now, ivr::Input::PlaybackFinished)
                .map_err(Error::Ivr),
            Input::BookingResult(r) => {
                self.booking_deadline = None;
                self.ivr
                    .handle_input(now, ivr::Input::BookingResult(r))
                    .map_err(Error::Ivr)
            }
            Input::Shutdown => {
                self.hangup(now, EndReason::Shutdown);
                Ok(())
            }
        }
    }

    /// The callback offers asked for with [`Output::OfferWindows`] (the first is the default).
    ///
    /// # Errors
    /// [`Error::Ivr`] when the IVR did not ask for them.
    pub fn offer_windows(
        &mut self,
        now: Instant,
        offers: &[crate::callback::window::Offer],
    ) -> Result<(), Error> {
        self.now = now;
        self.ivr.offer_windows(now, offers).map_err(Error::Ivr)
    }

    /// Call when the deadline from [`Call::poll_timeout`] has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.dialog.handle_timeout(now);
        self.pump_dialog(now, None);
        if self.answer_at.is_some_and(|t| t <= now) {
            let _ = self.complete_answer(now);
            self.pump_dialog(now, None);
        }
        if self.ivr_started && !self.ivr.is_ended() {
            self.ivr.handle_timeout(now);
        }
        if self.booking_deadline.is_some_and(|t| t <= now) {
            self.booking_deadline = None;
        }
        if self.hangup_at.is_some_and(|t| t <= now) {
            self.hangup_at = None;
            self.hangup(now, EndReason::Transferred);
        }
        if let (Some(limit), Some(last)) = (self.cfg.media_timeout, self.last_rtp) {
            let holding = self.media.is_some_and(|m| !m.sending);
            if self.phase == Phase::Answered && !holding && now - last >= limit {
                self.last_rtp = None;
                self.hangup(now, EndReason::MediaTimeout);
            }
        }
    }

    // ---- outputs ---------------------------------------------------------------------------

    /// Writes the next SIP datagram for the gateway into `buf` and returns its length. Call
    /// until `None` after every `handle_*`. The destination is where the call's requests come
    /// from (the shell keeps the gateway's address).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<usize> {
        if !self.dialog.wants_transmit() {
            return None;
        }
        // The dialog keeps no copy of the SDP: render ours (about 250 bytes) for any 2xx.
        let mut sdp = [0u8; SDP_BUF];
        let n = match self.local_sdp {
            LocalSdp::Offer(offer) => offer.emit(&mut sdp),
            LocalSdp::Answer(answer) => answer.emit(&mut sdp),
        }
        .unwrap_or(0);
        let body = sdp.get(..n).unwrap_or(&[]);
        loop {
            match self.dialog.poll_transmit_with(buf, Some(body))? {
                Ok(n) => return Some(n),
                // A buffer of SIP_MAX_DATAGRAM always fits; a smaller one skips the datagram
                // (the retransmission timer sends it again).
                Err(_) => continue,
            }
        }
    }

    /// Where the datagram last written by [`Call::poll_transmit`] goes (see
    /// [`crate::sip::uas::Dialog::destination`]); `None` when the dialog does not know, and
    /// the owner sends to the address the call's requests come from.
    #[must_use]
    pub fn sip_destination(&self) -> Option<SocketAddr> {
        self.dialog.destination()
    }

    /// The transport of the call's SIP (the INVITE's).
    #[must_use]
    pub fn sip_transport(&self) -> crate::sip::route::Transport {
        self.dialog.transport()
    }

    /// The call's language (index into the node's languages): where it started, or what the
    /// caller chose since.
    #[must_use]
    pub fn language(&self) -> u8 {
        self.ivr.language()
    }

    /// The answer to [`Output::Language`]: the announcements selected for the chosen
    /// language, by priority. Then drain [`Call::poll_output`].
    ///
    /// # Errors
    /// [`Error::Ivr`] when no language choice waits for its announcements.
    pub fn set_announcements(&mut self, announcements: &[AnnouncementInfo]) -> Result<(), Error> {
        self.ivr
            .set_announcements(announcements)
            .map_err(Error::Ivr)
    }

    /// The next output. Call until `None` after every `handle_*`.
    pub fn poll_output(&mut self) -> Option<Output> {
        let now = self.now;
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Some(self.render(p));
            }
            // IVR outputs are turned into call outputs one at a time, so playlists are never
            // stored per call.
            match self.ivr.poll_output() {
                Some(o) => {
                    if let Some(out) = self.translate_ivr(now, o) {
                        return Some(out);
                    }
                }
                None => {
                    if self.end_reason.is_some()
                        && !self.ended_emitted
                        && self.dialog_over()
                        && self.booking_deadline.is_none()
                    {
                        self.ended_emitted = true;
                        let reason = self.end_reason.unwrap_or(EndReason::Error);
                        return Some(self.render(Pending::Ended(reason)));
                    }
                    return None;
                }
            }
        }
    }

    /// The next deadline of the call (SIP timers, IVR timers, media timeout).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.dialog.poll_timeout();
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |x| x.min(d)));
            }
        };
        if self.ivr_started && !self.ivr.is_ended() {
            consider(self.ivr.poll_timeout());
        }
        consider(self.hangup_at);
        consider(self.answer_at);
        consider(self.booking_deadline);
        // Same condition as handle_timeout: no media deadline while on hold (a deadline that
        // handle_timeout would not act on would make the shell's timer spin).
        let holding = self.media.is_some_and(|m| !m.sending);
        if let (Some(limit), Some(last), Phase::Answered, false) =
            (self.cfg.media_timeout, self.last_rtp, self.phase, holding)
        {
            consider(Some(last + limit));
        }
        t
    }

    // ---- internals -------------------------------------------------------------------------

    fn push(&mut self, p: Pending) {
        // The queue holds what one input can produce; if it overflows, the oldest media
        // command is superseded anyway, and events are never dropped silently: they are
        // counted as suppressed by the call_seq counter.
        if self.pending.push_back(p).is_err() {
            let _ = self.call_seq.next();
        }
    }

    fn dialog_over(&self) -> bool {
        self.dialog.state() == uas::DialogState::Terminated
    }

    fn render(&mut self, p: Pending) -> Output {
        let event = match p {
            Pending::MediaStart => {
                let m = self.media.unwrap_or(MediaState::CLOSED);
                return Output::Media(Media::Start {
                    remote: m.remote,
                    codec: m.codec(),
                    payload_type: m.payload_type,
                    telephone_event: m.telephone_event,
                    send: m.sending && self.acked,
                });
            }
            Pending::MediaRemote => match self.media.and_then(|m| m.remote) {
                Some(r) => return Output::Media(Media::Remote(r)),
                None => return Output::Media(Media::Send(false)),
            },
            Pending::MediaSend(on) => return Output::Media(Media::Send(on && self.acked)),
            Pending::MediaStop => return Output::Media(Media::Stop),
            Pending::StopPlayback => return Output::StopPlayback,
            Pending::Offered => Event::Offered {
                caller: self.caller.clone(),
                dialled: self.dialled.clone(),
            },
            Pending::Answered => Event::Answered {
                codec: match self.codec() {
                    Some(Codec::Pcma) => EventCodec::Pcma,
                    _ => EventCodec::Pcmu,
                },
            },
            Pending::Dtmf(d) => Event::Dtmf(d),
            Pending::Ended(reason) => {
                let end = self.ended_at.unwrap_or(self.now);
                Event::Ended {
                    reason,
                    duration: end - self.started_at,
                    answered: self.answered_at.map_or(Duration::ZERO, |a| end - a),
                }
            }
        };
        self.event(event)
    }

    fn event(&mut self, event: Event) -> Output {
        let call_seq = self.call_seq.next().unwrap_or(u32::MAX);
        Output::Event { call_seq, event }
    }

    fn translate_ivr(&mut self, now: Instant, o: ivr::Output) -> Option<Output> {
        match o {
            ivr::Output::Play(p) => Some(Output::Play(p)),
            ivr::Output::StopPlayback => Some(Output::StopPlayback),
            ivr::Output::OfferWindows => Some(Output::OfferWindows),
            ivr::Output::BookCallback { number, window } => {
                self.booking = Some(number.clone());
                self.booking_deadline =
                    Some(now + self.cfg.ivr.booking_timeout + Duration::from_secs(1));
                Some(Output::BookCallback { number, window })
            }
            ivr::Output::Transfer => {
                let ok = match self.cfg.transfer_uri {
                    Some(uri) => self.dialog.refer(now, uri).is_ok(),
                    None => false,
                };
                if !ok {
                    let _ = self
                        .ivr
                        .handle_input(now, ivr::Input::TransferResult(false));
                }
                None
            }
            ivr::Output::Hangup => {
                self.hangup(now, EndReason::NodeHangup);
                None
            }
            ivr::Output::Language(l) => Some(Output::Language(l)),
            ivr::Output::Event(e) => self.translate_ivr_event(e),
        }
    }

    fn translate_ivr_event(&mut self, e: ivr::Event) -> Option<Output> {
        // `call.ended` is always the last event of a call: an outcome that arrives later (a
        // booking whose write outlived the booking deadline) is not a call event any more.
        // The callback itself is in the queue and reaches the CRM as a CallbackRequest.
        if self.ended_emitted {
            return None;
        }
        let event = match e {
            ivr::Event::AnnouncementStarted(h) => Event::AnnouncementStarted(h),
            ivr::Event::AnnouncementCompleted {
                handle,
                interrupted,
            } => Event::AnnouncementCompleted {
                handle,
                interrupted,
            },
            ivr::Event::Dtmf(d) => Event::Dtmf(d),
            ivr::Event::CallbackBooked { position } => Event::CallbackBooked {
                number: self.booking.clone()?,
                position,
            },
            ivr::Event::Transferred => {
                self.end_reason.get_or_insert(EndReason::Transferred);
                Event::Transferred {
                    target: self.cfg.transfer_uri.unwrap_or(""),
                }
            }
            _ => return None,
        };
        Some(self.event(event))
    }

    fn on_digit(&mut self, now: Instant, d: Digit) {
        if self.ivr_started && !self.ivr.is_ended() {
            // The IVR reports the key itself (Event::Dtmf), in order with what it causes.
            let _ = self.ivr.handle_input(now, ivr::Input::Digit(d));
        } else {
            self.push(Pending::Dtmf(d));
        }
    }

    fn latch(&mut self, from: SocketAddr) {
        // A source that cannot be sent to (port 0, unspecified address) is never latched.
        if from.port() == 0 || from.ip().is_unspecified() {
            return;
        }
        let Some(m) = self.media.as_mut() else {
            return;
        };
        if !m.latched {
            m.latched = true;
            if m.remote != Some(from) {
                m.remote = Some(from);
                self.push(Pending::MediaRemote);
            }
        }
    }

    fn hangup(&mut self, now: Instant, reason: EndReason) {
        if self.dialog_over() || self.hanging_up {
            return;
        }
        self.hanging_up = true;
        self.end_reason.get_or_insert(reason);
        // For the caller the call ends with our BYE (or final response), not when the gateway
        // answers it: an unanswered BYE is retransmitted for 64·T1.
        self.ended_at.get_or_insert(now);
        // The flow is over for the IVR too: no prompt or timer may follow the hang-up.
        if self.ivr_started && !self.ivr.is_ended() {
            let _ = self.ivr.handle_input(now, ivr::Input::RemoteHangup);
        }
        if self.dialog.state() == uas::DialogState::Early {
            let _ = self.dialog.reject(now, 480);
        } else {
            let _ = self.dialog.hangup(now);
        }
        if self.media.is_some() {
            self.push(Pending::StopPlayback);
            self.push(Pending::MediaStop);
        }
        self.pump_dialog(now, None);
    }

    fn on_ack_with_answer(&mut self, now: Instant, ack: &Incoming<'_>) {
        let LocalSdp::Offer(offer) = self.local_sdp else {
            return;
        };
        let negotiated = sdp::parse(ack.body).and_then(|a| offer.accept_answer(&a));
        match negotiated {
            Ok(n) => self.start_media(now, MediaState::from_negotiated(&n)),
            // RFC 3261 §13.3.1.4: an unacceptable answer in the ACK ends the call with BYE.
            Err(_) => {
                self.phase = Phase::Answered;
                self.hangup(now, EndReason::Error);
            }
        }
    }

    fn on_reinvite(&mut self, now: Instant, req: &Incoming<'_>) {
        let mut answer = match self.local_sdp {
            LocalSdp::Answer(a) => a,
            LocalSdp::Offer(_) => {
                let _ = self.dialog.reject_reinvite(now, 491);
                return;
            }
        };
        if req.body.is_empty() {
            // A session refresh without SDP: repeat our current answer.
            let _ = self.dialog.answer_reinvite(now, &[]);
            return;
        }
        let negotiated = match sdp::parse(req.body).and_then(|o| sdp::negotiate(&o, &self.cfg.sdp))
        {
            Ok(n) => n,
            Err(_) => {
                let _ = self.dialog.reject_reinvite(now, 488);
                return;
            }
        };
        let next = negotiated.answer(
            self.local_rtp,
            answer.session_id,
            answer.session_version.wrapping_add(1),
        );
        answer = next;
        if self.dialog.answer_reinvite(now, &[]).is_err() {
            return;
        }
        self.local_sdp = LocalSdp::Answer(answer);
        let Some(m) = self.media.as_mut() else {
            return;
        };
        let sending = negotiated.sends();
        if negotiated.remote.is_some() && negotiated.remote != m.remote {
            m.remote = negotiated.remote;
            m.latched = false;
            self.push(Pending::MediaRemote);
        }
        if let Some(m) = self.media.as_mut() {
            m.rtcp_mux = negotiated.rtcp_mux;
            m.rtcp_port = negotiated.remote_rtcp_port;
        }
        let Some(m) = self.media.as_mut() else {
            return;
        };
        if sending != m.sending {
            m.sending = sending;
            self.push(Pending::MediaSend(sending));
            if sending {
                // Off hold: the media timeout starts again from now.
                self.last_rtp = Some(now);
            }
        }
    }

    fn pump_dialog(&mut self, now: Instant, req: Option<&Incoming<'_>>) {
        while let Some(ev) = self.dialog.poll_event() {
            match ev {
                uas::Event::ReInvite => {
                    if let Some(r) = req {
                        self.on_reinvite(now, r);
                    }
                }
                uas::Event::Terminated(reason) => {
                    let mapped = match reason {
                        TerminationReason::RemoteBye => EndReason::CallerHangup,
                        TerminationReason::LocalBye => EndReason::NodeHangup,
                        TerminationReason::AckTimeout | TerminationReason::ByeTimeout => {
                            EndReason::Error
                        }
                        TerminationReason::Cancelled => EndReason::Abandoned,
                        TerminationReason::Rejected => EndReason::Rejected,
                        TerminationReason::SessionExpired => EndReason::SessionExpired,
                    };
                    self.end_reason.get_or_insert(mapped);
                    self.ended_at.get_or_insert(now);
                    self.phase = Phase::Ended;
                    if self.ivr_started && !self.ivr.is_ended() {
                        let _ = self.ivr.handle_input(now, ivr::Input::RemoteHangup);
                    }
                    if self.media.is_some() && !self.hanging_up {
                        self.hanging_up = true;
                        self.push(Pending::StopPlayback);
                        self.push(Pending::MediaStop);
                    }
                }
                uas::Event::ReferAccepted => {
                    let _ = self.ivr.handle_input(now, ivr::Input::TransferResult(true));
                    self.hangup_at = Some(now + self.cfg.transfer_linger);
                }
                uas::Event::ReferFailed(_) => {
                    let _ = self
                        .ivr
                        .handle_input(now, ivr::Input::TransferResult(false));
                }
                uas::Event::ReferProgress(status) => {
                    if (200..300).contains(&status) {
                        self.hangup_at = None;
                        self.hangup(now, EndReason::Transferred);
                    }
                }
                uas::Event::Confirmed => {
                    if !self.acked {
                        self.acked = true;
                        if self.media.is_some_and(|m| m.sending) && !self.hanging_up {
                            self.push(Pending::MediaSend(true));
                        }
                        self.start_ivr(now);
                    }
                }
                uas::Event::Cancelled | uas::Event::ReInviteCancelled => {}
            }
        }
        if self.ivr.is_ended() && !self.dialog_over() && self.phase == Phase::Answered {
            // The flow is over (goodbye played, or transferred): make sure the call ends.
            if self.hangup_at.is_none() {
                self.hangup(now, EndReason::NodeHangup);
            }
        }
    }
}

fn is_sdp(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let main = ct.split(';').next().unwrap_or("").trim();
        main.eq_ignore_ascii_case("application/sdp")
    })
}

/// The caller number (From URI user part) and dialled number (To URI, else Request-URI user
/// part) of an INVITE, when they are E.164 numbers (with or without `+`).
#[must_use]
pub fn numbers(invite: &Incoming<'_>) -> (Option<PhoneNumber>, Option<PhoneNumber>) {
    let caller = uri_number(invite.from_uri);
    let dialled = uri_number(invite.to_uri).or_else(|| uri_number(invite.request_uri));
    (caller, dialled)
}

fn uri_number(uri: &str) -> Option<PhoneNumber> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
        .or_else(|| uri.strip_prefix("tel:"))?;
    let user = rest.split(['@', ';']).next()?;
    if user.eq_ignore_ascii_case("anonymous") {
        return None;
    }
    PhoneNumber::parse(user).ok()
}
