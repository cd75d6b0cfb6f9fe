//! The languages a node offers its callers (`ivr.languages`, `ivr.language_by_dialled`).
//!
//! A call's language is an index into [`Languages::tags`] (0 = the default, the first
//! configured). It starts as the language of the dialled number in
//! [`Languages::by_dialled`], else the default; the caller may change it with a language key
//! (see [`crate::ivr`], "Languages").
//!
//! ## Which announcements a call hears
//!
//! An announcement belongs to the configured language whose tag equals its `language`, or
//! equals the part of it before the first `-` (`es-US` is `es`), ignoring ASCII case. An
//! announcement with no `language`, or with one the node does not offer, belongs to the
//! default language (so a node with one language plays every announcement, as before
//! languages existed). A call hears the announcements of its language; when none of them
//! matches the call, those of the default language.

use heapless::Vec;

use crate::announce::{Announcement, Language};
use crate::limits::{MAX_LANGUAGES, MAX_LANGUAGE_BY_DIALLED};
use crate::number::PhoneNumber;

/// The node's languages; [`Default`] is English only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Languages {
    /// The tags, default first (`["en", "es"]`). Never empty when built by the shell; an
    /// empty list behaves as one default language with an empty tag.
    pub tags: Vec<Language, MAX_LANGUAGES>,
    /// Dialled number → index into `tags`: calls to that number start in that language.
    pub by_dialled: Vec<(PhoneNumber, u8), MAX_LANGUAGE_BY_DIALLED>,
}

impl Default for Languages {
    fn default() -> Self {
        let mut tags = Vec::new();
        let _ = tags.push(Language::try_from("en").unwrap_or_default());
        Languages {
            tags,
            by_dialled: Vec::new(),
        }
    }
}

impl Languages {
    /// How many languages (at least 1).
    #[must_use]
    pub fn count(&self) -> u8 {
        u8::try_from(self.tags.len().max(1)).unwrap_or(1)
    }

    /// The tag of language `l` (the default's when out of range, empty when none is
    /// configured).
    #[must_use]
    pub fn tag(&self, l: u8) -> &Language {
        static EMPTY: Language = Language::new();
        self.tags
            .get(usize::from(l))
            .or_else(|| self.tags.first())
            .unwrap_or(&EMPTY)
    }

    /// The index of the configured language `tag` belongs to (see the module docs), `None`
    /// when the node does not offer it.
    #[must_use]
    pub fn index_of(&self, tag: &str) -> Option<u8> {
        let primary = tag.split('-').next().unwrap_or(tag);
        self.tags
            .iter()
            .position(|t| {
                !t.is_empty() && (t.eq_ignore_ascii_case(tag) || t.eq_ignore_ascii_case(primary))
            })
            .and_then(|i| u8::try_from(i).ok())
    }

    /// The language an announcement plays in: its own when offered, else the default.
    #[must_use]
    pub fn of_announcement(&self, a: &Announcement) -> u8 {
        self.index_of(&a.language).unwrap_or(0)
    }

    /// The language a call to `dialled` starts in.
    #[must_use]
    pub fn for_dialled(&self, dialled: Option<&PhoneNumber>) -> u8 {
        dialled
            .and_then(|d| self.by_dialled.iter().find(|(n, _)| n == d))
            .map_or(0, |(_, l)| *l)
            .min(self.count() - 1)
    }
}
