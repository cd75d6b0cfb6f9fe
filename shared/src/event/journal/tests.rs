// Tests may use std (house rule); the alloc-vs-std lint is about library code.
#![allow(clippy::std_instead_of_alloc)]
extern crate std;

use std::collections::VecDeque;
use std::vec::Vec;

use super::*;
use crate::time::Duration;

/// A test event: an id, or a `seq.skipped`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Call(u32),
    Skipped(u64, u64, SkipReason),
}

impl Unnumbered for Ev {
    fn seq_skipped(_at: UnixMillis, from: u64, to: u64, reason: SkipReason) -> Self {
        Ev::Skipped(from, to, reason)
    }
    fn at(&self) -> UnixMillis {
        UnixMillis(1_000)
    }
}

fn config() -> outbox::Config {
    outbox::Config {
        capacity: 100,
        max_in_flight: 8,
        retention: None,
    }
}

fn journal(max_waiting: usize) -> Journal<VecDeque<Ev>> {
    Journal::new(config(), 10, VecDeque::new(), max_waiting)
}

/// Drains the outputs, answering every reservation at once (or failing it).
fn drain<Q: Waiting<Item = Ev>>(j: &mut Journal<Q>, reserve_ok: bool) -> Vec<Output<Ev>> {
    let mut out = Vec::new();
    while let Some(o) = j.poll_output() {
        if let Output::Reserve(m) = o {
            if reserve_ok {
                j.reserved(m);
            } else {
                j.reserve_failed();
            }
        }
        out.push(o);
    }
    out
}

/// A restored journal with events `0..n` numbered `1..=n`, published and PUBACKed.
fn published<Q: Waiting<Item = Ev>>(j: &mut Journal<Q>, n: u32) {
    j.restore(UnixMillis(5), Restored::default());
    for i in 0..n {
        j.push(Ev::Call(i));
    }
    drain(j, true);
    while let Some(s) = j.poll_publish() {
        j.puback(Instant::from_millis(1), s);
    }
}

fn appended(out: &[Output<Ev>]) -> Vec<(u64, Ev)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Append { seq, event } => Some((*seq, event.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn events_pushed_before_the_restore_are_numbered_after_a_durable_reservation() {
    let mut j = journal(100);
    j.push(Ev::Call(1));
    j.push(Ev::Call(2));
    assert_eq!(
        j.poll_output(),
        None,
        "nothing is numbered before the restore"
    );
    assert_eq!(j.depth(), 2);
    j.restore(UnixMillis(5), Restored::default());
    // The first output is the reservation; nothing is numbered until it is durable.
    assert_eq!(j.poll_output(), Some(Output::Reserve(11)));
    assert_eq!(j.poll_output(), None);
    j.reserved(11);
    j.push(Ev::Call(3));
    let out = drain(&mut j, true);
    assert_eq!(
        appended(&out),
        [(1, Ev::Call(1)), (2, Ev::Call(2)), (3, Ev::Call(3))]
    );
    assert_eq!(j.last_seq(), 3);
    let published: Vec<u64> = core::iter::from_fn(|| j.poll_publish()).collect();
    assert_eq!(published, [1, 2, 3]);
    assert!(!j.flushed(), "published, not PUBACKed yet");
    for s in published {
        j.puback(Instant::from_millis(1), s);
    }
    assert!(j.flushed());
}

#[test]
fn the_restart_gap_is_numbered_first_as_seq_skipped() {
    let mut j = journal(100);
    j.push(Ev::Call(7));
    j.restore(
        UnixMillis(5),
        Restored {
            high_water: 40,
            last_issued: Restored::last_issued(Some(12), Some(9), Some(6)),
            held: Some((6, 12)),
            acked: 9,
        },
    );
    assert_eq!(j.unnumbered(), 2);
    let out = drain(&mut j, true);
    assert_eq!(out[0], Output::Reserve(50));
    assert_eq!(
        appended(&out),
        [
            (40, Ev::Skipped(13, 39, SkipReason::Restart)),
            (41, Ev::Call(7))
        ]
    );
    // The held events are published first, then the new ones (the gap is a hole).
    let published: Vec<u64> = core::iter::from_fn(|| j.poll_publish()).collect();
    assert_eq!(&published[..3], [6, 7, 8]);
}

#[test]
fn last_issued_is_the_highest_of_what_the_store_kept() {
    assert_eq!(Restored::last_issued(None, None, None), None);
    assert_eq!(Restored::last_issued(None, Some(0), Some(1)), None);
    assert_eq!(Restored::last_issued(Some(3), Some(9), Some(5)), Some(9));
    assert_eq!(Restored::last_issued(None, None, Some(21)), Some(20));
}

#[test]
fn a_failed_reservation_pauses_until_the_shell_retries() {
    let mut j = journal(100);
    j.restore(UnixMillis(5), Restored::default());
    j.push(Ev::Call(1));
    let out = drain(&mut j, false);
    assert_eq!(out, [Output::Reserve(11)], "asked once, then paused");
    assert_eq!(j.unnumbered(), 1);
    j.retry();
    let out = drain(&mut j, true);
    assert_eq!(out[0], Output::Reserve(11));
    assert_eq!(appended(&out), [(1, Ev::Call(1))]);
}

#[test]
fn the_next_block_is_asked_for_before_the_current_one_runs_out() {
    let mut j = journal(100);
    j.restore(UnixMillis(5), Restored::default());
    for i in 0..30 {
        j.push(Ev::Call(i));
    }
    let out = drain(&mut j, true);
    let reserves: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            Output::Reserve(m) => Some(*m),
            _ => None,
        })
        .collect();
    assert_eq!(reserves, [11, 21, 31, 41]);
    assert_eq!(appended(&out).len(), 30);
    // Seqs are consecutive and the marks always cover them.
    for (i, (s, _)) in appended(&out).into_iter().enumerate() {
        assert_eq!(s, i as u64 + 1);
    }
}

#[test]
fn an_acknowledgement_is_persisted_before_the_deletions_it_causes() {
    let mut j = journal(100);
    published(&mut j, 5);
    j.crm_ack(3);
    assert_eq!(
        drain(&mut j, true),
        [Output::Acked(3), Output::Delete { below: 4 }]
    );
    assert_eq!(j.acked_seq(), 3);
    // An acknowledgement beyond what was issued is held to the last issued seq.
    j.crm_ack(99);
    assert_eq!(
        drain(&mut j, true),
        [Output::Acked(5), Output::Delete { below: 6 }]
    );
    // Nothing new: nothing to persist.
    j.crm_ack(2);
    assert_eq!(drain(&mut j, true), []);
}

#[test]
fn a_replay_of_events_no_longer_held_becomes_seq_skipped() {
    let mut j = journal(100);
    published(&mut j, 4);
    j.crm_ack(2);
    drain(&mut j, true);
    j.replay(UnixMillis(9), 1, 4);
    let out = drain(&mut j, true);
    assert_eq!(
        appended(&out),
        [(5, Ev::Skipped(1, 2, SkipReason::Unavailable))]
    );
    let again: Vec<u64> = core::iter::from_fn(|| j.poll_publish()).collect();
    assert_eq!(again, [3, 4, 5]);
}

#[test]
fn beyond_max_waiting_the_oldest_waiting_event_is_dropped_and_counted() {
    let mut j = journal(3);
    for i in 0..5 {
        j.push(Ev::Call(i));
    }
    assert_eq!(j.unnumbered(), 3);
    assert_eq!(j.dropped(), 2);
    j.restore(UnixMillis(5), Restored::default());
    let out = drain(&mut j, true);
    assert_eq!(
        appended(&out),
        [(1, Ev::Call(2)), (2, Ev::Call(3)), (3, Ev::Call(4))]
    );
}

#[test]
fn a_heapless_queue_works_the_same_and_a_full_one_drops_the_oldest() {
    let mut j: Journal<heapless::Deque<Ev, 2>> =
        Journal::new(config(), 10, heapless::Deque::new(), usize::MAX);
    for i in 0..3 {
        j.push(Ev::Call(i));
    }
    assert_eq!(j.dropped(), 1);
    j.restore(UnixMillis(5), Restored::default());
    let out = drain(&mut j, true);
    assert_eq!(appended(&out), [(1, Ev::Call(1)), (2, Ev::Call(2))]);
}

#[test]
fn a_replay_into_a_full_heapless_queue_drops_the_oldest_waiting_event_and_counts_it() {
    let mut j: Journal<heapless::Deque<Ev, 2>> =
        Journal::new(config(), 10, heapless::Deque::new(), usize::MAX);
    published(&mut j, 1);
    j.crm_ack(1);
    drain(&mut j, true);
    // The queue is full (its capacity, not max_waiting, is the bound) when the replay's
    // seq.skipped arrives: the oldest waiting event makes room and is counted.
    j.push(Ev::Call(1));
    j.push(Ev::Call(2));
    j.replay(UnixMillis(9), 1, 1);
    let out = drain(&mut j, true);
    assert_eq!(
        appended(&out),
        [
            (2, Ev::Call(2)),
            (3, Ev::Skipped(1, 1, SkipReason::Unavailable))
        ]
    );
    assert_eq!(j.dropped(), 1);
}

#[test]
fn retention_drops_unacknowledged_events_with_a_delete() {
    let mut cfg = config();
    cfg.retention = Some(Duration::from_secs(60));
    let mut j: Journal<VecDeque<Ev>> = Journal::new(cfg, 10, VecDeque::new(), 100);
    j.restore(UnixMillis(5), Restored::default());
    j.push(Ev::Call(1));
    drain(&mut j, true);
    let s = j.poll_publish().unwrap();
    j.puback(Instant::from_millis(0), s);
    let t = j.poll_timeout().expect("retention armed");
    j.handle_timeout(t.saturating_add(Duration::from_secs(120)));
    assert_eq!(drain(&mut j, true), [Output::Delete { below: 2 }]);
    assert_eq!(j.dropped(), 1);
}
