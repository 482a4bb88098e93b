//! Helpers shared by the HomeWizard tests (API v1 and v2): the recorded fixtures, a
//! fixed clock, building the monitor from YAML, and finding readings by metric.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use mesura::config::parse_device;
use mesura::monitors::{Monitor, MonitorError};
use mesura::reading::{Reading, Value};

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(Path::new("tests/fixtures/homewizard").join(name)).expect("fixture")
}

pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("time").to_utc()
}

/// The time the monitors read at (readings without their own timestamp get it).
pub fn now() -> DateTime<Utc> {
    utc("2026-11-24T12:00:00Z")
}

/// For devices reading the recorded answers: their meter times (2021–2024) are
/// years from [`now`], and these tests check how those times are read, so the
/// device accepts them (any date in the next century).
pub const RECORDED_TIMES: &str = "max_clock_skew: 100y\n";

#[derive(Debug)]
pub struct FixedClock;
impl mesura::host::clock::Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        now()
    }
}

/// The monitor a device file `config.d/hw.yaml` holding `yaml` makes.
pub fn monitor(yaml: &str) -> Result<Box<dyn Monitor>, MonitorError> {
    let config = parse_device(Path::new("config.d/hw.yaml"), yaml, &[]).expect("config");
    config.build_monitor(Arc::new(FixedClock), std::env::temp_dir())
}

#[track_caller]
pub fn reading<'a>(readings: &'a [Reading], metric: &str) -> &'a Reading {
    readings
        .iter()
        .find(|r| &*r.metric == metric)
        .unwrap_or_else(|| panic!("{metric} missing"))
}

#[track_caller]
pub fn value(readings: &[Reading], metric: &str) -> f64 {
    match reading(readings, metric).value {
        Value::Number(v) => v,
        Value::Text(ref t) => panic!("{metric} is text {t}"),
    }
}

/// The metric names, sorted.
pub fn names(readings: &[Reading]) -> Vec<&str> {
    let mut n: Vec<&str> = readings.iter().map(|r| &*r.metric).collect();
    n.sort_unstable();
    n
}
