//! The load generator's SIP text: requests a gateway sends (INVITE with a G.711 offer, ACK,
//! BYE, NOTIFY after a REFER), responses to the agent's requests, and a small reader for what
//! the agent sends back. Everything is written into a reused buffer: no per-call strings
//! beyond the agent's To tag.
//!
//! Call-IDs carry the call's index (`<run>-<index>@<host>`), so a datagram is matched to its
//! call by reading one header and parsing one number: no table lookup.

use core::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

/// The number every call dials.
pub(crate) const DIALLED: &str = "18005550100";

/// Everything the requests of one run share.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    /// The run's tag in Call-IDs, branches and tags (distinct per run).
    pub(crate) run: u32,
    /// Our SIP socket's address (Via, Contact).
    pub(crate) sip: SocketAddr,
    /// The agent's SIP address.
    pub(crate) target: SocketAddr,
}

/// The caller number of call `n` of run `run` (E.164 without `+`): 11 digits, distinct per
/// call of a run (and, most likely, from the calls of earlier runs), so every caller ID is
/// usable for a callback and no two calls book the same number.
pub(crate) fn caller_of(run: u32, n: u32) -> String {
    format!(
        "1215{:07}",
        (u64::from(n) + u64::from(run) * 7_919) % 10_000_000
    )
}

/// What a request of call `n` needs from its state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialog<'a> {
    /// The call's index.
    pub(crate) n: u32,
    /// The agent's To tag, once known.
    pub(crate) to_tag: Option<&'a str>,
}

/// Kinds of request the UAC sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// The initial INVITE with our offer on `rtp_port` (retransmissions are identical).
    Invite {
        /// Our RTP port in the offer.
        rtp_port: u16,
    },
    /// ACK for a 2xx (`true`, new branch) or for a failure (`false`, the INVITE's branch).
    Ack {
        /// Whether it acknowledges a 2xx.
        for_2xx: bool,
    },
    /// BYE (CSeq 2).
    Bye,
    /// NOTIFY reporting the REFER's outcome as `SIP/2.0 200 OK` (CSeq 3).
    NotifyReferOk,
}

impl Local {
    /// Writes `req` of dialog `d` into `out` (cleared first).
    pub(crate) fn write_request(&self, d: Dialog<'_>, req: Request, out: &mut String) {
        out.clear();
        let host = self.sip.ip();
        let n = d.n;
        let run = self.run;
        let (method, cseq, branch) = match req {
            Request::Invite { .. } => ("INVITE", 1, 'i'),
            Request::Ack { for_2xx: true } => ("ACK", 1, 'a'),
            Request::Ack { for_2xx: false } => ("ACK", 1, 'i'),
            Request::Bye => ("BYE", 2, 'b'),
            Request::NotifyReferOk => ("NOTIFY", 3, 'n'),
        };
        let _ = write!(
            out,
            "{method} sip:+{DIALLED}@{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {sip};branch=z9hG4bK{run:x}-{n}-{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:+{caller}@{host}>;tag=g{run:x}-{n}\r\n\
             To: <sip:+{DIALLED}@{target_ip}>",
            target = self.target,
            sip = self.sip,
            caller = caller_of(run, n),
            target_ip = self.target.ip(),
        );
        if let Some(tag) = d.to_tag {
            let _ = write!(out, ";tag={tag}");
        }
        let _ = write!(
            out,
            "\r\nCall-ID: {run:x}-{n}@{host}\r\nCSeq: {cseq} {method}\r\nContact: <sip:gw@{sip}>\r\nUser-Agent: firmware-sim calls\r\n",
            sip = self.sip
        );
        match req {
            Request::Invite { rtp_port } => {
                let sdp = offer(host, n, rtp_port);
                let _ = write!(
                    out,
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    sdp.len()
                );
            }
            Request::NotifyReferOk => {
                let body = "SIP/2.0 200 OK\r\n";
                let _ = write!(
                    out,
                    "Event: refer\r\nSubscription-State: terminated;reason=noresource\r\nContent-Type: message/sipfrag\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
            Request::Ack { .. } | Request::Bye => out.push_str("Content-Length: 0\r\n\r\n"),
        }
    }

    /// The call index of a Call-ID of this run (`None` for anything else).
    pub(crate) fn index_of(&self, call_id: &str) -> Option<u32> {
        let (tag, rest) = call_id.split_once('-')?;
        if u32::from_str_radix(tag, 16).ok()? != self.run {
            return None;
        }
        rest.split('@').next()?.parse().ok()
    }
}

/// The SDP offer: PCMU, PCMA and telephone-event/8000, ptime 20.
fn offer(host: IpAddr, n: u32, rtp_port: u16) -> String {
    let ip = if host.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=gw {n} 1 IN {ip} {host}\r\ns=-\r\nc=IN {ip} {host}\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )
}

/// A SIP datagram from the agent, read as text.
#[derive(Debug)]
pub(crate) struct Message<'a> {
    /// The status of a response; `None` for a request.
    pub(crate) status: Option<u16>,
    /// The method of a request (first word), or the CSeq method of a response.
    pub(crate) method: &'a str,
    /// The Call-ID.
    pub(crate) call_id: &'a str,
    /// The tag of the To header, if any.
    pub(crate) to_tag: Option<&'a str>,
    /// The seconds of a Retry-After header (RFC 3261 §20.33: `delta-seconds` then optional
    /// comment and parameters); `None` without one or when it does not start with a number.
    pub(crate) retry_after: Option<u32>,
    head: &'a str,
    /// The body.
    pub(crate) body: &'a str,
}

impl<'a> Message<'a> {
    /// Reads a datagram; `None` when it is not a SIP message with a Call-ID and CSeq.
    pub(crate) fn parse(data: &'a [u8]) -> Option<Message<'a>> {
        let text = core::str::from_utf8(data).ok()?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let first = head.split("\r\n").next()?;
        let mut call_id = None;
        let mut cseq_method = None;
        let mut to_tag = None;
        let mut retry_after = None;
        for (name, value) in headers(head) {
            if name.eq_ignore_ascii_case("Call-ID") || name == "i" {
                call_id = Some(value);
            } else if name.eq_ignore_ascii_case("CSeq") {
                cseq_method = value.split_whitespace().nth(1);
            } else if name.eq_ignore_ascii_case("To") || name == "t" {
                to_tag = value
                    .split(';')
                    .skip(1)
                    .find_map(|p| p.trim().strip_prefix("tag="));
            } else if name.eq_ignore_ascii_case("Retry-After") {
                let digits = value
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(value, |end| value.get(..end).unwrap_or(""));
                retry_after = digits.parse().ok();
            }
        }
        let (status, method) = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
            (Some(rest.get(..3)?.parse().ok()?), cseq_method?)
        } else {
            (None, first.split(' ').next()?)
        };
        Some(Message {
            status,
            method,
            call_id: call_id?,
            to_tag,
            retry_after,
            head,
            body,
        })
    }

    /// Writes a response with `status` to this request into `out`: Via, From, To, Call-ID and
    /// CSeq copied in order.
    pub(crate) fn write_response(&self, status: u16, reason: &str, out: &mut String) {
        out.clear();
        let _ = write!(out, "SIP/2.0 {status} {reason}\r\n");
        for (name, value) in headers(self.head) {
            let keep = ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq"];
            if keep.iter().any(|k| name.eq_ignore_ascii_case(k)) {
                let _ = write!(out, "{name}: {value}\r\n");
            }
        }
        out.push_str("Content-Length: 0\r\n\r\n");
    }
}

fn headers(head: &str) -> impl Iterator<Item = (&str, &str)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
}

/// What the agent's SDP answer says: where its RTP comes from and which payload types it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The agent's RTP address (`c=` and the audio `m=` port).
    pub(crate) rtp: SocketAddr,
    /// The audio payload type (0 or 8).
    pub(crate) audio_pt: u8,
    /// The telephone-event payload type, if negotiated.
    pub(crate) event_pt: Option<u8>,
}

/// Reads an SDP answer; `None` without a usable connection address and audio line.
pub(crate) fn parse_answer(body: &str) -> Option<Answer> {
    let mut ip: Option<IpAddr> = None;
    let mut media: Option<(u16, u8)> = None;
    let mut event_pt = None;
    for line in body.lines() {
        let line = line.trim_end();
        if let Some(c) = line.strip_prefix("c=IN ") {
            let addr = c.split_whitespace().nth(1)?;
            // A media-level c= overrides the session one; both come before rtpmap lines.
            ip = addr.parse().ok().or(ip);
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            let mut it = m.split_whitespace();
            let port = it.next()?.parse().ok()?;
            let pt = it.nth(1)?.parse().ok()?;
            media = Some((port, pt));
        } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let (pt, name) = map.split_once(' ')?;
            if name
                .to_ascii_lowercase()
                .starts_with("telephone-event/8000")
            {
                event_pt = pt.parse().ok();
            }
        }
    }
    let (port, audio_pt) = media?;
    Some(Answer {
        rtp: SocketAddr::new(ip?, port),
        audio_pt,
        event_pt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local {
            run: 0xabc,
            sip: "127.0.0.1:5080".parse().unwrap(),
            target: "127.0.0.1:5060".parse().unwrap(),
        }
    }

    #[test]
    fn invite_carries_the_offer_and_its_call_id_maps_back_to_the_index() {
        let l = local();
        let mut out = String::new();
        l.write_request(
            Dialog {
                n: 42,
                to_tag: None,
            },
            Request::Invite { rtp_port: 40000 },
            &mut out,
        );
        assert!(out.starts_with("INVITE sip:+18005550100@127.0.0.1:5060 SIP/2.0\r\n"));
        assert!(out.contains("Call-ID: abc-42@127.0.0.1\r\n"));
        assert!(out.contains("From: <sip:+12151761454@127.0.0.1>;tag=gabc-42\r\n"));
        assert_ne!(caller_of(0xabc, 43), caller_of(0xabc, 42));
        assert_ne!(caller_of(0xabd, 42), caller_of(0xabc, 42));
        assert!(out.contains("m=audio 40000 RTP/AVP 0 8 101\r\n"));
        assert!(out.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let msg = Message::parse(out.as_bytes()).unwrap();
        assert_eq!(l.index_of(msg.call_id), Some(42));
        assert_eq!(msg.method, "INVITE");
        assert_eq!(l.index_of("abd-42@127.0.0.1"), None, "another run");
        assert_eq!(l.index_of("garbage"), None);
    }

    #[test]
    fn a_200_is_read_with_its_tag_and_answer() {
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKabc-1-i\r\nTo: <sip:+18005550100@127.0.0.1>;tag=ag7\r\nCall-ID: abc-1@127.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 31000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        let m = Message::parse(ok.as_bytes()).unwrap();
        assert_eq!(m.status, Some(200));
        assert_eq!(m.method, "INVITE");
        assert_eq!(m.to_tag, Some("ag7"));
        let a = parse_answer(m.body).unwrap();
        assert_eq!(a.rtp, "127.0.0.1:31000".parse().unwrap());
        assert_eq!(a.audio_pt, 8);
        assert_eq!(a.event_pt, Some(101));
        assert_eq!(
            parse_answer("v=0\r\nm=audio 1 RTP/AVP 0\r\n"),
            None,
            "no c="
        );
    }

    #[test]
    fn requests_from_the_agent_get_responses_copying_the_dialog_headers() {
        let bye = "BYE sip:gw@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:+18005550100@127.0.0.1>;tag=ag7\r\nTo: <sip:+12151761413@127.0.0.1>;tag=gabc-1\r\nCall-ID: abc-1@127.0.0.1\r\nCSeq: 7 BYE\r\nMax-Forwards: 70\r\n\r\n";
        let m = Message::parse(bye.as_bytes()).unwrap();
        assert_eq!((m.status, m.method), (None, "BYE"));
        let mut out = String::new();
        m.write_response(200, "OK", &mut out);
        assert_eq!(
            out,
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:+18005550100@127.0.0.1>;tag=ag7\r\nTo: <sip:+12151761413@127.0.0.1>;tag=gabc-1\r\nCall-ID: abc-1@127.0.0.1\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn in_dialog_requests_carry_the_agents_tag_and_their_own_cseq() {
        let l = local();
        let mut out = String::new();
        let d = Dialog {
            n: 3,
            to_tag: Some("ag9"),
        };
        l.write_request(d, Request::Bye, &mut out);
        assert!(out.contains("To: <sip:+18005550100@127.0.0.1>;tag=ag9\r\n"));
        assert!(out.contains("CSeq: 2 BYE\r\n"));
        l.write_request(d, Request::NotifyReferOk, &mut out);
        assert!(out.contains("CSeq: 3 NOTIFY\r\n"));
        assert!(out.ends_with("\r\n\r\nSIP/2.0 200 OK\r\n"));
    }

    #[test]
    fn retry_after_is_read_with_or_without_comment_and_parameters() {
        let resp = |extra: &str| {
            format!("SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/UDP x\r\nTo: <sip:a@b>;tag=s1\r\nCall-ID: abc-5@127.0.0.1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n")
        };
        let ra = |extra: &str| {
            let r = resp(extra);
            let m = Message::parse(r.as_bytes()).unwrap();
            assert_eq!((m.status, m.method), (Some(503), "INVITE"));
            m.retry_after
        };
        assert_eq!(ra(""), None);
        assert_eq!(ra("Retry-After: 30\r\n"), Some(30));
        assert_eq!(ra("retry-after: 5 (overloaded);duration=60\r\n"), Some(5));
        assert_eq!(ra("Retry-After: 18000;duration=3600\r\n"), Some(18_000));
        assert_eq!(ra("Retry-After: soon\r\n"), None);
        assert_eq!(ra("X-Retry-After: 9\r\n"), None);
    }

    #[test]
    fn junk_is_not_a_message() {
        assert!(Message::parse(b"").is_none());
        assert!(Message::parse(b"\xff\xfe").is_none());
        assert!(Message::parse(b"SIP/2.0 2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n").is_none());
        assert!(Message::parse(b"BYE x SIP/2.0\r\nCSeq: 1 BYE\r\n\r\n").is_none());
    }
}
