//! Failures where people look: a backend that cannot deliver and a device file
//! broken while its device runs show in /health (503 once a backend has failed for
//! longer than `api.unhealthy_after`), /api/devices and /metrics, and the log says a
//! change of state once, not once per retry.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::http_server::{Canned, Server};
use crate::support::{logs, Setup};
use mesura::daemon::app::Daemon;

const LIMIT: Duration = Duration::from_secs(30);

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    crate::support::api::get(addr, path, None).await
}

async fn health(addr: SocketAddr) -> (u16, serde_json::Value) {
    let (code, body) = get(addr, "/health").await;
    let json = serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    (code, json)
}

/// Polls /health until `check` holds; returns that answer.
async fn health_until(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let start = tokio::time::Instant::now();
    loop {
        let (code, json) = health(addr).await;
        if check(code, &json) {
            return (code, json);
        }
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}: {code} {json:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(setup: &Setup) -> Daemon {
    setup.start().await
}

fn sim(profile: &str) -> String {
    format!("type: simulated\nprofile: {profile}\npoll_interval: 1s\n")
}

/// Prints what a user sees, for docs/troubleshooting.md (`--nocapture`).
fn show(what: &str, json: &serde_json::Value) {
    println!("--- {what}\n{json:#}");
}

fn mqtt_config(port: u16, password_file: &Path) -> String {
    format!(
        "backends:\n  sqlite: null\n  mqtt:\n    host: 127.0.0.1\n    port: {port}\n    username: mesura\n    \
         password_file: {}\n    flush_interval: 200ms\nwatch:\n  enabled: false\n\
         api:\n  listen: 127.0.0.1:0\n  unhealthy_after: 1s\n",
        password_file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_mqtt_login_shows_in_health_and_is_logged_once_at_error() {
    let warnings = logs::warnings();
    let setup = Setup::new("");
    let passwords = setup.dir.path().join("passwd");
    let made = Command::new("mosquitto_passwd")
        .arg("-c")
        .arg("-b")
        .arg(&passwords)
        .args(["mesura", "right"])
        .status();
    assert!(made.expect("mosquitto_passwd").success());
    let broker = Broker::start(
        setup.dir.path(),
        &format!("allow_anonymous false\npassword_file {}", passwords.display()),
        "",
    );
    let (wrong, right) = (setup.dir.path().join("wrong.txt"), setup.dir.path().join("right.txt"));
    std::fs::write(&wrong, "nope\n").expect("password");
    std::fs::write(&right, "right\n").expect("password");
    std::fs::write(setup.config_path(), mqtt_config(broker.port, &wrong)).expect("config");
    setup.device("meter", &sim("electricity"));
    let mut daemon = start(&setup).await;
    let addr = daemon.api_addr().expect("the API runs");

    let (_, json) = health_until(addr, "mqtt unhealthy with readings waiting", |_, j| {
        j["backends"]["mqtt"]["healthy"] == false && j["backends"]["mqtt"]["outbox_depth"].as_u64() > Some(0)
    })
    .await;
    let mqtt = &json["backends"]["mqtt"];
    let error = mqtt["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("username or password refused"), "{json:#}");
    assert!(mqtt["failing_since"].is_string(), "{json:#}");

    // Past the grace (1 s here), /health says so with its status code; and by the
    // time three attempts have failed, the log still has one line about it.
    let (_, json) = health_until(addr, "503 after three attempts", |code, j| {
        code == 503 && j["backends"]["mqtt"]["failing_seconds"].as_f64() >= Some(4.0)
    })
    .await;
    assert_eq!(json["status"], "degraded");
    show("refused MQTT login", &json);
    let broker_field = format!("broker=127.0.0.1:{}", broker.port);
    let text = logs::text(&warnings);
    let said: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&broker_field) && l.contains("username or password refused"))
        .collect();
    assert_eq!(said.len(), 1, "once, not per retry: {said:#?}");
    assert!(said[0].contains("ERROR"), "{}", said[0]);
    println!("--- log\n{}", said[0]);

    let (_, metrics) = get(addr, "/metrics").await;
    assert!(metrics.contains("mesura_backend_up{backend=\"mqtt\"} 0"), "{metrics}");
    assert!(
        metrics.contains("mesura_backend_failing_seconds{backend=\"mqtt\"} "),
        "{metrics}"
    );

    std::fs::write(setup.config_path(), mqtt_config(broker.port, &right)).expect("config");
    daemon.reload().await;
    let (code, json) = health_until(addr, "mqtt delivering again", |_, j| {
        j["backends"]["mqtt"]["healthy"] == true && j["backends"]["mqtt"]["outbox_depth"] == 0
    })
    .await;
    assert_eq!(code, 200, "{json:#}");
    assert!(json["backends"]["mqtt"]["last_error"].is_null(), "{json:#}");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplink_answering_500_is_unhealthy_then_503_then_healthy_again() {
    let warnings = logs::warnings();
    let answer = Arc::new(AtomicU16::new(500));
    let status = answer.clone();
    let server = Server::start(move |_| Canned::status(status.load(Ordering::SeqCst), "database unavailable")).await;
    let setup = Setup::new(&format!(
        "backends:\n  sqlite: null\n  uplink:\n    url: {}/ingest\n    batch_interval: 200ms\n    max_backoff: 300ms\n    \
         timeout: 2s\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n  unhealthy_after: 1s\n",
        server.url
    ));
    setup.device("meter", &sim("gas"));
    let daemon = start(&setup).await;
    let addr = daemon.api_addr().expect("the API runs");

    let (_, json) = health_until(addr, "uplink unhealthy with readings waiting", |_, j| {
        j["backends"]["uplink"]["healthy"] == false && j["backends"]["uplink"]["outbox_depth"].as_u64() > Some(0)
    })
    .await;
    let uplink = &json["backends"]["uplink"];
    assert!(
        uplink["last_error"].as_str().is_some_and(|e| e.contains("HTTP 500")),
        "{json:#}"
    );
    assert!(uplink["failing_since"].is_string(), "{json:#}");
    let (_, json) = health_until(addr, "503 past the grace", |code, _| code == 503).await;
    assert_eq!(json["backends"]["uplink"]["healthy"], false);
    assert!(json["backends"]["uplink"]["outbox_oldest_age_seconds"]
        .as_i64()
        .is_some());
    show("uplink answering 500", &json);
    let (_, metrics) = get(addr, "/metrics").await;
    assert!(metrics.contains("mesura_backend_up{backend=\"uplink\"} 0"), "{metrics}");
    crate::support::uplink::until(LIMIT, "three attempts", || server.requests().len() >= 3).await;

    answer.store(204, Ordering::SeqCst);
    let (code, json) = health_until(addr, "uplink delivering again", |_, j| {
        j["backends"]["uplink"]["healthy"] == true && j["backends"]["uplink"]["outbox_depth"] == 0
    })
    .await;
    assert_eq!(code, 200, "{json:#}");
    assert!(json["backends"]["uplink"]["failing_since"].is_null(), "{json:#}");
    let (_, metrics) = get(addr, "/metrics").await;
    assert!(metrics.contains("mesura_backend_up{backend=\"uplink\"} 1"), "{metrics}");

    let text = logs::text(&warnings);
    let said: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&server.url) && l.contains("HTTP 500"))
        .collect();
    assert_eq!(said.len(), 1, "once per outage, not per retry: {said:#?}");
    assert!(said[0].contains("WARN"), "{}", said[0]);
    println!("--- log\n{}", said[0]);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_file_broken_while_running_shows_in_health_and_devices() {
    let setup =
        Setup::new("backends:\n  sqlite: null\n  csv: {}\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n");
    setup.device("meter", &sim("electricity"));
    let mut daemon = start(&setup).await;
    let addr = daemon.api_addr().expect("the API runs");
    health_until(addr, "the meter running", |_, j| j["devices"]["meter"].is_object()).await;

    // A typo in the running device's file, and a new file broken from the start.
    setup.device("meter", "type: simulated\nprofile: electricity\npoll_intervall: 2s\n");
    setup.device("newbie", "type: simulated\nprofile: nope\n");
    daemon.reload().await;
    let (code, json) = health(addr).await;
    show("device file broken while running", &json);
    assert_eq!(code, 200, "the device runs on: {json:#}");
    let meter = &json["devices"]["meter"];
    let error = meter["config_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("meter.yaml")
            && error.contains("poll_intervall")
            && error.contains("running the previous settings"),
        "{json:#}"
    );
    assert_eq!(meter["healthy"], true, "{json:#}");
    let newbie = json["config_errors"]["newbie"].as_str().unwrap_or_default();
    assert!(
        newbie.contains("newbie.yaml") && newbie.contains("not started"),
        "{json:#}"
    );

    let (_, body) = get(addr, "/api/devices").await;
    let devices: serde_json::Value = serde_json::from_str(body.trim()).expect("JSON");
    let listed = devices["devices"]
        .as_array()
        .and_then(|l| l.iter().find(|d| d["id"] == "meter"))
        .expect("the meter is listed");
    assert_eq!(listed["config_error"].as_str(), Some(error), "{devices:#}");
    assert!(devices["config_errors"]["newbie"].is_string(), "{devices:#}");
    let (_, metrics) = get(addr, "/metrics").await;
    assert!(
        metrics.contains("mesura_device_config_error{device=\"meter\"} 1"),
        "{metrics}"
    );

    setup.device("meter", &sim("electricity"));
    std::fs::remove_file(setup.dir.path().join("config.d/newbie.yaml")).expect("remove");
    daemon.reload().await;
    let (_, json) = health(addr).await;
    assert!(json["devices"]["meter"]["config_error"].is_null(), "{json:#}");
    assert_eq!(json["config_errors"], serde_json::json!({}), "{json:#}");
    daemon.shutdown().await;
}
