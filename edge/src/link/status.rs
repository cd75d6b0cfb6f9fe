//! The retained presence message on `P/nodes/{site}/{node}/status`.
//!
//! Online (published on every connection, whenever the announcements the node holds change
//! in id, version or state, and every `status_interval`):
//!
//! ```json
//! {"state":"online","node":"pi-001","site":"phl","version":"0.1.0",
//!  "started_at":"2026-11-23T06:00:00.000Z",
//!  "announcements":[{"id":"outage-phl","version":3,"state":"active"}],
//!  "callbacks_waiting":2,"outbox_depth":0,"last_seq":1234,"acked_seq":1234,"calls":1,
//!  "counters":{"sip_denied":0,…,"events_published":1234,"rejected":0,"oversized":0,"outbox_dropped":0,
//!              "store_errors":0}}
//! ```
//!
//! Offline (the Last Will, and the last message of a graceful stop):
//! `{"state":"offline","node":"pi-001","site":"phl"}`.

use serde::Serialize;

use super::{LinkConfig, LinkStatus};
use crate::view::{Snapshot, Stats};

/// One announcement's identity and state, as the CRM sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct AnnouncementState {
    id: String,
    version: u32,
    state: String,
}

/// The announcements part of a snapshot (what triggers a prompt re-publish when it changes).
pub(crate) fn announcement_states(s: &Snapshot) -> Vec<AnnouncementState> {
    s.announcements
        .iter()
        .map(|a| AnnouncementState {
            id: a.id.clone(),
            version: a.version,
            state: a.state.clone(),
        })
        .collect()
}

#[derive(Serialize)]
struct Counters<'a> {
    #[serde(flatten)]
    stats: &'a Stats,
    events_published: u64,
    rejected: u64,
    oversized: u64,
    outbox_dropped: u64,
    store_errors: u64,
}

#[derive(Serialize)]
struct Online<'a> {
    state: &'static str,
    node: &'a str,
    site: &'a str,
    version: &'a str,
    started_at: String,
    announcements: Vec<AnnouncementState>,
    callbacks_waiting: u32,
    outbox_depth: u64,
    last_seq: u64,
    acked_seq: u64,
    calls: usize,
    counters: Counters<'a>,
}

/// The online status message.
pub(crate) fn online(cfg: &LinkConfig, snap: &Snapshot, link: &LinkStatus) -> Vec<u8> {
    let msg = Online {
        state: "online",
        node: &cfg.node_id,
        site: &cfg.site,
        version: &cfg.version,
        started_at: super::outbox::rfc3339(cfg.started_at),
        announcements: announcement_states(snap),
        callbacks_waiting: snap.callbacks_waiting,
        outbox_depth: link.outbox_depth,
        last_seq: link.last_seq,
        acked_seq: link.acked_seq,
        calls: snap.calls,
        counters: Counters {
            stats: &snap.stats,
            events_published: link.events_published,
            rejected: link.rejected,
            oversized: link.oversized,
            outbox_dropped: link.outbox_dropped,
            store_errors: link.store_errors,
        },
    };
    serde_json::to_vec(&msg).unwrap_or_else(|_| offline(cfg))
}

/// The offline status message (Last Will and graceful stop).
pub(crate) fn offline(cfg: &LinkConfig) -> Vec<u8> {
    serde_json::json!({"state": "offline", "node": cfg.node_id, "site": cfg.site})
        .to_string()
        .into_bytes()
}
