//! `ivr.languages = ["en", "es"]` end to end, with the real agent binary and a real Mosquitto:
//! the CRM publishes an English and a Spanish announcement; a caller who presses 9 hears the
//! Spanish one and Spanish prompts and books a callback in Spanish, another caller hears
//! English, and a call to a number in `ivr.language_by_dialled` starts in Spanish. What each
//! caller heard is compared frame by frame with the prompts' and the announcements' audio,
//! and every CallEvent and the CallbackRequest carry the caller's language.

#![allow(clippy::disallowed_methods)] // the tests time real sockets

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ccedge_tests::broker::{mosquitto_or_skip, sha256_hex, tone_wav, Crm, Mosquitto, Msg};
use ccedge_tests::{Agent, AgentOptions, CallGateway, RtpSink, TempDir};
use edge::media::audio::Frames;
use edge::media::prompts::{PromptKey, Prompts};
use serde_json::{json, Value};
use shared::dtmf::Digit;
use shared::g711::Law;

const NODE: &str = "ccedge/v1/nodes/phl/test-node";
type Frame = [u8; 160];

/// Waits until `needle` was heard in full; returns where it starts.
fn wait_heard(rtp: &RtpSink, needle: &[Frame], what: &str, timeout: Duration) -> usize {
    let end = Instant::now() + timeout;
    loop {
        if let Some(i) = ccedge_tests::find_frames(&ccedge_tests::pcmu_frames(rtp), needle, 0) {
            return i;
        }
        assert!(
            Instant::now() < end,
            "{what} ({} frames) was not heard in full; {} frames received",
            needle.len(),
            ccedge_tests::pcmu_frames(rtp).len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Sounds {
    prompts: Prompts,
    en_ann: Vec<Frame>,
    es_ann: Vec<Frame>,
}

impl Sounds {
    fn prompt(&self, language: u8, key: PromptKey) -> Vec<Frame> {
        self.prompts
            .language(language)
            .get(key)
            .frames(Law::Ulaw)
            .to_vec()
    }
}

fn frames_of(wav: &[u8]) -> Vec<Frame> {
    Frames::from_wav(wav)
        .expect("decodes")
        .frames(Law::Ulaw)
        .to_vec()
}

/// Places call `n` (its Call-ID), waits for its answer; returns the gateway (keep it to hang up) and the
/// agent's RTP address.
fn call(agent: &Agent, n: u64, dialled: &str, rtp: &RtpSink) -> (CallGateway, SocketAddr) {
    let mut gw = CallGateway::new();
    gw.place_to(agent.sip, n, "12155550123", dialled, rtp.port());
    let ports = gw.wait_answered(agent.sip, 1, Duration::from_secs(10));
    let port = *ports
        .first()
        .unwrap_or_else(|| panic!("call {n} to {dialled} was not answered"));
    (gw, format!("127.0.0.1:{port}").parse().expect("addr"))
}

fn call_id_of_first_event(crm: &Crm, pred: impl Fn(&Value) -> bool) -> Option<String> {
    crm.on("/events")
        .iter()
        .map(Msg::json)
        .find(|v| pred(v))
        .and_then(|v| v["call_id"].as_str().map(str::to_owned))
}

/// The languages of one call's events, in `call_seq` order, with their types.
fn languages_of(crm: &Crm, call_id: &str) -> Vec<(String, String)> {
    let mut evs: Vec<Value> = crm
        .on("/events")
        .iter()
        .map(Msg::json)
        .filter(|v| v["call_id"] == call_id)
        .collect();
    evs.sort_by_key(|v| v["call_seq"].as_u64());
    evs.iter()
        .map(|v| {
            (
                v["type"].as_str().unwrap_or_default().to_owned(),
                v["language"].as_str().unwrap_or("<none>").to_owned(),
            )
        })
        .collect()
}

#[test]
fn callers_hear_their_language_and_the_crm_is_told_it() {
    if !mosquitto_or_skip() {
        return;
    }
    let dir = TempDir::new("languages");
    let broker = Mosquitto::start(dir.path());
    let crm = Crm::connect(broker.port, "crm-languages", &[&format!("{NODE}/#")]);
    let opts = AgentOptions {
        mqtt_url: broker.url(),
        ivr_extra: "languages = [\"en\", \"es\"]\n\
                    language_by_dialled = { \"+18005550199\" = \"es\" }"
            .into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);

    // The CRM publishes the same outage in English and in Spanish (two tones stand in for
    // the recordings, so each is recognisable frame by frame).
    let en_wav = tone_wav(440.0, 1.2, 0.3);
    let es_wav = tone_wav(660.0, 1.2, 0.3);
    for (id, wav, lang) in [("outage-en", &en_wav, "en"), ("outage-es", &es_wav, "es")] {
        let h = sha256_hex(wav);
        crm.publish(&format!("ccedge/v1/audio/{h}"), wav, true);
        let doc = json!({"id": id, "version": 1, "priority": 10, "audio_sha256": h,
                         "offer_callback": true, "language": lang});
        crm.publish(
            &format!("ccedge/v1/announcements/{id}"),
            doc.to_string().as_bytes(),
            true,
        );
    }
    let active = |m: &[Msg]| {
        m.iter().any(|m| {
            m.topic.ends_with("/status")
                && m.json()["announcements"]
                    .as_array()
                    .is_some_and(|a| a.iter().filter(|a| a["state"] == "active").count() == 2)
        })
    };
    assert!(
        crm.wait(Duration::from_secs(20), active),
        "both announcements never became active\n{}",
        agent.log().join("\n")
    );
    let s = Sounds {
        prompts: Prompts::load(&["en".to_owned(), "es".to_owned()], None).expect("prompts"),
        en_ann: frames_of(&en_wav),
        es_ann: frames_of(&es_wav),
    };
    let t = Duration::from_secs(15);

    // Caller A starts in English: the Spanish offer ("para español, oprima nueve", spoken
    // in Spanish), then the English announcement. A presses 9 during it.
    let a = RtpSink::new();
    let (mut gw_a, media_a) = call(&agent, 1, "18005550100", &a);
    let mut offer_es = s.prompt(1, PromptKey::LanguageOffer);
    offer_es.extend(s.prompt(1, PromptKey::Digit9));
    let at = wait_heard(&a, &offer_es, "the Spanish offer", t);
    let frames = ccedge_tests::pcmu_frames(&a);
    let next = &frames[at + offer_es.len()..];
    assert!(
        next.len() < 5 || s.en_ann[..5] == next[..5],
        "the English announcement does not follow the offer"
    );
    let mut seq = 1u16;
    a.send_digit(media_a, Digit::D9, 101, 1_000, &mut seq);
    gw_a.pump(agent.sip, Duration::from_millis(100));
    // Now in Spanish: the English offer ("for English, press star"), the Spanish
    // announcement, and the menu in Spanish.
    let mut offer_en = s.prompt(0, PromptKey::LanguageOffer);
    offer_en.extend(s.prompt(0, PromptKey::Star));
    wait_heard(&a, &offer_en, "the English offer after choosing Spanish", t);
    wait_heard(&a, &s.es_ann, "the Spanish announcement", t);
    wait_heard(
        &a,
        &s.prompt(1, PromptKey::MenuCallback),
        "the Spanish menu",
        t,
    );
    assert!(
        ccedge_tests::find_frames(
            &ccedge_tests::pcmu_frames(&a),
            &s.prompt(0, PromptKey::MenuCallback),
            0
        )
        .is_none(),
        "caller A heard the English menu"
    );
    // 1 (call back), 1 (confirm the caller's number): the confirmation and the booking in
    // Spanish.
    a.send_digit(media_a, Digit::D1, 101, 300_000, &mut seq);
    gw_a.pump(agent.sip, Duration::from_millis(100));
    wait_heard(
        &a,
        &s.prompt(1, PromptKey::CallbackConfirmIntro),
        "the Spanish confirmation",
        t,
    );
    a.send_digit(media_a, Digit::D1, 101, 600_000, &mut seq);
    gw_a.pump(agent.sip, Duration::from_millis(100));
    wait_heard(&a, &s.prompt(1, PromptKey::Booked), "the Spanish booked", t);
    wait_heard(
        &a,
        &s.prompt(1, PromptKey::YouAreNumber),
        "the Spanish position",
        t,
    );
    gw_a.hang_up_all(agent.sip);

    // Caller B never chooses: English announcement, English menu, never the Spanish
    // announcement.
    let b = RtpSink::new();
    let (mut gw_b, _) = call(&agent, 2, "18005550100", &b);
    wait_heard(&b, &offer_es, "the Spanish offer to caller B", t);
    wait_heard(&b, &s.en_ann, "the English announcement", t);
    wait_heard(
        &b,
        &s.prompt(0, PromptKey::MenuRepeat),
        "the English menu",
        t,
    );
    assert!(
        ccedge_tests::find_frames(&ccedge_tests::pcmu_frames(&b), &s.es_ann, 0).is_none(),
        "caller B heard Spanish"
    );
    gw_b.hang_up_all(agent.sip);

    // Caller C dials the Spanish number: Spanish from the start, offered English.
    let c = RtpSink::new();
    let (mut gw_c, _) = call(&agent, 3, "18005550199", &c);
    let at_offer = wait_heard(&c, &offer_en, "the English offer to caller C", t);
    let at_ann = wait_heard(&c, &s.es_ann, "the Spanish announcement to caller C", t);
    assert!(at_offer < at_ann);
    assert!(
        ccedge_tests::find_frames(&ccedge_tests::pcmu_frames(&c), &s.en_ann, 0).is_none(),
        "caller C heard English"
    );
    gw_c.hang_up_all(agent.sip);
    for gw in [&mut gw_a, &mut gw_b, &mut gw_c] {
        assert!(gw.wait_ended(agent.sip, Duration::from_secs(10)));
    }

    // The CRM: caller A's CallbackRequest is Spanish; A's events are English up to the 9,
    // Spanish after; B's English; C's Spanish.
    assert!(
        crm.wait(Duration::from_secs(10), |m| m
            .iter()
            .any(|m| m.topic.ends_with("/callbacks"))),
        "no CallbackRequest"
    );
    let req = crm.on("/callbacks")[0].json();
    assert_eq!(req["language"], "es", "{req}");
    // (`Crm::wait` holds its list while it asks: look only at the messages it hands over.)
    let ended = |m: &[Msg], id: &str| {
        m.iter()
            .filter(|m| m.json()["call_id"] == id && m.json()["type"] == "call.ended")
            .count()
            == 1
    };
    let call_a = req["call_id"].as_str().expect("call_id").to_owned();
    let with_ann = |id: &'static str| {
        move |v: &Value| v["type"] == "announcement.started" && v["data"]["announcement_id"] == id
    };
    let calls_en: Vec<String> = crm
        .on("/events")
        .iter()
        .map(Msg::json)
        .filter(|v| with_ann("outage-en")(v))
        .filter_map(|v| v["call_id"].as_str().map(str::to_owned))
        .collect();
    let call_b = calls_en
        .iter()
        .find(|c| **c != call_a)
        .expect("caller B's announcement.started")
        .clone();
    let call_c = call_id_of_first_event(&crm, |v| {
        v["type"] == "call.offered" && v["data"]["dialled"] == "+18005550199"
    })
    .expect("caller C's call.offered");
    for id in [&call_a, &call_b, &call_c] {
        assert!(
            crm.wait(Duration::from_secs(10), |m| ended(m, id)),
            "no call.ended for {id}"
        );
    }

    let a_events = languages_of(&crm, &call_a);
    let nine = a_events
        .iter()
        .position(|(t, _)| t == "dtmf")
        .expect("caller A's 9");
    assert!(
        a_events[..nine].iter().all(|(_, l)| l == "en"),
        "{a_events:?}"
    );
    assert!(
        a_events[nine + 1..]
            .iter()
            .filter(|(t, _)| t != "announcement.completed")
            .all(|(_, l)| l == "es"),
        "{a_events:?}"
    );
    assert!(a_events.contains(&("callback.requested".into(), "es".into())));
    assert!(a_events.contains(&("announcement.started".into(), "es".into())));
    let b_events = languages_of(&crm, &call_b);
    assert!(b_events.iter().all(|(_, l)| l == "en"), "{b_events:?}");
    let c_events = languages_of(&crm, &call_c);
    assert!(
        c_events.len() > 3 && c_events.iter().all(|(_, l)| l == "es"),
        "{c_events:?}"
    );
    let started_c = crm
        .on("/events")
        .iter()
        .map(Msg::json)
        .find(|v| v["call_id"] == call_c.as_str() && with_ann("outage-es")(v));
    assert!(
        started_c.is_some(),
        "caller C's Spanish announcement.started"
    );
}
