//! `ccedge`: the contact-centre edge agent.
//!
//! One binary for the daemon (`ccedge agent`) and the field technician's CLI (`status`, `calls`,
//! `callbacks`, `announcements`, `events tail`, `doctor`, `config check`). The CLI talks to a
//! running agent over its control socket.
//!
//! ## Layout
//! `main.rs` parses the command line and dispatches. The daemon shell (SIP/RTP sockets, MQTT,
//! storage, control socket) is being built around the `shared` core.
//!
//! ## Run loop
//! Each core machine is driven the same way: `handle_*`, drain `poll_output`, re-arm one timer
//! from `poll_timeout` (see the `shared` crate docs).
//!
//! ## Time
//! The only conversion between tokio's clock and `shared::Instant` will live in `clock.rs`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code of a CLI command run while no agent is running (INTERFACES.md §2).
const EXIT_NO_AGENT: u8 = 3;

#[derive(Debug, Parser)]
#[command(name = "ccedge", version, about = "ccedge contact-centre edge agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent in the foreground.
    Agent {
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Node id, site, version, MQTT state, active calls, queue depths.
    Status {
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Agent { .. } => {
            eprintln!("ccedge agent: the daemon shell is not part of this build yet");
            ExitCode::from(1)
        }
        Command::Status { .. } => {
            eprintln!("ccedge: no agent running");
            ExitCode::from(EXIT_NO_AGENT)
        }
    }
}
