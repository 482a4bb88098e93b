//! The status API as an attacker meets it on loopback: DNS rebinding (a foreign
//! `Host`), slowloris (connections that dribble their headers), huge or repeated
//! parameters; and `/api/readings?order=`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{no_env, sqlite_rows, Setup};
use mesura::config::Config;
use mesura::daemon::app::Daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const BASE: &str =
    "backends:\n  sqlite:\n    flush_interval: 100ms\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n";

/// Sends `request` as it is; returns the status code and the body.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

async fn get(addr: SocketAddr, path: &str, host: &str) -> (u16, String) {
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

async fn start(setup: &Setup) -> Daemon {
    setup.device("meter", "type: simulated\nprofile: electricity\npoll_interval: 1s\n");
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start")
}

async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loopback_a_foreign_host_gets_421() {
    let setup = Setup::new(BASE);
    let daemon = start(&setup).await;
    let addr = daemon.api_addr().expect("the API runs");
    let port = addr.port();
    for host in [
        "localhost".to_owned(),
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (code, body) = get(addr, "/api/devices", &host).await;
        assert_eq!(code, 200, "{host}: {body}");
    }
    for host in ["evil.example", &format!("evil.example:{port}"), "192.168.1.5"] {
        let (code, body) = get(addr, "/api/devices", host).await;
        assert_eq!(code, 421, "{host}: {body}");
        assert!(
            json(&body)["error"]
                .as_str()
                .is_some_and(|e| e.contains("api.allowed_hosts")),
            "{body}"
        );
        assert!(!body.contains("meter"), "no data: {body}");
    }
    daemon.shutdown().await;

    let setup = Setup::new(&format!("{BASE}  allowed_hosts: [mesura.home.arpa]\n"));
    let daemon = start(&setup).await;
    let addr = daemon.api_addr().expect("the API runs");
    assert_eq!(get(addr, "/health", "Mesura.Home.Arpa:80").await.0, 200);
    assert_eq!(get(addr, "/health", "evil.example").await.0, 421);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_and_echo_values_cut_short() {
    let setup = Setup::new(BASE);
    let daemon = start(&setup).await;
    let addr = daemon.api_addr().expect("the API runs");
    until("rows", Duration::from_secs(20), || {
        sqlite_rows(&setup.db_path(), "meter") >= 1
    })
    .await;
    let huge = "x".repeat(56 * 1024);
    for (path, code) in [
        (format!("/api/readings?device={huge}"), 404),
        (format!("/api/readings?device=meter&metric={huge}"), 404),
        (format!("/api/readings?device=meter&from={huge}"), 400),
        (format!("/api/readings?device=meter&order={huge}"), 400),
        (format!("/api/readings/latest?device={huge}"), 404),
        ("/api/readings?device=meter&device=meter".to_owned(), 400),
        ("/api/readings/latest?device=a&device=b".to_owned(), 400),
        ("/api/readings?device=meter&limit=%ZZ".to_owned(), 400),
        (format!("/no/such/{huge}"), 404),
    ] {
        let (got, body) = get(addr, &path, "localhost").await;
        let short = &path[..path.len().min(60)];
        assert_eq!(got, code, "{short}: {body}");
        let error = json(&body)["error"].as_str().map(str::to_owned);
        assert!(error.is_some(), "{short}: {body}");
        assert!(body.len() < 400, "{short}: {} bytes: {body}", body.len());
    }
    let (_, body) = get(addr, &format!("/api/readings?device={huge}"), "localhost").await;
    assert!(body.contains(&format!("{}…", "x".repeat(64))), "{body}");
    let (code, body) = raw(
        addr,
        "POST /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 405, "{body}");
    assert!(json(&body)["error"].is_string());
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_come_oldest_first_or_newest_first_with_order_desc() {
    let setup = Setup::new(BASE);
    let daemon = start(&setup).await;
    let addr = daemon.api_addr().expect("the API runs");
    until("three rows", Duration::from_secs(20), || {
        sqlite_rows(&setup.db_path(), "meter") >= 3
    })
    .await;
    let ts = |body: &str| -> Vec<i64> {
        json(body)["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["ts"].as_i64().expect("ts"))
            .collect()
    };
    let (code, body) = get(addr, "/api/readings?device=meter", "localhost").await;
    assert_eq!(code, 200, "{body}");
    let asc = ts(&body);
    assert!(asc.len() >= 3 && asc.windows(2).all(|w| w[0] < w[1]), "{asc:?}");
    assert_eq!(json(&body)["order"], "asc");

    let (code, body) = get(addr, "/api/readings?device=meter&order=desc&limit=2", "localhost").await;
    assert_eq!(code, 200, "{body}");
    let desc = ts(&body);
    assert_eq!(desc.len(), 2);
    assert!(desc[0] > desc[1], "{desc:?}");
    assert!(desc[0] >= *asc.last().expect("a row"), "the newest row comes first");
    let next_to = json(&body)["next_to"].as_i64().expect("a next page going back");
    assert_eq!(next_to, desc[1]);
    let (_, body) = get(
        addr,
        &format!("/api/readings?device=meter&order=desc&limit=1&to={next_to}"),
        "localhost",
    )
    .await;
    assert!(ts(&body)[0] < desc[1], "{body}");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_connections_are_closed_and_readings_keep_landing() {
    let setup = Setup::new(&format!("{BASE}  header_read_timeout: 1s\n  max_connections: 64\n"));
    let daemon = start(&setup).await;
    let addr = daemon.api_addr().expect("the API runs");
    until("rows", Duration::from_secs(20), || {
        sqlite_rows(&setup.db_path(), "meter") >= 1
    })
    .await;

    // 100 clients that send part of a request line, then a byte now and then.
    let started = Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..100 {
        attackers.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.write_all(b"GET /health HTTP/1.1\r\nX-a: ").await.expect("write");
            let mut buf = [0u8; 512];
            // Until the server closes: reading 0 bytes or failing to write.
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => match read {
                        Ok(0) | Err(_) => return started.elapsed(),
                        Ok(_) => {}
                    },
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        if stream.write_all(b"a").await.is_err() {
                            return started.elapsed();
                        }
                    }
                }
            }
        }));
    }
    let rows_before = sqlite_rows(&setup.db_path(), "meter");
    // A normal request is answered meanwhile: at once or when slots free up.
    let (code, body) = tokio::time::timeout(Duration::from_secs(10), get(addr, "/health", "localhost"))
        .await
        .expect("a normal request answered during the attack");
    assert_eq!(code, 200, "{body}");
    let mut closed_after = Vec::new();
    for attacker in attackers {
        let elapsed = tokio::time::timeout(Duration::from_secs(15), attacker)
            .await
            .expect("a slow connection closed by the server")
            .expect("attacker task");
        closed_after.push(elapsed);
    }
    let slowest = closed_after.iter().max().copied().unwrap_or_default();
    // 100 connections, 64 at a time, 1 s each: two rounds, with room for a busy box.
    assert!(
        slowest < Duration::from_secs(8),
        "the last slow connection lasted {slowest:?}"
    );
    let rows_after = sqlite_rows(&setup.db_path(), "meter");
    assert!(
        rows_after > rows_before,
        "readings landed during the attack: {rows_before} → {rows_after}"
    );
    daemon.shutdown().await;
}
