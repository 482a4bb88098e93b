//! An encrypted P1 port over a real serial line: socat makes a pty pair, the test
//! writes DLMS-encrypted frames into one end, a running daemon reads the other with
//! the meter's `decryption_key` and stores the decrypted values. A Luxembourg-style
//! meter (bare APDUs with a GCM tag, one frame under a wrong key, noise between
//! frames) and Tiroler Netze's published Austrian example (M-Bus segments, encryption
//! only, a COSEM data-notification), each on its own cable.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::dsmr::telegram_at;
use crate::support::{no_env, Setup};
use chrono::{DateTime, Utc};
use mesura::config::Config;
use mesura::daemon::app::Daemon;
use mesura::protocols::dlms::{cipher, Keys};

const LU_KEY: &str = "000102030405060708090A0B0C0D0E0F";
const TINETZ_KEY: &str = "101112131415161718191A1B1C1D1E1F";

/// socat's pty pair `<dir>/<name>-meter` ↔ `<dir>/<name>`; killed on drop.
struct Cable(Child);

impl Cable {
    fn plug(dir: &Path, name: &str) -> Cable {
        let end = |n: &str| format!("pty,raw,echo=0,b115200,link={}", dir.join(n).display());
        let child = Command::new("socat")
            .args(["-d", "-d", &end(&format!("{name}-meter")), &end(name)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (scripts/test.sh installs it)");
        crate::support::wait_until(Duration::from_secs(10), "socat's pty links", || {
            dir.join(format!("{name}-meter")).exists() && dir.join(name).exists()
        });
        Cable(child)
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("time").to_utc()
}

fn value_at(db: &Path, table: &str, column: &str, ts: i64) -> Option<f64> {
    let conn = rusqlite::Connection::open(db).ok()?;
    conn.query_row(
        &format!("SELECT \"{column}\" FROM \"{table}\" WHERE ts = ?1"),
        [ts],
        |r| r.get::<_, Option<f64>>(0),
    )
    .ok()
    .flatten()
}

async fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hex_fixture(name: &str) -> Vec<u8> {
    let text =
        std::fs::read_to_string(crate::support::dsmr::fixture_dir().join("encrypted").join(name)).expect("fixture");
    let digits: String = text.split_whitespace().collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_meters_over_a_pty_store_their_decrypted_values() {
    let setup = Setup::new("backends:\n  sqlite:\n    flush_interval: 200ms\n");
    let dir = setup.dir.path().to_path_buf();
    // poll_interval 0s: every telegram is stored, so each frame's fate shows.
    setup.device(
        "lu",
        &format!(
            "type: dsmr\nport: {}\npoll_interval: 0s\ntimeout: 5s\nmax_clock_skew: 100y\ndecryption_key: {LU_KEY}\n",
            dir.join("ttyLU").display()
        ),
    );
    let key_file = dir.join("tinetz.key");
    std::fs::write(&key_file, format!("{TINETZ_KEY}\n")).expect("key file");
    setup.device(
        "at",
        &format!(
            "type: dsmr\nport: {}\npoll_interval: 0s\ntimeout: 5s\nmax_clock_skew: 100y\ndecryption_key_file: {}\n",
            dir.join("ttyAT").display(),
            key_file.display()
        ),
    );
    let db = setup.db_path();
    let _lu_cable = Cable::plug(&dir, "ttyLU");
    let _at_cable = Cable::plug(&dir, "ttyAT");
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");

    // Luxembourg: three frames, the second under another key, noise around them.
    let keys = Keys::from_hex(LU_KEY, None).expect("key");
    let wrong = Keys::from_hex(&"F".repeat(32), None).expect("key");
    let times = ["2026-11-24T09:00:00Z", "2026-11-24T09:00:01Z", "2026-11-24T09:00:02Z"].map(utc);
    let frame = |keys: &Keys, i: usize| {
        let telegram = telegram_at(times[i], 4000.0 + i as f64);
        cipher::encrypt(keys, *b"SAG\x00\x01\x02\x03\x04", 0x30, i as u32 + 1, &telegram)
    };
    let mut stream = b"\x00\xFF\xDB\x68 noise".to_vec();
    stream.extend(frame(&keys, 0));
    stream.extend(b"\r\n\x7E\x7E");
    stream.extend(frame(&wrong, 1));
    stream.extend(frame(&keys, 2));
    let mut lu = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("ttyLU-meter"))
        .expect("meter end");
    lu.write_all(&stream).expect("write");

    // Austria: the published example, twice (the same frame: one row).
    let mut at = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("ttyAT-meter"))
        .expect("meter end");
    at.write_all(&hex_fixture("tinetz_kaifa_mbus_two_segments.hex"))
        .expect("write");

    let last = times[2].timestamp();
    wait_for(
        Duration::from_secs(30),
        "the last Luxembourg telegram in SQLite",
        || value_at(&db, "lu", "energy_delivered_tariff1", last).is_some(),
    )
    .await;
    // 2021-07-19 15:46:35 CEST.
    let tinetz = utc("2021-07-19T13:46:35Z").timestamp();
    wait_for(Duration::from_secs(30), "the Austrian example in SQLite", || {
        value_at(&db, "at", "energy_delivered_total", tinetz).is_some()
    })
    .await;

    assert_eq!(
        value_at(&db, "lu", "energy_delivered_tariff1", times[0].timestamp()),
        Some(4000.0)
    );
    assert_eq!(value_at(&db, "lu", "energy_delivered_tariff1", last), Some(4002.0));
    assert_eq!(value_at(&db, "lu", "voltage_l2", last), Some(232.6));
    assert_eq!(
        value_at(&db, "lu", "energy_delivered_tariff1", times[1].timestamp()),
        None,
        "a frame under another key was stored"
    );
    assert_eq!(value_at(&db, "at", "energy_delivered_total", tinetz), Some(9.108));
    assert_eq!(value_at(&db, "at", "voltage_l1", tinetz), Some(230.8));
    assert_eq!(
        value_at(&db, "at", "reactive_energy_delivered_total", tinetz),
        Some(0.096)
    );

    let devices = daemon.status().devices();
    assert_eq!(
        devices["lu"].protocol_errors.get("decrypt").copied(),
        Some(1),
        "the wrong-key frame is counted"
    );
    assert_eq!(devices["at"].protocol_errors.get("decrypt").copied(), Some(0));
    assert!(devices["lu"].protocol_errors.get("junk_bytes").is_some_and(|&n| n > 0));
    drop(devices);
    let summary = daemon.shutdown().await;
    assert_eq!(summary.dropped.values().sum::<u64>(), 0);
}
