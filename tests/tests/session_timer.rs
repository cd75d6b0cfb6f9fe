//! RFC 4028 session timers against the real agent over raw UDP: a gateway that requires
//! timers is answered with them, one UPDATE refresh is answered and moves the expiry, and when
//! the refreshes stop the node ends the call with BYE before the session expires, reporting
//! `session_expired`. Takes about 65 s (a 90 s session, the shortest RFC 4028 allows).
#![allow(clippy::disallowed_methods)] // the test times real sockets

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ccedge_tests::rawsip::{header, recv_udp_until as recv_until};
use ccedge_tests::{Agent, AgentOptions, TempDir};

const CALL_ID: &str = "st-4028-9b1c2d3e@127.0.0.1";
const FROM_TAG: &str = "gw-st-77";

fn invite(agent: SocketAddr, gw: SocketAddr) -> String {
    let sdp = "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 41900 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
               a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n";
    format!(
        "INVITE sip:+18005550100@{agent} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {gw};branch=z9hG4bK-st-invite;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+12155550123@127.0.0.1>;tag={FROM_TAG}\r\n\
         To: <sip:+18005550100@127.0.0.1>\r\n\
         Call-ID: {CALL_ID}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:gw@{gw}>\r\n\
         Supported: timer\r\n\
         Require: timer\r\n\
         Session-Expires: 90;refresher=uac\r\n\
         Min-SE: 90\r\n\
         Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// A request of the gateway inside the dialog (no body).
fn in_dialog(
    method: &str,
    cseq: u32,
    agent: SocketAddr,
    gw: SocketAddr,
    tag: &str,
    extra: &str,
) -> String {
    format!(
        "{method} sip:ccedge@{agent} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {gw};branch=z9hG4bK-st-{method}-{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+12155550123@127.0.0.1>;tag={FROM_TAG}\r\n\
         To: <sip:+18005550100@127.0.0.1>;tag={tag}\r\n\
         Call-ID: {CALL_ID}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:gw@{gw}>\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

/// The 200 OK for a request the node sent, echoing its Via, From, To, Call-ID and CSeq.
fn ok_for(req: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if let Some(v) = header(req, name) {
            out += &format!("{name}: {v}\r\n");
        }
    }
    out + "Content-Length: 0\r\n\r\n"
}

#[test]
fn required_session_timer_is_answered_refreshed_and_ends_the_call_when_refreshes_stop() {
    let dir = TempDir::new("session-timer");
    let opts = AgentOptions {
        // Keep the IVR waiting for a key well past the session interval.
        ivr_extra: "no_input_timeout_ms = 60000\nmax_retries = 9".into(),
        // This gateway sends no RTP; the media timeout (which counts from the answer) must
        // not end the call before the session timer does.
        rtp_extra: "media_timeout_s = 0".into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let gw = UdpSocket::bind("127.0.0.1:0").expect("bind");
    gw.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let gw_addr = gw.local_addr().expect("addr");

    // The gateway requires timers: the node answers 200 (not 420) and settles the timer.
    gw.send_to(invite(agent.sip, gw_addr).as_bytes(), agent.sip)
        .expect("send");
    let ok = recv_until(&gw, Duration::from_secs(10), |t| {
        t.starts_with("SIP/2.0 ") && !t.starts_with("SIP/2.0 1")
    })
    .expect("a final answer");
    let answered = Instant::now();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert_eq!(
        header(&ok, "Session-Expires"),
        Some("90;refresher=uac"),
        "{ok}"
    );
    assert_eq!(header(&ok, "Require"), Some("timer"), "{ok}");
    assert!(
        header(&ok, "Allow").is_some_and(|a| a.contains("UPDATE")),
        "{ok}"
    );
    let tag = header(&ok, "To")
        .and_then(|t| t.split(";tag=").nth(1))
        .expect("To tag")
        .to_owned();
    gw.send_to(
        in_dialog("ACK", 1, agent.sip, gw_addr, &tag, "").as_bytes(),
        agent.sip,
    )
    .expect("ack");

    // One refresh by UPDATE, 3 s in: answered 200 with the timer; the expiry moves from
    // 60 s to 63 s after the answer.
    std::thread::sleep(Duration::from_secs(3));
    let refresh = "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n";
    gw.send_to(
        in_dialog("UPDATE", 2, agent.sip, gw_addr, &tag, refresh).as_bytes(),
        agent.sip,
    )
    .expect("update");
    let ok = recv_until(&gw, Duration::from_secs(5), |t| {
        t.starts_with("SIP/2.0 ") && t.contains(" UPDATE\r\n")
    })
    .expect("an answer to the UPDATE");
    let refreshed = Instant::now();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert_eq!(
        header(&ok, "Session-Expires"),
        Some("90;refresher=uac"),
        "{ok}"
    );
    assert_eq!(header(&ok, "Require"), Some("timer"), "{ok}");

    // No more refreshes: the node sends BYE at 90 - min(32, 90 / 3) = 60 s after the refresh,
    // before the session expires.
    let bye = recv_until(&gw, Duration::from_secs(88), |t| t.starts_with("BYE "))
        .expect("the node's BYE before the session expires");
    let since_refresh = refreshed.elapsed();
    let since_answer = answered.elapsed();
    assert!(
        since_refresh < Duration::from_secs(90),
        "BYE {since_refresh:?} after the refresh"
    );
    assert!(
        since_refresh >= Duration::from_secs(58),
        "BYE only {since_refresh:?} after the refresh"
    );
    assert!(
        since_answer > Duration::from_millis(61_500),
        "the refresh did not move the expiry: BYE {since_answer:?} after the answer"
    );
    gw.send_to(ok_for(&bye).as_bytes(), agent.sip)
        .expect("200 to the BYE");

    assert!(
        agent.wait_log("session_expired", Duration::from_secs(5)),
        "{}",
        agent.log().join("\n")
    );
    let ended: Vec<String> = agent
        .log()
        .into_iter()
        .filter(|l| l.contains("call.ended"))
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(
        ended[0].contains("reason=\"session_expired\"") || ended[0].contains("session_expired"),
        "{}",
        ended[0]
    );
}
