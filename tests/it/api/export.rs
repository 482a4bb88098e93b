//! `GET /api/export` and `mesura export` on 20,000 stored rows (more than one
//! streamed chunk), read back by an independent reader (Python's csv module) and
//! compared with what SQLite holds.

use std::path::Path;
use std::process::Command;

use crate::support::{no_env, Setup};
use mesura::config::Config;
use mesura::daemon::app::Daemon;

const ROWS: i64 = 20_000;

/// `device`'s table with a gauge, a counter and gaps, the hour before now.
fn fill(db: &Path, start: i64) {
    std::fs::create_dir_all(db.parent().expect("dir")).expect("dir");
    let mut conn = rusqlite::Connection::open(db).expect("db");
    let tx = conn.transaction().expect("tx");
    tx.execute_batch(
        "CREATE TABLE metrics (device TEXT NOT NULL, metric TEXT NOT NULL, unit TEXT NOT NULL, kind TEXT NOT NULL, PRIMARY KEY (device, metric)) WITHOUT ROWID;
         INSERT INTO metrics VALUES ('p1', 'power_delivered', 'W', 'gauge'), ('p1', 'energy_delivered_tariff1', 'kWh', 'counter');
         CREATE TABLE p1 (ts INTEGER PRIMARY KEY NOT NULL, power_delivered REAL, energy_delivered_tariff1 REAL);",
    )
    .expect("tables");
    for i in 0..ROWS {
        let power = if i % 7 == 0 {
            None
        } else {
            Some(100.0 + (i % 500) as f64 * 1.25)
        };
        tx.execute(
            "INSERT INTO p1 VALUES (?1, ?2, ?3)",
            (start + i, power, 1000.0 + i as f64 * 0.001),
        )
        .expect("row");
    }
    tx.commit().expect("commit");
}

/// Count, sum of `column` and its empty cells, as Python's csv module reads the file.
fn python_summary(file: &Path, column: &str) -> (i64, f64, i64) {
    let script = format!(
        "import csv,sys\nrows=list(csv.DictReader(open(sys.argv[1], newline='')))\nvals=[r['{column}'] for r in rows]\nprint(len(rows), sum(float(v) for v in vals if v), sum(1 for v in vals if not v))"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .arg(file)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let parts: Vec<&str> = text.split_whitespace().collect();
    (
        parts[0].parse().expect("count"),
        parts[1].parse().expect("sum"),
        parts[2].parse().expect("empty"),
    )
}

fn sqlite_summary(db: &Path, from: i64, to: i64) -> (i64, f64, i64) {
    let conn = rusqlite::Connection::open(db).expect("db");
    conn.query_row(
        "SELECT count(*), total(power_delivered), count(*) - count(power_delivered) FROM p1 WHERE ts >= ?1 AND ts < ?2",
        [from, to],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .expect("summary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_and_command_line_exports_hold_what_sqlite_holds() {
    let setup = Setup::new("backends:\n  sqlite: {}\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n");
    let db = setup.db_path();
    let start = chrono::Utc::now().timestamp() - 2 * ROWS;
    fill(&db, start);
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let addr = daemon.api_addr().expect("api");
    let client = reqwest::Client::new();
    let (from, to) = (start + 5, start + ROWS - 5);

    let response = client
        .get(format!("http://{addr}/api/export?device=p1&from={from}&to={to}"))
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("type"),
        "text/csv; charset=utf-8"
    );
    let body = response.bytes().await.expect("body");
    let file = setup.dir.path().join("api.csv");
    std::fs::write(&file, &body).expect("write");
    let header = String::from_utf8_lossy(&body[..body.iter().position(|b| *b == b'\n').expect("header")]).into_owned();
    assert_eq!(header, "ts,time,energy_delivered_tariff1 [kWh],power_delivered [W]");
    let (count, sum, empty) = python_summary(&file, "power_delivered [W]");
    let (want_count, want_sum, want_empty) = sqlite_summary(&db, from, to);
    assert_eq!((count, empty), (want_count, want_empty));
    assert!((sum - want_sum).abs() < 1e-6, "{sum} vs {want_sum}");

    // Errors are JSON, said before any row.
    let response = client
        .get(format!("http://{addr}/api/export?device=p1&metric=nope"))
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 404);
    let error: serde_json::Value = response.json().await.expect("json");
    assert_eq!(error["error"], "device `p1` has no metric `nope`");
    let response = client
        .get(format!("http://{addr}/api/export?device=p1&resolution=1h"))
        .send()
        .await
        .expect("export");
    assert_eq!(response.status(), 400);
    daemon.shutdown().await;

    // The same window from the command line, one metric, local time.
    let out = setup.dir.path().join("cli.csv");
    let status = Command::new(env!("CARGO_BIN_EXE_mesura"))
        .args(["export", "--config"])
        .arg(setup.config_path())
        .args(["--device", "p1", "--metric", "power_delivered", "--time", "local"])
        .args(["--from", &from.to_string(), "--to", &to.to_string(), "--out"])
        .arg(&out)
        .output()
        .expect("mesura export");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let (count, sum, empty) = python_summary(&out, "power_delivered [W]");
    assert_eq!((count, empty), (want_count, want_empty));
    assert!((sum - want_sum).abs() < 1e-6, "{sum} vs {want_sum}");
    let text = std::fs::read_to_string(&out).expect("read");
    assert!(text.starts_with("ts,time,power_delivered [W]\n"), "{}", &text[..80]);
    let failed = Command::new(env!("CARGO_BIN_EXE_mesura"))
        .args(["export", "--config"])
        .arg(setup.config_path())
        .args(["--device", "nope"])
        .output()
        .expect("mesura export");
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("no readings of device `nope`"));
}
