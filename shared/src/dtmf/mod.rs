//! DTMF: the key type, RFC 4733 event de-duplication and the in-band (Goertzel) detector.
//!
//! * [`Digit`]: one of the sixteen keys, the type every consumer of DTMF uses.
//! * [`rfc4733::EventDetector`]: key presses from received telephone-event packets, once
//!   each (the normal path: the gateway negotiated `telephone-event/8000`).
//! * [`goertzel::InbandDetector`]: key presses from the decoded audio, for gateways that leave
//!   the tones in band (no `telephone-event` in the answer).
//!
//! Both detectors report a key when it is first recognised (so a prompt can be cut short at
//! once) and never twice for one press.

mod digit;
pub mod goertzel;
pub mod rfc4733;

pub use digit::Digit;
