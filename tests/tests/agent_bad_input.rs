//! Bad input from the network: a clear answer or silence, no dialog left behind, and the next
//! good call still works.
#![allow(clippy::disallowed_methods)] // the tests time real sockets

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use ccedge_tests::{Agent, AgentOptions, TempDir};
use firmware_sim::gateway::uac::{Offer, UacCall, UacState};

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    s
}

fn recv_text(s: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 8192];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Places one good call and returns whether it was answered.
fn good_call(agent: &Agent) -> bool {
    let s = socket();
    let local = s.local_addr().expect("addr").to_string();
    let mut c = UacCall::new(
        99,
        &local,
        &agent.sip.to_string(),
        40_000,
        Some("12155550123"),
        "18005550100",
        Offer::Standard,
    );
    s.send_to(&c.invite(), agent.sip).expect("send");
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && c.state == UacState::Calling {
        if let Some(t) = recv_text(&s) {
            for reply in c.on_datagram(t.as_bytes()) {
                let _ = s.send_to(&reply, agent.sip);
            }
        }
    }
    c.state == UacState::Confirmed
}

const BAD_REQUEST: &str = "INVITE sip:+18005550100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKbad1;rport\r\nFrom: <sip:a@127.0.0.1>;tag=x\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: bad-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n";

#[test]
fn malformed_sip_gets_400_junk_gets_silence_and_calls_still_work() {
    let dir = TempDir::new("badsip");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let s = socket();
    // Not SIP at all, a truncated request, 10 kB of junk: dropped without an answer.
    for junk in [
        b"\x00\x01\x02garbage".to_vec(),
        b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP".to_vec(),
        vec![b'A'; 10_000],
    ] {
        s.send_to(&junk, agent.sip).expect("send");
        if let Some(t) = recv_text(&s) {
            assert!(
                t.starts_with("SIP/2.0 4") || t.starts_with("SIP/2.0 5"),
                "{t}"
            );
        }
    }
    // CSeq method differs from the request method: a 400 that echoes the Call-ID.
    s.send_to(BAD_REQUEST.as_bytes(), agent.sip).expect("send");
    let t = recv_text(&s).expect("an answer to a readable bad request");
    assert!(t.starts_with("SIP/2.0 400"), "{t}");
    assert!(t.contains("Call-ID: bad-1"), "{t}");
    // REGISTER is refused, an unknown method is not implemented, BYE for no dialog is 481.
    for (method, status) in [("REGISTER", "405"), ("FROB", "501"), ("BYE", "481")] {
        let msg = BAD_REQUEST
            .replace("INVITE sip", &format!("{method} sip"))
            .replace("CSeq: 1 BYE", &format!("CSeq: 1 {method}"));
        s.send_to(msg.as_bytes(), agent.sip).expect("send");
        let t = recv_text(&s).expect("an answer");
        assert!(t.starts_with(&format!("SIP/2.0 {status}")), "{method}: {t}");
    }
    assert!(good_call(&agent), "a good call after the bad input");
}

#[test]
fn sources_outside_sip_allow_get_nothing_or_403() {
    for (action, expect_403) in [("silence", false), ("403", true)] {
        let dir = TempDir::new("deny");
        let opts = AgentOptions {
            // The harness allows 127.0.0.0/8 in `[sip]`; this agent allows only 10/8.
            sip_extra: format!("deny_action = \"{action}\""),
            ..AgentOptions::default()
        };
        let agent = Agent::start_with_allow(dir.path(), &opts, "10.0.0.0/8");
        let s = socket();
        let invite = BAD_REQUEST.replace("CSeq: 1 BYE", "CSeq: 1 INVITE");
        s.send_to(invite.as_bytes(), agent.sip).expect("send");
        let answer = recv_text(&s);
        if expect_403 {
            assert!(
                answer
                    .as_deref()
                    .is_some_and(|t| t.starts_with("SIP/2.0 403")),
                "{answer:?}"
            );
        } else {
            assert_eq!(answer, None);
        }
        assert!(!good_call(&agent), "no call from outside sip.allow");
    }
}

/// Places one good call and returns every message the agent sent for it.
fn call_messages(agent: &Agent) -> Vec<String> {
    let s = socket();
    let local = s.local_addr().expect("addr").to_string();
    let mut c = UacCall::new(
        98,
        &local,
        &agent.sip.to_string(),
        40_002,
        Some("12155550123"),
        "18005550100",
        Offer::Standard,
    );
    s.send_to(&c.invite(), agent.sip).expect("send");
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && c.state == UacState::Calling {
        if let Some(t) = recv_text(&s) {
            for reply in c.on_datagram(t.as_bytes()) {
                let _ = s.send_to(&reply, agent.sip);
            }
            got.push(t);
        }
    }
    assert_eq!(c.state, UacState::Confirmed, "{got:?}");
    got
}

/// The `Server` values of an OPTIONS answer (stateless), a 400 and a call's responses.
fn server_values(agent: &Agent) -> Vec<Option<String>> {
    let s = socket();
    let options = BAD_REQUEST
        .replace("INVITE sip", "OPTIONS sip")
        .replace("CSeq: 1 BYE", "CSeq: 1 OPTIONS");
    let mut answers = Vec::new();
    for msg in [options.as_str(), BAD_REQUEST] {
        s.send_to(msg.as_bytes(), agent.sip).expect("send");
        answers.push(recv_text(&s).expect("an answer"));
    }
    assert!(answers[0].starts_with("SIP/2.0 200"), "{}", answers[0]);
    assert!(answers[1].starts_with("SIP/2.0 400"), "{}", answers[1]);
    answers.extend(call_messages(agent));
    answers
        .iter()
        .map(|t| ccedge_tests::rawsip::header(t, "Server").map(str::to_owned))
        .collect()
}

#[test]
fn the_server_header_names_no_version_and_follows_sip_server_header() {
    let dir = TempDir::new("server-default");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let values = server_values(&agent);
    assert!(values.len() >= 3, "{values:?}");
    assert!(
        values.iter().all(|v| v.as_deref() == Some("ccedge")),
        "{values:?}"
    );
    drop(agent);

    let dir = TempDir::new("server-empty");
    let opts = AgentOptions {
        sip_extra: "server_header = \"\"".into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let values = server_values(&agent);
    assert!(values.iter().all(Option::is_none), "{values:?}");
}
