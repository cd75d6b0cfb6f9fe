//! Announcements as the CRM sends them (`deploy/asyncapi.yaml`, `P/announcements/{id}`), and the local cache in the state
//! directory that keeps the node announcing with no broker at all.
//!
//! Layout under `node.state_dir`:
//!
//! ```text
//! announcements/{id}.json   one Announcement document each (the CRM's JSON, as received)
//! audio/{sha256}.wav        the audio, named by the SHA-256 of its bytes (verified on load)
//! ```
//!
//! The MQTT link writes these files: audio when it verifies, an announcement when the node
//! kept it (see `edge/src/link/intake.rs`); an operator can also drop files there by hand.
//! [`load_dir`] reads them all; a file that is not valid is skipped with a logged reason and
//! never stops the node.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use shared::announce::{Announcement, Scope};
use shared::ids::AnnouncementId;
use shared::number::PhoneNumber;
use shared::time::UnixMillis;

/// Why an announcement document was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Not JSON, or not the Announcement schema.
    #[error("not an Announcement document: {0}")]
    Schema(String),
    /// A field has a value the node cannot use.
    #[error("field `{field}`: {message}")]
    Field {
        /// The JSON field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The Announcement JSON document (`deploy/asyncapi.yaml`, schema `Announcement`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnouncementWire {
    /// Id.
    pub id: String,
    /// Version (only increases).
    pub version: u32,
    /// Higher plays first.
    #[serde(default)]
    pub priority: i32,
    /// Where it applies.
    #[serde(default)]
    pub scope: ScopeWire,
    /// RFC 3339.
    #[serde(default)]
    pub valid_from: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub valid_until: Option<String>,
    /// Hex SHA-256 of the audio file.
    #[serde(default)]
    pub audio_sha256: Option<String>,
    /// Text to render with a speech engine.
    #[serde(default)]
    pub text: Option<String>,
    /// Offer "1 to be called back" after it.
    #[serde(default = "yes")]
    pub offer_callback: bool,
    /// Language tag.
    #[serde(default)]
    pub language: Option<String>,
    /// Ed25519 signature, standard base64 (see [`crate::link::signature`]).
    #[serde(default)]
    pub signature: Option<String>,
}

fn yes() -> bool {
    true
}

/// The `scope` object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeWire {
    /// Sites.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Dialled numbers (E.164).
    #[serde(default)]
    pub dialled: Vec<String>,
    /// Caller prefixes (E.164 prefixes).
    #[serde(default)]
    pub caller_prefixes: Vec<String>,
}

fn field(field: &'static str, message: impl Into<String>) -> WireError {
    WireError::Field {
        field,
        message: message.into(),
    }
}

/// Decodes and validates an Announcement document into the core's model.
///
/// # Errors
/// [`WireError`] naming what is wrong.
pub fn decode(json: &[u8]) -> Result<(Announcement, Option<String>), WireError> {
    let w: AnnouncementWire =
        serde_json::from_slice(json).map_err(|e| WireError::Schema(e.to_string()))?;
    let id = AnnouncementId::new(&w.id).map_err(|e| field("id", e.to_string()))?;
    let mut a = Announcement::new(id, w.version);
    a.priority = w.priority;
    a.offer_callback = w.offer_callback;
    a.scope = scope(&w.scope)?;
    let ts = |f: &'static str, v: &Option<String>| -> Result<Option<UnixMillis>, WireError> {
        v.as_deref()
            .map(|s| UnixMillis::parse_rfc3339(s).map_err(|e| field(f, e.to_string())))
            .transpose()
    };
    a.valid_from = ts("valid_from", &w.valid_from)?;
    a.valid_until = ts("valid_until", &w.valid_until)?;
    if let Some(h) = &w.audio_sha256 {
        a.audio = Some(parse_sha256(h).ok_or_else(|| field("audio_sha256", "not 64 hex digits"))?);
    }
    a.has_text = w.text.as_deref().is_some_and(|t| !t.trim().is_empty());
    if let Some(l) = &w.language {
        a.language = l
            .as_str()
            .try_into()
            .map_err(|_| field("language", "too long"))?;
    }
    if let Some(sig) = &w.signature {
        // Checked against a key only when one is configured (`crate::link::signature`), but
        // its form always: 64 bytes in padded standard base64.
        let ok = sig.len() == 88
            && crate::config::values::base64_decode(sig).is_some_and(|b| b.len() == 64);
        if !ok {
            return Err(field("signature", "not 64 bytes in standard base64"));
        }
    }
    if a.audio.is_none() && !a.has_text {
        return Err(field(
            "audio_sha256",
            "an announcement needs audio_sha256 or text",
        ));
    }
    Ok((a, w.text))
}

fn scope(w: &ScopeWire) -> Result<Scope, WireError> {
    let mut s = Scope::default();
    for site in &w.sites {
        let v = site
            .as_str()
            .try_into()
            .map_err(|_| field("scope.sites", format!("`{site}` is too long")))?;
        s.sites
            .push(v)
            .map_err(|_| field("scope.sites", "too many entries"))?;
    }
    for (list, name, out) in [
        (&w.dialled, "scope.dialled", &mut s.dialled),
        (
            &w.caller_prefixes,
            "scope.caller_prefixes",
            &mut s.caller_prefixes,
        ),
    ] {
        for n in list {
            let p = PhoneNumber::parse(n).map_err(|e| field(name, format!("`{n}`: {e}")))?;
            out.push(p).map_err(|_| field(name, "too many entries"))?;
        }
    }
    Ok(s)
}

/// Parses 64 hex digits.
#[must_use]
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (b[2 * i] as char).to_digit(16)?;
        let lo = (b[2 * i + 1] as char).to_digit(16)?;
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Lowercase hex of a digest.
#[must_use]
pub fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of bytes.
#[must_use]
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// What [`load_dir`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Valid announcements (with their text, if any).
    pub announcements: Vec<(Announcement, Option<String>)>,
    /// Verified, decoded audio by hash.
    pub audio: HashMap<[u8; 32], Arc<crate::media::audio::Frames>>,
    /// Files skipped, with the reason.
    pub rejected: Vec<(PathBuf, String)>,
}

/// The announcement directory under the state dir.
#[must_use]
pub fn announcements_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("announcements")
}

/// The audio directory under the state dir.
#[must_use]
pub fn audio_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("audio")
}

/// Reads every announcement and audio file of the cache. Missing directories are empty.
/// Audio whose hash `known` already holds is neither read nor decoded again (decoding and
/// resampling is the expensive part).
#[must_use]
pub fn load_dir(
    state_dir: &Path,
    max_audio_bytes: u64,
    known: &dyn Fn(&[u8; 32]) -> bool,
) -> Loaded {
    let mut out = Loaded::default();
    for path in files(&announcements_dir(state_dir), "json") {
        match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes) {
                Ok(a) => out.announcements.push(a),
                Err(e) => out.rejected.push((path, e.to_string())),
            },
            Err(e) => out.rejected.push((path, e.to_string())),
        }
    }
    for path in files(&audio_dir(state_dir), "wav") {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let Some(expected) = parse_sha256(name) else {
            out.rejected
                .push((path, "audio file name is not a SHA-256".into()));
            continue;
        };
        if known(&expected) {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.len() > max_audio_bytes => {
                out.rejected
                    .push((path, format!("larger than {max_audio_bytes} bytes")));
                continue;
            }
            Err(e) => {
                out.rejected.push((path, e.to_string()));
                continue;
            }
            Ok(_) => {}
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                out.rejected.push((path, e.to_string()));
                continue;
            }
        };
        if sha256(&bytes) != expected {
            out.rejected
                .push((path, "content does not match its SHA-256 name".into()));
            continue;
        }
        match crate::media::audio::decode_wav(&bytes) {
            Ok(pcm) => {
                out.audio.insert(
                    expected,
                    Arc::new(crate::media::audio::Frames::from_pcm_8k(&pcm)),
                );
            }
            Err(e) => out.rejected.push((path, e.to_string())),
        }
    }
    out
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{
      "id": "outage-phl-20261123", "version": 3, "priority": 10,
      "scope": { "sites": ["phl"], "dialled": ["+18005550100"], "caller_prefixes": ["+1215"] },
      "valid_from": "2026-11-23T06:00:00Z", "valid_until": "2026-11-23T12:00:00Z",
      "audio_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
      "text": "We are aware of a TV outage in Philadelphia", "offer_callback": true, "language": "en"
    }"#;

    #[test]
    fn decodes_the_contract_example() {
        let (a, text) = decode(DOC.as_bytes()).unwrap();
        assert_eq!(a.id.as_str(), "outage-phl-20261123");
        assert_eq!(a.version, 3);
        assert_eq!(a.priority, 10);
        assert_eq!(a.scope.sites.len(), 1);
        assert_eq!(a.scope.dialled[0].digits(), "18005550100");
        assert_eq!(
            a.valid_from,
            Some(UnixMillis::parse_rfc3339("2026-11-23T06:00:00Z").unwrap())
        );
        assert_eq!(
            hex(&a.audio.unwrap()),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert!(a.has_text && a.offer_callback);
        assert!(text.unwrap().contains("Philadelphia"));
    }

    #[test]
    fn refuses_bad_documents_with_the_field() {
        let cases: &[(&str, &str)] = &[
            ("not json", "not an Announcement"),
            (r#"{"id":"a","version":1}"#, "audio_sha256"),
            (r#"{"id":"a/b","version":1,"text":"x"}"#, "`id`"),
            (
                r#"{"id":"a","version":1,"text":"x","valid_from":"yesterday"}"#,
                "valid_from",
            ),
            (
                r#"{"id":"a","version":1,"audio_sha256":"abc"}"#,
                "audio_sha256",
            ),
            (
                r#"{"id":"a","version":1,"text":"x","scope":{"dialled":["+1x"]}}"#,
                "scope.dialled",
            ),
            (
                r#"{"id":"a","version":1,"text":"x","colour":"red"}"#,
                "unknown field",
            ),
            (
                r#"{"id":"a","version":-1,"text":"x"}"#,
                "not an Announcement",
            ),
        ];
        for (doc, want) in cases {
            let e = decode(doc.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{doc}: {e}");
        }
    }

    #[test]
    fn sha256_hex_round_trip() {
        let d = sha256(b"test");
        assert_eq!(parse_sha256(&hex(&d)), Some(d));
        assert_eq!(parse_sha256("zz"), None);
        assert_eq!(parse_sha256(&"g".repeat(64)), None);
    }

    fn wav_bytes() -> Vec<u8> {
        let mut cur = std::io::Cursor::new(Vec::new());
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::new(&mut cur, spec).unwrap();
        for i in 0..1600i32 {
            w.write_sample(((i * 37) % 2000 - 1000) as i16).unwrap();
        }
        w.finalize().unwrap();
        cur.into_inner()
    }

    #[test]
    fn load_dir_verifies_hashes_skips_known_audio_and_reports_bad_files() {
        let dir = std::env::temp_dir().join(format!("ccedge-ann-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(announcements_dir(&dir)).unwrap();
        std::fs::create_dir_all(audio_dir(&dir)).unwrap();
        let wav = wav_bytes();
        let good = sha256(&wav);
        std::fs::write(audio_dir(&dir).join(format!("{}.wav", hex(&good))), &wav).unwrap();
        // Right name shape, wrong content; and a name that is not a hash.
        let other = sha256(b"other");
        std::fs::write(audio_dir(&dir).join(format!("{}.wav", hex(&other))), &wav).unwrap();
        std::fs::write(audio_dir(&dir).join("greeting.wav"), &wav).unwrap();
        std::fs::write(announcements_dir(&dir).join("a.json"), DOC).unwrap();
        std::fs::write(announcements_dir(&dir).join("junk.json"), b"\x00not json").unwrap();

        let loaded = load_dir(&dir, 1 << 20, &|_| false);
        assert_eq!(loaded.announcements.len(), 1);
        assert_eq!(loaded.audio.len(), 1);
        assert!(loaded.audio.contains_key(&good));
        let reasons: Vec<String> = loaded.rejected.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(loaded.rejected.len(), 3, "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("does not match")));
        assert!(reasons.iter().any(|r| r.contains("not a SHA-256")));
        assert!(reasons.iter().any(|r| r.contains("not an Announcement")));

        // Known audio is not read again; oversized audio is refused.
        let again = load_dir(&dir, 1 << 20, &|h| *h == good);
        assert!(again.audio.is_empty());
        let small = load_dir(&dir, 100, &|_| false);
        assert!(small.audio.is_empty());
        assert!(small
            .rejected
            .iter()
            .any(|(_, r)| r.contains("larger than")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
