//! `firmware-sim demo`: everything on one machine with nothing installed.
//!
//! ```text
//!   CRM (crate::crm) ──announce: retained audio + document──▶ ┌────────────────────┐
//!   CRM ◀── events, callbacks, status ── watch, ack, accept ── │ rumqttd, in-process │
//!                                                              └─────────▲──────────┘
//!                                                                        │ MQTT (the agent's link)
//!   gateway (demo/caller.rs) ──SIP/RTP over UDP on 127.0.0.1──▶ the agent (edge::agent::start)
//! ```
//!
//! 1. an MQTT broker (rumqttd) starts on a free 127.0.0.1 port ([`broker`]);
//! 2. the CRM starts watching the node (acknowledging events, accepting callbacks);
//! 3. the agent starts in this process from the default configuration, adjusted: a temporary
//!    state directory, SIP on 127.0.0.1 (any port), the broker above, a unique node id;
//! 4. the CRM publishes an outage announcement whose audio is a three-note chime made here,
//!    and its Spanish version (`language: es`, a lower chime); the agent offers English and
//!    Spanish (`ivr.languages = ["en", "es"]`);
//! 5. once the agent holds them, the gateway places the calls: every caller listens to the
//!    announcement (checked frame by frame against the chime), some hang up, some press keys
//!    to book a callback; one caller presses 9 for Spanish, hears the Spanish chime and books
//!    in Spanish;
//! 6. the summary checks: every call answered, the announcement heard by every caller, the
//!    callbacks booked by the agent and received (and accepted) by the CRM, the Spanish
//!    caller's callback request in Spanish, and the CRM's events complete (no `seq` gaps, no
//!    duplicates).
//!
//! It exits 0 only when every check holds; otherwise it prints what failed and exits 1.
//! `firmware-sim demo --virtual` runs the older scripted scenario of the core alone on
//! virtual time ([`virtual_time`]).

// The demo measures real time (setup latency, how long it ran).
#![allow(clippy::disallowed_methods)]

mod broker;
mod caller;
mod virtual_time;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use shared::number::PhoneNumber;
use shared::time::UnixMillis;

use crate::crm::announce::{self, AnnounceSpec};
use crate::crm::watch::{self, Seen, SeqStart, TrackerConfig, WatchConfig};
use crate::crm::{unique_client_id, BrokerConfig};
use crate::gateway::uac::Offer;
use caller::{CallPlan, CallResult, Expected, Script};

/// The number the gateway's callers dial, and the announcement's scope.
const DIALLED: &str = "18005550100";
const SITE: &str = "demo";
const PREFIX: &str = "ccedge/v1";
const ANNOUNCEMENT_ID: &str = "outage-demo";
/// The same announcement in Spanish.
const ANNOUNCEMENT_ES_ID: &str = "outage-demo-es";
/// The caller who presses 9 for Spanish (and books).
const SPANISH_CALL: u64 = 3;
/// The chime's notes (Hz) and its length in 20 ms frames.
const NOTES: [f32; 3] = [523.25, 659.25, 783.99];
/// The Spanish announcement's chime: the same tune a fourth lower.
const NOTES_ES: [f32; 3] = [392.00, 493.88, 587.33];
const CHIME_FRAMES: usize = 100;

/// `firmware-sim demo --virtual`.
pub(crate) fn main_virtual() -> ExitCode {
    virtual_time::main()
}

/// `firmware-sim demo`: runs it and prints the summary; exit 0 when every check held.
pub(crate) fn main(calls: u32) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = rt.block_on(run(calls, &mut |line: &str| println!("{line}")));
    rt.shutdown_timeout(Duration::from_secs(1));
    match out {
        Ok(failed) if failed.is_empty() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            println!("demo: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The chime: three notes, 8 kHz, 16-bit, a whole number of 20 ms frames, with short fades so
/// it sounds clean; no frame of it is silence.
fn chime() -> Vec<i16> {
    chime_of(&NOTES)
}

/// A chime of these notes (see [`chime`]).
fn chime_of(notes: &[f32; 3]) -> Vec<i16> {
    let n = CHIME_FRAMES * 160;
    let per = n / notes.len();
    let fade = 80usize;
    (0..n)
        .map(|i| {
            let k = (i / per).min(notes.len() - 1);
            let j = i - k * per;
            let len = if k == notes.len() - 1 {
                n - k * per
            } else {
                per
            };
            let env = (j.min(len - 1 - j).min(fade) as f32 / fade as f32).max(0.1);
            let t = i as f32 / 8000.0;
            let x = (2.0 * std::f32::consts::PI * notes[k] * t).sin() * 0.35 * env;
            (x * 32_767.0) as i16
        })
        .collect()
}

fn wav_bytes(pcm: &[i16]) -> Result<Vec<u8>, String> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cur = std::io::Cursor::new(Vec::new());
    let mut w = hound::WavWriter::new(&mut cur, spec).map_err(|e| e.to_string())?;
    for &s in pcm {
        w.write_sample(s).map_err(|e| e.to_string())?;
    }
    w.finalize().map_err(|e| e.to_string())?;
    Ok(cur.into_inner())
}

/// The calls: most listen, every third books (confirming the caller ID), two key another
/// number, one anonymous caller keys theirs; every fifth offers PCMA only.
fn plans(calls: u32) -> Vec<CallPlan> {
    (1..=u64::from(calls))
        .map(|n| {
            let caller = if n == 11 {
                None
            } else {
                Some(format!("1215555{:04}", n % 10_000))
            };
            let keyed = format!("4420794{:05}", n % 100_000);
            let script = match n {
                7 | 11 | 16 => Script::BookKeyed(keyed),
                9 => Script::BookLater,
                _ if n % 3 == 0 => Script::BookConfirm,
                _ => Script::Listen,
            };
            CallPlan {
                n,
                caller,
                dialled: DIALLED.to_owned(),
                offer: if n % 5 == 0 {
                    Offer::PcmaOnly
                } else {
                    Offer::Standard
                },
                script,
                spanish: n == SPANISH_CALL,
            }
        })
        .collect()
}

/// A state directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("ccedge-demo-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(TempDir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn masked(n: Option<&str>) -> String {
    match n.map(PhoneNumber::parse) {
        Some(Ok(p)) => p.masked().to_string(),
        Some(Err(_)) => "(invalid)".to_owned(),
        None => "anonymous".to_owned(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// What the CRM's watcher collected.
#[derive(Debug, Default)]
struct CrmLog {
    by_type: BTreeMap<String, u64>,
    callbacks: Vec<Value>,
    status: Option<Value>,
    connection_errors: u64,
}

/// Runs the demo, writing its report through `say`; returns the failed checks.
///
/// # Errors
/// A message when something the demo needs could not start at all.
async fn run(calls: u32, say: &mut dyn FnMut(&str)) -> Result<Vec<String>, String> {
    let t0 = Instant::now();
    say("ccedge demo: the agent, an MQTT broker, a CRM and a gateway, all on 127.0.0.1");

    // 1. The broker.
    let broker_addr = tokio::task::spawn_blocking(broker::start)
        .await
        .map_err(|e| e.to_string())??;
    say(&format!("  broker   rumqttd (MQTT 3.1.1) on {broker_addr}"));
    let url = format!("mqtt://{broker_addr}");

    // 2. The agent's settings (the CRM needs the node id to watch).
    let dir = TempDir::new()?;
    let node_id = format!("demo-{}", std::process::id());
    let mut cfg = edge::config::Config::default();
    cfg.node.id.clone_from(&node_id);
    cfg.node.site = SITE.to_owned();
    cfg.node.state_dir = dir.path().to_path_buf();
    cfg.sip.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.sip.rate_limit_per_source = 2_000;
    cfg.mqtt.url = url
        .parse()
        .map_err(|e: edge::config::MqttUrlError| e.to_string())?;
    cfg.mqtt.topic_prefix = PREFIX.to_owned();
    cfg.control.socket = Some(dir.path().join("control.sock"));
    // Callers who book are asked when: as soon as possible, or a later part of a day. The
    // centre calls back around the clock, so "as soon as possible" means now whatever the hour
    // the demo runs at (with daytime hours, a run after closing would offer "when we open").
    cfg.callbacks.hours = vec!["Mon-Sun 00:00-24:00".to_owned()];
    cfg.ivr.languages = vec!["en".to_owned(), "es".to_owned()];

    // 3. The CRM watches the node from its first event.
    let crm_broker = BrokerConfig::parse(&url, &unique_client_id("demo-crm-watch"))
        .map_err(|e| e.to_string())?;
    let mut wcfg = WatchConfig::new(PREFIX);
    wcfg.node = Some((SITE.to_owned(), node_id.clone()));
    wcfg.tracker = TrackerConfig {
        ack: true,
        start: SeqStart::One,
        ..TrackerConfig::default()
    };
    let log = Arc::new(Mutex::new(CrmLog::default()));
    let (stop_watch, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = {
        let log = Arc::clone(&log);
        let mut connected = Some(connected_tx);
        tokio::spawn(async move {
            watch::run(
                &crm_broker,
                &wcfg,
                async {
                    let _ = stop_rx.await;
                },
                move |s| {
                    let Ok(mut l) = log.lock() else { return };
                    match s {
                        Seen::Connected => {
                            if let Some(c) = connected.take() {
                                let _ = c.send(());
                            }
                        }
                        Seen::ConnectionError { .. } => l.connection_errors += 1,
                        Seen::Event { kind, verdict, .. } if *verdict == watch::Verdict::New => {
                            *l.by_type.entry(kind.clone()).or_default() += 1;
                        }
                        Seen::Callback {
                            payload,
                            duplicate: false,
                            ..
                        } => l.callbacks.push(payload.clone()),
                        Seen::Status { payload, .. } => l.status = Some(payload.clone()),
                        _ => {}
                    }
                },
            )
            .await
        })
    };
    if tokio::time::timeout(Duration::from_secs(5), connected_rx)
        .await
        .is_err()
    {
        return Err("the CRM could not connect to the broker".to_owned());
    }

    // 4. The agent.
    let (stop_agent, agent_stop_rx) = tokio::sync::watch::channel(false);
    let running = edge::agent::start(edge::cli::agent_config(&cfg), agent_stop_rx)
        .await
        .map_err(|e| format!("the agent did not start: {e}"))?;
    let sip = running.sip_addr;
    say(&format!(
        "  agent    node {SITE}/{node_id}, SIP {sip}, state in {}",
        dir.path().display()
    ));
    // The agent's metrics endpoint (`metrics.listen`), as `ccedge agent` serves it: curl it
    // while the demo runs; the demo scrapes it itself before it stops the agent.
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("metrics listener: {e}"))?;
    let metrics_addr = metrics_listener
        .local_addr()
        .map_err(|e| format!("metrics listener: {e}"))?;
    tokio::spawn(edge::metrics::serve(
        metrics_listener,
        edge::metrics::registry(
            &running.metrics,
            running.snapshot.clone(),
            running.link_status.clone(),
            env!("CARGO_PKG_VERSION"),
        ),
    ));
    say(&format!(
        "  metrics  curl http://{metrics_addr}/metrics (OpenMetrics, while the demo runs)"
    ));

    // 5. The CRM publishes the outage announcement.
    let pcm = chime();
    let wav = wav_bytes(&pcm)?;
    let expected = Arc::new(Expected::new(&pcm));
    let mut spec = AnnounceSpec::new(ANNOUNCEMENT_ID, version_now());
    spec.priority = 10;
    spec.sites = vec![SITE.to_owned()];
    spec.dialled = vec![format!("+{DIALLED}")];
    spec.text = Some("We are aware of a TV outage in your area and are working on it.".into());
    spec.language = Some("en".into());
    let pub_broker = BrokerConfig::parse(&url, &unique_client_id("demo-crm-announce"))
        .map_err(|e| e.to_string())?;
    let published = announce::announce(
        &pub_broker,
        PREFIX,
        &spec,
        Some(&wav),
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| format!("the CRM could not publish: {e}"))?;
    if let Some(a) = &published.audio {
        say(&format!(
            "  CRM      published {} (retained, {} bytes: a {:.1} s chime of {} Hz)",
            short_topic(&a.topic),
            a.bytes,
            expected.duration().as_secs_f64(),
            NOTES.map(|f| format!("{f:.0}")).join("/")
        ));
    }
    say(&format!(
        "  CRM      published {} v{} (retained) for +{DIALLED} at site {SITE}, priority 10, offers a callback",
        published.announcement.topic, spec.version
    ));
    let pcm_es = chime_of(&NOTES_ES);
    let expected_es = Arc::new(Expected::new(&pcm_es));
    let mut spec_es = spec.clone();
    spec_es.id = ANNOUNCEMENT_ES_ID.to_owned();
    spec_es.text =
        Some("Sabemos de una falla de TV en su zona y estamos trabajando en ella.".into());
    spec_es.language = Some("es".into());
    let published_es = announce::announce(
        &pub_broker,
        PREFIX,
        &spec_es,
        Some(&wav_bytes(&pcm_es)?),
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| format!("the CRM could not publish: {e}"))?;
    say(&format!(
        "  CRM      published {} v{} (retained): the same in Spanish (language es), a chime of {} Hz",
        published_es.announcement.topic,
        spec_es.version,
        NOTES_ES.map(|f| format!("{f:.0}")).join("/")
    ));

    // 6. Wait until the agent holds it, with its audio.
    let waited = Instant::now();
    let mut snap = running.snapshot.clone();
    let holds = tokio::time::timeout(
        Duration::from_secs(10),
        snap.wait_for(|s| {
            [ANNOUNCEMENT_ID, ANNOUNCEMENT_ES_ID].iter().all(|id| {
                s.announcements
                    .iter()
                    .any(|a| a.id == *id && a.version == spec.version && a.audio_present)
            })
        }),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let held_after = waited.elapsed();
    if holds {
        say(&format!(
            "  agent    holds {ANNOUNCEMENT_ID} and {ANNOUNCEMENT_ES_ID} v{} with their audio after {}",
            spec.version,
            ms(held_after)
        ));
    } else {
        say("  agent    did NOT receive the announcements within 10 s (the calls go ahead anyway)");
    }

    // 7. The gateway places the calls.
    let plans = plans(calls);
    let books = plans.iter().filter(|p| p.script.books()).count();
    say(&format!(
        "  gateway  {calls} calls to {sip}, one every 150 ms: {} listen and hang up, {books} book a callback; call {SPANISH_CALL} presses 9 for Spanish\n",
        plans.len() - books
    ));
    let mut failed = Vec::new();
    let mut tasks = Vec::new();
    for p in plans {
        let expected = Arc::clone(if p.spanish { &expected_es } else { &expected });
        tasks.push(tokio::spawn(caller::place(p, sip, expected)));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut results: Vec<CallResult> = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => results.push(r),
            Err(e) => failed.push(format!("a call task failed: {e}")),
        }
    }
    report_calls(&results, say);

    // 8. The agent's callbacks, then the CRM's view once the events settled.
    let agent_callbacks = agent_callbacks(&running).await;
    let want_ended = results.len() as u64;
    let settle = Instant::now() + Duration::from_secs(6);
    while Instant::now() < settle {
        let done = log.lock().is_ok_and(|l| {
            l.by_type.get("call.ended").copied().unwrap_or(0) >= want_ended
                && l.callbacks.len() >= agent_callbacks.len()
        });
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the CRM's acceptance reach the agent before its state is read again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let agent_callbacks_after = agent_callbacks_states(&running).await;
    let _ = stop_watch.send(());
    let summary = match watcher.await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            failed.push(format!("the CRM's watcher failed: {e}"));
            None
        }
        Err(e) => {
            failed.push(format!("the CRM's watcher failed: {e}"));
            None
        }
    };
    let link = running.link_status.borrow().clone();
    let scraped = scrape(metrics_addr).await;
    let _ = stop_agent.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), running.task).await;

    // 9. The checks.
    let l = log
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    say("\nChecks");
    let mut check = |ok: bool, text: String| {
        say(&format!("  [{}] {text}", if ok { "ok" } else { "FAILED" }));
        if !ok {
            failed.push(text);
        }
    };
    check(
        holds,
        format!(
            "announcement delivered over MQTT: {}",
            if holds {
                format!(
                    "the agent held it with its audio {} after publishing",
                    ms(held_after)
                )
            } else {
                "the agent never held it".to_owned()
            }
        ),
    );
    let n = results.len();
    let answered = results.iter().filter(|r| r.answered).count();
    let mut setups: Vec<Duration> = results.iter().filter_map(|r| r.setup).collect();
    setups.sort_unstable();
    check(
        answered == n && n == calls as usize,
        format!(
            "calls answered: {answered}/{calls} (setup p50 {}, max {})",
            ms(percentile(&setups, 0.5)),
            ms(percentile(&setups, 1.0))
        ),
    );
    let heard = results.iter().filter(|r| r.heard_it()).count();
    let missed: usize = results
        .iter()
        .filter(|r| r.answered)
        .map(|r| r.expected.saturating_sub(r.heard))
        .sum();
    check(
        heard == n && n > 0,
        format!(
            "announcement heard: {heard}/{n} callers got their language's chime, {} frames bit-exact and in order ({missed} frames missed in all)",
            expected.len()
        ),
    );
    let errors: Vec<String> = results
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("call {}: {e}", r.plan.n)))
        .collect();
    check(
        errors.is_empty(),
        if errors.is_empty() {
            "every caller's script ran to its end".to_owned()
        } else {
            format!("calls went wrong: {}", errors.join("; "))
        },
    );
    let mut positions: Vec<u32> = agent_callbacks.iter().filter_map(|c| c.position).collect();
    positions.sort_unstable();
    check(
        agent_callbacks.len() == books,
        format!(
            "callbacks booked by the agent (durably): {}/{books} (queue positions {})",
            agent_callbacks.len(),
            ranges_text(&positions)
        ),
    );
    let crm_ids: Vec<&str> = l
        .callbacks
        .iter()
        .filter_map(|c| c.get("callback_id").and_then(Value::as_str))
        .collect();
    let same = agent_callbacks.len() == crm_ids.len()
        && agent_callbacks
            .iter()
            .all(|c| crm_ids.contains(&c.callback_id.as_str()));
    check(
        same && !crm_ids.is_empty(),
        format!(
            "callback requests received by the CRM: {}/{} (the same ids as the agent's)",
            crm_ids.len(),
            agent_callbacks.len()
        ),
    );
    // The caller who chose a later time: the CRM got a window that starts after the request.
    let later: Vec<&Value> = l
        .callbacks
        .iter()
        .filter(|c| c.get("callback_number").and_then(Value::as_str) == Some("+12155550009"))
        .collect();
    let window_of = |c: &Value| -> Option<(String, String, bool)> {
        let w = c.get("window")?;
        let nb = w.get("not_before")?.as_str()?.to_owned();
        let na = w.get("not_after")?.as_str()?.to_owned();
        let at = UnixMillis::parse_rfc3339(c.get("requested_at")?.as_str()?).ok()?;
        let from = UnixMillis::parse_rfc3339(&nb).ok()?;
        Some((nb, na, from.0 > at.0 + 60_000))
    };
    match later.first().and_then(|c| window_of(c)) {
        Some((nb, na, true)) => check(
            true,
            format!("a caller chose a later time: the CRM got the window {nb} to {na}"),
        ),
        other => check(
            false,
            format!("the caller who chose a later time: no later window at the CRM ({other:?})"),
        ),
    }
    let language_of = |c: &Value| c.get("language").and_then(Value::as_str).map(str::to_owned);
    let spanish = results.iter().find(|r| r.plan.spanish);
    let es_requests = l
        .callbacks
        .iter()
        .filter(|c| language_of(c).as_deref() == Some("es"))
        .count();
    let en_requests = l
        .callbacks
        .iter()
        .filter(|c| language_of(c).as_deref() == Some("en"))
        .count();
    check(
        spanish.is_some_and(|r| r.heard_it() && r.keys.starts_with('9'))
            && es_requests == 1
            && en_requests + 1 == l.callbacks.len(),
        format!(
            "Spanish caller: call {SPANISH_CALL} pressed 9, heard the es announcement ({}/{} frames) and booked in Spanish; callback requests by language: es {es_requests}, en {en_requests}",
            spanish.map_or(0, |r| r.heard),
            expected_es.len()
        ),
    );
    let accepted = agent_callbacks_after
        .iter()
        .filter(|(_, s)| *s == "accepted")
        .count();
    check(
        accepted == agent_callbacks.len() && accepted > 0,
        format!(
            "the CRM accepted them and the agent knows: {}",
            count_states(&agent_callbacks_after)
        ),
    );
    // The metrics endpoint, scraped while the agent ran.
    let value = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l[series.len()..].trim().parse().ok())
    };
    match &scraped {
        Ok(text) => {
            let ended = value(text, "ccedge_calls_ended_total{reason=\"caller_hangup\"}")
                .unwrap_or(0.0)
                + value(text, "ccedge_calls_ended_total{reason=\"node_hangup\"}").unwrap_or(0.0);
            let later = value(
                text,
                "ccedge_callbacks_total{outcome=\"booked\",window=\"later\"}",
            );
            let asap = value(
                text,
                "ccedge_callbacks_total{outcome=\"booked\",window=\"asap\"}",
            );
            let setups = value(text, "ccedge_call_setup_seconds_count");
            let ticks = value(text, "ccedge_pacer_lateness_seconds_count");
            let families = [
                "ccedge_calls_active",
                "ccedge_sip_requests_refused_total",
                "ccedge_outbox_depth",
                "ccedge_mqtt_connected",
                "ccedge_announcement_plays_total",
                "ccedge_announcement_completions_total",
            ];
            let missing: Vec<&str> = families
                .iter()
                .copied()
                .filter(|f| !text.lines().any(|l| l.starts_with(f)))
                .collect();
            check(
                missing.is_empty()
                    && later == Some(1.0)
                    && asap.is_some_and(|a| a >= 1.0)
                    && setups == Some(results.len() as f64)
                    && ticks.is_some_and(|t| t > 0.0)
                    && ended as usize == results.len(),
                format!(
                    "metrics endpoint: {} lines; {} calls set up and {ended} ended, callbacks booked {} as soon as possible and {} for later, {} pacer ticks{}",
                    text.lines().count(),
                    setups.unwrap_or(0.0),
                    asap.unwrap_or(0.0),
                    later.unwrap_or(0.0),
                    ticks.unwrap_or(0.0),
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!("; MISSING {missing:?}")
                    }
                ),
            );
        }
        Err(e) => check(false, format!("metrics endpoint: {e}")),
    }
    match &summary {
        Some(s) => {
            let node = s
                .nodes
                .iter()
                .find(|x| x.node == format!("{SITE}/{node_id}"));
            let (events, upto, missing, dups) = node.map_or((0, None, Vec::new(), 0), |x| {
                (
                    x.unique_events,
                    x.contiguous_upto,
                    x.missing.clone(),
                    x.duplicates,
                )
            });
            let types: Vec<String> = l.by_type.iter().map(|(k, v)| format!("{k} {v}")).collect();
            check(
                events > 0 && missing.is_empty() && dups == 0,
                format!(
                    "events at the CRM: {events} (seq 1..={}), {}, {dups} duplicates; acknowledged up to {}",
                    upto.unwrap_or(0),
                    if missing.is_empty() {
                        "no gaps".to_owned()
                    } else {
                        format!("MISSING {missing:?}")
                    },
                    node.map_or(0, |x| x.acked_seq)
                ),
            );
            let offered = l.by_type.get("call.offered").copied().unwrap_or(0);
            let ended = l.by_type.get("call.ended").copied().unwrap_or(0);
            let requested = l.by_type.get("callback.requested").copied().unwrap_or(0);
            check(
                offered == n as u64 && ended == n as u64 && requested == books as u64,
                format!(
                    "every call's events: {}",
                    if types.is_empty() {
                        "none".to_owned()
                    } else {
                        types.join(", ")
                    }
                ),
            );
        }
        None => check(
            false,
            "events at the CRM: the watcher did not finish".to_owned(),
        ),
    }
    let status = l.status.as_ref();
    let online = status.and_then(|s| s.get("state")).and_then(Value::as_str) == Some("online");
    let plays = status
        .and_then(|s| s.get("announcements"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| {
                    format!(
                        "{} v{} {}",
                        x.get("id").and_then(Value::as_str).unwrap_or("?"),
                        x.get("version").map_or_else(String::new, Value::to_string),
                        x.get("state").and_then(Value::as_str).unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    check(
        online && plays.contains(ANNOUNCEMENT_ID),
        format!(
            "node status at the CRM: {} [{plays}]",
            status
                .and_then(|s| s.get("state"))
                .and_then(Value::as_str)
                .unwrap_or("none received")
        ),
    );
    say(&format!(
        "  (link: {} events published, outbox depth {}, CRM acknowledged up to {}; broker connection errors at the CRM: {})",
        link.events_published, link.outbox_depth, link.acked_seq, l.connection_errors
    ));
    if failed.is_empty() {
        say(&format!("demo: OK ({:.1} s)", t0.elapsed().as_secs_f64()));
    } else {
        say(&format!(
            "demo: FAILED ({} of the checks; {:.1} s)",
            failed.len(),
            t0.elapsed().as_secs_f64()
        ));
    }
    Ok(failed)
}

/// `GET /metrics` on the agent's endpoint, as curl would.
async fn scrape(addr: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = |e: std::io::Error| format!("GET http://{addr}/metrics: {e}");
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        .await
        .map_err(io)?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut body))
        .await
        .map_err(|_| format!("GET http://{addr}/metrics: timed out"))?
        .map_err(io)?;
    let text = String::from_utf8_lossy(&body).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(format!(
            "GET http://{addr}/metrics: {}",
            text.lines().next().unwrap_or("no answer")
        )),
    }
}

fn short_topic(t: &str) -> String {
    // `…/audio/` and the first 12 hex digits of the hash.
    match t.rsplit_once('/') {
        Some((head, hash)) if hash.len() > 12 => format!("{head}/{}…", &hash[..12]),
        _ => t.to_owned(),
    }
}

fn version_now() -> u32 {
    u32::try_from(edge::clock::wall_now().0 / 1000).unwrap_or(1)
}

fn ranges_text(v: &[u32]) -> String {
    if v.is_empty() {
        return "none".to_owned();
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}–{}", v[i], v[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

fn count_states(v: &[(String, String)]) -> String {
    let mut m: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, s) in v {
        *m.entry(s.as_str()).or_default() += 1;
    }
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn agent_callbacks(running: &edge::agent::Running) -> Vec<edge::agent::CallbackView> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if running
        .commands
        .send(edge::agent::Command::Callbacks(tx))
        .await
        .is_err()
    {
        return Vec::new();
    }
    tokio::time::timeout(Duration::from_secs(3), rx)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

async fn agent_callbacks_states(running: &edge::agent::Running) -> Vec<(String, String)> {
    agent_callbacks(running)
        .await
        .into_iter()
        .map(|c| (c.callback_id, c.state))
        .collect()
}

fn report_calls(results: &[CallResult], say: &mut dyn FnMut(&str)) {
    say(" #  caller          codec  setup   announcement  keys      outcome");
    for r in results {
        let codec = match r.law {
            Some(shared::g711::Law::Ulaw) => "PCMU",
            Some(shared::g711::Law::Alaw) => "PCMA",
            None => "-",
        };
        let mut keys = r.keys.clone();
        if let Script::BookKeyed(num) = &r.plan.script {
            // Keyed numbers are personal data: show the shape only.
            keys = keys.replace(num.as_str(), &format!("{}…", num.get(..3).unwrap_or("")));
        }
        let name = if r.plan.spanish {
            format!("{} in Spanish", r.plan.script.name())
        } else {
            r.plan.script.name().to_owned()
        };
        let outcome = match &r.error {
            Some(e) => format!("{name}: {e}"),
            None if r.agent_hung_up => format!("{name}: the agent hung up"),
            None => format!("{name}: the caller hung up"),
        };
        let mut line = String::new();
        let _ = write!(
            line,
            "{:>2}  {:<14}  {codec:<5}  {:>6}  {:>3}/{:<3} {}  {keys:<8}  {outcome}",
            r.plan.n,
            masked(r.plan.caller.as_ref().map(|c| format!("+{c}")).as_deref()),
            r.setup.map_or_else(|| "-".to_owned(), ms),
            r.heard,
            r.expected,
            if r.heard_it() { "heard" } else { "MISSED" },
        );
        say(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chime_is_whole_frames_and_never_silent() {
        let pcm = chime();
        assert_eq!(pcm.len(), CHIME_FRAMES * 160);
        for f in pcm.chunks(160) {
            assert!(f.iter().any(|&s| s.unsigned_abs() > 1000), "a quiet frame");
        }
        let wav = wav_bytes(&pcm).expect("wav");
        assert_eq!(
            edge::media::audio::decode_wav(&wav).expect("agent decodes"),
            pcm
        );
    }

    /// The whole demo, as `firmware-sim demo` runs it (about 20 s).
    #[test]
    fn the_demo_passes_every_check_and_fits_on_a_screen() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut text = String::new();
        let failed = rt
            .block_on(run(20, &mut |l: &str| {
                text.push_str(l);
                text.push('\n');
            }))
            .expect("demo starts");
        assert!(failed.is_empty(), "{failed:?}\n{text}");
        assert!(text.contains("demo: OK"), "{text}");
        assert!(text.lines().count() < 50, "{text}");
        assert!(
            !text.contains("+12155550"),
            "caller numbers are masked:\n{text}"
        );
    }

    #[test]
    fn the_plan_mixes_listeners_and_bookings() {
        let p = plans(20);
        assert_eq!(p.len(), 20);
        let books = p.iter().filter(|p| p.script.books()).count();
        assert_eq!(books, 9);
        assert!(p.iter().any(|p| p.caller.is_none() && p.script.books()));
        assert_eq!(ranges_text(&[1, 2, 3, 5, 7, 8]), "1–3, 5, 7–8");
    }
}
