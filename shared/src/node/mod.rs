//! One ccedge node: every call, the callback queue, the announcement set, booking and the
//! mapping from call events to CallEvents, as one sans-IO machine.
//!
//! The daemon (`edge`) and the simulator (`firmware-sim sim`) both drive this type, so every
//! seed of the simulator runs the daemon's own wiring. The shell does only I/O around it:
//! sockets, the media pacer, the disk, the MQTT link and clocks. See `docs/ARCHITECTURE.md`.
//!
//! ## Driving it
//!
//! ```text
//! node.handle_sip(now, from, datagram, || allocate RTP address + randomness);
//! node.handle_rtp(now, call, from, trusted, packet);   // a call's inbound RTP
//! node.handle_playback_finished(now, call);             // the pacer played the last Play
//! node.handle_stored(now, &callback_id, ok);            // the disk wrote (or failed) a booking
//! node.handle_crm(now, CrmInput::…);                    // announcement, ack, callback state …
//! node.handle_shutdown(now);
//! node.handle_timeout(now);                             // when poll_timeout() has passed
//! while let Some(out) = node.poll_output(&mut sip_buf) { /* act */ }
//! arm one timer at node.poll_timeout();
//! ```
//!
//! After every `handle_*` the shell drains [`Node::poll_output`] to `None`, then re-arms its
//! one timer from [`Node::poll_timeout`] (the earliest of every call's deadline, the callback
//! queue's expiry and the announcement set's next validity change).
//!
//! ## Time
//!
//! Every input carries a [`Now`]: the monotonic instant (timers) and the wall clock (event
//! timestamps, callback ages, announcement validity). The node never reads a clock.
//!
//! ## Booking
//!
//! A call's `BookCallback` becomes a `Requested` entry in the [`CallbackQueue`] and an
//! [`Output::Callback`]`(Store)`; the caller hears "booked" only after
//! [`Node::handle_stored`]`(ok)`. A refusal the node can answer at once (the number is
//! already booked, the queue is full) is handed to the call only after the call's current
//! outputs have been drained, so what the IVR says about it is played last and heard to its
//! end. A durable booking the IVR no longer waits for (its booking timeout passed) is
//! cancelled, so no caller is booked who heard "could not book".

mod language;
mod table;

#[cfg(test)]
mod tests;

use core::fmt::{self, Write as _};
use core::net::SocketAddr;

use heapless::Vec;

use crate::announce::{self, AnnouncementSet, Language, Site};
use crate::call::{self, Call, Setup};
use crate::callback::window::Zone;
use crate::callback::{self, Booking, CallbackQueue, CrmState, QueueError};
use crate::event::{EventKind, TransferTarget};
use crate::ids::{AnnouncementHandle, AnnouncementId, CallId, CallbackId};
use crate::ivr::{AnnouncementInfo, BookingResult, Playlist};
use crate::limits::{CALLBACK_QUEUE_CAPACITY, IVR_MAX_ANNOUNCEMENTS_PER_CALL, SIP_MAX_DATAGRAM};
use crate::sip::route::Transport;
use crate::sip::{self, endpoint, Message, Method};
use crate::time::{Duration, Instant, UnixMillis};

pub use language::Languages;
#[cfg(feature = "std")]
pub use table::HeapCalls;
pub use table::{ArrayCalls, CallKey, CallTable};

/// The time of an input: the monotonic clock for timers, the wall clock for what the outside
/// world sees.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub at: Instant,
    /// Wall-clock time.
    pub wall: UnixMillis,
}

impl Now {
    /// The wall-clock time `deadline` as a monotonic instant, counted from this input.
    fn to_mono(self, deadline: UnixMillis) -> Instant {
        let ms = deadline.0.saturating_sub(self.wall.0).max(0);
        self.at
            .saturating_add(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
    }
}

/// The node's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The calls' settings (SIP identity, IVR, timers).
    pub call: &'static call::Config,
    /// `node.site`: announcements scoped to other sites do not play here.
    pub site: Site,
    /// The callback queue's settings.
    pub callbacks: callback::Config,
    /// The centre's opening hours (`callbacks.hours`, `callbacks.holidays`): callers choose
    /// a callback window inside them when [`ivr::Config::offer_windows`] is set.
    ///
    /// [`ivr::Config::offer_windows`]: crate::ivr::Config::offer_windows
    pub hours: &'static callback::window::Hours,
    /// Most calls at once (calls not ended yet); new INVITEs beyond get 503. An ended call's
    /// dialog lingers up to 32 s to answer retransmissions without counting here; the table
    /// holds at most twice this in all.
    pub max_calls: usize,
    /// The languages offered (`ivr.languages`, `ivr.language_by_dialled`). The shell sets
    /// `call.ivr.languages` to their count.
    pub languages: Languages,
}

/// A message from the CRM, decoded by the shell's link.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum CrmInput {
    /// An announcement published, withdrawn, or its audio cached / removed.
    Announcement(announce::Input),
    /// The link (re)connected to the broker: publish every booked callback the CRM has not
    /// accepted yet.
    Connected,
    /// The broker acknowledged a CallbackRequest.
    CallbackSynced(CallbackId),
    /// The CRM moved a callback on.
    CallbackState {
        /// Which.
        id: CallbackId,
        /// Its new state.
        state: CrmState,
        /// When the CRM says it happened.
        at: UnixMillis,
        /// A new callback window, when the CRM moves it.
        window: Option<callback::Window>,
    },
}

/// A CallEvent without its `seq`: the shell's sequencer numbers it, the outbox keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEvent {
    /// The call, while it is in the table (`None` for node-level events).
    pub call: Option<CallKey>,
    /// The call's id (`None` for node-level events).
    pub call_id: Option<CallId>,
    /// Order within the call (0 for node-level events).
    pub call_seq: u32,
    /// When it happened.
    pub at: UnixMillis,
    /// The call's language tag at that moment (`None` for node-level events).
    pub language: Option<Language>,
    /// What happened.
    pub kind: EventKind,
}

impl crate::event::journal::Unnumbered for NodeEvent {
    fn seq_skipped(at: UnixMillis, from: u64, to: u64, reason: crate::event::SkipReason) -> Self {
        NodeEvent {
            call: None,
            call_id: None,
            call_seq: 0,
            at,
            language: None,
            kind: EventKind::SeqSkipped { from, to, reason },
        }
    }
    fn at(&self) -> UnixMillis {
        self.at
    }
}

/// Work for the shell, drained with [`Node::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// Send the SIP message written to the buffer given to `poll_output` (`len` bytes).
    Transmit {
        /// Where to.
        to: SocketAddr,
        /// Its length.
        len: usize,
        /// On which transport. For a stream, use a connection to `to` if one is open, else
        /// the connection `conn` names (the one the call's INVITE came on), else open one.
        transport: Transport,
        /// The connection of the call's INVITE (its peer address), for a stream.
        conn: Option<SocketAddr>,
    },
    /// A call was created on the RTP address the setup closure gave it.
    CallCreated {
        /// The call.
        call: CallKey,
        /// Its local RTP address.
        local_rtp: SocketAddr,
    },
    /// A call's media path: start, redirect, hold, stop.
    Media {
        /// The call.
        call: CallKey,
        /// What to do.
        media: call::Media,
    },
    /// Play this playlist to the call (replacing what plays), then report
    /// [`Node::handle_playback_finished`].
    Play {
        /// The call.
        call: CallKey,
        /// What to play; announcement handles resolve with [`Node::announcements`].
        playlist: Playlist,
        /// The call's language (index into [`Config::languages`]): play the prompts in it
        /// (a [`crate::ivr::Prompt::LanguageOffer`] names its own language).
        language: u8,
    },
    /// Stop what plays on the call.
    StopPlayback {
        /// The call.
        call: CallKey,
    },
    /// The RTP address given by a setup closure is free again (`call` is `None` when the
    /// call could not be created at all).
    Released {
        /// The call, gone from the table.
        call: Option<CallKey>,
        /// Its local RTP address.
        local_rtp: SocketAddr,
    },
    /// The callback queue's work: store, publish, update or remove a record.
    Callback(callback::Output),
    /// What a caller was told about their booking (for logs and counters).
    Booking {
        /// The call.
        call: CallKey,
        /// The callback entry (`None` when nothing was queued).
        callback: Option<CallbackId>,
        /// What the IVR was told.
        result: BookingResult,
    },
    /// An event for the CRM.
    Event(NodeEvent),
    /// The announcement set changed (for logs and status). [`announce::Event::Withdrawn`] and
    /// [`announce::Event::Pruned`] also mean: delete it from the disk cache.
    Announcement(announce::Event),
    /// A new version of an announcement was stored (it passed the version rule): write the
    /// document it came in to the disk cache, replacing the older one. Follows the
    /// announcement's [`Output::Announcement`] events. An upsert the set refused or already
    /// held (the same version again) gives none.
    StoreAnnouncement {
        /// Its id.
        id: AnnouncementId,
        /// The version stored.
        version: u32,
    },
}

/// Why an input was refused. None of these is fatal; the shell logs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No call has this key (it ended).
    UnknownCall,
    /// The call refused the input.
    Call(call::Error),
    /// The callback queue refused it.
    Queue(QueueError),
    /// The announcement set refused it.
    Announcement(announce::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownCall => f.write_str("no such call"),
            Error::Call(e) => write!(f, "call: {e:?}"),
            Error::Queue(e) => write!(f, "callback queue: {e}"),
            Error::Announcement(e) => write!(f, "announcement: {e:?}"),
        }
    }
}

impl core::error::Error for Error {}

/// Counters for `ccedge status` and the simulator's report.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Stats {
    /// Calls created.
    pub calls_total: u64,
    /// INVITEs refused with 503 (full, draining, no RTP address).
    pub calls_refused: u64,
    /// SIP datagrams that did not parse, or requests the parser refused.
    pub sip_malformed: u64,
    /// Inbound RTP packets a call refused (foreign source, not RTP, before media).
    pub rtp_dropped: u64,
    /// Of those, packets from a source the call does not take media from (RTP injection
    /// attempts, or a gateway whose media comes from an address neither its SDP nor
    /// `sip.allow` names).
    pub rtp_foreign: u64,
    /// Callbacks booked durably.
    pub callbacks_booked: u64,
    /// Bookings that failed (disk, full queue, late).
    pub callbacks_failed: u64,
    /// Callers told they were already booked.
    pub callbacks_already_booked: u64,
    /// Booked callbacks that expired.
    pub callbacks_expired: u64,
    /// Durable bookings cancelled because the IVR had stopped waiting for them.
    pub late_bookings_cancelled: u64,
}

/// A call's announcements: handle, id and version.
type Anns = Vec<(AnnouncementHandle, AnnouncementId, u32), IVR_MAX_ANNOUNCEMENTS_PER_CALL>;

/// One call in the table.
#[derive(Debug)]
pub struct Slot {
    call: Call,
    peer: SocketAddr,
    local_rtp: SocketAddr,
    /// The announcements selected at the INVITE (or the last language choice): handle, id
    /// and version, for their events.
    anns: Anns,
    /// The callback this call requested.
    booking: Option<CallbackId>,
    /// The call's language (index into [`Config::languages`]), as of the outputs drained.
    language: u8,
    /// A booking answer to hand the call once its current outputs are drained.
    deferred: Option<BookingResult>,
    deadline: Option<Instant>,
    dirty: bool,
    /// `call.ended` was emitted: no longer an active call.
    ended: bool,
}

impl Slot {
    /// The call.
    #[must_use]
    pub fn call(&self) -> &Call {
        &self.call
    }

    /// Where the call's SIP comes from.
    #[must_use]
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Its local RTP address.
    #[must_use]
    pub fn local_rtp(&self) -> SocketAddr {
        self.local_rtp
    }

    /// Whether the call has ended (it may stay in the table to answer retransmissions).
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The call's language (index into [`Config::languages`]).
    #[must_use]
    pub fn language(&self) -> u8 {
        self.language
    }
}

/// Largest stateless answer: the request's headers echoed plus what the answer adds.
const REPLY_MAX: usize = SIP_MAX_DATAGRAM + 512;

/// The node. `T` is where calls live ([`HeapCalls`] in the daemon, [`ArrayCalls`] on
/// firmware).
pub struct Node<T: CallTable> {
    cfg: Config,
    calls: T,
    queue: CallbackQueue,
    anns: AnnouncementSet,
    /// Bookings waiting for their store: callback id → call.
    bookings: Vec<(CallbackId, CallKey), CALLBACK_QUEUE_CAPACITY>,
    /// Node-level outputs waiting to be polled.
    queued: heapless::Deque<Output, 8>,
    reply: [u8; REPLY_MAX],
    reply_pending: Option<(SocketAddr, Transport, usize)>,
    last: Now,
    next_booking: u64,
    active: usize,
    draining: bool,
    stats: Stats,
    /// The centre's time zone, for callback offers ([`Node::set_zone`]).
    zone: Zone,
}

impl<T: CallTable> fmt::Debug for Node<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("calls", &self.calls.len())
            .field("active", &self.active)
            .field("queue", &self.queue.len())
            .field("draining", &self.draining)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<T: CallTable> Node<T> {
    /// A node with no calls, an empty queue and no announcements. After a restart, follow
    /// with [`Node::restore_callbacks`] and one [`Node::handle_crm`] per cached announcement
    /// and audio file.
    pub fn new(cfg: Config, calls: T, now: Now) -> Self {
        Node {
            queue: CallbackQueue::new(cfg.callbacks),
            cfg,
            calls,
            anns: AnnouncementSet::new(),
            bookings: Vec::new(),
            queued: heapless::Deque::new(),
            reply: [0; REPLY_MAX],
            reply_pending: None,
            last: now,
            next_booking: 0,
            active: 0,
            draining: false,
            stats: Stats::default(),
            zone: Zone::utc(),
        }
    }

    /// The centre's time zone (`callbacks.timezone`) as the offsets of the coming weeks; the
    /// shell sets it at start and refreshes it (daily is plenty) so that callback offers are
    /// spoken in local time. UTC until set.
    pub fn set_zone(&mut self, zone: Zone) {
        self.zone = zone;
    }

    // ---- queries ---------------------------------------------------------------------------

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Calls up now: created and not yet ended. A call that ended leaves this count at once,
    /// though it may stay in the table a while to answer retransmissions.
    #[must_use]
    pub fn active_calls(&self) -> usize {
        self.active
    }

    /// Every call in the table, ended ones included.
    #[must_use]
    pub fn calls(&self) -> &T {
        &self.calls
    }

    /// The call with this key.
    #[must_use]
    pub fn call(&self, key: CallKey) -> Option<&Slot> {
        self.calls.get(key)
    }

    /// The callback queue.
    #[must_use]
    pub fn queue(&self) -> &CallbackQueue {
        &self.queue
    }

    /// The announcement set.
    #[must_use]
    pub fn announcements(&self) -> &AnnouncementSet {
        &self.anns
    }

    /// Whether `handle`'s scope includes this node's site (its state in the set does not
    /// say: an announcement for another site is Active there, not here).
    #[must_use]
    pub fn plays_here(&self, handle: AnnouncementHandle) -> bool {
        self.anns.get(handle).is_some_and(|a| {
            a.scope.sites.is_empty()
                || a.scope
                    .sites
                    .iter()
                    .any(|s| s.as_str() == self.cfg.site.as_str())
        })
    }

    /// Whether shutdown began.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    // ---- inputs ----------------------------------------------------------------------------

    /// Puts the callback records read from disk back in the queue (at start-up).
    pub fn restore_callbacks<I: IntoIterator<Item = callback::Entry>>(
        &mut self,
        now: Now,
        records: I,
    ) -> callback::RestoreReport {
        self.last = now;
        self.queue.restore(records)
    }

    /// A SIP datagram from `from`. `setup` is asked for a new call's RTP address and
    /// randomness only when an acceptable INVITE may become a call; `None` from it (no RTP
    /// address free) answers 503.
    pub fn handle_sip<F>(&mut self, now: Now, from: SocketAddr, data: &[u8], setup: F)
    where
        F: FnOnce() -> Option<Setup>,
    {
        self.handle_sip_on(now, from, Transport::Udp, data, setup);
    }

    /// A SIP message from `from` on `transport`: a datagram, or one message the shell framed
    /// on a stream connection whose peer is `from`. As [`Node::handle_sip`] otherwise.
    pub fn handle_sip_on<F>(
        &mut self,
        now: Now,
        from: SocketAddr,
        transport: Transport,
        data: &[u8],
        setup: F,
    ) where
        F: FnOnce() -> Option<Setup>,
    {
        self.last = now;
        if data
            .iter()
            .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        {
            // A keep-alive (RFC 5626 §3.5.1: CRLF, or CRLFCRLF on a stream): not an error.
            return;
        }
        let msg = match sip::parse(data) {
            Ok(m) => m,
            Err(e) => {
                self.stats.sip_malformed += 1;
                if let Some(status) = e.status() {
                    self.reply_salvaged(from, transport, data, status);
                }
                return;
            }
        };
        match msg {
            Message::Request(r) => {
                let mut req = match r.to_incoming() {
                    Ok(req) => req,
                    Err(e) => {
                        self.stats.sip_malformed += 1;
                        if let Some(status) = e.status() {
                            self.reply_salvaged(from, transport, data, status);
                        }
                        return;
                    }
                };
                req.received_from = Some(from);
                req.transport = transport;
                if let Some(key) = self.calls.find(req.call_id.as_bytes()) {
                    if let Some(s) = self.calls.get_mut(key) {
                        // A refusal has queued its own error response.
                        let _ = s.call.handle_sip_request(now.at, &req);
                    }
                    self.mark(key);
                    return;
                }
                match endpoint::verdict_with(&req, self.cfg.call.sip.min_se_secs) {
                    endpoint::Verdict::Ignore => {}
                    endpoint::Verdict::Respond(status) => self.reply(from, &req, status),
                    endpoint::Verdict::NewDialog => self.new_call(now, from, &req, setup),
                }
            }
            Message::Response(r) => {
                let Ok(resp) = r.to_incoming_response() else {
                    // A response beyond the dialog limits (or without what a response
                    // needs) is dropped, never silently: it counts as malformed.
                    self.stats.sip_malformed += 1;
                    return;
                };
                if let Some(key) = self.calls.find(resp.call_id.as_bytes()) {
                    if let Some(s) = self.calls.get_mut(key) {
                        let _ = s.call.handle_sip_response(now.at, &resp);
                    }
                    self.mark(key);
                }
            }
        }
    }

    /// An RTP datagram on `call`'s port. `trusted`: the shell vouches for the source (it is
    /// one of its signalling peers); see [`Call::handle_rtp`] for which sources a call hears.
    ///
    /// # Errors
    /// [`Error::UnknownCall`], or [`Error::Call`] when the call refused the packet (counted in
    /// [`Stats::rtp_dropped`]).
    pub fn handle_rtp(
        &mut self,
        now: Now,
        key: CallKey,
        from: SocketAddr,
        trusted: bool,
        data: &[u8],
    ) -> Result<(), Error> {
        self.last = now;
        let Some(s) = self.calls.get_mut(key) else {
            self.stats.rtp_dropped += 1;
            return Err(Error::UnknownCall);
        };
        // RFC 5761 §4: with rtcp-mux the peer's RTCP arrives on the RTP port. It must not
        // reach the RTP statistics; the shell reads it with [`Node::handle_rtcp`].
        if crate::rtp::rtcp::is_rtcp(data) {
            return Ok(());
        }
        if let Err(e) = s.call.handle_rtp(now.at, from, trusted, data) {
            self.stats.rtp_dropped += 1;
            if e == call::Error::RtpSource {
                self.stats.rtp_foreign += 1;
            }
            return Err(Error::Call(e));
        }
        self.mark(key);
        Ok(())
    }

    /// An RTCP compound packet for `call` (on its RTP port with rtcp-mux): what the peer says
    /// about the stream the shell sends (`ours`) goes into the call's [`call::PeerReport`].
    ///
    /// # Errors
    /// [`Error::UnknownCall`], or [`Error::Call`] when the call refused the packet (counted in
    /// [`Stats::rtp_dropped`]).
    pub fn handle_rtcp(
        &mut self,
        now: Now,
        key: CallKey,
        from: SocketAddr,
        trusted: bool,
        data: &[u8],
        ours: crate::rtp::Ssrc,
    ) -> Result<(), Error> {
        self.last = now;
        let Some(s) = self.calls.get_mut(key) else {
            self.stats.rtp_dropped += 1;
            return Err(Error::UnknownCall);
        };
        let arrival = crate::rtp::rtcp::ntp_from_unix_ms(now.wall.0);
        if let Err(e) = s
            .call
            .handle_rtcp(now.at, arrival, from, trusted, data, ours)
        {
            self.stats.rtp_dropped += 1;
            if e == call::Error::RtpSource {
                self.stats.rtp_foreign += 1;
            }
            return Err(Error::Call(e));
        }
        Ok(())
    }

    /// What the shell needs to send `call`'s RTCP report `now`: where it goes and the report
    /// block about the peer's stream (none before the peer's first RTP packet). `None` when
    /// the call has no media peer (not answered, on its way out, or unknown).
    pub fn rtcp_report(
        &mut self,
        now: Now,
        key: CallKey,
    ) -> Option<(SocketAddr, Option<crate::rtp::rtcp::ReportBlock>)> {
        let s = self.calls.get_mut(key)?;
        let to = s.call.rtcp_target()?;
        Some((to, s.call.rtcp_block(now.at)))
    }

    /// The latest [`Output::Play`] of `call` played to its end.
    ///
    /// # Errors
    /// [`Error::UnknownCall`]; [`Error::Call`] when the call expected no playback.
    pub fn handle_playback_finished(&mut self, now: Now, key: CallKey) -> Result<(), Error> {
        self.input(now, key, call::Input::PlaybackFinished)
    }

    /// The disk wrote (`ok`) or failed to write the record of [`callback::Output::Store`].
    ///
    /// # Errors
    /// [`Error::Queue`] when the queue expected no such answer.
    pub fn handle_stored(&mut self, now: Now, id: &CallbackId, ok: bool) -> Result<(), Error> {
        self.last = now;
        let booking = self.queue.stored(id, ok).map_err(Error::Queue)?;
        let result = match booking {
            Booking::Booked { position } => BookingResult::Booked {
                position: clamp(position),
            },
            Booking::NotBooked => BookingResult::Failed,
        };
        let key = self
            .bookings
            .iter()
            .position(|(b, _)| b == id)
            .map(|i| self.bookings.swap_remove(i).1);
        let Some(key) = key else {
            // The call is gone: a durable booking stands (the caller confirmed it).
            self.count_booking(result);
            return Ok(());
        };
        let Some(s) = self.calls.get_mut(key) else {
            self.count_booking(result);
            return Ok(());
        };
        let taken = s
            .call
            .handle_input(now.at, call::Input::BookingResult(result))
            .is_ok();
        let told = if taken { result } else { BookingResult::Failed };
        if !taken && ok {
            // The IVR gave up waiting (the caller heard "could not book"): the booking must
            // not stand.
            self.stats.late_bookings_cancelled += 1;
            let _ = self.queue.cancel(now.wall, id);
        }
        self.count_booking(told);
        self.push(Output::Booking {
            call: key,
            callback: Some(id.clone()),
            result: told,
        });
        self.mark(key);
        Ok(())
    }

    /// A message from the CRM.
    ///
    /// # Errors
    /// What the queue or the announcement set refused (the node keeps what it had).
    pub fn handle_crm(&mut self, now: Now, input: CrmInput) -> Result<(), Error> {
        self.last = now;
        match input {
            CrmInput::Announcement(a) => {
                let upsert = match &a {
                    announce::Input::Upsert(x) => Some((x.id.clone(), x.version)),
                    _ => None,
                };
                let held = |anns: &AnnouncementSet, id: &AnnouncementId| {
                    anns.current(id)
                        .and_then(|h| anns.get(h))
                        .map(|a| a.version)
                };
                let before = upsert.as_ref().and_then(|(id, _)| held(&self.anns, id));
                let r = self.anns.handle_input(now.wall, a);
                self.drain_announcements();
                if let (Ok(()), Some((id, version))) = (&r, upsert) {
                    if before != Some(version) && held(&self.anns, &id) == Some(version) {
                        self.push(Output::StoreAnnouncement { id, version });
                    }
                }
                r.map_err(Error::Announcement)
            }
            CrmInput::Connected => {
                self.queue.resync();
                Ok(())
            }
            CrmInput::CallbackSynced(id) => self.queue.synced(&id).map_err(Error::Queue),
            CrmInput::CallbackState {
                id,
                state,
                at,
                window,
            } => {
                if let Some(w) = window {
                    self.queue.move_window(&id, w).map_err(Error::Queue)?;
                }
                self.queue.crm_state(&id, state, at).map_err(Error::Queue)
            }
        }
    }

    /// A technician cancels a callback.
    ///
    /// # Errors
    /// [`Error::Queue`] for an unknown id.
    pub fn cancel_callback(&mut self, now: Now, id: &CallbackId) -> Result<(), Error> {
        self.last = now;
        self.queue.cancel(now.wall, id).map_err(Error::Queue)
    }

    /// Shutdown: every call hangs up; new INVITEs get 503.
    pub fn handle_shutdown(&mut self, now: Now) {
        self.last = now;
        self.draining = true;
        self.calls.for_each_mut(&mut |s| {
            let _ = s.call.handle_input(now.at, call::Input::Shutdown);
            let first = !s.dirty;
            s.dirty = true;
            first
        });
    }

    /// The deadline from [`Node::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Now) {
        self.last = now;
        while let Some(key) = self.calls.pop_due(now.at) {
            if let Some(s) = self.calls.get_mut(key) {
                s.deadline = None;
                s.call.handle_timeout(now.at);
            }
            self.mark(key);
        }
        if self.queue.poll_timeout().is_some_and(|t| t <= now.wall) {
            self.queue.handle_timeout(now.wall);
        }
        if self.anns.poll_timeout().is_some_and(|t| t <= now.wall) {
            self.anns.handle_timeout(now.wall);
            self.drain_announcements();
        }
    }

    /// When to call [`Node::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let calls = self.calls.earliest();
        let queue = self.queue.poll_timeout().map(|t| self.last.to_mono(t));
        let anns = self.anns.poll_timeout().map(|t| self.last.to_mono(t));
        [calls, queue, anns].into_iter().flatten().min()
    }

    /// The next piece of work. `sip_buf` receives [`Output::Transmit`]'s datagram (give it at
    /// least [`SIP_MAX_DATAGRAM`] + 512 bytes). Drain to `None` after every input.
    pub fn poll_output(&mut self, sip_buf: &mut [u8]) -> Option<Output> {
        loop {
            if let Some((to, transport, len)) = self.reply_pending.take() {
                let n = len.min(sip_buf.len());
                sip_buf[..n].copy_from_slice(&self.reply[..n]);
                let conn = transport.is_reliable().then_some(to);
                return Some(Output::Transmit {
                    to,
                    len: n,
                    transport,
                    conn,
                });
            }
            if let Some(o) = self.queued.pop_front() {
                return Some(o);
            }
            if let Some(o) = self.queue.poll_output() {
                if let callback::Output::Remove {
                    id,
                    state: callback::State::Expired,
                } = &o
                {
                    self.stats.callbacks_expired += 1;
                    self.push(Output::Event(NodeEvent {
                        call: None,
                        call_id: None,
                        call_seq: 0,
                        at: self.last.wall,
                        language: None,
                        kind: EventKind::CallbackExpired {
                            callback_id: id.clone(),
                        },
                    }));
                }
                return Some(Output::Callback(o));
            }
            let key = self.calls.peek_dirty()?;
            if let Some(o) = self.step(key, sip_buf) {
                return Some(o);
            }
        }
    }

    // ---- internals -------------------------------------------------------------------------

    fn input(&mut self, now: Now, key: CallKey, input: call::Input) -> Result<(), Error> {
        self.last = now;
        let s = self.calls.get_mut(key).ok_or(Error::UnknownCall)?;
        let r = s.call.handle_input(now.at, input).map_err(Error::Call);
        self.mark(key);
        r
    }

    fn mark(&mut self, key: CallKey) {
        if let Some(s) = self.calls.get_mut(key) {
            if !s.dirty {
                s.dirty = true;
                self.calls.push_dirty(key);
            }
        }
    }

    fn push(&mut self, o: Output) {
        if let Err(o) = self.queued.push_back(o) {
            // Never more than a few node-level outputs are queued between two polls; keep
            // the newest rather than panic.
            let _ = self.queued.pop_front();
            let _ = self.queued.push_back(o);
        }
    }

    /// One step of draining the dirty call `key`: a datagram, an output, or its bookkeeping
    /// once it is quiet (re-arm, remove when done). `None` when there was nothing to return.
    fn step(&mut self, key: CallKey, sip_buf: &mut [u8]) -> Option<Output> {
        let Some(s) = self.calls.get_mut(key) else {
            self.calls.pop_dirty();
            return None;
        };
        if let Some(n) = s.call.poll_transmit(sip_buf) {
            let to = s.call.sip_destination().unwrap_or(s.peer);
            let transport = s.call.sip_transport();
            let conn = transport.is_reliable().then_some(s.peer);
            return Some(Output::Transmit {
                to,
                len: n,
                transport,
                conn,
            });
        }
        if let Some(o) = s.call.poll_output() {
            return self.translate(key, o);
        }
        if let Some(r) = s.deferred.take() {
            let _ = s
                .call
                .handle_input(self.last.at, call::Input::BookingResult(r));
            return None;
        }
        // Quiet: re-arm, and remove when done.
        s.dirty = false;
        let old = s.deadline;
        let next = s.call.poll_timeout();
        let done = s.call.is_done();
        self.calls.pop_dirty();
        if done {
            if let Some(slot) = self.calls.remove(key) {
                if !slot.ended {
                    self.active = self.active.saturating_sub(1);
                }
                return Some(Output::Released {
                    call: Some(key),
                    local_rtp: slot.local_rtp,
                });
            }
            return None;
        }
        if next != old {
            if let Some(s) = self.calls.get_mut(key) {
                s.deadline = next;
            }
            self.calls.set_deadline(key, old, next);
        }
        None
    }

    fn translate(&mut self, key: CallKey, o: call::Output) -> Option<Output> {
        match o {
            call::Output::Media(media) => Some(Output::Media { call: key, media }),
            call::Output::Play(playlist) => Some(Output::Play {
                call: key,
                playlist,
                language: self.calls.get(key)?.language,
            }),
            call::Output::Language(l) => {
                self.language_chosen(key, l);
                None
            }
            call::Output::StopPlayback => Some(Output::StopPlayback { call: key }),
            call::Output::OfferWindows => {
                let offers =
                    self.cfg
                        .hours
                        .offers(&self.zone, self.last.wall, self.cfg.callbacks.max_age);
                let s = self.calls.get_mut(key)?;
                let _ = s.call.offer_windows(self.last.at, &offers);
                None
            }
            call::Output::BookCallback { number, window } => self.book(key, number, window),
            call::Output::Event { call_seq, event } => {
                let s = self.calls.get_mut(key)?;
                let call_id = s.call.id();
                let kind = match event {
                    call::Event::Offered { caller, dialled } => {
                        EventKind::CallOffered { caller, dialled }
                    }
                    call::Event::Answered { codec } => EventKind::CallAnswered { codec },
                    call::Event::AnnouncementStarted(h) => {
                        let (announcement_id, version) = heard(&s.anns, &self.anns, h)?;
                        EventKind::AnnouncementStarted {
                            announcement_id,
                            version,
                        }
                    }
                    call::Event::AnnouncementCompleted {
                        handle,
                        interrupted,
                    } => {
                        let (announcement_id, version) = heard(&s.anns, &self.anns, handle)?;
                        EventKind::AnnouncementCompleted {
                            announcement_id,
                            version,
                            interrupted,
                        }
                    }
                    call::Event::Dtmf(digit) => EventKind::Dtmf { digit },
                    call::Event::CallbackBooked { position, .. } => EventKind::CallbackRequested {
                        callback_id: s.booking.clone()?,
                        position: u32::from(position),
                    },
                    call::Event::Transferred { target } => EventKind::CallTransferred {
                        target: TransferTarget::try_from(target).unwrap_or_default(),
                    },
                    call::Event::Ended {
                        reason,
                        duration,
                        answered,
                    } => {
                        if !s.ended {
                            s.ended = true;
                            self.active = self.active.saturating_sub(1);
                        }
                        EventKind::CallEnded {
                            reason,
                            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
                            answered_ms: u64::try_from(answered.as_millis()).unwrap_or(u64::MAX),
                        }
                    }
                };
                let language = Some(self.cfg.languages.tag(s.language).clone());
                Some(Output::Event(NodeEvent {
                    call: Some(key),
                    call_id: Some(call_id),
                    call_seq,
                    at: self.last.wall,
                    language,
                    kind,
                }))
            }
        }
    }

    fn book(
        &mut self,
        key: CallKey,
        number: crate::number::PhoneNumber,
        window: Option<callback::Window>,
    ) -> Option<Output> {
        let window = window
            .unwrap_or_else(|| callback::Window::asap(self.last.wall, self.cfg.callbacks.max_age));
        self.next_booking += 1;
        let s = self.calls.get_mut(key)?;
        let mut raw: heapless::String<64> = heapless::String::new();
        let _ = write!(raw, "cb-{}-{:x}", s.call.id(), self.next_booking);
        let Ok(id) = CallbackId::new(&raw) else {
            s.deferred = Some(BookingResult::Failed);
            return None;
        };
        let req = callback::Request {
            id: id.clone(),
            call_id: s.call.id(),
            callback_number: number,
            caller: s.call.caller().cloned(),
            dialled: s.call.dialled().cloned(),
            announcement: s.anns.first().map(|(_, a, _)| a.clone()),
            window,
            language: self.cfg.languages.tag(s.language).clone(),
        };
        let (result, existing) = match self.queue.request(self.last.wall, req) {
            Ok(_) => {
                s.booking = Some(id.clone());
                if self.bookings.push((id, key)).is_err() {
                    // Cannot happen: pending bookings are Requested queue entries.
                    return None;
                }
                return None;
            }
            Err(QueueError::Duplicate { existing, position }) => {
                if self
                    .queue
                    .get(&existing)
                    .is_some_and(|e| e.state.is_booked())
                {
                    self.stats.callbacks_already_booked += 1;
                    (
                        BookingResult::AlreadyBooked {
                            position: clamp(position.unwrap_or(1)),
                        },
                        Some(existing),
                    )
                } else {
                    // The other booking is not durable yet: do not claim it is.
                    self.stats.callbacks_failed += 1;
                    (BookingResult::Failed, None)
                }
            }
            Err(QueueError::Full) => {
                self.stats.callbacks_failed += 1;
                (BookingResult::QueueFull, None)
            }
            Err(_) => {
                self.stats.callbacks_failed += 1;
                (BookingResult::Failed, None)
            }
        };
        // Handed to the call after its current outputs (the "please wait" it is about to
        // play), so the answer is what the caller hears last.
        s.deferred = Some(result);
        Some(Output::Booking {
            call: key,
            callback: existing,
            result,
        })
    }

    fn count_booking(&mut self, r: BookingResult) {
        match r {
            BookingResult::Booked { .. } => self.stats.callbacks_booked += 1,
            BookingResult::AlreadyBooked { .. } => {}
            BookingResult::QueueFull | BookingResult::Failed => self.stats.callbacks_failed += 1,
        }
    }

    fn new_call<F>(&mut self, now: Now, from: SocketAddr, req: &sip::Incoming<'_>, setup: F)
    where
        F: FnOnce() -> Option<Setup>,
    {
        // Live calls decide; ended calls still answering retransmissions only bound the table
        // (a gateway's short calls would otherwise fill it with dialogs nobody is on).
        if self.draining
            || self.active >= self.cfg.max_calls
            || self.calls.len() >= self.cfg.max_calls.saturating_mul(2)
        {
            self.stats.calls_refused += 1;
            self.reply(from, req, 503);
            return;
        }
        let Some(setup) = setup() else {
            self.stats.calls_refused += 1;
            self.reply(from, req, 503);
            return;
        };
        let (caller, dialled) = call::numbers(req);
        let language = self.cfg.languages.for_dialled(dialled.as_ref());
        let (infos, anns) = self.select(now.wall, language, dialled.as_ref(), caller.as_ref());
        let call = match Call::new_in(now.at, self.cfg.call, &setup, req, &infos, language) {
            Ok(c) => c,
            Err(e) => {
                let status = if matches!(e, call::Error::Sip(crate::sip::uas::Error::TooLarge)) {
                    513
                } else {
                    400
                };
                self.reply(from, req, status);
                self.push(Output::Released {
                    call: None,
                    local_rtp: setup.local_rtp,
                });
                return;
            }
        };
        let slot = Slot {
            call,
            peer: from,
            local_rtp: setup.local_rtp,
            anns,
            booking: None,
            language,
            deferred: None,
            deadline: None,
            dirty: false,
            ended: false,
        };
        match self.calls.insert(slot) {
            Ok(key) => {
                self.stats.calls_total += 1;
                self.active += 1;
                self.push(Output::CallCreated {
                    call: key,
                    local_rtp: setup.local_rtp,
                });
                self.mark(key);
            }
            Err(_) => {
                self.stats.calls_refused += 1;
                self.reply(from, req, 503);
                self.push(Output::Released {
                    call: None,
                    local_rtp: setup.local_rtp,
                });
            }
        }
    }

    /// The announcements a call in `language` hears (see [`Languages`]): with their
    /// callback offer for the IVR, and with id and version for the call's events.
    fn select(
        &self,
        wall: UnixMillis,
        language: u8,
        dialled: Option<&crate::number::PhoneNumber>,
        caller: Option<&crate::number::PhoneNumber>,
    ) -> (Vec<AnnouncementInfo, IVR_MAX_ANNOUNCEMENTS_PER_CALL>, Anns) {
        let langs = &self.cfg.languages;
        let site = self.cfg.site.as_str();
        let pick = |l: u8| {
            self.anns.select_where(wall, site, dialled, caller, |a| {
                langs.of_announcement(a) == l
            })
        };
        let mut handles = pick(language);
        if handles.is_empty() && language != 0 {
            handles = pick(0);
        }
        let mut infos = Vec::new();
        let mut anns = Vec::new();
        for h in handles {
            if let Some(a) = self.anns.get(h) {
                let _ = infos.push(AnnouncementInfo {
                    handle: h,
                    offer_callback: a.offer_callback,
                });
                let _ = anns.push((h, a.id.clone(), a.version));
            }
        }
        (infos, anns)
    }

    /// The caller of `key` chose language `l`: its announcements are selected again for it
    /// and start over.
    fn language_chosen(&mut self, key: CallKey, l: u8) {
        let wall = self.last.wall;
        let Some(s) = self.calls.get(key) else {
            return;
        };
        let (caller, dialled) = (s.call.caller().cloned(), s.call.dialled().cloned());
        let (infos, anns) = self.select(wall, l, dialled.as_ref(), caller.as_ref());
        if let Some(s) = self.calls.get_mut(key) {
            s.language = l;
            s.anns = anns;
            let _ = s.call.set_announcements(&infos);
        }
    }

    /// Answers `req`, which came from `from`, statelessly: to where its top Via says.
    fn reply(&mut self, from: SocketAddr, req: &sip::Incoming<'_>, status: u16) {
        let to = req
            .vias
            .first()
            .map_or(from, |v| sip::route::reply_address(v, from, req.transport));
        let sip = self.cfg.call.sip;
        if let Ok(n) =
            endpoint::respond_with(req, status, sip.min_se_secs, sip.server, &mut self.reply)
        {
            self.reply_pending = Some((to, req.transport, n));
        }
    }

    fn reply_salvaged(&mut self, to: SocketAddr, transport: Transport, data: &[u8], status: u16) {
        if let Some(mut req) = sip::salvage(data) {
            req.received_from = Some(to);
            req.transport = transport;
            if req.method != Method::Ack {
                self.reply(to, &req, status);
            }
        }
    }

    fn drain_announcements(&mut self) {
        while let Some(ev) = self.anns.poll_output() {
            self.push(Output::Announcement(ev));
        }
    }
}

/// The answer to a new INVITE the shell cannot even queue for the node (its receive queue
/// for new requests is full): `503 Service Unavailable` with `Retry-After`, written into
/// `buf`, and where to send it (the top Via, RFC 3261 §18.2.2). `None` for anything else
/// (requests other than INVITE, responses, garbage): those are dropped, since an INVITE is
/// what a gateway retransmits into an overload and what it can route elsewhere on a 503.
/// Sans-IO like the node, so the shell's receive task can answer without waiting for it.
#[must_use]
pub fn overload_reply(
    sip_cfg: &sip::uas::Config,
    from: SocketAddr,
    data: &[u8],
    buf: &mut [u8],
) -> Option<(SocketAddr, usize)> {
    let Ok(Message::Request(r)) = sip::parse(data) else {
        return None;
    };
    let mut req = r.to_incoming().ok()?;
    if req.method != Method::Invite || req.to_tag.is_some() {
        return None;
    }
    req.received_from = Some(from);
    let to = req
        .vias
        .first()
        .map_or(from, |v| sip::route::reply_address(v, from, req.transport));
    let n = endpoint::respond_with(&req, 503, sip_cfg.min_se_secs, sip_cfg.server, buf).ok()?;
    Some((to, n))
}

fn heard(
    anns: &[(AnnouncementHandle, AnnouncementId, u32)],
    set: &AnnouncementSet,
    h: AnnouncementHandle,
) -> Option<(AnnouncementId, u32)> {
    anns.iter()
        .find(|(x, _, _)| *x == h)
        .map(|(_, id, v)| (id.clone(), *v))
        .or_else(|| set.get(h).map(|a| (a.id.clone(), a.version)))
}

fn clamp(p: u32) -> u16 {
    u16::try_from(p).unwrap_or(u16::MAX)
}
