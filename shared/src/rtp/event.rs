//! RFC 4733 telephone-event payload.

use core::fmt;

use super::BufferTooSmall;
use crate::dtmf::Digit;

/// Length of one telephone-event block.
const EVENT_LEN: usize = 4;

/// Why a payload is not a telephone event.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EventError {
    /// Fewer than 4 bytes.
    TooShort,
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("telephone-event payload shorter than 4 bytes")
    }
}

impl core::error::Error for EventError {}

/// One RFC 4733 event block: event code, end bit, volume (0 ..= 63, in -dBm0), duration in
/// timestamp units since the event's RTP timestamp.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TelephoneEvent {
    event: u8,
    end: bool,
    volume: u8,
    duration: u16,
}

impl TelephoneEvent {
    /// Highest volume value (6 bits).
    pub const MAX_VOLUME: u8 = 63;

    /// A new event block; `None` when `volume` does not fit in 6 bits.
    #[must_use]
    pub fn new(event: u8, end: bool, volume: u8, duration: u16) -> Option<TelephoneEvent> {
        (volume <= Self::MAX_VOLUME).then_some(TelephoneEvent {
            event,
            end,
            volume,
            duration,
        })
    }

    /// A block for a DTMF key.
    #[must_use]
    pub fn for_digit(digit: Digit, end: bool, volume: u8, duration: u16) -> Option<Self> {
        Self::new(digit.event_code(), end, volume, duration)
    }

    /// Reads the first 4-byte block of a payload (later blocks, if any, are ignored; the
    /// reserved bit is ignored).
    ///
    /// # Errors
    /// [`EventError::TooShort`] under 4 bytes.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, EventError> {
        let b = payload.get(..EVENT_LEN).ok_or(EventError::TooShort)?;
        Ok(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    /// Writes the 4-byte block (reserved bit zero); returns 4.
    ///
    /// # Errors
    /// [`BufferTooSmall`] under 4 bytes.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let out = buf.get_mut(..EVENT_LEN).ok_or(BufferTooSmall)?;
        out[0] = self.event;
        out[1] = (u8::from(self.end) << 7) | self.volume;
        out[2..4].copy_from_slice(&self.duration.to_be_bytes());
        Ok(EVENT_LEN)
    }

    /// The event code (0 ..= 15 are the DTMF keys).
    #[must_use]
    pub fn event(&self) -> u8 {
        self.event
    }

    /// The DTMF key, `None` for other events.
    #[must_use]
    pub fn digit(&self) -> Option<Digit> {
        Digit::from_event_code(self.event)
    }

    /// `true` on the end packet(s) of the event.
    #[must_use]
    pub fn is_end(&self) -> bool {
        self.end
    }

    /// Volume in -dBm0 (0 ..= 63).
    #[must_use]
    pub fn volume(&self) -> u8 {
        self.volume
    }

    /// Duration so far, in timestamp units.
    #[must_use]
    pub fn duration(&self) -> u16 {
        self.duration
    }
}
