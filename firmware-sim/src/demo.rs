//! `firmware-sim demo`: everything on one machine with nothing installed.
//!
//! Stub while the real demo is built.

use std::process::ExitCode;

mod virtual_time;

/// `firmware-sim demo --virtual`.
pub(crate) fn main_virtual() -> ExitCode {
    virtual_time::main()
}

/// `firmware-sim demo`.
pub(crate) fn main(calls: u32) -> ExitCode {
    let _ = calls;
    ExitCode::FAILURE
}
