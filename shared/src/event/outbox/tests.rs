// Tests may use std (house rule); the alloc-vs-std lint is about library code.
#![allow(clippy::std_instead_of_alloc)]

extern crate std;

use super::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::vec::Vec;

fn cfg(capacity: u64, max_in_flight: u32, retention: Option<Duration>) -> Config {
    Config {
        capacity,
        max_in_flight,
        retention,
    }
}

fn publish_all(o: &mut Outbox) -> Vec<u64> {
    let v: Vec<u64> = core::iter::from_fn(|| o.poll_publish()).collect();
    o.check_invariants();
    v
}

fn outputs(o: &mut Outbox) -> Vec<Output> {
    core::iter::from_fn(|| o.poll_output()).collect()
}

const T: Instant = Instant::ZERO;

#[test]
fn transcript_window_puback_reconnect_ack_replay() {
    let mut o = Outbox::new(cfg(100, 2, None));
    for s in 1..=3 {
        o.appended(s).unwrap();
    }
    assert_eq!(publish_all(&mut o), [1, 2]); // window of 2
    o.puback(T, 2); // out of order: 1 still in flight
    assert_eq!(publish_all(&mut o), [] as [u64; 0]);
    assert_eq!(o.in_flight(), 2);
    o.puback(T, 1);
    assert_eq!(o.awaiting_crm(), 2);
    assert_eq!(publish_all(&mut o), [3]);
    o.connection_lost();
    assert_eq!(o.unpublished(), 1);
    assert_eq!(publish_all(&mut o), [3]);
    o.crm_ack(2);
    assert_eq!(outputs(&mut o), [Output::Delete { below: 3 }]);
    assert_eq!(o.depth(), 1);
    o.replay(1, 3);
    assert_eq!(
        outputs(&mut o),
        [Output::Skipped {
            from: 1,
            to: 2,
            reason: SkipReason::Unavailable
        }]
    );
    assert_eq!(publish_all(&mut o), [3]);
    o.puback(T, 3);
    o.crm_ack(3);
    assert!(o.is_empty());
    assert_eq!(o.dropped(), 0);
    // Bogus requests change nothing.
    o.replay(9, 5);
    o.replay(50, 60);
    o.crm_ack(1);
    assert_eq!(outputs(&mut o), [Output::Delete { below: 4 }]);
    assert_eq!(publish_all(&mut o), [] as [u64; 0]);
    assert_eq!(
        o.appended(3),
        Err(Error::NotIncreasing {
            expected_at_least: 4
        })
    );
}

#[test]
fn replay_serves_old_events_before_new_ones() {
    let mut o = Outbox::new(cfg(100, 64, None));
    for s in 10..20 {
        o.appended(s).unwrap();
    }
    let first = publish_all(&mut o);
    for s in &first {
        o.puback(T, *s);
    }
    o.appended(20).unwrap();
    o.replay(12, 14);
    o.replay(13, 15); // merges
    assert_eq!(publish_all(&mut o), [12, 13, 14, 15, 20]);
}

// Regression: `seq` starts at 1, so a replay from 0 with nothing dropped reported `seq.skipped`
// for the empty range 0..0.
#[test]
fn a_replay_from_zero_skips_no_empty_range() {
    let mut o = Outbox::new(cfg(100, 64, None));
    for s in 1..=3 {
        o.appended(s).unwrap();
    }
    for s in publish_all(&mut o) {
        o.puback(T, s);
    }
    o.replay(0, 0);
    assert_eq!(outputs(&mut o), []);
    assert_eq!(publish_all(&mut o), [] as [u64; 0]);
    o.replay(0, 2);
    assert_eq!(outputs(&mut o), []);
    assert_eq!(publish_all(&mut o), [1, 2]);
    // Below what is held, the range starts at 1.
    o.crm_ack(2);
    let _ = outputs(&mut o);
    o.replay(0, 3);
    assert_eq!(
        outputs(&mut o),
        [Output::Skipped {
            from: 1,
            to: 2,
            reason: SkipReason::Unavailable
        }]
    );
    assert_eq!(publish_all(&mut o), [3]);
}

#[test]
fn full_outbox_drops_oldest_and_counts() {
    let mut o = Outbox::new(cfg(3, 8, None));
    for s in 1..=5 {
        o.appended(s).unwrap();
    }
    assert_eq!(o.dropped(), 2);
    assert_eq!(o.oldest(), 3);
    assert_eq!(outputs(&mut o), [Output::Delete { below: 3 }]);
    assert_eq!(publish_all(&mut o), [3, 4, 5]);
    // Dropping an in-flight event: its late PUBACK is ignored.
    o.appended(6).unwrap();
    o.puback(T, 3);
    assert_eq!(o.awaiting_crm(), 0);
    assert_eq!(o.in_flight(), 2);
    assert_eq!(publish_all(&mut o), [6]);
}

#[test]
fn retention_drops_only_old_pubacked_events() {
    let hour = Duration::from_secs(3600);
    let mut o = Outbox::new(cfg(100, 8, Some(2 * hour)));
    let t0 = Instant::from_millis(1_000);
    for s in 1..=3 {
        o.appended(s).unwrap();
    }
    for s in publish_all(&mut o) {
        o.puback(t0, s);
    }
    for s in 4..=6 {
        o.appended(s).unwrap();
    }
    for s in publish_all(&mut o) {
        o.puback(t0 + hour, s);
    }
    o.appended(7).unwrap(); // never published
    let _ = publish_all(&mut o);
    assert_eq!(o.poll_timeout(), Some(t0 + 2 * hour));
    o.handle_timeout(t0 + (2 * hour - Duration::from_millis(1)));
    assert_eq!(o.depth(), 7);
    o.handle_timeout(t0 + 2 * hour);
    assert_eq!(o.oldest(), 4);
    assert_eq!(o.dropped(), 3);
    assert_eq!(outputs(&mut o), [Output::Delete { below: 4 }]);
    assert_eq!(o.poll_timeout(), Some(t0 + 3 * hour));
    o.handle_timeout(t0 + 10 * hour);
    // 7 was published but never PUBACKed: kept.
    assert_eq!(o.oldest(), 7);
    assert_eq!(o.dropped(), 6);
    assert_eq!(o.poll_timeout(), None);
}

#[test]
fn retention_marks_stay_bounded_and_conservative() {
    let hour = Duration::from_secs(3600);
    let mut o = Outbox::new(cfg(100_000, 64, Some(16 * hour)));
    // One PUBACK every 10 minutes for 20 hours: many more periods than marks.
    let mut now = Instant::ZERO;
    for s in 1..=120u64 {
        o.appended(s).unwrap();
        let p = publish_all(&mut o);
        assert_eq!(p, [s]);
        o.puback(now, s);
        o.check_invariants();
        now += Duration::from_secs(600);
        o.handle_timeout(now);
        // Nothing is ever dropped before its retention has passed.
        let newest_allowed_drop = now.saturating_duration_since(Instant::ZERO);
        if o.oldest() > 1 {
            let dropped_upto = o.oldest() - 1; // PUBACKed at (dropped_upto - 1) * 10 min
            let acked_at = Duration::from_secs((dropped_upto - 1) * 600);
            assert!(newest_allowed_drop - acked_at >= 16 * hour);
        }
    }
    assert!(o.dropped() > 0);
    // ...and not much later than due: at 20 h, everything PUBACKed before 2 h (retention plus
    // one mark span of 2 h) is gone.
    assert!(o.oldest() > 12, "{}", o.oldest());
}

#[test]
fn restart_restores_range_and_accepts_a_seq_gap() {
    let mut o = Outbox::restore(Config::default(), 50, 60);
    assert_eq!(o.unpublished(), 10);
    o.appended(1_001).unwrap(); // the sequencer skipped 60..=1000
    assert_eq!(o.depth(), 952);
    // An empty outbox just starts at the new seq.
    let mut e = Outbox::new(Config::default());
    e.appended(2_001).unwrap();
    assert_eq!((e.oldest(), e.next_seq()), (2_001, 2_002));
    assert_eq!(publish_all(&mut e), [2_001]);
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        jump: bool,
    },
    Publish,
    /// PUBACK the i-th (mod len) outstanding publish.
    Puback {
        i: usize,
    },
    PubackAll,
    ConnectionLost,
    /// Acknowledge up to the i-th (mod len) PUBACKed seq, as a real CRM would.
    CrmAck {
        i: usize,
    },
    Replay {
        from: u64,
        len: u64,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => proptest::bool::weighted(0.05).prop_map(|jump| Op::Append { jump }),
        6 => Just(Op::Publish),
        6 => (0usize..64).prop_map(|i| Op::Puback { i }),
        2 => Just(Op::PubackAll),
        1 => Just(Op::ConnectionLost),
        2 => (0usize..64).prop_map(|i| Op::CrmAck { i }),
        2 => (0u64..200, 0u64..30).prop_map(|(from, len)| Op::Replay { from, len }),
    ]
}

proptest! {
    /// Model check of the outbox: publishes only held, unacknowledged events; the first
    /// publication of every event happens in order; without drops every appended event is
    /// published at least once; the held range and the dropped count match a model.
    #[test]
    fn outbox_invariants(
        ops in proptest::collection::vec(arb_op(), 1..300),
        capacity in prop_oneof![Just(1_000u64), 1u64..20],
        window in 1u32..10,
    ) {
        let mut o = Outbox::new(cfg(capacity, window, None));
        let mut next: u64 = 1;
        let (mut m_oldest, mut m_next, mut m_dropped) = (0u64, 0u64, 0u64);
        let mut appended: BTreeSet<u64> = BTreeSet::new();
        let mut published: BTreeSet<u64> = BTreeSet::new();
        let mut outstanding: Vec<u64> = Vec::new();
        let mut pubacked: Vec<u64> = Vec::new();
        let mut acked_upto: u64 = 0;
        let publish = |o: &mut Outbox, published: &mut BTreeSet<u64>, outstanding: &mut Vec<u64>,
                           m_oldest: u64, acked_upto: u64| -> Result<(), TestCaseError> {
            while let Some(s) = o.poll_publish() {
                prop_assert!(s > acked_upto, "published {} after ack {}", s, acked_upto);
                prop_assert!(s >= o.oldest() && s < o.next_seq());
                if !published.contains(&s) {
                    // First publication: every older held event was published before.
                    prop_assert!((m_oldest.max(o.oldest())..s).all(|x| published.contains(&x)),
                        "{} published before an older event", s);
                }
                published.insert(s);
                outstanding.push(s);
            }
            Ok(())
        };
        for op in ops {
            match op {
                Op::Append { jump } => {
                    if jump && o.is_empty() { next += 100; }
                    if jump && !o.is_empty() { continue; }
                    o.appended(next).unwrap();
                    appended.insert(next);
                    if m_oldest == m_next { m_oldest = next; }
                    m_next = next + 1;
                    if m_next - m_oldest > capacity {
                        m_dropped += m_next - m_oldest - capacity;
                        m_oldest = m_next - capacity;
                    }
                    next += 1;
                }
                Op::Publish => publish(&mut o, &mut published, &mut outstanding, m_oldest, acked_upto)?,
                Op::Puback { i } => {
                    if !outstanding.is_empty() {
                        let s = outstanding.remove(i % outstanding.len());
                        o.puback(T, s);
                        pubacked.push(s);
                    }
                }
                Op::PubackAll => {
                    for s in outstanding.drain(..) { o.puback(T, s); pubacked.push(s); }
                }
                Op::ConnectionLost => { o.connection_lost(); outstanding.clear(); }
                Op::CrmAck { i } => {
                    if !pubacked.is_empty() {
                        let upto = pubacked[i % pubacked.len()];
                        o.crm_ack(upto);
                        acked_upto = acked_upto.max(upto);
                        m_oldest = m_oldest.max(upto.saturating_add(1).min(m_next));
                    }
                }
                Op::Replay { from, len } => o.replay(from, from + len),
            }
            o.check_invariants();
            while o.poll_output().is_some() {}
            prop_assert_eq!((o.oldest(), o.next_seq(), o.dropped()), (m_oldest.min(m_next), m_next, m_dropped));
        }
        // Drain: reconnect-free publishing until nothing is left to send.
        for _ in 0..10_000 {
            publish(&mut o, &mut published, &mut outstanding, m_oldest, acked_upto)?;
            if outstanding.is_empty() { break; }
            for s in outstanding.drain(..) { o.puback(T, s); }
        }
        prop_assert_eq!(o.unpublished(), 0);
        prop_assert_eq!(o.in_flight(), 0);
        if m_dropped == 0 {
            prop_assert_eq!(&published, &appended);
        }
    }

    /// After everything is published and PUBACKed, a replay yields exactly the held part of
    /// the range, in order, and reports the part below it as skipped.
    #[test]
    fn replay_resends_exactly_the_held_subrange(
        n in 1u64..60,
        acked in 0u64..70,
        from in 0u64..80,
        len in 0u64..80,
        backwards in proptest::bool::weighted(0.1),
    ) {
        let mut o = Outbox::new(cfg(1_000, 64, None));
        for s in 1..=n { o.appended(s).unwrap(); }
        loop {
            let p = publish_all(&mut o);
            if p.is_empty() { break; }
            for s in p { o.puback(T, s); }
        }
        o.crm_ack(acked);
        while o.poll_output().is_some() {}
        let (a, b) = if backwards { (from + len + 1, from) } else { (from, from + len) };
        o.replay(a, b);
        let got = publish_all(&mut o);
        let expect: Vec<u64> = if a <= b {
            (a.max(o.oldest())..=b.min(n)).collect()
        } else {
            Vec::new()
        };
        prop_assert_eq!(got, expect);
        let outs = outputs(&mut o);
        // `seq` starts at 1: a range from 0 is the same range from 1.
        let first = a.max(1);
        if first <= b && first < o.oldest() && a <= n {
            prop_assert_eq!(outs, [Output::Skipped { from: first, to: b.min(o.oldest() - 1), reason: SkipReason::Unavailable }]);
        } else {
            prop_assert!(outs.is_empty());
        }
    }
}
