//! `serve:` — one P1 port, many readers. A daemon reads a simulated network P1
//! dongle (every telegram stored) and re-serves its bytes to TCP clients: two that
//! read get the meter's bytes exactly, one that never reads (a small receive
//! buffer) is disconnected without holding anything up, and one that joins in the
//! middle of a telegram gets whole telegrams from the next `/`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::broker::free_port;
use crate::support::dsmr::telegram_at;
use crate::support::{logs, no_env, Setup};
use chrono::{DateTime, TimeDelta, Utc};
use mesura::config::Config;
use mesura::daemon::app::Daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;

async fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects to the serve port, once the daemon listens on it.
async fn connect(port: u16, receive_buffer: Option<u32>) -> TcpStream {
    let start = Instant::now();
    loop {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        match socket.connect(([127, 0, 0, 1], port).into()).await {
            Ok(stream) => return stream,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(20),
                "the serve port never listened: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the daemon logged that it serves `client` (its own end's address).
async fn wait_served(client: &TcpStream) {
    let line = format!(
        "P1 serve client connected device=p1 client={}",
        client.local_addr().expect("addr")
    );
    let info = logs::info();
    wait_for(Duration::from_secs(20), &line, || logs::text(&info).contains(&line)).await;
}

/// Everything `client` receives, as it comes, until it is closed.
fn collect(mut client: TcpStream) -> Arc<Mutex<Vec<u8>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = client.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    got
}

fn len(buffer: &Mutex<Vec<u8>>) -> usize {
    buffer.lock().expect("lock").len()
}

fn service_metric(daemon: &Daemon, name: &str) -> f64 {
    daemon.status().devices()["p1"]
        .service_metrics
        .iter()
        .find(|m| m.name == name)
        .map_or(-1.0, |m| m.value)
}

/// Telegrams stored: rows with the tariff-1 counter (the fixture's gas reading
/// adds a row of its own, at its capture time).
fn stored(db: &std::path::Path) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return 0;
    };
    conn.query_row(
        "SELECT count(*) FROM p1 WHERE energy_delivered_tariff1 IS NOT NULL",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).expect("instant")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_one_stuck_get_the_meters_bytes_and_every_telegram_is_stored() {
    let info = logs::info();
    let warnings = logs::warnings();
    // The dongle: sends what the test hands it, on the daemon's one connection.
    let dongle = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dongle_port = dongle.local_addr().expect("addr").port();
    let (to_meter, mut meter_bytes) = mpsc::unbounded_channel::<Vec<u8>>();
    let meter = tokio::spawn(async move {
        let (mut socket, _) = dongle.accept().await.expect("accept");
        while let Some(bytes) = meter_bytes.recv().await {
            socket.write_all(&bytes).await.expect("write");
        }
        // Hold the connection until the test ends.
        std::future::pending::<()>().await;
    });

    let serve_port = free_port();
    let setup = Setup::new("backends:\n  sqlite:\n    flush_interval: 100ms\n");
    setup.device(
        "p1",
        &format!(
            "type: dsmr\nhost: 127.0.0.1\nport: {dongle_port}\npoll_interval: 0s\nmax_backoff: 1s\n\
             failure_threshold: 1000\nserve: 127.0.0.1:{serve_port}\n"
        ),
    );
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let db = setup.db_path();

    let a = connect(serve_port, None).await;
    let b = connect(serve_port, None).await;
    // Never read: its receive buffer and mesura's backlog for it fill up.
    let stuck = connect(serve_port, Some(2048)).await;
    for client in [&a, &b, &stuck] {
        wait_served(client).await;
    }
    let stuck_addr = stuck.local_addr().expect("addr");
    let (a, b) = (collect(a), collect(b));

    // 300 telegrams (880 bytes each, 264 KB): far past what the stuck client can
    // hold. Sent in bursts of ten, as a meter would not, but slower than the
    // daemon reads them.
    let t0 = whole_second(Utc::now() - TimeDelta::hours(1));
    let telegrams: Vec<Vec<u8>> = (0..303)
        .map(|i| telegram_at(t0 + TimeDelta::seconds(i), 1000.0 + i as f64))
        .collect();
    for burst in telegrams[..300].chunks(10) {
        to_meter.send(burst.concat()).expect("meter");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The clients joined before the first byte: they get everything from the
    // second telegram on (the first completed frame is their boundary).
    let expected = telegrams[1..300].concat();
    wait_for(Duration::from_secs(30), "300 telegrams stored and served", || {
        stored(&db) >= 300 && len(&a) >= expected.len() && len(&b) >= expected.len()
    })
    .await;
    wait_for(Duration::from_secs(10), "the stuck client dropped", || {
        service_metric(&daemon, "mesura_p1_serve_dropped_clients_total") == 1.0
    })
    .await;

    // Joining mid-telegram: the dongle has sent half of telegram 301 when the
    // client comes; it gets 302 and 303, whole, from their `/`.
    to_meter.send(telegrams[300][..400].to_vec()).expect("meter");
    let late = connect(serve_port, None).await;
    wait_served(&late).await;
    let late = collect(late);
    to_meter
        .send(
            [
                &telegrams[300][400..],
                telegrams[301].as_slice(),
                telegrams[302].as_slice(),
            ]
            .concat(),
        )
        .expect("meter");
    let expected = telegrams[1..].concat();
    let expected_late = telegrams[301..].concat();
    wait_for(Duration::from_secs(20), "303 telegrams stored and served", || {
        stored(&db) >= 303
            && len(&a) >= expected.len()
            && len(&b) >= expected.len()
            && len(&late) >= expected_late.len()
    })
    .await;
    wait_for(Duration::from_secs(10), "three clients counted", || {
        service_metric(&daemon, "mesura_p1_serve_clients") == 3.0
    })
    .await;

    let summary = daemon.shutdown().await;
    meter.abort();
    assert_eq!(stored(&db), 303, "every telegram stored");
    assert_eq!(summary.dropped.values().sum::<u64>(), 0);
    let (a, b, late) = (
        a.lock().expect("lock").clone(),
        b.lock().expect("lock").clone(),
        late.lock().expect("lock").clone(),
    );
    assert!(
        a == expected,
        "client A: {} bytes, not the meter's {}",
        a.len(),
        expected.len()
    );
    assert!(b == a, "clients A and B differ");
    assert!(
        late == expected_late,
        "the late client: {:?}",
        String::from_utf8_lossy(&late[..late.len().min(80)])
    );
    assert!(late.starts_with(b"/"));

    let slow = format!("client={stuck_addr}");
    let dropped: Vec<String> = logs::text(&warnings)
        .lines()
        .filter(|l| l.contains("P1 serve client too slow") && l.contains(&slow))
        .map(str::to_owned)
        .collect();
    assert_eq!(dropped.len(), 1, "one WARN for the stuck client: {dropped:?}");
    assert!(logs::text(&info).contains("serving the raw P1 stream"));
    // The stuck client got a beginning of the stream, then its connection closed.
    let mut stuck = stuck;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stuck.read_to_end(&mut got))
        .await
        .expect("the stuck client's connection is closed")
        .ok();
    assert!(
        got.len() < expected.len() && expected.starts_with(&got),
        "{} bytes",
        got.len()
    );
    // The device is gone: so is its port.
    wait_for(Duration::from_secs(10), "the serve port free again", || {
        std::net::TcpListener::bind(("127.0.0.1", serve_port)).is_ok()
    })
    .await;
}

/// A port another program holds is the device's error in /health, not the end of
/// its reading; a changed file moves the port (the old one is freed, its client
/// disconnected); a device without `serve` listens nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_is_a_device_error_and_a_reload_moves_the_port() {
    // A dongle that sends a telegram every 50 ms on every connection.
    let dongle = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dongle_port = dongle.local_addr().expect("addr").port();
    let t0 = whole_second(Utc::now() - TimeDelta::hours(2));
    let meter = tokio::spawn(async move {
        let mut second = 0;
        loop {
            let Ok((mut socket, _)) = dongle.accept().await else {
                return;
            };
            loop {
                second += 1;
                let t = telegram_at(t0 + TimeDelta::seconds(second), 1.0);
                if socket.write_all(&t).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port();
    let device = |serve: &str| {
        format!("type: dsmr\nhost: 127.0.0.1\nport: {dongle_port}\npoll_interval: 0s\nmax_backoff: 1s\nfailure_threshold: 1000\n{serve}")
    };
    let setup = Setup::new("backends:\n  sqlite:\n    flush_interval: 100ms\nwatch:\n  enabled: false\n");
    setup.device("p1", &device(&format!("serve: 127.0.0.1:{busy_port}\n")));
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    let mut daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let db = setup.db_path();
    wait_for(
        Duration::from_secs(20),
        "telegrams stored despite the busy port",
        || stored(&db) >= 3,
    )
    .await;
    let status = daemon.status().devices()["p1"].clone();
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains(&format!("serve: cannot listen on 127.0.0.1:{busy_port}")) && error.contains("still read"),
        "{error}"
    );

    let port = free_port();
    setup.device("p1", &device(&format!("serve: 127.0.0.1:{port}\n")));
    daemon.reload().await;
    let mut client = connect(port, None).await;
    let mut first = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut first))
        .await
        .expect("bytes on the new port")
        .expect("read");
    assert_eq!(&first, b"/");

    setup.device("p1", &device(""));
    daemon.reload().await;
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest))
        .await
        .expect("the client disconnected when serve went")
        .ok();
    wait_for(Duration::from_secs(10), "the old port free", || {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    })
    .await;
    let before = stored(&db);
    wait_for(Duration::from_secs(20), "reading on without serve", || {
        stored(&db) > before
    })
    .await;
    daemon.shutdown().await;
    meter.abort();
    drop(busy);
}
