//! The configuration as TOML, for `ccedge config check`. Secrets are already redacted by
//! their `Serialize` impl; this only writes the document.

use core::fmt::Write as _;

use serde_json::Value;

use super::Config;

/// Section order of the printed document (the order of [`Config`]'s fields).
const SECTIONS: &[&str] = &[
    "node",
    "sip",
    "rtp",
    "mqtt",
    "control",
    "ivr",
    "callbacks",
    "announcements",
    "log",
    "metrics",
];

pub(super) fn to_toml(config: &Config) -> String {
    let mut out = String::from("# ccedge effective configuration (secrets redacted)\n");
    let root = match serde_json::to_value(config) {
        Ok(Value::Object(root)) => root,
        Ok(_) => return out,
        Err(e) => {
            // Only a non-UTF-8 path can fail, and loaded configurations never hold one.
            let _ = writeln!(out, "# cannot be shown: {e}");
            return out;
        }
    };
    let mut names: Vec<&String> = SECTIONS
        .iter()
        .filter_map(|s| root.get_key_value(*s).map(|(k, _)| k))
        .collect();
    names.extend(root.keys().filter(|k| !SECTIONS.contains(&k.as_str())));
    for name in names {
        let Some(section) = root.get(name.as_str()) else {
            continue;
        };
        let _ = writeln!(out, "\n[{name}]");
        match section {
            Value::Object(keys) => {
                for (key, value) in keys {
                    if value.is_null() {
                        let _ = writeln!(out, "# {key} is not set");
                    } else {
                        let _ = writeln!(out, "{key} = {}", inline(value));
                    }
                }
            }
            other => {
                let _ = writeln!(out, "# {}", inline(other));
            }
        }
    }
    out
}

/// A value in TOML inline syntax.
fn inline(v: &Value) -> String {
    match v {
        Value::Null => "\"\"".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{} = {}", quote(k), inline(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
    }
}

/// A TOML basic string.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
