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
//!   per socket, not per call, drains every readable datagram on each wake-up (`recvmmsg`,
//!   64 at a time, until it would block). Spreading calls over sockets keeps each socket's
//!   burst (the agent sends all calls' frames on the same 20 ms tick) well inside the
//!   receive buffer.
//! * **Kernel receive timestamps**: the sockets ask for `SO_TIMESTAMPNS`, and each datagram's
//!   arrival time is the kernel's (`"timestamps": "kernel"` in the JSON), so this process's
//!   own scheduling delay is not in the measurement; a receive task may then let datagrams
//!   queue for 10 ms between reads, which keeps its CPU low at 500,000 packets/s. If the
//!   kernel refuses the option, arrival times are read after each `recvmmsg`
//!   (`"timestamps": "user"`, with the reason in `timestamps_fallback`).
//! * **RTP back** (`--rtp-back`, what real gateways do): every answered call sends 50
//!   packets/s of 160-byte G.711 silence (the payload type of the agent's answer) to the
//!   agent's RTP address, from the shared socket its offer named (the agent latches onto that
//!   source), with its own SSRC, sequence numbers and timestamps. One std thread paces all
//!   calls on absolute 20 ms deadlines (`clock_nanosleep(TIMER_ABSTIME)`) and sends each
//!   socket's packets with one `sendmmsg` per tick: 10,000 calls cost about 200 system calls
//!   per tick. Key presses go into the same stream (event packets replace the audio packets
//!   of their ticks), so the agent, which tracks one inbound stream per call, hears them.
//!   `rtp_back` in the JSON counts what was sent (and what a full send buffer refused).
//! * **Without `--rtp-back`, our own RTP only when needed**: key presses, plus an optional
//!   silence packet every `--keepalive` seconds. The agent's media timeout
//!   (`rtp.media_timeout_s`, 60 s) only counts after it has received RTP from the caller, so
//!   `listen` calls, which send none, are never ended by it; `callback`/`transfer` calls end
//!   within seconds of their keys. Use `--keepalive` (or `--rtp-back`) when a script that sent
//!   keys must outlive the media timeout. What does end long `listen` calls is the IVR's
//!   no-input timeout (with the defaults, the menu is repeated a few times and the agent says
//!   goodbye): benchmarks raise `ivr.no_input_timeout_ms` and `ivr.max_retries`. Calls the
//!   agent ends are counted in `ended_by_agent`, not as failures.
//!
//! ## What is measured
//!
//! * **Setup latency**: first INVITE sent → 200 OK read.
//! * **RTP** per call: packets, loss from sequence-number gaps (RFC 3550 style extended
//!   sequence numbers; reordered packets are not loss), duplicates.
//! * **Jitter** (pacing deviation): for each packet that arrives in order, how far its
//!   distance from the previous in-order packet of the same call is from 20 ms × their
//!   sequence distance, from the kernel's receive timestamps (see above). With user-space
//!   timestamps it includes this process's own receive scheduling delay, so it is an upper
//!   bound on the agent's pacing error.
//! * **Pacing over time** (`--series-ms W`): the same deviation per W ms window of arrival
//!   time since the run started (`pacing_series`: p50/p99/max per window, empty windows
//!   included), with `started_unix_s` to line two runs up: how a spike of new calls from
//!   another process affects the calls already up, before, during and after it.
//! * **Refusals**: final 503s are counted apart (`refused_503`: how many, how many carried
//!   Retry-After and the largest, first INVITE → 503 latency) and are not in `failed`.
//!
//! The run fails (exit 1, `"ok": false`) when a call timed out (no final response within
//! `--timeout`) or got another final failure, when an answered call received no RTP at all,
//! or when a call was refused with 503, unless `--expect-refusals` says refusals are the
//! point (a spike against a full agent).

mod back;
mod sip;
mod stats;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::IoSliceMut;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket as StdUdpSocket};
use std::net::{SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    recvmmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage,
};
use nix::sys::time::TimeSpec;
use nix::time::ClockId;
use serde::Serialize;
use shared::dtmf::Digit;
use shared::g711::Law;
use shared::rtp::{PayloadType, RtpHeader, RtpPacket, Ssrc, TelephoneEvent};
use tokio::io::Interest;
use tokio::net::UdpSocket;

pub use self::back::BackSummary;
use self::back::{BackCall, Counters, Lane, Origin};
use self::sip::{Answer, Dialog, Local, Message, Request};
use self::stats::{Histogram, Nanos, Series, Stream, StreamTotals};

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
const EVENT_PACKETS: u8 = back::EVENT_PACKETS;
/// Datagrams one `recvmmsg` reads at most.
const RECV_BATCH: usize = 64;
/// Room for one received datagram (the agent's are 172 bytes).
const RECV_BUF: usize = 512;
/// With kernel receive timestamps, how long a receive task lets datagrams queue after a
/// drain before reading again: the timestamps do not depend on when we read, so fewer,
/// fuller `recvmmsg` calls cost less (50 calls' 20 ms bursts fit the receive buffer).
const RECV_COALESCE: Duration = Duration::from_millis(10);
/// Receive buffer asked for each shared RTP socket (the kernel caps it at `rmem_max`).
const RECV_BUFFER_BYTES: usize = 1 << 20;

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
    /// Send one silence packet every this many seconds on answered calls (0: never; not
    /// needed with --rtp-back).
    #[arg(long, default_value_t = 0.0)]
    pub keepalive: f64,
    /// Send RTP back like a real gateway: every answered call sends 50 packets/s of G.711
    /// silence (its own SSRC) to the agent from the shared socket its offer named, key
    /// presses included in that stream.
    #[arg(long)]
    pub rtp_back: bool,
    /// Calls refused with 503 are expected (a spike against a full agent): they do not fail
    /// the run. Timeouts and other refusals still do.
    #[arg(long)]
    pub expect_refusals: bool,
    /// Also report the pacing deviation per window of this many milliseconds since the run
    /// started (`pacing_series` in the JSON; 0: off).
    #[arg(long, default_value_t = 0)]
    pub series_ms: u64,
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
    /// Answered calls send 50 packets/s of RTP back to the agent.
    pub rtp_back: bool,
    /// 503 refusals do not fail the run.
    pub expect_refusals: bool,
    /// Window of the pacing series; `None`: no series.
    pub series: Option<Duration>,
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
            rtp_back: a.rtp_back,
            expect_refusals: a.expect_refusals,
            series: (a.series_ms > 0).then(|| Duration::from_millis(a.series_ms)),
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

/// Final 503 responses to our INVITEs (the agent full or overloaded): counted apart from
/// failures, which they are not with `--expect-refusals`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Refusals {
    /// INVITEs answered 503.
    pub count: u64,
    /// Of those, 503s with a Retry-After header.
    pub with_retry_after: u64,
    /// The largest Retry-After seen, seconds.
    pub retry_after_max_s: Option<u32>,
    /// First INVITE sent → 503 read.
    pub latency_ms: Percentiles,
}

/// Counting 503s as they come.
#[derive(Debug, Clone, Default)]
struct RefusalCounter {
    count: u64,
    with_retry_after: u64,
    retry_after_max_s: Option<u32>,
    latency: Histogram,
}

impl RefusalCounter {
    /// A 503 with `retry_after` seconds (if it had the header), `latency` after the first
    /// INVITE.
    fn record(&mut self, retry_after: Option<u32>, latency: Duration) {
        self.count += 1;
        if let Some(ra) = retry_after {
            self.with_retry_after += 1;
            self.retry_after_max_s = Some(self.retry_after_max_s.map_or(ra, |m| m.max(ra)));
        }
        self.latency.record_duration(latency);
    }

    fn summary(&self) -> Refusals {
        Refusals {
            count: self.count,
            with_retry_after: self.with_retry_after,
            retry_after_max_s: self.retry_after_max_s,
            latency_ms: Percentiles::of(&self.latency),
        }
    }
}

/// The pacing deviation of one time window.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct SeriesPoint {
    /// Start of the window, seconds since the run started (`started_unix_s`).
    pub t_s: f64,
    /// In-order packets that arrived in it.
    pub samples: u64,
    /// Median deviation, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Largest, ms.
    pub max: f64,
}

/// `--series-ms`: the pacing deviation window by window, so the effect of something that
/// happened during the run (a spike of new calls) on the calls already up can be read.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PacingSeries {
    /// Window length, ms.
    pub window_ms: u64,
    /// Every window from the first packet's to the last one's, empty ones included.
    pub windows: Vec<SeriesPoint>,
}

impl PacingSeries {
    fn of(s: &Series) -> PacingSeries {
        let w = s.window();
        PacingSeries {
            window_ms: u64::try_from(w.as_millis()).unwrap_or(u64::MAX),
            windows: s
                .windows()
                .into_iter()
                .map(|(i, h)| {
                    let p = Percentiles::of(&h);
                    SeriesPoint {
                        t_s: i as f64 * w.as_secs_f64(),
                        samples: p.samples,
                        p50: p.p50,
                        p99: p.p99,
                        max: p.max,
                    }
                })
                .collect(),
        }
    }
}

/// Whether a run went as it should: every call answered or (with `expect_refusals`) refused
/// with 503, nothing else failed (timeouts, other statuses), every answered call got RTP.
fn run_ok(
    calls: u32,
    answered: u64,
    refused_503: u64,
    failed: u64,
    calls_without_rtp: u64,
    expect_refusals: bool,
) -> bool {
    let refused_ok = if expect_refusals { refused_503 } else { 0 };
    failed == 0
        && (expect_refusals || refused_503 == 0)
        && answered + refused_ok == u64::from(calls)
        && calls_without_rtp == 0
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
    /// Answered calls sent RTP back (`--rtp-back`).
    pub rtp_back: BackSummary,
    /// 503s do not fail the run (`--expect-refusals`).
    pub expect_refusals: bool,
    /// Wall-clock time of the run's start (Unix seconds), to line up two runs' series.
    pub started_unix_s: f64,
    /// Calls that got a 2xx to their INVITE.
    pub answered: u64,
    /// Calls refused with 503 (not in `failed`).
    pub refused_503: Refusals,
    /// Calls neither answered nor refused with 503.
    pub failed: u64,
    /// Failed calls by reason: a status code (`"486"`) or `"timeout"` (no final response
    /// within `--timeout`).
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
    /// The clock of the arrival times: `"kernel"` (`SO_TIMESTAMPNS`) or `"user"` (read by
    /// this process after `recvmmsg`).
    pub timestamps: String,
    /// Why the kernel's timestamps were not used (`null` when they were).
    pub timestamps_fallback: Option<String>,
    /// The pacing deviation per window (`--series-ms`; `null` without).
    pub pacing_series: Option<PacingSeries>,
    /// Every call answered (or, with `--expect-refusals`, refused with 503), no timeout or
    /// other failure, and every answered call received RTP.
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
    let r = &s.refused_503;
    if r.count > 0 || s.expect_refusals {
        let _ = writeln!(
            o,
            "refused with 503: {} ({} with Retry-After, max {} s), INVITE → 503: {}",
            r.count,
            r.with_retry_after,
            r.retry_after_max_s.map_or("-".into(), |v| v.to_string()),
            p(&r.latency_ms)
        );
    }
    let b = &s.rtp_back;
    if b.enabled {
        let _ = writeln!(
            o,
            "RTP back: {} packets in {} sendmmsg calls over {} ticks ({} unsent, {} errors, {} late ticks skipped)",
            b.packets, b.sendmmsg_calls, b.ticks, b.unsent, b.errors, b.late_ticks
        );
    }
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
    let _ = writeln!(
        o,
        "jitter (|inter-arrival − 20 ms|, {} timestamps{}): {}",
        s.timestamps,
        s.timestamps_fallback
            .as_deref()
            .map_or(String::new(), |w| format!(": {w}")),
        p(&s.jitter_ms)
    );
    if let Some(series) = &s.pacing_series {
        for w in &series.windows {
            let _ = writeln!(
                o,
                "  t={:>7.1} s: {} samples, p99 {:.2} ms, max {:.2} ms",
                w.t_s, w.samples, w.p99, w.max
            );
        }
    }
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

/// The run's time base: arrival times are nanoseconds since `start`, whether the kernel
/// (wall clock) or this process (monotonic clock) took them.
#[derive(Debug, Clone, Copy)]
struct RunClock {
    start: Instant,
    start_unix_ns: u64,
}

impl RunClock {
    fn new() -> RunClock {
        RunClock {
            start: clock(),
            start_unix_ns: ClockId::CLOCK_REALTIME.now().map_or(0, back::ns_of),
        }
    }

    /// Now, read by this process.
    fn now(&self) -> Nanos {
        u64::try_from(clock().saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A kernel receive timestamp (`CLOCK_REALTIME`).
    fn of_kernel(&self, ts: TimeSpec) -> Nanos {
        back::ns_of(ts).saturating_sub(self.start_unix_ns)
    }
}

/// What one RTP receive socket has seen, shared between its receive task and the call task.
#[derive(Debug, Default)]
struct RtpState {
    /// Per source address (the agent's RTP address of one call).
    streams: HashMap<SocketAddr, Stream>,
    pacing: Histogram,
    /// The current window(s) of the pacing series (older ones go to the run's series).
    series: Option<Series>,
    not_rtp: u64,
    /// Packets that came without a kernel timestamp although the socket asked for them.
    user_stamped: u64,
}

#[derive(Debug)]
struct RtpSocket {
    socket: UdpSocket,
    /// The sending side: key presses, keepalives, and the back-RTP sender thread.
    lane: Arc<Lane>,
    send: StdUdpSocket,
    port: u16,
    /// `SO_TIMESTAMPNS` is on.
    kernel_ts: bool,
    state: Mutex<RtpState>,
}

impl RtpSocket {
    fn take(&self, from: SocketAddr) -> Option<Stream> {
        self.state.lock().ok()?.streams.remove(&from)
    }
}

fn std_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// Counts one datagram that arrived `at` from `from`.
fn count_packet(st: &mut RtpState, at: Nanos, from: Option<SocketAddr>, data: &[u8]) {
    let (Some(from), Ok(pkt)) = (from, RtpPacket::parse(data)) else {
        st.not_rtp += 1;
        return;
    };
    let (ssrc, seq) = (pkt.ssrc().0, pkt.sequence());
    match st.streams.get_mut(&from) {
        Some(s) => {
            if let Some(us) = s.on_packet(at, ssrc, seq, &mut st.pacing) {
                if let Some(series) = st.series.as_mut() {
                    series.record(at, us);
                }
            }
        }
        None => {
            st.streams.insert(from, Stream::new(at, ssrc, seq));
        }
    }
}

/// One `recvmmsg` (non-blocking) on `sock`: counts what it read, returns how many datagrams
/// and the latest arrival time, or `WouldBlock` when nothing was queued.
fn receive_batch(
    sock: &RtpSocket,
    run_clock: &RunClock,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bufs: &mut [[u8; RECV_BUF]],
) -> std::io::Result<(usize, Nanos)> {
    let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
        bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
    let msgs = recvmmsg(
        sock.socket.as_raw_fd(),
        headers,
        iovs.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )
    .map_err(std::io::Error::from)?;
    let user_now = run_clock.now();
    let Ok(mut st) = sock.state.lock() else {
        return Ok((0, user_now));
    };
    let st = &mut *st;
    let mut n = 0;
    let mut latest = 0;
    for m in msgs {
        n += 1;
        let kernel = if sock.kernel_ts {
            m.cmsgs().ok().and_then(|mut c| {
                c.find_map(|c| match c {
                    ControlMessageOwned::ScmTimestampns(ts) => Some(run_clock.of_kernel(ts)),
                    _ => None,
                })
            })
        } else {
            None
        };
        let at = kernel.unwrap_or_else(|| {
            if sock.kernel_ts {
                st.user_stamped += 1;
            }
            user_now
        });
        latest = latest.max(at);
        let data = m.iovs().next().unwrap_or(&[]);
        count_packet(st, at, m.address.as_ref().and_then(std_addr), data);
    }
    Ok((n, latest))
}

/// Reads every queued datagram of `sock`; returns the latest arrival time, if any.
fn drain(sock: &RtpSocket, run_clock: &RunClock, bufs: &mut [[u8; RECV_BUF]]) -> Option<Nanos> {
    // nix's headers hold raw pointers (not `Send`): made per wake-up, never kept across an
    // await.
    let mut headers =
        MultiHeaders::<SockaddrStorage>::preallocate(RECV_BATCH, Some(nix::cmsg_space!(TimeSpec)));
    let mut latest = None;
    loop {
        let r = sock.socket.try_io(Interest::READABLE, || {
            receive_batch(sock, run_clock, &mut headers, bufs)
        });
        match r {
            Ok((_, at)) => latest = Some(latest.map_or(at, |l: Nanos| l.max(at))),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return latest,
            // ICMP errors reported on the socket and the like: keep reading.
            Err(_) => {}
        }
    }
}

/// One receive task: waits until the socket is readable, then reads and counts every queued
/// datagram (`recvmmsg`, up to 64 at a time) before waiting again. With kernel timestamps it
/// then lets datagrams queue for [`RECV_COALESCE`]: when we read does not change what is
/// measured. Finished windows of the pacing series go to the run's series.
async fn receive(sock: Arc<RtpSocket>, run_clock: RunClock, series: Option<Arc<Mutex<Series>>>) {
    let mut bufs = vec![[0u8; RECV_BUF]; RECV_BATCH];
    loop {
        if sock.socket.readable().await.is_err() {
            return;
        }
        let latest = drain(&sock, &run_clock, &mut bufs);
        if let (Some(at), Some(run_series)) = (latest, series.as_ref()) {
            let old = sock
                .state
                .lock()
                .ok()
                .and_then(|mut st| st.series.as_mut().map(|s| s.take_before(at)));
            if let (Some(old), Ok(mut all)) = (old, run_series.lock()) {
                all.merge(&old);
            }
        }
        if sock.kernel_ts {
            tokio::time::sleep(RECV_COALESCE).await;
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
    refusals: RefusalCounter,
    back: Arc<Counters>,
    run_clock: RunClock,
    /// The run's pacing series (finished windows; the sockets hold the current ones).
    series: Option<Arc<Mutex<Series>>>,
    /// Why kernel timestamps are not used, if they are not.
    timestamps_fallback: Option<String>,
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
    let run_clock = RunClock::new();
    let series = cfg.series.map(|w| Arc::new(Mutex::new(Series::new(w))));
    let mut rtp = Vec::new();
    let mut tasks = Vec::new();
    let mut timestamps_fallback = None;
    for _ in 0..n_rtp {
        let (socket, send) = bind(ip)?;
        let port = socket.local_addr().map_err(Error::Socket)?.port();
        // A bigger buffer is a margin for bursts; the kernel caps it and a refusal is harmless.
        let _ = setsockopt(&socket, sockopt::RcvBuf, &RECV_BUFFER_BYTES);
        let kernel_ts = match setsockopt(&socket, sockopt::ReceiveTimestampns, &true) {
            Ok(()) => true,
            Err(e) => {
                timestamps_fallback = Some(format!("SO_TIMESTAMPNS refused: {e}"));
                false
            }
        };
        let lane = Arc::new(Lane::new(send.try_clone().map_err(Error::Socket)?));
        let s = Arc::new(RtpSocket {
            socket,
            lane,
            send,
            port,
            kernel_ts,
            state: Mutex::new(RtpState {
                series: cfg.series.map(Series::new),
                ..RtpState::default()
            }),
        });
        tasks.push(tokio::spawn(receive(
            Arc::clone(&s),
            run_clock,
            series.clone(),
        )));
        rtp.push(s);
    }
    let back = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sender = if cfg.rtp_back {
        let lanes: Vec<Arc<Lane>> = rtp.iter().map(|s| Arc::clone(&s.lane)).collect();
        let (stop, back) = (Arc::clone(&stop), Arc::clone(&back));
        let t = std::thread::Builder::new()
            .name("rtp-back".into())
            .spawn(move || back::run_sender(&lanes, &stop, &back))
            .map_err(Error::Socket)?;
        Some(t)
    } else {
        None
    };
    let started = run_clock.start;
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
        refusals: RefusalCounter::default(),
        back,
        run_clock,
        series,
        timestamps_fallback,
    };
    e.run_calls().await;
    let duration = clock().saturating_duration_since(started);
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = sender {
        let _ = t.join();
    }
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
                if self.cfg.rtp_back {
                    // The key goes into the call's back-RTP stream (same SSRC and sequence).
                    let digit = c.script.keys().get(usize::from(key)).map(|k| k.1);
                    let lane = self.rtp.get(c.sock).map(|s| &s.lane);
                    if let (Some(d), Some(lane)) = (digit, lane) {
                        if lane.press(n, d) {
                            self.keys_sent += 1;
                        }
                    }
                    return;
                }
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
                if let Some(s) = self.rtp.get(c.sock) {
                    s.lane.remove(n);
                }
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
                    match (self.cfg.rtp_back, c.answer) {
                        (true, Some(a)) => {
                            if let (Some(s), Some(pt)) =
                                (self.rtp.get(c.sock), PayloadType::new(a.audio_pt))
                            {
                                let law = if a.audio_pt == 8 {
                                    Law::Alaw
                                } else {
                                    Law::Ulaw
                                };
                                s.lane.add(BackCall::new(
                                    n,
                                    a.rtp,
                                    (pt, law.silence()),
                                    a.event_pt.and_then(PayloadType::new),
                                    Origin {
                                        ssrc: c.rtp.ssrc,
                                        seq: c.rtp.seq,
                                        ts: c.rtp.ssrc.rotate_left(7),
                                    },
                                ));
                            }
                        }
                        _ => {
                            if let Some(k) = self.cfg.keepalive {
                                self.timers.push(Reverse((now + k, n, Timer::Keepalive)));
                            }
                        }
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
                    if status == 503 {
                        let latency = self.calls.get(&n).map_or(Duration::ZERO, |c| {
                            now.saturating_duration_since(c.invite_at)
                        });
                        self.refusals.record(msg.retry_after, latency);
                    } else {
                        *self.failures.entry(status.to_string()).or_default() += 1;
                    }
                    self.calls.remove(&n);
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
        if let Some(s) = self.rtp.get(c.sock) {
            s.lane.remove(n);
        }
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
        let mut series = self
            .series
            .as_ref()
            .and_then(|s| s.lock().ok().map(|s| s.clone()));
        let mut user_stamped = 0;
        for s in &self.rtp {
            if let Ok(st) = s.state.lock() {
                pacing.merge(&st.pacing);
                user_stamped += st.user_stamped;
                if let (Some(all), Some(current)) = (series.as_mut(), st.series.as_ref()) {
                    all.merge(current);
                }
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
        let kernel = self.timestamps_fallback.is_none();
        let timestamps_fallback = self.timestamps_fallback.clone().or_else(|| {
            (user_stamped > 0).then(|| {
                format!("{user_stamped} packets came without a kernel timestamp: user-space time used for them")
            })
        });
        let refused = self.refusals.summary();
        Summary {
            target: self.cfg.target.to_string(),
            script: self.cfg.script,
            calls: self.cfg.calls,
            concurrency: self.cfg.concurrency,
            hold_s: self.cfg.hold.as_secs_f64(),
            rate_cps: self.cfg.rate,
            rtp_back: self.back.summary(self.cfg.rtp_back),
            expect_refusals: self.cfg.expect_refusals,
            started_unix_s: self.run_clock.start_unix_ns as f64 / 1e9,
            answered: self.answered,
            refused_503: refused,
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
            timestamps: if kernel { "kernel" } else { "user" }.into(),
            timestamps_fallback,
            pacing_series: series.as_ref().map(PacingSeries::of),
            ok: run_ok(
                self.cfg.calls,
                self.answered,
                refused.count,
                failed,
                self.calls_without_rtp,
                self.cfg.expect_refusals,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_count_retry_after_and_latency() {
        let mut r = RefusalCounter::default();
        assert_eq!(r.summary(), Refusals::default());
        r.record(Some(30), Duration::from_millis(2));
        r.record(None, Duration::from_millis(4));
        r.record(Some(5), Duration::from_millis(100));
        let s = r.summary();
        assert_eq!(
            (s.count, s.with_retry_after, s.retry_after_max_s),
            (3, 2, Some(30))
        );
        assert_eq!(s.latency_ms.samples, 3);
        assert_eq!(s.latency_ms.max, 100.0);
        assert!(s.latency_ms.p50 >= 3.9 && s.latency_ms.p50 <= 4.2, "{s:?}");
    }

    #[test]
    fn a_503_is_a_failure_only_when_refusals_are_not_expected() {
        // 10 calls: 4 answered, 6 refused with 503.
        assert!(!run_ok(10, 4, 6, 0, 0, false));
        assert!(run_ok(10, 4, 6, 0, 0, true));
        // Timeouts and other failures fail the run either way.
        assert!(!run_ok(10, 4, 5, 1, 0, true));
        // So does an answered call without RTP.
        assert!(!run_ok(10, 4, 6, 0, 1, true));
        // A run cut short (calls neither answered, refused nor failed) is not ok.
        assert!(!run_ok(10, 4, 5, 0, 0, true));
        assert!(run_ok(10, 10, 0, 0, 0, false));
        assert!(run_ok(10, 10, 0, 0, 0, true), "no refusal came: still ok");
    }

    #[test]
    fn the_pacing_series_reports_window_starts_in_seconds() {
        let mut s = Series::new(Duration::from_millis(500));
        s.record(0, 100);
        s.record(1_200_000_000, 3_000);
        let p = PacingSeries::of(&s);
        assert_eq!(p.window_ms, 500);
        let t: Vec<f64> = p.windows.iter().map(|w| w.t_s).collect();
        assert_eq!(t, [0.0, 0.5, 1.0]);
        assert_eq!(p.windows[1].samples, 0);
        assert_eq!((p.windows[2].samples, p.windows[2].max), (1, 3.0));
        assert_eq!(p.windows[0].p99, 0.1);
    }

    #[test]
    fn kernel_addresses_convert_to_std() {
        let v4: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let v6: SocketAddr = "[::1]:4001".parse().unwrap();
        assert_eq!(std_addr(&SockaddrStorage::from(v4)), Some(v4));
        assert_eq!(std_addr(&SockaddrStorage::from(v6)), Some(v6));
    }

    #[test]
    fn packets_are_counted_per_source_and_their_pacing_goes_into_the_series() {
        let mut st = RtpState {
            series: Some(Series::new(Duration::from_secs(1))),
            ..RtpState::default()
        };
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut buf = [0u8; 172];
        let mut pkt = |seq: u16| {
            let h = RtpHeader {
                marker: false,
                payload_type: PayloadType::new(0).unwrap(),
                sequence: seq,
                timestamp: 0,
                ssrc: Ssrc(1),
            };
            let n = h.emit(&[0xFF; 160], &mut buf).unwrap();
            buf[..n].to_vec()
        };
        count_packet(&mut st, 990_000_000, Some(a), &pkt(1));
        count_packet(&mut st, 1_010_000_000, Some(a), &pkt(2));
        count_packet(&mut st, 1_032_000_000, Some(a), &pkt(3));
        count_packet(&mut st, 1_040_000_000, None, &pkt(4));
        count_packet(&mut st, 1_040_000_000, Some(a), b"junk");
        assert_eq!(st.not_rtp, 2);
        assert_eq!(st.streams[&a].totals().received, 3);
        assert_eq!((st.pacing.count(), st.pacing.max()), (2, 2000));
        let w = st.series.as_ref().unwrap().windows();
        assert_eq!(w.len(), 1, "both in-order packets arrived in window 1");
        assert_eq!((w[0].0, w[0].1.count()), (1, 2));
    }
}
