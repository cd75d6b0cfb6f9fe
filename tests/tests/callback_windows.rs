//! Callback windows with the real agent and Mosquitto: a caller picks "tomorrow morning" and
//! the CRM receives that window in the configured zone; out of hours the first offer names
//! the opening time and a caller who presses nothing gets it.
//!
//! The offers depend on the local time, so each test picks a fixed-offset zone (`Etc/GMT-9`
//! is UTC+9) that puts "now" at a known hour, and computes the expected window itself with
//! the time-zone library, not with ccedge's code.

#![allow(clippy::disallowed_methods)] // the tests time real sockets and read the clock

use std::time::Duration;

use ccedge_tests::broker::{mosquitto_or_skip, Crm, Mosquitto};
use ccedge_tests::{Agent, AgentOptions, CallGateway, RtpSink, TempDir};
use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;
use serde_json::Value;
use shared::callback::window::{Clock, DayRef};
use shared::dtmf::Digit;
use shared::ivr::Prompt;

const NODE: &str = "ccedge/v1/nodes/phl/test-node";
const HOURS: &str = "[callbacks]\nhours = [\"Mon-Sun 08:00-20:00\"]\n";

/// A zone where the local hour is now `hour`: its IANA name, offset (hours east) and the
/// local date/time.
fn zone_at_local_hour(hour: i32) -> (String, i32, jiff::civil::DateTime) {
    let now = Timestamp::now();
    let utc_hour = i32::from(now.to_zoned_datetime(TimeZone::UTC).hour());
    let mut o = (hour - utc_hour).rem_euclid(24);
    if o > 14 {
        o -= 24;
    }
    let name = match o {
        0 => "Etc/UTC".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    let tz = TimeZone::fixed(Offset::constant(i8::try_from(o).unwrap()));
    (name, o, now.to_zoned_datetime(tz).datetime())
}

fn offset_text(o: i32) -> String {
    let sign = if o < 0 { '-' } else { '+' };
    format!("{sign}{:02}:00", o.abs())
}

fn callback_request(crm: &Crm, agent: &Agent) -> Value {
    assert!(
        crm.wait(Duration::from_secs(30), |m| m
            .iter()
            .any(|m| m.topic.ends_with("/callbacks"))),
        "no CallbackRequest reached the CRM\n{}",
        agent.log().join("\n")
    );
    crm.on("/callbacks")[0].json()
}

#[test]
fn a_caller_picks_tomorrow_morning_and_the_crm_gets_that_window() {
    if !mosquitto_or_skip() {
        return;
    }
    // 09:xx local: the offers are as soon as possible, this afternoon, this evening and
    // tomorrow morning (key 4).
    let (zone, o, local) = zone_at_local_hour(9);
    let dir = TempDir::new("window-pick");
    let broker = Mosquitto::start(dir.path());
    let crm = Crm::connect(broker.port, "crm-window", &[&format!("{NODE}/callbacks")]);
    let opts = AgentOptions {
        mqtt_url: broker.url(),
        extra: format!("{HOURS}timezone = \"{zone}\"\n"),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    let (media, mut seq) =
        ccedge_tests::call_and_press_one_one(&agent, &mut gw, 1, "12155550123", &rtp);
    // Let the offers play a while (about 8 s), then press 4.
    gw.pump(agent.sip, Duration::from_secs(8));
    rtp.send_digit(media, Digit::D4, 101, 2_000_000, &mut seq);
    let req = callback_request(&crm, &agent);
    let tomorrow = local.date().tomorrow().unwrap();
    let off = offset_text(o);
    assert_eq!(
        req["window"],
        serde_json::json!({
            "not_before": format!("{tomorrow}T08:00:00{off}"),
            "not_after": format!("{tomorrow}T12:00:00{off}"),
        }),
        "{req}"
    );
    assert_eq!(req["position"], 1, "{req}");
    assert!(gw.wait_ended(agent.sip, Duration::from_secs(30)));
    // The caller heard the question and the first offers before pressing 4, then "booked".
    ccedge_tests::assert_heard_in_order(
        &rtp,
        &[
            Prompt::WindowQuestion,
            Prompt::WindowFor,
            Prompt::WindowAsap,
            Prompt::WindowPress,
            Prompt::Digit(Digit::D1),
            Prompt::WindowFor,
            Prompt::DayPart(DayRef::Today, shared::callback::window::DayPart::Afternoon),
            Prompt::WindowBetween,
            Prompt::Clock(Clock(12 * 60)),
            Prompt::WindowAnd,
            Prompt::Booked,
            Prompt::YouAreNumber,
            Prompt::Number(1),
        ],
    );
    // The window is on disk too.
    let store = edge::store::Store::open(dir.path()).expect("store");
    let rec = &store.callbacks().expect("callbacks")[0];
    let nb = rec.window.not_before.0;
    let expect = jiff::civil::date(tomorrow.year(), tomorrow.month(), tomorrow.day())
        .at(8, 0, 0, 0)
        .to_zoned_datetime(TimeZone::fixed(Offset::constant(i8::try_from(o).unwrap())))
        .unwrap()
        .timestamp()
        .as_millisecond();
    assert_eq!(nb, expect);
    drop(store);

    // The CRM moves it to the afternoon: the node keeps the new window on disk.
    let id = req["callback_id"].as_str().expect("callback_id");
    let moved = serde_json::json!({
        "state": "accepted",
        "at": "2026-11-23T06:10:00Z",
        "window": {
            "not_before": format!("{tomorrow}T13:00:00{off}"),
            "not_after": format!("{tomorrow}T17:00:00{off}"),
        }
    });
    crm.publish(
        &format!("{NODE}/callbacks/{id}/state"),
        moved.to_string().as_bytes(),
        false,
    );
    let on_disk = (0..100).find_map(|_| {
        let store = edge::store::Store::open(dir.path()).expect("store");
        let rec = store.callbacks().expect("callbacks").remove(0);
        if rec.state == shared::callback::State::Accepted {
            return Some(rec);
        }
        std::thread::sleep(Duration::from_millis(100));
        None
    });
    let rec = on_disk.expect("the CRM's update never reached the disk");
    assert_eq!(rec.window.not_before.0, expect + 5 * 3_600_000);
    assert_eq!(rec.window.not_after.0, expect + 9 * 3_600_000);
}

#[test]
fn out_of_hours_the_first_offer_names_the_opening_and_no_key_takes_it() {
    if !mosquitto_or_skip() {
        return;
    }
    // 03:xx local: closed until 08:00 today.
    let (zone, o, local) = zone_at_local_hour(3);
    let dir = TempDir::new("window-closed");
    let broker = Mosquitto::start(dir.path());
    let crm = Crm::connect(broker.port, "crm-window2", &[&format!("{NODE}/callbacks")]);
    let opts = AgentOptions {
        mqtt_url: broker.url(),
        extra: format!("{HOURS}timezone = \"{zone}\"\n"),
        ivr_extra: "no_input_timeout_ms = 1000\n".into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(dir.path(), &opts);
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    ccedge_tests::call_and_press_one_one(&agent, &mut gw, 1, "12155550123", &rtp);
    // No key: when the offers have been spoken and a second passed, the first is booked.
    let req = callback_request(&crm, &agent);
    let today = local.date();
    let off = offset_text(o);
    assert_eq!(
        req["window"],
        serde_json::json!({
            "not_before": format!("{today}T08:00:00{off}"),
            "not_after": format!("{today}T20:00:00{off}"),
        }),
        "{req}"
    );
    assert!(gw.wait_ended(agent.sip, Duration::from_secs(30)));
    ccedge_tests::assert_heard_in_order(
        &rtp,
        &[
            Prompt::WindowQuestion,
            Prompt::WindowFor,
            Prompt::WindowWhenOpen,
            Prompt::Day(DayRef::Today),
            Prompt::WindowAt,
            Prompt::Clock(Clock(8 * 60)),
            Prompt::WindowPress,
            Prompt::Digit(Digit::D1),
            Prompt::Booked,
            Prompt::YouAreNumber,
            Prompt::Number(1),
        ],
    );
}
