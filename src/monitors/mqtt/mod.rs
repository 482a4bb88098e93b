//! Values other systems publish on MQTT (Tasmota plugs, Zigbee2MQTT sensors, a
//! Shelly, a battery BMS) as readings: topics subscribed on a broker (the `mqtt`
//! backend's by default), each message turned into readings by its mappings.
//!
//! The broker pushes; the client runs in a task of its own (`client.rs`) and hands
//! readings over a bounded channel, so a slow supervisor never stalls the MQTT
//! connection. The session is persistent (client id `mesura-<device>`): what QoS 1
//! publishers send while mesura or the broker restarts is handed over afterwards.
//! Retained messages arrive on every subscription: stored again, which the
//! backends' upserts make harmless.

mod client;
pub mod presets;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::device_time::{default_max_clock_skew, DeviceClock, DeviceTime, Stamps};
use super::{DeviceType, Monitor, MonitorContext, MonitorError};
use crate::backends::mqtt::{MqttConfig, MqttTlsConfig};
use crate::config::common::CommonConfig;
use crate::config::secret::Secret;
use crate::protocols::mqtt_payload::{self, JsonPath};
use crate::reading::{intern, Kind, MetricSpec, Reading, Unit, Value};
pub use presets::Preset;

/// `type: mqtt`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct MqttDeviceConfig {
    /// The broker's host; default: the `mqtt` backend's broker (with its port,
    /// credentials and TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The broker's port; default 1883, or 8883 with `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// User name, if the broker requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password (better `${VAR}` or `password_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A file holding the password (or a systemd credential name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// TLS to the broker (verification always on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<MqttTlsConfig>,
    /// A ready-made mapping: `tasmota`, `zigbee2mqtt`, `shelly_gen2` or `bms`, for
    /// the device `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// With `preset`: Tasmota's topic, Zigbee2MQTT's friendly name, the Shelly's id
    /// (its topic prefix), or the BMS's topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Topics and how their messages become readings (beside or instead of a preset).
    #[serde(default)]
    pub subscriptions: Vec<Subscription>,
    /// How far a time sent in a message may be from the host's clock before the
    /// arrival time is used instead.
    #[serde(default = "default_max_clock_skew", with = "crate::config::duration")]
    pub max_clock_skew: Duration,
    /// The broker of the `mqtt` backend and its topic prefix, filled in when the
    /// device files are loaded beside config.yaml (not a key).
    #[serde(skip)]
    pub backend: Option<Box<MqttConfig>>,
}

/// One topic filter (`+` and `#` wildcards) and its mappings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// The topic filter, e.g. `tele/plug1/SENSOR`, `bms/+/cell_voltage`.
    pub topic: String,
    /// What to take from each message.
    pub values: Vec<ValueMap>,
    /// The JSON path of the time the publisher stamped (`$.Time`); default: the
    /// time the message arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// One value of a message.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMap {
    /// The metric name; `{1}`, `{2}`… are the topic levels the filter's `+`
    /// wildcards matched (`cell_{1}_voltage`).
    pub metric: String,
    /// A JSON path into the payload (`$.ENERGY.Total`, `temperature`,
    /// `$.cells[0].voltage`); absent: the payload is the number itself (`21.5`, `ON`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The unit as mesura writes it (`W`, `kWh`, `°C`, `%`…); default none.
    #[serde(default)]
    pub unit: String,
    /// `gauge` (a level) or `counter` (a running total).
    #[serde(default = "default_kind")]
    pub kind: Kind,
    /// Multiplies the value (`0.001` for Wh to kWh).
    #[serde(default = "default_scale")]
    pub scale: f64,
}

pub fn default_kind() -> Kind {
    Kind::Gauge
}
pub fn default_scale() -> f64 {
    1.0
}

impl MqttDeviceConfig {
    /// The preset's subscription and the file's own, in that order.
    pub fn all_subscriptions(&self) -> Vec<Subscription> {
        let preset = self
            .preset
            .zip(self.name.as_deref())
            .map(|(preset, name)| preset.subscription(name));
        preset.into_iter().chain(self.subscriptions.iter().cloned()).collect()
    }

    /// Takes the `mqtt` backend's broker (and its topic prefix, which no
    /// subscription may reach) from config.yaml. `Err((key, message))` when the
    /// device has no broker or would read back what mesura publishes.
    pub fn inherit(&mut self, backend: Option<&MqttConfig>) -> Result<(), (String, String)> {
        self.backend = backend.cloned().map(Box::new);
        if self.host.is_none() && backend.is_none() {
            return Err((
                "host".into(),
                "no broker: set `host`, or configure the mqtt backend (its broker is the default)".into(),
            ));
        }
        if let Some(prefix) = backend.map(|b| b.topic_prefix.as_str()) {
            for s in self.all_subscriptions() {
                if mqtt_payload::reaches_prefix(&s.topic, prefix) {
                    return Err((
                        "subscriptions".into(),
                        format!(
                            "`{}` would read back what mesura publishes under `{prefix}/` (the mqtt backend's topic_prefix): a loop",
                            s.topic
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl DeviceType for MqttDeviceConfig {
    const PUSHES: bool = true;

    fn default_poll_interval() -> Duration {
        Duration::ZERO
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        if self.preset.is_some() != self.name.is_some() {
            return Err(("preset".into(), "`preset` and `name` go together".into()));
        }
        if self.password.is_some() && self.password_file.is_some() {
            return Err(("password".into(), "set password or password_file, not both".into()));
        }
        let subscriptions = self.all_subscriptions();
        if subscriptions.is_empty() {
            return Err((
                "subscriptions".into(),
                "nothing to subscribe to: set `preset` and `name`, or `subscriptions`".into(),
            ));
        }
        for s in &subscriptions {
            let bad_wildcard = s.topic.split('/').enumerate().any(|(i, level)| {
                (level.contains('+') && level != "+")
                    || (level.contains('#') && (level != "#" || i + 1 != s.topic.split('/').count()))
            });
            if s.topic.is_empty() || bad_wildcard {
                return Err((
                    "subscriptions".into(),
                    format!(
                        "`{}` is not a topic filter (`+` is a whole level, `#` the last one)",
                        s.topic
                    ),
                ));
            }
            if s.values.is_empty() {
                return Err(("values".into(), format!("`{}` maps no values", s.topic)));
            }
            for v in &s.values {
                if let Some(path) = &v.path {
                    JsonPath::parse(path).map_err(|e| ("path".to_owned(), e))?;
                }
                if Unit::from_symbol(&v.unit).is_none() {
                    let known: Vec<&str> = Unit::ALL.iter().map(|u| u.symbol()).filter(|s| !s.is_empty()).collect();
                    return Err((
                        "unit".into(),
                        format!("`{}` is not a unit mesura knows ({})", v.unit, known.join(", ")),
                    ));
                }
                if !v.scale.is_finite() || v.scale == 0.0 {
                    return Err((
                        "scale".into(),
                        format!("must be a number other than 0, not {}", v.scale),
                    ));
                }
                if mqtt_payload::metric_name(&v.metric, &[]).is_empty() {
                    return Err(("metric".into(), format!("`{}` is no metric name", v.metric)));
                }
            }
            if let Some(path) = &s.timestamp {
                JsonPath::parse(path).map_err(|e| ("timestamp".to_owned(), e))?;
            }
        }
        super::device_time::validate_max_clock_skew(self.max_clock_skew)
    }

    fn metrics() -> Vec<MetricSpec> {
        presets::all_metrics()
    }

    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        Ok(Box::new(MqttMonitor::new(self, ctx)?))
    }
}

/// A subscription ready to apply: parsed paths, known units.
#[derive(Debug)]
struct Mapping {
    filter: String,
    values: Vec<(String, Option<JsonPath>, Unit, Kind, f64)>,
    timestamp: Option<JsonPath>,
    /// Whether any value needs JSON (else the payload is a plain number).
    json: bool,
}

/// Turns one message into readings: what matched, and a reason when the payload
/// was malformed for a subscription that matched it.
#[derive(Debug)]
struct Decoder {
    device: crate::reading::DeviceId,
    mappings: Vec<Mapping>,
    clock: DeviceClock,
}

impl Decoder {
    fn decode(
        &mut self,
        topic: &str,
        payload: &[u8],
        arrival: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Reading>, String> {
        let mut readings = Vec::new();
        for m in &self.mappings {
            let Some(captured) = mqtt_payload::matches(&m.filter, topic) else {
                continue;
            };
            let json = if m.json {
                Some(mqtt_payload::json(payload).map_err(|e| format!("{topic}: {e}"))?)
            } else {
                None
            };
            let time = match (&m.timestamp, &json) {
                (Some(path), Some(doc)) => match path.find(doc) {
                    Some(t) => match mqtt_payload::time(t) {
                        Ok(at) => DeviceTime::At(at),
                        Err(text) => DeviceTime::Unreadable(text),
                    },
                    None => DeviceTime::Absent,
                },
                _ => DeviceTime::Absent,
            };
            // A retained message may be as old as its publisher's last report.
            let at = self.clock.stamp(&time, Stamps::Capture, topic, arrival);
            for (template, path, unit, kind, scale) in &m.values {
                let value = match (path, &json) {
                    (Some(path), Some(doc)) => match path.find(doc) {
                        Some(v) => mqtt_payload::number(v),
                        // Publishers send what they have (Zigbee2MQTT: what changed).
                        None => continue,
                    },
                    _ => std::str::from_utf8(payload)
                        .map_err(|_| mqtt_payload::PayloadError::NotNumber("(not UTF-8)".into()))
                        .and_then(mqtt_payload::text_number),
                };
                let value = value.map_err(|e| format!("{topic}: {e}"))?;
                readings.push(Reading {
                    device: self.device.clone(),
                    device_type: "",
                    metric: mqtt_payload::metric_name(template, &captured).into(),
                    value: Value::Number(value * scale),
                    unit: *unit,
                    kind: *kind,
                    timestamp: at,
                });
            }
        }
        Ok(readings)
    }
}

/// Reads what the client task received.
#[derive(Debug)]
pub struct MqttMonitor {
    client: client::Client,
    metrics: Vec<MetricSpec>,
    /// Messages that matched a subscription but could not be read.
    malformed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    clock_counts: std::sync::Arc<std::sync::Mutex<[(&'static str, u64); 2]>>,
    /// How long a read waits for a message before it returns with none.
    quiet: Duration,
}

/// A read with nothing to report returns after this long, so the supervisor sees
/// the device alive (a Tasmota plug reports every 5 minutes by default).
const QUIET: Duration = Duration::from_secs(30);

impl Decoder {
    /// The mappings of `config` ready to apply, and the metrics they name (those
    /// without `{n}` placeholders).
    fn new(
        config: &MqttDeviceConfig,
        device: crate::reading::DeviceId,
    ) -> Result<(Decoder, Vec<MetricSpec>), MonitorError> {
        let mut mappings = Vec::new();
        let mut metrics = Vec::new();
        for s in config.all_subscriptions() {
            let mut values = Vec::new();
            for v in &s.values {
                let path = v
                    .path
                    .as_deref()
                    .map(JsonPath::parse)
                    .transpose()
                    .map_err(MonitorError::config)?;
                let unit = Unit::from_symbol(&v.unit)
                    .ok_or_else(|| MonitorError::config(format!("unknown unit `{}`", v.unit)))?;
                if !v.metric.contains('{') {
                    let name = intern(&mqtt_payload::metric_name(&v.metric, &[]));
                    if !metrics.iter().any(|m: &MetricSpec| m.name == name) {
                        metrics.push(match v.kind {
                            Kind::Counter => MetricSpec::counter(name, unit, "from MQTT"),
                            Kind::Gauge => MetricSpec::gauge(name, unit, "from MQTT"),
                        });
                    }
                }
                values.push((v.metric.clone(), path, unit, v.kind, v.scale));
            }
            mappings.push(Mapping {
                json: values.iter().any(|v| v.1.is_some()),
                filter: s.topic.clone(),
                values,
                timestamp: s
                    .timestamp
                    .as_deref()
                    .map(JsonPath::parse)
                    .transpose()
                    .map_err(MonitorError::config)?,
            });
        }
        let decoder = Decoder {
            clock: DeviceClock::new(device.clone(), config.max_clock_skew),
            device,
            mappings,
        };
        Ok((decoder, metrics))
    }
}

impl MqttMonitor {
    pub fn new(config: &MqttDeviceConfig, ctx: MonitorContext) -> Result<Self, MonitorError> {
        let (decoder, metrics) = Decoder::new(config, ctx.id.clone())?;
        let malformed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let clock_counts = std::sync::Arc::new(std::sync::Mutex::new(decoder.clock.counts()));
        let settings = client::Settings::new(config, &ctx)?;
        let client = client::Client::spawn(settings, decoder, ctx, malformed.clone(), clock_counts.clone());
        Ok(MqttMonitor {
            client,
            metrics,
            malformed,
            clock_counts,
            quiet: QUIET,
        })
    }
}

#[async_trait]
impl Monitor for MqttMonitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        self.client.next(self.quiet).await
    }

    fn metrics(&self) -> &[MetricSpec] {
        &self.metrics
    }

    fn protocol_errors(&self) -> Vec<(&'static str, u64)> {
        let mut errors = vec![("payload", self.malformed.load(std::sync::atomic::Ordering::Relaxed))];
        errors.extend(*self.clock_counts.lock().unwrap_or_else(|e| e.into_inner()));
        errors
    }
}

#[cfg(test)]
mod tests;
