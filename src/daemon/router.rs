//! The router: one bounded queue per backend, so a slow or dead backend never
//! blocks a monitor or another backend. A full queue drops the batch for that
//! backend only, counts it and says so in the log (at most once a minute).
//!
//! Beside readings, a queue carries a meter's monthly peaks (capacity tariff): a
//! backend keeps the newest per device until it is written, retrying like readings.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::backends::{Backend, BackendError, BatchPolicy};
use crate::daemon::events::{Event, Events};
use crate::daemon::live::{BackendStats, SharedStatus};
use crate::reading::{DeviceId, MonthlyPeaks, Reading};

/// One poll's readings, shared by every backend queue it goes to.
pub type Batch = Arc<[Reading]>;

/// A device's metrics as its monitor declares them: all its configuration gives,
/// or `None` when its readings decide.
type DeclaredMetrics = Option<Arc<[String]>>;

/// What travels on a backend's queue: readings, a meter's monthly peaks, or word
/// that a device is gone (so MQTT can retract its Home Assistant entities), in order.
#[derive(Clone)]
enum Item {
    Readings(Batch),
    MonthlyPeaks(Arc<MonthlyPeaks>),
    DeviceRemoved(DeviceId),
    /// Every device of the configuration (start, reload).
    DevicesConfigured(Arc<[DeviceId]>),
    /// A device's metrics as its monitor declares them (`None`: its readings decide).
    DeviceMetrics(DeviceId, DeclaredMetrics),
}

#[derive(Debug, Clone)]
struct Route {
    name: &'static str,
    tx: mpsc::Sender<Item>,
    stats: Arc<BackendStats>,
    last_warned: Arc<AtomicI64>,
}

/// Hands readings to the backends' queues. Cheap to clone: every device task holds
/// one. Routes can be swapped while devices run, so a backend whose settings
/// changed is rebuilt without stopping anything else.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Arc<RwLock<Vec<Route>>>,
    /// Where the alert evaluator sees every batch (`daemon/alerts.rs`), if it runs.
    tap: Arc<RwLock<Option<mpsc::Sender<Batch>>>>,
    /// The devices of the configuration as last told, for backends added later.
    configured: Arc<RwLock<Option<Arc<[DeviceId]>>>>,
    /// Each running device's declared metrics as last told, for backends added later.
    metrics: Arc<RwLock<std::collections::BTreeMap<DeviceId, DeclaredMetrics>>>,
    /// Where listeners of `GET /api/events` see every batch once it is queued.
    events: Events,
}

impl Router {
    /// A router whose batches are also sent as events (the live state's `events`).
    pub fn with_events(events: Events) -> Router {
        Router {
            events,
            ..Router::default()
        }
    }

    /// Queues `readings` for every backend `wants` accepts. Never waits.
    pub fn dispatch(&self, readings: Vec<Reading>, wants: impl Fn(&str) -> bool) {
        if readings.is_empty() {
            return;
        }
        let batch: Batch = readings.into();
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        for route in routes.iter().filter(|r| wants(r.name)) {
            route.send(&batch);
        }
        drop(routes);
        if let Some(tap) = &*self.tap.read().unwrap_or_else(|p| p.into_inner()) {
            // Alerts must never slow a device down: a full tap skips the batch,
            // and the rules see the device's next one.
            let _ = tap.try_send(batch.clone());
        }
        // Once handed to the backends; nothing is built when nobody listens.
        self.events.send_with(|| Event::Readings(batch));
    }

    /// Every batch dispatched from now on, on a queue of `capacity` batches
    /// (replacing an earlier tap).
    pub fn tap(&self, capacity: usize) -> mpsc::Receiver<Batch> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        *self.tap.write().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// Queues a meter's monthly peaks for every backend `wants` accepts. Never
    /// waits: a full queue loses them, and the monitor hands them on again within
    /// the hour (`PEAKS_RESEND_EVERY`), which the backend's upsert makes harmless.
    pub fn dispatch_monthly_peaks(&self, peaks: Arc<MonthlyPeaks>, wants: impl Fn(&str) -> bool) {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        for route in routes.iter().filter(|r| wants(r.name)) {
            if route.tx.try_send(Item::MonthlyPeaks(peaks.clone())).is_err() {
                tracing::debug!(backend = route.name, device = %peaks.device, "queue full: monthly peaks wait for the next hand-on");
            }
        }
    }

    /// Tells every backend a device's metrics, once its monitor is built: every
    /// metric its configuration gives, or `None` when its readings decide.
    pub fn device_metrics(&self, device: &DeviceId, metrics: Option<Vec<String>>) {
        let metrics: DeclaredMetrics = metrics.map(Into::into);
        self.metrics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(device.clone(), metrics.clone());
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        for route in routes.iter() {
            if route
                .tx
                .try_send(Item::DeviceMetrics(device.clone(), metrics.clone()))
                .is_err()
            {
                tracing::warn!(backend = route.name, device = %device, "queue full: the backend is not told the device's metrics");
            }
        }
    }

    /// Tells every backend that a device was removed from the configuration.
    pub fn device_removed(&self, device: &DeviceId) {
        self.metrics.write().unwrap_or_else(|p| p.into_inner()).remove(device);
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        for route in routes.iter() {
            if route.tx.try_send(Item::DeviceRemoved(device.clone())).is_err() {
                tracing::warn!(backend = route.name, device = %device, "queue full: the backend is not told the device was removed");
            }
        }
    }

    /// Tells every backend (and every one added later) which devices the
    /// configuration holds.
    pub fn devices_configured(&self, devices: Vec<DeviceId>) {
        let devices: Arc<[DeviceId]> = devices.into();
        *self.configured.write().unwrap_or_else(|p| p.into_inner()) = Some(devices.clone());
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        for route in routes.iter() {
            if route.tx.try_send(Item::DevicesConfigured(devices.clone())).is_err() {
                tracing::warn!(
                    backend = route.name,
                    "queue full: the backend is not told which devices are configured"
                );
            }
        }
    }

    pub fn backend_names(&self) -> Vec<&'static str> {
        self.routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|r| r.name)
            .collect()
    }

    /// Starts a backend's task and routes readings to it. A route of the same name
    /// is replaced in the same step, so no reading goes unrouted: the old queue
    /// closes and drains, and the new task starts writing only once `after` (the old
    /// task) has finished, so two writers never share a file.
    pub fn add(
        &self,
        backend: Box<dyn Backend>,
        status: &SharedStatus,
        after: Option<JoinHandle<()>>,
    ) -> JoinHandle<()> {
        let name = backend.name();
        let policy = backend.policy();
        let (tx, rx) = mpsc::channel(policy.queue_capacity.max(1));
        let stats = status.backend(name);
        stats.set_delivery(backend.delivery_health());
        let route = Route {
            name,
            tx,
            stats: stats.clone(),
            last_warned: Arc::new(AtomicI64::new(0)),
        };
        let task = tokio::spawn(async move {
            if let Some(previous) = after {
                if let Err(e) = previous.await {
                    tracing::error!(backend = name, error = %e, "the replaced backend task panicked");
                }
            }
            run_backend(backend, rx, policy, stats).await;
        });
        if let Some(devices) = &*self.configured.read().unwrap_or_else(|p| p.into_inner()) {
            let _ = route.tx.try_send(Item::DevicesConfigured(devices.clone()));
        }
        for (device, metrics) in self.metrics.read().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = route.tx.try_send(Item::DeviceMetrics(device.clone(), metrics.clone()));
        }
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|r| r.name != name);
        routes.push(route);
        task
    }

    /// Stops routing to `name`: its queue closes, and its task writes out what is
    /// queued, flushes and ends.
    pub fn remove(&self, name: &str) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| r.name != name);
    }

    /// Closes every queue: the backend tasks drain, flush and end.
    pub fn close_all(&self) {
        self.routes.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Route {
    fn send(&self, batch: &Batch) {
        match self.tx.try_send(Item::Readings(batch.clone())) {
            Ok(()) => BackendStats::add(&self.stats.queued_batches, 1),
            Err(mpsc::error::TrySendError::Full(_)) => {
                BackendStats::add(&self.stats.dropped_queue_full, batch.len() as u64);
                let now = chrono::Utc::now().timestamp();
                let last = self.last_warned.load(Ordering::Relaxed);
                if now - last >= 60
                    && self
                        .last_warned
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(
                        backend = self.name,
                        dropped_total = BackendStats::get(&self.stats.dropped_queue_full),
                        "backend queue full: readings for this backend are being dropped (the backend is slower than the devices)"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                BackendStats::add(&self.stats.dropped_rejected, batch.len() as u64);
            }
        }
    }
}

/// Starts one task per backend and returns the router that feeds them.
pub fn start(backends: Vec<Box<dyn Backend>>, status: &SharedStatus) -> (Router, Vec<JoinHandle<()>>) {
    let router = Router::with_events(status.events.clone());
    let tasks = backends.into_iter().map(|b| router.add(b, status, None)).collect();
    (router, tasks)
}

/// Attempts at the final write on shutdown before giving up on a failing backend.
const SHUTDOWN_ATTEMPTS: u32 = 3;

/// A backend's task: collects batches, writes them every `flush_interval` or when
/// `batch_size` readings wait. While a write fails, it stops taking from the queue,
/// so the pressure shows up as a full queue (counted) instead of unbounded memory.
async fn run_backend(
    mut backend: Box<dyn Backend>,
    mut rx: mpsc::Receiver<Item>,
    policy: BatchPolicy,
    stats: Arc<BackendStats>,
) {
    let name = backend.name();
    // Grown as readings arrive, not sized for `batch_size` up front: a batch of a
    // small installation is a fraction of it, and the reserve would be 400 KB a
    // backend (docs/benchmarks.md, memory).
    let mut pending: Vec<Reading> = Vec::new();
    let mut ticker = tokio::time::interval(policy.flush_interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut failing = false;
    let mut seen: std::collections::HashSet<DeviceId> = std::collections::HashSet::new();
    // The newest monthly peaks per device not yet written: a newer message supersedes.
    let mut peaks = PendingPeaks::new();
    loop {
        tokio::select! {
            biased;
            batch = rx.recv(), if pending.len() < policy.batch_size => match batch {
                Some(Item::Readings(batch)) => {
                    stats.queued_batches.fetch_sub(1, Ordering::Relaxed);
                    // A device's first readings are written at once, so a user who
                    // just added a device file sees it work within seconds; after
                    // that, batching spares the SD card.
                    let new_device = batch.iter().any(|r| !seen.contains(&r.device));
                    if new_device {
                        seen.extend(batch.iter().map(|r| r.device.clone()));
                    }
                    pending.extend(batch.iter().cloned());
                    if (new_device || pending.len() >= policy.batch_size) && !failing {
                        failing = !write_pending(backend.as_mut(), &mut pending, &stats).await;
                    }
                }
                Some(Item::MonthlyPeaks(p)) => {
                    peaks.insert(p.device.clone(), p);
                    if !failing {
                        failing = !write_everything(backend.as_mut(), &mut pending, &mut peaks, &stats).await;
                    }
                }
                Some(Item::DeviceRemoved(device)) => {
                    seen.remove(&device);
                    // Its last readings go first, then the removal.
                    if !pending.is_empty() && !failing {
                        failing = !write_pending(backend.as_mut(), &mut pending, &stats).await;
                    }
                    if let Err(e) = backend.device_removed(&device).await {
                        tracing::warn!(backend = name, device = %device, error = %e, "could not process the device's removal");
                    }
                }
                Some(Item::DevicesConfigured(devices)) => {
                    if let Err(e) = backend.devices_configured(&devices).await {
                        tracing::warn!(backend = name, error = %e, "could not process the configured devices");
                    }
                }
                Some(Item::DeviceMetrics(device, metrics)) => {
                    if let Err(e) = backend.device_metrics(&device, metrics.as_deref()).await {
                        tracing::warn!(backend = name, device = %device, error = %e, "could not process the device's metrics");
                    }
                }
                None => break,
            },
            _ = ticker.tick() => {
                if !pending.is_empty() || !peaks.is_empty() {
                    failing = !write_everything(backend.as_mut(), &mut pending, &mut peaks, &stats).await;
                }
                // A failing backend stops receiving, so it would never see the
                // queue close; notice it here.
                if failing && rx.is_closed() {
                    break;
                }
            }
        }
    }
    // Every sender is gone: the monitors have stopped. Write out what is left.
    while let Ok(item) = rx.try_recv() {
        match item {
            Item::Readings(batch) => {
                stats.queued_batches.fetch_sub(1, Ordering::Relaxed);
                pending.extend(batch.iter().cloned());
            }
            Item::MonthlyPeaks(p) => {
                peaks.insert(p.device.clone(), p);
            }
            Item::DeviceRemoved(_) | Item::DevicesConfigured(_) | Item::DeviceMetrics(..) => {}
        }
    }
    for attempt in 1..=SHUTDOWN_ATTEMPTS {
        if write_everything(backend.as_mut(), &mut pending, &mut peaks, &stats).await {
            break;
        }
        if attempt < SHUTDOWN_ATTEMPTS {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    if !pending.is_empty() {
        BackendStats::add(&stats.dropped_rejected, pending.len() as u64);
        tracing::error!(
            backend = name,
            lost = pending.len(),
            "shutdown: could not write the last readings"
        );
    }
    if !peaks.is_empty() {
        tracing::error!(
            backend = name,
            devices = peaks.len(),
            "shutdown: could not write the last monthly peaks (the meter sends them again after the start)"
        );
    }
    if let Err(e) = backend.flush().await {
        tracing::error!(backend = name, error = %e, "shutdown: flush failed");
    }
    tracing::debug!(
        backend = name,
        written = BackendStats::get(&stats.written),
        "backend stopped"
    );
}

type PendingPeaks = std::collections::BTreeMap<DeviceId, Arc<MonthlyPeaks>>;

/// Writes the pending readings, then the pending monthly peaks; returns whether
/// both are now empty. Peaks a transient failure refused stay for the next attempt.
async fn write_everything(
    backend: &mut dyn Backend,
    pending: &mut Vec<Reading>,
    peaks: &mut PendingPeaks,
    stats: &BackendStats,
) -> bool {
    if !pending.is_empty() && !write_pending(backend, pending, stats).await {
        return false;
    }
    while let Some((device, p)) = peaks.pop_first() {
        if let Err(e) = backend.write_monthly_peaks(&p).await {
            BackendStats::add(&stats.write_errors, 1);
            match e {
                BackendError::Permanent { .. } => {
                    tracing::error!(backend = backend.name(), device = %device, error = %e, "backend refused the monthly peaks for good: dropped");
                }
                BackendError::Transient { .. } => {
                    if stats.writes.failed(e.to_string()) {
                        tracing::warn!(backend = backend.name(), device = %device, error = %e, "writing the monthly peaks failed; keeping them and retrying");
                    }
                    peaks.insert(device, p);
                    return false;
                }
            }
        }
    }
    true
}

/// Writes `pending`; returns whether it is now empty. A permanent refusal drops the
/// batch (counted), a transient failure keeps it for the next attempt.
async fn write_pending(backend: &mut dyn Backend, pending: &mut Vec<Reading>, stats: &BackendStats) -> bool {
    let started = tokio::time::Instant::now();
    let result = backend.write(pending).await;
    stats.observe_write(started.elapsed());
    match result {
        Ok(()) => {
            BackendStats::add(&stats.written, pending.len() as u64);
            stats.add_merged(backend.take_merged());
            pending.clear();
            if let Some(outage) = stats.writes.delivered() {
                tracing::info!(
                    backend = backend.name(),
                    after = %crate::backends::health::duration_words(outage),
                    "backend writes again"
                );
            }
            true
        }
        Err(e) => {
            BackendStats::add(&stats.write_errors, 1);
            let first = stats.writes.failed(e.to_string());
            match e {
                BackendError::Permanent { .. } => {
                    tracing::error!(backend = backend.name(), error = %e, dropped = pending.len(), "backend refused a batch for good: dropped");
                    BackendStats::add(&stats.dropped_rejected, pending.len() as u64);
                    pending.clear();
                    true
                }
                BackendError::Transient { .. } => {
                    if first {
                        tracing::warn!(backend = backend.name(), error = %e, waiting = pending.len(), "backend write failed; keeping the readings and retrying");
                    }
                    false
                }
            }
        }
    }
}
