//! A heat pump's COP through a running daemon: the heat meter's and the sub-meter's
//! rows are already in the SQLite file (three hours of them, one with a gap); the
//! `derived` device reads them and its figures land in its own table beside them.

use std::time::{Duration, Instant};

use crate::support::{no_env, Setup};
use mesura::config::Config;
use mesura::daemon::app::Daemon;

fn cop_rows(db: &std::path::Path) -> Vec<(i64, f64)> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT ts, ratio FROM cop ORDER BY ts") else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_cop_from_the_stored_counters() {
    let setup = Setup::new("backends:\n  sqlite:\n    flush_interval: 100ms\nwatch:\n  enabled: false\n");
    let db = setup.db_path();
    std::fs::create_dir_all(db.parent().expect("data dir")).expect("data dir");
    // The hour that began last, from now: the test never depends on the date.
    let hour = chrono::Utc::now().timestamp().div_euclid(3600) * 3600;
    {
        let mut conn = rusqlite::Connection::open(&db).expect("db");
        let conn = conn.transaction().expect("one commit");
        conn.execute_batch(
            "CREATE TABLE metrics (device TEXT NOT NULL, metric TEXT NOT NULL, unit TEXT NOT NULL, kind TEXT NOT NULL, PRIMARY KEY (device, metric)) WITHOUT ROWID;
             INSERT INTO metrics VALUES ('heat', 'heat_energy', 'kWh', 'counter'), ('heatpump', 'energy_delivered', 'kWh', 'counter');
             CREATE TABLE heat (ts INTEGER PRIMARY KEY NOT NULL, heat_energy REAL);
             CREATE TABLE heatpump (ts INTEGER PRIMARY KEY NOT NULL, energy_delivered REAL);",
        )
        .expect("tables");
        // Every minute for three hours and a bit: 9 kWh of heat and 3 kWh of
        // electricity an hour, except 40 minutes without the sub-meter two hours ago.
        let start = hour - 3 * 3600 - 300;
        for i in 0..(3 * 60 + 6) {
            let ts = start + i * 60;
            let h = (ts - start) as f64 / 3600.0;
            conn.execute("INSERT INTO heat VALUES (?1, ?2)", (ts, 1000.0 + 9.0 * h))
                .expect("row");
            if !(hour - 2 * 3600 + 600..hour - 3600 - 600).contains(&ts) {
                conn.execute("INSERT INTO heatpump VALUES (?1, ?2)", (ts, 500.0 + 3.0 * h))
                    .expect("row");
            }
        }
        conn.commit().expect("commit");
    }
    setup.device(
        "cop",
        "type: derived\nnumerator: {device: heat, metric: heat_energy}\ndenominator: {device: heatpump, metric: energy_delivered}\nmax_gap: 2m\nbackfill: 3h\npoll_interval: 1s\n",
    );
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The first and the last closed hour; the one with the gap gives nothing. The
    // last closes only `max_gap` after the hour: until then there are two or one.
    let mut rows = cop_rows(&db);
    while rows.is_empty() {
        assert!(Instant::now() < deadline, "no COP stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
        rows = cop_rows(&db);
    }
    daemon.shutdown().await;
    let rows = cop_rows(&db);
    assert!(!rows.is_empty() && rows.len() <= 2, "{rows:?}");
    assert_eq!(rows[0].0, hour - 3 * 3600, "{rows:?}");
    assert!(
        rows.iter().all(|(ts, _)| *ts != hour - 2 * 3600),
        "the gap's hour has no figure: {rows:?}"
    );
    for (_, cop) in &rows {
        assert!((cop - 3.0).abs() < 1e-9, "{rows:?}");
    }
}
