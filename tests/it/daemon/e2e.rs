//! Simulated devices → router → SQLite + CSV, on tokio's paused clock so the number
//! of polls, and so of rows, is known exactly.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{no_env, sqlite_rows, Setup};
use chrono::{DateTime, Utc};
use mesura::config::Config;
use mesura::daemon::app::Daemon;
use mesura::host::clock::MonotonicClock;

const BASE: &str = "backends:\n  sqlite:\n    flush_interval: 5s\n  csv: {}\n";

fn clock(start: DateTime<Utc>) -> Arc<MonotonicClock> {
    Arc::new(MonotonicClock::starting_at(start))
}

#[tokio::test(start_paused = true)]
async fn every_reading_produced_is_stored_after_a_clean_shutdown() {
    let setup = Setup::new(BASE);
    setup
        .device(
            "electricity",
            "type: simulated\nprofile: electricity\npoll_interval: 1s\n",
        )
        .device("gas", "type: simulated\nprofile: gas\npoll_interval: 1s\n")
        .device(
            "living_room",
            "type: simulated\nprofile: climate\npoll_interval: 10s\nbackends: [csv]\n",
        );
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);

    let start = crate::support::noon_yesterday();
    let daemon = Daemon::start(config, clock(start)).await.expect("start");
    // Ticks at 0, 1, …, 60 s: 61 polls of the 1 s devices, 7 of the 10 s one.
    tokio::time::sleep(Duration::from_millis(60_500)).await;
    let summary = daemon.shutdown().await;

    assert_eq!(summary.polls["electricity"], 61);
    assert_eq!(summary.polls["gas"], 61);
    assert_eq!(summary.polls["living_room"], 7);
    // 8 metrics, and a `_lifetime` reading beside each of the 4 energy counters
    // (docs/counters.md); gas: its counter and its lifetime.
    assert_eq!(summary.readings["electricity"], 61 * (8 + 4));
    // sqlite gets electricity + gas; csv gets all three.
    assert_eq!(summary.written["sqlite"], 61 * 12 + 61 * 2);
    assert_eq!(summary.written["csv"], 61 * 12 + 61 * 2 + 7 * 2);
    assert_eq!(summary.dropped.values().sum::<u64>(), 0);

    let db = setup.db_path();
    assert_eq!(sqlite_rows(&db, "electricity"), 61);
    assert_eq!(sqlite_rows(&db, "gas"), 61);
    assert_eq!(sqlite_rows(&db, "living_room"), 0, "living_room is routed to csv only");
    assert_eq!(setup.csv_rows("electricity"), 61);
    assert_eq!(setup.csv_rows("gas"), 61);
    assert_eq!(setup.csv_rows("living_room"), 7);

    // The Grafana query shape works: numeric ts, one column per metric, counters monotonic.
    let conn = rusqlite::Connection::open(&db).expect("db");
    let rows: Vec<(i64, f64, f64)> = conn
        .prepare("SELECT ts, power_delivered, energy_delivered_tariff2 FROM electricity ORDER BY ts")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("values");
    let start = start.timestamp();
    assert_eq!(rows.first().map(|r| r.0), Some(start));
    assert_eq!(rows.last().map(|r| r.0), Some(start + 60));
    assert!(
        rows.windows(2).all(|w| w[1].2 >= w[0].2),
        "tariff 2 counter went backwards"
    );
    let units: Vec<(String, String)> = conn
        .prepare("SELECT metric, unit FROM metrics WHERE device = 'gas' ORDER BY metric")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("values");
    assert_eq!(
        units,
        vec![
            ("gas_delivered".to_string(), "m³".to_string()),
            ("gas_delivered_lifetime".to_string(), "m³".to_string())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_device_opens_its_breaker_and_leaves_the_others_alone() {
    let setup = Setup::new("backends:\n  sqlite: {}\n");
    setup
        .device("good", "type: simulated\nprofile: climate\npoll_interval: 1s\n")
        .device(
            "broken",
            "type: simulated\nprofile: gas\npoll_interval: 1s\nfailure_rate: 1.0\nfailure_threshold: 3\nbreaker_cooldown: 30s\nmax_backoff: 4s\n",
        );
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    let daemon = Daemon::start(config, clock(crate::support::noon_yesterday()))
        .await
        .expect("start");
    tokio::time::sleep(Duration::from_millis(100_500)).await;
    let devices = daemon.status().devices();
    let broken = &devices["broken"];
    assert_eq!(broken.breaker, mesura::daemon::retry::BreakerState::Open);
    // Fail at 0; backoff ≤1 s, ≤2 s; open at the 3rd failure (≤ 3 s); then one probe
    // per 30 s cool-down: 3 + (probes in the remaining ~97 s) = 6 attempts at most.
    assert!(
        (4..=6).contains(&broken.polls_failed),
        "{} attempts: the breaker did not hold them back",
        broken.polls_failed
    );
    assert_eq!(broken.errors_by_kind.get("link"), Some(&broken.polls_failed));
    let summary = daemon.shutdown().await;
    assert_eq!(
        summary.polls["good"], 101,
        "the good device must poll every second throughout"
    );
    assert_eq!(sqlite_rows(&setup.db_path(), "good"), 101);
    assert_eq!(sqlite_rows(&setup.db_path(), "broken"), 0);
}
