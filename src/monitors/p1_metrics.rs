//! The metric names of a P1 port, shared by the devices that read one: `dsmr`
//! (the telegram itself) and `homewizard` (a P1 meter's JSON), so the same
//! quantity has the same name, unit and kind whichever way it is read.

use crate::reading::{MetricSpec, Unit};

/// Every metric a DSMR meter can report (M-Bus devices beyond the first of a kind
/// add `_2`, `_3` … to the name; tariff registers are named after their tariff,
/// `_tariff1` … `_tariff63`, of which the common four are listed). The table is
/// the codec's, see docs/metrics.md; [`spec`] resolves the numbered names.
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
    MetricSpec::gauge(
        "capacity_rolling_average",
        Unit::Watt,
        "rolling 12-month average of the monthly peaks, the capacity tariff's base (BE)",
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

/// The spec of metric `name`: a listed one, or a numbered one that is named after
/// a listed one — a tariff beyond the four listed (`energy_delivered_tariff5` is
/// what `energy_delivered_tariff1` is, for tariff 5), or the second, third …
/// M-Bus device of a kind (`gas_delivered_2`). So a new tariff or device needs no
/// line here, and storage, MQTT discovery and the page take it as they come.
pub fn spec(name: &str) -> Option<MetricSpec> {
    if let Some(listed) = METRICS.iter().find(|m| m.name == name) {
        return Some(*listed);
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let number = name.get(base.len()..).filter(|n| !n.is_empty())?;
    // The M-Bus kinds the codec numbers (`MbusKind::base_name`).
    const MBUS: [&str; 4] = [
        "gas_delivered",
        "water_delivered",
        "heat_delivered",
        "cooling_delivered",
    ];
    let like = if base.ends_with("_tariff") {
        format!("{base}1")
    } else {
        let kind = base.strip_suffix('_')?;
        MBUS.contains(&kind).then(|| kind.to_string())?
    };
    let like = METRICS.iter().find(|m| m.name == like)?;
    let number: u32 = number.parse().ok()?;
    let valid = match base.ends_with("_tariff") {
        true => (1..=63).contains(&number),
        false => number >= 2,
    };
    valid.then(|| MetricSpec {
        name: crate::reading::intern(name),
        ..*like
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Kind, Unit};

    #[test]
    fn numbered_names_resolve_to_their_pattern() {
        let t5 = spec("energy_returned_tariff5").expect("tariff 5");
        assert_eq!(
            (t5.name, t5.unit, t5.kind),
            ("energy_returned_tariff5", Unit::KiloWattHour, Kind::Counter)
        );
        let r3 = spec("reactive_energy_delivered_tariff3").expect("reactive tariff 3");
        assert_eq!(r3.unit, Unit::KiloVarHour);
        assert_eq!(
            spec("energy_delivered_tariff13").map(|s| s.name),
            Some("energy_delivered_tariff13")
        );
        assert_eq!(spec("gas_delivered_2").map(|s| s.unit), Some(Unit::CubicMetre));
        assert_eq!(spec("power_delivered").map(|s| s.kind), Some(Kind::Gauge));
        for unknown in [
            "energy_delivered_tariff0",
            "energy_delivered_tariff64",
            "energy_delivered_tariff",
            "gas_delivered_1",
            "gas_delivered2",
            "voltage_l4",
            "power_delivered_2",
            "nonsense_3",
        ] {
            assert_eq!(spec(unknown), None, "{unknown}");
        }
    }
}
