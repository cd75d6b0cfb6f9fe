//! The `ccedge` command line: `agent`, `config check`, and the technician commands that talk
//! to a running agent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::agent::{self, AgentConfig};
use crate::config::{self, Config};
use crate::control;

/// Exit code of a bad configuration (README, "Configuration": a bad value exits with 2).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code of a technician command run while no agent is running.
pub const EXIT_NO_AGENT: u8 = 3;

#[derive(Debug, Parser)]
#[command(name = "ccedge", version, about = "ccedge contact-centre edge agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent in the foreground (logs to stderr; SIGTERM/SIGINT drain and exit 0;
    /// SIGHUP reloads the configuration file, calls stay up).
    Agent {
        /// Configuration file (TOML); without one, safe development defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Node id, site, version, uptime, SIP address, MQTT state, calls, queue depths.
    Status {
        #[command(flatten)]
        common: Common,
    },
    /// The active calls (caller numbers masked unless --reveal).
    Calls {
        #[command(flatten)]
        common: Common,
        /// Show caller numbers unmasked (personal data: only when needed).
        #[arg(long)]
        reveal: bool,
    },
    /// The local callback queue and each entry's sync state; `callbacks cancel ID` cancels one.
    Callbacks {
        #[command(flatten)]
        common: Common,
        /// Show numbers unmasked (personal data: only when needed).
        #[arg(long)]
        reveal: bool,
        #[command(subcommand)]
        action: Option<CallbacksCommand>,
    },
    /// Active and scheduled announcements: version, scope, audio hash, audio held locally.
    Announcements {
        #[command(flatten)]
        common: Common,
    },
    /// Call events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Check the installation (config, ports, state dir, broker, TLS files, clock, prompts);
    /// exit 0 when all pass, 1 when any fails. Works with or without a running agent.
    Doctor {
        #[command(flatten)]
        common: Common,
    },
}

/// Options every technician command takes.
#[derive(Debug, Clone, Args)]
struct Common {
    /// One JSON document on stdout, stable field names (for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// The agent's configuration file: it names the control socket (`control.socket`, else
    /// `<node.state_dir>/control.sock`). Default: /etc/ccedge/ccedge.toml when it exists,
    /// else the built-in defaults; `CCEDGE__…` variables apply either way.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum CallbacksCommand {
    /// Cancel a waiting callback.
    Cancel {
        /// The callback id (from `ccedge callbacks`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// Follow call events as they are produced (Ctrl-C to stop); `--json`: one event per line.
    Tail {
        #[command(flatten)]
        common: Common,
        /// Show numbers unmasked (personal data: only when needed).
        #[arg(long)]
        reveal: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config file (and the environment overrides) and print the effective config.
    Check {
        /// The file; without one, the defaults plus environment.
        path: Option<PathBuf>,
    },
}

/// Runs the `ccedge` command line; the binary's `main` is just this.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Agent { config } => run_agent(config),
        Command::Config {
            command: ConfigCommand::Check { path },
        } => match config::load(path.as_deref()) {
            Ok(cfg) => {
                print!("{}", cfg.to_toml_redacted());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Status { common } => technician::status(&common),
        Command::Calls { common, reveal } => technician::calls(&common, reveal),
        Command::Callbacks {
            common,
            reveal,
            action: None,
        } => technician::callbacks(&common, reveal),
        Command::Callbacks {
            common,
            action: Some(CallbacksCommand::Cancel { id }),
            ..
        } => technician::cancel_callback(&common, id),
        Command::Announcements { common } => technician::announcements(&common),
        Command::Events {
            command: EventsCommand::Tail { common, reveal },
        } => technician::events_tail(&common, reveal),
        Command::Doctor { common } => technician::doctor(&common),
    }
}

/// Builds the agent's settings from the validated configuration.
#[must_use]
pub fn agent_config(cfg: &Config) -> AgentConfig {
    let allow = cfg.sip.allow.clone();
    AgentConfig {
        node_id: cfg.node.id.clone(),
        site: cfg.node.site.clone(),
        state_dir: cfg.node.state_dir.clone(),
        sip_listen: cfg.sip.listen,
        allow: Arc::new(move |ip| allow.allows(ip)),
        deny_with_403: matches!(cfg.sip.deny_action, config::DenyAction::Forbidden),
        tls: match (cfg.sip.tls_listen, &cfg.sip.tls_cert, &cfg.sip.tls_key) {
            (Some(listen), Some(cert), Some(key)) => Some(crate::agent::TlsSettings {
                listen,
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        },
        tcp: cfg.sip.tcp.then(|| crate::agent::TcpSettings {
            idle: Duration::from_secs(u64::from(cfg.sip.tcp_idle_s)),
            max_connections: usize::try_from(cfg.sip.tcp_max_connections).unwrap_or(usize::MAX),
            max_per_source: usize::try_from(cfg.sip.tcp_max_per_source).unwrap_or(usize::MAX),
        }),
        rate_limit_per_source: cfg.sip.rate_limit_per_source,
        public_address: cfg.sip.public_address,
        t1: Duration::from_millis(u64::from(cfg.sip.t1_ms)),
        answer_delay: Duration::from_millis(u64::from(cfg.sip.answer_delay_ms)),
        server_header: cfg.sip.server_header.clone(),
        rtp_port_min: cfg.rtp.port_min,
        rtp_port_max: cfg.rtp.port_max,
        media_timeout: (cfg.rtp.media_timeout_s > 0)
            .then(|| Duration::from_secs(u64::from(cfg.rtp.media_timeout_s))),
        transfer_uri: cfg.ivr.transfer_uri.clone(),
        prompts_dir: cfg.ivr.prompts_dir.clone(),
        languages: cfg.languages_core(),
        // The one mapping from the configuration to the core (tested in config/tests.rs).
        ivr: cfg.ivr_core(),
        callbacks: cfg.callbacks_core(),
        // Validated before the agent starts; the fallbacks are never used.
        hours: cfg.callback_hours().unwrap_or_default(),
        timezone: cfg.callback_zone().unwrap_or(jiff::tz::TimeZone::UTC),
        max_audio_bytes: u64::from(cfg.announcements.max_audio_bytes),
        max_calls: usize::try_from(cfg.sip.max_calls).unwrap_or(usize::MAX),
        max_pacer_load_permille: u64::from(cfg.rtp.max_pacer_load_percent) * 10,
        media_threads: cfg.media_threads(),
        media_realtime_priority: cfg.rtp.realtime_priority,
        shutdown_grace: Duration::from_secs(5),
        link: Some(link_config(cfg)),
    }
}

/// Builds the CRM link's settings from the validated configuration.
#[must_use]
pub fn link_config(cfg: &Config) -> crate::link::LinkConfig {
    crate::link::LinkConfig {
        mqtt: cfg.mqtt.clone(),
        client_id: cfg.mqtt_client_id(),
        node_id: cfg.node.id.clone(),
        site: cfg.node.site.clone(),
        state_dir: cfg.node.state_dir.clone(),
        speech_command: cfg.ivr.speech_command.clone(),
        max_audio_bytes: u64::from(cfg.announcements.max_audio_bytes),
        signing_key: cfg.announcements.signing_key.as_ref().map(|k| k.0),
        outbox: shared::event::outbox::Config {
            capacity: cfg.mqtt.outbox_capacity,
            retention: (cfg.mqtt.outbox_retention_h > 0).then(|| {
                shared::time::Duration::from_secs(u64::from(cfg.mqtt.outbox_retention_h) * 3600)
            }),
            ..shared::event::outbox::Config::default()
        },
        status_interval: Duration::from_secs(u64::from(cfg.mqtt.status_interval_s)),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: crate::clock::wall_now(),
    }
}

/// The log filter: `RUST_LOG` when set, else `log.level`.
fn log_filter(cfg: &Config) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(cfg.log.level.as_str()))
}

/// Sets up logging to stderr; returns what swaps the filter on a reload (`None` when a
/// subscriber was already set).
fn init_logging(cfg: &Config) -> Option<crate::reload::LogReload> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{fmt, reload};
    let (filter, handle) = reload::Layer::new(log_filter(cfg));
    // A log that cannot be written must never stop the agent (see `crate::logsink`).
    let layer = fmt::layer()
        .with_writer(crate::logsink::LogSink)
        .log_internal_errors(false)
        .with_ansi(false);
    let registry = tracing_subscriber::registry().with(filter);
    let set = if matches!(cfg.log.format, config::LogFormat::Json) {
        registry.with(layer.json()).try_init()
    } else {
        registry.with(layer).try_init()
    };
    set.ok()?;
    let swap: crate::reload::LogReload =
        Box::new(move |cfg: &Config| handle.reload(log_filter(cfg)).map_err(|e| e.to_string()));
    Some(swap)
}

/// `eprintln!` for the agent: a standard error that cannot be written is ignored, never a
/// panic (see `crate::logsink`).
fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{args}");
}

fn run_agent(path: Option<PathBuf>) -> ExitCode {
    let cfg = match config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            say(format_args!("{e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let log_reload = init_logging(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ccedge")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(format_args!("ccedge: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Signals are caught from before the agent starts, so a SIGTERM right after start
        // drains instead of killing the process, and a SIGHUP waits for the agent to be up.
        let signals = Signals::new();
        let hup = Arc::new(tokio::sync::Notify::new());
        let hup_tx = Arc::clone(&hup);
        tokio::spawn(async move {
            let mut signals = match signals {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "signals cannot be caught: SIGTERM and SIGHUP kill the agent");
                    // No signal handling: run until killed (keep the stop sender alive).
                    let _keep = stop_tx;
                    std::future::pending::<()>().await;
                    return;
                }
            };
            while signals.next().await == Signal::Reload {
                hup_tx.notify_one();
            }
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            let _ = stop_tx.send(true);
            // A second SIGTERM or SIGINT stops at once.
            while signals.next().await == Signal::Reload {
                tracing::info!("SIGHUP ignored: the agent is shutting down");
            }
            std::process::exit(1);
        });
        // Bound first, so a second agent on the same socket stops before binding SIP.
        let control_listener = match control::ControlListener::bind(&cfg.control_socket()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "control socket unusable");
                say(format_args!("ccedge: {e}"));
                return ExitCode::FAILURE;
            }
        };
        let metrics_listener = match cfg.metrics.listen {
            Some(addr) => match crate::metrics::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(error = %e, metrics = %addr, "metrics endpoint unusable");
                    say(format_args!("ccedge: cannot listen for metrics on {addr}: {e}"));
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        };
        let reload_stop = stop_rx.clone();
        let running = match agent::start(agent_config(&cfg), stop_rx).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "agent did not start");
                say(format_args!("ccedge: {e}"));
                return ExitCode::FAILURE;
            }
        };
        if let Some(listener) = metrics_listener {
            let registry = crate::metrics::registry(
                &running.metrics,
                running.snapshot.clone(),
                running.link_status.clone(),
                env!("CARGO_PKG_VERSION"),
            );
            tokio::spawn(crate::metrics::serve(listener, registry));
        }
        let (reload_status, reload_status_rx) =
            tokio::sync::watch::channel(crate::view::ReloadStatus::default());
        let reloader = crate::reload::Reloader {
            path: path.clone(),
            running: cfg.clone(),
            log: log_reload,
            commands: running.commands.clone(),
            status: reload_status,
        };
        tokio::spawn(reloader.run(hup, reload_stop));
        let (control_stop, control_stop_rx) = tokio::sync::watch::channel(false);
        let control_task = control_listener.serve(control::ControlContext {
            node_id: cfg.node.id.clone(),
            site: cfg.node.site.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            mqtt_url: cfg.mqtt.url.to_string(),
            sip_addr: running.sip_addr,
            started_at: crate::clock::wall_now(),
            snapshot: running.snapshot.clone(),
            commands: running.commands.clone(),
            link_status: running.link_status.clone(),
            events: running.events.clone(),
            reloads: reload_status_rx,
            shutdown: control_stop_rx,
        });
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        tokio::spawn(watchdog(running.snapshot.clone()));
        let result = running.task.await;
        // The socket stays up while calls drain, and goes (file removed) once they have.
        let _ = control_stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), control_task).await;
        match result {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "agent failed");
                ExitCode::FAILURE
            }
            Err(e) => {
                tracing::error!(error = %e, "agent task panicked");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM, SIGINT and SIGHUP, registered when built.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGTERM or SIGINT: drain and exit.
    Stop,
    /// SIGHUP: reload the configuration.
    Reload,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Pings the systemd watchdog at half its period when `WatchdogSec` is set, but only while
/// the agent's engine loop is alive: it publishes a snapshot every 500 ms, and a tick that saw
/// no new snapshot sends no ping (so a stuck engine gets the service restarted).
async fn watchdog(mut snapshot: tokio::sync::watch::Receiver<agent::Snapshot>) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(period / 2);
    loop {
        tick.tick().await;
        match snapshot.has_changed() {
            Ok(true) => {
                snapshot.borrow_and_update();
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Ok(false) => {}
            Err(_) => return,
        }
    }
}

/// The technician commands: each finds the control socket from the configuration, asks the
/// agent, and prints a table or (`--json`) one JSON document.
mod technician {
    use std::io::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;

    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::{Common, EXIT_CONFIG, EXIT_NO_AGENT};
    use crate::config;
    use crate::control::client::{self, ClientError, EventStream, StreamItem};
    use crate::control::protocol::{
        AnnouncementView, CallView, CallbackView, CancelData, Request, StatusData,
    };
    use crate::control::{doctor as checks, render};

    /// The configuration file used when `--config` is not given and this file exists.
    const DEFAULT_CONFIG: &str = "/etc/ccedge/ccedge.toml";

    fn config_path(common: &Common) -> Option<PathBuf> {
        common.config.clone().or_else(|| {
            let p = PathBuf::from(DEFAULT_CONFIG);
            p.is_file().then_some(p)
        })
    }

    /// The control socket, or the exit code after printing the config error.
    fn socket(common: &Common) -> Result<PathBuf, ExitCode> {
        match config::load(config_path(common).as_deref()) {
            Ok(cfg) => Ok(cfg.control_socket()),
            Err(e) => {
                eprintln!("ccedge: {e}");
                Err(ExitCode::from(EXIT_CONFIG))
            }
        }
    }

    fn failed(e: &ClientError) -> ExitCode {
        match e {
            ClientError::NoAgent { path } => {
                eprintln!(
                    "ccedge: no agent running (control socket {})",
                    path.display()
                );
                ExitCode::from(EXIT_NO_AGENT)
            }
            other => {
                eprintln!("ccedge: {other}");
                ExitCode::FAILURE
            }
        }
    }

    /// Prints to stdout; a closed stdout (`| head`) is not an error worth a panic.
    fn out(text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    fn json<T: Serialize>(value: &T) -> String {
        let mut s = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_owned());
        s.push('\n');
        s
    }

    /// Asks for `T` and prints it with `table` (or as JSON).
    fn show<T: DeserializeOwned + Serialize>(
        common: &Common,
        request: &Request,
        table: impl FnOnce(&T) -> String,
    ) -> ExitCode {
        let path = match socket(common) {
            Ok(p) => p,
            Err(code) => return code,
        };
        match client::request_as::<T>(&path, request) {
            Ok(data) => {
                out(&if common.json {
                    json(&data)
                } else {
                    table(&data)
                });
                ExitCode::SUCCESS
            }
            Err(e) => failed(&e),
        }
    }

    pub(super) fn status(common: &Common) -> ExitCode {
        show::<StatusData>(common, &Request::Status, render::status)
    }

    pub(super) fn calls(common: &Common, reveal: bool) -> ExitCode {
        show::<Vec<CallView>>(common, &Request::Calls { reveal }, |r| render::calls(r))
    }

    pub(super) fn callbacks(common: &Common, reveal: bool) -> ExitCode {
        show::<Vec<CallbackView>>(common, &Request::Callbacks { reveal }, |r| {
            render::callbacks(r)
        })
    }

    pub(super) fn cancel_callback(common: &Common, id: String) -> ExitCode {
        show::<CancelData>(common, &Request::CancelCallback { id }, |d| {
            format!("callback {} cancelled\n", d.callback_id)
        })
    }

    pub(super) fn announcements(common: &Common) -> ExitCode {
        show::<Vec<AnnouncementView>>(common, &Request::Announcements, |r| {
            render::announcements(r)
        })
    }

    pub(super) fn events_tail(common: &Common, reveal: bool) -> ExitCode {
        let path = match socket(common) {
            Ok(p) => p,
            Err(code) => return code,
        };
        let mut stream = match EventStream::open(&path, reveal) {
            Ok(s) => s,
            Err(e) => return failed(&e),
        };
        loop {
            match stream.next_item() {
                Ok(Some(StreamItem::Event(ev))) => {
                    let line = if common.json {
                        ev.to_string()
                    } else {
                        render::event(&ev)
                    };
                    let mut stdout = std::io::stdout().lock();
                    if writeln!(stdout, "{line}")
                        .and_then(|()| stdout.flush())
                        .is_err()
                    {
                        return ExitCode::SUCCESS;
                    }
                }
                Ok(Some(StreamItem::Lagged(n))) => {
                    eprintln!("ccedge: {n} events skipped (this terminal read too slowly)");
                }
                Ok(None) => {
                    eprintln!("ccedge: the agent closed the event stream (it stopped)");
                    return ExitCode::SUCCESS;
                }
                Err(e) => return failed(&e),
            }
        }
    }

    pub(super) fn doctor(common: &Common) -> ExitCode {
        let path = config_path(common);
        let report = checks::run(path.as_deref().map(Path::new));
        if common.json {
            out(&json(&report));
        } else {
            let mut text = String::new();
            for c in &report.checks {
                text.push_str(&c.line());
                text.push('\n');
            }
            out(&text);
        }
        if report.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}
