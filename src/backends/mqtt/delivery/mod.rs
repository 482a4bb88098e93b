//! The MQTT delivery task: sends the outbox oldest first over the connection that
//! `connection.rs` keeps, and deletes rows only when the broker has acknowledged them
//! (PUBACK for QoS 1).
//!
//! rumqttc would retransmit unacknowledged publishes itself after a reconnect, from
//! memory. We clear that in-memory backlog on every connection error and resend from
//! the outbox instead, so the outbox is the single source of truth and every
//! `Outgoing::Publish(pkid)` event matches, in order, one publish we issued.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, LastWill, MqttOptions, Outgoing, QoS};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::{reason, ConnectLog, Driver, Update};
use super::discovery::{self, Entity};
use super::ha::published::Published;
use super::ha::schedule::Schedule;
use super::{Control, MqttConfig};
use crate::backends::health::Health;
use crate::backends::outbox::{Outbox, OutboxRow};
use crate::backends::{blocking, BackendError};
use crate::config::secret::Secret;
use crate::daemon::retry::Backoff;
use crate::energy::cleaner::LIFETIME_SUFFIX;
use crate::reading::Value;

mod entities;

/// Publishes handed to rumqttc and not yet acknowledged, at most.
const WINDOW: usize = 400;
/// Rows read from the outbox at a time.
const FETCH: usize = 200;
/// How long a clean shutdown keeps delivering what is left.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after Home Assistant's birth message (or a new entity's discovery
/// config) the latest states are re-sent: it subscribes to an entity's state topic
/// only once it has set up the entity from the discovery config.
const STATES_AFTER_BIRTH: Duration = Duration::from_secs(3);
/// How often the record is looked through for metrics a device stopped sending
/// (a walk over a few hundred entries in memory).
const EXPIRY_CHECK: Duration = Duration::from_secs(5);

pub(super) fn options(config: &MqttConfig, password: Option<&Secret>) -> Result<MqttOptions, BackendError> {
    let port = config.port.unwrap_or(if config.tls.is_some() { 8883 } else { 1883 });
    let mut options = MqttOptions::new(&config.client_id, &config.host, port);
    options.set_keep_alive(config.keep_alive.max(Duration::from_secs(5)));
    // A persistent session: the broker keeps our subscription to Home Assistant's
    // birth topic (and anything queued for it) across reconnects.
    options.set_clean_session(false);
    options.set_inflight(100);
    options.set_last_will(LastWill::new(status_topic(config), "offline", QoS::AtLeastOnce, true));
    if let Some(user) = &config.username {
        options.set_credentials(user, password.map(Secret::expose).unwrap_or_default());
    }
    if let Some(tls) = &config.tls {
        options.set_transport(rumqttc::Transport::Tls(super::delivery_tls::client_config(tls)?));
    }
    Ok(options)
}

pub(super) fn status_topic(config: &MqttConfig) -> String {
    format!("{}/status", config.topic_prefix)
}

/// Per publish we issued, in order: the outbox rows it carries (empty for status,
/// discovery and state messages).
type Issued = VecDeque<Vec<i64>>;

/// What delivery does for Home Assistant beyond discovery: the record of the
/// configs published, and the statistics backfill task with its `lookback`.
pub(super) struct HaParts {
    pub published: Option<Published>,
    pub backfill: Option<(mpsc::UnboundedSender<(i64, i64)>, Duration)>,
}

pub(super) struct Delivery {
    config: MqttConfig,
    options: MqttOptions,
    outbox: Arc<Mutex<Outbox>>,
    wake: Arc<Notify>,
    control: mpsc::UnboundedReceiver<Control>,
    issued: Issued,
    inflight: HashMap<u16, Vec<i64>>,
    acked: Vec<i64>,
    /// The highest outbox id handed to the client on this connection.
    sent_up_to: i64,
    connected: bool,
    /// Entities announced to Home Assistant by this process, by (device, metric).
    announced: BTreeMap<(String, String), Entity>,
    /// Discovery topics of removed devices still to be emptied: what is issued while
    /// disconnected is dropped at the next connection, so these wait for it.
    retractions: Vec<String>,
    /// What /health shows of delivery.
    health: Arc<Health>,
    /// The discovery configs published, per device (`<data_dir>/mqtt-discovery.json`).
    published: Option<Published>,
    /// Each entity's latest state (topic, payload), re-sent after Home Assistant's
    /// birth so no entity waits at `unknown` for its next poll.
    latest: BTreeMap<(String, String), (String, Vec<u8>)>,
    resend_states_at: Option<Instant>,
    /// When to backfill Home Assistant's statistics, and the task that does it.
    backfill: Option<(mpsc::UnboundedSender<(i64, i64)>, Schedule)>,
    /// The time of the newest reading handed to the broker: where an outage's
    /// missing states start (the readings' own time, which a backlog delivered
    /// before the connection failed may put well before now).
    last_sent_at: Option<i64>,
    /// Per device that said so: every metric its config gives (`Some`), or `None`
    /// when its readings decide (those expire after `discovery_expire_after`).
    metric_sets: BTreeMap<String, Option<BTreeSet<String>>>,
    next_expiry_check: Instant,
}

impl Delivery {
    pub(super) fn new(
        config: MqttConfig,
        options: MqttOptions,
        outbox: Arc<Mutex<Outbox>>,
        wake: Arc<Notify>,
        control: mpsc::UnboundedReceiver<Control>,
        health: Arc<Health>,
        ha: HaParts,
    ) -> Self {
        let HaParts { published, backfill } = ha;
        let now = chrono::Utc::now().timestamp();
        let backfill = backfill.map(|(tx, lookback)| (tx, Schedule::new(now, lookback.as_secs() as i64)));
        Delivery {
            config,
            options,
            outbox,
            wake,
            control,
            issued: VecDeque::new(),
            inflight: HashMap::new(),
            acked: Vec::new(),
            sent_up_to: 0,
            connected: false,
            announced: BTreeMap::new(),
            retractions: Vec::new(),
            health,
            published,
            latest: BTreeMap::new(),
            resend_states_at: None,
            backfill,
            last_sent_at: None,
            metric_sets: BTreeMap::new(),
            next_expiry_check: Instant::now() + EXPIRY_CHECK,
        }
    }

    fn qos(&self) -> QoS {
        if self.config.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    pub(super) async fn run(mut self, stop: CancellationToken) {
        let (client, eventloop) = AsyncClient::new(self.options.clone(), 2 * WINDOW);
        let (host, port) = self.options.broker_address();
        let mut log = ConnectLog::new(&host, port);
        let mut driver = Driver::spawn(eventloop);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut reconnect_at: Option<Instant> = None;
        let mut ack_tick = tokio::time::interval(Duration::from_millis(500));
        let mut drain_deadline: Option<Instant> = None;
        loop {
            if let Some(deadline) = drain_deadline {
                let done =
                    self.connected && self.issued.is_empty() && self.inflight.is_empty() && self.outbox_empty().await;
                if done || Instant::now() >= deadline || !self.connected {
                    break;
                }
            }
            tokio::select! {
                biased;
                _ = stop.cancelled(), if drain_deadline.is_none() => {
                    drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
                    self.pump(&client).await;
                }
                update = driver.next() => match update {
                    Some(Update::Connecting) => log.attempt(),
                    Some(Update::Event(event)) => {
                        if self.on_event(event, &client, &mut log).await {
                            backoff.reset();
                        }
                    }
                    Some(Update::Failed(e)) => {
                        let since = self.states_missed_since();
                        if let Some((_, schedule)) = &mut self.backfill {
                            schedule.lost(since);
                        }
                        let wait = backoff.next_delay();
                        let starts_outage = self.health.failed(reason(&e));
                        if self.connected {
                            log.lost(&e);
                        } else {
                            log.failed(&e, wait, starts_outage);
                        }
                        self.on_disconnect().await;
                        if drain_deadline.is_some() {
                            break;
                        }
                        reconnect_at = Some(Instant::now() + wait);
                    }
                    None => {
                        tracing::error!(backend = "mqtt", "the MQTT event loop ended; readings wait in the outbox until a restart");
                        break;
                    }
                },
                _ = tokio::time::sleep_until(reconnect_at.unwrap_or_else(Instant::now)), if reconnect_at.is_some() => {
                    reconnect_at = None;
                    driver.reconnect();
                }
                Some(control) = self.control.recv() => self.on_control(control, &client),
                _ = self.wake.notified() => self.pump(&client).await,
                _ = tokio::time::sleep_until(self.resend_states_at.unwrap_or_else(Instant::now)), if self.resend_states_at.is_some() => {
                    self.resend_states_at = None;
                    self.resend_states(&client);
                }
                _ = ack_tick.tick() => {
                    self.commit_acks().await;
                    self.pump(&client).await;
                    self.expire(&client);
                    if let Some(published) = &mut self.published {
                        published.save();
                    }
                    self.check_schedule().await;
                }
            }
        }
        self.commit_acks().await;
        if self.connected {
            // A clean stop says so itself; the Last Will covers crashes.
            let _ = client.try_publish(status_topic(&self.config), QoS::AtLeastOnce, true, "offline");
            let _ = client.try_disconnect();
            let until = Instant::now() + Duration::from_secs(2);
            while let Ok(Some(update)) = tokio::time::timeout_at(until, driver.next()).await {
                if matches!(
                    update,
                    Update::Event(Event::Outgoing(Outgoing::Disconnect)) | Update::Failed(_)
                ) {
                    break;
                }
            }
        }
        drop(driver);
        let left = blocking(&self.outbox, |o| o.depth()).await.map(|d| d.0).unwrap_or(0);
        if left > 0 {
            tracing::info!(
                backend = "mqtt",
                undelivered = left,
                "stopped; undelivered readings stay in the outbox for the next start"
            );
        }
    }

    /// Returns true when the connection came up.
    async fn on_event(&mut self, event: Event, client: &AsyncClient, log: &mut ConnectLog) -> bool {
        match event {
            Event::Incoming(Incoming::ConnAck(_)) => {
                log.connected(self.health.delivered());
                self.connected = true;
                self.reset_session();
                self.issue(client, status_topic(&self.config), true, "online".into(), Vec::new());
                self.retract(client);
                if self.config.homeassistant.enabled {
                    let _ = client.try_subscribe(&self.config.homeassistant.birth_topic, QoS::AtLeastOnce);
                    self.announce_all(client);
                }
                if let Some((_, schedule)) = &mut self.backfill {
                    schedule.resumed();
                }
                self.pump(client).await;
                return true;
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(rows) = self.issued.pop_front() {
                    if pkid == 0 {
                        self.acked.extend(rows);
                    } else if !rows.is_empty() {
                        self.inflight.insert(pkid, rows);
                    }
                }
            }
            Event::Incoming(Incoming::PubAck(ack)) => {
                if let Some(rows) = self.inflight.remove(&ack.pkid) {
                    self.acked.extend(rows);
                    if self.acked.len() >= FETCH {
                        self.commit_acks().await;
                    }
                }
                if self.inflight.len() + self.issued.len() < WINDOW / 2 {
                    self.pump(client).await;
                }
            }
            Event::Incoming(Incoming::Publish(p))
                if self.config.homeassistant.enabled
                    && p.topic == self.config.homeassistant.birth_topic
                    && &p.payload[..] == b"online" =>
            {
                tracing::info!(
                    backend = "mqtt",
                    "Home Assistant came online: re-sending discovery, then the latest states"
                );
                self.announce_all(client);
                self.resend_states_at = Some(Instant::now() + STATES_AFTER_BIRTH);
                if let Some((_, schedule)) = &mut self.backfill {
                    let lookback = schedule.lookback;
                    schedule.came_online(chrono::Utc::now().timestamp(), lookback);
                }
            }
            Event::Incoming(Incoming::Publish(p))
                if self.config.homeassistant.enabled
                    && p.topic == self.config.homeassistant.birth_topic
                    && &p.payload[..] == b"offline" =>
            {
                tracing::info!(backend = "mqtt", "Home Assistant went offline");
                let since = self.states_missed_since();
                if let Some((_, schedule)) = &mut self.backfill {
                    schedule.lost(since);
                }
            }
            _ => {}
        }
        false
    }

    async fn on_disconnect(&mut self) {
        self.connected = false;
        self.commit_acks().await;
        self.reset_session();
    }

    fn reset_session(&mut self) {
        self.issued.clear();
        self.inflight.clear();
        self.sent_up_to = 0;
    }

    fn on_control(&mut self, control: Control, client: &AsyncClient) {
        match control {
            Control::DeviceRemoved(device) => {
                self.metric_sets.remove(&device);
                let gone: Vec<(String, String)> =
                    self.announced.keys().filter(|(d, _)| *d == device).cloned().collect();
                for key in gone {
                    self.announced.remove(&key);
                    self.latest.remove(&key);
                    if self.config.homeassistant.enabled {
                        let ha = &self.config.homeassistant;
                        let topic = discovery::config_topic(&ha.discovery_prefix, &ha.node_id, &key.0, &key.1);
                        self.push_retraction(topic);
                    }
                }
                if let Some(published) = &mut self.published {
                    let gone = published.remove(&device);
                    self.clear(gone);
                }
                self.retract(client);
            }
            Control::DevicesConfigured(devices) => {
                let Some(published) = &mut self.published else {
                    return;
                };
                let orphans = published.orphans(&devices);
                for (device, gone) in orphans {
                    tracing::info!(backend = "mqtt", device = %device, entities = gone.len(), "clearing the Home Assistant entities of a device no longer configured");
                    self.clear(gone);
                }
                self.retract(client);
            }
            Control::DeviceMetrics(device, metrics) => {
                self.metric_sets.insert(device.clone(), metrics.clone());
                let (Some(published), Some(metrics)) = (&mut self.published, metrics) else {
                    return;
                };
                let ha = &self.config.homeassistant;
                let declared: BTreeSet<String> = metrics
                    .iter()
                    .flat_map(|m| [m.clone(), format!("{m}{LIFETIME_SUFFIX}")])
                    .map(|m| discovery::config_topic(&ha.discovery_prefix, &ha.node_id, &device, &m))
                    .collect();
                let gone = published.undeclared(&device, &declared);
                if !gone.is_empty() {
                    let names: Vec<&str> = gone.iter().map(|g| g.entry.metric.as_str()).collect();
                    tracing::info!(backend = "mqtt", device = %device, metrics = ?names, "clearing the Home Assistant entities of metrics the device's configuration no longer gives");
                    self.clear(gone);
                }
                self.retract(client);
            }
        }
    }

    /// Since when states may not have reached Home Assistant: the newest reading
    /// handed to the broker (never later than now).
    fn states_missed_since(&self) -> i64 {
        let now = chrono::Utc::now().timestamp();
        self.last_sent_at.map_or(now, |t| t.min(now))
    }

    /// Hands the backfill task its period when one is due: the outbox drained after
    /// an outage, or the second pass an hour later.
    async fn check_schedule(&mut self) {
        let Some((_, schedule)) = &self.backfill else {
            return;
        };
        let waiting = schedule.waiting();
        let now = chrono::Utc::now().timestamp();
        let drained = waiting
            && self.connected
            && self.issued.is_empty()
            && self.inflight.is_empty()
            && self.outbox_empty().await;
        if let Some((tx, schedule)) = &mut self.backfill {
            let period = if drained { schedule.drained(now) } else { None }.or_else(|| schedule.due(now));
            if let Some(period) = period {
                let _ = tx.send(period);
            }
        }
    }

    /// Publishes and records what the publish carries, to match its pkid later.
    fn issue(&mut self, client: &AsyncClient, topic: String, retain: bool, payload: Vec<u8>, rows: Vec<i64>) -> bool {
        match client.try_publish(topic, self.qos(), retain, payload) {
            Ok(()) => {
                self.issued.push_back(rows);
                true
            }
            Err(_) => false,
        }
    }

    /// Hands the next undelivered rows to the client, within the window.
    async fn pump(&mut self, client: &AsyncClient) {
        self.retract(client);
        while self.connected && self.issued.len() + self.inflight.len() < WINDOW {
            let after = self.sent_up_to;
            let rows = match blocking(&self.outbox, move |o| o.pending(after, FETCH)).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(backend = "mqtt", error = %e, "cannot read the outbox");
                    return;
                }
            };
            if rows.is_empty() {
                return;
            }
            let full = rows.len() < FETCH;
            if !self.publish_rows(client, &rows) || full {
                return;
            }
        }
    }

    /// Returns false when the client's queue is full (the rest waits for acks).
    fn publish_rows(&mut self, client: &AsyncClient, rows: &[OutboxRow]) -> bool {
        let mut start = 0;
        while start < rows.len() {
            // One group per device and reading time: its state message, then its values.
            let first = &rows[start];
            let end = rows[start..]
                .iter()
                .position(|r| r.device != first.device || r.timestamp != first.timestamp)
                .map_or(rows.len(), |n| start + n);
            let group = &rows[start..end];
            for row in group {
                let lifetime = format!("{}{LIFETIME_SUFFIX}", row.metric);
                let lifetime_beside = group.iter().any(|r| r.metric == lifetime);
                self.ensure_announced(client, row, lifetime_beside);
            }
            if self.config.state_message {
                let topic =
                    discovery::state_topic(&self.config.topic_prefix, &first.device_type, &first.device, "state");
                let mut state = serde_json::Map::new();
                state.insert(
                    "timestamp".into(),
                    first
                        .timestamp
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                        .into(),
                );
                for row in group {
                    let v = match &row.value {
                        Value::Number(n) => serde_json::json!(n),
                        Value::Text(t) => serde_json::json!(t.as_ref()),
                    };
                    state.insert(row.metric.clone(), v);
                }
                if !self.issue(
                    client,
                    topic,
                    self.config.retain,
                    serde_json::Value::Object(state).to_string().into_bytes(),
                    Vec::new(),
                ) {
                    return false;
                }
            }
            for row in group {
                let topic =
                    discovery::state_topic(&self.config.topic_prefix, &row.device_type, &row.device, &row.metric);
                let payload = row.value.to_string().into_bytes();
                let at = row.timestamp.timestamp();
                self.last_sent_at = Some(self.last_sent_at.map_or(at, |t| t.max(at)));
                if let Some(published) = &mut self.published {
                    published.saw(&row.device, &row.metric, at);
                }
                if self.config.homeassistant.enabled {
                    self.latest.insert(
                        (row.device.clone(), row.metric.clone()),
                        (topic.clone(), payload.clone()),
                    );
                }
                if !self.issue(client, topic, self.config.retain, payload, vec![row.id]) {
                    return false;
                }
                self.sent_up_to = row.id;
            }
            start = end;
        }
        true
    }

    async fn commit_acks(&mut self) {
        if self.acked.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.acked);
        let retry = ids.clone();
        if let Err(e) = blocking(&self.outbox, move |o| o.ack(&ids)).await {
            tracing::warn!(backend = "mqtt", error = %e, "cannot mark delivered readings; will retry");
            self.acked = retry;
        }
    }

    async fn outbox_empty(&self) -> bool {
        blocking(&self.outbox, |o| o.depth())
            .await
            .map(|d| d.0 == 0)
            .unwrap_or(true)
    }
}
