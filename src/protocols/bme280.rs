//! Bosch BME280 register map and compensation: pure functions over the bytes the
//! chip returns, no I/O (the I2C transactions are in `monitors/bme280.rs`).
//!
//! The compensation is the fixed-point reference code of the datasheet
//! (BST-BME280-DS002, section 4.2.3: `BME280_compensate_T_int32`,
//! `BME280_compensate_P_int64`, `bme280_compensate_H_int32`). It is exact and
//! deterministic, and the tests check it against the datasheet's double-precision
//! formulas (section 8.1), which is an independent computation. The C code relies
//! on 32-bit wrap-around never happening with real calibration data; here the
//! arithmetic is done in `i64` (and `i128` for pressure), which gives the same
//! results on real data and cannot overflow on garbage.

/// `chip_id` register; reads 0x60 on a BME280.
pub const REG_CHIP_ID: u8 = 0xD0;
/// First calibration block: `dig_T1` … `dig_P9`, then `dig_H1` at 0xA1.
pub const REG_CALIB_00: u8 = 0x88;
pub const CALIB_00_LEN: usize = 26;
/// Second calibration block: `dig_H2` … `dig_H6` (0xE1–0xE7).
pub const REG_CALIB_26: u8 = 0xE1;
pub const CALIB_26_LEN: usize = 7;
/// `ctrl_hum`: humidity oversampling; takes effect at the next `ctrl_meas` write.
pub const REG_CTRL_HUM: u8 = 0xF2;
/// `status`: bit 3 `measuring`, bit 0 `im_update`.
pub const REG_STATUS: u8 = 0xF3;
/// `ctrl_meas`: temperature and pressure oversampling, and the mode.
pub const REG_CTRL_MEAS: u8 = 0xF4;
/// `config`: standby time, IIR filter, SPI 3-wire.
pub const REG_CONFIG: u8 = 0xF5;
/// `press_msb` … `hum_lsb`: one burst read gives a consistent set.
pub const REG_DATA: u8 = 0xF7;
pub const DATA_LEN: usize = 8;

pub const CHIP_ID_BME280: u8 = 0x60;
/// BMP280 chip ids (two engineering samples and mass production): same
/// temperature and pressure, no humidity.
pub const CHIP_IDS_BMP280: [u8; 3] = [0x56, 0x57, 0x58];

pub const STATUS_MEASURING: u8 = 0b1000;
/// `mode[1:0]` = 01: one measurement, then back to sleep.
const MODE_FORCED: u8 = 0b01;

/// A value the ADC reports for a measurement that was skipped (oversampling 0).
const SKIPPED_20BIT: i32 = 0x80000;
const SKIPPED_16BIT: i32 = 0x8000;

/// Oversampling of one measurement: 1, 2, 4, 8 or 16 samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversampling(u8);

impl Oversampling {
    pub const X1: Oversampling = Oversampling(1);

    /// `None` unless `samples` is 1, 2, 4, 8 or 16.
    pub fn new(samples: u8) -> Option<Oversampling> {
        matches!(samples, 1 | 2 | 4 | 8 | 16).then_some(Oversampling(samples))
    }

    pub fn samples(self) -> u8 {
        self.0
    }

    /// The 3-bit `osrs_x` code: 1 → 001, 2 → 010, 4 → 011, 8 → 100, 16 → 101.
    pub fn code(self) -> u8 {
        // log2(samples) + 1, valid for the five values `new` accepts.
        self.0.trailing_zeros() as u8 + 1
    }
}

/// Oversampling of the three measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub temperature: Oversampling,
    pub pressure: Oversampling,
    pub humidity: Oversampling,
}

impl Settings {
    pub fn ctrl_hum(self) -> u8 {
        self.humidity.code()
    }

    /// `ctrl_meas` value that starts one forced-mode measurement.
    pub fn ctrl_meas_forced(self) -> u8 {
        (self.temperature.code() << 5) | (self.pressure.code() << 2) | MODE_FORCED
    }

    /// The longest a forced measurement takes, in microseconds (datasheet
    /// section 9.1, t_measure,max = 1.25 + 2.3·T + (2.3·P + 0.575) + (2.3·H + 0.575) ms).
    pub fn max_measurement_us(self) -> u32 {
        let t = u32::from(self.temperature.samples());
        let p = u32::from(self.pressure.samples());
        let h = u32::from(self.humidity.samples());
        1250 + 2300 * t + (2300 * p + 575) + (2300 * h + 575)
    }
}

/// The trimming parameters stored in the chip's NVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration {
    pub t1: u16,
    pub t2: i16,
    pub t3: i16,
    pub p1: u16,
    pub p2: i16,
    pub p3: i16,
    pub p4: i16,
    pub p5: i16,
    pub p6: i16,
    pub p7: i16,
    pub p8: i16,
    pub p9: i16,
    pub h1: u8,
    pub h2: i16,
    pub h3: u8,
    pub h4: i16,
    pub h5: i16,
    pub h6: i8,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Bme280Error {
    /// All-zero or all-ones calibration: the read returned nothing real.
    #[error("calibration data is blank ({0}): the sensor did not answer properly")]
    BlankCalibration(&'static str),
    /// `dig_P1` = 0 would divide by zero.
    #[error("calibration data is invalid: dig_P1 is 0")]
    InvalidCalibration,
    #[error("the {0} measurement was skipped (raw value 0x{1:x}): the sensor is not configured for it")]
    Skipped(&'static str, i32),
    #[error("{quantity} {value:.2} {unit} is outside the sensor's range: the reading is garbled")]
    OutOfRange {
        quantity: &'static str,
        value: f64,
        unit: &'static str,
    },
}

impl Calibration {
    /// Parses the two calibration blocks (0x88–0xA1 and 0xE1–0xE7).
    pub fn parse(calib00: &[u8; CALIB_00_LEN], calib26: &[u8; CALIB_26_LEN]) -> Result<Calibration, Bme280Error> {
        let blank = |b: &[u8]| b.iter().all(|&x| x == 0) || b.iter().all(|&x| x == 0xFF);
        if blank(calib00) {
            return Err(Bme280Error::BlankCalibration("0x88–0xA1"));
        }
        let u16_at = |i: usize| u16::from_le_bytes([calib00[i], calib00[i + 1]]);
        let i16_at = |i: usize| i16::from_le_bytes([calib00[i], calib00[i + 1]]);
        // dig_H4 and dig_H5 are signed 12-bit values sharing register 0xE5:
        // H4 = 0xE4[7:0] << 4 | 0xE5[3:0], H5 = 0xE6[7:0] << 4 | 0xE5[7:4]; the
        // MSB bytes are signed, as in Bosch's own driver.
        let h4 = (i16::from(calib26[3] as i8) << 4) | i16::from(calib26[4] & 0x0F);
        let h5 = (i16::from(calib26[5] as i8) << 4) | i16::from(calib26[4] >> 4);
        let c = Calibration {
            t1: u16_at(0),
            t2: i16_at(2),
            t3: i16_at(4),
            p1: u16_at(6),
            p2: i16_at(8),
            p3: i16_at(10),
            p4: i16_at(12),
            p5: i16_at(14),
            p6: i16_at(16),
            p7: i16_at(18),
            p8: i16_at(20),
            p9: i16_at(22),
            // calib00[24] (0xA0) is unused.
            h1: calib00[25],
            h2: i16::from_le_bytes([calib26[0], calib26[1]]),
            h3: calib26[2],
            h4,
            h5,
            h6: calib26[6] as i8,
        };
        if c.p1 == 0 {
            return Err(Bme280Error::InvalidCalibration);
        }
        Ok(c)
    }
}

/// Raw ADC values of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raw {
    pub pressure: i32,
    pub temperature: i32,
    pub humidity: i32,
}

impl Raw {
    /// Parses the 8 bytes from 0xF7: pressure and temperature are 20-bit
    /// (msb, lsb, xlsb[7:4]), humidity 16-bit (msb, lsb).
    pub fn parse(data: &[u8; DATA_LEN]) -> Raw {
        let twenty =
            |msb: u8, lsb: u8, xlsb: u8| (i32::from(msb) << 12) | (i32::from(lsb) << 4) | (i32::from(xlsb) >> 4);
        Raw {
            pressure: twenty(data[0], data[1], data[2]),
            temperature: twenty(data[3], data[4], data[5]),
            humidity: (i32::from(data[6]) << 8) | i32::from(data[7]),
        }
    }
}

/// A compensated measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    /// °C, resolution 0.01.
    pub temperature: f64,
    /// hPa, resolution 1/25600.
    pub pressure: f64,
    /// % relative humidity, resolution 1/1024.
    pub humidity: f64,
}

/// `t_fine`, the fine temperature the pressure and humidity formulas take, and the
/// temperature in 0.01 °C (`BME280_compensate_T_int32`).
pub fn compensate_temperature(c: &Calibration, adc_t: i32) -> (i64, i64) {
    let adc = i64::from(adc_t);
    let t1 = i64::from(c.t1);
    let var1 = (((adc >> 3) - (t1 << 1)) * i64::from(c.t2)) >> 11;
    let var2 = (((((adc >> 4) - t1) * ((adc >> 4) - t1)) >> 12) * i64::from(c.t3)) >> 14;
    let t_fine = var1 + var2;
    (t_fine, (t_fine * 5 + 128) >> 8)
}

/// Pressure in Pa as Q24.8 (`BME280_compensate_P_int64`); `None` where the
/// reference code returns 0 (a zero divisor).
pub fn compensate_pressure(c: &Calibration, t_fine: i64, adc_p: i32) -> Option<i128> {
    let var1 = i128::from(t_fine) - 128_000;
    let var2 = var1 * var1 * i128::from(c.p6);
    let var2 = var2 + ((var1 * i128::from(c.p5)) << 17);
    let var2 = var2 + (i128::from(c.p4) << 35);
    let var1 = ((var1 * var1 * i128::from(c.p3)) >> 8) + ((var1 * i128::from(c.p2)) << 12);
    let var1 = (((1i128 << 47) + var1) * i128::from(c.p1)) >> 33;
    if var1 == 0 {
        return None;
    }
    let p = 1_048_576 - i128::from(adc_p);
    // Integer division truncates toward zero, as in C.
    let p = (((p << 31) - var2) * 3125) / var1;
    let var1 = (i128::from(c.p9) * (p >> 13) * (p >> 13)) >> 25;
    let var2 = (i128::from(c.p8) * p) >> 19;
    Some(((p + var1 + var2) >> 8) + (i128::from(c.p7) << 4))
}

/// Relative humidity in % as Q22.10 (`bme280_compensate_H_int32`).
pub fn compensate_humidity(c: &Calibration, t_fine: i64, adc_h: i32) -> i64 {
    let v = t_fine - 76_800;
    let (h1, h2, h3) = (i64::from(c.h1), i64::from(c.h2), i64::from(c.h3));
    let (h4, h5, h6) = (i64::from(c.h4), i64::from(c.h5), i64::from(c.h6));
    let adc = i64::from(adc_h);
    let v = ((((adc << 14) - (h4 << 20) - (h5 * v)) + 16_384) >> 15)
        * (((((((v * h6) >> 10) * (((v * h3) >> 11) + 32_768)) >> 10) + 2_097_152) * h2 + 8192) >> 14);
    let v = v - (((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4);
    v.clamp(0, 419_430_400) >> 12
}

/// Compensates one raw measurement, rejecting skipped measurements and values
/// outside the sensor's operating range (−40…85 °C, 300…1100 hPa), which only a
/// garbled transfer produces.
pub fn compensate(c: &Calibration, raw: Raw) -> Result<Measurement, Bme280Error> {
    if raw.temperature == SKIPPED_20BIT {
        return Err(Bme280Error::Skipped("temperature", raw.temperature));
    }
    if raw.pressure == SKIPPED_20BIT {
        return Err(Bme280Error::Skipped("pressure", raw.pressure));
    }
    if raw.humidity == SKIPPED_16BIT {
        return Err(Bme280Error::Skipped("humidity", raw.humidity));
    }
    let (t_fine, t) = compensate_temperature(c, raw.temperature);
    let temperature = t as f64 / 100.0;
    let pressure = compensate_pressure(c, t_fine, raw.pressure).map_or(0.0, |p| p as f64 / 25_600.0);
    let humidity = compensate_humidity(c, t_fine, raw.humidity) as f64 / 1024.0;
    let check = |quantity, value: f64, range: std::ops::RangeInclusive<f64>, unit| {
        if range.contains(&value) {
            Ok(())
        } else {
            Err(Bme280Error::OutOfRange { quantity, value, unit })
        }
    };
    check("temperature", temperature, -40.0..=85.0, "°C")?;
    check("pressure", pressure, 300.0..=1100.0, "hPa")?;
    Ok(Measurement {
        temperature,
        pressure,
        humidity,
    })
}

/// Dew point in °C from temperature (°C) and relative humidity (%), by the Magnus
/// formula with Sonntag's (1990) constants b = 17.62, c = 243.12 °C, good to about
/// ±0.35 °C from −45 to 60 °C. `None` at 0 % humidity, where it is undefined.
pub fn dew_point(temperature: f64, humidity: f64) -> Option<f64> {
    const B: f64 = 17.62;
    const C: f64 = 243.12;
    if humidity <= 0.0 || !humidity.is_finite() || !temperature.is_finite() {
        return None;
    }
    let gamma = (humidity.min(100.0) / 100.0).ln() + B * temperature / (C + temperature);
    Some(C * gamma / (B - gamma))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Calibration of the worked example in Bosch's BMP280 datasheet (BST-BMP280-DS001,
    /// section 3.12) for T and P — the BME280 uses the same T and P formulas — and the
    /// humidity trimming of a real BME280 (H1 = 75, H2 = 362, H3 = 0, H4 = 313, H5 = 50,
    /// H6 = 30), laid out as the chip's registers.
    pub(crate) fn example_registers() -> ([u8; CALIB_00_LEN], [u8; CALIB_26_LEN]) {
        let words: [i32; 12] = [
            27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000,
        ];
        let mut c00 = [0u8; CALIB_00_LEN];
        for (i, w) in words.iter().enumerate() {
            let bytes = (*w as u16).to_le_bytes();
            c00[2 * i] = bytes[0];
            c00[2 * i + 1] = bytes[1];
        }
        c00[25] = 75; // dig_H1
                      // dig_H2 = 362 = 0x016A; dig_H3 = 0; dig_H4 = 313 = 0x139 → 0xE4 = 0x13, 0xE5[3:0] = 0x9;
                      // dig_H5 = 50 = 0x032 → 0xE6 = 0x03, 0xE5[7:4] = 0x2; dig_H6 = 30.
        let c26 = [0x6A, 0x01, 0, 0x13, 0x29, 0x03, 30];
        (c00, c26)
    }

    #[test]
    fn calibration_is_parsed_from_the_register_layout() {
        let (c00, c26) = example_registers();
        let c = Calibration::parse(&c00, &c26).unwrap();
        assert_eq!((c.t1, c.t2, c.t3), (27504, 26435, -1000));
        assert_eq!((c.p1, c.p2, c.p9), (36477, -10685, 6000));
        assert_eq!((c.h1, c.h2, c.h3, c.h4, c.h5, c.h6), (75, 362, 0, 313, 50, 30));
        // Negative 12-bit H4/H5: 0xE4 = 0xFF, 0xE5 = 0xF0 | 0x0F → H4 = −1, H5 = (0xFF << 4 | 0xF) = −1.
        let c = Calibration::parse(&c00, &[0x6A, 0x01, 0, 0xFF, 0xFF, 0xFF, 0x80]).unwrap();
        assert_eq!((c.h4, c.h5, c.h6), (-1, -1, -128));
        assert_eq!(
            Calibration::parse(&[0; CALIB_00_LEN], &c26),
            Err(Bme280Error::BlankCalibration("0x88–0xA1"))
        );
    }

    /// The datasheet's worked example: adc_T = 519888 gives t_fine = 128422 and
    /// T = 25.08 °C; adc_P = 415148 gives p = 100653.27 Pa (BMP280 datasheet 3.12).
    /// The double-precision formulas of BME280 datasheet 8.1 give T = 25.082478 °C and
    /// p = 100653.2581 Pa (computed in Python from those formulas, as written there).
    #[test]
    fn worked_example_of_the_datasheet() {
        let (c00, c26) = example_registers();
        let c = Calibration::parse(&c00, &c26).unwrap();
        let (t_fine, t) = compensate_temperature(&c, 519_888);
        assert_eq!(t_fine, 128_422);
        assert_eq!(t, 2508);
        let p = compensate_pressure(&c, t_fine, 415_148).unwrap() as f64 / 256.0;
        assert!((p - 100_653.258_1).abs() < 1.0, "{p} Pa");
        assert!((p - 100_653.27).abs() < 1.0, "{p} Pa");
    }

    /// Expected values from the double-precision formulas of BME280 datasheet 8.1 with
    /// the example calibration (Python, `float`):
    ///   adc_T 519888, adc_P 415148, adc_H 30000 → 25.082478 °C, 1006.532581 hPa, 55.000713 %
    ///   adc_T 450000, adc_P 350000, adc_H 25000 →  3.130007 °C, 1081.582570 hPa, 27.583043 %
    ///   adc_T 519888, adc_H 27000 → 38.275054 %
    /// The fixed-point results must agree to their resolution (0.01 °C, 1 Pa, ~0.005 %).
    #[test]
    fn fixed_point_agrees_with_the_double_precision_formulas() {
        let (c00, c26) = example_registers();
        let c = Calibration::parse(&c00, &c26).unwrap();
        let cases = [
            ((519_888, 415_148, 30_000), (25.082478, 1006.532581, 55.000713)),
            ((450_000, 350_000, 25_000), (3.130007, 1081.582570, 27.583043)),
        ];
        for ((t, p, h), (et, ep, eh)) in cases {
            let m = compensate(
                &c,
                Raw {
                    temperature: t,
                    pressure: p,
                    humidity: h,
                },
            )
            .unwrap();
            assert!((m.temperature - et).abs() <= 0.01, "{} vs {et}", m.temperature);
            assert!((m.pressure - ep).abs() <= 0.01, "{} vs {ep}", m.pressure);
            assert!((m.humidity - eh).abs() <= 0.005, "{} vs {eh}", m.humidity);
        }
        let h = compensate_humidity(&c, 128_422, 27_000) as f64 / 1024.0;
        assert!((h - 38.275054).abs() <= 0.005, "{h}");
    }

    #[test]
    fn raw_registers_are_unpacked() {
        // 415148 = 0x655AC, 519888 = 0x7EED0, 30000 = 0x7530.
        let raw = Raw::parse(&[0x65, 0x5A, 0xC0, 0x7E, 0xED, 0x00, 0x75, 0x30]);
        assert_eq!(
            raw,
            Raw {
                pressure: 415_148,
                temperature: 519_888,
                humidity: 30_000
            }
        );
    }

    #[test]
    fn skipped_and_garbled_measurements_are_refused() {
        let (c00, c26) = example_registers();
        let c = Calibration::parse(&c00, &c26).unwrap();
        let skipped = Raw::parse(&[0x80, 0, 0, 0x7E, 0xED, 0x00, 0x75, 0x30]);
        assert_eq!(compensate(&c, skipped), Err(Bme280Error::Skipped("pressure", 0x80000)));
        // All-ones: a bus that reads 0xFF everywhere.
        let ones = Raw::parse(&[0xFF; DATA_LEN]);
        assert!(matches!(compensate(&c, ones), Err(Bme280Error::OutOfRange { .. })));
    }

    #[test]
    fn oversampling_codes_and_timing() {
        assert_eq!(Oversampling::new(3), None);
        let codes: Vec<u8> = [1, 2, 4, 8, 16]
            .iter()
            .map(|&n| Oversampling::new(n).unwrap().code())
            .collect();
        assert_eq!(codes, vec![1, 2, 3, 4, 5]);
        let s = Settings {
            temperature: Oversampling::new(2).unwrap(),
            pressure: Oversampling::new(16).unwrap(),
            humidity: Oversampling::X1,
        };
        assert_eq!(s.ctrl_meas_forced(), 0b0101_0101);
        assert_eq!(s.ctrl_hum(), 1);
        // 1.25 + 4.6 + 37.375 + 2.875 ms (datasheet 9.1).
        assert_eq!(s.max_measurement_us(), 46_100);
    }

    /// Dew points from the Magnus formula with b = 17.62, c = 243.12 °C, computed by hand:
    /// 20 °C at 50 %: γ = ln 0.5 + 17.62·20/263.12 = 0.646166, Td = 243.12·γ/(17.62 − γ) = 9.2552 °C.
    #[test]
    fn dew_point_by_magnus() {
        let td = dew_point(20.0, 50.0).unwrap();
        assert!((td - 9.2552).abs() < 0.001, "{td}");
        // At saturation the dew point is the temperature.
        assert!((dew_point(12.5, 100.0).unwrap() - 12.5).abs() < 1e-9);
        assert_eq!(dew_point(20.0, 0.0), None);
    }
}
