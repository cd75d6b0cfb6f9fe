//! Harness for the interoperability tests (`tests/tests/interop.rs`): SIP software nobody on
//! the ccedge team wrote, driven as a gateway, a softphone or a proxy would be.
//!
//! * [`peer_binary`] finds a peer on `PATH` and decides whether its test runs or is skipped.
//! * [`PeerProcess`] runs a peer in its own process group, records what it prints, and ends
//!   the whole group when dropped.
//! * [`Baresip`], [`Linphonec`] and [`Kamailio`] configure and drive each peer.
//! * [`SipMessage`], [`Dialog`] and [`SipEndpoint`] are a small RFC 3261 user agent client for
//!   the tests that write their own requests (the proxy and the vendor-shaped INVITEs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

// ───────────────────────────────────────────────────────────────────────────────────────────
// Finding and running peers
// ───────────────────────────────────────────────────────────────────────────────────────────

/// Where `name` is installed: the first executable of that name on `PATH`, then in the
/// standard system directories for daemons (`kamailio` is in `sbin`, which a non-root
/// user's `PATH` usually lacks).
#[must_use]
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The peer `name` for a test, or `None` when the test must be skipped because the peer is
/// not installed (it prints why). In CI (`CI` set) a missing peer fails the test instead:
/// `.ci/run` installs every peer (`package` is the Debian package to name).
///
/// # Panics
/// In CI when the peer is missing.
#[must_use]
pub fn peer_binary(name: &str, package: &str) -> Option<PathBuf> {
    if let Some(p) = find_binary(name) {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{name} is required in CI (apt-get install {package})"
    );
    eprintln!("SKIPPED: {name} is not installed (apt-get install {package})");
    None
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
/// When no socket can be bound.
#[must_use]
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// An even UDP port `p` on 127.0.0.1 with `p + 1` free too (an RTP/RTCP pair).
#[must_use]
pub fn free_rtp_pair() -> u16 {
    let (base, _) = crate::free_port_range(2);
    if base % 2 == 0 {
        return base;
    }
    let (base, _) = crate::free_port_range(4);
    base + base % 2
}

/// A peer running in its own process group; its stdout and stderr lines are recorded. Dropping
/// it sends SIGTERM to the group, then SIGKILL to what is left after 3 s.
#[derive(Debug)]
pub struct PeerProcess {
    name: String,
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl PeerProcess {
    /// Starts `cmd` (stdout and stderr piped and recorded; stdin as the caller set it).
    ///
    /// # Panics
    /// When the process cannot be started.
    #[must_use]
    pub fn spawn(name: &str, mut cmd: Command) -> PeerProcess {
        use std::os::unix::process::CommandExt;
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let echo = std::env::var_os("CCEDGE_TEST_LOG").is_some();
        let out = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        let err = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        for stream in [out, err].into_iter().flatten() {
            let sink = Arc::clone(&lines);
            let tag = name.to_owned();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if echo {
                        eprintln!("{tag}: {line}");
                    }
                    sink.lock().expect("lines").push(line);
                }
            });
        }
        PeerProcess {
            name: name.to_owned(),
            child: Some(child),
            lines,
        }
    }

    /// The process id (also its process group id).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Takes the piped stdin (when the command was given `Stdio::piped()` for it).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.as_mut().and_then(|c| c.stdin.take())
    }

    /// Everything printed so far.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Everything printed so far, one string.
    #[must_use]
    pub fn output(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits until a printed line contains `needle`; whether it did within `timeout`.
    #[must_use]
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.lines().iter().any(|l| l.contains(needle)) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Ends the process group: SIGTERM, then SIGKILL after 3 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                // Children of the peer (Kamailio's workers) may still be exiting.
                std::thread::sleep(Duration::from_millis(100));
                signal("-KILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{}: still running 3 s after SIGTERM, killed", self.name);
        signal("-KILL");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

// ───────────────────────────────────────────────────────────────────────────────────────────
// baresip
// ───────────────────────────────────────────────────────────────────────────────────────────

/// baresip (1.0) as a softphone: G.711 only, a 440 Hz tone as its microphone (`ausine`), what
/// it hears goes nowhere (`aubridge`), no sound card. It is driven over its `ctrl_tcp` JSON
/// interface and prints a SIP trace (`-s`) that the tests read.
#[derive(Debug)]
pub struct Baresip {
    process: PeerProcess,
    ctrl: TcpStream,
    buf: Vec<u8>,
    events: Vec<Value>,
    /// Its SIP address.
    pub sip: SocketAddr,
}

impl Baresip {
    /// Writes `config` and `accounts` into `dir` (account `sip:{user}@127.0.0.1`) and starts
    /// `bin`; waits up to 10 s for its control socket.
    ///
    /// # Panics
    /// When baresip does not start.
    #[must_use]
    pub fn start(bin: &Path, dir: &Path, user: &str) -> Baresip {
        Self::start_with(bin, dir, user, "")
    }

    /// [`Baresip::start`] with extra account parameters (e.g. `;answermode=auto`).
    ///
    /// # Panics
    /// When baresip does not start.
    #[must_use]
    pub fn start_with(bin: &Path, dir: &Path, user: &str, account_params: &str) -> Baresip {
        let sip_port = free_udp_port();
        let ctrl_port = crate::free_tcp_port();
        let rtp = free_rtp_pair();
        let modules = find_module_dir(bin);
        let config = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t127.0.0.1:{sip_port}\n\
             call_local_timeout\t30\n\
             call_max_calls\t\t1\n\
             rtp_ports\t\t{rtp}-{}\n\
             audio_player\t\taubridge,nowhere\n\
             audio_alert\t\taubridge,nowhere\n\
             audio_source\t\tausine,440\n\
             ausrc_srate\t\t48000\n\
             ausrc_channels\t\t2\n\
             module_path\t\t{modules}\n\
             module\t\t\tg711.so\n\
             module\t\t\tausine.so\n\
             module\t\t\taubridge.so\n\
             module_tmp\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             module_app\t\tctrl_tcp.so\n\
             ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}\n",
            rtp + 3,
        );
        std::fs::write(dir.join("config"), config).expect("baresip config");
        std::fs::write(
            dir.join("accounts"),
            format!(
                "\"Interop Caller\" <sip:{user}@127.0.0.1>;regint=0;audio_codecs=PCMU,PCMA{account_params}\n"
            ),
        )
        .expect("baresip accounts");
        let mut cmd = Command::new(bin);
        cmd.arg("-f")
            .arg(dir)
            .arg("-s")
            .env("HOME", dir)
            .stdin(Stdio::null());
        let mut process = PeerProcess::spawn("baresip", cmd);
        let end = Instant::now() + Duration::from_secs(10);
        let ctrl = loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", ctrl_port)) {
                break s;
            }
            assert!(
                Instant::now() < end && !process.exited(),
                "baresip did not open its control socket:\n{}",
                process.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        ctrl.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        Baresip {
            process,
            ctrl,
            buf: Vec::new(),
            events: Vec::new(),
            sip: SocketAddr::from(([127, 0, 0, 1], sip_port)),
        }
    }

    /// Sends one `ctrl_tcp` command (`dial`, `sndcode`, `hangup`, …).
    ///
    /// # Panics
    /// When the control socket is gone.
    pub fn command(&mut self, command: &str, params: &str) {
        let body =
            serde_json::json!({"command": command, "params": params, "token": command}).to_string();
        let frame = format!("{}:{body},", body.len());
        self.ctrl
            .write_all(frame.as_bytes())
            .expect("baresip control socket");
    }

    fn read_events(&mut self) {
        let mut chunk = [0u8; 4096];
        if let Ok(n) = self.ctrl.read(&mut chunk) {
            self.buf.extend_from_slice(&chunk[..n]);
        }
        // Netstrings: `<len>:<json>,`.
        loop {
            let Some(colon) = self.buf.iter().position(|&b| b == b':') else {
                return;
            };
            let Some(len) = std::str::from_utf8(&self.buf[..colon])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            else {
                self.buf.clear();
                return;
            };
            if self.buf.len() < colon + 1 + len + 1 {
                return;
            }
            let json = &self.buf[colon + 1..colon + 1 + len];
            if let Ok(v) = serde_json::from_slice::<Value>(json) {
                self.events.push(v);
            }
            self.buf.drain(..colon + 1 + len + 1);
        }
    }

    /// Waits for an event of type `kind` (`CALL_ESTABLISHED`, `CALL_CLOSED`, …).
    pub fn wait_event(&mut self, kind: &str, timeout: Duration) -> Option<Value> {
        let end = Instant::now() + timeout;
        loop {
            self.read_events();
            if let Some(e) = self.events.iter().find(|e| e["type"] == kind) {
                return Some(e.clone());
            }
            if Instant::now() >= end {
                return None;
            }
        }
    }

    /// Every event so far.
    pub fn events(&mut self) -> Vec<Value> {
        self.read_events();
        self.events.clone()
    }

    /// What baresip printed: its log and the SIP trace.
    #[must_use]
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// The SIP messages of its trace: each with whether baresip sent it (`true`) or received
    /// it, and the text from the start line on.
    #[must_use]
    pub fn sip_trace(&self) -> Vec<(bool, SipMessage)> {
        // The trace prints `UDP <src> -> <dst>` and then the message, ending at a line
        // holding an ANSI reset.
        let lines = self.process.lines();
        let me = self.sip.to_string();
        let mut out = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let l = strip_ansi(&lines[i]);
            if let Some(rest) = l.strip_prefix("UDP ") {
                let sent = rest.split(" -> ").next() == Some(me.as_str());
                let mut text = String::new();
                i += 1;
                while i < lines.len() {
                    let raw = &lines[i];
                    if raw.contains("\u{1b}[;m") || raw.starts_with("UDP ") {
                        break;
                    }
                    text.push_str(&strip_ansi(raw));
                    text.push_str("\r\n");
                    i += 1;
                }
                if let Some(m) = SipMessage::parse(text.as_bytes()) {
                    out.push((sent, m));
                }
            } else {
                i += 1;
            }
        }
        out
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// baresip's module directory: `<prefix>/lib/baresip/modules` for `<prefix>/bin/baresip`
/// (or the multiarch `lib/<triplet>/baresip/modules`).
fn find_module_dir(bin: &Path) -> String {
    let prefix = bin
        .canonicalize()
        .ok()
        .and_then(|b| b.parent().and_then(Path::parent).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/usr"));
    let direct = prefix.join("lib/baresip/modules");
    if direct.join("g711.so").exists() {
        return direct.display().to_string();
    }
    if let Ok(entries) = std::fs::read_dir(prefix.join("lib")) {
        for e in entries.flatten() {
            let d = e.path().join("baresip/modules");
            if d.join("g711.so").exists() {
                return d.display().to_string();
            }
        }
    }
    direct.display().to_string()
}

// ───────────────────────────────────────────────────────────────────────────────────────────
// linphonec
// ───────────────────────────────────────────────────────────────────────────────────────────

/// linphonec (linphone-cli 5.1) as a softphone: commands on its stdin, its own configuration
/// file, IPv4 only, WAV files instead of a sound card (`soundcard use files`, no file: it
/// sends silence), keys as RFC 4733 events (`use_rfc2833=1`) or in-band tones, never SIP INFO
/// (`use_info=0`), its codecs as installed (it offers Opus and Speex before G.711). It logs at
/// level 6 (SIP included) to a file the tests read.
#[derive(Debug)]
pub struct Linphonec {
    process: PeerProcess,
    stdin: ChildStdin,
    log: PathBuf,
    /// Its SIP address.
    pub sip: SocketAddr,
}

impl Linphonec {
    /// Writes `linphonerc` into `dir` (identity `"Interop Caller" <sip:{user}@127.0.0.1>`,
    /// `HOME` in `dir`) and starts `bin`; waits up to 10 s for its prompt.
    ///
    /// # Panics
    /// When linphonec does not start.
    #[must_use]
    pub fn start(bin: &Path, dir: &Path, user: &str) -> Linphonec {
        Self::start_with(bin, dir, user, true)
    }

    /// [`Linphonec::start`], with keys as RFC 4733 events (`rfc4733`) or, without
    /// telephone-event in its offer, as in-band tones in the audio.
    ///
    /// # Panics
    /// When linphonec does not start.
    #[must_use]
    pub fn start_with(bin: &Path, dir: &Path, user: &str, rfc4733: bool) -> Linphonec {
        let sip_port = free_udp_port();
        let rtp = free_rtp_pair();
        let home = dir.join("home");
        // liblinphone does not bring up its SIP transports when it cannot open its database.
        std::fs::create_dir_all(home.join(".local/share/linphone")).expect("linphone home");
        let rc = dir.join("linphonerc");
        let config = format!(
            "[sip]\n\
             sip_port={sip_port}\n\
             sip_tcp_port=0\n\
             sip_tls_port=0\n\
             default_proxy=-1\n\
             contact=\"Interop Caller\" <sip:{user}@127.0.0.1>\n\
             guess_hostname=0\n\
             use_ipv6=0\n\
             ipv6_migration_done=1\n\
             use_info=0\n\
             use_rfc2833={}\n\
             inc_timeout=30\n\
             \n\
             [rtp]\n\
             audio_rtp_port={rtp}\n\
             video_rtp_port={}\n\
             \n\
             [sound]\n\
             echocancellation=0\n\
             \n\
             [video]\n\
             enabled=0\n\
             capture=0\n\
             display=0\n",
            u8::from(rfc4733),
            rtp + 2,
        );
        std::fs::write(&rc, config).expect("linphonerc");
        let log = dir.join("linphonec.log");
        let mut cmd = Command::new(bin);
        cmd.arg("-c")
            .arg(&rc)
            .args(["-d", "6", "-l"])
            .arg(&log)
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .stdin(Stdio::piped());
        let mut process = PeerProcess::spawn("linphonec", cmd);
        let stdin = process.take_stdin().expect("linphonec stdin");
        let mut me = Linphonec {
            process,
            stdin,
            log,
            sip: SocketAddr::from(([127, 0, 0, 1], sip_port)),
        };
        me.send("soundcard use files");
        assert!(
            me.process
                .wait_line("Using wav files", Duration::from_secs(10)),
            "linphonec did not start:\n{}",
            me.process.output()
        );
        me
    }

    /// Types one command line.
    ///
    /// # Panics
    /// When linphonec's stdin is closed.
    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("linphonec stdin");
        self.stdin.flush().expect("linphonec stdin");
    }

    /// Waits for a printed line containing `needle`.
    #[must_use]
    pub fn wait_line(&self, needle: &str, timeout: Duration) -> bool {
        self.process.wait_line(needle, timeout)
    }

    /// What linphonec printed.
    #[must_use]
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Its log file (SIP messages included).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The SIP messages in its log: the text of each, from the start line to the end of the
    /// headers and body as logged.
    #[must_use]
    pub fn sip_messages(&self) -> Vec<SipMessage> {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let is_start = |l: &str| {
            l.starts_with("SIP/2.0 ")
                || l.split_whitespace()
                    .nth(2)
                    .is_some_and(|v| v == "SIP/2.0" && l.contains(" sip:"))
        };
        let mut out = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            if !is_start(lines[i]) {
                i += 1;
                continue;
            }
            let mut text = String::new();
            // Headers, the blank line, then a body until the next log line.
            while i < lines.len() {
                let l = lines[i];
                if !text.is_empty() && (is_log_line(l) || is_start(l)) {
                    break;
                }
                text.push_str(l);
                text.push_str("\r\n");
                i += 1;
            }
            if let Some(m) = SipMessage::parse(text.as_bytes()) {
                out.push(m);
            }
        }
        out
    }

    /// `quit`, then up to 5 s for it to exit.
    pub fn quit(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && !self.process.exited() {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.process.stop();
    }
}

fn is_log_line(l: &str) -> bool {
    // `2026-12-04 05:04:42:425 liblinphone-message-…`
    let b = l.as_bytes();
    b.len() > 24 && b[4] == b'-' && b[7] == b'-' && b[10] == b' ' && b[13] == b':'
}

// ───────────────────────────────────────────────────────────────────────────────────────────
// Kamailio
// ───────────────────────────────────────────────────────────────────────────────────────────

/// Kamailio as a record-routing proxy in front of the agent, with `tests/kamailio/kamailio.cfg`,
/// in the foreground, logging to stderr, its working and runtime files in a private directory.
#[derive(Debug)]
pub struct Kamailio {
    process: PeerProcess,
    /// Where it listens (UDP).
    pub addr: SocketAddr,
}

impl Kamailio {
    /// Starts `bin` in front of `agent` and waits (up to 10 s) until an OPTIONS sent through it
    /// is answered.
    ///
    /// # Panics
    /// When it does not start or does not forward.
    #[must_use]
    pub fn start(bin: &Path, dir: &Path, agent: SocketAddr) -> Kamailio {
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("kamailio/kamailio.cfg");
        let port = free_udp_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(bin);
        cmd.arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-m", "32", "-M", "4"])
            .arg("-l")
            .arg(format!("udp:{addr}"))
            .arg("-A")
            .arg(format!("AGENT_URI=\"sip:{agent}\""))
            .arg("-w")
            .arg(dir)
            .arg("-Y")
            .arg(dir)
            .arg("-P")
            .arg(dir.join("kamailio.pid"))
            .current_dir(dir)
            .stdin(Stdio::null());
        let mut process = PeerProcess::spawn("kamailio", cmd);
        let probe = SipEndpoint::new();
        let end = Instant::now() + Duration::from_secs(10);
        let mut n = 0u32;
        loop {
            n += 1;
            let options = probe.options(addr, n);
            probe.send(&options, addr);
            if let Some((m, _)) = probe.recv(Duration::from_millis(250)) {
                if m.status().is_some() && m.header("Call-ID") == options.header("Call-ID") {
                    break;
                }
            }
            assert!(
                Instant::now() < end && !process.exited(),
                "Kamailio did not forward an OPTIONS to the agent:\n{}",
                process.output()
            );
        }
        Kamailio { process, addr }
    }

    /// Kamailio's log.
    #[must_use]
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Its log lines.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.process.lines()
    }
}

// ───────────────────────────────────────────────────────────────────────────────────────────
// A small SIP user agent for the tests
// ───────────────────────────────────────────────────────────────────────────────────────────

/// One parsed SIP message (RFC 3261 §7): the start line, the headers in order (continuation
/// lines joined) and the body.
#[derive(Debug, Clone)]
pub struct SipMessage {
    /// The request or status line.
    pub start: String,
    /// `(name, value)` per header line, names as written.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

fn full_name(name: &str) -> &str {
    match name.to_ascii_lowercase().as_str() {
        "i" => "call-id",
        "f" => "from",
        "t" => "to",
        "v" => "via",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        "s" => "subject",
        "e" => "content-encoding",
        _ => name,
    }
}

impl SipMessage {
    /// Parses a datagram; `None` when it is not SIP.
    #[must_use]
    pub fn parse(data: &[u8]) -> Option<SipMessage> {
        let text = std::str::from_utf8(data).ok()?;
        let (head, body) = match text.find("\r\n\r\n") {
            Some(i) => (&text[..i], &text[i + 4..]),
            None => (text.trim_end_matches("\r\n"), ""),
        };
        let mut lines = head.split("\r\n");
        let start = lines.next()?.to_owned();
        if !(start.starts_with("SIP/2.0 ") || start.ends_with(" SIP/2.0")) {
            return None;
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for l in lines {
            if l.starts_with([' ', '\t']) {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(l.trim());
                }
                continue;
            }
            let (n, v) = l.split_once(':')?;
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
        Some(SipMessage {
            start,
            headers,
            body: body.to_owned(),
        })
    }

    /// The status code of a response.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        self.start
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|c| c.parse().ok())
    }

    /// The method of a request.
    #[must_use]
    pub fn method(&self) -> Option<&str> {
        if self.start.starts_with("SIP/2.0 ") {
            return None;
        }
        self.start.split_whitespace().next()
    }

    /// The Request-URI of a request.
    #[must_use]
    pub fn request_uri(&self) -> Option<&str> {
        self.method()?;
        self.start.split_whitespace().nth(1)
    }

    /// The method named in CSeq.
    #[must_use]
    pub fn cseq_method(&self) -> Option<&str> {
        self.header("CSeq")?.split_whitespace().nth(1)
    }

    /// The first header `name` (full or compact form, any case).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        let want = full_name(name).to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| full_name(n).eq_ignore_ascii_case(&want))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order, comma-separated values split (RFC 3261 §7.3.1;
    /// commas inside `<…>` or quotes do not split).
    #[must_use]
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let want = full_name(name).to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| full_name(n).eq_ignore_ascii_case(&want))
            .flat_map(|(_, v)| split_top_level(v))
            .collect()
    }

    /// The message as it goes on the wire.
    #[must_use]
    pub fn to_wire(&self) -> String {
        let mut s = self.start.clone();
        s.push_str("\r\n");
        for (n, v) in &self.headers {
            s.push_str(n);
            s.push_str(": ");
            s.push_str(v);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.push_str(&self.body);
        s
    }
}

fn split_top_level(v: &str) -> Vec<String> {
    let (mut out, mut cur) = (Vec::new(), String::new());
    let (mut angle, mut quote) = (false, false);
    for c in v.chars() {
        match c {
            '"' => quote = !quote,
            '<' if !quote => angle = true,
            '>' if !quote => angle = false,
            ',' if !quote && !angle => {
                out.push(cur.trim().to_owned());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

/// The URI of a name-addr or addr-spec header value (`"A" <sip:x@h>;tag=1` → `sip:x@h`).
#[must_use]
pub fn uri_of(value: &str) -> &str {
    if let (Some(a), Some(b)) = (value.find('<'), value.find('>')) {
        if a < b {
            return &value[a + 1..b];
        }
    }
    value.split(';').next().unwrap_or(value).trim()
}

/// The `tag` parameter of a From or To value.
#[must_use]
pub fn tag_of(value: &str) -> Option<&str> {
    let params = match value.find('>') {
        Some(i) => &value[i..],
        None => value,
    };
    params
        .split(';')
        .skip(1)
        .find_map(|p| p.trim().strip_prefix("tag="))
}

/// The host and port of a `sip:` URI (port 5060 when absent) as a socket address, when the host
/// is an IP literal.
#[must_use]
pub fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostport.split([';', '?']).next()?;
    if let Ok(a) = hostport.parse() {
        return Some(a);
    }
    format!("{hostport}:5060").parse().ok()
}

/// The sent-by of a Via value as a socket address (RFC 3261 §18.2.2 with RFC 3581: `received`
/// and `rport` values win).
#[must_use]
pub fn via_addr(via: &str) -> Option<SocketAddr> {
    let mut parts = via.split(';');
    let sent_by = parts.next()?.split_whitespace().nth(1)?;
    let mut addr: SocketAddr = sent_by
        .parse()
        .ok()
        .or_else(|| format!("{sent_by}:5060").parse().ok())?;
    for p in parts {
        let p = p.trim();
        if let Some(ip) = p.strip_prefix("received=") {
            if let Ok(ip) = ip.parse() {
                addr.set_ip(ip);
            }
        }
        if let Some(port) = p.strip_prefix("rport=") {
            if let Ok(port) = port.parse() {
                addr.set_port(port);
            }
        }
    }
    Some(addr)
}

/// One `m=` line of an SDP body: media, port, formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpMedia {
    /// `audio`, `video`, …
    pub media: String,
    /// The port (0: rejected).
    pub port: u16,
    /// The payload types listed.
    pub formats: Vec<String>,
    /// Its `a=` lines.
    pub attributes: Vec<String>,
}

/// The `m=` sections of an SDP body.
#[must_use]
pub fn sdp_media(body: &str) -> Vec<SdpMedia> {
    let mut out: Vec<SdpMedia> = Vec::new();
    for line in body.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut f = m.split_whitespace();
            let media = f.next().unwrap_or("").to_owned();
            let port = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let _proto = f.next();
            out.push(SdpMedia {
                media,
                port,
                formats: f.map(str::to_owned).collect(),
                attributes: Vec::new(),
            });
        } else if let (Some(a), Some(last)) = (line.strip_prefix("a="), out.last_mut()) {
            last.attributes.push(a.to_owned());
        }
    }
    out
}

/// The payload type an SDP media section maps to `telephone-event/8000`.
#[must_use]
pub fn telephone_event_pt(m: &SdpMedia) -> Option<u8> {
    m.attributes.iter().find_map(|a| {
        let rest = a.strip_prefix("rtpmap:")?;
        let (pt, enc) = rest.split_once(' ')?;
        enc.to_ascii_lowercase()
            .starts_with("telephone-event/8000")
            .then(|| pt.parse().ok())
            .flatten()
    })
}

/// The connection address of an SDP body (session level or the first media's).
#[must_use]
pub fn sdp_connection(body: &str) -> Option<std::net::IpAddr> {
    body.lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))
        .and_then(|a| a.trim().parse().ok())
}

static BRANCH: AtomicU64 = AtomicU64::new(1);

/// A fresh RFC 3261 branch (`z9hG4bK…`).
#[must_use]
pub fn new_branch() -> String {
    format!(
        "z9hG4bK-interop-{}-{}",
        std::process::id(),
        BRANCH.fetch_add(1, Ordering::Relaxed)
    )
}

/// A dialog as the caller (UAC) keeps it (RFC 3261 §12.1.2).
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// The From header value we sent (with our tag).
    pub local: String,
    /// The To header value of the 2xx (with the remote tag).
    pub remote: String,
    /// The Contact URI of the 2xx.
    pub remote_target: String,
    /// The route set: the 2xx's Record-Route in reverse order.
    pub route_set: Vec<String>,
    /// Our next CSeq number.
    pub cseq: u32,
    /// The INVITE's CSeq number (for the ACK).
    pub invite_cseq: u32,
}

impl Dialog {
    /// The dialog a 2xx to `invite` creates.
    ///
    /// # Panics
    /// When the 2xx lacks Contact or the INVITE lacks From/Call-ID/CSeq.
    #[must_use]
    pub fn from_2xx(invite: &SipMessage, ok: &SipMessage) -> Dialog {
        let invite_cseq: u32 = invite
            .header("CSeq")
            .and_then(|c| c.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("INVITE CSeq");
        let mut route_set = ok.header_values("Record-Route");
        route_set.reverse();
        Dialog {
            call_id: invite.header("Call-ID").expect("Call-ID").to_owned(),
            local: invite.header("From").expect("From").to_owned(),
            remote: ok.header("To").expect("To").to_owned(),
            remote_target: uri_of(ok.header("Contact").expect("Contact in the 2xx")).to_owned(),
            route_set,
            cseq: invite_cseq + 1,
            invite_cseq,
        }
    }

    /// Where a request in this dialog goes first (RFC 3261 §12.2.1.1 with loose routing: the
    /// first route when there is one, else the remote target).
    ///
    /// # Panics
    /// When that URI has no IP literal.
    #[must_use]
    pub fn next_hop(&self) -> SocketAddr {
        let uri = self
            .route_set
            .first()
            .map_or(self.remote_target.as_str(), |r| uri_of(r));
        uri_addr(uri).unwrap_or_else(|| panic!("no address in {uri}"))
    }

    /// A request in the dialog from `local` (our Via), with the given extra top Vias below
    /// ours (`below`) and CSeq `cseq`.
    #[must_use]
    pub fn request(&self, method: &str, cseq: u32, local: SocketAddr, branch: &str) -> SipMessage {
        let mut headers = vec![(
            "Via".to_owned(),
            format!("SIP/2.0/UDP {local};branch={branch};rport"),
        )];
        headers.push(("Max-Forwards".into(), "70".into()));
        for r in &self.route_set {
            headers.push(("Route".into(), r.clone()));
        }
        headers.push(("From".into(), self.local.clone()));
        headers.push(("To".into(), self.remote.clone()));
        headers.push(("Call-ID".into(), self.call_id.clone()));
        headers.push(("CSeq".into(), format!("{cseq} {method}")));
        headers.push(("Content-Length".into(), "0".into()));
        SipMessage {
            start: format!("{method} {} SIP/2.0", self.remote_target),
            headers,
            body: String::new(),
        }
    }
}

/// The 200 OK to a request, as a UAS sends it (Vias, From, To, Call-ID, CSeq copied).
#[must_use]
pub fn ok_for(request: &SipMessage) -> SipMessage {
    let mut headers = Vec::new();
    for (n, v) in &request.headers {
        let f = full_name(n).to_ascii_lowercase();
        if matches!(f.as_str(), "via" | "from" | "to" | "call-id" | "cseq") {
            headers.push((n.clone(), v.clone()));
        }
    }
    headers.push(("Content-Length".into(), "0".into()));
    SipMessage {
        start: "SIP/2.0 200 OK".into(),
        headers,
        body: String::new(),
    }
}

/// A UDP SIP socket on 127.0.0.1 for the tests' own requests and responses.
#[derive(Debug)]
pub struct SipEndpoint {
    socket: UdpSocket,
    /// Datagrams received but not yet taken by [`SipEndpoint::recv_matching`].
    pending: Mutex<Vec<(SipMessage, SocketAddr)>>,
}

impl SipEndpoint {
    /// Binds an ephemeral port.
    ///
    /// # Panics
    /// When no socket can be bound.
    #[must_use]
    pub fn new() -> SipEndpoint {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        SipEndpoint {
            socket,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Our address.
    ///
    /// # Panics
    /// Never in practice.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("addr")
    }

    /// Sends `m` to `to`.
    ///
    /// # Panics
    /// When the socket cannot send.
    pub fn send(&self, m: &SipMessage, to: SocketAddr) {
        self.send_raw(m.to_wire().as_bytes(), to);
    }

    /// Sends bytes to `to`.
    ///
    /// # Panics
    /// When the socket cannot send.
    pub fn send_raw(&self, bytes: &[u8], to: SocketAddr) {
        self.socket.send_to(bytes, to).expect("send SIP");
    }

    /// The next SIP message (or `None` after `timeout`).
    ///
    /// # Panics
    /// When the socket fails.
    pub fn recv(&self, timeout: Duration) -> Option<(SipMessage, SocketAddr)> {
        if let Some(m) = self.pending.lock().ok().and_then(|mut p| {
            if p.is_empty() {
                None
            } else {
                Some(p.remove(0))
            }
        }) {
            return Some(m);
        }
        self.recv_socket(timeout)
    }

    fn recv_socket(&self, timeout: Duration) -> Option<(SipMessage, SocketAddr)> {
        let end = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if let Some(m) = SipMessage::parse(&buf[..n]) {
                        return Some((m, from));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("SIP socket: {e}"),
            }
        }
    }

    /// The first message for which `want` holds within `timeout`; others are kept for later
    /// `recv` calls. Requests that are retransmissions keep arriving as they come.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        want: impl Fn(&SipMessage) -> bool,
    ) -> Option<(SipMessage, SocketAddr)> {
        {
            let mut p = self.pending.lock().expect("pending");
            if let Some(i) = p.iter().position(|(m, _)| want(m)) {
                return Some(p.remove(i));
            }
        }
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let (m, from) = self.recv_socket(left)?;
            if want(&m) {
                return Some((m, from));
            }
            self.pending.lock().expect("pending").push((m, from));
        }
    }

    /// Everything received and not taken yet, plus what arrives within `wait`.
    pub fn drain(&self, wait: Duration) -> Vec<(SipMessage, SocketAddr)> {
        let mut out: Vec<_> = std::mem::take(&mut *self.pending.lock().expect("pending"));
        let end = Instant::now() + wait;
        while let Some(m) = self.recv_socket(end.saturating_duration_since(Instant::now())) {
            out.push(m);
        }
        out
    }

    /// An OPTIONS from this endpoint to `target` (call-id `options-<n>-…`).
    #[must_use]
    pub fn options(&self, target: SocketAddr, n: u32) -> SipMessage {
        let me = self.addr();
        SipMessage {
            start: format!("OPTIONS sip:{target} SIP/2.0"),
            headers: vec![
                (
                    "Via".into(),
                    format!("SIP/2.0/UDP {me};branch={};rport", new_branch()),
                ),
                ("Max-Forwards".into(), "70".into()),
                ("From".into(), format!("<sip:probe@{me}>;tag=probe{n}")),
                ("To".into(), format!("<sip:{target}>")),
                (
                    "Call-ID".into(),
                    format!("options-{n}-{}-{}", std::process::id(), me.port()),
                ),
                ("CSeq".into(), format!("{n} OPTIONS")),
                ("Content-Length".into(), "0".into()),
            ],
            body: String::new(),
        }
    }

    /// Sends `invite` to `to` and waits for its final response, retransmitting per Timer A
    /// (RFC 3261 §17.1.1.2, T1 = 500 ms) until a provisional response arrives.
    pub fn invite(
        &self,
        invite: &SipMessage,
        to: SocketAddr,
        timeout: Duration,
    ) -> Option<(SipMessage, SocketAddr)> {
        self.invite_wire(&invite.to_wire(), to, timeout)
    }

    /// [`SipEndpoint::invite`] for an INVITE given as the exact text to send.
    pub fn invite_wire(
        &self,
        wire: &str,
        to: SocketAddr,
        timeout: Duration,
    ) -> Option<(SipMessage, SocketAddr)> {
        let call_id = SipMessage::parse(wire.as_bytes())
            .and_then(|m| m.header("Call-ID").map(str::to_owned))
            .unwrap_or_default();
        self.send_raw(wire.as_bytes(), to);
        let end = Instant::now() + timeout;
        let mut interval = Duration::from_millis(500);
        let mut next = Instant::now() + interval;
        let mut provisional = false;
        loop {
            let now = Instant::now();
            if now >= end {
                return None;
            }
            let wait = end.min(next).saturating_duration_since(now);
            let is_response = |m: &SipMessage| {
                m.status().is_some()
                    && m.header("Call-ID") == Some(call_id.as_str())
                    && m.cseq_method() == Some("INVITE")
            };
            match self.recv_matching(wait.max(Duration::from_millis(1)), is_response) {
                Some((m, from)) if m.status().is_some_and(|s| s >= 200) => {
                    return Some((m, from));
                }
                Some(_) => provisional = true,
                None => {
                    if !provisional && Instant::now() >= next {
                        self.send_raw(wire.as_bytes(), to);
                        interval = (interval * 2).min(Duration::from_secs(4));
                        next = Instant::now() + interval;
                    }
                }
            }
        }
    }

    /// Sends a non-INVITE request and waits for its final response, retransmitting per
    /// Timer E (RFC 3261 §17.1.2.2).
    pub fn request(
        &self,
        request: &SipMessage,
        to: SocketAddr,
        timeout: Duration,
    ) -> Option<(SipMessage, SocketAddr)> {
        let call_id = request.header("Call-ID").unwrap_or_default().to_owned();
        let cseq = request.header("CSeq").unwrap_or_default().to_owned();
        let wire = request.to_wire();
        self.send_raw(wire.as_bytes(), to);
        let end = Instant::now() + timeout;
        let mut interval = Duration::from_millis(500);
        let mut next = Instant::now() + interval;
        loop {
            let now = Instant::now();
            if now >= end {
                return None;
            }
            let wait = end.min(next).saturating_duration_since(now);
            let found = self.recv_matching(wait.max(Duration::from_millis(1)), |m| {
                m.status().is_some_and(|s| s >= 200)
                    && m.header("Call-ID") == Some(call_id.as_str())
                    && m.header("CSeq") == Some(cseq.as_str())
            });
            if found.is_some() {
                return found;
            }
            if Instant::now() >= next {
                self.send_raw(wire.as_bytes(), to);
                interval = (interval * 2).min(Duration::from_secs(4));
                next = Instant::now() + interval;
            }
        }
    }
}

impl Default for SipEndpoint {
    fn default() -> Self {
        SipEndpoint::new()
    }
}

/// A request template from `tests/testdata/`: LF line ends become CRLF, `{{name}}`
/// placeholders are filled from `vars`, and `{{content_length}}` is the body's length after
/// that.
///
/// # Panics
/// When a placeholder is left unfilled.
#[must_use]
pub fn fill_template(text: &str, vars: &[(&str, String)]) -> String {
    let mut s = text.replace("\r\n", "\n");
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    let s = s.replace('\n', "\r\n");
    let (head, body) = s.split_once("\r\n\r\n").unwrap_or((&s, ""));
    let out = format!(
        "{}\r\n\r\n{body}",
        head.replace("{{content_length}}", &body.len().to_string())
    );
    if let Some(i) = out.find("{{") {
        let rest: String = out[i..].chars().take(40).collect();
        panic!("unfilled placeholder: {rest}");
    }
    out
}
