//! The `ccedge` command line, run as a user would.

use std::process::Command;

use ccedge_tests::{ccedge_bin, TempDir};

#[test]
fn config_check_prints_the_effective_config_and_redacts_secrets() {
    let dir = TempDir::new("cfg-ok");
    let file = dir.path().join("ccedge.toml");
    std::fs::write(
        &file,
        "[node]\nid = \"pi-001\"\nsite = \"phl\"\n[mqtt]\nusername = \"node\"\npassword = \"s3cret-value\"\n",
    )
    .unwrap();
    let out = Command::new(ccedge_bin())
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pi-001") && text.contains("phl"), "{text}");
    assert!(!text.contains("s3cret-value"), "password printed: {text}");
}

#[test]
fn config_check_exits_2_naming_the_key_and_the_file() {
    let dir = TempDir::new("cfg-bad");
    let cases = [
        ("[sip]\nallow = [\"10.0.0.300/8\"]\n", "sip.allow"),
        ("[rtp]\nport_min = 30000\nport_max = 20000\n", "rtp.port"),
        ("[sip]\nlisten_port = 5060\n", "sip.listen_port"),
        ("[mqtt]\nurl = \"http://broker\"\n", "mqtt.url"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(ccedge_bin())
            .args(["config", "check"])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(
            err.contains(key),
            "{text}: message does not name {key}: {err}"
        );
        assert!(
            err.contains(&*file.to_string_lossy()),
            "{text}: message does not name the file: {err}"
        );
    }
}

#[test]
fn agent_with_a_bad_config_exits_2_before_binding_anything() {
    let dir = TempDir::new("cfg-agent");
    let file = dir.path().join("ccedge.toml");
    std::fs::write(&file, "[sip]\nallow = [\"nonsense\"]\n").unwrap();
    let out = Command::new(ccedge_bin())
        .args(["agent", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sip.allow"));
}
