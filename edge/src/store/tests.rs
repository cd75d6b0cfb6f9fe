//! Store tests on real files under `std::env::temp_dir()`, including child processes that
//! are killed with SIGKILL mid-write and that run into a file-size limit.

extern crate alloc;

use alloc::collections::BTreeSet;
use core::hash::{BuildHasher, Hasher};
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use shared::announce::Language;
use shared::callback::{self, State, Window};
use shared::ids::{AnnouncementId, CallId, CallbackId};
use shared::number::PhoneNumber;
use shared::time::UnixMillis;

use super::probe::parse_df_available_kib;
use super::*;

/// Selects a child-process role when the test binary re-executes itself.
const CHILD_ENV: &str = "CCEDGE_STORE_CHILD";
/// The state directory a child works in.
const DIR_ENV: &str = "CCEDGE_STORE_DIR";
/// A prefix making each child's ids unique.
const TAG_ENV: &str = "CCEDGE_STORE_TAG";

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let dir = std::env::temp_dir().join(format!(
                "ccedge-store-{what}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            // `create_dir` fails on a leftover from an earlier run: take the next name.
            match std::fs::create_dir(&dir) {
                Ok(()) => return TempDir(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", dir.display()),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cb(id: &str) -> CallbackId {
    CallbackId::new(id).unwrap()
}

fn num(n: &str) -> PhoneNumber {
    PhoneNumber::parse(n).unwrap()
}

fn rec(id: &str, requested_at_ms: i64) -> callback::Entry {
    let at = UnixMillis(requested_at_ms);
    callback::Entry {
        id: cb(id),
        call_id: CallId(0x00c0_ffee_0000_0000 | (requested_at_ms as u64 & 0xffff)),
        caller: Some(num("+12155550123")),
        callback_number: num("+12155550124"),
        dialled: Some(num("+18005550100")),
        announcement: None,
        language: Language::try_from("es").unwrap(),
        requested_at: at,
        window: Window::asap(at, shared::time::Duration::from_secs(86_400)),
        state: State::Stored,
        state_at: at,
    }
}

fn window(a: i64, b: i64) -> Window {
    Window::new(UnixMillis(a), UnixMillis(b)).unwrap()
}

fn ids(store: &Store) -> Vec<String> {
    store
        .callbacks()
        .unwrap()
        .into_iter()
        .map(|r| r.id.to_string())
        .collect()
}

fn count_id(store: &Store, id: &str) -> i64 {
    store
        .conn()
        .query_row(
            "SELECT count(*) FROM callbacks WHERE callback_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
}

/// A small deterministic generator for the crash test's kill points.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

// ---------------------------------------------------------------- open and schema

#[test]
fn open_creates_private_dir_and_file_with_wal_and_full_sync() {
    let tmp = TempDir::new("open");
    let state = tmp.path().join("a").join("state");
    let store = Store::open(&state).unwrap();
    let dir_mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    let file_mode = std::fs::metadata(state.join(DB_FILE_NAME))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    assert_eq!(file_mode, 0o600);
    assert_eq!(store.path(), state.join(DB_FILE_NAME));
    let journal: String = store
        .conn()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let sync: i64 = store
        .conn()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    let busy: i64 = store
        .conn()
        .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
    assert_eq!(sync, 2, "synchronous=FULL");
    assert_eq!(busy, 5000);
    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    assert_eq!(store.integrity_check().unwrap(), vec!["ok".to_owned()]);
    // The WAL file exists once something is written and has the file's mode.
    let mut store = store;
    store.set_counter("x", 1).unwrap();
    let wal_mode = std::fs::metadata(state.join("ccedge.db-wal"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(wal_mode, 0o600);
}

#[test]
fn reopen_keeps_everything_and_does_not_migrate_again() {
    let tmp = TempDir::new("reopen");
    {
        let mut s = Store::open(tmp.path()).unwrap();
        assert_eq!(s.write_transactions(), 1, "the v1 migration");
        s.insert_callback(&rec("a", 20)).unwrap();
        s.insert_callback(&rec("b", 10)).unwrap();
        s.update_callback_state(&cb("a"), State::Accepted, UnixMillis(30), None)
            .unwrap();
        s.set_counter("seq", 41).unwrap();
        s.outbox_append(&[(1, b"one".to_vec()), (2, b"two".to_vec())])
            .unwrap();
    }
    let s = Store::open(tmp.path()).unwrap();
    assert_eq!(s.write_transactions(), 0, "already at v1");
    let mut a = rec("a", 20);
    a.state = State::Accepted;
    a.state_at = UnixMillis(30);
    assert_eq!(s.callbacks().unwrap(), vec![rec("b", 10), a]);
    assert_eq!(s.get_counter("seq").unwrap(), Some(41));
    assert_eq!(
        s.outbox_range(0, u64::MAX, 10).unwrap(),
        vec![(1, b"one".to_vec()), (2, b"two".to_vec())]
    );
    assert_eq!(s.integrity_check().unwrap(), vec!["ok".to_owned()]);
}

#[test]
fn a_file_that_is_not_a_database_is_corrupt_and_named() {
    let tmp = TempDir::new("garbage");
    std::fs::write(tmp.path().join(DB_FILE_NAME), vec![0x5a; 8192]).unwrap();
    let err = Store::open(tmp.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&tmp.path().join(DB_FILE_NAME).display().to_string()),
        "{err}"
    );
}

#[test]
fn a_state_dir_that_cannot_be_created_is_a_clear_error() {
    let tmp = TempDir::new("blocked");
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let state = file.join("state");
    let err = Store::open(&state).unwrap_err();
    assert!(matches!(err, StoreError::CannotOpen { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    let err = Store::open(&file).unwrap_err();
    assert!(matches!(err, StoreError::CannotOpen { .. }), "{err:?}");
}

#[test]
fn a_newer_schema_is_refused() {
    let tmp = TempDir::new("newer");
    {
        let s = Store::open(tmp.path()).unwrap();
        s.conn()
            .execute(
                "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
                [],
            )
            .unwrap();
    }
    let err = Store::open(tmp.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_bad_stored_value_is_corrupt_not_a_panic() {
    let tmp = TempDir::new("badvalue");
    let mut s = Store::open(tmp.path()).unwrap();
    s.conn()
        .execute("INSERT INTO counters (key, value) VALUES ('neg', -1)", [])
        .unwrap();
    assert!(matches!(
        s.get_counter("neg"),
        Err(StoreError::Corrupt { .. })
    ));
    // Callback rows damaged by hand, one fault each: each is left out of the read (the good
    // one still reads) and stays on disk.
    let bad = [
        (
            "caller",
            "UPDATE callbacks SET caller = 'nobody' WHERE callback_id = 'b1'",
        ),
        (
            "number",
            "UPDATE callbacks SET callback_number = '12x' WHERE callback_id = 'b2'",
        ),
        (
            "state",
            "UPDATE callbacks SET state = 'pending' WHERE callback_id = 'b3'",
        ),
        (
            "call id",
            "UPDATE callbacks SET call_id = 'call-7' WHERE callback_id = 'b4'",
        ),
        (
            "id",
            "UPDATE callbacks SET callback_id = 'a/b' WHERE callback_id = 'b5'",
        ),
        (
            "window",
            "UPDATE callbacks SET window_not_after_ms = 0 WHERE callback_id = 'b6'",
        ),
        (
            "half window",
            "UPDATE callbacks SET window_not_before_ms = NULL WHERE callback_id = 'b7'",
        ),
        (
            "language",
            "UPDATE callbacks SET language = 'a-very-long-language-tag' WHERE callback_id = 'b8'",
        ),
        (
            "type",
            "UPDATE callbacks SET requested_at_ms = 'soon' WHERE callback_id = 'b9'",
        ),
    ];
    s.insert_callback(&rec("good", 1)).unwrap();
    for (i, (what, sql)) in bad.iter().enumerate() {
        s.insert_callback(&rec(&format!("b{}", i + 1), 2)).unwrap();
        assert_eq!(s.conn().execute(sql, []).unwrap(), 1, "{what}");
        assert_eq!(ids(&s), ["good"], "{what}");
    }
    assert_eq!(s.callbacks_len().unwrap(), 1 + bad.len() as u64);
}

// ---------------------------------------------------------------- callbacks

#[test]
fn callbacks_round_trip_in_requested_then_insertion_order() {
    let tmp = TempDir::new("order");
    let mut s = Store::open(tmp.path()).unwrap();
    assert_eq!(s.callbacks().unwrap(), vec![]);
    let mut full = rec("c", 5);
    full.caller = None;
    full.dialled = None;
    full.announcement = Some(AnnouncementId::new("outage-phl").unwrap());
    full.language = Language::new();
    full.requested_at = UnixMillis(-3);
    for r in [
        rec("b", 10),
        rec("a", 10),
        full.clone(),
        rec("d", 7),
        rec("e", 10),
    ] {
        assert_eq!(s.insert_callback(&r).unwrap(), Inserted::New);
    }
    assert_eq!(ids(&s), ["c", "d", "b", "a", "e"]);
    assert_eq!(s.callbacks().unwrap()[0], full);
    assert_eq!(s.callbacks_len().unwrap(), 5);
    // Deleting the newest and inserting again keeps insertion order among ties.
    assert!(s.delete_callback(&cb("e")).unwrap());
    s.insert_callback(&rec("f", 10)).unwrap();
    assert_eq!(ids(&s), ["c", "d", "b", "a", "f"]);
}

#[test]
fn inserting_the_same_callback_id_twice_keeps_one_unchanged_row() {
    let tmp = TempDir::new("idem");
    let mut s = Store::open(tmp.path()).unwrap();
    assert_eq!(s.insert_callback(&rec("x", 1)).unwrap(), Inserted::New);
    let mut other = rec("x", 2);
    other.callback_number = num("+15555550000");
    assert_eq!(s.insert_callback(&other).unwrap(), Inserted::AlreadyPresent);
    assert_eq!(
        s.insert_callback(&rec("x", 1)).unwrap(),
        Inserted::AlreadyPresent
    );
    assert_eq!(s.callbacks().unwrap(), vec![rec("x", 1)]);
    assert_eq!(count_id(&s, "x"), 1);
}

#[test]
fn update_and_delete_report_whether_the_id_exists() {
    let tmp = TempDir::new("upd");
    let mut s = Store::open(tmp.path()).unwrap();
    s.insert_callback(&rec("a", 1)).unwrap();
    assert!(s
        .update_callback_state(&cb("a"), State::Assigned, UnixMillis(99), None)
        .unwrap());
    assert!(!s
        .update_callback_state(&cb("nope"), State::Assigned, UnixMillis(99), None)
        .unwrap());
    let got = &s.callbacks().unwrap()[0];
    assert_eq!((got.state, got.state_at), (State::Assigned, UnixMillis(99)));
    assert!(!s.delete_callback(&cb("nope")).unwrap());
    assert!(s.delete_callback(&cb("a")).unwrap());
    assert!(!s.delete_callback(&cb("a")).unwrap());
    assert_eq!(s.callbacks().unwrap(), vec![]);
}

#[test]
fn a_batch_gives_each_record_its_exact_result_in_one_transaction() {
    let tmp = TempDir::new("batch");
    let mut s = Store::open(tmp.path()).unwrap();
    s.insert_callback(&rec("old", 1)).unwrap();
    let before = s.write_transactions();
    let batch = [rec("n1", 2), rec("old", 9), rec("n2", 3), rec("n1", 9)];
    let got: Vec<Inserted> = s
        .insert_callbacks(&batch)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        got,
        [
            Inserted::New,
            Inserted::AlreadyPresent,
            Inserted::New,
            Inserted::AlreadyPresent
        ]
    );
    assert_eq!(s.write_transactions() - before, 1);
    assert_eq!(ids(&s), ["old", "n1", "n2"]);
    assert!(s.insert_callbacks(&[]).is_empty());
}

// ---------------------------------------------------------------- counters

#[test]
fn counters_round_trip_and_reject_values_sqlite_cannot_hold() {
    let tmp = TempDir::new("ctr");
    let mut s = Store::open(tmp.path()).unwrap();
    assert_eq!(s.get_counter("seq").unwrap(), None);
    s.set_counter("seq", 7).unwrap();
    s.set_counter("other", 0).unwrap();
    assert_eq!(s.get_counter("seq").unwrap(), Some(7));
    s.set_counter("seq", i64::MAX as u64).unwrap();
    assert_eq!(s.get_counter("seq").unwrap(), Some(i64::MAX as u64));
    let err = s.set_counter("seq", u64::MAX).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::OutOfRange {
                value: u64::MAX,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.get_counter("seq").unwrap(), Some(i64::MAX as u64));
    assert_eq!(s.get_counter("other").unwrap(), Some(0));
}

// ---------------------------------------------------------------- outbox

#[test]
fn outbox_append_range_bounds_and_delete() {
    let tmp = TempDir::new("outbox");
    let mut s = Store::open(tmp.path()).unwrap();
    assert_eq!(s.outbox_bounds().unwrap(), None);
    assert_eq!(s.outbox_len().unwrap(), 0);
    s.outbox_append(&[]).unwrap();
    let events: Vec<(u64, Vec<u8>)> = (10..20).map(|i| (i, vec![i as u8; 3])).collect();
    s.outbox_append(&events[5..]).unwrap();
    s.outbox_append(&events[..5]).unwrap();
    assert_eq!(s.outbox_bounds().unwrap(), Some((10, 19)));
    assert_eq!(s.outbox_len().unwrap(), 10);
    assert_eq!(s.outbox_range(0, u64::MAX, 100).unwrap(), events);
    assert_eq!(s.outbox_range(12, 14, 100).unwrap(), events[2..5]);
    assert_eq!(s.outbox_range(12, 19, 2).unwrap(), events[2..4]);
    assert_eq!(s.outbox_range(15, 12, 100).unwrap(), vec![]);
    assert_eq!(s.outbox_range(12, 19, 0).unwrap(), vec![]);
    assert_eq!(s.outbox_range(u64::MAX, u64::MAX, 10).unwrap(), vec![]);
    assert_eq!(s.outbox_delete_below(13).unwrap(), 3);
    assert_eq!(s.outbox_delete_below(13).unwrap(), 0);
    assert_eq!(s.outbox_bounds().unwrap(), Some((13, 19)));
    assert_eq!(s.outbox_delete_below(u64::MAX).unwrap(), 7);
    assert_eq!(s.outbox_len().unwrap(), 0);
}

#[test]
fn outbox_duplicate_seq_fails_the_whole_append() {
    let tmp = TempDir::new("dup");
    let mut s = Store::open(tmp.path()).unwrap();
    s.outbox_append(&[(5, b"a".to_vec())]).unwrap();
    let err = s
        .outbox_append(&[(6, b"b".to_vec()), (5, b"again".to_vec())])
        .unwrap_err();
    assert!(matches!(err, StoreError::Constraint { .. }), "{err:?}");
    let err = s
        .outbox_append(&[(7, b"c".to_vec()), (7, b"c".to_vec())])
        .unwrap_err();
    assert!(matches!(err, StoreError::Constraint { .. }), "{err:?}");
    let err = s
        .outbox_append(&[(8, vec![]), (u64::MAX, vec![])])
        .unwrap_err();
    assert!(matches!(err, StoreError::OutOfRange { .. }), "{err:?}");
    assert_eq!(
        s.outbox_range(0, 100, 100).unwrap(),
        vec![(5, b"a".to_vec())]
    );
    // The connection is usable after the failed transactions.
    s.outbox_append(&[(6, b"b".to_vec())]).unwrap();
    assert_eq!(s.outbox_len().unwrap(), 2);
}

// ---------------------------------------------------------------- errors and doctor

#[test]
fn errors_name_the_file_and_classify_disk_failures() {
    let path = Path::new("/var/lib/ccedge/ccedge.db");
    let full =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
    let ioerr = rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
        None,
    );
    let busy =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
    let full = StoreError::from_sqlite(path, &full);
    let ioerr = StoreError::from_sqlite(path, &ioerr);
    let busy = StoreError::from_sqlite(path, &busy);
    assert!(matches!(full, StoreError::DiskFull { .. }));
    assert!(matches!(ioerr, StoreError::Io { .. }));
    assert!(matches!(busy, StoreError::Busy { .. }));
    assert!(full.is_disk_failure() && ioerr.is_disk_failure() && !busy.is_disk_failure());
    assert!(ioerr.to_string().contains("fsync failed"), "{ioerr}");
    for e in [&full, &ioerr, &busy] {
        assert!(
            e.to_string().starts_with("/var/lib/ccedge/ccedge.db: "),
            "{e}"
        );
    }
    let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
    assert!(matches!(
        StoreError::from_io(path, &enospc),
        StoreError::DiskFull { .. }
    ));
}

#[test]
fn check_writable_probes_and_reports_free_space() {
    let tmp = TempDir::new("doctor");
    let free = check_writable(tmp.path()).unwrap();
    assert!(free > 0);
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "probe removed"
    );
    let missing = tmp.path().join("missing");
    assert!(matches!(
        check_writable(&missing),
        Err(StoreError::CannotOpen { .. })
    ));
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        check_writable(&file),
        Err(StoreError::CannotOpen { .. })
    ));
}

#[test]
fn df_output_is_parsed_from_the_capacity_column() {
    let plain = "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                 /dev/vda 264212084 19587872 75698016 21% /\n";
    assert_eq!(parse_df_available_kib(plain), Some(75_698_016));
    let spaced = "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
                  my disk 100 40 60 40% /mnt/my disk\n";
    assert_eq!(parse_df_available_kib(spaced), Some(60));
    assert_eq!(parse_df_available_kib(""), None);
    assert_eq!(parse_df_available_kib("header only\n"), None);
    assert_eq!(parse_df_available_kib("h\na b c d e\n"), None);
}

// ---------------------------------------------------------------- StoreHandle

/// Waits (bounded) until `cond` holds.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let mut tries = 0u32;
    while !cond() {
        tries += 1;
        assert!(tries < 20_000, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn handle_round_trips_every_method() {
    let tmp = TempDir::new("handle");
    let h = StoreHandle::spawn(Store::open(tmp.path()).unwrap());
    assert_eq!(h.insert_callback(rec("a", 2)).await.unwrap(), Inserted::New);
    assert_eq!(
        h.insert_callback(rec("a", 2)).await.unwrap(),
        Inserted::AlreadyPresent
    );
    assert_eq!(h.insert_callback(rec("b", 1)).await.unwrap(), Inserted::New);
    assert!(h
        .update_callback_state(cb("a"), State::Accepted, UnixMillis(5), None)
        .await
        .unwrap());
    assert!(!h
        .update_callback_state(cb("zz"), State::Accepted, UnixMillis(5), None)
        .await
        .unwrap());
    let got = h.callbacks().await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].id.as_str(), got[1].state), ("b", State::Accepted));
    assert!(h.delete_callback(cb("b")).await.unwrap());
    assert!(!h.delete_callback(cb("b")).await.unwrap());
    assert_eq!(h.get_counter("seq".into()).await.unwrap(), None);
    h.set_counter("seq".into(), 9).await.unwrap();
    assert_eq!(h.get_counter("seq".into()).await.unwrap(), Some(9));
    h.outbox_append(vec![(1, b"x".to_vec()), (2, b"y".to_vec())])
        .await
        .unwrap();
    assert!(matches!(
        h.outbox_append(vec![(2, b"dup".to_vec())]).await,
        Err(StoreError::Constraint { .. })
    ));
    assert_eq!(
        h.outbox_range(2, 10, 10).await.unwrap(),
        vec![(2, b"y".to_vec())]
    );
    assert_eq!(h.outbox_delete_below(2).await.unwrap(), 1);
    assert_eq!(
        h.run(|s| s.outbox_bounds()).await.unwrap().unwrap(),
        Some((2, 2))
    );
    assert_eq!(h.queue_depth(), 0);
}

#[tokio::test]
async fn a_panicking_job_is_an_error_and_the_thread_carries_on() {
    let tmp = TempDir::new("panic");
    let h = StoreHandle::spawn(Store::open(tmp.path()).unwrap());
    let got = h.run(|_| -> u32 { panic!("job failed on purpose") }).await;
    assert!(matches!(got, Err(StoreError::Panicked)), "{got:?}");
    assert_eq!(h.insert_callback(rec("a", 1)).await.unwrap(), Inserted::New);
    let thread = h
        .run(|_| std::thread::current().name().map(str::to_owned))
        .await
        .unwrap();
    assert_eq!(thread.as_deref(), Some("ccedge-store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_from_many_tasks_all_land_once() {
    let tmp = TempDir::new("concurrent");
    let h = StoreHandle::spawn(Store::open(tmp.path()).unwrap());
    let mut tasks = Vec::new();
    for t in 0..16 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let r = rec(&format!("t{t}-{i}"), i64::from(i));
                assert_eq!(h.insert_callback(r.clone()).await.unwrap(), Inserted::New);
                // A retry of the same booking is recognised, never a second row.
                assert_eq!(
                    h.insert_callback(r).await.unwrap(),
                    Inserted::AlreadyPresent
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = h.callbacks().await.unwrap();
    let unique: BTreeSet<_> = all.iter().map(|r| r.id.clone()).collect();
    assert_eq!((all.len(), unique.len()), (320, 320));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_inserts_share_one_commit_up_to_the_group_limit() {
    let tmp = TempDir::new("group");
    let h = StoreHandle::spawn(Store::open(tmp.path()).unwrap());
    let before = h.run(|s| s.write_transactions()).await.unwrap();
    // Hold the store thread so the inserts pile up behind it.
    let (open_gate, gate) = std::sync::mpsc::channel::<()>();
    let started = alloc::sync::Arc::new(core::sync::atomic::AtomicBool::new(false));
    let gate_job = {
        let h = h.clone();
        let started = alloc::sync::Arc::clone(&started);
        tokio::spawn(async move {
            h.run(move |_| {
                started.store(true, Ordering::SeqCst);
                let _ = gate.recv_timeout(Duration::from_secs(30));
            })
            .await
        })
    };
    wait_until("the gate job to start", || started.load(Ordering::SeqCst)).await;
    assert_eq!(h.queue_depth(), 0);
    let n = MAX_GROUP_COMMIT + 44;
    let mut tasks = Vec::new();
    for i in 0..n {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.insert_callback(rec(&format!("g{i}"), 0)).await
        }));
    }
    wait_until("every insert to be queued", || h.queue_depth() == n).await;
    open_gate.send(()).unwrap();
    gate_job.await.unwrap().unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Inserted::New);
    }
    let after = h.run(|s| s.write_transactions()).await.unwrap();
    assert_eq!(after - before, 2, "{n} inserts in two group commits");
    assert_eq!(h.callbacks().await.unwrap().len(), n);
}

// ---------------------------------------------------------------- child processes

/// Re-runs this test binary as a child playing `role` in `dir`, optionally through a shell
/// prefix (for `ulimit`).
fn child_command(test: &str, role: &str, dir: &Path, tag: &str, shell: Option<&str>) -> Command {
    let exe = std::env::current_exe().unwrap();
    let args = [
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
        "--quiet",
    ];
    let mut cmd = match shell {
        None => Command::new(&exe),
        Some(script) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(script).arg(&exe);
            c
        }
    };
    cmd.args(args)
        .env(CHILD_ENV, role)
        .env(DIR_ENV, dir)
        .env(TAG_ENV, tag)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    cmd
}

fn child_role(role: &str) -> Option<(PathBuf, String)> {
    if std::env::var(CHILD_ENV).ok()? != role {
        return None;
    }
    Some((
        PathBuf::from(std::env::var_os(DIR_ENV)?),
        std::env::var(TAG_ENV).ok()?,
    ))
}

/// Child role "writer": books callbacks, bumps a counter and appends outbox events in a
/// loop, printing each only after the store returned `Ok`, until it is killed.
#[test]
fn child_writer() {
    let Some((dir, tag)) = child_role("writer") else {
        return;
    };
    let base: u64 = tag.parse().unwrap();
    let mut s = Store::open(&dir).unwrap();
    for i in 0..20_000u64 {
        let id = format!("r{tag}-{i}");
        s.insert_callback(&rec(&id, 0)).unwrap();
        println!("CB {id}");
        s.set_counter("seq", base + i).unwrap();
        println!("CTR {}", base + i);
        s.outbox_append(&[(base + i, id.into_bytes())]).unwrap();
        println!("OB {}", base + i);
    }
}

#[test]
fn kill_9_mid_write_loses_nothing_acknowledged_and_duplicates_nothing() {
    let tmp = TempDir::new("crash");
    let seed = RandomState::new().build_hasher().finish() | 1;
    println!("crash test seed {seed}");
    let mut rng = XorShift(seed);
    let mut acked_cb: Vec<String> = Vec::new();
    let mut acked_ob: Vec<u64> = Vec::new();
    let mut max_ctr: Option<u64> = None;
    for round in 1..=4u64 {
        let base = round * 1_000_000;
        let mut child = child_command(
            "store::tests::child_writer",
            "writer",
            tmp.path(),
            &base.to_string(),
            None,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let kill_after = 1 + rng.next(450);
        let mut seen = 0;
        let mut killed = false;
        while let Some(Ok(line)) = lines.next() {
            if line.starts_with("CB ") || line.starts_with("CTR ") || line.starts_with("OB ") {
                seen += 1;
                record_line(&line, &mut acked_cb, &mut acked_ob, &mut max_ctr);
            }
            if !killed && seen >= kill_after {
                std::thread::sleep(Duration::from_micros(rng.next(3000)));
                child.kill().unwrap(); // SIGKILL
                killed = true;
            }
        }
        let status = child.wait().unwrap();
        assert!(killed, "round {round}: the writer stopped early ({status})");
        // Recovery: every acknowledged write is there exactly once.
        let s = Store::open(tmp.path()).unwrap();
        assert_eq!(
            s.integrity_check().unwrap(),
            vec!["ok".to_owned()],
            "seed {seed}"
        );
        for id in &acked_cb {
            assert_eq!(count_id(&s, id), 1, "callback {id}, seed {seed}");
        }
        let held: BTreeSet<u64> = s
            .outbox_range(0, u64::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        for seq in &acked_ob {
            assert!(held.contains(seq), "outbox seq {seq}, seed {seed}");
        }
        let ctr = s.get_counter("seq").unwrap();
        assert!(
            ctr >= max_ctr,
            "counter {ctr:?} < acknowledged {max_ctr:?}, seed {seed}"
        );
        let per_id: HashMap<String, usize> =
            s.callbacks()
                .unwrap()
                .into_iter()
                .fold(HashMap::new(), |mut m, r| {
                    *m.entry(r.id.to_string()).or_default() += 1;
                    m
                });
        assert!(per_id.values().all(|&n| n == 1));
        // Each kill may leave its one in-flight booking committed but unprinted.
        assert!(
            per_id.len() <= acked_cb.len() + round as usize,
            "seed {seed}"
        );
    }
    println!(
        "acknowledged {} callbacks, {} outbox events before the kills",
        acked_cb.len(),
        acked_ob.len()
    );
    assert!(acked_cb.len() >= 4);
}

fn record_line(line: &str, cbs: &mut Vec<String>, obs: &mut Vec<u64>, ctr: &mut Option<u64>) {
    if let Some(id) = line.strip_prefix("CB ") {
        cbs.push(id.to_owned());
    } else if let Some(v) = line.strip_prefix("CTR ") {
        let v: u64 = v.parse().unwrap();
        *ctr = Some(ctr.map_or(v, |c| c.max(v)));
    } else if let Some(v) = line.strip_prefix("OB ") {
        obs.push(v.parse().unwrap());
    }
}

/// A record whose row fills a good part of a page, so a few commits outgrow a small
/// file-size limit.
fn big_rec(id: &str) -> callback::Entry {
    let mut r = rec(id, 0);
    r.announcement = Some(AnnouncementId::new(&"a".repeat(64)).unwrap());
    r
}

/// Child role "diskfull": runs under `ulimit -f` with SIGXFSZ ignored, so writes past the
/// limit fail with EFBIG. Books until the store refuses, then checks it keeps refusing.
#[test]
fn child_disk_full() {
    let Some((dir, tag)) = child_role("diskfull") else {
        return;
    };
    let mut s = match Store::open(&dir) {
        Ok(s) => s,
        Err(e) => {
            println!("OPENERR {e}");
            return;
        }
    };
    let mut failures = 0;
    for i in 0..2_000 {
        let id = format!("{tag}-{i}");
        match s.insert_callback(&big_rec(&id)) {
            Ok(_) => println!("OK {id}"),
            Err(e) => {
                println!("ERR {id} {} {e}", e.is_disk_failure());
                failures += 1;
                if failures == 3 {
                    break;
                }
            }
        }
    }
    // A group commit that fails answers every member with an error.
    let batch: Vec<_> = (0..3)
        .map(|i| big_rec(&format!("{tag}-batch-{i}")))
        .collect();
    for (r, result) in batch.iter().zip(s.insert_callbacks(&batch)) {
        match result {
            Ok(_) => println!("OK {}", r.id),
            Err(e) => println!("ERR {} {} {e}", r.id, e.is_disk_failure()),
        }
    }
    println!("DONE");
}

#[test]
fn a_full_disk_refuses_bookings_and_keeps_only_committed_rows() {
    let tmp = TempDir::new("full");
    {
        let mut s = Store::open(tmp.path()).unwrap();
        s.insert_callback(&rec("before", 0)).unwrap();
    }
    // dash counts `ulimit -f` in 512-byte blocks, bash in KiB: 256 is 128 or 256 KiB,
    // either way above the database and shared-memory files, and a few commits of WAL.
    let script = "trap '' XFSZ; ulimit -f 256 || exit 97; exec \"$0\" \"$@\"";
    let out = child_command(
        "store::tests::child_disk_full",
        "diskfull",
        tmp.path(),
        "full",
        Some(script),
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("disk-full child:\n{stdout}");
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("OPENERR"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "DONE"), "{stdout}");
    let mut ok = BTreeSet::new();
    let mut failed = BTreeSet::new();
    for line in stdout.lines() {
        let mut parts = line.splitn(4, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("OK"), Some(id), _) => {
                ok.insert(id.to_owned());
            }
            (Some("ERR"), Some(id), Some(disk)) => {
                assert_eq!(disk, "true", "not a disk failure: {line}");
                failed.insert(id.to_owned());
            }
            _ => {}
        }
    }
    assert!(!ok.is_empty(), "nothing fitted under the limit:\n{stdout}");
    assert!(failed.len() >= 3, "the limit was never hit:\n{stdout}");
    assert!(
        failed.contains("full-batch-0") && failed.contains("full-batch-2"),
        "{stdout}"
    );
    // Space is back (a new process without the limit): exactly the committed rows.
    let mut s = Store::open(tmp.path()).unwrap();
    assert_eq!(s.integrity_check().unwrap(), vec!["ok".to_owned()]);
    let held: BTreeSet<String> = ids(&s).into_iter().collect();
    let mut expected = ok.clone();
    expected.insert("before".to_owned());
    assert_eq!(held, expected);
    assert!(held.is_disjoint(&failed));
    assert_eq!(s.insert_callback(&big_rec("after")).unwrap(), Inserted::New);
    for id in &failed {
        // A refused booking can be retried once space returns.
        assert_eq!(s.insert_callback(&big_rec(id)).unwrap(), Inserted::New);
    }
}

/// Callback booking latency: `CCEDGE_BENCH_BOOKINGS` (2,000) bookings through the store's
/// thread, one at a time and then 50 at once, each timed from the call to the durable
/// (`fsync`ed) answer. Run where the state directory would be (`CCEDGE_BENCH_DIR`, default
/// the system temp dir), on a real disk: tmpfs makes `fsync` free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/crm.sh"]
#[allow(clippy::disallowed_methods)] // it times real disk writes
async fn bench_callback_booking_latency() {
    let n: usize = std::env::var("CCEDGE_BENCH_BOOKINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let base = std::env::var_os("CCEDGE_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join(format!("ccedge-bench-book-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let handle = StoreHandle::spawn(Store::open(&dir).unwrap());
    let pct = |mut v: Vec<f64>| -> (f64, f64, f64) {
        v.sort_by(f64::total_cmp);
        let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
        (at(0.5), at(0.99), v[v.len() - 1])
    };
    let mut serial = Vec::with_capacity(n);
    for i in 0..n {
        let t = std::time::Instant::now();
        handle
            .insert_callback(rec(&format!("s{i}"), i as i64))
            .await
            .unwrap();
        serial.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut concurrent = Vec::with_capacity(n);
    for round in 0..n / 50 {
        let mut tasks = Vec::new();
        for j in 0..50 {
            let h = handle.clone();
            tasks.push(tokio::spawn(async move {
                let t = std::time::Instant::now();
                h.insert_callback(rec(&format!("c{round}-{j}"), 0))
                    .await
                    .unwrap();
                t.elapsed().as_secs_f64() * 1000.0
            }));
        }
        for t in tasks {
            concurrent.push(t.await.unwrap());
        }
    }
    let (s50, s99, smax) = pct(serial);
    let (c50, c99, cmax) = pct(concurrent);
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "bench": "callback_booking",
            "filesystem": fs,
            "bookings": n,
            "one_at_a_time_ms": {"p50": s50, "p99": s99, "max": smax},
            "fifty_at_once_ms": {"p50": c50, "p99": c99, "max": cmax},
        })
    );
    drop(handle);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_store_that_could_not_open_refuses_jobs_and_opens_once_it_can() {
    let tmp = TempDir::new("deferred");
    // A file where the state directory should be: opening fails until it is gone.
    let state = tmp.path().join("state");
    std::fs::write(&state, b"not a directory").unwrap();
    let h = StoreHandle::start(
        Err(StoreError::DiskFull {
            path: state.clone(),
        }),
        state.clone(),
    );
    assert!(!h.health().open);
    assert!(h.health().problem.is_some());
    let e = h.insert_callback(rec("a", 1)).await.unwrap_err();
    assert!(
        matches!(e, StoreError::NotOpen { .. }) && e.is_disk_failure(),
        "{e}"
    );
    assert!(matches!(
        h.callbacks().await.unwrap_err(),
        StoreError::NotOpen { .. }
    ));
    assert!(!h.health().open);

    std::fs::remove_file(&state).unwrap();
    assert_eq!(h.insert_callback(rec("a", 1)).await.unwrap(), Inserted::New);
    assert_eq!(
        h.health(),
        StoreHealth {
            open: true,
            problem: None
        }
    );
    assert_eq!(h.callbacks().await.unwrap().len(), 1);
}

#[test]
fn a_version_1_file_gains_the_language_and_window_columns_and_keeps_its_rows() {
    let tmp = TempDir::new("v1");
    std::fs::create_dir_all(tmp.path()).unwrap();
    {
        // What version 1 wrote: its schema, one booked callback, schema_version 1.
        let c = rusqlite::Connection::open(tmp.path().join("ccedge.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             INSERT INTO meta VALUES ('schema_version', 1);
             CREATE TABLE callbacks (seq INTEGER PRIMARY KEY, callback_id TEXT NOT NULL UNIQUE,
               call_id TEXT NOT NULL, caller TEXT, callback_number TEXT NOT NULL, dialled TEXT,
               announcement_id TEXT, requested_at_ms INTEGER NOT NULL, state TEXT NOT NULL,
               state_at_ms INTEGER NOT NULL, position INTEGER NOT NULL);
             CREATE TABLE counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE outbox (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL);
             INSERT INTO callbacks (callback_id, call_id, callback_number, requested_at_ms,
               state, state_at_ms, position) VALUES ('old', '00000000000000c1', '+12155550123', 5, 'stored', 5, 1);",
        )
        .unwrap();
    }
    let mut s = Store::open(tmp.path()).unwrap();
    assert_eq!(s.schema_version().unwrap(), 2);
    let rows = s.callbacks().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, cb("old"));
    assert_eq!(rows[0].call_id, CallId(0xc1));
    // No window stored: as soon as possible, for the legacy window; no language.
    assert_eq!(
        (rows[0].language.as_str(), rows[0].window),
        ("", Window::asap(UnixMillis(5), LEGACY_WINDOW))
    );
    // A moved window is written; a state-only update keeps it.
    assert!(s
        .update_callback_state(
            &cb("old"),
            State::Accepted,
            UnixMillis(9),
            Some(window(100, 200))
        )
        .unwrap());
    assert!(s
        .update_callback_state(&cb("old"), State::Assigned, UnixMillis(10), None)
        .unwrap());
    let rows = s.callbacks().unwrap();
    assert_eq!(
        (rows[0].state, rows[0].window),
        (State::Assigned, window(100, 200))
    );
    s.insert_callback(&rec("new", 50)).unwrap();
    let new = s
        .callbacks()
        .unwrap()
        .into_iter()
        .find(|r| r.id == cb("new"))
        .unwrap();
    assert_eq!(new.window, window(50, 50 + 86_400_000));
    assert_eq!(new.language.as_str(), "es");
}
