//! SDP tests: real-world offers as transcripts, properties, round trips.

// Tests may use std (house rule); its collections are fine here.
#![allow(clippy::std_instead_of_alloc)]

extern crate std;

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::borrow::ToOwned;
use std::string::{String, ToString};
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::rtp::PayloadType;

fn pt(n: u8) -> PayloadType {
    PayloadType::new(n).unwrap()
}

fn crlf(s: &str) -> String {
    s.lines()
        .map(|l| std::format!("{}\r\n", l.trim()))
        .collect()
}

fn local() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 30000)
}

fn answer_text(n: &Negotiated) -> String {
    let mut buf = [0u8; 1024];
    let len = n.answer(local(), 42, 1).emit(&mut buf).unwrap();
    String::from_utf8(buf[..len].to_vec()).unwrap()
}

fn offer(s: &str) -> Result<Negotiated, Error> {
    let body = crlf(s);
    let sd = parse(body.as_bytes())?;
    negotiate(&sd, &Config::default())
}

// ---- transcripts of real-world offers ------------------------------------------------------

const SIPP_UAC: &str = "v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000";

#[test]
fn sipp_default_uac_offer() {
    let body = crlf(SIPP_UAC);
    let sd = parse(body.as_bytes()).unwrap();
    let o = sd.origin.unwrap();
    assert_eq!(
        (o.username, o.session_id, o.session_version),
        ("user1", "53655765", "2353687637")
    );
    assert_eq!(o.address, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let n = negotiate(&sd, &Config::default()).unwrap();
    assert_eq!(n.codec, Codec::Pcmu);
    assert_eq!(n.payload_type, PayloadType::PCMU);
    assert_eq!(n.telephone_event, None);
    assert_eq!(n.remote, Some("127.0.0.1:6000".parse().unwrap()));
    assert_eq!(n.direction, Direction::SendRecv);
    assert!(n.sends() && n.receives() && !n.on_hold);
    assert_eq!(
        answer_text(&n),
        crlf(
            "v=0
            o=ccedge 42 1 IN IP4 198.51.100.7
            s=ccedge
            c=IN IP4 198.51.100.7
            t=0 0
            m=audio 30000 RTP/AVP 0
            a=rtpmap:0 PCMU/8000
            a=rtcp:30000
            a=ptime:20
            a=sendrecv"
        )
    );
}

#[test]
fn many_codec_offer_in_the_freeswitch_style() {
    let n = offer(
        "v=0
        o=FreeSWITCH 1700000000 1700000001 IN IP4 192.0.2.10
        s=FreeSWITCH
        c=IN IP4 192.0.2.10
        t=0 0
        m=audio 24580 RTP/AVP 9 0 8 18 3 101 13
        a=rtpmap:9 G722/8000
        a=rtpmap:0 PCMU/8000
        a=rtpmap:8 PCMA/8000
        a=rtpmap:18 G729/8000
        a=fmtp:18 annexb=no
        a=rtpmap:3 GSM/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-16
        a=rtpmap:13 CN/8000
        a=ptime:20
        a=sendrecv",
    )
    .unwrap();
    assert_eq!((n.codec, n.payload_type), (Codec::Pcmu, pt(0)));
    assert_eq!(
        n.telephone_event,
        Some(TelephoneEventFormat {
            payload_type: pt(101),
            events: 0xffff
        })
    );
    assert_eq!(n.remote_ptime, Some(20));
    assert_eq!(
        answer_text(&n),
        crlf(
            "v=0
            o=ccedge 42 1 IN IP4 198.51.100.7
            s=ccedge
            c=IN IP4 198.51.100.7
            t=0 0
            m=audio 30000 RTP/AVP 0 101
            a=rtpmap:0 PCMU/8000
            a=rtpmap:101 telephone-event/8000
            a=fmtp:101 0-15
            a=rtcp:30000
            a=ptime:20
            a=sendrecv"
        )
    );
}

#[test]
fn asterisk_style_offer_with_media_level_connection_and_maxptime() {
    let body = crlf(
        "v=0
        o=- 1226 1226 IN IP4 203.0.113.5
        s=Asterisk
        t=0 0
        m=audio 10000 RTP/AVP 8 0 3 101
        c=IN IP4 203.0.113.6
        a=rtpmap:8 PCMA/8000
        a=rtpmap:0 PCMU/8000
        a=rtpmap:3 GSM/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-16
        a=ptime:20
        a=maxptime:150
        a=sendrecv",
    );
    let sd = parse(body.as_bytes()).unwrap();
    assert_eq!(sd.connection, None);
    let n = negotiate(&sd, &Config::default()).unwrap();
    assert_eq!(n.codec, Codec::Pcma);
    assert_eq!(n.remote, Some("203.0.113.6:10000".parse().unwrap()));
    assert_eq!(n.remote_maxptime, Some(150));
    // Our preference can override the offerer's order.
    let prefer_u = Config {
        prefer: Preference::Pcmu,
        ..Config::default()
    };
    assert_eq!(negotiate(&sd, &prefer_u).unwrap().codec, Codec::Pcmu);
    // A codec we do not allow is skipped.
    let no_pcma = Config {
        pcma: false,
        ..Config::default()
    };
    assert_eq!(negotiate(&sd, &no_pcma).unwrap().payload_type, pt(0));
    let no_te = Config {
        telephone_event: false,
        ..Config::default()
    };
    assert_eq!(negotiate(&sd, &no_te).unwrap().telephone_event, None);
}

#[test]
fn pcma_only_with_dynamic_lowercase_rtpmap() {
    let n = offer(
        "v=0
        o=- 1 1 IN IP4 192.0.2.1
        s=-
        c=IN IP4 192.0.2.1
        t=0 0
        m=audio 4000 RTP/AVP 96 97
        a=rtpmap:96 pcma/8000/1
        a=rtpmap:97 Telephone-Event/8000
        a=fmtp:97 0-11",
    )
    .unwrap();
    assert_eq!((n.codec, n.payload_type), (Codec::Pcma, pt(96)));
    assert_eq!(
        n.telephone_event,
        Some(TelephoneEventFormat {
            payload_type: pt(97),
            events: 0x0fff
        })
    );
    let text = answer_text(&n);
    assert!(
        text.contains("m=audio 30000 RTP/AVP 96 97\r\na=rtpmap:96 PCMA/8000\r\n"),
        "{text}"
    );
    assert!(text.contains("a=fmtp:97 0-15\r\n"));
}

#[test]
fn rtpmap_overrides_static_numbers_and_wrong_rates_are_not_g711() {
    // PT 0 remapped to something else, PCMU at 16 kHz, stereo PCMA: nothing usable.
    assert_eq!(
        offer(
            "v=0
            c=IN IP4 192.0.2.1
            m=audio 4000 RTP/AVP 0 96 97
            a=rtpmap:0 opus/48000/2
            a=rtpmap:96 PCMU/16000
            a=rtpmap:97 PCMA/8000/2"
        ),
        Err(Error::NoCommonCodec)
    );
}

#[test]
fn g729_only_is_no_common_codec() {
    assert_eq!(
        offer(
            "v=0
            o=- 1 1 IN IP4 192.0.2.1
            s=-
            c=IN IP4 192.0.2.1
            t=0 0
            m=audio 4000 RTP/AVP 18 101
            a=rtpmap:18 G729/8000
            a=rtpmap:101 telephone-event/8000"
        ),
        Err(Error::NoCommonCodec)
    );
}

const HOLD_BASE: &str = "v=0
o=- 1 2 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 4000 RTP/AVP 8 101
a=rtpmap:101 telephone-event/8000
";

#[test]
fn hold_reoffers() {
    let cases: [(&str, Direction, bool, bool); 6] = [
        ("a=sendrecv", Direction::SendRecv, false, true),
        ("a=sendonly", Direction::RecvOnly, true, true),
        ("a=inactive", Direction::Inactive, true, true),
        ("a=recvonly", Direction::SendOnly, false, true),
        ("", Direction::SendRecv, false, true),
        // A media-level attribute wins over the session level (tested below too).
        ("a=sendonly\na=sendrecv", Direction::SendRecv, false, true),
    ];
    for (attr, ours, hold, has_remote) in cases {
        let n = offer(&std::format!("{HOLD_BASE}{attr}")).unwrap();
        assert_eq!(n.direction, ours, "{attr}");
        assert_eq!(n.on_hold, hold, "{attr}");
        assert_eq!(n.remote.is_some(), has_remote);
        assert_eq!(n.sends(), ours.sends());
        assert!(answer_text(&n).ends_with(&std::format!("a={}\r\n", ours.as_str())));
    }
    // Session-level sendonly.
    let session_level = HOLD_BASE.replace("t=0 0\n", "t=0 0\na=sendonly\n");
    let n = offer(&session_level).unwrap();
    assert_eq!((n.direction, n.on_hold), (Direction::RecvOnly, true));
    let overridden = std::format!("{session_level}a=sendrecv");
    assert_eq!(offer(&overridden).unwrap().direction, Direction::SendRecv);
}

#[test]
fn old_style_hold_with_zero_address() {
    let held = HOLD_BASE.replace("c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0");
    let n = offer(&held).unwrap();
    assert_eq!(n.remote, None);
    assert!(n.on_hold && !n.sends() && n.receives());
    assert_eq!(n.direction, Direction::RecvOnly);
    let n = offer(&std::format!("{held}a=recvonly")).unwrap();
    assert_eq!(n.direction, Direction::Inactive);
    // Resume: a later offer with a real address sends again.
    let n = offer(HOLD_BASE).unwrap();
    assert!(n.sends() && !n.on_hold);
}

#[test]
fn ipv6_offer_and_answer() {
    let body = crlf(
        "v=0
        o=- 7 7 IN IP6 2001:db8::1
        s=-
        c=IN IP6 2001:db8::1
        t=0 0
        m=audio 5004 RTP/AVP 0 8",
    );
    let n = negotiate(&parse(body.as_bytes()).unwrap(), &Config::default()).unwrap();
    let remote = n.remote.unwrap();
    assert_eq!(
        remote.ip(),
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))
    );
    assert_eq!(remote.port(), 5004);
    let ours = SocketAddr::new("2001:db8::7".parse().unwrap(), 40000);
    let mut buf = [0u8; 512];
    let len = n.answer(ours, 1, 1).emit(&mut buf).unwrap();
    let text = core::str::from_utf8(&buf[..len]).unwrap();
    assert!(text.contains("o=ccedge 1 1 IN IP6 2001:db8::7\r\n"));
    assert!(text.contains("c=IN IP6 2001:db8::7\r\n"));
    let back = parse(&buf[..len]).unwrap();
    assert_eq!(back.connection, Some(ours.ip()));
}

#[test]
fn video_and_audio_answer_rejects_video_in_place() {
    let n = offer(
        "v=0
        o=- 1 1 IN IP4 192.0.2.1
        s=-
        c=IN IP4 192.0.2.1
        t=0 0
        m=video 5006 RTP/AVP 96 97
        a=rtpmap:96 H264/90000
        m=audio 5004 RTP/AVP 0 101
        a=rtpmap:101 telephone-event/8000
        a=sendrecv
        m=audio 5008 RTP/AVP 8
        m=image 5010 udptl t38",
    )
    .unwrap();
    assert_eq!(n.remote.unwrap().port(), 5004);
    assert_eq!(
        answer_text(&n),
        crlf(
            "v=0
            o=ccedge 42 1 IN IP4 198.51.100.7
            s=ccedge
            c=IN IP4 198.51.100.7
            t=0 0
            m=video 0 RTP/AVP 96
            m=audio 30000 RTP/AVP 0 101
            a=rtpmap:0 PCMU/8000
            a=rtpmap:101 telephone-event/8000
            a=fmtp:101 0-15
            a=rtcp:30000
            a=ptime:20
            a=sendrecv
            m=audio 0 RTP/AVP 8
            m=image 0 udptl t38"
        )
    );
}

#[test]
fn rejected_and_unusable_audio() {
    let base = "v=0\nc=IN IP4 192.0.2.1\n";
    let only_video = std::format!("{base}m=video 5006 RTP/AVP 96");
    assert_eq!(offer(&only_video), Err(Error::NoAudio));
    let port_zero = std::format!("{base}m=audio 0 RTP/AVP 0");
    assert_eq!(offer(&port_zero), Err(Error::NoAudio));
    let savp =
        std::format!("{base}m=audio 5004 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x");
    assert_eq!(offer(&savp), Err(Error::NoCommonProfile));
    // SRTP first, plain RTP second: the plain line is ours, the SRTP one rejected.
    let both = std::format!("{base}m=audio 5004 RTP/SAVP 0\nm=audio 5006 RTP/AVP 8");
    let n = offer(&both).unwrap();
    assert_eq!(n.remote.unwrap().port(), 5006);
    assert!(answer_text(&n).contains("m=audio 0 RTP/SAVP 0\r\nm=audio 30000 RTP/AVP 8\r\n"));
    let no_conn = "v=0\nm=audio 5004 RTP/AVP 0";
    assert_eq!(offer(no_conn), Err(Error::NoConnection));
    let unknown =
        std::format!("{base}m=audio 5004 RTP/AVP 0\nm=application 9 UDP/DTLS/SCTP webrtc");
    assert_eq!(offer(&unknown), Err(Error::UnsupportedMedia));
}

#[test]
fn parse_errors() {
    assert_eq!(parse(b""), Err(Error::NotSdp));
    assert_eq!(parse(b"v=1\r\n"), Err(Error::NotSdp));
    assert_eq!(parse(b"v=0\r\n\xff\r\n"), Err(Error::NotUtf8));
    assert_eq!(parse(b"v=0\r\ngarbage\r\n"), Err(Error::Malformed));
    assert_eq!(
        parse(b"v=0\r\nc=IN IP4 gw.example.com\r\n"),
        Err(Error::BadConnection)
    );
    assert_eq!(
        parse(b"v=0\r\nc=IN IP4 300.1.1.1\r\n"),
        Err(Error::BadConnection)
    );
    assert_eq!(parse(b"v=0\r\nc=ATM NSAP 1\r\n"), Err(Error::BadConnection));
    assert_eq!(parse(b"v=0\r\no=- 1\r\n"), Err(Error::BadOrigin));
    assert_eq!(
        parse(b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n"),
        Err(Error::BadMedia)
    );
    assert_eq!(
        parse(b"v=0\r\nm=audio 4000 RTP/AVP\r\n"),
        Err(Error::BadMedia)
    );
    assert_eq!(
        parse(b"v=0\r\nm=audio 4000 RTP/AVP 200\r\n"),
        Err(Error::BadMedia)
    );
    let many =
        "v=0\nm=audio 1 RTP/AVP 0\n".to_owned() + &"m=video 0 RTP/AVP 96\n".repeat(SDP_MAX_MEDIA);
    assert_eq!(parse(many.as_bytes()), Err(Error::TooManyMedia));
    // LF-only line ends, multicast TTL, port counts, decimal ptime are accepted.
    let sd =
        parse(b"v=0\nc=IN IP4 224.2.1.1/127\nm=audio 4000/2 RTP/AVP 0\na=ptime:30.0\n").unwrap();
    assert_eq!(sd.connection, Some(IpAddr::V4(Ipv4Addr::new(224, 2, 1, 1))));
    assert_eq!(sd.media[0].port, 4000);
    assert_eq!(sd.media[0].ptime, Some(30));
}

#[test]
fn formats_beyond_capacity_are_not_offered() {
    let mut m = String::from("v=0\nc=IN IP4 192.0.2.1\nm=audio 4000 RTP/AVP");
    for p in 96..(96 + SDP_MAX_FORMATS as u8) {
        m += &std::format!(" {p}");
    }
    m += " 8\n";
    let sd = parse(m.as_bytes()).unwrap();
    assert_eq!(sd.media[0].formats.len(), SDP_MAX_FORMATS);
    assert_eq!(
        negotiate(&sd, &Config::default()),
        Err(Error::NoCommonCodec)
    );
}

#[test]
fn answer_is_small() {
    assert!(
        core::mem::size_of::<Answer>() <= 96,
        "{}",
        core::mem::size_of::<Answer>()
    );
}

#[test]
fn emit_reports_small_buffers() {
    let n = offer(SIPP_UAC).unwrap();
    let a = n.answer(local(), 1, 1);
    let mut buf = [0u8; 512];
    let len = a.emit(&mut buf).unwrap();
    for short in [0, 1, len / 2, len - 1] {
        assert_eq!(a.emit(&mut buf[..short]), Err(BufferTooSmall));
    }
}

#[test]
fn offerless_invite_offer_then_answer_from_ack() {
    let cfg = Config::default();
    let ours = Offer::new(&cfg, local(), 9, 1).unwrap();
    let mut buf = [0u8; 512];
    let len = ours.emit(&mut buf).unwrap();
    let text = core::str::from_utf8(&buf[..len]).unwrap();
    assert_eq!(
        text,
        crlf(
            "v=0
            o=ccedge 9 1 IN IP4 198.51.100.7
            s=ccedge
            c=IN IP4 198.51.100.7
            t=0 0
            m=audio 30000 RTP/AVP 0 8 101
            a=rtpmap:0 PCMU/8000
            a=rtpmap:8 PCMA/8000
            a=rtpmap:101 telephone-event/8000
            a=fmtp:101 0-15
            a=ptime:20
            a=sendrecv"
        )
    );
    // The gateway answers PCMA-first in its ACK.
    let ack = crlf(
        "v=0
        o=gw 5 5 IN IP4 192.0.2.50
        s=-
        c=IN IP4 192.0.2.50
        t=0 0
        m=audio 7000 RTP/AVP 8 101
        a=rtpmap:8 PCMA/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-15
        a=ptime:20",
    );
    let n = ours.accept_answer(&parse(ack.as_bytes()).unwrap()).unwrap();
    assert_eq!((n.codec, n.payload_type), (Codec::Pcma, pt(8)));
    assert_eq!(n.telephone_event.map(|t| t.payload_type), Some(pt(101)));
    assert_eq!(n.remote, Some("192.0.2.50:7000".parse().unwrap()));
    assert_eq!(n.direction, Direction::SendRecv);
    // An answer that renumbers the codec, rejects the line, or adds lines is refused.
    let renumbered = ack
        .replace("RTP/AVP 8 101", "RTP/AVP 96")
        .replace("a=rtpmap:8", "a=rtpmap:96");
    assert_eq!(
        ours.accept_answer(&parse(renumbered.as_bytes()).unwrap()),
        Err(Error::NoCommonCodec)
    );
    let rejected = ack.replace("m=audio 7000", "m=audio 0");
    assert_eq!(
        ours.accept_answer(&parse(rejected.as_bytes()).unwrap()),
        Err(Error::NoCommonCodec)
    );
    let two = std::format!("{ack}m=video 0 RTP/AVP 96\r\n");
    assert_eq!(
        ours.accept_answer(&parse(two.as_bytes()).unwrap()),
        Err(Error::AnswerMismatch)
    );
    // The peer answering recvonly means we only send.
    let recvonly = std::format!("{ack}a=recvonly\r\n");
    let n = ours
        .accept_answer(&parse(recvonly.as_bytes()).unwrap())
        .unwrap();
    assert_eq!(n.direction, Direction::SendOnly);
    // Config allowing no codec cannot offer.
    let none = Config {
        pcmu: false,
        pcma: false,
        ..cfg
    };
    assert_eq!(Offer::new(&none, local(), 1, 1), Err(Error::NoCommonCodec));
}

#[test]
fn offer_answer_loop_between_two_ccedge_nodes() {
    let a_cfg = Config {
        prefer: Preference::Pcma,
        ..Config::default()
    };
    let a = Offer::new(&a_cfg, local(), 1, 1).unwrap();
    let mut ob = [0u8; 512];
    let ol = a.emit(&mut ob).unwrap();
    let b_side = negotiate(&parse(&ob[..ol]).unwrap(), &Config::default()).unwrap();
    assert_eq!(b_side.codec, Codec::Pcma);
    let mut ab = [0u8; 512];
    let al = b_side
        .answer("192.0.2.9:5000".parse().unwrap(), 2, 1)
        .emit(&mut ab)
        .unwrap();
    let a_side = a.accept_answer(&parse(&ab[..al]).unwrap()).unwrap();
    assert_eq!(a_side.codec, Codec::Pcma);
    assert_eq!(a_side.remote, Some("192.0.2.9:5000".parse().unwrap()));
    assert_eq!(a_side.telephone_event, b_side.telephone_event);
}

// ---- properties ----------------------------------------------------------------------------

fn sdp_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v=0".to_owned()),
        Just("c=IN IP4 192.0.2.1".to_owned()),
        Just("c=IN IP6 ::".to_owned()),
        Just("c=IN IP4 0.0.0.0".to_owned()),
        Just("o=- 1 1 IN IP4 192.0.2.1".to_owned()),
        (
            prop::sample::select(&["audio", "video", "image", "foo"][..]),
            0u32..70000,
            prop::sample::select(&["RTP/AVP", "RTP/SAVP", "udptl", "X"][..]),
            prop::collection::vec(0u16..140, 0..6)
        )
            .prop_map(|(k, p, pr, f)| {
                let f: Vec<String> = f.iter().map(|x| x.to_string()).collect();
                std::format!("m={k} {p} {pr} {}", f.join(" "))
            }),
        (
            0u16..140,
            prop::sample::select(&["PCMU", "pcma", "telephone-event", "G729", ""][..]),
            prop::sample::select(&["8000", "16000", "", "8000/1", "x"][..])
        )
            .prop_map(|(p, e, r)| std::format!("a=rtpmap:{p} {e}/{r}")),
        (0u16..140, "[0-9,\\- ]{0,10}").prop_map(|(p, v)| std::format!("a=fmtp:{p} {v}")),
        prop::sample::select(
            &[
                "a=sendonly",
                "a=recvonly",
                "a=inactive",
                "a=sendrecv",
                "a=ptime:20",
                "a=maxptime:",
                "a=ptime:99999999",
                "a=",
                "x",
                ""
            ][..]
        )
        .prop_map(str::to_owned),
        "[ -~]{0,30}",
    ]
}

fn check_answer_round_trip(
    sd: &SessionDescription<'_>,
    n: &Negotiated,
) -> Result<(), TestCaseError> {
    let ours = local();
    let answer = n.answer(ours, 77, 3);
    let mut buf = [0u8; 1024];
    let len = answer.emit(&mut buf).unwrap();
    let back = parse(&buf[..len]).unwrap();
    prop_assert_eq!(back.media.len(), sd.media.len());
    prop_assert_eq!(back.connection, Some(ours.ip()));
    let o = back.origin.unwrap();
    prop_assert_eq!((o.session_id, o.session_version), ("77", "3"));
    let mut ours_seen = 0;
    for (a, b) in sd.media.iter().zip(back.media.iter()) {
        prop_assert_eq!(a.kind, b.kind);
        prop_assert_eq!(a.proto, b.proto);
        if b.port != 0 {
            ours_seen += 1;
            prop_assert_eq!(b.port, ours.port());
            prop_assert_eq!(b.formats[0], n.payload_type);
            prop_assert_eq!(b.direction, Some(n.direction));
            prop_assert_eq!(b.ptime, Some(PTIME_MS));
            let map = b.rtpmap(n.payload_type).unwrap();
            prop_assert_eq!(map.encoding, n.codec.encoding_name());
            if let Some(te) = n.telephone_event {
                prop_assert_eq!(b.formats.get(1).copied(), Some(te.payload_type));
                prop_assert_eq!(b.fmtp(te.payload_type), Some("0-15"));
            }
            // Re-negotiating our own answer as if it were an offer gives the same codec.
            let again = negotiate(&back, &Config::default()).unwrap();
            prop_assert_eq!(again.payload_type, n.payload_type);
        }
    }
    prop_assert_eq!(ours_seen, 1);
    Ok(())
}

proptest! {
    #[test]
    fn parse_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(sd) = parse(&bytes) {
            let _ = negotiate(&sd, &Config::default());
        }
    }

    #[test]
    fn parse_and_negotiate_never_panic_on_sdp_like_text(lines in prop::collection::vec(sdp_line(), 0..16), lf in any::<bool>()) {
        let mut body = String::from("v=0");
        for l in &lines {
            body += if lf { "\n" } else { "\r\n" };
            body += l;
        }
        let parsed = parse(body.as_bytes());
        if let Ok(sd) = &parsed {
            if let Ok(n) = negotiate(sd, &Config::default()) {
                check_answer_round_trip(sd, &n)?;
            }
        }
    }

    #[test]
    fn answer_round_trips(
        lines in prop::collection::vec((prop::sample::select(&["audio", "video", "image"][..]), 0u16..4, any::<bool>()), 1..=SDP_MAX_MEDIA),
        audio_at in 0usize..SDP_MAX_MEDIA,
        dynamic in any::<bool>(),
        te in prop::option::of(99u8..=127),
        dir in prop::sample::select(&["", "a=sendonly", "a=recvonly", "a=inactive", "a=sendrecv"][..]),
        v6 in any::<bool>(),
    ) {
        let mut body = String::from("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n");
        body += if v6 { "c=IN IP6 2001:db8::5\r\n" } else { "c=IN IP4 192.0.2.5\r\n" };
        body += "t=0 0\r\n";
        let audio_at = audio_at.min(lines.len() - 1);
        for (i, (kind, port, savp)) in lines.iter().enumerate() {
            if i == audio_at {
                let codec = if dynamic { "98" } else { "8" };
                let te_fmt = te.map(|t| std::format!(" {t}")).unwrap_or_default();
                body += &std::format!("m=audio 4000 RTP/AVP 18 {codec}{te_fmt}\r\n");
                if dynamic {
                    body += "a=rtpmap:98 PCMU/8000\r\n";
                }
                if let Some(t) = te {
                    body += &std::format!("a=rtpmap:{t} telephone-event/8000\r\n");
                }
                if !dir.is_empty() {
                    body += &std::format!("{dir}\r\n");
                }
            } else if *kind == "image" {
                body += &std::format!("m=image {port} udptl t38\r\n");
            } else {
                let proto = if *savp { "RTP/SAVP" } else { "RTP/AVP" };
                body += &std::format!("m={kind} {port} {proto} 18\r\n");
            }
        }
        let sd = parse(body.as_bytes()).unwrap();
        let n = negotiate(&sd, &Config::default()).unwrap();
        prop_assert_eq!(n.codec, if dynamic { Codec::Pcmu } else { Codec::Pcma });
        prop_assert_eq!(n.telephone_event.map(|t| t.payload_type.get()), te);
        prop_assert_eq!(n.remote.unwrap().port(), 4000);
        check_answer_round_trip(&sd, &n)?;
    }
}

// ---- which line an offer with several audio lines is answered on --------------------------

#[test]
fn an_offer_is_answered_on_the_first_audio_line_with_an_allowed_codec() {
    // Found by the `sdp` fuzz target. Both lines list PT 8; line 1's rtpmap for 8 runs into a
    // form feed, so there PT 8 keeps its static meaning, PCMA, which this node does not allow;
    // line 2 remaps PT 8 to PCMU. The answer uses line 2 and says so.
    let body: &[u8] = b"v=0\r\no=gw 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
        m=audio 40000 RTP/AVP 5 8 101\r\na=rtpmap:8 PCMU/8000\x0cv=0\r\n\
        m=audio 40002 RTP/AVP 5 8 101\r\na=rtpmap:8 PCMU/8000\r\n";
    let sd = parse(body).unwrap();
    assert_eq!(sd.media[0].rtpmap(pt(8)), None);
    let pcmu_only = Config {
        pcma: false,
        ..Config::default()
    };
    let n = negotiate(&sd, &pcmu_only).unwrap();
    assert_eq!(n.media_index(), 1);
    assert_eq!((n.payload_type, n.codec), (pt(8), Codec::Pcmu));
    let sdp = answer_text(&n);
    let m_lines: Vec<&str> = sdp.lines().filter(|l| l.starts_with("m=")).collect();
    assert_eq!(m_lines.len(), 2, "{sdp}");
    assert!(m_lines[0].starts_with("m=audio 0 "), "{sdp}");
    assert!(m_lines[1].starts_with("m=audio 30000 "), "{sdp}");
    // With PCMA allowed, line 1 is usable and is the one answered.
    let n = negotiate(&sd, &Config::default()).unwrap();
    assert_eq!((n.media_index(), n.codec), (0, Codec::Pcma));
}

#[test]
fn the_first_usable_audio_line_is_chosen() {
    let n = offer(
        "v=0
o=gw 1 1 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 40000 RTP/AVP 0
m=audio 40002 RTP/AVP 8",
    )
    .unwrap();
    assert_eq!(n.media_index(), 0);
    assert_eq!(n.codec, Codec::Pcmu);
}

#[test]
fn a_codec_rich_offer_keeps_telephone_event_listed_late_and_declines_extra_streams() {
    // Twenty payload types before telephone-event, as SBCs that offer every codec they have
    // write them, and a video, a second audio and an image stream after ours.
    let mut m = String::from("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP");
    for p in 102..122 {
        m += &std::format!(" {p}");
    }
    m += " 0 101\r\n";
    for p in 102..122 {
        m += &std::format!("a=rtpmap:{p} X-CODEC-{p}/8000\r\n");
    }
    m += "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";
    m += "m=video 5000 RTP/AVP 96\r\nm=audio 0 RTP/AVP 0\r\nm=image 6000 udptl t38\r\n";
    m += "m=video 5002 RTP/AVP 97\r\nm=text 5004 RTP/AVP 98\r\n";
    let sd = parse(m.as_bytes()).unwrap();
    assert_eq!(sd.media.len(), 6);
    let n = negotiate(&sd, &Config::default()).unwrap();
    assert_eq!(n.codec, Codec::Pcmu);
    assert!(
        n.telephone_event.is_some(),
        "telephone-event listed 22nd is kept"
    );
}

// ---- rtcp-mux (RFC 5761) ----------------------------------------------------------------------

#[test]
fn rtcp_mux_is_answered_only_when_offered() {
    let with = std::format!("{SIPP_UAC}\na=rtcp-mux");
    let n = offer(&with).unwrap();
    assert!(n.rtcp_mux);
    assert!(answer_text(&n).contains("a=rtcp-mux\r\n"));
    let n = offer(SIPP_UAC).unwrap();
    assert!(!n.rtcp_mux);
    assert!(!answer_text(&n).contains("rtcp-mux"));
}

// ---- a=rtcp (RFC 3605) ------------------------------------------------------------------------

#[test]
fn rtcp_port_is_read_from_the_offer_and_ours_is_the_rtp_port_without_mux() {
    let with = std::format!("{SIPP_UAC}\na=rtcp:53020 IN IP4 127.0.0.1");
    let n = offer(&with).unwrap();
    assert_eq!(n.remote_rtcp_port, Some(53020));
    let n = offer(SIPP_UAC).unwrap();
    assert_eq!(n.remote_rtcp_port, None);
    // Without rtcp-mux the answer tells the peer to send RTCP to our RTP port, where it is
    // told apart from RTP by the RFC 5761 rule; with rtcp-mux that is implied.
    assert!(answer_text(&n).contains("a=rtcp:30000\r\n"));
    let n = offer(&std::format!("{SIPP_UAC}\na=rtcp-mux")).unwrap();
    assert!(!answer_text(&n).contains("a=rtcp:"));
    // Port 0 or garbage is not a port.
    assert_eq!(
        offer(&std::format!("{SIPP_UAC}\na=rtcp:0"))
            .unwrap()
            .remote_rtcp_port,
        None
    );
    assert_eq!(
        offer(&std::format!("{SIPP_UAC}\na=rtcp:x"))
            .unwrap()
            .remote_rtcp_port,
        None
    );
}
