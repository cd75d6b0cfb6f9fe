//! The `firmware-sim crm` command line: `announce`, `watch` and `keygen` (the command table in
//! `docs/ARCHITECTURE.md`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;
use shared::number::PhoneNumber;

use super::announce::{self, AnnounceSpec};
use super::watch::{self, Seen, SeqStart, Summary, TrackerConfig, WatchConfig};
use super::{BrokerConfig, CrmError};

/// `firmware-sim crm …`.
#[derive(Debug, Args)]
pub struct CrmArgs {
    /// The broker: mqtt://host[:port] or mqtts://host[:port] (not needed by `keygen`).
    #[arg(long)]
    broker: Option<String>,
    /// Topic prefix (the agents' `mqtt.topic_prefix`).
    #[arg(long, global = true, default_value = "ccedge/v1")]
    prefix: String,
    /// MQTT user name.
    #[arg(long, global = true)]
    username: Option<String>,
    /// MQTT password.
    #[arg(long, global = true)]
    password: Option<String>,
    /// PEM CA bundle that signed the broker's certificate (mqtts:// only; default: the
    /// system's roots).
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// PEM client certificate presented to the broker (mqtts:// only; needs --key-file).
    #[arg(long, global = true)]
    cert_file: Option<PathBuf>,
    /// PEM private key of --cert-file.
    #[arg(long, global = true)]
    key_file: Option<PathBuf>,
    #[command(subcommand)]
    action: CrmAction,
}

#[derive(Debug, Subcommand)]
enum CrmAction {
    /// Publish an announcement: its audio retained on P/audio/{sha256}, then the document
    /// retained on P/announcements/{id} (or withdraw it).
    Announce(AnnounceArgs),
    /// Follow every node's events, callback requests and status; report gaps and duplicates.
    /// Exits 1 when events are still missing at the end.
    Watch(WatchArgs),
    /// Make an Ed25519 key pair for signing announcements: writes the private key (base64,
    /// mode 0600) to --out and prints the public key for the nodes' `announcements.signing_key`.
    Keygen(KeygenArgs),
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Where to write the private key (refuses to overwrite).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct AnnounceArgs {
    /// Announcement id.
    #[arg(long)]
    id: String,
    /// The audio (WAV: PCM 16-bit or G.711, mono, any common rate).
    #[arg(long, required_unless_present_any = ["withdraw", "text"])]
    wav: Option<PathBuf>,
    /// Version (only increases); default: the current Unix time in seconds.
    #[arg(long)]
    version: Option<u32>,
    /// Priority (higher plays first).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Sites it applies to (comma-separated; default everywhere).
    #[arg(long, value_delimiter = ',')]
    sites: Vec<String>,
    /// Dialled numbers it applies to, E.164 (comma-separated; default all).
    #[arg(long, value_delimiter = ',')]
    dialled: Vec<String>,
    /// Caller number prefixes it applies to, E.164 (comma-separated; default all callers).
    #[arg(long, value_delimiter = ',')]
    caller_prefixes: Vec<String>,
    /// Start, RFC 3339.
    #[arg(long)]
    valid_from: Option<String>,
    /// End, RFC 3339.
    #[arg(long)]
    valid_until: Option<String>,
    /// Text, for nodes with a speech engine.
    #[arg(long)]
    text: Option<String>,
    /// Language tag.
    #[arg(long)]
    language: Option<String>,
    /// Do not offer "press 1 to be called back" after it.
    #[arg(long)]
    no_callback: bool,
    /// Sign the announcement with this private key (a file from `crm keygen`).
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Withdraw the announcement (empty retained payload) instead.
    #[arg(long, conflicts_with_all = ["wav", "text"])]
    withdraw: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// One JSON line per message, and a JSON summary.
    #[arg(long)]
    json: bool,
    /// Acknowledge the contiguous prefix of each node's events, ask for missing ranges, and
    /// accept callback requests.
    #[arg(long)]
    ack: bool,
    /// Only this site (with --node).
    #[arg(long, requires = "node")]
    site: Option<String>,
    /// Only this node (with --site).
    #[arg(long, requires = "site")]
    node: Option<String>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// The first `seq` expected from every node (default: the first one seen).
    #[arg(long)]
    from_seq: Option<u64>,
}

/// Runs `firmware-sim crm`.
#[must_use]
pub fn main(args: CrmArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("firmware-sim crm: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let CrmAction::Keygen(k) = &args.action {
        return keygen(&k.out);
    }
    let Some(url) = &args.broker else {
        eprintln!("firmware-sim crm: --broker URL is required");
        return ExitCode::from(2);
    };
    let mut broker = match BrokerConfig::parse(url, &super::unique_client_id("crm")) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("firmware-sim crm: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = broker.set_tls_files(
        args.ca_file.as_deref(),
        args.cert_file.as_deref(),
        args.key_file.as_deref(),
    ) {
        eprintln!("firmware-sim crm: {e}");
        return ExitCode::from(2);
    }
    if let Some(u) = &args.username {
        broker.credentials = Some((u.clone(), args.password.clone().unwrap_or_default()));
    }
    let prefix = super::normalize_prefix(&args.prefix);
    let result = match args.action {
        CrmAction::Announce(a) => rt.block_on(announce_cmd(&broker, &prefix, a)),
        CrmAction::Watch(w) => rt.block_on(watch_cmd(&broker, &prefix, w)),
        CrmAction::Keygen(_) => return ExitCode::FAILURE,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("firmware-sim crm: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(out: &std::path::Path) -> ExitCode {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut seed = [0u8; 32];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed)) {
        eprintln!("firmware-sim crm keygen: cannot read /dev/urandom: {e}");
        return ExitCode::FAILURE;
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .and_then(|mut f| {
            writeln!(f, "{}", edge::link::signature::encode_seed(&seed))?;
            f.sync_all()
        });
    if let Err(e) = written {
        eprintln!("firmware-sim crm keygen: {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!(
        "private key written to {} (keep it on the CRM)",
        out.display()
    );
    println!(
        "public key, for every node's ccedge.toml:\n[announcements]\nsigning_key = \"{}\"",
        edge::link::signature::public_key(&seed)
    );
    ExitCode::SUCCESS
}

fn read_seed(path: &std::path::Path) -> Result<announce::Seed, CrmError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CrmError::Invalid(format!("--signing-key {}: {e}", path.display())))?;
    edge::link::signature::parse_seed(&text)
        .map(announce::Seed)
        .map_err(|e| CrmError::Invalid(format!("--signing-key {}: {e}", path.display())))
}

fn unix_seconds() -> u32 {
    let ms = edge::clock::wall_now().0;
    u32::try_from(ms / 1000).unwrap_or(u32::MAX)
}

async fn announce_cmd(
    broker: &BrokerConfig,
    prefix: &str,
    a: AnnounceArgs,
) -> Result<ExitCode, CrmError> {
    let timeout = Duration::from_secs(15);
    if a.withdraw {
        let m = announce::withdraw(broker, prefix, &a.id, timeout).await?;
        if a.json {
            println!("{}", json!({ "withdrawn": a.id, "topic": m.topic }));
        } else {
            println!(
                "published {} (retained, QoS 1, empty: withdraws {})",
                m.topic, a.id
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let wav = match &a.wav {
        Some(p) => {
            Some(std::fs::read(p).map_err(|e| CrmError::Audio(format!("{}: {e}", p.display())))?)
        }
        None => None,
    };
    let spec = AnnounceSpec {
        id: a.id,
        version: a.version.unwrap_or_else(unix_seconds),
        priority: a.priority,
        sites: a.sites,
        dialled: a.dialled,
        caller_prefixes: a.caller_prefixes,
        valid_from: a.valid_from,
        valid_until: a.valid_until,
        text: a.text,
        offer_callback: !a.no_callback,
        language: a.language,
        signing_key: a.signing_key.as_deref().map(read_seed).transpose()?,
    };
    let p = announce::announce(broker, prefix, &spec, wav.as_deref(), timeout).await?;
    if a.json {
        let doc = json!({
            "audio": p.audio.as_ref().map(|m| json!({
                "topic": m.topic,
                "bytes": m.bytes,
                "sha256": p.audio_sha256,
                "seconds": p.audio_duration.map(|d| d.as_secs_f64()),
            })),
            "announcement": { "topic": p.announcement.topic, "document": p.document },
        });
        println!("{doc}");
    } else {
        if let Some(m) = &p.audio {
            println!(
                "published {} (retained, QoS 1, {} bytes, {:.2} s of audio)",
                m.topic,
                m.bytes,
                p.audio_duration.unwrap_or_default().as_secs_f64()
            );
        }
        println!(
            "published {} (retained, QoS 1, {} bytes, version {})",
            p.announcement.topic, p.announcement.bytes, spec.version
        );
        println!("{}", p.document);
    }
    Ok(ExitCode::SUCCESS)
}

async fn watch_cmd(
    broker: &BrokerConfig,
    prefix: &str,
    w: WatchArgs,
) -> Result<ExitCode, CrmError> {
    let mut cfg = WatchConfig::new(prefix);
    cfg.node = w.site.clone().zip(w.node.clone());
    cfg.count = w.count;
    cfg.tracker = TrackerConfig {
        ack: w.ack,
        start: w.from_seq.map_or(SeqStart::FirstSeen, SeqStart::At),
        ..TrackerConfig::default()
    };
    let duration = match w.duration {
        Some(d) if d.is_finite() && d >= 0.0 => Some(Duration::from_secs_f64(d)),
        Some(_) => {
            return Err(CrmError::Invalid(
                "--duration: not a number of seconds".into(),
            ))
        }
        None => None,
    };
    let stop = async move {
        let ctrl_c = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        match duration {
            Some(d) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = ctrl_c => {}
                }
            }
            None => ctrl_c.await,
        }
    };
    let json_out = w.json;
    let summary = watch::run(broker, &cfg, stop, |s| {
        if json_out {
            if let Ok(line) = serde_json::to_string(s) {
                println!("{line}");
            }
        } else if let Some(line) = render_line(s) {
            println!("{line}");
        }
    })
    .await?;
    if json_out {
        let doc = json!({ "summary": summary, "ok": summary.missing == 0 });
        println!("{doc}");
    } else {
        print!("{}", render_summary(&summary));
    }
    Ok(if summary.missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn masked(n: Option<&str>) -> String {
    match n.map(PhoneNumber::parse) {
        Some(Ok(p)) => p.masked().to_string(),
        Some(Err(_)) => "(invalid number)".into(),
        None => "-".into(),
    }
}

fn ranges(r: &[(u64, u64)]) -> String {
    r.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..={b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One text line for what the watcher saw.
#[must_use]
pub fn render_line(s: &Seen) -> Option<String> {
    use serde_json::Value;
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(match s {
        Seen::Connected => "connected, subscribed".to_owned(),
        Seen::ConnectionError { error } => format!("connection error: {error} (retrying)"),
        Seen::Event {
            node,
            seq,
            kind,
            verdict,
            missing,
            payload,
            ..
        } => {
            let call = str_of(payload, "call_id").unwrap_or_default();
            let call = call.get(..12).unwrap_or(&call).to_owned();
            let mut l = format!("event    {node} seq {seq} {kind} call {call}");
            match verdict {
                watch::Verdict::New => {}
                watch::Verdict::Duplicate => l.push_str("  DUPLICATE"),
                watch::Verdict::SeqReused => l.push_str("  SEQ REUSED by another event_id"),
                watch::Verdict::BeforeStart => l.push_str("  (before the watched start)"),
            }
            if !missing.is_empty() {
                l.push_str(&format!("  GAP: missing {}", ranges(missing)));
            }
            l
        }
        Seen::Callback {
            node,
            callback_id,
            duplicate,
            payload,
        } => format!(
            "callback {node} {callback_id} call back {} position {}{}",
            masked(str_of(payload, "callback_number").as_deref()),
            payload
                .get("position")
                .map_or_else(|| "?".to_owned(), Value::to_string),
            if *duplicate { "  DUPLICATE" } else { "" }
        ),
        Seen::Status { node, payload } => {
            if payload.is_null() {
                format!("status   {node} (cleared)")
            } else {
                let anns = payload
                    .get("announcements")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|x| {
                                format!(
                                    "{}@{} {}",
                                    str_of(x, "id").unwrap_or_default(),
                                    x.get("version").map_or_else(String::new, Value::to_string),
                                    str_of(x, "state").unwrap_or_default()
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                format!(
                    "status   {node} {} version {} announcements [{anns}] callbacks_waiting {} outbox_depth {}",
                    str_of(payload, "state").unwrap_or_else(|| "?".into()),
                    str_of(payload, "version").unwrap_or_else(|| "?".into()),
                    payload.get("callbacks_waiting").map_or_else(|| "?".into(), Value::to_string),
                    payload.get("outbox_depth").map_or_else(|| "?".into(), Value::to_string),
                )
            }
        }
        Seen::Malformed { topic, error } => format!("malformed on {topic}: {error}"),
        Seen::Sent(watch::Action::Ack { node, upto_seq }) => {
            format!("ack      {node} upto_seq {upto_seq}")
        }
        Seen::Sent(watch::Action::Replay {
            node,
            from_seq,
            to_seq,
        }) => format!("replay   {node} from_seq {from_seq} to_seq {to_seq}"),
        Seen::Accepted { node, callback_id } => {
            format!("accepted {node} callback {callback_id}")
        }
    })
}

/// The text summary of a watch.
#[must_use]
pub fn render_summary(s: &Summary) -> String {
    use core::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "summary: {} messages from {} node(s); {} event(s) missing, {} duplicate(s)",
        s.messages,
        s.nodes.len(),
        s.missing,
        s.duplicates
    );
    if let Some(l) = s.event_latency_ms {
        let _ = writeln!(
            o,
            "  event at → received here: p50 {} ms, p99 {} ms, max {} ms over {} events",
            l.p50, l.p99, l.max, l.count
        );
    }
    for n in &s.nodes {
        let seqs = match (n.first_seq, n.max_seq) {
            (Some(a), Some(b)) => format!("seq {a}..={b}"),
            _ => "no events".to_owned(),
        };
        let _ = writeln!(
            o,
            "  {}: {} events ({} distinct, {} duplicate), {seqs}, contiguous up to {}, {} went missing, {}; {} callback(s){}; {} ack(s) sent (upto {}), {} replay request(s)",
            n.node,
            n.events,
            n.unique_events,
            n.duplicates,
            n.contiguous_upto.map_or_else(|| "-".into(), |u| u.to_string()),
            n.went_missing,
            if n.missing.is_empty() {
                "no gaps".to_owned()
            } else {
                format!("MISSING {}", ranges(&n.missing))
            },
            n.callbacks,
            if n.callback_duplicates > 0 {
                format!(" ({} repeated)", n.callback_duplicates)
            } else {
                String::new()
            },
            n.acks_sent,
            n.acked_seq,
            n.replays_sent
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_mask_numbers_and_flag_gaps_and_duplicates() {
        let ev = Seen::Event {
            node: "phl/pi-1".into(),
            seq: 7,
            kind: "call.ended".into(),
            event_id: "e7".into(),
            verdict: watch::Verdict::Duplicate,
            missing: vec![(3, 4), (6, 6)],
            payload: json!({"call_id": "0123456789abcdef"}),
        };
        assert_eq!(
            render_line(&ev).as_deref(),
            Some("event    phl/pi-1 seq 7 call.ended call 0123456789ab  DUPLICATE  GAP: missing 3..=4, 6")
        );
        let cb = Seen::Callback {
            node: "phl/pi-1".into(),
            callback_id: "cb1".into(),
            duplicate: false,
            payload: json!({"callback_number": "+12155550123", "position": 4}),
        };
        let line = render_line(&cb).unwrap_or_default();
        assert!(
            line.starts_with("callback phl/pi-1 cb1 call back +1215"),
            "{line}"
        );
        assert!(!line.contains("5550123"), "{line}");
        assert!(line.ends_with("position 4"), "{line}");
    }

    #[test]
    fn the_summary_names_what_is_missing() {
        let t0 = tokio::time::Instant::now().into_std();
        let mut t = watch::Tracker::new(TrackerConfig::default());
        t.on_event(t0, "phl/a", 10, "a");
        t.on_event(t0, "phl/a", 12, "c");
        t.on_event(t0, "phl/a", 12, "c");
        let nodes = t.summary();
        let s = Summary {
            messages: 3,
            missing: t.missing_total(),
            duplicates: 1,
            nodes,
            event_latency_ms: None,
        };
        let text = render_summary(&s);
        assert!(
            text.starts_with(
                "summary: 3 messages from 1 node(s); 1 event(s) missing, 1 duplicate(s)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("seq 10..=12, contiguous up to 10, 1 went missing, MISSING 11;"),
            "{text}"
        );
    }
}
