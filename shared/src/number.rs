//! Telephone numbers.
//!
//! [`PhoneNumber`] holds an E.164 number (`+` and up to 15 digits). Caller numbers are personal
//! data: the `Display` impl is the full number (for the CRM), and [`PhoneNumber::masked`] is what
//! logs and the technician CLI show.

use core::fmt;
use heapless::String;

use crate::dtmf::Digit;
use crate::limits::E164_MAX_DIGITS;

/// Why text is not an E.164 number.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NumberError {
    /// No digits at all.
    Empty,
    /// More than 15 digits.
    TooLong,
    /// A character other than a digit (after an optional leading `+`).
    BadCharacter,
    /// E.164 numbers never start with 0 after the `+`.
    LeadingZero,
}

impl fmt::Display for NumberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NumberError::Empty => "empty number",
            NumberError::TooLong => "more than 15 digits",
            NumberError::BadCharacter => "not a digit",
            NumberError::LeadingZero => "E.164 numbers do not start with 0",
        })
    }
}

impl core::error::Error for NumberError {}

/// An E.164 telephone number, stored as its digits without the `+`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PhoneNumber {
    digits: String<E164_MAX_DIGITS>,
}

impl PhoneNumber {
    /// Parses `+12155550123` (the `+` is optional; visual separators ` -.()` are skipped).
    ///
    /// # Errors
    /// [`NumberError`] names what is wrong.
    pub fn parse(s: &str) -> Result<PhoneNumber, NumberError> {
        let s = s.strip_prefix('+').unwrap_or(s);
        let mut digits = String::new();
        for c in s.chars() {
            match c {
                '0'..='9' => digits.push(c).map_err(|_| NumberError::TooLong)?,
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(NumberError::BadCharacter),
            }
        }
        Self::from_digit_string(digits)
    }

    /// Builds a number from keyed DTMF digits (`0`–`9` only).
    ///
    /// # Errors
    /// [`NumberError`] when a key is not a decimal digit or the count is wrong.
    pub fn from_keys(keys: &[Digit]) -> Result<PhoneNumber, NumberError> {
        let mut digits = String::new();
        for k in keys {
            let c = k.decimal().ok_or(NumberError::BadCharacter)?;
            digits
                .push(char::from(b'0' + c))
                .map_err(|_| NumberError::TooLong)?;
        }
        Self::from_digit_string(digits)
    }

    fn from_digit_string(digits: String<E164_MAX_DIGITS>) -> Result<PhoneNumber, NumberError> {
        if digits.is_empty() {
            return Err(NumberError::Empty);
        }
        if digits.starts_with('0') {
            return Err(NumberError::LeadingZero);
        }
        Ok(PhoneNumber { digits })
    }

    /// The digits without `+`.
    #[must_use]
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The last `n` digits (all of them when shorter), e.g. for reading back "ending in 0123".
    #[must_use]
    pub fn last_digits(&self, n: usize) -> &str {
        let d = self.digits.as_str();
        &d[d.len().saturating_sub(n)..]
    }

    /// Whether the number starts with `prefix` (E.164 with or without `+`).
    #[must_use]
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let p = prefix.strip_prefix('+').unwrap_or(prefix);
        self.digits.starts_with(p)
    }

    /// A form safe for logs: `+1215•••0123` (country/area kept, middle hidden, last 4 kept).
    #[must_use]
    pub fn masked(&self) -> Masked<'_> {
        Masked(self)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.digits)
    }
}

impl fmt::Debug for PhoneNumber {
    /// Debug output is masked, so a stray `{:?}` never leaks a caller number into a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

/// Masked display of a [`PhoneNumber`].
#[derive(Debug, Clone, Copy)]
pub struct Masked<'a>(&'a PhoneNumber);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0.digits();
        if d.len() <= 6 {
            return write!(f, "+{}", "•".repeat_str(d.len()));
        }
        // Keep at most the first 4 digits, and always hide at least 3.
        let head = &d[..4.min(d.len() - 7)];
        let tail = &d[d.len() - 4..];
        f.write_str("+")?;
        f.write_str(head)?;
        for _ in 0..d.len() - head.len() - 4 {
            f.write_str("•")?;
        }
        f.write_str(tail)
    }
}

trait RepeatStr {
    fn repeat_str(&self, n: usize) -> RepeatDisplay<'_>;
}
impl RepeatStr for str {
    fn repeat_str(&self, n: usize) -> RepeatDisplay<'_> {
        RepeatDisplay(self, n)
    }
}
struct RepeatDisplay<'a>(&'a str, usize);
impl fmt::Display for RepeatDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for _ in 0..self.1 {
            f.write_str(self.0)?;
        }
        Ok(())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for PhoneNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for PhoneNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <&str>::deserialize(d)?;
        PhoneNumber::parse(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn parses_e164() {
        let n = PhoneNumber::parse("+1 (215) 555-0123").unwrap();
        assert_eq!(n.digits(), "12155550123");
        assert_eq!(format!("{n}"), "+12155550123");
        assert_eq!(n.last_digits(4), "0123");
        assert!(n.has_prefix("+1215"));
        assert!(!n.has_prefix("+1216"));
    }

    #[test]
    fn rejects_bad_numbers() {
        assert_eq!(PhoneNumber::parse("+"), Err(NumberError::Empty));
        assert_eq!(
            PhoneNumber::parse("+1234567890123456"),
            Err(NumberError::TooLong)
        );
        assert_eq!(
            PhoneNumber::parse("+1215abc"),
            Err(NumberError::BadCharacter)
        );
        assert_eq!(PhoneNumber::parse("0215"), Err(NumberError::LeadingZero));
    }

    #[test]
    fn masks_for_logs() {
        let n = PhoneNumber::parse("+12155550123").unwrap();
        assert_eq!(format!("{}", n.masked()), "+1215•••0123");
        assert_eq!(format!("{n:?}"), "PhoneNumber(+1215•••0123)");
        let short = PhoneNumber::parse("+112").unwrap();
        assert_eq!(format!("{}", short.masked()), "+•••");
        let seven = PhoneNumber::parse("+1234567").unwrap();
        assert_eq!(format!("{}", seven.masked()), "+•••4567");
        let eight = PhoneNumber::parse("+12345678").unwrap();
        assert_eq!(format!("{}", eight.masked()), "+1•••5678");
    }

    #[test]
    fn from_keys() {
        use Digit::*;
        let n = PhoneNumber::from_keys(&[D4, D4, D2, D0, D7]).unwrap();
        assert_eq!(n.digits(), "44207");
        assert_eq!(
            PhoneNumber::from_keys(&[D1, Star]),
            Err(NumberError::BadCharacter)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = PhoneNumber::parse(&s).map(|n| format!("{}{}", n, n.masked()));
        }
    }
}
