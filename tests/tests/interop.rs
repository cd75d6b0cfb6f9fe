//! Interoperability: the real `ccedge agent` with SIP software nobody on the team wrote.
//!
//! * baresip and linphonec (Debian packages) call the agent as softphones, press 1 and 1 with
//!   RFC 4733 telephone-events (linphonec also as in-band tones) to book a callback, and see
//!   the node hang up with BYE.
//! * Kamailio runs as a record-routing proxy in front of the agent (`tests/kamailio/`): the
//!   200 OK must carry its Record-Route and dialog requests from either side follow the route
//!   set through it (RFC 3261 §12, §16.12).
//! * INVITEs shaped like those of carrier gateways and SBCs (`tests/testdata/invites/`,
//!   1.5–8 kB, 3–16 Vias, long Call-IDs, several Record-Routes, codec-rich SDP with a rejected
//!   or second video stream) are each answered 200 with an SDP answer, and the caller's BYE 200.
//!
//! Each test skips (with a message) when its peer is not installed, except in CI, where
//! `.ci/run` installs them all. Every wait is bounded; each test ends well within 60 s.

#![allow(clippy::disallowed_methods)] // the tests time real sockets and processes

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ccedge_tests::interop::{
    fill_template, new_branch, ok_for, peer_binary, sdp_connection, sdp_media, telephone_event_pt,
    uri_addr, uri_of, via_addr, Baresip, Dialog, Kamailio, Linphonec, SipEndpoint, SipMessage,
};
use ccedge_tests::{Agent, AgentOptions, RtpSink, TempDir};
use shared::dtmf::Digit;

const CALLER: &str = "12155550123";
const DIALLED: &str = "18005550100";

fn digit_presses(agent: &Agent, digit: &str) -> usize {
    let needle = format!("digit={digit}");
    agent.log().iter().filter(|l| l.contains(&needle)).count()
}

fn wait_digit_presses(agent: &Agent, digit: &str, n: usize, timeout: Duration) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if digit_presses(agent, digit) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The callback the call booked is on disk, for the caller's own number.
fn assert_one_callback_on_disk(dir: &TempDir) {
    let store = edge::store::Store::open(dir.path()).expect("open store");
    let cbs = store.callbacks().expect("callbacks");
    assert_eq!(cbs.len(), 1, "{cbs:?}");
    assert_eq!(cbs[0].callback_number.to_string(), format!("+{CALLER}"));
    assert_eq!(
        cbs[0].dialled.as_ref().map(ToString::to_string),
        Some(format!("+{DIALLED}"))
    );
}

fn agent_log(agent: &Agent) -> String {
    agent.log().join("\n")
}

// ───────────────────────────────────────────────────────────────────────────────────────────
// baresip
// ───────────────────────────────────────────────────────────────────────────────────────────

#[test]
fn baresip_books_a_callback_with_rfc4733_keys_and_the_node_hangs_up() {
    let Some(bin) = peer_binary("baresip", "baresip-core") else {
        return;
    };
    let dir = TempDir::new("interop-baresip");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let phone_dir = TempDir::new("interop-baresip-phone");
    let mut phone = Baresip::start(&bin, phone_dir.path(), CALLER);

    phone.command("dial", &format!("sip:{DIALLED}@{}", agent.sip));
    assert!(
        phone
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .is_some(),
        "baresip's call was not answered: {:?}\n{}\n{}",
        phone.events(),
        phone.output(),
        agent_log(&agent)
    );
    // The greeting's RTP reached baresip.
    assert!(
        phone
            .wait_event("CALL_RTPESTAB", Duration::from_secs(5))
            .is_some(),
        "no RTP from the agent reached baresip: {:?}",
        phone.events()
    );

    // "1" at the greeting (barge-in: the menu's call back), "1" to confirm the caller's number.
    phone.command("sndcode", "1");
    assert!(
        wait_digit_presses(&agent, "D1", 1, Duration::from_secs(5)),
        "the agent did not see baresip's first key\n{}",
        agent_log(&agent)
    );
    std::thread::sleep(Duration::from_millis(600));
    phone.command("sndcode", "1");
    assert!(
        agent.wait_log("callback booked (durable)", Duration::from_secs(8)),
        "no callback booked\n{}",
        agent_log(&agent)
    );
    let closed = phone.wait_event("CALL_CLOSED", Duration::from_secs(25));
    assert!(
        closed.is_some(),
        "the node did not end the call: {:?}\n{}",
        phone.events(),
        agent_log(&agent)
    );

    // What went over the wire, from baresip's own trace.
    let trace = phone.sip_trace();
    let sent = |method: &str| {
        trace
            .iter()
            .filter(|(s, m)| *s && m.method() == Some(method))
            .count()
    };
    let invite = trace
        .iter()
        .find(|(s, m)| *s && m.method() == Some("INVITE"))
        .map(|(_, m)| m)
        .expect("baresip's INVITE in its trace");
    let offer = sdp_media(&invite.body);
    assert!(
        offer.first().and_then(telephone_event_pt).is_some(),
        "baresip offered no telephone-event:\n{}",
        invite.body
    );
    let answer = trace
        .iter()
        .find(|(s, m)| !*s && m.status() == Some(200) && m.cseq_method() == Some("INVITE"))
        .map(|(_, m)| m)
        .expect("the agent's 200 OK in baresip's trace");
    assert!(
        sdp_media(&answer.body)
            .first()
            .and_then(telephone_event_pt)
            .is_some(),
        "the agent's answer negotiated no telephone-event:\n{}",
        answer.body
    );
    // The keys went as RFC 4733 events, not as SIP INFO.
    assert_eq!(sent("INFO"), 0, "baresip sent SIP INFO");
    // The node hung up: baresip received a BYE and sent none.
    assert!(
        trace.iter().any(|(s, m)| !*s && m.method() == Some("BYE")),
        "baresip received no BYE:\n{}",
        phone.output()
    );
    assert_eq!(sent("BYE"), 0, "baresip hung up itself");
    assert!(agent.wait_log("reason=\"node_hangup\"", Duration::from_secs(2)));
    assert_one_callback_on_disk(&dir);
}

// ───────────────────────────────────────────────────────────────────────────────────────────
// linphonec
// ───────────────────────────────────────────────────────────────────────────────────────────

#[test]
fn linphonec_books_a_callback_with_rfc4733_keys_and_the_node_hangs_up() {
    linphonec_books_a_callback(true);
}

#[test]
fn linphonec_books_a_callback_with_in_band_keys_and_the_node_hangs_up() {
    linphonec_books_a_callback(false);
}

/// linphonec calls, presses 1 and 1 (as RFC 4733 events when `rfc4733`, else as in-band DTMF
/// tones in G.711 with no telephone-event offered), the callback is booked on disk and the node
/// hangs up.
fn linphonec_books_a_callback(rfc4733: bool) {
    let Some(bin) = peer_binary("linphonec", "linphone-cli") else {
        return;
    };
    let dir = TempDir::new("interop-linphonec");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let phone_dir = TempDir::new("interop-linphonec-phone");
    let mut phone = Linphonec::start_with(&bin, phone_dir.path(), CALLER, rfc4733);

    phone.send(&format!("call sip:{DIALLED}@{}", agent.sip));
    assert!(
        phone.wait_line("connected.", Duration::from_secs(10)),
        "linphonec's call was not answered:\n{}\n{}",
        phone.output(),
        agent_log(&agent)
    );
    assert!(
        phone.wait_line("Media streams established", Duration::from_secs(5)),
        "{}",
        phone.output()
    );
    // A line holding only a key sends it as DTMF while a call is up.
    phone.send("1");
    assert!(
        wait_digit_presses(&agent, "D1", 1, Duration::from_secs(5)),
        "the agent did not see linphonec's first key\n{}",
        agent_log(&agent)
    );
    std::thread::sleep(Duration::from_millis(600));
    phone.send("1");
    assert!(
        agent.wait_log("callback booked (durable)", Duration::from_secs(8)),
        "no callback booked\n{}",
        agent_log(&agent)
    );
    assert!(
        phone.wait_line(" ended", Duration::from_secs(25)),
        "the node did not end the call:\n{}\n{}",
        phone.output(),
        agent_log(&agent)
    );

    let messages = phone.sip_messages();
    let invite = messages
        .iter()
        .find(|m| m.method() == Some("INVITE"))
        .expect("linphonec's INVITE in its log");
    assert_eq!(
        sdp_media(&invite.body)
            .first()
            .and_then(telephone_event_pt)
            .is_some(),
        rfc4733,
        "telephone-event in linphonec's offer:\n{}",
        invite.body
    );
    let answer = messages
        .iter()
        .find(|m| m.status() == Some(200) && m.cseq_method() == Some("INVITE"))
        .expect("the agent's 200 OK in linphonec's log");
    let audio = sdp_media(&answer.body);
    let audio = audio.first().expect("an audio answer");
    assert_eq!(
        telephone_event_pt(audio).is_some(),
        rfc4733,
        "telephone-event in the agent's answer:\n{}",
        answer.body
    );
    assert!(
        audio.formats.iter().any(|f| f == "0" || f == "8"),
        "{}",
        answer.body
    );
    assert!(
        !messages.iter().any(|m| m.method() == Some("INFO")),
        "linphonec sent SIP INFO"
    );
    // The BYE came from the agent (its Via), and linphonec sent none.
    let agent_via = format!("SIP/2.0/UDP {}", agent.sip);
    let byes: Vec<&SipMessage> = messages
        .iter()
        .filter(|m| m.method() == Some("BYE"))
        .collect();
    assert!(
        byes.iter()
            .any(|m| m.header("Via").is_some_and(|v| v.starts_with(&agent_via))),
        "linphonec received no BYE from the agent ({} BYEs in its log)",
        byes.len()
    );
    assert!(
        byes.iter()
            .all(|m| m.header("Via").is_some_and(|v| v.starts_with(&agent_via))),
        "linphonec hung up itself"
    );
    assert!(agent.wait_log("reason=\"node_hangup\"", Duration::from_secs(2)));
    phone.quit();
    assert_one_callback_on_disk(&dir);
}

// ───────────────────────────────────────────────────────────────────────────────────────────
// Kamailio in front of the node
// ───────────────────────────────────────────────────────────────────────────────────────────

struct ProxiedCall {
    _dir: TempDir,
    agent: Agent,
    proxy: Kamailio,
    _proxy_dir: TempDir,
    caller: SipEndpoint,
    rtp: RtpSink,
    invite: SipMessage,
}

/// The agent behind Kamailio, and the caller's INVITE (not sent yet) addressed to the proxy.
fn proxied_call(tag: &str) -> Option<ProxiedCall> {
    let bin = peer_binary("kamailio", "kamailio")?;
    let dir = TempDir::new(tag);
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let proxy_dir = TempDir::new(&format!("{tag}-kamailio"));
    let proxy = Kamailio::start(&bin, proxy_dir.path(), agent.sip);
    let caller = SipEndpoint::new();
    let rtp = RtpSink::new();
    let me = caller.addr();
    let body = format!(
        "v=0\r\no=caller 4711 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n",
        rtp.port()
    );
    let invite = SipMessage {
        start: format!("INVITE sip:{DIALLED}@{} SIP/2.0", proxy.addr),
        headers: vec![
            (
                "Via".into(),
                format!("SIP/2.0/UDP {me};branch={};rport", new_branch()),
            ),
            ("Max-Forwards".into(), "70".into()),
            (
                "From".into(),
                format!(
                    "\"Interop Caller\" <sip:{CALLER}@127.0.0.1>;tag=kam{}",
                    me.port()
                ),
            ),
            ("To".into(), format!("<sip:{DIALLED}@{}>", proxy.addr)),
            (
                "Call-ID".into(),
                format!("{tag}-{}-{}@127.0.0.1", std::process::id(), me.port()),
            ),
            ("CSeq".into(), "1 INVITE".into()),
            ("Contact".into(), format!("<sip:{CALLER}@{me}>")),
            ("Content-Type".into(), "application/sdp".into()),
            ("Content-Length".into(), body.len().to_string()),
        ],
        body,
    };
    Some(ProxiedCall {
        _dir: dir,
        agent,
        proxy,
        _proxy_dir: proxy_dir,
        caller,
        rtp,
        invite,
    })
}

impl ProxiedCall {
    /// Sends the INVITE to the proxy; the 200 OK and where it came from.
    fn answered(&self) -> (SipMessage, SocketAddr) {
        let (ok, from) = self
            .caller
            .invite(&self.invite, self.proxy.addr, Duration::from_secs(10))
            .unwrap_or_else(|| {
                panic!(
                    "no final answer through Kamailio\n{}\n{}",
                    self.proxy.output(),
                    agent_log(&self.agent)
                )
            });
        assert_eq!(
            ok.status(),
            Some(200),
            "{}\n{}",
            ok.to_wire(),
            self.proxy.output()
        );
        (ok, from)
    }

    fn ack(&self, dialog: &Dialog) {
        let ack = dialog.request("ACK", dialog.invite_cseq, self.caller.addr(), &new_branch());
        self.caller.send(&ack, dialog.next_hop());
    }

    fn kamailio_lines(&self, needle: &str) -> String {
        self.proxy
            .lines()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
fn through_kamailio_a_call_is_answered_along_the_via_path() {
    let Some(call) = proxied_call("interop-kam-basic") else {
        return;
    };
    let (ok, from) = call.answered();
    // The response came back along the Via path: from the proxy, which removed its own Via
    // and left ours (with the `received`/`rport` it noted on the way in, RFC 3581).
    assert_eq!(from, call.proxy.addr, "the 200 OK bypassed the proxy");
    let vias = ok.header_values("Via");
    let ours = call.invite.header("Via").expect("our Via");
    let branch = ours.split(';').find(|p| p.starts_with("branch=")).unwrap();
    assert!(
        vias.len() == 1 && vias[0].contains(branch),
        "{}",
        ok.to_wire()
    );
    assert!(ok
        .header("To")
        .and_then(ccedge_tests::interop::tag_of)
        .is_some());
    let answer = sdp_media(&ok.body);
    assert!(
        answer
            .first()
            .is_some_and(|m| m.port != 0 && telephone_event_pt(m).is_some()),
        "{}",
        ok.body
    );
    let dialog = Dialog::from_2xx(&call.invite, &ok);
    call.ack(&dialog);
    // The greeting flows to the caller's offered address.
    assert!(
        call.rtp.wait_for(10, Duration::from_secs(5)) >= 10,
        "no RTP after the answer"
    );
    assert!(call.agent.wait_log("call.offered", Duration::from_secs(1)));
}

#[test]
fn through_kamailio_the_200_ok_carries_record_route_and_the_callers_requests_follow_it() {
    let Some(call) = proxied_call("interop-kam-rr") else {
        return;
    };
    let (ok, _) = call.answered();
    // RFC 3261 §12.1.1: the UAS copies every Record-Route of the request into its 2xx.
    let rr = ok.header_values("Record-Route");
    let proxy_uri = format!("sip:{}", call.proxy.addr);
    assert!(
        rr.iter()
            .any(|r| uri_of(r).starts_with(&proxy_uri) && r.contains(";lr")),
        "the 200 OK carries no Record-Route of the proxy ({proxy_uri}):\n{}\nKamailio forwarded:\n{}",
        ok.to_wire(),
        call.kamailio_lines("reply:")
    );
    let dialog = Dialog::from_2xx(&call.invite, &ok);
    assert_eq!(dialog.next_hop(), call.proxy.addr);
    call.ack(&dialog);
    // The ACK, routed by the proxy, reached the agent: its 200 OK is not retransmitted
    // (Timer G would resend it after 500 ms and 1.5 s).
    let again: Vec<SipMessage> = call
        .caller
        .drain(Duration::from_millis(2000))
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| m.status() == Some(200) && m.cseq_method() == Some("INVITE"))
        .collect();
    assert!(
        again.is_empty(),
        "the 200 OK was retransmitted {} times after the ACK through the proxy\n{}",
        again.len(),
        call.kamailio_lines("ACK")
    );
    // The caller's BYE goes to the proxy with Route and is answered 200 through it.
    let bye = dialog.request("BYE", dialog.cseq, call.caller.addr(), &new_branch());
    assert!(bye.header("Route").is_some());
    let (resp, from) = call
        .caller
        .request(&bye, call.proxy.addr, Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "the caller's BYE through the proxy was not answered\n{}\n{}",
                call.kamailio_lines("BYE"),
                agent_log(&call.agent)
            )
        });
    assert_eq!(resp.status(), Some(200), "{}", resp.to_wire());
    assert_eq!(from, call.proxy.addr, "the BYE's answer bypassed the proxy");
    assert!(call
        .agent
        .wait_log("reason=\"caller_hangup\"", Duration::from_secs(3)));
}

#[test]
fn through_kamailio_the_nodes_bye_reaches_the_caller_via_the_proxy() {
    let Some(call) = proxied_call("interop-kam-bye") else {
        return;
    };
    let (ok, _) = call.answered();
    let dialog = Dialog::from_2xx(&call.invite, &ok);
    call.ack(&dialog);
    // Book a callback (1, 1) so that the node hangs up.
    let answer = sdp_media(&ok.body);
    let audio = answer.first().expect("an audio answer");
    let ip = sdp_connection(&ok.body).expect("c= in the answer");
    let media = SocketAddr::new(ip, audio.port);
    let pt = telephone_event_pt(audio).expect("telephone-event in the answer");
    assert!(
        call.rtp.wait_for(5, Duration::from_secs(5)) >= 5,
        "no greeting RTP"
    );
    let mut seq = 1u16;
    call.rtp.send_digit(media, Digit::D1, pt, 1000, &mut seq);
    assert!(wait_digit_presses(
        &call.agent,
        "D1",
        1,
        Duration::from_secs(5)
    ));
    std::thread::sleep(Duration::from_millis(600));
    call.rtp.send_digit(media, Digit::D1, pt, 500_000, &mut seq);
    assert!(
        call.agent
            .wait_log("callback booked (durable)", Duration::from_secs(8)),
        "{}",
        agent_log(&call.agent)
    );
    // "Booked, you are number 1", goodbye, then the node's BYE: through the proxy.
    let call_id = dialog.call_id.clone();
    let got = call.caller.recv_matching(Duration::from_secs(20), |m| {
        m.method() == Some("BYE") && m.header("Call-ID") == Some(call_id.as_str())
    });
    let Some((bye, from)) = got else {
        panic!(
            "the node's BYE never reached the caller\nKamailio on the BYE:\n{}\nagent:\n{}",
            call.kamailio_lines("BYE"),
            agent_log(&call.agent)
        );
    };
    let ok_bye = ok_for(&bye);
    let reply_to = bye.header("Via").and_then(via_addr).unwrap_or(from);
    call.caller.send(&ok_bye, reply_to);
    assert_eq!(from, call.proxy.addr, "the node's BYE bypassed the proxy");
    // The agent sent it to the proxy with the route set as Route (the proxy's log of it) and
    // to the caller's Contact as Request-URI.
    let proxy_route = format!("Route: <sip:{}", call.proxy.addr);
    let seen = call.kamailio_lines("in: BYE");
    assert!(
        seen.lines()
            .any(|l| l.contains(&call.agent.sip.ip().to_string()) && l.contains(&proxy_route)),
        "the node's BYE carried no Route to the proxy:\n{seen}"
    );
    assert_eq!(
        bye.request_uri().and_then(uri_addr),
        Some(call.caller.addr()),
        "the BYE's Request-URI is not the caller's Contact: {}",
        bye.start
    );
    assert!(call
        .agent
        .wait_log("reason=\"node_hangup\"", Duration::from_secs(3)));
}

#[test]
fn baresip_through_kamailio_books_a_callback_and_gets_the_nodes_bye_via_the_proxy() {
    let Some(bin) = peer_binary("baresip", "baresip-core") else {
        return;
    };
    let Some(kamailio) = peer_binary("kamailio", "kamailio") else {
        return;
    };
    let dir = TempDir::new("interop-baresip-kam");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let proxy_dir = TempDir::new("interop-baresip-kam-proxy");
    let proxy = Kamailio::start(&kamailio, proxy_dir.path(), agent.sip);
    let phone_dir = TempDir::new("interop-baresip-kam-phone");
    let mut phone = Baresip::start(&bin, phone_dir.path(), CALLER);
    let kamailio_bye = || {
        proxy
            .lines()
            .into_iter()
            .filter(|l| l.contains("BYE"))
            .collect::<Vec<_>>()
            .join("\n")
    };

    phone.command("dial", &format!("sip:{DIALLED}@{}", proxy.addr));
    assert!(
        phone
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .is_some(),
        "not answered through the proxy: {:?}\n{}",
        phone.events(),
        proxy.output()
    );
    assert!(phone
        .wait_event("CALL_RTPESTAB", Duration::from_secs(5))
        .is_some());
    phone.command("sndcode", "1");
    assert!(wait_digit_presses(&agent, "D1", 1, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(600));
    phone.command("sndcode", "1");
    assert!(
        agent.wait_log("callback booked (durable)", Duration::from_secs(8)),
        "{}",
        agent_log(&agent)
    );
    let closed = phone.wait_event("CALL_CLOSED", Duration::from_secs(20));
    assert!(
        closed.is_some(),
        "the node's BYE never reached baresip through the proxy\nKamailio on BYE:\n{}",
        kamailio_bye()
    );
    let trace = phone.sip_trace();
    let ok = trace
        .iter()
        .find(|(s, m)| !*s && m.status() == Some(200) && m.cseq_method() == Some("INVITE"))
        .map(|(_, m)| m)
        .expect("the 200 OK in baresip's trace");
    let proxy_uri = format!("sip:{}", proxy.addr);
    assert!(
        ok.header_values("Record-Route")
            .iter()
            .any(|r| uri_of(r).starts_with(&proxy_uri)),
        "no Record-Route of the proxy in the 200 OK:\n{}",
        ok.to_wire()
    );
    let bye = trace
        .iter()
        .find(|(s, m)| !*s && m.method() == Some("BYE"))
        .map(|(_, m)| m)
        .expect("baresip received the node's BYE");
    // It came through the proxy: the proxy's Via on top of the agent's.
    let vias = bye.header_values("Via");
    assert!(
        vias.len() == 2 && vias[0].contains(&proxy.addr.to_string()),
        "{}",
        bye.to_wire()
    );
    assert!(agent.wait_log("reason=\"node_hangup\"", Duration::from_secs(2)));
    assert_one_callback_on_disk(&dir);
}

// ───────────────────────────────────────────────────────────────────────────────────────────
// Vendor-shaped INVITEs
// ───────────────────────────────────────────────────────────────────────────────────────────

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/invites")
}

/// The INVITE in `file`, filled in for a caller at `me` with media at `rtp`, to `agent`.
fn vendor_invite(file: &str, me: SocketAddr, rtp: u16, agent: SocketAddr) -> String {
    let text = std::fs::read_to_string(corpus_dir().join(file)).expect("corpus file");
    fill_template(
        &text,
        &[
            ("agent", agent.to_string()),
            ("local", me.to_string()),
            ("local_ip", me.ip().to_string()),
            ("branch", new_branch()),
            ("rtp_port", rtp.to_string()),
            ("rtcp_port", (rtp + 1).to_string()),
            ("video_port", (rtp + 2).to_string()),
        ],
    )
}

/// A message's Vias as a UAS must echo them (RFC 3261 §8.2.6.2), without the `received` and
/// `rport` values the UAS may add to the top one (RFC 3581).
fn vias_sent_by(m: &SipMessage) -> Vec<String> {
    m.header_values("Via")
        .iter()
        .map(|v| {
            v.split(';')
                .map(str::trim)
                .filter(|p| !p.starts_with("received="))
                .map(|p| if p.starts_with("rport=") { "rport" } else { p })
                .collect::<Vec<_>>()
                .join(";")
        })
        .collect()
}

/// Sends the vendor INVITE `file` to a fresh agent and checks: a 200 OK with an SDP answer
/// (RFC 3264: one m= line per offered one, audio in G.711 with telephone-event, video
/// refused with port 0), the Vias echoed (RFC 3261 §8.2.6.2), audio flowing to the offer's
/// address; then the ACK and the caller's BYE, answered 200.
fn vendor_invite_is_answered(file: &str) {
    let dir = TempDir::new("interop-vendor");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let caller = SipEndpoint::new();
    let rtp = RtpSink::new();
    let wire = vendor_invite(file, caller.addr(), rtp.port(), agent.sip);
    let invite = SipMessage::parse(wire.as_bytes()).expect("the corpus INVITE parses");
    let call_id = invite.header("Call-ID").expect("Call-ID").to_owned();
    // Final response (with Timer A retransmissions, as a UAC does).
    let (ok, _) = caller
        .invite_wire(&wire, agent.sip, Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "{file} ({} bytes): no final response\n{}",
                wire.len(),
                agent_log(&agent)
            )
        });
    assert_eq!(
        ok.status(),
        Some(200),
        "{file} ({} bytes) was refused:\n{}\nagent:\n{}",
        wire.len(),
        ok.start,
        agent_log(&agent)
    );
    assert_eq!(ok.header("Call-ID"), Some(call_id.as_str()));
    assert_eq!(
        vias_sent_by(&ok),
        vias_sent_by(&invite),
        "{file}: the Vias were not echoed in order"
    );
    assert!(ok
        .header("To")
        .and_then(ccedge_tests::interop::tag_of)
        .is_some());
    assert!(
        ok.header("Content-Type")
            .is_some_and(|c| c.eq_ignore_ascii_case("application/sdp")),
        "{file}: no SDP answer\n{}",
        ok.to_wire()
    );
    let offer = sdp_media(&invite.body);
    let answer = sdp_media(&ok.body);
    assert_eq!(
        answer.len(),
        offer.len(),
        "{file}: the answer must have one m= line per offered one\n{}",
        ok.body
    );
    for (o, a) in offer.iter().zip(&answer) {
        assert_eq!(
            o.media, a.media,
            "{file}: m= lines out of order\n{}",
            ok.body
        );
        if o.media == "audio" {
            assert_ne!(a.port, 0, "{file}: audio refused\n{}", ok.body);
            assert!(
                a.formats.iter().any(|f| f == "0" || f == "8"),
                "{file}: no G.711 in the answer\n{}",
                ok.body
            );
            assert!(
                telephone_event_pt(a).is_some(),
                "{file}: telephone-event was offered but not answered\n{}",
                ok.body
            );
        } else {
            assert_eq!(a.port, 0, "{file}: {} accepted\n{}", a.media, ok.body);
        }
    }
    // ACK and BYE arrive as from the proxy nearest the agent (whose Record-Route is first and
    // points to us): Request-URI the agent's Contact, our Via on top of the upstream ones, no
    // Route left.
    let mut dialog = Dialog::from_2xx(&invite, &ok);
    dialog.route_set.clear();
    let upstream = invite.header_values("Via");
    let with_upstream = |mut m: SipMessage| {
        // The upstream hops' Vias, each with a branch of its own for this transaction.
        let method = m.method().unwrap_or("X").to_owned();
        for (i, v) in upstream.iter().skip(1).enumerate() {
            let v = v.replacen("branch=z9hG4bK", &format!("branch=z9hG4bK{method}"), 1);
            m.headers.insert(1 + i, ("Via".into(), v));
        }
        m
    };
    let ack =
        with_upstream(dialog.request("ACK", dialog.invite_cseq, caller.addr(), &new_branch()));
    caller.send(&ack, agent.sip);
    // The answer took effect once acknowledged: audio flows to the address of our offer.
    assert!(
        rtp.wait_for(10, Duration::from_secs(5)) >= 10,
        "{file}: no RTP to the offered address"
    );
    let bye = with_upstream(dialog.request("BYE", dialog.cseq, caller.addr(), &new_branch()));
    let (resp, _) = caller
        .request(&bye, agent.sip, Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "{file}: the caller's BYE was not answered within 10 s\n{}",
                agent_log(&agent)
            )
        });
    assert_eq!(resp.status(), Some(200), "{file}: {}", resp.to_wire());
    assert_eq!(
        vias_sent_by(&resp),
        vias_sent_by(&bye),
        "{file}: the BYE's Vias were not echoed"
    );
    assert!(agent.wait_log("reason=\"caller_hangup\"", Duration::from_secs(3)));
}

#[test]
fn the_vendor_corpus_is_shaped_as_it_claims() {
    let me: SocketAddr = "127.0.0.1:45679".parse().unwrap();
    let agent: SocketAddr = "127.0.0.1:45678".parse().unwrap();
    let mut sizes = Vec::new();
    let mut files: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sip"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for f in &files {
        let wire = vendor_invite(f, me, 45680, agent);
        let m = SipMessage::parse(wire.as_bytes()).expect("parses");
        assert_eq!(m.method(), Some("INVITE"), "{f}");
        // Content-Length is exact.
        let cl: usize = m.header("Content-Length").unwrap().parse().unwrap();
        assert_eq!(cl, m.body.len(), "{f}");
        assert!(
            (1300..=8192).contains(&wire.len()),
            "{f}: {} bytes",
            wire.len()
        );
        let vias = m.header_values("Via").len();
        assert!((3..=16).contains(&vias), "{f}: {vias} Vias");
        assert!(m.header_values("Record-Route").len() >= 2, "{f}");
        assert!(m.header_values("Via")[0].contains(&me.to_string()), "{f}");
        assert!(
            uri_of(&m.header_values("Record-Route")[0]).contains(&me.to_string()),
            "{f}: the first Record-Route must be the test's own socket"
        );
        let media = sdp_media(&m.body);
        let audio = media.iter().find(|s| s.media == "audio").expect("audio");
        // Five codecs with telephone-event listed after them.
        assert!(audio.formats.len() >= 6, "{f}");
        let te = telephone_event_pt(audio)
            .expect("telephone-event")
            .to_string();
        assert_eq!(audio.formats.last(), Some(&te), "{f}");
        assert!(
            audio.attributes.iter().any(|a| a.starts_with("rtcp:")),
            "{f}"
        );
        assert!(
            audio.attributes.iter().any(|a| a.starts_with("ptime:")),
            "{f}"
        );
        assert!(media.iter().any(|s| s.media == "video"), "{f}");
        sizes.push((
            f.clone(),
            wire.len(),
            vias,
            m.header("Call-ID").unwrap().len(),
        ));
    }
    assert!(
        sizes.iter().any(|s| (3900..=4300).contains(&s.1)),
        "{sizes:?}"
    );
    assert!(sizes.iter().any(|s| s.1 >= 7500), "{sizes:?}");
    assert!(sizes.iter().any(|s| s.2 == 16), "{sizes:?}");
    assert!(sizes.iter().filter(|s| s.3 >= 80).count() >= 3, "{sizes:?}");
}

#[test]
fn a_cisco_cube_shaped_invite_is_answered() {
    vendor_invite_is_answered("cisco_cube.sip");
}

#[test]
fn an_audiocodes_mediant_shaped_invite_is_answered() {
    vendor_invite_is_answered("audiocodes_mediant.sip");
}

#[test]
fn a_ribbon_sbc_shaped_invite_is_answered() {
    vendor_invite_is_answered("ribbon_sbc.sip");
}

#[test]
fn an_avaya_sbce_shaped_invite_of_4_kb_is_answered() {
    vendor_invite_is_answered("avaya_sbce.sip");
}

#[test]
fn a_genesys_shaped_invite_of_8_kb_with_16_vias_is_answered() {
    vendor_invite_is_answered("genesys_sipserver.sip");
}

#[test]
fn baresips_rtcp_reports_show_in_ccedge_calls() {
    let Some(bin) = peer_binary("baresip", "baresip-core") else {
        return;
    };
    let dir = TempDir::new("interop-baresip-rtcp");
    let opts = AgentOptions {
        ivr_extra: "no_input_timeout_ms = 60000\nmax_retries = 9".into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let phone_dir = TempDir::new("interop-baresip-rtcp-phone");
    let mut phone = Baresip::start(&bin, phone_dir.path(), CALLER);
    phone.command("dial", &format!("sip:{DIALLED}@{}", agent.sip));
    assert!(
        phone
            .wait_event("CALL_ESTABLISHED", Duration::from_secs(10))
            .is_some(),
        "baresip's call was not answered: {:?}\n{}",
        phone.events(),
        agent_log(&agent)
    );
    // baresip reports every few seconds (RFC 3550 §6.2); it learns where from the answer's
    // a=rtcp (the node's RTP port), since it offered no rtcp-mux.
    let end = std::time::Instant::now() + Duration::from_secs(15);
    let mut row = serde_json::Value::Null;
    while std::time::Instant::now() < end {
        if let Some(r) = agent.calls_json().into_iter().next() {
            row = r;
            if row["rtcp_reports"].as_u64().unwrap_or(0) >= 1 && !row["rtt_ms"].is_null() {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    phone.command("hangup", "");
    assert!(
        row["rtcp_reports"].as_u64().unwrap_or(0) >= 1,
        "no RTCP from baresip read: {row}\n{}",
        agent_log(&agent)
    );
    // Loopback: nothing lost, a round trip of a few milliseconds at most.
    assert_eq!(row["peer_lost"], 0, "{row}");
    assert!(row["rtt_ms"].as_u64().is_some_and(|ms| ms < 100), "{row}");
}
