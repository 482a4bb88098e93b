//! The `prices` device through a real daemon, against a local server replaying
//! recorded ENTSO-E answers (tests/fixtures/prices/SOURCES.md): the slots land in
//! SQLite at their own start, and "no matching data" stores nothing.

use std::time::{Duration, Instant};

use crate::support::http_server::{fixture, Canned, ManualClock, Server};
use crate::support::{no_env, Setup};
use mesura::config::Config;
use mesura::daemon::app::Daemon;

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

fn query(db: &std::path::Path, sql: &str) -> Option<f64> {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row(sql, [], |r| r.get::<_, f64>(0)))
        .ok()
}

fn setup(url: &str) -> Setup {
    // Retention off: the recorded days are in 2024, far past `raw`.
    let setup = Setup::new(
        "backends:\n  sqlite:\n    flush_interval: 100ms\nwatch:\n  enabled: false\nretention:\n  enabled: false\n",
    );
    setup.device(
        "prices",
        &format!("type: prices\nsource: entsoe\nzone: BE\ntoken: test-token\nbase_url: {url}\npoll_interval: 1s\n"),
    );
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_day_ahead_prices_land_in_sqlite_at_their_slot_start() {
    let body = fixture("prices/entsoe_BE_60M_15M_mix.xml");
    let server = Server::start(move |_| Canned::json(body.clone()).header("Content-Type", "text/xml")).await;
    let setup = setup(&server.url);
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    // 14:00 CEST on 2024-10-07: after fetch_at, so today and tomorrow are asked for.
    let clock = ManualClock::at(
        chrono::DateTime::parse_from_rfc3339("2024-10-07T12:00:00Z")
            .expect("t")
            .to_utc(),
    );
    let daemon = Daemon::start(config, clock).await.expect("start");
    let db = setup.db_path();
    // 2 days of quarter-hours and 1 of hours (the answer's three days).
    wait_for("the slots", || {
        query(&db, "SELECT count(price) FROM prices") == Some(216.0)
    })
    .await;
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "one request for today and tomorrow");
    let path = requests[0].target.clone();
    assert_eq!(requests[0].path(), "/api");
    for part in [
        "documentType=A44",
        "in_Domain=10YBE----------2",
        "securityToken=test-token",
        "periodStart=202410062200",
        "periodEnd=202410082200",
    ] {
        assert!(path.contains(part), "{path}");
    }
    // A quarter-hour of 2024-10-06 and an hour of 2024-10-08, at their starts.
    let at = |ts: &str, col: &str| {
        let t = chrono::DateTime::parse_from_rfc3339(ts).expect("t").timestamp();
        query(&db, &format!("SELECT {col} FROM prices WHERE ts = {t}"))
    };
    assert_eq!(at("2024-10-05T22:15:00Z", "price_resolution"), Some(900.0));
    assert_eq!(at("2024-10-08T21:00:00Z", "price_resolution"), Some(3600.0));
    assert!(
        at("2024-10-08T21:00:00Z", "price").is_some_and(|p| p.abs() < 1.0),
        "EUR/kWh, not EUR/MWh"
    );
    assert_eq!(
        at("2024-10-08T21:15:00Z", "price"),
        None,
        "no quarter-hours on an hourly day"
    );
    // Both days are complete: later polls ask for nothing more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(server.requests().len(), 1);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_data_stores_nothing_and_is_reported() {
    let body = fixture("prices/entsoe_acknowledgement_no_data.xml");
    let server = Server::start(move |_| Canned::json(body.clone())).await;
    let setup = setup(&server.url);
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    let clock = ManualClock::at(
        chrono::DateTime::parse_from_rfc3339("2024-10-07T12:00:00Z")
            .expect("t")
            .to_utc(),
    );
    let daemon = Daemon::start(config, clock).await.expect("start");
    wait_for("a request", || !server.requests().is_empty()).await;
    let status = daemon.status().clone();
    wait_for("the error", || {
        status
            .devices()
            .iter()
            .find(|(id, _)| id.as_ref() == "prices")
            .and_then(|(_, d)| d.last_error.clone())
            .is_some_and(|e| e.contains("no complete prices for today"))
    })
    .await;
    assert_eq!(
        query(&setup.db_path(), "SELECT count(*) FROM prices").unwrap_or(0.0),
        0.0
    );
    daemon.shutdown().await;
}
