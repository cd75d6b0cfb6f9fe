//! The SIP message parser: one UDP datagram in, a borrowed [`Message`] view out.
//!
//! # Zero-copy design
//!
//! [`parse`] never copies and never allocates. It reads the start line, then walks the header
//! lines once, recording for each header field its name, a [`HeaderName`] (long and compact
//! forms map to the same value) and its value as a `&str` slice of the datagram. The index is a
//! `heapless::Vec` of [`SIP_MAX_HEADERS`] entries. The body is the slice framed by
//! Content-Length. Everything else — Via, name-addr, CSeq, parameters — is parsed lazily from
//! those slices by the helpers re-exported here ([`Via`], [`NameAddr`], [`CSeq`], [`Params`],
//! [`split_list`]), or all at once by [`Request::to_incoming`] into the
//! [`Incoming`] view the dialog layer consumes. Every step is linear in the datagram; header
//! lookups are linear in the (bounded) number of header fields.
//!
//! **Folding.** A header value continued on the next line (CRLF followed by SP/HT) cannot be
//! one contiguous string without copying, so values are returned *raw*: trimmed at both ends,
//! but a fold inside stays in the slice as LWS. All structured helpers skip LWS between tokens,
//! so folds are invisible to them (wsinv's `cseq: 0009\r\n  INVITE` parses as 9 INVITE). For
//! display, [`Unfolded`] prints a value with each fold as one space. Tokens that callers keep
//! (tags, branch, Call-ID, URIs) can never contain a fold.
//!
//! # Tolerated
//!
//! - Bare LF line ends, CRLFs before the start line (keep-alives), LWS around the header
//!   colon, header names in any case, compact forms, several header fields of one name, and
//!   runs of spaces between the parts of the request line (RFC 4475 lwsstart) or after the
//!   version (trws).
//! - Over UDP: a missing Content-Length (the body is the rest of the datagram) and bytes after
//!   the Content-Length body (ignored, RFC 3261 18.3; RFC 4475 dblreq).
//! - Display names that are neither token nor quoted string (`Bell, Alexander <sip:…>`), LWS
//!   inside `<…>`, unknown URI schemes, unknown headers with any UTF-8 value, an empty or
//!   UTF-8 reason phrase.
//!
//! # Rejected
//!
//! For requests, [`ParseError::status`] says what to answer: 505 for a `SIP/x.y` version other
//! than 2.0; 513 for a datagram over [`SIP_MAX_DATAGRAM`] bytes, more than [`SIP_MAX_HEADERS`]
//! header fields or more than [`SIP_MAX_VIAS`] Via values; 400 for everything else: a malformed
//! request line or Request-URI (`<…>`, embedded spaces), header bytes that are not UTF-8, a
//! header line without a colon, a missing blank line, a Content-Length that is not a number, is
//! repeated, or exceeds the bytes present, a missing or repeated Via/From/To/Call-ID/CSeq, a
//! CSeq number over 2^32-1 or a CSeq method differing from the request method, an unterminated
//! quoted string, empty list elements or parameters (`;;,;,,`). A malformed response, and
//! anything that is not SIP at all, is dropped (`status() == None`). To answer a malformed
//! request, [`salvage`] reads Via/From/To/Call-ID/CSeq as best it can.
//!
//! # Bounds
//!
//! Datagrams up to [`SIP_MAX_DATAGRAM`] bytes, [`SIP_MAX_HEADERS`] header fields (the index is
//! the only sizeable part of a [`Message`]: about 40 bytes per field on 64-bit targets), and
//! [`SIP_MAX_VIAS`] Via values in [`Incoming`]. Valid requests beyond the Via bound are answered
//! 513 — with the bound at 4 that includes RFC 4475 `transports` (5 Vias) and `longreq` (34);
//! the tests follow the constant if it is raised. Parsing a typical INVITE and building its
//! [`Incoming`] takes about 2 µs in a release build.
//!
//! The application-layer checks (Require → 420, URI scheme → 416, Content-Type → 415,
//! unknown method → 501, Max-Forwards) belong to the layer above; everything they need is in
//! [`Incoming`].

mod text;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod oracle_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod rfc4475_tests;
#[cfg(test)]
mod unit_tests;

use core::fmt;

use heapless::Vec;

pub use text::{
    is_plausible_uri, split_list, trim_lws, uri_scheme, uri_user, CSeq, ListValues, NameAddr,
    Param, ParamIter, Params, Unfolded, Via,
};

use crate::limits::{SIP_MAX_DATAGRAM, SIP_MAX_HEADERS, SIP_MAX_VIAS};
use crate::sip::{Incoming, IncomingResponse, Method, Refresher, SessionTimer};

use text::{is_token, parse_u32, parse_usize};

// ---- header names ---------------------------------------------------------------------------

/// The header fields the parser knows by name (long and compact forms), and `Other`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HeaderName {
    /// `Via` / `v`
    Via,
    /// `From` / `f`
    From,
    /// `To` / `t`
    To,
    /// `Call-ID` / `i`
    CallId,
    /// `CSeq`
    CSeq,
    /// `Contact` / `m`
    Contact,
    /// `Content-Length` / `l`
    ContentLength,
    /// `Content-Type` / `c`
    ContentType,
    /// `Content-Encoding` / `e`
    ContentEncoding,
    /// `Max-Forwards`
    MaxForwards,
    /// `Require`
    Require,
    /// `Supported` / `k`
    Supported,
    /// `User-Agent`
    UserAgent,
    /// `Subject` / `s`
    Subject,
    /// `Event` / `o`
    Event,
    /// `Refer-To` / `r`
    ReferTo,
    /// `Session-Expires` / `x`
    SessionExpires,
    /// `Allow-Events` / `u`
    AllowEvents,
    /// `Record-Route`
    RecordRoute,
    /// `Min-SE`
    MinSe,
    /// Any other header name (compare the name itself).
    Other,
}

/// (kind, long name, compact form) for every known header.
const NAMES: [(HeaderName, &str, Option<u8>); 20] = [
    (HeaderName::Via, "Via", Some(b'v')),
    (HeaderName::From, "From", Some(b'f')),
    (HeaderName::To, "To", Some(b't')),
    (HeaderName::CallId, "Call-ID", Some(b'i')),
    (HeaderName::CSeq, "CSeq", None),
    (HeaderName::Contact, "Contact", Some(b'm')),
    (HeaderName::ContentLength, "Content-Length", Some(b'l')),
    (HeaderName::ContentType, "Content-Type", Some(b'c')),
    (HeaderName::ContentEncoding, "Content-Encoding", Some(b'e')),
    (HeaderName::MaxForwards, "Max-Forwards", None),
    (HeaderName::Require, "Require", None),
    (HeaderName::Supported, "Supported", Some(b'k')),
    (HeaderName::UserAgent, "User-Agent", None),
    (HeaderName::Subject, "Subject", Some(b's')),
    (HeaderName::Event, "Event", Some(b'o')),
    (HeaderName::ReferTo, "Refer-To", Some(b'r')),
    (HeaderName::SessionExpires, "Session-Expires", Some(b'x')),
    (HeaderName::AllowEvents, "Allow-Events", Some(b'u')),
    (HeaderName::RecordRoute, "Record-Route", None),
    (HeaderName::MinSe, "Min-SE", None),
];

impl HeaderName {
    /// Classifies a header name, case-insensitively, long or compact form.
    #[must_use]
    pub fn from_name(name: &str) -> HeaderName {
        let compact = match name.as_bytes() {
            [c] => Some(c.to_ascii_lowercase()),
            _ => None,
        };
        NAMES
            .iter()
            .find(|(_, long, short)| match compact {
                Some(c) => *short == Some(c),
                None => long.eq_ignore_ascii_case(name),
            })
            .map_or(HeaderName::Other, |(k, _, _)| *k)
    }

    /// The canonical long name (`"Call-ID"`), `None` for [`HeaderName::Other`].
    #[must_use]
    pub fn as_str(self) -> Option<&'static str> {
        NAMES
            .iter()
            .find(|(k, _, _)| *k == self)
            .map(|(_, n, _)| *n)
    }
}

/// One header field: its name as written, its [`HeaderName`], and its raw value (trimmed of
/// LWS at both ends; a fold inside remains as LWS — see [`Unfolded`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The name as written (`"v"`, `"ViA"`, `"X-Foo"`).
    pub name: &'a str,
    /// The classified name.
    pub kind: HeaderName,
    /// The raw value.
    pub value: &'a str,
}

impl Header<'_> {
    fn matches(&self, kind: HeaderName, name: &str) -> bool {
        if kind == HeaderName::Other {
            self.kind == HeaderName::Other && self.name.eq_ignore_ascii_case(name)
        } else {
            self.kind == kind
        }
    }
}

/// The header fields of one message, in order. At most [`SIP_MAX_HEADERS`].
#[derive(Clone, Debug, Default)]
pub struct Headers<'a> {
    list: Vec<Header<'a>, SIP_MAX_HEADERS>,
}

impl<'a> Headers<'a> {
    /// All header fields in message order.
    #[must_use]
    pub fn as_slice(&self) -> &[Header<'a>] {
        &self.list
    }

    /// The value of the first header field called `name` (long or compact form, any case).
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.get_all(name).next()
    }

    /// The values of every header field called `name`, in order (one per header line).
    pub fn get_all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        let kind = HeaderName::from_name(name);
        self.list
            .iter()
            .filter(move |h| h.matches(kind, name))
            .map(|h| h.value)
    }

    /// Every comma-separated element of every header field called `name` (for list headers:
    /// Via, Contact, Require, Supported, Allow …), in order. See [`split_list`].
    pub fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.get_all(name).flat_map(split_list)
    }

    /// The values of every header field of `kind`.
    fn of_kind(&self, kind: HeaderName) -> impl Iterator<Item = &'a str> + '_ {
        self.list
            .iter()
            .filter(move |h| h.kind == kind)
            .map(|h| h.value)
    }

    /// The single value of a header that must appear at most once.
    fn single(&self, kind: HeaderName) -> Result<Option<&'a str>, Problem> {
        let mut it = self.of_kind(kind);
        let first = it.next();
        if it.next().is_some() {
            return Err(Problem::Duplicate(kind));
        }
        Ok(first)
    }

    /// Like [`Headers::single`] but the header is mandatory.
    fn required(&self, kind: HeaderName) -> Result<&'a str, Problem> {
        self.single(kind)?.ok_or(Problem::Missing(kind))
    }
}

// ---- messages -------------------------------------------------------------------------------

/// A parsed datagram.
#[derive(Clone, Debug)]
pub enum Message<'a> {
    /// A request.
    Request(Request<'a>),
    /// A response.
    Response(Response<'a>),
}

/// A parsed request, borrowing from the datagram.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    method: Method,
    method_token: &'a str,
    uri: &'a str,
    headers: Headers<'a>,
    body: &'a [u8],
}

/// A parsed response, borrowing from the datagram.
#[derive(Clone, Debug)]
pub struct Response<'a> {
    status: u16,
    reason: &'a str,
    headers: Headers<'a>,
    body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The method.
    #[must_use]
    pub fn method(&self) -> Method {
        self.method
    }

    /// The method token as sent.
    #[must_use]
    pub fn method_token(&self) -> &'a str {
        self.method_token
    }

    /// The Request-URI, as sent.
    #[must_use]
    pub fn uri(&self) -> &'a str {
        self.uri
    }

    /// The header fields.
    #[must_use]
    pub fn fields(&self) -> &Headers<'a> {
        &self.headers
    }

    /// The value of the first header field called `name` (long or compact form, any case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name)
    }

    /// The values of every header field called `name`, one per header line.
    pub fn headers<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers.get_all(name)
    }

    /// The body, exactly Content-Length bytes (or the rest of the datagram without one).
    #[must_use]
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Builds the [`Incoming`] view the transaction/dialog layer consumes, checking what
    /// RFC 3261 requires of a request: exactly one From, To, Call-ID and CSeq, at least one
    /// Via (at most [`SIP_MAX_VIAS`] values), all well formed, and the CSeq method equal to
    /// the request method.
    ///
    /// `require` and `user_agent` are the first header field of that name; a request with
    /// several Require lines is rare, and [`Headers::values`] lists all their tags.
    ///
    /// # Errors
    ///
    /// [`ParseError::BadRequest`]; [`ParseError::status`] gives the answer (400 or 513), and
    /// [`salvage`] the fields to answer with.
    pub fn to_incoming(&self) -> Result<Incoming<'a>, ParseError> {
        self.incoming().map_err(ParseError::BadRequest)
    }

    fn incoming(&self) -> Result<Incoming<'a>, Problem> {
        let h = &self.headers;
        let mut vias = Vec::new();
        for v in h.of_kind(HeaderName::Via).flat_map(split_list) {
            if Via::parse(v).is_none() {
                return Err(Problem::Invalid(HeaderName::Via));
            }
            vias.push(v).map_err(|_| Problem::TooManyVias)?;
        }
        let top = vias.first().ok_or(Problem::Missing(HeaderName::Via))?;
        let top_branch = Via::parse(top).and_then(|v| v.branch());

        let from = h.required(HeaderName::From)?;
        let from_na = NameAddr::parse(from).ok_or(Problem::Invalid(HeaderName::From))?;
        let to = h.required(HeaderName::To)?;
        let to_na = NameAddr::parse(to).ok_or(Problem::Invalid(HeaderName::To))?;
        let call_id = call_id(h.required(HeaderName::CallId)?)?;
        let cseq =
            CSeq::parse(h.required(HeaderName::CSeq)?).ok_or(Problem::Invalid(HeaderName::CSeq))?;
        if cseq.method != self.method_token {
            return Err(Problem::CSeqMismatch);
        }
        let contact_uri = match h.of_kind(HeaderName::Contact).flat_map(split_list).next() {
            None => None,
            Some("*") => Some("*"),
            Some(c) => Some(
                NameAddr::parse(c)
                    .ok_or(Problem::Invalid(HeaderName::Contact))?
                    .uri,
            ),
        };
        let mut record_route = Vec::new();
        for r in h.of_kind(HeaderName::RecordRoute).flat_map(split_list) {
            let na = NameAddr::parse(r).ok_or(Problem::Invalid(HeaderName::RecordRoute))?;
            if !na.uri.starts_with("sip:") && !na.uri.starts_with("sips:") {
                return Err(Problem::Invalid(HeaderName::RecordRoute));
            }
            record_route.push(r).map_err(|_| Problem::TooManyRoutes)?;
        }
        let max_forwards = match h.single(HeaderName::MaxForwards)? {
            None => None,
            Some(v) => {
                Some(parse_u32(trim_lws(v)).ok_or(Problem::Invalid(HeaderName::MaxForwards))?)
            }
        };
        Ok(Incoming {
            method: self.method,
            method_token: self.method_token,
            request_uri: self.uri,
            vias,
            top_branch,
            from,
            from_uri: from_na.uri,
            from_tag: from_na.tag(),
            to,
            to_uri: to_na.uri,
            to_tag: to_na.tag(),
            call_id,
            cseq: cseq.number,
            cseq_method: Method::from_token(cseq.method.as_bytes()),
            contact_uri,
            record_route,
            received_from: None,
            transport: crate::sip::route::Transport::Udp,
            max_forwards,
            content_type: h.single(HeaderName::ContentType)?,
            body: self.body,
            require: h.of_kind(HeaderName::Require).next(),
            user_agent: h.of_kind(HeaderName::UserAgent).next(),
            session_timer: session_timer(h, self.method)?,
        })
    }
}

impl<'a> Response<'a> {
    /// The status code (100–699).
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The reason phrase (may be empty; any UTF-8).
    #[must_use]
    pub fn reason(&self) -> &'a str {
        self.reason
    }

    /// The header fields.
    #[must_use]
    pub fn fields(&self) -> &Headers<'a> {
        &self.headers
    }

    /// The value of the first header field called `name` (long or compact form, any case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name)
    }

    /// The values of every header field called `name`, one per header line.
    pub fn headers<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers.get_all(name)
    }

    /// The body.
    #[must_use]
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Builds the [`IncomingResponse`] view: requires a well-formed top Via, From, To, Call-ID
    /// and CSeq.
    ///
    /// # Errors
    ///
    /// [`ParseError::BadResponse`] (drop the response).
    pub fn to_incoming_response(&self) -> Result<IncomingResponse<'a>, ParseError> {
        self.incoming().map_err(ParseError::BadResponse)
    }

    fn incoming(&self) -> Result<IncomingResponse<'a>, Problem> {
        let h = &self.headers;
        let top = h
            .of_kind(HeaderName::Via)
            .flat_map(split_list)
            .next()
            .ok_or(Problem::Missing(HeaderName::Via))?;
        let top = Via::parse(top).ok_or(Problem::Invalid(HeaderName::Via))?;
        let from = NameAddr::parse(h.required(HeaderName::From)?)
            .ok_or(Problem::Invalid(HeaderName::From))?;
        let to =
            NameAddr::parse(h.required(HeaderName::To)?).ok_or(Problem::Invalid(HeaderName::To))?;
        let cseq =
            CSeq::parse(h.required(HeaderName::CSeq)?).ok_or(Problem::Invalid(HeaderName::CSeq))?;
        Ok(IncomingResponse {
            status: self.status,
            top_branch: top.branch(),
            call_id: call_id(h.required(HeaderName::CallId)?)?,
            from_tag: from.tag(),
            to_tag: to.tag(),
            cseq: cseq.number,
            cseq_method: Method::from_token(cseq.method.as_bytes()),
        })
    }
}

/// The RFC 4028 fields of a request. A malformed `Session-Expires` (not `delta-seconds`
/// followed by well-formed parameters) rejects an INVITE or UPDATE, the requests that
/// negotiate the session interval; other methods ignore it. A malformed `Min-SE` is ignored.
fn session_timer(h: &Headers<'_>, method: Method) -> Result<SessionTimer, Problem> {
    let mut st = SessionTimer::default();
    if let Some(v) = h.of_kind(HeaderName::SessionExpires).next() {
        match session_expires(v) {
            Some((secs, refresher)) => {
                st.expires = Some(secs);
                st.refresher = refresher;
            }
            None if matches!(method, Method::Invite | Method::Update) => {
                return Err(Problem::Invalid(HeaderName::SessionExpires));
            }
            None => {}
        }
    }
    st.min_se = h
        .of_kind(HeaderName::MinSe)
        .next()
        .and_then(|v| session_expires(v).map(|(secs, _)| secs));
    let lists_timer = |kind| {
        h.of_kind(kind)
            .flat_map(split_list)
            .any(|t| t.eq_ignore_ascii_case("timer"))
    };
    st.supported = lists_timer(HeaderName::Supported);
    st.required = lists_timer(HeaderName::Require);
    Ok(st)
}

/// `delta-seconds *(SEMI se-params)` (RFC 4028 §4): the seconds (saturating at `u32::MAX`)
/// and the `refresher` when it is `uac` or `uas`. `None` when malformed.
fn session_expires(value: &str) -> Option<(u32, Option<Refresher>)> {
    let v = trim_lws(value);
    let (delta, params) = match v.find(';') {
        Some(i) => (v.get(..i)?, Params::new(v.get(i..)?)),
        None => (v, Params::new("")),
    };
    let delta = trim_lws(delta);
    if delta.is_empty() || !delta.bytes().all(|c| c.is_ascii_digit()) || !params.is_valid() {
        return None;
    }
    let secs = delta.bytes().fold(0u32, |acc, c| {
        acc.saturating_mul(10).saturating_add(u32::from(c - b'0'))
    });
    let refresher = params.get("refresher").and_then(|r| {
        if r.eq_ignore_ascii_case("uac") {
            Some(Refresher::Uac)
        } else if r.eq_ignore_ascii_case("uas") {
            Some(Refresher::Uas)
        } else {
            None
        }
    });
    Some((secs, refresher))
}

/// Checks a Call-ID: non-empty visible ASCII (RFC 3261 `word ["@" word]`).
fn call_id(v: &str) -> Result<&str, Problem> {
    let v = trim_lws(v);
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(v)
    } else {
        Err(Problem::Invalid(HeaderName::CallId))
    }
}

// ---- errors ---------------------------------------------------------------------------------

/// Why a message was rejected.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ParseError {
    /// Not a SIP message at all (no request or status line): drop.
    NotSip,
    /// A malformed request: answer with [`ParseError::status`].
    BadRequest(Problem),
    /// A malformed response: drop (a UAS never answers a response).
    BadResponse(Problem),
}

/// What exactly is wrong with a message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Problem {
    /// The datagram exceeds [`SIP_MAX_DATAGRAM`].
    TooLarge,
    /// The request line or status line is malformed.
    StartLine,
    /// A `SIP/x.y` version other than 2.0.
    Version,
    /// The Request-URI is not a URI (`<…>`, spaces, no scheme).
    RequestUri,
    /// The start line or a header field is not UTF-8.
    NotUtf8,
    /// A header line is malformed (no colon, bad name, fold without a header).
    HeaderSyntax,
    /// More than [`SIP_MAX_HEADERS`] header fields.
    TooManyHeaders,
    /// No blank line ends the header section.
    HeadersUnterminated,
    /// Content-Length is not a number, or appears more than once.
    ContentLength,
    /// Content-Length exceeds the bytes present.
    BodyTruncated,
    /// A mandatory header is missing.
    Missing(HeaderName),
    /// A header that must appear once appears several times.
    Duplicate(HeaderName),
    /// A header's value is malformed.
    Invalid(HeaderName),
    /// More than [`SIP_MAX_VIAS`] Via values.
    TooManyVias,
    /// More than [`crate::limits::SIP_MAX_ROUTES`] Record-Route values.
    TooManyRoutes,
    /// The CSeq method differs from the request method.
    CSeqMismatch,
}

impl ParseError {
    /// The status a UAS answers with: 505 for a wrong SIP version, 513 when a bound is
    /// exceeded, 400 for any other malformed request; `None` means drop silently (responses,
    /// non-SIP).
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            ParseError::NotSip | ParseError::BadResponse(_) => None,
            ParseError::BadRequest(Problem::Version) => Some(505),
            ParseError::BadRequest(
                Problem::TooLarge
                | Problem::TooManyHeaders
                | Problem::TooManyVias
                | Problem::TooManyRoutes,
            ) => Some(513),
            ParseError::BadRequest(_) => Some(400),
        }
    }

    /// The standard reason phrase for [`ParseError::status`] (`""` when dropped).
    #[must_use]
    pub fn reason_phrase(&self) -> &'static str {
        match self.status() {
            Some(505) => "Version Not Supported",
            Some(513) => "Message Too Large",
            Some(_) => "Bad Request",
            None => "",
        }
    }

    /// The detail.
    #[must_use]
    pub fn problem(&self) -> Option<Problem> {
        match self {
            ParseError::NotSip => None,
            ParseError::BadRequest(p) | ParseError::BadResponse(p) => Some(*p),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |h: &HeaderName| h.as_str().unwrap_or("header");
        match self {
            Problem::TooLarge => f.write_str("message too large"),
            Problem::StartLine => f.write_str("malformed start line"),
            Problem::Version => f.write_str("SIP version not supported"),
            Problem::RequestUri => f.write_str("malformed Request-URI"),
            Problem::NotUtf8 => f.write_str("header not UTF-8"),
            Problem::HeaderSyntax => f.write_str("malformed header line"),
            Problem::TooManyHeaders => f.write_str("too many header fields"),
            Problem::HeadersUnterminated => f.write_str("header section not terminated"),
            Problem::ContentLength => f.write_str("bad Content-Length"),
            Problem::BodyTruncated => f.write_str("body shorter than Content-Length"),
            Problem::Missing(h) => write!(f, "missing {}", name(h)),
            Problem::Duplicate(h) => write!(f, "duplicate {}", name(h)),
            Problem::Invalid(h) => write!(f, "malformed {}", name(h)),
            Problem::TooManyVias => f.write_str("too many Via values"),
            Problem::TooManyRoutes => f.write_str("too many Record-Route values"),
            Problem::CSeqMismatch => f.write_str("CSeq method does not match"),
        }
    }
}

impl fmt::Display for ParseError {
    /// Usable as a reason phrase: `Bad Request (missing Call-ID)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NotSip => f.write_str("not a SIP message"),
            ParseError::BadRequest(p) => write!(f, "{} ({p})", self.reason_phrase()),
            ParseError::BadResponse(p) => write!(f, "bad response ({p})"),
        }
    }
}

impl core::error::Error for ParseError {}

// ---- line scanning --------------------------------------------------------------------------

/// One step of the header-line scanner.
enum Field {
    /// A header line (with its continuation lines): name span, value span, next position.
    Header {
        name: (usize, usize),
        value: (usize, usize),
        next: usize,
    },
    /// A line that is not a header; resume at `next`.
    Bad { next: usize },
    /// The blank line: the body starts at `body`.
    End { body: usize },
    /// The datagram ends before the blank line.
    Unterminated,
}

/// The line starting at `from`: (end of content without CR/LF, start of next line).
fn line_at(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let nl = from + buf.get(from..)?.iter().position(|&b| b == b'\n')?;
    let end = if nl > from && buf.get(nl - 1) == Some(&b'\r') {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

/// Scans the header field starting at `pos`, including its continuation lines.
fn next_field(buf: &[u8], pos: usize) -> Field {
    let Some((end, mut next)) = line_at(buf, pos) else {
        return Field::Unterminated;
    };
    if end == pos {
        return Field::End { body: next };
    }
    let mut value_end = end;
    while buf.get(next).is_some_and(|&b| b == b' ' || b == b'\t') {
        match line_at(buf, next) {
            Some((e, n)) => {
                value_end = e;
                next = n;
            }
            None => return Field::Unterminated,
        }
    }
    if buf.get(pos).is_some_and(|&b| b == b' ' || b == b'\t') {
        return Field::Bad { next };
    }
    let Some(colon) = buf
        .get(pos..end)
        .and_then(|l| l.iter().position(|&b| b == b':'))
    else {
        return Field::Bad { next };
    };
    let colon = pos + colon;
    let mut name_end = colon;
    while name_end > pos
        && buf
            .get(name_end - 1)
            .is_some_and(|&b| b == b' ' || b == b'\t')
    {
        name_end -= 1;
    }
    Field::Header {
        name: (pos, name_end),
        value: (colon + 1, value_end),
        next,
    }
}

/// The UTF-8 text of `buf[a..b]`.
fn text(buf: &[u8], (a, b): (usize, usize)) -> Option<&str> {
    core::str::from_utf8(buf.get(a..b)?).ok()
}

/// The start line: skips leading CR/LF; returns (line, position after it or `None` if the
/// datagram has no line end).
fn start_line(buf: &[u8]) -> Option<(&str, Option<usize>)> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let (end, next) = match line_at(buf, start) {
        Some((e, n)) => (e, Some(n)),
        None => (buf.len(), None),
    };
    Some((text(buf, (start, end))?, next))
}

/// The whitespace-separated words of a request line.
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split([' ', '\t']).filter(|w| !w.is_empty())
}

/// `true` for `SIP/1*DIGIT.1*DIGIT`.
fn is_sip_version(v: &str) -> bool {
    let Some(num) = v
        .get(4..)
        .filter(|_| v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")))
    else {
        return false;
    };
    num.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    })
}

fn starts_with_sip(s: &str) -> bool {
    s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
}

enum StartLine<'a> {
    Request { method_token: &'a str, uri: &'a str },
    Response { status: u16, reason: &'a str },
}

/// Classifies and parses the start line. `Err(NotSip)` if it is neither.
fn parse_start_line(line: &str) -> Result<StartLine<'_>, ParseError> {
    if starts_with_sip(line) {
        let bad = ParseError::BadResponse;
        let (version, rest) = line.split_once(' ').ok_or(bad(Problem::StartLine))?;
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(bad(Problem::Version));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status = (code.len() == 3)
            .then(|| parse_u32(code))
            .flatten()
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| (100..=699).contains(c))
            .ok_or(bad(Problem::StartLine))?;
        return Ok(StartLine::Response {
            status,
            reason: reason.trim_end_matches([' ', '\t']),
        });
    }
    let last = words(line).last().ok_or(ParseError::NotSip)?;
    if !starts_with_sip(last) {
        return Err(ParseError::NotSip);
    }
    let bad = ParseError::BadRequest;
    let mut w = words(line);
    let (Some(method_token), Some(uri), Some(version), None) =
        (w.next(), w.next(), w.next(), w.next())
    else {
        return Err(bad(Problem::StartLine));
    };
    if !is_token(method_token) {
        return Err(bad(Problem::StartLine));
    }
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(bad(if is_sip_version(version) {
            Problem::Version
        } else {
            Problem::StartLine
        }));
    }
    if !is_plausible_uri(uri) {
        return Err(bad(Problem::RequestUri));
    }
    Ok(StartLine::Request { method_token, uri })
}

// ---- parse ----------------------------------------------------------------------------------

/// Parses one datagram into a borrowed [`Message`]. Never panics, never allocates.
///
/// Checks framing and the start line only; header semantics are checked by
/// [`Request::to_incoming`] / [`Response::to_incoming_response`].
///
/// # Errors
///
/// A [`ParseError`]; its [`status`](ParseError::status) says whether to answer or drop.
pub fn parse(datagram: &[u8]) -> Result<Message<'_>, ParseError> {
    let (line, after) = start_line(datagram).ok_or(ParseError::NotSip)?;
    let start = parse_start_line(line)?;
    let bad = |p| match start {
        StartLine::Request { .. } => ParseError::BadRequest(p),
        StartLine::Response { .. } => ParseError::BadResponse(p),
    };
    if datagram.len() > SIP_MAX_DATAGRAM {
        return Err(bad(Problem::TooLarge));
    }
    let mut pos = after.ok_or(bad(Problem::HeadersUnterminated))?;
    let mut headers = Headers::default();
    let body_start = loop {
        match next_field(datagram, pos) {
            Field::Header { name, value, next } => {
                let name = text(datagram, name).ok_or(bad(Problem::NotUtf8))?;
                let value = text(datagram, value).ok_or(bad(Problem::NotUtf8))?;
                if !is_token(name) {
                    return Err(bad(Problem::HeaderSyntax));
                }
                let h = Header {
                    name,
                    kind: HeaderName::from_name(name),
                    value: trim_lws(value),
                };
                headers
                    .list
                    .push(h)
                    .map_err(|_| bad(Problem::TooManyHeaders))?;
                pos = next;
            }
            Field::Bad { .. } => return Err(bad(Problem::HeaderSyntax)),
            Field::End { body } => break body,
            Field::Unterminated => return Err(bad(Problem::HeadersUnterminated)),
        }
    };
    let rest = datagram.get(body_start..).unwrap_or(&[]);
    let body = match headers.single(HeaderName::ContentLength) {
        Err(_) => return Err(bad(Problem::ContentLength)),
        Ok(None) => rest,
        Ok(Some(v)) => {
            let len = parse_usize(v).ok_or(bad(Problem::ContentLength))?;
            rest.get(..len).ok_or(bad(Problem::BodyTruncated))?
        }
    };
    Ok(match start {
        StartLine::Request { method_token, uri } => Message::Request(Request {
            method: Method::from_token(method_token.as_bytes()),
            method_token,
            uri,
            headers,
            body,
        }),
        StartLine::Response { status, reason } => Message::Response(Response {
            status,
            reason,
            headers,
            body,
        }),
    })
}

/// Reads what an error response needs from a request that [`parse`] or
/// [`Request::to_incoming`] rejected: the method and Request-URI, up to [`SIP_MAX_VIAS`] Via
/// values, and the first From, To, Call-ID and CSeq, skipping lines it cannot read. Best
/// effort and never panics.
///
/// Returns `None` if the datagram is a response, has no recognisable request line (method
/// token first) or no readable Via (an answer could not be addressed). Fields that cannot be
/// read are empty (`""`, `None`, CSeq 0 with the request's method); the body is empty and
/// Content-Type, Contact, Max-Forwards, Require and User-Agent are `None`.
#[must_use]
pub fn salvage(datagram: &[u8]) -> Option<Incoming<'_>> {
    let (line, after) = start_line(datagram)?;
    if starts_with_sip(line) {
        return None;
    }
    let mut w = words(line);
    let method_token = w.next().filter(|t| is_token(t))?;
    let request_uri = w.next().unwrap_or("");
    let method = Method::from_token(method_token.as_bytes());

    let mut vias: Vec<&str, SIP_MAX_VIAS> = Vec::new();
    let (mut from, mut to, mut cid, mut cseq) = (None, None, None, None);
    let mut pos = after?;
    loop {
        match next_field(datagram, pos) {
            Field::Header { name, value, next } => {
                pos = next;
                let (Some(name), Some(value)) = (text(datagram, name), text(datagram, value))
                else {
                    continue;
                };
                let value = trim_lws(value);
                match HeaderName::from_name(name) {
                    HeaderName::Via => {
                        for v in split_list(value).filter(|v| !v.is_empty()) {
                            // Full: the rest is lost; an answer still reaches the top hop.
                            let _ = vias.push(v);
                        }
                    }
                    HeaderName::From => {
                        from.get_or_insert(value);
                    }
                    HeaderName::To => {
                        to.get_or_insert(value);
                    }
                    HeaderName::CallId => {
                        cid.get_or_insert(value);
                    }
                    HeaderName::CSeq => {
                        cseq.get_or_insert(value);
                    }
                    _ => {}
                }
            }
            Field::Bad { next } => pos = next,
            Field::End { .. } | Field::Unterminated => break,
        }
    }
    // Leniently: the Via may be the reason for the error (e.g. `SIP/7.0/UDP`).
    let top = vias.first()?;
    let top_branch = top
        .find(';')
        .and_then(|i| Params::new(top.get(i..)?).get("branch"));
    let from = from.unwrap_or("");
    let to = to.unwrap_or("");
    let from_na = NameAddr::parse(from);
    let to_na = NameAddr::parse(to);
    let cseq = cseq.and_then(CSeq::parse);
    Some(Incoming {
        method,
        method_token,
        request_uri,
        vias,
        top_branch,
        from,
        from_uri: from_na.map_or("", |n| n.uri),
        from_tag: from_na.and_then(|n| n.tag()),
        to,
        to_uri: to_na.map_or("", |n| n.uri),
        to_tag: to_na.and_then(|n| n.tag()),
        call_id: cid.unwrap_or(""),
        cseq: cseq.map_or(0, |c| c.number),
        cseq_method: cseq.map_or(method, |c| Method::from_token(c.method.as_bytes())),
        contact_uri: None,
        record_route: Vec::new(),
        received_from: None,
        transport: crate::sip::route::Transport::Udp,
        max_forwards: None,
        content_type: None,
        body: &[],
        require: None,
        user_agent: None,
        session_timer: SessionTimer::default(),
    })
}
