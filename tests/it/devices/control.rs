//! Writes to devices (docs/control.md), behind two locks: an API token and
//! `allow_writes: true` in the device file. A Modbus holding register written on
//! pymodbus (the server prints every write it takes), a Nea Smart command
//! register the base station (pymodbus as the master) reads back; each lock
//! missing alone, range checks, read-back, the audit log, a device refusing the
//! write and a dead link.

use std::net::SocketAddr;

use crate::support::api::post_json;
use crate::support::broker::free_port;
use crate::support::logs;
use crate::support::modbus::{
    base_station_reads, base_station_writes, start, status, wait_for, PtyPair, PyServer, RegisterImage, SeenWrite,
};
use crate::support::Setup;
use mesura::protocols::modbus::point::{encode_words, DataType, WordOrder};

const TOKEN: &str = "s3cret-control";

fn api(token: bool) -> String {
    let token = if token {
        format!("  token: {TOKEN}\n")
    } else {
        String::new()
    };
    format!(
        "backends:\n  sqlite:\n    flush_interval: 1s\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n{token}"
    )
}

async fn write(addr: SocketAddr, device: &str, body: &str) -> (u16, serde_json::Value) {
    post_json(addr, &format!("/api/devices/{device}/write"), Some(TOKEN), body).await
}

const PLANT_POINTS: &str = "points:
  - {name: setpoint, address: 100, scale: 0.1, unit: °C, writable: true, min: 5, max: 30}
  - {name: mode, address: 101, writable: true, min: 0, max: 3}
  - {name: flow, address: 102, scale: 0.1, unit: °C}
";

/// A pymodbus server with the plant's registers: setpoint 20.0 °C, mode 1, flow
/// 35.0 °C; it refuses writes to the mode register (exception 3).
fn plant_server(setup: &Setup) -> (PyServer, u16) {
    let mut image = RegisterImage::default();
    image.set("holding", 100, &[200, 1, 350]);
    let path = setup.dir.path().join("image.json");
    image.write(&path);
    let port = free_port();
    let server = PyServer::start(&path, &["--port", &port.to_string()], &["--refuse-write", "101"]);
    (server, port)
}

fn plant(port: u16, allow: bool) -> String {
    format!(
        "type: modbus\nhost: 127.0.0.1\nport: {port}\npoll_interval: 1s\ntimeout: 500ms\n{}{PLANT_POINTS}",
        if allow { "allow_writes: true\n" } else { "" }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modbus_holding_register_is_written_validated_read_back_and_logged() {
    let info = logs::info();
    let warnings = logs::warnings();
    let setup = Setup::new(&api(true));
    let (server, port) = plant_server(&setup);
    setup.device("ctl_plant", &plant(port, true));
    setup.device("ctl_locked", &plant(port, false));
    // Nothing listens there: every request fails on the link.
    setup.device("ctl_dead", &plant(free_port(), true));
    let daemon = start(&setup).await;
    let addr = daemon.api_addr().expect("api");

    let (code, body) = write(addr, "ctl_plant", r#"{"point": "setpoint", "value": 21.5}"#).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["old"], 20.0);
    assert_eq!(body["value"], 21.5);
    assert_eq!(body["unit"], "°C");
    // The server prints what it took; its line may arrive after the answer.
    wait_for("the server's write line", || !server.writes().is_empty()).await;
    assert_eq!(
        server.writes(),
        [SeenWrite {
            fc: 6,
            address: 100,
            values: vec![215]
        }]
    );
    // The old value and the read-back are each a read of the point alone (polls
    // read the three registers together). The server prints the read-back after
    // the write, so its line too may come after the answer.
    let alone = || {
        server
            .requests()
            .iter()
            .filter(|r| r.fc == 3 && r.address == 100 && r.count == 1)
            .count()
    };
    wait_for("the read-back's request line", || alone() >= 2).await;
    // Only the old value and the read-back: the write was not tried twice.
    assert_eq!(alone(), 2, "{:?}", server.requests());
    let applied = logs::text(&info)
        .lines()
        .find(|l| l.contains("device write applied") && l.contains("device=ctl_plant"))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no audit line in {}", logs::text(&info)));
    for part in ["who=api token from 127.0.0.1:", "point=setpoint", "old=20", "new=21.5"] {
        assert!(applied.contains(part), "{part} not in {applied}");
    }

    // Refused before anything is sent: the server takes no other write.
    for (body, code, reason) in [
        (r#"{"point": "setpoint", "value": 30.5}"#, 400, "out_of_range"),
        (r#"{"point": "setpoint", "value": 4.9}"#, 400, "out_of_range"),
        (r#"{"point": "setpoint", "value": 21.55}"#, 400, "invalid_value"),
        (r#"{"point": "flow", "value": 30}"#, 400, "unknown_point"),
        (r#"{"point": "setpoint"}"#, 400, "bad_body"),
    ] {
        let (got, answer) = write(addr, "ctl_plant", body).await;
        assert_eq!(
            (got, answer["reason"].as_str()),
            (code, Some(reason)),
            "{body}: {answer}"
        );
    }
    // The token lock: the API asks for the token it has.
    let (code, _) = post_json(
        addr,
        "/api/devices/ctl_plant/write",
        None,
        r#"{"point": "setpoint", "value": 22}"#,
    )
    .await;
    assert_eq!(code, 401);
    // The device lock: the map allows it, the file does not.
    let (code, body) = write(addr, "ctl_locked", r#"{"point": "setpoint", "value": 22}"#).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(body["missing"], serde_json::json!(["allow_writes"]));
    assert_eq!(server.writes().len(), 1, "{:?}", server.writes());

    // The device refuses (an exception): 409, and the link is not blamed.
    let (code, body) = write(addr, "ctl_plant", r#"{"point": "mode", "value": 2}"#).await;
    assert_eq!((code, body["reason"].as_str()), (409, Some("device_refused")), "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("IllegalDataValue"),
        "{body}"
    );
    assert_eq!(server.writes().len(), 1);
    // The link fails: 502.
    let (code, body) = write(addr, "ctl_dead", r#"{"point": "setpoint", "value": 21}"#).await;
    assert_eq!((code, body["reason"].as_str()), (502, Some("link_failed")), "{body}");

    let refused: Vec<String> = logs::text(&warnings)
        .lines()
        .filter(|l| l.contains("device write refused") && l.contains("device=ctl_"))
        .map(str::to_owned)
        .collect();
    for reason in ["reason=device_refused", "reason=link_failed", "reason=out_of_range"] {
        assert!(
            refused.iter().any(|l| l.contains(reason)),
            "{reason} not in {refused:?}"
        );
    }
    // The poll reads the written value too.
    wait_for("the poll to read 21.5", || {
        daemon.status().devices()["ctl_plant"]
            .latest
            .get("setpoint")
            .is_some_and(|l| matches!(l.value, mesura::reading::Value::Number(v) if (v - 21.5).abs() < 1e-9))
    })
    .await;
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_api_token_nothing_is_written() {
    let setup = Setup::new(&api(false));
    let (server, port) = plant_server(&setup);
    setup.device("ctl_open", &plant(port, true));
    setup.device("ctl_shut", &plant(port, false));
    let daemon = start(&setup).await;
    let addr = daemon.api_addr().expect("api");
    let body = r#"{"point": "setpoint", "value": 22}"#;
    let (code, answer) = post_json(addr, "/api/devices/ctl_open/write", None, body).await;
    assert_eq!(code, 403, "{answer}");
    assert_eq!(answer["missing"], serde_json::json!(["api.token"]));
    assert!(
        answer["error"].as_str().unwrap_or_default().contains("api.token"),
        "{answer}"
    );
    let (code, answer) = post_json(addr, "/api/devices/ctl_shut/write", None, body).await;
    assert_eq!(code, 403, "{answer}");
    assert_eq!(answer["missing"], serde_json::json!(["api.token", "allow_writes"]));
    let (code, _) = post_json(addr, "/api/devices/nobody/write", None, body).await;
    assert_eq!(code, 404);
    // The polls go on reading the untouched value.
    wait_for("a poll", || {
        daemon.status().devices()["ctl_open"].latest.contains_key("setpoint")
    })
    .await;
    assert!(server.writes().is_empty(), "{:?}", server.writes());
    daemon.shutdown().await;
}

/// On an RS485 bus the write takes its turn with both devices' polls (one bus
/// task owns the port), and a two-register value goes out as function 16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rtu_write_takes_its_turn_on_the_shared_bus() {
    let setup = Setup::new(&api(true));
    let pty = PtyPair::new(setup.dir.path());
    let mut image = RegisterImage::default();
    image.set("holding", 0, &encode_words(DataType::F32, WordOrder::Little, 1500.0));
    let path = setup.dir.path().join("image.json");
    image.write(&path);
    let server = PyServer::start(
        &path,
        &["--serial", &pty.device_end.to_string_lossy()],
        &["--baud", "9600"],
    );
    for (id, unit, allow) in [("ctl_rtu_a", 1, "allow_writes: true\n"), ("ctl_rtu_b", 2, "")] {
        setup.device(
            id,
            &format!(
                "type: modbus\nserial_port: {}\nbaud_rate: 9600\nunit_id: {unit}\npoll_interval: 1s\ntimeout: 2s\n{allow}\
                 points:\n  - {{name: export_limit, address: 0, type: f32, word_order: little, unit: W, writable: true, min: 0, max: 5000}}\n",
                pty.daemon_end.display()
            ),
        );
    }
    let daemon = start(&setup).await;
    wait_for("polls of both devices", || {
        status(&daemon, "ctl_rtu_a").polls_ok >= 1 && status(&daemon, "ctl_rtu_b").polls_ok >= 1
    })
    .await;
    let addr = daemon.api_addr().expect("api");
    let (code, body) = write(addr, "ctl_rtu_a", r#"{"point": "export_limit", "value": 2500.5}"#).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (body["old"].as_f64(), body["value"].as_f64()),
        (Some(1500.0), Some(2500.5))
    );
    wait_for("the server's write line", || !server.writes().is_empty()).await;
    assert_eq!(
        server.writes(),
        [SeenWrite {
            fc: 16,
            address: 0,
            values: encode_words(DataType::F32, WordOrder::Little, 2500.5)
        }]
    );
    // Both devices go on polling on the bus after the write.
    let after = (
        status(&daemon, "ctl_rtu_a").polls_ok,
        status(&daemon, "ctl_rtu_b").polls_ok,
    );
    wait_for("more polls of both devices", || {
        status(&daemon, "ctl_rtu_a").polls_ok > after.0 && status(&daemon, "ctl_rtu_b").polls_ok > after.1
    })
    .await;
    assert_eq!(status(&daemon, "ctl_rtu_b").polls_failed, 0);
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nea_smart_setpoint_is_what_the_base_station_reads_back() {
    let setup = Setup::new(&api(true));
    let (port, shut_port) = (free_port(), free_port());
    setup.device(
        "ctl_heating",
        &format!("type: neasmart\nlisten: 127.0.0.1:{port}\npoll_interval: 1s\nallow_writes: true\nzone_names:\n  \"1\": living\n"),
    );
    setup.device(
        "ctl_heating_ro",
        &format!("type: neasmart\nlisten: 127.0.0.1:{shut_port}\n"),
    );
    let daemon = start(&setup).await;
    let addr = daemon.api_addr().expect("api");
    // The base reports zone 1's setpoint, 20.0 °C.
    let writes = vec!["240:101:0x07D0".to_owned()];
    tokio::task::spawn_blocking(move || base_station_writes(port, &writes))
        .await
        .expect("base station");

    let (code, body) = write(addr, "ctl_heating", r#"{"point": "zone_living_setpoint", "value": 22}"#).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!((body["old"].as_f64(), body["value"].as_f64()), (Some(20.0), Some(22.0)));
    // A state the base never wrote: no old value.
    let (code, body) = write(addr, "ctl_heating", r#"{"point": "zone_living_state", "value": 3}"#).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (body["old"].clone(), body["value"].as_f64()),
        (serde_json::Value::Null, Some(3.0))
    );
    for (body, reason) in [
        (r#"{"point": "zone_living_setpoint", "value": 35}"#, "out_of_range"),
        (r#"{"point": "zone_living_state", "value": 2.5}"#, "invalid_value"),
        (r#"{"point": "zone_living_temperature", "value": 20}"#, "unknown_point"),
    ] {
        let (code, answer) = write(addr, "ctl_heating", body).await;
        assert_eq!(
            (code, answer["reason"].as_str()),
            (400, Some(reason)),
            "{body}: {answer}"
        );
    }
    let (code, answer) = write(addr, "ctl_heating_ro", r#"{"point": "zone_1_setpoint", "value": 22}"#).await;
    assert_eq!(
        (code, answer["missing"].clone()),
        (403, serde_json::json!(["allow_writes"]))
    );

    // 22.0 °C in DPT 9.001: mantissa 1100, exponent 1 (1100 · 2 / 100) = 0x0C4C.
    let reads = tokio::task::spawn_blocking(move || base_station_reads(port, &["240:101", "240:100"]))
        .await
        .expect("base station");
    assert_eq!(reads, ["240:101=3148", "240:100=3"]);
    wait_for("the reading of the new setpoint", || {
        daemon.status().devices()["ctl_heating"]
            .latest
            .get("zone_living_setpoint")
            .is_some_and(|l| l.value == mesura::reading::Value::Number(22.0))
    })
    .await;
    daemon.shutdown().await;
}
