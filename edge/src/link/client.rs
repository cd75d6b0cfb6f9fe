//! The link task: one tokio task owning all link state, plus one small task per connection
//! attempt that polls rumqttc's event loop and forwards what it yields.
//!
//! ## Packet ids and what was PUBACKed
//!
//! rumqttc's `publish` returns no packet id. Its event loop takes requests strictly in the
//! order they were queued and reports each QoS 1 publish as `Outgoing::Publish(pkid)` when
//! it assigns the id (a packet-id collision holds back every later request, so the order
//! holds then too). The link therefore keeps, per connection, a queue of what it submitted
//! ([`Tag`]s in order): each `Outgoing::Publish(pkid)` pops the front and files it under
//! `pkid`; each `PubAck(pkid)` resolves it (an event's PUBACK goes to the outbox, a
//! callback's becomes [`FromLink::CallbackSynced`]).
//!
//! Every connection attempt gets a **fresh** client and event loop. When a connection fails,
//! its event loop (with rumqttc's own queue of unacknowledged requests) is dropped, the
//! link's queue for it is discarded, and the outbox treats everything without a PUBACK as
//! unpublished ([`shared::event::Outbox::connection_lost`]). The new connection starts with
//! an empty rumqttc state, so the packet id mapping is exact; resending may duplicate events
//! (the CRM de-duplicates by `event_id`), but nothing is lost. Messages from an old
//! connection are recognised by an epoch number and ignored.
//!
//! The link never waits on the network: publishes are `try_publish` into a channel with room
//! for the link's own window ([`WINDOW`]), and the engine's work is queued in memory while
//! the broker is away. Reconnects back off exponentially from 0.5 s to 30 s with jitter; the
//! backoff starts again from 0.5 s only when a connection that had lived [`STABLE_AFTER`] is
//! lost, so a broker that accepts a connection and drops it at once (or a message that
//! breaks every connection) is retried at most every 30 s, not several times a second.
//!
//! ## Oversized messages
//!
//! A message larger than `mqtt.max_payload_bytes` is discarded without being looked at: a
//! `warn!` line with its topic and size, [`LinkStatus::oversized`] and
//! [`LinkStatus::rejected`] counted; rumqttc acknowledges it, so the broker does not
//! deliver it again in this session. One too large even for rumqttc's packet limit fails
//! the connection before it is read; the link then raises the limit for its next
//! connections so that it can be read and discarded (see [`super::transport`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Incoming, Outgoing, QoS, SubscribeFilter};
use serde::Deserialize;
use shared::callback::CrmState;
use shared::time::UnixMillis;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant as TokioInstant;

use super::intake::{self, IntakeConfig, Item, Outcome};
use super::outbox::Events;
use super::status::{self, AnnouncementState};
use super::topics::{Inbound, Topics};
use super::transport;
use super::{CallbackRequest, FromLink, LinkConfig, LinkStatus, ToLink};
use crate::clock::{wall_now, Clock};
use crate::store::StoreHandle;
use crate::view::Snapshot;

/// Most of the link's own publishes submitted and not yet PUBACKed.
pub(crate) const WINDOW: usize = 96;
/// First reconnect delay (before jitter).
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection lost after living this long starts the backoff again from [`BACKOFF_MIN`].
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Largest ack / replay / callback-state message.
pub(crate) const MAX_CONTROL_BYTES: usize = 4096;
/// A change in the announcements' states is published within this.
pub(crate) const STATUS_DEBOUNCE: Duration = Duration::from_millis(200);
/// How long a graceful stop tries to flush.
pub(crate) const STOP_FLUSH: Duration = Duration::from_secs(1);
/// Most engine messages taken in one batch.
const BATCH: usize = 256;
/// Retry interval when the store fails.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// What a submitted publish was.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tag {
    Event(u64),
    Callback(String),
    Status,
}

/// What a connection task reports.
#[derive(Debug)]
enum ConnMsg {
    Event(Event),
    Lost(String),
    /// The connection failed on an incoming packet of this many bytes (its remaining
    /// length), above the client's limit.
    TooLarge(usize),
}

/// One connection attempt.
struct Conn {
    epoch: u64,
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
    connected: bool,
    /// When the broker's CONNACK arrived.
    connected_at: Option<TokioInstant>,
    disconnected: bool,
    submitted: VecDeque<Tag>,
    inflight: HashMap<u16, Tag>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Dropping the event loop closes the socket (a hard close: the broker publishes the
        // Last Will unless a DISCONNECT was sent).
        self.task.abort();
    }
}

impl Conn {
    fn outstanding(&self) -> usize {
        self.submitted.len() + self.inflight.len()
    }
}

/// Jittered exponential backoff.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    rng: u64,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: BACKOFF_MIN,
            rng: super::outbox::random_u64() | 1,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The next delay: between half and all of the current step; the step doubles.
    fn delay(&mut self) -> Duration {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let frac = (self.rng % 1000) as u32;
        base / 2 + (base / 2) * frac / 1000
    }
}

/// The link's state.
struct Link {
    cfg: LinkConfig,
    topics: Topics,
    clock: Clock,
    events: Events,
    status: LinkStatus,
    status_tx: watch::Sender<LinkStatus>,
    events_tx: broadcast::Sender<Arc<str>>,
    to_engine: mpsc::UnboundedSender<FromLink>,
    intake: mpsc::UnboundedSender<Item>,
    snapshot: watch::Receiver<Snapshot>,
    conn_tx: mpsc::Sender<(u64, ConnMsg)>,
    conn: Option<Conn>,
    epoch: u64,
    backoff: Backoff,
    reconnect_at: Option<TokioInstant>,
    /// rumqttc's incoming packet limit for the next connection (see [`super::transport`]).
    max_incoming: usize,
    callbacks: VecDeque<CallbackRequest>,
    status_due: Option<TokioInstant>,
    published_states: Option<Vec<AnnouncementState>>,
    store_retry_at: Option<TokioInstant>,
    /// Connections the broker accepted (CONNACK) since the link started.
    connections: u64,
}

/// Runs the link until every [`ToLink`] sender is dropped (see [`super::spawn`]).
pub(crate) async fn run(
    cfg: LinkConfig,
    store: StoreHandle,
    snapshot: watch::Receiver<Snapshot>,
    to_engine: mpsc::UnboundedSender<FromLink>,
    mut rx: mpsc::UnboundedReceiver<ToLink>,
    status_tx: watch::Sender<LinkStatus>,
    events_tx: broadcast::Sender<Arc<str>>,
) {
    let (conn_tx, mut conn_rx) = mpsc::channel(1024);
    let (report_tx, mut reports) = mpsc::unbounded_channel();
    let intake = intake::spawn_worker(
        IntakeConfig {
            state_dir: cfg.state_dir.clone(),
            max_payload_bytes: u64::from(cfg.mqtt.max_payload_bytes),
            max_audio_bytes: cfg.max_audio_bytes,
            signing_key: cfg.signing_key,
            speech_command: cfg.speech_command.clone().filter(|c| !c.trim().is_empty()),
        },
        to_engine.clone(),
        report_tx,
    );
    let max_incoming =
        transport::incoming_limit(u64::from(cfg.mqtt.max_payload_bytes), cfg.max_audio_bytes);
    let mut link = Link {
        topics: Topics::new(&cfg.mqtt.topic_prefix, &cfg.site, &cfg.node_id),
        clock: Clock::new(),
        events: Events::new(store, &cfg.node_id, &cfg.site, cfg.outbox),
        status: LinkStatus {
            since_ms: wall_now().0,
            ..LinkStatus::default()
        },
        cfg,
        status_tx,
        events_tx,
        to_engine,
        intake,
        snapshot,
        conn_tx,
        conn: None,
        epoch: 0,
        backoff: Backoff::new(),
        reconnect_at: Some(TokioInstant::now()),
        max_incoming,
        callbacks: VecDeque::new(),
        status_due: None,
        published_states: None,
        store_retry_at: None,
        connections: 0,
    };
    if !link.events.load().await {
        link.store_retry_at = Some(TokioInstant::now() + STORE_RETRY);
    }
    let mut snapshot_open = true;
    loop {
        link.update_status();
        let deadline = link.next_deadline();
        tokio::select! {
            Some((epoch, msg)) = conn_rx.recv() => link.on_conn(epoch, msg).await,
            work = rx.recv() => match work {
                Some(first) => {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(w) => batch.push(w),
                            Err(_) => break,
                        }
                    }
                    link.on_work(batch).await;
                }
                None => break,
            },
            Some(outcome) = reports.recv() => link.on_intake(outcome),
            changed = link.snapshot.changed(), if snapshot_open => {
                if changed.is_err() {
                    snapshot_open = false;
                } else {
                    link.on_snapshot();
                }
            }
            () = sleep_until_opt(deadline) => link.on_timer().await,
        }
        link.pump().await;
    }
    link.stop(&mut conn_rx).await;
}

async fn sleep_until_opt(t: Option<TokioInstant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Runs [`drive`] in its own task so that a panic inside the MQTT client (for example in
/// its TLS set-up) becomes a lost connection, retried with backoff, instead of a link that
/// waits forever. Aborting this task aborts the inner one.
async fn drive_guarded(el: EventLoop, epoch: u64, tx: mpsc::Sender<(u64, ConnMsg)>) {
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut inner = AbortOnDrop(tokio::spawn(drive(el, epoch, tx.clone())));
    if let Err(e) = (&mut inner.0).await {
        if e.is_panic() {
            tracing::error!("the MQTT client panicked");
            let _ = tx
                .send((epoch, ConnMsg::Lost("the MQTT client panicked".into())))
                .await;
        }
    }
}

/// Polls one connection's event loop and forwards everything, until it fails or the link
/// drops it.
async fn drive(mut el: EventLoop, epoch: u64, tx: mpsc::Sender<(u64, ConnMsg)>) {
    loop {
        match el.poll().await {
            Ok(ev) => {
                if tx.send((epoch, ConnMsg::Event(ev))).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                let msg = match e {
                    rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                        rumqttc::Error::PayloadSizeLimitExceeded(n),
                    )) => ConnMsg::TooLarge(n),
                    e => ConnMsg::Lost(e.to_string()),
                };
                let _ = tx.send((epoch, msg)).await;
                break;
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckMsg {
    upto_seq: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayMsg {
    from_seq: u64,
    to_seq: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateMsg {
    state: String,
    #[serde(default)]
    at: Option<String>,
    /// The CRM moves the callback window.
    #[serde(default)]
    window: Option<WindowMsg>,
    #[serde(default)]
    #[allow(dead_code)] // accepted by the contract; the node does not use it
    note: Option<String>,
}

/// `window` of a callback state update: RFC 3339 instants.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowMsg {
    not_before: String,
    not_after: String,
}

impl Link {
    fn next_deadline(&self) -> Option<TokioInstant> {
        let retention = self.events.poll_timeout().map(|t| self.clock.to_tokio(t));
        [
            if self.conn.is_none() {
                self.reconnect_at
            } else {
                None
            },
            self.status_due,
            retention,
            self.store_retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.connected)
    }

    fn update_status(&mut self) {
        self.status.outbox_depth = self.events.depth();
        self.status.outbox_dropped = self.events.dropped();
        self.status.outbox_oldest_at_ms = self.events.oldest_at();
        self.status.last_seq = self.events.last_seq();
        self.status.acked_seq = self.events.acked_seq();
        self.status.store_errors = self.events.store_errors;
        self.status_tx.send_if_modified(|s| {
            if *s == self.status {
                false
            } else {
                s.clone_from(&self.status);
                true
            }
        });
    }

    fn reject(&mut self, reason: String) {
        tracing::warn!(%reason, "CRM message rejected");
        self.status.rejected = self.status.rejected.saturating_add(1);
        self.status.last_rejection = Some(reason);
    }

    async fn on_timer(&mut self) {
        let now = TokioInstant::now();
        if self.conn.is_none() && self.reconnect_at.is_some_and(|t| t <= now) {
            self.reconnect_at = None;
            self.connect();
        }
        if self.status_due.is_some_and(|t| t <= now) {
            self.status_due = None;
            self.publish_status();
        }
        if self
            .events
            .poll_timeout()
            .is_some_and(|t| self.clock.to_tokio(t) <= now)
        {
            let new = self.events.handle_timeout(self.clock.now()).await;
            self.broadcast(new);
        }
        if self.store_retry_at.is_some_and(|t| t <= now) {
            self.store_retry_at = None;
            let new = self.events.process().await;
            self.broadcast(new);
        }
        if self.events.has_waiting() && self.store_retry_at.is_none() {
            self.store_retry_at = Some(now + STORE_RETRY);
        }
    }

    fn connect(&mut self) {
        self.epoch += 1;
        let will = status::offline(&self.cfg);
        let opts =
            match transport::options(&self.cfg, self.topics.status(), will, self.max_incoming) {
                Ok(o) => o,
                Err(e) => {
                    let msg = e.to_string();
                    tracing::error!(error = %msg, "cannot connect to the broker");
                    self.status.last_error = Some(msg);
                    self.reconnect_at = Some(TokioInstant::now() + self.backoff.delay());
                    return;
                }
            };
        tracing::debug!(url = %self.cfg.mqtt.url, epoch = self.epoch, "connecting");
        let (client, el) = AsyncClient::new(opts, usize::from(transport::INFLIGHT) + 32);
        let task = tokio::spawn(drive_guarded(el, self.epoch, self.conn_tx.clone()));
        self.conn = Some(Conn {
            epoch: self.epoch,
            client,
            task,
            connected: false,
            connected_at: None,
            disconnected: false,
            submitted: VecDeque::new(),
            inflight: HashMap::new(),
        });
    }

    /// Forgets the current connection: everything unacknowledged is unpublished again.
    fn lose_conn(&mut self, error: String) {
        let was_connected = self.connected();
        let lived = self
            .conn
            .as_ref()
            .and_then(|c| c.connected_at)
            .is_some_and(|t| t.elapsed() >= STABLE_AFTER);
        if lived {
            self.backoff.reset();
        }
        self.conn = None;
        self.events.connection_lost();
        let delay = self.backoff.delay();
        self.reconnect_at = Some(TokioInstant::now() + delay);
        if was_connected {
            tracing::warn!(%error, "broker connection lost; reconnecting");
            self.status.since_ms = wall_now().0;
        } else {
            tracing::info!(%error, retry_in_ms = delay.as_millis() as u64, "cannot reach the broker");
        }
        self.status.connected = false;
        self.status.last_error = Some(error);
    }

    async fn on_conn(&mut self, epoch: u64, msg: ConnMsg) {
        let Some(conn) = self.conn.as_mut().filter(|c| c.epoch == epoch) else {
            return; // from a connection already dropped
        };
        match msg {
            ConnMsg::Lost(e) => self.lose_conn(e),
            ConnMsg::TooLarge(n) => self.too_large(n),
            ConnMsg::Event(Event::Incoming(Incoming::ConnAck(ack))) => {
                conn.connected = true;
                conn.connected_at = Some(TokioInstant::now());
                let filters = self
                    .topics
                    .filters()
                    .into_iter()
                    .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce));
                if let Err(e) = conn.client.try_subscribe_many(filters) {
                    self.lose_conn(format!("subscribe: {e}"));
                    return;
                }
                tracing::info!(
                    url = %self.cfg.mqtt.url,
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                if self.connections > 0 {
                    self.status.reconnects = self.status.reconnects.saturating_add(1);
                }
                self.connections = self.connections.saturating_add(1);
                self.status.connected = true;
                self.status.since_ms = wall_now().0;
                self.status.last_error = None;
                self.status_due = Some(TokioInstant::now());
                let _ = self.to_engine.send(FromLink::Connected);
            }
            ConnMsg::Event(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(tag) = conn.submitted.pop_front() {
                    conn.inflight.insert(pkid, tag);
                }
            }
            ConnMsg::Event(Event::Outgoing(Outgoing::Disconnect)) => conn.disconnected = true,
            ConnMsg::Event(Event::Incoming(Incoming::PubAck(ack))) => {
                match conn.inflight.remove(&ack.pkid) {
                    Some(Tag::Event(seq)) => self.events.puback(self.clock.now(), seq),
                    Some(Tag::Callback(id)) => {
                        let _ = self.to_engine.send(FromLink::CallbackSynced(id));
                    }
                    Some(Tag::Status) | None => {}
                }
            }
            ConnMsg::Event(Event::Incoming(Incoming::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    let msg = "the broker refused a subscription (check its ACL)".to_owned();
                    tracing::error!("{msg}");
                    self.status.last_error = Some(msg);
                }
            }
            ConnMsg::Event(Event::Incoming(Incoming::Publish(p))) => {
                self.on_publish(&p.topic, &p.payload).await;
            }
            ConnMsg::Event(_) => {}
        }
    }

    /// The connection failed on an incoming packet of `n` bytes, above rumqttc's limit.
    fn too_large(&mut self, n: usize) {
        let error = match transport::stretched_limit(self.max_incoming, n) {
            Some(limit) => {
                tracing::warn!(
                    bytes = n,
                    limit = self.max_incoming,
                    "the broker sent a message larger than the client's packet limit; \
                     reconnecting with a limit of {limit} bytes to read and discard it"
                );
                self.max_incoming = limit;
                format!("an incoming message of {n} bytes was above the packet limit")
            }
            None => {
                let msg = format!(
                    "the broker holds a message of {n} bytes, more than this node can read \
                     ({} bytes): remove it from the broker (an empty retained message on its \
                     topic) or cap messages there (Mosquitto: message_size_limit)",
                    transport::OVERSIZE_CEILING.max(self.max_incoming)
                );
                tracing::error!("{msg}");
                msg
            }
        };
        self.lose_conn(error);
    }

    async fn on_publish(&mut self, topic: &str, payload: &[u8]) {
        let max = self.cfg.mqtt.max_payload_bytes;
        if u64::try_from(payload.len()).unwrap_or(u64::MAX) > u64::from(max) {
            let reason = format!(
                "{} bytes on `{}` is larger than mqtt.max_payload_bytes {max}: discarded",
                payload.len(),
                clip(topic)
            );
            self.status.oversized = self.status.oversized.saturating_add(1);
            self.reject(reason);
            return;
        }
        match self.topics.classify(topic) {
            Inbound::Announcement(id) => {
                let _ = self.intake.send(Item::Announcement {
                    id: id.to_owned(),
                    payload: payload.to_vec(),
                });
            }
            Inbound::Audio(h) => {
                let _ = self.intake.send(Item::Audio {
                    sha256: h.to_owned(),
                    payload: payload.to_vec(),
                });
            }
            Inbound::Ack => match control::<AckMsg>("events/ack", payload) {
                Ok(m) => {
                    let new = self.events.crm_ack(m.upto_seq).await;
                    self.broadcast(new);
                }
                Err(reason) => self.reject(reason),
            },
            Inbound::Replay => match control::<ReplayMsg>("events/replay", payload) {
                Ok(m) => {
                    tracing::info!(from = m.from_seq, to = m.to_seq, "replay requested");
                    let new = self.events.replay(m.from_seq, m.to_seq).await;
                    self.broadcast(new);
                }
                Err(reason) => self.reject(reason),
            },
            Inbound::CallbackState(id) => {
                match control::<StateMsg>("callback state", payload).and_then(|m| {
                    let state = CrmState::parse(&m.state)
                        .ok_or_else(|| format!("callback state `{}` is unknown", clip(&m.state)))?;
                    let at = match m.at.as_deref() {
                        Some(s) => UnixMillis::parse_rfc3339(s)
                            .map_err(|e| format!("callback state `at`: {e}"))?,
                        None => wall_now(),
                    };
                    let window = match &m.window {
                        Some(w) => {
                            let t = |f: &str, v: &str| {
                                UnixMillis::parse_rfc3339(v)
                                    .map_err(|e| format!("callback state `window.{f}`: {e}"))
                            };
                            let (nb, na) = (
                                t("not_before", &w.not_before)?,
                                t("not_after", &w.not_after)?,
                            );
                            Some(shared::callback::Window::new(nb, na).ok_or_else(|| {
                                "callback state `window`: not_after is before not_before".to_owned()
                            })?)
                        }
                        None => None,
                    };
                    Ok((state, at, window))
                }) {
                    Ok((state, at, window)) => {
                        let _ = self.to_engine.send(FromLink::CallbackState {
                            id: id.to_owned(),
                            state,
                            at,
                            window,
                        });
                    }
                    Err(reason) => self.reject(format!("callback {}: {reason}", clip(id))),
                }
            }
            Inbound::Other => {
                tracing::debug!(topic = %clip(topic), "message on an unexpected topic")
            }
        }
    }

    fn on_intake(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Rejected(reason) => {
                // The worker logged it.
                self.status.rejected = self.status.rejected.saturating_add(1);
                self.status.last_rejection = Some(reason);
            }
            Outcome::Changed(_) => {
                self.status.announcements_accepted =
                    self.status.announcements_accepted.saturating_add(1);
            }
            Outcome::Unchanged | Outcome::Forwarded => {}
        }
    }

    fn on_snapshot(&mut self) {
        let states = status::announcement_states(&self.snapshot.borrow_and_update());
        if self.published_states.as_ref() != Some(&states) && self.connected() {
            let soon = TokioInstant::now() + STATUS_DEBOUNCE;
            self.status_due = Some(self.status_due.map_or(soon, |t| t.min(soon)));
        }
    }

    async fn on_work(&mut self, batch: Vec<ToLink>) {
        let mut evs = Vec::new();
        for w in batch {
            match w {
                ToLink::Event(e) => evs.push(e),
                ToLink::Callback(mut cb) => {
                    cb.node.clone_from(&self.cfg.node_id);
                    cb.site.clone_from(&self.cfg.site);
                    match self
                        .callbacks
                        .iter_mut()
                        .find(|c| c.callback_id == cb.callback_id)
                    {
                        Some(c) => *c = *cb,
                        None => self.callbacks.push_back(*cb),
                    }
                }
                ToLink::Cache(w) => {
                    let _ = self.intake.send(Item::Cache(w));
                }
                ToLink::Rejected(reason) => self.reject(reason),
            }
        }
        if !evs.is_empty() {
            let new = self.events.submit(evs).await;
            self.broadcast(new);
            if self.events.has_waiting() && self.store_retry_at.is_none() {
                self.store_retry_at = Some(TokioInstant::now() + STORE_RETRY);
            }
        }
    }

    fn broadcast(&self, new: Vec<Arc<str>>) {
        for j in new {
            let _ = self.events_tx.send(j);
        }
    }

    fn publish_status(&mut self) {
        if !self.connected() {
            return;
        }
        self.update_status();
        let snap = self.snapshot.borrow().clone();
        let payload = status::online(&self.cfg, &snap, &self.status);
        if self.submit(self.topics.status(), true, payload, Tag::Status) {
            self.published_states = Some(status::announcement_states(&snap));
        }
        self.status_due =
            Some(TokioInstant::now() + self.cfg.status_interval.max(Duration::from_secs(1)));
    }

    /// Queues one QoS 1 publish on the current connection; a failure drops the connection.
    fn submit(&mut self, topic: String, retain: bool, payload: Vec<u8>, tag: Tag) -> bool {
        let Some(conn) = self.conn.as_mut().filter(|c| c.connected) else {
            return false;
        };
        match conn
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                conn.submitted.push_back(tag);
                true
            }
            Err(e) => {
                self.lose_conn(format!("publish: {e}"));
                false
            }
        }
    }

    fn room(&self) -> usize {
        self.conn
            .as_ref()
            .filter(|c| c.connected)
            .map_or(0, |c| WINDOW.saturating_sub(c.outstanding()))
    }

    /// Publishes queued callbacks, then events, as far as the window allows.
    async fn pump(&mut self) {
        while self.room() > 0 {
            let Some(cb) = self.callbacks.pop_front() else {
                break;
            };
            let payload = match serde_json::to_vec(&cb) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "callback not serializable");
                    continue;
                }
            };
            let id = cb.callback_id.clone();
            if !self.submit(self.topics.callbacks(), false, payload, Tag::Callback(id)) {
                self.callbacks.push_front(cb);
                return;
            }
        }
        loop {
            let room = self.room();
            if room == 0 {
                return;
            }
            let list = match self.events.next_publishable(room, self.clock.now()).await {
                Ok(l) => l,
                Err(_) => {
                    self.store_retry_at = Some(TokioInstant::now() + STORE_RETRY);
                    return;
                }
            };
            if list.is_empty() {
                return;
            }
            for (seq, json) in list {
                if !self.submit(
                    self.topics.events(),
                    false,
                    json.as_bytes().to_vec(),
                    Tag::Event(seq),
                ) {
                    return;
                }
                self.status.events_published = self.status.events_published.saturating_add(1);
            }
        }
    }

    /// Graceful stop: flush for up to [`STOP_FLUSH`], publish the retained offline status,
    /// disconnect.
    async fn stop(&mut self, conn_rx: &mut mpsc::Receiver<(u64, ConnMsg)>) {
        let deadline = TokioInstant::now() + STOP_FLUSH;
        self.pump().await;
        while self.connected()
            && (!self.events.flushed() || !self.callbacks.is_empty())
            && TokioInstant::now() < deadline
        {
            tokio::select! {
                Some((epoch, msg)) = conn_rx.recv() => self.on_conn(epoch, msg).await,
                () = tokio::time::sleep_until(deadline) => break,
            }
            self.pump().await;
        }
        if self.connected() {
            let offline = status::offline(&self.cfg);
            if self.submit(self.topics.status(), true, offline, Tag::Status) {
                let deadline = TokioInstant::now() + STOP_FLUSH;
                while self
                    .conn
                    .as_ref()
                    .is_some_and(|c| c.connected && c.outstanding() > 0)
                {
                    tokio::select! {
                        Some((epoch, msg)) = conn_rx.recv() => self.on_conn(epoch, msg).await,
                        () = tokio::time::sleep_until(deadline) => break,
                    }
                }
            }
            if let Some(conn) = self.conn.as_ref() {
                if conn.client.try_disconnect().is_ok() {
                    let deadline = TokioInstant::now() + Duration::from_millis(500);
                    while self.conn.as_ref().is_some_and(|c| !c.disconnected) {
                        tokio::select! {
                            Some((epoch, msg)) = conn_rx.recv() => self.on_conn(epoch, msg).await,
                            () = tokio::time::sleep_until(deadline) => break,
                        }
                    }
                }
            }
        }
        self.conn = None;
        self.events.close().await;
        self.status.connected = false;
        self.status.since_ms = wall_now().0;
        self.update_status();
        tracing::info!(
            outbox_depth = self.events.depth(),
            last_seq = self.events.last_seq(),
            "CRM link stopped"
        );
    }
}

/// Parses a small control message (ack, replay, callback state).
fn control<T: for<'de> Deserialize<'de>>(what: &str, payload: &[u8]) -> Result<T, String> {
    if payload.len() > MAX_CONTROL_BYTES {
        return Err(format!(
            "{what}: {} bytes is larger than {MAX_CONTROL_BYTES}",
            payload.len()
        ));
    }
    serde_json::from_slice(payload).map_err(|e| format!("{what}: not the expected JSON: {e}"))
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_to_the_cap() {
        let mut b = Backoff::new();
        let first = b.delay();
        assert!(
            first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN,
            "{first:?}"
        );
        let mut last = first;
        for _ in 0..20 {
            last = b.delay();
            assert!(last <= BACKOFF_MAX);
        }
        assert!(last >= BACKOFF_MAX / 2, "{last:?}");
        b.reset();
        assert!(b.delay() <= BACKOFF_MIN);
    }

    #[test]
    fn control_messages_are_checked() {
        assert_eq!(
            control::<AckMsg>("a", br#"{"upto_seq":7}"#)
                .unwrap()
                .upto_seq,
            7
        );
        for bad in [
            &b"junk"[..],
            br#"{"upto_seq":-1}"#,
            br#"{"upto":1}"#,
            br#"{"upto_seq":1,"x":2}"#,
            br#"[]"#,
        ] {
            assert!(control::<AckMsg>("a", bad).is_err());
        }
        let big = format!(r#"{{"upto_seq":1{}}}"#, " ".repeat(MAX_CONTROL_BYTES));
        assert!(control::<AckMsg>("a", big.as_bytes())
            .unwrap_err()
            .contains("larger"));
        let r = control::<ReplayMsg>("r", br#"{"from_seq":3,"to_seq":9}"#).unwrap();
        assert_eq!((r.from_seq, r.to_seq), (3, 9));
        let s = control::<StateMsg>("s", br#"{"state":"accepted","note":"hi"}"#).unwrap();
        assert_eq!(s.state, "accepted");
        assert!(s.at.is_none());
    }
}
