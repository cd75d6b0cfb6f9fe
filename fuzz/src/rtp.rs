//! `shared::rtp::RtpPacket::parse` and `shared::rtp::TelephoneEvent::parse`.

use arbitrary::{Arbitrary, Unstructured};
use shared::dtmf::Digit;
use shared::rtp::{RtpHeader, RtpPacket, TelephoneEvent, HEADER_LEN};

/// Parses `data` as an RTP datagram; a parsed packet's layout adds up and its header survives
/// emit → parse. Then builds a header from the same bytes and round-trips it.
pub fn check(data: &[u8]) {
    if let Ok(p) = RtpPacket::parse(data) {
        let ext_len = p.extension().map_or(0, |e| 4 + e.data.len());
        if let Some(e) = p.extension() {
            assert_eq!(e.data.len() % 4, 0);
            assert!(crate::within(data, e.data));
        }
        let pad = usize::from(p.padding().unwrap_or(0));
        assert!(p.padding() != Some(0), "zero padding count accepted");
        assert!(p.csrc_count() <= 15);
        assert_eq!(p.csrcs().count(), p.csrc_count());
        assert_eq!(
            HEADER_LEN + 4 * p.csrc_count() + ext_len + p.payload().len() + pad,
            data.len(),
            "header, CSRCs, extension, payload and padding do not add up"
        );
        assert!(crate::within(data, p.payload()));
        assert!(p.payload_type().get() < 128);

        let h = p.header();
        let mut buf = vec![0u8; HEADER_LEN + p.payload().len()];
        let n = h.emit(p.payload(), &mut buf).expect("exact buffer");
        assert_eq!(n, buf.len());
        let q = RtpPacket::parse(&buf).expect("our packet parses");
        assert_eq!(q.header(), h, "header round trip");
        assert_eq!(q.payload(), p.payload(), "payload round trip");
        assert_eq!(q.csrc_count(), 0);
        assert!(q.extension().is_none() && q.padding().is_none());
        // A buffer one byte short is refused, never overrun.
        assert!(h.emit(p.payload(), &mut buf[..n - 1]).is_err());
    }

    let mut u = Unstructured::new(data);
    if let Ok(h) = RtpHeader::arbitrary(&mut u) {
        let payload = u.take_rest();
        let mut buf = vec![0u8; HEADER_LEN + payload.len()];
        let n = h.emit(payload, &mut buf).expect("exact buffer");
        let q = RtpPacket::parse(&buf[..n]).expect("our packet parses");
        assert_eq!(q.header(), h);
        assert_eq!(q.payload(), payload);
    }
}

/// Parses `data` as a telephone-event payload; emit → parse is the identity and the block
/// written equals the one read (reserved bit cleared).
pub fn check_telephone_event(data: &[u8]) {
    let Ok(ev) = TelephoneEvent::parse(data) else {
        assert!(data.len() < 4, "a 4-byte payload is always an event block");
        return;
    };
    assert!(ev.volume() <= TelephoneEvent::MAX_VOLUME);
    assert_eq!(ev.digit(), Digit::from_event_code(ev.event()));
    assert_eq!(ev.digit().is_some(), ev.event() < 16);
    if let Some(d) = ev.digit() {
        assert_eq!(d.event_code(), ev.event());
        assert_eq!(
            TelephoneEvent::for_digit(d, ev.is_end(), ev.volume(), ev.duration()),
            Some(ev)
        );
    }
    assert_eq!(
        TelephoneEvent::new(ev.event(), ev.is_end(), ev.volume(), ev.duration()),
        Some(ev)
    );
    let mut buf = [0u8; 4];
    assert_eq!(ev.emit(&mut buf), Ok(4));
    assert_eq!(TelephoneEvent::parse(&buf), Ok(ev), "emit → parse");
    assert_eq!(buf[0], data[0]);
    assert_eq!(buf[1], data[1] & !0x40, "only the reserved bit may change");
    assert_eq!(buf[2..4], data[2..4]);
    assert!(ev.emit(&mut buf[..3]).is_err());
    // Volumes above 6 bits are not representable.
    assert_eq!(TelephoneEvent::new(ev.event(), ev.is_end(), 64, 0), None);
}
