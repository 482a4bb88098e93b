//! The durable outbox behind the MQTT and uplink backends.
//!
//! rumqttc (and any HTTP client) keeps unacknowledged messages only in memory, so a
//! broker outage longer than its buffers, or a restart, would lose readings. Instead
//! a durable backend's `write` appends its readings here (`data/outbox.db`, SQLite
//! in WAL mode, one transaction per batch), and its delivery task sends them oldest
//! first and deletes them only once the far end has acknowledged them. The rows
//! still present are the backend's delivered-cursor: after a restart, delivery
//! resumes with them. Delivery is at-least-once: a reading sent just before a
//! connection dropped, whose acknowledgement was lost, is sent again.
//!
//! The outbox is bounded by age and by rows per backend; past either bound the
//! oldest rows are dropped, counted (in the file itself, so the count survives a
//! restart and /metrics can read it) and logged. The age is how long a reading has
//! waited in the outbox, never the reading's own timestamp: a meter with an unset
//! clock, a replay of history or a gas reading with an old capture time must be
//! delivered like any other.

//!
//! [`Durable`] is the part both durable backends share around it: the outbox opened
//! on the blocking pool, one delivery task per backend started with a wake signal
//! and a stop token, `write` = append + wake, `flush` = stop + join.

mod store;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::store::{default_max_age, default_max_rows, Dropped, Outbox, OutboxConfig, OutboxRow};
use super::{blocking, BackendError};
use crate::reading::Reading;

/// Where the outbox lives: one file for every durable backend (its rows carry the
/// backend's name), and what the status API reads.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("outbox.db")
}

/// One delivery lock per backend and outbox file: when a reload rebuilds a
/// backend, the new delivery task waits for the old one's last attempt, so the
/// same rows are never sent by two tasks at once.
fn delivery_lock(path: &Path, backend: &'static str) -> Arc<tokio::sync::Mutex<()>> {
    type Locks = Mutex<HashMap<(PathBuf, &'static str), Arc<tokio::sync::Mutex<()>>>>;
    static LOCKS: LazyLock<Locks> = LazyLock::new(Default::default);
    // A poisoned map is still a valid map: the panic was elsewhere.
    let mut locks = LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    locks.entry((path.to_path_buf(), backend)).or_default().clone()
}

async fn open_outbox(path: PathBuf, backend: &'static str, bounds: OutboxConfig) -> Result<Outbox, BackendError> {
    tokio::task::spawn_blocking(move || Outbox::open(&path, backend, bounds))
        .await
        .map_err(|e| BackendError::transient(format!("{backend}: outbox task failed: {e}")).caused_by(e))?
}

/// A durable backend's outbox, opened, before its delivery task starts.
#[derive(Debug)]
pub struct Opening {
    backend: &'static str,
    path: PathBuf,
    bounds: OutboxConfig,
    outbox: Arc<Mutex<Outbox>>,
    wake: Arc<Notify>,
    stop: CancellationToken,
}

impl Opening {
    /// Opens (creating if needed) `backend`'s rows of the outbox in `data_dir`.
    pub async fn open(backend: &'static str, data_dir: &Path, bounds: OutboxConfig) -> Result<Opening, BackendError> {
        let path = path(data_dir);
        let outbox = open_outbox(path.clone(), backend, bounds.clone()).await?;
        Ok(Opening {
            backend,
            path,
            bounds,
            outbox: Arc::new(Mutex::new(outbox)),
            wake: Arc::new(Notify::new()),
            stop: CancellationToken::new(),
        })
    }

    /// The connection `write` appends through.
    pub fn outbox(&self) -> Arc<Mutex<Outbox>> {
        self.outbox.clone()
    }

    /// A second connection to the same file, for a delivery task that reads and
    /// acknowledges while the backend appends.
    pub async fn own_connection(&self) -> Result<Arc<Mutex<Outbox>>, BackendError> {
        let outbox = open_outbox(self.path.clone(), self.backend, self.bounds.clone()).await?;
        Ok(Arc::new(Mutex::new(outbox)))
    }

    /// Notified when readings were appended.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Cancelled at `flush` (or drop): delivery then makes its last, bounded attempt.
    pub fn stop(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Starts `delivery` once the previous delivery task of this backend on this
    /// file (a reload's old backend) has ended.
    pub fn start(self, delivery: impl Future<Output = ()> + Send + 'static) -> Durable {
        let lock = delivery_lock(&self.path, self.backend);
        let task = tokio::spawn(async move {
            let _turn = lock.lock_owned().await;
            delivery.await;
        });
        Durable {
            backend: self.backend,
            outbox: self.outbox,
            wake: self.wake,
            stop: self.stop,
            task: Some(task),
        }
    }
}

/// A running durable backend: its outbox and its delivery task.
#[derive(Debug)]
pub struct Durable {
    backend: &'static str,
    outbox: Arc<Mutex<Outbox>>,
    wake: Arc<Notify>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Durable {
    /// Appends a batch in one transaction and logs what the outbox's bounds dropped.
    /// Delivery is not woken: see [`Durable::wake`].
    pub async fn append(&self, batch: &[Reading]) -> Result<(), BackendError> {
        let batch = batch.to_vec();
        let (dropped, bounds) = blocking(&self.outbox, move |outbox| {
            outbox.append(&batch).map(|d| (d, outbox.bounds().clone()))
        })
        .await?;
        dropped.log(self.backend, &bounds);
        Ok(())
    }

    /// Tells delivery there is something to send.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops delivery after its last, bounded attempt and waits for it: what is
    /// left stays in the outbox for the next start.
    pub async fn stop(&mut self) -> Result<(), BackendError> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.map_err(|e| {
                BackendError::transient(format!("{}: delivery task failed: {e}", self.backend)).caused_by(e)
            })?;
        }
        Ok(())
    }
}

impl Drop for Durable {
    fn drop(&mut self) {
        // A backend dropped without flush (an error path) must not leave its
        // delivery task running.
        self.stop.cancel();
    }
}
