//! Numeric values and unit conversion to the canonical units.
//!
//! Decimal rescaling (Wh→kWh, kW→W, …) is done on the decimal text (moving the
//! decimal point), so `006545766*Wh` becomes exactly the `f64` nearest to
//! 6545.766 and `01.193*kW` exactly 1193.0 — no `x * 1000.0` rounding noise.

use super::obis::Quantity;

/// How to get from the unit on the wire to the canonical unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Conv {
    /// Multiply by 10^n (done on the decimal text).
    Shift(i32),
    /// Multiply by a non-decimal factor (kWh → GJ).
    Mul(f64),
}

/// Canonical unit string for a quantity.
pub fn canonical_unit(q: Quantity) -> &'static str {
    match q {
        Quantity::ActiveEnergy => "kWh",
        Quantity::ReactiveEnergy => "kvarh",
        Quantity::ActivePower => "W",
        Quantity::ReactivePower => "var",
        Quantity::ApparentPower => "VA",
        Quantity::Voltage => "V",
        Quantity::Current => "A",
        Quantity::Frequency => "Hz",
        Quantity::Dimensionless => "",
        Quantity::Volume => "m3",
        Quantity::HeatEnergy => "GJ",
    }
}

/// Conversion from `unit` (case-insensitive; empty = the DSMR default unit of the
/// object, i.e. kWh / kW / kvar / kVA / V / A / m3 / GJ) to the canonical unit.
/// `None` when the unit does not fit the quantity.
pub fn conversion(q: Quantity, unit: &str) -> Option<Conv> {
    let u = unit.trim().to_ascii_lowercase();
    let shift = |n| Some(Conv::Shift(n));
    match (q, u.as_str()) {
        (Quantity::ActiveEnergy, "kwh" | "") => shift(0),
        (Quantity::ActiveEnergy, "wh") => shift(-3),
        (Quantity::ActiveEnergy, "mwh") => shift(3),
        (Quantity::ReactiveEnergy, "kvarh" | "") => shift(0),
        (Quantity::ReactiveEnergy, "varh") => shift(-3),
        (Quantity::ReactiveEnergy, "mvarh") => shift(3),
        (Quantity::ActivePower, "w") => shift(0),
        (Quantity::ActivePower, "kw" | "") => shift(3),
        (Quantity::ActivePower, "mw") => shift(6),
        (Quantity::ReactivePower, "var") => shift(0),
        (Quantity::ReactivePower, "kvar" | "") => shift(3),
        (Quantity::ApparentPower, "va") => shift(0),
        (Quantity::ApparentPower, "kva" | "") => shift(3),
        (Quantity::Voltage, "v" | "") => shift(0),
        (Quantity::Voltage, "kv") => shift(3),
        (Quantity::Current, "a" | "") => shift(0),
        (Quantity::Current, "ma") => shift(-3),
        (Quantity::Frequency, "hz" | "") => shift(0),
        (Quantity::Dimensionless, "") => shift(0),
        (Quantity::Volume, "m3" | "m³" | "") => shift(0),
        (Quantity::Volume, "dm3" | "l") => shift(-3),
        (Quantity::HeatEnergy, "gj" | "") => shift(0),
        (Quantity::HeatEnergy, "mj") => shift(-3),
        (Quantity::HeatEnergy, "kwh") => Some(Conv::Mul(0.0036)),
        (Quantity::HeatEnergy, "mwh") => Some(Conv::Mul(3.6)),
        _ => None,
    }
}

/// Splits a value group `00123.456*kWh` into `("00123.456", "kWh")`.
pub fn split_unit(group: &str) -> (&str, &str) {
    match group.split_once('*') {
        Some((v, u)) => (v.trim(), u.trim()),
        None => (group.trim(), ""),
    }
}

/// Parses a plain decimal (`[+-]digits[.digits]`, also `.5` / `5.`) and applies `conv`.
pub fn parse_scaled(value: &str, conv: Conv) -> Option<f64> {
    let v = value.trim();
    let (neg, body) = match v.as_bytes().first()? {
        b'-' => (true, v.get(1..)?),
        b'+' => (false, v.get(1..)?),
        _ => (false, v),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_len = i32::try_from(frac.len()).ok()?;
    let shift = match conv {
        Conv::Shift(n) => n,
        Conv::Mul(_) => 0,
    };
    let exp = shift.checked_sub(frac_len)?;
    let text = format!("{}{int}{frac}e{exp}", if neg { "-" } else { "" });
    let parsed: f64 = text.parse().ok()?;
    let out = match conv {
        Conv::Shift(_) => parsed,
        Conv::Mul(f) => parsed * f,
    };
    out.is_finite().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_decimal_shifts() {
        assert_eq!(parse_scaled("006545766", Conv::Shift(-3)), Some(6545.766));
        assert_eq!(parse_scaled("01.193", Conv::Shift(3)), Some(1193.0));
        assert_eq!(parse_scaled("00.498", Conv::Shift(3)), Some(498.0));
        assert_eq!(parse_scaled("-063", Conv::Shift(0)), Some(-63.0));
        assert_eq!(parse_scaled("+1.5", Conv::Shift(0)), Some(1.5));
        assert_eq!(parse_scaled("0001", Conv::Shift(0)), Some(1.0));
        assert_eq!(parse_scaled(".5", Conv::Shift(0)), Some(0.5));
        assert_eq!(parse_scaled("5.", Conv::Shift(0)), Some(5.0));
        assert_eq!(parse_scaled("00052185.7825309", Conv::Shift(0)), Some(52185.7825309));
    }

    #[test]
    fn rejects_non_numbers() {
        for v in ["", "-", ".", "1.2.3", "1e5", "abc", "1,5", "--1", " "] {
            assert_eq!(parse_scaled(v, Conv::Shift(0)), None, "{v:?}");
        }
    }

    #[test]
    fn units() {
        assert_eq!(conversion(Quantity::ActiveEnergy, "kWh"), Some(Conv::Shift(0)));
        assert_eq!(conversion(Quantity::ActiveEnergy, "kwh"), Some(Conv::Shift(0)));
        assert_eq!(conversion(Quantity::ActiveEnergy, "Wh"), Some(Conv::Shift(-3)));
        assert_eq!(conversion(Quantity::ActivePower, "kw"), Some(Conv::Shift(3)));
        assert_eq!(conversion(Quantity::ReactiveEnergy, "kVArh"), Some(Conv::Shift(0)));
        assert_eq!(conversion(Quantity::ReactivePower, "kVAr"), Some(Conv::Shift(3)));
        assert_eq!(conversion(Quantity::ActivePower, "kWh"), None);
        assert_eq!(conversion(Quantity::Dimensionless, "s"), None);
        let gj = parse_scaled("1000", conversion(Quantity::HeatEnergy, "kWh").unwrap()).unwrap();
        assert!((gj - 3.6).abs() < 1e-12);
        assert_eq!(split_unit("00001.001*m3"), ("00001.001", "m3"));
        assert_eq!(split_unit("0001"), ("0001", ""));
    }
}
