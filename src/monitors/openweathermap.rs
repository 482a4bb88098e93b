//! Current weather from OpenWeatherMap (`/data/2.5/weather`), so heating can be
//! plotted against the outdoor temperature. One request per poll; the reading's
//! timestamp is the observation time the service reports, not the poll time, unless
//! it is far from the host clock (`max_clock_skew`, see `device_time`).
//! See docs/devices/openweathermap.md.

use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::device_time::{DeviceClock, DeviceTime, Stamps};
use super::http_client::{self as http, check_url, json_answer, AnswerError, Suspension};
use super::{DeviceType, Monitor, MonitorContext, MonitorError};
use crate::config::common::CommonConfig;
use crate::config::secret::Secret;
use crate::reading::{MetricSpec, Reading, Unit};

const SERVICE: &str = "OpenWeatherMap";

/// `type: openweathermap`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct OpenWeatherMapConfig {
    /// Latitude of the place, in decimal degrees (−90 to 90).
    pub latitude: f64,
    /// Longitude of the place, in decimal degrees (−180 to 180).
    pub longitude: f64,
    /// The API key (`appid`), from the environment: `appid: ${OWM_API_KEY}`.
    pub appid: Secret,
    /// Where the API lives; tests point it at a local server.
    #[serde(
        default = "default_base_url",
        serialize_with = "crate::config::secret::serialize_masked_url"
    )]
    pub base_url: String,
    /// How long one request may take, connection included.
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// An observation time (`dt`) further than this from the host clock is not
    /// used: the readings get the time they arrived, and the answer is reported as
    /// stale or wrong.
    #[serde(
        default = "crate::monitors::device_time::default_max_clock_skew",
        with = "crate::config::duration"
    )]
    pub max_clock_skew: Duration,
}

pub fn default_base_url() -> String {
    "https://api.openweathermap.org".into()
}
pub fn default_timeout() -> Duration {
    Duration::from_secs(15)
}

/// Below this poll interval a warning is logged: the service updates its
/// observations about every 10 minutes, and free keys have a monthly quota.
pub const FRIENDLY_POLL: Duration = Duration::from_secs(60);

impl DeviceType for OpenWeatherMapConfig {
    /// A rate-limited cloud API: an open breaker waits `breaker_cooldown`.
    const CLOUD: bool = true;

    /// Observations change about every 10 minutes; polling faster stores repeats
    /// and spends the free tier's quota.
    fn default_poll_interval() -> Duration {
        Duration::from_secs(10 * 60)
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        if !(-90.0..=90.0).contains(&self.latitude) {
            return Err((
                "latitude".into(),
                format!("must be between -90 and 90, not {}", self.latitude),
            ));
        }
        if !(-180.0..=180.0).contains(&self.longitude) {
            return Err((
                "longitude".into(),
                format!("must be between -180 and 180, not {}", self.longitude),
            ));
        }
        if self.appid.expose().trim().is_empty() {
            return Err((
                "appid".into(),
                "is empty: set it from the environment, e.g. `appid: ${OWM_API_KEY}`".into(),
            ));
        }
        check_url("base_url", &self.base_url)?;
        if self.timeout < Duration::from_secs(1) || self.timeout > Duration::from_secs(120) {
            return Err(("timeout".into(), "must be between 1s and 2m".into()));
        }
        super::device_time::validate_max_clock_skew(self.max_clock_skew)?;
        Ok(())
    }

    fn metrics() -> Vec<MetricSpec> {
        all_metrics()
    }

    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        Ok(Box::new(OpenWeatherMapMonitor::new(self, ctx.poll_interval, ctx)?))
    }
}

/// The warning for a poll interval faster than the service is useful, if it is.
pub fn poll_interval_warning(poll: Duration) -> Option<String> {
    (poll < FRIENDLY_POLL).then(|| {
        format!(
            "poll_interval {} is below 1 minute: OpenWeatherMap updates observations about every \
             10 minutes, and a free key allows 1,000,000 calls a month (60 a minute)",
            humantime::format_duration(poll)
        )
    })
}

const METRICS: &[MetricSpec] = &[
    MetricSpec::gauge("temperature", Unit::Celsius, "outdoor temperature"),
    MetricSpec::gauge("feels_like", Unit::Celsius, "perceived temperature"),
    MetricSpec::gauge("temp_min", Unit::Celsius, "lowest temperature observed in the area now"),
    MetricSpec::gauge(
        "temp_max",
        Unit::Celsius,
        "highest temperature observed in the area now",
    ),
    MetricSpec::gauge("humidity", Unit::Percent, "relative humidity"),
    MetricSpec::gauge("pressure", Unit::HectoPascal, "atmospheric pressure at sea level"),
    MetricSpec::gauge("wind_speed", Unit::MetrePerSecond, "wind speed"),
    MetricSpec::gauge("wind_gust", Unit::MetrePerSecond, "wind gusts (when reported)"),
    MetricSpec::gauge(
        "wind_direction",
        Unit::Degree,
        "where the wind comes from (meteorological degrees)",
    ),
    MetricSpec::gauge("clouds", Unit::Percent, "cloud cover"),
    MetricSpec::gauge("visibility", Unit::Metre, "visibility (at most 10 km)"),
    MetricSpec::gauge("rain_1h", Unit::Millimetre, "rain in the last hour (0 when none)"),
    MetricSpec::gauge("snow_1h", Unit::Millimetre, "snow in the last hour (0 when none)"),
    MetricSpec::gauge(
        "condition_id",
        Unit::None,
        "weather condition code (e.g. 500 light rain)",
    ),
];

pub fn all_metrics() -> Vec<MetricSpec> {
    METRICS.to_vec()
}

/// One decoded observation: metric values and when they were observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// `dt`, as sent: whether it is believable is the monitor's call.
    pub observed_at: DeviceTime,
    /// In [`METRICS`] order; metrics the response lacks are left out.
    pub values: Vec<(&'static str, f64)>,
}

/// Decodes a `/data/2.5/weather` body. Pure: bytes in, values or an error out.
/// Every field is optional (the service leaves out gusts, visibility, rain…);
/// a body without `main` is not a weather answer and is refused.
pub fn decode_weather(body: &[u8]) -> Result<Observation, AnswerError> {
    let json = json_answer(body)?;
    let main =
        json.get("main")
            .filter(|m| m.is_object())
            .ok_or_else(|| match json.get("message").and_then(Json::as_str) {
                Some(message) => {
                    AnswerError::Shape(format!("the answer has no weather data; the service says: {message}"))
                }
                None => AnswerError::Shape("the answer has no `main` block: not a current weather answer".into()),
            })?;
    let num = |v: Option<&Json>| v.and_then(number);
    let wind = json.get("wind");
    let at = |parent: Option<&Json>, key: &str| num(parent.and_then(|p| p.get(key)));
    let precipitation = |key: &str| at(json.get(key), "1h").unwrap_or(0.0);
    let condition = json
        .get("weather")
        .and_then(Json::as_array)
        .and_then(|list| list.first())
        .and_then(|w| num(w.get("id")));
    let candidates: [(&'static str, Option<f64>); 14] = [
        ("temperature", at(Some(main), "temp")),
        ("feels_like", at(Some(main), "feels_like")),
        ("temp_min", at(Some(main), "temp_min")),
        ("temp_max", at(Some(main), "temp_max")),
        ("humidity", at(Some(main), "humidity")),
        ("pressure", at(Some(main), "pressure")),
        ("wind_speed", at(wind, "speed")),
        ("wind_gust", at(wind, "gust")),
        ("wind_direction", at(wind, "deg")),
        ("clouds", at(json.get("clouds"), "all")),
        ("visibility", num(json.get("visibility"))),
        ("rain_1h", Some(precipitation("rain"))),
        ("snow_1h", Some(precipitation("snow"))),
        ("condition_id", condition),
    ];
    let values = candidates
        .into_iter()
        .filter_map(|(name, v)| v.filter(|v| v.is_finite()).map(|v| (name, v)))
        .collect();
    let observed_at = match json.get("dt") {
        None | Some(Json::Null) => DeviceTime::Absent,
        Some(dt) => number(dt)
            .filter(|t| t.fract() == 0.0 && t.abs() < 1e15)
            .and_then(|t| DateTime::from_timestamp(t as i64, 0))
            .map_or_else(|| DeviceTime::Unreadable(dt.to_string()), DeviceTime::At),
    };
    Ok(Observation { observed_at, values })
}

/// A JSON number, or a number in a string (some proxies and older answers quote them).
fn number(v: &Json) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[derive(Debug)]
pub struct OpenWeatherMapMonitor {
    config: OpenWeatherMapConfig,
    ctx: MonitorContext,
    client: reqwest::Client,
    url: String,
    suspension: Suspension,
    clock: DeviceClock,
}

impl OpenWeatherMapMonitor {
    pub fn new(
        config: &OpenWeatherMapConfig,
        poll_interval: Duration,
        ctx: MonitorContext,
    ) -> Result<Self, MonitorError> {
        if let Some(warning) = poll_interval_warning(poll_interval) {
            tracing::warn!(device = %ctx.id, "{warning}");
        }
        Ok(OpenWeatherMapMonitor {
            client: http::client(config.timeout)?,
            url: format!("{}/data/2.5/weather", config.base_url.trim_end_matches('/')),
            suspension: Suspension::persistent(
                ctx.clock.clone(),
                ctx.data_dir.join(format!("openweathermap-{}.ratelimit.json", ctx.id)),
                &ctx.id,
            ),
            clock: DeviceClock::new(ctx.id.clone(), config.max_clock_skew),
            config: config.clone(),
            ctx,
        })
    }

    async fn poll(&mut self) -> Result<Vec<Reading>, MonitorError> {
        self.suspension.check(SERVICE)?;
        let timeout = self.config.timeout;
        let query = [
            ("lat", self.config.latitude.to_string()),
            ("lon", self.config.longitude.to_string()),
            ("units", "metric".to_string()),
            ("appid", self.config.appid.expose().to_string()),
        ];
        let response = self
            .client
            .get(&self.url)
            .query(&query)
            .send()
            .await
            .map_err(|e| http::transport_error(SERVICE, e, timeout))?;
        let status = response.status();
        let wait = http::retry_after(response.headers(), self.ctx.clock.now());
        let body = response
            .bytes()
            .await
            .map_err(|e| http::transport_error(SERVICE, e, timeout))?;
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED => {
                return Err(MonitorError::config(format!(
                    "{SERVICE} refused the API key (HTTP 401): the key in `appid` is invalid, or new and \
                     not active yet (new keys can take a couple of hours); the service says: {}",
                    http::snippet(&body)
                )))
            }
            StatusCode::TOO_MANY_REQUESTS => {
                return Err(self.suspension.suspend(
                    SERVICE,
                    wait,
                    &format!("HTTP 429, calls per minute or month exceeded: {}", http::snippet(&body)),
                ))
            }
            other => {
                return Err(MonitorError::refused(format!(
                    "{SERVICE} answered HTTP {other}: {}",
                    http::snippet(&body)
                )))
            }
        }
        let observation = decode_weather(&body).map_err(|e| e.into_monitor_error(SERVICE))?;
        let timestamp = self
            .clock
            .stamp(&observation.observed_at, Stamps::Now, "dt", self.ctx.clock.now());
        Ok(observation
            .values
            .iter()
            .filter_map(|(name, value)| METRICS.iter().find(|m| m.name == *name).map(|m| (m, *value)))
            .map(|(spec, value)| spec.reading(&self.ctx.id, value, timestamp))
            .collect())
    }
}

#[async_trait]
impl Monitor for OpenWeatherMapMonitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        self.poll().await
    }

    /// Complete: a response lacking one leaves it out, never adds another.
    fn metrics_complete(&self) -> bool {
        true
    }

    fn metrics(&self) -> &[MetricSpec] {
        METRICS
    }

    fn protocol_errors(&self) -> Vec<(&'static str, u64)> {
        self.clock.counts().to_vec()
    }
}

impl OpenWeatherMapMonitor {
    /// Whether the monitor is holding back because of a rate limit (status, tests).
    pub fn is_suspended(&self) -> bool {
        self.suspension.is_suspended()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(o: &Observation) -> Vec<(&'static str, f64)> {
        o.values.clone()
    }

    /// Values read off the fixture files by hand.
    #[test]
    fn recorded_answers_decode_to_the_values_they_show() {
        let fixture = |name: &str| {
            let path = format!("{}/tests/fixtures/openweathermap/{name}", env!("CARGO_MANIFEST_DIR"));
            let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            decode_weather(&body).unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        let o = fixture("owm25_weather_munich_overcast.json");
        assert_eq!(o.observed_at.instant().map(|t| t.timestamp()), Some(1_744_200_000));
        assert_eq!(
            values(&o),
            vec![
                ("temperature", -0.27),
                ("feels_like", -3.9),
                ("temp_min", -1.0),
                ("temp_max", 0.5),
                ("humidity", 54.0),
                ("pressure", 1018.0),
                ("wind_speed", 3.09),
                ("wind_direction", 220.0),
                ("clouds", 100.0),
                ("visibility", 10000.0),
                ("rain_1h", 0.0),
                ("snow_1h", 0.0),
                ("condition_id", 804.0),
            ]
        );
        // Two conditions: the first (the primary one) counts; no feels_like; a
        // fractional humidity is kept as it is.
        let o = fixture("owm25_weather_munich_rain_and_snow.json");
        assert_eq!(o.observed_at.instant().map(|t| t.timestamp()), Some(1_547_387_400));
        assert_eq!(
            values(&o),
            vec![
                ("temperature", 1.49),
                ("temp_min", 1.0),
                ("temp_max", 2.0),
                ("humidity", 93.7),
                ("pressure", 1005.0),
                ("wind_speed", 11.8),
                ("wind_direction", 250.0),
                ("clouds", 75.0),
                ("visibility", 7000.0),
                ("rain_1h", 0.0),
                ("snow_1h", 0.0),
                ("condition_id", 615.0),
            ]
        );
        // The documentation example was fetched without units=metric, so its
        // temperatures are in kelvin; mesura always asks for metric.
        let o = fixture("owm25_weather_zocca_rain_docs_example.json");
        assert_eq!(o.observed_at.instant().map(|t| t.timestamp()), Some(1_661_870_592));
        assert_eq!(
            values(&o),
            vec![
                ("temperature", 298.48),
                ("feels_like", 298.74),
                ("temp_min", 297.56),
                ("temp_max", 300.05),
                ("humidity", 64.0),
                ("pressure", 1015.0),
                ("wind_speed", 0.62),
                ("wind_gust", 1.18),
                ("wind_direction", 349.0),
                ("clouds", 100.0),
                ("visibility", 10000.0),
                ("rain_1h", 3.16),
                ("snow_1h", 0.0),
                ("condition_id", 501.0),
            ]
        );
    }

    #[test]
    fn a_minimal_answer_keeps_what_is_there_and_zeroes_precipitation() {
        let o = decode_weather(br#"{"main":{"temp":"4.5"},"dt":1700000000}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            values(&o),
            vec![("temperature", 4.5), ("rain_1h", 0.0), ("snow_1h", 0.0)]
        );
        assert_eq!(o.observed_at.instant().map(|t| t.timestamp()), Some(1_700_000_000));
    }

    #[test]
    fn odd_shapes_are_errors_or_ignored_never_panics() {
        // Not JSON: the parser's error is kept as the cause.
        let not_json = decode_weather(b"").err().map(|e| e.into_monitor_error(SERVICE));
        assert!(
            not_json.as_ref().and_then(std::error::Error::source).is_some(),
            "{not_json:?}"
        );
        assert!(decode_weather(b"[]").is_err());
        assert!(decode_weather(b"{\"main\": 3}").is_err());
        let e = decode_weather(br#"{"cod":"404","message":"city not found"}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("city not found"), "{e}");
        let o = decode_weather(
            br#"{"main":{"temp":null,"humidity":true},"weather":"x","wind":[],"rain":{"3h":2},"dt":-5}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(values(&o), vec![("rain_1h", 0.0), ("snow_1h", 0.0)]);
        // A time before 1970 is decoded as sent; the monitor refuses it, not the codec.
        assert_eq!(o.observed_at.instant().map(|t| t.timestamp()), Some(-5));
        for (dt, expected) in [
            ("null", DeviceTime::Absent),
            ("\"soon\"", DeviceTime::Unreadable("\"soon\"".into())),
            ("1.5", DeviceTime::Unreadable("1.5".into())),
            ("1e300", DeviceTime::Unreadable("1e+300".into())),
        ] {
            let body = format!(r#"{{"main":{{"temp":1}},"dt":{dt}}}"#);
            let o = decode_weather(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(o.observed_at, expected, "{dt}");
        }
    }

    #[test]
    fn the_api_key_rule_and_ranges() {
        let ok = OpenWeatherMapConfig {
            latitude: 52.1,
            longitude: 5.1,
            appid: Secret::new("k"),
            base_url: default_base_url(),
            timeout: default_timeout(),
            max_clock_skew: super::super::device_time::default_max_clock_skew(),
        };
        let common: CommonConfig = serde_yaml_ng::from_str("type: openweathermap").unwrap_or_else(|e| panic!("{e}"));
        assert!(ok.validate(&common).is_ok());
        let bad = OpenWeatherMapConfig {
            latitude: 91.0,
            ..ok.clone()
        };
        assert_eq!(bad.validate(&common).err().map(|e| e.0), Some("latitude".to_string()));
        let bad = OpenWeatherMapConfig {
            appid: Secret::new(" "),
            ..ok.clone()
        };
        assert_eq!(bad.validate(&common).err().map(|e| e.0), Some("appid".to_string()));
        let bad = OpenWeatherMapConfig {
            max_clock_skew: Duration::ZERO,
            ..ok.clone()
        };
        assert_eq!(
            bad.validate(&common).err().map(|e| e.0),
            Some("max_clock_skew".to_string())
        );
        let bad = OpenWeatherMapConfig {
            base_url: "ftp://x".into(),
            ..ok
        };
        assert_eq!(bad.validate(&common).err().map(|e| e.0), Some("base_url".to_string()));
        assert!(poll_interval_warning(Duration::from_secs(30)).is_some());
        assert!(poll_interval_warning(Duration::from_secs(600)).is_none());
    }
}
