//! The KMP unit table (codes 0x00–0x40) and normalisation to canonical units.
//!
//! The table is the one published in Kamstrup's KMP documentation and used by
//! the open implementations (PyKMP, PyKamstrup, the kamstrup402/382 Arduino
//! sketches).  Two oddities of that table are kept as published:
//! codes 0x15 and 0x16 are both "kW", and 0x19 and 0x1A are both "kvar"
//! (by the table's layout 0x15/0x19 look like they were meant to be W/var,
//! but every public table says kW/kvar and MULTICAL meters use 0x16 for
//! power).  Codes above 0x40 are rejected with [`super::KmpError::UnknownUnit`].

use std::fmt;

use super::number::KmpNumber;

macro_rules! units {
    ($( $(#[$doc:meta])* $variant:ident = $code:literal, $symbol:literal, $quantity:ident; )*) => {
        /// A KMP unit code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        #[non_exhaustive]
        pub enum Unit {
            $( $(#[$doc])* $variant = $code, )*
        }

        impl Unit {
            /// All units, in code order.
            pub const ALL: &'static [Unit] = &[$( Unit::$variant, )*];

            /// Look up a unit code; `None` for codes outside the table.
            pub const fn from_code(code: u8) -> Option<Unit> {
                match code {
                    $( $code => Some(Unit::$variant), )*
                    _ => None,
                }
            }

            /// Human-readable symbol (empty for dimensionless numbers).
            pub const fn symbol(self) -> &'static str {
                match self {
                    $( Unit::$variant => $symbol, )*
                }
            }

            /// Physical quantity the unit measures.
            pub const fn quantity(self) -> Quantity {
                match self {
                    $( Unit::$variant => Quantity::$quantity, )*
                }
            }
        }
    };
}

units! {
    /// 0x00: no unit (plain number).
    NoUnit = 0x00, "", Number;
    /// 0x01: watt-hour.
    Wh = 0x01, "Wh", Energy;
    /// 0x02: kilowatt-hour.
    KWh = 0x02, "kWh", Energy;
    /// 0x03: megawatt-hour.
    MWh = 0x03, "MWh", Energy;
    /// 0x04: gigawatt-hour.
    GWh = 0x04, "GWh", Energy;
    /// 0x05: joule.
    J = 0x05, "J", Energy;
    /// 0x06: kilojoule.
    KJ = 0x06, "kJ", Energy;
    /// 0x07: megajoule.
    MJ = 0x07, "MJ", Energy;
    /// 0x08: gigajoule.
    GJ = 0x08, "GJ", Energy;
    /// 0x09: calorie.
    Cal = 0x09, "Cal", Energy;
    /// 0x0A: kilocalorie.
    KCal = 0x0A, "kCal", Energy;
    /// 0x0B: megacalorie.
    MCal = 0x0B, "Mcal", Energy;
    /// 0x0C: gigacalorie.
    GCal = 0x0C, "Gcal", Energy;
    /// 0x0D: reactive energy, var-hour.
    Varh = 0x0D, "varh", ReactiveEnergy;
    /// 0x0E: kvarh.
    KVarh = 0x0E, "kvarh", ReactiveEnergy;
    /// 0x0F: Mvarh.
    MVarh = 0x0F, "Mvarh", ReactiveEnergy;
    /// 0x10: Gvarh.
    GVarh = 0x10, "Gvarh", ReactiveEnergy;
    /// 0x11: apparent energy, VA-hour.
    VAh = 0x11, "VAh", ApparentEnergy;
    /// 0x12: kVAh.
    KVAh = 0x12, "kVAh", ApparentEnergy;
    /// 0x13: MVAh.
    MVAh = 0x13, "MVAh", ApparentEnergy;
    /// 0x14: GVAh.
    GVAh = 0x14, "GVAh", ApparentEnergy;
    /// 0x15: "kW" per every public KMP table (a duplicate of 0x16; possibly
    /// meant to be W).  Treated as kilowatt.
    KWAlt = 0x15, "kW", Power;
    /// 0x16: kilowatt (used by MULTICAL for current/peak power).
    KW = 0x16, "kW", Power;
    /// 0x17: megawatt.
    MW = 0x17, "MW", Power;
    /// 0x18: gigawatt.
    GW = 0x18, "GW", Power;
    /// 0x19: "kvar" per every public KMP table (duplicate of 0x1A).
    KVarAlt = 0x19, "kvar", ReactivePower;
    /// 0x1A: kvar.
    KVar = 0x1A, "kvar", ReactivePower;
    /// 0x1B: Mvar.
    MVar = 0x1B, "Mvar", ReactivePower;
    /// 0x1C: Gvar.
    GVar = 0x1C, "Gvar", ReactivePower;
    /// 0x1D: volt-ampere.
    VA = 0x1D, "VA", ApparentPower;
    /// 0x1E: kVA.
    KVA = 0x1E, "kVA", ApparentPower;
    /// 0x1F: MVA.
    MVA = 0x1F, "MVA", ApparentPower;
    /// 0x20: GVA.
    GVA = 0x20, "GVA", ApparentPower;
    /// 0x21: volt.
    V = 0x21, "V", Voltage;
    /// 0x22: ampere.
    A = 0x22, "A", Current;
    /// 0x23: kilovolt.
    KV = 0x23, "kV", Voltage;
    /// 0x24: kiloampere.
    KA = 0x24, "kA", Current;
    /// 0x25: degree Celsius (flow/return temperatures).
    Celsius = 0x25, "°C", Temperature;
    /// 0x26: kelvin (temperature differences; PyKMP writes "°K").
    Kelvin = 0x26, "K", TemperatureDifference;
    /// 0x27: litre.
    Litre = 0x27, "l", Volume;
    /// 0x28: cubic metre.
    CubicMetre = 0x28, "m³", Volume;
    /// 0x29: litre per hour.
    LitrePerHour = 0x29, "l/h", Flow;
    /// 0x2A: cubic metre per hour.
    CubicMetrePerHour = 0x2A, "m³/h", Flow;
    /// 0x2B: m³ × °C (volume-weighted temperature integrals).
    CubicMetreCelsius = 0x2B, "m³×°C", Other;
    /// 0x2C: tonne.
    Ton = 0x2C, "ton", Mass;
    /// 0x2D: tonne per hour.
    TonPerHour = 0x2D, "ton/h", MassFlow;
    /// 0x2E: hour (e.g. hour counter).
    Hour = 0x2E, "h", Duration;
    /// 0x2F: clock, decimal hhmmss.
    HourMinuteSecond = 0x2F, "hh:mm:ss", Time;
    /// 0x30: date, decimal yymmdd.
    YearMonthDay = 0x30, "yy:mm:dd", Time;
    /// 0x31: date, decimal yyyymmdd.
    FullYearMonthDay = 0x31, "yyyy:mm:dd", Time;
    /// 0x32: date, decimal mmdd.
    MonthDay = 0x32, "mm:dd", Time;
    /// 0x33: no unit (plain number).
    Number = 0x33, "", Number;
    /// 0x34: bar.
    Bar = 0x34, "bar", Pressure;
    /// 0x35: RTC.
    Rtc = 0x35, "RTC", Time;
    /// 0x36: ASCII.
    Ascii = 0x36, "ASCII", Other;
    /// 0x37: m³ × 10.
    CubicMetreX10 = 0x37, "m³×10", Volume;
    /// 0x38: tonne × 10.
    TonX10 = 0x38, "ton×10", Mass;
    /// 0x39: GJ × 10.
    GJX10 = 0x39, "GJ×10", Energy;
    /// 0x3A: minutes.
    Minute = 0x3A, "min", Duration;
    /// 0x3B: bit field (e.g. info codes).
    Bitfield = 0x3B, "bitfield", Number;
    /// 0x3C: seconds.
    Second = 0x3C, "s", Duration;
    /// 0x3D: milliseconds.
    Millisecond = 0x3D, "ms", Duration;
    /// 0x3E: days.
    Day = 0x3E, "days", Duration;
    /// 0x3F: RTC-Q.
    RtcQ = 0x3F, "RTC-Q", Time;
    /// 0x40: date-time.
    DateTime = 0x40, "datetime", Time;
}

impl Unit {
    /// The KMP unit code.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// Physical quantity of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Quantity {
    /// Dimensionless number, counter or bit field.
    Number,
    /// Active/heat energy.
    Energy,
    /// Reactive energy.
    ReactiveEnergy,
    /// Apparent energy.
    ApparentEnergy,
    /// Active/thermal power.
    Power,
    /// Reactive power.
    ReactivePower,
    /// Apparent power.
    ApparentPower,
    /// Voltage.
    Voltage,
    /// Current.
    Current,
    /// Absolute temperature (°C).
    Temperature,
    /// Temperature difference (K).
    TemperatureDifference,
    /// Volume.
    Volume,
    /// Volume flow.
    Flow,
    /// Mass.
    Mass,
    /// Mass flow.
    MassFlow,
    /// Duration / counter of time units.
    Duration,
    /// Clock, date or timestamp encoded as decimal digits.
    Time,
    /// Pressure.
    Pressure,
    /// Anything else (ASCII, m³×°C).
    Other,
}

/// Canonical units used by the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CanonicalUnit {
    /// Energy in kWh.
    KilowattHour,
    /// Power in W.
    Watt,
    /// Flow in l/h.
    LitrePerHour,
    /// Temperature in °C.
    DegreeCelsius,
    /// Temperature difference in K (numerically equal to a °C difference).
    Kelvin,
    /// Volume in m³.
    CubicMetre,
    /// Duration in hours.
    Hour,
}

impl CanonicalUnit {
    /// Symbol of the canonical unit.
    pub const fn symbol(self) -> &'static str {
        match self {
            CanonicalUnit::KilowattHour => "kWh",
            CanonicalUnit::Watt => "W",
            CanonicalUnit::LitrePerHour => "l/h",
            CanonicalUnit::DegreeCelsius => "°C",
            CanonicalUnit::Kelvin => "K",
            CanonicalUnit::CubicMetre => "m³",
            CanonicalUnit::Hour => "h",
        }
    }
}

impl fmt::Display for CanonicalUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// A value in a canonical unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// The converted value.
    pub value: f64,
    /// Its canonical unit.
    pub unit: CanonicalUnit,
}

/// Conversion rule: `canonical = value × 10^shift × factor`.
struct Rule {
    unit: CanonicalUnit,
    shift: i32,
    factor: Factor,
}

enum Factor {
    One,
    Mul(f64),
    Div(f64),
}

const fn rule(unit: CanonicalUnit, shift: i32, factor: Factor) -> Option<Rule> {
    Some(Rule { unit, shift, factor })
}

/// 1 kWh = 3.6 MJ = 3600 kJ.
const KJ_PER_KWH: f64 = 3600.0;
/// International Table calorie: 1 cal = 4.1868 J, so 1 Gcal = 1163 kWh
/// (1 cal = 1163 × 10⁻⁹ kWh exactly).
const KWH_PER_GCAL: f64 = 1163.0;

/// No rule for the "×10" units (m³×10, ton×10, GJ×10): no source says whether a
/// value in them is to be multiplied or divided by 10, and a guess would store
/// values off by a factor of 100 without any error.
fn rule_for(unit: Unit) -> Option<Rule> {
    use CanonicalUnit as C;
    use Factor::{Div, Mul, One};
    match unit {
        Unit::Wh => rule(C::KilowattHour, -3, One),
        Unit::KWh => rule(C::KilowattHour, 0, One),
        Unit::MWh => rule(C::KilowattHour, 3, One),
        Unit::GWh => rule(C::KilowattHour, 6, One),
        Unit::J => rule(C::KilowattHour, -3, Div(KJ_PER_KWH)),
        Unit::KJ => rule(C::KilowattHour, 0, Div(KJ_PER_KWH)),
        Unit::MJ => rule(C::KilowattHour, 3, Div(KJ_PER_KWH)),
        Unit::GJ => rule(C::KilowattHour, 6, Div(KJ_PER_KWH)),
        Unit::Cal => rule(C::KilowattHour, -9, Mul(KWH_PER_GCAL)),
        Unit::KCal => rule(C::KilowattHour, -6, Mul(KWH_PER_GCAL)),
        Unit::MCal => rule(C::KilowattHour, -3, Mul(KWH_PER_GCAL)),
        Unit::GCal => rule(C::KilowattHour, 0, Mul(KWH_PER_GCAL)),
        Unit::KWAlt | Unit::KW => rule(C::Watt, 3, One),
        Unit::MW => rule(C::Watt, 6, One),
        Unit::GW => rule(C::Watt, 9, One),
        Unit::LitrePerHour => rule(C::LitrePerHour, 0, One),
        Unit::CubicMetrePerHour => rule(C::LitrePerHour, 3, One),
        Unit::Celsius => rule(C::DegreeCelsius, 0, One),
        Unit::Kelvin => rule(C::Kelvin, 0, One),
        Unit::Litre => rule(C::CubicMetre, -3, One),
        Unit::CubicMetre => rule(C::CubicMetre, 0, One),
        Unit::Hour => rule(C::Hour, 0, One),
        _ => None,
    }
}

/// Convert `value` in `unit` to the canonical unit of its quantity.
///
/// * energy (Wh/kWh/MWh/GWh, J…GJ, cal…Gcal) → **kWh**
///   (1 GJ = 277.777… kWh; 1 Gcal = 1163 kWh, International Table calorie)
/// * power (kW, MW, GW) → **W**
/// * flow (l/h, m³/h) → **l/h**
/// * temperature → **°C**; temperature difference → **K**
/// * volume (l, m³) → **m³**
/// * hours → **h**
///
/// Returns `None` for other quantities (reactive/apparent energy, dates, …) and for
/// the "×10" units, whose scaling is not documented.
/// Prefer [`super::RegisterValue::normalized`], which applies decimal
/// scalings exactly on the KMP number (e.g. 55.006 MWh → exactly 55006 kWh).
pub fn normalize(unit: Unit, value: f64) -> Option<Measurement> {
    let rule = rule_for(unit)?;
    let scaled = if rule.shift >= 0 {
        value * 10f64.powi(rule.shift)
    } else {
        value / 10f64.powi(-rule.shift)
    };
    Some(Measurement {
        value: apply(scaled, &rule.factor),
        unit: rule.unit,
    })
}

/// Exact-as-possible variant of [`normalize`] on a KMP number.
pub(crate) fn normalize_number(unit: Unit, number: KmpNumber) -> Option<Measurement> {
    let rule = rule_for(unit)?;
    Some(Measurement {
        value: apply(number.to_f64_shifted(rule.shift), &rule.factor),
        unit: rule.unit,
    })
}

fn apply(value: f64, factor: &Factor) -> f64 {
    match factor {
        Factor::One => value,
        Factor::Mul(f) => value * f,
        Factor::Div(d) => value / d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_complete_and_consistent() {
        assert_eq!(Unit::ALL.len(), 65);
        for (code, unit) in Unit::ALL.iter().enumerate() {
            assert_eq!(usize::from(unit.code()), code);
            assert_eq!(Unit::from_code(unit.code()), Some(*unit));
        }
        for code in 0x41..=0xFF {
            assert_eq!(Unit::from_code(code), None);
        }
    }

    #[test]
    fn selected_codes() {
        assert_eq!(Unit::from_code(3), Some(Unit::MWh));
        assert_eq!(Unit::from_code(0x16), Some(Unit::KW));
        assert_eq!(Unit::from_code(0x25), Some(Unit::Celsius));
        assert_eq!(Unit::from_code(0x26), Some(Unit::Kelvin));
        assert_eq!(Unit::from_code(0x28), Some(Unit::CubicMetre));
        assert_eq!(Unit::from_code(0x29), Some(Unit::LitrePerHour));
        assert_eq!(Unit::from_code(0x2F), Some(Unit::HourMinuteSecond));
        assert_eq!(Unit::from_code(0x30), Some(Unit::YearMonthDay));
    }

    #[test]
    fn normalisation() {
        let kwh = |u, v| normalize(u, v).map(|m| (m.value, m.unit));
        assert_eq!(kwh(Unit::MWh, 2.0), Some((2000.0, CanonicalUnit::KilowattHour)));
        assert_eq!(kwh(Unit::Wh, 1500.0), Some((1.5, CanonicalUnit::KilowattHour)));
        let gj = normalize(Unit::GJ, 1.0).map(|m| m.value).unwrap_or_default();
        assert!((gj - 277.777_777_777_777_8).abs() < 1e-9);
        assert_eq!(kwh(Unit::GCal, 1.0), Some((1163.0, CanonicalUnit::KilowattHour)));
        assert_eq!(kwh(Unit::KW, 1.5), Some((1500.0, CanonicalUnit::Watt)));
        assert_eq!(
            kwh(Unit::CubicMetrePerHour, 0.25),
            Some((250.0, CanonicalUnit::LitrePerHour))
        );
        assert_eq!(kwh(Unit::Litre, 1500.0), Some((1.5, CanonicalUnit::CubicMetre)));
        assert_eq!(kwh(Unit::Celsius, 53.65), Some((53.65, CanonicalUnit::DegreeCelsius)));
        assert_eq!(kwh(Unit::YearMonthDay, 220_112.0), None);
        assert_eq!(kwh(Unit::GJX10, 1.0), None);
        assert_eq!(kwh(Unit::CubicMetreX10, 1.0), None);
    }
}
