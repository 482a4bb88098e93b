//! The keys every device file may have, whatever its type. A leaf: device types
//! (`monitors/`) check their settings against these without importing the loader.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Keys every device file may have, whatever its type.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CommonConfig {
    /// The device type: selects the monitor (`mesura devices` lists them).
    #[serde(rename = "type")]
    pub device_type: String,
    /// How often to read the device (humantime: `10s`, `5m`). For streaming meters
    /// (DSMR) how often a reading is kept. Default: the type's own.
    #[serde(default, with = "super::duration::option", skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<Duration>,
    /// `false` keeps the file but does not run the device.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The configured backends that receive this device's readings (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<String>>,
    /// Consecutive failed reads after which the circuit breaker opens.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// Longest wait between retries of a failing device (exponential backoff from
    /// the poll interval, jittered). Default: 30s for local devices, 5m for cloud
    /// services (see [`DeviceConfig::max_backoff`]).
    #[serde(default, with = "super::duration::option", skip_serializing_if = "Option::is_none")]
    pub max_backoff: Option<Duration>,
    /// How long an open breaker waits before probing the device again. Default:
    /// 5m for cloud services; a local device is probed on its backoff instead, so
    /// it is read again within `max_backoff` of coming back.
    #[serde(default, with = "super::duration::option", skip_serializing_if = "Option::is_none")]
    pub breaker_cooldown: Option<Duration>,
    /// How the energy this meter counts is priced: the cost table and `/api/costs`
    /// (docs/costs.md). None: not costed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tariff: Option<super::tariff::TariffConfig>,
}

pub fn default_enabled() -> bool {
    true
}
pub fn default_failure_threshold() -> u32 {
    5
}
