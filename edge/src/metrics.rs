//! The Prometheus / OpenMetrics endpoint (`metrics.listen`): `GET /metrics` over a minimal
//! HTTP/1.1 server, encoded with `prometheus-client`.
//!
//! Where the figures come from:
//!
//! * the engine's [`Recorder`] sees every output of the node as the engine drains it
//!   ([`Recorder::output`]: calls ended by reason, call set-up time, bookings, announcement
//!   plays) and every pacer wake-up ([`Recorder::pacer_tick`]); it owns the per-call state it
//!   needs and updates [`Metrics`], which the endpoint reads without involving the engine;
//! * the counters the agent already keeps for `ccedge status` ([`Stats`], refreshed every
//!   500 ms in the engine's [`Snapshot`]) and the CRM link's [`LinkStatus`] are read at scrape
//!   time by a collector.
//!
//! The server answers one request per connection (`Connection: close`): `GET` or `HEAD` of
//! `/metrics` (a query string is ignored), 404 for other paths, 405 for other methods, 400
//! for what is not an HTTP/1.x request, 431 for a request head over [`MAX_REQUEST`] bytes,
//! 408 when the head does not arrive within [`READ_TIMEOUT`], 503 beyond
//! [`MAX_CONNECTIONS`] connections at once. It never reads a request body.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;
use shared::callback::CallbackQueue;
use shared::event::{EndReason, EventKind};
use shared::ids::CallbackId;
use shared::ivr::BookingResult;
use shared::node::{self, CallKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::link::LinkStatus;
use crate::view::{Snapshot, Stats};

/// Most connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// Largest request head read (request line and headers), bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Longest wait for a complete request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time to write a response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a response, how long and how much of what the client still sends is read and
/// dropped before the connection is closed.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// The OpenMetrics text format's media type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Pacer lateness buckets, seconds (the pacer's period is 20 ms).
const LATENESS_BUCKETS: [f64; 10] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25,
];
/// Call set-up buckets, seconds (`sip.answer_delay_ms` is part of it).
const SETUP_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Every `call.ended` reason.
const END_REASONS: [EndReason; 9] = [
    EndReason::CallerHangup,
    EndReason::NodeHangup,
    EndReason::Transferred,
    EndReason::Abandoned,
    EndReason::Rejected,
    EndReason::MediaTimeout,
    EndReason::SessionExpired,
    EndReason::Error,
    EndReason::Shutdown,
];

/// Every callback outcome counted, with the windows it is counted by: `asap` (may be called
/// within a minute of the request), `later` (not before: a time the caller chose, or the
/// centre's next opening when the request came out of hours), `none` (nothing was booked).
const OUTCOMES: [(&str, &[&str]); 5] = [
    ("booked", &["asap", "later"]),
    ("already_booked", &["asap", "later"]),
    ("queue_full", &["none"]),
    ("failed", &["none"]),
    ("expired", &["asap", "later"]),
];

/// The window label of a queued callback: `later` when it may not be called before a minute
/// after the request.
fn window_kind(e: &shared::callback::Entry) -> &'static str {
    if e.window.not_before.0 > e.requested_at.0.saturating_add(60_000) {
        "later"
    } else {
        "asap"
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
    window: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnnouncementLabels {
    id: String,
    version: String,
}

/// The metrics the engine updates as things happen; the endpoint reads them.
#[derive(Debug)]
pub struct Metrics {
    calls_active: Gauge,
    calls_ended: Family<ReasonLabel, Counter>,
    setup: Histogram,
    pacer_lateness: Histogram,
    callbacks: Family<OutcomeLabel, Counter>,
    plays: Family<AnnouncementLabels, Counter>,
    completions: Family<AnnouncementLabels, Counter>,
    barge_ins: Family<AnnouncementLabels, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            calls_active: Gauge::default(),
            calls_ended: Family::default(),
            setup: Histogram::new(SETUP_BUCKETS),
            pacer_lateness: Histogram::new(LATENESS_BUCKETS),
            callbacks: Family::default(),
            plays: Family::default(),
            completions: Family::default(),
            barge_ins: Family::default(),
        };
        // Every reason and outcome is shown from the start, at 0 (a rate over a series that
        // appears only with its first increment misses that increment).
        for reason in END_REASONS {
            let _ = m.calls_ended.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        for (outcome, windows) in OUTCOMES {
            for &window in windows {
                let _ = m.callbacks.get_or_create(&OutcomeLabel { outcome, window });
            }
        }
        m
    }
}

/// How often one announcement version was heard on this node since the agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AnnouncementCounts {
    /// Started for a caller.
    pub plays: u64,
    /// Played to their end.
    pub completions: u64,
    /// Cut short by the caller's key press (barge-in). Plays cut short otherwise (the caller
    /// hung up) count in neither.
    pub barge_ins: u64,
}

/// What the recorder remembers about a call until it ends.
#[derive(Debug, Clone, Copy)]
struct Track {
    /// When its `call.offered` went out (the INVITE was taken), until it is answered.
    offered: Option<Instant>,
    /// The `at` of its last event when that was a key press (a barge-in's key comes just
    /// before the interrupted `announcement.completed`, at the same time).
    dtmf_at: Option<i64>,
}

/// The engine's side: turns what the node outputs into metrics. Owned by the engine's task.
#[derive(Debug)]
pub struct Recorder {
    metrics: Arc<Metrics>,
    calls: HashMap<CallKey, Track>,
    announcements: HashMap<(String, u32), AnnouncementCounts>,
    /// The window label of each callback in the queue (for its expiry).
    windows: HashMap<CallbackId, &'static str>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Metrics {
    /// How late a pacer wake-up came after its deadline (called from the media plane's
    /// thread).
    pub fn pacer_tick(&self, late: Duration) {
        self.pacer_lateness.observe(late.as_secs_f64());
    }
}

impl Recorder {
    /// A recorder with every figure at zero.
    #[must_use]
    pub fn new() -> Recorder {
        Recorder {
            metrics: Arc::new(Metrics::new()),
            calls: HashMap::new(),
            announcements: HashMap::new(),
            windows: HashMap::new(),
        }
    }

    /// The metrics, for the endpoint.
    #[must_use]
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// How late a pacer wake-up came after its deadline.
    pub fn pacer_tick(&self, late: Duration) {
        self.metrics.pacer_tick(late);
    }

    /// One output of the node, before the engine acts on it; `active_calls` is the node's
    /// count after it.
    /// `queue` is the node's callback queue (for the window of a booked callback).
    pub fn output(&mut self, o: &node::Output, active_calls: usize, queue: &CallbackQueue) {
        self.metrics
            .calls_active
            .set(i64::try_from(active_calls).unwrap_or(i64::MAX));
        match o {
            node::Output::Event(e) => self.event(e),
            node::Output::Booking {
                result, callback, ..
            } => {
                let entry = callback.as_ref().and_then(|id| queue.get(id));
                let window = entry.map_or("none", window_kind);
                let outcome = match result {
                    BookingResult::Booked { .. } => {
                        if let Some(e) = entry {
                            self.windows.insert(e.id.clone(), window);
                        }
                        "booked"
                    }
                    BookingResult::AlreadyBooked { .. } => "already_booked",
                    BookingResult::QueueFull => "queue_full",
                    BookingResult::Failed => "failed",
                };
                self.metrics
                    .callbacks
                    .get_or_create(&OutcomeLabel { outcome, window })
                    .inc();
            }
            node::Output::Callback(shared::callback::Output::Remove { id, state }) => {
                // A callback restored from disk after a restart has no label here; its
                // window is read from the record the agent restored.
                let window = self.windows.remove(id).unwrap_or("asap");
                if *state == shared::callback::State::Expired {
                    self.metrics
                        .callbacks
                        .get_or_create(&OutcomeLabel {
                            outcome: "expired",
                            window,
                        })
                        .inc();
                }
            }
            _ => {}
        }
    }

    /// Callbacks restored from disk at start-up, so their expiry is counted by window.
    pub fn restored(&mut self, queue: &CallbackQueue) {
        for e in queue.iter() {
            self.windows.insert(e.id.clone(), window_kind(e));
        }
    }

    fn event(&mut self, e: &node::NodeEvent) {
        // Only calls offered get a track (so an event after a call's end adds none).
        let dtmf_at = e
            .call
            .and_then(|k| self.calls.get_mut(&k))
            .and_then(|t| t.dtmf_at.take());
        match &e.kind {
            EventKind::CallOffered { .. } => {
                if let Some(k) = e.call {
                    self.calls.insert(
                        k,
                        Track {
                            offered: Some(Instant::now()),
                            dtmf_at: None,
                        },
                    );
                }
            }
            EventKind::CallAnswered { .. } => {
                let offered = e
                    .call
                    .and_then(|k| self.calls.get_mut(&k))
                    .and_then(|t| t.offered.take());
                if let Some(at) = offered {
                    self.metrics.setup.observe(at.elapsed().as_secs_f64());
                }
            }
            EventKind::Dtmf { .. } => {
                if let Some(t) = e.call.and_then(|k| self.calls.get_mut(&k)) {
                    t.dtmf_at = Some(e.at.0);
                }
            }
            EventKind::AnnouncementStarted {
                announcement_id,
                version,
            } => {
                self.count(announcement_id.as_str(), *version, |c| &mut c.plays);
                self.metrics
                    .plays
                    .get_or_create(&labels(announcement_id.as_str(), *version))
                    .inc();
            }
            EventKind::AnnouncementCompleted {
                announcement_id,
                version,
                interrupted,
            } => {
                let id = announcement_id.as_str();
                if !interrupted {
                    self.count(id, *version, |c| &mut c.completions);
                    self.metrics
                        .completions
                        .get_or_create(&labels(id, *version))
                        .inc();
                } else if dtmf_at == Some(e.at.0) {
                    self.count(id, *version, |c| &mut c.barge_ins);
                    self.metrics
                        .barge_ins
                        .get_or_create(&labels(id, *version))
                        .inc();
                }
            }
            EventKind::CallEnded { reason, .. } => {
                if let Some(k) = e.call {
                    self.calls.remove(&k);
                }
                self.metrics
                    .calls_ended
                    .get_or_create(&ReasonLabel {
                        reason: reason.as_str(),
                    })
                    .inc();
            }
            EventKind::CallbackExpired { .. }
            | EventKind::CallbackRequested { .. }
            | EventKind::CallTransferred { .. }
            | EventKind::SeqSkipped { .. } => {}
        }
    }

    fn count(
        &mut self,
        id: &str,
        version: u32,
        field: impl Fn(&mut AnnouncementCounts) -> &mut u64,
    ) {
        let c = self
            .announcements
            .entry((id.to_owned(), version))
            .or_default();
        let v = field(c);
        *v = v.saturating_add(1);
    }

    /// How often announcement `id` at `version` was heard since the agent started.
    #[must_use]
    pub fn announcement(&self, id: &str, version: u32) -> AnnouncementCounts {
        self.announcements
            .get(&(id.to_owned(), version))
            .copied()
            .unwrap_or_default()
    }
}

fn labels(id: &str, version: u32) -> AnnouncementLabels {
    AnnouncementLabels {
        id: id.to_owned(),
        version: version.to_string(),
    }
}

/// Reads the agent's counters ([`Stats`]) and the link's state at scrape time.
#[derive(Debug)]
struct StateCollector {
    snapshot: watch::Receiver<Snapshot>,
    link: watch::Receiver<LinkStatus>,
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: i64,
) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

impl Collector for StateCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let (stats, waiting): (Stats, u32) = {
            let s = self.snapshot.borrow();
            (s.stats.clone(), s.callbacks_waiting)
        };
        let link = self.link.borrow().clone();
        counter(
            &mut e,
            "calls_accepted",
            "Calls the node took (INVITEs that became calls).",
            stats.calls_total,
        )?;
        counter(
            &mut e,
            "calls_refused",
            "INVITEs refused with 503 (draining, no RTP port, sip.max_calls, fair share).",
            stats.calls_refused,
        )?;
        counter(
            &mut e,
            "calls_refused_share",
            "Of the refused INVITEs, those whose source held its fair share of sip.max_calls.",
            stats.calls_refused_share,
        )?;
        counter(
            &mut e,
            "calls_refused_load",
            "Of the refused INVITEs, those refused while the media plane was busier than rtp.max_pacer_load_percent.",
            stats.calls_refused_load,
        )?;
        {
            let c = ConstCounter::new(0u64);
            let mut family = e.encode_descriptor(
                "sip_requests_refused",
                "SIP datagrams refused before a call: source not in sip.allow (denied), over sip.rate_limit_per_source (rate_limited), not valid SIP or too large (malformed), new INVITEs answered 503 because the agent's queue for new requests was full (overload), other datagrams dropped for that (overload_dropped).",
                None,
                c.metric_type(),
            )?;
            for (cause, v) in [
                ("denied", stats.sip_denied),
                ("rate_limited", stats.sip_rate_limited),
                ("malformed", stats.sip_malformed),
                ("overload", stats.sip_overload_refused),
                ("overload_dropped", stats.sip_overload_dropped),
            ] {
                let l = [("cause", cause)];
                ConstCounter::new(v).encode(family.encode_family(&l)?)?;
            }
        }
        counter(
            &mut e,
            "rtp_dropped",
            "Inbound RTP datagrams dropped (refused by their call, or the agent fell behind).",
            stats.rtp_dropped,
        )?;
        counter(
            &mut e,
            "rtp_foreign",
            "Of the dropped RTP datagrams, those from a source the call takes no media from.",
            stats.rtp_foreign,
        )?;
        gauge(
            &mut e,
            "callbacks_waiting",
            "Callbacks waiting in the local queue.",
            None,
            i64::from(waiting),
        )?;
        gauge(
            &mut e,
            "outbox_depth",
            "Call events held until the CRM acknowledges them.",
            None,
            i64::try_from(link.outbox_depth).unwrap_or(i64::MAX),
        )?;
        let age_ms = link
            .outbox_oldest_at_ms
            .map_or(0, |at| (crate::clock::wall_now().0 - at).max(0));
        {
            let g = ConstGauge::new(age_ms as f64 / 1000.0);
            g.encode(e.encode_descriptor(
                "outbox_oldest_event_age",
                "Age of the oldest call event the CRM has not acknowledged, to within a second (0 when the outbox is empty).",
                Some(&Unit::Seconds),
                g.metric_type(),
            )?)?;
        }
        counter(
            &mut e,
            "outbox_dropped",
            "Call events dropped unacknowledged (full outbox, retention).",
            link.outbox_dropped,
        )?;
        gauge(
            &mut e,
            "mqtt_connected",
            "1 while connected to the broker.",
            None,
            i64::from(link.connected),
        )?;
        counter(
            &mut e,
            "mqtt_reconnects",
            "Connections to the broker after the first one.",
            link.reconnects,
        )?;
        Ok(())
    }
}

/// The registry the endpoint encodes: `metrics`, plus the agent's counters from `snapshot`
/// and the link's state from `link`, read at each scrape.
#[must_use]
pub fn registry(
    metrics: &Metrics,
    snapshot: watch::Receiver<Snapshot>,
    link: watch::Receiver<LinkStatus>,
    version: &str,
) -> Registry {
    let mut r = Registry::with_prefix("ccedge");
    r.register(
        "build",
        "The agent's version",
        Info::new(vec![("version".to_owned(), version.to_owned())]),
    );
    r.register("calls_active", "Calls up now", metrics.calls_active.clone());
    r.register(
        "calls_ended",
        "Calls ended, by reason (call.ended data.reason)",
        metrics.calls_ended.clone(),
    );
    r.register_with_unit(
        "call_setup",
        "From taking the INVITE to the 200 OK (sip.answer_delay_ms included)",
        Unit::Seconds,
        metrics.setup.clone(),
    );
    r.register_with_unit(
        "pacer_lateness",
        "How late each 20 ms media pacer wake-up came after its deadline",
        Unit::Seconds,
        metrics.pacer_lateness.clone(),
    );
    r.register(
        "callbacks",
        "Callback bookings by outcome (booked, already_booked, queue_full, failed) and booked callbacks that expired (expired), by window (asap: as soon as possible; later: a time the caller chose; none: nothing booked)",
        metrics.callbacks.clone(),
    );
    r.register(
        "announcement_plays",
        "Announcements started for a caller, by id and version",
        metrics.plays.clone(),
    );
    r.register(
        "announcement_completions",
        "Announcements played to their end, by id and version",
        metrics.completions.clone(),
    );
    r.register(
        "announcement_barge_ins",
        "Announcements cut short by a key press, by id and version",
        metrics.barge_ins.clone(),
    );
    r.register_collector(Box::new(StateCollector { snapshot, link }));
    r
}

/// Binds the endpoint's listener (at start, so a taken port stops the agent).
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `GET /metrics` from `registry` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Registry) {
    let registry = Arc::new(registry);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    if let Ok(addr) = listener.local_addr() {
        info!(metrics = %addr, "metrics endpoint listening (GET /metrics)");
    }
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, say: do not spin.
                warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(%peer, "metrics endpoint: too many connections");
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    respond(&mut stream, 503, "text/plain", b"busy\n", false),
                )
                .await;
            });
            continue;
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let _permit = permit;
            handle(stream, &registry).await;
        });
    }
}

/// What a request asks for, or the status that refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `GET /metrics` (`head`: `HEAD /metrics`, no body).
    Metrics {
        /// Headers only.
        head: bool,
    },
    /// Refused with this status.
    Refuse(u16),
}

/// Judges a complete request head (everything up to the blank line).
#[must_use]
pub fn judge(head: &[u8]) -> Verdict {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Verdict::Refuse(400);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Verdict::Refuse(400);
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(method) || !target.starts_with('/') || target.bytes().any(|b| !b.is_ascii_graphic()) {
        return Verdict::Refuse(400);
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => return Verdict::Refuse(505),
        _ => return Verdict::Refuse(400),
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != "/metrics" {
        return Verdict::Refuse(404);
    }
    match method {
        "GET" => Verdict::Metrics { head: false },
        "HEAD" => Verdict::Metrics { head: true },
        _ => Verdict::Refuse(405),
    }
}

/// Reads a request head: `Ok(len)` of the head including its blank line, or the status to
/// refuse with (`None`: the peer left, answer nothing).
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, Option<u16>> {
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(end + 4);
        }
        if buf.len() >= MAX_REQUEST {
            return Err(Some(431));
        }
        let room = (MAX_REQUEST + 4 - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]).await {
            Ok(0) | Err(_) => return Err(if buf.is_empty() { None } else { Some(400) }),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn handle(mut stream: TcpStream, registry: &Registry) {
    let mut buf = Vec::with_capacity(512);
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream, &mut buf)).await {
        Ok(Ok(len)) => Ok(len),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(Some(408)),
    };
    let verdict = match head {
        Ok(len) => judge(&buf[..len]),
        Err(Some(status)) => Verdict::Refuse(status),
        Err(None) => return,
    };
    let r = match verdict {
        Verdict::Metrics { head } => {
            let mut body = String::with_capacity(8 * 1024);
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => {
                    tokio::time::timeout(
                        WRITE_TIMEOUT,
                        respond(&mut stream, 200, CONTENT_TYPE, body.as_bytes(), head),
                    )
                    .await
                }
                Err(_) => {
                    warn!("metrics could not be encoded");
                    tokio::time::timeout(
                        WRITE_TIMEOUT,
                        respond(&mut stream, 500, "text/plain", b"encoding failed\n", false),
                    )
                    .await
                }
            }
        }
        Verdict::Refuse(status) => {
            debug!(status, "metrics endpoint: request refused");
            let body = format!("{} {}\n", status, reason(status));
            tokio::time::timeout(
                WRITE_TIMEOUT,
                respond(&mut stream, status, "text/plain", body.as_bytes(), false),
            )
            .await
        }
    };
    if !matches!(r, Ok(Ok(()))) {
        debug!("metrics endpoint: response not written");
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let header = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.flush().await?;
    stream.shutdown().await?;
    // Read (and drop) what the client still sends for a moment before closing: closing with
    // unread data resets the connection, and the client could lose the response to the reset
    // (a 431 for an oversized head, say).
    let mut sink = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER, async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{judge, registry, Recorder, Verdict};
    use shared::event::{Codec, EndReason, EventKind};
    use shared::ivr::BookingResult;
    use shared::node::{CallKey, NodeEvent, Output};
    use shared::{AnnouncementId, CallId, UnixMillis};

    fn ev(call: u64, at: i64, kind: EventKind) -> Output {
        Output::Event(NodeEvent {
            call: Some(CallKey(call)),
            call_id: Some(CallId(call)),
            call_seq: 0,
            at: UnixMillis(at),
            language: None,
            kind,
        })
    }

    fn scrape(r: &Recorder) -> String {
        let (_s, snapshot) = tokio::sync::watch::channel(crate::view::Snapshot::default());
        let (_l, link) = tokio::sync::watch::channel(crate::link::LinkStatus {
            connected: true,
            reconnects: 2,
            outbox_depth: 7,
            ..Default::default()
        });
        let reg = registry(&r.metrics(), snapshot, link, "9.9.9");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        out
    }

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn node_outputs_become_metrics() {
        let mut r = Recorder::new();
        let mut q = shared::callback::CallbackQueue::default();
        let id = AnnouncementId::new("outage").unwrap();
        let started = |v| EventKind::AnnouncementStarted {
            announcement_id: id.clone(),
            version: v,
        };
        let completed = |v, interrupted| EventKind::AnnouncementCompleted {
            announcement_id: id.clone(),
            version: v,
            interrupted,
        };
        let offered = EventKind::CallOffered {
            caller: None,
            dialled: None,
        };
        let answered = EventKind::CallAnswered { codec: Codec::Pcmu };
        let dtmf = EventKind::Dtmf {
            digit: shared::dtmf::Digit::D1,
        };
        let ended = |reason| EventKind::CallEnded {
            reason,
            duration_ms: 1,
            answered_ms: 1,
        };
        // Call 1 hears version 3 to its end; call 2 barges in with a key; call 3 hangs up
        // during it; call 4 presses a key that does not interrupt, then hangs up later.
        for (call, script) in [
            (
                1,
                vec![(0, completed(3, false)), (0, ended(EndReason::NodeHangup))],
            ),
            (
                2,
                vec![
                    (5, dtmf.clone()),
                    (5, completed(3, true)),
                    (6, ended(EndReason::CallerHangup)),
                ],
            ),
            (
                3,
                vec![(9, completed(3, true)), (9, ended(EndReason::CallerHangup))],
            ),
            (
                4,
                vec![
                    (5, dtmf.clone()),
                    (8, completed(3, true)),
                    (8, ended(EndReason::CallerHangup)),
                ],
            ),
        ] {
            r.output(&ev(call, 0, offered.clone()), 1, &q);
            r.output(&ev(call, 0, answered.clone()), 1, &q);
            r.output(&ev(call, 0, started(3)), 1, &q);
            for (at, k) in script {
                r.output(&ev(call, at, k), 0, &q);
            }
        }
        r.output(&ev(5, 0, offered.clone()), 1, &q);
        r.output(&ev(5, 0, started(4)), 1, &q);
        r.output(
            &Output::Booking {
                call: CallKey(5),
                callback: None,
                result: BookingResult::AlreadyBooked { position: 1 },
            },
            1,
            &q,
        );
        // A callback for tomorrow is booked, then expires: both counted as `later`.
        let id = shared::ids::CallbackId::new("cb-later").unwrap();
        let day = 86_400_000;
        q.request(
            shared::time::UnixMillis(day),
            shared::callback::Request {
                id: id.clone(),
                call_id: shared::ids::CallId(5),
                callback_number: shared::number::PhoneNumber::parse("+12155550123").unwrap(),
                caller: None,
                dialled: None,
                announcement: None,
                language: shared::announce::Language::default(),
                window: shared::callback::Window::new(
                    shared::time::UnixMillis(2 * day),
                    shared::time::UnixMillis(2 * day + 3_600_000),
                )
                .unwrap(),
            },
        )
        .unwrap();
        r.output(
            &Output::Booking {
                call: CallKey(5),
                callback: Some(id.clone()),
                result: BookingResult::Booked { position: 1 },
            },
            1,
            &q,
        );
        r.output(
            &Output::Callback(shared::callback::Output::Remove {
                id,
                state: shared::callback::State::Expired,
            }),
            1,
            &q,
        );
        r.pacer_tick(std::time::Duration::from_micros(1500));
        assert!(r.calls.len() == 1, "ended calls are forgotten");
        let counts = r.announcement("outage", 3);
        assert_eq!(
            (counts.plays, counts.completions, counts.barge_ins),
            (4, 1, 1)
        );
        assert_eq!(r.announcement("outage", 4).plays, 1);
        assert_eq!(
            r.announcement("other", 3),
            super::AnnouncementCounts::default()
        );

        let text = scrape(&r);
        let want = [
            ("ccedge_calls_active", "1"),
            ("ccedge_calls_ended_total{reason=\"caller_hangup\"}", "3"),
            ("ccedge_calls_ended_total{reason=\"node_hangup\"}", "1"),
            ("ccedge_calls_ended_total{reason=\"shutdown\"}", "0"),
            ("ccedge_call_setup_seconds_count", "4"),
            ("ccedge_pacer_lateness_seconds_count", "1"),
            ("ccedge_pacer_lateness_seconds_bucket{le=\"0.001\"}", "0"),
            ("ccedge_pacer_lateness_seconds_bucket{le=\"0.002\"}", "1"),
            (
                "ccedge_callbacks_total{outcome=\"already_booked\",window=\"none\"}",
                "1",
            ),
            (
                "ccedge_callbacks_total{outcome=\"booked\",window=\"later\"}",
                "1",
            ),
            (
                "ccedge_callbacks_total{outcome=\"booked\",window=\"asap\"}",
                "0",
            ),
            (
                "ccedge_callbacks_total{outcome=\"expired\",window=\"later\"}",
                "1",
            ),
            (
                "ccedge_announcement_plays_total{id=\"outage\",version=\"3\"}",
                "4",
            ),
            (
                "ccedge_announcement_plays_total{id=\"outage\",version=\"4\"}",
                "1",
            ),
            (
                "ccedge_announcement_completions_total{id=\"outage\",version=\"3\"}",
                "1",
            ),
            (
                "ccedge_announcement_barge_ins_total{id=\"outage\",version=\"3\"}",
                "1",
            ),
            ("ccedge_mqtt_connected", "1"),
            ("ccedge_mqtt_reconnects_total", "2"),
            ("ccedge_outbox_depth", "7"),
            ("ccedge_outbox_oldest_event_age_seconds", "0.0"),
            ("ccedge_build_info{version=\"9.9.9\"}", "1"),
        ];
        for (series, value) in want {
            assert_eq!(line(&text, series), Some(value), "{series} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn requests_are_judged() {
        let ok = Verdict::Metrics { head: false };
        assert_eq!(judge(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), ok);
        assert_eq!(judge(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), ok);
        assert_eq!(
            judge(b"HEAD /metrics HTTP/1.1\r\n\r\n"),
            Verdict::Metrics { head: true }
        );
        assert_eq!(judge(b"GET / HTTP/1.1\r\n\r\n"), Verdict::Refuse(404));
        assert_eq!(
            judge(b"GET /metricsx HTTP/1.1\r\n\r\n"),
            Verdict::Refuse(404)
        );
        assert_eq!(
            judge(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Verdict::Refuse(405)
        );
        assert_eq!(
            judge(b"DELETE /metrics HTTP/1.1\r\n\r\n"),
            Verdict::Refuse(405)
        );
        assert_eq!(
            judge(b"GET /metrics HTTP/2.0\r\n\r\n"),
            Verdict::Refuse(505)
        );
        for bad in [
            &b"\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"G(T /metrics HTTP/1.1\r\n\r\n",
            b"GET /met\x00rics HTTP/1.1\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics SIP/2.0\r\n\r\n",
        ] {
            assert_eq!(judge(bad), Verdict::Refuse(400), "{bad:?}");
        }
    }
}
