//! Bursts of SIP from one gateway: the agent takes them without losing datagrams to its
//! socket's receive buffer (it asks the kernel for a larger one than the default).
#![allow(clippy::disallowed_methods)] // the test times real processes

use std::time::Duration;

use ccedge_tests::{Agent, AgentOptions, CallGateway, RtpSink, TempDir};

/// How many calls the burst may hold here: the kernel caps the agent's buffer at
/// `net.core.rmem_max` (stock Linux: 208 kB, granted twice over, about 180 BYEs). Where it
/// allows the agent's full 4 MiB, 200 BYEs at once: more than the default buffer takes.
fn calls_for_this_kernel() -> usize {
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if rmem_max >= 1 << 20 {
        200
    } else {
        eprintln!("net.core.rmem_max is {rmem_max}: a burst of 125 BYEs");
        125
    }
}

#[test]
fn a_gateway_hanging_up_200_calls_at_once_loses_no_bye() {
    let calls = calls_for_this_kernel();
    let dir = TempDir::new("bursts");
    let opts = AgentOptions {
        // No goodbye for callers who press nothing while the rest are placed.
        ivr_extra: "no_input_timeout_ms = 60000\nmax_retries = 9".into(),
        sip_extra: "rate_limit_per_source = 100000".into(),
        rtp_ports: 400,
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let sink = RtpSink::new();
    let mut gw = CallGateway::new();
    for wave in 0..calls / 25 {
        for i in 0..25 {
            let n = (wave * 25 + i) as u64 + 1;
            gw.place(agent.sip, n, &format!("1215555{n:04}"), sink.port());
        }
        let up = gw.wait_answered(agent.sip, (wave + 1) * 25, Duration::from_secs(15));
        assert_eq!(up.len(), (wave + 1) * 25, "{}", agent.log().join("\n"));
    }
    // Every BYE in one burst, none retransmitted: each must get through the first time.
    gw.hang_up_all(agent.sip);
    gw.pump(agent.sip, Duration::from_millis(500));
    let ended = || {
        agent
            .log()
            .iter()
            .filter(|l| l.contains("call.ended") && l.contains("caller_hangup"))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ended() < calls && std::time::Instant::now() < deadline {
        gw.pump(agent.sip, Duration::from_millis(100));
    }
    assert_eq!(
        ended(),
        calls,
        "BYEs lost in the burst; the agent's log:\n{}",
        agent
            .log()
            .iter()
            .filter(|l| l.contains("receive buffer") || l.contains("call.ended"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
