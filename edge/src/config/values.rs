//! Typed configuration values that parse from strings: the broker URL, secrets, the
//! announcement signing key and the small keyword enums.

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// Serde through `FromStr`/`Display`, so TOML, the environment and `config check` all use the
/// same spelling and the same error messages.
macro_rules! serde_via_str {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(de::Error::custom)
            }
        }
    };
}

/// A keyword value (`log.level = "info"`): an enum with a fixed spelling per variant.
macro_rules! keyword_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The configuration spelling.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = KeywordError;
            fn from_str(s: &str) -> Result<Self, KeywordError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(KeywordError {
                        input: s.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }

        serde_via_str!($name);
    };
}

/// A keyword that is not one of the accepted spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not one of: {}", expected.join(", "))]
pub struct KeywordError {
    /// What was given.
    pub input: String,
    /// What is accepted.
    pub expected: &'static [&'static str],
}

keyword_enum! {
    /// `sip.deny_action`: what a request from outside `sip.allow` gets.
    DenyAction {
        /// Nothing: the datagram is dropped unparsed (scanners learn nothing).
        Silence = "silence",
        /// A `403 Forbidden` (helps debugging a gateway that is missing from the list).
        Forbidden = "403",
    }
}

keyword_enum! {
    /// `log.level`: the most verbose level written.
    LogLevel {
        /// Errors only.
        Error = "error",
        /// Warnings and errors.
        Warn = "warn",
        /// The default: lifecycle, calls, broker state.
        Info = "info",
        /// Per-message detail.
        Debug = "debug",
        /// Everything.
        Trace = "trace",
    }
}

keyword_enum! {
    /// `log.format`: how log lines are written to stderr.
    LogFormat {
        /// Human-readable lines (journald adds the timestamp).
        Text = "text",
        /// One JSON object per line.
        Json = "json",
    }
}

/// `mqtt.url`: `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (TLS,
/// default port 8883). Host is a DNS name, an IPv4 address or a bracketed IPv6 address.
/// Credentials, paths and queries are refused: credentials go in `mqtt.username` and
/// `mqtt.password`, which are never printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    tls: bool,
    host: String,
    port: u16,
}

/// Why a string is not an [`MqttUrl`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a broker URL: {reason} (expected e.g. mqtt://127.0.0.1:1883 or mqtts://broker.example.com:8883)")]
pub struct MqttUrlError {
    /// The text that was parsed (with any userinfo cut out).
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl MqttUrl {
    /// Whether the connection uses TLS (`mqtts://`).
    #[must_use]
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The broker host: a DNS name or an IP address (without brackets).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The broker port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Default for MqttUrl {
    /// `mqtt://127.0.0.1:1883`.
    fn default() -> Self {
        MqttUrl {
            tls: false,
            host: "127.0.0.1".to_owned(),
            port: 1883,
        }
    }
}

fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl FromStr for MqttUrl {
    type Err = MqttUrlError;

    fn from_str(s: &str) -> Result<MqttUrl, MqttUrlError> {
        let err = |reason| MqttUrlError {
            // Never echo a password that was put in the URL by mistake.
            input: match (s.find("://"), s.rfind('@')) {
                (Some(i), Some(at)) if at > i => format!("{}://…@{}", &s[..i], &s[at + 1..]),
                _ => s.to_owned(),
            },
            reason,
        };
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| err("no scheme (mqtt:// or mqtts://)"))?;
        let tls = if scheme.eq_ignore_ascii_case("mqtt") {
            false
        } else if scheme.eq_ignore_ascii_case("mqtts") {
            true
        } else {
            return Err(err("the scheme must be mqtt:// or mqtts://"));
        };
        if rest.contains('@') {
            return Err(err(
                "credentials do not belong in the URL; use mqtt.username and mqtt.password",
            ));
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(err("a broker URL has no path or query"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| err("unclosed `[` around an IPv6 address"))?;
            let addr: core::net::Ipv6Addr = addr
                .parse()
                .map_err(|_| err("not an IPv6 address in `[…]`"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("expected `:port` after `]`"))?,
                ),
            };
            (addr.to_string(), port)
        } else {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if host.is_empty() {
                return Err(err("no host"));
            }
            let ok = host.parse::<IpAddr>().is_ok_and(|a| a.is_ipv4()) || is_dns_name(host);
            if !ok {
                return Err(err("the host is not a DNS name or an IP address"));
            }
            (host.to_owned(), port)
        };
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => {
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(err("the port is not a number"));
                }
                match p.parse::<u16>() {
                    Ok(p) if p != 0 => p,
                    _ => return Err(err("the port must be 1..=65535")),
                }
            }
        };
        Ok(MqttUrl { tls, host, port })
    }
}

impl fmt::Display for MqttUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

serde_via_str!(MqttUrl);

/// A secret (`mqtt.password`). `Debug`, `Display` and `Serialize` all print `<redacted>`, so
/// logging or dumping the configuration never leaks it; [`Secret::expose`] gives the value to
/// the one place that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// What a [`Secret`] prints as.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    /// A secret holding `value`.
    #[must_use]
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself. Do not log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// `announcements.signing_key`: the CRM's Ed25519 public key (32 bytes), written in standard
/// base64 (padding optional). Only the length is checked here; the announcement module
/// verifies signatures with it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SigningKey(pub [u8; 32]);

/// Why a string is not a [`SigningKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningKeyError {
    /// Not base64.
    #[error("not base64: expected the CRM's 32-byte Ed25519 public key in standard base64 (44 characters)")]
    NotBase64,
    /// Decoded, but not 32 bytes.
    #[error("decodes to {0} bytes: expected the CRM's 32-byte Ed25519 public key in standard base64 (44 characters)")]
    WrongLength(usize),
}

impl FromStr for SigningKey {
    type Err = SigningKeyError;

    fn from_str(s: &str) -> Result<SigningKey, SigningKeyError> {
        let bytes = base64_decode(s.trim()).ok_or(SigningKeyError::NotBase64)?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SigningKeyError::WrongLength(bytes.len()))?;
        Ok(SigningKey(key))
    }
}

impl fmt::Display for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base64_encode(&self.0))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({self})")
    }
}

serde_via_str!(SigningKey);

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_value(c: u8) -> Option<u32> {
    B64.iter().position(|&b| b == c).map(|p| p as u32)
}

/// Standard base64 (RFC 4648 §4); `=` padding optional but, when present, correct.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    let pad = s.len() - body.len();
    if pad > 2 || (pad > 0 && !s.len().is_multiple_of(4)) || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.as_bytes().chunks(4) {
        let mut acc: u32 = 0;
        for &c in chunk {
            acc = (acc << 6) | b64_value(c)?;
        }
        match chunk.len() {
            4 => out.extend_from_slice(&acc.to_be_bytes()[1..]),
            3 => {
                // 18 bits: two bytes and two zero bits.
                if acc & 0b11 != 0 {
                    return None;
                }
                out.extend_from_slice(&(acc >> 2).to_be_bytes()[2..]);
            }
            2 => {
                // 12 bits: one byte and four zero bits.
                if acc & 0b1111 != 0 {
                    return None;
                }
                out.push((acc >> 4) as u8);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Standard base64 with padding.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
