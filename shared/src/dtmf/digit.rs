//! The DTMF key type shared by the detectors, the IVR and number entry.

use core::fmt;

/// One DTMF key. RFC 4733 event codes 0–15 map one-to-one onto these.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[allow(missing_docs)]
pub enum Digit {
    D0,
    D1,
    D2,
    D3,
    D4,
    D5,
    D6,
    D7,
    D8,
    D9,
    Star,
    Hash,
    A,
    B,
    C,
    D,
}

impl Digit {
    /// All sixteen keys in RFC 4733 event-code order.
    pub const ALL: [Digit; 16] = [
        Digit::D0,
        Digit::D1,
        Digit::D2,
        Digit::D3,
        Digit::D4,
        Digit::D5,
        Digit::D6,
        Digit::D7,
        Digit::D8,
        Digit::D9,
        Digit::Star,
        Digit::Hash,
        Digit::A,
        Digit::B,
        Digit::C,
        Digit::D,
    ];

    /// The key for an RFC 4733 event code (0–15), `None` for other events.
    #[must_use]
    pub fn from_event_code(code: u8) -> Option<Digit> {
        Digit::ALL.get(usize::from(code)).copied()
    }

    /// The RFC 4733 event code of this key.
    #[must_use]
    pub fn event_code(self) -> u8 {
        self as u8
    }

    /// The key printed on the keypad (`0`–`9`, `*`, `#`, `A`–`D`).
    #[must_use]
    pub fn as_char(self) -> char {
        b"0123456789*#ABCD"[self as usize] as char
    }

    /// The key for a keypad character, `None` otherwise.
    #[must_use]
    pub fn from_char(c: char) -> Option<Digit> {
        let i = "0123456789*#ABCD".find(c.to_ascii_uppercase())?;
        Digit::ALL.get(i).copied()
    }

    /// The decimal value for `0`–`9`, `None` for `*#ABCD`.
    #[must_use]
    pub fn decimal(self) -> Option<u8> {
        let v = self as u8;
        (v <= 9).then_some(v)
    }
}

impl fmt::Display for Digit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// On the wire a key is its character: `"5"`, `"*"`, `"#"`, `"A"`.
#[cfg(feature = "serde")]
impl serde::Serialize for Digit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 4];
        s.serialize_str(self.as_char().encode_utf8(&mut buf))
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Digit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digit, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Digit;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("one DTMF key: 0-9, *, #, A-D")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Digit, E> {
                let mut chars = v.chars();
                match (chars.next().and_then(Digit::from_char), chars.next()) {
                    (Some(d), None) => Ok(d),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_chars_round_trip() {
        for (i, d) in Digit::ALL.iter().enumerate() {
            assert_eq!(Digit::from_event_code(i as u8), Some(*d));
            assert_eq!(d.event_code() as usize, i);
            assert_eq!(Digit::from_char(d.as_char()), Some(*d));
        }
        assert_eq!(Digit::from_event_code(16), None);
        assert_eq!(Digit::from_char('x'), None);
        assert_eq!(Digit::D7.decimal(), Some(7));
        assert_eq!(Digit::Hash.decimal(), None);
    }
}
