//! The Belgian capacity tariff end to end: a P1 dongle (a local TCP server) sends a
//! Landis+Gyr E360's telegram with its real `0-0:98.1.0` history again and again,
//! then the same meter a month on. The months land in `p1_monthly_peaks` once (a
//! trigger counts every row written), `capacity_rolling_average` is stored once per
//! change, and `/api/capacity` gives the average computed here by hand.

use std::time::{Duration, Instant};

use crate::support::dsmr::load;
use crate::support::{no_env, Setup};
use mesura::config::Config;
use mesura::daemon::app::Daemon;
use mesura::host::clock::JumpingClock;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const FIXTURE: &str = "dsmr5b_landisgyr_e360_2026_history_placeholder.txt";

/// The fixture as the meter sends it (CRLF line ends).
fn june() -> String {
    String::from_utf8(load(FIXTURE))
        .expect("text")
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
}

/// The same meter after June closed: a tenth entry (June, 3.440 kW) and July's
/// running peak of 2.100 kW.
fn july() -> String {
    june()
        .replace("0-0:98.1.0(9)", "0-0:98.1.0(10)")
        .replace(
            "(260511141500S)(02.438*kW)",
            "(260511141500S)(02.438*kW)(260701000000S)(260606101500S)(03.440*kW)",
        )
        .replace(
            "1-0:1.6.0(260606101500S)(03.440*kW)",
            "1-0:1.6.0(260702081500S)(02.100*kW)",
        )
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(db: &std::path::Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
        .unwrap_or(-1)
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = crate::support::api::get(addr, path, None).await;
    (code, crate::support::api::json(&body))
}

/// The capacity tariff's average, by the VREG rule: every month at least 2.5 kW.
fn average(peaks_w: &[f64]) -> f64 {
    peaks_w.iter().map(|p| p.max(2500.0)).sum::<f64>() / peaks_w.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peak_history_is_stored_once_and_averaged() {
    let setup = Setup::new(
        "backends:\n  sqlite:\n    flush_interval: 100ms\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n",
    );
    // Every row the backend writes into the peaks table is counted.
    let db = setup.db_path();
    {
        std::fs::create_dir_all(db.parent().expect("data dir")).expect("data dir");
        let conn = rusqlite::Connection::open(&db).expect("db");
        conn.execute_batch(
            "CREATE TABLE p1_monthly_peaks (month TEXT PRIMARY KEY NOT NULL, peak_w REAL NOT NULL, peak_at INTEGER) WITHOUT ROWID;
             CREATE TABLE peak_writes (month TEXT);
             CREATE TRIGGER peak_insert AFTER INSERT ON p1_monthly_peaks BEGIN INSERT INTO peak_writes VALUES (new.month); END;
             CREATE TRIGGER peak_update AFTER UPDATE ON p1_monthly_peaks BEGIN INSERT INTO peak_writes VALUES (new.month); END;",
        )
        .expect("trigger");
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (next, mut next_rx) = tokio::sync::mpsc::channel::<()>(1);
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        for _ in 0..5 {
            socket.write_all(june().as_bytes()).await.expect("write");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = next_rx.recv().await;
        for _ in 0..5 {
            socket.write_all(july().as_bytes()).await.expect("write");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    setup.device(
        "p1",
        &format!("type: dsmr\nhost: 127.0.0.1\nport: {port}\npoll_interval: 0s\n"),
    );
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    // The host clock steps a month on between the two histories, as it does for a
    // real meter: SQLite keeps one row per device per second, so two averages
    // stamped in the same second would be one row (the second counted as merged).
    let clock = std::sync::Arc::new(JumpingClock::starting_at(chrono::Utc::now()));
    let daemon = Daemon::start(config, clock.clone()).await.expect("start");
    let addr = daemon.api_addr().expect("the API runs");

    // June: nine closed months, July 2025 without a peak time.
    wait_for("nine months", || {
        count(&db, "SELECT count(*) FROM p1_monthly_peaks") == 9
    })
    .await;
    let first = average(&[
        0.0, 4122.0, 3933.0, 4699.0, 4556.0, 3884.0, 3597.0, 3298.0, 2438.0, 3440.0,
    ]);
    wait_for("the June average", || {
        count(&db, "SELECT count(capacity_rolling_average) FROM p1") == 1
    })
    .await;
    let (code, body) = get(addr, "/api/capacity?device=p1").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["months"].as_array().map(Vec::len), Some(9), "{body}");
    assert_eq!(
        body["months"][0],
        serde_json::json!({"month": "2025-07", "peak_w": 0.0, "peak_at": null})
    );
    assert_eq!(body["months"][1]["peak_at"], "2025-10-29T14:00:00Z", "{body}");
    assert_eq!(body["running_month"]["month"], "2026-06", "{body}");
    assert_eq!(body["running_month"]["peak_w"], 3440.0, "{body}");
    assert_eq!(body["minimum_w"], 2500.0, "{body}");
    assert_eq!(body["rolling_average_months"], 10, "{body}");
    let got = body["rolling_average_w"].as_f64().expect("an average");
    assert!((got - first).abs() < 1e-6, "{got} vs {first}");

    // July: June closes; July 2025 leaves the window but stays in the table.
    clock.jump(chrono::TimeDelta::days(31));
    next.send(()).await.expect("server");
    wait_for("June closed", || {
        count(&db, "SELECT count(*) FROM p1_monthly_peaks") == 10
    })
    .await;
    wait_for("the July average", || {
        count(&db, "SELECT count(capacity_rolling_average) FROM p1") == 2
    })
    .await;
    let second = average(&[
        4122.0, 3933.0, 4699.0, 4556.0, 3884.0, 3597.0, 3298.0, 2438.0, 3440.0, 2100.0,
    ]);
    let (_, body) = get(addr, "/api/capacity?device=p1").await;
    assert_eq!(body["months"].as_array().map(Vec::len), Some(10), "{body}");
    assert_eq!(body["running_month"]["month"], "2026-07", "{body}");
    let got = body["rolling_average_w"].as_f64().expect("an average");
    assert!((got - second).abs() < 1e-6, "{got} vs {second}");
    let stored: f64 = rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.query_row(
                "SELECT capacity_rolling_average FROM p1 WHERE capacity_rolling_average IS NOT NULL ORDER BY ts DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
        })
        .expect("stored average");
    assert!((stored - second).abs() < 1e-6);

    // Errors are JSON, like every endpoint's.
    let (code, body) = get(addr, "/api/capacity").await;
    assert_eq!((code, body["error"].as_str()), (400, Some("`device` is required")));
    let (code, body) = get(addr, "/api/capacity?device=nope").await;
    assert_eq!(code, 404, "{body}");

    let summary = daemon.shutdown().await;
    server.abort();
    assert_eq!(summary.dropped.values().sum::<u64>(), 0);
    // Ten telegrams, two histories: each month written once.
    assert_eq!(count(&db, "SELECT count(*) FROM peak_writes"), 10);
    assert_eq!(count(&db, "SELECT count(DISTINCT month) FROM peak_writes"), 10);
}
