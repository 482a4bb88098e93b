//! The epochs of every counter, kept in `<data_dir>/epochs.db` so the offsets survive
//! a restart and a user can inspect and correct them (`mesura epochs`):
//!
//! ```sql
//! SELECT device, metric, datetime(start, 'unixepoch'), datetime("end", 'unixepoch'),
//!        "offset", reason FROM epochs ORDER BY device, metric, start;
//! ```
//!
//! A counter's open epoch (`end` NULL) holds the offset its readings take now, the
//! meter identity it was started with and its last accepted reading (saved at most
//! once a minute and on shutdown), so a swap while the daemon was down is noticed.
//! Its own file, not the SQLite backend's: the epochs are needed whichever backends
//! are on, and the backend's file has one writer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use crate::energy::counters::{NewEpoch, Point, Reason};
use crate::reading::MetricName;

/// The file's name in the data directory.
pub const FILE_NAME: &str = "epochs.db";

#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{device}/{metric}: {message}")]
    Refused {
        device: String,
        metric: String,
        message: String,
    },
}

/// One row of the `epochs` table.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRow {
    pub id: i64,
    pub device: String,
    pub metric: String,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub offset: f64,
    pub reason: String,
    pub identity: Option<String>,
}

/// A counter's persisted state, as [`crate::energy::cleaner::DeviceCounters::restore`] takes it.
pub type Restored = (Option<String>, Vec<(MetricName, f64, Option<Point>)>);

/// The one connection to the epochs file that every device task shares: one
/// SQLite connection (its schema, cache and statements) instead of one per device.
pub type SharedEpochs = std::sync::Arc<std::sync::Mutex<EpochStore>>;

#[derive(Debug)]
pub struct EpochStore {
    path: PathBuf,
    conn: Connection,
    data_version: i64,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS epochs (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER,
    "offset" REAL NOT NULL,
    reason TEXT NOT NULL,
    identity TEXT,
    last_at INTEGER,
    last_raw REAL,
    last_lifetime REAL
);
CREATE INDEX IF NOT EXISTS epochs_by_counter ON epochs (device, metric, start);
"#;

fn ts(at: DateTime<Utc>) -> i64 {
    at.timestamp()
}

fn from_ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

impl EpochStore {
    /// Opens (or creates) the epochs file in `data_dir`.
    pub fn open_in(data_dir: &Path) -> Result<EpochStore, EpochError> {
        Self::open(&data_dir.join(FILE_NAME))
    }

    pub fn open(path: &Path) -> Result<EpochStore, EpochError> {
        let err = |source| EpochError::Sqlite {
            path: path.to_owned(),
            source,
        };
        // The data directory may not exist yet (no SQLite backend, a first start):
        // a failure shows up as SQLite's own error just below.
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        // A few small rows per counter: SQLite's default 2 MiB page cache would be
        // mostly empty, but a connection's cache grows to what it touched.
        conn.pragma_update(None, "cache_size", -128).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let mut store = EpochStore {
            path: path.to_owned(),
            conn,
            data_version: 0,
        };
        store.data_version = store.read_data_version()?;
        Ok(store)
    }

    fn err(&self, source: rusqlite::Error) -> EpochError {
        EpochError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// SQLite's `data_version`: it changes when another connection (`mesura
    /// epochs`) commits, never for this connection's own writes.
    pub fn data_version(&self) -> Result<i64, EpochError> {
        self.read_data_version()
    }

    fn read_data_version(&self) -> Result<i64, EpochError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Whether another connection (`mesura epochs`, another device's task) committed
    /// since the last call: then the offsets are worth reading again.
    pub fn changed(&mut self) -> Result<bool, EpochError> {
        let now = self.read_data_version()?;
        let changed = now != self.data_version;
        self.data_version = now;
        Ok(changed)
    }

    /// The device's identity and every open epoch's offset and last reading.
    pub fn restore(&self, device: &str) -> Result<Restored, EpochError> {
        let mut stmt = self
            .conn
            .prepare(
                r#"SELECT metric, "offset", identity, last_at, last_raw, last_lifetime FROM epochs
                   WHERE device = ?1 AND "end" IS NULL ORDER BY start"#,
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([device], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, f64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<f64>>(4)?,
                    r.get::<_, Option<f64>>(5)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut identity = None;
        let mut counters = Vec::new();
        for row in rows {
            let (metric, offset, id, at, raw, lifetime) = row.map_err(|e| self.err(e))?;
            if id.is_some() {
                identity = id;
            }
            let last = match (at, raw, lifetime) {
                (Some(at), Some(raw), Some(lifetime)) => Some(Point {
                    at: from_ts(at),
                    raw,
                    lifetime,
                }),
                _ => None,
            };
            counters.push((MetricName::from(metric), offset, last));
        }
        Ok((identity, counters))
    }

    /// The offsets of the device's open epochs, by metric.
    pub fn offsets(&self, device: &str) -> Result<Vec<(String, f64)>, EpochError> {
        let mut stmt = self
            .conn
            .prepare(r#"SELECT metric, "offset" FROM epochs WHERE device = ?1 AND "end" IS NULL"#)
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([device], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e));
        rows
    }

    /// Closes the counter's open epoch at `epoch.start` and opens the new one.
    pub fn start_epoch(
        &mut self,
        device: &str,
        metric: &str,
        epoch: &NewEpoch,
        identity: Option<&str>,
    ) -> Result<(), EpochError> {
        let tx = self.conn.transaction().map_err(|e| EpochError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        let result = (|| {
            tx.execute(
                r#"UPDATE epochs SET "end" = ?3 WHERE device = ?1 AND metric = ?2 AND "end" IS NULL"#,
                params![device, metric, ts(epoch.start)],
            )?;
            tx.execute(
                r#"INSERT INTO epochs (device, metric, start, "offset", reason, identity) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"#,
                params![device, metric, ts(epoch.start), epoch.offset, epoch.reason.as_str(), identity],
            )?;
            tx.commit()
        })();
        result.map_err(|e| self.err(e))
    }

    /// Saves the last accepted reading (and the identity) of each counter in its open epoch.
    pub fn save_last<'a>(
        &mut self,
        device: &str,
        identity: Option<&str>,
        counters: impl IntoIterator<Item = (&'a MetricName, f64, Option<Point>)>,
    ) -> Result<(), EpochError> {
        let tx = self.conn.transaction().map_err(|e| EpochError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        let result = (|| {
            for (metric, _offset, last) in counters {
                let Some(last) = last else { continue };
                tx.execute(
                    r#"UPDATE epochs SET last_at = ?3, last_raw = ?4, last_lifetime = ?5,
                       identity = coalesce(?6, identity)
                       WHERE device = ?1 AND metric = ?2 AND "end" IS NULL"#,
                    params![device, &**metric, ts(last.at), last.raw, last.lifetime, identity],
                )?;
            }
            tx.commit()
        })();
        result.map_err(|e| self.err(e))?;
        // Our own commit does not change data_version for this connection.
        Ok(())
    }

    /// Every epoch, or a device's, oldest first per counter.
    pub fn list(&self, device: Option<&str>) -> Result<Vec<EpochRow>, EpochError> {
        let mut stmt = self
            .conn
            .prepare(
                r#"SELECT id, device, metric, start, "end", "offset", reason, identity FROM epochs
                   WHERE ?1 IS NULL OR device = ?1 ORDER BY device, metric, start, id"#,
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([device], |r| {
                Ok(EpochRow {
                    id: r.get(0)?,
                    device: r.get(1)?,
                    metric: r.get(2)?,
                    start: from_ts(r.get(3)?),
                    end: r.get::<_, Option<i64>>(4)?.map(from_ts),
                    offset: r.get(5)?,
                    reason: r.get(6)?,
                    identity: r.get(7)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e));
        rows
    }

    /// A user's epoch from `start` with `offset`: it ends the epoch it falls in and
    /// runs until the next one starts (or is the open one). Returns the new row.
    pub fn add(
        &mut self,
        device: &str,
        metric: &str,
        start: DateTime<Utc>,
        offset: f64,
    ) -> Result<EpochRow, EpochError> {
        let refused = |message: &str| EpochError::Refused {
            device: device.to_owned(),
            metric: metric.to_owned(),
            message: message.to_owned(),
        };
        let rows: Vec<EpochRow> = self
            .list(Some(device))?
            .into_iter()
            .filter(|r| r.metric == metric)
            .collect();
        if rows.iter().any(|r| r.start == start) {
            return Err(refused("an epoch already starts at that instant: undo it first"));
        }
        let next_start = rows.iter().map(|r| r.start).filter(|s| *s > start).min();
        let tx = self.conn.transaction().map_err(|e| EpochError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        let result = (|| {
            // The epoch it falls in ends where it starts.
            tx.execute(
                r#"UPDATE epochs SET "end" = ?3 WHERE device = ?1 AND metric = ?2 AND start < ?3
                   AND ("end" IS NULL OR "end" > ?3)"#,
                params![device, metric, ts(start)],
            )?;
            tx.execute(
                r#"INSERT INTO epochs (device, metric, start, "end", "offset", reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"#,
                params![device, metric, ts(start), next_start.map(ts), offset, Reason::Manual.as_str()],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(id)
        })();
        let id = result.map_err(|e| self.err(e))?;
        Ok(EpochRow {
            id,
            device: device.to_owned(),
            metric: metric.to_owned(),
            start,
            end: next_start,
            offset,
            reason: Reason::Manual.as_str().to_owned(),
            identity: None,
        })
    }

    /// Removes the counter's newest epoch; the one before runs on in its place (its
    /// end becomes the removed one's end). Returns (removed, the one that runs on).
    pub fn undo(&mut self, device: &str, metric: &str) -> Result<(EpochRow, EpochRow), EpochError> {
        let refused = |message: &str| EpochError::Refused {
            device: device.to_owned(),
            metric: metric.to_owned(),
            message: message.to_owned(),
        };
        let rows: Vec<EpochRow> = self
            .list(Some(device))?
            .into_iter()
            .filter(|r| r.metric == metric)
            .collect();
        let [.., before, newest] = rows.as_slice() else {
            return Err(refused("no epoch to undo (the first epoch stays)"));
        };
        let (mut before, newest) = (before.clone(), newest.clone());
        before.end = newest.end;
        let tx = self.conn.transaction().map_err(|e| EpochError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        let result = (|| {
            tx.execute("DELETE FROM epochs WHERE id = ?1", [newest.id])?;
            tx.execute(
                r#"UPDATE epochs SET "end" = ?2 WHERE id = ?1"#,
                params![before.id, before.end.map(ts)],
            )?;
            tx.commit()
        })();
        result.map_err(|e| self.err(e))?;
        Ok((newest, before))
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn epoch(start: DateTime<Utc>, offset: f64, reason: Reason) -> NewEpoch {
        NewEpoch { start, offset, reason }
    }

    #[test]
    fn epochs_and_last_readings_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 3600, 0).unwrap();
        let metric: MetricName = "energy_delivered_tariff1".into();
        {
            let mut store = EpochStore::open_in(dir.path()).unwrap();
            store
                .start_epoch("p1", &metric, &epoch(t0, 0.0, Reason::First), Some("A"))
                .unwrap();
            let t1 = t0 + Duration::minutes(10);
            store
                .start_epoch("p1", &metric, &epoch(t1, 918.143, Reason::Swap), Some("B"))
                .unwrap();
            let last = Point {
                at: t1 + Duration::seconds(10),
                raw: 3808.351,
                lifetime: 3808.351 + 918.143,
            };
            store
                .save_last("p1", Some("B"), [(&metric, 918.143, Some(last))])
                .unwrap();
        }
        let store = EpochStore::open_in(dir.path()).unwrap();
        let (identity, counters) = store.restore("p1").unwrap();
        assert_eq!(identity.as_deref(), Some("B"));
        assert_eq!(counters.len(), 1, "only the open epoch: {counters:?}");
        assert_eq!(counters[0].1, 918.143);
        assert_eq!(counters[0].2.map(|p| p.raw), Some(3808.351));
        let rows = store.list(None).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].end,
            Some(rows[1].start),
            "the old epoch ends where the new one starts"
        );
        assert_eq!((rows[1].reason.as_str(), rows[1].end), ("swap", None));
        assert!(store.restore("other").unwrap().1.is_empty());
    }

    #[test]
    fn a_user_epoch_is_added_inside_the_history_and_undone() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = EpochStore::open_in(dir.path()).unwrap();
        let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 86_400, 0).unwrap();
        let t2 = t0 + Duration::hours(2);
        store
            .start_epoch("p1", "gas_delivered", &epoch(t0, 0.0, Reason::First), None)
            .unwrap();
        store
            .start_epoch("p1", "gas_delivered", &epoch(t2, 50.0, Reason::Reset), None)
            .unwrap();
        // Between the two: it ends the first and ends where the second starts.
        let added = store.add("p1", "gas_delivered", t0 + Duration::hours(1), 10.0).unwrap();
        assert_eq!(added.end, Some(t2));
        let rows = store.list(Some("p1")).unwrap();
        assert_eq!(
            rows.iter().map(|r| (r.start, r.end)).collect::<Vec<_>>(),
            vec![(t0, Some(added.start)), (added.start, Some(t2)), (t2, None)]
        );
        assert!(
            store.add("p1", "gas_delivered", t2, 1.0).is_err(),
            "two epochs at one instant"
        );
        // Undo removes the newest (the reset); the manual one runs on, open.
        let (removed, runs_on) = store.undo("p1", "gas_delivered").unwrap();
        assert_eq!((removed.start, removed.reason.as_str()), (t2, "reset"));
        assert_eq!((runs_on.offset, runs_on.end), (10.0, None));
        assert_eq!(store.offsets("p1").unwrap(), vec![("gas_delivered".to_owned(), 10.0)]);
        store.undo("p1", "gas_delivered").unwrap();
        assert!(store.undo("p1", "gas_delivered").is_err(), "the first epoch stays");
    }

    #[test]
    fn another_connection_s_commit_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let mut daemon = EpochStore::open_in(dir.path()).unwrap();
        let mut user = EpochStore::open_in(dir.path()).unwrap();
        assert!(!daemon.changed().unwrap());
        user.add("p1", "heat_energy", Utc::now(), 5.0).unwrap();
        assert!(daemon.changed().unwrap());
        assert!(!daemon.changed().unwrap());
    }
}
