//! Property tests: the parser never panics, on noise or on damaged real messages, and a
//! generated well-formed request — in any header order, case, compact or long form, with
//! folds and odd whitespace — reads back to the values it was built from.

extern crate alloc;
extern crate std;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use proptest::prelude::*;

use super::fixtures::{BYE, OK_BYE, OPTIONS_LF, SIPP_INVITE};
use super::*;

macro_rules! rfc {
    ($dir:literal, $($name:literal),+) => {
        [$(include_bytes!(concat!("../../../testdata/rfc4475/", $dir, "/", $name, ".dat")) as &[u8]),+]
    };
}

/// Real messages to damage: the fixtures and a spread of torture messages.
fn corpus() -> Vec<&'static [u8]> {
    let mut v: Vec<&'static [u8]> = alloc::vec![SIPP_INVITE, BYE, OPTIONS_LF, OK_BYE];
    v.extend(rfc!(
        "3.1.1-valid",
        "wsinv",
        "intmeth",
        "esc01",
        "escnull",
        "esc02",
        "lwsdisp",
        "longreq",
        "dblreq",
        "semiuri",
        "transports",
        "mpart01",
        "unreason",
        "noreason"
    ));
    v.extend(rfc!(
        "3.1.2-invalid",
        "badinv01",
        "clerr",
        "ncl",
        "scalar02",
        "scalarlg",
        "quotbal",
        "ltgtruri",
        "baddn",
        "badvers",
        "mismatch01",
        "bigcode"
    ));
    v.extend(rfc!(
        "3.3-application",
        "insuf",
        "multi01",
        "mcl01",
        "bcast",
        "regescrt"
    ));
    v
}

/// Runs every entry point on `d`, checking the invariants that must hold whatever the input.
fn exercise(d: &[u8]) {
    let _ = salvage(d);
    match parse(d) {
        Err(e) => {
            let _ = (e.status(), e.reason_phrase(), e.to_string());
        }
        Ok(Message::Request(r)) => {
            assert!(r.body().len() <= d.len());
            for h in r.fields().as_slice() {
                let _ = Unfolded(h.value).to_string();
                let _ = split_list(h.value).count();
                let _ = NameAddr::parse(h.value).map(|n| n.tag());
                let _ = Via::parse(h.value).map(|v| v.branch());
                let _ = CSeq::parse(h.value);
            }
            if let Ok(i) = r.to_incoming() {
                assert!(!i.vias.is_empty() && !i.call_id.is_empty());
                assert_eq!(i.method_token, r.method_token());
            }
            let _ = uri_user(r.uri());
        }
        Ok(Message::Response(r)) => {
            assert!((100..=699).contains(&r.status()));
            let _ = r.to_incoming_response();
        }
    }
}

proptest! {
    #[test]
    fn never_panics_on_noise(d in proptest::collection::vec(any::<u8>(), 0..600)) {
        exercise(&d);
    }

    #[test]
    fn never_panics_on_sip_shaped_noise(
        start in prop::sample::select(alloc::vec!["INVITE sip:a@b SIP/2.0\r\n", "SIP/2.0 200 OK\r\n", "\r\n"]),
        lines in proptest::collection::vec("[a-zA-Z:;,<>\"\\\\= \t\r\n@.-]{0,40}", 0..12),
    ) {
        let mut d = String::from(start);
        for l in lines { d.push_str(&l); d.push_str("\r\n"); }
        exercise(d.as_bytes());
    }

    #[test]
    fn never_panics_on_damaged_messages(
        which in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let corpus = corpus();
        let mut d = corpus[which.index(corpus.len())].to_vec();
        for (at, byte) in flips {
            let i = at.index(d.len());
            d[i] = byte;
        }
        if truncate {
            d.truncate(cut.index(d.len() + 1));
        }
        exercise(&d);
    }
}

// ---- generated well-formed requests ----------------------------------------------------------

/// How one header line is written.
#[derive(Clone, Debug)]
struct Style {
    compact: bool,
    case: u8,
    before_colon: usize,
    after_colon: usize,
    fold: bool,
}

fn style() -> impl Strategy<Value = Style> {
    (any::<bool>(), 0u8..3, 0usize..3, 0usize..3, any::<bool>()).prop_map(
        |(compact, case, before_colon, after_colon, fold)| Style {
            compact,
            case,
            before_colon,
            after_colon,
            fold,
        },
    )
}

/// Writes `name: value`; `~` in `value` marks a place where LWS is allowed (a space, or a fold
/// when the style folds).
fn line(long: &str, compact: Option<&str>, value: &str, s: &Style, eol: &str) -> String {
    let name = match (s.compact, compact) {
        (true, Some(c)) => c.to_string(),
        _ => long.to_string(),
    };
    let name = match s.case {
        0 => name,
        1 => name.to_ascii_lowercase(),
        _ => name.to_ascii_uppercase(),
    };
    let lws = if s.fold {
        format!("{eol}\t ")
    } else {
        " ".to_string()
    };
    format!(
        "{name}{}:{}{}{eol}",
        " ".repeat(s.before_colon),
        " ".repeat(s.after_colon),
        value.replace('~', &lws)
    )
}

#[derive(Clone, Debug)]
struct Gen {
    method: &'static str,
    call_id: String,
    cseq: u32,
    from_tag: String,
    to_tag: Option<String>,
    branch: String,
    max_forwards: Option<u8>,
    body: String,
    lf_only: bool,
    styles: Vec<Style>,
    order: Vec<usize>,
}

fn generated() -> impl Strategy<Value = Gen> {
    let token = "[a-zA-Z0-9][a-zA-Z0-9.!%*_+`'-]{0,20}"; // no '~': it marks LWS
    (
        prop::sample::select(alloc::vec![
            "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "X-CUSTOM"
        ]),
        (token, "@[a-z0-9.]{1,12}").prop_map(|(a, b)| format!("{a}{b}")),
        any::<u32>(),
        token,
        proptest::option::of(token),
        token.prop_map(|b| format!("z9hG4bK{b}")),
        proptest::option::of(any::<u8>()),
        "[ -~\r\n]{0,60}",
        any::<bool>(),
        proptest::collection::vec(style(), 9),
        Just((0..9).collect::<Vec<usize>>()).prop_shuffle(),
    )
        .prop_map(
            |(
                method,
                call_id,
                cseq,
                from_tag,
                to_tag,
                branch,
                max_forwards,
                body,
                lf_only,
                styles,
                order,
            )| Gen {
                method,
                call_id,
                cseq,
                from_tag,
                to_tag,
                branch,
                max_forwards,
                body,
                lf_only,
                styles,
                order,
            },
        )
}

impl Gen {
    fn render(&self) -> String {
        let eol = if self.lf_only { "\n" } else { "\r\n" };
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!("~;~tag~=~{t}"))
            .unwrap_or_default();
        let lines: [(&str, Option<&str>, String); 9] = [
            (
                "Via",
                Some("v"),
                format!("SIP~/~2.0~/~UDP~192.0.2.1:5060~;~branch~=~{}", self.branch),
            ),
            (
                "Via",
                Some("v"),
                "SIP/2.0/TCP~proxy.example.net;received=198.51.100.1".to_string(),
            ),
            (
                "From",
                Some("f"),
                format!(
                    "\"Caller, \\\"Q\\\"\"~<sip:caller@example.com>~;tag={}",
                    self.from_tag
                ),
            ),
            ("To", Some("t"), format!("<sip:ccedge@192.0.2.20>{to_tag}")),
            ("Call-ID", Some("i"), self.call_id.clone()),
            ("CSeq", None, format!("{}~{}", self.cseq, self.method)),
            (
                "Contact",
                Some("m"),
                "~<sip:caller@192.0.2.1:5060;transport=udp>~;expires=60".to_string(),
            ),
            ("Content-Length", Some("l"), self.body.len().to_string()),
            match self.max_forwards {
                Some(m) => ("Max-Forwards", None, format!("{m}")),
                None => ("X-Extra", None, "some~value, with, commas".to_string()),
            },
        ];
        // The two Vias keep their relative order (topmost first).
        let mut order = self.order.clone();
        let (p0, p1) = (
            order.iter().position(|&i| i == 0).unwrap(),
            order.iter().position(|&i| i == 1).unwrap(),
        );
        if p0 > p1 {
            order.swap(p0, p1);
        }
        let mut out = format!("{} sip:ccedge@192.0.2.20 SIP/2.0{eol}", self.method);
        for i in order {
            let (long, compact, value) = &lines[i];
            out.push_str(&line(long, *compact, value, &self.styles[i], eol));
        }
        out.push_str(eol);
        out.push_str(&self.body);
        out
    }
}

proptest! {
    #[test]
    fn generated_requests_read_back(g in generated()) {
        let text = g.render();
        let Ok(Message::Request(r)) = parse(text.as_bytes()) else {
            panic!("did not parse: {text:?}");
        };
        let i = r.to_incoming().unwrap_or_else(|e| panic!("{e}: {text:?}"));
        prop_assert_eq!(i.method, Method::from_token(g.method.as_bytes()));
        prop_assert_eq!(i.method_token, g.method);
        prop_assert_eq!(i.request_uri, "sip:ccedge@192.0.2.20");
        prop_assert_eq!(i.call_id, g.call_id.as_str());
        prop_assert_eq!(i.cseq, g.cseq);
        prop_assert_eq!(i.cseq_method, i.method);
        prop_assert_eq!(i.from_uri, "sip:caller@example.com");
        prop_assert_eq!(i.from_tag, Some(g.from_tag.as_str()));
        prop_assert_eq!(i.to_uri, "sip:ccedge@192.0.2.20");
        prop_assert_eq!(i.to_tag, g.to_tag.as_deref());
        prop_assert_eq!(i.vias.len(), 2);
        prop_assert_eq!(i.top_branch, Some(g.branch.as_str()));
        prop_assert_eq!(Via::parse(i.vias[1]).unwrap().sent_by, "proxy.example.net");
        prop_assert_eq!(i.contact_uri, Some("sip:caller@192.0.2.1:5060;transport=udp"));
        prop_assert_eq!(i.max_forwards, g.max_forwards.map(u32::from));
        prop_assert_eq!(i.body, g.body.as_bytes());
        prop_assert_eq!(
            NameAddr::parse(i.from).unwrap().display_name,
            Some("\"Caller, \\\"Q\\\"\"")
        );
    }
}
