//! `type: homewizard`: HomeWizard-style P1 meters over their local HTTP JSON API v1
//! (`GET /api` once for identity, `GET /api/v1/data` per poll). Metric names, units
//! and kinds are the DSMR ones wherever the quantity is the same, so a user can swap
//! a P1 cable for a HomeWizard dongle and keep their dashboards.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::dsmr::map::METRICS as DSMR_METRICS;
use super::{Monitor, MonitorContext, MonitorError};
use crate::config::{CommonConfig, DeviceTypeConfig};
use crate::protocols::dsmr::parse_timestamp;
use crate::reading::{DeviceId, MetricSpec, Reading, Value};

/// `type: homewizard`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct HomewizardConfig {
    /// Host name or address of the meter (`192.168.1.30`, `p1meter-aabbcc.local`).
    pub host: String,
    /// HTTP port of the local API.
    #[serde(default = "default_port")]
    pub port: u16,
    /// A request not answered within this is a link failure (retried with backoff).
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
}

pub fn default_port() -> u16 {
    80
}
pub fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl DeviceTypeConfig for HomewizardConfig {
    fn default_poll_interval() -> Duration {
        Duration::from_secs(10)
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        let host = self.host.trim();
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err((
                "host".into(),
                format!(
                    "`{}` is not a host name or address (no scheme or path: write e.g. `192.168.1.30`)",
                    self.host
                ),
            ));
        }
        if self.port == 0 {
            return Err(("port".into(), "must be between 1 and 65535".into()));
        }
        if self.timeout.is_zero() {
            return Err(("timeout".into(), "must be longer than 0s (default 5s)".into()));
        }
        Ok(())
    }
}

/// `/api/v1/data` key → DSMR metric, for values stored as sent.
const DIRECT: &[(&str, &str)] = &[
    ("total_power_import_kwh", "energy_delivered_total"),
    ("total_power_import_t1_kwh", "energy_delivered_tariff1"),
    ("total_power_import_t2_kwh", "energy_delivered_tariff2"),
    ("total_power_import_t3_kwh", "energy_delivered_tariff3"),
    ("total_power_import_t4_kwh", "energy_delivered_tariff4"),
    ("total_power_export_kwh", "energy_returned_total"),
    ("total_power_export_t1_kwh", "energy_returned_tariff1"),
    ("total_power_export_t2_kwh", "energy_returned_tariff2"),
    ("total_power_export_t3_kwh", "energy_returned_tariff3"),
    ("total_power_export_t4_kwh", "energy_returned_tariff4"),
    ("active_voltage_l1_v", "voltage_l1"),
    ("active_voltage_l2_v", "voltage_l2"),
    ("active_voltage_l3_v", "voltage_l3"),
    ("active_frequency_hz", "frequency"),
    ("active_tariff", "tariff"),
    ("any_power_fail_count", "power_failures"),
    ("long_power_fail_count", "long_power_failures"),
    ("voltage_sag_l1_count", "voltage_sags_l1"),
    ("voltage_sag_l2_count", "voltage_sags_l2"),
    ("voltage_sag_l3_count", "voltage_sags_l3"),
    ("voltage_swell_l1_count", "voltage_swells_l1"),
    ("voltage_swell_l2_count", "voltage_swells_l2"),
    ("voltage_swell_l3_count", "voltage_swells_l3"),
    // The running quarter-hour average is what a Belgian meter sends as 1-0:1.4.0.
    ("active_power_average_w", "peak_demand_current_quarter"),
];

/// Signed powers, split like a DSMR meter reports them: drawn ≥ 0, returned ≥ 0.
const SIGNED_POWER: &[(&str, &str, &str)] = &[
    ("active_power_w", "power_delivered", "power_returned"),
    ("active_power_l1_w", "power_delivered_l1", "power_returned_l1"),
    ("active_power_l2_w", "power_delivered_l2", "power_returned_l2"),
    ("active_power_l3_w", "power_delivered_l3", "power_returned_l3"),
];

/// HomeWizard signs phase currents by direction; DSMR meters do not. Stored unsigned
/// so `current_l1` means the same for both device types.
const CURRENT: &[(&str, &str)] = &[
    ("active_current_l1_a", "current_l1"),
    ("active_current_l2_a", "current_l2"),
    ("active_current_l3_a", "current_l3"),
];

const OTHER_METRICS: &[&str] = &[
    "gas_delivered",
    "water_delivered",
    "heat_delivered",
    "peak_demand_month",
];

fn spec(name: &str) -> Option<&'static MetricSpec> {
    DSMR_METRICS.iter().find(|m| m.name == name)
}

pub fn all_metrics() -> Vec<MetricSpec> {
    let names = DIRECT
        .iter()
        .map(|(_, m)| *m)
        .chain(SIGNED_POWER.iter().flat_map(|(_, d, r)| [*d, *r]))
        .chain(CURRENT.iter().map(|(_, m)| *m))
        .chain(OTHER_METRICS.iter().copied());
    names.filter_map(spec).copied().collect()
}

/// HomeWizard timestamps are `YYMMDDhhmmss` in the meter's local time (a JSON number,
/// so a leading zero is lost), the same as a DSMR 2.2 capture time: parsed the same
/// way (Central European time, EU summer-time rule) into UTC.
fn local_timestamp(value: Option<&Json>) -> Option<DateTime<Utc>> {
    let digits = match value? {
        Json::Number(n) => format!("{:012}", n.as_u64()?),
        Json::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    parse_timestamp(&digits)
}

fn reading(device: &DeviceId, name: &str, spec: &MetricSpec, value: f64, at: DateTime<Utc>) -> Reading {
    Reading {
        device: device.clone(),
        device_type: "",
        metric: Arc::from(name),
        value: Value::Number(value),
        unit: spec.unit,
        kind: spec.kind,
        timestamp: at,
    }
}

/// What an `external[]` meter type measures: its base metric and its unit.
fn external_kind(kind: &str) -> Option<(&'static str, &'static str)> {
    match kind {
        "gas_meter" => Some(("gas_delivered", "m3")),
        "water_meter" | "warm_water_meter" => Some(("water_delivered", "m3")),
        "heat_meter" | "inlet_heat_meter" => Some(("heat_delivered", "GJ")),
        _ => None,
    }
}

/// The readings in one `/api/v1/data` answer. Missing and `null` fields are absent;
/// anything but a JSON object is invalid data.
pub fn readings(device: &DeviceId, data: &Json, now: DateTime<Utc>) -> Result<Vec<Reading>, MonitorError> {
    let obj = data
        .as_object()
        .ok_or_else(|| MonitorError::InvalidData("`/api/v1/data` did not answer a JSON object".into()))?;
    let num = |key: &str| obj.get(key).and_then(Json::as_f64).filter(|v| v.is_finite());
    let mut out = Vec::new();
    let mut push = |name: &str, value: f64, at: DateTime<Utc>| {
        // `gas_delivered_2` is a second gas meter: the spec of `gas_delivered`.
        let base = || spec(name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_'));
        if let Some(spec) = spec(name).or_else(base) {
            out.push(reading(device, name, spec, value, at));
        }
    };
    for (key, metric) in DIRECT {
        if let Some(v) = num(key) {
            push(metric, v, now);
        }
    }
    for (key, delivered, returned) in SIGNED_POWER {
        if let Some(v) = num(key) {
            push(delivered, v.max(0.0), now);
            push(returned, (-v).max(0.0), now);
        }
    }
    for (key, metric) in CURRENT {
        if let Some(v) = num(key) {
            push(metric, v.abs(), now);
        }
    }
    if let Some(v) = num("montly_power_peak_w").or_else(|| num("monthly_power_peak_w")) {
        let at = local_timestamp(
            obj.get("montly_power_peak_timestamp")
                .or(obj.get("monthly_power_peak_timestamp")),
        );
        push("peak_demand_month", v, at.unwrap_or(now));
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let gas_id = obj.get("gas_unique_id").and_then(Json::as_str);
    if let Some(v) = num("total_gas_m3") {
        counts.insert("gas_delivered", 1);
        push(
            "gas_delivered",
            v,
            local_timestamp(obj.get("gas_timestamp")).unwrap_or(now),
        );
    }
    for ext in obj.get("external").and_then(Json::as_array).into_iter().flatten() {
        if let Some((name, at)) = external(ext, gas_id, &mut counts) {
            let (base, value) = name;
            push(&base, value, at.unwrap_or(now));
        }
    }
    Ok(out)
}

type External = ((String, f64), Option<DateTime<Utc>>);

/// One `external[]` entry (gas, water, heat meters on the P1 meter's M-Bus): named
/// like DSMR M-Bus channels, the first of a kind plain and the next `_2`, `_3` ….
/// Entries without id, type, value or a unit that fits the kind are skipped; the
/// gas meter already reported as `total_gas_m3` is not counted twice.
fn external<'a>(ext: &'a Json, gas_id: Option<&str>, counts: &mut BTreeMap<&'a str, usize>) -> Option<External> {
    let e: &Map<String, Json> = ext.as_object()?;
    let id = e.get("unique_id")?.as_str()?;
    let (base, unit) = external_kind(e.get("type")?.as_str()?)?;
    let value = e.get("value")?.as_f64().filter(|v| v.is_finite())?;
    if !e.get("unit")?.as_str()?.eq_ignore_ascii_case(unit) {
        return None;
    }
    if base == "gas_delivered" && counts.contains_key(base) && gas_id == Some(id) {
        return None;
    }
    let n = counts.entry(base).or_insert(0);
    *n += 1;
    let name = if *n == 1 {
        base.to_owned()
    } else {
        format!("{base}_{n}")
    };
    Some(((name, value), local_timestamp(e.get("timestamp"))))
}

pub struct HomewizardMonitor {
    client: reqwest::Client,
    base_url: String,
    ctx: MonitorContext,
    identified: bool,
}

impl HomewizardMonitor {
    pub fn new(config: &HomewizardConfig, ctx: MonitorContext) -> Result<Self, MonitorError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| MonitorError::Config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(HomewizardMonitor {
            client,
            base_url: format!("http://{}:{}", config.host.trim(), config.port),
            ctx,
            identified: false,
        })
    }

    async fn get(&self, path: &str) -> Result<Json, MonitorError> {
        let url = format!("{}{path}", self.base_url);
        let response = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| MonitorError::Link(format!("GET {url}: {}", error_chain(&e))))?;
        let status = response.status();
        if !status.is_success() {
            let hint = if status == reqwest::StatusCode::FORBIDDEN {
                " (the local API is off: switch it on in the HomeWizard Energy app)"
            } else {
                ""
            };
            return Err(MonitorError::Refused(format!("GET {url}: HTTP {status}{hint}")));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| MonitorError::Link(format!("GET {url}: {}", error_chain(&e))))?;
        serde_json::from_slice(&body).map_err(|e| MonitorError::InvalidData(format!("GET {url}: not JSON: {e}")))
    }

    /// `/api` once: logs what answers, so a user sees the model and firmware.
    async fn identify(&mut self) -> Result<(), MonitorError> {
        match self.get("/api").await {
            Ok(api) => {
                let field = |k: &str| api.get(k).and_then(Json::as_str).unwrap_or("?").to_owned();
                tracing::info!(
                    device = %self.ctx.id,
                    product = %field("product_type"),
                    serial = %field("serial"),
                    firmware = %field("firmware_version"),
                    api = %field("api_version"),
                    "HomeWizard meter found"
                );
            }
            // The link is down: nothing else will work either.
            Err(e @ MonitorError::Link(_)) => return Err(e),
            // An odd identity answer does not stop the data from being read.
            Err(e) => tracing::warn!(device = %self.ctx.id, error = %e, "HomeWizard identity not readable"),
        }
        self.identified = true;
        Ok(())
    }
}

/// reqwest's top-level message is "error sending request"; the cause (refused,
/// timed out) is in the chain.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[async_trait]
impl Monitor for HomewizardMonitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        if !self.identified {
            self.identify().await?;
        }
        let data = self.get("/api/v1/data").await?;
        let readings = readings(&self.ctx.id, &data, self.ctx.clock.now())?;
        if readings.is_empty() {
            return Err(MonitorError::InvalidData(
                "`/api/v1/data` had no value mesura knows (is this a P1 meter?)".into(),
            ));
        }
        Ok(readings)
    }

    fn metrics(&self) -> &[MetricSpec] {
        DSMR_METRICS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Kind, Unit};

    #[test]
    fn every_metric_has_a_dsmr_spec() {
        let names: Vec<&str> = DIRECT
            .iter()
            .map(|(_, m)| *m)
            .chain(SIGNED_POWER.iter().flat_map(|(_, d, r)| [*d, *r]))
            .chain(CURRENT.iter().map(|(_, m)| *m))
            .chain(OTHER_METRICS.iter().copied())
            .collect();
        assert_eq!(all_metrics().len(), names.len());
        assert!(all_metrics()
            .iter()
            .any(|m| m.name == "gas_delivered" && m.kind == Kind::Counter));
        assert_eq!(spec("power_returned").map(|m| m.unit), Some(Unit::Watt));
    }

    #[test]
    fn timestamps_are_local_time() {
        // 2021-06-06 14:00:10 CEST
        let t = local_timestamp(Some(&serde_json::json!(210606140010u64)));
        assert_eq!(
            t,
            DateTime::parse_from_rfc3339("2021-06-06T12:00:10Z")
                .ok()
                .map(|t| t.to_utc())
        );
        // 2009: the JSON number lost its leading zero.
        let t = local_timestamp(Some(&serde_json::json!(91201120000u64)));
        assert_eq!(
            t,
            DateTime::parse_from_rfc3339("2009-12-01T11:00:00Z")
                .ok()
                .map(|t| t.to_utc())
        );
        assert_eq!(local_timestamp(Some(&Json::Null)), None);
    }
}
