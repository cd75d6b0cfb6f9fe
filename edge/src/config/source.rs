//! Reading the sources with the `config` crate, and turning its errors into [`ConfigError`]s
//! that name the key.

use core::net::{IpAddr, SocketAddr};
use std::path::Path;

use config::{File, FileFormat, Map, Source, Value, ValueKind};
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::{Config, ConfigError, ENV_PREFIX};

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] = &["sip.allow", "ivr.languages"];

/// The `CCEDGE__` variables of the process environment.
pub(super) fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Ok(name) = name.into_string() else {
            continue;
        };
        if !has_prefix(&name) {
            continue;
        }
        match value.into_string() {
            Ok(value) => out.push((name, value)),
            Err(_) => {
                let mut e = ConfigError::new(key_of(&name), "the value is not valid UTF-8");
                e.env_var = Some(name);
                return Err(e);
            }
        }
    }
    Ok(out)
}

fn has_prefix(name: &str) -> bool {
    name.get(..ENV_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
}

/// `CCEDGE__MQTT__CA_FILE` → `mqtt.ca_file`.
fn key_of(name: &str) -> String {
    name.get(ENV_PREFIX.len()..)
        .unwrap_or_default()
        .to_ascii_lowercase()
        .replace("__", ".")
}

/// The environment overrides as a `config` source. Unlike `config::Environment` with
/// `try_parsing`, values stay strings (the deserializer converts them to the key's type), so a
/// password `007` or a node id `1e3` is not turned into a number and back.
#[derive(Debug, Clone)]
pub(super) struct EnvOverrides {
    /// `(variable name, key, value)`, non-empty values only.
    vars: Vec<(String, String, String)>,
}

impl EnvOverrides {
    pub(super) fn new(env: &[(String, String)]) -> EnvOverrides {
        let vars = env
            .iter()
            .filter(|(name, value)| has_prefix(name) && !value.is_empty())
            .map(|(name, value)| (name.clone(), key_of(name), value.clone()))
            .collect();
        EnvOverrides { vars }
    }

    /// The variable that set `key` (`sip.allow[1]` → `CCEDGE__SIP__ALLOW`), a key below it
    /// (`sipp` → `CCEDGE__SIPP__X`) or a section above it.
    pub(super) fn var_for(&self, key: &str) -> Option<String> {
        if key.is_empty() {
            return None;
        }
        let base = key.split('[').next().unwrap_or(key);
        let below = |outer: &str, inner: &str| {
            inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('.'))
        };
        self.vars
            .iter()
            .rev()
            .find(|(_, k, _)| k == base || below(base, k) || below(k, base))
            .map(|(name, _, _)| name.clone())
    }
}

impl Source for EnvOverrides {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        let mut m = Map::new();
        for (name, key, value) in &self.vars {
            let origin = format!("environment variable {name}");
            let kind = if LIST_KEYS.contains(&key.as_str()) {
                ValueKind::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Value::new(Some(&origin), s))
                        .collect(),
                )
            } else {
                ValueKind::String(value.clone())
            };
            m.insert(key.clone(), Value::new(Some(&origin), kind));
        }
        Ok(m)
    }
}

/// Reads and deserializes (not yet validated) the configuration.
pub(super) fn build(path: Option<&Path>, env: &EnvOverrides) -> Result<Config, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = path {
        // Check first, so a missing file says why in the operator's words.
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(ConfigError::new("", "not a regular file")),
            Err(e) => return Err(ConfigError::new("", format!("cannot read the file: {e}"))),
        }
        if let Err(e) = std::fs::File::open(path) {
            return Err(ConfigError::new("", format!("cannot read the file: {e}")));
        }
        builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
    }
    let raw = builder
        .add_source(env.clone())
        .build()
        .map_err(convert_error)?;
    raw.try_deserialize::<Config>().map_err(convert_error)
}

/// A `config` crate error as a [`ConfigError`] with the full key.
pub(super) fn convert_error(e: config::ConfigError) -> ConfigError {
    let (key, message) = split_error(e);
    ConfigError::new(key, message)
}

fn join_key(outer: String, inner: String) -> String {
    if outer.is_empty() {
        inner
    } else if inner.is_empty() {
        outer
    } else if inner.starts_with('[') {
        outer + &inner
    } else {
        format!("{outer}.{inner}")
    }
}

fn split_error(e: config::ConfigError) -> (String, String) {
    match e {
        config::ConfigError::Type {
            unexpected,
            expected,
            key,
            ..
        } => (
            key.unwrap_or_default(),
            format!("wrong type: found {unexpected}, expected {expected}"),
        ),
        config::ConfigError::At { error, key, .. } => {
            let (inner, message) = split_error(*error);
            (join_key(key.unwrap_or_default(), inner), message)
        }
        config::ConfigError::Message(m) => unknown_field(&m).unwrap_or_else(|| {
            let m = match m.strip_prefix("invalid type: ") {
                Some(rest) => format!("wrong type: found {rest}"),
                None => m,
            };
            (String::new(), m)
        }),
        config::ConfigError::NotFound(key) => (key, "missing".to_owned()),
        config::ConfigError::FileParse { cause, .. } => {
            (String::new(), format!("not valid TOML: {cause}"))
        }
        other => (String::new(), other.to_string()),
    }
}

/// serde's "unknown field `x`, expected one of …" as the key `x` and a message.
fn unknown_field(m: &str) -> Option<(String, String)> {
    let rest = m.strip_prefix("unknown field `")?;
    let (name, tail) = rest.split_once('`')?;
    let tail = tail.trim_start_matches(',').trim();
    let message = if tail.is_empty() {
        "unknown key".to_owned()
    } else {
        format!(
            "unknown key ({})",
            tail.replace("there are no fields", "none expected")
        )
    };
    Some((name.to_owned(), message))
}

/// `sip.listen`, with a message that shows the expected form.
pub(super) fn de_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.trim().parse().map_err(|_| {
        de::Error::custom(format!(
            "`{s}` is not an address and port (expected e.g. 127.0.0.1:5060, 0.0.0.0:5060 or [::]:5060)"
        ))
    })
}

/// An optional address and port (`sip.tls_listen`), with a message that shows the form.
pub(super) fn de_opt_socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| {
        s.trim().parse().map_err(|_| {
            de::Error::custom(format!(
                "`{s}` is not an address and port (expected e.g. 0.0.0.0:5061 or [::]:5061)"
            ))
        })
    })
    .transpose()
}

/// `metrics.listen`, with a message that shows the form.
pub(super) fn de_opt_metrics_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| {
        s.trim().parse().map_err(|_| {
            de::Error::custom(format!(
                "`{s}` is not an address and port (expected e.g. 127.0.0.1:9464 or [::]:9464)"
            ))
        })
    })
    .transpose()
}

/// An optional IP address, with a message that shows the expected form.
pub(super) fn de_opt_ip<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| {
        s.trim().parse().map_err(|_| {
            de::Error::custom(format!(
                "`{s}` is not an IP address (expected e.g. 192.0.2.10 or 2001:db8::10)"
            ))
        })
    })
    .transpose()
}
