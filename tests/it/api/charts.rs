//! What the page's charts and cards read: `/api/readings?resolution=5m` windows
//! agree with the stored rows, `/api/devices` carries the success rate, the last
//! reading's age and today's energy, and `/assets/` answers with an ETag (304 when
//! the browser has it).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::api::{get, json};
use crate::support::{sqlite_rows, Setup};

const BASE: &str =
    "backends:\n  sqlite:\n    flush_interval: 100ms\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n";

/// A GET with extra header lines; the status, the head and the body's length.
async fn head(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, usize) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    (code, head.to_owned(), body.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_devices_and_assets_for_the_page() {
    let setup = Setup::new(BASE);
    setup.device("meter", "type: simulated\nprofile: electricity\npoll_interval: 1s\n");
    let daemon = setup.start().await;
    let addr = daemon.api_addr().expect("the API runs");
    let db = setup.db_path();
    let start = tokio::time::Instant::now();
    while sqlite_rows(&db, "meter") < 4 {
        assert!(start.elapsed() < Duration::from_secs(20), "no rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Windows over the rows stored so far: each window's power is the mean of its
    // rows, its counter the last value.
    let to: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("SELECT max(ts) FROM meter", [], |r| r.get::<_, i64>(0)))
        .expect("max ts")
        + 1;
    let from = to - 3600;
    let (code, body) = get(
        addr,
        &format!("/api/readings?device=meter&metric=power_delivered&from={from}&to={to}&resolution=5m"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let answer = json(&body);
    assert_eq!(answer["resolution"], "5m");
    let expected: Vec<(i64, f64)> = rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.prepare(
                "SELECT (ts / 300) * 300, avg(power_delivered) FROM meter WHERE ts >= ?1 AND ts < ?2 \
                 AND power_delivered IS NOT NULL GROUP BY 1 ORDER BY 1",
            )?
            .query_map([from, to], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
        .expect("windows");
    let got: Vec<(i64, f64)> = answer["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["ts"].as_i64().expect("ts"),
                r["values"]["power_delivered"].as_f64().expect("power"),
            )
        })
        .collect();
    assert!(!got.is_empty(), "{body}");
    assert_eq!(got.len(), expected.len(), "{body}");
    for ((ts, v), (want_ts, want)) in got.iter().zip(&expected) {
        assert_eq!(ts, want_ts);
        assert_eq!(ts % 300, 0);
        assert!((v - want).abs() < 1e-5, "{v} vs {want}");
    }
    let (code, body) = get(addr, "/api/readings?device=meter&resolution=1h", None).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("resolution"), "{body}");

    // The card's facts.
    let (code, body) = get(addr, "/api/devices", None).await;
    assert_eq!(code, 200, "{body}");
    let devices = json(&body);
    let meter = &devices["devices"][0];
    assert_eq!(meter["id"], "meter", "{body}");
    assert_eq!(meter["success_rate"], 1.0, "{body}");
    assert_eq!(meter["costs"], false, "no tariff: {body}");
    let age = meter["last_reading_age_seconds"].as_f64().expect("an age");
    assert!((0.0..30.0).contains(&age), "{body}");
    // Counted since midnight (here: since the meter's first reading, today), from
    // the lifetime series: what the counter rose by, in its unit.
    let counted = &meter["today"]["energy"]["energy_delivered_tariff1"];
    assert_eq!(counted["unit"], "kWh", "{body}");
    let value = counted["value"].as_f64().expect("a value");
    let rose: f64 = rusqlite::Connection::open(&db)
        .and_then(|c| {
            c.query_row(
                "SELECT max(energy_delivered_tariff1_lifetime) - min(energy_delivered_tariff1_lifetime) FROM meter",
                [],
                |r| r.get(0),
            )
        })
        .expect("rise");
    // The API takes the newest value from the live state, which may be a reading
    // ahead of the database: at least what is stored, not far more.
    assert!(value >= rose - 1e-6 && value < rose + 0.01, "{value} vs {rose}");

    // The chart library, cached by the browser.
    let (code, head_text, length) = head(addr, "/assets/uPlot.iife.min.js", "").await;
    assert_eq!(code, 200);
    assert!(length > 40_000, "{length}");
    assert!(
        head_text.contains("cache-control: public, max-age=86400"),
        "{head_text}"
    );
    let etag = head_text
        .lines()
        .find_map(|l| {
            l.split_once(": ")
                .filter(|(k, _)| k.eq_ignore_ascii_case("etag"))
                .map(|(_, v)| v)
        })
        .expect("an etag")
        .trim()
        .to_owned();
    let (code, _, length) = head(addr, "/assets/uPlot.iife.min.js", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!((code, length), (304, 0));
    let (code, head_text, _) = head(addr, "/assets/uPlot.min.css", "").await;
    assert_eq!(code, 200);
    assert!(
        head_text.to_ascii_lowercase().contains("content-type: text/css"),
        "{head_text}"
    );
    let (code, _, _) = head(addr, "/assets/other.js", "").await;
    assert_eq!(code, 404);
    daemon.shutdown().await;
}
