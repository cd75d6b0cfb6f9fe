//! `firmware-sim sim`: a deterministic simulation of a whole ccedge node's core.
//!
//! One seed names one run. Everything happens on a virtual clock in one thread: an agenda
//! ([`sched`]) of datagrams, timers, disk completions, crashes and outages, processed in time
//! order (ties in scheduling order). Randomness comes only from [`rng::Rng`], collections are
//! `BTreeMap`s, and nothing reads the system clock, so a seed reproduces byte for byte.
//!
//! ## The world
//!
//! * [`caller`]: gateways placing calls (text SIP from `crate::gateway::uac`, RFC 4733 key
//!   presses as real RTP), and callers who listen, barge in, book callbacks, key numbers,
//!   hang up, cancel while ringing, hold, call again about a callback they booked, or whose
//!   gateway dies.
//! * a network that loses, duplicates, delays and reorders SIP and RTP datagrams;
//! * [`host`]: the node. The simulator drives `shared::node::Node`, the same type the `edge`
//!   daemon drives: every call, the callback queue, the announcement set, booking and the
//!   events are the node's; the host around it does only the I/O a daemon does, simulated:
//!   SIP and RTP datagrams, a media engine that plays each playlist for its length, a disk
//!   that is slow, can fail and survives crashes (callback records, the seq high-water mark,
//!   the outbox, announcements and their audio), the event sequencer and outbox, the broker
//!   link and one timer. It crashes and restarts from its disk.
//! * [`crm`]: an MQTT broker that goes down and loses what it had not delivered, and a CRM
//!   that acknowledges, asks for replays, moves callbacks on and publishes a new
//!   announcement version every few tens of seconds;
//! * [`oracle`]: the invariants, checked as facts happen and once more after the end, when
//!   the network and broker are healed and everything drains.
//!
//! ## Invariants
//!
//! Checked at the step where the fact happens (and the bounds after every step):
//!
//! * the caller hears "booked" (`Prompt::Booked`) only after the node answered `Booked`,
//!   which it does only after the store reported ok; "already booked" only for a durable entry;
//! * a caller told "already booked" hears the whole answer ("already booked, you are number
//!   N") to its end before the node hangs up;
//! * a callback told "booked" never leaves the disk unless the CRM finished it or it reached
//!   `callbacks.max_age` (never earlier), is in the queue after every restart, and no call is
//!   ever booked twice (disk, queue, CRM);
//! * a booked callback past its max age expires within a tick, and its expiry is reported
//!   as a `callback.expired` event;
//! * every call's events: `call.offered` first with `call_seq` 1, then contiguous, nothing
//!   after `call.ended`; `seq` strictly increasing across restarts, never reused (the CRM
//!   compares every delivery with what was issued under that seq);
//! * the node's timer deadline is consumed by `handle_timeout` (a shell would busy-loop);
//! * the node's active-call count agrees, within a tick, with the calls between
//!   `call.offered` and `call.ended`, and never exceeds the table;
//! * bounds: call table <= configured concurrency, callback queue, outbox (memory and disk),
//!   events waiting for a seq, the announcement set, the audio cache and the host's per-call
//!   bookkeeping (announcement versions churn all run long), the agenda.
//!
//! After healing and draining: every issued seq was delivered or reported in a `seq.skipped`
//! range (and none both), each call's delivered events are contiguous and in seq order with
//! exactly one `call.ended` unless a crash cut the call, every booked callback reached the
//! CRM and ended accepted, completed, cancelled or expired, and every `callback.expired`
//! reached the CRM (unless the outbox reported its seq skipped or a crash took it before it
//! had a seq).
//!
//! ## Reproducing
//!
//! A violation stops the run with the seed, the step and the reason
//! (`firmware-sim sim --seed S --calls N` reproduces it; `--trace` prints every step). Core
//! bugs found and not fixed yet are listed in [`oracle::KNOWN_CORE_BUGS`]; by default they
//! fail the run, `--allow-known-bugs` counts them instead.
//!
//! ## Cost
//!
//! About 120 steps per call; 10,000 calls (1.2 M steps, ~2 h of virtual time) take about
//! 1 s of one core in release mode.

pub(crate) mod caller;
pub(crate) mod crm;
pub(crate) mod ctx;
pub(crate) mod host;
pub(crate) mod media;
pub(crate) mod oracle;
pub(crate) mod rng;
pub(crate) mod sched;
mod world;

use alloc::collections::BTreeMap;
use core::fmt::Write as _;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Serialize;
use shared::announce::{Announcement, Language, Scope, Site};
use shared::ids::AnnouncementId;
use shared::number::PhoneNumber;
use shared::time::{Duration, Instant, UnixMillis};

use caller::{Gateways, Intent, Plan};
use crm::{Broker, Crm};
use ctx::{Ctx, NetFaults, Stats};
use host::{Host, HostParams, Inject, NODE_IP, NODE_SIP};
use oracle::{Oracle, Violation};
use rng::Rng;
use sched::{Ev, Msg, Sched};

use crate::gateway::uac::Offer;

/// The numbers callers dial.
pub(crate) const DIALLED: [&str; 3] = ["18005550100", "18005550101", "18005550102"];

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The seed.
    pub(crate) seed: u64,
    /// Calls to place.
    pub(crate) calls: u64,
    /// Stop placing calls (and heal) after this many steps.
    pub(crate) steps: Option<u64>,
    /// Print every step.
    pub(crate) trace: bool,
    /// A deliberate bug (tests).
    pub(crate) inject: Option<Inject>,
    /// Force node crashes about this often (seconds), overriding the seed's profile.
    pub(crate) crash_mean_s: Option<u64>,
    /// `callbacks.max_age` in seconds, overriding the seed's profile.
    pub(crate) callback_max_age_s: Option<u64>,
    /// Count the documented core bugs ([`oracle::KNOWN_CORE_BUGS`]) instead of failing.
    pub(crate) allow_known_bugs: bool,
}

impl Config {
    /// A run of `calls` calls for `seed`.
    pub(crate) fn new(seed: u64, calls: u64) -> Config {
        Config {
            seed,
            calls,
            steps: None,
            trace: false,
            inject: None,
            crash_mean_s: None,
            callback_max_age_s: None,
            allow_known_bugs: false,
        }
    }
}

/// The seed's fault and load profile.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Profile {
    pub(crate) net: NetFaults,
    pub(crate) gateways: usize,
    pub(crate) max_calls: usize,
    pub(crate) answer_delay_ms: u64,
    pub(crate) outbox_capacity: u64,
    pub(crate) seq_block: u64,
    pub(crate) store_fail: f64,
    pub(crate) store_slow: f64,
    pub(crate) mark_fail: f64,
    pub(crate) arrival_mean_ms: u64,
    pub(crate) crash_mean_s: u64,
    pub(crate) broker_outage_mean_s: u64,
    /// `callbacks.max_age`: booked callbacks still open this long after their request expire.
    pub(crate) callback_max_age_s: u64,
}

impl Profile {
    fn from_seed(rng: &mut Rng, cfg: &Config) -> Profile {
        let max_calls = rng.range(40, 300) as usize;
        let load = 0.5 + rng.unit(); // offered load relative to the table size
        let arrival_mean_ms = ((45_000.0 / (load * max_calls as f64)) as u64).max(20);
        let pct = |rng: &mut Rng, max: f64| (rng.unit() * max * 1000.0).round() / 1000.0;
        Profile {
            net: NetFaults {
                sip_loss: pct(rng, 0.05),
                rtp_loss: pct(rng, 0.05),
                duplicate: pct(rng, 0.03),
                base_delay_ms: rng.range(1, 20),
                jitter_ms: rng.range(0, 60),
            },
            gateways: rng.range(1, 4) as usize,
            max_calls,
            answer_delay_ms: if rng.chance(0.5) {
                0
            } else {
                rng.range(300, 3_000)
            },
            outbox_capacity: if rng.chance(0.5) {
                100_000
            } else {
                rng.range(200, 3_000)
            },
            seq_block: rng.range(20, 1_000),
            store_fail: pct(rng, 0.1),
            store_slow: pct(rng, 0.03),
            mark_fail: pct(rng, 0.05),
            arrival_mean_ms,
            crash_mean_s: cfg.crash_mean_s.unwrap_or_else(|| rng.range(300, 1_800)),
            broker_outage_mean_s: rng.range(120, 900),
            callback_max_age_s: {
                let s = rng.range(120, 360);
                cfg.callback_max_age_s.unwrap_or(s)
            },
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) seed: u64,
    pub(crate) profile: Profile,
    pub(crate) steps: u64,
    pub(crate) virtual_seconds: f64,
    pub(crate) stats: Stats,
    pub(crate) callbacks_told_booked: usize,
    pub(crate) callbacks_at_crm: usize,
    /// The node's own counters, summed over its boots.
    pub(crate) node: shared::node::Stats,
    pub(crate) events_by_type: BTreeMap<&'static str, u64>,
    pub(crate) max_seq: u64,
    /// Documented core bugs tolerated (`--allow-known-bugs`), by name.
    pub(crate) known_core_bugs: BTreeMap<&'static str, u64>,
    pub(crate) trace_hash: String,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) seed: u64,
    pub(crate) step: u64,
    pub(crate) at: Instant,
    pub(crate) message: String,
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "INVARIANT VIOLATED at step {} (t = {:.3} s), seed {}: {}",
            self.step,
            self.at.as_micros() as f64 / 1e6,
            self.seed,
            self.message
        )
    }
}

const SCANNER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), 5070);
const ANN_IDS: [&str; 6] = [
    "outage-phl",
    "outage-nj",
    "storm",
    "billing",
    "maintenance",
    "holiday",
];

struct World {
    cfg: Config,
    prof: Profile,
    ctx: Ctx,
    host: Host,
    gws: Gateways,
    broker: Broker,
    crm: Crm,
    healing: bool,
    heal_deadline: Instant,
    /// Recent callers: caller number, keyed number, and whether they confirm their caller
    /// ID as the callback number.
    numbers: Vec<(String, String, bool)>,
    ann_versions: BTreeMap<&'static str, u32>,
    /// Scripted plans (demo), used in order instead of random ones.
    scripted: Option<Vec<(Duration, Plan)>>,
    /// The demo's one announcement (published once instead of random changes).
    demo_announcement: Option<Announcement>,
}

/// Runs one simulation.
///
/// # Errors
/// The first broken invariant, with the seed and step.
pub(crate) fn run(cfg: &Config) -> Result<Summary, Failure> {
    let mut w = World::new(cfg.clone(), None, None);
    w.run()
}

/// A scripted scenario for the demo: the given plans at the given offsets, a fixed profile,
/// and the broker down during `outage` (from, to).
pub(crate) struct Scenario {
    pub(crate) plans: Vec<(Duration, Plan)>,
    pub(crate) outage: (Duration, Duration),
    pub(crate) answer_delay: Duration,
    pub(crate) announcement: Announcement,
}

/// What the demo needs back from a scripted run.
pub(crate) struct ScenarioOutcome {
    pub(crate) summary: Summary,
    pub(crate) logs: BTreeMap<u64, caller::CallLog>,
    pub(crate) received: Vec<shared::event::CallEvent>,
    pub(crate) skipped: Vec<(u64, u64)>,
}

/// Runs a scripted scenario (no random faults).
///
/// # Errors
/// The first broken invariant.
pub(crate) fn run_scenario(sc: Scenario) -> Result<ScenarioOutcome, Failure> {
    let mut cfg = Config::new(1, sc.plans.len() as u64);
    cfg.crash_mean_s = Some(u64::MAX / 4_000_000);
    let prof = Profile {
        net: NetFaults {
            sip_loss: 0.0,
            rtp_loss: 0.0,
            duplicate: 0.0,
            base_delay_ms: 5,
            jitter_ms: 2,
        },
        gateways: 1,
        max_calls: 50,
        answer_delay_ms: sc.answer_delay.as_millis() as u64,
        outbox_capacity: 100_000,
        seq_block: 1_000,
        store_fail: 0.0,
        store_slow: 0.0,
        mark_fail: 0.0,
        arrival_mean_ms: 1_000,
        crash_mean_s: u64::MAX / 4_000_000,
        broker_outage_mean_s: u64::MAX / 4_000_000,
        callback_max_age_s: 24 * 3600,
    };
    let mut w = World::new(cfg, Some(prof), Some(sc.plans));
    w.gws.keep_logs = true;
    // The CRM's announcement is on the broker before the first call.
    w.ctx.sched.at(Instant::from_millis(1), Ev::AnnChurn);
    w.demo_announcement = Some(sc.announcement);
    let (down, up) = sc.outage;
    w.ctx.sched.at(Instant::ZERO + down, Ev::BrokerDown);
    w.ctx.sched.at(Instant::ZERO + up, Ev::BrokerUp);
    let summary = w.run()?;
    Ok(ScenarioOutcome {
        summary,
        logs: core::mem::take(&mut w.gws.logs),
        received: w.crm.received.values().cloned().collect(),
        skipped: w.crm.skipped.clone(),
    })
}

/// The human summary of a run.
pub(crate) fn render(s: &Summary) -> String {
    let st = &s.stats;
    let p = &s.profile;
    let mut o = String::new();
    let _ = writeln!(o, "firmware-sim sim --seed {}: all invariants held", s.seed);
    let _ = writeln!(
        o,
        "  profile   {} gateways, {} max calls, answer delay {} ms, SIP loss {:.1} %, RTP loss {:.1} %, duplicates {:.1} %, delay {}+{} ms",
        p.gateways,
        p.max_calls,
        p.answer_delay_ms,
        p.net.sip_loss * 100.0,
        p.net.rtp_loss * 100.0,
        p.net.duplicate * 100.0,
        p.net.base_delay_ms,
        p.net.jitter_ms
    );
    let _ = writeln!(
        o,
        "            outbox capacity {}, seq block {}, store failures {:.1} %, slow stores {:.1} %, callback max age {} s",
        p.outbox_capacity,
        p.seq_block,
        p.store_fail * 100.0,
        p.store_slow * 100.0,
        p.callback_max_age_s
    );
    let _ = writeln!(
        o,
        "  run       {} steps, {:.1} s of virtual time",
        s.steps, s.virtual_seconds
    );
    let _ = writeln!(
        o,
        "  calls     {} placed, {} answered, {} busy (503), {} cancelled, {} other rejections, {} unanswered",
        st.calls_placed,
        st.calls_answered,
        st.calls_busy_503,
        st.calls_cancelled,
        st.calls_rejected_other,
        st.calls_no_answer
    );
    let _ = writeln!(
        o,
        "            {} caller hang-ups, {} node hang-ups, {} holds, {} dead gateways, {} keys pressed, {} cut by crashes",
        st.caller_hangups, st.node_hangups, st.holds, st.dead_gateways, st.keys_pressed, st.calls_cut_by_crash
    );
    let _ = writeln!(
        o,
        "  callbacks {} booked (told \"booked\"), {} already booked, {} not booked ({} store failures, {} late), {} finished by the CRM, {} expired ({} expiry events skipped or lost in a crash), {} at the CRM",
        s.callbacks_told_booked,
        st.callbacks_already_booked,
        st.callbacks_not_booked,
        st.callback_store_failures,
        st.late_bookings_cancelled,
        st.callbacks_completed_by_crm,
        st.callbacks_expired,
        st.expiry_events_unreported,
        s.callbacks_at_crm
    );
    let _ = writeln!(
        o,
        "  events    {} issued (max seq {}), {} delivered to the CRM, {} redelivered, {} seq.skipped covering {} seqs, {} dropped by the outbox, {} replay requests",
        st.events_issued,
        s.max_seq,
        st.events_delivered,
        st.events_redelivered,
        st.seq_skipped_events,
        st.seq_numbers_skipped,
        st.outbox_dropped,
        st.replay_requests
    );
    let _ = writeln!(
        o,
        "  faults    {} node crashes, {} broker outages ({} broker messages lost), {} datagrams dropped, {} duplicated, {} junk datagrams, {} announcement changes",
        st.crashes,
        st.broker_outages,
        st.broker_messages_lost,
        st.dropped,
        st.duplicated,
        st.junk_sent,
        st.announcement_changes
    );
    let _ = writeln!(
        o,
        "  traffic   {} SIP and {} RTP datagrams sent, {} OPTIONS ({} answered), {} stateless replies",
        st.sip_sent, st.rtp_sent, st.options_sent, st.options_answered, st.node_stateless_replies
    );
    let _ = writeln!(
        o,
        "  checks    {} invariant checks passed",
        st.invariant_checks
    );
    for (name, n) in &s.known_core_bugs {
        let _ = writeln!(
            o,
            "  KNOWN    core bug {name} happened {n} times (tolerated by --allow-known-bugs)"
        );
    }
    let _ = writeln!(o, "  trace     {}", s.trace_hash);
    o
}

#[cfg(test)]
mod tests;
