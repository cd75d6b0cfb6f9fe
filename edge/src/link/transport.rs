//! rumqttc options from the configuration: session, Last Will, packet limits, credentials
//! and TLS.
//!
//! ## Incoming size limit
//!
//! rumqttc checks an incoming packet's length from its fixed header and, when it is above
//! the client's limit, fails the *connection* without reading the packet: it cannot skip
//! one. The broker then hands the same message over again on the next connection (as an
//! unacknowledged QoS 1 message of the persistent session, or as a retained message on
//! every subscription), and a fixed limit would turn one oversized message into an endless
//! reconnect loop with the node off the CRM link.
//!
//! So the limit adapts. Normally it is [`incoming_limit`]: twice the larger of
//! `mqtt.max_payload_bytes` and `announcements.max_audio_bytes`, plus 64 KiB for the topic
//! and header, well above anything the node accepts. When a connection fails because a
//! packet was larger, the link raises the limit for its next connections to that size
//! ([`stretched_limit`]), up to [`OVERSIZE_CEILING`]: the next connection reads the message
//! whole, the link discards it (logged, counted in `LinkStatus::oversized`) and rumqttc
//! acknowledges it, so the session carries on. This costs the message's size in memory while
//! it is read, once per connection for a retained one, which is why the limit is raised
//! only after such a message was seen, and never above the ceiling.
//!
//! The alternatives were worse: a fixed limit of the ceiling would let any message make the
//! node hold that much memory from the first connection on; consuming and dropping the
//! payload bytes in the transport needs a byte stream between the socket and rumqttc's
//! decoder, which rumqttc only allows through a local proxy socket that would also have to
//! terminate TLS itself.
//!
//! Remaining risk: a message above the ceiling still makes every connection fail (the log
//! and `LinkStatus.last_error` say so; reconnects back off to 30 s, since the backoff only
//! resets after a connection has lived). The broker should cap messages too (Mosquitto:
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

/// The most the incoming limit is raised to for an oversized message (see the module docs).
pub(crate) const OVERSIZE_CEILING: usize = 64 * 1024 * 1024;

/// rumqttc's incoming packet limit (see the module docs).
pub(crate) fn incoming_limit(max_payload_bytes: u64, max_audio_bytes: u64) -> usize {
    let biggest = max_payload_bytes.max(max_audio_bytes);
    let limit = biggest.saturating_mul(2).saturating_add(64 * 1024);
    usize::try_from(limit).unwrap_or(usize::MAX)
}

/// The incoming limit that lets the next connection read a packet of `seen` bytes (its
/// remaining length), rounded up to a whole MiB; `None` when that is above
/// [`OVERSIZE_CEILING`] (and above `current`, which is never lowered).
pub(crate) fn stretched_limit(current: usize, seen: usize) -> Option<usize> {
    const MIB: usize = 1024 * 1024;
    if seen <= current {
        return Some(current);
    }
    let rounded = seen.div_ceil(MIB).saturating_mul(MIB);
    (rounded <= OVERSIZE_CEILING.max(current)).then_some(rounded.max(current))
}

/// The options for one connection attempt; `max_incoming` is the incoming packet limit
/// ([`incoming_limit`], or raised by [`stretched_limit`]).
///
/// # Errors
/// [`TransportError`] when a TLS file cannot be read.
pub(crate) fn options(
    cfg: &LinkConfig,
    will_topic: String,
    will_payload: Vec<u8>,
    max_incoming: usize,
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
    o.set_max_packet_size(max_incoming, MAX_OUTGOING);
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
    fn the_limit_stretches_to_an_oversized_packet_up_to_the_ceiling() {
        const MIB: usize = 1024 * 1024;
        let base = incoming_limit(16 << 20, 16 << 20);
        // 34 MB: read whole on the next connection.
        assert_eq!(stretched_limit(base, 34_000_000), Some(33 * MIB));
        assert!(stretched_limit(base, 34_000_000).unwrap() >= 34_000_000);
        // Never lowered.
        assert_eq!(stretched_limit(base, 100), Some(base));
        assert_eq!(stretched_limit(40 * MIB, 34_000_000), Some(40 * MIB));
        // Exactly the ceiling still fits; one byte more does not.
        assert_eq!(
            stretched_limit(base, OVERSIZE_CEILING),
            Some(OVERSIZE_CEILING)
        );
        assert_eq!(stretched_limit(base, OVERSIZE_CEILING + 1), None);
        // A configured limit above the ceiling is its own ceiling.
        assert_eq!(stretched_limit(200 * MIB, 150 * MIB), Some(200 * MIB));
        assert_eq!(stretched_limit(200 * MIB, 201 * MIB), None);
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
