//! [`check_writable`]: the state-directory check behind `ccedge doctor`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

use super::error::StoreError;

/// Bytes written (and `fsync`'d) to the probe file.
const PROBE_BYTES: usize = 4096;

/// Checks that `state_dir` exists and takes durable writes — creates a probe file, writes
/// and `fsync`s it, deletes it and `fsync`s the directory — and returns the bytes free for
/// unprivileged users on its file system.
///
/// Free space is read with POSIX `df -Pk` (this workspace forbids `unsafe`, so `statvfs`
/// through `libc` is not available); the figure has 1 KiB granularity.
///
/// # Errors
/// [`StoreError::CannotOpen`] when the directory does not exist, [`StoreError::ReadOnly`]
/// / [`StoreError::DiskFull`] / [`StoreError::Io`] when the probe fails, and
/// [`StoreError::Other`] when free space cannot be read.
pub fn check_writable(state_dir: &Path) -> Result<u64, StoreError> {
    let meta = std::fs::metadata(state_dir).map_err(|e| StoreError::from_io(state_dir, &e))?;
    if !meta.is_dir() {
        return Err(StoreError::CannotOpen {
            path: state_dir.to_path_buf(),
            detail: "not a directory".to_owned(),
        });
    }
    probe_write(state_dir)?;
    free_bytes(state_dir)
}

/// Writes, `fsync`s and deletes a probe file in `state_dir`, then `fsync`s the directory.
///
/// # Errors
/// [`StoreError::DiskFull`], [`StoreError::ReadOnly`], [`StoreError::Io`] and
/// [`StoreError::CannotOpen`] as the file system answers.
pub(crate) fn probe_write(state_dir: &Path) -> Result<(), StoreError> {
    let probe = state_dir.join(format!(".ccedge-probe-{}", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|mut f| {
            f.write_all(&[0u8; PROBE_BYTES])?;
            f.sync_all()
        })
        .map_err(|e| StoreError::from_io(&probe, &e));
    let removed = std::fs::remove_file(&probe);
    written?;
    removed.map_err(|e| StoreError::from_io(&probe, &e))?;
    File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::from_io(state_dir, &e))
}

/// Free bytes (available to unprivileged users) on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64, StoreError> {
    let other = |detail: String| StoreError::Other {
        path: dir.to_path_buf(),
        detail,
    };
    let out = Command::new("df")
        .arg("-Pk")
        .arg("--")
        .arg(dir)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| other(format!("could not run df to read free space: {e}")))?;
    if !out.status.success() {
        return Err(other(format!(
            "df failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_df_available_kib(&text)
        .and_then(|kib| kib.checked_mul(1024))
        .ok_or_else(|| other(format!("could not read df output: {}", text.trim())))
}

/// The "Available" column (KiB) of `df -Pk` output for one file system. Columns are found
/// from the capacity field (`NN%`) so a file-system name with spaces does no harm.
pub(crate) fn parse_df_available_kib(text: &str) -> Option<u64> {
    let line = text.lines().nth(1)?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let cap = fields.iter().enumerate().skip(4).find_map(|(i, f)| {
        let pct = f.strip_suffix('%')?;
        (pct == "-" || pct.parse::<u32>().is_ok()).then_some(i)
    })?;
    fields.get(cap.checked_sub(1)?)?.parse().ok()
}
