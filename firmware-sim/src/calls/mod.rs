//! `firmware-sim calls`: a SIP/RTP load generator that places real calls against an agent
//! the way a telephony gateway does, and measures what comes back.
//!
//! ## What one call does
//!
//! INVITE with an SDP offer (PCMU, PCMA, `telephone-event/8000`, ptime 20), retransmitted at
//! 500 ms doubling to 4 s until a response arrives; ACK on the final response; then, per
//! script, RFC 4733 key presses in our own RTP; BYE after `--hold` seconds (retransmitted
//! likewise). A BYE, REFER or OPTIONS from the agent is answered (REFER with 202 and then a
//! NOTIFY whose sipfrag says `SIP/2.0 200 OK`, as a gateway that completed the transfer).
//!
//! | script | keys (time after the 200 OK) | expected outcome on a default agent |
//! |---|---|---|
//! | `listen` | none | the caller hears the greeting/menu until `--hold` |
//! | `callback` | `1` at 0.5 s (barges into the greeting: "call me back"), `1` at 1.5 s (barges into the read-back of the caller ID: "confirm") | the agent books a callback and hangs up |
//! | `transfer` | `0` at 0.5 s ("agent") | the agent REFERs the call (needs `ivr.transfer_uri`) |
//! | `mixed` | call *n*: `n % 10` < 6 listen, < 9 callback, else transfer | |
//!
//! Every caller has its own number (`+1215` and seven digits made from the run and the call's
//! index), so callbacks do not collide as "already booked", within a run or across runs.
//!
//! ## How 10,000 calls fit in one process
//!
//! * **One SIP socket** for every call. A Call-ID carries the call's index, so a datagram finds
//!   its call by reading one header; one task owns all calls and a single timer heap.
//! * **A few RTP sockets shared by many calls** (one per [`CALLS_PER_RTP_SOCKET`] of
//!   concurrency): the offer names the shared socket's port, and what arrives is told apart
//!   by its source address, which is the agent's RTP address from the SDP answer. One task
//!   per socket, not per call, drains every readable datagram on each wake-up
//!   (`try_recv_from` until it would block) and timestamps each as it is read. Spreading calls
//!   over sockets keeps each socket's burst (the agent sends all calls' frames on the same
//!   20 ms tick) well inside the default 208 kB receive buffer.
//! * **Our own RTP only when needed**: key presses, plus an optional silence packet every
//!   `--keepalive` seconds. The agent's media timeout (`rtp.media_timeout_s`, 60 s) only
//!   counts after it has received RTP from the caller, so `listen` calls, which send none,
//!   are never ended by it; `callback`/`transfer` calls end within seconds of their keys. Use
//!   `--keepalive` when a script that sent keys must outlive the media timeout. What does
//!   end long `listen` calls is the IVR's no-input timeout (with the defaults, the menu is
//!   repeated a few times and the agent says goodbye): benchmarks raise `ivr.no_input_timeout_ms`
//!   and `ivr.max_retries`. Calls the agent ends are counted in `ended_by_agent`, not as
//!   failures.
//!
//! ## What is measured
//!
//! * **Setup latency**: first INVITE sent → 200 OK read.
//! * **RTP** per call: packets, loss from sequence-number gaps (RFC 3550 style extended
//!   sequence numbers; reordered packets are not loss), duplicates.
//! * **Jitter** (pacing deviation): for each packet that arrives in order, how far its
//!   distance from the previous in-order packet of the same call is from 20 ms × their
//!   sequence distance. It includes this process's own receive scheduling delay, so it is an
//!   upper bound on the agent's pacing error.
//!
//! The run fails (exit 1, `"ok": false`) when a call was not answered or an answered call
//! received no RTP at all.

mod sip;
mod stats;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket as StdUdpSocket};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use shared::dtmf::Digit;
use shared::g711::Law;
use shared::rtp::{PayloadType, RtpHeader, RtpPacket, Ssrc, TelephoneEvent};
use tokio::net::UdpSocket;

use self::sip::{Answer, Dialog, Local, Message, Request};
use self::stats::{Histogram, Stream, StreamTotals};

/// How many concurrent calls share one RTP receive socket.
pub const CALLS_PER_RTP_SOCKET: u32 = 50;
/// Most RTP receive sockets a run opens.
pub const MAX_RTP_SOCKETS: u32 = 512;

/// SIP timer T1 (first retransmission interval).
const T1: Duration = Duration::from_millis(500);
/// SIP timer T2 (longest retransmission interval).
const T2: Duration = Duration::from_secs(4);
/// How long a BYE waits for its response.
const BYE_TIMEOUT: Duration = Duration::from_secs(32);
/// Time between two packets of one RFC 4733 event.
const EVENT_PACKET_GAP: Duration = Duration::from_millis(20);
/// Packets per key press: three updates, three copies of the end packet.
const EVENT_PACKETS: u8 = 6;

/// What the simulated callers do once answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Script {
    /// Listen, press nothing, hang up after the hold time.
    Listen,
    /// Press 1 (call back), then 1 (confirm the number read back).
    Callback,
    /// Press 0 (transfer to an agent).
    Transfer,
    /// Six in ten calls listen, three book a callback, one asks for a transfer.
    Mixed,
}

impl Script {
    /// The script call `n` follows (`Mixed` resolved).
    #[must_use]
    pub fn for_call(self, n: u32) -> Script {
        match self {
            Script::Mixed => match n % 10 {
                0..=5 => Script::Listen,
                6..=8 => Script::Callback,
                _ => Script::Transfer,
            },
            s => s,
        }
    }

    /// The keys this script presses, with their time after the 200 OK.
    #[must_use]
    pub fn keys(self) -> &'static [(Duration, Digit)] {
        const CALLBACK: &[(Duration, Digit)] = &[
            (Duration::from_millis(500), Digit::D1),
            (Duration::from_millis(1500), Digit::D1),
        ];
        const TRANSFER: &[(Duration, Digit)] = &[(Duration::from_millis(500), Digit::D0)];
        match self {
            Script::Listen | Script::Mixed => &[],
            Script::Callback => CALLBACK,
            Script::Transfer => TRANSFER,
        }
    }
}

/// The `firmware-sim calls` command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The agent's SIP address, `HOST:PORT`.
    #[arg(long)]
    pub target: String,
    /// Calls to place in total.
    #[arg(long, default_value_t = 10)]
    pub calls: u32,
    /// Most calls up at once.
    #[arg(long, default_value_t = 10)]
    pub concurrency: u32,
    /// What callers do once answered.
    #[arg(long, value_enum, default_value_t = Script::Listen)]
    pub script: Script,
    /// Seconds from the 200 OK to our BYE.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// New calls per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds without a final response before a call counts as failed ("timeout").
    #[arg(long, default_value_t = 32.0)]
    pub timeout: f64,
    /// Send one silence packet every this many seconds on answered calls (0: never).
    #[arg(long, default_value_t = 0.0)]
    pub keepalive: f64,
    /// Print one JSON document instead of the text summary.
    #[arg(long)]
    pub json: bool,
}

/// What [`run`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The agent's SIP address.
    pub target: SocketAddr,
    /// Calls to place in total.
    pub calls: u32,
    /// Most calls up at once (at least 1).
    pub concurrency: u32,
    /// What callers do.
    pub script: Script,
    /// From the 200 OK to our BYE.
    pub hold: Duration,
    /// New calls per second (more than 0).
    pub rate: f64,
    /// Without a final response this long after the INVITE, a call has failed.
    pub invite_timeout: Duration,
    /// Period of the silence keepalive; `None`: none.
    pub keepalive: Option<Duration>,
}

impl Config {
    /// A config from the command line.
    ///
    /// # Errors
    /// [`Error::Args`] when the target does not resolve or a number is out of range.
    pub fn from_args(a: &Args) -> Result<Config, Error> {
        let target = a
            .target
            .to_socket_addrs()
            .map_err(|e| Error::Args(format!("--target {}: {e}", a.target)))?
            .next()
            .ok_or_else(|| Error::Args(format!("--target {}: no address", a.target)))?;
        let secs = |name: &str, v: f64| {
            if (0.0..1e7).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(Error::Args(format!(
                    "--{name} {v}: not a number of seconds"
                )))
            }
        };
        if a.concurrency == 0 {
            return Err(Error::Args("--concurrency must be at least 1".into()));
        }
        if !(a.rate.is_finite() && a.rate > 0.0) {
            return Err(Error::Args(format!("--rate {}: must be above 0", a.rate)));
        }
        let keepalive = secs("keepalive", a.keepalive)?;
        Ok(Config {
            target,
            calls: a.calls,
            concurrency: a.concurrency,
            script: a.script,
            hold: secs("hold", a.hold)?,
            rate: a.rate,
            invite_timeout: secs("timeout", a.timeout)?,
            keepalive: (!keepalive.is_zero()).then_some(keepalive),
        })
    }
}

/// Why a run could not take place at all (a failed call is a result, not an error).
#[derive(Debug)]
pub enum Error {
    /// A bad command-line value.
    Args(String),
    /// A socket could not be opened.
    Socket(std::io::Error),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Args(m) => write!(f, "{m}"),
            Error::Socket(e) => write!(f, "cannot open a socket: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// Three points of a distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Values counted.
    pub samples: u64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            samples: h.count(),
            p50: ms(h.quantile(0.5)),
            p99: ms(h.quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// RTP received from the agent over the whole run.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct RtpSummary {
    /// Packets received on answered calls.
    pub packets: u64,
    /// Packets the agent's sequence numbers say it sent.
    pub expected: u64,
    /// `expected - packets` summed per call.
    pub lost: u64,
    /// `lost / expected`.
    pub loss_ratio: f64,
    /// Answered calls that lost at least one packet.
    pub calls_with_loss: u64,
    /// Answered calls that received no RTP at all.
    pub calls_without_rtp: u64,
    /// Packets that arrived after a later one.
    pub reordered: u64,
    /// Duplicated packets.
    pub duplicates: u64,
    /// Packets from sources that were no call's agent address (or after the call ended).
    pub stray_packets: u64,
    /// Receive sockets used.
    pub sockets: u32,
}

/// What a run measured; `--json` prints it as one document with these field names.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// The agent's SIP address.
    pub target: String,
    /// The script.
    pub script: Script,
    /// Calls placed.
    pub calls: u32,
    /// Most calls up at once, as asked.
    pub concurrency: u32,
    /// Seconds from 200 OK to BYE, as asked.
    pub hold_s: f64,
    /// Calls per second, as asked.
    pub rate_cps: f64,
    /// Calls that got a 2xx to their INVITE.
    pub answered: u64,
    /// Calls that did not.
    pub failed: u64,
    /// Failed calls by reason: a status code (`"503"`) or `"timeout"`.
    pub failures: BTreeMap<String, u64>,
    /// Answered calls the agent hung up before our BYE (a booked callback, a goodbye).
    pub ended_by_agent: u64,
    /// Answered calls the agent REFERred (transfers).
    pub transfers: u64,
    /// Key presses sent (RFC 4733 events).
    pub keys_sent: u64,
    /// Our BYEs that got no response.
    pub bye_timeouts: u64,
    /// Most calls up at the same time (INVITE sent to call over).
    pub peak_concurrent: u64,
    /// From the first INVITE to the end of the last call, seconds.
    pub duration_s: f64,
    /// First INVITE → 200 OK.
    pub setup_ms: Percentiles,
    /// RTP from the agent.
    pub rtp: RtpSummary,
    /// Inter-packet arrival deviation from 20 ms (see the module docs).
    pub jitter_ms: Percentiles,
    /// Every call answered, and every answered call received RTP.
    pub ok: bool,
}

impl Summary {
    /// The process exit code for this result: success only when `ok`.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        if self.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// The summary as one pretty-printed JSON document (what `--json` prints).
///
/// # Errors
/// Never in practice (every field is a plain number, string or map of them).
pub fn json(s: &Summary) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(s)
}

/// The text summary.
#[must_use]
pub fn render(s: &Summary) -> String {
    use core::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "calls to {}: {} placed ({:?}, concurrency {}, hold {} s, {} calls/s) in {:.1} s, peak {} up",
        s.target, s.calls, s.script, s.concurrency, s.hold_s, s.rate_cps, s.duration_s, s.peak_concurrent
    );
    let _ = writeln!(
        o,
        "answered {}, failed {}{}",
        s.answered,
        s.failed,
        if s.failures.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                s.failures
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let _ = writeln!(
        o,
        "ended by the agent {}, transfers {}, keys sent {}, BYE timeouts {}",
        s.ended_by_agent, s.transfers, s.keys_sent, s.bye_timeouts
    );
    let p = |x: &Percentiles| {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            x.p50, x.p99, x.max
        )
    };
    let _ = writeln!(o, "setup (INVITE → 200): {}", p(&s.setup_ms));
    let r = &s.rtp;
    let _ = writeln!(
        o,
        "RTP: {} packets, {} lost ({:.4} %), {} calls with loss, {} calls without RTP, {} reordered, {} duplicates, {} stray",
        r.packets,
        r.lost,
        100.0 * r.loss_ratio,
        r.calls_with_loss,
        r.calls_without_rtp,
        r.reordered,
        r.duplicates,
        r.stray_packets
    );
    let _ = writeln!(o, "jitter (|inter-arrival − 20 ms|): {}", p(&s.jitter_ms));
    let _ = writeln!(o, "{}", if s.ok { "OK" } else { "FAILED" });
    o
}

/// Runs `firmware-sim calls`: prints the summary, returns 0 when every call was answered
/// and received RTP, 1 when not, 2 when the run could not start.
#[must_use]
pub fn main(args: &Args) -> ExitCode {
    let result = Config::from_args(args).and_then(|cfg| run(&cfg));
    match result {
        Ok(summary) => {
            if args.json {
                match json(&summary) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("firmware-sim calls: cannot render JSON: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", render(&summary));
            }
            summary.exit_code()
        }
        Err(e) => {
            eprintln!("firmware-sim calls: {e}");
            ExitCode::from(2)
        }
    }
}

/// Places the calls and measures them (blocks until the last call is over).
///
/// # Errors
/// [`Error::Socket`] when the SIP or RTP sockets cannot be opened or the runtime cannot start.
pub fn run(cfg: &Config) -> Result<Summary, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Socket)?;
    rt.block_on(run_async(cfg))
}

// A load generator measures real time: this is its one clock.
#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    Instant::now()
}

/// The address this host uses to reach `target` (no packet is sent to find it).
fn local_ip_for(target: SocketAddr) -> Result<std::net::IpAddr, Error> {
    let any: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let probe = StdUdpSocket::bind(any).map_err(Error::Socket)?;
    probe.connect(target).map_err(Error::Socket)?;
    Ok(probe.local_addr().map_err(Error::Socket)?.ip())
}

/// A socket on `ip`, as the reactor's receive side and a plain non-blocking clone for sending
/// (a send is then one `sendto`, never refused for lack of a readiness event yet).
fn bind(ip: std::net::IpAddr) -> Result<(UdpSocket, StdUdpSocket), Error> {
    let s = StdUdpSocket::bind(SocketAddr::new(ip, 0)).map_err(Error::Socket)?;
    s.set_nonblocking(true).map_err(Error::Socket)?;
    let send = s.try_clone().map_err(Error::Socket)?;
    Ok((UdpSocket::from_std(s).map_err(Error::Socket)?, send))
}

/// What one RTP receive socket has seen, shared between its receive task and the call task.
#[derive(Debug, Default)]
struct RtpState {
    /// Per source address (the agent's RTP address of one call).
    streams: HashMap<SocketAddr, Stream>,
    pacing: Histogram,
    not_rtp: u64,
}

#[derive(Debug)]
struct RtpSocket {
    socket: UdpSocket,
    send: StdUdpSocket,
    port: u16,
    state: Mutex<RtpState>,
}

impl RtpSocket {
    fn take(&self, from: SocketAddr) -> Option<Stream> {
        self.state.lock().ok()?.streams.remove(&from)
    }
}

/// One receive task: waits until the socket is readable, then reads and counts every queued
/// datagram before waiting again.
async fn receive(sock: Arc<RtpSocket>) {
    let mut buf = vec![0u8; 2048];
    loop {
        if sock.socket.readable().await.is_err() {
            return;
        }
        let Ok(mut st) = sock.state.lock() else {
            return;
        };
        let st = &mut *st;
        loop {
            match sock.socket.try_recv_from(&mut buf) {
                Ok((n, from)) => {
                    let now = clock();
                    let Some(pkt) = buf.get(..n).and_then(|d| RtpPacket::parse(d).ok()) else {
                        st.not_rtp += 1;
                        continue;
                    };
                    let (ssrc, seq) = (pkt.ssrc().0, pkt.sequence());
                    match st.streams.get_mut(&from) {
                        Some(s) => s.on_packet(now, ssrc, seq, &mut st.pacing),
                        None => {
                            st.streams.insert(from, Stream::new(now, ssrc, seq));
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors reported on the socket and the like: keep reading.
                Err(_) => {}
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE sent, no final response.
    Calling,
    /// 200 OK acknowledged.
    Confirmed,
    /// Our BYE sent.
    Ending,
}

/// Our own RTP stream of one call (key presses, keepalives).
#[derive(Debug, Clone, Copy)]
struct OwnRtp {
    ssrc: u32,
    seq: u16,
    /// Timestamp of the current key's event.
    event_ts: u32,
}

#[derive(Debug)]
struct Call {
    n: u32,
    script: Script,
    phase: Phase,
    invite_at: Instant,
    answered_at: Option<Instant>,
    retrans: Duration,
    provisional: bool,
    to_tag: Option<Box<str>>,
    answer: Option<Answer>,
    sock: usize,
    rtp: OwnRtp,
    ended_by_agent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    InviteRetransmit,
    InviteTimeout,
    /// Packet `packet` of key `key` of the script.
    Key {
        key: u8,
        packet: u8,
    },
    Keepalive,
    HoldEnd,
    ByeRetransmit,
    ByeTimeout,
}

/// Everything the call task owns.
struct Engine<'a> {
    cfg: &'a Config,
    local: Local,
    sip: UdpSocket,
    sip_send: StdUdpSocket,
    rtp: Vec<Arc<RtpSocket>>,
    calls: HashMap<u32, Call>,
    timers: BinaryHeap<Reverse<(Instant, u32, Timer)>>,
    out: String,
    rtp_buf: Vec<u8>,
    // Results.
    answered: u64,
    failures: BTreeMap<String, u64>,
    ended_by_agent: u64,
    transfers: u64,
    keys_sent: u64,
    bye_timeouts: u64,
    peak: u64,
    setup: Histogram,
    totals: StreamTotals,
    calls_with_loss: u64,
    calls_without_rtp: u64,
}

impl core::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("active", &self.calls.len())
            .finish_non_exhaustive()
    }
}

async fn run_async(cfg: &Config) -> Result<Summary, Error> {
    let ip = local_ip_for(cfg.target)?;
    let (sip, sip_send) = bind(ip)?;
    let sip_addr = sip.local_addr().map_err(Error::Socket)?;
    let n_rtp = cfg
        .concurrency
        .min(cfg.calls.max(1))
        .div_ceil(CALLS_PER_RTP_SOCKET)
        .clamp(1, MAX_RTP_SOCKETS);
    let mut rtp = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..n_rtp {
        let (socket, send) = bind(ip)?;
        let port = socket.local_addr().map_err(Error::Socket)?.port();
        let s = Arc::new(RtpSocket {
            socket,
            send,
            port,
            state: Mutex::new(RtpState::default()),
        });
        tasks.push(tokio::spawn(receive(Arc::clone(&s))));
        rtp.push(s);
    }
    let started = clock();
    // A tag distinct per run, so a previous run's retransmissions never match this one's calls.
    let run = std::process::id().wrapping_mul(65_599) ^ u32::from(sip_addr.port()) << 16;
    let mut e = Engine {
        cfg,
        local: Local {
            run: run | 1,
            sip: sip_addr,
            target: cfg.target,
        },
        sip,
        sip_send,
        rtp,
        calls: HashMap::new(),
        timers: BinaryHeap::new(),
        out: String::with_capacity(1500),
        rtp_buf: vec![0u8; 256],
        answered: 0,
        failures: BTreeMap::new(),
        ended_by_agent: 0,
        transfers: 0,
        keys_sent: 0,
        bye_timeouts: 0,
        peak: 0,
        setup: Histogram::default(),
        totals: StreamTotals::default(),
        calls_with_loss: 0,
        calls_without_rtp: 0,
    };
    e.run_calls().await;
    let duration = started.elapsed();
    for t in &tasks {
        t.abort();
    }
    Ok(e.summary(duration))
}

impl Engine<'_> {
    async fn run_calls(&mut self) {
        let interval = Duration::from_secs_f64(1.0 / self.cfg.rate);
        let mut next_start = clock();
        let mut placed: u32 = 0;
        let mut buf = vec![0u8; 65_536];
        loop {
            let now = clock();
            while placed < self.cfg.calls
                && self.calls.len() < self.cfg.concurrency as usize
                && next_start <= now
            {
                self.start_call(placed, now);
                placed += 1;
                // A run held back by the concurrency limit resumes at the rate, not in a burst.
                next_start = (next_start + interval).max(now.checked_sub(interval).unwrap_or(now));
            }
            while let Some(Reverse((at, n, timer))) = self.timers.peek().copied() {
                if at > now {
                    break;
                }
                self.timers.pop();
                self.on_timer(now, n, timer);
            }
            if placed >= self.cfg.calls && self.calls.is_empty() {
                return;
            }
            let mut wake = self.timers.peek().map(|Reverse((at, _, _))| *at);
            if placed < self.cfg.calls && self.calls.len() < self.cfg.concurrency as usize {
                wake = Some(wake.map_or(next_start, |w| w.min(next_start)));
            }
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let readable = tokio::select! {
                r = self.sip.readable() => r.is_ok(),
                () = sleep => false,
            };
            if readable {
                self.drain_sip(&mut buf);
            }
        }
    }

    fn drain_sip(&mut self, buf: &mut [u8]) {
        loop {
            match self.sip.try_recv_from(buf) {
                Ok((n, from)) => {
                    let now = clock();
                    if let Some(data) = buf.get(..n) {
                        self.on_sip(now, from, data);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {}
            }
        }
    }

    fn send_sip(&self, to: SocketAddr) {
        // A full send buffer loses this copy; the retransmission timer sends it again.
        let _ = self.sip_send.send_to(self.out.as_bytes(), to);
    }

    fn timer(&mut self, at: Instant, n: u32, t: Timer) {
        self.timers.push(Reverse((at, n, t)));
    }

    fn start_call(&mut self, n: u32, now: Instant) {
        let sock = (n as usize) % self.rtp.len();
        let port = self.rtp.get(sock).map_or(0, |s| s.port);
        let call = Call {
            n,
            script: self.cfg.script.for_call(n),
            phase: Phase::Calling,
            invite_at: now,
            answered_at: None,
            retrans: T1,
            provisional: false,
            to_tag: None,
            answer: None,
            sock,
            rtp: OwnRtp {
                ssrc: 0x5EED_0000 ^ n.wrapping_mul(0x9E37_79B9),
                seq: (n.wrapping_mul(7919) & 0x7FFF) as u16,
                event_ts: 0,
            },
            ended_by_agent: false,
        };
        self.local.write_request(
            Dialog { n, to_tag: None },
            Request::Invite { rtp_port: port },
            &mut self.out,
        );
        self.send_sip(self.cfg.target);
        self.calls.insert(n, call);
        self.peak = self.peak.max(self.calls.len() as u64);
        self.timer(now + T1, n, Timer::InviteRetransmit);
        self.timer(now + self.cfg.invite_timeout, n, Timer::InviteTimeout);
    }

    fn on_timer(&mut self, now: Instant, n: u32, t: Timer) {
        let Some(c) = self.calls.get_mut(&n) else {
            return;
        };
        let phase = c.phase;
        match t {
            Timer::InviteRetransmit if phase == Phase::Calling && !c.provisional => {
                c.retrans = (c.retrans * 2).min(T2);
                let next = now + c.retrans;
                self.local.write_request(
                    Dialog { n, to_tag: None },
                    Request::Invite {
                        rtp_port: self.rtp.get(c.sock).map_or(0, |s| s.port),
                    },
                    &mut self.out,
                );
                self.send_sip(self.cfg.target);
                self.timer(next, n, Timer::InviteRetransmit);
            }
            Timer::InviteTimeout if phase == Phase::Calling => {
                self.calls.remove(&n);
                *self.failures.entry("timeout".into()).or_default() += 1;
            }
            Timer::Key { key, packet } if phase == Phase::Confirmed => {
                if packet == 0 {
                    self.keys_sent += 1;
                }
                self.send_key(now, n, key, packet);
            }
            Timer::Keepalive if phase == Phase::Confirmed => {
                self.send_silence(n);
                if let Some(k) = self.cfg.keepalive {
                    self.timer(now + k, n, Timer::Keepalive);
                }
            }
            Timer::HoldEnd if phase == Phase::Confirmed => {
                c.phase = Phase::Ending;
                c.retrans = T1;
                self.send_bye(n);
                self.timer(now + T1, n, Timer::ByeRetransmit);
                self.timer(now + BYE_TIMEOUT, n, Timer::ByeTimeout);
            }
            Timer::ByeRetransmit if phase == Phase::Ending => {
                c.retrans = (c.retrans * 2).min(T2);
                let next = now + c.retrans;
                self.send_bye(n);
                self.timer(next, n, Timer::ByeRetransmit);
            }
            Timer::ByeTimeout if phase == Phase::Ending => {
                self.bye_timeouts += 1;
                self.finish(n);
            }
            _ => {}
        }
    }

    fn send_bye(&mut self, n: u32) {
        let Some(c) = self.calls.get(&n) else {
            return;
        };
        self.local.write_request(
            Dialog {
                n,
                to_tag: c.to_tag.as_deref(),
            },
            Request::Bye,
            &mut self.out,
        );
        self.send_sip(self.cfg.target);
    }

    /// RTP timestamp of call `c` at `now` (8 kHz since its answer).
    fn rtp_ts(c: &Call, now: Instant) -> u32 {
        let since = c
            .answered_at
            .map_or(Duration::ZERO, |a| now.saturating_duration_since(a));
        ((since.as_micros() / 125) as u32).wrapping_add(c.rtp.ssrc.rotate_left(7))
    }

    fn send_key(&mut self, now: Instant, n: u32, key: u8, packet: u8) {
        let Some(c) = self.calls.get_mut(&n) else {
            return;
        };
        let Some(&(_, digit)) = c.script.keys().get(usize::from(key)) else {
            return;
        };
        let Some(answer) = c.answer else {
            return;
        };
        let Some(pt) = answer.event_pt.and_then(PayloadType::new) else {
            return;
        };
        if packet == 0 {
            c.rtp.event_ts = Self::rtp_ts(c, now);
        }
        let end = packet >= 3;
        let duration = 160 * u16::from(packet.min(3) + 1);
        let header = RtpHeader {
            marker: packet == 0,
            payload_type: pt,
            sequence: c.rtp.seq,
            timestamp: c.rtp.event_ts,
            ssrc: Ssrc(c.rtp.ssrc),
        };
        c.rtp.seq = c.rtp.seq.wrapping_add(1);
        let mut payload = [0u8; 4];
        let ok = TelephoneEvent::for_digit(digit, end, 10, duration)
            .is_some_and(|ev| ev.emit(&mut payload).is_ok());
        if ok {
            if let Ok(len) = header.emit(&payload, &mut self.rtp_buf) {
                if let (Some(sock), Some(data)) = (self.rtp.get(c.sock), self.rtp_buf.get(..len)) {
                    let _ = sock.send.send_to(data, answer.rtp);
                }
            }
        }
        if packet + 1 < EVENT_PACKETS {
            self.timer(
                now + EVENT_PACKET_GAP,
                n,
                Timer::Key {
                    key,
                    packet: packet + 1,
                },
            );
        }
    }

    fn send_silence(&mut self, n: u32) {
        let now = clock();
        let Some(c) = self.calls.get_mut(&n) else {
            return;
        };
        let Some(answer) = c.answer else {
            return;
        };
        let law = if answer.audio_pt == 8 {
            Law::Alaw
        } else {
            Law::Ulaw
        };
        let Some(pt) = PayloadType::new(answer.audio_pt) else {
            return;
        };
        let header = RtpHeader {
            marker: false,
            payload_type: pt,
            sequence: c.rtp.seq,
            timestamp: Self::rtp_ts(c, now),
            ssrc: Ssrc(c.rtp.ssrc),
        };
        c.rtp.seq = c.rtp.seq.wrapping_add(1);
        if let Ok(len) = header.emit(&[law.silence(); 160], &mut self.rtp_buf) {
            if let (Some(sock), Some(data)) = (self.rtp.get(c.sock), self.rtp_buf.get(..len)) {
                let _ = sock.send.send_to(data, answer.rtp);
            }
        }
    }

    fn on_sip(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(msg) = Message::parse(data) else {
            return;
        };
        let n = self.local.index_of(msg.call_id);
        match msg.status {
            Some(status) => {
                if let Some(n) = n {
                    self.on_response(now, n, status, &msg);
                }
            }
            None => self.on_request(now, n, from, &msg),
        }
    }

    fn on_response(&mut self, now: Instant, n: u32, status: u16, msg: &Message<'_>) {
        let Some(c) = self.calls.get_mut(&n) else {
            // A late 200 for a call given up on: acknowledge it and hang up, so the agent
            // does not keep the call.
            if msg.method == "INVITE" && (200..300).contains(&status) {
                let d = Dialog {
                    n,
                    to_tag: msg.to_tag,
                };
                self.local
                    .write_request(d, Request::Ack { for_2xx: true }, &mut self.out);
                self.send_sip(self.cfg.target);
                self.local.write_request(d, Request::Bye, &mut self.out);
                self.send_sip(self.cfg.target);
            }
            return;
        };
        let phase = c.phase;
        match (msg.method, status) {
            ("INVITE", 100..=199) => c.provisional = true,
            ("INVITE", 200..=299) => {
                if phase == Phase::Calling {
                    c.phase = Phase::Confirmed;
                    c.answered_at = Some(now);
                    c.to_tag = msg.to_tag.map(Into::into);
                    c.answer = sip::parse_answer(msg.body);
                    self.answered += 1;
                    self.setup
                        .record_duration(now.saturating_duration_since(c.invite_at));
                    let keys = c.script.keys();
                    for (i, (after, _)) in keys.iter().enumerate() {
                        let key = u8::try_from(i).unwrap_or(u8::MAX);
                        self.timers
                            .push(Reverse((now + *after, n, Timer::Key { key, packet: 0 })));
                    }
                    if let Some(k) = self.cfg.keepalive {
                        self.timers.push(Reverse((now + k, n, Timer::Keepalive)));
                    }
                    self.timers
                        .push(Reverse((now + self.cfg.hold, n, Timer::HoldEnd)));
                }
                let d = Dialog {
                    n,
                    to_tag: msg.to_tag,
                };
                self.local
                    .write_request(d, Request::Ack { for_2xx: true }, &mut self.out);
                self.send_sip(self.cfg.target);
            }
            ("INVITE", 300..=699) => {
                let d = Dialog {
                    n,
                    to_tag: msg.to_tag,
                };
                self.local
                    .write_request(d, Request::Ack { for_2xx: false }, &mut self.out);
                self.send_sip(self.cfg.target);
                if phase == Phase::Calling {
                    self.calls.remove(&n);
                    *self.failures.entry(status.to_string()).or_default() += 1;
                }
            }
            ("BYE", 200..=699) if phase == Phase::Ending => self.finish(n),
            _ => {}
        }
    }

    fn on_request(&mut self, _now: Instant, n: Option<u32>, from: SocketAddr, msg: &Message<'_>) {
        let call = match n {
            Some(n) => self.calls.get_mut(&n),
            None => None,
        };
        let Some(c) = call else {
            if msg.method != "ACK" {
                msg.write_response(481, "Call/Transaction Does Not Exist", &mut self.out);
                self.send_sip(from);
            }
            return;
        };
        let n = c.n;
        match msg.method {
            "BYE" => {
                let phase = c.phase;
                c.ended_by_agent = phase == Phase::Confirmed;
                msg.write_response(200, "OK", &mut self.out);
                self.send_sip(from);
                if phase != Phase::Calling {
                    self.finish(n);
                }
            }
            "REFER" => {
                let to_tag = c.to_tag.clone();
                msg.write_response(202, "Accepted", &mut self.out);
                self.send_sip(from);
                self.transfers += 1;
                let d = Dialog {
                    n,
                    to_tag: to_tag.as_deref(),
                };
                self.local
                    .write_request(d, Request::NotifyReferOk, &mut self.out);
                self.send_sip(self.cfg.target);
            }
            "ACK" => {}
            _ => {
                msg.write_response(200, "OK", &mut self.out);
                self.send_sip(from);
            }
        }
    }

    /// The call is over: collect its RTP figures and free its slot.
    fn finish(&mut self, n: u32) {
        let Some(c) = self.calls.remove(&n) else {
            return;
        };
        if c.ended_by_agent {
            self.ended_by_agent += 1;
        }
        let stream = c
            .answer
            .and_then(|a| self.rtp.get(c.sock).and_then(|s| s.take(a.rtp)));
        let t = stream.map(|s| s.totals()).unwrap_or_default();
        if t.received == 0 {
            self.calls_without_rtp += 1;
        }
        if t.lost() > 0 {
            self.calls_with_loss += 1;
        }
        self.totals.received += t.received;
        self.totals.expected += t.expected;
        self.totals.reordered += t.reordered;
        self.totals.duplicates += t.duplicates;
    }

    fn summary(&self, duration: Duration) -> Summary {
        let mut pacing = Histogram::default();
        let mut stray = 0;
        for s in &self.rtp {
            if let Ok(st) = s.state.lock() {
                pacing.merge(&st.pacing);
                stray += st.not_rtp;
                stray += st
                    .streams
                    .values()
                    .map(|s| s.totals().received)
                    .sum::<u64>();
            }
        }
        let failed: u64 = self.failures.values().sum();
        let lost = self.totals.lost();
        let rtp = RtpSummary {
            packets: self.totals.received,
            expected: self.totals.expected,
            lost,
            loss_ratio: if self.totals.expected == 0 {
                0.0
            } else {
                lost as f64 / self.totals.expected as f64
            },
            calls_with_loss: self.calls_with_loss,
            calls_without_rtp: self.calls_without_rtp,
            reordered: self.totals.reordered,
            duplicates: self.totals.duplicates,
            stray_packets: stray,
            sockets: u32::try_from(self.rtp.len()).unwrap_or(u32::MAX),
        };
        Summary {
            target: self.cfg.target.to_string(),
            script: self.cfg.script,
            calls: self.cfg.calls,
            concurrency: self.cfg.concurrency,
            hold_s: self.cfg.hold.as_secs_f64(),
            rate_cps: self.cfg.rate,
            answered: self.answered,
            failed,
            failures: self.failures.clone(),
            ended_by_agent: self.ended_by_agent,
            transfers: self.transfers,
            keys_sent: self.keys_sent,
            bye_timeouts: self.bye_timeouts,
            peak_concurrent: self.peak,
            duration_s: duration.as_secs_f64(),
            setup_ms: Percentiles::of(&self.setup),
            rtp,
            jitter_ms: Percentiles::of(&pacing),
            ok: failed == 0
                && self.answered == u64::from(self.cfg.calls)
                && self.calls_without_rtp == 0,
        }
    }
}
