//! # `shared`: ccedge's sans-IO core
//!
//! Every protocol codec and state machine of ccedge lives here, with no I/O, no clock, no
//! randomness, no `async` and no heap. The daemon (`edge`, on tokio) and the simulator
//! (`firmware-sim`, on a virtual clock) are two shells around the same code, and the same code
//! can run on gateway firmware (`#![no_std]`, builds for `thumbv7em-none-eabihf`).
//!
//! ## Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`sip`] | SIP message parser/serializer (zero-copy views over a datagram) and the UAS transaction + dialog machine |
//! | [`sdp`] | SDP offer/answer for PCMU/PCMA + `telephone-event/8000` |
//! | [`rtp`] | RTP packet view/builder, outbound stream state, RFC 4733 telephone-event payloads |
//! | [`g711`] | µ-law / A-law encode and decode (table-driven) |
//! | [`dtmf`] | [`dtmf::Digit`], RFC 4733 de-duplication, in-band Goertzel detector |
//! | [`ivr`] | the caller-facing flow: announcements, menu, callback sub-flow |
//! | [`call`] | one call: SIP dialog + SDP + media + IVR + events, the unit the shell drives |
//! | [`announce`] | the announcement set: versions, scope, validity, selection |
//! | [`callback`] | the callback queue model |
//! | [`event`] | the CallEvent model, per-node `seq`, per-call `call_seq`, outbox bookkeeping |
//! | [`node`] | the node: every call, the callback queue, the announcement set, booking and event mapping, driven by both shells |
//! | [`time`] | [`time::Instant`] (monotonic, an input) and [`time::UnixMillis`] (wall clock) |
//! | [`limits`] | every capacity |
//!
//! ## Run loop
//!
//! Every machine has the same shape:
//!
//! ```text
//! machine.handle_input(now, input)?;      // bytes or an event from the shell
//! machine.handle_timeout(now);            // when the deadline from poll_timeout passed
//! while let Some(out) = machine.poll_output() { /* transmit, play, emit event … */ }
//! let next = machine.poll_timeout();      // re-arm ONE timer for this deadline
//! ```
//!
//! After every `handle_*` the shell drains `poll_output` and then re-arms its timer from
//! `poll_timeout`. Nothing here blocks or sleeps; a peer failing (a 487, an RTP timeout, the
//! broker gone) arrives as an input and leaves as an event, not as an `Err`. `Err` is kept for
//! inputs that are invalid in the current state.
//!
//! ## Time
//!
//! The core never reads a clock: `now` is an argument. [`time::Instant`] is our own newtype
//! (microseconds from an origin the shell picks), so `firmware-sim` can run thousands of calls
//! on virtual time faster than real time, and a failing seed reproduces exactly. Wall-clock
//! values ([`time::UnixMillis`]) enter only where the outside world needs them (event
//! timestamps, announcement validity windows). Clippy's `disallowed-methods` bans
//! `Instant::now`/`SystemTime::now` in the workspace.
//!
//! ## Memory budget
//!
//! No allocator is needed. Every collection is a `heapless` type whose capacity is a constant in
//! [`limits`]; a full collection is an error the caller handles (the IVR, for example, plays
//! "the callback queue is full"), never a panic. Parsers borrow from the datagram and copy only
//! what a dialog must keep. The per-call state ([`call::Call`]) is asserted by a test to fit in
//! 2 KiB, so 10,000 concurrent calls cost about 20 MB of core state at most.
//!
//! ## Features
//!
//! `std` (default; only for std conveniences), `serde` (model types), `defmt` (firmware logs),
//! `arbitrary` (fuzz inputs). Features only add; with `--no-default-features` the crate pulls
//! only `heapless`.
#![no_std]
#![deny(missing_docs)]
#![warn(
    clippy::std_instead_of_core,
    clippy::std_instead_of_alloc,
    clippy::alloc_instead_of_core
)]

#[cfg(feature = "std")]
extern crate std;

pub mod announce;
pub mod call;
pub mod callback;
pub mod dtmf;
pub mod event;
pub mod g711;
pub mod ids;
pub mod ivr;
pub mod limits;
pub mod node;
pub mod number;
pub mod rtp;
pub mod sdp;
pub mod sip;
pub mod time;

pub use ids::{AnnouncementId, CallId, CallbackId};

/// An output buffer was too small for what an `emit` was to write into it. Nothing useful was
/// written; retry with a bigger buffer (each codec documents the size that always suffices).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferTooSmall;

impl core::fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("output buffer too small")
    }
}

impl core::error::Error for BufferTooSmall {}
pub use number::PhoneNumber;
pub use time::{Duration, Instant, UnixMillis};
