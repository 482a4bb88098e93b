//! `type: homewizard`: HomeWizard-style P1 meters over their local JSON API, v1
//! (HTTP: `GET /api` once for identity, `GET /api/v1/data` per poll) or v2 (HTTPS
//! with a token: `GET /api`, then `GET /api/measurement`). Metric names, units
//! and kinds are the DSMR ones wherever the quantity is the same, so a user can swap
//! a P1 cable for a HomeWizard dongle and keep their dashboards.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::device_time::DeviceClock;
use super::p1_metrics::METRICS as DSMR_METRICS;
use super::{DeviceType, Monitor, MonitorContext, MonitorError};
use crate::config::common::CommonConfig;
use crate::config::secret::Secret;
use crate::reading::{MetricSpec, Reading};

mod map;
mod tls;

pub use map::{all_metrics, readings, Fields, V1, V2};

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
    /// The meter's own times (gas capture time, monthly peak) further than this
    /// from the host clock are not used: such readings get the time of the poll,
    /// and the meter's clock is reported as wrong.
    #[serde(
        default = "crate::monitors::device_time::default_max_clock_skew",
        with = "crate::config::duration"
    )]
    pub max_clock_skew: Duration,
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

impl DeviceType for HomewizardConfig {
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
        super::device_time::validate_max_clock_skew(self.max_clock_skew)?;
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

    fn metrics() -> Vec<MetricSpec> {
        all_metrics()
    }

    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        Ok(Box::new(HomewizardMonitor::new(self, ctx)?))
    }
}

#[derive(Debug)]
pub struct HomewizardMonitor {
    client: reqwest::Client,
    base_url: String,
    fields: &'static Fields,
    /// API v2: the `Authorization` header value, marked sensitive so it never shows.
    auth: Option<reqwest::header::HeaderValue>,
    ctx: MonitorContext,
    identified: bool,
    clock: DeviceClock,
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
                    Some(path) => Some(tls::read_ca_file(path).map_err(MonitorError::config)?),
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
                let tls = tls::client_config(trust).map_err(MonitorError::config)?;
                let token = config
                    .token
                    .as_ref()
                    .map(|t| t.expose().trim())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| MonitorError::config("`token` is required for api_version 2"))?;
                let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| MonitorError::config("`token` has characters a header cannot carry"))?;
                auth.set_sensitive(true);
                (builder.use_preconfigured_tls(tls), "https", &V2, Some(auth))
            }
        };
        let client = builder
            .build()
            .map_err(|e| MonitorError::config(format!("cannot set up the HTTP client: {e}")).caused_by(e))?;
        Ok(HomewizardMonitor {
            client,
            base_url: format!("{scheme}://{host}:{port}"),
            fields,
            auth,
            clock: DeviceClock::new(ctx.id.clone(), config.max_clock_skew),
            ctx,
            identified: false,
        })
    }

    async fn get(&self, path: &str) -> Result<Json, MonitorError> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self.client.get(&url);
        // Only the masked form goes into errors (logs, /health).
        let url = crate::config::secret::mask_url(&url);
        if let Some(auth) = &self.auth {
            request = request
                .header(reqwest::header::AUTHORIZATION, auth.clone())
                .header("X-Api-Version", "2");
        }
        let response = request.send().await.map_err(|e| link_error(&url, e))?;
        let status = response.status();
        if !status.is_success() {
            use reqwest::StatusCode;
            if self.auth.is_some() && matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                // Retrying soon cannot help: only a new token will.
                return Err(MonitorError::config(format!(
                    "GET {url}: HTTP {status}: token rejected (make a new one, docs/devices/homewizard.md, \
                     and set `token`)"
                )));
            }
            let hint = if status == StatusCode::FORBIDDEN {
                " (the local API is off: switch it on in the HomeWizard Energy app)"
            } else {
                ""
            };
            return Err(MonitorError::refused(format!("GET {url}: HTTP {status}{hint}")));
        }
        let body = response.bytes().await.map_err(|e| link_error(&url, e))?;
        serde_json::from_slice(&body)
            .map_err(|e| MonitorError::invalid_data(format!("GET {url}: not JSON: {e}")).caused_by(e))
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
            Err(e @ (MonitorError::Link { .. } | MonitorError::Config { .. })) => return Err(e),
            // An odd identity answer does not stop the data from being read.
            Err(e) => tracing::warn!(device = %self.ctx.id, error = %e, "HomeWizard identity not readable"),
        }
        self.identified = true;
        Ok(())
    }
}

fn link_error(url: &str, e: reqwest::Error) -> MonitorError {
    // The URL is in the message already, masked; reqwest's copy is not.
    let e = e.without_url();
    let text = error_chain(&e);
    // A certificate that does not verify fails the same way every time: say where
    // to look rather than leave it as a flaky link.
    let hint = if text.contains("certificate") {
        " (the meter's certificate did not verify: see `ca_file`, `serial` in docs/devices/homewizard.md)"
    } else {
        ""
    };
    MonitorError::link(format!("GET {url}: {text}{hint}")).caused_by(e)
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
        let readings = readings(self.fields, &self.ctx.id, &data, self.ctx.clock.now(), &mut self.clock)?;
        if readings.is_empty() {
            return Err(MonitorError::invalid_data(format!(
                "`{}` had no value mesura knows (is this a P1 meter?)",
                self.fields.path
            )));
        }
        Ok(readings)
    }

    fn metrics(&self) -> &[MetricSpec] {
        DSMR_METRICS
    }

    fn protocol_errors(&self) -> Vec<(&'static str, u64)> {
        self.clock.counts().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, Utc};

    use super::map::*;
    use super::*;
    use crate::reading::{DeviceId, Value};
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
        let mut clock = DeviceClock::new(device.clone(), crate::monitors::device_time::default_max_clock_skew());
        let r = readings(&V2, &device, &data, now, &mut clock).unwrap_or_default();
        let got: Vec<(&str, f64)> = r
            .iter()
            .map(|r| match r.value {
                Value::Number(v) => (&*r.metric, v),
                Value::Text(_) => (&*r.metric, f64::NAN),
            })
            .collect();
        // A string where a number belongs is skipped, not the whole answer; a bad
        // timestamp falls back to the time of the poll, and is counted.
        assert_eq!(
            got,
            [
                ("power_delivered_l2", 0.0),
                ("power_returned_l2", 5.0),
                ("gas_delivered", 1.5)
            ]
        );
        assert_eq!(r[2].timestamp, now);
        assert_eq!(clock.counts(), [("device_time_invalid", 1), ("device_time_skewed", 0)]);
    }
}
