//! The database file's layout, shared by everything that keeps it: the backend
//! that writes it, the disk guard and the downsampler beside it, and the status
//! API that reads it. One table per device (`ts` + one column per metric), the
//! `metrics` catalogue of units and kinds, and `<device>_5m` aggregates.

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
