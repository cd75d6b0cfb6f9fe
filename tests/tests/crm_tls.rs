//! `firmware-sim crm` over TLS with client certificates, against Mosquitto running the
//! shipped broker example (`deploy/mosquitto/`: its `mosquitto.conf` with paths and port
//! rewritten, its ACL, certificates from its `make-certs.sh`): the CRM announces, the agent
//! (itself on `mqtts://` with its own certificate) takes the announcement, and the CRM
//! watches the node's events and acknowledges them. Without a client certificate, or
//! without the CA, the broker cannot be used.

#![allow(clippy::disallowed_methods)] // the tests time real sockets

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ccedge_tests::broker::{have_mosquitto, tone_wav, Mosquitto};
use ccedge_tests::{
    ccedge_cli, firmware_sim_bin, free_port_range, Agent, CallGateway, RtpSink, TempDir,
};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn skip() -> bool {
    let openssl = Command::new("openssl").arg("version").output().is_ok();
    if !have_mosquitto() || !openssl {
        eprintln!("mosquitto or openssl not installed: skipped (CI installs both)");
        return true;
    }
    false
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Certificates from `make-certs.sh` for the CRM and node `phl/test-node`, and Mosquitto
/// with the example configuration and ACL on a free loopback port.
fn tls_broker(dir: &Path) -> (Mosquitto, PathBuf) {
    let certs = dir.join("certs");
    let out = Command::new("bash")
        .arg(repo().join("deploy/mosquitto/make-certs.sh"))
        .arg(&certs)
        .arg("phl/test-node")
        .output()
        .expect("run make-certs.sh");
    assert!(
        out.status.success(),
        "make-certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Mosquitto started as root drops to its own user: let it read what it needs.
    chmod(dir, 0o755);
    chmod(&certs, 0o755);
    chmod(&certs.join("broker.key"), 0o644);
    std::fs::copy(repo().join("deploy/mosquitto/acl"), certs.join("acl")).expect("copy acl");
    chmod(&certs.join("acl"), 0o644);
    let example =
        std::fs::read_to_string(repo().join("deploy/mosquitto/mosquitto.conf")).expect("conf");
    assert!(example.contains("\nlistener 8883\n") && example.contains("\npersistence true\n"));
    let broker = Mosquitto::start_with(dir, |port| {
        example
            .replace("/etc/mosquitto/ccedge", &certs.display().to_string())
            .replace(
                "\nlistener 8883\n",
                &format!("\nlistener {port} 127.0.0.1\n"),
            )
            .replace("\npersistence true\n", "\npersistence false\n")
            .lines()
            .filter(|l| !l.starts_with("persistence_location"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    (broker, certs)
}

/// `firmware-sim crm --broker URL [TLS options] ARGS…`.
fn crm(url: &str, tls: &[(&str, &Path)], args: &[&str]) -> Command {
    let mut cmd = Command::new(firmware_sim_bin());
    cmd.args(["crm", "--broker", url]);
    for (option, path) in tls {
        cmd.arg(option).arg(path);
    }
    cmd.args(args).stdin(Stdio::null());
    cmd
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn cli_json(agent: &Agent, what: &str) -> Value {
    let run = ccedge_cli(&[
        what,
        "--json",
        "--config",
        agent.config.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    serde_json::from_str(&run.stdout).expect("json")
}

fn wait(agent: &Agent, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let v = cli_json(agent, what);
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < end, "ccedge {what}: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_crm_announces_watches_and_acks_over_tls_with_client_certificates() {
    if skip() {
        return;
    }
    let dir = TempDir::new("crm-tls");
    let (broker, certs) = tls_broker(dir.path());
    let url = format!("mqtts://127.0.0.1:{}", broker.port);

    // The agent on mqtts:// with its own certificate (CN phl/test-node, as the ACL wants).
    let state = dir.path().join("node");
    std::fs::create_dir_all(&state).unwrap();
    let (pmin, pmax) = free_port_range(20);
    let config = state.join("ccedge.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"test-node\"\nsite = \"phl\"\nstate_dir = \"{s}\"\n\n\
             [sip]\nlisten = \"127.0.0.1:0\"\nallow = [\"127.0.0.0/8\"]\n\n\
             [rtp]\nport_min = {pmin}\nport_max = {pmax}\n\n\
             [mqtt]\nurl = \"{url}\"\nca_file = \"{c}/ca.pem\"\n\
             cert_file = \"{c}/node-phl-test-node.pem\"\nkey_file = \"{c}/node-phl-test-node.key\"\n\n\
             [control]\nsocket = \"{s}/control.sock\"\n",
            s = state.display(),
            c = certs.display(),
        ),
    )
    .unwrap();
    let agent = Agent::start_with_config(&state, &config);
    wait(&agent, "status", |s| s["mqtt"]["connected"] == true);

    let ca = certs.join("ca.pem");
    let (cert, key) = (certs.join("crm.pem"), certs.join("crm.key"));
    let tls = [
        ("--ca-file", ca.as_path()),
        ("--cert-file", cert.as_path()),
        ("--key-file", key.as_path()),
    ];
    let wav = dir.path().join("tone.wav");
    std::fs::write(&wav, tone_wav(600.0, 1.0, 0.5)).unwrap();
    let wav_arg = wav.to_str().unwrap();

    // Without a client certificate the broker refuses the CRM; without the CA the CRM does
    // not trust the broker; TLS files with mqtt:// are a usage error.
    for (what, files) in [
        ("no client certificate", &tls[..1]),
        ("no CA (system roots)", &tls[1..]),
    ] {
        let o = crm(
            &url,
            files,
            &["announce", "--id", "refused", "--wav", wav_arg],
        )
        .output()
        .unwrap();
        assert_eq!(o.status.code(), Some(1), "{what}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("broker"),
            "{what}: {}",
            text(&o)
        );
    }
    let plain = format!("mqtt://127.0.0.1:{}", broker.port);
    let o = crm(&plain, &tls, &["announce", "--id", "x", "--wav", wav_arg])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("need an mqtts:// broker"),
        "{}",
        text(&o)
    );
    let o = crm(
        &url,
        &tls[..2],
        &["announce", "--id", "x", "--wav", wav_arg],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // Announce: the node takes it from the broker.
    let o = crm(
        &url,
        &tls,
        &[
            "announce", "--id", "tls-tone", "--wav", wav_arg, "--sites", "phl", "--json",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    wait(&agent, "announcements", |a| {
        a.as_array().is_some_and(|l| {
            l.iter().any(|x| {
                x["id"] == "tls-tone" && x["state"] == "active" && x["audio_present"] == true
            })
        })
    });

    // Watch and acknowledge while a call goes through.
    let watcher = crm(
        &url,
        &tls,
        &[
            "watch",
            "--ack",
            "--json",
            "--site",
            "phl",
            "--node",
            "test-node",
            "--duration",
            "8",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    gw.place(agent.sip, 1, "12155550123", rtp.port());
    assert_eq!(
        gw.wait_answered(agent.sip, 1, Duration::from_secs(10))
            .len(),
        1
    );
    gw.pump(agent.sip, Duration::from_millis(1500));
    gw.hang_up_all(agent.sip);
    assert!(gw.wait_ended(agent.sip, Duration::from_secs(5)));
    let o = watcher.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let summary: Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("summary");
    let node = &summary["summary"]["nodes"][0];
    assert_eq!(node["node"], "phl/test-node", "{summary}");
    assert!(
        node["unique_events"].as_u64().unwrap_or(0) >= 4,
        "offered, answered, announcement, ended: {summary}"
    );
    assert_eq!(summary["ok"], true, "{summary}");
    for t in ["call.offered", "announcement.started", "call.ended"] {
        assert!(stdout.contains(&format!("\"{t}\"")), "{t}: {stdout}");
    }
    // The acknowledgement reached the node: its outbox is empty.
    let s = wait(&agent, "status", |s| {
        s["mqtt"]["outbox_depth"] == 0 && s["mqtt"]["last_seq"].as_u64().unwrap_or(0) >= 4
    });
    assert_eq!(s["mqtt"]["acked_seq"], s["mqtt"]["last_seq"], "{s}");
}
