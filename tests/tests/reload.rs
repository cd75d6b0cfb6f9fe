//! `SIGHUP` with calls up, against the real agent binary: the calls keep their audio and end
//! normally, what can change live does (the allow list, the prompts, the log level), a broken
//! file changes nothing, and a key that needs a restart is reported and kept.

#![allow(clippy::disallowed_methods)] // the tests time real sockets

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ccedge_tests::broker::{longest_tone_run, pcmu_frames, sha256_hex, tone_wav};
use ccedge_tests::{
    ccedge_cli, write_config, Agent, AgentOptions, CallGateway, Received, RtpSink, TempDir,
};
use firmware_sim::gateway::uac::UacState;
use serde_json::Value;

/// A config file for the technician commands that names only the agent's control socket, so
/// they keep working while the agent's own file is broken on purpose.
fn cli_config(dir: &Path) -> PathBuf {
    let path = dir.join("cli.toml");
    let text = format!(
        "[control]\nsocket = \"{}\"\n",
        dir.join("control.sock").display()
    );
    std::fs::write(&path, text).expect("write cli config");
    path
}

fn cli_json(cli: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--json", "--config", cli.to_str().expect("utf-8 path")]);
    let run = ccedge_cli(&all);
    assert_eq!(run.code, Some(0), "ccedge {args:?}: {}", run.stderr);
    serde_json::from_str(&run.stdout).expect("json")
}

fn status(cli: &Path) -> Value {
    cli_json(cli, &["status"])
}

fn calls(cli: &Path) -> Vec<Value> {
    cli_json(cli, &["calls"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `ccedge status` shows `ok` successful and `failed` failed reloads.
fn wait_reloads(cli: &Path, ok: u64, failed: u64) -> Value {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(cli);
        let r = &s["reloads"];
        if r["ok"] == ok && r["failed"] == failed {
            return s;
        }
        assert!(
            Instant::now() < end,
            "expected {ok} ok and {failed} failed reloads, status shows {r}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Replaces `from` by `to` in the agent's config file.
fn edit_config(agent: &Agent, from: &str, to: &str) {
    let text = std::fs::read_to_string(&agent.config).expect("read config");
    assert!(text.contains(from), "`{from}` not in the config:\n{text}");
    std::fs::write(&agent.config, text.replace(from, to)).expect("write config");
}

/// The longest time between two consecutive packets that arrived in `from..=to`, and how
/// many arrived there.
fn longest_gap(packets: &[Received], from: Instant, to: Instant) -> (Duration, usize) {
    let inside: Vec<Instant> = packets
        .iter()
        .map(|p| p.at)
        .filter(|&t| t >= from && t <= to)
        .collect();
    let gap = inside
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX);
    (gap, inside.len())
}

/// Serves the gateway's SIP until `t`.
fn pump_until(gw: &mut CallGateway, agent: &Agent, t: Instant) {
    let left = t.saturating_duration_since(Instant::now());
    gw.pump(agent.sip, left);
}

/// Serves the gateway's SIP until `rtp` has received `n` packets (the call's audio runs).
fn audio_running(gw: &mut CallGateway, agent: &Agent, rtp: &RtpSink, n: usize) {
    let end = Instant::now() + Duration::from_secs(5);
    while rtp.packets().len() < n {
        assert!(Instant::now() < end, "no audio: {}", log_text(agent));
        gw.pump(agent.sip, Duration::from_millis(20));
    }
}

fn after(packets: &[Received], t: Instant) -> Vec<Received> {
    packets.iter().filter(|p| p.at >= t).cloned().collect()
}

/// The call placed as number `n` answered our BYE with 200.
fn bye_answered(gw: &CallGateway, n: u64) -> bool {
    gw.calls()
        .values()
        .find(|c| c.call_id.starts_with(&format!("sim-{n:08x}@")))
        .and_then(|c| c.last_response.as_ref())
        .is_some_and(|(status, _, method)| *status == 200 && method == "BYE")
}

fn log_text(agent: &Agent) -> String {
    agent.log().join("\n")
}

#[test]
fn a_call_keeps_its_audio_through_sighup_and_only_new_calls_get_the_new_prompts() {
    let dir = TempDir::new("hup-audio");
    // An announcement in the cache (a 600 Hz tone) and a replaced "press 1" prompt (1000 Hz).
    let wav = tone_wav(600.0, 4.0, 0.5);
    let sha = sha256_hex(&wav);
    std::fs::create_dir_all(dir.path().join("audio")).unwrap();
    std::fs::create_dir_all(dir.path().join("announcements")).unwrap();
    std::fs::write(dir.path().join("audio").join(format!("{sha}.wav")), &wav).unwrap();
    std::fs::write(
        dir.path().join("announcements").join("hup-tone.json"),
        format!(
            r#"{{"id":"hup-tone","version":1,"priority":10,"audio_sha256":"{sha}","offer_callback":true}}"#
        ),
    )
    .unwrap();
    let prompts = dir.path().join("prompts");
    std::fs::create_dir_all(&prompts).unwrap();
    std::fs::write(
        prompts.join("menu_callback.wav"),
        tone_wav(1000.0, 1.0, 0.5),
    )
    .unwrap();
    let opts = AgentOptions {
        ivr_extra: format!("prompts_dir = \"{}\"", prompts.display()),
        ..AgentOptions::default()
    };
    let mut agent = Agent::start(dir.path(), &opts);
    let cli = cli_config(dir.path());
    let mut gw = CallGateway::new();

    let first = RtpSink::new();
    gw.place(agent.sip, 1, "12155550123", first.port());
    assert_eq!(
        gw.wait_answered(agent.sip, 1, Duration::from_secs(10))
            .len(),
        1
    );
    // Wait until the caller hears the announcement, then replace the prompt and reload.
    let end = Instant::now() + Duration::from_secs(10);
    while longest_tone_run(&pcmu_frames(&first.packets()), 600.0) < 10 {
        assert!(
            Instant::now() < end,
            "the announcement never played: {}",
            log_text(&agent)
        );
        gw.pump(agent.sip, Duration::from_millis(50));
    }
    std::fs::write(
        prompts.join("menu_callback.wav"),
        tone_wav(1400.0, 1.0, 0.5),
    )
    .unwrap();
    let hup_at = Instant::now();
    agent.signal("HUP");
    gw.pump(agent.sip, Duration::from_millis(1500));
    assert!(
        agent.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        log_text(&agent)
    );
    assert!(agent.is_running(), "SIGHUP stopped the agent");

    // The RTP went on around the signal without a gap, and it was still the announcement.
    let packets = first.packets();
    let (gap, n) = longest_gap(
        &packets,
        hup_at - Duration::from_millis(500),
        hup_at + Duration::from_millis(1500),
    );
    assert!(
        gap <= Duration::from_millis(200) && n >= 80,
        "RTP around SIGHUP: longest gap {gap:?}, {n} packets in 2 s"
    );
    let heard_after = pcmu_frames(&after(&packets, hup_at));
    assert!(
        longest_tone_run(&heard_after, 600.0) >= 40,
        "the announcement did not go on after SIGHUP"
    );
    let listed = calls(&cli);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["state"], "answered", "{listed:?}");

    // A call placed after the reload.
    let second = RtpSink::new();
    gw.place(agent.sip, 2, "12155550124", second.port());
    assert_eq!(
        gw.wait_answered(agent.sip, 2, Duration::from_secs(10))
            .len(),
        2
    );
    // Both play the announcement (4 s) and then the menu.
    gw.pump(agent.sip, Duration::from_secs(8));
    let heard_first = pcmu_frames(&first.packets());
    let heard_second = pcmu_frames(&second.packets());
    assert!(
        longest_tone_run(&heard_first, 1000.0) >= 40 && longest_tone_run(&heard_first, 1400.0) == 0,
        "the call up before SIGHUP must keep the prompt it started with (1000 Hz): \
         1000 Hz {} frames, 1400 Hz {} frames",
        longest_tone_run(&heard_first, 1000.0),
        longest_tone_run(&heard_first, 1400.0)
    );
    assert!(
        longest_tone_run(&heard_second, 1400.0) >= 40
            && longest_tone_run(&heard_second, 1000.0) == 0,
        "a call after SIGHUP must get the new prompt (1400 Hz): 1400 Hz {} frames, \
         1000 Hz {} frames",
        longest_tone_run(&heard_second, 1400.0),
        longest_tone_run(&heard_second, 1000.0)
    );

    // Both calls end normally: our BYE is answered with 200 and they leave the list.
    assert_eq!(calls(&cli).len(), 2);
    gw.hang_up_all(agent.sip);
    gw.pump(agent.sip, Duration::from_millis(1000));
    assert!(
        bye_answered(&gw, 1) && bye_answered(&gw, 2),
        "{:?}",
        gw.calls()
    );
    assert!(calls(&cli).is_empty());
    let s = status(&cli);
    assert_eq!(s["reloads"]["ok"], 1, "{s}");
    assert_eq!(s["reloads"]["failed"], 0, "{s}");
    assert_eq!(agent.terminate(), Some(0));
}

#[test]
fn sighup_applies_a_narrower_allow_list_and_leaves_the_call_already_up() {
    let dir = TempDir::new("hup-allow");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let cli = cli_config(dir.path());
    let mut gw = CallGateway::new(); // 127.0.0.1
    let first = RtpSink::new();
    gw.place(agent.sip, 1, "12155550123", first.port());
    assert_eq!(
        gw.wait_answered(agent.sip, 1, Duration::from_secs(10))
            .len(),
        1
    );

    audio_running(&mut gw, &agent, &first, 40);

    // Only 127.0.0.2 may call from now on.
    edit_config(
        &agent,
        "allow = [\"127.0.0.0/8\"]",
        "allow = [\"127.0.0.2/32\"]",
    );
    let hup_at = Instant::now();
    agent.signal("HUP");
    let s = wait_reloads(&cli, 1, 0);
    assert_eq!(s["reloads"]["last_ok"], true, "{s}");
    assert_eq!(
        s["reloads"]["restart_pending"],
        serde_json::json!([]),
        "{s}"
    );
    assert!(
        agent
            .log()
            .iter()
            .any(|l| l.contains("configuration reloaded") && l.contains("sip.allow")),
        "{}",
        log_text(&agent)
    );

    // 127.0.0.1 is refused now: its new call gets no answer at all (silence).
    let denied_before = s["stats"]["sip_denied"].as_u64().unwrap();
    let refused = RtpSink::new();
    gw.place(agent.sip, 2, "12155550125", refused.port());
    gw.pump(agent.sip, Duration::from_secs(2));
    let call2 = gw
        .calls()
        .values()
        .find(|c| c.call_id.starts_with("sim-00000002@"))
        .unwrap();
    assert_eq!(call2.state, UacState::Calling, "{call2:?}");
    assert!(call2.statuses.is_empty(), "{:?}", call2.statuses);
    let denied_after = status(&cli)["stats"]["sip_denied"].as_u64().unwrap();
    assert!(
        denied_after > denied_before,
        "{denied_before} → {denied_after}"
    );

    // 127.0.0.2 is allowed.
    let mut other = CallGateway::bind("127.0.0.2");
    let third = RtpSink::new();
    other.place(agent.sip, 3, "12155550126", third.port());
    assert_eq!(
        other
            .wait_answered(agent.sip, 1, Duration::from_secs(10))
            .len(),
        1,
        "{}",
        log_text(&agent)
    );

    // The call from before is unaffected: its audio goes on, it is listed, and it ends with
    // a BYE that the agent answers although its source is no longer allowed.
    pump_until(&mut gw, &agent, hup_at + Duration::from_millis(1600));
    let (gap, n) = longest_gap(
        &first.packets(),
        hup_at - Duration::from_millis(500),
        hup_at + Duration::from_millis(1500),
    );
    assert!(
        gap <= Duration::from_millis(200) && n >= 80,
        "RTP around SIGHUP: longest gap {gap:?}, {n} packets in 2 s"
    );
    assert_eq!(calls(&cli).len(), 2);
    gw.hang_up(agent.sip, 1);
    gw.pump(agent.sip, Duration::from_millis(800));
    assert!(bye_answered(&gw, 1), "{:?}", gw.calls());
    other.hang_up_all(agent.sip);
    other.pump(agent.sip, Duration::from_millis(800));
    assert!(bye_answered(&other, 3), "{:?}", other.calls());
    assert!(calls(&cli).is_empty());
    let s = status(&cli);
    assert_eq!(s["reloads"]["ok"], 1, "{s}");
    assert_eq!(s["reloads"]["failed"], 0, "{s}");
}

#[test]
fn a_broken_file_on_sighup_changes_nothing_and_is_reported() {
    let dir = TempDir::new("hup-broken");
    let mut agent = Agent::start(dir.path(), &AgentOptions::default());
    let cli = cli_config(dir.path());
    let good = std::fs::read_to_string(&agent.config).unwrap();
    let mut gw = CallGateway::new();
    let first = RtpSink::new();
    gw.place(agent.sip, 1, "12155550123", first.port());
    assert_eq!(
        gw.wait_answered(agent.sip, 1, Duration::from_secs(10))
            .len(),
        1
    );

    audio_running(&mut gw, &agent, &first, 40);

    // Not TOML at all.
    std::fs::write(&agent.config, "[sip\nallow = (\n").unwrap();
    let hup_at = Instant::now();
    agent.signal("HUP");
    let s = wait_reloads(&cli, 0, 1);
    assert!(agent.is_running(), "a broken file stopped the agent");
    assert_eq!(s["reloads"]["last_ok"], false, "{s}");
    let config_name = agent.config.display().to_string();
    let why = s["reloads"]["last_error"].as_str().unwrap_or_default();
    assert!(why.contains(&config_name), "{why}");
    assert!(
        agent.log().iter().any(|l| l.contains("ERROR")
            && l.contains("reload failed")
            && l.contains(&config_name)),
        "{}",
        log_text(&agent)
    );

    // Valid TOML, but a value out of range: refused naming the key.
    std::fs::write(
        &agent.config,
        good.replace(
            "allow = [\"127.0.0.0/8\"]",
            "allow = [\"127.0.0.0/8\"]\nrate_limit_per_source = 0",
        ),
    )
    .unwrap();
    agent.signal("HUP");
    let s = wait_reloads(&cli, 0, 2);
    let why = s["reloads"]["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("sip.rate_limit_per_source"), "{why}");

    // The call from before still plays and is listed; a new call is answered and gets audio.
    pump_until(&mut gw, &agent, hup_at + Duration::from_millis(1600));
    let (gap, n) = longest_gap(
        &first.packets(),
        hup_at - Duration::from_millis(500),
        hup_at + Duration::from_millis(1500),
    );
    assert!(
        gap <= Duration::from_millis(200) && n >= 80,
        "RTP around SIGHUP: longest gap {gap:?}, {n} packets in 2 s"
    );
    let second = RtpSink::new();
    gw.place(agent.sip, 2, "12155550124", second.port());
    assert_eq!(
        gw.wait_answered(agent.sip, 2, Duration::from_secs(10))
            .len(),
        2
    );
    assert!(second.wait_for(25, Duration::from_secs(3)) >= 25);
    assert_eq!(calls(&cli).len(), 2);

    // With the file corrected but not yet reloaded, doctor points at the failed reload.
    std::fs::write(&agent.config, &good).unwrap();
    let report = cli_doctor(&agent.config);
    let check = reload_check(&report);
    assert_eq!(check["ok"], false, "{report}");
    assert!(
        check["detail"]
            .as_str()
            .is_some_and(|d| d.contains("sip.rate_limit_per_source")),
        "{check}"
    );
    // Reloaded, it passes.
    agent.signal("HUP");
    wait_reloads(&cli, 1, 2);
    let report = cli_doctor(&agent.config);
    assert_eq!(reload_check(&report)["ok"], true, "{report}");

    gw.hang_up_all(agent.sip);
    gw.pump(agent.sip, Duration::from_millis(800));
    assert!(
        bye_answered(&gw, 1) && bye_answered(&gw, 2),
        "{:?}",
        gw.calls()
    );
    assert_eq!(agent.terminate(), Some(0));
}

fn cli_doctor(config: &Path) -> Value {
    let run = ccedge_cli(&["doctor", "--json", "--config", config.to_str().unwrap()]);
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn reload_check(report: &Value) -> Value {
    report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "reload"))
        .cloned()
        .unwrap_or_else(|| panic!("no reload check: {report}"))
}

#[test]
fn a_key_that_needs_a_restart_is_reported_and_kept() {
    let dir = TempDir::new("hup-restart");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let cli = cli_config(dir.path());
    let mut gw = CallGateway::new();
    let first = RtpSink::new();
    gw.place(agent.sip, 1, "12155550123", first.port());
    assert_eq!(
        gw.wait_answered(agent.sip, 1, Duration::from_secs(10))
            .len(),
        1
    );

    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    edit_config(
        &agent,
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    agent.signal("HUP");
    let s = wait_reloads(&cli, 1, 0);
    assert_eq!(
        s["reloads"]["restart_pending"],
        serde_json::json!(["sip.listen"]),
        "{s}"
    );
    assert_eq!(s["sip_listen"], agent.sip.to_string(), "{s}");
    let warned = |agent: &Agent| {
        agent
            .log()
            .iter()
            .filter(|l| l.contains("WARN") && l.contains("sip.listen") && l.contains("restart"))
            .count()
    };
    assert!(
        agent.wait_log("configuration reloaded", Duration::from_secs(5)),
        "{}",
        log_text(&agent)
    );
    assert_eq!(warned(&agent), 1, "{}", log_text(&agent));
    // Kept: nothing listens on the new port, and the old address answers calls.
    assert!(
        UdpSocket::bind(("127.0.0.1", port)).is_ok(),
        "the agent moved to the new port"
    );
    let second = RtpSink::new();
    gw.place(agent.sip, 2, "12155550124", second.port());
    assert_eq!(
        gw.wait_answered(agent.sip, 2, Duration::from_secs(10))
            .len(),
        2
    );
    assert_eq!(calls(&cli).len(), 2);
    // Reported again at the next reload, until a restart.
    agent.signal("HUP");
    let s = wait_reloads(&cli, 2, 0);
    assert_eq!(
        s["reloads"]["restart_pending"],
        serde_json::json!(["sip.listen"])
    );
    let end = Instant::now() + Duration::from_secs(5);
    while warned(&agent) < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(warned(&agent), 2, "{}", log_text(&agent));
    let shown = ccedge_cli(&["status", "--config", cli.to_str().unwrap()]);
    assert!(
        shown.stdout.contains("restart to apply sip.listen"),
        "{}",
        shown.stdout
    );

    gw.hang_up_all(agent.sip);
    gw.pump(agent.sip, Duration::from_millis(800));
    assert!(
        bye_answered(&gw, 1) && bye_answered(&gw, 2),
        "{:?}",
        gw.calls()
    );
}

#[test]
fn the_log_level_changes_on_sighup() {
    let dir = TempDir::new("hup-log");
    let config = write_config(dir.path(), "mqtt://127.0.0.1:1");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[log]\nlevel = \"info\"\n");
    std::fs::write(&config, text).unwrap();
    let agent = Agent::start_with_log_level_from_config(dir.path(), &config);
    let cli = cli_config(dir.path());
    let offered = |agent: &Agent| {
        agent
            .log()
            .iter()
            .filter(|l| l.contains("call.offered"))
            .count()
    };
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    let call = |gw: &mut CallGateway, n: u64| {
        gw.place(agent.sip, n, "12155550123", rtp.port());
        assert_eq!(
            gw.wait_answered(agent.sip, n as usize, Duration::from_secs(10))
                .len(),
            n as usize
        );
        gw.pump(agent.sip, Duration::from_millis(300));
    };
    call(&mut gw, 1);
    assert_eq!(offered(&agent), 1, "{}", log_text(&agent));

    edit_config(&agent, "level = \"info\"", "level = \"warn\"");
    agent.signal("HUP");
    wait_reloads(&cli, 1, 0);
    call(&mut gw, 2);
    assert_eq!(
        offered(&agent),
        1,
        "info logged at warn: {}",
        log_text(&agent)
    );

    edit_config(&agent, "level = \"warn\"", "level = \"debug\"");
    agent.signal("HUP");
    wait_reloads(&cli, 2, 0);
    call(&mut gw, 3);
    assert_eq!(offered(&agent), 2, "{}", log_text(&agent));
    assert!(
        agent.log().iter().any(|l| l.contains("DEBUG")),
        "{}",
        log_text(&agent)
    );
    gw.hang_up_all(agent.sip);
    gw.pump(agent.sip, Duration::from_millis(500));
    assert!((1..=3).all(|n| bye_answered(&gw, n)), "{:?}", gw.calls());
}

#[test]
fn sighup_takes_announcements_dropped_into_the_cache_and_withdraws_removed_ones() {
    let dir = TempDir::new("hup-cache");
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    let cli = cli_config(dir.path());
    let listed = || cli_json(&cli, &["announcements"]);
    assert_eq!(listed(), serde_json::json!([]));

    // A technician drops an announcement and its audio into the cache by hand.
    let wav = tone_wav(600.0, 2.0, 0.5);
    let sha = sha256_hex(&wav);
    std::fs::create_dir_all(dir.path().join("audio")).unwrap();
    std::fs::create_dir_all(dir.path().join("announcements")).unwrap();
    std::fs::write(dir.path().join("audio").join(format!("{sha}.wav")), &wav).unwrap();
    let doc = dir.path().join("announcements").join("dropped.json");
    std::fs::write(
        &doc,
        format!(r#"{{"id":"dropped","version":2,"audio_sha256":"{sha}"}}"#),
    )
    .unwrap();
    agent.signal("HUP");
    wait_reloads(&cli, 1, 0);
    let held = listed();
    assert_eq!(held[0]["id"], "dropped", "{held}");
    assert_eq!(held[0]["version"], 2, "{held}");
    assert_eq!(held[0]["state"], "active", "{held}");
    assert_eq!(held[0]["audio_present"], true, "{held}");

    // A new call hears it.
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    gw.place(agent.sip, 1, "12155550123", rtp.port());
    assert_eq!(
        gw.wait_answered(agent.sip, 1, Duration::from_secs(10))
            .len(),
        1
    );
    let end = Instant::now() + Duration::from_secs(8);
    while longest_tone_run(&pcmu_frames(&rtp.packets()), 600.0) < 50 {
        assert!(
            Instant::now() < end,
            "the dropped announcement was not heard"
        );
        gw.pump(agent.sip, Duration::from_millis(50));
    }

    // Removed from the cache, it is withdrawn at the next reload, as after a restart.
    std::fs::remove_file(&doc).unwrap();
    agent.signal("HUP");
    wait_reloads(&cli, 2, 0);
    assert_eq!(listed(), serde_json::json!([]));
    gw.hang_up_all(agent.sip);
    gw.pump(agent.sip, Duration::from_millis(500));
    assert!(bye_answered(&gw, 1), "{:?}", gw.calls());
}

#[test]
fn sighup_while_draining_is_ignored_and_a_second_sigterm_still_stops_at_once() {
    let dir = TempDir::new("hup-drain");
    let mut agent = Agent::start(dir.path(), &AgentOptions::default());
    let mut gw = CallGateway::new();
    let rtp = RtpSink::new();
    gw.place(agent.sip, 1, "12155550123", rtp.port());
    assert_eq!(
        gw.wait_answered(agent.sip, 1, Duration::from_secs(10))
            .len(),
        1
    );
    // SIGTERM with a call up: the agent sends BYE and waits for the answer, which this
    // gateway does not give.
    agent.signal("TERM");
    assert!(
        agent.wait_log("shutting down", Duration::from_secs(5)),
        "{}",
        log_text(&agent)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.is_running(), "the agent did not wait for the call");
    agent.signal("HUP");
    assert!(
        agent.wait_log("SIGHUP ignored", Duration::from_secs(5)),
        "{}",
        log_text(&agent)
    );
    assert!(
        agent.is_running(),
        "SIGHUP while draining stopped the agent"
    );
    let at = Instant::now();
    agent.signal("TERM");
    let end = at + Duration::from_secs(2);
    while agent.is_running() {
        assert!(
            Instant::now() < end,
            "a second SIGTERM did not stop the agent"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
