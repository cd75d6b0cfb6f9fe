//! The SIP serializer: responses to an [`Incoming`] request and the in-dialog requests ccedge
//! sends (BYE, REFER), written into a caller's buffer without allocation.
//!
//! ```text
//! Response { status, vias, from, to(+our tag), call_id, cseq, ... }.emit(&mut buf) -> Ok(len)
//! Request  { method: BYE|REFER, request_uri, via, from(+our tag), to, ... }.emit(&mut buf)
//! ```
//!
//! Header values copied from a request are written byte for byte, except that CR and LF are
//! replaced by spaces so a value can never end a header line early. Every message ends with
//! `Content-Length`; `Content-Type` is written only with a body. Emission never panics: a buffer
//! that is too small gives [`BufferTooSmall`].
//!
//! Header order of a response: Via…, From, To, Call-ID, CSeq, Contact, Allow, Accept,
//! Supported, Unsupported, Retry-After, Require, Session-Expires, Min-SE, Server, Content-Type,
//! Content-Length.

use core::fmt;
use core::net::SocketAddr;

use crate::sip::route::{write_stamped_via, Transport};
use crate::sip::{Incoming, Method, Refresher};

/// The default `Server`/`User-Agent` value: the product name without its version, so that a
/// scanner does not learn which release to attack (the `edge` shell makes it configurable).
pub const SERVER: &str = "ccedge";

/// The methods ccedge accepts, as written in `Allow`.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY, UPDATE";

/// The body types ccedge accepts, as written in `Accept`.
pub const ACCEPT: &str = "application/sdp";

/// The SIP option tags ccedge supports: `timer` (RFC 4028 session timers; no 100rel). A
/// request that `Require`s any tag not listed here is answered 420.
pub const SUPPORTED_OPTION_TAGS: &[&str] = &["timer"];

pub use crate::BufferTooSmall;

/// A cursor over a caller's buffer. Writes past the end set a sticky overflow flag instead of
/// panicking; [`Writer::finish`] reports it.
#[derive(Debug)]
pub struct Writer<'b> {
    buf: &'b mut [u8],
    len: usize,
    overflow: bool,
}

impl<'b> Writer<'b> {
    /// A writer at the start of `buf`.
    #[must_use]
    pub fn new(buf: &'b mut [u8]) -> Self {
        Writer {
            buf,
            len: 0,
            overflow: false,
        }
    }

    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        if self.overflow {
            return;
        }
        let end = match self.len.checked_add(b.len()) {
            Some(e) if e <= self.buf.len() => e,
            _ => {
                self.overflow = true;
                return;
            }
        };
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(b);
            self.len = end;
        } else {
            self.overflow = true;
        }
    }

    /// Appends a header value copied from a peer, with CR and LF replaced by spaces.
    pub fn value(&mut self, b: &[u8]) {
        let mut rest = b;
        while !rest.is_empty() {
            let cut = rest
                .iter()
                .position(|&c| c == b'\r' || c == b'\n')
                .unwrap_or(rest.len());
            let (clean, tail) = rest.split_at(cut);
            self.bytes(clean);
            if let Some((_, after)) = tail.split_first() {
                self.bytes(b" ");
                rest = after;
            } else {
                rest = tail;
            }
        }
    }

    /// Appends `Name: value\r\n` with a copied value.
    pub fn header(&mut self, name: &str, value: &[u8]) {
        self.bytes(name.as_bytes());
        self.bytes(b": ");
        self.value(value);
        self.bytes(b"\r\n");
    }

    /// Appends a decimal number.
    pub fn number(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = n;
        loop {
            i -= 1;
            if let Some(d) = digits.get_mut(i) {
                // `v % 10` is below 10, the cast cannot truncate.
                *d = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        if let Some(s) = digits.get(i..) {
            self.bytes(s);
        }
    }

    /// The number of bytes written, or [`BufferTooSmall`] if anything did not fit.
    ///
    /// # Errors
    /// [`BufferTooSmall`] when a write ran past the end of the buffer.
    pub fn finish(self) -> Result<usize, BufferTooSmall> {
        if self.overflow {
            Err(BufferTooSmall)
        } else {
            Ok(self.len)
        }
    }
}

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        if self.overflow {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// A tag ccedge puts on From (its requests) or To (its responses): 64 random bits chosen by the
/// shell, written as lowercase hex.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LocalTag(pub u64);

impl fmt::Display for LocalTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A list of header values (the Vias of a response, a route set), in order, topmost first.
#[derive(Copy, Clone, Debug)]
pub enum Vias<'a> {
    /// Borrowed straight from an [`Incoming`].
    List(&'a [&'a str]),
    /// Packed as `u16` big-endian length + bytes, repeated (how a dialog stores them).
    Packed(&'a [u8]),
}

impl<'a> Vias<'a> {
    /// No values.
    pub const EMPTY: Vias<'static> = Vias::List(&[]);

    fn for_each(self, mut f: impl FnMut(&'a [u8])) {
        match self {
            Vias::List(l) => l.iter().for_each(|v| f(v.as_bytes())),
            Vias::Packed(p) => Packed(p).for_each(f),
        }
    }
}

/// Iterates over a `u16`-length-prefixed byte sequence (see [`Vias::Packed`]); stops at the
/// first malformed entry.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Packed<'a>(pub(crate) &'a [u8]);

impl<'a> Packed<'a> {
    /// The bytes not yet iterated.
    pub(crate) fn rest(self) -> &'a [u8] {
        self.0
    }
}

impl<'a> Iterator for Packed<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = match self.0 {
            [hi, lo, rest @ ..] => (usize::from(*hi) << 8 | usize::from(*lo), rest),
            _ => return None,
        };
        if len > rest.len() {
            self.0 = &[];
            return None;
        }
        let (item, tail) = rest.split_at(len);
        self.0 = tail;
        Some(item)
    }
}

/// Extra headers a response may carry.
#[derive(Copy, Clone, Debug, Default)]
pub struct Extras<'a> {
    /// Write `Allow` (405, 2xx to INVITE and OPTIONS, 501).
    pub allow: bool,
    /// Write `Accept` (OPTIONS, 415).
    pub accept: bool,
    /// Write `Supported` (OPTIONS).
    pub supported: bool,
    /// `Unsupported` option tags (420), written as given.
    pub unsupported: Option<&'a [u8]>,
    /// `Retry-After` seconds (500, 503).
    pub retry_after: Option<u32>,
    /// Write `Require: timer` (a 2xx that settles a session timer, RFC 4028 §9).
    pub require_timer: bool,
    /// `Session-Expires: N;refresher=X` (a 2xx that settles a session timer).
    pub session_expires: Option<(u32, Refresher)>,
    /// `Min-SE` seconds (422, RFC 4028 §6).
    pub min_se: Option<u32>,
}

/// A SIP response ready to be written.
#[derive(Copy, Clone, Debug)]
pub struct Response<'a> {
    /// Status code, 100–699.
    pub status: u16,
    /// Every Via of the request, in order.
    pub vias: Vias<'a>,
    /// Where the request came from: the top Via is written with `received`/`rport` for it
    /// (RFC 3261 §18.2.1, RFC 3581). `None` copies the Vias unchanged.
    pub stamp: Option<SocketAddr>,
    /// Record-Route values to echo (a response that establishes a dialog, RFC 3261 §12.1.1).
    pub record_route: Vias<'a>,
    /// The request's From value.
    pub from: &'a [u8],
    /// The request's To value.
    pub to: &'a [u8],
    /// Our tag, appended to To as `;tag=` (set it only when the request's To had none).
    pub to_tag: Option<LocalTag>,
    /// The Call-ID.
    pub call_id: &'a [u8],
    /// The CSeq number of the request.
    pub cseq: u32,
    /// The CSeq method token of the request.
    pub cseq_method: &'a [u8],
    /// Our Contact URI (written inside `<>`), for 18x/2xx to INVITE.
    pub contact: Option<&'a str>,
    /// The transport the Contact asks for (`;transport=tcp` is added for a stream).
    pub contact_transport: Transport,
    /// Optional extra headers.
    pub extras: Extras<'a>,
    /// The `Server` value; empty: no `Server` header.
    pub server: &'a str,
    /// Content-Type of `body` (written only when `body` is not empty).
    pub content_type: &'a str,
    /// The body.
    pub body: &'a [u8],
}

impl<'a> Response<'a> {
    /// A response to `req` with `status`, copying its Vias, From, To, Call-ID and CSeq, adding
    /// `to_tag` when the request's To carries no tag. No Contact, extras or body.
    #[must_use]
    pub fn to_request(req: &'a Incoming<'a>, status: u16, to_tag: LocalTag) -> Self {
        Response {
            status,
            vias: Vias::List(&req.vias),
            stamp: req.received_from,
            record_route: Vias::EMPTY,
            from: req.from.as_bytes(),
            to: req.to.as_bytes(),
            to_tag: if req.to_tag.is_none() {
                Some(to_tag)
            } else {
                None
            },
            call_id: req.call_id.as_bytes(),
            cseq: req.cseq,
            cseq_method: cseq_token(req).as_bytes(),
            contact: None,
            contact_transport: req.transport,
            extras: Extras::default(),
            server: SERVER,
            content_type: "application/sdp",
            body: &[],
        }
    }

    /// Writes the response into `buf`.
    ///
    /// # Errors
    /// [`BufferTooSmall`] when `buf` cannot hold it (`buf` then holds a truncated prefix).
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(buf);
        w.bytes(b"SIP/2.0 ");
        w.number(u64::from(self.status.clamp(100, 699)));
        w.bytes(b" ");
        w.bytes(reason_phrase(self.status).as_bytes());
        w.bytes(b"\r\n");
        let mut first = true;
        self.vias.for_each(|v| match self.stamp {
            Some(src) if first => {
                first = false;
                w.bytes(b"Via: ");
                write_stamped_via(&mut w, v, src);
                w.bytes(b"\r\n");
            }
            _ => w.header("Via", v),
        });
        self.record_route.for_each(|v| w.header("Record-Route", v));
        w.header("From", self.from);
        w.bytes(b"To: ");
        w.value(self.to);
        if let Some(tag) = self.to_tag {
            let _ = fmt::Write::write_fmt(&mut w, format_args!(";tag={tag}"));
        }
        w.bytes(b"\r\n");
        w.header("Call-ID", self.call_id);
        w.bytes(b"CSeq: ");
        w.number(u64::from(self.cseq));
        w.bytes(b" ");
        w.value(self.cseq_method);
        w.bytes(b"\r\n");
        if let Some(c) = self.contact {
            write_contact(&mut w, c, self.contact_transport);
        }
        write_extras(&mut w, &self.extras);
        if !self.server.is_empty() {
            w.header("Server", self.server.as_bytes());
        }
        write_body(&mut w, self.content_type, self.body);
        w.finish()
    }
}

/// `Contact: <uri>` with `;transport=tcp|tls` inside the brackets for a stream.
fn write_contact(w: &mut Writer<'_>, uri: &str, transport: Transport) {
    w.bytes(b"Contact: <");
    w.value(uri.as_bytes());
    match transport {
        Transport::Udp => {}
        Transport::Tcp => w.bytes(b";transport=tcp"),
        Transport::Tls => w.bytes(b";transport=tls"),
    }
    w.bytes(b">\r\n");
}

fn write_extras(w: &mut Writer<'_>, e: &Extras<'_>) {
    if e.allow {
        w.header("Allow", ALLOW.as_bytes());
    }
    if e.accept {
        w.header("Accept", ACCEPT.as_bytes());
    }
    if e.supported {
        w.bytes(b"Supported:");
        for (i, t) in SUPPORTED_OPTION_TAGS.iter().enumerate() {
            w.bytes(if i == 0 { b" " } else { b", " });
            w.bytes(t.as_bytes());
        }
        w.bytes(b"\r\n");
    }
    if let Some(u) = e.unsupported {
        w.header("Unsupported", u);
    }
    if let Some(s) = e.retry_after {
        w.bytes(b"Retry-After: ");
        w.number(u64::from(s));
        w.bytes(b"\r\n");
    }
    if e.require_timer {
        w.bytes(b"Require: timer\r\n");
    }
    if let Some((secs, refresher)) = e.session_expires {
        write_session_expires(w, secs, refresher);
    }
    if let Some(s) = e.min_se {
        w.bytes(b"Min-SE: ");
        w.number(u64::from(s));
        w.bytes(b"\r\n");
    }
}

fn write_session_expires(w: &mut Writer<'_>, secs: u32, refresher: Refresher) {
    w.bytes(b"Session-Expires: ");
    w.number(u64::from(secs));
    w.bytes(b";refresher=");
    w.bytes(refresher.as_str().as_bytes());
    w.bytes(b"\r\n");
}

fn write_body(w: &mut Writer<'_>, content_type: &str, body: &[u8]) {
    if !body.is_empty() {
        w.header("Content-Type", content_type.as_bytes());
    }
    w.bytes(b"Content-Length: ");
    w.number(body.len() as u64);
    w.bytes(b"\r\n\r\n");
    w.bytes(body);
}

/// The CSeq method token of `req` as it should be echoed.
#[must_use]
pub fn cseq_token<'a>(req: &Incoming<'a>) -> &'a str {
    match req.cseq_method.as_str() {
        Some(s) => s,
        None => req.method_token,
    }
}

/// A request ccedge sends inside a dialog.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OutMethod {
    /// BYE: we hang up.
    Bye,
    /// REFER: we transfer the caller out.
    Refer,
    /// UPDATE without a body: we refresh the session (RFC 4028 §10, RFC 3311).
    Update,
}

impl OutMethod {
    /// The method token.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OutMethod::Bye => "BYE",
            OutMethod::Refer => "REFER",
            OutMethod::Update => "UPDATE",
        }
    }

    /// The same method as a [`Method`].
    #[must_use]
    pub fn method(self) -> Method {
        match self {
            OutMethod::Bye => Method::Bye,
            OutMethod::Refer => Method::Refer,
            OutMethod::Update => Method::Update,
        }
    }
}

/// An in-dialog request ccedge sends (as the UAS's peer-facing UAC).
#[derive(Copy, Clone, Debug)]
pub struct Request<'a> {
    /// BYE, REFER or UPDATE.
    pub method: OutMethod,
    /// The remote target (the peer's Contact URI).
    pub request_uri: &'a [u8],
    /// The route set, written as Route header fields in order (RFC 3261 §12.2.1.1).
    pub route: Vias<'a>,
    /// A URI written as the last Route, inside `<>` (the remote target, behind a strict
    /// router).
    pub route_last: Option<&'a [u8]>,
    /// Our `host:port` for the Via.
    pub via_sent_by: &'a str,
    /// The transport, for the Via and the Contact.
    pub transport: Transport,
    /// The Via branch, with the `z9hG4bK` magic cookie (see [`branch`]).
    pub branch: &'a [u8],
    /// Our From value without tag (the To of the INVITE we answered).
    pub from: &'a [u8],
    /// Our tag, appended to From.
    pub from_tag: LocalTag,
    /// The peer's To value (the From of the INVITE, with its tag).
    pub to: &'a [u8],
    /// The dialog's Call-ID.
    pub call_id: &'a [u8],
    /// Our CSeq number for this request.
    pub cseq: u32,
    /// Our Contact URI (written inside `<>`), for REFER.
    pub contact: Option<&'a str>,
    /// REFER's `Refer-To` URI (written inside `<>`).
    pub refer_to: Option<&'a [u8]>,
    /// REFER's `Referred-By` URI (written inside `<>`).
    pub referred_by: Option<&'a str>,
    /// The `User-Agent` value; empty: no `User-Agent` header.
    pub user_agent: &'a str,
    /// The session interval of a refresh: written as `Session-Expires: N;refresher=uas` with
    /// `Supported: timer` (our UPDATE, RFC 4028 §10).
    pub session_expires: Option<u32>,
}

/// The Via branch of our request number `cseq` in the dialog with local tag `tag`: unique per
/// transaction, starting with the RFC 3261 magic cookie.
#[must_use]
pub fn branch(tag: LocalTag, cseq: u32) -> heapless::String<40> {
    let mut s = heapless::String::new();
    // 7 + 3 + 16 + 1 + 10 = 37 bytes at most: always fits.
    let _ = fmt::Write::write_fmt(&mut s, format_args!("z9hG4bKcc{tag}.{cseq}"));
    s
}

impl Request<'_> {
    /// Writes the request into `buf`.
    ///
    /// # Errors
    /// [`BufferTooSmall`] when `buf` cannot hold it.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let mut w = Writer::new(buf);
        let m = self.method.as_str().as_bytes();
        w.bytes(m);
        w.bytes(b" ");
        w.value(self.request_uri);
        w.bytes(b" SIP/2.0\r\nVia: SIP/2.0/");
        w.bytes(self.transport.via_token().as_bytes());
        w.bytes(b" ");
        w.value(self.via_sent_by.as_bytes());
        w.bytes(b";branch=");
        w.value(self.branch);
        w.bytes(b";rport\r\n");
        self.route.for_each(|v| w.header("Route", v));
        if let Some(last) = self.route_last {
            w.bytes(b"Route: <");
            w.value(last);
            w.bytes(b">\r\n");
        }
        w.bytes(b"Max-Forwards: 70\r\nFrom: ");
        w.value(self.from);
        let _ = fmt::Write::write_fmt(&mut w, format_args!(";tag={}\r\n", self.from_tag));
        w.header("To", self.to);
        w.header("Call-ID", self.call_id);
        w.bytes(b"CSeq: ");
        w.number(u64::from(self.cseq));
        w.bytes(b" ");
        w.bytes(m);
        w.bytes(b"\r\n");
        if let Some(c) = self.contact {
            write_contact(&mut w, c, self.transport);
        }
        if let Some(r) = self.refer_to {
            w.bytes(b"Refer-To: <");
            w.value(r);
            w.bytes(b">\r\n");
        }
        if let Some(r) = self.referred_by {
            w.bytes(b"Referred-By: <");
            w.value(r.as_bytes());
            w.bytes(b">\r\n");
        }
        if let Some(secs) = self.session_expires {
            write_session_expires(&mut w, secs, Refresher::Uas);
            w.bytes(b"Supported: timer\r\n");
        }
        if !self.user_agent.is_empty() {
            w.header("User-Agent", self.user_agent.as_bytes());
        }
        write_body(&mut w, "", &[]);
        w.finish()
    }
}

/// The reason phrase ccedge writes for `status`.
#[must_use]
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => class_phrase(status),
    }
}

fn class_phrase(status: u16) -> &'static str {
    match status / 100 {
        1 => "Session Progress",
        2 => "OK",
        3 => "Redirect",
        4 => "Client Error",
        5 => "Server Error",
        _ => "Global Failure",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate alloc;
    extern crate std;
    use super::*;
    use crate::limits::SIP_MAX_VIAS;
    use alloc::string::String;
    use alloc::vec::Vec as StdVec;
    use heapless::Vec;

    /// Builds typical `Incoming` requests by hand for the sip tests.
    pub(crate) fn incoming(
        method: Method,
        cseq: u32,
        to_tag: Option<&'static str>,
    ) -> Incoming<'static> {
        let mut vias: Vec<&'static str, SIP_MAX_VIAS> = Vec::new();
        let _ = vias.push("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-gw-1;rport");
        let _ = vias.push("SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-edge-7");
        let (to, tag) = match to_tag {
            Some("ours") => ("<sip:+18005550100@10.0.0.2>;tag=abc", Some("abc")),
            Some(t) => ("<sip:+18005550100@10.0.0.2>;tag=other", Some(t)),
            None => ("<sip:+18005550100@10.0.0.2>", None),
        };
        let token = method.as_str().unwrap_or("FOO");
        Incoming {
            method,
            method_token: token,
            request_uri: "sip:+18005550100@10.0.0.2:5060",
            vias,
            top_branch: Some("z9hG4bK-gw-1"),
            from: "\"Caller\" <sip:+12155550123@10.0.0.1>;tag=gw42",
            from_uri: "sip:+12155550123@10.0.0.1",
            from_tag: Some("gw42"),
            to,
            to_uri: "sip:+18005550100@10.0.0.2",
            to_tag: tag,
            call_id: "a84b4c76e66710@10.0.0.1",
            cseq,
            cseq_method: method,
            contact_uri: Some("sip:gw@10.0.0.1:5060"),
            record_route: Vec::new(),
            received_from: None,
            transport: crate::sip::route::Transport::Udp,
            max_forwards: Some(70),
            content_type: None,
            body: &[],
            require: None,
            user_agent: Some("gw/1.0"),
            session_timer: crate::sip::SessionTimer::default(),
        }
    }

    /// A minimal parse of an emitted message: (start line, headers in order, body).
    pub(crate) fn split(msg: &[u8]) -> (String, StdVec<(String, String)>, StdVec<u8>) {
        let text = core::str::from_utf8(msg).expect("utf8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head end");
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap().into();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").unwrap_or((l.trim_end_matches(':'), ""));
                (n.into(), v.into())
            })
            .collect();
        (start, headers, body.as_bytes().to_vec())
    }

    /// Checks a message with ezk-sip-types as an independent parser: every line is a header
    /// line, Via/From/To/CSeq/Call-ID parse, Content-Length frames the body.
    pub(crate) fn oracle(msg: &[u8]) -> (u16, u32, StdVec<String>) {
        use core::str::FromStr;
        use ezk_sip_types::_private_reexport::Bytes;
        use ezk_sip_types::header::typed::{CSeq, FromTo, Via};
        use ezk_sip_types::header::HeaderParse;
        use ezk_sip_types::msg::{Line, MessageLine, PullParser};
        let mut p = PullParser::new(msg, 0);
        let first = core::str::from_utf8(p.next().unwrap().unwrap()).unwrap();
        let status = match MessageLine::from_str(first).expect("start line") {
            MessageLine::Response(s) => s.code.into_u16(),
            MessageLine::Request(_) => 0,
        };
        let mut cseq = 0;
        let mut names = StdVec::new();
        let mut clen = None;
        for line in p.by_ref() {
            let src = Bytes::copy_from_slice(line.unwrap());
            let s = core::str::from_utf8(&src).unwrap();
            let (_, l) = Line::parse(&src, s).expect("header line");
            let v = Bytes::copy_from_slice(l.value.as_bytes());
            let vs = core::str::from_utf8(&v).unwrap();
            let name = l.name.as_print_str().to_ascii_lowercase();
            match name.as_str() {
                "via" => {
                    let (rest, _) = Via::parse(&v, vs).expect("via");
                    assert!(rest.is_empty(), "via leftovers {rest:?}");
                }
                "from" | "to" => {
                    let (rest, _) = FromTo::parse(&v, vs).expect("from/to");
                    assert!(rest.trim().is_empty(), "from/to leftovers {rest:?}");
                }
                "cseq" => cseq = CSeq::parse(&v, vs).expect("cseq").1.cseq,
                "content-length" => clen = Some(vs.parse::<usize>().unwrap()),
                _ => {}
            }
            names.push(name);
        }
        let body_len = msg.len() - p.head_end();
        assert_eq!(clen, Some(body_len), "Content-Length frames the body");
        (status, cseq, names)
    }

    #[test]
    fn response_copies_request_headers_and_adds_tag() {
        let req = incoming(Method::Invite, 1, None);
        let mut r = Response::to_request(&req, 200, LocalTag(0xbeef));
        r.contact = Some("sip:ccedge@10.0.0.2:5060");
        r.extras.allow = true;
        r.body = b"v=0\r\n";
        let mut buf = [0u8; 1024];
        let n = r.emit(&mut buf).unwrap();
        let (start, h, body) = split(&buf[..n]);
        assert_eq!(start, "SIP/2.0 200 OK");
        let names: StdVec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Via",
                "Via",
                "From",
                "To",
                "Call-ID",
                "CSeq",
                "Contact",
                "Allow",
                "Server",
                "Content-Type",
                "Content-Length"
            ]
        );
        assert_eq!(h[0].1, req.vias[0]);
        assert_eq!(h[1].1, req.vias[1]);
        assert_eq!(h[2].1, req.from);
        assert_eq!(h[3].1, "<sip:+18005550100@10.0.0.2>;tag=beef");
        assert_eq!(h[5].1, "1 INVITE");
        assert_eq!(h[6].1, "<sip:ccedge@10.0.0.2:5060>");
        assert_eq!(h[8].1, SERVER);
        assert_eq!(SERVER, "ccedge", "no version disclosed by default");
        assert_eq!(h[10].1, "5");
        assert_eq!(body, b"v=0\r\n");
        let (status, cseq, _) = oracle(&buf[..n]);
        assert_eq!((status, cseq), (200, 1));
    }

    #[test]
    fn response_keeps_existing_to_tag_and_echoes_unknown_method() {
        let mut req = incoming(Method::Other, 9, Some("ours"));
        req.method_token = "FROB";
        req.cseq_method = Method::Other;
        let r = Response::to_request(&req, 501, LocalTag(1));
        let mut buf = [0u8; 1024];
        let n = r.emit(&mut buf).unwrap();
        let (start, h, _) = split(&buf[..n]);
        assert_eq!(start, "SIP/2.0 501 Not Implemented");
        let to = &h.iter().find(|(n, _)| n == "To").unwrap().1;
        assert_eq!(to, "<sip:+18005550100@10.0.0.2>;tag=abc");
        let cseq = &h.iter().find(|(n, _)| n == "CSeq").unwrap().1;
        assert_eq!(cseq, "9 FROB");
    }

    #[test]
    fn an_empty_server_value_omits_server_and_user_agent() {
        let req = incoming(Method::Options, 1, None);
        let mut r = Response::to_request(&req, 200, LocalTag(1));
        r.server = "acme-sbc";
        let mut buf = [0u8; 1024];
        let n = r.emit(&mut buf).unwrap();
        let (_, h, _) = split(&buf[..n]);
        assert!(
            h.iter().any(|(n, v)| n == "Server" && v == "acme-sbc"),
            "{h:?}"
        );
        r.server = "";
        let n = r.emit(&mut buf).unwrap();
        let (_, h, _) = split(&buf[..n]);
        assert!(h.iter().all(|(n, _)| n != "Server"), "{h:?}");
        assert_eq!(oracle(&buf[..n]).0, 200);

        let r = Request {
            method: OutMethod::Bye,
            request_uri: b"sip:gw@10.0.0.1:5060",
            route: Vias::EMPTY,
            route_last: None,
            via_sent_by: "10.0.0.2:5060",
            transport: Transport::Udp,
            branch: b"z9hG4bKccabc.2",
            from: b"<sip:+18005550100@10.0.0.2>",
            from_tag: LocalTag(0xabc),
            to: b"<sip:+12155550123@10.0.0.1>;tag=gw42",
            call_id: b"cid",
            cseq: 2,
            contact: None,
            refer_to: None,
            referred_by: None,
            user_agent: "",
            session_expires: None,
        };
        let n = r.emit(&mut buf).unwrap();
        let (_, h, _) = split(&buf[..n]);
        assert!(h.iter().all(|(n, _)| n != "User-Agent"), "{h:?}");
        assert_eq!(oracle(&buf[..n]).1, 2);
    }

    #[test]
    fn crlf_in_copied_values_cannot_inject_headers() {
        let mut req = incoming(Method::Options, 1, None);
        req.from = "<sip:a@b>;tag=x\r\nEvil: 1";
        let r = Response::to_request(&req, 200, LocalTag(1));
        let mut buf = [0u8; 1024];
        let n = r.emit(&mut buf).unwrap();
        let (_, h, _) = split(&buf[..n]);
        assert!(h.iter().all(|(n, _)| n != "Evil"));
    }

    #[test]
    fn request_bye_and_refer_are_well_formed() {
        let b = branch(LocalTag(0xabc), 2);
        assert_eq!(b.as_str(), "z9hG4bKccabc.2");
        let mut r = Request {
            method: OutMethod::Bye,
            request_uri: b"sip:gw@10.0.0.1:5060",
            route: Vias::EMPTY,
            route_last: None,
            via_sent_by: "10.0.0.2:5060",
            transport: Transport::Udp,
            branch: b.as_bytes(),
            from: b"<sip:+18005550100@10.0.0.2>",
            from_tag: LocalTag(0xabc),
            to: b"\"Caller\" <sip:+12155550123@10.0.0.1>;tag=gw42",
            call_id: b"cid",
            cseq: 2,
            contact: None,
            refer_to: None,
            referred_by: None,
            user_agent: SERVER,
            session_expires: None,
        };
        let mut buf = [0u8; 1024];
        let n = r.emit(&mut buf).unwrap();
        let (start, h, _) = split(&buf[..n]);
        assert_eq!(start, "BYE sip:gw@10.0.0.1:5060 SIP/2.0");
        assert_eq!(
            h[0].1,
            "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKccabc.2;rport"
        );
        assert_eq!(h[2].1, "<sip:+18005550100@10.0.0.2>;tag=abc");
        assert_eq!(h[5].1, "2 BYE");
        let (status, cseq, _) = oracle(&buf[..n]);
        assert_eq!((status, cseq), (0, 2));

        r.method = OutMethod::Refer;
        r.contact = Some("sip:ccedge@10.0.0.2");
        r.refer_to = Some(b"sip:agent@pbx.example.com");
        r.referred_by = Some("sip:ccedge@10.0.0.2");
        let n = r.emit(&mut buf).unwrap();
        let (start, h, _) = split(&buf[..n]);
        assert!(start.starts_with("REFER "));
        assert!(h.contains(&("Refer-To".into(), "<sip:agent@pbx.example.com>".into())));
        assert!(h.contains(&("Referred-By".into(), "<sip:ccedge@10.0.0.2>".into())));
        assert!(h.contains(&("CSeq".into(), "2 REFER".into())));
        let _ = oracle(&buf[..n]);

        r.method = OutMethod::Update;
        r.refer_to = None;
        r.referred_by = None;
        r.session_expires = Some(1800);
        let n = r.emit(&mut buf).unwrap();
        let (start, h, body) = split(&buf[..n]);
        assert!(start.starts_with("UPDATE "));
        assert!(h.contains(&("Session-Expires".into(), "1800;refresher=uas".into())));
        assert!(h.contains(&("Supported".into(), "timer".into())));
        assert!(h.contains(&("CSeq".into(), "2 UPDATE".into())));
        assert!(body.is_empty());
        let _ = oracle(&buf[..n]);
    }

    #[test]
    fn small_buffers_fail_cleanly_at_every_length() {
        let req = incoming(Method::Invite, 1, None);
        let mut r = Response::to_request(&req, 200, LocalTag(7));
        r.body = b"v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\n";
        let mut big = [0u8; 1024];
        let full = r.emit(&mut big).unwrap();
        for len in 0..full {
            let mut small = alloc::vec![0u8; len];
            assert_eq!(r.emit(&mut small), Err(BufferTooSmall), "len {len}");
        }
        let mut exact = alloc::vec![0u8; full];
        assert_eq!(r.emit(&mut exact), Ok(full));
        assert_eq!(&exact[..], &big[..full]);
    }

    #[test]
    fn writer_numbers_and_packed() {
        let mut buf = [0u8; 32];
        let mut w = Writer::new(&mut buf);
        w.number(0);
        w.bytes(b" ");
        w.number(u64::MAX);
        let n = w.finish().unwrap();
        assert_eq!(&buf[..n], b"0 18446744073709551615");
        let p: StdVec<&[u8]> = Packed(&[0, 2, b'a', b'b', 0, 0, 0, 5, b'x']).collect();
        assert_eq!(p, [&b"ab"[..], &b""[..]]);
    }

    proptest::proptest! {
        #[test]
        fn emitted_response_parses_with_ezk(
            status in 100u16..700,
            cseq in 0u32..=u32::MAX,
            tag in proptest::prelude::any::<u64>(),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            len in 0usize..1400,
        ) {
            let req = incoming(Method::Invite, cseq, None);
            let mut r = Response::to_request(&req, status, LocalTag(tag));
            r.body = &body;
            r.extras = Extras { allow: true, accept: true, supported: true, unsupported: Some(b"100rel"), retry_after: Some(5), require_timer: true, session_expires: Some((1800, Refresher::Uac)), min_se: Some(90) };
            let mut buf = alloc::vec![0u8; len];
            if let Ok(n) = r.emit(&mut buf) {
                let (s, c, _) = oracle(&buf[..n]);
                proptest::prop_assert_eq!(s, status);
                proptest::prop_assert_eq!(c, cseq);
            }
        }
    }
}
