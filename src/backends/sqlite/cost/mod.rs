//! Costs: what a meter's energy cost, per price slot, in `<device>_cost`
//! (docs/costs.md). A periodic job over the stored rows, like the downsampler: it
//! reads the meter's counters (`<metric>_lifetime` where the column exists, else
//! the raw counter) and the day-ahead prices a `prices` device stored, and writes
//! one row per closed slot. It recomputes the last `LOOKBACK` each run (a price
//! that arrived late, a corrected counter), so the table survives restarts and a
//! deleted row comes back.
//!
//! Layout of `<device>_cost`: primary key (`ts` slot start in unix seconds UTC,
//! `carrier` `electricity` | `gas` | `fixed`); `duration` s; `day` the local date
//! (`YYYY-MM-DD`, for `group=day|month`); `kwh` drawn (gas: m³ × calorific value);
//! `m3` (gas); `price` all-in EUR per kWh (gas: per m³); `cost` EUR; `returned_kwh`,
//! `return_price`, `credit` EUR for returned energy; `fallback` 1 when `fixed_price`
//! stood in for a missing day-ahead price; `estimated` 1 when part of the use was
//! spread across a gap. A `fixed` row per local day holds the daily fixed costs.
//! The net cost of anything is `sum(cost) - sum(credit)`.

mod rows;
pub(crate) mod slots;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backends::sqlite::schema::{open_existing, quote};
use crate::config::tariff::{default_counters, TariffConfig};
use crate::config::DeviceConfig;
use crate::host::clock::SharedClock;
use rows::{column_for, columns, first_ts, prices, samples, table_exists};
use slots::{daily_fixed, gas_price, grid, slot_price, spread, LocalTime, Slot};

/// The suffix of cost tables (device ids ending in it are reserved).
pub const SUFFIX: &str = super::schema::COST_SUFFIX;
/// Each run recomputes the slots of this much time before the last written one.
const LOOKBACK: i64 = 6 * 3600;
/// One transaction covers at most this much time (a first run over months of rows).
const CHUNK: i64 = 7 * 86_400;
/// Gas meters send their counter hourly (DSMR 4) or every 5 minutes (DSMR 5), so
/// a gas gap is only one longer than this.
const GAS_MAX_GAP: i64 = 2 * 3600;
/// Gas is costed per hour: its price has no day-ahead slots.
const GAS_SLOT: i64 = 3600;
/// How often the job runs.
const INTERVAL: Duration = Duration::from_secs(60);

/// The cost table of a device.
pub fn cost_table(device: &str) -> String {
    format!("{device}{SUFFIX}")
}

/// One costed meter: its id, its type (for the default counters) and its tariff.
#[derive(Debug, Clone, PartialEq)]
pub struct CostJob {
    pub device: String,
    pub device_type: String,
    pub tariff: TariffConfig,
}

impl CostJob {
    /// The jobs of the enabled devices with a `tariff:`.
    pub fn of<'a>(devices: impl Iterator<Item = &'a DeviceConfig>) -> Vec<CostJob> {
        devices
            .filter(|d| d.common.enabled)
            .filter_map(|d| {
                Some(CostJob {
                    device: d.id.to_string(),
                    device_type: d.kind.type_name().to_owned(),
                    tariff: d.common.tariff.clone()?,
                })
            })
            .collect()
    }
}

/// The running cost job, if any: the database and jobs it runs on, its stop switch.
#[derive(Debug, Default)]
pub struct CostTask {
    running: Option<(PathBuf, Vec<CostJob>, CancellationToken, JoinHandle<()>)>,
}

impl CostTask {
    /// Runs `jobs` on `db`: keeps the running task when both are the same, else
    /// restarts it; stops it when there is no database or no job.
    pub async fn refresh(&mut self, db: Option<PathBuf>, jobs: Vec<CostJob>, clock: &SharedClock) {
        let wanted = db.filter(|_| !jobs.is_empty());
        if let (Some((path, running, ..)), Some(db)) = (&self.running, &wanted) {
            if path == db && *running == jobs {
                return;
            }
        }
        self.stop().await;
        if let Some(db) = wanted {
            let token = CancellationToken::new();
            let task = tokio::spawn(run(db.clone(), jobs.clone(), clock.clone(), token.clone()));
            self.running = Some((db, jobs, token, task));
        }
    }

    /// Stops the task between two transactions.
    pub async fn stop(&mut self) {
        if let Some((_, _, token, task)) = self.running.take() {
            token.cancel();
            let _ = task.await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("costs of {device} in {path}: {source}")]
pub struct CostError {
    path: PathBuf,
    device: String,
    source: rusqlite::Error,
}

/// Slot rows written or changed per device by one run.
pub type Report = BTreeMap<String, u64>;

/// One run over every job. `Ok(None)` when there is no database yet.
pub fn run_once(
    db: &Path,
    jobs: &[CostJob],
    now: DateTime<Utc>,
    cancel: &CancellationToken,
) -> Result<Option<Report>, CostError> {
    if !db.exists() {
        return Ok(None);
    }
    let mut report = Report::new();
    let conn = open_existing(db).map_err(|source| CostError {
        path: db.to_path_buf(),
        device: String::new(),
        source,
    })?;
    for job in jobs {
        if cancel.is_cancelled() {
            break;
        }
        let n = run_job(&conn, job, now.timestamp(), cancel).map_err(|source| CostError {
            path: db.to_path_buf(),
            device: job.device.clone(),
            source,
        })?;
        if n > 0 {
            report.insert(job.device.clone(), n);
        }
    }
    Ok(Some(report))
}

/// Drops the cost rows of `device` from slot start `from` on, so the next run
/// computes them again from the stored rows: for a correction of the counters
/// before the look-back (an epoch added or undone). Returns the rows dropped.
pub fn forget_from(db: &Path, device: &str, from: i64) -> Result<u64, CostError> {
    let sql = |source| CostError {
        path: db.to_path_buf(),
        device: device.to_owned(),
        source,
    };
    let conn = open_existing(db).map_err(sql)?;
    if !table_exists(&conn, &cost_table(device)).map_err(sql)? {
        return Ok(0);
    }
    // A day's fixed row starts at local midnight, before `from`: it is rewritten by
    // the next run anyway.
    conn.execute(
        &format!("DELETE FROM {} WHERE ts >= ?1", quote(&cost_table(device))),
        [from],
    )
    .map(|n| n as u64)
    .map_err(sql)
}

/// Creates `<device>_cost` if it is not there.
pub fn prepare_cost_table(conn: &Connection, device: &str) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {} (
            ts INTEGER NOT NULL,
            carrier TEXT NOT NULL,
            duration INTEGER NOT NULL,
            day TEXT NOT NULL,
            kwh REAL NOT NULL DEFAULT 0,
            m3 REAL,
            price REAL,
            cost REAL NOT NULL DEFAULT 0,
            returned_kwh REAL NOT NULL DEFAULT 0,
            return_price REAL,
            credit REAL NOT NULL DEFAULT 0,
            fallback INTEGER NOT NULL DEFAULT 0,
            estimated INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (ts, carrier)
        ) WITHOUT ROWID;",
        quote(&cost_table(device))
    ))
}

/// Where the next run starts for `carrier`: `LOOKBACK` before the end of the last
/// written slot; `None` when none is written yet.
fn resume(conn: &Connection, table: &str, carrier: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        &format!("SELECT max(ts + duration) FROM {} WHERE carrier = ?1", quote(table)),
        [carrier],
        |r| r.get::<_, Option<i64>>(0),
    )
    .map(|end| end.map(|e| e - LOOKBACK))
}

/// Costs one device up to `now`; returns the slot rows written.
fn run_job(conn: &Connection, job: &CostJob, now: i64, cancel: &CancellationToken) -> rusqlite::Result<u64> {
    if !table_exists(conn, &job.device)? {
        return Ok(0);
    }
    let table = cost_table(&job.device);
    prepare_cost_table(conn, &job.device)?;
    let existing = columns(conn, &job.device)?;
    let (def_delivered, def_returned, def_gas) = default_counters(&job.device_type);
    let counters = &job.tariff.counters;
    let pick = |names: &[String]| -> Vec<String> { names.iter().filter_map(|n| column_for(&existing, n)).collect() };
    let delivered = pick(counters.delivered.as_deref().unwrap_or(&def_delivered));
    let returned = pick(counters.returned.as_deref().unwrap_or(&def_returned));
    let gas = counters
        .gas
        .clone()
        .or(def_gas)
        .filter(|_| job.tariff.gas.is_some())
        .and_then(|g| column_for(&existing, &g));
    let Some(first) = first_ts(conn, &job.device)? else {
        return Ok(0);
    };
    let mut written = 0;
    for (carrier, cols) in [("electricity", delivered.clone()), ("gas", gas.into_iter().collect())] {
        if cols.is_empty() {
            continue;
        }
        let mut from = resume(conn, &table, carrier)?.unwrap_or(first).max(first);
        while from < now && !cancel.is_cancelled() {
            let to = (from + CHUNK).min(now);
            written += if carrier == "gas" {
                gas_chunk(conn, job, &table, &cols, from, to)?
            } else {
                electricity_chunk(conn, job, &table, &cols, &returned, from, to)?
            };
            from = to;
        }
    }
    write_fixed(conn, job, &table)?;
    Ok(written)
}

/// One row to upsert.
struct Row {
    slot: Slot,
    carrier: &'static str,
    kwh: f64,
    m3: Option<f64>,
    price: f64,
    cost: f64,
    returned_kwh: f64,
    return_price: Option<f64>,
    credit: f64,
    fallback: bool,
    estimated: bool,
}

fn electricity_chunk(
    conn: &Connection,
    job: &CostJob,
    table: &str,
    delivered: &[String],
    returned: &[String],
    from: i64,
    to: i64,
) -> rusqlite::Result<u64> {
    let tariff = &job.tariff;
    let local = LocalTime::of(tariff);
    let price_rows = match &tariff.prices {
        Some(p) if table_exists(conn, p)? => prices(conn, p, from, to)?,
        _ => BTreeMap::new(),
    };
    let fallback = i64::try_from(tariff.slot.as_secs()).unwrap_or(3600);
    let slots = grid(from, to, &price_rows, fallback);
    let max_gap = i64::try_from(tariff.max_gap.as_secs()).unwrap_or(i64::MAX);
    let drawn = spread(&samples(conn, &job.device, delivered, from, to)?, &slots, max_gap);
    let back = if returned.is_empty() {
        vec![None; slots.len()]
    } else {
        spread(&samples(conn, &job.device, returned, from, to)?, &slots, max_gap)
    };
    let mut rows = Vec::new();
    let mut unpriced = 0;
    for ((slot, used), back) in slots.iter().zip(drawn).zip(back) {
        let Some(used) = used else { continue };
        let Some(price) = slot_price(tariff, local, slot) else {
            unpriced += 1;
            continue;
        };
        let back = back.unwrap_or_default();
        rows.push(Row {
            slot: *slot,
            carrier: "electricity",
            kwh: used.amount,
            m3: None,
            price: price.delivered,
            cost: used.amount * price.delivered,
            returned_kwh: back.amount,
            return_price: Some(price.returned),
            credit: back.amount * price.returned,
            fallback: price.fallback,
            estimated: used.estimated || back.estimated,
        });
    }
    if unpriced > 0 {
        tracing::debug!(
            device = job.device,
            slots = unpriced,
            "costs: slots with no day-ahead price and no `fixed_price` wait for their price"
        );
    }
    upsert(conn, table, local, &rows)
}

fn gas_chunk(
    conn: &Connection,
    job: &CostJob,
    table: &str,
    cols: &[String],
    from: i64,
    to: i64,
) -> rusqlite::Result<u64> {
    let (Some(price), Some(gas)) = (gas_price(&job.tariff), job.tariff.gas.as_ref()) else {
        return Ok(0);
    };
    let local = LocalTime::of(&job.tariff);
    let slots = grid(from, to, &BTreeMap::new(), GAS_SLOT);
    let used = spread(&samples(conn, &job.device, cols, from, to)?, &slots, GAS_MAX_GAP);
    let rows: Vec<Row> = slots
        .iter()
        .zip(used)
        .filter_map(|(slot, used)| {
            let used = used?;
            Some(Row {
                slot: *slot,
                carrier: "gas",
                kwh: used.amount * gas.calorific_value_on(local.local(slot.start).date()),
                m3: Some(used.amount),
                price,
                cost: used.amount * price,
                returned_kwh: 0.0,
                return_price: None,
                credit: 0.0,
                fallback: false,
                estimated: used.estimated,
            })
        })
        .collect();
    upsert(conn, table, local, &rows)
}

/// The columns a recomputation may change. Unchanged rows are not rewritten: each
/// run recomputes `LOOKBACK`, and an SD card should not see those rows every minute.
const COLUMNS: [&str; 11] = [
    "duration",
    "day",
    "kwh",
    "m3",
    "price",
    "cost",
    "returned_kwh",
    "return_price",
    "credit",
    "fallback",
    "estimated",
];

fn upsert(conn: &Connection, table: &str, local: LocalTime, rows: &[Row]) -> rusqlite::Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "INSERT INTO {} (ts, carrier, duration, day, kwh, m3, price, cost, returned_kwh, return_price, credit, fallback, estimated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (ts, carrier) DO UPDATE SET {} WHERE {}",
        quote(table),
        COLUMNS.iter().map(|c| format!("{c} = excluded.{c}")).collect::<Vec<_>>().join(", "),
        COLUMNS.iter().map(|c| format!("{c} IS NOT excluded.{c}")).collect::<Vec<_>>().join(" OR "),
    );
    immediate(conn, || {
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut changed = 0;
        for r in rows {
            let day = local.day(r.slot.start).0.to_string();
            changed += stmt.execute(params![
                r.slot.start,
                r.carrier,
                r.slot.len,
                day,
                r.kwh,
                r.m3,
                r.price,
                r.cost,
                r.returned_kwh,
                r.return_price,
                r.credit,
                r.fallback,
                r.estimated
            ])? as u64;
        }
        Ok(changed)
    })
}

/// A `fixed` row for every local day from the first costed slot to the last.
fn write_fixed(conn: &Connection, job: &CostJob, table: &str) -> rusqlite::Result<()> {
    let amount = daily_fixed(&job.tariff);
    let local = LocalTime::of(&job.tariff);
    let t = quote(table);
    let since: i64 = conn.query_row(
        &format!("SELECT coalesce(max(ts), 0) FROM {t} WHERE carrier = 'fixed'"),
        [],
        |r| r.get(0),
    )?;
    // From the last fixed day (or the first slot) to the last slot's day: a day
    // with the meter down all along still has its standing charge.
    let (first, last): (Option<i64>, Option<i64>) = conn.query_row(
        &format!("SELECT min(ts), max(ts) FROM {t} WHERE carrier != 'fixed' AND ts >= ?1"),
        [since],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok(());
    };
    let mut starts = BTreeSet::new();
    let mut day = local.day(first);
    while day.1 <= last {
        starts.insert(day.1);
        day = local.day(day.2);
    }
    immediate(conn, || {
        for start in &starts {
            let (date, start, end) = local.day(*start);
            conn.execute(
                &format!(
                    "INSERT INTO {t} (ts, carrier, duration, day, cost) VALUES (?1, 'fixed', ?2, ?3, ?4) \
                     ON CONFLICT (ts, carrier) DO UPDATE SET duration = excluded.duration, day = excluded.day, \
                     cost = excluded.cost WHERE cost IS NOT excluded.cost OR duration IS NOT excluded.duration"
                ),
                params![start, end - start, date.to_string(), amount],
            )?;
        }
        Ok(())
    })
}

/// `BEGIN IMMEDIATE … COMMIT`: the write lock from the start (see downsample.rs).
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

/// Runs until `token` is cancelled: at start, then every minute, on the blocking pool.
pub async fn run(db: PathBuf, jobs: Vec<CostJob>, clock: SharedClock, token: CancellationToken) {
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let (db, jobs, cancel) = (db.clone(), jobs.clone(), token.clone());
        let now = clock.now();
        match tokio::task::spawn_blocking(move || run_once(&db, &jobs, now, &cancel)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "cost run failed; retried at the next run"),
            Err(e) => tracing::error!(error = %e, "cost task failed"),
        }
    }
}
