//! Checks for the agent's (`edge`) parsers of input from outside: what the CRM publishes
//! (announcements, audio) and what a local client writes to the control socket.

use edge::announcements::{self, AnnouncementWire};
use edge::control::protocol::Request;
use edge::link::signature;

const SEED: [u8; 32] = [0x42; 32];

/// An Announcement document and audio from the broker: `decode`, the signature code and the
/// WAV decoder never panic; every document the node accepts can be signed, and then verifies
/// with the signer's public key and with no other; the signed input is deterministic and
/// starts with the context string.
pub fn check_crm_input(data: &[u8]) {
    let decoded = announcements::decode(data);
    if let Ok(w) = serde_json::from_slice::<AnnouncementWire>(data) {
        let input = signature::signed_input(&w);
        assert!(input.starts_with(signature::CONTEXT));
        assert_eq!(input, signature::signed_input(&w), "deterministic");
        let key = public_key(&SEED);
        let _ = signature::verify(&key, &w);
        let _ = signature::verify(&[0xff; 32], &w);
        if let Ok((a, _)) = &decoded {
            assert_eq!(a.id.as_str(), w.id, "decode keeps the id");
            let signed = signature::sign_document(&SEED, data)
                .unwrap_or_else(|e| panic!("an accepted document cannot be signed: {e}"));
            let sw: AnnouncementWire =
                serde_json::from_slice(&signed).expect("a signed document parses");
            assert_eq!(signature::verify(&key, &sw), Ok(()));
            assert!(signature::verify(&public_key(&[0x43; 32]), &sw).is_err());
            assert!(announcements::decode(&signed).is_ok(), "signing keeps it valid");
        }
    } else {
        assert!(decoded.is_err(), "decode accepted what is not an AnnouncementWire");
    }
    // Audio: any outcome but a panic (libFuzzer's memory limit catches a runaway allocation).
    let _ = edge::media::audio::decode_wav(data);
}

fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    let b64 = signature::public_key(seed);
    let key: edge::config::SigningKey = b64.parse().expect("own public key parses");
    key.0
}

/// One control-socket request line: `Request::parse` never panics, and what it accepts
/// written back with `to_line` parses to the same request.
pub fn check_control_request(data: &[u8]) {
    if let Ok(req) = Request::parse(data) {
        assert!(!req.cmd().is_empty());
        let line = req.to_line();
        assert_eq!(Request::parse(line.as_bytes()), Ok(req.clone()), "{line}");
    }
}
