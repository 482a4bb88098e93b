//! The outbox file itself: append, read oldest first, acknowledge, bound.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use crate::backends::BackendError;
use crate::reading::{Kind, Reading, Value};

/// `outbox:` in a durable backend's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Undelivered readings that have waited in the outbox longer than this are
    /// dropped (counted and logged). Counted from when the reading entered the
    /// outbox, not from its own timestamp.
    #[serde(default = "default_max_age", with = "crate::config::duration")]
    pub max_age: Duration,
    /// At most this many undelivered readings are kept; the oldest go first.
    #[serde(default = "default_max_rows")]
    pub max_rows: u64,
}

pub fn default_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
pub fn default_max_rows() -> u64 {
    2_000_000
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_age: default_max_age(),
            max_rows: default_max_rows(),
        }
    }
}

/// One undelivered reading, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub device: String,
    pub device_type: String,
    pub metric: String,
    pub value: Value,
    pub unit: String,
    pub kind: Kind,
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug)]
pub struct Outbox {
    conn: Connection,
    backend: &'static str,
    bounds: OutboxConfig,
}

/// What one append's bounds dropped, by bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Rows that had waited longer than `max_age`.
    pub max_age: u64,
    /// The oldest rows past `max_rows`.
    pub max_rows: u64,
}

impl Dropped {
    pub fn total(&self) -> u64 {
        self.max_age + self.max_rows
    }

    /// One WARN line for the backend, naming the bound that dropped rows.
    pub fn log(&self, backend: &str, bounds: &OutboxConfig) {
        if self.max_age > 0 {
            tracing::warn!(
                backend,
                dropped = self.max_age,
                max_age = %humantime::format_duration(bounds.max_age),
                "outbox: undelivered readings waited longer than outbox.max_age and were dropped"
            );
        }
        if self.max_rows > 0 {
            tracing::warn!(
                backend,
                dropped = self.max_rows,
                max_rows = bounds.max_rows,
                "outbox full (outbox.max_rows): the oldest undelivered readings were dropped"
            );
        }
    }
}

fn error(e: rusqlite::Error) -> BackendError {
    BackendError::transient(format!("outbox: {e}")).caused_by(e)
}

impl Outbox {
    /// Opens (creating if needed) the outbox file, for one backend's rows.
    pub fn open(path: &Path, backend: &'static str, bounds: OutboxConfig) -> Result<Outbox, BackendError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| BackendError::transient(format!("outbox: {}: {e}", dir.display())).caused_by(e))?;
        }
        let conn = Connection::open(path).map_err(error)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(error)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(error)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(error)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                backend TEXT NOT NULL,
                device TEXT NOT NULL,
                device_type TEXT NOT NULL,
                metric TEXT NOT NULL,
                number REAL,
                text TEXT,
                unit TEXT NOT NULL,
                kind TEXT NOT NULL,
                ts_ms INTEGER NOT NULL,
                -- When the reading entered the outbox: what max_age counts from.
                queued_ms INTEGER NOT NULL DEFAULT 0
            );
            CREATE INDEX IF NOT EXISTS outbox_backend_id ON outbox (backend, id);
            -- Aggregating backends take whole time windows, oldest first.
            CREATE INDEX IF NOT EXISTS outbox_backend_ts ON outbox (backend, ts_ms);
            -- Rows the far end refused for good (a 4xx), kept for inspection
            -- instead of blocking delivery or vanishing.
            CREATE TABLE IF NOT EXISTS outbox_dead_letter (
                id INTEGER PRIMARY KEY,
                backend TEXT NOT NULL,
                device TEXT NOT NULL,
                device_type TEXT NOT NULL,
                metric TEXT NOT NULL,
                number REAL,
                text TEXT,
                unit TEXT NOT NULL,
                kind TEXT NOT NULL,
                ts_ms INTEGER NOT NULL,
                reason TEXT NOT NULL,
                dead_at_ms INTEGER NOT NULL
            );
            -- Rows the bounds dropped, by backend and bound, for /metrics.
            CREATE TABLE IF NOT EXISTS outbox_dropped (
                backend TEXT NOT NULL,
                reason TEXT NOT NULL,
                count INTEGER NOT NULL,
                PRIMARY KEY (backend, reason)
            );",
        )
        .map_err(error)?;
        migrate_queued_ms(&conn)?;
        Ok(Outbox { conn, backend, bounds })
    }

    /// Appends a batch in one transaction, then enforces the bounds. Returns what
    /// the bounds dropped.
    pub fn append(&mut self, readings: &[Reading]) -> Result<Dropped, BackendError> {
        self.append_at(readings, Utc::now())
    }

    /// `append` with the wall clock given: the readings are queued at `now`, and
    /// rows queued before `now - max_age` are dropped.
    pub fn append_at(&mut self, readings: &[Reading], now: DateTime<Utc>) -> Result<Dropped, BackendError> {
        let queued_ms = now.timestamp_millis();
        let tx = self.conn.transaction().map_err(error)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO outbox (backend, device, device_type, metric, number, text, unit, kind, ts_ms, queued_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(error)?;
            for r in readings {
                let (number, text) = match &r.value {
                    Value::Number(n) => (Some(*n), None),
                    Value::Text(t) => (None, Some(t.to_string())),
                };
                stmt.execute(params![
                    self.backend,
                    &*r.device,
                    r.device_type,
                    &*r.metric,
                    number,
                    text,
                    r.unit.symbol(),
                    r.kind.as_str(),
                    r.timestamp.timestamp_millis(),
                    queued_ms
                ])
                .map_err(error)?;
            }
        }
        let dropped = enforce_bounds(&tx, self.backend, &self.bounds, now)?;
        tx.commit().map_err(error)?;
        Ok(dropped)
    }

    /// The bounds this outbox enforces.
    pub fn bounds(&self) -> &OutboxConfig {
        &self.bounds
    }
}

/// Outbox files written before `queued_ms` existed gain the column; their rows
/// count as queued now, so an upgrade never drops what was waiting.
fn migrate_queued_ms(conn: &Connection) -> Result<(), BackendError> {
    let has_column = conn
        .prepare("SELECT 1 FROM pragma_table_info('outbox') WHERE name = 'queued_ms'")
        .and_then(|mut s| s.exists([]))
        .map_err(error)?;
    if !has_column {
        conn.execute_batch("ALTER TABLE outbox ADD COLUMN queued_ms INTEGER NOT NULL DEFAULT 0")
            .map_err(error)?;
    }
    conn.execute(
        "UPDATE outbox SET queued_ms = ?1 WHERE queued_ms = 0",
        [Utc::now().timestamp_millis()],
    )
    .map_err(error)?;
    conn.execute_batch("CREATE INDEX IF NOT EXISTS outbox_backend_queued ON outbox (backend, queued_ms)")
        .map_err(error)?;
    Ok(())
}

fn enforce_bounds(
    tx: &rusqlite::Transaction<'_>,
    backend: &str,
    bounds: &OutboxConfig,
    now: DateTime<Utc>,
) -> Result<Dropped, BackendError> {
    {
        let max_age = TimeDelta::from_std(bounds.max_age).unwrap_or(TimeDelta::MAX);
        let cutoff = now
            .checked_sub_signed(max_age)
            .map_or(i64::MIN, |t| t.timestamp_millis());
        let mut dropped = Dropped {
            max_age: tx
                .execute(
                    "DELETE FROM outbox WHERE backend = ?1 AND queued_ms < ?2",
                    params![backend, cutoff],
                )
                .map_err(error)? as u64,
            max_rows: 0,
        };
        let count: i64 = tx
            .query_row("SELECT count(*) FROM outbox WHERE backend = ?1", [backend], |r| {
                r.get(0)
            })
            .map_err(error)?;
        let excess = count - bounds.max_rows as i64;
        if excess > 0 {
            dropped.max_rows = tx
                .execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE backend = ?1 ORDER BY id LIMIT ?2)",
                    params![backend, excess],
                )
                .map_err(error)? as u64;
        }
        for (reason, n) in [("max_age", dropped.max_age), ("max_rows", dropped.max_rows)] {
            if n > 0 {
                tx.execute(
                    "INSERT INTO outbox_dropped (backend, reason, count) VALUES (?1, ?2, ?3)
                     ON CONFLICT (backend, reason) DO UPDATE SET count = count + excluded.count",
                    params![backend, reason, n as i64],
                )
                .map_err(error)?;
            }
        }
        Ok(dropped)
    }
}

/// An `outbox` row as selected by `pending` and `pending_before`.
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxRow> {
    let number: Option<f64> = r.get(4)?;
    let text: Option<String> = r.get(5)?;
    let kind: String = r.get(7)?;
    let ts: i64 = r.get(8)?;
    Ok(OutboxRow {
        id: r.get(0)?,
        device: r.get(1)?,
        device_type: r.get(2)?,
        metric: r.get(3)?,
        value: match (number, text) {
            (_, Some(t)) => Value::Text(t.into()),
            (n, None) => Value::Number(n.unwrap_or(f64::NAN)),
        },
        unit: r.get(6)?,
        kind: if kind == "counter" { Kind::Counter } else { Kind::Gauge },
        timestamp: DateTime::<Utc>::from_timestamp_millis(ts).unwrap_or_default(),
    })
}

impl Outbox {
    /// Up to `limit` undelivered rows with an id above `after`, oldest first.
    pub fn pending(&self, after: i64, limit: usize) -> Result<Vec<OutboxRow>, BackendError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, device, device_type, metric, number, text, unit, kind, ts_ms FROM outbox
                 WHERE backend = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(error)?;
        let rows = stmt
            .query_map(params![self.backend, after, limit as i64], row)
            .map_err(error)?;
        rows.collect::<Result<_, _>>().map_err(error)
    }

    /// Up to `limit` undelivered rows with a timestamp before `before`, oldest
    /// timestamp first: for backends that send whole time windows.
    pub fn pending_before(&self, before: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxRow>, BackendError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, device, device_type, metric, number, text, unit, kind, ts_ms FROM outbox
                 WHERE backend = ?1 AND ts_ms < ?2 ORDER BY ts_ms, id LIMIT ?3",
            )
            .map_err(error)?;
        let rows = stmt
            .query_map(params![self.backend, before.timestamp_millis(), limit as i64], row)
            .map_err(error)?;
        rows.collect::<Result<_, _>>().map_err(error)
    }

    /// Moves rows the far end will never accept into `outbox_dead_letter`, with
    /// the reason, so delivery goes on with the next ones.
    pub fn dead_letter(&mut self, ids: &[i64], reason: &str) -> Result<(), BackendError> {
        let now = Utc::now().timestamp_millis();
        let tx = self.conn.transaction().map_err(error)?;
        {
            let mut copy = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO outbox_dead_letter
                     SELECT id, backend, device, device_type, metric, number, text, unit, kind, ts_ms, ?2, ?3
                     FROM outbox WHERE id = ?1",
                )
                .map_err(error)?;
            let mut delete = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1").map_err(error)?;
            for id in ids {
                copy.execute(params![id, reason, now]).map_err(error)?;
                delete.execute([id]).map_err(error)?;
            }
        }
        tx.commit().map_err(error)
    }

    /// Rows of this backend in the dead-letter table.
    pub fn dead_letter_count(&self) -> Result<u64, BackendError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM outbox_dead_letter WHERE backend = ?1",
                [self.backend],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(error)
    }

    /// Marks rows delivered (acknowledged by the far end).
    pub fn ack(&mut self, ids: &[i64]) -> Result<(), BackendError> {
        if ids.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction().map_err(error)?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1").map_err(error)?;
            for id in ids {
                stmt.execute([id]).map_err(error)?;
            }
        }
        tx.commit().map_err(error)
    }

    /// Undelivered rows and when the one waiting longest entered the outbox.
    pub fn depth(&self) -> Result<(u64, Option<DateTime<Utc>>), BackendError> {
        self.conn
            .query_row(
                "SELECT count(*), min(queued_ms) FROM outbox WHERE backend = ?1",
                [self.backend],
                |r| {
                    let n: i64 = r.get(0)?;
                    let oldest: Option<i64> = r.get(1)?;
                    Ok((n as u64, oldest.and_then(DateTime::<Utc>::from_timestamp_millis)))
                },
            )
            .map_err(error)
    }

    /// Rows this backend's bounds have dropped so far, by bound.
    pub fn dropped_count(&self) -> Result<Dropped, BackendError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT reason, count FROM outbox_dropped WHERE backend = ?1")
            .map_err(error)?;
        let rows = stmt
            .query_map([self.backend], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(error)?;
        let mut dropped = Dropped::default();
        for row in rows {
            let (reason, n) = row.map_err(error)?;
            match reason.as_str() {
                "max_age" => dropped.max_age = n as u64,
                "max_rows" => dropped.max_rows = n as u64,
                _ => {}
            }
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests;
