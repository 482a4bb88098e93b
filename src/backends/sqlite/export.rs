//! A device's readings out of the database as CSV, row by row (never the whole
//! window in memory): `mesura export` writes them to a file or stdout, `GET
//! /api/export` streams them. Raw rows or the downsampler's 5-minute rows, the time
//! column in UTC or the host's zone, the units in the header.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Local, SecondsFormat, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::schema::{aggregate_table, catalogue, quote};

/// Which rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Every stored reading (`<device>`).
    Raw,
    /// The 5-minute aggregates (`<device>_5m`: mean/min/max of gauges, last of counters).
    FiveMinutes,
}

impl Resolution {
    pub fn parse(text: &str) -> Result<Resolution, String> {
        match text {
            "raw" => Ok(Resolution::Raw),
            "5m" => Ok(Resolution::FiveMinutes),
            other => Err(format!("resolution: `{other}` is neither `raw` nor `5m`")),
        }
    }
}

/// The zone of the `time` column (`ts` is always unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeZone {
    Utc,
    /// The host's zone, with its offset (`2026-07-01T14:00:00+02:00`).
    Local,
}

impl TimeZone {
    pub fn parse(text: &str) -> Result<TimeZone, String> {
        match text {
            "utc" => Ok(TimeZone::Utc),
            "local" => Ok(TimeZone::Local),
            other => Err(format!("time: `{other}` is neither `utc` nor `local`")),
        }
    }

    fn format(self, ts: i64) -> String {
        let Some(at) = DateTime::<Utc>::from_timestamp(ts, 0) else {
            return String::new();
        };
        match self {
            TimeZone::Utc => at.to_rfc3339_opts(SecondsFormat::Secs, true),
            TimeZone::Local => at.with_timezone(&Local).to_rfc3339_opts(SecondsFormat::Secs, false),
        }
    }
}

/// An instant as a user writes it: unix seconds, RFC 3339
/// (`2026-11-24T12:00:00Z`), or a date (`2026-11-24`: midnight in the host's zone).
pub fn parse_instant(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|t| chrono::TimeZone::from_local_datetime(&Local, &t).earliest())
        .map(|t| t.timestamp())
        .ok_or_else(|| {
            format!("`{text}` is neither a date (2026-11-24), RFC 3339 (2026-11-24T12:00:00Z) nor unix seconds")
        })
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub device: String,
    /// The metrics (raw column names); empty: all of them.
    pub metrics: Vec<String>,
    /// Unix seconds, `from` included, `to` excluded.
    pub from: i64,
    pub to: i64,
    pub resolution: Resolution,
    pub time: TimeZone,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no readings of device `{0}`")]
    NoDevice(String),
    #[error("device `{device}` has no metric `{metric}`")]
    NoMetric { device: String, metric: String },
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("writing: {0}")]
    Write(#[from] csv::Error),
}

/// The columns of the export: `(column in the table, header)`.
fn columns(conn: &Connection, spec: &ExportSpec) -> Result<(String, Vec<(String, String)>), ExportError> {
    let units: Vec<(String, String)> = conn
        .prepare("SELECT metric, unit FROM metrics WHERE device = ?1 ORDER BY metric")?
        .query_map([&spec.device], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let aggregates = catalogue(conn)?.remove(&spec.device).unwrap_or_default();
    if aggregates.is_empty() {
        return Err(ExportError::NoDevice(spec.device.clone()));
    }
    for metric in &spec.metrics {
        if !aggregates.iter().any(|(m, _)| m == metric) {
            return Err(ExportError::NoMetric {
                device: spec.device.clone(),
                metric: metric.clone(),
            });
        }
    }
    let header = |column: &str, metric: &str| match units.iter().find(|(m, _)| m == metric).map(|(_, u)| u.as_str()) {
        Some(unit) if !unit.is_empty() => format!("{column} [{unit}]"),
        _ => column.to_owned(),
    };
    let wanted = aggregates
        .iter()
        .filter(|(m, _)| spec.metrics.is_empty() || spec.metrics.contains(m));
    Ok(match spec.resolution {
        Resolution::Raw => (
            spec.device.clone(),
            wanted.map(|(m, _)| (m.clone(), header(m, m))).collect(),
        ),
        Resolution::FiveMinutes => {
            let mut cols = vec![("samples".to_owned(), "samples".to_owned())];
            for (metric, aggregate) in wanted {
                cols.extend(aggregate.columns(metric).into_iter().map(|c| {
                    let h = header(&c, metric);
                    (c, h)
                }));
            }
            (aggregate_table(&spec.device), cols)
        }
    })
}

/// Writes the export as CSV to `out`; the number of rows written. Opens the
/// database read-only: Grafana and the writer go on as before.
pub fn write_csv(db: &Path, spec: &ExportSpec, out: impl Write) -> Result<u64, ExportError> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let (table, cols) = columns(&conn, spec)?;
    let mut csv = csv::Writer::from_writer(out);
    let mut header = vec!["ts".to_owned(), "time".to_owned()];
    header.extend(cols.iter().map(|(_, h)| h.clone()));
    csv.write_record(&header)?;
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [&table],
        |r| r.get(0),
    )?;
    let mut rows = 0u64;
    if exists {
        let select: Vec<String> = cols.iter().map(|(c, _)| quote(c)).collect();
        let sql = format!(
            "SELECT ts, {} FROM {} WHERE ts >= ?1 AND ts < ?2 ORDER BY ts",
            select.join(", "),
            quote(&table)
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut result = stmt.query([spec.from, spec.to])?;
        let mut record: Vec<String> = Vec::with_capacity(cols.len() + 2);
        while let Some(row) = result.next()? {
            record.clear();
            let ts: i64 = row.get(0)?;
            record.push(ts.to_string());
            record.push(spec.time.format(ts));
            for i in 0..cols.len() {
                record.push(match row.get_ref(i + 1)? {
                    ValueRef::Real(f) => f.to_string(),
                    ValueRef::Integer(n) => n.to_string(),
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    ValueRef::Null | ValueRef::Blob(_) => String::new(),
                });
            }
            csv.write_record(&record)?;
            rows += 1;
        }
    }
    csv.flush().map_err(csv::Error::from)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("mesura.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE metrics (device TEXT, metric TEXT, unit TEXT, kind TEXT, PRIMARY KEY (device, metric));
             INSERT INTO metrics VALUES ('p1', 'power', 'W', 'gauge'), ('p1', 'energy', 'kWh', 'counter'), ('p1', 'tariff', '', 'gauge');
             CREATE TABLE p1 (ts INTEGER PRIMARY KEY, power REAL, energy REAL, tariff TEXT);
             INSERT INTO p1 VALUES (1000, 230.5, 12.25, '1'), (1001, NULL, 12.26, NULL), (2000, 1.0, 13.0, '2');
             CREATE TABLE p1_5m (ts INTEGER PRIMARY KEY, samples INTEGER, power_mean REAL, power_min REAL, power_max REAL, energy REAL);
             INSERT INTO p1_5m VALUES (900, 2, 230.5, 230.5, 230.5, 12.26);",
        )
        .unwrap();
        path
    }

    fn spec(metrics: &[&str], resolution: Resolution) -> ExportSpec {
        ExportSpec {
            device: "p1".into(),
            metrics: metrics.iter().map(|m| m.to_string()).collect(),
            from: 0,
            to: 2000,
            resolution,
            time: TimeZone::Utc,
        }
    }

    #[test]
    fn raw_rows_with_units_in_the_header_and_empty_cells_for_missing_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let n = write_csv(&db(dir.path()), &spec(&[], Resolution::Raw), &mut out).unwrap();
        assert_eq!(n, 2, "`to` is excluded");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ts,time,energy [kWh],power [W],tariff\n\
             1000,1970-01-01T00:16:40Z,12.25,230.5,1\n\
             1001,1970-01-01T00:16:41Z,12.26,,\n"
        );
    }

    #[test]
    fn five_minute_rows_and_one_metric() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        write_csv(&db(dir.path()), &spec(&["power"], Resolution::FiveMinutes), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ts,time,samples,power_mean [W],power_min [W],power_max [W]\n900,1970-01-01T00:15:00Z,2,230.5,230.5,230.5\n"
        );
    }

    #[test]
    fn instants_as_users_write_them() {
        assert_eq!(parse_instant("1764547200"), Ok(1_764_547_200));
        assert_eq!(parse_instant("2025-12-01T00:00:00Z"), Ok(1_764_547_200));
        let local = chrono::TimeZone::with_ymd_and_hms(&Local, 2025, 12, 1, 0, 0, 0)
            .earliest()
            .unwrap();
        assert_eq!(parse_instant("2025-12-01"), Ok(local.timestamp()));
        assert!(parse_instant("yesterday").is_err());
    }

    #[test]
    fn unknown_devices_and_metrics_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = db(dir.path());
        let mut s = spec(&["nope"], Resolution::Raw);
        let e = write_csv(&path, &s, Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "device `p1` has no metric `nope`");
        s.device = "gas".into();
        s.metrics.clear();
        assert_eq!(
            write_csv(&path, &s, Vec::new()).unwrap_err().to_string(),
            "no readings of device `gas`"
        );
    }
}
