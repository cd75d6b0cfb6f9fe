//! A host on the gateway LAN that is not the call's media peer sprays RTP at a live call: it
//! must neither press keys for the caller nor receive the call's audio, and the real gateway's
//! media and keys must keep working. Loopback only: the gateway is 127.0.0.1 (the only
//! `sip.allow` source), the attacker 127.0.0.2.

#![allow(clippy::disallowed_methods)] // the tests time real sockets

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ccedge_tests::{Agent, AgentOptions, CallGateway, RtpSink, TempDir};
use shared::dtmf::Digit;
use shared::rtp::{PayloadType, RtpHeader, Ssrc, TelephoneEvent};

/// One RFC 4733 key press, as an attacker would send it (its own SSRC, end packets
/// repeated), to `to`.
fn spray_key(sock: &UdpSocket, to: SocketAddr, digit: Digit, seq: &mut u16, ts: u32) {
    for (end, dur) in [(false, 160u16), (false, 320), (true, 480), (true, 480)] {
        let h = RtpHeader {
            marker: !end && dur == 160,
            payload_type: PayloadType::new(101).expect("pt"),
            sequence: *seq,
            timestamp: ts,
            ssrc: Ssrc(0xBAD_0001),
        };
        *seq = seq.wrapping_add(1);
        let mut payload = [0u8; 4];
        TelephoneEvent::for_digit(digit, end, 10, dur)
            .expect("event")
            .emit(&mut payload)
            .expect("emit");
        let mut buf = [0u8; 64];
        let n = h.emit(&payload, &mut buf).expect("emit rtp");
        let _ = sock.send_to(&buf[..n], to);
    }
}

/// Counts the RTP packets `sock` received within `d`.
fn audio_received(sock: &UdpSocket, d: Duration) -> usize {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let end = Instant::now() + d;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while Instant::now() < end {
        if sock.recv_from(&mut buf).is_ok() {
            n += 1;
        }
    }
    n
}

#[test]
fn an_rtp_spray_from_another_host_neither_presses_keys_nor_hears_the_call() {
    let dir = TempDir::new("rtp-spray");
    let agent = Agent::start_with_allow(dir.path(), &AgentOptions::default(), "127.0.0.1/32");
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    gw.place(agent.sip, 1, "12155550123", rtp.port());
    let ports = gw.wait_answered(agent.sip, 1, Duration::from_secs(10));
    let media: SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().expect("addr");
    let attacker = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let mut seq = 100u16;

    // Before the gateway's first packet (the window a latch would be taken in): "1", "1" is
    // exactly what books a callback for the caller's number.
    spray_key(&attacker, media, Digit::D1, &mut seq, 8_000);
    gw.pump(agent.sip, Duration::from_millis(700));
    spray_key(&attacker, media, Digit::D1, &mut seq, 16_000);
    gw.pump(agent.sip, Duration::from_millis(700));
    assert_eq!(
        audio_received(&attacker, Duration::from_millis(300)),
        0,
        "the agent sent the call's audio to the attacker"
    );

    // The gateway's media starts; then the attacker tries again after 600 ms of the
    // gateway's silence (longer than the SSRC relock time).
    let mut gseq = 1u16;
    let mut gts = 0u32;
    rtp.send_silence(media, 0, 10, &mut gseq, &mut gts);
    gw.pump(agent.sip, Duration::from_millis(600));
    for i in 0..3 {
        spray_key(&attacker, media, Digit::D1, &mut seq, 30_000 + i * 8_000);
        gw.pump(agent.sip, Duration::from_millis(300));
    }
    assert_eq!(
        audio_received(&attacker, Duration::from_millis(300)),
        0,
        "the attacker took the call's media over"
    );
    assert!(
        !agent.log().iter().any(|l| l.contains("callback booked")),
        "the attacker's keys booked a callback: {}",
        agent.log().join("\n")
    );
    let store = edge::store::Store::open(dir.path()).expect("open store");
    assert!(store.callbacks().expect("callbacks").is_empty());
    drop(store);
    let s = agent.status_json();
    let foreign = s["stats"]["rtp_foreign"].as_u64().expect("rtp_foreign");
    assert!(foreign >= 20, "foreign packets counted: {s}");

    // The real caller's keys still work, and its audio still flows to the gateway.
    let before = rtp.packets().len();
    rtp.send_digit(media, Digit::D1, 101, 200_000, &mut gseq);
    gw.pump(agent.sip, Duration::from_millis(800));
    rtp.send_digit(media, Digit::D1, 101, 300_000, &mut gseq);
    gw.pump(agent.sip, Duration::from_millis(300));
    assert!(
        agent.wait_log("callback booked (durable)", Duration::from_secs(5)),
        "{}",
        agent.log().join("\n")
    );
    assert!(
        rtp.packets().len() > before,
        "the gateway stopped hearing the call"
    );
}
