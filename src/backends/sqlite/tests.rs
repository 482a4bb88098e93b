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
