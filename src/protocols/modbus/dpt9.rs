//! KNX DPT 9.001, the 2-byte float the REHAU Nea Smart 2.0 uses for every
//! temperature on its Modbus "SYSBUS": bit 15 sign, bits 14–11 exponent E, bits
//! 10–0 mantissa; the mantissa with the sign bit is a 12-bit two's complement M,
//! and the value is 0.01 · M · 2^E (°C).

/// "Not initialised" (a sensor the base has not heard from yet).
pub const UNINITIALISED: u16 = 0x7FFF;
/// A setpoint that does not apply (the zone is in standby).
pub const NOT_APPLICABLE: u16 = 0x8116;
/// Temperatures outside this range are not believed (the community gateway
/// the register map comes from uses the same bounds).
pub const PLAUSIBLE: std::ops::RangeInclusive<f64> = -50.0..=120.0;

/// The temperature a register holds, or `None` for the two sentinels.
pub fn decode(raw: u16) -> Option<f64> {
    if raw == UNINITIALISED || raw == NOT_APPLICABLE {
        return None;
    }
    let exponent = i32::from((raw >> 11) & 0x0F);
    let mut mantissa = i32::from(raw & 0x07FF);
    if raw & 0x8000 != 0 {
        mantissa -= 2048;
    }
    // Divide by 100 rather than multiply by 0.01: −1270 / 100 is exactly the
    // double nearest −12.7, −1270 · 0.01 is one ulp off.
    Some(f64::from(mantissa) * 2f64.powi(exponent) / 100.0)
}

/// The register for a temperature: the smallest exponent that keeps the
/// mantissa in range, as KNX devices encode. `None` beyond ±670760 (the format's
/// range) or for a value that is not a number.
pub fn encode(value: f64) -> Option<u16> {
    if !value.is_finite() {
        return None;
    }
    let hundredths = (value * 100.0).round();
    for exponent in 0..=15u16 {
        let mantissa = (hundredths / f64::from(1u32 << exponent)).round();
        if (-2048.0..=2047.0).contains(&mantissa) {
            // In range, so the cast is exact; two's complement in 12 bits.
            let m = (mantissa as i32 & 0x0FFF) as u16;
            let sign = m & 0x0800;
            let raw = (sign << 4) | (exponent << 11) | (m & 0x07FF);
            // −17.70 at exponent 0 is 0x8116, the "not applicable" sentinel: the
            // next exponent says the same value without the ambiguity.
            if raw != NOT_APPLICABLE && raw != UNINITIALISED {
                return Some(raw);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked examples of rehau_neasmart2_sysbus_register_map.json.
    const EXAMPLES: &[(f64, u16)] = &[
        (0.0, 0x0000),
        (5.0, 0x01F4),
        (18.5, 0x073A),
        (20.0, 0x07D0),
        (21.5, 0x0C33),
        (22.3, 0x0C5B),
        (45.2, 0x146A),
        (-5.0, 0x860C),
        (-12.7, 0x830A),
    ];

    #[test]
    fn worked_examples_decode_and_encode() {
        for &(value, raw) in EXAMPLES {
            let decoded = decode(raw).unwrap_or(f64::NAN);
            assert_eq!(decoded, value, "{raw:#06x}");
            assert_eq!(encode(value), Some(raw), "{value}");
        }
    }

    #[test]
    fn sentinels_are_no_value() {
        assert_eq!(decode(UNINITIALISED), None);
        assert_eq!(decode(NOT_APPLICABLE), None);
    }

    #[test]
    fn every_register_decodes_without_panicking_and_round_trips() {
        for raw in 0..=u16::MAX {
            if let Some(v) = decode(raw) {
                let again = encode(v).and_then(decode).unwrap_or(f64::NAN);
                assert!(
                    (again - v).abs() <= v.abs() * 0.001 + 0.01,
                    "{raw:#06x}: {v} vs {again}"
                );
            }
        }
        assert_eq!(encode(-17.7), Some(0x8C8B));
        assert_eq!(encode(f64::NAN), None);
        assert_eq!(encode(1e9), None);
    }
}
