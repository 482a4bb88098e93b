//! The `openweathermap` device against a local HTTP server replaying recorded
//! answers: the request it sends, the readings it makes, and every failure it
//! must survive (401, 429, 500, timeouts, garbage) without leaking the API key.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use mesura::host::clock::Clock;

use crate::support::http_server::{fixture, Canned, ManualClock, Server};
use mesura::config::{parse_device, DeviceKind};
use mesura::monitors::openweathermap::OpenWeatherMapMonitor;
use mesura::monitors::{Monitor, MonitorContext, MonitorError};
use mesura::reading::{Reading, Value};

const KEY: &str = "k3y-that-must-never-show";

/// A monitor with a data directory of its own: a 429 pause kept there by one test
/// must not pause another.
fn monitor(url: &str, clock: Arc<ManualClock>, extra: &str) -> OpenWeatherMapMonitor {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    monitor_in(&dir, url, clock, extra)
}

fn monitor_in(data_dir: &Path, url: &str, clock: Arc<ManualClock>, extra: &str) -> OpenWeatherMapMonitor {
    let src = format!("type: openweathermap\nlatitude: 52.37\nlongitude: 4.89\nappid: {KEY}\nbase_url: {url}\n{extra}");
    let device = parse_device(Path::new("weather.yaml"), &src, &[]).unwrap_or_else(|e| panic!("{e}"));
    let DeviceKind::Openweathermap(config) = &device.kind else {
        panic!("not an openweathermap device")
    };
    let ctx = MonitorContext {
        id: device.id.clone(),
        clock,
        data_dir: data_dir.to_path_buf(),
        poll_interval: std::time::Duration::from_secs(1),
        file: std::path::PathBuf::new(),
    };
    OpenWeatherMapMonitor::new(config, device.poll_interval(), ctx).unwrap_or_else(|e| panic!("{e}"))
}

/// A server whose answer the test can change between reads.
async fn serve(first: Canned) -> (Server, Arc<Mutex<Canned>>) {
    let answer = Arc::new(Mutex::new(first));
    let shared = answer.clone();
    let server = Server::start(move |_| shared.lock().expect("answer").clone()).await;
    (server, answer)
}

fn value(readings: &[Reading], metric: &str) -> Option<f64> {
    readings
        .iter()
        .find(|r| &*r.metric == metric)
        .and_then(|r| r.value.as_f64())
}

fn assert_no_key(e: &MonitorError) {
    assert!(!e.to_string().contains(KEY), "the API key leaked: {e}");
}

#[tokio::test]
async fn a_recorded_answer_becomes_readings_stamped_with_the_observation_time() {
    let (server, _) = serve(Canned::json(fixture(
        "openweathermap/owm25_weather_munich_overcast.json",
    )))
    .await;
    // Polled two minutes after the observation, as the service is meant to be.
    let mut m = monitor(
        &server.url,
        ManualClock::at(munich_observed() + TimeDelta::minutes(2)),
        "",
    );
    let readings = m.read().await.unwrap_or_else(|e| panic!("{e}"));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path(), "/data/2.5/weather");
    for part in ["lat=52.37", "lon=4.89", "units=metric", &format!("appid={KEY}")] {
        assert!(requests[0].target.contains(part), "{} lacks {part}", requests[0].target);
    }
    assert_eq!(readings.len(), 13, "no wind_gust in this answer: {readings:?}");
    assert!(readings.iter().all(|r| r.timestamp == munich_observed()));
    assert_eq!(skewed(&m), 0);
    assert_eq!(value(&readings, "temperature"), Some(-0.27));
    assert_eq!(value(&readings, "feels_like"), Some(-3.9));
    assert_eq!(value(&readings, "pressure"), Some(1018.0));
    assert_eq!(value(&readings, "wind_direction"), Some(220.0));
    assert_eq!(value(&readings, "rain_1h"), Some(0.0));
    assert_eq!(value(&readings, "condition_id"), Some(804.0));
    assert_eq!(value(&readings, "wind_gust"), None);
    let t = readings
        .iter()
        .find(|r| &*r.metric == "temperature")
        .map(|r| r.unit.symbol());
    assert_eq!(t, Some("°C"));

    // The other recorded answers, end to end.
    let (server, _) = serve(Canned::json(fixture(
        "openweathermap/owm25_weather_zocca_rain_docs_example.json",
    )))
    .await;
    let readings = monitor(&server.url, ManualClock::new(), "")
        .read()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(value(&readings, "rain_1h"), Some(3.16));
    assert_eq!(value(&readings, "wind_gust"), Some(1.18));
    assert_eq!(readings.len(), 14);
    let (server, _) = serve(Canned::json(fixture(
        "openweathermap/owm25_weather_munich_rain_and_snow.json",
    )))
    .await;
    let readings = monitor(&server.url, ManualClock::new(), "")
        .read()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(value(&readings, "humidity"), Some(93.7));
    assert_eq!(value(&readings, "condition_id"), Some(615.0));
    assert!(readings.iter().all(|r| matches!(r.value, Value::Number(_))));
}

/// `dt` of owm25_weather_munich_overcast.json.
fn munich_observed() -> DateTime<Utc> {
    DateTime::from_timestamp(1_744_200_000, 0).expect("instant")
}

fn skewed(m: &OpenWeatherMapMonitor) -> u64 {
    let errors = m.protocol_errors();
    let n = errors.iter().find(|(kind, _)| *kind == "device_time_skewed");
    n.map_or(0, |(_, n)| *n)
}

#[tokio::test]
async fn a_stale_observation_time_gives_the_poll_time_and_is_counted() {
    let (server, _) = serve(Canned::json(fixture(
        "openweathermap/owm25_weather_munich_overcast.json",
    )))
    .await;
    // A cached or broken answer: the observation is three days older than the host clock.
    let clock = ManualClock::at(munich_observed() + TimeDelta::days(3));
    let mut m = monitor(&server.url, clock.clone(), "");
    let readings = m.read().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(readings.len(), 13);
    assert!(readings.iter().all(|r| r.timestamp == clock.now()), "{readings:?}");
    assert_eq!(skewed(&m), 1);
    clock.advance(Duration::from_secs(600));
    let readings = m.read().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(readings.iter().all(|r| r.timestamp == clock.now()));
    assert_eq!(skewed(&m), 2, "every occurrence is counted");

    // A device that allows a week keeps the observation's own time.
    let mut lenient = monitor(&server.url, clock.clone(), "max_clock_skew: 7d\n");
    let readings = lenient.read().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(readings.iter().all(|r| r.timestamp == munich_observed()));
    assert_eq!(skewed(&lenient), 0);

    // `dt: 0`, a clock that was never set, is invalid rather than skewed.
    let (server, _) = serve(Canned::json(r#"{"main":{"temp":4.5},"dt":0}"#)).await;
    let mut m = monitor(&server.url, clock.clone(), "");
    let readings = m.read().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(readings.iter().all(|r| r.timestamp == clock.now()));
    assert!(
        m.protocol_errors().contains(&("device_time_invalid", 1)),
        "{:?}",
        m.protocol_errors()
    );
}

#[tokio::test]
async fn a_refused_key_is_a_configuration_error_that_says_so() {
    let body = r#"{"cod":401, "message": "Invalid API key. Please see https://openweathermap.org/faq#error401 for more info."}"#;
    let (server, _) = serve(Canned::status(401, body)).await;
    let mut m = monitor(&server.url, ManualClock::new(), "");
    let e = m.read().await.err().unwrap_or_else(|| panic!("a 401 must fail"));
    assert!(matches!(e, MonitorError::Config { .. }), "{e:?}");
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(text.contains("invalid") && text.contains("not active yet"), "{text}");
    assert_no_key(&e);
}

#[tokio::test]
async fn a_429_pauses_requests_for_the_time_asked_or_15_minutes() {
    let clock = ManualClock::new();
    let (server, answer) = serve(Canned::status(429, r#"{"cod":429}"#).header("Retry-After", "120")).await;
    let mut m = monitor(&server.url, clock.clone(), "");
    let e = m.read().await.err().unwrap_or_else(|| panic!("a 429 must fail"));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(120)), "{e}");
    assert!(m.is_suspended());
    // While paused nothing is sent.
    clock.advance(Duration::from_secs(119));
    let e = m.read().await.err().unwrap_or_else(|| panic!("still paused"));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(server.requests().len(), 1);
    // Then the next read asks again; without Retry-After the pause is 15 minutes.
    clock.advance(Duration::from_secs(1));
    *answer.lock().expect("answer") = Canned::status(429, "");
    let e = m.read().await.err().unwrap_or_else(|| panic!("a 429 must fail"));
    assert_eq!(server.requests().len(), 2);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(15 * 60)));
    clock.advance(Duration::from_secs(15 * 60 - 1));
    assert!(m.read().await.is_err());
    assert_eq!(server.requests().len(), 2);
    clock.advance(Duration::from_secs(1));
    *answer.lock().expect("answer") = Canned::json(fixture("openweathermap/owm25_weather_munich_overcast.json"));
    assert!(m.read().await.is_ok());
    assert_eq!(server.requests().len(), 3);
}

/// A config edit restarts the device: the new monitor keeps the pause a 429
/// started, so nothing is sent inside the rate-limit window.
#[tokio::test]
async fn a_429_pause_outlives_a_restart() {
    let clock = ManualClock::new();
    let data = tempfile::tempdir().expect("tempdir");
    let (server, answer) = serve(Canned::status(429, r#"{"cod":429}"#)).await;
    let mut m = monitor_in(data.path(), &server.url, clock.clone(), "");
    let e = m.read().await.err().unwrap_or_else(|| panic!("a 429 must fail"));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(15 * 60)), "{e}");
    drop(m);
    *answer.lock().expect("answer") = Canned::json(fixture("openweathermap/owm25_weather_munich_overcast.json"));
    clock.advance(Duration::from_secs(5 * 60));
    let mut restarted = monitor_in(data.path(), &server.url, clock.clone(), "timeout: 3s\n");
    let e = restarted
        .read()
        .await
        .err()
        .unwrap_or_else(|| panic!("the pause was forgotten"));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(10 * 60)), "{e}");
    assert_eq!(server.requests().len(), 1, "nothing sent inside the window");
    clock.advance(Duration::from_secs(10 * 60));
    assert!(restarted.read().await.is_ok());
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test]
async fn server_errors_garbage_and_silence_are_clear_errors() {
    let (server, answer) = serve(Canned::status(500, "<html>Internal Server Error</html>")).await;
    let mut m = monitor(&server.url, ManualClock::new(), "timeout: 1s\n");
    let e = m.read().await.err().unwrap_or_else(|| panic!("500 must fail"));
    assert!(
        matches!(&e, MonitorError::Refused { message: t, .. } if t.contains("500")),
        "{e:?}"
    );
    assert_no_key(&e);

    *answer.lock().expect("answer") = Canned::json("{\"main\": {\"temp\": 1.0");
    let e = m
        .read()
        .await
        .err()
        .unwrap_or_else(|| panic!("truncated JSON must fail"));
    assert!(
        matches!(&e, MonitorError::InvalidData { message: t, .. } if t.contains("not JSON")),
        "{e:?}"
    );

    *answer.lock().expect("answer") = Canned::json("{}").delayed(Duration::from_secs(5));
    let e = m.read().await.err().unwrap_or_else(|| panic!("silence must fail"));
    assert!(
        matches!(&e, MonitorError::Link { message: t, .. } if t.contains("no answer within 1s")),
        "{e:?}"
    );
    assert_no_key(&e);

    // Nobody listening at all.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let e = monitor(&closed, ManualClock::new(), "")
        .read()
        .await
        .err()
        .unwrap_or_else(|| panic!("must fail"));
    assert!(matches!(&e, MonitorError::Link { .. }), "{e:?}");
    assert_no_key(&e);
    assert!(!format!("{e:?}").contains(KEY));
}
