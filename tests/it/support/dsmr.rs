//! Helpers of the DSMR tests: the recorded telegrams, checks on decoded values, a
//! seeded PRNG and telegrams built for a given time.

use chrono::{DateTime, TimeZone, Utc};
use mesura::protocols::dsmr::{decode, Telegram};
use std::path::PathBuf;

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dsmr")
}

pub fn load(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub fn load_stream(name: &str) -> Vec<u8> {
    load(&format!("streams/{name}"))
}

pub fn telegram(name: &str) -> Telegram {
    let t = decode(&load(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(t.malformed.is_empty(), "{name}: malformed lines {:?}", t.malformed);
    t
}

pub fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
}

/// Asserts `metric` is present with `expected` (|diff| <= 1e-9 * max(1, |expected|)) and `unit`.
#[track_caller]
pub fn num(t: &Telegram, metric: &str, expected: f64, unit: &str) {
    let v = t
        .get(metric)
        .unwrap_or_else(|| panic!("{metric} missing in {}", t.header));
    let got = v.value.as_f64().unwrap_or_else(|| panic!("{metric} not numeric"));
    let tol = 1e-9 * expected.abs().max(1.0);
    assert!(
        (got - expected).abs() <= tol,
        "{metric}: got {got}, expected {expected}"
    );
    assert_eq!(v.unit, unit, "{metric} unit");
}

/// Like [`num`] and also checks the value's own timestamp.
#[track_caller]
pub fn num_at(t: &Telegram, metric: &str, expected: f64, unit: &str, ts: DateTime<Utc>) {
    num(t, metric, expected, unit);
    assert_eq!(t.get(metric).and_then(|v| v.timestamp), Some(ts), "{metric} ts");
}

#[track_caller]
pub fn absent(t: &Telegram, metric: &str) {
    assert!(t.get(metric).is_none(), "{metric} unexpectedly present");
}

/// Minimal deterministic PRNG (xorshift64*) for chunking/mutation tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The real DSMR 5 fixture (`dsmr50_iskra_am550_real.txt`) with its meter time set to
/// `at` (written as winter time, UTC+1) and its tariff-1 counter to `kwh`, CRC
/// recomputed: a stream of distinct, valid telegrams for the device tests.
pub fn telegram_at(at: DateTime<Utc>, kwh: f64) -> Vec<u8> {
    let text = String::from_utf8(load("dsmr50_iskra_am550_real.txt")).expect("ASCII fixture");
    let local = at + chrono::TimeDelta::hours(1);
    let text = text
        .replace(
            "0-0:1.0.0(181106140429W)",
            &format!("0-0:1.0.0({}W)", local.format("%y%m%d%H%M%S")),
        )
        .replace("1-0:1.8.1(003808.351*kWh)", &format!("1-0:1.8.1({kwh:010.3}*kWh)"));
    let bang = text.find('!').expect("terminator");
    let mut out = text.as_bytes()[..=bang].to_vec();
    let crc = mesura::protocols::dsmr::crc16_arc(&out);
    out.extend_from_slice(format!("{crc:04X}\r\n").as_bytes());
    out
}

/// The same with a CRC that does not match.
pub fn telegram_bad_crc(at: DateTime<Utc>, kwh: f64) -> Vec<u8> {
    let mut t = telegram_at(at, kwh);
    let n = t.len();
    // The last CRC digit (before CR LF), changed to another hex digit.
    t[n - 3] = if t[n - 3] == b'0' { b'1' } else { b'0' };
    t
}
