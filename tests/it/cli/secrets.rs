//! Secrets in URLs never reach a user's screen: `mesura check` and the log of a
//! running daemon whose uplink and weather service cannot be reached print the
//! URLs with their user info and credential parameters masked.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::uplink::free_port;
use crate::support::{wait_until, Setup};

const BIN: &str = env!("CARGO_BIN_EXE_mesura");
const SECRETS: [&str; 4] = ["url-password", "url-user", "query-token-value", "owm-appid-value"];

fn config(port: u16, token_key: &str) -> String {
    format!(
        "backends:\n  sqlite: null\n  uplink:\n    \
         url: http://url-user:url-password@127.0.0.1:{port}/ingest?db=home&token=query-token-value\n    \
         batch_interval: 200ms\n    max_backoff: 500ms\n    timeout: 1s\n{token_key}\
         watch:\n  enabled: false\napi:\n  enabled: false\n"
    )
}

fn weather(setup: &Setup, port: u16) {
    setup.device(
        "weather",
        &format!(
            "type: openweathermap\nlatitude: 52.1\nlongitude: 5.1\nappid: owm-appid-value\n\
             base_url: http://127.0.0.1:{port}/?api_key=owm-appid-value\npoll_interval: 1s\n"
        ),
    );
}

fn assert_no_secret(text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "`{secret}` shown:\n{text}");
    }
}

#[test]
fn check_masks_url_user_info_and_credential_parameters() {
    let port = free_port();
    let setup = Setup::new(&config(port, ""));
    weather(&setup, port);
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(setup.config_path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run mesura");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("http://***@127.0.0.1:{port}/ingest?db=home&token=***")),
        "{text}"
    );
    assert!(text.contains("api_key=***"), "{text}");
    assert_no_secret(&text);
}

#[test]
fn a_failing_uplink_and_weather_service_log_no_secret() {
    let port = free_port();
    let setup = Setup::new(&config(port, ""));
    weather(&setup, port);
    // Readings for the uplink to fail to deliver.
    setup.device("gas", "type: simulated\nprofile: gas\npoll_interval: 1s\n");
    let log = setup.dir.path().join("log.txt");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(setup.config_path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(30), "a failed delivery and a failed poll", || {
        let text = read();
        text.contains("uplink: delivery failed") && text.contains("OpenWeatherMap")
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    child.wait().expect("wait");
    let text = read();
    assert!(text.contains("token=***"), "{text}");
    assert_no_secret(&text);
}

#[test]
fn url_user_info_and_a_token_together_are_refused() {
    let setup = Setup::new(&config(free_port(), "    token: key-token\n"));
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(setup.config_path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run mesura");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("backends.uplink.token") && text.contains("backends.uplink.url"),
        "{text}"
    );
    assert_no_secret(&text);
}
