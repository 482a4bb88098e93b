use super::*;
use crate::reading::Unit;
use std::sync::Arc;

fn reading(i: i64, ts: DateTime<Utc>) -> Reading {
    Reading {
        device: Arc::from("meter, east"),
        device_type: "dsmr",
        metric: Arc::from("power_delivered"),
        value: Value::Number(i as f64),
        unit: Unit::Watt,
        kind: Kind::Gauge,
        timestamp: ts,
    }
}

#[test]
fn rows_survive_reopening_until_acked_and_backends_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let now = Utc::now();
    let mut mqtt = Outbox::open(&path, "mqtt", OutboxConfig::default()).unwrap();
    let mut uplink = Outbox::open(&path, "uplink", OutboxConfig::default()).unwrap();
    mqtt.append(&(0..5).map(|i| reading(i, now)).collect::<Vec<_>>())
        .unwrap();
    uplink.append(&[reading(99, now)]).unwrap();
    let rows = mqtt.pending(0, 3).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].device, "meter, east");
    assert_eq!(rows[0].unit, "W");
    assert_eq!(rows[0].timestamp.timestamp_millis(), now.timestamp_millis());
    mqtt.ack(&[rows[0].id, rows[1].id]).unwrap();
    drop(mqtt);

    let mqtt = Outbox::open(&path, "mqtt", OutboxConfig::default()).unwrap();
    let left: Vec<f64> = mqtt
        .pending(0, 100)
        .unwrap()
        .iter()
        .filter_map(|r| r.value.as_f64())
        .collect();
    assert_eq!(left, vec![2.0, 3.0, 4.0]);
    assert_eq!(mqtt.depth().unwrap().0, 3);
    assert_eq!(uplink.depth().unwrap().0, 1);
}

#[test]
fn dead_letters_move_aside_and_windows_come_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::open(&dir.path().join("o.db"), "uplink", OutboxConfig::default()).unwrap();
    let now = Utc::now();
    let earlier = now - TimeDelta::minutes(10);
    outbox
        .append(&[reading(0, now), reading(1, earlier), reading(2, now)])
        .unwrap();
    let before: Vec<f64> = outbox
        .pending_before(now, 10)
        .unwrap()
        .iter()
        .filter_map(|r| r.value.as_f64())
        .collect();
    assert_eq!(before, vec![1.0], "only rows before the cut-off");
    let rows = outbox.pending(0, 10).unwrap();
    outbox.dead_letter(&[rows[0].id, rows[2].id], "400 bad").unwrap();
    assert_eq!(outbox.dead_letter_count().unwrap(), 2);
    assert_eq!(outbox.depth().unwrap().0, 1);
    assert_eq!(outbox.pending(0, 10).unwrap()[0].value.as_f64(), Some(1.0));
}

#[test]
fn max_age_counts_from_queueing_not_from_the_readings_own_time() {
    let dir = tempfile::tempdir().unwrap();
    let bounds = OutboxConfig {
        max_age: Duration::from_secs(3600),
        max_rows: 100,
    };
    let mut outbox = Outbox::open(&dir.path().join("o.db"), "mqtt", bounds).unwrap();
    let now = Utc::now();
    // A meter with an unset clock, or history replayed: stamped ten years ago.
    let decade_ago = now - TimeDelta::days(3653);
    let dropped = outbox.append_at(&[reading(0, decade_ago)], now).unwrap();
    assert_eq!(dropped, Dropped::default(), "an old stamp is no reason to drop");
    let rows = outbox.pending(0, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].timestamp.timestamp_millis(), decade_ago.timestamp_millis());

    // Half an hour later it is still there; past max_age (counted from when it
    // was queued) it goes, counted in the file, while a fresh one stays.
    let later = now + TimeDelta::minutes(30);
    assert_eq!(outbox.append_at(&[reading(1, later)], later).unwrap().total(), 0);
    let past = now + TimeDelta::minutes(61);
    let dropped = outbox.append_at(&[reading(2, decade_ago)], past).unwrap();
    assert_eq!(
        dropped,
        Dropped {
            max_age: 1,
            max_rows: 0
        }
    );
    let left: Vec<f64> = outbox
        .pending(0, 10)
        .unwrap()
        .iter()
        .filter_map(|r| r.value.as_f64())
        .collect();
    assert_eq!(left, vec![1.0, 2.0]);
    assert_eq!(
        outbox.dropped_count().unwrap(),
        Dropped {
            max_age: 1,
            max_rows: 0
        }
    );
    // The oldest waiting reading is the one queued at `later`, whatever its stamp.
    assert_eq!(
        outbox.depth().unwrap(),
        (2, DateTime::<Utc>::from_timestamp_millis(later.timestamp_millis()))
    );
}

#[test]
fn an_outbox_from_before_queued_ms_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.db");
    let old = Utc::now() - TimeDelta::days(30);
    {
        // The schema as released before `queued_ms`, with one waiting row.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT, backend TEXT NOT NULL,
                device TEXT NOT NULL, device_type TEXT NOT NULL, metric TEXT NOT NULL,
                number REAL, text TEXT, unit TEXT NOT NULL, kind TEXT NOT NULL,
                ts_ms INTEGER NOT NULL);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO outbox (backend, device, device_type, metric, number, unit, kind, ts_ms)
             VALUES ('uplink', 'm', 'dsmr', 'power_delivered', 7.0, 'W', 'gauge', ?1)",
            [old.timestamp_millis()],
        )
        .unwrap();
    }
    let mut outbox = Outbox::open(&path, "uplink", OutboxConfig::default()).unwrap();
    // Thirty days old by its stamp, but queued (as far as anyone knows) now.
    assert_eq!(outbox.append(&[reading(8, Utc::now())]).unwrap().total(), 0);
    let left: Vec<f64> = outbox
        .pending(0, 10)
        .unwrap()
        .iter()
        .filter_map(|r| r.value.as_f64())
        .collect();
    assert_eq!(left, vec![7.0, 8.0]);
}

#[test]
fn bounds_drop_the_oldest_and_count_them() {
    let dir = tempfile::tempdir().unwrap();
    let bounds = OutboxConfig {
        max_age: Duration::from_secs(3600),
        max_rows: 4,
    };
    let mut outbox = Outbox::open(&dir.path().join("o.db"), "mqtt", bounds).unwrap();
    let queued = Utc::now() - TimeDelta::hours(2);
    assert_eq!(
        outbox
            .append_at(&[reading(0, queued), reading(1, queued)], queued)
            .unwrap()
            .total(),
        0
    );
    let now = Utc::now();
    assert_eq!(
        outbox
            .append(&(10..16).map(|i| reading(i, now)).collect::<Vec<_>>())
            .unwrap(),
        Dropped {
            max_age: 2,
            max_rows: 2
        },
        "two waited past max_age, two more past max_rows"
    );
    let left: Vec<f64> = outbox
        .pending(0, 100)
        .unwrap()
        .iter()
        .filter_map(|r| r.value.as_f64())
        .collect();
    assert_eq!(left, vec![12.0, 13.0, 14.0, 15.0]);
}
