//! Register values of a GetRegister answer: a register id, its unit and a KMP
//! number (see `number.rs` for the number format).

use super::number::KmpNumber;
use super::unit::{normalize_number, Measurement, Unit};
use super::KmpError;
/// One register record of a GetRegister response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegisterValue {
    register: u16,
    unit: Unit,
    number: KmpNumber,
    length: u8,
}

impl RegisterValue {
    /// A register value whose mantissa uses the minimal number of bytes.
    pub const fn new(register: u16, unit: Unit, number: KmpNumber) -> Self {
        Self {
            register,
            unit,
            number,
            length: number.min_len(),
        }
    }

    /// Convenience for simulators: encode `value` with `decimals` fixed
    /// decimals (see [`KmpNumber::from_f64`]).
    pub fn from_f64(register: u16, unit: Unit, value: f64, decimals: u8) -> Result<Self, KmpError> {
        Ok(Self::new(register, unit, KmpNumber::from_f64(value, decimals)?))
    }

    /// Use a fixed mantissa length on the wire (meters typically use 4 bytes
    /// for energy/volume, 2 for temperatures and flow).  Must be at least the
    /// minimal length; lengths above 8 are padded with leading zero bytes.
    pub fn with_length(self, length: u8) -> Result<Self, KmpError> {
        if length < self.number.min_len() {
            return Err(KmpError::LengthTooShort {
                mantissa: self.number.mantissa(),
                length: usize::from(length),
            });
        }
        Ok(Self { length, ..self })
    }

    /// Decoder-side constructor; `length` has already been validated.
    pub(crate) const fn from_parts(register: u16, unit: Unit, number: KmpNumber, length: u8) -> Self {
        Self {
            register,
            unit,
            number,
            length,
        }
    }

    /// Register id.
    pub const fn register(&self) -> u16 {
        self.register
    }

    /// Unit of the value.
    pub const fn unit(&self) -> Unit {
        self.unit
    }

    /// The raw KMP number.
    pub const fn number(&self) -> KmpNumber {
        self.number
    }

    /// Mantissa length in bytes on the wire.
    pub const fn length(&self) -> u8 {
        self.length
    }

    /// Unsigned mantissa.
    pub const fn mantissa(&self) -> u64 {
        self.number.mantissa()
    }

    /// Raw SI/EX byte.
    pub const fn si_ex(&self) -> u8 {
        self.number.si_ex()
    }

    /// Value as `f64` in the register's own unit.
    pub fn value(&self) -> f64 {
        self.number.to_f64()
    }

    /// Exact decimal representation in the register's own unit.
    pub fn decimal_string(&self) -> String {
        self.number.to_decimal_string()
    }

    /// Value converted to the canonical unit of its quantity, if any
    /// (see [`super::unit::normalize`]).
    pub fn normalized(&self) -> Option<Measurement> {
        normalize_number(self.unit, self.number)
    }

    /// For unit `hh:mm:ss`: the clock as `(hours, minutes, seconds)`
    /// (mantissa 200243 → 20:02:43).
    pub fn clock(&self) -> Option<(u8, u8, u8)> {
        if self.unit != Unit::HourMinuteSecond {
            return None;
        }
        split3(self.number.mantissa())
    }

    /// For units `yy:mm:dd` / `yyyy:mm:dd`: `(year, month, day)` as encoded
    /// (two-digit years are returned as-is, e.g. 220112 → (22, 1, 12)).
    pub fn date(&self) -> Option<(u16, u8, u8)> {
        match self.unit {
            Unit::YearMonthDay | Unit::FullYearMonthDay => {
                let m = self.number.mantissa();
                let year = u16::try_from(m / 10_000).ok()?;
                let month = u8::try_from(m / 100 % 100).ok()?;
                let day = u8::try_from(m % 100).ok()?;
                Some((year, month, day))
            }
            _ => None,
        }
    }
}

fn split3(value: u64) -> Option<(u8, u8, u8)> {
    let a = u8::try_from(value / 10_000).ok()?;
    let b = u8::try_from(value / 100 % 100).ok()?;
    let c = u8::try_from(value % 100).ok()?;
    Some((a, b, c))
}
