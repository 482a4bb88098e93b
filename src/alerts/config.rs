//! The keys of alert rules and webhooks: the `alerts:` section of config.yaml and
//! the rule files in `config.d/alerts/` (loaded by `config/alerts.rs`). Imports only
//! leaf files of `config/`, which imports this one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::duration;
use crate::config::secret::{mask_url, serialize_masked_url, Secret};

/// `alerts:` in config.yaml.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Rules by name (letters, digits, `_` and `-`); more in `config.d/alerts/*.yaml`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, AlertRule>,
    /// Where alerts are POSTed, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// Publish every rule's state on the `mqtt` backend's broker (and, with its
    /// Home Assistant discovery on, a `binary_sensor` per rule).
    #[serde(default = "default_alerts_mqtt")]
    pub mqtt: bool,
    /// How often silence, failing backends, `for` and `repeat` are checked.
    #[serde(default = "default_check_interval", with = "duration")]
    pub check_interval: Duration,
}

pub fn default_alerts_mqtt() -> bool {
    true
}
pub fn default_check_interval() -> Duration {
    Duration::from_secs(1)
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            rules: BTreeMap::new(),
            webhooks: BTreeMap::new(),
            mqtt: default_alerts_mqtt(),
            check_interval: default_check_interval(),
        }
    }
}

/// One rule: a metric past a threshold, a silent device, or a failing backend.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// The device the rule watches (its id, the device file's stem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The metric compared with `above` or `below`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    /// Fires when the metric is above this value (for `for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// Fires when the metric is below this value (for `for`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// Hysteresis: a firing alert resolves only once the metric is back at or
    /// below this value (with `above`) or at or above it (with `below`). Default:
    /// the threshold itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<f64>,
    /// How long the metric must stay past the threshold before the alert fires.
    /// Default `0s`: at the first reading past it.
    #[serde(
        rename = "for",
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub for_: Option<Duration>,
    /// Fires when the device has sent no reading for this long.
    #[serde(default, with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub silent: Option<Duration>,
    /// The backend (`sqlite`, `csv`, `mqtt`, `uplink`) a `failing` rule watches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Fires when the backend has failed to write or deliver for this long.
    #[serde(default, with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub failing: Option<Duration>,
    /// While firing, send the alert again this often. Default: once.
    #[serde(default, with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub repeat: Option<Duration>,
    /// The text sent when the alert fires; `{rule}`, `{device}`, `{metric}`,
    /// `{value}`, `{unit}`, `{threshold}` and `{backend}` are filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The text sent when the alert resolves (same placeholders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_message: Option<String>,
    /// 1 (min) to 5 (urgent), as ntfy counts; Gotify gets twice this.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// The webhooks this rule is sent to, by name. Default: every webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Vec<String>>,
    /// `false` keeps the rule but does not evaluate it.
    #[serde(default = "default_rule_enabled")]
    pub enabled: bool,
}

pub fn default_priority() -> u8 {
    3
}
pub fn default_rule_enabled() -> bool {
    true
}

/// What a rule watches, checked and resolved from its keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `metric` of `device` above `limit`; firing until at or below `clear`.
    Above {
        device: String,
        metric: String,
        limit: f64,
        clear: f64,
    },
    /// `metric` of `device` below `limit`; firing until at or above `clear`.
    Below {
        device: String,
        metric: String,
        limit: f64,
        clear: f64,
    },
    /// No reading from `device` for `after`.
    Silent { device: String, after: Duration },
    /// `backend` failing for `after`.
    Failing { backend: String, after: Duration },
}

impl AlertRule {
    /// The rule's condition, or `(key, message)` naming what is wrong.
    pub fn condition(&self, backends: &[&str], webhooks: &[&str]) -> Result<Condition, (String, String)> {
        let err = |key: &str, message: String| Err((key.to_owned(), message));
        if !(1..=5).contains(&self.priority) {
            return err("priority", format!("must be 1 to 5, not {}", self.priority));
        }
        for name in self.webhooks.iter().flatten() {
            if !webhooks.contains(&name.as_str()) {
                return err(
                    "webhooks",
                    format!(
                        "webhook `{name}` is not defined under alerts.webhooks (defined: {})",
                        webhooks.join(", ")
                    ),
                );
            }
        }
        let kinds = [
            self.above.is_some() || self.below.is_some(),
            self.silent.is_some(),
            self.failing.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return err(
                "above",
                "a rule has exactly one of: `above`/`below` (with `device` and `metric`), `silent` (with `device`), `failing` (with `backend`)".into(),
            );
        }
        if self.above.is_none() && self.below.is_none() {
            for key in ["metric", "clear", "for"] {
                let set = match key {
                    "metric" => self.metric.is_some(),
                    "clear" => self.clear.is_some(),
                    _ => self.for_.is_some(),
                };
                if set {
                    return err(key, format!("`{key}` goes with `above` or `below` only"));
                }
            }
        }
        let device = || match &self.device {
            Some(d) if !d.is_empty() => Ok(d.clone()),
            _ => Err(("device".to_owned(), "this rule needs `device` (a device id)".to_owned())),
        };
        if let Some(after) = self.failing {
            if self.device.is_some() {
                return err("device", "a `failing` rule watches a `backend`, not a device".into());
            }
            let Some(backend) = &self.backend else {
                return err("backend", "a `failing` rule needs `backend`".into());
            };
            if !backends.contains(&backend.as_str()) {
                return err(
                    "backend",
                    format!(
                        "backend `{backend}` is not configured (configured: {})",
                        backends.join(", ")
                    ),
                );
            }
            return Ok(Condition::Failing {
                backend: backend.clone(),
                after,
            });
        }
        if self.backend.is_some() {
            return err("backend", "`backend` goes with `failing` only".into());
        }
        if let Some(after) = self.silent {
            if after.is_zero() {
                return err("silent", "must be longer than 0s".into());
            }
            return Ok(Condition::Silent {
                device: device()?,
                after,
            });
        }
        let device = device()?;
        let Some(metric) = self.metric.clone() else {
            return err("metric", "an `above`/`below` rule needs `metric`".into());
        };
        match (self.above, self.below) {
            (Some(_), Some(_)) => err("below", "set `above` or `below`, not both".into()),
            (Some(limit), None) => {
                let clear = self.clear.unwrap_or(limit);
                if clear > limit || !clear.is_finite() || !limit.is_finite() {
                    return err("clear", format!("must be at or below `above` ({limit})"));
                }
                Ok(Condition::Above {
                    device,
                    metric,
                    limit,
                    clear,
                })
            }
            (None, Some(limit)) => {
                let clear = self.clear.unwrap_or(limit);
                if clear < limit || !clear.is_finite() || !limit.is_finite() {
                    return err("clear", format!("must be at or above `below` ({limit})"));
                }
                Ok(Condition::Below {
                    device,
                    metric,
                    limit,
                    clear,
                })
            }
            (None, None) => err("above", "set `above` or `below`".into()),
        }
    }
}

/// How a webhook's request looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// mesura's own JSON object (rule, state, message, value…).
    #[default]
    Json,
    /// ntfy: the message as the body, `Title`, `Priority` and `Tags` headers; the
    /// URL is the topic (`https://ntfy.sh/<topic>`).
    Ntfy,
    /// Gotify: `{"title", "message", "priority"}`; the URL is
    /// `https://<server>/message?token=<app token>`.
    Gotify,
}

/// `alerts.webhooks.<name>`.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST. A token in it (`?token=`) is never printed.
    #[serde(serialize_with = "serialize_masked_url")]
    pub url: String,
    /// `json`, `ntfy` or `gotify`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Extra request headers (`Authorization: Bearer ${NTFY_TOKEN}`); their
    /// values are never printed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// How long one POST may take.
    #[serde(default = "default_webhook_timeout", with = "duration")]
    pub timeout: Duration,
    /// Attempts per message before it is given up (logged); retries back off
    /// from 1s, doubling, up to `max_backoff`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Longest wait between two attempts.
    #[serde(default = "default_webhook_max_backoff", with = "duration")]
    pub max_backoff: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &mask_url(&self.url))
            .field("format", &self.format)
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

pub fn default_webhook_timeout() -> Duration {
    Duration::from_secs(10)
}
pub fn default_max_attempts() -> u32 {
    8
}
pub fn default_webhook_max_backoff() -> Duration {
    Duration::from_secs(300)
}

/// A rule name becomes an MQTT topic level and a Home Assistant object id.
pub fn name_error(name: &str) -> Option<String> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (!ok).then(|| format!("`{name}` cannot be a rule name: letters, digits, `_` and `-` only"))
}

impl AlertsConfig {
    pub fn webhook_names(&self) -> Vec<&str> {
        self.webhooks.keys().map(String::as_str).collect()
    }

    /// The first problem of config.yaml's `alerts:` as `(key path, message)`.
    pub fn validate(&self, backends: &[&str]) -> Option<(String, String)> {
        if self.check_interval < Duration::from_millis(100) {
            return Some(("alerts.check_interval".into(), "must be 100ms or longer".into()));
        }
        for (name, hook) in &self.webhooks {
            let key = format!("alerts.webhooks.{name}");
            if let Err((_, message)) = crate::monitors::http_client::check_url("url", &hook.url) {
                return Some((format!("{key}.url"), message));
            }
            if hook.max_attempts == 0 {
                return Some((format!("{key}.max_attempts"), "must be at least 1".into()));
            }
            if hook.timeout.is_zero() {
                return Some((format!("{key}.timeout"), "must be longer than 0s".into()));
            }
        }
        let webhooks = self.webhook_names();
        for (name, rule) in &self.rules {
            if let Some(message) = name_error(name) {
                return Some((format!("alerts.rules.{name}"), message));
            }
            if let Err((key, message)) = rule.condition(backends, &webhooks) {
                return Some((format!("alerts.rules.{name}.{key}"), message));
            }
        }
        None
    }
}
