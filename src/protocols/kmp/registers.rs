//! Catalogue of well-known MULTICAL® heat-meter registers (name ↔ id).
//!
//! Ids come from the register lists published with PyKMP (MULTICAL 30x/40x/60x)
//! and a MULTICAL 302 list posted in the PyKamstrup issue tracker (restated in
//! `tests/fixtures/kamstrup/kmp_register_map.json`).  Only registers whose id is
//! documented in those sources are listed: a guessed id would read some other
//! quantity without any error.

/// Heat energy E1.
pub const ENERGY: u16 = 0x003C;
/// Cooling energy E3.
pub const ENERGY_COOLING: u16 = 0x003F;
/// Volume V1.
pub const VOLUME: u16 = 0x0044;
/// Actual flow.
pub const FLOW: u16 = 0x004A;
/// Actual (thermal) power.
pub const POWER: u16 = 0x0050;
/// Flow (forward) temperature T1.
pub const TEMP_FLOW: u16 = 0x0056;
/// Return temperature T2.
pub const TEMP_RETURN: u16 = 0x0057;
/// Temperature difference T1 − T2.
pub const TEMP_DIFF: u16 = 0x0059;
/// Current info code (bit field of alarms).
pub const INFO_CODE: u16 = 0x0063;
/// Meter clock, hhmmss.
pub const CLOCK: u16 = 0x03EA;
/// Meter date, yymmdd.
pub const DATE: u16 = 0x03EB;
/// Operating hour counter.
pub const HOUR_COUNTER: u16 = 0x03EC;

/// One catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegisterInfo {
    /// Register id.
    pub id: u16,
    /// Stable snake_case name used in configuration.
    pub name: &'static str,
    /// Human-readable description.
    pub description: &'static str,
}

const fn entry(id: u16, name: &'static str, description: &'static str) -> RegisterInfo {
    RegisterInfo { id, name, description }
}

/// All known registers.
pub const CATALOGUE: &[RegisterInfo] = &[
    entry(ENERGY, "energy", "Heat energy E1"),
    entry(ENERGY_COOLING, "energy_cooling", "Cooling energy E3"),
    entry(VOLUME, "volume", "Volume V1"),
    entry(FLOW, "flow", "Actual flow"),
    entry(POWER, "power", "Actual power"),
    entry(TEMP_FLOW, "temp_flow", "Flow temperature T1"),
    entry(TEMP_RETURN, "temp_return", "Return temperature T2"),
    entry(TEMP_DIFF, "temp_diff", "Temperature difference T1-T2"),
    entry(0x0061, "temp_flow_volume", "T1 x m3 (volume-weighted T1)"),
    entry(0x0062, "log_day", "Target (reading) date"),
    entry(INFO_CODE, "info_code", "Current info code"),
    entry(0x006E, "temp_return_volume", "T2 x m3 (volume-weighted T2)"),
    entry(0x0071, "info_event", "Info event counter"),
    entry(0x007B, "max_flow_date_year", "Date of max flow, yearly"),
    entry(0x007C, "max_flow_year", "Max flow, yearly"),
    entry(0x007D, "min_flow_date_year", "Date of min flow, yearly"),
    entry(0x007E, "min_flow_year", "Min flow, yearly"),
    entry(0x007F, "max_power_date_year", "Date of max power, yearly"),
    entry(0x0080, "max_power_year", "Max power, yearly"),
    entry(0x0081, "min_power_date_year", "Date of min power, yearly"),
    entry(0x0082, "min_power_year", "Min power, yearly"),
    entry(0x008A, "max_flow_date_month", "Date of max flow, monthly"),
    entry(0x008B, "max_flow_month", "Max flow, monthly"),
    entry(0x008C, "min_flow_date_month", "Date of min flow, monthly"),
    entry(0x008D, "min_flow_month", "Min flow, monthly"),
    entry(0x008E, "max_power_date_month", "Date of max power, monthly"),
    entry(0x008F, "max_power_month", "Max power, monthly"),
    entry(0x0090, "min_power_date_month", "Date of min power, monthly"),
    entry(0x0091, "min_power_month", "Min power, monthly"),
    entry(0x0092, "avg_temp_flow_year", "Average T1, yearly"),
    entry(0x0093, "avg_temp_return_year", "Average T2, yearly"),
    entry(0x0095, "avg_temp_flow_month", "Average T1, monthly"),
    entry(0x0096, "avg_temp_return_month", "Average T2, monthly"),
    entry(
        0x00E5,
        "auto_int_temp_flow_avg",
        "Average T1 over last auto-integration",
    ),
    entry(0x00EF, "volume_high_res", "Volume V1, high resolution"),
    entry(0x010A, "energy_high_res", "Heat energy E1, high resolution"),
    entry(0x010B, "energy_cooling_high_res", "Cooling energy E3, high resolution"),
    entry(CLOCK, "clock", "Meter clock (hhmmss)"),
    entry(DATE, "date", "Meter date (yymmdd)"),
    entry(HOUR_COUNTER, "hour_counter", "Operating hour counter"),
];

/// Look up a register by its catalogue name (exact, case-sensitive).
pub fn register_by_name(name: &str) -> Option<&'static RegisterInfo> {
    CATALOGUE.iter().find(|r| r.name == name)
}

/// Look up a register by id.
pub fn register_by_id(id: u16) -> Option<&'static RegisterInfo> {
    CATALOGUE.iter().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_are_unique_and_bidirectional() {
        for info in CATALOGUE {
            assert_eq!(register_by_name(info.name), Some(info));
            assert_eq!(register_by_id(info.id), Some(info));
        }
        assert_eq!(register_by_name("energy").map(|r| r.id), Some(60));
        assert_eq!(register_by_name("hour_counter").map(|r| r.id), Some(1004));
        assert_eq!(register_by_id(0x0059).map(|r| r.name), Some("temp_diff"));
        assert_eq!(register_by_name("nope"), None);
    }
}
