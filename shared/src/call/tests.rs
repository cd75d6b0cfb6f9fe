//! Transcript tests of whole calls on virtual time: SIP text in, SIP text and outputs out.

extern crate alloc;
extern crate std;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::*;
use crate::rtp::{OutboundStream, RtpHeader, Ssrc};
use crate::sip::parse::{parse, Message};

const GW: &str = "192.0.2.1:5060";

fn sip_cfg() -> &'static uas::Config {
    static CFG: uas::Config = uas::Config::new("sip:ccedge@192.0.2.10:5060", "192.0.2.10:5060");
    &CFG
}

fn cfg_with(f: impl FnOnce(&mut Config)) -> &'static Config {
    let mut c = Config::new(sip_cfg());
    f(&mut c);
    Box::leak(Box::new(c))
}

fn setup() -> Setup {
    Setup {
        id: CallId(7),
        local_tag: 0xfeed,
        local_rtp: "192.0.2.10:30000".parse().unwrap(),
        session_id: 42,
    }
}

fn offer(fmts: &str, maps: &str) -> String {
    format!(
        "v=0\r\no=gw 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP {fmts}\r\n{maps}a=ptime:20\r\n"
    )
}

fn std_offer() -> String {
    offer(
        "0 8 101",
        "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
    )
}

fn request(method: &str, cseq: u32, to_tag: Option<&str>, branch: &str, body: &str) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let ct = if body.is_empty() {
        String::new()
    } else {
        "Content-Type: application/sdp\r\n".into()
    };
    format!(
        "{method} sip:+18005550100@192.0.2.10 SIP/2.0\r\n\
         Via: SIP/2.0/UDP {GW};branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:+12155550123@192.0.2.1>;tag=gw1\r\n\
         To: <sip:+18005550100@192.0.2.10>{to_tag}\r\n\
         Call-ID: call-1@192.0.2.1\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:gw@{GW}>\r\n\
         {ct}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Runs `f` with the `Incoming` view of `text`.
fn with_req<R>(text: &str, f: impl FnOnce(&Incoming<'_>) -> R) -> R {
    let bytes = text.as_bytes().to_vec();
    let msg = parse(&bytes).expect("test message parses");
    let Message::Request(r) = msg else {
        panic!("not a request")
    };
    let incoming = r.to_incoming().expect("well-formed request");
    f(&incoming)
}

/// Everything the call sent, as (status or method, full text).
fn drain_sip(call: &mut Call) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(n) = call.poll_transmit(&mut buf) {
        out.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    out
}

fn first_line(s: &str) -> &str {
    s.split("\r\n").next().unwrap()
}

fn drain(call: &mut Call) -> Vec<Output> {
    let mut v = Vec::new();
    while let Some(o) = call.poll_output() {
        v.push(o);
    }
    v
}

fn events(outs: &[Output]) -> Vec<(u32, Event)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Event { call_seq, event } => Some((*call_seq, event.clone())),
            _ => None,
        })
        .collect()
}

fn new_call(cfg: &'static Config, body: &str, anns: &[AnnouncementInfo]) -> Call {
    let inv = request("INVITE", 1, None, "inv1", body);
    with_req(&inv, |r| Call::new(Instant::ZERO, cfg, &setup(), r, anns)).unwrap()
}

/// One RFC 4733 key press as the packets a gateway sends (also used by the node's tests).
pub(crate) fn dtmf_packets(d: Digit, ts: u32, seq: u16) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (i, (end, dur)) in [
        (false, 160u16),
        (false, 320),
        (true, 480),
        (true, 480),
        (true, 480),
    ]
    .into_iter()
    .enumerate()
    {
        let h = RtpHeader {
            marker: i == 0,
            payload_type: PayloadType::new(101).unwrap(),
            sequence: seq.wrapping_add(i as u16),
            timestamp: ts,
            ssrc: Ssrc(0x1234),
        };
        let mut payload = [0u8; 4];
        TelephoneEvent::for_digit(d, end, 10, dur)
            .unwrap()
            .emit(&mut payload)
            .unwrap();
        let mut buf = [0u8; 64];
        let n = h.emit(&payload, &mut buf).unwrap();
        v.push(buf[..n].to_vec());
    }
    v
}

fn gw_rtp() -> SocketAddr {
    "192.0.2.1:40000".parse().unwrap()
}

#[test]
fn answers_an_offer_with_pcmu_and_starts_the_ivr() {
    let cfg = cfg_with(|_| {});
    let mut call = new_call(cfg, &std_offer(), &[]);
    let sent = drain_sip(&mut call);
    let lines: Vec<&str> = sent.iter().map(|s| first_line(s)).collect();
    // The final answer is immediate, so it supersedes the 100 Trying.
    assert_eq!(lines, ["SIP/2.0 200 OK"]);
    let ok = &sent[0];
    assert!(ok.contains("m=audio 30000 RTP/AVP 0 101\r\n"), "{ok}");
    assert!(ok.contains("c=IN IP4 192.0.2.10\r\n"));
    assert!(ok.contains("Call-ID: call-1@192.0.2.1\r\n"));
    let outs = drain(&mut call);
    let evs = events(&outs);
    assert_eq!(evs[0].0, 1);
    assert_eq!(
        evs[0].1,
        Event::Offered {
            caller: PhoneNumber::parse("+12155550123").ok(),
            dialled: PhoneNumber::parse("+18005550100").ok()
        }
    );
    assert_eq!(
        evs[1],
        (
            2,
            Event::Answered {
                codec: EventCodec::Pcmu
            }
        )
    );
    assert!(outs.contains(&Output::Media(Media::Start {
        remote: Some(gw_rtp()),
        codec: Codec::Pcmu,
        payload_type: PayloadType::PCMU,
        telephone_event: PayloadType::new(101),
        // No RTP before the ACK.
        send: false,
    })));
    // Nothing plays before the ACK: the caller would not hear it.
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Play(_))),
        "{outs:?}"
    );
    assert_eq!(call.phase(), Phase::Answered);
    // The ACK turns the media on and starts the IVR; a retransmitted ACK changes nothing.
    let tag = to_tag(&mut call);
    let ack = |call: &mut Call| {
        with_req(&request("ACK", 1, Some(&tag), "a", ""), |r| {
            call.handle_sip_request(Instant::from_millis(20), r)
        })
        .unwrap();
    };
    ack(&mut call);
    let outs = drain(&mut call);
    assert_eq!(outs[0], Output::Media(Media::Send(true)));
    // No announcement matched: the default greeting plays first.
    let play = outs
        .iter()
        .find_map(|o| match o {
            Output::Play(p) => Some(p.clone()),
            _ => None,
        })
        .expect("a playlist");
    assert_eq!(play.first(), Some(&Prompt::Greeting));
    ack(&mut call);
    assert_eq!(drain(&mut call), []);
}

#[test]
fn an_unacknowledged_call_never_sends_rtp_and_ends_at_the_ack_timeout() {
    let cfg = cfg_with(|_| {});
    let mut call = new_call(cfg, &std_offer(), &[]);
    let _ = drain_sip(&mut call);
    let outs = drain(&mut call);
    assert!(
        !outs.iter().any(|o| matches!(
            o,
            Output::Media(Media::Start { send: true, .. } | Media::Send(true))
        )),
        "{outs:?}"
    );
    // No ACK ever: timer H ends the call, and media never turned on.
    let mut now = Instant::from_millis(10);
    let mut all = Vec::new();
    while let Some(t) = call.poll_timeout() {
        if t > Instant::from_millis(40_000) {
            break;
        }
        now = t.max(now);
        call.handle_timeout(now);
        let _ = drain_sip(&mut call);
        all.extend(drain(&mut call));
    }
    assert!(
        !all.iter()
            .any(|o| matches!(o, Output::Media(Media::Send(true)))),
        "{all:?}"
    );
    assert_eq!(call.phase(), Phase::Ended);
}

#[test]
fn pcma_only_offer_is_answered_with_pcma() {
    let cfg = cfg_with(|_| {});
    let body = offer(
        "8 101",
        "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    let mut call = new_call(cfg, &body, &[]);
    let sent = drain_sip(&mut call);
    assert!(sent[0].contains("m=audio 30000 RTP/AVP 8 101\r\n"));
    let evs = events(&drain(&mut call));
    assert_eq!(
        evs[1].1,
        Event::Answered {
            codec: EventCodec::Pcma
        }
    );
    assert_eq!(call.codec(), Some(Codec::Pcma));
}

#[test]
fn no_common_codec_is_488_and_the_call_ends_rejected() {
    let cfg = cfg_with(|_| {});
    let body = offer("18", "a=rtpmap:18 G729/8000\r\n");
    let mut call = new_call(cfg, &body, &[]);
    let sent = drain_sip(&mut call);
    let lines: Vec<&str> = sent.iter().map(|s| first_line(s)).collect();
    assert_eq!(lines, ["SIP/2.0 488 Not Acceptable Here"]);
    let evs = events(&drain(&mut call));
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(matches!(evs[0].1, Event::Offered { .. }));
    assert!(matches!(
        evs[1].1,
        Event::Ended {
            reason: EndReason::Rejected,
            ..
        }
    ));
    // The gateway ACKs the 488; after Timer I the call is done.
    let ack = request("ACK", 1, Some("feed"), "inv1", "");
    with_req(&ack, |r| {
        call.handle_sip_request(Instant::from_millis(10), r)
    })
    .unwrap();
    let mut now = Instant::from_millis(10);
    while let Some(t) = call.poll_timeout() {
        now = t;
        call.handle_timeout(now);
        let _ = drain_sip(&mut call);
        let _ = drain(&mut call);
    }
    assert!(call.is_done());
    assert!(now <= Instant::from_millis(40_000));
}

#[test]
fn non_sdp_body_is_415() {
    let cfg = cfg_with(|_| {});
    let inv = request("INVITE", 1, None, "inv1", "hello")
        .replace("Content-Type: application/sdp", "Content-Type: text/plain");
    let mut call = with_req(&inv, |r| Call::new(Instant::ZERO, cfg, &setup(), r, &[])).unwrap();
    let sent = drain_sip(&mut call);
    assert_eq!(
        first_line(sent.last().unwrap()),
        "SIP/2.0 415 Unsupported Media Type"
    );
}

fn to_tag(call: &mut Call) -> String {
    let _ = call;
    format!("{:x}", 0xfeedu64)
}

#[test]
fn rfc4733_digit_barges_in_and_books_a_callback() {
    let cfg = cfg_with(|_| {});
    let mut call = new_call(cfg, &std_offer(), &[]);
    let _ = drain_sip(&mut call);
    let _ = drain(&mut call);
    let tag = to_tag(&mut call);
    let ack = request("ACK", 1, Some(&tag), "ack1", "");
    with_req(&ack, |r| {
        call.handle_sip_request(Instant::from_millis(50), r)
    })
    .unwrap();
    assert!(drain_sip(&mut call).is_empty());
    let _ = drain(&mut call);

    // "1" during the greeting: menu choice 1 (call back) → confirm the caller ID.
    let mut now = Instant::from_millis(1_000);
    for p in dtmf_packets(Digit::D1, 8000, 100) {
        now += Duration::from_millis(20);
        call.handle_rtp(now, gw_rtp(), false, &p).unwrap();
    }
    let outs = drain(&mut call);
    let digits: Vec<_> = events(&outs)
        .into_iter()
        .filter(|(_, e)| matches!(e, Event::Dtmf(_)))
        .collect();
    assert_eq!(digits.len(), 1, "one key press from five packets: {outs:?}");
    let confirm = outs
        .iter()
        .find_map(|o| match o {
            Output::Play(p) => Some(p.clone()),
            _ => None,
        })
        .expect("confirmation playlist");
    // "…ending in 0 1 2 3": the last four digits are read back.
    let read_back: Vec<_> = confirm
        .iter()
        .filter_map(|p| match p {
            Prompt::Digit(d) => Some(d.as_char()),
            _ => None,
        })
        .collect();
    assert_eq!(read_back, ['0', '1', '2', '3']);

    // "1" again: confirm → the call asks the shell to book the caller's number.
    for p in dtmf_packets(Digit::D1, 16000, 200) {
        now += Duration::from_millis(20);
        call.handle_rtp(now, gw_rtp(), false, &p).unwrap();
    }
    let outs = drain(&mut call);
    let number = outs.iter().find_map(|o| match o {
        Output::BookCallback { number, .. } => Some(number.clone()),
        _ => None,
    });
    assert_eq!(number, PhoneNumber::parse("+12155550123").ok());
    // Nothing says "booked" before the shell reports durability.
    assert!(!outs
        .iter()
        .any(|o| matches!(o, Output::Play(p) if p.contains(&Prompt::Booked))));

    call.handle_input(
        now,
        Input::BookingResult(BookingResult::Booked { position: 5 }),
    )
    .unwrap();
    let outs = drain(&mut call);
    let booked = events(&outs)
        .into_iter()
        .find(|(_, e)| matches!(e, Event::CallbackBooked { .. }))
        .expect("callback event");
    assert_eq!(
        booked.1,
        Event::CallbackBooked {
            number: PhoneNumber::parse("+12155550123").unwrap(),
            position: 5
        }
    );
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Play(p) if p.contains(&Prompt::Booked))));

    // "Booked, you are number 5, goodbye" plays to its end, then BYE.
    let closing = outs
        .iter()
        .find_map(|o| match o {
            Output::Play(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    assert!(closing.contains(&Prompt::Number(5)) && closing.last() == Some(&Prompt::Goodbye));
    assert!(
        drain_sip(&mut call).is_empty(),
        "no BYE before the goodbye played"
    );
    call.handle_input(now, Input::PlaybackFinished).unwrap();
    let outs = drain(&mut call);
    let sent = drain_sip(&mut call);
    assert_eq!(sent.len(), 1, "{sent:?} {outs:?}");
    assert!(
        sent[0].starts_with("BYE sip:gw@192.0.2.1:5060 SIP/2.0\r\n"),
        "{}",
        sent[0]
    );
    assert!(outs.contains(&Output::Media(Media::Stop)));

    // The gateway answers the BYE: call.ended, node hung up; call_seq strictly increasing.
    let bye_resp = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: <sip:+18005550100@192.0.2.10>;tag={tag}\r\nTo: <sip:+12155550123@192.0.2.1>;tag=gw1\r\nCall-ID: call-1@192.0.2.1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        sent[0]
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Via: "))
            .unwrap()
    );
    let bytes = bye_resp.into_bytes();
    let Ok(Message::Response(r)) = parse(&bytes) else {
        panic!("response parses")
    };
    call.handle_sip_response(now, &r.to_incoming_response().unwrap())
        .unwrap();
    let evs = events(&drain(&mut call));
    let last = evs.last().expect("call.ended");
    assert!(matches!(
        last.1,
        Event::Ended {
            reason: EndReason::NodeHangup,
            ..
        }
    ));
}

#[test]
fn caller_bye_mid_prompt_stops_media_and_ends_the_call() {
    let cfg = cfg_with(|_| {});
    let (mut call, tag) = answered_and_acked(cfg);
    let now = Instant::from_millis(2_000);
    with_req(&request("BYE", 2, Some(&tag), "b", ""), |r| {
        call.handle_sip_request(now, r)
    })
    .unwrap();
    let sent = drain_sip(&mut call);
    assert_eq!(first_line(&sent[0]), "SIP/2.0 200 OK");
    assert!(sent[0].contains("CSeq: 2 BYE\r\n"));
    let outs = drain(&mut call);
    assert!(outs.contains(&Output::StopPlayback));
    assert!(outs.contains(&Output::Media(Media::Stop)));
    match events(&outs).last() {
        Some((
            _,
            Event::Ended {
                reason,
                duration,
                answered,
            },
        )) => {
            assert_eq!(*reason, EndReason::CallerHangup);
            assert_eq!(*duration, Duration::from_millis(2_000));
            assert_eq!(*answered, Duration::from_millis(2_000));
        }
        other => panic!("no call.ended: {other:?}"),
    }
    // Exactly one call.ended, whatever happens after.
    while let Some(t) = call.poll_timeout() {
        call.handle_timeout(t);
        assert!(events(&drain(&mut call)).is_empty());
    }
    assert!(call.is_done());
}

#[test]
fn cancel_while_ringing_is_487_and_abandoned() {
    let cfg = cfg_with(|c| c.answer_delay = Duration::from_secs(2));
    let mut call = new_call(cfg, &std_offer(), &[]);
    let sent = drain_sip(&mut call);
    let lines: Vec<&str> = sent.iter().map(|s| first_line(s)).collect();
    assert_eq!(lines, ["SIP/2.0 180 Ringing"]);
    let _ = drain(&mut call);
    let now = Instant::from_millis(500);
    with_req(&request("CANCEL", 1, None, "inv1", ""), |r| {
        call.handle_sip_request(now, r)
    })
    .unwrap();
    let sent = drain_sip(&mut call);
    let lines: Vec<&str> = sent.iter().map(|s| first_line(s)).collect();
    assert!(lines.contains(&"SIP/2.0 200 OK"), "{lines:?}");
    assert!(
        lines.contains(&"SIP/2.0 487 Request Terminated"),
        "{lines:?}"
    );
    let evs = events(&drain(&mut call));
    assert!(matches!(
        evs.last().unwrap().1,
        Event::Ended {
            reason: EndReason::Abandoned,
            ..
        }
    ));
    // The ringing timer must not answer the cancelled call.
    call.handle_timeout(Instant::from_millis(2_500));
    let sent = drain_sip(&mut call);
    assert!(
        sent.iter().all(|s| !s.starts_with("SIP/2.0 200")),
        "{sent:?}"
    );
}

#[test]
fn offerless_invite_gets_our_offer_and_media_starts_on_ack() {
    let cfg = cfg_with(|_| {});
    let mut call = new_call(cfg, "", &[]);
    let sent = drain_sip(&mut call);
    assert_eq!(first_line(&sent[0]), "SIP/2.0 200 OK");
    assert!(
        sent[0].contains("m=audio 30000 RTP/AVP 0 8 101\r\n"),
        "{}",
        sent[0]
    );
    let outs = drain(&mut call);
    assert!(!outs.iter().any(|o| matches!(o, Output::Media(_))));
    let tag = to_tag(&mut call);
    let answer = offer(
        "8 101",
        "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
    );
    with_req(&request("ACK", 1, Some(&tag), "a", &answer), |r| {
        call.handle_sip_request(Instant::from_millis(30), r)
    })
    .unwrap();
    let outs = drain(&mut call);
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Media(Media::Start {
            codec: Codec::Pcma,
            ..
        })
    )));
}

#[test]
fn hold_reinvite_stops_sending_and_unhold_resumes() {
    let cfg = cfg_with(|_| {});
    let (mut call, tag) = answered_and_acked(cfg);
    let hold = std_offer().replace("a=ptime:20\r\n", "a=ptime:20\r\na=sendonly\r\n");
    with_req(&request("INVITE", 2, Some(&tag), "h", &hold), |r| {
        call.handle_sip_request(Instant::from_millis(1_000), r)
    })
    .unwrap();
    let sent = drain_sip(&mut call);
    let ok = sent
        .iter()
        .find(|s| s.starts_with("SIP/2.0 200"))
        .expect("200 to re-INVITE");
    assert!(ok.contains("a=recvonly\r\n"), "{ok}");
    assert!(
        ok.contains("o=ccedge 42 2 IN IP4"),
        "session version bumped: {ok}"
    );
    assert!(drain(&mut call).contains(&Output::Media(Media::Send(false))));
    with_req(&request("ACK", 2, Some(&tag), "h2", ""), |r| {
        call.handle_sip_request(Instant::from_millis(1_010), r)
    })
    .unwrap();
    with_req(&request("INVITE", 3, Some(&tag), "u", &std_offer()), |r| {
        call.handle_sip_request(Instant::from_millis(2_000), r)
    })
    .unwrap();
    let sent = drain_sip(&mut call);
    assert!(sent
        .iter()
        .any(|s| s.starts_with("SIP/2.0 200") && s.contains("a=sendrecv")));
    assert!(drain(&mut call).contains(&Output::Media(Media::Send(true))));
}

#[test]
fn symmetric_rtp_latches_onto_the_real_source() {
    let cfg = cfg_with(|_| {});
    let mut call = new_call(cfg, &std_offer(), &[]);
    let _ = drain(&mut call);
    let nat: SocketAddr = "198.51.100.7:61000".parse().unwrap();
    let mut out = OutboundStream::new(Ssrc(9), 1, 0, PayloadType::PCMU);
    let mut buf = [0u8; 200];
    let n = out
        .next_packet_header(true)
        .emit(&[0xFF; 160], &mut buf)
        .unwrap();
    call.handle_rtp(Instant::from_millis(100), nat, true, &buf[..n])
        .unwrap();
    assert_eq!(drain(&mut call), [Output::Media(Media::Remote(nat))]);
    // Garbage and foreign payload types are refused and change nothing.
    assert_eq!(
        call.handle_rtp(Instant::from_millis(120), nat, true, b"\x00junk"),
        Err(Error::Rtp)
    );
    let h = RtpHeader {
        marker: false,
        payload_type: PayloadType::new(18).unwrap(),
        sequence: 2,
        timestamp: 160,
        ssrc: Ssrc(9),
    };
    let n = h.emit(&[0; 20], &mut buf).unwrap();
    assert_eq!(
        call.handle_rtp(Instant::from_millis(140), nat, true, &buf[..n]),
        Err(Error::Rtp)
    );
    assert!(drain(&mut call).is_empty());
}

#[test]
fn inband_dtmf_is_used_without_telephone_event() {
    let cfg = cfg_with(|_| {});
    let body = offer("0", "a=rtpmap:0 PCMU/8000\r\n");
    let mut call = new_call(cfg, &body, &[]);
    let _ = drain(&mut call);
    // 80 ms of the "1" tone (697 + 1209 Hz) at about -10 dBm0, then silence.
    let mut out = OutboundStream::new(Ssrc(3), 1, 0, PayloadType::PCMU);
    let mut t = 0usize;
    let mut now = Instant::from_millis(100);
    let mut keys = Vec::new();
    for frame in 0..10 {
        let mut payload = [0u8; 160];
        for b in payload.iter_mut() {
            let s = if frame < 4 {
                let x = t as f64 / 8000.0;
                let v = 7000.0
                    * ((2.0 * core::f64::consts::PI * 697.0 * x).sin()
                        + (2.0 * core::f64::consts::PI * 1209.0 * x).sin());
                v as i16
            } else {
                0
            };
            *b = Law::Ulaw.encode_sample(s);
            t += 1;
        }
        let mut buf = [0u8; 200];
        let n = out
            .next_packet_header(frame == 0)
            .emit(&payload, &mut buf)
            .unwrap();
        now += Duration::from_millis(20);
        call.handle_rtp(now, gw_rtp(), false, &buf[..n]).unwrap();
        keys.extend(
            events(&drain(&mut call))
                .into_iter()
                .filter_map(|(_, e)| match e {
                    Event::Dtmf(d) => Some(d),
                    _ => None,
                }),
        );
    }
    assert_eq!(keys, [Digit::D1]);
}

#[test]
fn media_timeout_hangs_up_a_silent_call() {
    let cfg = cfg_with(|c| c.media_timeout = Some(Duration::from_secs(10)));
    let (mut call, _tag) = answered_and_acked(cfg);
    send_silence_frame(&mut call, Instant::from_millis(100));
    let _ = drain(&mut call);
    // Keep the IVR from ending the call first: its no-input timers need a finished prompt.
    let deadline = call.poll_timeout().unwrap();
    assert!(deadline <= Instant::from_millis(10_100));
    call.handle_timeout(Instant::from_millis(10_100));
    let sent = drain_sip(&mut call);
    assert!(sent.iter().any(|s| s.starts_with("BYE ")), "{sent:?}");
}

#[test]
fn media_timeout_counts_from_the_answer_when_no_rtp_ever_arrives() {
    let cfg = cfg_with(|c| c.media_timeout = Some(Duration::from_secs(10)));
    let (mut call, _tag) = answered_and_acked(cfg);
    let _ = drain(&mut call);
    // No RTP at all: the deadline is the answer plus the timeout, not never.
    let deadline = call.poll_timeout().unwrap();
    assert!(deadline <= Instant::from_millis(10_100), "{deadline:?}");
    call.handle_timeout(Instant::from_millis(10_100));
    let sent = drain_sip(&mut call);
    assert!(sent.iter().any(|s| s.starts_with("BYE ")), "{sent:?}");
}

fn rtp_packet(ssrc: u32, seq: u16, pt: PayloadType, payload: &[u8], buf: &mut [u8]) -> usize {
    let h = RtpHeader {
        marker: false,
        payload_type: pt,
        sequence: seq,
        timestamp: u32::from(seq) * 160,
        ssrc: Ssrc(ssrc),
    };
    h.emit(payload, buf).unwrap()
}

fn key_one(ssrc: u32, seq: u16, end: bool, buf: &mut [u8]) -> usize {
    // RFC 4733 event 1, volume 10, duration 400 (the end bit on the last packets).
    let payload = [1u8, if end { 0x80 | 10 } else { 10 }, 0x01, 0x90];
    rtp_packet(ssrc, seq, PayloadType::new(101).unwrap(), &payload, buf)
}

#[test]
fn rtp_from_a_foreign_source_is_refused_before_and_after_the_latch() {
    let cfg = cfg_with(|_| {});
    let (mut call, _tag) = answered_and_acked(cfg);
    let _ = drain(&mut call);
    let attacker: SocketAddr = "203.0.113.66:40000".parse().unwrap();
    let mut buf = [0u8; 200];
    // Before the gateway's first packet: an untrusted stranger is refused, keys and all.
    for seq in 0..4 {
        let n = key_one(77, seq, seq >= 2, &mut buf);
        assert_eq!(
            call.handle_rtp(
                Instant::from_millis(100 + u64::from(seq)),
                attacker,
                false,
                &buf[..n]
            ),
            Err(Error::RtpSource)
        );
    }
    let outs = drain(&mut call);
    assert!(
        !outs.contains(&Output::Media(Media::Remote(attacker))),
        "{outs:?}"
    );
    assert!(
        events(&outs)
            .iter()
            .all(|(_, e)| !matches!(e, Event::Dtmf(_))),
        "{outs:?}"
    );
    // The gateway's own packet (the SDP address) is heard and latches the call.
    let n = rtp_packet(5, 1, PayloadType::PCMU, &[0xFF; 160], &mut buf);
    call.handle_rtp(Instant::from_millis(200), gw_rtp(), false, &buf[..n])
        .unwrap();
    // After the latch, not even a trusted source elsewhere, nor the gateway's IP on
    // another port, takes the media over, however long the gateway stays silent.
    let later = Instant::from_millis(5_000);
    let other_port: SocketAddr = "192.0.2.1:40002".parse().unwrap();
    for (from, trusted) in [(attacker, true), (other_port, false)] {
        let n = key_one(78, 9, true, &mut buf);
        assert_eq!(
            call.handle_rtp(later, from, trusted, &buf[..n]),
            Err(Error::RtpSource)
        );
    }
    let outs = drain(&mut call);
    assert!(
        !outs
            .iter()
            .any(|o| matches!(o, Output::Media(Media::Remote(_)))),
        "{outs:?}"
    );
    assert!(
        events(&outs)
            .iter()
            .all(|(_, e)| !matches!(e, Event::Dtmf(_))),
        "{outs:?}"
    );
    // The latched source may restart its stream with a new SSRC after silence.
    let n = key_one(99, 500, true, &mut buf);
    call.handle_rtp(Instant::from_millis(6_000), gw_rtp(), false, &buf[..n])
        .unwrap();
    let evs = events(&drain(&mut call));
    assert!(
        evs.iter().any(|(_, e)| *e == Event::Dtmf(Digit::D1)),
        "{evs:?}"
    );
}

#[test]
fn a_nat_moved_port_on_the_sdp_address_latches() {
    let cfg = cfg_with(|_| {});
    let (mut call, _tag) = answered_and_acked(cfg);
    let _ = drain(&mut call);
    let moved: SocketAddr = "192.0.2.1:50000".parse().unwrap();
    let mut buf = [0u8; 200];
    let n = rtp_packet(5, 1, PayloadType::PCMU, &[0xFF; 160], &mut buf);
    call.handle_rtp(Instant::from_millis(200), moved, false, &buf[..n])
        .unwrap();
    assert_eq!(drain(&mut call), [Output::Media(Media::Remote(moved))]);
}

#[test]
fn rtcp_from_the_peer_fills_the_peer_report_and_our_blocks_describe_its_stream() {
    let cfg = cfg_with(|_| {});
    let (mut call, _tag) = answered_and_acked(cfg);
    let _ = drain(&mut call);
    // Without rtcp-mux, reports go to the port above the peer's RTP port.
    assert_eq!(call.rtcp_target(), Some("192.0.2.1:40001".parse().unwrap()));
    // No RTP from the peer yet: nothing to report about its stream.
    assert_eq!(call.rtcp_block(Instant::from_millis(50)), None);
    let mut buf = [0u8; 200];
    // Packets 1..=10 with 3 and 4 missing.
    for seq in (1..=10u16).filter(|s| *s != 3 && *s != 4) {
        let n = rtp_packet(5, seq, PayloadType::PCMU, &[0xFF; 160], &mut buf);
        call.handle_rtp(
            Instant::from_millis(100 + u64::from(seq) * 20),
            gw_rtp(),
            false,
            &buf[..n],
        )
        .unwrap();
    }
    let block = call.rtcp_block(Instant::from_millis(400)).unwrap();
    assert_eq!(block.ssrc, Ssrc(5));
    assert_eq!(block.cumulative_lost, 2);
    assert_eq!(block.fraction_lost, (2 * 256 / 10) as u8);
    // The peer's SR + report block about our stream (SSRC 77): 1 % lost, jitter 80 units,
    // LSR/DLSR such that 150 ms have passed in the network.
    let ours = Ssrc(77);
    let arrival_ntp = rtp::rtcp::ntp_from_unix_ms(1_700_000_000_000);
    let lsr = rtp::rtcp::ntp_middle(arrival_ntp).wrapping_sub(65_536); // 1 s before
    let dlsr = 65_536 - 9_830; // 850 ms held by the peer
    let block = rtp::rtcp::ReportBlock {
        ssrc: ours,
        fraction_lost: 3,
        cumulative_lost: 4,
        extended_max_sequence: 500,
        jitter: 80,
        lsr,
        dlsr,
    };
    let info = rtp::rtcp::SenderInfo {
        ntp: arrival_ntp - (1 << 32),
        rtp_timestamp: 1,
        packet_count: 9,
        octet_count: 1440,
    };
    let n = rtp::rtcp::build_report(&mut buf, Ssrc(5), &info, Some(&block), b"gw").unwrap();
    // From elsewhere: refused, nothing recorded.
    let stranger: SocketAddr = "203.0.113.9:40001".parse().unwrap();
    assert_eq!(
        call.handle_rtcp(
            Instant::from_millis(500),
            arrival_ntp,
            stranger,
            false,
            &buf[..n],
            ours
        ),
        Err(Error::RtpSource)
    );
    assert_eq!(call.peer_report(), PeerReport::NONE);
    let rtcp_from: SocketAddr = "192.0.2.1:40001".parse().unwrap();
    call.handle_rtcp(
        Instant::from_millis(500),
        arrival_ntp,
        rtcp_from,
        false,
        &buf[..n],
        ours,
    )
    .unwrap();
    let r = call.peer_report();
    assert_eq!(r.packets, 1);
    assert_eq!(r.fraction_lost, 3);
    assert_eq!(r.cumulative_lost, 4);
    assert_eq!(r.jitter_ms, 10);
    let rtt = r.rtt_ms.unwrap();
    assert!((149..=151).contains(&rtt), "{rtt}");
    // The peer's SR is echoed in our next block (LSR), with the time we held it (DLSR).
    let next = call.rtcp_block(Instant::from_millis(1_500)).unwrap();
    assert_eq!(next.lsr, rtp::rtcp::ntp_middle(info.ntp));
    assert_eq!(next.dlsr, 65_536);
    // Garbage is refused.
    assert_eq!(
        call.handle_rtcp(
            Instant::from_millis(600),
            arrival_ntp,
            rtcp_from,
            false,
            &buf[..7],
            ours
        ),
        Err(Error::Rtp)
    );
}

#[test]
fn announcements_are_reported_with_their_handles() {
    let cfg = cfg_with(|_| {});
    let a = AnnouncementInfo {
        handle: AnnouncementHandle(11),
        offer_callback: true,
    };
    let mut call = new_call(cfg, &std_offer(), &[a]);
    let before = drain(&mut call);
    let tag = to_tag(&mut call);
    with_req(&request("ACK", 1, Some(&tag), "a", ""), |r| {
        call.handle_sip_request(Instant::from_millis(20), r)
    })
    .unwrap();
    let outs = drain(&mut call);
    assert!(outs.iter().any(|o| matches!(o, Output::Play(p) if p.first() == Some(&Prompt::Announcement(AnnouncementHandle(11))))));
    let evs = events(&outs);
    assert!(evs
        .iter()
        .any(|(_, e)| *e == Event::AnnouncementStarted(AnnouncementHandle(11))));
    call.handle_input(Instant::from_millis(8_000), Input::PlaybackFinished)
        .unwrap();
    let evs = events(&drain(&mut call));
    assert!(evs.iter().any(|(_, e)| *e
        == Event::AnnouncementCompleted {
            handle: AnnouncementHandle(11),
            interrupted: false
        }));
    // call_seq is contiguous from 1 across everything emitted so far.
    let all: Vec<u32> = events(&before)
        .iter()
        .chain(events(&outs).iter())
        .chain(evs.iter())
        .map(|(s, _)| *s)
        .collect();
    let expect: Vec<u32> = (1..=all.len() as u32).collect();
    assert_eq!(all, expect);
}

#[test]
fn per_call_state_fits_the_budget() {
    use core::mem::size_of;
    // What a call must keep is decided by real INVITEs (the dialog's arena); the rest stays
    // within 2 KiB. The budget users see, RSS per call, is measured in docs/BENCHMARKS.md.
    let size = size_of::<Call>();
    let budget = crate::limits::SIP_DIALOG_ARENA + 2048;
    assert!(
        size <= budget,
        "Call is {size} bytes; the budget is {budget} (dialog {}, ivr {}, inbound {}, in-band {})",
        size_of::<BodylessDialog>(),
        size_of::<Ivr>(),
        size_of::<InboundStream>(),
        size_of::<InbandDetector>()
    );
}

#[test]
fn numbers_come_from_from_and_to() {
    with_req(&request("INVITE", 1, None, "x", ""), |r| {
        let (c, d) = numbers(r);
        assert_eq!(c.unwrap().digits(), "12155550123");
        assert_eq!(d.unwrap().digits(), "18005550100");
    });
    assert_eq!(uri_number("sip:anonymous@anonymous.invalid"), None);
    assert_eq!(uri_number("tel:+4420"), PhoneNumber::parse("+4420").ok());
    assert_eq!(uri_number("http://x"), None);
}

/// One 20 ms PCMU frame of silence from the gateway's RTP address.
fn send_silence_frame(call: &mut Call, now: Instant) {
    let mut out = OutboundStream::new(Ssrc(3), 1, 0, PayloadType::PCMU);
    let mut buf = [0u8; 200];
    let n = out
        .next_packet_header(true)
        .emit(&[0xFF; 160], &mut buf)
        .unwrap();
    call.handle_rtp(now, gw_rtp(), false, &buf[..n]).unwrap();
}

/// "1" (call back) then "1" (confirm the caller ID), 20 ms per packet from `now`.
fn press_one_one(call: &mut Call, now: &mut Instant) {
    for (digit, ts, seq) in [(Digit::D1, 8000u32, 100u16), (Digit::D1, 16000, 200)] {
        for p in dtmf_packets(digit, ts, seq) {
            *now += Duration::from_millis(20);
            call.handle_rtp(*now, gw_rtp(), false, &p).unwrap();
        }
    }
}

fn answered_and_acked(cfg: &'static Config) -> (Call, String) {
    let mut call = new_call(cfg, &std_offer(), &[]);
    let _ = drain_sip(&mut call);
    let _ = drain(&mut call);
    let tag = to_tag(&mut call);
    with_req(&request("ACK", 1, Some(&tag), "a", ""), |r| {
        call.handle_sip_request(Instant::from_millis(20), r)
    })
    .unwrap();
    (call, tag)
}

// Regression (fuzz call_sequence): RTP after the node hung up must not re-latch media.
#[test]
fn no_media_commands_after_the_node_hangs_up() {
    let cfg = cfg_with(|_| {});
    let (mut call, _) = answered_and_acked(cfg);
    call.handle_input(Instant::from_millis(100), Input::Shutdown)
        .unwrap();
    let outs = drain(&mut call);
    assert!(outs.contains(&Output::Media(Media::Stop)));
    let nat: SocketAddr = "198.51.100.7:61000".parse().unwrap();
    let mut out = OutboundStream::new(Ssrc(9), 1, 0, PayloadType::PCMU);
    let mut buf = [0u8; 200];
    let n = out
        .next_packet_header(true)
        .emit(&[0xFF; 160], &mut buf)
        .unwrap();
    assert_eq!(
        call.handle_rtp(Instant::from_millis(120), nat, true, &buf[..n]),
        Err(Error::Rtp)
    );
    assert!(drain(&mut call).is_empty());
}

// Regression (fuzz call_sequence): the IVR stops with the node's hang-up.
#[test]
fn no_prompts_after_the_node_hangs_up() {
    let cfg = cfg_with(|_| {});
    let (mut call, _) = answered_and_acked(cfg);
    call.handle_input(Instant::from_millis(100), Input::Shutdown)
        .unwrap();
    let _ = drain(&mut call);
    let _ = call.handle_input(Instant::from_millis(200), Input::PlaybackFinished);
    let outs = drain(&mut call);
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Play(_))),
        "{outs:?}"
    );
    // And no IVR timer keeps firing afterwards.
    let mut now = Instant::from_millis(200);
    for _ in 0..50 {
        let Some(t) = call.poll_timeout() else { break };
        assert!(t >= now, "deadline in the past");
        now = t;
        call.handle_timeout(now);
        assert!(!drain(&mut call)
            .iter()
            .any(|o| matches!(o, Output::Play(_))));
    }
}

// Regression (fuzz call_sequence): on hold, the media timeout must not leave a deadline in
// the past (the shell's timer would spin).
#[test]
fn hold_never_leaves_a_past_deadline() {
    let cfg = cfg_with(|c| c.media_timeout = Some(Duration::from_secs(5)));
    let (mut call, tag) = answered_and_acked(cfg);
    send_silence_frame(&mut call, Instant::from_millis(100));
    let hold = std_offer().replace("a=ptime:20\r\n", "a=ptime:20\r\na=sendonly\r\n");
    with_req(&request("INVITE", 2, Some(&tag), "h", &hold), |r| {
        call.handle_sip_request(Instant::from_millis(200), r)
    })
    .unwrap();
    let _ = drain_sip(&mut call);
    let _ = drain(&mut call);
    let now = Instant::from_millis(30_000);
    call.handle_timeout(now);
    let _ = drain_sip(&mut call);
    let _ = drain(&mut call);
    if let Some(t) = call.poll_timeout() {
        assert!(t > now, "deadline {t:?} not after {now:?}");
    }
}

// Regression (firmware-sim seed 55): the caller hangs up while the booking is being written;
// the booking's event must still come before call.ended.
#[test]
fn call_ended_waits_for_a_booking_in_flight() {
    let cfg = cfg_with(|_| {});
    let (mut call, tag) = answered_and_acked(cfg);
    let mut now = Instant::from_millis(1_000);
    press_one_one(&mut call, &mut now);
    let outs = drain(&mut call);
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::BookCallback { .. })));
    // BYE before the store answers.
    with_req(&request("BYE", 2, Some(&tag), "b", ""), |r| {
        call.handle_sip_request(now, r)
    })
    .unwrap();
    let evs = events(&drain(&mut call));
    assert!(
        !evs.iter().any(|(_, e)| matches!(e, Event::Ended { .. })),
        "call.ended must wait: {evs:?}"
    );
    call.handle_input(
        now,
        Input::BookingResult(BookingResult::Booked { position: 2 }),
    )
    .unwrap();
    let evs = events(&drain(&mut call));
    let kinds: Vec<_> = evs
        .iter()
        .map(|(_, e)| match e {
            Event::CallbackBooked { .. } => "booked",
            Event::Ended { .. } => "ended",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k != "other").collect::<Vec<_>>(),
        [&"booked", &"ended"]
    );
}

#[test]
fn a_booking_that_never_answers_does_not_keep_the_call_forever() {
    let cfg = cfg_with(|_| {});
    let (mut call, tag) = answered_and_acked(cfg);
    let mut now = Instant::from_millis(1_000);
    press_one_one(&mut call, &mut now);
    let _ = drain(&mut call);
    with_req(&request("BYE", 2, Some(&tag), "b", ""), |r| {
        call.handle_sip_request(now, r)
    })
    .unwrap();
    let _ = drain_sip(&mut call);
    let mut ended = false;
    for _ in 0..100 {
        let Some(t) = call.poll_timeout() else { break };
        now = t;
        call.handle_timeout(now);
        let _ = drain_sip(&mut call);
        ended |= events(&drain(&mut call))
            .iter()
            .any(|(_, e)| matches!(e, Event::Ended { .. }));
    }
    assert!(ended, "call.ended after the booking deadline");
    assert!(call.is_done());
}

#[test]
fn a_missed_session_refresh_ends_the_call_as_session_expired() {
    let cfg = cfg_with(|_| {});
    let inv = request("INVITE", 1, None, "inv1", &std_offer()).replace(
        "Contact:",
        "Supported: timer\r\nSession-Expires: 90\r\nContact:",
    );
    let mut call = with_req(&inv, |r| Call::new(Instant::ZERO, cfg, &setup(), r, &[])).unwrap();
    let sent = drain_sip(&mut call);
    assert!(
        sent.iter().any(|s| s.starts_with("SIP/2.0 200")
            && s.contains("\r\nSession-Expires: 90;refresher=uac\r\n")
            && s.contains("\r\nRequire: timer\r\n")),
        "{sent:?}"
    );
    let _ = drain(&mut call);
    let tag = to_tag(&mut call);
    with_req(&request("ACK", 1, Some(&tag), "a", ""), |r| {
        call.handle_sip_request(Instant::from_millis(20), r)
    })
    .unwrap();
    // No prompt ever finishes, so the IVR waits; no refresh comes: BYE at 60 s.
    let (mut sent, mut outs) = (Vec::new(), Vec::new());
    while let Some(at) = call.poll_timeout() {
        if at > Instant::from_millis(61_000) {
            break;
        }
        call.handle_timeout(at);
        sent.extend(drain_sip(&mut call));
        outs.extend(drain(&mut call));
    }
    let byes: Vec<&String> = sent.iter().filter(|s| s.starts_with("BYE ")).collect();
    // The BYE and its Timer E retransmission at 60.5 s.
    assert_eq!(byes.len(), 2, "{sent:?}");
    assert!(byes.iter().all(|b| b.contains("\r\nCSeq: 1 BYE\r\n")));
    assert!(events(&outs).iter().any(|(_, e)| matches!(
        e,
        Event::Ended {
            reason: EndReason::SessionExpired,
            ..
        }
    )));
}

// Regression: when the gateway never answered the node's BYE, `call.ended` counted the 32 s of
// BYE retransmissions (Timer F) into the call's duration.
#[test]
fn duration_ends_at_our_bye_even_when_it_is_never_answered() {
    let cfg = cfg_with(|_| {});
    let (mut call, _) = answered_and_acked(cfg);
    let answered_at = call.answered_at.expect("answered");
    let bye_at = Instant::from_millis(10_000);
    call.handle_input(bye_at, Input::Shutdown).unwrap();
    let mut sent = drain_sip(&mut call);
    let mut outs = drain(&mut call);
    assert!(sent.iter().any(|s| s.starts_with("BYE ")), "{sent:?}");
    while let Some(at) = call.poll_timeout() {
        call.handle_timeout(at);
        sent.extend(drain_sip(&mut call));
        outs.extend(drain(&mut call));
        if call.is_done() {
            break;
        }
    }
    assert!(
        sent.iter().filter(|s| s.starts_with("BYE ")).count() > 1,
        "{sent:?}"
    );
    let ended: Vec<Event> = events(&outs)
        .into_iter()
        .filter_map(|(_, e)| matches!(e, Event::Ended { .. }).then_some(e))
        .collect();
    assert_eq!(
        ended,
        [Event::Ended {
            reason: EndReason::Shutdown,
            duration: bye_at - Instant::ZERO,
            answered: bye_at - answered_at,
        }]
    );
}
