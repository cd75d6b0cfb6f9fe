//! Transcript tests of the UAS dialog on virtual time.

extern crate alloc;
extern crate std;

use super::*;
use crate::limits::SIP_MAX_VIAS;
use crate::sip::emit::tests::{incoming, oracle, split};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec as StdVec;

static CFG: Config = Config::new("sip:ccedge@10.0.0.2:5060", "10.0.0.2:5060");
static CFG_QUIET: Config = Config {
    send_trying: false,
    ..Config::new("sip:ccedge@10.0.0.2:5060", "10.0.0.2:5060")
};

/// Our tag: `incoming(.., Some("ours"))` puts `tag=abc` on To.
const TAG: u64 = 0xabc;
const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

fn ms(t: u64) -> Instant {
    Instant::from_millis(t)
}

/// A dialog plus everything it sent and reported, with the virtual time of each.
struct H {
    d: Dialog,
    now: Instant,
    /// `(ms, "200 INVITE")` for responses, `(ms, "BYE 1")` for requests.
    sent: StdVec<(u64, String)>,
    raw: StdVec<StdVec<u8>>,
    events: StdVec<(u64, Event)>,
}

impl H {
    fn new(cfg: &'static Config) -> H {
        H::with_invite(cfg, &incoming(Method::Invite, 1, None))
    }

    fn with_invite(cfg: &'static Config, invite: &Incoming<'_>) -> H {
        let d = Dialog::new(ms(0), invite, cfg, TAG).unwrap();
        let mut h = H {
            d,
            now: ms(0),
            sent: StdVec::new(),
            raw: StdVec::new(),
            events: StdVec::new(),
        };
        h.drain();
        h
    }

    /// A dialog answered and acknowledged at t = 0, with the transcript cleared.
    fn confirmed() -> H {
        let mut h = H::new(&CFG);
        h.d.answer(ms(0), SDP).unwrap();
        h.req(incoming(Method::Ack, 1, Some("ours")));
        h.clear();
        h
    }

    fn clear(&mut self) {
        self.sent.clear();
        self.raw.clear();
        self.events.clear();
    }

    fn drain(&mut self) {
        let t = self.now.as_millis();
        let mut buf = [0u8; crate::limits::SIP_EMIT_MAX];
        let mut count = 0;
        while let Some(r) = self.d.poll_transmit(&mut buf) {
            let n = r.expect("SIP_EMIT_MAX suffices");
            let msg = &buf[..n];
            let _ = oracle(msg);
            let (start, headers, _) = split(msg);
            let cseq = headers
                .iter()
                .find(|(n, _)| n == "CSeq")
                .map(|(_, v)| v.clone())
                .unwrap();
            let (num, method) = cseq.split_once(' ').unwrap();
            let summary = match start.strip_prefix("SIP/2.0 ") {
                Some(rest) => format!("{} {method}", &rest[..3]),
                None => format!("{method} {num}"),
            };
            self.sent.push((t, summary));
            self.raw.push(msg.to_vec());
            count += 1;
            assert!(count <= 8, "runaway output");
        }
        while let Some(e) = self.d.poll_event() {
            self.events.push((t, e));
        }
    }

    fn at(&mut self, t: u64) -> &mut Self {
        self.run_until(t);
        self.now = ms(t);
        self
    }

    fn req(&mut self, r: Incoming<'_>) {
        self.d.handle_request(self.now, &r).unwrap();
        self.drain();
    }

    fn resp(&mut self, method: Method, cseq: u32, status: u16) {
        let branch = emit::branch(LocalTag(TAG), cseq);
        let r = IncomingResponse {
            status,
            top_branch: Some(branch.as_str()),
            call_id: "a84b4c76e66710@10.0.0.1",
            from_tag: Some("abc"),
            to_tag: Some("gw42"),
            cseq,
            cseq_method: method,
        };
        self.d.handle_response(self.now, &r).unwrap();
        self.drain();
    }

    /// Fires every timer up to `t` ms, in order, recording what each produced.
    fn run_until(&mut self, t: u64) {
        for _ in 0..10_000 {
            match self.d.poll_timeout() {
                Some(at) if at <= ms(t) => {
                    assert!(at >= self.now, "deadline in the past");
                    self.now = at;
                    self.d.handle_timeout(at);
                    self.drain();
                }
                _ => break,
            }
        }
        self.now = self.now.max(ms(t));
    }

    fn sent(&self) -> StdVec<(u64, &str)> {
        self.sent.iter().map(|(t, s)| (*t, s.as_str())).collect()
    }

    fn header(&self, i: usize, name: &str) -> Option<String> {
        let (_, h, _) = split(&self.raw[i]);
        h.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

fn times(h: &H, what: &str) -> StdVec<u64> {
    h.sent
        .iter()
        .filter(|(_, s)| s == what)
        .map(|(t, _)| *t)
        .collect()
}

fn with_body(mut r: Incoming<'static>, body: &'static [u8]) -> Incoming<'static> {
    r.body = body;
    r.content_type = Some("application/sdp");
    r
}

// ---- initial INVITE --------------------------------------------------------------------------

#[test]
fn trying_ringing_answer_ack() {
    let mut h = H::new(&CFG);
    assert_eq!(h.sent(), [(0, "100 INVITE")]);
    assert_eq!(h.d.state(), DialogState::Early);
    h.at(100);
    h.d.ring(h.now).unwrap();
    h.drain();
    h.at(300);
    h.d.answer(h.now, SDP).unwrap();
    h.drain();
    assert_eq!(h.d.state(), DialogState::Confirmed);
    assert_eq!(h.d.invite_state(), TxState::Accepted);
    h.at(350).req(incoming(Method::Ack, 1, Some("ours")));
    assert_eq!(h.d.invite_state(), TxState::Terminated);
    h.at(60_000);
    assert_eq!(
        h.sent(),
        [(0, "100 INVITE"), (100, "180 INVITE"), (300, "200 INVITE")]
    );
    assert_eq!(h.events, [(350, Event::Confirmed)]);
    assert_eq!(h.d.poll_timeout(), None);
    assert!(!h.d.is_done(), "a confirmed call lives on");
}

#[test]
fn answer_headers_are_complete() {
    let mut h = H::new(&CFG);
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    let i = 1;
    let (start, headers, body) = split(&h.raw[i]);
    assert_eq!(start, "SIP/2.0 200 OK");
    let req = incoming(Method::Invite, 1, None);
    let vias: StdVec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "Via")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(vias, req.vias.as_slice());
    assert_eq!(h.header(i, "From").unwrap(), req.from);
    assert_eq!(
        h.header(i, "To").unwrap(),
        "<sip:+18005550100@10.0.0.2>;tag=abc"
    );
    assert_eq!(h.header(i, "Call-ID").unwrap(), req.call_id);
    assert_eq!(h.header(i, "CSeq").unwrap(), "1 INVITE");
    assert_eq!(
        h.header(i, "Contact").unwrap(),
        "<sip:ccedge@10.0.0.2:5060>"
    );
    assert_eq!(h.header(i, "Allow").unwrap(), emit::ALLOW);
    assert_eq!(h.header(i, "Server").unwrap(), emit::SERVER);
    assert_eq!(h.header(i, "Content-Type").unwrap(), "application/sdp");
    assert_eq!(body, SDP);
    // 100 Trying carries no Contact and no body.
    assert_eq!(h.header(0, "Contact"), None);
    assert_eq!(h.header(0, "Content-Length").unwrap(), "0");
}

#[test]
fn no_trying_when_configured_but_retransmission_gets_one() {
    let mut h = H::new(&CFG_QUIET);
    assert!(h.sent.is_empty());
    h.at(500).req(incoming(Method::Invite, 1, None));
    assert_eq!(h.sent(), [(500, "100 INVITE")]);
}

#[test]
fn invite_retransmissions_repeat_the_last_response() {
    let mut h = H::new(&CFG);
    h.d.ring(ms(0)).unwrap();
    h.drain();
    h.at(200).req(incoming(Method::Invite, 1, None));
    h.at(250);
    h.d.answer(h.now, SDP).unwrap();
    h.drain();
    h.at(300).req(incoming(Method::Invite, 1, None));
    assert_eq!(
        h.sent(),
        [
            (0, "100 INVITE"),
            (0, "180 INVITE"),
            (200, "180 INVITE"),
            (250, "200 INVITE"),
            (300, "200 INVITE"),
        ]
    );
    assert!(h.events.is_empty());
}

#[test]
fn two_xx_is_retransmitted_until_ack_timeout_then_bye() {
    let mut h = H::new(&CFG);
    h.clear();
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    h.at(40_000);
    assert_eq!(
        times(&h, "200 INVITE"),
        [0, 500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    assert_eq!(
        h.events,
        [(32_000, Event::Terminated(TerminationReason::AckTimeout))]
    );
    assert_eq!(times(&h, "BYE 1"), [32_000, 32_500, 33_500, 35_500, 39_500]);
    h.resp(Method::Bye, 1, 200);
    assert_eq!(h.events.len(), 1, "Terminated is reported once");
    h.at(50_000);
    assert!(h.d.is_done());
}

#[test]
fn ack_stops_2xx_retransmission() {
    let mut h = H::new(&CFG);
    h.clear();
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    h.at(2000).req(incoming(Method::Ack, 1, Some("ours")));
    h.at(40_000);
    assert_eq!(times(&h, "200 INVITE"), [0, 500, 1500]);
    assert_eq!(h.events, [(2000, Event::Confirmed)]);
    // A retransmitted ACK changes nothing; an ACK with a foreign To tag is ignored.
    h.req(incoming(Method::Ack, 1, Some("ours")));
    h.req(incoming(Method::Ack, 1, Some("zzz")));
    assert_eq!(h.events.len(), 1);
    assert_eq!(h.sent.len(), 3);
}

#[test]
fn ack_with_wrong_tag_does_not_confirm() {
    let mut h = H::new(&CFG);
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    h.req(incoming(Method::Ack, 1, Some("zzz")));
    assert!(h.events.is_empty());
    assert_eq!(h.d.invite_state(), TxState::Accepted);
}

#[test]
fn reject_retransmits_on_timer_g_until_ack_then_timer_i() {
    let mut h = H::new(&CFG);
    h.clear();
    h.d.reject(ms(0), 486).unwrap();
    h.drain();
    assert_eq!(
        h.events,
        [(0, Event::Terminated(TerminationReason::Rejected))]
    );
    h.at(2000).req(incoming(Method::Ack, 1, Some("ours")));
    assert_eq!(h.d.invite_state(), TxState::Confirmed);
    h.at(6999);
    assert!(!h.d.is_done(), "Timer I absorbs ACKs");
    h.at(7000);
    assert!(h.d.is_done());
    assert_eq!(times(&h, "486 INVITE"), [0, 500, 1500]);
    assert_eq!(h.d.poll_timeout(), None);
}

#[test]
fn reject_without_ack_gives_up_on_timer_h() {
    let mut h = H::new(&CFG);
    h.clear();
    h.d.reject(ms(0), 488).unwrap();
    h.drain();
    h.at(31_999);
    assert!(!h.d.is_done());
    h.at(32_000);
    assert!(h.d.is_done());
    assert_eq!(
        times(&h, "488 INVITE"),
        [0, 500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
}

#[test]
fn commands_check_state_and_values() {
    let mut h = H::new(&CFG);
    assert_eq!(h.d.reject(ms(0), 200), Err(Error::BadStatus));
    assert_eq!(h.d.reject(ms(0), 700), Err(Error::BadStatus));
    assert_eq!(h.d.hangup(ms(0)), Err(Error::InvalidState));
    assert_eq!(h.d.refer(ms(0), "sip:x@y"), Err(Error::InvalidState));
    assert_eq!(
        h.d.answer(ms(0), &[0u8; SIP_BODY_MAX + 1]),
        Err(Error::BodyTooLarge)
    );
    assert_eq!(h.d.invite_state(), TxState::Proceeding);
    assert_eq!(h.d.answer_reinvite(ms(0), SDP), Err(Error::InvalidState));
    h.d.answer(ms(0), SDP).unwrap();
    assert_eq!(h.d.answer(ms(0), SDP), Err(Error::InvalidState));
    assert_eq!(h.d.ring(ms(0)), Err(Error::InvalidState));
    assert_eq!(h.d.reject(ms(0), 486), Err(Error::InvalidState));
    let mut other = incoming(Method::Bye, 2, Some("ours"));
    other.call_id = "other";
    assert_eq!(h.d.handle_request(ms(0), &other), Err(Error::WrongCallId));
}

#[test]
fn new_refuses_bad_invites() {
    let bye = incoming(Method::Bye, 1, None);
    assert_eq!(
        Dialog::new(ms(0), &bye, &CFG, 1).err(),
        Some(Error::NotInvite)
    );
    let tagged = incoming(Method::Invite, 1, Some("ours"));
    assert_eq!(
        Dialog::new(ms(0), &tagged, &CFG, 1).err(),
        Some(Error::HasToTag)
    );
    let mut no_tag = incoming(Method::Invite, 1, None);
    no_tag.from_tag = None;
    assert_eq!(
        Dialog::new(ms(0), &no_tag, &CFG, 1).err(),
        Some(Error::Malformed)
    );
    let huge: &'static str =
        alloc::boxed::Box::leak("x".repeat(SIP_DIALOG_ARENA / 2).into_boxed_str());
    let mut big = incoming(Method::Invite, 1, None);
    big.from = huge;
    big.to = huge;
    assert_eq!(
        Dialog::new(ms(0), &big, &CFG, 1).err(),
        Some(Error::TooLarge)
    );
    let mut long_id = incoming(Method::Invite, 1, None);
    long_id.call_id = alloc::boxed::Box::leak("x".repeat(SIP_CALL_ID_MAX + 1).into_boxed_str());
    assert_eq!(
        Dialog::new(ms(0), &long_id, &CFG, 1).err(),
        Some(Error::TooLarge)
    );
}

// ---- CANCEL ----------------------------------------------------------------------------------

#[test]
fn cancel_before_answer_gives_200_and_487() {
    let mut h = H::new(&CFG);
    h.d.ring(ms(0)).unwrap();
    h.drain();
    h.clear();
    h.at(1000).req(incoming(Method::Cancel, 1, None));
    assert_eq!(h.sent(), [(1000, "200 CANCEL"), (1000, "487 INVITE")]);
    assert_eq!(
        h.events,
        [
            (1000, Event::Cancelled),
            (1000, Event::Terminated(TerminationReason::Cancelled))
        ]
    );
    assert_eq!(h.d.answer(h.now, SDP), Err(Error::InvalidState));
    // The 200 to CANCEL names the CANCEL; the 487 keeps the INVITE's CSeq and our tag.
    assert_eq!(h.header(0, "CSeq").unwrap(), "1 CANCEL");
    assert!(h.header(1, "To").unwrap().ends_with(";tag=abc"));
    h.at(1200).req(incoming(Method::Cancel, 1, None));
    h.at(1600).req(incoming(Method::Ack, 1, Some("ours")));
    h.at(6600);
    assert!(h.d.is_done());
    assert_eq!(
        h.sent(),
        [
            (1000, "200 CANCEL"),
            (1000, "487 INVITE"),
            (1200, "200 CANCEL"),
            (1500, "487 INVITE"),
        ]
    );
    assert_eq!(h.events.len(), 2);
}

#[test]
fn cancel_after_answer_only_gets_200() {
    let mut h = H::new(&CFG);
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    h.clear();
    h.at(100).req(incoming(Method::Cancel, 1, None));
    assert_eq!(h.sent(), [(100, "200 CANCEL")]);
    assert!(h.events.is_empty());
    assert_eq!(h.d.state(), DialogState::Confirmed);
}

#[test]
fn cancel_for_unknown_transaction_gets_481() {
    let mut h = H::new(&CFG);
    h.clear();
    h.req(incoming(Method::Cancel, 7, None));
    assert_eq!(h.sent(), [(0, "481 CANCEL")]);
    assert_eq!(h.d.invite_state(), TxState::Proceeding);
}

// ---- BYE -------------------------------------------------------------------------------------

#[test]
fn remote_bye_gets_200_and_terminates_retransmission_gets_200_again() {
    let mut h = H::confirmed();
    h.at(10_000).req(incoming(Method::Bye, 2, Some("ours")));
    assert_eq!(h.sent(), [(10_000, "200 BYE")]);
    assert_eq!(
        h.events,
        [(10_000, Event::Terminated(TerminationReason::RemoteBye))]
    );
    h.at(10_500).req(incoming(Method::Bye, 2, Some("ours")));
    assert_eq!(h.sent.len(), 2);
    assert_eq!(h.events.len(), 1);
    // A new request after the end: 481.
    h.at(11_000).req(incoming(Method::Options, 3, Some("ours")));
    assert_eq!(h.sent.last().unwrap().1, "481 OPTIONS");
    // Timer J keeps the dialog around for 64*T1 after the last answer.
    h.at(42_999);
    assert!(!h.d.is_done());
    h.at(43_000);
    assert!(h.d.is_done());
    assert_eq!(h.d.termination(), Some(TerminationReason::RemoteBye));
}

#[test]
fn remote_bye_while_2xx_unacked_stops_retransmission() {
    let mut h = H::new(&CFG);
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    h.clear();
    h.at(600).req(incoming(Method::Bye, 2, Some("ours")));
    h.at(5000);
    assert_eq!(h.sent(), [(500, "200 INVITE"), (600, "200 BYE")]);
}

#[test]
fn bye_on_early_dialog_gets_200_and_487() {
    let mut h = H::new(&CFG);
    h.clear();
    h.at(100).req(incoming(Method::Bye, 2, Some("ours")));
    assert_eq!(h.sent(), [(100, "200 BYE"), (100, "487 INVITE")]);
    assert_eq!(
        h.events,
        [(100, Event::Terminated(TerminationReason::RemoteBye))]
    );
}

#[test]
fn bye_with_wrong_tags_gets_481_echoing_the_request() {
    let mut h = H::confirmed();
    h.req(incoming(Method::Bye, 2, Some("zzz")));
    assert_eq!(h.sent(), [(0, "481 BYE")]);
    assert_eq!(
        h.header(0, "To").unwrap(),
        "<sip:+18005550100@10.0.0.2>;tag=other"
    );
    let mut wrong_from = incoming(Method::Bye, 2, Some("ours"));
    wrong_from.from_tag = Some("nope");
    wrong_from.from = "<sip:someone@else>;tag=nope";
    h.req(wrong_from);
    assert_eq!(h.sent()[1], (0, "481 BYE"));
    assert_eq!(h.header(1, "From").unwrap(), "<sip:someone@else>;tag=nope");
    assert!(h.events.is_empty());
    assert_eq!(h.d.state(), DialogState::Confirmed);
}

#[test]
fn local_bye_retransmits_on_timer_e_until_200() {
    let mut h = H::confirmed();
    h.at(1000);
    h.d.hangup(h.now).unwrap();
    h.drain();
    h.d.hangup(h.now).unwrap();
    h.drain();
    h.at(5000);
    h.resp(Method::Bye, 1, 200);
    h.at(20_000);
    assert_eq!(times(&h, "BYE 1"), [1000, 1500, 2500, 4500]);
    assert_eq!(
        h.events,
        [(5000, Event::Terminated(TerminationReason::LocalBye))]
    );
    assert!(h.d.is_done());
    // The BYE itself: to the remote target, From with our tag, To with theirs.
    let (start, _, _) = split(&h.raw[0]);
    assert_eq!(start, "BYE sip:gw@10.0.0.1:5060 SIP/2.0");
    assert_eq!(
        h.header(0, "From").unwrap(),
        "<sip:+18005550100@10.0.0.2>;tag=abc"
    );
    assert_eq!(
        h.header(0, "To").unwrap(),
        "\"Caller\" <sip:+12155550123@10.0.0.1>;tag=gw42"
    );
    assert_eq!(
        h.header(0, "Via").unwrap(),
        "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKccabc.1;rport"
    );
    assert_eq!(h.header(0, "User-Agent").unwrap(), emit::SERVER);
}

#[test]
fn local_bye_unanswered_times_out_on_timer_f() {
    let mut h = H::confirmed();
    h.d.hangup(ms(0)).unwrap();
    h.drain();
    h.at(70_000);
    assert_eq!(
        times(&h, "BYE 1"),
        [0, 500, 1500, 3500, 7500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    assert_eq!(
        h.events,
        [(32_000, Event::Terminated(TerminationReason::ByeTimeout))]
    );
    assert!(h.d.is_done());
}

#[test]
fn bye_after_provisional_retransmits_every_t2() {
    let mut h = H::confirmed();
    h.d.hangup(ms(0)).unwrap();
    h.drain();
    h.at(600);
    h.resp(Method::Bye, 1, 100);
    h.at(20_000);
    // Timer E, already due at 1.5 s, fires in Proceeding and restarts at T2 (§17.1.2.2).
    assert_eq!(
        times(&h, "BYE 1"),
        [0, 500, 1500, 5500, 9500, 13_500, 17_500]
    );
    // A response for another transaction or with a foreign branch is ignored.
    h.resp(Method::Bye, 9, 200);
    let stray = IncomingResponse {
        status: 200,
        top_branch: Some("z9hG4bKother"),
        call_id: "a84b4c76e66710@10.0.0.1",
        from_tag: Some("abc"),
        to_tag: Some("gw42"),
        cseq: 1,
        cseq_method: Method::Bye,
    };
    h.d.handle_response(h.now, &stray).unwrap();
    h.drain();
    assert!(h.events.is_empty());
}

#[test]
fn hangup_before_ack_waits_for_the_ack() {
    let mut h = H::new(&CFG);
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    h.clear();
    h.at(200);
    h.d.hangup(h.now).unwrap();
    h.drain();
    assert!(h.sent.is_empty(), "no BYE before the ACK (RFC 3261 §15)");
    h.at(800).req(incoming(Method::Ack, 1, Some("ours")));
    assert_eq!(h.sent(), [(500, "200 INVITE"), (800, "BYE 1")]);
    assert_eq!(h.events, [(800, Event::Confirmed)]);
}

// ---- in-dialog requests ----------------------------------------------------------------------

#[test]
fn in_dialog_options_info_update_unknown() {
    let mut h = H::confirmed();
    h.req(incoming(Method::Options, 2, Some("ours")));
    h.req(incoming(Method::Info, 3, Some("ours")));
    h.req(incoming(Method::Update, 4, Some("ours")));
    let mut unknown = incoming(Method::Other, 5, Some("ours"));
    unknown.method_token = "FROB";
    unknown.cseq_method = Method::Other;
    h.req(unknown);
    h.req(incoming(Method::Notify, 6, Some("ours")));
    h.req(incoming(Method::Info, 6, Some("ours")));
    h.req(incoming(Method::Info, 3, Some("ours")));
    assert_eq!(
        h.sent(),
        [
            (0, "200 OPTIONS"),
            (0, "200 INFO"),
            (0, "200 UPDATE"),
            (0, "501 FROB"),
            (0, "481 NOTIFY"),
            (0, "500 INFO"),
            (0, "500 INFO"),
        ]
    );
    assert_eq!(h.header(0, "Allow").unwrap(), emit::ALLOW);
    assert_eq!(h.header(2, "Allow"), None);
    assert_eq!(
        h.header(2, "Session-Expires"),
        None,
        "no session timer was asked for"
    );
    assert_eq!(h.header(3, "Allow").unwrap(), emit::ALLOW);
    assert_eq!(h.header(1, "Allow"), None);
    assert!(h.header(1, "To").unwrap().ends_with(";tag=abc"));
    assert!(h.events.is_empty());
}

#[test]
fn request_without_to_tag_inside_dialog_gets_481() {
    let mut h = H::confirmed();
    h.req(incoming(Method::Bye, 2, None));
    assert_eq!(h.sent(), [(0, "481 BYE")]);
    assert_eq!(h.d.state(), DialogState::Confirmed);
}

// ---- re-INVITE -------------------------------------------------------------------------------

#[test]
fn reinvite_answered_and_acked() {
    let mut h = H::confirmed();
    h.at(5000).req(with_body(
        incoming(Method::Invite, 2, Some("ours")),
        b"v=0\r\n",
    ));
    assert_eq!(h.events, [(5000, Event::ReInvite)]);
    h.at(5010);
    h.d.answer_reinvite(h.now, b"v=0\r\na=sendonly\r\n")
        .unwrap();
    h.drain();
    h.at(5600).req(incoming(Method::Invite, 2, Some("ours")));
    h.at(5700).req(incoming(Method::Ack, 2, Some("ours")));
    h.at(60_000);
    assert_eq!(
        h.sent(),
        [
            (5000, "100 INVITE"),
            (5010, "200 INVITE"),
            (5510, "200 INVITE"),
            (5600, "200 INVITE"),
        ]
    );
    assert_eq!(h.header(1, "CSeq").unwrap(), "2 INVITE");
    let (_, _, body) = split(&h.raw[1]);
    assert_eq!(body, b"v=0\r\na=sendonly\r\n");
    assert_eq!(h.events.len(), 1);
    assert_eq!(h.d.state(), DialogState::Confirmed);
}

#[test]
fn reinvite_updates_the_remote_target() {
    let mut h = H::confirmed();
    let mut re = incoming(Method::Invite, 2, Some("ours"));
    re.contact_uri = Some("sip:gw@10.0.0.7:5070");
    h.req(re);
    assert_eq!(h.d.remote_target(), b"sip:gw@10.0.0.7:5070");
    h.d.reject_reinvite(h.now, 488).unwrap();
    h.d.hangup(h.now).unwrap();
    h.drain();
    let bye = h.raw.iter().position(|m| m.starts_with(b"BYE ")).unwrap();
    assert!(h.raw[bye].starts_with(b"BYE sip:gw@10.0.0.7:5070 SIP/2.0\r\n"));
}

#[test]
fn overlapping_reinvites_get_500_or_491() {
    let mut h = H::confirmed();
    h.req(incoming(Method::Invite, 2, Some("ours")));
    h.req(incoming(Method::Invite, 3, Some("ours")));
    h.d.answer_reinvite(h.now, SDP).unwrap();
    h.drain();
    h.req(incoming(Method::Invite, 4, Some("ours")));
    assert_eq!(
        h.sent(),
        [
            (0, "100 INVITE"),
            (0, "500 INVITE"),
            (0, "200 INVITE"),
            (0, "491 INVITE"),
        ]
    );
    assert_eq!(h.header(1, "Retry-After").unwrap(), "3");
    assert_eq!(h.events, [(0, Event::ReInvite)]);
    // Before the initial 2xx is acknowledged, a re-INVITE gets 491 too.
    let mut h = H::new(&CFG);
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    h.clear();
    h.req(incoming(Method::Invite, 2, Some("ours")));
    assert_eq!(h.sent(), [(0, "491 INVITE")]);
}

#[test]
fn reinvite_rejected_keeps_the_dialog() {
    let mut h = H::confirmed();
    h.req(incoming(Method::Invite, 2, Some("ours")));
    h.d.reject_reinvite(h.now, 488).unwrap();
    h.drain();
    h.at(1000).req(incoming(Method::Ack, 2, Some("ours")));
    h.at(10_000);
    assert_eq!(times(&h, "488 INVITE"), [0, 500]);
    assert_eq!(h.d.state(), DialogState::Confirmed);
    // A later re-INVITE is accepted again.
    h.req(incoming(Method::Invite, 3, Some("ours")));
    assert_eq!(h.events.last(), Some(&(10_000, Event::ReInvite)));
}

#[test]
fn reinvite_cancelled() {
    let mut h = H::confirmed();
    h.req(incoming(Method::Invite, 2, Some("ours")));
    h.clear();
    h.req(incoming(Method::Cancel, 2, Some("ours")));
    assert_eq!(h.sent(), [(0, "200 CANCEL"), (0, "487 INVITE")]);
    assert_eq!(h.events, [(0, Event::ReInviteCancelled)]);
    assert_eq!(h.d.state(), DialogState::Confirmed);
    assert_eq!(h.d.answer_reinvite(h.now, SDP), Err(Error::InvalidState));
}

#[test]
fn hangup_answers_a_pending_reinvite_with_487() {
    let mut h = H::confirmed();
    h.req(incoming(Method::Invite, 2, Some("ours")));
    h.d.hangup(h.now).unwrap();
    h.drain();
    assert_eq!(
        h.sent(),
        [(0, "100 INVITE"), (0, "487 INVITE"), (0, "BYE 1")]
    );
    h.resp(Method::Bye, 1, 200);
    h.req(incoming(Method::Ack, 2, Some("ours")));
    h.at(100_000);
    assert!(h.d.is_done());
}

#[test]
fn reinvite_ack_timeout_ends_the_call() {
    let mut h = H::confirmed();
    h.req(incoming(Method::Invite, 2, Some("ours")));
    h.d.answer_reinvite(h.now, SDP).unwrap();
    h.drain();
    h.at(33_000);
    assert_eq!(
        h.events,
        [
            (0, Event::ReInvite),
            (32_000, Event::Terminated(TerminationReason::AckTimeout))
        ]
    );
    assert_eq!(times(&h, "BYE 1"), [32_000, 32_500]);
}

#[test]
fn out_of_order_cseq_gets_500() {
    let mut h = H::confirmed();
    h.req(incoming(Method::Options, 5, Some("ours")));
    h.req(incoming(Method::Info, 4, Some("ours")));
    h.req(incoming(Method::Invite, 3, Some("ours")));
    assert_eq!(
        h.sent(),
        [(0, "200 OPTIONS"), (0, "500 INFO"), (0, "500 INVITE")]
    );
    assert!(h.events.is_empty());
}

// ---- REFER -----------------------------------------------------------------------------------

#[test]
fn refer_accepted_then_notify_progress() {
    let mut h = H::confirmed();
    h.d.refer(ms(0), "sip:agent@pbx.example.com").unwrap();
    h.drain();
    assert_eq!(
        h.d.refer(ms(0), "sip:other@pbx.example.com"),
        Err(Error::Busy)
    );
    assert_eq!(h.sent(), [(0, "REFER 1")]);
    assert_eq!(
        h.header(0, "Refer-To").unwrap(),
        "<sip:agent@pbx.example.com>"
    );
    assert_eq!(
        h.header(0, "Referred-By").unwrap(),
        "<sip:ccedge@10.0.0.2:5060>"
    );
    assert_eq!(
        h.header(0, "Contact").unwrap(),
        "<sip:ccedge@10.0.0.2:5060>"
    );
    h.at(100);
    h.resp(Method::Refer, 1, 202);
    let mut notify = incoming(Method::Notify, 2, Some("ours"));
    notify.content_type = Some("message/sipfrag");
    notify.body = b"SIP/2.0 100 Trying\r\n";
    h.at(200).req(notify.clone());
    notify.cseq = 3;
    notify.body = b"SIP/2.0 200 OK\r\n";
    h.at(900).req(notify);
    h.d.hangup(h.now).unwrap();
    h.drain();
    assert_eq!(
        h.sent(),
        [
            (0, "REFER 1"),
            (200, "200 NOTIFY"),
            (900, "200 NOTIFY"),
            (900, "BYE 2")
        ]
    );
    assert_eq!(
        h.events,
        [
            (100, Event::ReferAccepted),
            (200, Event::ReferProgress(100)),
            (900, Event::ReferProgress(200)),
        ]
    );
}

#[test]
fn refer_failure_and_timeout() {
    let mut h = H::confirmed();
    h.d.refer(ms(0), "sip:agent@pbx").unwrap();
    h.drain();
    h.at(300);
    h.resp(Method::Refer, 1, 403);
    h.at(6000);
    h.d.refer(h.now, "sip:agent@pbx").unwrap();
    h.drain();
    h.at(60_000);
    assert_eq!(
        h.events,
        [
            (300, Event::ReferFailed(403)),
            (38_000, Event::ReferFailed(408))
        ]
    );
    assert_eq!(times(&h, "REFER 2").len(), 11);
    assert_eq!(h.d.state(), DialogState::Confirmed);
}

// ---- bounds ----------------------------------------------------------------------------------

#[test]
fn dialog_fits_its_memory_budget() {
    let size = core::mem::size_of::<Dialog>();
    std::println!("size_of::<Dialog>() = {size}");
    assert!(size <= DIALOG_SIZE_MAX, "Dialog is {size} bytes");
}

#[test]
fn arena_compacts_and_refuses_overflow() {
    let mut a = Arena::new();
    a.set(CALL_ID, one("call"), false).unwrap();
    a.set(FROM, one("from"), false).unwrap();
    a.set(TO, one("to"), false).unwrap();
    a.set(FROM, one("longer-from"), false).unwrap();
    assert_eq!(a.get(CALL_ID), b"call");
    assert_eq!(a.get(FROM), b"longer-from");
    assert_eq!(a.get(TO), b"to");
    a.clear(CALL_ID);
    assert_eq!(a.get(CALL_ID), b"");
    assert_eq!(a.get(TO), b"to");
    assert_eq!(a.buf.len(), 13);
    let big = "x".repeat(SIP_DIALOG_ARENA);
    assert!(a.set(TARGET, one(&big), false).is_err());
    assert_eq!(a.get(FROM), b"longer-from", "a failed set keeps the others");
    let fill = "y".repeat(SIP_DIALOG_ARENA - 13);
    a.set(TARGET, one(&fill), false).unwrap();
    assert!(a.set(REFER_TARGET, one("z"), false).is_err());
    a.set(TARGET, one("t"), true).unwrap();
    assert_eq!(a.get(TARGET), b"\0\x01t");
}

#[test]
fn responses_dropped_when_queue_full_are_not_panics() {
    let mut h = H::confirmed();
    for cseq in 2..10 {
        let r = incoming(Method::Options, cseq, Some("ours"));
        h.d.handle_request(h.now, &r).unwrap();
    }
    h.drain();
    assert_eq!(h.sent.len(), SIP_DIALOG_PENDING);
}

#[test]
fn tiny_transmit_buffer_reports_and_moves_on() {
    let mut h = H::new(&CFG);
    h.d.ring(ms(0)).unwrap();
    assert_eq!(h.d.poll_transmit(&mut [0u8; 16]), Some(Err(BufferTooSmall)));
    assert_eq!(h.d.poll_transmit(&mut [0u8; 16]), None);
}

// ---- properties ------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Ring,
    Answer,
    Reject(u16),
    Hangup,
    Refer,
    AnswerReinvite,
    RejectReinvite,
    Request(Method, u32, u8),
    Response(Method, u32, u16),
    Advance(u32),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use alloc::vec;
    use proptest::prelude::*;
    let method = prop_oneof![
        Just(Method::Invite),
        Just(Method::Ack),
        Just(Method::Bye),
        Just(Method::Cancel),
        Just(Method::Options),
        Just(Method::Info),
        Just(Method::Notify),
        Just(Method::Update),
        Just(Method::Other),
    ];
    // To tags: 0 none, 1 ours, 2 foreign; ours is the common case.
    let tag = prop_oneof![1 => Just(0u8), 4 => Just(1u8), 1 => Just(2u8)];
    prop_oneof![
        1 => Just(Op::Ring),
        3 => Just(Op::Answer),
        1 => (300u16..700).prop_map(Op::Reject),
        3 => Just(Op::Hangup),
        2 => Just(Op::Refer),
        1 => Just(Op::AnswerReinvite),
        1 => Just(Op::RejectReinvite),
        3 => Just(Op::Request(Method::Ack, 1, 1)),
        6 => (method, 0u32..6, tag).prop_map(|(m, c, t)| Op::Request(m, c, t)),
        2 => (
            prop_oneof![Just(Method::Bye), Just(Method::Refer), Just(Method::Invite)],
            0u32..4,
            100u16..700
        )
            .prop_map(|(m, c, s)| Op::Response(m, c, s)),
        4 => (0u32..40_000).prop_map(Op::Advance),
    ]
}

proptest::proptest! {
    #[test]
    fn random_inputs_never_panic_and_stay_bounded(ops in proptest::collection::vec(op(), 0..40)) {
        let mut h = H::new(&CFG);
        let mut hangup_at: Option<Instant> = None;
        let mut terminated = 0;
        for op in ops {
            let before = h.sent.len();
            match op {
                Op::Ring => { let _ = h.d.ring(h.now); }
                Op::Answer => { let _ = h.d.answer(h.now, SDP); }
                Op::Reject(s) => { let _ = h.d.reject(h.now, s); }
                Op::Hangup => {
                    if h.d.hangup(h.now).is_ok() && hangup_at.is_none() {
                        hangup_at = Some(h.now);
                    }
                }
                Op::Refer => { let _ = h.d.refer(h.now, "sip:agent@pbx"); }
                Op::AnswerReinvite => { let _ = h.d.answer_reinvite(h.now, SDP); }
                Op::RejectReinvite => { let _ = h.d.reject_reinvite(h.now, 488); }
                Op::Request(m, cseq, tag) => {
                    let to = [None, Some("ours"), Some("zzz")][usize::from(tag)];
                    let mut r = incoming(m, cseq, to);
                    if m == Method::Other {
                        r.method_token = "FROB";
                    }
                    h.d.handle_request(h.now, &r).unwrap();
                }
                Op::Response(m, cseq, status) => {
                    let branch = emit::branch(LocalTag(TAG), cseq);
                    let r = IncomingResponse {
                        status,
                        top_branch: Some(branch.as_str()),
                        call_id: "a84b4c76e66710@10.0.0.1",
                        from_tag: Some("abc"),
                        to_tag: None,
                        cseq,
                        cseq_method: m,
                    };
                    h.d.handle_response(h.now, &r).unwrap();
                }
                Op::Advance(d) => {
                    let t = h.now.as_millis() + u64::from(d);
                    h.at(t);
                }
            }
            h.drain();
            // At most one datagram per queued response/request kind, per input or timer step.
            proptest::prop_assert!(h.sent.len() - before <= 64);
            terminated = h.events.iter().filter(|(_, e)| matches!(e, Event::Terminated(_))).count();
            proptest::prop_assert!(terminated <= 1);
        }
        if let Some(t) = hangup_at {
            // The BYE leaves at hangup, or (RFC 3261 §15) once our 2xx is acknowledged; the
            // dialog ends at most 64*T1 after that (or by the ACK timeout, before it).
            let t = t.as_millis();
            let bye_at = h
                .sent
                .iter()
                .find(|(at, s)| *at >= t && s.starts_with("BYE"))
                .map_or(t, |(at, _)| *at);
            let limit = bye_at + 64 * 500;
            h.at(h.now.as_millis().max(limit));
            proptest::prop_assert_eq!(h.d.state(), DialogState::Terminated);
            proptest::prop_assert!(h
                .events
                .iter()
                .any(|(at, e)| matches!(e, Event::Terminated(_)) && *at <= limit));
        }
        // With no more input every dialog that ended winds down.
        let end = h.now.as_millis() + 200_000;
        h.at(end);
        if h.d.state() == DialogState::Terminated {
            proptest::prop_assert!(h.d.is_done());
            proptest::prop_assert_eq!(h.d.poll_timeout(), None);
        }
        let _ = terminated;
    }

    #[test]
    fn every_step_emits_few_datagrams(ops in proptest::collection::vec(op(), 0..40)) {
        // Per single input (not per time span): never more than the pending queue plus the
        // four transaction kinds.
        let mut h = H::new(&CFG);
        for op in ops {
            let before = h.sent.len();
            match op {
                Op::Request(m, cseq, tag) => {
                    let to = [None, Some("ours"), Some("zzz")][usize::from(tag)];
                    h.d.handle_request(h.now, &incoming(m, cseq, to)).unwrap();
                }
                Op::Answer => { let _ = h.d.answer(h.now, SDP); }
                Op::Hangup => { let _ = h.d.hangup(h.now); }
                Op::Advance(d) => {
                    h.now += Duration::from_millis(u64::from(d));
                    h.d.handle_timeout(h.now);
                }
                _ => {}
            }
            h.drain();
            proptest::prop_assert!(h.sent.len() - before <= SIP_DIALOG_PENDING + 4);
        }
    }
}

#[test]
fn event_strings_are_debuggable() {
    let s = format!("{:?}", Event::Terminated(TerminationReason::RemoteBye));
    assert!(s.contains("RemoteBye"));
    assert_eq!(Error::Busy.to_string(), "a REFER is already in progress");
}

// ---- dialog state sized by real INVITEs, and routing ------------------------------------------

/// An INVITE as a carrier SBC sends it after `hops` proxies: `hops` Vias of about 100 bytes,
/// the proxies' Record-Routes, an 80-byte Call-ID, a display name and a 32-character tag.
fn sbc_invite(hops: usize, routes: &[&str]) -> String {
    let mut m = String::from("INVITE sip:+18005550100@10.0.0.2:5060 SIP/2.0\r\n");
    for i in 0..hops {
        m += &format!(
            "Via: SIP/2.0/UDP 10.20.{i}.1:5060;branch=z9hG4bK-sbc-{i}-7f3a9c0e5d2b41a8b6c4e0f1a2b3c4d5;rport\r\n"
        );
    }
    for r in routes {
        m += &format!("Record-Route: {r}\r\n");
    }
    m += "Max-Forwards: 62\r\n";
    m += "From: \"ACME Customer Services Ltd\" <sip:+12155550123@carrier.example.net;user=phone>;tag=5f2a9c4e7b1d3f6a8c0e2b4d6f8a1c3e\r\n";
    m += "To: <sip:+18005550100@10.0.0.2;user=phone>\r\n";
    m += "Call-ID: 4c2b8e1f-9a3d-4f6e-b7c5-0d1e2f3a4b5c-1733300000-839201@sbc01.carrier.example.net\r\n";
    m += "CSeq: 1 INVITE\r\n";
    m += "Contact: <sip:+12155550123@10.20.0.1:5060;transport=udp>\r\n";
    m += "P-Asserted-Identity: \"ACME\" <sip:+12155550123@carrier.example.net;user=phone>\r\n";
    m += "Content-Length: 0\r\n\r\n";
    m
}

fn with_incoming<R>(text: &str, src: &str, f: impl FnOnce(&mut Incoming<'_>) -> R) -> R {
    let msg = crate::sip::parse(text.as_bytes()).expect("parses");
    let crate::sip::Message::Request(r) = msg else {
        panic!("not a request")
    };
    let mut inc = r.to_incoming().expect("incoming");
    inc.received_from = Some(src.parse().unwrap());
    f(&mut inc)
}

fn drain_to(d: &mut Dialog) -> StdVec<(Option<SocketAddr>, String)> {
    let mut out = StdVec::new();
    let mut buf = [0u8; crate::limits::SIP_EMIT_MAX];
    while let Some(r) = d.poll_transmit(&mut buf) {
        let n = r.expect("SIP_EMIT_MAX suffices");
        let _ = oracle(&buf[..n]);
        out.push((
            d.destination(),
            String::from_utf8(buf[..n].to_vec()).unwrap(),
        ));
    }
    out
}

fn header_values<'m>(msg: &'m str, name: &str) -> StdVec<&'m str> {
    msg.split("\r\n")
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn sixteen_vias_and_eight_record_routes_fit_and_are_echoed() {
    let routes = [
        "<sip:10.20.0.1:5060;lr;ftag=5f2a9c4e7b1d3f6a8c0e2b4d6f8a1c3e;did=7a1.b2c>",
        "<sip:10.20.1.1;lr>",
        "<sip:core1.carrier.example.net;lr;transport=udp>",
        "<sip:10.20.3.1:5062;lr>",
        "<sip:10.20.4.1;lr>, <sip:10.20.5.1;lr>",
        "<sip:10.20.6.1;lr>",
        "<sip:10.20.7.1;lr;r2=on>",
    ];
    let text = sbc_invite(SIP_MAX_VIAS, &routes);
    assert!(text.len() > 2_000, "{} bytes", text.len());
    let mut d = with_incoming(&text, "10.20.0.1:5060", |inc| {
        assert_eq!(inc.record_route.len(), 8);
        Dialog::new(ms(0), inc, &CFG, TAG).expect("a real SBC INVITE fits the dialog")
    });
    assert_eq!(d.route_set().count(), 8);
    let mut sent = drain_to(&mut d);
    d.answer(ms(0), SDP).unwrap();
    sent.extend(drain_to(&mut d));
    let (to, ok) = sent.last().unwrap();
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    // Every Via back, in order, the top one stamped; every Record-Route back, in order.
    let vias = header_values(ok, "Via");
    assert_eq!(vias.len(), SIP_MAX_VIAS);
    assert!(
        vias[0].ends_with(";rport=5060;received=10.20.0.1"),
        "{}",
        vias[0]
    );
    assert!(vias[1].ends_with("d5;rport"), "{}", vias[1]);
    let rr = header_values(ok, "Record-Route");
    assert_eq!(rr.len(), 8);
    assert_eq!(rr[0], routes[0]);
    assert_eq!(rr[4], "<sip:10.20.4.1;lr>");
    assert_eq!(rr[5], "<sip:10.20.5.1;lr>");
    assert_eq!(*to, Some("10.20.0.1:5060".parse().unwrap()));
    // 100 Trying carries no Record-Route (it does not establish the dialog).
    assert!(sent[0].1.starts_with("SIP/2.0 100"));
    assert!(header_values(&sent[0].1, "Record-Route").is_empty());
}

#[test]
fn our_bye_follows_the_route_set_to_the_first_proxy() {
    let text = sbc_invite(2, &["<sip:192.0.2.50:5070;lr>", "<sip:192.0.2.60;lr>"]);
    let mut d = with_incoming(&text, "192.0.2.50:5070", |inc| {
        Dialog::new(ms(0), inc, &CFG, TAG).unwrap()
    });
    d.answer(ms(0), SDP).unwrap();
    drain_to(&mut d);
    let ack = text.replace("INVITE sip:", "ACK sip:").replace(
        "To: <sip:+18005550100@10.0.0.2;user=phone>",
        "To: <sip:+18005550100@10.0.0.2;user=phone>;tag=abc",
    );
    let ack = ack.replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
    with_incoming(&ack, "192.0.2.50:5070", |inc| d.handle_request(ms(10), inc)).unwrap();
    d.hangup(ms(20)).unwrap();
    let sent = drain_to(&mut d);
    let (to, bye) = sent.last().unwrap();
    assert!(
        bye.starts_with("BYE sip:+12155550123@10.20.0.1:5060;transport=udp SIP/2.0\r\n"),
        "{bye}"
    );
    assert_eq!(
        header_values(bye, "Route"),
        ["<sip:192.0.2.50:5070;lr>", "<sip:192.0.2.60;lr>"]
    );
    assert_eq!(*to, Some("192.0.2.50:5070".parse().unwrap()));
}

#[test]
fn without_a_route_set_our_bye_goes_to_the_contact() {
    let text = sbc_invite(1, &[]);
    let mut d = with_incoming(&text, "203.0.113.9:5060", |inc| {
        Dialog::new(ms(0), inc, &CFG, TAG).unwrap()
    });
    d.reject(ms(0), 486).ok();
    let mut d2 = with_incoming(&text, "203.0.113.9:5060", |inc| {
        Dialog::new(ms(0), inc, &CFG, TAG).unwrap()
    });
    d2.answer(ms(0), SDP).unwrap();
    drain_to(&mut d2);
    // No ACK: Timer L ends the dialog and sends BYE to the Contact's address.
    d2.handle_timeout(ms(32_000));
    let sent = drain_to(&mut d2);
    let (to, bye) = sent
        .iter()
        .find(|(_, m)| m.starts_with("BYE "))
        .expect("a BYE");
    assert!(header_values(bye, "Route").is_empty());
    assert_eq!(*to, Some("10.20.0.1:5060".parse().unwrap()));
    drop(d);
}

#[test]
fn a_strict_router_becomes_the_request_uri() {
    let text = sbc_invite(1, &["<sip:192.0.2.70:5060>", "<sip:192.0.2.71;lr>"]);
    let mut d = with_incoming(&text, "192.0.2.70:5060", |inc| {
        Dialog::new(ms(0), inc, &CFG, TAG).unwrap()
    });
    d.answer(ms(0), SDP).unwrap();
    drain_to(&mut d);
    d.handle_timeout(ms(32_000));
    let sent = drain_to(&mut d);
    let (to, bye) = sent.iter().find(|(_, m)| m.starts_with("BYE ")).unwrap();
    assert!(
        bye.starts_with("BYE sip:192.0.2.70:5060 SIP/2.0\r\n"),
        "{bye}"
    );
    assert_eq!(
        header_values(bye, "Route"),
        [
            "<sip:192.0.2.71;lr>",
            "<sip:+12155550123@10.20.0.1:5060;transport=udp>"
        ]
    );
    assert_eq!(*to, Some("192.0.2.70:5060".parse().unwrap()));
}

#[test]
fn a_request_from_a_new_address_is_answered_where_its_via_says() {
    let text = sbc_invite(1, &["<sip:192.0.2.50:5070;lr>"]);
    let mut d = with_incoming(&text, "192.0.2.50:5070", |inc| {
        Dialog::new(ms(0), inc, &CFG, TAG).unwrap()
    });
    d.answer(ms(0), SDP).unwrap();
    drain_to(&mut d);
    // The caller's BYE comes straight from it, not through the proxy; its Via has no rport.
    let bye =
        "BYE sip:ccedge@10.0.0.2:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.20.0.1:5066;branch=z9hG4bK-bye-1\r\n\
         From: <sip:+12155550123@carrier.example.net>;tag=5f2a9c4e7b1d3f6a8c0e2b4d6f8a1c3e\r\n\
         To: <sip:+18005550100@10.0.0.2>;tag=abc\r\n\
         Call-ID: 4c2b8e1f-9a3d-4f6e-b7c5-0d1e2f3a4b5c-1733300000-839201@sbc01.carrier.example.net\r\n\
         CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    with_incoming(bye, "10.20.0.1:40000", |inc| d.handle_request(ms(50), inc)).unwrap();
    let sent = drain_to(&mut d);
    let (to, ok) = sent
        .iter()
        .find(|(_, m)| m.starts_with("SIP/2.0 200") && m.contains("CSeq: 2 BYE"))
        .expect("200 to BYE");
    // No rport: the sent-by port at the source address.
    assert_eq!(*to, Some("10.20.0.1:5066".parse().unwrap()));
    assert_eq!(
        header_values(ok, "Via"),
        ["SIP/2.0/UDP 10.20.0.1:5066;branch=z9hG4bK-bye-1"]
    );
}

#[test]
fn vias_beyond_the_bound_are_refused_with_513() {
    let text = sbc_invite(SIP_MAX_VIAS + 1, &[]);
    let crate::sip::Message::Request(r) = crate::sip::parse(text.as_bytes()).unwrap() else {
        panic!()
    };
    let e = r.to_incoming().unwrap_err();
    assert_eq!(e.status(), Some(513));
    let routes: StdVec<&str> = (0..=crate::limits::SIP_MAX_ROUTES)
        .map(|_| "<sip:10.1.1.1;lr>")
        .collect();
    let text = sbc_invite(1, &routes);
    let crate::sip::Message::Request(r) = crate::sip::parse(text.as_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(r.to_incoming().unwrap_err().status(), Some(513));
}

#[test]
fn a_bye_with_as_many_vias_as_the_invite_is_answered_after_the_ack() {
    // Sixteen long Vias and eight routes fill most of the arena; the caller's BYE comes back
    // through the same sixteen hops. Once the INVITE's transaction is over its Vias make room.
    let routes: StdVec<String> = (0..8)
        .map(|i| {
            format!(
                "<sip:10.30.{i}.1:5060;lr;ftag=5f2a9c4e7b1d3f6a8c0e2b4d6f8a1c3e;did=1f2.a3b4;\
                 vsf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA;nat=yes>"
            )
        })
        .collect();
    let refs: StdVec<&str> = routes.iter().map(String::as_str).collect();
    let text = sbc_invite(SIP_MAX_VIAS, &refs);
    let mut d = with_incoming(&text, "10.20.0.1:5060", |inc| {
        Dialog::new(ms(0), inc, &CFG, TAG).unwrap()
    });
    d.answer(ms(0), SDP).unwrap();
    drain_to(&mut d);
    let to_tagged = "To: <sip:+18005550100@10.0.0.2;user=phone>;tag=abc";
    let ack = text
        .replace("INVITE sip:", "ACK sip:")
        .replace("To: <sip:+18005550100@10.0.0.2;user=phone>", to_tagged)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
    with_incoming(&ack, "10.20.0.1:5060", |inc| d.handle_request(ms(10), inc)).unwrap();
    let bye = ack
        .replace("ACK sip:", "BYE sip:")
        .replace("CSeq: 1 ACK", "CSeq: 2 BYE")
        .replace("z9hG4bK-sbc-", "z9hG4bK-bye-");
    with_incoming(&bye, "10.20.0.1:5060", |inc| d.handle_request(ms(20), inc)).unwrap();
    let sent = drain_to(&mut d);
    let (to, ok) = sent
        .iter()
        .find(|(_, m)| m.contains("CSeq: 2 BYE"))
        .expect("the BYE is answered");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert_eq!(header_values(ok, "Via").len(), SIP_MAX_VIAS);
    assert_eq!(*to, Some("10.20.0.1:5060".parse().unwrap()));
}

// ---- session timers (RFC 4028) ----------------------------------------------------------------

/// A request that asks for a session timer of `secs`; `timer` listed in Supported when
/// `supported`.
fn timed(
    mut r: Incoming<'static>,
    secs: u32,
    refresher: Option<Refresher>,
    supported: bool,
) -> Incoming<'static> {
    r.session_timer = SessionTimer {
        expires: Some(secs),
        refresher,
        min_se: None,
        supported,
        required: false,
    };
    r
}

/// A dialog whose INVITE asked for `secs` with `refresher`, answered and acknowledged at t = 0.
fn timed_call(secs: u32, refresher: Option<Refresher>, supported: bool) -> H {
    let invite = timed(
        incoming(Method::Invite, 1, None),
        secs,
        refresher,
        supported,
    );
    let mut h = H::with_invite(&CFG, &invite);
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    h.req(incoming(Method::Ack, 1, Some("ours")));
    h
}

#[test]
fn two_xx_settles_the_session_timer() {
    let h = timed_call(90, Some(Refresher::Uac), true);
    assert_eq!(h.sent(), [(0, "100 INVITE"), (0, "200 INVITE")]);
    assert_eq!(h.header(1, "Session-Expires").unwrap(), "90;refresher=uac");
    assert_eq!(h.header(1, "Require").unwrap(), "timer");
    assert_eq!(
        h.header(0, "Session-Expires"),
        None,
        "a 100 settles nothing"
    );
    assert_eq!(h.d.session_timer(), Some((90, Refresher::Uac)));
    // No refresher named: the gateway refreshes; the interval is the request's.
    let h = timed_call(1800, None, true);
    assert_eq!(
        h.header(1, "Session-Expires").unwrap(),
        "1800;refresher=uac"
    );
    assert_eq!(h.header(1, "Require").unwrap(), "timer");
    // No Session-Expires: no session timer, no Require.
    let mut h = H::new(&CFG);
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    assert_eq!(h.header(1, "Session-Expires"), None);
    assert_eq!(h.header(1, "Require"), None);
    assert_eq!(h.d.session_timer(), None);
}

#[test]
fn interval_is_raised_to_the_requests_min_se_and_ours() {
    let mut invite = timed(incoming(Method::Invite, 1, None), 100, None, true);
    invite.session_timer.min_se = Some(300);
    let mut h = H::with_invite(&CFG, &invite);
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    assert_eq!(h.header(1, "Session-Expires").unwrap(), "300;refresher=uac");
    // A proxy's Session-Expires below our minimum, for a caller that could not retry a 422.
    static CFG_120: Config = Config {
        min_se_secs: 120,
        ..Config::new("sip:ccedge@10.0.0.2:5060", "10.0.0.2:5060")
    };
    let invite = timed(incoming(Method::Invite, 1, None), 95, None, false);
    let mut h = H::with_invite(&CFG_120, &invite);
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    assert_eq!(h.header(1, "Session-Expires").unwrap(), "120;refresher=uas");
}

#[test]
fn missed_refresh_ends_the_call_with_bye_before_expiry() {
    // 90 s: BYE at 90 - min(32, 30) = 60 s.
    let mut h = timed_call(90, Some(Refresher::Uac), true);
    h.clear();
    h.at(59_999);
    assert!(h.sent.is_empty() && h.events.is_empty());
    h.at(60_000);
    assert_eq!(h.sent(), [(60_000, "BYE 1")]);
    assert_eq!(
        h.events,
        [(60_000, Event::Terminated(TerminationReason::SessionExpired))]
    );
    h.at(60_100).resp(Method::Bye, 1, 200);
    assert_eq!(h.d.termination(), Some(TerminationReason::SessionExpired));
    assert_eq!(h.events.len(), 1, "ended once");
    h.at(200_000);
    assert!(h.d.is_done());
    // 1800 s: BYE 32 s before the end.
    let mut h = timed_call(1800, None, true);
    h.clear();
    h.at(1_767_999);
    assert!(h.sent.is_empty());
    h.at(1_768_000);
    assert_eq!(h.sent(), [(1_768_000, "BYE 1")]);
}

#[test]
fn refresh_by_update_and_reinvite_moves_the_expiry() {
    let mut h = timed_call(90, Some(Refresher::Uac), true);
    h.clear();
    // An UPDATE without Session-Expires at 40 s: expiry moves to 40 + 60 = 100 s.
    h.at(40_000).req(incoming(Method::Update, 2, Some("ours")));
    assert_eq!(h.sent(), [(40_000, "200 UPDATE")]);
    assert_eq!(h.header(0, "Session-Expires").unwrap(), "90;refresher=uac");
    assert_eq!(h.header(0, "Require").unwrap(), "timer");
    assert_eq!(
        h.header(0, "Contact").unwrap(),
        "<sip:ccedge@10.0.0.2:5060>"
    );
    h.at(99_000);
    assert_eq!(h.sent.len(), 1, "no BYE at the old expiry");
    // A re-INVITE with a new interval at 99 s; answered at 99.5 s it starts there:
    // 99.5 + 120 - 32 = 187.5 s.
    h.req(timed(
        with_body(incoming(Method::Invite, 3, Some("ours")), b"v=0\r\n"),
        120,
        Some(Refresher::Uac),
        true,
    ));
    h.at(99_500);
    h.d.answer_reinvite(h.now, SDP).unwrap();
    h.drain();
    h.at(99_600).req(incoming(Method::Ack, 3, Some("ours")));
    let ok = h.sent.iter().position(|(_, s)| s == "200 INVITE").unwrap();
    assert_eq!(
        h.header(ok, "Session-Expires").unwrap(),
        "120;refresher=uac"
    );
    assert_eq!(h.header(ok, "Require").unwrap(), "timer");
    h.clear();
    h.at(187_499);
    assert!(h.sent.is_empty());
    h.at(187_500);
    assert_eq!(h.sent(), [(187_500, "BYE 1")]);
    assert_eq!(
        h.events,
        [(
            187_500,
            Event::Terminated(TerminationReason::SessionExpired)
        )]
    );
}

#[test]
fn a_refresh_counts_only_once_answered() {
    // A re-INVITE the call has not answered by the expiry refreshes nothing: it gets 487.
    let mut h = timed_call(90, None, true);
    h.at(59_000).req(incoming(Method::Invite, 2, Some("ours")));
    h.at(60_000);
    assert_eq!(times(&h, "BYE 1"), [60_000]);
    assert_eq!(times(&h, "487 INVITE"), [60_000]);
}

#[test]
fn a_refused_reinvite_is_no_refresh() {
    let mut h = timed_call(90, None, true);
    h.at(30_000).req(incoming(Method::Invite, 2, Some("ours")));
    h.d.reject_reinvite(h.now, 488).unwrap();
    h.drain();
    h.clear();
    h.at(60_000);
    assert!(h.sent().contains(&(60_000, "BYE 1")), "{:?}", h.sent);
}

#[test]
fn too_small_interval_in_the_dialog_gets_422_with_min_se() {
    let mut h = timed_call(90, None, true);
    h.clear();
    h.at(10_000).req(timed(
        incoming(Method::Update, 2, Some("ours")),
        60,
        None,
        true,
    ));
    h.req(timed(
        incoming(Method::Invite, 3, Some("ours")),
        30,
        None,
        true,
    ));
    // The retransmitted re-INVITE gets 422 again.
    h.req(timed(
        incoming(Method::Invite, 3, Some("ours")),
        30,
        None,
        true,
    ));
    assert_eq!(
        h.sent(),
        [
            (10_000, "422 UPDATE"),
            (10_000, "422 INVITE"),
            (10_000, "422 INVITE")
        ]
    );
    for i in 0..3 {
        assert_eq!(h.header(i, "Min-SE").unwrap(), "90");
        assert_eq!(h.header(i, "Session-Expires"), None);
    }
    assert!(h.events.is_empty(), "no re-INVITE for the call");
    // The retry with a larger interval is taken; the refused ones refreshed nothing.
    h.req(timed(
        incoming(Method::Update, 4, Some("ours")),
        90,
        None,
        true,
    ));
    assert_eq!(h.sent.last().unwrap().1, "200 UPDATE");
    h.clear();
    h.at(69_999);
    assert!(h.sent.is_empty());
    h.at(70_000);
    assert_eq!(h.sent(), [(70_000, "BYE 1")]);
}

#[test]
fn update_with_an_offer_gets_488_and_refreshes_nothing() {
    let mut h = timed_call(90, None, true);
    h.clear();
    h.at(30_000).req(with_body(
        incoming(Method::Update, 2, Some("ours")),
        b"v=0\r\n",
    ));
    assert_eq!(h.sent(), [(30_000, "488 UPDATE")]);
    h.at(60_000);
    assert!(h.sent().contains(&(60_000, "BYE 1")));
}

#[test]
fn node_refreshes_with_update_when_asked_to() {
    // refresher=uas from a caller that supports timers: ccedge must refresh (RFC 4028 §9).
    let mut h = timed_call(90, Some(Refresher::Uas), true);
    assert_eq!(h.header(1, "Session-Expires").unwrap(), "90;refresher=uas");
    assert_eq!(h.header(1, "Require").unwrap(), "timer");
    h.clear();
    h.at(44_999);
    assert!(h.sent.is_empty());
    h.at(45_000);
    assert_eq!(h.sent(), [(45_000, "UPDATE 1")]);
    let (start, _, body) = split(&h.raw[0]);
    assert_eq!(start, "UPDATE sip:gw@10.0.0.1:5060 SIP/2.0");
    assert!(body.is_empty());
    assert_eq!(h.header(0, "Session-Expires").unwrap(), "90;refresher=uas");
    assert_eq!(h.header(0, "Supported").unwrap(), "timer");
    assert_eq!(
        h.header(0, "Contact").unwrap(),
        "<sip:ccedge@10.0.0.2:5060>"
    );
    assert_eq!(h.d.destination(), Some("10.0.0.1:5060".parse().unwrap()));
    // Retransmitted on Timer E until answered; the 2xx restarts the interval.
    h.at(45_600);
    assert_eq!(times(&h, "UPDATE 1"), [45_000, 45_500]);
    h.resp(Method::Update, 1, 200);
    h.clear();
    h.at(90_599);
    assert!(h.sent.is_empty(), "{:?}", h.sent);
    h.at(90_600);
    assert_eq!(h.sent(), [(90_600, "UPDATE 2")]);
    // A refresh from the gateway restarts it too: the next UPDATE is 45 s after it.
    h.resp(Method::Update, 2, 200);
    h.at(100_000).req(incoming(Method::Update, 2, Some("ours")));
    assert_eq!(h.header(1, "Session-Expires").unwrap(), "90;refresher=uas");
    h.clear();
    h.at(144_999);
    assert!(h.sent.is_empty(), "{:?}", h.sent);
    h.at(145_000);
    assert_eq!(h.sent(), [(145_000, "UPDATE 3")]);
    // A 405 from a gateway without UPDATE: the peer is alive, the call stays up and the node
    // stops refreshing.
    h.at(145_100).resp(Method::Update, 3, 405);
    assert!(h.events.is_empty(), "{:?}", h.events);
    h.clear();
    h.at(400_000);
    assert!(h.sent.is_empty(), "{:?}", h.sent);
    assert!(h.events.is_empty(), "{:?}", h.events);
}

#[test]
fn a_refresh_answered_481_ends_the_call_with_bye() {
    let mut h = timed_call(90, Some(Refresher::Uas), true);
    h.clear();
    h.at(45_000);
    assert_eq!(h.sent(), [(45_000, "UPDATE 1")]);
    h.at(45_100).resp(Method::Update, 1, 481);
    assert_eq!(h.sent().last().unwrap(), &(45_100, "BYE 2"));
    assert_eq!(
        h.events,
        [(45_100, Event::Terminated(TerminationReason::SessionExpired))]
    );
}

#[test]
fn unanswered_refresh_ends_the_call_on_timer_f() {
    let mut h = timed_call(90, Some(Refresher::Uas), true);
    h.clear();
    h.at(45_000 + 31_999);
    assert!(h.events.is_empty());
    assert_eq!(times(&h, "UPDATE 1").len(), 11);
    h.at(77_000);
    assert_eq!(
        h.events,
        [(77_000, Event::Terminated(TerminationReason::SessionExpired))]
    );
    assert_eq!(h.sent().last().unwrap(), &(77_000, "BYE 2"));
}

#[test]
fn caller_without_timer_support_gets_the_node_as_refresher() {
    // A proxy put Session-Expires in; the caller lists no `timer`: Table 2 of RFC 4028 §9
    // makes ccedge the refresher, and the 2xx carries no Require.
    let mut h = timed_call(120, Some(Refresher::Uac), false);
    assert_eq!(h.header(1, "Session-Expires").unwrap(), "120;refresher=uas");
    assert_eq!(h.header(1, "Require"), None);
    h.clear();
    h.at(60_000);
    assert_eq!(h.sent(), [(60_000, "UPDATE 1")]);
}

#[test]
fn hangup_stops_the_session_timer() {
    let mut h = timed_call(90, None, true);
    h.at(10_000);
    h.d.hangup(h.now).unwrap();
    h.drain();
    h.resp(Method::Bye, 1, 200);
    h.clear();
    h.at(200_000);
    assert!(h.sent.is_empty());
    assert!(h.events.is_empty());
    assert!(h.d.is_done());
}

#[test]
fn session_expiry_before_the_ack_waits_for_it() {
    // A T1 of 2 s makes Timer L (128 s) outlast a 90 s session: the BYE waits for the ACK.
    static CFG_SLOW: Config = Config {
        t1: Duration::from_secs(2),
        t2: Duration::from_secs(16),
        ..Config::new("sip:ccedge@10.0.0.2:5060", "10.0.0.2:5060")
    };
    let invite = timed(incoming(Method::Invite, 1, None), 90, None, true);
    let mut h = H::with_invite(&CFG_SLOW, &invite);
    h.d.answer(ms(0), SDP).unwrap();
    h.drain();
    h.clear();
    h.at(60_000);
    assert_eq!(
        h.events,
        [(60_000, Event::Terminated(TerminationReason::SessionExpired))]
    );
    assert!(times(&h, "BYE 1").is_empty());
    h.at(61_000).req(incoming(Method::Ack, 1, Some("ours")));
    assert_eq!(times(&h, "BYE 1"), [61_000]);
}

#[test]
fn session_headers_parse_and_require_timer_is_no_longer_420() {
    use crate::sip::endpoint::{verdict, Verdict};
    let base = sbc_invite(1, &[]);
    let with =
        |extra: &str| base.replace("Content-Length: 0", &format!("{extra}Content-Length: 0"));
    let text = with("Supported: 100rel\r\nk: replaces, TIMER\r\nRequire: timer\r\nx: 90 ; refresher=UAS\r\nMin-SE: 90\r\n");
    with_incoming(&text, "10.20.0.1:5060", |inc| {
        let st = inc.session_timer;
        assert_eq!(st.expires, Some(90));
        assert_eq!(st.refresher, Some(Refresher::Uas));
        assert_eq!(st.min_se, Some(90));
        assert!(st.supported && st.required);
        assert_eq!(verdict(inc), Verdict::NewDialog);
    });
    let text = with("Require: timer, 100rel\r\nSession-Expires: 1800\r\n");
    with_incoming(&text, "10.20.0.1:5060", |inc| {
        assert_eq!(inc.session_timer.refresher, None);
        assert_eq!(verdict(inc), Verdict::Respond(420));
    });
    let text = with("Supported: timer\r\nSession-Expires: 99999999999\r\nMin-SE: soon\r\n");
    with_incoming(&text, "10.20.0.1:5060", |inc| {
        assert_eq!(inc.session_timer.expires, Some(u32::MAX));
        assert_eq!(inc.session_timer.min_se, None);
    });
    let text = with("Supported: timer\r\nSession-Expires: 60\r\n");
    with_incoming(&text, "10.20.0.1:5060", |inc| {
        assert_eq!(verdict(inc), Verdict::Respond(422));
    });
    // A malformed Session-Expires in an INVITE is a 400; in an OPTIONS it is ignored.
    for bad in ["abc", "", "90;", "-5", "90 seconds", "9 0"] {
        let text = with(&format!("Session-Expires: {bad}\r\n"));
        let crate::sip::Message::Request(r) = crate::sip::parse(text.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(r.to_incoming().unwrap_err().status(), Some(400), "{bad:?}");
        let options = text
            .replace("INVITE sip:", "OPTIONS sip:")
            .replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS");
        with_incoming(&options, "10.20.0.1:5060", |inc| {
            assert_eq!(inc.session_timer.expires, None);
        });
    }
}
