//! Harness for ccedge's end-to-end tests: the real `ccedge` binary on ephemeral ports, sipp
//! as the gateway, real UDP for RTP, real files for the state.
//!
//! * [`Agent`] writes a config file into a fresh state directory, starts the agent, reads the
//!   SIP address it bound from its log, and kills it on drop.
//! * [`sipp`] runs one of the scenarios in `tests/sipp/` against it.
//! * [`RtpSink`] is the caller's media side: it receives the agent's RTP, decodes it and
//!   measures level, pacing and loss; it can send RFC 4733 key presses back.

// Wall-clock timing is what these end-to-end tests measure.
#![allow(clippy::disallowed_methods)]

pub mod broker;
pub mod interop;
pub mod rawsip;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shared::dtmf::Digit;
use shared::g711::Law;
use shared::rtp::{PayloadType, RtpHeader, RtpPacket, Ssrc, TelephoneEvent};

/// The agent binary under test: `ccedge-under-test`, built by this crate from the same code
/// as `ccedge`, next to the test executable's `deps/` directory.
///
/// # Panics
/// When the test executable's path is unknown.
#[must_use]
pub fn ccedge_bin() -> PathBuf {
    let mut dir = std::env::current_exe().expect("test executable path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("ccedge-under-test")
}

/// The `firmware-sim` binary built from this checkout (next to [`ccedge_bin`]).
#[must_use]
pub fn firmware_sim_bin() -> PathBuf {
    ccedge_bin().with_file_name("firmware-sim-under-test")
}

/// Whether sipp is installed (`apt-get install sip-tester`); `.ci/run` installs it.
#[must_use]
pub fn have_sipp() -> bool {
    Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `ccedge-<tag>-<pid>-<n>`.
    ///
    /// # Panics
    /// When the directory cannot be created.
    #[must_use]
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "ccedge-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }

    /// The path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free UDP port range of `n` ports on 127.0.0.1 (probed; another process may still race).
#[must_use]
pub fn free_port_range(n: u16) -> (u16, u16) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let offset =
        (u64::from(std::process::id()) * 97 + NEXT.fetch_add(1, Ordering::Relaxed) * 211) % 20_000;
    let mut base = 30_000 + u16::try_from(offset).unwrap_or(0);
    loop {
        let ok = (base..base + n).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok());
        if ok {
            return (base, base + n - 1);
        }
        base = if base > 60_000 { 30_000 } else { base + n };
    }
}

/// Options for [`Agent::start`].
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Extra TOML appended to the generated config (e.g. `[sip]\nanswer_delay_ms = 2000`
    /// must then not repeat a section the harness writes: use `sip_extra` for `[sip]` keys).
    pub extra: String,
    /// Extra lines inside `[sip]`.
    pub sip_extra: String,
    /// Extra lines inside `[ivr]`.
    pub ivr_extra: String,
    /// Extra lines inside `[rtp]`.
    pub rtp_extra: String,
    /// RTP ports to use.
    pub rtp_ports: u16,
    /// `mqtt.url` (default: a closed port, so the agent runs offline and never touches a
    /// broker another test or the machine runs).
    pub mqtt_url: String,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            extra: String::new(),
            sip_extra: String::new(),
            ivr_extra: String::new(),
            rtp_extra: String::new(),
            rtp_ports: 200,
            mqtt_url: "mqtt://127.0.0.1:1".into(),
        }
    }
}

/// A running `ccedge agent`.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    /// The SIP address it listens on.
    pub sip: SocketAddr,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// Writes a config into `state_dir` and starts the agent on an ephemeral SIP port.
    ///
    /// # Panics
    /// When the agent does not start within 10 s.
    #[must_use]
    pub fn start(state_dir: &Path, opts: &AgentOptions) -> Agent {
        Self::start_with_allow(state_dir, opts, "127.0.0.0/8")
    }

    /// Like [`Agent::start`] with `sip.allow = [allow]`.
    ///
    /// # Panics
    /// When the agent does not start within 20 s.
    #[must_use]
    pub fn start_with_allow(state_dir: &Path, opts: &AgentOptions, allow: &str) -> Agent {
        let (pmin, pmax) = free_port_range(opts.rtp_ports);
        let config = state_dir.join("ccedge.toml");
        let text = format!(
            "[node]\nid = \"test-node\"\nsite = \"phl\"\nstate_dir = \"{}\"\n\n[sip]\nlisten = \"127.0.0.1:0\"\nallow = [\"{allow}\"]\n{}\n\n[rtp]\nport_min = {pmin}\nport_max = {pmax}\n{}\n\n[mqtt]\nurl = \"{}\"\n\n[control]\nsocket = \"{}\"\n\n[ivr]\n{}\n{}\n",
            state_dir.display(),
            opts.sip_extra,
            opts.rtp_extra,
            opts.mqtt_url,
            state_dir.join("control.sock").display(),
            opts.ivr_extra,
            opts.extra,
        );
        std::fs::write(&config, text).expect("write config");
        Self::spawn(state_dir, &config)
    }

    /// Starts the agent again with the same config (after [`Agent::kill9`]).
    #[must_use]
    pub fn restart(&self) -> Agent {
        Self::spawn(&self.state_dir, &self.config)
    }

    fn spawn(state_dir: &Path, config: &Path) -> Agent {
        Self::spawn_with_log(state_dir, config, Some("info,edge=debug"))
    }

    /// Starts the agent; `rust_log: None` leaves the log filter to `log.level`.
    fn spawn_with_log(state_dir: &Path, config: &Path, rust_log: Option<&str>) -> Agent {
        let mut cmd = Command::new(ccedge_bin());
        match rust_log {
            Some(filter) => cmd.env("RUST_LOG", filter),
            None => cmd.env_remove("RUST_LOG"),
        };
        let mut child = cmd
            .arg("agent")
            .arg("--config")
            .arg(config)
            .env_remove("CCEDGE__SIP__LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ccedge");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("accepting calls") {
                    let _ = tx.send(line.clone());
                }
                if std::env::var_os("CCEDGE_TEST_LOG").is_some() {
                    eprintln!("agent: {line}");
                }
                sink.lock().expect("log").push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "agent did not start: {:?}",
                    log.lock().map(|l| l.join("\n"))
                )
            });
        let sip = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("sip="))
            .and_then(|a| a.trim_matches('"').parse().ok())
            .expect("sip= in the start line");
        Agent {
            child: Some(child),
            sip,
            state_dir: state_dir.to_path_buf(),
            config: config.to_path_buf(),
            log,
        }
    }

    /// Everything the agent logged so far.
    #[must_use]
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until a log line containing `needle` appears (or `timeout`).
    #[must_use]
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    ///
    /// # Panics
    /// When the agent does not exit within 15 s.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = libc_pid(&c);
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            assert!(Instant::now() < end, "agent ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn libc_pid(c: &Child) -> u32 {
    c.id()
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The outcome of one sipp run.
#[derive(Debug)]
pub struct SippRun {
    /// Exit code (0: every call succeeded).
    pub code: Option<i32>,
    /// sipp's stdout and stderr.
    pub output: String,
}

/// Runs `tests/sipp/<scenario>` against `target` with `-key name value` pairs and extra
/// arguments; at most one call unless `extra` says otherwise.
///
/// # Panics
/// When sipp cannot be started.
#[must_use]
pub fn sipp(
    scenario: &str,
    target: SocketAddr,
    keys: &[(&str, String)],
    extra: &[&str],
) -> SippRun {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(scenario);
    let mut cmd = Command::new("sipp");
    cmd.arg(target.to_string())
        .arg("-sf")
        .arg(&path)
        .args(["-i", "127.0.0.1", "-p", "0", "-mp", "0"])
        .args(["-nostdin", "-timeout", "60s", "-timeout_error"]);
    if !extra.contains(&"-m") {
        cmd.args(["-m", "1"]);
    }
    for (k, v) in keys {
        cmd.arg("-key").arg(k).arg(v);
    }
    let out = cmd
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run sipp");
    SippRun {
        code: out.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// One received RTP packet.
#[derive(Debug, Clone)]
pub struct Received {
    /// Arrival time.
    pub at: Instant,
    /// Source address.
    pub from: SocketAddr,
    /// Payload type.
    pub pt: u8,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub ts: u32,
    /// Marker bit.
    pub marker: bool,
    /// Payload.
    pub payload: Vec<u8>,
}

/// The caller's media endpoint: a UDP socket on 127.0.0.1 that records what arrives.
#[derive(Debug)]
pub struct RtpSink {
    socket: Arc<UdpSocket>,
    packets: Arc<Mutex<Vec<Received>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RtpSink {
    /// Binds an ephemeral port and starts recording.
    ///
    /// # Panics
    /// When no socket can be bound.
    #[must_use]
    pub fn new() -> RtpSink {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind rtp sink"));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let packets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, p, st) = (Arc::clone(&socket), Arc::clone(&packets), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    if let Ok(pkt) = RtpPacket::parse(&buf[..n]) {
                        p.lock().expect("packets").push(Received {
                            at: Instant::now(),
                            from,
                            pt: pkt.payload_type().get(),
                            seq: pkt.sequence(),
                            ts: pkt.timestamp(),
                            marker: pkt.marker(),
                            payload: pkt.payload().to_vec(),
                        });
                    }
                }
            }
        });
        RtpSink {
            socket,
            packets,
            stop,
        }
    }

    /// The port the agent is told to send to.
    ///
    /// # Panics
    /// Never in practice (the socket is bound).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.socket.local_addr().expect("addr").port()
    }

    /// What arrived so far.
    #[must_use]
    pub fn packets(&self) -> Vec<Received> {
        self.packets.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Waits until at least `n` packets arrived (or `timeout`); returns how many did.
    #[must_use]
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let end = Instant::now() + timeout;
        loop {
            let got = self.packets.lock().map(|p| p.len()).unwrap_or(0);
            if got >= n || Instant::now() >= end {
                return got;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends one key press as RFC 4733 events (three updates and three end packets, 20 ms
    /// apart) to `to`, with payload type `pt`.
    ///
    /// # Panics
    /// When the socket cannot send.
    pub fn send_digit(&self, to: SocketAddr, digit: Digit, pt: u8, ts: u32, seq: &mut u16) {
        for (i, (end, dur)) in [
            (false, 160u16),
            (false, 320),
            (false, 480),
            (true, 640),
            (true, 640),
            (true, 640),
        ]
        .into_iter()
        .enumerate()
        {
            let h = RtpHeader {
                marker: i == 0,
                payload_type: PayloadType::new(pt).expect("pt"),
                sequence: *seq,
                timestamp: ts,
                ssrc: Ssrc(0xC0FFEE),
            };
            *seq = seq.wrapping_add(1);
            let mut payload = [0u8; 4];
            TelephoneEvent::for_digit(digit, end, 10, dur)
                .expect("event")
                .emit(&mut payload)
                .expect("emit");
            let mut buf = [0u8; 64];
            let n = h.emit(&payload, &mut buf).expect("emit rtp");
            self.socket.send_to(&buf[..n], to).expect("send dtmf");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `n` 20 ms frames of silence (keeps symmetric RTP latched here).
    ///
    /// # Panics
    /// When the socket cannot send.
    pub fn send_silence(&self, to: SocketAddr, pt: u8, n: u16, seq: &mut u16, ts: &mut u32) {
        let law = if pt == 8 { Law::Alaw } else { Law::Ulaw };
        for _ in 0..n {
            let h = RtpHeader {
                marker: false,
                payload_type: PayloadType::new(pt).expect("pt"),
                sequence: *seq,
                timestamp: *ts,
                ssrc: Ssrc(0xC0FFEE),
            };
            *seq = seq.wrapping_add(1);
            *ts = ts.wrapping_add(160);
            let mut buf = [0u8; 200];
            let n = h.emit(&[law.silence(); 160], &mut buf).expect("emit");
            self.socket.send_to(&buf[..n], to).expect("send");
        }
    }
}

impl Default for RtpSink {
    fn default() -> Self {
        RtpSink::new()
    }
}

impl Drop for RtpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Places call `n` from `caller` through `gw`, waits for the answer, presses 1 (call back)
/// and 1 (confirm the caller's number); returns the agent's RTP address and the next RTP
/// sequence number for more keys.
pub fn call_and_press_one_one(
    agent: &Agent,
    gw: &mut CallGateway,
    n: u64,
    caller: &str,
    rtp: &RtpSink,
) -> (SocketAddr, u16) {
    gw.place(agent.sip, n, caller, rtp.port());
    let ports = gw.wait_answered(agent.sip, 1, Duration::from_secs(10));
    let port = *ports.last().expect("the call was answered");
    let media = SocketAddr::from(([127, 0, 0, 1], port));
    let mut seq = 1u16;
    rtp.send_digit(media, Digit::D1, 101, 1000, &mut seq);
    gw.pump(agent.sip, Duration::from_millis(800));
    rtp.send_digit(media, Digit::D1, 101, 500_000, &mut seq);
    gw.pump(agent.sip, Duration::from_millis(200));
    (media, seq)
}

/// Asserts the caller on `rtp` heard each of `prompts` (built-in English) to its last frame,
/// in this order.
pub fn assert_heard_in_order(rtp: &RtpSink, prompts: &[shared::ivr::Prompt]) {
    let heard = pcmu_frames(rtp);
    let set = edge::media::prompts::PromptSet::builtin().expect("built-in prompts");
    let mut at = 0;
    for &p in prompts {
        let mut pl = shared::ivr::Playlist::new();
        pl.push(p).expect("one prompt fits");
        for seg in set.expand(&pl, &|_| None) {
            let frames = seg.frames(Law::Ulaw);
            match find_frames(&heard, frames, at) {
                Some(i) => at = i + frames.len(),
                None => panic!(
                    "{p:?} ({} frames) was not heard in full after frame {at} of {}",
                    frames.len(),
                    heard.len()
                ),
            }
        }
    }
}

/// What a caller received as 160-byte PCMU frames (payload type 0), in arrival order.
#[must_use]
pub fn pcmu_frames(rtp: &RtpSink) -> Vec<[u8; 160]> {
    rtp.packets()
        .iter()
        .filter(|p| p.pt == 0 && p.payload.len() == 160)
        .map(|p| {
            let mut f = [0u8; 160];
            f.copy_from_slice(&p.payload);
            f
        })
        .collect()
}

/// Index of the first complete occurrence of `needle` in `hay` at or after `from` (an
/// empty `needle` is found at `from`).
#[must_use]
pub fn find_frames(hay: &[[u8; 160]], needle: &[[u8; 160]], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return Some(from);
    }
    (from..hay.len().saturating_sub(needle.len() - 1))
        .find(|&i| hay[i..i + needle.len()] == *needle)
}

/// RMS level in dBFS of decoded G.711 payloads (`-inf` for digital silence).
#[must_use]
pub fn level_dbfs(packets: &[Received], law: Law) -> f64 {
    let mut sum = 0f64;
    let mut n = 0usize;
    for p in packets {
        for &b in &p.payload {
            let s = f64::from(law.decode_sample(b)) / 32768.0;
            sum += s * s;
            n += 1;
        }
    }
    if n == 0 {
        return f64::NEG_INFINITY;
    }
    10.0 * (sum / n as f64).log10()
}

/// Inter-arrival deviations from 20 ms, in milliseconds, sorted.
#[must_use]
pub fn pacing_deviation_ms(packets: &[Received]) -> Vec<f64> {
    let mut v: Vec<f64> = packets
        .windows(2)
        .map(|w| ((w[1].at - w[0].at).as_secs_f64() * 1000.0 - 20.0).abs())
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

// ───────────────────────────────────────────────────────────────────────────────────────────
// Control socket and technician CLI helpers (tests/tests/cli_control.rs).
// ───────────────────────────────────────────────────────────────────────────────────────────

/// What one `ccedge` command printed and how it exited.
#[derive(Debug, Clone)]
pub struct CliRun {
    /// Exit code.
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `ccedge-under-test ARGS` to completion (no `CCEDGE__…` variables inherited).
///
/// # Panics
/// When the binary cannot be run.
#[must_use]
pub fn ccedge_cli(args: &[&str]) -> CliRun {
    let mut cmd = Command::new(ccedge_bin());
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CCEDGE__") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run ccedge");
    CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it).
///
/// # Panics
/// When no socket can be bound.
#[must_use]
pub fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A config file for `ccedge` in `dir` (state in `dir`, SIP on an ephemeral loopback port,
/// a free RTP range, the control socket `dir/control.sock`) with `mqtt.url = mqtt_url`.
///
/// # Panics
/// When the file cannot be written.
#[must_use]
pub fn write_config(dir: &Path, mqtt_url: &str) -> PathBuf {
    let (pmin, pmax) = free_port_range(20);
    let config = dir.join("ccedge.toml");
    let text = format!(
        "[node]\nid = \"test-node\"\nsite = \"phl\"\nstate_dir = \"{dir}\"\n\n[sip]\nlisten = \"127.0.0.1:0\"\nallow = [\"127.0.0.0/8\"]\n\n[rtp]\nport_min = {pmin}\nport_max = {pmax}\n\n[mqtt]\nurl = \"{mqtt_url}\"\n\n[control]\nsocket = \"{sock}\"\n",
        dir = dir.display(),
        sock = dir.join("control.sock").display(),
    );
    std::fs::write(&config, text).expect("write config");
    config
}

impl Agent {
    /// Starts the agent with the config written by [`write_config`] (e.g. pointing at a
    /// [`TestBroker`]).
    ///
    /// # Panics
    /// When the agent does not start within 20 s.
    #[must_use]
    pub fn start_with_config(state_dir: &Path, config: &Path) -> Agent {
        Self::spawn(state_dir, config)
    }

    /// The control socket the harness configures: `state_dir/control.sock`.
    #[must_use]
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir.join("control.sock")
    }

    /// `ccedge status --json` of this agent.
    ///
    /// # Panics
    /// When the command fails or prints no JSON.
    #[must_use]
    pub fn status_json(&self) -> serde_json::Value {
        let run = ccedge_cli(&[
            "status",
            "--json",
            "--config",
            &self.config.to_string_lossy(),
        ]);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        serde_json::from_str(&run.stdout).expect("status json")
    }

    /// `ccedge calls --json` of this agent (empty when it prints no list).
    #[must_use]
    pub fn calls_json(&self) -> Vec<serde_json::Value> {
        let run = ccedge_cli(&[
            "calls",
            "--json",
            "--config",
            &self.config.to_string_lossy(),
        ]);
        serde_json::from_str::<serde_json::Value>(&run.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

/// A gateway placing calls at the agent from one SIP socket, with firmware-sim's UAC.
#[derive(Debug)]
pub struct CallGateway {
    sip: UdpSocket,
    calls: std::collections::BTreeMap<String, firmware_sim::gateway::uac::UacCall>,
}

impl CallGateway {
    /// Binds an ephemeral SIP port on 127.0.0.1.
    ///
    /// # Panics
    /// When no socket can be bound.
    #[must_use]
    pub fn new() -> CallGateway {
        let sip = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sip.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        CallGateway {
            sip,
            calls: std::collections::BTreeMap::new(),
        }
    }

    /// Sends an INVITE from `caller` (E.164 digits) to `+18005550100`, offering RTP on
    /// `rtp_port`.
    ///
    /// # Panics
    /// When the INVITE cannot be sent.
    pub fn place(&mut self, agent: SocketAddr, n: u64, caller: &str, rtp_port: u16) {
        self.place_to(agent, n, caller, "18005550100", rtp_port);
    }

    /// Sends an INVITE from `caller` to `dialled` (both E.164 digits), offering RTP on
    /// `rtp_port`.
    ///
    /// # Panics
    /// When the INVITE cannot be sent.
    pub fn place_to(
        &mut self,
        agent: SocketAddr,
        n: u64,
        caller: &str,
        dialled: &str,
        rtp_port: u16,
    ) {
        use firmware_sim::gateway::uac::{Offer, UacCall};
        let local = self.sip.local_addr().expect("addr").to_string();
        let mut c = UacCall::new(
            n,
            &local,
            &agent.to_string(),
            rtp_port,
            Some(caller),
            dialled,
            Offer::Standard,
        );
        self.sip.send_to(&c.invite(), agent).expect("send INVITE");
        self.calls.insert(c.call_id.clone(), c);
    }

    /// Reads and answers the agent's SIP for `d`.
    pub fn pump(&mut self, agent: SocketAddr, d: Duration) {
        let end = Instant::now() + d;
        let mut buf = [0u8; 8192];
        while Instant::now() < end {
            let Ok((n, _)) = self.sip.recv_from(&mut buf) else {
                continue;
            };
            let Some(id) = firmware_sim::gateway::uac::call_id_of(&buf[..n]).map(str::to_string)
            else {
                continue;
            };
            if let Some(c) = self.calls.get_mut(&id) {
                for reply in c.on_datagram(&buf[..n]) {
                    let _ = self.sip.send_to(&reply, agent);
                }
            }
        }
    }

    /// Sends a BYE for every answered call.
    ///
    /// # Panics
    /// When a BYE cannot be sent.
    pub fn hang_up_all(&mut self, agent: SocketAddr) {
        // Built first, then sent back to back: one burst, as a gateway ending a campaign.
        let byes: Vec<Vec<u8>> = self
            .calls
            .values_mut()
            .filter(|c| c.state == firmware_sim::gateway::uac::UacState::Confirmed)
            .map(|c| c.bye())
            .collect();
        for bye in byes {
            self.sip.send_to(&bye, agent).expect("send BYE");
        }
    }

    /// Pumps until no call is up any more (every call ended by either side, or refused), or
    /// `timeout`; returns whether they all ended.
    pub fn wait_ended(&mut self, agent: SocketAddr, timeout: Duration) -> bool {
        use firmware_sim::gateway::uac::UacState;
        let end = Instant::now() + timeout;
        loop {
            let up = self
                .calls
                .values()
                .any(|c| matches!(c.state, UacState::Calling | UacState::Confirmed));
            if !up {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            self.pump(agent, Duration::from_millis(20));
        }
    }

    /// Pumps until `n` calls are answered (or `timeout`); returns each answered call's
    /// agent-side RTP port.
    pub fn wait_answered(&mut self, agent: SocketAddr, n: usize, timeout: Duration) -> Vec<u16> {
        let end = Instant::now() + timeout;
        loop {
            let ports: Vec<u16> = self
                .calls
                .values()
                .filter(|c| c.state == firmware_sim::gateway::uac::UacState::Confirmed)
                .filter_map(|c| c.answer.map(|(_, port)| port))
                .collect();
            if ports.len() >= n || Instant::now() >= end {
                return ports;
            }
            self.pump(agent, Duration::from_millis(50));
        }
    }
}

impl Default for CallGateway {
    fn default() -> Self {
        CallGateway::new()
    }
}

// ───────────────────────────────────────────────────────────────────────────────────────────
// Signals and several gateway addresses (tests/tests/reload.rs).
// ───────────────────────────────────────────────────────────────────────────────────────────

impl Agent {
    /// Starts the agent with `config` and no `RUST_LOG`, so `log.level` decides what it logs
    /// (it must be `info` or more verbose: the start is recognised by an info line).
    ///
    /// # Panics
    /// When the agent does not start within 20 s.
    #[must_use]
    pub fn start_with_log_level_from_config(state_dir: &Path, config: &Path) -> Agent {
        Self::spawn_with_log(state_dir, config, None)
    }

    /// Sends a signal by name (`HUP`, `TERM`, `INT`) with `kill`.
    ///
    /// # Panics
    /// When the agent was already stopped, or `kill` fails.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("agent running").id();
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} {pid} failed");
    }

    /// Whether the agent process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl CallGateway {
    /// Binds an ephemeral SIP port on `ip` (any 127.x.y.z address works on Linux), so a test
    /// can place calls from a second source address.
    ///
    /// # Panics
    /// When no socket can be bound.
    #[must_use]
    pub fn bind(ip: &str) -> CallGateway {
        let sip = UdpSocket::bind((ip, 0)).expect("bind");
        sip.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        CallGateway {
            sip,
            calls: std::collections::BTreeMap::new(),
        }
    }

    /// The calls placed so far, by SIP Call-ID.
    #[must_use]
    pub fn calls(
        &self,
    ) -> &std::collections::BTreeMap<String, firmware_sim::gateway::uac::UacCall> {
        &self.calls
    }

    /// Sends a BYE for the answered call placed as number `n` (see [`CallGateway::place`]).
    ///
    /// # Panics
    /// When there is no such answered call, or the BYE cannot be sent.
    pub fn hang_up(&mut self, agent: SocketAddr, n: u64) {
        let c = self
            .calls
            .values_mut()
            .find(|c| c.call_id.starts_with(&format!("sim-{n:08x}@")))
            .filter(|c| c.state == firmware_sim::gateway::uac::UacState::Confirmed)
            .expect("an answered call with that number");
        let bye = c.bye();
        self.sip.send_to(&bye, agent).expect("send BYE");
    }
}
