//! The CRM link under a bad day on the broker side (issue #14): messages larger than the node
//! accepts, and a broker that drops every connection. The real agent binary, a real Mosquitto
//! on a free port, sipp as the gateway.

#![allow(clippy::disallowed_methods)] // the tests time real processes

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ccedge_tests::broker::{have_mosquitto, sha256_hex, tone_wav, Crm, Mosquitto};
use ccedge_tests::{ccedge_cli, free_port_range, have_sipp, sipp, Agent, CliRun, RtpSink, TempDir};

const P: &str = "ccedge/v1";
const NODE: &str = "ccedge/v1/nodes/phl/test-node";
/// The agent's MQTT client id (`ccedge-{site}-{node}`).
const CLIENT_ID: &str = "ccedge-phl-test-node";

fn skip() -> bool {
    if !have_sipp() || !have_mosquitto() {
        eprintln!("sipp or mosquitto not installed: skipped (CI installs both)");
        return true;
    }
    false
}

/// A config in `dir` for the broker at `url`, with `mqtt_extra` inside `[mqtt]` and
/// `announcements_extra` inside `[announcements]`.
fn config(dir: &Path, url: &str, mqtt_extra: &str, announcements_extra: &str) -> PathBuf {
    let (pmin, pmax) = free_port_range(20);
    let path = dir.join("ccedge.toml");
    let text = format!(
        "[node]\nid = \"test-node\"\nsite = \"phl\"\nstate_dir = \"{dir}\"\n\n\
         [sip]\nlisten = \"127.0.0.1:0\"\nallow = [\"127.0.0.0/8\"]\n\n\
         [rtp]\nport_min = {pmin}\nport_max = {pmax}\n\n\
         [mqtt]\nurl = \"{url}\"\n{mqtt_extra}\n\n\
         [announcements]\n{announcements_extra}\n\n\
         [control]\nsocket = \"{sock}\"\n",
        dir = dir.display(),
        sock = dir.join("control.sock").display(),
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn status(config: &Path) -> serde_json::Value {
    let run: CliRun = ccedge_cli(&[
        "status",
        "--json",
        "--config",
        config.to_str().expect("utf-8"),
    ]);
    assert_eq!(run.code, Some(0), "ccedge status: {}", run.stderr);
    serde_json::from_str(&run.stdout).expect("status JSON")
}

/// How many times the agent logged a completed connection to the broker.
fn connects(agent: &Agent) -> usize {
    agent
        .log()
        .iter()
        .filter(|l| l.contains("connected to the broker"))
        .count()
}

fn announcement(id: &str, version: u32, sha: &str) -> String {
    format!(
        r#"{{"id":"{id}","version":{version},"priority":10,"scope":{{}},"audio_sha256":"{sha}","offer_callback":false,"language":"en"}}"#
    )
}

/// Waits until the node's latest retained status lists `id` as `active`.
fn wait_active(crm: &Crm, id: &str, timeout: Duration) -> bool {
    crm.wait(timeout, |msgs| {
        msgs.iter()
            .rev()
            .find(|m| m.topic == format!("{NODE}/status"))
            .is_some_and(|m| {
                let v = m.json();
                v["state"] == "online"
                    && v["announcements"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|a| a["id"] == id && a["state"] == "active"))
            })
    })
}

#[test]
fn oversized_messages_are_discarded_and_the_link_stays_up() {
    if skip() {
        return;
    }
    let dir = TempDir::new("mqtt-oversized");
    let broker = Mosquitto::start(dir.path());
    let crm = Crm::connect(broker.port, "crm-oversized", &[&format!("{NODE}/#")]);
    // The node accepts at most 100 kB; its client reads packets up to 2 × 100 kB + 64 KiB.
    let cfg = config(
        dir.path(),
        &broker.url(),
        "max_payload_bytes = 100000",
        "max_audio_bytes = 100000",
    );

    // Waiting on the broker before the node first connects: a retained 300 kB "audio file"
    // on the audio topic, above the client's packet limit.
    let big = vec![0x55u8; 300_000];
    crm.publish(&format!("{P}/audio/{}", sha256_hex(&big)), &big, true);
    std::thread::sleep(Duration::from_millis(300));

    let agent = Agent::start_with_config(dir.path(), &cfg);
    let online = crm.wait(Duration::from_secs(15), |msgs| {
        msgs.iter()
            .any(|m| m.topic == format!("{NODE}/status") && m.json()["state"] == "online")
    });
    assert!(
        online,
        "the node never came online:\n{}",
        agent.log().join("\n")
    );

    // While connected: one above the accepted size but within the client's limit, and a
    // 34 MB one on the announcements topic, far above it (QoS 1, not retained).
    let mid = vec![b'x'; 150_000];
    crm.publish(&format!("{P}/announcements/mid"), &mid, false);
    let huge = vec![b'{'; 34_000_000];
    crm.publish(&format!("{P}/announcements/huge"), &huge, false);
    drop(huge);

    // Every one of them is discarded and counted, and the node is connected again.
    assert!(
        agent.wait_log("announcements/huge` is larger", Duration::from_secs(30)),
        "the 34 MB message was never discarded:\n{}",
        agent.log().join("\n")
    );
    let t0 = Instant::now();
    let mut s = status(&cfg);
    while t0.elapsed() < Duration::from_secs(10) && s["mqtt"]["connected"] != true {
        std::thread::sleep(Duration::from_millis(200));
        s = status(&cfg);
    }
    assert!(
        s["mqtt"]["oversized"].as_u64() >= Some(3) && s["mqtt"]["connected"] == true,
        "status: {s}\n{}",
        agent.log().join("\n")
    );
    assert!(
        s["mqtt"]["rejected"].as_u64() >= Some(3),
        "oversized messages count as rejected too: {s}"
    );
    // The 300 kB and the 34 MB each cost one connection (read whole on the next one); the
    // 150 kB none.
    let n = connects(&agent);
    assert!(
        n <= 4,
        "{n} connections for three oversized messages:\n{}",
        agent.log().join("\n")
    );

    // A normal announcement published afterwards takes effect.
    let audio = tone_wav(1000.0, 2.0, 0.5);
    let h = sha256_hex(&audio);
    crm.publish(&format!("{P}/audio/{h}"), &audio, true);
    crm.publish(
        &format!("{P}/announcements/outage-phl"),
        announcement("outage-phl", 1, &h).as_bytes(),
        true,
    );
    assert!(
        wait_active(&crm, "outage-phl", Duration::from_secs(10)),
        "the announcement never became active:\n{}",
        agent.log().join("\n")
    );

    // Calls still reach the CRM as events.
    let sink = RtpSink::new();
    let run = sipp(
        "listen.xml",
        agent.sip,
        &[("rtpport", sink.port().to_string())],
        &["-d", "1500"],
    );
    assert_eq!(run.code, Some(0), "sipp failed:\n{}", run.output);
    let ended = crm.wait(Duration::from_secs(10), |msgs| {
        msgs.iter()
            .any(|m| m.topic == format!("{NODE}/events") && m.json()["type"] == "call.ended")
    });
    assert!(ended, "no call.ended event reached the CRM");
    let events = crm.on("/events");
    assert!(
        events
            .iter()
            .any(|m| m.json()["type"] == "announcement.started"),
        "the caller was not played the announcement: {:?}",
        events
            .iter()
            .map(|m| m.json()["type"].clone())
            .collect::<Vec<_>>()
    );
    // And no further reconnects happened meanwhile.
    assert_eq!(connects(&agent), n, "{}", agent.log().join("\n"));
}

/// An MQTT 3.1.1 CONNECT for `client_id` (clean session).
fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    body.extend(
        u16::try_from(client_id.len())
            .expect("short id")
            .to_be_bytes(),
    );
    body.extend(client_id.as_bytes());
    let mut p = vec![0x10, u8::try_from(body.len()).expect("short packet")];
    p.extend(body);
    p
}

#[test]
fn a_broker_that_drops_every_connection_is_retried_with_backoff() {
    if !have_mosquitto() {
        eprintln!("mosquitto not installed: skipped (CI installs it)");
        return;
    }
    let dir = TempDir::new("mqtt-backoff");
    let broker = Mosquitto::start(dir.path());
    let cfg = config(dir.path(), &broker.url(), "", "");
    let agent = Agent::start_with_config(dir.path(), &cfg);
    assert!(
        agent.wait_log("connected to the broker", Duration::from_secs(10)),
        "{}",
        agent.log().join("\n")
    );
    let before = connects(&agent);

    // Another client takes the node's client id every 300 ms: the broker closes the node's
    // connection each time, right after it connected.
    let window = Duration::from_secs(20);
    let t0 = Instant::now();
    let mut takeovers = 0;
    while t0.elapsed() < window {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", broker.port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.write_all(&connect_packet(CLIENT_ID)).is_ok() {
                let mut connack = [0u8; 4];
                if s.read_exact(&mut connack).is_ok() && connack[0] == 0x20 && connack[3] == 0 {
                    takeovers += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let during = connects(&agent) - before;
    let lost = agent
        .log()
        .iter()
        .filter(|l| l.contains("broker connection lost"))
        .count();
    eprintln!(
        "{takeovers} takeovers, {lost} connections lost, {during} reconnections in {window:?}"
    );
    // Backoff from 0.5 s doubling to 30 s (each step at least half its nominal value):
    // 0.25 + 0.5 + 1 + 2 + 4 + 8 = 15.75 s, so at most 7 reconnections fit in 20 s. Without
    // backoff it is one every few hundred milliseconds.
    assert!(takeovers > 40, "the takeovers did not work ({takeovers})");
    assert!(
        lost >= 3,
        "the broker did not drop the node's connections ({lost}):\n{}",
        agent.log().join("\n")
    );
    assert!(
        during <= 8,
        "{during} reconnections in {window:?} while every connection was dropped:\n{}",
        agent.log().join("\n")
    );
    // The agent is alive and still answers.
    let s = status(&cfg);
    assert_eq!(s["node_id"], "test-node");
}
