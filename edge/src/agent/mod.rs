//! The daemon: one task owns every call, the media pacer and the node's queues.
//!
//! ## Where things happen
//!
//! * a SIP datagram arrives on the SIP socket → [`Engine::on_sip`]: allowlist and rate limit
//!   on the source address *before* parsing, then `shared::sip::parse`; requests for a known
//!   Call-ID go to that call, others to `shared::sip::endpoint` — an acceptable INVITE becomes
//!   a `shared::call::Call` in [`Engine::new_call`];
//! * a call asks for audio (`call::Output::Play`) → [`Engine::drive`] expands the playlist into
//!   pre-encoded segments ([`crate::media::prompts::PromptSet::expand`]) for the pacer;
//! * audio becomes RTP in [`crate::media::engine::MediaEngine::tick`], every 20 ms for all
//!   calls at once.
//!
//! ## Run loop
//!
//! `tokio::select!` over: the media tick (absolute 20 ms deadlines), the SIP socket, inbound
//! RTP (one small receive task per call forwards datagrams over a channel), results of the
//! store thread, the earliest call deadline, the announcement cache rescan, and shutdown.
//! After every input to a call, [`Engine::drive`] drains its datagrams and outputs and re-arms
//! its one deadline in a `BTreeSet` timer queue.
//!
//! ## Durability
//!
//! A callback is booked through `shared::callback::CallbackQueue`: its `Store` output is
//! written by the store thread (SQLite, `synchronous=FULL`), and only when that commit
//! returned does the call get `BookingResult::Booked` — the caller never hears "booked" for a
//! callback that is not on disk.

pub mod announcements;
mod ratelimit;
mod rtp_ports;
pub mod view;

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use shared::announce::{self, AnnouncementSet};
use shared::call::{self, Call, Output};
use shared::callback::{self, Booking, CallbackQueue, QueueError};
use shared::event::EventKind;
use shared::ids::{AnnouncementHandle, AnnouncementId, CallId, CallbackId};
use shared::ivr::{AnnouncementInfo, BookingResult};
use shared::number::PhoneNumber;
use shared::sip::endpoint::{self, Verdict};
use shared::sip::{self as sipcore, uas, Message};
use shared::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::media::audio::Frames;
use crate::media::engine::{Audio, MediaEngine, Session, PTIME};
use crate::media::prompts::PromptSet;
use crate::store::{CallbackRecord, StoreError, StoreHandle};

use crate::link::{self, CallbackRequest, FromLink, PendingEvent, ToLink};
use ratelimit::RateLimiter;
use rtp_ports::PortPool;
pub use view::{AnnouncementView, CallView, CallbackView, Command, Snapshot, Stats};

/// Everything the agent needs, resolved from the configuration file.
#[derive(Clone)]
pub struct AgentConfig {
    /// `node.id`.
    pub node_id: String,
    /// `node.site`.
    pub site: String,
    /// `node.state_dir`.
    pub state_dir: PathBuf,
    /// `sip.listen`.
    pub sip_listen: SocketAddr,
    /// `sip.allow`, as a predicate on the source address.
    pub allow: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
    /// Answer refused sources with 403 (else drop silently).
    pub deny_with_403: bool,
    /// Requests per second accepted from one source address.
    pub rate_limit_per_source: u32,
    /// Address written into Contact, Via and SDP (default: the listen address, or
    /// 127.0.0.1 when listening on the unspecified address).
    pub public_address: Option<IpAddr>,
    /// SIP T1.
    pub t1: StdDuration,
    /// Ring this long before answering.
    pub answer_delay: StdDuration,
    /// `rtp.port_min`.
    pub rtp_port_min: u16,
    /// `rtp.port_max`.
    pub rtp_port_max: u16,
    /// Hang up answered calls whose RTP stopped this long ago.
    pub media_timeout: Option<StdDuration>,
    /// `ivr.transfer_uri`.
    pub transfer_uri: Option<String>,
    /// Prompt overrides.
    pub prompts_dir: Option<PathBuf>,
    /// The IVR flow's settings.
    pub ivr: shared::ivr::Config,
    /// Callback queue settings.
    pub callbacks: callback::Config,
    /// Largest announcement audio file accepted.
    pub max_audio_bytes: u64,
    /// Most concurrent calls (503 beyond).
    pub max_calls: usize,
    /// How long calls may take to end after SIGTERM.
    pub shutdown_grace: StdDuration,
    /// The CRM link over MQTT (`None`: no link, events and callbacks stay local).
    pub link: Option<crate::link::LinkConfig>,
}

impl AgentConfig {
    /// Development defaults: loopback only, state in `./ccedge-state`.
    #[must_use]
    pub fn development() -> AgentConfig {
        AgentConfig {
            node_id: "dev".into(),
            site: "default".into(),
            state_dir: PathBuf::from("./ccedge-state"),
            sip_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 5060)),
            allow: Arc::new(|ip: IpAddr| ip.is_loopback()),
            deny_with_403: false,
            rate_limit_per_source: 200,
            public_address: None,
            t1: StdDuration::from_millis(500),
            answer_delay: StdDuration::ZERO,
            rtp_port_min: 20000,
            rtp_port_max: 29999,
            media_timeout: Some(StdDuration::from_secs(60)),
            transfer_uri: None,
            prompts_dir: None,
            ivr: shared::ivr::Config::default(),
            callbacks: callback::Config::default(),
            max_audio_bytes: 16 << 20,
            max_calls: 20_000,
            shutdown_grace: StdDuration::from_secs(5),
            link: None,
        }
    }
}

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The SIP socket could not be bound.
    #[error("cannot listen for SIP on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The state directory or its database is unusable.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// Built-in or override prompts could not be loaded.
    #[error("prompts: {0}")]
    Prompts(String),
    /// A socket failed while running.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// A datagram received on a call's RTP port.
#[derive(Debug)]
struct RtpIn {
    key: u64,
    from: SocketAddr,
    len: usize,
    data: [u8; RTP_MAX],
}

const RTP_MAX: usize = 512;
/// Inbound RTP datagrams handled per wake-up of the agent's task, at most.
const RTP_BATCH: usize = 256;
const SIP_BUF: usize = shared::limits::SIP_MAX_DATAGRAM;

/// The store thread's answer to a callback write.
#[derive(Debug)]
struct Stored {
    id: CallbackId,
    ok: bool,
    error: Option<String>,
}

struct CallEntry {
    call: Box<Call>,
    peer: SocketAddr,
    sip_id: Box<[u8]>,
    /// The call's RTP socket (its receive task holds it too), until the media session takes it.
    rtp: Option<crate::media::engine::SendSocket>,
    rtp_port: u16,
    rtp_task: tokio::task::JoinHandle<()>,
    deadline: Option<Instant>,
    ssrc: u32,
    seq0: u16,
    ts0: u32,
    /// Announcements this call started: handle → (id, version), for their events.
    heard: Vec<(AnnouncementHandle, AnnouncementId, u32)>,
    /// The callback this call booked (for `callback.requested`).
    booked: Option<CallbackId>,
}

/// The running agent's state (one task owns it).
pub struct Engine {
    cfg: AgentConfig,
    core: &'static call::Config,
    clock: Clock,
    sip: Arc<UdpSocket>,
    advertised: IpAddr,
    calls: HashMap<u64, CallEntry>,
    by_sip_id: HashMap<Box<[u8]>, u64>,
    timers: BTreeSet<(Instant, u64)>,
    media: MediaEngine,
    prompts: Arc<PromptSet>,
    announcements: AnnouncementSet,
    audio: HashMap<[u8; 32], Arc<Frames>>,
    callbacks: CallbackQueue,
    bookings: HashMap<CallbackId, u64>,
    store: StoreHandle,
    ports: PortPool,
    limiter: RateLimiter,
    rtp_tx: mpsc::Sender<RtpIn>,
    stored_tx: mpsc::UnboundedSender<Stored>,
    next_key: u64,
    next_callback: u64,
    hasher: std::collections::hash_map::RandomState,
    draining: bool,
    stats: Stats,
    snapshot: watch::Sender<Snapshot>,
    /// The announcements as shown in snapshots (rebuilt when the set changes).
    ann_views: Vec<AnnouncementView>,
    sip_addr: SocketAddr,
    started_at: shared::time::UnixMillis,
    /// Work for the CRM link (None: no link configured).
    to_link: Option<mpsc::UnboundedSender<ToLink>>,
    sipbuf: Vec<u8>,
    outs: Vec<Output>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("calls", &self.calls.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("node_id", &self.node_id)
            .field("sip_listen", &self.sip_listen)
            .finish_non_exhaustive()
    }
}

/// A started agent: its SIP address and a handle to stop it.
#[derive(Debug)]
pub struct Running {
    /// The bound SIP address (useful with port 0).
    pub sip_addr: SocketAddr,
    /// Snapshots of the agent's state.
    pub snapshot: watch::Receiver<Snapshot>,
    /// Resolves when the agent stopped.
    pub task: tokio::task::JoinHandle<Result<(), AgentError>>,
    /// Requests for the engine (control socket).
    pub commands: mpsc::Sender<Command>,
    /// The CRM link's state (a default, disconnected status when there is no link).
    pub link_status: watch::Receiver<crate::link::LinkStatus>,
    /// Every call event as published to the CRM (JSON), for `ccedge events tail`.
    pub events: tokio::sync::broadcast::Sender<Arc<str>>,
}

/// What the SIP socket asks the kernel for: a burst of gateway traffic (a BYE for every call
/// at the end of a campaign, INVITEs after an outage) is hundreds of datagrams, and each small
/// datagram costs about 2 kB of the default 208 kB buffer. The kernel caps the request at
/// `net.core.rmem_max` (see docs/RASPBERRY_PI.md).
const SIP_RECEIVE_BUFFER: usize = 4 << 20;

fn widen_receive_buffer(sip: &UdpSocket, addr: SocketAddr) {
    let sock = socket2::SockRef::from(sip);
    let before = sock.recv_buffer_size().unwrap_or(0);
    let _ = sock.set_recv_buffer_size(SIP_RECEIVE_BUFFER);
    let after = sock.recv_buffer_size().unwrap_or(before);
    // Linux reports twice what it granted (the kernel's bookkeeping share included).
    if after < SIP_RECEIVE_BUFFER {
        info!(
            sip = %addr,
            granted = after,
            "SIP receive buffer capped by net.core.rmem_max; raise it (docs/RASPBERRY_PI.md) \
             to take larger bursts of SIP traffic"
        );
    } else {
        debug!(sip = %addr, granted = after, "SIP receive buffer");
    }
}

/// Binds the sockets, opens the store, loads prompts and the announcement cache, and starts
/// the agent's task. It stops (after draining calls) when `shutdown` turns `true`.
///
/// # Errors
/// [`AgentError`] when a socket, the store or the prompts are unusable.
pub async fn start(
    cfg: AgentConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<Running, AgentError> {
    let sip = UdpSocket::bind(cfg.sip_listen)
        .await
        .map_err(|source| AgentError::Bind {
            addr: cfg.sip_listen,
            source,
        })?;
    let sip_addr = sip.local_addr()?;
    widen_receive_buffer(&sip, sip_addr);
    let advertised = cfg
        .public_address
        .unwrap_or(if sip_addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            sip_addr.ip()
        });
    let prompts = PromptSet::load(cfg.prompts_dir.as_deref())
        .map_err(|e| AgentError::Prompts(e.to_string()))?;
    let store = crate::store::Store::open(&cfg.state_dir)?;
    let store = StoreHandle::spawn(store);
    let sip_cfg: &'static uas::Config = Box::leak(Box::new({
        let contact: &'static str = Box::leak(
            format!(
                "sip:ccedge@{}",
                SocketAddr::new(advertised, sip_addr.port())
            )
            .into_boxed_str(),
        );
        let via: &'static str = Box::leak(
            SocketAddr::new(advertised, sip_addr.port())
                .to_string()
                .into_boxed_str(),
        );
        let mut c = uas::Config::new(contact, via);
        c.t1 = Duration::from_micros(u64::try_from(cfg.t1.as_micros()).unwrap_or(500_000));
        c
    }));
    let core: &'static call::Config = Box::leak(Box::new({
        let mut c = call::Config::new(sip_cfg);
        c.ivr = cfg.ivr;
        c.transfer_uri = cfg
            .transfer_uri
            .clone()
            .map(|s| &*Box::leak(s.into_boxed_str()));
        c.media_timeout = cfg.media_timeout.map(to_core_duration);
        c.answer_delay = to_core_duration(cfg.answer_delay);
        c
    }));
    let (rtp_tx, rtp_rx) = mpsc::channel(8192);
    let (stored_tx, stored_rx) = mpsc::unbounded_channel();
    let (snap_tx, snap_rx) = watch::channel(Snapshot::default());
    let (from_link_tx, from_link_rx) = mpsc::unbounded_channel();
    let link = cfg
        .link
        .clone()
        .map(|lc| link::spawn(lc, store.clone(), snap_rx.clone(), from_link_tx));
    let started_at = crate::clock::wall_now();
    let mut engine = Engine {
        ports: PortPool::new(cfg.rtp_port_min, cfg.rtp_port_max),
        limiter: RateLimiter::new(cfg.rate_limit_per_source),
        callbacks: CallbackQueue::new(cfg.callbacks),
        cfg,
        core,
        clock: Clock::new(),
        sip: Arc::new(sip),
        advertised,
        calls: HashMap::new(),
        by_sip_id: HashMap::new(),
        timers: BTreeSet::new(),
        media: MediaEngine::new(),
        prompts: Arc::new(prompts),
        announcements: AnnouncementSet::new(),
        audio: HashMap::new(),
        bookings: HashMap::new(),
        store,
        rtp_tx,
        stored_tx,
        next_key: 1,
        next_callback: 0,
        hasher: std::collections::hash_map::RandomState::new(),
        draining: false,
        stats: Stats::default(),
        snapshot: snap_tx,
        ann_views: Vec::new(),
        sip_addr,
        started_at,
        to_link: link.as_ref().map(|l| l.tx.clone()),
        sipbuf: vec![0u8; SIP_BUF],
        outs: Vec::new(),
    };
    engine.restore_callbacks().await?;
    engine.load_announcements();
    info!(
        node = %engine.cfg.node_id,
        site = %engine.cfg.site,
        sip = %sip_addr,
        rtp = %format!("{}-{}", engine.cfg.rtp_port_min, engine.cfg.rtp_port_max),
        "ccedge agent accepting calls"
    );
    let (commands, command_rx) = mpsc::channel(64);
    let (link_status, events, link_task) = match link {
        Some(l) => (l.status, l.events, Some(l.task)),
        None => (
            watch::channel(crate::link::LinkStatus::default()).1,
            tokio::sync::broadcast::channel(16).0,
            None,
        ),
    };
    engine.publish_snapshot();
    let task = tokio::spawn(engine.run(
        shutdown,
        Inputs {
            rtp: rtp_rx,
            stored: stored_rx,
            commands: command_rx,
            from_link: from_link_rx,
            link_task,
        },
    ));
    Ok(Running {
        sip_addr,
        snapshot: snap_rx,
        task,
        commands,
        link_status,
        events,
    })
}

fn to_core_duration(d: StdDuration) -> Duration {
    Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The engine task's input channels.
struct Inputs {
    rtp: mpsc::Receiver<RtpIn>,
    stored: mpsc::UnboundedReceiver<Stored>,
    commands: mpsc::Receiver<Command>,
    from_link: mpsc::UnboundedReceiver<FromLink>,
    link_task: Option<tokio::task::JoinHandle<()>>,
}

impl Engine {
    async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        inputs: Inputs,
    ) -> Result<(), AgentError> {
        let Inputs {
            rtp: mut rtp_rx,
            stored: mut stored_rx,
            commands: mut command_rx,
            from_link: mut from_link_rx,
            link_task,
        } = inputs;
        let sip = Arc::clone(&self.sip);
        let mut buf = vec![0u8; SIP_BUF + 1];
        let mut next_tick = tokio::time::Instant::now() + PTIME;
        let mut finished = Vec::new();
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let mut rescan = tokio::time::interval(StdDuration::from_secs(2));
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut snap = tokio::time::interval(StdDuration::from_millis(500));
        // The two busy timers are pinned once and re-armed in place, so a loop turn does not
        // create and drop timer entries.
        let tick_sleep = tokio::time::sleep_until(next_tick);
        tokio::pin!(tick_sleep);
        let call_sleep = tokio::time::sleep_until(next_tick);
        tokio::pin!(call_sleep);
        let mut armed: Option<tokio::time::Instant> = None;
        loop {
            let timer = self.timers.first().map(|(t, _)| self.clock.to_tokio(*t));
            if timer != armed {
                if let Some(t) = timer {
                    call_sleep.as_mut().reset(t);
                }
                armed = timer;
            }
            // Not `biased`: when a pacer tick takes longer than 20 ms (thousands of calls on a
            // loaded box), a biased select would find the next tick ready at every turn and
            // never serve SIP, timers or shutdown again. Random order keeps every input served.
            tokio::select! {
                () = &mut tick_sleep => {
                    // Absolute deadlines: send what is owed when woken late (at most 5 frames;
                    // beyond that the schedule restarts from now).
                    let now = tokio::time::Instant::now();
                    let mut owed = 0;
                    while next_tick <= now && owed < 5 {
                        self.media.tick(&mut finished);
                        next_tick += PTIME;
                        owed += 1;
                    }
                    if next_tick <= now {
                        next_tick = now + PTIME;
                    }
                    tick_sleep.as_mut().reset(next_tick);
                    let core_now = self.clock.now();
                    for key in finished.drain(..) {
                        if let Some(e) = self.calls.get_mut(&key) {
                            let _ = e.call.handle_input(core_now, call::Input::PlaybackFinished);
                            self.drive(key, core_now);
                        }
                    }
                }
                r = sip.recv_from(&mut buf) => {
                    match r {
                        Ok((n, from)) => self.on_sip(&buf[..n.min(SIP_BUF)], n > SIP_BUF, from),
                        Err(e) => debug!(error = %e, "SIP receive error"),
                    }
                }
                Some(pkt) = rtp_rx.recv() => {
                    // Take whatever else has queued up in the same wake-up (bounded, so SIP
                    // and the pacer are never starved): one loop turn per batch, not per packet.
                    let now = self.clock.now();
                    self.on_rtp(now, &pkt);
                    for _ in 0..RTP_BATCH {
                        let Ok(pkt) = rtp_rx.try_recv() else { break };
                        self.on_rtp(now, &pkt);
                    }
                }
                Some(s) = stored_rx.recv() => self.on_stored(s),
                Some(m) = from_link_rx.recv() => self.on_link(m),
                Some(c) = command_rx.recv() => self.on_command(c),
                () = &mut call_sleep, if armed.is_some() => {
                    armed = None;
                    let now = self.clock.now();
                    while let Some(&(t, key)) = self.timers.first() {
                        if t > now {
                            break;
                        }
                        self.timers.pop_first();
                        if let Some(e) = self.calls.get_mut(&key) {
                            e.deadline = None;
                            e.call.handle_timeout(now);
                            self.drive(key, now);
                        }
                    }
                }
                _ = rescan.tick() => self.load_announcements(),
                _ = snap.tick() => {
                    self.announcements.handle_timeout(self.clock.wall());
                    while let Some(ev) = self.announcements.poll_output() {
                        debug!(event = ?ev, "announcement");
                    }
                    self.refresh_views();
                    self.publish_snapshot();
                }
                r = shutdown.changed(), if !self.draining => {
                    if r.is_err() || *shutdown.borrow() {
                        self.begin_drain();
                        drain_deadline = Some(tokio::time::Instant::now() + self.cfg.shutdown_grace);
                    }
                }
                () = sleep_opt(drain_deadline) => {
                    warn!(calls = self.calls.len(), "shutdown grace over; dropping the remaining calls");
                    break;
                }
            }
            if self.draining && self.calls.is_empty() {
                break;
            }
        }
        for (_, e) in self.calls.drain() {
            e.rtp_task.abort();
        }
        self.publish_snapshot();
        // Closing the link's channel makes it flush what it can, say offline and stop.
        self.to_link = None;
        if let Some(t) = link_task {
            if tokio::time::timeout(StdDuration::from_secs(3), t)
                .await
                .is_err()
            {
                warn!("the CRM link did not stop in time");
            }
        }
        info!("ccedge agent stopped");
        Ok(())
    }

    fn on_rtp(&mut self, now: Instant, pkt: &RtpIn) {
        if let Some(e) = self.calls.get_mut(&pkt.key) {
            let data = pkt.data.get(..pkt.len).unwrap_or(&[]);
            if e.call.handle_rtp(now, pkt.from, data).is_ok() {
                self.drive(pkt.key, now);
            }
        }
    }

    fn publish_snapshot(&self) {
        let _ = self.snapshot.send(Snapshot {
            calls: self.calls.len(),
            callbacks_waiting: self.callbacks.waiting(),
            stats: self.stats.clone(),
            sip_addr: Some(self.sip_addr),
            started_at_ms: self.started_at.0,
            announcements: self.ann_views.clone(),
            draining: self.draining,
        });
    }

    fn begin_drain(&mut self) {
        info!(calls = self.calls.len(), "shutting down: ending calls");
        self.draining = true;
        let now = self.clock.now();
        let keys: Vec<u64> = self.calls.keys().copied().collect();
        for key in keys {
            if let Some(e) = self.calls.get_mut(&key) {
                let _ = e.call.handle_input(now, call::Input::Shutdown);
                self.drive(key, now);
            }
        }
    }

    fn random(&self, salt: u64) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u64(salt);
        h.write_u64(self.clock.now().as_micros());
        h.finish()
    }

    // ---- SIP -------------------------------------------------------------------------------

    fn on_sip(&mut self, data: &[u8], truncated: bool, from: SocketAddr) {
        if !(self.cfg.allow)(from.ip()) {
            self.stats.sip_denied += 1;
            if self.cfg.deny_with_403 && self.limiter.allow(from.ip(), self.clock.now()) {
                self.respond_stateless(data, 403, from);
            }
            return;
        }
        if !self.limiter.allow(from.ip(), self.clock.now()) {
            self.stats.sip_rate_limited += 1;
            return;
        }
        if truncated {
            self.stats.sip_malformed += 1;
            self.respond_stateless(data, 513, from);
            return;
        }
        let now = self.clock.now();
        match sipcore::parse(data) {
            Err(e) => {
                self.stats.sip_malformed += 1;
                debug!(%from, error = %e, "malformed SIP datagram");
                if let Some(status) = e.status() {
                    self.respond_stateless(data, status, from);
                }
            }
            Ok(Message::Request(r)) => match r.to_incoming() {
                Err(e) => {
                    self.stats.sip_malformed += 1;
                    debug!(%from, error = %e, "bad SIP request");
                    if let Some(status) = e.status() {
                        self.respond_stateless(data, status, from);
                    }
                }
                Ok(req) => {
                    if let Some(&key) = self.by_sip_id.get(req.call_id.as_bytes()) {
                        if let Some(e) = self.calls.get_mut(&key) {
                            if let Err(err) = e.call.handle_sip_request(now, &req) {
                                debug!(call = %e.call.id(), error = %err, "request refused by the dialog");
                            }
                            self.drive(key, now);
                        }
                        return;
                    }
                    match endpoint::verdict(&req) {
                        Verdict::Ignore => {}
                        Verdict::Respond(status) => self.send_response(&req, status, from),
                        Verdict::NewDialog => self.new_call(now, &req, from),
                    }
                }
            },
            Ok(Message::Response(r)) => {
                let Ok(resp) = r.to_incoming_response() else {
                    return;
                };
                if let Some(&key) = self.by_sip_id.get(resp.call_id.as_bytes()) {
                    if let Some(e) = self.calls.get_mut(&key) {
                        let _ = e.call.handle_sip_response(now, &resp);
                        self.drive(key, now);
                    }
                }
            }
        }
    }

    fn respond_stateless(&mut self, data: &[u8], status: u16, to: SocketAddr) {
        if let Some(req) = sipcore::salvage(data) {
            self.send_response(&req, status, to);
        }
    }

    fn send_response(&mut self, req: &sipcore::Incoming<'_>, status: u16, to: SocketAddr) {
        if let Ok(n) = endpoint::respond(req, status, &mut self.sipbuf) {
            let _ = self.sip.try_send_to(&self.sipbuf[..n], to);
        }
    }

    fn new_call(&mut self, now: Instant, req: &sipcore::Incoming<'_>, from: SocketAddr) {
        if self.draining || self.calls.len() >= self.cfg.max_calls {
            self.stats.calls_refused += 1;
            self.send_response(req, 503, from);
            return;
        }
        let Some((port, std_socket)) = self.ports.bind(self.bind_ip()) else {
            warn!("no free RTP port: refusing the call with 503");
            self.stats.calls_refused += 1;
            self.send_response(req, 503, from);
            return;
        };
        // One descriptor: the receive task reads it through tokio, the pacer sends on it.
        let socket = match UdpSocket::from_std(std_socket) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                warn!(error = %e, "RTP socket setup failed: refusing the call with 503");
                self.ports.release(port);
                self.stats.calls_refused += 1;
                self.send_response(req, 503, from);
                return;
            }
        };
        let (caller, dialled) = call::numbers(req);
        let wall = self.clock.wall();
        let infos: Vec<AnnouncementInfo> = self
            .announcements
            .select(wall, &self.cfg.site, dialled.as_ref(), caller.as_ref())
            .iter()
            .filter_map(|h| {
                self.announcements.get(*h).map(|a| AnnouncementInfo {
                    handle: *h,
                    offer_callback: a.offer_callback,
                })
            })
            .collect();
        let key = self.next_key;
        self.next_key += 1;
        let setup = call::Setup {
            id: CallId(call_id_for(wall.0, key)),
            local_tag: self.random(key),
            local_rtp: SocketAddr::new(self.advertised, port),
            session_id: self.random(key ^ 0x5eed) >> 1,
        };
        let call = match Call::new(now, self.core, &setup, req, &infos) {
            Ok(c) => Box::new(c),
            Err(e) => {
                debug!(error = %e, "INVITE cannot create a dialog");
                self.ports.release(port);
                let status = if matches!(e, call::Error::Sip(uas::Error::TooLarge)) {
                    513
                } else {
                    400
                };
                self.send_response(req, status, from);
                return;
            }
        };
        self.stats.calls_total += 1;
        let rtp_task = tokio::spawn(rtp_receive(Arc::clone(&socket), key, self.rtp_tx.clone()));
        let r = self.random(key ^ 0xabcd);
        let sip_id: Box<[u8]> = req.call_id.as_bytes().into();
        debug!(call = %setup.id, caller = ?caller.as_ref().map(PhoneNumber::masked).map(|m| m.to_string()), "call offered");
        self.by_sip_id.insert(sip_id.clone(), key);
        self.calls.insert(
            key,
            CallEntry {
                call,
                peer: from,
                sip_id,
                rtp: Some(socket),
                rtp_port: port,
                rtp_task,
                deadline: None,
                ssrc: (r >> 32) as u32,
                seq0: (r >> 16) as u16,
                ts0: r as u32,
                heard: Vec::new(),
                booked: None,
            },
        );
        self.drive(key, now);
    }

    fn bind_ip(&self) -> IpAddr {
        self.sip.local_addr().map_or(self.advertised, |a| a.ip())
    }

    // ---- driving a call --------------------------------------------------------------------

    /// Drains a call's datagrams and outputs, acts on them, and re-arms its deadline. Call
    /// after every input to the call.
    fn drive(&mut self, key: u64, now: Instant) {
        let mut outs = std::mem::take(&mut self.outs);
        {
            let Some(e) = self.calls.get_mut(&key) else {
                self.outs = outs;
                return;
            };
            while let Some(n) = e.call.poll_transmit(&mut self.sipbuf) {
                if let Err(err) = self.sip.try_send_to(&self.sipbuf[..n], e.peer) {
                    debug!(error = %err, "SIP send failed");
                }
            }
            while let Some(o) = e.call.poll_output() {
                outs.push(o);
            }
        }
        for o in outs.drain(..) {
            self.act(key, now, o);
        }
        self.outs = outs;
        let Some(e) = self.calls.get_mut(&key) else {
            return;
        };
        let next = e.call.poll_timeout();
        if next != e.deadline {
            if let Some(old) = e.deadline {
                self.timers.remove(&(old, key));
            }
            if let Some(t) = next {
                self.timers.insert((t, key));
            }
            e.deadline = next;
        }
        if e.call.is_done() {
            self.remove_call(key);
        }
    }

    fn remove_call(&mut self, key: u64) {
        let Some(e) = self.calls.remove(&key) else {
            return;
        };
        if let Some(t) = e.deadline {
            self.timers.remove(&(t, key));
        }
        e.rtp_task.abort();
        self.media.stop(key);
        self.ports.release(e.rtp_port);
        self.by_sip_id.remove(&e.sip_id);
        let stats = e.call.rtp_stats();
        debug!(call = %e.call.id(), rtp_received = stats.received, rtp_lost = stats.lost, "call removed");
    }

    fn act(&mut self, key: u64, now: Instant, o: Output) {
        match o {
            Output::Media(m) => self.media_command(key, m),
            Output::Play(list) => {
                let audio = &self.audio;
                let ann = &self.announcements;
                let lookup = |h: AnnouncementHandle| -> Option<Arc<Frames>> {
                    let sha = ann.get(h)?.audio?;
                    audio.get(&sha).cloned()
                };
                let segments: Vec<Arc<dyn Audio>> = self
                    .prompts
                    .expand(&list, &lookup)
                    .into_iter()
                    .map(|f| f as Arc<dyn Audio>)
                    .collect();
                self.media.play(key, segments);
            }
            Output::StopPlayback => self.media.stop_playback(key),
            Output::BookCallback { number } => self.book(key, now, number),
            Output::Event { call_seq, event } => self.event(key, call_seq, &event),
        }
    }

    fn media_command(&mut self, key: u64, m: call::Media) {
        match m {
            call::Media::Start {
                remote,
                codec,
                payload_type,
                send,
                ..
            } => {
                let Some(e) = self.calls.get_mut(&key) else {
                    return;
                };
                // The session takes the sending socket (a call starts its media once).
                let Some(socket) = e.rtp.take() else {
                    return;
                };
                let law = match codec {
                    shared::sdp::Codec::Pcmu => shared::g711::Law::Ulaw,
                    shared::sdp::Codec::Pcma => shared::g711::Law::Alaw,
                };
                let session = Session::new(socket, law, payload_type, e.ssrc, e.seq0, e.ts0);
                self.media.start(key, session, remote, send);
            }
            call::Media::Remote(r) => self.media.set_remote(key, r),
            call::Media::Send(on) => self.media.set_sending(key, on),
            call::Media::Stop => {
                if let Some(s) = self.media.stop(key) {
                    debug!(sent = s.sent(), errors = s.send_errors(), "media stopped");
                }
            }
        }
    }

    fn event(&mut self, key: u64, call_seq: u32, event: &call::Event) {
        let Some(e) = self.calls.get_mut(&key) else {
            return;
        };
        let call_id = e.call.id();
        let kind = match event {
            call::Event::Offered { caller, dialled } => {
                info!(
                    call = %call_id, call_seq,
                    caller = %caller.as_ref().map(|c| c.masked().to_string()).unwrap_or_else(|| "anonymous".into()),
                    dialled = %dialled.as_ref().map(ToString::to_string).unwrap_or_default(),
                    "call.offered"
                );
                EventKind::CallOffered {
                    caller: caller.clone(),
                    dialled: dialled.clone(),
                }
            }
            call::Event::Answered { codec } => EventKind::CallAnswered { codec: *codec },
            call::Event::AnnouncementStarted(h) => {
                let Some(a) = self.announcements.get(*h) else {
                    return;
                };
                info!(call = %call_id, call_seq, announcement = %a.id, version = a.version, "announcement.started");
                if !e.heard.iter().any(|(x, _, _)| x == h) {
                    e.heard.push((*h, a.id.clone(), a.version));
                }
                EventKind::AnnouncementStarted {
                    announcement_id: a.id.clone(),
                    version: a.version,
                }
            }
            call::Event::AnnouncementCompleted {
                handle,
                interrupted,
            } => {
                let Some((_, id, version)) = e.heard.iter().find(|(x, _, _)| x == handle) else {
                    return;
                };
                EventKind::AnnouncementCompleted {
                    announcement_id: id.clone(),
                    version: *version,
                    interrupted: *interrupted,
                }
            }
            call::Event::Dtmf(d) => EventKind::Dtmf { digit: *d },
            call::Event::CallbackBooked { position, .. } => {
                let Some(id) = e.booked.clone() else {
                    return;
                };
                EventKind::CallbackRequested {
                    callback_id: id,
                    position: u32::from(*position),
                }
            }
            call::Event::Transferred { target } => EventKind::CallTransferred {
                target: shared::event::TransferTarget::try_from(*target).unwrap_or_default(),
            },
            call::Event::Ended {
                reason,
                duration,
                answered,
            } => {
                info!(
                    call = %call_id, call_seq, reason = reason.as_str(), duration_ms = duration.as_millis() as u64, "call.ended"
                );
                EventKind::CallEnded {
                    reason: *reason,
                    duration_ms: duration.as_millis() as u64,
                    answered_ms: answered.as_millis() as u64,
                }
            }
        };
        if !matches!(
            kind,
            EventKind::CallOffered { .. }
                | EventKind::AnnouncementStarted { .. }
                | EventKind::CallEnded { .. }
        ) {
            debug!(call = %call_id, call_seq, event = ?event, "call event");
        }
        if let Some(tx) = &self.to_link {
            let _ = tx.send(ToLink::Event(PendingEvent {
                call_id: Some(call_id),
                call_seq,
                at: self.clock.wall(),
                kind,
            }));
        }
    }

    // ---- callbacks -------------------------------------------------------------------------

    fn book(&mut self, key: u64, now: Instant, number: PhoneNumber) {
        let Some(e) = self.calls.get(&key) else {
            return;
        };
        self.next_callback += 1;
        let raw = format!("cb-{}-{:x}", e.call.id(), self.next_callback);
        let Ok(id) = CallbackId::new(&raw) else {
            return;
        };
        let req = callback::Request {
            id: id.clone(),
            call_id: e.call.id(),
            callback_number: number,
            caller: e.call.caller().cloned(),
            dialled: e.call.dialled().cloned(),
            announcement: e.heard.first().map(|(_, id, _)| id.clone()),
        };
        let result = match self.callbacks.request(self.clock.wall(), req) {
            Ok(_) => {
                self.bookings.insert(id, key);
                None
            }
            Err(QueueError::Full) => Some(BookingResult::QueueFull),
            Err(QueueError::Duplicate { position, .. }) => Some(BookingResult::AlreadyBooked {
                position: clamp_position(position.unwrap_or(1)),
            }),
            Err(_) => Some(BookingResult::Failed),
        };
        self.drain_callbacks();
        if let Some(r) = result {
            if let Some(e) = self.calls.get_mut(&key) {
                let _ = e.call.handle_input(now, call::Input::BookingResult(r));
            }
            self.drive(key, now);
        }
    }

    fn drain_callbacks(&mut self) {
        while let Some(o) = self.callbacks.poll_output() {
            match o {
                callback::Output::Store { id } => {
                    let Some(entry) = self.callbacks.get(&id) else {
                        continue;
                    };
                    let rec = record(entry, 0);
                    let store = self.store.clone();
                    let tx = self.stored_tx.clone();
                    tokio::spawn(async move {
                        let r = store.insert_callback(rec).await;
                        let _ = tx.send(Stored {
                            id,
                            ok: r.is_ok(),
                            error: r.err().map(|e| e.to_string()),
                        });
                    });
                }
                callback::Output::Update { id, state } => {
                    let store = self.store.clone();
                    let at = self.clock.wall().0;
                    tokio::spawn(async move {
                        if let Err(e) = store
                            .update_callback_state(id.to_string(), state.as_str().into(), at)
                            .await
                        {
                            warn!(error = %e, "callback state not written");
                        }
                    });
                }
                callback::Output::Remove { id, .. } => {
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.delete_callback(id.to_string()).await {
                            warn!(error = %e, "callback record not deleted");
                        }
                    });
                }
                // Without a link, booked callbacks stay Stored (durable, waiting); with one,
                // they are published and become Synced on PUBACK.
                callback::Output::Publish { id, position } => {
                    let (Some(tx), Some(entry)) = (&self.to_link, self.callbacks.get(&id)) else {
                        continue;
                    };
                    let req = CallbackRequest {
                        callback_id: entry.id.to_string(),
                        node: self.cfg.node_id.clone(),
                        site: self.cfg.site.clone(),
                        call_id: entry.call_id.to_string(),
                        requested_at: rfc3339(entry.requested_at),
                        caller: entry.caller.as_ref().map(ToString::to_string),
                        callback_number: entry.callback_number.to_string(),
                        dialled: entry.dialled.as_ref().map(ToString::to_string),
                        announcement_id: entry.announcement.as_ref().map(ToString::to_string),
                        position,
                    };
                    let _ = tx.send(ToLink::Callback(Box::new(req)));
                }
            }
        }
    }

    fn on_stored(&mut self, s: Stored) {
        let booking = self.callbacks.stored(&s.id, s.ok);
        let result = match booking {
            Ok(Booking::Booked { position }) => {
                self.stats.callbacks_booked += 1;
                info!(callback = %s.id, position, "callback booked (durable)");
                BookingResult::Booked {
                    position: clamp_position(position),
                }
            }
            Ok(Booking::NotBooked) | Err(_) => {
                self.stats.callbacks_failed += 1;
                warn!(callback = %s.id, error = s.error.as_deref().unwrap_or("refused"), "callback could not be booked");
                BookingResult::Failed
            }
        };
        self.drain_callbacks();
        if let Some(key) = self.bookings.remove(&s.id) {
            let now = self.clock.now();
            if let Some(e) = self.calls.get_mut(&key) {
                if matches!(result, BookingResult::Booked { .. }) {
                    e.booked = Some(s.id.clone());
                }
                let _ = e.call.handle_input(now, call::Input::BookingResult(result));
                self.drive(key, now);
            }
        }
    }

    async fn restore_callbacks(&mut self) -> Result<(), AgentError> {
        let records = self.store.callbacks().await?;
        let entries: Vec<callback::Entry> = records.iter().filter_map(entry_from_record).collect();
        let n = entries.len();
        let report = self.callbacks.restore(entries);
        info!(restored = n, report = ?report, "callback queue restored from disk");
        self.drain_callbacks();
        Ok(())
    }

    // ---- the CRM link and the control socket ----------------------------------------------

    fn on_link(&mut self, m: FromLink) {
        match m {
            FromLink::AnnouncementsChanged => self.load_announcements(),
            FromLink::Connected => self.callbacks.resync(),
            FromLink::CallbackSynced(id) => {
                if let Ok(id) = CallbackId::new(&id) {
                    if let Err(e) = self.callbacks.synced(&id) {
                        debug!(callback = %id, error = %e, "PUBACK for a callback not waiting for one");
                    }
                }
            }
            FromLink::CallbackState { id, state, at } => match CallbackId::new(&id) {
                Ok(cid) => match self.callbacks.crm_state(&cid, state, at) {
                    Ok(()) => {
                        info!(callback = %cid, state = state.state().as_str(), "callback state from the CRM")
                    }
                    Err(e) => {
                        warn!(callback = %cid, error = %e, "callback state from the CRM refused")
                    }
                },
                Err(_) => warn!(callback = %id, "callback state for an invalid id"),
            },
        }
        self.drain_callbacks();
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Calls(reply) => {
                let now = self.clock.now();
                let list = self
                    .calls
                    .iter()
                    .map(|(key, e)| {
                        let stats = e.call.rtp_stats();
                        let sent = self.media.session(*key).map_or(0, |s| s.sent());
                        CallView {
                            call_id: e.call.id().to_string(),
                            caller: e.call.caller().map(ToString::to_string),
                            dialled: e.call.dialled().map(ToString::to_string),
                            state: phase_str(e.call.phase()).to_owned(),
                            age_ms: now
                                .saturating_duration_since(e.call.started_at())
                                .as_millis() as u64,
                            codec: e.call.codec().map(|c| match c {
                                shared::sdp::Codec::Pcmu => "PCMU",
                                shared::sdp::Codec::Pcma => "PCMA",
                            }),
                            packets_sent: sent,
                            packets_received: u64::from(stats.received),
                        }
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Callbacks(reply) => {
                let list = self
                    .callbacks
                    .iter()
                    .map(|e| CallbackView {
                        callback_id: e.id.to_string(),
                        callback_number: e.callback_number.to_string(),
                        caller: e.caller.as_ref().map(ToString::to_string),
                        dialled: e.dialled.as_ref().map(ToString::to_string),
                        requested_at_ms: e.requested_at.0,
                        state: e.state.as_str(),
                        position: self.callbacks.position(&e.id),
                        announcement_id: e.announcement.as_ref().map(ToString::to_string),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::CancelCallback { id, reply } => {
                let r = match CallbackId::new(&id) {
                    Ok(cid) => self
                        .callbacks
                        .cancel(self.clock.wall(), &cid)
                        .map_err(|e| e.to_string()),
                    Err(_) => Err(format!("`{id}` is not a callback id")),
                };
                if r.is_ok() {
                    info!(callback = %id, "callback cancelled by a technician");
                }
                self.drain_callbacks();
                let _ = reply.send(r);
            }
        }
    }

    /// Rebuilds the announcement views; publishes a snapshot at once when they changed (the
    /// CRM sees a new version's state within a second).
    fn refresh_views(&mut self) {
        let views: Vec<AnnouncementView> = self
            .announcements
            .iter()
            .map(|(_, a, state)| AnnouncementView {
                id: a.id.to_string(),
                version: a.version,
                state: state.as_str(),
                priority: a.priority,
                sites: a
                    .scope
                    .sites
                    .iter()
                    .map(|x| x.as_str().to_owned())
                    .collect(),
                dialled: a.scope.dialled.iter().map(ToString::to_string).collect(),
                caller_prefixes: a
                    .scope
                    .caller_prefixes
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                audio_sha256: a.audio.as_ref().map(announcements::hex),
                audio_present: a.audio.as_ref().is_some_and(|h| self.audio.contains_key(h)),
                valid_from_ms: a.valid_from.map(|t| t.0),
                valid_until_ms: a.valid_until.map(|t| t.0),
            })
            .collect();
        if views != self.ann_views {
            self.ann_views = views;
            self.publish_snapshot();
        }
    }

    // ---- announcements ---------------------------------------------------------------------

    fn load_announcements(&mut self) {
        let audio = &self.audio;
        let loaded = announcements::load_dir(&self.cfg.state_dir, self.cfg.max_audio_bytes, &|h| {
            audio.contains_key(h)
        });
        let wall = self.clock.wall();
        for (path, why) in &loaded.rejected {
            debug!(file = %path.display(), reason = %why, "announcement cache file skipped");
        }
        for (sha, frames) in loaded.audio {
            if self.audio.insert(sha, frames).is_none() {
                let _ = self
                    .announcements
                    .handle_input(wall, announce::Input::AudioAvailable(sha));
            }
        }
        let on_disk: std::collections::HashSet<String> = loaded
            .announcements
            .iter()
            .map(|(a, _)| a.id.to_string())
            .collect();
        let withdrawn: Vec<AnnouncementId> = self
            .announcements
            .iter()
            .filter(|(_, a, _)| !on_disk.contains(a.id.as_str()))
            .map(|(_, a, _)| a.id.clone())
            .collect();
        for id in withdrawn {
            info!(announcement = %id, "announcement withdrawn");
            let _ = self
                .announcements
                .handle_input(wall, announce::Input::Withdraw(id));
        }
        for (a, _text) in loaded.announcements {
            let known = self
                .announcements
                .current(&a.id)
                .and_then(|h| self.announcements.get(h))
                .is_some_and(|cur| cur.version >= a.version);
            if !known {
                let _ = self
                    .announcements
                    .handle_input(wall, announce::Input::Upsert(a));
            }
        }
        self.announcements.handle_timeout(wall);
        while let Some(ev) = self.announcements.poll_output() {
            debug!(event = ?ev, "announcement");
        }
        self.refresh_views();
    }
}

/// RFC 3339 with milliseconds (`2026-11-23T06:01:02.345Z`).
fn rfc3339(t: shared::time::UnixMillis) -> String {
    let mut s = String::with_capacity(24);
    let _ = t.write_rfc3339(&mut s);
    s
}

fn phase_str(p: call::Phase) -> &'static str {
    match p {
        call::Phase::AwaitingAnswer => "answering",
        call::Phase::Answered => "answered",
        call::Phase::Rejected => "rejected",
        call::Phase::Ended => "ending",
    }
}

fn clamp_position(p: u32) -> u16 {
    u16::try_from(p).unwrap_or(u16::MAX)
}

fn call_id_for(wall_ms: i64, key: u64) -> u64 {
    // Unique per node across restarts: milliseconds since the epoch in the high bits, the
    // call counter in the low 20 bits.
    ((wall_ms.max(0) as u64) << 20) | (key & 0xF_FFFF)
}

fn record(e: &callback::Entry, position: u32) -> CallbackRecord {
    CallbackRecord {
        callback_id: e.id.to_string(),
        call_id: e.call_id.to_string(),
        caller: e.caller.as_ref().map(ToString::to_string),
        callback_number: e.callback_number.to_string(),
        dialled: e.dialled.as_ref().map(ToString::to_string),
        announcement_id: e.announcement.as_ref().map(ToString::to_string),
        requested_at_ms: e.requested_at.0,
        state: e.state.as_str().into(),
        state_at_ms: e.state_at.0,
        position,
    }
}

fn entry_from_record(r: &CallbackRecord) -> Option<callback::Entry> {
    let state = [
        callback::State::Requested,
        callback::State::Stored,
        callback::State::Synced,
        callback::State::Accepted,
        callback::State::Assigned,
        callback::State::Completed,
        callback::State::Cancelled,
        callback::State::Expired,
    ]
    .into_iter()
    .find(|s| s.as_str() == r.state)?;
    Some(callback::Entry {
        id: CallbackId::new(&r.callback_id).ok()?,
        call_id: CallId(u64::from_str_radix(&r.call_id, 16).unwrap_or(0)),
        callback_number: PhoneNumber::parse(&r.callback_number).ok()?,
        caller: r.caller.as_deref().and_then(|c| PhoneNumber::parse(c).ok()),
        dialled: r
            .dialled
            .as_deref()
            .and_then(|c| PhoneNumber::parse(c).ok()),
        announcement: r
            .announcement_id
            .as_deref()
            .and_then(|a| AnnouncementId::new(a).ok()),
        requested_at: shared::time::UnixMillis(r.requested_at_ms),
        state,
        state_at: shared::time::UnixMillis(r.state_at_ms),
    })
}

async fn sleep_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Receives one call's RTP and forwards it to the agent's task. Drops packets (counted by
/// the channel's fullness) rather than blocking when the agent falls behind.
async fn rtp_receive(socket: Arc<UdpSocket>, key: u64, tx: mpsc::Sender<RtpIn>) {
    loop {
        let mut data = [0u8; RTP_MAX];
        let Ok((len, from)) = socket.recv_from(&mut data[..]).await else {
            return;
        };
        match tx.try_send(RtpIn {
            key,
            from,
            len: len.min(RTP_MAX),
            data,
        }) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
