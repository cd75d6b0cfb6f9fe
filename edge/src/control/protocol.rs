//! The control socket's wire format (version 1): one JSON request line, one JSON response
//! line (or, for `events_tail`, a stream of lines).
//!
//! ```text
//! → {"v":1,"cmd":"status"}
//! ← {"v":1,"ok":true,"data":{"node_id":"pi-001",…}}
//! → {"v":1,"cmd":"cancel_callback","id":"cb-42"}
//! ← {"v":1,"ok":false,"error":"no waiting callback cb-42"}
//! ```
//!
//! Requests: `status`, `calls`, `callbacks`, `cancel_callback` (needs `id`), `announcements`,
//! `events_tail`. `calls`, `callbacks` and `events_tail` take an optional `"reveal":true`;
//! without it caller and callback numbers are masked by the agent before they leave it.
//! Unknown fields are ignored (a newer CLI may send more); an unknown `cmd` or a `v` other
//! than [`VERSION`] is an error reply.
//!
//! `events_tail` answers `{"v":1,"ok":true,"data":{"stream":"events"}}` and then one call
//! event (the JSON published to the CRM) per line until the client closes the connection. A
//! client that reads too slowly misses events and is told so with `{"v":1,"lagged":N}`.

use std::fmt::Write as _;

/// The rows and counters the control socket sends are the agent's own view types (one model
/// per concept, `crate::view`), serialized as they are.
pub use crate::view::{AnnouncementView, CallView, CallbackView, Stats};

use serde::{Deserialize, Serialize};
/// The JSON value type of reply data and streamed events (re-exported so clients need no
/// JSON crate of their own; it parses with `str::parse`).
pub use serde_json::Value;

/// The protocol version this agent and CLI speak.
pub const VERSION: u64 = 1;

/// Longest request line, bytes (newline included). Longer requests get an error reply.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Longest callback id accepted in `cancel_callback`.
pub const MAX_ID_CHARS: usize = 128;

/// One request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The node's state (`ccedge status`).
    Status,
    /// The active calls (`ccedge calls`).
    Calls {
        /// Show numbers unmasked.
        reveal: bool,
    },
    /// The local callback queue (`ccedge callbacks`).
    Callbacks {
        /// Show numbers unmasked.
        reveal: bool,
    },
    /// Cancel one waiting callback (`ccedge callbacks cancel ID`).
    CancelCallback {
        /// The callback id.
        id: String,
    },
    /// Announcements held (`ccedge announcements`).
    Announcements,
    /// Follow call events (`ccedge events tail`).
    EventsTail {
        /// Show numbers unmasked.
        reveal: bool,
    },
}

/// Why a request line was refused; the text is what the error reply says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// More than [`MAX_REQUEST_BYTES`] without a newline.
    #[error("request too large (more than {MAX_REQUEST_BYTES} bytes)")]
    TooLarge,
    /// No complete request in time.
    #[error("no request within the time limit")]
    Timeout,
    /// Not UTF-8 JSON.
    #[error("request is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("request is not a JSON object")]
    NotAnObject,
    /// No numeric `v`.
    #[error("request has no protocol version (\"v\":{VERSION})")]
    MissingVersion,
    /// A `v` this agent does not speak.
    #[error("unsupported protocol version {0} (this agent speaks {VERSION})")]
    UnsupportedVersion(u64),
    /// No `cmd` string.
    #[error("request has no \"cmd\"")]
    MissingCmd,
    /// A `cmd` this agent does not know.
    #[error("unknown command `{0}`")]
    UnknownCmd(String),
    /// A field of the wrong type or an out-of-range value.
    #[error("bad field `{field}`: {why}")]
    BadField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

impl Request {
    /// The request's `cmd` name.
    #[must_use]
    pub fn cmd(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Calls { .. } => "calls",
            Request::Callbacks { .. } => "callbacks",
            Request::CancelCallback { .. } => "cancel_callback",
            Request::Announcements => "announcements",
            Request::EventsTail { .. } => "events_tail",
        }
    }

    /// Parses one request line (with or without its newline).
    ///
    /// # Errors
    /// A [`RequestError`] saying what is wrong; never panics on any input.
    pub fn parse(line: &[u8]) -> Result<Request, RequestError> {
        if line.len() > MAX_REQUEST_BYTES {
            return Err(RequestError::TooLarge);
        }
        let value: Value = serde_json::from_slice(line).map_err(|e| {
            let mut why = String::new();
            let _ = write!(why, "{e}");
            RequestError::NotJson(why)
        })?;
        let Value::Object(obj) = value else {
            return Err(RequestError::NotAnObject);
        };
        let v = obj
            .get("v")
            .and_then(Value::as_u64)
            .ok_or(RequestError::MissingVersion)?;
        if v != VERSION {
            return Err(RequestError::UnsupportedVersion(v));
        }
        let cmd = obj
            .get("cmd")
            .and_then(Value::as_str)
            .ok_or(RequestError::MissingCmd)?;
        let reveal = match obj.get("reveal") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(RequestError::BadField {
                    field: "reveal",
                    why: "expected true or false",
                })
            }
        };
        Ok(match cmd {
            "status" => Request::Status,
            "calls" => Request::Calls { reveal },
            "callbacks" => Request::Callbacks { reveal },
            "announcements" => Request::Announcements,
            "events_tail" => Request::EventsTail { reveal },
            "cancel_callback" => {
                let id = obj
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or(RequestError::BadField {
                        field: "id",
                        why: "expected the callback id (a string)",
                    })?;
                if id.is_empty()
                    || id.chars().count() > MAX_ID_CHARS
                    || id.chars().any(char::is_control)
                {
                    return Err(RequestError::BadField {
                        field: "id",
                        why: "empty, too long or has control characters",
                    });
                }
                Request::CancelCallback { id: id.to_owned() }
            }
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(RequestError::UnknownCmd(shown));
            }
        })
    }

    /// The request as one JSON line, newline included.
    #[must_use]
    pub fn to_line(&self) -> String {
        let mut obj = serde_json::Map::new();
        obj.insert("v".to_owned(), Value::from(VERSION));
        obj.insert("cmd".to_owned(), Value::from(self.cmd()));
        match self {
            Request::Calls { reveal }
            | Request::Callbacks { reveal }
            | Request::EventsTail { reveal } => {
                obj.insert("reveal".to_owned(), Value::from(*reveal));
            }
            Request::CancelCallback { id } => {
                obj.insert("id".to_owned(), Value::from(id.as_str()));
            }
            Request::Status | Request::Announcements => {}
        }
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        line
    }
}

/// A success reply line carrying `data`, newline included.
#[must_use]
pub fn ok_line<T: Serialize>(data: &T) -> String {
    let data = serde_json::to_value(data).unwrap_or(Value::Null);
    let mut line = serde_json::json!({ "v": VERSION, "ok": true, "data": data }).to_string();
    line.push('\n');
    line
}

/// An error reply line, newline included.
#[must_use]
pub fn error_line(error: &str) -> String {
    let mut line = serde_json::json!({ "v": VERSION, "ok": false, "error": error }).to_string();
    line.push('\n');
    line
}

/// The notice to an `events_tail` client that it missed `n` events.
#[must_use]
pub fn lagged_line(n: u64) -> String {
    let mut line = serde_json::json!({ "v": VERSION, "lagged": n }).to_string();
    line.push('\n');
    line
}

/// A reply as a client reads it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Reply {
    /// Protocol version.
    pub v: u64,
    /// Whether the request succeeded.
    pub ok: bool,
    /// The answer, on success.
    #[serde(default)]
    pub data: Option<Value>,
    /// Why not, on failure.
    #[serde(default)]
    pub error: Option<String>,
}

/// `status` data: everything `ccedge status` shows. Field names are stable (scripts read
/// `ccedge status --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusData {
    /// `node.id`.
    pub node_id: String,
    /// `node.site`.
    pub site: String,
    /// The agent's version.
    pub version: String,
    /// The agent's process id.
    pub pid: u32,
    /// When the agent started, Unix ms.
    pub started_at_ms: i64,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// The SIP address it listens on.
    pub sip_listen: String,
    /// The CRM link.
    pub mqtt: MqttData,
    /// Active calls.
    pub active_calls: u64,
    /// Callbacks waiting in the local queue.
    pub callbacks_waiting: u64,
    /// Events not yet acknowledged by the CRM.
    pub outbox_backlog: u64,
    /// Announcements in state `active`.
    pub announcements_active: u64,
    /// Announcements held in any state.
    pub announcements_total: u64,
    /// Draining for shutdown.
    pub draining: bool,
    /// Counters.
    pub stats: Stats,
    /// Configuration reloads (`SIGHUP`) since the agent started (absent from agents older
    /// than reloading: all zero).
    #[serde(default)]
    pub reloads: ReloadData,
    /// Log lines the agent could not write to standard error (its reader gone, a full
    /// disk): they are lost, the agent carries on.
    #[serde(default)]
    pub log_write_errors: u64,
    /// What is wrong with the state store's disk (it could not be opened, a booking write
    /// failed: a full disk, an I/O error), until a write works again; `None` when it works.
    /// Bookings are refused while it cannot write.
    #[serde(default)]
    pub store_problem: Option<String>,
}

/// Configuration reloads in `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadData {
    /// Reloads that applied the file.
    pub ok: u64,
    /// Reloads refused (the agent kept the configuration it had).
    pub failed: u64,
    /// When the last one ended, Unix ms (0: none yet).
    pub last_at_ms: i64,
    /// Whether the last one succeeded (null: none yet).
    pub last_ok: Option<bool>,
    /// Why the last one failed.
    pub last_error: Option<String>,
    /// Keys changed in the file that take effect only after a restart.
    pub restart_pending: Vec<String>,
}

/// The CRM link's state in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MqttData {
    /// `mqtt.url`.
    pub url: String,
    /// Connected now.
    pub connected: bool,
    /// Connected or disconnected since, Unix ms (0: not yet known).
    pub since_ms: i64,
    /// The last connection error.
    pub last_error: Option<String>,
    /// Events held in the outbox.
    pub outbox_depth: u64,
    /// Events dropped from a full outbox.
    pub outbox_dropped: u64,
    /// The last `seq` issued.
    pub last_seq: u64,
    /// The highest `seq` the CRM acknowledged.
    pub acked_seq: u64,
    /// Events published.
    pub events_published: u64,
    /// Incoming messages rejected.
    pub rejected: u64,
    /// Why the last one was rejected.
    pub last_rejection: Option<String>,
    /// Incoming messages discarded unread: larger than `mqtt.max_payload_bytes` (also in
    /// `rejected`).
    #[serde(default)]
    pub oversized: u64,
}

/// `cancel_callback` data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelData {
    /// The callback.
    pub callback_id: String,
    /// Always true in a success reply.
    pub cancelled: bool,
}

/// `events_tail`'s first (success) reply data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamData {
    /// Always `events`.
    pub stream: String,
}

/// A caller or callback number as shown without `--reveal`: the masked E.164 form
/// (`+1215•••0123`), or every character but the last two hidden when it is not E.164.
#[must_use]
pub fn mask_number(raw: &str) -> String {
    match shared::number::PhoneNumber::parse(raw) {
        Ok(n) => n.masked().to_string(),
        Err(_) => {
            let n = raw.chars().count();
            raw.chars()
                .enumerate()
                .map(|(i, c)| if i + 2 >= n && n > 4 { c } else { '•' })
                .collect()
        }
    }
}

/// Masks every string field named `caller` or `callback_number` anywhere in `value` (a call
/// event), in place.
pub fn mask_numbers_in(value: &mut Value) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj.iter_mut() {
                match v {
                    Value::String(s) if k == "caller" || k == "callback_number" => {
                        *s = mask_number(s);
                    }
                    _ => mask_numbers_in(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_numbers_in),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_round_trips_through_its_line() {
        let all = [
            Request::Status,
            Request::Calls { reveal: false },
            Request::Calls { reveal: true },
            Request::Callbacks { reveal: true },
            Request::CancelCallback {
                id: "cb-0001".to_owned(),
            },
            Request::Announcements,
            Request::EventsTail { reveal: false },
        ];
        for r in all {
            let line = r.to_line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(Request::parse(line.as_bytes()), Ok(r));
        }
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases: [(&[u8], RequestError); 9] = [
            (b"hello", RequestError::NotJson(String::new())),
            (b"[1,2]", RequestError::NotAnObject),
            (br#"{"cmd":"status"}"#, RequestError::MissingVersion),
            (
                br#"{"v":2,"cmd":"status"}"#,
                RequestError::UnsupportedVersion(2),
            ),
            (br#"{"v":1}"#, RequestError::MissingCmd),
            (
                br#"{"v":1,"cmd":"reboot"}"#,
                RequestError::UnknownCmd("reboot".to_owned()),
            ),
            (
                br#"{"v":1,"cmd":"cancel_callback"}"#,
                RequestError::BadField {
                    field: "id",
                    why: "",
                },
            ),
            (
                br#"{"v":1,"cmd":"cancel_callback","id":""}"#,
                RequestError::BadField {
                    field: "id",
                    why: "",
                },
            ),
            (
                br#"{"v":1,"cmd":"calls","reveal":"yes"}"#,
                RequestError::BadField {
                    field: "reveal",
                    why: "",
                },
            ),
        ];
        for (input, want) in cases {
            let got = Request::parse(input).unwrap_err();
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&want),
                "{}: {got}",
                String::from_utf8_lossy(input)
            );
            if let (
                RequestError::BadField { field: a, .. },
                RequestError::BadField { field: b, .. },
            ) = (&got, &want)
            {
                assert_eq!(a, b);
            }
        }
        let huge = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert_eq!(Request::parse(&huge), Err(RequestError::TooLarge));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert_eq!(
            Request::parse(br#"{"v":1,"cmd":"status","from":"newer-cli"}"#),
            Ok(Request::Status)
        );
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes() {
        // A fixed xorshift sequence: many short random inputs plus mutations of valid lines.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds: Vec<Vec<u8>> = [Request::Status, Request::CancelCallback { id: "x".into() }]
            .iter()
            .map(|r| r.to_line().into_bytes())
            .collect();
        for i in 0..20_000 {
            let mut buf: Vec<u8> = if i % 2 == 0 {
                let len = usize::try_from(next() % 64).unwrap_or(0);
                (0..len).map(|_| (next() & 0xff) as u8).collect()
            } else {
                seeds[i % seeds.len()].clone()
            };
            if !buf.is_empty() {
                for _ in 0..3 {
                    let at = usize::try_from(next()).unwrap_or(0) % buf.len();
                    buf[at] = (next() & 0xff) as u8;
                }
            }
            let _ = Request::parse(&buf);
        }
    }

    #[test]
    fn replies_are_single_lines_with_the_version() {
        for line in [
            ok_line(&StreamData {
                stream: "events".into(),
            }),
            error_line("a\nb"),
            lagged_line(3),
        ] {
            assert!(line.ends_with('\n'));
            assert_eq!(line.matches('\n').count(), 1, "{line}");
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["v"], VERSION);
        }
        let r: Reply = serde_json::from_str(&error_line("nope")).unwrap();
        assert!(!r.ok);
        assert_eq!(r.error.as_deref(), Some("nope"));
    }

    #[test]
    fn numbers_are_masked_in_events() {
        assert_eq!(mask_number("+12155550123"), "+1215•••0123");
        assert!(!mask_number("anonymous-caller").contains("anonymous"));
        let mut ev = serde_json::json!({
            "type": "callback.requested",
            "data": {"caller": "+12155550123", "callback_number": "+12155550199", "dialled": "+18005550100"}
        });
        mask_numbers_in(&mut ev);
        let text = ev.to_string();
        assert!(
            !text.contains("2155550123") && !text.contains("2155550199"),
            "{text}"
        );
        assert!(text.contains("+18005550100"), "{text}");
    }
}
