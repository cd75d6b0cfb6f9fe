//! The SDP reader: borrowed views, nothing copied.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use heapless::Vec;

use super::{Direction, Error, MediaKind, Proto, SDP_MAX_FORMATS, SDP_MAX_MEDIA};
use crate::rtp::PayloadType;

/// The `o=` line.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The user name (`-` when none).
    pub username: &'a str,
    /// The session id, as written (digits, possibly longer than 64 bits).
    pub session_id: &'a str,
    /// The session version, as written.
    pub session_version: &'a str,
    /// The unicast address, when it is an IP address (not a host name).
    pub address: Option<IpAddr>,
}

/// One `a=` line of a media section, split at the first `:`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The attribute name.
    pub name: &'a str,
    /// The value after `:`, `None` for a flag attribute.
    pub value: Option<&'a str>,
}

/// An `a=rtpmap` value.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RtpMap<'a> {
    /// The payload type it binds.
    pub payload_type: PayloadType,
    /// The encoding name as written (compare case-insensitively).
    pub encoding: &'a str,
    /// The clock rate in Hz.
    pub clock_rate: u32,
    /// The encoding parameters (channel count for audio), if given.
    pub params: Option<&'a str>,
}

/// One `m=` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media<'a> {
    /// The media type.
    pub kind: MediaKind,
    /// The port (0 = the stream is rejected or disabled).
    pub port: u16,
    /// The transport protocol.
    pub proto: Proto,
    /// For RTP profiles: the payload types in offer order (the first [`SDP_MAX_FORMATS`]).
    pub formats: Vec<PayloadType, SDP_MAX_FORMATS>,
    /// The first format token as written (for any protocol).
    pub first_format: &'a str,
    /// The media-level connection address.
    pub connection: Option<IpAddr>,
    /// The media-level direction attribute.
    pub direction: Option<Direction>,
    /// `a=ptime` in milliseconds.
    pub ptime: Option<u16>,
    /// `a=maxptime` in milliseconds.
    pub maxptime: Option<u16>,
    /// `a=rtcp-mux` (RFC 5761): RTCP on the RTP port.
    pub rtcp_mux: bool,
    /// `a=rtcp` (RFC 3605): the port the peer takes RTCP on, when not the one above RTP (an
    /// address after the port is not read: RTCP goes to the media address).
    pub rtcp_port: Option<u16>,
    section: &'a str,
}

/// A parsed SDP body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription<'a> {
    /// The `o=` line, if present.
    pub origin: Option<Origin<'a>>,
    /// The session-level connection address.
    pub connection: Option<IpAddr>,
    /// The session-level direction attribute.
    pub direction: Option<Direction>,
    /// The `m=` sections in order.
    pub media: Vec<Media<'a>, SDP_MAX_MEDIA>,
}

/// Lines of `text`, CR stripped, empty lines skipped.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
}

/// `(type, value)` of a `x=value` line.
fn split_line(line: &str) -> Result<(u8, &str), Error> {
    let b = line.as_bytes();
    match (b.first(), b.get(1)) {
        (Some(&t), Some(b'=')) if t.is_ascii_alphabetic() => {
            Ok((t, line.get(2..).ok_or(Error::Malformed)?))
        }
        _ => Err(Error::Malformed),
    }
}

fn attribute(value: &str) -> Attribute<'_> {
    match value.split_once(':') {
        Some((name, v)) => Attribute {
            name,
            value: Some(v),
        },
        None => Attribute {
            name: value,
            value: None,
        },
    }
}

/// Leading decimal digits of `s` as a number (`"20.0"` → 20).
fn leading_u16(s: &str) -> Option<u16> {
    let s = s.trim();
    let end = s
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    s.get(..end)?.parse().ok()
}

fn parse_address(addrtype: &str, addr: &str) -> Option<IpAddr> {
    // A multicast address may carry `/ttl[/count]` (IPv4) or `/count` (IPv6).
    let addr = addr.split('/').next()?;
    if addrtype.eq_ignore_ascii_case("IP4") {
        addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else if addrtype.eq_ignore_ascii_case("IP6") {
        addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        None
    }
}

fn parse_connection(value: &str) -> Result<IpAddr, Error> {
    let mut it = value.split_ascii_whitespace();
    let (Some(net), Some(addrtype), Some(addr), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(Error::BadConnection);
    };
    if !net.eq_ignore_ascii_case("IN") {
        return Err(Error::BadConnection);
    }
    parse_address(addrtype, addr).ok_or(Error::BadConnection)
}

fn parse_origin(value: &str) -> Result<Origin<'_>, Error> {
    let mut it = value.split_ascii_whitespace();
    let mut next = || it.next().ok_or(Error::BadOrigin);
    let username = next()?;
    let session_id = next()?;
    let session_version = next()?;
    let _net = next()?;
    let addrtype = next()?;
    let addr = next()?;
    Ok(Origin {
        username,
        session_id,
        session_version,
        address: parse_address(addrtype, addr),
    })
}

fn parse_media_line(value: &str) -> Result<Media<'_>, Error> {
    let mut it = value.split_ascii_whitespace();
    let kind = MediaKind::from_token(it.next().ok_or(Error::BadMedia)?);
    let port_token = it.next().ok_or(Error::BadMedia)?;
    let port_str = port_token.split('/').next().ok_or(Error::BadMedia)?;
    let port: u16 = port_str.parse().map_err(|_| Error::BadMedia)?;
    let proto = Proto::from_token(it.next().ok_or(Error::BadMedia)?);
    let mut formats = Vec::new();
    let mut first_format = None;
    for token in it {
        first_format.get_or_insert(token);
        if proto.is_rtp() {
            let pt = token
                .parse::<u8>()
                .ok()
                .and_then(PayloadType::new)
                .ok_or(Error::BadMedia)?;
            // Formats past the capacity are treated as not offered.
            let _ = formats.push(pt);
        }
    }
    Ok(Media {
        kind,
        port,
        proto,
        formats,
        first_format: first_format.ok_or(Error::BadMedia)?,
        connection: None,
        direction: None,
        ptime: None,
        maxptime: None,
        rtcp_mux: false,
        rtcp_port: None,
        section: "",
    })
}

/// Parses an SDP body. Never panics; borrows from `body`.
///
/// # Errors
/// See [`Error`]: not UTF-8, no leading `v=0`, a malformed line, a bad `o=`/`c=`/`m=`, or more
/// than [`SDP_MAX_MEDIA`] media sections.
pub fn parse(body: &[u8]) -> Result<SessionDescription<'_>, Error> {
    let text = core::str::from_utf8(body).map_err(|_| Error::NotUtf8)?;
    let mut all = lines(text);
    if all.next().map(str::trim_end) != Some("v=0") {
        return Err(Error::NotSdp);
    }
    let mut sd = SessionDescription {
        origin: None,
        connection: None,
        direction: None,
        media: Vec::new(),
    };
    for line in all {
        let (kind, value) = split_line(line)?;
        let current = sd.media.last_mut();
        match (kind, current) {
            (b'm', _) => {
                let mut m = parse_media_line(value)?;
                m.section = section_after(text, line);
                sd.media.push(m).map_err(|_| Error::TooManyMedia)?;
            }
            (b'o', None) => sd.origin = Some(parse_origin(value)?),
            (b'c', None) => sd.connection = Some(parse_connection(value)?),
            (b'c', Some(m)) => m.connection = Some(parse_connection(value)?),
            (b'a', None) => {
                if let Some(d) = Direction::from_attribute(attribute(value).name) {
                    sd.direction = Some(d);
                }
            }
            (b'a', Some(m)) => {
                let a = attribute(value);
                if let Some(d) = Direction::from_attribute(a.name) {
                    m.direction = Some(d);
                }
                match (a.name, a.value) {
                    ("ptime", Some(v)) => m.ptime = leading_u16(v).or(m.ptime),
                    ("maxptime", Some(v)) => m.maxptime = leading_u16(v).or(m.maxptime),
                    ("rtcp-mux", _) => m.rtcp_mux = true,
                    ("rtcp", Some(v)) => m.rtcp_port = leading_u16(v).filter(|p| *p != 0),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(sd)
}

/// The text of the media section that starts after `m_line` (a slice of `text`), up to the
/// next `m=` line.
fn section_after<'a>(text: &'a str, m_line: &str) -> &'a str {
    let start = (m_line.as_ptr() as usize)
        .saturating_sub(text.as_ptr() as usize)
        .saturating_add(m_line.len());
    let rest = text.get(start..).unwrap_or("");
    let end = rest
        .match_indices("\nm=")
        .next()
        .map_or(rest.len(), |(i, _)| i);
    rest.get(..end).unwrap_or("")
}

impl<'a> Media<'a> {
    /// The `a=` lines of this section, in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'a>> + 'a {
        lines(self.section)
            .filter_map(|l| l.strip_prefix("a="))
            .map(attribute)
    }

    /// The `a=rtpmap` for `pt`, if present and well formed.
    #[must_use]
    pub fn rtpmap(&self, pt: PayloadType) -> Option<RtpMap<'a>> {
        self.attributes()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| parse_rtpmap(a.value?))
            .find(|r| r.payload_type == pt)
    }

    /// The `a=fmtp` parameters for `pt`, if present.
    #[must_use]
    pub fn fmtp(&self, pt: PayloadType) -> Option<&'a str> {
        self.attributes()
            .filter(|a| a.name == "fmtp")
            .filter_map(|a| {
                let (p, params) = a.value?.trim_start().split_once(' ')?;
                (p.parse::<u8>().ok()? == pt.get()).then_some(params.trim())
            })
            .next()
    }
}

fn parse_rtpmap(value: &str) -> Option<RtpMap<'_>> {
    let (pt, rest) = value.trim_start().split_once(' ')?;
    let payload_type = PayloadType::new(pt.parse().ok()?)?;
    let mut parts = rest.trim().splitn(3, '/');
    let encoding = parts.next()?;
    let clock_rate = parts.next()?.trim().parse().ok()?;
    Some(RtpMap {
        payload_type,
        encoding,
        clock_rate,
        params: parts.next(),
    })
}
