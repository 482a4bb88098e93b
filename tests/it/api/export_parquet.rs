//! Parquet exports (`format=parquet`, `--format parquet`) of raw and 5-minute rows,
//! in UTC and local time, over the API and from the command line, read back by an
//! independent reader (pyarrow, tests/peers/parquet_compare.py) and compared value
//! by value with what SQLite holds. The raw window is longer than a row group
//! (65,536 rows), so the files have more than one. Built without the cargo feature
//! `parquet`, the test checks that asking for Parquet is a clear error instead.
#![cfg_attr(not(feature = "parquet"), allow(dead_code, unused_imports))]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use rusqlite::types::Value;
use serde_json::Value as Json;

use crate::support::modbus::{peer, python};
use crate::support::{no_env, Setup};
use mesura::config::Config;
use mesura::daemon::app::Daemon;

/// More than one row group of raw rows.
const ROWS: i64 = 70_000;

/// `p1`'s raw table (a gauge with gaps, a counter, a text metric) and its 5-minute
/// table, as the downsampler lays it out, filled from the raw rows by SQL.
fn fill(db: &Path, start: i64) {
    std::fs::create_dir_all(db.parent().expect("dir")).expect("dir");
    let mut conn = rusqlite::Connection::open(db).expect("db");
    let tx = conn.transaction().expect("tx");
    tx.execute_batch(
        "CREATE TABLE metrics (device TEXT NOT NULL, metric TEXT NOT NULL, unit TEXT NOT NULL, kind TEXT NOT NULL, PRIMARY KEY (device, metric)) WITHOUT ROWID;
         INSERT INTO metrics VALUES ('p1', 'power_delivered', 'W', 'gauge'), ('p1', 'energy_delivered_tariff1', 'kWh', 'counter'), ('p1', 'tariff', '', 'gauge');
         CREATE TABLE p1 (ts INTEGER PRIMARY KEY NOT NULL, power_delivered REAL, energy_delivered_tariff1 REAL, tariff TEXT);",
    )
    .expect("tables");
    {
        let mut insert = tx.prepare("INSERT INTO p1 VALUES (?1, ?2, ?3, ?4)").expect("insert");
        for i in 0..ROWS {
            let power = (i % 7 != 0).then(|| 100.0 + (i % 500) as f64 * 1.25 + 1.0 / 3.0);
            let tariff = (i % 11 != 0).then_some(if (i / 3600) % 2 == 0 { "1" } else { "2" });
            insert
                .execute((start + i, power, 1000.0 + i as f64 * 0.001, tariff))
                .expect("row");
        }
    }
    tx.execute_batch(
        "CREATE TABLE p1_5m (ts INTEGER PRIMARY KEY NOT NULL, samples INTEGER NOT NULL,
             power_delivered_mean REAL, power_delivered_min REAL, power_delivered_max REAL,
             energy_delivered_tariff1, tariff);
         INSERT INTO p1_5m
             SELECT ts / 300 * 300, count(*), avg(power_delivered), min(power_delivered), max(power_delivered),
                    max(energy_delivered_tariff1), max(tariff)
             FROM p1 GROUP BY ts / 300;",
    )
    .expect("5m");
    tx.commit().expect("commit");
}

/// What pyarrow reads from `file` (the JSON of parquet_compare.py).
fn pyarrow(file: &Path, zone: Option<&str>) -> Json {
    let mut command = Command::new(python());
    command.arg(peer("parquet_compare.py")).arg(file);
    if let Some(zone) = zone {
        command.args(["--zone", zone]);
    }
    let out = command.output().expect("parquet_compare.py");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

/// How the `time` column is expected.
enum Time<'a> {
    Utc,
    /// Local wall time: `ts` plus this process's zone offset (the daemon runs here).
    HereLocal,
    /// Local wall time in an IANA zone, the offsets as pyarrow's side computed them.
    Zone(&'a str),
}

/// Reads `file` with pyarrow and checks its schema, metadata and every value
/// against SQLite's rows of `table` in `[from, to)`; the number of rows.
fn compare(
    file: &Path,
    db: &Path,
    table: &str,
    columns: &[(&str, &str, &str)],
    from: i64,
    to: i64,
    time: Time<'_>,
) -> usize {
    let zone = match time {
        Time::Zone(zone) => Some(zone),
        _ => None,
    };
    let read = pyarrow(file, zone);
    let mut names = vec!["ts", "time"];
    names.extend(columns.iter().map(|(name, _, _)| *name));
    assert_eq!(read["columns"], serde_json::json!(names));
    let types = &read["types"];
    assert_eq!(types["ts"], "int64");
    let time_type = if matches!(time, Time::Utc) {
        "timestamp[ms, tz=UTC]"
    } else {
        "timestamp[ms]"
    };
    assert_eq!(types["time"], time_type);
    let mut units = serde_json::Map::new();
    for (name, ty, unit) in columns {
        assert_eq!(types[*name], *ty, "type of {name}");
        units.insert((*name).to_owned(), Json::String((*unit).to_owned()));
    }
    let metadata = &read["metadata"];
    let stored_units: Json =
        serde_json::from_str(metadata["mesura.units"].as_str().expect("mesura.units")).expect("units");
    assert_eq!(stored_units, Json::Object(units));
    assert_eq!(metadata["mesura.device"], "p1");
    assert_eq!(
        metadata["mesura.time"],
        if matches!(time, Time::Utc) { "utc" } else { "local" }
    );

    let conn = rusqlite::Connection::open(db).expect("db");
    let select: Vec<String> = columns.iter().map(|(name, _, _)| format!("\"{name}\"")).collect();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT ts, {} FROM {table} WHERE ts >= ?1 AND ts < ?2 ORDER BY ts",
            select.join(", ")
        ))
        .expect("select");
    let want: Vec<Vec<Value>> = stmt
        .query_map([from, to], |r| {
            (0..=columns.len()).map(|i| r.get::<_, Value>(i)).collect()
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert!(!want.is_empty(), "the window holds rows");
    assert_eq!(read["rows"], want.len());
    let data = &read["data"];
    let column = |name: &str| data[name].as_array().unwrap_or_else(|| panic!("column {name}")).clone();
    let ts = column("ts");
    let times = column("time");
    let values: BTreeMap<&str, Vec<Json>> = columns.iter().map(|(n, _, _)| (*n, column(n))).collect();
    for (i, row) in want.iter().enumerate() {
        let Value::Integer(at) = row[0] else {
            panic!("ts {:?}", row[0])
        };
        assert_eq!(ts[i], at, "ts of row {i}");
        let offset_ms = match time {
            Time::Utc => 0,
            Time::HereLocal => {
                i64::from(
                    chrono::TimeZone::timestamp_opt(&chrono::Local, at, 0)
                        .single()
                        .expect("local")
                        .offset()
                        .local_minus_utc(),
                ) * 1000
            }
            Time::Zone(_) => read["offsets_ms"][i].as_i64().expect("offset"),
        };
        assert_eq!(times[i], at * 1000 + offset_ms, "time of row {i} (ts {at})");
        for (c, (name, _, _)) in columns.iter().enumerate() {
            let got = &values[name][i];
            match &row[c + 1] {
                Value::Null => assert!(got.is_null(), "{name} at {at}: {got} for NULL"),
                // The double's bits (parquet_compare.py): an exact comparison.
                Value::Real(f) => assert_eq!(
                    got.as_i64().map(|b| f64::from_bits(b as u64)),
                    Some(*f),
                    "{name} at {at}"
                ),
                Value::Integer(n) => assert_eq!(got.as_i64(), Some(*n), "{name} at {at}"),
                Value::Text(t) => assert_eq!(got.as_str(), Some(t.as_str()), "{name} at {at}"),
                Value::Blob(_) => panic!("no blobs here"),
            }
        }
    }
    want.len()
}

const RAW: &[(&str, &str, &str)] = &[
    ("energy_delivered_tariff1", "double", "kWh"),
    ("power_delivered", "double", "W"),
    ("tariff", "string", ""),
];
const FIVE_MINUTES: &[(&str, &str, &str)] = &[
    ("samples", "int64", ""),
    ("energy_delivered_tariff1", "double", "kWh"),
    ("power_delivered_mean", "double", "W"),
    ("power_delivered_min", "double", "W"),
    ("power_delivered_max", "double", "W"),
    ("tariff", "string", ""),
];

fn mesura_export(config: &Path, args: &[&str], zone: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mesura"))
        .env("TZ", zone)
        .args(["export", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("mesura export")
}

#[cfg(feature = "parquet")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_exports_read_by_pyarrow_hold_what_sqlite_holds() {
    let setup = Setup::new("backends:\n  sqlite: {}\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n");
    let db = setup.db_path();
    let start = chrono::Utc::now().timestamp() - ROWS - 3_600;
    fill(&db, start);
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let addr = daemon.api_addr().expect("api");
    let client = reqwest::Client::new();
    let (from, to) = (start + 5, start + ROWS - 5);

    // Raw rows in UTC over the API: two row groups.
    let response = client
        .get(format!(
            "http://{addr}/api/export?device=p1&from={from}&to={to}&format=parquet"
        ))
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/vnd.apache.parquet");
    assert_eq!(
        response.headers()["content-disposition"],
        "attachment; filename=\"p1.parquet\""
    );
    let file = setup.dir.path().join("api-raw.parquet");
    std::fs::write(&file, response.bytes().await.expect("body")).expect("write");
    let rows = compare(&file, &db, "p1", RAW, from, to, Time::Utc);
    assert_eq!(rows as i64, ROWS - 10);
    assert_eq!(pyarrow(&file, None)["row_groups"], 2);

    // 5-minute rows in local time over the API (the daemon's zone is this process's).
    let response = client
        .get(format!(
            "http://{addr}/api/export?device=p1&from={from}&to={to}&resolution=5m&time=local&format=parquet"
        ))
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 200);
    let file = setup.dir.path().join("api-5m.parquet");
    std::fs::write(&file, response.bytes().await.expect("body")).expect("write");
    compare(&file, &db, "p1_5m", FIVE_MINUTES, from, to, Time::HereLocal);

    // An unknown format is a JSON 400 before anything is sent.
    let response = client
        .get(format!("http://{addr}/api/export?device=p1&format=xlsx"))
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 400);
    let error: Json = response.json().await.expect("json");
    assert_eq!(error["error"], "format: `xlsx` is neither `csv` nor `parquet`");
    daemon.shutdown().await;

    // From the command line: raw rows of two metrics in Amsterdam's wall time (the
    // offsets from Python's zoneinfo), then 5-minute rows in UTC.
    let out = setup.dir.path().join("cli-raw.parquet");
    let (from_s, to_s) = (from.to_string(), to.to_string());
    let done = mesura_export(
        &setup.config_path(),
        &[
            "--device",
            "p1",
            "--metric",
            "power_delivered",
            "--metric",
            "tariff",
            "--time",
            "local",
            "--format",
            "parquet",
            "--from",
            &from_s,
            "--to",
            &to_s,
            "--out",
            out.to_str().expect("path"),
        ],
        "Europe/Amsterdam",
    );
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(
        String::from_utf8_lossy(&done.stderr),
        format!("{} rows written to {}\n", ROWS - 10, out.display())
    );
    compare(
        &out,
        &db,
        "p1",
        &[RAW[1], RAW[2]],
        from,
        to,
        Time::Zone("Europe/Amsterdam"),
    );

    let out = setup.dir.path().join("cli-5m.parquet");
    let done = mesura_export(
        &setup.config_path(),
        &[
            "--device",
            "p1",
            "--resolution",
            "5m",
            "--format",
            "parquet",
            "--from",
            &from_s,
            "--to",
            &to_s,
            "--out",
            out.to_str().expect("path"),
        ],
        "UTC",
    );
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    compare(&out, &db, "p1_5m", FIVE_MINUTES, from, to, Time::Utc);

    // An unknown format is an error exit that says what is wrong, and writes nothing.
    let out = setup.dir.path().join("never.xlsx");
    let failed = mesura_export(
        &setup.config_path(),
        &[
            "--device",
            "p1",
            "--format",
            "xlsx",
            "--out",
            out.to_str().expect("path"),
        ],
        "UTC",
    );
    assert!(!failed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&failed.stderr),
        "error: --format: `xlsx` is neither `csv` nor `parquet`\n"
    );
    assert!(!out.exists());
}

#[cfg(not(feature = "parquet"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_feature_parquet_is_a_clear_error() {
    let setup = Setup::new("backends:\n  sqlite: {}\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n");
    let db = setup.db_path();
    fill(&db, chrono::Utc::now().timestamp() - ROWS);
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let addr = daemon.api_addr().expect("api");
    let response = reqwest::get(format!("http://{addr}/api/export?device=p1&format=parquet"))
        .await
        .expect("export");
    assert_eq!(response.status(), 400);
    let error: Json = response.json().await.expect("json");
    assert_eq!(
        error["error"],
        "format: `parquet` is not built into this mesura (it was built without the cargo feature `parquet`)"
    );
    daemon.shutdown().await;
    let failed = mesura_export(&setup.config_path(), &["--device", "p1", "--format", "parquet"], "UTC");
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("built without the cargo feature `parquet`"));
}
