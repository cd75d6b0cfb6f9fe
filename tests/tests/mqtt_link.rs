//! The CRM link end to end: the real agent binary, a real Mosquitto on a free port, sipp as
//! the gateway, and a CRM stand-in on the broker (the topics of `deploy/asyncapi.yaml`,
//! issue #5).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ccedge_tests::broker::{
    have_mosquitto, longest_tone_run, pcmu_frames, sha256_hex, tone_wav, Crm, Mosquitto, Msg,
};
use ccedge_tests::{have_sipp, sipp, Agent, AgentOptions, RtpSink, TempDir};

const P: &str = "ccedge/v1";
const NODE: &str = "ccedge/v1/nodes/phl/test-node";

fn skip() -> bool {
    if !have_sipp() || !have_mosquitto() {
        eprintln!("sipp or mosquitto not installed: skipped (CI installs both)");
        return true;
    }
    false
}

fn options(broker: &Mosquitto) -> AgentOptions {
    AgentOptions {
        mqtt_url: broker.url(),
        extra: "[announcements]\nmax_audio_bytes = 200000\n".into(),
        ..AgentOptions::default()
    }
}

/// Places one listening call of `ms` and returns the agent's RTP, decoded per packet.
fn listen_call(agent: &Agent, ms: u32) -> Vec<Vec<i16>> {
    let sink = RtpSink::new();
    let run = sipp(
        "listen.xml",
        agent.sip,
        &[("rtpport", sink.port().to_string())],
        &["-d", &ms.to_string()],
    );
    assert_eq!(run.code, Some(0), "sipp failed:\n{}", run.output);
    std::thread::sleep(Duration::from_millis(100));
    pcmu_frames(&sink.packets())
}

fn announcement(id: &str, version: u32, sha: &str) -> String {
    format!(
        r#"{{"id":"{id}","version":{version},"priority":10,"scope":{{}},"audio_sha256":"{sha}","offer_callback":false,"language":"en"}}"#
    )
}

/// Waits until the node's retained status lists announcement `id` at `version` as `state`
/// (or, with `None`, lists no announcement `id`).
fn wait_status(crm: &Crm, id: &str, want: Option<(u64, &str)>) -> bool {
    crm.wait(Duration::from_secs(10), |msgs| {
        let Some(last) = msgs
            .iter()
            .rev()
            .find(|m| m.topic == format!("{NODE}/status"))
        else {
            return false;
        };
        let v = last.json();
        let anns = v["announcements"].as_array().cloned().unwrap_or_default();
        let found = anns.iter().find(|a| a["id"] == id);
        match (want, found) {
            (None, None) => v["state"] == "online",
            (Some((version, state)), Some(a)) => a["version"] == version && a["state"] == state,
            _ => false,
        }
    })
}

#[test]
fn a_retained_announcement_is_heard_replaced_by_a_newer_version_and_withdrawn() {
    if skip() {
        return;
    }
    let dir = TempDir::new("mqtt-ann");
    let broker = Mosquitto::start(dir.path());
    let crm = Crm::connect(broker.port, "crm-ann", &[&format!("{NODE}/#")]);
    let (a1, a2) = (tone_wav(1000.0, 2.0, 0.5), tone_wav(600.0, 2.0, 0.5));
    let (h1, h2) = (sha256_hex(&a1), sha256_hex(&a2));
    // The CRM publishes before the node is even up: retained messages reach it on connect.
    crm.publish(&format!("{P}/audio/{h1}"), &a1, true);
    crm.publish(
        &format!("{P}/announcements/outage-phl"),
        announcement("outage-phl", 1, &h1).as_bytes(),
        true,
    );
    let agent = Agent::start(dir.path(), &options(&broker));
    assert!(
        wait_status(&crm, "outage-phl", Some((1, "active"))),
        "status never showed version 1 active: {:?}\n{}",
        crm.on("/status").last().map(|m| m.json()),
        agent.log().join("\n")
    );
    let heard = listen_call(&agent, 2500);
    assert!(
        longest_tone_run(&heard, 1000.0) >= 25,
        "the caller did not hear version 1's 1 kHz tone ({} frames)",
        heard.len()
    );
    assert!(longest_tone_run(&heard, 600.0) < 5);

    // Version 2 arrives before its audio: it is pending, and callers keep hearing version 1
    // until the audio is here; then version 2 replaces it for the next caller.
    crm.publish(
        &format!("{P}/announcements/outage-phl"),
        announcement("outage-phl", 2, &h2).as_bytes(),
        true,
    );
    assert!(wait_status(&crm, "outage-phl", Some((2, "pending"))));
    let heard = listen_call(&agent, 2500);
    assert!(
        longest_tone_run(&heard, 1000.0) >= 25,
        "version 2 waiting for its audio silenced version 1 ({} frames)",
        heard.len()
    );
    crm.publish(&format!("{P}/audio/{h2}"), &a2, true);
    assert!(wait_status(&crm, "outage-phl", Some((2, "active"))));

    // Junk changes nothing: not JSON, wrong schema, an older version, audio under the wrong
    // hash, audio over announcements.max_audio_bytes.
    crm.publish(
        &format!("{P}/announcements/junk"),
        b"\x00\xffnot json",
        true,
    );
    crm.publish(&format!("{P}/announcements/schema"), br#"{"id":5}"#, true);
    crm.publish(
        &format!("{P}/announcements/outage-phl"),
        announcement("outage-phl", 1, &h1).as_bytes(),
        false,
    );
    crm.publish(&format!("{P}/audio/{h1}"), &a2, false);
    let big = tone_wav(440.0, 20.0, 0.5);
    crm.publish(&format!("{P}/audio/{}", sha256_hex(&big)), &big, false);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(wait_status(&crm, "outage-phl", Some((2, "active"))));
    assert!(
        !agent
            .state_dir
            .join("audio")
            .join(format!("{}.wav", sha256_hex(&big)))
            .exists(),
        "oversized audio was cached"
    );
    // The cache holds what the node kept: version 2, not the older version published after.
    let cached_version = || -> Option<u64> {
        let path = agent
            .state_dir
            .join("announcements")
            .join("outage-phl.json");
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        doc["version"].as_u64()
    };
    assert_eq!(cached_version(), Some(2));
    let cached = std::fs::read(agent.state_dir.join("audio").join(format!("{h1}.wav")))
        .expect("audio 1 still cached");
    assert_eq!(
        cached, a1,
        "audio under a wrong hash replaced the cached file"
    );
    let heard = listen_call(&agent, 2500);
    assert!(
        longest_tone_run(&heard, 600.0) >= 25,
        "the next caller did not hear version 2"
    );
    assert!(
        longest_tone_run(&heard, 1000.0) < 5,
        "version 1 still played"
    );

    // An empty retained payload withdraws it.
    crm.publish(&format!("{P}/announcements/outage-phl"), b"", true);
    assert!(wait_status(&crm, "outage-phl", None), "still listed");
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        cached_version().is_none()
    });
    assert!(gone, "the withdrawn announcement is still cached");
    let heard = listen_call(&agent, 2000);
    assert!(!heard.is_empty());
    assert!(
        longest_tone_run(&heard, 600.0) < 5,
        "withdrawn but still played"
    );
    assert!(longest_tone_run(&heard, 1000.0) < 5);
}

#[test]
fn with_a_signing_key_the_caller_hears_only_what_the_crm_signed() {
    if skip() {
        return;
    }
    let dir = TempDir::new("mqtt-signed");
    let broker = Mosquitto::start(dir.path());
    let crm = Crm::connect(broker.port, "crm-signed", &[&format!("{NODE}/#")]);
    let seed = [0x5a; 32];
    let opts = AgentOptions {
        mqtt_url: broker.url(),
        extra: format!(
            "[announcements]\nmax_audio_bytes = 200000\nsigning_key = \"{}\"\n",
            edge::link::signature::public_key(&seed)
        ),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let (a1, a2) = (tone_wav(1000.0, 2.0, 0.5), tone_wav(600.0, 2.0, 0.5));
    let (h1, h2) = (sha256_hex(&a1), sha256_hex(&a2));
    crm.publish(&format!("{P}/audio/{h1}"), &a1, true);
    crm.publish(&format!("{P}/audio/{h2}"), &a2, true);
    let signed =
        edge::link::signature::sign_document(&seed, announcement("outage-phl", 1, &h1).as_bytes())
            .expect("sign");
    crm.publish(&format!("{P}/announcements/outage-phl"), &signed, true);
    assert!(
        wait_status(&crm, "outage-phl", Some((1, "active"))),
        "the signed version 1 never became active:\n{}",
        agent.log().join("\n")
    );
    // A newer version, unsigned or signed by someone else, is refused: version 1 plays on.
    crm.publish(
        &format!("{P}/announcements/outage-phl"),
        announcement("outage-phl", 2, &h2).as_bytes(),
        true,
    );
    let forged = edge::link::signature::sign_document(
        &[1; 32],
        announcement("outage-phl", 3, &h2).as_bytes(),
    )
    .expect("sign");
    crm.publish(&format!("{P}/announcements/outage-phl"), &forged, true);
    assert!(
        agent.wait_log("CRM message rejected", Duration::from_secs(5)),
        "{}",
        agent.log().join("\n")
    );
    std::thread::sleep(Duration::from_millis(500));
    let rejections = agent
        .log()
        .iter()
        .filter(|l| l.contains("CRM message rejected") && l.contains("outage-phl"))
        .count();
    assert_eq!(rejections, 2, "{}", agent.log().join("\n"));
    assert!(wait_status(&crm, "outage-phl", Some((1, "active"))));
    let heard = listen_call(&agent, 2500);
    assert!(
        longest_tone_run(&heard, 1000.0) >= 25,
        "the caller did not hear the signed version 1"
    );
    assert!(
        longest_tone_run(&heard, 600.0) < 5,
        "an unsigned or forged version played"
    );
}

/// Every CallEvent received, by seq: the distinct payloads seen for it.
fn events_by_seq(msgs: &[Msg]) -> BTreeMap<u64, BTreeSet<String>> {
    let mut by_seq: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for m in msgs.iter().filter(|m| m.topic == format!("{NODE}/events")) {
        let v = m.json();
        let seq = v["seq"].as_u64().expect("seq");
        by_seq.entry(seq).or_default().insert(v.to_string());
    }
    by_seq
}

/// Asks the node to replay everything it holds and waits for the seqs to be contiguous from
/// 1 up to the highest seen, gaps covered only by `seq.skipped`.
fn replay_until_contiguous(crm: &Crm, expect_ended: usize) -> BTreeMap<u64, BTreeSet<String>> {
    for _ in 0..5 {
        crm.publish(
            &format!("{NODE}/events/replay"),
            br#"{"from_seq":1,"to_seq":1000000000}"#,
            false,
        );
        let ok = crm.wait(Duration::from_secs(4), |msgs| {
            let by_seq = events_by_seq(msgs);
            let ended = by_seq
                .values()
                .filter(|p| p.iter().any(|s| s.contains("\"call.ended\"")))
                .count();
            ended >= expect_ended && missing(&by_seq).is_empty()
        });
        if ok {
            break;
        }
    }
    events_by_seq(&crm.messages())
}

/// The seqs from 1 to the highest received that are neither received nor covered by a
/// `seq.skipped` event.
fn missing(by_seq: &BTreeMap<u64, BTreeSet<String>>) -> Vec<u64> {
    let Some(&max) = by_seq.keys().next_back() else {
        return vec![1];
    };
    let mut covered: BTreeSet<u64> = by_seq.keys().copied().collect();
    for payloads in by_seq.values() {
        for p in payloads {
            let v: serde_json::Value = serde_json::from_str(p).unwrap_or_default();
            if v["type"] == "seq.skipped" {
                let (a, b) = (
                    v["data"]["from"].as_u64().unwrap_or(0),
                    v["data"]["to"].as_u64().unwrap_or(0),
                );
                covered.extend(a..=b.min(max));
            }
        }
    }
    (1..=max).filter(|s| !covered.contains(s)).collect()
}

fn assert_envelopes(by_seq: &BTreeMap<u64, BTreeSet<String>>) {
    let mut ids = BTreeMap::new();
    for (seq, payloads) in by_seq {
        assert_eq!(
            payloads.len(),
            1,
            "seq {seq} was delivered with different contents: {payloads:?}"
        );
        let v: serde_json::Value =
            serde_json::from_str(payloads.iter().next().expect("one")).expect("json");
        for key in [
            "event_id", "node", "site", "seq", "call_seq", "at", "type", "data",
        ] {
            assert!(v.get(key).is_some(), "seq {seq} lacks `{key}`: {v}");
        }
        assert_eq!(v["node"], "test-node");
        assert_eq!(v["site"], "phl");
        let id = v["event_id"].as_str().expect("event_id").to_owned();
        if let Some(other) = ids.insert(id.clone(), *seq) {
            panic!("event_id {id} used for seq {other} and {seq}");
        }
    }
}

#[test]
fn a_broker_killed_mid_traffic_loses_no_event_after_a_replay() {
    if skip() {
        return;
    }
    let dir = TempDir::new("mqtt-kill-broker");
    let mut broker = Mosquitto::start(dir.path());
    let agent = Agent::start(dir.path(), &options(&broker));
    let crm = Crm::connect(broker.port, "crm-kill", &[&format!("{NODE}/events")]);
    let sink = RtpSink::new();
    let (target, port) = (agent.sip, sink.port());
    let calls = std::thread::spawn(move || {
        sipp(
            "listen.xml",
            target,
            &[("rtpport", port.to_string())],
            &["-m", "12", "-r", "4", "-l", "6", "-d", "1500"],
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    broker.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    let run = calls.join().expect("sipp thread");
    assert_eq!(run.code, Some(0), "{}", run.output);
    let by_seq = replay_until_contiguous(&crm, 12);
    assert!(
        missing(&by_seq).is_empty(),
        "seqs never delivered: {:?}",
        missing(&by_seq)
    );
    assert_envelopes(&by_seq);
    let ended = by_seq
        .values()
        .filter(|p| p.iter().any(|s| s.contains("\"call.ended\"")))
        .count();
    assert_eq!(ended, 12, "every call's call.ended reached the CRM");
}

#[test]
fn an_agent_killed_and_restarted_neither_loses_nor_renumbers_events() {
    if skip() {
        return;
    }
    let dir = TempDir::new("mqtt-kill-agent");
    let broker = Mosquitto::start(dir.path());
    let crm = Crm::connect(broker.port, "crm-restart", &[&format!("{NODE}/events")]);
    let mut agent = Agent::start(dir.path(), &options(&broker));
    let sink = RtpSink::new();
    let run = sipp(
        "listen.xml",
        agent.sip,
        &[("rtpport", sink.port().to_string())],
        &["-m", "3", "-r", "10", "-d", "300"],
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert!(crm.wait(Duration::from_secs(5), |m| {
        events_by_seq(m)
            .values()
            .filter(|p| p.iter().any(|s| s.contains("\"call.ended\"")))
            .count()
            >= 3
    }));
    let before = events_by_seq(&crm.messages());
    agent.kill9();
    let agent = agent.restart();
    let run = sipp(
        "listen.xml",
        agent.sip,
        &[("rtpport", sink.port().to_string())],
        &["-m", "2", "-r", "10", "-d", "300"],
    );
    assert_eq!(run.code, Some(0), "{}", run.output);
    let after = replay_until_contiguous(&crm, 5);
    assert!(
        missing(&after).is_empty(),
        "seqs never delivered: {:?}",
        missing(&after)
    );
    assert_envelopes(&after);
    // Nothing from before the kill changed its number or content.
    for (seq, payloads) in &before {
        assert_eq!(after.get(seq), Some(payloads), "seq {seq} changed");
    }
    let max_before = before.keys().next_back().copied().unwrap_or(0);
    let new: Vec<_> = after.keys().filter(|s| **s > max_before).collect();
    assert!(!new.is_empty(), "no events after the restart");
}

#[test]
fn a_booked_callback_reaches_the_crm_and_its_state_comes_back() {
    if skip() {
        return;
    }
    let dir = TempDir::new("mqtt-callback");
    let broker = Mosquitto::start(dir.path());
    let crm = Crm::connect(broker.port, "crm-cb", &[&format!("{NODE}/callbacks")]);
    let agent = Agent::start(dir.path(), &options(&broker));
    let sink = RtpSink::new();
    let (target, port) = (agent.sip, sink.port());
    let t = std::thread::spawn(move || {
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
    assert!(sink.wait_for(5, Duration::from_secs(5)) >= 5, "no greeting");
    let agent_rtp = sink.packets()[0].from;
    assert!(agent.wait_log("digit=D1", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(1200));
    let (mut seq, ts) = (100u16, 123_456u32);
    sink.send_digit(agent_rtp, shared::dtmf::Digit::D1, 101, ts, &mut seq);
    let run = t.join().expect("sipp");
    assert_eq!(run.code, Some(0), "{}", run.output);
    assert!(
        crm.wait(Duration::from_secs(5), |m| !m.is_empty()),
        "no CallbackRequest reached the CRM\n{}",
        agent.log().join("\n")
    );
    let req = crm.on("/callbacks")[0].json();
    assert_eq!(req["callback_number"], "+12155550123");
    assert_eq!(req["dialled"], "+18005550100");
    assert_eq!(req["node"], "test-node");
    let id = req["callback_id"].as_str().expect("callback_id").to_owned();
    // The broker PUBACKed it: the local record is synced.
    let state = |want: &str| {
        for _ in 0..50 {
            let store = edge::store::Store::open(dir.path()).expect("store");
            let cbs = store.callbacks().expect("callbacks");
            if cbs
                .iter()
                .any(|c| c.id.as_str() == id && c.state.as_str() == want)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    assert!(state("synced"), "callback not marked synced");
    crm.publish(
        &format!("{NODE}/callbacks/{id}/state"),
        br#"{"state":"accepted","at":"2026-11-23T06:01:02.345Z"}"#,
        false,
    );
    assert!(
        state("accepted"),
        "the CRM's accepted state was not applied"
    );
}
