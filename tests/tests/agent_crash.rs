//! The agent killed with SIGKILL in the middle of a burst of callback bookings, then
//! restarted: every callback it confirmed as booked is on disk exactly once. And SIGTERM drains:
//! calls get a BYE and the agent exits 0.
#![allow(clippy::disallowed_methods)] // the tests time real processes

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ccedge_tests::{Agent, AgentOptions, RtpSink, TempDir};
use firmware_sim::gateway::uac::{call_id_of, Offer, UacCall, UacState};
use shared::dtmf::Digit;

/// A gateway placing `n` calls from one SIP socket; returns the calls once all are answered.
struct Gateway {
    sip: UdpSocket,
    calls: BTreeMap<String, UacCall>,
}

impl Gateway {
    fn new() -> Gateway {
        let sip = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sip.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        Gateway {
            sip,
            calls: BTreeMap::new(),
        }
    }

    /// Places `n` calls whose SDP offers `rtp_port`: a port the test holds bound, never one
    /// that may fall inside the agent's own RTP range (the agent would then send its greeting
    /// into another call's socket, that call would lock onto the agent's SSRC and ignore the
    /// test's key presses).
    fn place(&mut self, agent: SocketAddr, n: u64, rtp_port: u16) {
        let local = self.sip.local_addr().expect("addr").to_string();
        for i in 0..n {
            // Distinct callers: the queue de-duplicates one number within a day.
            let caller = format!("1215556{i:04}");
            let mut c = UacCall::new(
                i + 1,
                &local,
                &agent.to_string(),
                rtp_port,
                Some(&caller),
                "18005550100",
                Offer::Standard,
            );
            self.sip.send_to(&c.invite(), agent).expect("send INVITE");
            self.calls.insert(c.call_id.clone(), c);
        }
    }

    /// Reads and answers SIP for `d`.
    fn pump(&mut self, agent: SocketAddr, d: Duration) {
        let end = Instant::now() + d;
        let mut buf = [0u8; 8192];
        while Instant::now() < end {
            let Ok((n, _)) = self.sip.recv_from(&mut buf) else {
                continue;
            };
            let Some(id) = call_id_of(&buf[..n]).map(str::to_string) else {
                continue;
            };
            if let Some(c) = self.calls.get_mut(&id) {
                for reply in c.on_datagram(&buf[..n]) {
                    let _ = self.sip.send_to(&reply, agent);
                }
            }
        }
    }

    fn answered(&self) -> Vec<(String, u16)> {
        self.calls
            .values()
            .filter(|c| c.state == UacState::Confirmed)
            .filter_map(|c| c.answer.map(|(_, port)| (c.call_id.clone(), port)))
            .collect()
    }
}

fn booked_ids(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|l| l.contains("callback booked (durable)"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("callback="))
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn kill9_in_a_burst_of_bookings_loses_and_duplicates_nothing() {
    const CALLS: u64 = 24;
    let dir = TempDir::new("crash");
    let mut agent = Agent::start(dir.path(), &AgentOptions::default());
    let rtp = RtpSink::new();
    let mut gw = Gateway::new();
    gw.place(agent.sip, CALLS, rtp.port());
    let start = Instant::now();
    while gw.answered().len() < CALLS as usize && start.elapsed() < Duration::from_secs(15) {
        gw.pump(agent.sip, Duration::from_millis(100));
    }
    let answered = gw.answered();
    assert_eq!(answered.len(), CALLS as usize, "all calls answered");
    // "1" barges into every greeting …
    let mut seq = 1u16;
    for (i, (_, port)) in answered.iter().enumerate() {
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        rtp.send_digit(to, Digit::D1, 101, 1000 + i as u32 * 7, &mut seq);
    }
    gw.pump(agent.sip, Duration::from_millis(800));
    // … then "1" confirms, and somewhere in that burst the agent dies.
    let kill_after = 8 + (std::process::id() as usize % 8);
    for (i, (_, port)) in answered.iter().enumerate() {
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        rtp.send_digit(to, Digit::D1, 101, 500_000 + i as u32 * 7, &mut seq);
        if i == kill_after {
            agent.kill9();
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let confirmed = booked_ids(&agent.log());
    assert!(
        !confirmed.is_empty(),
        "some bookings completed before the kill:\n{}",
        agent.log().join("\n")
    );

    // Restart: the store holds every confirmed booking exactly once.
    let again = agent.restart();
    assert!(again.wait_log("callback queue restored", Duration::from_secs(5)));
    let store = edge::store::Store::open(dir.path()).expect("store");
    let rows = store.callbacks().expect("rows");
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no duplicate rows: {ids:?}");
    for id in &confirmed {
        assert!(
            unique.contains(id.as_str()),
            "booked {id} lost; on disk: {ids:?}"
        );
    }
    let numbers: BTreeSet<String> = rows.iter().map(|r| r.callback_number.to_string()).collect();
    assert_eq!(numbers.len(), rows.len(), "one callback per caller");
    assert!(rows.len() <= answered.len());
    // The restarted agent has them in its queue (its log says how many it restored).
    assert!(
        again
            .log()
            .iter()
            .any(|l| l.contains(&format!("restored={}", rows.len()))),
        "{}",
        again.log().join("\n")
    );
}

#[test]
fn sigterm_hangs_up_calls_and_exits_zero() {
    let dir = TempDir::new("term");
    let mut agent = Agent::start(dir.path(), &AgentOptions::default());
    let rtp = RtpSink::new();
    let mut gw = Gateway::new();
    gw.place(agent.sip, 2, rtp.port());
    let start = Instant::now();
    while gw.answered().len() < 2 && start.elapsed() < Duration::from_secs(10) {
        gw.pump(agent.sip, Duration::from_millis(100));
    }
    assert_eq!(gw.answered().len(), 2);
    let sip = agent.sip;
    let waiter = std::thread::spawn(move || {
        gw.pump(sip, Duration::from_secs(3));
        gw
    });
    std::thread::sleep(Duration::from_millis(200));
    let code = agent.terminate();
    let gw = waiter.join().expect("gateway");
    assert_eq!(code, Some(0), "{}", agent.log().join("\n"));
    assert!(
        gw.calls.values().all(|c| c.state == UacState::Terminated),
        "every caller got a BYE: {:?}",
        gw.calls.values().map(|c| c.state).collect::<Vec<_>>()
    );
}
