//! Durable local storage: the callback queue, node counters (the event `seq` high-water
//! mark) and the event outbox, in one SQLite file, `<state_dir>/ccedge.db`.
//!
//! ## Why SQLite (and not, say, redb)
//!
//! - **Crash safety under `kill -9` and power loss.** In WAL mode a commit appends to the
//!   write-ahead log; with `synchronous=FULL` the log is `fsync`'d before the commit returns.
//!   A process killed at any instant leaves either the whole transaction or none of it,
//!   and the next open replays the log.
//! - **Durable on commit.** `synchronous=FULL` is what lets the agent tell a caller "your
//!   callback is booked" the moment [`Store::insert_callback`] returns `Ok`
//!   (docs/ARCHITECTURE.md, "Durability rules").
//! - **Failures are errors, not surprises.** A full disk is `SQLITE_FULL`, a failed write or
//!   `fsync` is `SQLITE_IOERR_*`; both come back as a [`StoreError`] the agent maps to
//!   "could not book", and the database stays consistent for when space returns.
//! - **One file a field technician can inspect** with the stock `sqlite3` tool
//!   (`sqlite3 ccedge.db 'select * from callbacks'`); readers do not block the agent in WAL
//!   mode, and the busy timeout covers a technician's brief write lock.
//! - **Mature**: decades of use and testing of exactly these failure paths.
//!
//! ## Files and settings
//!
//! The directory is created with mode 0700 and the file with 0600 when ccedge creates them
//! (SQLite gives `ccedge.db-wal` and `ccedge.db-shm` the file's mode). Pragmas:
//! `journal_mode=WAL`, `synchronous=FULL`, `busy_timeout` = [`BUSY_TIMEOUT`],
//! `journal_size_limit` = 4 MiB. The `meta` table holds `schema_version`
//! ([`SCHEMA_VERSION`]); [`Store::open`] migrates older files and refuses newer ones.
//!
//! ## Threads
//!
//! [`Store`] is blocking. The agent uses [`StoreHandle`], which owns the `Store` on one
//! thread (`ccedge-store`) and answers over channels; callback inserts queued together are
//! committed in one transaction (group commit: one `fsync` for many callers), and each
//! caller is answered only after the commit that holds its row.
//!
//! ## Known limits
//!
//! - If `fsync` itself fails, SQLite reports an error, yet the log frames may still reach
//!   the disk later; the callback is then present although the caller heard "not booked"
//!   (never the reverse). Retrying with the same `callback_id` gives
//!   [`Inserted::AlreadyPresent`], not a duplicate.

mod db;
mod error;
mod handle;
mod probe;

#[cfg(test)]
mod tests;

pub use db::{Inserted, Store, BUSY_TIMEOUT, DB_FILE_NAME, LEGACY_WINDOW, SCHEMA_VERSION};
pub use error::StoreError;
pub use handle::{StoreHandle, StoreHealth, MAX_GROUP_COMMIT, RETRY};
pub use probe::check_writable;
