use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::*;
use crate::host::clock::Clock;

#[test]
fn the_increase_is_interpolated_at_both_ends() {
    // Samples every 10 minutes from 3,000 s before the hour; the counter climbs 1 a minute.
    let samples: Vec<Sample> = (0..20).map(|i| (-3000 + i * 600, 100.0 + i as f64 * 10.0)).collect();
    // [0, 3600): the counter at 0 s is 150 (interpolated), at 3600 s 210.
    let got = increase(&samples, 0, 3600, 900).unwrap();
    assert!((got - 60.0).abs() < 1e-9, "{got}");
}

#[test]
fn a_gap_or_a_drop_in_the_period_gives_nothing() {
    let mut samples: Vec<Sample> = (0..13).map(|i| (i * 300, i as f64)).collect();
    assert!(increase(&samples, 0, 3600, 900).is_some());
    // 20 minutes without a reading inside the hour.
    samples.retain(|s| !(900..=1800).contains(&s.0));
    assert_eq!(increase(&samples, 0, 3600, 900), None);
    // A counter reset in the hour.
    let mut reset: Vec<Sample> = (0..13).map(|i| (i * 300, i as f64)).collect();
    reset[6].1 = 0.0;
    assert_eq!(increase(&reset, 0, 3600, 900), None);
    // Nothing stored after the hour closed (yet): no figure.
    let early: Vec<Sample> = (0..12).map(|i| (i * 300, i as f64)).collect();
    assert_eq!(increase(&early, 0, 3600, 900), None);
    // Nothing before the hour began.
    let late: Vec<Sample> = (1..13).map(|i| (i * 300, i as f64)).collect();
    assert_eq!(increase(&late, 0, 3600, 900), None);
}

#[test]
fn energy_units_are_turned_into_kwh() {
    assert_eq!(to_kwh("kWh"), Some(1.0));
    assert!((to_kwh("GJ").unwrap() - 277.777_777_8).abs() < 1e-6);
    assert_eq!(to_kwh("m³"), None);
}

#[derive(Debug)]
struct FixedClock(DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// A heat meter in GJ and a heat pump's sub-meter in kWh, both read every minute
/// for the three hours before `hour`; the heat meter misses 20 minutes in the
/// second hour. The sub-meter also has a lifetime column that must win.
fn database(dir: &std::path::Path, hour: i64) {
    let conn = Connection::open(dir.join("mesura.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE metrics (device TEXT, metric TEXT, unit TEXT, kind TEXT, PRIMARY KEY (device, metric));
         INSERT INTO metrics VALUES ('heat', 'heat_energy', 'GJ', 'counter'), ('hp', 'energy_delivered', 'kWh', 'counter');
         CREATE TABLE heat (ts INTEGER PRIMARY KEY, heat_energy REAL);
         CREATE TABLE hp (ts INTEGER PRIMARY KEY, energy_delivered REAL, energy_delivered_lifetime REAL);",
    )
    .unwrap();
    let start = hour - 3 * 3600 - 600;
    for i in 0..(3 * 60 + 20) {
        let ts = start + i * 60;
        let in_gap = ts >= hour - 2 * 3600 + 600 && ts < hour - 2 * 3600 + 1800;
        if !in_gap {
            // 0.036 GJ an hour = 10 kWh an hour.
            let gj = 12.0 + (ts - start) as f64 * 0.036 / 3600.0;
            conn.execute("INSERT INTO heat VALUES (?1, ?2)", (ts, gj)).unwrap();
        }
        // 2.5 kWh an hour; the raw counter was swapped (restarts at 0 in the
        // first hour), the lifetime column is continuous.
        let lifetime = 5000.0 + (ts - start) as f64 * 2.5 / 3600.0;
        let raw = if ts < hour - 2 * 3600 - 1200 {
            lifetime
        } else {
            lifetime - 5000.0
        };
        conn.execute("INSERT INTO hp VALUES (?1, ?2, ?3)", (ts, raw, lifetime))
            .unwrap();
    }
}

fn monitor(dir: &std::path::Path, now: DateTime<Utc>) -> DerivedMonitor {
    let config: DerivedConfig = serde_yaml_ng::from_str(
        "numerator: {device: heat, metric: heat_energy}\ndenominator: {device: hp, metric: energy_delivered}\nmax_gap: 5m\nbackfill: 3h\n",
    )
    .unwrap();
    let ctx = MonitorContext {
        id: Arc::from("cop"),
        clock: Arc::new(FixedClock(now)),
        data_dir: dir.to_path_buf(),
        poll_interval: std::time::Duration::from_secs(1),
        file: std::path::PathBuf::new(),
    };
    DerivedMonitor::new(config, ctx)
}

#[tokio::test]
async fn each_closed_hour_without_a_gap_gives_its_cop_once() {
    let dir = tempfile::tempdir().unwrap();
    // The hour just begun, derived from now: the test never depends on the date.
    let now = Utc::now();
    let hour = now.timestamp().div_euclid(3600) * 3600;
    database(dir.path(), hour);
    // Just after the hour closed plus max_gap.
    let at = DateTime::from_timestamp(hour + 600, 0).unwrap();
    let mut m = monitor(dir.path(), at);
    let readings = m.read().await.unwrap();
    let ratios: Vec<(i64, f64)> = readings
        .iter()
        .filter(|r| &*r.metric == "ratio")
        .map(|r| (r.timestamp.timestamp(), r.value.as_f64().unwrap()))
        .collect();
    // Three hours back: the first (the sub-meter swap, smoothed by its lifetime
    // column) and the third give 10 / 2.5 = 4; the second has the heat meter's gap.
    assert_eq!(ratios.len(), 2, "{ratios:?}");
    assert_eq!(ratios[0].0, hour - 3 * 3600);
    assert_eq!(ratios[1].0, hour - 3600);
    for (_, cop) in &ratios {
        assert!((cop - 4.0).abs() < 1e-6, "{cop}");
    }
    let heat: Vec<f64> = readings
        .iter()
        .filter(|r| &*r.metric == "numerator_delta")
        .map(|r| r.value.as_f64().unwrap())
        .collect();
    assert!(heat.iter().all(|kwh| (kwh - 10.0).abs() < 1e-6), "{heat:?}");
    // The next poll has nothing new to say.
    assert!(m.read().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_missing_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = monitor(dir.path(), Utc::now());
    let e = m.read().await.unwrap_err();
    assert!(e.to_string().contains("sqlite backend"), "{e}");
}
