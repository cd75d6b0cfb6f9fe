//! The `ccedge` command line: `agent`, `config check`, and the technician commands that talk
//! to a running agent.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::agent::{self, AgentConfig};
use crate::config::{self, Config};

/// Exit code of a bad configuration (INTERFACES.md §2).
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
    /// Run the agent in the foreground (logs to stderr; SIGTERM/SIGINT drain and exit 0).
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
    /// Node id, site, version, MQTT state, active calls, queue depths.
    Status {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
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
        Command::Status { .. } => {
            eprintln!("ccedge: no agent running");
            ExitCode::from(EXIT_NO_AGENT)
        }
    }
}

/// Builds the agent's settings from the validated configuration.
#[must_use]
pub fn agent_config(cfg: &Config) -> AgentConfig {
    let allow = cfg.sip.allow.clone();
    let mut ivr = shared::ivr::Config {
        transfer_available: cfg.ivr.transfer_uri.is_some(),
        offer_callback_default: cfg.ivr.offer_callback_default,
        country_code: cfg.ivr.country_code,
        ..shared::ivr::Config::default()
    };
    ivr.no_input_timeout =
        shared::time::Duration::from_millis(u64::from(cfg.ivr.no_input_timeout_ms));
    ivr.booking_timeout =
        shared::time::Duration::from_millis(u64::from(cfg.ivr.booking_timeout_ms));
    ivr.max_no_input = cfg.ivr.max_retries.max(1);
    ivr.max_invalid = cfg.ivr.max_retries.max(1);
    AgentConfig {
        node_id: cfg.node.id.clone(),
        site: cfg.node.site.clone(),
        state_dir: cfg.node.state_dir.clone(),
        sip_listen: cfg.sip.listen,
        allow: Arc::new(move |ip| allow.allows(ip)),
        deny_with_403: matches!(cfg.sip.deny_action, config::DenyAction::Forbidden),
        rate_limit_per_source: cfg.sip.rate_limit_per_source,
        public_address: cfg.sip.public_address,
        t1: Duration::from_millis(u64::from(cfg.sip.t1_ms)),
        answer_delay: Duration::from_millis(u64::from(cfg.sip.answer_delay_ms)),
        rtp_port_min: cfg.rtp.port_min,
        rtp_port_max: cfg.rtp.port_max,
        media_timeout: (cfg.rtp.media_timeout_s > 0)
            .then(|| Duration::from_secs(u64::from(cfg.rtp.media_timeout_s))),
        transfer_uri: cfg.ivr.transfer_uri.clone(),
        prompts_dir: cfg.ivr.prompts_dir.clone(),
        ivr,
        callbacks: shared::callback::Config {
            dedup_window: shared::time::Duration::from_secs(u64::from(
                cfg.callbacks.dedupe_window_s,
            )),
            max_age: shared::time::Duration::from_secs(u64::from(cfg.callbacks.max_age_s)),
        },
        max_audio_bytes: u64::from(cfg.announcements.max_audio_bytes),
        max_calls: 20_000,
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

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let default = cfg.log.level.as_str();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if matches!(cfg.log.format, config::LogFormat::Json) {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

fn run_agent(path: Option<PathBuf>) -> ExitCode {
    let cfg = match config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&cfg);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("ccedge")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ccedge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let running = match agent::start(agent_config(&cfg), stop_rx).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "agent did not start");
                eprintln!("ccedge: {e}");
                return ExitCode::FAILURE;
            }
        };
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        tokio::spawn(watchdog(running.snapshot.clone()));
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
            let _ = stop_tx.send(true);
            // A second signal stops at once.
            wait_for_signal().await;
            std::process::exit(1);
        });
        match running.task.await {
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

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
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
