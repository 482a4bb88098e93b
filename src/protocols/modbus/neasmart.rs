//! The REHAU Nea Smart 2.0 "SYSBUS" register map: which holding register the
//! base station writes what into, and how it is encoded. From
//! `rehau_neasmart2_sysbus_register_map.json` (tests/fixtures/modbus/), itself
//! restated from the community RehauNeasmart2.0_Gateway. Pure: the monitor keeps
//! the register bank, this module names and decodes its values.

use std::ops::RangeInclusive;

use super::dpt9;

/// `operating_mode`: 1 auto, 2 heating, 3 cooling, 4 manual heating, 5 manual cooling.
pub const OPERATING_MODES: RangeInclusive<f64> = 1.0..=5.0;
/// `operating_state` and a zone's state: 1 normal, 2 reduced, 3 standby, 4 time
/// program, 5 party, 6 holiday.
pub const OPERATING_STATES: RangeInclusive<f64> = 1.0..=6.0;
/// Zone setpoints a write may set, °C: the range of the Nea Smart room units.
pub const SETPOINTS: RangeInclusive<f64> = 5.0..=30.0;

/// The values a gateway may command into a global register (the map marks
/// these two "read/write (command)").
pub fn global_command_range(address: u16) -> Option<RangeInclusive<f64>> {
    match address {
        1 => Some(OPERATING_MODES),
        2 => Some(OPERATING_STATES),
        _ => None,
    }
}

/// The register for a commanded value: DPT 9.001 for temperatures, the whole
/// number for enums; `None` when it cannot be encoded (not a number, a fraction
/// of an enum).
pub fn encode(encoding: Encoding, value: f64) -> Option<u16> {
    match encoding {
        Encoding::Temperature => dpt9::encode(value),
        Encoding::Integer if value.fract() == 0.0 && (0.0..=f64::from(u16::MAX)).contains(&value) => Some(value as u16),
        Encoding::Integer => None,
    }
}

/// How a register's value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A DPT 9.001 temperature (°C).
    Temperature,
    /// A plain unsigned integer (a state, an enum, a flag, a percentage).
    Integer,
}

/// A register outside the zone table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Global {
    pub address: u16,
    pub metric: &'static str,
    pub encoding: Encoding,
}

const fn t(address: u16, metric: &'static str) -> Global {
    Global {
        address,
        metric,
        encoding: Encoding::Temperature,
    }
}
const fn i(address: u16, metric: &'static str) -> Global {
    Global {
        address,
        metric,
        encoding: Encoding::Integer,
    }
}

/// Global and mixed-group registers (addresses as the map gives them, 0-based).
pub const GLOBALS: &[Global] = &[
    i(1, "operating_mode"),
    i(2, "operating_state"),
    i(3, "errors_present"),
    i(5, "warnings_present"),
    i(6, "hints_present"),
    t(7, "outside_temperature"),
    t(8, "outside_temperature_filtered"),
    i(10, "mixed_group_1_valve_opening"),
    i(11, "mixed_group_1_pump_state"),
    t(12, "mixed_group_1_flow_temperature"),
    t(13, "mixed_group_1_return_temperature"),
    i(14, "mixed_group_2_valve_opening"),
    i(15, "mixed_group_2_pump_state"),
    t(16, "mixed_group_2_flow_temperature"),
    t(17, "mixed_group_2_return_temperature"),
    i(18, "mixed_group_3_valve_opening"),
    i(19, "mixed_group_3_pump_state"),
    t(20, "mixed_group_3_flow_temperature"),
    t(21, "mixed_group_3_return_temperature"),
    i(22, "dehumidifier_1_state"),
    i(23, "dehumidifier_2_state"),
    i(24, "dehumidifier_3_state"),
    i(25, "dehumidifier_4_state"),
    i(26, "dehumidifier_5_state"),
    i(27, "dehumidifier_6_state"),
    i(28, "dehumidifier_7_state"),
    i(29, "dehumidifier_8_state"),
    i(30, "dehumidifier_9_state"),
    i(31, "extra_pump_1_state"),
    i(32, "extra_pump_2_state"),
    i(33, "extra_pump_3_state"),
    i(34, "extra_pump_4_state"),
    i(35, "extra_pump_5_state"),
];

/// Bases (one master and up to four slaves) and zones per base.
pub const BASES: u8 = 5;
pub const ZONES: u8 = 12;

/// One value of a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneField {
    /// The zone's state, an enum like the global state (1 normal … 6 holiday).
    State,
    /// The setpoint (°C); also the register the base polls for a new setpoint.
    Setpoint,
    /// The room temperature (°C).
    Temperature,
    /// Relative humidity (%), where the room unit has a sensor.
    Humidity,
}

impl ZoneField {
    pub const ALL: [ZoneField; 4] = [
        ZoneField::State,
        ZoneField::Setpoint,
        ZoneField::Temperature,
        ZoneField::Humidity,
    ];

    /// Offset from the zone's base address.
    pub fn offset(self) -> u16 {
        match self {
            ZoneField::State => 0,
            ZoneField::Setpoint => 1,
            ZoneField::Temperature => 2,
            ZoneField::Humidity => 10,
        }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            ZoneField::State => "state",
            ZoneField::Setpoint => "setpoint",
            ZoneField::Temperature => "temperature",
            ZoneField::Humidity => "humidity",
        }
    }

    /// The values a gateway may command for this field (docs/control.md): a
    /// zone's state (the enum of `operating_state`) and its setpoint in °C.
    pub fn command_range(self) -> Option<RangeInclusive<f64>> {
        match self {
            ZoneField::State => Some(OPERATING_STATES),
            ZoneField::Setpoint => Some(SETPOINTS),
            ZoneField::Temperature | ZoneField::Humidity => None,
        }
    }

    pub fn encoding(self) -> Encoding {
        match self {
            ZoneField::Setpoint | ZoneField::Temperature => Encoding::Temperature,
            ZoneField::State | ZoneField::Humidity => Encoding::Integer,
        }
    }
}

/// The address of a zone's field: `(base − 1)·1200 + zone·100 + offset`.
/// `base` 1 to 5, `zone` 1 to 12.
pub fn zone_address(base: u8, zone: u8, field: ZoneField) -> Option<u16> {
    if !(1..=BASES).contains(&base) || !(1..=ZONES).contains(&zone) {
        return None;
    }
    Some((u16::from(base) - 1) * 1200 + u16::from(zone) * 100 + field.offset())
}

/// A register's value, or `None` when it says "no value" (a temperature
/// sentinel, or a temperature outside what a heating system can report).
pub fn decode(encoding: Encoding, raw: u16) -> Option<f64> {
    match encoding {
        Encoding::Integer => Some(f64::from(raw)),
        Encoding::Temperature => dpt9::decode(raw).filter(|v| dpt9::PLAUSIBLE.contains(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_the_modes_states_and_setpoints() {
        assert_eq!(global_command_range(1), Some(OPERATING_MODES));
        assert_eq!(global_command_range(2), Some(OPERATING_STATES));
        assert_eq!(global_command_range(7), None);
        assert_eq!(ZoneField::Setpoint.command_range(), Some(SETPOINTS));
        assert_eq!(ZoneField::Temperature.command_range(), None);
        assert_eq!(encode(Encoding::Temperature, 21.5), Some(0x0C33));
        assert_eq!(encode(Encoding::Integer, 3.0), Some(3));
        assert_eq!(encode(Encoding::Integer, 2.5), None);
        assert_eq!(decode(Encoding::Temperature, 0x0C33), Some(21.5));
    }

    #[test]
    fn zone_addresses_follow_the_map() {
        // Rows of the "zones" table in the register map fixture.
        assert_eq!(zone_address(1, 1, ZoneField::State), Some(100));
        assert_eq!(zone_address(1, 1, ZoneField::Humidity), Some(110));
        assert_eq!(zone_address(1, 12, ZoneField::Temperature), Some(1202));
        assert_eq!(zone_address(2, 1, ZoneField::Setpoint), Some(1301));
        assert_eq!(zone_address(5, 12, ZoneField::Humidity), Some(6010));
        assert_eq!(zone_address(0, 1, ZoneField::State), None);
        assert_eq!(zone_address(1, 13, ZoneField::State), None);
    }

    #[test]
    fn zone_and_global_registers_never_overlap() {
        let mut seen = std::collections::HashSet::new();
        for g in GLOBALS {
            assert!(seen.insert(g.address), "{}", g.metric);
        }
        for base in 1..=BASES {
            for zone in 1..=ZONES {
                for field in ZoneField::ALL {
                    let a = zone_address(base, zone, field).unwrap_or_default();
                    assert!(seen.insert(a), "base {base} zone {zone} {field:?}");
                }
            }
        }
    }

    #[test]
    fn values_decode_with_their_encoding() {
        assert_eq!(decode(Encoding::Temperature, 0x0C33), Some(21.5));
        assert_eq!(decode(Encoding::Temperature, dpt9::UNINITIALISED), None);
        assert_eq!(decode(Encoding::Temperature, dpt9::NOT_APPLICABLE), None);
        // 0x7FFE decodes to 670433 °C: not believed.
        assert_eq!(decode(Encoding::Temperature, 0x7FFE), None);
        assert_eq!(decode(Encoding::Integer, 45), Some(45.0));
    }
}
