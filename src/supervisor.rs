//! The supervisor runs one task per enabled device, each under a child
//! cancellation token, in a `JoinSet`. A failing device retries with backoff and
//! jitter, then its circuit breaker opens; nothing it does touches another device.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::DeviceConfig;
use crate::monitors::{self, MonitorContext, MonitorError};
use crate::reading::DeviceId;
use crate::retry::{Backoff, BreakerState, CircuitBreaker, Transition};
use crate::router::Router;
use crate::status::SharedStatus;

/// What every device task needs from the daemon.
#[derive(Clone)]
pub struct Shared {
    pub router: Router,
    pub status: SharedStatus,
    pub clock: SharedClock,
    pub data_dir: PathBuf,
}

struct Running {
    config: DeviceConfig,
    token: CancellationToken,
    /// Resolves (with an error) when the task has ended and dropped its resources.
    done: oneshot::Receiver<()>,
}

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
        self.running.values().map(|r| &r.config)
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
        let task = DeviceTask {
            config: config.clone(),
            shared: self.shared.clone(),
            token: token.clone(),
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
    config: DeviceConfig,
    shared: Shared,
    token: CancellationToken,
}

/// A read that takes longer than this past its poll interval is abandoned as a
/// link failure: a hung device must not hang its task.
const READ_GRACE: Duration = Duration::from_secs(60);
/// First retry delay after a failed read.
const FIRST_RETRY: Duration = Duration::from_secs(1);

impl DeviceTask {
    async fn run(self) {
        let id = self.config.id.clone();
        let ctx = MonitorContext {
            id: id.clone(),
            clock: self.shared.clock.clone(),
            data_dir: self.shared.data_dir.clone(),
        };
        let mut monitor = match monitors::build(&self.config, ctx) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(device = %id, error = %e, "device cannot start");
                self.shared
                    .status
                    .update_device(&id, |s| s.last_error = Some(e.to_string()));
                return;
            }
        };
        let poll = self.config.poll_interval();
        let read_timeout = poll + READ_GRACE;
        let mut ticker = tokio::time::interval(poll.max(Duration::from_millis(1)));
        // Delay, not Burst: after a stall the device is read once, not N times.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut backoff = Backoff::new(
            FIRST_RETRY.min(poll.max(Duration::from_millis(100))),
            self.config.common.max_backoff,
        );
        let mut breaker = CircuitBreaker::new(
            self.config.common.failure_threshold,
            self.config.common.breaker_cooldown,
        );
        let wants = |backend: &str| self.config.sends_to(backend);

        loop {
            tokio::select! {
                biased;
                _ = self.token.cancelled() => break,
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
                    r.unwrap_or_else(|_| Err(MonitorError::Link(format!("no answer within {}", humantime::format_duration(read_timeout)))))
                }
            };
            let protocol_errors = monitor.protocol_errors();
            if !protocol_errors.is_empty() {
                self.shared
                    .status
                    .update_device(&id, |s| s.protocol_errors.extend(protocol_errors));
            }
            match result {
                Ok(mut readings) => {
                    let device_type = self.config.kind.type_name();
                    for r in &mut readings {
                        r.device_type = device_type;
                    }
                    let transition = breaker.on_success();
                    self.log_transition(transition, None);
                    backoff.reset();
                    let count = readings.len() as u64;
                    let last = readings.iter().map(|r| r.timestamp).max();
                    self.shared.status.update_device(&id, |s| {
                        for r in &readings {
                            let latest = crate::status::Latest {
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
                    });
                    self.shared.router.dispatch(readings, wants);
                }
                Err(e) => {
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
                    let wait =
                        wait_after_failure(&e, breaker.state(), self.config.common.breaker_cooldown, &mut backoff);
                    tokio::select! {
                        biased;
                        _ = self.token.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    ticker.reset_immediately();
                }
            }
        }
        tracing::debug!(device = %id, "device task ended");
    }

    fn log_transition(&self, transition: Option<Transition>, error: Option<&MonitorError>) {
        let Some(t) = transition else { return };
        let id = &self.config.id;
        let cooldown = humantime::format_duration(self.config.common.breaker_cooldown);
        match (t.from, t.to) {
            (BreakerState::Closed, BreakerState::Open) => tracing::warn!(
                device = %id,
                error = error.map(tracing::field::display),
                "circuit breaker open after {} consecutive failures; probing again every {cooldown}",
                self.config.common.failure_threshold
            ),
            (_, BreakerState::Closed) => tracing::info!(device = %id, "device recovered; circuit breaker closed"),
            (from, to) => tracing::debug!(device = %id, from = from.as_str(), to = to.as_str(), "circuit breaker"),
        }
    }
}

/// How long a device task waits after a failed read: its backoff, or the breaker's
/// cool-down once open — and never less than a rate-limited service asked for, so
/// a 429 with `Retry-After: 900` is not probed again after a 1 s backoff.
fn wait_after_failure(
    error: &MonitorError,
    breaker: BreakerState,
    cooldown: Duration,
    backoff: &mut Backoff,
) -> Duration {
    let wait = if breaker == BreakerState::Open {
        cooldown
    } else {
        backoff.next_delay()
    };
    error.retry_after().map_or(wait, |asked| wait.max(asked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limit_is_waited_out_whatever_the_backoff_says() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300)).with_seed(7);
        let limited = MonitorError::RateLimited {
            message: "429".into(),
            retry_after: Duration::from_secs(900),
        };
        let link = MonitorError::Link("refused".into());
        let cooldown = Duration::from_secs(300);
        assert_eq!(
            wait_after_failure(&limited, BreakerState::Closed, cooldown, &mut backoff),
            Duration::from_secs(900)
        );
        assert_eq!(
            wait_after_failure(&limited, BreakerState::Open, cooldown, &mut backoff),
            Duration::from_secs(900)
        );
        // A short Retry-After does not shorten a longer backoff or cool-down.
        let brief = MonitorError::RateLimited {
            message: "429".into(),
            retry_after: Duration::from_secs(2),
        };
        assert_eq!(
            wait_after_failure(&brief, BreakerState::Open, cooldown, &mut backoff),
            cooldown
        );
        let plain = wait_after_failure(&link, BreakerState::Closed, cooldown, &mut backoff);
        assert!(plain <= Duration::from_secs(8), "{plain:?}");
        assert_eq!(
            wait_after_failure(&link, BreakerState::Open, cooldown, &mut backoff),
            cooldown
        );
    }
}
