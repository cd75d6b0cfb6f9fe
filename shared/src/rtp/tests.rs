//! RTP tests: rtp-rs as an oracle, streams, telephone events.

// Tests may use std (house rule); its collections are fine here.
#![allow(clippy::std_instead_of_alloc)]

extern crate std;

use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::time::{Duration, Instant};

fn header(seq: u16, ts: u32, ssrc: u32) -> RtpHeader {
    RtpHeader {
        marker: false,
        payload_type: PayloadType::PCMU,
        sequence: seq,
        timestamp: ts,
        ssrc: Ssrc(ssrc),
    }
}

/// Packets that start like RTP (version bits mostly 2) so the oracle sees accept paths too.
fn rtp_like() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..120),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(b0, mut rest, force_v2)| {
            let b0 = if force_v2 { (b0 & 0x3f) | 0x80 } else { b0 };
            rest.insert(0, b0);
            rest
        })
}

/// Well-formed packets with every optional part, built by hand.
fn structured() -> impl Strategy<Value = (Vec<u8>, u8, usize, bool, u8)> {
    (
        0u8..=15,
        prop::option::of((any::<u16>(), prop::collection::vec(any::<u8>(), 0..3))),
        prop::collection::vec(any::<u8>(), 0..40),
        prop::option::of(1u8..=8),
        any::<[u8; 11]>(),
    )
        .prop_map(|(cc, ext, payload, pad, fixed)| {
            let mut b = Vec::new();
            let b0 = 0x80 | (u8::from(pad.is_some()) << 5) | (u8::from(ext.is_some()) << 4) | cc;
            b.push(b0);
            b.extend_from_slice(&fixed);
            for i in 0..cc {
                b.extend_from_slice(&[i, 1, 2, 3]);
            }
            if let Some((profile, words)) = &ext {
                b.extend_from_slice(&profile.to_be_bytes());
                b.extend_from_slice(&(words.len() as u16).to_be_bytes());
                for w in words {
                    b.extend_from_slice(&[*w; 4]);
                }
            }
            b.extend_from_slice(&payload);
            if let Some(p) = pad {
                b.extend(core::iter::repeat_n(0u8, usize::from(p) - 1));
                b.push(p);
            }
            (b, cc, payload.len(), ext.is_some(), pad.unwrap_or(0))
        })
}

/// Compares our view with rtp-rs on the same bytes. Both define behaviour on every input:
/// they agree on accept/reject, and on every field when both accept.
fn agree_with_rtp_rs(bytes: &[u8]) -> Result<(), TestCaseError> {
    let ours = RtpPacket::parse(bytes);
    let theirs = rtp_rs::RtpReader::new(bytes);
    match (ours, theirs) {
        (Ok(p), Ok(r)) => {
            prop_assert_eq!(p.marker(), r.mark());
            prop_assert_eq!(p.payload_type().get(), r.payload_type());
            prop_assert_eq!(p.sequence(), u16::from(r.sequence_number()));
            prop_assert_eq!(p.timestamp(), r.timestamp());
            prop_assert_eq!(p.ssrc().0, r.ssrc());
            prop_assert_eq!(p.csrc_count(), usize::from(r.csrc_count()));
            prop_assert!(p.csrcs().map(|s| s.0).eq(r.csrc()));
            prop_assert_eq!(p.padding(), r.padding());
            prop_assert_eq!(p.payload(), r.payload());
            prop_assert_eq!(p.extension().map(|e| (e.profile, e.data)), r.extension());
        }
        (Err(_), Err(_)) => {}
        (o, t) => {
            return Err(TestCaseError::fail(std::format!(
                "disagree on {bytes:02x?}: ours {o:?}, rtp-rs ok={}",
                t.is_ok()
            )))
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn parse_never_panics_and_agrees_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        agree_with_rtp_rs(&bytes)?;
    }

    #[test]
    fn agrees_on_rtp_like_bytes(bytes in rtp_like()) {
        agree_with_rtp_rs(&bytes)?;
    }

    #[test]
    fn accepts_and_agrees_on_structured_packets((bytes, cc, payload_len, ext, pad) in structured()) {
        let p = RtpPacket::parse(&bytes).unwrap();
        prop_assert_eq!(p.csrc_count(), usize::from(cc));
        prop_assert_eq!(p.payload().len(), payload_len);
        prop_assert_eq!(p.extension().is_some(), ext);
        prop_assert_eq!(p.padding().unwrap_or(0), pad);
        agree_with_rtp_rs(&bytes)?;
        // Every truncation is rejected or still agrees.
        for cut in 0..bytes.len() {
            agree_with_rtp_rs(&bytes[..cut])?;
        }
    }

    #[test]
    fn emit_round_trips_through_rtp_rs(
        marker in any::<bool>(), pt in 0u8..=127, seq in any::<u16>(), ts in any::<u32>(),
        ssrc in any::<u32>(), payload in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let h = RtpHeader {
            marker,
            payload_type: PayloadType::new(pt).unwrap(),
            sequence: seq,
            timestamp: ts,
            ssrc: Ssrc(ssrc),
        };
        let mut buf = [0u8; 256];
        let n = h.emit(&payload, &mut buf).unwrap();
        prop_assert_eq!(n, HEADER_LEN + payload.len());
        let r = rtp_rs::RtpReader::new(&buf[..n]).unwrap();
        prop_assert_eq!(r.version(), 2);
        prop_assert_eq!(r.mark(), marker);
        prop_assert_eq!(r.payload_type(), pt);
        prop_assert_eq!(u16::from(r.sequence_number()), seq);
        prop_assert_eq!(r.timestamp(), ts);
        prop_assert_eq!(r.ssrc(), ssrc);
        prop_assert_eq!(r.csrc_count(), 0);
        prop_assert_eq!(r.padding(), None);
        prop_assert!(r.extension().is_none());
        prop_assert_eq!(r.payload(), &payload[..]);
        let ours = RtpPacket::parse(&buf[..n]).unwrap();
        prop_assert_eq!(ours.header(), h);
        prop_assert_eq!(ours.payload(), &payload[..]);
        // Too small a buffer is an error, never a panic.
        prop_assert_eq!(h.emit(&payload, &mut buf[..n - 1]), Err(BufferTooSmall));
    }

    #[test]
    fn telephone_event_round_trips(event in any::<u8>(), end in any::<bool>(), volume in 0u8..=63, duration in any::<u16>()) {
        let e = TelephoneEvent::new(event, end, volume, duration).unwrap();
        let mut buf = [0u8; 4];
        prop_assert_eq!(e.emit(&mut buf), Ok(4));
        prop_assert_eq!(TelephoneEvent::parse(&buf), Ok(e));
    }

    #[test]
    fn inbound_counts_are_consistent(steps in prop::collection::vec(-5i32..40, 1..300)) {
        // A random walk over sequence numbers starting near the wrap: received + lost equals
        // the span expected, duplicates are never counted as received.
        let cfg = Config::default();
        let mut s = InboundStream::new();
        let mut seq: u16 = 65500;
        let mut seen = std::collections::BTreeSet::new();
        let mut ext: i64 = 65500;
        let mut max_ext = ext;
        let mut min_ext = ext;
        for (i, step) in steps.iter().enumerate() {
            let now = Instant::from_millis(20 * i as u64);
            let r = s.on_packet(now, &header(seq, 0, 1), &cfg);
            let fresh = seen.insert(ext);
            match r {
                Received::Duplicate => prop_assert!(!fresh),
                Received::Locked | Received::InOrder { .. } | Received::Late => prop_assert!(fresh),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
            max_ext = max_ext.max(ext);
            min_ext = min_ext.min(ext);
            ext += i64::from(*step);
            seq = seq.wrapping_add(*step as u16);
        }
        let st = s.stats();
        prop_assert_eq!(st.received as usize, seen.len());
        prop_assert_eq!(i64::from(st.extended_max_sequence), max_ext);
        // RFC 3550 A.3: expected = highest - first + 1. A late packet from before the first
        // one makes "lost" negative there; the stream clamps it at zero, so the identity only
        // holds when nothing older than the first packet arrived.
        if min_ext >= 65500 {
            prop_assert_eq!(i64::from(st.received) + i64::from(st.lost), max_ext - 65500 + 1);
        }
    }
}

#[test]
fn rejects_bad_versions_and_truncations() {
    assert_eq!(RtpPacket::parse(&[0x80; 11]), Err(Error::TooShort));
    let mut p = [0u8; 12];
    p[0] = 0x40;
    assert_eq!(RtpPacket::parse(&p), Err(Error::UnsupportedVersion));
    p[0] = 0x81; // one CSRC missing
    assert_eq!(RtpPacket::parse(&p), Err(Error::HeaderTruncated));
    p[0] = 0x90; // extension header missing
    assert_eq!(RtpPacket::parse(&p), Err(Error::HeaderTruncated));
    p[0] = 0xa0; // padding with nothing after the header
    assert_eq!(RtpPacket::parse(&p), Err(Error::BadPadding));
    let mut q = [0u8; 16];
    q[0] = 0xa0;
    q[15] = 0; // padding count zero
    assert_eq!(RtpPacket::parse(&q), Err(Error::BadPadding));
    q[15] = 5; // more than the 4 bytes after the header
    assert_eq!(RtpPacket::parse(&q), Err(Error::BadPadding));
    q[15] = 4; // exactly everything: empty payload
    let ok = RtpPacket::parse(&q).unwrap();
    assert_eq!(ok.payload(), &[] as &[u8]);
    assert_eq!(ok.padding(), Some(4));
}

#[test]
fn extension_is_skipped() {
    let mut p = std::vec![0x90, 0x08, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
    p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]);
    p.extend_from_slice(b"audio");
    let v = RtpPacket::parse(&p).unwrap();
    assert_eq!(v.payload(), b"audio");
    assert_eq!(v.payload_type(), PayloadType::PCMA);
    assert_eq!(
        v.extension(),
        Some(Extension {
            profile: 0xbede,
            data: &[1, 2, 3, 4]
        })
    );
}

#[test]
fn emit_header_leaves_payload_in_place() {
    let mut buf = [0xaa_u8; HEADER_LEN + 160];
    let mut out = OutboundStream::new(Ssrc(5), 1, 2, PayloadType::PCMU);
    let h = out.next_packet_header(false);
    assert_eq!(h.emit_header(&mut buf), Ok(HEADER_LEN));
    let v = RtpPacket::parse(&buf).unwrap();
    assert_eq!(v.payload(), &[0xaa; 160][..]);
    assert!(v.marker());
    assert_eq!(h.emit_header(&mut buf[..11]), Err(BufferTooSmall));
}

#[test]
fn payload_type_is_seven_bits() {
    assert_eq!(PayloadType::new(128), None);
    assert_eq!(PayloadType::new(127).map(PayloadType::get), Some(127));
    assert!(PayloadType::new(96).unwrap().is_dynamic());
    assert!(!PayloadType::PCMA.is_dynamic());
}

#[test]
fn inbound_is_small() {
    assert!(core::mem::size_of::<InboundStream>() <= 48);
}

#[test]
fn sequence_wrap_counts_a_cycle_and_loss() {
    let cfg = Config::default();
    let mut s = InboundStream::new();
    let t = Instant::from_millis(0);
    assert_eq!(s.on_packet(t, &header(65534, 0, 7), &cfg), Received::Locked);
    assert_eq!(
        s.on_packet(t, &header(65535, 160, 7), &cfg),
        Received::InOrder { lost: 0 }
    );
    assert_eq!(
        s.on_packet(t, &header(2, 640, 7), &cfg),
        Received::InOrder { lost: 2 }
    );
    assert_eq!(s.on_packet(t, &header(0, 320, 7), &cfg), Received::Late);
    assert_eq!(
        s.on_packet(t, &header(0, 320, 7), &cfg),
        Received::Duplicate
    );
    assert_eq!(
        s.on_packet(t, &header(2, 640, 7), &cfg),
        Received::Duplicate
    );
    let st = s.stats();
    assert_eq!(st.extended_max_sequence, (1 << 16) | 2);
    assert_eq!(st.received, 4);
    assert_eq!(st.lost, 1); // 1 never arrived
    assert_eq!(st.duplicates, 2);
    assert_eq!(st.reordered, 1);
}

#[test]
fn big_jump_needs_two_packets_then_resyncs() {
    let cfg = Config::default();
    let mut s = InboundStream::new();
    let t = Instant::ZERO;
    s.on_packet(t, &header(100, 0, 7), &cfg);
    assert_eq!(s.on_packet(t, &header(30_000, 0, 7), &cfg), Received::Jump);
    assert_eq!(
        s.on_packet(t, &header(101, 0, 7), &cfg),
        Received::InOrder { lost: 0 }
    );
    assert_eq!(s.on_packet(t, &header(40_000, 0, 7), &cfg), Received::Jump);
    assert_eq!(
        s.on_packet(t, &header(40_001, 0, 7), &cfg),
        Received::Resynced
    );
    assert_eq!(
        s.on_packet(t, &header(40_002, 0, 7), &cfg),
        Received::InOrder { lost: 0 }
    );
    let st = s.stats();
    assert_eq!((st.received, st.lost), (2, 0));
}

#[test]
fn other_ssrc_ignored_until_timeout_or_relock() {
    let cfg = Config::default();
    let mut s = InboundStream::new();
    let t0 = Instant::from_millis(1000);
    assert_eq!(
        s.on_packet(t0, &header(1, 0, 0xaaaa), &cfg),
        Received::Locked
    );
    let t1 = t0 + Duration::from_millis(20);
    assert_eq!(
        s.on_packet(t1, &header(900, 0, 0xbbbb), &cfg),
        Received::OtherSsrc
    );
    assert_eq!(s.ssrc(), Some(Ssrc(0xaaaa)));
    assert_eq!(
        s.on_packet(t1, &header(2, 160, 0xaaaa), &cfg),
        Received::InOrder { lost: 0 }
    );
    // The locked source goes quiet; another one takes over after relock_after.
    let quiet = t1 + (cfg.relock_after - Duration::from_millis(1));
    assert_eq!(
        s.on_packet(quiet, &header(901, 0, 0xbbbb), &cfg),
        Received::OtherSsrc
    );
    let later = t1 + cfg.relock_after;
    assert_eq!(
        s.on_packet(later, &header(902, 0, 0xbbbb), &cfg),
        Received::Locked
    );
    assert_eq!(s.ssrc(), Some(Ssrc(0xbbbb)));
    assert_eq!(s.stats().received, 1);
    // Explicit relock.
    s.relock();
    assert_eq!(s.ssrc(), None);
    assert_eq!(s.stats(), InboundStats::default());
    assert_eq!(
        s.on_packet(later, &header(5, 0, 0xcccc), &cfg),
        Received::Locked
    );
    assert_eq!(s.last_arrival(), Some(later));
}

#[test]
fn jitter_is_zero_for_perfect_pacing_and_grows_with_variation() {
    let cfg = Config::default();
    let mut s = InboundStream::new();
    for i in 0..50u16 {
        let now = Instant::from_millis(5_000 + 20 * u64::from(i));
        s.on_packet(now, &header(i, 1234 + 160 * u32::from(i), 3), &cfg);
    }
    assert_eq!(s.stats().jitter, 0);
    // Alternate 10 ms early / late: |D| = 80 units (10 ms at 8 kHz) on every packet, so the
    // estimate converges towards 80 from below.
    for i in 50..400u16 {
        let wobble = if i % 2 == 0 { 10 } else { 0 };
        let now = Instant::from_millis(5_000 + 20 * u64::from(i) + wobble);
        s.on_packet(now, &header(i, 1234 + 160 * u32::from(i), 3), &cfg);
    }
    let j = s.stats().jitter;
    assert!((75..=80).contains(&j), "jitter {j}");
}

#[test]
fn telephone_event_fields_and_bounds() {
    assert_eq!(TelephoneEvent::new(1, false, 64, 0), None);
    let e = TelephoneEvent::for_digit(crate::dtmf::Digit::Hash, true, 10, 800).unwrap();
    let mut buf = [0u8; 4];
    e.emit(&mut buf).unwrap();
    assert_eq!(buf, [11, 0x80 | 10, 0x03, 0x20]);
    assert_eq!(
        TelephoneEvent::parse(&[11, 0xca, 0, 1]).unwrap().volume(),
        10
    ); // R bit ignored
    assert_eq!(TelephoneEvent::parse(&buf[..3]), Err(EventError::TooShort));
    assert_eq!(e.emit(&mut buf[..3]), Err(BufferTooSmall));
    let p = TelephoneEvent::parse(&buf).unwrap();
    assert_eq!(p.digit(), Some(crate::dtmf::Digit::Hash));
    assert!(p.is_end());
    assert_eq!(p.duration(), 800);
    assert_eq!(TelephoneEvent::parse(&[16, 0, 0, 0]).unwrap().digit(), None);
}

/// RFC 4733 §5 style: one digit as several packets sharing the event's timestamp, the first
/// marked, durations growing every 50 ms, and the end packet sent three times. Each packet has
/// its own sequence number, so the receiver sees no duplicates at the RTP level; the DTMF layer
/// de-duplicates the end by (timestamp, end bit).
#[test]
fn rfc4733_digit_as_several_packets_with_triple_end() {
    let te = PayloadType::new(101).unwrap();
    let event_ts = 8_000u32;
    let plan: [(bool, bool, u16); 7] = [
        (true, false, 400),
        (false, false, 800),
        (false, false, 1200),
        (false, false, 1600),
        (false, true, 1760),
        (false, true, 1760),
        (false, true, 1760),
    ];
    let cfg = Config::default();
    let mut rx = InboundStream::new();
    let mut ends = 0;
    for (i, (marker, end, duration)) in plan.iter().enumerate() {
        let h = RtpHeader {
            marker: *marker,
            payload_type: te,
            sequence: 500 + i as u16,
            timestamp: event_ts,
            ssrc: Ssrc(0x1234),
        };
        let mut ev = [0u8; 4];
        TelephoneEvent::for_digit(crate::dtmf::Digit::D9, *end, 10, *duration)
            .unwrap()
            .emit(&mut ev)
            .unwrap();
        let mut dgram = [0u8; 64];
        let n = h.emit(&ev, &mut dgram).unwrap();
        let pkt = RtpPacket::parse(&dgram[..n]).unwrap();
        assert_eq!(pkt.payload_type(), te);
        assert_eq!(pkt.timestamp(), event_ts);
        assert_eq!(pkt.marker(), i == 0);
        let e = TelephoneEvent::parse(pkt.payload()).unwrap();
        assert_eq!(e.digit(), Some(crate::dtmf::Digit::D9));
        assert_eq!(e.duration(), *duration);
        ends += usize::from(e.is_end());
        let got = rx.on_packet(Instant::from_millis(50 * i as u64), &pkt.header(), &cfg);
        assert!(
            matches!(got, Received::Locked | Received::InOrder { lost: 0 }),
            "{got:?}"
        );
    }
    assert_eq!(ends, 3);
    let st = rx.stats();
    assert_eq!((st.received, st.lost, st.duplicates), (7, 0, 0));
}
