//! Where the agent's log lines go: standard error, through a writer that can never take the
//! daemon down.
//!
//! Under systemd, standard error is a pipe or socket to journald; when journald restarts its
//! end goes away and every write fails (`EPIPE`; Rust ignores `SIGPIPE`, so the write only
//! returns the error). A full or failing disk behind a redirected log gives `ENOSPC` or
//! `EIO`. tracing-subscriber reports a failed write by printing to standard error with
//! `eprintln!`, which panics when that print fails too: the agent would die mid-call because
//! its log was unavailable. [`LogSink`] therefore swallows write errors: the line is lost,
//! [`write_errors`] counts it (`ccedge status` shows the count), and the agent carries on.
//! Once the reader is back (a new journald connection needs a restart of the agent; a file
//! that has room again does not), lines are written again.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::fmt::MakeWriter;

static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Log lines (or parts of one) that could not be written since the agent started.
#[must_use]
pub fn write_errors() -> u64 {
    WRITE_ERRORS.load(Ordering::Relaxed)
}

/// A [`MakeWriter`] for standard error whose writes never fail (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LogSink;

    fn make_writer(&'a self) -> Self::Writer {
        LogSink
    }
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_swallowing(&mut io::stderr().lock(), buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Standard error is unbuffered; a failed flush would only be another lost line.
        let _ = io::stderr().lock().flush();
        Ok(())
    }
}

/// Writes all of `buf` to `out`, counting a failure in [`write_errors`] instead of returning
/// it.
fn write_swallowing(out: &mut impl Write, buf: &[u8]) {
    if out.write_all(buf).is_err() {
        WRITE_ERRORS.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken(io::ErrorKind);

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(self.0.into())
        }
    }

    #[test]
    fn failed_writes_are_counted_not_returned() {
        let before = write_errors();
        write_swallowing(&mut Broken(io::ErrorKind::BrokenPipe), b"a line\n");
        write_swallowing(&mut Broken(io::ErrorKind::StorageFull), b"a line\n");
        assert!(write_errors() >= before + 2);
        let mut ok = Vec::new();
        write_swallowing(&mut ok, b"a line\n");
        assert_eq!(ok, b"a line\n");
    }
}
