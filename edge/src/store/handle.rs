//! [`StoreHandle`]: the async face of [`Store`], which runs on one dedicated thread so the
//! agent's event loop never waits for an `fsync`.

extern crate alloc;

use alloc::sync::Arc;
use core::fmt;
use core::panic::AssertUnwindSafe;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::panic::catch_unwind;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::db::{CallbackRecord, Inserted, Store};
use super::error::StoreError;

/// The most callback inserts committed together in one transaction.
pub const MAX_GROUP_COMMIT: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Job {
    /// Queued inserts are gathered and committed together (group commit).
    Insert {
        rec: CallbackRecord,
        reply: Reply<Inserted>,
    },
    /// Anything else, run alone, in queue order.
    Run(Box<dyn FnOnce(&mut Store) + Send>),
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
        let (tx, rx) = mpsc::channel();
        let depth = Arc::new(AtomicUsize::new(0));
        let thread_depth = Arc::clone(&depth);
        if let Err(e) = std::thread::Builder::new()
            .name("ccedge-store".to_owned())
            .spawn(move || serve(store, &rx, &thread_depth))
        {
            tracing::error!(error = %e, "could not start the store thread");
        }
        StoreHandle { tx, depth }
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
        self.send(Job::Run(Box::new(move |store: &mut Store| {
            let out = catch_unwind(AssertUnwindSafe(|| f(store))).map_err(|_| StoreError::Panicked);
            // The asker may have given up; nothing to do then.
            let _ = reply.send(out);
        })))?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::insert_callback`] on the store thread, group-committed with other inserts
    /// queued at the same time. `Ok` means this callback is on disk.
    ///
    /// # Errors
    /// As [`Store::insert_callback`], plus [`StoreError::Closed`].
    pub async fn insert_callback(&self, rec: CallbackRecord) -> Result<Inserted, StoreError> {
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
        id: String,
        state: String,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.run(move |s| s.update_callback_state(&id, &state, at_ms))
            .await?
    }

    /// [`Store::delete_callback`] on the store thread.
    ///
    /// # Errors
    /// As [`Store::delete_callback`], plus [`StoreError::Closed`].
    pub async fn delete_callback(&self, id: String) -> Result<bool, StoreError> {
        self.run(move |s| s.delete_callback(&id)).await?
    }

    /// [`Store::callbacks`] on the store thread.
    ///
    /// # Errors
    /// As [`Store::callbacks`], plus [`StoreError::Closed`].
    pub async fn callbacks(&self) -> Result<Vec<CallbackRecord>, StoreError> {
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

/// The store thread: take jobs in order; gather consecutive inserts into one commit.
fn serve(mut store: Store, rx: &mpsc::Receiver<Job>, depth: &AtomicUsize) {
    let take = |job: Job| {
        depth.fetch_sub(1, Ordering::Relaxed);
        job
    };
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(job) => take(job),
                Err(mpsc::RecvError) => break, // every handle dropped
            },
        };
        match job {
            Job::Run(f) => f(&mut store),
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
                let results = store.insert_callbacks(&recs);
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
        }
    }
    tracing::debug!(path = %store.path().display(), "store thread stopped");
}
