// Tests may use std (house rule); the alloc-vs-std lint is about library code.
#![allow(clippy::std_instead_of_alloc)]

extern crate std;

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::format;
use std::vec::Vec as StdVec;

const T0: UnixMillis = UnixMillis(1_795_413_600_000);
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

fn at(ms: i64) -> UnixMillis {
    UnixMillis(T0.0 + ms)
}

fn cid(n: u32) -> CallbackId {
    CallbackId::new(&format!("cb-{n}")).unwrap()
}

fn number(n: u32) -> PhoneNumber {
    PhoneNumber::parse(&format!("+1215555{:04}", n % 10_000)).unwrap()
}

fn req(n: u32, number_n: u32) -> Request {
    Request {
        id: cid(n),
        call_id: CallId(u64::from(n)),
        callback_number: number(number_n),
        caller: Some(number(number_n)),
        dialled: Some(PhoneNumber::parse("+18005550100").unwrap()),
        announcement: Some(AnnouncementId::new("outage-phl").unwrap()),
        window: Window::asap(UnixMillis(0), Duration::from_secs(86_400)),
        language: crate::announce::Language::try_from("en").unwrap(),
    }
}

fn drain(q: &mut CallbackQueue) -> StdVec<Output> {
    core::iter::from_fn(|| q.poll_output()).collect()
}

/// Requests, stores and syncs `n`, returning its position.
fn book(q: &mut CallbackQueue, now: UnixMillis, n: u32) -> u32 {
    q.request(now, req(n, n)).unwrap();
    let Booking::Booked { position } = q.stored(&cid(n), true).unwrap() else {
        panic!("not booked");
    };
    let _ = drain(q);
    position
}

#[test]
fn transcript_request_store_publish_accept_complete() {
    let mut q = CallbackQueue::default();
    let t = q.request(T0, req(1, 1)).unwrap();
    assert_eq!(
        t,
        Ticket {
            id: cid(1),
            position: 1
        }
    );
    // Not booked yet: no position, nothing published.
    assert_eq!(q.position(&cid(1)), None);
    assert_eq!(q.get(&cid(1)).unwrap().state, State::Requested);
    assert_eq!(drain(&mut q), [Output::Store { id: cid(1) }]);

    assert_eq!(q.stored(&cid(1), true), Ok(Booking::Booked { position: 1 }));
    assert_eq!(
        drain(&mut q),
        [Output::Publish {
            id: cid(1),
            position: 1
        }]
    );
    q.synced(&cid(1)).unwrap();
    assert_eq!(
        drain(&mut q),
        [Output::Update {
            id: cid(1),
            state: State::Synced
        }]
    );
    q.crm_state(&cid(1), CrmState::Accepted, at(MIN)).unwrap();
    q.crm_state(&cid(1), CrmState::Assigned, at(2 * MIN))
        .unwrap();
    // Two changes before a drain coalesce into one rewrite of the current record.
    assert_eq!(
        drain(&mut q),
        [Output::Update {
            id: cid(1),
            state: State::Assigned
        }]
    );
    assert_eq!(q.get(&cid(1)).unwrap().state_at, at(2 * MIN));
    // Assigned is no longer waiting.
    assert_eq!(q.position(&cid(1)), None);
    assert_eq!(
        q.crm_state(&cid(1), CrmState::Accepted, at(3 * MIN)),
        Err(QueueError::InvalidTransition {
            from: State::Assigned,
            to: State::Accepted
        })
    );
    q.crm_state(&cid(1), CrmState::Completed, at(4 * MIN))
        .unwrap();
    assert_eq!(
        drain(&mut q),
        [Output::Remove {
            id: cid(1),
            state: State::Completed
        }]
    );
    assert!(q.is_empty());
    assert_eq!(
        q.crm_state(&cid(1), CrmState::Completed, at(5 * MIN)),
        Err(QueueError::UnknownId)
    );
}

#[test]
fn failed_store_is_never_booked() {
    let mut q = CallbackQueue::default();
    q.request(T0, req(1, 1)).unwrap();
    let _ = drain(&mut q);
    assert_eq!(q.stored(&cid(1), false), Ok(Booking::NotBooked));
    assert!(q.get(&cid(1)).is_none());
    assert_eq!(
        drain(&mut q),
        [Output::Remove {
            id: cid(1),
            state: State::Requested
        }]
    );
    // The same number may try again.
    assert!(q.request(at(1), req(2, 1)).is_ok());
}

#[test]
fn crm_cannot_touch_an_unbooked_entry_and_store_is_answered_once() {
    let mut q = CallbackQueue::default();
    q.request(T0, req(1, 1)).unwrap();
    assert_eq!(
        q.crm_state(&cid(1), CrmState::Accepted, T0),
        Err(QueueError::InvalidTransition {
            from: State::Requested,
            to: State::Accepted
        })
    );
    assert!(q.synced(&cid(1)).is_err());
    q.stored(&cid(1), true).unwrap();
    assert!(matches!(
        q.stored(&cid(1), true),
        Err(QueueError::InvalidTransition { .. })
    ));
    // Accepted may skip Synced (a lost PUBACK), then the late PUBACK is a no-op.
    q.crm_state(&cid(1), CrmState::Accepted, T0).unwrap();
    q.synced(&cid(1)).unwrap();
    assert_eq!(q.get(&cid(1)).unwrap().state, State::Accepted);
    // Accepted before the publish was polled: nothing left to publish.
    assert_eq!(
        drain(&mut q),
        [
            Output::Store { id: cid(1) },
            Output::Update {
                id: cid(1),
                state: State::Accepted
            }
        ]
    );
}

#[test]
fn duplicates_within_window_name_the_existing_entry() {
    let mut q = CallbackQueue::default();
    book(&mut q, T0, 1);
    book(&mut q, T0, 2);
    let err = q.request(at(HOUR), req(3, 2)).unwrap_err();
    assert_eq!(
        err,
        QueueError::Duplicate {
            existing: cid(2),
            position: Some(2)
        }
    );
    assert_eq!(q.request(at(HOUR), req(1, 9)), Err(QueueError::IdInUse));
    // After the window, the same number may queue again.
    let cfg = Config {
        dedup_window: Duration::from_secs(3600),
        max_age: Duration::from_secs(48 * 3600),
    };
    let mut q = CallbackQueue::new(cfg);
    book(&mut q, T0, 1);
    assert!(q.request(at(HOUR - 1), req(2, 1)).is_err());
    assert!(q.request(at(HOUR), req(2, 1)).is_ok());
}

#[test]
fn positions_close_up_when_entries_leave() {
    let mut q = CallbackQueue::default();
    for n in 1..=4 {
        assert_eq!(book(&mut q, T0, n), n);
    }
    q.cancel(at(1), &cid(2)).unwrap();
    q.crm_state(&cid(1), CrmState::Assigned, at(1)).unwrap();
    let _ = drain(&mut q);
    assert_eq!(q.position(&cid(3)), Some(1));
    assert_eq!(q.position(&cid(4)), Some(2));
    assert_eq!(q.waiting(), 2);
    assert_eq!(q.len(), 3);
}

#[test]
fn expiry_on_virtual_wall_clock() {
    let mut q = CallbackQueue::default();
    book(&mut q, T0, 1);
    book(&mut q, at(HOUR), 2);
    q.request(at(HOUR), req(3, 3)).unwrap(); // still Requested: never expires locally
    let _ = drain(&mut q);
    assert_eq!(q.poll_timeout(), Some(at(24 * HOUR)));
    q.handle_timeout(at(24 * HOUR - 1));
    assert!(drain(&mut q).is_empty());
    q.handle_timeout(at(24 * HOUR));
    assert_eq!(
        drain(&mut q),
        [Output::Remove {
            id: cid(1),
            state: State::Expired
        }]
    );
    assert_eq!(q.poll_timeout(), Some(at(25 * HOUR)));
    assert_eq!(q.position(&cid(2)), Some(1));
}

#[test]
fn full_queue_refuses_without_panicking() {
    let mut q = CallbackQueue::default();
    for n in 0..CALLBACK_QUEUE_CAPACITY as u32 {
        q.request(T0, req(n, n)).unwrap();
    }
    assert_eq!(q.request(T0, req(9999, 9999)), Err(QueueError::Full));
    assert_eq!(q.len(), CALLBACK_QUEUE_CAPACITY);
}

#[test]
fn restore_rebuilds_in_order_without_duplicates() {
    let mut q = CallbackQueue::default();
    let mut disk: BTreeMap<std::string::String, Entry> = BTreeMap::new();
    let apply = |q: &mut CallbackQueue, disk: &mut BTreeMap<_, Entry>| {
        while let Some(out) = q.poll_output() {
            match out {
                Output::Store { id } | Output::Update { id, .. } => {
                    disk.insert(id.as_str().into(), q.get(&id).unwrap().clone());
                }
                Output::Publish { .. } => {}
                Output::Remove { id, .. } => {
                    disk.remove(id.as_str());
                }
            }
        }
    };
    q.request(at(2), req(2, 2)).unwrap();
    q.request(at(1), req(1, 1)).unwrap(); // a wall-clock step backwards
    q.request(at(3), req(3, 3)).unwrap();
    apply(&mut q, &mut disk);
    q.stored(&cid(2), true).unwrap();
    q.stored(&cid(1), true).unwrap();
    q.synced(&cid(1)).unwrap();
    q.stored(&cid(3), false).unwrap();
    apply(&mut q, &mut disk);
    // A record left in a final state (crash before its delete) and a duplicate record.
    let mut done = disk["cb-1"].clone();
    done.id = cid(7);
    done.state = State::Completed;
    let records: StdVec<Entry> = disk
        .values()
        .cloned()
        .chain([done, disk["cb-2"].clone()])
        .collect();

    let mut r = CallbackQueue::default();
    let report = r.restore(records.clone());
    assert_eq!(
        report,
        RestoreReport {
            restored: 2,
            duplicates: 1,
            finished: 1,
            overflow: 0
        }
    );
    let ids: StdVec<_> = r.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["cb-1", "cb-2"]);
    assert_eq!(r.get(&cid(2)).unwrap().state, State::Stored);
    assert_eq!(r.get(&cid(1)).unwrap().state, State::Synced);
    assert_eq!(
        drain(&mut r),
        [
            Output::Publish {
                id: cid(1),
                position: 1
            },
            Output::Remove {
                id: cid(7),
                state: State::Completed
            },
            Output::Publish {
                id: cid(2),
                position: 2
            },
        ]
    );
    // Restoring the same records again adds nothing.
    let again = r.restore(records);
    assert_eq!(again.restored, 0);
    assert_eq!(r.len(), 2);
    // Resync republishes what the CRM has not accepted.
    r.crm_state(&cid(1), CrmState::Accepted, at(5)).unwrap();
    let _ = drain(&mut r);
    r.resync();
    assert_eq!(
        drain(&mut r),
        [Output::Publish {
            id: cid(2),
            position: 2
        }]
    );
}

#[test]
fn memory_budget() {
    let e = core::mem::size_of::<Entry>();
    let q = core::mem::size_of::<CallbackQueue>();
    std::println!("Entry: {e} B, CallbackQueue: {q} B");
    assert!(e <= 384, "{e}");
    assert!(q < 96 * 1024, "{q}");
}

#[derive(Clone, Debug)]
enum Op {
    Request { n: u32, number: u32 },
    Store { n: u32, ok: bool },
    Sync { n: u32 },
    Crm { n: u32, state: u8 },
    Cancel { n: u32 },
    Advance { minutes: i64 },
    Resync,
    Restart,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0u32..600, 0u32..500).prop_map(|(n, number)| Op::Request { n, number }),
        5 => (0u32..400, proptest::bool::weighted(0.9)).prop_map(|(n, ok)| Op::Store { n, ok }),
        2 => (0u32..400).prop_map(|n| Op::Sync { n }),
        2 => (0u32..400, 0u8..4).prop_map(|(n, state)| Op::Crm { n, state }),
        1 => (0u32..400).prop_map(|n| Op::Cancel { n }),
        1 => (0i64..600).prop_map(|minutes| Op::Advance { minutes }),
        1 => Just(Op::Resync),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Positions are always 1..=n in request order, no id appears twice, the queue never
    /// exceeds its capacity, Full never panics, and a booked callback is never lost (across
    /// restarts from the records the shell wrote) unless it reached a final state.
    #[test]
    fn queue_invariants(ops in proptest::collection::vec(arb_op(), 1..1200)) {
        let cfg = Config { dedup_window: Duration::from_secs(3600), max_age: Duration::from_secs(6 * 3600) };
        let mut q = CallbackQueue::new(cfg);
        let mut now = T0;
        let mut disk: BTreeMap<std::string::String, Entry> = BTreeMap::new();
        let mut booked: BTreeSet<std::string::String> = BTreeSet::new();
        for op in ops {
            match op {
                Op::Request { n, number: k } => match q.request(now, req(n, k)) {
                    Ok(_) | Err(QueueError::IdInUse | QueueError::Full) => {}
                    Err(QueueError::Duplicate { existing, position }) => {
                        prop_assert_eq!(q.get(&existing).map(|e| e.callback_number.clone()), Some(number(k)));
                        prop_assert_eq!(q.position(&existing), position);
                    }
                    Err(e) => prop_assert!(false, "{e:?}"),
                },
                Op::Store { n, ok } => {
                    if let Ok(Booking::Booked { position }) = q.stored(&cid(n), ok) {
                        prop_assert_eq!(q.position(&cid(n)), Some(position));
                        booked.insert(cid(n).as_str().into());
                    }
                }
                Op::Sync { n } => { let _ = q.synced(&cid(n)); }
                Op::Crm { n, state } => {
                    let s = [CrmState::Accepted, CrmState::Assigned, CrmState::Completed, CrmState::Cancelled][usize::from(state)];
                    let _ = q.crm_state(&cid(n), s, now);
                }
                Op::Cancel { n } => { let _ = q.cancel(now, &cid(n)); }
                Op::Advance { minutes } => {
                    now = UnixMillis(now.0 + minutes * MIN);
                    if q.poll_timeout().is_some_and(|t| t <= now) {
                        q.handle_timeout(now);
                    }
                }
                Op::Resync => q.resync(),
                Op::Restart => {
                    q = CallbackQueue::new(cfg);
                    let report = q.restore(disk.values().cloned());
                    prop_assert_eq!(report.duplicates + report.overflow, 0);
                }
            }
            // The shell: write what it is told, before anything else.
            while let Some(out) = q.poll_output() {
                match out {
                    Output::Store { id } => {
                        prop_assert_eq!(q.get(&id).map(|e| e.state), Some(State::Requested));
                        disk.insert(id.as_str().into(), q.get(&id).unwrap().clone());
                    }
                    Output::Update { id, state } => {
                        prop_assert_eq!(q.get(&id).map(|e| e.state), Some(state));
                        disk.insert(id.as_str().into(), q.get(&id).unwrap().clone());
                    }
                    Output::Publish { id, position } => {
                        prop_assert!(q.get(&id).unwrap().state.is_booked());
                        prop_assert_eq!(q.position(&id), Some(position));
                    }
                    Output::Remove { id, state } => {
                        prop_assert!(q.get(&id).is_none());
                        if state.is_final() { booked.remove(id.as_str()); }
                        disk.remove(id.as_str());
                    }
                }
            }
            // Invariants.
            prop_assert!(q.len() <= CALLBACK_QUEUE_CAPACITY);
            let ids: BTreeSet<&str> = q.iter().map(|e| e.id.as_str()).collect();
            prop_assert_eq!(ids.len(), q.len());
            let positions: StdVec<u32> = q.iter().filter_map(|e| q.position(&e.id)).collect();
            let expect: StdVec<u32> = (1..=q.waiting()).collect();
            prop_assert_eq!(positions, expect);
            for b in &booked {
                let id = CallbackId::new(b).unwrap();
                prop_assert!(q.get(&id).is_some_and(|e| e.state.is_booked()), "lost {}", b);
            }
        }
    }
}

fn windowed(n: u32, not_before: i64, not_after: i64) -> Request {
    Request {
        window: Window::new(UnixMillis(not_before), UnixMillis(not_after)).unwrap(),
        ..req(n, n)
    }
}

fn store(q: &mut CallbackQueue, n: u32) -> u32 {
    let Booking::Booked { position } = q.stored(&cid(n), true).unwrap() else {
        panic!("not booked");
    };
    let _ = drain(q);
    position
}

#[test]
fn positions_count_only_the_same_window_or_earlier() {
    let mut q = CallbackQueue::default();
    let hour = 3_600_000;
    // Two for tomorrow morning, then one as soon as possible.
    q.request(T0, windowed(1, T0.0 + 20 * hour, T0.0 + 24 * hour))
        .unwrap();
    assert_eq!(store(&mut q, 1), 1);
    let t = q
        .request(T0, windowed(2, T0.0 + 20 * hour, T0.0 + 24 * hour))
        .unwrap();
    assert_eq!(t.position, 2);
    assert_eq!(store(&mut q, 2), 2);
    let t = q.request(T0, windowed(3, T0.0, T0.0 + 8 * hour)).unwrap();
    assert_eq!(t.position, 1, "nobody waits for an earlier window");
    assert_eq!(store(&mut q, 3), 1);
    assert_eq!(q.position(&cid(1)), Some(2));
    assert_eq!(q.position(&cid(2)), Some(3));
    // The CRM moves #2 to the day after: #1 is now ahead of nobody but #3.
    let later = Window::new(UnixMillis(T0.0 + 44 * hour), UnixMillis(T0.0 + 48 * hour)).unwrap();
    q.move_window(&cid(2), later).unwrap();
    assert_eq!(
        drain(&mut q),
        [Output::Update {
            id: cid(2),
            state: State::Stored
        }]
    );
    assert_eq!(q.get(&cid(2)).unwrap().window, later);
    assert_eq!(q.position(&cid(2)), Some(3));
    assert_eq!(q.position(&cid(1)), Some(2));
    // Moving to the same window writes nothing.
    q.move_window(&cid(2), later).unwrap();
    assert!(drain(&mut q).is_empty());
    assert_eq!(q.move_window(&cid(9), later), Err(QueueError::UnknownId));
}

#[test]
fn a_callback_waits_for_its_window_before_it_expires() {
    let day = 86_400_000;
    let mut q = CallbackQueue::new(Config {
        dedup_window: Duration::from_secs(3600),
        max_age: Duration::from_secs(3600),
    });
    q.request(T0, windowed(1, T0.0 + 2 * day, T0.0 + 3 * day))
        .unwrap();
    store(&mut q, 1);
    q.request(T0, windowed(2, T0.0, T0.0 + 60_000)).unwrap();
    store(&mut q, 2);
    // #2 expires an hour after its request; #1 only when its window has passed.
    assert_eq!(q.poll_timeout(), Some(UnixMillis(T0.0 + 3_600_000)));
    q.handle_timeout(UnixMillis(T0.0 + 3_600_000));
    assert!(q.get(&cid(2)).is_none() || q.get(&cid(2)).unwrap().state == State::Expired);
    assert_eq!(q.get(&cid(1)).unwrap().state, State::Stored);
    let _ = drain(&mut q);
    assert_eq!(q.poll_timeout(), Some(UnixMillis(T0.0 + 3 * day)));
    q.handle_timeout(UnixMillis(T0.0 + 3 * day));
    assert!(drain(&mut q).contains(&Output::Remove {
        id: cid(1),
        state: State::Expired
    }));
}

#[test]
fn every_state_parses_back_from_its_name_and_nothing_else_does() {
    for st in State::ALL {
        assert_eq!(State::parse(st.as_str()), Some(st));
    }
    for bad in ["", "pending", "Accepted", "accepted ", "booked"] {
        assert_eq!(State::parse(bad), None, "{bad:?}");
    }
}
