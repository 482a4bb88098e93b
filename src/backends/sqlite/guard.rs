//! The disk guard: when the filesystem holding the SQLite database is fuller than
//! `max_disk_used_percent`, old rows are thinned evenly across time ("stratified"
//! deletion) until it is back under, and the database is compacted.
//!
//! How: the rows older than `keep_raw_days` are cut into one-hour slices; oldest
//! slice first, every other row of each device table in the slice is deleted, each
//! (table, slice) in its own small transaction. After each slice the space freed is
//! estimated (rows deleted × the database's average bytes per row); once the estimate
//! brings usage 1 point under the threshold the pass stops, otherwise a new pass
//! halves the old rows again. A slice is never thinned below one row, so old data
//! keeps at least one row per device per hour. Then `VACUUM` gives the space back to
//! the filesystem — deleted rows only leave half-empty pages inside the file — if
//! there is room for its copy; the next check measures the real result and thins
//! more if the estimate was optimistic. Rows newer than `keep_raw_days` are never
//! touched; CSV files are not touched.
//!
//! The guard has its own connection on a blocking thread: SQLite's lock serialises
//! it with the backend's writer (busy timeout on both sides; a backend write that
//! times out is retried with its readings kept).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backends::sqlite::schema::{open_existing, quote};
use crate::daemon::live::GuardStats;
use crate::host::clock::SharedClock;
use crate::host::DiskUsage;

/// `disk_guard` in config.yaml.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiskGuardConfig {
    /// Thin old SQLite rows when the disk fills up.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Start thinning when the filesystem holding the database is fuller than this
    /// (percent, as df's Use%).
    #[serde(default = "default_max_disk_used_percent")]
    pub max_disk_used_percent: f64,
    /// Rows younger than this many days are never deleted.
    #[serde(default = "default_keep_raw_days")]
    pub keep_raw_days: u32,
    /// How often the disk usage is checked.
    #[serde(default = "default_check_interval", with = "crate::config::duration")]
    pub check_interval: Duration,
}

pub fn default_enabled() -> bool {
    true
}
pub fn default_max_disk_used_percent() -> f64 {
    90.0
}
pub fn default_keep_raw_days() -> u32 {
    7
}
pub fn default_check_interval() -> Duration {
    Duration::from_secs(600)
}

impl DiskGuardConfig {
    /// The first value a guard cannot work with, as (key, why). A threshold of 0 or
    /// below would thin the database at every check down to `keep_raw_days`; above
    /// 100 the guard would never act; a zero interval is a typo (it would be taken as
    /// one second).
    pub fn out_of_range(&self) -> Option<(&'static str, String)> {
        let pct = self.max_disk_used_percent;
        if !(pct > 0.0 && pct <= 100.0) {
            return Some((
                "disk_guard.max_disk_used_percent",
                format!("must be a percentage above 0 and at most 100, not {pct}"),
            ));
        }
        if self.check_interval.is_zero() {
            return Some(("disk_guard.check_interval", "must be longer than 0s".into()));
        }
        None
    }
}

impl Default for DiskGuardConfig {
    fn default() -> Self {
        DiskGuardConfig {
            enabled: default_enabled(),
            max_disk_used_percent: default_max_disk_used_percent(),
            keep_raw_days: default_keep_raw_days(),
            check_interval: default_check_interval(),
        }
    }
}

/// Thinning stops this many points under the threshold, so the guard does not run
/// again at the next check for a few bytes.
const HYSTERESIS: f64 = 1.0;
const SLICE_SECONDS: i64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("disk usage of {path}: {source}")]
    Disk { path: PathBuf, source: std::io::Error },
    #[error("sqlite {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
}

/// How the disk usage is read: statvfs in the daemon, a simulation in tests.
pub type UsageFn = dyn Fn(&Path) -> std::io::Result<DiskUsage> + Send + Sync;

/// What one check did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub used_percent_before: f64,
    pub used_percent_after: f64,
    /// Rows deleted per device table.
    pub deleted: BTreeMap<String, u64>,
    /// The time range thinned (unix seconds), if anything was deleted.
    pub range: Option<(i64, i64)>,
    pub vacuumed: bool,
}

/// One check: measures, and thins when over the threshold. `Ok(None)` when under it
/// or when there is no database yet.
pub fn check(
    db: &Path,
    config: &DiskGuardConfig,
    now: DateTime<Utc>,
    usage_of: &UsageFn,
    cancel: &CancellationToken,
) -> Result<Option<Report>, GuardError> {
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let measure = || {
        usage_of(dir).map_err(|source| GuardError::Disk {
            path: dir.to_path_buf(),
            source,
        })
    };
    let before = measure()?;
    let Some(pct_before) = before.used_percent() else {
        return Ok(None);
    };
    if pct_before <= config.max_disk_used_percent || !db.exists() {
        return Ok(None);
    }
    let sql = |source| GuardError::Sqlite {
        path: db.to_path_buf(),
        source,
    };
    // Never create the database: that is the backend's job.
    let conn = open_existing(db).map_err(sql)?;
    let cutoff = now.timestamp() - i64::from(config.keep_raw_days) * 86_400;
    tracing::warn!(
        used_percent = format!("{pct_before:.1}"),
        max = config.max_disk_used_percent,
        "disk guard: the disk is fuller than allowed; thinning SQLite rows older than {} days",
        config.keep_raw_days
    );

    let tables = device_tables(&conn).map_err(sql)?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(sql)?;
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).map_err(sql)?;
    let free_pages: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).map_err(sql)?;
    let mut rows = 0i64;
    for t in &tables {
        rows += conn
            .query_row(&format!("SELECT count(*) FROM {}", quote(t)), [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(sql)?;
    }
    let db_bytes = pages * page_size;
    let bytes_per_row = if rows > 0 { db_bytes as f64 / rows as f64 } else { 0.0 };
    let capacity = (before.used + before.available) as f64;
    let target = (config.max_disk_used_percent - HYSTERESIS).max(0.0);
    let need = before.used as f64 - target / 100.0 * capacity;
    // Free pages are given back by the VACUUM as well.
    let mut freed = (free_pages * page_size) as f64;

    let mut report = Report {
        used_percent_before: pct_before,
        ..Report::default()
    };
    let oldest = oldest_before(&conn, &tables, cutoff).map_err(sql)?;
    if let Some(oldest) = oldest {
        let first_slice = oldest.div_euclid(SLICE_SECONDS) * SLICE_SECONDS;
        'passes: loop {
            let mut deleted_in_pass = 0u64;
            let mut start = first_slice;
            while start < cutoff {
                let end = (start + SLICE_SECONDS).min(cutoff);
                for t in &tables {
                    let n = thin_slice(&conn, t, start, end).map_err(sql)?;
                    if n > 0 {
                        *report.deleted.entry(t.clone()).or_default() += n;
                        deleted_in_pass += n;
                        freed += n as f64 * bytes_per_row;
                        report.range = Some(match report.range {
                            Some((a, b)) => (a.min(start), b.max(end)),
                            None => (start, end),
                        });
                    }
                }
                if freed >= need || cancel.is_cancelled() {
                    break 'passes;
                }
                start = end;
            }
            if deleted_in_pass == 0 {
                tracing::warn!(
                    "disk guard: nothing left to thin (one row per device per hour before the last {} days)",
                    config.keep_raw_days
                );
                break;
            }
        }
    }

    let deleted_total: u64 = report.deleted.values().sum();
    if (deleted_total > 0 || free_pages > 0) && !cancel.is_cancelled() {
        // VACUUM writes a new copy of the database (through the WAL); without room for
        // it, it would fail with "disk full" half-way, so it is not tried.
        if before.available as f64 > db_bytes as f64 * 1.2 {
            conn.execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
                .map_err(sql)?;
            report.vacuumed = true;
        } else {
            tracing::error!(
                available = before.available,
                database = db_bytes,
                "disk guard: not enough free space to compact the database; deleted rows free pages for new rows but the file does not shrink"
            );
        }
    }
    report.used_percent_after = measure()?.used_percent().unwrap_or(pct_before);
    tracing::warn!(
        deleted = deleted_total,
        per_table = ?report.deleted,
        from = report.range.map(|r| r.0),
        to = report.range.map(|r| r.1),
        vacuumed = report.vacuumed,
        used_percent_after = format!("{:.1}", report.used_percent_after),
        "disk guard: thinned old rows"
    );
    Ok(Some(report))
}

/// Tables that hold a device's readings: a `ts` INTEGER PRIMARY KEY, not mesura's own.
fn device_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> 'metrics' AND name NOT LIKE 'outbox%' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut tables = Vec::new();
    for name in names {
        let ts_is_key: bool = conn
            .prepare(&format!("PRAGMA table_info({})", quote(&name)))?
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(5)?)))?
            .filter_map(Result::ok)
            .any(|(col, pk)| col == "ts" && pk == 1);
        if ts_is_key {
            tables.push(name);
        }
    }
    Ok(tables)
}

fn oldest_before(conn: &Connection, tables: &[String], cutoff: i64) -> rusqlite::Result<Option<i64>> {
    let mut oldest: Option<i64> = None;
    for t in tables {
        let min: Option<i64> = conn.query_row(
            &format!("SELECT min(ts) FROM {} WHERE ts < ?1", quote(t)),
            [cutoff],
            |r| r.get(0),
        )?;
        oldest = match (oldest, min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(oldest)
}

/// Deletes every other row (the 2nd, 4th, …) of `table` in `[start, end)`, in one
/// transaction; keeps the first, so a slice never empties.
fn thin_slice(conn: &Connection, table: &str, start: i64, end: i64) -> rusqlite::Result<u64> {
    let sql = format!(
        "DELETE FROM {t} WHERE ts IN (SELECT ts FROM (SELECT ts, row_number() OVER (ORDER BY ts) AS n FROM {t} WHERE ts >= ?1 AND ts < ?2) WHERE n % 2 = 0)",
        t = quote(table)
    );
    // A single statement is its own transaction: small, and the backend's writer can
    // take the lock between two slices.
    Ok(conn.execute(&sql, [start, end])? as u64)
}

/// Runs the guard until `token` is cancelled: a check at start, then every
/// `check_interval`, each on the blocking pool.
pub async fn run(
    db: PathBuf,
    config: DiskGuardConfig,
    clock: SharedClock,
    stats: Arc<GuardStats>,
    token: CancellationToken,
) {
    let mut ticker = tokio::time::interval(config.check_interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let usage_of: std::sync::Arc<UsageFn> = std::sync::Arc::new(|p: &Path| crate::host::disk_usage(p));
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let (db, config, usage_of, cancel) = (db.clone(), config.clone(), usage_of.clone(), token.clone());
        let now = clock.now();
        let result = tokio::task::spawn_blocking(move || {
            let checked = check(&db, &config, now, &*usage_of, &cancel);
            // The Use% after the check, thinned or not (one statvfs).
            let dir = db
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let used = usage_of(dir).ok().and_then(|u| u.used_percent());
            (checked, used)
        })
        .await;
        stats.checks.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok((checked, used)) => {
                if let Some(used) = used {
                    stats.set_used_percent(used);
                }
                match checked {
                    Ok(Some(report)) => {
                        stats
                            .thinned_rows
                            .fetch_add(report.deleted.values().sum(), Ordering::Relaxed);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "disk guard check failed");
                    }
                }
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "disk guard task failed");
            }
        }
    }
}

#[cfg(test)]
mod tests;
