//! Backends store or publish readings. Each runs behind its own queue (see
//! `router.rs`); a backend never knows which device produced a reading. One module
//! per backend, registered by one line in the `backend_types!` list below.

mod backend_type;
pub mod csv;
mod error;
pub mod health;
pub mod mqtt;
pub mod outbox;
pub mod sqlite;
pub mod uplink;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

pub use self::backend_type::BackendType;
pub use self::error::{BackendError, Cause};
use crate::config::BaseConfig;
use crate::reading::{MonthlyPeaks, Reading};

// Adding a backend: its module above, its line here (see docs/architecture.md).
backend_type::backend_types! {
    /// SQLite, for Grafana. On by default.
    sqlite: sqlite::SqliteConfig,
    /// CSV files, one per device per day.
    csv: csv::CsvConfig,
    /// MQTT, with Home Assistant discovery; fed from the durable outbox.
    mqtt: mqtt::MqttConfig,
    /// HTTP uplink to a central server (JSON or InfluxDB line protocol).
    uplink: uplink::UplinkConfig,
}

/// How a backend wants its readings batched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Write at least this often.
    pub flush_interval: Duration,
    /// Write early when this many readings wait.
    pub batch_size: usize,
    /// Batches (one per poll) the queue holds before new ones are dropped.
    pub queue_capacity: usize,
}

#[async_trait]
pub trait Backend: Send {
    fn name(&self) -> &'static str;
    fn policy(&self) -> BatchPolicy;
    /// Stores a batch: all of it or, on error, none of it.
    async fn write(&mut self, batch: &[Reading]) -> Result<(), BackendError>;
    /// Makes everything written so far durable; called once at shutdown.
    async fn flush(&mut self) -> Result<(), BackendError>;
    /// Stores a meter's monthly peaks (capacity tariff), which supersede the
    /// device's earlier ones; all of it or, on error, none of it. Backends that
    /// publish readings only ignore it: the rolling average reaches them as the
    /// `capacity_rolling_average` reading.
    async fn write_monthly_peaks(&mut self, _peaks: &MonthlyPeaks) -> Result<(), BackendError> {
        Ok(())
    }
    /// A device was removed from the configuration (its readings so far have
    /// been written).
    async fn device_removed(&mut self, _device: &str) -> Result<(), BackendError> {
        Ok(())
    }
    /// Every device of the configuration, at start and after each reload (devices
    /// whose file has errors included: they exist, they only fail to start), so a
    /// backend can forget what it published for devices removed while mesura was
    /// down.
    async fn devices_configured(&mut self, _devices: &[crate::reading::DeviceId]) -> Result<(), BackendError> {
        Ok(())
    }
    /// A device's metrics, when its monitor is built (start, reload): every metric
    /// its configuration gives, or `None` when its readings decide which it has (a
    /// P1 meter's registers). A backend can forget what it published of others.
    async fn device_metrics(&mut self, _device: &str, _metrics: Option<&[String]>) -> Result<(), BackendError> {
        Ok(())
    }
    /// Readings the backend's committed writes folded over a different value of
    /// the same metric and second, per device, since the last call (SQLite's one
    /// row per second). Backends that keep every reading have none.
    fn take_merged(&mut self) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// Whether the readings written get where they go, for a backend whose writes
    /// only queue them (the outbox of MQTT and the uplink): its delivery's health.
    fn delivery_health(&self) -> Option<Arc<health::Health>> {
        None
    }
}

/// Opens every configured backend. Fails if any cannot be opened: the daemon
/// should not report itself ready with a backend missing.
pub async fn open_all(base: &BaseConfig) -> Result<Vec<Box<dyn Backend>>, BackendError> {
    let mut backends = Vec::new();
    for name in base.backends.names() {
        if let Some(backend) = open(name, base).await? {
            backends.push(backend);
        }
    }
    Ok(backends)
}

/// Opens the backend called `name` if it is configured.
pub async fn open(name: &str, base: &BaseConfig) -> Result<Option<Box<dyn Backend>>, BackendError> {
    base.backends.open(name, &base.data_dir).await
}

/// Whether backend `name` has the same settings in both configs (a reload then
/// leaves it alone).
pub fn same_settings(name: &str, a: &BaseConfig, b: &BaseConfig) -> bool {
    a.backends.same_section(&b.backends, name) && a.data_dir == b.data_dir
}

/// Runs `f` on the blocking pool with exclusive access to `state`: file and
/// database I/O never runs on the async worker threads.
pub(crate) async fn blocking<S, T, F>(state: &Arc<Mutex<S>>, f: F) -> Result<T, BackendError>
where
    S: Send + 'static,
    T: Send + 'static,
    F: FnOnce(&mut S) -> Result<T, BackendError> + Send + 'static,
{
    let state = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut guard = state
            .lock()
            .map_err(|_| BackendError::transient("backend state poisoned by a panic"))?;
        f(&mut guard)
    })
    .await
    .map_err(|e| BackendError::transient(format!("backend task failed: {e}")).caused_by(e))?
}
