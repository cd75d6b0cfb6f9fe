//! RTP (RFC 3550) for G.711 calls, and RFC 4733 telephone-event payloads.
//!
//! Where audio becomes RTP packets: the call asks [`OutboundStream::next_packet_header`] for a
//! header every 20 ms frame and writes it with [`RtpHeader::emit_header`] in front of the 160
//! G.711 bytes already in the send buffer (zero-copy), or with [`RtpHeader::emit`].
//!
//! ## What is here
//!
//! * [`RtpPacket`]: a checked, borrowed view over a received datagram. `parse` accepts version
//!   2 only; it validates the CSRC list, the header extension (skipped, its length bounded by
//!   the datagram) and the padding count (1 ..= bytes after the headers). It never panics.
//!   It accepts exactly the datagrams `rtp-rs` 0.6 accepts and reads the same fields (a
//!   property test uses it as the oracle); in particular a padding count equal to everything
//!   after the headers is valid and leaves an empty payload.
//! * [`RtpHeader`]: the fields ccedge sends (no CSRC, no extension, no padding): 12 bytes.
//! * [`OutboundStream`]: per-call sender state (12 bytes): SSRC, sequence number, timestamp,
//!   marker bookkeeping. The SSRC and the initial sequence number and timestamp are inputs (the
//!   shell owns randomness). Sequence numbers advance by one per packet, the timestamp by
//!   [`SAMPLES_PER_FRAME`] per 20 ms frame; [`OutboundStream::skip_frames`] moves the timestamp
//!   across a silence gap and marks the next packet.
//! * [`InboundStream`]: per-call receiver statistics (48 bytes): locks onto the first SSRC,
//!   ignores others until [`Config::relock_after`] without packets from the locked source or
//!   an explicit [`InboundStream::relock`]; counts received, lost, duplicate and reordered
//!   packets from the 16-bit sequence number extended as in RFC 3550 A.1 (with
//!   [`Config::max_dropout`] / [`Config::max_misorder`]); interarrival jitter as in RFC 3550 A.8.
//! * [`TelephoneEvent`]: the 4-byte RFC 4733 event payload (event, end bit, volume, duration).
//! * [`playout::Playout`]: what a call sends on each 20 ms tick (its playlist, hold, talk-spurts),
//!   for the shell's pacer.
//!
//! ## Deliberate limits
//!
//! * RTCP: [`rtcp`] builds SR + SDES and BYE and reads SR/RR compound packets.
//! * No SRTP, no CSRC or extension on send, no RFC 2198 redundancy for events (only
//!   the first 4-byte event block of a payload is read).
//! * `InboundStream` has no RFC 3550 probation period: the first packet of a source is counted.
//!   Duplicates are detected exactly within the last 32 sequence numbers; an older late packet
//!   is counted as reordered.
//! * A payload type is 7 bits; [`PayloadType`] cannot hold anything else.

mod event;
mod inbound;
mod outbound;
mod packet;
pub mod playout;
pub mod rtcp;

use core::fmt;

pub use event::{EventError, TelephoneEvent};
pub use inbound::{Config, InboundStats, InboundStream, Received};
pub use outbound::{OutboundStream, SAMPLES_PER_FRAME};
pub use packet::{Extension, RtpHeader, RtpPacket, HEADER_LEN};

pub use crate::BufferTooSmall;

/// Why a datagram is not an RTP packet ccedge accepts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// Fewer than the 12 bytes of the fixed header.
    TooShort,
    /// The version field is not 2.
    UnsupportedVersion,
    /// The CSRC list or the header extension runs past the end of the datagram.
    HeaderTruncated,
    /// The padding bit is set but the last byte is 0 or counts more bytes than follow the
    /// headers.
    BadPadding,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::TooShort => "RTP packet shorter than 12 bytes",
            Error::UnsupportedVersion => "RTP version is not 2",
            Error::HeaderTruncated => "RTP CSRC list or extension truncated",
            Error::BadPadding => "RTP padding count invalid",
        })
    }
}

impl core::error::Error for Error {}

/// An RTP synchronisation source identifier.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Ssrc(pub u32);

/// An RTP payload type: 7 bits (0 ..= 127). The only way to build one from a number is
/// [`PayloadType::new`], which refuses bigger values.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PayloadType(u8);

impl PayloadType {
    /// PCMU (G.711 µ-law), static payload type 0 (RFC 3551).
    pub const PCMU: PayloadType = PayloadType(0);
    /// PCMA (G.711 A-law), static payload type 8 (RFC 3551).
    pub const PCMA: PayloadType = PayloadType(8);
    /// The payload type ccedge offers for `telephone-event/8000` when it offers first.
    pub const TELEPHONE_EVENT_DEFAULT: PayloadType = PayloadType(101);

    /// `Some` for 0 ..= 127, `None` otherwise.
    #[must_use]
    pub const fn new(pt: u8) -> Option<PayloadType> {
        if pt <= 127 {
            Some(PayloadType(pt))
        } else {
            None
        }
    }

    /// The number.
    #[must_use]
    pub const fn get(self) -> u8 {
        self.0
    }

    /// `true` for 96 ..= 127, the dynamic range bound by `a=rtpmap`.
    #[must_use]
    pub const fn is_dynamic(self) -> bool {
        self.0 >= 96
    }
}

impl fmt::Display for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for PayloadType {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(PayloadType(u8::arbitrary(u)? & 0x7f))
    }
}

#[cfg(test)]
mod tests;
