//! SDP offer/answer for ccedge (RFC 8866 subset, RFC 3264 negotiation).
//!
//! Where an INVITE's body becomes media parameters: the call hands the body to [`parse`], then
//! [`negotiate`] picks the codec, the DTMF payload type, the remote RTP address and what we do
//! (send, receive, hold); [`Negotiated::answer`] makes the small [`Answer`] the call keeps and
//! re-emits into every 200 OK. An INVITE without a body is handled with an [`Offer`] in the
//! 200 OK and [`Offer::accept_answer`] on the SDP of the ACK.
//!
//! ## What is read
//!
//! `v=0` (must be the first line), `o=`, `c=` (`IN IP4`/`IN IP6`, session and media level, a
//! multicast `/ttl` suffix is dropped), `m=` (media, port, optional `/count`, protocol, format
//! list), and the attributes `rtpmap`, `fmtp`, `ptime`, `maxptime`, `rtcp-mux`, `sendrecv`, `sendonly`,
//! `recvonly`, `inactive` (session and media level; media level wins). Other lines and
//! attributes are skipped. `rtpmap`/`fmtp` are looked up on demand from the borrowed media
//! section, so nothing is copied. Lines end in CRLF or LF. The body must be UTF-8.
//!
//! ## Bounds
//!
//! At most [`SDP_MAX_MEDIA`] `m=` lines (more is [`Error::TooManyMedia`]: every offered line
//! must be answered, so none can be dropped). At most [`SDP_MAX_FORMATS`] payload types are
//! kept per `m=` line; later ones are treated as not offered (offerers list their preferred
//! codecs first). `c=` with a host name instead of an address is [`Error::BadConnection`].
//!
//! ## What we answer
//!
//! | offer | answer |
//! |---|---|
//! | `m=audio` `RTP/AVP` with PCMU and/or PCMA (static 0/8, or any PT whose `rtpmap` is `PCMU/8000` / `PCMA/8000`, any case) | that line with our port, one codec ([`Config::prefer`]), our `ptime:20` |
//! | … and `telephone-event/8000` | its payload type too, with `fmtp:<pt> 0-15` |
//! | `sendrecv` / `recvonly` / `sendonly` / `inactive` | `sendrecv` / `sendonly` / `recvonly` / `inactive` |
//! | `c=IN IP4 0.0.0.0` (old-style hold; `IN IP6 ::` likewise) | as above with sending removed: `recvonly` or `inactive` |
//! | a second audio line, video, any other line, a line with port 0 | the same media and protocol with port 0, in the offer's order (RFC 3264 §6) |
//! | audio only over `RTP/SAVP` (or another profile) | [`Error::NoCommonProfile`] |
//! | audio but neither PCMU nor PCMA (e.g. G.729 only) | [`Error::NoCommonCodec`] |
//! | no usable audio line | [`Error::NoAudio`] |
//!
//! [`Answer`] is 56 bytes and `Copy`: the offer's other m-lines are kept as media type,
//! protocol and first payload type (3 bytes each), enough to write them back with port 0. An
//! offered line whose media type or protocol we do not know by name cannot be written back,
//! so such an offer is refused with [`Error::UnsupportedMedia`].
//!
//! ## Offering first
//!
//! For an INVITE without a body, [`Offer::new`] offers PCMU and PCMA (static payload types,
//! in [`Config::prefer`] order) and `telephone-event` as payload type 101; the answer in the
//! ACK must have exactly that one audio line and use those numbers.
//!
//! Every [`Error`] maps to `488 Not Acceptable Here` in the call. The offerer's `ptime` and
//! `maxptime` are reported in [`Negotiated`], but ccedge always sends 20 ms frames.

mod emit;
mod negotiate;
mod parse;

use core::fmt;

pub use crate::limits::{SDP_MAX_FORMATS, SDP_MAX_MEDIA};
pub use crate::rtp::BufferTooSmall;
pub use emit::{Answer, Offer};
pub use negotiate::{negotiate, Codec, Config, Negotiated, Preference, TelephoneEventFormat};
pub use parse::{parse, Attribute, Media, Origin, RtpMap, SessionDescription};

/// The packetization time ccedge sends, in milliseconds.
pub const PTIME_MS: u16 = 20;

/// Why an SDP body was not parsed or not accepted. The call answers every one with 488.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// The body is not UTF-8.
    NotUtf8,
    /// The first line is not `v=0`.
    NotSdp,
    /// A line is not `<letter>=<value>`.
    Malformed,
    /// The `o=` line does not have its six fields.
    BadOrigin,
    /// A `c=` line is not `IN IP4 <address>` or `IN IP6 <address>`.
    BadConnection,
    /// An `m=` line is malformed (port, missing formats, RTP payload type not 0–127).
    BadMedia,
    /// More than [`SDP_MAX_MEDIA`] `m=` lines.
    TooManyMedia,
    /// No audio line with a non-zero port.
    NoAudio,
    /// Audio is offered only over a profile other than `RTP/AVP` (e.g. `RTP/SAVP`).
    NoCommonProfile,
    /// Audio is offered without PCMU or PCMA.
    NoCommonCodec,
    /// The chosen audio line has no connection address.
    NoConnection,
    /// An offered line has a media type or protocol we cannot even reject by name.
    UnsupportedMedia,
    /// An answer to our offer does not fit it (line count, payload types).
    AnswerMismatch,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::NotUtf8 => "SDP is not UTF-8",
            Error::NotSdp => "SDP does not start with v=0",
            Error::Malformed => "SDP line is not <type>=<value>",
            Error::BadOrigin => "SDP o= line malformed",
            Error::BadConnection => "SDP c= line malformed or not an IP address",
            Error::BadMedia => "SDP m= line malformed",
            Error::TooManyMedia => "SDP has too many m= lines",
            Error::NoAudio => "SDP offers no audio",
            Error::NoCommonProfile => "SDP audio uses no profile we support (RTP/AVP)",
            Error::NoCommonCodec => "SDP audio offers neither PCMU nor PCMA",
            Error::NoConnection => "SDP audio has no connection address",
            Error::UnsupportedMedia => "SDP m= line has an unknown media type or protocol",
            Error::AnswerMismatch => "SDP answer does not match our offer",
        })
    }
}

impl core::error::Error for Error {}

/// A media direction attribute (RFC 3264 §5.1), from the point of view of whoever wrote it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Direction {
    /// `a=sendrecv` (the default).
    #[default]
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction attribute named `name`, if it is one.
    #[must_use]
    pub fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The matching direction seen from the other side (send ↔ receive).
    #[must_use]
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// `true` if the writer sends media.
    #[must_use]
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// `true` if the writer receives media.
    #[must_use]
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// This direction with sending removed.
    #[must_use]
    pub fn without_send(self) -> Direction {
        if self.receives() {
            Direction::RecvOnly
        } else {
            Direction::Inactive
        }
    }

    /// This direction with receiving removed.
    #[must_use]
    pub fn without_receive(self) -> Direction {
        if self.sends() {
            Direction::SendOnly
        } else {
            Direction::Inactive
        }
    }
}

/// The media type of an `m=` line.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MediaKind {
    /// `audio`
    Audio,
    /// `video`
    Video,
    /// `text`
    Text,
    /// `application`
    Application,
    /// `message`
    Message,
    /// `image` (T.38 fax)
    Image,
    /// Anything else.
    Other,
}

impl MediaKind {
    /// Maps an `m=` media token.
    #[must_use]
    pub fn from_token(t: &str) -> MediaKind {
        match t {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            "text" => MediaKind::Text,
            "application" => MediaKind::Application,
            "message" => MediaKind::Message,
            "image" => MediaKind::Image,
            _ => MediaKind::Other,
        }
    }

    /// The token, `None` for [`MediaKind::Other`].
    #[must_use]
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
            MediaKind::Text => "text",
            MediaKind::Application => "application",
            MediaKind::Message => "message",
            MediaKind::Image => "image",
            MediaKind::Other => return None,
        })
    }
}

/// The transport protocol of an `m=` line.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Proto {
    /// `RTP/AVP`, the only one ccedge accepts.
    RtpAvp,
    /// `RTP/AVPF`
    RtpAvpf,
    /// `RTP/SAVP`
    RtpSavp,
    /// `RTP/SAVPF`
    RtpSavpf,
    /// `UDP/TLS/RTP/SAVP`
    UdpTlsRtpSavp,
    /// `UDP/TLS/RTP/SAVPF`
    UdpTlsRtpSavpf,
    /// `udptl` (T.38)
    Udptl,
    /// `TCP/MSRP`
    TcpMsrp,
    /// `TCP/TLS/MSRP`
    TcpTlsMsrp,
    /// Anything else.
    Other,
}

impl Proto {
    /// Maps an `m=` protocol token (RTP profiles case-insensitively, as deployed).
    #[must_use]
    pub fn from_token(t: &str) -> Proto {
        const TABLE: [(&str, Proto); 9] = [
            ("RTP/AVP", Proto::RtpAvp),
            ("RTP/AVPF", Proto::RtpAvpf),
            ("RTP/SAVP", Proto::RtpSavp),
            ("RTP/SAVPF", Proto::RtpSavpf),
            ("UDP/TLS/RTP/SAVP", Proto::UdpTlsRtpSavp),
            ("UDP/TLS/RTP/SAVPF", Proto::UdpTlsRtpSavpf),
            ("udptl", Proto::Udptl),
            ("TCP/MSRP", Proto::TcpMsrp),
            ("TCP/TLS/MSRP", Proto::TcpTlsMsrp),
        ];
        TABLE
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(t))
            .map_or(Proto::Other, |(_, p)| *p)
    }

    /// The token, `None` for [`Proto::Other`].
    #[must_use]
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Proto::RtpAvp => "RTP/AVP",
            Proto::RtpAvpf => "RTP/AVPF",
            Proto::RtpSavp => "RTP/SAVP",
            Proto::RtpSavpf => "RTP/SAVPF",
            Proto::UdpTlsRtpSavp => "UDP/TLS/RTP/SAVP",
            Proto::UdpTlsRtpSavpf => "UDP/TLS/RTP/SAVPF",
            Proto::Udptl => "udptl",
            Proto::TcpMsrp => "TCP/MSRP",
            Proto::TcpTlsMsrp => "TCP/TLS/MSRP",
            Proto::Other => return None,
        })
    }

    /// `true` for RTP profiles, whose formats are payload type numbers.
    #[must_use]
    pub fn is_rtp(self) -> bool {
        matches!(
            self,
            Proto::RtpAvp
                | Proto::RtpAvpf
                | Proto::RtpSavp
                | Proto::RtpSavpf
                | Proto::UdpTlsRtpSavp
                | Proto::UdpTlsRtpSavpf
        )
    }
}

#[cfg(test)]
mod tests;
