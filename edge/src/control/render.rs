//! Readable terminal output for the technician commands: aligned tables and key/value lists.
//! (`--json` prints the protocol's data types instead; see [`super::protocol`].)

use std::fmt::Write as _;

use serde_json::Value;
use shared::time::UnixMillis;

use super::protocol::{AnnouncementView, CallView, CallbackView, ReloadData, StatusData};

/// A table whose columns are padded to their widest cell (counted in characters, so masked
/// numbers with `•` line up).
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    #[must_use]
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table, one line per row, columns separated by two spaces, no trailing spaces.
    #[must_use]
    pub fn render(&self) -> String {
        let n = self.header.len();
        let cell = |row: &[String], i: usize| row.get(i).map_or("", String::as_str).to_owned();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(cell(row, i).chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for i in 0..n {
                let text = cell(row, i);
                line.push_str(&text);
                if i + 1 < n {
                    let pad = widths.get(i).copied().unwrap_or(0) - text.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn opt(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

/// `2026-11-23T06:01:02.345Z`, or `-` for 0.
#[must_use]
pub fn time(ms: i64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let mut s = String::new();
    let _ = UnixMillis(ms).write_rfc3339(&mut s);
    s
}

/// A duration as `3d 4h`, `2h 5m`, `4m 10s` or `12s`.
#[must_use]
pub fn duration_s(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// `ccedge status` as aligned `key: value` lines.
#[must_use]
pub fn status(s: &StatusData) -> String {
    let mqtt = if s.mqtt.connected {
        format!(
            "connected to {} since {}",
            s.mqtt.url,
            time(s.mqtt.since_ms)
        )
    } else {
        let mut t = format!("disconnected from {}", s.mqtt.url);
        if s.mqtt.since_ms != 0 {
            let _ = write!(t, " since {}", time(s.mqtt.since_ms));
        }
        if let Some(e) = &s.mqtt.last_error {
            let _ = write!(t, " (last error: {e})");
        }
        t
    };
    let rows: [(&str, String); 16] = [
        ("node", format!("{} (site {})", s.node_id, s.site)),
        ("version", s.version.clone()),
        (
            "uptime",
            format!(
                "{} (since {}, pid {})",
                duration_s(s.uptime_s),
                time(s.started_at_ms),
                s.pid
            ),
        ),
        ("sip", format!("listening on {} (udp)", s.sip_listen)),
        ("mqtt", mqtt),
        (
            "calls",
            format!(
                "{} active, {} total, {} refused ({} over a source's fair share, {} at the media load limit); media plane {}.{}% busy{}",
                s.active_calls,
                s.stats.calls_total,
                s.stats.calls_refused,
                s.stats.calls_refused_share,
                s.stats.calls_refused_load,
                s.stats.pacer_load_permille / 10,
                s.stats.pacer_load_permille % 10,
                if s.stats.pacer_realtime {
                    ", real-time"
                } else {
                    ", normal priority"
                }
            ),
        ),
        (
            "callbacks",
            format!(
                "{} waiting, {} booked, {} failed",
                s.callbacks_waiting, s.stats.callbacks_booked, s.stats.callbacks_failed
            ),
        ),
        (
            "outbox",
            format!(
                "{} events not yet acknowledged (last seq {}, acked {}, dropped {})",
                s.outbox_backlog, s.mqtt.last_seq, s.mqtt.acked_seq, s.mqtt.outbox_dropped
            ),
        ),
        (
            "announcements",
            format!(
                "{} active of {} held",
                s.announcements_active, s.announcements_total
            ),
        ),
        (
            "rejected",
            match &s.mqtt.last_rejection {
                Some(r) => format!("{} incoming messages (last: {r})", s.mqtt.rejected),
                None => format!("{} incoming messages", s.mqtt.rejected),
            },
        ),
        (
            "oversized",
            format!(
                "{} incoming messages discarded unread (larger than mqtt.max_payload_bytes)",
                s.mqtt.oversized
            ),
        ),
        (
            "sip drops",
            format!(
                "{} denied, {} rate-limited, {} malformed, {} dropped and {} INVITEs answered 503 in overload; rtp dropped {} ({} from foreign sources)",
                s.stats.sip_denied,
                s.stats.sip_rate_limited,
                s.stats.sip_malformed,
                s.stats.sip_overload_dropped,
                s.stats.sip_overload_refused,
                s.stats.rtp_dropped,
                s.stats.rtp_foreign
            ),
        ),
        ("reloads", reloads(&s.reloads)),
        (
            "store",
            match &s.store_problem {
                Some(p) => format!("FAILING, bookings refused: {p}"),
                None => "ok".to_owned(),
            },
        ),
        (
            "log",
            format!("{} lines could not be written", s.log_write_errors),
        ),
        (
            "state",
            if s.draining {
                "draining (shutting down)".to_owned()
            } else {
                "running".to_owned()
            },
        ),
    ];
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    out
}

/// The `reloads` line of `ccedge status`: `none since start`, or the counts, the last
/// outcome and the keys waiting for a restart.
#[must_use]
pub fn reloads(r: &ReloadData) -> String {
    let mut t = match r.last_ok {
        None => return "none since start (SIGHUP reloads the configuration)".to_owned(),
        Some(true) => format!(
            "{} ok, {} failed; the last at {} succeeded",
            r.ok,
            r.failed,
            time(r.last_at_ms)
        ),
        Some(false) => format!(
            "{} ok, {} failed; the last at {} FAILED: {} (the previous configuration is in use)",
            r.ok,
            r.failed,
            time(r.last_at_ms),
            r.last_error.as_deref().unwrap_or("unknown error")
        ),
    };
    if !r.restart_pending.is_empty() {
        let _ = write!(t, "; restart to apply {}", r.restart_pending.join(", "));
    }
    t
}

/// `ccedge calls` as a table (or a one-line note when there are none).
#[must_use]
pub fn calls(rows: &[CallView]) -> String {
    if rows.is_empty() {
        return "no active calls\n".to_owned();
    }
    let mut t = Table::new(&[
        "CALL ID",
        "CALLER",
        "DIALLED",
        "STATE",
        "AGE",
        "CODEC",
        "LANG",
        "SENT",
        "RECEIVED",
        "LOST",
        "JITTER",
        "PEER LOSS",
        "RTT",
    ]);
    for c in rows {
        t.row(vec![
            c.call_id.clone(),
            opt(c.caller.as_deref()),
            opt(c.dialled.as_deref()),
            c.state.clone(),
            duration_s(c.age_ms / 1000),
            opt(c.codec.as_deref()),
            if c.language.is_empty() {
                "-".to_owned()
            } else {
                c.language.clone()
            },
            c.packets_sent.to_string(),
            c.packets_received.to_string(),
            c.lost.to_string(),
            format!("{} ms", c.jitter_ms),
            if c.rtcp_reports == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{:.1} % ({})",
                    f64::from(c.peer_fraction_lost) * 100.0 / 256.0,
                    c.peer_lost
                )
            },
            c.rtt_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
        ]);
    }
    t.render()
}

/// `ccedge callbacks` as a table.
#[must_use]
pub fn callbacks(rows: &[CallbackView]) -> String {
    if rows.is_empty() {
        return "no callbacks in the local queue\n".to_owned();
    }
    let mut t = Table::new(&[
        "CALLBACK ID",
        "NUMBER",
        "CALLER",
        "DIALLED",
        "REQUESTED",
        "STATE",
        "POS",
        "ANNOUNCEMENT",
    ]);
    for c in rows {
        t.row(vec![
            c.callback_id.clone(),
            c.callback_number.clone(),
            opt(c.caller.as_deref()),
            opt(c.dialled.as_deref()),
            time(c.requested_at_ms),
            c.state.clone(),
            c.position.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            opt(c.announcement_id.as_deref()),
        ]);
    }
    t.render()
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "*".to_owned()
    } else {
        items.join(",")
    }
}

/// `ccedge announcements` as a table.
#[must_use]
pub fn announcements(rows: &[AnnouncementView]) -> String {
    if rows.is_empty() {
        return "no announcements held\n".to_owned();
    }
    let mut t = Table::new(&[
        "ID", "VER", "STATE", "PRIO", "SITES", "DIALLED", "CALLERS", "AUDIO", "LOCAL", "VALID",
        "PLAYS", "DONE", "BARGE-IN",
    ]);
    for a in rows {
        let audio = a
            .audio_sha256
            .as_deref()
            .map_or_else(|| "-".to_owned(), |h| h.chars().take(12).collect());
        let valid = match (a.valid_from_ms, a.valid_until_ms) {
            (None, None) => "always".to_owned(),
            (from, until) => format!(
                "{}..{}",
                from.map_or_else(String::new, time),
                until.map_or_else(String::new, time)
            ),
        };
        t.row(vec![
            a.id.clone(),
            a.version.to_string(),
            match a.playing_version {
                Some(v) => format!("{} (v{v} plays)", a.state),
                None => a.state.clone(),
            },
            a.priority.to_string(),
            list(&a.sites),
            list(&a.dialled),
            list(&a.caller_prefixes),
            audio,
            if a.audio_sha256.is_none() {
                "-".to_owned()
            } else if a.audio_present {
                "yes".to_owned()
            } else {
                "missing".to_owned()
            },
            valid,
            a.heard.plays.to_string(),
            a.heard.completions.to_string(),
            a.heard.barge_ins.to_string(),
        ]);
    }
    t.render()
}

/// One call event as a readable line: time, seq, type, call, then the data compactly.
#[must_use]
pub fn event(ev: &Value) -> String {
    let field = |k: &str| match ev.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(v) => v.to_string(),
    };
    let mut line = format!(
        "{}  #{}  {:<22}  call {}",
        field("at"),
        field("seq"),
        field("type"),
        field("call_id")
    );
    if let Some(Value::Object(data)) = ev.get("data") {
        for (k, v) in data {
            match v {
                Value::String(s) => {
                    let _ = write!(line, "  {k}={s}");
                }
                Value::Null => {}
                other => {
                    let _ = write!(line, "  {k}={other}");
                }
            }
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_line_up_with_masked_numbers() {
        let mut t = Table::new(&["A", "CALLER", "Z"]);
        t.row(vec!["1".into(), "+1215•••0123".into(), "x".into()]);
        t.row(vec!["22".into(), "-".into()]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        let col = |l: &str, needle: &str| l.find(needle).map(|b| l[..b].chars().count());
        assert_eq!(col(lines[0], "CALLER"), col(lines[1], "+1215"));
        assert_eq!(col(lines[0], "Z"), col(lines[1], "x"));
        assert!(lines.iter().all(|l| !l.ends_with(' ')));
    }

    #[test]
    fn the_reloads_line_names_a_failure_and_the_keys_waiting_for_a_restart() {
        let mut r = ReloadData::default();
        assert!(reloads(&r).starts_with("none since start"));
        r.ok = 2;
        r.last_ok = Some(true);
        r.last_at_ms = 1_764_000_000_000;
        r.restart_pending = vec!["sip.listen".into(), "mqtt.url".into()];
        let line = reloads(&r);
        assert!(
            line.starts_with("2 ok, 0 failed; the last at 2025-"),
            "{line}"
        );
        assert!(
            line.ends_with("restart to apply sip.listen, mqtt.url"),
            "{line}"
        );
        r.failed = 1;
        r.last_ok = Some(false);
        r.last_error = Some("config error in x.toml: not valid TOML".into());
        let line = reloads(&r);
        assert!(
            line.contains("FAILED: config error in x.toml: not valid TOML"),
            "{line}"
        );
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration_s(5), "5s");
        assert_eq!(duration_s(125), "2m 5s");
        assert_eq!(duration_s(3 * 3600 + 60), "3h 1m");
        assert_eq!(duration_s(2 * 86_400 + 7200), "2d 2h");
    }

    #[test]
    fn event_lines_name_the_type_and_call() {
        let ev = serde_json::json!({"at":"2026-11-23T06:01:02.345Z","seq":7,"type":"dtmf","call_id":"ab12","data":{"digit":"1"}});
        let line = event(&ev);
        assert!(
            line.starts_with("2026-11-23T06:01:02.345Z  #7  dtmf"),
            "{line}"
        );
        assert!(
            line.contains("call ab12") && line.contains("digit=1"),
            "{line}"
        );
    }
}
