//! `firmware-sim`: ccedge's simulated gateway and CRM, deterministic simulator and demo.
//!
//! ## Layout
//! [`main`] parses the command line (the `firmware-sim` binary is just that); [`sim`] is the deterministic simulation of a whole
//! node's core (`firmware-sim sim --seed S`); [`calls`] is the SIP/RTP load generator
//! (`firmware-sim calls`); [`crm`] is the simulated CRM on a real broker
//! (`firmware-sim crm`); `demo.rs` runs the real agent with an in-process broker, the CRM and
//! a gateway (`firmware-sim demo`; `--virtual` runs a scripted scenario on the simulator's
//! machinery instead); [`gateway`] holds the text-based SIP user agent the simulated gateways
//! use.
//!
//! ## Run loop and time
//! The simulator runs on virtual time: `now` starts at zero and jumps to the next happening
//! on the simulator's agenda, so a simulated hour takes a second or two. `crm` and `demo` run
//! on tokio in real time.

extern crate alloc;

pub mod calls;
pub mod crm;
mod demo;
pub mod gateway;
mod sim;

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
    /// Place real SIP/RTP calls against an agent like a gateway and measure them.
    Calls(calls::Args),
    /// Everything on one machine: an in-process MQTT broker, the agent, a CRM pushing an
    /// outage announcement, a gateway placing calls; prints what happened.
    Demo {
        /// Instead, the scripted scenario of the core alone on virtual time.
        #[arg(long = "virtual")]
        virtual_time: bool,
        /// Calls the gateway places.
        #[arg(long, default_value_t = 20)]
        calls: u32,
    },
    /// The simulated CRM: publish announcements, watch events and callbacks.
    Crm(Box<crm::cli::CrmArgs>),
    /// Deterministic simulation of a node's core with faults; a failing seed reproduces.
    Sim {
        /// The seed: the same seed gives the same run, byte for byte.
        #[arg(long)]
        seed: u64,
        /// Stop placing calls after this many steps, then heal and drain.
        #[arg(long)]
        steps: Option<u64>,
        /// Calls to place.
        #[arg(long, default_value_t = 10_000)]
        calls: u64,
        /// Print one JSON document instead of the text summary.
        #[arg(long)]
        json: bool,
        /// Print every step (large).
        #[arg(long)]
        trace: bool,
        /// Count the documented, not yet fixed core bugs instead of failing on them.
        #[arg(long)]
        allow_known_bugs: bool,
    },
}

/// Runs the `firmware-sim` command line.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Calls(args) => calls::main(&args),
        Command::Demo {
            virtual_time: true, ..
        } => demo::main_virtual(),
        Command::Demo { calls, .. } => demo::main(calls),
        Command::Crm(args) => crm::cli::main(*args),
        Command::Sim {
            seed,
            steps,
            calls,
            json,
            trace,
            allow_known_bugs,
        } => {
            let mut cfg = sim::Config::new(seed, calls);
            cfg.steps = steps;
            cfg.trace = trace;
            cfg.allow_known_bugs = allow_known_bugs;
            match sim::run(&cfg) {
                Ok(summary) => {
                    if json {
                        match serde_json::to_string_pretty(&summary) {
                            Ok(s) => println!("{s}"),
                            Err(e) => {
                                eprintln!("firmware-sim: cannot render JSON: {e}");
                                return ExitCode::FAILURE;
                            }
                        }
                    } else {
                        print!("{}", sim::render(&summary));
                    }
                    ExitCode::SUCCESS
                }
                Err(f) => {
                    if json {
                        let doc = serde_json::json!({
                            "seed": f.seed,
                            "ok": false,
                            "step": f.step,
                            "time_s": f.at.as_micros() as f64 / 1e6,
                            "violation": f.message,
                        });
                        println!("{doc}");
                    }
                    eprintln!("{f}");
                    eprintln!(
                        "reproduce with: firmware-sim sim --seed {} --calls {}{}{}",
                        f.seed,
                        calls,
                        steps.map(|s| format!(" --steps {s}")).unwrap_or_default(),
                        if allow_known_bugs {
                            " --allow-known-bugs"
                        } else {
                            ""
                        }
                    );
                    ExitCode::FAILURE
                }
            }
        }
    }
}
