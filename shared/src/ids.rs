//! Identifier newtypes shared across the core.

use core::fmt;
use heapless::String;

use crate::limits::ID_MAX;

/// A call on this node. The shell assigns it (unique per node across restarts, e.g. derived
/// from the persisted event sequence); events render it as 16 lowercase hex digits.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({self})")
    }
}

/// A node-local handle to one version of one announcement in
/// [`crate::announce::AnnouncementSet`]: small and `Copy`, so playlists and per-call state can
/// name an announcement without copying its id. Handles are not reused while the set lives
/// (the set's generation counter is part of the value).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AnnouncementHandle(pub u32);

/// Why text is not a valid identifier.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IdError {
    /// Zero length.
    Empty,
    /// Longer than [`ID_MAX`] bytes.
    TooLong,
    /// Only `A-Z a-z 0-9 - _ .` are allowed (ids appear in MQTT topics and file names).
    BadCharacter,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdError::Empty => "empty id",
            IdError::TooLong => "id longer than 64 bytes",
            IdError::BadCharacter => "id may only hold A-Z a-z 0-9 - _ .",
        })
    }
}

impl core::error::Error for IdError {}

macro_rules! text_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        pub struct $name(String<ID_MAX>);

        impl $name {
            /// Validates and copies an identifier.
            ///
            /// # Errors
            /// [`IdError`] when it is empty, too long, or holds a character that is not safe in
            /// a topic or file name (and `.`/`..` alone are refused).
            pub fn new(s: &str) -> Result<Self, IdError> {
                if s.is_empty() {
                    return Err(IdError::Empty);
                }
                if s.len() > ID_MAX {
                    return Err(IdError::TooLong);
                }
                if s == "." || s == ".."
                    || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(IdError::BadCharacter);
                }
                let mut v = String::new();
                v.push_str(s).map_err(|_| IdError::TooLong)?;
                Ok($name(v))
            }

            /// The identifier text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), &self.0)
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <&str>::deserialize(d)?;
                $name::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_id!(
    /// An announcement's id as the CRM chose it (`outage-phl-20261123`).
    AnnouncementId
);
text_id!(
    /// A callback request's id (generated on the node).
    CallbackId
);

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    #[test]
    fn ids_validate() {
        assert!(AnnouncementId::new("outage-phl-20261123").is_ok());
        assert_eq!(AnnouncementId::new(""), Err(IdError::Empty));
        assert_eq!(AnnouncementId::new("a/b"), Err(IdError::BadCharacter));
        assert_eq!(AnnouncementId::new(".."), Err(IdError::BadCharacter));
        assert_eq!(AnnouncementId::new(&"x".repeat(65)), Err(IdError::TooLong));
        assert_eq!(format!("{}", CallId(255)), "00000000000000ff");
    }
}
