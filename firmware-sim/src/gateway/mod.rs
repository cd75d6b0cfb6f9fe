//! The simulated telephony gateway's SIP side.
//!
//! [`uac`] builds a gateway's requests as plain text and reads ccedge's answers with its own
//! small text handling, so what the simulator sends and checks does not go through the core's
//! SIP parser and serializer.

pub mod uac;
