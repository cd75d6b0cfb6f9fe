//! The simulated CRM (`firmware-sim crm`): what the contact centre's CRM does on the MQTT
//! topics of `deploy/asyncapi.yaml`, over a real broker.
//!
//! * [`announce`] publishes announcement audio (retained on `P/audio/{sha256}`) and the
//!   Announcement document (retained on `P/announcements/{id}`), or withdraws one.
//! * [`watch`] subscribes to every node's events, callback requests and status, checks the
//!   event stream ([`watch::Tracker`]: missing `seq`, duplicate `event_id`), acknowledges the
//!   contiguous prefix on `…/events/ack`, asks for missing ranges on `…/events/replay` and
//!   accepts callbacks on `…/callbacks/{id}/state`.
//!
//! Both are library functions so `firmware-sim demo` and the tests use the same code as the
//! command line. The MQTT client is rumqttc (MQTT 3.1.1), QoS 1 everywhere.

pub mod announce;
pub mod cli;
pub mod watch;

use core::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edge::config::MqttUrl;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

/// Largest packet the CRM sends or accepts (announcement audio can be megabytes).
pub const MAX_PACKET_BYTES: usize = 64 << 20;

/// Why a CRM action failed.
#[derive(Debug)]
pub enum CrmError {
    /// A command-line value is not usable (the message names it).
    Invalid(String),
    /// The WAV file cannot be read or is not audio a node can play.
    Audio(String),
    /// The broker refused or dropped the connection.
    Mqtt(String),
    /// The broker did not acknowledge in time.
    Timeout(&'static str),
}

impl fmt::Display for CrmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrmError::Invalid(m) => write!(f, "{m}"),
            CrmError::Audio(m) => write!(f, "audio: {m}"),
            CrmError::Mqtt(m) => write!(f, "broker: {m}"),
            CrmError::Timeout(what) => write!(f, "broker: timed out waiting for {what}"),
        }
    }
}

impl std::error::Error for CrmError {}

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub url: MqttUrl,
    /// The MQTT client id.
    pub client_id: String,
    /// User name and password, when the broker wants them.
    pub credentials: Option<(String, String)>,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// TLS trust and client certificate for `mqtts://` (`None`: the system's roots, no
    /// client certificate).
    pub tls: Option<TlsFiles>,
}

/// The PEM files `--ca-file`, `--cert-file` and `--key-file` named, read.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA bundle that signed the broker's certificate.
    pub ca: Vec<u8>,
    /// The client certificate chain and its private key (`None`: no client certificate).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Where the system CA bundle usually is, after `$SSL_CERT_FILE` (as the agent looks).
const SYSTEM_CA_FILES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

fn read_pem(option: &str, path: &Path) -> Result<Vec<u8>, CrmError> {
    match std::fs::read(path) {
        Ok(b) if !b.is_empty() => Ok(b),
        Ok(_) => Err(CrmError::Invalid(format!(
            "{option} `{}` is empty",
            path.display()
        ))),
        Err(e) => Err(CrmError::Invalid(format!(
            "{option} `{}` cannot be read: {e}",
            path.display()
        ))),
    }
}

impl BrokerConfig {
    /// Parses `url` (as `mqtt.url` is parsed by the agent) with a client id and defaults.
    ///
    /// # Errors
    /// [`CrmError::Invalid`] when the URL is not a broker URL.
    pub fn parse(url: &str, client_id: &str) -> Result<BrokerConfig, CrmError> {
        let url: MqttUrl = url
            .parse()
            .map_err(|e: edge::config::MqttUrlError| CrmError::Invalid(format!("--broker: {e}")))?;
        Ok(BrokerConfig {
            url,
            client_id: client_id.to_owned(),
            credentials: None,
            keep_alive: Duration::from_secs(10),
            tls: None,
        })
    }

    /// Takes `--ca-file`, `--cert-file` and `--key-file` (as the agent's `mqtt.ca_file`,
    /// `mqtt.cert_file`, `mqtt.key_file`): only with `mqtts://`, the certificate and key
    /// together; without a CA file the system bundle is the trust.
    ///
    /// # Errors
    /// [`CrmError::Invalid`] naming the option when a file cannot be read or the options do
    /// not fit together.
    pub fn set_tls_files(
        &mut self,
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<(), CrmError> {
        if ca.is_none() && cert.is_none() && key.is_none() {
            return Ok(());
        }
        if !self.url.tls() {
            return Err(CrmError::Invalid(
                "--ca-file, --cert-file and --key-file need an mqtts:// broker".into(),
            ));
        }
        let client = match (cert, key) {
            (Some(c), Some(k)) => Some((read_pem("--cert-file", c)?, read_pem("--key-file", k)?)),
            (None, None) => None,
            _ => {
                return Err(CrmError::Invalid(
                    "--cert-file and --key-file go together".into(),
                ))
            }
        };
        let ca = match ca {
            Some(p) => read_pem("--ca-file", p)?,
            None => std::env::var_os("SSL_CERT_FILE")
                .map(PathBuf::from)
                .into_iter()
                .chain(SYSTEM_CA_FILES.iter().map(PathBuf::from))
                .find_map(|p| std::fs::read(p).ok().filter(|b| !b.is_empty()))
                .ok_or_else(|| {
                    CrmError::Invalid(
                        "--ca-file is not given and no system CA bundle was found".into(),
                    )
                })?,
        };
        self.tls = Some(TlsFiles { ca, client });
        Ok(())
    }

    /// The rumqttc options: clean session, large packets, TLS with the system's roots for
    /// `mqtts://`.
    #[must_use]
    pub fn options(&self) -> MqttOptions {
        let mut o = MqttOptions::new(&self.client_id, self.url.host(), self.url.port());
        o.set_keep_alive(self.keep_alive);
        o.set_clean_session(true);
        o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        o.set_inflight(100);
        o.set_request_channel_capacity(4096);
        if let Some((u, p)) = &self.credentials {
            o.set_credentials(u, p);
        }
        if self.url.tls() {
            o.set_transport(match &self.tls {
                Some(t) => Transport::Tls(TlsConfiguration::Simple {
                    ca: t.ca.clone(),
                    alpn: None,
                    client_auth: t.client.clone(),
                }),
                None => Transport::tls_with_default_config(),
            });
        }
        o
    }
}

/// A client id unique to this process and call: `{tag}-{pid}-{n}`.
#[must_use]
pub fn unique_client_id(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The topic prefix without a trailing slash.
#[must_use]
pub fn normalize_prefix(prefix: &str) -> String {
    prefix.trim_end_matches('/').to_owned()
}

/// Wall-clock now as RFC 3339 with milliseconds.
#[must_use]
pub fn now_rfc3339() -> String {
    let mut s = String::new();
    let _ = edge::clock::wall_now().write_rfc3339(&mut s);
    s
}
