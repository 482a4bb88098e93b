//! Live state of devices and backends, shared by the tasks that change it and the
//! code that reports it (the shutdown summary, later the status API and /metrics).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backends::health::{Health, Snapshot};
use crate::daemon::events::Event;
use crate::daemon::retry::BreakerState;
use crate::reading::DeviceId;

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    pub device_type: &'static str,
    /// Changes each time the device's task is (re)started.
    pub generation: u64,
    pub polls_ok: u64,
    pub polls_failed: u64,
    pub readings: u64,
    pub consecutive_failures: u32,
    pub breaker: BreakerState,
    pub last_reading: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// When this task started, for the start-up grace in /health.
    pub started_at: DateTime<Utc>,
    pub poll_interval: std::time::Duration,
    /// The newest value of every metric, for /api/readings/latest and the page.
    pub latest: BTreeMap<String, Latest>,
    /// Protocol events the monitor counted itself (bad frames dropped, answers to
    /// another request, points refused), by kind.
    pub protocol_errors: BTreeMap<&'static str, u64>,
    /// What the monitor reports about a service of its own (a re-served P1 port),
    /// as of its last read.
    pub service_metrics: Vec<crate::monitors::ServiceMetric>,
    /// The meter's newest monthly peaks (capacity tariff), for /api/capacity.
    #[serde(skip)]
    pub monthly_peaks: Option<std::sync::Arc<crate::reading::MonthlyPeaks>>,
    /// Counter readings judged glitches: stored raw, left out of the lifetime series (src/energy/).
    pub counter_glitches: u64,
    /// Counter epochs started by a swap or a reset (not the first of a counter).
    pub counter_epochs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latest {
    pub value: crate::reading::Value,
    pub unit: &'static str,
    pub kind: &'static str,
    pub timestamp: DateTime<Utc>,
}

impl DeviceStatus {
    fn new(device_type: &'static str) -> Self {
        DeviceStatus {
            device_type,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            polls_ok: 0,
            polls_failed: 0,
            readings: 0,
            consecutive_failures: 0,
            breaker: BreakerState::Closed,
            last_reading: None,
            last_error: None,
            errors_by_kind: BTreeMap::new(),
            started_at: Utc::now(),
            poll_interval: std::time::Duration::ZERO,
            latest: BTreeMap::new(),
            protocol_errors: BTreeMap::new(),
            service_metrics: Vec::new(),
            monthly_peaks: None,
            counter_glitches: 0,
            counter_epochs: 0,
        }
    }
}

/// Per-backend counters, updated lock-free on the hot path.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Readings committed by the backend.
    pub written: AtomicU64,
    /// Readings dropped because the backend's queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Readings dropped after the backend refused them for good.
    pub dropped_rejected: AtomicU64,
    /// Failed write attempts.
    pub write_errors: AtomicU64,
    /// Batches waiting in the queue.
    pub queued_batches: AtomicU64,
    /// Whether the backend's writes succeed (the router reports them).
    pub writes: Health,
    /// Whether what a durable backend wrote gets delivered (its delivery task
    /// reports it); `None` for backends whose writes are the delivery.
    delivery: Mutex<Option<Arc<Health>>>,
    /// Readings written over a different value of the same metric and second
    /// (SQLite's one row per second), per device.
    pub merged: Mutex<BTreeMap<String, u64>>,
    /// Write latency histogram: cumulative counts per bucket of [`LATENCY_BUCKETS`].
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    pub latency_sum_micros: AtomicU64,
    pub latency_count: AtomicU64,
}

/// Upper bounds (seconds) of the write-latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

impl BackendStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn add_merged(&self, merged: Vec<(String, u64)>) {
        if merged.is_empty() {
            return;
        }
        let mut totals = self.merged.lock().unwrap_or_else(|p| p.into_inner());
        for (device, n) in merged {
            *totals.entry(device).or_default() += n;
        }
    }

    pub fn merged(&self) -> BTreeMap<String, u64> {
        self.merged.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The delivery health of the backend now routed under this name.
    pub fn set_delivery(&self, delivery: Option<Arc<Health>>) {
        *self.delivery.lock().unwrap_or_else(|p| p.into_inner()) = delivery;
    }

    /// Writes and delivery together: what /health and /metrics show.
    pub fn health(&self) -> Snapshot {
        let writes = self.writes.snapshot();
        match &*self.delivery.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(delivery) => writes.with(delivery.snapshot()),
            None => writes,
        }
    }

    pub fn observe_write(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the disk guard (`retention.rs`) has seen and done, for /health and /metrics.
#[derive(Debug)]
pub struct GuardStats {
    /// Checks run, and checks that failed (the disk or the database could not be read).
    pub checks: AtomicU64,
    pub errors: AtomicU64,
    /// Rows deleted by thinning, all tables.
    pub thinned_rows: AtomicU64,
    /// Use% of the database's filesystem at the last check, as `f64` bits (NaN:
    /// not measured yet).
    used_percent_bits: AtomicU64,
    /// The configured threshold, as `f64` bits (NaN: no guard running).
    max_percent_bits: AtomicU64,
}

impl Default for GuardStats {
    fn default() -> Self {
        GuardStats {
            checks: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            thinned_rows: AtomicU64::new(0),
            used_percent_bits: AtomicU64::new(f64::NAN.to_bits()),
            max_percent_bits: AtomicU64::new(f64::NAN.to_bits()),
        }
    }
}

impl GuardStats {
    pub fn set_used_percent(&self, pct: f64) {
        self.used_percent_bits.store(pct.to_bits(), Ordering::Relaxed);
    }

    /// The last measured Use%, if any.
    pub fn used_percent(&self) -> Option<f64> {
        Some(f64::from_bits(self.used_percent_bits.load(Ordering::Relaxed))).filter(|p| !p.is_nan())
    }

    /// `None` when no guard runs (disabled, or no SQLite backend).
    pub fn set_max_percent(&self, max: Option<f64>) {
        self.max_percent_bits
            .store(max.unwrap_or(f64::NAN).to_bits(), Ordering::Relaxed);
    }

    pub fn max_percent(&self) -> Option<f64> {
        Some(f64::from_bits(self.max_percent_bits.load(Ordering::Relaxed))).filter(|p| !p.is_nan())
    }
}

/// How the last reload of config.yaml went, for /health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaseReload {
    /// Applied (or unchanged); `false`: the previous config stays in force.
    pub ok: bool,
    /// Why it was not applied.
    pub error: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct Status {
    devices: Mutex<BTreeMap<DeviceId, DeviceStatus>>,
    backends: Mutex<BTreeMap<&'static str, Arc<BackendStats>>>,
    pub disk_guard: Arc<GuardStats>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// `None` until the first reload.
    last_base_reload: Mutex<Option<BaseReload>>,
    pub started_at: DateTime<Utc>,
    /// Device files that failed at the last reload, by device id: what is wrong and
    /// what the device does meanwhile, for /health, /api/devices and the page.
    config_errors: Mutex<BTreeMap<String, String>>,
    /// The write channel into each running device task whose file allows writes
    /// (docs/control.md): the API hands writes to the task that owns the link.
    controls: Mutex<BTreeMap<DeviceId, tokio::sync::mpsc::Sender<crate::monitors::control::WriteCommand>>>,
    /// Readings, device and backend changes as they happen, for `GET /api/events`.
    pub events: crate::daemon::events::Events,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            devices: Mutex::default(),
            backends: Mutex::default(),
            disk_guard: Arc::default(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_base_reload: Mutex::default(),
            started_at: Utc::now(),
            config_errors: Mutex::default(),
            controls: Mutex::default(),
            events: crate::daemon::events::Events::default(),
        }
    }
}

pub type SharedStatus = Arc<Status>;

impl Status {
    pub fn device_started(&self, id: &DeviceId, device_type: &'static str, poll_interval: std::time::Duration) {
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        devices
            .entry(id.clone())
            .or_insert_with(|| DeviceStatus::new(device_type))
            .poll_interval = poll_interval;
        drop(devices);
        self.events.send_with(|| Event::Device(id.clone()));
    }

    pub fn device_removed(&self, id: &DeviceId) {
        self.devices.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.controls.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.events.send_with(|| Event::Device(id.clone()));
    }

    /// Registers the write channel of a device task whose file allows writes.
    pub fn set_control(
        &self,
        id: &DeviceId,
        sender: tokio::sync::mpsc::Sender<crate::monitors::control::WriteCommand>,
    ) {
        self.controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), sender);
    }

    /// The write channel of a running device, when its file allows writes.
    pub fn control(&self, id: &str) -> Option<tokio::sync::mpsc::Sender<crate::monitors::control::WriteCommand>> {
        self.controls.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Changes a device's state; a change a user should see at once (it starts or
    /// stops failing, another error, the breaker moves) is sent as an event.
    pub fn update_device(&self, id: &DeviceId, f: impl FnOnce(&mut DeviceStatus)) {
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let Some(status) = devices.get_mut(id) else { return };
        if !self.events.listened() {
            f(status);
            return;
        }
        let before = (
            status.breaker,
            status.consecutive_failures > 0,
            status.last_error.clone(),
        );
        f(status);
        let changed = before
            != (
                status.breaker,
                status.consecutive_failures > 0,
                status.last_error.clone(),
            );
        drop(devices);
        if changed {
            self.events.send_with(|| Event::Device(id.clone()));
        }
    }

    pub fn devices(&self) -> BTreeMap<DeviceId, DeviceStatus> {
        self.devices.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn backend(&self, name: &'static str) -> Arc<BackendStats> {
        let mut backends = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        backends.entry(name).or_default().clone()
    }

    pub fn backends(&self) -> BTreeMap<&'static str, Arc<BackendStats>> {
        self.backends.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records how a reload of config.yaml went: `error` is why it was not applied.
    pub fn base_reloaded(&self, error: Option<String>) {
        let outcome = BaseReload {
            ok: error.is_none(),
            error,
            at: Utc::now(),
        };
        *self.last_base_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
    }

    pub fn last_base_reload(&self) -> Option<BaseReload> {
        self.last_base_reload.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Broken device files (see `Status::config_errors`).
impl Status {
    pub fn set_config_errors(&self, errors: BTreeMap<String, String>) {
        *self.config_errors.lock().unwrap_or_else(|p| p.into_inner()) = errors;
    }

    pub fn config_errors(&self) -> BTreeMap<String, String> {
        self.config_errors.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
