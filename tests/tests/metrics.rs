//! The metrics endpoint (`metrics.listen`) of the real agent binary, scraped over plain TCP
//! and read with a strict OpenMetrics text parser: figures during and after real calls (an
//! announcement heard to its end, one cut short by a key, one by a hang-up; a refusal at
//! `sip.max_calls`, a source outside `sip.allow`, a datagram that is not SIP), the same
//! per-announcement figures in `ccedge announcements`, bad HTTP requests answered with 4xx
//! while the endpoint keeps serving, and a taken port stopping the agent at start.

#![allow(clippy::disallowed_methods)] // the tests time real sockets

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ccedge_tests::broker::{longest_tone_run, pcmu_frames, sha256_hex, tone_wav};
use ccedge_tests::{
    ccedge_bin, ccedge_cli, free_tcp_port, Agent, AgentOptions, CallGateway, RtpSink, TempDir,
};
use shared::dtmf::Digit;

// ---- a strict OpenMetrics text parser ---------------------------------------------------------

/// One sample: its full name, labels and value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One metric family: `# TYPE`, optional `# HELP` / `# UNIT`, its samples.
#[derive(Debug, Clone, PartialEq)]
struct MetricFamily {
    name: String,
    kind: String,
    samples: Vec<Sample>,
}

/// An exposition, parsed.
#[derive(Debug)]
struct Exposition(Vec<MetricFamily>);

impl Exposition {
    /// The value of the sample `name{labels}` (labels exactly as given).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.0
            .iter()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like [`Exposition::value`], failing the test when the sample is missing.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {self:#?}"))
    }

    fn family(&self, name: &str) -> Option<&MetricFamily> {
        self.0.iter().find(|f| f.name == name)
    }
}

/// The sample-name suffixes a family of `kind` may use (OpenMetrics 1.0, §"Metric types").
fn suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total", "_created"],
        "gauge" | "unknown" => &[""],
        "histogram" => &["_bucket", "_sum", "_count", "_created"],
        "info" => &["_info"],
        "stateset" => &[""],
        _ => &[],
    }
}

fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let Some(rest) = s.strip_prefix('{') else {
        return Ok((labels, s));
    };
    s = rest;
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("label without =")?;
        let key = &s[..eq];
        if key.is_empty()
            || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || key.as_bytes()[0].is_ascii_digit()
        {
            return Err(format!("bad label name {key:?}"));
        }
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        s = &s[end + 1..];
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("labels not separated by ,".into());
        }
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Parses OpenMetrics text strictly: every family has a `# TYPE` before its samples and
/// appears once, sample names fit their family's type, labels and values are well formed,
/// histogram buckets are cumulative and end at `+Inf` = `_count`, and the text ends with
/// `# EOF`.
fn parse(text: &str) -> Result<Exposition, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the exposition does not end with # EOF")?;
    let mut families: Vec<MetricFamily> = Vec::new();
    for (n, line) in body.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (what, name, rest) = (parts.next(), parts.next(), parts.next());
            let (Some(what), Some(name)) = (what, name) else {
                return Err(err("bad metadata line".into()));
            };
            match what {
                "TYPE" => {
                    let kind = rest.ok_or_else(|| err("TYPE without a type".into()))?;
                    if suffixes(kind).is_empty() {
                        return Err(err(format!("unknown type {kind}")));
                    }
                    if families.iter().any(|f| f.name == name) {
                        return Err(err(format!("family {name} declared twice")));
                    }
                    families.push(MetricFamily {
                        name: name.to_owned(),
                        kind: kind.to_owned(),
                        samples: Vec::new(),
                    });
                }
                "HELP" | "UNIT" => {
                    // Metadata belongs to the family being declared (HELP may come first).
                    let current = families.last().map(|f| f.name.as_str());
                    if what == "UNIT" && current != Some(name) {
                        return Err(err("UNIT before its TYPE".into()));
                    }
                    if what == "UNIT" && !name.ends_with(&format!("_{}", rest.unwrap_or(""))) {
                        return Err(err("a family with a unit must end with it".into()));
                    }
                }
                _ => return Err(err(format!("unknown metadata {what}"))),
            }
            continue;
        }
        if line.is_empty() {
            return Err(err("empty line".into()));
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        let (labels, rest) = parse_labels(&line[name_end..]).map_err(err)?;
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(err)?;
        if fields.next().is_some() {
            return Err(err("timestamps and exemplars are not expected here".into()));
        }
        let family = families
            .last_mut()
            .ok_or_else(|| err("a sample before any TYPE".into()))?;
        let fits = suffixes(&family.kind)
            .iter()
            .any(|s| name.strip_suffix(s) == Some(family.name.as_str()));
        if !fits {
            return Err(err(format!(
                "sample {name} does not belong to {} family {}",
                family.kind, family.name
            )));
        }
        family.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for f in families.iter().filter(|f| f.kind == "histogram") {
        let buckets: Vec<(f64, f64)> = f
            .samples
            .iter()
            .filter(|s| s.name.ends_with("_bucket"))
            .map(|s| {
                let le = s.labels.get("le").map(String::as_str).unwrap_or("");
                parse_value(le).map(|le| (le, s.value))
            })
            .collect::<Result<_, _>>()?;
        if buckets
            .windows(2)
            .any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1)
        {
            return Err(format!("{}: buckets not cumulative: {buckets:?}", f.name));
        }
        let count = f
            .samples
            .iter()
            .find(|s| s.name.ends_with("_count"))
            .map(|s| s.value);
        if buckets.last().map(|b| (b.0, Some(b.1))) != Some((f64::INFINITY, count)) {
            return Err(format!("{}: +Inf bucket is not the count", f.name));
        }
    }
    Ok(Exposition(families))
}

#[test]
fn the_parser_is_strict() {
    let good =
        "# HELP x_total_ok A.\n# TYPE a counter\na_total{k=\"v\\\"\"} 1\n# TYPE h histogram\n\
                h_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n# EOF\n";
    let e = parse(good).unwrap();
    assert_eq!(e.get("a_total", &[("k", "v\"")]), 1.0);
    assert_eq!(e.get("h_count", &[]), 2.0);
    for bad in [
        "# TYPE a counter\na_total 1\n",           // no EOF
        "a 1\n# EOF\n",                            // no TYPE
        "# TYPE a counter\na 1\n# EOF\n",          // counter without _total
        "# TYPE a gauge\na{k=v} 1\n# EOF\n",       // unquoted label
        "# TYPE a gauge\na x\n# EOF\n",            // bad value
        "# TYPE a gauge\n# TYPE a gauge\n# EOF\n", // twice
        "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n# EOF\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n# EOF\n",
        "# TYPE a gauge\na 1\n# EOF\nb 2\n",
    ] {
        assert!(parse(bad).is_err(), "{bad:?} parsed");
    }
}

// ---- HTTP over plain TCP ----------------------------------------------------------------------

/// Sends `request` as is and returns the status code, the headers and the body.
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8(raw[..end].to_vec()).expect("ASCII head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head, raw[end + 4..].to_vec())
}

/// `GET /metrics`, checked and parsed.
fn scrape(addr: SocketAddr) -> Exposition {
    let (status, head, body) = http(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: ccedge\r\nAccept: application/openmetrics-text\r\n\r\n",
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains(
            "\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"
        ),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{head}"
    );
    let text = String::from_utf8(body).expect("UTF-8 exposition");
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Scrapes until `ok` holds (the agent's own counters are refreshed every 500 ms).
fn scrape_until(addr: SocketAddr, what: &str, ok: impl Fn(&Exposition) -> bool) -> Exposition {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let e = scrape(addr);
        if ok(&e) {
            return e;
        }
        assert!(Instant::now() < end, "{what}: {e:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metrics_options(port: u16, extra_sip: &str) -> AgentOptions {
    AgentOptions {
        sip_extra: extra_sip.into(),
        // Calls stay up until the test ends them; a wrong key ends a call at once.
        ivr_extra: "no_input_timeout_ms = 60000\nmax_retries = 0".into(),
        extra: format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
        ..AgentOptions::default()
    }
}

fn cli_announcements(agent: &Agent) -> serde_json::Value {
    let run = ccedge_cli(&[
        "announcements",
        "--json",
        "--config",
        agent.config.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    serde_json::from_str(&run.stdout).expect("announcements json")
}

const ANN: [(&str, &str); 2] = [("id", "metrics-tone"), ("version", "1")];

#[test]
fn real_calls_show_in_the_metrics_during_and_after() {
    let dir = TempDir::new("metrics-calls");
    // An announcement in the cache: a 600 Hz tone of 5 s.
    let wav = tone_wav(600.0, 5.0, 0.5);
    let sha = sha256_hex(&wav);
    std::fs::create_dir_all(dir.path().join("audio")).unwrap();
    std::fs::create_dir_all(dir.path().join("announcements")).unwrap();
    std::fs::write(dir.path().join("audio").join(format!("{sha}.wav")), &wav).unwrap();
    std::fs::write(
        dir.path().join("announcements").join("metrics-tone.json"),
        format!(r#"{{"id":"metrics-tone","version":1,"priority":10,"audio_sha256":"{sha}"}}"#),
    )
    .unwrap();
    let port = free_tcp_port();
    let endpoint = SocketAddr::from(([127, 0, 0, 1], port));
    let agent = Agent::start_with_allow(
        dir.path(),
        &metrics_options(port, "max_calls = 3"),
        "127.0.0.1/32",
    );
    let sip = agent.sip;

    // Before any call: everything at zero, and the pacer already runs.
    let idle = scrape(endpoint);
    assert_eq!(idle.get("ccedge_calls_active", &[]), 0.0);
    assert_eq!(
        idle.get("ccedge_calls_ended_total", &[("reason", "caller_hangup")]),
        0.0
    );
    assert_eq!(idle.value("ccedge_announcement_plays_total", &ANN), None);
    assert_eq!(
        idle.family("ccedge_pacer_lateness_seconds").unwrap().kind,
        "histogram"
    );

    // Three calls fill sip.max_calls; each hears the announcement.
    let mut gw = CallGateway::new();
    let sinks: Vec<RtpSink> = (0..3).map(|_| RtpSink::new()).collect();
    for (n, sink) in sinks.iter().enumerate() {
        gw.place(sip, n as u64 + 1, "12155550123", sink.port());
    }
    let ports = gw.wait_answered(sip, 3, Duration::from_secs(10));
    assert_eq!(ports.len(), 3, "{:?}", gw.calls());
    let end = Instant::now() + Duration::from_secs(10);
    while sinks
        .iter()
        .any(|s| longest_tone_run(&pcmu_frames(&s.packets()), 600.0) < 10)
    {
        assert!(
            Instant::now() < end,
            "the announcement was not heard on every call"
        );
        gw.pump(sip, Duration::from_millis(50));
    }
    // A fourth call is refused (503), a source outside sip.allow is dropped, and a datagram
    // that is not SIP is counted as malformed.
    gw.place(sip, 4, "12155550124", RtpSink::new().port());
    gw.pump(sip, Duration::from_millis(300));
    let mut outsider = CallGateway::bind("127.0.0.2");
    outsider.place(sip, 5, "12155550125", 9);
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    junk.send_to(b"this is not SIP\r\n\r\n", sip).unwrap();

    let during = scrape_until(endpoint, "refusals counted", |e| {
        e.value("ccedge_calls_refused_total", &[]) == Some(1.0)
            && e.value("ccedge_sip_requests_refused_total", &[("cause", "denied")]) == Some(1.0)
            && e.value(
                "ccedge_sip_requests_refused_total",
                &[("cause", "malformed")],
            ) == Some(1.0)
    });
    assert_eq!(during.get("ccedge_calls_active", &[]), 3.0);
    assert_eq!(during.get("ccedge_calls_accepted_total", &[]), 3.0);
    assert_eq!(during.get("ccedge_call_setup_seconds_count", &[]), 3.0);
    assert_eq!(
        during.get(
            "ccedge_sip_requests_refused_total",
            &[("cause", "rate_limited")]
        ),
        0.0
    );
    assert_eq!(during.get("ccedge_announcement_plays_total", &ANN), 3.0);
    assert_eq!(
        during.get("ccedge_calls_ended_total", &[("reason", "caller_hangup")]),
        0.0
    );
    assert!(during.get("ccedge_pacer_lateness_seconds_count", &[]) > 0.0);

    // Call 1: a key during the announcement (barge-in); with max_retries = 0 a wrong key ends
    // the call, so the node hangs up.
    let agent_rtp = SocketAddr::from(([127, 0, 0, 1], ports[0]));
    let caller_rtp = sinks
        .iter()
        .find(|s| s.packets().first().is_some_and(|p| p.from == agent_rtp))
        .expect("the sink of the first answered call");
    let (mut seq, ts) = (100u16, 40_000u32);
    caller_rtp.send_digit(agent_rtp, Digit::D9, 101, ts, &mut seq);
    scrape_until(endpoint, "the barge-in", |e| {
        e.value("ccedge_announcement_barge_ins_total", &ANN) == Some(1.0)
    });
    // One of the others hears it to its end; the last hangs up before.
    let to_hang_up: Vec<u64> = gw
        .calls()
        .values()
        .filter(|c| c.answer.is_some_and(|(_, p)| p != ports[0]))
        .map(|c| {
            u64::from_str_radix(
                c.call_id
                    .trim_start_matches("sim-")
                    .split('@')
                    .next()
                    .unwrap(),
                16,
            )
            .unwrap()
        })
        .collect();
    assert_eq!(to_hang_up.len(), 2, "{:?}", gw.calls());
    gw.hang_up(sip, to_hang_up[0]);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        gw.pump(sip, Duration::from_millis(100));
        let e = scrape(endpoint);
        if e.value("ccedge_announcement_completions_total", &ANN) == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < end,
            "the announcement never completed: {e:#?}"
        );
    }
    gw.hang_up(sip, to_hang_up[1]);
    assert!(
        gw.wait_ended(sip, Duration::from_secs(10)),
        "{:?}",
        gw.calls()
    );

    let after = scrape_until(endpoint, "every call ended", |e| {
        e.value("ccedge_calls_active", &[]) == Some(0.0)
    });
    for (reason, n) in [
        ("caller_hangup", 2.0),
        ("node_hangup", 1.0),
        ("abandoned", 0.0),
        ("rejected", 0.0),
        ("media_timeout", 0.0),
        ("error", 0.0),
        ("shutdown", 0.0),
    ] {
        assert_eq!(
            after.get("ccedge_calls_ended_total", &[("reason", reason)]),
            n,
            "{reason}"
        );
    }
    assert_eq!(after.get("ccedge_calls_accepted_total", &[]), 3.0);
    assert_eq!(after.get("ccedge_calls_refused_total", &[]), 1.0);
    assert_eq!(after.get("ccedge_calls_refused_share_total", &[]), 0.0);
    assert_eq!(after.get("ccedge_announcement_plays_total", &ANN), 3.0);
    assert_eq!(
        after.get("ccedge_announcement_completions_total", &ANN),
        1.0
    );
    assert_eq!(after.get("ccedge_announcement_barge_ins_total", &ANN), 1.0);
    assert_eq!(
        after.get(
            "ccedge_callbacks_total",
            &[("outcome", "booked"), ("window", "asap")]
        ),
        0.0
    );
    assert_eq!(after.get("ccedge_mqtt_connected", &[]), 0.0);
    assert_eq!(after.get("ccedge_callbacks_waiting", &[]), 0.0);
    let paced = after.get("ccedge_pacer_lateness_seconds_count", &[]);
    assert!(paced > during.get("ccedge_pacer_lateness_seconds_count", &[]));
    // Three calls' set-up took well under a second each on loopback.
    assert_eq!(
        after.get("ccedge_call_setup_seconds_bucket", &[("le", "1.0")]),
        3.0
    );
    assert!(after
        .value(
            "ccedge_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        )
        .is_some());

    // `ccedge announcements` shows the same figures (from the snapshot, within 500 ms).
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let listed = cli_announcements(&agent);
        let row = &listed[0];
        assert_eq!(row["id"], "metrics-tone", "{listed}");
        let heard = (&row["plays"], &row["completions"], &row["barge_ins"]);
        if heard
            == (
                &serde_json::json!(3),
                &serde_json::json!(1),
                &serde_json::json!(1),
            )
        {
            break;
        }
        assert!(Instant::now() < end, "{listed}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let table = ccedge_cli(&[
        "announcements",
        "--config",
        agent.config.to_str().expect("utf-8 path"),
    ]);
    assert!(
        table.stdout.contains("PLAYS") && table.stdout.contains("BARGE-IN"),
        "{}",
        table.stdout
    );
}

#[test]
fn bad_requests_get_4xx_and_the_endpoint_keeps_serving() {
    let dir = TempDir::new("metrics-http");
    let port = free_tcp_port();
    let endpoint = SocketAddr::from(([127, 0, 0, 1], port));
    let mut agent = Agent::start(dir.path(), &metrics_options(port, ""));

    // Idle connections hold slots until their read timeout; meanwhile the endpoint answers
    // what it has room for and turns the rest away with 503. (They come first: a finished
    // request holds its slot a moment longer, while the server reads the client's close.)
    let opened = Instant::now();
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(endpoint).expect("connect"))
        .collect();
    let (status, head, _) = http(endpoint, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, 503, "{head}");
    let mut oversized = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    oversized.resize(64 * 1024, b'a');
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
        ),
        ("not HTTP", b"hello\r\n\r\n".to_vec(), 400),
        ("oversized head", oversized, 431),
        ("other path", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 404),
        (
            "other path",
            b"GET /metrics/../x HTTP/1.1\r\n\r\n".to_vec(),
            404,
        ),
        (
            "other method",
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
            405,
        ),
        (
            "other method",
            b"DELETE /metrics HTTP/1.1\r\n\r\n".to_vec(),
            405,
        ),
        (
            "other version",
            b"GET /metrics HTTP/2.0\r\n\r\n".to_vec(),
            505,
        ),
        ("cut short", b"GET /metr".to_vec(), 400),
    ];
    // Once the idle connections time out (a client that sends nothing gets 408 after 5 s),
    // the slots are free again.
    let (status, head, body) = http_until(
        idle_free_after(idle, endpoint),
        b"HEAD /metrics HTTP/1.1\r\n\r\n",
        200,
    );
    assert!(opened.elapsed() >= Duration::from_secs(4), "408 too early");
    assert_eq!(status, 200, "{head}");
    assert!(
        body.is_empty() && head.contains("openmetrics-text"),
        "{head}"
    );
    for (what, request, want) in cases {
        let addr = endpoint;
        let (status, head, body) = if what == "cut short" {
            // The request ends without its blank line: the client closes its side.
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&request).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut raw = Vec::new();
            s.read_to_end(&mut raw).unwrap();
            let text = String::from_utf8_lossy(&raw).into_owned();
            let status = text
                .split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            (status, text, Vec::new())
        } else {
            http(addr, &request)
        };
        assert_eq!(status, want, "{what}: {head}");
        if want == 405 {
            assert!(head.contains("\r\nAllow: GET, HEAD"), "{head}");
        }
        let _ = body;
    }
    // Still serving, and the agent still takes calls.
    let e = scrape(endpoint);
    assert_eq!(e.get("ccedge_calls_active", &[]), 0.0);
    let mut gw = CallGateway::new();
    let sink = RtpSink::new();
    gw.place(agent.sip, 1, "12155550123", sink.port());
    assert_eq!(
        gw.wait_answered(agent.sip, 1, Duration::from_secs(10))
            .len(),
        1
    );
    scrape_until(endpoint, "the call", |e| {
        e.value("ccedge_calls_active", &[]) == Some(1.0)
    });
    assert!(agent.is_running());
    assert_eq!(agent.terminate(), Some(0));
}

/// Repeats `request` (a new connection each time) until it is answered `want`, for 3 s at
/// most; returns the last answer.
fn http_until(addr: SocketAddr, request: &[u8], want: u16) -> (u16, String, Vec<u8>) {
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let r = http(addr, request);
        if r.0 == want || Instant::now() >= end {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Drops the idle connections once the server has timed them out, and returns `addr`.
fn idle_free_after(idle: Vec<TcpStream>, addr: SocketAddr) -> SocketAddr {
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        assert!(
            raw.starts_with(b"HTTP/1.1 408 "),
            "{:?}",
            String::from_utf8_lossy(&raw)
        );
    }
    addr
}

#[test]
fn a_taken_metrics_port_stops_the_agent_at_start_and_no_key_means_no_endpoint() {
    let dir = TempDir::new("metrics-taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = dir.path().join("ccedge.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"t\"\nstate_dir = \"{}\"\n[sip]\nlisten = \"127.0.0.1:0\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(ccedge_bin())
        .args(["agent", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("run ccedge agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for metrics on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!stderr.contains("accepting calls"), "{stderr}");
    drop(taken);

    // Without the key nothing listens on a metrics port.
    let port = free_tcp_port();
    let agent = Agent::start(dir.path(), &AgentOptions::default());
    assert!(!agent.log().iter().any(|l| l.contains("metrics endpoint")));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());

    // `ccedge config check` names the key of a bad value and exits 2.
    std::fs::write(&config, "[metrics]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let run = ccedge_cli(&["config", "check", config.to_str().unwrap()]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("metrics.listen"), "{}", run.stderr);
}
