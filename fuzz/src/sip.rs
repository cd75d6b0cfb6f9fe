//! `shared::sip::parse`, `Request::to_incoming`, `Response::to_incoming_response`, `salvage`.

use shared::limits::{SIP_MAX_DATAGRAM, SIP_MAX_VIAS};
use shared::sip::{self, Message, Method, ParseError};

use crate::within;

fn inside(data: &[u8], s: &str, what: &str) {
    assert!(
        within(data, s.as_bytes()),
        "{what} {s:?} is not borrowed from the datagram"
    );
}

/// Parses `data` as one SIP datagram and checks what the views promise.
pub fn check(data: &[u8]) {
    let parsed = sip::parse(data);
    let salvaged = sip::salvage(data);
    if let Some(s) = &salvaged {
        assert!(!s.method_token.is_empty());
        assert!(!s.vias.is_empty(), "salvage returns Some only with a Via");
        assert!(s.vias.len() <= SIP_MAX_VIAS);
        inside(data, s.method_token, "salvaged method");
        inside(data, s.call_id, "salvaged Call-ID");
        for v in &s.vias {
            inside(data, v, "salvaged Via");
        }
        assert!(s.body.is_empty());
    }
    match parsed {
        Err(e) => match e {
            ParseError::NotSip => assert_eq!(e.status(), None),
            ParseError::BadResponse(_) => assert_eq!(e.status(), None),
            ParseError::BadRequest(_) => {
                let s = e.status().expect("a bad request is answered");
                assert!(matches!(s, 400 | 505 | 513), "status {s}");
                assert!(!e.reason_phrase().is_empty());
            }
        },
        Ok(Message::Request(r)) => {
            assert!(
                data.len() <= SIP_MAX_DATAGRAM,
                "oversized datagram accepted"
            );
            assert!(!r.method_token().is_empty());
            inside(data, r.method_token(), "method");
            inside(data, r.uri(), "Request-URI");
            assert_eq!(r.method(), Method::from_token(r.method_token().as_bytes()));
            assert!(
                within(data, r.body()),
                "body not borrowed from the datagram"
            );
            for h in r.fields().as_slice() {
                inside(data, h.name, "header name");
                inside(data, h.value, "header value");
            }
            check_content_length(r.header("Content-Length"), r.body());
            match r.to_incoming() {
                Ok(inc) => {
                    assert!(!inc.call_id.is_empty(), "empty Call-ID accepted");
                    assert!(inc.call_id.bytes().all(|b| b.is_ascii_graphic()));
                    inside(data, inc.call_id, "Call-ID");
                    inside(data, inc.from, "From");
                    inside(data, inc.to, "To");
                    inside(data, inc.from_uri, "From URI");
                    inside(data, inc.to_uri, "To URI");
                    assert!(!inc.vias.is_empty() && inc.vias.len() <= SIP_MAX_VIAS);
                    for v in &inc.vias {
                        inside(data, v, "Via");
                    }
                    if let Some(b) = inc.top_branch {
                        inside(data, b, "branch");
                    }
                    assert_eq!(inc.method, r.method());
                    assert_eq!(inc.method_token, r.method_token());
                    assert_eq!(
                        inc.cseq_method,
                        Method::from_token(r.method_token().as_bytes()),
                        "CSeq method must equal the request method"
                    );
                    assert_eq!(inc.body, r.body());
                    // What salvage reads for an error answer agrees with the full view.
                    let s = salvaged.expect("salvage of a well-formed request");
                    assert_eq!(s.method_token, inc.method_token);
                    assert_eq!(s.call_id, inc.call_id, "salvage Call-ID differs");
                    assert_eq!(s.cseq, inc.cseq, "salvage CSeq differs");
                    assert_eq!(s.vias.first(), inc.vias.first(), "salvage top Via differs");
                    assert_eq!(s.top_branch, inc.top_branch, "salvage branch differs");
                }
                Err(e) => {
                    assert!(matches!(e, ParseError::BadRequest(_)), "{e:?}");
                    assert!(e.status().is_some());
                }
            }
        }
        Ok(Message::Response(r)) => {
            assert!(
                data.len() <= SIP_MAX_DATAGRAM,
                "oversized datagram accepted"
            );
            assert!((100..=699).contains(&r.status()), "status {}", r.status());
            inside(data, r.reason(), "reason");
            assert!(within(data, r.body()));
            check_content_length(r.header("Content-Length"), r.body());
            assert!(salvaged.is_none(), "salvage must refuse a response");
            match r.to_incoming_response() {
                Ok(inc) => {
                    assert_eq!(inc.status, r.status());
                    assert!(!inc.call_id.is_empty(), "empty Call-ID accepted");
                    inside(data, inc.call_id, "Call-ID");
                    if let Some(b) = inc.top_branch {
                        inside(data, b, "branch");
                    }
                }
                Err(e) => {
                    assert!(matches!(e, ParseError::BadResponse(_)), "{e:?}");
                    assert_eq!(e.status(), None);
                }
            }
        }
    }
}

/// A parsed message's body is exactly Content-Length bytes when the header is there.
fn check_content_length(cl: Option<&str>, body: &[u8]) {
    if let Some(v) = cl {
        if let Ok(n) = v.trim().parse::<usize>() {
            assert_eq!(
                body.len(),
                n,
                "body length differs from Content-Length {v:?}"
            );
        }
    }
}
