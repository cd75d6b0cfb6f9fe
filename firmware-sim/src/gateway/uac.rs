//! A gateway-side SIP user agent client for one call, as plain text.
//!
//! It builds the requests a telephony gateway sends (INVITE with a G.711 offer, ACK, BYE,
//! CANCEL, 200 to the agent's BYE) and reads the agent's responses with simple text handling
//! of its own, so the simulated gateway is an independent check on ccedge's SIP parser and
//! serializer rather than a mirror of them.

use core::fmt::Write as _;

/// What the simulated caller offers in SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// PCMU, PCMA and telephone-event.
    Standard,
    /// PCMA and telephone-event only.
    PcmaOnly,
    /// G.729 only (the agent must answer 488).
    G729Only,
}

/// Where the UAC is in its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UacState {
    /// INVITE sent, no final response yet.
    Calling,
    /// 200 OK received and ACKed.
    Confirmed,
    /// A final non-2xx response was received (its status).
    Rejected(u16),
    /// BYE sent or received and answered.
    Terminated,
}

/// One call from the gateway's side.
#[derive(Debug, Clone)]
pub struct UacCall {
    /// The Call-ID.
    pub call_id: String,
    from_tag: String,
    /// The agent's To tag, once known.
    pub to_tag: Option<String>,
    invite_branch: String,
    branch_seq: u32,
    cseq: u32,
    /// Where the UAC says it is (`host:port` of its SIP side).
    pub local_sip: String,
    /// The agent's SIP address (`host:port`).
    pub remote_sip: String,
    /// The UAC's RTP port, put into the offer.
    pub rtp_port: u16,
    /// Caller number (E.164 without `+`), or `None` for an anonymous caller.
    pub caller: Option<String>,
    /// Dialled number (E.164 without `+`).
    pub dialled: String,
    offer: Offer,
    /// State of the call.
    pub state: UacState,
    /// Every status code received, in order (for transcripts and checks).
    pub statuses: Vec<u16>,
    /// The agent's SDP answer: (payload type chosen, the agent's RTP port).
    pub answer: Option<(u8, u16)>,
    /// The last response received: status, CSeq number and CSeq method.
    pub last_response: Option<(u16, u32, String)>,
    /// Branch and CSeq of the latest re-INVITE.
    reinvite: Option<(String, u32)>,
    reinvite_hold: bool,
    /// Version of our SDP `o=` line (bumped by every re-INVITE).
    sdp_version: u32,
}

impl UacCall {
    /// A new call; `n` makes Call-ID, tag and branch unique.
    #[must_use]
    pub fn new(
        n: u64,
        local_sip: &str,
        remote_sip: &str,
        rtp_port: u16,
        caller: Option<&str>,
        dialled: &str,
        offer: Offer,
    ) -> UacCall {
        UacCall {
            call_id: format!("sim-{n:08x}@{}", host_of(local_sip)),
            from_tag: format!("gw{n:x}"),
            to_tag: None,
            invite_branch: format!("z9hG4bKsim{n:x}i"),
            branch_seq: 0,
            cseq: 1,
            local_sip: local_sip.to_string(),
            remote_sip: remote_sip.to_string(),
            rtp_port,
            caller: caller.map(str::to_string),
            dialled: dialled.to_string(),
            offer,
            state: UacState::Calling,
            statuses: Vec::new(),
            answer: None,
            last_response: None,
            reinvite: None,
            reinvite_hold: false,
            sdp_version: 1,
        }
    }

    fn header_from(&self) -> String {
        match &self.caller {
            Some(c) => format!(
                "<sip:+{c}@{}>;tag={}",
                host_of(&self.local_sip),
                self.from_tag
            ),
            None => format!(
                "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={}",
                self.from_tag
            ),
        }
    }

    fn to_value(&self) -> String {
        let mut v = format!("<sip:+{}@{}>", self.dialled, host_of(&self.remote_sip));
        if let Some(t) = &self.to_tag {
            let _ = write!(v, ";tag={t}");
        }
        v
    }

    fn sdp(&self) -> String {
        self.sdp_with(false)
    }

    fn sdp_with(&self, sendonly: bool) -> String {
        let host = host_of(&self.local_sip);
        let (fmts, maps) = match self.offer {
            Offer::Standard => (
                "0 8 101",
                "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
            ),
            Offer::PcmaOnly => (
                "8 101",
                "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
            ),
            Offer::G729Only => ("18", "a=rtpmap:18 G729/8000\r\n"),
        };
        format!(
            "v=0\r\no=gw 1 {} IN IP4 {host}\r\ns=call\r\nc=IN IP4 {host}\r\nt=0 0\r\nm=audio {} RTP/AVP {fmts}\r\n{maps}a=ptime:20\r\na={}\r\n",
            self.sdp_version,
            self.rtp_port,
            if sendonly { "sendonly" } else { "sendrecv" }
        )
    }

    fn request(&mut self, method: &str, cseq: u32, branch: &str, body: Option<&str>) -> Vec<u8> {
        let mut m = String::with_capacity(700);
        let _ = write!(
            m,
            "{method} sip:+{}@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: <sip:gw@{}>\r\nUser-Agent: firmware-sim\r\n",
            self.dialled,
            host_of(&self.remote_sip),
            self.local_sip,
            self.header_from(),
            self.to_value(),
            self.call_id,
            self.local_sip
        );
        match body {
            Some(b) => {
                let _ = write!(
                    m,
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                );
            }
            None => m.push_str("Content-Length: 0\r\n\r\n"),
        }
        m.into_bytes()
    }

    /// The initial INVITE (call again to retransmit: same branch and CSeq).
    pub fn invite(&mut self) -> Vec<u8> {
        let sdp = self.sdp();
        let branch = self.invite_branch.clone();
        self.request("INVITE", 1, &branch, Some(&sdp))
    }

    /// CANCEL for the pending INVITE.
    pub fn cancel(&mut self) -> Vec<u8> {
        let branch = self.invite_branch.clone();
        let saved = self.to_tag.take();
        let out = self.request("CANCEL", 1, &branch, None);
        self.to_tag = saved;
        out
    }

    /// BYE from the caller's side.
    pub fn bye(&mut self) -> Vec<u8> {
        self.cseq += 1;
        self.branch_seq += 1;
        let branch = format!("{}b{}", self.invite_branch, self.branch_seq);
        self.state = UacState::Terminated;
        self.request("BYE", self.cseq, &branch, None)
    }

    /// A re-INVITE putting the call on hold (`hold`: `a=sendonly`) or taking it off hold
    /// (`a=sendrecv`). Call [`UacCall::reinvite_again`] to retransmit it.
    pub fn reinvite(&mut self, hold: bool) -> Vec<u8> {
        self.cseq += 1;
        self.branch_seq += 1;
        self.sdp_version += 1;
        let branch = format!("{}r{}", self.invite_branch, self.branch_seq);
        self.reinvite = Some((branch, self.cseq));
        self.reinvite_hold = hold;
        self.reinvite_again()
    }

    /// The latest re-INVITE again (same branch and CSeq), for retransmission.
    pub fn reinvite_again(&mut self) -> Vec<u8> {
        let Some((branch, cseq)) = self.reinvite.clone() else {
            return Vec::new();
        };
        let sdp = self.sdp_with(self.reinvite_hold);
        self.request("INVITE", cseq, &branch, Some(&sdp))
    }

    fn ack(&mut self, for_2xx: bool, cseq: u32) -> Vec<u8> {
        let branch = if for_2xx {
            self.branch_seq += 1;
            format!("{}a{}", self.invite_branch, self.branch_seq)
        } else if cseq == 1 {
            self.invite_branch.clone()
        } else {
            self.reinvite
                .as_ref()
                .map_or_else(|| self.invite_branch.clone(), |(b, _)| b.clone())
        };
        self.request("ACK", cseq, &branch, None)
    }

    /// Handles one datagram from the agent; returns the datagrams to send back.
    pub fn on_datagram(&mut self, data: &[u8]) -> Vec<Vec<u8>> {
        let Ok(text) = core::str::from_utf8(data) else {
            return Vec::new();
        };
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let mut lines = head.split("\r\n");
        let first = lines.next().unwrap_or("");
        let headers: Vec<(&str, &str)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim(), v.trim()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        };
        if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
            let status: u16 = rest.get(..3).and_then(|s| s.parse().ok()).unwrap_or(0);
            let cseq = get("CSeq").unwrap_or("");
            let mut cseq_parts = cseq.split_whitespace();
            let cseq_num: u32 = cseq_parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let cseq_method = cseq_parts.next().unwrap_or("").to_string();
            self.statuses.push(status);
            let is_invite = cseq_method == "INVITE";
            self.last_response = Some((status, cseq_num, cseq_method));
            if !is_invite {
                return Vec::new();
            }
            if cseq_num != 1 {
                // A response to our re-INVITE: acknowledge final responses.
                return match status {
                    200..=299 => vec![self.ack(true, cseq_num)],
                    300..=699 => vec![self.ack(false, cseq_num)],
                    _ => Vec::new(),
                };
            }
            if let Some(tag) = get("To").and_then(|t| t.split(";tag=").nth(1)) {
                let tag = tag.split(';').next().unwrap_or(tag);
                if status > 100 {
                    self.to_tag = Some(tag.to_string());
                }
            }
            match status {
                200..=299 => {
                    self.answer = parse_answer(body);
                    if self.state == UacState::Calling {
                        self.state = UacState::Confirmed;
                    }
                    vec![self.ack(true, 1)]
                }
                300..=699 => {
                    if self.state == UacState::Calling {
                        self.state = UacState::Rejected(status);
                    }
                    vec![self.ack(false, 1)]
                }
                _ => Vec::new(),
            }
        } else if first.starts_with("BYE ") {
            self.state = UacState::Terminated;
            vec![response_to(&headers, 200, "OK")]
        } else if first.starts_with("OPTIONS ") || first.starts_with("REFER ") {
            vec![response_to(
                &headers,
                if first.starts_with("REFER") { 202 } else { 200 },
                "OK",
            )]
        } else {
            Vec::new()
        }
    }
}

/// The Call-ID of a SIP message, read as plain text (`None` when there is none).
#[must_use]
pub fn call_id_of(data: &[u8]) -> Option<&str> {
    let text = core::str::from_utf8(data).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case("Call-ID") || n == "i").then(|| v.trim())
    })
}

/// The `(payload type, port)` of the first audio line of an SDP answer.
fn parse_answer(body: &str) -> Option<(u8, u16)> {
    let m = body.lines().find(|l| l.starts_with("m=audio "))?;
    let mut it = m.split_whitespace().skip(1);
    let port = it.next()?.parse().ok()?;
    let pt = it.nth(1)?.parse().ok()?;
    Some((pt, port))
}

fn response_to(headers: &[(&str, &str)], status: u16, reason: &str) -> Vec<u8> {
    let mut m = format!("SIP/2.0 {status} {reason}\r\n");
    for (n, v) in headers {
        let keep = ["Via", "From", "To", "Call-ID", "CSeq"];
        if keep.iter().any(|k| n.eq_ignore_ascii_case(k)) {
            let _ = write!(m, "{n}: {v}\r\n");
        }
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    m.into_bytes()
}

fn host_of(hostport: &str) -> &str {
    hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_then_200_acks_and_reads_answer() {
        let mut c = UacCall::new(
            7,
            "127.0.0.1:5080",
            "127.0.0.1:5060",
            40000,
            Some("12155550123"),
            "18005550100",
            Offer::Standard,
        );
        let inv = String::from_utf8(c.invite()).unwrap();
        assert!(inv.starts_with("INVITE sip:+18005550100@127.0.0.1 SIP/2.0\r\n"));
        assert!(inv.contains("m=audio 40000 RTP/AVP 0 8 101\r\n"));
        let ok = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKsim7i\r\nTo: <sip:+18005550100@127.0.0.1>;tag=abc\r\nCSeq: 1 INVITE\r\n\r\nv=0\r\nm=audio 30000 RTP/AVP 0 101\r\n";
        let out = c.on_datagram(ok.as_bytes());
        assert_eq!(c.state, UacState::Confirmed);
        assert_eq!(c.answer, Some((0, 30000)));
        assert_eq!(c.to_tag.as_deref(), Some("abc"));
        let ack = String::from_utf8(out[0].clone()).unwrap();
        assert!(ack.starts_with("ACK "));
        assert!(ack.contains("To: <sip:+18005550100@127.0.0.1>;tag=abc\r\n"));
    }

    #[test]
    fn answers_bye_with_200() {
        let mut c = UacCall::new(1, "h:1", "a:2", 4, None, "1", Offer::PcmaOnly);
        let bye = "BYE sip:gw@h:1 SIP/2.0\r\nVia: SIP/2.0/UDP a:2;branch=z9hG4bKx\r\nFrom: <sip:a>;tag=t\r\nTo: <sip:b>;tag=gw1\r\nCall-ID: x\r\nCSeq: 5 BYE\r\n\r\n";
        let out = c.on_datagram(bye.as_bytes());
        assert_eq!(c.state, UacState::Terminated);
        let resp = String::from_utf8(out[0].clone()).unwrap();
        assert!(resp.starts_with("SIP/2.0 200 OK\r\n"));
        assert!(resp.contains("CSeq: 5 BYE\r\n"));
    }
}
