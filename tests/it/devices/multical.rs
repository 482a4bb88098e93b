//! The `multical` device against a simulated meter on a socat pty pair: the daemon
//! opens one end as its serial port, a thread here answers KMP requests on the
//! other end from a register table encoded with the codec. Everything runs for
//! real (serial port, daemon, SQLite); waits are bounded polls, never fixed sleeps.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{no_env, sqlite_rows, Setup};
use mesura::config::Config;
use mesura::daemon::app::Daemon;
use mesura::daemon::live::DeviceStatus;
use mesura::protocols::kmp::{self, registers as reg, RegisterValue, Request, Unit};

/// Generous: the machine may be busy building or testing something else.
const LIMIT: Duration = Duration::from_secs(30);

/// Two linked ptys made by socat; killed on drop.
struct PtyPair {
    socat: Child,
    daemon_end: PathBuf,
    meter_end: PathBuf,
}

impl PtyPair {
    /// A pair again where an earlier one was (a head plugged back in).
    fn new_at(dir: &Path) -> PtyPair {
        let _ = std::fs::remove_file(dir.join("head"));
        let _ = std::fs::remove_file(dir.join("meter"));
        PtyPair::new(dir)
    }

    fn new(dir: &Path) -> PtyPair {
        let daemon_end = dir.join("head");
        let meter_end = dir.join("meter");
        let socat = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", daemon_end.display()))
            .arg(format!("pty,raw,echo=0,link={}", meter_end.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is installed (scripts/test.sh installs it)");
        let pair = PtyPair {
            socat,
            daemon_end,
            meter_end,
        };
        let start = Instant::now();
        while !(pair.daemon_end.exists() && pair.meter_end.exists()) {
            assert!(start.elapsed() < LIMIT, "socat made no pty pair within {LIMIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        pair
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
    }
}

/// How the simulated meter answers a GetRegister request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Answer,
    Silent,
    Garbage,
    BadCrc,
    /// Odd-numbered requests get a bad CRC, the retries a good answer.
    BadCrcThenAnswer,
    /// The first request is answered with its last register swapped for another
    /// (volume), as if answering some other question; the rest are answered.
    OtherRegisterOnce,
    /// The first answer comes one request late, and so does the next: the answer
    /// to the first request arrives during its retry, the answer to the retry
    /// during the following request. Then the meter is on time again.
    LateAnswers,
}

/// A MULTICAL 403 as the fixtures show it (energy in MWh, temperature difference
/// in K), plus an hour counter and an info code.
fn table() -> Vec<RegisterValue> {
    let r = |id, unit, value, decimals, length| {
        RegisterValue::from_f64(id, unit, value, decimals)
            .and_then(|v| v.with_length(length))
            .expect("table value")
    };
    vec![
        r(reg::ENERGY, Unit::MWh, 55.006, 3, 4),
        r(reg::VOLUME, Unit::CubicMetre, 1875.56, 2, 4),
        r(reg::POWER, Unit::KW, 12.3, 1, 2),
        r(reg::FLOW, Unit::LitrePerHour, 245.0, 0, 2),
        r(reg::TEMP_FLOW, Unit::Celsius, 53.65, 2, 2),
        r(reg::TEMP_RETURN, Unit::Celsius, 45.79, 2, 2),
        r(reg::TEMP_DIFF, Unit::Kelvin, 7.86, 2, 2),
        r(reg::HOUR_COUNTER, Unit::Hour, 12_345.0, 0, 4),
        r(reg::INFO_CODE, Unit::NoUnit, 0.0, 0, 2),
    ]
}

/// A frame like the meter's answer, but with a CRC that does not match.
fn with_bad_crc(values: &[RegisterValue]) -> Vec<u8> {
    let mut body = vec![kmp::ADDRESS_HEAT_METER, kmp::CMD_GET_REGISTER];
    body.extend(kmp::encode_register_data(values));
    let crc = kmp::crc16(&body) ^ 0x5555;
    body.extend(crc.to_be_bytes());
    let mut frame = vec![kmp::START_FROM_METER];
    kmp::stuff(&body, &mut frame);
    frame.push(kmp::STOP);
    frame
}

/// The simulated meter: a thread answering on the meter's end of the pair.
/// The serial number the simulated meter answers GetSerialNo with.
const SERIAL: u32 = 19_088_743;

struct Meter {
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<Vec<u16>>>>,
    /// What GetSerialNo and GetRegister answer: changed together, it is another
    /// meter behind the same head.
    serial: Arc<AtomicU32>,
    table: Arc<Mutex<Vec<RegisterValue>>>,
    thread: Option<JoinHandle<()>>,
}

impl Meter {
    fn start(path: &Path, behaviour: Behaviour, table: Vec<RegisterValue>) -> Meter {
        // serialport puts the pty in raw mode; the short timeout lets the thread
        // see the stop flag.
        let mut port = tokio_serial::new(path.to_string_lossy(), 1200)
            .timeout(Duration::from_millis(50))
            .open()
            .expect("open the meter's end of the pty pair");
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop_flag, seen) = (stop.clone(), requests.clone());
        let serial = Arc::new(AtomicU32::new(SERIAL));
        let table = Arc::new(Mutex::new(table));
        let (serial_now, table_now) = (serial.clone(), table.clone());
        let thread = std::thread::spawn(move || {
            let mut pending = Vec::new();
            // An answer the meter owes, sent with the reply to the next request.
            let mut late: Option<Vec<u8>> = None;
            let mut buf = [0u8; 256];
            while !stop_flag.load(Ordering::Relaxed) {
                match port.read(&mut buf) {
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                    Err(e) => panic!("meter end of the pty failed: {e}"),
                }
                while let Some(end) = pending.iter().position(|&b| b == kmp::STOP) {
                    let frame: Vec<u8> = pending.drain(..=end).collect();
                    let registers = match kmp::decode_request(&frame) {
                        Ok(Request::GetRegister { registers, .. }) => registers,
                        Ok(Request::GetSerialNo { .. }) => {
                            let reply = match behaviour {
                                Behaviour::Silent => continue,
                                Behaviour::Garbage => b"this is not KMP at all\r".to_vec(),
                                _ => kmp::encode_response(&kmp::Response::SerialNo {
                                    address: kmp::ADDRESS_HEAT_METER,
                                    serial: serial_now.load(Ordering::SeqCst),
                                }),
                            };
                            port.write_all(&reply).expect("answer");
                            port.flush().expect("flush");
                            continue;
                        }
                        _ => panic!("the daemon sent something other than GetRegister or GetSerialNo: {frame:02x?}"),
                    };
                    let table = table_now.lock().expect("lock").clone();
                    let count = {
                        let mut seen = seen.lock().expect("lock");
                        seen.push(registers.clone());
                        seen.len()
                    };
                    // Registers the meter does not have are left out, as a real one does.
                    let values: Vec<RegisterValue> = registers
                        .iter()
                        .filter_map(|id| table.iter().find(|v| v.register() == *id).copied())
                        .collect();
                    let reply = match behaviour {
                        Behaviour::Answer => kmp::encode_register_response(&values),
                        Behaviour::OtherRegisterOnce if count == 1 => {
                            let mut swapped = values.clone();
                            if let Some(last) = swapped.last_mut() {
                                *last = table
                                    .iter()
                                    .find(|v| v.register() == reg::VOLUME)
                                    .copied()
                                    .expect("volume");
                            }
                            assert!(
                                !registers.contains(&reg::VOLUME),
                                "the swap must bring a register not asked for"
                            );
                            kmp::encode_register_response(&swapped)
                        }
                        Behaviour::OtherRegisterOnce => kmp::encode_register_response(&values),
                        Behaviour::LateAnswers if count <= 2 => {
                            let owed = late.replace(kmp::encode_register_response(&values));
                            match owed {
                                Some(owed) => owed,
                                None => continue,
                            }
                        }
                        Behaviour::LateAnswers => {
                            let mut reply = late.take().unwrap_or_default();
                            reply.extend(kmp::encode_register_response(&values));
                            reply
                        }
                        Behaviour::BadCrcThenAnswer if count % 2 == 0 => kmp::encode_register_response(&values),
                        Behaviour::BadCrc | Behaviour::BadCrcThenAnswer => with_bad_crc(&values),
                        Behaviour::Garbage => b"this is not KMP at all\r".to_vec(),
                        Behaviour::Silent => continue,
                    };
                    port.write_all(&reply).expect("answer");
                    port.flush().expect("flush");
                }
            }
        });
        Meter {
            stop,
            requests,
            serial,
            table,
            thread: Some(thread),
        }
    }

    /// Another meter behind the head: its own serial number and registers.
    fn replace_with(&self, serial: u32, table: Vec<RegisterValue>) {
        *self.table.lock().expect("lock") = table;
        self.serial.store(serial, Ordering::SeqCst);
    }

    fn requests(&self) -> Vec<Vec<u16>> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            // Surface a panic in the meter thread, unless the test is failing already.
            if result.is_err() && !std::thread::panicking() {
                panic!("the simulated meter's thread panicked");
            }
        }
    }
}

/// What the daemons of this test binary log at WARN and above (tests run side by
/// side, so each looks for lines only its own scenario can produce).
fn warnings() -> Arc<Mutex<Vec<u8>>> {
    crate::support::logs::warnings()
}

fn logged() -> String {
    crate::support::logs::text(&warnings())
}

/// Every stored row of `heat`, oldest first: `columns` as stored, `None` for a hole.
fn stored_rows(setup: &Setup, columns: &[&str]) -> Vec<Vec<Option<f64>>> {
    let conn = rusqlite::Connection::open(setup.db_path()).expect("db");
    let sql = format!("SELECT {} FROM heat ORDER BY ts", columns.join(", "));
    let mut query = conn.prepare(&sql).expect("query");
    let rows = query
        .query_map([], |r| (0..columns.len()).map(|i| r.get::<_, Option<f64>>(i)).collect())
        .expect("rows")
        .collect::<Result<Vec<Vec<Option<f64>>>, _>>()
        .expect("values");
    rows
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < LIMIT, "timed out after {LIMIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn heat(daemon: &Daemon) -> DeviceStatus {
    daemon.status().devices()["heat"].clone()
}

/// A config dir with one `multical` device `heat` on the daemon's end of `pty`.
/// `extra` must set `timeout`: short where the meter fails on purpose, long where a
/// retry caused by a busy machine would upset the request counts.
fn setup(extra: &str) -> (Setup, PtyPair) {
    let setup = Setup::new("backends:\n  sqlite:\n    flush_interval: 1s\n");
    let pty = PtyPair::new(setup.dir.path());
    setup.device(
        "heat",
        &format!(
            "type: multical\nport: {}\nmax_backoff: 1s\nfailure_threshold: 50\n{extra}",
            pty.daemon_end.display()
        ),
    );
    (setup, pty)
}

async fn start(setup: &Setup) -> Daemon {
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start")
}

const ALL_REGISTERS: &str =
    "registers: [energy, volume, power, flow, temp_flow, temp_return, temp_diff, hour_counter, info_code]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_register_goes_through_the_daemon_into_sqlite() {
    // Nine registers: two frames a poll. close_between_polls: the port is opened
    // anew for the second poll.
    let (setup, pty) = setup(&format!(
        "poll_interval: 1s\nclose_between_polls: true\n{ALL_REGISTERS}"
    ));
    let meter = Meter::start(&pty.meter_end, Behaviour::Answer, table());
    let daemon = start(&setup).await;
    wait_for("two good polls", || heat(&daemon).polls_ok >= 2).await;
    let status = daemon.status().clone();
    daemon.shutdown().await;
    let heat = &status.devices()["heat"];
    assert_eq!(heat.polls_failed, 0, "{:?}", heat.last_error);

    let requests = meter.requests();
    assert!(requests.iter().all(|r| r.len() <= kmp::MAX_REGISTERS_PER_REQUEST));
    assert_eq!(
        requests[0].len(),
        8,
        "as many registers in a frame as the protocol allows"
    );
    assert_eq!(requests[1], [reg::INFO_CODE]);
    let polls = heat.polls_ok as usize;
    assert!(
        (2 * polls..=2 * polls + 2).contains(&requests.len()),
        "{} requests for {polls} polls: two frames a poll, no retries",
        requests.len()
    );

    let conn = rusqlite::Connection::open(setup.db_path()).expect("db");
    let row: Vec<f64> = conn
        .query_row(
            "SELECT heat_energy, volume, power, flow, temp_flow, temp_return, temp_diff, hour_counter, info_code \
             FROM heat ORDER BY ts DESC LIMIT 1",
            [],
            |r| (0..9).map(|i| r.get::<_, f64>(i)).collect(),
        )
        .expect("a stored row");
    // MWh → kWh, kW → W, K → °C: the values in the units the metrics promise.
    assert_eq!(
        row,
        [55_006.0, 1875.56, 12_300.0, 245.0, 53.65, 45.79, 7.86, 12_345.0, 0.0]
    );
    assert!(sqlite_rows(&setup.db_path(), "heat") >= 1);

    let catalogue: Vec<(String, String, String)> = conn
        .prepare("SELECT metric, unit, kind FROM metrics WHERE device = 'heat' ORDER BY metric")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("values");
    let expect = |m: &str, u: &str, k: &str| (m.to_string(), u.to_string(), k.to_string());
    assert_eq!(
        catalogue,
        [
            expect("flow", "l/h", "gauge"),
            expect("heat_energy", "kWh", "counter"),
            // The lifetime series beside each energy and volume counter (docs/counters.md).
            expect("heat_energy_lifetime", "kWh", "counter"),
            expect("hour_counter", "h", "counter"),
            expect("info_code", "", "gauge"),
            expect("power", "W", "gauge"),
            expect("temp_diff", "°C", "gauge"),
            expect("temp_flow", "°C", "gauge"),
            expect("temp_return", "°C", "gauge"),
            expect("volume", "m³", "counter"),
            expect("volume_lifetime", "m³", "counter"),
        ]
    );
}

/// A meter that keeps failing: each poll sends the request twice (one retry),
/// then the supervisor backs off; no row is ever stored.
async fn failing_meter(behaviour: Behaviour, kind: &str, message: &str) {
    let (setup, pty) = setup("timeout: 300ms\npoll_interval: 1h\n");
    let meter = Meter::start(&pty.meter_end, behaviour, table());
    let daemon = start(&setup).await;
    wait_for("three failed polls", || heat(&daemon).polls_failed >= 3).await;
    let status = daemon.status().clone();
    daemon.shutdown().await;
    let heat = &status.devices()["heat"];
    assert_eq!(heat.polls_ok, 0);
    assert_eq!(
        heat.errors_by_kind.get(kind),
        Some(&heat.polls_failed),
        "{:?}",
        heat.errors_by_kind
    );
    let error = heat.last_error.clone().unwrap_or_default();
    assert!(error.contains(message) && error.contains("2 attempts"), "{error}");
    // Polls are an hour apart: every poll after the first is the backoff at work.
    let failed = heat.polls_failed as usize;
    let sent = meter.requests().len();
    assert!(
        (2 * failed..=2 * failed + 2).contains(&sent),
        "{sent} requests for {failed} failed polls: expected one retry each"
    );
    assert_eq!(sqlite_rows(&setup.db_path(), "heat"), 0, "nothing may be stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_meter_is_retried_then_backed_off() {
    failing_meter(Behaviour::Silent, "link", "no answer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_answering_garbage_is_retried_then_backed_off() {
    failing_meter(Behaviour::Garbage, "invalid_data", "garbage").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_crc_is_retried_then_backed_off() {
    failing_meter(Behaviour::BadCrc, "invalid_data", "CRC").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_answer_is_retried_within_the_poll() {
    let (setup, pty) = setup("timeout: 1s\npoll_interval: 1s\nregisters: [energy, temp_flow]\n");
    let meter = Meter::start(&pty.meter_end, Behaviour::BadCrcThenAnswer, table());
    let daemon = start(&setup).await;
    wait_for("two good polls", || heat(&daemon).polls_ok >= 2).await;
    let status = daemon.status().clone();
    daemon.shutdown().await;
    let heat = &status.devices()["heat"];
    assert_eq!(
        heat.polls_failed, 0,
        "the retry saved every poll: {:?}",
        heat.last_error
    );
    let polls = heat.polls_ok as usize;
    let sent = meter.requests().len();
    assert!(
        (2 * polls..=2 * polls + 2).contains(&sent),
        "{sent} requests, {polls} polls"
    );
    // Saved by the retry, but not unseen: each bad CRC is counted for /metrics
    // (mesura_protocol_errors_total{kind="crc"}), one a poll.
    let crc = heat.protocol_errors.get("crc").copied().unwrap_or(0);
    assert!(
        (heat.polls_ok..=heat.polls_ok + 1).contains(&crc),
        "{crc} bad CRCs counted for {} polls: {:?}",
        heat.polls_ok,
        heat.protocol_errors
    );
    let conn = rusqlite::Connection::open(setup.db_path()).expect("db");
    let (energy, temp): (f64, f64) = conn
        .query_row(
            "SELECT heat_energy, temp_flow FROM heat ORDER BY ts DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!((energy, temp), (55_006.0, 53.65));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_the_meter_lacks_are_left_out() {
    let (setup, pty) = setup("timeout: 2s\npoll_interval: 1h\nregisters: [energy, hour_counter]\n");
    let without_hours: Vec<RegisterValue> = table()
        .into_iter()
        .filter(|v| v.register() != reg::HOUR_COUNTER)
        .collect();
    warnings();
    let _meter = Meter::start(&pty.meter_end, Behaviour::Answer, without_hours);
    let daemon = start(&setup).await;
    wait_for("a good poll", || heat(&daemon).polls_ok >= 1).await;
    let status = daemon.status().clone();
    daemon.shutdown().await;
    // Left out is not answered wrongly: said as such, and no mismatch counted.
    assert_eq!(
        status.devices()["heat"].protocol_errors.get("register_mismatch"),
        Some(&0)
    );
    let log = logged();
    assert!(
        log.contains("answers without these registers, so it does not have them")
            && log.contains("registers=hour_counter"),
        "{log}"
    );
    let conn = rusqlite::Connection::open(setup.db_path()).expect("db");
    let energy: f64 = conn
        .query_row("SELECT heat_energy FROM heat", [], |r| r.get(0))
        .expect("row");
    assert_eq!(energy, 55_006.0);
    let hour_columns: i64 = conn
        .query_row(
            "SELECT count(*) FROM metrics WHERE device = 'heat' AND metric = 'hour_counter'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(hour_columns, 0, "no value is made up for a register the meter lacks");
}

/// The values of [`table`] as stored, in the order of [`ALL_REGISTERS`].
const STORED: [f64; 9] = [55_006.0, 1875.56, 12_300.0, 245.0, 53.65, 45.79, 7.86, 12_345.0, 0.0];
const COLUMNS: [&str; 9] = [
    "heat_energy",
    "volume",
    "power",
    "flow",
    "temp_flow",
    "temp_return",
    "temp_diff",
    "hour_counter",
    "info_code",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_a_register_not_asked_for_is_turned_down_and_retried() {
    warnings();
    // Polls 3 s apart: SQLite keys rows by the second, and two polls in one
    // second would fill each other's holes and hide them.
    let (setup, pty) = setup("timeout: 1s\npoll_interval: 3s\nregisters: [energy, hour_counter]\n");
    let meter = Meter::start(&pty.meter_end, Behaviour::OtherRegisterOnce, table());
    let daemon = start(&setup).await;
    wait_for("two good polls", || heat(&daemon).polls_ok >= 2).await;
    let status = daemon.status().clone();
    daemon.shutdown().await;
    let rows = stored_rows(&setup, &["heat_energy", "hour_counter"]);
    assert!(rows.len() >= 2, "{rows:?}");
    for row in &rows {
        assert_eq!(row, &[Some(55_006.0), Some(12_345.0)], "a row with a hole: {rows:?}");
    }
    let heat = &status.devices()["heat"];
    assert_eq!(heat.polls_failed, 0, "the retry saved the poll: {:?}", heat.last_error);
    assert_eq!(
        heat.protocol_errors.get("register_mismatch"),
        Some(&1),
        "{:?}",
        heat.protocol_errors
    );
    let polls = heat.polls_ok as usize;
    let sent = meter.requests().len();
    assert!(
        (polls + 1..=polls + 2).contains(&sent),
        "{sent} requests for {polls} polls: one retry, for the wrong answer"
    );

    let log = logged();
    assert!(
        log.contains("not asked for")
            && log.contains("requested=0x003c energy, 0x03ec hour_counter returned=0x003c energy, 0x0044 volume"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_is_never_taken_for_the_next_request() {
    warnings();
    // Nine registers: two requests a poll (8 + info_code), so the answer owed to
    // the first request's retry arrives while info_code is being asked for.
    let (setup, pty) = setup(&format!("timeout: 1s\npoll_interval: 3s\n{ALL_REGISTERS}"));
    let meter = Meter::start(&pty.meter_end, Behaviour::LateAnswers, table());
    let daemon = start(&setup).await;
    wait_for("two good polls", || heat(&daemon).polls_ok >= 2).await;
    let status = daemon.status().clone();
    daemon.shutdown().await;
    let rows = stored_rows(&setup, &COLUMNS);
    assert!(rows.len() >= 2, "{rows:?}");
    for row in &rows {
        let want: Vec<Option<f64>> = STORED.iter().copied().map(Some).collect();
        assert_eq!(row, &want, "a row with a hole or another register's value: {rows:?}");
    }
    let heat = &status.devices()["heat"];
    assert_eq!(heat.polls_failed, 0, "{:?}", heat.last_error);
    assert_eq!(
        heat.protocol_errors.get("register_mismatch"),
        Some(&1),
        "{:?}",
        heat.protocol_errors
    );
    let polls = heat.polls_ok as usize;
    let sent = meter.requests().len();
    assert!(
        (2 * polls + 1..=2 * polls + 3).contains(&sent),
        "{sent} requests for {polls} polls: one retry, for the silent first request"
    );

    let log = logged();
    assert!(
        log.contains("requested=0x0063 info_code returned=0x003c energy, 0x0044 volume, 0x0050 power"),
        "{log}"
    );
}

/// A meter replaced behind the same optical head: the new one answers GetSerialNo
/// with another serial (its registers here read the same, so only the serial can
/// tell). Its counters start a new epoch, named by the new serial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_meter_behind_the_head_starts_new_epochs() {
    let (setup, pty) = setup("poll_interval: 1s\ntimeout: 2s\nregisters: [energy, volume]\n");
    let meter = Meter::start(&pty.meter_end, Behaviour::Answer, table());
    let daemon = start(&setup).await;
    wait_for("a first poll", || heat(&daemon).polls_ok >= 1).await;
    // The serial is asked again when the port reopens (or an hour on): the head
    // is unplugged (the pty pair closed and made again), as moving it would.
    drop(meter);
    drop(pty);
    let pty = PtyPair::new_at(setup.dir.path());
    let meter = Meter::start(&pty.meter_end, Behaviour::Answer, table());
    meter.replace_with(1_234_567, table());
    let epochs = setup.dir.path().join("data/epochs.db");
    let swapped = || -> Vec<(String, String, Option<String>)> {
        let Ok(conn) = rusqlite::Connection::open(&epochs) else {
            return Vec::new();
        };
        let Ok(mut stmt) =
            conn.prepare("SELECT metric, reason, identity FROM epochs WHERE device = 'heat' AND reason = 'swap'")
        else {
            return Vec::new();
        };
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map(|rows| rows.filter_map(Result::ok).collect())
            .unwrap_or_default()
    };
    wait_for("new epochs for the new meter", || swapped().len() >= 2).await;
    daemon.shutdown().await;
    let rows = swapped();
    assert!(
        rows.iter()
            .any(|(m, _, id)| m == "heat_energy" && id.as_deref() == Some("1234567")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|(m, _, id)| m == "volume" && id.as_deref() == Some("1234567")),
        "{rows:?}"
    );
    drop(meter);
}
