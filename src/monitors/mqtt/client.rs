//! The MQTT connection of a `type: mqtt` device: rumqttc's event loop in a task of
//! its own (its `poll` must never be cancelled half-way), subscribing again after
//! every connect, decoding each message and handing the readings to the monitor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Decoder, MqttDeviceConfig};
use crate::config::secret::{read_secret_file, Secret};
use crate::host::clock::SharedClock;
use crate::monitors::{MonitorContext, MonitorError};
use crate::reading::Reading;

/// Batches of readings the monitor has not taken yet; when full, the client waits
/// (the broker holds the messages meanwhile) rather than dropping any.
const QUEUE: usize = 1024;
/// Reconnect backoff after a failed connection.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Malformed payloads are logged at most this often (and counted always).
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The broker connection, resolved from the device file or the `mqtt` backend.
#[derive(Debug)]
pub(super) struct Settings {
    options: MqttOptions,
    filters: Vec<String>,
    broker: String,
}

impl Settings {
    pub(super) fn new(config: &MqttDeviceConfig, ctx: &MonitorContext) -> Result<Settings, MonitorError> {
        let backend = config.backend.as_deref();
        let own = config.host.is_some();
        let host = config
            .host
            .clone()
            .or_else(|| backend.map(|b| b.host.clone()))
            .ok_or_else(|| MonitorError::config("no broker: set `host` or configure the mqtt backend"))?;
        let tls = if own {
            config.tls.clone()
        } else {
            backend.and_then(|b| b.tls.clone())
        };
        let port = if own { config.port } else { backend.and_then(|b| b.port) }.unwrap_or(if tls.is_some() {
            8883
        } else {
            1883
        });
        let username = if own {
            config.username.clone()
        } else {
            backend.and_then(|b| b.username.clone())
        };
        let (password, password_file) = if own {
            (config.password.clone(), config.password_file.clone())
        } else {
            (
                backend.and_then(|b| b.password.clone()),
                backend.and_then(|b| b.password_file.clone()),
            )
        };
        let password: Option<Secret> = match (password, password_file) {
            (Some(p), _) => Some(p),
            (None, Some(file)) => Some(
                read_secret_file(&file)
                    .map_err(|e| MonitorError::config(format!("password_file {}: {e}", file.display())).caused_by(e))?,
            ),
            (None, None) => None,
        };
        // Its own client id: a broker drops the older of two connections that share one.
        let client_id = format!("mesura-{}", ctx.id);
        let mut options = MqttOptions::new(client_id, &host, port);
        options.set_keep_alive(Duration::from_secs(30));
        // A persistent session: while mesura is away (a restart, the broker
        // restarting) the broker keeps what QoS 1 publishers send to our
        // subscriptions and hands it over when we are back.
        options.set_clean_session(false);
        if let Some(user) = &username {
            options.set_credentials(user, password.as_ref().map(Secret::expose).unwrap_or_default());
        }
        if let Some(tls) = &tls {
            let tls =
                crate::backends::mqtt::tls_client_config(tls).map_err(|e| MonitorError::config(format!("tls: {e}")))?;
            options.set_transport(rumqttc::Transport::Tls(tls));
        }
        Ok(Settings {
            options,
            filters: config.all_subscriptions().into_iter().map(|s| s.topic).collect(),
            broker: format!("{host}:{port}"),
        })
    }
}

/// What the client task tells the monitor.
#[derive(Debug)]
enum Update {
    Readings(Vec<Reading>),
    Connected,
    Failed(String),
}

#[derive(Debug)]
pub(super) struct Client {
    updates: mpsc::Receiver<Update>,
    /// Why the connection is down, while it is.
    down: Option<String>,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    pub(super) fn spawn(
        settings: Settings,
        decoder: Decoder,
        ctx: MonitorContext,
        malformed: Arc<AtomicU64>,
        clock_counts: Arc<Mutex<[(&'static str, u64); 2]>>,
    ) -> Client {
        let (tx, updates) = mpsc::channel(QUEUE);
        let task = tokio::spawn(drive(settings, decoder, ctx.clock, tx, malformed, clock_counts));
        Client {
            updates,
            down: None,
            task,
        }
    }

    /// Everything received since the last call, waiting up to `quiet` for the first
    /// message; an error while the connection is down and nothing came.
    pub(super) async fn next(&mut self, quiet: Duration) -> Result<Vec<Reading>, MonitorError> {
        let deadline = tokio::time::Instant::now() + quiet;
        let mut readings = Vec::new();
        loop {
            let update = if readings.is_empty() {
                match tokio::time::timeout_at(deadline, self.updates.recv()).await {
                    Ok(update) => update,
                    Err(_) => break,
                }
            } else {
                match self.updates.try_recv() {
                    Ok(update) => Some(update),
                    Err(_) => break,
                }
            };
            match update {
                Some(Update::Readings(r)) => readings.extend(r),
                Some(Update::Connected) => self.down = None,
                Some(Update::Failed(e)) => {
                    self.down = Some(e.clone());
                    if readings.is_empty() {
                        return Err(MonitorError::link(e));
                    }
                }
                None => return Err(MonitorError::link("the MQTT client stopped")),
            }
        }
        match (&self.down, readings.is_empty()) {
            (Some(e), true) => Err(MonitorError::link(e.clone())),
            _ => Ok(readings),
        }
    }
}

fn describe(e: &ConnectionError, broker: &str) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("the broker {broker} refused the connection: {code:?}"),
        ConnectionError::Io(io) => format!("broker {broker}: {}", crate::monitors::describe_link_io(io)),
        other => format!("broker {broker}: {other}"),
    }
}

async fn drive(
    settings: Settings,
    mut decoder: Decoder,
    clock: SharedClock,
    tx: mpsc::Sender<Update>,
    malformed: Arc<AtomicU64>,
    clock_counts: Arc<Mutex<[(&'static str, u64); 2]>>,
) {
    let (client, mut eventloop): (AsyncClient, EventLoop) = AsyncClient::new(settings.options.clone(), 64);
    let mut retry = FIRST_RETRY;
    let mut logged_at: Option<tokio::time::Instant> = None;
    let mut unlogged = 0u64;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                retry = FIRST_RETRY;
                tracing::info!(device = %decoder.device, broker = %settings.broker, topics = ?settings.filters, "MQTT subscriptions open");
                for filter in &settings.filters {
                    if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                        tracing::error!(device = %decoder.device, topic = %filter, error = %e, "cannot subscribe");
                    }
                }
                if tx.send(Update::Connected).await.is_err() {
                    return;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                    tracing::error!(device = %decoder.device, broker = %settings.broker, "the broker refused a subscription (its ACL?): nothing arrives from that topic");
                }
            }
            Ok(Event::Incoming(Packet::Publish(message))) => {
                let arrival = clock.now();
                match decoder.decode(&message.topic, &message.payload, arrival) {
                    Ok(readings) if readings.is_empty() => {}
                    Ok(readings) => {
                        if tx.send(Update::Readings(readings)).await.is_err() {
                            return;
                        }
                    }
                    Err(reason) => {
                        malformed.fetch_add(1, Ordering::Relaxed);
                        unlogged += 1;
                        let now = tokio::time::Instant::now();
                        if logged_at.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
                            tracing::warn!(device = %decoder.device, suppressed = unlogged - 1, "message dropped: {reason}");
                            logged_at = Some(now);
                            unlogged = 0;
                        }
                    }
                }
                *clock_counts.lock().unwrap_or_else(|e| e.into_inner()) = decoder.clock.counts();
            }
            Ok(_) => {}
            Err(e) => {
                let message = describe(&e, &settings.broker);
                if tx.send(Update::Failed(message)).await.is_err() {
                    return;
                }
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}
