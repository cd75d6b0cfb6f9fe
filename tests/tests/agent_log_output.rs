//! The agent keeps working when its log output fails (issue #14): standard error's reader
//! goes away (journald restarting: writes fail with `EPIPE`), or every write fails
//! (`/dev/full`: `ENOSPC`). The real agent binary, sipp as the gateway.

#![allow(clippy::disallowed_methods)] // the tests time real processes

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ccedge_tests::{ccedge_bin, ccedge_cli, free_port_range, have_sipp, sipp, RtpSink, TempDir};

/// A config in `dir` with SIP on a fixed free loopback port (the start line on standard
/// error cannot be read in these tests), offline.
fn config(dir: &Path) -> (PathBuf, std::net::SocketAddr) {
    let sip = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free UDP port");
    let (pmin, pmax) = free_port_range(20);
    let path = dir.join("ccedge.toml");
    let text = format!(
        "[node]\nid = \"test-node\"\nsite = \"phl\"\nstate_dir = \"{dir}\"\n\n\
         [sip]\nlisten = \"{sip}\"\nallow = [\"127.0.0.0/8\"]\n\n\
         [rtp]\nport_min = {pmin}\nport_max = {pmax}\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\n\
         [control]\nsocket = \"{sock}\"\n",
        dir = dir.display(),
        sock = dir.join("control.sock").display(),
    );
    std::fs::write(&path, text).expect("write config");
    (path, sip)
}

fn spawn(config: &Path, stderr: Stdio) -> Child {
    Command::new(ccedge_bin())
        .arg("agent")
        .arg("--config")
        .arg(config)
        // Plenty of lines: every call event and more.
        .env("RUST_LOG", "debug")
        .env_remove("CCEDGE__SIP__LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn ccedge")
}

/// `ccedge status --json`, once it answers (within 20 s).
fn status(config: &Path) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let run = ccedge_cli(&[
            "status",
            "--json",
            "--config",
            config.to_str().expect("utf-8"),
        ]);
        if run.code == Some(0) {
            return serde_json::from_str(&run.stdout).expect("status JSON");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the agent does not answer: {}",
            run.stderr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Places one call that listens for 2 s; it must succeed and the agent's audio arrive.
fn call(agent: &mut Child, sip: std::net::SocketAddr) {
    let sink = RtpSink::new();
    let run = sipp(
        "listen.xml",
        sip,
        &[("rtpport", sink.port().to_string())],
        &["-d", "2000"],
    );
    assert!(
        agent.try_wait().expect("try_wait").is_none(),
        "the agent died during the call: {:?}\n{}",
        agent.try_wait(),
        run.output
    );
    assert_eq!(run.code, Some(0), "the call failed:\n{}", run.output);
    assert!(
        sink.packets().len() >= 50,
        "the caller got {} RTP packets",
        sink.packets().len()
    );
}

/// SIGTERM, and the exit code.
fn terminate(mut agent: Child) -> Option<i32> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(agent.id().to_string())
        .status();
    let t0 = Instant::now();
    loop {
        if let Some(s) = agent.try_wait().expect("try_wait") {
            return s.code();
        }
        if t0.elapsed() > Duration::from_secs(15) {
            let _ = agent.kill();
            panic!("the agent ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_agent_survives_its_log_reader_going_away() {
    if !have_sipp() {
        eprintln!("sipp not installed: skipped (CI installs it)");
        return;
    }
    let dir = TempDir::new("log-pipe");
    let (cfg, sip) = config(dir.path());
    let mut agent = spawn(&cfg, Stdio::piped());
    // Read until the agent is up, then close the pipe's only read end.
    let mut lines = BufReader::new(agent.stderr.take().expect("stderr")).lines();
    let up = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("accepting calls"));
    assert!(up, "the agent did not start");
    drop(lines);

    call(&mut agent, sip);
    call(&mut agent, sip);
    let s = status(&cfg);
    assert!(
        s["log_write_errors"].as_u64() > Some(0),
        "no failed log write counted: {s}"
    );
    assert_eq!(s["stats"]["calls_total"], 2, "{s}");
    assert_eq!(terminate(agent), Some(0), "a graceful stop exits 0");
}

#[test]
fn the_agent_survives_a_log_that_cannot_be_written() {
    if !have_sipp() {
        eprintln!("sipp not installed: skipped (CI installs it)");
        return;
    }
    let Ok(full) = File::options().write(true).open("/dev/full") else {
        eprintln!("/dev/full not available: skipped");
        return;
    };
    let dir = TempDir::new("log-full");
    let (cfg, sip) = config(dir.path());
    let mut agent = spawn(&cfg, Stdio::from(full));
    let before = status(&cfg);
    assert!(
        before["log_write_errors"].as_u64() > Some(0),
        "writes to /dev/full did not fail: {before}"
    );

    call(&mut agent, sip);
    let s = status(&cfg);
    assert!(
        s["log_write_errors"].as_u64() > before["log_write_errors"].as_u64(),
        "the call logged nothing: {s}"
    );
    assert_eq!(s["stats"]["calls_total"], 1, "{s}");
    assert_eq!(terminate(agent), Some(0), "a graceful stop exits 0");
}
