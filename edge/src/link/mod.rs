//! The CRM link over MQTT (`deploy/asyncapi.yaml`, docs/ARCHITECTURE.md): announcements and audio in, call events and
//! callback requests out, presence on the retained status topic.
//!
//! The link runs as its own task beside the agent's engine; the two talk only through
//! channels, so a slow or absent broker never stalls a call:
//!
//! ```text
//!   engine ──ToLink::Event / ToLink::Callback──▶ link ──PUBLISH──▶ broker ──▶ CRM
//!   engine ◀──FromLink::Announcement / Withdrawn / Audio / AudioRemoved ── link ◀──retained announcements/audio──
//!          ◀──FromLink::CallbackSynced / CallbackState / Connected
//!   engine ──ToLink::Cache / ToLink::Rejected──▶ link (the node's verdict on an announcement)
//! ```
//!
//! An announcement takes one path: the link validates and decodes it and hands it over with
//! the document to cache; the node applies the one version rule (`shared::announce`); what
//! it keeps it asks to have cached (`Output::StoreAnnouncement`, and its `Withdrawn`/`Pruned`
//! events), and the engine hands that back to the link's intake worker as
//! [`ToLink::Cache`], which writes it in order with the audio it caches.
//!
//! (This file is the interface between the engine and the link; the implementation lives in
//! the submodules.)
//!
//! ## Protocol choice: MQTT 3.1.1 with rumqttc
//!
//! The link speaks MQTT 3.1.1 through rumqttc 0.25. Both brokers a deployment is likely to
//! run (Mosquitto, and rumqttd in `firmware-sim`) speak it, and nothing of MQTT 5 is needed:
//! delivery is made durable end to end by the node's outbox and the CRM's acknowledgement by
//! `seq` (a broker's PUBACK is not durable anyway), not by broker features. QoS 1
//! everywhere, a persistent session (`clean_session = false`, the client id from
//! [`LinkConfig::client_id`]), and a retained Last Will `{"state":"offline",…}` on the
//! status topic.
//!
//! ## Parts
//!
//! | module | what it does |
//! |---|---|
//! | `client` | the link task: connection attempts, packet ids ↔ what was published, dispatch |
//! | `transport` | rumqttc options: session, Last Will, size limits, credentials, TLS |
//! | `outbox` | `seq`, the CallEvent envelope, the durable outbox (store + [`shared::event::Outbox`]) |
//! | `intake` | announcements and audio in: validation, decoding, the on-disk cache's writes |
//! | `signature` | Ed25519 signatures of announcements: what is signed, checking, signing |
//! | `tts` | rendering `text` announcements with the speech command |
//! | `status` | the retained presence message |
//! | `topics` | topic names |

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use shared::callback::CrmState;
use shared::time::UnixMillis;
use tokio::sync::{broadcast, mpsc, watch};

use crate::config;

mod client;
mod intake;
mod outbox;
pub mod signature;
mod status;
mod topics;
mod transport;
mod tts;

#[cfg(test)]
mod tests;

/// Everything the link needs, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The `[mqtt]` section (URL, prefix, credentials, TLS files, keep-alive, payload limit).
    pub mqtt: config::Mqtt,
    /// The MQTT client id (`mqtt.client_id` or `ccedge-{site}-{node}`).
    pub client_id: String,
    /// `node.id`.
    pub node_id: String,
    /// `node.site`.
    pub site: String,
    /// `node.state_dir`: the announcement and audio cache lives under it.
    pub state_dir: PathBuf,
    /// `ivr.speech_command`: renders `text` announcements to WAV on stdout. Split on
    /// whitespace and run without a shell; the text is written to the command's
    /// **standard input** (never passed as an argument), so for espeak-ng use
    /// `espeak-ng --stdout --stdin`. Killed after 30 s or when its output passes the audio
    /// size limit.
    pub speech_command: Option<String>,
    /// Largest announcement audio accepted (`announcements.max_audio_bytes`).
    pub max_audio_bytes: u64,
    /// The CRM's Ed25519 public key (`announcements.signing_key`): when set, announcements
    /// must carry a valid signature.
    pub signing_key: Option<[u8; 32]>,
    /// The event outbox's bounds (capacity, retention of PUBACKed but unacknowledged events).
    pub outbox: shared::event::outbox::Config,
    /// How often the retained status is refreshed when nothing changed.
    pub status_interval: Duration,
    /// The agent's version string for the status message.
    pub version: String,
    /// When the agent started (status `started_at`).
    pub started_at: UnixMillis,
}

/// The CallbackRequest payload (`deploy/asyncapi.yaml`), built by the engine from a durably booked
/// callback; `node` and `site` are filled in by the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallbackRequest {
    /// The callback's id.
    pub callback_id: String,
    /// `node.id`.
    pub node: String,
    /// `node.site`.
    pub site: String,
    /// The call that booked it (hex).
    pub call_id: String,
    /// RFC 3339.
    pub requested_at: String,
    /// Caller number (E.164) when presented.
    pub caller: Option<String>,
    /// The number to call back (E.164).
    pub callback_number: String,
    /// Dialled number (E.164) when known.
    pub dialled: Option<String>,
    /// The announcement the caller heard, when any.
    pub announcement_id: Option<String>,
    /// Position in the node's queue, among the callbacks whose window starts no later.
    pub position: u32,
    /// When the caller may be called back (RFC 3339 with the offset of `callbacks.timezone`).
    pub window: WindowJson,
    /// The caller's language tag (`ivr.languages`); null for a callback booked before the
    /// node had languages.
    pub language: Option<String>,
}

/// A callback window as published: RFC 3339 with the zone's offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowJson {
    /// Not before.
    pub not_before: String,
    /// Not after.
    pub not_after: String,
}

/// Work for the link, from the engine. Events are nearly every message: they stay inline (no
/// allocation each), the rare callback is boxed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum ToLink {
    /// A call event as the node made it: the link gives it its `seq`, `event_id`, `node` and
    /// `site`, writes it to the durable outbox and then publishes it on `…/events`.
    Event(shared::node::NodeEvent),
    /// Publish a booked callback on `…/callbacks`; answer with [`FromLink::CallbackSynced`]
    /// on PUBACK.
    Callback(Box<CallbackRequest>),
    /// Write to (or delete from) the announcement cache what the node decided to keep.
    Cache(CacheWrite),
    /// The node refused an announcement the link handed over (an older version, the same
    /// version changed, the set full): logged and counted like the link's own rejections.
    Rejected(String),
}

/// A change to the announcement cache (`{state_dir}/announcements/{id}.json`), asked for by
/// the node and done by the link's intake worker, in order with everything else it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheWrite {
    /// Store this document as the announcement's cached copy (replacing an older one).
    Announcement {
        /// The id.
        id: shared::ids::AnnouncementId,
        /// The version (for the log).
        version: u32,
        /// The document, as [`FromLink::Announcement`] carried it.
        doc: Vec<u8>,
    },
    /// Delete the announcement's cached copy (withdrawn, or expired and dropped).
    Remove(shared::ids::AnnouncementId),
}

/// News for the engine, from the link.
#[derive(Debug, Clone, PartialEq)]
pub enum FromLink {
    /// An announcement the link validated (schema, topic, size, signature) and decoded. The
    /// node applies its version rule; what it keeps comes back as [`ToLink::Cache`] with `doc`.
    Announcement {
        /// The decoded announcement.
        announcement: Box<shared::announce::Announcement>,
        /// The document to cache: the CRM's JSON as received, with `audio_sha256` added when
        /// the link rendered its text to audio.
        doc: Vec<u8>,
    },
    /// The CRM withdrew an announcement (an empty retained payload).
    Withdrawn(shared::ids::AnnouncementId),
    /// A [`CacheWrite`] for this announcement is done (written or deleted, or failed and
    /// logged): the cache on disk is what the node holds again.
    CacheWritten(shared::ids::AnnouncementId),
    /// Audio verified, cached on disk and decoded.
    Audio {
        /// Its SHA-256.
        sha256: [u8; 32],
        /// The decoded frames.
        frames: Arc<crate::media::audio::Frames>,
    },
    /// Cached audio deleted (no cached announcement named it for a week).
    AudioRemoved([u8; 32]),
    /// The broker PUBACKed this callback's CallbackRequest.
    CallbackSynced(String),
    /// The CRM reported a callback's state on `…/callbacks/{id}/state`.
    CallbackState {
        /// The callback.
        id: String,
        /// Its state at the CRM.
        state: CrmState,
        /// When (the message's `at`, or the arrival time).
        at: UnixMillis,
        /// The window, when the CRM moves it.
        window: Option<shared::callback::Window>,
    },
    /// A (re)connection to the broker: publish again every callback the CRM has not accepted.
    Connected,
}

/// The link's state for `ccedge status`, `ccedge doctor` and the status topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkStatus {
    /// Connected to the broker now.
    pub connected: bool,
    /// Since when (connected or disconnected), Unix milliseconds.
    pub since_ms: i64,
    /// The last connection error, when any.
    pub last_error: Option<String>,
    /// Events held in the outbox (not yet acknowledged by the CRM).
    pub outbox_depth: u64,
    /// Events dropped from a full outbox or by retention.
    pub outbox_dropped: u64,
    /// When the oldest event in the outbox happened, Unix ms (to within a second; `None`:
    /// the outbox is empty).
    pub outbox_oldest_at_ms: Option<i64>,
    /// Connections to the broker after the first one (reconnections).
    pub reconnects: u64,
    /// The last `seq` issued.
    pub last_seq: u64,
    /// The highest `seq` the CRM acknowledged.
    pub acked_seq: u64,
    /// Events published (including replays).
    pub events_published: u64,
    /// Incoming messages rejected (junk, wrong schema, older version, bad hash, too large).
    pub rejected: u64,
    /// The last rejection's reason.
    pub last_rejection: Option<String>,
    /// Incoming messages discarded unread because they were larger than
    /// `mqtt.max_payload_bytes` (also counted in `rejected`).
    pub oversized: u64,
    /// Changes accepted into the announcement cache (new or withdrawn announcements, audio).
    pub announcements_accepted: u64,
    /// Event store operations that failed (the outbox keeps such events in memory): a loud
    /// metric.
    pub store_errors: u64,
}

/// A running link.
#[derive(Debug)]
pub struct LinkHandle {
    /// Work for the link. Dropping every sender ends the link (after a last flush).
    pub tx: mpsc::UnboundedSender<ToLink>,
    /// The link's state.
    pub status: watch::Receiver<LinkStatus>,
    /// Every event as published (its JSON), for `ccedge events tail`.
    pub events: broadcast::Sender<Arc<str>>,
    /// Ends when the link stopped.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the link task: connects (and keeps reconnecting with jittered backoff) to
/// `mqtt.url`, subscribes to the announcement, audio, ack, replay and callback-state topics,
/// and publishes what the engine sends. `snapshot` gives the announcement states for the
/// retained status; `to_engine` carries [`FromLink`] news.
#[must_use]
pub fn spawn(
    cfg: LinkConfig,
    store: crate::store::StoreHandle,
    snapshot: watch::Receiver<crate::view::Snapshot>,
    to_engine: mpsc::UnboundedSender<FromLink>,
) -> LinkHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (status_tx, status) = watch::channel(LinkStatus::default());
    let (events, _) = broadcast::channel(1024);
    let task = tokio::spawn(client::run(
        cfg,
        store,
        snapshot,
        to_engine,
        rx,
        status_tx,
        events.clone(),
    ));
    LinkHandle {
        tx,
        status,
        events,
        task,
    }
}
