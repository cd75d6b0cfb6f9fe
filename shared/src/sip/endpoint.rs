//! Stateless answers for requests that belong to no dialog.
//!
//! The shell routes a parsed request by Call-ID. When no call owns it, [`verdict`] says what to
//! do and [`respond_stateless`] writes the answer:
//!
//! | request (no dialog) | answer |
//! |---|---|
//! | ACK | nothing |
//! | unknown method | 501 with Allow |
//! | REGISTER, SUBSCRIBE, PUBLISH, MESSAGE | 405 with Allow |
//! | INVITE or OPTIONS that `Require`s an option tag we lack | 420 with Unsupported |
//! | INVITE with Max-Forwards 0 | 483 |
//! | INVITE listing `timer` whose Session-Expires is below our minimum (RFC 4028 §9) | 422 with Min-SE |
//! | OPTIONS | 200 with Allow, Accept, Supported |
//! | INVITE without To tag | [`Verdict::NewDialog`]: create a call ([`crate::sip::uas::Dialog::new`]) |
//! | INVITE with To tag, BYE, CANCEL, INFO, NOTIFY, REFER, UPDATE, PRACK | 481 |
//!
//! [`verdict`] and [`respond`] assume the default minimum session interval
//! ([`SESSION_EXPIRES_FLOOR`], 90 s); a node configured with another
//! [`crate::sip::uas::Config::min_se_secs`] uses [`verdict_with`] and [`respond_with`].
//!
//! [`respond`] writes any other code the shell decides on (400, 403 for sources outside
//! `sip.allow`, 503 under overload, 505, 513). Stateless responses carry a To tag derived
//! from the request (Call-ID, From tag, branch), so a retransmission gets the same tag.

use crate::sip::emit::{BufferTooSmall, Extras, LocalTag, Response, SUPPORTED_OPTION_TAGS};
use crate::sip::{Incoming, Method, SESSION_EXPIRES_FLOOR};

/// What to do with a request that matched no dialog.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Verdict {
    /// Answer with this status ([`respond_stateless`] writes it).
    Respond(u16),
    /// An acceptable new INVITE: create a call and its dialog.
    NewDialog,
    /// Send nothing (ACK).
    Ignore,
}

/// Decides how to treat `req`, which matched no dialog, with the default minimum session
/// interval.
#[must_use]
pub fn verdict(req: &Incoming<'_>) -> Verdict {
    verdict_with(req, SESSION_EXPIRES_FLOOR)
}

/// Decides how to treat `req`, which matched no dialog; a new INVITE whose session interval
/// is below `min_se_secs` gets 422 (see [`crate::sip::SessionTimer::too_small`]).
#[must_use]
pub fn verdict_with(req: &Incoming<'_>, min_se_secs: u32) -> Verdict {
    match req.method {
        Method::Ack => return Verdict::Ignore,
        Method::Other => return Verdict::Respond(501),
        Method::Register | Method::Subscribe | Method::Publish | Method::Message => {
            return Verdict::Respond(405)
        }
        _ => {}
    }
    if !matches!(req.method, Method::Cancel) && !known_scheme(req.request_uri) {
        // RFC 3261 §8.2.2.1: a Request-URI the UAS cannot handle (`nobodyKnowsThisScheme:`)
        return Verdict::Respond(416);
    }
    if matches!(req.method, Method::Invite | Method::Options) && first_unsupported(req).is_some() {
        return Verdict::Respond(420);
    }
    match req.method {
        Method::Invite if req.max_forwards == Some(0) => Verdict::Respond(483),
        Method::Options => Verdict::Respond(200),
        Method::Invite => match check_new_invite(req) {
            Ok(()) if req.session_timer.too_small(min_se_secs) => Verdict::Respond(422),
            Ok(()) => Verdict::NewDialog,
            Err(status) => Verdict::Respond(status),
        },
        _ => Verdict::Respond(481),
    }
}

/// Whether the Request-URI's scheme is one a call can be addressed with: `sip`, `sips` or
/// `tel` (RFC 3966), in any case.
#[must_use]
pub fn known_scheme(request_uri: &str) -> bool {
    crate::sip::parse::uri_scheme(request_uri).is_some_and(|s| {
        ["sip", "sips", "tel"]
            .iter()
            .any(|k| k.eq_ignore_ascii_case(s))
    })
}

/// Whether an INVITE may create a new dialog: it must carry no To tag (else 481: it claims a
/// dialog we do not have).
///
/// # Errors
/// The status to answer with: 481 for a To tag, 400 for a missing From tag or Via.
pub fn check_new_invite(req: &Incoming<'_>) -> Result<(), u16> {
    if req.to_tag.is_some() {
        Err(481)
    } else if req.from_tag.is_none() || req.vias.is_empty() {
        Err(400)
    } else {
        Ok(())
    }
}

/// Writes the stateless answer for `req` per [`verdict`]; `None` when nothing is to be sent
/// (ACK) or when the request creates a dialog.
pub fn respond_stateless(
    req: &Incoming<'_>,
    buf: &mut [u8],
) -> Option<Result<usize, BufferTooSmall>> {
    match verdict(req) {
        Verdict::Respond(status) => Some(respond(req, status, buf)),
        Verdict::NewDialog | Verdict::Ignore => None,
    }
}

/// Writes a response with `status` to `req` (the headers each code needs included: Allow for
/// 405/501/OPTIONS, Unsupported for 420, Min-SE for 422 with the default minimum, Retry-After
/// for 503).
///
/// # Errors
/// [`BufferTooSmall`] when `buf` cannot hold it; the response echoes the request's Vias, From
/// and To, so up to the request's size plus 512 bytes may be needed.
pub fn respond(req: &Incoming<'_>, status: u16, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
    respond_with(
        req,
        status,
        SESSION_EXPIRES_FLOOR,
        crate::sip::emit::SERVER,
        buf,
    )
}

/// [`respond`] for a node whose minimum session interval is `min_se_secs` (the Min-SE of a
/// 422, never below [`SESSION_EXPIRES_FLOOR`]) and whose `Server` value is `server` (empty:
/// no `Server` header), as in its [`crate::sip::uas::Config`].
///
/// # Errors
/// As [`respond`].
pub fn respond_with(
    req: &Incoming<'_>,
    status: u16,
    min_se_secs: u32,
    server: &str,
    buf: &mut [u8],
) -> Result<usize, BufferTooSmall> {
    let mut r = Response::to_request(req, status, stateless_tag(req));
    r.server = server;
    let options_ok = req.method == Method::Options && status == 200;
    let mut unsupported: heapless::Vec<u8, 256> = heapless::Vec::new();
    if status == 420 {
        write_unsupported(req, &mut unsupported);
    }
    r.extras = Extras {
        allow: options_ok || matches!(status, 405 | 501),
        accept: options_ok || status == 415,
        supported: options_ok,
        unsupported: (status == 420).then_some(&unsupported[..]),
        retry_after: (status == 503).then_some(30),
        min_se: (status == 422).then_some(min_se_secs.max(SESSION_EXPIRES_FLOOR)),
        ..Extras::default()
    };
    r.emit(buf)
}

/// The `Require`d option tags of `req` that ccedge does not support, comma-separated, cut at
/// the buffer's capacity.
fn write_unsupported(req: &Incoming<'_>, out: &mut heapless::Vec<u8, 256>) {
    for t in unsupported_tags(req) {
        if !out.is_empty() && out.extend_from_slice(b", ").is_err() {
            return;
        }
        if out.extend_from_slice(t.as_bytes()).is_err() {
            return;
        }
    }
}

fn unsupported_tags<'a>(req: &Incoming<'a>) -> impl Iterator<Item = &'a str> {
    req.require
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .filter(|t| {
            !SUPPORTED_OPTION_TAGS
                .iter()
                .any(|s| s.eq_ignore_ascii_case(t))
        })
}

fn first_unsupported<'a>(req: &Incoming<'a>) -> Option<&'a str> {
    unsupported_tags(req).next()
}

/// A To tag for a stateless response: FNV-1a over Call-ID, From tag and top branch, so the
/// retransmissions of one request get the same tag.
#[must_use]
pub fn stateless_tag(req: &Incoming<'_>) -> LocalTag {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        req.call_id,
        req.from_tag.unwrap_or(""),
        req.top_branch.unwrap_or(""),
    ] {
        for &b in part.as_bytes().iter().chain(b"\0") {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    LocalTag(h)
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    extern crate std;
    use super::*;
    use crate::sip::emit;
    use crate::sip::emit::tests::{incoming, oracle, split};
    use alloc::string::String;

    fn answer(req: &Incoming<'_>) -> Option<(String, alloc::vec::Vec<(String, String)>)> {
        let mut buf = [0u8; 2048];
        let n = respond_stateless(req, &mut buf)?.unwrap();
        let _ = oracle(&buf[..n]);
        let (start, h, _) = split(&buf[..n]);
        Some((start, h))
    }

    fn header<'h>(h: &'h [(String, String)], name: &str) -> Option<&'h str> {
        h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn options_gets_200_with_capabilities() {
        let req = incoming(Method::Options, 5, None);
        let (start, h) = answer(&req).unwrap();
        assert_eq!(start, "SIP/2.0 200 OK");
        assert_eq!(header(&h, "Allow"), Some(emit::ALLOW));
        assert_eq!(header(&h, "Accept"), Some("application/sdp"));
        assert!(h.iter().any(|(n, _)| n == "Supported"));
        assert_eq!(header(&h, "CSeq"), Some("5 OPTIONS"));
        assert!(header(&h, "To").unwrap().contains(";tag="));
    }

    #[test]
    fn verdict_table() {
        let cases = [
            (incoming(Method::Register, 1, None), Verdict::Respond(405)),
            (incoming(Method::Other, 1, None), Verdict::Respond(501)),
            (
                incoming(Method::Bye, 2, Some("ours")),
                Verdict::Respond(481),
            ),
            (incoming(Method::Cancel, 1, None), Verdict::Respond(481)),
            (
                incoming(Method::Info, 3, Some("ours")),
                Verdict::Respond(481),
            ),
            (
                incoming(Method::Invite, 2, Some("ours")),
                Verdict::Respond(481),
            ),
            (incoming(Method::Ack, 1, Some("ours")), Verdict::Ignore),
            (incoming(Method::Invite, 1, None), Verdict::NewDialog),
            (incoming(Method::Options, 1, None), Verdict::Respond(200)),
        ];
        for (req, want) in cases {
            assert_eq!(verdict(&req), want, "{:?}", req.method);
        }
        let mut hops = incoming(Method::Invite, 1, None);
        hops.max_forwards = Some(0);
        assert_eq!(verdict(&hops), Verdict::Respond(483));
        let mut no_tag = incoming(Method::Invite, 1, None);
        no_tag.from_tag = None;
        assert_eq!(verdict(&no_tag), Verdict::Respond(400));
        assert_eq!(
            respond_stateless(&incoming(Method::Ack, 1, None), &mut [0; 64]),
            None
        );
    }

    #[test]
    fn unknown_and_register_carry_allow() {
        let mut req = incoming(Method::Other, 4, None);
        req.method_token = "FROB";
        req.cseq_method = Method::Other;
        let (start, h) = answer(&req).unwrap();
        assert_eq!(start, "SIP/2.0 501 Not Implemented");
        assert_eq!(header(&h, "CSeq"), Some("4 FROB"));
        assert_eq!(header(&h, "Allow"), Some(emit::ALLOW));
        let (start, h) = answer(&incoming(Method::Register, 1, None)).unwrap();
        assert_eq!(start, "SIP/2.0 405 Method Not Allowed");
        assert_eq!(header(&h, "Allow"), Some(emit::ALLOW));
    }

    #[test]
    fn unknown_uri_schemes_get_416() {
        for uri in [
            "nobodyKnowsThisScheme:totallyopaquecontent",
            "soap.beep://192.0.2.103:3002",
        ] {
            let mut req = incoming(Method::Invite, 1, None);
            req.request_uri = uri;
            assert_eq!(verdict(&req), Verdict::Respond(416), "{uri}");
            let (start, _) = answer(&req).unwrap();
            assert_eq!(start, "SIP/2.0 416 Unsupported URI Scheme");
        }
        for uri in ["sip:+18005550100@10.0.0.2", "SIPS:x@y", "tel:+18005550100"] {
            let mut req = incoming(Method::Invite, 1, None);
            req.request_uri = uri;
            assert_eq!(verdict(&req), Verdict::NewDialog, "{uri}");
        }
        // 416 comes before 420 (RFC 3261 §8.2.2: the URI is inspected before extensions).
        let mut req = incoming(Method::Options, 1, None);
        req.request_uri = "im:someone@example.com";
        req.require = Some("100rel");
        assert_eq!(verdict(&req), Verdict::Respond(416));
    }

    #[test]
    fn require_unknown_gets_420_listing_them() {
        let mut req = incoming(Method::Invite, 1, None);
        req.require = Some("100rel, timer");
        assert_eq!(verdict(&req), Verdict::Respond(420));
        let (start, h) = answer(&req).unwrap();
        assert_eq!(start, "SIP/2.0 420 Bad Extension");
        // `timer` is supported: only 100rel is listed.
        assert_eq!(header(&h, "Unsupported"), Some("100rel"));
        req.require = Some(" ");
        assert_eq!(verdict(&req), Verdict::NewDialog);
        req.require = Some("timer");
        assert_eq!(verdict(&req), Verdict::NewDialog);
        req.require = Some("TIMER, 100rel");
        assert_eq!(verdict(&req), Verdict::Respond(420));
    }

    #[test]
    fn small_session_interval_gets_422_with_min_se() {
        let mut req = incoming(Method::Invite, 1, None);
        req.session_timer.supported = true;
        req.session_timer.expires = Some(60);
        assert_eq!(verdict(&req), Verdict::Respond(422));
        let (start, h) = answer(&req).unwrap();
        assert_eq!(start, "SIP/2.0 422 Session Interval Too Small");
        assert_eq!(header(&h, "Min-SE"), Some("90"));
        // Our own minimum, when configured higher.
        req.session_timer.expires = Some(90);
        assert_eq!(verdict(&req), Verdict::NewDialog);
        assert_eq!(verdict_with(&req, 120), Verdict::Respond(422));
        let mut buf = [0u8; 2048];
        let n = respond_with(&req, 422, 120, "", &mut buf).unwrap();
        let (_, h, _) = split(&buf[..n]);
        assert_eq!(header(&h, "Min-SE"), Some("120"));
        // The node's Server value: empty omits the header, the default names no version.
        assert_eq!(header(&h, "Server"), None);
        let n = respond(&req, 422, &mut buf).unwrap();
        let (_, h, _) = split(&buf[..n]);
        assert_eq!(header(&h, "Server"), Some("ccedge"));
        // A minimum configured below RFC 4028's floor is raised to it.
        req.session_timer.expires = Some(60);
        assert_eq!(verdict_with(&req, 30), Verdict::Respond(422));
        // A caller without `timer` (a proxy added Session-Expires) could not retry: no 422.
        req.session_timer.supported = false;
        assert_eq!(verdict(&req), Verdict::NewDialog);
        req.session_timer.required = true;
        assert_eq!(verdict(&req), Verdict::Respond(422));
        // A To tag is checked first (481).
        let mut tagged = incoming(Method::Invite, 2, Some("ours"));
        tagged.session_timer = req.session_timer;
        assert_eq!(verdict(&tagged), Verdict::Respond(481));
    }

    #[test]
    fn chosen_codes_and_stable_tags() {
        let req = incoming(Method::Invite, 1, None);
        let mut a = [0u8; 1024];
        let mut b = [0u8; 1024];
        for status in [400u16, 403, 503, 505] {
            let n = respond(&req, status, &mut a).unwrap();
            let (s, _, _) = oracle(&a[..n]);
            assert_eq!(s, status);
            let (_, h, _) = split(&a[..n]);
            assert_eq!(header(&h, "Retry-After").is_some(), status == 503);
            // A retransmission gets the same bytes, tag included.
            let m = respond(&req, status, &mut b).unwrap();
            assert_eq!(a[..n], b[..m]);
        }
        let mut other = incoming(Method::Invite, 1, None);
        other.call_id = "different";
        assert_ne!(stateless_tag(&req), stateless_tag(&other));
        assert_eq!(respond(&req, 400, &mut [0u8; 10]), Err(BufferTooSmall));
    }
}
