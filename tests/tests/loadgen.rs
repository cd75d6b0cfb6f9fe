//! `firmware-sim calls`, the load generator, against the real agent binary: real SIP and RTP
//! on loopback, the agent's real SQLite store.

use std::collections::HashSet;
use std::net::UdpSocket;
use std::process::ExitCode;
use std::time::Duration;

use ccedge_tests::{Agent, AgentOptions, TempDir};
use firmware_sim::calls::{self, Args, Config, Script};

fn agent(dir: &TempDir, ivr_extra: &str) -> Agent {
    let opts = AgentOptions {
        // The load generator sends INVITE, ACK and BYE per call from one address.
        sip_extra: "rate_limit_per_source = 100000".into(),
        ivr_extra: ivr_extra.into(),
        ..AgentOptions::default()
    };
    Agent::start(dir.path(), &opts)
}

fn config(target: std::net::SocketAddr, calls: u32, script: Script) -> Config {
    Config {
        target,
        calls,
        concurrency: 10,
        script,
        hold: Duration::from_secs(2),
        rate: 100.0,
        invite_timeout: Duration::from_secs(10),
        keepalive: None,
        rtp_back: false,
        expect_refusals: false,
        series: None,
    }
}

#[test]
fn twenty_callers_in_tens_are_answered_hear_lossless_rtp_and_book_callbacks() {
    let dir = TempDir::new("loadgen-cb");
    let agent = agent(&dir, "");
    let s = calls::run(&config(agent.sip, 20, Script::Callback)).expect("run");
    let log = || agent.log().join("\n");
    assert!(s.ok, "{s:#?}\n{}", log());
    assert_eq!((s.answered, s.failed), (20, 0), "{s:#?}");
    assert_eq!(s.peak_concurrent, 10);
    assert_eq!(s.keys_sent, 40, "two keys per caller");
    assert_eq!(s.rtp.calls_without_rtp, 0);
    assert_eq!(s.rtp.lost, 0, "{s:#?}");
    assert_eq!(s.rtp.expected, s.rtp.packets);
    // Two seconds of 20 ms packets per call, give or take the edges.
    assert!(s.rtp.packets >= 20 * 90, "{} packets", s.rtp.packets);
    assert_eq!(s.setup_ms.samples, 20);
    assert!(s.setup_ms.p50 > 0.0 && s.setup_ms.p99 >= s.setup_ms.p50);
    assert!(s.jitter_ms.samples >= 20 * 80);
    assert!(s.jitter_ms.max >= s.jitter_ms.p99 && s.jitter_ms.p99 >= s.jitter_ms.p50);
    assert_eq!(calls::render(&s).lines().last(), Some("OK"));

    // Every caller booked, each with its own number: in the log and durably on disk.
    let booked = agent
        .log()
        .iter()
        .filter(|l| l.contains("callback booked (durable)"))
        .count();
    assert_eq!(booked, 20, "{}", log());
    let store = edge::store::Store::open(dir.path()).expect("open store");
    let cbs = store.callbacks().expect("callbacks");
    let numbers: HashSet<_> = cbs.iter().map(|c| c.callback_number.to_string()).collect();
    assert_eq!(numbers.len(), 20, "{cbs:?}");
    assert!(numbers
        .iter()
        .all(|n| n.starts_with("+1215") && n.len() == 12));
}

#[test]
fn listeners_json_document_has_the_documented_fields() {
    let dir = TempDir::new("loadgen-json");
    let agent = agent(&dir, "");
    let mut cfg = config(agent.sip, 4, Script::Listen);
    cfg.hold = Duration::from_secs(1);
    let s = calls::run(&cfg).expect("run");
    assert!(s.ok, "{s:#?}");
    assert_eq!((s.keys_sent, s.ended_by_agent), (0, 0));
    let doc = calls::json(&s).expect("json");
    // Stable field names: top level, then the nested groups.
    for key in [
        "target",
        "script",
        "calls",
        "concurrency",
        "hold_s",
        "rate_cps",
        "answered",
        "failed",
        "failures",
        "ended_by_agent",
        "transfers",
        "keys_sent",
        "bye_timeouts",
        "peak_concurrent",
        "duration_s",
        "setup_ms",
        "rtp",
        "jitter_ms",
        "ok",
        "samples",
        "p50",
        "p99",
        "max",
        "packets",
        "expected",
        "lost",
        "loss_ratio",
        "calls_with_loss",
        "calls_without_rtp",
        "reordered",
        "duplicates",
        "stray_packets",
        "sockets",
    ] {
        assert!(doc.contains(&format!("\"{key}\": ")), "no {key} in {doc}");
    }
    assert!(doc.contains("\"script\": \"listen\""), "{doc}");
    assert!(doc.contains("\"answered\": 4,"), "{doc}");
    assert!(doc.contains("\"ok\": true"), "{doc}");
}

#[test]
fn transfer_callers_are_referred_and_the_agent_hangs_up_after_our_notify() {
    let dir = TempDir::new("loadgen-xfer");
    let agent = agent(&dir, "transfer_uri = \"sip:desk@127.0.0.1:5999\"");
    let s = calls::run(&config(agent.sip, 5, Script::Transfer)).expect("run");
    assert!(s.ok, "{s:#?}\n{}", agent.log().join("\n"));
    assert_eq!(s.transfers, 5, "{s:#?}");
    assert_eq!(s.ended_by_agent, 5, "{s:#?}");
}

#[test]
fn a_target_that_never_answers_fails_the_run_with_timeouts_and_exit_1() {
    // A port that is bound (so nothing else answers there) but never read.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let target = silent.local_addr().expect("addr");
    let mut cfg = config(target, 3, Script::Listen);
    cfg.invite_timeout = Duration::from_secs(1);
    let s = calls::run(&cfg).expect("run");
    assert!(!s.ok);
    assert_eq!((s.answered, s.failed), (0, 3));
    assert_eq!(s.failures.get("timeout"), Some(&3), "{s:#?}");
    assert_eq!(calls::render(&s).lines().last(), Some("FAILED"));
    assert_eq!(s.exit_code(), ExitCode::FAILURE);

    // The command line says so too, and refuses a target it cannot resolve with exit 2.
    let args = Args {
        target: target.to_string(),
        calls: 1,
        concurrency: 1,
        script: Script::Listen,
        hold: 1.0,
        rate: 10.0,
        timeout: 0.5,
        keepalive: 0.0,
        rtp_back: false,
        expect_refusals: false,
        series_ms: 0,
        json: true,
    };
    assert_eq!(calls::main(&args), ExitCode::FAILURE);
    let bad = Args {
        target: "no-such-host.invalid:5060".into(),
        ..args
    };
    assert_eq!(calls::main(&bad), ExitCode::from(2));
}

#[test]
fn callback_callers_sending_rtp_back_book_with_keys_in_their_stream() {
    let dir = TempDir::new("loadgen-back");
    let agent = agent(&dir, "");
    let mut cfg = config(agent.sip, 10, Script::Callback);
    cfg.rtp_back = true;
    cfg.series = Some(Duration::from_millis(500));
    let s = calls::run(&cfg).expect("run");
    let log = || agent.log().join("\n");
    assert!(s.ok, "{s:#?}\n{}", log());
    assert_eq!(
        s.keys_sent, 20,
        "two keys per caller, in the back-RTP stream"
    );
    assert!(s.rtp_back.enabled);
    assert!(s.rtp_back.packets >= 10 * 20, "{:?}", s.rtp_back);
    assert!(
        s.rtp_back.sendmmsg_calls < s.rtp_back.packets,
        "{:?}",
        s.rtp_back
    );
    let booked = agent
        .log()
        .iter()
        .filter(|l| l.contains("callback booked (durable)"))
        .count();
    assert_eq!(booked, 10, "{}", log());
    // On Linux the kernel stamps every datagram.
    assert_eq!(s.timestamps, "kernel", "{s:#?}");
    let series = s.pacing_series.expect("series");
    assert_eq!(series.window_ms, 500);
    let samples: u64 = series.windows.iter().map(|w| w.samples).sum();
    assert_eq!(
        samples, s.jitter_ms.samples,
        "every deviation is in one window"
    );
}

/// A SIP "agent" that answers every INVITE with 503 (Retry-After: 7 when `retry_after`).
fn refusing_agent(retry_after: bool) -> (std::net::SocketAddr, std::thread::JoinHandle<u32>) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let addr = sock.local_addr().expect("addr");
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut refused = 0;
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !text.starts_with("INVITE ") {
                continue;
            }
            let mut out = String::from("SIP/2.0 503 Service Unavailable\r\n");
            for line in text.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
                let name = line.split(':').next().unwrap_or("");
                if ["Via", "From", "Call-ID", "CSeq"].contains(&name) {
                    out.push_str(line);
                    out.push_str("\r\n");
                } else if name == "To" {
                    out.push_str(line);
                    out.push_str(";tag=busy\r\n");
                }
            }
            if retry_after {
                out.push_str("Retry-After: 7\r\n");
            }
            out.push_str("Content-Length: 0\r\n\r\n");
            sock.send_to(out.as_bytes(), from).expect("send");
            refused += 1;
        }
        refused
    });
    (addr, t)
}

#[test]
fn refusals_with_503_are_counted_apart_and_only_fail_the_run_when_unexpected() {
    let (target, agent) = refusing_agent(true);
    let mut cfg = config(target, 6, Script::Listen);
    cfg.expect_refusals = true;
    let s = calls::run(&cfg).expect("run");
    assert!(s.ok, "{s:#?}");
    assert_eq!((s.answered, s.failed), (0, 0), "{s:#?}");
    assert!(s.failures.is_empty(), "{s:#?}");
    assert_eq!(s.refused_503.count, 6);
    assert_eq!(s.refused_503.with_retry_after, 6);
    assert_eq!(s.refused_503.retry_after_max_s, Some(7));
    assert_eq!(s.refused_503.latency_ms.samples, 6);
    assert!(agent.join().expect("agent") >= 6);

    let (target, agent) = refusing_agent(false);
    let s = calls::run(&config(target, 3, Script::Listen)).expect("run");
    assert!(!s.ok, "503s not expected: {s:#?}");
    assert_eq!(s.refused_503.count, 3);
    assert_eq!(s.refused_503.with_retry_after, 0);
    assert_eq!(s.exit_code(), ExitCode::FAILURE);
    assert_eq!(calls::render(&s).lines().last(), Some("FAILED"));
    agent.join().expect("agent");
}
