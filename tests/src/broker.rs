//! A real Mosquitto broker for the tests, and a CRM stand-in that talks to it.
//!
//! Each [`Mosquitto`] listens on its own free port on 127.0.0.1 (one may already run on 1883:
//! the tests never use it) and is killed when dropped. [`Crm`] is a plain MQTT 3.1.1 client
//! (rumqttc's blocking API) that records every message it receives and re-subscribes after
//! every reconnect.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Whether Mosquitto is installed (CI installs it; tests that need it say so and skip).
#[must_use]
pub fn have_mosquitto() -> bool {
    Path::new(MOSQUITTO).exists()
}

/// For a test that needs Mosquitto: `true` when it is installed; otherwise says the test is
/// skipped and returns `false` (in CI, where it must be installed, it panics instead).
///
/// # Panics
/// In CI (`CI` set) without Mosquitto.
#[must_use]
pub fn mosquitto_or_skip() -> bool {
    if have_mosquitto() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "Mosquitto is required in CI (apt-get install mosquitto)"
    );
    eprintln!("mosquitto not installed: skipped");
    false
}

/// A Mosquitto process on a free loopback port.
#[derive(Debug)]
pub struct Mosquitto {
    child: Option<Child>,
    /// The port it listens on (kept across [`Mosquitto::restart`]).
    pub port: u16,
    conf: PathBuf,
}

impl Mosquitto {
    /// Starts a broker with its config file in `dir`, and waits until it accepts connections.
    ///
    /// # Panics
    /// When Mosquitto cannot be started.
    #[must_use]
    pub fn start(dir: &Path) -> Mosquitto {
        Self::start_with(dir, |port| {
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
            )
        })
    }

    /// Starts a broker whose config file is `conf(port)`, and waits until it accepts
    /// connections.
    ///
    /// # Panics
    /// When Mosquitto cannot be started.
    #[must_use]
    pub fn start_with(dir: &Path, conf: impl Fn(u16) -> String) -> Mosquitto {
        // A port found free can be handed to another socket (another test's client
        // connection) before Mosquitto binds it: then another port.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            let path = dir.join(format!("mosquitto-{port}.conf"));
            let mut f = std::fs::File::create(&path).expect("mosquitto config");
            writeln!(f, "{}", conf(port)).expect("write mosquitto config");
            let mut m = Mosquitto {
                child: None,
                port,
                conf: path,
            };
            if m.try_restart() {
                return m;
            }
        }
        panic!("mosquitto did not start on any of 5 free ports");
    }

    /// `mqtt://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills the broker with SIGKILL (it loses everything it held: no persistence).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port (after [`Mosquitto::kill9`]).
    ///
    /// # Panics
    /// When it does not come up within 5 s.
    pub fn restart(&mut self) {
        assert!(
            self.try_restart(),
            "mosquitto did not listen on {}",
            self.port
        );
    }

    /// Starts the broker on its port; `false` when it exited (the port was taken) or did not
    /// listen within 5 s.
    fn try_restart(&mut self) -> bool {
        self.kill9();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        for _ in 0..100 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return true;
            }
            if self
                .child
                .as_mut()
                .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        false
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One message the CRM received.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// The broker delivered it as a retained message.
    pub retain: bool,
    /// When it arrived here (wall clock, to compare with a node's `at`).
    pub received: std::time::SystemTime,
}

impl Msg {
    /// The payload as JSON (`Null` when it is not JSON).
    #[must_use]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// A CRM stand-in: subscribes, records, publishes.
pub struct Crm {
    client: Client,
    msgs: Arc<Mutex<Vec<Msg>>>,
    connects: Arc<Mutex<u32>>,
}

impl std::fmt::Debug for Crm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crm").finish_non_exhaustive()
    }
}

impl Crm {
    /// Connects to the broker on `port` as `client_id` and subscribes to `filters` (QoS 1),
    /// again after every reconnect.
    #[must_use]
    pub fn connect(port: u16, client_id: &str, filters: &[&str]) -> Crm {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(64 << 20, 64 << 20);
        let (client, mut conn) = Client::new(opts, 1000);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let connects = Arc::new(Mutex::new(0u32));
        let filters: Vec<String> = filters.iter().map(|s| (*s).to_owned()).collect();
        let sub = client.clone();
        let (m, c) = (Arc::clone(&msgs), Arc::clone(&connects));
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        for f in &filters {
                            let _ = sub.try_subscribe(f.as_str(), QoS::AtLeastOnce);
                        }
                        *c.lock().expect("lock") += 1;
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        m.lock().expect("lock").push(Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            received: std::time::SystemTime::now(),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        let crm = Crm {
            client,
            msgs,
            connects,
        };
        // Subscriptions are made on ConnAck; give them a moment to be in place.
        let t0 = std::time::Instant::now();
        while *crm.connects.lock().expect("lock") == 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        crm
    }

    /// Publishes at QoS 1.
    pub fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .expect("queue publish");
    }

    /// Every message received so far.
    #[must_use]
    pub fn messages(&self) -> Vec<Msg> {
        self.msgs.lock().expect("lock").clone()
    }

    /// Messages received on topics ending with `suffix`.
    #[must_use]
    pub fn on(&self, suffix: &str) -> Vec<Msg> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic.ends_with(suffix))
            .collect()
    }

    /// Waits until `pred` holds for the messages received, at most `timeout`.
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&[Msg]) -> bool) -> bool {
        let t0 = std::time::Instant::now();
        loop {
            if pred(&self.msgs.lock().expect("lock")) {
                return true;
            }
            if t0.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A mono 16-bit 8 kHz WAV file of a pure tone.
#[must_use]
pub fn tone_wav(freq_hz: f64, seconds: f64, amplitude: f64) -> Vec<u8> {
    let n = (8000.0 * seconds) as usize;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let v = (2.0 * std::f64::consts::PI * freq_hz * i as f64 / 8000.0).sin() * amplitude;
        samples.push((v * 32767.0) as i16);
    }
    let data_len = (n * 2) as u32;
    let mut out = Vec::with_capacity(44 + n * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&16000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Lowercase hex SHA-256.
#[must_use]
pub fn sha256_hex(bytes: &[u8]) -> String {
    edge::announcements::hex(&edge::announcements::sha256(bytes))
}

/// The PCMU packets (payload type 0) among `packets`, decoded: one frame of samples each.
#[must_use]
pub fn pcmu_frames(packets: &[crate::Received]) -> Vec<Vec<i16>> {
    packets
        .iter()
        .filter(|p| p.pt == 0)
        .map(|p| {
            p.payload
                .iter()
                .map(|&b| shared::g711::Law::Ulaw.decode_sample(b))
                .collect()
        })
        .collect()
}

/// The longest run of consecutive 20 ms frames (decoded G.711) in which the tone at
/// `freq_hz` carries at least 80 % of the frame's energy.
#[must_use]
pub fn longest_tone_run(frames: &[Vec<i16>], freq_hz: f64) -> usize {
    let (mut best, mut run) = (0, 0);
    for f in frames {
        if tone_share(f, freq_hz) >= 0.8 {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

/// The share of a frame's energy at `freq_hz` (Goertzel power against total power).
#[must_use]
pub fn tone_share(samples: &[i16], freq_hz: f64) -> f64 {
    let n = samples.len() as f64;
    if samples.is_empty() {
        return 0.0;
    }
    let w = 2.0 * std::f64::consts::PI * freq_hz / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0f64;
    for &x in samples {
        let x = f64::from(x);
        energy += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if energy <= 0.0 {
        return 0.0;
    }
    // A pure tone of N samples gives power ≈ (N/2)² · A²/… ; normalise so a pure tone → 1.
    (2.0 * power / (n * energy)).min(1.0)
}
