//! RTCP (RFC 3550) with the real agent over raw UDP: the node sends sender reports on the RTP
//! port with rtcp-mux (RFC 5761) and to the port above it without; the peer's receiver report
//! and sender report are read into `ccedge calls` (loss, jitter, round trip).
#![allow(clippy::disallowed_methods)] // the test times real sockets

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ccedge_tests::rawsip::{header, recv_udp_until};
use ccedge_tests::{Agent, AgentOptions, TempDir};
use serde_json::Value;
use shared::rtp::rtcp::{self, ReportBlock, SenderInfo};
use shared::rtp::{PayloadType, RtpHeader, Ssrc};

fn invite(agent: SocketAddr, gw: SocketAddr, call_id: &str, rtp_port: u16, mux: bool) -> String {
    let mux_line = if mux { "a=rtcp-mux\r\n" } else { "" };
    let sdp = format!(
        "v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n{mux_line}"
    );
    format!(
        "INVITE sip:+18005550100@{agent} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {gw};branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+12155550123@127.0.0.1>;tag=gw-rtcp\r\n\
         To: <sip:+18005550100@127.0.0.1>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:gw@{gw}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// Places a call offering RTP on `rtp`'s port; returns the agent's media address once the
/// call is answered and acknowledged.
fn answered_call(
    agent: &Agent,
    sip: &UdpSocket,
    call_id: &str,
    rtp: &UdpSocket,
    mux: bool,
) -> SocketAddr {
    let gw = sip.local_addr().expect("addr");
    let port = rtp.local_addr().expect("addr").port();
    sip.send_to(
        invite(agent.sip, gw, call_id, port, mux).as_bytes(),
        agent.sip,
    )
    .expect("send");
    let ok = recv_udp_until(sip, Duration::from_secs(10), |t| {
        t.starts_with("SIP/2.0 200") && t.contains(call_id)
    })
    .expect("200 OK");
    assert_eq!(ok.contains("a=rtcp-mux"), mux, "{ok}");
    // Without rtcp-mux the answer names its RTCP port (RFC 3605): the RTP port itself.
    let to = header(&ok, "To").expect("To").to_owned();
    let ack = format!(
        "ACK sip:ccedge@{} SIP/2.0\r\nVia: SIP/2.0/UDP {gw};branch=z9hG4bK-ack-{call_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+12155550123@127.0.0.1>;tag=gw-rtcp\r\nTo: {to}\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        agent.sip
    );
    sip.send_to(ack.as_bytes(), agent.sip).expect("ack");
    let media_port: u16 = ok
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio port");
    assert_eq!(
        ok.contains(&format!("a=rtcp:{media_port}\r\n")),
        !mux,
        "{ok}"
    );
    format!("127.0.0.1:{media_port}").parse().expect("addr")
}

/// The first RTCP sender report arriving on `s` within `timeout`: (its SSRC, its NTP
/// timestamp, the whole datagram).
fn wait_sr(s: &UdpSocket, timeout: Duration) -> Option<(Ssrc, u64, Vec<u8>)> {
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let end = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        let Ok((n, _)) = s.recv_from(&mut buf) else {
            continue;
        };
        let d = &buf[..n];
        if rtcp::is_rtcp(d) && d.get(1) == Some(&rtcp::PT_SR) {
            let ssrc = Ssrc(u32::from_be_bytes([d[4], d[5], d[6], d[7]]));
            let parsed = rtcp::parse(d, Ssrc(0)).expect("the node's RTCP parses");
            return Some((ssrc, parsed.sender_ntp.expect("an SR"), d.to_vec()));
        }
    }
    None
}

#[test]
fn the_node_reports_on_rtcp_and_reads_the_peers_reports_into_ccedge_calls() {
    let dir = TempDir::new("rtcp");
    let opts = AgentOptions {
        ivr_extra: "no_input_timeout_ms = 60000\nmax_retries = 9".into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let sip = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sip.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");

    // rtcp-mux: the node's SR arrives on our RTP port, within the first interval (2.5 s
    // at most, plus the 500 ms the agent checks at).
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind rtp");
    let media = answered_call(&agent, &sip, "rtcp-mux-1@127.0.0.1", &rtp, true);
    // Our stream: sequence 1..=49 with 10, 20, 30 and 40 missing (50 is never sent: not
    // yet lost).
    let our_ssrc = Ssrc(0x00AB_CDEF);
    let mut buf = [0u8; 256];
    for seq in (1..=50u16).filter(|s| s % 10 != 0) {
        let h = RtpHeader {
            marker: seq == 1,
            payload_type: PayloadType::PCMU,
            sequence: seq,
            timestamp: u32::from(seq) * 160,
            ssrc: our_ssrc,
        };
        let n = h.emit(&[0xFF; 160], &mut buf).expect("emit");
        rtp.send_to(&buf[..n], media).expect("send rtp");
        std::thread::sleep(Duration::from_millis(2));
    }
    let (node_ssrc, node_ntp, sr) =
        wait_sr(&rtp, Duration::from_secs(5)).expect("an SR on the RTP port");
    // The SR carries an SDES CNAME and, after our RTP, a report block about our stream.
    assert!(
        sr.windows(2).any(|w| w == [0x81, rtcp::PT_SDES]),
        "{sr:02x?}"
    );
    let about_us = rtcp::parse(&sr, our_ssrc).expect("parse").about_us;
    if let Some(b) = about_us {
        assert_eq!(b.cumulative_lost, 4, "{b:?}");
    }
    // The peer's SR answering it: 1 % of the node's packets lost, jitter 40 units (5 ms),
    // and the node's SR held for 100 ms (DLSR, in 1/65536 s).
    let block = ReportBlock {
        ssrc: node_ssrc,
        fraction_lost: 3,
        cumulative_lost: 7,
        extended_max_sequence: 100,
        jitter: 40,
        lsr: rtcp::ntp_middle(node_ntp),
        dlsr: 6_554,
    };
    let info = SenderInfo {
        ntp: node_ntp,
        rtp_timestamp: 8_000,
        packet_count: 45,
        octet_count: 7_200,
    };
    let n = rtcp::build_report(&mut buf, our_ssrc, &info, Some(&block), b"gw@test").expect("build");
    // Held 150 ms here, of which the report admits 100 ms (DLSR): about 50 ms of "network".
    std::thread::sleep(Duration::from_millis(150));
    rtp.send_to(&buf[..n], media).expect("send rtcp");
    let mut row = Value::Null;
    for _ in 0..20 {
        row = agent.calls_json().into_iter().next().unwrap_or(Value::Null);
        if row["rtcp_reports"].as_u64() == Some(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(row["rtcp_reports"], 1, "{row}");
    assert_eq!(row["peer_lost"], 7, "{row}");
    assert_eq!(row["peer_fraction_lost"], 3, "{row}");
    assert_eq!(row["peer_jitter_ms"], 5, "{row}");
    assert_eq!(row["lost"], 4, "{row}");
    // Round trip: from the node's SR to our report's arrival, less the 100 ms we held it.
    let rtt = row["rtt_ms"].as_u64().expect("rtt_ms");
    assert!((40..1_000).contains(&rtt), "{row}");
    // The next SR echoes our SR in its block (LSR).
    let (_, _, sr2) = wait_sr(&rtp, Duration::from_secs(9)).expect("a second SR");
    let b = rtcp::parse(&sr2, our_ssrc)
        .expect("parse")
        .about_us
        .expect("block about us");
    assert_eq!(b.lsr, rtcp::ntp_middle(info.ntp));

    // Without rtcp-mux the SR goes to the port above the RTP port.
    let (rtp2, rtcp2) = loop {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let p = a.local_addr().expect("addr").port();
        if p.is_multiple_of(2) {
            if let Ok(b) = UdpSocket::bind(("127.0.0.1", p + 1)) {
                break (a, b);
            }
        }
    };
    let media2 = answered_call(&agent, &sip, "rtcp-nomux-2@127.0.0.1", &rtp2, false);
    let (node_ssrc2, node_ntp2, _) =
        wait_sr(&rtcp2, Duration::from_secs(5)).expect("an SR on the RTCP port");
    // The answer's a=rtcp (RFC 3605) names the node's RTP port: a receiver report sent there
    // from our RTCP port is read.
    let block = ReportBlock {
        ssrc: node_ssrc2,
        fraction_lost: 0,
        cumulative_lost: 11,
        extended_max_sequence: 100,
        jitter: 16,
        lsr: rtcp::ntp_middle(node_ntp2),
        dlsr: 0,
    };
    let n = rtcp::build_report(
        &mut buf,
        Ssrc(0x0B0B_0B0B),
        &info,
        Some(&block),
        b"gw2@test",
    )
    .expect("build");
    rtcp2.send_to(&buf[..n], media2).expect("send rtcp");
    let mut found = false;
    for _ in 0..20 {
        found = agent
            .calls_json()
            .iter()
            .any(|r| r["peer_lost"] == 11 && r["rtcp_reports"] == 1 && r["peer_jitter_ms"] == 2);
        if found {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(found, "{:?}", agent.calls_json());
}
