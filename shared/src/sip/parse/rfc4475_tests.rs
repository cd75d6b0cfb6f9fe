//! RFC 4475 torture messages: every message of the RFC, with the outcome a UAS should reach
//! (per `testdata/rfc4475/verdicts.tsv`), plus the specific values the RFC calls out.

extern crate alloc;
extern crate std;

use alloc::string::ToString;
use alloc::vec::Vec;

use super::*;
use crate::sip::Method;

macro_rules! dat {
    ($dir:literal, $name:literal) => {
        include_bytes!(concat!(
            "../../../testdata/rfc4475/",
            $dir,
            "/",
            $name,
            ".dat"
        )) as &[u8]
    };
}

macro_rules! c {
    ($dir:literal, $name:literal, $expect:expr) => {
        ($name, dat!($dir, $name), $expect)
    };
}

/// What a UAS does with a message.
#[derive(Copy, Clone, Debug, PartialEq)]
enum Expect {
    /// Well-formed: parses and the `Incoming`/`IncomingResponse` view builds.
    Accept,
    /// Invalid, but the verdict allows tolerance and ccedge tolerates it (view builds).
    Tolerate,
    /// Rejected with this status (`None` = dropped silently).
    Reject(Option<u16>),
    /// Well-formed with this many Via values: accepted if `SIP_MAX_VIAS` allows, else 513.
    AcceptIfVias(usize),
}
use Expect::*;

/// Every message of RFC 4475 with ccedge's outcome. `longreq` is handled in its own test
/// (its 34 Via values exceed `SIP_MAX_VIAS`).
const CASES: &[(&str, &[u8], Expect)] = &[
    // 3.1.1 valid
    c!("3.1.1-valid", "wsinv", Accept),
    c!("3.1.1-valid", "intmeth", Accept),
    c!("3.1.1-valid", "esc01", Accept),
    c!("3.1.1-valid", "escnull", Accept),
    c!("3.1.1-valid", "esc02", Accept),
    c!("3.1.1-valid", "lwsdisp", Accept),
    c!("3.1.1-valid", "dblreq", Accept),
    c!("3.1.1-valid", "semiuri", Accept),
    c!("3.1.1-valid", "transports", AcceptIfVias(5)),
    c!("3.1.1-valid", "mpart01", Accept),
    c!("3.1.1-valid", "unreason", Accept),
    c!("3.1.1-valid", "noreason", Accept),
    // 3.1.2 invalid
    c!("3.1.2-invalid", "badinv01", Reject(Some(400))),
    c!("3.1.2-invalid", "clerr", Reject(Some(400))),
    c!("3.1.2-invalid", "ncl", Reject(Some(400))),
    c!("3.1.2-invalid", "scalar02", Reject(Some(400))),
    c!("3.1.2-invalid", "scalarlg", Reject(None)),
    c!("3.1.2-invalid", "quotbal", Reject(Some(400))),
    c!("3.1.2-invalid", "ltgtruri", Reject(Some(400))),
    c!("3.1.2-invalid", "lwsruri", Reject(Some(400))),
    // "may reject or tolerate": extra spaces in the request line are tolerated.
    c!("3.1.2-invalid", "lwsstart", Tolerate),
    c!("3.1.2-invalid", "trws", Tolerate),
    // "400 acceptable, or ignore escaped headers": the URI is passed up as is.
    c!("3.1.2-invalid", "escruri", Tolerate),
    // "better ignore Date if unused": Date is never parsed.
    c!("3.1.2-invalid", "baddate", Tolerate),
    // "400 reasonable": an addr-spec Contact with `?` must be in <>.
    c!("3.1.2-invalid", "regbadct", Reject(Some(400))),
    // "must not break; 400 reasonable or ignore spaces": spaces inside <> are ignored.
    c!("3.1.2-invalid", "badaspec", Tolerate),
    // "400 reasonable or infer quotes": an unquoted display name is taken as is.
    c!("3.1.2-invalid", "baddn", Tolerate),
    c!("3.1.2-invalid", "badvers", Reject(Some(505))),
    c!("3.1.2-invalid", "mismatch01", Reject(Some(400))),
    // "501 (400 acceptable)": the CSeq mismatch is caught first.
    c!("3.1.2-invalid", "mismatch02", Reject(Some(400))),
    c!("3.1.2-invalid", "bigcode", Reject(None)),
    // 3.2 transaction: parsed; the transaction layer decides about the bare magic cookie.
    c!("3.2-transaction", "badbranch", Accept),
    // 3.3 application: parsed; the layer above answers 4xx/5xx from the exposed fields,
    // except the ones whose framing or mandatory headers are broken.
    c!("3.3-application", "insuf", Reject(Some(400))),
    c!("3.3-application", "unkscm", Accept),
    c!("3.3-application", "novelsc", Accept),
    c!("3.3-application", "unksm2", Accept),
    c!("3.3-application", "bext01", Accept),
    c!("3.3-application", "invut", Accept),
    c!("3.3-application", "regaut01", Accept),
    c!("3.3-application", "multi01", Reject(Some(400))),
    c!("3.3-application", "mcl01", Reject(Some(400))),
    c!("3.3-application", "bcast", Accept),
    c!("3.3-application", "zeromf", Accept),
    c!("3.3-application", "cparam01", Accept),
    c!("3.3-application", "cparam02", Accept),
    c!("3.3-application", "regescrt", Accept),
    c!("3.3-application", "sdp01", Accept),
    // 3.4: RFC 2543 compatibility kept (no branch, From tag, Content-Length, Max-Forwards).
    c!("3.4-backward-compat", "inv2543", Accept),
];

const LONGREQ: &[u8] = dat!("3.1.1-valid", "longreq");

/// Every message the parser handles as a whole, then builds its view.
fn outcome(d: &[u8]) -> Result<(), ParseError> {
    match parse(d)? {
        Message::Request(r) => r.to_incoming().map(|_| ()),
        Message::Response(r) => r.to_incoming_response().map(|_| ()),
    }
}

fn req(d: &[u8]) -> Request<'_> {
    match parse(d) {
        Ok(Message::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn inc(d: &[u8]) -> Incoming<'_> {
    req(d).to_incoming().expect("to_incoming")
}

fn case(name: &str) -> &'static [u8] {
    if name == "longreq" {
        return LONGREQ;
    }
    CASES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, d, _)| *d)
        .expect("known case")
}

#[test]
fn every_verdict_row_has_a_case() {
    let tsv = include_str!("../../../testdata/rfc4475/verdicts.tsv");
    let names: Vec<&str> = tsv
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .collect();
    assert_eq!(names.len(), 49);
    for n in &names {
        assert!(
            *n == "longreq" || CASES.iter().any(|(c, _, _)| c == n),
            "no case for {n}"
        );
    }
    assert_eq!(CASES.len() + 1, names.len());
}

#[test]
fn every_message_gets_its_verdict() {
    for &(name, d, expect) in CASES {
        let got = outcome(d);
        let expect = match expect {
            AcceptIfVias(n) if n <= SIP_MAX_VIAS => Accept,
            AcceptIfVias(_) => Reject(Some(513)),
            e => e,
        };
        match expect {
            Accept | Tolerate | AcceptIfVias(_) => assert!(got.is_ok(), "{name}: {got:?}"),
            Reject(status) => {
                let err = got.expect_err(name);
                assert_eq!(err.status(), status, "{name}: {err:?}");
                if status.is_some() {
                    // The layer above can answer: salvage finds the top Via and the CSeq.
                    let s = salvage(d).unwrap_or_else(|| panic!("{name}: salvage"));
                    assert!(!s.vias.is_empty(), "{name}");
                    assert!(
                        s.cseq_method == s.method || name.starts_with("mismatch"),
                        "{name}"
                    );
                }
            }
        }
    }
}

#[test]
fn reject_reasons_are_the_intended_ones() {
    let problem = |n: &str| outcome(case(n)).unwrap_err();
    use HeaderName as H;
    use ParseError::{BadRequest as Req, BadResponse as Resp};
    assert_eq!(problem("badinv01"), Req(Problem::Invalid(H::Via)));
    assert_eq!(problem("clerr"), Req(Problem::BodyTruncated));
    assert_eq!(problem("ncl"), Req(Problem::ContentLength));
    assert_eq!(problem("scalar02"), Req(Problem::Invalid(H::CSeq)));
    assert_eq!(problem("scalarlg"), Resp(Problem::Invalid(H::CSeq)));
    assert_eq!(problem("quotbal"), Req(Problem::Invalid(H::To)));
    assert_eq!(problem("ltgtruri"), Req(Problem::RequestUri));
    assert_eq!(problem("lwsruri"), Req(Problem::StartLine));
    assert_eq!(problem("regbadct"), Req(Problem::Invalid(H::Contact)));
    assert_eq!(problem("badvers"), Req(Problem::Version));
    assert_eq!(problem("mismatch01"), Req(Problem::CSeqMismatch));
    assert_eq!(problem("mismatch02"), Req(Problem::CSeqMismatch));
    assert_eq!(problem("bigcode"), Resp(Problem::StartLine));
    assert_eq!(problem("insuf"), Req(Problem::Missing(H::From)));
    assert_eq!(problem("mcl01"), Req(Problem::ContentLength));
    assert_eq!(problem("multi01"), Req(Problem::Duplicate(H::From)));
    assert_eq!(
        problem("badvers").to_string(),
        "Version Not Supported (SIP version not supported)"
    );
    assert_eq!(problem("insuf").to_string(), "Bad Request (missing From)");
}

#[test]
fn wsinv_folding_and_lws() {
    let r = req(case("wsinv"));
    let i = r.to_incoming().unwrap();
    assert_eq!(i.method, Method::Invite);
    assert_eq!(
        i.request_uri,
        "sip:vivekg@chair-dnrc.example.com;unknownparam"
    );
    assert_eq!(i.call_id, "wsinv.ndaksdj@192.0.2.1");
    assert_eq!((i.cseq, i.cseq_method), (9, Method::Invite));
    assert_eq!(i.max_forwards, Some(68));
    assert_eq!(i.to_uri, "sip:vivekg@chair-dnrc.example.com");
    assert_eq!(i.to_tag, Some("1918181833n"));
    assert_eq!(i.from_uri, "sip:jdrosen@example.com");
    assert_eq!(i.from_tag, Some("98asjd8"));
    assert_eq!(
        NameAddr::parse(i.from).unwrap().display_name,
        Some(r#""J Rosenberg \\\"""#)
    );
    assert_eq!(i.vias.len(), 3);
    assert_eq!(i.top_branch, Some("390skdjuw"));
    assert_eq!(
        Via::parse(i.vias[1]).unwrap().branch(),
        Some("z9hG4bK9ikj8")
    );
    assert_eq!(
        Via::parse(i.vias[2]).unwrap().branch(),
        Some("z9hG4bK30239")
    );
    assert_eq!(Via::parse(i.vias[2]).unwrap().sent_by, "192.168.255.111");
    assert_eq!(i.contact_uri, Some("sip:jdrosen@example.com"));
    assert_eq!(i.content_type, Some("application/sdp"));
    assert_eq!(i.body.len(), 150);
    assert!(i.body.starts_with(b"v=0\r\n"));
    // Unknown and empty headers are kept, folds shown as one space.
    assert_eq!(r.header("s"), Some(""));
    assert_eq!(
        Unfolded(r.header("newfangledheader").unwrap()).to_string(),
        "newfangled value continued newfangled value"
    );
    assert_eq!(r.header("UnknownHeaderWithUnusualValue"), Some(";;,,;;,;"));
    assert_eq!(r.headers("Via").count(), 2);
    assert_eq!(r.fields().values("v").count(), 3);
}

#[test]
fn intmeth_unknown_method_and_odd_characters() {
    let i = inc(case("intmeth"));
    assert_eq!(i.method, Method::Other);
    assert_eq!(
        i.method_token,
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert_eq!(i.cseq_method, Method::Other);
    assert_eq!(i.cseq, 139_122_385);
    assert_eq!(i.call_id, r#"intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{"#);
    assert_eq!(i.from_tag, Some("_token~1'+`*%!-."));
    assert_eq!(i.top_branch, Some("z9hG4bK-.!%66*_+`'~"));
    assert_eq!(
        uri_user(i.request_uri),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(i.max_forwards, Some(255));
    let r = req(case("intmeth"));
    assert_eq!(
        r.header("extensionHeader-!.%*+_`'~"),
        Some("\u{feff}大停電")
    );
}

#[test]
fn esc01_and_escnull_keep_escapes() {
    let i = inc(case("esc01"));
    assert_eq!(i.to_uri, "sip:%75se%72@example.com");
    assert_eq!(i.from_uri, "sip:I%20have%20spaces@example.net");
    assert_eq!(i.content_type, Some("application/sdp"));
    assert_eq!(
        i.contact_uri,
        Some("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    );
    let i = inc(case("escnull"));
    assert_eq!(i.method, Method::Register);
    assert_eq!(uri_user(i.to_uri), Some("null-%00-null"));
    assert_eq!(i.from_tag, Some("839923423"));
    assert_eq!(i.contact_uri, Some("sip:%00@host5.example.com"));
    assert_eq!(req(case("escnull")).fields().values("Contact").count(), 2);
}

#[test]
fn esc02_escaped_method_is_unknown() {
    let r = req(case("esc02"));
    let i = r.to_incoming().unwrap();
    assert_eq!((i.method, i.method_token), (Method::Other, "RE%47IST%45R"));
    assert_eq!(i.top_branch, Some("z9hG4bK209%fzsnel234"));
    // C%6Fntact is some other header, not Contact.
    assert_eq!(r.fields().values("Contact").count(), 2);
    assert_eq!(
        r.header("C%6Fntact"),
        Some("<sip:alias2@host2.example.com>")
    );
    assert!(i.body.is_empty());
}

#[test]
fn lwsdisp_semiuri_transports() {
    let i = inc(case("lwsdisp"));
    assert_eq!(
        NameAddr::parse(i.from).unwrap().display_name,
        Some("caller")
    );
    assert_eq!(
        (i.from_uri, i.from_tag),
        ("sip:caller@example.com", Some("323"))
    );

    let r = req(case("semiuri"));
    let i = r.to_incoming().unwrap();
    assert_eq!(uri_user(i.request_uri), Some("user;par=u%40example.net"));
    assert_eq!(r.fields().values("Accept").count(), 6);

    // transports.dat carries 5 Via values: every transport token is accepted; whether the
    // request fits depends on SIP_MAX_VIAS.
    let r = req(case("transports"));
    let transports: Vec<_> = r
        .fields()
        .values("Via")
        .map(|v| Via::parse(v).unwrap().transport)
        .collect();
    assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    match r.to_incoming() {
        Ok(i) => assert_eq!(
            (i.vias.len(), i.call_id),
            (5, "transports.kijh4akdnaqjkwendsasfdj")
        ),
        Err(e) => {
            assert!(r.fields().values("Via").count() > SIP_MAX_VIAS);
            assert_eq!(e, ParseError::BadRequest(Problem::TooManyVias));
            assert_eq!(
                salvage(case("transports")).unwrap().call_id,
                "transports.kijh4akdnaqjkwendsasfdj"
            );
        }
    }
}

#[test]
fn dblreq_is_the_register_only() {
    let i = inc(case("dblreq"));
    assert_eq!(i.method, Method::Register);
    assert_eq!(i.call_id, "dblreq.0ha0isndaksdj99sdfafnl3lk233412");
    assert!(i.body.is_empty());
}

#[test]
fn mpart01_body_framed_by_content_length() {
    let d = case("mpart01");
    let i = inc(d);
    assert_eq!(i.body.len(), 553);
    assert!(i.body.contains(&0));
    assert!(i.body.ends_with(b"--7a9cbec02ceef655--\r\n"));
    assert_eq!(
        i.content_type,
        Some("multipart/mixed;boundary=7a9cbec02ceef655")
    );
    assert_eq!(i.user_agent, Some("SIPimp.org/0.2.5 (curses)"));
    let v = Via::parse(i.vias[0]).unwrap();
    assert_eq!(v.params.get("rport"), Some(""));
    assert_eq!(v.sent_by, "127.0.0.1:5070");
}

#[test]
fn longreq_long_values_not_truncated() {
    let r = req(LONGREQ);
    assert_eq!(r.fields().values("Via").count(), 34);
    let bottom = r.fields().values("via").last().unwrap();
    let branch = Via::parse(bottom).unwrap().branch().unwrap();
    assert_eq!(branch.len(), 215);
    assert!(branch.starts_with("verylonglong"));
    assert!(branch.ends_with("longbranchvalue"));
    let from = NameAddr::parse(r.header("From").unwrap()).unwrap();
    assert_eq!(from.tag().unwrap().len(), 155);
    assert!(from.tag().unwrap().ends_with("982424"));
    let long_user = "amazinglylongcallername".repeat(5);
    assert_eq!(from.uri, alloc::format!("sip:{long_user}@example.net"));
    assert!(r.header("Call-ID").unwrap().ends_with("reallylongcallid"));
    assert_eq!(r.body().len(), 150);
    let unknown = "Unknown-LongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLong-Name";
    assert!(r.header(unknown).unwrap().ends_with("-parameter-value"));
    match r.to_incoming() {
        // With room for 34 Vias the whole request is accepted …
        Ok(i) => {
            assert!(i.vias.len() <= SIP_MAX_VIAS);
            assert_eq!(i.from_tag, from.tag());
            assert_eq!(i.vias.len(), 34);
        }
        // … with the configured bound it is refused with 513, and the error answer carries
        // the topmost Vias.
        Err(e) => {
            assert!(r.fields().values("Via").count() > SIP_MAX_VIAS);
            assert_eq!(e, ParseError::BadRequest(Problem::TooManyVias));
            assert_eq!(e.status(), Some(513));
            let s = salvage(LONGREQ).unwrap();
            assert_eq!(s.vias.len(), SIP_MAX_VIAS);
            assert_eq!(s.vias[0], "SIP/2.0/TCP sip33.example.com");
            assert_eq!(s.from_tag, from.tag());
            assert_eq!(s.cseq, 3_882_340);
        }
    }
}

#[test]
fn responses_with_odd_reason_phrases() {
    let Ok(Message::Response(r)) = parse(case("unreason")) else {
        panic!()
    };
    assert_eq!(r.status(), 200);
    assert!(r.reason().starts_with("= 2**3 * 5**2 но сто девяносто"));
    let i = r.to_incoming_response().unwrap();
    assert_eq!((i.cseq, i.cseq_method), (35, Method::Invite));
    assert_eq!(i.to_tag, Some("2229"));
    assert_eq!(r.body().len(), 154);
    let Ok(Message::Response(r)) = parse(case("noreason")) else {
        panic!()
    };
    assert_eq!((r.status(), r.reason()), (100, ""));
    let i = r.to_incoming_response().unwrap();
    assert_eq!(i.top_branch, Some("z9hG4bK2398ndaoe"));
    assert_eq!(i.call_id, "noreason.asndj203insdf99223ndf");
    assert_eq!(
        (i.from_tag, i.to_tag),
        (Some("39ansfi3"), Some("902jndnke3"))
    );
}

#[test]
fn tolerated_invalid_messages_expose_sane_fields() {
    let i = inc(case("lwsstart"));
    assert_eq!(i.request_uri, "sip:user@example.com");
    let i = inc(case("trws"));
    assert_eq!(i.request_uri, "sip:remote-target@example.com");
    let i = inc(case("badaspec"));
    assert_eq!(i.to_uri, "sip:t.watson@example.org");
    let i = inc(case("baddn"));
    assert_eq!(
        NameAddr::parse(i.from).unwrap().display_name,
        Some("Bell, Alexander")
    );
    assert_eq!(i.from_tag, Some("43"));
    let i = inc(case("escruri"));
    assert_eq!(
        i.request_uri,
        "sip:user@example.com?Route=%3Csip:example.com%3E"
    );
}

#[test]
fn salvage_fills_error_answers() {
    let s = salvage(case("badvers")).unwrap();
    assert_eq!(s.call_id, "badvers.31417@c.example.com");
    assert_eq!(s.top_branch, Some("z9hG4bKkdjuw"));
    assert_eq!((s.cseq, s.cseq_method), (1, Method::Options));
    assert_eq!(s.from_tag, Some("qweoiqpe"));
    let s = salvage(case("scalar02")).unwrap();
    assert_eq!((s.cseq, s.cseq_method), (0, Method::Register));
    assert_eq!(s.call_id, "scalar02.23o0pd9vanlq3wnrlnewofjas9ui32");
    let s = salvage(case("quotbal")).unwrap();
    assert_eq!((s.to_uri, s.to_tag), ("", None));
    assert_eq!(s.to, "\"Mr. J. User <sip:j.user@example.com>");
    let s = salvage(case("insuf")).unwrap();
    assert_eq!((s.from, s.to, s.call_id), ("", "", ""));
    assert_eq!(s.cseq, 193_942);
    let s = salvage(case("multi01")).unwrap();
    assert_eq!(s.call_id, "multi01.98asdh@192.0.2.1");
    assert_eq!(s.cseq, 5);
    assert!(salvage(case("bigcode")).is_none());
    assert!(salvage(case("noreason")).is_none());
}

#[test]
fn application_layer_fields_are_exposed() {
    let i = inc(case("bext01"));
    assert_eq!(
        i.require,
        Some("nothingSupportsThis, nothingSupportsThisEither")
    );
    assert_eq!(
        split_list(i.require.unwrap()).collect::<Vec<_>>(),
        ["nothingSupportsThis", "nothingSupportsThisEither"]
    );
    assert_eq!(
        uri_scheme(inc(case("unkscm")).request_uri),
        Some("nobodyKnowsThisScheme")
    );
    assert_eq!(
        uri_scheme(inc(case("novelsc")).request_uri),
        Some("soap.beep")
    );
    let i = inc(case("unksm2"));
    assert_eq!(
        (i.to_uri, i.from_uri),
        ("isbn:2983792873", "http://www.example.com")
    );
    assert_eq!(i.contact_uri, Some("name:John_Smith"));
    let i = inc(case("invut"));
    assert_eq!(i.content_type, Some("application/unknownformat"));
    assert_eq!(i.body.len(), 40);
    assert_eq!(inc(case("regaut01")).method, Method::Register);
    assert_eq!(inc(case("zeromf")).max_forwards, Some(0));
    assert_eq!(
        inc(case("cparam01")).contact_uri,
        Some("sip:+19725552222@gw1.example.net")
    );
    assert_eq!(
        inc(case("cparam02")).contact_uri,
        Some("sip:+19725552222@gw1.example.net;unknownparam")
    );
    assert_eq!(
        inc(case("regescrt")).contact_uri,
        Some("sip:user@example.com?Route=%3Csip:sip.example.com%3E")
    );
    let r = req(case("sdp01"));
    assert_eq!(r.header("Accept"), Some("text/nobodyKnowsThis"));
    assert_eq!(
        r.to_incoming().unwrap().content_type,
        Some("application/sdp")
    );
    assert_eq!(inc(case("badbranch")).top_branch, Some("z9hG4bK"));
    let Ok(Message::Response(r)) = parse(case("bcast")) else {
        panic!()
    };
    assert_eq!(
        r.fields().values("Via").nth(1),
        Some("SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23")
    );
}

#[test]
fn inv2543_without_rfc3261_extras() {
    let i = inc(case("inv2543"));
    assert_eq!(i.top_branch, None);
    assert_eq!(i.from_tag, None);
    assert_eq!(i.max_forwards, None);
    assert_eq!(i.to_uri, "sip:+16505552222@ss1.example.net");
    // No Content-Length over UDP: the body is the rest of the datagram.
    assert!(i.body.starts_with(b"v=0\r\n"));
    assert!(i.body.ends_with(b"RTP/AVP 0\r\n"));
}
