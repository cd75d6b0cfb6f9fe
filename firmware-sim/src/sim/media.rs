//! The simulated media engine's clock: how long each prompt plays.
//!
//! Fixed lengths for the recorded prompts (a digit is 0.4 s) and, for announcements, a length
//! of 5–20 s derived from the announcement's id and version, so every node and every run
//! agree on it without sharing state.

use shared::ivr::Prompt;
use shared::time::Duration;

/// How long an announcement (id, version) plays: 5–20 s, fixed per version.
pub(crate) fn announcement_length(id: &str, version: u32) -> Duration {
    let h = fnv1a(id.as_bytes()) ^ u64::from(version).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Duration::from_millis(5_000 + (h % 15_001))
}

/// How long one prompt plays; `ann` gives an announcement's length by its handle.
pub(crate) fn prompt_length(p: &Prompt, ann: impl Fn(u32) -> Duration) -> Duration {
    let ms = match p {
        Prompt::Announcement(h) => return ann(h.0),
        Prompt::Greeting => 4_000,
        Prompt::Menu { callback, transfer } => {
            2_500 + if *callback { 1_800 } else { 0 } + if *transfer { 1_800 } else { 0 }
        }
        Prompt::CallbackConfirmIntro => 3_000,
        Prompt::Digit(_) => 400,
        Prompt::Number(n) => 400 * n.to_string().len() as u64,
        Prompt::CallbackConfirmChoices => 4_000,
        Prompt::EnterNumber => 3_000,
        Prompt::InvalidNumber | Prompt::InvalidChoice | Prompt::NoInput => 2_000,
        Prompt::PleaseWait => 1_500,
        Prompt::Booked | Prompt::AlreadyBooked => 2_200,
        Prompt::YouAreNumber => 1_200,
        Prompt::QueueFull | Prompt::CouldNotBook => 3_000,
        Prompt::Transferring | Prompt::TransferFailed => 2_000,
        Prompt::Goodbye => 1_500,
        Prompt::WindowQuestion => 1_800,
        Prompt::WindowAsap | Prompt::WindowWhenOpen => 1_200,
        Prompt::DayPart(..) => 1_000,
        Prompt::WindowFor
        | Prompt::WindowPress
        | Prompt::WindowAt
        | Prompt::WindowBetween
        | Prompt::WindowAnd
        | Prompt::Day(_)
        | Prompt::Clock(_) => 500,
        Prompt::LanguageOffer(_) => 1_600,
    };
    Duration::from_millis(ms)
}

/// FNV-1a, 64 bits: the simulator's stable hash (traces, announcement lengths).
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_last_5_to_20_seconds_and_digits_are_short() {
        for v in 1..200 {
            let d = announcement_length("outage-3", v);
            assert!(
                d >= Duration::from_secs(5) && d <= Duration::from_secs(20),
                "{d:?}"
            );
        }
        assert_eq!(
            prompt_length(&Prompt::Digit(shared::dtmf::Digit::D1), |_| Duration::ZERO),
            Duration::from_millis(400)
        );
        assert_eq!(
            prompt_length(&Prompt::Number(12), |_| Duration::ZERO),
            Duration::from_millis(800)
        );
    }
}
