//! Numeric values and unit conversion to the canonical units.
//!
//! Decimal rescaling (Wh→kWh, kW→W, …) is done on the decimal text (moving the
//! decimal point), so `006545766*Wh` becomes exactly the `f64` nearest to
//! 6545.766 and `01.193*kW` exactly 1193.0 — no `x * 1000.0` rounding noise.

use super::obis::Quantity;

/// How to get from the unit on the wire to the canonical unit. (Two bytes, not an
/// `f64` factor: it is returned in a register for every value of every telegram.)
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Conv {
    /// Multiply by 10^n (done on the decimal text).
    Shift(i32),
    /// kWh → GJ (× 0.0036).
    KwhToGj,
    /// MWh → GJ (× 3.6).
    MwhToGj,
}

impl Conv {
    /// The decimal shift, and the non-decimal factor applied after it, if any.
    fn parts(self) -> (i32, Option<f64>) {
        match self {
            Conv::Shift(n) => (n, None),
            Conv::KwhToGj => (0, Some(0.0036)),
            Conv::MwhToGj => (0, Some(3.6)),
        }
    }
}

/// Canonical unit string for a quantity.
#[inline]
pub(super) fn canonical_unit(q: Quantity) -> &'static str {
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

/// A unit of up to 7 bytes as one integer (lower-cased if `lower`), for matching;
/// the length goes in the top byte, so `m3` and `m3\0` differ.
const fn unit_key(unit: &[u8], lower: bool) -> u64 {
    let mut key = (unit.len() as u64) << 56;
    let mut i = 0;
    while i < unit.len() && i < 7 {
        let b = if lower { unit[i].to_ascii_lowercase() } else { unit[i] };
        key |= (b as u64) << (8 * i);
        i += 1;
    }
    key
}

const U_A: u64 = unit_key(b"a", false);
const U_DM3: u64 = unit_key(b"dm3", false);
const U_GJ: u64 = unit_key(b"gj", false);
const U_HZ: u64 = unit_key(b"hz", false);
const U_KV: u64 = unit_key(b"kv", false);
const U_KVA: u64 = unit_key(b"kva", false);
const U_KVAR: u64 = unit_key(b"kvar", false);
const U_KVARH: u64 = unit_key(b"kvarh", false);
const U_KW: u64 = unit_key(b"kw", false);
const U_KWH: u64 = unit_key(b"kwh", false);
const U_L: u64 = unit_key(b"l", false);
const U_M3: u64 = unit_key(b"m3", false);
const U_M3_SUPER: u64 = unit_key(b"m\xc2\xb3", false);
const U_MA: u64 = unit_key(b"ma", false);
const U_MJ: u64 = unit_key(b"mj", false);
const U_MVARH: u64 = unit_key(b"mvarh", false);
const U_MW: u64 = unit_key(b"mw", false);
const U_MWH: u64 = unit_key(b"mwh", false);
const U_NONE: u64 = unit_key(b"", false);
const U_V: u64 = unit_key(b"v", false);
const U_VA: u64 = unit_key(b"va", false);
const U_VAR: u64 = unit_key(b"var", false);
const U_VARH: u64 = unit_key(b"varh", false);
const U_W: u64 = unit_key(b"w", false);
const U_WH: u64 = unit_key(b"wh", false);

/// Conversion from `unit` (case-insensitive; empty = the DSMR default unit of the
/// object, i.e. kWh / kW / kvar / kVA / V / A / m3 / GJ) to the canonical unit.
/// `None` when the unit does not fit the quantity.
// Always inlined: called for every value, out of line its call cost a third of it.
#[inline(always)]
pub(super) fn conversion(q: Quantity, unit: &str) -> Option<Conv> {
    // The spelling DSMR 4/5 meters send, byte for byte, first: one comparison
    // instead of folding the case of every unit (the general match below agrees).
    let exact = match (q, unit.as_bytes()) {
        (Quantity::ActiveEnergy, b"kWh")
        | (Quantity::ActivePower, b"W")
        | (Quantity::Voltage, b"V")
        | (Quantity::Current, b"A")
        | (Quantity::Dimensionless, b"")
        | (Quantity::Volume, b"m3")
        | (Quantity::ReactiveEnergy, b"kvarh")
        | (Quantity::Frequency, b"Hz")
        | (Quantity::HeatEnergy, b"GJ") => Some(Conv::Shift(0)),
        (Quantity::ActivePower, b"kW") | (Quantity::ReactivePower, b"kvar") => Some(Conv::Shift(3)),
        _ => None,
    };
    match exact {
        Some(conv) => Some(conv),
        None => conversion_folded(q, unit),
    }
}

/// [`conversion`] for any spelling: case-insensitive, surrounding spaces ignored.
fn conversion_folded(q: Quantity, unit: &str) -> Option<Conv> {
    // This runs for every value of every telegram: the unit, lower-cased, is packed
    // into one integer and matched against constants, instead of comparing strings.
    let unit = unit.trim_ascii().as_bytes();
    if unit.len() > 7 {
        return None; // no unit is that long
    }
    let k = unit_key(unit, true);
    let shift = |n| Some(Conv::Shift(n));
    match (q, k) {
        (Quantity::ActiveEnergy, U_KWH | U_NONE) => shift(0),
        (Quantity::ActiveEnergy, U_WH) => shift(-3),
        (Quantity::ActiveEnergy, U_MWH) => shift(3),
        (Quantity::ReactiveEnergy, U_KVARH | U_NONE) => shift(0),
        (Quantity::ReactiveEnergy, U_VARH) => shift(-3),
        (Quantity::ReactiveEnergy, U_MVARH) => shift(3),
        (Quantity::ActivePower, U_W) => shift(0),
        (Quantity::ActivePower, U_KW | U_NONE) => shift(3),
        (Quantity::ActivePower, U_MW) => shift(6),
        (Quantity::ReactivePower, U_VAR) => shift(0),
        (Quantity::ReactivePower, U_KVAR | U_NONE) => shift(3),
        (Quantity::ApparentPower, U_VA) => shift(0),
        (Quantity::ApparentPower, U_KVA | U_NONE) => shift(3),
        (Quantity::Voltage, U_V | U_NONE) => shift(0),
        (Quantity::Voltage, U_KV) => shift(3),
        (Quantity::Current, U_A | U_NONE) => shift(0),
        (Quantity::Current, U_MA) => shift(-3),
        (Quantity::Frequency, U_HZ | U_NONE) => shift(0),
        (Quantity::Dimensionless, U_NONE) => shift(0),
        (Quantity::Volume, U_M3 | U_M3_SUPER | U_NONE) => shift(0),
        (Quantity::Volume, U_DM3 | U_L) => shift(-3),
        (Quantity::HeatEnergy, U_GJ | U_NONE) => shift(0),
        (Quantity::HeatEnergy, U_MJ) => shift(-3),
        (Quantity::HeatEnergy, U_KWH) => Some(Conv::KwhToGj),
        (Quantity::HeatEnergy, U_MWH) => Some(Conv::MwhToGj),
        _ => None,
    }
}

/// Splits a value group `00123.456*kWh` into `("00123.456", "kWh")`.
#[inline]
pub(super) fn split_unit(group: &str) -> (&str, &str) {
    match group.bytes().position(|b| b == b'*') {
        Some(star) => (
            group.get(..star).unwrap_or_default().trim_ascii(),
            group.get(star + 1..).unwrap_or_default().trim_ascii(),
        ),
        None => (group.trim_ascii(), ""),
    }
}

/// Parses a plain decimal (`[+-]digits[.digits]`, also `.5` / `5.`) and applies `conv`.
#[inline]
pub(super) fn parse_scaled(value: &str, conv: Conv) -> Option<f64> {
    let v = value.trim_ascii();
    let (neg, body) = match v.as_bytes().first()? {
        b'-' => (true, v.get(1..)?),
        b'+' => (false, v.get(1..)?),
        _ => (false, v),
    };
    let (int, frac) = match body.bytes().position(|b| b == b'.') {
        Some(dot) => (body.get(..dot)?, body.get(dot + 1..)?),
        None => (body, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let (shift, factor) = conv.parts();
    let frac_len = i32::try_from(frac.len()).ok()?;
    let exp = shift.checked_sub(frac_len)?;
    // The digits as one integer: the value is mantissa × 10^exp.
    let mut mantissa: u64 = 0;
    let mut exact = true;
    for b in int.bytes().chain(frac.bytes()) {
        if !b.is_ascii_digit() {
            return None;
        }
        match mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(b - b'0')))
        {
            Some(m) => mantissa = m,
            None => exact = false,
        }
    }
    let parsed = match fast_path(mantissa, exp) {
        // A meter's register has at most ~12 digits, so this is the path taken.
        Some(v) if exact => v,
        // Rare: too many digits or a huge exponent. Let the standard library round.
        _ => format!("{int}{frac}e{exp}").parse::<f64>().ok()?,
    };
    let parsed = if neg { -parsed } else { parsed };
    let out = match factor {
        None => parsed,
        Some(f) => parsed * f,
    };
    out.is_finite().then_some(out)
}

/// A value group in the shape nearly every meter sends, `digits[.digits][*unit]`
/// (no sign, no spaces, 1 to 19 digits), read in one pass: the digits as one
/// integer, how many follow the point, and the unit. `None` for anything else,
/// which [`split_unit`] and [`parse_scaled`] then read.
#[inline]
pub(super) fn plain_number(group: &str) -> Option<(u64, i32, &str)> {
    let bytes = group.as_bytes();
    // Integer digits, then fraction digits, each in its own tight loop with the
    // digit test as a subtraction: one `match` over every byte compiled to a jump
    // table, an indirect branch per byte.
    let digit = |at: usize| bytes.get(at).map(|b| b.wrapping_sub(b'0')).filter(|&d| d < 10);
    let mut mantissa: u64 = 0;
    let mut i = 0;
    while let Some(d) = digit(i) {
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    let int_digits = i;
    let mut frac_len = 0;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        let from = i;
        while let Some(d) = digit(i) {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
        }
        frac_len = i - from;
    }
    let digits = int_digits + frac_len;
    let unit = match bytes.get(i) {
        None => "",
        Some(b'*') => group.get(i + 1..).unwrap_or(""),
        Some(_) => return None,
    };
    if digits == 0 || digits > 19 {
        return None;
    }
    Some((mantissa, i32::try_from(frac_len).ok()?, unit))
}

/// `mantissa` × 10^−`frac_len` in the canonical unit, when [`fast_path`] makes it
/// exact (so the same `f64` as [`parse_scaled`] on the text); `None` otherwise.
#[inline]
pub(super) fn scale(mantissa: u64, frac_len: i32, conv: Conv) -> Option<f64> {
    let (shift, factor) = conv.parts();
    let v = fast_path(mantissa, shift.checked_sub(frac_len)?)?;
    let out = match factor {
        None => v,
        Some(f) => v * f,
    };
    out.is_finite().then_some(out)
}

/// Exact powers of ten: every one up to 10^22 is representable in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// mantissa × 10^exp, correctly rounded, when both factors are exact f64s (the
/// mantissa below 2^53, |exp| ≤ 22): IEEE multiplication and division round the
/// exact result once, so this is the same f64 as parsing the decimal text — the
/// classic fast path of decimal-to-float conversion, without formatting a string.
fn fast_path(mantissa: u64, exp: i32) -> Option<f64> {
    if mantissa >= 1 << 53 {
        return None;
    }
    let m = mantissa as f64;
    let p = *POW10.get(usize::try_from(exp.unsigned_abs()).ok()?)?;
    Some(if exp >= 0 { m * p } else { m / p })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_spellings_agree_with_the_folded_match() {
        use Quantity::*;
        let quantities = [
            ActiveEnergy,
            ReactiveEnergy,
            ActivePower,
            ReactivePower,
            ApparentPower,
            Voltage,
            Current,
            Frequency,
            Dimensionless,
            Volume,
            HeatEnergy,
        ];
        let units = [
            "", "kWh", "W", "kW", "V", "A", "m3", "kvarh", "kvar", "Hz", "GJ", "Wh", "MWh", "kwh", "KW", "var", "VA",
            "kVA", "mA", "MJ", "dm3", "l", "x",
        ];
        for q in quantities {
            for unit in units {
                assert_eq!(conversion(q, unit), conversion_folded(q, unit), "{q:?} {unit:?}");
            }
        }
    }

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
    fn fast_path_equals_the_standard_parser() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = x % 10_000_000_000_000;
            let frac_len = (x >> 50) % 8;
            let text = format!("{digits:013}");
            let (int, frac) = text.split_at(13 - frac_len as usize);
            let decimal = format!("{int}.{frac}");
            for shift in [-3, 0, 3, 6] {
                let expected: f64 = format!("{int}{frac}e{}", shift - frac_len as i32).parse().unwrap();
                assert_eq!(
                    parse_scaled(&decimal, Conv::Shift(shift)),
                    Some(expected),
                    "{decimal} shift {shift}"
                );
            }
        }
        // Beyond the fast path: still right.
        assert_eq!(
            parse_scaled("123456789012345678901", Conv::Shift(0)),
            Some(123456789012345678901.0)
        );
        assert_eq!(parse_scaled("-0.000", Conv::Shift(0)), Some(-0.0));
    }

    /// `plain_number` as it was, one `match` over every byte: the two-loop one
    /// must agree with it.
    fn plain_number_bytewise(group: &str) -> Option<(u64, i32, &str)> {
        let bytes = group.as_bytes();
        let mut mantissa: u64 = 0;
        let (mut digits, mut frac_len, mut point) = (0u32, 0i32, false);
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'0'..=b'9' => {
                    mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
                    digits += 1;
                    frac_len += i32::from(point);
                }
                b'.' if !point => point = true,
                b'*' => break,
                _ => return None,
            }
            i += 1;
        }
        if digits == 0 || digits > 19 {
            return None;
        }
        Some((mantissa, frac_len, group.get(i + 1..).unwrap_or("")))
    }

    #[test]
    fn plain_number_agrees_with_the_bytewise_reader() {
        let alphabet = b"0123456789..**kW -+/:";
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let text: String = (0..len)
                .map(|k| char::from(alphabet[((x >> (k % 40)) as usize + k * 5) % alphabet.len()]))
                .collect();
            assert_eq!(plain_number(&text), plain_number_bytewise(&text), "{text:?}");
        }
        for text in [
            "003808.351*kWh",
            "1234567890123456789",
            "12345678901234567890",
            "1.",
            ".",
            "",
            "1*",
            "0.5*W",
        ] {
            assert_eq!(plain_number(text), plain_number_bytewise(text), "{text:?}");
        }
    }

    #[test]
    fn plain_numbers_agree_with_the_general_parser() {
        for text in [
            "003808.351*kWh",
            "00.498*kW",
            "0002",
            ".5",
            "5.",
            "236.0*V",
            "1*",
            "00001.001*m3",
            "12345678901234567890",
            "1234567890123456789",
            "9007199254740993",
            "0.0000000000000000000001",
        ] {
            let (num, unit) = split_unit(text);
            for conv in [Conv::Shift(0), Conv::Shift(3), Conv::Shift(-3), Conv::KwhToGj] {
                let fast = plain_number(text).and_then(|(m, f, u)| {
                    assert_eq!(u, unit, "{text}");
                    scale(m, f, conv)
                });
                if let Some(fast) = fast {
                    assert_eq!(Some(fast), parse_scaled(num, conv), "{text} {conv:?}");
                }
            }
        }
        assert_eq!(plain_number("003808.351*kWh"), Some((3808351, 3, "kWh")));
        assert_eq!(plain_number("1*"), Some((1, 0, "")));
        for refused in [
            "",
            ".",
            "*kWh",
            "-1",
            "+1",
            " 1",
            "1 *kWh",
            "1.2.3",
            "1e5",
            "12345678901234567890",
        ] {
            assert_eq!(plain_number(refused), None, "{refused:?}");
        }
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
        assert_eq!(conversion(Quantity::Volume, "m3\0"), None);
        assert_eq!(conversion(Quantity::Volume, "m³"), Some(Conv::Shift(0)));
        assert_eq!(conversion(Quantity::Volume, " M3 "), Some(Conv::Shift(0)));
        assert_eq!(conversion(Quantity::ActiveEnergy, "kilowatthour"), None);
    }
}
