//! The `firmware-sim` command, built by the test crate so that `cargo test` always has a
//! binary of the current code to start. It is exactly `firmware-sim`.

fn main() -> std::process::ExitCode {
    firmware_sim::main()
}
