//! CSV: one file per device per day (`<dir>/<device>/<YYYY-MM-DD>.csv`, the UTC
//! date), a header row, RFC 3339 UTC timestamps, one column per metric.
//!
//! When a metric appears mid-day the day's file is rewritten with the wider header
//! (earlier rows get empty cells), through a temporary file and a rename, so the
//! file is never left half-written. That happens once per new metric, not per row.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::{blocking, Backend, BackendError, BackendType, BatchPolicy};
use crate::reading::Reading;

/// `backends.csv`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// Directory of the CSV files; relative to `data_dir`.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    /// How often rows are written out.
    #[serde(default = "default_flush_interval", with = "crate::config::duration")]
    pub flush_interval: Duration,
    /// Polls queued for this backend before new ones are dropped (and counted).
    #[serde(default = "super::sqlite::default_queue_capacity")]
    pub queue_capacity: usize,
}

pub fn default_dir() -> PathBuf {
    PathBuf::from("csv")
}
pub fn default_flush_interval() -> Duration {
    Duration::from_secs(5)
}

impl Default for CsvConfig {
    fn default() -> Self {
        CsvConfig {
            dir: default_dir(),
            flush_interval: default_flush_interval(),
            queue_capacity: super::sqlite::default_queue_capacity(),
        }
    }
}

#[derive(Debug)]
pub struct CsvBackend {
    files: Arc<Mutex<CsvFiles>>,
    policy: BatchPolicy,
}

#[async_trait]
impl BackendType for CsvConfig {
    async fn open(&self, data_dir: &Path) -> Result<Box<dyn Backend>, BackendError> {
        Ok(Box::new(CsvBackend::open(self, data_dir).await?))
    }
}

impl CsvBackend {
    pub async fn open(config: &CsvConfig, data_dir: &Path) -> Result<Self, BackendError> {
        let dir = data_dir.join(&config.dir);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        Ok(CsvBackend {
            files: Arc::new(Mutex::new(CsvFiles {
                dir,
                open: HashMap::new(),
            })),
            policy: BatchPolicy {
                flush_interval: config.flush_interval,
                batch_size: 5000,
                queue_capacity: config.queue_capacity,
            },
        })
    }
}

#[async_trait]
impl Backend for CsvBackend {
    fn name(&self) -> &'static str {
        "csv"
    }

    fn policy(&self) -> BatchPolicy {
        self.policy
    }

    async fn write(&mut self, batch: &[Reading]) -> Result<(), BackendError> {
        let batch = batch.to_vec();
        blocking(&self.files, move |files| files.write(&batch)).await
    }

    async fn flush(&mut self) -> Result<(), BackendError> {
        blocking(&self.files, |files| files.sync()).await
    }
}

fn io_error(path: &Path, e: std::io::Error) -> BackendError {
    BackendError::transient(format!("csv: {}: {e}", path.display())).caused_by(e)
}

/// A device's open day file. Rows are encoded into `pending` during a batch and
/// written in one call at its end; between batches `pending` holds no memory, so
/// 50 devices do not keep 50 write buffers (8 KiB each with a `BufWriter`) for the
/// seconds between flushes (docs/benchmarks.md, memory).
#[derive(Debug)]
struct DayFile {
    date: NaiveDate,
    path: PathBuf,
    columns: Vec<String>,
    file: File,
    pending: Vec<u8>,
}

impl DayFile {
    /// Writes the rows encoded so far and gives their buffer back to the allocator.
    fn write_pending(&mut self) -> Result<(), BackendError> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        self.file.write_all(&pending).map_err(|e| io_error(&self.path, e))
    }
}

#[derive(Debug)]
struct CsvFiles {
    dir: PathBuf,
    open: HashMap<String, DayFile>,
}

impl CsvFiles {
    fn write(&mut self, batch: &[Reading]) -> Result<(), BackendError> {
        // Rows: one per (device, timestamp), in arrival order.
        let mut rows: Vec<(&str, DateTime<Utc>, Vec<&Reading>)> = Vec::new();
        for r in batch {
            match rows.last_mut() {
                Some((d, t, rs)) if *d == &*r.device && *t == r.timestamp => rs.push(r),
                _ => rows.push((&r.device, r.timestamp, vec![r])),
            }
        }
        // Each touched file's length before this batch: a batch that fails half-way
        // (a full disk) is cut back to it, so the retry does not write its first
        // rows twice.
        let mut touched: Vec<(String, PathBuf, Option<u64>)> = Vec::new();
        let result = rows.iter().try_for_each(|(device, ts, readings)| {
            let file = self.day_file(device, ts.date_naive(), readings)?;
            if !touched.iter().any(|(d, _, _)| d == device) {
                let length = file.file.metadata().ok().map(|m| m.len());
                touched.push(((*device).to_owned(), file.path.clone(), length));
            }
            let mut cells = vec![String::new(); file.columns.len()];
            cells[0] = ts.to_rfc3339_opts(SecondsFormat::Millis, true);
            for r in readings {
                if let Some(i) = file.columns.iter().position(|c| c == &*r.metric) {
                    cells[i] = r.value.to_string();
                }
            }
            write_record(&mut file.pending, &cells).map_err(|e| io_error(&file.path, e))?;
            Ok(())
        });
        let result = result.and_then(|()| {
            touched
                .iter()
                .try_for_each(|(device, _, _)| match self.open.get_mut(device) {
                    Some(file) => file.write_pending(),
                    None => Ok(()),
                })
        });
        if result.is_err() {
            for (device, path, length) in &touched {
                self.undo(device, path, *length);
            }
        }
        result
    }

    /// Forgets what a failed batch left of `device`'s file: the rows not yet
    /// written are dropped and the file is cut back to `length`, its size before the
    /// batch (a row half-written to a full disk included). The file is opened anew
    /// by the retry.
    fn undo(&mut self, device: &str, path: &Path, length: Option<u64>) {
        // Dropping the day file drops its pending rows unwritten.
        self.open.remove(device);
        if let Some(length) = length {
            let cut = OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| f.set_len(length));
            if let Err(e) = cut {
                tracing::warn!(file = %path.display(), error = %e, "csv: cannot cut back a half-written batch; its first rows may appear twice");
            }
        }
    }

    /// The open file for this device and day, with every metric of `readings` in its header.
    fn day_file(&mut self, device: &str, date: NaiveDate, readings: &[&Reading]) -> Result<&mut DayFile, BackendError> {
        let stale = self.open.get(device).is_some_and(|f| f.date != date);
        if stale {
            if let Some(mut old) = self.open.remove(device) {
                old.write_pending()?;
            }
        }
        if !self.open.contains_key(device) {
            let file = open_day_file(&self.dir, device, date)?;
            self.open.insert(device.to_owned(), file);
        }
        let Some(file) = self.open.get_mut(device) else {
            return Err(BackendError::transient("csv: file vanished"));
        };
        let new: Vec<String> = readings
            .iter()
            .map(|r| r.metric.to_string())
            .filter(|m| !file.columns.contains(m))
            .fold(Vec::new(), |mut acc, m| {
                if !acc.contains(&m) {
                    acc.push(m);
                }
                acc
            });
        if !new.is_empty() {
            file.write_pending()?;
            let mut columns = file.columns.clone();
            columns.extend(new);
            rewrite_with_header(&file.path, &columns)?;
            file.file = OpenOptions::new()
                .append(true)
                .open(&file.path)
                .map_err(|e| io_error(&file.path, e))?;
            file.columns = columns;
        }
        Ok(file)
    }

    fn sync(&mut self) -> Result<(), BackendError> {
        for file in self.open.values_mut() {
            file.write_pending()?;
            file.file.sync_data().map_err(|e| io_error(&file.path, e))?;
        }
        Ok(())
    }
}

/// Encodes one row (quoting as CSV needs) and appends it to `w`.
fn write_record(w: &mut impl Write, cells: &[String]) -> std::io::Result<()> {
    // A row is short: a small encoder buffer, not csv's default 8 KiB a row.
    let mut out = csv::WriterBuilder::new().buffer_capacity(256).from_writer(w);
    out.write_record(cells).map_err(std::io::Error::other)?;
    out.flush()
}

fn open_day_file(dir: &Path, device: &str, date: NaiveDate) -> Result<DayFile, BackendError> {
    let device_dir = dir.join(device);
    std::fs::create_dir_all(&device_dir).map_err(|e| io_error(&device_dir, e))?;
    let path = device_dir.join(format!("{date}.csv"));
    let columns = match File::open(&path) {
        Ok(f) => {
            let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(f);
            let header = reader
                .headers()
                .map_err(|e| BackendError::transient(format!("csv: {}: {e}", path.display())).caused_by(e))?;
            header.iter().map(str::to_owned).collect()
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error(&path, e)),
    };
    let columns = if columns.is_empty() {
        let columns = vec!["timestamp".to_owned()];
        let mut f = File::create(&path).map_err(|e| io_error(&path, e))?;
        write_record(&mut f, &columns).map_err(|e| io_error(&path, e))?;
        columns
    } else {
        columns
    };
    let file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    Ok(DayFile {
        date,
        path,
        columns,
        file,
        pending: Vec::new(),
    })
}

/// Rewrites a day file under a wider header; old rows keep their values in their
/// columns and get empty cells in the new ones.
fn rewrite_with_header(path: &Path, columns: &[String]) -> Result<(), BackendError> {
    let tmp = path.with_extension("csv.tmp");
    {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_path(path)
            .map_err(|e| BackendError::transient(format!("csv: {}: {e}", path.display())).caused_by(e))?;
        let mut out = BufWriter::new(File::create(&tmp).map_err(|e| io_error(&tmp, e))?);
        write_record(&mut out, columns).map_err(|e| io_error(&tmp, e))?;
        for record in reader.records() {
            let record =
                record.map_err(|e| BackendError::transient(format!("csv: {}: {e}", path.display())).caused_by(e))?;
            let mut cells: Vec<String> = record.iter().map(str::to_owned).collect();
            cells.resize(columns.len(), String::new());
            write_record(&mut out, &cells).map_err(|e| io_error(&tmp, e))?;
        }
        out.flush().map_err(|e| io_error(&tmp, e))?;
        out.get_ref().sync_data().map_err(|e| io_error(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Kind, Unit, Value};

    fn reading(metric: &str, value: f64, ts: &str) -> Reading {
        Reading {
            device: Arc::from("p1"),
            device_type: "test",
            metric: Arc::from(metric),
            value: Value::Number(value),
            unit: Unit::Watt,
            kind: Kind::Gauge,
            timestamp: DateTime::parse_from_rfc3339(ts).unwrap().to_utc(),
        }
    }

    #[test]
    fn new_metric_mid_day_rewrites_header_and_keeps_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = CsvFiles {
            dir: dir.path().to_path_buf(),
            open: HashMap::new(),
        };
        files.write(&[reading("power", 100.0, "2026-11-24T10:00:00Z")]).unwrap();
        files
            .write(&[
                reading("power", 110.0, "2026-11-24T10:00:10Z"),
                reading("voltage", 231.5, "2026-11-24T10:00:10Z"),
            ])
            .unwrap();
        files.write(&[reading("power", 120.0, "2026-11-25T00:00:01Z")]).unwrap();
        let day1 = std::fs::read_to_string(dir.path().join("p1/2026-11-24.csv")).unwrap();
        assert_eq!(
            day1,
            "timestamp,power,voltage\n2026-11-24T10:00:00.000Z,100,\n2026-11-24T10:00:10.000Z,110,231.5\n"
        );
        let day2 = std::fs::read_to_string(dir.path().join("p1/2026-11-25.csv")).unwrap();
        assert_eq!(day2, "timestamp,power\n2026-11-25T00:00:01.000Z,120\n");

        // A restart appends under the existing header.
        let mut files = CsvFiles {
            dir: dir.path().to_path_buf(),
            open: HashMap::new(),
        };
        files
            .write(&[reading("voltage", 229.0, "2026-11-24T11:00:00Z")])
            .unwrap();
        let day1 = std::fs::read_to_string(dir.path().join("p1/2026-11-24.csv")).unwrap();
        assert!(day1.ends_with("2026-11-24T11:00:00.000Z,,229\n"), "{day1}");
    }
}
