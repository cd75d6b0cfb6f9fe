//! [`StoreError`]: what can go wrong with the local database, named so the agent can tell
//! "the disk is full" from "the file is damaged" from "a technician holds a lock".

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

/// An error from the durable store. Every variant that concerns the database file names it.
///
/// Any `Err` from a write means the write is **not** known to be on disk: the agent must not
/// tell a caller their callback is booked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file system is full (SQLITE_FULL, `ENOSPC`). Recoverable once space returns.
    #[error("{}: disk full", path.display())]
    DiskFull {
        /// The database file or directory concerned.
        path: PathBuf,
    },
    /// An I/O error: a failed write, `fsync` or read (SQLITE_IOERR_*), or a file-size limit.
    #[error("{}: I/O error: {detail}", path.display())]
    Io {
        /// The database file or directory concerned.
        path: PathBuf,
        /// What SQLite or the OS said.
        detail: String,
    },
    /// The file is not a ccedge database or is damaged (SQLITE_CORRUPT, SQLITE_NOTADB, or a
    /// stored value of the wrong type).
    #[error("{}: database is corrupt: {detail}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// Another process (for example `sqlite3` run by a technician) holds a lock for longer
    /// than the busy timeout.
    #[error("{}: database is locked by another process", path.display())]
    Busy {
        /// The database file.
        path: PathBuf,
    },
    /// The file or its directory cannot be written (read-only file system, permissions).
    #[error("{}: not writable: {detail}", path.display())]
    ReadOnly {
        /// The database file or directory.
        path: PathBuf,
        /// What SQLite or the OS said.
        detail: String,
    },
    /// The state directory or the database file cannot be created or opened.
    #[error("{}: cannot open: {detail}", path.display())]
    CannotOpen {
        /// The path that could not be opened.
        path: PathBuf,
        /// What SQLite or the OS said.
        detail: String,
    },
    /// A uniqueness rule was broken, for example an outbox `seq` that is already held.
    #[error("{}: constraint violated: {detail}", path.display())]
    Constraint {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The file was written by a newer ccedge whose schema this build does not know.
    #[error("{}: schema version {found} is newer than this build supports ({supported})", path.display())]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A `u64` argument above `i64::MAX`, which SQLite cannot store as an integer.
    #[error("{what} {value} is too large to store (maximum {})", i64::MAX)]
    OutOfRange {
        /// Which argument.
        what: &'static str,
        /// The value given.
        value: u64,
    },
    /// The database could not be opened (a full or failing disk at start-up); the store
    /// thread keeps trying, and nothing is written until it opens.
    #[error("{}: the state store is not open ({detail})", path.display())]
    NotOpen {
        /// The state directory.
        path: PathBuf,
        /// Why it could not be opened.
        detail: String,
    },
    /// The store thread is gone (it could not be started, or the agent is shutting down).
    #[error("the store thread is not running")]
    Closed,
    /// A closure given to [`StoreHandle::run`](super::StoreHandle::run) panicked; the store
    /// thread carries on.
    #[error("a store job panicked")]
    Panicked,
    /// Anything else SQLite reported.
    #[error("{}: {detail}", path.display())]
    Other {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
}

impl StoreError {
    /// True for the errors that mean "the disk let us down" (full, I/O failure, not
    /// writable): the ones worth a loud metric and a retry once the operator has acted.
    #[must_use]
    pub fn is_disk_failure(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull { .. }
                | StoreError::Io { .. }
                | StoreError::ReadOnly { .. }
                | StoreError::NotOpen { .. }
        )
    }

    /// Maps an error from SQLite on the database at `path`.
    pub(crate) fn from_sqlite(path: &Path, e: &rusqlite::Error) -> StoreError {
        let path = path.to_path_buf();
        match e {
            rusqlite::Error::SqliteFailure(fe, _) => {
                let detail = match io_step(fe.extended_code) {
                    Some(step) => format!("{e}: {step} failed (SQLite code {})", fe.extended_code),
                    None => format!("{e} (SQLite code {})", fe.extended_code),
                };
                match fe.code {
                    ErrorCode::DiskFull => StoreError::DiskFull { path },
                    ErrorCode::SystemIoFailure => StoreError::Io { path, detail },
                    ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
                        StoreError::Corrupt { path, detail }
                    }
                    ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                        StoreError::Busy { path }
                    }
                    ErrorCode::ReadOnly | ErrorCode::PermissionDenied => {
                        StoreError::ReadOnly { path, detail }
                    }
                    ErrorCode::CannotOpen => StoreError::CannotOpen { path, detail },
                    ErrorCode::ConstraintViolation => StoreError::Constraint { path, detail },
                    _ => StoreError::Other { path, detail },
                }
            }
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt {
                path,
                detail: e.to_string(),
            },
            _ => StoreError::Other {
                path,
                detail: e.to_string(),
            },
        }
    }

    /// Maps an OS error while touching `path` directly (directory creation, probe files).
    pub(crate) fn from_io(path: &Path, e: &std::io::Error) -> StoreError {
        let path = path.to_path_buf();
        let detail = e.to_string();
        match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => StoreError::DiskFull { path },
            Some(libc::EROFS | libc::EACCES | libc::EPERM) => StoreError::ReadOnly { path, detail },
            Some(libc::ENOENT | libc::ENOTDIR | libc::EISDIR | libc::EEXIST) => {
                StoreError::CannotOpen { path, detail }
            }
            _ => StoreError::Io { path, detail },
        }
    }
}

/// Which file operation an extended SQLITE_IOERR code names, for messages a technician can
/// act on.
fn io_step(extended_code: i32) -> Option<&'static str> {
    use rusqlite::ffi;
    Some(match extended_code {
        ffi::SQLITE_IOERR_READ | ffi::SQLITE_IOERR_SHORT_READ => "read",
        ffi::SQLITE_IOERR_WRITE => "write",
        ffi::SQLITE_IOERR_FSYNC => "fsync",
        ffi::SQLITE_IOERR_DIR_FSYNC => "directory fsync",
        ffi::SQLITE_IOERR_TRUNCATE => "truncate",
        ffi::SQLITE_IOERR_FSTAT => "fstat",
        ffi::SQLITE_IOERR_DELETE => "delete",
        ffi::SQLITE_IOERR_SHMOPEN | ffi::SQLITE_IOERR_SHMSIZE | ffi::SQLITE_IOERR_SHMMAP => {
            "shared-memory file"
        }
        ffi::SQLITE_IOERR_LOCK | ffi::SQLITE_IOERR_UNLOCK | ffi::SQLITE_IOERR_RDLOCK => "lock",
        _ => return None,
    })
}
