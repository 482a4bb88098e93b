//! Decoded DSMR telegrams → [`Reading`]s, and the checks a meter's values must pass
//! over time (a swapped meter, a counter that went backwards).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::protocols::dsmr::{DsmrNumberOrText, DsmrValue, Telegram};
use crate::reading::{DeviceId, Kind, MetricSpec, Reading, Unit, Value};

/// The codec's canonical unit strings → mesura's units. The codec already converted
/// (Wh → kWh, kW → W, MJ → GJ …), so this is a renaming, not a conversion.
pub fn unit_of(codec_unit: &str) -> Unit {
    match codec_unit {
        "kWh" => Unit::KiloWattHour,
        "kvarh" => Unit::KiloVarHour,
        "W" => Unit::Watt,
        "var" => Unit::Var,
        "VA" => Unit::VoltAmpere,
        "V" => Unit::Volt,
        "A" => Unit::Ampere,
        "Hz" => Unit::Hertz,
        "m3" => Unit::CubicMetre,
        "GJ" => Unit::GigaJoule,
        _ => Unit::None,
    }
}

/// When a value was measured: its own capture time (M-Bus, monthly peak), else the
/// meter's clock (`0-0:1.0.0`), else when the telegram arrived (DSMR 2.2/3.0 meters
/// send no time). The design keeps the device's own time wherever it sends one.
pub fn timestamp_of(value: &DsmrValue, telegram: &Telegram, received: DateTime<Utc>) -> DateTime<Utc> {
    value.timestamp.or(telegram.meter_time).unwrap_or(received)
}

/// The readings of one telegram.
pub fn readings(device: &DeviceId, telegram: &Telegram, received: DateTime<Utc>) -> Vec<Reading> {
    telegram
        .values
        .iter()
        .map(|v| Reading {
            device: device.clone(),
            device_type: "",
            metric: Arc::from(&*v.metric),
            value: match &v.value {
                DsmrNumberOrText::Number(n) => Value::Number(*n),
                DsmrNumberOrText::Text(t) => Value::Text(Arc::from(t.as_str())),
            },
            unit: unit_of(v.unit),
            kind: if v.counter { Kind::Counter } else { Kind::Gauge },
            timestamp: timestamp_of(v, telegram, received),
        })
        .collect()
}

/// What a meter reported last, to notice a meter swap or a reset. Both are the most
/// common cause of broken energy statistics, so they are logged with old and new
/// values rather than silently stored.
#[derive(Debug, Default)]
pub struct Watch {
    equipment_id: Option<String>,
    counters: HashMap<String, f64>,
}

/// Something worth a warning.
#[derive(Debug, Clone, PartialEq)]
pub enum Anomaly {
    EquipmentChanged { old: String, new: String },
    CounterBackwards { metric: String, old: f64, new: f64 },
}

impl Watch {
    /// Compares `telegram` with what came before and remembers it.
    pub fn observe(&mut self, telegram: &Telegram) -> Vec<Anomaly> {
        let mut found = Vec::new();
        if let Some(new) = &telegram.equipment_id {
            match self.equipment_id.replace(new.clone()) {
                Some(old) if old != *new => found.push(Anomaly::EquipmentChanged { old, new: new.clone() }),
                _ => {}
            }
        }
        for v in telegram.values.iter().filter(|v| v.counter) {
            let Some(new) = v.value.as_f64() else { continue };
            if let Some(old) = self.counters.insert(v.metric.to_string(), new) {
                if new < old {
                    found.push(Anomaly::CounterBackwards {
                        metric: v.metric.to_string(),
                        old,
                        new,
                    });
                }
            }
        }
        found
    }
}

/// Every metric a DSMR meter can report (M-Bus devices beyond the first of a kind
/// add `_2`, `_3` … to the name). The table is the codec's, see docs/metrics.md.
pub const METRICS: &[MetricSpec] = &[
    MetricSpec::counter(
        "energy_delivered_total",
        Unit::KiloWattHour,
        "energy drawn, all tariffs (1.8.0)",
    ),
    MetricSpec::counter(
        "energy_delivered_tariff1",
        Unit::KiloWattHour,
        "energy drawn, tariff 1 (1.8.1)",
    ),
    MetricSpec::counter(
        "energy_delivered_tariff2",
        Unit::KiloWattHour,
        "energy drawn, tariff 2 (1.8.2)",
    ),
    MetricSpec::counter(
        "energy_delivered_tariff3",
        Unit::KiloWattHour,
        "energy drawn, tariff 3 (1.8.3)",
    ),
    MetricSpec::counter(
        "energy_delivered_tariff4",
        Unit::KiloWattHour,
        "energy drawn, tariff 4 (1.8.4)",
    ),
    MetricSpec::counter(
        "energy_returned_total",
        Unit::KiloWattHour,
        "energy returned, all tariffs (2.8.0)",
    ),
    MetricSpec::counter(
        "energy_returned_tariff1",
        Unit::KiloWattHour,
        "energy returned, tariff 1 (2.8.1)",
    ),
    MetricSpec::counter(
        "energy_returned_tariff2",
        Unit::KiloWattHour,
        "energy returned, tariff 2 (2.8.2)",
    ),
    MetricSpec::counter(
        "energy_returned_tariff3",
        Unit::KiloWattHour,
        "energy returned, tariff 3 (2.8.3)",
    ),
    MetricSpec::counter(
        "energy_returned_tariff4",
        Unit::KiloWattHour,
        "energy returned, tariff 4 (2.8.4)",
    ),
    MetricSpec::counter(
        "reactive_energy_delivered_total",
        Unit::KiloVarHour,
        "reactive energy, import (3.8.0)",
    ),
    MetricSpec::counter(
        "reactive_energy_delivered_tariff1",
        Unit::KiloVarHour,
        "reactive energy, import, tariff 1",
    ),
    MetricSpec::counter(
        "reactive_energy_delivered_tariff2",
        Unit::KiloVarHour,
        "reactive energy, import, tariff 2",
    ),
    MetricSpec::counter(
        "reactive_energy_returned_total",
        Unit::KiloVarHour,
        "reactive energy, export (4.8.0)",
    ),
    MetricSpec::counter(
        "reactive_energy_returned_tariff1",
        Unit::KiloVarHour,
        "reactive energy, export, tariff 1",
    ),
    MetricSpec::counter(
        "reactive_energy_returned_tariff2",
        Unit::KiloVarHour,
        "reactive energy, export, tariff 2",
    ),
    MetricSpec::gauge("power_delivered", Unit::Watt, "power drawn from the grid (1.7.0)"),
    MetricSpec::gauge("power_returned", Unit::Watt, "power fed into the grid (2.7.0)"),
    MetricSpec::gauge("power_delivered_l1", Unit::Watt, "power drawn, phase 1"),
    MetricSpec::gauge("power_delivered_l2", Unit::Watt, "power drawn, phase 2"),
    MetricSpec::gauge("power_delivered_l3", Unit::Watt, "power drawn, phase 3"),
    MetricSpec::gauge("power_returned_l1", Unit::Watt, "power returned, phase 1"),
    MetricSpec::gauge("power_returned_l2", Unit::Watt, "power returned, phase 2"),
    MetricSpec::gauge("power_returned_l3", Unit::Watt, "power returned, phase 3"),
    MetricSpec::gauge("reactive_power_delivered", Unit::Var, "reactive power, import"),
    MetricSpec::gauge("reactive_power_returned", Unit::Var, "reactive power, export"),
    MetricSpec::gauge(
        "reactive_power_delivered_l1",
        Unit::Var,
        "reactive power, import, phase 1",
    ),
    MetricSpec::gauge(
        "reactive_power_delivered_l2",
        Unit::Var,
        "reactive power, import, phase 2",
    ),
    MetricSpec::gauge(
        "reactive_power_delivered_l3",
        Unit::Var,
        "reactive power, import, phase 3",
    ),
    MetricSpec::gauge(
        "reactive_power_returned_l1",
        Unit::Var,
        "reactive power, export, phase 1",
    ),
    MetricSpec::gauge(
        "reactive_power_returned_l2",
        Unit::Var,
        "reactive power, export, phase 2",
    ),
    MetricSpec::gauge(
        "reactive_power_returned_l3",
        Unit::Var,
        "reactive power, export, phase 3",
    ),
    MetricSpec::gauge("apparent_power_delivered", Unit::VoltAmpere, "apparent power, import"),
    MetricSpec::gauge("apparent_power_returned", Unit::VoltAmpere, "apparent power, export"),
    MetricSpec::gauge("voltage_l1", Unit::Volt, "voltage, phase 1"),
    MetricSpec::gauge("voltage_l2", Unit::Volt, "voltage, phase 2"),
    MetricSpec::gauge("voltage_l3", Unit::Volt, "voltage, phase 3"),
    MetricSpec::gauge("current_l1", Unit::Ampere, "current, phase 1"),
    MetricSpec::gauge("current_l2", Unit::Ampere, "current, phase 2"),
    MetricSpec::gauge("current_l3", Unit::Ampere, "current, phase 3"),
    MetricSpec::gauge("current_neutral", Unit::Ampere, "current, neutral"),
    MetricSpec::gauge("power_factor", Unit::None, "power factor"),
    MetricSpec::gauge("power_factor_l1", Unit::None, "power factor, phase 1"),
    MetricSpec::gauge("power_factor_l2", Unit::None, "power factor, phase 2"),
    MetricSpec::gauge("power_factor_l3", Unit::None, "power factor, phase 3"),
    MetricSpec::gauge("frequency", Unit::Hertz, "grid frequency"),
    MetricSpec::counter("voltage_sags_l1", Unit::None, "voltage sags, phase 1"),
    MetricSpec::counter("voltage_sags_l2", Unit::None, "voltage sags, phase 2"),
    MetricSpec::counter("voltage_sags_l3", Unit::None, "voltage sags, phase 3"),
    MetricSpec::counter("voltage_swells_l1", Unit::None, "voltage swells, phase 1"),
    MetricSpec::counter("voltage_swells_l2", Unit::None, "voltage swells, phase 2"),
    MetricSpec::counter("voltage_swells_l3", Unit::None, "voltage swells, phase 3"),
    MetricSpec::gauge(
        "peak_demand_current_quarter",
        Unit::Watt,
        "average demand of the current quarter hour (BE)",
    ),
    MetricSpec::gauge(
        "peak_demand_month",
        Unit::Watt,
        "highest quarter-hour demand this month (BE), at its time",
    ),
    MetricSpec::gauge("tariff", Unit::None, "active tariff"),
    MetricSpec::counter("power_failures", Unit::None, "power failures, any phase"),
    MetricSpec::counter("long_power_failures", Unit::None, "long power failures, any phase"),
    MetricSpec::counter("gas_delivered", Unit::CubicMetre, "gas (M-Bus), at its capture time"),
    MetricSpec::counter(
        "water_delivered",
        Unit::CubicMetre,
        "water (M-Bus), at its capture time",
    ),
    MetricSpec::counter("heat_delivered", Unit::GigaJoule, "heat (M-Bus), at its capture time"),
    MetricSpec::counter(
        "cooling_delivered",
        Unit::GigaJoule,
        "cooling (M-Bus), at its capture time",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::dsmr::decode;

    const T: &[u8] = b"/ISK5\\2M550T-1012\r\n\r\n0-0:1.0.0(200426223325S)\r\n0-0:96.1.1(4530303434303037313331363530363138)\r\n1-0:1.8.1(001581.123*kWh)\r\n1-0:1.7.0(00.193*kW)\r\n0-0:96.14.0(0002)\r\n0-1:24.1.0(003)\r\n0-1:24.2.1(200426223001S)(02566.655*m3)\r\n!\r\n";

    #[test]
    fn units_timestamps_and_kinds() {
        let t = decode(T).unwrap();
        let received = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().to_utc();
        let r = readings(&Arc::from("p1"), &t, received);
        let get = |m: &str| r.iter().find(|x| &*x.metric == m).unwrap();
        let meter = DateTime::parse_from_rfc3339("2020-04-26T20:33:25Z").unwrap().to_utc();
        assert_eq!(get("energy_delivered_tariff1").unit, Unit::KiloWattHour);
        assert_eq!(get("energy_delivered_tariff1").kind, Kind::Counter);
        assert_eq!(get("energy_delivered_tariff1").timestamp, meter);
        assert_eq!(get("power_delivered").value, Value::Number(193.0));
        assert_eq!(get("power_delivered").kind, Kind::Gauge);
        let gas = get("gas_delivered");
        assert_eq!(gas.unit, Unit::CubicMetre);
        assert_eq!(
            gas.timestamp,
            DateTime::parse_from_rfc3339("2020-04-26T20:30:01Z").unwrap().to_utc()
        );
        // Without a meter time, the arrival time.
        let mut no_time = t.clone();
        no_time.meter_time = None;
        let r = readings(&Arc::from("p1"), &no_time, received);
        assert!(r.iter().any(|x| &*x.metric == "tariff" && x.timestamp == received));
    }

    #[test]
    fn every_codec_metric_is_listed() {
        for unit in ["kWh", "kvarh", "W", "var", "VA", "V", "A", "Hz", "m3", "GJ"] {
            assert_ne!(unit_of(unit), Unit::None, "{unit}");
        }
        let t = decode(T).unwrap();
        for v in &t.values {
            let spec = METRICS.iter().find(|m| m.name == v.metric).unwrap();
            assert_eq!(spec.unit, unit_of(v.unit));
            assert_eq!(spec.kind == Kind::Counter, v.counter, "{}", v.metric);
        }
    }

    #[test]
    fn watch_reports_swaps_and_resets() {
        let mut w = Watch::default();
        let t = decode(T).unwrap();
        assert!(w.observe(&t).is_empty());
        assert!(w.observe(&t).is_empty(), "same values are no anomaly");
        let mut swapped = t.clone();
        swapped.equipment_id = Some("other".into());
        if let Some(v) = swapped
            .values
            .iter_mut()
            .find(|v| v.metric == "energy_delivered_tariff1")
        {
            v.value = DsmrNumberOrText::Number(3.0);
        }
        let found = w.observe(&swapped);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.contains(&Anomaly::CounterBackwards {
            metric: "energy_delivered_tariff1".into(),
            old: 1581.123,
            new: 3.0
        }));
        assert!(matches!(&found[0], Anomaly::EquipmentChanged { new, .. } if new == "other"));
    }
}
