//! SIP shaped like carriers' and proxies' SIP, against the real agent: a 4 kB INVITE with ten
//! Vias and a route set, responses that follow the Via (RFC 3261 §18.2.2, RFC 3581), the
//! node's BYE through the route set (RFC 3261 §12.2.1.1), a BYE sent straight from the caller,
//! 416 for an unknown URI scheme and CRLF keep-alives.
#![allow(clippy::disallowed_methods)] // the tests time real sockets

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ccedge_tests::rawsip::{header_values, recv_udp_until as recv_until, StreamEnd, StreamReader};
use ccedge_tests::{Agent, AgentOptions, TempDir};

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    s
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().expect("addr")
}

const CALL_ID: &str =
    "7d1e0c3a-58f2-4b9e-a6c1-2f0e9d8c7b6a-1733301234-482910@sbc-east-01.carrier.example.net";
const FROM_TAG: &str = "9c2e4a6f8b1d3e5a7c9f1b3d5e7a9c2e";

/// An INVITE as an SBC behind a record-routing proxy sends it: the proxy's Via (with rport)
/// on top of nine more, three Record-Routes (the proxy first), carrier headers and a
/// five-codec SDP with telephone-event listed late and a video stream.
fn sbc_invite(agent: SocketAddr, proxy: SocketAddr, caller: SocketAddr, rtp: u16) -> String {
    let mut m = format!("INVITE sip:+18005550100@{agent};user=phone SIP/2.0\r\n");
    let _ = write!(
        m,
        "Via: SIP/2.0/UDP {proxy};branch=z9hG4bK-proxy-6a1f0e9d8c7b;rport\r\n"
    );
    for i in 1..10 {
        let _ = write!(
            m,
            "Via: SIP/2.0/UDP 10.40.{i}.17:5060;received=10.40.{i}.17;branch=z9hG4bK-hop{i}-3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c\r\n"
        );
    }
    let _ = write!(
        m,
        "Record-Route: <sip:{proxy};lr;ftag={FROM_TAG};did=a1b.2c3d>\r\n\
         Record-Route: <sip:10.40.1.17;lr;r2=on>, <sip:10.40.2.17:5062;lr>\r\n\
         Max-Forwards: 60\r\n\
         From: \"CARRIER CUSTOMER 0123\" <sip:+12155550123@carrier.example.net;user=phone>;tag={FROM_TAG}\r\n\
         To: <sip:+18005550100@carrier.example.net;user=phone>\r\n\
         Call-ID: {CALL_ID}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:+12155550123@{caller};transport=udp>\r\n\
         P-Asserted-Identity: \"CARRIER CUSTOMER 0123\" <sip:+12155550123@carrier.example.net;user=phone>\r\n\
         P-Asserted-Identity: <tel:+12155550123>\r\n\
         Diversion: <sip:+18005550199@carrier.example.net;user=phone>;reason=unconditional;counter=1;privacy=off\r\n\
         History-Info: <sip:+18005550199@carrier.example.net;user=phone>;index=1\r\n\
         History-Info: <sip:+18005550100@carrier.example.net;user=phone;cause=302>;index=1.1\r\n\
         Session-Expires: 1800\r\n\
         Min-SE: 90\r\n\
         Supported: 100rel, replaces, norefersub, histinfo\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, PRACK, UPDATE, REFER, NOTIFY, SUBSCRIBE\r\n\
         Accept: application/sdp, application/dtmf-relay, multipart/mixed\r\n\
         User-Agent: carrier-sbc/9.2.1.0 build 448\r\n\
         P-Charging-Vector: icid-value=4f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c;icid-generated-at=10.40.9.17;orig-ioi=carrier.example.net\r\n\
         X-Carrier-Trunk: trunk-group=TG0042;route=primary;cic=0288\r\n"
    );
    let sdp = format!(
        "v=0\r\no=SBC 1733301234 1733301234 IN IP4 127.0.0.1\r\ns=SBC Call\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp} RTP/AVP 9 18 8 0 4 97 98 101\r\n\
         a=rtpmap:9 G722/8000\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n\
         a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:4 G723/8000\r\n\
         a=rtpmap:97 AMR/8000\r\na=fmtp:97 mode-set=7;octet-align=1\r\na=rtpmap:98 iLBC/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
         a=rtcp:{}\r\na=ptime:20\r\na=maxptime:40\r\na=sendrecv\r\n\
         m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
        rtp + 1
    );
    // Pad to a realistic 4 kB with the vendor-specific headers large INVITEs carry.
    let mut pad = 0;
    while m.len() + sdp.len() < 4_000 {
        let _ = write!(
            m,
            "X-Vendor-Info-{pad}: session-trace=0x{pad:08x}a1b2c3d4e5f60718293a4b5c6d7e8f90;leg=ingress\r\n"
        );
        pad += 1;
    }
    let _ = write!(
        m,
        "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    m
}

/// The agent's To tag from a response.
fn to_tag(resp: &str) -> String {
    header_values(resp, "To")
        .first()
        .and_then(|v| v.split(";tag=").nth(1))
        .map(|t| t.split(';').next().unwrap_or("").to_owned())
        .expect("To tag")
}

/// A request in the dialog from the caller's side (ACK or BYE) with one Via for `via`.
fn in_dialog(method: &str, cseq: u32, agent: SocketAddr, via: &str, tag: &str) -> String {
    format!(
        "{method} sip:ccedge@{agent} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {via};branch=z9hG4bK-{method}-{cseq}-77\r\n\
         Max-Forwards: 69\r\n\
         From: \"CARRIER CUSTOMER 0123\" <sip:+12155550123@carrier.example.net;user=phone>;tag={FROM_TAG}\r\n\
         To: <sip:+18005550100@carrier.example.net;user=phone>;tag={tag}\r\n\
         Call-ID: {CALL_ID}\r\n\
         CSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Sends the INVITE from the proxy and returns the 200 OK the proxy got.
fn answered_through_proxy(agent: &Agent, proxy: &UdpSocket, caller: &UdpSocket) -> String {
    let invite = sbc_invite(agent.sip, addr(proxy), addr(caller), 41_000);
    assert!(invite.len() >= 4_000, "{} bytes", invite.len());
    proxy.send_to(invite.as_bytes(), agent.sip).expect("send");
    let ok = recv_until(proxy, Duration::from_secs(5), |t| {
        t.starts_with("SIP/2.0 200") || t.starts_with("SIP/2.0 4") || t.starts_with("SIP/2.0 5")
    })
    .expect("a final answer at the proxy");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    ok
}

#[test]
fn a_4kb_sbc_invite_is_answered_and_the_node_bye_follows_the_route_set() {
    let dir = TempDir::new("route");
    let opts = AgentOptions {
        ivr_extra: "no_input_timeout_ms = 1000\nmax_retries = 0".into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let (proxy, caller) = (socket(), socket());
    let ok = answered_through_proxy(&agent, &proxy, &caller);

    // Every Via back in order, the top one stamped for the proxy's source address.
    let vias = header_values(&ok, "Via");
    assert_eq!(vias.len(), 10, "{ok}");
    let port = addr(&proxy).port();
    assert!(
        vias[0].ends_with(&format!(";rport={port};received=127.0.0.1")),
        "{}",
        vias[0]
    );
    // The route set echoed, in order, one value per line.
    let rr = header_values(&ok, "Record-Route");
    assert_eq!(rr.len(), 3, "{ok}");
    assert!(
        rr[0].starts_with(&format!("<sip:{};lr;", addr(&proxy))),
        "{}",
        rr[0]
    );
    assert_eq!(rr[2], "<sip:10.40.2.17:5062;lr>");
    // The video stream declined with port 0; PCMA or PCMU chosen; telephone-event kept.
    let body = ok.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(body.contains("m=video 0 "), "{body}");
    assert!(body.contains("telephone-event/8000"), "{body}");

    // The proxy forwards the caller's ACK.
    let tag = to_tag(&ok);
    let ack = in_dialog("ACK", 1, agent.sip, &addr(&proxy).to_string(), &tag);
    proxy.send_to(ack.as_bytes(), agent.sip).expect("ack");
    // The ACK matched: the 2xx is not retransmitted (it would be at 0.5 s and 1.5 s).
    let again = recv_until(&proxy, Duration::from_millis(1_800), |t| {
        t.starts_with("SIP/2.0 200")
    });
    assert!(
        again.is_none(),
        "the 2xx is still retransmitted after the ACK"
    );

    // The IVR gives up after one silent menu and hangs up: the BYE reaches the proxy (the
    // first route), with the route set as Route and the caller's Contact as Request-URI.
    let bye = recv_until(&proxy, Duration::from_secs(45), |t| t.starts_with("BYE "))
        .expect("the node's BYE at the proxy");
    assert!(
        bye.starts_with(&format!(
            "BYE sip:+12155550123@{};transport=udp SIP/2.0\r\n",
            addr(&caller)
        )),
        "{bye}"
    );
    let routes = header_values(&bye, "Route");
    assert_eq!(routes.len(), 3, "{bye}");
    assert_eq!(routes[0], rr[0]);
    assert_eq!(routes[2], "<sip:10.40.2.17:5062;lr>");
    // Nothing went to the caller's own address: the proxy is the next hop.
    let mut buf = [0u8; 100];
    caller
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    assert!(caller.recv_from(&mut buf).is_err());
}

#[test]
fn a_bye_sent_straight_by_the_caller_is_answered_at_its_own_address() {
    let dir = TempDir::new("straight");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let (proxy, caller) = (socket(), socket());
    let ok = answered_through_proxy(&agent, &proxy, &caller);
    let tag = to_tag(&ok);
    let ack = in_dialog("ACK", 1, agent.sip, &addr(&proxy).to_string(), &tag);
    proxy.send_to(ack.as_bytes(), agent.sip).expect("ack");
    // The caller's BYE, straight from the caller (no rport: the Via names its port).
    let bye = in_dialog("BYE", 2, agent.sip, &addr(&caller).to_string(), &tag);
    caller.send_to(bye.as_bytes(), agent.sip).expect("bye");
    let ok = recv_until(&caller, Duration::from_secs(3), |t| {
        t.starts_with("SIP/2.0") && t.contains("BYE")
    })
    .expect("the 200 to the BYE at the caller");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(recv_until(&proxy, Duration::from_millis(500), |t| t
        .contains(" BYE\r\n"))
    .is_none());
}

#[test]
fn responses_follow_the_via_port_unless_rport_asks_for_the_source() {
    let dir = TempDir::new("rport");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let (sender, listener) = (socket(), socket());
    let options = |via_port: u16, rport: &str, uri: &str| {
        format!(
            "OPTIONS {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK-opt-{via_port}{rport}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p1\r\nTo: <sip:ccedge@127.0.0.1>\r\n\
             Call-ID: opt-{via_port}-{}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            rport.len()
        )
    };
    let uri = format!("sip:ccedge@{}", agent.sip);
    // No rport: the answer goes to the Via's port, not to the sending socket.
    let lp = addr(&listener).port();
    sender
        .send_to(options(lp, "", &uri).as_bytes(), agent.sip)
        .expect("send");
    let got = recv_until(&listener, Duration::from_secs(3), |t| {
        t.starts_with("SIP/2.0")
    });
    assert!(
        got.as_deref().is_some_and(|t| t.starts_with("SIP/2.0 200")),
        "{got:?}"
    );
    assert!(recv_until(&sender, Duration::from_millis(300), |_| true).is_none());
    // rport: back to the source port, with rport= and received= filled in.
    sender
        .send_to(options(lp, ";rport", &uri).as_bytes(), agent.sip)
        .expect("send");
    let got = recv_until(&sender, Duration::from_secs(3), |t| {
        t.starts_with("SIP/2.0")
    })
    .expect("answer at the source");
    let via = header_values(&got, "Via")[0].to_owned();
    assert!(
        via.ends_with(&format!(
            ";rport={};received=127.0.0.1",
            addr(&sender).port()
        )),
        "{via}"
    );
    // An unknown Request-URI scheme gets 416 (RFC 3261 §8.2.2.1).
    sender
        .send_to(
            options(addr(&sender).port(), ";rport", "nobodyKnowsThisScheme:x").as_bytes(),
            agent.sip,
        )
        .expect("send");
    let got = recv_until(&sender, Duration::from_secs(3), |t| {
        t.starts_with("SIP/2.0")
    });
    assert!(
        got.as_deref().is_some_and(|t| t.starts_with("SIP/2.0 416")),
        "{got:?}"
    );
    // CRLF keep-alives get no answer and are not counted as malformed.
    for _ in 0..5 {
        sender.send_to(b"\r\n\r\n", agent.sip).expect("send");
    }
    assert!(recv_until(&sender, Duration::from_millis(300), |_| true).is_none());
    let config = agent.config.to_str().expect("utf-8 path");
    let status = ccedge_tests::ccedge_cli(&["status", "--json", "--config", config]);
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let v: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    let malformed = v
        .pointer("/stats/sip_malformed")
        .and_then(serde_json::Value::as_u64);
    assert_eq!(malformed, Some(0), "{}", status.stdout);
}

// ---- SIP over TCP ------------------------------------------------------------------------------

/// A SIP connection over TCP, read with Content-Length framing.
struct TcpSip {
    s: std::net::TcpStream,
    reader: StreamReader,
}

impl TcpSip {
    fn connect(to: SocketAddr) -> TcpSip {
        let s = std::net::TcpStream::connect(to).expect("connect over TCP");
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        TcpSip {
            s,
            reader: StreamReader::default(),
        }
    }

    fn send(&mut self, msg: &[u8]) {
        use std::io::Write as _;
        self.s.write_all(msg).expect("write");
    }

    /// The next wanted message within `timeout` (`Ok(None)`: none came); `Err` when the
    /// connection closed.
    fn recv_until(
        &mut self,
        timeout: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Result<Option<String>, ()> {
        match self.reader.recv_until(&mut self.s, timeout, want) {
            Ok(m) => Ok(Some(m)),
            Err(StreamEnd::Timeout) => Ok(None),
            Err(StreamEnd::Closed) => Err(()),
        }
    }
}

/// The SBC INVITE over TCP, padded to `size` bytes, from the stream `local`.
fn tcp_invite(agent: SocketAddr, local: SocketAddr, size: usize) -> String {
    let udp_shaped = sbc_invite(agent, local, local, 42_000);
    let (head, body) = udp_shaped.split_once("\r\n\r\n").expect("head");
    let mut head = head
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        .replace(";transport=udp>", ";transport=tcp>");
    let mut pad = 0;
    while head.len() + body.len() + 4 < size - 100 {
        let _ = write!(
            head,
            "\r\nX-Trace-{pad}: hop=core{pad};ts=1733301234.{pad:06};id=0f1e2d3c4b5a69788796a5b4c3d2e1f0"
        );
        pad += 1;
    }
    format!("{head}\r\n\r\n{body}")
}

#[test]
fn an_8kb_invite_over_tcp_is_answered_and_the_dialog_stays_on_the_connection() {
    let dir = TempDir::new("tcp");
    let opts = AgentOptions {
        ivr_extra: "no_input_timeout_ms = 1000\nmax_retries = 0".into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let mut c = TcpSip::connect(agent.sip);
    let local = c.s.local_addr().expect("local");
    // A keep-alive ping gets a pong and nothing else.
    c.send(b"\r\n\r\n");
    let invite = tcp_invite(agent.sip, local, 8_000);
    assert!(
        (7_800..=8_200).contains(&invite.len()),
        "{} bytes",
        invite.len()
    );
    c.send(invite.as_bytes());
    let ok = c
        .recv_until(Duration::from_secs(5), |t| {
            t.starts_with("SIP/2.0 2") || t.starts_with("SIP/2.0 4") || t.starts_with("SIP/2.0 5")
        })
        .expect("connection open")
        .expect("a final answer on the connection");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let contact = header_values(&ok, "Contact")[0].to_owned();
    assert!(contact.ends_with(";transport=tcp>"), "{contact}");
    assert_eq!(header_values(&ok, "Record-Route").len(), 3);
    let tag = to_tag(&ok);
    let ack = in_dialog("ACK", 1, agent.sip, &local.to_string(), &tag)
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    c.send(ack.as_bytes());
    // The IVR gives up and hangs up: the BYE comes on this connection (the proxy in the route
    // set is this stream's peer), with a TCP Via.
    let bye = c
        .recv_until(Duration::from_secs(45), |t| t.starts_with("BYE "))
        .expect("connection open")
        .expect("the node's BYE on the connection");
    assert!(
        header_values(&bye, "Via")[0].starts_with("SIP/2.0/TCP "),
        "{bye}"
    );
    assert_eq!(header_values(&bye, "Route").len(), 3, "{bye}");
}

#[test]
fn over_tcp_a_bye_is_answered_and_an_oversized_message_gets_513_and_a_close() {
    let dir = TempDir::new("tcpbye");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let mut c = TcpSip::connect(agent.sip);
    let local = c.s.local_addr().expect("local");
    c.send(tcp_invite(agent.sip, local, 4_000).as_bytes());
    let ok = c
        .recv_until(Duration::from_secs(5), |t| t.starts_with("SIP/2.0 200"))
        .expect("open")
        .expect("200 over TCP");
    let tag = to_tag(&ok);
    let tcp = |m: String| m.replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    c.send(tcp(in_dialog("ACK", 1, agent.sip, &local.to_string(), &tag)).as_bytes());
    c.send(tcp(in_dialog("BYE", 2, agent.sip, &local.to_string(), &tag)).as_bytes());
    let ok = c
        .recv_until(Duration::from_secs(3), |t| t.contains("CSeq: 2 BYE"))
        .expect("open")
        .expect("the 200 to the BYE on the connection");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    // A message larger than the node takes: 513, then the stream is closed (it cannot be
    // framed any further).
    let big = format!(
        "OPTIONS sip:ccedge@{} SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-big\r\n\
         From: <sip:a@127.0.0.1>;tag=b1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: big-1\r\n\
         CSeq: 1 OPTIONS\r\nContent-Length: 40000\r\n\r\n",
        agent.sip
    );
    c.send(big.as_bytes());
    let answer = c
        .recv_until(Duration::from_secs(3), |t| t.starts_with("SIP/2.0"))
        .expect("the answer comes before the close")
        .expect("an answer");
    assert!(answer.starts_with("SIP/2.0 513"), "{answer}");
    assert!(
        c.recv_until(Duration::from_secs(3), |_| true).is_err(),
        "the connection is closed"
    );
}
