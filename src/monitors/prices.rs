//! Day-ahead electricity prices (`type: prices`): ENTSO-E's transparency platform
//! (a token, every bidding zone), EnergyZero (NL) or aWATTar (DE, AT), stored as
//! readings stamped with each slot's own start, so tomorrow's prices land in the
//! rows of tomorrow's quarter-hours. Today's and tomorrow's prices are fetched at
//! start; tomorrow's again from `fetch_at` until they are published or
//! `retry_window` has passed. A slot already stored is not sent again.
//! See docs/devices/prices.md.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveTime, Timelike as _, Utc};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::http_client::{self as http, check_url, Suspension};
use super::{DeviceType, Monitor, MonitorContext, MonitorError};
use crate::config::common::CommonConfig;
use crate::config::secret::{read_secret_file, Secret};
use crate::protocols::prices::{self, covers_day, market_day, market_day_of, PriceError, Slot};
use crate::reading::{MetricSpec, Reading, Unit};

/// Where the prices come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceSource {
    /// ENTSO-E transparency platform: every European bidding zone; needs a token.
    Entsoe,
    /// EnergyZero (the Netherlands), no token; can include VAT.
    Energyzero,
    /// aWATTar (Germany-Luxembourg, Austria), no token.
    Awattar,
}

impl PriceSource {
    fn name(self) -> &'static str {
        match self {
            PriceSource::Entsoe => "ENTSO-E",
            PriceSource::Energyzero => "EnergyZero",
            PriceSource::Awattar => "aWATTar",
        }
    }
}

/// `type: prices`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PricesConfig {
    /// `entsoe`, `energyzero` or `awattar`.
    pub source: PriceSource,
    /// The ENTSO-E security token (ENTSO-E only), from the environment:
    /// `token: ${ENTSOE_TOKEN}`. Or `token_file`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the ENTSO-E token (a relative name is looked up in systemd's
    /// `$CREDENTIALS_DIRECTORY` first).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The bidding zone: for ENTSO-E an EIC code (`10YNL----------L`) or a name
    /// (`NL`, `BE`, `DE-LU`, `AT`, …); for aWATTar `de` or `at`. EnergyZero has
    /// one zone (NL) and ignores it.
    #[serde(default)]
    pub zone: Option<String>,
    /// When tomorrow's prices are first asked for, in market time (CET/CEST),
    /// `HH:MM`. The day-ahead auction's results appear around 13:00.
    #[serde(default = "default_fetch_at")]
    pub fetch_at: String,
    /// How long after `fetch_at` tomorrow's prices are asked for again (every
    /// poll) while they are not published yet.
    #[serde(default = "default_retry_window", with = "crate::config::duration")]
    pub retry_window: Duration,
    /// Prices with VAT where the source offers them (EnergyZero); others send
    /// wholesale prices without VAT.
    #[serde(default)]
    pub vat: bool,
    /// Where the API lives, instead of the source's own; tests point it at a
    /// local server.
    #[serde(
        default,
        serialize_with = "serialize_masked_optional_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub base_url: Option<String>,
    /// How long one request may take, connection included.
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
}

fn serialize_masked_optional_url<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => crate::config::secret::serialize_masked_url(url, s),
        None => s.serialize_none(),
    }
}

pub fn default_fetch_at() -> String {
    "13:15".into()
}
pub fn default_retry_window() -> Duration {
    Duration::from_secs(6 * 3600)
}
pub fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Friendly names of ENTSO-E bidding zones and their EIC codes.
const ZONES: &[(&str, &str)] = &[
    ("NL", "10YNL----------L"),
    ("BE", "10YBE----------2"),
    ("DE-LU", "10Y1001A1001A82H"),
    ("AT", "10YAT-APG------L"),
    ("FR", "10YFR-RTE------C"),
    ("CH", "10YCH-SWISSGRIDZ"),
    ("CZ", "10YCZ-CEPS-----N"),
    ("PL", "10YPL-AREA-----S"),
    ("DK1", "10YDK-1--------W"),
    ("DK2", "10YDK-2--------M"),
    ("FI", "10YFI-1--------U"),
    ("ES", "10YES-REE------0"),
    ("PT", "10YPT-REN------W"),
];

/// The EIC code of an ENTSO-E zone given by name or code.
pub fn entsoe_zone(zone: &str) -> Option<&'static str> {
    let zone = zone.trim();
    ZONES
        .iter()
        .find(|(name, code)| name.eq_ignore_ascii_case(zone) || *code == zone)
        .map(|(_, code)| *code)
}

fn fetch_time(value: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(value.trim(), "%H:%M").ok()
}

impl DeviceType for PricesConfig {
    const CLOUD: bool = true;

    /// Each poll only checks whether a day is due; requests are a few a day.
    fn default_poll_interval() -> Duration {
        Duration::from_secs(5 * 60)
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        match self.source {
            PriceSource::Entsoe => {
                match (&self.token, &self.token_file) {
                    (Some(_), Some(_)) => return Err(("token".into(), "set `token` or `token_file`, not both".into())),
                    (None, None) => {
                        return Err((
                            "token".into(),
                            "ENTSO-E needs a security token: `token: ${ENTSOE_TOKEN}` or `token_file:`".into(),
                        ))
                    }
                    (Some(t), None) if t.expose().trim().is_empty() => return Err(("token".into(), "is empty".into())),
                    _ => {}
                }
                let zone = self.zone.as_deref().unwrap_or_default();
                if entsoe_zone(zone).is_none() {
                    let names: Vec<&str> = ZONES.iter().map(|(n, _)| *n).collect();
                    return Err((
                        "zone".into(),
                        format!(
                            "`{zone}` is not a known bidding zone: use one of {} or its EIC code",
                            names.join(", ")
                        ),
                    ));
                }
            }
            PriceSource::Energyzero | PriceSource::Awattar => {
                if self.token.is_some() || self.token_file.is_some() {
                    return Err(("token".into(), format!("{} needs no token", self.source.name())));
                }
                if self.source == PriceSource::Awattar
                    && !matches!(
                        self.zone.as_deref().map(str::to_ascii_lowercase).as_deref(),
                        None | Some("de" | "at")
                    )
                {
                    return Err(("zone".into(), "aWATTar has the zones `de` and `at`".into()));
                }
            }
        }
        if fetch_time(&self.fetch_at).is_none() {
            return Err((
                "fetch_at".into(),
                format!("`{}` is not a time of day (HH:MM)", self.fetch_at),
            ));
        }
        if self.retry_window > Duration::from_secs(12 * 3600) {
            return Err(("retry_window".into(), "must be at most 12h".into()));
        }
        if let Some(url) = &self.base_url {
            check_url("base_url", url)?;
        }
        if self.timeout < Duration::from_secs(1) || self.timeout > Duration::from_secs(120) {
            return Err(("timeout".into(), "must be between 1s and 2m".into()));
        }
        Ok(())
    }

    fn warnings(&self) -> Vec<(String, String)> {
        if self.vat && self.source != PriceSource::Energyzero {
            return vec![(
                "vat".into(),
                format!(
                    "{} sends prices without VAT; `vat: true` changes nothing",
                    self.source.name()
                ),
            )];
        }
        Vec::new()
    }

    fn metrics() -> Vec<MetricSpec> {
        METRICS.to_vec()
    }

    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        Ok(Box::new(PricesMonitor::new(self, ctx)?))
    }
}

const METRICS: &[MetricSpec] = &[
    MetricSpec::gauge(
        "price",
        Unit::EuroPerKiloWattHour,
        "day-ahead price of the slot that starts at the reading's time",
    ),
    MetricSpec::gauge(
        "price_resolution",
        Unit::Second,
        "length of that price slot (900 or 3600)",
    ),
];

#[derive(Debug)]
pub struct PricesMonitor {
    config: PricesConfig,
    ctx: MonitorContext,
    client: reqwest::Client,
    base_url: String,
    token: Option<Secret>,
    fetch_at: NaiveTime,
    suspension: Suspension,
    /// Market days whose every slot has been stored.
    complete: BTreeSet<NaiveDate>,
    /// Starts of the slots sent (unix seconds), so none is sent twice.
    sent: BTreeSet<i64>,
    /// The day tomorrow's prices were last asked for, so one ask is made after
    /// the retry window too (a daemon started late in the day).
    asked_for: Option<NaiveDate>,
    /// The day a "not published" warning was logged for.
    warned_for: Option<NaiveDate>,
}

impl PricesMonitor {
    pub fn new(config: &PricesConfig, ctx: MonitorContext) -> Result<Self, MonitorError> {
        let token = match (&config.token, &config.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => Some(read_secret_file(path).map_err(|e| {
                MonitorError::config(format!("cannot read token_file {}: {e}", path.display())).caused_by(e)
            })?),
            (None, None) => None,
        };
        let zone = config.zone.as_deref().unwrap_or("de").to_ascii_lowercase();
        let base_url = config
            .base_url
            .clone()
            .unwrap_or_else(|| match config.source {
                PriceSource::Entsoe => "https://web-api.tp.entsoe.eu".into(),
                PriceSource::Energyzero => "https://public.api.energyzero.nl".into(),
                PriceSource::Awattar => format!("https://api.awattar.{zone}"),
            })
            .trim_end_matches('/')
            .to_string();
        Ok(PricesMonitor {
            client: http::client(config.timeout)?,
            base_url,
            token,
            fetch_at: fetch_time(&config.fetch_at).unwrap_or_default(),
            suspension: Suspension::persistent(
                ctx.clock.clone(),
                ctx.data_dir.join(format!("prices-{}.ratelimit.json", ctx.id)),
                &ctx.id,
            ),
            complete: BTreeSet::new(),
            sent: BTreeSet::new(),
            asked_for: None,
            warned_for: None,
            config: config.clone(),
            ctx,
        })
    }

    fn service(&self) -> &'static str {
        self.config.source.name()
    }

    /// The market days to ask for now: today until it is complete; tomorrow from
    /// `fetch_at` within the retry window (and once after it).
    fn due(&self, now: DateTime<Utc>) -> Vec<NaiveDate> {
        let today = market_day_of(now);
        let mut due = Vec::new();
        if !self.complete.contains(&today) {
            due.push(today);
        }
        let Some(tomorrow) = today.succ_opt() else { return due };
        let since_midnight = (now - market_day(today).0).to_std().unwrap_or_default();
        let fetch_at = Duration::from_secs(u64::from(self.fetch_at.num_seconds_from_midnight()));
        let open = since_midnight >= fetch_at
            && (since_midnight < fetch_at + self.config.retry_window || self.asked_for != Some(tomorrow));
        if open && !self.complete.contains(&tomorrow) {
            due.push(tomorrow);
        }
        due
    }

    async fn get(&self, url: &str, query: &[(&str, String)]) -> Result<Option<Vec<Slot>>, MonitorError> {
        let service = self.service();
        let timeout = self.config.timeout;
        let response = self
            .client
            .get(url)
            .query(query)
            .send()
            .await
            .map_err(|e| http::transport_error(service, e, timeout))?;
        let status = response.status();
        let wait = http::retry_after(response.headers(), self.ctx.clock.now());
        let body = response
            .bytes()
            .await
            .map_err(|e| http::transport_error(service, e, timeout))?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(MonitorError::RateLimited {
                message: format!("{service} rate limit: {}", http::snippet(&body)),
                retry_after: wait.unwrap_or(http::DEFAULT_RATE_LIMIT_PAUSE),
            });
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(MonitorError::config(format!(
                "{service} refused the token (HTTP 401): {}",
                http::snippet(&body)
            )));
        }
        let decoded = match self.config.source {
            PriceSource::Entsoe => prices::entsoe::decode(&body),
            PriceSource::Energyzero => prices::energyzero::decode(&body, self.config.vat),
            PriceSource::Awattar => prices::awattar::decode(&body),
        };
        match decoded {
            Ok(slots) => Ok(Some(slots)),
            Err(PriceError::NoData(reason)) => {
                tracing::debug!(device = %self.ctx.id, reason, "{service} has no prices for the period asked");
                Ok(None)
            }
            // ENTSO-E answers a bad request (zone, token) with HTTP 400 and an
            // acknowledgement: its reason is what the user can act on.
            Err(e @ PriceError::Refused(_)) => Err(MonitorError::refused(format!("{service} (HTTP {status}): {e}"))),
            Err(e) if !status.is_success() => Err(MonitorError::refused(format!(
                "{service} answered HTTP {status}: {}",
                http::snippet(&body)
            ))
            .caused_by(e)),
            Err(e) => Err(MonitorError::invalid_data(format!("{service}: {e}")).caused_by(e)),
        }
    }

    /// The slots the source has for `days` (consecutive market days).
    async fn fetch(&self, days: &[NaiveDate]) -> Result<Vec<Slot>, MonitorError> {
        let (Some(first), Some(last)) = (days.first(), days.last()) else {
            return Ok(Vec::new());
        };
        let (start, end) = (market_day(*first).0, market_day(*last).1);
        match self.config.source {
            PriceSource::Entsoe => {
                let zone = entsoe_zone(self.config.zone.as_deref().unwrap_or_default()).unwrap_or_default();
                let stamp = |t: DateTime<Utc>| t.format("%Y%m%d%H%M").to_string();
                let token = self.token.as_ref().map(|t| t.expose().to_string()).unwrap_or_default();
                let query = [
                    ("securityToken", token),
                    ("documentType", "A44".into()),
                    ("in_Domain", zone.into()),
                    ("out_Domain", zone.into()),
                    ("periodStart", stamp(start)),
                    ("periodEnd", stamp(end)),
                ];
                Ok(self
                    .get(&format!("{}/api", self.base_url), &query)
                    .await?
                    .unwrap_or_default())
            }
            PriceSource::Energyzero => {
                let mut all = Vec::new();
                for day in days {
                    let query = [
                        ("energyType", "ENERGY_TYPE_ELECTRICITY".into()),
                        ("date", day.format("%d-%m-%Y").to_string()),
                        ("interval", "INTERVAL_QUARTER".into()),
                    ];
                    let url = format!("{}/public/v1/prices", self.base_url);
                    all.extend(self.get(&url, &query).await?.unwrap_or_default());
                }
                Ok(all)
            }
            PriceSource::Awattar => {
                let query = [
                    ("start", start.timestamp_millis().to_string()),
                    ("end", end.timestamp_millis().to_string()),
                ];
                let url = format!("{}/v1/marketdata", self.base_url);
                Ok(self.get(&url, &query).await?.unwrap_or_default())
            }
        }
    }

    async fn poll(&mut self) -> Result<Vec<Reading>, MonitorError> {
        let now = self.ctx.clock.now();
        let today = market_day_of(now);
        let due = self.due(now);
        if due.is_empty() {
            return Ok(Vec::new());
        }
        self.suspension.check(self.service())?;
        let result = self.fetch(&due).await;
        let tomorrow = today.succ_opt();
        if due.last() == tomorrow.as_ref() {
            self.asked_for = tomorrow;
        }
        let slots = match result {
            Err(MonitorError::RateLimited { retry_after, .. }) => {
                return Err(self.suspension.suspend(self.service(), Some(retry_after), "HTTP 429"))
            }
            other => other?,
        };
        for day in &due {
            if covers_day(&slots, *day) {
                self.complete.insert(*day);
            }
        }
        // Old days are forgotten: only today and tomorrow are ever asked for.
        let keep_from = market_day(today.pred_opt().unwrap_or(today)).0.timestamp();
        self.complete.retain(|d| *d >= today);
        self.sent.retain(|t| *t >= keep_from);
        if !self.complete.contains(&today) {
            return Err(MonitorError::invalid_data(format!(
                "{} has no complete prices for today ({today}) yet",
                self.service()
            )));
        }
        if let Some(tomorrow) = tomorrow.filter(|t| due.contains(t) && !self.complete.contains(t)) {
            let since_midnight = (now - market_day(today).0).to_std().unwrap_or_default();
            let window_end =
                Duration::from_secs(u64::from(self.fetch_at.num_seconds_from_midnight())) + self.config.retry_window;
            if since_midnight >= window_end && self.warned_for != Some(tomorrow) {
                self.warned_for = Some(tomorrow);
                tracing::warn!(device = %self.ctx.id, "{} has not published prices for {tomorrow}; asking again when the day starts", self.service());
            } else {
                tracing::debug!(device = %self.ctx.id, "prices for {tomorrow} not published yet");
            }
        }
        let mut readings = Vec::new();
        for slot in slots {
            if !self.sent.insert(slot.start.timestamp()) {
                continue;
            }
            readings.push(METRICS[0].reading(&self.ctx.id, slot.eur_per_kwh, slot.start));
            readings.push(METRICS[1].reading(&self.ctx.id, f64::from(slot.seconds), slot.start));
        }
        Ok(readings)
    }
}

#[async_trait]
impl Monitor for PricesMonitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        self.poll().await
    }

    /// Complete: a price and its slot length.
    fn metrics_complete(&self) -> bool {
        true
    }

    fn metrics(&self) -> &[MetricSpec] {
        METRICS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> PricesConfig {
        serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn common() -> CommonConfig {
        serde_yaml_ng::from_str("type: prices").unwrap_or_else(|e| panic!("{e}"))
    }

    fn key(yaml: &str) -> Option<String> {
        config(yaml).validate(&common()).err().map(|e| e.0)
    }

    #[test]
    fn the_keys_are_checked() {
        assert_eq!(key("source: energyzero"), None);
        assert_eq!(key("source: awattar\nzone: AT"), None);
        assert_eq!(key("source: awattar\nzone: nl"), Some("zone".into()));
        assert_eq!(key("source: entsoe\nzone: NL\ntoken: abc"), None);
        assert_eq!(key("source: entsoe\nzone: 10YBE----------2\ntoken: abc"), None);
        assert_eq!(key("source: entsoe\nzone: NL"), Some("token".into()));
        assert_eq!(key("source: entsoe\nzone: XX\ntoken: abc"), Some("zone".into()));
        assert_eq!(key("source: energyzero\ntoken: abc"), Some("token".into()));
        assert_eq!(key("source: energyzero\nfetch_at: '25:00'"), Some("fetch_at".into()));
        assert_eq!(key("source: energyzero\nbase_url: ftp://x"), Some("base_url".into()));
        assert!(config("source: awattar\nvat: true").warnings().len() == 1);
        assert!(config("source: energyzero\nvat: true").warnings().is_empty());
        // The token never shows.
        let shown = format!("{:?}", config("source: entsoe\nzone: NL\ntoken: hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn tomorrow_is_due_from_fetch_at_within_the_window() {
        let data = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ctx = MonitorContext {
            id: "prices".into(),
            clock: crate::host::clock::system(),
            data_dir: data.path().to_path_buf(),
            poll_interval: std::time::Duration::from_secs(1),
            file: std::path::PathBuf::new(),
        };
        let mut m = PricesMonitor::new(&config("source: energyzero\nfetch_at: '13:15'\nretry_window: 2h"), ctx)
            .unwrap_or_else(|e| panic!("{e}"));
        let at = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.to_utc())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let d = |m: u32, day: u32| NaiveDate::from_ymd_opt(2025, m, day).unwrap_or_default();
        // 13:00 CEST: only today.
        assert_eq!(m.due(at("2025-06-10T11:00:00Z")), vec![d(6, 10)]);
        // 13:20 CEST: today and tomorrow.
        assert_eq!(m.due(at("2025-06-10T11:20:00Z")), vec![d(6, 10), d(6, 11)]);
        m.complete.insert(d(6, 10));
        assert_eq!(m.due(at("2025-06-10T11:20:00Z")), vec![d(6, 11)]);
        // Past the window: asked once more (a late start), then not again.
        assert_eq!(m.due(at("2025-06-10T16:00:00Z")), vec![d(6, 11)]);
        m.asked_for = Some(d(6, 11));
        assert!(m.due(at("2025-06-10T16:00:00Z")).is_empty());
        // Winter: 13:20 CET is 12:20 UTC.
        m.complete.clear();
        m.asked_for = None;
        assert_eq!(m.due(at("2025-01-10T12:20:00Z")), vec![d(1, 10), d(1, 11)]);
        assert_eq!(m.due(at("2025-01-10T12:10:00Z")), vec![d(1, 10)]);
    }
}
