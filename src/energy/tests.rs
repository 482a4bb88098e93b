//! The detector on the shapes users report. Values come from real captures:
//! the Kaifa and Iskra AM550 P1 telegrams in tests/fixtures/dsmr/ (equipment ids and
//! tariff-1 counters as sent), the Multical 403 heat energy (55.006 MWh) and the KMP
//! GetSerialNo responses (19088743, 1234567) in tests/fixtures/kamstrup/.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::cleaner::{identity_in, is_cleaned, DeviceCounters};
use super::counters::{CounterSettings, Reason};
use crate::reading::{Kind, Reading, Unit, Value};

const KAIFA_ID: &str = "4530303033303030303032313234383133";
const KAIFA_T1: f64 = 4726.494;
const ISKRA_ID: &str = "4530303334303036383130353136343136";
const ISKRA_T1: f64 = 3808.351;

fn t0() -> DateTime<Utc> {
    Utc::now() - Duration::days(1)
}

fn counter(metric: &str, unit: Unit, value: f64, at: DateTime<Utc>) -> Reading {
    Reading {
        device: Arc::from("meter"),
        device_type: "dsmr",
        metric: Arc::from(metric),
        value: Value::Number(value),
        unit,
        kind: Kind::Counter,
        timestamp: at,
    }
}

fn kwh(value: f64, at: DateTime<Utc>) -> Reading {
    counter("energy_delivered_tariff1", Unit::KiloWattHour, value, at)
}

/// Feeds `values` 10 s apart, one reading per poll, with the identity of each poll;
/// returns (raw published, lifetime published, glitches, epochs).
struct Run {
    raw: Vec<f64>,
    lifetime: Vec<f64>,
    glitches: Vec<f64>,
    epochs: Vec<(Reason, f64, DateTime<Utc>)>,
    at: Vec<DateTime<Utc>>,
}

fn run(polls: &[(Option<&str>, f64)], metric: &str, unit: Unit) -> Run {
    let settings = CounterSettings::default();
    let mut device = DeviceCounters::default();
    let mut out = Run {
        raw: vec![],
        lifetime: vec![],
        glitches: vec![],
        epochs: vec![],
        at: vec![],
    };
    let start = t0();
    for (i, (identity, value)) in polls.iter().enumerate() {
        let at = start + Duration::seconds(10 * i as i64);
        out.at.push(at);
        let cleaned = device.clean(vec![counter(metric, unit, *value, at)], *identity, &settings);
        for r in cleaned.readings {
            let v = r.value.as_f64().unwrap();
            if r.metric.ends_with("_lifetime") {
                assert_eq!(&*r.metric, format!("{metric}_lifetime"));
                out.lifetime.push(v);
            } else {
                out.raw.push(v);
            }
        }
        out.glitches
            .extend(cleaned.glitches.iter().map(|r| r.value.as_f64().unwrap()));
        out.epochs
            .extend(cleaned.epochs.iter().map(|(_, e)| (e.reason, e.offset, e.start)));
    }
    out
}

fn assert_never_drops(lifetime: &[f64]) {
    for w in lifetime.windows(2) {
        assert!(w[1] >= w[0], "lifetime dropped: {lifetime:?}");
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn a_dsmr_equipment_id_change_mid_stream_starts_a_swap_epoch_and_the_lifetime_carries_on() {
    let polls = [
        (Some(KAIFA_ID), KAIFA_T1),
        (Some(KAIFA_ID), KAIFA_T1 + 0.004),
        (Some(ISKRA_ID), ISKRA_T1),
        (Some(ISKRA_ID), ISKRA_T1 + 0.002),
    ];
    let r = run(&polls, "energy_delivered_tariff1", Unit::KiloWattHour);
    // Raw kept as sent, nothing held back: the identity decides at once.
    assert_eq!(r.raw, polls.iter().map(|p| p.1).collect::<Vec<_>>());
    assert!(r.glitches.is_empty());
    assert_eq!(r.epochs.len(), 2, "{:?}", r.epochs);
    assert_eq!(r.epochs[0].0, Reason::First);
    let (reason, offset, start) = r.epochs[1];
    assert_eq!(reason, Reason::Swap);
    assert_eq!(start, r.at[2]);
    assert!(close(offset, KAIFA_T1 + 0.004 - ISKRA_T1), "{offset}");
    assert!(close(r.lifetime[2], KAIFA_T1 + 0.004));
    assert!(close(r.lifetime[3], KAIFA_T1 + 0.006));
    assert_never_drops(&r.lifetime);
}

#[test]
fn a_multical_serial_change_to_a_new_meter_near_zero_counts_its_first_units() {
    let polls = [
        (Some("19088743"), 55_006.0),
        (Some("19088743"), 55_006.0),
        (Some("1234567"), 0.3),
        (Some("1234567"), 0.4),
    ];
    let r = run(&polls, "heat_energy", Unit::KiloWattHour);
    assert_eq!(r.epochs[1].0, Reason::Swap);
    assert!(close(r.epochs[1].1, 55_006.0));
    assert!(close(r.lifetime[2], 55_006.3));
    assert!(close(r.lifetime[3], 55_006.4));
    assert_eq!(r.raw, vec![55_006.0, 55_006.0, 0.3, 0.4]);
}

#[test]
fn a_zero_reading_between_two_normal_ones_is_a_glitch_never_in_the_lifetime_series() {
    let polls = [(None, KAIFA_T1), (None, 0.0), (None, KAIFA_T1 + 0.001)];
    let r = run(&polls, "energy_delivered_tariff1", Unit::KiloWattHour);
    assert_eq!(r.glitches, vec![0.0]);
    assert_eq!(
        r.raw,
        vec![KAIFA_T1, 0.0, KAIFA_T1 + 0.001],
        "every raw reading is kept"
    );
    assert_eq!(
        r.lifetime,
        vec![KAIFA_T1, KAIFA_T1 + 0.001],
        "the first epoch has no offset"
    );
    assert_eq!(r.epochs.len(), 1);
}

#[test]
fn a_spike_far_up_then_back_is_a_glitch_too() {
    let polls = [
        (None, ISKRA_T1),
        (None, 99_999.999),
        (None, 99_999.999),
        (None, ISKRA_T1),
    ];
    let r = run(&polls, "energy_delivered_tariff1", Unit::KiloWattHour);
    assert_eq!(r.glitches, vec![99_999.999, 99_999.999]);
    assert_eq!(r.lifetime, vec![ISKRA_T1, ISKRA_T1]);
}

#[test]
fn a_counter_that_resets_to_zero_and_climbs_is_held_then_continues_the_lifetime() {
    let polls = [
        (None, KAIFA_T1),
        (None, 0.0),
        (None, 0.001),
        (None, 0.002),
        (None, 0.010),
    ];
    let r = run(&polls, "energy_delivered_tariff1", Unit::KiloWattHour);
    // Lifetime held until three agree, then all released, none lost.
    assert_eq!(r.raw, vec![KAIFA_T1, 0.0, 0.001, 0.002, 0.010]);
    assert!(r.glitches.is_empty());
    let (reason, offset, start) = r.epochs[1];
    assert_eq!(
        reason,
        Reason::Swap,
        "restarting near zero is a new meter (docs/counters.md)"
    );
    assert_eq!(start, r.at[1]);
    assert!(close(offset, KAIFA_T1));
    assert!(close(r.lifetime[4], KAIFA_T1 + 0.010));
    assert_never_drops(&r.lifetime);
}

#[test]
fn a_counter_that_drops_and_stays_down_is_a_reset() {
    let polls = [(None, KAIFA_T1), (None, 3000.0), (None, 3000.001), (None, 3000.002)];
    let r = run(&polls, "energy_delivered_tariff1", Unit::KiloWattHour);
    assert_eq!(r.epochs[1].0, Reason::Reset);
    assert!(close(r.epochs[1].1, KAIFA_T1 - 3000.0));
    assert!(close(r.lifetime[3], KAIFA_T1 + 0.002));
}

#[test]
fn a_meter_replaced_by_one_with_a_higher_reading_never_spikes_the_lifetime() {
    // With the identity (DSMR): decided at once.
    let polls = [
        (Some(ISKRA_ID), ISKRA_T1),
        (Some(KAIFA_ID), KAIFA_T1),
        (Some(KAIFA_ID), KAIFA_T1 + 0.001),
    ];
    let r = run(&polls, "energy_delivered_tariff1", Unit::KiloWattHour);
    assert_eq!(r.epochs[1].0, Reason::Swap);
    assert!(close(r.lifetime[1], ISKRA_T1));
    assert!(close(r.lifetime[2], ISKRA_T1 + 0.001));
    // Without one (a meter that sends no identity): three agreeing readings decide.
    let polls = [
        (None, ISKRA_T1),
        (None, KAIFA_T1),
        (None, KAIFA_T1),
        (None, KAIFA_T1 + 0.001),
    ];
    let r = run(&polls, "energy_delivered_tariff1", Unit::KiloWattHour);
    assert_eq!(r.epochs[1].0, Reason::Swap);
    assert!(r.glitches.is_empty());
    assert!(close(r.lifetime[3], ISKRA_T1 + 0.001));
    assert_never_drops(&r.lifetime);
}

#[test]
fn scattered_readings_are_never_held_beyond_the_bound() {
    let settings = CounterSettings::default();
    let mut device = DeviceCounters::default();
    let start = t0();
    device.clean(vec![kwh(KAIFA_T1, start)], None, &settings);
    let mut glitches = 0;
    for (i, v) in [0.0, 90_000.0, 12.0, 70_000.0, 1.0, 50_000.0].into_iter().enumerate() {
        let cleaned = device.clean(
            vec![kwh(v, start + Duration::seconds(10 * (i as i64 + 1)))],
            None,
            &settings,
        );
        assert_eq!(cleaned.readings.len(), 1, "{v}: the raw reading only");
        glitches += cleaned.glitches.len();
        assert!(device.held() <= settings.glitch_hold);
    }
    assert_eq!(glitches, 6 - device.held());
}

#[test]
fn a_small_drop_within_the_tolerance_holds_the_lifetime() {
    let polls = [(None, KAIFA_T1), (None, KAIFA_T1 - 0.001), (None, KAIFA_T1 + 0.002)];
    let r = run(&polls, "energy_delivered_tariff1", Unit::KiloWattHour);
    assert_eq!(r.raw.len(), 3);
    assert_eq!(r.lifetime, vec![KAIFA_T1, KAIFA_T1, KAIFA_T1 + 0.002]);
}

#[test]
fn a_rise_is_judged_against_the_time_between_readings() {
    let settings = CounterSettings::default();
    let mut device = DeviceCounters::default();
    let start = t0();
    device.clean(vec![kwh(1000.0, start)], None, &settings);
    // 150 kWh after a day down is plausible; 150 kWh ten seconds later is not.
    let later = device.clean(vec![kwh(1150.0, start + Duration::hours(24))], None, &settings);
    assert_eq!(later.readings.len(), 2);
    let soon = device.clean(
        vec![kwh(1300.0, start + Duration::hours(24) + Duration::seconds(10))],
        None,
        &settings,
    );
    assert!(soon.readings.iter().all(|r| !r.metric.ends_with("_lifetime")));
}

#[test]
fn only_energy_gas_water_and_heat_counters_are_cleaned() {
    let at = t0();
    assert!(is_cleaned(&kwh(1.0, at)));
    assert!(is_cleaned(&counter("gas_delivered", Unit::CubicMetre, 1.0, at)));
    assert!(!is_cleaned(&counter("power_failures", Unit::None, 1.0, at)));
    assert!(!is_cleaned(&counter(
        "energy_delivered_tariff1_lifetime",
        Unit::KiloWattHour,
        1.0,
        at
    )));
    let mut gauge = kwh(1.0, at);
    gauge.kind = Kind::Gauge;
    assert!(!is_cleaned(&gauge));
}

#[test]
fn a_restored_offset_applies_to_the_next_readings() {
    let settings = CounterSettings::default();
    let mut device = DeviceCounters::restore(
        Some(ISKRA_ID.into()),
        [(Arc::from("energy_delivered_tariff1"), 918.143, None)],
    );
    let cleaned = device.clean(vec![kwh(ISKRA_T1, t0())], Some(ISKRA_ID), &settings);
    assert!(close(cleaned.readings[1].value.as_f64().unwrap(), ISKRA_T1 + 918.143));
}

#[test]
fn out_of_range_settings_name_their_key() {
    let mut s = CounterSettings::default();
    assert_eq!(s.out_of_range(), None);
    s.glitch_hold = 0;
    assert_eq!(s.out_of_range().map(|e| e.0), Some("counters.glitch_hold"));
    s = CounterSettings {
        max_rise_per_hour: f64::NAN,
        ..CounterSettings::default()
    };
    assert_eq!(s.out_of_range().map(|e| e.0), Some("counters.max_rise_per_hour"));
}

#[test]
fn a_modbus_serial_point_is_the_meter_identity() {
    let at = t0();
    let mut serial = kwh(0.0, at);
    serial.metric = Arc::from("serial");
    serial.kind = Kind::Gauge;
    serial.unit = Unit::None;
    serial.value = Value::Text(Arc::from("SDM630-0012345"));
    assert_eq!(
        identity_in(&[kwh(1.0, at), serial.clone()]).as_deref(),
        Some("SDM630-0012345")
    );
    assert_eq!(identity_in(&[kwh(1.0, at)]), None);
    serial.value = Value::Text(Arc::from("  "));
    assert_eq!(identity_in(&[serial]), None, "a blank register is no identity");
}
