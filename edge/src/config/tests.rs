//! Tests: real files in a scratch directory, explicit environments.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use core::sync::atomic::{AtomicU32, Ordering};
use std::path::{Path, PathBuf};

use super::values::{base64_decode, base64_encode};
use super::*;

/// A scratch directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ccedge-config-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover from a killed run with the same pid is stale.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Loads `toml` from a file in `dir` with the given environment.
fn load_toml(
    dir: &Scratch,
    toml: &str,
    vars: &[(&str, &str)],
) -> (PathBuf, Result<Config, ConfigError>) {
    let path = dir.write("ccedge.toml", toml);
    let r = load_from(Some(&path), &env(vars));
    (path, r)
}

fn deploy_example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ccedge.toml")
}

// ---- defaults ---------------------------------------------------------------------------------

#[test]
fn defaults_validate_and_are_what_no_file_loads() {
    let d = Config::default();
    d.validate().unwrap();
    assert_eq!(load_from(None, &[]).unwrap(), d);
    assert_eq!(
        d.sip.listen,
        "127.0.0.1:5060".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(d.node.site, "default");
    assert_eq!(d.node.state_dir, PathBuf::from("./ccedge-state"));
    assert_eq!(d.mqtt.url.to_string(), "mqtt://127.0.0.1:1883");
    assert_eq!(d.mqtt.topic_prefix, "ccedge/v1");
    assert_eq!((d.rtp.port_min, d.rtp.port_max), (20000, 29999));
    assert_eq!(
        d.control_socket(),
        PathBuf::from("./ccedge-state/control.sock")
    );
    assert_eq!(
        d.sip
            .allow
            .cidrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["127.0.0.0/8", "::1/128"]
    );
    assert!(d.warnings().is_empty(), "{:?}", d.warnings());
}

#[test]
fn empty_file_is_the_defaults() {
    let dir = Scratch::new();
    let (_, r) = load_toml(&dir, "", &[]);
    assert_eq!(r.unwrap(), Config::default());
}

#[test]
fn node_id_is_sanitised_host_name() {
    assert_eq!(sanitize_node_id("pi-001.lan.example.com\n"), "pi-001");
    assert_eq!(sanitize_node_id("büro pc"), "b-ro-pc");
    assert_eq!(sanitize_node_id(""), "ccedge");
    assert_eq!(sanitize_node_id(".hidden"), "ccedge");
    assert_eq!(sanitize_node_id(&"x".repeat(100)).len(), NODE_ID_MAX);
    let id = default_node_id();
    assert!(!id.is_empty() && id.len() <= NODE_ID_MAX);
    assert!(id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
}

// ---- the example file --------------------------------------------------------------------------

#[test]
fn deploy_example_loads_and_states_the_defaults() {
    let path = deploy_example();
    let from_file = load_from(Some(&path), &[]).unwrap();
    assert_eq!(
        from_file,
        Config::default(),
        "deploy/ccedge.toml drifted from the defaults"
    );
    // Through the public entry point too (process environment; CI sets no CCEDGE__ vars).
    load(Some(&path)).unwrap();
}

#[test]
fn deploy_example_mentions_every_key() {
    let text = std::fs::read_to_string(deploy_example()).unwrap();
    let mut full = Config::default().effective();
    full.mqtt.username = Some("u".into());
    full.mqtt.password = Some(Secret::new("p".into()));
    full.mqtt.ca_file = Some("a".into());
    full.mqtt.cert_file = Some("b".into());
    full.mqtt.key_file = Some("c".into());
    full.sip.public_address = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    full.ivr.transfer_uri = Some("sip:a@b".into());
    full.ivr.prompts_dir = Some("p".into());
    full.ivr.country_code = Some(1);
    full.ivr.speech_command = Some("x".into());
    full.announcements.signing_key = Some(SigningKey([0; 32]));
    full.metrics.listen = Some("127.0.0.1:9464".parse().unwrap());
    let serde_json::Value::Object(root) = serde_json::to_value(&full).unwrap() else {
        panic!("config is not a map");
    };
    for (section, keys) in root {
        assert!(
            text.contains(&format!("\n[{section}]\n")),
            "section [{section}] missing"
        );
        let serde_json::Value::Object(keys) = keys else {
            panic!("section {section} is not a map");
        };
        for key in keys.keys() {
            assert!(
                text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key} = ")),
                "{section}.{key} is not in deploy/ccedge.toml"
            );
        }
    }
}

// ---- bad values name the key -----------------------------------------------------------------

#[test]
fn bad_values_name_the_key_and_the_file() {
    let dir = Scratch::new();
    let cert = dir.write("node.pem", "-----BEGIN CERTIFICATE-----\n");
    let cert = cert.display();
    let missing_ca = dir.0.join("no-such-ca.pem");
    let missing_ca = missing_ca.display();
    let long_socket = format!("/{}", "s".repeat(120));
    let cases: Vec<(String, &str, &str)> = vec![
        // (file text, key, a fragment of the message)
        (
            "[sip]\nallow = [\"127.0.0.0/8\", \"10.0.0.300/8\"]".into(),
            "sip.allow[1]",
            "`10.0.0.300/8` is not a CIDR (expected e.g. 192.0.2.0/24)",
        ),
        (
            "[sip]\nallow = [\"192.0.2.1/24\"]".into(),
            "sip.allow[0]",
            "did you mean 192.0.2.0/24",
        ),
        (
            "[sip]\nallow = [\"10.0.0.0/33\"]".into(),
            "sip.allow[0]",
            "/32",
        ),
        (
            "[sip]\nallow = \"10.0.0.0/8\"".into(),
            "sip.allow",
            "expected",
        ),
        (
            "[sip]\nlisten = \"localhost\"".into(),
            "sip.listen",
            "not an address and port",
        ),
        (
            "[sip]\nlisten = 5060".into(),
            "sip.listen",
            "not an address and port",
        ),
        (
            "[sip]\ndeny_action = \"drop\"".into(),
            "sip.deny_action",
            "silence, 403",
        ),
        (
            "[sip]\npublic_address = \"0.0.0.0\"".into(),
            "sip.public_address",
            "cannot be reached",
        ),
        (
            "[sip]\npublic_address = \"example.com\"".into(),
            "sip.public_address",
            "not an IP address",
        ),
        (
            "[sip]\nrate_limit_per_source = 0".into(),
            "sip.rate_limit_per_source",
            "out of range",
        ),
        (
            "[sip]\nmax_calls = 0".into(),
            "sip.max_calls",
            "out of range",
        ),
        (
            "[sip]\nmax_calls = 100001".into(),
            "sip.max_calls",
            "out of range",
        ),
        ("[sip]\nt1_ms = 0".into(), "sip.t1_ms", "out of range"),
        (
            "[sip]\nserver_header = \"ccedge\\r\\nX-Evil: 1\"".into(),
            "sip.server_header",
            "contains '\\r'",
        ),
        (
            "[sip]\nserver_header = \"ccedge (1.2)\"".into(),
            "sip.server_header",
            "contains '('",
        ),
        (
            "[sip]\nserver_header = \"ccedge \"".into(),
            "sip.server_header",
            "trailing",
        ),
        (
            format!("[sip]\nserver_header = \"{}\"", "a".repeat(65)),
            "sip.server_header",
            "longer than 64",
        ),
        (
            "[sip]\nserver_header = \"ccédge\"".into(),
            "sip.server_header",
            "contains 'é'",
        ),
        (
            "[rtp]\nport_min = 30000\nport_max = 20000".into(),
            "rtp.port_max",
            "inverted",
        ),
        (
            "[rtp]\nport_min = 20000\nport_max = 20000".into(),
            "rtp.port_max",
            "at least 2",
        ),
        ("[rtp]\nport_min = 80".into(), "rtp.port_min", "privileged"),
        (
            "[rtp]\nmedia_threads = 65".into(),
            "rtp.media_threads",
            "out of range",
        ),
        (
            "[rtp]\nrealtime_priority = 100".into(),
            "rtp.realtime_priority",
            "out of range",
        ),
        (
            "[rtp]\nmax_pacer_load_percent = 101".into(),
            "rtp.max_pacer_load_percent",
            "out of range",
        ),
        ("[rtp]\nport_min = 70000".into(), "rtp.port_min", "16 bit"),
        ("[rtp]\nport_min = -1".into(), "rtp.port_min", "unsigned"),
        (
            "[rtp]\nport_min = \"abc\"".into(),
            "rtp.port_min",
            "wrong type",
        ),
        (
            "[mqtt]\nurl = \"http://broker:1883\"".into(),
            "mqtt.url",
            "mqtt:// or mqtts://",
        ),
        (
            "[mqtt]\nurl = \"broker:1883\"".into(),
            "mqtt.url",
            "no scheme",
        ),
        (
            "[mqtt]\nurl = \"mqtt://broker:0\"".into(),
            "mqtt.url",
            "port",
        ),
        (
            "[mqtt]\nurl = \"mqtt://broker/x\"".into(),
            "mqtt.url",
            "no path",
        ),
        (
            "[mqtt]\ntopic_prefix = \"ccedge/#\"".into(),
            "mqtt.topic_prefix",
            "wildcard",
        ),
        (
            "[mqtt]\ntopic_prefix = \"a/+/b\"".into(),
            "mqtt.topic_prefix",
            "wildcard",
        ),
        (
            "[mqtt]\ntopic_prefix = \"/ccedge\"".into(),
            "mqtt.topic_prefix",
            "start or end",
        ),
        (
            "[mqtt]\ntopic_prefix = \"ccedge/\"".into(),
            "mqtt.topic_prefix",
            "start or end",
        ),
        (
            "[mqtt]\ntopic_prefix = \"a//b\"".into(),
            "mqtt.topic_prefix",
            "empty level",
        ),
        (
            "[mqtt]\ntopic_prefix = \"$SYS/x\"".into(),
            "mqtt.topic_prefix",
            "reserve",
        ),
        (
            "[mqtt]\ntopic_prefix = \"\"".into(),
            "mqtt.topic_prefix",
            "empty",
        ),
        (
            format!("[mqtt]\nurl = \"mqtts://broker\"\nca_file = \"{missing_ca}\""),
            "mqtt.ca_file",
            "no-such-ca.pem",
        ),
        (
            format!(
                "[mqtt]\nurl = \"mqtts://broker\"\nca_file = \"{}\"",
                dir.0.display()
            ),
            "mqtt.ca_file",
            "not a regular file",
        ),
        (
            format!("[mqtt]\nca_file = \"{cert}\""),
            "mqtt.ca_file",
            "does not use TLS",
        ),
        (
            format!("[mqtt]\nurl = \"mqtts://broker\"\ncert_file = \"{cert}\""),
            "mqtt.key_file",
            "required",
        ),
        (
            format!("[mqtt]\nurl = \"mqtts://broker\"\nkey_file = \"{cert}\""),
            "mqtt.cert_file",
            "required",
        ),
        (
            "[mqtt]\npassword = \"x\"".into(),
            "mqtt.password",
            "username",
        ),
        (
            "[mqtt]\nclient_id = \"has space\"".into(),
            "mqtt.client_id",
            "printable",
        ),
        (
            "[mqtt]\nkeepalive_s = 0".into(),
            "mqtt.keepalive_s",
            "out of range",
        ),
        (
            "[mqtt]\noutbox_capacity = 5".into(),
            "mqtt.outbox_capacity",
            "out of range",
        ),
        (
            "[mqtt]\noutbox_retention_h = 9000".into(),
            "mqtt.outbox_retention_h",
            "out of range",
        ),
        (
            "[mqtt]\nstatus_interval_s = 0".into(),
            "mqtt.status_interval_s",
            "out of range",
        ),
        (
            "[ivr]\ntransfer_uri = \"agents\"".into(),
            "ivr.transfer_uri",
            "no scheme",
        ),
        (
            "[ivr]\ntransfer_uri = \"http://pbx/agents\"".into(),
            "ivr.transfer_uri",
            "sip:, sips: or tel:",
        ),
        (
            "[ivr]\ntransfer_uri = \"sip:\"".into(),
            "ivr.transfer_uri",
            "no host",
        ),
        (
            "[ivr]\ntransfer_uri = \"tel:abc\"".into(),
            "ivr.transfer_uri",
            "number",
        ),
        (
            "[ivr]\ntransfer_uri = \"sip:a b@pbx\"".into(),
            "ivr.transfer_uri",
            "spaces",
        ),
        (
            "[ivr]\ncountry_code = 0".into(),
            "ivr.country_code",
            "1..=999",
        ),
        (
            "[ivr]\ncountry_code = 1000".into(),
            "ivr.country_code",
            "1..=999",
        ),
        (
            "[ivr]\nmax_retries = 10".into(),
            "ivr.max_retries",
            "out of range",
        ),
        (
            "[ivr]\nprompts_dir = \"/nonexistent/prompts\"".into(),
            "ivr.prompts_dir",
            "/nonexistent/prompts",
        ),
        (
            "[ivr]\nlanguages = []".into(),
            "ivr.languages",
            "at least one language",
        ),
        (
            "[ivr]\nlanguages = [\"en\", \"es\", \"en\"]".into(),
            "ivr.languages",
            "`en` is listed twice",
        ),
        (
            "[ivr]\nlanguages = [\"EN\"]".into(),
            "ivr.languages",
            "lower-case language tag",
        ),
        (
            "[ivr]\nlanguages = [\"en\", \"fr\"]".into(),
            "ivr.languages",
            "`fr` has no built-in prompts (built in: en, es); set ivr.prompts_dir",
        ),
        (
            "[ivr]\nlanguages = [\"en\", \"es\", \"pt\", \"de\", \"fr\"]".into(),
            "ivr.languages",
            "at most 4",
        ),
        (
            "[ivr]\nlanguages = [\"en\", \"es\"]\nlanguage_by_dialled = { \"18005550199\" = \"es\" }"
                .into(),
            "ivr.language_by_dialled",
            "`18005550199` is not an E.164 number",
        ),
        (
            "[ivr]\nlanguage_by_dialled = { \"+18005550199\" = \"es\" }".into(),
            "ivr.language_by_dialled",
            "`es` is not one of ivr.languages (en)",
        ),
        (
            "[ivr]\nspeech_command = \"  \"".into(),
            "ivr.speech_command",
            "empty",
        ),
        (
            "[ivr]\noffer_callback_default = \"maybe\"".into(),
            "ivr.offer_callback_default",
            "boolean",
        ),
        (
            "[callbacks]\ncapacity = 257".into(),
            "callbacks.capacity",
            "1..=256",
        ),
        (
            "[callbacks]\ncapacity = 0".into(),
            "callbacks.capacity",
            "1..=256",
        ),
        (
            "[announcements]\nsigning_key = \"abc!\"".into(),
            "announcements.signing_key",
            "not base64",
        ),
        (
            "[announcements]\nsigning_key = \"AAAA\"".into(),
            "announcements.signing_key",
            "3 bytes",
        ),
        (
            "[announcements]\nmax_audio_bytes = 20000000".into(),
            "announcements.max_audio_bytes",
            "max_payload_bytes",
        ),
        ("[node]\nid = \"a/b\"".into(), "node.id", "'/'"),
        ("[node]\nid = \"\"".into(), "node.id", "empty"),
        ("[node]\nsite = \"phl+1\"".into(), "node.site", "'+'"),
        (
            format!("[control]\nsocket = \"{long_socket}\""),
            "control.socket",
            "107",
        ),
        (
            "[log]\nlevel = \"loud\"".into(),
            "log.level",
            "error, warn, info, debug, trace",
        ),
        ("[log]\nformat = \"xml\"".into(), "log.format", "text, json"),
        (
            "[metrics]\nlisten = \"localhost:9464\"".into(),
            "metrics.listen",
            "not an address and port (expected e.g. 127.0.0.1:9464",
        ),
        (
            "[metrics]\nlisten = \"127.0.0.1\"".into(),
            "metrics.listen",
            "not an address and port",
        ),
        (
            "[metrics]\nlisten = 9464".into(),
            "metrics.listen",
            "`9464` is not an address and port",
        ),
        (
            "[metrics]\nlisten = \"127.0.0.1:0\"".into(),
            "metrics.listen",
            "port 0",
        ),
        (
            "[metrics]\nlisten = \"224.0.0.1:9464\"".into(),
            "metrics.listen",
            "multicast",
        ),
        (
            "[sip]\nlisten = \"127.0.0.1:5060\"\n[metrics]\nlisten = \"127.0.0.1:5060\"".into(),
            "metrics.listen",
            "the TCP port of sip.listen",
        ),
        (
            "[sip]\nlisten = \"0.0.0.0:5070\"\n[metrics]\nlisten = \"127.0.0.1:5070\"".into(),
            "metrics.listen",
            "the TCP port of sip.listen",
        ),
        (
            format!("[sip]\ntls_listen = \"127.0.0.1:5061\"\ntls_cert = \"{cert}\"\ntls_key = \"{cert}\"\n[metrics]\nlisten = \"[::]:5061\""),
            "metrics.listen",
            "the TCP port of sip.tls_listen",
        ),
        (
            "[metrics]\nport = 9464".into(),
            "metrics.port",
            "unknown key",
        ),
        // Unknown keys and sections.
        (
            "[sip]\nlisten_port = 5".into(),
            "sip.listen_port",
            "unknown key",
        ),
        (
            "[sipp]\nlisten = \"127.0.0.1:5060\"".into(),
            "sipp",
            "unknown key",
        ),
        ("nodes = 1".into(), "nodes", "unknown key"),
        ("[mqtt.tls]\nca = \"x\"".into(), "mqtt.tls", "unknown key"),
        (
            "[sip]\nlisten = { ip = \"x\" }".into(),
            "sip.listen",
            "expected",
        ),
        // Not TOML at all: no key, but the file and the parser's position.
        ("[sip\nlisten = 1".into(), "", "not valid TOML"),
    ];
    for (text, key, fragment) in &cases {
        let (path, r) = load_toml(&dir, text, &[]);
        let e = match r {
            Ok(_) => panic!("{text:?} loaded"),
            Err(e) => e,
        };
        assert_eq!(&e.key, key, "{text:?} → {e}");
        assert_eq!(e.file.as_deref(), Some(path.as_path()), "{text:?}");
        assert_eq!(e.env_var, None);
        assert!(
            e.message.contains(fragment),
            "{text:?}: {:?} lacks {fragment:?}",
            e.message
        );
        let shown = e.to_string();
        assert!(
            shown.starts_with(&format!("config error in {}: ", path.display())),
            "{shown}"
        );
        if !key.is_empty() {
            assert!(shown.contains(&format!(": {key}: ")), "{shown}");
        }
    }
}

#[test]
fn error_display_matches_the_documented_form() {
    let e = ConfigError {
        key: "sip.allow[1]".into(),
        file: Some("/etc/ccedge/ccedge.toml".into()),
        env_var: None,
        message: "`10.0.0.300/8` is not a CIDR (expected e.g. 192.0.2.0/24)".into(),
    };
    assert_eq!(
        e.to_string(),
        "config error in /etc/ccedge/ccedge.toml: sip.allow[1]: `10.0.0.300/8` is not a CIDR (expected e.g. 192.0.2.0/24)"
    );
    let e = ConfigError::new("rtp.port_min", "bad");
    assert_eq!(e.to_string(), "config error: rtp.port_min: bad");
}

#[test]
fn unknown_key_message_lists_the_known_keys() {
    let dir = Scratch::new();
    let (_, r) = load_toml(&dir, "[rtp]\nport_minimum = 5", &[]);
    let e = r.unwrap_err();
    assert_eq!(e.key, "rtp.port_minimum");
    assert!(
        e.message.contains("`port_min`") && e.message.contains("`media_timeout_s`"),
        "{}",
        e.message
    );
}

#[test]
fn missing_or_unreadable_file_is_an_error() {
    let dir = Scratch::new();
    let missing = dir.0.join("nope.toml");
    let e = load_from(Some(&missing), &[]).unwrap_err();
    assert_eq!(e.key, "");
    assert_eq!(e.file.as_deref(), Some(missing.as_path()));
    assert!(e.to_string().contains("nope.toml"), "{e}");
    assert!(e.message.contains("cannot read"), "{e}");
    let e = load_from(Some(&dir.0), &[]).unwrap_err();
    assert!(e.message.contains("not a regular file"), "{e}");
}

#[test]
fn readable_tls_files_are_accepted() {
    let dir = Scratch::new();
    let ca = dir.write("ca.pem", "ca");
    let cert = dir.write("node.pem", "cert");
    let key = dir.write("node.key", "key");
    let text = format!(
        "[mqtt]\nurl = \"mqtts://broker.example.com\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        ca.display(),
        cert.display(),
        key.display()
    );
    let (_, r) = load_toml(&dir, &text, &[]);
    let c = r.unwrap();
    assert!(c.mqtt.url.tls());
    assert_eq!(c.mqtt.url.port(), 8883);
    assert_eq!(c.mqtt.key_file.as_deref(), Some(key.as_path()));
}

#[test]
fn metrics_endpoint_is_off_by_default_and_takes_an_address() {
    assert_eq!(Config::default().metrics.listen, None);
    let dir = Scratch::new();
    let (_, r) = load_toml(&dir, "[metrics]\nlisten = \" 127.0.0.1:9464 \"\n", &[]);
    let c = r.unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    assert!(c
        .to_toml_redacted()
        .contains("\n[metrics]\nlisten = \"127.0.0.1:9464\"\n"));
    // SIP over TCP off: its port is free for the endpoint.
    let (_, r) = load_toml(
        &dir,
        "[sip]\nlisten = \"127.0.0.1:5060\"\ntcp = false\n[metrics]\nlisten = \"127.0.0.1:5060\"\n",
        &[],
    );
    r.unwrap();
    // From the environment, and a warning when it is not on loopback.
    let c = load_from(None, &env(&[("CCEDGE__METRICS__LISTEN", "[::]:9464")])).unwrap();
    assert_eq!(c.metrics.listen, Some("[::]:9464".parse().unwrap()));
    let w = c.warnings();
    assert!(
        w.len() == 1 && w[0].contains("metrics.listen") && w[0].contains("no authentication"),
        "{w:?}"
    );
    let e = load_from(None, &env(&[("CCEDGE__METRICS__LISTEN", "nowhere")])).unwrap_err();
    assert_eq!(
        (e.key.as_str(), e.env_var.as_deref()),
        ("metrics.listen", Some("CCEDGE__METRICS__LISTEN"))
    );
}

// ---- environment overrides --------------------------------------------------------------------

#[test]
fn environment_overrides_win_over_the_file() {
    let dir = Scratch::new();
    let file = "[mqtt]\nurl = \"mqtt://file-broker:1883\"\nusername = \"from-file\"\n\
                [rtp]\nport_min = 21000\nport_max = 22000\n[node]\nsite = \"phl\"\n";
    let (_, r) = load_toml(
        &dir,
        file,
        &[
            ("CCEDGE__MQTT__URL", "mqtts://env-broker:8884"),
            ("CCEDGE__MQTT__USERNAME", "pi-001"),
            ("CCEDGE__MQTT__PASSWORD", "007"),
            ("CCEDGE__RTP__PORT_MIN", "21500"),
            ("CCEDGE__SIP__ALLOW", "10.0.0.0/8, 192.0.2.7,2001:db8::/32"),
            ("CCEDGE__SIP__PUBLIC_ADDRESS", "198.51.100.4"),
            ("CCEDGE__IVR__OFFER_CALLBACK_DEFAULT", "false"),
            ("CCEDGE__IVR__COUNTRY_CODE", "44"),
            ("CCEDGE__NODE__ID", "1e3"),
            ("CCEDGE__LOG__LEVEL", "debug"),
            ("CCEDGE__CALLBACKS__CAPACITY", "100"),
            ("ccedge__mqtt__keepalive_s", "60"),
            // Not ours, or empty: ignored.
            ("CCEDGE_CONFIG", "/x"),
            ("PATH", "/usr/bin"),
            ("CCEDGE__IVR__TRANSFER_URI", ""),
        ],
    );
    let c = r.unwrap();
    assert_eq!(c.mqtt.url.to_string(), "mqtts://env-broker:8884");
    assert_eq!(c.mqtt.username.as_deref(), Some("pi-001"));
    assert_eq!(c.mqtt.password.as_ref().map(Secret::expose), Some("007"));
    assert_eq!(c.rtp.port_min, 21500);
    assert_eq!(
        c.rtp.port_max, 22000,
        "file value kept where the env is silent"
    );
    assert_eq!(c.node.site, "phl");
    assert_eq!(c.node.id, "1e3", "strings stay strings");
    assert_eq!(
        c.sip
            .allow
            .cidrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    );
    assert_eq!(
        c.sip.public_address,
        Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 4)))
    );
    assert!(!c.ivr.offer_callback_default);
    assert_eq!(c.ivr.country_code, Some(44));
    assert_eq!(c.ivr.transfer_uri, None);
    assert_eq!(c.log.level, LogLevel::Debug);
    assert_eq!(c.callbacks.capacity, 100);
    assert_eq!(c.mqtt.keepalive_s, 60);
}

#[test]
fn environment_errors_name_the_variable() {
    let dir = Scratch::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "CCEDGE__SIP__ALLOW",
            "10.0.0.0/8,10.0.0.300/8",
            "sip.allow[1]",
        ),
        ("CCEDGE__RTP__PORT_MIN", "abc", "rtp.port_min"),
        ("CCEDGE__RTP__PORT_MIN", "80", "rtp.port_min"),
        ("CCEDGE__SIP__LISTEN_PORT", "5", "sip.listen_port"),
        ("CCEDGE__SIPP__LISTEN", "x", "sipp"),
        (
            "CCEDGE__IVR__OFFER_CALLBACK_DEFAULT",
            "perhaps",
            "ivr.offer_callback_default",
        ),
        ("CCEDGE__MQTT__URL", "tcp://x", "mqtt.url"),
    ];
    for (var, value, key) in cases {
        let (_, r) = load_toml(&dir, "[rtp]\nport_max = 29999\n", &[(var, value)]);
        let e = r.unwrap_err();
        assert_eq!(&e.key, key, "{var}={value}: {e}");
        assert_eq!(e.env_var.as_deref(), Some(*var), "{e}");
        assert_eq!(e.file, None);
        assert!(
            e.to_string().starts_with(&format!(
                "config error in environment variable {var}: {key}: "
            )),
            "{e}"
        );
    }
}

#[test]
fn environment_without_a_file() {
    let c = load_from(None, &env(&[("CCEDGE__SIP__LISTEN", "0.0.0.0:5070")])).unwrap();
    assert_eq!(c.sip.listen.port(), 5070);
    assert_eq!(c.warnings().len(), 1, "{:?}", c.warnings());
}

// ---- printing -------------------------------------------------------------------------------

#[test]
fn printed_config_redacts_the_password() {
    let dir = Scratch::new();
    let (_, r) = load_toml(
        &dir,
        "[mqtt]\nusername = \"pi\"\npassword = \"hunter2\"\n",
        &[],
    );
    let c = r.unwrap();
    assert_eq!(
        c.mqtt.password.as_ref().map(Secret::expose),
        Some("hunter2")
    );
    let shown = c.to_toml_redacted();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("password = \"<redacted>\""), "{shown}");
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
    assert_eq!(
        c.warnings().len(),
        1,
        "clear-text password warned: {:?}",
        c.warnings()
    );
}

#[test]
fn printed_config_loads_back_to_the_effective_config() {
    let dir = Scratch::new();
    let text = "[node]\nid = \"pi-001\"\nsite = \"phl\"\n[sip]\nallow = [\"10.0.0.0/8\", \"::1\"]\n\
                public_address = \"2001:db8::5\"\n[ivr]\ntransfer_uri = \"sip:agents@pbx\"\ncountry_code = 1\n\
                speech_command = \"say \\\"hi\\\" \\\\ now\"\n\
                [announcements]\nsigning_key = \"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"\n";
    let (_, r) = load_toml(&dir, text, &[]);
    let c = r.unwrap();
    let shown = c.to_toml_redacted();
    assert!(shown.contains("# username is not set"), "{shown}");
    assert!(
        shown.contains("socket = \"./ccedge-state/control.sock\""),
        "{shown}"
    );
    assert!(
        shown.contains("client_id = \"ccedge-phl-pi-001\""),
        "{shown}"
    );
    let (_, again) = load_toml(&dir, &shown, &[]);
    assert_eq!(again.unwrap(), c.effective(), "{shown}");
}

#[test]
fn derived_defaults_follow_their_inputs() {
    let c = load_from(
        None,
        &env(&[
            ("CCEDGE__NODE__STATE_DIR", "/var/lib/ccedge"),
            ("CCEDGE__NODE__ID", "n1"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.control_socket(),
        PathBuf::from("/var/lib/ccedge/control.sock")
    );
    assert_eq!(c.mqtt_client_id(), "ccedge-default-n1");
    let c = load_from(
        None,
        &env(&[("CCEDGE__CONTROL__SOCKET", "/run/ccedge/control.sock")]),
    )
    .unwrap();
    assert_eq!(
        c.control_socket(),
        PathBuf::from("/run/ccedge/control.sock")
    );
}

#[test]
fn core_settings_follow_the_keys() {
    let mut c = Config::default();
    c.ivr.max_retries = 1;
    c.ivr.no_input_timeout_ms = 7000;
    c.ivr.transfer_uri = Some("tel:+18005550100".into());
    c.ivr.country_code = Some(49);
    c.callbacks.dedupe_window_s = 60;
    c.validate().unwrap();
    let ivr = c.ivr_core();
    assert!(ivr.transfer_available);
    assert_eq!(ivr.max_no_input, 2);
    assert_eq!(ivr.max_invalid, 2);
    assert_eq!(ivr.no_input_timeout, core::time::Duration::from_secs(7));
    assert_eq!(ivr.country_code, Some(49));
    assert_eq!(
        c.callbacks_core().dedup_window,
        core::time::Duration::from_secs(60)
    );
    assert!(!Config::default().ivr_core().transfer_available);
}

#[test]
fn server_header_values() {
    assert_eq!(Config::default().sip.server_header, "ccedge");
    let dir = Scratch::new();
    for ok in ["", "ccedge", "Acme-SBC/2.1 edge", "x~y+z'`!%*_."] {
        let (_, r) = load_toml(&dir, &format!("[sip]\nserver_header = \"{ok}\""), &[]);
        assert_eq!(r.unwrap().sip.server_header, ok);
    }
    // From the environment too; the agent takes it as is.
    let (_, r) = load_toml(&dir, "", &[("CCEDGE__SIP__SERVER_HEADER", "edge/7")]);
    let c = r.unwrap();
    assert_eq!(crate::cli::agent_config(&c).server_header, "edge/7");
}

#[test]
fn transfer_uris() {
    for ok in [
        "sip:agents@pbx.example.com",
        "SIPS:agents@pbx:5061;transport=tls",
        "sip:pbx",
        "tel:+18005550100",
        "tel:0800-123;phone-context=+44",
    ] {
        let mut c = Config::default();
        c.ivr.transfer_uri = Some(ok.into());
        c.validate().unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

// ---- typed values ---------------------------------------------------------------------------

#[test]
fn mqtt_urls() {
    let cases = [
        (
            "mqtt://127.0.0.1",
            "mqtt://127.0.0.1:1883",
            false,
            "127.0.0.1",
            1883,
        ),
        (
            "mqtts://broker.example.com",
            "mqtts://broker.example.com:8883",
            true,
            "broker.example.com",
            8883,
        ),
        ("MQTTS://b:9000/", "mqtts://b:9000", true, "b", 9000),
        ("mqtt://[::1]:1884", "mqtt://[::1]:1884", false, "::1", 1884),
        (
            "mqtt://[2001:db8::1]",
            "mqtt://[2001:db8::1]:1883",
            false,
            "2001:db8::1",
            1883,
        ),
    ];
    for (input, shown, tls, host, port) in cases {
        let u: MqttUrl = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(
            (u.to_string().as_str(), u.tls(), u.host(), u.port()),
            (shown, tls, host, port)
        );
        assert_eq!(u.to_string().parse::<MqttUrl>().unwrap(), u);
    }
    for bad in [
        "",
        "mqtt://",
        "mqtt://:1883",
        "mqtt://h:",
        "mqtt://h:65536",
        "mqtt://h:+1",
        "mqtt://::1",
        "mqtt://[::1",
        "mqtt://[::1]x",
        "mqtt://h?x=1",
        "mqtt://bad host",
        "ws://h",
    ] {
        assert!(bad.parse::<MqttUrl>().is_err(), "{bad} parsed");
    }
    let e = "mqtt://user:s3cret@broker".parse::<MqttUrl>().unwrap_err();
    assert!(!e.to_string().contains("s3cret"), "{e}");
    assert!(e.to_string().contains("mqtt.password"), "{e}");
}

#[test]
fn signing_key_and_base64() {
    let k: SigningKey = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
        .parse()
        .unwrap();
    assert_eq!(k.0[0], 0xd7);
    assert_eq!(
        k.to_string(),
        "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    );
    let unpadded: SigningKey = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        .parse()
        .unwrap();
    assert_eq!(unpadded, k);
    assert_eq!(
        "AAAA".parse::<SigningKey>().unwrap_err(),
        SigningKeyError::WrongLength(3)
    );
    for bad in [
        "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo==",
        "a",
        "ab=c",
        "!!!!",
        "AB==",
    ] {
        assert!(bad.parse::<SigningKey>().is_err(), "{bad}");
    }
    assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
    assert_eq!(base64_decode("aGk").as_deref(), Some(&b"hi"[..]));
    assert_eq!(base64_decode("").as_deref(), Some(&b""[..]));
    let mut rng = Rng(7);
    for len in 0..64 {
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let text = base64_encode(&bytes);
        assert_eq!(text.len() % 4, 0);
        assert_eq!(base64_decode(&text), Some(bytes));
    }
}

#[test]
fn keywords() {
    assert_eq!("403".parse::<DenyAction>().unwrap(), DenyAction::Forbidden);
    assert_eq!(DenyAction::Silence.to_string(), "silence");
    assert_eq!("trace".parse::<LogLevel>().unwrap(), LogLevel::Trace);
    assert!("INFO".parse::<LogLevel>().is_err());
    let dir = Scratch::new();
    let (_, r) = load_toml(
        &dir,
        "[sip]\ndeny_action = 403\n[log]\nformat = \"json\"\n",
        &[],
    );
    let c = r.unwrap();
    assert_eq!(c.sip.deny_action, DenyAction::Forbidden);
    assert_eq!(c.log.format, LogFormat::Json);
}

// ---- CIDR ------------------------------------------------------------------------------------

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn cidr_parse_and_display() {
    let cases = [
        ("192.0.2.0/24", "192.0.2.0/24", 24),
        ("0.0.0.0/0", "0.0.0.0/0", 0),
        ("192.0.2.7/32", "192.0.2.7/32", 32),
        ("192.0.2.7", "192.0.2.7/32", 32),
        ("2001:db8::/32", "2001:db8::/32", 32),
        ("::/0", "::/0", 0),
        ("::1/128", "::1/128", 128),
        ("::1", "::1/128", 128),
        ("2001:DB8::/32", "2001:db8::/32", 32),
        ("10.0.0.0/08", "10.0.0.0/8", 8),
        // IPv4-mapped prefixes are the IPv4 prefix.
        ("::ffff:192.0.2.0/120", "192.0.2.0/24", 24),
        ("::ffff:0:0/96", "0.0.0.0/0", 0),
        // Shorter than /96 stays IPv6.
        ("::ffff:0:0/95", "::fffe:0:0/95", 95),
    ];
    for (input, shown, len) in cases {
        match input.parse::<Cidr>() {
            Ok(c) => {
                assert_eq!(c.to_string(), shown, "{input}");
                assert_eq!(c.prefix_len(), len, "{input}");
                assert_eq!(cidr(shown), c);
            }
            Err(e) => {
                // ::ffff:0:0/95 has host bits set: the suggestion is the masked network.
                assert_eq!(input, "::ffff:0:0/95", "{e}");
                assert_eq!(
                    e.kind,
                    CidrErrorKind::HostBitsSet {
                        suggestion: cidr(shown)
                    }
                );
            }
        }
    }
}

#[test]
fn cidr_errors() {
    let syntax = [
        "",
        "/",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/+8",
        "10.0.0.0/-1",
        "10.0.0.0/8/8",
        "10.0.0/8",
        "10.0.0.300/8",
        "010.0.0.0/8",
        "fe80::1%eth0/64",
        "10.0.0.0 /8",
        " 10.0.0.0/8",
        "10.0.0.0/1000",
        "host/8",
    ];
    for s in syntax {
        let e = s.parse::<Cidr>().unwrap_err();
        assert_eq!(e.kind, CidrErrorKind::Syntax, "{s:?}");
        assert_eq!(
            e.to_string(),
            format!("`{s}` is not a CIDR (expected e.g. 192.0.2.0/24)")
        );
    }
    assert_eq!(
        "10.0.0.0/33".parse::<Cidr>().unwrap_err().kind,
        CidrErrorKind::PrefixTooLong { max: 32 }
    );
    assert_eq!(
        "::/129".parse::<Cidr>().unwrap_err().kind,
        CidrErrorKind::PrefixTooLong { max: 128 }
    );
    assert_eq!(
        "10.0.0.0/256".parse::<Cidr>().unwrap_err().kind,
        CidrErrorKind::PrefixTooLong { max: 32 }
    );
    let e = "192.0.2.1/24".parse::<Cidr>().unwrap_err();
    assert_eq!(
        e.kind,
        CidrErrorKind::HostBitsSet {
            suggestion: cidr("192.0.2.0/24")
        }
    );
    assert_eq!(
        e.to_string(),
        "`192.0.2.1/24` has host bits set (did you mean 192.0.2.0/24?)"
    );
    assert!("2001:db8::1/32".parse::<Cidr>().is_err());
    assert!("0.0.0.1/0".parse::<Cidr>().is_err());
}

#[test]
fn cidr_containment() {
    let net = cidr("192.0.2.0/24");
    assert!(net.contains(ip("192.0.2.0")));
    assert!(net.contains(ip("192.0.2.255")));
    assert!(!net.contains(ip("192.0.3.0")));
    assert!(!net.contains(ip("192.0.1.255")));
    assert!(
        net.contains(ip("::ffff:192.0.2.9")),
        "IPv4-mapped matches the IPv4 prefix"
    );
    assert!(
        !net.contains(ip("::192.0.2.9")),
        "IPv4-compatible is not mapped"
    );
    assert!(!net.contains(ip("2001:db8::1")));

    let host = cidr("192.0.2.7/32");
    assert!(host.contains(ip("192.0.2.7")));
    assert!(!host.contains(ip("192.0.2.6")));

    let any4 = cidr("0.0.0.0/0");
    assert!(any4.contains(ip("255.255.255.255")));
    assert!(any4.contains(ip("::ffff:10.1.2.3")));
    assert!(!any4.contains(ip("::1")));

    let any6 = cidr("::/0");
    assert!(any6.contains(ip("2001:db8::1")));
    assert!(
        !any6.contains(ip("10.0.0.1")),
        "::/0 is any IPv6, not any address"
    );

    let v6 = cidr("2001:db8::/32");
    assert!(v6.contains(ip("2001:db8:ffff::1")));
    assert!(!v6.contains(ip("2001:db9::1")));

    let one = cidr("::1/128");
    assert!(one.contains(ip("::1")));
    assert!(!one.contains(ip("::2")));

    let mapped = cidr("::ffff:10.0.0.0/104");
    assert!(mapped.contains(ip("10.9.9.9")));
    assert!(mapped.contains(ip("::ffff:10.9.9.9")));
}

#[test]
fn allowlist() {
    let d = AllowList::default();
    assert!(d.allows(ip("127.0.0.1")));
    assert!(d.allows(ip("127.255.0.1")));
    assert!(d.allows(ip("::1")));
    assert!(d.allows(ip("::ffff:127.0.0.1")));
    assert!(!d.allows(ip("10.0.0.1")));
    assert!(!d.allows(ip("::2")));
    assert!(!d.allows(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
    assert!(!AllowList(Vec::new()).allows(ip("127.0.0.1")));
    let l = AllowList(vec![cidr("10.20.0.0/16"), cidr("2001:db8::/48")]);
    assert!(l.allows(ip("10.20.5.5")));
    assert!(l.allows(ip("2001:db8:0:1::5")));
    assert!(!l.allows(ip("10.21.0.1")));
}

// ---- property tests (seeded; `proptest` is not a dev-dependency of `edge`) -----------------

/// xorshift64*: deterministic, so a failure reproduces from the printed case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A reference containment check, one bit at a time.
fn reference_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    let (a, b, bits): (u128, u128, u8) = match (net, ip.to_canonical()) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(u32::from(n)), u128::from(u32::from(i)), 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
        _ => return false,
    };
    (0..len).all(|k| {
        let shift = u32::from(bits - 1 - k);
        (a >> shift) & 1 == (b >> shift) & 1
    })
}

#[test]
fn prop_cidr_parse_never_panics() {
    let alphabet = b"0123456789abcdefABCDEF.:/%fx -+[]\0\xff";
    let mut rng = Rng(0x5eed_c1d4);
    for _ in 0..20_000 {
        let len = rng.below(48) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(8) == 0 {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len() as u64) as usize]
                }
            })
            .collect();
        let s = String::from_utf8_lossy(&bytes);
        if let Ok(c) = s.parse::<Cidr>() {
            // Anything accepted prints to something that parses to the same prefix.
            assert_eq!(c.to_string().parse::<Cidr>().unwrap(), c, "{s:?}");
        }
        let _ = s.parse::<MqttUrl>();
        let _ = base64_decode(&s);
    }
}

#[test]
fn prop_cidr_display_round_trip_and_containment() {
    let mut rng = Rng(0xc1d4_0001);
    for _ in 0..20_000 {
        let v4 = rng.below(2) == 0;
        let (addr, len) = if v4 {
            let len = rng.below(33) as u8;
            let raw = rng.next() as u32;
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            (IpAddr::V4(Ipv4Addr::from(raw & mask)), len)
        } else {
            let len = rng.below(129) as u8;
            let raw = (u128::from(rng.next()) << 64) | u128::from(rng.next());
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            (IpAddr::V6(Ipv6Addr::from(raw & mask)), len)
        };
        let Ok(c) = Cidr::new(addr, len) else {
            panic!("{addr}/{len} refused");
        };
        let shown = c.to_string();
        assert_eq!(shown.parse::<Cidr>().unwrap(), c, "{shown}");
        // Probe addresses inside (net with random host bits) and anywhere.
        for _ in 0..4 {
            let probe = match addr {
                IpAddr::V4(a) => {
                    let host = if len == 32 {
                        0
                    } else {
                        (rng.next() as u32) & (u32::MAX >> len)
                    };
                    if rng.below(2) == 0 {
                        IpAddr::V4(Ipv4Addr::from(u32::from(a) | host))
                    } else {
                        IpAddr::V6(Ipv4Addr::from(rng.next() as u32).to_ipv6_mapped())
                    }
                }
                IpAddr::V6(a) => {
                    let host = if len == 128 {
                        0
                    } else {
                        ((u128::from(rng.next()) << 64) | u128::from(rng.next()))
                            & (u128::MAX >> len)
                    };
                    IpAddr::V6(Ipv6Addr::from(u128::from(a) | host))
                }
            };
            assert_eq!(
                c.contains(probe),
                reference_contains(c.addr(), c.prefix_len(), probe),
                "{c} ∋ {probe}"
            );
        }
    }
}

#[test]
fn callback_hours_zone_and_holidays() {
    let dir = Scratch::new();
    let (_, r) = load_toml(
        &dir,
        "[callbacks]\ntimezone = \"America/New_York\"\nhours = [\"Mon-Fri 08:00-20:00\", \"Sat 09:00-13:00\"]\nholidays = [\"2026-12-25\"]\n",
        &[],
    );
    let c = r.unwrap();
    assert!(c.ivr_core().offer_windows);
    assert!(!Config::default().ivr_core().offer_windows);
    let h = c.callback_hours().unwrap();
    let tz = c.callback_zone().unwrap();
    let zone = crate::zone::table(
        &tz,
        shared::time::UnixMillis::parse_rfc3339("2026-12-24T12:00:00Z").unwrap(),
    );
    // Friday 2026-12-25 10:00 in New York is a holiday; Saturday 10:00 is open.
    let t = |s: &str| shared::time::UnixMillis::parse_rfc3339(s).unwrap();
    assert!(!h.is_open(&zone, t("2026-12-25T15:00:00Z")));
    assert!(h.is_open(&zone, t("2026-12-26T15:00:00Z")));
    assert!(!h.is_open(&zone, t("2026-12-26T19:00:00Z")));
    for (toml, key, says) in [
        (
            "timezone = \"Mars/Olympus\"",
            "callbacks.timezone",
            "not a known IANA time zone",
        ),
        (
            "hours = [\"Mon-Fri 8-20\"]",
            "callbacks.hours",
            "`Mon-Fri 8-20`",
        ),
        (
            "hours = [\"Mon-Fry 08:00-20:00\"]",
            "callbacks.hours",
            "days are Mon",
        ),
        (
            "hours = [\"Mon 22:00-06:00\"]",
            "callbacks.hours",
            "after the opening time",
        ),
        (
            "holidays = [\"2026-02-30\"]",
            "callbacks.holidays",
            "YYYY-MM-DD",
        ),
    ] {
        let (_, r) = load_toml(&dir, &format!("[callbacks]\n{toml}\n"), &[]);
        let e = r.expect_err(toml);
        let shown = e.to_string();
        assert!(
            shown.contains(key) && shown.contains(says),
            "{toml}: {shown}"
        );
    }
}

#[test]
fn languages_reach_the_core() {
    let c = load_from(None, &env(&[("CCEDGE__IVR__LANGUAGES", "en,es")])).unwrap();
    assert_eq!(c.ivr.languages, ["en", "es"]);
    assert_eq!(c.ivr_core().languages, 2);
    let mut c = c;
    c.ivr
        .language_by_dialled
        .insert("+18005550199".into(), "es".into());
    c.validate().unwrap();
    let l = c.languages_core();
    assert_eq!(
        l.tags.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        ["en", "es"]
    );
    let n = shared::number::PhoneNumber::parse("+18005550199").unwrap();
    assert_eq!(l.for_dialled(Some(&n)), 1);
    assert_eq!(
        Config::default().languages_core(),
        shared::node::Languages::default()
    );
}

#[test]
fn a_language_without_builtins_needs_a_complete_directory() {
    let dir = std::env::temp_dir().join(format!("ccedge-cfg-fr-{}", std::process::id()));
    let fr = dir.join("fr");
    std::fs::create_dir_all(&fr).unwrap();
    let mut c = Config::default();
    c.ivr.languages = vec!["en".into(), "fr".into()];
    c.ivr.prompts_dir = Some(dir.clone());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("lacks 75 of them: greeting.wav"), "{e}");
    for k in edge_prompt_files() {
        std::fs::write(fr.join(k), b"x").unwrap();
    }
    c.validate().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn edge_prompt_files() -> Vec<&'static str> {
    crate::media::prompts::PromptKey::ALL
        .iter()
        .map(|k| k.file_name())
        .collect()
}
