//! Alerts: rules on readings, device silence and backend health, evaluated by a
//! task of the daemon (`daemon/alerts.rs`) and sent to MQTT and webhooks.
//!
//! `config.rs` holds the keys, `rule.rs` the pure state machine, `webhook.rs` the
//! request bodies (pure) and the sender with its retries, `mqtt.rs` the states on
//! the broker with their Home Assistant discovery. See docs/alerts.md.

pub mod config;
pub mod mqtt;
pub mod rule;
pub mod webhook;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use config::{AlertRule, AlertsConfig, Condition, WebhookConfig, WebhookFormat};

/// What an alert says when it fires, repeats or resolves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub rule: String,
    /// `firing` or `resolved`.
    pub state: &'static str,
    /// A reminder of an alert that still fires (`repeat`).
    pub repeat: bool,
    pub title: String,
    pub message: String,
    /// 1 to 5.
    pub priority: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The metric's value, or the silence's / outage's length in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    pub at: DateTime<Utc>,
}

impl Event {
    pub fn firing(&self) -> bool {
        self.state == "firing"
    }
}

#[cfg(test)]
mod tests;
