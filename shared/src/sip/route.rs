//! Where SIP messages go: responses by the Via (RFC 3261 §18.2.2 with RFC 3581 `rport`), and
//! requests inside a dialog to the next hop of the route set or the remote target
//! (RFC 3261 §12.2.1.1, loose routing).
//!
//! The node only ever sends to IP addresses it can read from the message: a Via's source
//! address, or a URI whose host is an IP literal. A next hop named by a host name is not
//! resolved (no DNS in the core, RFC 3263 is left to a later version); the dialog then falls
//! back to the address the INVITE came from, which is the proxy or gateway that sent it.

use core::fmt::Write as _;
use core::net::{IpAddr, SocketAddr};

use crate::sip::emit::Writer;
use crate::sip::parse::{NameAddr, Params, Via};

/// The transport a SIP message travels on.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Transport {
    /// UDP datagrams.
    #[default]
    Udp,
    /// A TCP connection (RFC 3261 §18: messages framed by Content-Length).
    Tcp,
    /// A TLS connection over TCP (`sips:`).
    Tls,
}

impl Transport {
    /// The token in a Via (`SIP/2.0/TCP`).
    #[must_use]
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// A stream transport: responses go back on the connection the request came on.
    #[must_use]
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// The default SIP port (RFC 3261 §19.1.1).
pub const SIP_PORT: u16 = 5060;
/// The default port of `sips:` and TLS (RFC 3261 §19.1.1).
pub const SIPS_PORT: u16 = 5061;

/// `host[:port]` split; the host keeps no brackets. `None` when the port is not a number.
fn host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.trim().parse().ok()?),
            None if after.trim().is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    match s.split_once(':') {
        Some((h, p)) => Some((h.trim(), Some(p.trim().parse().ok()?))),
        None => Some((s.trim(), None)),
    }
}

/// Where the response to a request goes. Over TCP or TLS: back to the connection's peer
/// (RFC 3261 §18.2.2). Over UDP: the source IP address always (it is the `received` address
/// whenever the sent-by differs, and the same address otherwise), and the source port when the
/// top Via asks for `rport` (RFC 3581), else the sent-by port (5060 when absent). A Via that
/// cannot be read answers the source address.
#[must_use]
pub fn reply_address(top_via: &str, source: SocketAddr, transport: Transport) -> SocketAddr {
    if transport.is_reliable() {
        return source;
    }
    let Some(via) = Via::parse(top_via) else {
        return source;
    };
    if via.params.get("rport").is_some() {
        return source;
    }
    let tls = via.transport.eq_ignore_ascii_case("TLS");
    let port = host_port(via.sent_by)
        .and_then(|(_, p)| p)
        .unwrap_or(if tls { SIPS_PORT } else { SIP_PORT });
    SocketAddr::new(source.ip(), port)
}

/// Writes the top Via of a response to a request that came from `source`: `received=` is
/// added when the sent-by host is not that IP address (RFC 3261 §18.2.1) or the Via has
/// `rport`, and an empty `rport` is filled in with the source port (RFC 3581 §4). A Via the
/// parser cannot read is written as it came.
pub(crate) fn write_stamped_via(w: &mut Writer<'_>, value: &[u8], source: SocketAddr) {
    let Some(via) = core::str::from_utf8(value).ok().and_then(Via::parse) else {
        w.value(value);
        return;
    };
    let text = core::str::from_utf8(value).unwrap_or("");
    // The protocol and sent-by as written: everything before the parameters (a subslice of
    // `text`, so its offset is a difference of addresses).
    let params_at = (via.params.as_str().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    w.value(text.get(..params_at).unwrap_or(text).trim().as_bytes());
    let mut rport = false;
    for p in via.params.iter() {
        let Ok((name, v)) = p else { break };
        if name.eq_ignore_ascii_case("received") {
            continue;
        }
        if name.eq_ignore_ascii_case("rport") {
            rport = true;
            let _ = write!(w, ";rport={}", source.port());
            continue;
        }
        w.bytes(b";");
        w.value(name.as_bytes());
        if let Some(v) = v {
            w.bytes(b"=");
            w.value(v.as_bytes());
        }
    }
    let same_host = host_port(via.sent_by)
        .and_then(|(h, _)| h.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip == source.ip());
    if rport || !same_host {
        let _ = write!(w, ";received={}", source.ip());
    }
}

/// A SIP or SIPS URI's transport address, when its host is an IP literal: the `maddr`
/// parameter if present, else the host, with the port or the scheme's default. `None` for a
/// host name, another scheme, or a malformed URI.
#[must_use]
pub fn uri_address(uri: &str) -> Option<SocketAddr> {
    let uri = uri.trim();
    let (scheme, rest) = uri.split_once(':')?;
    let default = if scheme.eq_ignore_ascii_case("sips") {
        SIPS_PORT
    } else if scheme.eq_ignore_ascii_case("sip") {
        SIP_PORT
    } else {
        return None;
    };
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let hostport_params = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let (hostport, params) = match hostport_params.find(';') {
        Some(i) => hostport_params.split_at(i),
        None => (hostport_params, ""),
    };
    let (host, port) = host_port(hostport)?;
    let host = match Params::new(params).get("maddr") {
        Some(m) if !m.is_empty() => m.trim_start_matches('[').trim_end_matches(']'),
        _ => host,
    };
    let ip: IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, port.unwrap_or(default)))
}

/// The URI of a Route or Record-Route value (`<sip:p1.example.com;lr>` → `sip:p1.example.com;lr`).
#[must_use]
pub fn route_uri(value: &str) -> &str {
    NameAddr::parse(value).map_or(value.trim(), |na| na.uri)
}

/// `true` when the route URI has the `lr` parameter (a loose router, RFC 3261 §19.1.1).
#[must_use]
pub fn is_loose(uri: &str) -> bool {
    let rest = uri.split_once('?').map_or(uri, |(r, _)| r);
    rest.find(';')
        .and_then(|i| rest.get(i..))
        .is_some_and(|p| Params::new(p).get("lr").is_some())
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use super::*;
    use alloc::string::String;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn stamped(via: &str, src: &str) -> String {
        let mut buf = [0u8; 512];
        let mut w = Writer::new(&mut buf);
        write_stamped_via(&mut w, via.as_bytes(), addr(src));
        let n = w.finish().unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn replies_follow_rport_or_the_sent_by_port() {
        let src = addr("192.0.2.7:40123");
        assert_eq!(
            reply_address(
                "SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bK1;rport",
                src,
                Transport::Udp
            ),
            src
        );
        assert_eq!(
            reply_address(
                "SIP/2.0/UDP 10.1.1.1:5070;branch=z9hG4bK1",
                src,
                Transport::Udp
            ),
            addr("192.0.2.7:5070")
        );
        assert_eq!(
            reply_address(
                "SIP/2.0/UDP gw.example.net;branch=z9hG4bK1",
                src,
                Transport::Udp
            ),
            addr("192.0.2.7:5060")
        );
        assert_eq!(
            reply_address(
                "SIP/2.0/TLS gw.example.net;branch=z9hG4bK1",
                src,
                Transport::Udp
            ),
            addr("192.0.2.7:5061")
        );
        assert_eq!(reply_address("garbage", src, Transport::Udp), src);
        // A stream: back on the connection, whatever the Via says.
        assert_eq!(
            reply_address(
                "SIP/2.0/TCP 10.1.1.1:5060;branch=z9hG4bK1",
                src,
                Transport::Tcp
            ),
            src
        );
    }

    #[test]
    fn the_top_via_gets_received_and_rport() {
        assert_eq!(
            stamped(
                "SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK1;rport",
                "192.0.2.7:40123"
            ),
            "SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK1;rport=40123;received=192.0.2.7"
        );
        // Same host, no rport: nothing to add.
        assert_eq!(
            stamped(
                "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1",
                "192.0.2.7:5060"
            ),
            "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1"
        );
        // A host name always gets received=.
        assert_eq!(
            stamped(
                "SIP/2.0/UDP gw.example.net;branch=z9hG4bK1",
                "192.0.2.7:5060"
            ),
            "SIP/2.0/UDP gw.example.net;branch=z9hG4bK1;received=192.0.2.7"
        );
        // IPv6, a stale received replaced, LWS in the protocol kept.
        assert_eq!(
            stamped(
                "SIP / 2.0 / UDP [2001:db8::1]:5062;received=1.1.1.1;rport;branch=z9hG4bKx",
                "[2001:db8::9]:5062"
            ),
            "SIP / 2.0 / UDP [2001:db8::1]:5062;rport=5062;branch=z9hG4bKx;received=2001:db8::9"
        );
        // Unreadable: as it came.
        assert_eq!(stamped("SIP/7.0/UDP x", "192.0.2.7:5060"), "SIP/7.0/UDP x");
    }

    #[test]
    fn uri_addresses() {
        assert_eq!(uri_address("sip:10.0.0.1"), Some(addr("10.0.0.1:5060")));
        assert_eq!(uri_address("sips:10.0.0.1"), Some(addr("10.0.0.1:5061")));
        assert_eq!(
            uri_address("sip:+12155550123@10.0.0.1:5080;transport=udp"),
            Some(addr("10.0.0.1:5080"))
        );
        assert_eq!(
            uri_address("sip:user:pw@[2001:db8::1]:5070;lr"),
            Some(addr("[2001:db8::1]:5070"))
        );
        assert_eq!(
            uri_address("sip:gw.example.net;maddr=10.9.9.9"),
            Some(addr("10.9.9.9:5060"))
        );
        assert_eq!(uri_address("sip:gw.example.net:5060"), None);
        assert_eq!(uri_address("tel:+12155550123"), None);
        assert_eq!(uri_address("sip:10.0.0.1:port"), None);
        assert_eq!(
            uri_address("sip:10.0.0.1?Subject=x"),
            Some(addr("10.0.0.1:5060"))
        );
    }

    #[test]
    fn loose_routes() {
        assert!(is_loose(route_uri("<sip:127.0.0.1:5070;lr>")));
        assert!(is_loose(route_uri(
            "<sip:p1.example.com;transport=udp;lr=on>"
        )));
        assert!(!is_loose(route_uri("<sip:p1.example.com>")));
        assert!(!is_loose(route_uri("<sip:p1.example.com;ftag=1>")));
        assert_eq!(route_uri(" <sip:10.0.0.1;lr>"), "sip:10.0.0.1;lr");
    }
}
