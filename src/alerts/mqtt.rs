//! Alert states on the `mqtt` backend's broker: `<topic_prefix>/alerts/<rule>`
//! (retained JSON, `state` `ok` or `firing`) and, with Home Assistant discovery
//! on, a `binary_sensor` per rule. Its own connection (client id
//! `<client_id>-alerts`), so an alert never waits behind the readings' outbox;
//! states are retained and re-published on every (re)connect, so one lost while
//! the broker was away is made good when it is back.

use std::collections::BTreeMap;
use std::time::Duration;

use rumqttc::{AsyncClient, Event as MqttEvent, Incoming, MqttOptions, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backends::mqtt::discovery::{alert_config_payload, alert_config_topic, alert_state_topic};
use crate::backends::mqtt::MqttConfig;
use crate::config::secret::read_secret_file;

enum Command {
    /// A rule's state (the retained JSON); `None`: the rule is gone, clear it.
    State(String, Option<String>),
}

/// The alert publisher's task.
#[derive(Debug)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Command>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::State(rule, _) => write!(f, "State({rule})"),
        }
    }
}

impl Publisher {
    pub fn start(config: &MqttConfig) -> Result<Publisher, String> {
        let options = options(config)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(config.clone(), options, rx, stop.clone()));
        Ok(Publisher { tx, stop, task })
    }

    /// Publishes `rule`'s state (retained); `None` removes the rule's topics.
    pub fn state(&self, rule: &str, payload: Option<String>) {
        let _ = self.tx.send(Command::State(rule.to_owned(), payload));
    }

    /// Sends what is queued (for up to 2 s), then disconnects.
    pub async fn stop(self) {
        drop(self.tx);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
            self.stop.cancel();
            let _ = task.await;
        }
    }
}

fn options(config: &MqttConfig) -> Result<MqttOptions, String> {
    let port = config.port.unwrap_or(if config.tls.is_some() { 8883 } else { 1883 });
    let mut options = MqttOptions::new(format!("{}-alerts", config.client_id), &config.host, port);
    options.set_keep_alive(config.keep_alive.max(Duration::from_secs(5)));
    if let Some(user) = &config.username {
        let password = match (&config.password, &config.password_file) {
            (Some(p), _) => p.expose().to_owned(),
            (None, Some(file)) => read_secret_file(file)
                .map_err(|e| format!("password_file {}: {e}", file.display()))?
                .expose()
                .to_owned(),
            (None, None) => String::new(),
        };
        options.set_credentials(user, password);
    }
    if let Some(tls) = &config.tls {
        let tls = crate::backends::mqtt::tls_client_config(tls).map_err(|e| e.to_string())?;
        options.set_transport(rumqttc::Transport::Tls(tls));
    }
    Ok(options)
}

async fn run(
    config: MqttConfig,
    options: MqttOptions,
    mut rx: mpsc::UnboundedReceiver<Command>,
    stop: CancellationToken,
) {
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    let discovery = config.homeassistant.enabled;
    let ha = &config.homeassistant;
    let version = env!("CARGO_PKG_VERSION");
    // Every rule's newest state: what a (re)connect publishes.
    let mut states: BTreeMap<String, String> = BTreeMap::new();
    let mut connected = false;
    let publish_rule = |client: &AsyncClient, rule: &str, payload: Option<&String>| {
        let state_topic = alert_state_topic(&config.topic_prefix, rule);
        let config_topic = alert_config_topic(&ha.discovery_prefix, &ha.node_id, rule);
        match payload {
            Some(payload) => {
                if discovery {
                    let announce = alert_config_payload(rule, &config.topic_prefix, &ha.node_id, version);
                    let _ = client.try_publish(config_topic, QoS::AtLeastOnce, true, announce.to_string());
                }
                let _ = client.try_publish(state_topic, QoS::AtLeastOnce, true, payload.clone());
            }
            None => {
                if discovery {
                    let _ = client.try_publish(config_topic, QoS::AtLeastOnce, true, Vec::<u8>::new());
                }
                let _ = client.try_publish(state_topic, QoS::AtLeastOnce, true, Vec::<u8>::new());
            }
        }
    };
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            command = rx.recv(), if !closing => match command {
                Some(Command::State(rule, payload)) => {
                    if connected {
                        publish_rule(&client, &rule, payload.as_ref());
                    }
                    match payload {
                        Some(payload) => { states.insert(rule, payload); }
                        None => { states.remove(&rule); }
                    }
                }
                None => {
                    closing = true;
                    let _ = client.try_disconnect();
                }
            },
            event = eventloop.poll() => match event {
                Ok(MqttEvent::Incoming(Incoming::ConnAck(_))) => {
                    connected = true;
                    tracing::debug!(host = %config.host, rules = states.len(), "alerts: connected to the broker");
                    for (rule, payload) in &states {
                        publish_rule(&client, rule, Some(payload));
                    }
                }
                Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) if closing => break,
                Ok(_) => {}
                Err(e) => {
                    if closing {
                        break;
                    }
                    if connected {
                        tracing::warn!(host = %config.host, error = %e, "alerts: lost the broker; states are published again on reconnect");
                    }
                    connected = false;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}
