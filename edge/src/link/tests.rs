//! The link against a real Mosquitto (`/usr/sbin/mosquitto`, started and killed by each
//! test on a free port), a real store on a temporary state directory, and a rumqttc client
//! playing the CRM. Every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, SubscribeFilter};
use serde_json::Value;
use shared::dtmf::Digit;
use shared::event::EventKind;
use shared::ids::CallId;
use shared::node::NodeEvent;
use tokio::sync::{mpsc, watch};

use super::*;
use crate::store::{Store, StoreHandle};
use crate::view::{AnnouncementView, Snapshot};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const PREFIX: &str = "ccedge/v1";
const WAIT: Duration = Duration::from_secs(15);

// ---- fixtures ----

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let dir = std::env::temp_dir().join(format!(
                "ccedge-link-{what}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => return TempDir(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", dir.display()),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Spawns Mosquitto with `conf` and waits (at most `WAIT`) until it accepts connections on
/// every port of `ports`; `false` as soon as it exits (a port was taken) or at the deadline.
async fn spawn_listening(conf: &Path, ports: &[u16]) -> (Child, bool) {
    let mut child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto runs");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if ports
            .iter()
            .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        {
            return (child, true);
        }
        if !matches!(child.try_wait(), Ok(None)) || tokio::time::Instant::now() > deadline {
            return (child, false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Mosquitto child process, killed (SIGKILL) on drop.
struct Broker {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Broker {
    /// A broker on a free port. A port found free can be handed to another socket (another
    /// test's client connection) before Mosquitto binds it; then it is tried on another one.
    async fn start() -> Broker {
        for _ in 0..5 {
            let mut b = Broker {
                port: free_port(),
                dir: TempDir::new("broker"),
                child: None,
            };
            if b.try_restart().await {
                return b;
            }
        }
        panic!("mosquitto did not start on any of 5 free ports");
    }

    async fn start_on(port: u16) -> Broker {
        let dir = TempDir::new("broker");
        let mut b = Broker {
            port,
            dir,
            child: None,
        };
        b.restart().await;
        b
    }

    async fn restart(&mut self) {
        assert!(
            self.try_restart().await,
            "mosquitto did not start on {}",
            self.port
        );
    }

    /// Starts Mosquitto on `self.port`; `false` when it exited or never listened.
    async fn try_restart(&mut self) -> bool {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 100000\nmax_inflight_messages 100\n",
                self.port
            ),
        )
        .unwrap();
        let (child, ok) = spawn_listening(&conf, &[self.port]).await;
        self.child = Some(child);
        if !ok {
            self.kill();
        }
        ok
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 20 ms until it holds; panics after [`WAIT`].
async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("channel closed waiting for {what}"))
}

/// One message the CRM received.
#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

impl Msg {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

/// A rumqttc client playing the CRM: subscribes to `filters` on every connection.
struct Crm {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg>,
    subacks: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Crm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Crm {
    async fn connect(port: u16, filters: &[String]) -> Crm {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "crm-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(64 << 20, 64 << 20);
        let (client, mut el) = AsyncClient::new(o, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, subacks) = watch::channel(0u64);
        let c2 = client.clone();
        let filters: Vec<SubscribeFilter> = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
            .collect();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let _ = c2.try_subscribe_many(filters.clone());
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        sub_tx.send_modify(|n| *n += 1);
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let _ = tx.send(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let mut crm = Crm {
            client,
            rx,
            subacks,
            task,
        };
        crm.wait_subscribed(1).await;
        crm
    }

    async fn wait_subscribed(&mut self, n: u64) {
        tokio::time::timeout(WAIT, self.subacks.wait_for(|&k| k >= n))
            .await
            .expect("CRM subscribed")
            .expect("CRM task alive");
    }

    async fn publish(&self, topic: &str, retain: bool, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .await
            .unwrap();
    }

    /// The next message whose topic is `topic`.
    async fn next_on(&mut self, topic: &str) -> Msg {
        loop {
            let m = recv(&mut self.rx, topic).await;
            if m.topic == topic {
                return m;
            }
        }
    }

    /// The next message on `topic` satisfying `pred`.
    async fn next_matching(&mut self, topic: &str, mut pred: impl FnMut(&Msg) -> bool) -> Msg {
        loop {
            let m = self.next_on(topic).await;
            if pred(&m) {
                return m;
            }
        }
    }
}

fn topics() -> topics::Topics {
    topics::Topics::new(PREFIX, "phl", "pi-001")
}

fn config(port: u16, state_dir: &Path) -> LinkConfig {
    LinkConfig {
        mqtt: config::Mqtt {
            url: format!("mqtt://127.0.0.1:{port}").parse().unwrap(),
            keepalive_s: 5,
            ..config::Mqtt::default()
        },
        client_id: format!(
            "ccedge-test-{}-{}",
            std::process::id(),
            state_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("x")
        ),
        node_id: "pi-001".into(),
        site: "phl".into(),
        state_dir: state_dir.to_owned(),
        speech_command: None,
        max_audio_bytes: 16 << 20,
        signing_key: None,
        outbox: shared::event::outbox::Config::default(),
        status_interval: Duration::from_secs(30),
        version: "9.9.9-test".into(),
        started_at: UnixMillis(1_795_413_600_000),
    }
}

/// A running link with the engine's side of its channels.
struct Node {
    handle: LinkHandle,
    from: mpsc::UnboundedReceiver<FromLink>,
    snap: watch::Sender<Snapshot>,
    store: StoreHandle,
}

impl Node {
    fn start(cfg: LinkConfig) -> Node {
        let store = StoreHandle::spawn(Store::open(&cfg.state_dir).unwrap());
        let (snap, snap_rx) = watch::channel(Snapshot::default());
        let (to_engine, from) = mpsc::unbounded_channel();
        let handle = spawn(cfg, store.clone(), snap_rx, to_engine);
        Node {
            handle,
            from,
            snap,
            store,
        }
    }

    fn event(&self, call: u64, call_seq: u32) {
        self.handle
            .tx
            .send(ToLink::Event(NodeEvent {
                call: None,
                language: None,
                call_id: Some(CallId(call)),
                call_seq,
                at: UnixMillis(1_795_413_662_345),
                kind: EventKind::Dtmf { digit: Digit::D5 },
            }))
            .unwrap();
    }

    fn status(&self) -> LinkStatus {
        self.handle.status.borrow().clone()
    }

    async fn wait_status(&self, what: &str, f: impl Fn(&LinkStatus) -> bool) {
        let mut rx = self.handle.status.clone();
        tokio::time::timeout(WAIT, rx.wait_for(|s| f(s)))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", self.status()))
            .unwrap();
    }

    async fn outbox_len(&self) -> u64 {
        self.store.run(|s| s.outbox_len()).await.unwrap().unwrap()
    }

    /// Graceful stop: drop every sender, wait for the task.
    async fn stop(self) -> (mpsc::UnboundedReceiver<FromLink>, StoreHandle) {
        let Node {
            handle,
            from,
            store,
            snap,
        } = self;
        drop(handle.tx);
        tokio::time::timeout(WAIT, handle.task)
            .await
            .expect("link stops")
            .unwrap();
        drop(snap);
        (from, store)
    }
}

/// A mono 16-bit 8 kHz PCM WAV of `samples` samples.
fn wav(samples: usize) -> Vec<u8> {
    let data = u32::try_from(samples * 2).unwrap();
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data.to_le_bytes());
    for i in 0..samples {
        let s = i16::try_from((i % 40) * 400).unwrap();
        w.extend_from_slice(&s.to_le_bytes());
    }
    w
}

fn sha(bytes: &[u8]) -> String {
    crate::announcements::hex(&crate::announcements::sha256(bytes))
}

fn announcement(id: &str, version: u32, audio: Option<&str>, text: Option<&str>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "id": id, "version": version, "priority": 10,
        "scope": {"sites": ["phl"], "dialled": [], "caller_prefixes": []},
        "valid_from": "2026-11-23T06:00:00Z", "valid_until": "2036-11-23T12:00:00Z",
        "offer_callback": true, "language": "en"
    });
    if let Some(a) = audio {
        v["audio_sha256"] = a.into();
    }
    if let Some(t) = text {
        v["text"] = t.into();
    }
    serde_json::to_vec(&v).unwrap()
}

/// Waits for the engine to be told of an announcement change (a new version or a
/// withdrawal) and returns it.
async fn next_changed(node: &mut Node) -> FromLink {
    loop {
        let m = recv(&mut node.from, "announcement news").await;
        if matches!(m, FromLink::Announcement { .. } | FromLink::Withdrawn(_)) {
            return m;
        }
    }
}

impl Node {
    /// What the engine does when its node keeps an announcement (stores a new version, or
    /// withdraws it): asks the link to write the cache.
    fn keep(&self, m: &FromLink) {
        let w = match m {
            FromLink::Announcement { announcement, doc } => CacheWrite::Announcement {
                id: announcement.id.clone(),
                version: announcement.version,
                doc: doc.clone(),
            },
            FromLink::Withdrawn(id) => CacheWrite::Remove(id.clone()),
            other => panic!("nothing to keep in {other:?}"),
        };
        self.handle.tx.send(ToLink::Cache(w)).unwrap();
    }
}

/// Waits until `f` holds (the cache is written by the link's worker, off the test's task).
async fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn seqs_of(msgs: &[Msg]) -> Vec<u64> {
    msgs.iter()
        .map(|m| m.json()["seq"].as_u64().unwrap())
        .collect()
}

// ---- tests ----

#[tokio::test]
async fn events_go_out_in_seq_order_ack_deletes_replay_resends() {
    let broker = Broker::start().await;
    let t = topics();
    let mut crm = Crm::connect(broker.port, &[t.events()]).await;
    let dir = TempDir::new("events");
    let node = Node::start(config(broker.port, dir.path()));
    let mut tail = node.handle.events.subscribe();
    for i in 1..=5u32 {
        node.event(0xab, i);
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(crm.next_on(&t.events()).await);
    }
    assert_eq!(seqs_of(&got), [1, 2, 3, 4, 5]);
    for (i, m) in got.iter().enumerate() {
        assert!(!m.retain);
        let v = m.json();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "at", "call_id", "call_seq", "data", "event_id", "language", "node", "seq", "site",
                "type"
            ]
        );
        assert_eq!(v["node"], "pi-001");
        assert_eq!(v["site"], "phl");
        assert_eq!(v["call_id"], "00000000000000ab");
        assert_eq!(v["call_seq"], i + 1);
        assert_eq!(v["at"], "2026-11-23T06:01:02.345Z");
        assert_eq!(v["type"], "dtmf");
        assert_eq!(v["data"], serde_json::json!({"digit": "5"}));
        let id = v["event_id"].as_str().unwrap();
        assert!(
            id.starts_with("pi-001-") && id.ends_with(&format!("-{}", i + 1)),
            "{id}"
        );
    }
    let ids: BTreeSet<String> = got
        .iter()
        .map(|m| m.json()["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 5);
    // `ccedge events tail` sees each new event's JSON.
    for m in &got {
        let j = tokio::time::timeout(WAIT, tail.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(j.as_bytes(), m.payload.as_slice());
    }
    node.wait_status("published", |s| {
        s.connected && s.last_seq == 5 && s.events_published == 5 && s.outbox_depth == 5
    })
    .await;
    assert_eq!(node.outbox_len().await, 5);

    // The CRM acknowledges up to 3: they leave the store.
    crm.publish(&t.events_ack(), false, r#"{"upto_seq":3}"#)
        .await;
    node.wait_status("acked", |s| s.acked_seq == 3 && s.outbox_depth == 2)
        .await;
    assert_eq!(node.outbox_len().await, 2);

    // Replay 1..5: 4 and 5 again, and a seq.skipped for 1..3 (no longer held).
    crm.publish(&t.events_replay(), false, r#"{"from_seq":1,"to_seq":5}"#)
        .await;
    let mut replayed = BTreeMap::new();
    while replayed.len() < 3 {
        let m = crm.next_on(&t.events()).await;
        let v = m.json();
        replayed.insert(v["seq"].as_u64().unwrap(), v);
    }
    assert_eq!(replayed.keys().copied().collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(replayed[&4], got[3].json());
    assert_eq!(replayed[&6]["type"], "seq.skipped");
    assert!(replayed[&6]["call_id"].is_null());
    assert_eq!(
        replayed[&6]["data"],
        serde_json::json!({"from": 1, "to": 3, "reason": "unavailable"})
    );

    // Garbage on the control topics: rejected and counted, nothing else changes.
    let before = node.status().rejected;
    crm.publish(&t.events_ack(), false, "not json").await;
    crm.publish(&t.events_replay(), false, r#"{"from_seq":"x"}"#)
        .await;
    crm.publish(&t.events_ack(), false, vec![b'7'; 100_000])
        .await;
    node.wait_status("rejected", |s| s.rejected == before + 3)
        .await;
    assert_eq!(node.status().acked_seq, 3);
    assert!(node.status().last_rejection.unwrap().contains("events/ack"));

    // Acknowledging everything (and beyond) empties the outbox.
    crm.publish(&t.events_ack(), false, r#"{"upto_seq":99}"#)
        .await;
    node.wait_status("all acked", |s| s.acked_seq == 6 && s.outbox_depth == 0)
        .await;
    assert_eq!(node.outbox_len().await, 0);
    node.stop().await;
}

#[tokio::test]
async fn broker_killed_mid_stream_the_crm_ends_with_every_seq() {
    let mut broker = Broker::start().await;
    let t = topics();
    let mut crm = Crm::connect(broker.port, &[t.events()]).await;
    let dir = TempDir::new("kill");
    let node = Node::start(config(broker.port, dir.path()));
    node.wait_status("connected", |s| s.connected).await;
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for i in 1..=20u32 {
        node.event(1, i);
    }
    // Let some of them through, then kill the broker mid-stream.
    let m = crm.next_on(&t.events()).await;
    seen.insert(
        m.json()["event_id"].as_str().unwrap().to_owned(),
        m.json()["seq"].as_u64().unwrap(),
    );
    for i in 21..=40u32 {
        node.event(1, i);
    }
    broker.kill();
    node.wait_status("disconnected", |s| !s.connected).await;
    assert!(node.status().last_error.is_some());
    // The engine keeps going while the broker is down.
    for i in 41..=60u32 {
        node.event(1, i);
    }
    node.wait_status("all sequenced", |s| s.last_seq == 60)
        .await;
    assert_eq!(node.outbox_len().await, 60);
    while let Ok(m) = crm.rx.try_recv() {
        if m.topic == t.events() {
            seen.insert(
                m.json()["event_id"].as_str().unwrap().to_owned(),
                m.json()["seq"].as_u64().unwrap(),
            );
        }
    }
    broker.restart().await;
    crm.wait_subscribed(2).await;
    node.wait_status("reconnected", |s| s.connected).await;
    // The CRM asks for everything it may have missed (a PUBACKed message can die with the
    // broker), de-duplicating by event_id.
    crm.publish(&t.events_replay(), false, r#"{"from_seq":1,"to_seq":60}"#)
        .await;
    let all: BTreeSet<u64> = (1..=60).collect();
    while seen.values().copied().collect::<BTreeSet<_>>() != all {
        let m = crm.next_on(&t.events()).await;
        let v = m.json();
        seen.insert(
            v["event_id"].as_str().unwrap().to_owned(),
            v["seq"].as_u64().unwrap(),
        );
    }
    // One event_id per seq: duplicates were only redeliveries.
    assert_eq!(seen.len(), 60);
    crm.publish(&t.events_ack(), false, r#"{"upto_seq":60}"#)
        .await;
    node.wait_status("acked", |s| s.outbox_depth == 0).await;
    assert_eq!(node.outbox_len().await, 0);
    node.stop().await;
}

#[tokio::test]
async fn works_without_a_broker_and_delivers_when_one_appears() {
    let port = free_port();
    let dir = TempDir::new("nobroker");
    let node = Node::start(config(port, dir.path()));
    for i in 1..=10u32 {
        node.event(7, i);
    }
    node.wait_status("stored offline", |s| {
        s.last_seq == 10 && s.outbox_depth == 10 && !s.connected && s.last_error.is_some()
    })
    .await;
    assert_eq!(node.outbox_len().await, 10);
    let broker = Broker::start_on(port).await;
    let t = topics();
    let mut crm = Crm::connect(broker.port, &[t.events()]).await;
    node.wait_status("connected", |s| s.connected).await;
    // Published on connect (and possibly before the CRM subscribed): ask for them.
    crm.publish(&t.events_replay(), false, r#"{"from_seq":1,"to_seq":10}"#)
        .await;
    let mut seqs = BTreeSet::new();
    while seqs.len() < 10 {
        let m = crm.next_on(&t.events()).await;
        seqs.insert(m.json()["seq"].as_u64().unwrap());
    }
    assert_eq!(seqs, (1..=10).collect());
    node.stop().await;
}

#[tokio::test]
async fn restarts_continue_seq_and_announce_gaps_status_and_last_will() {
    let broker = Broker::start().await;
    let t = topics();
    let mut crm = Crm::connect(broker.port, &[t.events(), t.status()]).await;
    let dir = TempDir::new("restart");

    // First run: 1..3, graceful stop publishes the retained offline status.
    let node = Node::start(config(broker.port, dir.path()));
    let online = crm
        .next_matching(&t.status(), |m| m.json()["state"] == "online")
        .await;
    let v = online.json();
    assert_eq!(v["node"], "pi-001");
    assert_eq!(v["site"], "phl");
    assert_eq!(v["version"], "9.9.9-test");
    assert_eq!(v["started_at"], "2026-11-23T06:00:00.000Z");
    assert!(v["counters"]["events_published"].is_u64());
    for k in [
        "callbacks_waiting",
        "outbox_depth",
        "last_seq",
        "acked_seq",
        "calls",
    ] {
        assert!(v[k].is_u64(), "{k} in {v}");
    }
    for i in 1..=3u32 {
        node.event(1, i);
    }
    let first: Vec<Msg> = futures_take(&mut crm, &t.events(), 3).await;
    assert_eq!(seqs_of(&first), [1, 2, 3]);
    node.wait_status("published", |s| s.outbox_depth == 3).await;

    // A snapshot change in announcements is published within a second.
    node.snap.send_modify(|s| {
        s.announcements.push(AnnouncementView {
            id: "outage-phl".into(),
            version: 3,
            state: "active".into(),
            priority: 10,
            sites: vec![],
            dialled: vec![],
            caller_prefixes: vec![],
            audio_sha256: None,
            audio_present: false,
            valid_from_ms: None,
            valid_until_ms: None,
            playing_version: None,
            heard: crate::metrics::AnnouncementCounts::default(),
        });
        s.callbacks_waiting = 2;
    });
    let changed_at = tokio::time::Instant::now();
    let st = crm
        .next_matching(&t.status(), |m| {
            m.json()["announcements"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
        .await;
    assert!(changed_at.elapsed() < Duration::from_secs(1));
    assert_eq!(
        st.json()["announcements"],
        serde_json::json!([{"id": "outage-phl", "version": 3, "state": "active"}])
    );
    assert_eq!(st.json()["callbacks_waiting"], 2);

    // Retained: a CRM that subscribes later gets it at once.
    let mut late = Crm::connect(broker.port, &[t.status()]).await;
    let retained = late.next_on(&t.status()).await;
    assert!(retained.retain);
    assert_eq!(retained.json()["state"], "online");
    drop(late);

    let (_, _) = node.stop().await;
    let off = crm
        .next_matching(&t.status(), |m| m.json()["state"] == "offline")
        .await;
    assert_eq!(
        off.json(),
        serde_json::json!({"state":"offline","node":"pi-001","site":"phl"})
    );
    let mut late = Crm::connect(broker.port, &[t.status()]).await;
    let retained = late.next_on(&t.status()).await;
    assert!(retained.retain);
    assert_eq!(retained.json()["state"], "offline");
    drop(late);

    // Second run: a graceful stop left no gap, seq continues at 4.
    let node = Node::start(config(broker.port, dir.path()));
    for i in 1..=2u32 {
        node.event(2, i);
    }
    let second = futures_take(&mut crm, &t.events(), 5).await;
    let mut s2: Vec<u64> = seqs_of(&second);
    s2.sort_unstable();
    s2.dedup();
    // The unacknowledged 1..3 are published again, then 4 and 5.
    assert_eq!(s2, [1, 2, 3, 4, 5]);
    assert!(second.iter().all(|m| m.json()["type"] == "dtmf"));
    node.wait_status("published", |s| s.last_seq == 5).await;
    crm.publish(&t.events_ack(), false, r#"{"upto_seq":5}"#)
        .await;
    node.wait_status("acked", |s| s.outbox_depth == 0).await;

    // A hard abort (a crash): the Last Will says offline, and the next run announces the
    // unused reservation as seq.skipped and never reuses a number.
    let _ = crm
        .next_matching(&t.status(), |m| m.json()["state"] == "online")
        .await;
    node.handle.task.abort();
    let will = crm
        .next_matching(&t.status(), |m| m.json()["state"] == "offline")
        .await;
    assert_eq!(
        will.json(),
        serde_json::json!({"state":"offline","node":"pi-001","site":"phl"})
    );
    let mut late = Crm::connect(broker.port, &[t.status()]).await;
    assert_eq!(late.next_on(&t.status()).await.json()["state"], "offline");
    drop(late);
    let hw = node
        .store
        .get_counter(outbox::HIGH_WATER_KEY.into())
        .await
        .unwrap()
        .unwrap();
    assert!(hw > 6, "reserved ahead: {hw}");
    drop(node);

    let node = Node::start(config(broker.port, dir.path()));
    node.event(3, 1);
    let third = futures_take(&mut crm, &t.events(), 2).await;
    let skipped = third[0].json();
    assert_eq!(skipped["type"], "seq.skipped");
    assert_eq!(skipped["seq"], hw);
    assert_eq!(
        skipped["data"],
        serde_json::json!({"from": 6, "to": hw - 1, "reason": "restart"})
    );
    assert_eq!(third[1].json()["seq"], hw + 1);
    assert_eq!(third[1].json()["type"], "dtmf");
    node.stop().await;
}

/// The next `n` messages on `topic`.
async fn futures_take(crm: &mut Crm, topic: &str, n: usize) -> Vec<Msg> {
    let mut v = Vec::new();
    while v.len() < n {
        v.push(crm.next_on(topic).await);
    }
    v
}

#[tokio::test]
async fn announcements_and_audio_reach_the_cache_and_bad_ones_change_nothing() {
    let broker = Broker::start().await;
    let t = topics();
    let crm = Crm::connect(broker.port, &[t.status()]).await;
    let dir = TempDir::new("ann");
    let mut cfg = config(broker.port, dir.path());
    cfg.mqtt.max_payload_bytes = 8 << 20;
    cfg.max_audio_bytes = 100_000;

    // Retained before the node connects: delivered on subscription.
    let audio = wav(8000);
    let h = sha(&audio);
    let doc = announcement("outage-phl", 3, Some(&h), Some("We are aware of an outage"));
    crm.publish(&t.audio(&h), true, audio.clone()).await;
    crm.publish(&t.announcement("outage-phl"), true, doc.clone())
        .await;

    let mut node = Node::start(cfg.clone());
    let ann_file = dir.path().join("announcements/outage-phl.json");
    let wav_file = dir.path().join(format!("audio/{h}.wav"));
    // The announcement reaches the engine, not the disk: the node decides what is cached.
    let m = next_changed(&mut node).await;
    match &m {
        FromLink::Announcement {
            announcement,
            doc: d,
        } => {
            assert_eq!(
                (announcement.id.as_str(), announcement.version),
                ("outage-phl", 3)
            );
            assert_eq!(d, &doc);
        }
        other => panic!("expected version 3, got {other:?}"),
    }
    assert!(!ann_file.exists(), "cached before the node kept it");
    node.keep(&m);
    node.wait_status("both accepted", |s| s.announcements_accepted == 2)
        .await;
    assert_eq!(std::fs::read(&ann_file).unwrap(), doc);
    assert_eq!(std::fs::read(&wav_file).unwrap(), audio);
    let loaded = crate::announcements::load_dir(dir.path(), 1 << 20, &|_| false);
    assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
    assert_eq!(loaded.announcements.len(), 1);
    assert_eq!(loaded.audio.len(), 1);
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("announcements"))
        .unwrap()
        .chain(std::fs::read_dir(dir.path().join("audio")).unwrap())
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    while node.from.try_recv().is_ok() {}

    // Bad input: each rejected and counted, the cache unchanged.
    let junk_audio = b"this is not a wav file".to_vec();
    let big_wav = wav(60_000); // 120 KB > max_audio_bytes
    let bad: Vec<(String, Vec<u8>)> = vec![
        (t.announcement("outage-phl"), b"{not json".to_vec()),
        (
            t.announcement("outage-phl"),
            br#"{"id":"outage-phl","version":9,"bogus":1}"#.to_vec(),
        ),
        (
            t.announcement("outage-phl"),
            announcement("other-id", 9, Some(&h), None),
        ),
        (
            t.announcement("bad$id"),
            announcement("bad$id", 1, Some(&h), None),
        ),
        (t.announcement("huge"), vec![b' '; 9 << 20]),
        (
            t.audio(&h.replace('0', "1").replace('a', "b")),
            audio.clone(),
        ),
        (t.audio(&sha(&junk_audio)), junk_audio.clone()),
        (t.audio(&sha(&big_wav)), big_wav.clone()),
        (t.audio("nothex"), audio.clone()),
    ];
    let n = bad.len() as u64;
    for (topic, payload) in bad {
        crm.publish(&topic, false, payload).await;
    }
    node.wait_status("all rejected", |s| s.rejected == n).await;
    let st = node.status();
    assert!(st.connected, "the connection survives: {st:?}");
    assert_eq!(st.announcements_accepted, 2);
    assert_eq!(std::fs::read(&ann_file).unwrap(), doc);
    let names: BTreeSet<String> = std::fs::read_dir(dir.path().join("audio"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("{h}.wav")].into_iter().collect());
    assert!(!dir.path().join("announcements/huge.json").exists());
    assert!(
        node.from.try_recv().is_err(),
        "no news for the engine of rejects"
    );

    // An older version is valid for the link and goes to the node, whose version rule
    // refuses it: that refusal is counted here too, and the cache keeps version 3.
    crm.publish(
        &t.announcement("outage-phl"),
        false,
        announcement("outage-phl", 2, Some(&h), None),
    )
    .await;
    match next_changed(&mut node).await {
        FromLink::Announcement { announcement, .. } => assert_eq!(announcement.version, 2),
        other => panic!("expected version 2, got {other:?}"),
    }
    node.handle
        .tx
        .send(ToLink::Rejected(
            "announcement outage-phl version 2: older than version 3".into(),
        ))
        .unwrap();
    node.wait_status("the node's refusal counted", |s| s.rejected == n + 1)
        .await;
    assert_eq!(
        node.status().last_rejection.as_deref(),
        Some("announcement outage-phl version 2: older than version 3")
    );
    assert_eq!(std::fs::read(&ann_file).unwrap(), doc);

    // The same version again goes to the node too (it changes nothing there); a newer one
    // replaces the cached copy once the node keeps it.
    crm.publish(&t.announcement("outage-phl"), false, doc.clone())
        .await;
    let v4 = announcement("outage-phl", 4, Some(&h), None);
    crm.publish(&t.announcement("outage-phl"), true, v4.clone())
        .await;
    match next_changed(&mut node).await {
        FromLink::Announcement { announcement, .. } => assert_eq!(announcement.version, 3),
        other => panic!("expected version 3 again, got {other:?}"),
    }
    let m = next_changed(&mut node).await;
    match &m {
        FromLink::Announcement { announcement, .. } => assert_eq!(announcement.version, 4),
        other => panic!("expected version 4, got {other:?}"),
    }
    node.keep(&m);
    until("version 4 cached", || {
        std::fs::read(&ann_file).ok().as_ref() == Some(&v4)
    })
    .await;
    assert_eq!(node.status().rejected, n + 1);

    // An empty payload withdraws; the node asks for the cached copy to go.
    crm.publish(&t.announcement("outage-phl"), true, Vec::new())
        .await;
    let m = next_changed(&mut node).await;
    match &m {
        FromLink::Withdrawn(id) => assert_eq!(id.as_str(), "outage-phl"),
        other => panic!("expected a withdrawal, got {other:?}"),
    }
    node.keep(&m);
    until("the cached copy deleted", || !ann_file.exists()).await;
    assert!(wav_file.exists());
    node.stop().await;
}

#[tokio::test]
async fn text_announcements_are_rendered_with_the_speech_command() {
    if !Path::new("/usr/bin/espeak-ng").exists() {
        eprintln!("espeak-ng not installed: skipped");
        return;
    }
    let broker = Broker::start().await;
    let t = topics();
    let crm = Crm::connect(broker.port, &[t.status()]).await;
    let dir = TempDir::new("tts");
    let mut cfg = config(broker.port, dir.path());
    cfg.speech_command = Some("espeak-ng --stdout --stdin".into());
    let mut node = Node::start(cfg);
    node.wait_status("connected", |s| s.connected).await;
    let doc = announcement(
        "storm",
        1,
        None,
        Some("Severe weather is affecting service."),
    );
    crm.publish(&t.announcement("storm"), true, doc.clone())
        .await;
    let m = next_changed(&mut node).await;
    node.keep(&m);
    let file = dir.path().join("announcements/storm.json");
    until("storm cached", || file.exists()).await;
    let cached: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(cached["text"], "Severe weather is affecting service.");
    let h = cached["audio_sha256"].as_str().unwrap();
    let bytes = std::fs::read(dir.path().join(format!("audio/{h}.wav"))).unwrap();
    assert_eq!(sha(&bytes), h);
    let pcm = crate::media::audio::decode_wav(&bytes).unwrap();
    assert!(pcm.len() > 8000, "at least a second of speech");
    let loaded = crate::announcements::load_dir(dir.path(), 16 << 20, &|_| false);
    assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
    assert_eq!(
        loaded.announcements[0]
            .0
            .audio
            .map(|a| crate::announcements::hex(&a))
            .as_deref(),
        Some(h)
    );
    // The same text again (the retained message on the next connection): the cached
    // rendering is named and the speech command does not run again (no new audio news).
    crm.publish(&t.announcement("storm"), true, doc).await;
    let again = loop {
        match recv(&mut node.from, "the same text again").await {
            FromLink::Audio { .. } => panic!("the same text was rendered again"),
            m @ FromLink::Announcement { .. } => break m,
            _ => {}
        }
    };
    match again {
        FromLink::Announcement { announcement, .. } => assert_eq!(
            announcement
                .audio
                .map(|a| crate::announcements::hex(&a))
                .as_deref(),
            Some(h)
        ),
        _ => unreachable!(),
    }
    node.stop().await;
}

#[tokio::test]
async fn callbacks_are_published_synced_and_their_state_comes_back() {
    let broker = Broker::start().await;
    let t = topics();
    let mut crm = Crm::connect(broker.port, &[t.callbacks()]).await;
    let dir = TempDir::new("cb");
    let mut node = Node::start(config(broker.port, dir.path()));
    assert_eq!(recv(&mut node.from, "Connected").await, FromLink::Connected);
    let req = CallbackRequest {
        callback_id: "cb-1".into(),
        node: String::new(),
        site: String::new(),
        call_id: "00000000000000ab".into(),
        requested_at: "2026-11-23T06:01:02.345Z".into(),
        caller: Some("+12155550123".into()),
        callback_number: "+12155550123".into(),
        dialled: Some("+18005550100".into()),
        announcement_id: Some("outage-phl".into()),
        position: 5,
        window: crate::link::WindowJson {
            not_before: "2026-11-23T08:00:00-05:00".into(),
            not_after: "2026-11-23T12:00:00-05:00".into(),
        },
        language: Some("es".into()),
    };
    node.handle
        .tx
        .send(ToLink::Callback(Box::new(req.clone())))
        .unwrap();
    let m = crm.next_on(&t.callbacks()).await;
    assert!(!m.retain);
    let expected = CallbackRequest {
        node: "pi-001".into(),
        site: "phl".into(),
        ..req
    };
    assert_eq!(m.json(), serde_json::to_value(&expected).unwrap());
    assert_eq!(
        recv(&mut node.from, "CallbackSynced").await,
        FromLink::CallbackSynced("cb-1".into())
    );

    crm.publish(
        &t.callback_state("cb-1"),
        false,
        r#"{"state":"accepted","at":"2026-11-23T06:05:00Z","note":"agent 7"}"#,
    )
    .await;
    assert_eq!(
        recv(&mut node.from, "CallbackState").await,
        FromLink::CallbackState {
            id: "cb-1".into(),
            state: CrmState::Accepted,
            at: UnixMillis::parse_rfc3339("2026-11-23T06:05:00Z").unwrap(),
            window: None,
        }
    );
    crm.publish(&t.callback_state("cb-1"), false, r#"{"state":"completed"}"#)
        .await;
    match recv(&mut node.from, "CallbackState").await {
        FromLink::CallbackState { id, state, .. } => {
            assert_eq!((id.as_str(), state), ("cb-1", CrmState::Completed));
        }
        other => panic!("{other:?}"),
    }
    // Unknown states and junk are rejected, not passed on.
    crm.publish(&t.callback_state("cb-1"), false, r#"{"state":"lost"}"#)
        .await;
    crm.publish(&t.callback_state("cb-1"), false, "\u{0}\u{1}")
        .await;
    node.wait_status("rejected", |s| s.rejected == 2).await;
    assert!(node.from.try_recv().is_err());
    node.stop().await;
}

#[tokio::test]
async fn an_unreadable_ca_file_is_a_clear_error_and_no_panic() {
    let dir = TempDir::new("tls");
    let mut cfg = config(free_port(), dir.path());
    cfg.mqtt.url = "mqtts://127.0.0.1:8883".parse().unwrap();
    cfg.mqtt.ca_file = Some(dir.path().join("missing-ca.pem"));
    let node = Node::start(cfg);
    node.wait_status("error", |s| s.last_error.is_some()).await;
    let e = node.status().last_error.unwrap();
    assert!(
        e.contains("mqtt.ca_file") && e.contains("missing-ca.pem"),
        "{e}"
    );
    // The engine's work is still taken.
    node.event(1, 1);
    node.wait_status("sequenced", |s| s.last_seq == 1).await;
    node.stop().await;
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=ccedge test CA",
    ]);
    openssl(dir, &ca);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (key, csr, crt, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.crt"),
            format!("{who}.ext"),
        );
        let subj = format!("/CN={who}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
    // Mosquitto started as root drops to its own user: let it read the (test) keys.
    for f in ["server.key", "server.crt", "ca.crt"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

#[tokio::test]
async fn mqtts_with_a_ca_file_and_a_client_certificate() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("openssl not installed: skipped");
        return;
    }
    let pki = TempDir::new("pki");
    make_pki(pki.path());
    // One broker: TLS with required client certificates for the node, plain TCP for the CRM.
    // Fresh ports again when one was taken between finding it free and Mosquitto binding it.
    let p = |f: &str| pki.path().join(f).display().to_string();
    let conf = pki.path().join("mosquitto.conf");
    let mut started = None;
    for _ in 0..5 {
        let (tls_port, plain_port) = (free_port(), free_port());
        std::fs::write(
            &conf,
            format!(
                "per_listener_settings false\nallow_anonymous true\npersistence false\n\
                 listener {plain_port} 127.0.0.1\n\
                 listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
                 require_certificate true\n",
                p("ca.crt"),
                p("server.crt"),
                p("server.key")
            ),
        )
        .unwrap();
        let (child, ok) = spawn_listening(&conf, &[plain_port, tls_port]).await;
        let broker = Broker {
            port: plain_port,
            dir: TempDir::new("tlsbroker"),
            child: Some(child),
        };
        if ok {
            started = Some((broker, tls_port, plain_port));
            break;
        }
    }
    let (_broker, tls_port, plain_port) = started.expect("mosquitto with TLS started");
    let t = topics();
    let mut crm = Crm::connect(plain_port, &[t.events()]).await;
    let dir = TempDir::new("tlsnode");
    let mut cfg = config(tls_port, dir.path());
    cfg.mqtt.url = format!("mqtts://127.0.0.1:{tls_port}").parse().unwrap();
    cfg.mqtt.ca_file = Some(pki.path().join("ca.crt"));
    cfg.mqtt.cert_file = Some(pki.path().join("client.crt"));
    cfg.mqtt.key_file = Some(pki.path().join("client.key"));
    let node = Node::start(cfg.clone());
    node.wait_status("connected over TLS", |s| s.connected)
        .await;
    node.event(1, 1);
    let m = crm.next_on(&t.events()).await;
    assert_eq!(m.json()["seq"], 1);
    node.stop().await;

    // Without the client certificate the broker refuses: an error, no panic, retried.
    cfg.mqtt.cert_file = None;
    cfg.mqtt.key_file = None;
    let node = Node::start(cfg);
    node.wait_status("refused", |s| !s.connected && s.last_error.is_some())
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!node.status().connected);
    node.stop().await;
}

#[tokio::test]
async fn a_full_outbox_drops_the_oldest_counts_them_and_replay_reports_the_hole() {
    let port = free_port();
    let dir = TempDir::new("full");
    let mut cfg = config(port, dir.path());
    cfg.outbox.capacity = 5;
    let node = Node::start(cfg);
    for i in 1..=8u32 {
        node.event(9, i);
    }
    node.wait_status("bounded", |s| {
        s.last_seq == 8 && s.outbox_depth == 5 && s.outbox_dropped == 3
    })
    .await;
    assert_eq!(node.outbox_len().await, 5);
    let broker = Broker::start_on(port).await;
    let t = topics();
    let mut crm = Crm::connect(broker.port, &[t.events()]).await;
    node.wait_status("connected", |s| s.connected).await;
    // Whatever arrived before the CRM subscribed is asked for again (repeatedly: a replay
    // may itself append a seq.skipped that pushes the next-oldest event out).
    let mut events = BTreeSet::new();
    let mut skipped = Vec::new();
    let accounted = |events: &BTreeSet<u64>, skipped: &Vec<(u64, u64)>| {
        (1..=8).all(|s| events.contains(&s) || skipped.iter().any(|&(a, b)| a <= s && s <= b))
    };
    let give_up = tokio::time::Instant::now() + WAIT;
    while !accounted(&events, &skipped) {
        assert!(
            tokio::time::Instant::now() < give_up,
            "{events:?} {skipped:?}"
        );
        crm.publish(&t.events_replay(), false, r#"{"from_seq":1,"to_seq":8}"#)
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(m)) = tokio::time::timeout_at(deadline, crm.rx.recv()).await {
            if m.topic != t.events() {
                continue;
            }
            let v = m.json();
            if v["type"] == "seq.skipped" {
                assert_eq!(v["data"]["reason"], "unavailable");
                skipped.push((
                    v["data"]["from"].as_u64().unwrap(),
                    v["data"]["to"].as_u64().unwrap(),
                ));
            } else {
                events.insert(v["seq"].as_u64().unwrap());
            }
        }
    }
    // The dropped ones never come; the first report covers exactly them.
    assert!(!events.contains(&1) && !events.contains(&2) && !events.contains(&3));
    assert_eq!(skipped[0], (1, 3));
    node.stop().await;
}

/// The signing input of `signature.rs`'s table, built here by hand from the documented format
/// (not with `signature::signed_input`), as a CRM in another language would.
fn netstring_input(doc: &Value) -> Vec<u8> {
    fn ns(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(format!("{}:{s},", s.len()).as_bytes());
    }
    let s = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let mut out = b"ccedge-announcement-v1".to_vec();
    ns(&mut out, &s("id"));
    ns(&mut out, &doc["version"].to_string());
    ns(&mut out, &doc["priority"].as_i64().unwrap_or(0).to_string());
    for list in ["sites", "dialled", "caller_prefixes"] {
        let items = doc["scope"][list].as_array().cloned().unwrap_or_default();
        ns(&mut out, &items.len().to_string());
        for i in items {
            ns(&mut out, i.as_str().unwrap());
        }
    }
    for k in ["valid_from", "valid_until", "audio_sha256", "text"] {
        ns(&mut out, &s(k));
    }
    ns(
        &mut out,
        if doc["offer_callback"].as_bool().unwrap_or(true) {
            "true"
        } else {
            "false"
        },
    );
    ns(&mut out, &s("language"));
    out
}

/// Signs `doc` with OpenSSL's Ed25519 (`pkeyutl -rawin`) and the private key `pem` in `dir`.
fn openssl_sign(dir: &Path, pem: &str, doc: &Value) -> Vec<u8> {
    std::fs::write(dir.join("msg.bin"), netstring_input(doc)).unwrap();
    openssl(
        dir,
        &[
            "pkeyutl", "-sign", "-inkey", pem, "-rawin", "-in", "msg.bin", "-out", "sig.bin",
        ],
    );
    let sig = std::fs::read(dir.join("sig.bin")).unwrap();
    assert_eq!(sig.len(), 64);
    let mut d = doc.clone();
    d["signature"] = crate::config::values::base64_encode(&sig).into();
    serde_json::to_vec(&d).unwrap()
}

/// The raw 32-byte Ed25519 public key of `pem` (the last 32 bytes of its DER SPKI).
fn openssl_public_key(dir: &Path, pem: &str) -> [u8; 32] {
    openssl(
        dir,
        &[
            "pkey", "-in", pem, "-pubout", "-outform", "DER", "-out", "pub.der",
        ],
    );
    let der = std::fs::read(dir.join("pub.der")).unwrap();
    der[der.len() - 32..].try_into().unwrap()
}

#[tokio::test]
async fn with_a_signing_key_only_announcements_signed_by_it_are_cached() {
    let broker = Broker::start().await;
    let t = topics();
    let crm = Crm::connect(broker.port, &[t.status()]).await;
    let dir = TempDir::new("signed");
    let keys = TempDir::new("signed-keys");
    for name in ["crm.pem", "stranger.pem"] {
        openssl(
            keys.path(),
            &["genpkey", "-algorithm", "ed25519", "-out", name],
        );
    }
    let mut cfg = config(broker.port, dir.path());
    cfg.signing_key = Some(openssl_public_key(keys.path(), "crm.pem"));
    let mut node = Node::start(cfg);
    node.wait_status("connected", |s| s.connected).await;

    let audio = wav(4000);
    let h = sha(&audio);
    crm.publish(&t.audio(&h), true, audio.clone()).await;
    node.wait_status("audio accepted", |s| s.announcements_accepted == 1)
        .await;
    let ann_file = dir.path().join("announcements/outage-phl.json");
    let doc = |version: u32| -> Value {
        serde_json::from_slice(&announcement(
            "outage-phl",
            version,
            Some(&h),
            Some("Line one.\nLine two, with a comma."),
        ))
        .unwrap()
    };

    // Refused: unsigned, signed by another key, signed then changed, garbage signature.
    let mut tampered: Value =
        serde_json::from_slice(&openssl_sign(keys.path(), "crm.pem", &doc(5))).unwrap();
    tampered["scope"]["sites"] = serde_json::json!(["phl", "nyc"]);
    let mut garbage = doc(5);
    garbage["signature"] = "bm90IGEgc2lnbmF0dXJl".into();
    let refused = [
        announcement("outage-phl", 5, Some(&h), None),
        openssl_sign(keys.path(), "stranger.pem", &doc(5)),
        serde_json::to_vec(&tampered).unwrap(),
        serde_json::to_vec(&garbage).unwrap(),
    ];
    let n = refused.len() as u64;
    for payload in refused {
        crm.publish(&t.announcement("outage-phl"), false, payload)
            .await;
    }
    node.wait_status("all refused", |s| s.rejected == n).await;
    assert!(!ann_file.exists(), "nothing unsigned reached the cache");
    assert_eq!(node.status().announcements_accepted, 1);

    // Signed by the CRM's key (with OpenSSL, from the documented input): cached as sent.
    let good = openssl_sign(keys.path(), "crm.pem", &doc(5));
    while node.from.try_recv().is_ok() {}
    crm.publish(&t.announcement("outage-phl"), true, good.clone())
        .await;
    let m = next_changed(&mut node).await;
    node.keep(&m);
    node.wait_status("accepted", |s| s.announcements_accepted == 2)
        .await;
    assert_eq!(std::fs::read(&ann_file).unwrap(), good);
    // The node's own signing input (what `firmware-sim crm --signing-key` signs) is the
    // documented one.
    let w: crate::announcements::AnnouncementWire =
        serde_json::from_slice(&serde_json::to_vec(&doc(6)).unwrap()).unwrap();
    assert_eq!(signature::signed_input(&w), netstring_input(&doc(6)));
    node.stop().await;
}

// ---- benchmarks (ignored; bench/crm.sh runs them in release mode) ----------------------------

fn bench_n(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Outbox drain after an outage: `CCEDGE_BENCH_EVENTS` (20,000) events are sequenced while
/// the broker is down; then it starts, and the CRM counts how fast every `seq` arrives (in
/// order: a later `seq` before an earlier one fails the run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/crm.sh"]
#[allow(clippy::disallowed_methods)] // it times a real broker
async fn bench_outbox_drain_after_an_outage() {
    let n = bench_n("CCEDGE_BENCH_EVENTS", 20_000);
    let mut broker = Broker::start().await;
    let t = topics();
    let dir = TempDir::new("drain");
    let mut cfg = config(broker.port, dir.path());
    cfg.outbox.capacity = n + 1000;
    let node = Node::start(cfg);
    node.wait_status("connected", |s| s.connected).await;
    broker.kill();
    node.wait_status("disconnected", |s| !s.connected).await;
    let started = std::time::Instant::now();
    for i in 0..n {
        node.event(i / 8 + 1, u32::try_from(i % 8).unwrap() + 1);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while node.status().last_seq < n {
        assert!(tokio::time::Instant::now() < deadline, "sequencing stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sequenced_s = started.elapsed().as_secs_f64();
    assert_eq!(node.outbox_len().await, n);

    broker.restart().await;
    let mut crm = Crm::connect(broker.port, &[t.events()]).await;
    let mut first: Option<std::time::Instant> = None;
    let mut next = 1u64;
    let mut dups = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while next <= n {
        let m = tokio::time::timeout_at(deadline, crm.next_on(&t.events()))
            .await
            .expect("drained in time");
        first.get_or_insert_with(std::time::Instant::now);
        let seq = m.json()["seq"].as_u64().unwrap();
        match seq.cmp(&next) {
            std::cmp::Ordering::Equal => next += 1,
            std::cmp::Ordering::Less => dups += 1,
            std::cmp::Ordering::Greater => panic!("seq {seq} arrived before {next}"),
        }
    }
    let drain_s = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!(
        "{}",
        serde_json::json!({
            "bench": "outbox_drain",
            "events": n,
            "sequenced_offline_s": sequenced_s,
            "sequenced_offline_per_s": n as f64 / sequenced_s,
            "drain_s": drain_s,
            "drained_per_s": n as f64 / drain_s,
            "in_order": true,
            "redelivered": dups,
        })
    );
    node.stop().await;
}
