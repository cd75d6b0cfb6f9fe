//! Benchmarks of the CRM path against the real agent binary and a real Mosquitto, each printing
//! one JSON line. Ignored: `bench/crm.sh` runs them in release mode (see docs/BENCHMARKS.md).
//!
//! - `bench_announcement_takes_effect`: a retained announcement is published; the clock stops
//!   when the agent's engine (polled on the control socket every 2 ms) selects that version,
//!   i.e. when the next call would play it. A final call checks the last version is heard.
//! - `bench_event_to_crm`: calls are placed and hung up; each CallEvent's `at` (the agent's
//!   wall clock when it happened) is compared with when the CRM stand-in received it.
//! - `bench_start_to_accepting_calls`: the agent is started on a fresh state directory until
//!   it answers SIP (OPTIONS), repeatedly.
#![allow(clippy::disallowed_methods)] // benchmarks time real processes

use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime};

use ccedge_tests::broker::{
    have_mosquitto, longest_tone_run, pcmu_frames, sha256_hex, tone_wav, Crm, Mosquitto,
};
use ccedge_tests::{have_sipp, sipp, Agent, AgentOptions, CallGateway, RtpSink, TempDir};
use edge::control::protocol::{AnnouncementView, Request};
use shared::time::UnixMillis;

const P: &str = "ccedge/v1";
const NODE: &str = "ccedge/v1/nodes/phl/test-node";

fn n_from_env(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// p50, p99, max of `v` (sorted here).
fn pct(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    serde_json::json!({"samples": v.len(), "p50": at(0.5), "p99": at(0.99), "max": v[v.len() - 1]})
}

fn options(broker: &Mosquitto) -> AgentOptions {
    AgentOptions {
        mqtt_url: broker.url(),
        extra: "[announcements]\nmax_audio_bytes = 200000\n".into(),
        ..AgentOptions::default()
    }
}

fn skip() -> bool {
    if !have_mosquitto() {
        eprintln!("mosquitto not installed: skipped");
        return true;
    }
    false
}

#[test]
#[ignore = "benchmark: bench/crm.sh"]
fn bench_announcement_takes_effect() {
    if skip() || !have_sipp() {
        return;
    }
    let rounds = n_from_env("CCEDGE_BENCH_ROUNDS", 50);
    let dir = TempDir::new("bench-ann");
    let broker = Mosquitto::start(dir.path());
    let crm = Crm::connect(broker.port, "crm-bench-ann", &[&format!("{NODE}/status")]);
    let agent = Agent::start(dir.path(), &options(&broker));
    let socket = agent.control_socket();
    let tones = [
        (1000.0, tone_wav(1000.0, 2.0, 0.5)),
        (600.0, tone_wav(600.0, 2.0, 0.5)),
    ];
    for (_, wav) in &tones {
        crm.publish(&format!("{P}/audio/{}", sha256_hex(wav)), wav, true);
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut took = Vec::new();
    for k in 1..=rounds {
        let wav = &tones[k % 2].1;
        let doc = format!(
            r#"{{"id":"outage-phl","version":{k},"priority":10,"audio_sha256":"{}","offer_callback":false}}"#,
            sha256_hex(wav)
        );
        let t0 = Instant::now();
        crm.publish(
            &format!("{P}/announcements/outage-phl"),
            doc.as_bytes(),
            true,
        );
        loop {
            let rows: Vec<AnnouncementView> =
                edge::control::client::request_as(&socket, &Request::Announcements)
                    .unwrap_or_default();
            if rows
                .iter()
                .any(|r| r.id == "outage-phl" && r.version as usize == k && r.state == "active")
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "version {k} never active"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        took.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next caller hears the last version.
    let sink = RtpSink::new();
    let run = sipp(
        "listen.xml",
        agent.sip,
        &[("rtpport", sink.port().to_string())],
        &["-d", "2000"],
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    let frames = pcmu_frames(&sink.packets());
    let (last_freq, other_freq) = (tones[rounds % 2].0, tones[(rounds + 1) % 2].0);
    assert!(
        longest_tone_run(&frames, last_freq) >= 25,
        "the last version was not heard"
    );
    assert!(longest_tone_run(&frames, other_freq) < 5);
    println!(
        "{}",
        serde_json::json!({"bench": "announcement_takes_effect", "publish_to_selected_ms": pct(took)})
    );
}

#[test]
#[ignore = "benchmark: bench/crm.sh"]
fn bench_event_to_crm() {
    if skip() {
        return;
    }
    let calls = n_from_env("CCEDGE_BENCH_CALLS", 200);
    let dir = TempDir::new("bench-ev");
    let broker = Mosquitto::start(dir.path());
    let crm = Crm::connect(broker.port, "crm-bench-ev", &[&format!("{NODE}/events")]);
    // Callers who press nothing are not said goodbye to while the bench places the rest.
    let opts = AgentOptions {
        ivr_extra: "no_input_timeout_ms = 60000\nmax_retries = 9".into(),
        sip_extra: "rate_limit_per_source = 100000".into(),
        ..options(&broker)
    };
    let agent = Agent::start(dir.path(), &opts);
    assert!(agent.wait_log("connected to the broker", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(500));
    let sink = RtpSink::new();
    let mut gw = CallGateway::new();
    // In waves of 20 calls: a contact centre's burst, not one huge spike.
    let mut answered = 0;
    for wave in 0..calls.div_ceil(20) {
        for i in 0..20 {
            let n = (wave * 20 + i) as u64 + 1;
            gw.place(agent.sip, n, &format!("1215555{n:04}"), sink.port());
        }
        answered = gw
            .wait_answered(agent.sip, (wave + 1) * 20, Duration::from_secs(10))
            .len();
        gw.pump(agent.sip, Duration::from_millis(300));
    }
    assert_eq!(
        answered,
        calls,
        "every call answered:\n{}",
        agent.log().join("\n")
    );
    gw.hang_up_all(agent.sip);
    gw.pump(agent.sip, Duration::from_secs(1));
    let all_ended = crm.wait(Duration::from_secs(20), |msgs| {
        msgs.iter()
            .filter(|m| m.json()["type"] == "call.ended")
            .count()
            >= calls
    });
    assert!(
        all_ended,
        "every call.ended reached the CRM:\n{}",
        agent.log().join("\n")
    );
    let msgs = crm.on("/events");
    let mut lat = Vec::new();
    for m in &msgs {
        let v = m.json();
        let at = v["at"]
            .as_str()
            .and_then(|s| UnixMillis::parse_rfc3339(s).ok());
        let got = m
            .received
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        if let Some(at) = at {
            lat.push((got - at.0) as f64);
        }
    }
    let ended = msgs
        .iter()
        .filter(|m| m.json()["type"] == "call.ended")
        .count();
    assert_eq!(ended, calls, "every call.ended reached the CRM");
    println!(
        "{}",
        serde_json::json!({
            "bench": "event_to_crm",
            "calls": calls,
            "events": msgs.len(),
            "event_at_to_crm_ms": pct(lat),
            "note": "1 ms resolution: `at` is in milliseconds",
        })
    );
}

#[test]
#[ignore = "benchmark: bench/crm.sh"]
fn bench_start_to_accepting_calls() {
    let rounds = n_from_env("CCEDGE_BENCH_STARTS", 20);
    let probe = UdpSocket::bind("127.0.0.1:0").expect("bind");
    probe
        .set_read_timeout(Some(Duration::from_millis(2)))
        .expect("timeout");
    let local = probe.local_addr().expect("addr");
    let mut took = Vec::new();
    for r in 0..rounds {
        let dir = TempDir::new("bench-start");
        let t0 = Instant::now();
        let agent = Agent::start(dir.path(), &AgentOptions::default());
        // The harness returns once the log names the SIP port; the clock stops at the first
        // answered OPTIONS.
        let mut buf = [0u8; 4096];
        loop {
            let options = format!(
                "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-bench-{r}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=b{r}\r\nTo: <sip:{sip}>\r\n\
                 Call-ID: bench-start-{r}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                sip = agent.sip
            );
            probe.send_to(options.as_bytes(), agent.sip).expect("send");
            if let Ok((n, _)) = probe.recv_from(&mut buf) {
                if buf[..n].starts_with(b"SIP/2.0 200") {
                    break;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "never answered OPTIONS"
            );
        }
        took.push(t0.elapsed().as_secs_f64() * 1000.0);
        drop(agent);
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "start_to_accepting_calls",
            "spawn_to_first_200_ok_ms": pct(took),
        })
    );
}
