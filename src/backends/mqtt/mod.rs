//! MQTT, for Home Assistant and anything else on the broker.
//!
//! Topics `<topic_prefix>/<device_type>/<device>/<metric>` carry the plain value;
//! with `state_message: true`, `<topic_prefix>/<device_type>/<device>/state` carries
//! one JSON object per reading time with every metric and the original timestamp.
//! `<topic_prefix>/status` is `online` (retained) while connected and `offline` as
//! the Last Will. Readings go through the durable outbox (see `outbox/`): nothing
//! is lost while the broker is down or mesura restarts; delivery is at-least-once.

mod connection;
mod delivery;
mod delivery_tls;
/// The TLS set-up of an MQTT connection, shared with `type: mqtt` devices.
pub(crate) use delivery_tls::client_config as tls_client_config;
pub mod discovery;
pub mod ha;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::health::Health;
use super::outbox::{Durable, Opening, OutboxConfig};
use super::{Backend, BackendError, BackendType, BatchPolicy};
use crate::config::secret::{read_secret_file, Secret};
use crate::reading::Reading;

/// `backends.mqtt`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port; default 1883, or 8883 with `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Client id. Keep it stable: the broker keeps our session under it.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// User name, if the broker requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (write `${MQTT_PASSWORD}` to take it from the environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password (or a systemd credential name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// First level of every topic.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// 0 (at most once) or 1 (at least once: the outbox keeps a reading until the
    /// broker acknowledges it).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Publish values retained, so a new subscriber gets the last value at once.
    #[serde(default)]
    pub retain: bool,
    /// Also publish one JSON state message per device and reading time.
    #[serde(default)]
    pub state_message: bool,
    /// MQTT keep-alive.
    #[serde(default = "default_keep_alive", with = "crate::config::duration")]
    pub keep_alive: Duration,
    /// TLS to the broker (verification is always on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<MqttTlsConfig>,
    /// Home Assistant discovery.
    #[serde(default)]
    pub homeassistant: HomeAssistantConfig,
    /// How often queued readings are appended to the outbox and handed to delivery.
    #[serde(default = "default_flush_interval", with = "crate::config::duration")]
    pub flush_interval: Duration,
    /// Polls queued for this backend before new ones are dropped (and counted).
    #[serde(default = "super::sqlite::default_queue_capacity")]
    pub queue_capacity: usize,
    /// Bounds of the undelivered backlog.
    #[serde(default)]
    pub outbox: OutboxConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// CA certificate(s) (PEM) to verify the broker with; default: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for brokers that authenticate clients by certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// Publish discovery configs so Home Assistant creates the entities itself.
    #[serde(default)]
    pub enabled: bool,
    /// Home Assistant's discovery prefix.
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
    /// The node id in discovery topics and unique ids; one per mesura instance.
    #[serde(default = "default_node_id")]
    pub node_id: String,
    /// Home Assistant's birth topic: when `online` arrives, discovery is re-sent,
    /// and a few seconds later every entity's latest state.
    #[serde(default = "default_birth_topic")]
    pub birth_topic: String,
    /// Keep Home Assistant's long-term statistics true after an outage: import the
    /// hours it missed from mesura's own readings (off without this section).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<ha::StatisticsConfig>,
    /// For a device whose readings decide its metrics (a P1 meter's registers,
    /// `dsmr`, `homewizard`, `evohome`, `mqtt`): how long it may send readings
    /// without one of them before that metric's entity is cleared; `off` keeps them
    /// for good. At least `1h`; longer than the slowest metric's interval (gas:
    /// hourly). Devices whose configuration names their metrics (a Modbus point
    /// map) lose an entity when the metric leaves the configuration instead.
    #[serde(default = "default_discovery_expire_after", with = "expire_after")]
    pub discovery_expire_after: Option<Duration>,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig {
            enabled: false,
            discovery_prefix: default_discovery_prefix(),
            node_id: default_node_id(),
            birth_topic: default_birth_topic(),
            statistics: None,
            discovery_expire_after: default_discovery_expire_after(),
        }
    }
}

pub fn default_client_id() -> String {
    "mesura".into()
}
pub fn default_topic_prefix() -> String {
    "meters".into()
}
pub fn default_qos() -> u8 {
    1
}
pub fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
pub fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
pub fn default_discovery_prefix() -> String {
    "homeassistant".into()
}
pub fn default_node_id() -> String {
    "mesura".into()
}
pub fn default_birth_topic() -> String {
    "homeassistant/status".into()
}
pub fn default_discovery_expire_after() -> Option<Duration> {
    Some(Duration::from_secs(7 * 86_400))
}

/// `discovery_expire_after`: a duration, or `off`.
mod expire_after {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(de)?;
        if text.trim() == "off" {
            return Ok(None);
        }
        crate::config::duration::parse(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{e}, or `off`")))
    }

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => crate::config::duration::serialize(d, s),
            None => s.serialize_str("off"),
        }
    }
}

impl MqttConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.qos > 1 {
            return Err(format!("qos must be 0 or 1, not {}", self.qos));
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err("set password or password_file, not both".into());
        }
        if let Some(tls) = &self.tls {
            if tls.client_cert.is_some() != tls.client_key.is_some() {
                return Err("tls: client_cert and client_key go together".into());
            }
        }
        if self
            .homeassistant
            .discovery_expire_after
            .is_some_and(|d| d < Duration::from_secs(3600))
        {
            return Err("homeassistant.discovery_expire_after must be at least 1h (or `off`)".into());
        }
        if let Some(statistics) = &self.homeassistant.statistics {
            if !self.homeassistant.enabled {
                return Err("homeassistant.statistics needs homeassistant.enabled: true (the statistics are those of the entities discovery makes)".into());
            }
            statistics.validate().map_err(|e| format!("homeassistant.{e}"))?;
        }
        Ok(())
    }
}

/// Messages from the backend to its delivery task.
enum Control {
    DeviceRemoved(String),
    /// Every device in the configuration (at start and after a reload): discovery
    /// configs recorded for any other are cleared.
    DevicesConfigured(std::collections::BTreeSet<String>),
    /// A device's metrics as its monitor declares them: every one its configuration
    /// gives, or `None` when its readings decide.
    DeviceMetrics(String, Option<std::collections::BTreeSet<String>>),
}

#[derive(Debug)]
pub struct MqttBackend {
    durable: Durable,
    policy: BatchPolicy,
    control: mpsc::UnboundedSender<Control>,
    health: Arc<Health>,
    /// The statistics backfill task, stopped with the backend.
    statistics: Option<(tokio_util::sync::CancellationToken, tokio::task::JoinHandle<()>)>,
}

#[async_trait]
impl BackendType for MqttConfig {
    async fn open(&self, data_dir: &Path) -> Result<Box<dyn Backend>, BackendError> {
        Ok(Box::new(MqttBackend::open(self, data_dir).await?))
    }
}

impl MqttBackend {
    pub async fn open(config: &MqttConfig, data_dir: &Path) -> Result<Self, BackendError> {
        config
            .validate()
            .map_err(|e| BackendError::permanent(format!("mqtt: {e}")))?;
        let password = match (&config.password, &config.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(file)) => Some(read_secret_file(file).map_err(|e| {
                BackendError::permanent(format!("mqtt: password_file {}: {e}", file.display())).caused_by(e)
            })?),
            (None, None) => None,
        };
        let options = delivery::options(config, password.as_ref())?;
        let opening = Opening::open("mqtt", data_dir, config.outbox.clone()).await?;
        // Delivery has its own connection: it reads and acknowledges while the
        // backend appends.
        let delivery_outbox = opening.own_connection().await?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let health = Arc::new(Health::default());
        let mut statistics = None;
        let mut backfill = None;
        if let (true, Some(section)) = (config.homeassistant.enabled, &config.homeassistant.statistics) {
            let settings = ha::Settings::resolve(section, &config.homeassistant.node_id, data_dir).map_err(|e| {
                let message = format!("mqtt: homeassistant.statistics: {}", ha::chain(&e));
                match e {
                    ha::BackfillError::Token { source, .. } => BackendError::permanent(message).caused_by(source),
                    _ => BackendError::permanent(message),
                }
            })?;
            let lookback = settings.lookback;
            let stop = tokio_util::sync::CancellationToken::new();
            let (tx, task) = ha::spawn(settings, stop.clone());
            statistics = Some((stop, task));
            backfill = Some((tx, lookback));
        }
        let delivery = delivery::Delivery::new(
            config.clone(),
            options,
            delivery_outbox,
            opening.wake(),
            control_rx,
            health.clone(),
            delivery::HaParts {
                published: config
                    .homeassistant
                    .enabled
                    .then(|| ha::published::Published::load(data_dir, chrono::Utc::now().timestamp())),
                backfill,
            },
        )
        .run(opening.stop());
        Ok(MqttBackend {
            durable: opening.start(delivery),
            policy: BatchPolicy {
                flush_interval: config.flush_interval,
                batch_size: 5000,
                queue_capacity: config.queue_capacity,
            },
            control,
            health,
            statistics,
        })
    }
}

#[async_trait]
impl Backend for MqttBackend {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn policy(&self) -> BatchPolicy {
        self.policy
    }

    async fn write(&mut self, batch: &[Reading]) -> Result<(), BackendError> {
        self.durable.append(batch).await?;
        self.durable.wake();
        Ok(())
    }

    /// The delivery task gets a bounded last chance to deliver; what remains
    /// stays in the outbox for the next start.
    async fn flush(&mut self) -> Result<(), BackendError> {
        if let Some((stop, task)) = self.statistics.take() {
            stop.cancel();
            let _ = task.await;
        }
        self.durable.stop().await
    }

    async fn device_removed(&mut self, device: &str) -> Result<(), BackendError> {
        let _ = self.control.send(Control::DeviceRemoved(device.to_owned()));
        Ok(())
    }

    async fn devices_configured(&mut self, devices: &[crate::reading::DeviceId]) -> Result<(), BackendError> {
        let set = devices.iter().map(|d| d.to_string()).collect();
        let _ = self.control.send(Control::DevicesConfigured(set));
        Ok(())
    }

    async fn device_metrics(&mut self, device: &str, metrics: Option<&[String]>) -> Result<(), BackendError> {
        let set = metrics.map(|m| m.iter().cloned().collect());
        let _ = self.control.send(Control::DeviceMetrics(device.to_owned(), set));
        Ok(())
    }

    fn delivery_health(&self) -> Option<Arc<Health>> {
        Some(self.health.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(homeassistant: &str) -> Result<MqttConfig, serde_yaml_ng::Error> {
        serde_yaml_ng::from_str(&format!("host: broker\nhomeassistant:\n{homeassistant}"))
    }

    #[test]
    fn discovery_expire_after_is_a_duration_of_an_hour_or_more_or_off() {
        let default = config("  enabled: true\n").expect("default");
        assert_eq!(
            default.homeassistant.discovery_expire_after,
            Some(Duration::from_secs(7 * 86_400))
        );
        let off = config("  discovery_expire_after: off\n").expect("off");
        assert_eq!(off.homeassistant.discovery_expire_after, None);
        assert_eq!(off.validate(), Ok(()));
        let two = config("  discovery_expire_after: 2h\n").expect("2h");
        assert_eq!(
            two.homeassistant.discovery_expire_after,
            Some(Duration::from_secs(7200))
        );
        let short = config("  discovery_expire_after: 10m\n").expect("10m");
        assert!(short.validate().unwrap_err().contains("at least 1h"));
        let bare = config("  discovery_expire_after: 5\n").unwrap_err().to_string();
        assert!(bare.contains("no unit") && bare.contains("`off`"), "{bare}");
        let written = serde_yaml_ng::to_string(&off.homeassistant).expect("yaml");
        assert!(written.contains("discovery_expire_after: off"), "{written}");
    }
}
