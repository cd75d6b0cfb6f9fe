//! Announcements and audio from the CRM into the on-disk cache the engine reads
//! (`{state_dir}/announcements/{id}.json`, `{state_dir}/audio/{sha256}.wav`; see
//! [`crate::agent::announcements`]).
//!
//! Every message is validated before anything on disk changes; a rejected one leaves the
//! cache exactly as it was (so the current announcement keeps playing) and is reported with
//! its reason (a `warn!` line, [`super::LinkStatus::rejected`]):
//!
//! | message | rejected when |
//! |---|---|
//! | `P/announcements/{id}` | the id is not a valid announcement id; larger than `mqtt.max_payload_bytes`; not JSON or not the Announcement schema; its `id` differs from the topic's; `announcements.signing_key` is set and it is unsigned or its signature does not verify ([`super::signature`]); its `version` is older than the cached one |
//! | `P/audio/{sha256}` | the topic is not 64 hex digits; larger than `announcements.max_audio_bytes` (or `mqtt.max_payload_bytes`); the SHA-256 of the bytes differs from the topic; not a WAV file the node can decode |
//!
//! An empty payload on `P/announcements/{id}` withdraws the announcement (its cached file is
//! deleted). The same version again is accepted as "unchanged" and writes nothing (retained
//! messages arrive again on every subscription). Audio already cached under its hash is not
//! decoded again.
//!
//! Files are written atomically: a temporary file in the same directory (ignored by the
//! loader: it does not end in `.json`/`.wav`), `fsync`, `rename`, `fsync` of the directory.
//! So a crash leaves the old file or the new one, never half of one.
//!
//! A text announcement without `audio_sha256` is rendered with the speech command when one
//! is configured ([`super::tts`]); the WAV is stored under its hash and the cached JSON gets
//! that `audio_sha256` (the text is kept). When rendering fails the document is cached as
//! received, and the engine reports it unplayable.
//!
//! The blocking work runs on tokio's blocking pool, one message at a time in arrival order,
//! off the link's task.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use shared::ids::AnnouncementId;
use tokio::sync::mpsc;

use super::tts;
use super::FromLink;
use crate::agent::announcements::{self as cache, AnnouncementWire};

/// What the intake needs to know.
#[derive(Debug, Clone)]
pub(crate) struct IntakeConfig {
    /// `node.state_dir`.
    pub(crate) state_dir: PathBuf,
    /// `mqtt.max_payload_bytes`.
    pub(crate) max_payload_bytes: u64,
    /// `announcements.max_audio_bytes`.
    pub(crate) max_audio_bytes: u64,
    /// `ivr.speech_command`.
    pub(crate) speech_command: Option<String>,
    /// `announcements.signing_key`.
    pub(crate) signing_key: Option<[u8; 32]>,
}

/// One message for the cache.
#[derive(Debug)]
pub(crate) enum Item {
    /// `P/announcements/{id}`.
    Announcement {
        /// The topic's id.
        id: String,
        /// The payload.
        payload: Vec<u8>,
    },
    /// `P/audio/{sha256}`.
    Audio {
        /// The topic's hash.
        sha256: String,
        /// The payload.
        payload: Vec<u8>,
    },
}

/// The result of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The cache changed (what, for the log).
    Changed(String),
    /// Nothing to do (the same version, audio already held, nothing to withdraw).
    Unchanged,
    /// Refused, with the reason.
    Rejected(String),
}

/// Starts the intake worker: it takes [`Item`]s in order, applies each to the cache on the
/// blocking pool, tells the engine about changes and reports every outcome on `reports`.
pub(crate) fn spawn_worker(
    cfg: IntakeConfig,
    to_engine: mpsc::UnboundedSender<FromLink>,
    reports: mpsc::UnboundedSender<Outcome>,
) -> mpsc::UnboundedSender<Item> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
    tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            let c = cfg.clone();
            let outcome = tokio::task::spawn_blocking(move || apply(&c, item))
                .await
                .unwrap_or_else(|e| Outcome::Rejected(format!("intake task failed: {e}")));
            match &outcome {
                Outcome::Changed(what) => {
                    tracing::info!(%what, "announcement cache updated");
                    let _ = to_engine.send(FromLink::AnnouncementsChanged);
                }
                Outcome::Rejected(reason) => {
                    tracing::warn!(%reason, "CRM message rejected");
                }
                Outcome::Unchanged => {}
            }
            if reports.send(outcome).is_err() {
                break;
            }
        }
    });
    tx
}

/// Applies one message to the cache (blocking).
pub(crate) fn apply(cfg: &IntakeConfig, item: Item) -> Outcome {
    match item {
        Item::Announcement { id, payload } => announcement(cfg, &id, &payload),
        Item::Audio { sha256, payload } => audio(cfg, &sha256, &payload),
    }
}

fn announcement(cfg: &IntakeConfig, id: &str, payload: &[u8]) -> Outcome {
    if AnnouncementId::new(id).is_err() {
        return Outcome::Rejected(format!("announcement topic id `{}` is not valid", clip(id)));
    }
    let dir = cache::announcements_dir(&cfg.state_dir);
    let name = format!("{id}.json");
    if payload.is_empty() {
        return match fs::remove_file(dir.join(&name)) {
            Ok(()) => match sync_dir(&dir) {
                Ok(()) => Outcome::Changed(format!("announcement {id} withdrawn")),
                Err(e) => Outcome::Rejected(format!("withdrawing {id}: {e}")),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Outcome::Unchanged,
            Err(e) => Outcome::Rejected(format!("withdrawing {id}: {e}")),
        };
    }
    if payload.len() as u64 > cfg.max_payload_bytes {
        return Outcome::Rejected(format!(
            "announcement {id}: {} bytes is larger than mqtt.max_payload_bytes ({})",
            payload.len(),
            cfg.max_payload_bytes
        ));
    }
    let (a, text) = match cache::decode(payload) {
        Ok(v) => v,
        Err(e) => return Outcome::Rejected(format!("announcement {id}: {e}")),
    };
    if a.id.as_str() != id {
        return Outcome::Rejected(format!(
            "announcement topic id `{id}` differs from the document's id `{}`",
            a.id.as_str()
        ));
    }
    if let Some(key) = &cfg.signing_key {
        let checked = serde_json::from_slice::<AnnouncementWire>(payload)
            .map_err(|e| e.to_string())
            .and_then(|w| super::signature::verify(key, &w).map_err(|e| e.to_string()));
        if let Err(e) = checked {
            return Outcome::Rejected(format!("announcement {id}: {e}"));
        }
    }
    let cached = fs::read(dir.join(&name))
        .ok()
        .and_then(|b| cache::decode(&b).ok())
        .map(|(c, _)| c.version);
    match cached {
        Some(v) if a.version < v => {
            return Outcome::Rejected(format!(
                "announcement {id}: version {} is older than the cached version {v}",
                a.version
            ));
        }
        Some(v) if a.version == v => return Outcome::Unchanged,
        _ => {}
    }
    let mut doc = payload.to_vec();
    let mut rendered = String::new();
    if let (Some(cmd), None, Some(text)) = (&cfg.speech_command, a.audio, text.as_deref()) {
        match speak(cfg, cmd, text) {
            Ok(sha) => match with_audio(payload, &sha) {
                Some(d) => {
                    doc = d;
                    rendered = format!(", text rendered to audio {sha}");
                }
                None => tracing::warn!(%id, "could not add audio_sha256 to the document"),
            },
            Err(e) => tracing::warn!(%id, error = %e, "text announcement not rendered"),
        }
    }
    match write_atomic(&dir, &name, &doc) {
        Ok(()) => Outcome::Changed(format!("announcement {id} version {}{rendered}", a.version)),
        Err(e) => Outcome::Rejected(format!("storing announcement {id}: {e}")),
    }
}

/// Renders `text`, checks the WAV and stores it; returns its hash.
fn speak(cfg: &IntakeConfig, cmd: &str, text: &str) -> Result<String, String> {
    let limit = cfg.max_audio_bytes.min(cfg.max_payload_bytes);
    let wav = tts::render(cmd, text, limit, tts::SPEECH_TIMEOUT).map_err(|e| e.to_string())?;
    crate::media::audio::decode_wav(&wav)
        .map_err(|e| format!("the speech command's output is not usable: {e}"))?;
    let sha = cache::hex(&cache::sha256(&wav));
    let dir = cache::audio_dir(&cfg.state_dir);
    let name = format!("{sha}.wav");
    if !dir.join(&name).exists() {
        write_atomic(&dir, &name, &wav).map_err(|e| format!("storing rendered audio: {e}"))?;
    }
    Ok(sha)
}

/// The document with `audio_sha256` set.
fn with_audio(payload: &[u8], sha: &str) -> Option<Vec<u8>> {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(payload).ok()?;
    v.insert("audio_sha256".into(), serde_json::Value::String(sha.into()));
    let out = serde_json::to_vec(&v).ok()?;
    // Still the schema the engine reads.
    serde_json::from_slice::<AnnouncementWire>(&out).ok()?;
    Some(out)
}

fn audio(cfg: &IntakeConfig, topic_hash: &str, payload: &[u8]) -> Outcome {
    let Some(expected) = cache::parse_sha256(topic_hash) else {
        return Outcome::Rejected(format!(
            "audio topic `{}` is not a SHA-256 (64 hex digits)",
            clip(topic_hash)
        ));
    };
    let hex = cache::hex(&expected);
    if payload.is_empty() {
        // The CRM cleared its retained audio; announcements may still refer to the cached
        // copy, so it stays.
        return Outcome::Unchanged;
    }
    let limit = cfg.max_audio_bytes.min(cfg.max_payload_bytes);
    if payload.len() as u64 > limit {
        return Outcome::Rejected(format!(
            "audio {hex}: {} bytes is larger than the limit ({limit})",
            payload.len()
        ));
    }
    if cache::sha256(payload) != expected {
        return Outcome::Rejected(format!(
            "audio {hex}: the SHA-256 of the bytes does not match the topic"
        ));
    }
    let dir = cache::audio_dir(&cfg.state_dir);
    let name = format!("{hex}.wav");
    if dir.join(&name).exists() {
        return Outcome::Unchanged;
    }
    if let Err(e) = crate::media::audio::decode_wav(payload) {
        return Outcome::Rejected(format!("audio {hex}: {e}"));
    }
    match write_atomic(&dir, &name, payload) {
        Ok(()) => Outcome::Changed(format!("audio {hex} ({} bytes)", payload.len())),
        Err(e) => Outcome::Rejected(format!("storing audio {hex}: {e}")),
    }
}

/// At most 80 characters of untrusted text for a log line.
fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Writes `dir/name` atomically: temp file, `fsync`, `rename`, `fsync` of the directory.
///
/// # Errors
/// The I/O error of any step (the temporary file is removed).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
