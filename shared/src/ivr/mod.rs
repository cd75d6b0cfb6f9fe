//! The caller-facing IVR flow: announcements, the menu, the callback sub-flow and transfer.
//!
//! [`Ivr`] is pure logic. It never touches SIP or RTP: the `call` module feeds it
//! [`Input`]s (the call was answered, a key was pressed, a playlist finished, the booking
//! outcome …) and carries out its [`Output`]s (play this playlist, book this callback, transfer,
//! hang up) and turns its [`Event`]s into CallEvents.
//!
//! ## Flow
//!
//! ```text
//!            Start
//!              │
//!              ▼
//!   ┌──▶ Announcing(0..n) ── one playlist per announcement, in the order given to Ivr::new;
//!   │          │              the default Greeting when the call matched none.
//!   │          │ last one finished           any key (barge-in) = a menu choice ──┐
//!   │          ▼                                                                  │
//!   │        Menu  "1 call back, 2 hear again, 0 agent" ◀─────────────────────────┘
//!   │          │   no-input (after the prompt ends) / invalid key: re-prompt, at the
//!   │          │   max_no_input-th / max_invalid-th time: Goodbye
//!   └── 2 ─────┤
//!              ├── 0 (transfer_available) ─▶ Transferring ── TransferResult(true) ─▶ Ended
//!              │                                  │ false / transfer_timeout
//!              │                                  └──▶ "transfer failed" ─▶ Menu
//!              │
//!              └── 1 (callback offered)
//!                    │ caller ID usable?
//!             yes ───┴──────────── no ─────────────┐
//!              ▼                                   ▼
//!           Confirm "…ending in 0 1 2 3,        Entry "enter your number followed by #"
//!              │     1 confirm, 2 other" ── 2 ─▶   │  * restarts; # or inter-digit timeout
//!              │ 1                                 │  submits; invalid: "not valid", retry
//!              ▼                                   ▼
//!        (Window: with callbacks.hours, "when should we call you back? for as soon as
//!         │   possible press 1, for this evening between 6 and 8 press 2, …"; a key picks
//!         │   an offer, no key picks the first)
//!           Booking ◀──────────── valid number ────┘
//!              │  Output::BookCallback, "please wait"
//!              ├── Booked{N}        ─▶ "booked, you are number N", Goodbye ─┐
//!              ├── AlreadyBooked{N} ─▶ "already booked, you are number N",  │
//!              │                       Goodbye ─────────────────────────────┤
//!              └── QueueFull / Failed / booking_timeout                     │
//!                    ─▶ "cannot take" / "could not book", then the Menu     │
//!                       without option 1 (transfer available) or Goodbye    │
//!                                                                           ▼
//!                     Closing: the Goodbye playlist ─ finished / closing_timeout ─▶ Hangup, Ended
//!
//!   Announcing / Menu ── a language key (more than one language) ─▶ Output::Language(l),
//!          the shell answers with Ivr::set_announcements ─▶ Announcing(0) in language l
//!
//!   any state ── RemoteHangup ─▶ Ended (only final events after that)
//!   any state but Booking/Closing ── max_call_duration ─▶ Goodbye ─▶ Closing
//! ```
//!
//! ## Rules chosen here
//!
//! * **Callback offered**: when the call matched announcements, option 1 is offered unless
//!   every one of them has `offer_callback = false`; with no announcement,
//!   [`Config::offer_callback_default`] decides. After `QueueFull`, `Failed` or a booking
//!   timeout, option 1 is withdrawn for the rest of the call.
//! * **Barge-in**: a key during any prompt of the greeting, announcements, menu, confirmation
//!   or number entry stops it and is taken as the answer to that step (a key during an
//!   announcement is a menu choice). With [`Config::announcements_interruptible`] `false`,
//!   keys during announcements are reported ([`Event::Dtmf`]) but ignored. Keys while
//!   booking, transferring or saying goodbye are reported and ignored: the caller always hears
//!   the whole "your call back is booked" confirmation.
//! * **Languages**: with [`Config::languages`] above 1, the first playlist of the
//!   announcements (the greeting when none matched) starts with one [`Prompt::LanguageOffer`]
//!   per language other than the call's ([`Ivr::set_language`], 0 = the default). The key
//!   of language `l` is [`language_key`]`(l)`: `*` for the default, then 9, 8, 7. That key,
//!   during the greeting, an announcement (even one that is not interruptible: it restarts
//!   in the chosen language) or the menu, stops what plays and outputs
//!   [`Output::Language`]; the shell selects the announcements for that language and hands
//!   them over with [`Ivr::set_announcements`], which starts the announcements again.
//!   Option 1 stays withdrawn after a failed booking. The keys are not language keys in
//!   the confirmation and number entry steps, nor with a single language.
//! * **Timers**: the no-input timer starts when the step's prompt finished playing
//!   ([`Input::PlaybackFinished`]); in number entry each key re-arms the inter-digit timer,
//!   and its expiry with keys entered submits them as if `#` was pressed.
//! * **Keyed numbers** (see [`Config::country_code`]): keys starting `00` are an
//!   international prefix (dropped); keys starting with one `0` are a national number: the
//!   `0` is replaced by the configured country code (invalid when none is configured); any
//!   other keys are taken as an international number, country code first. The result must
//!   be a valid E.164 number with [`Config::min_number_digits`] to
//!   [`Config::max_number_digits`] digits. The caller ID is read back for confirmation only
//!   when it meets the same length rule; otherwise the caller goes straight to number entry.
//! * **Windows** ([`Config::offer_windows`]): once the number is known the IVR asks the
//!   call for the offers ([`Output::OfferWindows`]), which the node computes from the
//!   opening hours at that moment and hands back with [`Ivr::offer_windows`]. One offer (or
//!   none) books at once; more are spoken as "for … press N". A key 1..=N books that offer's
//!   window; when the prompt ended and no key came within `no_input_timeout`, the first offer
//!   is booked; an invalid key re-prompts like any other step. Without the step the booking
//!   carries no window and the node books "as soon as possible".
//! * **Positions** are spoken with one [`Prompt::Number`]: the shell renders it as decimal
//!   digit prompts, most significant first (12 → "1", "2"; 0 → "0").
//! * **Booked is said only** after [`BookingResult::Booked`] arrived while the booking was
//!   pending. A result arriving after `booking_timeout` is refused with
//!   [`Error::Unexpected`] (the caller already heard "could not book"); the call module
//!   decides what to do with a booking that completed that late.
//! * **After `RemoteHangup`** no prompt, booking, transfer or hangup is output any more. If a
//!   booking was pending, its later [`Input::BookingResult`] is still accepted and yields only
//!   the final [`Event`] (no prompt), so the call module can record the outcome.
//!
//! ## Configuration knobs ([`Config`])
//!
//! | field | default | meaning |
//! |---|---|---|
//! | `transfer_available` | `false` | offer "0 for an agent" (`ivr.transfer_uri` set) |
//! | `offer_callback_default` | `true` | offer option 1 when no announcement matched |
//! | `announcements_interruptible` | `true` | keys barge into announcements |
//! | `max_no_input` | 3 | no-input timeouts in one step before goodbye |
//! | `max_invalid` | 3 | invalid keys / invalid numbers in one step before goodbye |
//! | `no_input_timeout` | 5 s | from the end of a prompt to the first key |
//! | `inter_digit_timeout` | 5 s | between keys of a number |
//! | `min_number_digits` / `max_number_digits` | 8 / 15 | accepted E.164 lengths |
//! | `country_code` | none | replaces a leading `0` of a keyed national number |
//! | `booking_timeout` | 5 s | waiting for [`Input::BookingResult`]; then treated as failed |
//! | `transfer_timeout` | 30 s | waiting for [`Input::TransferResult`]; then treated as failed |
//! | `max_call_duration` | 10 min | from `Start` to a forced goodbye |
//! | `closing_timeout` | 15 s | hang up even if the goodbye never reports finished |
//! | `offer_windows` | `false` | ask for a callback window (`callbacks.hours` configured) |
//! | `languages` | 1 | languages configured; above 1 the language offer and keys are on |
//!
//! ## Shell contract
//!
//! After every `handle_*` drain [`Ivr::poll_output`], then re-arm one timer from
//! [`Ivr::poll_timeout`]. Report [`Input::PlaybackFinished`] only for the latest
//! [`Output::Play`] and only when it played to its end (a stopped or replaced playlist
//! reports nothing).

use core::fmt;

use heapless::{Deque, Vec};

use crate::callback::window::{self, Clock, DayPart, DayRef, Offer, Window};
use crate::dtmf::Digit;
use crate::ids::AnnouncementHandle;
use crate::limits::{
    IVR_MAX_ANNOUNCEMENTS_PER_CALL, IVR_MAX_KEYED_DIGITS, IVR_MAX_PENDING_OUTPUTS,
    IVR_MAX_PLAYLIST, MAX_LANGUAGES,
};
use crate::number::PhoneNumber;
use crate::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// One announcement matched for this call, as handed to [`Ivr::new`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AnnouncementInfo {
    /// Which announcement (version) to play.
    pub handle: AnnouncementHandle,
    /// Whether this announcement wants the callback option offered.
    pub offer_callback: bool,
}

/// The IVR's configuration; see the module docs for the table of defaults.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// "0 for an agent" is offered (the node has `ivr.transfer_uri`).
    pub transfer_available: bool,
    /// Whether option 1 (call back) is offered when no announcement matched.
    pub offer_callback_default: bool,
    /// Whether a key interrupts an announcement (the greeting and menu prompts always are).
    pub announcements_interruptible: bool,
    /// No-input timeouts tolerated in one step: the `max_no_input`-th ends the call.
    pub max_no_input: u8,
    /// Invalid keys (or invalid keyed numbers) in one step: the `max_invalid`-th ends the call.
    pub max_invalid: u8,
    /// From the end of a step's prompt to the first key.
    pub no_input_timeout: Duration,
    /// Between two keys while keying a number; expiry submits what was keyed.
    pub inter_digit_timeout: Duration,
    /// Shortest accepted callback number, E.164 digits including the country code.
    pub min_number_digits: u8,
    /// Longest accepted callback number, E.164 digits (at most 15 are representable).
    pub max_number_digits: u8,
    /// Country code (1–999) that replaces the leading `0` of a keyed national number;
    /// `None`: numbers must be keyed in international form.
    pub country_code: Option<u16>,
    /// How long to wait for [`Input::BookingResult`] before treating the booking as failed.
    pub booking_timeout: Duration,
    /// How long to wait for [`Input::TransferResult`] before treating the transfer as failed.
    pub transfer_timeout: Duration,
    /// Longest call from `Start`; then goodbye and hang up.
    pub max_call_duration: Duration,
    /// Longest wait for the goodbye playlist to finish before hanging up anyway.
    pub closing_timeout: Duration,
    /// Ask the caller when to call back (opening hours are configured).
    pub offer_windows: bool,
    /// How many languages the node offers (1 to [`MAX_LANGUAGES`]); above 1 the greeting
    /// offers the others and their keys choose them.
    pub languages: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            transfer_available: false,
            offer_callback_default: true,
            announcements_interruptible: true,
            max_no_input: 3,
            max_invalid: 3,
            no_input_timeout: Duration::from_secs(5),
            inter_digit_timeout: Duration::from_secs(5),
            min_number_digits: 8,
            max_number_digits: 15,
            country_code: None,
            booking_timeout: Duration::from_secs(5),
            transfer_timeout: Duration::from_secs(30),
            max_call_duration: Duration::from_secs(600),
            closing_timeout: Duration::from_secs(15),
            offer_windows: false,
            languages: 1,
        }
    }
}

/// The key that chooses language `l` (an index into the node's languages, 0 = the default):
/// `*` for the default, 9, 8 and 7 for the next ones; `None` beyond [`MAX_LANGUAGES`].
#[must_use]
pub const fn language_key(l: u8) -> Option<Digit> {
    match l {
        0 => Some(Digit::Star),
        1 => Some(Digit::D9),
        2 => Some(Digit::D8),
        3 => Some(Digit::D7),
        _ => None,
    }
}

/// The language whose key is `d`, among the first `languages` ones.
fn key_language(d: Digit, languages: u8) -> Option<u8> {
    if languages < 2 {
        return None;
    }
    (0..languages.min(MAX_LANGUAGES as u8)).find(|&l| language_key(l) == Some(d))
}

/// One recorded prompt (or announcement) the shell knows how to play. Small and `Copy`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Prompt {
    /// The default greeting, played when no announcement matched.
    Greeting,
    /// An announcement's audio.
    Announcement(AnnouncementHandle),
    /// The menu, naming only the options offered: "press 1 for a call back" when `callback`,
    /// "press 2 to hear this again" always, "press 0 for an agent" when `transfer`.
    Menu {
        /// Option 1 is offered.
        callback: bool,
        /// Option 0 is offered.
        transfer: bool,
    },
    /// "We will call you back at the number ending in" (digits follow).
    CallbackConfirmIntro,
    /// One spoken key.
    Digit(Digit),
    /// A number spoken as decimal digit prompts, most significant first (12 → "1", "2").
    Number(u16),
    /// "Press 1 to confirm, or 2 to enter a different number."
    CallbackConfirmChoices,
    /// "Please enter your number, followed by the hash key."
    EnterNumber,
    /// "That number is not valid."
    InvalidNumber,
    /// "That is not a valid choice."
    InvalidChoice,
    /// "We did not receive your choice."
    NoInput,
    /// "Please wait" (hold prompt while the callback is booked).
    PleaseWait,
    /// "Your call back is booked."
    Booked,
    /// "You are number" (a [`Prompt::Number`] follows).
    YouAreNumber,
    /// "You already have a call back booked."
    AlreadyBooked,
    /// "We cannot take more call back requests right now."
    QueueFull,
    /// "Sorry, we could not book your call back."
    CouldNotBook,
    /// "Transferring you to an agent."
    Transferring,
    /// "Sorry, the transfer failed."
    TransferFailed,
    /// "Goodbye."
    Goodbye,
    /// "When should we call you back?"
    WindowQuestion,
    /// "For" (an offer follows).
    WindowFor,
    /// "press" (a [`Prompt::Digit`] follows).
    WindowPress,
    /// "as soon as possible"
    WindowAsap,
    /// "when we open," (a [`Prompt::Day`], [`Prompt::WindowAt`] and [`Prompt::Clock`] follow).
    WindowWhenOpen,
    /// "today", "tomorrow", "Monday" …
    Day(DayRef),
    /// "this morning", "tomorrow afternoon", "Monday evening" …
    DayPart(DayRef, DayPart),
    /// "at"
    WindowAt,
    /// "between"
    WindowBetween,
    /// "and"
    WindowAnd,
    /// A local time of day, spoken on a 12-hour clock ("8", "5 30").
    Clock(Clock),
    /// The offer of language `l` spoken in that language, naming its key
    /// ([`language_key`]): "Para español, oprima nueve".
    LanguageOffer(u8),
}

/// Prompts played back to back; the shell stops whatever was playing and starts this.
pub type Playlist = Vec<Prompt, IVR_MAX_PLAYLIST>;

/// The outcome of an [`Output::BookCallback`], reported by the shell.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum BookingResult {
    /// Durably queued at this 1-based position.
    Booked {
        /// Position in the callback queue.
        position: u16,
    },
    /// This number already has a callback waiting, at this position.
    AlreadyBooked {
        /// Position of the existing callback.
        position: u16,
    },
    /// The callback queue is full.
    QueueFull,
    /// Could not book (e.g. disk full); nothing was queued.
    Failed,
}

/// What happens to the IVR.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Input {
    /// The call is answered and media flows: start the flow.
    Start,
    /// The latest [`Output::Play`] playlist played to its end.
    PlaybackFinished,
    /// The caller pressed a key.
    Digit(Digit),
    /// The outcome of the pending [`Output::BookCallback`].
    BookingResult(BookingResult),
    /// The outcome of the pending [`Output::Transfer`]: `true` when the call was transferred.
    TransferResult(bool),
    /// The caller hung up.
    RemoteHangup,
}

/// Why a booking did not happen.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CallbackFailure {
    /// [`BookingResult::QueueFull`].
    QueueFull,
    /// [`BookingResult::Failed`].
    Failed,
    /// No result within [`Config::booking_timeout`].
    Timeout,
}

/// Why the IVR says goodbye and hangs up.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CloseReason {
    /// The callback was booked (or already was).
    Completed,
    /// Too many no-input timeouts.
    NoInput,
    /// Too many invalid keys or numbers.
    InvalidInput,
    /// The booking failed and no transfer is available.
    CallbackUnavailable,
    /// [`Config::max_call_duration`] reached.
    MaxDuration,
}

/// What the IVR reports; the call module turns these into CallEvents.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// An announcement started playing.
    AnnouncementStarted(AnnouncementHandle),
    /// An announcement stopped playing.
    AnnouncementCompleted {
        /// Which one.
        handle: AnnouncementHandle,
        /// `true` when it did not play to its end (barge-in, hang-up, max duration).
        interrupted: bool,
    },
    /// The caller pressed a key (every key, whether it was used or not).
    Dtmf(Digit),
    /// A step's no-input timer expired.
    NoInput,
    /// A key or keyed number was not valid in its step.
    InvalidInput,
    /// The IVR asked the shell to book a callback to this number.
    CallbackRequested {
        /// The number to call back.
        number: PhoneNumber,
    },
    /// The callback is booked.
    CallbackBooked {
        /// Position in the queue.
        position: u16,
    },
    /// The number already had a callback booked.
    CallbackAlreadyBooked {
        /// Position of the existing callback.
        position: u16,
    },
    /// The callback could not be booked.
    CallbackFailed(CallbackFailure),
    /// The IVR asked for a transfer to an agent.
    TransferRequested,
    /// The transfer failed (or timed out).
    TransferFailed,
    /// The call was transferred; the IVR is done.
    Transferred,
    /// The IVR is saying goodbye and will hang up.
    Closing(CloseReason),
}

/// What the IVR asks the shell (the call module) to do.
///
/// Outputs are transient: produced by [`Ivr::poll_output`] and consumed at once, never stored
/// per call, so the playlist inline is fine (there is no allocator to box it into).
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// Stop whatever is playing and play this playlist.
    Play(Playlist),
    /// Stop playing (barge-in with nothing new to play at once).
    StopPlayback,
    /// Compute the callback offers now and hand them to [`Ivr::offer_windows`].
    OfferWindows,
    /// Book a callback; answer with [`Input::BookingResult`].
    BookCallback {
        /// The number to call back.
        number: PhoneNumber,
        /// The window the caller chose; `None`: as soon as possible.
        window: Option<Window>,
    },
    /// Transfer the caller to an agent (REFER); answer with [`Input::TransferResult`].
    Transfer,
    /// End the call.
    Hangup,
    /// The caller chose language `l`: select the call's announcements for it and answer with
    /// [`Ivr::set_announcements`]; prompts from now on are in that language.
    Language(u8),
    /// Something to report.
    Event(Event),
}

/// An input the IVR cannot take in its current state; the state did not change.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// Only `Start` or `RemoteHangup` are accepted before `Start`.
    NotStarted,
    /// `Start` was already given.
    AlreadyStarted,
    /// The input does not fit the current step (e.g. a booking result with no booking
    /// pending, playback finished with nothing playing).
    Unexpected,
    /// The IVR has ended.
    Ended,
    /// Too many outputs are waiting: drain [`Ivr::poll_output`] first.
    Backlog,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::NotStarted => "the IVR has not started",
            Error::AlreadyStarted => "the IVR has already started",
            Error::Unexpected => "input not expected in this IVR state",
            Error::Ended => "the IVR has ended",
            Error::Backlog => "IVR outputs not drained",
        })
    }
}

impl core::error::Error for Error {}

/// Where the flow is.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Step {
    Idle,
    /// Playing announcement `n` (the greeting when the call has no announcement).
    Announcing(u8),
    Menu,
    Confirm,
    Entry,
    /// Waiting for the offers (`false`) or for the caller's choice among them (`true`).
    Window(bool),
    Booking,
    Transferring,
    Closing,
    Ended,
}

impl Step {
    fn same_kind(self, other: Step) -> bool {
        core::mem::discriminant(&self) == core::mem::discriminant(&other)
    }
}

/// The main part of a playlist, rendered in `poll_output`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Body {
    One(Prompt),
    /// The language offer (the languages other than the call's), then this prompt.
    Offer(Prompt),
    /// Confirmation of the caller ID: intro, last four digits, choices.
    Confirm,
    /// The callback offers, "for … press N" each.
    Offers,
    /// "booked / already booked, you are number N, goodbye".
    Position {
        already: bool,
        position: u16,
    },
}

/// Event kinds as queued (the number of `CallbackRequested` is read when polled).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Ev {
    AnnouncementStarted(AnnouncementHandle),
    AnnouncementCompleted(AnnouncementHandle, bool),
    Dtmf(Digit),
    NoInput,
    InvalidInput,
    CallbackRequested,
    CallbackBooked(u16),
    CallbackAlreadyBooked(u16),
    CallbackFailed(CallbackFailure),
    TransferRequested,
    TransferFailed,
    Transferred,
    Closing(CloseReason),
}

/// A queued output, rendered in `poll_output` so playlists are not stored per call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Pending {
    Play { lead: Option<Prompt>, body: Body },
    Stop,
    Offers,
    Book,
    Transfer,
    Hangup,
    Language(u8),
    Event(Ev),
}

/// Most outputs one `handle_*` call queues.
const MAX_OUTPUTS_PER_STEP: usize = 6;

/// The IVR flow of one call. See the module docs for the flow and its rules.
#[derive(Debug)]
pub struct Ivr {
    cfg: Config,
    /// The caller ID, kept only when usable for read-back confirmation.
    caller: Option<PhoneNumber>,
    /// The number of the current (or last) booking request.
    number: Option<PhoneNumber>,
    /// The callback offers while the caller chooses.
    offers: Vec<Offer, { window::MAX_OFFERS }, u8>,
    /// The window chosen for the current booking.
    window: Option<Window>,
    announcements: Vec<AnnouncementHandle, IVR_MAX_ANNOUNCEMENTS_PER_CALL, u8>,
    keys: Vec<Digit, IVR_MAX_KEYED_DIGITS, u8>,
    pending: Deque<Pending, IVR_MAX_PENDING_OUTPUTS>,
    step: Step,
    /// A playlist was output and has neither finished nor been stopped.
    playing: bool,
    /// More keys were pressed than `keys` holds.
    keys_overflow: bool,
    callback_offered: bool,
    booking_pending: bool,
    no_input: u8,
    invalid: u8,
    /// The current step's timer (no-input, inter-digit, booking, transfer, closing).
    deadline: Option<Instant>,
    /// Start + max_call_duration.
    max_deadline: Instant,
    /// The call's language (index into the node's languages, 0 = the default).
    language: u8,
    /// A language was chosen and the shell has not yet handed its announcements over.
    language_pending: bool,
    /// Option 1 was withdrawn after a failed booking (a language change keeps it so).
    callback_withdrawn: bool,
}

impl Ivr {
    /// A new IVR for one call. `caller` is the caller ID (`None` when anonymous or not a
    /// number); `announcements` are the matched announcements already sorted by priority
    /// (only the first [`IVR_MAX_ANNOUNCEMENTS_PER_CALL`] are used). Nothing happens until
    /// [`Input::Start`].
    #[must_use]
    pub fn new(
        cfg: &Config,
        caller: Option<PhoneNumber>,
        announcements: &[AnnouncementInfo],
    ) -> Ivr {
        let (handles, callback_offered) = announcement_handles(cfg, announcements);
        let caller = caller.filter(|c| length_ok(cfg, c));
        Ivr {
            cfg: *cfg,
            caller,
            number: None,
            offers: Vec::new(),
            window: None,
            announcements: handles,
            keys: Vec::new(),
            pending: Deque::new(),
            step: Step::Idle,
            playing: false,
            keys_overflow: false,
            callback_offered,
            booking_pending: false,
            no_input: 0,
            invalid: 0,
            deadline: None,
            max_deadline: Instant::MAX,
            language: 0,
            language_pending: false,
            callback_withdrawn: false,
        }
    }

    /// Starts the IVR in language `l` (an index into the node's languages; the default 0
    /// when out of range). Only before [`Input::Start`]; ignored after.
    pub fn set_language(&mut self, l: u8) {
        if self.step == Step::Idle {
            self.language = if l < self.cfg.languages { l } else { 0 };
        }
    }

    /// The call's language: where it started, or what the caller chose since.
    #[must_use]
    pub fn language(&self) -> u8 {
        self.language
    }

    /// The shell's answer to [`Output::Language`]: the announcements selected for the chosen
    /// language, by priority. The announcements start again from the first (with the
    /// language offer). Then drain [`Ivr::poll_output`].
    ///
    /// # Errors
    /// [`Error::Unexpected`] when no language choice is waiting for its announcements;
    /// [`Error::Backlog`] when outputs were not drained.
    pub fn set_announcements(&mut self, announcements: &[AnnouncementInfo]) -> Result<(), Error> {
        if !self.language_pending || self.step == Step::Ended {
            return Err(Error::Unexpected);
        }
        if self.pending.len() + MAX_OUTPUTS_PER_STEP > IVR_MAX_PENDING_OUTPUTS {
            return Err(Error::Backlog);
        }
        self.language_pending = false;
        let (handles, offered) = announcement_handles(&self.cfg, announcements);
        self.announcements = handles;
        self.callback_offered = offered && !self.callback_withdrawn;
        self.start_announcements();
        Ok(())
    }

    /// Whether the flow is over (hung up, transferred, or the caller left). Only queued
    /// events may still come out of [`Ivr::poll_output`].
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.step == Step::Ended
    }

    /// Whether option 1 (call back) is currently offered.
    #[must_use]
    pub fn callback_offered(&self) -> bool {
        self.callback_offered
    }

    /// The callback offers asked for with [`Output::OfferWindows`], first the default.
    /// Then drain [`Ivr::poll_output`] and re-arm the timer.
    ///
    /// # Errors
    /// [`Error::Unexpected`] when no offers were asked for; [`Error::Backlog`].
    pub fn offer_windows(&mut self, now: Instant, offers: &[Offer]) -> Result<(), Error> {
        if self.pending.len() + MAX_OUTPUTS_PER_STEP > IVR_MAX_PENDING_OUTPUTS {
            return Err(Error::Backlog);
        }
        if self.step != Step::Window(false) {
            return Err(Error::Unexpected);
        }
        self.offers.clear();
        for o in offers.iter().take(window::MAX_OFFERS) {
            let _ = self.offers.push(*o);
        }
        if self.offers.len() <= 1 {
            let w = self.offers.first().map(Offer::window);
            self.book_window(now, w);
        } else {
            self.step = Step::Window(true);
            self.deadline = None;
            self.play(None, Body::Offers);
        }
        Ok(())
    }

    /// Feeds one input; call it when the call is answered (`Start`), a key arrives, the
    /// current playlist finished, the booking or transfer outcome is known, or the caller hung
    /// up. Then drain [`Ivr::poll_output`] and re-arm the timer from [`Ivr::poll_timeout`].
    ///
    /// # Errors
    /// [`Error`] when the input does not fit the current state; the state is unchanged.
    pub fn handle_input(&mut self, now: Instant, input: Input) -> Result<(), Error> {
        if self.pending.len() + MAX_OUTPUTS_PER_STEP > IVR_MAX_PENDING_OUTPUTS {
            return Err(Error::Backlog);
        }
        match (self.step, input) {
            (Step::Ended, Input::BookingResult(r)) if self.booking_pending => {
                self.booking_pending = false;
                self.event(result_event(r));
                Ok(())
            }
            (Step::Ended, _) => Err(Error::Ended),
            (Step::Idle, Input::Start) => {
                self.max_deadline = now + self.cfg.max_call_duration;
                self.start_announcements();
                Ok(())
            }
            (Step::Idle, Input::RemoteHangup) => {
                self.step = Step::Ended;
                Ok(())
            }
            (Step::Idle, _) => Err(Error::NotStarted),
            (_, Input::Start) => Err(Error::AlreadyStarted),
            (_, Input::RemoteHangup) => {
                self.remote_hangup();
                Ok(())
            }
            (_, Input::PlaybackFinished) => self.playback_finished(now),
            (_, Input::Digit(d)) => {
                self.digit(now, d);
                Ok(())
            }
            (Step::Booking, Input::BookingResult(r)) => {
                self.booking_result(now, r);
                Ok(())
            }
            (Step::Transferring, Input::TransferResult(ok)) => {
                if ok {
                    self.stop();
                    self.event(Ev::Transferred);
                    self.enter(Step::Ended);
                } else {
                    self.transfer_failed();
                }
                Ok(())
            }
            (_, Input::BookingResult(_) | Input::TransferResult(_)) => Err(Error::Unexpected),
        }
    }

    /// Call when the instant from [`Ivr::poll_timeout`] has passed (calling it early is
    /// harmless). Then drain [`Ivr::poll_output`] and re-arm the timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.pending.len() + MAX_OUTPUTS_PER_STEP > IVR_MAX_PENDING_OUTPUTS {
            // Drain first; the deadline stays due and the next call handles it.
            return;
        }
        if matches!(self.step, Step::Idle | Step::Ended) {
            return;
        }
        if self.max_duration_applies() && now >= self.max_deadline {
            self.close(now, None, CloseReason::MaxDuration);
            return;
        }
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        self.deadline = None;
        match self.step {
            Step::Menu | Step::Confirm => self.no_input(now),
            Step::Entry => {
                if self.keys.is_empty() && !self.keys_overflow {
                    self.no_input(now);
                } else {
                    self.submit(now);
                }
            }
            Step::Window(false) => self.book_window(now, None),
            Step::Window(true) => {
                let w = self.offers.first().map(Offer::window);
                self.book_window(now, w);
            }
            Step::Booking => {
                self.booking_pending = false;
                self.booking_failed(now, CallbackFailure::Timeout, Prompt::CouldNotBook);
            }
            Step::Transferring => self.transfer_failed(),
            Step::Closing => self.hang_up(),
            Step::Idle | Step::Announcing(_) | Step::Ended => {}
        }
    }

    /// The next thing to do; call repeatedly after every `handle_*` until `None`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            let p = self.pending.pop_front()?;
            let out = match p {
                Pending::Play { lead, body } => Some(Output::Play(self.render(lead, body))),
                Pending::Stop => Some(Output::StopPlayback),
                Pending::Offers => Some(Output::OfferWindows),
                Pending::Book => self.number.clone().map(|number| Output::BookCallback {
                    number,
                    window: self.window,
                }),
                Pending::Transfer => Some(Output::Transfer),
                Pending::Hangup => Some(Output::Hangup),
                Pending::Language(l) => Some(Output::Language(l)),
                Pending::Event(e) => self.render_event(e).map(Output::Event),
            };
            if out.is_some() {
                return out;
            }
        }
    }

    /// When [`Ivr::handle_timeout`] must next be called, `None` when no timer runs (before
    /// `Start`, after the end, or while only waiting for a playlist to finish with the call's
    /// duration unlimited). Re-read after every `handle_*`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if matches!(self.step, Step::Idle | Step::Ended) {
            return None;
        }
        let max = self
            .max_duration_applies()
            .then_some(self.max_deadline)
            .filter(|m| *m != Instant::MAX);
        match (self.deadline, max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- transitions ------------------------------------------------------------------

    fn max_duration_applies(&self) -> bool {
        // A pending booking is bounded by booking_timeout and must be answered truthfully;
        // the goodbye is bounded by closing_timeout.
        !matches!(
            self.step,
            Step::Idle | Step::Booking | Step::Closing | Step::Ended
        )
    }

    fn push(&mut self, p: Pending) {
        // Room is reserved by the backlog check at the top of every handle_*.
        let _ = self.pending.push_back(p);
    }

    fn event(&mut self, e: Ev) {
        self.push(Pending::Event(e));
    }

    fn play(&mut self, lead: Option<Prompt>, body: Body) {
        self.push(Pending::Play { lead, body });
        self.playing = true;
        self.deadline = None;
    }

    fn stop(&mut self) {
        if self.playing {
            self.push(Pending::Stop);
            self.playing = false;
        }
    }

    fn enter(&mut self, step: Step) {
        if !self.step.same_kind(step) {
            self.no_input = 0;
            self.invalid = 0;
        }
        self.step = step;
        self.deadline = None;
    }

    fn menu_prompt(&self) -> Prompt {
        Prompt::Menu {
            callback: self.callback_offered,
            transfer: self.cfg.transfer_available,
        }
    }

    /// The announcement being played, when an announcement (not the greeting) is playing.
    fn current_announcement(&self) -> Option<AnnouncementHandle> {
        match self.step {
            Step::Announcing(i) if self.playing => self.announcements.get(usize::from(i)).copied(),
            _ => None,
        }
    }

    fn interrupt_announcement(&mut self) {
        if let Some(h) = self.current_announcement() {
            self.event(Ev::AnnouncementCompleted(h, true));
        }
    }

    fn start_announcements(&mut self) {
        self.enter(Step::Announcing(0));
        self.play_announcement(0);
    }

    fn play_announcement(&mut self, i: u8) {
        let body = |p| {
            if i == 0 && self.cfg.languages > 1 {
                Body::Offer(p)
            } else {
                Body::One(p)
            }
        };
        match self.announcements.get(usize::from(i)).copied() {
            Some(h) => {
                self.play(None, body(Prompt::Announcement(h)));
                self.event(Ev::AnnouncementStarted(h));
            }
            None => self.play(None, body(Prompt::Greeting)),
        }
    }

    /// The caller pressed the key of language `l`: stop, and wait for the shell's
    /// [`Ivr::set_announcements`] in that language.
    fn choose_language(&mut self, l: u8) {
        self.interrupt_announcement();
        self.stop();
        self.language = l;
        self.language_pending = true;
        self.announcements.clear();
        self.enter(Step::Announcing(0));
        self.push(Pending::Language(l));
    }

    fn menu(&mut self, lead: Option<Prompt>) {
        self.enter(Step::Menu);
        let p = self.menu_prompt();
        self.play(lead, Body::One(p));
    }

    fn entry(&mut self) {
        self.enter(Step::Entry);
        self.keys.clear();
        self.keys_overflow = false;
        self.play(None, Body::One(Prompt::EnterNumber));
    }

    /// Plays the current step's prompt again after `lead`.
    fn reprompt(&mut self, lead: Prompt) {
        match self.step {
            Step::Confirm => self.play(Some(lead), Body::Confirm),
            Step::Window(_) => self.play(Some(lead), Body::Offers),
            Step::Entry => {
                self.keys.clear();
                self.keys_overflow = false;
                self.play(Some(lead), Body::One(Prompt::EnterNumber));
            }
            _ => {
                let p = self.menu_prompt();
                self.play(Some(lead), Body::One(p));
            }
        }
    }

    fn close(&mut self, now: Instant, lead: Option<Prompt>, reason: CloseReason) {
        self.close_with(now, lead, Body::One(Prompt::Goodbye), reason);
    }

    fn close_with(&mut self, now: Instant, lead: Option<Prompt>, body: Body, reason: CloseReason) {
        self.interrupt_announcement();
        self.event(Ev::Closing(reason));
        self.enter(Step::Closing);
        self.play(lead, body);
        self.deadline = Some(now + self.cfg.closing_timeout);
    }

    fn hang_up(&mut self) {
        self.push(Pending::Hangup);
        self.playing = false;
        self.enter(Step::Ended);
    }

    fn remote_hangup(&mut self) {
        // Nothing but events leaves an IVR whose caller is gone. A booking or transfer that was
        // queued but never polled is withdrawn together with its event.
        let mut dropped_book = false;
        let mut dropped_transfer = false;
        for p in &self.pending {
            dropped_book |= *p == Pending::Book;
            dropped_transfer |= *p == Pending::Transfer;
        }
        self.pending.retain(|p| match p {
            Pending::Event(Ev::CallbackRequested) => !dropped_book,
            Pending::Event(Ev::TransferRequested) => !dropped_transfer,
            Pending::Event(_) => true,
            _ => false,
        });
        if dropped_book {
            self.booking_pending = false;
        }
        self.interrupt_announcement();
        self.playing = false;
        self.enter(Step::Ended);
    }

    fn playback_finished(&mut self, now: Instant) -> Result<(), Error> {
        if !self.playing {
            return Err(Error::Unexpected);
        }
        let finished = self.current_announcement();
        self.playing = false;
        match self.step {
            Step::Announcing(i) => {
                if let Some(h) = finished {
                    self.event(Ev::AnnouncementCompleted(h, false));
                }
                let next = i.saturating_add(1);
                if usize::from(next) < self.announcements.len() {
                    self.step = Step::Announcing(next);
                    self.play_announcement(next);
                } else {
                    self.menu(None);
                }
            }
            Step::Menu | Step::Confirm | Step::Window(true) => {
                self.deadline = Some(now + self.cfg.no_input_timeout);
            }
            Step::Entry => {
                let t = if self.keys.is_empty() {
                    self.cfg.no_input_timeout
                } else {
                    self.cfg.inter_digit_timeout
                };
                self.deadline = Some(now + t);
            }
            Step::Closing => self.hang_up(),
            // Hold prompt / transfer prompt over: silence while waiting.
            Step::Window(false) | Step::Booking | Step::Transferring | Step::Idle | Step::Ended => {
            }
        }
        Ok(())
    }

    fn digit(&mut self, now: Instant, d: Digit) {
        self.event(Ev::Dtmf(d));
        if matches!(self.step, Step::Announcing(_) | Step::Menu) && !self.language_pending {
            if let Some(l) = key_language(d, self.cfg.languages) {
                self.choose_language(l);
                return;
            }
        }
        match self.step {
            Step::Announcing(i) => {
                let is_announcement = usize::from(i) < self.announcements.len();
                if is_announcement && !self.cfg.announcements_interruptible {
                    return;
                }
                self.interrupt_announcement();
                self.menu_choice(now, d);
            }
            Step::Menu => self.menu_choice(now, d),
            Step::Confirm => match d {
                Digit::D1 => {
                    if let Some(c) = self.caller.clone() {
                        self.book(now, c);
                    }
                }
                Digit::D2 => self.entry(),
                _ => self.invalid_choice(now),
            },
            Step::Entry => self.entry_key(now, d),
            Step::Window(true) => {
                let chosen = d
                    .decimal()
                    .and_then(|n| usize::from(n).checked_sub(1))
                    .and_then(|i| self.offers.get(i))
                    .map(Offer::window);
                match chosen {
                    Some(w) => self.book_window(now, Some(w)),
                    None => self.invalid_choice(now),
                }
            }
            Step::Window(false)
            | Step::Idle
            | Step::Booking
            | Step::Transferring
            | Step::Closing
            | Step::Ended => {}
        }
    }

    fn menu_choice(&mut self, now: Instant, d: Digit) {
        match d {
            Digit::D1 if self.callback_offered => {
                if self.caller.is_some() {
                    self.enter(Step::Confirm);
                    self.play(None, Body::Confirm);
                } else {
                    self.entry();
                }
            }
            Digit::D2 => self.start_announcements(),
            Digit::D0 if self.cfg.transfer_available => {
                self.enter(Step::Transferring);
                self.push(Pending::Transfer);
                self.event(Ev::TransferRequested);
                self.play(None, Body::One(Prompt::Transferring));
                self.deadline = Some(now + self.cfg.transfer_timeout);
            }
            _ => {
                if matches!(self.step, Step::Announcing(_)) {
                    self.enter(Step::Menu);
                }
                self.invalid_choice(now);
            }
        }
    }

    fn invalid_choice(&mut self, now: Instant) {
        self.invalid_with(now, Prompt::InvalidChoice);
    }

    fn invalid_with(&mut self, now: Instant, lead: Prompt) {
        self.event(Ev::InvalidInput);
        self.invalid = self.invalid.saturating_add(1);
        if self.invalid >= self.cfg.max_invalid {
            self.close(now, Some(lead), CloseReason::InvalidInput);
        } else {
            self.reprompt(lead);
        }
    }

    fn no_input(&mut self, now: Instant) {
        self.event(Ev::NoInput);
        self.no_input = self.no_input.saturating_add(1);
        if self.no_input >= self.cfg.max_no_input {
            self.close(now, Some(Prompt::NoInput), CloseReason::NoInput);
        } else {
            self.reprompt(Prompt::NoInput);
        }
    }

    fn entry_key(&mut self, now: Instant, d: Digit) {
        match d {
            Digit::Star => {
                self.keys.clear();
                self.keys_overflow = false;
                self.play(None, Body::One(Prompt::EnterNumber));
            }
            Digit::Hash => self.submit(now),
            _ if d.decimal().is_some() => {
                self.stop();
                if self.keys.push(d).is_err() {
                    self.keys_overflow = true;
                }
                self.deadline = Some(now + self.cfg.inter_digit_timeout);
            }
            // A–D are not part of a number: reported, ignored.
            _ => {}
        }
    }

    fn submit(&mut self, now: Instant) {
        let number = if self.keys_overflow {
            None
        } else {
            keyed_number(&self.cfg, &self.keys)
        };
        self.keys.clear();
        self.keys_overflow = false;
        match number {
            Some(n) => self.book(now, n),
            None => self.invalid_with(now, Prompt::InvalidNumber),
        }
    }

    fn book(&mut self, now: Instant, number: PhoneNumber) {
        self.number = Some(number);
        if self.cfg.offer_windows {
            self.stop();
            self.enter(Step::Window(false));
            self.push(Pending::Offers);
            // The node answers at once; should it not, book "as soon as possible".
            self.deadline = Some(now + self.cfg.booking_timeout);
            return;
        }
        self.book_window(now, None);
    }

    fn book_window(&mut self, now: Instant, window: Option<Window>) {
        self.offers.clear();
        self.window = window;
        self.enter(Step::Booking);
        self.booking_pending = true;
        self.push(Pending::Book);
        self.event(Ev::CallbackRequested);
        self.play(None, Body::One(Prompt::PleaseWait));
        self.deadline = Some(now + self.cfg.booking_timeout);
    }

    fn booking_result(&mut self, now: Instant, r: BookingResult) {
        self.booking_pending = false;
        match r {
            BookingResult::Booked { position } => {
                self.event(result_event(r));
                let body = Body::Position {
                    already: false,
                    position,
                };
                self.close_with(now, None, body, CloseReason::Completed);
            }
            BookingResult::AlreadyBooked { position } => {
                self.event(result_event(r));
                let body = Body::Position {
                    already: true,
                    position,
                };
                self.close_with(now, None, body, CloseReason::Completed);
            }
            BookingResult::QueueFull => {
                self.booking_failed(now, CallbackFailure::QueueFull, Prompt::QueueFull);
            }
            BookingResult::Failed => {
                self.booking_failed(now, CallbackFailure::Failed, Prompt::CouldNotBook);
            }
        }
    }

    fn booking_failed(&mut self, now: Instant, why: CallbackFailure, lead: Prompt) {
        self.callback_offered = false;
        self.callback_withdrawn = true;
        self.event(Ev::CallbackFailed(why));
        if self.cfg.transfer_available {
            self.menu(Some(lead));
        } else {
            self.close(now, Some(lead), CloseReason::CallbackUnavailable);
        }
    }

    fn transfer_failed(&mut self) {
        self.event(Ev::TransferFailed);
        self.menu(Some(Prompt::TransferFailed));
    }

    // ---- rendering --------------------------------------------------------------------

    fn render(&self, lead: Option<Prompt>, body: Body) -> Playlist {
        let mut list = Playlist::new();
        // At most 7 prompts: well within IVR_MAX_PLAYLIST, so pushes cannot fail.
        if let Some(p) = lead {
            let _ = list.push(p);
        }
        match body {
            Body::One(p) => {
                let _ = list.push(p);
            }
            Body::Offer(p) => {
                for l in
                    (0..self.cfg.languages.min(MAX_LANGUAGES as u8)).filter(|&l| l != self.language)
                {
                    let _ = list.push(Prompt::LanguageOffer(l));
                }
                let _ = list.push(p);
            }
            Body::Confirm => {
                let _ = list.push(Prompt::CallbackConfirmIntro);
                if let Some(c) = &self.caller {
                    for d in c.last_digits(4).chars().filter_map(Digit::from_char) {
                        let _ = list.push(Prompt::Digit(d));
                    }
                }
                let _ = list.push(Prompt::CallbackConfirmChoices);
            }
            Body::Offers => {
                let _ = list.push(Prompt::WindowQuestion);
                for (i, o) in self.offers.iter().enumerate() {
                    let _ = list.push(Prompt::WindowFor);
                    match *o {
                        Offer::Asap(_) => {
                            let _ = list.push(Prompt::WindowAsap);
                        }
                        Offer::WhenOpen { day, at, .. } => {
                            for p in [
                                Prompt::WindowWhenOpen,
                                Prompt::Day(day),
                                Prompt::WindowAt,
                                Prompt::Clock(at),
                            ] {
                                let _ = list.push(p);
                            }
                        }
                        Offer::Slot {
                            day,
                            part,
                            from,
                            to,
                            ..
                        } => {
                            for p in [
                                Prompt::DayPart(day, part),
                                Prompt::WindowBetween,
                                Prompt::Clock(from),
                                Prompt::WindowAnd,
                                Prompt::Clock(to),
                            ] {
                                let _ = list.push(p);
                            }
                        }
                    }
                    let _ = list.push(Prompt::WindowPress);
                    let key = u8::try_from(i + 1).ok().and_then(Digit::from_event_code);
                    if let Some(k) = key {
                        let _ = list.push(Prompt::Digit(k));
                    }
                }
            }
            Body::Position { already, position } => {
                let first = if already {
                    Prompt::AlreadyBooked
                } else {
                    Prompt::Booked
                };
                for p in [
                    first,
                    Prompt::YouAreNumber,
                    Prompt::Number(position),
                    Prompt::Goodbye,
                ] {
                    let _ = list.push(p);
                }
            }
        }
        list
    }

    fn render_event(&self, e: Ev) -> Option<Event> {
        Some(match e {
            Ev::AnnouncementStarted(h) => Event::AnnouncementStarted(h),
            Ev::AnnouncementCompleted(handle, interrupted) => Event::AnnouncementCompleted {
                handle,
                interrupted,
            },
            Ev::Dtmf(d) => Event::Dtmf(d),
            Ev::NoInput => Event::NoInput,
            Ev::InvalidInput => Event::InvalidInput,
            Ev::CallbackRequested => Event::CallbackRequested {
                number: self.number.clone()?,
            },
            Ev::CallbackBooked(position) => Event::CallbackBooked { position },
            Ev::CallbackAlreadyBooked(position) => Event::CallbackAlreadyBooked { position },
            Ev::CallbackFailed(why) => Event::CallbackFailed(why),
            Ev::TransferRequested => Event::TransferRequested,
            Ev::TransferFailed => Event::TransferFailed,
            Ev::Transferred => Event::Transferred,
            Ev::Closing(r) => Event::Closing(r),
        })
    }
}

/// The handles of the announcements a call plays (at most
/// [`IVR_MAX_ANNOUNCEMENTS_PER_CALL`]) and whether they offer option 1.
fn announcement_handles(
    cfg: &Config,
    announcements: &[AnnouncementInfo],
) -> (
    Vec<AnnouncementHandle, IVR_MAX_ANNOUNCEMENTS_PER_CALL, u8>,
    bool,
) {
    let used = announcements
        .get(..IVR_MAX_ANNOUNCEMENTS_PER_CALL)
        .unwrap_or(announcements);
    let mut handles = Vec::new();
    for a in used {
        // Cannot fail: `used` holds at most the capacity.
        let _ = handles.push(a.handle);
    }
    let offered = if used.is_empty() {
        cfg.offer_callback_default
    } else {
        used.iter().any(|a| a.offer_callback)
    };
    (handles, offered)
}

fn result_event(r: BookingResult) -> Ev {
    match r {
        BookingResult::Booked { position } => Ev::CallbackBooked(position),
        BookingResult::AlreadyBooked { position } => Ev::CallbackAlreadyBooked(position),
        BookingResult::QueueFull => Ev::CallbackFailed(CallbackFailure::QueueFull),
        BookingResult::Failed => Ev::CallbackFailed(CallbackFailure::Failed),
    }
}

fn length_ok(cfg: &Config, n: &PhoneNumber) -> bool {
    let len = n.digits().len();
    len >= usize::from(cfg.min_number_digits) && len <= usize::from(cfg.max_number_digits)
}

/// The E.164 number a caller keyed (see the module docs for the rules), `None` when invalid.
fn keyed_number(cfg: &Config, keys: &[Digit]) -> Option<PhoneNumber> {
    let mut digits: Vec<Digit, 24, u8> = Vec::new();
    let rest = match keys {
        [Digit::D0, Digit::D0, rest @ ..] => rest,
        [Digit::D0, rest @ ..] => {
            let cc = cfg.country_code?;
            let mut div = 100;
            let mut started = false;
            while div > 0 {
                let d = (cc / div) % 10;
                started |= d != 0;
                if started {
                    digits
                        .push(Digit::from_event_code(u8::try_from(d).ok()?)?)
                        .ok()?;
                }
                div /= 10;
            }
            if cc > 999 {
                return None;
            }
            rest
        }
        _ => keys,
    };
    digits.extend_from_slice(rest).ok()?;
    let n = PhoneNumber::from_keys(&digits).ok()?;
    length_ok(cfg, &n).then_some(n)
}
