//! DTMF: the key type, RFC 4733 event de-duplication and the in-band (Goertzel) detector.

mod digit;

pub use digit::Digit;
