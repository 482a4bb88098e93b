//! Counters cleaned at ingest, end to end (docs/counters.md): a P1 dongle (a local
//! TCP server) sends the real Iskra AM550 telegram (tests/fixtures/dsmr/) with its
//! tariff-1 counter climbing, one telegram reading 0 in between, then the meter is
//! swapped for the Kaifa of `dsmr42_kaifa_real.txt` (its equipment id and its
//! 4726.494 kWh). SQLite keeps every raw value as sent, the glitch has no lifetime
//! value, the lifetime column carries on across the swap, the epochs table records it, and
//! `mesura epochs add|undo` recompute the stored rows.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use mesura::commands::{epochs, EpochsAction};
use mesura::config::Config;
use mesura::daemon::app::Daemon;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::support::dsmr::telegram_at;
use crate::support::{no_env, Setup};

const ISKRA_ID: &str = "4530303334303036383130353136343136";
const KAIFA_ID: &str = "4530303033303030303032313234383133";
const METRIC: &str = "energy_delivered_tariff1";

/// The AM550 telegram at `at` with `kwh`, sent by the meter `id` (CRC recomputed).
fn telegram(at: DateTime<Utc>, kwh: f64, id: &str) -> Vec<u8> {
    let text = String::from_utf8(telegram_at(at, kwh)).expect("ASCII");
    let text = text.replace(ISKRA_ID, id);
    let bang = text.find('!').expect("terminator");
    let mut out = text.as_bytes()[..=bang].to_vec();
    let crc = mesura::protocols::dsmr::crc16_arc(&out);
    out.extend_from_slice(format!("{crc:04X}\r\n").as_bytes());
    out
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

/// start, end, offset, reason, identity.
type EpochRow = (i64, Option<i64>, f64, String, Option<String>);

/// (ts, raw, lifetime) of the tariff-1 counter, oldest first.
fn rows(db: &std::path::Path) -> Vec<(i64, f64, Option<f64>)> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return vec![];
    };
    let Ok(mut stmt) = conn.prepare(&format!(
        "SELECT ts, {METRIC}, {METRIC}_lifetime FROM p1 WHERE {METRIC} IS NOT NULL ORDER BY ts"
    )) else {
        return vec![];
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .and_then(|rows| rows.collect())
        .unwrap_or_default()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_glitch_stays_out_of_the_lifetime_series_and_a_meter_swap_continues_it() {
    let setup = Setup::new(
        "backends:\n  sqlite:\n    flush_interval: 100ms\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n",
    );
    let db = setup.db_path();
    // Telegrams ten seconds apart, stamped in the recent past (the meter's own time).
    let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 600, 0).expect("time");
    let sent: Vec<(f64, &str)> = vec![
        (3808.351, ISKRA_ID),
        (3808.352, ISKRA_ID),
        (0.0, ISKRA_ID), // the glitch
        (3808.353, ISKRA_ID),
        (4726.494, KAIFA_ID), // the swap
        (4726.495, KAIFA_ID),
        (4726.497, KAIFA_ID),
    ];
    let at = |i: usize| t0 + TimeDelta::seconds(10 * i as i64);
    let telegrams: Vec<Vec<u8>> = sent
        .iter()
        .enumerate()
        .map(|(i, (kwh, id))| telegram(at(i), *kwh, id))
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        for t in telegrams {
            socket.write_all(&t).await.expect("write");
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
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let addr = daemon.api_addr().expect("the API runs");

    wait_for("the seven telegrams", || {
        let r = rows(&db);
        r.len() == 7 && r.iter().filter(|r| r.2.is_some()).count() == 6
    })
    .await;
    let stored = rows(&db);
    // Raw as sent, the glitch too; each at its telegram's time.
    let expected_at: Vec<i64> = (0..7).map(|i| at(i).timestamp()).collect();
    assert_eq!(stored.iter().map(|r| r.0).collect::<Vec<_>>(), expected_at);
    assert!(stored.iter().zip(&sent).all(|(r, e)| close(r.1, e.0)), "{stored:?}");
    // The lifetime carries on across the swap: no drop, no spike, nothing for the glitch.
    let expected_lifetime = [
        Some(3808.351),
        Some(3808.352),
        None,
        Some(3808.353),
        Some(3808.353),
        Some(3808.354),
        Some(3808.356),
    ];
    for (r, e) in stored.iter().zip(expected_lifetime) {
        match (r.2, e) {
            (Some(got), Some(e)) => assert!(close(got, e), "{stored:?}"),
            (got, e) => assert_eq!(got, e, "{stored:?}"),
        }
    }

    // The glitch is counted on /metrics, the swap too.
    let (code, metrics) = crate::support::api::get(addr, "/metrics", None).await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("mesura_glitches_dropped_total{device=\"p1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mesura_meter_epochs_total{device=\"p1\"}"),
        "{metrics}"
    );

    let summary = daemon.shutdown().await;
    server.abort();
    assert_eq!(summary.dropped.values().sum::<u64>(), 0);

    // The epochs table: the first epoch, then the swap at the Kaifa's first telegram.
    let list = epochs(
        &setup.config_path(),
        &EpochsAction::List {
            device: Some("p1".into()),
        },
        &no_env,
        Utc::now(),
    );
    assert!(list.ok, "{}", list.text);
    let conn = rusqlite::Connection::open(setup.dir.path().join("data/epochs.db")).expect("epochs.db");
    let epoch_rows: Vec<EpochRow> = conn
        .prepare(r#"SELECT start, "end", "offset", reason, identity FROM epochs WHERE device = 'p1' AND metric = ?1 ORDER BY start"#)
        .expect("query")
        .query_map([METRIC], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(epoch_rows.len(), 2, "{epoch_rows:?}");
    assert_eq!(
        (epoch_rows[0].0, epoch_rows[0].1),
        (at(0).timestamp(), Some(at(4).timestamp()))
    );
    assert_eq!(epoch_rows[1].3, "swap");
    // The equipment id as the decoder gives it: the hex of `0-0:96.1.1` as text.
    assert_eq!(epoch_rows[1].4.as_deref(), Some("E0003000002124813"));
    assert!(close(epoch_rows[1].2, 3808.353 - 4726.494));
    assert!(
        list.text.contains("swap") && list.text.contains("E0003000002124813"),
        "{}",
        list.text
    );

    // A user says the new meter started at 0 on the swap instead: an epoch from the
    // swap's start with offset 3808.353, and the stored rows follow.
    let swap_at = at(4).to_rfc3339();
    let add = EpochsAction::Add {
        device: "p1".into(),
        metric: METRIC.into(),
        start: Some(at(4).to_rfc3339()),
        offset: 3808.353,
    };
    let refused = epochs(&setup.config_path(), &add, &no_env, Utc::now());
    assert!(!refused.ok, "an epoch already starts there: {}", refused.text);
    let undo = EpochsAction::Undo {
        device: "p1".into(),
        metric: METRIC.into(),
    };
    let undone = epochs(&setup.config_path(), &undo, &no_env, Utc::now());
    assert!(undone.ok, "{}", undone.text);
    // Without the swap, the lifetime is the raw value again (offset 0 from the start).
    let undone_rows = rows(&db);
    assert!(
        undone_rows.iter().all(|r| r.2.is_none_or(|l| close(r.1, l))),
        "{undone_rows:?}"
    );
    assert_eq!(undone_rows[2].2, None, "the glitch stays out of the lifetime series");
    let added = epochs(&setup.config_path(), &add, &no_env, Utc::now());
    assert!(added.ok, "{}", added.text);
    assert!(added.text.contains("recomputed"), "{}", added.text);
    let after = rows(&db);
    for (ts, raw, lifetime) in after.iter().filter_map(|r| Some((r.0, r.1, r.2?))) {
        let offset = if ts >= at(4).timestamp() { 3808.353 } else { 0.0 };
        assert!(close(lifetime, raw + offset), "{ts} {raw} {lifetime} ({swap_at})");
    }
    assert_eq!(after.iter().filter(|r| r.2.is_some()).count(), 6);
}
