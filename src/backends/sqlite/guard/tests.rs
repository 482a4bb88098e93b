//! The disk guard on a real database of synthetic rows, with a simulated disk whose
//! usage is the database file's real size plus a fixed amount of other data.

use std::sync::Arc;

use super::*;
use crate::backends::sqlite::Store;
use crate::reading::{Kind, Reading, Unit, Value};

/// An hour boundary, so slices line up with days.
const T0: i64 = 1_699_999_200;
const STEP: i64 = 600;
const DAY: i64 = 86_400;
const ROWS: i64 = 30 * DAY / STEP;
const TABLES: [&str; 3] = ["p1", "gas", "room"];

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

/// 30 days of rows every 10 minutes for three devices; returns the file size.
fn fill(db: &Path) -> u64 {
    let mut store = Store::open(db).unwrap();
    let mut batch = Vec::new();
    for i in 0..ROWS {
        let ts = T0 + i * STEP;
        let x = i as f64;
        batch.push(reading("p1", "power_delivered", 300.0 + x, ts));
        batch.push(reading("p1", "energy_delivered", 1000.0 + x / 6.0, ts));
        batch.push(reading("gas", "gas_delivered", 1200.0 + x / 100.0, ts));
        batch.push(reading("room", "temperature", 20.0 + (x / 10.0).sin(), ts));
        batch.push(reading("room", "humidity", 50.0 + (x / 7.0).cos(), ts));
    }
    store.write(&batch).unwrap();
    drop(store);
    let conn = Connection::open(db).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    std::fs::metadata(db).unwrap().len()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// A disk of `capacity` bytes holding `other` bytes besides the database and its WAL.
fn simulated_disk(db: &Path, capacity: u64, other: u64) -> Box<UsageFn> {
    let db = db.to_path_buf();
    Box::new(move |_dir: &Path| {
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        let used = other + file_len(&db) + file_len(&wal);
        Ok(DiskUsage {
            total: capacity,
            used,
            available: capacity.saturating_sub(used),
        })
    })
}

fn timestamps(db: &Path, table: &str) -> Vec<i64> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT ts FROM {} ORDER BY ts", quote(table)))
        .unwrap();
    let ts = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    ts
}

fn config(max: f64) -> DiskGuardConfig {
    DiskGuardConfig {
        max_disk_used_percent: max,
        ..DiskGuardConfig::default()
    }
}

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(T0 + 30 * DAY, 0).unwrap()
}

#[test]
fn thins_old_rows_evenly_oldest_first_until_under_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mesura.db");
    let size = fill(&db);
    // The database is a quarter of the disk, and the disk is 70 % full: getting under
    // 65 % means freeing about a quarter of the database, and there is room to VACUUM.
    let capacity = size * 4;
    let other = capacity * 70 / 100 - size;
    let usage = simulated_disk(&db, capacity, other);
    let report = check(&db, &config(65.0), now(), &*usage, &CancellationToken::new())
        .unwrap()
        .expect("over the threshold: it must act");

    assert!(report.used_percent_before > 69.9, "{report:?}");
    assert!(report.used_percent_after <= 65.0, "{report:?}");
    assert!(report.vacuumed);
    let cutoff = T0 + 23 * DAY;
    for table in TABLES {
        let ts = timestamps(&db, table);
        // The newest 7 days are untouched: every row is still there.
        let new: Vec<i64> = ts.iter().copied().filter(|&t| t >= cutoff).collect();
        assert_eq!(new.len() as i64, 7 * DAY / STEP, "{table}");
        // The oldest day is thinned to every other row, not emptied.
        let first_day = ts.iter().filter(|&&t| t < T0 + DAY).count();
        assert_eq!(first_day as i64, DAY / STEP / 2, "{table}");
        // Evenly: no gap among the old rows exceeds two original steps.
        let old: Vec<i64> = ts.iter().copied().filter(|&t| t < cutoff).collect();
        let widest = old.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert_eq!(widest, 2 * STEP, "{table}");
        assert_eq!(old.first(), Some(&T0), "the oldest row of a slice is kept");
        // It stopped once under the threshold: the last old day was not reached.
        let last_old_day = ts.iter().filter(|&&t| t >= cutoff - DAY && t < cutoff).count();
        assert_eq!(last_old_day as i64, DAY / STEP, "{table}");
        assert_eq!(report.deleted[table] as usize, ROWS as usize - ts.len());
    }
    // Under the threshold now: the next check does nothing.
    let again = check(&db, &config(65.0), now(), &*usage, &CancellationToken::new()).unwrap();
    assert_eq!(again, None);
}

#[test]
fn when_thinning_cannot_help_it_stops_at_one_row_per_hour_and_spares_recent_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mesura.db");
    let size = fill(&db);
    // Other data alone fills 95 % of the disk: no deletion can get it under 90 %.
    let capacity = size * 100;
    let usage = simulated_disk(&db, capacity, capacity * 95 / 100);
    let report = check(&db, &config(90.0), now(), &*usage, &CancellationToken::new())
        .unwrap()
        .expect("it must act");
    assert!(report.used_percent_after > 90.0);
    let cutoff = T0 + 23 * DAY;
    for table in TABLES {
        let ts = timestamps(&db, table);
        let old: Vec<i64> = ts.iter().copied().filter(|&t| t < cutoff).collect();
        assert_eq!(old.len(), 23 * 24, "{table}: one row per hour is the floor");
        assert!(old.windows(2).all(|w| w[1] - w[0] == 3600), "{table}");
        assert_eq!(ts.len() - old.len(), (7 * DAY / STEP) as usize, "{table}");
    }
}

#[test]
fn under_the_threshold_nothing_happens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mesura.db");
    let size = fill(&db);
    let usage = simulated_disk(&db, size * 10, size);
    assert_eq!(
        check(&db, &config(90.0), now(), &*usage, &CancellationToken::new()).unwrap(),
        None
    );
    for table in TABLES {
        assert_eq!(timestamps(&db, table).len() as i64, ROWS);
    }
    // No database yet: nothing is created.
    let missing = dir.path().join("none/mesura.db");
    let full = simulated_disk(&db, size, 0);
    assert_eq!(
        check(&missing, &config(1.0), now(), &*full, &CancellationToken::new()).unwrap(),
        None
    );
    assert!(!missing.exists());
}

#[test]
fn the_disk_guard_section_has_defaults_and_rejects_unknown_keys() {
    let base: crate::config::BaseConfig = serde_yaml_ng::from_str("data_dir: d\n").unwrap();
    assert_eq!(base.disk_guard, DiskGuardConfig::default());
    assert_eq!(base.disk_guard.check_interval, Duration::from_secs(600));
    let base: crate::config::BaseConfig = serde_yaml_ng::from_str(
        "disk_guard:\n  max_disk_used_percent: 80\n  keep_raw_days: 30\n  check_interval: 1h\n",
    )
    .unwrap();
    assert_eq!(base.disk_guard.max_disk_used_percent, 80.0);
    assert_eq!(base.disk_guard.keep_raw_days, 30);
    assert_eq!(base.disk_guard.check_interval, Duration::from_secs(3600));
    let e = serde_yaml_ng::from_str::<crate::config::BaseConfig>("disk_guard:\n  max_percent: 80\n").unwrap_err();
    assert!(e.to_string().contains("unknown field `max_percent`"), "{e}");
}
