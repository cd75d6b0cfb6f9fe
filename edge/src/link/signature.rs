//! Signed announcements: the CRM signs each Announcement with Ed25519 and the node, when
//! `announcements.signing_key` holds the CRM's public key, refuses any announcement that is
//! unsigned or whose signature does not verify.
//!
//! ## What is signed
//!
//! Not the JSON text (two JSON encoders rarely agree byte for byte), but the values the node
//! acts on, in a fixed order, each as a netstring (`{byte length}:{bytes},`), after the
//! context string `ccedge-announcement-v1`:
//!
//! | # | item | when absent |
//! |---|---|---|
//! | 1 | `id` | — (required) |
//! | 2 | `version`, decimal | — (required) |
//! | 3 | `priority`, decimal (`-5`) | `0` |
//! | 4 | `scope.sites`: the count, decimal, then each entry | `0` |
//! | 5 | `scope.dialled`: the count, then each entry | `0` |
//! | 6 | `scope.caller_prefixes`: the count, then each entry | `0` |
//! | 7 | `valid_from`, exactly as written | empty |
//! | 8 | `valid_until`, exactly as written | empty |
//! | 9 | `audio_sha256`, exactly as written | empty |
//! | 10 | `text` | empty |
//! | 11 | `offer_callback`: `true` or `false` | `true` |
//! | 12 | `language` | empty |
//!
//! Strings are their UTF-8 bytes after JSON unescaping. The signature (64 bytes, standard
//! base64) travels in the document's `signature` member. Audio needs no signature of its own:
//! its topic is its SHA-256, which the node checks, and the signed `audio_sha256` names it.
//!
//! A netstring carries its own length, so no value can be confused with the next one whatever
//! bytes it holds (commas in a site name, newlines in a text).
//!
//! ## What it does not cover
//!
//! An empty retained payload still withdraws (the contract has no signed withdrawal; a CRM
//! that wants one publishes a signed version whose `valid_until` has passed). Only the broker's
//! ACLs stop a stranger from withdrawing. Announcements already cached when a key is first
//! configured are not re-checked: the cache is the node's own (written after checking).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::announcements::AnnouncementWire;
use crate::config::values::{base64_decode, base64_encode};

/// The context string every signed input starts with.
pub const CONTEXT: &[u8] = b"ccedge-announcement-v1";

/// Why an announcement's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The document has no `signature` member.
    #[error("unsigned (announcements.signing_key is set: a signature is required)")]
    Missing,
    /// `signature` is not base64 of 64 bytes.
    #[error("signature is not base64 of 64 bytes")]
    Malformed,
    /// The configured key is not an Ed25519 public key.
    #[error("announcements.signing_key is not a valid Ed25519 public key")]
    BadKey,
    /// The signature does not verify with the configured key.
    #[error("the signature does not match (another key, or the document was changed)")]
    Mismatch,
    /// The document is not an Announcement (for [`sign_document`]).
    #[error("not an Announcement document: {0}")]
    Document(String),
}

fn netstring(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(v.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(v);
    out.push(b',');
}

fn list(out: &mut Vec<u8>, items: &[String]) {
    netstring(out, items.len().to_string().as_bytes());
    for i in items {
        netstring(out, i.as_bytes());
    }
}

/// The bytes the signature covers (see the module doc).
#[must_use]
pub fn signed_input(w: &AnnouncementWire) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(CONTEXT);
    netstring(&mut out, w.id.as_bytes());
    netstring(&mut out, w.version.to_string().as_bytes());
    netstring(&mut out, w.priority.to_string().as_bytes());
    list(&mut out, &w.scope.sites);
    list(&mut out, &w.scope.dialled);
    list(&mut out, &w.scope.caller_prefixes);
    let opt = |v: &Option<String>| v.as_deref().unwrap_or("").as_bytes().to_vec();
    netstring(&mut out, &opt(&w.valid_from));
    netstring(&mut out, &opt(&w.valid_until));
    netstring(&mut out, &opt(&w.audio_sha256));
    netstring(&mut out, &opt(&w.text));
    netstring(&mut out, if w.offer_callback { b"true" } else { b"false" });
    netstring(&mut out, &opt(&w.language));
    out
}

/// Checks `w`'s `signature` against the CRM's public key `key`.
///
/// # Errors
/// [`SignatureError`] saying why it is refused.
pub fn verify(key: &[u8; 32], w: &AnnouncementWire) -> Result<(), SignatureError> {
    let sig = w.signature.as_deref().ok_or(SignatureError::Missing)?;
    let bytes = base64_decode(sig.trim()).ok_or(SignatureError::Malformed)?;
    let bytes: [u8; 64] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| SignatureError::Malformed)?;
    let key = VerifyingKey::from_bytes(key).map_err(|_| SignatureError::BadKey)?;
    // `verify_strict` also refuses weak keys and non-canonical signatures.
    key.verify_strict(&signed_input(w), &Signature::from_bytes(&bytes))
        .map_err(|_| SignatureError::Mismatch)
}

/// The public key (standard base64, what `announcements.signing_key` takes) of the private key
/// whose 32-byte seed is `seed`.
#[must_use]
pub fn public_key(seed: &[u8; 32]) -> String {
    base64_encode(SigningKey::from_bytes(seed).verifying_key().as_bytes())
}

/// Signs an Announcement document (JSON) with the private key whose seed is `seed`: returns
/// the document with its `signature` member set (any old one replaced).
///
/// # Errors
/// [`SignatureError::Document`] when `json` is not an Announcement the node would parse.
pub fn sign_document(seed: &[u8; 32], json: &[u8]) -> Result<Vec<u8>, SignatureError> {
    let mut w: AnnouncementWire =
        serde_json::from_slice(json).map_err(|e| SignatureError::Document(e.to_string()))?;
    w.signature = None;
    let sig = SigningKey::from_bytes(seed).sign(&signed_input(&w));
    let mut doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| SignatureError::Document(e.to_string()))?;
    doc.insert(
        "signature".to_owned(),
        serde_json::Value::String(base64_encode(&sig.to_bytes())),
    );
    serde_json::to_vec(&doc).map_err(|e| SignatureError::Document(e.to_string()))
}

/// Writes a private key seed as [`parse_seed`] reads it.
#[must_use]
pub fn encode_seed(seed: &[u8; 32]) -> String {
    base64_encode(seed)
}

/// Reads a private key seed: 32 bytes written in standard base64 (what
/// `firmware-sim crm keygen` writes), surrounding whitespace ignored.
///
/// # Errors
/// A message saying what is wrong with it.
pub fn parse_seed(text: &str) -> Result<[u8; 32], String> {
    let bytes = base64_decode(text.trim()).ok_or("the key is not base64")?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("the key is {} bytes, not 32", bytes.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u8; 32] = [7; 32];

    fn doc() -> serde_json::Value {
        serde_json::json!({
            "id": "outage-phl",
            "version": 3,
            "priority": -2,
            "scope": {"sites": ["phl", "n,y"], "dialled": ["+18005550100"], "caller_prefixes": []},
            "valid_from": "2026-11-23T06:00:00Z",
            "audio_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "text": "line one\nline two",
            "offer_callback": false,
            "language": "en"
        })
    }

    fn key() -> [u8; 32] {
        let v = base64_decode(&public_key(&SEED)).unwrap();
        v.as_slice().try_into().unwrap()
    }

    fn wire(json: &[u8]) -> AnnouncementWire {
        serde_json::from_slice(json).unwrap()
    }

    #[test]
    fn a_signed_document_verifies_and_any_changed_value_does_not() {
        let raw = serde_json::to_vec(&doc()).unwrap();
        let signed = sign_document(&SEED, &raw).unwrap();
        assert_eq!(verify(&key(), &wire(&signed)), Ok(()));
        // The unsigned original is refused.
        assert_eq!(verify(&key(), &wire(&raw)), Err(SignatureError::Missing));
        // Every value the node acts on is covered.
        let signed_v: serde_json::Value = serde_json::from_slice(&signed).unwrap();
        let edits: Vec<(&str, serde_json::Value)> = vec![
            ("/id", "outage-nyc".into()),
            ("/version", 4.into()),
            ("/priority", 2.into()),
            ("/scope/sites/1", "n".into()),
            ("/scope/dialled/0", "+18005550101".into()),
            ("/valid_from", "2026-11-23T06:00:01Z".into()),
            (
                "/audio_sha256",
                "0f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            ),
            ("/text", "line one\nline 2".into()),
            ("/offer_callback", true.into()),
            ("/language", "es".into()),
        ];
        for (ptr, v) in edits {
            let mut d = signed_v.clone();
            *d.pointer_mut(ptr).unwrap() = v;
            let w = wire(&serde_json::to_vec(&d).unwrap());
            assert_eq!(verify(&key(), &w), Err(SignatureError::Mismatch), "{ptr}");
        }
        // Adding a field the signature did not cover, or moving an entry between lists, too.
        for (ptr, field, v) in [
            ("/scope", "caller_prefixes", serde_json::json!(["+1215"])),
            ("", "valid_until", "2026-11-24T00:00:00Z".into()),
        ] {
            let mut d = signed_v.clone();
            d.pointer_mut(ptr)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .insert(field.into(), v);
            let w = wire(&serde_json::to_vec(&d).unwrap());
            assert_eq!(verify(&key(), &w), Err(SignatureError::Mismatch), "{field}");
        }
    }

    #[test]
    fn json_layout_does_not_matter_only_values() {
        let signed = sign_document(&SEED, &serde_json::to_vec(&doc()).unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&signed).unwrap();
        let pretty = serde_json::to_vec_pretty(&v).unwrap();
        assert_eq!(verify(&key(), &wire(&pretty)), Ok(()));
        // Defaults spelled out or left out sign the same.
        let minimal = br#"{"id":"a","version":1,"audio_sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}"#;
        let signed = sign_document(&SEED, minimal).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&signed).unwrap();
        v["priority"] = 0.into();
        v["offer_callback"] = true.into();
        v["scope"] = serde_json::json!({"sites": []});
        let w = wire(&serde_json::to_vec(&v).unwrap());
        assert_eq!(verify(&key(), &w), Ok(()));
    }

    #[test]
    fn wrong_key_garbage_signature_and_bad_key_are_refused() {
        let signed = sign_document(&SEED, &serde_json::to_vec(&doc()).unwrap()).unwrap();
        let w = wire(&signed);
        let other = base64_decode(&public_key(&[8; 32])).unwrap();
        let other: [u8; 32] = other.as_slice().try_into().unwrap();
        assert_eq!(verify(&other, &w), Err(SignatureError::Mismatch));
        let mut bad = w.clone();
        bad.signature = Some("not base64!".into());
        assert_eq!(verify(&key(), &bad), Err(SignatureError::Malformed));
        bad.signature = Some("AAAA".into());
        assert_eq!(verify(&key(), &bad), Err(SignatureError::Malformed));
        // A y coordinate that is not on the curve.
        let not_a_point = [0xff; 32];
        assert!(matches!(
            verify(&not_a_point, &w),
            Err(SignatureError::BadKey | SignatureError::Mismatch)
        ));
        assert!(sign_document(&SEED, b"{\"id\":1}").is_err());
    }

    #[test]
    fn netstrings_keep_values_apart() {
        let a = wire(br#"{"id":"a","version":1,"scope":{"sites":["x,y"]},"text":"t"}"#);
        let b = wire(br#"{"id":"a","version":1,"scope":{"sites":["x","y"]},"text":"t"}"#);
        assert_ne!(signed_input(&a), signed_input(&b));
        let c = wire(br#"{"id":"a","version":1,"scope":{"sites":["x"],"dialled":[]},"text":"t"}"#);
        let d = wire(br#"{"id":"a","version":1,"scope":{"sites":[],"dialled":["x"]},"text":"t"}"#);
        assert_ne!(signed_input(&c), signed_input(&d));
        assert!(signed_input(&a).starts_with(b"ccedge-announcement-v11:a,1:1,1:0,1:1,3:x,y,"));
    }

    #[test]
    fn seeds_parse() {
        assert_eq!(parse_seed(&base64_encode(&SEED)), Ok(SEED));
        assert!(parse_seed("AAAA").is_err());
        assert!(parse_seed("!!").is_err());
    }
}
