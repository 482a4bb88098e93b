//! SQLite: one table per device, a `ts` column (unix seconds, UTC) and one column
//! per metric, added as metrics appear; a `metrics` table records each column's
//! unit and kind; `<device>_5m`, the 5-minute aggregates the downsampler fills, is
//! created and widened with it. Grafana's SQLite plugin reads it as it is:
//! `SELECT ts AS time, power_delivered FROM "p1" WHERE ts >= $__unixEpochFrom()`.
//!
//! `ts` is the table's INTEGER PRIMARY KEY: one row per device per second. Readings
//! of the same second merge into that row (a DSMR gas value carrying the same
//! capture time in every telegram is stored once, not once a telegram). A reading
//! that replaces a *different* value of its metric in that row is a loss for
//! SQLite (CSV and the outbox keep every reading): it is counted per device
//! (`mesura_sqlite_merged_total`) and logged at most once a minute.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params_from_iter, Connection, ErrorCode, OptionalExtension};
use serde::{Deserialize, Serialize};

pub mod cost;
pub mod downsample;
pub mod export;
pub mod guard;
pub mod monthly_peaks;
pub mod schema;
pub mod writable;

use super::{blocking, Backend, BackendError, BackendType, BatchPolicy};
use crate::reading::{MonthlyPeaks, Reading, Value};
use schema::{quote, Aggregate};

/// `backends.sqlite`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file; relative to `data_dir`.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// How often readings are committed. Longer spares an SD card; a crash loses at
    /// most this window (a clean shutdown loses nothing).
    #[serde(default = "default_flush_interval", with = "crate::config::duration")]
    pub flush_interval: Duration,
    /// Commit early when this many readings wait.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Polls queued for this backend before new ones are dropped (and counted).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
}

pub fn default_path() -> PathBuf {
    PathBuf::from("mesura.db")
}
pub fn default_flush_interval() -> Duration {
    Duration::from_secs(5)
}
pub fn default_batch_size() -> usize {
    5000
}
pub fn default_queue_capacity() -> usize {
    10_000
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            path: default_path(),
            flush_interval: default_flush_interval(),
            batch_size: default_batch_size(),
            queue_capacity: default_queue_capacity(),
        }
    }
}

#[derive(Debug)]
pub struct SqliteBackend {
    store: Arc<Mutex<Store>>,
    policy: BatchPolicy,
    /// Merges of committed writes not yet handed to the router's counters.
    merged: HashMap<String, u64>,
    merge_log: MergeLog,
}

/// How often the "readings merged" warning may be logged; every merge is counted.
const MERGE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Rate-limits the "readings merged" warning.
#[derive(Debug, Default)]
struct MergeLog {
    last: Option<tokio::time::Instant>,
    /// Merges since the last warning, per device.
    unreported: HashMap<String, u64>,
}

impl MergeLog {
    fn record(&mut self, merged: &HashMap<String, u64>) {
        if merged.is_empty() {
            return;
        }
        for (device, n) in merged {
            *self.unreported.entry(device.clone()).or_default() += n;
        }
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|at| now.duration_since(at) < MERGE_LOG_EVERY) {
            return;
        }
        self.last = Some(now);
        let mut devices: Vec<(String, u64)> = self.unreported.drain().collect();
        devices.sort();
        let list: Vec<String> = devices.iter().map(|(d, n)| format!("{d} ({n})")).collect();
        tracing::warn!(
            devices = %list.join(", "),
            "readings replaced a different value stored for the same second: SQLite keeps one row per \
             device per second, so the earlier values are lost there (CSV, MQTT and the uplink keep them); \
             two readings of a device less than 1s apart, or a device sending the same timestamp twice? \
             (logged at most once a minute; counted in mesura_sqlite_merged_total)"
        );
    }
}

#[async_trait]
impl BackendType for SqliteConfig {
    /// Grafana reads the SQLite file, so it is written unless config.yaml says otherwise.
    fn by_default() -> Option<Self> {
        Some(SqliteConfig::default())
    }

    async fn open(&self, data_dir: &Path) -> Result<Box<dyn Backend>, BackendError> {
        Ok(Box::new(SqliteBackend::open(self, data_dir).await?))
    }
}

impl SqliteBackend {
    pub async fn open(config: &SqliteConfig, data_dir: &Path) -> Result<Self, BackendError> {
        let path = data_dir.join(&config.path);
        let store = tokio::task::spawn_blocking(move || Store::open(&path))
            .await
            .map_err(|e| BackendError::transient(e.to_string()).caused_by(e))??;
        Ok(SqliteBackend {
            store: Arc::new(Mutex::new(store)),
            policy: BatchPolicy {
                flush_interval: config.flush_interval,
                batch_size: config.batch_size.max(1),
                queue_capacity: config.queue_capacity,
            },
            merged: HashMap::new(),
            merge_log: MergeLog::default(),
        })
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn policy(&self) -> BatchPolicy {
        self.policy
    }

    async fn write(&mut self, batch: &[Reading]) -> Result<(), BackendError> {
        let batch = batch.to_vec();
        let merged = blocking(&self.store, move |store| store.write(&batch)).await?;
        self.merge_log.record(&merged);
        for (device, n) in merged {
            *self.merged.entry(device).or_default() += n;
        }
        Ok(())
    }

    fn take_merged(&mut self) -> Vec<(String, u64)> {
        self.merged.drain().collect()
    }

    async fn write_monthly_peaks(&mut self, peaks: &MonthlyPeaks) -> Result<(), BackendError> {
        let peaks = peaks.clone();
        blocking(&self.store, move |store| {
            monthly_peaks::write(&mut store.conn, &peaks).map_err(classify)
        })
        .await
        .map(drop)
    }

    async fn flush(&mut self) -> Result<(), BackendError> {
        // Every write commits; a checkpoint folds the WAL back into the database
        // so the file is complete on its own after a clean shutdown.
        blocking(&self.store, |store| {
            store
                .conn
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                .map_err(classify)
        })
        .await
    }
}

/// The connection and what we know of its schema.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    columns: HashMap<String, HashSet<String>>,
    /// The newest `ts` stored per device table, read once per table. A row for an
    /// older or equal second may exist and is looked up to count what a write
    /// overwrites; a newer second (every poll, normally) cannot, so the common
    /// write needs no lookup (one statement per device instead of two, which also
    /// keeps 200 devices' statements within the prepared-statement cache).
    newest_ts: HashMap<String, i64>,
}

fn classify(e: rusqlite::Error) -> BackendError {
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch) => {
            BackendError::permanent(format!("sqlite: {e}")).caused_by(e)
        }
        _ => BackendError::transient(format!("sqlite: {e}")).caused_by(e),
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, BackendError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| BackendError::transient(format!("cannot create {}: {e}", dir.display())).caused_by(e))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| BackendError::transient(format!("cannot open {}: {e}", path.display())).caused_by(e))?;
        schema::prepare_writer(&conn).map_err(classify)?;
        let mut store = Store {
            conn,
            columns: HashMap::new(),
            newest_ts: HashMap::new(),
        };
        store.load_schema()?;
        if let Err(e) = store.complete_aggregate_tables() {
            tracing::warn!(
                error = %e,
                "cannot create the missing 5-minute aggregate tables; dashboards may fail on them \
                 until the downsampler's next run"
            );
        }
        Ok(store)
    }

    /// Gives every device table its `<device>_5m` with all its columns: databases
    /// written before the writer created them, or with retention off, have none. The
    /// backend still opens if this fails (a full disk): only long ranges suffer.
    fn complete_aggregate_tables(&mut self) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        for (device, columns) in schema::catalogue(&tx)? {
            if self.columns.contains_key(&device) {
                schema::prepare_aggregate_table(&tx, &device, &columns)?;
            }
        }
        tx.commit()
    }

    fn load_schema(&mut self) -> Result<(), BackendError> {
        self.columns.clear();
        self.newest_ts.clear();
        let tables: Vec<String> = {
            let mut stmt = self
                .conn
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
                .map_err(classify)?;
            let rows = stmt.query_map([], |row| row.get(0)).map_err(classify)?;
            rows.collect::<Result<_, _>>().map_err(classify)?
        };
        for table in tables {
            let mut stmt = self
                .conn
                .prepare(&format!("PRAGMA table_info({})", quote(&table)))
                .map_err(classify)?;
            let cols = stmt.query_map([], |row| row.get::<_, String>(1)).map_err(classify)?;
            let cols: HashSet<String> = cols.collect::<Result<_, _>>().map_err(classify)?;
            self.columns.insert(table, cols);
        }
        Ok(())
    }

    /// Writes a batch in one transaction and returns, per device, how many readings
    /// replaced a different value of the same metric and second (in the batch or
    /// already stored). On failure nothing is written and the schema cache is
    /// reloaded (an ALTER may have been rolled back).
    pub fn write(&mut self, batch: &[Reading]) -> Result<HashMap<String, u64>, BackendError> {
        let result = self.write_tx(batch);
        if result.is_err() {
            let _ = self.load_schema();
        }
        result
    }

    fn write_tx(&mut self, batch: &[Reading]) -> Result<HashMap<String, u64>, BackendError> {
        let mut merged: HashMap<String, u64> = HashMap::new();
        // Group readings into rows: one per (device, second), in arrival order.
        let mut rows: Vec<(&str, i64, Vec<&Reading>)> = Vec::new();
        let mut index: HashMap<(&str, i64), usize> = HashMap::new();
        for r in batch {
            let key = (&*r.device, r.timestamp.timestamp());
            let i = *index.entry(key).or_insert_with(|| {
                rows.push((key.0, key.1, Vec::new()));
                rows.len() - 1
            });
            rows[i].2.push(r);
        }
        let tx = self.conn.transaction().map_err(classify)?;
        for (device, ts, readings) in &rows {
            let table_existed = self.columns.contains_key(*device);
            // The metrics this row brings that the table lacks, each once, with
            // the column type its first value asks for.
            let mut added: Vec<(&Reading, &'static str)> = Vec::new();
            let columns = self.columns.get(*device);
            for r in readings {
                let known = columns.is_some_and(|cols| cols.contains(&*r.metric));
                if !known && !added.iter().any(|(a, _)| a.metric == r.metric) {
                    let sql_type = if matches!(r.value, Value::Text(_)) {
                        "TEXT"
                    } else {
                        "REAL"
                    };
                    added.push((r, sql_type));
                }
            }
            if !added.is_empty() || !table_existed {
                let definitions: Vec<String> = added
                    .iter()
                    .map(|(r, sql_type)| format!("{} {sql_type}", quote(&r.metric)))
                    .collect();
                let new_table = (!table_existed).then_some("ts INTEGER PRIMARY KEY NOT NULL");
                schema::add_columns(&tx, &quote(device), new_table, &definitions).map_err(classify)?;
            }
            let known = self
                .columns
                .entry((*device).to_owned())
                .or_insert_with(|| HashSet::from(["ts".to_owned()]));
            let mut new_columns: Vec<(String, Aggregate)> = Vec::with_capacity(added.len());
            for (r, sql_type) in &added {
                tx.execute(
                    "INSERT OR REPLACE INTO metrics (device, metric, unit, kind) VALUES (?1, ?2, ?3, ?4)",
                    (device, &*r.metric, r.unit.symbol(), r.kind.as_str()),
                )
                .map_err(classify)?;
                known.insert(r.metric.to_string());
                new_columns.push((r.metric.to_string(), Aggregate::of(r.kind.as_str(), sql_type)));
            }
            if !table_existed || !new_columns.is_empty() {
                schema::prepare_aggregate_table(&tx, device, &new_columns).map_err(classify)?;
            }
            // Later readings of a metric in the same second win.
            let mut cols: Vec<&str> = Vec::with_capacity(readings.len());
            let mut values: Vec<rusqlite::types::Value> = vec![rusqlite::types::Value::Integer(*ts)];
            let mut lost = 0u64;
            for r in readings {
                let v = match &r.value {
                    Value::Number(n) if n.is_finite() => rusqlite::types::Value::Real(*n),
                    Value::Number(_) => rusqlite::types::Value::Null,
                    Value::Text(t) => rusqlite::types::Value::Text(t.to_string()),
                };
                match cols.iter().position(|c| *c == &*r.metric) {
                    Some(i) => {
                        lost += u64::from(replaces(&values[i + 1], &v));
                        values[i + 1] = v;
                    }
                    None => {
                        cols.push(&r.metric);
                        values.push(v);
                    }
                }
            }
            let names: Vec<String> = cols.iter().map(|c| quote(c)).collect();
            let newest = match self.newest_ts.get(*device) {
                Some(newest) => Some(*newest),
                None if table_existed => tx
                    .query_row(&format!("SELECT max(ts) FROM {}", quote(device)), [], |row| {
                        row.get::<_, Option<i64>>(0)
                    })
                    .map_err(classify)?,
                None => None,
            };
            self.newest_ts
                .insert((*device).to_owned(), newest.map_or(*ts, |n| n.max(*ts)));
            if newest.is_some_and(|newest| *ts <= newest) {
                let sql = format!("SELECT {} FROM {} WHERE ts = ?", names.join(", "), quote(device));
                let mut stmt = tx.prepare_cached(&sql).map_err(classify)?;
                let stored: Option<Vec<rusqlite::types::Value>> = stmt
                    .query_row([*ts], |row| (0..cols.len()).map(|i| row.get(i)).collect())
                    .optional()
                    .map_err(classify)?;
                if let Some(stored) = stored {
                    lost += stored
                        .iter()
                        .zip(&values[1..])
                        .filter(|(old, new)| replaces(old, new))
                        .count() as u64;
                }
            }
            if lost > 0 {
                *merged.entry((*device).to_owned()).or_default() += lost;
            }
            let placeholders = vec!["?"; cols.len()].join(", ");
            let updates: Vec<String> = names.iter().map(|n| format!("{n} = excluded.{n}")).collect();
            let sql = format!(
                "INSERT INTO {} (ts, {}) VALUES (?, {placeholders}) ON CONFLICT(ts) DO UPDATE SET {}",
                quote(device),
                names.join(", "),
                updates.join(", ")
            );
            let mut stmt = tx.prepare_cached(&sql).map_err(classify)?;
            stmt.execute(params_from_iter(values.iter())).map_err(classify)?;
        }
        tx.commit().map_err(classify)?;
        Ok(merged)
    }
}

/// Whether writing `new` over `old` loses a value: a NULL (a metric the row did not
/// have yet) or the same value again (a gas capture time repeated in every DSMR
/// telegram) loses nothing.
fn replaces(old: &rusqlite::types::Value, new: &rusqlite::types::Value) -> bool {
    !matches!(old, rusqlite::types::Value::Null) && old != new
}

#[cfg(test)]
mod tests;
