//! `firmware-sim demo`: placeholder.
use std::process::ExitCode;
pub(crate) fn main() -> ExitCode {
    ExitCode::SUCCESS
}
