//! Reliability suite 6, the clock: the wall clock jumping forwards and backwards
//! (a Pi without an RTC corrected by NTP, a user setting the time) never stalls
//! polling, because scheduling runs on tokio's monotonic clock; readings follow the
//! wall clock and stay UTC. On tokio's paused clock, so the counts are exact.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{no_env, Setup};
use chrono::{DateTime, TimeDelta};
use mesura::config::Config;
use mesura::daemon::app::Daemon;
use mesura::host::clock::JumpingClock;

fn timestamps(db: &std::path::Path, device: &str) -> BTreeSet<i64> {
    let conn = rusqlite::Connection::open(db).expect("db");
    let mut stmt = conn.prepare(&format!("SELECT ts FROM \"{device}\"")).expect("query");
    let rows = stmt.query_map([], |r| r.get(0)).expect("rows");
    rows.collect::<Result<_, _>>().expect("ts")
}

#[tokio::test(start_paused = true)]
async fn clock_jumps_never_stall_polling_and_rows_follow_the_wall_clock() {
    // The simulated counters are functions of the wall clock: stepped back, they
    // drop, which counter cleaning (docs/counters.md) rightly takes for a reset and
    // answers with late lifetime values. This test is about rows and the wall clock.
    let setup = Setup::new(
        "backends:\n  sqlite:\n    flush_interval: 5s\n  csv: {}\nwatch:\n  enabled: false\napi:\n  enabled: false\ncounters:\n  enabled: false\n",
    );
    setup
        .device("meter", "type: simulated\nprofile: electricity\npoll_interval: 1s\n")
        .device("gas", "type: simulated\nprofile: gas\npoll_interval: 1s\n");
    let start = crate::support::noon_yesterday();
    let t0 = start.timestamp();
    let clock = Arc::new(JumpingClock::starting_at(start));
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    let daemon = Daemon::start(config, clock.clone()).await.expect("start");

    // Polls at 0..=20 s of monotonic time, wall time t0+0..=t0+20.
    tokio::time::sleep(Duration::from_millis(20_500)).await;
    // An hour forwards: polls at 21..=30 s land at t0+3621..=t0+3630.
    clock.jump(TimeDelta::hours(1));
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Back past the start: net −15 s, so polls at 31..=40 s land at t0+16..=t0+25,
    // five of them on seconds already stored (16..=20).
    clock.jump(TimeDelta::seconds(-3600 - 15));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let summary = daemon.shutdown().await;

    // Not one poll lost or added by either jump.
    assert_eq!(summary.polls["meter"], 41);
    assert_eq!(summary.polls["gas"], 41);
    assert_eq!(summary.dropped.values().sum::<u64>(), 0);

    // SQLite rows follow the wall clock. `ts` is the INTEGER PRIMARY KEY: the five
    // polls that landed on seconds already stored merged into those rows (the later
    // reading's values win), so 41 polls make 36 rows.
    let expected: BTreeSet<i64> = (0..=25).chain(3621..=3630).map(|s| t0 + s).collect();
    for device in ["meter", "gas"] {
        assert_eq!(timestamps(&setup.db_path(), device), expected, "{device}");
    }
    // Counters are closed-form functions of the reading time, so a merged row holds
    // the same counter value either way.
    let conn = rusqlite::Connection::open(setup.db_path()).expect("db");
    let merged: f64 = conn
        .query_row("SELECT gas_delivered FROM gas WHERE ts = ?1", [t0 + 18], |r| r.get(0))
        .expect("row");
    let before: f64 = conn
        .query_row("SELECT gas_delivered FROM gas WHERE ts = ?1", [t0 + 15], |r| r.get(0))
        .expect("row");
    assert!(merged >= before);

    // CSV appends every poll, in poll order, each stamped in UTC.
    assert_eq!(setup.csv_rows("meter"), 41);
    let dir = setup.dir.path().join("data/csv/meter");
    let mut stamps = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("csv dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("csv");
        for line in text.lines().skip(1) {
            let ts = line.split(',').next().expect("a timestamp column").to_owned();
            let parsed = DateTime::parse_from_rfc3339(&ts).unwrap_or_else(|e| panic!("{ts}: {e}"));
            assert_eq!(parsed.offset().local_minus_utc(), 0, "not UTC: {ts}");
            stamps.push(parsed.timestamp() - t0);
        }
    }
    let expected_order: Vec<i64> = (0..=20).chain(3621..=3630).chain(16..=25).collect();
    assert_eq!(stamps, expected_order);
}

#[test]
fn a_jumping_clock_moves_the_wall_time_only() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        use mesura::host::clock::Clock;
        let start = DateTime::parse_from_rfc3339("2026-03-29T00:59:59Z")
            .expect("t")
            .to_utc();
        let clock = JumpingClock::starting_at(start);
        let before = tokio::time::Instant::now();
        clock.jump(TimeDelta::days(-400));
        assert_eq!(clock.now(), start - TimeDelta::days(400));
        assert_eq!(tokio::time::Instant::now(), before, "monotonic time unmoved");
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Across the CET→CEST change the stamp is still plain UTC.
        clock.jump(TimeDelta::days(400));
        assert_eq!(clock.now().to_rfc3339(), "2026-03-29T01:00:01+00:00");
    });
}
