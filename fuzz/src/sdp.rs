//! `shared::sdp::parse` + `negotiate`, our answer written and read back, and the UAC side
//! (`Offer::accept_answer`).

use std::net::SocketAddr;

use shared::rtp::PayloadType;
use shared::sdp::{self, Codec, Config, MediaKind, Offer, Preference, Proto, SessionDescription};

/// The configurations every input is negotiated against.
const CONFIGS: [Config; 4] = [
    Config {
        pcmu: true,
        pcma: true,
        prefer: Preference::Offerer,
        telephone_event: true,
    },
    Config {
        pcmu: false,
        pcma: true,
        prefer: Preference::Offerer,
        telephone_event: true,
    },
    Config {
        pcmu: true,
        pcma: false,
        prefer: Preference::Pcmu,
        telephone_event: false,
    },
    Config {
        pcmu: true,
        pcma: true,
        prefer: Preference::Pcma,
        telephone_event: true,
    },
];

fn local() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10], 30_000))
}

/// Parses `data` as an SDP body and negotiates it as an offer and as an answer.
pub fn check(data: &[u8]) {
    let Ok(sd) = sdp::parse(data) else {
        return;
    };
    assert!(sd.media.len() <= sdp::SDP_MAX_MEDIA);
    for m in &sd.media {
        assert!(crate::within(data, m.first_format.as_bytes()));
        assert!(m.formats.len() <= sdp::SDP_MAX_FORMATS);
        // Attribute and rtpmap readers must not panic on any section.
        for a in m.attributes() {
            assert!(crate::within(data, a.name.as_bytes()));
        }
        for &pt in &m.formats {
            let _ = m.rtpmap(pt);
            let _ = m.fmtp(pt);
        }
    }
    for cfg in &CONFIGS {
        check_offer(&sd, cfg);
        check_answer_to_our_offer(&sd, cfg);
    }
}

fn check_offer(sd: &SessionDescription<'_>, cfg: &Config) {
    let Ok(n) = sdp::negotiate(sd, cfg) else {
        return;
    };
    // The chosen payload type (and telephone-event PT) is one the offer listed on a usable
    // audio line.
    let usable =
        |m: &&sdp::Media<'_>| m.kind == MediaKind::Audio && m.proto == Proto::RtpAvp && m.port != 0;
    // The answer uses the line negotiate reports: a usable audio line that lists the chosen
    // PT (and the telephone-event PT). Earlier lines may list the same PT and still have been
    // passed over, e.g. when their rtpmap for it is malformed.
    let line = sd
        .media
        .get(n.media_index())
        .filter(usable)
        .filter(|m| {
            m.formats.contains(&n.payload_type)
                && n.telephone_event
                    .is_none_or(|te| m.formats.contains(&te.payload_type))
        })
        .unwrap_or_else(|| panic!("negotiated PT {:?} was not offered: {sd:?}", n.payload_type));
    match n.codec {
        Codec::Pcmu => assert!(cfg.pcmu, "PCMU chosen but not allowed"),
        Codec::Pcma => assert!(cfg.pcma, "PCMA chosen but not allowed"),
    }
    if n.payload_type == PayloadType::PCMU && line.rtpmap(n.payload_type).is_none() {
        assert_eq!(n.codec, Codec::Pcmu);
    }
    if n.payload_type == PayloadType::PCMA && line.rtpmap(n.payload_type).is_none() {
        assert_eq!(n.codec, Codec::Pcma);
    }
    if let Some(te) = n.telephone_event {
        assert!(
            cfg.telephone_event,
            "telephone-event negotiated but not allowed"
        );
        assert_ne!(te.payload_type, n.payload_type);
        assert_ne!(te.events, 0);
    }
    if let Some(r) = n.remote {
        assert!(sd.media.iter().any(|m| m.port == r.port()));
        assert!(!r.ip().is_unspecified());
    }

    // Our answer is well-formed SDP with one line per offered line, and negotiating it again
    // as if it were an offer picks the same codec and payload type.
    let answer = n.answer(local(), 1, 2);
    let mut buf = [0u8; 1024];
    let len = answer.emit(&mut buf).expect("an answer fits 1 KiB");
    let text = &buf[..len];
    let parsed = sdp::parse(text).unwrap_or_else(|e| {
        panic!(
            "our answer does not parse ({e:?}): {}",
            String::from_utf8_lossy(text)
        )
    });
    assert_eq!(
        parsed.media.len(),
        sd.media.len(),
        "answer lines differ from offer lines: {}",
        String::from_utf8_lossy(text)
    );
    let open: Vec<_> = parsed.media.iter().filter(|m| m.port != 0).collect();
    assert_eq!(open.len(), 1, "exactly one accepted line");
    assert_eq!(open[0].port, local().port());
    let again = sdp::negotiate(&parsed, cfg).unwrap_or_else(|e| {
        panic!(
            "our answer does not negotiate ({e:?}): {}",
            String::from_utf8_lossy(text)
        )
    });
    assert_eq!(again.codec, n.codec);
    assert_eq!(again.payload_type, n.payload_type);
    assert_eq!(
        again.telephone_event.map(|t| t.payload_type),
        n.telephone_event.map(|t| t.payload_type)
    );
}

fn check_answer_to_our_offer(sd: &SessionDescription<'_>, cfg: &Config) {
    let offer = Offer::new(cfg, local(), 7, 1).expect("every config allows a codec");
    let mut buf = [0u8; 1024];
    let len = offer.emit(&mut buf).expect("an offer fits 1 KiB");
    assert!(sdp::parse(&buf[..len]).is_ok(), "our offer does not parse");
    let Ok(n) = offer.accept_answer(sd) else {
        return;
    };
    // We offered the static numbers only.
    assert!(
        n.payload_type == PayloadType::PCMU || n.payload_type == PayloadType::PCMA,
        "answer accepted with PT {:?}",
        n.payload_type
    );
    match n.codec {
        Codec::Pcmu => assert!(cfg.pcmu),
        Codec::Pcma => assert!(cfg.pcma),
    }
    if let Some(te) = n.telephone_event {
        assert!(cfg.telephone_event);
        assert_eq!(te.payload_type, PayloadType::TELEPHONE_EVENT_DEFAULT);
    }
}
