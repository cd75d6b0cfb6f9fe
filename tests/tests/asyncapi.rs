//! `deploy/asyncapi.yaml`, the MQTT contract with the CRM, held to what ccedge does:
//!
//! * the document is AsyncAPI 3.0, its topics are exactly the eight of the contract (README.md,
//!   "The CRM contract"; listed again below), and every `$ref` in it resolves;
//! * every schema compiles (JSON Schema draft 07), every example in the document and every
//!   JSON payload in README.md validates, and bad payloads are rejected;
//! * what the core's types serialize to (every `EventKind`, the link's `CallbackRequest`,
//!   `CrmState`) matches the schemas, and the node's Announcement decoder accepts what the
//!   schema accepts and refuses unknown fields as the schema does;
//! * end to end: a real agent with a real Mosquitto, real calls from sipp; every message the
//!   agent publishes validates against its topic's schema.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ccedge_tests::broker::{have_mosquitto, sha256_hex, tone_wav, Crm, Mosquitto, Msg};
use ccedge_tests::{have_sipp, sipp, Agent, AgentOptions, RtpSink, TempDir};
use jsonschema::Validator;
use serde_json::{json, Value};
use shared::dtmf::Digit;
use shared::event::{Codec, EndReason, EventKind, SkipReason};
use shared::ids::{AnnouncementId, CallbackId};
use shared::number::PhoneNumber;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The AsyncAPI document as JSON.
fn doc() -> Value {
    let path = repo_root().join("deploy/asyncapi.yaml");
    let text = std::fs::read_to_string(&path).expect("read deploy/asyncapi.yaml");
    serde_norway::from_str(&text).expect("deploy/asyncapi.yaml is YAML")
}

/// The validator of `components.schemas.<name>`: the whole document with a root `$ref`, so
/// references between schemas resolve inside it (draft 07 ignores the root's other keys).
fn validator(doc: &Value, name: &str) -> Validator {
    assert!(
        doc["components"]["schemas"].get(name).is_some(),
        "no schema {name}"
    );
    let mut root = doc.clone();
    root["$ref"] = Value::String(format!("#/components/schemas/{name}"));
    jsonschema::draft7::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema {name} does not compile: {e}"))
}

fn errors(v: &Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn assert_valid(v: &Validator, name: &str, instance: &Value) {
    let errs = errors(v, instance);
    assert!(
        errs.is_empty(),
        "{name} rejects a good payload {instance}:\n{}",
        errs.join("\n")
    );
}

fn assert_invalid(v: &Validator, name: &str, instance: &Value, why: &str) {
    assert!(
        !v.is_valid(instance),
        "{name} accepts a bad payload ({why}): {instance}"
    );
}

/// Follows a local `$ref` (`#/a/b`) in the document.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Value::String(s) = x {
                        out.push(s.clone());
                    }
                } else {
                    collect_refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// The schema name a channel's (first JSON) message payload refers to.
fn payload_schema_of_channel(doc: &Value, channel: &str) -> Option<String> {
    let messages = doc["channels"][channel]["messages"].as_object()?;
    messages.values().find_map(|m| {
        let msg = resolve(doc, m["$ref"].as_str()?)?;
        let r = msg["payload"]["$ref"].as_str()?;
        r.strip_prefix("#/components/schemas/").map(str::to_owned)
    })
}

/// The schema for a topic the node or the CRM publishes on, by its address pattern.
fn schema_for_topic(doc: &Value, topic: &str) -> Option<String> {
    let channels = doc["channels"].as_object()?;
    for (name, ch) in channels {
        let address = ch["address"].as_str()?;
        if topic_matches(address, topic) {
            return payload_schema_of_channel(doc, name);
        }
    }
    None
}

/// `ccedge/v1/nodes/{site}/{node}/status` matches `ccedge/v1/nodes/phl/pi-001/status`.
fn topic_matches(address: &str, topic: &str) -> bool {
    let a: Vec<&str> = address.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    a.len() == t.len()
        && a.iter().zip(&t).all(|(a, t)| {
            (a.starts_with('{') && a.ends_with('}') && !t.is_empty() && !t.contains(['+', '#']))
                || a == t
        })
}

#[test]
fn the_document_is_asyncapi_3_with_exactly_the_contract_topics() {
    let d = doc();
    assert_eq!(d["asyncapi"], "3.0.0");
    assert!(d["info"]["title"].is_string() && d["info"]["version"].is_string());
    let addresses: BTreeSet<&str> = d["channels"]
        .as_object()
        .expect("channels")
        .values()
        .map(|c| c["address"].as_str().expect("address"))
        .collect();
    let contract: BTreeSet<&str> = [
        "ccedge/v1/announcements/{announcement_id}",
        "ccedge/v1/audio/{sha256}",
        "ccedge/v1/nodes/{site}/{node}/status",
        "ccedge/v1/nodes/{site}/{node}/events",
        "ccedge/v1/nodes/{site}/{node}/events/ack",
        "ccedge/v1/nodes/{site}/{node}/events/replay",
        "ccedge/v1/nodes/{site}/{node}/callbacks",
        "ccedge/v1/nodes/{site}/{node}/callbacks/{callback_id}/state",
    ]
    .into_iter()
    .collect();
    assert_eq!(addresses, contract);
    // Every address parameter is declared, and nothing else is.
    for (name, ch) in d["channels"].as_object().unwrap() {
        let address = ch["address"].as_str().unwrap();
        let used: BTreeSet<&str> = address
            .split('/')
            .filter_map(|l| l.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let declared: BTreeSet<&str> = ch["parameters"]
            .as_object()
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(used, declared, "channel {name}");
        assert!(
            ch["messages"].as_object().is_some_and(|m| !m.is_empty()),
            "channel {name} has no message"
        );
    }
    // Every channel has exactly one operation, QoS 1, retained as the contract says; the
    // node sends status, events and callbacks and receives the rest.
    let sends: BTreeSet<&str> = ["status", "events", "callbacks"].into_iter().collect();
    let retained: BTreeSet<&str> = ["announcement", "audio", "status"].into_iter().collect();
    let mut seen = BTreeSet::new();
    for (name, op) in d["operations"].as_object().expect("operations") {
        let ch_ref = op["channel"]["$ref"].as_str().expect("channel ref");
        let ch = ch_ref.strip_prefix("#/channels/").expect("a channel");
        assert!(seen.insert(ch.to_owned()), "two operations on {ch}");
        let action = if sends.contains(ch) {
            "send"
        } else {
            "receive"
        };
        assert_eq!(op["action"], action, "operation {name}");
        let mqtt = &op["bindings"]["mqtt"];
        assert_eq!(mqtt["qos"], 1, "operation {name}");
        assert_eq!(mqtt["retain"], retained.contains(ch), "operation {name}");
    }
    assert_eq!(seen.len(), d["channels"].as_object().unwrap().len());
    // Every reference resolves.
    let mut refs = Vec::new();
    collect_refs(&d, &mut refs);
    assert!(refs.len() > 50, "only {} refs", refs.len());
    for r in refs {
        assert!(resolve(&d, &r).is_some(), "unresolved $ref {r}");
    }
}

#[test]
fn every_schema_compiles_and_every_example_in_the_document_validates() {
    let d = doc();
    let schemas = d["components"]["schemas"].as_object().expect("schemas");
    assert!(schemas.len() >= 20);
    for name in schemas.keys() {
        let _ = validator(&d, name);
    }
    let mut checked = 0;
    for (name, msg) in d["components"]["messages"].as_object().expect("messages") {
        let Some(schema) = msg["payload"]["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
        else {
            continue;
        };
        let v = validator(&d, schema);
        let examples = msg["examples"].as_array().expect("examples");
        assert!(!examples.is_empty(), "message {name} has no example");
        for ex in examples {
            assert_valid(&v, schema, &ex["payload"]);
            checked += 1;
        }
    }
    assert!(checked >= 9, "{checked} examples");
}

/// The README's payloads: ```json blocks preceded by `<!-- schema: Name -->`, and the `-m`
/// payload of every `mosquitto_pub` command (by its topic).
fn readme_payloads(d: &Value) -> Vec<(String, Value, String)> {
    let text = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- schema:")
            .and_then(|r| r.strip_suffix("-->"))
        else {
            continue;
        };
        assert_eq!(lines.get(i + 1).map(|l| l.trim()), Some("```json"));
        let body: Vec<&str> = lines[i + 2..]
            .iter()
            .take_while(|l| l.trim() != "```")
            .copied()
            .collect();
        let v: Value = serde_json::from_str(&body.join("\n"))
            .unwrap_or_else(|e| panic!("README block for {name} is not JSON: {e}"));
        out.push((name.trim().to_owned(), v, format!("README line {}", i + 1)));
    }
    // Shell commands, continuation lines joined.
    let joined = text.replace("\\\n", " ");
    for (n, cmd) in joined.lines().enumerate() {
        let cmd = cmd.trim();
        if !cmd.starts_with("mosquitto_pub") {
            continue;
        }
        let Some(m) = cmd.split(" -m '").nth(1).and_then(|r| r.split('\'').next()) else {
            continue;
        };
        let topic = cmd
            .split(" -t ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("mosquitto_pub without -t")
            .trim_matches('"')
            .replace("$P", "ccedge/v1")
            .replace("$SITE", "phl")
            .replace("$NODE", "pi-001");
        let schema = schema_for_topic(d, &topic)
            .unwrap_or_else(|| panic!("README publishes on unknown topic {topic}"));
        let v: Value = serde_json::from_str(m)
            .unwrap_or_else(|e| panic!("README payload for {topic} is not JSON: {e}: {m}"));
        out.push((schema, v, format!("README command {n}: {topic}")));
    }
    out
}

#[test]
fn the_readme_payloads_validate() {
    let d = doc();
    let payloads = readme_payloads(&d);
    let names: BTreeSet<&str> = payloads.iter().map(|(n, _, _)| n.as_str()).collect();
    for needed in [
        "Announcement",
        "CallEvent",
        "CallbackRequest",
        "Status",
        "EventsAck",
        "EventsReplay",
        "CallbackState",
    ] {
        assert!(
            names.contains(needed),
            "README shows no {needed} payload (have {names:?})"
        );
    }
    for (name, v, at) in &payloads {
        let val = validator(&d, name);
        let errs = errors(&val, v);
        assert!(errs.is_empty(), "{at}: {name}: {}", errs.join("\n"));
    }
}

fn good_announcement() -> Value {
    json!({
        "id": "outage-phl-20261123", "version": 3, "priority": 10,
        "scope": {"sites": ["phl"], "dialled": ["+18005550100"], "caller_prefixes": ["+1215"]},
        "valid_from": "2026-11-23T06:00:00Z", "valid_until": "2026-11-23T12:00:00Z",
        "audio_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "text": "We are aware of a TV outage in Philadelphia.",
        "offer_callback": true, "language": "en"
    })
}

fn event(kind: &str, data: Value) -> Value {
    json!({
        "event_id": "phl-pi-001-7", "node": "pi-001", "site": "phl", "seq": 7,
        "call_id": "00000000000000a1", "call_seq": 2, "at": "2026-11-23T06:01:02.345Z",
        "language": "en", "type": kind, "data": data
    })
}

/// `v` with the value at `pointer` set to `x` (an object member is added if missing).
fn with(mut v: Value, pointer: &str, x: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    match v.pointer_mut(parent).expect("parent exists") {
        Value::Object(m) => {
            m.insert(key.to_owned(), x);
        }
        Value::Array(a) => a[key.parse::<usize>().expect("index")] = x,
        _ => panic!("{pointer}: parent is not a container"),
    }
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().expect("object").remove(key);
    v
}

/// A schema, a payload it accepts, and payloads it rejects (with why).
type Case<'a> = (&'a str, Value, &'a [(Value, &'a str)]);

#[test]
fn bad_payloads_are_rejected() {
    let d = doc();
    let ann = validator(&d, "Announcement");
    let a = good_announcement();
    assert_valid(&ann, "Announcement", &a);
    assert_valid(&ann, "Announcement", &without(a.clone(), "audio_sha256"));
    assert_valid(
        &ann,
        "Announcement",
        &json!({"id": "a", "version": 0, "text": "hi"}),
    );
    let bad_announcements = [
        (
            without(without(a.clone(), "audio_sha256"), "text"),
            "neither audio nor text",
        ),
        (without(a.clone(), "version"), "no version"),
        (with(a.clone(), "/version", json!(-1)), "negative version"),
        (
            with(a.clone(), "/version", json!(4_294_967_296u64)),
            "version over u32",
        ),
        (with(a.clone(), "/id", json!("a/b")), "slash in id"),
        (with(a.clone(), "/id", json!("..")), "dot-dot id"),
        (
            with(a.clone(), "/audio_sha256", json!("9f86d0")),
            "short hash",
        ),
        (
            with(
                a.clone(),
                "/audio_sha256",
                json!("9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"),
            ),
            "uppercase hash (the topic is lowercase)",
        ),
        (
            with(a.clone(), "/scope/dialled/0", json!("18005550100")),
            "number without +",
        ),
        (
            with(a.clone(), "/scope/dialled/0", json!("+08005550100")),
            "E.164 leading zero",
        ),
        (
            with(a.clone(), "/scope/sites/0", json!("phl/east")),
            "slash in a site",
        ),
        (
            with(a.clone(), "/valid_from", json!("2026-11-23 06:00")),
            "not RFC 3339",
        ),
        (
            with(a.clone(), "/offer_callback", json!("yes")),
            "not a bool",
        ),
        (
            with(a.clone(), "/scope/region", json!("x")),
            "unknown scope key",
        ),
        (with(a.clone(), "/signature", json!("x")), "unknown field"),
        (json!("outage"), "not an object"),
    ];
    for (v, why) in &bad_announcements {
        assert_invalid(&ann, "Announcement", v, why);
    }

    let ev = validator(&d, "CallEvent");
    assert_valid(&ev, "CallEvent", &event("dtmf", json!({"digit": "1"})));
    assert_valid(&ev, "CallEvent", &event("dtmf", json!({"digit": "#"})));
    let skipped = json!({
        "event_id": "x", "node": "pi-001", "site": "phl", "seq": 9, "call_seq": 0,
        "at": "2026-11-23T06:01:02Z", "type": "seq.skipped",
        "data": {"from": 3, "to": 5, "reason": "restart"}
    });
    assert_valid(&ev, "CallEvent", &skipped);
    assert_valid(
        &ev,
        "CallEvent",
        &with(skipped.clone(), "/call_seq", json!(0)),
    );
    assert_valid(
        &ev,
        "CallEvent",
        &with(
            with(skipped.clone(), "/type", json!("callback.expired")),
            "/data",
            json!({"callback_id": "cb-00000000000000a1-1"}),
        ),
    );
    let bad_events = [
        (event("call.held", json!({})), "unknown type"),
        (
            event("dtmf", json!({"digit": "D1"})),
            "digit spelled as the Rust variant",
        ),
        (event("dtmf", json!({"digit": "10"})), "two keys"),
        (event("dtmf", json!({"digit": 1})), "digit as a number"),
        (event("dtmf", json!({})), "dtmf without digit"),
        (
            event("dtmf", json!({"digit": "1", "duration": 3})),
            "extra data field",
        ),
        (
            event("call.answered", json!({"codec": "G722"})),
            "unknown codec",
        ),
        (
            event(
                "call.ended",
                json!({"reason": "hangup", "duration_ms": 1, "answered_ms": 0}),
            ),
            "unknown end reason",
        ),
        (
            event(
                "call.ended",
                json!({"reason": "caller_hangup", "duration_ms": 1}),
            ),
            "no answered_ms",
        ),
        (
            event(
                "callback.requested",
                json!({"callback_id": "cb", "position": 0}),
            ),
            "position 0",
        ),
        (
            event("call.transferred", json!({"target": "agents@pbx"})),
            "target without scheme",
        ),
        (
            event("call.offered", json!({"caller": "0215", "dialled": null})),
            "caller not E.164",
        ),
        (
            event(
                "announcement.completed",
                json!({"announcement_id": "a", "version": 1}),
            ),
            "no interrupted",
        ),
        (
            with(event("dtmf", json!({"digit": "1"})), "/seq", json!(0)),
            "seq 0",
        ),
        (
            with(event("dtmf", json!({"digit": "1"})), "/call_seq", json!(0)),
            "a call's event with call_seq 0",
        ),
        (
            with(
                event("dtmf", json!({"digit": "1"})),
                "/call_id",
                json!("A1"),
            ),
            "call id not 16 lowercase hex",
        ),
        (
            without(event("dtmf", json!({"digit": "1"})), "call_id"),
            "a call's event without call_id",
        ),
        (
            with(
                event("dtmf", json!({"digit": "1"})),
                "/at",
                json!("yesterday"),
            ),
            "bad timestamp",
        ),
        (
            with(event("dtmf", json!({"digit": "1"})), "/node", json!("a/b")),
            "slash in node",
        ),
        (
            with(event("dtmf", json!({"digit": "1"})), "/extra", json!(1)),
            "extra envelope field",
        ),
        (
            with(skipped.clone(), "/call_id", json!("00000000000000a1")),
            "seq.skipped with a call",
        ),
        (
            with(skipped.clone(), "/data/reason", json!("lost")),
            "unknown skip reason",
        ),
        (
            with(skipped.clone(), "/data/from", json!(0)),
            "skip from seq 0",
        ),
        (
            event("callback.expired", json!({"callback_id": "cb-1"})),
            "callback.expired with a call",
        ),
        (
            with(
                with(skipped.clone(), "/type", json!("callback.expired")),
                "/data",
                json!({}),
            ),
            "callback.expired without callback_id",
        ),
        (
            with(
                with(skipped.clone(), "/type", json!("callback.expired")),
                "/data",
                json!({"callback_id": "cb-1", "position": 1}),
            ),
            "callback.expired with an extra data field",
        ),
        (
            with(
                with(skipped.clone(), "/type", json!("callback.expired")),
                "/data",
                json!({"callback_id": "cb/1"}),
            ),
            "slash in callback_id",
        ),
    ];
    for (v, why) in &bad_events {
        assert_invalid(&ev, "CallEvent", v, why);
    }

    let cases: [Case<'_>; 5] = [
        (
            "EventsAck",
            json!({"upto_seq": 10}),
            &[
                (json!({"upto_seq": -1}), "negative"),
                (json!({"upto_seq": "10"}), "string"),
                (json!({}), "missing"),
                (json!({"upto_seq": 1, "node": "x"}), "extra field"),
            ],
        ),
        (
            "EventsReplay",
            json!({"from_seq": 1, "to_seq": 5}),
            &[
                (json!({"from_seq": 1}), "no to_seq"),
                (json!({"from_seq": 0, "to_seq": 5}), "seq 0"),
                (json!({"from_seq": 1.5, "to_seq": 5}), "not an integer"),
            ],
        ),
        (
            "CallbackState",
            json!({"state": "completed", "at": "2026-11-23T06:10:00Z"}),
            &[
                (
                    json!({"state": "done", "at": "2026-11-23T06:10:00Z"}),
                    "unknown state",
                ),
                (json!({"state": "accepted"}), "no at"),
                (
                    json!({"state": "accepted", "at": "2026-11-23T06:10:00Z", "agent": 1}),
                    "extra field",
                ),
            ],
        ),
        (
            "Status",
            json!({"state": "offline"}),
            &[
                (json!({"state": "online"}), "online without its fields"),
                (json!({"state": "away"}), "unknown state"),
                (json!({"version": "0.1.0"}), "no state"),
                (
                    json!({"state": "online", "version": "0.1.0",
                           "started_at": "2026-11-23T05:58:00Z", "callbacks_waiting": 0,
                           "outbox_depth": 0,
                           "announcements": [{"id": "a", "version": 1, "state": "playing"}]}),
                    "unknown announcement state",
                ),
            ],
        ),
        (
            "CallbackRequest",
            json!({"callback_id": "cb-1", "node": "pi-001", "site": "phl",
                   "call_id": "00000000000000a1", "requested_at": "2026-11-23T06:01:30.120Z",
                   "caller": null, "callback_number": "+12155550123", "dialled": null,
                   "announcement_id": null, "position": 1, "language": "en",
                   "window": {"not_before": "2026-11-23T06:01:30Z", "not_after": "2026-11-24T06:01:30Z"}}),
            &[
                (
                    json!({"callback_id": "cb-1", "node": "pi-001", "site": "phl",
                           "call_id": "00000000000000a1",
                           "requested_at": "2026-11-23T06:01:30.120Z",
                           "callback_number": "+12155550123", "position": 1}),
                    "no window",
                ),
                (
                    json!({"callback_id": "cb-1", "node": "pi-001", "site": "phl",
                           "call_id": "00000000000000a1",
                           "requested_at": "2026-11-23T06:01:30.120Z",
                           "callback_number": "+12155550123", "position": 1,
                           "window": {"not_before": "tomorrow", "not_after": "2026-11-24T06:01:30Z"}}),
                    "window not RFC 3339",
                ),
                (
                    json!({"callback_id": "cb-1", "node": "pi-001", "site": "phl",
                           "call_id": "00000000000000a1",
                           "requested_at": "2026-11-23T06:01:30.120Z", "position": 1}),
                    "no callback_number",
                ),
                (
                    json!({"callback_id": "cb-1", "node": "pi-001", "site": "phl",
                           "call_id": "00000000000000a1",
                           "requested_at": "2026-11-23T06:01:30.120Z",
                           "callback_number": "2155550123", "position": 1}),
                    "callback number not E.164",
                ),
            ],
        ),
    ];
    for (name, good, bad) in &cases {
        let v = validator(&d, name);
        assert_valid(&v, name, good);
        for (b, why) in *bad {
            assert_invalid(&v, name, b, why);
        }
    }
    // The Status schema lets the node add diagnostics; the others do not take extra fields.
    let st = validator(&d, "Status");
    assert_valid(
        &st,
        "Status",
        &json!({"state": "offline", "last_error": "x"}),
    );
}

/// A CallEvent as the link would publish it: the envelope around the core's serde output.
fn envelope(kind: &EventKind, call: bool) -> Value {
    let mut v = serde_json::to_value(kind).expect("serialize EventKind");
    let obj = v.as_object_mut().expect("tagged object");
    obj.insert("event_id".into(), json!("phl-pi-001-42"));
    obj.insert("node".into(), json!("pi-001"));
    obj.insert("site".into(), json!("phl"));
    obj.insert("seq".into(), json!(42));
    obj.insert("at".into(), json!("2026-11-23T06:01:02.345Z"));
    if call {
        obj.insert("call_id".into(), json!("00000000000000a1"));
        obj.insert("call_seq".into(), json!(3));
        obj.insert("language".into(), json!("es"));
    } else {
        obj.insert("call_seq".into(), json!(0));
        obj.insert("language".into(), Value::Null);
    }
    v
}

#[test]
fn the_core_types_serialize_to_what_the_schemas_say() {
    let d = doc();
    let ev = validator(&d, "CallEvent");
    let aid = AnnouncementId::new("outage-phl-20261123").unwrap();
    let num = |s: &str| Some(PhoneNumber::parse(s).unwrap());
    let mut kinds = vec![
        EventKind::CallOffered {
            caller: num("+12155550123"),
            dialled: num("+18005550100"),
        },
        EventKind::CallOffered {
            caller: None,
            dialled: None,
        },
        EventKind::CallAnswered { codec: Codec::Pcmu },
        EventKind::CallAnswered { codec: Codec::Pcma },
        EventKind::AnnouncementStarted {
            announcement_id: aid.clone(),
            version: u32::MAX,
        },
        EventKind::AnnouncementCompleted {
            announcement_id: aid,
            version: 3,
            interrupted: true,
        },
        EventKind::CallbackRequested {
            callback_id: CallbackId::new("cb-00000000000000a1").unwrap(),
            position: 1,
        },
        EventKind::CallTransferred {
            target: "sip:agents@pbx.example.com".try_into().unwrap(),
        },
    ];
    kinds.extend(Digit::ALL.iter().map(|&digit| EventKind::Dtmf { digit }));
    for reason in [
        EndReason::CallerHangup,
        EndReason::NodeHangup,
        EndReason::Transferred,
        EndReason::Abandoned,
        EndReason::Rejected,
        EndReason::MediaTimeout,
        EndReason::SessionExpired,
        EndReason::Error,
        EndReason::Shutdown,
    ] {
        kinds.push(EventKind::CallEnded {
            reason,
            duration_ms: 20_000,
            answered_ms: 0,
        });
    }
    let mut types = BTreeSet::new();
    for k in &kinds {
        let v = envelope(k, true);
        assert_eq!(v["type"], k.type_str());
        types.insert(k.type_str());
        assert_valid(&ev, "CallEvent", &v);
    }
    for reason in [SkipReason::Restart, SkipReason::Unavailable] {
        let k = EventKind::SeqSkipped {
            from: 1,
            to: 9,
            reason,
        };
        types.insert(k.type_str());
        let v = envelope(&k, false);
        assert_valid(&ev, "CallEvent", &v);
        // A skip is never a call's event.
        assert_invalid(
            &ev,
            "CallEvent",
            &envelope(&k, true),
            "seq.skipped with a call",
        );
    }
    // The other node-level event: a booked callback that outlived `callbacks.max_age_s`.
    let k = EventKind::CallbackExpired {
        callback_id: CallbackId::new("cb-00000000000000a1-1").unwrap(),
    };
    let v = envelope(&k, false);
    assert_eq!(v["type"], k.type_str());
    assert_eq!(v["data"], json!({"callback_id": "cb-00000000000000a1-1"}));
    types.insert(k.type_str());
    assert_valid(&ev, "CallEvent", &v);
    assert_valid(&ev, "CallEvent", &with(v, "/call_id", Value::Null));
    assert_invalid(
        &ev,
        "CallEvent",
        &envelope(&k, true),
        "callback.expired with a call",
    );
    // Every type the schema lists is one the core has, and the other way round.
    let listed: BTreeSet<&str> = d["components"]["schemas"]["CallEvent"]["properties"]["type"]
        ["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(listed, types);

    // The link's CallbackRequest, with and without the optional numbers.
    let cr = validator(&d, "CallbackRequest");
    let mut req = edge::link::CallbackRequest {
        callback_id: "cb-00000000000000a1".into(),
        node: "pi-001".into(),
        site: "phl".into(),
        call_id: "00000000000000a1".into(),
        requested_at: "2026-11-23T06:01:30.120Z".into(),
        caller: Some("+12155550123".into()),
        callback_number: "+12155550123".into(),
        dialled: Some("+18005550100".into()),
        announcement_id: Some("outage-phl-20261123".into()),
        position: 5,
        window: edge::zone::window_json(
            &jiff::tz::TimeZone::get("America/New_York").unwrap(),
            shared::callback::Window::new(
                shared::time::UnixMillis::parse_rfc3339("2026-11-24T13:00:00Z").unwrap(),
                shared::time::UnixMillis::parse_rfc3339("2026-11-24T17:00:00Z").unwrap(),
            )
            .unwrap(),
        ),
        language: Some("es".into()),
    };
    assert_eq!(
        serde_json::to_value(&req.window).unwrap(),
        json!({"not_before": "2026-11-24T08:00:00-05:00", "not_after": "2026-11-24T12:00:00-05:00"})
    );
    assert_valid(&cr, "CallbackRequest", &serde_json::to_value(&req).unwrap());
    req.caller = None;
    req.dialled = None;
    req.announcement_id = None;
    // A callback restored from before the node had languages.
    req.language = None;
    let v = serde_json::to_value(&req).unwrap();
    assert!(v["language"].is_null(), "the field is present, null: {v}");
    assert_valid(&cr, "CallbackRequest", &v);
    assert_invalid(
        &cr,
        "CallbackRequest",
        &without(v.clone(), "language"),
        "CallbackRequest without language",
    );
    assert_invalid(
        &cr,
        "CallbackRequest",
        &with(v, "/language", json!("Spanish")),
        "language not a tag",
    );

    // The CRM's callback states are the core's.
    let cs = validator(&d, "CallbackState");
    for s in ["accepted", "assigned", "completed", "cancelled"] {
        let state = shared::callback::CrmState::parse(s).expect("core knows the state");
        assert_eq!(serde_json::to_value(state).unwrap(), json!(s));
        assert_valid(
            &cs,
            "CallbackState",
            &json!({"state": s, "at": "2026-11-23T06:10:00Z"}),
        );
    }
    // A moved window; a window without its end is refused.
    assert_valid(
        &cs,
        "CallbackState",
        &json!({"state": "accepted", "at": "2026-11-23T06:10:00Z",
                "window": {"not_before": "2026-11-24T13:00:00-05:00", "not_after": "2026-11-24T17:00:00-05:00"}}),
    );
    assert!(
        !cs.is_valid(&json!({"state": "accepted", "at": "2026-11-23T06:10:00Z",
                              "window": {"not_before": "2026-11-24T13:00:00-05:00"}})),
        "a window needs not_after"
    );
}

#[test]
fn the_node_accepts_what_the_announcement_schema_accepts_and_refuses_unknown_fields() {
    let d = doc();
    let ann = validator(&d, "Announcement");
    let accepted = [
        good_announcement(),
        json!({"id": "a", "version": 0, "text": "hi"}),
        json!({"id": "b.2", "version": 4_294_967_295u64, "audio_sha256": "00".repeat(32),
               "scope": {}, "priority": -5, "offer_callback": false, "language": "pt-BR"}),
        serde_json::from_slice(
            &edge::link::signature::sign_document(
                &[9; 32],
                &serde_json::to_vec(&good_announcement()).unwrap(),
            )
            .unwrap(),
        )
        .unwrap(),
    ];
    for a in &accepted {
        assert_valid(&ann, "Announcement", a);
        let bytes = serde_json::to_vec(a).unwrap();
        if let Err(e) = edge::announcements::decode(&bytes) {
            panic!("the node refuses a schema-valid announcement {a}: {e}");
        }
    }
    let refused = [
        with(good_announcement(), "/signature", json!("x")),
        with(good_announcement(), "/signature", json!("A".repeat(88))),
        with(good_announcement(), "/sig", json!("x")),
        with(good_announcement(), "/scope/region", json!("x")),
        without(without(good_announcement(), "audio_sha256"), "text"),
        with(good_announcement(), "/audio_sha256", json!("9f86d0")),
        with(good_announcement(), "/id", json!("a/b")),
        with(good_announcement(), "/valid_until", json!("noon")),
    ];
    for a in &refused {
        assert!(!ann.is_valid(a), "schema accepts {a}");
        let bytes = serde_json::to_vec(a).unwrap();
        assert!(
            edge::announcements::decode(&bytes).is_err(),
            "the node accepts a schema-invalid announcement {a}"
        );
    }
}

// ---- end to end: the real agent, a real Mosquitto, real calls ------------------------------

#[test]
fn every_message_the_agent_publishes_matches_its_topics_schema() {
    if !have_sipp() || !have_mosquitto() {
        assert!(
            std::env::var_os("CI").is_none(),
            "sipp and mosquitto are required in CI"
        );
        eprintln!("sipp or mosquitto not installed: skipping");
        return;
    }
    let d = doc();
    let dir = TempDir::new("asyncapi-e2e");
    let broker = Mosquitto::start(dir.path());
    let crm = Crm::connect(broker.port, "asyncapi-crm", &["ccedge/v1/#"]);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let opts = AgentOptions {
        mqtt_url: broker.url(),
        ivr_extra: "languages = [\"en\", \"es\"]".into(),
        ..AgentOptions::default()
    };
    let agent = Agent::start(&state, &opts);
    let node = "ccedge/v1/nodes/phl/test-node";
    let wait = |what: &str, pred: &dyn Fn(&[Msg]) -> bool| {
        assert!(
            crm.wait(Duration::from_secs(20), pred),
            "no {what}; the CRM saw {:#?}",
            crm.messages()
                .iter()
                .map(|m| (
                    m.topic.clone(),
                    String::from_utf8_lossy(&m.payload).into_owned()
                ))
                .collect::<Vec<_>>()
        );
    };
    let status = format!("{node}/status");
    wait("online status", &|m| {
        m.iter()
            .any(|m| m.topic == status && m.json()["state"] == "online")
    });

    // 1. A call that books a callback (barge-in "1", confirm "1"; as in agent_calls.rs).
    let sink = RtpSink::new();
    let (target, port) = (agent.sip, sink.port());
    let booking = std::thread::spawn(move || {
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
    assert!(
        agent.wait_log("digit=D1", Duration::from_secs(5)),
        "first key not seen"
    );
    std::thread::sleep(Duration::from_millis(1200));
    let mut seq = 100u16;
    sink.send_digit(agent_rtp, Digit::D1, 101, 123_456, &mut seq);
    let run = booking.join().unwrap();
    assert_eq!(run.code, Some(0), "{}", run.output);
    let callbacks = format!("{node}/callbacks");
    wait("callback request", &|m| {
        m.iter().any(|m| m.topic == callbacks)
    });

    // 2. The CRM publishes audio and an announcement; the node reports it active, and the
    //    next call plays it.
    let wav = tone_wav(440.0, 1.0, 0.3);
    let hash = sha256_hex(&wav);
    crm.publish(&format!("ccedge/v1/audio/{hash}"), &wav, true);
    let ann = json!({"id": "e2e-outage", "version": 1, "audio_sha256": hash,
                     "offer_callback": false});
    crm.publish(
        "ccedge/v1/announcements/e2e-outage",
        ann.to_string().as_bytes(),
        true,
    );
    wait("status listing the announcement as active", &|m| {
        m.iter().any(|m| {
            m.topic == status
                && m.json()["announcements"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|a| a["id"] == "e2e-outage" && a["state"] == "active")
                })
        })
    });
    //    This caller presses 9 for Spanish during the greeting.
    let sink2 = RtpSink::new();
    let port2 = sink2.port();
    let target = agent.sip;
    let listen = std::thread::spawn(move || {
        sipp(
            "listen.xml",
            target,
            &[("rtpport", port2.to_string())],
            &["-d", "3000"],
        )
    });
    assert!(
        sink2.wait_for(5, Duration::from_secs(5)) >= 5,
        "no greeting"
    );
    let mut seq = 500u16;
    sink2.send_digit(sink2.packets()[0].from, Digit::D9, 101, 9_000, &mut seq);
    let run = listen.join().unwrap();
    assert_eq!(run.code, Some(0), "{}", run.output);
    let events = format!("{node}/events");
    wait("announcement.completed", &|m| {
        m.iter()
            .any(|m| m.topic == events && m.json()["type"] == "announcement.completed")
    });

    // 3. The CRM acknowledges, asks for a replay of what it no longer needs (the node answers
    //    with seq.skipped or the events again), and accepts the callback.
    let last_seq = crm
        .on("/events")
        .iter()
        .filter_map(|m| m.json()["seq"].as_u64())
        .max()
        .expect("events");
    crm.publish(
        &format!("{node}/events/ack"),
        json!({"upto_seq": last_seq}).to_string().as_bytes(),
        false,
    );
    crm.publish(
        &format!("{node}/events/replay"),
        json!({"from_seq": 1, "to_seq": 2}).to_string().as_bytes(),
        false,
    );
    let cb = crm.on("/callbacks")[0].json();
    let cb_id = cb["callback_id"].as_str().expect("callback_id").to_owned();
    crm.publish(
        &format!("{node}/callbacks/{cb_id}/state"),
        json!({"state": "accepted", "at": "2026-11-23T06:10:00Z"})
            .to_string()
            .as_bytes(),
        false,
    );
    wait("seq.skipped answering the replay", &|m| {
        m.iter()
            .any(|m| m.topic == events && m.json()["type"] == "seq.skipped")
    });

    // 4. A graceful stop publishes the offline status.
    let mut agent = agent;
    assert_eq!(agent.terminate(), Some(0));
    wait("offline status", &|m| {
        m.iter()
            .any(|m| m.topic == status && m.json()["state"] == "offline")
    });

    // Every message on a contract topic validates against that topic's schema (audio is
    // bytes; everything else JSON).
    let mut types = BTreeSet::new();
    let mut by_schema: BTreeMap<String, usize> = BTreeMap::new();
    for m in crm.messages() {
        if m.topic.starts_with("ccedge/v1/audio/") {
            continue;
        }
        let schema = schema_for_topic(&d, &m.topic)
            .unwrap_or_else(|| panic!("a message on an unknown topic {}", m.topic));
        let text = String::from_utf8_lossy(&m.payload);
        let v: Value = serde_json::from_slice(&m.payload)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {text}", m.topic));
        let errs = errors(&validator(&d, &schema), &v);
        assert!(
            errs.is_empty(),
            "{} ({schema}) {text}:\n{}",
            m.topic,
            errs.join("\n")
        );
        if let Some(n) = v.get("node") {
            assert_eq!(n, "test-node", "{text}");
            assert_eq!(v["site"], "phl", "{text}");
        }
        if schema == "CallEvent" {
            types.insert(v["type"].as_str().unwrap_or_default().to_owned());
        }
        *by_schema.entry(schema).or_default() += 1;
    }
    // Both languages were heard: the booking caller's events are English, the second
    // caller's are Spanish from the key on.
    let languages: BTreeSet<String> = crm
        .on("/events")
        .iter()
        .filter_map(|m| m.json()["language"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        languages,
        BTreeSet::from(["en".to_owned(), "es".to_owned()]),
        "event languages"
    );
    assert_eq!(crm.on("/callbacks")[0].json()["language"], "en");
    for t in [
        "call.offered",
        "call.answered",
        "dtmf",
        "callback.requested",
        "announcement.started",
        "announcement.completed",
        "call.ended",
        "seq.skipped",
    ] {
        assert!(types.contains(t), "no {t} event among {types:?}");
    }
    for s in [
        "Status",
        "CallEvent",
        "CallbackRequest",
        "Announcement",
        "EventsAck",
        "EventsReplay",
        "CallbackState",
    ] {
        assert!(by_schema.contains_key(s), "no {s} message: {by_schema:?}");
    }
}

#[test]
fn topic_matching_follows_the_address_levels() {
    assert!(topic_matches(
        "ccedge/v1/nodes/{site}/{node}/status",
        "ccedge/v1/nodes/phl/pi-001/status"
    ));
    assert!(!topic_matches(
        "ccedge/v1/nodes/{site}/{node}/status",
        "ccedge/v1/nodes/phl/pi-001/events"
    ));
    assert!(!topic_matches(
        "ccedge/v1/nodes/{site}/{node}/status",
        "ccedge/v1/nodes/phl/status"
    ));
    assert!(!topic_matches(
        "ccedge/v1/nodes/{site}/{node}/status",
        "ccedge/v1/nodes/+/pi-001/status"
    ));
}

#[test]
fn call_events_carry_the_callers_language_and_node_level_events_none() {
    let d = doc();
    let ev = validator(&d, "CallEvent");
    let dtmf = event("dtmf", json!({"digit": "9"}));
    assert_valid(&ev, "CallEvent", &dtmf);
    assert_valid(
        &ev,
        "CallEvent",
        &with(dtmf.clone(), "/language", json!("pt-br")),
    );
    assert_invalid(
        &ev,
        "CallEvent",
        &without(dtmf.clone(), "language"),
        "a call event without language",
    );
    assert_invalid(
        &ev,
        "CallEvent",
        &with(dtmf.clone(), "/language", Value::Null),
        "a call event with a null language",
    );
    assert_invalid(
        &ev,
        "CallEvent",
        &with(dtmf, "/language", json!("ES")),
        "an upper-case tag",
    );
    let skipped = envelope(
        &EventKind::SeqSkipped {
            from: 1,
            to: 2,
            reason: SkipReason::Restart,
        },
        false,
    );
    assert_valid(&ev, "CallEvent", &skipped);
    assert_valid(&ev, "CallEvent", &without(skipped.clone(), "language"));
    assert_invalid(
        &ev,
        "CallEvent",
        &with(skipped, "/language", json!("en")),
        "a node-level event with a language",
    );
}
