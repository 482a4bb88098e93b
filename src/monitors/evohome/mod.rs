//! Evohome and other Resideo Total Connect Comfort (TCC) heating systems in
//! Europe, through the TCC v2 "EMEA" cloud API: zone temperatures, setpoints and
//! modes, hot water, and the system mode. The service rate-limits hard, so this
//! monitor asks as little as it can: a cached token (renewed, not re-issued), the
//! installation once every few hours, one status request per poll, and nothing
//! at all while the service has asked us to wait. See docs/devices/evohome.md.

mod api;
mod auth;
pub mod decode;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use self::api::{Answer, SERVICE};
use self::auth::Auth;
use self::decode::{Fault, LocationInfo, MetricValue};
use super::http_client::{self as http, check_url, Suspension};
use super::{DeviceType, Monitor, MonitorContext, MonitorError};
use crate::config::common::CommonConfig;
use crate::config::secret::Secret;
use crate::reading::{Kind, MetricSpec, Reading, Unit, Value};

/// `type: evohome`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct EvohomeConfig {
    /// The Total Connect Comfort account's e-mail address, from the environment:
    /// `username: ${EVOHOME_USERNAME}`.
    pub username: Secret,
    /// The account's password, from the environment: `password: ${EVOHOME_PASSWORD}`.
    pub password: Secret,
    /// Which location (home) to read when the account has several: its
    /// `locationId`, or its position in the account's list starting at 0.
    /// Default: the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationRef>,
    /// The API's base URL (EMEA); tests point it at a local server.
    #[serde(
        default = "default_base_url",
        serialize_with = "crate::config::secret::serialize_masked_url"
    )]
    pub base_url: String,
    /// The OAuth token endpoint.
    #[serde(
        default = "default_auth_url",
        serialize_with = "crate::config::secret::serialize_masked_url"
    )]
    pub auth_url: String,
    /// How long one request may take, connection included.
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
}

/// A location id or index, written as a number or a string.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum LocationRef {
    Number(u64),
    Text(String),
}

impl std::fmt::Display for LocationRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocationRef::Number(n) => write!(f, "{n}"),
            LocationRef::Text(s) => f.write_str(s.trim()),
        }
    }
}

pub fn default_base_url() -> String {
    "https://tccna.resideo.com/WebAPI/emea/api/v1".into()
}
pub fn default_auth_url() -> String {
    "https://tccna.resideo.com/Auth/OAuth/Token".into()
}
pub fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Faster polling than this gets an account rate-limited (the official
/// integrations poll about every 5 minutes).
pub const MIN_POLL: Duration = Duration::from_secs(60);
/// How often the installation (locations, zones) is fetched again.
const INSTALLATION_REFRESH: TimeDelta = TimeDelta::hours(6);

impl DeviceType for EvohomeConfig {
    /// A rate-limited cloud API: an open breaker waits `breaker_cooldown`.
    const CLOUD: bool = true;

    fn default_poll_interval() -> Duration {
        Duration::from_secs(5 * 60)
    }

    fn validate(&self, common: &CommonConfig) -> Result<(), (String, String)> {
        if let Some(poll) = common.poll_interval.filter(|p| *p < MIN_POLL) {
            return Err((
                "poll_interval".into(),
                format!(
                    "{} is too fast: Resideo rate-limits accounts that poll more often than once a minute \
                     (the official integrations use 5 minutes, the default)",
                    humantime::format_duration(poll)
                ),
            ));
        }
        for (key, value, example) in [
            ("username", &self.username, "${EVOHOME_USERNAME}"),
            ("password", &self.password, "${EVOHOME_PASSWORD}"),
        ] {
            if value.expose().trim().is_empty() {
                return Err((
                    key.into(),
                    format!("is empty: set it from the environment, e.g. `{key}: {example}`"),
                ));
            }
        }
        if matches!(&self.location, Some(LocationRef::Text(s)) if s.trim().is_empty()) {
            return Err((
                "location".into(),
                "is empty: give a location id or index, or leave it out".into(),
            ));
        }
        check_url("base_url", &self.base_url)?;
        check_url("auth_url", &self.auth_url)?;
        if self.timeout < Duration::from_secs(1) || self.timeout > Duration::from_secs(120) {
            return Err(("timeout".into(), "must be between 1s and 2m".into()));
        }
        Ok(())
    }

    fn metrics() -> Vec<MetricSpec> {
        all_metrics()
    }

    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        Ok(Box::new(EvohomeMonitor::new(self, ctx)?))
    }
}

/// Zone metrics are named after the zones; these are their patterns.
const METRICS: &[MetricSpec] = &[
    MetricSpec::gauge(
        "<zone>_temperature",
        Unit::Celsius,
        "zone temperature (absent while its sensor is unavailable)",
    ),
    MetricSpec::gauge("<zone>_setpoint", Unit::Celsius, "zone target temperature"),
    MetricSpec::gauge(
        "<zone>_mode",
        Unit::None,
        "zone setpoint mode: FollowSchedule, PermanentOverride, TemporaryOverride…",
    ),
    MetricSpec::gauge("dhw_temperature", Unit::Celsius, "hot water temperature"),
    MetricSpec::gauge("dhw_state", Unit::None, "hot water heating: On or Off"),
    MetricSpec::gauge(
        "dhw_mode",
        Unit::None,
        "hot water mode: FollowSchedule, PermanentOverride…",
    ),
    MetricSpec::gauge(
        "system_mode",
        Unit::None,
        "system mode: Auto, AutoWithEco, Away, DayOff, HeatingOff, Custom…",
    ),
];

pub fn all_metrics() -> Vec<MetricSpec> {
    METRICS.to_vec()
}

/// Picks the configured location out of the account's list.
pub fn select_location<'a>(
    locations: &'a [LocationInfo],
    wanted: Option<&LocationRef>,
) -> Result<&'a LocationInfo, String> {
    let listed = || {
        locations
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{i}: {} ({})", l.id, l.name.as_deref().unwrap_or("unnamed")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(wanted) = wanted else {
        return locations.first().ok_or_else(|| {
            "the account has no locations: is the system registered in the Total Connect Comfort app?".into()
        });
    };
    let key = wanted.to_string();
    if let Some(l) = locations.iter().find(|l| l.id == key) {
        return Ok(l);
    }
    key.parse::<usize>()
        .ok()
        .and_then(|i| locations.get(i))
        .ok_or_else(|| format!("the account has no location `{key}`; it has {}", listed()))
}

#[derive(Debug)]
pub struct EvohomeMonitor {
    config: EvohomeConfig,
    ctx: MonitorContext,
    client: reqwest::Client,
    auth: Auth,
    suspension: Suspension,
    user_id: Option<String>,
    location: Option<(LocationInfo, DateTime<Utc>)>,
    /// The faults last logged, so each change is logged once, not every poll.
    faults: BTreeSet<Fault>,
    warned_empty: bool,
}

impl EvohomeMonitor {
    pub fn new(config: &EvohomeConfig, ctx: MonitorContext) -> Result<Self, MonitorError> {
        let client = http::client(config.timeout)?;
        let cache = ctx.data_dir.join(format!("evohome-{}.token.json", ctx.id));
        let auth = Auth::new(
            client.clone(),
            &config.auth_url,
            &config.username,
            &config.password,
            cache,
            ctx.clock.clone(),
            config.timeout,
            &ctx.id,
        );
        Ok(EvohomeMonitor {
            config: config.clone(),
            suspension: Suspension::persistent(
                ctx.clock.clone(),
                ctx.data_dir.join(format!("evohome-{}.ratelimit.json", ctx.id)),
                &ctx.id,
            ),
            client,
            auth,
            ctx,
            user_id: None,
            location: None,
            faults: BTreeSet::new(),
            warned_empty: false,
        })
    }

    /// Whether the monitor is holding back because of a rate limit (status, tests).
    pub fn is_suspended(&self) -> bool {
        self.suspension.is_suspended()
    }

    /// GET `path` with a bearer token; a refused token is renewed and the request
    /// sent once more.
    async fn get(&mut self, path: &str, what: &str) -> Result<Vec<u8>, MonitorError> {
        let url = format!("{}/{}", self.config.base_url.trim_end_matches('/'), path);
        for attempt in 0..2 {
            let token = self.auth.access_token(&mut self.suspension).await?;
            let request = self
                .client
                .get(&url)
                .bearer_auth(token)
                .header(reqwest::header::ACCEPT, "application/json");
            match api::send(request, what, self.config.timeout, self.ctx.clock.now()).await? {
                Answer::Ok(body) => return Ok(body),
                Answer::RateLimited { wait, detail } => return Err(self.suspension.suspend(SERVICE, wait, &detail)),
                Answer::Unauthorized(detail) => {
                    if attempt == 0 {
                        tracing::debug!(device = %self.ctx.id, "the access token was refused; renewing it");
                        self.auth.access_refused();
                        continue;
                    }
                    return Err(MonitorError::config(format!(
                        "{SERVICE} refused a fresh access token for the {what} (HTTP 401: {detail})"
                    )));
                }
                Answer::Failed { status, detail } => {
                    if status == StatusCode::NOT_FOUND {
                        // The location may be gone or renumbered: look again next time.
                        self.location = None;
                    }
                    return Err(MonitorError::refused(format!(
                        "{SERVICE} {what} answered HTTP {}: {detail}",
                        status.as_u16()
                    )));
                }
            }
        }
        Err(MonitorError::refused(format!(
            "{SERVICE} {what}: the access token was refused twice"
        )))
    }

    /// The location to read, from the installation fetched at most every 6 h.
    async fn location(&mut self) -> Result<LocationInfo, MonitorError> {
        let now = self.ctx.clock.now();
        if let Some((loc, at)) = &self.location {
            if now - *at < INSTALLATION_REFRESH && now >= *at {
                return Ok(loc.clone());
            }
        }
        match self.fetch_location().await {
            Ok(loc) => {
                self.location = Some((loc.clone(), now));
                Ok(loc)
            }
            // A failed refresh keeps the location known so far: the status
            // request is what matters, and it may well work.
            Err(e) if !matches!(e, MonitorError::RateLimited { .. }) && self.location.is_some() => {
                tracing::warn!(device = %self.ctx.id, error = %e, "cannot refresh the installation; keeping the one known");
                let loc = self.location.as_ref().map(|(l, _)| l.clone());
                if let Some((_, at)) = &mut self.location {
                    *at = now;
                }
                loc.ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch_location(&mut self) -> Result<LocationInfo, MonitorError> {
        let user_id = match &self.user_id {
            Some(id) => id.clone(),
            None => {
                let body = self.get("userAccount", "user account").await?;
                let id = decode::decode_user_id(&body).map_err(|e| e.into_monitor_error(SERVICE))?;
                self.user_id = Some(id.clone());
                id
            }
        };
        let path = format!("location/installationInfo?userId={user_id}&includeTemperatureControlSystems=True");
        let body = self.get(&path, "installation").await?;
        let locations = decode::decode_installation(&body).map_err(|e| e.into_monitor_error(SERVICE))?;
        let chosen = select_location(&locations, self.config.location.as_ref()).map_err(MonitorError::config)?;
        if self.location.as_ref().is_none_or(|(l, _)| l.id != chosen.id) {
            tracing::info!(
                device = %self.ctx.id,
                location = %chosen.id,
                name = chosen.name.as_deref().unwrap_or(""),
                zones = chosen.zone_count,
                hot_water = chosen.has_dhw,
                locations = locations.len(),
                "{SERVICE} location found"
            );
        }
        Ok(chosen.clone())
    }

    async fn poll(&mut self) -> Result<Vec<Reading>, MonitorError> {
        self.suspension.check(SERVICE)?;
        let location = self.location().await?;
        let path = format!("location/{}/status?includeTemperatureControlSystems=True", location.id);
        let body = self.get(&path, "location status").await?;
        let status = decode::decode_status(&body).map_err(|e| e.into_monitor_error(SERVICE))?;
        self.log_faults(&status.faults);
        if status.systems == 0 && !self.warned_empty {
            self.warned_empty = true;
            tracing::warn!(device = %self.ctx.id, location = %location.id, "the location has no heating system (no gateway or no controller): nothing to read");
        }
        let now = self.ctx.clock.now();
        Ok(decode::metrics(&status, &location.ghost_zones)
            .into_iter()
            .map(|(name, value)| {
                let (value, unit) = match value {
                    MetricValue::Number(v, unit) => (Value::Number(v), unit),
                    MetricValue::Text(t) => (Value::Text(Arc::from(t)), Unit::None),
                };
                Reading {
                    device: self.ctx.id.clone(),
                    device_type: "",
                    metric: Arc::from(name),
                    value,
                    unit,
                    kind: Kind::Gauge,
                    timestamp: now,
                }
            })
            .collect())
    }

    /// Logs new faults as warnings and cleared ones as info, once per change.
    fn log_faults(&mut self, faults: &[Fault]) {
        let now: BTreeSet<Fault> = faults.iter().cloned().collect();
        for f in now.difference(&self.faults) {
            tracing::warn!(device = %self.ctx.id, source = %f.source, fault = %f.fault_type, since = f.since.as_deref().unwrap_or("?"), "evohome fault");
        }
        for f in self.faults.difference(&now) {
            tracing::info!(device = %self.ctx.id, source = %f.source, fault = %f.fault_type, "evohome fault cleared");
        }
        self.faults = now;
    }

    /// The faults currently active, as last reported (status, tests).
    pub fn active_faults(&self) -> Vec<Fault> {
        self.faults.iter().cloned().collect()
    }
}

#[async_trait]
impl Monitor for EvohomeMonitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        self.poll().await
    }

    fn metrics(&self) -> &[MetricSpec] {
        METRICS
    }
}
