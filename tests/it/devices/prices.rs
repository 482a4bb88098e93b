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
    setup_with(&format!(
        "source: entsoe\nzone: BE\ntoken: test-token\nbase_url: {url}\n"
    ))
}

fn setup_with(keys: &str) -> Setup {
    // Retention off: the recorded days are in 2024 and 2025, far past `raw`.
    let setup = Setup::new(
        "backends:\n  sqlite:\n    flush_interval: 100ms\nwatch:\n  enabled: false\nretention:\n  enabled: false\n",
    );
    setup.device("prices", &format!("type: prices\npoll_interval: 1s\n{keys}"));
    setup
}

fn status(daemon: &Daemon) -> Option<mesura::daemon::live::DeviceStatus> {
    daemon
        .status()
        .devices()
        .into_iter()
        .find(|(id, _)| id.as_ref() == "prices")
        .map(|(_, s)| s)
}

fn clock_at(t: &str) -> std::sync::Arc<ManualClock> {
    ManualClock::at(chrono::DateTime::parse_from_rfc3339(t).expect("t").to_utc())
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
    wait_for("the error", || {
        status(&daemon)
            .and_then(|d| d.last_error)
            .is_some_and(|e| e.contains("no complete prices for today"))
    })
    .await;
    assert_eq!(
        query(&setup.db_path(), "SELECT count(*) FROM prices").unwrap_or(0.0),
        0.0
    );
    daemon.shutdown().await;
}

/// Today's prices are there, tomorrow's are not published: today's slots are
/// stored, and later polls ask for tomorrow alone, getting "No matching data".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_tomorrow_is_asked_for_again_and_today_is_kept() {
    let day = fixture("prices/entsoe_BE_60M.xml");
    let none = fixture("prices/entsoe_acknowledgement_no_data.xml");
    let server = Server::start(move |r| {
        // The recorded day is 2024-10-08; a request that starts on the 9th gets
        // the acknowledgement.
        if r.target.contains("periodStart=202410082200") {
            Canned::json(none.clone())
        } else {
            Canned::json(day.clone())
        }
    })
    .await;
    let setup = setup(&server.url);
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    // 14:00 CEST on 2024-10-08.
    let daemon = Daemon::start(config, clock_at("2024-10-08T12:00:00Z"))
        .await
        .expect("start");
    let db = setup.db_path();
    wait_for("today's slots", || {
        query(&db, "SELECT count(price) FROM prices") == Some(24.0)
    })
    .await;
    wait_for("tomorrow asked for again", || server.requests().len() >= 3).await;
    let requests = server.requests();
    assert!(
        requests[0].target.contains("periodStart=202410072200"),
        "{:?}",
        requests[0].target
    );
    assert!(
        requests[0].target.contains("periodEnd=202410092200"),
        "{:?}",
        requests[0].target
    );
    for r in &requests[1..] {
        assert!(r.target.contains("periodStart=202410082200"), "{:?}", r.target);
    }
    // Not an error: tomorrow's prices are simply not published yet.
    let s = status(&daemon).expect("status");
    assert_eq!(s.polls_failed, 0, "{:?}", s.last_error);
    assert_eq!(s.readings, 48, "24 slots, price and price_resolution, sent once");
    assert_eq!(query(&db, "SELECT count(*) FROM prices"), Some(24.0));
    daemon.shutdown().await;
}

/// EnergyZero, token-free: one request per market day (its `date` parameter),
/// each answer three days long; a slot is sent once however often it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn energyzero_with_vat_sends_each_slot_once() {
    let body = fixture("prices/energyzero_electricity_quarter_response.json");
    let server = Server::start(move |_| Canned::json(body.clone())).await;
    let setup = setup_with(&format!("source: energyzero\nvat: true\nbase_url: {}\n", server.url));
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    // 15:00 CET on 2025-12-16: today and tomorrow.
    let daemon = Daemon::start(config, clock_at("2025-12-16T14:00:00Z"))
        .await
        .expect("start");
    let db = setup.db_path();
    wait_for("the slots", || {
        query(&db, "SELECT count(price) FROM prices") == Some(288.0)
    })
    .await;
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0].path(), "/public/v1/prices");
    assert!(
        requests[0].target.contains("date=16-12-2025"),
        "{:?}",
        requests[0].target
    );
    assert!(
        requests[1].target.contains("date=17-12-2025"),
        "{:?}",
        requests[1].target
    );
    assert!(
        requests[0].target.contains("interval=INTERVAL_QUARTER"),
        "{:?}",
        requests[0].target
    );
    let s = status(&daemon).expect("status");
    assert_eq!(
        s.readings,
        2 * 288,
        "each slot once, though both answers carry all three days"
    );
    // The first quarter-hour with VAT, as the file shows it under base_with_vat.
    let first = chrono::DateTime::parse_from_rfc3339("2025-12-15T23:00:00Z")
        .expect("t")
        .timestamp();
    let price = query(&db, &format!("SELECT price FROM prices WHERE ts = {first}")).expect("a price");
    assert!((price - 0.07994 * 1.21).abs() < 1e-4, "{price}");
    daemon.shutdown().await;
}
