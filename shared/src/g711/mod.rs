//! G.711 µ-law (PCMU) and A-law (PCMA) companding, ITU-T G.711.
//!
//! ccedge plays announcements as G.711 and decodes what the gateway sends only to look for
//! in-band DTMF, so both directions are on the per-packet path and must be cheap on a
//! Cortex-M4 as well as on the daemon.
//!
//! ## Scale
//!
//! Linear samples are `i16` at full 16-bit scale, the convention of the ITU-T G.191 tools:
//! µ-law works on the top 14 bits (`sample >> 2`), A-law on the top 13 bits (`sample >> 3`);
//! negative samples are folded with a ones' complement, so `-1` encodes like `0` on the other
//! side of zero. Decoded values are the midpoints of the quantisation intervals, scaled back to
//! 16 bits: µ-law spans ±32,124, A-law ±32,256. Both laws are bit-exact with G.191 (tested for
//! every `i16` and every code byte).
//!
//! ## Decode: two 256-entry tables built at compile time
//!
//! [`ulaw_to_linear`] and [`alaw_to_linear`] read a `[i16; 256]` table (512 bytes each) that a
//! `const fn` computes while compiling — no build script, no hand-typed numbers. The tables are
//! `static` rather than `const` so each exists once in flash whatever the number of call sites.
//! Indexing by a `u8` cannot go out of bounds.
//!
//! ## Encode: segment search with a leading-zero count, no table
//!
//! [`linear_to_ulaw`] and [`linear_to_alaw`] find the segment (the exponent) from the position
//! of the highest set bit of the biased magnitude (`leading_zeros`, one `CLZ` instruction on
//! Cortex-M3 and up, `LZCNT`/`BSR` on x86) and take the four mantissa bits below it. That is
//! about a dozen instructions and zero bytes of table. The alternative, a table keyed on the top
//! 13/14 bits of the sample, would cost 8 KiB (A-law) + 16 KiB (µ-law) of flash on the gateway
//! for no measurable gain, so ccedge does not use it.
//!
//! ## Silence
//!
//! The code for linear zero is [`ULAW_SILENCE`] (`0xFF`) and [`ALAW_SILENCE`] (`0xD5`); the IVR
//! fills gaps between prompts with them.

use core::fmt;

/// The µ-law code for linear 0 (positive zero): the byte to send as silence in PCMU.
pub const ULAW_SILENCE: u8 = 0xFF;
/// The A-law code for linear 0 (positive zero, even bits inverted): silence in PCMA.
pub const ALAW_SILENCE: u8 = 0xD5;

/// The µ-law bias, in 14-bit units: added before the segment search so that segment `e` starts
/// at `33 << e`.
const ULAW_BIAS: u32 = 33;
/// A biased µ-law magnitude with this bit (or a higher one) set is beyond segment 7: clip.
const ULAW_CLIP_BIT: u32 = 13;

/// The decode table for µ-law, index = code byte.
static ULAW_TABLE: [i16; 256] = build_table(Law::Ulaw);
/// The decode table for A-law, index = code byte.
static ALAW_TABLE: [i16; 256] = build_table(Law::Alaw);

/// Fills a 256-entry decode table for `law`, at compile time.
const fn build_table(law: Law) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0usize;
    while code < 256 {
        table[code] = match law {
            Law::Ulaw => ulaw_decode_one(code as u8),
            Law::Alaw => alaw_decode_one(code as u8),
        };
        code += 1;
    }
    table
}

/// µ-law code → linear, computed (the tables are built from this).
const fn ulaw_decode_one(code: u8) -> i16 {
    // µ-law transmits every bit inverted.
    let c = !code;
    let exponent = (c >> 4) & 0x07;
    let mantissa = (c & 0x0F) as i32;
    // Segment e covers biased magnitudes [(16 + m) << (e + 1), (17 + m) << (e + 1)); its
    // midpoint minus the bias, in 14-bit units, is ((2m + 33) << e) - 33. At 16-bit scale
    // (<< 2): ((8m + 132) << e) - 132.
    let bias16 = (ULAW_BIAS as i32) << 2;
    let magnitude = (((mantissa << 3) + bias16) << exponent) - bias16;
    if c & 0x80 != 0 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

/// A-law code → linear, computed (the tables are built from this).
const fn alaw_decode_one(code: u8) -> i16 {
    // A-law transmits the even bits inverted.
    let c = code ^ 0x55;
    let exponent = (c >> 4) & 0x07;
    let mantissa = (c & 0x0F) as i32;
    // In 12-bit magnitude units: segment 0 is 2m + 1, segment e ≥ 1 is (2m + 33) << (e - 1).
    let magnitude12 = if exponent == 0 {
        (mantissa << 1) + 1
    } else {
        ((mantissa << 1) + 33) << (exponent - 1)
    };
    let magnitude = magnitude12 << 3;
    // In A-law the sign bit set means positive.
    if c & 0x80 != 0 {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

/// Encodes one linear sample as µ-law.
#[must_use]
#[inline]
pub const fn linear_to_ulaw(sample: i16) -> u8 {
    // Sign and 14-bit magnitude (0..=8191); ones' complement for negatives.
    let (sign, magnitude) = if sample < 0 {
        (0x80u8, ((!sample) >> 2) as u32)
    } else {
        (0x00u8, (sample >> 2) as u32)
    };
    let biased = magnitude + ULAW_BIAS; // 33..=8224
    let top_bit = u32::BITS - 1 - biased.leading_zeros(); // 5..=13
    let code = if top_bit >= ULAW_CLIP_BIT {
        0x7F
    } else {
        let exponent = top_bit - 5;
        ((exponent << 4) | ((biased >> (exponent + 1)) & 0x0F)) as u8
    };
    !(sign | code)
}

/// Encodes one linear sample as A-law.
#[must_use]
#[inline]
pub const fn linear_to_alaw(sample: i16) -> u8 {
    // Sign (set = positive) and 12-bit magnitude (0..=4095); ones' complement for negatives.
    let (sign, magnitude) = if sample < 0 {
        (0x00u8, ((!sample) >> 3) as u32)
    } else {
        (0x80u8, (sample >> 3) as u32)
    };
    let code = if magnitude < 32 {
        // Segments 0 and 1 share the step; segment 0 is the linear part.
        (magnitude >> 1) as u8
    } else {
        let top_bit = u32::BITS - 1 - magnitude.leading_zeros(); // 5..=11
        let exponent = top_bit - 4; // 1..=7
        ((exponent << 4) | ((magnitude >> exponent) & 0x0F)) as u8
    };
    (sign | code) ^ 0x55
}

/// Decodes one µ-law code byte (a table read).
#[must_use]
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TABLE[usize::from(code)]
}

/// Decodes one A-law code byte (a table read).
#[must_use]
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TABLE[usize::from(code)]
}

/// The output slice of a slice helper is shorter than its input.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BufferTooSmall {
    /// Length the output needed (the input length).
    pub needed: usize,
    /// Length the output had.
    pub available: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "G.711 output buffer too small: {} needed, {} available",
            self.needed, self.available
        )
    }
}

impl core::error::Error for BufferTooSmall {}

/// Applies `f` to every input element, writing `output[..input.len()]`.
fn map_into<I: Copy, O>(
    input: &[I],
    output: &mut [O],
    f: impl Fn(I) -> O,
) -> Result<usize, BufferTooSmall> {
    let available = output.len();
    let out = output.get_mut(..input.len()).ok_or(BufferTooSmall {
        needed: input.len(),
        available,
    })?;
    for (o, &i) in out.iter_mut().zip(input) {
        *o = f(i);
    }
    Ok(input.len())
}

/// Encodes `input` as µ-law into the start of `output`; returns the number of bytes written
/// (`input.len()`).
///
/// # Errors
/// [`BufferTooSmall`] if `output` is shorter than `input`; nothing is written then.
pub fn encode_ulaw(input: &[i16], output: &mut [u8]) -> Result<usize, BufferTooSmall> {
    map_into(input, output, linear_to_ulaw)
}

/// Encodes `input` as A-law into the start of `output`; returns the number of bytes written.
///
/// # Errors
/// [`BufferTooSmall`] if `output` is shorter than `input`; nothing is written then.
pub fn encode_alaw(input: &[i16], output: &mut [u8]) -> Result<usize, BufferTooSmall> {
    map_into(input, output, linear_to_alaw)
}

/// Decodes µ-law `input` into the start of `output`; returns the number of samples written.
///
/// # Errors
/// [`BufferTooSmall`] if `output` is shorter than `input`; nothing is written then.
pub fn decode_ulaw(input: &[u8], output: &mut [i16]) -> Result<usize, BufferTooSmall> {
    map_into(input, output, ulaw_to_linear)
}

/// Decodes A-law `input` into the start of `output`; returns the number of samples written.
///
/// # Errors
/// [`BufferTooSmall`] if `output` is shorter than `input`; nothing is written then.
pub fn decode_alaw(input: &[u8], output: &mut [i16]) -> Result<usize, BufferTooSmall> {
    map_into(input, output, alaw_to_linear)
}

/// Which G.711 law a stream uses, as negotiated in SDP.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Law {
    /// µ-law, RTP/AVP static payload type 0 (`PCMU/8000`).
    Ulaw,
    /// A-law, RTP/AVP static payload type 8 (`PCMA/8000`).
    Alaw,
}

impl Law {
    /// The static RTP payload type of this law (RFC 3551: PCMU 0, PCMA 8).
    #[must_use]
    pub const fn payload_type(self) -> u8 {
        match self {
            Law::Ulaw => 0,
            Law::Alaw => 8,
        }
    }

    /// The code byte for silence.
    #[must_use]
    pub const fn silence(self) -> u8 {
        match self {
            Law::Ulaw => ULAW_SILENCE,
            Law::Alaw => ALAW_SILENCE,
        }
    }

    /// Encodes one sample.
    #[must_use]
    #[inline]
    pub const fn encode_sample(self, sample: i16) -> u8 {
        match self {
            Law::Ulaw => linear_to_ulaw(sample),
            Law::Alaw => linear_to_alaw(sample),
        }
    }

    /// Decodes one code byte.
    #[must_use]
    #[inline]
    pub fn decode_sample(self, code: u8) -> i16 {
        match self {
            Law::Ulaw => ulaw_to_linear(code),
            Law::Alaw => alaw_to_linear(code),
        }
    }

    /// Encodes `input` into the start of `output`; returns the number of bytes written.
    ///
    /// # Errors
    /// [`BufferTooSmall`] if `output` is shorter than `input`; nothing is written then.
    pub fn encode(self, input: &[i16], output: &mut [u8]) -> Result<usize, BufferTooSmall> {
        match self {
            Law::Ulaw => encode_ulaw(input, output),
            Law::Alaw => encode_alaw(input, output),
        }
    }

    /// Decodes `input` into the start of `output`; returns the number of samples written.
    ///
    /// # Errors
    /// [`BufferTooSmall`] if `output` is shorter than `input`; nothing is written then.
    pub fn decode(self, input: &[u8], output: &mut [i16]) -> Result<usize, BufferTooSmall> {
        match self {
            Law::Ulaw => decode_ulaw(input, output),
            Law::Alaw => decode_alaw(input, output),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    extern crate std;
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;
    use audio_codec_algorithms as reference;
    use proptest::prelude::*;

    #[test]
    fn ulaw_encode_matches_reference_for_every_sample() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(linear_to_ulaw(x), reference::encode_ulaw(x), "sample {x}");
        }
    }

    #[test]
    fn alaw_encode_matches_reference_for_every_sample() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(linear_to_alaw(x), reference::encode_alaw(x), "sample {x}");
        }
    }

    #[test]
    fn decode_matches_reference_for_every_code() {
        for c in 0..=u8::MAX {
            assert_eq!(
                ulaw_to_linear(c),
                reference::decode_ulaw(c),
                "µ-law {c:#04x}"
            );
            assert_eq!(
                alaw_to_linear(c),
                reference::decode_alaw(c),
                "A-law {c:#04x}"
            );
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(ULAW_SILENCE, linear_to_ulaw(0));
        assert_eq!(ALAW_SILENCE, linear_to_alaw(0));
        assert_eq!(ulaw_to_linear(ULAW_SILENCE), 0);
        assert_eq!(alaw_to_linear(ALAW_SILENCE), 8);
        // Full scale and clipping.
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(ulaw_to_linear(0x80), 32_124);
        assert_eq!(ulaw_to_linear(0x00), -32_124);
        assert_eq!(alaw_to_linear(0xAA), 32_256);
        assert_eq!(alaw_to_linear(0x2A), -32_256);
        // Negative zero side: µ-law 0x7F decodes to 0 as well.
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(linear_to_ulaw(-1), 0x7F);
    }

    #[test]
    fn every_code_is_a_fixed_point_of_decode_then_encode() {
        for c in 0..=u8::MAX {
            // µ-law has two zeros (0x7F and 0xFF) that both decode to 0, which encodes as 0xFF.
            if c != 0x7F {
                assert_eq!(linear_to_ulaw(ulaw_to_linear(c)), c, "µ-law {c:#04x}");
            }
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "A-law {c:#04x}");
        }
    }

    /// Error bound of a round trip: half the quantisation step of the segment the sample falls
    /// in (plus the bits below the law's resolution), and clipping beyond the top of the scale.
    #[test]
    fn round_trip_error_bounds() {
        for x in i16::MIN..=i16::MAX {
            let v = i32::from(x);
            let u = i32::from(ulaw_to_linear(linear_to_ulaw(x)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(x)));
            let mag = v.abs();
            // µ-law: step at magnitude m is 8 << e with e ≈ log2((m + 132) / 132); the
            // relative error is therefore ≤ 1/32 of (m + 132), plus 4 for the ones' complement.
            if mag <= 32_124 {
                assert!((u - v).abs() <= (mag + 132) / 32 + 4, "µ-law {x} → {u}");
            } else {
                assert_eq!(u, 32_124 * v.signum());
            }
            // A-law: step 16 below 512, then relative error ≤ 1/32 of the magnitude.
            if mag <= 32_256 {
                assert!((a - v).abs() <= (mag / 32).max(8) + 8, "A-law {x} → {a}");
            } else {
                assert_eq!(a, 32_256 * v.signum());
            }
        }
        // And at the bottom, the step is tiny.
        for x in -100i16..=100 {
            assert!((i32::from(ulaw_to_linear(linear_to_ulaw(x))) - i32::from(x)).abs() <= 8);
            assert!((i32::from(alaw_to_linear(linear_to_alaw(x))) - i32::from(x)).abs() <= 16);
        }
    }

    #[test]
    fn encode_is_monotonic() {
        let mut last_u = ulaw_to_linear(linear_to_ulaw(i16::MIN));
        let mut last_a = alaw_to_linear(linear_to_alaw(i16::MIN));
        for x in i16::MIN..=i16::MAX {
            let u = ulaw_to_linear(linear_to_ulaw(x));
            let a = alaw_to_linear(linear_to_alaw(x));
            assert!(u >= last_u && a >= last_a, "not monotonic at {x}");
            last_u = u;
            last_a = a;
        }
    }

    #[test]
    fn sine_snr_is_that_of_g711() {
        // A −10 dBm0 1 kHz sine: G.711 gives about 38 dB SNR for both laws.
        let samples: Vec<i16> = (0..8000)
            .map(|n| {
                let t = f64::from(n) / 8000.0;
                (7_170.0 * (2.0 * core::f64::consts::PI * 1_004.0 * t).sin()) as i16
            })
            .collect();
        for law in [Law::Ulaw, Law::Alaw] {
            let mut coded = vec![0u8; samples.len()];
            let mut back = vec![0i16; samples.len()];
            assert_eq!(law.encode(&samples, &mut coded), Ok(samples.len()));
            assert_eq!(law.decode(&coded, &mut back), Ok(samples.len()));
            let (mut sig, mut err) = (0f64, 0f64);
            for (s, b) in samples.iter().zip(&back) {
                sig += f64::from(*s).powi(2);
                err += (f64::from(*s) - f64::from(*b)).powi(2);
            }
            let snr = 10.0 * (sig / err).log10();
            assert!(snr > 35.0 && snr < 42.0, "{law:?}: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn slice_helpers_check_the_output_length() {
        let input = [0i16, 1000, -1000, 32_000];
        let mut out = [0u8; 3];
        assert_eq!(
            encode_ulaw(&input, &mut out),
            Err(BufferTooSmall {
                needed: 4,
                available: 3
            })
        );
        assert_eq!(out, [0; 3], "nothing written on error");
        let mut out = [0u8; 6];
        assert_eq!(encode_alaw(&input, &mut out), Ok(4));
        assert_eq!(out[4..], [0, 0]);
        let mut pcm = [0i16; 2];
        assert!(decode_alaw(&out[..4], &mut pcm).is_err());
        let mut pcm = [0i16; 4];
        assert_eq!(decode_alaw(&out[..4], &mut pcm), Ok(4));
        assert_eq!(pcm[0], 8);
        assert_eq!(encode_ulaw(&[], &mut []), Ok(0));
        assert_eq!(decode_ulaw(&[0xFF, 0x7F], &mut pcm), Ok(2));
        assert_eq!(pcm[..2], [0, 0]);
        assert!(BufferTooSmall {
            needed: 1,
            available: 0
        }
        .to_string()
        .contains("1 needed"));
    }

    #[test]
    fn law_dispatch() {
        assert_eq!(Law::Ulaw.payload_type(), 0);
        assert_eq!(Law::Alaw.payload_type(), 8);
        assert_eq!(Law::Ulaw.silence(), 0xFF);
        assert_eq!(Law::Alaw.silence(), 0xD5);
        assert_eq!(Law::Ulaw.encode_sample(-5000), linear_to_ulaw(-5000));
        assert_eq!(Law::Alaw.encode_sample(-5000), linear_to_alaw(-5000));
        assert_eq!(Law::Ulaw.decode_sample(0x12), ulaw_to_linear(0x12));
        assert_eq!(Law::Alaw.decode_sample(0x12), alaw_to_linear(0x12));
    }

    proptest! {
        #[test]
        fn slices_agree_with_samples(input in proptest::collection::vec(any::<i16>(), 0..400)) {
            let mut u = vec![0u8; input.len()];
            let mut a = vec![0u8; input.len() + 3];
            prop_assert_eq!(encode_ulaw(&input, &mut u), Ok(input.len()));
            prop_assert_eq!(encode_alaw(&input, &mut a), Ok(input.len()));
            let mut du = vec![0i16; input.len()];
            prop_assert_eq!(decode_ulaw(&u, &mut du), Ok(input.len()));
            for (i, x) in input.iter().enumerate() {
                prop_assert_eq!(u[i], linear_to_ulaw(*x));
                prop_assert_eq!(a[i], linear_to_alaw(*x));
                prop_assert_eq!(du[i], ulaw_to_linear(u[i]));
            }
        }
    }
}
