//! The alert evaluator: one task that sees every dispatched batch (the router's
//! tap), checks silence, backend health and pending durations on a tick, drives
//! each rule's state machine (`alerts::rule`) and hands what fires or resolves to
//! the MQTT publisher and the webhook senders — which only queue, so nothing here
//! waits on the network. Rules change live: a rule whose settings are unchanged
//! keeps its state through a reload.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::alerts::mqtt::Publisher;
use crate::alerts::rule::{levels, number, render, RuleState, Transition};
use crate::alerts::webhook;
use crate::alerts::{Condition, Event, WebhookConfig};
use crate::backends::health::duration_words;
use crate::backends::mqtt::MqttConfig;
use crate::config::alerts::{AlertSet, LoadedRule};
use crate::config::BaseConfig;
use crate::daemon::live::SharedStatus;
use crate::daemon::router::{Batch, Router};
use crate::host::clock::SharedClock;

/// Everything the evaluator runs on; a reload sends a new one.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSetup {
    pub rules: BTreeMap<String, LoadedRule>,
    pub webhooks: BTreeMap<String, WebhookConfig>,
    pub check_interval: Duration,
    /// The broker alert states go to (`None`: no MQTT backend, `alerts.mqtt:
    /// false`, or no rules).
    pub mqtt: Option<MqttConfig>,
}

impl AlertSetup {
    pub fn new(base: &BaseConfig, set: &AlertSet) -> AlertSetup {
        AlertSetup {
            rules: set.rules.clone(),
            webhooks: base.alerts.webhooks.clone(),
            check_interval: base.alerts.check_interval,
            // No rules, no connection: the broker sees mesura's one client as before.
            mqtt: base
                .backends
                .mqtt
                .clone()
                .filter(|_| base.alerts.mqtt && !set.rules.is_empty()),
        }
    }
}

/// The running evaluator.
#[derive(Debug)]
pub struct Alerts {
    setup: watch::Sender<AlertSetup>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// How long queued webhook messages may take to go out at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Batches the evaluator may lag behind before the router skips some for it.
const TAP_CAPACITY: usize = 1024;

impl Alerts {
    pub fn start(setup: AlertSetup, router: &Router, status: SharedStatus, clock: SharedClock) -> Alerts {
        let readings = router.tap(TAP_CAPACITY);
        let (tx, rx) = watch::channel(setup);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(rx, readings, status, clock, stop.clone()));
        Alerts { setup: tx, stop, task }
    }

    /// Applies new rules or delivery settings; unchanged rules keep their state.
    pub fn update(&self, setup: AlertSetup) {
        self.setup.send_if_modified(|old| {
            let changed = *old != setup;
            if changed {
                *old = setup;
            }
            changed
        });
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// One rule as the evaluator tracks it.
#[derive(Debug)]
struct Tracked {
    loaded: LoadedRule,
    state: RuleState,
    /// When the rule was (re)loaded: a device never heard from is silent since then.
    started: Instant,
    unit: Option<String>,
    /// A failing backend's newest error.
    error: Option<String>,
    /// The newest message sent, kept on the MQTT state when it is published again.
    message: Option<String>,
}

#[derive(Debug)]
struct Evaluator {
    setup: AlertSetup,
    rules: BTreeMap<String, Tracked>,
    /// When each device's newest batch arrived.
    last_seen: HashMap<String, Instant>,
    webhooks: BTreeMap<String, webhook::Sender>,
    /// Stops the current webhook senders (retries included) when they are replaced.
    webhooks_stop: CancellationToken,
    publisher: Option<Publisher>,
    status: SharedStatus,
    clock: SharedClock,
}

async fn run(
    mut setup: watch::Receiver<AlertSetup>,
    mut readings: mpsc::Receiver<Batch>,
    status: SharedStatus,
    clock: SharedClock,
    stop: CancellationToken,
) {
    let first = setup.borrow_and_update().clone();
    let mut evaluator = Evaluator {
        setup: AlertSetup {
            rules: BTreeMap::new(),
            webhooks: BTreeMap::new(),
            check_interval: first.check_interval,
            mqtt: None,
        },
        rules: BTreeMap::new(),
        last_seen: HashMap::new(),
        webhooks: BTreeMap::new(),
        webhooks_stop: CancellationToken::new(),
        publisher: None,
        status,
        clock,
    };
    evaluator.apply(first).await;
    let mut tick = tokio::time::interval(evaluator.setup.check_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Ok(()) = setup.changed() => {
                let new = setup.borrow_and_update().clone();
                if new.check_interval != evaluator.setup.check_interval {
                    tick = tokio::time::interval(new.check_interval);
                    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                }
                evaluator.apply(new).await;
            }
            Some(batch) = readings.recv() => evaluator.readings(&batch),
            _ = tick.tick() => evaluator.check(),
        }
    }
    // What is queued for a webhook gets a short chance to go out (an alert that
    // fired just before the stop); a webhook still retrying is not waited for.
    let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut evaluator.webhooks)
        .into_values()
        .map(webhook::Sender::finish)
        .collect();
    let drained = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!("alerts: a webhook still retrying at shutdown; its message is given up");
    }
    evaluator.webhooks_stop.cancel();
    if let Some(publisher) = evaluator.publisher.take() {
        publisher.stop().await;
    }
}

impl Evaluator {
    async fn apply(&mut self, new: AlertSetup) {
        if new.webhooks != self.setup.webhooks || self.webhooks.len() != new.webhooks.len() {
            self.webhooks_stop.cancel();
            for (_, sender) in std::mem::take(&mut self.webhooks) {
                sender.close().await;
            }
            self.webhooks_stop = CancellationToken::new();
            for (name, config) in &new.webhooks {
                let sender = webhook::Sender::start(name, config.clone(), self.webhooks_stop.clone());
                self.webhooks.insert(name.clone(), sender);
            }
        }
        let now = Instant::now();
        // Removed rules' topics are cleared on the broker they were published on,
        // before a changed broker setting replaces the publisher.
        let old_rules = std::mem::take(&mut self.rules);
        for (name, tracked) in old_rules {
            if new.rules.get(&name) == Some(&tracked.loaded) {
                self.rules.insert(name, tracked);
            } else if !new.rules.contains_key(&name) {
                if let Some(publisher) = &self.publisher {
                    publisher.state(&name, None);
                }
                tracing::info!(rule = %name, "alert rule removed");
            }
        }
        if new.mqtt != self.setup.mqtt {
            if let Some(publisher) = self.publisher.take() {
                publisher.stop().await;
            }
            self.publisher = new.mqtt.as_ref().and_then(|config| {
                Publisher::start(config)
                    .map_err(|e| tracing::error!("alerts: cannot publish on MQTT: {e}; webhooks still get them"))
                    .ok()
            });
        }
        for (name, loaded) in &new.rules {
            if !self.rules.contains_key(name) {
                self.rules.insert(
                    name.clone(),
                    Tracked {
                        loaded: loaded.clone(),
                        state: RuleState::default(),
                        started: now,
                        unit: None,
                        error: None,
                        message: None,
                    },
                );
            }
        }
        if new.rules != self.setup.rules {
            let names: Vec<&str> = new.rules.keys().map(String::as_str).collect();
            tracing::info!(rules = names.len(), "alerts: evaluating {}", names.join(", "));
        }
        self.setup = new;
        if let Some(publisher) = &self.publisher {
            for (name, tracked) in &self.rules {
                publisher.state(name, Some(state_payload(tracked, self.clock.now())));
            }
        }
    }

    fn readings(&mut self, batch: &Batch) {
        let now = Instant::now();
        let mut fired = Vec::new();
        for reading in batch.iter() {
            self.last_seen.insert(reading.device.to_string(), now);
            let Some(value) = reading.value.as_f64() else {
                continue;
            };
            for (name, tracked) in self.rules.iter_mut() {
                let matches = match &tracked.loaded.condition {
                    Condition::Above { device, metric, .. } | Condition::Below { device, metric, .. } => {
                        **device == *reading.device && **metric == *reading.metric
                    }
                    _ => false,
                };
                if !matches {
                    continue;
                }
                tracked.state.value = Some(value);
                tracked.unit = Some(reading.unit.symbol().to_owned());
                if let Some(t) = step(tracked, value, now) {
                    fired.push((name.clone(), t));
                }
            }
        }
        for (name, transition) in fired {
            self.deliver(&name, transition);
        }
    }

    /// What the tick looks at: silence, backend health, and `for`/`repeat` of
    /// metric rules whose device sends less often than they need.
    fn check(&mut self) {
        let now = Instant::now();
        let backends = self.status.backends();
        let mut fired = Vec::new();
        for (name, tracked) in self.rules.iter_mut() {
            let value = match &tracked.loaded.condition {
                Condition::Above { .. } | Condition::Below { .. } => match tracked.state.value {
                    Some(v) => v,
                    None => continue,
                },
                Condition::Silent { device, .. } => {
                    let since = self
                        .last_seen
                        .get(device)
                        .copied()
                        .unwrap_or(tracked.started)
                        .max(tracked.started);
                    now.duration_since(since).as_secs_f64()
                }
                Condition::Failing { backend, .. } => {
                    let health = backends.get(backend.as_str()).map(|b| b.health()).unwrap_or_default();
                    if health.last_error.is_some() {
                        tracked.error = health.last_error.clone();
                    }
                    health.failing_for.unwrap_or_default().as_secs_f64()
                }
            };
            if matches!(
                tracked.loaded.condition,
                Condition::Silent { .. } | Condition::Failing { .. }
            ) {
                tracked.state.value = Some(value);
            }
            if let Some(t) = step(tracked, value, now) {
                fired.push((name.clone(), t));
            }
        }
        for (name, transition) in fired {
            self.deliver(&name, transition);
        }
    }

    fn deliver(&mut self, name: &str, transition: Transition) {
        let Some(tracked) = self.rules.get_mut(name) else {
            return;
        };
        let event = event(tracked, transition, self.clock.now());
        tracked.message = Some(event.message.clone());
        let tracked = &*tracked;
        if event.firing() {
            tracing::warn!(rule = %name, repeat = event.repeat, "alert firing: {}", event.message);
        } else {
            tracing::info!(rule = %name, "alert resolved: {}", event.message);
        }
        if let Some(publisher) = &self.publisher {
            publisher.state(name, Some(state_payload(tracked, event.at)));
        }
        let wanted = tracked.loaded.rule.webhooks.as_ref();
        for (hook, sender) in &self.webhooks {
            if wanted.is_none_or(|list| list.iter().any(|w| w == hook)) {
                sender.send(event.clone());
            }
        }
    }
}

fn step(tracked: &mut Tracked, value: f64, now: Instant) -> Option<Transition> {
    let (trigger, holds) = levels(&tracked.loaded.condition, value);
    let rule = &tracked.loaded.rule;
    tracked
        .state
        .step(trigger, holds, now, rule.for_.unwrap_or_default(), rule.repeat)
}

/// The retained state message of a rule on MQTT.
fn state_payload(tracked: &Tracked, at: chrono::DateTime<chrono::Utc>) -> String {
    json!({
        "state": if tracked.state.firing() { "firing" } else { "ok" },
        "rule": tracked.loaded.name,
        "message": tracked.message,
        "value": tracked.state.value,
        "at": at,
    })
    .to_string()
}

fn event(tracked: &Tracked, transition: Transition, at: chrono::DateTime<chrono::Utc>) -> Event {
    let rule = &tracked.loaded.rule;
    let name = tracked.loaded.name.as_str();
    let value = tracked.state.value;
    let unit = tracked.unit.clone().unwrap_or_default();
    let (device, metric, backend, threshold) = match &tracked.loaded.condition {
        Condition::Above {
            device, metric, limit, ..
        }
        | Condition::Below {
            device, metric, limit, ..
        } => (Some(device.clone()), Some(metric.clone()), None, Some(*limit)),
        Condition::Silent { device, after } => (Some(device.clone()), None, None, Some(after.as_secs_f64())),
        Condition::Failing { backend, after } => (None, None, Some(backend.clone()), Some(after.as_secs_f64())),
    };
    let shown_value = match &tracked.loaded.condition {
        Condition::Silent { .. } | Condition::Failing { .. } => {
            duration_words(Duration::from_secs_f64(value.unwrap_or_default().max(0.0)))
        }
        _ => value.map(number).unwrap_or_default(),
    };
    let firing = transition != Transition::Resolved;
    let default_message = match (&tracked.loaded.condition, firing) {
        (Condition::Above { .. }, true) => "{device} {metric} is {value} {unit}, above {threshold}",
        (Condition::Below { .. }, true) => "{device} {metric} is {value} {unit}, below {threshold}",
        (Condition::Above { .. } | Condition::Below { .. }, false) => "{device} {metric} is back at {value} {unit}",
        (Condition::Silent { .. }, true) => "{device} has sent no reading for {value}",
        (Condition::Silent { .. }, false) => "{device} sends readings again",
        (Condition::Failing { .. }, true) => "backend {backend} has been failing for {value}: {error}",
        (Condition::Failing { .. }, false) => "backend {backend} works again",
    };
    let template = if firing {
        rule.message.as_deref()
    } else {
        rule.resolve_message.as_deref()
    }
    .unwrap_or(default_message);
    let fields = [
        ("rule", name.to_owned()),
        ("device", device.clone().unwrap_or_default()),
        ("metric", metric.clone().unwrap_or_default()),
        ("backend", backend.clone().unwrap_or_default()),
        ("value", shown_value),
        ("unit", unit.clone()),
        ("threshold", threshold.map(number).unwrap_or_default()),
        ("error", tracked.error.clone().unwrap_or_default()),
    ];
    let message = render(template, &fields).trim().to_owned();
    let title = match transition {
        Transition::Fired => format!("mesura: {name} firing"),
        Transition::Repeated => format!("mesura: {name} still firing"),
        Transition::Resolved => format!("mesura: {name} resolved"),
    };
    Event {
        rule: name.to_owned(),
        state: if firing { "firing" } else { "resolved" },
        repeat: transition == Transition::Repeated,
        title,
        message,
        priority: rule.priority,
        device,
        metric,
        backend,
        value,
        unit: tracked.unit.clone(),
        threshold,
        at,
    }
}
