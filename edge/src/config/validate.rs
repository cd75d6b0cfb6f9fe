//! [`Config::validate`]: ranges, formats, cross-key rules and the files the configuration
//! names.

use std::path::Path;

use shared::limits::{
    CALLBACK_QUEUE_CAPACITY, LANGUAGE_MAX, MAX_LANGUAGES, MAX_LANGUAGE_BY_DIALLED, SIP_URI_MAX,
    SITE_MAX,
};
use shared::number::PhoneNumber;

use crate::media::prompts::{Builtin, PromptKey};

use super::{Config, ConfigError, NODE_ID_MAX, SERVER_HEADER_MAX};

type Check = Result<(), ConfigError>;

fn fail(key: &str, message: impl Into<String>) -> Check {
    Err(ConfigError::new(key, message))
}

fn range<T: PartialOrd + core::fmt::Display + Copy>(key: &str, v: T, min: T, max: T) -> Check {
    if v < min || v > max {
        return fail(key, format!("{v} is out of range (allowed {min}..={max})"));
    }
    Ok(())
}

/// A `Server`/`User-Agent` value: RFC 3261 token characters and `/` (`product/version`), words
/// separated by single spaces; empty is allowed (no header).
fn server_header(key: &str, v: &str) -> Check {
    if v.len() > SERVER_HEADER_MAX {
        return fail(
            key,
            format!("is longer than {SERVER_HEADER_MAX} characters"),
        );
    }
    let token = |c: char| c.is_ascii_alphanumeric() || "-.!%*_+`'~/".contains(c);
    if let Some(c) = v.chars().find(|c| !(token(*c) || *c == ' ')) {
        return fail(
            key,
            format!(
                "`{}` contains {c:?}; only letters, digits, `- . ! % * _ + ` ' ~ /` and single spaces between words are allowed (an empty value omits the header)",
                v.escape_default()
            ),
        );
    }
    if v.starts_with(' ') || v.ends_with(' ') || v.contains("  ") {
        return fail(
            key,
            format!("`{v}` has a leading, trailing or double space"),
        );
    }
    Ok(())
}

fn ident(key: &str, v: &str, max: usize) -> Check {
    if v.is_empty() {
        return fail(key, "must not be empty");
    }
    if v.len() > max {
        return fail(key, format!("`{v}` is longer than {max} characters"));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return fail(
            key,
            format!("`{v}` contains {c:?}; only letters, digits, `_` and `-` are allowed (it is part of MQTT topics)"),
        );
    }
    Ok(())
}

/// A file named by `key` must exist, be a regular file and open for reading.
fn readable_file(key: &str, path: &Path) -> Check {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return fail(key, format!("`{shown}` is not a regular file")),
        Err(e) => return fail(key, format!("`{shown}` cannot be read: {e}")),
    }
    if let Err(e) = std::fs::File::open(path) {
        return fail(key, format!("`{shown}` cannot be read: {e}"));
    }
    Ok(())
}

fn no_controls(key: &str, v: &str) -> Check {
    if v.chars().any(char::is_control) {
        return fail(key, "contains control characters");
    }
    Ok(())
}

/// `mqtt.topic_prefix`: a valid topic name to put levels under.
fn topic_prefix(key: &str, p: &str) -> Check {
    if p.is_empty() {
        return fail(key, "must not be empty");
    }
    if p.len() > 256 {
        return fail(key, "is longer than 256 bytes");
    }
    if p.contains(['+', '#']) {
        return fail(
            key,
            format!("`{p}` contains an MQTT wildcard (`+` or `#`); a prefix is a plain topic"),
        );
    }
    if p.starts_with('/') || p.ends_with('/') {
        return fail(key, format!("`{p}` must not start or end with `/`"));
    }
    if p.split('/').any(str::is_empty) {
        return fail(key, format!("`{p}` has an empty level (`//`)"));
    }
    if p.starts_with('$') {
        return fail(
            key,
            format!("`{p}` starts with `$`, which brokers reserve ($SYS)"),
        );
    }
    no_controls(key, p)
}

/// `ivr.transfer_uri`: `sip:`/`sips:` with a host, or `tel:` with a number.
fn transfer_uri(key: &str, uri: &str) -> Check {
    let bad = |why: &str| {
        fail(
            key,
            format!("`{uri}` is not a transfer target: {why} (expected e.g. sip:agents@pbx.example.com or tel:+18005550100)"),
        )
    };
    if uri.len() > SIP_URI_MAX {
        return bad("too long");
    }
    if uri
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return bad("it contains spaces, control characters or angle brackets");
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return bad("no scheme");
    };
    match scheme.to_ascii_lowercase().as_str() {
        "sip" | "sips" => {
            let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            let host = hostport.split([';', '?']).next().unwrap_or_default();
            if host.is_empty() || host.starts_with(':') {
                return bad("no host");
            }
            Ok(())
        }
        "tel" => {
            let number = rest.split(';').next().unwrap_or_default();
            let digits = number.strip_prefix('+').unwrap_or(number);
            let ok = digits.bytes().any(|b| b.is_ascii_digit())
                && digits
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b"*#-.()".contains(&b));
            if ok {
                Ok(())
            } else {
                bad("a tel: URI needs a number")
            }
        }
        _ => bad("the scheme must be sip:, sips: or tel:"),
    }
}

impl Config {
    /// Checks every value and cross-key rule, and that the files the configuration names can
    /// be read. Returns the first problem found.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key (not yet attributed to a file; [`super::load`] does
    /// that).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_node()?;
        self.validate_sip()?;
        self.validate_rtp()?;
        self.validate_mqtt()?;
        self.validate_control()?;
        self.validate_ivr()?;
        self.validate_callbacks()?;
        self.validate_announcements()?;
        self.validate_metrics()
    }

    fn validate_metrics(&self) -> Check {
        let Some(addr) = self.metrics.listen else {
            return Ok(());
        };
        if addr.port() == 0 {
            return fail(
                "metrics.listen",
                format!("`{addr}` has port 0; a scraper needs a fixed port (e.g. 9464)"),
            );
        }
        if addr.ip().is_multicast() {
            return fail(
                "metrics.listen",
                "a multicast address cannot be listened on",
            );
        }
        // TCP ports the agent listens on itself.
        let taken = [
            self.sip.tcp.then_some(("sip.listen", self.sip.listen)),
            self.sip.tls_listen.map(|a| ("sip.tls_listen", a)),
        ];
        for (key, other) in taken.into_iter().flatten() {
            let overlap = other.ip() == addr.ip()
                || other.ip().is_unspecified()
                || addr.ip().is_unspecified();
            if other.port() == addr.port() && overlap {
                return fail(
                    "metrics.listen",
                    format!("`{addr}` is the TCP port of {key} (`{other}`)"),
                );
            }
        }
        Ok(())
    }

    fn validate_node(&self) -> Check {
        ident("node.id", &self.node.id, NODE_ID_MAX)?;
        ident("node.site", &self.node.site, SITE_MAX)?;
        if self.node.state_dir.as_os_str().is_empty() {
            return fail("node.state_dir", "must not be empty");
        }
        Ok(())
    }

    fn validate_sip(&self) -> Check {
        let sip = &self.sip;
        if sip.listen.ip().is_multicast() {
            return fail("sip.listen", "a multicast address cannot be listened on");
        }
        if sip.allow.0.len() > 1024 {
            return fail("sip.allow", "more than 1024 prefixes; aggregate them");
        }
        range(
            "sip.rate_limit_per_source",
            sip.rate_limit_per_source,
            1,
            100_000,
        )?;
        range("sip.max_calls", sip.max_calls, 1, 100_000)?;
        if let Some(ip) = sip.public_address {
            if ip.is_unspecified() || ip.is_multicast() {
                return fail(
                    "sip.public_address",
                    format!("`{ip}` cannot be reached by peers; give the address gateways use to reach this node"),
                );
            }
        }
        range("sip.t1_ms", sip.t1_ms, 50, 10_000)?;
        range("sip.tcp_idle_s", sip.tcp_idle_s, 10, 86_400)?;
        range(
            "sip.tcp_max_connections",
            sip.tcp_max_connections,
            1,
            65_535,
        )?;
        range("sip.tcp_max_per_source", sip.tcp_max_per_source, 1, 65_535)?;
        if sip.tls_listen.is_some() {
            if sip.tls_cert.is_none() {
                return fail("sip.tls_cert", "required when sip.tls_listen is set");
            }
            if sip.tls_key.is_none() {
                return fail("sip.tls_key", "required when sip.tls_listen is set");
            }
        }
        server_header("sip.server_header", &sip.server_header)?;
        range("sip.answer_delay_ms", sip.answer_delay_ms, 0, 30_000)
    }

    fn validate_rtp(&self) -> Check {
        let rtp = &self.rtp;
        if rtp.port_min < 1024 {
            return fail(
                "rtp.port_min",
                format!("{} is a privileged port; use 1024 or above", rtp.port_min),
            );
        }
        if rtp.port_max < rtp.port_min {
            return fail(
                "rtp.port_max",
                format!(
                    "{} is below rtp.port_min {} (the range is inverted)",
                    rtp.port_max, rtp.port_min
                ),
            );
        }
        if rtp.port_max == rtp.port_min {
            return fail(
                "rtp.port_max",
                format!(
                    "the range {}..={} holds one port; it needs at least 2",
                    rtp.port_min, rtp.port_max
                ),
            );
        }
        range("rtp.media_timeout_s", rtp.media_timeout_s, 0, 86_400)?;
        range(
            "rtp.max_pacer_load_percent",
            rtp.max_pacer_load_percent,
            0,
            100,
        )?;
        range("rtp.media_threads", rtp.media_threads, 0, 64)?;
        range("rtp.realtime_priority", rtp.realtime_priority, 0, 99)
    }

    fn validate_mqtt(&self) -> Check {
        let m = &self.mqtt;
        topic_prefix("mqtt.topic_prefix", &m.topic_prefix)?;
        if let Some(id) = &m.client_id {
            if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return fail(
                    "mqtt.client_id",
                    "must be 1 to 128 printable ASCII characters without spaces",
                );
            }
        }
        if let Some(user) = &m.username {
            if user.is_empty() {
                return fail("mqtt.username", "must not be empty when set");
            }
            no_controls("mqtt.username", user)?;
        }
        if m.password.is_some() && m.username.is_none() {
            return fail("mqtt.password", "is set but mqtt.username is not");
        }
        let files = [
            ("mqtt.ca_file", &m.ca_file),
            ("mqtt.cert_file", &m.cert_file),
            ("mqtt.key_file", &m.key_file),
        ];
        for (key, file) in files {
            if let Some(path) = file {
                if !m.url.tls() {
                    return fail(
                        key,
                        format!(
                            "is set but mqtt.url `{}` does not use TLS; use mqtts:// (or remove the TLS files)",
                            m.url
                        ),
                    );
                }
                readable_file(key, path)?;
            }
        }
        match (&m.cert_file, &m.key_file) {
            (Some(_), None) => {
                return fail("mqtt.key_file", "is required when mqtt.cert_file is set")
            }
            (None, Some(_)) => {
                return fail("mqtt.cert_file", "is required when mqtt.key_file is set")
            }
            _ => {}
        }
        range("mqtt.keepalive_s", m.keepalive_s, 5, 3_600)?;
        range("mqtt.outbox_capacity", m.outbox_capacity, 100, 10_000_000)?;
        range("mqtt.outbox_retention_h", m.outbox_retention_h, 0, 8_760)?;
        range("mqtt.status_interval_s", m.status_interval_s, 1, 3_600)?;
        range(
            "mqtt.max_payload_bytes",
            m.max_payload_bytes,
            1024,
            268_435_455,
        )
    }

    fn validate_control(&self) -> Check {
        let socket = self.control_socket();
        // sun_path holds 108 bytes including the terminating NUL.
        let len = socket.as_os_str().len();
        if len == 0 {
            return fail("control.socket", "must not be empty");
        }
        if len > 107 {
            let derived = if self.control.socket.is_none() {
                " (derived from node.state_dir; set control.socket to a shorter path)"
            } else {
                ""
            };
            return fail(
                "control.socket",
                format!(
                    "`{}` is {len} bytes; a Unix socket path holds at most 107{derived}",
                    socket.display()
                ),
            );
        }
        Ok(())
    }

    fn validate_ivr(&self) -> Check {
        let ivr = &self.ivr;
        if let Some(uri) = &ivr.transfer_uri {
            transfer_uri("ivr.transfer_uri", uri)?;
        }
        if let Some(dir) = &ivr.prompts_dir {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return fail(
                        "ivr.prompts_dir",
                        format!("`{}` is not a directory", dir.display()),
                    )
                }
                Err(e) => {
                    return fail(
                        "ivr.prompts_dir",
                        format!("`{}` cannot be read: {e}", dir.display()),
                    )
                }
            }
        }
        range(
            "ivr.no_input_timeout_ms",
            ivr.no_input_timeout_ms,
            1_000,
            60_000,
        )?;
        range("ivr.max_retries", ivr.max_retries, 0, 9)?;
        range(
            "ivr.booking_timeout_ms",
            ivr.booking_timeout_ms,
            500,
            60_000,
        )?;
        if let Some(cc) = ivr.country_code {
            range("ivr.country_code", cc, 1, 999)?;
        }
        self.validate_languages()?;
        if let Some(cmd) = &ivr.speech_command {
            if cmd.trim().is_empty() {
                return fail("ivr.speech_command", "must not be empty when set");
            }
            no_controls("ivr.speech_command", cmd)?;
        }
        Ok(())
    }

    fn validate_languages(&self) -> Check {
        let ivr = &self.ivr;
        let key = "ivr.languages";
        if ivr.languages.is_empty() {
            return fail(key, "must name at least one language (the default first)");
        }
        if ivr.languages.len() > MAX_LANGUAGES {
            return fail(
                key,
                format!(
                    "{} languages; at most {MAX_LANGUAGES} (their keys are *, 9, 8, 7)",
                    ivr.languages.len()
                ),
            );
        }
        for (i, tag) in ivr.languages.iter().enumerate() {
            if !language_tag_ok(tag) {
                return fail(
                    key,
                    format!(
                        "`{tag}` is not a lower-case language tag such as `en`, `es` or `pt-br` \
                         (at most {LANGUAGE_MAX} bytes)"
                    ),
                );
            }
            if ivr.languages[..i].contains(tag) {
                return fail(key, format!("`{tag}` is listed twice"));
            }
            if Builtin::from_tag(tag).is_some() {
                continue;
            }
            let builtins = Builtin::ALL
                .iter()
                .map(|b| b.tag())
                .collect::<Vec<_>>()
                .join(", ");
            let Some(dir) = &ivr.prompts_dir else {
                return fail(
                    key,
                    format!(
                        "`{tag}` has no built-in prompts (built in: {builtins}); set \
                         ivr.prompts_dir and record every prompt in its `{tag}/` directory"
                    ),
                );
            };
            let sub = dir.join(tag);
            let missing: Vec<&str> = PromptKey::ALL
                .iter()
                .map(|k| k.file_name())
                .filter(|f| !sub.join(f).is_file())
                .collect();
            if !missing.is_empty() {
                return fail(
                    key,
                    format!(
                        "`{tag}` has no built-in prompts (built in: {builtins}) and `{}` lacks \
                         {} of them: {}",
                        sub.display(),
                        missing.len(),
                        missing.join(", ")
                    ),
                );
            }
        }
        let key = "ivr.language_by_dialled";
        if ivr.language_by_dialled.len() > MAX_LANGUAGE_BY_DIALLED {
            return fail(
                key,
                format!(
                    "{} numbers; at most {MAX_LANGUAGE_BY_DIALLED}",
                    ivr.language_by_dialled.len()
                ),
            );
        }
        for (number, tag) in &ivr.language_by_dialled {
            if !number.starts_with('+') || PhoneNumber::parse(number).is_err() {
                return fail(
                    key,
                    format!("`{number}` is not an E.164 number such as `+18005550199`"),
                );
            }
            if !ivr.languages.contains(tag) {
                return fail(
                    key,
                    format!(
                        "`{number}` = `{tag}`: `{tag}` is not one of ivr.languages ({})",
                        ivr.languages.join(", ")
                    ),
                );
            }
        }
        Ok(())
    }

    fn validate_callbacks(&self) -> Check {
        let c = &self.callbacks;
        let max = u16::try_from(CALLBACK_QUEUE_CAPACITY).unwrap_or(u16::MAX);
        range("callbacks.capacity", c.capacity, 1, max)?;
        range(
            "callbacks.dedupe_window_s",
            c.dedupe_window_s,
            0,
            30 * 86_400,
        )?;
        range("callbacks.max_age_s", c.max_age_s, 60, 30 * 86_400)?;
        self.callback_zone()?;
        self.callback_hours()?;
        Ok(())
    }

    fn validate_announcements(&self) -> Check {
        let a = &self.announcements;
        range(
            "announcements.max_audio_bytes",
            a.max_audio_bytes,
            1024,
            268_435_455,
        )?;
        if a.max_audio_bytes > self.mqtt.max_payload_bytes {
            return fail(
                "announcements.max_audio_bytes",
                format!(
                    "{} is above mqtt.max_payload_bytes {}: audio arrives as one MQTT message",
                    a.max_audio_bytes, self.mqtt.max_payload_bytes
                ),
            );
        }
        Ok(())
    }

    /// Settings that are valid but probably not meant, in words for an operator (printed by
    /// `ccedge config check` and logged at start-up).
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.sip.listen.ip().is_unspecified() && self.sip.public_address.is_none() {
            w.push(format!(
                "sip.listen is {} and sip.public_address is not set: Contact, Via and SDP will carry the address of the interface the reply leaves from",
                self.sip.listen
            ));
        }
        if self.sip.allow.0.iter().any(|c| c.prefix_len() == 0) {
            w.push("sip.allow contains a /0 prefix: every address may send requests".to_owned());
        }
        if self.sip.allow.0.is_empty() {
            w.push("sip.allow is empty: every SIP request will be refused".to_owned());
        }
        if let Some(addr) = self.metrics.listen.filter(|a| !a.ip().is_loopback()) {
            w.push(format!(
                "metrics.listen is {addr}: the metrics endpoint has no authentication; keep it reachable only from the monitoring network"
            ));
        }
        if self.mqtt.password.is_some() && !self.mqtt.url.tls() {
            w.push("mqtt.password is sent in clear text over mqtt://; use mqtts://".to_owned());
        }
        w
    }
}

/// A lower-case language tag: 2–3 letters, then `-` parts of 1–8 letters or digits
/// (`en`, `es`, `pt-br`, `es-419`).
fn language_tag_ok(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let first = parts.next().unwrap_or("");
    tag.len() <= LANGUAGE_MAX
        && (2..=3).contains(&first.len())
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && parts.all(|p| {
            (1..=8).contains(&p.len())
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}
