//! Call audio: decoding WAV files into shared, pre-encoded G.711 frames, and the IVR prompts.
//!
//! * [`audio`] — WAV (PCM, float, A-law, µ-law; any channels, 4–192 kHz) → 8 kHz mono →
//!   [`audio::Frames`], 20 ms frames encoded for both PCMU and PCMA, built once and shared
//!   by every call through `Arc`.
//! * [`prompts`] — the built-in prompt recordings (compiled in), site overrides from the
//!   prompts directory, and [`prompts::PromptSet::expand`], which turns an IVR playlist into
//!   the sequence of segments a call plays.
//! * [`engine`] — the RTP pacer: each 20 ms tick sends the next frame of every call.
//! * [`plane`] — the media plane's thread: precise ticks, batched receive, one message per
//!   tick to the agent's task.

pub mod audio;
pub mod engine;
pub mod plane;
pub mod prompts;

impl engine::Audio for audio::Frames {
    fn frames(&self, law: shared::g711::Law) -> &[[u8; engine::FRAME]] {
        audio::Frames::frames(self, law)
    }
}
