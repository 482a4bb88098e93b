//! A device's readings out of the database as CSV or Parquet, row by row (never the
//! whole window in memory): `mesura export` writes them to a file or stdout, `GET
//! /api/export` streams them. Raw rows or the downsampler's 5-minute rows, the time
//! column in UTC or the host's zone, the units in the header (CSV) or in the file's
//! metadata (Parquet, `parquet.rs`).
//!
//! This module holds what both formats share: the spec, the columns and their units,
//! the row cursor over SQLite, and the CSV writer.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Local, SecondsFormat, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};

use super::schema::{aggregate_table, catalogue, quote};

#[cfg(feature = "parquet")]
mod parquet;

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

    /// As the options spell it.
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::FiveMinutes => "5m",
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

    /// As the options spell it.
    pub fn name(self) -> &'static str {
        match self {
            TimeZone::Utc => "utc",
            TimeZone::Local => "local",
        }
    }

    /// RFC 3339, as the CSV's `time` column.
    fn format(self, ts: i64) -> String {
        let Some(at) = DateTime::<Utc>::from_timestamp(ts, 0) else {
            return String::new();
        };
        match self {
            TimeZone::Utc => at.to_rfc3339_opts(SecondsFormat::Secs, true),
            TimeZone::Local => at.with_timezone(&Local).to_rfc3339_opts(SecondsFormat::Secs, false),
        }
    }

    /// Milliseconds since 1970-01-01T00:00:00 of the wall clock in this zone, as
    /// Parquet's `time` column: in UTC the instant itself; in the host's zone the
    /// local wall time (a timestamp not adjusted to UTC), so `ts * 1000` plus the
    /// zone's offset at that instant.
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    fn wall_millis(self, ts: i64) -> i64 {
        let utc = ts.saturating_mul(1000);
        match self {
            TimeZone::Utc => utc,
            TimeZone::Local => DateTime::<Utc>::from_timestamp(ts, 0)
                .map(|at| at.with_timezone(&Local).naive_local().and_utc().timestamp_millis())
                .unwrap_or(utc),
        }
    }
}

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    /// Apache Parquet (cargo feature `parquet`, on by default).
    Parquet,
}

impl Format {
    /// `csv` or `parquet`; `parquet` is an error in a build without the feature.
    pub fn parse(text: &str) -> Result<Format, String> {
        match text {
            "csv" => Ok(Format::Csv),
            "parquet" if cfg!(feature = "parquet") => Ok(Format::Parquet),
            "parquet" => Err(
                "format: `parquet` is not built into this mesura (it was built without the cargo feature `parquet`)"
                    .to_owned(),
            ),
            other => Err(format!("format: `{other}` is neither `csv` nor `parquet`")),
        }
    }

    /// The file name's extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    /// The HTTP `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Parquet => "application/vnd.apache.parquet",
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
    pub format: Format,
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
    #[cfg(feature = "parquet")]
    #[error("writing Parquet: {0}")]
    Parquet(#[from] ::parquet::errors::ParquetError),
    #[error("writing: {0}")]
    Io(#[source] std::io::Error),
}

/// What a column holds, from the raw table's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ColumnType {
    /// `samples` of the 5-minute rows.
    Integer,
    /// Numbers: every metric not declared `TEXT`.
    Real,
    /// Text metrics (a tariff code, a meter's id).
    Text,
}

/// One column of the export after `ts` and `time`.
#[derive(Debug, Clone)]
pub(super) struct Column {
    /// The column in the table, and the name in the export (CSV: before the unit).
    pub name: String,
    /// The metric's unit (`""`: none).
    pub unit: String,
    /// Parquet's column type (CSV writes every cell as text).
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    pub ty: ColumnType,
}

impl Column {
    /// The CSV header: `power_delivered [W]`.
    fn header(&self) -> String {
        if self.unit.is_empty() {
            self.name.clone()
        } else {
            format!("{} [{}]", self.name, self.unit)
        }
    }
}

/// An open export: the connection, the table and its columns.
pub(super) struct Export {
    conn: Connection,
    table: String,
    pub columns: Vec<Column>,
}

impl Export {
    /// Opens the database read-only (Grafana and the writer go on as before) and
    /// finds the columns; an unknown device or metric is an error here, before
    /// anything is written.
    fn open(db: &Path, spec: &ExportSpec) -> Result<Export, ExportError> {
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let (table, columns) = columns(&conn, spec)?;
        Ok(Export { conn, table, columns })
    }

    /// Calls `each` with every row of the window in time order (`ts` first, then
    /// the columns); the number of rows.
    fn rows(
        &self,
        spec: &ExportSpec,
        mut each: impl FnMut(i64, &Row<'_>) -> Result<(), ExportError>,
    ) -> Result<u64, ExportError> {
        let exists: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [&self.table],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(0);
        }
        let select: Vec<String> = self.columns.iter().map(|c| quote(&c.name)).collect();
        let sql = format!(
            "SELECT ts, {} FROM {} WHERE ts >= ?1 AND ts < ?2 ORDER BY ts",
            select.join(", "),
            quote(&self.table)
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let mut result = stmt.query([spec.from, spec.to])?;
        let mut rows = 0u64;
        while let Some(row) = result.next()? {
            each(row.get(0)?, row)?;
            rows += 1;
        }
        Ok(rows)
    }
}

/// The columns of the export, and the table they are in.
fn columns(conn: &Connection, spec: &ExportSpec) -> Result<(String, Vec<Column>), ExportError> {
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
    let text: Vec<String> = conn
        .prepare(&format!("PRAGMA table_info({})", quote(&spec.device)))?
        .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
        .filter_map(|r| match r {
            Ok((name, ty)) if ty.eq_ignore_ascii_case("TEXT") => Some(Ok(name)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    let column = |name: String, metric: &str| Column {
        unit: units
            .iter()
            .find(|(m, _)| m == metric)
            .map(|(_, u)| u.clone())
            .unwrap_or_default(),
        ty: if text.iter().any(|t| t == metric) {
            ColumnType::Text
        } else {
            ColumnType::Real
        },
        name,
    };
    let wanted = aggregates
        .iter()
        .filter(|(m, _)| spec.metrics.is_empty() || spec.metrics.contains(m));
    Ok(match spec.resolution {
        Resolution::Raw => (spec.device.clone(), wanted.map(|(m, _)| column(m.clone(), m)).collect()),
        Resolution::FiveMinutes => {
            let mut cols = vec![Column {
                name: "samples".to_owned(),
                unit: String::new(),
                ty: ColumnType::Integer,
            }];
            for (metric, aggregate) in wanted {
                cols.extend(aggregate.columns(metric).into_iter().map(|c| column(c, metric)));
            }
            (aggregate_table(&spec.device), cols)
        }
    })
}

/// Checks that the device and the metrics exist, without reading a row.
pub fn check(db: &Path, spec: &ExportSpec) -> Result<(), ExportError> {
    Export::open(db, spec).map(|_| ())
}

/// Writes the export in `spec.format` to `out`; the number of rows written.
pub fn write(db: &Path, spec: &ExportSpec, out: impl Write + Send) -> Result<u64, ExportError> {
    let export = Export::open(db, spec)?;
    match spec.format {
        Format::Csv => write_csv(&export, spec, out),
        #[cfg(feature = "parquet")]
        Format::Parquet => parquet::write_parquet(&export, spec, out),
        #[cfg(not(feature = "parquet"))]
        Format::Parquet => Err(ExportError::Io(std::io::Error::other(
            "this mesura was built without the cargo feature `parquet`",
        ))),
    }
}

/// The export as CSV: `ts`, `time` (RFC 3339), then a column per metric with its
/// unit in the header; a missing value is an empty cell.
fn write_csv(export: &Export, spec: &ExportSpec, out: impl Write) -> Result<u64, ExportError> {
    let mut csv = csv::Writer::from_writer(out);
    let mut header = vec!["ts".to_owned(), "time".to_owned()];
    header.extend(export.columns.iter().map(Column::header));
    csv.write_record(&header)?;
    let mut record: Vec<String> = Vec::with_capacity(export.columns.len() + 2);
    let rows = export.rows(spec, |ts, row| {
        record.clear();
        record.push(ts.to_string());
        record.push(spec.time.format(ts));
        for i in 0..export.columns.len() {
            record.push(match row.get_ref(i + 1)? {
                ValueRef::Real(f) => f.to_string(),
                ValueRef::Integer(n) => n.to_string(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                ValueRef::Null | ValueRef::Blob(_) => String::new(),
            });
        }
        csv.write_record(&record)?;
        Ok(())
    })?;
    csv.flush().map_err(ExportError::Io)?;
    Ok(rows)
}

#[cfg(test)]
mod tests;
