//! The CSV export and what both formats share (`parquet.rs` tests its own).

use super::*;

pub(super) fn db(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("mesura.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE metrics (device TEXT, metric TEXT, unit TEXT, kind TEXT, PRIMARY KEY (device, metric));
         INSERT INTO metrics VALUES ('p1', 'power', 'W', 'gauge'), ('p1', 'energy', 'kWh', 'counter'), ('p1', 'tariff', '', 'gauge');
         CREATE TABLE p1 (ts INTEGER PRIMARY KEY, power REAL, energy REAL, tariff TEXT);
         INSERT INTO p1 VALUES (1000, 230.5, 12.25, '1'), (1001, NULL, 12.26, NULL), (2000, 1.0, 13.0, '2');
         CREATE TABLE p1_5m (ts INTEGER PRIMARY KEY, samples INTEGER, power_mean REAL, power_min REAL, power_max REAL, energy REAL);
         INSERT INTO p1_5m VALUES (900, 2, 230.5, 230.5, 230.5, 12.26);",
    )
    .unwrap();
    path
}

pub(super) fn spec(metrics: &[&str], resolution: Resolution) -> ExportSpec {
    ExportSpec {
        device: "p1".into(),
        metrics: metrics.iter().map(|m| m.to_string()).collect(),
        from: 0,
        to: 2000,
        resolution,
        time: TimeZone::Utc,
        format: Format::Csv,
    }
}

#[test]
fn raw_rows_with_units_in_the_header_and_empty_cells_for_missing_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let n = write(&db(dir.path()), &spec(&[], Resolution::Raw), &mut out).unwrap();
    assert_eq!(n, 2, "`to` is excluded");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "ts,time,energy [kWh],power [W],tariff\n\
         1000,1970-01-01T00:16:40Z,12.25,230.5,1\n\
         1001,1970-01-01T00:16:41Z,12.26,,\n"
    );
}

#[test]
fn five_minute_rows_and_one_metric() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    write(&db(dir.path()), &spec(&["power"], Resolution::FiveMinutes), &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "ts,time,samples,power_mean [W],power_min [W],power_max [W]\n900,1970-01-01T00:15:00Z,2,230.5,230.5,230.5\n"
    );
}

#[test]
fn instants_as_users_write_them() {
    assert_eq!(parse_instant("1764547200"), Ok(1_764_547_200));
    assert_eq!(parse_instant("2025-12-01T00:00:00Z"), Ok(1_764_547_200));
    let local = chrono::TimeZone::with_ymd_and_hms(&Local, 2025, 12, 1, 0, 0, 0)
        .earliest()
        .unwrap();
    assert_eq!(parse_instant("2025-12-01"), Ok(local.timestamp()));
    assert!(parse_instant("yesterday").is_err());
}

#[test]
fn unknown_devices_and_metrics_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = db(dir.path());
    let mut s = spec(&["nope"], Resolution::Raw);
    let e = write(&path, &s, Vec::new()).unwrap_err();
    assert_eq!(e.to_string(), "device `p1` has no metric `nope`");
    s.device = "gas".into();
    s.metrics.clear();
    assert_eq!(
        write(&path, &s, Vec::new()).unwrap_err().to_string(),
        "no readings of device `gas`"
    );
}

#[test]
fn formats_as_users_write_them() {
    assert_eq!(Format::parse("csv"), Ok(Format::Csv));
    assert_eq!(
        Format::parse("xlsx").unwrap_err(),
        "format: `xlsx` is neither `csv` nor `parquet`"
    );
    if cfg!(feature = "parquet") {
        assert_eq!(Format::parse("parquet"), Ok(Format::Parquet));
    } else {
        assert!(Format::parse("parquet")
            .unwrap_err()
            .contains("cargo feature `parquet`"));
    }
}

#[test]
fn local_wall_time_is_the_instant_plus_the_zone_offset() {
    use chrono::Offset;
    let ts = 1_751_371_200; // 2025-07-01T12:00:00Z
    assert_eq!(TimeZone::Utc.wall_millis(ts), ts * 1000);
    let offset = chrono::TimeZone::timestamp_opt(&Local, ts, 0)
        .unwrap()
        .offset()
        .fix()
        .local_minus_utc() as i64;
    assert_eq!(TimeZone::Local.wall_millis(ts), (ts + offset) * 1000);
}
