//! `firmware-sim`: ccedge's simulated gateway and CRM, deterministic simulator and demo. See
//! the library docs for the layout.

fn main() -> std::process::ExitCode {
    firmware_sim::main()
}
