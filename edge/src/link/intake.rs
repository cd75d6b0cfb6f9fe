//! Announcements and audio from the CRM into the on-disk cache the engine reads
//! (`{state_dir}/announcements/{id}.json`, `{state_dir}/audio/{sha256}.wav`; see
//! [`crate::announcements`]).
//!
//! Every message is validated before anything on disk changes; a rejected one leaves the
//! cache exactly as it was (so the current announcement keeps playing) and is reported with
//! its reason (a `warn!` line, [`super::LinkStatus::rejected`]):
//!
//! | message | rejected when |
//! |---|---|
//! | `P/announcements/{id}` | the id is not a valid announcement id; larger than `mqtt.max_payload_bytes`; not JSON or not the Announcement schema; its `id` differs from the topic's; `announcements.signing_key` is set and it is unsigned or its signature does not verify ([`super::signature`]) |
//! | `P/audio/{sha256}` | the topic is not 64 hex digits; larger than `announcements.max_audio_bytes` (or `mqtt.max_payload_bytes`); the SHA-256 of the bytes differs from the topic; not a WAV file the node can decode |
//!
//! A valid announcement is not written here at once: it goes to the node
//! ([`FromLink::Announcement`], with the document to cache), which applies the one version
//! rule of `shared::announce` (older versions and a changed document under the same version
//! are refused, the same version again changes nothing: retained messages arrive again on
//! every subscription). What the node keeps comes back as a [`CacheWrite`] and is written
//! here, in order with everything else; the node's refusals come back as
//! [`super::ToLink::Rejected`] and are counted like the link's own. An empty payload on
//! `P/announcements/{id}` withdraws the announcement: the node drops it and asks for its
//! cached file to be deleted. Audio is content-addressed and has no versions: it is cached
//! here when it verifies. Audio already cached under its hash is not decoded again.
//!
//! Files are written atomically: a temporary file in the same directory (ignored by the
//! loader: it does not end in `.json`/`.wav`), `fsync`, `rename`, `fsync` of the directory.
//! So a crash leaves the old file or the new one, never half of one.
//!
//! A text announcement without `audio_sha256` is rendered with the speech command when one
//! is configured ([`super::tts`]); the WAV is stored under its hash and the document to cache
//! gets that `audio_sha256` (the text is kept). The same text as the cached copy reuses its
//! audio instead of rendering again. When rendering fails the document is cached as
//! received, and the engine reports it unplayable.
//!
//! The blocking work runs on tokio's blocking pool, one message at a time in arrival order,
//! off the link's task.
//!
//! ## Disk use
//!
//! Every node receives every audio file the CRM publishes (all sites share `P/audio/+`), so
//! the cache would only grow. At start and after every change, cached audio that no cached
//! announcement names and that is older than [`AUDIO_GRACE`] is deleted, and so are
//! temporary files a crash left behind (older than an hour). The grace period lets audio
//! arrive well before the announcement that names it; a CRM that names audio again after it
//! was collected publishes it again first (as `firmware-sim crm announce` always does), or the
//! announcement stays pending until the node's next connection brings the retained copy.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use shared::ids::AnnouncementId;
use tokio::sync::mpsc;

use super::tts;
use super::{CacheWrite, FromLink};
use crate::announcements::{self as cache, AnnouncementWire};

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
    /// What the node decided to keep of an announcement.
    Cache(CacheWrite),
}

/// The result of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The cache changed (what, for the log).
    Changed(String),
    /// Nothing to do (audio already held, nothing to delete).
    Unchanged,
    /// Valid, and handed to the node, which decides what is kept (see [`CacheWrite`]).
    Forwarded,
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
        let mut handed = Handed::default();
        collect_garbage_in_background(&cfg.state_dir, &handed, &to_engine).await;
        while let Some(item) = rx.recv().await {
            let c = cfg.clone();
            let (outcome, news) = tokio::task::spawn_blocking(move || apply_with_news(&c, item))
                .await
                .unwrap_or_else(|e| {
                    (
                        Outcome::Rejected(format!("intake task failed: {e}")),
                        Vec::new(),
                    )
                });
            for n in news {
                if let FromLink::Announcement { announcement, .. } = &n {
                    if let Some(sha) = announcement.audio {
                        handed.note(tokio::time::Instant::now(), sha);
                    }
                }
                let _ = to_engine.send(n);
            }
            match &outcome {
                Outcome::Changed(what) => {
                    tracing::info!(%what, "announcement cache updated");
                }
                Outcome::Rejected(reason) => {
                    tracing::warn!(%reason, "CRM message rejected");
                }
                Outcome::Unchanged | Outcome::Forwarded => {}
            }
            let changed = matches!(outcome, Outcome::Changed(_));
            if reports.send(outcome).is_err() {
                break;
            }
            if changed {
                collect_garbage_in_background(&cfg.state_dir, &handed, &to_engine).await;
            }
        }
    });
    tx
}

/// The audio named by announcements handed to the node lately. The node's answer (a
/// [`CacheWrite`] of the document naming it, or nothing when it refused it) comes back within
/// milliseconds; until it is written, the file on disk does not name the audio yet, so a
/// sweep in between would take week-old audio the new announcement is about to use. The
/// sweep keeps what this names for [`HANDED_FOR`].
#[derive(Default)]
struct Handed(std::collections::VecDeque<(tokio::time::Instant, shared::announce::Sha256)>);

/// How long audio named by a handed-over announcement is kept from the sweep.
const HANDED_FOR: Duration = Duration::from_secs(600);

/// At most this many handed-over names are remembered (the oldest go first).
const HANDED_MAX: usize = 4096;

impl Handed {
    fn note(&mut self, now: tokio::time::Instant, sha: shared::announce::Sha256) {
        while self.0.len() >= HANDED_MAX
            || self
                .0
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > HANDED_FOR)
        {
            self.0.pop_front();
        }
        self.0.push_back((now, sha));
    }

    /// The names handed over within [`HANDED_FOR`] of `now`, as lowercase hex.
    fn recent(&self, now: tokio::time::Instant) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|(t, _)| now.saturating_duration_since(*t) <= HANDED_FOR)
            .map(|(_, h)| cache::hex(h))
            .collect()
    }
}

/// Unreferenced cached audio younger than this is kept.
pub(crate) const AUDIO_GRACE: Duration = Duration::from_secs(7 * 86_400);

/// Temporary files older than this are left over from a crash.
const TEMP_GRACE: Duration = Duration::from_secs(3600);

async fn collect_garbage_in_background(
    state_dir: &Path,
    handed: &Handed,
    to_engine: &mpsc::UnboundedSender<FromLink>,
) {
    let dir = state_dir.to_owned();
    let keep = handed.recent(tokio::time::Instant::now());
    let removed = tokio::task::spawn_blocking(move || {
        let now = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(crate::clock::wall_now().0).unwrap_or(0));
        collect_garbage(&dir, now, AUDIO_GRACE, &keep)
    })
    .await
    .unwrap_or_default();
    if !removed.is_empty() {
        tracing::info!(files = removed.len(), removed = ?removed, "unused cached audio removed");
    }
    // The engine lets go of the decoded audio too, and the node stops naming it.
    for name in &removed {
        if let Some(sha) = name.strip_suffix(".wav").and_then(cache::parse_sha256) {
            let _ = to_engine.send(FromLink::AudioRemoved(sha));
        }
    }
}

/// Deletes cached audio that no cached announcement names (nor `keep`, lowercase hex) and
/// that was written more than `grace` before `now`, and temporary files older than an hour;
/// returns the names deleted.
/// When the announcements cannot be listed nothing is deleted (better a full cache than an
/// announcement without its audio).
pub(crate) fn collect_garbage(
    state_dir: &Path,
    now: SystemTime,
    grace: Duration,
    keep: &BTreeSet<String>,
) -> Vec<String> {
    let Some(mut referenced) = referenced_audio(state_dir) else {
        return Vec::new();
    };
    referenced.extend(keep.iter().cloned());
    let age = |e: &fs::DirEntry| {
        e.metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or(Duration::ZERO)
    };
    let mut removed = Vec::new();
    for dir in [
        cache::audio_dir(state_dir),
        cache::announcements_dir(state_dir),
    ] {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut changed = false;
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale_temp =
                name.starts_with('.') && name.ends_with(".tmp") && age(&e) > TEMP_GRACE;
            let unused_audio = dir.ends_with("audio")
                && name
                    .strip_suffix(".wav")
                    .and_then(cache::parse_sha256)
                    .is_some_and(|h| !referenced.contains(&cache::hex(&h)))
                && age(&e) > grace;
            if (stale_temp || unused_audio) && fs::remove_file(e.path()).is_ok() {
                removed.push(name);
                changed = true;
            }
        }
        if changed {
            let _ = sync_dir(&dir);
        }
    }
    removed
}

/// The audio hashes (lowercase hex) every cached announcement names, read leniently: a file
/// that does not decode still protects the audio it names. `None` when the directory exists
/// but cannot be read.
fn referenced_audio(state_dir: &Path) -> Option<BTreeSet<String>> {
    let dir = cache::announcements_dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(BTreeSet::new()),
        Err(_) => return None,
    };
    let mut out = BTreeSet::new();
    for e in entries {
        let e = e.ok()?;
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let bytes = fs::read(&path).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if let Some(h) = v
            .get("audio_sha256")
            .and_then(serde_json::Value::as_str)
            .and_then(cache::parse_sha256)
        {
            out.insert(cache::hex(&h));
        }
    }
    Some(out)
}

/// Applies one message to the cache (blocking); also returns what the engine must hear of it: the
/// decoded announcement as cached, its withdrawal, or the decoded audio (so nothing is read
/// or decoded twice).
pub(crate) fn apply_with_news(cfg: &IntakeConfig, item: Item) -> (Outcome, Vec<FromLink>) {
    let mut news = Vec::new();
    let outcome = match item {
        Item::Announcement { id, payload } => announcement(cfg, &id, &payload, &mut news),
        Item::Audio { sha256, payload } => audio(cfg, &sha256, &payload, &mut news),
        Item::Cache(w) => {
            let id = match &w {
                CacheWrite::Announcement { id, .. } | CacheWrite::Remove(id) => id.clone(),
            };
            let outcome = cache_write(cfg, w);
            news.push(FromLink::CacheWritten(id));
            outcome
        }
    };
    (outcome, news)
}

fn announcement(cfg: &IntakeConfig, id: &str, payload: &[u8], news: &mut Vec<FromLink>) -> Outcome {
    let Ok(aid) = AnnouncementId::new(id) else {
        return Outcome::Rejected(format!("announcement topic id `{}` is not valid", clip(id)));
    };
    if payload.is_empty() {
        // The node decides what a withdrawal removes and asks for the delete.
        news.push(FromLink::Withdrawn(aid));
        return Outcome::Forwarded;
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
    let mut doc = payload.to_vec();
    if let (Some(cmd), None, Some(text)) = (&cfg.speech_command, a.audio, text.as_deref()) {
        // The same text as the cached copy (a retained message again, on every connection):
        // its rendered audio is reused instead of running the speech command again.
        let sha = match rendered_before(&cfg.state_dir, id, text) {
            Some(sha) => Ok(sha),
            None => speak(cfg, cmd, text, news),
        };
        match sha {
            Ok(sha) => match with_audio(payload, &sha) {
                Some(d) => doc = d,
                None => tracing::warn!(%id, "could not add audio_sha256 to the document"),
            },
            Err(e) => tracing::warn!(%id, error = %e, "text announcement not rendered"),
        }
    }
    // What the node gets is what the cache will hold (with rendered audio named).
    let announcement = cache::decode(&doc).map_or(a, |(c, _)| c);
    news.push(FromLink::Announcement {
        announcement: Box::new(announcement),
        doc,
    });
    Outcome::Forwarded
}

/// The audio the cached copy of `id` names for `text`, when that copy holds the same text
/// and the audio is still cached.
fn rendered_before(state_dir: &Path, id: &str, text: &str) -> Option<String> {
    let bytes = fs::read(cache::announcements_dir(state_dir).join(format!("{id}.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    if v.get("text").and_then(serde_json::Value::as_str) != Some(text) {
        return None;
    }
    let sha = cache::parse_sha256(v.get("audio_sha256")?.as_str()?)?;
    let hex = cache::hex(&sha);
    cache::audio_dir(state_dir)
        .join(format!("{hex}.wav"))
        .exists()
        .then_some(hex)
}

/// Writes what the node decided to keep to the cache, or deletes what it withdrew.
fn cache_write(cfg: &IntakeConfig, w: CacheWrite) -> Outcome {
    let dir = cache::announcements_dir(&cfg.state_dir);
    match w {
        CacheWrite::Announcement { id, version, doc } => {
            match write_atomic(&dir, &format!("{id}.json"), &doc) {
                Ok(()) => Outcome::Changed(format!("announcement {id} version {version} cached")),
                Err(e) => Outcome::Rejected(format!("storing announcement {id}: {e}")),
            }
        }
        CacheWrite::Remove(id) => match fs::remove_file(dir.join(format!("{id}.json"))) {
            Ok(()) => match sync_dir(&dir) {
                Ok(()) => Outcome::Changed(format!("announcement {id} removed from the cache")),
                Err(e) => Outcome::Rejected(format!("removing announcement {id}: {e}")),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Outcome::Unchanged,
            Err(e) => Outcome::Rejected(format!("removing announcement {id}: {e}")),
        },
    }
}

/// Renders `text`, checks the WAV and stores it; returns its hash.
fn speak(
    cfg: &IntakeConfig,
    cmd: &str,
    text: &str,
    news: &mut Vec<FromLink>,
) -> Result<String, String> {
    let limit = cfg.max_audio_bytes.min(cfg.max_payload_bytes);
    let wav = tts::render(cmd, text, limit, tts::SPEECH_TIMEOUT).map_err(|e| e.to_string())?;
    let pcm = crate::media::audio::decode_wav(&wav)
        .map_err(|e| format!("the speech command's output is not usable: {e}"))?;
    let digest = cache::sha256(&wav);
    news.push(FromLink::Audio {
        sha256: digest,
        frames: std::sync::Arc::new(crate::media::audio::Frames::from_pcm_8k(&pcm)),
    });
    let sha = cache::hex(&digest);
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

fn audio(
    cfg: &IntakeConfig,
    topic_hash: &str,
    payload: &[u8],
    news: &mut Vec<FromLink>,
) -> Outcome {
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
    let pcm = match crate::media::audio::decode_wav(payload) {
        Ok(p) => p,
        Err(e) => return Outcome::Rejected(format!("audio {hex}: {e}")),
    };
    match write_atomic(&dir, &name, payload) {
        Ok(()) => {
            news.push(FromLink::Audio {
                sha256: expected,
                frames: std::sync::Arc::new(crate::media::audio::Frames::from_pcm_8k(&pcm)),
            });
            Outcome::Changed(format!("audio {hex} ({} bytes)", payload.len()))
        }
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

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // file times are compared with the real clock
mod gc_tests {
    use super::*;

    fn touch(path: &Path, bytes: &[u8], age: Duration, now: SystemTime) {
        fs::write(path, bytes).unwrap();
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(now - age)
            .unwrap();
    }

    #[test]
    fn unused_old_audio_and_stale_temp_files_go_the_rest_stays() {
        let root = std::env::temp_dir().join(format!("ccedge-gc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (ann, aud) = (cache::announcements_dir(&root), cache::audio_dir(&root));
        fs::create_dir_all(&ann).unwrap();
        fs::create_dir_all(&aud).unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let h = |c: char| c.to_string().repeat(64);
        // a: named by a valid announcement; b: named by a file that does not decode;
        // c: unused and old; d: unused but recent.
        touch(
            &ann.join("x.json"),
            format!(r#"{{"id":"x","version":1,"audio_sha256":"{}"}}"#, h('a')).as_bytes(),
            day * 30,
            now,
        );
        touch(
            &ann.join("broken.json"),
            format!(r#"{{"audio_sha256":"{}","bogus":true}}"#, h('b')).as_bytes(),
            day * 30,
            now,
        );
        for (c, age) in [
            ('a', day * 30),
            ('b', day * 30),
            ('c', day * 8),
            ('d', day * 6),
        ] {
            touch(&aud.join(format!("{}.wav", h(c))), b"RIFF", age, now);
        }
        touch(&aud.join("notes.txt"), b"x", day * 30, now);
        touch(
            &aud.join(".old.wav.1.tmp"),
            b"x",
            Duration::from_secs(7200),
            now,
        );
        touch(
            &aud.join(".new.wav.2.tmp"),
            b"x",
            Duration::from_secs(60),
            now,
        );
        touch(&ann.join(".y.json.3.tmp"), b"x", day, now);

        let mut removed = collect_garbage(&root, now, AUDIO_GRACE, &BTreeSet::new());
        removed.sort();
        let mut want = vec![
            format!("{}.wav", h('c')),
            ".old.wav.1.tmp".to_owned(),
            ".y.json.3.tmp".to_owned(),
        ];
        want.sort();
        assert_eq!(removed, want);
        for kept in [
            aud.join(format!("{}.wav", h('a'))),
            aud.join(format!("{}.wav", h('b'))),
            aud.join(format!("{}.wav", h('d'))),
            aud.join("notes.txt"),
            aud.join(".new.wav.2.tmp"),
        ] {
            assert!(kept.exists(), "{} was deleted", kept.display());
        }
        // Once the announcement naming `a` is withdrawn, `a` goes too.
        fs::remove_file(ann.join("x.json")).unwrap();
        assert_eq!(
            collect_garbage(&root, now, AUDIO_GRACE, &BTreeSet::new()),
            vec![format!("{}.wav", h('a'))]
        );
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn old_audio_named_by_an_announcement_on_its_way_to_the_cache_is_kept() {
        let root = std::env::temp_dir().join(format!("ccedge-gc-h-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let aud = cache::audio_dir(&root);
        fs::create_dir_all(cache::announcements_dir(&root)).unwrap();
        fs::create_dir_all(&aud).unwrap();
        let now = SystemTime::now();
        let (e, f) = ([0xe; 32], [0xf; 32]);
        for h in [&e, &f] {
            touch(
                &aud.join(format!("{}.wav", cache::hex(h))),
                b"RIFF",
                Duration::from_secs(86_400 * 30),
                now,
            );
        }
        // `e` was named by an announcement handed to the node, not yet written: it stays;
        // `f` is named by nothing and goes.
        let t0 = tokio::time::Instant::now();
        let mut handed = Handed::default();
        handed.note(t0, e);
        assert_eq!(
            collect_garbage(&root, now, AUDIO_GRACE, &handed.recent(t0)),
            vec![format!("{}.wav", cache::hex(&f))]
        );
        // Long after the hand-over (the node refused it: nothing was written) it goes too.
        let later = t0 + HANDED_FOR + Duration::from_secs(1);
        assert!(handed.recent(later).is_empty());
        assert_eq!(
            collect_garbage(&root, now, AUDIO_GRACE, &handed.recent(later)),
            vec![format!("{}.wav", cache::hex(&e))]
        );
        // The memory is bounded.
        for _ in 0..HANDED_MAX + 10 {
            handed.note(later, f);
        }
        assert_eq!(handed.0.len(), HANDED_MAX);
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn an_unreadable_announcements_dir_deletes_nothing() {
        let root = std::env::temp_dir().join(format!("ccedge-gc-u-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let aud = cache::audio_dir(&root);
        fs::create_dir_all(&aud).unwrap();
        let now = SystemTime::now();
        touch(
            &aud.join(format!("{}.wav", "c".repeat(64))),
            b"RIFF",
            Duration::from_secs(86_400 * 30),
            now,
        );
        // `announcements` is a file, not a directory: it cannot be listed.
        fs::write(cache::announcements_dir(&root), b"x").unwrap();
        assert!(collect_garbage(&root, now, AUDIO_GRACE, &BTreeSet::new()).is_empty());
        assert!(aud.join(format!("{}.wav", "c".repeat(64))).exists());
        // No announcements directory at all: nothing is named, old audio goes.
        fs::remove_file(cache::announcements_dir(&root)).unwrap();
        assert_eq!(
            collect_garbage(&root, now, AUDIO_GRACE, &BTreeSet::new()).len(),
            1
        );
        let _ = fs::remove_dir_all(&root);
    }
}
