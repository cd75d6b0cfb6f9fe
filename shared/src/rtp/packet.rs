//! The RTP packet view (receive) and header representation (send).

use super::{BufferTooSmall, Error, PayloadType, Ssrc};

/// Length of the fixed RTP header, and of every header ccedge emits.
pub const HEADER_LEN: usize = 12;

/// The header fields ccedge sends and reads: no CSRC list, no extension, no padding on send.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RtpHeader {
    /// The marker bit (first packet of a talkspurt for audio, first packet of an event for
    /// telephone-event).
    pub marker: bool,
    /// The payload type.
    pub payload_type: PayloadType,
    /// The 16-bit sequence number.
    pub sequence: u16,
    /// The RTP timestamp (8 kHz units for G.711 and telephone-event).
    pub timestamp: u32,
    /// The synchronisation source.
    pub ssrc: Ssrc,
}

impl RtpHeader {
    /// Writes the 12-byte header into `buf[..12]`, for send paths that already hold the payload
    /// at `buf[12..]`. Returns 12.
    ///
    /// # Errors
    /// [`BufferTooSmall`] when `buf` is shorter than 12 bytes.
    pub fn emit_header(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let out = buf.get_mut(..HEADER_LEN).ok_or(BufferTooSmall)?;
        out[0] = 0x80;
        out[1] = (u8::from(self.marker) << 7) | self.payload_type.get();
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.0.to_be_bytes());
        Ok(HEADER_LEN)
    }

    /// Writes the header followed by `payload`; returns the datagram length.
    ///
    /// # Errors
    /// [`BufferTooSmall`] when `buf` cannot hold `12 + payload.len()` bytes.
    pub fn emit(&self, payload: &[u8], buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let total = HEADER_LEN
            .checked_add(payload.len())
            .ok_or(BufferTooSmall)?;
        let out = buf.get_mut(..total).ok_or(BufferTooSmall)?;
        let (head, body) = out.split_at_mut(HEADER_LEN);
        self.emit_header(head)?;
        body.copy_from_slice(payload);
        Ok(total)
    }
}

/// A header extension (RFC 3550 §5.3.1), skipped by ccedge but exposed for tests and logs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Extension<'a> {
    /// The 16 profile-defined bits.
    pub profile: u16,
    /// The extension body (a multiple of 4 bytes).
    pub data: &'a [u8],
}

/// A checked view over a received RTP datagram. Built only by [`RtpPacket::parse`], so every
/// accessor is infallible.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    header: RtpHeader,
    csrc: &'a [u8],
    extension: Option<Extension<'a>>,
    padding: Option<u8>,
    payload: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

impl<'a> RtpPacket<'a> {
    /// Checks `buf` and returns the view. Never panics.
    ///
    /// # Errors
    /// [`Error::TooShort`] under 12 bytes, [`Error::UnsupportedVersion`] unless version 2,
    /// [`Error::HeaderTruncated`] when the CSRC list or the extension run past the end,
    /// [`Error::BadPadding`] when the padding count is 0 or larger than what follows the
    /// headers.
    pub fn parse(buf: &'a [u8]) -> Result<RtpPacket<'a>, Error> {
        let fixed = buf.get(..HEADER_LEN).ok_or(Error::TooShort)?;
        let b0 = fixed[0];
        let b1 = fixed[1];
        if b0 >> 6 != 2 {
            return Err(Error::UnsupportedVersion);
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let csrc_len = usize::from(b0 & 0x0f) * 4;
        let csrc_end = HEADER_LEN + csrc_len;
        let csrc = buf
            .get(HEADER_LEN..csrc_end)
            .ok_or(Error::HeaderTruncated)?;
        let (extension, payload_start) = if has_extension {
            let profile = be16(buf, csrc_end).ok_or(Error::HeaderTruncated)?;
            let words = be16(buf, csrc_end + 2).ok_or(Error::HeaderTruncated)?;
            let start = csrc_end + 4;
            let end = start + usize::from(words) * 4;
            let data = buf.get(start..end).ok_or(Error::HeaderTruncated)?;
            (Some(Extension { profile, data }), end)
        } else {
            (None, csrc_end)
        };
        let rest = buf.get(payload_start..).ok_or(Error::HeaderTruncated)?;
        let (payload, padding) = if has_padding {
            let (&count, _) = rest.split_last().ok_or(Error::BadPadding)?;
            let keep = rest
                .len()
                .checked_sub(usize::from(count))
                .filter(|_| count > 0)
                .ok_or(Error::BadPadding)?;
            (rest.get(..keep).ok_or(Error::BadPadding)?, Some(count))
        } else {
            (rest, None)
        };
        let header = RtpHeader {
            marker: b1 & 0x80 != 0,
            payload_type: PayloadType(b1 & 0x7f),
            sequence: u16::from_be_bytes([fixed[2], fixed[3]]),
            timestamp: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            ssrc: Ssrc(u32::from_be_bytes([
                fixed[8], fixed[9], fixed[10], fixed[11],
            ])),
        };
        Ok(RtpPacket {
            header,
            csrc,
            extension,
            padding,
            payload,
        })
    }

    /// The fixed-header fields.
    #[must_use]
    pub fn header(&self) -> RtpHeader {
        self.header
    }

    /// The marker bit.
    #[must_use]
    pub fn marker(&self) -> bool {
        self.header.marker
    }

    /// The payload type.
    #[must_use]
    pub fn payload_type(&self) -> PayloadType {
        self.header.payload_type
    }

    /// The sequence number.
    #[must_use]
    pub fn sequence(&self) -> u16 {
        self.header.sequence
    }

    /// The RTP timestamp.
    #[must_use]
    pub fn timestamp(&self) -> u32 {
        self.header.timestamp
    }

    /// The SSRC.
    #[must_use]
    pub fn ssrc(&self) -> Ssrc {
        self.header.ssrc
    }

    /// Number of CSRC entries (0 ..= 15).
    #[must_use]
    pub fn csrc_count(&self) -> usize {
        self.csrc.len() / 4
    }

    /// The CSRC identifiers in order.
    pub fn csrcs(&self) -> impl Iterator<Item = Ssrc> + 'a {
        self.csrc
            .chunks_exact(4)
            .map(|c| Ssrc(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
    }

    /// The header extension, if the X bit was set.
    #[must_use]
    pub fn extension(&self) -> Option<Extension<'a>> {
        self.extension
    }

    /// The padding count (including the count byte itself) if the P bit was set.
    #[must_use]
    pub fn padding(&self) -> Option<u8> {
        self.padding
    }

    /// The payload, without headers and padding.
    #[must_use]
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}
