//! The `modbus` device (mesura the master) against pymodbus, an independent
//! Modbus implementation, serving a register image over TCP: every type, both
//! word orders, scale and offset, coalescing (requests counted at the server),
//! exception responses, a server killed and restarted, SunSpec discovery. The
//! whole daemon runs (supervisor, SQLite); waits are bounded polls.

use std::time::{Duration, Instant};

use crate::support::broker::free_port;
use crate::support::modbus::{
    pysunspec2_mock_words, setup, start, status, wait_for, PtyPair, PyServer, RegisterImage, SeenRequest, LIMIT,
};
use mesura::protocols::modbus::point::{encode_string, encode_words, DataType, WordOrder};

fn w(t: DataType, o: WordOrder, v: f64) -> Vec<u16> {
    encode_words(t, o, v)
}

/// A register image with every type in both word orders, and its point map.
fn every_type() -> (RegisterImage, String) {
    use DataType::*;
    use WordOrder::{Big, Little};
    let mut image = RegisterImage::default();
    image
        .set("holding", 0, &[1234])
        .set("holding", 1, &w(I16, Big, -5.0))
        .set("holding", 2, &w(U32, Big, 70_000.0))
        .set("holding", 4, &w(U32, Little, 70_000.0))
        .set("holding", 6, &w(I32, Big, -70_000.0))
        .set("holding", 8, &w(I32, Little, -70_000.0))
        .set("holding", 10, &w(U64, Big, 5_000_000_000.0))
        .set("holding", 14, &w(U64, Little, 5_000_000_000.0))
        .set("holding", 18, &w(F32, Big, 230.5))
        .set("holding", 20, &w(F32, Little, -12.25))
        .set("holding", 22, &w(F64, Big, 1234.5678))
        .set("holding", 26, &w(F64, Little, -0.125))
        .set("holding", 30, &[1])
        .set("holding", 31, &encode_string("SDM630", 4))
        .set("holding", 35, &[0; 5]) // read through: a gap of 5 joins the block
        .set("holding", 40, &w(I64, Little, -42.0))
        .set("holding", 100, &[7]) // a gap of 56: a block of its own
        .set("input", 0, &w(F32, Big, 49.95))
        .set("coils", 3, &[1])
        .set("discrete", 5, &[0]);
    let points = "points:
  - {name: p_u16, address: 0, scale: 0.1, unit: V}
  - {name: p_i16, address: 1, type: i16, offset: 100}
  - {name: p_u32_big, address: 2, type: u32, unit: Wh, scale: 0.001}
  - {name: p_u32_little, address: 4, type: u32, word_order: little}
  - {name: p_i32_big, address: 6, type: i32}
  - {name: p_i32_little, address: 8, type: i32, word_order: little}
  - {name: p_u64_big, address: 10, type: u64, kind: counter, unit: kWh}
  - {name: p_u64_little, address: 14, type: u64, word_order: little}
  - {name: p_f32_big, address: 18, type: f32, unit: V}
  - {name: p_f32_little, address: 20, type: f32, word_order: little}
  - {name: p_f64_big, address: 22, type: f64}
  - {name: p_f64_little, address: 26, type: f64, word_order: little}
  - {name: p_bool, address: 30, type: bool}
  - {name: p_string, address: 31, type: string, length: 4}
  - {name: p_i64_little, address: 40, type: i64, word_order: little}
  - {name: p_far, address: 100}
  - {name: p_input, register: input, address: 0, type: f32, unit: Hz}
  - {name: p_coil, register: coil, address: 3, type: bool}
  - {name: p_discrete, register: discrete, address: 5, type: bool}
";
    (image, points.replace("unit: Wh, ", "unit: kWh, "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_word_order_is_read_in_few_requests() {
    let setup = setup();
    let (image, points) = every_type();
    image.write(&setup.dir.path().join("image.json"));
    let port = free_port();
    let server = PyServer::start(
        &setup.dir.path().join("image.json"),
        &["--port", &port.to_string()],
        &[],
    );
    // The map lives in a points_file in a sub-folder of config.d (every YAML file
    // directly in config.d is a device file).
    std::fs::create_dir_all(setup.dir.path().join("config.d/maps")).expect("maps dir");
    std::fs::write(setup.dir.path().join("config.d/maps/meter.yaml"), &points).expect("points file");
    setup.device(
        "meter",
        &format!("type: modbus\nhost: 127.0.0.1\nport: {port}\nunit_id: 3\npoll_interval: 1s\npoints_file: maps/meter.yaml\n"),
    );
    let daemon = start(&setup).await;
    let start = Instant::now();
    while status(&daemon, "meter").polls_ok < 3 {
        let s = status(&daemon, "meter");
        assert!(
            start.elapsed() < LIMIT,
            "no three good polls within {LIMIT:?}: {s:?}; server saw {:?}",
            server.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let meter = status(&daemon, "meter");
    daemon.shutdown().await;
    assert_eq!(meter.polls_failed, 0, "{:?}", meter.last_error);

    // Coalescing: five requests a poll (holding 0..44, holding 100, input, coil,
    // discrete), each exactly as planned, all to unit 3, over one connection.
    let requests = server.requests();
    let r = |fc, address, count| SeenRequest {
        fc,
        unit: 3,
        address,
        count,
    };
    let per_poll = [r(3, 0, 44), r(3, 100, 1), r(4, 0, 2), r(1, 3, 1), r(2, 5, 1)];
    for chunk in requests.chunks(5) {
        assert_eq!(chunk, &per_poll[..chunk.len()], "{requests:?}");
    }
    let polls = meter.polls_ok as usize;
    assert!(
        (5 * polls..=5 * polls + 5).contains(&requests.len()),
        "{} requests for {polls} polls",
        requests.len()
    );
    assert_eq!(server.connects(), 1, "one connection for every poll");

    let conn = rusqlite::Connection::open(setup.db_path()).expect("db");
    let numbers = [
        ("p_u16", 123.4),
        ("p_i16", 95.0),
        ("p_u32_big", 70.0),
        ("p_u32_little", 70_000.0),
        ("p_i32_big", -70_000.0),
        ("p_i32_little", -70_000.0),
        ("p_u64_big", 5_000_000_000.0),
        ("p_u64_little", 5_000_000_000.0),
        ("p_f32_big", 230.5),
        ("p_f32_little", -12.25),
        ("p_f64_big", 1234.5678),
        ("p_f64_little", -0.125),
        ("p_bool", 1.0),
        ("p_i64_little", -42.0),
        ("p_far", 7.0),
        ("p_input", 49.95),
        ("p_coil", 1.0),
        ("p_discrete", 0.0),
    ];
    for (metric, want) in numbers {
        let got: f64 = conn
            .query_row(
                &format!("SELECT {metric} FROM meter ORDER BY ts DESC LIMIT 1"),
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{metric}: {e}"));
        let tolerance = if metric == "p_input" { 1e-5 } else { 1e-9 };
        assert!(
            (got - want).abs() <= tolerance * want.abs().max(1.0),
            "{metric}: {got} != {want}"
        );
    }
    let text: String = conn
        .query_row("SELECT p_string FROM meter ORDER BY ts DESC LIMIT 1", [], |r| r.get(0))
        .expect("string");
    assert_eq!(text, "SDM630");
    let (unit, kind): (String, String) = conn
        .query_row(
            "SELECT unit, kind FROM metrics WHERE device = 'meter' AND metric = 'p_u64_big'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("catalogue");
    assert_eq!((unit.as_str(), kind.as_str()), ("kWh", "counter"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_is_a_refusal_and_the_link_stays_up() {
    let setup = setup();
    let mut image = RegisterImage::default();
    image.set("holding", 0, &[1, 2]);
    image.write(&setup.dir.path().join("image.json"));
    let port = free_port();
    // Address 1 answers "busy"; address 50 does not exist (illegal address).
    let server = PyServer::start(
        &setup.dir.path().join("image.json"),
        &["--port", &port.to_string()],
        &["--busy", "1"],
    );
    setup.device(
        "busy",
        &format!(
            "type: modbus\nhost: 127.0.0.1\nport: {port}\npoll_interval: 1s\nmax_backoff: 200ms\nfailure_threshold: 100\n\
             points:\n  - {{name: a, address: 0}}\n  - {{name: b, address: 1}}\n"
        ),
    );
    setup.device(
        "missing",
        &format!(
            "type: modbus\nhost: 127.0.0.1\nport: {port}\npoll_interval: 1s\nmax_backoff: 200ms\nfailure_threshold: 100\n\
             points:\n  - {{name: a, address: 50}}\n"
        ),
    );
    let daemon = start(&setup).await;
    wait_for("three refusals each", || {
        status(&daemon, "busy").polls_failed >= 3 && status(&daemon, "missing").polls_failed >= 3
    })
    .await;
    let (busy, missing) = (status(&daemon, "busy"), status(&daemon, "missing"));
    daemon.shutdown().await;
    for (s, code) in [(&busy, "ServerDeviceBusy"), (&missing, "IllegalDataAddress")] {
        assert_eq!(s.polls_ok, 0);
        assert_eq!(
            s.errors_by_kind.get("refused"),
            Some(&s.polls_failed),
            "{:?}",
            s.errors_by_kind
        );
        let error = s.last_error.clone().unwrap_or_default();
        assert!(error.contains(code), "{error}");
    }
    // Two devices, one connection each for all their refused polls.
    assert_eq!(server.connects(), 2, "a refusal must not reconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_cannot_reach_its_device_is_a_link_error() {
    let setup = setup();
    let mut image = RegisterImage::default();
    image.set("holding", 0, &[1, 2]);
    image.write(&setup.dir.path().join("image.json"));
    let port = free_port();
    // A Modbus TCP gateway answering exception 11 (0x0B) for the meter behind it.
    let _server = PyServer::start(
        &setup.dir.path().join("image.json"),
        &["--port", &port.to_string()],
        &["--unreachable", "0"],
    );
    setup.device(
        "behind_gateway",
        &format!(
            "type: modbus\nhost: 127.0.0.1\nport: {port}\npoll_interval: 1s\nmax_backoff: 200ms\nfailure_threshold: 100\n\
             points:\n  - {{name: a, address: 0}}\n"
        ),
    );
    let daemon = start(&setup).await;
    wait_for("three failed polls", || {
        status(&daemon, "behind_gateway").polls_failed >= 3
    })
    .await;
    let s = status(&daemon, "behind_gateway");
    daemon.shutdown().await;
    assert_eq!(s.polls_ok, 0);
    // Not "refused": the device never saw the request; retried as a link failure.
    assert_eq!(
        s.errors_by_kind.get("link"),
        Some(&s.polls_failed),
        "{:?}",
        s.errors_by_kind
    );
    let error = s.last_error.clone().unwrap_or_default();
    assert!(error.contains("gateway could not reach the device"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_and_restarted_is_reconnected() {
    let setup = setup();
    let mut image = RegisterImage::default();
    image.set("input", 0, &w(DataType::F32, WordOrder::Big, 230.5));
    let image_path = setup.dir.path().join("image.json");
    image.write(&image_path);
    let port = free_port();
    let target = ["--port".to_string(), port.to_string()];
    let target: Vec<&str> = target.iter().map(String::as_str).collect();
    let server = PyServer::start(&image_path, &target, &[]);
    setup.device(
        "grid",
        &format!(
            "type: modbus\nhost: 127.0.0.1\nport: {port}\npoll_interval: 1s\nmax_backoff: 300ms\nfailure_threshold: 1000\ntimeout: 500ms\n\
             points:\n  - {{name: voltage, register: input, address: 0, type: f32, unit: V}}\n"
        ),
    );
    let daemon = start(&setup).await;
    wait_for("a good poll", || status(&daemon, "grid").polls_ok >= 1).await;
    drop(server);
    wait_for("a link failure", || {
        status(&daemon, "grid").errors_by_kind.contains_key("link")
    })
    .await;
    let ok_before = status(&daemon, "grid").polls_ok;
    let server = PyServer::start(&image_path, &target, &[]);
    wait_for("polls after the restart", || {
        status(&daemon, "grid").polls_ok >= ok_before + 2
    })
    .await;
    daemon.shutdown().await;
    assert_eq!(server.connects(), 1, "reconnected once to the new server");
    assert!(crate::support::sqlite_rows(&setup.db_path(), "grid") >= 1);
}

/// The pysunspec2 mock image (SunS, model 1, model 126) with a three-phase
/// inverter model 103 added before the end marker.
fn sunspec_image() -> RegisterImage {
    let words = pysunspec2_mock_words();
    let mut image = RegisterImage::default();
    // Everything up to the end marker at 40136.
    image.set("holding", 40000, &words[..136]);
    let mut body = vec![0xFFFFu16; 50];
    let sf = |v: i16| v as u16;
    body[0] = 1234; // A, A_SF −2 → 12.34 A
    body[1] = 412;
    body[2] = 411;
    body[3] = 411;
    body[4] = sf(-2);
    body[8] = 2301; // PhVphA, V_SF −1 → 230.1 V
    body[11] = sf(-1);
    body[12] = 2850; // W, W_SF 0
    body[13] = 0;
    body[14] = 5001; // Hz, Hz_SF −2
    body[15] = sf(-2);
    body[16] = 0x8000; // VA not implemented (int16)
    body[17] = 0x8000;
    body[18] = 0x8000;
    body[19] = 0x8000;
    body[20] = 0x8000;
    body[21] = 0x8000;
    body[22] = 0x0001; // WH = 123456 Wh, WH_SF 0 → 123.456 kWh
    body[23] = 0xE240;
    body[24] = 0;
    body[31] = 0x8000; // TmpCab not implemented
    body[32] = 0x8000;
    body[33] = 0x8000;
    body[34] = 0x8000;
    body[35] = sf(-1);
    body[36] = 4; // MPPT
    image.set("holding", 40136, &[103, 50]);
    image.set("holding", 40138, &body);
    image.set("holding", 40188, &[0xFFFF, 0]);
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sunspec_discovery_finds_the_inverter_and_applies_scale_factors() {
    let setup = setup();
    let image_path = setup.dir.path().join("image.json");
    sunspec_image().write(&image_path);
    let port = free_port();
    let server = PyServer::start(&image_path, &["--port", &port.to_string()], &[]);
    setup.device(
        "inverter",
        &format!("type: modbus\nhost: 127.0.0.1\nport: {port}\npoll_interval: 1s\nsunspec: true\n"),
    );
    let daemon = start(&setup).await;
    wait_for("two good polls", || status(&daemon, "inverter").polls_ok >= 2).await;
    let inverter = status(&daemon, "inverter");
    daemon.shutdown().await;
    assert_eq!(inverter.polls_failed, 0, "{:?}", inverter.last_error);
    // Discovery once (marker, four headers, the common model), then one
    // request per poll for the inverter model.
    let requests = server.requests();
    assert_eq!(requests[0].address, 40000);
    let polls: Vec<&SeenRequest> = requests.iter().filter(|r| r.address == 40138).collect();
    assert!(polls.iter().all(|r| r.count == 38));
    assert_eq!(requests.len(), 6 + polls.len(), "{requests:?}");

    let conn = rusqlite::Connection::open(setup.db_path()).expect("db");
    let get = |m: &str| -> Option<f64> {
        conn.query_row(&format!("SELECT {m} FROM inverter ORDER BY ts DESC LIMIT 1"), [], |r| {
            r.get(0)
        })
        .ok()
        .flatten()
    };
    assert_eq!(get("current_ac"), Some(12.34));
    assert_eq!(get("current_ac_l1"), Some(4.12));
    assert_eq!(get("voltage_l1"), Some(230.1));
    assert_eq!(get("power_ac"), Some(2850.0));
    assert_eq!(get("frequency"), Some(50.01));
    assert_eq!(get("energy_ac"), Some(123.456));
    assert_eq!(get("operating_state"), Some(4.0));
    // Not implemented in the image: never stored, no column made up.
    for absent in ["apparent_power", "voltage_l2", "temperature_cabinet", "current_dc"] {
        assert_eq!(get(absent), None, "{absent}");
    }
}

#[test]
fn the_pysunspec2_mock_common_model_decodes() {
    let image = sunspec_image();
    let holding = &image.tables["holding"];
    let words: Vec<u16> = (40000..40070).map(|a| holding[&a]).collect();
    assert_eq!(words[..2], mesura::protocols::modbus::sunspec::MARKER);
    let common = mesura::protocols::modbus::sunspec::common(&words[4..]).expect("model 1");
    assert_eq!(common.manufacturer, "SunSpecTest");
    assert_eq!(common.model, "TestDevice-1");
    assert_eq!(common.version, "1.2.3");
    assert_eq!(common.serial, "sn-123456789");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rtu_meters_share_one_serial_port() {
    let setup = setup();
    let pty = PtyPair::new(setup.dir.path());
    let mut image = RegisterImage::default();
    image.set("input", 0, &w(DataType::F32, WordOrder::Big, 230.5));
    let image_path = setup.dir.path().join("image.json");
    image.write(&image_path);
    // pymodbus answers every unit id on its end of the bus.
    let server = PyServer::start(
        &image_path,
        &["--serial", &pty.device_end.to_string_lossy()],
        &["--baud", "9600"],
    );
    // The port can be opened once only: both devices must go through one bus task.
    for (id, unit) in [("meter_a", 1), ("meter_b", 2)] {
        setup.device(
            id,
            &format!(
                "type: modbus\nserial_port: {}\nbaud_rate: 9600\nunit_id: {unit}\npoll_interval: 1s\ntimeout: 2s\nmax_backoff: 300ms\n\
                 points:\n  - {{name: voltage, register: input, address: 0, type: f32, unit: V}}\n",
                pty.daemon_end.display()
            ),
        );
    }
    let daemon = start(&setup).await;
    wait_for("good polls of both meters", || {
        status(&daemon, "meter_a").polls_ok >= 2 && status(&daemon, "meter_b").polls_ok >= 2
    })
    .await;
    daemon.shutdown().await;
    let units: std::collections::BTreeSet<u8> = server.requests().iter().map(|r| r.unit).collect();
    assert_eq!(units, [1, 2].into_iter().collect());
    let conn = rusqlite::Connection::open(setup.db_path()).expect("db");
    for id in ["meter_a", "meter_b"] {
        let v: f64 = conn
            .query_row(&format!("SELECT voltage FROM {id} ORDER BY ts DESC LIMIT 1"), [], |r| {
                r.get(0)
            })
            .expect("row");
        assert_eq!(v, 230.5);
    }
}
