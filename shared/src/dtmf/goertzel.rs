//! In-band DTMF: key presses from decoded 8 kHz audio, for gateways that leave the tones in the
//! voice stream instead of sending RFC 4733 events.
//!
//! ## Algorithm
//!
//! The audio is cut into blocks of [`BLOCK_LEN`] = 106 samples (13.25 ms at 8 kHz), counted
//! from the first sample the detector sees; [`InbandDetector::handle_samples`] takes any slice
//! length and carries a partial block over to the next call. Over each block, eight Goertzel
//! filters measure the power at the DTMF frequencies (rows 697, 770, 852, 941 Hz; columns 1209,
//! 1336, 1477, 1633 Hz) and the block's total energy is summed. The filters run in `f32` (basic
//! float operations are in `core`; the Cortex-M4F does them in hardware), their coefficients
//! `2·cos(2π·f/8000)` are computed at compile time by a `const fn` series, so no `libm` is
//! needed. 106 samples put the filter's first nulls 75 Hz from its centre, about the spacing
//! of the closest pair (697/770 Hz), while leaving room for the duration rules below.
//!
//! A block shows a key when all of these hold (the numbers are `pub const`s below):
//!
//! 1. **Level**: the strongest row and the strongest column tone are each at least
//!    [`MIN_TONE_LEVEL_DBM0`] (−35 dBm0, taking 0 dBm0 as a sine of peak 22,700, the G.711
//!    reference).
//! 2. **Group peak**: each of the two is [`GROUP_PEAK_DB`] (8 dB) above every other tone of
//!    its group.
//! 3. **Twist**: the row tone exceeds the column tone by at most [`NORMAL_TWIST_DB`] (8 dB,
//!    "normal" twist) and the column tone exceeds the row tone by at most
//!    [`REVERSE_TWIST_DB`] (4 dB, "reverse" twist).
//! 4. **Purity**: the two tones carry at least [`MIN_TONE_ENERGY_FRACTION`] (80 %) of the
//!    block's energy. This is the speech guard. It includes the classic second-harmonic test
//!    and more: voice and music put energy into harmonics and formants, so a row/column pair
//!    that happens to appear in speech never holds 80 % of the energy; DTMF together with its
//!    own second harmonics at about −6 dB or stronger fails it too. It also rejects a block that is
//!    only partly filled with tone (at a tone's start or end), which the duration rules rely
//!    on. Measuring the 8 second harmonics with filters of their own would double the
//!    filter state for no extra rejection.
//!
//! ## Duration and release
//!
//! * A key is **reported** when [`PRESS_BLOCKS`] (2) consecutive blocks show it, that is
//!   26.5–40 ms after its tone starts, while the key is still down.
//!   Any tone of 40 ms or more contains two full blocks (3 × 106 ≤ 320 samples), so it is
//!   always found. A tone of 20 ms or less never is: it can touch two blocks only by filling
//!   each at most 75 %, below the purity limit.
//! * The key is **released** after [`RELEASE_BLOCKS`] (3) consecutive blocks without it. A pause
//!   of 40 ms or more always gives three such blocks, so two presses of the same key separated
//!   by 40 ms count twice; an interruption of 10 ms spoils at most two blocks, so a tone
//!   broken that briefly still counts once. A long press counts once.
//! * A different key seen in two consecutive blocks is reported at once, even without a pause.
//!
//! ## Measured behaviour
//!
//! Each tone is cut from the stream by a block edge, so the per-block measurements jitter a
//! little (about ±0.5 dB). Over all 16 keys and several block alignments, at −10 dBm0 per tone
//! and through µ-law (the tests check the reliable ends of each range):
//!
//! | property | always accepted | sometimes | never accepted |
//! |---|---|---|---|
//! | normal twist (column weaker) | ≤ 6.5 dB | 7–8 dB | ≥ 8.5 dB |
//! | reverse twist (column stronger) | ≤ 3 dB | 3.5–4 dB | ≥ 4.5 dB |
//! | frequency error, both tones | ≤ ±1 % | ±1.5 % | ≥ ±2 % |
//! | tone duration | ≥ 36 ms | 22–34 ms | ≤ 20 ms |
//! | white noise, SNR (both tones vs. noise) | ≥ 10 dB | 6–8 dB | ≤ 4 dB |
//!
//! | pause between two presses of one key | always two keys | sometimes | always one key |
//! |---|---|---|---|
//! | | ≥ 35 ms | 20–30 ms | ≤ 15 ms |
//!
//! ## Limits
//!
//! * The frequency tolerance is ITU-T Q.24's ±1.5 % only in part (see the table): it follows
//!   from the filter width and the purity test, and DTMF generators in phones and gateways are
//!   crystal-accurate to well under 1 %. Q.24's rejection beyond ±3.5 % is met with room to
//!   spare: the detector already rejects from about ±2 %.
//! * Noise: the purity test needs about 8 dB signal-to-noise ratio. Keys pressed while the
//!   caller talks over them (talk-down) are therefore often missed, which is the price of never
//!   taking speech for a key.
//! * Input is linear 16-bit at 8 kHz (decoded G.711: [`crate::g711`]).
//!
//! The detector holds the filter state, one block's energy, a few counters and up to
//! [`crate::limits::DTMF_INBAND_OUTPUT_MAX`] undelivered keys: under 128 bytes (tested).

use super::Digit;
use crate::limits::DTMF_INBAND_OUTPUT_MAX;
use core::fmt;

/// Sample rate the detector expects, Hz.
pub const SAMPLE_RATE: u32 = 8_000;
/// Samples per analysis block (13.25 ms).
pub const BLOCK_LEN: usize = 106;
/// The row (low group) frequencies, Hz, top row first.
pub const ROW_FREQS: [u16; 4] = [697, 770, 852, 941];
/// The column (high group) frequencies, Hz, left column first.
pub const COLUMN_FREQS: [u16; 4] = [1209, 1336, 1477, 1633];
/// Weakest accepted level of each of the two tones, dBm0.
pub const MIN_TONE_LEVEL_DBM0: i32 = -35;
/// How far the row tone may exceed the column tone (normal twist), dB.
pub const NORMAL_TWIST_DB: i32 = 8;
/// How far the column tone may exceed the row tone (reverse twist), dB.
pub const REVERSE_TWIST_DB: i32 = 4;
/// How far each detected tone must exceed the other tones of its group, dB.
pub const GROUP_PEAK_DB: i32 = 8;
/// Smallest share of the block's energy the two tones must carry.
pub const MIN_TONE_ENERGY_FRACTION: f32 = 0.8;
/// Consecutive blocks that must show the same key before it is reported.
pub const PRESS_BLOCKS: u8 = 2;
/// Consecutive blocks without the key after which it counts as released.
pub const RELEASE_BLOCKS: u8 = 3;
/// Peak amplitude of a 0 dBm0 sine in 16-bit linear samples (G.711: full scale is +3.17 dBm0
/// for µ-law, +3.14 dBm0 for A-law; this is the mean of the two).
pub const DBM0_REF_PEAK: f32 = 22_700.0;

/// The keypad: `KEYPAD[row][column]`.
const KEYPAD: [[Digit; 4]; 4] = [
    [Digit::D1, Digit::D2, Digit::D3, Digit::A],
    [Digit::D4, Digit::D5, Digit::D6, Digit::B],
    [Digit::D7, Digit::D8, Digit::D9, Digit::C],
    [Digit::Star, Digit::D0, Digit::Hash, Digit::D],
];

/// `cos(x)` by its Taylor series, for `|x| ≤ π` (compile time only).
const fn const_cos(x: f64) -> f64 {
    let mut sum = 1.0;
    let mut term = 1.0;
    let mut k = 1.0;
    while k < 40.0 {
        term = -term * x * x / ((2.0 * k - 1.0) * (2.0 * k));
        sum += term;
        k += 1.0;
    }
    sum
}

/// The Goertzel coefficient `2·cos(2π·f/fs)` for `f` Hz.
const fn coefficient(freq: u16) -> f32 {
    let omega = 2.0 * core::f64::consts::PI * freq as f64 / SAMPLE_RATE as f64;
    (2.0 * const_cos(omega)) as f32
}

/// A power ratio for `db` decibels: `10^(db/10)` (compile time only, whole dB).
const fn db_to_power_ratio(db: i32) -> f32 {
    // 10^(1/10)
    const ONE_DB: f64 = 1.258_925_411_794_167_3;
    let mut ratio = 1.0f64;
    let mut i = 0;
    while i < db.abs() {
        ratio *= ONE_DB;
        i += 1;
    }
    if db < 0 {
        (1.0 / ratio) as f32
    } else {
        ratio as f32
    }
}

/// Goertzel coefficients: rows then columns.
const COEFFS: [f32; 8] = {
    let mut c = [0.0f32; 8];
    let mut i = 0;
    while i < 4 {
        c[i] = coefficient(ROW_FREQS[i]);
        c[i + 4] = coefficient(COLUMN_FREQS[i]);
        i += 1;
    }
    c
};

/// Half the block length as a float: a full-block sine of peak `A` at a filter's frequency
/// gives filter power `(A·N/2)²` and block energy `A²·N/2`; power / energy = N/2.
const HALF_BLOCK: f32 = (BLOCK_LEN / 2) as f32;
/// Filter power of a tone at [`MIN_TONE_LEVEL_DBM0`].
const MIN_TONE_POWER: f32 = DBM0_REF_PEAK
    * HALF_BLOCK
    * DBM0_REF_PEAK
    * HALF_BLOCK
    * db_to_power_ratio(MIN_TONE_LEVEL_DBM0);
/// [`NORMAL_TWIST_DB`] as a power ratio.
const NORMAL_TWIST: f32 = db_to_power_ratio(NORMAL_TWIST_DB);
/// [`REVERSE_TWIST_DB`] as a power ratio.
const REVERSE_TWIST: f32 = db_to_power_ratio(REVERSE_TWIST_DB);
/// [`GROUP_PEAK_DB`] as a power ratio.
const GROUP_PEAK: f32 = db_to_power_ratio(GROUP_PEAK_DB);

/// Why [`InbandDetector::handle_samples`] reports a problem.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// More than [`DTMF_INBAND_OUTPUT_MAX`] keys were detected without being polled; the newest
    /// was dropped. Poll after every audio frame to avoid it.
    OutputFull,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::OutputFull => f.write_str("in-band DTMF output full: a key was dropped"),
        }
    }
}

impl core::error::Error for Error {}

/// The in-band DTMF detector for one audio stream.
///
/// Feed the decoded audio with [`handle_samples`](Self::handle_samples) as it arrives, then
/// drain [`poll_digit`](Self::poll_digit). No timer is needed: time is the sample count.
#[derive(Clone, Debug)]
pub struct InbandDetector {
    /// Goertzel state `s[n-1]` per filter (rows then columns).
    s1: [f32; 8],
    /// Goertzel state `s[n-2]` per filter.
    s2: [f32; 8],
    /// Sum of squared samples in the current block.
    energy: f32,
    /// Samples in the current block so far.
    filled: u8,
    /// The key the last blocks showed, and how many consecutive blocks showed it.
    candidate: Option<Digit>,
    /// Consecutive blocks showing `candidate`.
    streak: u8,
    /// The key reported and not yet released.
    held: Option<Digit>,
    /// Consecutive blocks without `held`.
    misses: u8,
    /// Keys detected and not yet polled.
    output: heapless::Vec<Digit, DTMF_INBAND_OUTPUT_MAX, u8>,
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl InbandDetector {
    /// A detector at the start of a stream.
    #[must_use]
    pub const fn new() -> Self {
        InbandDetector {
            s1: [0.0; 8],
            s2: [0.0; 8],
            energy: 0.0,
            filled: 0,
            candidate: None,
            streak: 0,
            held: None,
            misses: 0,
            output: heapless::Vec::new(),
        }
    }

    /// Feeds decoded 8 kHz audio, any number of samples; call it for every received frame (in
    /// order, with silence or nothing for lost packets), then drain
    /// [`poll_digit`](Self::poll_digit).
    ///
    /// # Errors
    /// [`Error::OutputFull`] if a key was detected while [`DTMF_INBAND_OUTPUT_MAX`] keys were
    /// still waiting; that key is lost, the rest of `samples` is still analysed.
    pub fn handle_samples(&mut self, samples: &[i16]) -> Result<(), Error> {
        let mut result = Ok(());
        for &sample in samples {
            let x = f32::from(sample);
            for ((s1, s2), c) in self.s1.iter_mut().zip(self.s2.iter_mut()).zip(COEFFS) {
                let s0 = c * *s1 - *s2 + x;
                *s2 = *s1;
                *s1 = s0;
            }
            self.energy += x * x;
            self.filled += 1;
            if usize::from(self.filled) == BLOCK_LEN {
                let key = self.classify_block();
                self.s1 = [0.0; 8];
                self.s2 = [0.0; 8];
                self.energy = 0.0;
                self.filled = 0;
                if let Some(digit) = self.track(key) {
                    if self.output.push(digit).is_err() {
                        result = Err(Error::OutputFull);
                    }
                }
            }
        }
        result
    }

    /// The next detected key press, oldest first; call it after every
    /// [`handle_samples`](Self::handle_samples) until it returns `None`.
    #[must_use]
    pub fn poll_digit(&mut self) -> Option<Digit> {
        if self.output.is_empty() {
            None
        } else {
            Some(self.output.remove(0))
        }
    }

    /// The key whose tone is currently present (reported and not yet released).
    #[must_use]
    pub fn held(&self) -> Option<Digit> {
        self.held
    }

    /// The key the just-finished block shows, if it passes every check.
    fn classify_block(&self) -> Option<Digit> {
        let mut power = [0.0f32; 8];
        for (p, ((s1, s2), c)) in power
            .iter_mut()
            .zip(self.s1.iter().zip(&self.s2).zip(COEFFS))
        {
            *p = (s1 * s1 + s2 * s2 - c * s1 * s2).max(0.0);
        }
        let (rows, columns) = power.split_at(4);
        let (row, row_power) = strongest(rows)?;
        let (column, column_power) = strongest(columns)?;
        let level_ok = row_power >= MIN_TONE_POWER && column_power >= MIN_TONE_POWER;
        let peaks_ok = stands_out(rows, row) && stands_out(columns, column);
        let twist_ok =
            row_power <= column_power * NORMAL_TWIST && column_power <= row_power * REVERSE_TWIST;
        let pure = row_power + column_power >= MIN_TONE_ENERGY_FRACTION * HALF_BLOCK * self.energy;
        if level_ok && peaks_ok && twist_ok && pure {
            KEYPAD.get(row)?.get(column).copied()
        } else {
            None
        }
    }

    /// Updates press/release tracking with one block's result; returns a key to report.
    fn track(&mut self, key: Option<Digit>) -> Option<Digit> {
        if key.is_some() && key == self.candidate {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.candidate = key;
            self.streak = u8::from(key.is_some());
        }
        if let Some(held) = self.held {
            if key == Some(held) {
                self.misses = 0;
            } else {
                self.misses = self.misses.saturating_add(1);
                if self.misses >= RELEASE_BLOCKS {
                    self.held = None;
                }
            }
        }
        let key = key?;
        if self.streak >= PRESS_BLOCKS && self.held != Some(key) {
            self.held = Some(key);
            self.misses = 0;
            Some(key)
        } else {
            None
        }
    }
}

/// Index and power of the strongest of a group of four.
fn strongest(group: &[f32]) -> Option<(usize, f32)> {
    group
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Whether `group[peak]` exceeds every other member by [`GROUP_PEAK`].
fn stands_out(group: &[f32], peak: usize) -> bool {
    let Some(&p) = group.get(peak) else {
        return false;
    };
    group
        .iter()
        .enumerate()
        .all(|(i, &q)| i == peak || p >= q * GROUP_PEAK)
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    extern crate std;
    use super::*;
    use crate::g711;
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::f64::consts::PI;

    /// Row and column index of a key.
    fn position(d: Digit) -> (usize, usize) {
        for (r, row) in KEYPAD.iter().enumerate() {
            for (c, k) in row.iter().enumerate() {
                if *k == d {
                    return (r, c);
                }
            }
        }
        unreachable!()
    }

    /// Peak amplitude of a sine at `dbm0`.
    fn amplitude(dbm0: f64) -> f64 {
        f64::from(DBM0_REF_PEAK) * 10f64.powf(dbm0 / 20.0)
    }

    /// A simple LCG for repeatable noise.
    struct Lcg(u64);
    impl Lcg {
        fn next_f64(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Uniform in [-1, 1).
            ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    /// A signal built in f64 and then quantised.
    #[derive(Default)]
    struct Signal {
        samples: Vec<f64>,
    }

    impl Signal {
        fn silence(mut self, ms: usize) -> Self {
            self.samples.extend(core::iter::repeat_n(0.0, ms * 8));
            self
        }
        /// Sum of sines (frequency Hz, peak amplitude) for `n` samples.
        fn tones(mut self, n: usize, parts: &[(f64, f64)]) -> Self {
            let start = self.samples.len();
            for i in 0..n {
                let t = (start + i) as f64 / 8000.0;
                let v: f64 = parts
                    .iter()
                    .enumerate()
                    .map(|(k, (f, a))| a * (2.0 * PI * f * t + k as f64).sin())
                    .sum();
                self.samples.push(v);
            }
            self
        }
        /// A key at `level` dBm0 per tone, with the column `twist` dB louder (negative: weaker).
        fn key(self, d: Digit, ms: usize, level: f64, twist: f64) -> Self {
            self.key_samples(d, ms * 8, level, twist)
        }
        fn key_samples(self, d: Digit, n: usize, level: f64, twist: f64) -> Self {
            let (r, c) = position(d);
            let parts = [
                (f64::from(ROW_FREQS[r]), amplitude(level)),
                (f64::from(COLUMN_FREQS[c]), amplitude(level + twist)),
            ];
            self.tones(n, &parts)
        }
        /// Adds white noise of RMS `dbm0` to everything so far.
        fn noise(mut self, dbm0: f64, seed: u64) -> Self {
            let mut rng = Lcg(seed);
            // Uniform on [-a, a) has RMS a/√3; a sine's RMS is peak/√2.
            let a = amplitude(dbm0) / 2f64.sqrt() * 3f64.sqrt();
            for s in &mut self.samples {
                *s += a * rng.next_f64();
            }
            self
        }
        /// Linear 16-bit, through a µ-law encode → decode round trip.
        fn via_ulaw(&self) -> Vec<i16> {
            self.samples
                .iter()
                .map(|&v| {
                    let x = v.round().clamp(-32768.0, 32767.0) as i16;
                    g711::ulaw_to_linear(g711::linear_to_ulaw(x))
                })
                .collect()
        }
    }

    /// Runs a fresh detector over `samples` in `chunk`-sized pieces and collects the keys.
    fn detect_in_chunks(samples: &[i16], chunk: usize) -> Vec<Digit> {
        let mut det = InbandDetector::new();
        let mut out = Vec::new();
        for piece in samples.chunks(chunk) {
            det.handle_samples(piece).unwrap();
            while let Some(d) = det.poll_digit() {
                out.push(d);
            }
        }
        out
    }

    fn detect(samples: &[i16]) -> Vec<Digit> {
        detect_in_chunks(samples, 160)
    }

    #[test]
    fn coefficients_match_std_cos() {
        for (i, f) in ROW_FREQS.iter().chain(&COLUMN_FREQS).enumerate() {
            let expected = 2.0 * (2.0 * PI * f64::from(*f) / 8000.0).cos();
            assert!((f64::from(COEFFS[i]) - expected).abs() < 1e-6, "{f} Hz");
        }
        assert!((f64::from(db_to_power_ratio(8)) - 10f64.powf(0.8)).abs() < 1e-4);
        assert!((f64::from(db_to_power_ratio(-35)) - 10f64.powf(-3.5)).abs() < 1e-9);
        assert_eq!(db_to_power_ratio(0), 1.0);
    }

    #[test]
    fn every_key_at_every_level_once() {
        for d in Digit::ALL {
            for level in [-3.0, -10.0, -18.0, -25.0] {
                let s = Signal::default()
                    .silence(30)
                    .key(d, 60, level, 0.0)
                    .silence(60);
                assert_eq!(detect(&s.via_ulaw()), [d], "{d} at {level} dBm0");
            }
        }
    }

    #[test]
    fn every_key_with_allowed_twist_and_noise() {
        for (i, d) in Digit::ALL.into_iter().enumerate() {
            for (level, twist) in [(-6.0, -6.5), (-20.0, 3.0), (-25.0, -6.5), (-10.0, 0.0)] {
                // Noise 20 dB below the stronger tone.
                let noise = level + f64::max(0.0, twist) - 20.0;
                let s = Signal::default()
                    .silence(40)
                    .key(d, 50, level, twist)
                    .silence(50)
                    .noise(noise, i as u64 + 1);
                assert_eq!(
                    detect(&s.via_ulaw()),
                    [d],
                    "{d} {level} dBm0, twist {twist}"
                );
            }
        }
    }

    #[test]
    fn minimum_duration_tone_found_at_every_alignment() {
        // A 40 ms tone, shifted across one block length.
        for offset in 0..BLOCK_LEN {
            let s = Signal::default()
                .tones(offset, &[])
                .key(Digit::D8, 40, -15.0, 0.0)
                .silence(50);
            assert_eq!(detect(&s.via_ulaw()), [Digit::D8], "offset {offset}");
        }
    }

    #[test]
    fn too_short_tone_is_never_taken() {
        for ms in [10, 15, 20] {
            for offset in 0..BLOCK_LEN {
                let s = Signal::default()
                    .tones(offset, &[])
                    .key(Digit::D5, ms, -10.0, 0.0)
                    .silence(60);
                assert_eq!(detect(&s.via_ulaw()), [], "{ms} ms at offset {offset}");
            }
        }
    }

    #[test]
    fn silence_and_quiet_noise_give_nothing() {
        assert_eq!(detect(&Signal::default().silence(2000).via_ulaw()), []);
        assert_eq!(detect(&[0i16; 5000]), []);
        let s = Signal::default().silence(3000).noise(-20.0, 7);
        assert_eq!(detect(&s.via_ulaw()), []);
    }

    #[test]
    fn below_minimum_level_gives_nothing() {
        let s = Signal::default()
            .key(Digit::D1, 200, -40.0, 0.0)
            .silence(50);
        assert_eq!(detect(&s.via_ulaw()), []);
    }

    #[test]
    fn single_frequency_gives_nothing() {
        for f in ROW_FREQS.iter().chain(&COLUMN_FREQS) {
            let s = Signal::default().tones(4000, &[(f64::from(*f), amplitude(-6.0))]);
            assert_eq!(detect(&s.via_ulaw()), [], "{f} Hz");
        }
    }

    #[test]
    fn too_much_twist_gives_nothing() {
        for d in [Digit::D1, Digit::D0, Digit::D] {
            // Column 11 dB weaker (normal twist beyond 8 dB) and 7 dB stronger (reverse beyond 4).
            for twist in [-11.0, 7.0] {
                let s = Signal::default().key(d, 200, -10.0, twist).silence(50);
                assert_eq!(detect(&s.via_ulaw()), [], "{d} twist {twist}");
            }
        }
    }

    #[test]
    fn speech_like_signals_give_nothing() {
        // Voiced speech: a gliding fundamental with harmonics shaped by three formants.
        let mut samples = Vec::new();
        let mut phase = [0.0f64; 40];
        for n in 0..(8000 * 4) {
            let t = f64::from(n) / 8000.0;
            let f0 = 110.0 + 60.0 * (2.0 * PI * 0.7 * t).sin() + 25.0 * (2.0 * PI * 3.1 * t).sin();
            let formants = [
                700.0 + 200.0 * (2.0 * PI * 1.3 * t).sin(),
                1300.0 + 400.0 * (2.0 * PI * 0.9 * t).sin(),
                2500.0,
            ];
            let mut v = 0.0;
            for (h, ph) in phase.iter_mut().enumerate() {
                let f = f0 * (h + 1) as f64;
                if f > 3800.0 {
                    break;
                }
                *ph += 2.0 * PI * f / 8000.0;
                let gain: f64 = formants
                    .iter()
                    .map(|fm| 1.0 / (1.0 + ((f - fm) / 120.0).powi(2)))
                    .sum();
                v += 6000.0 * gain * ph.sin();
            }
            samples.push(v);
        }
        let s = Signal { samples };
        assert_eq!(detect(&s.via_ulaw()), []);
        // Two-tone chords close to DTMF pairs but with harmonics, like a sung vowel.
        for d in Digit::ALL {
            let (r, c) = position(d);
            let (fr, fc) = (f64::from(ROW_FREQS[r]), f64::from(COLUMN_FREQS[c]));
            let a = amplitude(-10.0);
            let s = Signal::default().tones(
                1600,
                &[
                    (fr, a),
                    (fc, a),
                    (2.0 * fr, a * 0.7),
                    (2.0 * fc, a * 0.7),
                    (3.0 * fr, a * 0.5),
                ],
            );
            assert_eq!(detect(&s.via_ulaw()), [], "{d} with harmonics");
        }
        // A row tone with its own second harmonic (lands near a column frequency).
        for f in ROW_FREQS {
            let f = f64::from(f);
            let s =
                Signal::default().tones(1600, &[(f, amplitude(-8.0)), (2.0 * f, amplitude(-8.0))]);
            assert_eq!(detect(&s.via_ulaw()), [], "{f} Hz + harmonic");
        }
    }

    #[test]
    fn same_key_twice_with_a_gap_counts_twice() {
        for (offset, gap) in (0..BLOCK_LEN)
            .step_by(7)
            .zip([35, 40, 60, 100].into_iter().cycle())
        {
            let s = Signal::default()
                .tones(offset, &[])
                .key(Digit::D7, 50, -12.0, 0.0)
                .silence(gap)
                .key(Digit::D7, 50, -12.0, 0.0)
                .silence(50);
            assert_eq!(
                detect(&s.via_ulaw()),
                [Digit::D7, Digit::D7],
                "{gap} ms gap, offset {offset}"
            );
        }
    }

    #[test]
    fn long_press_and_short_interruption_count_once() {
        let s = Signal::default()
            .key(Digit::Star, 3000, -12.0, 0.0)
            .silence(50);
        assert_eq!(detect(&s.via_ulaw()), [Digit::Star]);
        // A drop-out of 15 ms or less inside a tone, at every alignment, does not split it.
        for offset in (0..BLOCK_LEN).step_by(3) {
            let s = Signal::default()
                .tones(offset, &[])
                .key(Digit::D3, 60, -12.0, 0.0)
                .silence(if offset % 2 == 0 { 10 } else { 15 })
                .key(Digit::D3, 60, -12.0, 0.0)
                .silence(60);
            assert_eq!(detect(&s.via_ulaw()), [Digit::D3], "offset {offset}");
        }
    }

    #[test]
    fn a_number_dialled_fast() {
        let keys = "0215550123#";
        let mut s = Signal::default().silence(20);
        for ch in keys.chars() {
            s = s
                .key(Digit::from_char(ch).unwrap(), 45, -8.0, -2.0)
                .silence(45);
        }
        let pcm = s.via_ulaw();
        let got: alloc::string::String = detect(&pcm).iter().map(|d| d.as_char()).collect();
        assert_eq!(got, keys);
        // Any chunking gives the same result, including one sample at a time.
        for chunk in [1, 7, 106, 107, 1000] {
            let got: alloc::string::String = detect_in_chunks(&pcm, chunk)
                .iter()
                .map(|d| d.as_char())
                .collect();
            assert_eq!(got, keys, "chunk {chunk}");
        }
    }

    #[test]
    fn key_change_without_pause() {
        let s = Signal::default()
            .key(Digit::D4, 60, -10.0, 0.0)
            .key(Digit::D6, 60, -10.0, 0.0)
            .silence(50);
        assert_eq!(detect(&s.via_ulaw()), [Digit::D4, Digit::D6]);
    }

    #[test]
    fn output_is_bounded_and_reports_overflow() {
        let mut s = Signal::default();
        for _ in 0..(DTMF_INBAND_OUTPUT_MAX + 1) {
            s = s.key(Digit::D9, 50, -10.0, 0.0).silence(50);
        }
        let mut det = InbandDetector::new();
        assert_eq!(det.handle_samples(&s.via_ulaw()), Err(Error::OutputFull));
        let mut n = 0;
        while det.poll_digit().is_some() {
            n += 1;
        }
        assert_eq!(n, DTMF_INBAND_OUTPUT_MAX);
        assert!(Error::OutputFull.to_string().contains("dropped"));
    }

    #[test]
    fn held_follows_the_tone() {
        let mut det = InbandDetector::new();
        let s = Signal::default().key(Digit::B, 100, -10.0, 0.0).via_ulaw();
        det.handle_samples(&s).unwrap();
        assert_eq!(det.held(), Some(Digit::B));
        assert_eq!(det.poll_digit(), Some(Digit::B));
        det.handle_samples(&vec![0i16; 400]).unwrap();
        assert_eq!(det.held(), None);
        assert_eq!(det.poll_digit(), None);
    }

    #[test]
    fn frequency_tolerance() {
        for d in Digit::ALL {
            let (r, c) = position(d);
            for (deviation, expected) in [
                (-0.01, vec![d]),
                (0.01, vec![d]),
                (-0.03, vec![]),
                (0.03, vec![]),
            ] {
                let k = 1.0 + deviation;
                let s = Signal::default()
                    .tones(
                        480,
                        &[
                            (f64::from(ROW_FREQS[r]) * k, amplitude(-10.0)),
                            (f64::from(COLUMN_FREQS[c]) * k, amplitude(-10.0)),
                        ],
                    )
                    .silence(60);
                assert_eq!(detect(&s.via_ulaw()), expected, "{d} off by {deviation}");
            }
        }
    }

    #[test]
    fn every_key_through_alaw() {
        for d in Digit::ALL {
            let s = Signal::default()
                .silence(30)
                .key(d, 45, -20.0, -3.0)
                .silence(60);
            let pcm: Vec<i16> = s
                .samples
                .iter()
                .map(|&v| g711::alaw_to_linear(g711::linear_to_alaw(v.round() as i16)))
                .collect();
            assert_eq!(detect(&pcm), [d], "{d}");
        }
    }

    #[test]
    fn state_is_small() {
        assert!(core::mem::size_of::<InbandDetector>() < 128);
    }
}
