//! [`Store`]: the blocking SQLite store. Every write is its own durable transaction unless
//! said otherwise; see the module docs for the pragmas.

use core::time::Duration;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use shared::announce::Language;
use shared::callback::{self, State, Window};
use shared::ids::{AnnouncementId, CallId, CallbackId};
use shared::number::PhoneNumber;
use shared::time::UnixMillis;

use super::error::StoreError;

/// The database file's name inside the state directory.
pub const DB_FILE_NAME: &str = "ccedge.db";

/// The schema version this build writes (stored as `schema_version` in the `meta` table).
pub const SCHEMA_VERSION: i64 = 2;

/// How long a statement waits for a lock held by another process (a technician's `sqlite3`)
/// before failing with [`StoreError::Busy`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The WAL file is truncated back to this size after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

const SCHEMA_V1: &str = "
CREATE TABLE callbacks (
    seq             INTEGER PRIMARY KEY,
    callback_id     TEXT    NOT NULL UNIQUE,
    call_id         TEXT    NOT NULL,
    caller          TEXT,
    callback_number TEXT    NOT NULL,
    dialled         TEXT,
    announcement_id TEXT,
    requested_at_ms INTEGER NOT NULL,
    state           TEXT    NOT NULL,
    state_at_ms     INTEGER NOT NULL,
    position        INTEGER NOT NULL
);
CREATE INDEX callbacks_by_requested_at ON callbacks (requested_at_ms, seq);
CREATE TABLE counters (
    key   TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE outbox (
    seq     INTEGER PRIMARY KEY,
    payload BLOB    NOT NULL
);
";

/// Version 2: the caller's language and the callback window (`NULL` in rows written by
/// version 1: no language known, as soon as possible).
const SCHEMA_V2: &str = "
ALTER TABLE callbacks ADD COLUMN language TEXT;
ALTER TABLE callbacks ADD COLUMN window_not_before_ms INTEGER;
ALTER TABLE callbacks ADD COLUMN window_not_after_ms INTEGER;
";

const INSERT_CALLBACK: &str = "INSERT INTO callbacks (callback_id, call_id, caller, \
     callback_number, dialled, announcement_id, requested_at_ms, state, state_at_ms, position, \
     language, window_not_before_ms, window_not_after_ms) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
     ON CONFLICT (callback_id) DO NOTHING";

// A booked callback is stored as the core's [`callback::Entry`]: the columns of `callbacks`
// are its fields as text and integers (ids and numbers as they print, the state by
// [`callback::State::as_str`], times in Unix milliseconds).
//
// A row written by schema 1 has no window and no language: it reads as "as soon as possible"
// for [`LEGACY_WINDOW`] from its request (it expires by `callbacks.max_age_s` or when that
// window ends, whichever is later) and with no language.
//
// The `position` column is written as 0 and never read: the queue's order is
// `requested_at_ms` then `seq`, and a position is worked out from the queue when it is shown.
// It stays in the table so that an older ccedge started on this database still finds it.

/// The window of a schema-1 row (no window stored): the default `callbacks.max_age_s`.
pub const LEGACY_WINDOW: shared::time::Duration = shared::time::Duration::from_secs(24 * 3600);

/// The outcome of [`Store::insert_callback`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// A new row was written and is durable.
    New,
    /// A callback with this `callback_id` was already stored; nothing was written and the
    /// stored row is unchanged.
    AlreadyPresent,
}

/// The durable local store: one SQLite connection to `<state_dir>/ccedge.db`.
///
/// Blocking: every write waits for `fsync`. Inside the agent, use it through
/// [`StoreHandle`](super::StoreHandle).
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    write_transactions: u64,
}

fn to_i64(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

/// A `u64` read back from a column we only ever write non-negative values to.
fn from_i64(path: &Path, what: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("negative {what} {value}"),
    })
}

impl Store {
    /// Opens the store in `state_dir`, creating the directory (mode 0700) and the file
    /// `ccedge.db` (mode 0600) when they do not exist, then sets `journal_mode=WAL`,
    /// `synchronous=FULL` and the busy timeout, and migrates the schema to
    /// [`SCHEMA_VERSION`]. Existing directories and files keep their permissions.
    ///
    /// # Errors
    /// [`StoreError::CannotOpen`]/[`StoreError::ReadOnly`] when the directory or file cannot
    /// be created or written, [`StoreError::Corrupt`] when the file is not a database,
    /// [`StoreError::SchemaTooNew`] for a file from a newer ccedge, and the I/O variants.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        if !state_dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(state_dir)
                .map_err(|e| StoreError::from_io(state_dir, &e))?;
        }
        let path = state_dir.join(DB_FILE_NAME);
        create_db_file(state_dir, &path)?;
        let conn = Connection::open(&path).map_err(|e| StoreError::from_sqlite(&path, &e))?;
        let mut store = Store {
            conn,
            path,
            write_transactions: 0,
        };
        store.configure()?;
        store.migrate()?;
        tracing::debug!(path = %store.path.display(), "store opened");
        Ok(store)
    }

    /// The database file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many write transactions this `Store` has committed since it was opened (each
    /// is one `fsync` of the WAL). Group commit shows up as fewer transactions than
    /// inserts; useful for tests and as a metric.
    #[must_use]
    pub fn write_transactions(&self) -> u64 {
        self.write_transactions
    }

    /// The raw connection, for tests that inspect pragmas or plant bad data.
    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    fn err(&self, e: &rusqlite::Error) -> StoreError {
        StoreError::from_sqlite(&self.path, e)
    }

    fn configure(&mut self) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.err(&e))?;
        let mode: String = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| self.err(&e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Other {
                path: self.path.clone(),
                detail: format!("could not switch to WAL mode (journal_mode is {mode})"),
            });
        }
        // FULL: the WAL is fsync'd at every commit, so a commit that returned is on disk.
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err(&e))?;
        self.conn
            .pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(|e| self.err(&e))?;
        let sync: i64 = self
            .conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .map_err(|e| self.err(&e))?;
        if sync != 2 {
            return Err(StoreError::Other {
                path: self.path.clone(),
                detail: format!("could not set synchronous=FULL (it is {sync})"),
            });
        }
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| StoreError::from_sqlite(&path, &e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        )
        .map_err(err)?;
        let found: Option<i64> = tx
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(err)?;
        let found = found.unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            // Nothing to do; the transaction rolls back on drop (it only created `meta`,
            // which already existed).
            return Ok(());
        }
        // Each step in this same transaction.
        if found < 1 {
            tx.execute_batch(SCHEMA_V1).map_err(err)?;
        }
        if found < 2 {
            tx.execute_batch(SCHEMA_V2).map_err(err)?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [SCHEMA_VERSION],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        self.write_transactions += 1;
        tracing::info!(path = %path.display(), from = found, to = SCHEMA_VERSION, "store schema migrated");
        Ok(())
    }

    /// The `schema_version` recorded in the file.
    ///
    /// # Errors
    /// The SQLite errors of a read.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |row| row.get(0),
            )
            .map_err(|e| self.err(&e))
    }

    /// Runs `PRAGMA integrity_check` and returns its report (`["ok"]` when healthy).
    ///
    /// # Errors
    /// The SQLite errors of a read.
    pub fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .map_err(|e| self.err(&e))?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| self.err(&e))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(&e))
    }

    // ---- callbacks ----

    /// Stores a new callback in its own transaction. When this returns `Ok`, the row is on
    /// disk. A `callback_id` already stored gives `Ok(Inserted::AlreadyPresent)` and leaves
    /// the stored row as it was.
    ///
    /// # Errors
    /// [`StoreError::DiskFull`], [`StoreError::Io`] and the other SQLite errors; after any
    /// error the callback is not booked.
    pub fn insert_callback(&mut self, rec: &callback::Entry) -> Result<Inserted, StoreError> {
        let n = insert_one(&self.conn, rec).map_err(|e| self.err(&e))?;
        self.write_transactions += 1;
        Ok(if n == 0 {
            Inserted::AlreadyPresent
        } else {
            Inserted::New
        })
    }

    /// Stores several callbacks with one transaction (one `fsync`) and returns one result
    /// per record, in order, each exactly as [`Store::insert_callback`] would have given it.
    /// If the shared transaction fails, each record is retried in its own transaction, so a
    /// record is reported `Ok` only when its own row is committed.
    pub fn insert_callbacks(
        &mut self,
        recs: &[callback::Entry],
    ) -> Vec<Result<Inserted, StoreError>> {
        if let [only] = recs {
            return vec![self.insert_callback(only)];
        }
        if recs.is_empty() {
            return Vec::new();
        }
        match self.try_insert_batch(recs) {
            Ok(done) => done.into_iter().map(Ok).collect(),
            Err(e) => {
                tracing::warn!(error = %self.err(&e), n = recs.len(), "batched callback insert failed; retrying one by one");
                recs.iter().map(|r| self.insert_callback(r)).collect()
            }
        }
    }

    fn try_insert_batch(&mut self, recs: &[callback::Entry]) -> rusqlite::Result<Vec<Inserted>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut done = Vec::with_capacity(recs.len());
        for rec in recs {
            let n = insert_one(&tx, rec)?;
            done.push(if n == 0 {
                Inserted::AlreadyPresent
            } else {
                Inserted::New
            });
        }
        // On a failed COMMIT the dropped transaction rolls back whatever is left.
        tx.commit()?;
        self.write_transactions += 1;
        Ok(done)
    }

    /// Sets a callback's state and the time it was reached (and its window, when the CRM
    /// moved it), durably. Returns `false` when no callback has this id.
    ///
    /// # Errors
    /// The SQLite errors of a write.
    pub fn update_callback_state(
        &mut self,
        id: &CallbackId,
        state: State,
        at: UnixMillis,
        window: Option<Window>,
    ) -> Result<bool, StoreError> {
        let (nb, na) = (
            window.map(|w| w.not_before.0),
            window.map(|w| w.not_after.0),
        );
        let n = self
            .conn
            .prepare_cached(
                "UPDATE callbacks SET state = ?2, state_at_ms = ?3, \
                 window_not_before_ms = COALESCE(?4, window_not_before_ms), \
                 window_not_after_ms = COALESCE(?5, window_not_after_ms) WHERE callback_id = ?1",
            )
            .and_then(|mut s| s.execute(params![id.as_str(), state.as_str(), at.0, nb, na]))
            .map_err(|e| self.err(&e))?;
        self.write_transactions += 1;
        Ok(n > 0)
    }

    /// Removes a callback, durably. Returns `false` when no callback has this id.
    ///
    /// # Errors
    /// The SQLite errors of a write.
    pub fn delete_callback(&mut self, id: &CallbackId) -> Result<bool, StoreError> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM callbacks WHERE callback_id = ?1")
            .and_then(|mut s| s.execute([id.as_str()]))
            .map_err(|e| self.err(&e))?;
        self.write_transactions += 1;
        Ok(n > 0)
    }

    /// Every stored callback, ordered by `requested_at_ms`, then by insertion order.
    ///
    /// A row that does not read as a [`callback::Entry`] (a value out of range, an id or
    /// number that does not parse, an unknown state: only a hand-edited or damaged database
    /// has one) is left out with a warning naming it and its fault, and stays on disk: one bad
    /// row never stops the node, and nothing is deleted for it. [`Store::callbacks_len`] still
    /// counts it.
    ///
    /// # Errors
    /// The SQLite errors of a read.
    pub fn callbacks(&self) -> Result<Vec<callback::Entry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT callback_id, call_id, caller, callback_number, dialled, \
                 announcement_id, requested_at_ms, state, state_at_ms, position, language, \
                 window_not_before_ms, window_not_after_ms, seq \
                 FROM callbacks ORDER BY requested_at_ms, seq",
            )
            .map_err(|e| self.err(&e))?;
        let rows = stmt
            .query_map([], |row| {
                let seq: i64 = row.get(13)?;
                Ok(read_callback(row).map_err(|fault| (seq, fault)))
            })
            .map_err(|e| self.err(&e))?;
        let mut out = Vec::new();
        for row in rows {
            match row.map_err(|e| self.err(&e))? {
                Ok(rec) => out.push(rec),
                Err((seq, fault)) => tracing::warn!(
                    db = %self.path.display(),
                    row = seq,
                    %fault,
                    "a stored callback does not read as one; left out and kept on disk"
                ),
            }
        }
        Ok(out)
    }

    /// How many callbacks are stored.
    ///
    /// # Errors
    /// The SQLite errors of a read.
    pub fn callbacks_len(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM callbacks", [], |row| row.get(0))
            .map_err(|e| self.err(&e))?;
        from_i64(&self.path, "count", n)
    }

    // ---- counters ----

    /// A node counter (for example the event `seq` high-water mark), or `None` when never set.
    ///
    /// # Errors
    /// The SQLite errors of a read; [`StoreError::Corrupt`] for a negative stored value.
    pub fn get_counter(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let v: Option<i64> = self
            .conn
            .prepare_cached("SELECT value FROM counters WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |row| row.get(0)).optional())
            .map_err(|e| self.err(&e))?;
        v.map(|v| from_i64(&self.path, "counter", v)).transpose()
    }

    /// Sets a node counter, durably.
    ///
    /// # Errors
    /// [`StoreError::OutOfRange`] above `i64::MAX`; the SQLite errors of a write.
    pub fn set_counter(&mut self, key: &str, value: u64) -> Result<(), StoreError> {
        let v = to_i64("counter value", value)?;
        self.conn
            .prepare_cached(
                "INSERT INTO counters (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .and_then(|mut s| s.execute(params![key, v]))
            .map_err(|e| self.err(&e))?;
        self.write_transactions += 1;
        Ok(())
    }

    // ---- event outbox ----

    /// Appends events (`seq`, payload) in one transaction, durable when `Ok`. A `seq` already
    /// held (or given twice) fails the whole append and stores none of them.
    ///
    /// # Errors
    /// [`StoreError::Constraint`] for a duplicate `seq`; [`StoreError::OutOfRange`] for a
    /// `seq` above `i64::MAX`; the SQLite errors of a write.
    pub fn outbox_append(&mut self, events: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let seqs = events
            .iter()
            .map(|(seq, _)| to_i64("outbox seq", *seq))
            .collect::<Result<Vec<_>, _>>()?;
        let path = self.path.clone();
        let err = |e: rusqlite::Error| StoreError::from_sqlite(&path, &e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached("INSERT INTO outbox (seq, payload) VALUES (?1, ?2)")
                .map_err(err)?;
            for (seq, (_, payload)) in seqs.iter().zip(events) {
                stmt.execute(params![seq, payload]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        self.write_transactions += 1;
        Ok(())
    }

    /// Up to `limit` held events with `from <= seq <= to_inclusive`, in `seq` order.
    ///
    /// # Errors
    /// The SQLite errors of a read.
    pub fn outbox_range(
        &self,
        from: u64,
        to_inclusive: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let Ok(from) = i64::try_from(from) else {
            return Ok(Vec::new()); // nothing above i64::MAX can be held
        };
        let to = i64::try_from(to_inclusive).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        if from > to || limit == 0 {
            return Ok(Vec::new());
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, payload FROM outbox WHERE seq >= ?1 AND seq <= ?2 \
                 ORDER BY seq LIMIT ?3",
            )
            .map_err(|e| self.err(&e))?;
        let rows = stmt
            .query_map(params![from, to, limit], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
            })
            .map_err(|e| self.err(&e))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, payload) = row.map_err(|e| self.err(&e))?;
            out.push((from_i64(&self.path, "outbox seq", seq)?, payload));
        }
        Ok(out)
    }

    /// Drops every held event with `seq < seq_exclusive` (the CRM has them), durably, and
    /// returns how many were dropped.
    ///
    /// # Errors
    /// The SQLite errors of a write.
    pub fn outbox_delete_below(&mut self, seq_exclusive: u64) -> Result<usize, StoreError> {
        let below = i64::try_from(seq_exclusive).unwrap_or(i64::MAX);
        let n = self
            .conn
            .prepare_cached("DELETE FROM outbox WHERE seq < ?1")
            .and_then(|mut s| s.execute([below]))
            .map_err(|e| self.err(&e))?;
        self.write_transactions += 1;
        Ok(n)
    }

    /// The lowest and highest `seq` held, or `None` when the outbox is empty.
    ///
    /// # Errors
    /// The SQLite errors of a read.
    pub fn outbox_bounds(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let (min, max): (Option<i64>, Option<i64>) = self
            .conn
            .query_row("SELECT min(seq), max(seq) FROM outbox", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .map_err(|e| self.err(&e))?;
        match (min, max) {
            (Some(lo), Some(hi)) => Ok(Some((
                from_i64(&self.path, "outbox seq", lo)?,
                from_i64(&self.path, "outbox seq", hi)?,
            ))),
            _ => Ok(None),
        }
    }

    /// How many events are held.
    ///
    /// # Errors
    /// The SQLite errors of a read.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM outbox", [], |row| row.get(0))
            .map_err(|e| self.err(&e))?;
        from_i64(&self.path, "count", n)
    }
}

fn insert_one(conn: &Connection, e: &callback::Entry) -> rusqlite::Result<usize> {
    let text = |n: &Option<PhoneNumber>| n.as_ref().map(ToString::to_string);
    conn.prepare_cached(INSERT_CALLBACK)?.execute(params![
        e.id.as_str(),
        e.call_id.to_string(),
        text(&e.caller),
        e.callback_number.to_string(),
        text(&e.dialled),
        e.announcement.as_ref().map(AnnouncementId::as_str),
        e.requested_at.0,
        e.state.as_str(),
        e.state_at.0,
        0,
        (!e.language.is_empty()).then_some(e.language.as_str()),
        e.window.not_before.0,
        e.window.not_after.0,
    ])
}

/// One `callbacks` row (the columns of [`Store::callbacks`]'s query) as a record, or what
/// is wrong with it.
fn read_callback(row: &rusqlite::Row<'_>) -> Result<callback::Entry, String> {
    fn col<T: rusqlite::types::FromSql>(row: &rusqlite::Row<'_>, i: usize) -> Result<T, String> {
        row.get(i).map_err(|e| format!("column {i}: {e}"))
    }
    let number =
        |field: &str, s: &str| PhoneNumber::parse(s).map_err(|e| format!("{field} {s:?}: {e:?}"));
    let optional = |field: &str, s: Option<String>| s.map(|s| number(field, &s)).transpose();
    let id: String = col(row, 0)?;
    let call_id: String = col(row, 1)?;
    let requested_at = UnixMillis(col(row, 6)?);
    let state: String = col(row, 7)?;
    let language: Option<String> = col(row, 10)?;
    let window = match (col::<Option<i64>>(row, 11)?, col::<Option<i64>>(row, 12)?) {
        (Some(a), Some(b)) => Window::new(UnixMillis(a), UnixMillis(b))
            .ok_or_else(|| format!("window ends ({b}) before it starts ({a})"))?,
        (None, None) => Window::asap(requested_at, LEGACY_WINDOW),
        _ => return Err("half a window".to_owned()),
    };
    Ok(callback::Entry {
        id: CallbackId::new(&id).map_err(|e| format!("callback_id {id:?}: {e}"))?,
        call_id: CallId(
            u64::from_str_radix(&call_id, 16).map_err(|e| format!("call_id {call_id:?}: {e}"))?,
        ),
        caller: optional("caller", col(row, 2)?)?,
        callback_number: number("callback_number", &col::<String>(row, 3)?)?,
        dialled: optional("dialled", col(row, 4)?)?,
        announcement: col::<Option<String>>(row, 5)?
            .map(|a| AnnouncementId::new(&a).map_err(|e| format!("announcement_id {a:?}: {e}")))
            .transpose()?,
        language: match language {
            None => Language::new(),
            Some(l) => Language::try_from(l.as_str()).map_err(|_| format!("language {l:?}"))?,
        },
        requested_at,
        window,
        state: State::parse(&state).ok_or_else(|| format!("state {state:?}"))?,
        state_at: UnixMillis(col(row, 8)?),
    })
}

/// Creates an empty `ccedge.db` with mode 0600 (SQLite gives its `-wal` and `-shm` files the
/// same mode) and makes the new directory entry durable. An existing file is left alone,
/// with a warning when others can read it.
fn create_db_file(dir: &Path, path: &Path) -> Result<(), StoreError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => {
            file.sync_all().map_err(|e| StoreError::from_io(path, &e))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::from_io(dir, &e))?;
            Ok(())
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = meta.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "database file is readable by other users");
                }
            }
            Ok(())
        }
        Err(e) => Err(StoreError::from_io(path, &e)),
    }
}
