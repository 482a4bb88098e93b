//! `mesura decode dsmr FILE`, as a user pasting a telegram runs it.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mesura");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dsmr");

fn decode(path: &str) -> (bool, String, String) {
    decode_with(&[path])
}

fn decode_with(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["decode", "dsmr"])
        .args(args)
        .output()
        .expect("run mesura");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one telegram of a single-telegram file's JSON array.
fn only(stdout: &str) -> serde_json::Value {
    let json: serde_json::Value = serde_json::from_str(stdout).expect("JSON");
    let telegrams = json.as_array().expect("an array of telegrams");
    assert_eq!(telegrams.len(), 1, "{json}");
    telegrams[0].clone()
}

fn reading<'a>(json: &'a serde_json::Value, metric: &str) -> &'a serde_json::Value {
    json["readings"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["metric"] == metric))
        .unwrap_or_else(|| panic!("{metric} missing in {json}"))
}

#[test]
fn a_good_telegram_prints_json() {
    let (ok, stdout, stderr) = decode(&format!("{FIXTURES}/dsmr50_iskra_am550_real.txt"));
    assert!(ok, "{stderr}");
    let json = only(&stdout);
    assert_eq!(json["crc"], "valid");
    // 0-0:1.0.0(181106140429W): 14:04:29 at UTC+1.
    assert_eq!(json["meter_time"], "2018-11-06T13:04:29Z");
    // 0-0:96.1.1(4530303334303036383130353136343136), hex of printable ASCII.
    assert_eq!(json["equipment_id"], "E0034006810516416");
    let power = reading(&json, "power_returned");
    assert_eq!(
        (power["value"].as_f64(), power["unit"].as_str()),
        (Some(498.0), Some("W"))
    );
    let gas = reading(&json, "gas_delivered");
    assert_eq!(gas["value"].as_f64(), Some(1569.646));
    assert_eq!(gas["unit"], "m³");
    assert_eq!(
        gas["timestamp"], "2018-11-06T13:00:10Z",
        "the gas meter's own capture time"
    );
    assert_eq!(json["readings"].as_array().map(Vec::len), Some(28));
}

#[test]
fn an_old_telegram_has_no_crc_and_no_meter_time() {
    let (ok, stdout, stderr) = decode(&format!("{FIXTURES}/dsmr22_iskra_mt382_gas_nocrc.txt"));
    assert!(ok, "{stderr}");
    let json = only(&stdout);
    assert_eq!(json["crc"], "absent");
    assert!(json["meter_time"].is_null());
    assert_eq!(reading(&json, "power_delivered")["value"].as_f64(), Some(1010.0));
}

#[test]
fn rejected_telegrams_exit_1_with_the_reason() {
    let (ok, stdout, stderr) = decode(&format!("{FIXTURES}/dsmr42_kaifa_bad_crc_abcd.txt"));
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("CRC mismatch") && stderr.contains("ABCD") && stderr.contains("4BC6"),
        "{stderr}"
    );

    let (ok, _, stderr) = decode(&format!("{FIXTURES}/dsmr22_iskra_mt382_truncated_no_terminator.txt"));
    assert!(!ok);
    assert!(stderr.contains("no complete telegram"), "{stderr}");

    let (ok, _, stderr) = decode("/nonexistent/telegram.txt");
    assert!(!ok);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn a_telegram_that_lost_its_crs_still_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(format!("{FIXTURES}/dsmr50_iskra_am550_real.txt")).expect("fixture");
    let path = dir.path().join("pasted.txt");
    std::fs::write(&path, text.replace("\r\n", "\n")).expect("write");
    let (ok, stdout, stderr) = decode(path.to_str().expect("utf-8 path"));
    assert!(ok, "{stderr}");
    let json = only(&stdout);
    assert_eq!(json["crc"], "valid");
    assert!(json["note"].as_str().is_some_and(|n| n.contains("LF")), "{json}");
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
}

/// A capture of three telegrams with a NUL, a 0xFF line and a stray byte between
/// them, as a P1 cable sends them.
fn capture() -> (tempfile::TempDir, String, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk: [&[u8]; 3] = [b"\x00", b"\xff\xff\r\n", b"\r\n\x80"];
    let telegrams = [
        fixture("dsmr50_iskra_am550_real.txt"),
        fixture("dsmr22_iskra_mt382_gas_nocrc.txt"),
        fixture("dsmr42_kaifa_real.txt"),
    ];
    let bytes: Vec<u8> = junk
        .iter()
        .zip(&telegrams)
        .flat_map(|(j, t)| [*j, &t[..]].concat())
        .collect();
    let junk_bytes = junk.concat().iter().filter(|b| !b.is_ascii_whitespace()).count() as u64;
    let path = dir.path().join("capture.txt");
    std::fs::write(&path, bytes).expect("write");
    let path = path.to_str().expect("utf-8 path").to_owned();
    (dir, path, junk_bytes)
}

#[test]
fn every_telegram_of_a_capture_is_decoded_and_the_junk_told() {
    let (_dir, path, junk_bytes) = capture();
    let (ok, stdout, stderr) = decode(&path);
    assert!(ok, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let telegrams = json.as_array().expect("an array");
    let headers: Vec<&str> = telegrams.iter().filter_map(|t| t["header"].as_str()).collect();
    assert_eq!(headers, ["ISK5\\2M550T-1011", "ISk5\\2MT382-1004", "KFM5KAIFA-METER"]);
    let numbers: Vec<u64> = telegrams.iter().filter_map(|t| t["telegram"].as_u64()).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(
        reading(&telegrams[2], "energy_delivered_tariff1")["value"].as_f64(),
        Some(4726.494)
    );
    assert!(
        stderr.contains(&format!(
            "3 telegrams decoded, 0 dropped, {junk_bytes} bytes skipped as junk"
        )),
        "{stderr}"
    );

    let (ok, stdout, stderr) = decode_with(&["--lines", &path]);
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(&lines[..], &telegrams[..]);
}

#[test]
fn a_dropped_telegram_exits_1_and_the_others_still_print() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("capture.txt");
    let bytes = [
        fixture("dsmr42_kaifa_real.txt"),
        fixture("dsmr42_kaifa_bad_crc_abcd.txt"),
        fixture("dsmr50_iskra_am550_real.txt"),
    ]
    .concat();
    std::fs::write(&path, bytes).expect("write");
    let (ok, stdout, stderr) = decode(path.to_str().expect("utf-8 path"));
    assert!(!ok, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    let numbers: Vec<u64> = json
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|t| t["telegram"].as_u64())
        .collect();
    assert_eq!(numbers, [1, 3], "{json}");
    assert!(
        stderr.contains("telegram 2: CRC mismatch") && stderr.contains("ABCD"),
        "{stderr}"
    );
    assert!(
        stderr.contains("2 telegrams decoded, 1 dropped, 0 bytes skipped as junk"),
        "{stderr}"
    );
}

#[test]
fn a_belgian_telegram_shows_its_monthly_peaks_and_the_capacity_average() {
    let (ok, stdout, stderr) = decode(&format!(
        "{FIXTURES}/dsmr5b_landisgyr_e360_2026_history_placeholder.txt"
    ));
    assert!(ok, "{stderr}");
    let json = only(&stdout);
    let peaks = &json["monthly_peaks"];
    let months = peaks["months"].as_array().expect("months");
    assert_eq!(months.len(), 9);
    // (250801000000S)(35255255255255255S)(00.000*kW): July 2025, no time.
    assert_eq!(months[0]["month"], "2025-07");
    assert!(months[0]["peak_at"].is_null());
    // (260601000000S)(260511141500S)(02.438*kW)
    assert_eq!(months[8]["month"], "2026-05");
    assert_eq!(months[8]["peak_w"].as_f64(), Some(2438.0));
    assert_eq!(months[8]["peak_at"], "2026-05-11T12:15:00Z");
    // June 2026 with its running peak (1-0:1.6.0, 3.440 kW), July 2025 … May 2026
    // of the history: ten months, those under 2.5 kW at 2.5 kW.
    assert_eq!(peaks["rolling_average_through"], "2026-06");
    assert_eq!(peaks["rolling_average_months"].as_u64(), Some(10));
    let sum = 2500.0 + 4122.0 + 3933.0 + 4699.0 + 4556.0 + 3884.0 + 3597.0 + 3298.0 + 2500.0 + 3440.0;
    let average = peaks["rolling_average_w"].as_f64().expect("average");
    assert!((average - sum / 10.0).abs() < 1e-9, "{average}");
    assert!(!json["not_decoded"]
        .as_array()
        .expect("list")
        .iter()
        .any(|id| id == "0-0:98.1.0"));
}

/// `--key`: Tiroler Netze's published encrypted example (two M-Bus frames, as hex).
#[test]
fn an_encrypted_frame_decodes_with_its_key_and_fails_clearly_with_a_wrong_one() {
    let file = format!("{FIXTURES}/encrypted/tinetz_kaifa_mbus_two_segments.hex");
    let (ok, stdout, stderr) = decode_with(&["--key", "101112131415161718191A1B1C1D1E1F", &file]);
    assert!(ok, "{stderr}");
    let json = only(&stdout);
    assert_eq!(json["meter_time"], "2021-07-19T13:46:35Z");
    assert_eq!(reading(&json, "voltage_l1")["value"].as_f64(), Some(230.8));
    assert_eq!(reading(&json, "energy_delivered_total")["value"].as_f64(), Some(9.108));

    // The same file as raw bytes, as captured from the port.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("capture.bin");
    let text = std::fs::read_to_string(&file).unwrap();
    let digits: String = text.split_whitespace().collect();
    let bytes: Vec<u8> = (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect();
    std::fs::write(&raw, bytes).unwrap();
    let (ok, stdout, _) = decode_with(&["--key", "101112131415161718191a1b1c1d1e1f", raw.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(reading(&only(&stdout), "voltage_l1")["value"].as_f64(), Some(230.8));

    let (ok, stdout, stderr) = decode_with(&["--key", &"0".repeat(32), &file]);
    assert!(!ok);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("wrong decryption_key?"), "{stderr}");

    let (ok, _, stderr) = decode_with(&["--key", "0011", &file]);
    assert!(!ok);
    assert!(stderr.contains("32 hex digits"), "{stderr}");
    assert!(!stderr.contains("0011"), "a key is never echoed: {stderr}");
}
