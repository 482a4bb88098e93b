//! The `homewizard` device on the local API v2: a local HTTPS server (rustls, a CA
//! and a meter certificate made with `openssl` for the test, named like a real
//! meter's: `appliance/p1dongle/<serial>`) serves the recorded JSON of a real HWE-P1
//! (tests/fixtures/homewizard/v2_*). The server answers only requests that carry
//! the token and `X-Api-Version: 2`, and records every request's headers. Expected
//! values are read off the JSON by hand.

use crate::support::homewizard::{fixture, monitor, names, now, reading, utc, value, RECORDED_TIMES};
use crate::support::{openssl, sign_certificate};

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesura::config::parse_device;
use mesura::monitors::MonitorError;
use mesura::reading::{Kind, Reading, Unit, Value};

const TOKEN: &str = "2A1B3C4D5E6F70819293A4B5C6D7E8F9";
const SERIAL: &str = "5c2fafaabbcc";

/// `<name>-ca.pem` and a meter certificate `<name>-meter.pem` (+ key) issued to
/// `common_name`, without an address in it: a meter's certificate names the
/// appliance, not where it is reached.
fn make_certificates(dir: &Path, name: &str, common_name: &str) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca_subject = format!("/CN={name} Appliance Access CA");
    let (ca_key, ca_pem) = (format!("{name}-ca.key"), format!("{name}-ca.pem"));
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend(["-days", "2", "-subj", &ca_subject, "-keyout", &ca_key, "-out", &ca_pem]);
    openssl(dir, &args);
    // `-subj` separates attributes with `/`: the name's own slashes are escaped.
    let subject = format!("/CN={}", common_name.replace('/', "\\/"));
    let (key, csr, pem) = (
        format!("{name}-meter.key"),
        format!("{name}-meter.csr"),
        format!("{name}-meter.pem"),
    );
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-subj", &subject, "-keyout", &key, "-out", &csr]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("meter.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    sign_certificate(dir, &csr, name, &pem, Some("meter.ext"));
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    api_version: Option<String>,
}

struct Meter {
    port: u16,
    routes: Arc<Mutex<HashMap<String, String>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Meter {
    fn set(&self, path: &str, body: String) {
        self.routes.lock().expect("routes").insert(path.into(), body);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

/// An HTTPS meter: one request per connection, on plain threads (blocking rustls),
/// so it needs no runtime of its own.
fn meter(dir: &Path, name: &str) -> Meter {
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut &std::fs::read(dir.join(format!("{name}-meter.pem"))).expect("pem")[..])
            .collect::<Result<_, _>>()
            .expect("certs");
    let key = rustls_pemfile::private_key(&mut &std::fs::read(dir.join(format!("{name}-meter.key"))).expect("key")[..])
        .expect("key pem")
        .expect("a key");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let routes: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (r, s) = (routes.clone(), seen.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (config, routes, seen) = (config.clone(), r.clone(), s.clone());
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        // A client that rejects the certificate ends here.
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request).into_owned();
                let header = |name: &str| {
                    text.lines().skip(1).find_map(|line| {
                        let (k, v) = line.split_once(':')?;
                        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                let request = Seen {
                    path: text.split_whitespace().nth(1).unwrap_or("/").to_owned(),
                    authorization: header("authorization"),
                    api_version: header("x-api-version"),
                };
                seen.lock().expect("seen").push(request.clone());
                let (status, body) = if request.authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
                    ("401 Unauthorized", r#"{"error":"user:unauthorized"}"#.to_owned())
                } else if request.api_version.as_deref() != Some("2") {
                    (
                        "400 Bad Request",
                        r#"{"error":"request:api-version-not-supported"}"#.to_owned(),
                    )
                } else {
                    match routes.lock().expect("routes").get(&request.path) {
                        Some(body) => ("200 OK", body.clone()),
                        None => ("404 Not Found", r#"{"error":"request:not-found"}"#.to_owned()),
                    }
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    Meter { port, routes, seen }
}

/// A meter with certificates from `name`, serving `/api` and `measurement`.
struct Setup {
    dir: tempfile::TempDir,
    meter: Meter,
}

impl Setup {
    fn new(measurement: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        make_certificates(dir.path(), "good", &format!("appliance/p1dongle/{SERIAL}"));
        let meter = meter(dir.path(), "good");
        meter.set("/api", fixture("v2_api_device_p1.json"));
        meter.set("/api/measurement", fixture(measurement));
        Setup { dir, meter }
    }

    fn ca(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}-ca.pem"))
    }

    fn yaml(&self, extra: &str) -> String {
        format!(
            "type: homewizard\napi_version: 2\nhost: 127.0.0.1\nport: {}\ntoken: {TOKEN}\nca_file: {}\ntimeout: 5s\n{extra}",
            self.meter.port,
            self.ca("good").display()
        )
    }

    async fn read(&self, extra: &str) -> Result<Vec<Reading>, MonitorError> {
        monitor(&self.yaml(extra)).expect("monitor").read().await
    }
}

#[tokio::test]
async fn three_phases_gas_and_water_over_https() {
    let setup = Setup::new("v2_measurement_p1_3phase_gas_water.json");
    let r = setup
        .read(&format!("serial: {SERIAL}\n{RECORDED_TIMES}"))
        .await
        .expect("read");
    assert_eq!(value(&r, "energy_delivered_total"), 13779.338);
    assert_eq!(value(&r, "energy_delivered_tariff1"), 10830.511);
    assert_eq!(value(&r, "energy_delivered_tariff2"), 2948.827);
    assert_eq!(value(&r, "energy_returned_total"), 0.0);
    assert_eq!(value(&r, "energy_returned_tariff1"), 0.0);
    assert_eq!(value(&r, "tariff"), 2.0);
    // power_w -543: returned, not delivered; the same per phase.
    assert_eq!(value(&r, "power_delivered"), 0.0);
    assert_eq!(value(&r, "power_returned"), 543.0);
    assert_eq!(value(&r, "power_returned_l1"), 676.0);
    assert_eq!(value(&r, "power_delivered_l2"), 133.0);
    assert_eq!(value(&r, "power_returned_l2"), 0.0);
    assert_eq!(value(&r, "power_delivered_l3"), 0.0);
    // current_l1_a -4: stored unsigned, like a DSMR meter sends it.
    assert_eq!(value(&r, "current_l1"), 4.0);
    assert_eq!(value(&r, "current_l2"), 2.0);
    assert_eq!(value(&r, "voltage_sags_l1"), 1.0);
    assert_eq!(value(&r, "voltage_sags_l3"), 0.0);
    assert_eq!(value(&r, "voltage_swells_l2"), 0.0);
    assert_eq!(value(&r, "power_failures"), 4.0);
    assert_eq!(value(&r, "long_power_failures"), 5.0);
    assert_eq!(value(&r, "peak_demand_current_quarter"), 123.0);
    assert_eq!(reading(&r, "energy_delivered_tariff1").unit, Unit::KiloWattHour);
    assert_eq!(reading(&r, "power_returned").timestamp, now());
    // monthly_power_peak_timestamp 2024-06-04T10:11:22, the meter's local time (CEST).
    let peak = reading(&r, "peak_demand_month");
    assert_eq!(peak.value, Value::Number(1111.0));
    assert_eq!(peak.timestamp, utc("2024-06-04T08:11:22Z"));
    // external[]: gas at 14:00 and water at 14:05 local time, each at its own time.
    let gas = reading(&r, "gas_delivered");
    assert_eq!(gas.value, Value::Number(2569.646));
    assert_eq!((gas.unit, gas.kind), (Unit::CubicMetre, Kind::Counter));
    assert_eq!(gas.timestamp, utc("2024-06-28T12:00:00Z"));
    let water = reading(&r, "water_delivered");
    assert_eq!(water.value, Value::Number(123.456));
    assert_eq!(water.timestamp, utc("2024-06-28T12:05:00Z"));
    // No voltage, frequency or total current in this answer: absent, not zero.
    assert!(!names(&r)
        .iter()
        .any(|n| n.starts_with("voltage_l") || *n == "frequency" || *n == "current"));

    let seen = setup.meter.seen();
    assert_eq!(
        seen.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
        ["/api", "/api/measurement"]
    );
    for s in &seen {
        assert_eq!(s.authorization.as_deref(), Some(&*format!("Bearer {TOKEN}")), "{s:?}");
        assert_eq!(s.api_version.as_deref(), Some("2"), "{s:?}");
    }
}

#[tokio::test]
async fn single_phase_and_broken_external_entries() {
    let setup = Setup::new("v2_measurement_p1_1phase_no_gas.json");
    let r = setup.read("").await.expect("read");
    assert_eq!(
        names(&r),
        [
            "energy_delivered_tariff1",
            "energy_delivered_tariff2",
            "energy_returned_tariff1",
            "energy_returned_tariff2",
            "power_delivered",
            "power_delivered_l1",
            "power_returned",
            "power_returned_l1",
        ]
    );
    assert_eq!(value(&r, "energy_returned_tariff2"), 2876.51);
    assert_eq!(value(&r, "power_returned"), 678.0);
    assert_eq!(value(&r, "power_returned_l1"), 676.0);

    // All-zero ids are still ids; heat meters in m3, unknown types, entries
    // without id or type are skipped.
    setup
        .meter
        .set("/api/measurement", fixture("v2_measurement_p1_invalid_ean.json"));
    let r = setup.read("").await.expect("read");
    assert_eq!(names(&r), ["gas_delivered", "water_delivered", "water_delivered_2"]);
    assert_eq!(value(&r, "gas_delivered"), 111.111);
    assert_eq!(value(&r, "water_delivered"), 333.333);
    assert_eq!(value(&r, "water_delivered_2"), 444.444);

    // Nothing usable at all: invalid data, not a panic and not an empty reading.
    setup
        .meter
        .set("/api/measurement", fixture("v2_measurement_p1_invalid_external.json"));
    let e = setup.read("").await.expect_err("nothing usable");
    assert!(
        matches!(&e, MonitorError::InvalidData { message: t, .. } if t.contains("/api/measurement")),
        "{e}"
    );

    // The same broken entries next to good values cost only themselves.
    let mut full: serde_json::Value =
        serde_json::from_str(&fixture("v2_measurement_p1_3phase_gas_water.json")).expect("json");
    let broken: serde_json::Value =
        serde_json::from_str(&fixture("v2_measurement_p1_invalid_external.json")).expect("json");
    let (Some(external), Some(bad)) = (full["external"].as_array_mut(), broken["external"].as_array()) else {
        panic!("both fixtures have external[]");
    };
    external.extend(bad.iter().cloned());
    setup.meter.set("/api/measurement", full.to_string());
    let r = setup.read("").await.expect("read");
    assert_eq!(value(&r, "gas_delivered"), 2569.646);
    assert_eq!(value(&r, "water_delivered"), 123.456);
    assert_eq!(value(&r, "power_returned"), 543.0);
    assert!(!names(&r).iter().any(|n| n.ends_with("_2")), "{:?}", names(&r));
}

#[tokio::test]
async fn a_wrong_token_is_a_configuration_error_without_the_token() {
    let setup = Setup::new("v2_measurement_p1_3phase_gas_water.json");
    let yaml = setup.yaml("").replace(TOKEN, "00000000000000000000000000000000");
    let e = monitor(&yaml).expect("monitor").read().await.expect_err("401");
    assert!(
        matches!(&e, MonitorError::Config { message: t, .. } if t.contains("token rejected") && t.contains("401")),
        "{e}"
    );
    assert!(!e.is_transient());
    assert!(!e.to_string().contains("00000000000000000000000000000000"), "{e}");
    // The identity request failed, so the measurement was never asked for.
    let seen = setup.meter.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].api_version.as_deref(), Some("2"));
}

#[tokio::test]
async fn the_certificate_is_checked() {
    let setup = Setup::new("v2_measurement_p1_3phase_gas_water.json");
    // Another CA: the meter's certificate does not verify, and the token is never sent.
    make_certificates(setup.dir.path(), "other", "appliance/p1dongle/000000000000");
    let yaml = setup.yaml("").replace(
        &*setup.ca("good").to_string_lossy(),
        &setup.ca("other").to_string_lossy(),
    );
    let e = monitor(&yaml).expect("monitor").read().await.expect_err("unknown CA");
    assert!(
        matches!(&e, MonitorError::Link { message: t, .. } if t.contains("certificate")),
        "{e}"
    );
    // Without ca_file the built-in HomeWizard CA is used: it did not sign the test CA.
    let yaml = setup
        .yaml("")
        .replace(&format!("ca_file: {}\n", setup.ca("good").display()), "");
    let e = monitor(&yaml)
        .expect("monitor")
        .read()
        .await
        .expect_err("HomeWizard CA");
    assert!(
        matches!(&e, MonitorError::Link { message: t, .. } if t.contains("certificate")),
        "{e}"
    );
    // The right CA but another meter's serial.
    let e = setup.read("serial: 5c2fafaa0000\n").await.expect_err("serial");
    assert!(
        matches!(&e, MonitorError::Link { message: t, .. } if t.contains("5c2fafaa0000")),
        "{e}"
    );
    assert!(setup.meter.seen().is_empty(), "{:?}", setup.meter.seen());
    // tls_verify: false takes any certificate.
    let yaml = setup
        .yaml("tls_verify: false\n")
        .replace(&format!("ca_file: {}\n", setup.ca("good").display()), "");
    let r = monitor(&yaml).expect("monitor").read().await.expect("read");
    assert_eq!(value(&r, "power_returned"), 543.0);
}

#[test]
fn config_errors_name_the_key() {
    let parse = |yaml: &str| parse_device(Path::new("config.d/hw.yaml"), yaml, &[]);
    let e = parse("type: homewizard\nhost: 192.168.1.30\napi_version: 2\n").expect_err("no token");
    assert!(e.to_string().contains("token"), "{e}");
    let e = parse("type: homewizard\nhost: 192.168.1.30\napi_version: 3\n").expect_err("v3");
    assert!(e.to_string().contains("api_version"), "{e}");
    let e = parse("type: homewizard\nhost: 192.168.1.30\ntoken: ABC\n").expect_err("v1 token");
    assert!(e.to_string().contains("api_version: 2"), "{e}");
    let ok = parse("type: homewizard\nhost: 192.168.1.30\napi_version: 2\ntoken: ABC\n").expect("v2");
    assert!(!format!("{ok:?}").contains("ABC"), "the token shows in {ok:?}");
}

/// Through the whole daemon: the token comes from the environment (`${VAR}`), the
/// good meter's readings land in SQLite, the one with a wrong token stores nothing
/// and says why in its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_stores_v2_readings_and_reports_a_rejected_token() {
    let meter = Setup::new("v2_measurement_p1_3phase_gas_water.json");
    let setup = crate::support::Setup::new("backends:\n  sqlite: {}\n");
    let device = |token: &str| {
        format!(
            "type: homewizard\napi_version: 2\nhost: 127.0.0.1\nport: {}\ntoken: {token}\nca_file: {}\npoll_interval: 1s\n",
            meter.meter.port,
            meter.ca("good").display()
        )
    };
    setup
        .device("p1", &device("${HOMEWIZARD_TOKEN}"))
        .device("wrong", &device("${WRONG_TOKEN}"));
    let env = |name: &str| match name {
        "HOMEWIZARD_TOKEN" => Some(TOKEN.to_owned()),
        "WRONG_TOKEN" => Some("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF".to_owned()),
        _ => None,
    };
    let config = mesura::config::Config::load(&setup.config_path(), &env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let daemon = mesura::daemon::app::Daemon::start(config, Arc::new(mesura::host::clock::SystemClock))
        .await
        .expect("start");
    let status = daemon.status().clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let devices = status.devices();
        let rejected = devices["wrong"]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("token rejected"));
        if rejected && devices["p1"].polls_ok >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{devices:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let summary = daemon.shutdown().await;
    assert!(summary.polls["p1"] >= 1);
    let db = setup.db_path();
    assert!(crate::support::sqlite_rows(&db, "p1") > 0);
    assert_eq!(crate::support::sqlite_rows(&db, "wrong"), 0);
    let devices = status.devices();
    assert_eq!(devices["wrong"].polls_ok, 0);
    assert!(!format!("{:?}", devices["wrong"]).contains("FFFFFFFF"));
}
