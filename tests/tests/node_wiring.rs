//! What a caller, the CRM and a technician see of the node's wiring, with the real agent
//! binary: a repeat caller hears "already booked" to the end, a callback expires after
//! `callbacks.max_age_s` and the CRM is told, an ended call leaves `ccedge calls` at its BYE.
//! (Each of these was wrong in the daemon while its wiring lived apart from the simulator's;
//! the node-level tests are in `shared/src/node/tests.rs`.)

#![allow(clippy::disallowed_methods)] // the tests time real sockets

use std::time::Duration;

use ccedge_tests::broker::{mosquitto_or_skip, Crm, Mosquitto};
use ccedge_tests::{ccedge_cli, Agent, AgentOptions, CallGateway, RtpSink, TempDir};
use serde_json::Value;
use shared::ivr::Prompt;

const NODE: &str = "ccedge/v1/nodes/phl/test-node";

#[test]
fn a_repeat_caller_hears_already_booked_and_the_position_before_bye() {
    let dir = TempDir::new("repeat");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let mut gw = CallGateway::new();

    // The first call books; the agent hangs up after "booked".
    let first = RtpSink::new();
    ccedge_tests::call_and_press_one_one(&agent, &mut gw, 1, "12155550123", &first);
    assert!(
        agent.wait_log("callback booked (durable)", Duration::from_secs(5)),
        "{}",
        agent.log().join("\n")
    );
    assert!(
        gw.wait_ended(agent.sip, Duration::from_secs(30)),
        "first call never ended"
    );

    // The same number calls again and asks again.
    let second = RtpSink::new();
    ccedge_tests::call_and_press_one_one(&agent, &mut gw, 2, "12155550123", &second);
    assert!(
        agent.wait_log("caller already booked", Duration::from_secs(5)),
        "{}",
        agent.log().join("\n")
    );
    assert!(
        gw.wait_ended(agent.sip, Duration::from_secs(30)),
        "the agent never hung up the repeat call"
    );
    // Everything the caller heard before the BYE: "you already have a call back booked", "you
    // are number", "1", each to its last frame and in that order.
    ccedge_tests::assert_heard_in_order(
        &second,
        &[
            Prompt::AlreadyBooked,
            Prompt::YouAreNumber,
            Prompt::Number(1),
        ],
    );
    // Only one callback is queued.
    let store = edge::store::Store::open(dir.path()).expect("open store");
    assert_eq!(store.callbacks().expect("callbacks").len(), 1);
}

#[test]
fn an_ended_call_leaves_ccedge_calls_at_its_bye() {
    let dir = TempDir::new("ended");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    gw.place(agent.sip, 1, "12155550123", rtp.port());
    assert_eq!(
        gw.wait_answered(agent.sip, 1, Duration::from_secs(10))
            .len(),
        1
    );
    let calls = |agent: &Agent| -> Vec<Value> {
        let run = ccedge_cli(&[
            "calls",
            "--json",
            "--config",
            agent.config.to_str().unwrap(),
        ]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        serde_json::from_str::<Value>(&run.stdout)
            .expect("json")
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(calls(&agent).len(), 1);
    gw.hang_up_all(agent.sip);
    assert!(gw.wait_ended(agent.sip, Duration::from_secs(5)));
    // Within a second, not after the 32 s the dialog lingers for retransmissions.
    let mut left = calls(&agent);
    for _ in 0..10 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = calls(&agent);
    }
    assert!(left.is_empty(), "still listed after its BYE: {left:?}");
    // `ccedge status` reads the snapshot the agent refreshes every 500 ms.
    let status = || -> Value {
        let run = ccedge_cli(&[
            "status",
            "--json",
            "--config",
            agent.config.to_str().unwrap(),
        ]);
        serde_json::from_str(&run.stdout).expect("status json")
    };
    let mut s = status();
    for _ in 0..10 {
        if s["active_calls"] == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        s = status();
    }
    assert_eq!(s["active_calls"], 0, "{s}");
}

#[test]
fn a_callback_expires_after_max_age_and_the_crm_is_told() {
    if !mosquitto_or_skip() {
        return;
    }
    let dir = TempDir::new("expiry");
    let broker = Mosquitto::start(dir.path());
    let crm = Crm::connect(
        broker.port,
        "crm-expiry",
        &[&format!("{NODE}/callbacks"), &format!("{NODE}/events")],
    );
    let opts = AgentOptions {
        mqtt_url: broker.url(),
        extra: "[callbacks]\nmax_age_s = 60\n".into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    ccedge_tests::call_and_press_one_one(&agent, &mut gw, 1, "12155550188", &rtp);
    assert!(
        crm.wait(Duration::from_secs(10), |m| m
            .iter()
            .any(|m| m.topic.ends_with("/callbacks"))),
        "no CallbackRequest reached the CRM\n{}",
        agent.log().join("\n")
    );
    let id = crm.on("/callbacks")[0].json()["callback_id"]
        .as_str()
        .expect("callback_id")
        .to_owned();
    let expired = |msgs: &[ccedge_tests::broker::Msg]| {
        msgs.iter().any(|m| {
            let v = m.json();
            m.topic.ends_with("/events")
                && v["type"] == "callback.expired"
                && v["data"]["callback_id"] == id.as_str()
        })
    };
    // Nothing expires early.
    assert!(
        !crm.wait(Duration::from_secs(40), expired),
        "expired before max_age_s"
    );
    assert!(
        crm.wait(Duration::from_secs(40), expired),
        "no callback.expired event for {id}\n{}",
        agent.log().join("\n")
    );
    let ev = crm
        .on("/events")
        .into_iter()
        .map(|m| m.json())
        .find(|v| v["type"] == "callback.expired")
        .unwrap();
    assert!(ev["call_id"].is_null(), "{ev}");
    // The record left the disk.
    let gone = (0..50).any(|_| {
        let store = edge::store::Store::open(dir.path()).expect("store");
        let left = store.callbacks().expect("callbacks");
        if left.iter().all(|c| c.id.as_str() != id) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    });
    assert!(gone, "the expired callback is still on disk");
}
