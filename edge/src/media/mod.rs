//! Call audio: decoding WAV files into shared, pre-encoded G.711 frames, and the IVR prompts.
//!
//! * [`audio`] — WAV (PCM, float, A-law, µ-law; any channels, 4–192 kHz) → 8 kHz mono →
//!   [`audio::Frames`], 20 ms frames encoded for both PCMU and PCMA, built once and shared
//!   by every call through `Arc`.
//! * [`prompts`] — the built-in prompt recordings (compiled in), site overrides from the
//!   prompts directory, and [`prompts::PromptSet::expand`], which turns an IVR playlist into
//!   the sequence of segments a call plays.

pub mod audio;
pub mod prompts;
