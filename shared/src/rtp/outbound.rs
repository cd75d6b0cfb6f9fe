//! Per-call RTP sender state.

use super::{PayloadType, RtpHeader, Ssrc};

/// RTP timestamp units in one 20 ms frame at 8 kHz (G.711 and telephone-event).
pub const SAMPLES_PER_FRAME: u32 = 160;

/// What one call needs to stamp its outgoing packets: 12 bytes.
///
/// The SSRC, the first sequence number and the first timestamp are inputs (RFC 3550 wants them
/// random; the shell draws them). Every header taken advances the sequence number by one and
/// the timestamp by one 20 ms frame.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OutboundStream {
    ssrc: Ssrc,
    timestamp: u32,
    sequence: u16,
    payload_type: PayloadType,
    marker_pending: bool,
}

impl OutboundStream {
    /// A new stream. The first packet carries the marker bit (it starts a talkspurt).
    #[must_use]
    pub fn new(
        ssrc: Ssrc,
        initial_sequence: u16,
        initial_timestamp: u32,
        payload_type: PayloadType,
    ) -> OutboundStream {
        OutboundStream {
            ssrc,
            timestamp: initial_timestamp,
            sequence: initial_sequence,
            payload_type,
            marker_pending: true,
        }
    }

    /// The header for the next 20 ms audio frame; call once per packet sent. The marker bit is
    /// set when `talkspurt_start` is true, on the very first packet, and on the first packet
    /// after [`OutboundStream::skip_frames`].
    pub fn next_packet_header(&mut self, talkspurt_start: bool) -> RtpHeader {
        let header = RtpHeader {
            marker: talkspurt_start || self.marker_pending,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        };
        self.marker_pending = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(SAMPLES_PER_FRAME);
        header
    }

    /// Call when `frames` 20 ms frames of silence are not sent: the timestamp moves on, the
    /// sequence number does not (nothing was sent), and the next packet is marked.
    pub fn skip_frames(&mut self, frames: u32) {
        if frames == 0 {
            return;
        }
        self.timestamp = self
            .timestamp
            .wrapping_add(frames.wrapping_mul(SAMPLES_PER_FRAME));
        self.marker_pending = true;
    }

    /// Changes the payload type of later packets (after a re-INVITE picked another codec).
    pub fn set_payload_type(&mut self, payload_type: PayloadType) {
        self.payload_type = payload_type;
    }

    /// The RTP timestamp of the next packet (what an SR sent now pairs with the NTP time).
    #[must_use]
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// The SSRC.
    #[must_use]
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// The sequence number the next packet will carry.
    #[must_use]
    pub fn next_sequence(&self) -> u16 {
        self.sequence
    }

    /// The timestamp the next packet will carry.
    #[must_use]
    pub fn next_timestamp(&self) -> u32 {
        self.timestamp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(seq: u16, ts: u32) -> OutboundStream {
        OutboundStream::new(Ssrc(0xdead_beef), seq, ts, PayloadType::PCMA)
    }

    #[test]
    fn is_tiny() {
        assert!(core::mem::size_of::<OutboundStream>() <= 16);
    }

    #[test]
    fn advances_per_frame_and_marks_first() {
        let mut s = stream(100, 1000);
        let a = s.next_packet_header(false);
        let b = s.next_packet_header(false);
        assert_eq!((a.sequence, a.timestamp, a.marker), (100, 1000, true));
        assert_eq!((b.sequence, b.timestamp, b.marker), (101, 1160, false));
        assert_eq!(b.ssrc, Ssrc(0xdead_beef));
        assert_eq!(b.payload_type, PayloadType::PCMA);
        assert!(s.next_packet_header(true).marker);
    }

    #[test]
    fn wraps_sequence_and_timestamp() {
        let mut s = stream(u16::MAX, u32::MAX - 100);
        s.next_packet_header(false);
        let h = s.next_packet_header(false);
        assert_eq!(h.sequence, 0);
        assert_eq!(h.timestamp, 59);
    }

    #[test]
    fn silence_gap_moves_timestamp_not_sequence_and_marks() {
        let mut s = stream(7, 0);
        s.next_packet_header(false);
        s.next_packet_header(false);
        s.skip_frames(50);
        let h = s.next_packet_header(false);
        assert_eq!(h.sequence, 9);
        assert_eq!(h.timestamp, 160 * 52);
        assert!(h.marker);
        assert!(!s.next_packet_header(false).marker);
        s.skip_frames(0);
        assert!(!s.next_packet_header(false).marker);
    }
}
