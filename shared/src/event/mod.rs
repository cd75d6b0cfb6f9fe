//! Call events: the CallEvent model, the per-node `seq`, per-call `call_seq`, and the outbox's
//! delivery bookkeeping.
//!
//! Every CallEvent the node publishes on `P/nodes/{site}/{node}/events` carries a per-node
//! `seq` that survives restarts and never repeats, and a per-call `call_seq` that orders one
//! call's events (the CallEvent schema of `deploy/asyncapi.yaml`). Events are written to the
//! shell's disk outbox before they are published, and leave it only when the CRM acknowledges
//! them by `seq` (`docs/ARCHITECTURE.md`, "Durability rules"). This module holds the pure parts
//! of that:
//!
//! * [`EventKind`]: the typed `type` + `data` of a CallEvent; [`EventKind::type_str`] is the
//!   contract string. [`CallEvent`] is the envelope minus what the shell adds (`event_id`,
//!   `node`, `site`).
//! * [`Sequencer`] ([`seq`]): issues `seq` numbers from durably reserved blocks.
//! * [`CallSeq`]: a call's `call_seq` counter.
//! * [`Outbox`] ([`outbox`]): which held events are unpublished, awaiting PUBACK, or awaiting
//!   the CRM's acknowledgement, as a handful of cursors; the payloads stay on the shell's disk.
//! * [`Journal`] ([`journal`]): the two joined with the rules between them (waiting for a
//!   reserved `seq`, the restart gap, `seq.skipped` for replays, persisting the CRM's
//!   acknowledgement), which the daemon's link and the simulator both drive.
//!
//! ## Gaps: the `seq.skipped` marker (contract decision)
//!
//! `seq` is contiguous except in two cases, and both are announced so the CRM never waits or
//! asks for replay forever:
//!
//! 1. A crash skips the unused rest of a reserved block ([`Sequencer::restart_gap`]).
//! 2. The CRM asks for a replay of events the outbox no longer holds ([`outbox::Output::Skipped`]).
//!
//! In both cases the shell appends an ordinary event of type **`seq.skipped`**
//! ([`EventKind::SeqSkipped`], `"data": {"from": A, "to": B, "reason": "restart"|"unavailable"}`,
//! no `call_id`) with its own fresh `seq`. The CRM treats `[from, to]` as accounted for.
//!
//! ## Node-level events
//!
//! `seq.skipped` and [`EventKind::CallbackExpired`] (`callback.expired`, `"data":
//! {"callback_id": …}`: a booked callback outlived the queue's maximum age) belong to no call:
//! their envelope has `call_id` null and `call_seq` 0. `deploy/asyncapi.yaml` lists them with
//! the call events.
//!
//! Events dropped from a full outbox, or by the retention rule, only count in
//! [`Outbox::dropped`] (a metric); if the CRM later asks for them, case 2 answers.

pub mod journal;
pub mod outbox;
pub mod seq;

pub use journal::Journal;
pub use outbox::Outbox;
pub use seq::Sequencer;

use core::fmt;

use heapless::String;

use crate::dtmf::Digit;
use crate::ids::{AnnouncementId, CallId, CallbackId};
use crate::limits::{MAX_EVENTS_PER_CALL, SIP_URI_MAX};
use crate::number::PhoneNumber;
use crate::time::UnixMillis;

/// The audio codec a call was answered with.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "UPPERCASE"))]
pub enum Codec {
    /// G.711 µ-law, `PCMU/8000`.
    Pcmu,
    /// G.711 A-law, `PCMA/8000`.
    Pcma,
}

impl Codec {
    /// The SDP encoding name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

/// Why a call ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum EndReason {
    /// The caller hung up (BYE from the gateway).
    CallerHangup,
    /// The node hung up at the end of the flow.
    NodeHangup,
    /// The call was transferred away (REFER accepted).
    Transferred,
    /// The caller gave up before the node answered (CANCEL).
    Abandoned,
    /// The node refused the call (busy, overload, no common codec).
    Rejected,
    /// No RTP arrived for too long.
    MediaTimeout,
    /// The SIP session timer (RFC 4028) ran out: the gateway stopped refreshing the session,
    /// or the node's own refresh failed.
    SessionExpired,
    /// A protocol error ended the call.
    Error,
    /// The node shut down.
    Shutdown,
}

impl EndReason {
    /// The `data.reason` string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHangup => "caller_hangup",
            EndReason::NodeHangup => "node_hangup",
            EndReason::Transferred => "transferred",
            EndReason::Abandoned => "abandoned",
            EndReason::Rejected => "rejected",
            EndReason::MediaTimeout => "media_timeout",
            EndReason::SessionExpired => "session_expired",
            EndReason::Error => "error",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// Why a range of `seq` numbers will never be delivered.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum SkipReason {
    /// Reserved before a crash and never issued.
    Restart,
    /// Asked for in a replay but no longer held (acknowledged, or dropped).
    Unavailable,
}

impl SkipReason {
    /// The `data.reason` string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Restart => "restart",
            SkipReason::Unavailable => "unavailable",
        }
    }
}

/// A SIP URI a call was transferred to.
pub type TransferTarget = String<SIP_URI_MAX>;

/// The `type` and `data` of a CallEvent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", content = "data"))]
pub enum EventKind {
    /// `call.offered`: an INVITE arrived.
    #[cfg_attr(feature = "serde", serde(rename = "call.offered"))]
    CallOffered {
        /// Caller number (E.164) when presented.
        caller: Option<PhoneNumber>,
        /// Dialled number (E.164) when known.
        dialled: Option<PhoneNumber>,
    },
    /// `call.answered`: the node sent 200 OK.
    #[cfg_attr(feature = "serde", serde(rename = "call.answered"))]
    CallAnswered {
        /// The negotiated codec.
        codec: Codec,
    },
    /// `announcement.started`.
    #[cfg_attr(feature = "serde", serde(rename = "announcement.started"))]
    AnnouncementStarted {
        /// The announcement.
        announcement_id: AnnouncementId,
        /// The version played.
        version: u32,
    },
    /// `announcement.completed`.
    #[cfg_attr(feature = "serde", serde(rename = "announcement.completed"))]
    AnnouncementCompleted {
        /// The announcement.
        announcement_id: AnnouncementId,
        /// The version played.
        version: u32,
        /// Cut short (a key press, a hang-up).
        interrupted: bool,
    },
    /// `dtmf`: a key press.
    #[cfg_attr(feature = "serde", serde(rename = "dtmf"))]
    Dtmf {
        /// The key.
        digit: Digit,
    },
    /// `callback.requested`: a callback was booked (durably stored).
    #[cfg_attr(feature = "serde", serde(rename = "callback.requested"))]
    CallbackRequested {
        /// The callback entry.
        callback_id: CallbackId,
        /// Its position in the node's queue when booked.
        position: u32,
    },
    /// `call.transferred`.
    #[cfg_attr(feature = "serde", serde(rename = "call.transferred"))]
    CallTransferred {
        /// The REFER target.
        target: TransferTarget,
    },
    /// `call.ended`.
    #[cfg_attr(feature = "serde", serde(rename = "call.ended"))]
    CallEnded {
        /// Why.
        reason: EndReason,
        /// Offered to ended, milliseconds.
        duration_ms: u64,
        /// Answered to ended, milliseconds (0 when never answered).
        answered_ms: u64,
    },
    /// `callback.expired`: a booked callback waited longer than the queue's maximum age and
    /// left the queue without the CRM finishing it (no `call_id`: the call ended long ago).
    #[cfg_attr(feature = "serde", serde(rename = "callback.expired"))]
    CallbackExpired {
        /// The callback entry.
        callback_id: CallbackId,
    },
    /// `seq.skipped`: `[from, to]` will never be delivered (see the module docs).
    #[cfg_attr(feature = "serde", serde(rename = "seq.skipped"))]
    SeqSkipped {
        /// First skipped `seq`.
        from: u64,
        /// Last skipped `seq` (inclusive).
        to: u64,
        /// Why.
        reason: SkipReason,
    },
}

impl EventKind {
    /// The exact `type` string of the contract.
    #[must_use]
    pub fn type_str(&self) -> &'static str {
        match self {
            EventKind::CallOffered { .. } => "call.offered",
            EventKind::CallAnswered { .. } => "call.answered",
            EventKind::AnnouncementStarted { .. } => "announcement.started",
            EventKind::AnnouncementCompleted { .. } => "announcement.completed",
            EventKind::Dtmf { .. } => "dtmf",
            EventKind::CallbackRequested { .. } => "callback.requested",
            EventKind::CallTransferred { .. } => "call.transferred",
            EventKind::CallEnded { .. } => "call.ended",
            EventKind::CallbackExpired { .. } => "callback.expired",
            EventKind::SeqSkipped { .. } => "seq.skipped",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.type_str())
    }
}

/// A CallEvent as the core builds it; the shell adds `event_id`, `node` and `site` and
/// renders `at` as RFC 3339.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallEvent {
    /// Per-node sequence number from [`Sequencer::next`].
    pub seq: u64,
    /// The call (`None` for node-level events such as `seq.skipped`).
    pub call_id: Option<CallId>,
    /// Order within the call, from [`CallSeq::next`] (0 for node-level events).
    pub call_seq: u32,
    /// When it happened.
    pub at: UnixMillis,
    /// What happened.
    pub kind: EventKind,
}

/// A call's `call_seq` counter: 1, 2, 3 … up to [`MAX_EVENTS_PER_CALL`]; after that events are
/// only counted (a runaway call cannot flood the outbox).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CallSeq {
    issued: u32,
    suppressed: u32,
}

impl CallSeq {
    /// A fresh counter for a new call.
    #[must_use]
    pub fn new() -> CallSeq {
        CallSeq::default()
    }

    /// The next `call_seq`, or `None` once the call has produced [`MAX_EVENTS_PER_CALL`]
    /// events (the event is then dropped and counted in [`CallSeq::suppressed`]). Call once
    /// per event the call emits.
    // Not an `Iterator`: it counts suppressed events and never ends for good.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<u32> {
        if self.issued >= MAX_EVENTS_PER_CALL {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.issued += 1;
        Some(self.issued)
    }

    /// Events dropped over the per-call limit.
    #[must_use]
    pub fn suppressed(&self) -> u32 {
        self.suppressed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_strings_are_the_contract() {
        let aid = AnnouncementId::new("outage-phl").unwrap();
        let kinds = [
            (
                EventKind::CallOffered {
                    caller: None,
                    dialled: None,
                },
                "call.offered",
            ),
            (
                EventKind::CallAnswered { codec: Codec::Pcma },
                "call.answered",
            ),
            (
                EventKind::AnnouncementStarted {
                    announcement_id: aid.clone(),
                    version: 3,
                },
                "announcement.started",
            ),
            (
                EventKind::AnnouncementCompleted {
                    announcement_id: aid,
                    version: 3,
                    interrupted: true,
                },
                "announcement.completed",
            ),
            (EventKind::Dtmf { digit: Digit::D1 }, "dtmf"),
            (
                EventKind::CallbackRequested {
                    callback_id: CallbackId::new("cb-1").unwrap(),
                    position: 5,
                },
                "callback.requested",
            ),
            (
                EventKind::CallTransferred {
                    target: TransferTarget::try_from("sip:agents@pbx.example").unwrap(),
                },
                "call.transferred",
            ),
            (
                EventKind::CallEnded {
                    reason: EndReason::CallerHangup,
                    duration_ms: 20_000,
                    answered_ms: 19_500,
                },
                "call.ended",
            ),
            (
                EventKind::CallbackExpired {
                    callback_id: CallbackId::new("cb-1").unwrap(),
                },
                "callback.expired",
            ),
            (
                EventKind::SeqSkipped {
                    from: 10,
                    to: 20,
                    reason: SkipReason::Restart,
                },
                "seq.skipped",
            ),
        ];
        for (k, s) in kinds {
            assert_eq!(k.type_str(), s);
        }
        assert_eq!(Codec::Pcmu.as_str(), "PCMU");
        assert_eq!(EndReason::MediaTimeout.as_str(), "media_timeout");
        assert_eq!(EndReason::SessionExpired.as_str(), "session_expired");
        assert_eq!(SkipReason::Unavailable.as_str(), "unavailable");
    }

    #[test]
    fn call_seq_counts_then_suppresses() {
        let mut c = CallSeq::new();
        assert_eq!(c.next(), Some(1));
        assert_eq!(c.next(), Some(2));
        for _ in 2..MAX_EVENTS_PER_CALL {
            assert!(c.next().is_some());
        }
        assert_eq!(c.next(), None);
        assert_eq!(c.suppressed(), 1);
    }

    #[test]
    fn event_kind_stays_small() {
        // The transfer target dominates; keep an event well under half a KiB.
        assert!(core::mem::size_of::<CallEvent>() <= 256);
    }
}
