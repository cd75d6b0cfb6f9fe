//! The UAS side of one call: the INVITE server transaction, the dialog, the RFC 4028 session
//! timer, and the few client transactions ccedge starts inside it (BYE, REFER, UPDATE). RFC 3261 §12, §13.3.1.4, §15, §17 over an
//! unreliable transport (UDP), with the RFC 6026 `Accepted` state for 2xx retransmission.
//! Sans-IO and on virtual time: every input carries `now`.
//!
//! ## Driving it
//!
//! ```text
//! let mut d = Dialog::new(now, &invite, &CONFIG, random_tag)?;   // 100 Trying queued
//! d.ring(now)?; d.answer(now, sdp)?; d.hangup(now)?; ...        // commands from the call
//! d.handle_request(now, &incoming)?;  d.handle_response(now, &resp)?;  d.handle_timeout(now);
//! while let Some(r) = d.poll_transmit(&mut buf) { send(&buf[..r?]) }  // to the peer's address
//! while let Some(ev) = d.poll_event() { ... }
//! re-arm one timer at d.poll_timeout();   drop the dialog once d.is_done()
//! ```
//!
//! Outputs are split in two because a datagram is written into the caller's buffer:
//! [`Dialog::poll_transmit`] writes the next pending datagram and [`Dialog::poll_event`] yields
//! the next [`Event`]. After each datagram, [`Dialog::destination`] tells where it goes:
//! a response to where the request's top Via says (RFC 3261 §18.2.2 with RFC 3581 `rport`,
//! from the source address the shell put in [`Incoming::received_from`]), a request of ours to
//! the first hop of the route set or the remote target (see [`crate::sip::route`]).
//!
//! ## The INVITE server transaction (initial INVITE and each re-INVITE)
//!
//! ```text
//!                 INVITE (Dialog::new / re-INVITE)
//!                          |  100 Trying (Config::send_trying)
//!                          v
//!   INVITE retransmit +-----------+ ring(): 180
//!   -> resend last    | Proceeding|-----------+
//!                     +-----------+           |
//!        answer(): 2xx  |      | reject(): 3xx-6xx, CANCEL: 487, early BYE: 487
//!                       v      v
//!              +----------+  +-----------+  Timer G: resend final
//!  resend 2xx  | Accepted |  | Completed |  Timer H: -> Terminated
//!  at T1,2T1.. +----------+  +-----------+
//!  capped T2        |  ACK        | ACK
//!  Timer L (64*T1): |             v
//!  AckTimeout + BYE |        +-----------+
//!                   |        | Confirmed |  absorbs ACKs
//!                   |        +-----------+
//!                   v             | Timer I (T4)
//!               Terminated <------+
//! ```
//!
//! ## The dialog
//!
//! ```text
//!   Early --2xx sent--> Confirmed --BYE sent and answered / BYE received--> Terminated
//!     |                    |  ACK timeout, BYE timeout ----------------------^
//!     |                    |  session expired (RFC 4028), then BYE ----------^
//!     +--final non-2xx sent, CANCEL, BYE on the early dialog ---------------^
//! ```
//!
//! [`Event::Terminated`] is emitted exactly once, when the dialog ends for the call (stop media,
//! report the end). The [`Dialog`] may still need to answer retransmissions after that (a
//! retransmitted BYE gets its 200 again, ACKs for a 487 are absorbed): keep it until
//! [`Dialog::is_done`].
//!
//! ## Timers (unreliable transport)
//!
//! | timer | starts when | value | on expiry |
//! |---|---|---|---|
//! | 2xx retransmit | 2xx sent (`Accepted`) | T1, doubling, capped at T2 | resend the 2xx |
//! | L | 2xx sent | 64·T1 | no ACK: `Terminated(AckTimeout)`, send BYE |
//! | G | final non-2xx sent (`Completed`) | T1, doubling, capped at T2 | resend the final response |
//! | H | final non-2xx sent | 64·T1 | stop waiting for the ACK |
//! | I | ACK for the non-2xx (`Confirmed`) | T4 | transaction terminated |
//! | J | response to an in-dialog non-INVITE request | 64·T1 | stop answering its retransmissions |
//! | E | our BYE/REFER/UPDATE sent | T1, doubling, capped at T2 (T2 after a 1xx) | resend the request |
//! | F | our BYE/REFER/UPDATE sent | 64·T1 | `Terminated(ByeTimeout)` / `ReferFailed(408)` / `Terminated(SessionExpired)` and BYE |
//! | K | final response to our BYE/REFER/UPDATE | T4 | transaction terminated |
//! | session refresh | a 2xx settling a session timer with `refresher=uas` was sent, or our UPDATE got a 2xx | half the session interval | send UPDATE |
//! | session expiry | a 2xx settling a session timer with `refresher=uac` was sent | interval − min(32 s, interval / 3) | `Terminated(SessionExpired)`, send BYE |
//!
//! Defaults: T1 = 500 ms, T2 = 4 s, T4 = 5 s. With the defaults a 2xx goes out at 0 s and again
//! at 0.5, 1.5, 3.5, 7.5, 11.5, … 31.5 s; at 32 s without an ACK the dialog gives up.
//!
//! ## Matching
//!
//! The shell routes by Call-ID. Inside the dialog a request belongs to a transaction by its CSeq
//! number and method (ACK and CANCEL match the INVITE with the same CSeq number); a request
//! whose From tag is not the peer's, or whose To tag is not ours, is answered 481. Out-of-order
//! in-dialog requests get 500 (§12.2.2). A second INVITE while the previous one has no final
//! answer gets 500 with Retry-After (§14.2); one while a 2xx is still unacknowledged gets 491.
//!
//! ## Memory
//!
//! The copied strings (Call-ID, From, To, the peer's tag, Vias, the remote target, a REFER
//! target, the Vias of queued responses) share one arena of [`SIP_DIALOG_ARENA`] bytes; the 2xx
//! body is kept up to [`SIP_BODY_MAX`] bytes. `size_of::<Dialog>()` is at most
//! [`DIALOG_SIZE_MAX`] (a test checks it).
//!
//! ## Routing
//!
//! The INVITE's Record-Route values are the route set (RFC 3261 §12.1.1): echoed in every 1xx
//! and 2xx to the INVITE, and written as Route header fields of our BYE and REFER. With a loose
//! router first (`;lr`) the Request-URI is the remote target; with a strict router first it is
//! that router's URI and the remote target goes last in Route (§12.2.1.1). The route set is
//! fixed when the dialog is created; the remote target follows the Contact of re-INVITEs.
//! Limitations: no 100rel, UDP only.
//!
//! ## Session timers (RFC 4028)
//!
//! ccedge supports the `timer` option tag as a UAS. When an INVITE carries `Session-Expires`,
//! the 2xx settles a session timer (§9): `Session-Expires: N;refresher=X`, plus `Require: timer`
//! when the caller lists `timer` in Supported or Require. N is the request's value, raised to
//! the request's Min-SE and to [`Config::min_se_secs`] when below them. Who refreshes follows
//! §9's table:
//!
//! | caller lists `timer` | `refresher` in the request | refresher in our 2xx |
//! |---|---|---|
//! | yes | `uac` | `uac`: the gateway refreshes |
//! | yes | none | `uac` (our choice; the RFC lets the UAS pick either) |
//! | yes | `uas` | `uas`: the RFC obliges ccedge to refresh |
//! | no (a proxy added Session-Expires) | any | `uas`: the caller cannot refresh, so ccedge does; no `Require: timer` |
//!
//! So ccedge follows the RFC for callers without `timer` too rather than ignoring the proxy's
//! timer: the proxy that asked for it gets its refreshes.
//!
//! - **The gateway refreshes**: a re-INVITE or an UPDATE in the dialog, with or without
//!   Session-Expires, answered 2xx, restarts the interval (its Session-Expires, when present,
//!   sets the new interval and refresher by the same table); the 2xx carries Session-Expires
//!   again. Without a refresh, at interval − min(32 s, interval / 3) after the last 2xx the
//!   dialog ends the call (§10): `Terminated(SessionExpired)` and BYE.
//! - **ccedge refreshes**: at half the interval it sends UPDATE without a body (RFC 3311) with
//!   `Session-Expires: N;refresher=uas` and `Supported: timer`, as a client transaction like
//!   BYE (Timers E, F, K). A 2xx restarts the interval; a 408 or 481 (§10) or Timer F
//!   ends the call: `Terminated(SessionExpired)` and BYE. Any other final refusal comes from
//!   a live peer (405/501 from a gateway without UPDATE, 422, 491): the call stays up and
//!   the node stops refreshing. A refresh from
//!   the gateway also restarts the interval.
//! - **422**: a request listing `timer` whose Session-Expires is below our minimum is refused
//!   with `422 Session Interval Too Small` and `Min-SE` (§9, §6): a new INVITE statelessly by
//!   [`crate::sip::endpoint`], a re-INVITE or UPDATE inside the dialog. A request without
//!   `timer` could not retry, so its interval is raised instead.
//! - An UPDATE is answered 200 when it has no body; one carrying an SDP offer gets 488 (media
//!   changes come by re-INVITE). Before our 2xx an UPDATE is answered 200 and changes nothing.
//! - An INVITE without Session-Expires gets no session timer (ccedge does not ask for one).

use core::fmt;
use core::net::SocketAddr;

use heapless::{Deque, Vec};

use crate::limits::{
    SIP_BODY_MAX, SIP_CALL_ID_MAX, SIP_DIALOG_ARENA, SIP_DIALOG_EVENTS, SIP_DIALOG_PENDING,
};
use crate::sip::emit::{self, BufferTooSmall, Extras, LocalTag, OutMethod, Packed, Vias};
use crate::sip::route;
use crate::sip::{
    Incoming, IncomingResponse, Method, Refresher, SessionTimer, SESSION_EXPIRES_FLOOR,
};
use crate::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// The documented upper bound of `size_of::<Dialog>()`, bytes: the arena and about 1 kB of
/// transaction state.
pub const DIALOG_SIZE_MAX: usize = SIP_DIALOG_ARENA + 1024;

/// Settings shared by every dialog of a node. Dialogs keep a `&'static` reference (the shell
/// builds one at start-up and leaks it, or uses a `static`), so a dialog costs 8 bytes for it.
#[derive(Copy, Clone, Debug)]
pub struct Config {
    /// Our Contact URI, e.g. `sip:ccedge@192.0.2.10:5060`.
    pub contact: &'static str,
    /// Our `host:port` for the Via of requests we send, e.g. `192.0.2.10:5060`.
    pub via_sent_by: &'static str,
    /// RTT estimate (RFC 3261 T1), default 500 ms.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (T2), default 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network (T4), default 5 s.
    pub t4: Duration,
    /// Send 100 Trying as soon as an INVITE arrives (default true).
    pub send_trying: bool,
    /// `Server` (responses) and `User-Agent` (our requests) value; default [`emit::SERVER`]
    /// (`ccedge`, no version); empty: neither header is sent.
    pub server: &'static str,
    /// Retry-After seconds in a 500 to an overlapping re-INVITE (RFC 3261 §14.2: 0–10).
    pub retry_after_secs: u32,
    /// The smallest session interval accepted (RFC 4028 Min-SE), seconds; default and floor
    /// 90 ([`SESSION_EXPIRES_FLOOR`]: a smaller value counts as 90).
    pub min_se_secs: u32,
}

impl Config {
    /// The defaults with our Contact URI and Via `host:port`.
    #[must_use]
    pub const fn new(contact: &'static str, via_sent_by: &'static str) -> Config {
        Config {
            contact,
            via_sent_by,
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            send_trying: true,
            server: emit::SERVER,
            retry_after_secs: 3,
            min_se_secs: SESSION_EXPIRES_FLOOR,
        }
    }
}

/// States of an INVITE server transaction (RFC 3261 §17.2.1 plus RFC 6026 `Accepted`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TxState {
    /// No final response sent yet.
    Proceeding,
    /// A 2xx was sent and is retransmitted until the ACK (RFC 6026).
    Accepted,
    /// A final non-2xx was sent and is retransmitted (Timer G) until the ACK.
    Completed,
    /// The ACK for the non-2xx arrived; absorbing retransmitted ACKs (Timer I).
    Confirmed,
    /// Over (or never started).
    Terminated,
}

/// Dialog states (RFC 3261 §12).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DialogState {
    /// The INVITE has no final response yet.
    Early,
    /// A 2xx was sent.
    Confirmed,
    /// Over; see [`Dialog::termination`].
    Terminated,
}

/// Why a dialog ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TerminationReason {
    /// The peer sent BYE.
    RemoteBye,
    /// We sent BYE and it was answered.
    LocalBye,
    /// Our 2xx was never acknowledged (64·T1); a BYE follows.
    AckTimeout,
    /// The caller cancelled before we answered.
    Cancelled,
    /// We answered with a final non-2xx.
    Rejected,
    /// Our BYE was never answered (Timer F).
    ByeTimeout,
    /// The session timer ran out (RFC 4028): the gateway did not refresh in time, or our own
    /// refresh failed; a BYE follows.
    SessionExpired,
}

/// What happened in the dialog, for the call to react to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// The ACK for our 2xx arrived: the call is established end to end.
    Confirmed,
    /// The caller cancelled the INVITE (a 487 was sent); `Terminated(Cancelled)` follows.
    Cancelled,
    /// A re-INVITE arrived: read its SDP from the [`Incoming`] just handed in, then call
    /// [`Dialog::answer_reinvite`] or [`Dialog::reject_reinvite`].
    ReInvite,
    /// The pending re-INVITE was cancelled (a 487 was sent); the dialog continues.
    ReInviteCancelled,
    /// The dialog ended; emitted exactly once.
    Terminated(TerminationReason),
    /// Our REFER got a 2xx.
    ReferAccepted,
    /// Our REFER failed with this status (408 on Timer F).
    ReferFailed(u16),
    /// A NOTIFY about our REFER reported this status of the transfer (from its sipfrag body).
    ReferProgress(u16),
}

/// A command or request that is invalid in the dialog's current state.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// `Dialog::new` got a request that is not an INVITE.
    NotInvite,
    /// `Dialog::new` got an INVITE with a To tag (answer 481 via the endpoint).
    HasToTag,
    /// The INVITE lacks a From tag, a Via or a Call-ID (answer 400).
    Malformed,
    /// The INVITE's values do not fit the dialog's arena (answer 513 or 500).
    TooLarge,
    /// The SDP body is longer than [`SIP_BODY_MAX`].
    BodyTooLarge,
    /// The command does not fit the current state (e.g. `answer` after `reject`).
    InvalidState,
    /// A status code outside the range the command allows.
    BadStatus,
    /// A REFER is already in progress.
    Busy,
    /// The message's Call-ID is not this dialog's.
    WrongCallId,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::NotInvite => "not an INVITE",
            Error::HasToTag => "INVITE already carries a To tag",
            Error::Malformed => "INVITE lacks From tag, Via or Call-ID",
            Error::TooLarge => "INVITE headers too large for dialog state",
            Error::BodyTooLarge => "body too large",
            Error::InvalidState => "invalid in the dialog's state",
            Error::BadStatus => "status code not allowed here",
            Error::Busy => "a REFER is already in progress",
            Error::WrongCallId => "Call-ID of another dialog",
        })
    }
}

impl core::error::Error for Error {}

// ---- the string arena ------------------------------------------------------------------------

const CALL_ID: usize = 0;
const FROM: usize = 1;
const TO: usize = 2;
const REMOTE_TAG: usize = 3;
const TARGET: usize = 4;
const INVITE_VIAS: usize = 5;
const REINVITE_VIAS: usize = 6;
const REFER_TARGET: usize = 7;
const ROUTES: usize = 8;
const PENDING0: usize = 9;
const SLOTS: usize = PENDING0 + SIP_DIALOG_PENDING;

#[derive(Copy, Clone, Debug, Default)]
struct Span {
    start: u16,
    len: u16,
}

/// One byte buffer holding every copied string; each slot is a span. Replacing or clearing a
/// slot closes the gap, so the space is always contiguous.
#[derive(Debug)]
struct Arena {
    buf: Vec<u8, SIP_DIALOG_ARENA>,
    spans: [Span; SLOTS],
}

#[derive(Copy, Clone, Debug)]
struct Full;

impl Arena {
    fn new() -> Self {
        Arena {
            buf: Vec::new(),
            spans: [Span::default(); SLOTS],
        }
    }

    fn get(&self, slot: usize) -> &[u8] {
        let s = self.spans.get(slot).copied().unwrap_or_default();
        let start = usize::from(s.start);
        self.buf
            .get(start..start + usize::from(s.len))
            .unwrap_or(&[])
    }

    fn clear(&mut self, slot: usize) {
        let Some(s) = self.spans.get(slot).copied() else {
            return;
        };
        let (start, len) = (usize::from(s.start), usize::from(s.len));
        let total = self.buf.len();
        if len == 0 || start + len > total {
            return;
        }
        self.buf.copy_within(start + len..total, start);
        self.buf.truncate(total - len);
        for sp in &mut self.spans {
            if sp.len > 0 && sp.start > s.start {
                sp.start -= s.len;
            }
        }
        if let Some(sp) = self.spans.get_mut(slot) {
            *sp = Span::default();
        }
    }

    /// Replaces `slot` with `parts`, each `u16`-length-prefixed when `packed`. On `Full` the
    /// slot keeps its old value.
    fn set<'x, I>(&mut self, slot: usize, parts: I, packed: bool) -> Result<(), Full>
    where
        I: Iterator<Item = &'x [u8]> + Clone,
    {
        let prefix = if packed { 2 } else { 0 };
        let mut need = 0usize;
        for p in parts.clone() {
            if p.len() > usize::from(u16::MAX) {
                return Err(Full);
            }
            need = need.saturating_add(p.len() + prefix);
        }
        let old = usize::from(self.spans.get(slot).ok_or(Full)?.len);
        if self.buf.len() - old + need > SIP_DIALOG_ARENA {
            return Err(Full);
        }
        self.clear(slot);
        let start = self.buf.len();
        for p in parts {
            let ok = if packed {
                let len = u16::try_from(p.len()).unwrap_or(0).to_be_bytes();
                self.buf.extend_from_slice(&len).is_ok()
            } else {
                true
            };
            if !ok || self.buf.extend_from_slice(p).is_err() {
                self.buf.truncate(start);
                return Err(Full);
            }
        }
        let span = Span {
            start: u16::try_from(start).map_err(|_| Full)?,
            len: u16::try_from(self.buf.len() - start).map_err(|_| Full)?,
        };
        if let Some(sp) = self.spans.get_mut(slot) {
            *sp = span;
        }
        Ok(())
    }
}

// ---- transactions ----------------------------------------------------------------------------

/// An INVITE server transaction (the initial INVITE or a re-INVITE).
#[derive(Copy, Clone, Debug)]
struct ServerInvite {
    state: TxState,
    /// Last response sent; 0 when none yet.
    status: u16,
    cseq: u32,
    /// Next retransmission (Accepted, Completed) or Timer I (Confirmed).
    next: Instant,
    interval_us: u32,
    /// Timer L (Accepted) or H (Completed).
    end: Instant,
}

impl ServerInvite {
    const IDLE: ServerInvite = ServerInvite {
        state: TxState::Terminated,
        status: 0,
        cseq: 0,
        next: Instant::MAX,
        interval_us: 0,
        end: Instant::MAX,
    };

    fn deadline(&self) -> Option<Instant> {
        match self.state {
            TxState::Accepted | TxState::Completed => Some(self.next.min(self.end)),
            TxState::Confirmed => Some(self.next),
            TxState::Proceeding | TxState::Terminated => None,
        }
    }
}

/// States of a non-INVITE client transaction (RFC 3261 §17.1.2).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum ClientState {
    Idle,
    Trying,
    Proceeding,
    Completed,
}

/// Our BYE, REFER or UPDATE.
#[derive(Copy, Clone, Debug)]
struct ClientTx {
    state: ClientState,
    cseq: u32,
    /// Timer E (Trying, Proceeding) or K (Completed).
    next: Instant,
    interval_us: u32,
    /// Timer F.
    end: Instant,
}

impl ClientTx {
    const IDLE: ClientTx = ClientTx {
        state: ClientState::Idle,
        cseq: 0,
        next: Instant::MAX,
        interval_us: 0,
        end: Instant::MAX,
    };

    fn active(&self) -> bool {
        matches!(self.state, ClientState::Trying | ClientState::Proceeding)
    }

    fn deadline(&self) -> Option<Instant> {
        match self.state {
            ClientState::Trying | ClientState::Proceeding => Some(self.next.min(self.end)),
            ClientState::Completed => Some(self.next),
            ClientState::Idle => None,
        }
    }
}

/// A response to an in-dialog request, waiting for `poll_transmit`. Its slot holds the CSeq
/// method token, then (when `echo`) the request's From and To, then its Vias.
#[derive(Copy, Clone, Debug)]
struct Pending {
    status: u16,
    cseq: u32,
    slot: u8,
    /// Where the request came from.
    src: Option<SocketAddr>,
    /// From/To copied from the request (it did not match the dialog) instead of the dialog's.
    echo: bool,
    /// Add our tag to To (the request's To had none).
    add_tag: bool,
    retry_after: bool,
}

/// The last in-dialog non-INVITE request answered (Timer J absorbs its retransmissions).
#[derive(Copy, Clone, Debug)]
struct LastRequest {
    cseq: u32,
    method: Method,
    status: u16,
}

const SEND_INVITE: u8 = 1;
const SEND_REINVITE: u8 = 2;
const SEND_BYE: u8 = 4;
const SEND_REFER: u8 = 8;
const SEND_UPDATE: u8 = 16;

/// A session timer (RFC 4028), settled by a 2xx or proposed by the pending (re-)INVITE.
#[derive(Copy, Clone, Debug)]
struct Session {
    /// The session interval, seconds; 0 = no session timer.
    secs: u32,
    refresher: Refresher,
    /// The gateway lists `timer`: our 2xx carries `Require: timer`.
    peer_timer: bool,
    /// When the timer fires: our refresh (`uas`) or the expiry (`uac`); `MAX` when it does not
    /// run.
    at: Instant,
}

impl Session {
    const NONE: Session = Session {
        secs: 0,
        refresher: Refresher::Uac,
        peer_timer: false,
        at: Instant::MAX,
    };

    /// What a 2xx to a request with `st` settles, the dialog's timer being `self` (RFC 4028
    /// §9, see the module docs). A request without Session-Expires keeps the running timer.
    fn negotiate(self, st: &SessionTimer, min_se_secs: u32) -> Session {
        let Some(asked) = st.expires else {
            return Session {
                at: Instant::MAX,
                ..self
            };
        };
        let floor = min_se_secs
            .max(SESSION_EXPIRES_FLOOR)
            .max(st.min_se.unwrap_or(0));
        Session {
            secs: asked.max(floor),
            refresher: if st.peer_supports() {
                st.refresher.unwrap_or(Refresher::Uac)
            } else {
                Refresher::Uas
            },
            peer_timer: st.peer_supports(),
            at: Instant::MAX,
        }
    }

    /// Starts (or restarts) the interval at `now`.
    fn start(&mut self, now: Instant) {
        let ms = u64::from(self.secs) * 1000;
        self.at = match (self.secs, self.refresher) {
            (0, _) => Instant::MAX,
            (_, Refresher::Uas) => now + Duration::from_millis(ms / 2),
            (_, Refresher::Uac) => now + Duration::from_millis(ms - (ms / 3).min(32_000)),
        };
    }
}

/// One call's SIP state: the INVITE server transaction, the dialog, re-INVITEs, and our BYE and
/// REFER client transactions. See the module docs for the state diagram and timers.
#[derive(Debug)]
pub struct Dialog<const BODY: usize = SIP_BODY_MAX> {
    cfg: &'static Config,
    tag: LocalTag,
    state: DialogState,
    reason: Option<TerminationReason>,
    invite: ServerInvite,
    reinvite: ServerInvite,
    bye: ClientTx,
    refer: ClientTx,
    update: ClientTx,
    /// The session timer in force (settled by the last 2xx).
    session: Session,
    /// The session timer the 2xx to the pending INVITE or re-INVITE will settle.
    proposed: Session,
    local_cseq: u32,
    remote_cseq: u32,
    last_request: Option<LastRequest>,
    /// Timer J of `last_request`.
    linger: Option<Instant>,
    bye_deferred: bool,
    refer_sent: bool,
    send: u8,
    pending: Deque<Pending, SIP_DIALOG_PENDING>,
    events: Deque<Event, SIP_DIALOG_EVENTS>,
    body: Vec<u8, BODY>,
    arena: Arena,
    /// Where the INVITE came from (and the fallback next hop of our requests).
    invite_src: Option<SocketAddr>,
    /// Where the pending re-INVITE came from.
    reinvite_src: Option<SocketAddr>,
    /// The next hop of our requests: the first route, else the remote target, when it names
    /// an IP address.
    next_hop: Option<SocketAddr>,
    /// Where the datagram last written by `poll_transmit` goes.
    dest: Option<SocketAddr>,
    /// The transport the INVITE came on; the dialog's own requests use it too.
    transport: route::Transport,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn after(now: Instant, us: u32) -> Instant {
    now + Duration::from_micros(u64::from(us))
}

/// The retransmission after the one due at `next`: the interval doubles up to `cap_us`.
fn backoff(next: Instant, interval_us: u32, cap_us: u32, now: Instant) -> (Instant, u32) {
    let interval = interval_us.saturating_mul(2).min(cap_us).max(1);
    let mut at = after(next, interval);
    if at <= now {
        at = after(now, interval);
    }
    (at, interval)
}

fn one(s: &str) -> core::iter::Once<&[u8]> {
    core::iter::once(s.as_bytes())
}

/// A dialog that keeps no copy of its SDP body: the owner hands the body in at transmit time
/// ([`Dialog::poll_transmit_with`]), because it can re-render it from a few bytes of state.
/// This saves [`SIP_BODY_MAX`] bytes per call.
pub type BodylessDialog = Dialog<0>;

impl Dialog {
    /// Creates the dialog for a new INVITE (no To tag) and queues 100 Trying when
    /// [`Config::send_trying`] is set. `local_tag` must be random (it is our To tag).
    ///
    /// # Errors
    /// [`Error::NotInvite`], [`Error::HasToTag`], [`Error::Malformed`] (no From tag, Via or
    /// Call-ID) and [`Error::TooLarge`] (values do not fit [`SIP_DIALOG_ARENA`]); the shell then
    /// answers statelessly through [`crate::sip::endpoint`].
    pub fn new(
        now: Instant,
        invite: &Incoming<'_>,
        cfg: &'static Config,
        local_tag: u64,
    ) -> Result<Dialog, Error> {
        Self::build(now, invite, cfg, local_tag)
    }
}

impl BodylessDialog {
    /// Like [`Dialog::new`], for a dialog whose owner passes the SDP body to
    /// [`Dialog::poll_transmit_with`] instead of to [`Dialog::answer`] (which then takes an
    /// empty body).
    ///
    /// # Errors
    /// As [`Dialog::new`].
    pub fn new_bodyless(
        now: Instant,
        invite: &Incoming<'_>,
        cfg: &'static Config,
        local_tag: u64,
    ) -> Result<BodylessDialog, Error> {
        Self::build(now, invite, cfg, local_tag)
    }
}

impl<const BODY: usize> Dialog<BODY> {
    fn build(
        now: Instant,
        invite: &Incoming<'_>,
        cfg: &'static Config,
        local_tag: u64,
    ) -> Result<Self, Error> {
        let _ = now;
        if invite.method != Method::Invite {
            return Err(Error::NotInvite);
        }
        if invite.to_tag.is_some() {
            return Err(Error::HasToTag);
        }
        let from_tag = invite.from_tag.ok_or(Error::Malformed)?;
        if invite.vias.is_empty() || invite.call_id.is_empty() {
            return Err(Error::Malformed);
        }
        if invite.call_id.len() > SIP_CALL_ID_MAX {
            return Err(Error::TooLarge);
        }
        let mut arena = Arena::new();
        let target = invite.contact_uri.unwrap_or(invite.from_uri);
        arena
            .set(CALL_ID, one(invite.call_id), false)
            .and_then(|()| arena.set(FROM, one(invite.from), false))
            .and_then(|()| arena.set(TO, one(invite.to), false))
            .and_then(|()| arena.set(REMOTE_TAG, one(from_tag), false))
            .and_then(|()| arena.set(TARGET, one(target), false))
            .and_then(|()| arena.set(INVITE_VIAS, invite.vias.iter().map(|v| v.as_bytes()), true))
            .and_then(|()| {
                let routes = invite.record_route.iter().map(|v| v.as_bytes());
                arena.set(ROUTES, routes, true)
            })
            .map_err(|Full| Error::TooLarge)?;
        let mut d = Self {
            cfg,
            tag: LocalTag(local_tag),
            state: DialogState::Early,
            reason: None,
            invite: ServerInvite {
                state: TxState::Proceeding,
                cseq: invite.cseq,
                ..ServerInvite::IDLE
            },
            reinvite: ServerInvite::IDLE,
            bye: ClientTx::IDLE,
            refer: ClientTx::IDLE,
            update: ClientTx::IDLE,
            session: Session::NONE,
            proposed: Session::NONE.negotiate(&invite.session_timer, cfg.min_se_secs),
            local_cseq: 0,
            remote_cseq: invite.cseq,
            last_request: None,
            linger: None,
            bye_deferred: false,
            refer_sent: false,
            send: 0,
            pending: Deque::new(),
            events: Deque::new(),
            body: Vec::new(),
            arena,
            invite_src: invite.received_from,
            reinvite_src: None,
            next_hop: None,
            dest: None,
            transport: invite.transport,
        };
        d.next_hop = d.compute_next_hop();
        if cfg.send_trying {
            d.invite.status = 100;
            d.send |= SEND_INVITE;
        }
        Ok(d)
    }

    // ---- accessors ---------------------------------------------------------------------------

    /// The dialog state.
    #[must_use]
    pub fn state(&self) -> DialogState {
        self.state
    }

    /// The state of the initial INVITE's server transaction.
    #[must_use]
    pub fn invite_state(&self) -> TxState {
        self.invite.state
    }

    /// Why the dialog ended, once it has.
    #[must_use]
    pub fn termination(&self) -> Option<TerminationReason> {
        self.reason
    }

    /// Our tag (To of our responses, From of our requests).
    #[must_use]
    pub fn local_tag(&self) -> u64 {
        self.tag.0
    }

    /// The session timer in force: the interval in seconds and who refreshes; `None` without
    /// one.
    #[must_use]
    pub fn session_timer(&self) -> Option<(u32, Refresher)> {
        (self.session.secs > 0).then_some((self.session.secs, self.session.refresher))
    }

    /// The dialog's Call-ID.
    #[must_use]
    pub fn call_id(&self) -> &[u8] {
        self.arena.get(CALL_ID)
    }

    /// The peer's current target URI (Contact of its INVITE or latest re-INVITE).
    #[must_use]
    pub fn remote_target(&self) -> &[u8] {
        self.arena.get(TARGET)
    }

    /// The route set (the INVITE's Record-Route values, in order).
    pub fn route_set(&self) -> impl Iterator<Item = &[u8]> {
        Packed(self.arena.get(ROUTES))
    }

    /// Where the datagram last written by [`Dialog::poll_transmit`] goes; `None` when the
    /// request it answers carried no [`Incoming::received_from`] and its Via names no address,
    /// or when our request's next hop is a host name and the INVITE's source is unknown (the
    /// owner then sends to the address it knows the peer by).
    #[must_use]
    pub fn destination(&self) -> Option<SocketAddr> {
        self.dest
    }

    /// The next hop of our requests: the first route's address, else the remote target's,
    /// else (a host name, not resolved here) the address the INVITE came from.
    fn compute_next_hop(&self) -> Option<SocketAddr> {
        let first = Packed(self.arena.get(ROUTES)).next();
        let uri = match first {
            Some(r) => core::str::from_utf8(r).map(route::route_uri).ok(),
            None => core::str::from_utf8(self.arena.get(TARGET)).ok(),
        };
        uri.and_then(route::uri_address).or(self.invite_src)
    }

    /// The transport of the dialog (the INVITE's); our BYE and REFER use it.
    #[must_use]
    pub fn transport(&self) -> route::Transport {
        self.transport
    }

    /// Where a response to a request with top Via `vias` (packed) from `src` goes.
    fn reply_to(&self, vias: &[u8], src: Option<SocketAddr>) -> Option<SocketAddr> {
        let top = Packed(vias)
            .next()
            .and_then(|v| core::str::from_utf8(v).ok());
        match (top, src) {
            (Some(top), Some(src)) => Some(route::reply_address(top, src, self.transport)),
            (_, src) => src,
        }
    }

    /// True once the dialog has ended and has nothing left to send, retransmit or absorb: the
    /// call may drop it (after draining [`Dialog::poll_event`]). Later stragglers for its
    /// Call-ID go to [`crate::sip::endpoint`] (481, or silence for ACK).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == DialogState::Terminated
            && self.invite.state == TxState::Terminated
            && self.reinvite.state == TxState::Terminated
            && self.bye.state == ClientState::Idle
            && self.refer.state == ClientState::Idle
            && self.update.state == ClientState::Idle
            && self.linger.is_none()
            && self.send == 0
            && self.pending.is_empty()
    }

    // ---- commands from the call --------------------------------------------------------------

    /// Sends 180 Ringing. Call while the INVITE has no final response.
    ///
    /// # Errors
    /// [`Error::InvalidState`] after a final response or a CANCEL.
    pub fn ring(&mut self, now: Instant) -> Result<(), Error> {
        let _ = now;
        if self.invite.state != TxState::Proceeding {
            return Err(Error::InvalidState);
        }
        self.invite.status = 180;
        self.send |= SEND_INVITE;
        Ok(())
    }

    /// Answers the INVITE with 200 OK carrying `sdp` (kept for retransmissions until the ACK).
    ///
    /// # Errors
    /// [`Error::InvalidState`] after a final response or a CANCEL; [`Error::BodyTooLarge`] when
    /// `sdp` exceeds [`SIP_BODY_MAX`] (nothing changes then).
    pub fn answer(&mut self, now: Instant, sdp: &[u8]) -> Result<(), Error> {
        if self.invite.state != TxState::Proceeding {
            return Err(Error::InvalidState);
        }
        self.body = Vec::from_slice(sdp).map_err(|_| Error::BodyTooLarge)?;
        self.accept(now, false);
        self.state = DialogState::Confirmed;
        Ok(())
    }

    /// Rejects the INVITE with a final `status` (300–699, e.g. 486, 488, 503). The dialog ends
    /// (`Terminated(Rejected)`); the response is retransmitted until the ACK.
    ///
    /// # Errors
    /// [`Error::BadStatus`] outside 300–699; [`Error::InvalidState`] after a final response.
    pub fn reject(&mut self, now: Instant, status: u16) -> Result<(), Error> {
        if !(300..=699).contains(&status) {
            return Err(Error::BadStatus);
        }
        if self.invite.state != TxState::Proceeding {
            return Err(Error::InvalidState);
        }
        self.complete(now, false, status);
        self.terminate(TerminationReason::Rejected);
        Ok(())
    }

    /// Hangs up an answered call: sends BYE (retransmitted on Timer E, given up on Timer F).
    /// The dialog ends (`Terminated(LocalBye)` or `Terminated(ByeTimeout)`) at most 64·T1 after
    /// the BYE leaves. If our 2xx is not acknowledged yet, the BYE waits for the ACK or the ACK
    /// timeout (§15), which is itself at most 64·T1 after the answer. Calling it again, or after
    /// the dialog ended, does nothing.
    ///
    /// # Errors
    /// [`Error::InvalidState`] before the INVITE was answered (use [`Dialog::reject`]).
    pub fn hangup(&mut self, now: Instant) -> Result<(), Error> {
        if self.reason.is_some() || self.bye.state != ClientState::Idle || self.bye_deferred {
            return Ok(());
        }
        match self.invite.state {
            TxState::Proceeding => Err(Error::InvalidState),
            TxState::Accepted => {
                self.bye_deferred = true;
                Ok(())
            }
            _ => {
                self.start_client(now, OutMethod::Bye);
                Ok(())
            }
        }
    }

    /// Transfers the caller: sends REFER with `Refer-To: <target_uri>`. The outcome arrives as
    /// [`Event::ReferAccepted`] / [`Event::ReferFailed`], then [`Event::ReferProgress`] from the
    /// peer's NOTIFYs; hang up once the transfer succeeded.
    ///
    /// # Errors
    /// [`Error::InvalidState`] unless the dialog is confirmed and acknowledged and not ending;
    /// [`Error::Busy`] while a REFER is in progress; [`Error::TooLarge`] when the URI does not
    /// fit the arena.
    pub fn refer(&mut self, now: Instant, target_uri: &str) -> Result<(), Error> {
        if self.state != DialogState::Confirmed
            || self.invite.state == TxState::Accepted
            || self.bye.state != ClientState::Idle
            || self.bye_deferred
        {
            return Err(Error::InvalidState);
        }
        if self.refer.active() {
            return Err(Error::Busy);
        }
        self.arena
            .set(REFER_TARGET, core::iter::once(target_uri.as_bytes()), false)
            .map_err(|Full| Error::TooLarge)?;
        self.refer_sent = true;
        self.start_client(now, OutMethod::Refer);
        Ok(())
    }

    /// Answers the pending re-INVITE (after [`Event::ReInvite`]) with 200 OK carrying `sdp`.
    ///
    /// # Errors
    /// [`Error::InvalidState`] when no re-INVITE waits for an answer; [`Error::BodyTooLarge`].
    pub fn answer_reinvite(&mut self, now: Instant, sdp: &[u8]) -> Result<(), Error> {
        if self.reinvite.state != TxState::Proceeding {
            return Err(Error::InvalidState);
        }
        self.body = Vec::from_slice(sdp).map_err(|_| Error::BodyTooLarge)?;
        self.accept(now, true);
        Ok(())
    }

    /// Rejects the pending re-INVITE with `status` (300–699, typically 488); the dialog and the
    /// media stay as they were.
    ///
    /// # Errors
    /// [`Error::BadStatus`]; [`Error::InvalidState`] when no re-INVITE waits for an answer.
    pub fn reject_reinvite(&mut self, now: Instant, status: u16) -> Result<(), Error> {
        if !(300..=699).contains(&status) {
            return Err(Error::BadStatus);
        }
        if self.reinvite.state != TxState::Proceeding {
            return Err(Error::InvalidState);
        }
        self.complete(now, true, status);
        Ok(())
    }

    // ---- inputs ------------------------------------------------------------------------------

    /// Handles a request whose Call-ID is this dialog's: call it for every such request.
    /// Answers go to [`Dialog::poll_transmit`], news to [`Dialog::poll_event`].
    ///
    /// # Errors
    /// [`Error::WrongCallId`] when the Call-ID differs (the shell mis-routed it).
    pub fn handle_request(&mut self, now: Instant, req: &Incoming<'_>) -> Result<(), Error> {
        if req.call_id.as_bytes() != self.arena.get(CALL_ID) {
            return Err(Error::WrongCallId);
        }
        if req.method == Method::Ack {
            self.on_ack(now, req);
            return Ok(());
        }
        let from_ok = req.from_tag.map(str::as_bytes) == Some(self.arena.get(REMOTE_TAG));
        if !from_ok {
            self.respond(req, 481, true, false);
            return Ok(());
        }
        if req.method == Method::Cancel {
            self.on_cancel(now, req);
            return Ok(());
        }
        if req.method == Method::Invite && req.cseq == self.invite.cseq {
            // A retransmission of the initial INVITE: repeat our last response.
            if self.invite.state == TxState::Proceeding && self.invite.status == 0 {
                self.invite.status = 100;
            }
            let live = matches!(
                self.invite.state,
                TxState::Proceeding | TxState::Accepted | TxState::Completed
            );
            if self.invite.status != 0 && live {
                self.send |= SEND_INVITE;
            }
            return Ok(());
        }
        match req.to_tag {
            Some(t) if self.is_our_tag(t) => {}
            _ => {
                self.respond(req, 481, true, false);
                return Ok(());
            }
        }
        if req.method == Method::Invite {
            if req.cseq == self.reinvite.cseq && self.reinvite.state != TxState::Terminated {
                if self.reinvite.status != 0 {
                    self.send |= SEND_REINVITE;
                }
            } else {
                self.on_reinvite(now, req);
            }
            return Ok(());
        }
        if let Some(last) = self.last_request {
            if last.cseq == req.cseq && last.method == req.method {
                self.respond(req, last.status, false, false);
                return Ok(());
            }
        }
        let status = if self.state == DialogState::Terminated {
            481
        } else if req.cseq <= self.remote_cseq {
            500
        } else {
            self.remote_cseq = req.cseq;
            match req.method {
                Method::Bye => {
                    self.on_bye(now);
                    200
                }
                Method::Options | Method::Info => 200,
                Method::Update => self.on_update(now, req),
                Method::Notify if self.refer_sent => {
                    if let Some(code) = sipfrag_status(req.body) {
                        self.event(Event::ReferProgress(code));
                    }
                    200
                }
                Method::Notify => 481,
                Method::Other => 501,
                _ => 405,
            }
        };
        self.last_request = Some(LastRequest {
            cseq: req.cseq,
            method: req.method,
            status,
        });
        self.linger = Some(now + self.cfg.t1.saturating_mul(64));
        self.respond(req, status, false, false);
        Ok(())
    }

    /// Handles a response whose Call-ID is this dialog's (to our BYE or REFER). Responses that
    /// match no transaction of ours are ignored.
    ///
    /// # Errors
    /// [`Error::WrongCallId`] when the Call-ID differs.
    pub fn handle_response(
        &mut self,
        now: Instant,
        resp: &IncomingResponse<'_>,
    ) -> Result<(), Error> {
        if resp.call_id.as_bytes() != self.arena.get(CALL_ID) {
            return Err(Error::WrongCallId);
        }
        let method = match resp.cseq_method {
            Method::Bye => OutMethod::Bye,
            Method::Refer => OutMethod::Refer,
            Method::Update => OutMethod::Update,
            _ => return Ok(()),
        };
        let tx = self.client(method);
        if !tx.active() || tx.cseq != resp.cseq {
            return Ok(());
        }
        if let Some(b) = resp.top_branch {
            if b.as_bytes() != emit::branch(self.tag, tx.cseq).as_bytes() {
                return Ok(());
            }
        }
        let mut tx = tx;
        if resp.status < 200 {
            tx.state = ClientState::Proceeding;
            tx.interval_us = micros(self.cfg.t2);
        } else {
            tx.state = ClientState::Completed;
            tx.next = now + self.cfg.t4;
            tx.end = Instant::MAX;
            match method {
                OutMethod::Bye => self.terminate(TerminationReason::LocalBye),
                OutMethod::Refer if resp.status < 300 => self.event(Event::ReferAccepted),
                OutMethod::Refer => self.event(Event::ReferFailed(resp.status)),
                OutMethod::Update if resp.status < 300 => {
                    if self.reason.is_none() {
                        self.session.start(now);
                    }
                }
                // RFC 4028 §10: a 408 or 481 means the session is gone. Any other refusal
                // (405/501 from a gateway without UPDATE, 422, 491 …) comes from a live peer:
                // the call stays up without a session timer, and the media timeout remains
                // the dead-peer check.
                OutMethod::Update if matches!(resp.status, 408 | 481) => self.end_session(now),
                OutMethod::Update => self.session.at = Instant::MAX,
            }
        }
        self.set_client(method, tx);
        Ok(())
    }

    /// Fires every timer due at `now`: call it when the deadline from
    /// [`Dialog::poll_timeout`] has passed (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        let t2 = micros(self.cfg.t2);
        for re in [false, true] {
            let mut tx = if re { self.reinvite } else { self.invite };
            let flag = if re { SEND_REINVITE } else { SEND_INVITE };
            match tx.state {
                TxState::Accepted if now >= tx.end => {
                    tx.state = TxState::Terminated;
                    self.set_tx(re, tx);
                    // A BYE waiting for this ACK (the session expired meanwhile) goes now.
                    let deferred = core::mem::take(&mut self.bye_deferred);
                    if self.reason.is_none() || deferred {
                        self.terminate(TerminationReason::AckTimeout);
                        if self.bye.state == ClientState::Idle {
                            self.start_client(now, OutMethod::Bye);
                        }
                    }
                    continue;
                }
                TxState::Completed if now >= tx.end => tx.state = TxState::Terminated,
                TxState::Accepted | TxState::Completed if now >= tx.next => {
                    (tx.next, tx.interval_us) = backoff(tx.next, tx.interval_us, t2, now);
                    self.send |= flag;
                }
                TxState::Confirmed if now >= tx.next => tx.state = TxState::Terminated,
                _ => {}
            }
            self.set_tx(re, tx);
        }
        for method in [OutMethod::Bye, OutMethod::Refer, OutMethod::Update] {
            let mut tx = self.client(method);
            let mut failed = false;
            if tx.active() && now >= tx.end {
                tx.state = ClientState::Idle;
                failed = true;
            } else if tx.active() && now >= tx.next {
                // In Proceeding the interval is already T2 (§17.1.2.2).
                (tx.next, tx.interval_us) = backoff(tx.next, tx.interval_us, t2, now);
                self.send |= send_flag(method);
            } else if tx.state == ClientState::Completed && now >= tx.next {
                tx.state = ClientState::Idle;
            }
            self.set_client(method, tx);
            if failed {
                match method {
                    OutMethod::Bye => self.terminate(TerminationReason::ByeTimeout),
                    OutMethod::Refer => self.event(Event::ReferFailed(408)),
                    OutMethod::Update => self.end_session(now),
                }
            }
        }
        let hanging_up = self.bye.state != ClientState::Idle || self.bye_deferred;
        if !hanging_up && self.session_deadline().is_some_and(|at| now >= at) {
            self.session.at = Instant::MAX;
            match self.session.refresher {
                Refresher::Uas if !self.update.active() => {
                    self.start_client(now, OutMethod::Update);
                }
                Refresher::Uas => {}
                Refresher::Uac => self.end_session(now),
            }
        }
        if self.linger.is_some_and(|l| now >= l) {
            self.linger = None;
        }
    }

    // ---- outputs -----------------------------------------------------------------------------

    /// Writes the next datagram to send into `buf` and returns its length; `None` when nothing
    /// is pending. Drain it after every `handle_*` and command. A datagram that does not fit is
    /// dropped with `Err(BufferTooSmall)` (retransmissions will try again);
    /// [`crate::limits::SIP_EMIT_MAX`] bytes always suffice.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Result<usize, BufferTooSmall>> {
        self.poll_transmit_with(buf, None)
    }

    /// Whether [`Dialog::poll_transmit`] has anything to write (cheap; lets an owner skip
    /// preparing a body when nothing is pending).
    #[must_use]
    pub fn wants_transmit(&self) -> bool {
        !self.pending.is_empty() || self.send != 0
    }

    /// [`Dialog::poll_transmit`] for owners that keep the SDP themselves: `body` (when `Some`)
    /// is the body of any 2xx to an INVITE or re-INVITE written by this call, instead of the
    /// stored one. A [`BodylessDialog`] must be drained this way.
    pub fn poll_transmit_with(
        &mut self,
        buf: &mut [u8],
        body: Option<&[u8]>,
    ) -> Option<Result<usize, BufferTooSmall>> {
        if let Some(p) = self.pending.pop_front() {
            let slot = PENDING0 + usize::from(p.slot);
            let mut it = Packed(self.arena.get(slot));
            for _ in 0..if p.echo { 3 } else { 1 } {
                it.next();
            }
            self.dest = self.reply_to(it.rest(), p.src);
            let r = self.emit_pending(&p, slot, buf);
            self.arena.clear(slot);
            return Some(r);
        }
        for (flag, re) in [(SEND_INVITE, false), (SEND_REINVITE, true)] {
            if self.send & flag != 0 {
                self.send &= !flag;
                let (vias, src) = if re {
                    (self.arena.get(REINVITE_VIAS), self.reinvite_src)
                } else {
                    (self.arena.get(INVITE_VIAS), self.invite_src)
                };
                self.dest = self.reply_to(vias, src);
                return Some(self.emit_invite_response(re, buf, body));
            }
        }
        for m in [OutMethod::Bye, OutMethod::Refer, OutMethod::Update] {
            let flag = send_flag(m);
            if self.send & flag != 0 {
                self.send &= !flag;
                self.dest = self.next_hop;
                return Some(self.emit_request(m, buf));
            }
        }
        None
    }

    /// The next event for the call, `None` when there is none. Drain it after every `handle_*`
    /// and command.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next instant [`Dialog::handle_timeout`] must be called at, `None` when no timer runs.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.invite.deadline(),
            self.reinvite.deadline(),
            self.bye.deadline(),
            self.refer.deadline(),
            self.update.deadline(),
            self.session_deadline(),
            self.linger,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- internals ---------------------------------------------------------------------------

    fn is_our_tag(&self, t: &str) -> bool {
        let mut s: heapless::String<16> = heapless::String::new();
        let _ = fmt::Write::write_fmt(&mut s, format_args!("{}", self.tag));
        t == s.as_str()
    }

    fn event(&mut self, ev: Event) {
        // The shell drains after every input; a full queue drops the newest event.
        let _ = self.events.push_back(ev);
    }

    fn terminate(&mut self, reason: TerminationReason) {
        if self.reason.is_none() {
            self.reason = Some(reason);
            self.state = DialogState::Terminated;
            if self.events.is_full() {
                // Never lose the end of the call: make room for it.
                let _ = self.events.pop_back();
            }
            self.event(Event::Terminated(reason));
        }
    }

    fn set_tx(&mut self, re: bool, tx: ServerInvite) {
        if re {
            self.reinvite = tx;
        } else {
            self.invite = tx;
        }
    }

    /// Sends a 2xx on the (re-)INVITE transaction and starts its retransmission and Timer L.
    fn accept(&mut self, now: Instant, re: bool) {
        let mut tx = if re { self.reinvite } else { self.invite };
        let t1 = micros(self.cfg.t1);
        tx.state = TxState::Accepted;
        tx.status = 200;
        tx.interval_us = t1;
        tx.next = after(now, t1);
        tx.end = now + self.cfg.t1.saturating_mul(64);
        self.set_tx(re, tx);
        self.send |= if re { SEND_REINVITE } else { SEND_INVITE };
        // The 2xx settles the proposed session timer; its interval starts now (RFC 4028 §9).
        self.session = self.proposed;
        self.session.start(now);
    }

    /// The instant the session timer fires, while the dialog is up and has one.
    fn session_deadline(&self) -> Option<Instant> {
        let up = self.state == DialogState::Confirmed && self.reason.is_none();
        (up && self.session.secs > 0 && self.session.at != Instant::MAX).then_some(self.session.at)
    }

    /// The session cannot go on (not refreshed in time, or our refresh failed): end the call
    /// with BYE, after the ACK if our 2xx still waits for one (RFC 3261 §15).
    fn end_session(&mut self, now: Instant) {
        if self.reason.is_some() || self.bye.state != ClientState::Idle || self.bye_deferred {
            // Already ending (or hanging up): that end stands.
            return;
        }
        self.session.at = Instant::MAX;
        self.terminate(TerminationReason::SessionExpired);
        if self.invite.state == TxState::Accepted {
            self.bye_deferred = true;
        } else if self.bye.state == ClientState::Idle {
            self.start_client(now, OutMethod::Bye);
        }
    }

    fn client(&self, m: OutMethod) -> ClientTx {
        match m {
            OutMethod::Bye => self.bye,
            OutMethod::Refer => self.refer,
            OutMethod::Update => self.update,
        }
    }

    fn set_client(&mut self, m: OutMethod, tx: ClientTx) {
        match m {
            OutMethod::Bye => self.bye = tx,
            OutMethod::Refer => self.refer = tx,
            OutMethod::Update => self.update = tx,
        }
    }

    /// An UPDATE in the dialog (RFC 3311): a session refresh when it has no body. Returns the
    /// status to answer with.
    fn on_update(&mut self, now: Instant, req: &Incoming<'_>) -> u16 {
        if !req.body.is_empty() {
            // No offer/answer by UPDATE: media changes come by re-INVITE.
            return 488;
        }
        if req.session_timer.too_small(self.cfg.min_se_secs) {
            return 422;
        }
        if let Some(c) = req.contact_uri {
            // UPDATE is a target refresh request (RFC 3311 §5.2); on a full arena the old
            // target stays.
            if self.arena.set(TARGET, one(c), false).is_ok() {
                self.next_hop = self.compute_next_hop();
            }
        }
        if self.state == DialogState::Confirmed {
            self.session = self
                .session
                .negotiate(&req.session_timer, self.cfg.min_se_secs);
            self.session.start(now);
        }
        200
    }

    /// The session-timer headers of a 2xx (INVITE, re-INVITE, UPDATE) and of a 422.
    fn session_extras(&self, status: u16, extras: &mut Extras<'_>) {
        if (200..300).contains(&status) && self.session.secs > 0 {
            extras.session_expires = Some((self.session.secs, self.session.refresher));
            extras.require_timer = self.session.peer_timer;
        } else if status == 422 {
            extras.min_se = Some(self.cfg.min_se_secs.max(SESSION_EXPIRES_FLOOR));
        }
    }

    /// Sends a final non-2xx on the (re-)INVITE transaction and starts Timers G and H.
    fn complete(&mut self, now: Instant, re: bool, status: u16) {
        let mut tx = if re { self.reinvite } else { self.invite };
        let t1 = micros(self.cfg.t1);
        tx.state = TxState::Completed;
        tx.status = status;
        tx.interval_us = t1;
        tx.next = after(now, t1);
        tx.end = now + self.cfg.t1.saturating_mul(64);
        self.set_tx(re, tx);
        self.send |= if re { SEND_REINVITE } else { SEND_INVITE };
    }

    fn start_client(&mut self, now: Instant, method: OutMethod) {
        self.local_cseq = self.local_cseq.wrapping_add(1);
        let t1 = micros(self.cfg.t1);
        let tx = ClientTx {
            state: ClientState::Trying,
            cseq: self.local_cseq,
            next: after(now, t1),
            interval_us: t1,
            end: now + self.cfg.t1.saturating_mul(64),
        };
        self.set_client(method, tx);
        self.send |= send_flag(method);
        if method == OutMethod::Bye && self.reinvite.state == TxState::Proceeding {
            // The call is ending: an unanswered re-INVITE gets 487 (§15.1.2).
            self.complete(now, true, 487);
        }
    }

    fn on_ack(&mut self, now: Instant, req: &Incoming<'_>) {
        if !req.to_tag.is_some_and(|t| self.is_our_tag(t)) {
            return;
        }
        for re in [false, true] {
            let mut tx = if re { self.reinvite } else { self.invite };
            if tx.cseq != req.cseq {
                continue;
            }
            match tx.state {
                TxState::Accepted => {
                    tx.state = TxState::Terminated;
                    self.set_tx(re, tx);
                    if !re {
                        self.event(Event::Confirmed);
                    }
                    if self.bye_deferred {
                        self.bye_deferred = false;
                        self.start_client(now, OutMethod::Bye);
                    }
                }
                TxState::Completed => {
                    tx.state = TxState::Confirmed;
                    tx.next = now + self.cfg.t4;
                    tx.end = Instant::MAX;
                    self.set_tx(re, tx);
                }
                _ => {}
            }
            return;
        }
    }

    fn on_cancel(&mut self, now: Instant, req: &Incoming<'_>) {
        let re = if req.cseq == self.invite.cseq {
            false
        } else if req.cseq == self.reinvite.cseq && self.reinvite.state != TxState::Terminated {
            true
        } else {
            self.respond(req, 481, true, false);
            return;
        };
        self.respond(req, 200, false, false);
        let tx = if re { self.reinvite } else { self.invite };
        if tx.state == TxState::Proceeding {
            self.complete(now, re, 487);
            if re {
                self.event(Event::ReInviteCancelled);
            } else {
                self.event(Event::Cancelled);
                self.terminate(TerminationReason::Cancelled);
            }
        }
    }

    fn on_bye(&mut self, now: Instant) {
        match self.invite.state {
            // BYE on the early dialog: the INVITE gets 487 (§15.1.2).
            TxState::Proceeding => self.complete(now, false, 487),
            // The BYE shows the peer got our 2xx: stop retransmitting it.
            TxState::Accepted => self.invite.state = TxState::Terminated,
            _ => {}
        }
        match self.reinvite.state {
            TxState::Proceeding => self.complete(now, true, 487),
            TxState::Accepted => self.reinvite.state = TxState::Terminated,
            _ => {}
        }
        self.bye_deferred = false;
        self.terminate(TerminationReason::RemoteBye);
    }

    fn on_reinvite(&mut self, now: Instant, req: &Incoming<'_>) {
        let _ = now;
        if self.state == DialogState::Terminated || self.bye.state != ClientState::Idle {
            self.respond(req, 481, false, false);
            return;
        }
        if req.cseq <= self.remote_cseq {
            self.respond(req, 500, false, false);
            return;
        }
        if req.session_timer.too_small(self.cfg.min_se_secs) {
            // Not counted as seen: a retransmission gets 422 again.
            self.respond(req, 422, false, false);
            return;
        }
        self.remote_cseq = req.cseq;
        let busy = match (self.invite.state, self.reinvite.state) {
            (TxState::Proceeding, _) | (_, TxState::Proceeding) => Some(500),
            (TxState::Accepted, _) | (_, TxState::Accepted | TxState::Completed) => Some(491),
            _ => None,
        };
        if let Some(status) = busy {
            self.respond(req, status, false, status == 500);
            return;
        }
        let vias = req.vias.iter().map(|v| v.as_bytes());
        if self.arena.set(REINVITE_VIAS, vias, true).is_err() {
            self.respond(req, 500, false, true);
            return;
        }
        self.reinvite_src = req.received_from;
        if let Some(c) = req.contact_uri {
            // Target refresh; on a full arena the old target stays.
            let _ = self
                .arena
                .set(TARGET, core::iter::once(c.as_bytes()), false);
            self.next_hop = self.compute_next_hop();
        }
        self.reinvite = ServerInvite {
            state: TxState::Proceeding,
            cseq: req.cseq,
            ..ServerInvite::IDLE
        };
        self.proposed = self
            .session
            .negotiate(&req.session_timer, self.cfg.min_se_secs);
        if self.cfg.send_trying {
            self.reinvite.status = 100;
            self.send |= SEND_REINVITE;
        }
        self.event(Event::ReInvite);
    }

    /// Queues a response to `req`. `echo` copies the request's From/To (it did not match the
    /// dialog). Dropped when the queue or the arena is full: the peer retransmits.
    fn respond(&mut self, req: &Incoming<'_>, status: u16, echo: bool, retry_after: bool) {
        if self.pending.is_full() {
            return;
        }
        let Some(free) = (0..SIP_DIALOG_PENDING).find(|i| self.arena.get(PENDING0 + i).is_empty())
        else {
            return;
        };
        let token = emit::cseq_token(req).as_bytes();
        let (from, to): (&[u8], &[u8]) = if echo {
            (req.from.as_bytes(), req.to.as_bytes())
        } else {
            (&[], &[])
        };
        let heads = [token, from, to];
        let n = if echo { 3 } else { 1 };
        let parts = heads
            .iter()
            .take(n)
            .copied()
            .chain(req.vias.iter().map(|v| v.as_bytes()));
        if self
            .arena
            .set(PENDING0 + free, parts.clone(), true)
            .is_err()
        {
            // The INVITE's Vias are only needed while its transaction can still send: make
            // room with them when it is over.
            if self.invite.state != TxState::Terminated || self.send & SEND_INVITE != 0 {
                return;
            }
            self.arena.clear(INVITE_VIAS);
            if self.arena.set(PENDING0 + free, parts, true).is_err() {
                return;
            }
        }
        let _ = self.pending.push_back(Pending {
            status,
            cseq: req.cseq,
            slot: u8::try_from(free).unwrap_or(0),
            src: req.received_from,
            echo,
            add_tag: !echo || req.to_tag.is_none(),
            retry_after,
        });
    }

    fn base_response<'a>(
        &'a self,
        status: u16,
        cseq: u32,
        method: &'a [u8],
        vias: &'a [u8],
        src: Option<SocketAddr>,
    ) -> emit::Response<'a> {
        emit::Response {
            status,
            vias: Vias::Packed(vias),
            stamp: src,
            record_route: Vias::EMPTY,
            from: self.arena.get(FROM),
            to: self.arena.get(TO),
            to_tag: Some(self.tag),
            call_id: self.arena.get(CALL_ID),
            cseq,
            cseq_method: method,
            contact: None,
            contact_transport: self.transport,
            extras: Extras::default(),
            server: self.cfg.server,
            content_type: "application/sdp",
            body: &[],
        }
    }

    fn emit_pending(
        &self,
        p: &Pending,
        slot: usize,
        buf: &mut [u8],
    ) -> Result<usize, BufferTooSmall> {
        let mut it = Packed(self.arena.get(slot));
        let token = it.next().unwrap_or(b"INVITE");
        let (from, to) = if p.echo {
            (it.next().unwrap_or(&[]), it.next().unwrap_or(&[]))
        } else {
            (self.arena.get(FROM), self.arena.get(TO))
        };
        let mut r = self.base_response(p.status, p.cseq, token, it.rest(), p.src);
        r.from = from;
        r.to = to;
        r.to_tag = if p.add_tag { Some(self.tag) } else { None };
        r.extras.allow = matches!(p.status, 405 | 501) || (p.status == 200 && token == b"OPTIONS");
        r.extras.accept = p.status == 200 && token == b"OPTIONS";
        r.extras.supported = r.extras.accept;
        r.extras.retry_after = p.retry_after.then_some(self.cfg.retry_after_secs);
        if token == b"UPDATE" || p.status == 422 {
            self.session_extras(p.status, &mut r.extras);
        }
        if token == b"UPDATE" && (200..300).contains(&p.status) {
            r.contact = Some(self.cfg.contact);
        }
        r.emit(buf)
    }

    fn emit_invite_response(
        &self,
        re: bool,
        buf: &mut [u8],
        body: Option<&[u8]>,
    ) -> Result<usize, BufferTooSmall> {
        let (tx, vias, src) = if re {
            (
                &self.reinvite,
                self.arena.get(REINVITE_VIAS),
                self.reinvite_src,
            )
        } else {
            (&self.invite, self.arena.get(INVITE_VIAS), self.invite_src)
        };
        let mut r = self.base_response(tx.status, tx.cseq, b"INVITE", vias, src);
        if (101..300).contains(&tx.status) {
            r.contact = Some(self.cfg.contact);
            if !re {
                r.record_route = Vias::Packed(self.arena.get(ROUTES));
            }
        }
        if (200..300).contains(&tx.status) {
            r.extras.allow = true;
            r.body = body.unwrap_or(&self.body);
            self.session_extras(tx.status, &mut r.extras);
        }
        r.emit(buf)
    }

    fn emit_request(&self, m: OutMethod, buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let tx = self.client(m);
        let branch = emit::branch(self.tag, tx.cseq);
        let refer = m == OutMethod::Refer;
        let update = m == OutMethod::Update;
        let routes = self.arena.get(ROUTES);
        let mut rest = Packed(routes);
        let first = rest.next().and_then(|r| core::str::from_utf8(r).ok());
        // A strict router first (no `lr`): it becomes the Request-URI, the rest of the route
        // set and then the remote target form the Route (RFC 3261 §12.2.1.1).
        let strict = first.map(route::route_uri).filter(|u| !route::is_loose(u));
        let (request_uri, route, tail) = match strict {
            Some(uri) => (
                uri.as_bytes(),
                Vias::Packed(rest.rest()),
                Some(self.arena.get(TARGET)),
            ),
            None => (self.arena.get(TARGET), Vias::Packed(routes), None),
        };
        emit::Request {
            method: m,
            request_uri,
            route,
            route_last: tail,
            via_sent_by: self.cfg.via_sent_by,
            transport: self.transport,
            branch: branch.as_bytes(),
            from: self.arena.get(TO),
            from_tag: self.tag,
            to: self.arena.get(FROM),
            call_id: self.arena.get(CALL_ID),
            cseq: tx.cseq,
            contact: (refer || update).then_some(self.cfg.contact),
            refer_to: refer.then(|| self.arena.get(REFER_TARGET)),
            referred_by: refer.then_some(self.cfg.contact),
            user_agent: self.cfg.server,
            session_expires: update.then_some(self.session.secs),
        }
        .emit(buf)
    }
}

fn send_flag(m: OutMethod) -> u8 {
    match m {
        OutMethod::Bye => SEND_BYE,
        OutMethod::Refer => SEND_REFER,
        OutMethod::Update => SEND_UPDATE,
    }
}

/// The status code of a `message/sipfrag` body (`SIP/2.0 200 OK`), if it is one.
fn sipfrag_status(body: &[u8]) -> Option<u16> {
    let rest = body.strip_prefix(b"SIP/2.0 ")?;
    let digits = rest.get(..3)?;
    let mut v: u16 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u16::from(c - b'0');
    }
    (100..700).contains(&v).then_some(v)
}
