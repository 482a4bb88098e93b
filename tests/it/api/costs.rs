//! `/api/costs` against a running daemon: the daemon's cost job costs a meter with
//! a `tariff:` from its stored rows, and the API's sums agree with the table.

use std::time::Duration;

use rusqlite::{params, Connection};

use crate::support::api::{get, json};
use crate::support::Setup;

const BASE: &str =
    "backends:\n  sqlite:\n    flush_interval: 100ms\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n";

/// Three hours of rows before the daemon starts, up to `end` (a quarter hour's
/// start) inclusive: 2 kW drawn, 0.5 kW returned.
fn history(db: &std::path::Path, end: i64) -> i64 {
    std::fs::create_dir_all(db.parent().expect("data dir")).expect("data dir");
    let conn = Connection::open(db).expect("open");
    conn.execute_batch(
        "CREATE TABLE meter (ts INTEGER PRIMARY KEY, energy_delivered_tariff1 REAL, energy_delivered_tariff2 REAL,
                             energy_returned_tariff1 REAL, energy_returned_tariff2 REAL);",
    )
    .expect("table");
    let from = end - 3 * 3600;
    let tx = conn.unchecked_transaction().expect("tx");
    for t in (from..=end).step_by(10) {
        let h = (t - from) as f64 / 3600.0;
        tx.execute(
            "INSERT INTO meter VALUES (?1, ?2, 500.0, ?3, 20.0)",
            params![t, 100.0 + 2.0 * h, 10.0 + 0.5 * h],
        )
        .expect("row");
    }
    tx.commit().expect("commit");
    from
}

fn cost_rows(db: &std::path::Path) -> i64 {
    Connection::open(db)
        .and_then(|c| {
            c.query_row(
                "SELECT count(*) FROM meter_cost WHERE carrier = 'electricity'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_costs_a_meter_and_the_api_sums_it() {
    let setup = Setup::new(BASE);
    setup.device(
        "meter",
        "type: simulated\nprofile: electricity\npoll_interval: 1s\ntariff:\n  fixed_price: 0.25\n  vat_percent: 21\n  slot: 15m\n  daily_fixed: 0.5\n",
    );
    // The history ends on a quarter hour: the slot after it closes only with the
    // simulated meter's own rows (another counter), and is left out below.
    let end = (chrono::Utc::now().timestamp() - 60).div_euclid(900) * 900;
    let from = history(&setup.db_path(), end);
    let daemon = setup.start().await;
    let addr = daemon.api_addr().expect("the API runs");
    // The first run is at start: the history's 12 quarter hours.
    let start = tokio::time::Instant::now();
    while cost_rows(&setup.db_path()) < 12 {
        assert!(start.elapsed() < Duration::from_secs(20), "no cost rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let conn = Connection::open(setup.db_path()).expect("open");
    let (kwh, net, slots, price): (f64, f64, i64, f64) = conn
        .query_row(
            "SELECT sum(kwh), sum(cost) - sum(credit), count(*), max(price) FROM meter_cost WHERE carrier = 'electricity' AND ts < ?1",
            [end],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("sums");
    assert!((price - 0.25 * 1.21).abs() < 1e-12, "{price}");
    // Whole quarter hours of 2 kW: 0.5 kWh each.
    assert_eq!(slots, 12);
    assert!((kwh - 0.5 * 12.0).abs() < 1e-6, "{kwh} over {slots} slots");
    let fixed: f64 = conn
        .query_row("SELECT sum(cost) FROM meter_cost WHERE carrier = 'fixed'", [], |r| {
            r.get(0)
        })
        .expect("fixed");
    assert!(fixed >= 0.5 * 1.21 - 1e-9, "{fixed}");

    let to = end;
    for group in ["day", "month"] {
        let (code, body) = get(
            addr,
            &format!("/api/costs?device=meter&from={}&to={to}&group={group}", from - 86_400),
            None,
        )
        .await;
        assert_eq!(code, 200, "{body}");
        let answer = json(&body);
        let periods = answer["periods"].as_array().expect("periods");
        assert!(!periods.is_empty(), "{body}");
        let api_kwh: f64 = periods.iter().filter_map(|p| p["electricity"]["kwh"].as_f64()).sum();
        let api_fixed: f64 = periods.iter().filter_map(|p| p["fixed"].as_f64()).sum();
        assert!((api_kwh - kwh).abs() < 1e-5, "{group}: {api_kwh} vs {kwh}");
        let total = answer["total"].as_f64().expect("total");
        assert!(
            (total - (net + api_fixed)).abs() < 1e-5,
            "{group}: {total} vs {net} + {api_fixed}"
        );
        assert_eq!(answer["group"], group);
    }

    for (query, code) in [
        ("/api/costs", 400),
        ("/api/costs?device=nope", 404),
        ("/api/costs?device=meter&group=week", 400),
        ("/api/costs?device=meter&from=yesterday", 400),
        ("/api/costs?device=meter&from=10&to=5", 400),
    ] {
        let (got, body) = get(addr, query, None).await;
        assert_eq!(got, code, "{query}: {body}");
        assert!(json(&body)["error"].is_string(), "{query}: {body}");
    }
    daemon.shutdown().await;
}
