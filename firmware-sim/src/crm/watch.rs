//! Watching the nodes as the CRM does: events, callback requests and status from
//! `P/nodes/{site}/{node}/…`, with the event stream checked for gaps and duplicates.
//!
//! ## The tracker
//! [`Tracker`] is plain logic with time as an input. Per node it keeps the contiguous prefix
//! of `seq` it holds (`upto`: every event up to it arrived), the events above it that arrived
//! out of order, and every `event_id` seen:
//!
//! * an `event_id` seen before is a **duplicate** (at-least-once delivery; counted, ignored);
//! * a `seq` above `upto + 1` opens a **gap**: the numbers in between are missing until they
//!   arrive (a replay fills them);
//! * with acknowledgements on, [`Tracker::poll`] says `{"upto_seq": upto}` whenever `upto`
//!   moved (at most every [`TrackerConfig::ack_interval`]), and asks for each missing range
//!   with `{"from_seq": A, "to_seq": B}` once the gap is [`TrackerConfig::replay_grace`] old,
//!   then again every [`TrackerConfig::replay_interval`] while it stays open.
//!
//! Where a node's sequence starts: [`SeqStart::One`] expects `seq` 1 first (a CRM that saw the
//! node from its first event); [`SeqStart::FirstSeen`] takes the first event seen as the start
//! (a CRM joining a running node), [`SeqStart::At`] a given number.
//!
//! ## The watcher
//! [`run`] connects, subscribes (again after every reconnection), feeds the tracker, publishes
//! its acknowledgements and replay requests, accepts callback requests when asked to
//! (`{"state":"accepted"}` on `…/callbacks/{id}/state`), reports everything it sees through a
//! callback, and returns a [`Summary`] when stopped.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::Serialize;
use serde_json::{json, Value};

use super::{BrokerConfig, CrmError};

/// Where a node's event sequence starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStart {
    /// `seq` 1 is the node's first event.
    One,
    /// The first event seen starts the sequence.
    FirstSeen,
    /// This `seq` is the first one expected.
    At(u64),
}

/// The tracker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Publish acknowledgements and replay requests.
    pub ack: bool,
    /// Where sequences start.
    pub start: SeqStart,
    /// At most one acknowledgement per node this often.
    pub ack_interval: Duration,
    /// A gap is asked for once it is this old (events may just be in flight).
    pub replay_grace: Duration,
    /// Then again this often while it stays open.
    pub replay_interval: Duration,
    /// At most this many missing ranges per replay round.
    pub max_ranges: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            ack: false,
            start: SeqStart::FirstSeen,
            ack_interval: Duration::from_millis(200),
            replay_grace: Duration::from_millis(300),
            replay_interval: Duration::from_secs(2),
            max_ranges: 8,
        }
    }
}

/// What an event was, for the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Next in sequence, or filling a gap.
    New,
    /// Its `event_id` was seen before.
    Duplicate,
    /// A new `event_id` with a `seq` already held under another id (the node reused a seq).
    SeqReused,
    /// Below where the sequence started (not counted for gaps).
    BeforeStart,
}

/// Something the tracker wants published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// `{"upto_seq": N}` on `…/events/ack`.
    Ack {
        /// `site/node`.
        node: String,
        /// N.
        upto_seq: u64,
    },
    /// `{"from_seq": A, "to_seq": B}` on `…/events/replay`.
    Replay {
        /// `site/node`.
        node: String,
        /// A.
        from_seq: u64,
        /// B.
        to_seq: u64,
    },
}

#[derive(Debug, Default)]
struct NodeTrack {
    /// Every seq up to here is held (the baseline before the first event).
    upto: Option<u64>,
    /// Held seqs above `upto + 1`.
    above: BTreeSet<u64>,
    ids: HashSet<String>,
    seq_ids: BTreeMap<u64, String>,
    events: u64,
    duplicates: u64,
    seq_reused: u64,
    before_start: u64,
    /// Seqs that were ever found missing.
    went_missing: u64,
    first_seq: Option<u64>,
    max_seq: Option<u64>,
    callbacks: Vec<String>,
    callback_dups: u64,
    status: Option<Value>,
    acked: u64,
    acks_sent: u64,
    last_ack: Option<Instant>,
    gap_since: Option<Instant>,
    last_replay: Option<Instant>,
    replays_sent: u64,
}

impl NodeTrack {
    fn missing(&self) -> Vec<(u64, u64)> {
        let Some(upto) = self.upto else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut next = upto.saturating_add(1);
        for &s in &self.above {
            if s > next {
                out.push((next, s - 1));
            }
            next = s.saturating_add(1);
        }
        out
    }

    fn missing_count(&self) -> u64 {
        self.missing()
            .iter()
            .fold(0u64, |acc, (a, b)| acc.saturating_add(b - a + 1))
    }
}

/// Per-node event bookkeeping (see the module docs).
#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    nodes: BTreeMap<String, NodeTrack>,
}

/// One node's tallies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSummary {
    /// `site/node`.
    pub node: String,
    /// Event messages received (with duplicates).
    pub events: u64,
    /// Distinct events.
    pub unique_events: u64,
    /// Messages whose `event_id` was seen before.
    pub duplicates: u64,
    /// New `event_id`s on a `seq` already held.
    pub seq_reused: u64,
    /// Events below the start of the sequence.
    pub before_start: u64,
    /// Lowest and highest `seq` seen.
    pub first_seq: Option<u64>,
    /// Highest `seq` seen.
    pub max_seq: Option<u64>,
    /// Every event up to this `seq` is held.
    pub contiguous_upto: Option<u64>,
    /// `seq` numbers that were missing at some point (gaps opened).
    pub went_missing: u64,
    /// Missing ranges now (inclusive).
    pub missing: Vec<(u64, u64)>,
    /// Callback requests received (distinct callback ids).
    pub callbacks: u64,
    /// The distinct callback ids, in arrival order.
    pub callback_ids: Vec<String>,
    /// Callback requests received again.
    pub callback_duplicates: u64,
    /// Acknowledgements sent, and the last `upto_seq` acknowledged.
    pub acks_sent: u64,
    /// The last acknowledged `upto_seq`.
    pub acked_seq: u64,
    /// Replay requests sent.
    pub replays_sent: u64,
    /// The last status document.
    pub status: Option<Value>,
}

impl NodeSummary {
    /// No gap open now.
    #[must_use]
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }
}

impl Tracker {
    /// An empty tracker.
    #[must_use]
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            cfg,
            nodes: BTreeMap::new(),
        }
    }

    /// Records one event of `node` (`site/node`); call for every event message.
    pub fn on_event(&mut self, now: Instant, node: &str, seq: u64, event_id: &str) -> Verdict {
        let start = self.cfg.start;
        let t = self.nodes.entry(node.to_owned()).or_default();
        t.events += 1;
        if t.ids.contains(event_id) {
            t.duplicates += 1;
            return Verdict::Duplicate;
        }
        let before = *t.upto.get_or_insert(match start {
            SeqStart::One => 0,
            SeqStart::FirstSeen => seq.saturating_sub(1),
            SeqStart::At(s) => s.saturating_sub(1),
        });
        t.ids.insert(event_id.to_owned());
        if t.seq_ids.contains_key(&seq) {
            t.seq_reused += 1;
            return Verdict::SeqReused;
        }
        if seq <= before {
            t.before_start += 1;
            return Verdict::BeforeStart;
        }
        t.first_seq = Some(t.first_seq.map_or(seq, |f| f.min(seq)));
        t.seq_ids.insert(seq, event_id.to_owned());
        let prev_max = t.max_seq.unwrap_or(before).max(before);
        if seq > prev_max.saturating_add(1) {
            t.went_missing += seq - prev_max - 1;
        }
        t.max_seq = Some(t.max_seq.map_or(seq, |m| m.max(seq)));
        t.above.insert(seq);
        let mut upto = before;
        while upto < u64::MAX && t.above.remove(&(upto + 1)) {
            upto += 1;
        }
        t.upto = Some(upto);
        if t.above.is_empty() {
            t.gap_since = None;
        } else if t.gap_since.is_none() {
            t.gap_since = Some(now);
        }
        Verdict::New
    }

    /// Records a callback request; `false` when this callback id was seen before.
    pub fn on_callback(&mut self, node: &str, callback_id: &str) -> bool {
        let t = self.nodes.entry(node.to_owned()).or_default();
        if t.callbacks.iter().any(|c| c == callback_id) {
            t.callback_dups += 1;
            false
        } else {
            t.callbacks.push(callback_id.to_owned());
            true
        }
    }

    /// Records a node's status document.
    pub fn on_status(&mut self, node: &str, status: Value) {
        self.nodes.entry(node.to_owned()).or_default().status = Some(status);
    }

    /// The missing ranges of `node` now.
    #[must_use]
    pub fn missing(&self, node: &str) -> Vec<(u64, u64)> {
        self.nodes
            .get(node)
            .map(NodeTrack::missing)
            .unwrap_or_default()
    }

    /// What to publish now (acknowledgements, replay requests); call after every message and
    /// on a steady tick (every 100 ms or so). Nothing when acknowledgements are off.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.cfg.ack {
            return out;
        }
        let cfg = self.cfg;
        for (node, t) in &mut self.nodes {
            let upto = t.upto.unwrap_or(0);
            let due = |last: Option<Instant>, every: Duration| {
                last.is_none_or(|l| now.saturating_duration_since(l) >= every)
            };
            if upto > t.acked && due(t.last_ack, cfg.ack_interval) {
                t.acked = upto;
                t.acks_sent += 1;
                t.last_ack = Some(now);
                out.push(Action::Ack {
                    node: node.clone(),
                    upto_seq: upto,
                });
            }
            if let Some(since) = t.gap_since {
                if now.saturating_duration_since(since) >= cfg.replay_grace
                    && due(t.last_replay, cfg.replay_interval)
                {
                    t.last_replay = Some(now);
                    for (a, b) in t.missing().into_iter().take(cfg.max_ranges) {
                        t.replays_sent += 1;
                        out.push(Action::Replay {
                            node: node.clone(),
                            from_seq: a,
                            to_seq: b,
                        });
                    }
                }
            }
        }
        out
    }

    /// The acknowledgements still owed (ignoring the rate limit); call once when stopping.
    pub fn flush(&mut self, now: Instant) -> Vec<Action> {
        if !self.cfg.ack {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (node, t) in &mut self.nodes {
            let upto = t.upto.unwrap_or(0);
            if upto > t.acked {
                t.acked = upto;
                t.acks_sent += 1;
                t.last_ack = Some(now);
                out.push(Action::Ack {
                    node: node.clone(),
                    upto_seq: upto,
                });
            }
        }
        out
    }

    /// Every node's tallies, by `site/node`.
    #[must_use]
    pub fn summary(&self) -> Vec<NodeSummary> {
        self.nodes
            .iter()
            .map(|(node, t)| NodeSummary {
                node: node.clone(),
                events: t.events,
                unique_events: t.ids.len() as u64,
                duplicates: t.duplicates,
                seq_reused: t.seq_reused,
                before_start: t.before_start,
                first_seq: t.first_seq,
                max_seq: t.max_seq,
                contiguous_upto: t.upto,
                went_missing: t.went_missing,
                missing: t.missing(),
                callbacks: t.callbacks.len() as u64,
                callback_ids: t.callbacks.clone(),
                callback_duplicates: t.callback_dups,
                acks_sent: t.acks_sent,
                acked_seq: t.acked,
                replays_sent: t.replays_sent,
                status: t.status.clone(),
            })
            .collect()
    }

    /// Events still missing across all nodes.
    #[must_use]
    pub fn missing_total(&self) -> u64 {
        self.nodes
            .values()
            .fold(0u64, |acc, t| acc.saturating_add(t.missing_count()))
    }
}

/// What to watch and how.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Topic prefix (`ccedge/v1`).
    pub prefix: String,
    /// One node (`site`, `node`), or every node.
    pub node: Option<(String, String)>,
    /// The tracker's settings (`ack` also accepts callback requests).
    pub tracker: TrackerConfig,
    /// Stop after this many messages (events, callbacks and status).
    pub count: Option<u64>,
}

impl WatchConfig {
    /// Every node under `prefix`, no acknowledgements.
    #[must_use]
    pub fn new(prefix: &str) -> WatchConfig {
        WatchConfig {
            prefix: super::normalize_prefix(prefix),
            node: None,
            tracker: TrackerConfig::default(),
            count: None,
        }
    }

    /// The three subscriptions.
    #[must_use]
    pub fn filters(&self) -> [String; 3] {
        let (s, n) = self
            .node
            .as_ref()
            .map_or(("+", "+"), |(s, n)| (s.as_str(), n.as_str()));
        let p = &self.prefix;
        [
            format!("{p}/nodes/{s}/{n}/events"),
            format!("{p}/nodes/{s}/{n}/callbacks"),
            format!("{p}/nodes/{s}/{n}/status"),
        ]
    }
}

/// Something the watcher saw or did, reported as it happens.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Seen {
    /// Connected (again) and subscribed.
    Connected,
    /// The connection failed (it is retried).
    ConnectionError {
        /// Why.
        error: String,
    },
    /// A CallEvent.
    Event {
        /// `site/node`.
        node: String,
        /// Its `seq`.
        seq: u64,
        /// Its `type`.
        #[serde(rename = "type")]
        kind: String,
        /// Its `event_id`.
        event_id: String,
        /// New, duplicate, …
        verdict: Verdict,
        /// Ranges missing after it.
        missing: Vec<(u64, u64)>,
        /// The whole document.
        payload: Value,
    },
    /// A CallbackRequest.
    Callback {
        /// `site/node`.
        node: String,
        /// Its `callback_id`.
        callback_id: String,
        /// Seen before.
        duplicate: bool,
        /// The whole document.
        payload: Value,
    },
    /// A status document (empty when the retained status was cleared).
    Status {
        /// `site/node`.
        node: String,
        /// The document.
        payload: Value,
    },
    /// A message on a watched topic that is not the expected JSON.
    Malformed {
        /// The topic.
        topic: String,
        /// Why.
        error: String,
    },
    /// An acknowledgement or replay request was published.
    Sent(Action),
    /// A callback request was accepted on `…/callbacks/{id}/state`.
    Accepted {
        /// `site/node`.
        node: String,
        /// The callback.
        callback_id: String,
    },
}

/// What [`run`] saw, at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Messages received on the watched topics.
    pub messages: u64,
    /// Per node.
    pub nodes: Vec<NodeSummary>,
    /// Events missing at the end, all nodes.
    pub missing: u64,
    /// Duplicates, all nodes.
    pub duplicates: u64,
    /// From each new event's `at` to its arrival here, milliseconds (same-host clocks).
    pub event_latency_ms: Option<Latency>,
}

/// Percentiles of event delivery latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Events measured.
    pub count: usize,
    /// Median.
    pub p50: i64,
    /// 99th percentile.
    pub p99: i64,
    /// Largest.
    pub max: i64,
}

impl Latency {
    /// The percentiles of `samples` (`None` when empty).
    #[must_use]
    pub fn of(samples: &[i64]) -> Option<Latency> {
        let mut v = samples.to_vec();
        v.sort_unstable();
        let n = v.len();
        let at = |q: f64| v[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
        (n > 0).then(|| Latency {
            count: n,
            p50: at(0.50),
            p99: at(0.99),
            max: v[n - 1],
        })
    }
}

/// Milliseconds from an event's `at` (RFC 3339) to now, by the wall clock.
fn latency_ms(doc: &Value) -> Option<i64> {
    let at = doc.get("at")?.as_str()?;
    let at = shared::time::UnixMillis::parse_rfc3339(at).ok()?;
    #[allow(clippy::disallowed_methods)] // the watcher measures delivery by the wall clock
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(i64::try_from(now.as_millis()).ok()? - at.0)
}

/// Splits `P/nodes/{site}/{node}/{rest}` into (`site/node`, rest).
#[must_use]
pub fn split_topic<'a>(prefix: &str, topic: &'a str) -> Option<(String, &'a str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix("/nodes/")?;
    let mut it = rest.splitn(3, '/');
    let site = it.next()?;
    let node = it.next()?;
    let kind = it.next()?;
    Some((format!("{site}/{node}"), kind))
}

fn action_message(prefix: &str, a: &Action) -> (String, Vec<u8>) {
    match a {
        Action::Ack { node, upto_seq } => (
            format!("{prefix}/nodes/{node}/events/ack"),
            json!({ "upto_seq": upto_seq }).to_string().into_bytes(),
        ),
        Action::Replay {
            node,
            from_seq,
            to_seq,
        } => (
            format!("{prefix}/nodes/{node}/events/replay"),
            json!({ "from_seq": from_seq, "to_seq": to_seq })
                .to_string()
                .into_bytes(),
        ),
    }
}

/// The state `{"state":"accepted","at":…}` for callback `id` of `node`.
#[must_use]
pub fn accept_message(prefix: &str, node: &str, id: &str) -> (String, Vec<u8>) {
    (
        format!("{prefix}/nodes/{node}/callbacks/{id}/state"),
        json!({ "state": "accepted", "at": super::now_rfc3339() })
            .to_string()
            .into_bytes(),
    )
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Handles one PUBLISH; returns what to report.
fn on_publish(
    cfg: &WatchConfig,
    tracker: &mut Tracker,
    topic: &str,
    payload: &[u8],
    out: &mut Vec<Seen>,
    sends: &mut Vec<(String, Vec<u8>)>,
) {
    let Some((node, kind)) = split_topic(&cfg.prefix, topic) else {
        return;
    };
    let malformed = |error: String| Seen::Malformed {
        topic: topic.to_owned(),
        error,
    };
    if kind == "status" {
        let doc = if payload.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(payload) {
                Ok(v) => v,
                Err(e) => return out.push(malformed(e.to_string())),
            }
        };
        tracker.on_status(&node, doc.clone());
        out.push(Seen::Status { node, payload: doc });
        return;
    }
    let doc: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => return out.push(malformed(e.to_string())),
    };
    match kind {
        "events" => {
            let seq = doc.get("seq").and_then(Value::as_u64);
            let id = doc.get("event_id").and_then(Value::as_str);
            let (Some(seq), Some(id)) = (seq, id) else {
                return out.push(malformed("no seq or event_id".into()));
            };
            let verdict = tracker.on_event(now(), &node, seq, id);
            out.push(Seen::Event {
                missing: tracker.missing(&node),
                kind: doc
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned(),
                event_id: id.to_owned(),
                node,
                seq,
                verdict,
                payload: doc,
            });
        }
        "callbacks" => {
            let Some(id) = doc.get("callback_id").and_then(Value::as_str) else {
                return out.push(malformed("no callback_id".into()));
            };
            let id = id.to_owned();
            let new = tracker.on_callback(&node, &id);
            if cfg.tracker.ack {
                sends.push(accept_message(&cfg.prefix, &node, &id));
            }
            out.push(Seen::Callback {
                node: node.clone(),
                callback_id: id.clone(),
                duplicate: !new,
                payload: doc,
            });
            if cfg.tracker.ack {
                out.push(Seen::Accepted {
                    node,
                    callback_id: id,
                });
            }
        }
        _ => {}
    }
}

/// Watches until `stop` resolves or [`WatchConfig::count`] messages arrived, reporting every
/// message and action to `report`; returns the summary.
///
/// A lost connection is reported ([`Seen::ConnectionError`]) and retried every second.
///
/// # Errors
/// [`CrmError::Mqtt`] when a message cannot be queued for publishing (the client is gone).
pub async fn run<S, R>(
    broker: &BrokerConfig,
    cfg: &WatchConfig,
    stop: S,
    mut report: R,
) -> Result<Summary, CrmError>
where
    S: Future<Output = ()>,
    R: FnMut(&Seen),
{
    let (client, mut eventloop) = AsyncClient::new(broker.options(), 4096);
    let mut tracker = Tracker::new(cfg.tracker);
    let mut messages = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut seen = Vec::new();
    let mut sends = Vec::new();
    let mut latencies = Vec::new();
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for f in cfg.filters() {
                        client
                            .try_subscribe(f, QoS::AtLeastOnce)
                            .map_err(|e| CrmError::Mqtt(e.to_string()))?;
                    }
                    seen.push(Seen::Connected);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    messages += 1;
                    on_publish(cfg, &mut tracker, &p.topic, &p.payload, &mut seen, &mut sends);
                }
                Ok(_) => {}
                Err(e) => {
                    report(&Seen::ConnectionError { error: e.to_string() });
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
        for a in tracker.poll(now()) {
            sends.push(action_message(&cfg.prefix, &a));
            seen.push(Seen::Sent(a));
        }
        for (topic, payload) in sends.drain(..) {
            client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .map_err(|e| CrmError::Mqtt(e.to_string()))?;
        }
        for s in seen.drain(..) {
            if let Seen::Event {
                verdict: Verdict::New,
                payload,
                ..
            } = &s
            {
                latencies.extend(latency_ms(payload));
            }
            report(&s);
        }
        if cfg.count.is_some_and(|c| messages >= c) {
            break;
        }
    }
    // Final acknowledgements (ignoring the rate limit) go out before disconnecting.
    for a in tracker.flush(now()) {
        let (topic, payload) = action_message(&cfg.prefix, &a);
        let _ = client.try_publish(topic, QoS::AtLeastOnce, false, payload);
        report(&Seen::Sent(a));
    }
    let _ = client.try_disconnect();
    let flush = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
    let nodes = tracker.summary();
    Ok(Summary {
        messages,
        missing: tracker.missing_total(),
        duplicates: nodes.iter().map(|n| n.duplicates).sum(),
        nodes,
        event_latency_ms: Latency::of(&latencies),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ack: bool, start: SeqStart) -> TrackerConfig {
        TrackerConfig {
            ack,
            start,
            ..TrackerConfig::default()
        }
    }

    #[test]
    fn latency_percentiles() {
        assert_eq!(Latency::of(&[]), None);
        let v: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(
            Latency::of(&v),
            Some(Latency {
                count: 100,
                p50: 50,
                p99: 99,
                max: 100
            })
        );
        assert_eq!(
            Latency::of(&[7]).map(|l| (l.p50, l.p99, l.max)),
            Some((7, 7, 7))
        );
    }

    #[test]
    fn in_order_events_are_contiguous_and_acked_at_the_rate_limit() {
        let t0 = tokio::time::Instant::now().into_std();
        let mut t = Tracker::new(cfg(true, SeqStart::One));
        for s in 1..=3 {
            assert_eq!(t.on_event(t0, "phl/a", s, &format!("e{s}")), Verdict::New);
        }
        assert_eq!(
            t.poll(t0),
            vec![Action::Ack {
                node: "phl/a".into(),
                upto_seq: 3
            }]
        );
        t.on_event(t0, "phl/a", 4, "e4");
        assert!(
            t.poll(t0 + Duration::from_millis(50)).is_empty(),
            "rate limited"
        );
        assert_eq!(
            t.poll(t0 + Duration::from_millis(200)),
            vec![Action::Ack {
                node: "phl/a".into(),
                upto_seq: 4
            }]
        );
        assert!(
            t.poll(t0 + Duration::from_secs(5)).is_empty(),
            "nothing new"
        );
        let s = &t.summary()[0];
        assert_eq!((s.events, s.duplicates, s.went_missing), (4, 0, 0));
        assert_eq!(s.contiguous_upto, Some(4));
        assert!(s.complete());
    }

    #[test]
    fn a_gap_is_asked_for_after_the_grace_and_filled_by_the_replay() {
        let t0 = tokio::time::Instant::now().into_std();
        let mut t = Tracker::new(cfg(true, SeqStart::One));
        t.on_event(t0, "phl/a", 1, "e1");
        t.on_event(t0, "phl/a", 2, "e2");
        t.on_event(t0, "phl/a", 5, "e5");
        t.on_event(t0, "phl/a", 8, "e8");
        assert_eq!(t.missing("phl/a"), vec![(3, 4), (6, 7)]);
        // Before the grace only the prefix is acknowledged.
        assert_eq!(
            t.poll(t0),
            vec![Action::Ack {
                node: "phl/a".into(),
                upto_seq: 2
            }]
        );
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!(
            t.poll(t1),
            vec![
                Action::Replay {
                    node: "phl/a".into(),
                    from_seq: 3,
                    to_seq: 4
                },
                Action::Replay {
                    node: "phl/a".into(),
                    from_seq: 6,
                    to_seq: 7
                }
            ]
        );
        assert!(
            t.poll(t1 + Duration::from_secs(1)).is_empty(),
            "rate limited"
        );
        for s in [3, 4, 6] {
            assert_eq!(t.on_event(t1, "phl/a", s, &format!("e{s}")), Verdict::New);
        }
        assert_eq!(t.missing("phl/a"), vec![(7, 7)]);
        assert_eq!(
            t.poll(t1 + Duration::from_secs(2)),
            vec![
                Action::Ack {
                    node: "phl/a".into(),
                    upto_seq: 6
                },
                Action::Replay {
                    node: "phl/a".into(),
                    from_seq: 7,
                    to_seq: 7
                }
            ]
        );
        t.on_event(t1, "phl/a", 7, "e7");
        let s = &t.summary()[0];
        assert_eq!(s.contiguous_upto, Some(8));
        assert_eq!(s.went_missing, 4);
        assert_eq!(s.replays_sent, 3);
        assert!(s.complete());
        assert_eq!(t.missing_total(), 0);
    }

    #[test]
    fn the_same_event_id_twice_is_a_duplicate_and_changes_nothing() {
        let t0 = tokio::time::Instant::now().into_std();
        let mut t = Tracker::new(cfg(false, SeqStart::One));
        t.on_event(t0, "phl/a", 1, "e1");
        assert_eq!(t.on_event(t0, "phl/a", 1, "e1"), Verdict::Duplicate);
        assert_eq!(t.on_event(t0, "phl/a", 1, "other"), Verdict::SeqReused);
        assert!(t.poll(t0).is_empty(), "acks are off");
        let s = &t.summary()[0];
        assert_eq!(
            (s.events, s.unique_events, s.duplicates, s.seq_reused),
            (3, 2, 1, 1)
        );
        assert_eq!(s.contiguous_upto, Some(1));
    }

    #[test]
    fn a_missing_first_event_is_a_gap_from_one_but_not_from_first_seen() {
        let t0 = tokio::time::Instant::now().into_std();
        let mut one = Tracker::new(cfg(false, SeqStart::One));
        one.on_event(t0, "x/y", 3, "e3");
        assert_eq!(one.missing("x/y"), vec![(1, 2)]);
        let mut first = Tracker::new(cfg(false, SeqStart::FirstSeen));
        first.on_event(t0, "x/y", 3, "e3");
        first.on_event(t0, "x/y", 4, "e4");
        assert!(first.missing("x/y").is_empty());
        assert_eq!(first.on_event(t0, "x/y", 2, "e2"), Verdict::BeforeStart);
        let mut at = Tracker::new(cfg(false, SeqStart::At(2)));
        at.on_event(t0, "x/y", 3, "e3");
        assert_eq!(at.missing("x/y"), vec![(2, 2)]);
    }

    #[test]
    fn nodes_are_tracked_apart_and_callbacks_deduplicated() {
        let t0 = tokio::time::Instant::now().into_std();
        let mut t = Tracker::new(cfg(true, SeqStart::One));
        t.on_event(t0, "phl/a", 1, "a1");
        t.on_event(t0, "phl/b", 2, "b2");
        assert!(t.on_callback("phl/a", "cb1"));
        assert!(!t.on_callback("phl/a", "cb1"));
        let s = t.summary();
        assert_eq!(s.len(), 2);
        assert!(s[0].complete());
        assert_eq!(s[1].missing, vec![(1, 1)]);
        assert_eq!((s[0].callbacks, s[0].callback_duplicates), (1, 1));
    }

    #[test]
    fn topics_split_into_node_and_kind() {
        assert_eq!(
            split_topic("ccedge/v1", "ccedge/v1/nodes/phl/pi-1/events"),
            Some(("phl/pi-1".into(), "events"))
        );
        assert_eq!(
            split_topic("ccedge/v1", "ccedge/v1/nodes/phl/pi-1/callbacks/x/state"),
            Some(("phl/pi-1".into(), "callbacks/x/state"))
        );
        assert_eq!(split_topic("ccedge/v1", "other/nodes/a/b/events"), None);
        assert_eq!(split_topic("ccedge/v1", "ccedge/v1/nodes/a"), None);
    }
}
