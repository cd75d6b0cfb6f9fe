//! What the agent shows the outside, shared by the agent, the CRM link and the control
//! socket (so neither depends on the other's internals). One type per concept: the control
//! socket sends these same types to `ccedge` (which reads them back with serde), and the
//! CRM link puts them in its status message.
//!
//! What the engine shows the outside: the periodic [`Snapshot`] (cheap, every 500 ms and on
//! change) and answers to [`Command`]s from the control socket (built on request, so a node
//! with thousands of calls pays for a call list only when a technician asks).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::announcements::Loaded;
use crate::media::prompts::Prompts;

/// Counters for `ccedge status` and the logs.
///
/// Field names are stable (scripts read `ccedge status --json`); a field an older agent did not
/// send reads as zero.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Datagrams dropped before parsing because the source is not allowed.
    pub sip_denied: u64,
    /// Datagrams dropped by the per-source rate limit.
    pub sip_rate_limited: u64,
    /// Datagrams that were not valid SIP.
    pub sip_malformed: u64,
    /// Calls accepted.
    pub calls_total: u64,
    /// INVITEs refused with 503 (draining, no port, too many calls).
    pub calls_refused: u64,
    /// Callbacks durably booked.
    pub callbacks_booked: u64,
    /// Bookings that failed (the caller heard "could not book" or "queue full").
    pub callbacks_failed: u64,
    /// Booked callbacks that waited longer than `callbacks.max_age_s` and left the queue.
    pub callbacks_expired: u64,
    /// Inbound RTP datagrams dropped: refused by their call (not RTP, a foreign source,
    /// before the media started) or because the agent fell behind.
    pub rtp_dropped: u64,
    /// Of those, datagrams from a source the call does not take media from.
    pub rtp_foreign: u64,
    /// Of the refused calls, those whose source held its fair share of `sip.max_calls`.
    pub calls_refused_share: u64,
    /// Of the refused calls, those refused because the media plane was busier than
    /// `rtp.max_pacer_load_percent`.
    pub calls_refused_load: u64,
    /// How busy the media plane's thread was over its last second, in permille.
    pub pacer_load_permille: u64,
    /// Whether the media plane threads run at real-time priority.
    pub pacer_realtime: bool,
    /// SIP datagrams dropped because the agent's queue for them was full (overload).
    pub sip_overload_dropped: u64,
    /// New INVITEs answered 503 with Retry-After by the receive task because the queue for
    /// new requests was full (overload); not counted in `sip_overload_dropped`.
    pub sip_overload_refused: u64,
}

/// One announcement as the node holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnnouncementView {
    /// Id.
    pub id: String,
    /// Version.
    pub version: u32,
    /// `active`, `scheduled`, `pending`, `unplayable`, `expired`, or `other_site` when its
    /// scope names only other sites (it never plays here).
    pub state: String,
    /// Higher plays first.
    pub priority: i32,
    /// Scope: sites (empty = everywhere).
    pub sites: Vec<String>,
    /// Scope: dialled numbers.
    pub dialled: Vec<String>,
    /// Scope: caller prefixes.
    pub caller_prefixes: Vec<String>,
    /// Hex SHA-256 of its audio, when it has audio.
    pub audio_sha256: Option<String>,
    /// Whether that audio is held locally.
    pub audio_present: bool,
    /// Valid from (Unix ms), when bounded.
    pub valid_from_ms: Option<i64>,
    /// Valid until (Unix ms), when bounded.
    pub valid_until_ms: Option<i64>,
    /// While this version is `pending`: the older version callers hear instead, if any.
    pub playing_version: Option<u32>,
    /// How often this version was heard since the agent started.
    #[serde(flatten)]
    pub heard: crate::metrics::AnnouncementCounts,
}

/// A snapshot of the agent for the control socket, the status topic and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Active calls (ended calls leave the count at their BYE).
    pub calls: usize,
    /// Callbacks waiting.
    pub callbacks_waiting: u32,
    /// Counters.
    pub stats: Stats,
    /// The bound SIP address.
    pub sip_addr: Option<SocketAddr>,
    /// Started at, Unix ms.
    pub started_at_ms: i64,
    /// Every announcement held, in id order.
    pub announcements: Vec<AnnouncementView>,
    /// Draining for shutdown.
    pub draining: bool,
    /// The state store: open, and what last went wrong with its disk.
    pub store: crate::store::StoreHealth,
}

/// One active call for `ccedge calls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallView {
    /// The call id (hex).
    pub call_id: String,
    /// Caller number (E.164), unmasked: the CLI masks it unless `--reveal`.
    pub caller: Option<String>,
    /// Dialled number.
    pub dialled: Option<String>,
    /// The call's state (`ringing`, `answered`, `announcing`, `menu`, `ending`, …).
    pub state: String,
    /// Since the INVITE, ms.
    pub age_ms: u64,
    /// `PCMU` / `PCMA` once answered.
    pub codec: Option<String>,
    /// The caller's language (a tag of `ivr.languages`).
    pub language: String,
    /// RTP packets sent.
    pub packets_sent: u64,
    /// RTP packets received.
    pub packets_received: u64,
    /// Packets of the caller's stream that never arrived.
    pub lost: u64,
    /// Interarrival jitter of the caller's stream, ms (RFC 3550 A.8).
    pub jitter_ms: u32,
    /// RTCP reports read from the peer.
    pub rtcp_reports: u32,
    /// Packets of the node's stream the peer reported lost (its RTCP), in all.
    pub peer_lost: i64,
    /// Fraction of the node's packets the peer lost in its last report interval, in 1/256
    /// (as RTCP carries it).
    pub peer_fraction_lost: u8,
    /// Jitter the peer measured on the node's stream, ms.
    pub peer_jitter_ms: u32,
    /// Round trip from RTCP (LSR/DLSR), ms; unset until the peer answered one of the node's
    /// sender reports.
    pub rtt_ms: Option<u32>,
}

/// One entry of the local callback queue for `ccedge callbacks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallbackView {
    /// Id.
    pub callback_id: String,
    /// The number to call back (E.164), unmasked: the CLI masks it unless `--reveal`.
    pub callback_number: String,
    /// Caller number.
    pub caller: Option<String>,
    /// Dialled number.
    pub dialled: Option<String>,
    /// Requested at, Unix ms.
    pub requested_at_ms: i64,
    /// Sync state: `requested`, `stored`, `synced`, `accepted`, `assigned`, …
    pub state: String,
    /// Position in the queue (waiting entries).
    pub position: Option<u32>,
    /// The announcement the caller heard.
    pub announcement_id: Option<String>,
}

/// A request from the control socket to the engine; the answer comes back on the oneshot.
#[derive(Debug)]
pub enum Command {
    /// The active calls.
    Calls(oneshot::Sender<Vec<CallView>>),
    /// The callback queue.
    Callbacks(oneshot::Sender<Vec<CallbackView>>),
    /// Cancel a waiting callback (`ccedge callbacks cancel ID`).
    CancelCallback {
        /// The callback id.
        id: String,
        /// `Ok` when cancelled, else why not.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// What the engine holds of the announcement cache, before a reload reads it.
    CacheState(oneshot::Sender<CacheState>),
    /// Apply what a configuration reload (`SIGHUP`) may change while calls are up.
    Reload {
        /// The new settings, prepared off the engine's task.
        update: Box<LiveUpdate>,
        /// What changed.
        reply: oneshot::Sender<ReloadApplied>,
    },
}

/// What the engine holds of the announcement cache when a reload starts.
#[derive(Debug, Clone, Default)]
pub struct CacheState {
    /// The SHA-256 of every audio file held decoded (the reload reads only the others).
    pub audio: HashSet<[u8; 32]>,
    /// Counts the announcement changes the CRM link handed over; when it differs at the
    /// time the reload is applied, the link changed the cache while the reload read it, and
    /// the reload leaves the announcements as the link made them.
    pub epoch: u64,
}

/// The settings a reload hands the engine; everything is loaded and decoded already, so
/// applying it costs the engine no I/O.
pub struct LiveUpdate {
    /// `sip.allow`, as a predicate on the source address.
    pub allow: Arc<dyn Fn(IpAddr) -> bool + Send + Sync>,
    /// `sip.deny_action` is `403`.
    pub deny_with_403: bool,
    /// `sip.rate_limit_per_source`.
    pub rate_limit_per_source: u32,
    /// The prompts, `ivr.prompts_dir` re-read: for calls that start from now on.
    pub prompts: Arc<Prompts>,
    /// The announcement cache as read now (audio the engine already held is not in it).
    pub announcements: Loaded,
    /// The ids of every announcement file in the cache (readable or not), or `None` when
    /// the cache directory could not be listed: announcements the node holds whose file is
    /// gone are withdrawn, as a restart would forget them.
    pub cached_ids: Option<HashSet<String>>,
    /// [`CacheState::epoch`] before the cache was read.
    pub epoch: u64,
}

impl std::fmt::Debug for LiveUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveUpdate")
            .field("deny_with_403", &self.deny_with_403)
            .field("rate_limit_per_source", &self.rate_limit_per_source)
            .field("announcements", &self.announcements.announcements.len())
            .field("audio", &self.announcements.audio.len())
            .finish_non_exhaustive()
    }
}

/// What the engine changed when it applied a [`LiveUpdate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadApplied {
    /// Announcements (new ids or newer versions) taken from the cache.
    pub announcements_updated: usize,
    /// Announcements withdrawn because their cache file is gone.
    pub announcements_withdrawn: usize,
    /// Audio files newly decoded from the cache.
    pub audio_added: usize,
    /// Calls up when the update was applied (they keep their prompts).
    pub calls: usize,
    /// The CRM link changed the cache while the reload read it: the announcements were left
    /// as the link made them (reload again to take hand-made changes).
    pub announcements_skipped: bool,
}

/// Configuration reloads since the agent started (`SIGHUP`), for `ccedge status` and
/// `ccedge doctor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReloadStatus {
    /// Reloads that applied the file.
    pub ok: u64,
    /// Reloads refused (the file did not load or validate, a prompt did not decode): the
    /// agent kept the configuration it had.
    pub failed: u64,
    /// When the last reload ended, Unix ms (0: none yet).
    pub last_at_ms: i64,
    /// Whether the last reload succeeded (`None`: none yet).
    pub last_ok: Option<bool>,
    /// Why the last reload failed.
    pub last_error: Option<String>,
    /// Keys whose value in the file differs from the running one and that take effect only
    /// after a restart.
    pub restart_pending: Vec<String>,
}
