//! The node on virtual time: whole calls through `handle_*`/`poll_output`, as a shell drives
//! it. Each wiring bug the node replaced has a regression test here.

extern crate alloc;
extern crate std;

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::*;
use crate::call::tests::dtmf_packets;
use crate::dtmf::Digit;
use crate::ivr::Prompt;
use crate::sip::uas;

const GW: &str = "192.0.2.1:5060";

fn gw() -> SocketAddr {
    GW.parse().unwrap()
}

fn sip_cfg() -> &'static uas::Config {
    static CFG: uas::Config = uas::Config::new("sip:ccedge@192.0.2.10:5060", "192.0.2.10:5060");
    &CFG
}

fn config(max_age_s: u64) -> Config {
    Config {
        call: Box::leak(Box::new(call::Config::new(sip_cfg()))),
        site: Site::try_from("phl").unwrap(),
        callbacks: callback::Config {
            max_age: Duration::from_secs(max_age_s),
            ..callback::Config::default()
        },
        max_calls: 8,
        hours: Box::leak(Box::new(callback::window::Hours::always())),
        languages: Languages::default(),
    }
}

/// Wall clock 2026-12-01T00:00:00Z at instant zero.
const WALL0: i64 = 1_796_083_200_000;

fn at(ms: u64) -> Now {
    Now {
        at: Instant::from_millis(ms),
        wall: UnixMillis(WALL0 + ms as i64),
    }
}

/// A shell on virtual time: records every output, plays each playlist for a fixed time.
struct Shell<T: CallTable> {
    node: Node<T>,
    now: u64,
    sent: Vec<(SocketAddr, String)>,
    /// When each of `sent` was sent.
    sent_at: Vec<u64>,
    outs: Vec<Output>,
    /// When each of `outs` came out.
    outs_at: Vec<u64>,
    /// Per call: the playlist playing and when it ends.
    playing: Vec<(CallKey, Playlist, u64)>,
    /// Stores to answer.
    stores: Vec<CallbackId>,
    next_port: u16,
}

const PLAY_MS: u64 = 1_000;

impl<T: CallTable> Shell<T> {
    fn new(node: Node<T>) -> Self {
        Shell {
            node,
            now: 0,
            sent: Vec::new(),
            sent_at: Vec::new(),
            outs: Vec::new(),
            outs_at: Vec::new(),
            playing: Vec::new(),
            stores: Vec::new(),
            next_port: 30_000,
        }
    }

    fn drain(&mut self) {
        let mut buf = std::vec![0u8; SIP_MAX_DATAGRAM + 512];
        while let Some(o) = self.node.poll_output(&mut buf) {
            match &o {
                Output::Transmit { to, len, .. } => {
                    self.sent
                        .push((*to, String::from_utf8_lossy(&buf[..*len]).into_owned()));
                    self.sent_at.push(self.now);
                }
                Output::Play { call, playlist, .. } => {
                    self.playing.retain(|(k, _, _)| k != call);
                    self.playing
                        .push((*call, playlist.clone(), self.now + PLAY_MS));
                }
                Output::StopPlayback { call } => self.playing.retain(|(k, _, _)| k != call),
                Output::Callback(callback::Output::Store { id }) => self.stores.push(id.clone()),
                _ => {}
            }
            self.outs.push(o);
            self.outs_at.push(self.now);
        }
        if let Some(t) = self.node.poll_timeout() {
            assert!(
                t >= Instant::from_millis(self.now),
                "deadline {t:?} in the past at {}",
                self.now
            );
        }
    }

    fn sip(&mut self, text: &str) {
        let port = self.next_port;
        self.next_port += 2;
        let setup = move || {
            Some(Setup {
                id: CallId(u64::from(port)),
                local_tag: 0xfeed + u64::from(port),
                local_rtp: SocketAddr::new("192.0.2.10".parse().unwrap(), port),
                session_id: 42,
            })
        };
        self.node
            .handle_sip(at(self.now), gw(), text.as_bytes(), setup);
        self.drain();
    }

    /// Advances virtual time to `until`, firing timers and finishing playbacks in order.
    fn run_until(&mut self, until: u64) {
        loop {
            let timer = self.node.poll_timeout().map(|t| t.as_micros() / 1000);
            let play = self.playing.iter().map(|(_, _, end)| *end).min();
            let next = [timer, play].into_iter().flatten().min();
            let Some(next) = next.filter(|t| *t <= until) else {
                break;
            };
            self.now = self.now.max(next);
            if let Some(i) = self.playing.iter().position(|(_, _, end)| *end <= self.now) {
                let (key, _, _) = self.playing.remove(i);
                let _ = self.node.handle_playback_finished(at(self.now), key);
            } else {
                self.node.handle_timeout(at(self.now));
            }
            self.drain();
        }
        self.now = until;
    }

    fn store_all(&mut self, ok: bool) {
        for id in core::mem::take(&mut self.stores) {
            self.node.handle_stored(at(self.now), &id, ok).unwrap();
        }
        self.drain();
    }

    fn press(&mut self, key: CallKey, d: Digit, ts: u32, seq: u16) {
        for p in dtmf_packets(d, ts, seq) {
            self.now += 20;
            let _ = self.node.handle_rtp(at(self.now), key, gw_rtp(), false, &p);
            self.drain();
        }
    }

    fn created(&self) -> Vec<CallKey> {
        self.outs
            .iter()
            .filter_map(|o| match o {
                Output::CallCreated { call, .. } => Some(*call),
                _ => None,
            })
            .collect()
    }

    fn events(&self) -> Vec<&NodeEvent> {
        self.outs
            .iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn plays(&self, key: CallKey) -> Vec<(usize, Playlist)> {
        self.outs
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                Output::Play { call, playlist, .. } if *call == key => Some((i, playlist.clone())),
                _ => None,
            })
            .collect()
    }
}

fn gw_rtp() -> SocketAddr {
    "192.0.2.1:40000".parse().unwrap()
}

fn sdp() -> String {
    "v=0\r\no=gw 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
     m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
     a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
        .into()
}

fn request(call: &str, method: &str, cseq: u32, to_tag: Option<&str>, body: &str) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    format!(
        "{method} sip:+18005550100@192.0.2.10 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {GW};branch=z9hG4bK{call}{method}{cseq}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+12155550123@192.0.2.1>;tag=gw1\r\n\
         To: <sip:+18005550100@192.0.2.10>{to_tag}\r\n\
         Call-ID: {call}@192.0.2.1\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:gw@{GW}>\r\n\
         {ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn to_tag_of(sent: &[(SocketAddr, String)], call: &str) -> String {
    let ok = sent
        .iter()
        .rev()
        .find(|(_, s)| s.starts_with("SIP/2.0 200") && s.contains(&format!("Call-ID: {call}@")))
        .map(|(_, s)| s.clone())
        .expect("a 200 OK");
    let to = ok
        .split("\r\n")
        .find(|l| l.starts_with("To:"))
        .unwrap()
        .to_owned();
    to.split(";tag=").nth(1).unwrap().to_owned()
}

/// Places a call, answers, ACKs; returns its key and To tag.
fn answered<T: CallTable>(sh: &mut Shell<T>, call: &str) -> (CallKey, String) {
    sh.sip(&request(call, "INVITE", 1, None, &sdp()));
    let key = *sh.created().last().expect("call created");
    let tag = to_tag_of(&sh.sent, call);
    sh.sip(&request(call, "ACK", 1, Some(&tag), ""));
    (key, tag)
}

fn heap_shell(max_age_s: u64) -> Shell<HeapCalls> {
    Shell::new(Node::new(
        config(max_age_s),
        HeapCalls::with_capacity(16),
        at(0),
    ))
}

fn byes_to(sent: &[(SocketAddr, String)], call: &str) -> usize {
    sent.iter()
        .filter(|(_, s)| s.starts_with("BYE ") && s.contains(&format!("Call-ID: {call}@")))
        .count()
}

/// Books a callback on a fresh call and lets it finish; returns the callback id.
fn book_one<T: CallTable>(sh: &mut Shell<T>, call: &str) -> CallbackId {
    let (key, _) = answered(sh, call);
    let t = sh.now + 100;
    sh.run_until(t);
    sh.press(key, Digit::D1, 8000, 100);
    sh.press(key, Digit::D1, 16000, 200);
    assert_eq!(sh.stores.len(), 1, "one store asked");
    let id = sh.stores[0].clone();
    sh.store_all(true);
    let t = sh.now + 30_000;
    sh.run_until(t);
    id
}

#[test]
fn a_call_is_answered_and_its_events_carry_its_id() {
    let mut sh = heap_shell(3600);
    let (key, _) = answered(&mut sh, "a1");
    assert!(sh
        .sent
        .iter()
        .any(|(to, s)| *to == gw() && s.starts_with("SIP/2.0 200")));
    let evs = sh.events();
    assert_eq!(evs[0].kind.type_str(), "call.offered");
    assert_eq!(evs[0].call, Some(key));
    assert_eq!(evs[0].call_seq, 1);
    assert_eq!(sh.node.active_calls(), 1);
}

// Regression: the repeat caller was cut off after "please wait".
#[test]
fn a_repeat_caller_hears_already_booked_and_the_position_before_bye() {
    let mut sh = heap_shell(3600);
    let first = book_one(&mut sh, "r1");
    assert!(sh.node.queue().get(&first).is_some());
    let (key, _) = answered(&mut sh, "r2");
    let t = sh.now + 100;
    sh.run_until(t);
    sh.press(key, Digit::D1, 8000, 100);
    sh.press(key, Digit::D1, 16000, 200);
    assert!(sh.stores.is_empty(), "a duplicate asks for no store");
    assert!(sh.outs.iter().any(|o| matches!(
        o,
        Output::Booking {
            result: BookingResult::AlreadyBooked { position: 1 },
            ..
        }
    )));
    let t = sh.now + 30_000;
    sh.run_until(t);
    // The last playlist says "already booked, you are number 1", and it played to its end
    // before the node's BYE.
    let plays = sh.plays(key);
    let (idx, last) = plays
        .iter()
        .rev()
        .find(|(_, p)| p.contains(&Prompt::AlreadyBooked))
        .expect("already booked played");
    assert!(last.contains(&Prompt::YouAreNumber), "{last:?}");
    assert!(
        plays
            .iter()
            .all(|(i, p)| i <= idx || !p.contains(&Prompt::PleaseWait)),
        "please wait played over the answer: {plays:?}"
    );
    let started = sh.outs_at[*idx];
    let bye = sh
        .sent
        .iter()
        .position(|(_, s)| s.starts_with("BYE ") && s.contains("Call-ID: r2@"))
        .expect("the node hangs up after the answer");
    assert!(
        sh.sent_at[bye] >= started + PLAY_MS,
        "BYE at {} ms, the answer started at {started} ms",
        sh.sent_at[bye]
    );
    assert_eq!(sh.node.stats().callbacks_already_booked, 1);
}

// Regression: callbacks never expired in the daemon.
#[test]
fn a_booked_callback_expires_after_max_age_and_the_crm_is_told() {
    let mut sh = heap_shell(60);
    let id = book_one(&mut sh, "e1");
    assert!(sh.node.queue().get(&id).is_some());
    let deadline = sh.node.poll_timeout().expect("expiry armed");
    assert!(deadline <= Instant::from_millis(61_000), "{deadline:?}");
    sh.run_until(120_000);
    assert!(
        sh.node.queue().get(&id).is_none(),
        "expired entry left the queue"
    );
    assert!(sh.outs.iter().any(|o| matches!(
        o,
        Output::Callback(callback::Output::Remove {
            state: callback::State::Expired,
            ..
        })
    )));
    let ev = sh
        .events()
        .into_iter()
        .find(|e| e.kind.type_str() == "callback.expired")
        .expect("callback.expired event");
    assert_eq!(ev.kind, EventKind::CallbackExpired { callback_id: id });
    assert_eq!(ev.call_id, None);
    assert_eq!(sh.node.stats().callbacks_expired, 1);
}

// Regression: an ended call counted as active for ~32 s.
#[test]
fn the_active_count_drops_at_the_bye() {
    let mut sh = heap_shell(3600);
    let (key, tag) = answered(&mut sh, "b1");
    assert_eq!(sh.node.active_calls(), 1);
    sh.sip(&request("b1", "BYE", 2, Some(&tag), ""));
    assert_eq!(sh.node.active_calls(), 0);
    assert!(sh
        .sent
        .iter()
        .any(|(_, s)| s.starts_with("SIP/2.0 200") && s.contains("CSeq: 2 BYE")));
    // The dialog lingers for retransmissions, then leaves the table.
    assert!(sh.node.call(key).is_some_and(Slot::is_ended));
    sh.run_until(sh.now + 40_000);
    assert!(sh.node.call(key).is_none());
    assert!(sh
        .outs
        .iter()
        .any(|o| matches!(o, Output::Released { call: Some(k), .. } if *k == key)));
    assert_eq!(sh.node.active_calls(), 0);
}

#[test]
fn a_late_durable_booking_is_cancelled() {
    let mut sh = heap_shell(3600);
    let (key, _) = answered(&mut sh, "l1");
    sh.run_until(sh.now + 100);
    sh.press(key, Digit::D1, 8000, 100);
    sh.press(key, Digit::D1, 16000, 200);
    assert_eq!(sh.stores.len(), 1);
    // The IVR's booking timeout passes before the disk answers.
    sh.run_until(sh.now + 20_000);
    sh.store_all(true);
    assert_eq!(sh.node.stats().late_bookings_cancelled, 1);
    assert_eq!(sh.node.queue().waiting(), 0);
}

#[test]
fn a_failed_store_tells_the_caller_and_queues_nothing() {
    let mut sh = heap_shell(3600);
    let (key, _) = answered(&mut sh, "f1");
    sh.run_until(sh.now + 100);
    sh.press(key, Digit::D1, 8000, 100);
    sh.press(key, Digit::D1, 16000, 200);
    sh.store_all(false);
    sh.run_until(sh.now + 30_000);
    assert!(sh
        .plays(key)
        .iter()
        .any(|(_, p)| p.contains(&Prompt::CouldNotBook)));
    assert!(sh.node.queue().is_empty());
    assert_eq!(sh.node.stats().callbacks_failed, 1);
}

// Regression: `rtp_dropped` was shown but never counted.
#[test]
fn refused_rtp_is_counted() {
    let mut sh = heap_shell(3600);
    let (key, _) = answered(&mut sh, "d1");
    assert!(sh
        .node
        .handle_rtp(at(sh.now), key, gw_rtp(), false, b"not rtp")
        .is_err());
    assert!(sh
        .node
        .handle_rtp(at(sh.now), CallKey(999), gw_rtp(), false, b"x")
        .is_err());
    assert_eq!(sh.node.stats().rtp_dropped, 2);
}

// RFC 5761: RTCP on the RTP port is not RTP: neither refused nor fed to the RTP statistics.
#[test]
fn muxed_rtcp_is_not_refused_rtp() {
    let mut sh = heap_shell(3600);
    let (key, _) = answered(&mut sh, "d1");
    let mut rr = [0u8; 16];
    let n = crate::rtp::rtcp::build_bye(&mut rr, crate::rtp::Ssrc(5)).unwrap();
    assert!(sh
        .node
        .handle_rtp(at(sh.now), key, gw_rtp(), false, &rr[..8])
        .is_ok());
    assert!(sh
        .node
        .handle_rtp(at(sh.now), key, gw_rtp(), false, &rr[..n])
        .is_ok());
    assert_eq!(sh.node.stats().rtp_dropped, 0);
}

fn announcement(id: &str, version: u32, site: Option<&str>, audio: u8) -> announce::Announcement {
    let mut a = announce::Announcement::new(AnnouncementId::new(id).unwrap(), version);
    if let Some(s) = site {
        a.scope.sites.push(Site::try_from(s).unwrap()).unwrap();
    }
    a.audio = Some([audio; 32]);
    a
}

fn publish<T: CallTable>(sh: &mut Shell<T>, a: announce::Announcement) {
    let sha = a.audio.unwrap();
    sh.node
        .handle_crm(
            at(sh.now),
            CrmInput::Announcement(announce::Input::AudioAvailable(sha)),
        )
        .unwrap();
    sh.node
        .handle_crm(
            at(sh.now),
            CrmInput::Announcement(announce::Input::Upsert(a)),
        )
        .unwrap();
    sh.drain();
}

// Regression: an announcement for another site was listed as active here.
#[test]
fn an_announcement_for_another_site_does_not_play_here() {
    let mut sh = heap_shell(3600);
    publish(&mut sh, announcement("here", 1, Some("phl"), 1));
    publish(&mut sh, announcement("there", 1, Some("nyc"), 2));
    publish(&mut sh, announcement("everywhere", 1, None, 3));
    let mut here = Vec::new();
    for (h, a, _) in sh.node.announcements().iter() {
        if sh.node.plays_here(h) {
            here.push(String::from(a.id.as_str()));
        }
    }
    here.sort();
    assert_eq!(here, ["everywhere", "here"]);
    let (key, _) = answered(&mut sh, "s1");
    let first = &sh.plays(key)[0].1;
    assert!(
        first.iter().all(|p| match p {
            Prompt::Announcement(h) => sh.node.plays_here(*h),
            _ => true,
        }),
        "{first:?}"
    );
}

// Regression: the audio cache sweep removed files but the node kept playing them.
#[test]
fn removed_audio_stops_an_announcement_playing() {
    let mut sh = heap_shell(3600);
    publish(&mut sh, announcement("out", 1, None, 7));
    let (k1, _) = answered(&mut sh, "u1");
    assert!(sh.plays(k1)[0]
        .1
        .iter()
        .any(|p| matches!(p, Prompt::Announcement(_))));
    sh.node
        .handle_crm(
            at(sh.now),
            CrmInput::Announcement(announce::Input::AudioRemoved([7; 32])),
        )
        .unwrap();
    sh.drain();
    let (k2, _) = answered(&mut sh, "u2");
    assert!(
        !sh.plays(k2)[0]
            .1
            .iter()
            .any(|p| matches!(p, Prompt::Announcement(_))),
        "{:?}",
        sh.plays(k2)
    );
}

/// The versions of the announcements `key`'s first playlist names, as the shell resolves them.
fn announced_versions<T: CallTable>(sh: &Shell<T>, key: CallKey) -> Vec<u32> {
    sh.plays(key)[0]
        .1
        .iter()
        .filter_map(|p| match p {
            Prompt::Announcement(h) => {
                assert!(sh.node.announcements().media(*h).is_some(), "{h:?}");
                sh.node.announcements().get(*h).map(|a| a.version)
            }
            _ => None,
        })
        .collect()
}

// Regression: a new version whose audio had not arrived silenced the version before it.
#[test]
fn a_pending_version_leaves_the_old_one_playing_until_its_audio_arrives() {
    let mut sh = heap_shell(3600);
    publish(&mut sh, announcement("out", 1, None, 1));
    sh.node
        .handle_crm(
            at(sh.now),
            CrmInput::Announcement(announce::Input::Upsert(announcement("out", 2, None, 2))),
        )
        .unwrap();
    sh.drain();
    let states: Vec<_> = sh
        .node
        .announcements()
        .iter()
        .map(|(_, a, s)| (a.version, s))
        .collect();
    assert_eq!(states, [(2, announce::State::Pending)]);

    let (k1, _) = answered(&mut sh, "p1");
    assert_eq!(announced_versions(&sh, k1), [1]);
    sh.run_until(sh.now + 2 * PLAY_MS);
    assert!(sh.events().iter().any(|e| e.call == Some(k1)
        && matches!(&e.kind, EventKind::AnnouncementStarted { version: 1, .. })));

    sh.node
        .handle_crm(
            at(sh.now),
            CrmInput::Announcement(announce::Input::AudioAvailable([2; 32])),
        )
        .unwrap();
    sh.drain();
    let (k2, _) = answered(&mut sh, "p2");
    assert_eq!(announced_versions(&sh, k2), [2]);
}

#[test]
fn a_full_table_answers_503_and_shutdown_hangs_up_every_call() {
    let mut sh = heap_shell(3600);
    for i in 0..8 {
        answered(&mut sh, &format!("t{i}"));
    }
    sh.sip(&request("t9", "INVITE", 1, None, &sdp()));
    assert!(sh.sent.last().unwrap().1.starts_with("SIP/2.0 503"));
    assert_eq!(sh.node.stats().calls_refused, 1);
    sh.node.handle_shutdown(at(sh.now));
    sh.drain();
    for i in 0..8 {
        assert_eq!(byes_to(&sh.sent, &format!("t{i}")), 1, "call t{i}");
    }
    // Unanswered BYEs time out; then nothing is active and the table is empty.
    sh.run_until(sh.now + 64_000);
    assert_eq!(sh.node.active_calls(), 0);
    assert_eq!(sh.node.calls().len(), 0);
}

// Regression: ended calls whose dialogs linger for retransmissions filled `max_calls`, so
// a gateway's short calls got 503 with nobody on the line.
#[test]
fn ended_calls_do_not_count_against_max_calls() {
    let mut sh = heap_shell(3600);
    for i in 0..8 {
        let (_, tag) = answered(&mut sh, &format!("e{i}"));
        sh.sip(&request(&format!("e{i}"), "BYE", 2, Some(&tag), ""));
        assert_eq!(
            sh.node.active_calls(),
            0,
            "after e{i}: {:?}",
            sh.sent.last()
        );
    }
    assert_eq!(sh.node.calls().len(), 8, "the dialogs linger");
    let (_, _) = answered(&mut sh, "e9");
    assert_eq!(sh.node.stats().calls_refused, 0);
    assert_eq!(sh.node.active_calls(), 1);
    // The table itself stays bounded: twice max_calls in all.
    for i in 10..17 {
        let (_, tag) = answered(&mut sh, &format!("e{i}"));
        sh.sip(&request(&format!("e{i}"), "BYE", 2, Some(&tag), ""));
    }
    assert_eq!(sh.node.calls().len(), 16);
    sh.sip(&request("e99", "INVITE", 1, None, &sdp()));
    assert!(sh.sent.last().unwrap().1.starts_with("SIP/2.0 503"));
}

// A response the node cannot read (here: no CSeq) is dropped, and counted as malformed.
#[test]
fn an_unreadable_response_is_counted_as_malformed() {
    let mut sh = heap_shell(3600);
    let (_, tag) = answered(&mut sh, "r1");
    let before = sh.node.stats().sip_malformed;
    let resp = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKx1\r\n\
         From: <sip:+12155550123@192.0.2.1>;tag=gw1\r\n\
         To: <sip:+18005550100@192.0.2.10>;tag={tag}\r\nCall-ID: r1@192.0.2.1\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sh.sip(&resp);
    assert_eq!(sh.node.stats().sip_malformed, before + 1);
}

#[test]
fn the_firmware_table_runs_the_same_calls() {
    let mut sh = Shell::new(Node::new(config(60), ArrayCalls::<4>::new(), at(0)));
    let id = book_one(&mut sh, "w1");
    assert!(sh.node.queue().get(&id).is_some());
    sh.run_until(200_000);
    assert!(sh.node.queue().is_empty());
    assert_eq!(sh.node.calls().len(), 0);
    assert_eq!(sh.node.active_calls(), 0);
}

#[test]
fn garbage_gets_a_stateless_answer_or_nothing() {
    let mut sh = heap_shell(3600);
    sh.sip("garbage\r\n\r\n");
    sh.sip("OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKo\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    assert!(sh.sent.last().unwrap().1.starts_with("SIP/2.0 200"));
    assert_eq!(sh.node.calls().len(), 0);
    assert!(sh.node.stats().sip_malformed >= 1);
}

#[test]
fn keepalives_are_not_errors_and_stateless_answers_follow_the_via() {
    let mut sh = heap_shell(3600);
    sh.sip("\r\n\r\n");
    sh.sip("\r\n");
    assert_eq!(sh.node.stats().sip_malformed, 0);
    assert!(sh.sent.is_empty());
    // No rport: the answer goes to the Via's port at the source address, stamped received=.
    sh.sip("OPTIONS nobodyKnowsThisScheme:x SIP/2.0\r\nVia: SIP/2.0/UDP gw.example.net:5099;branch=z9hG4bKk\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: k1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    let (to, msg) = sh.sent.last().unwrap();
    assert!(msg.starts_with("SIP/2.0 416"), "{msg}");
    assert_eq!(*to, SocketAddr::new(gw().ip(), 5099));
    assert!(
        msg.contains(&format!("branch=z9hG4bKk;received={}", gw().ip())),
        "{msg}"
    );
}

/// A caller offered callback windows picks the second offer, tomorrow morning, in New York.
#[test]
fn a_caller_chooses_tomorrow_morning_and_the_queue_keeps_that_window() {
    use crate::callback::window::{DayPart, DayRef, Hours, Span, Zone};
    let mut cfg = config(3600);
    let mut call_cfg = call::Config::new(sip_cfg());
    call_cfg.ivr.offer_windows = true;
    cfg.call = Box::leak(Box::new(call_cfg));
    let mut hours = Hours::always();
    hours
        .add_span(Span::parse("Mon-Sun 08:00-20:00").unwrap())
        .unwrap();
    cfg.hours = Box::leak(Box::new(hours));
    let mut node = Node::new(cfg, HeapCalls::with_capacity(16), at(0));
    // UTC-5: the wall clock at zero is Monday 19:00, open until 20:00.
    node.set_zone(Zone::fixed(-300));
    let mut sh = Shell::new(node);
    let (key, _) = answered(&mut sh, "w1");
    let t = sh.now + 100;
    sh.run_until(t);
    sh.press(key, Digit::D1, 8000, 100);
    sh.press(key, Digit::D1, 16000, 200);
    assert!(
        sh.stores.is_empty(),
        "nothing is booked before the caller chose"
    );
    let offers = sh.plays(key).last().expect("offers played").1.clone();
    assert_eq!(offers[0], Prompt::WindowQuestion);
    assert!(offers.contains(&Prompt::WindowAsap), "{offers:?}");
    assert!(
        offers.contains(&Prompt::DayPart(DayRef::Tomorrow, DayPart::Morning)),
        "{offers:?}"
    );
    sh.press(key, Digit::D2, 24000, 300);
    assert_eq!(sh.stores.len(), 1);
    let id = sh.stores[0].clone();
    let e = sh.node.queue().get(&id).expect("queued");
    // Tuesday 08:00–12:00 in New York.
    assert_eq!(
        (e.window.not_before, e.window.not_after),
        (
            UnixMillis(WALL0 + 13 * 3_600_000),
            UnixMillis(WALL0 + 17 * 3_600_000)
        )
    );
    sh.store_all(true);
    let t = sh.now + 30_000;
    sh.run_until(t);
    assert!(byes_to(&sh.sent, "w1") >= 1, "booked, then goodbye");

    // A caller who presses nothing gets the first offer: as soon as possible, until 20:00.
    let (key, _) = answered(&mut sh, "w2");
    let t = sh.now + 100;
    sh.run_until(t);
    // Same caller ID: cancel the first callback so this one is not a duplicate.
    sh.node.cancel_callback(at(sh.now), &id).unwrap();
    sh.drain();
    let start = sh.now;
    sh.press(key, Digit::D1, 8000, 100);
    sh.press(key, Digit::D1, 16000, 200);
    let t = sh.now + 60_000;
    sh.run_until(t);
    assert_eq!(
        sh.stores.len(),
        1,
        "the first offer was booked without a key"
    );
    let e = sh.node.queue().get(&sh.stores[0]).expect("queued");
    assert!(e.window.not_before.0 >= WALL0 + start as i64);
    assert_eq!(e.window.not_after, UnixMillis(WALL0 + 3_600_000));
}

// ---- languages -------------------------------------------------------------------------

fn bilingual_shell() -> Shell<HeapCalls> {
    let mut cfg = config(3600);
    let mut call = call::Config::new(sip_cfg());
    call.ivr.languages = 2;
    cfg.call = Box::leak(Box::new(call));
    let mut langs = Languages::default();
    langs.tags.push(Language::try_from("es").unwrap()).unwrap();
    langs
        .by_dialled
        .push((
            crate::number::PhoneNumber::parse("+18005550199").unwrap(),
            1,
        ))
        .unwrap();
    cfg.languages = langs;
    Shell::new(Node::new(cfg, HeapCalls::with_capacity(16), at(0)))
}

fn in_language(id: &str, audio: u8, language: &str) -> announce::Announcement {
    let mut a = announcement(id, 1, None, audio);
    a.language = Language::try_from(language).unwrap();
    a.offer_callback = true;
    a
}

/// Places a call to `dialled`, answers, ACKs; returns its key.
fn answered_to<T: CallTable>(sh: &mut Shell<T>, call: &str, dialled: &str) -> CallKey {
    let to = |s: String| s.replace("+18005550100", dialled);
    sh.sip(&to(request(call, "INVITE", 1, None, &sdp())));
    let key = *sh.created().last().expect("call created");
    let tag = to_tag_of(&sh.sent, call);
    sh.sip(&to(request(call, "ACK", 1, Some(&tag), "")));
    key
}

fn announcement_of<T: CallTable>(sh: &Shell<T>, p: &Playlist) -> Vec<String> {
    p.iter()
        .filter_map(|p| match p {
            Prompt::Announcement(h) => {
                Some(String::from(sh.node.announcements().get(*h)?.id.as_str()))
            }
            _ => None,
        })
        .collect()
}

fn last_play(sh: &Shell<HeapCalls>, key: CallKey) -> (Playlist, u8) {
    sh.outs
        .iter()
        .rev()
        .find_map(|o| match o {
            Output::Play {
                call,
                playlist,
                language,
            } if *call == key => Some((playlist.clone(), *language)),
            _ => None,
        })
        .expect("a playlist")
}

#[test]
fn a_caller_who_chooses_spanish_hears_the_spanish_announcement_and_books_in_spanish() {
    let mut sh = bilingual_shell();
    publish(&mut sh, in_language("outage-en", 1, "en"));
    publish(&mut sh, in_language("outage-es", 2, "es-US"));
    let key = answered(&mut sh, "l1").0;
    let (first, lang) = last_play(&sh, key);
    assert_eq!(lang, 0);
    assert_eq!(first[0], Prompt::LanguageOffer(1));
    assert_eq!(announcement_of(&sh, &first), ["outage-en"]);
    let before = sh.events().len();
    sh.run_until(sh.now + 100);
    sh.press(key, Digit::D9, 8000, 100);
    let (again, lang) = last_play(&sh, key);
    assert_eq!(lang, 1, "prompts in Spanish from now on");
    assert_eq!(again[0], Prompt::LanguageOffer(0));
    assert_eq!(announcement_of(&sh, &again), ["outage-es"]);
    assert_eq!(sh.node.call(key).unwrap().language(), 1);
    // The English announcement was cut short (reported in English), the Spanish one started.
    let evs = sh.events();
    let lang_of = |t: &str, id: &str| {
        evs.iter()
            .find(|e| {
                e.kind.type_str() == t
                    && match &e.kind {
                        EventKind::AnnouncementStarted {
                            announcement_id, ..
                        }
                        | EventKind::AnnouncementCompleted {
                            announcement_id, ..
                        } => announcement_id.as_str() == id,
                        _ => false,
                    }
            })
            .map(|e| String::from(e.language.clone().unwrap().as_str()))
    };
    assert_eq!(
        lang_of("announcement.completed", "outage-en").as_deref(),
        Some("en")
    );
    assert_eq!(
        lang_of("announcement.started", "outage-es").as_deref(),
        Some("es")
    );
    assert!(evs[..before]
        .iter()
        .all(|e| e.language.as_deref() == Some("en")));
    // Book: the queue entry (and so the CallbackRequest) carries the language.
    sh.press(key, Digit::D1, 16000, 200);
    sh.press(key, Digit::D1, 24000, 300);
    assert_eq!(sh.stores.len(), 1);
    let id = sh.stores[0].clone();
    assert_eq!(sh.node.queue().get(&id).unwrap().language.as_str(), "es");
    sh.store_all(true);
    let (booked, lang) = last_play(&sh, key);
    assert!(booked.contains(&Prompt::Booked));
    assert_eq!(lang, 1);
    let t = sh.now + 30_000;
    sh.run_until(t);
    let evs = sh.events();
    let requested = evs
        .iter()
        .find(|e| e.kind.type_str() == "callback.requested")
        .unwrap();
    assert_eq!(requested.language.as_deref(), Some("es"));
}

#[test]
fn another_caller_stays_in_english_and_a_spanish_number_starts_in_spanish() {
    let mut sh = bilingual_shell();
    publish(&mut sh, in_language("outage-en", 1, "en"));
    publish(&mut sh, in_language("outage-es", 2, "es"));
    let mut general = announcement("general", 1, None, 3);
    general.priority = -1;
    publish(&mut sh, general);
    let en = answered(&mut sh, "l2").0;
    let (p, lang) = last_play(&sh, en);
    assert_eq!((lang, p[0]), (0, Prompt::LanguageOffer(1)));
    sh.run_until(sh.now + 5_000);
    // An announcement without a language is the default language's.
    let heard: Vec<String> = sh
        .plays(en)
        .iter()
        .flat_map(|(_, p)| announcement_of(&sh, p))
        .collect();
    assert_eq!(heard, ["outage-en", "general"]);
    let es = answered_to(&mut sh, "l3", "+18005550199");
    let (p, lang) = last_play(&sh, es);
    assert_eq!(lang, 1);
    assert_eq!(p[0], Prompt::LanguageOffer(0));
    assert_eq!(announcement_of(&sh, &p), ["outage-es"]);
    let offered = sh
        .events()
        .into_iter()
        .find(|e| e.call == Some(es) && e.kind.type_str() == "call.offered")
        .unwrap()
        .language
        .clone();
    assert_eq!(offered.as_deref(), Some("es"));
}

#[test]
fn with_nothing_in_the_callers_language_the_default_plays() {
    let mut sh = bilingual_shell();
    publish(&mut sh, in_language("outage-en", 1, "en"));
    let es = answered_to(&mut sh, "l4", "+18005550199");
    let (p, lang) = last_play(&sh, es);
    assert_eq!(lang, 1, "prompts stay Spanish");
    assert_eq!(announcement_of(&sh, &p), ["outage-en"]);
}

#[test]
fn one_language_plays_every_announcement_as_before() {
    let mut sh = heap_shell(3600);
    publish(&mut sh, in_language("a-pt", 1, "pt-BR"));
    let key = answered(&mut sh, "l5").0;
    let (p, lang) = last_play(&sh, key);
    assert_eq!(lang, 0);
    assert_eq!(p.as_slice().len(), 1, "no language offer: {p:?}");
    assert_eq!(announcement_of(&sh, &p), ["a-pt"]);
}

#[test]
fn languages_match_tags_and_primary_subtags() {
    let mut l = Languages::default();
    l.tags.push(Language::try_from("es").unwrap()).unwrap();
    assert_eq!(l.index_of("ES"), Some(1));
    assert_eq!(l.index_of("es-MX"), Some(1));
    assert_eq!(l.index_of("en-GB"), Some(0));
    assert_eq!(l.index_of("fr"), None);
    assert_eq!(l.index_of(""), None);
    assert_eq!(l.tag(7).as_str(), "en");
    assert_eq!(l.count(), 2);
}

/// The cache writes the node asks for: one per version that passed the version rule.
fn stored_announcements<T: CallTable>(sh: &Shell<T>) -> Vec<(String, u32)> {
    sh.outs
        .iter()
        .filter_map(|o| match o {
            Output::StoreAnnouncement { id, version } => Some((id.as_str().to_owned(), *version)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_node_asks_to_cache_each_new_version_once_and_nothing_it_refused() {
    let mut sh = heap_shell(3600);
    let upsert = |sh: &mut Shell<HeapCalls>, a: announce::Announcement| {
        let r = sh.node.handle_crm(
            at(sh.now),
            CrmInput::Announcement(announce::Input::Upsert(a)),
        );
        sh.drain();
        r
    };
    publish(&mut sh, announcement("out", 3, None, 1));
    assert_eq!(stored_announcements(&sh), [("out".to_owned(), 3)]);
    // The same version again (a retained message on reconnect): nothing to write.
    upsert(&mut sh, announcement("out", 3, None, 1)).unwrap();
    // An older version, and the same version with other content: refused, nothing written.
    assert!(matches!(
        upsert(&mut sh, announcement("out", 2, None, 1)),
        Err(Error::Announcement(announce::Error::OlderVersion {
            current: 3
        }))
    ));
    assert!(matches!(
        upsert(&mut sh, announcement("out", 3, None, 9)),
        Err(Error::Announcement(
            announce::Error::SameVersionChanged { .. }
        ))
    ));
    assert_eq!(stored_announcements(&sh), [("out".to_owned(), 3)]);
    // A newer version is written, after the events that say what it became; one still
    // waiting for its audio is written too (it is the stored version).
    upsert(&mut sh, announcement("out", 4, None, 7)).unwrap();
    assert_eq!(
        stored_announcements(&sh),
        [("out".to_owned(), 3), ("out".to_owned(), 4)]
    );
    let last_event = sh
        .outs
        .iter()
        .rposition(|o| matches!(o, Output::Announcement(_)))
        .unwrap();
    let store = sh
        .outs
        .iter()
        .rposition(|o| matches!(o, Output::StoreAnnouncement { .. }))
        .unwrap();
    assert!(store > last_event, "written after its events");
    // Withdrawn: the event that tells the shell to delete it.
    sh.node
        .handle_crm(
            at(sh.now),
            CrmInput::Announcement(announce::Input::Withdraw(
                AnnouncementId::new("out").unwrap(),
            )),
        )
        .unwrap();
    sh.drain();
    assert!(matches!(
        sh.outs.last(),
        Some(Output::Announcement(announce::Event::Withdrawn {
            version: 4,
            ..
        }))
    ));
    // Published again after the withdrawal, even at an older version: a new announcement.
    upsert(&mut sh, announcement("out", 1, None, 1)).unwrap();
    assert_eq!(
        stored_announcements(&sh).last(),
        Some(&("out".to_owned(), 1))
    );
}
