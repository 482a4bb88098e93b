//! The aggregate tables exist from a device's first write on, with the columns its
//! raw table has, and the downsampler fills the tables the writer created.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::backends::sqlite::downsample::{run_once, RetentionConfig};
use crate::backends::sqlite::Store;
use crate::reading::{Kind, Reading, Unit, Value};

fn reading(device: &str, metric: &str, value: Value, kind: Kind, ts: i64) -> Reading {
    Reading {
        device: Arc::from(device),
        device_type: "test",
        metric: Arc::from(metric),
        value,
        unit: Unit::Watt,
        kind,
        timestamp: DateTime::<Utc>::from_timestamp(ts, 0).unwrap(),
    }
}

fn columns(conn: &Connection, table: &str) -> Vec<(String, String)> {
    conn.prepare(&format!("PRAGMA table_info({})", quote(table)))
        .unwrap()
        .query_map([], |r| Ok((r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn names(cols: &[(String, String)]) -> Vec<&str> {
    cols.iter().map(|(n, _)| n.as_str()).collect()
}

const T0: i64 = 1_699_999_200;

#[test]
fn the_aggregate_table_is_created_and_widened_with_the_raw_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut store = Store::open(&path).unwrap();
    store
        .write(&[
            reading("p1", "power", Value::Number(1.0), Kind::Gauge, T0),
            reading("p1", "energy", Value::Number(5.0), Kind::Counter, T0),
        ])
        .unwrap();
    let conn = Connection::open(&path).unwrap();
    let agg = columns(&conn, "p1_5m");
    assert_eq!(
        names(&agg),
        ["ts", "samples", "power_mean", "power_min", "power_max", "energy"]
    );
    assert_eq!(agg[2].1, "REAL");
    assert_eq!(agg[5].1, "", "a last value keeps the raw column's type");

    // A metric that appears later widens both tables in the same transaction.
    store
        .write(&[reading("p1", "mode", Value::Text("auto".into()), Kind::Gauge, T0 + 1)])
        .unwrap();
    assert_eq!(names(&columns(&conn, "p1_5m")).last(), Some(&"mode"));
    let n: i64 = conn.query_row("SELECT count(*) FROM p1_5m", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0, "created empty: the downsampler fills it");
    let catalogued: i64 = conn
        .query_row("SELECT count(*) FROM metrics WHERE device LIKE '%_5m'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(catalogued, 0, "aggregate tables are not device tables");
}

/// The downsampler finds the table the writer made and fills it, with the same
/// layout it would have made itself.
#[test]
fn the_downsampler_fills_the_table_the_writer_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut store = Store::open(&path).unwrap();
    let batch: Vec<Reading> = (0..10)
        .flat_map(|i| {
            let ts = T0 + i * 60;
            [
                reading("p1", "power", Value::Number(i as f64), Kind::Gauge, ts),
                reading("p1", "energy", Value::Number(i as f64), Kind::Counter, ts),
            ]
        })
        .collect();
    store.write(&batch).unwrap();
    let written = columns(&Connection::open(&path).unwrap(), "p1_5m");
    let now = DateTime::<Utc>::from_timestamp(T0 + 31 * 86_400, 0).unwrap();
    let report = run_once(&path, &RetentionConfig::default(), now, &CancellationToken::new())
        .unwrap()
        .unwrap();
    assert_eq!(report.raw_rows["p1"], 10);
    let conn = Connection::open(&path).unwrap();
    assert_eq!(
        columns(&conn, "p1_5m"),
        written,
        "the downsampler changed nothing in the layout"
    );
    let rows: Vec<(i64, i64, f64, f64)> = conn
        .prepare("SELECT ts, samples, power_mean, energy FROM p1_5m ORDER BY ts")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [(T0, 5, 2.0, 4.0), (T0 + 300, 5, 7.0, 9.0)]);

    // A metric that appears after the run: the writer adds its aggregate columns.
    store
        .write(&[reading(
            "p1",
            "voltage",
            Value::Number(230.0),
            Kind::Gauge,
            T0 + 31 * 86_400,
        )])
        .unwrap();
    assert!(names(&columns(&conn, "p1_5m")).contains(&"voltage_max"));
}

/// A database written before the writer created aggregate tables (or with
/// retention off, so no downsampler ever ran) gets them when the backend opens it.
#[test]
fn opening_an_older_database_completes_its_aggregate_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE metrics (device TEXT NOT NULL, metric TEXT NOT NULL, unit TEXT NOT NULL, \
             kind TEXT NOT NULL, PRIMARY KEY (device, metric)) WITHOUT ROWID;
             CREATE TABLE gas (ts INTEGER PRIMARY KEY NOT NULL, gas_delivered REAL, temp REAL);
             CREATE TABLE gas_5m (ts INTEGER PRIMARY KEY NOT NULL, samples INTEGER NOT NULL);
             INSERT INTO metrics VALUES ('gas', 'gas_delivered', 'm³', 'counter'), ('gas', 'temp', '°C', 'gauge'),
               ('gone', 'x', 'W', 'gauge');",
        )
        .unwrap();
    }
    drop(Store::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    assert_eq!(
        names(&columns(&conn, "gas_5m")),
        ["ts", "samples", "gas_delivered", "temp_mean", "temp_min", "temp_max"]
    );
    let gone: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'gone_5m'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(gone, 0, "a catalogued device without a table gets no aggregate table");
}
