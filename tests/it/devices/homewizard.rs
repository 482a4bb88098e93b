//! The `homewizard` device against a local HTTP server serving the recorded JSON of
//! a real HWE-P1 (tests/fixtures/homewizard/). Expected values are read off the
//! JSON by hand; errors (500, 403, a hang, nobody listening, not JSON) must come back
//! as the right `MonitorError`, never a panic.

use crate::support::homewizard::{fixture, names, now, reading, utc, value, RECORDED_TIMES};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesura::monitors::{Monitor, MonitorError};
use mesura::reading::{Kind, Reading, Unit, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server answers for a path.
#[derive(Clone)]
enum Answer {
    Json(u16, String),
    /// Accept, read the request, never answer.
    Hang,
}

type Routes = Arc<Mutex<HashMap<String, Answer>>>;

/// A minimal HTTP/1.1 server: one request per connection, `Connection: close`.
async fn server(routes: Routes) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let routes = routes.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let answer = routes.lock().expect("routes").get(&path).cloned();
                let (status, body) = match answer {
                    Some(Answer::Json(status, body)) => (status, body),
                    Some(Answer::Hang) => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    None => (404, "{\"error\":\"not found\"}".to_owned()),
                };
                let reason = match status {
                    200 => "OK",
                    403 => "Forbidden",
                    404 => "Not Found",
                    _ => "Internal Server Error",
                };
                let response = format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    port
}

fn monitor(port: u16, extra: &str) -> Box<dyn Monitor> {
    let yaml = format!("type: homewizard\nhost: 127.0.0.1\nport: {port}\n{extra}");
    crate::support::homewizard::monitor(&yaml).expect("monitor")
}

/// Serves `/api` and `data` as `/api/v1/data`, and reads once.
async fn read_fixture(data: &str) -> Vec<Reading> {
    read_fixture_with(data, RECORDED_TIMES).await.0
}

/// The same with `extra` keys; also gives the monitor's protocol error totals.
async fn read_fixture_with(data: &str, extra: &str) -> (Vec<Reading>, Vec<(&'static str, u64)>) {
    let routes: Routes = Arc::default();
    {
        let mut r = routes.lock().expect("routes");
        r.insert("/api".into(), Answer::Json(200, fixture("v1_api_device_p1.json")));
        r.insert("/api/v1/data".into(), Answer::Json(200, fixture(data)));
    }
    let port = server(routes).await;
    let mut m = monitor(port, extra);
    let readings = m.read().await.expect("read");
    (readings, m.protocol_errors())
}

#[tokio::test]
async fn full_answer() {
    let r = read_fixture("v1_data_p1_full.json").await;
    assert_eq!(value(&r, "energy_delivered_total"), 13779.338);
    assert_eq!(value(&r, "energy_delivered_tariff1"), 10830.511);
    assert_eq!(value(&r, "energy_delivered_tariff2"), 2948.827);
    assert_eq!(value(&r, "energy_returned_total"), 0.0);
    assert_eq!(value(&r, "energy_returned_tariff2"), 0.0);
    // active_power_w -543: returned, not delivered; same per phase.
    assert_eq!(value(&r, "power_delivered"), 0.0);
    assert_eq!(value(&r, "power_returned"), 543.0);
    assert_eq!(value(&r, "power_returned_l1"), 676.0);
    assert_eq!(value(&r, "power_delivered_l2"), 133.0);
    assert_eq!(value(&r, "power_returned_l2"), 0.0);
    // active_current_l1_a -4: stored unsigned, like a DSMR meter sends it.
    assert_eq!(value(&r, "current_l1"), 4.0);
    assert_eq!(value(&r, "frequency"), 50.0);
    assert_eq!(value(&r, "tariff"), 2.0);
    assert_eq!(value(&r, "power_failures"), 4.0);
    assert_eq!(value(&r, "long_power_failures"), 5.0);
    assert_eq!(value(&r, "voltage_sags_l1"), 1.0);
    assert_eq!(value(&r, "voltage_swells_l3"), 0.0);
    assert_eq!(value(&r, "peak_demand_current_quarter"), 123.0);
    let peak = reading(&r, "peak_demand_month");
    assert_eq!(peak.value, Value::Number(1111.0));
    // montly_power_peak_timestamp 230101080010: 1 Jan 2023 08:00:10 CET.
    assert_eq!(peak.timestamp, utc("2023-01-01T07:00:10Z"));
    // total_gas_m3 at gas_timestamp 210606140010: 6 June 2021 14:00:10 CEST.
    let gas = reading(&r, "gas_delivered");
    assert_eq!(gas.value, Value::Number(2569.646));
    assert_eq!((gas.unit, gas.kind), (Unit::CubicMetre, Kind::Counter));
    assert_eq!(gas.timestamp, utc("2021-06-06T12:00:10Z"));
    // external[]: the gas meter is the one above (same id); warm water and water are
    // water meters; the heat meters report m3, which is no heat unit: skipped.
    assert_eq!(value(&r, "water_delivered"), 333.333);
    assert_eq!(value(&r, "water_delivered_2"), 444.444);
    assert!(!names(&r)
        .iter()
        .any(|n| n.starts_with("heat_") || *n == "gas_delivered_2"));
    assert_eq!(reading(&r, "power_returned").timestamp, now());
    assert_eq!(reading(&r, "energy_delivered_tariff1").unit, Unit::KiloWattHour);
}

#[tokio::test]
async fn meter_times_far_from_the_host_clock_give_the_poll_time_and_are_counted() {
    // The recorded answer read with the default max_clock_skew (1 day): its gas
    // capture time (2021), monthly peak (2023) and water meters' times (2021) are
    // years before the host clock.
    let (r, errors) = read_fixture_with("v1_data_p1_full.json", "").await;
    for metric in [
        "gas_delivered",
        "peak_demand_month",
        "water_delivered",
        "water_delivered_2",
    ] {
        assert_eq!(reading(&r, metric).timestamp, now(), "{metric}");
    }
    assert!(r.iter().all(|r| r.timestamp == now()));
    assert!(errors.contains(&("device_time_skewed", 4)), "{errors:?}");
    assert!(errors.contains(&("device_time_invalid", 0)), "{errors:?}");
}

#[tokio::test]
async fn minimal_single_phase_and_no_gas_answers() {
    let r = read_fixture("v1_data_p1_minimal.json").await;
    assert_eq!(
        names(&r),
        [
            "energy_delivered_tariff1",
            "energy_delivered_tariff2",
            "energy_returned_tariff1",
            "energy_returned_tariff2",
            "gas_delivered",
            "power_delivered",
            "power_delivered_l1",
            "power_delivered_l2",
            "power_delivered_l3",
            "power_returned",
            "power_returned_l1",
            "power_returned_l2",
            "power_returned_l3",
        ]
    );
    assert_eq!(value(&r, "energy_returned_tariff2"), 2876.51);

    // `null` phases 2 and 3 are absent, not zero.
    let r = read_fixture("v1_data_p1_single_phase.json").await;
    assert_eq!(value(&r, "power_returned_l1"), 676.0);
    assert!(!names(&r).iter().any(|n| n.ends_with("_l2") || n.ends_with("_l3")));

    let r = read_fixture("v1_data_p1_no_gas.json").await;
    assert!(!names(&r).contains(&"gas_delivered"));
    assert_eq!(value(&r, "energy_delivered_tariff1"), 10830.511);
}

#[tokio::test]
async fn broken_external_entries_are_skipped() {
    // Every external entry lacks something (id, type, value, unit) or repeats the gas meter.
    let r = read_fixture("v1_data_p1_invalid_external_data.json").await;
    assert_eq!(names(&r), ["gas_delivered"]);
    assert_eq!(value(&r, "gas_delivered"), 2569.646);

    // All-zero ids are still ids; unknown types and foreign units are skipped.
    let r = read_fixture("v1_data_p1_invalid_external_ean.json").await;
    assert_eq!(names(&r), ["gas_delivered", "water_delivered", "water_delivered_2"]);
    assert_eq!(value(&r, "water_delivered"), 333.333);
}

#[tokio::test]
async fn http_failures_are_errors_not_panics() {
    let routes: Routes = Arc::default();
    let port = server(routes.clone()).await;
    let set = |path: &str, answer: Answer| {
        routes.lock().expect("routes").insert(path.into(), answer);
    };
    set("/api", Answer::Json(200, fixture("v1_api_device_p1.json")));

    set("/api/v1/data", Answer::Json(500, "{}".into()));
    let mut m = monitor(port, "timeout: 500ms\n");
    let e = m.read().await.expect_err("500");
    assert!(
        matches!(&e, MonitorError::Refused { message: t, .. } if t.contains("500")),
        "{e}"
    );

    set("/api/v1/data", Answer::Json(403, "{}".into()));
    let e = m.read().await.expect_err("403");
    assert!(
        matches!(&e, MonitorError::Refused { message: t, .. } if t.contains("local API")),
        "{e}"
    );

    set("/api/v1/data", Answer::Json(200, "<html>captive portal</html>".into()));
    assert!(matches!(m.read().await, Err(MonitorError::InvalidData { .. })));

    set("/api/v1/data", Answer::Json(200, "[1, 2]".into()));
    assert!(matches!(m.read().await, Err(MonitorError::InvalidData { .. })));

    set("/api/v1/data", Answer::Hang);
    let started = std::time::Instant::now();
    let e = m.read().await.expect_err("timeout");
    assert!(matches!(e, MonitorError::Link { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout was not applied"
    );

    // And it recovers when the meter answers again.
    set("/api/v1/data", Answer::Json(200, fixture("v1_data_p1_minimal.json")));
    assert_eq!(value(&m.read().await.expect("read"), "power_returned"), 543.0);
}

#[tokio::test]
async fn nobody_listening_is_a_link_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let e = monitor(port, "timeout: 1s\n").read().await.expect_err("refused");
    assert!(
        matches!(&e, MonitorError::Link { message: t, .. } if t.contains("127.0.0.1")),
        "{e}"
    );
}
