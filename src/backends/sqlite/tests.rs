use super::schema::open_existing;
use super::*;
use crate::reading::{Kind, Unit};
use chrono::{DateTime, Utc};

fn reading(device: &str, metric: &str, value: f64, ts: i64) -> Reading {
    Reading {
        device: Arc::from(device),
        device_type: "test",
        metric: Arc::from(metric),
        value: Value::Number(value),
        unit: Unit::Watt,
        kind: Kind::Gauge,
        timestamp: DateTime::<Utc>::from_timestamp(ts, 0).unwrap(),
    }
}

#[test]
fn schema_evolves_as_metrics_appear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut store = Store::open(&path).unwrap();
    store.write(&[reading("p1", "power_delivered", 100.0, 10)]).unwrap();
    store
        .write(&[
            reading("p1", "power_delivered", 110.0, 11),
            reading("p1", "voltage_l1", 231.0, 11),
        ])
        .unwrap();
    store.write(&[reading("odd \"name\", x", "a b", 1.0, 12)]).unwrap();
    drop(store);

    let conn = Connection::open(&path).unwrap();
    let rows: Vec<(i64, f64, Option<f64>)> = conn
        .prepare("SELECT ts, power_delivered, voltage_l1 FROM p1 ORDER BY ts")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, vec![(10, 100.0, None), (11, 110.0, Some(231.0))]);
    let catalogue: Vec<(String, String, String, String)> = conn
        .prepare("SELECT device, metric, unit, kind FROM metrics ORDER BY device, metric")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(catalogue.len(), 3);
    assert_eq!(
        catalogue[1],
        ("p1".into(), "power_delivered".into(), "W".into(), "gauge".into())
    );
    let odd: f64 = conn
        .query_row("SELECT \"a b\" FROM \"odd \"\"name\"\", x\"", [], |r| r.get(0))
        .unwrap();
    assert_eq!(odd, 1.0);

    // Reopening picks the schema up from the file: a new metric still gets its column.
    let mut store = Store::open(&path).unwrap();
    store.write(&[reading("p1", "current_l1", 2.5, 13)]).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM p1 WHERE current_l1 = 2.5", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn tasks_beside_the_backend_sync_like_it_and_never_create_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    assert!(open_existing(&path).is_err());
    assert!(!path.exists());
    Store::open(&path).unwrap();
    let conn = open_existing(&path).unwrap();
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
    assert_eq!(synchronous, 1, "NORMAL");
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn same_second_merges_into_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut store = Store::open(&path).unwrap();
    store
        .write(&[
            reading("gas", "gas_delivered", 5.0, 100),
            reading("gas", "gas_delivered", 5.0, 100),
        ])
        .unwrap();
    store
        .write(&[
            reading("gas", "gas_delivered", 5.5, 100),
            reading("gas", "other", 1.0, 100),
        ])
        .unwrap();
    let conn = Connection::open(&path).unwrap();
    let (n, v): (i64, f64) = conn
        .query_row("SELECT count(*), max(gas_delivered) FROM gas", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((n, v), (1, 5.5));
}

/// Only a reading that replaces a different stored value loses something; the
/// same value again (a DSMR gas capture time) or a metric new to the row does not.
#[test]
fn merges_that_lose_a_value_are_counted_per_device() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("m.db")).unwrap();
    let first = store
        .write(&[
            reading("p1", "power", 100.0, 10),
            reading("p1", "power", 150.0, 10),
            reading("p1", "power", 150.0, 10),
            reading("gas", "gas_delivered", 5.0, 10),
            reading("gas", "gas_delivered", 5.0, 10),
        ])
        .unwrap();
    assert_eq!(first, HashMap::from([("p1".to_owned(), 1)]));
    let second = store
        .write(&[
            reading("p1", "power", 200.0, 10),
            reading("p1", "voltage", 230.0, 10),
            reading("p1", "power", 300.0, 11),
            reading("gas", "gas_delivered", 5.0, 10),
        ])
        .unwrap();
    assert_eq!(second, HashMap::from([("p1".to_owned(), 1)]));
    let third = store
        .write(&[reading("p1", "voltage", 231.0, 10), reading("p1", "power", 200.0, 10)])
        .unwrap();
    assert_eq!(third, HashMap::from([("p1".to_owned(), 1)]), "only the voltage changed");

    // A restart (a new store knows no newest second) after the clock stepped
    // back: rows stored at seconds 10 and 11 are still found and counted.
    drop(store);
    let mut store = Store::open(&dir.path().join("m.db")).unwrap();
    let after_restart = store
        .write(&[reading("p1", "power", 301.0, 11), reading("p1", "power", 400.0, 12)])
        .unwrap();
    assert_eq!(after_restart, HashMap::from([("p1".to_owned(), 1)]));
    let back = store.write(&[reading("p1", "power", 999.0, 10)]).unwrap();
    assert_eq!(
        back,
        HashMap::from([("p1".to_owned(), 1)]),
        "an older second is looked up"
    );
    let ahead = store.write(&[reading("p1", "power", 1.0, 13)]).unwrap();
    assert!(ahead.is_empty(), "a newer second overwrites nothing");
}

#[test]
fn readers_never_see_database_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut store = Store::open(&path).unwrap();
    store.write(&[reading("p1", "power_delivered", 1.0, 1)]).unwrap();
    let reader_path = path.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_reader = stop.clone();
    // A reader like Grafana's plugin: a plain connection, no busy timeout.
    let reader = std::thread::spawn(move || -> Result<u64, rusqlite::Error> {
        let conn = Connection::open(&reader_path)?;
        let mut reads = 0;
        while !stop_reader.load(std::sync::atomic::Ordering::Relaxed) {
            let _: i64 = conn.query_row("SELECT count(*) FROM p1", [], |r| r.get(0))?;
            reads += 1;
        }
        Ok(reads)
    });
    for second in 2..400 {
        let batch: Vec<Reading> = (0..20)
            .map(|i| reading("p1", "power_delivered", f64::from(i), second))
            .collect();
        store.write(&batch).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().unwrap().expect("the reader hit an error");
    assert!(reads > 0);
}

/// A device's first write creates its table and its 5-minute table with all the
/// columns at once: SQLite reads the whole schema again after each change, and
/// 30 metrics by ALTERs were 118 changes for one device. The columns and their
/// types are those the ALTERs gave.
#[test]
fn a_new_device_is_two_schema_changes_whatever_its_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.db");
    let mut store = Store::open(&path).unwrap();
    let version = |store: &Store| -> i64 { store.conn.query_row("PRAGMA schema_version", [], |r| r.get(0)).unwrap() };
    let before = version(&store);
    let mut first: Vec<Reading> = (0..30)
        .map(|m| reading("meter", &format!("m{m}"), m as f64, 100))
        .collect();
    first[1].kind = Kind::Counter;
    first[2].value = Value::Text(Arc::from("on"));
    // The same metric twice in the row: one column.
    first.push(reading("meter", "m0", 7.0, 100));
    // A later row of the same batch with one more metric: an ALTER each table.
    first.push(reading("meter", "late", 1.0, 101));
    store.write(&first).unwrap();
    // (By an ALTER per column it was 2 + 30 + 86 for the first row.)
    assert_eq!(
        version(&store) - before,
        2 + 1 + 3,
        "two tables, then one new gauge: a raw column and three aggregate ones"
    );

    let columns = |table: &str| -> Vec<(String, String)> {
        store
            .conn
            .prepare(&format!("PRAGMA table_info({})", quote(table)))
            .unwrap()
            .query_map([], |r| Ok((r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let raw = columns("meter");
    assert_eq!(raw.len(), 1 + 30 + 1);
    assert_eq!(raw[0], ("ts".into(), "INTEGER".into()));
    assert_eq!(raw[1], ("m0".into(), "REAL".into()));
    assert_eq!(raw[3], ("m2".into(), "TEXT".into()));
    assert_eq!(raw[31], ("late".into(), "REAL".into()));
    let aggregate = columns("meter_5m");
    let names: Vec<&str> = aggregate.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[..5], ["ts", "samples", "m0_mean", "m0_min", "m0_max"]);
    // A counter and a text keep their last value, without a declared type.
    assert_eq!(
        &aggregate[5..7],
        [("m1".to_owned(), String::new()), ("m2".to_owned(), String::new())]
    );
    assert_eq!(aggregate.len(), 2 + 28 * 3 + 2 + 3);
    let stored: (f64, f64, String, f64) = store
        .conn
        .query_row("SELECT m0, m1, m2, m29 FROM meter WHERE ts = 100", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    assert_eq!(stored, (7.0, 1.0, "on".into(), 29.0));

    // Later: two new metrics, one ALTER each in the raw table, three in the 5m one.
    let before = version(&store);
    store
        .write(&[reading("meter", "x", 1.0, 102), reading("meter", "y", 2.0, 102)])
        .unwrap();
    assert_eq!(version(&store) - before, 2 + 6);
}
