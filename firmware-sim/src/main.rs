//! `firmware-sim`: ccedge's simulated gateway and CRM, deterministic simulator and demo.
//!
//! ## Layout
//! `main.rs` parses the command line; `demo.rs` runs the `shared` core's call flow on a
//! virtual clock.
//!
//! ## Run loop and time
//! Everything here runs on virtual time: `now` starts at zero and jumps to the next deadline
//! that the core reports through `poll_timeout`, so a simulated minute takes microseconds.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "firmware-sim", version, about = "ccedge gateway/CRM simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a demonstration of the core on virtual time.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo => {
            println!(
                "firmware-sim demo: ccedge core {}",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
    }
}
