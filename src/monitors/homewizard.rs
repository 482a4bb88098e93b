//! `type: homewizard`: HomeWizard-style P1 meters over their local JSON API, v1
//! (HTTP: `GET /api` once for identity, `GET /api/v1/data` per poll) or v2 (HTTPS
//! with a token: `GET /api`, then `GET /api/measurement`). Metric names, units
//! and kinds are the DSMR ones wherever the quantity is the same, so a user can swap
//! a P1 cable for a HomeWizard dongle and keep their dashboards.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use super::dsmr::map::METRICS as DSMR_METRICS;
use super::{Monitor, MonitorContext, MonitorError};
use crate::config::{CommonConfig, DeviceTypeConfig, Secret};
use crate::protocols::dsmr::parse_timestamp;
use crate::reading::{DeviceId, MetricSpec, Reading, Value};

mod tls;

/// `type: homewizard`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct HomewizardConfig {
    /// Host name or address of the meter (`192.168.1.30`, `p1meter-aabbcc.local`).
    pub host: String,
    /// Which local API to use: `1` (HTTP, no token) or `2` (HTTPS with a token).
    #[serde(default = "default_api_version")]
    pub api_version: ApiVersion,
    /// Port of the local API. Default 80 for API v1, 443 for API v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// API v2: the token made on the meter with `POST /api/user` (see the docs), from
    /// the environment: `token: ${HOMEWIZARD_TOKEN}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// API v2: the meter's serial (`5c2fafaabbcc`, on its label and in `/api`). When
    /// set, the meter's certificate must be issued to this serial, not just to some
    /// HomeWizard device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// API v2: PEM file with the CA that signs the meter's certificate. Default:
    /// HomeWizard's own CA, built in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// API v2: `false` accepts any certificate (anyone on the network can then read
    /// the token). Only for a meter whose certificate cannot be verified.
    #[serde(default = "default_tls_verify")]
    pub tls_verify: bool,
    /// A request not answered within this is a link failure (retried with backoff).
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
}

/// The local API generation: v1 is plain HTTP and open to anyone on the network once
/// switched on in the app; v2 is HTTPS and needs a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum ApiVersion {
    V1,
    V2,
}

impl TryFrom<u8> for ApiVersion {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(ApiVersion::V1),
            2 => Ok(ApiVersion::V2),
            _ => Err(format!("api_version {v} is not 1 or 2")),
        }
    }
}

impl From<ApiVersion> for u8 {
    fn from(v: ApiVersion) -> u8 {
        match v {
            ApiVersion::V1 => 1,
            ApiVersion::V2 => 2,
        }
    }
}

pub fn default_api_version() -> ApiVersion {
    ApiVersion::V1
}
pub fn default_tls_verify() -> bool {
    true
}
pub fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl HomewizardConfig {
    /// The configured port, else the API version's own.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.api_version {
            ApiVersion::V1 => 80,
            ApiVersion::V2 => 443,
        })
    }
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
        if self.port == Some(0) {
            return Err(("port".into(), "must be between 1 and 65535".into()));
        }
        if self.timeout.is_zero() {
            return Err(("timeout".into(), "must be longer than 0s (default 5s)".into()));
        }
        match self.api_version {
            ApiVersion::V2 => {
                let token = self.token.as_ref().map(|t| t.expose().trim()).unwrap_or("");
                if token.is_empty() {
                    return Err((
                        "token".into(),
                        "API v2 needs a token: make one on the meter (docs/devices/homewizard.md) and set \
                         `token: ${HOMEWIZARD_TOKEN}`"
                            .into(),
                    ));
                }
                if token.contains(char::is_whitespace) {
                    return Err(("token".into(), "has spaces in it: copy the token alone".into()));
                }
                if let Some(serial) = &self.serial {
                    if serial.trim().is_empty() || serial.contains(['/', ' ']) {
                        return Err((
                            "serial".into(),
                            format!("`{serial}` is not a serial (12 hex digits, e.g. `5c2fafaabbcc`)"),
                        ));
                    }
                }
            }
            ApiVersion::V1 => {
                for (key, set) in [
                    ("token", self.token.is_some()),
                    ("serial", self.serial.is_some()),
                    ("ca_file", self.ca_file.is_some()),
                    ("tls_verify", !self.tls_verify),
                ] {
                    if set {
                        return Err((key.into(), "is for API v2 only: add `api_version: 2`".into()));
                    }
                }
            }
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

/// `/api/measurement` (API v2) key → DSMR metric: the v1 quantities under new names.
const DIRECT_V2: &[(&str, &str)] = &[
    ("energy_import_kwh", "energy_delivered_total"),
    ("energy_import_t1_kwh", "energy_delivered_tariff1"),
    ("energy_import_t2_kwh", "energy_delivered_tariff2"),
    ("energy_import_t3_kwh", "energy_delivered_tariff3"),
    ("energy_import_t4_kwh", "energy_delivered_tariff4"),
    ("energy_export_kwh", "energy_returned_total"),
    ("energy_export_t1_kwh", "energy_returned_tariff1"),
    ("energy_export_t2_kwh", "energy_returned_tariff2"),
    ("energy_export_t3_kwh", "energy_returned_tariff3"),
    ("energy_export_t4_kwh", "energy_returned_tariff4"),
    ("voltage_l1_v", "voltage_l1"),
    ("voltage_l2_v", "voltage_l2"),
    ("voltage_l3_v", "voltage_l3"),
    ("frequency_hz", "frequency"),
    ("tariff", "tariff"),
    ("any_power_fail_count", "power_failures"),
    ("long_power_fail_count", "long_power_failures"),
    ("voltage_sag_l1_count", "voltage_sags_l1"),
    ("voltage_sag_l2_count", "voltage_sags_l2"),
    ("voltage_sag_l3_count", "voltage_sags_l3"),
    ("voltage_swell_l1_count", "voltage_swells_l1"),
    ("voltage_swell_l2_count", "voltage_swells_l2"),
    ("voltage_swell_l3_count", "voltage_swells_l3"),
    ("average_power_15m_w", "peak_demand_current_quarter"),
];

const SIGNED_POWER_V2: &[(&str, &str, &str)] = &[
    ("power_w", "power_delivered", "power_returned"),
    ("power_l1_w", "power_delivered_l1", "power_returned_l1"),
    ("power_l2_w", "power_delivered_l2", "power_returned_l2"),
    ("power_l3_w", "power_delivered_l3", "power_returned_l3"),
];

const CURRENT_V2: &[(&str, &str)] = &[
    ("current_l1_a", "current_l1"),
    ("current_l2_a", "current_l2"),
    ("current_l3_a", "current_l3"),
];

/// Where one API version keeps each quantity; [`readings`] is the same for both.
pub struct Fields {
    /// The path polled, for messages.
    pub path: &'static str,
    direct: &'static [(&'static str, &'static str)],
    signed_power: &'static [(&'static str, &'static str, &'static str)],
    current: &'static [(&'static str, &'static str)],
    /// (value, timestamp) keys of the month's peak, first found wins.
    peak: &'static [(&'static str, &'static str)],
    /// (value, timestamp, id) keys of a gas meter reported outside `external[]`.
    gas: Option<(&'static str, &'static str, &'static str)>,
}

pub const V1: Fields = Fields {
    path: "/api/v1/data",
    direct: DIRECT,
    signed_power: SIGNED_POWER,
    current: CURRENT,
    // "montly" (sic) is what v1 firmware sends; the right spelling is accepted too.
    peak: &[
        ("montly_power_peak_w", "montly_power_peak_timestamp"),
        ("monthly_power_peak_w", "monthly_power_peak_timestamp"),
    ],
    gas: Some(("total_gas_m3", "gas_timestamp", "gas_unique_id")),
};

pub const V2: Fields = Fields {
    path: "/api/measurement",
    direct: DIRECT_V2,
    signed_power: SIGNED_POWER_V2,
    current: CURRENT_V2,
    peak: &[("monthly_power_peak_w", "monthly_power_peak_timestamp")],
    // v2 reports every M-Bus meter, gas included, only in `external[]`.
    gas: None,
};

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
        // API v2: `2024-06-28T14:00:00`, the same local time written out.
        Json::String(s) if s.contains('T') => {
            let d: String = s.chars().filter(char::is_ascii_digit).collect();
            if d.len() != 14 {
                return None;
            }
            d[2..].to_owned()
        }
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

/// The readings in one `/api/v1/data` (`V1`) or `/api/measurement` (`V2`) answer.
/// Missing, `null` and malformed fields are absent; anything but a JSON object is
/// invalid data.
pub fn readings(
    fields: &Fields,
    device: &DeviceId,
    data: &Json,
    now: DateTime<Utc>,
) -> Result<Vec<Reading>, MonitorError> {
    let obj = data
        .as_object()
        .ok_or_else(|| MonitorError::InvalidData(format!("`{}` did not answer a JSON object", fields.path)))?;
    let num = |key: &str| obj.get(key).and_then(Json::as_f64).filter(|v| v.is_finite());
    let mut out = Vec::new();
    let mut push = |name: &str, value: f64, at: DateTime<Utc>| {
        // `gas_delivered_2` is a second gas meter: the spec of `gas_delivered`.
        let base = || spec(name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_'));
        if let Some(spec) = spec(name).or_else(base) {
            out.push(reading(device, name, spec, value, at));
        }
    };
    for (key, metric) in fields.direct {
        if let Some(v) = num(key) {
            push(metric, v, now);
        }
    }
    for (key, delivered, returned) in fields.signed_power {
        if let Some(v) = num(key) {
            push(delivered, v.max(0.0), now);
            push(returned, (-v).max(0.0), now);
        }
    }
    for (key, metric) in fields.current {
        if let Some(v) = num(key) {
            push(metric, v.abs(), now);
        }
    }
    if let Some((v, ts)) = fields.peak.iter().find_map(|(value, ts)| num(value).map(|v| (v, *ts))) {
        push("peak_demand_month", v, local_timestamp(obj.get(ts)).unwrap_or(now));
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut gas_id = None;
    if let Some((value, ts, id)) = fields.gas {
        gas_id = obj.get(id).and_then(Json::as_str);
        if let Some(v) = num(value) {
            counts.insert("gas_delivered", 1);
            push("gas_delivered", v, local_timestamp(obj.get(ts)).unwrap_or(now));
        }
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
    fields: &'static Fields,
    /// API v2: the `Authorization` header value, marked sensitive so it never shows.
    auth: Option<reqwest::header::HeaderValue>,
    ctx: MonitorContext,
    identified: bool,
}

impl HomewizardMonitor {
    pub fn new(config: &HomewizardConfig, ctx: MonitorContext) -> Result<Self, MonitorError> {
        let builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout);
        let host = config.host.trim();
        let port = config.effective_port();
        let (builder, scheme, fields, auth) = match config.api_version {
            ApiVersion::V1 => (builder, "http", &V1, None),
            ApiVersion::V2 => {
                let ca_file = match &config.ca_file {
                    Some(path) => Some(tls::read_ca_file(path).map_err(MonitorError::Config)?),
                    None => None,
                };
                let source = match &config.ca_file {
                    Some(path) => format!("ca_file {}", path.display()),
                    None => "the built-in HomeWizard CA".to_owned(),
                };
                let trust = if config.tls_verify {
                    tls::Trust::Ca {
                        pem: ca_file.as_deref().unwrap_or(tls::HOMEWIZARD_CA),
                        source: &source,
                        serial: config.serial.as_deref(),
                    }
                } else {
                    tracing::warn!(
                        device = %ctx.id,
                        "tls_verify is false: the HomeWizard meter's certificate is NOT checked, so \
                         anyone on the network can pose as the meter and read its token"
                    );
                    tls::Trust::Nothing
                };
                let tls = tls::client_config(trust).map_err(MonitorError::Config)?;
                let token = config
                    .token
                    .as_ref()
                    .map(|t| t.expose().trim())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| MonitorError::Config("`token` is required for api_version 2".into()))?;
                let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| MonitorError::Config("`token` has characters a header cannot carry".into()))?;
                auth.set_sensitive(true);
                (builder.use_preconfigured_tls(tls), "https", &V2, Some(auth))
            }
        };
        let client = builder
            .build()
            .map_err(|e| MonitorError::Config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(HomewizardMonitor {
            client,
            base_url: format!("{scheme}://{host}:{port}"),
            fields,
            auth,
            ctx,
            identified: false,
        })
    }

    async fn get(&self, path: &str) -> Result<Json, MonitorError> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self.client.get(&url);
        if let Some(auth) = &self.auth {
            request = request
                .header(reqwest::header::AUTHORIZATION, auth.clone())
                .header("X-Api-Version", "2");
        }
        let response = request.send().await.map_err(|e| link_error(&url, &e))?;
        let status = response.status();
        if !status.is_success() {
            use reqwest::StatusCode;
            if self.auth.is_some() && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                // Retrying soon cannot help: only a new token will.
                return Err(MonitorError::Config(format!(
                    "GET {url}: HTTP {status}: token rejected (make a new one, docs/devices/homewizard.md, \
                     and set `token`)"
                )));
            }
            let hint = if status == StatusCode::FORBIDDEN {
                " (the local API is off: switch it on in the HomeWizard Energy app)"
            } else {
                ""
            };
            return Err(MonitorError::Refused(format!("GET {url}: HTTP {status}{hint}")));
        }
        let body = response.bytes().await.map_err(|e| link_error(&url, &e))?;
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
            // The link is down or the token is refused: nothing else will work either.
            Err(e @ (MonitorError::Link(_) | MonitorError::Config(_))) => return Err(e),
            // An odd identity answer does not stop the data from being read.
            Err(e) => tracing::warn!(device = %self.ctx.id, error = %e, "HomeWizard identity not readable"),
        }
        self.identified = true;
        Ok(())
    }
}

fn link_error(url: &str, e: &reqwest::Error) -> MonitorError {
    let text = error_chain(e);
    // A certificate that does not verify fails the same way every time: say where
    // to look rather than leave it as a flaky link.
    let hint = if text.contains("certificate") {
        " (the meter's certificate did not verify: see `ca_file`, `serial` in docs/devices/homewizard.md)"
    } else {
        ""
    };
    MonitorError::Link(format!("GET {url}: {text}{hint}"))
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
        let data = self.get(self.fields.path).await?;
        let readings = readings(self.fields, &self.ctx.id, &data, self.ctx.clock.now())?;
        if readings.is_empty() {
            return Err(MonitorError::InvalidData(format!(
                "`{}` had no value mesura knows (is this a P1 meter?)",
                self.fields.path
            )));
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
        // API v2 writes the same local time out: 28 June 2024 14:00 CEST.
        let t = local_timestamp(Some(&serde_json::json!("2024-06-28T14:00:00")));
        assert_eq!(t, Some(utc("2024-06-28T12:00:00Z")));
        assert_eq!(local_timestamp(Some(&serde_json::json!("2024-06-28T14:00"))), None);
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.to_utc())
            .unwrap_or(DateTime::UNIX_EPOCH)
    }

    #[test]
    fn v2_fields_map_to_the_v1_metrics() {
        let v1: Vec<&str> = all_metrics().iter().map(|m| m.name).collect();
        let v2 = DIRECT_V2
            .iter()
            .map(|(_, m)| *m)
            .chain(SIGNED_POWER_V2.iter().flat_map(|(_, d, r)| [*d, *r]))
            .chain(CURRENT_V2.iter().map(|(_, m)| *m));
        for name in v2 {
            assert!(v1.contains(&name), "{name}");
        }
        let device: DeviceId = Arc::from("hw");
        let now = utc("2026-01-01T00:00:00Z");
        let data = serde_json::json!({"power_l2_w": -5, "energy_import_kwh": "12", "external": [
            {"unique_id": "a", "type": "gas_meter", "value": 1.5, "unit": "m3", "timestamp": "bad"}]});
        let r = readings(&V2, &device, &data, now).unwrap_or_default();
        let got: Vec<(&str, f64)> = r
            .iter()
            .map(|r| match r.value {
                Value::Number(v) => (&*r.metric, v),
                Value::Text(_) => (&*r.metric, f64::NAN),
            })
            .collect();
        // A string where a number belongs is skipped, not the whole answer; a bad
        // timestamp falls back to the time of the poll.
        assert_eq!(
            got,
            [
                ("power_delivered_l2", 0.0),
                ("power_returned_l2", 5.0),
                ("gas_delivered", 1.5)
            ]
        );
        assert_eq!(r[2].timestamp, now);
    }
}
