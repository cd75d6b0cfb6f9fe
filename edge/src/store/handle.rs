//! [`StoreHandle`]: the async face of [`Store`], which runs on one dedicated thread so the
//! agent's event loop never waits for an `fsync`.
//!
//! ## A full or failing disk
//!
//! A store that cannot be opened because its disk is full or failing (SQLite needs room for
//! its shared-memory and log files even to read) does not stop the agent:
//! [`StoreHandle::open`] starts the thread without a database, every job is answered with
//! [`StoreError::NotOpen`] (a booking is "could not book"), and the thread tries to open the
//! database again before each job and every [`RETRY`] while idle. Once it opens, everything
//! works again without a restart.
//!
//! [`StoreHandle::health`] says whether the database is open and what last went wrong: a
//! failed open, a booking write that failed for lack of space or an I/O error, or (while a
//! problem is known) a failed probe write of the state directory every [`RETRY`]. A
//! successful booking write or probe clears it. `ccedge status` and `ccedge doctor` show it.

extern crate alloc;

use alloc::sync::Arc;
use core::fmt;
use core::panic::AssertUnwindSafe;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex, PoisonError};

use tokio::sync::oneshot;

use shared::callback::{State, Window};
use shared::ids::CallbackId;
use shared::time::UnixMillis;

use super::db::{Inserted, Store};
use super::error::StoreError;

/// The most callback inserts committed together in one transaction.
pub const MAX_GROUP_COMMIT: usize = 256;

/// While the store is not open or a disk problem is known, how often the idle store thread
/// tries again (see the module docs).
pub const RETRY: Duration = Duration::from_secs(5);

/// The store's health, for `ccedge status` and `ccedge doctor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreHealth {
    /// The database is open. False only while it could not be opened (a full or failing
    /// disk at start-up); the store thread keeps trying.
    pub open: bool,
    /// What last went wrong with the state disk (a failed open, booking write or probe), until
    /// a write works again.
    pub problem: Option<String>,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A job run alone on the store thread: given the store, or why it is not open.
type RunJob = Box<dyn FnOnce(Result<&mut Store, StoreError>) + Send>;

// Inserts are the common job and a record is a few hundred bytes: kept inline rather than
// boxed, the queue is bounded anyway.
#[allow(clippy::large_enum_variant)]
enum Job {
    /// Queued inserts are gathered and committed together (group commit).
    Insert {
        rec: shared::callback::Entry,
        reply: Reply<Inserted>,
    },
    /// Anything else, run alone, in queue order; given the error when the store is not open.
    Run(RunJob),
}

/// A cheap, cloneable handle to the store thread (named `ccedge-store`).
///
/// Jobs run one at a time in the order they were queued. Callback inserts that are queued
/// together share one transaction and one `fsync`; each caller is answered only after that
/// commit, with its own exact result. The thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Job>,
    depth: Arc<AtomicUsize>,
    health: Arc<Mutex<StoreHealth>>,
}

impl fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreHandle")
            .field("queue_depth", &self.queue_depth())
            .finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// Moves `store` onto a new thread named `ccedge-store` and returns a handle to it.
    /// If the thread cannot be started, the error is logged and every call on the handle
    /// returns [`StoreError::Closed`].
    #[must_use]
    pub fn spawn(store: Store) -> StoreHandle {
        let state_dir = store
            .path()
            .parent()
            .map_or_else(PathBuf::new, Path::to_path_buf);
        Self::start(Ok(store), state_dir)
    }

    /// Opens the store in `state_dir` ([`Store::open`]) on a new store thread. When the
    /// disk is full or failing ([`StoreError::DiskFull`], [`StoreError::Io`]) the handle is
    /// returned all the same, without a database: see the module docs.
    ///
    /// # Errors
    /// Every other error of [`Store::open`] (a damaged file, a newer schema, a directory
    /// that cannot be created or written): those need a technician, not more space.
    pub fn open(state_dir: &Path) -> Result<StoreHandle, StoreError> {
        match Store::open(state_dir) {
            Ok(store) => Ok(Self::start(Ok(store), state_dir.to_path_buf())),
            Err(e @ (StoreError::DiskFull { .. } | StoreError::Io { .. })) => {
                tracing::error!(
                    error = %e,
                    "the state store cannot be opened (full or failing disk): taking calls, \
                     refusing bookings until it opens"
                );
                Ok(Self::start(Err(e), state_dir.to_path_buf()))
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn start(store: Result<Store, StoreError>, state_dir: PathBuf) -> StoreHandle {
        let (tx, rx) = mpsc::channel();
        let depth = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(Mutex::new(match &store {
            Ok(_) => StoreHealth {
                open: true,
                problem: None,
            },
            Err(e) => StoreHealth {
                open: false,
                problem: Some(format!("cannot open the database: {e}")),
            },
        }));
        let thread_depth = Arc::clone(&depth);
        let thread_health = Arc::clone(&health);
        if let Err(e) = std::thread::Builder::new()
            .name("ccedge-store".to_owned())
            .spawn(move || {
                let mut thread = StoreThread {
                    store: store.ok(),
                    state_dir,
                    health: thread_health,
                };
                thread.serve(&rx, &thread_depth);
            })
        {
            tracing::error!(error = %e, "could not start the store thread");
        }
        StoreHandle { tx, depth, health }
    }

    /// Whether the database is open and what last went wrong (see the module docs).
    #[must_use]
    pub fn health(&self) -> StoreHealth {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Jobs queued and not yet taken up by the store thread (a backlog metric).
    #[must_use]
    pub fn queue_depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.depth.fetch_add(1, Ordering::Relaxed);
        self.tx.send(job).map_err(|_| {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            StoreError::Closed
        })
    }

    /// Runs `f` on the store thread and returns its result. A panic in `f` gives
    /// [`StoreError::Panicked`] and leaves the thread running.
    ///
    /// # Errors
    /// [`StoreError::Closed`] when the store thread is gone; [`StoreError::Panicked`].
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Run(Box::new(
            move |store: Result<&mut Store, StoreError>| {
                let out = store.and_then(|store| {
                    catch_unwind(AssertUnwindSafe(|| f(store))).map_err(|_| StoreError::Panicked)
                });
                // The asker may have given up; nothing to do then.
                let _ = reply.send(out);
            },
        )))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::insert_callback`] on the store thread, group-committed with other inserts
    /// queued at the same time. `Ok` means this callback is on disk.
    ///
    /// # Errors
    /// As [`Store::insert_callback`], plus [`StoreError::Closed`].
    pub async fn insert_callback(
        &self,
        rec: shared::callback::Entry,
    ) -> Result<Inserted, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Insert { rec, reply })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::update_callback_state`] on the store thread.
    ///
    /// # Errors
    /// As [`Store::update_callback_state`], plus [`StoreError::Closed`].
    pub async fn update_callback_state(
        &self,
        id: CallbackId,
        state: State,
        at: UnixMillis,
        window: Option<Window>,
    ) -> Result<bool, StoreError> {
        self.run(move |s| s.update_callback_state(&id, state, at, window))
            .await?
    }

    /// [`Store::delete_callback`] on the store thread.
    ///
    /// # Errors
    /// As [`Store::delete_callback`], plus [`StoreError::Closed`].
    pub async fn delete_callback(&self, id: CallbackId) -> Result<bool, StoreError> {
        self.run(move |s| s.delete_callback(&id)).await?
    }

    /// [`Store::callbacks`] on the store thread.
    ///
    /// # Errors
    /// As [`Store::callbacks`], plus [`StoreError::Closed`].
    pub async fn callbacks(&self) -> Result<Vec<shared::callback::Entry>, StoreError> {
        self.run(|s| s.callbacks()).await?
    }

    /// [`Store::set_counter`] on the store thread.
    ///
    /// # Errors
    /// As [`Store::set_counter`], plus [`StoreError::Closed`].
    pub async fn set_counter(&self, key: String, value: u64) -> Result<(), StoreError> {
        self.run(move |s| s.set_counter(&key, value)).await?
    }

    /// [`Store::get_counter`] on the store thread.
    ///
    /// # Errors
    /// As [`Store::get_counter`], plus [`StoreError::Closed`].
    pub async fn get_counter(&self, key: String) -> Result<Option<u64>, StoreError> {
        self.run(move |s| s.get_counter(&key)).await?
    }

    /// [`Store::outbox_append`] on the store thread.
    ///
    /// # Errors
    /// As [`Store::outbox_append`], plus [`StoreError::Closed`].
    pub async fn outbox_append(&self, events: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        self.run(move |s| s.outbox_append(&events)).await?
    }

    /// [`Store::outbox_range`] on the store thread.
    ///
    /// # Errors
    /// As [`Store::outbox_range`], plus [`StoreError::Closed`].
    pub async fn outbox_range(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.run(move |s| s.outbox_range(from, to, limit)).await?
    }

    /// [`Store::outbox_delete_below`] on the store thread.
    ///
    /// # Errors
    /// As [`Store::outbox_delete_below`], plus [`StoreError::Closed`].
    pub async fn outbox_delete_below(&self, seq: u64) -> Result<usize, StoreError> {
        self.run(move |s| s.outbox_delete_below(seq)).await?
    }
}

/// The store thread's state.
struct StoreThread {
    /// `None` while the database could not be opened.
    store: Option<Store>,
    state_dir: PathBuf,
    health: Arc<Mutex<StoreHealth>>,
}

impl StoreThread {
    fn set_health(&self, open: bool, problem: Option<String>) {
        let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        if h.problem != problem {
            match &problem {
                Some(p) => tracing::warn!(problem = %p, "state store problem"),
                None => tracing::info!("state store working again"),
            }
        }
        *h = StoreHealth { open, problem };
    }

    fn troubled(&self) -> bool {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .problem
            .is_some()
    }

    /// The database, opening it first when it is not open yet.
    fn store(&mut self) -> Result<&mut Store, StoreError> {
        if self.store.is_none() {
            match Store::open(&self.state_dir) {
                Ok(s) => {
                    tracing::info!(path = %s.path().display(), "state store opened");
                    self.store = Some(s);
                    self.set_health(true, None);
                }
                Err(e) => {
                    let problem = format!("cannot open the database: {e}");
                    self.set_health(false, Some(problem));
                    return Err(StoreError::NotOpen {
                        path: self.state_dir.clone(),
                        detail: e.to_string(),
                    });
                }
            }
        }
        self.store.as_mut().ok_or(StoreError::Closed)
    }

    /// Idle with a problem known: try to open, or probe whether the disk takes writes again.
    fn retry(&mut self) {
        if self.store.is_none() {
            let _ = self.store();
            return;
        }
        match super::probe::probe_write(&self.state_dir) {
            Ok(()) => self.set_health(true, None),
            Err(e) => self.set_health(true, Some(e.to_string())),
        }
    }

    /// Takes jobs in order; gathers consecutive inserts into one commit.
    fn serve(&mut self, rx: &mpsc::Receiver<Job>, depth: &AtomicUsize) {
        let take = |job: Job| {
            depth.fetch_sub(1, Ordering::Relaxed);
            job
        };
        let mut next: Option<Job> = None;
        loop {
            let job = match next.take() {
                Some(job) => job,
                None if self.troubled() => match rx.recv_timeout(RETRY) {
                    Ok(job) => take(job),
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.retry();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(job) => take(job),
                    Err(mpsc::RecvError) => break, // every handle dropped
                },
            };
            match job {
                Job::Run(f) => f(self.store()),
                Job::Insert { rec, reply } => {
                    let mut recs = vec![rec];
                    let mut replies = vec![reply];
                    while recs.len() < MAX_GROUP_COMMIT {
                        match rx.try_recv() {
                            Ok(Job::Insert { rec, reply }) => {
                                depth.fetch_sub(1, Ordering::Relaxed);
                                recs.push(rec);
                                replies.push(reply);
                            }
                            Ok(other) => {
                                next = Some(take(other));
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let results = match self.store() {
                        Ok(store) => store.insert_callbacks(&recs),
                        Err(e) => recs
                            .iter()
                            .map(|_| {
                                Err(StoreError::NotOpen {
                                    path: self.state_dir.clone(),
                                    detail: not_open_detail(&e),
                                })
                            })
                            .collect(),
                    };
                    if let Some(e) = results
                        .iter()
                        .find_map(|r| r.as_ref().err().filter(|e| e.is_disk_failure()))
                    {
                        let open = self.store.is_some();
                        self.set_health(open, Some(e.to_string()));
                    } else if results.iter().any(Result::is_ok) {
                        self.set_health(true, None);
                    }
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
            }
        }
        if let Some(store) = &self.store {
            tracing::debug!(path = %store.path().display(), "store thread stopped");
        }
    }
}

fn not_open_detail(e: &StoreError) -> String {
    match e {
        StoreError::NotOpen { detail, .. } => detail.clone(),
        e => e.to_string(),
    }
}
