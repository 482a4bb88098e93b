//! Downsampling on a database of synthetic rows spanning 32 days, one row a minute,
//! with values chosen so every aggregate can be computed by hand.

use std::sync::Arc;

use super::*;
use crate::backends::sqlite::Store;
use crate::reading::{Kind, Reading, Unit, Value};

/// An hour boundary (and so a 5-minute one).
const T0: i64 = 1_699_999_200;
const STEP: i64 = 60;
const DAY: i64 = 86_400;
const DAYS: i64 = 32;
const ROWS: i64 = DAYS * DAY / STEP;
/// With `raw: 30d` at `T0 + 32 days`, everything before `T0 + 2 days` is old.
const NOW: i64 = T0 + DAYS * DAY;
const CUTOFF: i64 = T0 + 2 * DAY;
const OLD_WINDOWS: i64 = 2 * DAY / WINDOW;

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

/// Row `i` (window `k = i / 5`): `power` = k + 10·(i % 5), so a window's mean is
/// k + 20, its min k, its max k + 40; `energy` (a counter) = i / 2, so a window's
/// last is (5k + 4) / 2; `mode` (text) = "m<i>"; `temp` = 20 + (i % 5).
fn fill(db: &Path) {
    let mut store = Store::open(db).unwrap();
    let mut batch = Vec::new();
    for i in 0..ROWS {
        let ts = T0 + i * STEP;
        let k = (i / 5) as f64;
        let power = k + 10.0 * (i % 5) as f64;
        batch.push(reading("p1", "power", Value::Number(power), Kind::Gauge, ts));
        batch.push(reading(
            "p1",
            "energy",
            Value::Number(i as f64 / 2.0),
            Kind::Counter,
            ts,
        ));
        batch.push(reading(
            "p1",
            "mode",
            Value::Text(format!("m{i}").into()),
            Kind::Gauge,
            ts,
        ));
        batch.push(reading(
            "room",
            "temp",
            Value::Number(20.0 + (i % 5) as f64),
            Kind::Gauge,
            ts,
        ));
    }
    store.write(&batch).unwrap();
}

fn config() -> RetentionConfig {
    RetentionConfig::default()
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(NOW, 0).unwrap()
}

type AggRow = (i64, i64, f64, f64, f64, f64, String);

fn p1_aggregates(conn: &Connection) -> Vec<AggRow> {
    conn.prepare("SELECT ts, samples, power_mean, power_min, power_max, energy, mode FROM p1_5m ORDER BY ts")
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// (count, sum of power, sum of energy, min ts) of the raw rows from `from` on.
fn raw_summary(conn: &Connection, from: i64) -> (i64, f64, f64, Option<i64>) {
    conn.query_row(
        "SELECT count(*), sum(power), sum(energy), min(ts) FROM p1 WHERE ts >= ?1",
        [from],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .unwrap()
}

#[test]
fn old_rows_become_exact_5_minute_aggregates_and_new_rows_stay() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    fill(&db);
    let conn = Connection::open(&db).unwrap();
    let newer_before = raw_summary(&conn, CUTOFF);

    let report = run_once(&db, &config(), now(), &CancellationToken::new())
        .unwrap()
        .unwrap();
    let old_rows = (2 * DAY / STEP) as u64;
    assert_eq!(report.raw_rows["p1"], old_rows);
    assert_eq!(report.raw_rows["room"], old_rows);
    assert_eq!(report.windows["p1"], OLD_WINDOWS as u64);
    assert!(report.expired.is_empty());

    // Raw rows older than 30 days are gone; the newer ones are untouched.
    assert_eq!(raw_summary(&conn, 0), newer_before);
    assert_eq!(newer_before.3, Some(CUTOFF));
    assert_eq!(newer_before.0, ROWS - old_rows as i64);

    let rows = p1_aggregates(&conn);
    assert_eq!(rows.len() as i64, OLD_WINDOWS);
    for (k, row) in rows.iter().enumerate() {
        let k = k as i64;
        let kf = k as f64;
        let expected: AggRow = (
            T0 + k * WINDOW,
            5,
            kf + 20.0,
            kf,
            kf + 40.0,
            (5 * k + 4) as f64 / 2.0,
            format!("m{}", 5 * k + 4),
        );
        assert_eq!(row, &expected, "window {k}");
    }
    let room: Vec<(f64, f64, f64)> = conn
        .prepare("SELECT temp_mean, temp_min, temp_max FROM room_5m")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(room.len() as i64, OLD_WINDOWS);
    assert!(room.iter().all(|r| *r == (22.0, 20.0, 24.0)), "{:?}", &room[..3]);
    // Aggregate tables are not in the catalogue, so they are never aggregated again.
    let catalogued: i64 = conn
        .query_row("SELECT count(*) FROM metrics WHERE device LIKE '%_5m'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(catalogued, 0);

    // A second run finds nothing to do and changes nothing.
    let again = run_once(&db, &config(), now(), &CancellationToken::new())
        .unwrap()
        .unwrap();
    assert_eq!(again, Report::default());
    assert_eq!(p1_aggregates(&conn), rows);
    assert_eq!(raw_summary(&conn, 0), newer_before);
}

#[test]
fn a_late_row_merges_into_its_window() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    fill(&db);
    run_once(&db, &config(), now(), &CancellationToken::new()).unwrap();
    let conn = Connection::open(&db).unwrap();
    conn.execute(
        "INSERT INTO p1 (ts, power, energy) VALUES (?1, 1000.0, 0.25)",
        [T0 + 30],
    )
    .unwrap();
    let report = run_once(&db, &config(), now(), &CancellationToken::new())
        .unwrap()
        .unwrap();
    assert_eq!(report.raw_rows["p1"], 1);
    let first = &p1_aggregates(&conn)[0];
    // Window 0 held 0, 10, 20, 30, 40 (mean 20); 1000 joins them.
    assert_eq!(first.1, 6);
    assert!((first.2 - 1100.0 / 6.0).abs() < 1e-9, "{first:?}");
    assert_eq!((first.3, first.4), (0.0, 1000.0));
    // The counter keeps the window's last value: the late row is older.
    assert_eq!(first.5, 2.0);
}

#[test]
fn aggregates_expire_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    fill(&db);
    let config = RetentionConfig {
        aggregates: Some(Duration::from_secs(31 * DAY as u64)),
        ..config()
    };
    let report = run_once(&db, &config, now(), &CancellationToken::new())
        .unwrap()
        .unwrap();
    // Aggregates before NOW − 31 days = T0 + 1 day go: the first day's windows.
    assert_eq!(report.expired["p1"], (DAY / WINDOW) as u64);
    let conn = Connection::open(&db).unwrap();
    let (n, first): (i64, i64) = conn
        .query_row("SELECT count(*), min(ts) FROM p1_5m", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((n, first), (OLD_WINDOWS - DAY / WINDOW, T0 + DAY));
}

#[test]
fn tables_exist_before_anything_is_old_and_no_database_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    assert_eq!(
        run_once(&db, &config(), now(), &CancellationToken::new()).unwrap(),
        None
    );
    assert!(!db.exists());
    let mut store = Store::open(&db).unwrap();
    store
        .write(&[reading("p1", "power", Value::Number(1.0), Kind::Gauge, NOW)])
        .unwrap();
    let report = run_once(&db, &config(), now(), &CancellationToken::new())
        .unwrap()
        .unwrap();
    assert_eq!(report, Report::default());
    let conn = Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM p1_5m WHERE power_mean IS NULL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0, "the aggregate table exists, empty");
}

#[test]
fn config_accepts_durations_and_forever() {
    let c: RetentionConfig = serde_yaml_ng::from_str("raw: 7d\naggregates: 365d\n").unwrap();
    assert_eq!(c.raw, Duration::from_secs(7 * DAY as u64));
    assert_eq!(c.aggregates, Some(Duration::from_secs(365 * DAY as u64)));
    let c: RetentionConfig = serde_yaml_ng::from_str("aggregates: forever\n").unwrap();
    assert_eq!(c, RetentionConfig::default());
    assert!(serde_yaml_ng::from_str::<RetentionConfig>("aggregates: sometimes\n").is_err());
    assert!(serde_yaml_ng::from_str::<RetentionConfig>("raws: 7d\n").is_err());
}
