//! What a HomeWizard P1 answer means: the JSON fields of API v1 (`/api/v1/data`)
//! and v2 (`/api/measurement`) mapped to the DSMR metric names, units and kinds, one
//! table per API version and one [`readings`] for both.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};

use crate::monitors::device_time::{DeviceClock, DeviceTime, Stamps};
use crate::monitors::p1_metrics::METRICS as DSMR_METRICS;
use crate::monitors::MonitorError;
use crate::protocols::dsmr::parse_timestamp;
use crate::reading::{DeviceId, MetricSpec, Reading, Value};

/// `/api/v1/data` key → DSMR metric, for values stored as sent.
pub(super) const DIRECT: &[(&str, &str)] = &[
    ("total_power_import_kwh", "energy_delivered_total"),
    ("total_power_import_t1_kwh", "energy_delivered_tariff1"),
    ("total_power_import_t2_kwh", "energy_delivered_tariff2"),
    ("total_power_import_t3_kwh", "energy_delivered_tariff3"),
    ("total_power_import_t4_kwh", "energy_delivered_tariff4"),
    ("total_power_export_kwh", "energy_returned_total"),
    ("total_power_export_t1_kwh", "energy_returned_tariff1"),
    ("total_power_export_t2_kwh", "energy_returned_tariff2"),
    ("total_power_export_t3_kwh", "energy_returned_tariff3"),
    ("total_power_export_t4_kwh", "energy_returned_tariff4"),
    ("active_voltage_l1_v", "voltage_l1"),
    ("active_voltage_l2_v", "voltage_l2"),
    ("active_voltage_l3_v", "voltage_l3"),
    ("active_frequency_hz", "frequency"),
    ("active_tariff", "tariff"),
    ("any_power_fail_count", "power_failures"),
    ("long_power_fail_count", "long_power_failures"),
    ("voltage_sag_l1_count", "voltage_sags_l1"),
    ("voltage_sag_l2_count", "voltage_sags_l2"),
    ("voltage_sag_l3_count", "voltage_sags_l3"),
    ("voltage_swell_l1_count", "voltage_swells_l1"),
    ("voltage_swell_l2_count", "voltage_swells_l2"),
    ("voltage_swell_l3_count", "voltage_swells_l3"),
    // The running quarter-hour average is what a Belgian meter sends as 1-0:1.4.0.
    ("active_power_average_w", "peak_demand_current_quarter"),
];

/// Signed powers, split like a DSMR meter reports them: drawn ≥ 0, returned ≥ 0.
pub(super) const SIGNED_POWER: &[(&str, &str, &str)] = &[
    ("active_power_w", "power_delivered", "power_returned"),
    ("active_power_l1_w", "power_delivered_l1", "power_returned_l1"),
    ("active_power_l2_w", "power_delivered_l2", "power_returned_l2"),
    ("active_power_l3_w", "power_delivered_l3", "power_returned_l3"),
];

/// HomeWizard signs phase currents by direction; DSMR meters do not. Stored unsigned
/// so `current_l1` means the same for both device types.
pub(super) const CURRENT: &[(&str, &str)] = &[
    ("active_current_l1_a", "current_l1"),
    ("active_current_l2_a", "current_l2"),
    ("active_current_l3_a", "current_l3"),
];

/// `/api/measurement` (API v2) key → DSMR metric: the v1 quantities under new names.
pub(super) const DIRECT_V2: &[(&str, &str)] = &[
    ("energy_import_kwh", "energy_delivered_total"),
    ("energy_import_t1_kwh", "energy_delivered_tariff1"),
    ("energy_import_t2_kwh", "energy_delivered_tariff2"),
    ("energy_import_t3_kwh", "energy_delivered_tariff3"),
    ("energy_import_t4_kwh", "energy_delivered_tariff4"),
    ("energy_export_kwh", "energy_returned_total"),
    ("energy_export_t1_kwh", "energy_returned_tariff1"),
    ("energy_export_t2_kwh", "energy_returned_tariff2"),
    ("energy_export_t3_kwh", "energy_returned_tariff3"),
    ("energy_export_t4_kwh", "energy_returned_tariff4"),
    ("voltage_l1_v", "voltage_l1"),
    ("voltage_l2_v", "voltage_l2"),
    ("voltage_l3_v", "voltage_l3"),
    ("frequency_hz", "frequency"),
    ("tariff", "tariff"),
    ("any_power_fail_count", "power_failures"),
    ("long_power_fail_count", "long_power_failures"),
    ("voltage_sag_l1_count", "voltage_sags_l1"),
    ("voltage_sag_l2_count", "voltage_sags_l2"),
    ("voltage_sag_l3_count", "voltage_sags_l3"),
    ("voltage_swell_l1_count", "voltage_swells_l1"),
    ("voltage_swell_l2_count", "voltage_swells_l2"),
    ("voltage_swell_l3_count", "voltage_swells_l3"),
    ("average_power_15m_w", "peak_demand_current_quarter"),
];

pub(super) const SIGNED_POWER_V2: &[(&str, &str, &str)] = &[
    ("power_w", "power_delivered", "power_returned"),
    ("power_l1_w", "power_delivered_l1", "power_returned_l1"),
    ("power_l2_w", "power_delivered_l2", "power_returned_l2"),
    ("power_l3_w", "power_delivered_l3", "power_returned_l3"),
];

pub(super) const CURRENT_V2: &[(&str, &str)] = &[
    ("current_l1_a", "current_l1"),
    ("current_l2_a", "current_l2"),
    ("current_l3_a", "current_l3"),
];

/// Where one API version keeps each quantity; [`readings`] is the same for both.
#[derive(Debug)]
pub struct Fields {
    /// The path polled, for messages.
    pub path: &'static str,
    direct: &'static [(&'static str, &'static str)],
    signed_power: &'static [(&'static str, &'static str, &'static str)],
    current: &'static [(&'static str, &'static str)],
    /// (value, timestamp) keys of the month's peak, first found wins.
    peak: &'static [(&'static str, &'static str)],
    /// (value, timestamp, id) keys of a gas meter reported outside `external[]`.
    gas: Option<(&'static str, &'static str, &'static str)>,
}

pub const V1: Fields = Fields {
    path: "/api/v1/data",
    direct: DIRECT,
    signed_power: SIGNED_POWER,
    current: CURRENT,
    // "montly" (sic) is what v1 firmware sends; the right spelling is accepted too.
    peak: &[
        ("montly_power_peak_w", "montly_power_peak_timestamp"),
        ("monthly_power_peak_w", "monthly_power_peak_timestamp"),
    ],
    gas: Some(("total_gas_m3", "gas_timestamp", "gas_unique_id")),
};

pub const V2: Fields = Fields {
    path: "/api/measurement",
    direct: DIRECT_V2,
    signed_power: SIGNED_POWER_V2,
    current: CURRENT_V2,
    peak: &[("monthly_power_peak_w", "monthly_power_peak_timestamp")],
    // v2 reports every M-Bus meter, gas included, only in `external[]`.
    gas: None,
};

pub(super) const OTHER_METRICS: &[&str] = &[
    "gas_delivered",
    "water_delivered",
    "heat_delivered",
    "peak_demand_month",
];

pub(super) fn spec(name: &str) -> Option<&'static MetricSpec> {
    DSMR_METRICS.iter().find(|m| m.name == name)
}

pub fn all_metrics() -> Vec<MetricSpec> {
    let names = DIRECT
        .iter()
        .map(|(_, m)| *m)
        .chain(SIGNED_POWER.iter().flat_map(|(_, d, r)| [*d, *r]))
        .chain(CURRENT.iter().map(|(_, m)| *m))
        .chain(OTHER_METRICS.iter().copied());
    names.filter_map(spec).copied().collect()
}

/// HomeWizard timestamps are `YYMMDDhhmmss` in the meter's local time (a JSON number,
/// so a leading zero is lost), the same as a DSMR 2.2 capture time: parsed the same
/// way (Central European time, EU summer-time rule) into UTC.
pub(super) fn local_timestamp(value: Option<&Json>) -> Option<DateTime<Utc>> {
    let digits = match value? {
        Json::Number(n) => format!("{:012}", n.as_u64()?),
        // API v2: `2024-06-28T14:00:00`, the same local time written out.
        Json::String(s) if s.contains('T') => {
            let d: String = s.chars().filter(char::is_ascii_digit).collect();
            if d.len() != 14 {
                return None;
            }
            d[2..].to_owned()
        }
        Json::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    parse_timestamp(&digits)
}

/// A timestamp field as the meter sent it: absent (or `null`), a date, or something
/// that is no date.
pub(super) fn device_time(value: Option<&Json>) -> DeviceTime {
    match value {
        None | Some(Json::Null) => DeviceTime::Absent,
        Some(v) => local_timestamp(Some(v)).map_or_else(|| DeviceTime::Unreadable(v.to_string()), DeviceTime::At),
    }
}

pub(super) fn reading(device: &DeviceId, name: &str, spec: &MetricSpec, value: f64, at: DateTime<Utc>) -> Reading {
    Reading {
        device: device.clone(),
        device_type: "",
        metric: Arc::from(name),
        value: Value::Number(value),
        unit: spec.unit,
        kind: spec.kind,
        timestamp: at,
    }
}

/// What an `external[]` meter type measures: its base metric and its unit.
pub(super) fn external_kind(kind: &str) -> Option<(&'static str, &'static str)> {
    match kind {
        "gas_meter" => Some(("gas_delivered", "m3")),
        "water_meter" | "warm_water_meter" => Some(("water_delivered", "m3")),
        "heat_meter" | "inlet_heat_meter" => Some(("heat_delivered", "GJ")),
        _ => None,
    }
}

/// The readings in one `/api/v1/data` (`V1`) or `/api/measurement` (`V2`) answer,
/// received at `now`. Missing, `null` and malformed fields are absent; anything but
/// a JSON object is invalid data. The meter's own times (gas capture, monthly
/// peak) stamp their values when `clock` accepts them, else `now` does.
pub fn readings(
    fields: &Fields,
    device: &DeviceId,
    data: &Json,
    now: DateTime<Utc>,
    clock: &mut DeviceClock,
) -> Result<Vec<Reading>, MonitorError> {
    let obj = data
        .as_object()
        .ok_or_else(|| MonitorError::invalid_data(format!("`{}` did not answer a JSON object", fields.path)))?;
    let num = |key: &str| obj.get(key).and_then(Json::as_f64).filter(|v| v.is_finite());
    let mut out = Vec::new();
    let mut push = |name: &str, value: f64, at: DateTime<Utc>| {
        // `gas_delivered_2` is a second gas meter: the spec of `gas_delivered`.
        let base = || spec(name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '_'));
        if let Some(spec) = spec(name).or_else(base) {
            out.push(reading(device, name, spec, value, at));
        }
    };
    for (key, metric) in fields.direct {
        if let Some(v) = num(key) {
            push(metric, v, now);
        }
    }
    for (key, delivered, returned) in fields.signed_power {
        if let Some(v) = num(key) {
            push(delivered, v.max(0.0), now);
            push(returned, (-v).max(0.0), now);
        }
    }
    for (key, metric) in fields.current {
        if let Some(v) = num(key) {
            push(metric, v.abs(), now);
        }
    }
    if let Some((v, ts)) = fields.peak.iter().find_map(|(value, ts)| num(value).map(|v| (v, *ts))) {
        let at = clock.stamp(&device_time(obj.get(ts)), Stamps::MonthlyPeak, ts, now);
        push("peak_demand_month", v, at);
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut gas_id = None;
    if let Some((value, ts, id)) = fields.gas {
        gas_id = obj.get(id).and_then(Json::as_str);
        if let Some(v) = num(value) {
            counts.insert("gas_delivered", 1);
            let at = clock.stamp(&device_time(obj.get(ts)), Stamps::Capture, ts, now);
            push("gas_delivered", v, at);
        }
    }
    for ext in obj.get("external").and_then(Json::as_array).into_iter().flatten() {
        if let Some((name, at)) = external(ext, gas_id, &mut counts) {
            let (base, value) = name;
            let at = clock.stamp(&at, Stamps::Capture, "external[].timestamp", now);
            push(&base, value, at);
        }
    }
    Ok(out)
}

type External = ((String, f64), DeviceTime);

/// One `external[]` entry (gas, water, heat meters on the P1 meter's M-Bus): named
/// like DSMR M-Bus channels, the first of a kind plain and the next `_2`, `_3` ….
/// Entries without id, type, value or a unit that fits the kind are skipped; the
/// gas meter already reported as `total_gas_m3` is not counted twice.
pub(super) fn external<'a>(
    ext: &'a Json,
    gas_id: Option<&str>,
    counts: &mut BTreeMap<&'a str, usize>,
) -> Option<External> {
    let e: &Map<String, Json> = ext.as_object()?;
    let id = e.get("unique_id")?.as_str()?;
    let (base, unit) = external_kind(e.get("type")?.as_str()?)?;
    let value = e.get("value")?.as_f64().filter(|v| v.is_finite())?;
    if !e.get("unit")?.as_str()?.eq_ignore_ascii_case(unit) {
        return None;
    }
    if base == "gas_delivered" && counts.contains_key(base) && gas_id == Some(id) {
        return None;
    }
    let n = counts.entry(base).or_insert(0);
    *n += 1;
    let name = if *n == 1 {
        base.to_owned()
    } else {
        format!("{base}_{n}")
    };
    Some(((name, value), device_time(e.get("timestamp"))))
}
