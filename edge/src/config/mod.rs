//! The agent's configuration: a TOML file plus `CCEDGE__SECTION__KEY` environment overrides,
//! typed and validated, with errors that name the key and where its value came from.
//!
//! ## Sources, in order (later wins)
//! 1. built-in defaults ([`Config::default`]): safe for development, so `ccedge agent` starts
//!    with no file at all (loopback only, state under `./ccedge-state`, broker on localhost);
//! 2. the TOML file, when one is given (a file given explicitly must exist);
//! 3. environment variables `CCEDGE__SECTION__KEY` (`CCEDGE__MQTT__URL`,
//!    `CCEDGE__RTP__PORT_MIN=30000`, `CCEDGE__SIP__ALLOW=10.0.0.0/8,192.0.2.7`).
//!    Values are strings and are converted to the key's type (numbers, `true`/`false`); list
//!    keys split on `,`. A string key keeps its text exactly (`CCEDGE__MQTT__PASSWORD=007`
//!    stays `007`). An empty variable is ignored (it does not clear the key).
//!
//! ## Errors
//! Unknown keys and sections are errors (a typo never silently becomes a default), and so are
//! wrong types and out-of-range values. Every [`ConfigError`] names the key (`sip.allow[1]`)
//! and the file or environment variable the value came from; `ccedge config check` prints it
//! and exits 2.
//!
//! ## Paths
//! Relative paths (`node.state_dir`, TLS files, `ivr.prompts_dir`) are relative to the agent's
//! working directory, not to the file. Files named by the configuration (TLS files, the prompt
//! directory) are checked when the configuration is loaded.
//!
//! The example at `deploy/ccedge.toml` lists every key with its default.

mod cidr;
mod render;
mod source;
mod validate;
pub(crate) mod values;

#[cfg(test)]
mod tests;

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use cidr::{AllowList, Cidr, CidrError, CidrErrorKind};
pub use values::{
    DenyAction, KeywordError, LogFormat, LogLevel, MqttUrl, MqttUrlError, Secret, SigningKey,
    SigningKeyError, REDACTED,
};

/// Environment variables with this prefix override configuration keys.
pub const ENV_PREFIX: &str = "CCEDGE__";

/// The whole configuration. Every section and key has a default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[node]`: who this node is and where it keeps state.
    pub node: Node,
    /// `[sip]`: the SIP/UDP listener and who may use it.
    pub sip: Sip,
    /// `[rtp]`: media ports and timeouts.
    pub rtp: Rtp,
    /// `[mqtt]`: the broker link to the CRM.
    pub mqtt: Mqtt,
    /// `[control]`: the CLI's control socket.
    pub control: Control,
    /// `[ivr]`: the caller-facing menu.
    pub ivr: Ivr,
    /// `[callbacks]`: the local callback queue.
    pub callbacks: Callbacks,
    /// `[announcements]`: announcement audio and signatures.
    pub announcements: Announcements,
    /// `[log]`: logging to stderr.
    pub log: Log,
    /// `[metrics]`: the Prometheus / OpenMetrics endpoint.
    pub metrics: Metrics,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Node {
    /// **Contract** `node.id`: this node's name in MQTT topics and events. `[A-Za-z0-9_-]`,
    /// at most [`NODE_ID_MAX`] characters. Default: the host name up to its first `.`, with
    /// other characters replaced by `-`.
    pub id: String,
    /// **Contract** `node.site`: the site announcements are scoped to. `[A-Za-z0-9_-]`, at
    /// most [`shared::limits::SITE_MAX`] characters. Default `default`.
    pub site: String,
    /// **Contract** `node.state_dir`: the callback queue, outbox, counters and announcement
    /// cache. Default `./ccedge-state`.
    pub state_dir: PathBuf,
}

/// Longest `sip.server_header`, characters.
pub const SERVER_HEADER_MAX: usize = 64;

/// Longest `node.id`, characters.
pub const NODE_ID_MAX: usize = 64;

impl Default for Node {
    fn default() -> Self {
        Node {
            id: default_node_id(),
            site: "default".to_owned(),
            state_dir: PathBuf::from("./ccedge-state"),
        }
    }
}

/// `[sip]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sip {
    /// **Contract** `sip.listen`: UDP address for SIP. Port 0 picks a free port (tests).
    /// Default `127.0.0.1:5060`.
    #[serde(deserialize_with = "source::de_socket_addr")]
    pub listen: SocketAddr,
    /// **Contract** `sip.allow`: prefixes allowed to send requests. Default loopback only.
    pub allow: AllowList,
    /// `sip.deny_action`: `silence` (default) or `403` for requests from outside `allow`.
    pub deny_action: DenyAction,
    /// `sip.rate_limit_per_source`: requests that start something new (INVITE, OPTIONS, …)
    /// accepted per second from one source address, bursts of twice that; the excess is
    /// dropped. Requests inside a dialog, CANCEL and responses are never limited. Default 1000
    /// (a trusted gateway's 500 new calls/s pass; the node's admission control, not this
    /// limit, decides when calls are refused).
    pub rate_limit_per_source: u32,
    /// `sip.max_calls`: most calls at once (also bounded by the RTP port range); a new INVITE
    /// beyond gets 503 with Retry-After. When more than one source has calls, the last tenth
    /// is kept for sources below their fair share (this divided by the sources with calls
    /// plus one), so a few sources cannot take every slot from the others. Default 10000.
    pub max_calls: u32,
    /// `sip.public_address`: the address written into Contact, Via and SDP when `listen` is a
    /// wildcard (`0.0.0.0` / `::`). Default unset (the listen address is used).
    #[serde(deserialize_with = "source::de_opt_ip")]
    pub public_address: Option<IpAddr>,
    /// `sip.t1_ms`: RFC 3261 T1 (round-trip estimate) for retransmissions. Default 500.
    pub t1_ms: u32,
    /// `sip.answer_delay_ms`: wait between 180 Ringing and 200 OK. Default 0.
    pub answer_delay_ms: u32,
    /// `sip.server_header`: the `Server` value of responses and `User-Agent` of the node's
    /// requests. Default `ccedge` (no version, which would tell scanners what to attack);
    /// empty: neither header is sent. At most [`SERVER_HEADER_MAX`] characters: RFC 3261
    /// token characters, `/` and single spaces between words.
    pub server_header: String,
    /// `sip.tcp`: also take SIP over TCP on the `listen` address and port (RFC 3261 §18).
    /// Default true.
    pub tcp: bool,
    /// `sip.tcp_idle_s`: a TCP connection with no traffic this long is closed. Default 600.
    pub tcp_idle_s: u32,
    /// `sip.tcp_max_connections`: most TCP connections at once. Default 1024.
    pub tcp_max_connections: u32,
    /// `sip.tcp_max_per_source`: most TCP connections from one address. Default 128.
    pub tcp_max_per_source: u32,
    /// `sip.tls_listen`: address for SIP over TLS (commonly port 5061). Default unset (off).
    #[serde(deserialize_with = "source::de_opt_socket_addr")]
    pub tls_listen: Option<SocketAddr>,
    /// `sip.tls_cert`: PEM certificate chain for `tls_listen`.
    pub tls_cert: Option<PathBuf>,
    /// `sip.tls_key`: PEM private key for `tls_listen`.
    pub tls_key: Option<PathBuf>,
}

impl Default for Sip {
    fn default() -> Self {
        Sip {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060),
            allow: AllowList::default(),
            deny_action: DenyAction::Silence,
            rate_limit_per_source: 1000,
            max_calls: 10_000,
            public_address: None,
            t1_ms: 500,
            answer_delay_ms: 0,
            server_header: shared::sip::emit::SERVER.to_owned(),
            tcp: true,
            tcp_idle_s: 600,
            tcp_max_connections: 1024,
            tcp_max_per_source: 128,
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[rtp]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rtp {
    /// **Contract** `rtp.port_min`: lowest UDP port for media (≥ 1024). Default 20000.
    pub port_min: u16,
    /// **Contract** `rtp.port_max`: highest UDP port for media (the range holds at least 2
    /// ports). Default 29999.
    pub port_max: u16,
    /// `rtp.media_timeout_s`: hang up a call that received no RTP for this long; 0 = never.
    /// Default 60.
    pub media_timeout_s: u32,
    /// `rtp.max_pacer_load_percent`: new calls get 503 with Retry-After while the media
    /// plane's thread was busier than this over its last second (sending, reading); 0 = never.
    /// Default 85.
    pub max_pacer_load_percent: u8,
    /// `rtp.media_threads`: threads that send and read RTP, each carrying its share of the
    /// calls; 0 = one per CPU core (at most 8). Default 0.
    pub media_threads: u8,
    /// `rtp.realtime_priority`: the media plane threads run `SCHED_FIFO` at this priority
    /// (1–99) when the service may (`LimitRTPRIO`, or `CAP_SYS_NICE`); 0 = normal threads.
    /// Default 10.
    pub realtime_priority: u8,
}

impl Default for Rtp {
    fn default() -> Self {
        Rtp {
            port_min: 20000,
            port_max: 29999,
            media_timeout_s: 60,
            max_pacer_load_percent: 85,
            media_threads: 0,
            realtime_priority: 10,
        }
    }
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mqtt {
    /// **Contract** `mqtt.url`: `mqtt://host[:port]` or `mqtts://host[:port]`. Default
    /// `mqtt://127.0.0.1:1883`.
    pub url: MqttUrl,
    /// **Contract** `mqtt.topic_prefix`: prefix of every topic. No `+`/`#`, no leading or
    /// trailing `/`, no empty level. Default `ccedge/v1`.
    pub topic_prefix: String,
    /// `mqtt.client_id`: default `ccedge-{site}-{node}` (see [`Config::mqtt_client_id`]).
    pub client_id: Option<String>,
    /// `mqtt.username`: default unset.
    pub username: Option<String>,
    /// `mqtt.password`: default unset; never printed.
    pub password: Option<Secret>,
    /// `mqtt.ca_file`: PEM CA bundle for `mqtts://` (default: the system roots).
    pub ca_file: Option<PathBuf>,
    /// `mqtt.cert_file`: PEM client certificate for `mqtts://` (needs `key_file`).
    pub cert_file: Option<PathBuf>,
    /// `mqtt.key_file`: PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// `mqtt.keepalive_s`: MQTT keep-alive; the broker publishes the Last Will after 1.5×
    /// this without traffic. Default 30.
    pub keepalive_s: u16,
    /// `mqtt.max_payload_bytes`: larger incoming messages are dropped. Default 16 MiB.
    pub max_payload_bytes: u32,
    /// `mqtt.outbox_capacity`: most call events held for the CRM (on disk); when full the
    /// oldest are dropped and counted. Default 100000 (100..=10000000).
    pub outbox_capacity: u64,
    /// `mqtt.outbox_retention_h`: events the broker PUBACKed but the CRM never acknowledged
    /// are dropped after this many hours; 0 keeps them until acknowledged or the outbox is
    /// full. Default 72 (0..=8760).
    pub outbox_retention_h: u32,
    /// `mqtt.status_interval_s`: the retained status is refreshed this often when nothing
    /// changed (changes are published within a second). Default 30 (1..=3600).
    pub status_interval_s: u16,
}

impl Default for Mqtt {
    fn default() -> Self {
        Mqtt {
            url: MqttUrl::default(),
            topic_prefix: "ccedge/v1".to_owned(),
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            keepalive_s: 30,
            max_payload_bytes: 16 * 1024 * 1024,
            outbox_capacity: 100_000,
            outbox_retention_h: 72,
            status_interval_s: 30,
        }
    }
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Control {
    /// **Contract** `control.socket`: the CLI's Unix socket. Default
    /// `<node.state_dir>/control.sock` (see [`Config::control_socket`]).
    pub socket: Option<PathBuf>,
}

/// `[ivr]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ivr {
    /// **Contract** `ivr.transfer_uri`: where "0 for an agent" sends the caller (`sip:`,
    /// `sips:` or `tel:` URI). Unset: the option is not offered.
    pub transfer_uri: Option<String>,
    /// `ivr.prompts_dir`: recorded prompts (WAV) replacing the built-in ones: files directly
    /// in it are the default language's, `{prompts_dir}/{lang}/` each language's. Must be a
    /// directory when set.
    pub prompts_dir: Option<PathBuf>,
    /// `ivr.languages`: the languages callers may choose, the default first. Each has
    /// built-in prompts (`en`, `es`) or every prompt in `{prompts_dir}/{lang}/`. Default
    /// `["en"]`.
    pub languages: Vec<String>,
    /// `ivr.language_by_dialled`: dialled E.164 number → language (one of `ivr.languages`)
    /// calls to it start in. Default empty.
    pub language_by_dialled: std::collections::BTreeMap<String, String>,
    /// `ivr.no_input_timeout_ms`: from the end of a prompt to the first key. Default 5000.
    pub no_input_timeout_ms: u32,
    /// `ivr.max_retries`: a step is replayed this many times after no input or an invalid
    /// key; the next failure ends the call with a goodbye. Default 2.
    pub max_retries: u8,
    /// `ivr.booking_timeout_ms`: longest wait for a callback to be stored durably before the
    /// caller hears it could not be booked. Default 5000.
    pub booking_timeout_ms: u32,
    /// `ivr.country_code`: 1–999; replaces the leading `0` of a keyed national number.
    /// Unset: callback numbers must be keyed in international form.
    pub country_code: Option<u16>,
    /// `ivr.offer_callback_default`: offer "1 for a call back" when no announcement matched.
    /// Default true.
    pub offer_callback_default: bool,
    /// `ivr.speech_command`: renders announcement `text` to WAV (e.g. `espeak-ng --stdout`);
    /// run without a shell, words split on whitespace. Unset: text-only announcements are
    /// unplayable.
    pub speech_command: Option<String>,
}

impl Default for Ivr {
    fn default() -> Self {
        Ivr {
            transfer_uri: None,
            prompts_dir: None,
            languages: vec!["en".to_owned()],
            language_by_dialled: std::collections::BTreeMap::new(),
            no_input_timeout_ms: 5000,
            max_retries: 2,
            booking_timeout_ms: 5000,
            country_code: None,
            offer_callback_default: true,
            speech_command: None,
        }
    }
}

/// `[callbacks]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Callbacks {
    /// `callbacks.capacity`: most callbacks waiting locally (at most
    /// [`shared::limits::CALLBACK_QUEUE_CAPACITY`]). Default 256.
    pub capacity: u16,
    /// `callbacks.dedupe_window_s`: a second request for the same number within this time is
    /// a duplicate. Default 86400.
    pub dedupe_window_s: u32,
    /// `callbacks.max_age_s`: booked callbacks still open this long expire locally (a
    /// callback whose window ends later waits for its window). Default 86400.
    pub max_age_s: u32,
    /// `callbacks.timezone`: the IANA zone the hours and holidays are in, and the offset of
    /// the windows sent to the CRM. Default `UTC`.
    pub timezone: String,
    /// `callbacks.hours`: when the centre calls back, e.g. `["Mon-Fri 08:00-20:00",
    /// "Sat 09:00-13:00"]`. Empty (the default): always open, and callers are not asked for a
    /// time (every callback is "as soon as possible").
    pub hours: Vec<String>,
    /// `callbacks.holidays`: dates (`YYYY-MM-DD`) the centre is closed all day.
    pub holidays: Vec<String>,
}

impl Default for Callbacks {
    fn default() -> Self {
        Callbacks {
            capacity: 256,
            dedupe_window_s: 86_400,
            max_age_s: 86_400,
            timezone: "UTC".into(),
            hours: Vec::new(),
            holidays: Vec::new(),
        }
    }
}

/// `[announcements]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Announcements {
    /// `announcements.max_audio_bytes`: larger WAV files are refused (≤
    /// `mqtt.max_payload_bytes`). Default 16 MiB.
    pub max_audio_bytes: u32,
    /// `announcements.signing_key`: the CRM's Ed25519 public key (base64). When set,
    /// unsigned or badly signed announcements are rejected.
    pub signing_key: Option<SigningKey>,
}

impl Default for Announcements {
    fn default() -> Self {
        Announcements {
            max_audio_bytes: 16 * 1024 * 1024,
            signing_key: None,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `log.level`: `error`, `warn`, `info` (default), `debug`, `trace`.
    pub level: LogLevel,
    /// `log.format`: `text` (default) or `json`.
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: LogLevel::Info,
            format: LogFormat::Text,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// `metrics.listen`: TCP address of the HTTP endpoint serving `GET /metrics` in the
    /// OpenMetrics text format. Default unset (off). Taken at start (a reload needs a
    /// restart to change it).
    #[serde(deserialize_with = "source::de_opt_metrics_addr")]
    pub listen: Option<SocketAddr>,
}

impl Config {
    /// The control socket path: `control.socket`, or `<node.state_dir>/control.sock`.
    #[must_use]
    pub fn control_socket(&self) -> PathBuf {
        match &self.control.socket {
            Some(p) => p.clone(),
            None => self.node.state_dir.join("control.sock"),
        }
    }

    /// The MQTT client id: `mqtt.client_id`, or `ccedge-{site}-{node}`.
    #[must_use]
    pub fn mqtt_client_id(&self) -> String {
        match &self.mqtt.client_id {
            Some(id) => id.clone(),
            None => format!("ccedge-{}-{}", self.node.site, self.node.id),
        }
    }

    /// The media plane threads to run: `rtp.media_threads`, or one per CPU core (at most 8)
    /// when it is 0.
    #[must_use]
    pub fn media_threads(&self) -> usize {
        match self.rtp.media_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .min(8),
            n => usize::from(n),
        }
    }

    /// The core IVR settings these keys select (everything else keeps the core's defaults).
    #[must_use]
    pub fn ivr_core(&self) -> shared::ivr::Config {
        let retries_plus_one = self.ivr.max_retries.saturating_add(1);
        shared::ivr::Config {
            transfer_available: self.ivr.transfer_uri.is_some(),
            offer_callback_default: self.ivr.offer_callback_default,
            max_no_input: retries_plus_one,
            max_invalid: retries_plus_one,
            no_input_timeout: Duration::from_millis(u64::from(self.ivr.no_input_timeout_ms)),
            country_code: self.ivr.country_code,
            booking_timeout: Duration::from_millis(u64::from(self.ivr.booking_timeout_ms)),
            offer_windows: !self.callbacks.hours.is_empty(),
            languages: u8::try_from(self.ivr.languages.len().max(1)).unwrap_or(1),
            ..shared::ivr::Config::default()
        }
    }

    /// The node's languages (`ivr.languages`, `ivr.language_by_dialled`) for the core.
    /// Entries the validation would refuse are left out.
    #[must_use]
    pub fn languages_core(&self) -> shared::node::Languages {
        let mut out = shared::node::Languages::default();
        out.tags.clear();
        for tag in &self.ivr.languages {
            if let Ok(t) = shared::announce::Language::try_from(tag.as_str()) {
                let _ = out.tags.push(t);
            }
        }
        if out.tags.is_empty() {
            out = shared::node::Languages::default();
        }
        for (number, tag) in &self.ivr.language_by_dialled {
            let l = self.ivr.languages.iter().position(|t| t == tag);
            let l = l.and_then(|l| u8::try_from(l).ok());
            if let (Ok(n), Some(l)) = (shared::number::PhoneNumber::parse(number), l) {
                let _ = out.by_dialled.push((n, l));
            }
        }
        out
    }

    /// The core callback-queue settings.
    #[must_use]
    pub fn callbacks_core(&self) -> shared::callback::Config {
        shared::callback::Config {
            dedup_window: Duration::from_secs(u64::from(self.callbacks.dedupe_window_s)),
            max_age: Duration::from_secs(u64::from(self.callbacks.max_age_s)),
        }
    }

    /// The opening hours `callbacks.hours` and `callbacks.holidays` select.
    ///
    /// # Errors
    /// The key and what is wrong with it (validation reports the same).
    pub fn callback_hours(&self) -> Result<shared::callback::window::Hours, ConfigError> {
        use shared::callback::window::{parse_date, Hours, Span};
        let mut h = Hours::always();
        for s in &self.callbacks.hours {
            let span = Span::parse(s)
                .map_err(|e| ConfigError::new("callbacks.hours", format!("`{s}`: {e}")))?;
            h.add_span(span)
                .map_err(|e| ConfigError::new("callbacks.hours", e.to_string()))?;
        }
        for d in &self.callbacks.holidays {
            let day = parse_date(d)
                .map_err(|e| ConfigError::new("callbacks.holidays", format!("`{d}`: {e}")))?;
            h.add_holiday(day)
                .map_err(|e| ConfigError::new("callbacks.holidays", e.to_string()))?;
        }
        Ok(h)
    }

    /// The time zone `callbacks.timezone` names.
    ///
    /// # Errors
    /// When the zone is unknown.
    pub fn callback_zone(&self) -> Result<jiff::tz::TimeZone, ConfigError> {
        jiff::tz::TimeZone::get(&self.callbacks.timezone).map_err(|_| {
            ConfigError::new(
                "callbacks.timezone",
                format!(
                    "`{}` is not a known IANA time zone (e.g. `Europe/Berlin`, `America/New_York`, `UTC`)",
                    self.callbacks.timezone
                ),
            )
        })
    }

    /// The configuration with derived defaults written out (`control.socket`,
    /// `mqtt.client_id`): what the agent will actually use.
    #[must_use]
    pub fn effective(&self) -> Config {
        let mut c = self.clone();
        c.control.socket = Some(self.control_socket());
        c.mqtt.client_id = Some(self.mqtt_client_id());
        c
    }

    /// The effective configuration as TOML, secrets shown as `"<redacted>"` and unset
    /// optional keys as comments. What `ccedge config check` prints.
    #[must_use]
    pub fn to_toml_redacted(&self) -> String {
        render::to_toml(&self.effective())
    }
}

/// The default `node.id`: the host name (from the kernel, else `/etc/hostname`, else
/// `ccedge`) up to its first `.`, sanitised to `[A-Za-z0-9_-]`.
#[must_use]
pub fn default_node_id() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    sanitize_node_id(&host)
}

/// `raw` turned into a valid `node.id`: first DNS label, other characters replaced by `-`,
/// cut to [`NODE_ID_MAX`]; `ccedge` when nothing is left.
#[must_use]
pub fn sanitize_node_id(raw: &str) -> String {
    let label = raw.trim().split('.').next().unwrap_or_default();
    let id: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(NODE_ID_MAX)
        .collect();
    if id.is_empty() {
        "ccedge".to_owned()
    } else {
        id
    }
}

/// A configuration problem: which key, where its value came from, and what is wrong.
///
/// Displays as `config error in /etc/ccedge/ccedge.toml: sip.allow[1]: `10.0.0.300/8` is not
/// a CIDR (expected e.g. 192.0.2.0/24)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key (`sip.allow`, `sip.allow[2]`, an unknown `sip.listen_port` or section
    /// `sipp`); empty when the problem is not one key's (the file is unreadable or not TOML).
    pub key: String,
    /// The configuration file, when one was loaded and the value did not come from the
    /// environment.
    pub file: Option<PathBuf>,
    /// The environment variable that set the key, when it did.
    pub env_var: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`, not yet attributed to a file or variable.
    #[must_use]
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            file: None,
            env_var: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("config error")?;
        if let Some(var) = &self.env_var {
            write!(f, " in environment variable {var}")?;
        } else if let Some(file) = &self.file {
            write!(f, " in {}", file.display())?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl core::error::Error for ConfigError {}

/// Loads the configuration: defaults, then `path` (when given), then `CCEDGE__…` variables
/// from the process environment; then validates it.
///
/// # Errors
/// A [`ConfigError`] naming the key when the file is missing or unreadable, is not TOML, has
/// an unknown key or a value of the wrong type, or fails [`Config::validate`].
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let env = source::process_env()?;
    load_from(path, &env)
}

/// [`load`] with an explicit environment (`(name, value)` pairs; names without the
/// `CCEDGE__` prefix are ignored), for tests and for callers that filter the environment.
///
/// # Errors
/// As [`load`].
pub fn load_from(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let overrides = source::EnvOverrides::new(env);
    let attribute = |mut e: ConfigError| {
        e.env_var = overrides.var_for(&e.key);
        if e.env_var.is_none() {
            e.file = path.map(Path::to_path_buf);
        }
        e
    };
    let config = source::build(path, &overrides).map_err(attribute)?;
    config.validate().map_err(attribute)?;
    Ok(config)
}
