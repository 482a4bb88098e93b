//! Retention and downsampling: raw rows older than `retention.raw` are replaced by
//! 5-minute aggregates in `<device>_5m`, kept for `retention.aggregates`.
//!
//! Layout of `<device>_5m`: `ts` (the window's start, unix seconds, a multiple of
//! 300) as INTEGER PRIMARY KEY, `samples` (raw rows in the window), and per metric of
//! the `metrics` catalogue: a gauge `x` gives `x_mean`, `x_min`, `x_max`; a counter
//! keeps its name and holds the last value of the window; a text column keeps its
//! last value. Wide rows like the raw table's, so a Grafana query reads either with
//! the same shape (`SELECT ts, x_mean FROM "p1_5m"`).
//!
//! Work is cut into one-hour slices (12 windows), each aggregated and deleted in its
//! own `BEGIN IMMEDIATE` transaction: the SQLite backend's writer waits at most one
//! slice (milliseconds), never the whole backlog. The writer creates the aggregate
//! tables and columns with the raw ones (see `schema::prepare_aggregate_table`);
//! each run completes them for every catalogued device too, for databases written
//! before the writer did.
//!
//! The `metrics` catalogue decides which tables are device tables: aggregate tables
//! are not in it, so they are never aggregated again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio_util::sync::CancellationToken;

use crate::backends::sqlite::schema::{
    aggregate_table, catalogue, open_existing, prepare_aggregate_table, quote, Aggregate,
};
use crate::host::clock::SharedClock;

/// The aggregation window.
pub const WINDOW: i64 = 300;
/// One transaction covers at most this much raw time.
const SLICE: i64 = 3600;
/// The suffix of aggregate tables (device ids ending in it are reserved).
pub use crate::backends::sqlite::schema::AGGREGATE_SUFFIX as SUFFIX;

/// `retention` in config.yaml.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Downsample at all. `false` keeps every raw row forever (the disk guard still
    /// thins them when the disk fills up).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Raw rows older than this are replaced by 5-minute aggregates.
    #[serde(default = "default_raw", with = "crate::config::duration")]
    pub raw: Duration,
    /// How long aggregates are kept: a duration, or `forever` (the default).
    #[serde(default, with = "forever")]
    pub aggregates: Option<Duration>,
    /// How often old rows are looked for (also once at start).
    #[serde(default = "default_check_interval", with = "crate::config::duration")]
    pub check_interval: Duration,
}

pub fn default_enabled() -> bool {
    true
}
pub fn default_raw() -> Duration {
    Duration::from_secs(30 * 86_400)
}
pub fn default_check_interval() -> Duration {
    Duration::from_secs(600)
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            enabled: default_enabled(),
            raw: default_raw(),
            aggregates: None,
            check_interval: default_check_interval(),
        }
    }
}

/// `forever` or a humantime duration.
mod forever {
    use super::*;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(de)?;
        if text.trim() == "forever" {
            return Ok(None);
        }
        humantime::parse_duration(text.trim()).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e} (write e.g. `365d`, or `forever`)"
            ))
        })
    }

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("forever"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("downsampling {path}: {source}")]
pub struct DownsampleError {
    path: PathBuf,
    source: rusqlite::Error,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Raw rows replaced by aggregates, per device.
    pub raw_rows: BTreeMap<String, u64>,
    /// Aggregate rows written (new or merged), per device.
    pub windows: BTreeMap<String, u64>,
    /// Aggregate rows older than `retention.aggregates` deleted, per device.
    pub expired: BTreeMap<String, u64>,
}

/// One run: aggregates and deletes raw rows older than `raw`, expires old
/// aggregates. `Ok(None)` when there is no database yet (never creates it).
pub fn run_once(
    db: &Path,
    config: &RetentionConfig,
    now: DateTime<Utc>,
    cancel: &CancellationToken,
) -> Result<Option<Report>, DownsampleError> {
    if !db.exists() {
        return Ok(None);
    }
    let sql = |source| DownsampleError {
        path: db.to_path_buf(),
        source,
    };
    let conn = open_existing(db).map_err(sql)?;
    let raw_secs = i64::try_from(config.raw.as_secs()).unwrap_or(i64::MAX);
    let cutoff = now.timestamp().saturating_sub(raw_secs).div_euclid(WINDOW) * WINDOW;
    let mut report = Report::default();
    for (device, columns) in catalogue(&conn).map_err(sql)? {
        if cancel.is_cancelled() {
            break;
        }
        if !table_exists(&conn, &device).map_err(sql)? {
            continue;
        }
        let agg_table = aggregate_table(&device);
        // Under the write lock: the backend's writer adds aggregate columns too,
        // and one it adds between our look and our ALTER would fail ours.
        immediate(&conn, || prepare_aggregate_table(&conn, &device, &columns)).map_err(sql)?;
        while !cancel.is_cancelled() {
            let oldest: Option<i64> = conn
                .query_row(
                    &format!("SELECT min(ts) FROM {} WHERE ts < ?1", quote(&device)),
                    [cutoff],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            let Some(oldest) = oldest else { break };
            let start = oldest.div_euclid(SLICE) * SLICE;
            let end = (start + SLICE).min(cutoff);
            let (rows, windows) = slice(&conn, &device, &agg_table, &columns, start, end).map_err(sql)?;
            *report.raw_rows.entry(device.clone()).or_default() += rows;
            *report.windows.entry(device.clone()).or_default() += windows;
        }
        if let Some(keep) = config.aggregates {
            let keep = i64::try_from(keep.as_secs()).unwrap_or(i64::MAX);
            let n = expire(&conn, &agg_table, now.timestamp().saturating_sub(keep), cancel).map_err(sql)?;
            if n > 0 {
                report.expired.insert(device.clone(), n);
            }
        }
    }
    let raw: u64 = report.raw_rows.values().sum();
    let expired: u64 = report.expired.values().sum();
    if raw > 0 || expired > 0 {
        tracing::info!(
            raw_rows = raw,
            windows = report.windows.values().sum::<u64>(),
            expired,
            "retention: raw rows older than {} replaced by 5-minute aggregates",
            humantime::format_duration(config.raw)
        );
    }
    Ok(Some(report))
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

/// Aggregates `[start, end)` of `device` into `agg_table` and deletes those raw rows,
/// in one transaction. Returns (raw rows, windows).
fn slice(
    conn: &Connection,
    device: &str,
    agg_table: &str,
    columns: &[(String, Aggregate)],
    start: i64,
    end: i64,
) -> rusqlite::Result<(u64, u64)> {
    let raw = quote(device);
    let mut names = vec!["ts".to_owned(), "samples".to_owned()];
    let mut selects = vec![format!("(ts / {WINDOW}) * {WINDOW} AS w"), "count(*)".to_owned()];
    let mut merges = vec!["samples = samples + excluded.samples".to_owned()];
    for (metric, agg) in columns {
        let m = quote(metric);
        match agg {
            Aggregate::Gauge => {
                let [mean, min, max] = [
                    quote(&format!("{metric}_mean")),
                    quote(&format!("{metric}_min")),
                    quote(&format!("{metric}_max")),
                ];
                selects.push(format!("avg({m})"));
                selects.push(format!("min({m})"));
                selects.push(format!("max({m})"));
                // Rows arriving late for a window already aggregated (a device's own
                // clock, a restored backup) merge in: min/max exactly, the mean
                // weighted by the row counts.
                merges.push(format!(
                    "{mean} = CASE WHEN {mean} IS NULL THEN excluded.{mean} WHEN excluded.{mean} IS NULL THEN {mean} \
                     ELSE ({mean} * samples + excluded.{mean} * excluded.samples) / (samples + excluded.samples) END"
                ));
                merges.push(format!(
                    "{min} = coalesce(min({min}, excluded.{min}), {min}, excluded.{min})"
                ));
                merges.push(format!(
                    "{max} = coalesce(max({max}, excluded.{max}), {max}, excluded.{max})"
                ));
                names.extend([mean, min, max]);
            }
            Aggregate::Last => {
                selects.push(format!(
                    "(SELECT {m} FROM {raw} AS r WHERE r.ts >= (g.ts / {WINDOW}) * {WINDOW} AND r.ts < (g.ts / {WINDOW}) * {WINDOW} + {WINDOW} AND r.ts < ?2 AND {m} IS NOT NULL ORDER BY r.ts DESC LIMIT 1)"
                ));
                // A late row is older than what the window already holds as its last.
                merges.push(format!("{m} = coalesce({m}, excluded.{m})"));
                names.push(m);
            }
        }
    }
    let insert = format!(
        "INSERT INTO {} ({}) SELECT {} FROM {raw} AS g WHERE g.ts >= ?1 AND g.ts < ?2 GROUP BY w ORDER BY w \
         ON CONFLICT(ts) DO UPDATE SET {}",
        quote(agg_table),
        names.join(", "),
        selects.join(", "),
        merges.join(", ")
    );
    immediate(conn, || {
        let windows = conn.execute(&insert, [start, end])? as u64;
        let rows = conn.execute(&format!("DELETE FROM {raw} WHERE ts >= ?1 AND ts < ?2"), [start, end])? as u64;
        Ok((rows, windows))
    })
}

/// Runs `work` in a transaction that takes the write lock at its start (`BEGIN
/// IMMEDIATE`): no upgrade from a read lock that could fail with SQLITE_BUSY
/// half-way.
fn immediate<T>(conn: &Connection, work: impl FnOnce() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match work() {
        Ok(done) => {
            conn.execute_batch("COMMIT")?;
            Ok(done)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Deletes aggregates older than `before`, one day per statement.
fn expire(conn: &Connection, table: &str, before: i64, cancel: &CancellationToken) -> rusqlite::Result<u64> {
    let mut total = 0;
    while !cancel.is_cancelled() {
        let oldest: Option<i64> = conn.query_row(
            &format!("SELECT min(ts) FROM {} WHERE ts < ?1", quote(table)),
            [before],
            |r| r.get(0),
        )?;
        let Some(oldest) = oldest else { break };
        let end = (oldest + 86_400).min(before);
        total += conn.execute(
            &format!("DELETE FROM {} WHERE ts >= ?1 AND ts < ?2", quote(table)),
            [oldest, end],
        )? as u64;
    }
    Ok(total)
}

/// Runs until `token` is cancelled: once at start, then every `check_interval`, on
/// the blocking pool.
pub async fn run(db: PathBuf, config: RetentionConfig, clock: SharedClock, token: CancellationToken) {
    let mut ticker = tokio::time::interval(config.check_interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let (db, config, cancel) = (db.clone(), config.clone(), token.clone());
        let now = clock.now();
        match tokio::task::spawn_blocking(move || run_once(&db, &config, now, &cancel)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "retention run failed; retried at the next check"),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
    }
}

#[cfg(test)]
mod tests;
