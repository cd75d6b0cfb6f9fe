//! The `ccedge` command, built by the test crate so that `cargo test` always has a binary of
//! the current code to start (`CARGO_BIN_EXE_ccedge-under-test`). It is exactly `ccedge`.

fn main() -> std::process::ExitCode {
    edge::cli::main()
}
