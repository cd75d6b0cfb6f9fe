//! The IVR's recorded prompts and how a [`Prompt`] playlist becomes audio.
//!
//! Every recorded prompt is one file `<key>.wav` ([`PromptKey::file_name`]). There is one set
//! per language ([`PromptSet`]); [`Prompts`] holds the sets of `ivr.languages`, in their
//! order. The built-in sets (`edge/prompts/en/`, `edge/prompts/es/`, made by
//! `deploy/prompts/make-prompts.sh`; [`Builtin`]) are compiled into the binary; a site can
//! replace any of them by putting a file of the same name in the prompts directory
//! ([`Prompts::load`]). Files are decoded once ([`crate::media::audio`]) and shared by all
//! calls as `Arc<Frames>`.
//!
//! ## From [`Prompt`] to recorded pieces ([`PromptSet::expand`])
//!
//! | [`Prompt`] | pieces played |
//! |---|---|
//! | `Greeting` | `greeting` "Thank you for calling." |
//! | `Announcement(h)` | the announcement's audio (from the caller's lookup); nothing when it has none |
//! | `Menu { callback, transfer }` | `menu_callback` "Press 1 to be called back." (only when `callback`), `menu_repeat` "Press 2 to hear this message again.", `menu_agent` "Press 0 to speak to an agent." (only when `transfer`) |
//! | `CallbackConfirmIntro` | `callback_confirm_intro` "We will call you back at the number ending in" |
//! | `Digit(d)` | `digit_0` … `digit_9`, `star`, `hash`, `key_a` … `key_d` |
//! | `Number(n)` | the decimal digits of `n`, most significant first (12 → `digit_1`, `digit_2`; 0 → `digit_0`); when it directly follows `YouAreNumber`, then also `in_the_queue` |
//! | `CallbackConfirmChoices` | `callback_confirm_choices` "Press 1 to confirm, or 2 to enter a different number." |
//! | `EnterNumber` | `enter_number` "Please enter the number we should call, followed by the hash key." |
//! | `InvalidNumber` | `invalid_number` "Sorry, that number is not valid." |
//! | `InvalidChoice` | `invalid_choice` "Sorry, that is not a valid choice." |
//! | `NoInput` | `no_input` "Sorry, we did not receive your choice." |
//! | `PleaseWait` | `please_wait` "Please wait." |
//! | `Booked` | `booked` "Your call back is booked." |
//! | `YouAreNumber` | `you_are_number` "You are number" |
//! | `AlreadyBooked` | `already_booked` "You already have a call back booked." |
//! | `QueueFull` | `queue_full` "Sorry, we cannot take more call back requests now." |
//! | `CouldNotBook` | `could_not_book` "Sorry, we could not book your call back." |
//! | `Transferring` | `transferring` "Transferring you to an agent." |
//! | `TransferFailed` | `transfer_failed` "Sorry, the transfer failed." |
//! | `Goodbye` | `goodbye` "Thank you. Goodbye." |
//! | `LanguageOffer(l)` | from language `l`'s set: `language_offer` "For English, press" / "Para español, oprima", then the spoken key of `l` (`star` / `digit_9` …, [`shared::ivr::language_key`]) |
//!
//! So the booking confirmation `[Booked, YouAreNumber, Number(12), Goodbye]` plays "Your call
//! back is booked. You are number one two in the queue. Thank you. Goodbye." The built-in
//! recordings end with a short pause (0.12 s after a key, 0.22 s after a sentence) so pieces
//! played back to back sound natural; replacement files should do the same.
//!
//! Every other prompt of a call is played from the set of the call's language.
//!
//! ## Overrides
//!
//! [`Prompts::load`] starts each language from its built-ins and replaces each one for which
//! the directory holds `<key>.wav` (exact, lower-case name): `ivr.prompts_dir/{lang}/` for
//! language `lang`, and for the default language (the first) also the files directly in
//! `ivr.prompts_dir/` (as before there were languages; a file in `{dir}/{default}/` wins).
//! A language without built-ins must have every prompt in `ivr.prompts_dir/{lang}/`. A
//! replacement that cannot be read or decoded fails the load with an error naming the file,
//! so a bad recording is caught at start-up rather than on a live call. Other entries in the
//! directory are ignored and reported in [`PromptSet::warnings`] (the language
//! subdirectories excepted).

// `edge` is a std crate: `Arc` comes from std like everything else here.
#![allow(clippy::std_instead_of_alloc)]

use core::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shared::callback::window::{Clock, DayPart, DayRef, Weekday};
use shared::dtmf::Digit;
use shared::ids::AnnouncementHandle;
use shared::ivr::{language_key, Prompt};

use super::audio::{AudioError, Frames, MAX_WAV_BYTES};

macro_rules! prompt_keys {
    ($($(#[doc = $doc:literal])* $variant:ident => $file:literal,)*) => {
        /// One recorded prompt file.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum PromptKey {
            $($(#[doc = $doc])* $variant,)*
        }

        impl PromptKey {
            /// Every key, in file-list order.
            pub const ALL: &'static [PromptKey] = &[$(PromptKey::$variant,)*];

            /// The file name, `<key>.wav`.
            #[must_use]
            pub const fn file_name(self) -> &'static str {
                match self {
                    $(PromptKey::$variant => concat!($file, ".wav"),)*
                }
            }

            /// The built-in recording in `lang`, compiled in from `edge/prompts/{lang}/`.
            fn builtin_wav(self, lang: Builtin) -> &'static [u8] {
                match lang {
                    Builtin::En => match self {
                        $(PromptKey::$variant => include_bytes!(concat!("../../prompts/en/", $file, ".wav")),)*
                    },
                    Builtin::Es => match self {
                        $(PromptKey::$variant => include_bytes!(concat!("../../prompts/es/", $file, ".wav")),)*
                    },
                }
            }
        }
    };
}

prompt_keys! {
    /// "Thank you for calling."
    Greeting => "greeting",
    /// "Press 1 to be called back."
    MenuCallback => "menu_callback",
    /// "Press 2 to hear this message again."
    MenuRepeat => "menu_repeat",
    /// "Press 0 to speak to an agent."
    MenuAgent => "menu_agent",
    /// "We will call you back at the number ending in"
    CallbackConfirmIntro => "callback_confirm_intro",
    /// "zero"
    Digit0 => "digit_0",
    /// "one"
    Digit1 => "digit_1",
    /// "two"
    Digit2 => "digit_2",
    /// "three"
    Digit3 => "digit_3",
    /// "four"
    Digit4 => "digit_4",
    /// "five"
    Digit5 => "digit_5",
    /// "six"
    Digit6 => "digit_6",
    /// "seven"
    Digit7 => "digit_7",
    /// "eight"
    Digit8 => "digit_8",
    /// "nine"
    Digit9 => "digit_9",
    /// "star"
    Star => "star",
    /// "hash"
    Hash => "hash",
    /// "A"
    KeyA => "key_a",
    /// "B"
    KeyB => "key_b",
    /// "C"
    KeyC => "key_c",
    /// "D"
    KeyD => "key_d",
    /// "Press 1 to confirm, or 2 to enter a different number."
    CallbackConfirmChoices => "callback_confirm_choices",
    /// "Please enter the number we should call, followed by the hash key."
    EnterNumber => "enter_number",
    /// "Sorry, that number is not valid."
    InvalidNumber => "invalid_number",
    /// "Sorry, that is not a valid choice."
    InvalidChoice => "invalid_choice",
    /// "Sorry, we did not receive your choice."
    NoInput => "no_input",
    /// "Please wait."
    PleaseWait => "please_wait",
    /// "Your call back is booked."
    Booked => "booked",
    /// "You are number"
    YouAreNumber => "you_are_number",
    /// "in the queue."
    InTheQueue => "in_the_queue",
    /// "You already have a call back booked."
    AlreadyBooked => "already_booked",
    /// "Sorry, we cannot take more call back requests now."
    QueueFull => "queue_full",
    /// "Sorry, we could not book your call back."
    CouldNotBook => "could_not_book",
    /// "Transferring you to an agent."
    Transferring => "transferring",
    /// "Sorry, the transfer failed."
    TransferFailed => "transfer_failed",
    /// "Thank you. Goodbye."
    Goodbye => "goodbye",
    /// "When should we call you back?"
    WindowQuestion => "window_question",
    /// "For"
    WindowFor => "window_for",
    /// "press"
    WindowPress => "window_press",
    /// "as soon as possible,"
    WindowAsap => "window_asap",
    /// "when we open,"
    WindowWhenOpen => "window_when_open",
    /// "at"
    WindowAt => "window_at",
    /// "between"
    WindowBetween => "window_between",
    /// "and"
    WindowAnd => "window_and",
    /// "today"
    DayToday => "day_today",
    /// "tomorrow"
    DayTomorrow => "day_tomorrow",
    /// "Monday"
    DayMonday => "day_monday",
    /// "Tuesday"
    DayTuesday => "day_tuesday",
    /// "Wednesday"
    DayWednesday => "day_wednesday",
    /// "Thursday"
    DayThursday => "day_thursday",
    /// "Friday"
    DayFriday => "day_friday",
    /// "Saturday"
    DaySaturday => "day_saturday",
    /// "Sunday"
    DaySunday => "day_sunday",
    /// "this morning,"
    PartThisMorning => "part_this_morning",
    /// "this afternoon,"
    PartThisAfternoon => "part_this_afternoon",
    /// "this evening,"
    PartThisEvening => "part_this_evening",
    /// "morning,"
    PartMorning => "part_morning",
    /// "afternoon,"
    PartAfternoon => "part_afternoon",
    /// "evening,"
    PartEvening => "part_evening",
    /// "oh"
    NumberOh => "number_oh",
    /// "ten"
    Number10 => "number_10",
    /// "eleven"
    Number11 => "number_11",
    /// "twelve"
    Number12 => "number_12",
    /// "thirteen"
    Number13 => "number_13",
    /// "fourteen"
    Number14 => "number_14",
    /// "fifteen"
    Number15 => "number_15",
    /// "sixteen"
    Number16 => "number_16",
    /// "seventeen"
    Number17 => "number_17",
    /// "eighteen"
    Number18 => "number_18",
    /// "nineteen"
    Number19 => "number_19",
    /// "twenty"
    Number20 => "number_20",
    /// "thirty"
    Number30 => "number_30",
    /// "forty"
    Number40 => "number_40",
    /// "fifty"
    Number50 => "number_50",
    /// "For English, press" (the language's own key follows), spoken in the set's language.
    LanguageOffer => "language_offer",
}

/// A language whose prompts are built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// English (`en`, espeak-ng voice en-us).
    En,
    /// Spanish (`es`, espeak-ng voice es).
    Es,
}

impl Builtin {
    /// Every built-in language.
    pub const ALL: &'static [Builtin] = &[Builtin::En, Builtin::Es];

    /// Its tag in `ivr.languages`.
    #[must_use]
    pub const fn tag(self) -> &'static str {
        match self {
            Builtin::En => "en",
            Builtin::Es => "es",
        }
    }

    /// The built-in language tagged `tag` (exactly, lower case).
    #[must_use]
    pub fn from_tag(tag: &str) -> Option<Builtin> {
        Builtin::ALL.iter().copied().find(|b| b.tag() == tag)
    }
}

impl PromptKey {
    /// The key whose file is called `name` (e.g. `"digit_7.wav"`).
    #[must_use]
    pub fn from_file_name(name: &str) -> Option<PromptKey> {
        PromptKey::ALL
            .iter()
            .copied()
            .find(|k| k.file_name() == name)
    }

    /// The spoken key for a keypad key.
    #[must_use]
    pub const fn digit(d: Digit) -> PromptKey {
        match d {
            Digit::D0 => PromptKey::Digit0,
            Digit::D1 => PromptKey::Digit1,
            Digit::D2 => PromptKey::Digit2,
            Digit::D3 => PromptKey::Digit3,
            Digit::D4 => PromptKey::Digit4,
            Digit::D5 => PromptKey::Digit5,
            Digit::D6 => PromptKey::Digit6,
            Digit::D7 => PromptKey::Digit7,
            Digit::D8 => PromptKey::Digit8,
            Digit::D9 => PromptKey::Digit9,
            Digit::Star => PromptKey::Star,
            Digit::Hash => PromptKey::Hash,
            Digit::A => PromptKey::KeyA,
            Digit::B => PromptKey::KeyB,
            Digit::C => PromptKey::KeyC,
            Digit::D => PromptKey::KeyD,
        }
    }

    /// The spoken decimal digit `d` (0–9; larger values say "nine").
    const fn decimal(d: u16) -> PromptKey {
        match d {
            0 => PromptKey::Digit0,
            1 => PromptKey::Digit1,
            2 => PromptKey::Digit2,
            3 => PromptKey::Digit3,
            4 => PromptKey::Digit4,
            5 => PromptKey::Digit5,
            6 => PromptKey::Digit6,
            7 => PromptKey::Digit7,
            8 => PromptKey::Digit8,
            _ => PromptKey::Digit9,
        }
    }

    /// The recorded pieces for `prompt`, in playing order (see the module docs).
    /// `Announcement` and `Number` are handled by [`PromptSet::expand`]; here they give
    /// nothing and the digits respectively.
    #[must_use]
    pub fn pieces(prompt: Prompt) -> Vec<PromptKey> {
        use PromptKey as K;
        match prompt {
            Prompt::Greeting => vec![K::Greeting],
            Prompt::Announcement(_) => Vec::new(),
            Prompt::Menu { callback, transfer } => {
                let mut v = Vec::with_capacity(3);
                if callback {
                    v.push(K::MenuCallback);
                }
                v.push(K::MenuRepeat);
                if transfer {
                    v.push(K::MenuAgent);
                }
                v
            }
            Prompt::CallbackConfirmIntro => vec![K::CallbackConfirmIntro],
            Prompt::Digit(d) => vec![K::digit(d)],
            Prompt::Number(n) => {
                let mut v = Vec::with_capacity(5);
                let mut div = 1u16;
                while n / div >= 10 {
                    div *= 10;
                }
                while div > 0 {
                    v.push(K::decimal(n / div % 10));
                    div /= 10;
                }
                v
            }
            Prompt::CallbackConfirmChoices => vec![K::CallbackConfirmChoices],
            Prompt::EnterNumber => vec![K::EnterNumber],
            Prompt::InvalidNumber => vec![K::InvalidNumber],
            Prompt::InvalidChoice => vec![K::InvalidChoice],
            Prompt::NoInput => vec![K::NoInput],
            Prompt::PleaseWait => vec![K::PleaseWait],
            Prompt::Booked => vec![K::Booked],
            Prompt::YouAreNumber => vec![K::YouAreNumber],
            Prompt::AlreadyBooked => vec![K::AlreadyBooked],
            Prompt::QueueFull => vec![K::QueueFull],
            Prompt::CouldNotBook => vec![K::CouldNotBook],
            Prompt::Transferring => vec![K::Transferring],
            Prompt::TransferFailed => vec![K::TransferFailed],
            Prompt::Goodbye => vec![K::Goodbye],
            Prompt::WindowQuestion => vec![K::WindowQuestion],
            Prompt::WindowFor => vec![K::WindowFor],
            Prompt::WindowPress => vec![K::WindowPress],
            Prompt::WindowAsap => vec![K::WindowAsap],
            Prompt::WindowWhenOpen => vec![K::WindowWhenOpen],
            Prompt::WindowAt => vec![K::WindowAt],
            Prompt::WindowBetween => vec![K::WindowBetween],
            Prompt::WindowAnd => vec![K::WindowAnd],
            Prompt::Day(day) => vec![K::day(day)],
            Prompt::DayPart(DayRef::Today, part) => vec![match part {
                DayPart::Morning => K::PartThisMorning,
                DayPart::Afternoon => K::PartThisAfternoon,
                DayPart::Evening => K::PartThisEvening,
            }],
            Prompt::DayPart(day, part) => vec![
                K::day(day),
                match part {
                    DayPart::Morning => K::PartMorning,
                    DayPart::Afternoon => K::PartAfternoon,
                    DayPart::Evening => K::PartEvening,
                },
            ],
            Prompt::Clock(c) => K::clock(c),
            Prompt::LanguageOffer(l) => {
                let mut v = vec![K::LanguageOffer];
                v.extend(language_key(l).map(K::digit));
                v
            }
        }
    }

    fn day(day: DayRef) -> PromptKey {
        match day {
            DayRef::Today => PromptKey::DayToday,
            DayRef::Tomorrow => PromptKey::DayTomorrow,
            DayRef::On(w) => match w {
                Weekday::Mon => PromptKey::DayMonday,
                Weekday::Tue => PromptKey::DayTuesday,
                Weekday::Wed => PromptKey::DayWednesday,
                Weekday::Thu => PromptKey::DayThursday,
                Weekday::Fri => PromptKey::DayFriday,
                Weekday::Sat => PromptKey::DaySaturday,
                Weekday::Sun => PromptKey::DaySunday,
            },
        }
    }

    /// 1–59 in words (digits below ten, then the number words).
    fn number(n: u8) -> Vec<PromptKey> {
        use PromptKey as K;
        let teen = [
            K::Number10,
            K::Number11,
            K::Number12,
            K::Number13,
            K::Number14,
            K::Number15,
            K::Number16,
            K::Number17,
            K::Number18,
            K::Number19,
        ];
        match n {
            0..=9 => vec![K::decimal(u16::from(n))],
            10..=19 => vec![teen[usize::from(n - 10)]],
            _ => {
                let tens = match n / 10 {
                    2 => K::Number20,
                    3 => K::Number30,
                    4 => K::Number40,
                    _ => K::Number50,
                };
                let mut v = vec![tens];
                if !n.is_multiple_of(10) {
                    v.push(K::decimal(u16::from(n % 10)));
                }
                v
            }
        }
    }

    /// A time of day on a 12-hour clock: "8", "5 30", "9 oh 5", midnight and noon "12".
    fn clock(c: Clock) -> Vec<PromptKey> {
        let h = c.hour() % 12;
        let mut v = Self::number(if h == 0 { 12 } else { h });
        match c.minute() {
            0 => {}
            m @ 1..=9 => {
                v.push(PromptKey::NumberOh);
                v.push(PromptKey::decimal(u16::from(m)));
            }
            m => v.extend(Self::number(m)),
        }
        v
    }
}

impl fmt::Display for PromptKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// Why the prompt set cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PromptsError {
    /// A built-in recording does not decode (a build defect).
    #[error("built-in prompt {key}: {source}")]
    Builtin {
        /// Which prompt.
        key: PromptKey,
        /// What is wrong with it.
        source: AudioError,
    },
    /// The overrides directory cannot be listed.
    #[error("prompts directory {}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An override file cannot be read.
    #[error("prompt file {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An override file is not usable audio.
    #[error("prompt file {}: {source}", file.display())]
    Decode {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        source: AudioError,
    },
    /// A language without built-in prompts lacks some in its directory.
    #[error(
        "language {language} has no built-in prompts and {} lacks {}",
        dir.display(),
        missing.iter().map(|k| k.file_name()).collect::<Vec<_>>().join(", ")
    )]
    Incomplete {
        /// The language tag.
        language: String,
        /// Where its prompts were looked for (`ivr.prompts_dir/{lang}/`).
        dir: PathBuf,
        /// The prompts not found there.
        missing: Vec<PromptKey>,
    },
}

/// Something in the overrides directory that was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptsWarning {
    /// The name is not `<key>.wav` for any prompt.
    UnknownFile(PathBuf),
    /// A prompt's name, but not a regular file (a directory, say).
    NotAFile(PathBuf),
}

impl fmt::Display for PromptsWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PromptsWarning::UnknownFile(p) => write!(
                f,
                "ignored {}: not the name of a prompt (<key>.wav, e.g. greeting.wav)",
                p.display()
            ),
            PromptsWarning::NotAFile(p) => write!(f, "ignored {}: not a regular file", p.display()),
        }
    }
}

/// Every prompt decoded and pre-encoded; immutable after loading, cheap to share.
#[derive(Debug, Clone)]
pub struct PromptSet {
    /// Indexed by `PromptKey as usize`, one entry per key.
    frames: Vec<Arc<Frames>>,
    overridden: Vec<PromptKey>,
    warnings: Vec<PromptsWarning>,
}

impl PromptSet {
    /// The built-in English prompts only.
    ///
    /// # Errors
    ///
    /// [`AudioError`] when a compiled-in recording does not decode (a build defect; the
    /// tests decode every one).
    pub fn builtin() -> Result<PromptSet, AudioError> {
        PromptSet::builtin_in(Builtin::En)
    }

    /// The built-in prompts of `lang` only.
    ///
    /// # Errors
    ///
    /// As [`PromptSet::builtin`].
    pub fn builtin_in(lang: Builtin) -> Result<PromptSet, AudioError> {
        let frames = PromptKey::ALL
            .iter()
            .map(|k| Frames::from_wav(k.builtin_wav(lang)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PromptSet {
            frames,
            overridden: Vec::new(),
            warnings: Vec::new(),
        })
    }

    /// The English built-ins, with each `<key>.wav` found in `overrides_dir` replacing its
    /// built-in (one language; [`Prompts::load`] does every language). Other directory
    /// entries are ignored and listed in [`PromptSet::warnings`] (and logged).
    ///
    /// # Errors
    ///
    /// [`PromptsError`] naming the directory when it cannot be listed, or the file when a
    /// replacement cannot be read, is larger than the WAV limit, or does not decode.
    pub fn load(overrides_dir: Option<&Path>) -> Result<PromptSet, PromptsError> {
        let mut set = PromptSet::builtin_named(Builtin::En)?;
        if let Some(dir) = overrides_dir {
            set.apply_dir(dir, &[])?;
        }
        Ok(set)
    }

    /// The built-ins of `lang`, a failure naming the prompt that does not decode.
    fn builtin_named(lang: Builtin) -> Result<PromptSet, PromptsError> {
        PromptSet::builtin_in(lang).map_err(|source| {
            let key = PromptKey::ALL
                .iter()
                .copied()
                .find(|k| Frames::from_wav(k.builtin_wav(lang)).is_err())
                .unwrap_or(PromptKey::Greeting);
            PromptsError::Builtin { key, source }
        })
    }

    /// A set with no recordings yet (silence), for a language without built-ins.
    fn silent() -> PromptSet {
        let none = Arc::new(Frames::silence(0));
        PromptSet {
            frames: PromptKey::ALL.iter().map(|_| Arc::clone(&none)).collect(),
            overridden: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Replaces the prompts `dir` holds a `<key>.wav` for. Subdirectories named in `skip`
    /// (the other languages' directories) are passed over without a warning.
    fn apply_dir(&mut self, dir: &Path, skip: &[String]) -> Result<(), PromptsError> {
        let dir_err = |source| PromptsError::Dir {
            dir: dir.to_path_buf(),
            source,
        };
        let mut entries = std::fs::read_dir(dir)
            .map_err(dir_err)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(dir_err)?;
        entries.sort();
        for path in entries {
            let name = path.file_name().and_then(|n| n.to_str());
            if path.is_dir() && name.is_some_and(|n| skip.iter().any(|l| l == n)) {
                continue;
            }
            let Some(key) = name.and_then(PromptKey::from_file_name) else {
                tracing::warn!(file = %path.display(), "prompts: ignoring a file that is not a prompt");
                self.warnings.push(PromptsWarning::UnknownFile(path));
                continue;
            };
            if !path.is_file() {
                tracing::warn!(file = %path.display(), "prompts: ignoring a non-file");
                self.warnings.push(PromptsWarning::NotAFile(path));
                continue;
            }
            let frames = read_override(&path)?;
            tracing::info!(
                file = %path.display(),
                seconds = frames.duration().as_secs_f32(),
                "prompts: replacing the built-in"
            );
            if let Some(slot) = self.frames.get_mut(key as usize) {
                *slot = frames;
            }
            self.overridden.retain(|k| *k != key);
            self.overridden.push(key);
        }
        Ok(())
    }

    /// The audio for one prompt.
    #[must_use]
    pub fn get(&self, key: PromptKey) -> Arc<Frames> {
        // `frames` has one entry per key by construction; the fallback is never taken.
        self.frames
            .get(key as usize)
            .cloned()
            .unwrap_or_else(|| Arc::new(Frames::silence(0)))
    }

    /// The prompts replaced from the overrides directory, in file-name order.
    #[must_use]
    pub fn overridden(&self) -> &[PromptKey] {
        &self.overridden
    }

    /// What [`PromptSet::load`] ignored in the overrides directory.
    #[must_use]
    pub fn warnings(&self) -> &[PromptsWarning] {
        &self.warnings
    }

    /// The audio segments that play `playlist`, in order (see the module docs for the
    /// mapping). `announcement` finds an announcement's audio; an announcement without audio
    /// is skipped.
    #[must_use]
    pub fn expand(
        &self,
        playlist: &[Prompt],
        announcement: &dyn Fn(AnnouncementHandle) -> Option<Arc<Frames>>,
    ) -> Vec<Arc<Frames>> {
        self.expand_offering(playlist, announcement, &|_| None)
    }

    /// [`PromptSet::expand`], with each `LanguageOffer(l)` played from `offer(l)` (this set
    /// when `None`).
    fn expand_offering<'a>(
        &'a self,
        playlist: &[Prompt],
        announcement: &dyn Fn(AnnouncementHandle) -> Option<Arc<Frames>>,
        offer: &dyn Fn(u8) -> Option<&'a PromptSet>,
    ) -> Vec<Arc<Frames>> {
        let mut out = Vec::with_capacity(playlist.len() + 4);
        let mut previous = None;
        for &prompt in playlist {
            match prompt {
                Prompt::Announcement(h) => out.extend(announcement(h)),
                p => {
                    let set = match p {
                        Prompt::LanguageOffer(l) => offer(l).unwrap_or(self),
                        _ => self,
                    };
                    out.extend(PromptKey::pieces(p).into_iter().map(|k| set.get(k)));
                    if matches!(p, Prompt::Number(_)) && previous == Some(Prompt::YouAreNumber) {
                        out.push(self.get(PromptKey::InTheQueue));
                    }
                }
            }
            previous = Some(prompt);
        }
        out
    }
}

/// The prompt sets of every configured language, in `ivr.languages` order (index 0 is the
/// default); immutable after loading, cheap to share.
#[derive(Debug, Clone)]
pub struct Prompts {
    /// The default language's tag and set.
    default: (String, PromptSet),
    /// The other languages', in order.
    others: Vec<(String, PromptSet)>,
}

impl Prompts {
    /// English only, built in.
    ///
    /// # Errors
    /// As [`PromptSet::builtin`].
    pub fn builtin() -> Result<Prompts, AudioError> {
        Ok(Prompts {
            default: (Builtin::En.tag().to_owned(), PromptSet::builtin()?),
            others: Vec::new(),
        })
    }

    /// The sets of `languages` (tags, the default first; empty means `["en"]`), each from its
    /// built-ins replaced by the files of `overrides_dir` (see the module docs, "Overrides").
    ///
    /// # Errors
    /// [`PromptsError`] as [`PromptSet::load`], and [`PromptsError::Incomplete`] for a
    /// language without built-ins whose directory lacks prompts.
    pub fn load(
        languages: &[String],
        overrides_dir: Option<&Path>,
    ) -> Result<Prompts, PromptsError> {
        let default = [Builtin::En.tag().to_owned()];
        let languages = if languages.is_empty() {
            &default[..]
        } else {
            languages
        };
        let mut sets = Vec::with_capacity(languages.len());
        for (i, tag) in languages.iter().enumerate() {
            let builtin = Builtin::from_tag(tag);
            let mut set = match builtin {
                Some(b) => PromptSet::builtin_named(b)?,
                None => PromptSet::silent(),
            };
            let sub = overrides_dir.map(|d| d.join(tag));
            if let Some(dir) = overrides_dir {
                if i == 0 {
                    set.apply_dir(dir, languages)?;
                }
            }
            if let Some(sub) = sub.as_deref().filter(|p| p.is_dir()) {
                set.apply_dir(sub, &[])?;
            }
            if builtin.is_none() {
                let missing: Vec<PromptKey> = PromptKey::ALL
                    .iter()
                    .copied()
                    .filter(|k| !set.overridden.contains(k))
                    .collect();
                if !missing.is_empty() {
                    return Err(PromptsError::Incomplete {
                        language: tag.clone(),
                        dir: sub.unwrap_or_else(|| PathBuf::from(tag)),
                        missing,
                    });
                }
            }
            sets.push((tag.clone(), set));
        }
        let mut sets = sets.into_iter();
        let default = sets
            .next()
            .unwrap_or_else(|| (Builtin::En.tag().to_owned(), PromptSet::silent()));
        Ok(Prompts {
            default,
            others: sets.collect(),
        })
    }

    /// The set of language `l` (the default's when out of range).
    #[must_use]
    pub fn language(&self, l: u8) -> &PromptSet {
        self.get(l).unwrap_or(&self.default.1)
    }

    fn get(&self, l: u8) -> Option<&PromptSet> {
        match usize::from(l) {
            0 => Some(&self.default.1),
            i => self.others.get(i - 1).map(|(_, s)| s),
        }
    }

    /// The languages' tags and sets, the default first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PromptSet)> {
        core::iter::once(&self.default)
            .chain(&self.others)
            .map(|(t, s)| (t.as_str(), s))
    }

    /// The audio segments that play `playlist` to a caller in language `l`: every prompt from
    /// that language's set, a `LanguageOffer` from the set of the language it offers.
    #[must_use]
    pub fn expand(
        &self,
        l: u8,
        playlist: &[Prompt],
        announcement: &dyn Fn(AnnouncementHandle) -> Option<Arc<Frames>>,
    ) -> Vec<Arc<Frames>> {
        self.language(l)
            .expand_offering(playlist, announcement, &|o| self.get(o))
    }
}

fn read_override(path: &Path) -> Result<Arc<Frames>, PromptsError> {
    let read_err = |source| PromptsError::Read {
        file: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_err)?.len();
    if len > MAX_WAV_BYTES as u64 {
        return Err(PromptsError::Decode {
            file: path.to_path_buf(),
            source: AudioError::TooLarge(usize::try_from(len).unwrap_or(usize::MAX)),
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    Frames::from_wav(&bytes).map_err(|source| PromptsError::Decode {
        file: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::audio::FRAME_BYTES;
    use shared::g711::Law;

    /// A unique scratch directory, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("ccedge-prompts-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// An 8 kHz 16-bit mono WAV of `n` samples of a 500 Hz tone.
    fn tone_wav(n: usize) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut cur = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
        for i in 0..n {
            let x = (2.0 * core::f64::consts::PI * 500.0 * i as f64 / 8000.0).sin();
            w.write_sample((x * 8000.0) as i16).unwrap();
        }
        w.finalize().unwrap();
        cur.into_inner()
    }

    #[test]
    fn keys_and_file_names_are_consistent() {
        assert_eq!(PromptKey::ALL.len(), 75);
        for (i, &k) in PromptKey::ALL.iter().enumerate() {
            assert_eq!(k as usize, i, "ALL is in declaration order");
            let name = k.file_name();
            assert!(name.ends_with(".wav"));
            assert!(name
                .trim_end_matches(".wav")
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
            assert_eq!(PromptKey::from_file_name(name), Some(k));
        }
        let mut names: Vec<_> = PromptKey::ALL.iter().map(|k| k.file_name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PromptKey::ALL.len(), "file names are unique");
        assert_eq!(PromptKey::from_file_name("Greeting.wav"), None);
        assert_eq!(PromptKey::Digit7.to_string(), "digit_7.wav");
    }

    #[test]
    fn every_file_in_edge_prompts_is_a_key_and_every_key_has_a_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let mut langs: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        langs.sort();
        assert_eq!(langs, ["en", "es"], "one directory per built-in language");
        for b in Builtin::ALL {
            let mut on_disk: Vec<String> = std::fs::read_dir(root.join(b.tag()))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            on_disk.sort();
            let mut keys: Vec<String> = PromptKey::ALL
                .iter()
                .map(|k| k.file_name().to_owned())
                .collect();
            keys.sort();
            assert_eq!(on_disk, keys, "{}", b.tag());
        }
    }

    #[test]
    fn every_builtin_prompt_loads_is_audible_and_reasonably_long() {
        for &b in Builtin::ALL {
            builtin_set_is_audible_and_reasonably_long(b);
        }
    }

    fn builtin_set_is_audible_and_reasonably_long(b: Builtin) {
        let set = PromptSet::builtin_in(b).unwrap();
        let mut total = core::time::Duration::ZERO;
        for &k in PromptKey::ALL {
            let f = set.get(k);
            let secs = f.duration().as_secs_f32();
            assert!((0.3..=8.0).contains(&secs), "{k}: {secs} s");
            assert!(f.rms_dbfs() > -40.0, "{k}: {} dBFS", f.rms_dbfs());
            assert!(
                f.rms_dbfs() < -10.0,
                "{k}: {} dBFS is too hot",
                f.rms_dbfs()
            );
            for law in [Law::Ulaw, Law::Alaw] {
                assert_eq!(f.frames(law).len(), f.len());
                assert!(f.frames(law).iter().all(|fr| fr.len() == FRAME_BYTES));
            }
            total += f.duration();
        }
        // The whole set is about 90 s of speech (50 s before the callback-window words).
        assert!(total.as_secs() > 40 && total.as_secs() < 120, "{total:?}");
        assert!(set.warnings().is_empty() && set.overridden().is_empty());
    }

    #[test]
    fn builtin_files_stay_small() {
        for &b in Builtin::ALL {
            let total: usize = PromptKey::ALL.iter().map(|k| k.builtin_wav(b).len()).sum();
            assert!(
                total < 768 * 1024,
                "built-in {} prompts take {total} bytes",
                b.tag()
            );
        }
    }

    #[test]
    fn spanish_is_built_in_and_differs_from_english() {
        let en = PromptSet::builtin_in(Builtin::En).unwrap();
        let es = PromptSet::builtin_in(Builtin::Es).unwrap();
        for &k in PromptKey::ALL {
            if matches!(
                k,
                PromptKey::KeyA | PromptKey::KeyB | PromptKey::KeyC | PromptKey::KeyD
            ) {
                continue;
            }
            assert_ne!(
                *en.get(k),
                *es.get(k),
                "{k} is the same recording in en and es"
            );
        }
        assert_eq!(Builtin::from_tag("es"), Some(Builtin::Es));
        assert_eq!(Builtin::from_tag("ES"), None);
        assert_eq!(Builtin::from_tag("fr"), None);
    }

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn each_language_plays_its_own_set_and_offers_speak_the_offered_language() {
        let p = Prompts::load(&tags(&["en", "es"]), None).unwrap();
        let (en, es) = (p.language(0), p.language(1));
        let none = |_: AnnouncementHandle| -> Option<Arc<Frames>> { None };
        let list = [
            Prompt::LanguageOffer(1),
            Prompt::Greeting,
            Prompt::Menu {
                callback: true,
                transfer: false,
            },
        ];
        let segs = p.expand(0, &list, &none);
        let want = [
            es.get(PromptKey::LanguageOffer),
            es.get(PromptKey::Digit9),
            en.get(PromptKey::Greeting),
            en.get(PromptKey::MenuCallback),
            en.get(PromptKey::MenuRepeat),
        ];
        assert_eq!(segs.len(), want.len());
        assert!(segs.iter().zip(&want).all(|(a, b)| Arc::ptr_eq(a, b)));
        // A Spanish caller: Spanish prompts, the English offer names `*` in English.
        let segs = p.expand(1, &[Prompt::LanguageOffer(0), Prompt::Goodbye], &none);
        let want = [
            en.get(PromptKey::LanguageOffer),
            en.get(PromptKey::Star),
            es.get(PromptKey::Goodbye),
        ];
        assert!(segs.iter().zip(&want).all(|(a, b)| Arc::ptr_eq(a, b)));
        assert_eq!(segs.len(), 3);
        // Out of range: the default.
        assert!(Arc::ptr_eq(
            &p.language(9).get(PromptKey::Goodbye),
            &en.get(PromptKey::Goodbye)
        ));
    }

    #[test]
    fn overrides_per_language_and_the_flat_directory_is_the_default_language() {
        let dir = TempDir::new("langs");
        std::fs::write(dir.0.join("greeting.wav"), tone_wav(8000)).unwrap();
        std::fs::create_dir(dir.0.join("es")).unwrap();
        std::fs::write(dir.0.join("es").join("greeting.wav"), tone_wav(1600)).unwrap();
        std::fs::create_dir(dir.0.join("en")).unwrap();
        std::fs::write(dir.0.join("en").join("goodbye.wav"), tone_wav(800)).unwrap();
        let p = Prompts::load(&tags(&["en", "es"]), Some(&dir.0)).unwrap();
        let (en, es) = (p.language(0), p.language(1));
        assert_eq!(en.get(PromptKey::Greeting).len(), 50);
        assert_eq!(en.get(PromptKey::Goodbye).len(), 5);
        assert_eq!(es.get(PromptKey::Greeting).len(), 10);
        assert_eq!(en.overridden(), &[PromptKey::Greeting, PromptKey::Goodbye]);
        assert_eq!(es.overridden(), &[PromptKey::Greeting]);
        assert!(en.warnings().is_empty(), "{:?}", en.warnings());
        let builtin_es = PromptSet::builtin_in(Builtin::Es).unwrap();
        assert_eq!(
            *es.get(PromptKey::Goodbye),
            *builtin_es.get(PromptKey::Goodbye)
        );
        // With Spanish first, the flat files are Spanish.
        let p = Prompts::load(&tags(&["es", "en"]), Some(&dir.0)).unwrap();
        assert_eq!(
            p.language(0).get(PromptKey::Greeting).len(),
            10,
            "es/ wins over flat"
        );
        assert_eq!(p.language(1).get(PromptKey::Greeting).len(), builtin_len());
    }

    fn builtin_len() -> usize {
        PromptSet::builtin().unwrap().get(PromptKey::Greeting).len()
    }

    #[test]
    fn a_language_without_builtins_needs_every_prompt() {
        let dir = TempDir::new("fr");
        let fr = dir.0.join("fr");
        std::fs::create_dir(&fr).unwrap();
        for k in PromptKey::ALL.iter().skip(2) {
            std::fs::write(fr.join(k.file_name()), tone_wav(160)).unwrap();
        }
        let err = Prompts::load(&tags(&["en", "fr"]), Some(&dir.0)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("language fr") && msg.contains("greeting.wav, menu_callback.wav"),
            "{msg}"
        );
        assert!(matches!(err, PromptsError::Incomplete { ref missing, .. } if missing.len() == 2));
        for k in PromptKey::ALL.iter().take(2) {
            std::fs::write(fr.join(k.file_name()), tone_wav(160)).unwrap();
        }
        let p = Prompts::load(&tags(&["en", "fr"]), Some(&dir.0)).unwrap();
        assert_eq!(p.language(1).get(PromptKey::Goodbye).len(), 1);
        assert!(Prompts::load(&tags(&["fr"]), None).is_err());
    }

    fn keys_of(set: &PromptSet, segs: &[Arc<Frames>]) -> Vec<Option<PromptKey>> {
        segs.iter()
            .map(|s| {
                PromptKey::ALL
                    .iter()
                    .copied()
                    .find(|&k| Arc::ptr_eq(&set.get(k), s))
            })
            .collect()
    }

    #[test]
    fn expand_maps_playlists_to_pieces() {
        use PromptKey as K;
        let set = PromptSet::builtin().unwrap();
        let none = |_: AnnouncementHandle| -> Option<Arc<Frames>> { None };
        let cases: Vec<(Vec<Prompt>, Vec<K>)> = vec![
            (vec![Prompt::Greeting], vec![K::Greeting]),
            (
                vec![Prompt::Menu {
                    callback: true,
                    transfer: true,
                }],
                vec![K::MenuCallback, K::MenuRepeat, K::MenuAgent],
            ),
            (
                vec![Prompt::Menu {
                    callback: false,
                    transfer: false,
                }],
                vec![K::MenuRepeat],
            ),
            (
                vec![Prompt::Menu {
                    callback: true,
                    transfer: false,
                }],
                vec![K::MenuCallback, K::MenuRepeat],
            ),
            (
                vec![
                    Prompt::TransferFailed,
                    Prompt::Menu {
                        callback: false,
                        transfer: true,
                    },
                ],
                vec![K::TransferFailed, K::MenuRepeat, K::MenuAgent],
            ),
            (
                vec![
                    Prompt::CallbackConfirmIntro,
                    Prompt::Digit(Digit::D0),
                    Prompt::Digit(Digit::D1),
                    Prompt::Digit(Digit::Star),
                    Prompt::Digit(Digit::Hash),
                    Prompt::CallbackConfirmChoices,
                ],
                vec![
                    K::CallbackConfirmIntro,
                    K::Digit0,
                    K::Digit1,
                    K::Star,
                    K::Hash,
                    K::CallbackConfirmChoices,
                ],
            ),
            (
                vec![
                    Prompt::Booked,
                    Prompt::YouAreNumber,
                    Prompt::Number(12),
                    Prompt::Goodbye,
                ],
                vec![
                    K::Booked,
                    K::YouAreNumber,
                    K::Digit1,
                    K::Digit2,
                    K::InTheQueue,
                    K::Goodbye,
                ],
            ),
            (
                vec![
                    Prompt::AlreadyBooked,
                    Prompt::YouAreNumber,
                    Prompt::Number(0),
                    Prompt::Goodbye,
                ],
                vec![
                    K::AlreadyBooked,
                    K::YouAreNumber,
                    K::Digit0,
                    K::InTheQueue,
                    K::Goodbye,
                ],
            ),
            (
                vec![Prompt::Number(65535), Prompt::Number(307)],
                vec![
                    K::Digit6,
                    K::Digit5,
                    K::Digit5,
                    K::Digit3,
                    K::Digit5,
                    K::Digit3,
                    K::Digit0,
                    K::Digit7,
                ],
            ),
            (
                vec![Prompt::InvalidNumber, Prompt::EnterNumber],
                vec![K::InvalidNumber, K::EnterNumber],
            ),
            (
                vec![Prompt::NoInput, Prompt::InvalidChoice],
                vec![K::NoInput, K::InvalidChoice],
            ),
            (
                vec![
                    Prompt::PleaseWait,
                    Prompt::QueueFull,
                    Prompt::CouldNotBook,
                    Prompt::Transferring,
                ],
                vec![
                    K::PleaseWait,
                    K::QueueFull,
                    K::CouldNotBook,
                    K::Transferring,
                ],
            ),
            (vec![], vec![]),
        ];
        for (playlist, want) in cases {
            let got = keys_of(&set, &set.expand(&playlist, &none));
            let want: Vec<_> = want.into_iter().map(Some).collect();
            assert_eq!(got, want, "{playlist:?}");
        }
    }

    #[test]
    fn every_keypad_key_has_its_own_prompt() {
        let set = PromptSet::builtin().unwrap();
        let none = |_: AnnouncementHandle| -> Option<Arc<Frames>> { None };
        let mut seen = Vec::new();
        for d in Digit::ALL {
            let segs = set.expand(&[Prompt::Digit(d)], &none);
            assert_eq!(segs.len(), 1);
            let k = keys_of(&set, &segs)[0].unwrap();
            assert!(!seen.contains(&k), "{d:?} shares {k}");
            seen.push(k);
        }
    }

    #[test]
    fn expand_plays_announcements_from_the_lookup() {
        let set = PromptSet::builtin().unwrap();
        let ann = Arc::new(Frames::silence(7));
        let ann2 = Arc::clone(&ann);
        let lookup = move |h: AnnouncementHandle| (h.0 == 5).then(|| Arc::clone(&ann2));
        let segs = set.expand(
            &[
                Prompt::Announcement(AnnouncementHandle(5)),
                Prompt::Announcement(AnnouncementHandle(6)), // no audio: skipped
                Prompt::Menu {
                    callback: true,
                    transfer: false,
                },
            ],
            &lookup,
        );
        assert_eq!(segs.len(), 3);
        assert!(Arc::ptr_eq(&segs[0], &ann));
        assert!(Arc::ptr_eq(&segs[1], &set.get(PromptKey::MenuCallback)));
        assert!(Arc::ptr_eq(&segs[2], &set.get(PromptKey::MenuRepeat)));
    }

    #[test]
    fn load_without_a_directory_is_the_builtin_set() {
        let a = PromptSet::load(None).unwrap();
        let b = PromptSet::builtin().unwrap();
        for &k in PromptKey::ALL {
            assert_eq!(*a.get(k), *b.get(k));
        }
    }

    #[test]
    fn overrides_replace_builtins_and_unknown_files_are_reported() {
        let dir = TempDir::new("ok");
        std::fs::write(dir.0.join("greeting.wav"), tone_wav(8000)).unwrap();
        std::fs::write(dir.0.join("digit_3.wav"), tone_wav(800)).unwrap();
        std::fs::write(dir.0.join("README.txt"), "site prompts").unwrap();
        std::fs::write(dir.0.join("Goodbye.WAV"), tone_wav(800)).unwrap();
        std::fs::create_dir(dir.0.join("hash.wav")).unwrap();

        let set = PromptSet::load(Some(&dir.0)).unwrap();
        let builtin = PromptSet::builtin().unwrap();
        assert_eq!(set.overridden(), &[PromptKey::Digit3, PromptKey::Greeting]);
        assert_eq!(set.get(PromptKey::Greeting).len(), 50); // 1 s
        assert_eq!(set.get(PromptKey::Digit3).len(), 5);
        assert_ne!(
            *set.get(PromptKey::Greeting),
            *builtin.get(PromptKey::Greeting)
        );
        assert_eq!(
            *set.get(PromptKey::Goodbye),
            *builtin.get(PromptKey::Goodbye)
        );
        assert_eq!(*set.get(PromptKey::Hash), *builtin.get(PromptKey::Hash));
        assert_eq!(
            set.warnings(),
            &[
                PromptsWarning::UnknownFile(dir.0.join("Goodbye.WAV")),
                PromptsWarning::UnknownFile(dir.0.join("README.txt")),
                PromptsWarning::NotAFile(dir.0.join("hash.wav")),
            ]
        );
        assert!(set.warnings()[0].to_string().contains("Goodbye.WAV"));

        // The override is what expand plays.
        let none = |_: AnnouncementHandle| -> Option<Arc<Frames>> { None };
        let segs = set.expand(&[Prompt::Greeting, Prompt::Number(3)], &none);
        assert_eq!(
            segs.iter().map(|s| s.len()).collect::<Vec<_>>(),
            vec![50, 5]
        );
    }

    #[test]
    fn a_bad_override_fails_the_load_naming_the_file() {
        let dir = TempDir::new("bad");
        std::fs::write(dir.0.join("greeting.wav"), tone_wav(800)).unwrap();
        std::fs::write(dir.0.join("menu_agent.wav"), b"this is not audio").unwrap();
        let err = PromptSet::load(Some(&dir.0)).unwrap_err();
        match &err {
            PromptsError::Decode { file, source } => {
                assert_eq!(file, &dir.0.join("menu_agent.wav"));
                assert_eq!(*source, AudioError::NotWav);
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("menu_agent.wav") && msg.contains("not a WAV file"),
            "{msg}"
        );

        // A truncated recording is caught too.
        let mut cut = tone_wav(800);
        cut.truncate(cut.len() - 10);
        std::fs::write(dir.0.join("menu_agent.wav"), cut).unwrap();
        let msg = PromptSet::load(Some(&dir.0)).unwrap_err().to_string();
        assert!(
            msg.contains("menu_agent.wav") && msg.contains("truncated"),
            "{msg}"
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_it() {
        let dir = TempDir::new("gone");
        let missing = dir.0.join("nope");
        let err = PromptSet::load(Some(&missing)).unwrap_err();
        assert!(matches!(err, PromptsError::Dir { .. }));
        assert!(err.to_string().contains("nope"));
    }

    #[test]
    fn times_are_spoken_on_a_twelve_hour_clock() {
        use PromptKey as K;
        let t = |h: u16, m: u16| PromptKey::pieces(Prompt::Clock(Clock(h * 60 + m)));
        assert_eq!(t(17, 0), [K::Digit5]);
        assert_eq!(t(17, 30), [K::Digit5, K::Number30]);
        assert_eq!(t(9, 5), [K::Digit9, K::NumberOh, K::Digit5]);
        assert_eq!(t(0, 0), [K::Number12]);
        assert_eq!(t(24, 0), [K::Number12]);
        assert_eq!(t(12, 45), [K::Number12, K::Number40, K::Digit5]);
        assert_eq!(t(11, 13), [K::Number11, K::Number13]);
        assert_eq!(
            PromptKey::pieces(Prompt::DayPart(DayRef::On(Weekday::Tue), DayPart::Evening)),
            [K::DayTuesday, K::PartEvening]
        );
        assert_eq!(
            PromptKey::pieces(Prompt::DayPart(DayRef::Today, DayPart::Morning)),
            [K::PartThisMorning]
        );
    }
}
