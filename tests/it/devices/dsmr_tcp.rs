//! A network P1 dongle (or ser2net) played by a local TCP server: the daemon stores
//! every telegram (`poll_interval: 0s`), reconnects when the peer closes, and gives
//! up on a connection that stays silent past `timeout`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::dsmr::{load, telegram_at, telegram_bad_crc, Rng};
use crate::support::{no_env, Setup};
use chrono::{DateTime, TimeDelta, Utc};
use mesura::config::Config;
use mesura::daemon::app::Daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).expect("instant")
}

async fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stored_ts(db: &std::path::Path) -> Vec<i64> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare("SELECT ts FROM p1 WHERE energy_delivered_tariff1 IS NOT NULL ORDER BY ts") else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get(0))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

async fn start(setup: &Setup, port: u16, extra: &str) -> Daemon {
    setup.device(
        "p1",
        &format!("type: dsmr\nhost: 127.0.0.1\nport: {port}\npoll_interval: 0s\nmax_backoff: 1s\nfailure_threshold: 1000\n{extra}"),
    );
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_telegram_stored_across_a_peer_close() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // A meter with a correct clock: its times are kept (within max_clock_skew of now).
    let t0 = whole_second(Utc::now() - TimeDelta::minutes(10));
    let accepted = Arc::new(AtomicUsize::new(0));
    // Connection 1: three telegrams (one corrupt in between), then the peer closes.
    // Connection 2: three more, then it stays open.
    let server = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            for conn in 0..2i64 {
                let (mut socket, _) = listener.accept().await.expect("accept");
                accepted.fetch_add(1, Ordering::SeqCst);
                for i in 0..3 {
                    let at = t0 + TimeDelta::seconds(conn * 10 + i);
                    socket
                        .write_all(&telegram_at(at, 100.0 + i as f64))
                        .await
                        .expect("write");
                    if i == 1 {
                        let bad = telegram_bad_crc(at + TimeDelta::seconds(5), 999.0);
                        socket.write_all(&bad).await.expect("write");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if conn == 0 {
                    socket.shutdown().await.expect("close");
                } else {
                    held.push(socket);
                }
            }
            // Keep the second connection open until the test ends.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(held);
        })
    };
    let setup = Setup::new("backends:\n  sqlite:\n    flush_interval: 100ms\n");
    let daemon = start(&setup, port, "").await;
    let db = setup.db_path();
    wait_for(Duration::from_secs(30), "six telegrams over two connections", || {
        stored_ts(&db).len() >= 6
    })
    .await;
    let status = daemon.status().devices()["p1"].clone();
    let summary = daemon.shutdown().await;
    server.abort();

    let expected: Vec<i64> = [0, 1, 2, 10, 11, 12].iter().map(|s| t0.timestamp() + s).collect();
    assert_eq!(stored_ts(&db), expected, "every good telegram, nothing else");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "reconnected once after the close");
    assert_eq!(status.errors_by_kind.get("link"), Some(&1), "{status:?}");
    assert_eq!(summary.dropped.values().sum::<u64>(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_dropped_and_reopened() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                // Accept and say nothing: a dongle whose meter went quiet.
                held.push(socket);
            }
        })
    };
    let setup = Setup::new("backends:\n  sqlite: {}\n");
    let daemon = start(&setup, port, "timeout: 500ms\n").await;
    let status = daemon.status().clone();
    wait_for(Duration::from_secs(20), "a reconnect after the silence", || {
        accepted.load(Ordering::SeqCst) >= 2
    })
    .await;
    let device = status.devices()["p1"].clone();
    daemon.shutdown().await;
    server.abort();
    assert!(device.polls_failed >= 1, "{device:?}");
    assert!(
        device
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("silent for 500ms")),
        "{device:?}"
    );
    assert_eq!(device.polls_ok, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_listening_is_a_link_error_with_backoff() {
    // Bind and drop: a port with (almost certainly) no listener.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let setup = Setup::new("backends:\n  sqlite: {}\n");
    let daemon = start(&setup, port, "").await;
    let status = daemon.status().clone();
    let began = Instant::now();
    wait_for(Duration::from_secs(20), "two failed connects", || {
        status.devices()["p1"].polls_failed >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let device = status.devices()["p1"].clone();
    let window = began.elapsed().as_secs_f64();
    daemon.shutdown().await;
    // poll_interval 0s: backoff from 100 ms, capped at max_backoff 1 s, jitter ≥ half.
    let bound = (2.0 * window + 5.0) as u64;
    assert!(
        device.polls_failed <= bound,
        "{} connects in {window:.1} s",
        device.polls_failed
    );
    assert_eq!(device.errors_by_kind.get("link"), Some(&device.polls_failed));
    assert!(
        device
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot connect")),
        "{device:?}"
    );
}

/// The real DSMR 5 fixture as a meter whose clock was never set sends it: meter
/// time and gas capture time `000101010000W` (2000-01-01), tariff-1 counter `kwh`,
/// CRC recomputed.
fn telegram_with_unset_clock(kwh: f64) -> Vec<u8> {
    let text = String::from_utf8(load("dsmr50_iskra_am550_real.txt")).expect("ASCII fixture");
    let text = text
        .replace("0-0:1.0.0(181106140429W)", "0-0:1.0.0(000101010000W)")
        .replace("0-1:24.2.1(181106140010W)", "0-1:24.2.1(000101010000W)")
        .replace("1-0:1.8.1(003808.351*kWh)", &format!("1-0:1.8.1({kwh:010.3}*kWh)"));
    assert_eq!(text.matches("000101010000W").count(), 2, "the fixture changed");
    let bang = text.find('!').expect("terminator");
    let mut out = text.as_bytes()[..=bang].to_vec();
    let crc = mesura::protocols::dsmr::crc16_arc(&out);
    out.extend_from_slice(format!("{crc:04X}\r\n").as_bytes());
    out
}

fn rows(db: &std::path::Path, sql: &str) -> Vec<(i64, f64)> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(sql) else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// `mesura_protocol_errors_total{device="p1",kind=…}` as /metrics shows it.
async fn protocol_errors(addr: std::net::SocketAddr, kind: &str) -> Option<f64> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    let prefix = format!("mesura_protocol_errors_total{{device=\"p1\",kind=\"{kind}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_with_an_unset_clock_is_stored_at_arrival_time_and_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        for i in 0..3 {
            let telegram = telegram_with_unset_clock(100.0 + f64::from(i));
            socket.write_all(&telegram).await.expect("write");
            // More than a second apart: SQLite keeps one row per second, and these
            // rows are stamped with their arrival time.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        // Keep the connection open until the test ends.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let setup = Setup::new(
        "backends:\n  sqlite:\n    flush_interval: 100ms\napi:\n  listen: 127.0.0.1:0\nwatch:\n  enabled: false\n",
    );
    let before = Utc::now().timestamp();
    let daemon = start(&setup, port, "").await;
    let addr = daemon.api_addr().expect("the API listens");
    let db = setup.db_path();
    let electricity =
        "SELECT ts, energy_delivered_tariff1 FROM p1 WHERE energy_delivered_tariff1 IS NOT NULL ORDER BY ts";
    // The last telegram's value, wherever it was stored (on a 2000-01-01 row, the
    // three telegrams would share one).
    wait_for(Duration::from_secs(30), "the third telegram in SQLite", || {
        rows(&db, electricity).iter().any(|r| r.1 == 102.0)
    })
    .await;
    let after = Utc::now().timestamp();
    let mut invalid = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while invalid.is_none_or(|n| n < 6.0) && Instant::now() < deadline {
        invalid = protocol_errors(addr, "device_time_invalid").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let skewed = protocol_errors(addr, "device_time_skewed").await;
    daemon.shutdown().await;
    server.abort();

    // Every value at the time it arrived, none at 2000-01-01.
    let stored = rows(&db, electricity);
    assert_eq!(stored.iter().map(|r| r.1).collect::<Vec<_>>(), [100.0, 101.0, 102.0]);
    for (ts, _) in &stored {
        assert!(
            (before..=after).contains(ts),
            "stored at {ts}, arrived in {before}..={after}"
        );
    }
    let gas = rows(
        &db,
        "SELECT ts, gas_delivered FROM p1 WHERE gas_delivered IS NOT NULL ORDER BY ts",
    );
    assert!(!gas.is_empty());
    for (ts, value) in &gas {
        assert_eq!(*value, 1569.646);
        assert!(
            (before..=after).contains(ts),
            "gas stored at {ts}, arrived in {before}..={after}"
        );
    }
    let old = rows(&db, "SELECT ts, 0.0 FROM p1 WHERE ts < 1420070400");
    assert!(old.is_empty(), "rows before 2015: {old:?}");
    // Per telegram the meter clock and the gas capture time were refused: both counted.
    assert_eq!(invalid, Some(6.0), "/metrics device_time_invalid");
    assert_eq!(skewed, Some(0.0), "/metrics device_time_skewed");
}

/// What the `dsmr` device stores of a fixture file sent alone: its telegram's
/// readings, if it has a complete telegram with a good or no CRC.
/// `max_clock_skew: 100y`: recorded captures keep their own times.
const RECORDED: Duration = Duration::from_secs(100 * 365 * 86_400);

fn storable(file: &[u8]) -> Option<usize> {
    use mesura::protocols::dsmr::{CrcStatus, Framer};
    let mut framer = Framer::default();
    framer.push(file);
    let frame = std::iter::from_fn(|| framer.next_frame()).find_map(Result::ok)?;
    if matches!(frame.crc, CrcStatus::Invalid { .. }) {
        return None;
    }
    let telegram = frame.decode().ok()?;
    // Recorded years ago: the meter times are kept (as the device below keeps them).
    let mut clock = mesura::monitors::device_time::DeviceClock::new(Arc::from("p1"), RECORDED);
    Some(mesura::monitors::dsmr::map::readings(&Arc::from("p1"), &telegram, Utc::now(), &mut clock).len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegrams_after_junk_are_all_stored_and_the_junk_counted() {
    // Every fixture the device stores, each sent after a NUL, a 0xFF, CR LF NUL and
    // random junk (no `/`: see tests/it/devices/dsmr_streams.rs), over one connection.
    let mut names: Vec<String> = std::fs::read_dir(crate::support::dsmr::fixture_dir())
        .expect("fixtures")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    names.sort();
    let mut rng = Rng(0x0018_0003_7C9D);
    let (mut stream, mut readings, mut junk_bytes, mut telegrams) = (Vec::new(), 0, 0u64, 0);
    // Belgian telegrams add `capacity_rolling_average` when their peak history
    // changes (the monitor's own rule, not under test here).
    let mut peaks = mesura::monitors::dsmr::map::PeakWatch::new(2500.0);
    let device: mesura::reading::DeviceId = "p1".into();
    let at = Utc::now();
    for name in &names {
        let file = load(name);
        let Some(n) = storable(&file) else { continue };
        assert!(n > 0, "{name}");
        let random: Vec<u8> = (0..1 + rng.below(64))
            .map(|_| match rng.next() as u8 {
                b'/' => b'.',
                b => b,
            })
            .collect();
        for junk in [&b"\x00"[..], b"\xff", b"\r\n\x00", &random] {
            stream.extend_from_slice(junk);
            stream.extend_from_slice(&file);
            junk_bytes += junk.iter().filter(|b| !b.is_ascii_whitespace()).count() as u64;
            readings += n;
            if let Ok(t) = mesura::protocols::dsmr::decode(&file) {
                readings += peaks
                    .observe(&device, &t, at)
                    .and_then(|(_, average)| average)
                    .map_or(0, |_| 1);
            }
            telegrams += 1;
        }
        // The Q3D capture ends with its gateway's own junk after the telegram.
        let bang = file.iter().position(|&b| b == b'!').expect("terminated");
        let after = file[bang..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(file.len(), |lf| bang + lf + 1);
        junk_bytes += 4 * file[after..].iter().filter(|b| !b.is_ascii_whitespace()).count() as u64;
    }
    assert!(telegrams > 80, "{telegrams} telegrams");
    // Well below the 256 telegrams the device keeps between reads, so a slow read
    // cannot drop any.
    assert!(telegrams < 256, "{telegrams} telegrams");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        for chunk in stream.chunks(1000) {
            socket.write_all(chunk).await.expect("write");
        }
        // Held open: a close would count as a link error.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    // The stream is many meters' captures through one device: counter cleaning
    // (docs/counters.md) would add lifetime values this count is not about.
    let setup = Setup::new("backends:\n  sqlite:\n    flush_interval: 100ms\ncounters:\n  enabled: false\n");
    let daemon = start(&setup, port, "max_clock_skew: 100y\n").await;
    let status = daemon.status().clone();
    let stored = || BackendStatsView::written(&status);
    let began = Instant::now();
    while stored() < readings as u64 && began.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let device = status.devices()["p1"].clone();
    let summary = daemon.shutdown().await;
    server.abort();

    assert_eq!(
        stored(),
        readings as u64,
        "every telegram's readings, nothing else; {device:?}"
    );
    assert_eq!(device.readings, readings as u64, "{device:?}");
    assert_eq!(
        device.protocol_errors.get("junk_bytes"),
        Some(&junk_bytes),
        "{device:?}"
    );
    assert_eq!(device.protocol_errors.get("framing"), Some(&0), "{device:?}");
    assert_eq!(device.protocol_errors.get("crc"), Some(&0), "{device:?}");
    assert_eq!(device.polls_failed, 0, "{device:?}");
    assert_eq!(summary.dropped.values().sum::<u64>(), 0);
}

struct BackendStatsView;

impl BackendStatsView {
    fn written(status: &mesura::daemon::live::SharedStatus) -> u64 {
        status
            .backends()
            .get("sqlite")
            .map_or(0, |b| mesura::daemon::live::BackendStats::get(&b.written))
    }
}

/// A network P1 dongle that reboots: its stream goes away for 30 s (the connection
/// closed, nobody listening) and comes back on the same port. The device is read
/// again within the local backoff cap (30 s by default) of the dongle's return, not
/// after a circuit breaker's cool-down: a 30 s outage once cost 312 s of data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dongle_back_from_a_30s_outage_is_read_within_the_backoff_cap() {
    const OUTAGE: Duration = Duration::from_secs(30);
    const CAP: Duration = Duration::from_secs(30);

    /// Serves one connection a telegram stamped "now" every second, for `serve`.
    async fn dongle(listener: TcpListener, serve: Duration) {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let began = Instant::now();
        let mut kwh = 100.0;
        while began.elapsed() < serve {
            kwh += 0.001;
            if socket
                .write_all(&telegram_at(whole_second(Utc::now()), kwh))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let setup = Setup::new("backends:\n  sqlite:\n    flush_interval: 200ms\n");
    // Defaults for everything that decides the retries: a local device's backoff.
    setup.device(
        "p1",
        &format!("type: dsmr\nhost: 127.0.0.1\nport: {port}\npoll_interval: 1s\n"),
    );
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let db = setup.db_path();

    // Six seconds of telegrams, then the dongle is gone: the connection closes and
    // the port refuses connections.
    dongle(listener, Duration::from_secs(6)).await;
    wait_for(Duration::from_secs(10), "rows before the outage", || {
        !stored_ts(&db).is_empty()
    })
    .await;
    let status = daemon.status().clone();
    wait_for(Duration::from_secs(10), "the daemon to notice the outage", || {
        status.devices().get("p1").is_some_and(|d| d.polls_failed >= 1)
    })
    .await;
    // The outage itself is the scenario, not a wait for a condition.
    tokio::time::sleep(OUTAGE).await;

    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the same port again");
    let back = Utc::now().timestamp();
    let server = tokio::spawn(dongle(listener, CAP + Duration::from_secs(20)));
    wait_for(CAP + Duration::from_secs(15), "a row after the dongle is back", || {
        stored_ts(&db).iter().any(|ts| *ts >= back)
    })
    .await;
    let device = daemon.status().devices()["p1"].clone();
    daemon.shutdown().await;
    server.abort();

    let ts = stored_ts(&db);
    let before = ts.iter().copied().filter(|t| *t < back).max().expect("rows before");
    let after = ts.iter().copied().find(|t| *t >= back).expect("rows after");
    let gap = after - before;
    eprintln!(
        "gap of {gap} s across a {OUTAGE:?} outage; {} failed reads",
        device.polls_failed
    );
    assert!(
        // Plus a few seconds: the last telegram before the close, the first after the
        // reconnect, a poll interval.
        gap <= (OUTAGE + CAP).as_secs() as i64 + 5,
        "a {gap} s gap across a {OUTAGE:?} outage: more than outage + backoff cap"
    );
    assert!(device.polls_failed >= 1, "{device:?}");
}
