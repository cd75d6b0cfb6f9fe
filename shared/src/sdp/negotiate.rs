//! RFC 3264 answerer logic: pick the codec, DTMF, address and direction.

use core::net::{IpAddr, SocketAddr};

use super::{Direction, Error, Media, MediaKind, Proto, SessionDescription, SDP_MAX_MEDIA};
use crate::rtp::PayloadType;

/// The audio codecs ccedge speaks.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Codec {
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
}

impl Codec {
    /// The `rtpmap` encoding name.
    #[must_use]
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    /// The static payload type (RFC 3551).
    #[must_use]
    pub fn static_payload_type(self) -> PayloadType {
        match self {
            Codec::Pcmu => PayloadType::PCMU,
            Codec::Pcma => PayloadType::PCMA,
        }
    }
}

/// Which codec wins when both are offered.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Preference {
    /// The first one in the offer's format list (RFC 3264's advice).
    #[default]
    Offerer,
    /// Always PCMU when offered.
    Pcmu,
    /// Always PCMA when offered.
    Pcma,
}

/// What ccedge is willing to use.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Accept PCMU.
    pub pcmu: bool,
    /// Accept PCMA.
    pub pcma: bool,
    /// Tie-break when both are offered.
    pub prefer: Preference,
    /// Accept (and offer) `telephone-event/8000` for DTMF.
    pub telephone_event: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            pcmu: true,
            pcma: true,
            prefer: Preference::Offerer,
            telephone_event: true,
        }
    }
}

impl Config {
    fn allows(&self, c: Codec) -> bool {
        match c {
            Codec::Pcmu => self.pcmu,
            Codec::Pcma => self.pcma,
        }
    }
}

/// The negotiated `telephone-event` format.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TelephoneEventFormat {
    /// Its payload type.
    pub payload_type: PayloadType,
    /// Bit `n` set: the peer listed event `n` (0 ..= 15, the DTMF keys) in its `fmtp`; all
    /// sixteen when it gave no `fmtp` (RFC 4733 default).
    pub events: u16,
}

/// One m-line slot remembered for the answer: 3 bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) kind: MediaKind,
    pub(crate) proto: Proto,
    /// For RTP protocols, the first payload type (echoed in the port-0 line).
    pub(crate) fmt: u8,
}

/// The offer's m-lines in order, which one is ours, and how to reject the others.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct MediaLines {
    pub(crate) slots: [Slot; SDP_MAX_MEDIA],
    pub(crate) count: u8,
    pub(crate) ours: u8,
}

impl MediaLines {
    /// Just our audio line (our own offer).
    pub(crate) const fn single_audio() -> MediaLines {
        MediaLines {
            slots: [Slot {
                kind: MediaKind::Audio,
                proto: Proto::RtpAvp,
                fmt: 0,
            }; SDP_MAX_MEDIA],
            count: 1,
            ours: 0,
        }
    }
}

/// The outcome of a successful offer/answer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The codec both sides use.
    pub codec: Codec,
    /// Its payload type (the offerer's number; dynamic PTs are allowed).
    pub payload_type: PayloadType,
    /// DTMF events, when both sides do `telephone-event/8000`.
    pub telephone_event: Option<TelephoneEventFormat>,
    /// Where to send RTP; `None` when the peer gave `0.0.0.0` (old-style hold).
    pub remote: Option<SocketAddr>,
    /// The peer's `a=ptime` (we still send 20 ms).
    pub remote_ptime: Option<u16>,
    /// The peer's `a=maxptime`.
    pub remote_maxptime: Option<u16>,
    /// Our direction, as written in our answer: whether we send and receive.
    pub direction: Direction,
    /// `true` when the peer put the call on hold (`sendonly`, `inactive` or `0.0.0.0`).
    pub on_hold: bool,
    /// The offer had `a=rtcp-mux` (RFC 5761): the answer has it too and RTCP shares the RTP
    /// port.
    pub rtcp_mux: bool,
    /// The peer's `a=rtcp` port (RFC 3605), if it gave one.
    pub remote_rtcp_port: Option<u16>,
    pub(crate) lines: MediaLines,
}

impl Negotiated {
    /// The index of the offer's m-line this answer uses (the first audio line with a usable
    /// codec); the answer rejects every other line with port 0.
    #[must_use]
    pub fn media_index(&self) -> usize {
        usize::from(self.lines.ours)
    }

    /// `true` when we must send RTP.
    #[must_use]
    pub fn sends(&self) -> bool {
        self.direction.sends() && self.remote.is_some()
    }

    /// `true` when we expect RTP.
    #[must_use]
    pub fn receives(&self) -> bool {
        self.direction.receives()
    }
}

/// What one audio line offers that we can use.
struct AudioChoice {
    codec: Codec,
    payload_type: PayloadType,
    telephone_event: Option<TelephoneEventFormat>,
}

fn codec_of(m: &Media<'_>, pt: PayloadType) -> Option<Codec> {
    match m.rtpmap(pt) {
        Some(map) => {
            let mono = map.params.is_none_or(|p| p.trim() == "1");
            let is = |name: &str| map.encoding.eq_ignore_ascii_case(name);
            if map.clock_rate != 8000 || !mono {
                None
            } else if is("PCMU") {
                Some(Codec::Pcmu)
            } else if is("PCMA") {
                Some(Codec::Pcma)
            } else {
                None
            }
        }
        None if pt == PayloadType::PCMU => Some(Codec::Pcmu),
        None if pt == PayloadType::PCMA => Some(Codec::Pcma),
        None => None,
    }
}

/// Bit mask of events 0 ..= 15 in an RFC 4733 `fmtp` list like `0-15` or `0-11,16`.
fn event_mask(list: &str) -> u16 {
    let mut mask = 0u16;
    for item in list.split(',') {
        let item = item.trim();
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u8>(), b.trim().parse::<u8>()),
            None => (item.parse::<u8>(), item.parse::<u8>()),
        };
        if let (Ok(lo), Ok(hi)) = (lo, hi) {
            for e in lo..=hi.min(15) {
                mask |= 1 << e;
            }
        }
    }
    mask
}

fn telephone_event_of(m: &Media<'_>, only: Option<PayloadType>) -> Option<TelephoneEventFormat> {
    m.formats
        .iter()
        .copied()
        .filter(|pt| only.is_none_or(|o| o == *pt))
        .find_map(|pt| {
            let map = m.rtpmap(pt)?;
            (map.encoding.eq_ignore_ascii_case("telephone-event") && map.clock_rate == 8000)
                .then_some(pt)
        })
        .map(|pt| TelephoneEventFormat {
            payload_type: pt,
            events: m.fmtp(pt).map_or(0xffff, event_mask),
        })
        .filter(|te| te.events != 0)
}

fn choose(m: &Media<'_>, cfg: &Config, te_only: Option<PayloadType>) -> Option<AudioChoice> {
    let mut usable = m
        .formats
        .iter()
        .filter_map(|&pt| Some((codec_of(m, pt)?, pt)))
        .filter(|(c, _)| cfg.allows(*c));
    let first = usable.next()?;
    let wanted = match cfg.prefer {
        Preference::Offerer => None,
        Preference::Pcmu => Some(Codec::Pcmu),
        Preference::Pcma => Some(Codec::Pcma),
    };
    let (codec, payload_type) = match wanted {
        Some(w) if first.0 != w => usable.find(|(c, _)| *c == w).unwrap_or(first),
        _ => first,
    };
    let telephone_event = if cfg.telephone_event {
        telephone_event_of(m, te_only)
    } else {
        None
    };
    Some(AudioChoice {
        codec,
        payload_type,
        telephone_event,
    })
}

fn finish(
    sd: &SessionDescription<'_>,
    m: &Media<'_>,
    choice: AudioChoice,
    their_direction: Direction,
    lines: MediaLines,
) -> Result<Negotiated, Error> {
    let addr = m.connection.or(sd.connection).ok_or(Error::NoConnection)?;
    let held_by_address = match addr {
        IpAddr::V4(a) => a.is_unspecified(),
        IpAddr::V6(a) => a.is_unspecified(),
    };
    let mut direction = their_direction.reversed();
    if held_by_address {
        direction = direction.without_send();
    }
    Ok(Negotiated {
        codec: choice.codec,
        payload_type: choice.payload_type,
        telephone_event: choice.telephone_event,
        remote: (!held_by_address).then_some(SocketAddr::new(addr, m.port)),
        remote_ptime: m.ptime,
        remote_maxptime: m.maxptime,
        direction,
        on_hold: held_by_address || !their_direction.receives(),
        rtcp_mux: m.rtcp_mux,
        remote_rtcp_port: m.rtcp_port,
        lines,
    })
}

fn media_direction(sd: &SessionDescription<'_>, m: &Media<'_>) -> Direction {
    m.direction.or(sd.direction).unwrap_or_default()
}

/// Answers an offer (RFC 3264 §6): the first audio line over `RTP/AVP` with a non-zero port
/// and a codec we accept is ours; every other line is rejected with port 0.
///
/// # Errors
/// [`Error::NoCommonCodec`], [`Error::NoCommonProfile`], [`Error::NoAudio`] when no audio line
/// can be used; [`Error::NoConnection`] when the chosen line has no address;
/// [`Error::UnsupportedMedia`] when another line's media type or protocol is unknown (we could
/// not name it in the answer).
pub fn negotiate(offer: &SessionDescription<'_>, cfg: &Config) -> Result<Negotiated, Error> {
    let mut saw_avp_audio = false;
    let mut saw_other_profile_audio = false;
    let mut pick = None;
    for (i, m) in offer.media.iter().enumerate() {
        if m.kind != MediaKind::Audio || m.port == 0 {
            continue;
        }
        if m.proto != Proto::RtpAvp {
            saw_other_profile_audio = true;
            continue;
        }
        saw_avp_audio = true;
        if let Some(choice) = choose(m, cfg, None) {
            pick = Some((i, m, choice));
            break;
        }
    }
    let Some((ours, m, choice)) = pick else {
        return Err(if saw_avp_audio {
            Error::NoCommonCodec
        } else if saw_other_profile_audio {
            Error::NoCommonProfile
        } else {
            Error::NoAudio
        });
    };
    let mut lines = MediaLines::single_audio();
    for (slot, line) in lines.slots.iter_mut().zip(offer.media.iter()) {
        if line.kind == MediaKind::Other || line.proto == Proto::Other {
            return Err(Error::UnsupportedMedia);
        }
        *slot = Slot {
            kind: line.kind,
            proto: line.proto,
            fmt: line.formats.first().map_or(0, |pt| pt.get()),
        };
    }
    // Both fit in u8: the media list holds at most SDP_MAX_MEDIA entries.
    lines.count = u8::try_from(offer.media.len()).map_err(|_| Error::TooManyMedia)?;
    lines.ours = u8::try_from(ours).map_err(|_| Error::TooManyMedia)?;
    finish(offer, m, choice, media_direction(offer, m), lines)
}

/// Reads the answer to our own [`super::Offer`]: one audio line, with payload types taken
/// from what we offered.
pub(crate) fn accept_answer(
    answer: &SessionDescription<'_>,
    cfg: &Config,
    offered_te: Option<PayloadType>,
    our_direction: Direction,
) -> Result<Negotiated, Error> {
    let [m] = answer.media.as_slice() else {
        return Err(Error::AnswerMismatch);
    };
    if m.kind != MediaKind::Audio {
        return Err(Error::AnswerMismatch);
    }
    if m.port == 0 {
        return Err(Error::NoCommonCodec);
    }
    if m.proto != Proto::RtpAvp {
        return Err(Error::NoCommonProfile);
    }
    // We offered the static numbers only: the answer must use them (RFC 3264 §6.1).
    let mut statics_only = m.clone();
    statics_only.formats.retain(|pt| {
        *pt == PayloadType::PCMU || *pt == PayloadType::PCMA || Some(*pt) == offered_te
    });
    let cfg = Config {
        telephone_event: cfg.telephone_event && offered_te.is_some(),
        ..*cfg
    };
    let choice = choose(&statics_only, &cfg, offered_te).ok_or(Error::NoCommonCodec)?;
    let mut negotiated = finish(
        answer,
        &statics_only,
        choice,
        media_direction(answer, m),
        MediaLines::single_audio(),
    )?;
    // What we do is also limited by what we offered.
    if !our_direction.sends() {
        negotiated.direction = negotiated.direction.without_send();
    }
    if !our_direction.receives() {
        negotiated.direction = negotiated.direction.without_receive();
    }
    Ok(negotiated)
}
