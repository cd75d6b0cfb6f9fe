//! The agent on a full state disk (issue #14): it starts, takes calls, plays its cached
//! announcement, tells a caller who asks for a callback that it could not be booked, reports
//! the problem in `ccedge status` and `ccedge doctor`, and books again once space returns,
//! without a restart. The state directory is a small tmpfs (needs root to mount; skipped
//! otherwise), filled with a file.

#![allow(clippy::disallowed_methods)] // the tests time real processes

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ccedge_tests::broker::{longest_tone_run, pcmu_frames, sha256_hex, tone_wav};
use ccedge_tests::{
    ccedge_cli, have_sipp, sipp, Agent, AgentOptions, CallGateway, CliRun, RtpSink, TempDir,
};
use shared::dtmf::Digit;

/// A tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` (a file `dir/fill` until `ENOSPC`).
fn fill(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("fill")).expect("fill file");
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    // Whatever is left below a block.
    while f.write_all(&[0u8]).is_ok() {}
}

fn cli(args: &[&str], config: &Path) -> CliRun {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", config.to_str().expect("utf-8 path")]);
    ccedge_cli(&all)
}

fn json(run: &CliRun) -> serde_json::Value {
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    serde_json::from_str(&run.stdout).expect("JSON")
}

/// Places call number `n` (distinct per agent: it makes the Call-ID) from `caller`, presses "1" (callback) and "1" again (confirm the caller's
/// number), and lets the agent answer for a few seconds.
fn ask_for_callback(agent: &Agent, n: u64, caller: &str) {
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    gw.place(agent.sip, n, caller, rtp.port());
    let ports = gw.wait_answered(agent.sip, 1, Duration::from_secs(10));
    let port = *ports.first().expect("the call was answered");
    let media: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut seq = 1u16;
    rtp.send_digit(media, Digit::D1, 101, 1000, &mut seq);
    gw.pump(agent.sip, Duration::from_millis(800));
    rtp.send_digit(media, Digit::D1, 101, 500_000, &mut seq);
    gw.pump(agent.sip, Duration::from_millis(1500));
    gw.hang_up_all(agent.sip);
    let _ = gw.wait_ended(agent.sip, Duration::from_secs(5));
}

fn count(agent: &Agent, needle: &str) -> usize {
    agent.log().iter().filter(|l| l.contains(needle)).count()
}

fn wait_count(agent: &Agent, needle: &str, n: usize) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if count(agent, needle) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn the_agent_starts_and_takes_calls_on_a_full_state_disk_and_recovers() {
    if !have_sipp() {
        eprintln!("sipp not installed: skipped (CI installs it)");
        return;
    }
    let dir = TempDir::new("full-disk");
    let state = dir.path().join("state");
    let Some(_mount) = Tmpfs::mount(&state, "2m") else {
        eprintln!("cannot mount a tmpfs (needs root): skipped");
        return;
    };

    // A cached announcement (as the link would have written it) offering callbacks.
    let audio = tone_wav(1000.0, 3.0, 0.5);
    let h = sha256_hex(&audio);
    std::fs::create_dir_all(state.join("audio")).unwrap();
    std::fs::create_dir_all(state.join("announcements")).unwrap();
    std::fs::write(state.join("audio").join(format!("{h}.wav")), &audio).unwrap();
    std::fs::write(
        state.join("announcements").join("outage-phl.json"),
        format!(
            r#"{{"id":"outage-phl","version":1,"priority":10,"scope":{{}},"audio_sha256":"{h}","offer_callback":true,"language":"en"}}"#
        ),
    )
    .unwrap();

    // A first run books one callback, then stops cleanly.
    let mut first = Agent::start(&state, &AgentOptions::default());
    ask_for_callback(&first, 1, "12155550101");
    assert!(
        wait_count(&first, "callback booked (durable)", 1),
        "{}",
        first.log().join("\n")
    );
    assert_eq!(first.terminate(), Some(0));
    assert!(
        !state.join("ccedge.db-shm").exists(),
        "a clean stop leaves no shared-memory file"
    );

    // The disk fills up; the agent starts again all the same.
    fill(&state);
    let agent = first.restart();
    let cfg = agent.config.clone();
    let status = json(&cli(&["status", "--json"], &cfg));
    let problem = status["store_problem"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !problem.is_empty(),
        "status shows no store problem: {status}"
    );

    // Calls are answered and hear the cached announcement.
    let sink = RtpSink::new();
    let run = sipp(
        "listen.xml",
        agent.sip,
        &[("rtpport", sink.port().to_string())],
        &["-d", "2500"],
    );
    assert_eq!(run.code, Some(0), "sipp failed:\n{}", run.output);
    let heard = pcmu_frames(&sink.packets());
    assert!(
        longest_tone_run(&heard, 1000.0) >= 25,
        "the caller did not hear the cached announcement ({} frames)",
        heard.len()
    );

    // A caller asking for a callback is told it could not be booked.
    ask_for_callback(&agent, 2, "12155550102");
    assert!(
        wait_count(&agent, "callback could not be booked", 1),
        "{}",
        agent.log().join("\n")
    );
    assert_eq!(count(&agent, "callback booked (durable)"), 0);
    let status = json(&cli(&["status", "--json"], &cfg));
    assert_eq!(status["stats"]["callbacks_failed"], 1, "{status}");
    assert!(status["store_problem"].is_string(), "{status}");

    // doctor says so.
    let doctor = cli(&["doctor"], &cfg);
    assert_eq!(doctor.code, Some(1), "{}", doctor.stdout);
    assert!(
        doctor.stdout.contains("✘ store") && doctor.stdout.contains("✘ state_dir"),
        "{}",
        doctor.stdout
    );

    // Space returns: the store opens, the first run's callback is back in the queue, and
    // bookings work again, without a restart.
    std::fs::remove_file(state.join("fill")).unwrap();
    let t0 = Instant::now();
    let mut status = json(&cli(&["status", "--json"], &cfg));
    while !status["store_problem"].is_null() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
        status = json(&cli(&["status", "--json"], &cfg));
    }
    assert!(status["store_problem"].is_null(), "{status}");
    assert!(
        wait_count(&agent, "callback queue restored from disk", 1),
        "{}",
        agent.log().join("\n")
    );
    ask_for_callback(&agent, 3, "12155550103");
    assert!(
        wait_count(&agent, "callback booked (durable)", 1),
        "{}",
        agent.log().join("\n")
    );
    let rows = json(&cli(&["callbacks", "--json", "--reveal"], &cfg));
    let numbers: Vec<&str> = rows
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["callback_number"].as_str())
        .collect();
    assert!(
        numbers.contains(&"+12155550101") && numbers.contains(&"+12155550103"),
        "{rows}"
    );
    assert!(!numbers.contains(&"+12155550102"), "{rows}");
}
