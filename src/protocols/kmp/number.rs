//! The KMP decimal number format.
//!
//! A KMP number is an unsigned big-endian mantissa plus one "SI/EX" byte:
//! bit 7 = sign of the mantissa (1 = negative), bit 6 = sign of the exponent
//! (1 = negative), bits 0–5 = decimal exponent magnitude (0..=63):
//! `value = (-1)^SI × mantissa × 10^((-1)^SE × exp)`.
//!
//! Examples from the Kamstrup documentation: `04 C2 00003039` = −123.45,
//! `04 03 05397FB1` = 87 654 321 000, `01 03 FF` = 255 000.

use super::KmpError;

/// Largest exponent magnitude representable in the 6-bit EX field.
pub const MAX_EXPONENT: i32 = 63;

const SIGN_MANTISSA: u8 = 0x80;
const SIGN_EXPONENT: u8 = 0x40;
const EXPONENT_MASK: u8 = 0x3F;

/// Exactly representable powers of ten in f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// A KMP decimal number: mantissa plus the raw SI/EX byte.
///
/// The raw SI/EX byte is kept so that decoded values re-encode byte-exactly
/// (e.g. a "negative zero" exponent `0x40` survives a round trip).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KmpNumber {
    mantissa: u64,
    si_ex: u8,
}

impl KmpNumber {
    /// Build a number from mantissa, sign and decimal exponent (−63..=63).
    pub fn new(mantissa: u64, negative: bool, exponent: i32) -> Result<Self, KmpError> {
        if !(-MAX_EXPONENT..=MAX_EXPONENT).contains(&exponent) {
            return Err(KmpError::ExponentOutOfRange { exponent });
        }
        let magnitude = u8::try_from(exponent.unsigned_abs()).map_err(|_| KmpError::ExponentOutOfRange { exponent })?;
        let mut si_ex = magnitude & EXPONENT_MASK;
        if negative {
            si_ex |= SIGN_MANTISSA;
        }
        if exponent < 0 {
            si_ex |= SIGN_EXPONENT;
        }
        Ok(Self { mantissa, si_ex })
    }

    /// Build a number from the raw SI/EX byte and the mantissa.
    pub const fn from_si_ex(si_ex: u8, mantissa: u64) -> Self {
        Self { mantissa, si_ex }
    }

    /// Encode an `f64` with a fixed number of decimals, as a meter would
    /// (e.g. `1917.6` with 2 decimals → mantissa 191760, exponent −2).
    ///
    /// Values with more decimals are rounded to `decimals` places.  When the
    /// fixed-decimals mantissa would overflow 64 bits, the shortest exact
    /// decimal form is used instead (e.g. `1.9591204e24` → 19591204 × 10^17).
    /// Errors on NaN/∞, on `decimals > 63` and on values beyond ~1.8 × 10^82.
    pub fn from_f64(value: f64, decimals: u8) -> Result<Self, KmpError> {
        if !value.is_finite() {
            return Err(KmpError::NonFinite);
        }
        let d = i32::from(decimals);
        if d > MAX_EXPONENT {
            return Err(KmpError::ExponentOutOfRange { exponent: -d });
        }
        let abs = value.abs();
        let (digits, exp10) = shortest_decimal(abs).ok_or(KmpError::NonFinite)?;
        let (mantissa, exponent) = if exp10 < -d {
            // More precision than wanted: round to `decimals` places.  Here
            // abs < 10^(17 + exp10) and exp10 < -d, so the result is < 10^17.
            let rounded = format!("{:.*}", usize::from(decimals), abs);
            let m = parse_digits(&rounded).ok_or(KmpError::NonFinite)?;
            (m, -d)
        } else {
            let shift = u32::try_from(exp10 + d).unwrap_or(u32::MAX);
            match 10u64.checked_pow(shift).and_then(|p| digits.checked_mul(p)) {
                Some(m) => (m, -d),
                None => (digits, exp10),
            }
        };
        let (mantissa, exponent) = fit_exponent(mantissa, exponent)?;
        Self::new(mantissa, value < 0.0 && mantissa != 0, exponent)
    }

    /// Encode an `f64` in its shortest exact decimal form (no fixed decimals;
    /// values needing more than 63 decimals are rounded to 63).
    pub fn from_f64_shortest(value: f64) -> Result<Self, KmpError> {
        if !value.is_finite() {
            return Err(KmpError::NonFinite);
        }
        let (digits, exp10) = shortest_decimal(value.abs()).ok_or(KmpError::NonFinite)?;
        if exp10 < -MAX_EXPONENT {
            return Self::from_f64(value, 63);
        }
        let (mantissa, exponent) = fit_exponent(digits, exp10)?;
        Self::new(mantissa, value < 0.0 && mantissa != 0, exponent)
    }

    /// The unsigned mantissa.
    pub const fn mantissa(self) -> u64 {
        self.mantissa
    }

    /// The raw SI/EX byte.
    pub const fn si_ex(self) -> u8 {
        self.si_ex
    }

    /// True if the mantissa sign bit is set.
    pub const fn is_negative(self) -> bool {
        self.si_ex & SIGN_MANTISSA != 0
    }

    /// The signed decimal exponent (−63..=63).
    pub const fn exponent(self) -> i32 {
        let magnitude = (self.si_ex & EXPONENT_MASK) as i32;
        if self.si_ex & SIGN_EXPONENT != 0 {
            -magnitude
        } else {
            magnitude
        }
    }

    /// Number of bytes needed for the mantissa (at least 1).
    pub const fn min_len(self) -> u8 {
        let bits = 64 - self.mantissa.leading_zeros();
        let bytes = bits.div_ceil(8);
        if bytes == 0 {
            1
        } else {
            bytes as u8
        }
    }

    /// The value as the nearest `f64` (correctly rounded: `55006 × 10^-3`
    /// gives exactly the same `f64` as parsing `"55.006"`).
    pub fn to_f64(self) -> f64 {
        let magnitude = decimal_to_f64(self.mantissa, self.exponent());
        if self.is_negative() {
            -magnitude
        } else {
            magnitude
        }
    }

    /// Exact decimal representation without trailing fractional zeros,
    /// e.g. `"55.006"`, `"-123.45"`, `"1959120400000000000000000"`.
    pub fn to_decimal_string(self) -> String {
        let sign = if self.is_negative() && self.mantissa != 0 {
            "-"
        } else {
            ""
        };
        format!("{sign}{}", decimal_digits(self.mantissa, self.exponent()))
    }

    /// Same number with the exponent shifted by `shift` (multiplied by
    /// 10^shift), converted to `f64`; used by unit normalisation so that e.g.
    /// MWh → kWh stays exact.
    pub(crate) fn to_f64_shifted(self, shift: i32) -> f64 {
        let magnitude = decimal_to_f64(self.mantissa, self.exponent().saturating_add(shift));
        if self.is_negative() {
            -magnitude
        } else {
            magnitude
        }
    }
}

/// Encode `value` with `decimals` fixed decimals into `(mantissa, si_ex)`,
/// see [`KmpNumber::from_f64`].
pub fn encode_f64(value: f64, decimals: u8) -> Result<(u64, u8), KmpError> {
    let number = KmpNumber::from_f64(value, decimals)?;
    Ok((number.mantissa(), number.si_ex()))
}

/// Move excess positive exponent into the mantissa when possible.
fn fit_exponent(mantissa: u64, exponent: i32) -> Result<(u64, i32), KmpError> {
    if exponent <= MAX_EXPONENT {
        return Ok((mantissa, exponent));
    }
    let extra = u32::try_from(exponent - MAX_EXPONENT).unwrap_or(u32::MAX);
    10u64
        .checked_pow(extra)
        .and_then(|p| mantissa.checked_mul(p))
        .map(|m| (m, MAX_EXPONENT))
        .ok_or(KmpError::ExponentOutOfRange { exponent })
}

/// Shortest round-trip decimal digits of a finite non-negative `f64`:
/// `abs == digits × 10^exp10`.
fn shortest_decimal(abs: f64) -> Option<(u64, i32)> {
    let text = format!("{abs:e}");
    let (mantissa_text, exp_text) = text.split_once('e')?;
    let exponent: i32 = exp_text.parse().ok()?;
    let fraction_len = mantissa_text.split_once('.').map_or(0, |(_, fraction)| fraction.len());
    let digits = parse_digits(mantissa_text)?;
    let fraction_len = i32::try_from(fraction_len).ok()?;
    Some((digits, exponent - fraction_len))
}

/// Parse a plain decimal like `"191760"` or `"1917.60"`, ignoring the point.
fn parse_digits(text: &str) -> Option<u64> {
    let mut value: u64 = 0;
    for ch in text.chars().filter(|&c| c != '.') {
        let digit = ch.to_digit(10)?;
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

/// `mantissa × 10^exponent` as the correctly rounded `f64`.
fn decimal_to_f64(mantissa: u64, exponent: i32) -> f64 {
    if mantissa == 0 {
        return 0.0;
    }
    if mantissa <= (1u64 << 53) {
        // Both operands exact → one correctly rounded IEEE operation.
        let m = mantissa as f64;
        if let Some(p) = usize::try_from(exponent).ok().and_then(|e| POW10.get(e)) {
            return m * p;
        }
        if let Some(p) = usize::try_from(exponent.unsigned_abs())
            .ok()
            .filter(|_| exponent < 0)
            .and_then(|e| POW10.get(e))
        {
            return m / p;
        }
    }
    // General case: let the standard library's correctly rounding parser do it.
    format!("{mantissa}e{exponent}").parse::<f64>().unwrap_or(f64::NAN)
}

/// Decimal digits of `mantissa × 10^exponent` (unsigned, exact).
fn decimal_digits(mantissa: u64, exponent: i32) -> String {
    let digits = mantissa.to_string();
    if mantissa == 0 {
        return "0".to_owned();
    }
    if exponent >= 0 {
        let zeros = usize::try_from(exponent).unwrap_or(0);
        return format!("{digits}{}", "0".repeat(zeros));
    }
    let scale = usize::try_from(exponent.unsigned_abs()).unwrap_or(0);
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits
    };
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    let frac_part = frac_part.trim_end_matches('0');
    if frac_part.is_empty() {
        int_part.to_owned()
    } else {
        format!("{int_part}.{frac_part}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(si_ex: u8, mantissa: u64) -> KmpNumber {
        KmpNumber::from_si_ex(si_ex, mantissa)
    }

    #[test]
    fn kamstrup_doc_examples() {
        assert_eq!(num(0xC2, 0x3039).to_f64(), -123.45);
        assert_eq!(num(0xC2, 0x3039).to_decimal_string(), "-123.45");
        assert_eq!(num(0x03, 0x0539_7FB1).to_f64(), 87_654_321_000.0);
        assert_eq!(num(0x03, 0xFF).to_f64(), 255_000.0);
        assert_eq!(num(0x11, 19_591_204).to_f64(), 1.9591204e24);
        assert_eq!(num(0x11, 19_591_204).to_decimal_string(), "1959120400000000000000000");
        assert_eq!(num(0x43, 0xFB).to_f64(), 0.251);
        assert_eq!(num(0x42, 0x18C8).to_f64(), 63.44);
    }

    #[test]
    fn decimal_strings() {
        assert_eq!(num(0x42, 191_760).to_decimal_string(), "1917.6");
        assert_eq!(num(0x43, 5).to_decimal_string(), "0.005");
        assert_eq!(num(0x42, 100).to_decimal_string(), "1");
        assert_eq!(num(0xC2, 0).to_decimal_string(), "0");
        assert_eq!(num(0x00, 0).to_decimal_string(), "0");
        assert_eq!(num(0x7F, 1).to_f64(), 1e-63);
        assert_eq!(num(0x3F, 1).to_f64(), 1e63);
    }

    #[test]
    fn from_f64_fixed_decimals() {
        let n = KmpNumber::from_f64(1917.6, 2).unwrap();
        assert_eq!((n.mantissa(), n.si_ex()), (191_760, 0x42));
        let n = KmpNumber::from_f64(-123.45, 2).unwrap();
        assert_eq!((n.mantissa(), n.si_ex()), (12_345, 0xC2));
        let n = KmpNumber::from_f64(55.0064, 3).unwrap();
        assert_eq!((n.mantissa(), n.si_ex()), (55_006, 0x43));
        let n = KmpNumber::from_f64(1.9591204e24, 0).unwrap();
        assert_eq!((n.mantissa(), n.si_ex()), (19_591_204, 0x11));
        let n = KmpNumber::from_f64(-0.0001, 2).unwrap();
        assert_eq!((n.mantissa(), n.si_ex()), (0, 0x42));
        assert_eq!(encode_f64(0.0, 0), Ok((0, 0)));
        assert!(KmpNumber::from_f64(f64::NAN, 2).is_err());
        assert!(KmpNumber::from_f64(f64::INFINITY, 2).is_err());
        assert!(KmpNumber::from_f64(1.0, 64).is_err());
        assert!(KmpNumber::from_f64(1e300, 0).is_err());
        let n = KmpNumber::from_f64(1e70, 0).unwrap();
        assert_eq!((n.mantissa(), n.exponent()), (10_000_000, 63));
    }

    #[test]
    fn from_f64_shortest() {
        let n = KmpNumber::from_f64_shortest(1917.6).unwrap();
        assert_eq!((n.mantissa(), n.exponent()), (19_176, -1));
        let n = KmpNumber::from_f64_shortest(-5e-70).unwrap();
        assert_eq!(n.mantissa(), 0);
    }

    #[test]
    fn min_len() {
        assert_eq!(num(0, 0).min_len(), 1);
        assert_eq!(num(0, 0xFF).min_len(), 1);
        assert_eq!(num(0, 0x100).min_len(), 2);
        assert_eq!(num(0, u64::MAX).min_len(), 8);
    }

    #[test]
    fn exponent_range() {
        assert!(KmpNumber::new(1, false, 64).is_err());
        assert!(KmpNumber::new(1, false, -64).is_err());
        assert_eq!(KmpNumber::new(1, true, -63).map(KmpNumber::si_ex), Ok(0xFF));
    }
}
