//! A P1 cable, for real: socat makes a pty pair, the test writes telegrams into one
//! end, a running daemon reads the other as its serial port. Then the cable is
//! pulled (socat killed, the port path disappears) and plugged back in (socat
//! restarted on the same path): readings resume, and the reopen attempts in between
//! stay within what the backoff allows.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::dsmr::{telegram_at, telegram_bad_crc};
use crate::support::{no_env, Setup};
use chrono::{DateTime, TimeDelta, Utc};
use mesura::config::Config;
use mesura::daemon::app::Daemon;

/// A pty pair: `<dir>/meter` is the meter's end, `<dir>/ttyP1` the daemon's.
struct Cable {
    child: Child,
}

impl Cable {
    fn plug(dir: &Path) -> Cable {
        let end = |name: &str| format!("pty,raw,echo=0,b115200,link={}", dir.join(name).display());
        let child = Command::new("socat")
            .args(["-d", "-d", &end("meter"), &end("ttyP1")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (scripts/test.sh installs it)");
        let cable = Cable { child };
        crate::support::wait_until(Duration::from_secs(10), "socat's pty links", || {
            dir.join("meter").exists() && dir.join("ttyP1").exists()
        });
        cable
    }

    /// SIGTERM, so socat removes its links as a vanished USB device's node goes away.
    fn unplug(mut self, dir: &Path) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().expect("wait for socat");
        assert!(!dir.join("ttyP1").exists(), "socat left its link behind");
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        // Only if the test failed before unplugging: do not leave socat running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes generated telegrams into the meter's end every 200 ms (like a DSMR 5
/// meter, only faster) until `stop`.
fn meter(path: PathBuf, start: DateTime<Utc>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut port = std::fs::OpenOptions::new().write(true).open(&path).expect("meter end");
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let t = telegram_at(start + TimeDelta::seconds(i), 4000.0 + i as f64 / 1000.0);
            if port.write_all(&t).is_err() {
                return;
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("time").to_utc()
}

/// A value in the device's table at `ts`, if that row and column exist.
fn value_at(db: &Path, column: &str, ts: i64) -> Option<f64> {
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row(&format!("SELECT \"{column}\" FROM p1 WHERE ts = ?1"), [ts], |r| {
        r.get::<_, Option<f64>>(0)
    })
    .ok()
    .flatten()
}

fn rows_from(db: &Path, ts: i64) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return 0;
    };
    conn.query_row(
        "SELECT count(*) FROM p1 WHERE ts >= ?1 AND energy_delivered_tariff1 IS NOT NULL",
        [ts],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// Polls an async condition: a bounded wait, never a fixed sleep.
async fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_stream_unplug_and_replug() {
    let setup = Setup::new("backends:\n  sqlite:\n    flush_interval: 200ms\n");
    let dir = setup.dir.path().to_path_buf();
    setup.device(
        "p1",
        &format!(
            // The recorded telegram's meter time is from 2018: a skew that accepts it,
            // to check it is stored at the meter's time (the rule for wrong clocks
            // is tested in dsmr_tcp.rs).
            "type: dsmr\nport: {}\npoll_interval: 1s\ntimeout: 5s\nmax_backoff: 2s\nfailure_threshold: 1000\nmax_clock_skew: 100y\n",
            dir.join("ttyP1").display()
        ),
    );
    let db = setup.db_path();
    let cable = Cable::plug(&dir);
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let status = daemon.status().clone();
    let failed = move || status.devices().get("p1").map_or(0, |d| d.polls_failed);

    // 1. The real fixture, preceded by half a telegram (joining mid-stream) and
    // followed by a corrupted one that must not displace it.
    let fixture = std::fs::read("tests/fixtures/dsmr/dsmr50_iskra_am550_real.txt").expect("fixture");
    let bad_at = utc("2026-11-24T08:00:00Z");
    let first = vec![
        fixture[fixture.len() / 2..].to_vec(),
        fixture.clone(),
        telegram_bad_crc(bad_at, 9999.0),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    // 2018-11-06 14:04:29 W (UTC+1); gas captured 14:00:10 W. Values read off the telegram.
    let meter_ts = utc("2018-11-06T13:04:29Z").timestamp();
    let gas_ts = utc("2018-11-06T13:00:10Z").timestamp();
    // The generated stream starts only after the fixture is stored, so it cannot
    // be replaced by a newer telegram before the daemon reads it.
    let writer = {
        let path = dir.join("meter");
        std::thread::spawn(move || {
            let mut port = std::fs::OpenOptions::new().write(true).open(path).expect("meter end");
            for t in first {
                port.write_all(&t).expect("write");
            }
            port
        })
    };
    wait_for(Duration::from_secs(30), "the fixture telegram in SQLite", || {
        value_at(&db, "energy_delivered_tariff1", meter_ts).is_some()
    })
    .await;
    let _port = writer.join().expect("writer");
    assert_eq!(value_at(&db, "energy_delivered_tariff1", meter_ts), Some(3808.351));
    assert_eq!(value_at(&db, "energy_returned_tariff2", meter_ts), Some(2876.514));
    assert_eq!(value_at(&db, "power_returned", meter_ts), Some(498.0)); // 00.498 kW
    assert_eq!(value_at(&db, "power_delivered_l3", meter_ts), Some(132.0)); // 00.132 kW
    assert_eq!(value_at(&db, "voltage_l2", meter_ts), Some(232.6));
    assert_eq!(value_at(&db, "tariff", meter_ts), Some(2.0));
    assert_eq!(value_at(&db, "gas_delivered", gas_ts), Some(1569.646));

    // 2. A live stream.
    let live = utc("2026-11-24T09:00:00Z");
    let feed = meter(dir.join("meter"), live, stop.clone());
    wait_for(Duration::from_secs(30), "three live readings", || {
        rows_from(&db, live.timestamp()) >= 3
    })
    .await;
    assert_eq!(failed(), 0, "no read may fail while the cable is in");

    // 3. Unplug.
    stop.store(true, Ordering::Relaxed);
    cable.unplug(&dir);
    let _ = feed.join();
    let unplugged = Instant::now();
    wait_for(Duration::from_secs(15), "the daemon to notice the unplug", || {
        failed() >= 1
    })
    .await;
    // Stay unplugged for a while: this is the scenario, not a wait for a condition.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let attempts = failed();
    let window = unplugged.elapsed().as_secs_f64();
    // Backoff from 1 s (the poll interval) capped at max_backoff 2 s, jittered to at
    // least half: at most one attempt per second after the first two, plus the read
    // that noticed the unplug. A busy loop would make thousands.
    let bound = (window + 3.0) as u64;
    eprintln!("{attempts} failed reads (reopen attempts) in {window:.1} s unplugged; bound {bound}");
    assert!(
        (2..=bound).contains(&attempts),
        "{attempts} failed reads in {window:.1} s unplugged (bound {bound})"
    );
    let link_errors = daemon.status().devices()["p1"].errors_by_kind.get("link").copied();
    assert_eq!(link_errors, Some(attempts), "every failure is a link failure");

    // 4. Plug back in on the same path: readings resume.
    let cable = Cable::plug(&dir);
    let stop = Arc::new(AtomicBool::new(false));
    let again = utc("2026-11-24T10:00:00Z");
    let feed = meter(dir.join("meter"), again, stop.clone());
    wait_for(Duration::from_secs(30), "readings after the replug", || {
        rows_from(&db, again.timestamp()) >= 3
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    // The dropped bad-CRC telegram is counted for /metrics (mesura_protocol_errors_total).
    let crc_errors = daemon.status().devices()["p1"].protocol_errors.get("crc").copied();
    assert!(crc_errors.is_some_and(|n| n >= 1), "crc errors counted: {crc_errors:?}");
    let summary = daemon.shutdown().await;
    let _ = feed.join();
    cable.unplug(&dir);

    assert_eq!(
        value_at(&db, "energy_delivered_tariff1", bad_at.timestamp()),
        None,
        "a bad CRC was stored"
    );
    assert!(summary.polls["p1"] >= 7, "{summary:?}");
    assert_eq!(summary.dropped.values().sum::<u64>(), 0);
    // The replugged stream's counter restarts at 4000 kWh (a "meter reset"): stored as sent.
    let conn = rusqlite::Connection::open(&db).expect("db");
    let restarted: f64 = conn
        .query_row(
            "SELECT min(energy_delivered_tariff1) FROM p1 WHERE ts >= ?1",
            [again.timestamp()],
            |r| r.get(0),
        )
        .expect("rows after the replug");
    assert!((4000.0..4001.0).contains(&restarted), "{restarted}");
}
