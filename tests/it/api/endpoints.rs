//! The status API over real HTTP against a running daemon: every endpoint, auth,
//! bad parameters, a failing device; /metrics through promtool; systemd notify.

use std::time::Duration;

use crate::support::api::{get, json};
use crate::support::{no_env, sqlite_rows, Setup};
use mesura::config::Config;

async fn wait(what: &str, mut check: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const BASE: &str =
    "backends:\n  sqlite:\n    flush_interval: 100ms\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_and_bad_parameters_are_400() {
    let setup = Setup::new(BASE);
    setup.device("meter", "type: simulated\nprofile: electricity\npoll_interval: 1s\n");
    setup.device("room", "type: simulated\nprofile: climate\npoll_interval: 1s\n");
    let daemon = setup.start().await;
    let addr = daemon.api_addr().expect("the API runs");
    wait("rows", || sqlite_rows(&setup.db_path(), "meter") >= 2).await;

    let (code, body) = get(addr, "/health", None).await;
    assert_eq!(code, 200, "{body}");
    let health = json(&body);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["devices"]["meter"]["breaker"], "closed");
    assert_eq!(health["backends"]["sqlite"]["healthy"], true);
    assert_eq!(health["disk_guard"]["max_used_percent"], 90.0, "{body}");

    // The disk guard checks once at start: its view of the disk shows in /metrics
    // and /health, and agrees with df.
    let start = tokio::time::Instant::now();
    let metrics = loop {
        let (_, body) = get(addr, "/metrics", None).await;
        if body.contains("\nmesura_disk_guard_checks_total 1") {
            break body;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no disk guard check: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sample = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing"));
        line[name.len() + 1..].parse().expect("a number")
    };
    assert_eq!(sample("mesura_disk_guard_max_used_ratio"), 0.9);
    assert_eq!(sample("mesura_disk_guard_errors_total"), 0.0);
    let used = sample("mesura_disk_used_ratio");
    let df = std::process::Command::new("df")
        .args(["--output=pcent"])
        .arg(setup.db_path().parent().expect("data dir"))
        .output()
        .expect("df runs");
    let df_pct: f64 = String::from_utf8_lossy(&df.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().trim_end_matches('%').parse().ok())
        .expect("df prints Use%");
    assert!((used * 100.0 - df_pct).abs() <= 2.0, "guard {used}, df {df_pct}%");
    let (_, body) = get(addr, "/health", None).await;
    let used_pct = json(&body)["disk_guard"]["used_percent"]
        .as_f64()
        .expect("used_percent");
    assert!((used_pct - used * 100.0).abs() < 1e-9);

    let (code, body) = get(addr, "/api/devices", None).await;
    assert_eq!(code, 200);
    let devices = json(&body);
    let ids: Vec<&str> = devices["devices"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["meter", "room"]);

    let (code, body) = get(addr, "/api/readings/latest?device=room", None).await;
    assert_eq!(code, 200);
    let latest = json(&body);
    let t = latest["readings"]["room"]["temperature"]["value"]
        .as_f64()
        .expect("a temperature");
    assert!((15.0..25.0).contains(&t));
    assert_eq!(latest["readings"]["room"]["temperature"]["unit"], "°C");
    assert!(latest["readings"].get("meter").is_none());

    let now = chrono::Utc::now().timestamp();
    let path = format!(
        "/api/readings?device=meter&metric=power_delivered&from={}&to={}&limit=1",
        now - 60,
        now + 60
    );
    let (code, body) = get(addr, &path, None).await;
    assert_eq!(code, 200, "{body}");
    let page = json(&body);
    assert_eq!(page["rows"].as_array().map(Vec::len), Some(1));
    assert!(page["rows"][0]["values"]["power_delivered"].is_number());
    assert_eq!(page["metrics"]["power_delivered"]["unit"], "W");
    let next = page["next_from"].as_i64().expect("a next page");
    let (code, body) = get(addr, &format!("/api/readings?device=meter&from={next}&limit=2"), None).await;
    assert_eq!(code, 200);
    assert!(json(&body)["rows"][0]["ts"].as_i64().expect("ts") >= next);
    let rfc = chrono::DateTime::from_timestamp(now - 60, 0)
        .expect("time")
        .to_rfc3339();
    let (code, _) = get(
        addr,
        &format!("/api/readings?device=meter&from={}", rfc.replace('+', "%2B")),
        None,
    )
    .await;
    assert_eq!(code, 200);

    for (path, expected) in [
        ("/api/readings", 400),
        ("/api/readings?device=meter&from=yesterday", 400),
        ("/api/readings?device=meter&limit=0", 400),
        ("/api/readings?device=meter&limit=many", 400),
        ("/api/readings?device=meter&from=100&to=50", 400),
        ("/api/readings?device=nope", 404),
        ("/api/readings?device=meter&metric=nope", 404),
        ("/api/readings/latest?device=nope", 404),
    ] {
        let (code, body) = get(addr, path, None).await;
        assert_eq!(code, expected, "{path}: {body}");
        assert!(json(&body)["error"].is_string(), "{path}: {body}");
    }

    let (code, page) = get(addr, "/", None).await;
    assert_eq!(code, 200);
    assert!(page.contains("<title>mesura</title>"));
    // Self-contained: the page and its chart library come from the daemon, nothing
    // from a CDN.
    for attribute in ["src=\"", "href=\""] {
        for url in page.split(attribute).skip(1).filter_map(|rest| rest.split('"').next()) {
            assert!(
                url.starts_with("/assets/") || url.starts_with("data:"),
                "not from the daemon: {url}"
            );
            if let Some(asset) = url.strip_prefix("/") {
                let (code, _) = get(addr, &format!("/{asset}"), None).await;
                assert_eq!(code, 200, "{url}");
            }
        }
    }
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("import("),
        "self-contained: nothing from a CDN"
    );
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_the_api_and_a_failing_device_shows() {
    let setup = Setup::new(&format!("{BASE}  token: s3cret-token\n"));
    setup.device("good", "type: simulated\nprofile: gas\npoll_interval: 1s\n");
    setup.device(
        "broken",
        "type: simulated\nprofile: gas\npoll_interval: 1s\nfailure_rate: 1.0\nfailure_threshold: 2\nbreaker_cooldown: 1h\n",
    );
    let daemon = setup.start().await;
    let addr = daemon.api_addr().expect("the API runs");
    assert_eq!(get(addr, "/health", None).await.0, 401);
    assert_eq!(get(addr, "/metrics", Some("s3cret-tokeN")).await.0, 401);
    assert_eq!(get(addr, "/api/devices", Some("s3cret")).await.0, 401);
    assert_eq!(get(addr, "/", None).await.0, 200, "the page itself asks for the token");

    let status = daemon.status().clone();
    wait("the breaker open", || {
        status
            .devices()
            .get("broken")
            .is_some_and(|d| d.breaker == mesura::daemon::retry::BreakerState::Open)
    })
    .await;
    let (code, body) = get(addr, "/health", Some("s3cret-token")).await;
    assert_eq!(code, 503, "{body}");
    let health = json(&body);
    assert_eq!(health["devices"]["broken"]["breaker"], "open");
    assert_eq!(health["devices"]["broken"]["healthy"], false);
    assert_eq!(health["devices"]["good"]["healthy"], true);
    assert!(health["devices"]["broken"]["last_error"]
        .as_str()
        .is_some_and(|e| e.contains("simulated link failure")));

    let (code, metrics) = get(addr, "/metrics", Some("s3cret-token")).await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("mesura_device_breaker_state{device=\"broken\",state=\"open\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mesura_poll_errors_total{device=\"broken\",kind=\"link\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mesura_backend_write_duration_seconds_bucket{backend=\"sqlite\",le=\"+Inf\"}"),
        "{metrics}"
    );
    let file = setup.dir.path().join("metrics.txt");
    std::fs::write(&file, &metrics).expect("write");
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("promtool is installed by scripts/test.sh (Debian package prometheus)");
    let out = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("open"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.shutdown().await;
}

#[test]
fn a_non_loopback_api_without_a_token_is_refused() {
    let setup = Setup::new("api:\n  listen: 0.0.0.0:9360\n");
    let err = Config::load(&setup.config_path(), &no_env)
        .expect_err("must be refused")
        .to_string();
    assert!(err.contains("api.listen") && err.contains("without a token"), "{err}");
}

#[test]
fn systemd_notify_ready_status_and_watchdog() {
    let setup = Setup::new("api:\n  enabled: false\nwatch:\n  enabled: false\n");
    setup.device("meter", "type: simulated\nprofile: gas\npoll_interval: 1s\n");
    let socket_path = setup.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mesura"))
        .arg("--config")
        .arg(setup.config_path())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut buf = [0u8; 512];
    let mut messages = Vec::new();
    while messages.iter().filter(|m: &&String| m.as_str() == "WATCHDOG=1").count() < 3 {
        let n = socket.recv(&mut buf).expect("a notification in time");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(messages[0].starts_with("READY=1\nSTATUS=1 devices"), "{messages:?}");
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    loop {
        let n = socket.recv(&mut buf).expect("STOPPING in time");
        if &buf[..n] == b"STOPPING=1" {
            break;
        }
    }
    assert!(child.wait().expect("wait").success());
}
