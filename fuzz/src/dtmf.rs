//! `shared::dtmf::rfc4733::EventDetector` (stateful) and
//! `shared::dtmf::goertzel::InbandDetector`.

use shared::dtmf::goertzel::{InbandDetector, BLOCK_LEN, PRESS_BLOCKS};
use shared::dtmf::rfc4733::{EventDetector, EventPacket, EVENT_TIMEOUT};
use shared::dtmf::Digit;
use shared::limits::DTMF_INBAND_OUTPUT_MAX;
use shared::time::{Duration, Instant};

/// Bytes per packet record in the `rfc4733` input format.
pub const RECORD_LEN: usize = 12;

/// One record of the `rfc4733` input: the packet plus how it arrives.
#[derive(Copy, Clone, Debug)]
pub struct Arrival {
    /// Milliseconds since the previous packet.
    pub delta_ms: u16,
    /// The packet.
    pub packet: EventPacket,
    /// Hand the same packet in a second time right after (a network duplicate).
    pub duplicate: bool,
}

/// Decodes the `rfc4733` input: 12-byte records, big-endian, a trailing partial record
/// ignored:
///
/// | bytes | field |
/// |---|---|
/// | 0..2 | milliseconds since the previous packet |
/// | 2..6 | RTP timestamp |
/// | 6..8 | sequence number |
/// | 8 | event code |
/// | 9 | bit 7 E (end), bit 6 duplicate, bits 0..6 volume |
/// | 10..12 | duration |
#[must_use]
pub fn decode_arrivals(data: &[u8]) -> Vec<Arrival> {
    data.chunks_exact(RECORD_LEN)
        .map(|r| Arrival {
            delta_ms: u16::from_be_bytes([r[0], r[1]]),
            packet: EventPacket {
                rtp_timestamp: u32::from_be_bytes([r[2], r[3], r[4], r[5]]),
                seq: u16::from_be_bytes([r[6], r[7]]),
                event_code: r[8],
                end: r[9] & 0x80 != 0,
                volume: r[9] & 0x3f,
                duration: u16::from_be_bytes([r[10], r[11]]),
            },
            duplicate: r[9] & 0x40 != 0,
        })
        .collect()
}

/// Byte-level entry of the `rfc4733` target.
pub fn check_rfc4733_bytes(data: &[u8]) {
    check_rfc4733(&decode_arrivals(data));
}

/// Feeds the packets in order: every key press is reported at most once per packet and is
/// the packet's key; a key reported from a packet without the E bit is held; a duplicate
/// handed in again at once reports nothing; and an event is not reported twice by packets of
/// its own timestamp unless [`EVENT_TIMEOUT`] of silence separated them.
pub fn check_rfc4733(arrivals: &[Arrival]) {
    let mut det = EventDetector::new();
    let mut now = Instant::ZERO;
    // Timestamp of the latest report, and whether every DTMF packet since carried it.
    let mut last_report: Option<u32> = None;
    let mut only_same_since = false;
    let mut previous_dtmf: Option<Instant> = None;
    for a in arrivals {
        now += Duration::from_millis(u64::from(a.delta_ms));
        det.handle_event(now, a.packet)
            .expect("no output is left pending: we poll after every packet");
        let digit = Digit::from_event_code(a.packet.event_code);
        let ts = a.packet.rtp_timestamp;
        match det.poll_output() {
            Some(d) => {
                assert_eq!(Some(d), digit, "reported key is not the packet's key");
                if !a.packet.end {
                    assert_eq!(det.held(now), Some(d), "reported key is not held");
                }
                if last_report == Some(ts) && only_same_since {
                    let gap = now.saturating_duration_since(previous_dtmf.unwrap_or(now));
                    assert!(
                        gap >= EVENT_TIMEOUT,
                        "timestamp {ts} reported again after only {gap:?} without another event"
                    );
                }
                last_report = Some(ts);
                only_same_since = true;
            }
            None => {
                if digit.is_some() && last_report != Some(ts) {
                    only_same_since = false;
                }
            }
        }
        assert_eq!(det.poll_output(), None, "two keys from one packet");
        if a.duplicate {
            det.handle_event(now, a.packet).expect("drained");
            assert_eq!(
                det.poll_output(),
                None,
                "a duplicate packet reported a key again"
            );
        }
        if digit.is_some() {
            previous_dtmf = Some(now);
        }
    }
}

/// Decodes the `goertzel` input: byte 0 picks the frame size, the rest is 16-bit
/// little-endian samples.
#[must_use]
pub fn decode_samples(data: &[u8]) -> (usize, Vec<i16>) {
    let Some((&b, rest)) = data.split_first() else {
        return (1, Vec::new());
    };
    let frame = 1 + usize::from(b) * 2;
    let samples = rest
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    (frame, samples)
}

/// Runs the samples through two detectors, one in a single call and one frame by frame: the
/// keys found do not depend on how the audio is cut, and there are never more keys than pairs
/// of blocks.
pub fn check_goertzel(data: &[u8]) {
    let (frame, samples) = decode_samples(data);

    let mut whole = InbandDetector::new();
    let whole_result = whole.handle_samples(&samples);
    let mut whole_keys = Vec::new();
    while let Some(d) = whole.poll_digit() {
        whole_keys.push(d);
    }
    assert!(whole_keys.len() <= DTMF_INBAND_OUTPUT_MAX);

    let mut framed = InbandDetector::new();
    let mut framed_keys = Vec::new();
    for chunk in samples.chunks(frame) {
        framed
            .handle_samples(chunk)
            .expect("output drained after every frame");
        while let Some(d) = framed.poll_digit() {
            framed_keys.push(d);
        }
    }
    match whole_result {
        Ok(()) => assert_eq!(whole_keys, framed_keys, "keys depend on the framing"),
        Err(_) => {
            assert_eq!(whole_keys.len(), DTMF_INBAND_OUTPUT_MAX);
            assert_eq!(whole_keys[..], framed_keys[..DTMF_INBAND_OUTPUT_MAX]);
        }
    }
    assert_eq!(whole.held(), framed.held());
    let blocks = samples.len() / BLOCK_LEN;
    assert!(
        framed_keys.len() <= blocks / usize::from(PRESS_BLOCKS),
        "{} keys from {blocks} blocks",
        framed_keys.len()
    );
}
