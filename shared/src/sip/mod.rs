//! SIP for a UAS (RFC 3261 subset): the message parser, the serializer, and the transaction +
//! dialog machine.
//!
//! Where a SIP INVITE becomes a call: the shell parses a datagram with the parser here, turns it
//! into an [`Incoming`] request (borrowed fields, no copies), and hands it either to the
//! stateless endpoint logic (no dialog yet) or to the call's dialog.

pub mod emit;
pub mod endpoint;
pub mod route;
pub mod uas;

use heapless::Vec;

use core::net::SocketAddr;

use crate::limits::{SIP_MAX_ROUTES, SIP_MAX_VIAS};

pub mod parse;

pub use parse::{parse, salvage, Message, ParseError, Request, Response};

/// A SIP request method.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// REFER
    Refer,
    /// NOTIFY
    Notify,
    /// INFO
    Info,
    /// UPDATE
    Update,
    /// PRACK
    Prack,
    /// SUBSCRIBE
    Subscribe,
    /// MESSAGE
    Message,
    /// PUBLISH
    Publish,
    /// Any other token (answered with 501).
    Other,
}

impl Method {
    /// Maps a method token (case-sensitive, as RFC 3261 requires) to a [`Method`].
    #[must_use]
    pub fn from_token(t: &[u8]) -> Method {
        match t {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"REFER" => Method::Refer,
            b"NOTIFY" => Method::Notify,
            b"INFO" => Method::Info,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => Method::Other,
        }
    }

    /// The method token, `None` for [`Method::Other`].
    #[must_use]
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other => return None,
        })
    }
}

/// A parsed request as the transaction/dialog layer needs it: borrowed from the datagram,
/// nothing copied. Built by the parser (`Request::to_incoming`); consumed by the dialog.
///
/// Header values are the raw values with surrounding whitespace trimmed and folding already
/// resolved by the parser's view (a value may still contain internal LWS).
#[derive(Clone, Debug)]
pub struct Incoming<'a> {
    /// The method.
    pub method: Method,
    /// The method token as sent (needed for 501 and for CSeq echo of unknown methods).
    pub method_token: &'a str,
    /// The Request-URI.
    pub request_uri: &'a str,
    /// Every Via header value in order, topmost first (each comma-separated value is its own
    /// entry). At most [`SIP_MAX_VIAS`]; more makes the parser reject the request.
    pub vias: Vec<&'a str, SIP_MAX_VIAS>,
    /// The `branch` parameter of the topmost Via.
    pub top_branch: Option<&'a str>,
    /// The whole From value (`"Alice" <sip:alice@example.com>;tag=1928301774`).
    pub from: &'a str,
    /// The URI inside From (without `<>` and parameters).
    pub from_uri: &'a str,
    /// From's `tag` parameter.
    pub from_tag: Option<&'a str>,
    /// The whole To value.
    pub to: &'a str,
    /// The URI inside To.
    pub to_uri: &'a str,
    /// To's `tag` parameter (present on in-dialog requests).
    pub to_tag: Option<&'a str>,
    /// Call-ID.
    pub call_id: &'a str,
    /// The CSeq number (≤ 2^31 per RFC 3261 for new requests; parsed up to 2^32-1).
    pub cseq: u32,
    /// The CSeq method.
    pub cseq_method: Method,
    /// The URI of the first Contact value, if any.
    pub contact_uri: Option<&'a str>,
    /// Every Record-Route value in order (each comma-separated value is its own entry), as
    /// written (`<sip:p1.example.com;lr>`). At most [`SIP_MAX_ROUTES`]; more makes the parser
    /// reject the request with 513.
    pub record_route: Vec<&'a str, SIP_MAX_ROUTES>,
    /// The transport address the request came from. The parser cannot know it: the shell (or
    /// [`crate::node::Node`]) sets it before handing the request on. Responses go where
    /// RFC 3261 §18.2.2 and RFC 3581 say, which needs it; `None` answers to the sent-by of the
    /// top Via as written.
    pub received_from: Option<SocketAddr>,
    /// The transport it came on (the shell sets it with [`Incoming::received_from`]; the
    /// parser assumes UDP).
    pub transport: route::Transport,
    /// Max-Forwards, if present.
    pub max_forwards: Option<u32>,
    /// Content-Type value, if present (e.g. `application/sdp`).
    pub content_type: Option<&'a str>,
    /// The body, framed by Content-Length.
    pub body: &'a [u8],
    /// `Require` option tags that are present (the UAS answers 420 for ones it does not know).
    pub require: Option<&'a str>,
    /// User-Agent, if present (used by scanner detection).
    pub user_agent: Option<&'a str>,
    /// What the request says about RFC 4028 session timers.
    pub session_timer: SessionTimer,
}

/// Who refreshes the session: the `refresher` parameter of `Session-Expires` (RFC 4028 §4).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refresher {
    /// `refresher=uac`: the side that sent the INVITE (the gateway).
    Uac,
    /// `refresher=uas`: the side that answered it (ccedge).
    Uas,
}

impl Refresher {
    /// The parameter value, `uac` or `uas`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        }
    }
}

/// The RFC 4028 session-timer fields of a request. Everything is absent or `false` when the
/// request does not use session timers.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SessionTimer {
    /// `Session-Expires` (`x`) delta-seconds; values beyond `u32::MAX` saturate.
    pub expires: Option<u32>,
    /// Its `refresher` parameter, when it names `uac` or `uas` (any case).
    pub refresher: Option<Refresher>,
    /// `Min-SE` delta-seconds; a malformed value is treated as absent.
    pub min_se: Option<u32>,
    /// Some `Supported` (`k`) header line lists `timer`.
    pub supported: bool,
    /// Some `Require` header line lists `timer`.
    pub required: bool,
}

/// The smallest session interval RFC 4028 allows (§4), seconds: no minimum is ever below it.
pub const SESSION_EXPIRES_FLOOR: u32 = 90;

impl SessionTimer {
    /// Whether the sender supports session timers (`timer` in Supported or Require).
    #[must_use]
    pub fn peer_supports(&self) -> bool {
        self.supported || self.required
    }

    /// Whether the request must be refused with 422 against our minimum `min_se_secs`
    /// (raised to [`SESSION_EXPIRES_FLOOR`]): its Session-Expires is below it and the sender
    /// supports timers, so it can retry with a larger interval (RFC 4028 §9). A sender without
    /// `timer` would not understand a 422 (a proxy put the header in): its interval is raised
    /// instead, see [`crate::sip::uas`].
    #[must_use]
    pub fn too_small(&self, min_se_secs: u32) -> bool {
        self.peer_supports()
            && self
                .expires
                .is_some_and(|e| e < min_se_secs.max(SESSION_EXPIRES_FLOOR))
    }
}

/// A parsed response, as the UAC side of the dialog (our BYE, REFER) needs it.
#[derive(Clone, Debug)]
pub struct IncomingResponse<'a> {
    /// Status code (100–699).
    pub status: u16,
    /// The `branch` parameter of the topmost Via.
    pub top_branch: Option<&'a str>,
    /// Call-ID.
    pub call_id: &'a str,
    /// From's `tag` parameter.
    pub from_tag: Option<&'a str>,
    /// To's `tag` parameter.
    pub to_tag: Option<&'a str>,
    /// The CSeq number.
    pub cseq: u32,
    /// The CSeq method.
    pub cseq_method: Method,
}
