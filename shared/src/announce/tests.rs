// Tests may use std (house rule); the alloc-vs-std lint is about library code.
#![allow(clippy::std_instead_of_alloc)]

extern crate std;

use super::*;
use proptest::prelude::*;
use std::vec::Vec as StdVec;

const T0: UnixMillis = UnixMillis(1_795_413_600_000); // 2026-11-23T06:00:00Z
const HOUR: i64 = 3_600_000;

fn at(offset_ms: i64) -> UnixMillis {
    UnixMillis(T0.0 + offset_ms)
}

fn id(s: &str) -> AnnouncementId {
    AnnouncementId::new(s).unwrap()
}

fn num(s: &str) -> PhoneNumber {
    PhoneNumber::parse(s).unwrap()
}

fn sha(b: u8) -> Sha256 {
    [b; 32]
}

fn audio_ann(name: &str, version: u32, audio: u8) -> Announcement {
    let mut a = Announcement::new(id(name), version);
    a.audio = Some(sha(audio));
    a
}

fn drain(set: &mut AnnouncementSet) -> StdVec<Event> {
    core::iter::from_fn(|| set.poll_output()).collect()
}

#[test]
fn transcript_pending_then_active_then_replaced_then_withdrawn() {
    let mut set = AnnouncementSet::new();
    let a1 = audio_ann("outage-phl", 1, 1);
    set.handle_input(T0, Input::Upsert(a1)).unwrap();
    let h1 = set.current(&id("outage-phl")).unwrap();
    assert_eq!(
        drain(&mut set),
        [Event::Pending {
            handle: h1,
            id: id("outage-phl"),
            version: 1
        }]
    );
    assert_eq!(set.state(h1), Some(State::Pending));
    assert!(set.select(T0, "phl", None, None).is_empty());

    set.handle_input(T0, Input::AudioAvailable(sha(1))).unwrap();
    assert_eq!(
        drain(&mut set),
        [Event::Activated {
            handle: h1,
            id: id("outage-phl"),
            version: 1
        }]
    );
    assert_eq!(set.select(T0, "phl", None, None).as_slice(), [h1]);
    assert_eq!(set.media(h1), Some(Media::Audio(sha(1))));

    // Version 2 with the same (cached) audio replaces version 1 at once.
    set.handle_input(at(1), Input::Upsert(audio_ann("outage-phl", 2, 1)))
        .unwrap();
    let h2 = set.current(&id("outage-phl")).unwrap();
    assert_ne!(h1, h2);
    assert_eq!(
        drain(&mut set),
        [
            Event::Replaced {
                handle: h2,
                id: id("outage-phl"),
                old_version: 1,
                new_version: 2
            },
            Event::Activated {
                handle: h2,
                id: id("outage-phl"),
                version: 2
            },
        ]
    );
    // A call still playing version 1 keeps a valid reference.
    assert_eq!(set.get(h1).map(|a| a.version), Some(1));
    assert_eq!(set.media(h1), Some(Media::Audio(sha(1))));
    assert_eq!(set.state(h1), None);

    set.handle_input(at(2), Input::Withdraw(id("outage-phl")))
        .unwrap();
    assert_eq!(
        drain(&mut set),
        [Event::Withdrawn {
            id: id("outage-phl"),
            version: 2
        }]
    );
    assert!(set.is_empty());
    assert_eq!(set.get(h2).map(|a| a.version), Some(2));
}

#[test]
fn older_and_conflicting_versions_are_rejected() {
    let mut set = AnnouncementSet::new();
    set.handle_input(T0, Input::Upsert(audio_ann("a", 3, 1)))
        .unwrap();
    let h = set.current(&id("a")).unwrap();
    let _ = drain(&mut set);

    assert_eq!(
        set.handle_input(T0, Input::Upsert(audio_ann("a", 2, 9))),
        Err(Error::OlderVersion { current: 3 })
    );
    assert_eq!(
        drain(&mut set),
        [Event::Rejected {
            id: id("a"),
            version: 2,
            reason: Error::OlderVersion { current: 3 }
        }]
    );
    // Same version, same content: silently a no-op.
    assert_eq!(
        set.handle_input(T0, Input::Upsert(audio_ann("a", 3, 1))),
        Ok(())
    );
    assert!(drain(&mut set).is_empty());
    assert_eq!(set.current(&id("a")), Some(h));
    // Same version, other content: rejected.
    assert_eq!(
        set.handle_input(T0, Input::Upsert(audio_ann("a", 3, 2))),
        Err(Error::SameVersionChanged { current: 3 })
    );
    assert_eq!(set.get(h).unwrap().audio, Some(sha(1)));
}

#[test]
fn invalid_payloads_are_rejected() {
    let mut set = AnnouncementSet::new();
    let empty = Announcement::new(id("x"), 1);
    assert_eq!(
        set.handle_input(T0, Input::Upsert(empty)),
        Err(Error::NoContent)
    );
    let mut bad = audio_ann("x", 1, 1);
    bad.valid_from = Some(at(HOUR));
    bad.valid_until = Some(at(HOUR));
    assert_eq!(
        set.handle_input(T0, Input::Upsert(bad)),
        Err(Error::EmptyWindow)
    );
    assert!(set.is_empty());
}

#[test]
fn window_drives_scheduled_active_expired_on_virtual_wall_clock() {
    let mut set = AnnouncementSet::new();
    set.handle_input(T0, Input::AudioAvailable(sha(7))).unwrap();
    let mut a = audio_ann("night", 1, 7);
    a.valid_from = Some(at(HOUR));
    a.valid_until = Some(at(3 * HOUR));
    set.handle_input(T0, Input::Upsert(a)).unwrap();
    let h = set.current(&id("night")).unwrap();
    let ev = |kind: fn(AnnouncementHandle, AnnouncementId, u32) -> Event| kind(h, id("night"), 1);
    assert_eq!(
        drain(&mut set),
        [ev(|handle, id, version| Event::Scheduled {
            handle,
            id,
            version
        })]
    );
    assert_eq!(set.poll_timeout(), Some(at(HOUR)));
    assert!(set.select(T0, "phl", None, None).is_empty());

    // An early timer changes nothing.
    set.handle_timeout(at(HOUR - 1));
    assert!(drain(&mut set).is_empty());

    set.handle_timeout(at(HOUR));
    assert_eq!(
        drain(&mut set),
        [ev(|handle, id, version| Event::Activated {
            handle,
            id,
            version
        })]
    );
    assert_eq!(set.poll_timeout(), Some(at(3 * HOUR)));
    assert_eq!(set.select(at(HOUR), "phl", None, None).as_slice(), [h]);

    // select() uses its own now even when the timer has not fired yet.
    assert!(set.select(at(3 * HOUR), "phl", None, None).is_empty());

    set.handle_timeout(at(3 * HOUR + 5));
    assert_eq!(
        drain(&mut set),
        [ev(|handle, id, version| Event::Expired {
            handle,
            id,
            version
        })]
    );
    assert_eq!(set.state(h), Some(State::Expired));
    assert_eq!(set.poll_timeout(), None);
    assert_eq!(State::Expired.as_str(), "expired");
}

#[test]
fn text_only_needs_a_speech_engine() {
    let mut set = AnnouncementSet::new();
    let mut a = Announcement::new(id("t"), 1);
    a.has_text = true;
    set.handle_input(T0, Input::Upsert(a)).unwrap();
    let h = set.current(&id("t")).unwrap();
    assert_eq!(set.state(h), Some(State::Unplayable));
    assert_eq!(set.media(h), None);
    let _ = drain(&mut set);
    set.handle_input(T0, Input::TextRenderable(true)).unwrap();
    assert_eq!(
        drain(&mut set),
        [Event::Activated {
            handle: h,
            id: id("t"),
            version: 1
        }]
    );
    assert_eq!(set.media(h), Some(Media::Text));

    // Audio plus text: speaks the text until the audio arrives, then plays the audio.
    let mut both = audio_ann("b", 1, 4);
    both.has_text = true;
    set.handle_input(T0, Input::Upsert(both)).unwrap();
    let hb = set.current(&id("b")).unwrap();
    assert_eq!(set.media(hb), Some(Media::Text));
    set.handle_input(T0, Input::AudioAvailable(sha(4))).unwrap();
    assert_eq!(set.media(hb), Some(Media::Audio(sha(4))));
    // Audio removed and speech engine gone: pending again.
    set.handle_input(T0, Input::TextRenderable(false)).unwrap();
    set.handle_input(T0, Input::AudioRemoved(sha(4))).unwrap();
    assert_eq!(set.state(hb), Some(State::Pending));
    assert_eq!(set.state(h), Some(State::Unplayable));
}

#[test]
fn scope_matching() {
    let mut s = Scope::default();
    assert!(s.matches("phl", None, None));
    s.sites.push(Site::try_from("phl").unwrap()).unwrap();
    s.dialled.push(num("+18005550100")).unwrap();
    s.caller_prefixes.push(num("+1215")).unwrap();
    let (d, c) = (num("+18005550100"), num("+12155550123"));
    assert!(s.matches("phl", Some(&d), Some(&c)));
    assert!(!s.matches("nyc", Some(&d), Some(&c)));
    assert!(!s.matches("phl", Some(&num("+18005550199")), Some(&c)));
    assert!(!s.matches("phl", Some(&d), Some(&num("+12165550123"))));
    // Anonymous caller or unknown dialled number only match empty lists.
    assert!(!s.matches("phl", Some(&d), None));
    assert!(!s.matches("phl", None, Some(&c)));
}

#[test]
fn select_orders_by_priority_then_newest_start_then_id_and_limits() {
    let mut set = AnnouncementSet::new();
    set.handle_input(T0, Input::AudioAvailable(sha(1))).unwrap();
    let mk = |name: &str, prio: i32, from: Option<i64>| {
        let mut a = audio_ann(name, 1, 1);
        a.priority = prio;
        a.valid_from = from.map(at);
        a
    };
    for a in [
        mk("low", 1, None),
        mk("high-old", 10, Some(-2 * HOUR)),
        mk("high-new", 10, Some(-HOUR)),
        mk("mid-b", 5, None),
        mk("mid-a", 5, None),
        mk("neg", -3, None),
    ] {
        set.handle_input(T0, Input::Upsert(a)).unwrap();
    }
    let names: StdVec<_> = set
        .select(T0, "phl", None, None)
        .iter()
        .map(|h| set.get(*h).unwrap().id.as_str())
        .collect();
    assert_eq!(names, ["high-new", "high-old", "mid-a", "mid-b"]);
}

#[test]
fn full_set_prunes_expired_first_and_never_evicts_live_ones() {
    let mut set = AnnouncementSet::new();
    for i in 0..MAX_ANNOUNCEMENTS {
        let mut a = audio_ann(&std::format!("a{i}"), 1, 1);
        if i == 3 {
            a.valid_until = Some(at(HOUR));
        }
        set.handle_input(T0, Input::Upsert(a)).unwrap();
    }
    let _ = drain(&mut set);
    assert_eq!(
        set.handle_input(T0, Input::Upsert(audio_ann("late", 1, 1))),
        Err(Error::Full)
    );
    assert_eq!(set.len(), MAX_ANNOUNCEMENTS);
    let _ = drain(&mut set);
    // Once a3 has expired, it makes room.
    set.handle_input(at(HOUR), Input::Upsert(audio_ann("late", 1, 1)))
        .unwrap();
    let evs = drain(&mut set);
    assert!(evs.contains(&Event::Pruned {
        id: id("a3"),
        version: 1
    }));
    assert!(set.current(&id("late")).is_some());
    assert!(set.current(&id("a3")).is_none());
    assert_eq!(set.len(), MAX_ANNOUNCEMENTS);
}

#[test]
fn old_retired_handles_become_none_never_another_announcement() {
    let mut set = AnnouncementSet::new();
    let mut handles = StdVec::new();
    for v in 1..=(ANNOUNCE_RETIRED as u32 + 3) {
        set.handle_input(T0, Input::Upsert(audio_ann("a", v, 1)))
            .unwrap();
        handles.push(set.current(&id("a")).unwrap());
    }
    let mut unique = handles.clone();
    unique.dedup();
    assert_eq!(unique.len(), handles.len());
    assert!(set.get(handles[0]).is_none());
    for (v, h) in handles.iter().enumerate() {
        if let Some(a) = set.get(*h) {
            assert_eq!(a.version, v as u32 + 1);
        }
    }
}

#[test]
fn memory_budget() {
    let one = core::mem::size_of::<Announcement>();
    let set = core::mem::size_of::<AnnouncementSet>();
    std::println!("Announcement: {one} B, AnnouncementSet: {set} B");
    assert!(one < 1024, "{one}");
    assert!(set < 64 * 1024, "{set}");
}

fn arb_ann() -> impl Strategy<Value = Announcement> {
    (
        0usize..3,
        0u32..6,
        -3i32..4,
        0u8..3,
        proptest::option::of(-3i64..3),
        proptest::option::of(1i64..4),
    )
        .prop_map(|(name, version, priority, audio, from, len)| {
            let mut a = audio_ann(["a", "b", "c"][name], version, audio);
            a.priority = priority;
            a.valid_from = from.map(|f| at(f * HOUR));
            a.valid_until = len.map(|l| at((from.unwrap_or(0) + l) * HOUR));
            a
        })
}

fn arb_scoped() -> impl Strategy<Value = Announcement> {
    (
        0usize..12,
        -5i32..5,
        0u8..2,
        proptest::option::of(-3i64..3),
        proptest::option::of(-2i64..4),
        proptest::collection::vec(0usize..2, 0..2),
        proptest::collection::vec(0usize..2, 0..2),
        proptest::collection::vec(0usize..2, 0..2),
    )
        .prop_map(
            |(name, priority, audio, from, until, sites, dialled, prefixes)| {
                let mut a = audio_ann(&std::format!("n{name}"), 1, audio);
                a.priority = priority;
                a.valid_from = from.map(|f| at(f * HOUR));
                a.valid_until = until.map(|u| at(u * HOUR));
                for s in sites {
                    let _ = a
                        .scope
                        .sites
                        .push(Site::try_from(["phl", "nyc"][s]).unwrap());
                }
                for d in dialled {
                    let _ = a
                        .scope
                        .dialled
                        .push(num(["+18005550100", "+18005550111"][d]));
                }
                for p in prefixes {
                    let _ = a.scope.caller_prefixes.push(num(["+1215", "+44"][p]));
                }
                a
            },
        )
}

proptest! {
    /// Whatever the order of arrival, the stored version of each id is the highest valid
    /// version offered, and the first content offered with that version.
    #[test]
    fn older_version_never_replaces_newer(
        anns in proptest::collection::vec(arb_ann(), 1..40),
        nows in proptest::collection::vec(-4i64..8, 40),
    ) {
        let mut set = AnnouncementSet::new();
        set.handle_input(T0, Input::AudioAvailable(sha(1))).unwrap();
        let mut best: std::collections::BTreeMap<std::string::String, Announcement> =
            Default::default();
        for (a, n) in anns.into_iter().zip(nows) {
            let now = at(n * HOUR);
            let key = std::string::String::from(a.id.as_str());
            let res = set.handle_input(now, Input::Upsert(a.clone()));
            match best.get(&key) {
                Some(b) if b.version > a.version => {
                    prop_assert_eq!(res, Err(Error::OlderVersion { current: b.version }));
                }
                Some(b) if b.version == a.version && *b != a => {
                    prop_assert_eq!(res, Err(Error::SameVersionChanged { current: b.version }));
                }
                _ => {
                    prop_assert_eq!(res, Ok(()));
                    best.insert(key, a);
                }
            }
            for b in best.values() {
                let h = set.current(&b.id).unwrap();
                prop_assert_eq!(set.get(h), Some(b));
            }
            while set.poll_output().is_some() {}
        }
    }

    /// The selection is playable, in scope, sorted by the play order, within the limit, and
    /// contains every eligible announcement when they fit.
    #[test]
    fn select_is_sorted_scoped_and_bounded(
        anns in proptest::collection::vec(arb_scoped(), 0..16),
        now_h in -4i64..5,
        site in 0usize..2,
        dialled in proptest::option::of(0usize..3),
        caller in proptest::option::of(0usize..3),
    ) {
        let mut set = AnnouncementSet::new();
        set.handle_input(T0, Input::AudioAvailable(sha(1))).unwrap();
        for a in anns {
            let _ = set.handle_input(T0, Input::Upsert(a));
        }
        let now = at(now_h * HOUR);
        let site = ["phl", "nyc"][site];
        let d = dialled.map(|i| num(["+18005550100", "+18005550111", "+18005550122"][i]));
        let c = caller.map(|i| num(["+12155550123", "+442071234567", "+33123456789"][i]));
        let picked = set.select(now, site, d.as_ref(), c.as_ref());
        prop_assert!(picked.len() <= IVR_MAX_ANNOUNCEMENTS_PER_CALL);
        let eligible: StdVec<&Announcement> = set
            .iter()
            .map(|(_, a, _)| a)
            .filter(|a| {
                a.audio == Some(sha(1))
                    && a.window_state(now).is_none()
                    && a.scope.matches(site, d.as_ref(), c.as_ref())
            })
            .collect();
        prop_assert_eq!(picked.len(), eligible.len().min(IVR_MAX_ANNOUNCEMENTS_PER_CALL));
        let got: StdVec<&Announcement> = picked.iter().map(|h| set.get(*h).unwrap()).collect();
        for w in got.windows(2) {
            prop_assert_eq!(play_order(w[0], w[1]), Ordering::Less);
        }
        for g in &got {
            prop_assert!(eligible.contains(g));
        }
        // Nothing left out outranks the last picked one.
        if let Some(last) = got.last() {
            for e in &eligible {
                if !got.contains(e) {
                    prop_assert_eq!(play_order(last, e), Ordering::Less);
                }
            }
        }
    }

    /// A full set never panics and never drops a live announcement.
    #[test]
    fn full_never_evicts_live(names in proptest::collection::vec(0usize..64, 0..100)) {
        let mut set = AnnouncementSet::new();
        let mut accepted = std::collections::BTreeSet::new();
        for n in names {
            let name = std::format!("x{n}");
            match set.handle_input(T0, Input::Upsert(audio_ann(&name, 1, 1))) {
                Ok(()) => { accepted.insert(name); }
                Err(e) => prop_assert_eq!(e, Error::Full),
            }
            prop_assert!(set.len() <= MAX_ANNOUNCEMENTS);
            for a in &accepted {
                prop_assert!(set.current(&id(a)).is_some());
            }
            while set.poll_output().is_some() {}
        }
    }
}

#[test]
fn pending_replacement_keeps_the_playable_version_until_its_audio_arrives() {
    let mut set = AnnouncementSet::new();
    set.handle_input(T0, Input::AudioAvailable(sha(1))).unwrap();
    set.handle_input(T0, Input::Upsert(audio_ann("outage-phl", 1, 1)))
        .unwrap();
    let h1 = set.current(&id("outage-phl")).unwrap();
    assert_eq!(set.select(T0, "phl", None, None).as_slice(), [h1]);

    // Version 2 names audio that is not here yet: it is stored and reported pending, and
    // callers keep hearing version 1.
    set.handle_input(at(1), Input::Upsert(audio_ann("outage-phl", 2, 2)))
        .unwrap();
    let h2 = set.current(&id("outage-phl")).unwrap();
    assert_eq!(set.state(h2), Some(State::Pending));
    assert_eq!(
        set.iter()
            .map(|(_, a, s)| (a.version, s))
            .collect::<StdVec<_>>(),
        [(2, State::Pending)]
    );
    assert_eq!(set.select(at(2), "phl", None, None).as_slice(), [h1]);
    assert_eq!(set.get(h1).map(|a| a.version), Some(1));
    assert_eq!(set.media(h1), Some(Media::Audio(sha(1))));
    assert_eq!(set.fallback(&id("outage-phl")).map(|(h, _)| h), Some(h1));

    // A version 3 that is pending too keeps version 1 playing.
    set.handle_input(at(3), Input::Upsert(audio_ann("outage-phl", 3, 3)))
        .unwrap();
    let h3 = set.current(&id("outage-phl")).unwrap();
    assert_eq!(set.select(at(4), "phl", None, None).as_slice(), [h1]);

    // Its audio arrives: version 3 replaces version 1 for new calls.
    set.handle_input(at(5), Input::AudioAvailable(sha(3)))
        .unwrap();
    assert_eq!(set.state(h3), Some(State::Active));
    assert_eq!(set.select(at(6), "phl", None, None).as_slice(), [h3]);
    assert_eq!(set.fallback(&id("outage-phl")), None);

    // Only a replacement of a playable version leaves a fallback: version 4 replaces version 3
    // with other audio not here yet, version 3 plays; version 5 with cached audio plays at once.
    set.handle_input(at(7), Input::Upsert(audio_ann("outage-phl", 4, 4)))
        .unwrap();
    assert_eq!(set.select(at(8), "phl", None, None).as_slice(), [h3]);
    set.handle_input(at(9), Input::Upsert(audio_ann("outage-phl", 5, 1)))
        .unwrap();
    let h5 = set.current(&id("outage-phl")).unwrap();
    assert_eq!(set.select(at(10), "phl", None, None).as_slice(), [h5]);
    assert_eq!(set.fallback(&id("outage-phl")), None);
}

#[test]
fn fallback_ends_with_withdrawal_expiry_and_its_own_window() {
    let mut set = AnnouncementSet::new();
    set.handle_input(T0, Input::AudioAvailable(sha(1))).unwrap();
    let mut v1 = audio_ann("a", 1, 1);
    v1.valid_until = Some(at(HOUR));
    set.handle_input(T0, Input::Upsert(v1)).unwrap();
    let h1 = set.current(&id("a")).unwrap();
    set.handle_input(T0, Input::Upsert(audio_ann("a", 2, 2)))
        .unwrap();
    assert_eq!(set.select(at(1), "phl", None, None).as_slice(), [h1]);
    // Version 1's own window closes: it stops playing though version 2 is still pending.
    assert!(set.select(at(HOUR), "phl", None, None).is_empty());
    set.handle_timeout(at(HOUR));
    assert_eq!(set.fallback(&id("a")), None);

    // A withdrawal ends the fallback with the announcement.
    set.handle_input(at(HOUR), Input::Upsert(audio_ann("b", 1, 1)))
        .unwrap();
    let b1 = set.current(&id("b")).unwrap();
    set.handle_input(at(HOUR), Input::Upsert(audio_ann("b", 2, 2)))
        .unwrap();
    assert_eq!(set.select(at(HOUR), "phl", None, None).as_slice(), [b1]);
    set.handle_input(at(HOUR), Input::Withdraw(id("b")))
        .unwrap();
    assert!(set.select(at(HOUR), "phl", None, None).is_empty());
    assert_eq!(set.fallback(&id("b")), None);

    // The pending version's window closing ends the fallback too.
    set.handle_input(at(HOUR), Input::Upsert(audio_ann("c", 1, 1)))
        .unwrap();
    let mut c2 = audio_ann("c", 2, 2);
    c2.valid_until = Some(at(2 * HOUR));
    set.handle_input(at(HOUR), Input::Upsert(c2)).unwrap();
    assert_eq!(set.select(at(HOUR), "phl", None, None).len(), 1);
    assert!(set.select(at(2 * HOUR), "phl", None, None).is_empty());
    set.handle_timeout(at(2 * HOUR));
    assert_eq!(set.fallback(&id("c")), None);
}
