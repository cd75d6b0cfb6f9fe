//! Playout: what one call sends on each 20 ms tick, without I/O or clocks.
//!
//! A [`Playout`] holds a call's [`OutboundStream`], the queue of audio segments it plays, the
//! position in the current segment and the sending state. The shell's pacer calls
//! [`Playout::tick`] once per 20 ms for every call; the playout says which frame goes out
//! (a frame of the current segment, or silence when nothing plays) with which RTP header, and
//! whether the playlist played to its end on this tick. So the rules of what a caller hears
//! are tested on virtual time, here, and the pacer only moves bytes:
//!
//! * one frame per tick while sending: the current segment's next frame, silence when the
//!   queue is empty; empty segments are skipped; the end of the playlist is reported once, on
//!   the tick of its last frame;
//! * a new playlist replaces the old one and starts a talk-spurt (RTP marker);
//! * on hold (not sending) and while there is nowhere to send, time goes on for the stream
//!   (the timestamp advances, the sequence number does not) and the playlist goes on too, so
//!   it ends when it would have; the first packet after marks a talk-spurt;
//! * [`Playout::stop_playback`] stops what plays with no "finished" for it.
//!
//! Segments are whatever the shell plays (shared pre-encoded audio in the daemon, a handle on
//! firmware); the queue is any [`SegmentQueue`]: a heapless `Deque` (no allocation) or, with
//! `std`, a `VecDeque`.

use super::{OutboundStream, RtpHeader};

/// The queue a [`Playout`] keeps its segments in.
pub trait SegmentQueue {
    /// A segment.
    type Item;
    /// The segment playing.
    fn front(&self) -> Option<&Self::Item>;
    /// Drops the segment playing.
    fn pop_front(&mut self);
    /// Drops every segment.
    fn clear(&mut self);
    /// Appends a segment; gives it back when the queue is full.
    ///
    /// # Errors
    /// The segment, when there is no room for it.
    fn push_back(&mut self, item: Self::Item) -> Result<(), Self::Item>;
    /// Whether no segment is queued.
    fn is_empty(&self) -> bool {
        self.front().is_none()
    }
}

impl<S, const N: usize> SegmentQueue for heapless::Deque<S, N> {
    type Item = S;
    fn front(&self) -> Option<&S> {
        heapless::Deque::front(self)
    }
    fn pop_front(&mut self) {
        let _ = heapless::Deque::pop_front(self);
    }
    fn clear(&mut self) {
        heapless::Deque::clear(self);
    }
    fn push_back(&mut self, item: S) -> Result<(), S> {
        heapless::Deque::push_back(self, item)
    }
}

#[cfg(feature = "std")]
mod vecdeque {
    extern crate alloc;
    use alloc::collections::VecDeque;

    impl<S> super::SegmentQueue for VecDeque<S> {
        type Item = S;
        fn front(&self) -> Option<&S> {
            VecDeque::front(self)
        }
        fn pop_front(&mut self) {
            let _ = VecDeque::pop_front(self);
        }
        fn clear(&mut self) {
            VecDeque::clear(self);
        }
        fn push_back(&mut self, item: S) -> Result<(), S> {
            VecDeque::push_back(self, item);
            Ok(())
        }
    }
}

/// The frame of one tick: a frame of a segment, or silence.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a, S> {
    /// Frame `index` of `segment`.
    Audio {
        /// The segment.
        segment: &'a S,
        /// The frame within it (always below its length).
        index: usize,
    },
    /// Nothing plays: the shell sends silence in the call's law.
    Silence,
}

/// One call's sending side: the stream, the playlist and where it is.
#[derive(Debug)]
pub struct Playout<Q: SegmentQueue> {
    stream: OutboundStream,
    queue: Q,
    frame: usize,
    /// The next packet starts a talk-spurt.
    talkspurt: bool,
    sending: bool,
    has_target: bool,
    playing: bool,
    sent: u64,
}

impl<Q: SegmentQueue> Playout<Q> {
    /// A playout on `stream` with `queue` (emptied), not sending until told, nothing playing.
    pub fn new(stream: OutboundStream, mut queue: Q) -> Self {
        queue.clear();
        Playout {
            stream,
            queue,
            frame: 0,
            talkspurt: true,
            sending: false,
            has_target: false,
            playing: false,
            sent: 0,
        }
    }

    /// Sends (`true`) or holds (`false`).
    pub fn set_sending(&mut self, on: bool) {
        if on && !self.sending {
            self.talkspurt = true;
        }
        self.sending = on;
    }

    /// Whether there is an address to send to (until there is, ticks only move time on).
    pub fn set_target(&mut self, present: bool) {
        self.has_target = present;
    }

    /// Replaces what plays with `segments` (none: silence). `frames` gives a segment's length
    /// in frames. Returns how many segments did not fit the queue (0 with a `VecDeque`); the
    /// playlist is then cut short, and still reports its end.
    pub fn play<I>(&mut self, segments: I, frames: impl Fn(&Q::Item) -> usize) -> usize
    where
        I: IntoIterator<Item = Q::Item>,
    {
        self.queue.clear();
        let mut dropped = 0;
        for s in segments {
            if self.queue.push_back(s).is_err() {
                dropped += 1;
            }
        }
        self.frame = 0;
        self.talkspurt = true;
        self.playing = true;
        self.skip_played(&frames);
        dropped
    }

    /// Stops what plays (silence follows); its end is not reported.
    pub fn stop_playback(&mut self) {
        self.queue.clear();
        self.frame = 0;
        self.playing = false;
    }

    /// One 20 ms tick. When a packet goes out, `send` gets its header and its frame (call it
    /// once per tick, on time). Returns `true` when the playlist played its last frame on this
    /// tick (once per playlist).
    pub fn tick(
        &mut self,
        frames: impl Fn(&Q::Item) -> usize,
        send: impl FnOnce(RtpHeader, Frame<'_, Q::Item>),
    ) -> bool {
        if self.sending && self.has_target {
            let header = self.stream.next_packet_header(self.talkspurt);
            self.talkspurt = false;
            let frame = match self.queue.front() {
                Some(segment) if self.playing => Frame::Audio {
                    segment,
                    index: self.frame,
                },
                _ => Frame::Silence,
            };
            self.sent += 1;
            send(header, frame);
        } else {
            // Time goes on for the stream; the next packet starts a talk-spurt.
            self.stream.skip_frames(1);
            self.talkspurt = true;
        }
        if !self.playing {
            return false;
        }
        self.frame += 1;
        self.skip_played(&frames);
        if self.queue.is_empty() {
            self.playing = false;
            return true;
        }
        false
    }

    /// Packets handed to `send` so far.
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The stream (SSRC, the next sequence number and timestamp).
    #[must_use]
    pub fn stream(&self) -> &OutboundStream {
        &self.stream
    }

    /// Whether a playlist is playing.
    #[must_use]
    pub fn is_playing(&self) -> bool {
        self.playing
    }

    fn skip_played(&mut self, frames: &impl Fn(&Q::Item) -> usize) {
        while let Some(seg) = self.queue.front() {
            if self.frame < frames(seg) {
                return;
            }
            self.queue.pop_front();
            self.frame = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use super::*;
    use crate::rtp::{PayloadType, Ssrc};
    use heapless::Deque;

    /// A segment: (id, length in frames).
    type Seg = (u8, usize);
    type Q = Deque<Seg, 4>;

    fn len(s: &Seg) -> usize {
        s.1
    }

    fn playout() -> Playout<Q> {
        let mut p = Playout::new(
            OutboundStream::new(Ssrc(7), 100, 1000, PayloadType::PCMU),
            Q::new(),
        );
        p.set_target(true);
        p.set_sending(true);
        p
    }

    /// A packet sent: sequence, timestamp, marker, and (segment id, frame) or silence.
    type Sent = (u16, u32, bool, Option<(u8, usize)>);

    /// Ticks once; returns the packet if one went out, and whether the playlist ended.
    fn tick(p: &mut Playout<Q>) -> (Option<Sent>, bool) {
        let mut out = None;
        let ended = p.tick(len, |h, f| {
            let what = match f {
                Frame::Audio { segment, index } => Some((segment.0, index)),
                Frame::Silence => None,
            };
            out = Some((h.sequence, h.timestamp, h.marker, what));
        });
        (out, ended)
    }

    #[test]
    fn plays_segments_in_order_skips_empty_ones_then_silence_and_reports_the_end_once() {
        let mut p = playout();
        assert_eq!(p.play([(1, 2), (2, 0), (3, 1)], len), 0);
        let got: alloc::vec::Vec<_> = (0..5).map(|_| tick(&mut p)).collect();
        assert_eq!(
            got,
            [
                (Some((100, 1000, true, Some((1, 0)))), false),
                (Some((101, 1160, false, Some((1, 1)))), false),
                (Some((102, 1320, false, Some((3, 0)))), true),
                (Some((103, 1480, false, None)), false),
                (Some((104, 1640, false, None)), false),
            ]
        );
        assert_eq!(p.sent(), 5);
    }

    #[test]
    fn hold_moves_time_not_the_sequence_and_the_playlist_goes_on() {
        let mut p = playout();
        p.play([(1, 3)], len);
        assert_eq!(tick(&mut p).0, Some((100, 1000, true, Some((1, 0)))));
        p.set_sending(false);
        assert_eq!(tick(&mut p), (None, false));
        // The playlist ends on time even while held.
        assert_eq!(tick(&mut p), (None, true));
        p.set_sending(true);
        assert_eq!(tick(&mut p), (Some((101, 1480, true, None)), false));
    }

    #[test]
    fn no_target_sends_nothing_and_the_first_packet_after_is_marked() {
        let mut p = playout();
        p.set_target(false);
        assert_eq!(tick(&mut p), (None, false));
        p.set_target(true);
        assert_eq!(tick(&mut p).0, Some((100, 1160, true, None)));
        assert_eq!(tick(&mut p).0, Some((101, 1320, false, None)));
    }

    #[test]
    fn a_new_playlist_replaces_the_old_and_marks_a_talkspurt_and_stop_reports_nothing() {
        let mut p = playout();
        p.play([(1, 5)], len);
        tick(&mut p);
        tick(&mut p);
        p.play([(2, 2)], len);
        assert_eq!(tick(&mut p), (Some((102, 1320, true, Some((2, 0)))), false));
        p.stop_playback();
        assert!(!p.is_playing());
        assert_eq!(tick(&mut p), (Some((103, 1480, false, None)), false));
        assert!(!tick(&mut p).1);
    }

    #[test]
    fn an_empty_playlist_ends_on_the_next_tick_and_an_overfull_one_is_cut() {
        let mut p = playout();
        p.play([], len);
        assert_eq!(tick(&mut p), (Some((100, 1000, true, None)), true));
        // Four fit the queue; the fifth is reported dropped and the list still ends.
        assert_eq!(p.play([(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)], len), 1);
        let ends: alloc::vec::Vec<bool> = (0..5).map(|_| tick(&mut p).1).collect();
        assert_eq!(ends, [false, false, false, true, false]);
    }
}
