extern crate alloc;
extern crate std;

use alloc::vec::Vec as StdVec;

use super::*;
use Digit::*;

const A1: AnnouncementHandle = AnnouncementHandle(11);
const A2: AnnouncementHandle = AnnouncementHandle(22);

fn ann(handle: AnnouncementHandle, offer_callback: bool) -> AnnouncementInfo {
    AnnouncementInfo {
        handle,
        offer_callback,
    }
}

fn num(s: &str) -> PhoneNumber {
    PhoneNumber::parse(s).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Drives one IVR on virtual time and records its outputs.
struct H {
    ivr: Ivr,
    now: Instant,
}

impl H {
    fn new(cfg: &Config, caller: Option<&str>, anns: &[AnnouncementInfo]) -> H {
        H {
            ivr: Ivr::new(cfg, caller.map(num), anns),
            now: Instant::from_millis(1_000),
        }
    }

    fn drain(&mut self) -> StdVec<Output> {
        let mut v = StdVec::new();
        while let Some(o) = self.ivr.poll_output() {
            v.push(o);
        }
        v
    }

    fn input(&mut self, i: Input) -> StdVec<Output> {
        self.ivr.handle_input(self.now, i).unwrap();
        self.drain()
    }

    fn key(&mut self, d: Digit) -> StdVec<Output> {
        self.input(Input::Digit(d))
    }

    fn finished(&mut self) -> StdVec<Output> {
        self.input(Input::PlaybackFinished)
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Jumps to the next deadline and fires it.
    fn fire(&mut self) -> StdVec<Output> {
        let t = self.ivr.poll_timeout().expect("a timer runs");
        assert!(t >= self.now, "deadline in the past");
        self.now = t;
        self.ivr.handle_timeout(t);
        self.drain()
    }

    /// Starts the call and plays the announcements/greeting to the menu's end.
    fn play_to_menu(&mut self) {
        self.input(Input::Start);
        loop {
            let out = self.finished();
            if out.iter().any(
                |o| matches!(o, Output::Play(p) if matches!(p.first(), Some(Prompt::Menu { .. }))),
            ) {
                break;
            }
        }
        assert!(self.finished().is_empty());
    }
}

fn play(prompts: &[Prompt]) -> Output {
    Output::Play(Playlist::from_slice(prompts).unwrap())
}

fn ev(e: Event) -> Output {
    Output::Event(e)
}

fn dtmf(d: Digit) -> Output {
    ev(Event::Dtmf(d))
}

const MENU_CB: Prompt = Prompt::Menu {
    callback: true,
    transfer: false,
};
const MENU_ALL: Prompt = Prompt::Menu {
    callback: true,
    transfer: true,
};

fn confirm_playlist(last4: [Digit; 4]) -> Output {
    let mut v = StdVec::from([Prompt::CallbackConfirmIntro]);
    v.extend(last4.iter().map(|d| Prompt::Digit(*d)));
    v.push(Prompt::CallbackConfirmChoices);
    play(&v)
}

fn booked_playlist(n: u16) -> Output {
    play(&[
        Prompt::Booked,
        Prompt::YouAreNumber,
        Prompt::Number(n),
        Prompt::Goodbye,
    ])
}

#[test]
fn sizes_fit_the_budget() {
    assert!(core::mem::size_of::<Prompt>() <= 8);
    assert!(
        // 4 callback offers (about 100 bytes) are kept while the caller chooses.
        core::mem::size_of::<Ivr>() <= 736,
        "Ivr is {} bytes",
        core::mem::size_of::<Ivr>()
    );
}

#[test]
fn announcements_then_menu() {
    let mut h = H::new(
        &Config::default(),
        Some("+12155550123"),
        &[ann(A1, true), ann(A2, false)],
    );
    assert_eq!(h.ivr.poll_timeout(), None);
    assert_eq!(
        h.input(Input::Start),
        [
            play(&[Prompt::Announcement(A1)]),
            ev(Event::AnnouncementStarted(A1))
        ]
    );
    assert_eq!(
        h.finished(),
        [
            ev(Event::AnnouncementCompleted {
                handle: A1,
                interrupted: false
            }),
            play(&[Prompt::Announcement(A2)]),
            ev(Event::AnnouncementStarted(A2)),
        ]
    );
    assert_eq!(
        h.finished(),
        [
            ev(Event::AnnouncementCompleted {
                handle: A2,
                interrupted: false
            }),
            play(&[MENU_CB]),
        ]
    );
    // Only the max-duration timer runs while the menu plays.
    assert_eq!(h.ivr.poll_timeout(), Some(h.now + secs(600)));
    h.advance(secs(7));
    assert!(h.finished().is_empty());
    assert_eq!(h.ivr.poll_timeout(), Some(h.now + secs(5)));
}

#[test]
fn no_announcement_plays_the_greeting() {
    let mut h = H::new(&Config::default(), None, &[]);
    assert_eq!(h.input(Input::Start), [play(&[Prompt::Greeting])]);
    assert_eq!(h.finished(), [play(&[MENU_CB])]);
}

#[test]
fn callback_offer_rule() {
    let cfg = Config::default();
    assert!(Ivr::new(&cfg, None, &[ann(A1, false), ann(A2, true)]).callback_offered());
    assert!(!Ivr::new(&cfg, None, &[ann(A1, false), ann(A2, false)]).callback_offered());
    assert!(Ivr::new(&cfg, None, &[]).callback_offered());
    let no_default = Config {
        offer_callback_default: false,
        ..cfg
    };
    assert!(!Ivr::new(&no_default, None, &[]).callback_offered());
    // Not offered: 1 is an invalid choice and the menu does not name it.
    let mut h = H::new(&cfg, None, &[ann(A1, false)]);
    h.play_to_menu();
    assert_eq!(
        h.key(D1),
        [
            dtmf(D1),
            ev(Event::InvalidInput),
            play(&[
                Prompt::InvalidChoice,
                Prompt::Menu {
                    callback: false,
                    transfer: false
                }
            ]),
        ]
    );
}

#[test]
fn barge_in_confirm_book_booked() {
    let mut h = H::new(&Config::default(), Some("+12155550123"), &[ann(A1, true)]);
    h.input(Input::Start);
    assert_eq!(
        h.key(D1),
        [
            dtmf(D1),
            ev(Event::AnnouncementCompleted {
                handle: A1,
                interrupted: true
            }),
            confirm_playlist([D0, D1, D2, D3]),
        ]
    );
    assert_eq!(
        h.key(D1),
        [
            dtmf(D1),
            Output::BookCallback {
                number: num("+12155550123"),
                window: None,
            },
            ev(Event::CallbackRequested {
                number: num("+12155550123")
            }),
            play(&[Prompt::PleaseWait]),
        ]
    );
    assert_eq!(h.ivr.poll_timeout(), Some(h.now + secs(5)));
    h.advance(Duration::from_millis(30));
    assert_eq!(
        h.input(Input::BookingResult(BookingResult::Booked { position: 5 })),
        [
            ev(Event::CallbackBooked { position: 5 }),
            ev(Event::Closing(CloseReason::Completed)),
            booked_playlist(5),
        ]
    );
    // Keys do not cut the confirmation.
    assert_eq!(h.key(D9), [dtmf(D9)]);
    assert_eq!(h.finished(), [Output::Hangup]);
    assert!(h.ivr.is_ended());
    assert_eq!(h.ivr.poll_timeout(), None);
    assert_eq!(
        h.ivr.handle_input(h.now, Input::Digit(D1)),
        Err(Error::Ended)
    );
}

#[test]
fn different_number_keyed() {
    let mut h = H::new(&Config::default(), Some("+12155550123"), &[ann(A1, true)]);
    h.play_to_menu();
    assert_eq!(h.key(D1), [dtmf(D1), confirm_playlist([D0, D1, D2, D3])]);
    assert_eq!(h.key(D2), [dtmf(D2), play(&[Prompt::EnterNumber])]);
    // First key barges into the prompt.
    assert_eq!(h.key(D4), [dtmf(D4), Output::StopPlayback]);
    for d in [D4, D2, D0, D7, D9, D4, D6, D0, D0, D0, D0] {
        assert_eq!(h.key(d), [dtmf(d)]);
    }
    assert_eq!(
        h.key(Hash),
        [
            dtmf(Hash),
            Output::BookCallback {
                number: num("+442079460000"),
                window: None,
            },
            ev(Event::CallbackRequested {
                number: num("+442079460000")
            }),
            play(&[Prompt::PleaseWait]),
        ]
    );
}

#[test]
fn invalid_number_then_retry() {
    let mut h = H::new(&Config::default(), None, &[]);
    h.play_to_menu();
    // Anonymous caller: straight to number entry.
    assert_eq!(h.key(D1), [dtmf(D1), play(&[Prompt::EnterNumber])]);
    h.finished();
    h.key(D1);
    h.key(D2);
    assert_eq!(
        h.key(Hash),
        [
            dtmf(Hash),
            ev(Event::InvalidInput),
            play(&[Prompt::InvalidNumber, Prompt::EnterNumber]),
        ]
    );
    for d in [D1, D2, D1, D5, D5, D5, D5, D0, D1, D2, D3] {
        h.key(d);
    }
    let out = h.key(Hash);
    assert_eq!(
        out[1],
        Output::BookCallback {
            number: num("+12155550123"),
            window: None,
        }
    );
}

#[test]
fn invalid_numbers_exhaust_retries() {
    let mut h = H::new(&Config::default(), None, &[]);
    h.play_to_menu();
    h.key(D1);
    h.key(Hash);
    h.key(D5);
    h.key(Hash);
    assert_eq!(
        h.key(Hash),
        [
            dtmf(Hash),
            ev(Event::InvalidInput),
            ev(Event::Closing(CloseReason::InvalidInput)),
            play(&[Prompt::InvalidNumber, Prompt::Goodbye]),
        ]
    );
    assert_eq!(h.finished(), [Output::Hangup]);
}

#[test]
fn star_restarts_entry() {
    let mut h = H::new(&Config::default(), None, &[]);
    h.play_to_menu();
    h.key(D1);
    h.key(D9);
    h.key(D9);
    assert_eq!(h.key(Star), [dtmf(Star), play(&[Prompt::EnterNumber])]);
    h.finished();
    for d in [D3, D3, D1, D4, D2, D0, D0, D0, D0] {
        h.key(d);
    }
    let out = h.key(Hash);
    assert_eq!(
        out[1],
        Output::BookCallback {
            number: num("+331420000"),
            window: None,
        }
    );
}

#[test]
fn inter_digit_timeout_submits() {
    let mut h = H::new(&Config::default(), None, &[]);
    h.play_to_menu();
    h.key(D1);
    for d in [D3, D3, D1, D4, D2, D0, D0, D0, D0] {
        h.advance(secs(1));
        h.key(d);
    }
    assert_eq!(h.ivr.poll_timeout(), Some(h.now + secs(5)));
    let out = h.fire();
    assert_eq!(
        out[0],
        Output::BookCallback {
            number: num("+331420000"),
            window: None,
        }
    );
}

#[test]
fn national_number_gets_country_code() {
    let cfg = Config {
        country_code: Some(44),
        ..Config::default()
    };
    let k =
        |s: &str| -> StdVec<Digit> { s.chars().map(|c| Digit::from_char(c).unwrap()).collect() };
    assert_eq!(
        keyed_number(&cfg, &k("02079460000")),
        Some(num("+442079460000"))
    );
    assert_eq!(
        keyed_number(&cfg, &k("00442079460000")),
        Some(num("+442079460000"))
    );
    assert_eq!(
        keyed_number(&cfg, &k("442079460000")),
        Some(num("+442079460000"))
    );
    let none = Config::default();
    assert_eq!(keyed_number(&none, &k("02079460000")), None);
    assert_eq!(keyed_number(&none, &k("1234567")), None, "too short");
    assert_eq!(keyed_number(&none, &k("12345678")), Some(num("+12345678")));
    assert_eq!(
        keyed_number(&none, &k("1234567890123456")),
        None,
        "too long"
    );
    assert_eq!(keyed_number(&none, &k("")), None);
    assert_eq!(keyed_number(&none, &k("000")), None);
    let cc1 = Config {
        country_code: Some(1),
        ..Config::default()
    };
    assert_eq!(
        keyed_number(&cc1, &k("02155550123")),
        Some(num("+12155550123"))
    );
    let bad = Config {
        country_code: Some(1234),
        ..Config::default()
    };
    assert_eq!(keyed_number(&bad, &k("02155550123")), None);
}

#[test]
fn keying_too_many_digits_is_invalid() {
    let mut h = H::new(&Config::default(), None, &[]);
    h.play_to_menu();
    h.key(D1);
    for _ in 0..20 {
        h.key(D1);
    }
    assert_eq!(
        h.key(Hash),
        [
            dtmf(Hash),
            ev(Event::InvalidInput),
            play(&[Prompt::InvalidNumber, Prompt::EnterNumber]),
        ]
    );
}

#[test]
fn no_input_retries_then_goodbye() {
    let mut h = H::new(&Config::default(), None, &[ann(A1, true)]);
    h.play_to_menu();
    let t0 = h.now;
    assert_eq!(
        h.fire(),
        [ev(Event::NoInput), play(&[Prompt::NoInput, MENU_CB])]
    );
    assert_eq!(h.now, t0 + secs(5));
    // The timer runs only after the prompt ends.
    assert_eq!(h.ivr.poll_timeout(), Some(t0 + secs(600)));
    h.advance(secs(3));
    h.finished();
    assert_eq!(
        h.fire(),
        [ev(Event::NoInput), play(&[Prompt::NoInput, MENU_CB])]
    );
    h.finished();
    assert_eq!(
        h.fire(),
        [
            ev(Event::NoInput),
            ev(Event::Closing(CloseReason::NoInput)),
            play(&[Prompt::NoInput, Prompt::Goodbye]),
        ]
    );
    assert_eq!(h.finished(), [Output::Hangup]);
}

#[test]
fn goodbye_that_never_finishes_still_hangs_up() {
    let mut h = H::new(&Config::default(), None, &[]);
    h.play_to_menu();
    for _ in 0..2 {
        h.fire();
        h.finished();
    }
    h.fire();
    let t = h.now;
    assert_eq!(h.fire(), [Output::Hangup]);
    assert_eq!(h.now, t + secs(15));
}

#[test]
fn invalid_choice_retries() {
    let mut h = H::new(&Config::default(), None, &[]);
    h.play_to_menu();
    assert_eq!(
        h.key(D7),
        [
            dtmf(D7),
            ev(Event::InvalidInput),
            play(&[Prompt::InvalidChoice, MENU_CB])
        ]
    );
    // Barge-in into the re-prompt also counts.
    assert_eq!(
        h.key(Star),
        [
            dtmf(Star),
            ev(Event::InvalidInput),
            play(&[Prompt::InvalidChoice, MENU_CB])
        ]
    );
    assert_eq!(
        h.key(D0),
        [
            dtmf(D0),
            ev(Event::InvalidInput),
            ev(Event::Closing(CloseReason::InvalidInput)),
            play(&[Prompt::InvalidChoice, Prompt::Goodbye]),
        ]
    );
}

#[test]
fn invalid_choice_in_confirm() {
    let mut h = H::new(&Config::default(), Some("+12155550123"), &[]);
    h.play_to_menu();
    h.key(D1);
    assert_eq!(
        h.key(D5),
        [dtmf(D5), ev(Event::InvalidInput), {
            let mut v = StdVec::from([Prompt::InvalidChoice, Prompt::CallbackConfirmIntro]);
            v.extend([D0, D1, D2, D3].map(Prompt::Digit));
            v.push(Prompt::CallbackConfirmChoices);
            play(&v)
        }]
    );
}

#[test]
fn repeat_replays_announcements() {
    let mut h = H::new(&Config::default(), None, &[ann(A1, true), ann(A2, true)]);
    h.play_to_menu();
    assert_eq!(
        h.key(D2),
        [
            dtmf(D2),
            play(&[Prompt::Announcement(A1)]),
            ev(Event::AnnouncementStarted(A1))
        ]
    );
    h.finished();
    assert_eq!(
        h.key(D2),
        [
            dtmf(D2),
            ev(Event::AnnouncementCompleted {
                handle: A2,
                interrupted: true
            }),
            play(&[Prompt::Announcement(A1)]),
            ev(Event::AnnouncementStarted(A1))
        ]
    );
    // Greeting repeat.
    let mut g = H::new(&Config::default(), None, &[]);
    g.play_to_menu();
    assert_eq!(g.key(D2), [dtmf(D2), play(&[Prompt::Greeting])]);
    assert_eq!(g.finished(), [play(&[MENU_CB])]);
}

fn to_booking(cfg: &Config) -> H {
    let mut h = H::new(cfg, Some("+12155550123"), &[ann(A1, true)]);
    h.play_to_menu();
    h.key(D1);
    h.key(D1);
    h
}

#[test]
fn queue_full_without_transfer_says_goodbye() {
    let mut h = to_booking(&Config::default());
    assert_eq!(
        h.input(Input::BookingResult(BookingResult::QueueFull)),
        [
            ev(Event::CallbackFailed(CallbackFailure::QueueFull)),
            ev(Event::Closing(CloseReason::CallbackUnavailable)),
            play(&[Prompt::QueueFull, Prompt::Goodbye]),
        ]
    );
    assert_eq!(h.finished(), [Output::Hangup]);
}

#[test]
fn queue_full_with_transfer_returns_to_menu_without_callback() {
    let cfg = Config {
        transfer_available: true,
        ..Config::default()
    };
    let mut h = to_booking(&cfg);
    let menu = Prompt::Menu {
        callback: false,
        transfer: true,
    };
    assert_eq!(
        h.input(Input::BookingResult(BookingResult::QueueFull)),
        [
            ev(Event::CallbackFailed(CallbackFailure::QueueFull)),
            play(&[Prompt::QueueFull, menu]),
        ]
    );
    assert!(!h.ivr.callback_offered());
    assert_eq!(
        h.key(D1),
        [
            dtmf(D1),
            ev(Event::InvalidInput),
            play(&[Prompt::InvalidChoice, menu])
        ]
    );
}

#[test]
fn failed_never_says_booked() {
    let mut h = to_booking(&Config::default());
    let out = h.input(Input::BookingResult(BookingResult::Failed));
    assert_eq!(
        out,
        [
            ev(Event::CallbackFailed(CallbackFailure::Failed)),
            ev(Event::Closing(CloseReason::CallbackUnavailable)),
            play(&[Prompt::CouldNotBook, Prompt::Goodbye]),
        ]
    );
    // A second result is refused.
    assert_eq!(
        h.ivr.handle_input(
            h.now,
            Input::BookingResult(BookingResult::Booked { position: 1 })
        ),
        Err(Error::Unexpected)
    );
    assert!(h.drain().is_empty());
}

#[test]
fn booking_timeout_is_failure() {
    let cfg = Config {
        transfer_available: true,
        ..Config::default()
    };
    let mut h = to_booking(&cfg);
    h.finished(); // hold prompt over; silence
    let t = h.now;
    assert_eq!(
        h.fire(),
        [
            ev(Event::CallbackFailed(CallbackFailure::Timeout)),
            play(&[
                Prompt::CouldNotBook,
                Prompt::Menu {
                    callback: false,
                    transfer: true
                }
            ]),
        ]
    );
    assert_eq!(h.now, t + secs(5));
    assert_eq!(
        h.ivr.handle_input(
            h.now,
            Input::BookingResult(BookingResult::Booked { position: 1 })
        ),
        Err(Error::Unexpected)
    );
}

#[test]
fn already_booked() {
    let mut h = to_booking(&Config::default());
    assert_eq!(
        h.input(Input::BookingResult(BookingResult::AlreadyBooked {
            position: 12
        })),
        [
            ev(Event::CallbackAlreadyBooked { position: 12 }),
            ev(Event::Closing(CloseReason::Completed)),
            play(&[
                Prompt::AlreadyBooked,
                Prompt::YouAreNumber,
                Prompt::Number(12),
                Prompt::Goodbye
            ]),
        ]
    );
}

#[test]
fn booking_result_without_booking_is_refused() {
    let mut h = H::new(&Config::default(), None, &[]);
    assert_eq!(
        h.ivr
            .handle_input(h.now, Input::BookingResult(BookingResult::Failed)),
        Err(Error::NotStarted)
    );
    h.play_to_menu();
    let before = h.ivr.poll_timeout();
    assert_eq!(
        h.ivr.handle_input(
            h.now,
            Input::BookingResult(BookingResult::Booked { position: 1 })
        ),
        Err(Error::Unexpected)
    );
    assert_eq!(
        h.ivr.handle_input(h.now, Input::TransferResult(true)),
        Err(Error::Unexpected)
    );
    assert_eq!(
        h.ivr.handle_input(h.now, Input::PlaybackFinished),
        Err(Error::Unexpected)
    );
    assert_eq!(
        h.ivr.handle_input(h.now, Input::Start),
        Err(Error::AlreadyStarted)
    );
    assert!(h.drain().is_empty());
    assert_eq!(h.ivr.poll_timeout(), before);
}

#[test]
fn transfer_when_available() {
    let cfg = Config {
        transfer_available: true,
        ..Config::default()
    };
    let mut h = H::new(&cfg, None, &[ann(A1, true)]);
    h.input(Input::Start);
    h.finished();
    assert_eq!(
        h.key(D0),
        [
            dtmf(D0),
            Output::Transfer,
            ev(Event::TransferRequested),
            play(&[Prompt::Transferring]),
        ]
    );
    h.finished();
    assert_eq!(
        h.input(Input::TransferResult(true)),
        [ev(Event::Transferred)]
    );
    assert!(h.ivr.is_ended());
    assert_eq!(h.ivr.poll_timeout(), None);
}

#[test]
fn zero_is_invalid_without_transfer() {
    let mut h = H::new(&Config::default(), None, &[]);
    h.play_to_menu();
    assert_eq!(
        h.key(D0),
        [
            dtmf(D0),
            ev(Event::InvalidInput),
            play(&[Prompt::InvalidChoice, MENU_CB])
        ]
    );
}

#[test]
fn transfer_failure_back_to_menu() {
    let cfg = Config {
        transfer_available: true,
        ..Config::default()
    };
    let mut h = H::new(&cfg, None, &[]);
    h.play_to_menu();
    h.key(D0);
    assert_eq!(
        h.input(Input::TransferResult(false)),
        [
            ev(Event::TransferFailed),
            play(&[Prompt::TransferFailed, MENU_ALL])
        ]
    );
    // And a transfer that never answers times out the same way.
    h.key(D0);
    let t = h.now;
    assert_eq!(
        h.fire(),
        [
            ev(Event::TransferFailed),
            play(&[Prompt::TransferFailed, MENU_ALL])
        ]
    );
    assert_eq!(h.now, t + secs(30));
}

#[test]
fn anonymous_or_short_caller_goes_to_entry() {
    for caller in [None, Some("+1234")] {
        let mut h = H::new(&Config::default(), caller, &[]);
        h.play_to_menu();
        assert_eq!(h.key(D1), [dtmf(D1), play(&[Prompt::EnterNumber])]);
        // No-input in entry re-prompts it.
        h.finished();
        assert_eq!(
            h.fire(),
            [
                ev(Event::NoInput),
                play(&[Prompt::NoInput, Prompt::EnterNumber])
            ]
        );
    }
}

#[test]
fn remote_hangup_mid_flow() {
    let mut h = H::new(&Config::default(), None, &[ann(A1, true)]);
    h.input(Input::Start);
    assert_eq!(
        h.input(Input::RemoteHangup),
        [ev(Event::AnnouncementCompleted {
            handle: A1,
            interrupted: true
        })]
    );
    assert!(h.ivr.is_ended());
    assert_eq!(h.ivr.poll_timeout(), None);
    h.ivr.handle_timeout(h.now + secs(10_000));
    assert!(h.drain().is_empty());
    for i in [
        Input::Digit(D1),
        Input::PlaybackFinished,
        Input::RemoteHangup,
        Input::Start,
    ] {
        assert_eq!(h.ivr.handle_input(h.now, i), Err(Error::Ended));
    }
    assert!(h.drain().is_empty());
}

#[test]
fn remote_hangup_while_booking_reports_the_result_only() {
    let mut h = to_booking(&Config::default());
    assert!(h.input(Input::RemoteHangup).is_empty());
    assert_eq!(
        h.input(Input::BookingResult(BookingResult::Booked { position: 3 })),
        [ev(Event::CallbackBooked { position: 3 })]
    );
    assert_eq!(
        h.ivr
            .handle_input(h.now, Input::BookingResult(BookingResult::Failed)),
        Err(Error::Ended)
    );
}

#[test]
fn remote_hangup_drops_undrained_booking() {
    let mut h = H::new(&Config::default(), Some("+12155550123"), &[]);
    h.play_to_menu();
    h.key(D1);
    h.ivr.handle_input(h.now, Input::Digit(D1)).unwrap();
    h.ivr.handle_input(h.now, Input::RemoteHangup).unwrap();
    assert_eq!(h.drain(), [dtmf(D1)]);
    assert_eq!(
        h.ivr.handle_input(
            h.now,
            Input::BookingResult(BookingResult::Booked { position: 1 })
        ),
        Err(Error::Ended)
    );
}

#[test]
fn max_duration() {
    let cfg = Config {
        max_call_duration: secs(60),
        ..Config::default()
    };
    let mut h = H::new(&cfg, None, &[ann(A1, true)]);
    let t0 = h.now;
    h.input(Input::Start);
    assert_eq!(h.ivr.poll_timeout(), Some(t0 + secs(60)));
    assert_eq!(
        h.fire(),
        [
            ev(Event::AnnouncementCompleted {
                handle: A1,
                interrupted: true
            }),
            ev(Event::Closing(CloseReason::MaxDuration)),
            play(&[Prompt::Goodbye]),
        ]
    );
    assert_eq!(h.finished(), [Output::Hangup]);
}

#[test]
fn max_duration_waits_for_a_pending_booking() {
    let cfg = Config {
        max_call_duration: secs(20),
        ..Config::default()
    };
    let mut h = H::new(&cfg, Some("+12155550123"), &[]);
    let t0 = h.now;
    h.play_to_menu();
    h.advance(secs(4));
    h.key(D1);
    h.advance(secs(13));
    h.key(D1); // booking starts at t0 + 17 s
    let booking_deadline = h.now + secs(5);
    assert_eq!(h.ivr.poll_timeout(), Some(booking_deadline));
    h.now = t0 + secs(21);
    h.ivr.handle_timeout(h.now);
    assert!(h.drain().is_empty(), "max duration does not cut a booking");
    assert_eq!(
        h.input(Input::BookingResult(BookingResult::Booked { position: 2 })),
        [
            ev(Event::CallbackBooked { position: 2 }),
            ev(Event::Closing(CloseReason::Completed)),
            booked_playlist(2),
        ]
    );
}

#[test]
fn unstoppable_announcements() {
    let cfg = Config {
        announcements_interruptible: false,
        ..Config::default()
    };
    let mut h = H::new(&cfg, None, &[ann(A1, true)]);
    h.input(Input::Start);
    assert_eq!(h.key(D1), [dtmf(D1)]);
    assert_eq!(
        h.finished(),
        [
            ev(Event::AnnouncementCompleted {
                handle: A1,
                interrupted: false
            }),
            play(&[MENU_CB]),
        ]
    );
    // The menu itself is interruptible.
    assert_eq!(h.key(D1), [dtmf(D1), play(&[Prompt::EnterNumber])]);
}

#[test]
fn backlog_is_refused_not_lost() {
    let mut h = H::new(&Config::default(), None, &[]);
    h.ivr.handle_input(h.now, Input::Start).unwrap();
    let mut refused = false;
    for _ in 0..20 {
        match h.ivr.handle_input(h.now, Input::Digit(D7)) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e, Error::Backlog);
                refused = true;
                break;
            }
        }
    }
    assert!(refused);
    assert!(h.drain().len() <= IVR_MAX_PENDING_OUTPUTS);
    assert!(h.ivr.handle_input(h.now, Input::Digit(D7)).is_ok());
}

#[test]
fn error_display() {
    use alloc::string::ToString;
    assert_eq!(
        Error::Unexpected.to_string(),
        "input not expected in this IVR state"
    );
}

// ---- properties -----------------------------------------------------------------------

mod props {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        In(Input),
        /// A valid number keyed in one burst, then `#`.
        KeyNumber,
        Wait(u64),
        Fire,
    }

    /// Keys weighted toward the ones that move the flow (1, 2, 0, #, *).
    fn digit() -> impl Strategy<Value = Digit> {
        prop_oneof![
            4 => Just(D1),
            1 => Just(D2),
            1 => Just(D0),
            1 => Just(Hash),
            1 => Just(Star),
            2 => (0u8..16).prop_map(|c| Digit::from_event_code(c).unwrap()),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => digit().prop_map(|d| Op::In(Input::Digit(d))),
            1 => Just(Op::KeyNumber),
            4 => Just(Op::In(Input::PlaybackFinished)),
            2 => (0u16..50).prop_map(|p| Op::In(Input::BookingResult(BookingResult::Booked { position: p }))),
            1 => (0u16..50).prop_map(|p| Op::In(Input::BookingResult(BookingResult::AlreadyBooked { position: p }))),
            2 => Just(Op::In(Input::BookingResult(BookingResult::QueueFull))),
            2 => Just(Op::In(Input::BookingResult(BookingResult::Failed))),
            1 => any::<bool>().prop_map(|b| Op::In(Input::TransferResult(b))),
            1 => Just(Op::In(Input::RemoteHangup)),
            1 => Just(Op::In(Input::Start)),
            2 => (0u64..8_000).prop_map(Op::Wait),
            2 => Just(Op::Fire),
        ]
    }

    /// Checks invariants over the outputs of one step.
    struct Checker {
        booking_outstanding: bool,
        booked_allowed: bool,
        hung_up: bool,
    }

    impl Checker {
        fn input(&mut self, i: &Input, accepted: bool) {
            if accepted {
                if let Input::BookingResult(r) = i {
                    assert!(self.booking_outstanding, "result accepted with no booking");
                    self.booking_outstanding = false;
                    self.booked_allowed = matches!(
                        r,
                        BookingResult::Booked { .. } | BookingResult::AlreadyBooked { .. }
                    );
                }
            }
        }

        fn outputs(&mut self, outs: &[Output]) {
            for o in outs {
                assert!(
                    !self.hung_up || matches!(o, Output::Event(_)),
                    "{o:?} after hangup"
                );
                match o {
                    Output::BookCallback { .. } => {
                        assert!(!self.booking_outstanding, "two bookings without a result");
                        self.booking_outstanding = true;
                    }
                    Output::Play(p)
                        if p.iter()
                            .any(|x| matches!(x, Prompt::Booked | Prompt::AlreadyBooked)) =>
                    {
                        assert!(self.booked_allowed, "booked said without a result");
                        self.booked_allowed = false;
                    }
                    Output::Hangup => self.hung_up = true,
                    _ => {}
                }
            }
        }
    }

    fn run(cfg: &Config, caller: Option<&str>, anns: &[AnnouncementInfo], ops: &[Op]) {
        let mut ivr = Ivr::new(cfg, caller.map(num), anns);
        let mut now = Instant::from_millis(5);
        let mut chk = Checker {
            booking_outstanding: false,
            booked_allowed: false,
            hung_up: false,
        };
        let drain = |ivr: &mut Ivr| {
            let mut v = StdVec::new();
            while let Some(o) = ivr.poll_output() {
                v.push(o);
            }
            v
        };
        ivr.handle_input(now, Input::Start).unwrap();
        chk.outputs(&drain(&mut ivr));
        for op in ops {
            match op {
                Op::In(i) => {
                    let ok = ivr.handle_input(now, *i).is_ok();
                    chk.input(i, ok);
                    let outs = drain(&mut ivr);
                    if !ok {
                        assert!(outs.is_empty(), "an error changed state: {outs:?}");
                    }
                    chk.outputs(&outs);
                }
                Op::KeyNumber => {
                    for c in "12155550199#".chars() {
                        let i = Input::Digit(Digit::from_char(c).unwrap());
                        let ok = ivr.handle_input(now, i).is_ok();
                        chk.input(&i, ok);
                        chk.outputs(&drain(&mut ivr));
                    }
                }
                Op::Wait(ms) => {
                    now += Duration::from_millis(*ms);
                    ivr.handle_timeout(now);
                    chk.outputs(&drain(&mut ivr));
                }
                Op::Fire => {
                    if let Some(t) = ivr.poll_timeout() {
                        now = now.max(t);
                        ivr.handle_timeout(now);
                        chk.outputs(&drain(&mut ivr));
                    }
                }
            }
        }
        // Inputs stop: only timers drive it now. It must end within bounded steps.
        for _ in 0..50 {
            if ivr.is_ended() {
                break;
            }
            let t = ivr.poll_timeout().expect("a live IVR always has a timer");
            assert!(t != Instant::MAX);
            now = now.max(t);
            ivr.handle_timeout(now);
            chk.outputs(&drain(&mut ivr));
        }
        assert!(ivr.is_ended(), "IVR did not end once inputs stopped");
        assert!(ivr.poll_timeout().is_none());
    }

    proptest! {
        #[test]
        fn invariants_hold(
            ops in proptest::collection::vec(op(), 0..80),
            caller in prop_oneof![Just(None), Just(Some("+12155550123")), Just(Some("+123"))],
            n_anns in 0usize..3,
            offer in any::<bool>(),
            transfer in any::<bool>(),
            interruptible in any::<bool>(),
        ) {
            let cfg = Config {
                transfer_available: transfer,
                announcements_interruptible: interruptible,
                max_call_duration: Duration::from_secs(120),
                ..Config::default()
            };
            let anns: StdVec<_> = (0..n_anns)
                .map(|i| ann(AnnouncementHandle(i as u32), offer))
                .collect();
            run(&cfg, caller, &anns, &ops);
        }
    }
}

// ---- callback windows ---------------------------------------------------------------------

fn w(a: i64, b: i64) -> Window {
    Window {
        not_before: crate::time::UnixMillis(a),
        not_after: crate::time::UnixMillis(b),
    }
}

fn three_offers() -> [Offer; 3] {
    [
        Offer::Asap(w(0, 10)),
        Offer::Slot {
            day: DayRef::Today,
            part: DayPart::Evening,
            from: Clock(18 * 60),
            to: Clock(20 * 60),
            window: w(20, 30),
        },
        Offer::Slot {
            day: DayRef::Tomorrow,
            part: DayPart::Morning,
            from: Clock(8 * 60),
            to: Clock(12 * 60),
            window: w(40, 50),
        },
    ]
}

fn offers_playlist(lead: Option<Prompt>) -> Output {
    let mut v: StdVec<Prompt> = lead.into_iter().collect();
    v.extend([
        Prompt::WindowQuestion,
        Prompt::WindowFor,
        Prompt::WindowAsap,
        Prompt::WindowPress,
        Prompt::Digit(D1),
        Prompt::WindowFor,
        Prompt::DayPart(DayRef::Today, DayPart::Evening),
        Prompt::WindowBetween,
        Prompt::Clock(Clock(18 * 60)),
        Prompt::WindowAnd,
        Prompt::Clock(Clock(20 * 60)),
        Prompt::WindowPress,
        Prompt::Digit(D2),
        Prompt::WindowFor,
        Prompt::DayPart(DayRef::Tomorrow, DayPart::Morning),
        Prompt::WindowBetween,
        Prompt::Clock(Clock(8 * 60)),
        Prompt::WindowAnd,
        Prompt::Clock(Clock(12 * 60)),
        Prompt::WindowPress,
        Prompt::Digit(D3),
    ]);
    play(&v)
}

fn windows_cfg() -> Config {
    Config {
        offer_windows: true,
        ..Config::default()
    }
}

/// Menu 1, confirm 1: the IVR asks for the offers.
fn to_offers(h: &mut H) {
    h.play_to_menu();
    h.key(D1);
    assert_eq!(
        h.key(D1),
        [dtmf(D1), Output::StopPlayback, Output::OfferWindows]
    );
}

#[test]
fn the_caller_picks_tomorrow_morning() {
    let mut h = H::new(&windows_cfg(), Some("+12155550123"), &[ann(A1, true)]);
    to_offers(&mut h);
    h.ivr.offer_windows(h.now, &three_offers()).unwrap();
    assert_eq!(h.drain(), [offers_playlist(None)]);
    // Barge-in: 3 books the third offer's window.
    assert_eq!(
        h.key(D3),
        [
            dtmf(D3),
            Output::BookCallback {
                number: num("+12155550123"),
                window: Some(w(40, 50)),
            },
            ev(Event::CallbackRequested {
                number: num("+12155550123")
            }),
            play(&[Prompt::PleaseWait]),
        ]
    );
}

#[test]
fn no_key_books_the_first_offer_and_a_bad_key_reprompts() {
    let mut h = H::new(&windows_cfg(), Some("+12155550123"), &[ann(A1, true)]);
    to_offers(&mut h);
    h.ivr.offer_windows(h.now, &three_offers()).unwrap();
    h.drain();
    // 4 is not offered.
    assert_eq!(
        h.key(D4),
        [
            dtmf(D4),
            ev(Event::InvalidInput),
            offers_playlist(Some(Prompt::InvalidChoice)),
        ]
    );
    // The no-input timer starts when the prompt ended.
    let before = h.ivr.poll_timeout();
    assert_ne!(before, Some(h.now + secs(5)));
    h.finished();
    assert_eq!(h.ivr.poll_timeout(), Some(h.now + secs(5)));
    let out = h.fire();
    assert_eq!(
        out[0],
        Output::BookCallback {
            number: num("+12155550123"),
            window: Some(w(0, 10)),
        }
    );
}

#[test]
fn one_offer_books_at_once_and_no_answer_books_asap() {
    let mut h = H::new(&windows_cfg(), Some("+12155550123"), &[ann(A1, true)]);
    to_offers(&mut h);
    h.ivr.offer_windows(h.now, &three_offers()[..1]).unwrap();
    assert_eq!(
        h.drain()[0],
        Output::BookCallback {
            number: num("+12155550123"),
            window: Some(w(0, 10)),
        }
    );
    // Offers never handed over: after booking_timeout, book as soon as possible.
    let mut h = H::new(&windows_cfg(), Some("+12155550123"), &[ann(A1, true)]);
    to_offers(&mut h);
    assert_eq!(
        h.ivr
            .offer_windows(h.now, &[])
            .map(|()| !h.drain().is_empty()),
        Ok(true)
    );
    let mut h = H::new(&windows_cfg(), Some("+12155550123"), &[ann(A1, true)]);
    to_offers(&mut h);
    let out = h.fire();
    assert_eq!(
        out[0],
        Output::BookCallback {
            number: num("+12155550123"),
            window: None,
        }
    );
    // Offers that were not asked for are refused.
    assert_eq!(
        h.ivr.offer_windows(h.now, &three_offers()),
        Err(Error::Unexpected)
    );
}

// ---- languages -------------------------------------------------------------------------

fn two_languages() -> Config {
    Config {
        languages: 2,
        ..Config::default()
    }
}

#[test]
fn language_keys() {
    assert_eq!(language_key(0), Some(Star));
    assert_eq!(language_key(1), Some(D9));
    assert_eq!(language_key(3), Some(D7));
    assert_eq!(language_key(4), None);
    assert_eq!(key_language(D9, 2), Some(1));
    assert_eq!(
        key_language(D8, 2),
        None,
        "only configured languages have keys"
    );
    assert_eq!(key_language(D9, 1), None);
    assert_eq!(
        key_language(Star, 1),
        None,
        "no language keys with one language"
    );
}

#[test]
fn one_language_has_no_offer_and_9_is_a_menu_choice() {
    let mut h = H::new(&Config::default(), None, &[ann(A1, true)]);
    let out = h.input(Input::Start);
    assert_eq!(out[0], play(&[Prompt::Announcement(A1)]));
    let out = h.key(D9);
    assert!(!out.iter().any(|o| matches!(o, Output::Language(_))));
    assert!(
        out.contains(&play(&[Prompt::InvalidChoice, MENU_CB])),
        "{out:?}"
    );
}

#[test]
fn language_key_during_an_announcement_restarts_it_in_that_language() {
    let mut h = H::new(&two_languages(), None, &[ann(A1, true)]);
    let out = h.input(Input::Start);
    assert_eq!(
        out,
        [
            play(&[Prompt::LanguageOffer(1), Prompt::Announcement(A1)]),
            ev(Event::AnnouncementStarted(A1)),
        ]
    );
    let out = h.key(D9);
    assert_eq!(
        out,
        [
            dtmf(D9),
            ev(Event::AnnouncementCompleted {
                handle: A1,
                interrupted: true
            }),
            Output::StopPlayback,
            Output::Language(1),
        ]
    );
    assert_eq!(h.ivr.language(), 1);
    // Nothing plays until the shell hands over the announcements of the new language.
    assert_eq!(
        h.ivr.handle_input(h.now, Input::PlaybackFinished),
        Err(Error::Unexpected)
    );
    h.ivr.set_announcements(&[ann(A2, true)]).unwrap();
    let out = h.drain();
    assert_eq!(
        out,
        [
            play(&[Prompt::LanguageOffer(0), Prompt::Announcement(A2)]),
            ev(Event::AnnouncementStarted(A2)),
        ]
    );
    assert_eq!(
        h.ivr.set_announcements(&[]),
        Err(Error::Unexpected),
        "only once"
    );
    // The rest of the flow is unchanged, in the new language.
    let out = h.finished();
    assert!(out.contains(&play(&[MENU_CB])), "{out:?}");
    let out = h.key(D1);
    assert!(out.contains(&play(&[Prompt::EnterNumber])), "{out:?}");
}

#[test]
fn language_key_at_the_menu_and_back_to_the_default() {
    let mut h = H::new(&two_languages(), None, &[]);
    let out = h.input(Input::Start);
    assert_eq!(out, [play(&[Prompt::LanguageOffer(1), Prompt::Greeting])]);
    let out = h.finished();
    assert_eq!(out, [play(&[MENU_CB])]);
    let out = h.key(D9);
    assert_eq!(out, [dtmf(D9), Output::StopPlayback, Output::Language(1)]);
    h.ivr.set_announcements(&[]).unwrap();
    assert_eq!(
        h.drain(),
        [play(&[Prompt::LanguageOffer(0), Prompt::Greeting])]
    );
    // `*` is the default language's key.
    let out = h.key(Star);
    assert_eq!(out, [dtmf(Star), Output::StopPlayback, Output::Language(0)]);
    h.ivr.set_announcements(&[]).unwrap();
    assert_eq!(
        h.drain(),
        [play(&[Prompt::LanguageOffer(1), Prompt::Greeting])]
    );
}

#[test]
fn a_call_can_start_in_another_language() {
    let mut h = H::new(&two_languages(), None, &[]);
    h.ivr.set_language(1);
    assert_eq!(h.ivr.language(), 1);
    let out = h.input(Input::Start);
    assert_eq!(out, [play(&[Prompt::LanguageOffer(0), Prompt::Greeting])]);
    // Out of range, or after the start: ignored.
    h.ivr.set_language(0);
    assert_eq!(h.ivr.language(), 1);
    let mut h2 = H::new(&two_languages(), None, &[]);
    h2.ivr.set_language(3);
    assert_eq!(h2.ivr.language(), 0);
}

#[test]
fn language_keys_are_digits_in_the_callback_steps() {
    let mut h = H::new(&two_languages(), None, &[]);
    h.play_to_menu();
    h.key(D1);
    // Keying a number: 9 is a digit of it.
    let out = h.key(D9);
    assert_eq!(out, [dtmf(D9), Output::StopPlayback]);
    let mut h = H::new(&two_languages(), Some("+12155550123"), &[]);
    h.play_to_menu();
    h.key(D1);
    let out = h.key(D9);
    assert!(!out.iter().any(|o| matches!(o, Output::Language(_))));
    assert!(out.contains(&Output::Event(Event::InvalidInput)), "{out:?}");
}

#[test]
fn language_key_works_in_announcements_that_are_not_interruptible() {
    let cfg = Config {
        announcements_interruptible: false,
        ..two_languages()
    };
    let mut h = H::new(&cfg, None, &[ann(A1, true)]);
    h.input(Input::Start);
    assert_eq!(h.key(D1), [dtmf(D1)], "ignored");
    let out = h.key(D9);
    assert!(out.contains(&Output::Language(1)), "{out:?}");
}

#[test]
fn a_withdrawn_callback_stays_withdrawn_in_the_new_language() {
    let cfg = Config {
        transfer_available: true,
        ..two_languages()
    };
    let mut h = H::new(&cfg, Some("+12155550123"), &[ann(A1, true)]);
    h.play_to_menu();
    h.key(D1);
    h.key(D1);
    let out = h.input(Input::BookingResult(BookingResult::Failed));
    let menu_no_cb = Prompt::Menu {
        callback: false,
        transfer: true,
    };
    assert!(
        out.contains(&play(&[Prompt::CouldNotBook, menu_no_cb])),
        "{out:?}"
    );
    h.finished();
    h.key(D9);
    h.ivr.set_announcements(&[ann(A2, true)]).unwrap();
    h.drain();
    let out = h.finished();
    assert!(out.contains(&play(&[menu_no_cb])), "{out:?}");
    assert!(!h.ivr.callback_offered());
}
