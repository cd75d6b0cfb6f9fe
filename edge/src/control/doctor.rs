//! `ccedge doctor`: checks an installation, with or without a running agent.
//!
//! | check | passes when | with an agent running |
//! |---|---|---|
//! | `config` | the file and `CCEDGE__…` overrides load and validate | same |
//! | `agent` | always, unless the control socket exists but refuses us (not running is fine: doctor is also for before the first start) | reports its version and uptime |
//! | `state_dir` | `node.state_dir` takes an fsync'd write and has ≥ [`MIN_FREE_BYTES`] free | same |
//! | `store` | (only with an agent running) | the agent's state store writes: it could be opened and no booking write failed for a full or failing disk since the last one that worked |
//! | `sip_port` | `sip.listen` can be bound (UDP) | the agent reports it listens there |
//! | `rtp_ports` | the range holds ≥ 2 ports and at least one of up to 8 sampled ports binds | same |
//! | `broker` | a TCP connection to `mqtt.url`'s host and port opens within 3 s | and the agent's link has no connection error |
//! | `broker_tls` | (`mqtts://` only) the CA, certificate and key files are readable PEM | same |
//! | `clock` | the wall clock is after 2025-01-01 and, where `timedatectl` answers, NTP is synchronised | same |
//! | `prompts` | the built-in prompts and `ivr.prompts_dir` overrides decode | same |
//! | `reload` | (not checked) | its last configuration reload (`SIGHUP`) did not fail; keys that wait for a restart are named |
//!
//! Any failure makes the exit status 1; each failure line says how to fix it.

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use super::client::{self, ClientError};
use super::protocol::{Request, StatusData};
use crate::config::{self, Config};

/// Less free space than this in the state directory fails the check.
pub const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// How long the broker has to accept a TCP connection.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(3);
/// 2025-01-01T00:00:00Z: a wall clock before this is wrong (a board without RTC or NTP).
const SANE_CLOCK_MS: i64 = 1_735_689_600_000;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Short name (`config`, `state_dir`, `broker`, …).
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// How to fix a failure.
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// `✔ name: detail` or `✘ name: detail — fix: …`.
    #[must_use]
    pub fn line(&self) -> String {
        match (&self.fix, self.ok) {
            (Some(fix), false) => format!("✘ {}: {} — fix: {fix}", self.name, self.detail),
            (None, false) => format!("✘ {}: {}", self.name, self.detail),
            (_, true) => format!("✔ {}: {}", self.name, self.detail),
        }
    }
}

/// Every check's outcome; `ok` when all passed. `ccedge doctor --json` prints this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// All checks passed.
    pub ok: bool,
    /// In the order they ran.
    pub checks: Vec<Check>,
}

/// Runs every check against the configuration at `config_path` (plus the environment).
#[must_use]
pub fn run(config_path: Option<&Path>) -> Report {
    let mut checks = Vec::new();
    match config::load(config_path) {
        Ok(cfg) => {
            let shown = config_path.map_or_else(
                || "defaults and environment (no file)".to_owned(),
                |p| p.display().to_string(),
            );
            checks.push(Check::pass("config", format!("{shown} is valid")));
            run_with(&cfg, &mut checks);
        }
        Err(e) => {
            let key = if e.key.is_empty() {
                String::new()
            } else {
                format!(" (key {})", e.key)
            };
            checks.push(Check::fail(
                "config",
                format!("{e}"),
                format!("correct the value{key}; `ccedge config check` shows the effective configuration"),
            ));
            checks.push(clock());
        }
    }
    Report {
        ok: checks.iter().all(|c| c.ok),
        checks,
    }
}

fn run_with(cfg: &Config, checks: &mut Vec<Check>) {
    let socket = cfg.control_socket();
    let agent = match client::request_as::<StatusData>(&socket, &Request::Status) {
        Ok(status) => {
            checks.push(Check::pass(
                "agent",
                format!(
                    "running: {} {} (pid {}, up {}), control socket {}",
                    status.node_id,
                    status.version,
                    status.pid,
                    super::render::duration_s(status.uptime_s),
                    socket.display()
                ),
            ));
            Some(status)
        }
        Err(ClientError::NoAgent { .. }) => {
            checks.push(Check::pass(
                "agent",
                format!(
                    "not running (nothing answers on {}); the other checks do not need it",
                    socket.display()
                ),
            ));
            None
        }
        Err(e) => {
            checks.push(Check::fail(
                "agent",
                format!("the control socket does not answer properly: {e}"),
                "run doctor as the agent's user or root; restart the agent if it is stuck (systemctl restart ccedge)",
            ));
            None
        }
    };
    checks.push(state_dir(&cfg.node.state_dir));
    if let Some(problem) = agent.as_ref().and_then(|s| s.store_problem.as_ref()) {
        checks.push(Check::fail(
            "store",
            format!("the running agent cannot write its state store: {problem}"),
            "free space on the state directory's file system (or replace the failing disk); \
             the agent refuses bookings until then and recovers by itself",
        ));
    }
    checks.push(sip_port(cfg, agent.as_ref()));
    checks.push(rtp_ports(cfg));
    checks.push(broker(cfg, agent.as_ref()));
    if cfg.mqtt.url.tls() {
        checks.push(broker_tls(cfg));
    }
    checks.push(clock());
    checks.push(prompts(cfg));
    if let Some(status) = &agent {
        checks.push(reload(status));
    }
}

/// The running agent's last configuration reload.
fn reload(status: &StatusData) -> Check {
    let r = &status.reloads;
    let pending = if r.restart_pending.is_empty() {
        String::new()
    } else {
        format!(
            "; changed in the file, in effect only after a restart: {}",
            r.restart_pending.join(", ")
        )
    };
    match r.last_ok {
        Some(false) => Check::fail(
            "reload",
            format!(
                "the agent's last reload ({}) failed: {}; it runs the configuration it had before",
                super::render::time(r.last_at_ms),
                r.last_error.as_deref().unwrap_or("unknown error")
            ),
            "correct the configuration file (`ccedge config check`), then reload again (systemctl reload ccedge, or kill -HUP the agent)",
        ),
        Some(true) => Check::pass(
            "reload",
            format!(
                "{} reloads, {} failed; the last one ({}) succeeded{pending}",
                r.ok + r.failed,
                r.failed,
                super::render::time(r.last_at_ms)
            ),
        ),
        None => Check::pass("reload", "no reload since the agent started"),
    }
}

fn state_dir(dir: &Path) -> Check {
    match crate::store::check_writable(dir) {
        Ok(free) if free < MIN_FREE_BYTES => Check::fail(
            "state_dir",
            format!(
                "{} is writable but only {} MiB free",
                dir.display(),
                free / (1024 * 1024)
            ),
            format!(
                "free space on its file system (at least {} MiB)",
                MIN_FREE_BYTES / (1024 * 1024)
            ),
        ),
        Ok(free) => Check::pass(
            "state_dir",
            format!(
                "{} is writable, {} MiB free",
                dir.display(),
                free / (1024 * 1024)
            ),
        ),
        Err(e @ crate::store::StoreError::DiskFull { .. }) => Check::fail(
            "state_dir",
            e.to_string(),
            "free space on its file system: the agent refuses bookings until it can write",
        ),
        Err(e) => Check::fail(
            "state_dir",
            e.to_string(),
            format!(
                "create {} and make it writable by the agent's user (the systemd unit's StateDirectory does this), or set node.state_dir",
                dir.display()
            ),
        ),
    }
}

fn sip_port(cfg: &Config, agent: Option<&StatusData>) -> Check {
    if let Some(status) = agent {
        return Check::pass(
            "sip_port",
            format!("the agent listens on {} (udp)", status.sip_listen),
        );
    }
    let addr = cfg.sip.listen;
    match UdpSocket::bind(addr) {
        Ok(_) => Check::pass("sip_port", format!("{addr} (udp) is free")),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Check::fail(
            "sip_port",
            format!("{addr} (udp) is in use by another program"),
            "stop the other SIP service (ss -ulpn shows it) or change sip.listen",
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Check::fail(
            "sip_port",
            format!("{addr} (udp): permission denied"),
            "ports below 1024 need CAP_NET_BIND_SERVICE (the systemd unit grants it; run doctor as root to check) or use a port ≥ 1024",
        ),
        Err(e) => Check::fail(
            "sip_port",
            format!("{addr} (udp): {e}"),
            "set sip.listen to an address of this host",
        ),
    }
}

fn rtp_ports(cfg: &Config) -> Check {
    let (min, max) = (cfg.rtp.port_min, cfg.rtp.port_max);
    if min < 1024 || max <= min {
        return Check::fail(
            "rtp_ports",
            format!("range {min}-{max} is not usable"),
            "set rtp.port_min ≥ 1024 and rtp.port_max > rtp.port_min",
        );
    }
    let ip = cfg.sip.listen.ip();
    let span = u32::from(max - min);
    let samples: Vec<u16> = (0..8u32)
        .map(|i| min + u16::try_from(span * i / 7).unwrap_or(0))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let free = samples
        .iter()
        .filter(|&&p| UdpSocket::bind(SocketAddr::new(ip, p)).is_ok())
        .count();
    let ports = span + 1;
    if free == 0 {
        Check::fail(
            "rtp_ports",
            format!(
                "none of {} sampled ports in {min}-{max} on {ip} could be bound",
                samples.len()
            ),
            "choose a free range (rtp.port_min/rtp.port_max) or stop what holds it (ss -ulpn)",
        )
    } else {
        Check::pass(
            "rtp_ports",
            format!(
                "{min}-{max} ({ports} ports, {} calls), {free} of {} sampled ports free",
                ports / 2,
                samples.len()
            ),
        )
    }
}

fn broker(cfg: &Config, agent: Option<&StatusData>) -> Check {
    let url = &cfg.mqtt.url;
    let target = format!("{}:{}", url.host(), url.port());
    let addrs: Vec<SocketAddr> = match (url.host(), url.port()).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            return Check::fail(
                "broker",
                format!("{url}: cannot resolve {}: {e}", url.host()),
                "check DNS (/etc/resolv.conf) or use the broker's IP address in mqtt.url",
            )
        }
    };
    let mut last = None;
    let mut reached = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, BROKER_TIMEOUT) {
            Ok(_) => {
                reached = Some(*a);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(addr) = reached else {
        let why = last.map_or_else(|| "no address".to_owned(), |e| e.to_string());
        return Check::fail(
            "broker",
            format!("{url}: cannot connect to {target}: {why}"),
            "start the broker (systemctl start mosquitto) or correct mqtt.url; check firewalls between this node and the broker",
        );
    };
    match agent {
        Some(s) if !s.mqtt.connected && s.mqtt.last_error.is_some() => Check::fail(
            "broker",
            format!(
                "{url}: {addr} accepts TCP, but the agent cannot connect: {}",
                s.mqtt.last_error.as_deref().unwrap_or_default()
            ),
            "check mqtt.username/mqtt.password, the TLS files and the broker's ACL for this node",
        ),
        Some(s) if s.mqtt.connected => Check::pass(
            "broker",
            format!("{url}: reachable at {addr}; the agent is connected"),
        ),
        _ => Check::pass("broker", format!("{url}: reachable at {addr} (tcp)")),
    }
}

/// Reads the head of a file and checks it holds a PEM block.
fn pem_file(path: &Path) -> Result<(), String> {
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1024 * 1024).read_to_end(&mut head))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if String::from_utf8_lossy(&head).contains("-----BEGIN ") {
        Ok(())
    } else {
        Err(format!(
            "{}: not a PEM file (no -----BEGIN line)",
            path.display()
        ))
    }
}

fn broker_tls(cfg: &Config) -> Check {
    let m = &cfg.mqtt;
    let files = [
        ("mqtt.ca_file", m.ca_file.as_deref()),
        ("mqtt.cert_file", m.cert_file.as_deref()),
        ("mqtt.key_file", m.key_file.as_deref()),
    ];
    let mut shown = Vec::new();
    for (key, path) in files {
        let Some(path) = path else { continue };
        if let Err(e) = pem_file(path) {
            return Check::fail(
                "broker_tls",
                format!("{key} {e}"),
                format!("install a readable PEM file and point {key} at it (the agent's user must be able to read it)"),
            );
        }
        shown.push(key);
    }
    if m.cert_file.is_some() != m.key_file.is_some() {
        return Check::fail(
            "broker_tls",
            "mqtt.cert_file and mqtt.key_file must be set together",
            "set both (client certificate authentication) or neither",
        );
    }
    let detail = if shown.is_empty() {
        "no TLS files configured: the system CA roots are used".to_owned()
    } else {
        format!(
            "{} readable PEM (the handshake is not tried here)",
            shown.join(", ")
        )
    };
    Check::pass("broker_tls", detail)
}

fn clock() -> Check {
    let now = crate::clock::wall_now().0;
    let shown = super::render::time(now);
    if now < SANE_CLOCK_MS {
        return Check::fail(
            "clock",
            format!("wall clock says {shown}, before 2025"),
            "enable time synchronisation (timedatectl set-ntp true, or chrony/systemd-timesyncd) so event timestamps are right",
        );
    }
    match ntp_synchronized() {
        Some(true) => Check::pass("clock", format!("{shown}, NTP synchronised")),
        Some(false) => Check::fail(
            "clock",
            format!("{shown}, but NTP is not synchronised"),
            "enable time synchronisation (timedatectl set-ntp true) and check the NTP servers are reachable",
        ),
        None => Check::pass(
            "clock",
            format!("{shown} (plausible; NTP state unknown: timedatectl unavailable)"),
        ),
    }
}

/// `timedatectl show -p NTPSynchronized --value`, when it answers `yes` or `no`.
fn ntp_synchronized() -> Option<bool> {
    let out = Command::new("timedatectl")
        .args(["show", "-p", "NTPSynchronized", "--value"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

fn prompts(cfg: &Config) -> Check {
    let dir = cfg.ivr.prompts_dir.as_deref();
    let langs = cfg.ivr.languages.join(", ");
    match crate::media::prompts::Prompts::load(&cfg.ivr.languages, dir) {
        Ok(_) => Check::pass(
            "prompts",
            match dir {
                Some(d) => format!(
                    "prompts ({langs}) and overrides in {} decode",
                    d.display()
                ),
                None => format!("built-in prompts ({langs}) decode (no ivr.prompts_dir)"),
            },
        ),
        Err(e) => Check::fail(
            "prompts",
            e.to_string(),
            "replace the file with a mono WAV (PCM 16-bit or G.711), or remove it to use the built-in prompt",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_the_mark_and_the_fix() {
        assert_eq!(Check::pass("clock", "fine").line(), "✔ clock: fine");
        assert_eq!(
            Check::fail("broker", "down", "start it").line(),
            "✘ broker: down — fix: start it"
        );
    }

    #[test]
    fn pem_files_are_recognised() {
        let dir = std::env::temp_dir().join(format!("ccedge-doctor-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("ca.pem");
        let bad = dir.join("ca.der");
        std::fs::write(
            &good,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(&bad, [0x30u8, 0x82, 0x01]).unwrap();
        assert!(pem_file(&good).is_ok());
        assert!(pem_file(&bad).unwrap_err().contains("not a PEM"));
        assert!(pem_file(&dir.join("missing.pem")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_closed_broker_port_fails_with_a_fix() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let mut cfg = Config::default();
        cfg.mqtt.url = format!("mqtt://127.0.0.1:{port}").parse().unwrap();
        let c = broker(&cfg, None);
        assert!(!c.ok, "{c:?}");
        assert!(c.fix.is_some());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        cfg.mqtt.url = format!("mqtt://{}", l.local_addr().unwrap())
            .parse()
            .unwrap();
        assert!(broker(&cfg, None).ok);
    }

    #[test]
    fn an_inverted_rtp_range_fails() {
        let mut cfg = Config::default();
        cfg.rtp.port_min = 30000;
        cfg.rtp.port_max = 20000;
        assert!(!rtp_ports(&cfg).ok);
    }
}
