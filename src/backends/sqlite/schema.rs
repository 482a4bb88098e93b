//! The database file's layout, shared by everything that keeps it: the backend
//! that writes it, the disk guard and the downsampler beside it, and the status
//! API that reads it. One table per device (`ts` + one column per metric), the
//! `metrics` catalogue of units and kinds, and `<device>_5m` aggregates.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Quotes an SQL identifier: device ids and metric names may hold any character.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Opens the existing database for a task beside the backend (retention, the disk
/// guard): never creates it, waits up to 10 s for the backend's writer, and syncs as
/// the backend's connection does. `synchronous` is a per-connection setting whose
/// default, FULL, syncs the WAL at every commit: a retention run with 200 devices
/// made 1,700 fsyncs in a burst (one per aggregate column it added; reliability
/// suite 5, soak). NORMAL syncs only at checkpoints and is as safe against a crash
/// of the process.
pub fn open_existing(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Sets up the backend's own connection and the catalogue. WAL lets Grafana and
/// sqlite3 read while we write, without "database is locked"; NORMAL is durable
/// across process crashes (only an OS crash or power loss can cost the last
/// commit), with far fewer fsyncs than FULL.
pub fn prepare_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // The writer only appends at each table's end: a device's last pages (two or
    // three a table) are all it reads back. 1 MiB holds them for a few hundred
    // devices; SQLite's default, 2 MiB, filled itself as the file grew, and the
    // kernel's page cache still holds every page read.
    conn.pragma_update(None, "cache_size", -1024)?;
    conn.set_prepared_statement_cache_capacity(256);
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS metrics (
            device TEXT NOT NULL,
            metric TEXT NOT NULL,
            unit TEXT NOT NULL,
            kind TEXT NOT NULL,
            PRIMARY KEY (device, metric)
        ) WITHOUT ROWID;",
    )
}

/// The suffix of cost tables (`cost/`; device ids ending in it are reserved).
pub const COST_SUFFIX: &str = "_cost";

/// The suffix of aggregate tables (device ids ending in it are reserved).
pub const AGGREGATE_SUFFIX: &str = "_5m";

/// The aggregate table of a device table.
pub fn aggregate_table(device: &str) -> String {
    format!("{device}{AGGREGATE_SUFFIX}")
}

/// How a raw column is kept in `<device>_5m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// `x_mean`, `x_min`, `x_max`
    Gauge,
    /// `x`: the last value of the window
    Last,
}

impl Aggregate {
    /// Counters keep their last value, so differences between rows still give the
    /// energy used; text cannot be averaged. Every other column is a gauge.
    pub fn of(kind: &str, declared_type: &str) -> Aggregate {
        if kind == "counter" || declared_type.eq_ignore_ascii_case("TEXT") {
            Aggregate::Last
        } else {
            Aggregate::Gauge
        }
    }

    /// The aggregate columns of raw column `metric`.
    pub fn columns(self, metric: &str) -> Vec<String> {
        match self {
            Aggregate::Gauge => vec![
                format!("{metric}_mean"),
                format!("{metric}_min"),
                format!("{metric}_max"),
            ],
            Aggregate::Last => vec![metric.to_owned()],
        }
    }
}

/// Creates `<device>_5m` and any aggregate column of `columns` it lacks. The
/// writer calls it as it creates a device table or adds a column, so dashboards
/// that read the aggregates never meet a missing table or column; the downsampler
/// calls it before each run, for databases written before that. Either may have
/// created the table: the layout is the same.
pub fn prepare_aggregate_table(
    conn: &Connection,
    device: &str,
    columns: &[(String, Aggregate)],
) -> rusqlite::Result<()> {
    let table = quote(&aggregate_table(device));
    // An empty answer: no such table yet.
    let existing: HashSet<String> = conn
        .prepare(&format!("PRAGMA table_info({table})"))?
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    let mut missing: Vec<String> = Vec::new();
    for (metric, aggregate) in columns {
        for column in aggregate.columns(metric) {
            if !existing.contains(&column) {
                // No declared type for last-value columns: they hold REAL or TEXT as
                // the raw column does.
                let ty = if *aggregate == Aggregate::Gauge { " REAL" } else { "" };
                missing.push(format!("{}{ty}", quote(&column)));
            }
        }
    }
    let new_table = existing
        .is_empty()
        .then_some("ts INTEGER PRIMARY KEY NOT NULL, samples INTEGER NOT NULL");
    add_columns(conn, &table, new_table, &missing)
}

/// Gives `table` (quoted) the columns `definitions` (`"name" TYPE`): a new table
/// (`new_table`: its own first columns) in one `CREATE TABLE` with all of them,
/// an existing one an `ALTER TABLE` each. SQLite reads its whole schema again
/// after every change, so a device's first write with 30 gauges made by ALTERs
/// was 122 changes (its table and its 5-minute table), each parsing every other
/// device's tables again.
pub fn add_columns(
    conn: &Connection,
    table: &str,
    new_table: Option<&str>,
    definitions: &[String],
) -> rusqlite::Result<()> {
    match new_table {
        Some(first) => {
            let mut columns = String::from(first);
            for definition in definitions {
                columns.push_str(", ");
                columns.push_str(definition);
            }
            conn.execute_batch(&format!("CREATE TABLE IF NOT EXISTS {table} ({columns});"))
        }
        None => {
            for definition in definitions {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {definition};"))?;
            }
            Ok(())
        }
    }
}

/// Device tables and how each column is aggregated, from the `metrics` catalogue
/// (aggregate tables are not in it) and each table's declared column types. A
/// catalogued column or table that does not exist is left out.
pub fn catalogue(conn: &Connection) -> rusqlite::Result<BTreeMap<String, Vec<(String, Aggregate)>>> {
    let has_metrics: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'metrics'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    let mut devices: BTreeMap<String, Vec<(String, Aggregate)>> = BTreeMap::new();
    if !has_metrics {
        return Ok(devices);
    }
    let rows: Vec<(String, String, String)> = conn
        .prepare("SELECT device, metric, kind FROM metrics ORDER BY device, metric")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut declared: HashMap<String, HashMap<String, String>> = HashMap::new();
    for (device, metric, kind) in rows {
        if !declared.contains_key(&device) {
            let types: HashMap<String, String> = conn
                .prepare(&format!("PRAGMA table_info({})", quote(&device)))?
                .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
                .collect::<Result<_, _>>()?;
            declared.insert(device.clone(), types);
        }
        let Some(ty) = declared.get(&device).and_then(|types| types.get(&metric)) else {
            continue;
        };
        let aggregate = Aggregate::of(&kind, ty);
        devices.entry(device).or_default().push((metric, aggregate));
    }
    Ok(devices)
}

#[cfg(test)]
mod tests;
