//! The daemon: one task does the I/O around [`shared::node::Node`], which holds every rule.
//!
//! The node decides what happens to a call, a booking, an announcement and an event; this
//! shell only moves bytes and time in and out of it (see docs/ARCHITECTURE.md):
//!
//! * a SIP datagram arrives on the SIP socket → [`Engine::on_sip`]: allowlist and rate limit
//!   on the source address *before* parsing (cheap refusals for scanners), then
//!   `Node::handle_sip`; its setup closure binds the new call's RTP socket;
//! * the node asks for audio (`Output::Play`) → [`Engine::act`] expands the playlist into
//!   pre-encoded segments ([`crate::media::prompts::Prompts::expand`]) for the pacer;
//! * audio becomes RTP in [`crate::media::engine::MediaEngine::tick`], every 20 ms for all
//!   calls at once, on the media plane's own thread ([`crate::media::plane`]);
//! * the node asks for a booking to be written (`Output::Callback(Store)`) → the store thread
//!   (SQLite, `synchronous=FULL`) → `Node::handle_stored`: the caller hears "booked" only for
//!   a callback that is on disk;
//! * call events (`Output::Event`) go to the CRM link, which numbers them, keeps them in the
//!   durable outbox and publishes them.
//! * a configuration reload (`SIGHUP`, [`crate::reload`]) hands over a [`LiveUpdate`]: the
//!   allow list, the rate limit, the prompts for new calls and the announcement cache as read
//!   now, all loaded off this task ([`Engine::apply_reload`]).
//!
//! ## Run loop
//!
//! `tokio::select!` over: the media plane's tick messages (the calls whose playlist ended and
//! every inbound RTP datagram of that tick, [`crate::media::plane`]; the plane paces and sends
//! on its own thread), the SIP socket, results of the store thread, the link, the control
//! socket, the node's one deadline, and shutdown. After every input the node's outputs are
//! drained ([`Engine::drain`]) and its timer re-armed.

mod ratelimit;
mod rtp_ports;
mod stream;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use shared::announce::{self, Sha256};
use shared::call::{self, Setup};
use shared::callback;
use shared::event::EventKind;
use shared::ids::{AnnouncementHandle, AnnouncementId, CallId, CallbackId};
use shared::ivr::BookingResult;
use shared::node::{self, CallKey, CallTable, CrmInput, HeapCalls, Node, Now};
use shared::sip::route::Transport;
use shared::sip::uas;
use shared::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::announcements;
use crate::clock::Clock;
use crate::media::audio::Frames;
use crate::media::engine::Audio;
use crate::media::plane::{Cmd, MediaPlanes, Wake};
use crate::media::prompts::Prompts;
use crate::store::{StoreError, StoreHandle};

use crate::link::{self, CacheWrite, CallbackRequest, FromLink, ToLink};
pub use crate::view::{
    AnnouncementView, CacheState, CallView, CallbackView, Command, LiveUpdate, ReloadApplied,
    Snapshot, Stats,
};
use ratelimit::RateLimiter;
use rtp_ports::PortPool;

/// SIP over TCP: limits of the stream transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSettings {
    /// A connection with no traffic this long is closed (`sip.tcp_idle_s`).
    pub idle: StdDuration,
    /// Most connections at once (`sip.tcp_max_connections`).
    pub max_connections: usize,
    /// Most connections from one source address (`sip.tcp_max_per_source`).
    pub max_per_source: usize,
}

impl Default for TcpSettings {
    fn default() -> Self {
        TcpSettings {
            idle: StdDuration::from_secs(600),
            max_connections: 1024,
            max_per_source: 128,
        }
    }
}

/// SIP over TLS: where, and with which certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The TLS listener (`sip.tls_listen`, commonly port 5061).
    pub listen: SocketAddr,
    /// PEM certificate chain (`sip.tls_cert`).
    pub cert: PathBuf,
    /// PEM private key (`sip.tls_key`).
    pub key: PathBuf,
}

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
    /// SIP over TCP on the same address as UDP (`sip.tcp`), and its limits; `None`: UDP only.
    pub tcp: Option<TcpSettings>,
    /// SIP over TLS (`sip.tls_listen`, `sip.tls_cert`, `sip.tls_key`); `None`: off.
    pub tls: Option<TlsSettings>,
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
    /// `sip.server_header`: `Server`/`User-Agent` value (empty: no header).
    pub server_header: String,
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
    /// The languages offered (`ivr.languages`, `ivr.language_by_dialled`); `ivr.languages`
    /// in `ivr` must be their count.
    pub languages: shared::node::Languages,
    /// The IVR flow's settings.
    pub ivr: shared::ivr::Config,
    /// Callback queue settings.
    pub callbacks: callback::Config,
    /// Opening hours for callback windows (`callbacks.hours`, `callbacks.holidays`).
    pub hours: callback::window::Hours,
    /// `callbacks.timezone`.
    pub timezone: jiff::tz::TimeZone,
    /// Largest announcement audio file accepted.
    pub max_audio_bytes: u64,
    /// Most concurrent calls (503 beyond).
    pub max_calls: usize,
    /// New calls get 503 while the media plane was busier than this (permille of its last
    /// second; 0 = never): `rtp.max_pacer_load_percent`.
    pub max_pacer_load_permille: u64,
    /// Media plane threads (`rtp.media_threads`; each call lives on one).
    pub media_threads: usize,
    /// `SCHED_FIFO` priority of the media plane threads (`rtp.realtime_priority`; 0 = off).
    pub media_realtime_priority: u8,
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
            tcp: Some(TcpSettings::default()),
            tls: None,
            allow: Arc::new(|ip: IpAddr| ip.is_loopback()),
            deny_with_403: false,
            rate_limit_per_source: 200,
            public_address: None,
            t1: StdDuration::from_millis(500),
            answer_delay: StdDuration::ZERO,
            server_header: shared::sip::emit::SERVER.into(),
            rtp_port_min: 20000,
            rtp_port_max: 29999,
            media_timeout: Some(StdDuration::from_secs(60)),
            transfer_uri: None,
            prompts_dir: None,
            languages: shared::node::Languages::default(),
            ivr: shared::ivr::Config::default(),
            callbacks: callback::Config::default(),
            hours: callback::window::Hours::always(),
            timezone: jiff::tz::TimeZone::UTC,
            max_audio_bytes: 16 << 20,
            max_calls: 20_000,
            max_pacer_load_permille: 850,
            media_threads: 1,
            media_realtime_priority: 0,
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
    /// The SIP TLS certificate or key cannot be used.
    #[error("SIP over TLS: {0}")]
    Tls(String),
    /// The configuration cannot be given to the core (e.g. a site name too long).
    #[error("configuration: {0}")]
    Config(String),
    /// A socket failed while running.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

const SIP_BUF: usize = shared::limits::SIP_MAX_DATAGRAM;
/// Datagrams that continue a call (responses, ACK, BYE, CANCEL, in-dialog requests) waiting
/// for the agent's task.
const SIP_CONTINUING_QUEUE: usize = 8_192;
/// Datagrams that start something new (INVITE, OPTIONS, …) waiting for the agent's task;
/// beyond, they are dropped and counted (the gateway retransmits).
const SIP_NEW_QUEUE: usize = 2_048;
/// Continuing datagrams taken per loop turn.
const SIP_BATCH: usize = 64;

/// One SIP datagram from the UDP socket.
struct SipIn {
    data: Vec<u8>,
    truncated: bool,
    from: SocketAddr,
}

/// What the SIP receive task did with datagrams it could not queue.
#[derive(Debug, Default)]
struct Overload {
    /// Dropped.
    dropped: std::sync::atomic::AtomicU64,
    /// New INVITEs answered 503.
    refused: std::sync::atomic::AtomicU64,
}

/// Drains the SIP socket into the agent's two queues (see [`Engine::run`]).
async fn sip_receive(
    socket: Arc<UdpSocket>,
    continuing: mpsc::Sender<SipIn>,
    new: mpsc::Sender<SipIn>,
    overload: Arc<Overload>,
    sip_cfg: &'static uas::Config,
) {
    let mut buf = vec![0u8; SIP_BUF + 1];
    let mut reply = vec![0u8; SIP_OUT];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "SIP receive error");
                continue;
            }
        };
        let data = &buf[..n.min(SIP_BUF)];
        let m = SipIn {
            data: data.to_vec(),
            truncated: n > SIP_BUF,
            from,
        };
        // A CANCEL queues behind the INVITE it cancels (which may still be waiting).
        let queue = if continues_transaction_or_dialog(data) && !data.starts_with(b"CANCEL ") {
            &continuing
        } else {
            &new
        };
        match queue.try_send(m) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(m)) => {
                // A new INVITE gets 503 with Retry-After at once, so the gateway tries
                // elsewhere (or later) instead of retransmitting into the overload.
                let answer = std::ptr::eq(queue, &new)
                    .then(|| node::overload_reply(sip_cfg, m.from, &m.data, &mut reply))
                    .flatten();
                match answer {
                    Some((to, n)) if socket.try_send_to(&reply[..n], to).is_ok() => {
                        overload
                            .refused
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => {
                        overload
                            .dropped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
/// Room for the node's largest datagram (a stateless answer echoes the request).
const SIP_OUT: usize = shared::limits::SIP_MAX_DATAGRAM + 512;

/// The store thread's answer to a callback write.
#[derive(Debug)]
struct Stored {
    id: CallbackId,
    ok: bool,
    error: Option<String>,
}

/// A call's I/O resources: its RTP port (the media plane holds the socket), and its RTP
/// stream's random start values.
struct CallIo {
    rtp_port: u16,
    /// The media plane was told to start sending (a call starts its media once).
    media_started: bool,
    /// Packets the plane sent for this call.
    sent: Arc<std::sync::atomic::AtomicU64>,
    ssrc: u32,
    seq0: u16,
    ts0: u32,
    /// The prompts this call plays from its start to its end (a reload changes them for new
    /// calls only).
    prompts: Arc<Prompts>,
    /// The SIP peer's address, while the call counts in [`Engine::call_peers`].
    peer: Option<IpAddr>,
    /// Counted in [`Engine::live_peers`] (until its `call.ended`).
    live: bool,
    /// Its RTP port went back to the pool at `call.ended`.
    port_released: bool,
    /// When the call's next RTCP report is due (set when its media starts).
    next_rtcp: Option<shared::time::Instant>,
    /// Where its last RTCP report went (its RTCP BYE goes there too).
    rtcp_to: Option<SocketAddr>,
    /// Reports sent (the RFC 3550 §6.2 interval is randomized from this and the SSRC).
    rtcp_sent: u32,
}

/// The running agent's state (one task owns it).
pub struct Engine {
    cfg: AgentConfig,
    node: Box<Node<HeapCalls>>,
    clock: Clock,
    sip: Arc<UdpSocket>,
    advertised: IpAddr,
    io: HashMap<CallKey, CallIo>,
    /// The socket the last setup closure bound, until the node says which call has it.
    bound: Option<(u16, std::net::UdpSocket)>,
    /// The media planes' threads: pacing, sends and inbound RTP (`crate::media::plane`).
    media: MediaPlanes,
    prompts: Arc<Prompts>,
    audio: HashMap<Sha256, Arc<Frames>>,
    store: StoreHandle,
    ports: PortPool,
    limiter: RateLimiter,
    stored_tx: mpsc::UnboundedSender<Stored>,
    next_call: u64,
    hasher: std::collections::hash_map::RandomState,
    /// Counters of the shell (refusals before parsing, RTP the agent could not take).
    sip_denied: u64,
    sip_rate_limited: u64,
    /// New calls refused because their source held its fair share of `sip.max_calls`.
    calls_refused_share: u64,
    /// New calls refused because the media plane was at `rtp.max_pacer_load_percent`.
    calls_refused_load: u64,
    /// SIP datagrams dropped because the agent's queue for them was full.
    sip_overload: Arc<Overload>,
    /// Datagrams larger than the largest SIP message (answered 513).
    sip_oversize: u64,
    /// Calls up per SIP peer address: a reload that takes an address out of `sip.allow`
    /// still lets the dialogs it already has finish.
    call_peers: HashMap<IpAddr, u32>,
    /// Calls not yet ended per SIP peer address: the fair share of `sip.max_calls`.
    live_peers: HashMap<IpAddr, u32>,
    /// Announcement and audio changes the CRM link handed over (see [`CacheState::epoch`]).
    link_epoch: u64,
    snapshot: watch::Sender<Snapshot>,
    /// The announcements as shown in snapshots (rebuilt when the set changes).
    ann_views: Vec<AnnouncementView>,
    sip_addr: SocketAddr,
    started_at: shared::time::UnixMillis,
    /// Work for the CRM link (None: no link configured).
    to_link: Option<mpsc::UnboundedSender<ToLink>>,
    /// The document of the announcement being applied, written to the cache if the node
    /// stores it (`Output::StoreAnnouncement`).
    unsaved_doc: Option<(AnnouncementId, u32, Vec<u8>)>,
    /// Announcement cache writes asked of the link and not done yet (by id): while any is, a
    /// configuration reload does not take the cache on disk for the node's state.
    cache_unwritten: HashMap<AnnouncementId, u32>,
    sipbuf: Vec<u8>,
    /// When the callback zone's table was last handed to the node.
    zone_at: Option<shared::time::Instant>,
    /// Open SIP TCP connections by peer address: a sender writes on one.
    streams: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// Peers we are connecting to.
    connecting: HashSet<SocketAddr>,
    /// Where connection tasks report (`None`: TCP is off).
    stream_tx: Option<mpsc::Sender<stream::StreamIn>>,
    stream_limits: stream::Limits,
    /// One permit per open connection (`sip.tcp_max_connections`).
    stream_slots: Arc<tokio::sync::Semaphore>,
    /// `sip.tcp_max_per_source`.
    tcp_per_source: usize,
    /// The callback queue was reloaded from disk (deferred while the store is not open).
    callbacks_restored: bool,
    /// What the metrics endpoint shows (fed from the node's outputs and the pacer).
    metrics: crate::metrics::Recorder,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("node", &self.node)
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
    /// The figures the engine keeps for the metrics endpoint.
    pub metrics: Arc<crate::metrics::Metrics>,
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

/// The tags of the node's languages, the default first.
#[must_use]
pub fn language_tags(languages: &shared::node::Languages) -> Vec<String> {
    languages
        .tags
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect()
}

fn node_config(
    cfg: &AgentConfig,
    advertised: IpAddr,
    sip_addr: SocketAddr,
) -> Result<node::Config, AgentError> {
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
        c.server = Box::leak(cfg.server_header.clone().into_boxed_str());
        c.t1 = Duration::from_micros(u64::try_from(cfg.t1.as_micros()).unwrap_or(500_000));
        c
    }));
    let call: &'static call::Config = Box::leak(Box::new({
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
    let site = announce::Site::try_from(cfg.site.as_str())
        .map_err(|_| AgentError::Config(format!("node.site `{}` is too long", cfg.site)))?;
    Ok(node::Config {
        call,
        site,
        callbacks: cfg.callbacks,
        max_calls: cfg.max_calls,
        hours: Box::leak(Box::new(cfg.hours.clone())),
        languages: cfg.languages.clone(),
    })
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
    // TCP on the same address and port as UDP (RFC 3261 §18: a UAS takes both).
    let tcp = match cfg.tcp {
        Some(t) => match TcpListener::bind(sip_addr).await {
            Ok(l) => Some((l, t)),
            Err(e) => {
                warn!(error = %e, addr = %sip_addr, "SIP over TCP not available: UDP only");
                None
            }
        },
        None => None,
    };
    let advertised = cfg
        .public_address
        .unwrap_or(if sip_addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            sip_addr.ip()
        });
    let tls = match &cfg.tls {
        Some(t) => {
            let acceptor = stream::tls_acceptor(&t.cert, &t.key).map_err(AgentError::Tls)?;
            let listener =
                TcpListener::bind(t.listen)
                    .await
                    .map_err(|source| AgentError::Bind {
                        addr: t.listen,
                        source,
                    })?;
            Some((listener, acceptor))
        }
        None => None,
    };
    let prompts = Prompts::load(&language_tags(&cfg.languages), cfg.prompts_dir.as_deref())
        .map_err(|e| AgentError::Prompts(e.to_string()))?;
    // A full or failing disk does not stop the agent: it takes calls and refuses bookings
    // until the store opens (see `crate::store::StoreHandle::open`).
    let store = StoreHandle::open(&cfg.state_dir)?;
    let node_cfg = node_config(&cfg, advertised, sip_addr)?;
    let clock = Clock::new();
    let now = Now {
        at: clock.now(),
        wall: clock.wall(),
    };
    let node = Box::new(Node::new(
        node_cfg,
        HeapCalls::with_capacity(cfg.max_calls.saturating_mul(2)),
        now,
    ));
    let recorder = crate::metrics::Recorder::new();
    let (media, wake_rx) = {
        let m = recorder.metrics();
        let on_tick: Arc<dyn Fn(StdDuration) + Send + Sync> =
            Arc::new(move |late| m.pacer_tick(late));
        MediaPlanes::start(cfg.media_threads, cfg.media_realtime_priority, &on_tick)?
    };
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
        cfg,
        node,
        clock,
        sip: Arc::new(sip),
        advertised,
        io: HashMap::new(),
        bound: None,
        media,
        prompts: Arc::new(prompts),
        audio: HashMap::new(),
        store,
        stored_tx,
        next_call: 1,
        hasher: std::collections::hash_map::RandomState::new(),
        sip_denied: 0,
        sip_rate_limited: 0,
        calls_refused_share: 0,
        calls_refused_load: 0,
        sip_overload: Arc::new(Overload::default()),
        sip_oversize: 0,
        call_peers: HashMap::new(),
        live_peers: HashMap::new(),
        link_epoch: 0,
        snapshot: snap_tx,
        ann_views: Vec::new(),
        sip_addr,
        started_at,
        to_link: link.as_ref().map(|l| l.tx.clone()),
        unsaved_doc: None,
        cache_unwritten: HashMap::new(),
        sipbuf: vec![0u8; SIP_OUT],
        zone_at: None,
        streams: HashMap::new(),
        connecting: HashSet::new(),
        stream_tx: None,
        stream_limits: stream::Limits {
            idle: StdDuration::from_secs(600),
            max_connections: 1024,
            max_message: shared::limits::SIP_MAX_DATAGRAM,
        },
        stream_slots: Arc::new(tokio::sync::Semaphore::new(1)),
        tcp_per_source: 0,
        callbacks_restored: false,
        metrics: recorder,
    };
    // TCP and TLS share the connection limits (TLS alone uses the defaults).
    let limits = engine.cfg.tcp.unwrap_or_default();
    let stream_rx = (tcp.is_some() || tls.is_some()).then(|| {
        let (tx, rx) = mpsc::channel(4096);
        engine.stream_limits.idle = limits.idle;
        engine.stream_limits.max_connections = limits.max_connections;
        engine.tcp_per_source = limits.max_per_source;
        engine.stream_slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        engine.stream_tx = Some(tx.clone());
        if let Some((listener, _)) = tcp {
            tokio::spawn(stream::listen(
                listener,
                None,
                tx.clone(),
                engine.stream_limits,
                Arc::clone(&engine.stream_slots),
            ));
        }
        if let Some((listener, acceptor)) = tls {
            tokio::spawn(stream::listen(
                listener,
                Some(acceptor),
                tx,
                engine.stream_limits,
                Arc::clone(&engine.stream_slots),
            ));
        }
        rx
    });
    if engine.store.health().open {
        engine.restore_callbacks().await?;
    } else {
        warn!("callback queue not restored: the state store is not open yet");
    }
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
    let metrics = engine.metrics.metrics();
    let task = tokio::spawn(engine.run(
        shutdown,
        Inputs {
            media: wake_rx,
            stored: stored_rx,
            commands: command_rx,
            from_link: from_link_rx,
            link_task,
            streams: stream_rx,
        },
    ));
    Ok(Running {
        sip_addr,
        snapshot: snap_rx,
        task,
        commands,
        link_status,
        events,
        metrics,
    })
}

fn to_core_duration(d: StdDuration) -> Duration {
    Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The engine task's input channels.
struct Inputs {
    media: mpsc::Receiver<Wake>,
    stored: mpsc::UnboundedReceiver<Stored>,
    commands: mpsc::Receiver<Command>,
    from_link: mpsc::UnboundedReceiver<FromLink>,
    link_task: Option<tokio::task::JoinHandle<()>>,
    /// SIP over TCP (`None`: UDP only).
    streams: Option<mpsc::Receiver<stream::StreamIn>>,
}

/// The next message of an optional channel; never ready when there is none.
async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Engine {
    async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        inputs: Inputs,
    ) -> Result<(), AgentError> {
        let Inputs {
            media: mut wake_rx,
            stored: mut stored_rx,
            commands: mut command_rx,
            from_link: mut from_link_rx,
            link_task,
            streams: mut stream_rx,
        } = inputs;
        // The SIP socket is drained by its own task into two queues: what continues a call
        // (responses, ACK, BYE, CANCEL, in-dialog requests) and what starts something new. A
        // flood of new INVITEs then waits (or is dropped, counted) in its own queue; a call's
        // BYE never waits behind it, and the kernel's socket buffer does not overflow while
        // this task is busy with calls.
        let (cont_tx, mut cont_rx) = mpsc::channel::<SipIn>(SIP_CONTINUING_QUEUE);
        let (new_tx, mut new_rx) = mpsc::channel::<SipIn>(SIP_NEW_QUEUE);
        let sip_task = tokio::spawn(sip_receive(
            Arc::clone(&self.sip),
            cont_tx,
            new_tx,
            Arc::clone(&self.sip_overload),
            self.node.config().call.sip,
        ));
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        let mut snap = tokio::time::interval(StdDuration::from_millis(500));
        // The node's timer is pinned once and re-armed in place, so a loop turn does not
        // create and drop timer entries.
        let node_sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(node_sleep);
        let mut armed: Option<tokio::time::Instant> = None;
        loop {
            let timer = self.node.poll_timeout().map(|t| self.clock.to_tokio(t));
            if timer != armed {
                if let Some(t) = timer {
                    node_sleep.as_mut().reset(t);
                }
                armed = timer;
            }
            // Not `biased`: random order keeps every input served when one is busy.
            tokio::select! {
                Some(w) = wake_rx.recv() => self.on_media(w),
                Some(m) = cont_rx.recv() => {
                    self.on_sip(&m.data, m.truncated, m.from);
                    for _ in 0..SIP_BATCH {
                        let Ok(m) = cont_rx.try_recv() else { break };
                        self.on_sip(&m.data, m.truncated, m.from);
                    }
                }
                Some(m) = new_rx.recv() => {
                    // Whatever continues a call goes first.
                    while let Ok(c) = cont_rx.try_recv() {
                        self.on_sip(&c.data, c.truncated, c.from);
                    }
                    self.on_sip(&m.data, m.truncated, m.from);
                }
                Some(ev) = recv_opt(&mut stream_rx) => self.on_stream(ev),
                Some(s) = stored_rx.recv() => self.on_stored(s),
                Some(m) = from_link_rx.recv() => self.on_link(m),
                Some(c) = command_rx.recv() => self.on_command(c),
                () = &mut node_sleep, if armed.is_some() => {
                    armed = None;
                    let now = self.now();
                    self.node.handle_timeout(now);
                    self.drain();
                }
                _ = snap.tick() => {
                    self.send_rtcp_reports();
                    self.refresh_zone();
                    if !self.callbacks_restored && self.store.health().open {
                        if let Err(e) = self.restore_callbacks().await {
                            warn!(error = %e, "callback queue not restored yet");
                        }
                    }
                    self.refresh_views();
                    self.publish_snapshot();
                }
                r = shutdown.changed(), if !self.node.is_draining() => {
                    if r.is_err() || *shutdown.borrow() {
                        info!(calls = self.node.active_calls(), "shutting down: ending calls");
                        let now = self.now();
                        self.node.handle_shutdown(now);
                        self.drain();
                        drain_deadline = Some(tokio::time::Instant::now() + self.cfg.shutdown_grace);
                    }
                }
                () = sleep_opt(drain_deadline) => {
                    warn!(calls = self.node.active_calls(), "shutdown grace over; dropping the remaining calls");
                    break;
                }
            }
            if self.node.is_draining() && self.node.active_calls() == 0 {
                break;
            }
        }
        sip_task.abort();
        for (key, _) in self.io.drain() {
            self.media.send(Cmd::Detach { key: key.0 });
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

    fn now(&self) -> Now {
        Now {
            at: self.clock.now(),
            wall: self.clock.wall(),
        }
    }

    /// One tick of the media plane: the calls whose playlist ended, then what arrived on the
    /// calls' sockets.
    fn on_media(&mut self, w: Wake) {
        let now = self.now();
        for key in w.finished {
            let _ = self.node.handle_playback_finished(now, CallKey(key));
        }
        for (d, data) in w.rtp.iter() {
            self.on_rtp(now, CallKey(d.key), d.from, data);
        }
        self.drain();
    }

    fn on_rtp(&mut self, now: Now, key: CallKey, from: SocketAddr, data: &[u8]) {
        // A refusal is counted by the node (`rtp_dropped`).
        let trusted = (self.cfg.allow)(from.ip());
        if shared::rtp::rtcp::is_rtcp(data) {
            // rtcp-mux (RFC 5761): the peer's reports on the RTP port.
            let Some(io) = self.io.get(&key) else {
                return;
            };
            let ours = shared::rtp::Ssrc(io.ssrc);
            let _ = self.node.handle_rtcp(now, key, from, trusted, data, ours);
            return;
        }
        let _ = self.node.handle_rtp(now, key, from, trusted, data);
    }

    /// Sends the RTCP reports that are due (checked every 500 ms; the interval is 5 s
    /// randomized, so half a second of lateness is within what RFC 3550 §6.2 allows).
    fn send_rtcp_reports(&mut self) {
        let now = self.now();
        let ntp = shared::rtp::rtcp::ntp_from_unix_ms(now.wall.0);
        for (key, io) in &mut self.io {
            let Some(due) = io.next_rtcp else {
                continue;
            };
            if due > now.at {
                continue;
            }
            io.rtcp_sent = io.rtcp_sent.wrapping_add(1);
            io.next_rtcp = Some(now.at + rtcp_interval(io.ssrc, io.rtcp_sent));
            let Some((to, block)) = self.node.rtcp_report(now, *key) else {
                continue;
            };
            if io.media_started {
                self.media.send(Cmd::RtcpReport {
                    key: key.0,
                    to,
                    block,
                    ntp,
                });
                io.rtcp_to = Some(to);
            }
        }
    }

    fn stats(&self) -> Stats {
        let n = self.node.stats();
        Stats {
            sip_denied: self.sip_denied,
            sip_rate_limited: self.sip_rate_limited,
            sip_malformed: n.sip_malformed + self.sip_oversize,
            calls_total: n.calls_total,
            calls_refused: n.calls_refused,
            calls_refused_share: self.calls_refused_share,
            calls_refused_load: self.calls_refused_load,
            pacer_load_permille: self.media.load_permille(),
            pacer_realtime: self.media.realtime(),
            sip_overload_dropped: self
                .sip_overload
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed),
            sip_overload_refused: self
                .sip_overload
                .refused
                .load(std::sync::atomic::Ordering::Relaxed),
            callbacks_booked: n.callbacks_booked,
            callbacks_failed: n.callbacks_failed,
            callbacks_expired: n.callbacks_expired,
            rtp_dropped: n.rtp_dropped + self.media.rtp_overflow(),
            rtp_foreign: n.rtp_foreign,
        }
    }

    fn publish_snapshot(&self) {
        let _ = self.snapshot.send(Snapshot {
            calls: self.node.active_calls(),
            callbacks_waiting: self.node.queue().waiting(),
            stats: self.stats(),
            sip_addr: Some(self.sip_addr),
            started_at_ms: self.started_at.0,
            announcements: self.ann_views.clone(),
            draining: self.node.is_draining(),
            store: self.store.health(),
        });
    }

    fn random(&self, salt: u64) -> u64 {
        random(&self.hasher, &self.clock, salt)
    }

    // ---- SIP -------------------------------------------------------------------------------

    fn on_sip(&mut self, data: &[u8], truncated: bool, from: SocketAddr) {
        self.on_sip_on(data, truncated, from, Transport::Udp);
    }

    fn on_sip_on(&mut self, data: &[u8], truncated: bool, from: SocketAddr, transport: Transport) {
        let now = self.now();
        // A source a reload took out of `sip.allow` may still end the calls it has up.
        let allowed = (self.cfg.allow)(from.ip())
            || (self.call_peers.contains_key(&from.ip()) && continues_dialog(data));
        if !allowed {
            self.sip_denied += 1;
            if self.cfg.deny_with_403 && self.limiter.allow(from.ip(), now.at) {
                self.respond_stateless(data, 403, from, transport);
            }
            return;
        }
        // The limit is for what starts something new: a call's own requests and responses
        // (and a CANCEL of its INVITE) always get through, however busy its gateway is.
        if !continues_transaction_or_dialog(data) && !self.limiter.allow(from.ip(), now.at) {
            self.sip_rate_limited += 1;
            return;
        }
        if truncated {
            self.sip_oversize += 1;
            self.respond_stateless(data, 513, from, transport);
            return;
        }
        // The setup closure binds the call's RTP socket; it runs only for an acceptable new
        // INVITE the node has room for.
        let bind_ip = self.bind_ip();
        let wall = now.wall;
        let key = self.next_call;
        let (hasher, clock) = (&self.hasher, &self.clock);
        let ports = &mut self.ports;
        let bound = &mut self.bound;
        let advertised = self.advertised;
        // Fair share (`sip.max_calls`): the last tenth of the capacity is kept for sources
        // below their share (the capacity divided among the sources with calls, this one
        // included, plus one more for a newcomer), so a flood from a few allowed sources
        // leaves room for every other gateway. A lone source may use everything.
        let capacity = ports.capacity().min(self.cfg.max_calls).max(1);
        let reserve = (capacity / 10).max(1);
        let held = self.live_peers.get(&from.ip()).map_or(0, |n| *n as usize);
        let sources = self.live_peers.len() + usize::from(held == 0);
        let over_share = sources > 1
            && self.node.active_calls() + reserve >= capacity
            && (held + 1) * (sources + 1) > capacity;
        // Measured capacity: while the media plane's thread was busier than
        // `rtp.max_pacer_load_percent` over its last second, another call would make every
        // call's audio late; it is refused with 503 and Retry-After instead.
        let load = self.media.load_permille();
        let over_load =
            self.cfg.max_pacer_load_permille > 0 && load > self.cfg.max_pacer_load_permille;
        let mut refused_share = false;
        let mut refused_load = false;
        let mut used = false;
        self.node.handle_sip_on(now, from, transport, data, || {
            used = true;
            if over_load {
                refused_load = true;
                return None;
            }
            if over_share {
                refused_share = true;
                return None;
            }
            let (port, std_socket) = ports.bind(bind_ip)?;
            // One descriptor (non-blocking): the media plane reads and sends on it.
            *bound = Some((port, std_socket));
            Some(Setup {
                id: CallId(call_id_for(wall.0, key)),
                local_tag: random(hasher, clock, key),
                local_rtp: SocketAddr::new(advertised, port),
                session_id: random(hasher, clock, key ^ 0x5eed) >> 1,
            })
        });
        if used {
            self.next_call += 1;
            if refused_load {
                self.calls_refused_load += 1;
                debug!(
                    load_permille = load,
                    "new call refused with 503: the media plane is at its load limit"
                );
            } else if refused_share {
                self.calls_refused_share += 1;
                debug!(source = %from.ip(), held, "new call refused with 503: the source holds its fair share");
            } else if self.bound.is_none() {
                warn!("no free RTP port: the call was refused with 503");
            }
        }
        self.drain();
    }

    fn respond_stateless(
        &mut self,
        data: &[u8],
        status: u16,
        to: SocketAddr,
        transport: Transport,
    ) {
        if let Some(mut req) = shared::sip::salvage(data) {
            req.received_from = Some(to);
            req.transport = transport;
            let dest = req
                .vias
                .first()
                .map_or(to, |v| shared::sip::route::reply_address(v, to, transport));
            let mut buf = std::mem::take(&mut self.sipbuf);
            let sip = self.node.config().call.sip;
            if let Ok(n) = shared::sip::endpoint::respond_with(
                &req,
                status,
                sip.min_se_secs,
                sip.server,
                &mut buf,
            ) {
                self.send_sip(&buf[..n], dest, transport, Some(to));
            }
            self.sipbuf = buf;
        }
    }

    /// Sends one SIP message. UDP: a datagram from the SIP socket. TCP: on the connection to
    /// `to`, else on `conn` (the connection the call's INVITE came on), else on a new
    /// connection to `to` (the message waits for it; while it is being opened, later sends
    /// to the same address are dropped and the SIP timers retransmit).
    fn send_sip(
        &mut self,
        data: &[u8],
        to: SocketAddr,
        transport: Transport,
        conn: Option<SocketAddr>,
    ) {
        if !transport.is_reliable() {
            if let Err(e) = self.sip.try_send_to(data, to) {
                debug!(error = %e, %to, "SIP send failed");
            }
            return;
        }
        let tx = self
            .streams
            .get(&to)
            .or_else(|| conn.and_then(|c| self.streams.get(&c)));
        if let Some(tx) = tx {
            if tx.try_send(data.to_vec()).is_err() {
                debug!(%to, "SIP TCP write queue full or closed: message dropped");
            }
            return;
        }
        let Some(events) = self.stream_tx.clone() else {
            debug!(%to, "SIP over TCP is off: message dropped");
            return;
        };
        if transport == Transport::Tls {
            // The node opens no TLS connections of its own (it would need the peer's name and
            // trust roots): a TLS call's messages go on its own connection only.
            debug!(%to, "no TLS connection to the next hop: message dropped");
            return;
        }
        if self.connecting.insert(to) {
            tokio::spawn(stream::connect(
                to,
                data.to_vec(),
                events,
                self.stream_limits,
                Arc::clone(&self.stream_slots),
            ));
        }
    }

    fn on_stream(&mut self, ev: stream::StreamIn) {
        match ev {
            stream::StreamIn::Opened { peer, tx } => {
                self.connecting.remove(&peer);
                let from_same = self.streams.keys().filter(|p| p.ip() == peer.ip()).count();
                if !(self.cfg.allow)(peer.ip()) && !self.call_peers.contains_key(&peer.ip()) {
                    // Dropping the sender closes the connection.
                    self.sip_denied += 1;
                } else if from_same >= self.tcp_per_source {
                    debug!(%peer, "SIP TCP connection refused: too many from this source");
                    self.sip_rate_limited += 1;
                } else {
                    self.streams.insert(peer, tx);
                }
            }
            stream::StreamIn::Message {
                peer,
                transport,
                data,
            } => {
                if self.streams.contains_key(&peer) {
                    self.on_sip_on(&data, false, peer, transport);
                }
            }
            stream::StreamIn::Broken {
                peer,
                transport,
                head,
                status,
            } => {
                if self.streams.contains_key(&peer) {
                    self.sip_oversize += 1;
                    self.respond_stateless(&head, status, peer, transport);
                }
            }
            stream::StreamIn::Closed { peer } => {
                self.connecting.remove(&peer);
                self.streams.remove(&peer);
            }
        }
    }

    fn bind_ip(&self) -> IpAddr {
        self.sip.local_addr().map_or(self.advertised, |a| a.ip())
    }

    // ---- the node's outputs ----------------------------------------------------------------

    /// Drains the node's outputs and acts on each. Call after every input to the node.
    fn drain(&mut self) {
        let mut buf = std::mem::take(&mut self.sipbuf);
        let mut views_changed = false;
        while let Some(o) = self.node.poll_output(&mut buf) {
            match o {
                node::Output::Transmit {
                    to,
                    len,
                    transport,
                    conn,
                } => self.send_sip(&buf[..len], to, transport, conn),
                node::Output::Announcement(ev) => {
                    debug!(event = ?ev, "announcement");
                    if let announce::Event::Withdrawn { id, .. }
                    | announce::Event::Pruned { id, .. } = &ev
                    {
                        self.ask_cache_write(CacheWrite::Remove(id.clone()));
                    }
                    views_changed = true;
                }
                node::Output::StoreAnnouncement { id, version } => {
                    // Only a document the link handed over is written: at start-up the
                    // node is fed from the cache itself.
                    if let Some(doc) = self
                        .unsaved_doc
                        .take_if(|(i, v, _)| *i == id && *v == version)
                        .map(|(_, _, d)| d)
                    {
                        self.ask_cache_write(CacheWrite::Announcement { id, version, doc });
                    }
                }
                o => {
                    self.metrics
                        .output(&o, self.node.active_calls(), self.node.queue());
                    self.act(o);
                }
            }
        }
        self.sipbuf = buf;
        if views_changed {
            self.refresh_views();
        }
    }

    fn act(&mut self, o: node::Output) {
        match o {
            node::Output::Transmit { .. }
            | node::Output::Announcement(_)
            | node::Output::StoreAnnouncement { .. } => {}
            node::Output::CallCreated { call, local_rtp } => self.call_created(call, local_rtp),
            node::Output::Released { call, local_rtp } => self.released(call, local_rtp),
            node::Output::Media { call, media } => self.media_command(call, media),
            node::Output::Play {
                call,
                playlist,
                language,
            } => {
                let audio = &self.audio;
                let ann = self.node.announcements();
                let lookup = |h: AnnouncementHandle| -> Option<Arc<Frames>> {
                    let sha = ann.get(h)?.audio?;
                    audio.get(&sha).cloned()
                };
                let prompts = self.io.get(&call).map_or(&self.prompts, |io| &io.prompts);
                let segments: Vec<Arc<dyn Audio>> = prompts
                    .expand(language, &playlist, &lookup)
                    .into_iter()
                    .map(|f| f as Arc<dyn Audio>)
                    .collect();
                self.media.send(Cmd::Play {
                    key: call.0,
                    segments,
                });
            }
            node::Output::StopPlayback { call } => {
                self.media.send(Cmd::StopPlayback { key: call.0 });
            }
            node::Output::Callback(c) => self.callback_work(c),
            node::Output::Booking {
                call,
                callback,
                result,
            } => match result {
                BookingResult::Booked { position } => {
                    let callback = callback.as_ref().map_or("-", CallbackId::as_str);
                    info!(call = %call, callback = %callback, position, "callback booked (durable)");
                }
                BookingResult::AlreadyBooked { position } => {
                    let callback = callback.as_ref().map_or("-", CallbackId::as_str);
                    info!(call = %call, callback = %callback, position, "caller already booked");
                }
                BookingResult::QueueFull | BookingResult::Failed => {
                    warn!(call = %call, result = ?result, "callback could not be booked");
                }
            },
            node::Output::Event(e) => self.event(e),
        }
    }

    fn call_created(&mut self, key: CallKey, local_rtp: SocketAddr) {
        let Some((port, socket)) = self.bound.take() else {
            return;
        };
        debug_assert_eq!(port, local_rtp.port());
        self.media.send(Cmd::Attach { key: key.0, socket });
        let r = self.random(key.0 ^ 0xabcd);
        let peer = self.node.call(key).map(|slot| slot.peer().ip());
        if let Some(ip) = peer {
            *self.call_peers.entry(ip).or_insert(0) += 1;
            *self.live_peers.entry(ip).or_insert(0) += 1;
        }
        self.io.insert(
            key,
            CallIo {
                rtp_port: port,
                media_started: false,
                sent: Arc::new(std::sync::atomic::AtomicU64::new(0)),
                ssrc: (r >> 32) as u32,
                seq0: (r >> 16) as u16,
                ts0: r as u32,
                prompts: Arc::clone(&self.prompts),
                peer,
                live: peer.is_some(),
                port_released: false,
                next_rtcp: None,
                rtcp_to: None,
                rtcp_sent: 0,
            },
        );
    }

    /// A call ended for its caller: it no longer counts against its source's fair share, and
    /// its RTP port goes back to the pool now, not when its dialog has stopped lingering for
    /// retransmissions (32 s later: a gateway's short calls would otherwise hold thousands of
    /// ports nobody talks on). The pool hands ports out round-robin, so the port is reused
    /// last.
    fn call_ended(&mut self, key: CallKey) {
        let Some(io) = self.io.get_mut(&key) else {
            return;
        };
        if !io.port_released {
            io.port_released = true;
            io.next_rtcp = None;
            // The plane closes the socket at its next tick (≤ 20 ms); the pool hands ports out
            // round-robin and skips one still bound.
            self.media.send(Cmd::Detach { key: key.0 });
            self.ports.release(io.rtp_port);
        }
        if std::mem::take(&mut io.live) {
            if let Some(ip) = io.peer {
                if let Some(n) = self.live_peers.get_mut(&ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.live_peers.remove(&ip);
                    }
                }
            }
        }
    }

    fn released(&mut self, key: Option<CallKey>, local_rtp: SocketAddr) {
        if let Some(k) = key {
            self.call_ended(k);
        }
        match key.and_then(|k| self.io.remove(&k).map(|io| (k, io))) {
            Some((k, io)) => {
                if let Some(ip) = io.peer {
                    if let Some(n) = self.call_peers.get_mut(&ip) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            self.call_peers.remove(&ip);
                        }
                    }
                }
                self.media.send(Cmd::Detach { key: k.0 });
                if !io.port_released {
                    self.ports.release(io.rtp_port);
                }
            }
            None => {
                // The call was never created: give back what its setup bound.
                if let Some((port, _)) = self.bound.take() {
                    self.ports.release(port);
                } else {
                    self.ports.release(local_rtp.port());
                }
            }
        }
    }

    fn media_command(&mut self, key: CallKey, m: call::Media) {
        match m {
            call::Media::Start {
                remote,
                codec,
                payload_type,
                send,
                ..
            } => {
                let Some(io) = self.io.get_mut(&key) else {
                    return;
                };
                // A call starts its media once, after its socket is gone no more.
                if io.media_started || io.port_released {
                    return;
                }
                io.media_started = true;
                let law = match codec {
                    shared::sdp::Codec::Pcmu => shared::g711::Law::Ulaw,
                    shared::sdp::Codec::Pcma => shared::g711::Law::Alaw,
                };
                // RFC 3550 §6.2: the first report after half the minimum interval.
                io.next_rtcp = Some(self.clock.now() + rtcp_interval(io.ssrc, 0) / 2);
                self.media.send(Cmd::Start {
                    key: key.0,
                    law,
                    payload_type,
                    ssrc: io.ssrc,
                    seq0: io.seq0,
                    ts0: io.ts0,
                    remote,
                    send,
                    sent: Arc::clone(&io.sent),
                });
            }
            call::Media::Remote(remote) => self.media.send(Cmd::Remote { key: key.0, remote }),
            call::Media::Send(on) => self.media.send(Cmd::Sending { key: key.0, on }),
            call::Media::Stop => {
                let bye = self.io.get_mut(&key).and_then(|io| {
                    io.next_rtcp = None;
                    io.rtcp_to.take()
                });
                self.media.send(Cmd::Stop { key: key.0, bye });
            }
        }
    }

    fn event(&mut self, e: node::NodeEvent) {
        if matches!(e.kind, EventKind::CallEnded { .. }) {
            if let Some(key) = e.call {
                self.call_ended(key);
            }
        }
        match &e.kind {
            EventKind::CallOffered { caller, dialled } => info!(
                call = ?e.call_id.map(|c| c.to_string()), call_seq = e.call_seq,
                caller = %caller.as_ref().map(|c| c.masked().to_string()).unwrap_or_else(|| "anonymous".into()),
                dialled = %dialled.as_ref().map(ToString::to_string).unwrap_or_default(),
                "call.offered"
            ),
            EventKind::AnnouncementStarted {
                announcement_id,
                version,
            } => {
                info!(call = ?e.call_id.map(|c| c.to_string()), call_seq = e.call_seq, announcement = %announcement_id, version, "announcement.started")
            }
            EventKind::CallEnded {
                reason,
                duration_ms,
                ..
            } => {
                info!(call = ?e.call_id.map(|c| c.to_string()), call_seq = e.call_seq, reason = reason.as_str(), duration_ms, "call.ended")
            }
            EventKind::Dtmf { digit } => {
                debug!(call = ?e.call_id.map(|c| c.to_string()), call_seq = e.call_seq, digit = ?digit, "dtmf");
            }
            EventKind::CallbackExpired { callback_id } => {
                info!(callback = %callback_id, "callback.expired: waited longer than callbacks.max_age_s");
            }
            _ => {
                debug!(call = ?e.call_id.map(|c| c.to_string()), call_seq = e.call_seq, event = ?e.kind, "call event")
            }
        }
        if let Some(tx) = &self.to_link {
            let _ = tx.send(ToLink::Event(e));
        }
    }

    // ---- callbacks -------------------------------------------------------------------------

    /// Hands the node the callback zone's offsets for the coming weeks (at start, then
    /// hourly: the table reaches 40 days ahead, so a daylight-saving change is never missed).
    fn refresh_zone(&mut self) {
        let now = self.clock.now();
        if self
            .zone_at
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(3600))
        {
            return;
        }
        self.zone_at = Some(now);
        let table = crate::zone::table(&self.cfg.timezone, self.clock.wall());
        self.node.set_zone(table);
    }

    fn callback_work(&mut self, o: callback::Output) {
        match o {
            callback::Output::Store { id } => {
                let Some(entry) = self.node.queue().get(&id) else {
                    return;
                };
                let rec = entry.clone();
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
                let at = self.clock.wall();
                let window = self.node.queue().get(&id).map(|e| e.window);
                tokio::spawn(async move {
                    if let Err(e) = store.update_callback_state(id, state, at, window).await {
                        warn!(error = %e, "callback state not written");
                    }
                });
            }
            callback::Output::Remove { id, state } => {
                if state == callback::State::Expired {
                    info!(callback = %id, "callback expired");
                }
                let store = self.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.delete_callback(id).await {
                        warn!(error = %e, "callback record not deleted");
                    }
                });
            }
            // Without a link, booked callbacks stay Stored (durable, waiting); with one,
            // they are published and become Synced on PUBACK.
            callback::Output::Publish { id, position } => {
                let (Some(tx), Some(entry)) = (&self.to_link, self.node.queue().get(&id)) else {
                    return;
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
                    window: crate::zone::window_json(&self.cfg.timezone, entry.window),
                    language: (!entry.language.is_empty()).then(|| entry.language.to_string()),
                };
                let _ = tx.send(ToLink::Callback(Box::new(req)));
            }
        }
    }

    fn on_stored(&mut self, s: Stored) {
        if !s.ok {
            warn!(callback = %s.id, error = s.error.as_deref().unwrap_or("refused"), "callback record not written");
        }
        let now = self.now();
        if let Err(e) = self.node.handle_stored(now, &s.id, s.ok) {
            debug!(callback = %s.id, error = %e, "store answer refused by the node");
        }
        self.drain();
    }

    async fn restore_callbacks(&mut self) -> Result<(), AgentError> {
        let entries = self.store.callbacks().await?;
        let n = entries.len();
        let now = self.now();
        let report = self.node.restore_callbacks(now, entries);
        self.metrics.restored(self.node.queue());
        info!(restored = n, report = ?report, "callback queue restored from disk");
        self.callbacks_restored = true;
        self.drain();
        Ok(())
    }

    // ---- the CRM link and the control socket ----------------------------------------------

    fn on_link(&mut self, m: FromLink) {
        let now = self.now();
        if matches!(
            m,
            FromLink::Announcement { .. }
                | FromLink::Withdrawn(_)
                | FromLink::Audio { .. }
                | FromLink::AudioRemoved(_)
        ) {
            self.link_epoch += 1;
        }
        if let FromLink::CacheWritten(id) = &m {
            // The cache changed under any reload reading it now (see `link_epoch`).
            self.link_epoch += 1;
            if let Some(n) = self.cache_unwritten.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    self.cache_unwritten.remove(id);
                }
            }
            return;
        }
        let mut upsert = None;
        let input = match m {
            FromLink::Announcement { announcement, doc } => {
                let a = *announcement;
                info!(announcement = %a.id, version = a.version, "announcement received");
                upsert = Some((a.id.clone(), a.version));
                self.unsaved_doc = Some((a.id.clone(), a.version, doc));
                CrmInput::Announcement(announce::Input::Upsert(a))
            }
            FromLink::Withdrawn(id) => {
                info!(announcement = %id, "announcement withdrawn");
                CrmInput::Announcement(announce::Input::Withdraw(id))
            }
            FromLink::Audio { sha256, frames } => {
                self.audio.insert(sha256, frames);
                CrmInput::Announcement(announce::Input::AudioAvailable(sha256))
            }
            FromLink::AudioRemoved(sha256) => {
                self.audio.remove(&sha256);
                CrmInput::Announcement(announce::Input::AudioRemoved(sha256))
            }
            FromLink::Connected => CrmInput::Connected,
            FromLink::CacheWritten(_) => return,
            FromLink::CallbackSynced(id) => match CallbackId::new(&id) {
                Ok(id) => CrmInput::CallbackSynced(id),
                Err(_) => return,
            },
            FromLink::CallbackState {
                id,
                state,
                at,
                window,
            } => match CallbackId::new(&id) {
                Ok(id) => CrmInput::CallbackState {
                    id,
                    state,
                    at,
                    window,
                },
                Err(_) => {
                    warn!(callback = %id, "callback state for an invalid id");
                    return;
                }
            },
        };
        match self.node.handle_crm(now, input) {
            Ok(()) => {}
            Err(node::Error::Queue(e)) => {
                warn!(error = %e, "callback update from the CRM refused");
            }
            Err(e) => match &upsert {
                // The version rule refused it: the cached copy stays, and the link counts it.
                Some((id, version)) => {
                    if let Some(tx) = &self.to_link {
                        let _ = tx.send(ToLink::Rejected(format!(
                            "announcement {id} version {version}: {e}"
                        )));
                    }
                }
                None => debug!(error = %e, "CRM input refused"),
            },
        }
        self.drain();
        // Not stored (refused, or the same version again): nothing to write.
        self.unsaved_doc = None;
        self.refresh_views();
    }

    /// Hands a cache change the node asked for to the link's intake worker (which owns the
    /// announcement cache's writes). Without a link nothing reaches the node that would need one.
    fn ask_cache_write(&mut self, w: CacheWrite) {
        if let Some(tx) = &self.to_link {
            let id = match &w {
                CacheWrite::Announcement { id, .. } | CacheWrite::Remove(id) => id,
            };
            *self.cache_unwritten.entry(id.clone()).or_default() += 1;
            let _ = tx.send(ToLink::Cache(w));
        }
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Calls(reply) => {
                let now = self.clock.now();
                let mut list = Vec::new();
                self.node.calls().for_each(&mut |key, slot| {
                    if slot.is_ended() {
                        return;
                    }
                    let c = slot.call();
                    let stats = c.rtp_stats();
                    let peer = c.peer_report();
                    let sent = self
                        .io
                        .get(&key)
                        .map_or(0, |io| io.sent.load(std::sync::atomic::Ordering::Relaxed));
                    list.push(CallView {
                        call_id: c.id().to_string(),
                        caller: c.caller().map(ToString::to_string),
                        dialled: c.dialled().map(ToString::to_string),
                        state: phase_str(c.phase()).to_owned(),
                        age_ms: now.saturating_duration_since(c.started_at()).as_millis() as u64,
                        codec: c.codec().map(|c| {
                            match c {
                                shared::sdp::Codec::Pcmu => "PCMU",
                                shared::sdp::Codec::Pcma => "PCMA",
                            }
                            .to_owned()
                        }),
                        language: self
                            .node
                            .config()
                            .languages
                            .tag(slot.language())
                            .as_str()
                            .to_owned(),
                        packets_sent: sent,
                        packets_received: u64::from(stats.received),
                        lost: u64::from(stats.lost),
                        // Timestamp units of the 8 kHz clock.
                        jitter_ms: stats.jitter / 8,
                        rtcp_reports: peer.packets,
                        peer_lost: i64::from(peer.cumulative_lost),
                        peer_fraction_lost: peer.fraction_lost,
                        peer_jitter_ms: peer.jitter_ms,
                        rtt_ms: peer.rtt_ms,
                    });
                });
                let _ = reply.send(list);
            }
            Command::Callbacks(reply) => {
                let q = self.node.queue();
                let list = q
                    .iter()
                    .map(|e| CallbackView {
                        callback_id: e.id.to_string(),
                        callback_number: e.callback_number.to_string(),
                        caller: e.caller.as_ref().map(ToString::to_string),
                        dialled: e.dialled.as_ref().map(ToString::to_string),
                        requested_at_ms: e.requested_at.0,
                        state: e.state.as_str().to_owned(),
                        position: q.position(&e.id),
                        announcement_id: e.announcement.as_ref().map(ToString::to_string),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::CancelCallback { id, reply } => {
                let r = match CallbackId::new(&id) {
                    Ok(cid) => {
                        let now = self.now();
                        self.node.cancel_callback(now, &cid).map_err(|e| match e {
                            node::Error::Queue(q) => q.to_string(),
                            other => other.to_string(),
                        })
                    }
                    Err(_) => Err(format!("`{id}` is not a callback id")),
                };
                if r.is_ok() {
                    info!(callback = %id, "callback cancelled by a technician");
                }
                self.drain();
                let _ = reply.send(r);
            }
            Command::CacheState(reply) => {
                let _ = reply.send(CacheState {
                    audio: self.audio.keys().copied().collect(),
                    epoch: self.link_epoch,
                });
            }
            Command::Reload { update, reply } => {
                let applied = self.apply_reload(*update);
                let _ = reply.send(applied);
            }
        }
    }

    /// Applies what a reload may change while calls are up: the allow list and the rate
    /// limit from the next datagram on, the prompts for calls that start from now on (a call
    /// already up keeps its own), and what the announcement cache holds now.
    fn apply_reload(&mut self, u: LiveUpdate) -> ReloadApplied {
        self.cfg.allow = u.allow;
        self.cfg.deny_with_403 = u.deny_with_403;
        if u.rate_limit_per_source != self.cfg.rate_limit_per_source {
            self.cfg.rate_limit_per_source = u.rate_limit_per_source;
            self.limiter = RateLimiter::new(u.rate_limit_per_source);
        }
        self.prompts = u.prompts;
        let mut applied = ReloadApplied {
            calls: self.node.active_calls(),
            ..ReloadApplied::default()
        };
        let now = self.now();
        if u.epoch != self.link_epoch || !self.cache_unwritten.is_empty() {
            // The link wrote to the cache while the reload read it, or a write the node asked
            // for is still on its way: what the reload read may be older than what the node
            // holds, so the node's view stays.
            applied.announcements_skipped = true;
            self.publish_snapshot();
            return applied;
        }
        for (path, why) in &u.announcements.rejected {
            warn!(file = %path.display(), reason = %why, "announcement cache file skipped");
        }
        for (sha, frames) in u.announcements.audio {
            if self.audio.insert(sha, frames).is_none() {
                applied.audio_added += 1;
            }
            let _ = self.node.handle_crm(
                now,
                CrmInput::Announcement(announce::Input::AudioAvailable(sha)),
            );
        }
        // The node's version rule decides: an older or unchanged file changes nothing.
        let held = |node: &Node<HeapCalls>, id: &AnnouncementId| {
            let set = node.announcements();
            set.current(id).and_then(|h| set.get(h)).map(|a| a.version)
        };
        for (a, _text) in u.announcements.announcements {
            let id = a.id.clone();
            let before = held(&self.node, &id);
            match self
                .node
                .handle_crm(now, CrmInput::Announcement(announce::Input::Upsert(a)))
            {
                Ok(()) if held(&self.node, &id) != before => {
                    info!(announcement = %id, "announcement taken from the cache");
                    applied.announcements_updated += 1;
                }
                Ok(()) => {}
                Err(e) => debug!(announcement = %id, error = %e, "cached announcement not loaded"),
            }
        }
        if let Some(ids) = &u.cached_ids {
            let gone: Vec<AnnouncementId> = self
                .node
                .announcements()
                .iter()
                .filter(|(_, a, _)| !ids.contains(a.id.as_str()))
                .map(|(_, a, _)| a.id.clone())
                .collect();
            for id in gone {
                info!(announcement = %id, "announcement withdrawn: its cache file is gone");
                if self
                    .node
                    .handle_crm(now, CrmInput::Announcement(announce::Input::Withdraw(id)))
                    .is_ok()
                {
                    applied.announcements_withdrawn += 1;
                }
            }
        }
        self.drain();
        self.refresh_views();
        self.publish_snapshot();
        applied
    }

    /// Rebuilds the announcement views; publishes a snapshot at once when they changed (the
    /// CRM sees a new version's state within a second).
    fn refresh_views(&mut self) {
        let set = self.node.announcements();
        let views: Vec<AnnouncementView> = set
            .iter()
            .map(|(h, a, state)| AnnouncementView {
                id: a.id.to_string(),
                version: a.version,
                // An announcement scoped to other sites never plays here, whatever its state
                // is there.
                state: if self.node.plays_here(h) {
                    state.as_str()
                } else {
                    OTHER_SITE
                }
                .to_owned(),
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
                playing_version: (state == announce::State::Pending)
                    .then(|| set.fallback(&a.id).map(|(_, f)| f.version))
                    .flatten(),
                heard: self.metrics.announcement(a.id.as_str(), a.version),
            })
            .collect();
        if views != self.ann_views {
            self.ann_views = views;
            self.publish_snapshot();
        }
    }

    // ---- announcements ---------------------------------------------------------------------

    /// Reads the announcement cache once, at start-up; afterwards the link hands every change
    /// over as it caches it.
    fn load_announcements(&mut self) {
        let loaded =
            announcements::load_dir(&self.cfg.state_dir, self.cfg.max_audio_bytes, &|_| false);
        for (path, why) in &loaded.rejected {
            debug!(file = %path.display(), reason = %why, "announcement cache file skipped");
        }
        let now = self.now();
        for (sha, frames) in loaded.audio {
            self.audio.insert(sha, frames);
            let _ = self.node.handle_crm(
                now,
                CrmInput::Announcement(announce::Input::AudioAvailable(sha)),
            );
        }
        for (a, _text) in loaded.announcements {
            let id = a.id.clone();
            if let Err(e) = self
                .node
                .handle_crm(now, CrmInput::Announcement(announce::Input::Upsert(a)))
            {
                debug!(announcement = %id, error = %e, "cached announcement not loaded");
            }
        }
        self.drain();
        self.refresh_views();
    }
}

/// Random bits for tags and RTP start values (the hasher's random keys, salted).
fn random(hasher: &std::collections::hash_map::RandomState, clock: &Clock, salt: u64) -> u64 {
    let mut h = hasher.build_hasher();
    h.write_u64(salt);
    h.write_u64(clock.now().as_micros());
    h.finish()
}

/// The RTCP report interval for a call's `n`th report: RFC 3550 §6.2's 5 s minimum times a
/// factor in [0.5, 1.5) drawn from the SSRC and `n`, so calls answered together do not report
/// together.
fn rtcp_interval(ssrc: u32, n: u32) -> Duration {
    let mut x = ssrc ^ n.wrapping_mul(0x9E37_79B9);
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    Duration::from_millis(2_500 + u64::from(x % 5_000))
}

/// Whether a SIP datagram continues something already started, judged cheaply (no parse: the
/// rate limiter runs before parsing): a response, a CANCEL or ACK, or a request whose To
/// header has a tag. A forged one from an allowed source costs the node a parse and a 481.
fn continues_transaction_or_dialog(data: &[u8]) -> bool {
    if data.starts_with(b"SIP/2.0 ") || data.starts_with(b"CANCEL ") || data.starts_with(b"ACK ") {
        return true;
    }
    let head = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(data, |end| &data[..end]);
    head.split(|b| *b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let name_end = line.iter().position(|b| *b == b':');
        let Some(name_end) = name_end else {
            return false;
        };
        let name = line[..name_end].trim_ascii();
        (name.eq_ignore_ascii_case(b"to") || name.eq_ignore_ascii_case(b"t"))
            && line[name_end..]
                .windows(5)
                .any(|w| w.eq_ignore_ascii_case(b";tag="))
    })
}

/// Whether a SIP datagram belongs to a dialog that already exists: a response, or a request
/// with a To tag. A source taken out of `sip.allow` by a reload may still send these for the
/// calls it has up; it can start none.
fn continues_dialog(data: &[u8]) -> bool {
    match shared::sip::parse(data) {
        Ok(shared::sip::Message::Response(_)) => true,
        Ok(shared::sip::Message::Request(r)) => r.to_incoming().is_ok_and(|i| i.to_tag.is_some()),
        Err(_) => false,
    }
}

/// The state shown for an announcement whose scope excludes this node's site.
pub const OTHER_SITE: &str = "other_site";

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

fn call_id_for(wall_ms: i64, key: u64) -> u64 {
    // Unique per node across restarts: milliseconds since the epoch in the high bits, the
    // call counter in the low 20 bits.
    ((wall_ms.max(0) as u64) << 20) | (key & 0xF_FFFF)
}

async fn sleep_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::continues_transaction_or_dialog as continues;

    #[test]
    fn what_the_rate_limiter_lets_through_unmetered() {
        let invite = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
            From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n";
        assert!(!continues(invite));
        let bye = b"BYE sip:a@b SIP/2.0\r\nf: <sip:x@y>;tag=1\r\nt: <sip:a@b>;TAG=9\r\n\r\n";
        assert!(continues(bye));
        assert!(continues(b"SIP/2.0 200 OK\r\n\r\n"));
        assert!(continues(
            b"CANCEL sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n"
        ));
        assert!(continues(b"ACK sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\n"));
        // A tag in the body or in another header does not count.
        let tricky = b"OPTIONS sip:a@b SIP/2.0\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\n\
            Subject: To: x;tag=2\r\n\r\nTo: <sip:a@b>;tag=3";
        assert!(!continues(tricky));
        assert!(!continues(b""));
        assert!(!continues(b"\xff\xfe;tag="));
    }
}
