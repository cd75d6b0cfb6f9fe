//! Helpers for ccedge's integration tests: locating the workspace's built binaries.

use std::path::PathBuf;

/// Path of a binary built by this workspace (`ccedge`, `firmware-sim`) in the same profile as
/// the test binary that asks.
#[must_use]
pub fn workspace_bin(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop(); // deps/
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}
