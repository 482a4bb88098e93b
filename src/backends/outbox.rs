//! The durable outbox behind the MQTT and uplink backends.
//!
//! rumqttc (and any HTTP client) keeps unacknowledged messages only in memory, so a
//! broker outage longer than its buffers, or a restart, would lose readings. Instead
//! a durable backend's `write` appends its readings here (`data/outbox.db`, SQLite
//! in WAL mode, one transaction per batch), and its delivery task sends them oldest
//! first and deletes them only once the far end has acknowledged them. The rows
//! still present are the backend's delivered-cursor: after a restart, delivery
//! resumes with them. Delivery is at-least-once: a reading sent just before a
//! connection dropped, whose acknowledgement was lost, is sent again.
//!
//! The outbox is bounded by age and by rows per backend; past either bound the
//! oldest rows are dropped, counted and logged.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::BackendError;
use crate::reading::{Kind, Reading, Value};

/// `outbox:` in a durable backend's settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Undelivered readings older than this are dropped (counted and logged).
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

pub struct Outbox {
    conn: Connection,
    backend: &'static str,
    bounds: OutboxConfig,
}

fn error(e: rusqlite::Error) -> BackendError {
    BackendError::Transient(format!("outbox: {e}"))
}

impl Outbox {
    /// Opens (creating if needed) the outbox file, for one backend's rows.
    pub fn open(path: &Path, backend: &'static str, bounds: OutboxConfig) -> Result<Outbox, BackendError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| BackendError::Transient(format!("outbox: {}: {e}", dir.display())))?;
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
                ts_ms INTEGER NOT NULL
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
            );",
        )
        .map_err(error)?;
        Ok(Outbox { conn, backend, bounds })
    }

    /// Appends a batch in one transaction, then enforces the bounds. Returns how
    /// many old rows the bounds dropped.
    pub fn append(&mut self, readings: &[Reading]) -> Result<u64, BackendError> {
        let tx = self.conn.transaction().map_err(error)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO outbox (backend, device, device_type, metric, number, text, unit, kind, ts_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
                    r.timestamp.timestamp_millis()
                ])
                .map_err(error)?;
            }
        }
        let dropped = enforce_bounds(&tx, self.backend, &self.bounds)?;
        tx.commit().map_err(error)?;
        Ok(dropped)
    }
}

fn enforce_bounds(tx: &rusqlite::Transaction<'_>, backend: &str, bounds: &OutboxConfig) -> Result<u64, BackendError> {
    {
        let max_age = TimeDelta::from_std(bounds.max_age).unwrap_or(TimeDelta::MAX);
        let cutoff = Utc::now()
            .checked_sub_signed(max_age)
            .map_or(i64::MIN, |t| t.timestamp_millis());
        let mut dropped = tx
            .execute(
                "DELETE FROM outbox WHERE backend = ?1 AND ts_ms < ?2",
                params![backend, cutoff],
            )
            .map_err(error)? as u64;
        let count: i64 = tx
            .query_row("SELECT count(*) FROM outbox WHERE backend = ?1", [backend], |r| {
                r.get(0)
            })
            .map_err(error)?;
        let excess = count - bounds.max_rows as i64;
        if excess > 0 {
            dropped += tx
                .execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE backend = ?1 ORDER BY id LIMIT ?2)",
                    params![backend, excess],
                )
                .map_err(error)? as u64;
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

    /// Undelivered rows and the timestamp of the oldest.
    pub fn depth(&self) -> Result<(u64, Option<DateTime<Utc>>), BackendError> {
        self.conn
            .query_row(
                "SELECT count(*), min(ts_ms) FROM outbox WHERE backend = ?1",
                [self.backend],
                |r| {
                    let n: i64 = r.get(0)?;
                    let oldest: Option<i64> = r.get(1)?;
                    Ok((n as u64, oldest.and_then(DateTime::<Utc>::from_timestamp_millis)))
                },
            )
            .map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Unit;
    use std::sync::Arc;

    fn reading(i: i64, ts: DateTime<Utc>) -> Reading {
        Reading {
            device: Arc::from("meter, east"),
            device_type: "dsmr",
            metric: Arc::from("power_delivered"),
            value: Value::Number(i as f64),
            unit: Unit::Watt,
            kind: Kind::Gauge,
            timestamp: ts,
        }
    }

    #[test]
    fn rows_survive_reopening_until_acked_and_backends_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.db");
        let now = Utc::now();
        let mut mqtt = Outbox::open(&path, "mqtt", OutboxConfig::default()).unwrap();
        let mut uplink = Outbox::open(&path, "uplink", OutboxConfig::default()).unwrap();
        mqtt.append(&(0..5).map(|i| reading(i, now)).collect::<Vec<_>>())
            .unwrap();
        uplink.append(&[reading(99, now)]).unwrap();
        let rows = mqtt.pending(0, 3).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].device, "meter, east");
        assert_eq!(rows[0].unit, "W");
        assert_eq!(rows[0].timestamp.timestamp_millis(), now.timestamp_millis());
        mqtt.ack(&[rows[0].id, rows[1].id]).unwrap();
        drop(mqtt);

        let mqtt = Outbox::open(&path, "mqtt", OutboxConfig::default()).unwrap();
        let left: Vec<f64> = mqtt
            .pending(0, 100)
            .unwrap()
            .iter()
            .filter_map(|r| r.value.as_f64())
            .collect();
        assert_eq!(left, vec![2.0, 3.0, 4.0]);
        assert_eq!(mqtt.depth().unwrap().0, 3);
        assert_eq!(uplink.depth().unwrap().0, 1);
    }

    #[test]
    fn dead_letters_move_aside_and_windows_come_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(&dir.path().join("o.db"), "uplink", OutboxConfig::default()).unwrap();
        let now = Utc::now();
        let earlier = now - TimeDelta::minutes(10);
        outbox
            .append(&[reading(0, now), reading(1, earlier), reading(2, now)])
            .unwrap();
        let before: Vec<f64> = outbox
            .pending_before(now, 10)
            .unwrap()
            .iter()
            .filter_map(|r| r.value.as_f64())
            .collect();
        assert_eq!(before, vec![1.0], "only rows before the cut-off");
        let rows = outbox.pending(0, 10).unwrap();
        outbox.dead_letter(&[rows[0].id, rows[2].id], "400 bad").unwrap();
        assert_eq!(outbox.dead_letter_count().unwrap(), 2);
        assert_eq!(outbox.depth().unwrap().0, 1);
        assert_eq!(outbox.pending(0, 10).unwrap()[0].value.as_f64(), Some(1.0));
    }

    #[test]
    fn bounds_drop_the_oldest_and_count_them() {
        let dir = tempfile::tempdir().unwrap();
        let bounds = OutboxConfig {
            max_age: Duration::from_secs(3600),
            max_rows: 4,
        };
        let mut outbox = Outbox::open(&dir.path().join("o.db"), "mqtt", bounds).unwrap();
        let old = Utc::now() - TimeDelta::hours(2);
        assert_eq!(
            outbox.append(&[reading(0, old), reading(1, old)]).unwrap(),
            2,
            "older than max_age"
        );
        let now = Utc::now();
        assert_eq!(
            outbox
                .append(&(10..16).map(|i| reading(i, now)).collect::<Vec<_>>())
                .unwrap(),
            2
        );
        let left: Vec<f64> = outbox
            .pending(0, 100)
            .unwrap()
            .iter()
            .filter_map(|r| r.value.as_f64())
            .collect();
        assert_eq!(left, vec![12.0, 13.0, 14.0, 15.0]);
    }
}
