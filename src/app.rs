//! The daemon: opens the backends, starts the router and the supervisor, and shuts
//! them down in order — monitors first, then the backends drain and flush.

use std::collections::BTreeMap;

use tokio::task::JoinHandle;

use crate::backends::{self, BackendError};
use crate::clock::SharedClock;
use crate::config::{BaseConfig, Config};
use crate::router;
use crate::status::{BackendStats, SharedStatus, Status};
use crate::supervisor::{Shared, Supervisor};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot open backend: {0}")]
    Backend(#[from] BackendError),
}

pub struct Daemon {
    base: BaseConfig,
    supervisor: Supervisor,
    backend_tasks: Vec<JoinHandle<()>>,
    status: SharedStatus,
}

/// What a run did, for the shutdown log line and for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Successful polls per device.
    pub polls: BTreeMap<String, u64>,
    /// Readings produced per device.
    pub readings: BTreeMap<String, u64>,
    /// Readings written per backend.
    pub written: BTreeMap<&'static str, u64>,
    /// Readings dropped per backend (queue full or refused).
    pub dropped: BTreeMap<&'static str, u64>,
}

impl Daemon {
    /// Opens the backends and starts every valid, enabled device. Device files with
    /// errors are logged and skipped; the other devices run.
    pub async fn start(config: Config, clock: SharedClock) -> Result<Daemon, AppError> {
        let status: SharedStatus = std::sync::Arc::new(Status::default());
        let backends = backends::open_all(&config.base).await?;
        let (router, backend_tasks) = router::start(backends, &status);
        let shared = Shared {
            router,
            status: status.clone(),
            clock,
            data_dir: config.base.data_dir.clone(),
        };
        let mut supervisor = Supervisor::new(shared);
        for error in &config.devices.errors {
            tracing::error!("{error}; this device is not started, the others run");
        }
        for device in config.devices.devices.into_values() {
            supervisor.start(device);
        }
        Ok(Daemon {
            base: config.base,
            supervisor,
            backend_tasks,
            status,
        })
    }

    pub fn status(&self) -> &SharedStatus {
        &self.status
    }

    pub fn base(&self) -> &BaseConfig {
        &self.base
    }

    pub fn supervisor(&mut self) -> &mut Supervisor {
        &mut self.supervisor
    }

    /// Stops the monitors, lets every backend write out its queue and flush, and
    /// reports what the run did. Nothing produced before this call is lost unless a
    /// backend keeps failing through its final attempts (then it is logged).
    pub async fn shutdown(self) -> Summary {
        let Daemon {
            supervisor,
            backend_tasks,
            status,
            ..
        } = self;
        // Dropping the supervisor after its tasks end drops the last router clones,
        // which closes the backend queues.
        supervisor.shutdown().await;
        for task in backend_tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "a backend task panicked");
            }
        }
        let mut summary = Summary::default();
        for (id, device) in status.devices() {
            summary.polls.insert(id.to_string(), device.polls_ok);
            summary.readings.insert(id.to_string(), device.readings);
        }
        for (name, stats) in status.backends() {
            summary.written.insert(name, BackendStats::get(&stats.written));
            summary.dropped.insert(
                name,
                BackendStats::get(&stats.dropped_queue_full) + BackendStats::get(&stats.dropped_rejected),
            );
        }
        summary
    }
}
