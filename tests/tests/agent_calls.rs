//! `ccedge agent` answering real calls: sipp as the gateway, real UDP for RTP, the real
//! binary and its real SQLite store.

#![allow(clippy::disallowed_methods)] // the tests time real sockets

use std::time::{Duration, Instant};

use ccedge_tests::{
    have_sipp, level_dbfs, pacing_deviation_ms, sipp, Agent, AgentOptions, RtpSink, TempDir,
};
use shared::dtmf::Digit;
use shared::g711::Law;

fn skip_without_sipp() -> bool {
    if have_sipp() {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "sipp is required in CI (apt-get install sip-tester)"
    );
    eprintln!("sipp not installed: skipping");
    true
}

#[test]
fn a_call_hears_the_greeting_as_paced_pcmu() {
    if skip_without_sipp() {
        return;
    }
    let dir = TempDir::new("listen");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let sink = RtpSink::new();
    let run = sipp(
        "listen.xml",
        agent.sip,
        &[("rtpport", sink.port().to_string())],
        &["-d", "3000"],
    );
    assert_eq!(run.code, Some(0), "sipp failed:\n{}", run.output);
    let packets = sink.packets();
    // About 3 s of audio at 50 packets/s.
    assert!(packets.len() >= 120, "only {} RTP packets", packets.len());
    assert!(packets.iter().all(|p| p.pt == 0 && p.payload.len() == 160));
    // Contiguous sequence numbers and timestamps advancing 160 per packet.
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160));
    }
    assert!(packets[0].marker, "first packet starts a talk-spurt");
    let level = level_dbfs(&packets, Law::Ulaw);
    assert!(level > -40.0, "the greeting is audible: {level:.1} dBFS");
    let dev = pacing_deviation_ms(&packets);
    let p50 = dev[dev.len() / 2];
    assert!(p50 < 5.0, "pacing median deviation {p50:.2} ms");
}

#[test]
fn pcma_only_offer_is_answered_in_pcma() {
    if skip_without_sipp() {
        return;
    }
    let dir = TempDir::new("pcma");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let sink = RtpSink::new();
    let run = sipp(
        "listen_pcma.xml",
        agent.sip,
        &[("rtpport", sink.port().to_string())],
        &["-d", "1500"],
    );
    assert_eq!(run.code, Some(0), "sipp failed:\n{}", run.output);
    let packets = sink.packets();
    assert!(packets.len() >= 40, "only {} packets", packets.len());
    assert!(packets.iter().all(|p| p.pt == 8));
    assert!(level_dbfs(&packets, Law::Alaw) > -40.0);
}

#[test]
fn no_common_codec_is_refused_with_488() {
    if skip_without_sipp() {
        return;
    }
    let dir = TempDir::new("488");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let run = sipp(
        "no_codec.xml",
        agent.sip,
        &[("rtpport", "40000".into())],
        &[],
    );
    assert_eq!(run.code, Some(0), "sipp expected 488:\n{}", run.output);
}

#[test]
fn cancel_while_ringing_gets_487() {
    if skip_without_sipp() {
        return;
    }
    let dir = TempDir::new("cancel");
    let opts = AgentOptions {
        sip_extra: "answer_delay_ms = 3000".into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let run = sipp("cancel.xml", agent.sip, &[("rtpport", "40000".into())], &[]);
    assert_eq!(
        run.code,
        Some(0),
        "sipp expected 200 + 487:\n{}",
        run.output
    );
    assert!(
        agent.wait_log("reason=\"abandoned\"", Duration::from_secs(5))
            || agent.wait_log("abandoned", Duration::from_secs(1))
    );
}

#[test]
fn caller_bye_stops_the_rtp_at_once() {
    if skip_without_sipp() {
        return;
    }
    let dir = TempDir::new("bye");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let sink = RtpSink::new();
    let started = Instant::now();
    let run = sipp(
        "listen.xml",
        agent.sip,
        &[("rtpport", sink.port().to_string())],
        &["-d", "1000"],
    );
    // sipp has sent BYE and received its 200 when it exits.
    let bye_done = Instant::now();
    assert_eq!(run.code, Some(0), "sipp failed:\n{}", run.output);
    std::thread::sleep(Duration::from_millis(300));
    let packets = sink.packets();
    assert!(!packets.is_empty());
    let last = packets.last().map(|p| p.at).unwrap_or(started);
    let after = last.saturating_duration_since(bye_done);
    assert!(
        after <= Duration::from_millis(40),
        "RTP went on {after:?} after the BYE was answered"
    );
}

#[test]
fn barge_in_one_then_one_books_a_callback_and_the_agent_hangs_up() {
    if skip_without_sipp() {
        return;
    }
    let dir = TempDir::new("book");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let sink = RtpSink::new();
    let (target, port) = (agent.sip, sink.port());
    let sipp_thread = std::thread::spawn(move || {
        sipp(
            "book.xml",
            target,
            &[
                ("rtpport", port.to_string()),
                ("dtmf1", "/usr/share/sip-tester/dtmf_2833_1.pcap".into()),
            ],
            &[],
        )
    });
    // The greeting reaches us first; that tells us the agent's RTP port.
    assert!(
        sink.wait_for(5, Duration::from_secs(5)) >= 5,
        "no greeting RTP"
    );
    let agent_rtp = sink.packets()[0].from;
    // sipp's captured "1" barges in; then we confirm with our own "1" once the capture's
    // stream has been silent long enough for the agent to take our stream (relock 500 ms).
    assert!(
        agent.wait_log("digit=D1", Duration::from_secs(5)),
        "first key not seen"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let (mut seq, ts) = (100u16, 123_456u32);
    sink.send_digit(agent_rtp, Digit::D1, 101, ts, &mut seq);
    let run = sipp_thread.join().expect("sipp thread");
    assert_eq!(
        run.code,
        Some(0),
        "sipp expected the agent's BYE:\n{}",
        run.output
    );
    assert!(
        agent.wait_log("callback booked (durable)", Duration::from_secs(2)),
        "{}",
        agent.log().join("\n")
    );
    // It is on disk.
    let store = edge::store::Store::open(dir.path()).expect("open store");
    let cbs = store.callbacks().expect("callbacks");
    assert_eq!(cbs.len(), 1, "{cbs:?}");
    assert_eq!(cbs[0].callback_number.to_string(), "+12155550123");
    assert_eq!(
        cbs[0].dialled.as_ref().map(ToString::to_string),
        Some("+18005550100".to_owned())
    );
}

#[test]
fn rfc4733_keys_from_our_own_rtp_reach_the_ivr() {
    if skip_without_sipp() {
        return;
    }
    let dir = TempDir::new("keys");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let sink = RtpSink::new();
    let target = agent.sip;
    let port = sink.port();
    let sipp_thread = std::thread::spawn(move || {
        sipp(
            "listen.xml",
            target,
            &[("rtpport", port.to_string())],
            &["-d", "4000"],
        )
    });
    assert!(
        sink.wait_for(10, Duration::from_secs(5)) >= 10,
        "no RTP from the agent"
    );
    let agent_rtp = sink.packets()[0].from;
    let (mut seq, mut ts) = (1u16, 8000u32);
    sink.send_silence(agent_rtp, 0, 5, &mut seq, &mut ts);
    sink.send_digit(agent_rtp, Digit::D2, 101, ts, &mut seq);
    let run = sipp_thread.join().expect("sipp thread");
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert!(
        agent.wait_log("digit=D2", Duration::from_secs(2)),
        "{}",
        agent.log().join("\n")
    );
}
