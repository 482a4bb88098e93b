//! Figures derived from what other devices stored: one counter's increase divided
//! by another's over each hour or day, e.g. a heat pump's COP (the heat meter's
//! energy over the electricity sub-meter's). It reads the SQLite file the `sqlite`
//! backend writes, so a restart or a late reading changes nothing: each closed
//! period is computed once from the stored rows, and a period in which either
//! counter has a gap (or drops: a reset, a meter swap) gives no figure at all
//! rather than a wrong one.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::{DeviceType, Monitor, MonitorContext, MonitorError};
use crate::backends::sqlite::schema::quote;
use crate::config::common::CommonConfig;
use crate::reading::{Kind, MetricSpec, Reading, Unit, Value};

/// `type: derived`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DerivedConfig {
    /// The counter whose increase is divided (a heat meter's energy for a COP).
    pub numerator: CounterRef,
    /// The counter it is divided by (the heat pump's electricity sub-meter).
    pub denominator: CounterRef,
    /// The length of each period: `1h` or `1d` (UTC days). One `ratio` reading per
    /// closed period, stamped with the period's start.
    #[serde(default = "default_period", with = "crate::config::duration")]
    pub period: Duration,
    /// Stored readings further apart than this inside a period (or around its ends)
    /// are a gap: that period gives no figure.
    #[serde(default = "default_max_gap", with = "crate::config::duration")]
    pub max_gap: Duration,
    /// A denominator increase below this (in kWh when it is an energy, else in its
    /// own unit) gives no figure: a heat pump that hardly ran has no meaningful COP.
    #[serde(default = "default_min_denominator")]
    pub min_denominator: f64,
    /// How far back the first run computes periods that have no figure yet.
    #[serde(default = "default_backfill", with = "crate::config::duration")]
    pub backfill: Duration,
    /// The SQLite file to read (relative to `data_dir`): the `sqlite` backend's
    /// `path`, whose default it shares.
    #[serde(default = "crate::backends::sqlite::default_path")]
    pub database: PathBuf,
}

/// One stored counter: a device's id and one of its metrics.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CounterRef {
    /// The device's id (its file name in config.d/ without `.yaml`).
    pub device: String,
    /// The counter metric, e.g. `heat_energy`, `energy_delivered_tariff1`. Its
    /// `<metric>_lifetime` column is used where it exists (continuous across meter
    /// swaps), else the raw counter.
    pub metric: String,
}

pub fn default_period() -> Duration {
    Duration::from_secs(3600)
}
pub fn default_max_gap() -> Duration {
    Duration::from_secs(15 * 60)
}
pub fn default_min_denominator() -> f64 {
    0.01
}
pub fn default_backfill() -> Duration {
    Duration::from_secs(7 * 86_400)
}

const METRICS: &[MetricSpec] = &[
    MetricSpec::gauge(
        "ratio",
        Unit::None,
        "numerator increase / denominator increase over the period",
    ),
    MetricSpec::gauge(
        "numerator_delta",
        Unit::KiloWattHour,
        "the numerator's increase over the period (kWh when it is an energy)",
    ),
    MetricSpec::gauge(
        "denominator_delta",
        Unit::KiloWattHour,
        "the denominator's increase over the period (kWh when it is an energy)",
    ),
];

impl DeviceType for DerivedConfig {
    fn default_poll_interval() -> Duration {
        Duration::from_secs(300)
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        if self.period != Duration::from_secs(3600) && self.period != Duration::from_secs(86_400) {
            return Err(("period".into(), "must be 1h or 1d".into()));
        }
        if self.max_gap.is_zero() {
            return Err(("max_gap".into(), "must be longer than 0s (default 15m)".into()));
        }
        if !(self.min_denominator.is_finite() && self.min_denominator > 0.0) {
            return Err(("min_denominator".into(), "must be a number above 0".into()));
        }
        for (key, side) in [("numerator", &self.numerator), ("denominator", &self.denominator)] {
            if side.device.is_empty() || side.metric.is_empty() {
                return Err((key.into(), "needs both `device` and `metric`".into()));
            }
        }
        Ok(())
    }

    fn metrics() -> Vec<MetricSpec> {
        METRICS.to_vec()
    }

    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        Ok(Box::new(DerivedMonitor::new(self.clone(), ctx)))
    }
}

/// One stored sample of a counter: UTC seconds and the value in the unit it is
/// divided in.
type Sample = (i64, f64);

/// A counter's increase over `[start, end)` from its stored samples (sorted by
/// time), the values at both ends interpolated between the samples around them.
/// `None` when the samples do not cover the period without a gap longer than
/// `max_gap`, or when the counter drops anywhere in it (a reset or a swap that no
/// lifetime column smoothed).
pub(crate) fn increase(samples: &[Sample], start: i64, end: i64, max_gap: i64) -> Option<f64> {
    let first = samples.iter().rposition(|s| s.0 <= start)?;
    let last = first + samples[first..].iter().position(|s| s.0 >= end)?;
    let span = &samples[first..=last];
    for pair in span.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.0 - a.0 > max_gap || b.1 < a.1 {
            return None;
        }
    }
    let at = |t: i64| -> f64 {
        let i = span.iter().rposition(|s| s.0 <= t).unwrap_or(0);
        match span.get(i + 1) {
            Some(next) if next.0 > span[i].0 && t > span[i].0 => {
                let (a, b) = (span[i], *next);
                a.1 + (b.1 - a.1) * (t - a.0) as f64 / (b.0 - a.0) as f64
            }
            _ => span[i].1,
        }
    };
    Some(at(end) - at(start))
}

/// The factor to kWh for an energy unit as stored in the `metrics` catalogue;
/// `None` for anything else (the increase stays in its own unit).
fn to_kwh(unit: &str) -> Option<f64> {
    match unit {
        "kWh" => Some(1.0),
        "Wh" => Some(0.001),
        "MWh" => Some(1000.0),
        "GJ" => Some(1e9 / 3.6e6),
        "MJ" => Some(1e6 / 3.6e6),
        _ => None,
    }
}

/// One side's samples for `[from, to)`, with the lifetime column where there is one.
/// `Ok(None)` when the device or metric has not been stored yet.
fn samples(
    conn: &Connection,
    side: &CounterRef,
    from: i64,
    to: i64,
) -> rusqlite::Result<Option<(Vec<Sample>, Option<f64>)>> {
    let columns: Vec<String> = {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
        let names = stmt.query_map([&side.device], |r| r.get::<_, String>(0))?;
        names.collect::<Result<_, _>>()?
    };
    let lifetime = format!("{}_lifetime", side.metric);
    let column = if columns.contains(&lifetime) {
        lifetime
    } else if columns.contains(&side.metric) {
        side.metric.clone()
    } else {
        return Ok(None);
    };
    let unit: Option<String> = conn
        .query_row(
            "SELECT unit FROM metrics WHERE device = ?1 AND metric = ?2",
            [&side.device, &side.metric],
            |r| r.get(0),
        )
        .optional()?;
    let factor = unit.as_deref().and_then(to_kwh);
    let col = quote(&column);
    let sql = format!(
        "SELECT ts, {col} FROM {} WHERE ts BETWEEN ?1 AND ?2 AND {col} IS NOT NULL ORDER BY ts",
        quote(&side.device)
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([from, to], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?)))?;
    let rows: Vec<Sample> = rows
        .filter_map(Result::ok)
        .map(|(t, v)| (t, v * factor.unwrap_or(1.0)))
        .collect();
    Ok(Some((rows, factor)))
}

/// Reads the stored counters and turns each closed period into readings.
#[derive(Debug)]
pub struct DerivedMonitor {
    config: DerivedConfig,
    ctx: MonitorContext,
    database: PathBuf,
    /// The start of the first period not computed yet (`None` before the first read).
    next: Option<i64>,
}

impl DerivedMonitor {
    pub fn new(config: DerivedConfig, ctx: MonitorContext) -> Self {
        let database = ctx.data_dir.join(&config.database);
        DerivedMonitor {
            config,
            ctx,
            database,
            next: None,
        }
    }

    fn period_secs(&self) -> i64 {
        self.config.period.as_secs() as i64
    }

    /// Where to start: after this device's newest stored figure, or `backfill` ago.
    fn first_period(&self, conn: &Connection, now: i64) -> rusqlite::Result<i64> {
        let period = self.period_secs();
        let own: Option<i64> = conn
            .query_row(&format!("SELECT max(ts) FROM {}", quote(&self.ctx.id)), [], |r| {
                r.get(0)
            })
            .optional()
            .ok()
            .flatten()
            .flatten();
        Ok(match own {
            Some(ts) => ts.div_euclid(period) * period + period,
            None => (now - self.config.backfill.as_secs() as i64).div_euclid(period) * period,
        })
    }

    /// The figures of every period that closed (its end plus `max_gap` passed).
    fn compute(&mut self, now: DateTime<Utc>) -> Result<Vec<Reading>, MonitorError> {
        let conn = Connection::open_with_flags(
            &self.database,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| MonitorError::link(format!("cannot open {}", self.database.display())).caused_by(e))?;
        let busy = conn.busy_timeout(Duration::from_secs(5));
        busy.map_err(|e| MonitorError::link("cannot set a busy timeout").caused_by(e))?;
        let now = now.timestamp();
        let period = self.period_secs();
        let max_gap = self.config.max_gap.as_secs() as i64;
        let mut next = match self.next {
            Some(next) => next,
            None => self
                .first_period(&conn, now)
                .map_err(|e| MonitorError::link("cannot read the database").caused_by(e))?,
        };
        let mut readings = Vec::new();
        let closed_until = (now - max_gap).div_euclid(period) * period;
        if next >= closed_until {
            self.next = Some(next);
            return Ok(readings);
        }
        let (from, to) = (next - max_gap, closed_until + max_gap);
        let read = |side: &CounterRef| {
            samples(&conn, side, from, to)
                .map_err(|e| MonitorError::link(format!("cannot read {}.{}", side.device, side.metric)).caused_by(e))
        };
        let (Some((num, num_kwh)), Some((den, den_kwh))) =
            (read(&self.config.numerator)?, read(&self.config.denominator)?)
        else {
            // Nothing stored yet for one side: try again at the next poll.
            self.next = Some(next);
            return Ok(readings);
        };
        while next < closed_until {
            let (start, end) = (next, next + period);
            next = end;
            let (Some(n), Some(d)) = (increase(&num, start, end, max_gap), increase(&den, start, end, max_gap)) else {
                tracing::debug!(device = %self.ctx.id, start, "no figure: a gap or a drop in the period");
                continue;
            };
            if d < self.config.min_denominator {
                continue;
            }
            let Some(at) = DateTime::from_timestamp(start, 0) else {
                continue;
            };
            let reading = |metric: &'static str, value: f64, unit: Unit| Reading {
                device: self.ctx.id.clone(),
                device_type: "",
                metric: crate::reading::MetricName::from(metric),
                value: Value::Number(value),
                unit,
                kind: Kind::Gauge,
                timestamp: at,
            };
            readings.push(reading("ratio", n / d, Unit::None));
            if num_kwh.is_some() {
                readings.push(reading("numerator_delta", n, Unit::KiloWattHour));
            }
            if den_kwh.is_some() {
                readings.push(reading("denominator_delta", d, Unit::KiloWattHour));
            }
        }
        self.next = Some(next);
        Ok(readings)
    }
}

#[async_trait]
impl Monitor for DerivedMonitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        let now = self.ctx.clock.now();
        if !self.database.exists() {
            return Err(MonitorError::config(format!(
                "{} does not exist: a derived device reads what the sqlite backend stored",
                self.database.display()
            )));
        }
        // A few hundred rows from the page cache, once per poll (every 5 minutes by
        // default): short enough to run on the device's own task.
        self.compute(now)
    }

    /// Complete: the same three whatever the counters.
    fn metrics_complete(&self) -> bool {
        true
    }

    fn metrics(&self) -> &[MetricSpec] {
        METRICS
    }
}

#[cfg(test)]
mod tests;
