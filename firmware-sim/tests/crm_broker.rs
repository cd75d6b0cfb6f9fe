//! `firmware-sim crm` against a real Mosquitto on an ephemeral port: what `announce` leaves
//! retained on the broker, and what `watch` acknowledges and asks for again.

// Wall-clock waits are what these tests do.
#![allow(clippy::disallowed_methods)]

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firmware_sim::crm::announce::{self, AnnounceSpec};
use firmware_sim::crm::watch::{self, Seen, SeqStart, TrackerConfig, WatchConfig};
use firmware_sim::crm::{unique_client_id, BrokerConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto on a free 127.0.0.1 port, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
}

impl Mosquitto {
    fn start() -> Option<Mosquitto> {
        if !std::path::Path::new(MOSQUITTO).exists() {
            eprintln!("skipped: {MOSQUITTO} is not installed");
            return None;
        }
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            let child = Command::new(MOSQUITTO)
                .args(["-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn mosquitto");
            let mut m = Mosquitto { child, port };
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(m);
                }
                if let Ok(Some(_)) = m.child.try_wait() {
                    break; // lost the port race: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = m.child.kill();
        }
        panic!("mosquitto did not start");
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn tone_wav(seconds: f32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cur = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut cur, spec).expect("wav");
    let n = (seconds * 8000.0) as usize;
    for i in 0..n {
        let x = (i as f32 * 2.0 * std::f32::consts::PI * 700.0 / 8000.0).sin();
        w.write_sample((x * 8000.0) as i16).expect("sample");
    }
    w.finalize().expect("finalize");
    cur.into_inner()
}

/// A plain client (a node, or a fresh subscriber) on the broker.
fn client(port: u16, tag: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(unique_client_id(tag), "127.0.0.1", port);
    o.set_max_packet_size(1 << 24, 1 << 24);
    o.set_keep_alive(Duration::from_secs(5));
    AsyncClient::new(o, 64)
}

/// Collects the publishes on `filter` for `window` after subscribing.
async fn collect(port: u16, filter: &str, window: Duration) -> Vec<rumqttc::Publish> {
    let (c, mut el) = client(port, "probe");
    c.subscribe(filter, QoS::AtLeastOnce).await.expect("sub");
    let mut got = Vec::new();
    let end = tokio::time::Instant::now() + window;
    while let Ok(ev) = tokio::time::timeout_at(end, el.poll()).await {
        if let Ok(Event::Incoming(Packet::Publish(p))) = ev {
            got.push(p);
        }
    }
    got
}

#[test]
fn announce_leaves_the_audio_and_the_document_retained_for_a_fresh_subscriber() {
    let Some(m) = Mosquitto::start() else { return };
    let rt = rt();
    let broker = BrokerConfig::parse(&m.url(), "crm-test").expect("url");
    let wav = tone_wav(0.5);
    let mut spec = AnnounceSpec::new("outage-phl", 7);
    spec.priority = 10;
    spec.sites = vec!["phl".into()];
    spec.dialled = vec!["+18005550100".into()];
    spec.caller_prefixes = vec!["+1215".into()];
    spec.valid_from = Some("2026-11-23T06:00:00Z".into());
    spec.text = Some("We are aware of an outage.".into());
    let published = rt
        .block_on(announce::announce(
            &broker,
            "ccedge/v1",
            &spec,
            Some(&wav),
            Duration::from_secs(10),
        ))
        .expect("announce");
    let hash = edge::announcements::hex(&edge::announcements::sha256(&wav));
    assert_eq!(published.audio_sha256.as_deref(), Some(hash.as_str()));
    assert_eq!(
        published.audio.as_ref().map(|a| a.topic.as_str()),
        Some(format!("ccedge/v1/audio/{hash}").as_str())
    );

    // A subscriber that connects afterwards gets both, retained.
    let got = rt.block_on(collect(m.port, "ccedge/v1/#", Duration::from_millis(800)));
    let audio = got
        .iter()
        .find(|p| p.topic.starts_with("ccedge/v1/audio/"))
        .expect("retained audio");
    assert_eq!(audio.topic, format!("ccedge/v1/audio/{hash}"));
    assert!(audio.retain);
    assert_eq!(audio.payload.as_ref(), wav.as_slice());
    assert_eq!(
        edge::announcements::hex(&edge::announcements::sha256(&audio.payload)),
        hash,
        "the topic names the SHA-256 of the payload"
    );
    let doc = got
        .iter()
        .find(|p| p.topic == "ccedge/v1/announcements/outage-phl")
        .expect("retained announcement");
    assert!(doc.retain);
    let v: Value = serde_json::from_slice(&doc.payload).expect("json");
    assert_eq!(v["id"], "outage-phl");
    assert_eq!(v["version"], 7);
    assert_eq!(v["priority"], 10);
    assert_eq!(v["audio_sha256"], hash.as_str());
    assert_eq!(v["scope"]["sites"][0], "phl");
    assert_eq!(v["scope"]["dialled"][0], "+18005550100");
    assert_eq!(v["scope"]["caller_prefixes"][0], "+1215");
    assert_eq!(v["offer_callback"], true);
    // The agent's own decoder accepts it.
    let (a, text) = edge::announcements::decode(&doc.payload).expect("agent accepts");
    assert_eq!(a.version, 7);
    assert_eq!(text.as_deref(), Some("We are aware of an outage."));

    // Withdrawing clears the retained document (the audio stays).
    rt.block_on(announce::withdraw(
        &broker,
        "ccedge/v1",
        "outage-phl",
        Duration::from_secs(10),
    ))
    .expect("withdraw");
    let got = rt.block_on(collect(m.port, "ccedge/v1/#", Duration::from_millis(800)));
    assert!(
        !got.iter()
            .any(|p| p.topic.starts_with("ccedge/v1/announcements/")),
        "withdrawn: {:?}",
        got.iter().map(|p| &p.topic).collect::<Vec<_>>()
    );
    assert!(got.iter().any(|p| p.topic.starts_with("ccedge/v1/audio/")));
}

#[test]
fn announce_refuses_what_a_node_would_refuse_before_publishing() {
    let broker = BrokerConfig::parse("mqtt://127.0.0.1:9", "crm-test").expect("url");
    let rt = rt();
    let spec = AnnounceSpec::new("x", 1);
    let err = rt
        .block_on(announce::announce(
            &broker,
            "ccedge/v1",
            &spec,
            Some(b"not a wav"),
            Duration::from_secs(1),
        ))
        .expect_err("bad audio");
    assert!(err.to_string().starts_with("audio:"), "{err}");
    let mut spec = AnnounceSpec::new("x", 1);
    spec.dialled = vec!["not-a-number".into()];
    let err = rt
        .block_on(announce::announce(
            &broker,
            "ccedge/v1",
            &spec,
            Some(&tone_wav(0.1)),
            Duration::from_secs(1),
        ))
        .expect_err("bad number");
    assert!(err.to_string().contains("scope.dialled"), "{err}");
    assert!(BrokerConfig::parse("http://x", "c").is_err());
}

fn event(seq: u64, id: &str) -> Vec<u8> {
    serde_json::json!({
        "event_id": id, "node": "pi-1", "site": "phl", "seq": seq, "call_id": "c1",
        "call_seq": seq, "at": "2026-11-23T06:01:02.345Z", "type": "call.offered", "data": {}
    })
    .to_string()
    .into_bytes()
}

#[test]
fn watch_acks_the_contiguous_prefix_asks_for_a_gap_and_counts_a_duplicate() {
    let Some(m) = Mosquitto::start() else { return };
    let rt = rt();
    rt.block_on(async {
        let broker = BrokerConfig::parse(&m.url(), &unique_client_id("crm")).expect("url");
        let mut cfg = WatchConfig::new("ccedge/v1");
        cfg.tracker = TrackerConfig {
            ack: true,
            start: SeqStart::One,
            ..TrackerConfig::default()
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = tokio::spawn(async move {
            watch::run(
                &broker,
                &cfg,
                async {
                    let _ = stop_rx.await;
                },
                move |s| {
                    let _ = seen_tx.send(s.clone());
                },
            )
            .await
        });
        // Wait for the watcher's subscriptions.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), seen_rx.recv()).await {
                Ok(Some(Seen::Connected)) => break,
                Ok(Some(_)) => {}
                other => panic!("watcher did not connect: {other:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        // The node: listens for acks and replay requests, publishes 1, 2, 4, 2 again.
        let (node, mut el) = client(m.port, "node");
        node.subscribe("ccedge/v1/nodes/phl/pi-1/events/+", QoS::AtLeastOnce)
            .await
            .expect("sub");
        node.subscribe("ccedge/v1/nodes/phl/pi-1/callbacks/+/state", QoS::AtLeastOnce)
            .await
            .expect("sub");
        let topic = "ccedge/v1/nodes/phl/pi-1/events";
        for (seq, id) in [(1, "e1"), (2, "e2"), (4, "e4"), (2, "e2")] {
            node.publish(topic, QoS::AtLeastOnce, false, event(seq, id))
                .await
                .expect("publish");
        }
        node.publish(
            "ccedge/v1/nodes/phl/pi-1/callbacks",
            QoS::AtLeastOnce,
            false,
            br#"{"callback_id":"cb-1","node":"pi-1","site":"phl","call_id":"c1","requested_at":"2026-11-23T06:01:02Z","caller":"+12155550123","callback_number":"+12155550123","dialled":"+18005550100","announcement_id":null,"position":1}"#.to_vec(),
        )
        .await
        .expect("publish");
        let mut acks = Vec::new();
        let mut replays = Vec::new();
        let mut accepted = Vec::new();
        let mut sent_three = false;
        let end = tokio::time::Instant::now() + Duration::from_secs(8);
        while acks.last() != Some(&4) || accepted.is_empty() {
            let Ok(ev) = tokio::time::timeout_at(end, el.poll()).await else {
                panic!("acks {acks:?} replays {replays:?} accepted {accepted:?}");
            };
            let ev = ev.expect("node connection");
            let Event::Incoming(Packet::Publish(p)) = ev else {
                continue;
            };
            let v: Value = serde_json::from_slice(&p.payload).expect("json");
            if p.topic.ends_with("/events/ack") {
                acks.push(v["upto_seq"].as_u64().expect("upto_seq"));
            } else if p.topic.ends_with("/events/replay") {
                replays.push((
                    v["from_seq"].as_u64().expect("from"),
                    v["to_seq"].as_u64().expect("to"),
                ));
                if !sent_three {
                    // What the node's outbox does: resend the range.
                    node.publish(topic, QoS::AtLeastOnce, false, event(3, "e3"))
                        .await
                        .expect("publish");
                    sent_three = true;
                }
            } else if p.topic.ends_with("/state") {
                assert_eq!(p.topic, "ccedge/v1/nodes/phl/pi-1/callbacks/cb-1/state");
                assert_eq!(v["state"], "accepted");
                accepted.push(p.topic.clone());
            }
        }
        // Acks grow with the contiguous prefix: up to 2 before the gap is filled, then 4.
        assert!(acks.windows(2).all(|w| w[0] < w[1]), "{acks:?}");
        assert!(acks.contains(&2) && !acks.contains(&3), "{acks:?}");
        assert_eq!(replays.first(), Some(&(3, 3)), "{replays:?}");
        let _ = stop_tx.send(());
        let summary = watcher.await.expect("join").expect("watch");
        assert_eq!(summary.nodes.len(), 1);
        let n = &summary.nodes[0];
        assert_eq!(n.node, "phl/pi-1");
        assert_eq!((n.events, n.unique_events, n.duplicates), (5, 4, 1));
        assert_eq!(n.went_missing, 1);
        assert!(n.missing.is_empty());
        assert_eq!(n.contiguous_upto, Some(4));
        assert_eq!(n.callback_ids, vec!["cb-1".to_owned()]);
        assert_eq!(summary.missing, 0);
        // What the watcher reported along the way.
        let mut saw_dup = false;
        let mut saw_gap = false;
        while let Ok(s) = seen_rx.try_recv() {
            if let Seen::Event { verdict, missing, .. } = &s {
                saw_dup |= *verdict == watch::Verdict::Duplicate;
                saw_gap |= missing == &vec![(3, 3)];
            }
        }
        assert!(saw_dup && saw_gap);
    });
}

#[test]
fn keygen_then_announce_with_the_key_publishes_a_document_the_public_key_verifies() {
    let Some(m) = Mosquitto::start() else { return };
    let bin = env!("CARGO_BIN_EXE_firmware-sim");
    let dir = std::env::temp_dir().join(format!("fs-keygen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("crm.key");
    let out = Command::new(bin)
        .args(["crm", "keygen", "--out"])
        .arg(&key)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let public = stdout
        .lines()
        .find_map(|l| l.strip_prefix("signing_key = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("the public key line")
        .to_owned();
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the private key is private");
    }
    // It never overwrites a key.
    let again = Command::new(bin)
        .args(["crm", "keygen", "--out"])
        .arg(&key)
        .output()
        .expect("runs");
    assert!(!again.status.success());

    let wav = dir.join("tone.wav");
    std::fs::write(&wav, tone_wav(0.3)).expect("wav");
    let out = Command::new(bin)
        .args([
            "crm",
            "--broker",
            &m.url(),
            "announce",
            "--id",
            "signed-one",
        ])
        .args(["--version", "4", "--text", "Signed, sealed.", "--wav"])
        .arg(&wav)
        .arg("--signing-key")
        .arg(&key)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = rt();
    let got = rt.block_on(collect(
        m.port,
        "ccedge/v1/announcements/#",
        Duration::from_millis(800),
    ));
    let doc = got.first().expect("retained announcement");
    let w: edge::announcements::AnnouncementWire =
        serde_json::from_slice(&doc.payload).expect("document");
    assert!(w.signature.is_some());
    let public: edge::config::SigningKey = public.parse().expect("public key");
    assert_eq!(edge::link::signature::verify(&public.0, &w), Ok(()));
    let mut changed = w.clone();
    changed.version = 5;
    assert!(edge::link::signature::verify(&public.0, &changed).is_err());

    // A key file that is not a key is a clear error, and nothing is published.
    std::fs::write(dir.join("bad.key"), "not a key\n").expect("write");
    let out = Command::new(bin)
        .args(["crm", "--broker", &m.url(), "announce", "--id", "other"])
        .args(["--text", "x", "--signing-key"])
        .arg(dir.join("bad.key"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--signing-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
