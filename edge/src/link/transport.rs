//! rumqttc options from the configuration: session, Last Will, packet limits, credentials
//! and TLS.
//!
//! ## Incoming size limit
//!
//! rumqttc drops the *connection* when an incoming packet is larger than its limit. A
//! retained message that large would then arrive again on every reconnect (retained
//! messages are sent on each subscription): an endless reconnect loop. So the client's limit
//! is set well above what the node accepts ([`incoming_limit`]: twice the larger of
//! `mqtt.max_payload_bytes` and `announcements.max_audio_bytes`, plus 64 KiB for the topic
//! and header) and the link rejects oversized messages itself, with a reason and a counter.
//!
//! Remaining risk: a retained message larger than even that limit still makes the
//! connection fail on every attempt (the log names the error, `LinkStatus.last_error` shows
//! it, reconnects back off to 30 s). The broker should cap messages too (Mosquitto:
//! `message_size_limit`).
//!
//! ## TLS
//!
//! `mqtts://` uses rustls through rumqttc. The CA bundle is `mqtt.ca_file`, or else the
//! system bundle: the first readable one of `$SSL_CERT_FILE` and the usual distribution
//! paths ([`SYSTEM_CA_FILES`]). A client certificate is presented when both `mqtt.cert_file`
//! and `mqtt.key_file` are set. A file that cannot be read is a [`TransportError`] naming the
//! key and the path; the link reports it and retries with backoff (the file may appear).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, QoS, TlsConfiguration, Transport};

use super::LinkConfig;

/// Most QoS 1 publishes rumqttc keeps awaiting PUBACK (its packet id space).
pub(crate) const INFLIGHT: u16 = 128;
/// Largest packet the node sends.
pub(crate) const MAX_OUTGOING: usize = 8 * 1024 * 1024;
/// Where the system CA bundle usually is, after `$SSL_CERT_FILE`.
pub(crate) const SYSTEM_CA_FILES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Why no connection options could be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// A TLS file could not be read.
    #[error("cannot read {key} `{}`: {source}", path.display())]
    File {
        /// The configuration key.
        key: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `mqtts://` without `mqtt.ca_file`, and no system bundle found.
    #[error("mqtt.ca_file is not set and no system CA bundle was found (looked in $SSL_CERT_FILE, {})", SYSTEM_CA_FILES.join(", "))]
    NoCa,
}

/// rumqttc's incoming packet limit (see the module docs).
pub(crate) fn incoming_limit(max_payload_bytes: u64, max_audio_bytes: u64) -> usize {
    let biggest = max_payload_bytes.max(max_audio_bytes);
    let limit = biggest.saturating_mul(2).saturating_add(64 * 1024);
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// The options for one connection attempt.
///
/// # Errors
/// [`TransportError`] when a TLS file cannot be read.
pub(crate) fn options(
    cfg: &LinkConfig,
    will_topic: String,
    will_payload: Vec<u8>,
) -> Result<MqttOptions, TransportError> {
    let m = &cfg.mqtt;
    let client_id = if cfg.client_id.is_empty() {
        format!("ccedge-{}-{}", cfg.site, cfg.node_id)
    } else {
        cfg.client_id.clone()
    };
    let mut o = MqttOptions::new(client_id, m.url.host(), m.url.port());
    o.set_keep_alive(Duration::from_secs(u64::from(m.keepalive_s)));
    o.set_clean_session(false);
    o.set_last_will(LastWill::new(
        will_topic,
        will_payload,
        QoS::AtLeastOnce,
        true,
    ));
    o.set_max_packet_size(
        incoming_limit(u64::from(m.max_payload_bytes), cfg.max_audio_bytes),
        MAX_OUTGOING,
    );
    o.set_inflight(INFLIGHT);
    if let Some(user) = &m.username {
        let password = m.password.as_ref().map_or("", |p| p.expose());
        o.set_credentials(user.clone(), password.to_owned());
    }
    if m.url.tls() {
        o.set_transport(Transport::Tls(tls(m)?));
    }
    Ok(o)
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::File {
        key,
        path: path.to_owned(),
        source,
    })
}

fn tls(m: &crate::config::Mqtt) -> Result<TlsConfiguration, TransportError> {
    let ca = match &m.ca_file {
        Some(p) => read("mqtt.ca_file", p)?,
        None => system_ca()?,
    };
    let client_auth = match (&m.cert_file, &m.key_file) {
        (Some(c), Some(k)) => Some((read("mqtt.cert_file", c)?, read("mqtt.key_file", k)?)),
        _ => None,
    };
    Ok(TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth,
    })
}

fn system_ca() -> Result<Vec<u8>, TransportError> {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    env.into_iter()
        .chain(SYSTEM_CA_FILES.iter().map(PathBuf::from))
        .find_map(|p| std::fs::read(p).ok().filter(|b| !b.is_empty()))
        .ok_or(TransportError::NoCa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_limit_is_well_above_what_is_accepted() {
        assert_eq!(incoming_limit(100, 50), 200 + 65536);
        assert!(incoming_limit(16 << 20, 16 << 20) > 32 << 20);
        assert_eq!(incoming_limit(u64::MAX, 0), usize::MAX);
    }

    #[test]
    fn unreadable_tls_files_name_the_key_and_path() {
        let mut m = crate::config::Mqtt {
            url: "mqtts://broker.example:8883".parse().unwrap(),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..crate::config::Mqtt::default()
        };
        let e = tls(&m).unwrap_err().to_string();
        assert!(
            e.contains("mqtt.ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        m.ca_file = Some("/etc/hostname".into());
        m.cert_file = Some("/nonexistent/cert.pem".into());
        m.key_file = Some("/nonexistent/key.pem".into());
        let e = tls(&m).unwrap_err().to_string();
        assert!(e.contains("mqtt.cert_file"), "{e}");
    }
}
