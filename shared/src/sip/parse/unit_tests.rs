//! Parser unit tests: typical traffic, framing, bounds, error classification.

extern crate alloc;
extern crate std;

use alloc::format;
use alloc::string::{String, ToString};

use super::fixtures::{BYE, OK_BYE, OPTIONS_LF, SIPP_INVITE};
use super::*;

fn req(d: &[u8]) -> Request<'_> {
    match parse(d) {
        Ok(Message::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

#[test]
fn sipp_invite_with_sdp() {
    let r = req(SIPP_INVITE);
    assert_eq!(r.method(), Method::Invite);
    assert_eq!(r.uri(), "sip:4930123456@192.0.2.20:5060");
    let i = r.to_incoming().unwrap();
    assert_eq!(i.method_token, "INVITE");
    assert_eq!(
        i.vias.as_slice(),
        ["SIP/2.0/UDP 192.0.2.10:5061;branch=z9hG4bK-3712-1-0;rport"]
    );
    assert_eq!(i.top_branch, Some("z9hG4bK-3712-1-0"));
    assert_eq!(
        i.from,
        "\"sipp\" <sip:sipp@192.0.2.10:5061>;tag=3712SIPpTag001"
    );
    assert_eq!(i.from_uri, "sip:sipp@192.0.2.10:5061");
    assert_eq!(i.from_tag, Some("3712SIPpTag001"));
    assert_eq!(
        (i.to, i.to_uri, i.to_tag),
        (
            "<sip:4930123456@192.0.2.20:5060>",
            "sip:4930123456@192.0.2.20:5060",
            None
        )
    );
    assert_eq!(i.call_id, "1-3712@192.0.2.10");
    assert_eq!((i.cseq, i.cseq_method), (1, Method::Invite));
    assert_eq!(
        i.contact_uri,
        Some("sip:sipp@192.0.2.10:5061;transport=udp")
    );
    assert_eq!(i.max_forwards, Some(70));
    assert_eq!(i.content_type, Some("application/sdp"));
    assert_eq!(i.user_agent, Some("sipp-load/3.7"));
    assert_eq!(i.require, None);
    assert_eq!(i.body.len(), 232);
    assert!(i.body.starts_with(b"v=0\r\n") && i.body.ends_with(b"a=sendrecv\r\n"));
    assert_eq!(r.header("s"), Some("Performance Test"));
    let via = Via::parse(i.vias[0]).unwrap();
    assert_eq!((via.transport, via.sent_by), ("UDP", "192.0.2.10:5061"));
    assert_eq!(via.params.get("rport"), Some(""));
}

#[test]
fn compact_bye_and_lf_options_and_response() {
    let i = req(BYE).to_incoming().unwrap();
    assert_eq!(i.method, Method::Bye);
    assert_eq!(i.vias.len(), 2);
    assert_eq!(i.top_branch, Some("z9hG4bKproxy77"));
    assert_eq!(
        (i.from_tag, i.to_tag),
        (Some("3712SIPpTag001"), Some("cc-a81f"))
    );
    assert_eq!((i.call_id, i.cseq), ("1-3712@192.0.2.10", 2));
    assert!(i.body.is_empty());

    let i = req(OPTIONS_LF).to_incoming().unwrap();
    assert_eq!(
        (i.method, i.cseq, i.call_id),
        (Method::Options, 42, "ping-42@203.0.113.5")
    );
    assert_eq!(i.to_uri, "sip:192.0.2.20");

    let Ok(Message::Response(r)) = parse(OK_BYE) else {
        panic!()
    };
    assert_eq!((r.status(), r.reason()), (200, "OK"));
    let i = r.to_incoming_response().unwrap();
    assert_eq!(i.top_branch, Some("z9hG4bKcc-bye-1"));
    assert_eq!((i.cseq, i.cseq_method), (1, Method::Bye));
    assert_eq!(
        (i.from_tag, i.to_tag),
        (Some("cc-a81f"), Some("3712SIPpTag001"))
    );
    assert_eq!(i.call_id, "1-3712@192.0.2.10");
}

#[test]
fn not_sip_is_dropped() {
    for d in [
        &b""[..],
        b"\r\n\r\n",
        b"\x00\x01\x02",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"hello",
        b"\xff\xfe INVITE sip:a@b SIP/2.0\r\n\r\n",
    ] {
        let e = parse(d).unwrap_err();
        assert_eq!((e, e.status()), (ParseError::NotSip, None), "{d:?}");
        assert!(salvage(d).is_none());
    }
}

#[test]
fn keepalive_crlfs_before_a_request_are_skipped() {
    let mut d = b"\r\n\r\n".to_vec();
    d.extend_from_slice(BYE);
    assert_eq!(req(&d).to_incoming().unwrap().call_id, "1-3712@192.0.2.10");
}

#[test]
fn trailing_bytes_after_content_length_are_ignored() {
    let mut d = BYE.to_vec();
    d.extend_from_slice(b"garbage after the message");
    assert!(req(&d).body().is_empty());
}

#[test]
fn missing_content_length_takes_the_rest() {
    let d = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n\r\nhello";
    assert_eq!(req(d).to_incoming().unwrap().body, b"hello");
}

fn bad(d: &[u8]) -> ParseError {
    match parse(d) {
        Err(e) => e,
        Ok(Message::Request(r)) => r.to_incoming().unwrap_err(),
        Ok(Message::Response(r)) => r.to_incoming_response().unwrap_err(),
    }
}

#[test]
fn framing_errors() {
    use ParseError::BadRequest as R;
    let head = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n";
    let tail = "From: <sip:c@d>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n";
    let with = |extra: &str, end: &str| format!("{head}{tail}{extra}{end}").into_bytes();
    assert_eq!(bad(&with("", "")), R(Problem::HeadersUnterminated));
    assert_eq!(
        bad(&with("No colon here\r\n", "\r\n")),
        R(Problem::HeaderSyntax)
    );
    assert_eq!(
        bad(&with("Bad Name: x\r\n", "\r\n")),
        R(Problem::HeaderSyntax)
    );
    let mut not_utf8 = with("X: a?\r\n", "\r\n");
    let q = not_utf8.iter().position(|&b| b == b'?').unwrap();
    not_utf8[q] = 0xff;
    assert_eq!(bad(&not_utf8), R(Problem::NotUtf8));
    assert_eq!(
        bad(&with("Content-Length: 5\r\n", "\r\nabc")),
        R(Problem::BodyTruncated)
    );
    assert_eq!(bad(&with("l: 1x\r\n", "\r\n")), R(Problem::ContentLength));
    assert_eq!(
        bad(&with("l: 99999999999999999999999\r\n", "\r\n")),
        R(Problem::ContentLength)
    );
    assert_eq!(
        bad(&with("Max-Forwards: 9999999999\r\n", "\r\n")),
        R(Problem::Invalid(HeaderName::MaxForwards))
    );
    assert_eq!(
        bad(&with("Call-ID: y\r\n", "\r\n")),
        R(Problem::Duplicate(HeaderName::CallId))
    );
    let folded_first = format!("OPTIONS sip:a@b SIP/2.0\r\n x: y\r\n{tail}\r\n");
    assert_eq!(bad(folded_first.as_bytes()), R(Problem::HeaderSyntax));
    assert!(parse(&with("", "\r\n")).is_ok());
    // Without To:
    let no_to = format!("{head}From: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n");
    assert_eq!(bad(no_to.as_bytes()), R(Problem::Missing(HeaderName::To)));
    let no_via = format!("OPTIONS sip:a@b SIP/2.0\r\n{tail}\r\n");
    assert_eq!(bad(no_via.as_bytes()), R(Problem::Missing(HeaderName::Via)));
}

#[test]
fn start_line_errors() {
    use ParseError::{BadRequest as R, BadResponse as S};
    assert_eq!(bad(b"INVITE sip:a@b SIP/3.0\r\n\r\n"), R(Problem::Version));
    assert_eq!(
        bad(b"INVITE sip:a@b SIP/2.0 extra\r\n\r\n"),
        ParseError::NotSip
    );
    assert_eq!(
        bad(b"INVITE sip:a@b x SIP/2.0\r\n\r\n"),
        R(Problem::StartLine)
    );
    assert_eq!(
        bad(b"INVITE sip:a@b SIP/2.x\r\n\r\n"),
        R(Problem::StartLine)
    );
    assert_eq!(
        bad(b"IN(VITE sip:a@b SIP/2.0\r\n\r\n"),
        R(Problem::StartLine)
    );
    assert_eq!(bad(b"INVITE SIP/2.0\r\n\r\n"), R(Problem::StartLine));
    assert_eq!(
        bad(b"INVITE nocolon SIP/2.0\r\n\r\n"),
        R(Problem::RequestUri)
    );
    assert_eq!(
        bad(b"INVITE sip:a@b SIP/2.0"),
        R(Problem::HeadersUnterminated)
    );
    assert_eq!(bad(b"SIP/2.0 20 OK\r\n\r\n"), S(Problem::StartLine));
    assert_eq!(bad(b"SIP/2.0 700 Huh\r\n\r\n"), S(Problem::StartLine));
    assert_eq!(bad(b"SIP/3.0 200 OK\r\n\r\n"), S(Problem::Version));
    assert_eq!(
        bad(b"SIP/2.0 200 OK\r\n\r\n"),
        S(Problem::Missing(HeaderName::Via))
    );
    assert_eq!(R(Problem::Version).status(), Some(505));
    assert_eq!(S(Problem::Version).status(), None);
    assert_eq!(R(Problem::StartLine).reason_phrase(), "Bad Request");
}

#[test]
fn bounds_answer_513() {
    let mut d = SIPP_INVITE.to_vec();
    d.resize(SIP_MAX_DATAGRAM + 1, b' ');
    let e = parse(&d).unwrap_err();
    assert_eq!(
        (e, e.status()),
        (ParseError::BadRequest(Problem::TooLarge), Some(513))
    );
    assert_eq!(salvage(&d).unwrap().call_id, "1-3712@192.0.2.10");

    let mut d = String::from("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n");
    for n in 0..SIP_MAX_HEADERS {
        d.push_str(&format!("X-{n}: {n}\r\n"));
    }
    d.push_str("\r\n");
    let e = parse(d.as_bytes()).unwrap_err();
    assert_eq!(
        (e, e.status()),
        (ParseError::BadRequest(Problem::TooManyHeaders), Some(513))
    );
    assert_eq!(e.to_string(), "Message Too Large (too many header fields)");
}

#[test]
fn header_lookup_by_long_and_compact_names() {
    let r = req(BYE);
    assert_eq!(r.header("VIA"), r.header("v"));
    assert_eq!(r.header("call-id"), Some("1-3712@192.0.2.10"));
    assert_eq!(r.header("I"), Some("1-3712@192.0.2.10"));
    assert_eq!(r.headers("Via").count(), 2);
    assert_eq!(r.header("X-Missing"), None);
    assert_eq!(HeaderName::from_name("x"), HeaderName::SessionExpires);
    assert_eq!(HeaderName::from_name("u"), HeaderName::AllowEvents);
    assert_eq!(HeaderName::from_name("K"), HeaderName::Supported);
    assert_eq!(HeaderName::from_name("e"), HeaderName::ContentEncoding);
    assert_eq!(HeaderName::from_name("o"), HeaderName::Event);
    assert_eq!(HeaderName::from_name("r"), HeaderName::ReferTo);
    assert_eq!(HeaderName::from_name("z"), HeaderName::Other);
    assert_eq!(HeaderName::from_name("Cseq"), HeaderName::CSeq);
    assert_eq!(HeaderName::CallId.as_str(), Some("Call-ID"));
    assert_eq!(r.fields().as_slice().len(), 8);
}

#[test]
fn cseq_method_must_match() {
    let d = b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: x\r\nCSeq: 1 bye\r\n\r\n";
    assert_eq!(
        req(d).to_incoming().unwrap_err(),
        ParseError::BadRequest(Problem::CSeqMismatch)
    );
}

#[test]
fn contact_star_and_via_overflow() {
    let d = b"REGISTER sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1, SIP/2.0/UDP i, SIP/2.0/UDP j, SIP/2.0/UDP k\r\nFrom: <sip:c@d>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContact: *\r\nExpires: 0\r\n\r\n";
    let i = req(d).to_incoming().unwrap();
    assert_eq!(i.contact_uri, Some("*"));
    assert_eq!(i.vias.len(), 4);
    let mut more = d.to_vec();
    let at = more.windows(9).position(|w| w == b"From: <si").unwrap();
    // Top up to one more Via than the limit.
    for _ in 4..=SIP_MAX_VIAS {
        more.splice(at..at, b"v: SIP/2.0/UDP l\r\n".iter().copied());
    }
    let e = req(&more).to_incoming().unwrap_err();
    assert_eq!(
        (e, e.status()),
        (ParseError::BadRequest(Problem::TooManyVias), Some(513))
    );
    assert_eq!(salvage(&more).unwrap().vias.len(), SIP_MAX_VIAS);
}

#[test]
fn message_view_stays_small() {
    // The index is the only sizeable part: SIP_MAX_HEADERS × (two slices + a tag).
    assert!(core::mem::size_of::<Message<'_>>() <= 48 * SIP_MAX_HEADERS + 128);
    assert!(core::mem::size_of::<ParseError>() <= 4);
}
