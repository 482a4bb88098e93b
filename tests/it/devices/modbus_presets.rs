//! Every shipped Modbus preset against a strict meter: a pymodbus server that
//! serves only the registers the vendor documents (exception 02 for anything
//! else) and refuses requests longer than the vendor's limit (exception 03). And
//! what happens when the meter refuses one point: it is named, left out for a
//! while, and the other points are stored.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::support::broker::free_port;
use crate::support::modbus::{
    pysunspec2_mock_words, setup, start, status, wait_for, PyServer, RegisterImage, SeenRequest,
};
use mesura::monitors::modbus::config::{parse_map, preset_names, preset_text, PointConfig};
use mesura::protocols::modbus::point::{decode_words, encode_words, DataType, Decoded, RegisterKind, WordOrder};

/// Everything the daemons of this test binary log at INFO and above.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    crate::support::logs::info()
}

fn log_text() -> String {
    crate::support::logs::text(&logs())
}

/// Input registers of the SDM630 parameters every variant's table documents
/// (Eastron "SDM630 Modbus Protocol", 30001 = 0x0000), each an f32 in two
/// registers. 0x0050 (30081) and 0x0054 (30085) are missing from some variants.
fn sdm630_documented() -> Vec<u16> {
    let mut starts: Vec<u16> = (0x00..=0x28).step_by(2).collect();
    starts.extend([
        0x2A, 0x2E, 0x30, 0x34, 0x38, 0x3C, 0x3E, 0x42, 0x46, 0x48, 0x4A, 0x4C, 0x4E,
    ]);
    starts.extend([0xC8, 0xCA, 0xCC, 0xCE, 0xE0, 0x156, 0x158]);
    starts
}

fn sdm630_meter() -> (RegisterImage, u16) {
    let mut image = RegisterImage::default();
    for (i, start) in sdm630_documented().into_iter().enumerate() {
        let value = 100.25 + 3.5 * i as f64;
        image.set("input", start, &encode_words(DataType::F32, WordOrder::Big, value));
    }
    // "Each request for data must be restricted to 40 parameters or less."
    (image, 80)
}

/// A SunSpec inverter as the preset expects it: `SunS` and common model 1 (from
/// the pysunspec2 mock), model 103 at 40070 with every point set, the end marker.
fn sunspec_meter() -> (RegisterImage, u16) {
    let words = pysunspec2_mock_words();
    let mut image = RegisterImage::default();
    image.set("holding", 40000, &words[..70]);
    // Model 103's body (50 registers): scale factors −1, counts elsewhere.
    let scale_factors = [4, 11, 13, 15, 17, 19, 21, 24, 26, 28, 30, 35];
    let mut body: Vec<u16> = (0..50).map(|i| 1000 + i).collect();
    for sf in scale_factors {
        body[sf] = (-1i16) as u16;
    }
    body[22] = 0x0001; // WH, acc32: 0x0001_E240 = 123456 Wh
    body[23] = 0xE240;
    body[36] = 4; // St: MPPT
    image.set("holding", 40070, &[103, 50]);
    image.set("holding", 40072, &body);
    image.set("holding", 40122, &[0xFFFF, 0]);
    // The largest request the Modbus protocol allows, which SunSpec devices accept.
    (image, 125)
}

/// The documented register table and request limit of a shipped preset's meter.
fn documented_meter(preset: &str) -> (RegisterImage, u16) {
    match preset {
        "sdm630" => sdm630_meter(),
        "sunspec_inverter" => sunspec_meter(),
        other => panic!("preset `{other}` has no documented meter in this test: add its register table"),
    }
}

fn table(kind: RegisterKind) -> &'static str {
    match kind {
        RegisterKind::Holding => "holding",
        RegisterKind::Input => "input",
        RegisterKind::Coil => "coils",
        RegisterKind::Discrete => "discrete",
    }
}

fn words_of(image: &RegisterImage, p: &PointConfig) -> Vec<u16> {
    let n = p.data_type.span(p.length.unwrap_or(1));
    let t = &image.tables[table(p.register)];
    (0..n)
        .map(|i| {
            *t.get(&(p.address + i))
                .unwrap_or_else(|| panic!("point `{}` reads register {} the meter lacks", p.name, p.address + i))
        })
        .collect()
}

fn number(image: &RegisterImage, p: &PointConfig) -> f64 {
    match decode_words(p.data_type, p.word_order, &words_of(image, p)) {
        Ok(Decoded::Number(n)) => n,
        other => panic!("point `{}`: {other:?}", p.name),
    }
}

/// What the preset should store for a point of the image: the raw value, times
/// 10^(its scale factor point), then `scale` and `offset`.
fn expected(image: &RegisterImage, points: &[PointConfig], p: &PointConfig) -> f64 {
    let exponent = p.scale_factor.as_ref().map_or(0, |sf| {
        let sf = points.iter().find(|q| &q.name == sf).expect("scale factor point");
        number(image, sf) as i32
    });
    number(image, p) * 10f64.powi(exponent) * p.scale + p.offset
}

fn touches(r: &SeenRequest, address: u16) -> bool {
    r.address <= address && u32::from(address) < u32::from(r.address) + u32::from(r.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_preset_reads_all_its_metrics_from_a_meter_that_enforces_its_manual() {
    for preset in preset_names() {
        let map = parse_map(preset_text(preset).expect("preset"), preset).expect("preset parses");
        let (image, max_registers) = documented_meter(preset);
        let setup = setup();
        let image_path = setup.dir.path().join("image.json");
        image.write(&image_path);
        let port = free_port();
        let server = PyServer::start(
            &image_path,
            &["--port", &port.to_string()],
            &["--max-registers", &max_registers.to_string()],
        );
        // Nothing but the preset: its own limits must fit the meter.
        setup.device(
            "meter",
            &format!("type: modbus\nhost: 127.0.0.1\nport: {port}\npoll_interval: 1s\npreset: {preset}\n"),
        );
        let daemon = start(&setup).await;
        wait_for(&format!("{preset}: three polls"), || {
            let s = status(&daemon, "meter");
            s.polls_ok + s.polls_failed >= 3
        })
        .await;
        wait_for(&format!("{preset}: rows in SQLite"), || {
            crate::support::sqlite_rows(&setup.db_path(), "meter") >= 1
        })
        .await;
        let meter = status(&daemon, "meter");
        daemon.shutdown().await;
        assert_eq!(meter.polls_failed, 0, "{preset}: {:?}", meter.last_error);
        for kind in ["modbus_point_refused", "modbus_request_limit_lowered"] {
            assert_eq!(meter.protocol_errors.get(kind), Some(&0), "{preset}: {kind}");
        }
        let requests = server.requests();
        assert!(!requests.is_empty());
        for r in &requests {
            assert!(r.count <= max_registers, "{preset}: {r:?} is over the meter's limit");
        }
        let conn = rusqlite::Connection::open(setup.db_path()).expect("db");
        let stored: Vec<&PointConfig> = map.points.iter().filter(|p| p.store).collect();
        assert!(stored.len() >= 20, "{preset}: {} stored points", stored.len());
        for p in stored {
            let got: Option<f64> = conn
                .query_row(
                    &format!("SELECT {} FROM meter ORDER BY ts DESC LIMIT 1", p.name),
                    [],
                    |r| r.get(0),
                )
                .unwrap_or_else(|e| panic!("{preset}: `{}`: {e}", p.name));
            let want = expected(&image, &map.points, p);
            let got = got.unwrap_or_else(|| panic!("{preset}: `{}` not stored", p.name));
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{preset}: `{}` = {got}, the meter holds {want}",
                p.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_point_the_meter_refuses_is_named_left_out_for_a_while_and_the_rest_are_stored() {
    let logs = logs();
    let setup = setup();
    let (image, max_registers) = sdm630_meter();
    let image_path = setup.dir.path().join("image.json");
    image.write(&image_path);
    let port = free_port();
    let server = PyServer::start(
        &image_path,
        &["--port", &port.to_string()],
        &["--max-registers", &max_registers.to_string()],
    );
    // Total kVAh (30081) is in some SDM630 manuals but not in this meter's table.
    setup.device(
        "meter",
        &format!(
            "type: modbus\nhost: 127.0.0.1\nport: {port}\npoll_interval: 1s\npreset: sdm630\nrefused_point_retry: 10s\n\
             points:\n  - {{name: apparent_energy, register: input, address: 0x0050, type: f32, unit: kVAh, kind: counter}}\n"
        ),
    );
    let daemon = start(&setup).await;
    // Asked for in the first poll and once more after refused_point_retry: two
    // rounds of (the request holding it, then the point alone).
    wait_for("the refused point asked for twice", || {
        server.requests().iter().filter(|r| touches(r, 0x50)).count() >= 4
    })
    .await;
    wait_for("rows in SQLite", || {
        crate::support::sqlite_rows(&setup.db_path(), "meter") >= 2
    })
    .await;
    // The server sees the second refusal's request before the poll that made it
    // has returned and counted it.
    wait_for("the second refusal counted", || {
        status(&daemon, "meter")
            .protocol_errors
            .get("modbus_point_refused")
            .is_some_and(|n| *n >= 2)
    })
    .await;
    let meter = status(&daemon, "meter");
    daemon.shutdown().await;
    assert_eq!(meter.polls_failed, 0, "{:?}", meter.last_error);
    assert!(
        meter
            .protocol_errors
            .get("modbus_point_refused")
            .is_some_and(|n| *n >= 2),
        "{:?}",
        meter.protocol_errors
    );
    assert_eq!(meter.protocol_errors.get("modbus_request_limit_lowered"), Some(&0));
    // Not asked for in the polls between: the point is left out for a while.
    let asked = server.requests().iter().filter(|r| touches(r, 0x50)).count() as u64;
    assert!(
        asked * 2 < meter.polls_ok,
        "{asked} requests for the refused point in {} polls",
        meter.polls_ok
    );

    let conn = rusqlite::Connection::open(setup.db_path()).expect("db");
    let map = parse_map(preset_text("sdm630").expect("preset"), "sdm630").expect("preset parses");
    for p in &map.points {
        let got: Option<f64> = conn
            .query_row(
                &format!("SELECT {} FROM meter ORDER BY ts DESC LIMIT 1", p.name),
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("`{}`: {e}", p.name));
        assert_eq!(got, Some(expected(&image, &map.points, p)), "`{}`", p.name);
    }
    let columns: BTreeSet<String> = conn
        .prepare("SELECT name FROM pragma_table_info('meter')")
        .expect("columns")
        .query_map([], |r| r.get(0))
        .expect("columns")
        .map(|c| c.expect("column"))
        .collect();
    assert!(!columns.contains("apparent_energy"), "{columns:?}");

    drop(logs);
    let log = log_text();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("refuses point `apparent_energy`"))
        .collect();
    assert!(refused.len() >= 2, "{log}");
    assert!(
        refused
            .iter()
            .all(|l| l.contains("IllegalDataAddress") && l.contains("0x0050")),
        "{refused:?}"
    );
    assert!(log.contains("asking for a point the device refused again"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_that_refuses_reads_through_undefined_registers_gets_smaller_requests() {
    let setup = setup();
    let mut image = RegisterImage::default();
    for a in [0u16, 2, 6] {
        image.set(
            "input",
            a,
            &encode_words(DataType::F32, WordOrder::Big, f64::from(a) + 0.5),
        );
    }
    let image_path = setup.dir.path().join("image.json");
    image.write(&image_path);
    let port = free_port();
    let server = PyServer::start(&image_path, &["--port", &port.to_string()], &[]);
    // The default max_gap reads 4..6 through, which this meter does not have.
    setup.device(
        "meter",
        &format!(
            "type: modbus\nhost: 127.0.0.1\nport: {port}\npoll_interval: 1s\n\
             points:\n  - {{name: a, register: input, address: 0, type: f32}}\n  - {{name: b, register: input, address: 2, type: f32}}\n  - {{name: c, register: input, address: 6, type: f32}}\n"
        ),
    );
    let daemon = start(&setup).await;
    wait_for("four polls", || status(&daemon, "meter").polls_ok >= 4).await;
    wait_for("rows in SQLite", || {
        crate::support::sqlite_rows(&setup.db_path(), "meter") >= 1
    })
    .await;
    let meter = status(&daemon, "meter");
    daemon.shutdown().await;
    assert_eq!(meter.polls_failed, 0, "{:?}", meter.last_error);
    assert_eq!(meter.protocol_errors.get("modbus_request_limit_lowered"), Some(&1));
    assert_eq!(meter.protocol_errors.get("modbus_point_refused"), Some(&0));
    let requests = server.requests();
    let through: Vec<&SeenRequest> = requests.iter().filter(|r| touches(r, 4)).collect();
    assert_eq!(through.len(), 1, "read through the hole once only: {requests:?}");
    let conn = rusqlite::Connection::open(setup.db_path()).expect("db");
    let row: (f64, f64, f64) = conn
        .query_row("SELECT a, b, c FROM meter ORDER BY ts ASC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("first row");
    assert_eq!(row, (0.5, 2.5, 6.5), "the first poll is whole");
}
