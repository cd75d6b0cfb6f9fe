//! The announcement set: versions, scope, validity windows, selection for a call.
//!
//! The CRM publishes each announcement retained on `P/announcements/{id}` (an empty payload
//! withdraws it) and its audio retained on `P/audio/{sha256}`. The `edge` shell decodes the
//! JSON and the WAV, keeps both in its disk cache, and feeds the facts into one
//! [`AnnouncementSet`] per node. This module decides what each call hears.
//!
//! ## States
//!
//! Every stored announcement is in exactly one [`State`], recomputed on every `handle_*` call
//! from the wall clock, the local audio cache and whether a speech engine is configured:
//!
//! | state | when | MQTT status string |
//! |---|---|---|
//! | [`State::Scheduled`] | `now < valid_from` | `"scheduled"` |
//! | [`State::Active`] | in its window, and its audio is cached, or it has text and a speech engine is configured | `"active"` |
//! | [`State::Pending`] | in its window, names audio that is not cached yet (and no text fallback can be spoken) | `"pending"` |
//! | [`State::Unplayable`] | in its window, text only, and no speech engine | `"unplayable"` |
//! | [`State::Expired`] | `now >= valid_until` | `"expired"` |
//!
//! `"scheduled"` is what a node reports for an announcement whose window has not opened yet;
//! the Status schema of `deploy/asyncapi.yaml` lists it with the other four states.
//!
//! ## Contracts implemented
//!
//! * **Versions only increase.** An [`Input::Upsert`] with a higher version replaces the stored
//!   one ([`Event::Replaced`]); a lower version is rejected ([`Error::OlderVersion`]); the same
//!   version with identical content is a no-op, with different content it is rejected
//!   ([`Error::SameVersionChanged`]). So an older version never replaces a newer one, whatever
//!   the order of arrival. A withdrawal forgets the id entirely (no tombstone is kept).
//! * **Never evict silently.** When [`MAX_ANNOUNCEMENTS`] are stored, expired ones are pruned
//!   first ([`Event::Pruned`]); if none is expired the new id is rejected ([`Error::Full`]) and
//!   the stored ones keep playing.
//! * **Handles are never reused.** Each stored version gets a fresh [`AnnouncementHandle`] from
//!   a generation counter (wrapping after 2³² versions). A replaced, withdrawn or pruned
//!   version stays readable through [`AnnouncementSet::get`] for the last
//!   [`ANNOUNCE_RETIRED`] retirements, so a call that is still playing version 2 when
//!   version 3 arrives finishes version 2 and reports it; an older handle yields `None`, never
//!   another announcement.
//! * **Selection** ([`AnnouncementSet::select`]): the playable announcements whose scope matches
//!   the call, highest priority first (ties: newest `valid_from`, then id), at most
//!   [`IVR_MAX_ANNOUNCEMENTS_PER_CALL`].
//! * **A replacement waiting for its audio does not silence its predecessor.** When a newer
//!   version replaces one that is playable and the new one is [`State::Pending`], the old
//!   version is kept as the id's fallback ([`AnnouncementSet::fallback`]): selection plays it
//!   (with its own scope, window, priority and audio) until the new version leaves `Pending`.
//!   Once the new version's audio arrives it alone plays; when it expires, is withdrawn or
//!   becomes scheduled or unplayable, the fallback is dropped too (the CRM replaced it, and
//!   only missing audio is waited for). A version that replaces a pending one keeps the
//!   fallback the pending one had. The stored version (and so the status) is the new one,
//!   `pending`. At most [`ANNOUNCE_FALLBACKS`] ids have a fallback at once; beyond that a
//!   pending replacement silences its predecessor as if it had no fallback.
//!
//! ## Time
//!
//! Validity windows are wall-clock ([`UnixMillis`]): every `handle_*`, [`AnnouncementSet::select`]
//! and [`AnnouncementSet::poll_timeout`] speak `UnixMillis`. The shell converts the deadline from
//! `poll_timeout` to its monotonic timer (`deadline - wall_now` added to its monotonic now) and
//! re-arms after a wall-clock step; a late timer is harmless because every call recomputes from
//! the `now` it is given.
//!
//! ## Memory
//!
//! One [`Announcement`] is 904 bytes on x86_64 (the three scope lists dominate); the whole
//! set, with [`MAX_ANNOUNCEMENTS`] live versions, [`ANNOUNCE_RETIRED`] retired ones,
//! [`ANNOUNCE_FALLBACKS`] fallbacks, the audio table and its event queue, is 52,248 bytes. A test asserts < 1 KiB and < 64 KiB.

use core::cmp::Ordering;
use core::fmt;

use heapless::{Deque, String, Vec};

use crate::ids::{AnnouncementHandle, AnnouncementId};
use crate::limits::{
    ANNOUNCE_AUDIO_KNOWN, ANNOUNCE_EVENT_QUEUE, ANNOUNCE_FALLBACKS, ANNOUNCE_RETIRED,
    IVR_MAX_ANNOUNCEMENTS_PER_CALL, LANGUAGE_MAX, MAX_ANNOUNCEMENTS, MAX_SCOPE_ENTRIES, SITE_MAX,
};
use crate::number::PhoneNumber;
use crate::time::UnixMillis;

/// A SHA-256 digest: the name of an audio file (`P/audio/{sha256}`).
pub type Sha256 = [u8; 32];
/// A site name as used in scopes and in `node.site` (`phl`).
pub type Site = String<SITE_MAX>;
/// A language tag (`en`, `pt-BR`).
pub type Language = String<LANGUAGE_MAX>;

/// Where an announcement applies. Each empty list means "everywhere" for that dimension.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Scope {
    /// Sites (`node.site`) it plays at; empty = every site.
    pub sites: Vec<Site, MAX_SCOPE_ENTRIES>,
    /// Dialled numbers it plays for; empty = any dialled number (or none).
    pub dialled: Vec<PhoneNumber, MAX_SCOPE_ENTRIES>,
    /// Caller number prefixes (`+1215` is stored as a [`PhoneNumber`] of its digits); empty =
    /// every caller, including anonymous ones.
    pub caller_prefixes: Vec<PhoneNumber, MAX_SCOPE_ENTRIES>,
}

impl Scope {
    /// Whether a call at `site`, to `dialled`, from `caller` is in this scope. An absent
    /// dialled number or caller matches only an empty list.
    #[must_use]
    pub fn matches(
        &self,
        site: &str,
        dialled: Option<&PhoneNumber>,
        caller: Option<&PhoneNumber>,
    ) -> bool {
        let site_ok = self.sites.is_empty() || self.sites.iter().any(|s| s.as_str() == site);
        let dialled_ok =
            self.dialled.is_empty() || dialled.is_some_and(|d| self.dialled.contains(d));
        let caller_ok = self.caller_prefixes.is_empty()
            || caller.is_some_and(|c| {
                self.caller_prefixes
                    .iter()
                    .any(|p| c.has_prefix(p.digits()))
            });
        site_ok && dialled_ok && caller_ok
    }
}

/// One version of one announcement, as decoded from the CRM's JSON by the shell.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Announcement {
    /// The CRM's id; also the retained topic's last level.
    pub id: AnnouncementId,
    /// Only increases for one id.
    pub version: u32,
    /// Higher plays first.
    pub priority: i32,
    /// Where it applies.
    pub scope: Scope,
    /// Not played before this instant (`None`: since forever).
    pub valid_from: Option<UnixMillis>,
    /// Not played from this instant on (`None`: until withdrawn).
    pub valid_until: Option<UnixMillis>,
    /// SHA-256 of the audio file, when there is audio.
    pub audio: Option<Sha256>,
    /// Whether the announcement carries text a speech engine can render (the text itself stays
    /// in the shell).
    pub has_text: bool,
    /// Whether the IVR offers a callback after it.
    pub offer_callback: bool,
    /// Language tag (may be empty).
    pub language: Language,
}

impl Announcement {
    /// A version with no scope limits, no window, no content and priority 0: a starting point
    /// for building one field by field.
    #[must_use]
    pub fn new(id: AnnouncementId, version: u32) -> Announcement {
        Announcement {
            id,
            version,
            priority: 0,
            scope: Scope::default(),
            valid_from: None,
            valid_until: None,
            audio: None,
            has_text: false,
            offer_callback: false,
            language: Language::new(),
        }
    }

    /// Checks what the set requires of any version: something to play and a non-empty window.
    ///
    /// # Errors
    /// [`Error::NoContent`] with neither audio nor text; [`Error::EmptyWindow`] when
    /// `valid_until <= valid_from`.
    pub fn validate(&self) -> Result<(), Error> {
        if self.audio.is_none() && !self.has_text {
            return Err(Error::NoContent);
        }
        if let (Some(from), Some(until)) = (self.valid_from, self.valid_until) {
            if until <= from {
                return Err(Error::EmptyWindow);
            }
        }
        Ok(())
    }

    fn window_state(&self, now: UnixMillis) -> Option<State> {
        if self.valid_until.is_some_and(|u| now >= u) {
            Some(State::Expired)
        } else if self.valid_from.is_some_and(|f| now < f) {
            Some(State::Scheduled)
        } else {
            None
        }
    }
}

/// Where one stored announcement stands; see the module docs for the table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum State {
    /// Its window has not opened yet.
    Scheduled,
    /// Playable now.
    Active,
    /// In its window, waiting for its audio file.
    Pending,
    /// In its window, text only, and no speech engine is configured.
    Unplayable,
    /// Its window has closed.
    Expired,
}

impl State {
    /// The string the node's status topic reports.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::Active => "active",
            State::Pending => "pending",
            State::Unplayable => "unplayable",
            State::Expired => "expired",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an input was rejected. The stored announcements are unchanged by a rejected input.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// A lower version than the stored one arrived.
    OlderVersion {
        /// The stored version, which keeps playing.
        current: u32,
    },
    /// The stored version arrived again with different content (versions must change when
    /// content does).
    SameVersionChanged {
        /// The stored version.
        current: u32,
    },
    /// Neither audio nor text.
    NoContent,
    /// `valid_until` is not after `valid_from`.
    EmptyWindow,
    /// [`MAX_ANNOUNCEMENTS`] are stored and none is expired.
    Full,
    /// The audio cache bookkeeping is full of hashes that stored announcements reference.
    AudioTableFull,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OlderVersion { current } => {
                write!(f, "older version than the stored version {current}")
            }
            Error::SameVersionChanged { current } => {
                write!(f, "version {current} already stored with different content")
            }
            Error::NoContent => f.write_str("announcement has neither audio nor text"),
            Error::EmptyWindow => f.write_str("valid_until is not after valid_from"),
            Error::Full => f.write_str("announcement set full (nothing expired to prune)"),
            Error::AudioTableFull => f.write_str("audio table full"),
        }
    }
}

impl core::error::Error for Error {}

/// What the shell tells the set. Feed with [`AnnouncementSet::handle_input`].
#[derive(Clone, Debug, PartialEq, Eq)]
// An `Upsert` is large (the scope lists) and the core has no heap to box it in; inputs are
// moved once and consumed, so the size costs one copy.
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// A decoded, retained `P/announcements/{id}` payload.
    Upsert(Announcement),
    /// An empty retained payload on `P/announcements/{id}`.
    Withdraw(AnnouncementId),
    /// The audio file with this hash is verified and cached locally (also sent at start-up for
    /// every cached file).
    AudioAvailable(Sha256),
    /// The audio file with this hash is no longer cached.
    AudioRemoved(Sha256),
    /// Whether a speech engine is configured (text can be rendered). Defaults to `false`.
    TextRenderable(bool),
}

/// What changed, for the shell's log, counters, disk cache and the retained status message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The version became playable.
    Activated {
        /// Its handle.
        handle: AnnouncementHandle,
        /// Its id.
        id: AnnouncementId,
        /// Its version.
        version: u32,
    },
    /// The version waits for its audio.
    Pending {
        /// Its handle.
        handle: AnnouncementHandle,
        /// Its id.
        id: AnnouncementId,
        /// Its version.
        version: u32,
    },
    /// The version is text only and no speech engine is configured.
    Unplayable {
        /// Its handle.
        handle: AnnouncementHandle,
        /// Its id.
        id: AnnouncementId,
        /// Its version.
        version: u32,
    },
    /// The version is stored and its window opens later.
    Scheduled {
        /// Its handle.
        handle: AnnouncementHandle,
        /// Its id.
        id: AnnouncementId,
        /// Its version.
        version: u32,
    },
    /// The version's window closed. It stays stored (and reported) until pruned or withdrawn.
    Expired {
        /// Its handle.
        handle: AnnouncementHandle,
        /// Its id.
        id: AnnouncementId,
        /// Its version.
        version: u32,
    },
    /// A newer version replaced a stored one; the new version's state event follows.
    Replaced {
        /// The new version's handle.
        handle: AnnouncementHandle,
        /// The id.
        id: AnnouncementId,
        /// The version that was stored.
        old_version: u32,
        /// The version now stored.
        new_version: u32,
    },
    /// The CRM withdrew the announcement; the shell deletes it from its disk cache.
    Withdrawn {
        /// The id.
        id: AnnouncementId,
        /// The version that was stored.
        version: u32,
    },
    /// An expired announcement was removed to make room; the shell deletes it from its cache.
    Pruned {
        /// The id.
        id: AnnouncementId,
        /// The version that was stored.
        version: u32,
    },
    /// An upsert was rejected; the stored version (if any) keeps playing.
    Rejected {
        /// The id of the rejected payload.
        id: AnnouncementId,
        /// The rejected version.
        version: u32,
        /// Why.
        reason: Error,
    },
}

/// What a call plays for one announcement.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Media {
    /// The cached audio file with this hash.
    Audio(Sha256),
    /// The announcement's text, rendered by the speech engine.
    Text,
}

#[derive(Clone, Debug)]
struct Slot {
    handle: AnnouncementHandle,
    ann: Announcement,
    state: State,
}

/// The node's announcements. See the module docs for states and contracts.
#[derive(Debug)]
pub struct AnnouncementSet {
    slots: Vec<Slot, MAX_ANNOUNCEMENTS>,
    /// Per id, the playable version a pending replacement displaced (see the module docs).
    fallbacks: Vec<(AnnouncementHandle, Announcement), ANNOUNCE_FALLBACKS>,
    retired: Deque<(AnnouncementHandle, Announcement), ANNOUNCE_RETIRED>,
    audio: Vec<Sha256, ANNOUNCE_AUDIO_KNOWN>,
    text_renderable: bool,
    next_handle: u32,
    events: Deque<Event, ANNOUNCE_EVENT_QUEUE>,
    events_lost: u32,
}

impl Default for AnnouncementSet {
    fn default() -> Self {
        Self::new()
    }
}

impl AnnouncementSet {
    /// An empty set: no audio cached, no speech engine.
    #[must_use]
    pub fn new() -> AnnouncementSet {
        AnnouncementSet {
            slots: Vec::new(),
            fallbacks: Vec::new(),
            retired: Deque::new(),
            audio: Vec::new(),
            text_renderable: false,
            next_handle: 1,
            events: Deque::new(),
            events_lost: 0,
        }
    }

    /// Feeds one input. Call on every decoded announcement payload, withdrawal, audio cache
    /// change and speech-engine configuration, then drain [`Self::poll_output`] and re-arm from
    /// [`Self::poll_timeout`].
    ///
    /// States of all stored announcements are first brought up to `now_wall`.
    ///
    /// # Errors
    /// An [`Error`] when the input is rejected; the same reason is also queued as
    /// [`Event::Rejected`] (count rejections from the events, not from both).
    pub fn handle_input(&mut self, now_wall: UnixMillis, input: Input) -> Result<(), Error> {
        self.recompute(now_wall);
        let res = match input {
            Input::Upsert(ann) => {
                let (id, version) = (ann.id.clone(), ann.version);
                let res = self.upsert(now_wall, ann);
                if let Err(reason) = res {
                    self.push(Event::Rejected {
                        id,
                        version,
                        reason,
                    });
                }
                res
            }
            Input::Withdraw(id) => {
                if let Some(i) = self.slots.iter().position(|s| s.ann.id == id) {
                    let slot = self.slots.remove(i);
                    let version = slot.ann.version;
                    self.retire(slot);
                    self.push(Event::Withdrawn { id, version });
                }
                Ok(())
            }
            Input::AudioAvailable(sha) => self.audio_available(sha),
            Input::AudioRemoved(sha) => {
                self.audio.retain(|h| *h != sha);
                Ok(())
            }
            Input::TextRenderable(on) => {
                self.text_renderable = on;
                Ok(())
            }
        };
        self.recompute(now_wall);
        res
    }

    /// Brings every state up to `now_wall`. Call when the deadline from [`Self::poll_timeout`]
    /// has passed (a late or early call is harmless).
    pub fn handle_timeout(&mut self, now_wall: UnixMillis) {
        self.recompute(now_wall);
    }

    /// The next queued event. Drain after every `handle_*` call.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next wall-clock instant at which a state changes by time alone (a `valid_from` or
    /// `valid_until` boundary), or `None`. The shell converts it to its monotonic timer.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        self.slots
            .iter()
            .filter_map(|s| match s.state {
                State::Expired => None,
                State::Scheduled => s.ann.valid_from,
                _ => s.ann.valid_until,
            })
            .min()
    }

    /// The playable announcements for a call at `site` to `dialled` from `caller`, in play
    /// order: priority descending, then newest `valid_from` (none counts as oldest), then id.
    /// At most [`IVR_MAX_ANNOUNCEMENTS_PER_CALL`]. Call when a call reaches its announcement
    /// step; it computes from `now_wall`, so it is right even when a timer is late.
    #[must_use]
    pub fn select(
        &self,
        now_wall: UnixMillis,
        site: &str,
        dialled: Option<&PhoneNumber>,
        caller: Option<&PhoneNumber>,
    ) -> Vec<AnnouncementHandle, IVR_MAX_ANNOUNCEMENTS_PER_CALL> {
        self.select_where(now_wall, site, dialled, caller, |_| true)
    }

    /// [`AnnouncementSet::select`] among the versions `keep` accepts (the node keeps those
    /// of the caller's language), so the limit counts only those.
    #[must_use]
    pub fn select_where(
        &self,
        now_wall: UnixMillis,
        site: &str,
        dialled: Option<&PhoneNumber>,
        caller: Option<&PhoneNumber>,
        keep: impl Fn(&Announcement) -> bool,
    ) -> Vec<AnnouncementHandle, IVR_MAX_ANNOUNCEMENTS_PER_CALL> {
        let mut picked: Vec<(AnnouncementHandle, &Announcement), MAX_ANNOUNCEMENTS> = self
            .slots
            .iter()
            .filter_map(|s| match self.state_at(&s.ann, now_wall) {
                State::Active => Some((s.handle, &s.ann)),
                State::Pending => self
                    .fallback(&s.ann.id)
                    .filter(|(_, f)| self.state_at(f, now_wall) == State::Active),
                _ => None,
            })
            .filter(|(_, a)| a.scope.matches(site, dialled, caller) && keep(a))
            .collect();
        picked.sort_unstable_by(|a, b| play_order(a.1, b.1));
        picked
            .iter()
            .take(IVR_MAX_ANNOUNCEMENTS_PER_CALL)
            .map(|(h, _)| *h)
            .collect()
    }

    /// The announcement version behind `handle`: a stored one, or one of the last
    /// [`ANNOUNCE_RETIRED`] replaced/withdrawn/pruned versions. `None` when it is gone.
    #[must_use]
    pub fn get(&self, handle: AnnouncementHandle) -> Option<&Announcement> {
        self.slots
            .iter()
            .find(|s| s.handle == handle)
            .map(|s| &s.ann)
            .or_else(|| {
                self.fallbacks
                    .iter()
                    .find(|(h, _)| *h == handle)
                    .map(|(_, a)| a)
            })
            .or_else(|| {
                self.retired
                    .iter()
                    .find(|(h, _)| *h == handle)
                    .map(|(_, a)| a)
            })
    }

    /// What to play for `handle` (audio when cached, else text when a speech engine is
    /// configured), also for a retired version a call still holds. `None`: nothing playable.
    #[must_use]
    pub fn media(&self, handle: AnnouncementHandle) -> Option<Media> {
        let ann = self.get(handle)?;
        match ann.audio {
            Some(sha) if self.audio.contains(&sha) => Some(Media::Audio(sha)),
            _ if ann.has_text && self.text_renderable => Some(Media::Text),
            _ => None,
        }
    }

    /// The state of a stored version as of the last `handle_*` call; `None` for a retired or
    /// unknown handle.
    #[must_use]
    pub fn state(&self, handle: AnnouncementHandle) -> Option<State> {
        self.slots
            .iter()
            .find(|s| s.handle == handle)
            .map(|s| s.state)
    }

    /// The handle of the stored version of `id`.
    #[must_use]
    pub fn current(&self, id: &AnnouncementId) -> Option<AnnouncementHandle> {
        self.slots
            .iter()
            .find(|s| &s.ann.id == id)
            .map(|s| s.handle)
    }

    /// The older version of `id` that plays while the stored one is [`State::Pending`] (see the
    /// module docs): its handle and content. `None` when the stored version is not pending or
    /// there was no playable version before it. Selection still checks its window and audio.
    #[must_use]
    pub fn fallback(&self, id: &AnnouncementId) -> Option<(AnnouncementHandle, &Announcement)> {
        self.fallbacks
            .iter()
            .find(|(_, a)| &a.id == id)
            .map(|(h, a)| (*h, a))
    }

    /// Every stored version with its state, in storage order: what the status message and
    /// `ccedge announcements` report.
    pub fn iter(&self) -> impl Iterator<Item = (AnnouncementHandle, &Announcement, State)> + '_ {
        self.slots.iter().map(|s| (s.handle, &s.ann, s.state))
    }

    /// Number of stored versions (every state, expired included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether nothing is stored.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Events dropped because [`Self::poll_output`] was not drained (0 when the shell follows
    /// the run loop).
    #[must_use]
    pub fn events_lost(&self) -> u32 {
        self.events_lost
    }

    fn upsert(&mut self, now: UnixMillis, ann: Announcement) -> Result<(), Error> {
        ann.validate()?;
        if let Some(i) = self.slots.iter().position(|s| s.ann.id == ann.id) {
            let current = self.slots[i].ann.version;
            return match ann.version.cmp(&current) {
                Ordering::Less => Err(Error::OlderVersion { current }),
                Ordering::Equal if self.slots[i].ann == ann => Ok(()),
                Ordering::Equal => Err(Error::SameVersionChanged { current }),
                Ordering::Greater => {
                    // `handle_input` brought the states up to `now`.
                    let old_playable = self.slots[i].state == State::Active;
                    let handle = self.fresh_handle();
                    let state = self.state_at(&ann, now);
                    let new = Slot { handle, ann, state };
                    let old = core::mem::replace(&mut self.slots[i], new);
                    let (id, new_version) = (old.ann.id.clone(), self.slots[i].ann.version);
                    let old_version = old.ann.version;
                    if old_playable {
                        // Dropped again by `recompute` unless the new version is pending.
                        self.keep_fallback(old.handle, &old.ann);
                    }
                    self.retire(old);
                    self.push(Event::Replaced {
                        handle,
                        id,
                        old_version,
                        new_version,
                    });
                    self.push_state_event(i);
                    Ok(())
                }
            };
        }
        if self.slots.is_full() {
            self.prune_expired(now);
        }
        if self.slots.is_full() {
            return Err(Error::Full);
        }
        let handle = self.fresh_handle();
        let state = self.state_at(&ann, now);
        // Cannot fail: checked `is_full` above.
        let _ = self.slots.push(Slot { handle, ann, state });
        self.push_state_event(self.slots.len() - 1);
        Ok(())
    }

    fn audio_available(&mut self, sha: Sha256) -> Result<(), Error> {
        if self.audio.contains(&sha) {
            return Ok(());
        }
        if self.audio.is_full() {
            let slots = &self.slots;
            let fallbacks = &self.fallbacks;
            self.audio.retain(|h| {
                slots.iter().any(|s| s.ann.audio.as_ref() == Some(h))
                    || fallbacks.iter().any(|(_, a)| a.audio.as_ref() == Some(h))
            });
        }
        self.audio.push(sha).map_err(|_| Error::AudioTableFull)
    }

    fn prune_expired(&mut self, now: UnixMillis) {
        let mut i = 0;
        while i < self.slots.len() {
            if self.slots[i].ann.window_state(now) == Some(State::Expired) {
                let slot = self.slots.remove(i);
                let (id, version) = (slot.ann.id.clone(), slot.ann.version);
                self.retire(slot);
                self.push(Event::Pruned { id, version });
            } else {
                i += 1;
            }
        }
    }

    /// Makes `ann` the fallback of its id, replacing an older one; nothing when the table is
    /// full (see the module docs).
    fn keep_fallback(&mut self, handle: AnnouncementHandle, ann: &Announcement) {
        if let Some(f) = self.fallbacks.iter_mut().find(|(_, a)| a.id == ann.id) {
            *f = (handle, ann.clone());
        } else {
            let _ = self.fallbacks.push((handle, ann.clone()));
        }
    }

    fn retire(&mut self, slot: Slot) {
        if self.retired.is_full() {
            let _ = self.retired.pop_front();
        }
        let _ = self.retired.push_back((slot.handle, slot.ann));
    }

    fn fresh_handle(&mut self) -> AnnouncementHandle {
        let h = AnnouncementHandle(self.next_handle);
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        h
    }

    fn state_at(&self, ann: &Announcement, now: UnixMillis) -> State {
        if let Some(s) = ann.window_state(now) {
            return s;
        }
        match ann.audio {
            Some(sha) if self.audio.contains(&sha) => State::Active,
            _ if ann.has_text && self.text_renderable => State::Active,
            Some(_) => State::Pending,
            None => State::Unplayable,
        }
    }

    fn recompute(&mut self, now: UnixMillis) {
        for i in 0..self.slots.len() {
            let s = self.state_at(&self.slots[i].ann, now);
            if s != self.slots[i].state {
                self.slots[i].state = s;
                self.push_state_event(i);
            }
        }
        // A fallback lasts while its id's stored version waits for audio, within its own window.
        let slots = &self.slots;
        self.fallbacks.retain(|(_, f)| {
            f.window_state(now) != Some(State::Expired)
                && slots
                    .iter()
                    .any(|s| s.ann.id == f.id && s.state == State::Pending)
        });
    }

    fn push_state_event(&mut self, i: usize) {
        let Some(slot) = self.slots.get(i) else {
            return;
        };
        let (handle, id, version) = (slot.handle, slot.ann.id.clone(), slot.ann.version);
        let ev = match slot.state {
            State::Active => Event::Activated {
                handle,
                id,
                version,
            },
            State::Pending => Event::Pending {
                handle,
                id,
                version,
            },
            State::Unplayable => Event::Unplayable {
                handle,
                id,
                version,
            },
            State::Scheduled => Event::Scheduled {
                handle,
                id,
                version,
            },
            State::Expired => Event::Expired {
                handle,
                id,
                version,
            },
        };
        self.push(ev);
    }

    fn push(&mut self, ev: Event) {
        if self.events.is_full() {
            let _ = self.events.pop_front();
            self.events_lost = self.events_lost.saturating_add(1);
        }
        let _ = self.events.push_back(ev);
    }
}

/// Play order: priority descending, then newest `valid_from` (none = oldest), then id.
fn play_order(a: &Announcement, b: &Announcement) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| b.valid_from.cmp(&a.valid_from))
        .then_with(|| a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests;
