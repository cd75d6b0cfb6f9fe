//! The technician commands against a real agent over its control socket, `ccedge doctor`
//! against a real (or absent) Mosquitto, and the socket's defences against bad clients.

#![allow(clippy::disallowed_methods)] // the tests time real processes

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ccedge_tests::broker::{have_mosquitto, Mosquitto};
use ccedge_tests::{
    ccedge_bin, ccedge_cli, free_tcp_port, write_config, Agent, AgentOptions, CallGateway, CliRun,
    RtpSink, TempDir,
};
use edge::control::protocol::Value;
use shared::dtmf::Digit;

fn cli(args: &[&str], config: &Path) -> CliRun {
    let mut all: Vec<&str> = args.to_vec();
    let config = config.to_str().expect("utf-8 path");
    all.extend(["--config", config]);
    ccedge_cli(&all)
}

fn json(run: &CliRun) -> Value {
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    run.stdout
        .parse::<Value>()
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{}", run.stdout))
}

/// Sends raw bytes on the control socket and returns the first reply line.
fn raw_request(socket: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A huge request is cut off by the agent: the write may fail, the reply is still there.
    let _ = s.write_all(bytes);
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line
}

#[test]
fn status_shows_the_node_in_a_table_and_as_json() {
    let dir = TempDir::new("ctl-status");
    let agent = Agent::start(dir.path(), &AgentOptions::default());

    let table = cli(&["status"], &agent.config);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    for needle in [
        "test-node",
        "phl",
        &agent.sip.to_string(),
        "mqtt://127.0.0.1:1",
        "disconnected",
        "0 active",
    ] {
        assert!(
            table.stdout.contains(needle),
            "no {needle}:\n{}",
            table.stdout
        );
    }
    // Aligned: every value starts in the same column.
    let cols: Vec<usize> = table
        .stdout
        .lines()
        .map(|l| {
            l.find("  ")
                .map_or(0, |k| k + l[k..].len() - l[k..].trim_start().len())
        })
        .collect();
    assert!(cols.windows(2).all(|w| w[0] == w[1]), "{}", table.stdout);

    let s = json(&cli(&["status", "--json"], &agent.config));
    assert_eq!(s["node_id"], "test-node");
    assert_eq!(s["site"], "phl");
    assert_eq!(s["sip_listen"], agent.sip.to_string());
    assert!(s["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(s["uptime_s"].is_u64());
    assert_eq!(s["mqtt"]["connected"], false);
    assert_eq!(s["mqtt"]["url"], "mqtt://127.0.0.1:1");
    assert!(s["mqtt"].get("since_ms").is_some() && s["mqtt"].get("last_error").is_some());
    for field in [
        "active_calls",
        "callbacks_waiting",
        "outbox_backlog",
        "announcements_active",
    ] {
        assert!(s[field].is_u64(), "{field}: {s}");
    }
    assert_eq!(s["active_calls"], 0);
}

#[test]
fn announcements_list_as_table_and_json() {
    let dir = TempDir::new("ctl-ann");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let list = json(&cli(&["announcements", "--json"], &agent.config));
    assert!(list.is_array(), "{list}");
    let table = cli(&["announcements"], &agent.config);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(
        table.stdout.contains("no announcements held") || table.stdout.starts_with("ID "),
        "{}",
        table.stdout
    );
}

#[test]
fn with_no_agent_every_command_says_so_in_one_line_and_exits_3() {
    let dir = TempDir::new("ctl-none");
    let config = write_config(dir.path(), "mqtt://127.0.0.1:1");
    let socket = dir.path().join("control.sock");
    // Also a stale socket file left by an agent killed with -9.
    let stale = std::os::unix::net::UnixListener::bind(dir.path().join("stale.sock")).unwrap();
    drop(stale);
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["calls"],
        vec!["calls", "--reveal"],
        vec!["callbacks"],
        vec!["callbacks", "cancel", "cb-1"],
        vec!["announcements", "--json"],
        vec!["events", "tail"],
    ] {
        let run = cli(&args, &config);
        assert_eq!(run.code, Some(3), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert_eq!(
            run.stderr.trim_end(),
            format!(
                "ccedge: no agent running (control socket {})",
                socket.display()
            ),
            "{args:?}"
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    std::fs::write(
        dir.path().join("stale.toml"),
        format!(
            "[control]\nsocket = \"{}\"\n",
            dir.path().join("stale.sock").display()
        ),
    )
    .unwrap();
    let run = cli(&["status"], &dir.path().join("stale.toml"));
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(run.stderr.contains("no agent running"), "{}", run.stderr);
}

#[test]
fn the_control_socket_is_0660_and_removed_on_shutdown() {
    let dir = TempDir::new("ctl-mode");
    let mut agent = Agent::start(dir.path(), &AgentOptions::default());
    let socket = agent.control_socket();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "mode {mode:o}");
    assert_eq!(cli(&["status"], &agent.config).code, Some(0));
    assert_eq!(agent.terminate(), Some(0), "{}", agent.log().join("\n"));
    assert!(!socket.exists(), "socket file left after a clean exit");
}

#[test]
fn a_second_agent_on_the_same_socket_fails_clearly_and_a_stale_one_is_replaced() {
    let dir = TempDir::new("ctl-twice");
    let mut agent = Agent::start(dir.path(), &AgentOptions::default());
    let out = Command::new(ccedge_bin())
        .args(["agent", "--config"])
        .arg(&agent.config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another ccedge agent is running"), "{err}");
    // The first one is unaffected.
    assert_eq!(cli(&["status"], &agent.config).code, Some(0));
    // Killed with -9, it leaves its socket file; the next start replaces it.
    agent.kill9();
    assert!(agent.control_socket().exists());
    let again = agent.restart();
    assert_eq!(cli(&["status"], &again.config).code, Some(0));
}

#[test]
fn garbage_a_huge_request_and_a_wrong_version_get_error_replies_and_the_agent_goes_on() {
    let dir = TempDir::new("ctl-garbage");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let socket = agent.control_socket();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"hello agent\n".to_vec(), "not JSON"),
        (b"\x00\x01\x02\xff\n".to_vec(), "not JSON"),
        (vec![b'x'; 4 * 1024 * 1024], "too large"),
        (b"{\"v\":2,\"cmd\":\"status\"}\n".to_vec(), "version"),
        (
            b"{\"v\":1,\"cmd\":\"shutdown\"}\n".to_vec(),
            "unknown command",
        ),
    ];
    for (bytes, want) in cases {
        let line = raw_request(&socket, &bytes);
        let reply: Value = line
            .parse()
            .unwrap_or_else(|e| panic!("{want}: reply not JSON ({e}): {line:?}"));
        assert_eq!(reply["v"], 1);
        assert_eq!(reply["ok"], false, "{reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| e.contains(want)),
            "{want}: {reply}"
        );
        let next = cli(&["status", "--json"], &agent.config);
        assert_eq!(next.code, Some(0), "after {want}: {}", next.stderr);
    }
    // A client that connects and says nothing does not block the others.
    let idle: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    assert_eq!(cli(&["status"], &agent.config).code, Some(0));
    drop(idle);
    let ok = raw_request(&socket, b"{\"v\":1,\"cmd\":\"status\"}\n");
    assert!(ok.contains("\"ok\":true"), "{ok}");
}

/// Runs `ccedge status --config CONFIG` as uid/gid 65534 with `setpriv`; `None` when this
/// test is not root or `setpriv` is missing.
fn status_as_nobody(config: &Path) -> Option<CliRun> {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if !root {
        return None;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(ccedge_bin())
        .args(["status", "--json", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    Some(CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[test]
fn another_user_is_refused_by_the_file_mode_and_by_the_uid_check() {
    let dir = TempDir::new("ctl-uid");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let socket = agent.control_socket();
    let Some(run) = status_as_nobody(&agent.config) else {
        eprintln!("not root, or setpriv missing: skipping");
        return;
    };
    // 0660 root:root: the file system refuses the connection.
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("permission denied on control socket"),
        "{run:?}"
    );
    // Even with the file opened up, the agent checks the peer's uid.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = status_as_nobody(&agent.config).expect("ran once");
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("permission denied: uid 65534"),
        "{run:?}"
    );
    assert!(!run.stdout.contains("test-node"), "status leaked: {run:?}");
    assert!(
        agent.wait_log("refused a client of another user", Duration::from_secs(2)),
        "the refusal is logged"
    );
    assert_eq!(cli(&["status"], &agent.config).code, Some(0));
}

#[test]
fn doctor_fails_while_the_broker_is_down_and_passes_when_it_is_up() {
    let dir = TempDir::new("ctl-doctor");
    let closed = free_tcp_port();
    let config = write_config(dir.path(), &format!("mqtt://127.0.0.1:{closed}"));
    let down = cli(&["doctor"], &config);
    assert_eq!(down.code, Some(1), "{}{}", down.stdout, down.stderr);
    let broker_line = down
        .stdout
        .lines()
        .find(|l| l.contains("broker:"))
        .unwrap_or_else(|| panic!("no broker line:\n{}", down.stdout));
    assert!(broker_line.starts_with("✘ broker:"), "{broker_line}");
    assert!(broker_line.contains(" — fix: "), "{broker_line}");
    for name in [
        "config",
        "agent",
        "state_dir",
        "sip_port",
        "rtp_ports",
        "prompts",
    ] {
        assert!(
            down.stdout
                .lines()
                .any(|l| l.starts_with(&format!("✔ {name}:"))),
            "{name} should pass:\n{}",
            down.stdout
        );
    }
    let report = json(&CliRun {
        code: Some(0),
        ..cli(&["doctor", "--json"], &config)
    });
    assert_eq!(report["ok"], false);
    let broker = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "broker"))
        .cloned()
        .expect("broker check");
    assert_eq!(broker["ok"], false);
    assert!(broker["fix"].as_str().is_some_and(|f| !f.is_empty()));

    if !have_mosquitto() {
        eprintln!("mosquitto not installed: skipping the passing half");
        return;
    }
    let broker = Mosquitto::start(dir.path());
    let config = write_config(dir.path(), &broker.url());
    let up = cli(&["doctor", "--json"], &config);
    let report: Value = up.stdout.parse().expect("json");
    let failing: Vec<&Value> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    // A host whose NTP is not synchronised fails `clock` honestly; nothing else may fail.
    assert!(
        failing
            .iter()
            .all(|c| c["name"] == "clock" && c["detail"].as_str().unwrap_or("").contains("NTP")),
        "{}",
        up.stdout
    );
    if failing.is_empty() {
        assert_eq!(up.code, Some(0), "{}", up.stdout);
        let text = cli(&["doctor"], &config);
        assert_eq!(text.code, Some(0));
        assert!(
            text.stdout.lines().all(|l| l.starts_with("✔ ")),
            "{}",
            text.stdout
        );
    }
}

#[test]
fn doctor_with_a_running_agent_reports_it_and_still_fails_on_the_broker() {
    let dir = TempDir::new("ctl-doctor-agent");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let run = cli(&["doctor"], &agent.config);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("✔ agent: running")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("✔ sip_port:") && l.contains(&agent.sip.to_string())),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("✘ broker:"), "{}", run.stdout);
}

#[test]
fn doctor_names_the_bad_config_key() {
    let dir = TempDir::new("ctl-doctor-cfg");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[rtp]\nport_min = 30000\nport_max = 20000\n").unwrap();
    let run = cli(&["doctor"], &file);
    assert_eq!(run.code, Some(1));
    let line = run.stdout.lines().next().unwrap_or_default();
    assert!(
        line.starts_with("✘ config:") && line.contains("rtp.port"),
        "{line}"
    );
    assert!(line.contains("fix:"), "{line}");
    // The other commands refuse a bad config with exit 2, naming the key.
    let status = cli(&["status"], &file);
    assert_eq!(status.code, Some(2));
    assert!(status.stderr.contains("rtp.port"), "{}", status.stderr);
}

// ── Needs the engine's answers to Command (calls, callbacks, cancel) and published events ──

/// Places one call and waits until it is answered; returns the agent's RTP address.
fn one_answered_call(
    agent: &Agent,
    gw: &mut CallGateway,
    caller: &str,
    rtp: &RtpSink,
) -> SocketAddr {
    gw.place(agent.sip, 1, caller, rtp.port());
    let ports = gw.wait_answered(agent.sip, 1, Duration::from_secs(10));
    let port = *ports.first().expect("the call was answered");
    format!("127.0.0.1:{port}").parse().unwrap()
}

#[test]
fn calls_lists_a_live_call_with_the_caller_masked_unless_revealed() {
    let dir = TempDir::new("ctl-calls");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let empty = json(&cli(&["calls", "--json"], &agent.config));
    assert_eq!(empty, Value::Array(Vec::new()));
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    let _media = one_answered_call(&agent, &mut gw, "12155550123", &rtp);

    let rows = json(&cli(&["calls", "--json"], &agent.config));
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 1, "{rows:?}");
    let c = &rows[0];
    assert_eq!(c["caller"], "+1215•••0123");
    assert_eq!(c["dialled"], "+18005550100");
    assert_eq!(c["language"], "en", "the default language: {c}");
    for field in ["call_id", "state", "codec"] {
        assert!(c[field].is_string(), "{field}: {c}");
    }
    for field in ["age_ms", "packets_sent", "packets_received"] {
        assert!(c[field].is_u64(), "{field}: {c}");
    }
    let revealed = json(&cli(&["calls", "--json", "--reveal"], &agent.config));
    assert_eq!(revealed[0]["caller"], "+12155550123");

    let table = cli(&["calls"], &agent.config);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(table.stdout.starts_with("CALL ID"), "{}", table.stdout);
    assert!(table.stdout.contains("+1215•••0123"), "{}", table.stdout);
    assert!(!table.stdout.contains("2155550123"), "{}", table.stdout);
}

#[test]
fn callbacks_lists_a_booked_callback_and_cancel_removes_it() {
    let dir = TempDir::new("ctl-callbacks");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    let media = one_answered_call(&agent, &mut gw, "12155550177", &rtp);
    let mut seq = 1u16;
    rtp.send_digit(media, Digit::D1, 101, 1000, &mut seq);
    gw.pump(agent.sip, Duration::from_millis(800));
    rtp.send_digit(media, Digit::D1, 101, 500_000, &mut seq);
    gw.pump(agent.sip, Duration::from_millis(200));
    assert!(
        agent.wait_log("callback booked (durable)", Duration::from_secs(5)),
        "{}",
        agent.log().join("\n")
    );

    let rows = json(&cli(&["callbacks", "--json"], &agent.config));
    let rows = rows.as_array().expect("array").clone();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let id = rows[0]["callback_id"].as_str().expect("id").to_owned();
    assert_eq!(rows[0]["callback_number"], "+1215•••0177");
    assert!(rows[0]["state"].is_string());
    let table = cli(&["callbacks"], &agent.config);
    assert!(
        table.stdout.contains(&id) && table.stdout.contains("+1215•••0177"),
        "{}",
        table.stdout
    );

    let cancel = cli(&["callbacks", "cancel", &id], &agent.config);
    assert_eq!(cancel.code, Some(0), "{}", cancel.stderr);
    assert!(cancel.stdout.contains(&id), "{}", cancel.stdout);
    let after = json(&cli(&["callbacks", "--json"], &agent.config));
    let still: Vec<&Value> = after
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["callback_id"] == id.as_str() && r["state"] != "cancelled")
        .collect();
    assert!(still.is_empty(), "{after}");
    // Cancelling what is not there is an error, not a crash.
    let again = cli(
        &["callbacks", "cancel", "no-such-callback", "--json"],
        &agent.config,
    );
    assert_eq!(again.code, Some(1), "{}", again.stderr);
    assert_eq!(again.stderr.lines().count(), 1, "{}", again.stderr);
}

#[test]
fn events_tail_keeps_following_until_the_agent_stops() {
    let dir = TempDir::new("ctl-tail-stop");
    let mut agent = Agent::start(dir.path(), &AgentOptions::default());
    let mut tail = Command::new(ccedge_bin())
        .args(["events", "tail", "--config"])
        .arg(&agent.config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        tail.try_wait().unwrap().is_none(),
        "events tail exited early"
    );
    assert_eq!(agent.terminate(), Some(0));
    let end = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = tail.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < end,
            "events tail outlived the agent"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    tail.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("the agent closed the event stream"), "{err}");
}

#[test]
fn events_tail_follows_call_events_one_json_per_line() {
    let dir = TempDir::new("ctl-events");
    let broker = have_mosquitto().then(|| Mosquitto::start(dir.path()));
    let config = write_config(
        dir.path(),
        &broker
            .as_ref()
            .map_or_else(|| "mqtt://127.0.0.1:1".to_owned(), Mosquitto::url),
    );
    let agent = Agent::start_with_config(dir.path(), &config);
    let mut tail = Command::new(ccedge_bin())
        .args(["events", "tail", "--json", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        tail.try_wait().unwrap().is_none(),
        "events tail exited early"
    );
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    let _media = one_answered_call(&agent, &mut gw, "12155550188", &rtp);
    let line = rx.recv_timeout(Duration::from_secs(10));
    let _ = tail.kill();
    let mut err = String::new();
    if let Some(mut e) = tail.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let line = line.unwrap_or_else(|_| panic!("no event within 10 s; tail stderr: {err}"));
    let ev: Value = line.parse().expect("one JSON event per line");
    assert!(ev["type"].is_string(), "{ev}");
    assert!(!line.contains("2155550188"), "caller not masked: {line}");
}

/// Opens an `events_tail` stream on the control socket and returns it with its first reply.
fn follower(socket: &Path) -> (UnixStream, String) {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"v\":1,\"cmd\":\"events_tail\"}\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    let _ = r.read_line(&mut line);
    (s, line)
}

// Regression: 16 `ccedge events tail` followers took every control client slot and
// `ccedge status` got "busy".
#[test]
fn events_tail_followers_cannot_lock_out_the_other_commands() {
    let dir = TempDir::new("ctl-followers");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let socket = agent.control_socket();
    let mut followers = Vec::new();
    for i in 0..edge::control::server::MAX_FOLLOWERS {
        let (s, line) = follower(&socket);
        assert!(line.contains("\"ok\":true"), "follower {i}: {line}");
        followers.push(s);
    }
    // Every command still works, the CLI's own `events tail` excepted, which says why.
    for _ in 0..3 {
        let status = cli(&["status", "--json"], &agent.config);
        assert_eq!(json(&status)["node_id"], "test-node", "{}", status.stdout);
    }
    let (_, line) = follower(&socket);
    assert!(
        line.contains("\"ok\":false") && line.contains("events tail"),
        "{line}"
    );
    let extra = cli(&["events", "tail"], &agent.config);
    assert_ne!(extra.code, Some(0));
    assert!(extra.stderr.contains("events tail"), "{}", extra.stderr);
    // A follower that leaves frees its place.
    drop(followers.pop());
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_s, line) = follower(&socket);
        if line.contains("\"ok\":true") {
            break;
        }
        assert!(std::time::Instant::now() < end, "{line}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
