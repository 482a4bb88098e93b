//! The supervisor runs one task per enabled device, each under a child
//! cancellation token, in a `JoinSet`. A failing device retries with backoff and
//! jitter, then its circuit breaker opens; nothing it does touches another device.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::DeviceConfig;
use crate::daemon::live::SharedStatus;
use crate::daemon::retry::{Backoff, BreakerState, CircuitBreaker, Transition};
use crate::daemon::router::Router;
use crate::energy::ingest::CounterIngest;
use crate::host::clock::SharedClock;
use crate::monitors::control::WriteCommand;
use crate::monitors::{Monitor, MonitorError, WriteError};
use crate::reading::DeviceId;

/// What every device task needs from the daemon.
#[derive(Debug, Clone)]
pub struct Shared {
    pub router: Router,
    pub status: SharedStatus,
    pub clock: SharedClock,
    pub data_dir: PathBuf,
    /// How counters are cleaned before the router (`counters:` in config.yaml).
    pub counters: crate::energy::counters::CounterSettings,
    /// The epochs file, one connection for every device task.
    pub epochs: Option<crate::energy::epochs::SharedEpochs>,
}

#[derive(Debug)]
struct Running {
    /// Shared with the device's task: one copy of a config per device, and the
    /// task's future (alive for as long as the device runs) holds a pointer, not
    /// the whole enum of every device type's settings.
    config: Arc<DeviceConfig>,
    token: CancellationToken,
    /// Resolves (with an error) when the task has ended and dropped its resources.
    done: oneshot::Receiver<()>,
}

#[derive(Debug)]
pub struct Supervisor {
    root: CancellationToken,
    shared: Shared,
    tasks: JoinSet<DeviceId>,
    running: BTreeMap<DeviceId, Running>,
}

impl Supervisor {
    pub fn new(shared: Shared) -> Self {
        Supervisor {
            root: CancellationToken::new(),
            shared,
            tasks: JoinSet::new(),
            running: BTreeMap::new(),
        }
    }

    pub fn running(&self) -> impl Iterator<Item = &DeviceConfig> {
        self.running.values().map(|r| &*r.config)
    }

    pub fn is_running(&self, id: &str) -> bool {
        self.running.contains_key(id)
    }

    /// Starts a device (a disabled one is only logged).
    pub fn start(&mut self, config: DeviceConfig) {
        if !config.common.enabled {
            tracing::info!(device = %config.id, "device disabled in its file: not started");
            return;
        }
        let token = self.root.child_token();
        let (done_tx, done) = oneshot::channel();
        let id = config.id.clone();
        self.shared
            .status
            .device_started(&id, config.kind.type_name(), config.poll_interval());
        // Writes reach the task that owns the device's link, never a second
        // connection; only a file that allows writes gets a channel.
        let commands = config.kind.allows_writes().then(|| {
            let (sender, commands) = mpsc::channel(WRITE_QUEUE);
            self.shared.status.set_control(&id, sender);
            commands
        });
        let config = Arc::new(config);
        let task = DeviceTask {
            config: config.clone(),
            shared: self.shared.clone(),
            token: token.clone(),
            commands,
        };
        self.tasks.spawn(async move {
            let id = task.config.id.clone();
            task.run().await;
            drop(done_tx);
            id
        });
        tracing::info!(device = %id, r#type = config.kind.type_name(), poll_interval = ?config.poll_interval(), "device started");
        self.running.insert(id, Running { config, token, done });
    }

    /// Stops a device and waits until its task has ended, so a serial port or bus
    /// it held can be opened again.
    pub async fn stop(&mut self, id: &str) {
        if let Some(running) = self.running.remove(id) {
            running.token.cancel();
            let _ = running.done.await;
            self.shared.status.device_removed(&running.config.id);
            tracing::info!(device = %id, "device stopped");
        }
    }

    /// Reaps tasks that ended on their own (a monitor that could not be built).
    pub fn reap(&mut self) {
        while let Some(result) = self.tasks.try_join_next() {
            if let Err(e) = result {
                tracing::error!(error = %e, "a device task panicked");
            }
        }
    }

    /// Stops every device and waits for all of them.
    pub async fn shutdown(mut self) {
        self.root.cancel();
        while let Some(result) = self.tasks.join_next().await {
            if let Err(e) = result {
                tracing::error!(error = %e, "a device task panicked");
            }
        }
    }
}

struct DeviceTask {
    config: Arc<DeviceConfig>,
    shared: Shared,
    token: CancellationToken,
    /// Writes from the API (docs/control.md), when the file allows them.
    commands: Option<mpsc::Receiver<WriteCommand>>,
}

/// Writes waiting for a device task; more are refused as busy by the API.
const WRITE_QUEUE: usize = 4;
/// A write (read old value, write, read back) that takes longer is a link failure.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The next write for the task, or never when its file allows none.
async fn next_command(commands: &mut Option<mpsc::Receiver<WriteCommand>>) -> Option<WriteCommand> {
    match commands {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

/// A read that takes longer than this past its poll interval is abandoned as a
/// link failure: a hung device must not hang its task.
const READ_GRACE: Duration = Duration::from_secs(60);
/// Shortest first retry: a P1 meter at `poll_interval: 0s` is not reconnected in a
/// busy loop.
const MIN_FIRST_RETRY: Duration = Duration::from_secs(1);

impl DeviceTask {
    async fn run(self) {
        let id = self.config.id.clone();
        let monitor = match self
            .config
            .build_monitor(self.shared.clock.clone(), self.shared.data_dir.clone())
        {
            Ok(m) => {
                let declared = m
                    .metrics_complete()
                    .then(|| m.metrics().iter().map(|spec| spec.name.to_owned()).collect());
                self.shared.router.device_metrics(&id, declared);
                m
            }
            Err(e) => {
                tracing::error!(device = %id, error = %e, "device cannot start");
                self.shared
                    .status
                    .update_device(&id, |s| s.last_error = Some(e.to_string()));
                return;
            }
        };
        self.drive(monitor).await;
    }

    /// Reads `monitor` every poll interval until cancelled. After a failure the
    /// next read waits the backoff (from the poll interval up to `max_backoff`); an
    /// open breaker waits `breaker_cooldown` where one applies (cloud services),
    /// else it keeps probing on the backoff, so a local meter that comes back is
    /// read within `max_backoff`.
    async fn drive(mut self, mut monitor: Box<dyn Monitor>) {
        let mut commands = self.commands.take();
        let id = self.config.id.clone();
        let poll = self.config.poll_interval();
        let read_timeout = poll + READ_GRACE;
        let mut ticker = tokio::time::interval(poll.max(Duration::from_millis(1)));
        // Delay, not Burst: after a stall the device is read once, not N times.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let max_backoff = self.config.max_backoff();
        let cooldown = self.config.breaker_cooldown();
        let mut backoff = Backoff::new(poll.max(MIN_FIRST_RETRY).min(max_backoff), max_backoff);
        let mut breaker = CircuitBreaker::new(self.config.common.failure_threshold, cooldown.unwrap_or(Duration::ZERO));
        let wants = |backend: &str| self.config.sends_to(backend);
        // When the current run of failed reads began, for the recovery line.
        let mut failing_since: Option<Instant> = None;
        let mut counters = CounterIngest::open(id.clone(), self.shared.epochs.clone(), self.shared.counters.clone());

        'polls: loop {
            tokio::select! {
                biased;
                _ = self.token.cancelled() => break,
                Some(command) = next_command(&mut commands) => {
                    self.write(monitor.as_mut(), command).await;
                    continue;
                }
                _ = ticker.tick() => {}
            }
            let (allowed, transition) = breaker.allow(Instant::now());
            self.log_transition(transition, None);
            if !allowed {
                continue;
            }
            let result = tokio::select! {
                biased;
                _ = self.token.cancelled() => break,
                r = tokio::time::timeout(read_timeout, monitor.read()) => {
                    r.unwrap_or_else(|_| Err(MonitorError::link(format!("no answer within {}", humantime::format_duration(read_timeout)))))
                }
            };
            let protocol_errors = monitor.protocol_errors();
            if !protocol_errors.is_empty() {
                self.shared
                    .status
                    .update_device(&id, |s| s.protocol_errors.extend(protocol_errors));
            }
            let service_metrics = monitor.service_metrics();
            if !service_metrics.is_empty() {
                self.shared
                    .status
                    .update_device(&id, |s| s.service_metrics = service_metrics);
            }
            match result {
                Ok(mut readings) => {
                    let device_type = self.config.kind.type_name();
                    for r in &mut readings {
                        r.device_type = device_type;
                    }
                    let identity = monitor
                        .identity()
                        .or_else(|| crate::energy::cleaner::identity_in(&readings));
                    let (readings, counted) = counters.apply(readings, identity.as_deref());
                    let failed_reads = breaker.consecutive_failures();
                    let transition = breaker.on_success();
                    self.log_transition(transition, None);
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            device = %id,
                            failed_reads,
                            "device answers again after {failed_reads} failed reads over {}",
                            humantime::format_duration(round_to_ms(since.elapsed()))
                        );
                    }
                    backoff.reset();
                    let count = readings.len() as u64;
                    let last = readings.iter().map(|r| r.timestamp).max();
                    self.shared.status.update_device(&id, |s| {
                        for r in &readings {
                            let latest = crate::daemon::live::Latest {
                                value: r.value.clone(),
                                unit: r.unit.symbol(),
                                kind: r.kind.as_str(),
                                timestamp: r.timestamp,
                            };
                            s.latest.insert(r.metric.to_string(), latest);
                        }
                        s.polls_ok += 1;
                        s.readings += count;
                        s.consecutive_failures = 0;
                        s.breaker = BreakerState::Closed;
                        s.last_reading = last.or(s.last_reading);
                        s.counter_glitches += counted.glitches;
                        s.counter_epochs += counted.epochs;
                    });
                    self.shared.router.dispatch(readings, wants);
                    if let Some(peaks) = monitor.take_monthly_peaks() {
                        let peaks = std::sync::Arc::new(peaks);
                        self.shared
                            .status
                            .update_device(&id, |s| s.monthly_peaks = Some(peaks.clone()));
                        self.shared.router.dispatch_monthly_peaks(peaks, wants);
                    }
                }
                Err(e) => {
                    failing_since.get_or_insert_with(Instant::now);
                    let transition = breaker.on_failure(Instant::now());
                    let failures = breaker.consecutive_failures();
                    self.shared.status.update_device(&id, |s| {
                        s.polls_failed += 1;
                        s.consecutive_failures = failures;
                        s.breaker = breaker.state();
                        s.last_error = Some(e.to_string());
                        *s.errors_by_kind.entry(e.kind()).or_default() += 1;
                    });
                    if transition.is_some() {
                        self.log_transition(transition, Some(&e));
                    } else if failures == 1 {
                        tracing::warn!(device = %id, error = %e, "read failed; retrying with backoff");
                    } else {
                        tracing::debug!(device = %id, error = %e, failures, "read failed again");
                    }
                    let wait = wait_after_failure(&e, breaker.state(), cooldown, &mut backoff);
                    let until = Instant::now() + wait;
                    // A write is tried even while reads back off: its answer says
                    // whether the link is still down.
                    loop {
                        tokio::select! {
                            biased;
                            _ = self.token.cancelled() => break 'polls,
                            Some(command) = next_command(&mut commands) => self.write(monitor.as_mut(), command).await,
                            _ = tokio::time::sleep_until(until) => break,
                        }
                    }
                    ticker.reset_immediately();
                }
            }
        }
        tracing::debug!(device = %id, "device task ended");
    }

    /// Applies one write from the API and logs it for the audit trail: who, what,
    /// old → new, or why it was refused. The messages are stable for log searches.
    async fn write(&self, monitor: &mut dyn Monitor, command: WriteCommand) {
        let id = &self.config.id;
        let result = tokio::select! {
            biased;
            // Shutdown does not wait for a slow device; the client hears why.
            _ = self.token.cancelled() => Err(WriteError::Gone),
            r = tokio::time::timeout(WRITE_TIMEOUT, monitor.write(&command.point, command.value)) => {
                r.unwrap_or_else(|_| {
                    Err(WriteError::Link(MonitorError::link(format!(
                        "no answer within {}",
                        humantime::format_duration(WRITE_TIMEOUT)
                    ))))
                })
            }
        };
        match &result {
            Ok(w) => tracing::info!(
                device = %id,
                who = %command.who,
                point = %w.point,
                requested = command.value,
                old = %w.old.map_or("none".to_owned(), |v| v.to_string()),
                new = w.new,
                unit = w.unit,
                "device write applied"
            ),
            Err(e) => tracing::warn!(
                device = %id,
                who = %command.who,
                point = %command.point,
                requested = command.value,
                reason = %e.kind(),
                error = %e,
                "device write refused"
            ),
        }
        let _ = command.reply.send(result);
    }

    fn log_transition(&self, transition: Option<Transition>, error: Option<&MonitorError>) {
        let Some(t) = transition else { return };
        let id = &self.config.id;
        let probing = match self.config.breaker_cooldown() {
            Some(cooldown) => format!("probing again every {}", humantime::format_duration(cooldown)),
            None => format!(
                "probing again with backoff, at least every {}",
                humantime::format_duration(self.config.max_backoff())
            ),
        };
        match (t.from, t.to) {
            (BreakerState::Closed, BreakerState::Open) => tracing::warn!(
                device = %id,
                error = error.map(tracing::field::display),
                "circuit breaker open after {} consecutive failures; {probing}",
                self.config.common.failure_threshold
            ),
            (from, to) => tracing::debug!(device = %id, from = from.as_str(), to = to.as_str(), "circuit breaker"),
        }
    }
}

fn round_to_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().min(u128::from(u64::MAX)) as u64)
}

/// How long a device task waits after a failed read: its backoff, or the breaker's
/// cool-down once open where one applies — and never less than a rate-limited
/// service asked for, so a 429 with `Retry-After: 900` is not probed again after a
/// 1 s backoff.
fn wait_after_failure(
    error: &MonitorError,
    breaker: BreakerState,
    cooldown: Option<Duration>,
    backoff: &mut Backoff,
) -> Duration {
    let wait = match cooldown {
        Some(cooldown) if breaker == BreakerState::Open => cooldown,
        _ => backoff.next_delay(),
    };
    error.retry_after().map_or(wait, |asked| wait.max(asked))
}

#[cfg(test)]
mod tests;
