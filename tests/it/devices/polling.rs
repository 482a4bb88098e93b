//! Issue 18, points 4 and 6, against a running daemon: readings that merge into one
//! SQLite second are counted in /metrics, and a local device that comes back after
//! an outage is read again within its backoff cap, not the breaker's cool-down.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::dsmr::telegram_at;
use crate::support::{no_env, Setup};
use chrono::{TimeDelta, Timelike, Utc};
use mesura::config::Config;
use mesura::daemon::app::Daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(30);

async fn metrics(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn stored(db: &std::path::Path, ts: i64) -> Option<f64> {
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row("SELECT energy_delivered_tariff1 FROM p1 WHERE ts = ?", [ts], |r| {
        r.get(0)
    })
    .ok()
}

/// A P1 dongle at `poll_interval: 0s` whose meter sends three telegrams stamped
/// with the same second (differing only in the tariff-1 counter): SQLite keeps the
/// last, and the two values it overwrote are counted per device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_device_merging_readings_into_one_second_is_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let t = Utc::now().with_nanosecond(0).expect("whole second") - TimeDelta::seconds(5);
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        for kwh in [100.0, 101.0, 102.0] {
            socket.write_all(&telegram_at(t, kwh)).await.expect("write");
        }
        socket
            .write_all(&telegram_at(t + TimeDelta::seconds(1), 103.0))
            .await
            .expect("write");
        // Held open: a peer close is not what this test is about.
        tokio::time::sleep(LIMIT * 2).await;
        drop(socket);
    });
    let setup = Setup::new(
        "backends:\n  sqlite:\n    flush_interval: 100ms\n  csv: {}\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n",
    );
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
    let db = setup.db_path();
    let merged = "mesura_sqlite_merged_total{device=\"p1\"}";
    let started = std::time::Instant::now();
    let text = loop {
        // The counter is updated just after the commit that makes the row visible.
        let text = metrics(addr).await;
        if stored(&db, t.timestamp() + 1).is_some() && sample(&text, merged) >= Some(4.0) {
            break text;
        }
        assert!(started.elapsed() < LIMIT, "no merges counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    daemon.shutdown().await;
    server.abort();

    assert_eq!(stored(&db, t.timestamp()), Some(102.0), "the last of the second wins");
    // Two overwritten counter values and their two lifetime values (docs/counters.md).
    assert_eq!(
        sample(&text, merged),
        Some(4.0),
        "four overwritten values, nothing for the repeated identical values:\n{text}"
    );
    // Four telegrams, each a row at its own time and one at its gas capture time.
    assert_eq!(setup.csv_rows("p1"), 8, "CSV keeps every telegram");
}

/// A P1 dongle that drops the connection (a reset, as when it reboots): the error
/// says "connection lost", with the OS error after it, not just the errno text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_link_reads_as_connection_lost() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let _ = socket.write_all(&telegram_at(Utc::now(), 100.0)).await;
            // Linger 0: close sends RST instead of FIN. Deprecated because a linger
            // above zero blocks on drop; zero resets at once.
            #[allow(deprecated)]
            socket.set_linger(Some(Duration::ZERO)).expect("linger");
            drop(socket);
        }
    });
    let setup = Setup::new("backends:\n  sqlite: {}\nwatch:\n  enabled: false\n");
    setup.device(
        "p1",
        &format!("type: dsmr\nhost: 127.0.0.1\nport: {port}\npoll_interval: 0s\n"),
    );
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let status = daemon.status().clone();
    let started = std::time::Instant::now();
    let error = loop {
        if let Some(e) = status.devices()["p1"].last_error.clone() {
            break e;
        }
        assert!(started.elapsed() < LIMIT, "no failed read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    daemon.shutdown().await;
    server.abort();
    assert!(
        error.contains("connection lost (") && error.contains("os error"),
        "{error}"
    );
}
