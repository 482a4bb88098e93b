//! The daemon: opens the backends, starts the router and the supervisor, applies
//! config changes live, and shuts down in order — monitors first, then the
//! backends drain and flush.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backends::sqlite::cost::{CostJob, CostTask};
use crate::backends::{self, BackendError};
use crate::config::{self, BaseConfig, Config, DeviceConfig, DeviceSet};
use crate::daemon::alerts::{AlertSetup, Alerts};
use crate::daemon::jobs::{start_downsampler, start_guard, stop_api, stop_guard};
use crate::daemon::live::{BackendStats, SharedStatus, Status};
use crate::daemon::prepare::{prepare, Prepared, PreparedApi, ReloadError};
use crate::daemon::reload::DeviceDiff;
use crate::daemon::router::Router;
use crate::daemon::supervisor::{Shared, Supervisor};
use crate::daemon::watch::ConfigWatcher;
use crate::host::clock::SharedClock;
use crate::reading::DeviceId;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot open backend: {0}")]
    Backend(#[from] BackendError),
}

#[derive(Debug)]
pub struct Daemon {
    config_path: PathBuf,
    base: BaseConfig,
    /// The last good config of every device file, enabled or not.
    known: BTreeMap<DeviceId, DeviceConfig>,
    /// The error of every device file that failed at the last apply, by id.
    failed: BTreeMap<String, String>,
    supervisor: Supervisor,
    router: Router,
    backend_tasks: BTreeMap<&'static str, JoinHandle<()>>,
    status: SharedStatus,
    reload_requests: (mpsc::Sender<()>, mpsc::Receiver<()>),
    reloads: broadcast::Sender<ReloadSummary>,
    clock: SharedClock,
    /// The disk guard task (see `retention.rs`), when enabled with SQLite.
    guard: Option<(CancellationToken, JoinHandle<()>)>,
    /// The downsampling task (see `downsample.rs`), when enabled with SQLite.
    downsampler: Option<(CancellationToken, JoinHandle<()>)>,
    /// The cost job (see `backends/sqlite/cost`) with the jobs and database it runs
    /// on, when a device has a `tariff:` and SQLite is configured.
    costs: CostTask,
    /// The status API's address and its stop switch, when it runs.
    api: Option<(std::net::SocketAddr, CancellationToken, JoinHandle<()>)>,
    /// The alert evaluator (`alerts.rs`).
    alerts: Alerts,
    /// Rule files that failed at the last apply, with their error, so a catch-up
    /// does not log them again.
    alert_errors: Vec<String>,
}

/// A way to reach a running daemon: its status, and reload requests (SIGHUP).
#[derive(Debug, Clone)]
pub struct DaemonHandle {
    pub status: SharedStatus,
    reload: mpsc::Sender<()>,
    reloads: broadcast::Sender<ReloadSummary>,
}

impl DaemonHandle {
    /// Asks for a reload of every config file, as SIGHUP does.
    pub fn request_reload(&self) {
        let _ = self.reload.try_send(());
    }

    /// Every reload's summary from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ReloadSummary> {
        self.reloads.subscribe()
    }
}

/// What a reload did, by device id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
    /// Files with errors: their devices keep their last good config, if any.
    pub failed: Vec<String>,
    /// Backends rebuilt because their settings changed (or added / removed).
    pub backends: Vec<String>,
    /// The base config could not be loaded: the old one stays in force.
    pub base_error: Option<String>,
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
        let router = Router::with_events(status.events.clone());
        let mut backend_tasks = BTreeMap::new();
        for backend in backends::open_all(&config.base).await? {
            let name = backend.name();
            backend_tasks.insert(name, router.add(backend, &status, None));
        }
        let guard = start_guard(&config.base, &clock, &status);
        let downsampler = start_downsampler(&config.base, &clock);
        let alert_set = config.base.load_alerts(&config::process_env);
        let alert_errors = log_alert_errors(&alert_set, &[]);
        let alerts = Alerts::start(
            AlertSetup::new(&config.base, &alert_set),
            &router,
            status.clone(),
            clock.clone(),
        );
        let shared = Shared {
            router: router.clone(),
            status: status.clone(),
            clock: clock.clone(),
            data_dir: config.base.data_dir.clone(),
            counters: config.base.counters.clone(),
            epochs: crate::energy::ingest::CounterIngest::open_store(&config.base.data_dir, &config.base.counters),
        };
        let mut daemon = Daemon {
            config_path: config.path,
            base: config.base,
            known: BTreeMap::new(),
            failed: BTreeMap::new(),
            supervisor: Supervisor::new(shared),
            router,
            backend_tasks,
            status,
            reload_requests: mpsc::channel(1),
            reloads: broadcast::channel(16).0,
            clock,
            guard,
            downsampler,
            costs: CostTask::default(),
            api: None,
            alerts,
            alert_errors,
        };
        daemon.api = daemon.start_api().await;
        daemon.apply_devices(config.devices, false).await;
        Ok(daemon)
    }

    /// The status API is a window on the daemon, not part of what it must do: a
    /// taken port is logged, and the devices run regardless.
    async fn start_api(&self) -> Option<(std::net::SocketAddr, CancellationToken, JoinHandle<()>)> {
        if !self.base.api.enabled {
            return None;
        }
        let state = match crate::api::ApiState::new(&self.base, self.status.clone()) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!("status API not started: {e}");
                return None;
            }
        };
        let stop = CancellationToken::new();
        match crate::api::serve(self.base.api.listen, state, stop.clone()).await {
            Ok((addr, task)) => Some((addr, stop, task)),
            Err(e) => {
                tracing::error!("status API not started: {e}; the devices run regardless");
                None
            }
        }
    }

    /// Where the status API listens, if it runs.
    pub fn api_addr(&self) -> Option<std::net::SocketAddr> {
        self.api.as_ref().map(|(addr, _, _)| *addr)
    }

    fn status_line(&self) -> String {
        let devices = self.status.devices();
        let failing = devices.values().filter(|d| d.consecutive_failures > 0).count();
        let readings: u64 = devices.values().map(|d| d.readings).sum();
        format!(
            "STATUS={} devices ({failing} failing), {readings} readings",
            devices.len()
        )
    }

    pub fn handle(&self) -> DaemonHandle {
        DaemonHandle {
            status: self.status.clone(),
            reload: self.reload_requests.0.clone(),
            reloads: self.reloads.clone(),
        }
    }

    pub fn status(&self) -> &SharedStatus {
        &self.status
    }

    pub fn base(&self) -> &BaseConfig {
        &self.base
    }

    /// Runs until `shutdown`, applying config changes as files change or a reload
    /// is requested; then shuts down.
    pub async fn run(mut self, shutdown: CancellationToken) -> Summary {
        let mut watcher = self.start_watcher();
        // Files changed between the initial load and the watch starting would
        // otherwise go unseen until their next change.
        self.apply(Quiet::UnlessChanged).await;
        let notifier = crate::daemon::systemd::Notifier::from_env();
        notifier.send(&format!("READY=1\n{}", self.status_line()));
        // Pings come from this loop itself: if it hangs, they stop, and systemd
        // restarts us.
        let mut watchdog = notifier.watchdog_interval().map(tokio::time::interval);
        let mut status_tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick(&mut watchdog) => notifier.send("WATCHDOG=1"),
                _ = status_tick.tick(), if notifier.enabled() => notifier.send(&self.status_line()),
                Some(()) = self.reload_requests.1.recv() => { self.reload().await; }
                Some(()) = changed(&mut watcher) => {
                    let devices_dir = self.base.devices_dir.clone();
                    self.reload().await;
                    if self.base.devices_dir != devices_dir {
                        watcher = self.start_watcher();
                    }
                }
            }
            self.supervisor.reap();
        }
        notifier.send("STOPPING=1");
        self.shutdown().await
    }

    fn start_watcher(&self) -> Option<ConfigWatcher> {
        if !self.base.watch.enabled {
            return None;
        }
        match ConfigWatcher::start(&self.config_path, &self.base.devices_dir, self.base.watch.debounce) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.base.devices_dir.display(), "cannot watch the config files; changes apply on SIGHUP only");
                None
            }
        }
    }

    /// Reloads config.yaml and every device file and applies the difference: only
    /// what changed is stopped, rebuilt or started.
    pub async fn reload(&mut self) -> ReloadSummary {
        self.apply(Quiet::Never).await
    }

    async fn apply(&mut self, quiet: Quiet) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        match self.reload_base().await {
            Ok(rebuilt) => summary.backends = rebuilt,
            Err(e) => {
                tracing::error!(
                    config = %self.config_path.display(),
                    "reload failed: {e}; nothing of it is applied, everything runs on the previous config.yaml"
                );
                summary.base_error = Some(e.to_string());
            }
        }
        let alert_set = self.base.load_alerts(&config::process_env);
        self.alert_errors = log_alert_errors(&alert_set, &self.alert_errors);
        self.alerts.update(AlertSetup::new(&self.base, &alert_set));
        let set = self.base.load_devices(&config::process_env);
        let failed_before: Vec<String> = self.failed.keys().cloned().collect();
        let devices = self.apply_devices(set, quiet == Quiet::UnlessChanged).await;
        summary.added = devices.added;
        summary.changed = devices.changed;
        summary.removed = devices.removed;
        summary.unchanged = devices.unchanged;
        summary.failed = devices.failed;
        let nothing = summary.added.is_empty()
            && summary.changed.is_empty()
            && summary.removed.is_empty()
            && summary.backends.is_empty()
            && summary.base_error.is_none()
            && summary.failed == failed_before;
        if quiet == Quiet::UnlessChanged && nothing {
            return summary;
        }
        tracing::info!(
            failed = summary.failed.len(),
            backends_rebuilt = summary.backends.len(),
            config_yaml = if summary.base_error.is_some() { "failed" } else { "ok" },
            "reload: +{} ~{} -{} ={}",
            summary.added.len(),
            summary.changed.len(),
            summary.removed.len(),
            summary.unchanged
        );
        self.status.base_reloaded(summary.base_error.clone());
        let counter = if summary.base_error.is_some() || !summary.failed.is_empty() {
            &self.status.reloads_failed
        } else {
            &self.status.reloads_ok
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.reloads.send(summary.clone());
        summary
    }

    /// Loads config.yaml and, if it changed, opens what it needs (`prepare.rs`)
    /// and only then applies it, whole: on any failure the old config stays in
    /// force, untouched.
    async fn reload_base(&mut self) -> Result<Vec<String>, ReloadError> {
        let overrides = config::env::overrides(std::env::vars());
        let new = config::load_base(&self.config_path, &config::process_env, &overrides)?;
        if new == self.base {
            return Ok(Vec::new());
        }
        let prepared = prepare(&self.base, new, &self.status).await?;
        Ok(self.apply_base(prepared).await)
    }

    /// Applies a prepared base config. A rebuilt backend takes the route at once,
    /// and starts writing after the old one has written out its queue — no
    /// reading lost, never two writers on one file.
    async fn apply_base(&mut self, prepared: Prepared) -> Vec<String> {
        let Prepared {
            base,
            diff,
            backends,
            api,
        } = prepared;
        let mut rebuilt = Vec::new();
        for (name, opened) in backends {
            let previous = self.backend_tasks.remove(name);
            match opened {
                Some(backend) => {
                    self.backend_tasks
                        .insert(name, self.router.add(backend, &self.status, previous));
                    tracing::info!(backend = name, "backend settings changed: rebuilt");
                }
                None => {
                    self.router.remove(name);
                    if let Some(task) = previous {
                        let _ = task.await;
                    }
                    tracing::info!(backend = name, "backend removed");
                }
            }
            rebuilt.push(name.to_owned());
        }
        if diff.needs_restart {
            tracing::warn!("logging settings changed: they apply after a restart");
        }
        self.base = base;
        if diff.disk_guard {
            stop_guard(self.guard.take()).await;
            self.guard = start_guard(&self.base, &self.clock, &self.status);
        }
        if diff.downsampler {
            stop_guard(self.downsampler.take()).await;
            self.downsampler = start_downsampler(&self.base, &self.clock);
        }
        self.refresh_costs().await;
        self.apply_api(api).await;
        rebuilt
    }

    /// Stops the old status API server and starts the prepared one. Only a
    /// restart on the same address binds here (the old server held it until
    /// now): if another process took the port in between, that is logged.
    async fn apply_api(&mut self, api: PreparedApi) {
        let PreparedApi::Start { state, listener } = api else {
            if matches!(api, PreparedApi::Stop) {
                stop_api(self.api.take()).await;
                tracing::info!("status API stopped");
            }
            return;
        };
        stop_api(self.api.take()).await;
        let listener = match listener {
            Some(listener) => listener,
            None => match crate::api::bind(self.base.api.listen).await {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!("status API not restarted: {e}; the devices run regardless");
                    return;
                }
            },
        };
        let stop = CancellationToken::new();
        match crate::api::serve_on(listener, *state, stop.clone()) {
            Ok((addr, task)) => self.api = Some((addr, stop, task)),
            Err(e) => tracing::error!("status API not restarted: {e}; the devices run regardless"),
        }
    }

    /// `catching_up`: the start-up catch-up, which must not log again what the
    /// initial load just logged.
    async fn apply_devices(&mut self, set: DeviceSet, catching_up: bool) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let mut failed_ids = BTreeSet::new();
        let previous = std::mem::take(&mut self.failed);
        let mut shown = BTreeMap::new();
        for error in &set.errors {
            let id = error
                .file()
                .and_then(|f| f.file_stem())
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let text = error.to_string();
            let running = self.supervisor.is_running(&id);
            if catching_up && previous.get(&id) == Some(&text) {
            } else if running {
                tracing::error!("{error}; the device keeps running with its last good config");
            } else {
                tracing::error!("{error}; this device is not started, the others run");
            }
            shown.insert(id.clone(), config_error_shown(&text, running));
            summary.failed.push(id.clone());
            self.failed.insert(id.clone(), text);
            failed_ids.insert(id);
        }
        let diff = DeviceDiff::new(&self.known, &set.devices, &failed_ids);
        for id in diff.stop {
            self.supervisor.stop(&id).await;
            self.router.device_removed(&id);
            self.known.remove(&id);
            summary.removed.push(id.to_string());
        }
        summary.unchanged = diff.unchanged.len();
        for id in &diff.restart {
            // The old task must have let go of its port before the new one opens it.
            self.supervisor.stop(id).await;
            summary.changed.push(id.to_string());
        }
        summary.added = diff.start.iter().map(|id| id.to_string()).collect();
        let to_start: BTreeSet<&DeviceId> = diff.restart.iter().chain(&diff.start).collect();
        for (id, new) in set.devices {
            if to_start.contains(&id) {
                self.supervisor.start(new.clone());
            }
            self.known.insert(id, new);
        }
        self.status.set_config_errors(shown);
        let configured: Vec<DeviceId> = self
            .known
            .keys()
            .cloned()
            .chain(self.failed.keys().map(|id| DeviceId::from(id.as_str())))
            .collect();
        self.router.devices_configured(configured);
        self.refresh_costs().await;
        summary
    }

    /// (Re)starts the cost job when its devices, tariffs or database changed.
    async fn refresh_costs(&mut self) {
        let db = self
            .base
            .backends
            .sqlite
            .as_ref()
            .map(|s| self.base.data_dir.join(&s.path));
        self.costs
            .refresh(db, CostJob::of(self.known.values()), &self.clock)
            .await;
    }

    /// Stops the monitors, lets every backend write out its queue and flush, and
    /// reports what the run did. Nothing produced before this call is lost unless a
    /// backend keeps failing through its final attempts (then it is logged).
    pub async fn shutdown(self) -> Summary {
        let Daemon {
            supervisor,
            router,
            backend_tasks,
            status,
            guard,
            downsampler,
            mut costs,
            alerts,
            ..
        } = self;
        alerts.shutdown().await;
        stop_guard(guard).await;
        stop_guard(downsampler).await;
        costs.stop().await;
        supervisor.shutdown().await;
        router.close_all();
        for (name, task) in backend_tasks {
            if let Err(e) = task.await {
                tracing::error!(backend = name, error = %e, "a backend task panicked");
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

/// Logs each broken rule file once (not again while it stays broken as it was):
/// its rule is not evaluated, the others are. Returns the errors as shown.
fn log_alert_errors(set: &crate::config::alerts::AlertSet, before: &[String]) -> Vec<String> {
    let now: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
    for error in now.iter().filter(|e| !before.contains(e)) {
        tracing::error!("{error}; this alert rule is not evaluated, the others are");
    }
    now
}

/// A broken device file as /health, /api/devices and the page show it: the error
/// and what its device does meanwhile.
fn config_error_shown(error: &str, running: bool) -> String {
    if running {
        format!("{error}: running the previous settings")
    } else {
        format!("{error}: not started")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quiet {
    Never,
    UnlessChanged,
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn changed(watcher: &mut Option<ConfigWatcher>) -> Option<()> {
    match watcher {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}
