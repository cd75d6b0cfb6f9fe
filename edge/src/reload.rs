//! `SIGHUP`: the agent re-reads its configuration file and applies what can change while
//! calls are up; calls, their audio and their dialogs are not touched.
//!
//! | reloads live | how |
//! |---|---|
//! | `log.level` | the log filter is swapped (`RUST_LOG`, when set, still wins) |
//! | `sip.allow`, `sip.deny_action` | from the next datagram on; a source taken out of the list can still end the calls it has up, and start none |
//! | `sip.rate_limit_per_source` | from the next datagram on (the per-source buckets start full) |
//! | `ivr.prompts_dir` and the files in it | re-read on every reload, for every running language (`{dir}/{lang}/` too); calls already up keep the prompts they started with, new calls get the new ones |
//! | the announcement cache in `node.state_dir` | re-read: new announcements and newer versions are taken, audio not yet held is decoded, announcements whose file is gone are withdrawn (as after a restart); left alone when the MQTT link changed the cache while the reload read it |
//!
//! Every other key takes effect only after a restart (`ivr.languages` and
//! `ivr.language_by_dialled` among them: the calls' IVR settings are fixed at start): a change is logged at warn naming the
//! key, the running value is kept, and `ccedge status` lists the key until the file and the
//! running value agree again.
//!
//! A reload is all or nothing: when the file does not load or validate, or a prompt in
//! `ivr.prompts_dir` does not decode, the error is logged, nothing changes and the reload is
//! counted as failed ([`ReloadStatus`], shown by `ccedge status` and `ccedge doctor`). Loading
//! and decoding happen off the engine's task, so the pacer never waits for the disk.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::media::prompts::Prompts;
use crate::view::{Command, LiveUpdate, ReloadApplied, ReloadStatus};

/// The keys a reload applies while the agent runs; every other key needs a restart.
pub const LIVE_KEYS: &[&str] = &[
    "log.level",
    "sip.allow",
    "sip.deny_action",
    "sip.rate_limit_per_source",
    "ivr.prompts_dir",
];

/// How long the engine has to answer the reload's requests.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);

/// Swaps the log filter; `Err` says why it could not.
pub type LogReload = Box<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

/// The keys whose values differ between two configurations, split into those a reload
/// applies and those that need a restart (each list sorted, keys as in the file:
/// `sip.listen`, `mqtt.password`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Keys in [`LIVE_KEYS`].
    pub live: Vec<String>,
    /// Keys that take effect only after a restart.
    pub restart: Vec<String>,
}

/// Compares `running` with `new`, key by key.
#[must_use]
pub fn changes(running: &Config, new: &Config) -> Changes {
    let mut keys = BTreeSet::new();
    let (a, b) = (
        serde_json::to_value(running).unwrap_or(Value::Null),
        serde_json::to_value(new).unwrap_or(Value::Null),
    );
    differing("", &a, &b, &mut keys);
    // Secrets serialize redacted; compare them themselves.
    if running.mqtt.password.as_ref().map(config::Secret::expose)
        != new.mqtt.password.as_ref().map(config::Secret::expose)
    {
        keys.insert("mqtt.password".to_owned());
    }
    let (live, restart) = keys
        .into_iter()
        .partition(|k| LIVE_KEYS.contains(&k.as_str()));
    Changes { live, restart }
}

fn differing(prefix: &str, a: &Value, b: &Value, out: &mut BTreeSet<String>) {
    match (a, b) {
        // A table of the user's keys is one setting (`ivr.language_by_dialled`).
        (Value::Object(x), Value::Object(y)) if prefix != "ivr.language_by_dialled" => {
            for k in x.keys().chain(y.keys()) {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let none = Value::Null;
                differing(
                    &key,
                    x.get(k).unwrap_or(&none),
                    y.get(k).unwrap_or(&none),
                    out,
                );
            }
        }
        _ if a != b => {
            out.insert(prefix.to_owned());
        }
        _ => {}
    }
}

/// Reloads the configuration when told to; owns the reload counters.
pub struct Reloader {
    /// The file given to `ccedge agent --config` (none: defaults and environment).
    pub path: Option<PathBuf>,
    /// The configuration the agent runs with (its live keys updated by every reload).
    pub running: Config,
    /// Swaps the log filter (none: logging could not be set up for reloading).
    pub log: Option<LogReload>,
    /// The engine.
    pub commands: mpsc::Sender<Command>,
    /// The counters, for the control socket.
    pub status: watch::Sender<ReloadStatus>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What a successful reload did, for its log line.
#[derive(Debug, Default)]
struct Outcome {
    changes: Changes,
    applied: ReloadApplied,
    prompts_overridden: usize,
}

impl Reloader {
    /// Reloads once per wake-up of `hup` (signals that arrive during a reload make one more)
    /// until `stop` turns true.
    pub async fn run(mut self, hup: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = hup.notified() => {}
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        return;
                    }
                    continue;
                }
            }
            if *stop.borrow() {
                info!("SIGHUP ignored: the agent is shutting down");
                return;
            }
            self.reload().await;
        }
    }

    /// One reload: re-read the file, apply what may change live, report the rest.
    pub async fn reload(&mut self) {
        let shown = self.path.as_deref().map_or_else(
            || "defaults and environment".to_owned(),
            |p| p.display().to_string(),
        );
        info!(config = %shown, "SIGHUP: reloading the configuration");
        let result = self.try_reload().await;
        let at = crate::clock::wall_now().0;
        match result {
            Ok(outcome) => {
                let c = &outcome.changes;
                for key in &c.restart {
                    warn!(
                        key = %key,
                        "reload: `{key}` changed in the configuration file but cannot change \
                         while the agent runs; the old value is kept until a restart"
                    );
                }
                info!(
                    changed = ?c.live,
                    restart_needed = ?c.restart,
                    prompts_overridden = outcome.prompts_overridden,
                    announcements_updated = outcome.applied.announcements_updated,
                    announcements_withdrawn = outcome.applied.announcements_withdrawn,
                    audio_added = outcome.applied.audio_added,
                    announcements_skipped = outcome.applied.announcements_skipped,
                    calls_kept = outcome.applied.calls,
                    "configuration reloaded"
                );
                self.status.send_modify(|s| {
                    s.ok += 1;
                    s.last_at_ms = at;
                    s.last_ok = Some(true);
                    s.last_error = None;
                    s.restart_pending.clone_from(&c.restart);
                });
            }
            Err(why) => {
                error!(
                    error = %why,
                    "reload failed: the agent keeps running with the configuration it had; calls are not affected"
                );
                self.status.send_modify(|s| {
                    s.failed += 1;
                    s.last_at_ms = at;
                    s.last_ok = Some(false);
                    s.last_error = Some(why);
                });
            }
        }
    }

    async fn try_reload(&mut self) -> Result<Outcome, String> {
        let path = self.path.clone();
        let new = blocking(move || config::load(path.as_deref()))
            .await?
            .map_err(|e| e.to_string())?;
        let changes = changes(&self.running, &new);
        let dir = new.ivr.prompts_dir.clone();
        // The running languages: `ivr.languages` itself needs a restart.
        let languages = self.running.ivr.languages.clone();
        let prompts = blocking(move || Prompts::load(&languages, dir.as_deref()))
            .await?
            .map_err(|e| format!("prompts: {e}"))?;
        let prompts_overridden = prompts.iter().map(|(_, p)| p.overridden().len()).sum();
        // Announcements: the cache of the running state directory (`node.state_dir` itself
        // needs a restart), skipping audio the engine already holds decoded.
        let held = self.ask(Command::CacheState).await?;
        let (known, epoch) = (held.audio, held.epoch);
        let state_dir = self.running.node.state_dir.clone();
        let max_audio = u64::from(self.running.announcements.max_audio_bytes);
        let (announcements, cached_ids) = blocking(move || {
            let loaded =
                crate::announcements::load_dir(&state_dir, max_audio, &|h| known.contains(h));
            let mut ids = cached_ids(&state_dir);
            if let Some(ids) = &mut ids {
                ids.extend(
                    loaded
                        .announcements
                        .iter()
                        .map(|(a, _)| a.id.as_str().to_owned()),
                );
            }
            (loaded, ids)
        })
        .await?;
        let allow = new.sip.allow.clone();
        let update = LiveUpdate {
            allow: Arc::new(move |ip| allow.allows(ip)),
            deny_with_403: matches!(new.sip.deny_action, config::DenyAction::Forbidden),
            rate_limit_per_source: new.sip.rate_limit_per_source,
            prompts: Arc::new(prompts),
            announcements,
            cached_ids,
            epoch,
        };
        let applied = self
            .ask(|reply| Command::Reload {
                update: Box::new(update),
                reply,
            })
            .await?;
        if changes.live.iter().any(|k| k == "log.level") {
            match &self.log {
                Some(swap) => {
                    if let Err(e) = swap(&new) {
                        warn!(error = %e, "reload: the log level could not be changed");
                    }
                }
                None => warn!("reload: the log level cannot change while the agent runs"),
            }
            if std::env::var_os("RUST_LOG").is_some() {
                info!("reload: RUST_LOG is set and decides the log filter, not log.level");
            }
        }
        // The running configuration takes the live keys only: a key that needs a restart is
        // reported again at the next reload until the file and the running value agree.
        self.running.log.level = new.log.level;
        self.running.sip.allow = new.sip.allow;
        self.running.sip.deny_action = new.sip.deny_action;
        self.running.sip.rate_limit_per_source = new.sip.rate_limit_per_source;
        self.running.ivr.prompts_dir = new.ivr.prompts_dir;
        Ok(Outcome {
            changes,
            applied,
            prompts_overridden,
        })
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, String> {
        const NO_ANSWER: &str = "the agent's engine did not take the reload (busy or stopping)";
        let (tx, rx) = oneshot::channel();
        self.commands
            .send_timeout(make(tx), ENGINE_TIMEOUT)
            .await
            .map_err(|_| NO_ANSWER.to_owned())?;
        match tokio::time::timeout(ENGINE_TIMEOUT, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) | Err(_) => Err(NO_ANSWER.to_owned()),
        }
    }
}

/// Runs file work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("reload task failed: {e}"))
}

/// The ids named by the announcement cache's file names (`{id}.json`), or `None` when the
/// directory cannot be listed (then nothing is withdrawn).
fn cached_ids(state_dir: &Path) -> Option<HashSet<String>> {
    let dir = crate::announcements::announcements_dir(state_dir);
    let entries = std::fs::read_dir(dir).ok()?;
    let mut ids = HashSet::new();
    for e in entries {
        let path = e.ok()?.path();
        if path.extension().and_then(|x| x.to_str()) == Some("json") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                ids.insert(stem.to_owned());
            }
        }
    }
    Some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Config {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ccedge-reload-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("c{n}.toml"));
        std::fs::write(&file, toml).unwrap();
        let cfg = config::load_from(Some(&file), &[]).unwrap();
        let _ = std::fs::remove_file(&file);
        cfg
    }

    #[test]
    fn unchanged_files_change_nothing() {
        let a = parse("[sip]\nallow = [\"10.0.0.0/8\"]\n");
        assert_eq!(changes(&a, &a.clone()), Changes::default());
    }

    #[test]
    fn each_changed_key_is_named_and_classified() {
        let a = parse("[sip]\nallow = [\"10.0.0.0/8\"]\nlisten = \"127.0.0.1:5060\"\n");
        let b = parse(
            "[sip]\nallow = [\"10.0.0.0/8\", \"192.0.2.7/32\"]\nlisten = \"127.0.0.1:5070\"\n\
             rate_limit_per_source = 10\n[log]\nlevel = \"debug\"\nformat = \"json\"\n\
             [mqtt]\nusername = \"n\"\npassword = \"x\"\n",
        );
        let c = changes(&a, &b);
        assert_eq!(
            c.live,
            ["log.level", "sip.allow", "sip.rate_limit_per_source"]
        );
        assert_eq!(
            c.restart,
            ["log.format", "mqtt.password", "mqtt.username", "sip.listen"]
        );
    }

    #[test]
    fn the_metrics_endpoint_needs_a_restart() {
        let a = parse("");
        let b = parse("[metrics]\nlisten = \"127.0.0.1:9464\"\n");
        let c = changes(&a, &b);
        assert_eq!(
            (c.live.len(), c.restart.as_slice()),
            (0, &["metrics.listen".to_owned()][..])
        );
        let c = parse("[metrics]\nlisten = \"127.0.0.1:9465\"\n");
        assert_eq!(changes(&b, &c).restart, ["metrics.listen"]);
    }

    #[test]
    fn languages_need_a_restart_and_the_dialled_table_is_one_key() {
        let a = parse("[ivr]\nlanguages = [\"en\", \"es\"]\n");
        let b = parse(
            "[ivr]\nlanguages = [\"es\", \"en\"]\n\
             language_by_dialled = { \"+18005550199\" = \"es\", \"+18005550198\" = \"en\" }\n",
        );
        let c = changes(&a, &b);
        assert!(c.live.is_empty(), "{c:?}");
        assert_eq!(c.restart, ["ivr.language_by_dialled", "ivr.languages"]);
    }

    #[test]
    fn a_changed_password_is_seen_though_it_serializes_redacted() {
        let a = parse("[mqtt]\nusername = \"n\"\npassword = \"one\"\n");
        let b = parse("[mqtt]\nusername = \"n\"\npassword = \"two\"\n");
        assert_eq!(changes(&a, &b).restart, ["mqtt.password"]);
    }

    #[test]
    fn every_live_key_exists_in_the_configuration() {
        let v = serde_json::to_value(Config::default()).unwrap();
        for key in LIVE_KEYS {
            let mut at = &v;
            for part in key.split('.') {
                at = at.get(part).unwrap_or_else(|| panic!("{key} is not a key"));
            }
        }
    }
}
