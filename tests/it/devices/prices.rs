//! The `prices` device through a real daemon, against a local server replaying
//! recorded ENTSO-E and EnergyZero answers (tests/fixtures/prices/SOURCES.md):
//! the slots land in SQLite at their own start, daylight-saving days included,
//! and "no matching data" stores nothing.

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
    // Both days are complete: the next two polls ask for nothing more.
    let polls = status(&daemon).map_or(0, |d| d.polls_ok + d.polls_failed);
    wait_for("two more polls", || {
        status(&daemon).is_some_and(|d| d.polls_ok + d.polls_failed >= polls + 2)
    })
    .await;
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

fn column(db: &std::path::Path, sql: &str) -> Vec<i64> {
    rusqlite::Connection::open(db)
        .and_then(|c| {
            let mut statement = c.prepare(sql)?;
            let rows = statement.query_map([], |r| r.get::<_, i64>(0))?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// One daylight-saving day as ENTSO-E answered it for DE-LU.
struct DstDay {
    fixture: &'static str,
    /// The daemon's wall clock: that morning, before `fetch_at`, so the day is
    /// "today" and tomorrow is not asked for.
    now: &'static str,
    /// The request's `periodStart` and `periodEnd` for that market day.
    period: (&'static str, &'static str),
    /// The first hour's start (local midnight) in UTC.
    first: &'static str,
    hours: i64,
    /// Slot starts and their prices in EUR/MWh, read off the recorded document.
    prices: &'static [(&'static str, f64)],
}

/// The recorded answer is replayed for the request that asks for that day, and
/// "no matching data" for any other: the day's hours land in SQLite, each at its
/// own UTC start, an hour apart, none missing or doubled around the switch.
async fn a_recorded_dst_day_is_stored_hour_by_hour(day: DstDay) {
    let body = fixture(&format!("prices/{}", day.fixture));
    let none = fixture("prices/entsoe_acknowledgement_no_data.xml");
    let (start, end) = (
        format!("periodStart={}", day.period.0),
        format!("periodEnd={}", day.period.1),
    );
    let server = Server::start(move |r| {
        if r.target.contains(&start) && r.target.contains(&end) {
            Canned::json(body.clone()).header("Content-Type", "text/xml")
        } else {
            Canned::json(none.clone())
        }
    })
    .await;
    let setup = setup_with(&format!(
        "source: entsoe\nzone: DE-LU\ntoken: test-token\nbase_url: {}\n",
        server.url
    ));
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let daemon = Daemon::start(config, clock_at(day.now)).await.expect("start");
    let db = setup.db_path();
    wait_for("the day's hours", || {
        query(&db, "SELECT count(price) FROM prices") == Some(day.hours as f64)
    })
    .await;
    let requests = server.requests();
    assert!(
        requests[0].target.contains("in_Domain=10Y1001A1001A82H"),
        "{:?}",
        requests[0].target
    );
    for r in &requests {
        assert!(
            r.target.contains(&format!("periodStart={}", day.period.0)),
            "{:?}",
            r.target
        );
        assert!(
            r.target.contains(&format!("periodEnd={}", day.period.1)),
            "{:?}",
            r.target
        );
    }
    let first = chrono::DateTime::parse_from_rfc3339(day.first)
        .expect("first")
        .timestamp();
    let expected: Vec<i64> = (0..day.hours).map(|h| first + h * 3600).collect();
    assert_eq!(column(&db, "SELECT ts FROM prices ORDER BY ts"), expected);
    assert_eq!(
        column(&db, "SELECT DISTINCT CAST(price_resolution AS INTEGER) FROM prices"),
        vec![3600],
        "the hourly series (sequence 1), not the quarter-hour one"
    );
    for (at, eur_per_mwh) in day.prices {
        let t = chrono::DateTime::parse_from_rfc3339(at).expect("t").timestamp();
        let price = query(&db, &format!("SELECT price FROM prices WHERE ts = {t}"));
        assert!(
            price.is_some_and(|p| (p - eur_per_mwh / 1000.0).abs() < 1e-9),
            "{at}: {price:?}, not {eur_per_mwh} EUR/MWh"
        );
    }
    let s = status(&daemon).expect("status");
    assert_eq!(s.polls_failed, 0, "{:?}", s.last_error);
    daemon.shutdown().await;
}

/// 2025-03-30, 23 hours: 01:00 CET is followed by 03:00 CEST (00:00Z, 01:00Z).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_23_hour_day_lands_as_23_hours() {
    a_recorded_dst_day_is_stored_hour_by_hour(DstDay {
        fixture: "entsoe_DE_dst_begin_2025-03-30.xml",
        now: "2025-03-30T06:00:00Z",
        period: ("202503292300", "202503302200"),
        first: "2025-03-29T23:00:00Z",
        hours: 23,
        prices: &[
            ("2025-03-29T23:00:00Z", 46.31),
            ("2025-03-30T00:00:00Z", 15.89),
            ("2025-03-30T01:00:00Z", 5.1),
            ("2025-03-30T21:00:00Z", 56.44),
        ],
    })
    .await;
}

/// 2024-10-27, 25 hours: 02:00 local twice, CEST then CET (00:00Z, 01:00Z).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_25_hour_day_lands_as_25_hours() {
    a_recorded_dst_day_is_stored_hour_by_hour(DstDay {
        fixture: "entsoe_DE_dst_end_2024-10-27.xml",
        now: "2024-10-27T07:00:00Z",
        period: ("202410262200", "202410272300"),
        first: "2024-10-26T22:00:00Z",
        hours: 25,
        prices: &[
            ("2024-10-26T22:00:00Z", 92.22),
            ("2024-10-27T00:00:00Z", 82.23),
            ("2024-10-27T01:00:00Z", 80.43),
            ("2024-10-27T22:00:00Z", 102.99),
        ],
    })
    .await;
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
